"""Times one ELECTRA pre-training step on this machine, with a breakdown of where it goes.

Default: ELECTRA-Small as configured by default (generator 0.25, seq 128, E=128, H=256,
12 layers) at batch 32, every combination of float32/bfloat16 and jit_compile off/on.
For each, prints the median (and min) seconds per step after warmup of the full train step
(util/training.py: forward, backward, all-reduce, clip, AdamW) and of its parts: masking,
generator-output sampling, forward only, forward + backward. All settings are timed
round-robin (one step of each in turn) so that load from other processes hits them
alike. HuggingFace PyTorch's figures on the same CPU, in the same run:
bench/bench_speed.py --compare-hf.

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
import util.cpu_setup  # noqa: E402,F401  pylint: disable=wrong-import-position,unused-import

import numpy as np  # pylint: disable=wrong-import-position
import tensorflow as tf  # pylint: disable=wrong-import-position

import configure_pretraining  # pylint: disable=wrong-import-position
from model import optimization  # pylint: disable=wrong-import-position
from pretrain import pretrain_helpers, pretrain_model  # pylint: disable=wrong-import-position
from util import training  # pylint: disable=wrong-import-position

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


def _run(fn):
    """Calls fn and waits for its result (numpy conversion forces the computation)."""
    return tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, fn())


def time_round_robin(settings, steps, warmup):
    """Times every part of every setting once per round, for `steps` rounds.

    Interleaving keeps the comparison fair when other processes load the CPU.

    Args:
      settings: {setting name: {part name: fn}}.
    Returns:
      {setting: {part: (median seconds, min seconds)}}.
    """
    for parts in settings.values():
        for fn in parts.values():
            for _ in range(warmup):
                _run(fn)
    times = {s: {p: [] for p in parts} for s, parts in settings.items()}
    for _ in range(steps):
        for name, parts in settings.items():
            for part, fn in parts.items():
                start = time.perf_counter()
                _run(fn)
                times[name][part].append(time.perf_counter() - start)
    return {s: {p: (statistics.median(t), min(t)) for p, t in parts.items()}
            for s, parts in times.items()}


def build_parts(config, batch_size, precision, jit):
    """{part name: fn} for one precision / jit setting; "train_step" is the full step."""
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
    return parts


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
    settings = {(precision, jit): build_parts(config, args.batch, precision, jit == "on")
                for precision in args.precisions.split(",") for jit in args.jit.split(",")}
    results = time_round_robin(settings, args.steps, args.warmup)
    for (precision, jit), res in results.items():
        median, fastest = res["train_step"]
        parts = ", ".join(f"{k} {v[0]:.3f}" for k, v in res.items() if k != "train_step")
        print(f"{precision:9s} jit={jit:3s}: {median:.3f} s/step median, {fastest:.3f} min; "
              f"median parts [s]: {parts}", flush=True)


if __name__ == "__main__":
    main()
