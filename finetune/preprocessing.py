"""Featurise task examples into cached TFRecords and build the fine-tuning datasets.

Files, under `config.preprocessed_data_dir`: `<tasks>_<split>.tfrecord` (tasks = the
sorted task names joined by "_", as the original) and `<tasks>_<split>.metadata`, a
JSON holding every setting that shapes the records plus the record count. A cache is
reused only when `use_tfrecords_if_existing` is on and its metadata equals what this
run would write, so changing max_seq_length, the vocab, lower-casing, a task's labels
or the batch size rebuilds it instead of failing to parse (original issue #102).
Both files are written atomically (temp name, then rename), metadata last.

Records: training examples are shuffled once (seeded) when written; every file is
padded with dummy examples (task_id = number of tasks, all other features zero) to a
multiple of the batch size (spec e.1). Datasets yield nested dicts of fixed-shape
int32/float32 tensors, see finetune/feature_spec.py.
"""

from __future__ import annotations

import os
import random
from typing import Any, Sequence

import tensorflow as tf

from finetune import feature_spec
from finetune import task as task_lib
from util import io_utils
from util import logging_utils

FORMAT_VERSION = 1
# The original shuffled with Python's unseeded `random`; a fixed seed makes the cached
# order reproducible. It is recorded in the metadata.
SHUFFLE_SEED = 1
READ_SHUFFLE_BUFFER = 100  # the original's reading shuffle buffer


def _files_fingerprint(directory: str) -> list:
    """[name, size, mtime_ns] of each file in a task's raw data directory."""
    if not os.path.isdir(directory):
        return []
    entries = sorted((e for e in os.scandir(directory) if e.is_file()), key=lambda e: e.name)
    return [[e.name, e.stat().st_size, e.stat().st_mtime_ns] for e in entries]


