"""Declarative feature specs: one list drives TFRecord writing, parsing and padding.

A `FeatureSpec` is either *shared* (``task_name=None``: input_ids, input_mask,
segment_ids, task_id) or owned by one task (``task_name="cola"``, ``name="label_ids"``).
The owning task is held as data, so a multi-task batch is split back into per-task
features without parsing strings (the original's `utils.nest_dict` split on "_").

Layout conventions used across finetune/:
- `Task.featurize` returns flat dicts keyed by *short* names: the shared names plus the
  task's own names (e.g. {"input_ids": [...], ..., "eid": 7, "label_ids": 1}).
- In a TFRecord each feature is stored under `spec.key` ("input_ids", "cola_label_ids"),
  the original's on-disk names.
- A parsed/batched example is a *nested* dict: shared features at the top level and one
  sub-dict per task: {"input_ids": [B,S], "input_mask": [B,S], "segment_ids": [B,S],
  "task_id": [B], "cola": {"eid": [B], "label_ids": [B]}}. `features_for_task` gives a
  head the shared features merged with its own (short names).
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Mapping, Sequence

import numpy as np
import tensorflow as tf

SHARED_FEATURE_NAMES = ("input_ids", "input_mask", "segment_ids", "task_id")


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """One fixed-shape feature of a fine-tuning example.

    Attributes:
      name: short name within its owner, e.g. "input_ids" or "label_ids".
      shape: per-example shape; () for a scalar, (max_seq_length,) for a sequence.
      is_int_feature: stored as int64 (read back as int32) if True, else float32.
      task_name: owning task, or None for a feature shared by all tasks.
    """
    name: str
    shape: tuple[int, ...]
    is_int_feature: bool = True
    task_name: str | None = None

    def __post_init__(self):
        # Accept lists for convenience but keep the dataclass hashable/immutable.
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        if self.task_name is not None and self.name in SHARED_FEATURE_NAMES:
            raise ValueError(
                f"Task {self.task_name!r} declares a feature named {self.name!r}, which is "
                f"reserved for the shared features {SHARED_FEATURE_NAMES}; rename it.")

    @property
    def key(self) -> str:
        """Name of the feature inside a serialized tf.train.Example."""
        return self.name if self.task_name is None else f"{self.task_name}_{self.name}"

    def get_parsing_spec(self) -> tf.io.FixedLenFeature:
        return tf.io.FixedLenFeature(
            self.shape, tf.int64 if self.is_int_feature else tf.float32)

    def get_default_values(self) -> np.ndarray:
        """All-zero values used for padding examples and for other tasks' features."""
        return np.zeros(self.shape, np.int64 if self.is_int_feature else np.float32)


def get_shared_feature_specs(max_seq_length: int) -> list[FeatureSpec]:
    """input_ids/input_mask/segment_ids [max_seq_length] and the scalar task_id."""
    return [
        FeatureSpec("input_ids", (max_seq_length,)),
        FeatureSpec("input_mask", (max_seq_length,)),
        FeatureSpec("segment_ids", (max_seq_length,)),
        FeatureSpec("task_id", ()),
    ]


def check_unique(specs: Sequence[FeatureSpec]) -> None:
    """Raises if two specs would be stored under the same TFRecord key."""
    seen = set()
    for spec in specs:
        if spec.key in seen:
            raise ValueError(f"Two feature specs are stored under the key {spec.key!r}; "
                             "each task must declare each feature once.")
        seen.add(spec.key)


def get_parsing_spec(specs: Sequence[FeatureSpec]) -> dict[str, tf.io.FixedLenFeature]:
    """{TFRecord key: FixedLenFeature} for `tf.io.parse_example`."""
    check_unique(specs)
    return {spec.key: spec.get_parsing_spec() for spec in specs}


def to_tf_example(specs: Sequence[FeatureSpec], task_name: str | None,
                  features: Mapping[str, object]) -> tf.train.Example:
    """Serializes one featurised example; features missing from `features` get zeros.

    Args:
      specs: all specs of the dataset (shared + every task's).
      task_name: the task that produced `features` (None for a padding example).
      features: short name -> scalar or sequence, as returned by `Task.featurize`.
    """
    own = {s.name: s for s in specs if s.task_name is None or s.task_name == task_name}
    unknown = sorted(set(features) - set(own))
    if unknown:
        raise ValueError(f"Task {task_name!r} produced features {unknown} that none of its "
                         "feature specs declare; add them to get_feature_specs().")
    out = {}
    for spec in specs:
        in_scope = spec.task_name is None or spec.task_name == task_name
        values = features.get(spec.name) if in_scope else None
        if values is None:
            values = spec.get_default_values()
        array = np.asarray(values, np.int64 if spec.is_int_feature else np.float32)
        if array.shape != spec.shape:
            raise ValueError(f"Feature {spec.key!r} has shape {array.shape}, but its spec "
                             f"says {spec.shape}.")
        flat = array.reshape(-1).tolist()
        if spec.is_int_feature:
            out[spec.key] = tf.train.Feature(int64_list=tf.train.Int64List(value=flat))
        else:
            out[spec.key] = tf.train.Feature(float_list=tf.train.FloatList(value=flat))
    return tf.train.Example(features=tf.train.Features(feature=out))


def cast_and_nest(parsed: Mapping[str, tf.Tensor],
                  specs: Sequence[FeatureSpec]) -> dict:
    """Parsed flat tensors -> nested dict, int64 cast to int32 (what accelerators want).

    Returns {shared name: tensor, task_name: {short name: tensor}}.
    """
    nested: dict = {}
    for spec in specs:
        tensor = parsed[spec.key]
        if tensor.dtype == tf.int64:
            tensor = tf.cast(tensor, tf.int32)
        if spec.task_name is None:
            nested[spec.name] = tensor
        else:
            nested.setdefault(spec.task_name, {})[spec.name] = tensor
    return nested


def features_for_task(features: Mapping, task_name: str) -> dict:
    """Shared features merged with one task's own features, all under short names."""
    merged = {name: features[name] for name in SHARED_FEATURE_NAMES if name in features}
    merged.update(features.get(task_name, {}))
    return merged


def task_specs(specs: Iterable[FeatureSpec], task_name: str) -> list[FeatureSpec]:
    """The specs owned by one task."""
    return [s for s in specs if s.task_name == task_name]
