"""Streaming pre-training eval metrics: the original's (spec c.10) plus honest extras.

Batches of PretrainingOutput (tensors or numpy) are accumulated on the host; `result()`
gives the same quantities as the original's tf.metrics, with one difference: disc_auc is
the exact ROC AUC (sklearn) instead of tf.metrics.auc's 200-threshold approximation
(which differs in the 2nd-3rd decimal).

The original's disc_auc scores padding as negatives with probability 0, so on padded data
it rewards the discriminator for telling real tokens from padding, which it is never asked
to do: a discriminator giving every real token the same score gets about 0.8 on data that
is 60% padding. The extras measure over real tokens only, give the base rate that
disc_accuracy should be compared with, and a collapse check of the encoder's top layer:

  disc_auc_real: exact ROC AUC over real tokens (input_mask == 1).
  disc_auc_candidates: the same over the positions masking could choose (real tokens other
    than [CLS], [SEP], [MASK]: candidates_mask), which excludes the easy special tokens.
  disc_replaced_rate: fraction of real tokens labelled replaced (1).
  disc_accuracy_baseline: 1 - disc_replaced_rate, the accuracy of always answering
    "original"; disc_accuracy is only informative above it.
  repr_mean_cosine: mean over examples (with >= 2 real tokens) of the mean cosine
    similarity between the top-layer vectors of different real tokens of the `electra`
    encoder (PretrainingOutput.repr_cosine); near 1.0 means collapsed (every token the
    same vector).
Each AUC is NaN when its tokens hold a single class.
"""

import numpy as np
from sklearn import metrics as sk_metrics

_AUCS = ("disc_auc", "disc_auc_real", "disc_auc_candidates")
# New means are NaN with nothing to average: a 0.0 would read as a real (good) value.
_NAN_IF_EMPTY = ("disc_replaced_rate", "repr_mean_cosine")


def _np(x):
    return x.numpy() if hasattr(x, "numpy") else np.asarray(x)


def _auc(labels, scores):
    # AUC is undefined with a single class; report NaN instead of guessing.
    if 0 < labels.sum() < labels.size:
        return float(sk_metrics.roc_auc_score(labels, scores))
    return float("nan")


class PretrainingMetrics:
    """masked_lm_accuracy, masked_lm_loss, sampled_masked_lm_accuracy, disc_loss, disc_auc,
    disc_accuracy, disc_precision, disc_recall and loss (the original's), plus the extras
    of the module docstring, streamed over eval batches.

    disc_accuracy, disc_precision and disc_recall count real tokens only, as the original
    (spec c.10 and its metric_fn): accuracy weighted by input_mask, precision by
    disc_preds * input_mask, recall by disc_labels * input_mask. Only disc_auc lets
    padding in.
    """

    def __init__(self, has_discriminator=True, disc_weight=50.0, has_encoder=True):
        """has_discriminator: electra or electric objective. The disc_* metrics are only
        reported when it is set and disc_weight > 0, as the original.
        has_encoder: the model has an `electra` network (all but a uniform-generator MLM);
        repr_mean_cosine is reported when set."""
        self.has_discriminator = has_discriminator
        self.report_disc = has_discriminator and disc_weight > 0
        self.has_encoder = has_encoder
        self.reset()

    def reset(self):
        self._sums = {}  # metric -> [weighted sum, total weight]
        self._auc_parts = {name: ([], []) for name in _AUCS}  # name -> (labels, scores)

    def _add(self, name, values, weights):
        values, weights = np.broadcast_arrays(np.asarray(values, np.float64),
                                              np.asarray(weights, np.float64))
        acc = self._sums.setdefault(name, [0.0, 0.0])
        acc[0] += float(np.sum(values * weights))
        acc[1] += float(np.sum(weights))

    def update(self, output):
        """Adds one batch: a PretrainingOutput (or anything with its field names)."""
        mlm_w = _np(output.masked_lm_weights)
        mlm_ids = _np(output.masked_lm_ids)
        self._add("masked_lm_accuracy", _np(output.mlm_preds) == mlm_ids, mlm_w)
        self._add("masked_lm_loss", _np(output.mlm_per_example_loss), mlm_w)
        self._add("loss", _np(output.loss), 1.0)
        if self.has_encoder:
            # Examples with < 2 real tokens have no pairs (the model returns 0): weight 0.
            real_tokens = _np(output.input_mask).sum(-1)
            self._add("repr_mean_cosine", _np(output.repr_cosine), real_tokens >= 2)
        if not self.has_discriminator:
            return
        self._add("sampled_masked_lm_accuracy", _np(output.sampled_tokids) == mlm_ids, mlm_w)
        if self.report_disc:
            self._update_disc(output)

    def _update_disc(self, output):
        mask = _np(output.input_mask).astype(np.float64)
        labels, preds = _np(output.disc_labels), _np(output.disc_preds)
        probs = _np(output.disc_probs)
        correct = labels == preds
        self._add("disc_loss", _np(output.disc_per_example_loss), 1.0)  # mean over examples
        self._add("disc_accuracy", correct, mask)
        self._add("disc_precision", correct, preds * mask)
        self._add("disc_recall", correct, labels * mask)
        self._add("disc_replaced_rate", labels, mask)
        # As the original: padding counts as a negative with score 0.
        self._add_auc("disc_auc", (labels * mask).ravel(), (probs * mask).ravel())
        real = mask.astype(bool)
        self._add_auc("disc_auc_real", labels[real], probs[real])
        candidates = _np(output.candidates_mask).astype(bool) & real
        self._add_auc("disc_auc_candidates", labels[candidates], probs[candidates])

    def _add_auc(self, name, labels, scores):
        self._auc_parts[name][0].append(labels)
        self._auc_parts[name][1].append(scores)

    def result(self):
        """{metric: float}, sorted. With zero total weight the original's metrics are 0.0
        (as tf.metrics) and the new ones NaN; an AUC over a single class is NaN."""
        out = {name: (s / w if w > 0 else float("nan") if name in _NAN_IF_EMPTY else 0.0)
               for name, (s, w) in self._sums.items()}
        if "disc_replaced_rate" in out:
            out["disc_accuracy_baseline"] = 1.0 - out["disc_replaced_rate"]
        for name, (labels, scores) in self._auc_parts.items():
            if labels:
                out[name] = _auc(np.concatenate(labels), np.concatenate(scores))
        return dict(sorted(out.items()))