class Preprocessor:
    """Serialises the examples of `tasks` and builds tf.data pipelines over them."""

    def __init__(self, config: Any, tasks: Sequence[task_lib.Task]):
        self._config = config
        self._tasks = list(tasks)
        self._name_to_task = {t.name: t for t in self._tasks}
        self.feature_specs = feature_spec.get_shared_feature_specs(config.max_seq_length)
        for t in self._tasks:
            for spec in t.get_feature_specs():
                if spec.task_name != t.name:
                    raise ValueError(f"Task {t.name!r} returned the spec {spec} owned by "
                                     f"{spec.task_name!r}; build it with task.feature().")
                self.feature_specs.append(spec)
        self._parsing_spec = feature_spec.get_parsing_spec(self.feature_specs)
        self._vocab_sha256 = None

    # -- public API (the original's prepare_train / prepare_predict) -------------------

    def prepare_train(self) -> tuple[tf.data.Dataset, int]:
        """(repeated, shuffled dataset of train_batch_size batches, number of train steps)."""
        return self._serialize_dataset(self._tasks, True, "train")

    def prepare_predict(self, tasks: Sequence[task_lib.Task],
                        split: str) -> tuple[tf.data.Dataset, int]:
        """(one pass over `split` in eval_batch_size batches, number of batches)."""
        return self._serialize_dataset(list(tasks), False, split)

    def paths(self, tasks: Sequence[task_lib.Task], split: str) -> tuple[str, str]:
        """(tfrecord path, metadata path) of a dataset."""
        name = "_".join(sorted(t.name for t in tasks)) + "_" + split
        prefix = os.path.join(self._config.preprocessed_data_dir, name)
        return prefix + ".tfrecord", prefix + ".metadata"

    def cache_settings(self, tasks: Sequence[task_lib.Task], split: str,
                       is_training: bool) -> dict:
        """Everything that determines the records' content (compared for cache reuse)."""
        c = self._config
        if self._vocab_sha256 is None:
            self._vocab_sha256 = io_utils.file_sha256(c.vocab_file)
        return {
            "format_version": FORMAT_VERSION,
            "split": split,
            "is_training": is_training,
            "batch_size": c.train_batch_size if is_training else c.eval_batch_size,
            "max_seq_length": c.max_seq_length,
            "vocab_file": os.path.abspath(c.vocab_file),
            "vocab_sha256": self._vocab_sha256,
            "do_lower_case": c.do_lower_case,
            "double_unordered": c.double_unordered,
            "debug": c.debug,
            "task_names": list(c.task_names),  # fixes each task's task_id
            "tasks": [t.cache_settings() for t in sorted(tasks, key=lambda t: t.name)],
            # Edited or replaced task files must invalidate the cache too.
            "raw_data": [_files_fingerprint(t.raw_data_dir)
                         for t in sorted(tasks, key=lambda t: t.name)],
            "feature_specs": [[s.key, list(s.shape), s.is_int_feature]
                              for s in self.feature_specs],
            "shuffle_seed": SHUFFLE_SEED if is_training else None,
        }

    # -- caching ------------------------------------------------------------------------

    def _cached_count(self, tfrecord_path, metadata_path, settings):
        """n_examples of a valid cache, or None with the reason logged."""
        if not self._config.use_tfrecords_if_existing:
            return None
        if not (os.path.exists(metadata_path) and os.path.exists(tfrecord_path)):
            logging_utils.log("Existing tfrecords not found so creating")
            return None
        try:
            metadata = io_utils.load_json(metadata_path)
        except ValueError:
            logging_utils.log(f"Unreadable cache metadata {metadata_path}; rebuilding")
            return None
        if metadata.get("settings") != settings:
            old = metadata.get("settings") or {}
            changed = sorted(k for k in set(old) | set(settings)
                             if old.get(k) != settings.get(k))
            logging_utils.log(f"Cached tfrecords {tfrecord_path} were made with other "
                              f"settings ({', '.join(changed)}); rebuilding")
            return None
        if metadata.get("tfrecord_bytes") != os.path.getsize(tfrecord_path):
            logging_utils.log(f"Cached tfrecords {tfrecord_path} have an unexpected size "
                              "(truncated or replaced?); rebuilding")
            return None
        return metadata["n_examples"]

    def _serialize_dataset(self, tasks, is_training, split):
        tfrecord_path, metadata_path = self.paths(tasks, split)
        settings = self.cache_settings(tasks, split, is_training)
        batch_size = settings["batch_size"]
        logging_utils.log("Loading dataset", os.path.basename(tfrecord_path)[:-9])
        n_examples = self._cached_count(tfrecord_path, metadata_path, settings)
        if n_examples is None:
            examples = []
            for t in tasks:
                examples += t.get_examples(split)
            if is_training:
                random.Random(SHUFFLE_SEED).shuffle(examples)
            if os.path.exists(metadata_path):
                os.remove(metadata_path)  # never pair old metadata with new records
            n_examples, n_real = self.serialize_examples(examples, is_training,
                                                         tfrecord_path, batch_size)
            io_utils.write_json({"settings": settings, "n_examples": n_examples,
                                 "n_real_examples": n_real,
                                 "tfrecord_bytes": os.path.getsize(tfrecord_path)},
                                metadata_path, indent=1)
        dataset = self.make_dataset(tfrecord_path, is_training, batch_size)
        if is_training:
            steps = int(n_examples // batch_size * self._config.num_train_epochs)
        else:
            steps = n_examples // batch_size
        return dataset, steps

    # -- writing ------------------------------------------------------------------------

    def serialize_examples(self, examples: Sequence[task_lib.Example], is_training: bool,
                           output_file: str, batch_size: int) -> tuple[int, int]:
        """Writes featurised examples + padding; returns (n records, n real records)."""
        n_records = 0
        with io_utils.atomic_path(output_file) as temp:
            with tf.io.TFRecordWriter(temp) as writer:
                for index, example in enumerate(examples):
                    if index % 2000 == 0:
                        logging_utils.log(f"Writing example {index} of {len(examples)}")
                    for tf_example in self._example_to_tf_examples(
                            example, is_training, self._config.log_examples and index < 1):
                        writer.write(tf_example.SerializeToString())
                        n_records += 1
                n_real = n_records
                # Padding so the dataset is a multiple of batch_size; task_id = n_tasks
                # makes these rows contribute zero loss and be skipped in evaluation.
                padding = feature_spec.to_tf_example(
                    self.feature_specs, None, {"task_id": len(self._config.task_names)})
                while n_records % batch_size != 0:
                    writer.write(padding.SerializeToString())
                    n_records += 1
        return n_records, n_real

    def _example_to_tf_examples(self, example, is_training, log):
        task = self._name_to_task[example.task_name]
        features_list = task.featurize(example, is_training, log)
        if isinstance(features_list, dict):
            raise TypeError(f"{type(task).__name__}.featurize must return a list of "
                            "feature dicts, got one dict; wrap it in a list.")
        for features in features_list:
            yield feature_spec.to_tf_example(self.feature_specs, task.name, features)

    # -- reading ------------------------------------------------------------------------

    def make_dataset(self, tfrecord_path: str, is_training: bool,
                     batch_size: int) -> tf.data.Dataset:
        """Batches of nested feature dicts; training repeats and shuffles (buffer 100).

        Every batch has exactly `batch_size` rows (the file is a multiple of it).
        """
        dataset = tf.data.TFRecordDataset(tfrecord_path)
        if is_training:
            dataset = dataset.repeat().shuffle(READ_SHUFFLE_BUFFER)
        dataset = dataset.batch(batch_size, drop_remainder=True)
        specs, parsing_spec = self.feature_specs, self._parsing_spec

        def decode(serialized):  # [B] strings -> nested dict of [B, ...] tensors
            parsed = tf.io.parse_example(serialized, parsing_spec)
            return feature_spec.cast_and_nest(parsed, specs)

        return dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE).prefetch(
            tf.data.AUTOTUNE)
