"""The demo's closing comparison: fine-tuned from pre-training vs from random weights."""

import os
import pickle
import statistics


def task_scores(results_dir, task, metric):
    """One `metric` value per fine-tuning trial, from run_finetuning's results pickle."""
    path = os.path.join(results_dir, task + "_results.pkl")
    with open(path, "rb") as f:
        trials = pickle.load(f)
    scores = [trial[task][metric] for trial in trials if task in trial]
    if not scores:
        raise ValueError(f"{path} holds no {task} {metric} scores; re-run the demo's "
                         "fine-tuning stage.")
    return scores


def comparison(pretrained, random_init, pretrain_steps,
               measure="Topic task, dev accuracy (%)"):
    """The demo's last lines: the median dev score of each initialisation (`measure`
    names the task and metric) and their difference."""
    def fmt(scores):
        trials = ", ".join(f"{s:.1f}" for s in scores)
        return f"{statistics.median(scores):6.1f}   (trials: {trials})"

    gain = statistics.median(pretrained) - statistics.median(random_init)
    verdict = ("pre-training paid off" if gain > 0
               else "pre-training did not pay off in this run")
    labels = (f"ELECTRA pre-trained ({pretrain_steps} steps):", "random initialisation:")
    width = max(len(label) for label in labels)
    seeds = "1 fine-tuning seed" if len(pretrained) == 1 else \
        f"the median of {len(pretrained)} fine-tuning seeds"
    return "\n".join([
        "",
        f"Did pre-training pay off? {measure}, {seeds}:",
        f"  {labels[0].ljust(width)} {fmt(pretrained)}",
        f"  {labels[1].ljust(width)} {fmt(random_init)}",
        f"  difference: {gain:+.1f} ({verdict})"])
