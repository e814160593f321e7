"""Inputs of experiments/diagnose_checkpoint.py: model sizes, encoders and task examples.

Sizes and checkpoints are resolved exactly as run_finetuning.py resolves them (the
pre-training run's pretrain_config.json, overridden by --hparams; the same loader),
so the diagnosis looks at the network that fine-tuning starts from.
"""

import collections
import os

import numpy as np
import tensorflow as tf

import configure_finetuning
from experiments import study_data
from finetune import init_checkpoint, task_builder
from finetune.classification import classification_tasks
from model import modeling
from util import config_utils
from util.cli import UserError

RANDOM = "random"  # the init name meaning "no checkpoint: a fresh seeded random init"
# The only --hparams keys: the network's size and what must match its vocabulary.
MODEL_HPARAMS = init_checkpoint.SIZE_HPARAMS + init_checkpoint.MATCHING_HPARAMS

InitSpec = collections.namedtuple("InitSpec", ["name", "checkpoint", "hparams",
                                               "bert_config"])
InitSpec.__doc__ = """One init to diagnose.

name: as given on the command line ("random", a prefix or a model dir).
checkpoint: resolved checkpoint prefix, or None for random init.
hparams: the size hparams used (pretrain_config.json values overridden by --hparams).
bert_config: modeling.BertConfig built from them.
"""

TaskSplit = collections.namedtuple("TaskSplit", ["token_ids", "labels", "bad_rows"])
TaskSplit.__doc__ = """Examples of one split.

token_ids: list of B lists of word-piece ids (no [CLS]/[SEP], already truncated).
labels: [B] int array (index into the task's label list).
bad_rows: number of sampled rows skipped (wrong column count or unknown label).
"""


def check_model_hparams(hparams):
    """--hparams (dict, JSON string or .json path) checked: only MODEL_HPARAMS, typed as
    in FinetuningConfig. Raises config_utils.ConfigError naming a bad key."""
    user = hparams if isinstance(hparams, dict) else config_utils.load_hparams(hparams)
    for key in user:
        if key not in MODEL_HPARAMS:
            raise config_utils.ConfigError(
                f"unknown hparam {key!r} for diagnose_checkpoint --hparams; it sets only "
                f"the model's size: {', '.join(MODEL_HPARAMS)}.")
    return config_utils.check_overrides(configure_finetuning.FinetuningConfig, user)


def bert_config_for(hparams):
    """BertConfig of size hparams, with fine-tuning's defaults (small -> embedding 128)."""
    size = hparams.get("model_size", "small")
    embedding = hparams.get("embedding_size", 128 if size == "small" else None)
    try:
        return modeling.get_bert_config(size, hparams.get("vocab_size", 30522), embedding,
                                        hparams.get("model_hparam_overrides"))
    except ValueError as e:  # unknown model_size or override key
        raise UserError(str(e)) from None


def model_hparams_for(model_dir, user):
    """Size hparams: the model dir's pretrain_config.json (if any) under the user's, with
    run_finetuning's precedence (setting any size hparam replaces all saved ones)."""
    saved = init_checkpoint.pretrained_size_hparams(model_dir, user) if model_dir else {}
    return {**saved, **user}


def resolve_inits(names, user):
    """InitSpecs for the init names, in order.

    A checkpoint's sizes come from the pretrain_config.json beside it; "random" takes
    those of the first checkpoint listed, so it is the same network with fresh weights.

    Raises:
      UserError: a path that is not a checkpoint (prefix or model dir).
    """
    prefixes = {n: init_checkpoint.resolve_checkpoint(n) for n in names if n != RANDOM}
    first_dir = next((os.path.dirname(p) for p in prefixes.values()), None)
    specs = []
    for name in names:
        prefix = prefixes.get(name)
        hparams = model_hparams_for(os.path.dirname(prefix) if prefix else first_dir, user)
        specs.append(InitSpec(name, prefix, hparams, bert_config_for(hparams)))
    return specs


def build_encoder(spec, seed):
    """The discriminator encoder ("electra/..."): seeded random init, then the checkpoint.

    Loaded with fine-tuning's loader, which requires every electra/ variable."""
    tf.random.set_seed(seed)
    model = modeling.BertModel(spec.bert_config, "electra")
    if spec.checkpoint:
        init_checkpoint.init_from_checkpoint(modeling.variables_by_name(model),
                                             spec.checkpoint)
    return model


