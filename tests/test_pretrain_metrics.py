"""Tests for pretrain/metrics.py against sklearn/numpy on fixed arrays, and for the
model side of the extras (pretrain_model.mean_pairwise_cosine, repr_cosine,
candidates_mask)."""

import os
import types

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import tensorflow as tf
from sklearn import metrics as sk

from pretrain import metrics
from pretrain import pretrain_model as pm
import test_pretrain_model as tpm  # the tiny model configs and features


def fake_batch(seed, batch=4, seq=10, n=3):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(4, seq + 1, size=batch)
    mask = (np.arange(seq)[None] < lengths[:, None]).astype(np.int32)
    labels = (rng.random((batch, seq)) < 0.3).astype(np.int32) * mask
    probs = np.clip(labels * 0.3 + rng.random((batch, seq)) * 0.7, 0, 1).astype(np.float32)
    candidates = mask.copy()
    candidates[:, 0] = candidates[np.arange(batch), lengths - 1] = 0  # [CLS], last [SEP]
    return types.SimpleNamespace(
        loss=np.float32(rng.random() * 10),
        masked_lm_ids=rng.integers(0, 5, (batch, n)),
        mlm_preds=rng.integers(0, 5, (batch, n)),
        sampled_tokids=rng.integers(0, 5, (batch, n)),
        masked_lm_weights=(rng.random((batch, n)) < 0.8).astype(np.float32),
        mlm_per_example_loss=rng.random((batch, n)).astype(np.float32) * 5,
        input_mask=mask, disc_labels=labels, disc_probs=probs,
        disc_preds=(probs > 0.5).astype(np.int32),
        disc_per_example_loss=rng.random(batch).astype(np.float32),
        candidates_mask=candidates, repr_cosine=rng.random(batch).astype(np.float32))


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
    real, cand = mask == 1, concat(batches, "candidates_mask") == 1
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
        "disc_auc_real": sk.roc_auc_score(labels[real], probs[real]),
        "disc_auc_candidates": sk.roc_auc_score(labels[cand], probs[cand]),
        "disc_replaced_rate": labels[real].mean(),
        "disc_accuracy_baseline": 1 - labels[real].mean(),
        "repr_mean_cosine": concat(batches, "repr_cosine").mean(),  # all have >= 4 tokens
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
    assert sorted(m.result()) == ["loss", "masked_lm_accuracy", "masked_lm_loss",
                                  "repr_mean_cosine"]
    m = metrics.PretrainingMetrics(disc_weight=0.0)
    m.update(fake_batch(0))
    assert sorted(m.result()) == ["loss", "masked_lm_accuracy", "masked_lm_loss",
                                  "repr_mean_cosine", "sampled_masked_lm_accuracy"]
    m = metrics.PretrainingMetrics(has_discriminator=False, has_encoder=False)
    m.update(fake_batch(0))  # uniform-generator MLM: no `electra` encoder to measure
    assert sorted(m.result()) == ["loss", "masked_lm_accuracy", "masked_lm_loss"]


def test_hand_computed_small_case():
    out = types.SimpleNamespace(
        loss=2.0, masked_lm_ids=[[5, 6]], mlm_preds=[[5, 7]], sampled_tokids=[[6, 6]],
        masked_lm_weights=[[1.0, 1.0]], mlm_per_example_loss=[[1.0, 3.0]],
        input_mask=[[1, 1, 1, 1, 0]], disc_labels=[[0, 1, 1, 0, 0]],
        disc_preds=[[0, 1, 0, 1, 1]], disc_probs=[[0.1, 0.9, 0.4, 0.6, 0.8]],
        disc_per_example_loss=[0.5], candidates_mask=[[0, 1, 1, 1, 0]], repr_cosine=[0.3])
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
    # Real tokens only: positives 0.9, 0.4; negatives 0.1, 0.6 -> 3 of 4 pairs ordered.
    assert got["disc_auc_real"] == pytest.approx(3 / 4)
    # Without [CLS] at 0: positives 0.9, 0.4; negative 0.6 -> 1 of 2 pairs ordered.
    assert got["disc_auc_candidates"] == pytest.approx(1 / 2)
    assert got["disc_replaced_rate"] == 0.5 and got["disc_accuracy_baseline"] == 0.5
    assert got["repr_mean_cosine"] == pytest.approx(0.3)


