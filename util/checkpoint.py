"""Name-based TF checkpoints (the TF1 Saver format) written atomically, with retention.

Variables are stored under the names given in a `{name: variable}` dict, so
`tf.train.list_variables(prefix)` lists exactly the original ELECTRA names, released
checkpoints restore by name, and TF1/HuggingFace tools read ours. A checkpoint counts as
complete once its `.index` file exists: data files and index are written under a hidden
temporary prefix in the same directory and renamed into place, index last, and the
`checkpoint` state file is replaced atomically only after that. A crash at any point
leaves the previous checkpoint as the latest one.
"""

import contextlib
import dataclasses
import glob
import os

import tensorflow as tf

from util import io_utils
from util.cli import UserError
from util.logging_utils import log

STATE_FILE = "checkpoint"


@dataclasses.dataclass(frozen=True)
class RestoreReport:
    """What restore_checkpoint did (all lists sorted)."""

    path: str  # checkpoint prefix that was read
    restored: list  # names assigned from the checkpoint
    missing: list  # names absent from the checkpoint but allowed: left at their values
    unused: list  # checkpoint names that no given variable asked for


def save_checkpoint(named_vars, prefix):
    """Writes all variables to `prefix.index` / `prefix.data-*` atomically (eager only).

    Args:
      named_vars: dict checkpoint name -> tf.Variable (mirrored variables are read from
        their primary copy; call from cross-replica context).
      prefix: checkpoint prefix, e.g. "<dir>/model.ckpt-1000".
    Returns:
      prefix.
    Raises:
      io_utils.OutputError: a file could not be written (disk full, file-size limit,
        read-only directory); it names the prefix and the cause, and every earlier
        checkpoint is left as it was.
    """
    if not named_vars:
        raise ValueError(f"Nothing to save to {prefix}: named_vars is empty.")
    directory = os.path.dirname(os.path.abspath(prefix))
    io_utils.mkdir(directory)
    temp = io_utils.temp_name_for(prefix)
    names = list(named_vars)
    try:
        _write(named_vars, names, prefix, temp)
    except (tf.errors.OpError, OSError) as e:
        raise io_utils.output_error(prefix, e) from None
    finally:
        for leftover in glob.glob(glob.escape(temp) + ".*"):
            os.remove(leftover)
    return prefix


def _write(named_vars, names, prefix, temp):
    """SaveV2 under the temporary prefix, then renames into place, index last."""
    tf.raw_ops.SaveV2(prefix=temp, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.convert_to_tensor(named_vars[n]) for n in names])
    data_files = sorted(glob.glob(glob.escape(temp) + ".data-*"))
    for path in data_files + [temp + ".index"]:
        _fsync(path)
    # An old checkpoint with the same prefix must stop looking complete before its
    # data files are replaced, otherwise its index could pair with the new data.
    if os.path.exists(prefix + ".index"):
        os.remove(prefix + ".index")
    for path in data_files:
        os.replace(path, prefix + path[len(temp):])
    os.replace(temp + ".index", prefix + ".index")  # publishes the checkpoint


def _fsync(path):
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _resolve(ckpt_path):
    """A checkpoint prefix, or the latest checkpoint when given a directory."""
    if os.path.isdir(ckpt_path):
        latest = tf.train.latest_checkpoint(ckpt_path)
        if latest is None:
            raise FileNotFoundError(f"No checkpoint in directory {ckpt_path} (no readable "
                                    f"'{STATE_FILE}' state file); pass a checkpoint prefix.")
        return latest
    if not os.path.exists(ckpt_path + ".index"):
        raise FileNotFoundError(f"Checkpoint {ckpt_path}.index does not exist; pass a "
                                f"prefix like <dir>/model.ckpt-1000 or a model directory.")
    return ckpt_path


def _check_compatible(named_vars, shapes, dtypes, allow_missing):
    """Returns (found names, allowed missing names); raises one error listing problems."""
    found, missing, problems = [], [], []
    for name, var in named_vars.items():
        if name not in shapes:
            if allow_missing(name):
                missing.append(name)
            else:
                problems.append(f"{name}: missing from the checkpoint")
        elif list(shapes[name]) != var.shape.as_list():
            problems.append(f"{name}: shape {list(shapes[name])} in the checkpoint but "
                            f"{var.shape.as_list()} in the model")
        elif dtypes[name] != var.dtype:
            problems.append(f"{name}: dtype {dtypes[name].name} in the checkpoint but "
                            f"{var.dtype.name} in the model")
        else:
            found.append(name)
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise ValueError(f"Cannot restore {len(problems)} variable(s):\n  {shown}{more}\n"
                         f"Check that the model config (model_size, vocab_size, "
                         f"embedding_size, generator_hidden_size) matches the checkpoint.")
    return found, missing