def default_vocab_file(specs, fallback):
    """The first checkpoint's pre-training vocab_file if it exists, else `fallback`."""
    for spec in specs:
        if spec.checkpoint:
            saved = config_utils.load_saved_config(os.path.join(
                os.path.dirname(spec.checkpoint), init_checkpoint.PRETRAIN_CONFIG_FILE))
            if saved and saved.get("vocab_file") and os.path.isfile(saved["vocab_file"]):
                return saved["vocab_file"]
    return fallback


def check_vocab_fits(specs, tokenizer):
    """Raises UserError if a model's embedding table has fewer rows than the vocab."""
    for spec in specs:
        if spec.bert_config.vocab_size < len(tokenizer.vocab):
            raise UserError(
                f"{spec.name}: vocab_size {spec.bert_config.vocab_size} is smaller than "
                f"the vocab file's {len(tokenizer.vocab)} tokens; pass that model's "
                "--vocab-file or set vocab_size in --hparams.")


def task_name_for(task_dir, task=None):
    """The task registry name: `task`, or from the dir name (SST-2 -> sst, CoLA -> cola)."""
    if task:
        return task
    base = os.path.basename(os.path.normpath(task_dir))
    by_dir = {glue_dir.lower(): name for name, glue_dir in study_data.GLUE_DIRS.items()}
    return by_dir.get(base.lower(), base.lower())


def single_sentence_task(task_name):
    """The registered task; raises UserError unless it classifies single sentences."""
    task = task_builder.get_task(None, task_name, None)
    if (not isinstance(task, classification_tasks.ClassificationTask)
            or task.layout("train").text_b is not None):
        raise UserError(f"task {task_name!r} is not a single-sentence classification task; "
                        "diagnose_checkpoint probes those only (e.g. sst, cola). Pass "
                        "--task or a --task-dir named after one.")
    return task


def read_split(task, path, keep, seed_key, tokenizer, max_tokens):
    """Reads, samples and tokenises one split of a single-sentence task.

    Rows are sampled as the learning study samples them (study_data.sample_indices with
    the same seed key), so `keep` = 2000 with seed 0 gives the study's training set.

    Args:
      task: a ClassificationTask (its layout and label list are used).
      path: the split's .tsv file.
      keep: rows to keep, or None for all.
      seed_key: sample seed key, "<seed>:<task>:<split>".
      tokenizer: tokenization.FullTokenizer.
      max_tokens: word pieces kept per sentence (max_seq_length - 2).
    Returns:
      TaskSplit.
    """
    layout = task.layout(os.path.basename(path).split(".")[0])
    rows = [fields for _, fields in classification_tasks.read_tsv(path)]
    expected = layout.n_columns or (len(rows[0]) if layout.header and rows else None)
    rows = rows[1:] if layout.header else rows
    token_ids, labels, bad = [], [], 0
    for i in study_data.sample_indices(len(rows), keep, seed_key):
        fields = rows[i]
        if (expected is not None and len(fields) != expected) or (
                fields[layout.label] not in task.label_list):
            bad += 1
            continue
        token_ids.append(tokenizer.text_to_ids(fields[layout.text_a])[:max_tokens])
        labels.append(task.label_list.index(fields[layout.label]))
    if not labels:
        raise UserError(f"{path}: no usable {task.name} rows (label column {layout.label} "
                        f"must be one of {task.label_list}).")
    return TaskSplit(token_ids, np.array(labels, np.int64), bad)


def encode(token_ids, tokenizer):
    """[CLS] ids [SEP], padded with 0 to the longest example.

    Args:
      token_ids: B lists of word-piece ids.
      tokenizer: tokenization.FullTokenizer (for the [CLS]/[SEP] ids).
    Returns:
      (input_ids, input_mask): [B, S] int32 arrays; segment ids are all 0.
    """
    cls_id, sep_id = tokenizer.convert_tokens_to_ids(["[CLS]", "[SEP]"])
    seq = max(len(ids) for ids in token_ids) + 2
    input_ids = np.zeros((len(token_ids), seq), np.int32)
    input_mask = np.zeros_like(input_ids)
    for i, ids in enumerate(token_ids):
        row = [cls_id] + list(ids) + [sep_id]
        input_ids[i, :len(row)] = row
        input_mask[i, :len(row)] = 1
    return input_ids, input_mask

