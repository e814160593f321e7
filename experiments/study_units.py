"""The learning study's directories, unit records and the resumable unit loop.

A unit is one piece of finished work (the data, one pre-training run, one checkpoint's
evaluation, one init x task fine-tuning). It records one JSON file under
<work-dir>/units/, written atomically when the unit is complete, so a killed study
continues at the first unit without a record.
"""

import collections
import dataclasses
import json
import math
import os

from util import io_utils
from util.cli import UserError
from util.logging_utils import Progress, log

CONFIG_FILE = "study_config.json"


@dataclasses.dataclass(frozen=True)
class StudyDirs:
    """Where the study reads and writes.

    work_dir: everything the study produces except the report (TFRecords, task files,
      checkpoints, fine-tuning caches, unit records).
    shared_dir: the read-only shared data (corpus, vocab, GLUE, CoNLL-2000).
    out_dir: the report (results.json, results.md, PNG plots).
    corpus_vocab: the vocab is learnt from the corpus (<work_dir>/vocab.txt), not the
      shared one.
    """
    work_dir: str
    shared_dir: str
    out_dir: str
    corpus_vocab: bool = False

    @property
    def vocab_file(self):
        if self.corpus_vocab:
            return os.path.join(self.work_dir, "vocab.txt")
        return os.path.join(self.shared_dir, "vocab", "vocab.txt")

    @property
    def config_path(self):
        return os.path.join(self.work_dir, CONFIG_FILE)

    @property
    def tfrecords_dir(self):
        return os.path.join(self.work_dir, "pretrain_tfrecords")

    @property
    def finetuning_data_dir(self):
        return os.path.join(self.work_dir, "finetuning_data")

    def model_dir(self, objective):
        return os.path.join(self.work_dir, "models", objective)

    def checkpoint_prefix(self, objective, step):
        return os.path.join(self.model_dir(objective), f"model.ckpt-{step}")

    def eval_dir(self, objective, step):
        return os.path.join(self.work_dir, "pretrain_eval", f"{objective}_{step}")

    def finetune_run_dir(self, init_name, task):
        return os.path.join(self.work_dir, "finetune_runs", init_name, task)

    def finetune_tfrecords_dir(self, task):
        """Featurised task records, shared by every init (they depend on the task only)."""
        return os.path.join(self.work_dir, "finetuning_tfrecords", task)

    def unit_path(self, kind, name):
        return os.path.join(self.work_dir, "units", kind, f"{name}.json")


def _finite(value):
    """JSON-safe copy: NaN / inf (e.g. an undefined AUC) become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def save_unit(path, record):
    """Writes a finished unit's record atomically (NaN -> null)."""
    io_utils.write_json(_finite(record), path, indent=2)


def load_unit(path):
    """A unit's record, or None if the unit has not finished."""
    return io_utils.load_json(path) if os.path.exists(path) else None


def load_units(dirs, kind):
    """{unit name: record} of every finished unit of a kind."""
    directory = os.path.join(dirs.work_dir, "units", kind)
    if not os.path.isdir(directory):
        return {}
    return {name[:-len(".json")]: io_utils.load_json(os.path.join(directory, name))
            for name in sorted(os.listdir(directory))
            if name.endswith(".json") and not name.startswith(".")}


Unit = collections.namedtuple("Unit", ["name", "path", "ready", "run"])
Unit.__doc__ = """One unit of work: name, record path, whether its inputs exist, and
run() -> the record to save."""


def run_units(stage, units, after_every=None, every=None):
    """Runs the unfinished, ready units in order, with a progress line per unit.

    Args:
        stage: stage name for the log lines.
        units: list of Unit.
        after_every: optional callable run after every `every` units run (the report).
        every: int, or None to never call after_every.
    Returns:
        Number of units run by this call.
    """
    done = [u for u in units if os.path.exists(u.path)]
    todo = [u for u in units if not os.path.exists(u.path) and u.ready]
    waiting = len(units) - len(done) - len(todo)
    log(f"[{stage}] {len(units)} units: {len(done)} done (skipped), {len(todo)} to run"
        + (f", {waiting} waiting for inputs of earlier stages (run those first)"
           if waiting else ""))
    progress = Progress(len(units), "units", start=len(done), prefix=f"[{stage}]")
    for count, unit in enumerate(todo, 1):
        save_unit(unit.path, unit.run())
        progress.update(len(done) + count, extra=unit.name)
        if every and count % every == 0 and count < len(todo):
            after_every()
    return len(todo)


def check_work_dir_config(config_dict, path, added_defaults=None):
    """Saves the resolved config in a new work dir; refuses a work dir made with another.

    Rule: a work dir belongs to one resolved StudyConfig. Re-running with the same
    --quick / --hparams resumes; anything that changes the resolved config needs a new
    --work-dir (or deleting the old one), so results of two configs never mix.
    added_defaults: {field: default} of settings added after a work dir may have been
    made; a saved config without such a field ran with its default.

    Raises:
        UserError naming the differing fields.
    """
    if os.path.exists(path):
        saved = {**(added_defaults or {}), **io_utils.load_json(path)}
        if saved != config_dict:
            keys = sorted(k for k in set(saved) | set(config_dict)
                          if saved.get(k) != config_dict.get(k))
            details = "; ".join(f"{k}: {json.dumps(saved.get(k))} there, "
                                f"{json.dumps(config_dict.get(k))} now" for k in keys[:5])
            raise UserError(
                f"the work dir {os.path.dirname(path)} holds a study made with another "
                f"config ({details}). Re-run with the same --quick/--hparams to resume, or "
                "pass a new --work-dir (or delete that one) to start this config.")
        return
    io_utils.write_json(config_dict, path, indent=2)

