"""Helpers for the fine-tuning model/runner tests: truncated real task files and a tiny
pre-trained checkpoint laid out as <data-dir>/models/<model-name>.

Task files are truncated copies (a few hundred examples) of ../shared/data written into
a temp dir, never into the repo. The "pre-trained" checkpoint holds every variable a
pre-training run saves (discriminator, generator sharing the embeddings, both heads,
Adam slots, global_step) with random values, plus the pretrain_config.json that
run_pretraining writes, so fine-tuning must pick the right names and sizes from it.
"""

import gzip
import itertools
import json
import os
from pathlib import Path

import numpy as np
import tensorflow as tf

import configure_pretraining
from model import modeling
from finetune_fixtures import SHARED_DATA, require_shared_data
from util import checkpoint
from util import config_utils

TINY_OVERRIDES = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                  "intermediate_size": 64}
TINY_EMBEDDING = 16
# Explicit fine-tuning hparams shared by the end-to-end tests: short sequences, small
# batches and few epochs keep every run at a few seconds on one CPU core.
FAST_HPARAMS = {"max_seq_length": 64, "train_batch_size": 16, "eval_batch_size": 32,
                "num_train_epochs": 1.0, "learning_rate": 1e-3, "log_every_steps": 5,
                "iterations_per_loop": 5}


def _head_lines(src, dst, n):
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(src, encoding="utf-8") as f:
        dst.write_text("".join(itertools.islice(f, n)), encoding="utf-8")


def _conll_sentences(src, dst, start, n):
    """Copies sentences [start, start + n) of a CoNLL file (blank-line separated)."""
    blocks = Path(src).read_text(encoding="utf-8").strip().split("\n\n")
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text("\n\n".join(blocks[start:start + n]) + "\n\n", encoding="utf-8")


def _squad_slice(src, dst, first_paragraph, n_paragraphs):
    """A SQuAD JSON with paragraphs [first, first + n) of the first article."""
    data = json.loads(Path(src).read_text(encoding="utf-8"))
    article = dict(data["data"][0])
    article["paragraphs"] = article["paragraphs"][first_paragraph:first_paragraph
                                                  + n_paragraphs]
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(json.dumps({"version": data.get("version", ""), "data": [article]}),
                   encoding="utf-8")


def _mrqa_slice(dst, first, n):
    """Header line + contexts [first, first + n) of the gunzipped MRQA SQuAD dev file."""
    with gzip.open(SHARED_DATA / "mrqa" / "dev" / "SQuAD.jsonl.gz", "rt",
                   encoding="utf-8") as f:
        lines = list(itertools.islice(f, first + n + 1))
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(lines[0] + "".join(lines[1 + first:1 + first + n]), encoding="utf-8")


def write_task_files(data_dir, task):
    """Writes truncated real files of `task` under <data_dir>/finetuning_data/<task>/."""
    require_shared_data()
    out = Path(data_dir) / "finetuning_data" / task
    glue = SHARED_DATA / "glue"
    if task == "cola":  # no header in train/dev; test has one
        _head_lines(glue / "CoLA" / "train.tsv", out / "train.tsv", 320)
        _head_lines(glue / "CoLA" / "dev.tsv", out / "dev.tsv", 100)
        _head_lines(glue / "CoLA" / "test.tsv", out / "test.tsv", 41)
    elif task == "sts":
        _head_lines(glue / "STS-B" / "train.tsv", out / "train.tsv", 161)
        _head_lines(glue / "STS-B" / "dev.tsv", out / "dev.tsv", 81)
        _head_lines(glue / "STS-B" / "test.tsv", out / "test.tsv", 41)
    elif task == "chunk":  # CoNLL-2000 test.txt is ELECTRA's dev.txt
        _conll_sentences(SHARED_DATA / "chunk" / "train.txt", out / "train.txt", 0, 160)
        _conll_sentences(SHARED_DATA / "chunk" / "test.txt", out / "dev.txt", 0, 48)
        _conll_sentences(SHARED_DATA / "chunk" / "test.txt", out / "test.txt", 48, 24)
    elif task in ("squadv1", "squad"):
        name = "dev-v1.1" if task == "squadv1" else "dev-v2.0"
        src = SHARED_DATA / "squad" / f"{name}.reconstructed.json"
        _squad_slice(src, out / "train.json", 0, 8)
        _squad_slice(src, out / "dev.json", 8, 4)
        _squad_slice(src, out / "test.json", 12, 2)
    elif task == "newsqa":  # MRQA format, from the SQuAD part of the MRQA dev set
        _mrqa_slice(out / "train.jsonl", 0, 8)
        _mrqa_slice(out / "dev.jsonl", 8, 4)
    else:
        raise ValueError(f"no test files for task {task!r}")
    return out


