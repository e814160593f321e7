"""GLUE scorers: accuracy, MCC, F1 (positive class 1), Pearson/Spearman/MSE, loss.

The metric maths are small numpy functions (tested against sklearn/scipy). Scorers
receive one example's head outputs per `update` call (see finetune/scorer.py) and
report the original's result names: accuracy, mcc, f1, pearson, spearman, mse, loss.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from finetune import scorer
from util import io_utils


def accuracy(labels: Sequence[int], preds: Sequence[int]) -> float:
    """Fraction of exact matches, x100."""
    labels, preds = np.asarray(labels), np.asarray(preds)
    return 100.0 * float(np.mean(labels == preds)) if labels.size else 0.0


def matthews_corrcoef(labels: Sequence[int], preds: Sequence[int]) -> float:
    """Binary/multi-class Matthews correlation (Gorodkin's R_K), as sklearn; 0 if undefined."""
    labels, preds = np.asarray(labels), np.asarray(preds)
    classes = np.union1d(labels, preds)
    y = np.searchsorted(classes, labels)
    p = np.searchsorted(classes, preds)
    confusion = np.zeros((classes.size, classes.size), np.float64)
    np.add.at(confusion, (y, p), 1.0)
    t_k = confusion.sum(axis=1)  # true occurrences per class
    p_k = confusion.sum(axis=0)  # predicted occurrences per class
    c = np.trace(confusion)
    s = confusion.sum()
    cov_yp = c * s - t_k @ p_k
    cov_pp = s * s - p_k @ p_k
    cov_yy = s * s - t_k @ t_k
    denom = np.sqrt(cov_pp * cov_yy)
    return float(cov_yp / denom) if denom > 0 else 0.0


def f1_positive(labels: Sequence[int], preds: Sequence[int], positive: int = 1) -> float:
    """F1 of the positive class x100, as GLUE reports for MRPC and QQP.

    The original's F1Scorer counted gold positives with `y_true >= 1` but also counted
    every prediction >= 1 and matched on equality; here precision and recall both use
    the one positive label. 0 when there is no true positive.
    """
    labels, preds = np.asarray(labels), np.asarray(preds)
    tp = np.sum((preds == positive) & (labels == positive))
    n_pred = np.sum(preds == positive)
    n_gold = np.sum(labels == positive)
    if tp == 0:
        return 0.0
    precision, recall = tp / n_pred, tp / n_gold
    return float(100.0 * 2 * precision * recall / (precision + recall))


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation; nan if either input is constant (as scipy)."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    xc, yc = x - x.mean(), y - y.mean()
    denom = np.sqrt(np.sum(xc * xc) * np.sum(yc * yc))
    return float(np.sum(xc * yc) / denom) if denom > 0 else float("nan")


def average_ranks(x: Sequence[float]) -> np.ndarray:
    """1-based ranks with ties given their average rank (scipy's rankdata 'average')."""
    x = np.asarray(x, np.float64)
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    # Start index of each run of equal values, and the run each sorted item belongs to.
    new_run = np.concatenate([[True], sorted_x[1:] != sorted_x[:-1]])
    run_id = np.cumsum(new_run) - 1
    run_starts = np.flatnonzero(new_run)
    run_ends = np.concatenate([run_starts[1:], [x.size]])
    run_rank = (run_starts + run_ends + 1) / 2.0  # mean of 1-based ranks start+1..end
    ranks = np.empty(x.size, np.float64)
    ranks[order] = run_rank[run_id]
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation = Pearson of average ranks."""
    return pearson(average_ranks(x), average_ranks(y))


class SentenceLevelScorer(scorer.Scorer):
    """Collects loss, gold, prediction and eid of every example of a GLUE task."""

    def __init__(self, label_list: Sequence[str] | None = None):
        super().__init__()
        self._label_list = list(label_list) if label_list is not None else None
        self._total_loss = 0.0
        self._true_labels: list = []
        self._preds: list = []
        self._eids: list[int] = []

    def update(self, results: Mapping) -> None:
        super().update(results)
        self._total_loss += float(results["loss"])
        gold = results["label_ids"] if "label_ids" in results else results["targets"]
        self._true_labels.append(np.asarray(gold).item())
        self._preds.append(np.asarray(results["predictions"]).item())
        self._eids.append(int(results["eid"]))

    def get_loss(self) -> float:
        """Mean per-example loss over the real examples seen."""
        return self._total_loss / max(1, len(self._true_labels))

    def _format(self, value) -> str:
        if self._label_list is not None:
            return self._label_list[int(value)]
        return f"{float(value):.6f}"

    def write_predictions(self, path: str) -> str:
        """TSV "eid  prediction  gold", one example per line (label strings for
        classification; the normalised [0, 1] scale for regression)."""
        rows = ["eid\tprediction\tgold"]
        for eid, pred, gold in sorted(zip(self._eids, self._preds, self._true_labels)):
            rows.append(f"{eid}\t{self._format(pred)}\t{self._format(gold)}")
        io_utils.write_text("\n".join(rows) + "\n", path)
        return path


class AccuracyScorer(SentenceLevelScorer):

    def _get_results(self):
        return [("accuracy", accuracy(self._true_labels, self._preds)),
                ("loss", self.get_loss())]


class F1Scorer(SentenceLevelScorer):
    """Accuracy and positive-class F1 (MRPC, QQP): the pair GLUE reports."""

    def _get_results(self):
        return [("accuracy", accuracy(self._true_labels, self._preds)),
                ("f1", f1_positive(self._true_labels, self._preds)),
                ("loss", self.get_loss())]


class MCCScorer(SentenceLevelScorer):

    def _get_results(self):
        return [("mcc", 100.0 * matthews_corrcoef(self._true_labels, self._preds)),
                ("loss", self.get_loss())]


class RegressionScorer(SentenceLevelScorer):
    """Pearson/Spearman x100 and MSE, all on the normalised target scale."""

    def _get_results(self):
        golds = np.asarray(self._true_labels, np.float64)
        preds = np.asarray(self._preds, np.float64)
        return [("pearson", 100.0 * pearson(golds, preds)),
                ("spearman", 100.0 * spearman(golds, preds)),
                ("mse", float(np.mean(np.square(golds - preds))) if golds.size else 0.0),
                ("loss", self.get_loss())]
