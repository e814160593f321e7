"""The study's pre-training stages: one run per objective, then every checkpoint's eval.

Both runs call pretrain_runner.run_pretraining in-process with the same data, batch,
peak learning rate, warmup and seed; every checkpoint is kept (keep_checkpoint_max 0).
A killed run resumes from its latest checkpoint when the stage runs again.
"""

import json
import os
import time

import configure_pretraining
from experiments import study_flops
from experiments.study_units import Unit
from pretrain import pretrain_runner
from util import io_utils
from util.cli import UserError


def pretrain_config(study, dirs, objective, eval_dir=None):
    """The PretrainingConfig of an objective's run, or of evaluating one checkpoint
    through eval_dir (a directory whose `checkpoint` state file names it)."""
    hparams = {**study.pretrain_hparams(objective),
               "pretrain_tfrecords": os.path.join(dirs.tfrecords_dir,
                                                  "pretrain_data.tfrecord*"),
               "vocab_file": dirs.vocab_file, "model_dir": dirs.model_dir(objective)}
    if eval_dir is not None:
        hparams.update(do_train=False, do_eval=True, model_dir=eval_dir)
    return configure_pretraining.make_config(dirs.work_dir, objective, hparams)


def _seconds_record(seconds, steps_run, total_steps):
    """Wall-clock of the run; prorated from the last attempt when it was resumed."""
    if steps_run == 0:  # finished earlier, its record lost: the time is unknown
        return {"seconds": None, "seconds_estimated": True}
    return {"seconds": seconds * total_steps / steps_run,
            "seconds_estimated": steps_run != total_steps}


def run_pretraining_unit(study, dirs, objective):
    """Trains (or resumes) one objective; returns its record."""
    config = pretrain_config(study, dirs, objective)
    start = time.monotonic()
    result = pretrain_runner.run_pretraining(config)
    seconds = time.monotonic() - start
    steps = study.objective_checkpoint_steps(objective)
    missing = [s for s in steps
               if not os.path.exists(dirs.checkpoint_prefix(objective, s) + ".index")]
    if missing:
        raise UserError(f"pre-training {objective} finished without checkpoints at steps "
                        f"{missing} in {config.model_dir}; delete that directory and re-run.")
    return {"objective": objective, "num_train_steps": config.num_train_steps,
            "checkpoint_steps": list(steps),
            "save_checkpoints_steps": config.save_checkpoints_steps,
            "flops_per_step": study_flops.train_flops_per_step(config),
            "steps_run_last_attempt": result.steps_run,
            "seconds_last_attempt": seconds, "final_losses": result.losses,
            **_seconds_record(seconds, result.steps_run, config.num_train_steps)}


def pretraining_units(study, dirs, objective):
    """[Unit] of the pre_train_<objective> stage (its input: the TFRecords)."""
    ready = os.path.exists(os.path.join(dirs.tfrecords_dir, "pretrain_data.json"))
    return [Unit(objective, dirs.unit_path("pretrain", objective), ready,
                 lambda: run_pretraining_unit(study, dirs, objective))]


def run_eval_unit(study, dirs, objective, step):
    """Pre-training eval of one checkpoint; returns its record (all metric keys)."""
    eval_dir = dirs.eval_dir(objective, step)
    prefix = os.path.abspath(dirs.checkpoint_prefix(objective, step))
    # A state file naming the checkpoint makes the runner restore exactly that one.
    io_utils.write_text(f"model_checkpoint_path: {json.dumps(prefix)}\n",
                        os.path.join(eval_dir, "checkpoint"))
    config = pretrain_config(study, dirs, objective, eval_dir=eval_dir)
    metrics = pretrain_runner.run_pretraining(config)
    flops = study_flops.train_flops_per_step(pretrain_config(study, dirs, objective))
    return {"objective": objective, "step": step, "flops": flops * step, "metrics": metrics}


def eval_units(study, dirs):
    """[Unit] of the pretrain_eval stage: every checkpoint of both objectives."""
    units = []
    for objective in ("electra", "mlm"):
        for step in study.objective_checkpoint_steps(objective):
            ready = os.path.exists(dirs.checkpoint_prefix(objective, step) + ".index")
            units.append(Unit(f"{objective}_{step}",
                              dirs.unit_path("pretrain_eval", f"{objective}_{step}"), ready,
                              lambda o=objective, s=step: run_eval_unit(study, dirs, o, s)))
    return units
