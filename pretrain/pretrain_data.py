"""TFRecord input pipeline for pre-training (spec c.2, d.1) and the `Inputs` tuple.

Every record is a tf.train.Example with three int64 features of exactly max_seq_length
values: input_ids, input_mask, segment_ids. Masking is dynamic (pretrain_helpers.mask),
so nothing about masking is stored. Shape legend: B = batch size, S = max_seq_length,
N = max_predictions_per_seq.
"""

import collections
import json
import os
import re

import tensorflow as tf
from google.protobuf import message

FEATURE_NAMES = ("input_ids", "input_mask", "segment_ids")
# Written by build_pretraining_dataset.py next to the shards.
METADATA_FILE = "pretrain_data.json"
DEFAULT_PATTERN = "<data-dir>/pretrain_tfrecords/pretrain_data.tfrecord*"
BUILD_COMMAND = ("python3 build_pretraining_dataset.py --corpus-dir <corpus-dir> "
                 "--vocab-file <data-dir>/vocab.txt "
                 "--output-dir <data-dir>/pretrain_tfrecords --max-seq-length {max_seq_length}")
# Files read in parallel by the interleave (the original's num_cpu_threads).
_MAX_CYCLE_LENGTH = 4
_CHECK_PARALLELISM = 16  # files whose first record is read at once by first_records
_SHUFFLE_BUFFER = 100

Inputs = collections.namedtuple(
    "Inputs", ["input_ids", "input_mask", "segment_ids", "masked_lm_positions",
               "masked_lm_ids", "masked_lm_weights"])
Inputs.__doc__ = """Model inputs (the original's names).

input_ids, input_mask, segment_ids: [B, S] int32.
masked_lm_positions: [B, N] int32 positions chosen for prediction (0 in unused slots).
masked_lm_ids: [B, N] int32 original ids at those positions (0 in unused slots).
masked_lm_weights: [B, N] float32, 1 for used slots and 0 for unused ones.
The masked_lm_* fields are None before masking.
"""


def features_to_inputs(features):
    """dict with input_ids/input_mask/segment_ids (+ optional masked_lm_*) -> Inputs."""
    return Inputs(**{name: features.get(name) for name in Inputs._fields})


def get_updated_inputs(inputs, **kwargs):
    """Copy of `inputs` with the given fields replaced."""
    return inputs._replace(**kwargs)


def expand_file_patterns(file_patterns):
    """Comma-separated glob string (or list of them) -> sorted unique list of files.

    Raises:
      FileNotFoundError: no file matches, naming the patterns, the default location and
        the command that writes the shards; or one of several patterns matches nothing
        (a typo would otherwise silently drop that part of the data), naming it.
    """
    if isinstance(file_patterns, str):
        file_patterns = [file_patterns]
    patterns = [p.strip() for group in file_patterns for p in group.split(",") if p.strip()]
    matches = {p: tf.io.gfile.glob(p) for p in patterns}
    files = sorted({f for found in matches.values() for f in found})
    if not files:
        raise FileNotFoundError(
            f"No pre-training TFRecords match {patterns}. The shards are expected at "
            f"{DEFAULT_PATTERN} (set `pretrain_tfrecords` to point elsewhere); write them "
            f"with: {BUILD_COMMAND.format(max_seq_length='<max_seq_length>')}")
    unmatched = [p for p, found in matches.items() if not found]
    if unmatched:
        raise FileNotFoundError(
            f"The pretrain_tfrecords pattern(s) {unmatched} match no file, while the "
            f"other pattern(s) match {len(files)} file(s); fix or remove them.")
    return files


def _length_error(source, found, max_seq_length):
    return ValueError(
        f"{source} holds sequences of length {found} but max_seq_length is "
        f"{max_seq_length}. Set the hparam max_seq_length to {found}, or rebuild the data "
        f"for length {max_seq_length}: {BUILD_COMMAND.format(max_seq_length=max_seq_length)}")


def check_record_length(files, max_seq_length):
    """Checks the data was written with `max_seq_length` before the graph parses it.

    Reads the first record of every file (a mismatch otherwise surfaces as TF's opaque
    "Can't parse serialized Example", original issue #102, or mid-run when a mismatched
    shard comes up), and the "max_seq_length" key of any pretrain_data.json metadata
    next to the shards.

    Args:
      files: list of TFRecord paths (non-empty).
      max_seq_length: the configured sequence length S.
    Returns:
      The files that hold at least one record (empty ones are harmless to read).
    Raises:
      ValueError: a length differs or a feature is missing, naming the file, both
        lengths and the fix; a first record is unreadable; or every file is empty.
    """
    for directory in sorted({os.path.dirname(f) for f in files}):
        meta_path = os.path.join(directory, METADATA_FILE)
        if tf.io.gfile.exists(meta_path):
            with tf.io.gfile.GFile(meta_path) as f:
                meta = json.load(f)
            found = meta.get("max_seq_length")
            if found is not None and int(found) != max_seq_length:
                raise _length_error(meta_path, int(found), max_seq_length)
    records = first_records(files)
    nonempty = [f for f in files if records[f] is not None]
    if not nonempty:
        raise ValueError(f"All {len(files)} pre-training file(s) are empty (e.g. {files[0]}); "
                         "rebuild them: "
                         f"{BUILD_COMMAND.format(max_seq_length=max_seq_length)}")
    for path in nonempty:
        _check_example(path, records[path], max_seq_length)
    return nonempty


