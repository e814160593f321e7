"""This project's side of bench/bench_speed.py: each workload as a step function, its
FLOPs, and the HuggingFace configs of the same networks.

The workloads are the other bench scripts' (bench_pretraining_step.build_parts,
bench_finetuning.build), so all of them time the same code. FLOPs follow
experiments/study_flops.py: a multiply-add is 2 FLOPs, a training step 3x the forward,
heads and element-wise work not counted; the same count is used for HuggingFace's run
of the same configuration, so GFLOP/s compare like with like. It is the full encoder's
count: our sentence-level fine-tuning and inference skip the last layer's positions
other than [CLS] (modeling.BertModel pooled_only, ~1/13 of the FLOPs at ELECTRA-Small's
sizes), so there the figure is the plain method's work per second and its share of the
matmul peak can pass 100% on small models.
"""

import argparse
import json

import tensorflow as tf

import bench_finetuning
import bench_pretraining_step
import configure_pretraining
from experiments import study_flops
from model import hf_mapping, modeling
from util import training

MATMUL_SIZE = 4096  # the issue's matmul; large enough to run at the kernels' peak


def pretraining_config(args):
    """The PretrainingConfig of the bench: ELECTRA-Small by default, batch x seq."""
    hparams = {**json.loads(args.hparams), "train_batch_size": args.batch,
               "max_seq_length": args.seq}
    return configure_pretraining.make_config("/tmp", "bench", hparams)


def _hf_config(which, bert):
    return hf_mapping.hf_config(hf_mapping.Network(which, bert, "", ""), pad_token_id=0)


def _finetuning_setup(args):
    """(config, task, batch, discriminator BertConfig) of the fine-tuning workloads."""
    namespace = argparse.Namespace(task="cola", seq=args.seq, batch=args.batch,
                                   hparams=args.hparams)
    config, task, batch = bench_finetuning.make_task_and_batch(namespace)
    bert = modeling.get_bert_config(config.model_size, config.vocab_size,
                                    config.embedding_size, config.model_hparam_overrides)
    return config, task, batch, bert


def hf_configs(args):
    """HF ElectraConfig dicts of the workload's networks: "discriminator" (pre-training's,
    or the fine-tuned encoder) and, for pre-training, "generator"."""
    if args.workload != "pretrain":
        return {"discriminator": _hf_config("discriminator", _finetuning_setup(args)[3])}
    config = pretraining_config(args)
    disc = modeling.get_bert_config(config.model_size, config.vocab_size,
                                    config.embedding_size, config.model_hparam_overrides)
    return {"discriminator": _hf_config("discriminator", disc),
            "generator": _hf_config("generator", study_flops.generator_config(config, disc))}


def _matmul(precision):
    dtype = training.compute_dtype(precision)
    a = tf.cast(tf.random.normal([MATMUL_SIZE, MATMUL_SIZE]), dtype)
    b = tf.cast(tf.random.normal([MATMUL_SIZE, MATMUL_SIZE]), dtype)
    # One element of the product forces the whole matmul without copying 64 MB out.
    product = tf.function(lambda: tf.matmul(a, b)[0, 0])
    return lambda: product().numpy(), 2 * MATMUL_SIZE ** 3


def _pretraining(args, precision):
    config = pretraining_config(args)
    parts = bench_pretraining_step.build_parts(config, args.batch, precision, jit=False)
    return parts["train_step"], study_flops.train_flops_per_step(config)


def _finetuning(args, precision, workload):
    config, task, batch, bert = _finetuning_setup(args)
    train_step, predict = bench_finetuning.build(config, task, batch, precision, jit=False)
    forward = (study_flops.FORWARD_FLOPS_PER_MAC * args.batch * args.seq
               * study_flops.encoder_macs_per_token(bert, args.seq))
    if workload == "finetune":
        return train_step, study_flops.TRAIN_FORWARD_MULTIPLIER * forward
    return predict, forward


def build(workload, precision, args):
    """Returns (step: fn running one step and waiting for it, FLOPs per step)."""
    if workload == "matmul":
        return _matmul(precision)
    if workload == "pretrain":
        return _pretraining(args, precision)
    return _finetuning(args, precision, workload)


def describe(args):
    """What the report shows about this side, and what the HuggingFace side needs."""
    from tensorflow.python.util import _pywrap_util_port  # pylint: disable=import-outside-toplevel
    info = {"version": tf.__version__, "onednn": bool(_pywrap_util_port.IsMklEnabled())}
    if args.workload != "matmul":
        info["hf_configs"] = hf_configs(args)
    if args.workload == "pretrain":
        info["max_predictions_per_seq"] = pretraining_config(args).max_predictions_per_seq
    return info
