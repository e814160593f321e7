"""The study's `finetune` stage: every init x task, fine-tuned and scored on dev.

Inits: random weights, then each saved checkpoint of both objectives. Random init and
each objective's final checkpoint get `final_seeds` seeds, intermediate checkpoints
`curve_seeds`; trial t of a unit uses seed study.seed + t - 1, so the curve points
share their seeds with the finals. Units run most informative first: the three
finals with all seeds, then the curve points coarse to fine.
"""

import collections
import os
import statistics
import time

from experiments.study_config import PRIMARY_METRIC
from experiments.study_units import Unit
from finetune import finetune_runner

Init = collections.namedtuple("Init", ["name", "objective", "step", "seeds"])
Init.__doc__ = """A fine-tuning starting point: name ("random", "electra_1000", ...),
objective (None for random), pre-training step (0 for random), number of seeds."""

RANDOM = "random"


def coarse_to_fine(n):
    """Indices 0..n-1, each interval's middle before its halves: [mid, ...]."""
    order, ranges = [], [(0, n - 1)]
    while ranges:
        lo, hi = ranges.pop(0)
        if lo > hi:
            continue
        mid = (lo + hi) // 2
        order.append(mid)
        ranges += [(lo, mid - 1), (mid + 1, hi)]
    return order


def plan_inits(study):
    """[Init] in run order: random and both finals first, then the curve points."""
    inits = [Init(RANDOM, None, 0, study.final_seeds)]
    curves = {}
    for objective in ("electra", "mlm"):
        steps = study.objective_checkpoint_steps(objective)
        inits.append(Init(f"{objective}_{steps[-1]}", objective, steps[-1], study.final_seeds))
        curves[objective] = [steps[i] for i in coarse_to_fine(len(steps) - 1)]
    for i in range(max(len(c) for c in curves.values())):
        for objective, steps in curves.items():
            if i < len(steps):
                inits.append(Init(f"{objective}_{steps[i]}", objective, steps[i],
                                  study.curve_seeds))
    return inits


def finetune_hparams(study, dirs, init, task):
    """FinetuningConfig hparams of one unit (sizes explicit: random init has no
    pretrain_config.json to read them from)."""
    init_checkpoint = (None if init.objective is None
                       else dirs.checkpoint_prefix(init.objective, init.step))
    return {
        "task_names": [task], "model_size": "small",
        "model_hparam_overrides": study.model_hparam_overrides(),
        "embedding_size": study.embedding_size, "vocab_size": study.vocab_size,
        "vocab_file": dirs.vocab_file, "init_checkpoint": init_checkpoint,
        "learning_rate": study.finetune_learning_rate,
        "num_train_epochs": study.finetune_epochs,
        "layerwise_lr_decay": study.layerwise_lr_decay,
        "train_batch_size": study.finetune_batch_size,
        "eval_batch_size": study.finetune_batch_size,
        "max_seq_length": study.finetune_max_seq_length,
        "num_trials": init.seeds, "seed": study.seed, "keep_all_models": False,
        "pretrained_model_dir": dirs.finetune_run_dir(init.name, task),
        "raw_data_dir": dirs.finetuning_data_dir,
        "preprocessed_data_dir": dirs.finetune_tfrecords_dir(task),
        **study.task_hparams.get(task, {}),
    }


def run_finetune_unit(study, dirs, init, task, overrides=None, run_name=None):
    """Fine-tunes init on task for init.seeds seeds; returns the unit's record.

    overrides: FinetuningConfig hparams over the study's (experiments/finetune_variant.py);
    run_name: the fine-tuning model name (default init.name)."""
    hparams = {**finetune_hparams(study, dirs, init, task), **(overrides or {})}
    config = finetune_runner.make_run_config(dirs.work_dir, run_name or init.name, hparams)
    start = time.monotonic()
    results = finetune_runner.run_finetuning(config)
    seconds = time.monotonic() - start
    # Fine-tuned weights are not needed afterwards (disk); only the scores are kept.
    trials = range(1, len(results) + 1)
    for trial in trials:
        finetune_runner.remove_model_dir(config.for_trial(trial).model_dir)
    models_dir = os.path.dirname(config.model_dir)
    if os.path.isdir(models_dir) and not os.listdir(models_dir):
        os.rmdir(models_dir)
    metrics = [{k: float(v) for k, v in trial[task].items()} for trial in results]
    metric = PRIMARY_METRIC[task]
    scores = [m[metric] for m in metrics]
    return {"init": init.name, "objective": init.objective, "step": init.step,
            "task": task, "metric": metric, "seeds": [config.for_trial(t).seed for t in trials],
            "scores": scores, "median": statistics.median(scores), "metrics": metrics,
            "seconds": seconds}


def finetune_units(study, dirs):
    """[Unit] of the finetune stage in run order."""
    data_ready = os.path.exists(dirs.unit_path("data", "data"))
    units = []
    for init in plan_inits(study):
        ready = data_ready and (init.objective is None or os.path.exists(
            dirs.checkpoint_prefix(init.objective, init.step) + ".index"))
        for task in study.tasks:
            units.append(Unit(f"{init.name}/{task}",
                              dirs.unit_path("finetune", f"{init.name}__{task}"), ready,
                              lambda i=init, t=task: run_finetune_unit(study, dirs, i, t)))
    return units
