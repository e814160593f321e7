"""Times one ELECTRA pre-training step on this machine, with a breakdown of where it goes.

Default: ELECTRA-Small as configured by default (generator 0.25, seq 128, E=128, H=256,
12 layers) at batch 32, every combination of float32/bfloat16 and jit_compile off/on.
For each, prints the median seconds per step (after warmup) of the full train step
(util/training.py: forward, backward, all-reduce, clip, AdamW) and of its parts: masking,
generator-output sampling, forward only, forward + backward. Reference numbers for
HuggingFace PyTorch ELECTRA-Small on the same CPU: 2.82 s (fp32), 1.94 s (bf16).

  python3 bench/bench_pretraining_step.py [--batch 32] [--steps 5] [--precisions float32]
      [--jit off,on] [--hparams '{"model_hparam_overrides": {"num_hidden_layers": 2}}']
"""

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # pylint: disable=wrong-import-position
import tensorflow as tf  # pylint: disable=wrong-import-position

import configure_pretraining  # pylint: disable=wrong-import-position
from model import optimization  # pylint: disable=wrong-import-position
from pretrain import pretrain_helpers, pretrain_model  # pylint: disable=wrong-import-position
from util import training  # pylint: disable=wrong-import-position

HF_SECONDS = {"float32": 2.82, "bfloat16": 1.94}
BERT_SPECIAL_IDS = pretrain_helpers.SpecialIds(pad=0, unk=100, cls=101, sep=102, mask=103)


def _batch(config, batch_size):
    """Full-length random sequences: [CLS] tokens [SEP], no padding ([B, S] int32)."""
    rng = np.random.RandomState(0)
    seq = config.max_seq_length
    ids = rng.randint(1000, config.vocab_size, size=(batch_size, seq)).astype(np.int32)
    ids[:, 0], ids[:, -1] = BERT_SPECIAL_IDS.cls, BERT_SPECIAL_IDS.sep
    ones = np.ones_like(ids)
    return {"input_ids": tf.constant(ids), "input_mask": tf.constant(ones),
            "segment_ids": tf.constant(0 * ones)}


def _median_seconds(fn, steps, warmup):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_one(config, batch_size, precision, jit, steps, warmup):
    """Returns {part: median seconds} for one precision / jit setting."""
    dtype = training.compute_dtype(precision)
    model = pretrain_model.PretrainingModel(config, BERT_SPECIAL_IDS)
    features = _batch(config, batch_size)
    seed = tf.constant([0, 1], tf.int64)
    trainable = model.named_variables()
    optimizer = optimization.AdamWeightDecay(trainable, weight_decay_rate=0.01)
    settings = training.LoopSettings(num_train_steps=10 ** 9, mixed_precision=precision,
                                     jit_compile=jit)
    trainer = training.Trainer(tf.distribute.get_strategy(), lambda f, s, t: (
        model(f, s, t, dtype).loss, {}), trainable, optimizer,
        lambda step: tf.constant(1e-4), training.make_global_step(), settings, [])
    iterator = iter(tf.data.Dataset.from_tensors(features).repeat())
    one = tf.constant(1, tf.int32)
    n = model.max_predictions
    logits = tf.random.normal([batch_size, n, config.vocab_size])
    keys = pretrain_helpers.example_keys(features["input_ids"])
    parts = {
        "mask": tf.function(lambda: pretrain_helpers.mask(
            features["input_ids"], features["input_mask"], BERT_SPECIAL_IDS,
            config.mask_prob, n, seed).input_ids, jit_compile=jit),
        "sample": tf.function(lambda: pretrain_helpers.sample_from_softmax(
            logits, seed, keys=keys), jit_compile=jit),
        "forward": tf.function(lambda: model(features, seed, True, dtype).loss,
                               jit_compile=jit),
        # Returning a reduction of every gradient keeps tf.function from pruning them.
        "forward+backward": tf.function(lambda: tf.add_n([
            tf.reduce_sum(g) for g in trainer._grads_fn(  # pylint: disable=protected-access
                features, seed, tf.constant(1.0))[2] if g is not None])),
        "train_step": lambda: trainer.train_steps(iterator, one)[0]["loss"].numpy(),
    }
    results = {}
    for name, fn in parts.items():
        results[name] = _median_seconds(lambda fn=fn: tf.nest.map_structure(
            lambda t: t.numpy() if hasattr(t, "numpy") else t, fn()), steps, warmup)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5, help="timed steps (median)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--precisions", default="float32,bfloat16")
    parser.add_argument("--jit", default="off,on")
    parser.add_argument("--hparams", default="{}", help="PretrainingConfig overrides (JSON)")
    args = parser.parse_args(argv)
    config = configure_pretraining.make_config("/tmp", "bench", json.loads(args.hparams))
    print(f"ELECTRA pre-training step, batch {args.batch} x {config.max_seq_length}, "
          f"model_size {config.model_size}, generator_hidden_size "
          f"{config.generator_hidden_size}, {os.cpu_count()} CPUs, TF {tf.__version__}")
    for precision in args.precisions.split(","):
        for jit in args.jit.split(","):
            res = bench_one(config, args.batch, precision, jit == "on", args.steps,
                            args.warmup)
            parts = ", ".join(f"{k} {v:.3f}" for k, v in res.items() if k != "train_step")
            ref = HF_SECONDS.get(precision)
            vs = f" (HF PyTorch {ref:.2f} s: x{ref / res['train_step']:.2f})" if ref else ""
            print(f"{precision:9s} jit={jit:3s}: {res['train_step']:.3f} s/step{vs}; "
                  f"parts [s]: {parts}", flush=True)


if __name__ == "__main__":
    main()
