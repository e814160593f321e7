"""Exports an ELECTRA checkpoint as a HuggingFace transformers model directory.

The library behind export_huggingface.py. The source is a pre-training model dir (its
pretrain_config.json gives the sizes), a fine-tuned model dir (finetuning_config.json;
only the encoder is exported), a checkpoint prefix in either, or a released checkpoint
(no config file: sizes from model_size + hparams, as run_pretraining). The output dir
holds what transformers' from_pretrained reads: config.json, model.safetensors (written
with safetensors' numpy API, so exporting needs no torch), vocab.txt,
tokenizer_config.json and special_tokens_map.json. The name and layout map is
model/hf_mapping.py; this module resolves the source, checks it and writes the files.
"""

import dataclasses
import json
import os
import re
import shutil

import numpy as np
import tensorflow as tf
from safetensors.numpy import save_file

import configure_pretraining
from model import hf_mapping, modeling, tokenization
from pretrain import pretrain_runner
from util import config_utils, io_utils
from util.cli import UserError
from util.logging_utils import log

WEIGHTS_FILE = "model.safetensors"
# The file finetune_runner.MODEL_DIR_MARKER names (not imported: finetune/ sits beside
# pretrain/ in the layering; a test checks the two agree).
FINETUNE_CONFIG_FILE = "finetuning_config.json"
# Saved-config fields that define the network; --model-size / --hparams win over them.
_PRETRAIN_FIELDS = ("model_size", "model_hparam_overrides", "embedding_size", "vocab_size",
                    "do_lower_case", "electra_objective", "electric_objective",
                    "uniform_generator", "two_tower_generator", "untied_generator_embeddings",
                    "untied_generator", "generator_layers", "generator_hidden_size",
                    "vocab_file")
_FINETUNE_FIELDS = ("model_size", "model_hparam_overrides", "embedding_size", "vocab_size",
                    "do_lower_case", "vocab_file")
SPECIAL_TOKENS = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
                  "cls_token": "[CLS]", "mask_token": "[MASK]"}
_SIZE_HINT = ("set model_size, model_hparam_overrides, embedding_size, vocab_size or the "
              "generator_hidden_size / generator_layers hparams to the trained model's")


@dataclasses.dataclass(frozen=True)
class Source:
    """The checkpoint to export and what describes it."""

    prefix: str  # checkpoint prefix, e.g. <model_dir>/model.ckpt-1000
    model_dir: str  # directory holding it
    kind: str  # "pretrain", "finetune" or "released" (no config file)
    saved: dict  # network fields of the saved config ({} when there is none)


@dataclasses.dataclass(frozen=True)
class ExportResult:
    output_dir: str
    architecture: str  # e.g. "ElectraForPreTraining"
    checkpoint: str  # prefix that was read
    num_params: int  # scalars written (the tied generator output matrix not counted)


def find_source(checkpoint):
    """Source for a model dir or checkpoint prefix (a trailing ".index" is accepted)."""
    path = checkpoint[:-len(".index")] if checkpoint.endswith(".index") else checkpoint
    if os.path.isdir(path):
        prefix = pretrain_runner.find_checkpoint(path)
        if prefix is None:
            raise UserError(f"No checkpoint in directory {path} (no 'checkpoint' state file "
                            "and no *.index file); pass a model dir or a checkpoint prefix "
                            "such as <model_dir>/model.ckpt-1000.")
        model_dir = path
    elif os.path.exists(path + ".index"):
        prefix, model_dir = path, os.path.dirname(os.path.abspath(path))
    else:
        raise UserError(f"Checkpoint {checkpoint} not found: it is neither a directory nor a "
                        f"checkpoint prefix (no {path}.index).")
    for kind, name, fields in (("pretrain", pretrain_runner.CONFIG_FILE, _PRETRAIN_FIELDS),
                               ("finetune", FINETUNE_CONFIG_FILE, _FINETUNE_FIELDS)):
        saved = config_utils.load_saved_config(os.path.join(model_dir, name))
        if saved is not None:
            return Source(prefix, model_dir, kind, {k: saved[k] for k in fields if k in saved})
    names = [name for name, _ in tf.train.list_variables(prefix)]
    # A fine-tuned checkpoint copied without its config still has its task heads.
    kind = "finetune" if any(n.startswith("task_specific/") for n in names) else "released"
    return Source(prefix, model_dir, kind, {})


def resolve_config(source, model_size=None, hparams=None):
    """PretrainingConfig: saved network fields, then --hparams, then --model-size."""
    user = dict(hparams if isinstance(hparams, dict) else config_utils.load_hparams(hparams))
    if model_size is not None:
        if user.get("model_size", model_size) != model_size:
            raise UserError(f"--model-size {model_size} contradicts model_size "
                            f"{user['model_size']!r} in --hparams; give one of them.")
        user["model_size"] = model_size
    if not source.saved and "model_size" not in user:
        raise UserError(f"{source.model_dir} has no {pretrain_runner.CONFIG_FILE} (a released "
                        "checkpoint?): pass --model-size small/base/large and, for other "
                        "sizes, --hparams as used for pre-training.")
    name = os.path.basename(os.path.abspath(source.model_dir))
    return configure_pretraining.make_config(source.model_dir, name, {**source.saved, **user})


