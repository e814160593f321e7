"""Loading pre-trained (or fine-tuned) weights into a fine-tuning model (spec f.3, g).

The original's rule: every checkpoint variable whose name equals a model variable name
is loaded. A pre-training checkpoint thus gives the discriminator ("electra/...") and
its generator, pre-training heads, Adam slots and global_step are ignored; the task
heads ("task_specific/<task>/...") start fresh. Evaluating a fine-tuned model
(do_train false) needs the heads too, so they must then be present.

Before anything is assigned the checkpoint is checked against the model, so a size
mismatch gives one error naming the variable, both shapes and the hparams to change
instead of a failure deep inside TensorFlow.
"""

from __future__ import annotations

import glob
import os
import re
from typing import Mapping

import tensorflow as tf

from util import checkpoint
from util import config_utils
from util import logging_utils
from util.cli import UserError

PRETRAIN_CONFIG_FILE = "pretrain_config.json"
# Hparams that describe the pre-trained network; fine-tuning takes them from the
# pretrain_config.json that run_pretraining writes unless the user sets the size.
SIZE_HPARAMS = ("model_size", "model_hparam_overrides", "embedding_size")
MATCHING_HPARAMS = ("vocab_size", "do_lower_case")
_LAYER_RE = re.compile(r"^electra/encoder/layer_(\d+)/")
_SETUP_HINT = ("Put a pre-trained model there (README 'Setup': download and unzip e.g. "
               "electra_small into <data-dir>/models/electra_small), pre-train one with "
               "run_pretraining.py, or set init_checkpoint in --hparams (null to fine-tune "
               "from random weights).")


def pretrained_size_hparams(pretrained_model_dir: str, user_hparams: Mapping) -> dict:
    """Size hparams from `<pretrained_model_dir>/pretrain_config.json`, for make_config.

    Returns the pre-training run's model_size, model_hparam_overrides and embedding_size
    unless the user set any of them, and its vocab_size / do_lower_case unless the user
    set those; {} when the file does not exist (e.g. a released model).
    """
    saved = config_utils.load_saved_config(
        os.path.join(pretrained_model_dir, PRETRAIN_CONFIG_FILE))
    if saved is None:
        return {}
    keys = [] if any(k in user_hparams for k in SIZE_HPARAMS) else list(SIZE_HPARAMS)
    keys += [k for k in MATCHING_HPARAMS if k not in user_hparams]
    return {k: saved[k] for k in keys if k in saved}


def resolve_checkpoint(init_checkpoint: str) -> str:
    """A checkpoint prefix from a directory (its latest checkpoint, or its only
    checkpoint when it has no `checkpoint` state file) or a prefix.

    Raises:
      UserError naming the path and how to get a model when there is no checkpoint.
    """
    if os.path.isdir(init_checkpoint):
        path = tf.train.latest_checkpoint(init_checkpoint)
        if path is not None:
            return path
        # A released model unzipped without a `checkpoint` state file: its one prefix.
        prefixes = sorted(p[:-len(".index")] for p in glob.glob(
            os.path.join(glob.escape(init_checkpoint), "*.index"))
            if not os.path.basename(p).startswith("."))
        if len(prefixes) == 1:
            return prefixes[0]
        if prefixes:
            raise UserError(f"{init_checkpoint!r} holds several checkpoints {prefixes} but "
                            "no 'checkpoint' state file naming the latest; set "
                            "init_checkpoint to one prefix.")
        raise UserError(f"No checkpoint found in {init_checkpoint!r} (no 'checkpoint' "
                        f"state file and no *.index file). {_SETUP_HINT}")
    if tf.io.gfile.exists(init_checkpoint + ".index"):
        return init_checkpoint
    raise UserError(f"No checkpoint at {init_checkpoint!r}: it is neither a directory nor "
                    f"a checkpoint prefix (no {init_checkpoint}.index). {_SETUP_HINT}")


