"""Start-up checks of the pre-training TFRecords, and clear errors for bad data mid-run.

Before the first step (check_files):
  - every shard listed in a pretrain_data.json next to it must have the size (and, for
    empty files, the example count) the builder recorded, so a truncated or replaced
    shard fails at once, by name, instead of hours into the run;
  - the first record of every file must hold max_seq_length-long ELECTRA features
    (pretrain_data.check_record_length); empty files are left out.
During a run (reported_data_errors): a record that fails its checksum or cannot be
parsed (TF's DataLossError / "Can't parse serialized Example") becomes one error naming
the file and record, found by re-reading the files; nothing is saved, so the latest
checkpoint stays as it was.
With the opt-in hparam skip_corrupt_records every file is read once at start-up instead,
and each damaged one is used up to its first unreadable record (the TFRecord format has
no marker to resynchronise on, so the rest of that file is skipped); the number of
skipped records is logged and reported.
"""

import collections
import contextlib
import json
import os

import tensorflow as tf

from pretrain import pretrain_data
from util.cli import UserError
from util.logging_utils import log

CheckedData = collections.namedtuple(
    "CheckedData", ["files", "record_limits", "skipped_records", "damaged_files"])
CheckedData.__doc__ = """Usable pre-training files after check_files.

files: the non-empty readable files, sorted.
record_limits: {path: n} read only the first n records of these (damaged) files.
skipped_records: records left out (skip_corrupt_records); a lower bound when a damaged
  file has no metadata (its unreadable tail counts as one record).
damaged_files: number of files with skipped records.
"""

_FIX = ("Rebuild the dataset ({command}), or restore or remove this file; or set the "
        "hparam skip_corrupt_records to true to train on the readable records.")
# Substrings of tf.errors.InvalidArgumentError messages that come from parsing records.
_PARSE_ERRORS = ("serialized Example", "Key: input_ids", "Key: input_mask",
                 "Key: segment_ids")


def _fix(max_seq_length):
    command = pretrain_data.BUILD_COMMAND.format(max_seq_length=max_seq_length)
    return _FIX.format(command=command)


def _metadata(directory):
    path = os.path.join(directory, pretrain_data.METADATA_FILE)
    if not tf.io.gfile.exists(path):
        return None, path
    with tf.io.gfile.GFile(path) as f:
        meta = json.load(f)
    return (meta if isinstance(meta, dict) else None), path


def metadata_problems(files):
    """[(path, problem)] for files whose size or emptiness contradicts pretrain_data.json.

    Only files listed in the metadata of their own directory are checked: user-made
    records and extra files have nothing to compare against.
    """
    problems = []
    for directory in sorted({os.path.dirname(f) for f in files}):
        meta, meta_path = _metadata(directory)
        if not meta:
            continue
        sizes = meta.get("bytes_per_file") or {}
        counts = meta.get("examples_per_file") or {}
        for path in [f for f in files if os.path.dirname(f) == directory]:
            name, actual = os.path.basename(path), tf.io.gfile.stat(path).length
            if name in sizes and actual != sizes[name]:
                problems.append((path, f"{path} has {actual} bytes but {meta_path} records "
                                       f"{sizes[name]} ({counts.get(name, '?')} examples): "
                                       "the shard is truncated or was replaced."))
            elif name not in sizes and actual == 0 and counts.get(name):
                problems.append((path, f"{path} is empty but {meta_path} records "
                                       f"{counts[name]} examples in it."))
    return problems


def _count(dataset):
    return int(dataset.reduce(tf.constant(0, tf.int64), lambda n, _: n + 1))


def readable_prefix(path):
    """(records readable from the start of the file, whether a read error follows)."""
    try:
        return _count(tf.data.TFRecordDataset(path)), False
    except tf.errors.DataLossError:
        # ignore_errors ends the file at its first unreadable record.
        return _count(tf.data.TFRecordDataset(path).ignore_errors()), True


def _expected_examples(path):
    meta, _ = _metadata(os.path.dirname(path))
    return ((meta or {}).get("examples_per_file") or {}).get(os.path.basename(path))


