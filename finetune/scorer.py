"""Abstract evaluation scorer: accumulate per-example outputs, then report metrics."""

from __future__ import annotations

import abc
from typing import Mapping

import numpy as np


class Scorer(abc.ABC):
    """Accumulates one task's per-example head outputs and computes its metrics.

    Protocol (the evaluation loop's side): for every *real* example of the task (its
    `task_id` equals the task's index; padding examples are skipped) call
    `update({output name: numpy value for that example})`, where the names are the keys
    of the head's outputs dict (e.g. "loss", "predictions", "label_ids", "eid"), or
    pass whole batches to `update_batch`. Then call `get_results()` / `results_str()`.
    """

    def __init__(self):
        self._updated = False
        self._cached_results: list[tuple[str, float]] = []

    def update(self, results: Mapping) -> None:
        """Adds one example's outputs; subclasses call super().update(results) first."""
        self._updated = True

    def update_batch(self, outputs: Mapping, task_id, task_index: int) -> int:
        """Calls `update` for each row of a batch that belongs to this task.

        Args:
          outputs: the head's outputs dict as numpy arrays, each [B, ...].
          task_id: [B] task ids of the batch (padding rows have id = number of tasks).
          task_index: this task's index in config.task_names.
        Returns:
          The number of examples added.
        """
        rows = np.flatnonzero(np.asarray(task_id) == task_index)
        for row in rows:
            self.update({name: np.asarray(value)[row] for name, value in outputs.items()})
        return int(rows.size)

    @abc.abstractmethod
    def get_loss(self) -> float:
        """Mean per-example loss over the examples seen."""

    @abc.abstractmethod
    def _get_results(self) -> list[tuple[str, float]]:
        """[(metric name, value)] in display order; the last entry is usually "loss"."""

    def get_results(self, prefix: str = "") -> list[tuple[str, float]]:
        """Metrics, recomputed only if `update` was called since the last call."""
        if self._updated:
            self._cached_results = list(self._get_results())
            self._updated = False
        return [(prefix + k, v) for k, v in self._cached_results]

    def results_str(self) -> str:
        """The original's console format: "accuracy: 88.80 - loss: 0.35"."""
        return " - ".join(f"{k}: {v:.2f}" for k, v in self.get_results())

    def write_predictions(self, path: str) -> str | None:
        """Writes per-example dev predictions to `path` if this scorer has a format for them.

        Returns the path written, or None for scorers whose task writes its predictions
        elsewhere (QA writes its own JSON files). Subclasses override.
        """
        del path
        return None
