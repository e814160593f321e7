"""Running a model on independent slices of its batch inside one step.

A batch cut into slices along axis 0, each sent through the same layers, gives a graph
whose slices share no ops until their results are joined. TensorFlow's executor can
then run one slice's ops while another's wait for a core, instead of one chain of
ops each ending at a barrier; on a 2-core CPU that made an ELECTRA-Small fine-tuning
step 2-9% and an inference batch 8-15% faster (util/backend.py, ELECTRA_BATCH_SHARDS;
bench/RESULTS.md). The maths is the per-example maths of the whole batch; only the
order of float additions in batch reductions (and, in training, the dropout draws)
differ.
"""

from typing import Callable, Sequence

import tensorflow as tf


def slice_sizes(batch_size: int | None, shards: int) -> list[int] | None:
    """Rows per slice, the first ones one larger when `shards` does not divide the batch;
    None (do not slice) for one shard, an unknown batch size or fewer rows than shards."""
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}.")
    if shards == 1 or batch_size is None or batch_size < shards:
        return None
    base, extra = divmod(batch_size, shards)
    return [base + (1 if i < extra else 0) for i in range(shards)]


def split_batch(features, sizes: Sequence[int]) -> list:
    """Nested structure of [B, ...] tensors -> one structure per slice ([size_i, ...])."""
    slices, start = [], 0
    for size in sizes:
        begin = start
        slices.append(tf.nest.map_structure(lambda t, b=begin, n=size: t[b:b + n], features))
        start += size
    return slices


def concat_batch(parts: Sequence):
    """Structures of [size_i, ...] tensors (the same nesting) -> one of [B, ...]."""
    return tf.nest.map_structure(lambda *ts: tf.concat(ts, axis=0), *parts)


def map_slices(fn: Callable, features, shards: int):
    """[fn(slice) for each slice of `features`], or [fn(features)] when not sliced (the
    batch size is input_ids' static one; unknown at trace time: not sliced)."""
    sizes = slice_sizes(tf.TensorShape(features["input_ids"].shape)[0], shards)
    if sizes is None:
        return [fn(features)]
    return [fn(part) for part in split_batch(features, sizes)]
