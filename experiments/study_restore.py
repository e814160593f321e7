"""Restoring a learning study's unit records from its committed report.

The work dir (TFRecords, checkpoints, unit records) is not committed; the report's
results.json is, and it holds every finished unit's record. On a new machine,
`--restore-from-report PATH` writes those records back into the work dir, so the study
runs only what the report lacks (e.g. the MLM baseline of a study whose ELECTRA half ran
in an earlier session) instead of starting over.
"""

import os

from experiments import study_finetune, study_units
from util import config_utils, io_utils
from util.cli import UserError
from util.logging_utils import log

OBJECTIVES = ("electra", "mlm")


def _check_config(saved, study, added_defaults, path):
    current = config_utils.config_to_dict(study)
    saved = {**(added_defaults or {}), **saved}
    if saved != current:
        keys = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
        raise UserError(f"the report {path} was made with another study config (differs in "
                        f"{', '.join(keys[:5])}); pass the --hparams it was made with.")


def _objective_complete(study, results, objective):
    """True if the report holds every eval and fine-tuning unit of the objective, so its
    checkpoints (not in the report) are never needed again."""
    evals = results["pretrain_eval"].get(objective, {})
    if any(str(s) not in evals for s in study.objective_checkpoint_steps(objective)):
        return False
    names = [f"{init.name}__{task}" for init in study_finetune.plan_inits(study)
             if init.objective == objective for task in study.tasks]
    return all(n in results["finetune"] for n in names)


def restore_from_report(study, dirs, path, added_defaults=None):
    """Writes the unit records of `path` (a results.json) that the work dir lacks.

    A pre-training record is restored only when all of that objective's evaluations and
    fine-tuning runs are in the report; otherwise its pre-training runs again, because the
    missing units need its checkpoints.

    Returns:
        Number of records written.
    Raises:
        UserError if the file is missing, not a report, or made with another config.
    """
    if not os.path.isfile(path):
        raise UserError(f"--restore-from-report: no file {path}; pass the results.json "
                        "of a finished or partial study report.")
    results = io_utils.load_json(path)
    if not isinstance(results, dict) or not {"config", "pretraining", "pretrain_eval",
                                             "finetune"} <= set(results):
        raise UserError(f"--restore-from-report: {path} is not a learning-study "
                        "results.json (it lacks config/pretraining/pretrain_eval/finetune).")
    _check_config(results["config"], study, added_defaults, path)
    records = {}
    for objective in OBJECTIVES:
        run = results["pretraining"].get(objective)
        if run and _objective_complete(study, results, objective):
            records[dirs.unit_path("pretrain", objective)] = run
        per_step = results["flops_per_step"][objective]
        for step, metrics in results["pretrain_eval"].get(objective, {}).items():
            records[dirs.unit_path("pretrain_eval", f"{objective}_{step}")] = {
                "objective": objective, "step": int(step), "flops": per_step * int(step),
                "metrics": metrics}
    for name, record in results["finetune"].items():
        records[dirs.unit_path("finetune", name)] = record
    written = 0
    for unit_path, record in records.items():
        if not os.path.exists(unit_path):
            study_units.save_unit(unit_path, record)
            written += 1
    log(f"[restore] {written} unit records restored from {path} "
        f"({len(records) - written} already in the work dir)")
    return written