def disc_batch(labels, probs, input_mask, candidates_mask=None):
    """A one-example batch with only the fields the disc metrics read set meaningfully."""
    labels, probs = np.array([labels]), np.array([probs], np.float32)
    mask = np.array([input_mask])
    return types.SimpleNamespace(
        loss=1.0, masked_lm_ids=[[5]], mlm_preds=[[5]], sampled_tokids=[[5]],
        masked_lm_weights=[[1.0]], mlm_per_example_loss=[[1.0]], input_mask=mask,
        disc_labels=labels, disc_probs=probs, disc_preds=(probs > 0.5).astype(np.int32),
        disc_per_example_loss=[0.5], repr_cosine=[0.0],
        candidates_mask=mask if candidates_mask is None else np.array([candidates_mask]))


def test_padding_flatters_disc_auc_but_not_disc_auc_real():
    # 4 real tokens (1 replaced), 6 pads; the discriminator scores every real token 0.7.
    batch = disc_batch([0, 1, 0, 0] + [0] * 6, [0.7] * 10, [1] * 4 + [0] * 6)
    m = metrics.PretrainingMetrics()
    m.update(batch)
    got = m.result()
    # Original: the positive beats the 6 pads (score 0) and ties the 3 real negatives.
    assert got["disc_auc"] == pytest.approx((6 + 3 * 0.5) / 9)  # 0.83
    assert got["disc_auc_real"] == 0.5 and got["disc_auc_candidates"] == 0.5
    assert got["disc_replaced_rate"] == 0.25 and got["disc_accuracy_baseline"] == 0.75
    assert got["disc_accuracy"] == 0.25  # predicts "replaced" everywhere: below baseline


def test_perfect_ranking_and_single_class():
    m = metrics.PretrainingMetrics()
    m.update(disc_batch([0, 1, 0, 1, 0, 0], [0.2, 0.9, 0.3, 0.8, 0.99, 0.99],
                        [1, 1, 1, 1, 0, 0]))  # pads score highest but are not counted
    got = m.result()
    assert got["disc_auc_real"] == 1.0 and got["disc_auc_candidates"] == 1.0
    assert got["disc_auc"] == 1.0  # the original zeroes the pads' scores: they rank last
    m = metrics.PretrainingMetrics()
    m.update(disc_batch([0, 1, 0, 0], [0.2, 0.9, 0.3, 0.1], [1, 1, 1, 0], [1, 0, 1, 0]))
    got = m.result()
    assert got["disc_auc_real"] == 1.0
    assert np.isnan(got["disc_auc_candidates"])  # candidates hold no replaced token


def test_repr_mean_cosine_skips_examples_without_pairs():
    batch = fake_batch(1, batch=3)
    batch.input_mask[2] = 0
    batch.input_mask[2, 0] = 1  # a single real token: no pair, value ignored
    batch.repr_cosine = np.array([0.2, 0.4, 0.0], np.float32)
    m = metrics.PretrainingMetrics()
    m.update(batch)
    assert m.result()["repr_mean_cosine"] == pytest.approx(0.3)
    batch.input_mask[:] = 0
    m.reset()
    m.update(batch)
    assert np.isnan(m.result()["repr_mean_cosine"])  # nothing to average is not 0.0


# ---------------------------------------------------------------- model side


def numpy_mean_cosine(vectors, mask):
    out = []
    for v, m in zip(vectors.astype(np.float64), mask):
        v = v[m == 1]
        u = v / np.linalg.norm(v, axis=-1, keepdims=True)
        n, gram = len(u), u @ u.T
        out.append((gram.sum() - np.trace(gram)) / (n * (n - 1)) if n > 1 else 0.0)
    return np.array(out)