def _discriminator_config(config):
    try:
        return modeling.get_bert_config(config.model_size, config.vocab_size,
                                        config.embedding_size, config.model_hparam_overrides)
    except ValueError as e:
        raise UserError(str(e)) from None


def _generator_network(config, disc):
    """Mirrors PretrainingModel._build_generator (tests/test_export_huggingface.py checks)."""
    if config.uniform_generator:
        raise UserError("This model's generator is uniform (uniform_generator): it has no "
                        "weights to export; export the discriminator instead.")
    if config.two_tower_generator:
        raise UserError("Electric's two-tower cloze generator has no HuggingFace "
                        "counterpart; export the discriminator instead.")
    has_discriminator = config.electra_objective or config.electric_objective
    if not (has_discriminator and config.untied_generator):
        # Plain MLM or a tied generator: the full-size `electra` network is the generator.
        return hf_mapping.Network("generator", disc, "electra", "electra/embeddings")
    try:
        gen = modeling.get_generator_config(disc, config.generator_hidden_size,
                                            config.generator_layers)
    except ValueError as e:
        raise UserError(str(e)) from None
    if config.untied_generator_embeddings:
        gen = dataclasses.replace(gen, embedding_size=gen.hidden_size)
        return hf_mapping.Network("generator", gen, "generator", "generator/embeddings")
    return hf_mapping.Network("generator", gen, "generator", "electra/embeddings")


def select_network(config, which, kind):
    """hf_mapping.Network for `which` of a model with this config and source kind."""
    disc = _discriminator_config(config)
    if kind == "finetune":
        if which != "encoder":
            raise UserError(f"A fine-tuned checkpoint has no {which} (its pre-training heads "
                            "were dropped); export it with --which encoder (the default).")
        return hf_mapping.Network("encoder", disc, "electra", "electra/embeddings")
    if which == "generator":
        network = _generator_network(config, disc)
        if network.config.hidden_act != "gelu":
            raise UserError(f"HuggingFace's generator head always applies gelu but this model "
                            f"uses hidden_act {network.config.hidden_act!r}; it cannot be "
                            "exported as ElectraForMaskedLM.")
        return network
    if which == "discriminator" and not (config.electra_objective or config.electric_objective):
        raise UserError("This model was trained without a discriminator (electra_objective "
                        "false); export it with --which generator or --which encoder.")
    return hf_mapping.Network(which, disc, "electra", "electra/embeddings")


def find_vocab(vocab_file, config, source):
    """--vocab-file, else the config's vocab_file, else <model_dir>/vocab.txt."""
    if vocab_file:
        return vocab_file
    candidates = [config.vocab_file, os.path.join(source.model_dir, "vocab.txt")]
    for path in candidates:
        if os.path.isfile(path):
            return path
    raise UserError(f"No vocab found (tried {' and '.join(candidates)}); pass the vocab.txt "
                    "the model was trained with as --vocab-file.")


def check_vocab(vocab_file, vocab_size):
    """Loads the vocab; its line count must be vocab_size. Returns token -> id."""
    vocab = tokenization.load_vocab(vocab_file)  # VocabError (a UserError) if unusable
    lines = max(vocab.values()) + 1  # the id of the last line, + 1
    if lines != vocab_size:
        raise UserError(f"{vocab_file} has {lines} lines but the model's vocab_size is "
                        f"{vocab_size}; pass the vocab.txt the model was trained with "
                        "(--vocab-file), or set vocab_size in --hparams if it is wrong.")
    return vocab


def check_checkpoint(prefix, params, shapes, network):
    """One error for the first problem: a wrong shape, a wrong layer count, a gap."""
    for p in params:
        if p.tf_name in shapes and tuple(shapes[p.tf_name]) != p.tf_shape:
            raise UserError(f"Checkpoint {prefix}: {p.tf_name} has shape "
                            f"{list(shapes[p.tf_name])} but the model config gives "
                            f"{list(p.tf_shape)}; {_SIZE_HINT} in --hparams.")
    layer_re = re.compile(rf"^{network.scope}/encoder/layer_(\d+)/")
    layers = {m.group(1) for m in map(layer_re.match, shapes) if m}
    if layers and len(layers) != network.config.num_hidden_layers:
        raise UserError(f"Checkpoint {prefix} has {len(layers)} layers under "
                        f"{network.scope}/encoder but the model config gives "
                        f"{network.config.num_hidden_layers}; {_SIZE_HINT} in --hparams.")
    missing = [p.tf_name for p in params if p.tf_name not in shapes]
    if missing:
        raise UserError(f"Checkpoint {prefix} lacks {len(missing)} variable(s) the "
                        f"{network.which} export needs, e.g. {', '.join(missing[:3])}; it "
                        f"is not an ELECTRA {network.which} of this configuration "
                        f"({_SIZE_HINT}).")