def _check_example(path, record, max_seq_length):
    try:
        example = tf.train.Example.FromString(record)
    except message.DecodeError:
        example = None
    if example is None or not example.features.feature:
        raise ValueError(f"The first record of {path} is not a tf.train.Example with "
                         "features; it is not ELECTRA pre-training data. Write it with: "
                         f"{BUILD_COMMAND.format(max_seq_length=max_seq_length)}")
    for name in FEATURE_NAMES:
        if name not in example.features.feature:
            raise ValueError(
                f"{path} has no feature {name!r} (found "
                f"{sorted(example.features.feature)}); it is not ELECTRA pre-training "
                f"data. Write it with: {BUILD_COMMAND.format(max_seq_length=max_seq_length)}")
        found = len(example.features.feature[name].int64_list.value)
        if found != max_seq_length:
            raise _length_error(f"{path} (feature {name})", found, max_seq_length)


def first_records(files):
    """{path: its first serialized record, or None for an empty file}.

    One parallel tf.data pass reads them all (cheap even for 1000 shards); only when it
    fails is each file read alone, to name the one that is broken.
    Raises:
      ValueError: a file is missing or its first record is unreadable, naming it.
    """
    names = tf.data.Dataset.from_tensor_slices(tf.constant(files))
    firsts = names.interleave(
        lambda f: tf.data.TFRecordDataset(f).take(1).map(lambda r: (f, r)),
        cycle_length=_CHECK_PARALLELISM, num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True)
    try:
        found = {os.fsdecode(f.numpy()): r.numpy() for f, r in firsts}
    except tf.errors.OpError:
        for path in files:
            try:
                list(tf.data.TFRecordDataset(path).take(1))
            except tf.errors.OpError as e:
                raise ValueError(
                    f"{path}: the first record cannot be read ({op_error_text(e)}); the "
                    "file is truncated, corrupt or not a TFRecord file. Rebuild or remove "
                    "it.") from None
        raise
    return {f: found.get(f) for f in files}


def op_error_text(error):
    """A tf.errors.OpError's message without TF's "{{function_node ...}}" / "[Op:...]"."""
    text = re.sub(r"\{\{[^}]*\}\}\s*", "", error.message)
    return text.split(" [Op:")[0].strip()


def parse_batch(serialized, max_seq_length):
    """[B] serialized Examples -> dict of [B, S] int32 (tf.Example only stores int64)."""
    spec = {name: tf.io.FixedLenFeature([max_seq_length], tf.int64) for name in FEATURE_NAMES}
    parsed = tf.io.parse_example(serialized, spec)
    return {name: tf.cast(value, tf.int32) for name, value in parsed.items()}


def get_dataset(file_patterns, max_seq_length, batch_size, is_training, input_context=None,
                seed=None, record_limits=None):
    """The pre-training tf.data pipeline of spec c.2.

    files -> repeat -> shuffle file list -> parallel interleave (cycle min(4, #files),
    non-deterministic when training without a seed) -> shuffle 100 -> batch (drop
    remainder, also in eval) -> parse -> prefetch. Batching before parsing parses a whole
    batch in one vectorised op; the elements are the same as parse-then-batch.

    Args:
      file_patterns: comma-separated glob string, or a list of them.
      max_seq_length: S; must equal the length the records were written with.
      batch_size: global batch size (per-replica size is derived from input_context).
      is_training: allows non-deterministic interleaving for speed.
      input_context: optional tf.distribute.InputContext; each input pipeline reads its
        own shard of the files (or of the records if there are fewer files than
        pipelines) and yields per-replica batches.
      seed: optional int making the file and record shuffles reproducible.
      record_limits: optional {path: n}: read only the first n records of that file
        (skip_corrupt_records: the readable part of a damaged file, data_checks.py).
    Returns:
      tf.data.Dataset of dicts input_ids/input_mask/segment_ids, each [B, S] int32.
    """
    files = check_record_length(expand_file_patterns(file_patterns), max_seq_length)
    num_pipelines, pipeline_id = 1, 0
    if input_context is not None:
        num_pipelines = input_context.num_input_pipelines
        pipeline_id = input_context.input_pipeline_id
        batch_size = input_context.get_per_replica_batch_size(batch_size)
    shard_records = len(files) < num_pipelines
    limits = [(record_limits or {}).get(f, -1) for f in files]  # take(-1) takes all
    d = tf.data.Dataset.from_tensor_slices((tf.constant(files), tf.constant(limits, tf.int64)))
    if num_pipelines > 1 and not shard_records:
        d = d.shard(num_pipelines, pipeline_id)
    d = d.repeat()
    if not shard_records:
        d = d.shuffle(buffer_size=len(files), seed=seed)
    deterministic = shard_records or seed is not None or not is_training
    d = d.interleave(lambda f, n: tf.data.TFRecordDataset(f).take(n),
                     cycle_length=min(_MAX_CYCLE_LENGTH, len(files)),
                     num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    if shard_records:
        # Fewer files than pipelines: every pipeline reads the same ordered stream and
        # keeps every num_pipelines-th record, so the pipelines never overlap.
        d = d.shard(num_pipelines, pipeline_id)
    d = d.shuffle(buffer_size=_SHUFFLE_BUFFER, seed=seed)
    d = d.batch(batch_size, drop_remainder=True)
    d = d.map(lambda s: parse_batch(s, max_seq_length), num_parallel_calls=tf.data.AUTOTUNE)
    return d.prefetch(tf.data.AUTOTUNE)