def test_mean_pairwise_cosine_matches_numpy():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(3, 7, 5)).astype(np.float32) + 0.5  # mean offset: cos > 0
    mask = (np.arange(7)[None] < np.array([[7], [4], [1]])).astype(np.int32)
    vectors[1, 4:] = 1e6  # padding vectors must not count
    got = pm.mean_pairwise_cosine(tf.constant(vectors), tf.constant(mask)).numpy()
    np.testing.assert_allclose(got, numpy_mean_cosine(vectors, mask), atol=1e-6)
    assert got[2] == 0.0 and 0 < got[0] < 1


def test_mean_pairwise_cosine_identical_orthogonal_opposite():
    same = np.tile(np.arange(1.0, 5.0), (1, 6, 1)) * np.arange(1.0, 7.0)[None, :, None]
    ortho = np.eye(6)[None]  # one-hot rows
    opposite = np.array([[[1.0, 2.0], [-1.0, -2.0]]])
    for vectors, mask, expected in ((same, np.ones((1, 6)), 1.0), (ortho, np.ones((1, 6)), 0.0),
                                    (opposite, np.ones((1, 2)), -1.0)):
        got = pm.mean_pairwise_cosine(tf.constant(vectors, tf.float32), tf.constant(mask))
        assert got.numpy() == pytest.approx([expected], abs=1e-6)


@pytest.mark.parametrize("variant", [
    {}, {"untied_generator": False}, {"electra_objective": False},
    {"electric_objective": True, "two_tower_generator": True}],
    ids=["electra", "tied", "mlm", "electric"])
def test_model_eval_output_has_new_fields(variant):
    model = tpm.tiny_model(**variant)
    features, seed = tpm.random_features(3), tf.constant([5, 6])
    out = model(features, seed, with_repr_cosine=True)
    assert all(v.name.startswith("electra/") for v in model.encoder.variables)
    # The encoder's input in this forward pass: the discriminator's corrupted ids, or the
    # masked ids for MLM. No dropout, so a second call gives the same top layer.
    ids = out.fake_input_ids if model.has_discriminator else out.masked_input_ids
    hidden = model.encoder(ids, features["input_mask"], features["segment_ids"],
                           False).sequence_output
    mask = features["input_mask"].numpy()
    np.testing.assert_allclose(out.repr_cosine, numpy_mean_cosine(hidden.numpy(), mask),
                               atol=1e-5)
    assert np.all(np.abs(out.repr_cosine.numpy()) <= 1)
    ids = features["input_ids"].numpy()
    special = np.isin(ids, [tpm.SPECIAL.cls, tpm.SPECIAL.sep, tpm.SPECIAL.mask, tpm.SPECIAL.pad])
    np.testing.assert_array_equal(out.candidates_mask, mask * ~special)
    train_call = model(features, seed)  # the default (train step) leaves the figure out
    np.testing.assert_array_equal(train_call.repr_cosine, np.zeros(len(mask)))
    np.testing.assert_allclose(train_call.loss, out.loss, rtol=1e-6)
    m = metrics.PretrainingMetrics(model.has_discriminator, has_encoder=True)
    m.update(out)
    got = m.result()
    assert got["repr_mean_cosine"] == pytest.approx(out.repr_cosine.numpy().mean(), abs=1e-6)
    if model.has_discriminator:
        for name in ("disc_auc_real", "disc_auc_candidates", "disc_replaced_rate"):
            assert 0 <= got[name] <= 1, name
        assert got["disc_accuracy_baseline"] == pytest.approx(1 - got["disc_replaced_rate"])


def test_uniform_mlm_has_no_encoder():
    model = tpm.tiny_model(electra_objective=False, uniform_generator=True)
    assert model.encoder is None
    out = model(tpm.random_features(1), tf.constant([1, 1]), with_repr_cosine=True)
    np.testing.assert_array_equal(out.repr_cosine, np.zeros(4))
