"""Streaming pre-training eval metrics of spec c.10 (the original's metric_fn).

Batches of PretrainingOutput (tensors or numpy) are accumulated on the host; `result()`
gives the same quantities as the original's tf.metrics, with one difference: disc_auc is
the exact ROC AUC (sklearn) instead of tf.metrics.auc's 200-threshold approximation
(which differs in the 2nd-3rd decimal).
"""

import numpy as np
from sklearn import metrics as sk_metrics


def _np(x):
    return x.numpy() if hasattr(x, "numpy") else np.asarray(x)


class PretrainingMetrics:
    """masked_lm_accuracy, masked_lm_loss, sampled_masked_lm_accuracy, disc_loss, disc_auc,
    disc_accuracy, disc_precision, disc_recall and loss, streamed over eval batches."""

    def __init__(self, has_discriminator=True, disc_weight=50.0):
        """has_discriminator: electra or electric objective. The disc_* metrics are only
        reported when it is set and disc_weight > 0, as the original."""
        self.has_discriminator = has_discriminator
        self.report_disc = has_discriminator and disc_weight > 0
        self.reset()

    def reset(self):
        self._sums = {}  # metric -> [weighted sum, total weight]
        self._auc_labels, self._auc_scores = [], []

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
        if not self.has_discriminator:
            return
        self._add("sampled_masked_lm_accuracy", _np(output.sampled_tokids) == mlm_ids, mlm_w)
        if not self.report_disc:
            return
        mask = _np(output.input_mask).astype(np.float64)
        labels, preds = _np(output.disc_labels), _np(output.disc_preds)
        correct = labels == preds
        self._add("disc_loss", _np(output.disc_per_example_loss), 1.0)  # mean over examples
        self._add("disc_accuracy", correct, mask)
        self._add("disc_precision", correct, preds * mask)
        self._add("disc_recall", correct, labels * mask)
        # As the original: padding counts as a negative with score 0.
        self._auc_labels.append((labels * mask).ravel())
        self._auc_scores.append((_np(output.disc_probs) * mask).ravel())

    def result(self):
        """{metric: float}; a metric with zero total weight is 0.0 (as tf.metrics)."""
        out = {name: (s / w if w > 0 else 0.0) for name, (s, w) in self._sums.items()}
        if self.report_disc and self._auc_labels:
            labels = np.concatenate(self._auc_labels)
            scores = np.concatenate(self._auc_scores)
            # AUC is undefined with a single class; report NaN instead of guessing.
            out["disc_auc"] = (float(sk_metrics.roc_auc_score(labels, scores))
                               if 0 < labels.sum() < labels.size else float("nan"))
        return dict(sorted(out.items()))
