"""PNG plots of the learning study (matplotlib, Agg backend: no display needed).

Downstream scores vs pre-training steps and FLOPs (ELECTRA and MLM lines, random init
as a horizontal line) and pre-training metrics vs steps. Missing results are missing
points; an empty panel says "no results yet".
"""

import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=wrong-import-position

from experiments.study_config import PRIMARY_METRIC  # pylint: disable=wrong-import-position
from util import io_utils  # pylint: disable=wrong-import-position

STYLES = {"electra": dict(color="tab:blue", marker="o", label="ELECTRA"),
          "mlm": dict(color="tab:orange", marker="s", label="MLM")}
X_AXES = {"step": "pre-training steps", "flops": "pre-training FLOPs"}
# Pre-training metrics plotted against steps, when the eval records have them.
PLOT_METRICS = ("masked_lm_accuracy", "disc_auc", "disc_auc_real", "repr_mean_cosine")
PNG_FILES = ("downstream_average.png", "downstream_tasks_steps.png",
             "downstream_tasks_flops.png", "pretrain_metrics.png")


def _panel(ax, rows, value, x, title):
    """One panel: a line per objective over its checkpoints, random init as a line."""
    lines = {}
    for objective, style in STYLES.items():
        points = [(r[x], value(r)) for r in rows
                  if r["objective"] == objective and value(r) is not None]
        if points:
            ax.plot(*zip(*points), **style)
            lines[objective] = points
    random = [value(r) for r in rows if r["objective"] is None and value(r) is not None]
    if random:
        ax.axhline(random[0], color="gray", linestyle="--", label="random init")
    if lines:
        # Log axis, ticks at the first line's checkpoints: matplotlib's minor log labels
        # overlap over the narrow ranges of short runs.
        ticks = [px for px, _ in next(iter(lines.values()))]
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(ticks, [f"{t:.3g}" for t in ticks])
    if not (lines or random):
        ax.text(0.5, 0.5, "no results yet", ha="center", va="center",
                transform=ax.transAxes)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(X_AXES.get(x, x), fontsize=8)
    ax.tick_params(labelsize=7)


def _grid(n, ncols=3):
    nrows = max(1, math.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4 * ncols, 3 * nrows), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _save(fig, axes, path):
    handles = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="lower center",
                   ncol=len(handles), fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    with io_utils.atomic_path(path) as temp:
        fig.savefig(temp, format="png", dpi=100)
    plt.close(fig)


def plot_average(rows, path):
    fig, axes = _grid(2, ncols=2)
    for ax, x in zip(axes, ("step", "flops")):
        _panel(ax, rows, lambda r: r["average"], x, "average of the task medians")
    _save(fig, axes, path)


def plot_tasks(rows, tasks, x, path):
    fig, axes = _grid(len(tasks))
    for ax, task in zip(axes, tasks):
        _panel(ax, rows, lambda r, t=task: r["medians"][t], x,
               f"{task} ({PRIMARY_METRIC[task]})")
    _save(fig, axes, path)


def plot_pretrain_metrics(results, path):
    evals = results["pretrain_eval"]
    present = {k for o in evals.values() for m in o.values() for k in m}
    metrics = [m for m in PLOT_METRICS if m in present] or ["masked_lm_accuracy"]
    rows = [r for r in results["rows"] if r["objective"] is not None]

    def value_of(metric):
        return lambda r: evals[r["objective"]].get(str(r["step"]), {}).get(metric)

    fig, axes = _grid(len(metrics), ncols=min(len(metrics), 2))
    for ax, metric in zip(axes, metrics):
        _panel(ax, rows, value_of(metric), "step", metric)
    _save(fig, axes, path)


def write_plots(results, tasks, out_dir):
    """Writes the four PNG files into out_dir."""
    rows = results["rows"]
    average, tasks_steps, tasks_flops, pretrain = (os.path.join(out_dir, name)
                                                   for name in PNG_FILES)
    plot_average(rows, average)
    plot_tasks(rows, tasks, "step", tasks_steps)
    plot_tasks(rows, tasks, "flops", tasks_flops)
    plot_pretrain_metrics(results, pretrain)