def _scan_for_damage(files):
    """skip_corrupt_records: reads every file; returns ({path: readable}, skipped)."""
    limits, skipped = {}, 0
    for path in files:
        readable, damaged = readable_prefix(path)
        expected = _expected_examples(path)
        if expected is not None and readable < expected:
            damaged = True
        if not damaged:
            continue
        lost = expected - readable if expected is not None else None
        limits[path] = readable
        skipped += lost if lost is not None else 1
        log(f"skip_corrupt_records: {path}: reading its first {readable} records; "
            + (f"{lost} skipped" if lost is not None else "the unreadable rest is skipped"))
    return limits, skipped


def check_files(files, max_seq_length, skip_corrupt=False):
    """The start-up checks of the module docstring.

    Args:
      files: expanded TFRecord paths (pretrain_data.expand_file_patterns).
      max_seq_length: the configured S.
      skip_corrupt: the skip_corrupt_records hparam.
    Returns:
      CheckedData.
    Raises:
      UserError: a shard contradicts its metadata (unless skip_corrupt), a first record
        is unreadable or has the wrong length, or no usable file is left; the message
        names the file and the fix.
    """
    problems = metadata_problems(files)
    if problems and not skip_corrupt:
        more = f" ({len(problems) - 1} more file(s) too)" if len(problems) > 1 else ""
        raise UserError(f"{problems[0][1]}{more} {_fix(max_seq_length)}")
    for _, problem in problems:
        log(f"skip_corrupt_records: {problem}")
    limits, skipped = _scan_for_damage(files) if skip_corrupt else ({}, 0)
    usable = [f for f in files if limits.get(f, 1) > 0]
    if not usable:
        raise UserError(f"No readable pre-training records in {len(files)} file(s). "
                        f"{_fix(max_seq_length)}")
    try:
        nonempty = pretrain_data.check_record_length(usable, max_seq_length)
    except ValueError as e:
        raise UserError(str(e)) from None
    empty = sorted(set(usable) - set(nonempty))
    if empty:
        log(f"{len(empty)} empty pre-training file(s) left out, e.g. {empty[0]}")
    if skip_corrupt:
        log(f"skip_corrupt_records: {skipped} record(s) skipped in {len(limits)} file(s)")
    return CheckedData(files=nonempty, record_limits={f: limits[f] for f in nonempty
                                                      if f in limits},
                       skipped_records=skipped, damaged_files=len(limits))


def locate_bad_record(files, max_seq_length):
    """(path, record number or None, TF's message) of the first bad file, or None.

    Reads every file through the same parse as training; only called after an error.
    """
    for path in files:
        records = tf.data.TFRecordDataset(path).batch(256)
        try:
            _count(records.map(lambda s: pretrain_data.parse_batch(s, max_seq_length)))
        except tf.errors.DataLossError as e:
            return path, readable_prefix(path)[0], pretrain_data.op_error_text(e)
        except tf.errors.InvalidArgumentError as e:
            return path, None, pretrain_data.op_error_text(e)
    return None


def _is_data_error(error):
    if isinstance(error, tf.errors.DataLossError):
        return True
    return any(part in error.message for part in _PARSE_ERRORS)


@contextlib.contextmanager
def reported_data_errors(files, max_seq_length, model_dir):
    """Turns a bad record met while training or evaluating into one UserError naming
    the file, the record number (counted from 0) and the fix; other errors pass."""
    try:
        yield
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
        if not _is_data_error(e):
            raise
        latest = tf.train.latest_checkpoint(model_dir) if tf.io.gfile.isdir(model_dir) else None
        kept = (f"the latest checkpoint {latest} is unchanged" if latest
                else "no checkpoint was written")
        found = locate_bad_record(files, max_seq_length)
        if found is None:
            where = (f"in one of {len(files)} file(s) (re-reading them found no bad record: "
                     f"{pretrain_data.op_error_text(e)})")
        else:
            path, index, text = found
            where = f"in {path}" + (f", record {index} (from 0)" if index is not None else "")
            where += f" ({text})"
        raise UserError(f"Unreadable pre-training data {where}. Training stopped and {kept}. "
                        f"{_fix(max_seq_length)}") from None
