"""Fine-tuning throughput: train steps/s and inference examples/s of FinetuningModel.

Default: ELECTRA-Small (H=256, 12 layers, E=128, 4 heads) with a CoLA classification
head, batch 32 x 128 full-length random sequences, float32 and bfloat16, jit off. The
train step is the real one (util/training.py: forward, backward, clip at 1.0, AdamW with
layer-wise LR multipliers); inference is FinetuningModel.predict (encoder + one head, no
dropout) in a tf.function. Prints the median over the timed calls after warmup.

  python3 bench/bench_finetuning.py [--batch 32] [--seq 128] [--steps 5]
      [--precisions float32,bfloat16] [--jit off] [--task cola]
      [--hparams '{"model_hparam_overrides": {"num_hidden_layers": 2}}']
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import util.cpu_setup  # noqa: E402,F401  pylint: disable=wrong-import-position,unused-import

import numpy as np  # pylint: disable=wrong-import-position
import tensorflow as tf  # pylint: disable=wrong-import-position

import configure_finetuning  # pylint: disable=wrong-import-position
from finetune import feature_spec  # pylint: disable=wrong-import-position
from finetune import finetune_model  # pylint: disable=wrong-import-position
from finetune import task_builder  # pylint: disable=wrong-import-position
from model import modeling  # pylint: disable=wrong-import-position
from model import optimization  # pylint: disable=wrong-import-position
from util import distribute  # pylint: disable=wrong-import-position
from util import training  # pylint: disable=wrong-import-position


def _batch(task, batch_size, seq_length, vocab_size):
    """Full-length random [CLS] ... [SEP] sequences of one task, nested as the pipeline
    yields them; the task's own features are zeros (valid labels / positions)."""
    rng = np.random.RandomState(0)
    ids = rng.randint(1000, vocab_size, size=(batch_size, seq_length)).astype(np.int32)
    ids[:, 0], ids[:, -1] = 101, 102
    ones = np.ones_like(ids)
    own = {}
    for spec in task.get_feature_specs():
        dtype = np.int32 if spec.is_int_feature else np.float32
        own[spec.name] = tf.zeros((batch_size,) + spec.shape, dtype)
    return {"input_ids": tf.constant(ids), "input_mask": tf.constant(ones),
            "segment_ids": tf.constant(0 * ones),
            "task_id": tf.fill([batch_size], task.task_id), task.name: own}


def _median_seconds(fn, steps, warmup):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def build(config, task, batch, precision, jit):
    """Returns (train_step, predict): each runs one call on `batch` and waits for it."""
    dtype = training.compute_dtype(precision)
    bert_config = modeling.get_bert_config(config.model_size, config.vocab_size,
                                           config.embedding_size, config.model_hparam_overrides)
    # The runner's choice of batch slices, so the bench times what run_finetuning runs.
    model = finetune_model.FinetuningModel(
        bert_config, [task],
        batch_shards=distribute.batch_shards(tf.distribute.get_strategy(), jit))
    named = model.named_variables()
    multipliers = optimization.layerwise_lr_multipliers(
        list(named), bert_config.num_hidden_layers, config.layerwise_lr_decay)
    optimizer = optimization.AdamWeightDecay(named, weight_decay_rate=config.weight_decay_rate,
                                             lr_multipliers=multipliers)
    settings = training.LoopSettings(num_train_steps=10 ** 9, mixed_precision=precision,
                                     jit_compile=jit)
    trainer = training.Trainer(
        tf.distribute.get_strategy(),
        lambda f, s, t: (model(f, is_training=t, compute_dtype=dtype).loss, {}),
        named, optimizer, lambda step: tf.constant(config.learning_rate),
        training.make_global_step(), settings, [])
    iterator = iter(tf.data.Dataset.from_tensors(batch).repeat())
    one = tf.constant(1, tf.int32)
    predict = tf.function(lambda f: model.predict(f, task.name, dtype), jit_compile=jit)
    return (lambda: trainer.train_steps(iterator, one)[0]["loss"].numpy(),
            lambda: predict(batch)["loss"].numpy())


def bench_one(config, task, batch, precision, jit, steps, warmup):
    """Returns (train seconds per step, inference seconds per batch)."""
    train_step, predict = build(config, task, batch, precision, jit)
    return _median_seconds(train_step, steps, warmup), _median_seconds(predict, steps, warmup)


def make_task_and_batch(args):
    """(config, task, batch) for the command-line arguments (see main)."""
    hparams = {"task_names": [args.task], "max_seq_length": args.seq,
               "init_checkpoint": None, **json.loads(args.hparams)}
    config = configure_finetuning.make_config(tempfile.gettempdir(), "bench", hparams)
    # Heads of GLUE tasks need no data files; the tokenizer is not used here.
    task = task_builder.get_task(config, args.task, tokenizer=None)
    batch = _batch(task, args.batch, args.seq, config.vocab_size)
    feature_spec.check_unique(feature_spec.get_shared_feature_specs(args.seq)
                              + task.get_feature_specs())
    return config, task, batch


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5, help="timed calls (median)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--precisions", default="float32,bfloat16")
    parser.add_argument("--jit", default="off", help="comma list of off/on")
    parser.add_argument("--task", default="cola", help="a classification/regression task")
    parser.add_argument("--hparams", default="{}", help="FinetuningConfig overrides (JSON)")
    args = parser.parse_args(argv)
    config, task, batch = make_task_and_batch(args)
    print(f"ELECTRA fine-tuning ({args.task}), batch {args.batch} x {args.seq}, model_size "
          f"{config.model_size}, overrides {config.model_hparam_overrides}, embedding "
          f"{config.embedding_size}, {os.cpu_count()} CPUs, TF {tf.__version__}")
    for precision in args.precisions.split(","):
        for jit in args.jit.split(","):
            train_s, infer_s = bench_one(config, task, batch, precision, jit == "on",
                                         args.steps, args.warmup)
            print(f"{precision:9s} jit={jit:3s}: train {1 / train_s:.2f} steps/s "
                  f"({train_s:.3f} s/step, {args.batch / train_s:.1f} examples/s); "
                  f"inference {args.batch / infer_s:.1f} examples/s "
                  f"({infer_s:.3f} s/batch)", flush=True)


if __name__ == "__main__":
    main()