def _size_error(name: str, model_shape, ckpt_shape, ckpt_path: str) -> UserError:
    if name == "electra/embeddings/word_embeddings" and model_shape[1:] == ckpt_shape[1:]:
        fix = (f"set vocab_size to {ckpt_shape[0]} in --hparams (and use that model's "
               "vocab.txt)")
    else:
        fix = ('set model_size (small/base/large) or model_hparam_overrides (e.g. '
               '{"hidden_size": 256, "num_hidden_layers": 12}) and embedding_size in '
               "--hparams to the pre-trained model's sizes")
    return UserError(f"Checkpoint {ckpt_path!r} does not fit the model: variable {name!r} "
                     f"has shape {list(ckpt_shape)} in the checkpoint but "
                     f"{list(model_shape)} in the model; {fix}.")


def check_compatible(named_vars: Mapping[str, tf.Variable], ckpt_shapes: Mapping,
                     ckpt_path: str, require_heads: bool) -> list[str]:
    """Names to load; raises UserError on any mismatch.

    Args:
      named_vars: the model's {name: variable}.
      ckpt_shapes: {name: shape list} of the checkpoint (tf.train.list_variables).
      ckpt_path: for messages.
      require_heads: the task heads must be in the checkpoint (evaluating a fine-tuned
        model); otherwise only the encoder must be.
    Returns:
      Sorted model variable names present in the checkpoint.
    """
    for name in sorted(set(named_vars) & set(ckpt_shapes)):
        model_shape = named_vars[name].shape.as_list()
        if model_shape != list(ckpt_shapes[name]):
            raise _size_error(name, model_shape, ckpt_shapes[name], ckpt_path)
    model_layers = {m.group(1) for m in map(_LAYER_RE.match, named_vars) if m}
    ckpt_layers = {m.group(1) for m in map(_LAYER_RE.match, ckpt_shapes) if m}
    if ckpt_layers and model_layers != ckpt_layers:
        raise UserError(
            f"Checkpoint {ckpt_path!r} has {len(ckpt_layers)} encoder layers but the model "
            f"has {len(model_layers)}; set model_size or model_hparam_overrides "
            '(e.g. {"num_hidden_layers": %d}) in --hparams.' % len(ckpt_layers))
    missing = sorted(n for n in named_vars if n not in ckpt_shapes
                     and (require_heads or not n.startswith("task_specific/")))
    if missing:
        what = ("a model fine-tuned on these task_names (init_checkpoint should be a "
                "finetuning_models/<tasks>_model_<trial> dir)" if require_heads and all(
                    n.startswith("task_specific/") for n in missing)
                else "an ELECTRA checkpoint of this model size")
        raise UserError(f"Checkpoint {ckpt_path!r} lacks {len(missing)} model variable(s), "
                        f"e.g. {missing[0]!r}; it is not {what}.")
    return sorted(set(named_vars) & set(ckpt_shapes))


def init_from_checkpoint(named_vars: Mapping[str, tf.Variable], init_checkpoint: str,
                         require_heads: bool = False) -> list[str]:
    """Assigns every checkpoint variable whose name equals a model variable's.

    Args:
      named_vars: {checkpoint name: variable} of the fine-tuning model.
      init_checkpoint: a directory (its latest checkpoint) or a checkpoint prefix.
      require_heads: see check_compatible.
    Returns:
      The names loaded.
    """
    path = resolve_checkpoint(init_checkpoint)
    with checkpoint.readable(path):  # a corrupt checkpoint: one error naming it
        ckpt_shapes = dict(tf.train.list_variables(path))
    names = check_compatible(named_vars, ckpt_shapes, path, require_heads)
    checkpoint.restore_checkpoint({n: named_vars[n] for n in names}, path)
    fresh = len(named_vars) - len(names)
    logging_utils.log(f"Loaded {len(names)} variables from {path}"
                      + (f"; {fresh} task-head variables start fresh" if fresh else ""))
    return names
