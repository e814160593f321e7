"""Token scoring with a pre-training checkpoint (the library behind score_tokens.py).

For a text, the discriminator gives each wordpiece the probability that it was replaced;
for every literal "[MASK]" in the text, the generator gives its top-k fill-ins. Uses the
same PretrainingModel (and checkpoint names) as pre-training, so our checkpoints and
released-style ones both load. Shape legend: S = sequence length, V = vocabulary size.
"""

import dataclasses
import os

import numpy as np
import tensorflow as tf

import configure_pretraining
from model import tokenization
from pretrain import pretrain_data, pretrain_model, pretrain_runner
from util import checkpoint, config_utils
from util.cli import UserError

MASK_TOKEN = "[MASK]"
# Fields of a saved pretrain_config.json that define the network; they become defaults
# under the user's --hparams so a model trained with custom sizes loads as trained.
_MODEL_FIELDS = ("model_size", "model_hparam_overrides", "embedding_size", "vocab_size",
                 "do_lower_case", "electra_objective", "electric_objective",
                 "uniform_generator", "two_tower_generator", "untied_generator_embeddings",
                 "untied_generator", "generator_layers", "generator_hidden_size",
                 "max_seq_length", "mask_prob", "temperature", "vocab_file")


@dataclasses.dataclass(frozen=True)
class TokenScores:
    """Scores of one text: tokens[i] has replaced_probs[i]; fill_ins maps a [MASK]
    position to its top-k [(token, probability)] from the generator."""

    tokens: list
    replaced_probs: list
    fill_ins: dict

    def to_json(self):
        return {"tokens": self.tokens, "replaced_probs": self.replaced_probs,
                "mask_fill_ins": [{"position": p, "top": [[t, pr] for t, pr in top]}
                                  for p, top in sorted(self.fill_ins.items())]}


def make_scoring_config(data_dir, model_name, hparams=None):
    """PretrainingConfig: saved pretrain_config.json model fields, then user hparams."""
    user = hparams if isinstance(hparams, dict) else config_utils.load_hparams(hparams)
    base = configure_pretraining.make_config(data_dir, model_name, user)
    saved = config_utils.load_saved_config(
        os.path.join(base.model_dir, pretrain_runner.CONFIG_FILE)) or {}
    merged = {k: saved[k] for k in _MODEL_FIELDS if k in saved}
    merged.update(user)
    return configure_pretraining.make_config(data_dir, model_name, merged)


class TokenScorer:
    """Loads the model once; `score(text)` -> TokenScores."""

    def __init__(self, config):
        vocab, self.special_ids = pretrain_runner.check_vocab(config)
        del vocab
        self.config = config
        self.tokenizer = tokenization.FullTokenizer(config.vocab_file, config.do_lower_case)
        self.model = pretrain_model.PretrainingModel(config, self.special_ids)
        if self.model.discriminator is None:
            raise UserError("This model has no discriminator (electra_objective is false): "
                            "there are no replaced-token probabilities to show.")
        path = pretrain_runner.find_checkpoint(config.model_dir)
        if path is None:
            raise UserError(f"No checkpoint in {config.model_dir}; pre-train first or set "
                            "--model-name to a directory holding one.")
        try:
            checkpoint.restore_checkpoint(self.model.named_variables(), path)
        except ValueError as e:
            raise UserError(f"Cannot load {path}: {e}") from None
        self.checkpoint_path = path

    def tokenize(self, text):
        """Wordpieces of `text` with every literal "[MASK]" kept as the mask token."""
        tokens = []
        for i, piece in enumerate(text.split(MASK_TOKEN)):
            if i:
                tokens.append(MASK_TOKEN)
            tokens.extend(self.tokenizer.tokenize(piece))
        return tokens

    def score(self, text, top_k=5):
        """[CLS] tokens [SEP] (truncated to max_seq_length) -> TokenScores."""
        tokens = ["[CLS]"] + self.tokenize(text)[:self.config.max_seq_length - 2] + ["[SEP]"]
        ids = self.tokenizer.convert_tokens_to_ids(tokens)
        probs, fill_ins = self.score_ids(np.array([ids], np.int32), top_k)
        named = {pos: [(self.tokenizer.convert_ids_to_tokens([int(t)])[0], float(p))
                       for t, p in top] for pos, top in fill_ins[0].items()}
        return TokenScores(tokens=tokens, replaced_probs=[float(p) for p in probs[0]],
                           fill_ins=named)

    def score_ids(self, input_ids, top_k=5, segment_ids=None):
        """input_ids (and optional segment_ids, default 0): [B, S] int32 without padding.

        Returns:
          (probs [B, S] float32 of "replaced", per example {position: [(id, prob)] top_k}
          for every [MASK] position).
        """
        ids = tf.constant(input_ids, tf.int32)
        ones = tf.ones_like(ids)
        segments = tf.zeros_like(ids) if segment_ids is None else tf.constant(segment_ids,
                                                                             tf.int32)
        model = self.model
        hidden = model.discriminator(ids, ones, segments, training=False).sequence_output
        probs = tf.sigmoid(model.discriminator_head(hidden)).numpy()
        fill_ins = [{} for _ in range(len(input_ids))]
        mask_at = np.argwhere(np.asarray(input_ids) == self.special_ids.mask)
        if len(mask_at) and (model.generator is not None or model.two_tower):
            gen_probs = self._generator_probs(ids, ones, segments, mask_at)  # [M, V]
            top = np.argsort(-gen_probs, axis=-1)[:, :top_k]
            for (b, pos), row, token_ids in zip(mask_at, gen_probs, top):
                fill_ins[b][int(pos)] = [(int(t), float(row[t])) for t in token_ids]
        return probs, fill_ins

    def _generator_probs(self, ids, input_mask, segment_ids, mask_at):
        """Generator softmax at the [M, 2] (example, position) pairs -> [M, V] numpy."""
        model = self.model
        if model.two_tower:
            inputs = pretrain_data.Inputs(ids, input_mask, segment_ids, None, None, None)
            logits = model.cloze_logits(inputs)  # [B, S, V]
        else:
            hidden = model.generator(ids, input_mask, segment_ids,
                                     training=False).sequence_output
            logits = model.generator_head(hidden)  # [B, S, V]
        picked = tf.gather_nd(logits, tf.constant(mask_at, tf.int32))
        return tf.nn.softmax(picked, -1).numpy()


def format_scores(scores):
    """Printable lines: one `token<TAB>p(replaced)` per wordpiece, then the fill-ins."""
    lines = ["token\tp(replaced)"]
    lines += [f"{tok}\t{prob:.4f}" for tok, prob in zip(scores.tokens, scores.replaced_probs)]
    for pos, top in sorted(scores.fill_ins.items()):
        options = ", ".join(f"{tok} {prob:.4f}" for tok, prob in top)
        lines.append(f"[MASK] at position {pos}: {options}")
    return lines
