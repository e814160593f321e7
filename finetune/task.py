"""Abstract fine-tuning `Task` (examples, featurize, feature specs, head, scorer).

Every family implements the same signatures (`get_scorer(split="dev")`,
`get_eval_splits()`), so the runner never special-cases one. Malformed task data
raises `DataError`, a util.cli.UserError: the scripts print one line and exit 2.
"""

from __future__ import annotations

import abc
import os
from typing import Any, Sequence

import tensorflow as tf

from finetune import feature_spec
from finetune import scorer
from util.cli import UserError


class DataError(UserError):
    """A task's data file is malformed or does not match the task's saved state; the
    message names the file, the place in it and the fix (run_main: one line, exit 2)."""


def first_non_utf8_line(path: str) -> int:
    """1-based number of the first line of `path` that is not valid UTF-8 (0: none).

    Text-mode reads decode in blocks, so the line counter of a reader that hit a
    UnicodeDecodeError may lag the bad line; this finds the real one.
    """
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return 0


def not_utf8_error(path: str, err: UnicodeDecodeError) -> DataError:
    """The DataError for a text data file that is not UTF-8, naming the bad line."""
    return DataError(f"{path}: line {first_non_utf8_line(path)} is not valid UTF-8 "
                     f"({err.reason}); re-save the file as UTF-8.")


class Example:
    """Base of every task's example; carries the owning task's name and an id."""

    def __init__(self, task_name: str, eid: int = 0):
        self.task_name = task_name
        self.eid = eid


class Task(abc.ABC):
    """One fine-tuning task.

    Subclasses implement the five responsibilities below; `abc` enforces them, so a
    subclass that forgets one cannot be instantiated.

    The `config` is read by attribute with the original `FinetuningConfig` names
    (raw_data_dir, max_seq_length, task_names, debug, double_unordered, ...).
    """

    # True where the head reads encoder_output.pooled_output alone: the encoder then
    # skips the last layer's other positions (modeling.BertModel, pooled_only).
    pooled_output_only = False

    def __init__(self, config: Any, name: str, tokenizer: Any):
        self.config = config
        self.name = name
        self.tokenizer = tokenizer

    # ---- the five responsibilities ---------------------------------------------------

    @abc.abstractmethod
    def get_examples(self, split: str) -> list[Example]:
        """Reads `<data_dir>/finetuning_data/<name>/<split file>` into examples."""

    @abc.abstractmethod
    def featurize(self, example: Example, is_training: bool,
                  log: bool = False) -> list[dict]:
        """Turns one example into a list of flat feature dicts (short names, see
        finetune/feature_spec.py). Classification gives one dict; QA one per window."""

    @abc.abstractmethod
    def get_feature_specs(self) -> list[feature_spec.FeatureSpec]:
        """Specs of this task's own features (each with task_name=self.name)."""

    @abc.abstractmethod
    def get_prediction_module(self, hidden_size: int) -> tf.Module:
        """Builds this task's head, variables named "task_specific/<name>/...".

        The head is called as
          head(encoder_output, features, is_training=False, compute_dtype=tf.float32)
            -> (per_example_losses [B] float32, outputs: dict of per-example tensors)
        where `encoder_output` is model.modeling.EncoderOutput (sequence_output [B,S,H],
        pooled_output [B,H]) and `features` = feature_spec.features_for_task(batch, name).
        The outputs dict always holds "loss" [B] and "eid" [B]; the scorer reads it.
        """

    @abc.abstractmethod
    def get_scorer(self, split: str = "dev") -> scorer.Scorer:
        """A fresh scorer for one evaluation pass over `split`."""

    # ---- shared helpers ---------------------------------------------------------------

    def get_eval_splits(self) -> list[str]:
        """Labelled splits evaluated after training (the original: dev only)."""
        return ["dev"]

    def get_test_splits(self) -> list[str]:
        """Splits predicted when `write_test_outputs` is on."""
        return ["test"]

    def cache_settings(self) -> dict:
        """Task settings that change featurisation; stored in the TFRecord cache metadata
        so a cache made with other settings is rebuilt. Subclasses extend the dict."""
        return {"name": self.name, "class": type(self).__name__}

    @property
    def task_id(self) -> int:
        """Index of this task in config.task_names (the `task_id` feature)."""
        return list(self.config.task_names).index(self.name)

    @property
    def raw_data_dir(self) -> str:
        """<data-dir>/finetuning_data/<name>: where this task's raw files live."""
        return os.path.join(self.config.raw_data_dir, self.name)

    def data_file(self, filename: str) -> str:
        """Path of a raw data file; a clear error names the file and directory if absent."""
        path = os.path.join(self.raw_data_dir, filename)
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"Task {self.name!r}: data file {filename!r} not found in "
                f"{self.raw_data_dir!r}. Put the {self.name} data there (see the README's "
                "fine-tuning setup) or remove the task from task_names.")
        return path

    def feature(self, name: str, shape: Sequence[int] = (),
                is_int_feature: bool = True) -> feature_spec.FeatureSpec:
        """A FeatureSpec owned by this task."""
        return feature_spec.FeatureSpec(name, tuple(shape), is_int_feature, self.name)

    def shared_features(self, input_ids: list[int], input_mask: list[int],
                        segment_ids: list[int]) -> dict:
        """The shared part of a feature dict, with this task's task_id."""
        return {"input_ids": input_ids, "input_mask": input_mask,
                "segment_ids": segment_ids, "task_id": self.task_id}

    def __repr__(self):
        return f"{type(self).__name__}(name={self.name!r})"