def read_params(prefix, network):
    """{HF name: float32 array in HF's layout} for `network`, after checking the file."""
    params = hf_mapping.param_map(network)
    reader = tf.train.load_checkpoint(prefix)
    check_checkpoint(prefix, params, reader.get_variable_to_shape_map(), network)
    tensors = {}
    for p in params:
        value = reader.get_tensor(p.tf_name)
        # safetensors stores raw row-major bytes: a transposed view must be made contiguous.
        tensors[p.hf_name] = np.ascontiguousarray(value.T if p.transpose else value,
                                                  dtype=np.float32)
    return tensors


def tokenizer_files(do_lower_case, max_length):
    """{file name: JSON dict} for ElectraTokenizer / ElectraTokenizerFast."""
    config = {"tokenizer_class": "ElectraTokenizer", "do_lower_case": do_lower_case,
              # None = strip accents exactly when lower-casing: model/tokenization.py's
              # (and the original's) rule; an explicit true would also strip cased text.
              "strip_accents": None, "tokenize_chinese_chars": True,
              "do_basic_tokenize": True, "never_split": None,
              "model_max_length": max_length, "clean_up_tokenization_spaces": True,
              **SPECIAL_TOKENS}
    return {"tokenizer_config.json": config, "special_tokens_map.json": dict(SPECIAL_TOKENS)}


def _inside(path, directory):
    path, directory = os.path.realpath(path), os.path.realpath(directory)
    return os.path.commonpath([path, directory]) == directory


def check_output_dir(output_dir, overwrite, source):
    """Refuses a non-empty output dir unless overwrite, and never replaces the source."""
    if os.path.lexists(output_dir) and not os.path.isdir(output_dir):
        raise UserError(f"Output path {output_dir} exists and is not a directory.")
    if not (os.path.isdir(output_dir) and os.listdir(output_dir)):
        return
    if not overwrite:
        raise UserError(f"Output dir {output_dir} is not empty; choose a new one or pass "
                        "--overwrite to replace it.")
    if _inside(source.prefix, output_dir):
        raise UserError(f"Refusing to overwrite {output_dir}: it holds the checkpoint being "
                        "exported; choose another output dir.")


def write_export(output_dir, tensors, json_files, vocab_file):
    """Writes everything into a hidden temp dir beside output_dir, then swaps it in
    (io_utils.atomic_dir: an old export is replaced whole, never half-written)."""
    with io_utils.atomic_dir(output_dir) as temp:
        # HF's loader rejects safetensors files whose metadata lacks a known "format".
        save_file(tensors, os.path.join(temp, WEIGHTS_FILE), metadata={"format": "pt"})
        shutil.copyfile(vocab_file, os.path.join(temp, "vocab.txt"))
        for name, obj in json_files.items():
            with open(os.path.join(temp, name), "w", encoding="utf-8") as f:
                f.write(json.dumps(obj, indent=2) + "\n")


def export(checkpoint, output_dir, which=None, model_size=None, hparams=None,
           vocab_file=None, overwrite=False):
    """Exports one network of `checkpoint` to `output_dir` (see the module docstring).

    Args:
      checkpoint: model dir or checkpoint prefix.
      output_dir: directory to create (must be empty or absent unless overwrite).
      which: "discriminator" (ElectraForPreTraining), "generator" (ElectraForMaskedLM)
        or "encoder" (ElectraModel); None -> encoder for fine-tuned models, else
        discriminator.
      model_size, hparams: sizes, needed when there is no saved config (see resolve_config).
      vocab_file: vocab.txt to ship; None -> the model's.
      overwrite: replace a non-empty output_dir.
    Returns:
      ExportResult.
    """
    source = find_source(checkpoint)
    check_output_dir(output_dir, overwrite, source)  # before the slow part
    config = resolve_config(source, model_size, hparams)
    which = which or ("encoder" if source.kind == "finetune" else "discriminator")
    network = select_network(config, which, source.kind)
    vocab_path = find_vocab(vocab_file, config, source)
    vocab = check_vocab(vocab_path, network.config.vocab_size)
    tensors = read_params(source.prefix, network)
    json_files = {"config.json": hf_mapping.hf_config(network, vocab["[PAD]"]),
                  **tokenizer_files(config.do_lower_case,
                                    network.config.max_position_embeddings)}
    write_export(output_dir, tensors, json_files, vocab_path)
    architecture = hf_mapping.ARCHITECTURES[which]
    num_params = sum(int(t.size) for t in tensors.values())
    log(f"Wrote {architecture} ({num_params:,} parameters) from {source.prefix} to "
        f"{output_dir}")
    if source.kind == "finetune":
        log("Only the encoder was exported: the task_specific/ heads have no HuggingFace "
            "counterpart (see README 'Export to Hugging Face').")
    return ExportResult(output_dir, architecture, source.prefix, num_params)
