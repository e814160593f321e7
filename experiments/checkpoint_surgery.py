"""Checkpoint surgery: which part of a pre-trained encoder blocks fine-tuning?

Writes a new model dir that run_finetuning.py can start from (its loader requires every
electra/ variable), built from a pre-training checkpoint in one of two ways:
  * keep: the variables whose names match a regex come from the checkpoint, all others
    from a fresh seeded random init of the same network (e.g. only the embeddings);
  * scale_qk: the query and key projections of every encoder layer are multiplied by
    sqrt(f), so every attention score q.k/sqrt(d) is multiplied by f (f = 0: uniform
    attention over the real tokens; f < 1: softer attention).
  * fresh_rows: chosen rows of the discriminator's word-embedding table (e.g. the most
    frequent tokens of a task) come from the fresh init, the other rows stay.
They can be combined (selection, then rows, then scaling).
"""

import collections
import math
import os
import re
import shutil

import numpy as np
import tensorflow as tf

from experiments import diagnose_inputs
from finetune import init_checkpoint
from model import modeling
from util import checkpoint, io_utils
from util.cli import UserError
from util.logging_utils import log

# Query/key kernels and biases: scaling both by sqrt(f) scales q.k by exactly f.
QUERY_KEY_RE = re.compile(r"^electra/encoder/layer_\d+/attention/self/(query|key)/"
                          r"(kernel|bias)$")
WORD_EMBEDDINGS = "electra/embeddings/word_embeddings"
SURGERY_FILE = "surgery.json"  # provenance record written into the new model dir

Selection = collections.namedtuple("Selection", ["values", "kept", "fresh"])
Selection.__doc__ = """Result of select_variables.

values: {name: float32 array} of every model variable.
kept: sorted names taken from the checkpoint.
fresh: sorted names taken from the random init.
"""


def select_variables(source, fresh, keep):
    """Takes the variables whose name matches `keep` from `source`, the rest from `fresh`.

    Args:
      source: {name: array} of the checkpoint (may hold more names).
      fresh: {name: array} of a random init; its names are the output's names.
      keep: regex (re.search on the name), or None to keep every variable.
    Returns:
      Selection.
    Raises:
      UserError: `keep` matches none of the model's variables.
    """
    pattern = re.compile(keep) if keep is not None else None
    values, kept, new = {}, [], []
    for name in sorted(fresh):
        if pattern is None or pattern.search(name):
            values[name] = np.asarray(source[name], np.float32)
            kept.append(name)
        else:
            values[name] = np.asarray(fresh[name], np.float32)
            new.append(name)
    if not kept:
        raise UserError(f"--keep {keep!r} matches no variable; names look like "
                        f"{sorted(fresh)[0]!r} and electra/encoder/layer_0/... "
                        "(re.search, e.g. '^electra/embeddings/').")
    return Selection(values, kept, new)


def scale_query_key(values, factor):
    """Multiplies every encoder query/key kernel and bias by sqrt(factor).

    Args:
      values: {name: array}.
      factor: f >= 0; every attention score is multiplied by f.
    Returns:
      (new {name: float32 array}, sorted names that were scaled).
    """
    if factor < 0:
        raise UserError(f"--scale-qk must be >= 0 (it multiplies attention scores), got "
                        f"{factor}.")
    root = np.float32(math.sqrt(factor))
    scaled = sorted(n for n in values if QUERY_KEY_RE.match(n))
    return {n: (v * root if n in scaled else v).astype(np.float32)
            for n, v in values.items()}, scaled


def refresh_rows(values, fresh, rows):
    """Replaces `rows` of the word-embedding table in `values` by the fresh init's rows.

    Args:
      values: {name: array} (not modified).
      fresh: {name: array} of the random init.
      rows: token ids.
    Returns:
      new {name: float32 array}.
    """
    table = np.array(values[WORD_EMBEDDINGS], np.float32)
    bad = [r for r in rows if not 0 <= r < len(table)]
    if bad:
        raise UserError(f"token ids {bad[:5]} are outside the {len(table)}-row embedding "
                        "table; is --vocab-file the model's vocab?")
    table[list(rows)] = np.asarray(fresh[WORD_EMBEDDINGS], np.float32)[list(rows)]
    return {**values, WORD_EMBEDDINGS: table}