def restore_checkpoint(named_vars, ckpt_path, allow_missing=lambda name: False):
    """Assigns every variable from the checkpoint entry of the same name.

    Args:
      named_vars: dict checkpoint name -> tf.Variable. Under a tf.distribute strategy,
        call from cross-replica context: each assignment updates all mirrored copies.
      ckpt_path: checkpoint prefix, or a directory (its latest checkpoint).
      allow_missing: predicate on a name; a variable absent from the checkpoint for which
        it is true keeps its current (initial) value, e.g. Adam slots of released models.
    Returns:
      RestoreReport.
    Raises:
      FileNotFoundError: no such checkpoint.
      ValueError: one error naming every required variable that is missing and every
        shape or dtype mismatch (with both shapes).
      UserError: the checkpoint's files are truncated or corrupt (see `readable`).
    """
    path = _resolve(ckpt_path)
    with readable(path):
        reader = tf.train.load_checkpoint(path)
        shapes = reader.get_variable_to_shape_map()
        dtypes = reader.get_variable_to_dtype_map()
    found, missing = _check_compatible(named_vars, shapes, dtypes, allow_missing)
    if found:
        with readable(path):  # the data files' checksums are verified here
            values = tf.raw_ops.RestoreV2(prefix=path, tensor_names=found,
                                          shape_and_slices=[""] * len(found),
                                          dtypes=[dtypes[n] for n in found])
        for name, value in zip(found, values):
            named_vars[name].assign(value)
    if missing:
        log(f"Restored {len(found)} variables from {path}; {len(missing)} not in the "
            f"checkpoint keep their initial values (e.g. {sorted(missing)[0]}).")
    unused = sorted(set(shapes) - set(named_vars))
    return RestoreReport(path=path, restored=sorted(found), missing=sorted(missing),
                         unused=unused)


@contextlib.contextmanager
def readable(path):
    """Turns TF's error for a checkpoint it cannot read (truncated or corrupt files:
    "not an sstable", "Checksum does not match", ...) into one UserError naming it."""
    try:
        yield
    except tf.errors.OpError as e:
        raise UserError(
            f"Checkpoint {path} cannot be read ({io_utils.error_text(e)}): its files are "
            f"truncated or corrupt. Restore {path}.index and {path}.data-* from a copy, or "
            "move them away to continue from the newest earlier checkpoint.") from None


def _quote(text):
    """A text-proto string literal (the `checkpoint` state file is a CheckpointState)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


class CheckpointManager:
    """Saves `<directory>/<prefix_name>-<step>` checkpoints and keeps the newest few.

    The `checkpoint` state file has TF's CheckpointState text format, so
    tf.train.latest_checkpoint / get_checkpoint_state read it. Retention state is
    recovered from that file when a run resumes.
    """

    def __init__(self, directory, max_to_keep, prefix_name="model.ckpt"):
        """max_to_keep: number of checkpoints kept; 0 or None keeps all."""
        if max_to_keep is not None and max_to_keep < 0:
            raise ValueError(f"max_to_keep must be >= 0 or None, got {max_to_keep}.")
        self.directory = directory
        self.max_to_keep = max_to_keep
        self.prefix_name = prefix_name
        io_utils.mkdir(directory)
        self._kept = []  # absolute prefixes, oldest first
        state = tf.train.get_checkpoint_state(directory)
        if state is not None:
            paths = list(state.all_model_checkpoint_paths) or [state.model_checkpoint_path]
            self._kept = [self._absolute(p) for p in paths
                          if os.path.exists(self._absolute(p) + ".index")]

    def _absolute(self, path):
        return path if os.path.isabs(path) else os.path.join(self.directory, path)

    @property
    def latest_checkpoint(self):
        """Prefix of the newest complete checkpoint, or None."""
        return tf.train.latest_checkpoint(self.directory)

    @property
    def checkpoints(self):
        """Prefixes of the kept checkpoints, oldest first."""
        return list(self._kept)

    def save(self, named_vars, step):
        """Writes checkpoint `<prefix_name>-<step>`, updates the state file, prunes old ones.

        Returns:
          The new checkpoint prefix.
        """
        prefix = os.path.join(self.directory, f"{self.prefix_name}-{int(step)}")
        save_checkpoint(named_vars, prefix)
        self._kept = [p for p in self._kept if p != prefix] + [prefix]
        stale = []
        if self.max_to_keep:
            stale, self._kept = self._kept[:-self.max_to_keep], self._kept[-self.max_to_keep:]
        self._write_state()
        # Deleted only after the state file stops naming them.
        for old in stale:
            for path in glob.glob(glob.escape(old) + ".*"):
                os.remove(path)
        return prefix

    def _write_state(self):
        rel = [os.path.relpath(p, self.directory) for p in self._kept]
        lines = [f"model_checkpoint_path: {_quote(rel[-1])}"]
        lines += [f"all_model_checkpoint_paths: {_quote(p)}" for p in rel]
        io_utils.write_text("\n".join(lines) + "\n", os.path.join(self.directory, STATE_FILE))

    def restore_or_initialize(self, named_vars, allow_missing=lambda name: False):
        """Restores the latest checkpoint if there is one.

        Returns:
          RestoreReport, or None when the directory has no checkpoint (the variables keep
          their initial values).
        """
        latest = self.latest_checkpoint
        if latest is None:
            return None
        return restore_checkpoint(named_vars, latest, allow_missing)
