"""Tests for pretrain/metrics.py against sklearn/numpy on fixed arrays."""

import os
import types

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import tensorflow as tf
from sklearn import metrics as sk

from pretrain import metrics


def fake_batch(seed, batch=4, seq=10, n=3):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(4, seq + 1, size=batch)
    mask = (np.arange(seq)[None] < lengths[:, None]).astype(np.int32)
    labels = (rng.random((batch, seq)) < 0.3).astype(np.int32) * mask
    probs = np.clip(labels * 0.3 + rng.random((batch, seq)) * 0.7, 0, 1).astype(np.float32)
    return types.SimpleNamespace(
        loss=np.float32(rng.random() * 10),
        masked_lm_ids=rng.integers(0, 5, (batch, n)),
        mlm_preds=rng.integers(0, 5, (batch, n)),
        sampled_tokids=rng.integers(0, 5, (batch, n)),
        masked_lm_weights=(rng.random((batch, n)) < 0.8).astype(np.float32),
        mlm_per_example_loss=rng.random((batch, n)).astype(np.float32) * 5,
        input_mask=mask, disc_labels=labels, disc_probs=probs,
        disc_preds=(probs > 0.5).astype(np.int32),
        disc_per_example_loss=rng.random(batch).astype(np.float32))


def concat(batches, field):
    return np.concatenate([np.ravel(getattr(b, field)) for b in batches])


def test_metrics_match_sklearn_over_streamed_batches():
    batches = [fake_batch(s) for s in range(3)]
    m = metrics.PretrainingMetrics()
    for b in batches:
        m.update(b)
    got = m.result()
    w = concat(batches, "masked_lm_weights")
    ids = concat(batches, "masked_lm_ids")
    mask = concat(batches, "input_mask")
    labels, preds = concat(batches, "disc_labels"), concat(batches, "disc_preds")
    probs = concat(batches, "disc_probs")
    expected = {
        "masked_lm_accuracy": sk.accuracy_score(ids, concat(batches, "mlm_preds"),
                                                sample_weight=w),
        "masked_lm_loss": np.average(concat(batches, "mlm_per_example_loss"), weights=w),
        "sampled_masked_lm_accuracy": sk.accuracy_score(
            ids, concat(batches, "sampled_tokids"), sample_weight=w),
        "disc_loss": concat(batches, "disc_per_example_loss").mean(),
        "disc_accuracy": sk.accuracy_score(labels, preds, sample_weight=mask),
        # Real tokens only; pads have label 0 and pred may be 1 with prob*0 = 0 below.
        "disc_precision": sk.precision_score(labels[mask == 1], preds[mask == 1]),
        "disc_recall": sk.recall_score(labels[mask == 1], preds[mask == 1]),
        "disc_auc": sk.roc_auc_score(labels * mask, probs * mask),
        "loss": concat(batches, "loss").mean(),
    }
    assert sorted(got) == sorted(expected)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-6), key


def test_tensor_inputs_and_reset():
    batch = fake_batch(5)
    tensors = types.SimpleNamespace(**{k: tf.constant(v) for k, v in vars(batch).items()})
    m = metrics.PretrainingMetrics()
    m.update(tensors)
    first = m.result()
    m.reset()
    m.update(batch)
    assert m.result() == pytest.approx(first)


def test_mlm_only_reports_no_discriminator_metrics():
    m = metrics.PretrainingMetrics(has_discriminator=False)
    m.update(fake_batch(0))
    assert sorted(m.result()) == ["loss", "masked_lm_accuracy", "masked_lm_loss"]
    m = metrics.PretrainingMetrics(disc_weight=0.0)
    m.update(fake_batch(0))
    assert sorted(m.result()) == ["loss", "masked_lm_accuracy", "masked_lm_loss",
                                  "sampled_masked_lm_accuracy"]


def test_hand_computed_small_case():
    out = types.SimpleNamespace(
        loss=2.0, masked_lm_ids=[[5, 6]], mlm_preds=[[5, 7]], sampled_tokids=[[6, 6]],
        masked_lm_weights=[[1.0, 1.0]], mlm_per_example_loss=[[1.0, 3.0]],
        input_mask=[[1, 1, 1, 1, 0]], disc_labels=[[0, 1, 1, 0, 0]],
        disc_preds=[[0, 1, 0, 1, 1]], disc_probs=[[0.1, 0.9, 0.4, 0.6, 0.8]],
        disc_per_example_loss=[0.5])
    m = metrics.PretrainingMetrics()
    m.update(out)
    got = m.result()
    assert got["masked_lm_accuracy"] == 0.5 and got["sampled_masked_lm_accuracy"] == 0.5
    assert got["masked_lm_loss"] == 2.0 and got["disc_loss"] == 0.5
    assert got["disc_accuracy"] == 0.5  # positions 0, 1 right; 2, 3 wrong; pad ignored
    assert got["disc_precision"] == 0.5  # predicted 1 at 1 (right) and 3 (wrong)
    assert got["disc_recall"] == 0.5  # labels 1 at 1 (found) and 2 (missed)
    # Scores (pad -> 0): positives 0.9, 0.4; negatives 0.1, 0.6, 0.0 -> 5 of 6 pairs ordered.
    assert got["disc_auc"] == pytest.approx(5 / 6)
