"""Resuming a fine-tuning run that SIGTERM / SIGINT stopped (util/preemption.py).

A stopped trial keeps its model dir (checkpoint at the step reached) and gets a
`preempted.json` holding the trial number, the trial's resolved config and the results
and seeds of the trials finished before it. Re-running the same command finds it, skips
the finished trials (their results come from the file) and continues the stopped trial
from its checkpoint. Any other command (a different resolved config) ignores the file:
its trial dir is then wiped and retrained as before, under the rule that only dirs
this tool wrote are deleted.
"""

from __future__ import annotations

import glob
import os

from util import config_utils
from util import io_utils
from util.logging_utils import log

PREEMPTED_FILE = "preempted.json"


def _path(model_dir: str) -> str:
    return os.path.join(model_dir, PREEMPTED_FILE)


def _load(path: str) -> dict | None:
    try:
        saved = io_utils.load_json(path)
    except (OSError, ValueError):
        return None
    return saved if isinstance(saved, dict) else None


def write_marker(trial_config, trial: int, results: list, seeds: list) -> str:
    """Records that `trial` stopped after its checkpoint was saved; returns the path."""
    plain = [{task: {k: float(v) for k, v in metrics.items()}
              for task, metrics in trial_results.items()} for trial_results in results]
    path = _path(trial_config.model_dir)
    io_utils.write_json({"trial": trial, "config": config_utils.config_to_dict(trial_config),
                         "results": plain, "seeds": [int(s) for s in seeds]}, path, indent=1)
    return path


def is_resumable(trial_config) -> bool:
    """Whether the trial's model dir holds a stopped run of exactly this trial config."""
    saved = _load(_path(trial_config.model_dir))
    return bool(saved) and saved.get("config") == config_utils.config_to_dict(trial_config)


def clear_marker(trial_config) -> None:
    """Called once the trial is complete: a later run must not resume it."""
    path = _path(trial_config.model_dir)
    if os.path.exists(path):
        os.remove(path)


def find_stopped_trial(config) -> tuple[int, list, list] | None:
    """(trial, results of earlier trials, their seeds) of a stopped run of `config`.

    Looks at every `<model_dir>_<trial>` dir (earlier trials' dirs may have been
    deleted by keep_all_models false) for a marker written by this same config.
    """
    for path in sorted(glob.glob(glob.escape(config.model_dir) + "_*/" + PREEMPTED_FILE)):
        saved = _load(path)
        trial = saved.get("trial") if saved else None
        if not isinstance(trial, int) or trial < 1:
            continue
        if saved.get("config") != config_utils.config_to_dict(config.for_trial(trial)):
            continue
        log(f"Resuming the stopped run at trial {trial} ({path}); the {trial - 1} "
            "finished trial(s) keep their recorded results.")
        return trial, saved["results"], saved["seeds"]
    return None
