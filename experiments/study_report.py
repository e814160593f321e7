"""The study's `report` stage: results.json, results.md and PNG plots from the unit records.

Works on partial results: a missing score is null in JSON, "-" in Markdown and a missing
point in the plots, so the report can be rendered (and committed) at any time.
"""

import os
import statistics

from experiments import study_flops, study_plots
from experiments.study_config import PRIMARY_METRIC
from experiments.study_finetune import RANDOM
from experiments.study_units import load_units
from util import config_utils, io_utils
from util.logging_utils import log

OBJECTIVE_LABELS = {"electra": "ELECTRA", "mlm": "MLM"}
METRIC_LABELS = {"mcc": "MCC", "accuracy": "acc", "spearman": "Spearman", "f1": "F1"}


def table_inits(study):
    """(name, objective, step) rows in display order: random, ELECTRA, MLM by step."""
    rows = [(RANDOM, None, 0)]
    for objective in ("electra", "mlm"):
        rows += [(f"{objective}_{s}", objective, s)
                 for s in study.objective_checkpoint_steps(objective)]
    return rows


def _row(study, name, objective, step, flops, pretraining, finetune):
    run = pretraining.get(objective) if objective else None
    seconds = 0.0 if objective is None else None
    if run and run.get("seconds") is not None:
        seconds = run["seconds"] * step / run["num_train_steps"]  # prorated to this step
    units = {task: finetune.get(f"{name}__{task}") for task in study.tasks}
    medians = {task: unit["median"] if unit else None for task, unit in units.items()}
    present = [m for m in medians.values() if m is not None]
    return {"init": name, "objective": objective, "step": step,
            "flops": flops[objective] * step if objective else 0, "seconds": seconds,
            "medians": medians,
            "average": statistics.mean(present) if len(present) == len(medians) else None,
            "scores": {task: unit["scores"] for task, unit in units.items() if unit},
            "seeds": {task: unit["seeds"] for task, unit in units.items() if unit}}


def collect(study, dirs):
    """Everything the report shows, as one JSON-able dict."""
    flops = {o: study_flops.study_flops_per_step(study, o) for o in ("electra", "mlm")}
    pretraining = load_units(dirs, "pretrain")
    finetune = load_units(dirs, "finetune")
    pretrain_eval = {"electra": {}, "mlm": {}}
    for record in load_units(dirs, "pretrain_eval").values():
        pretrain_eval[record["objective"]][str(record["step"])] = record["metrics"]
    rows = [_row(study, name, objective, step, flops, pretraining, finetune)
            for name, objective, step in table_inits(study)]
    return {"config": config_utils.config_to_dict(study), "flops_per_step": flops,
            "pretraining": pretraining, "pretrain_eval": pretrain_eval,
            "finetune": finetune, "rows": rows}


def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


def _flops_unit(results):
    biggest = max(r["flops"] for r in results["rows"])
    return ("PFLOP", 1e15) if biggest >= 1e15 else ("TFLOP", 1e12)


def _init_label(row):
    if row["objective"] is None:
        return "random init"
    return f"{OBJECTIVE_LABELS[row['objective']]} @ {row['step']}"


def downstream_table(results, tasks):
    """Markdown table: one row per init, the tasks' median dev scores and their mean."""
    unit, scale = _flops_unit(results)
    head = ["init", "pre-training steps", f"pre-training {unit}", "pre-training s"]
    head += [f"{t} {METRIC_LABELS[PRIMARY_METRIC[t]]}" for t in tasks] + ["average"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in results["rows"]:
        cells = [_init_label(row), str(row["step"]), _fmt(row["flops"] / scale, ".4g"),
                 _fmt(row["seconds"], ".0f")]
        cells += [_fmt(row["medians"][t], ".1f") for t in tasks] + [_fmt(row["average"], ".1f")]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def pretrain_table(results):
    """Markdown table of every pre-training eval metric per checkpoint."""
    evals = results["pretrain_eval"]
    keys = sorted({k for o in evals.values() for m in o.values() for k in m} - {"global_step"})
    first = study_plots.PLOT_METRICS
    keys = [k for k in first if k in keys] + [k for k in keys if k not in first]
    unit, scale = _flops_unit(results)
    lines = ["| checkpoint | steps | " + unit + " | " + " | ".join(keys) + " |",
             "|" + "---|" * (len(keys) + 3)]
    for row in results["rows"]:
        metrics = evals.get(row["objective"], {}).get(str(row["step"])) if row["objective"] else None
        if metrics is None:
            continue
        cells = [_init_label(row), str(row["step"]), _fmt(row["flops"] / scale, ".4g")]
        cells += [_fmt(metrics.get(k), ".4f") for k in keys]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def vocab_words(c):
    """The report's words for the study's vocab."""
    if c.corpus_vocab_size is None:
        return f"the shared {c.vocab_size}-token vocab"
    return f"a {c.corpus_vocab_size}-token vocab learnt from the corpus"


def markdown(results, study):
    """The whole results.md text."""
    c = study
    lines = [
        "# Learning study: ELECTRA vs MLM vs random init", "",
        "Written by `experiments/learning_study.py` (README, \"Learning study\"). "
        f"Discriminator: {c.num_hidden_layers} layers x hidden {c.hidden_size} "
        f"(generator {c.generator_hidden_size:g} x as wide); ELECTRA {c.electra_steps} steps, "
        f"MLM {c.mlm_steps} steps (equal total FLOPs), batch {c.train_batch_size} x "
        f"{c.max_seq_length}; {vocab_words(c)}; peak LR {c.learning_rate:g} with "
        f"{c.num_warmup_steps} warmup steps, pre-training dropout {c.pretrain_dropout:g}, "
        f"generator sampling temperature {c.temperature:g}. Scores are dev-set medians "
        f"over seeds ({c.final_seeds} for random init and the final checkpoints, "
        f"{c.curve_seeds} for the others); "
        "\"-\" = not run yet. FLOPs are analytic training FLOPs "
        "(experiments/study_flops.py); seconds are prorated from the run's wall-clock.", "",
        "## Downstream", ""] + downstream_table(results, study.tasks) + [
        "", "![average](downstream_average.png)", "",
        "![per task vs steps](downstream_tasks_steps.png)", "",
        "![per task vs FLOPs](downstream_tasks_flops.png)", "",
        "## Pre-training metrics", ""] + pretrain_table(results) + [
        "", "![pre-training metrics](pretrain_metrics.png)", ""]
    return "\n".join(lines)


def write_report(study, dirs):
    """Writes results.json, results.md and the PNG plots into dirs.out_dir."""
    results = collect(study, dirs)
    io_utils.write_json(results, os.path.join(dirs.out_dir, "results.json"), indent=2)
    io_utils.write_text(markdown(results, study), os.path.join(dirs.out_dir, "results.md"))
    study_plots.write_plots(results, study.tasks, dirs.out_dir)
    done = sum(1 for r in results["rows"] for m in r["medians"].values() if m is not None)
    total = len(results["rows"]) * len(study.tasks)
    log(f"[report] {done}/{total} init x task scores in {dirs.out_dir}/results.md")