def make_data_dir(root, tasks):
    """<root>/vocab.txt (symlink) and truncated task files; returns root as str."""
    require_shared_data()
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if not (root / "vocab.txt").exists():
        os.symlink(SHARED_DATA / "vocab" / "vocab.txt", root / "vocab.txt")
    for task in tasks:
        write_task_files(root, task)
    return str(root)


def tiny_bert_config():
    return modeling.get_bert_config("small", 30522, TINY_EMBEDDING, TINY_OVERRIDES)


def pretraining_variables(config, seed=0, generator_hidden=16):
    """{name: variable} shaped like a pre-training checkpoint of `config`."""
    tf.random.set_seed(seed)
    disc = modeling.BertModel(config, scope="electra")
    gen_config = modeling.BertConfig(
        vocab_size=config.vocab_size, hidden_size=generator_hidden,
        num_hidden_layers=config.num_hidden_layers, num_attention_heads=1,
        intermediate_size=4 * generator_hidden, embedding_size=config.embedding_size)
    gen = modeling.BertModel(gen_config, scope="generator", embeddings=disc.embeddings)
    named = modeling.variables_by_name(disc, gen)
    h, e, v = config.hidden_size, config.embedding_size, config.vocab_size
    extra_shapes = {
        "discriminator_predictions/dense/kernel": [h, h],
        "discriminator_predictions/dense/bias": [h],
        "discriminator_predictions/dense_1/kernel": [h, 1],
        "discriminator_predictions/dense_1/bias": [1],
        "generator_predictions/dense/kernel": [generator_hidden, e],
        "generator_predictions/dense/bias": [e],
        "generator_predictions/LayerNorm/gamma": [e],
        "generator_predictions/LayerNorm/beta": [e],
        "generator_predictions/output_bias": [v],
    }
    for name, shape in extra_shapes.items():
        named[name] = tf.Variable(tf.random.normal(shape, stddev=0.02))
    for name in list(named):
        named[f"{name}/adam_m"] = tf.Variable(tf.random.normal(named[name].shape))
        named[f"{name}/adam_v"] = tf.Variable(tf.random.uniform(named[name].shape))
    named["global_step"] = tf.Variable(np.int64(20))
    return named


def make_pretrained_model(data_dir, model_name="tiny", seed=0):
    """Writes <data_dir>/models/<model_name>/{model.ckpt-20.*, checkpoint,
    pretrain_config.json}; returns (model dir, {name: numpy value})."""
    model_dir = os.path.join(data_dir, "models", model_name)
    named = pretraining_variables(tiny_bert_config(), seed)
    checkpoint.CheckpointManager(model_dir, max_to_keep=1).save(named, 20)
    pretrain_config = configure_pretraining.make_config(
        data_dir, model_name, {"model_hparam_overrides": TINY_OVERRIDES,
                               "embedding_size": TINY_EMBEDDING, "debug": False})
    config_utils.save_config(pretrain_config, os.path.join(model_dir, "pretrain_config.json"))
    return model_dir, {n: v.numpy() for n, v in named.items()}