def fresh_variables(bert_config, seed):
    """{name: tf.Variable} of a seeded random init of the discriminator encoder."""
    tf.random.set_seed(seed)
    return modeling.variables_by_name(modeling.BertModel(bert_config, "electra"))


def _check_output_dir(output_dir, overwrite):
    if os.path.isdir(output_dir) and os.listdir(output_dir) and not overwrite:
        raise UserError(f"{output_dir} exists and is not empty (fine-tuning results may "
                        "live there); choose a new dir or pass --overwrite to replace it.")


def _step_of(prefix):
    """The global step in a prefix like model.ckpt-1000 (0 when it has none)."""
    match = re.search(r"-(\d+)$", prefix)
    return int(match.group(1)) if match else 0


def run_surgery(source, output_dir, user_hparams, keep=None, scale_qk=None, seed=0,
                overwrite=False, fresh_rows=None):
    """Writes <output_dir>/model.ckpt-<step>, its `checkpoint` file, pretrain_config.json
    (copied) and surgery.json; the dir is replaced atomically as a whole.

    Args:
      source: checkpoint prefix or model dir of this project's pre-training.
      output_dir: the new model dir (run_finetuning's <data-dir>/models/<name>).
      user_hparams: checked size hparams (diagnose_inputs.check_model_hparams).
      keep: regex of variables from the checkpoint (None: all).
      scale_qk: attention-score factor f (None: unchanged).
      seed: random init seed for the variables not kept.
      overwrite: replace a non-empty output_dir.
      fresh_rows: word-embedding rows (token ids) taken from the random init.
    Returns:
      The surgery record (also written to surgery.json).
    """
    if keep is None and scale_qk is None and not fresh_rows:
        raise UserError("surgery needs --keep REGEX, --fresh-frequent-rows K and/or "
                        "--scale-qk FACTOR.")
    _check_output_dir(output_dir, overwrite)
    spec = diagnose_inputs.resolve_inits([source], user_hparams)[0]
    named = fresh_variables(spec.bert_config, seed)
    # Fine-tuning's own check: one error naming a size mismatch and the hparam to fix.
    init_checkpoint.check_compatible(named, dict(tf.train.list_variables(spec.checkpoint)),
                                     spec.checkpoint, require_heads=False)
    fresh = {n: v.numpy() for n, v in named.items()}
    reader = tf.train.load_checkpoint(spec.checkpoint)
    selection = select_variables({n: reader.get_tensor(n) for n in fresh}, fresh, keep)
    values, scaled = selection.values, []
    if fresh_rows:
        values = refresh_rows(values, fresh, fresh_rows)
    if scale_qk is not None:
        values, scaled = scale_query_key(values, scale_qk)
    record = {"source": spec.checkpoint, "keep": keep, "scale_qk": scale_qk, "seed": seed,
              "fresh_rows": list(fresh_rows or []),
              "kept": selection.kept, "fresh": selection.fresh, "scaled": scaled,
              "model_hparams": spec.hparams}
    config_file = os.path.join(os.path.dirname(spec.checkpoint),
                               init_checkpoint.PRETRAIN_CONFIG_FILE)
    with io_utils.atomic_dir(output_dir) as temp:
        checkpoint.CheckpointManager(temp, max_to_keep=0).save(
            {n: tf.constant(v) for n, v in values.items()}, _step_of(spec.checkpoint))
        if os.path.exists(config_file):
            shutil.copyfile(config_file, os.path.join(temp, init_checkpoint.PRETRAIN_CONFIG_FILE))
        else:
            log(f"note: {config_file} does not exist; fine-tuning {output_dir} needs the "
                f"size hparams {spec.hparams} in its --hparams.")
        io_utils.write_json(record, os.path.join(temp, SURGERY_FILE), indent=2)
    log(f"Wrote {output_dir}: {len(selection.kept)} variables from {spec.checkpoint}, "
        f"{len(selection.fresh)} fresh (seed {seed}), {len(fresh_rows or [])} word-embedding "
        f"rows fresh, {len(scaled)} query/key variables "
        f"scaled by sqrt({scale_qk}).")
    return record
