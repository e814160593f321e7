"""Tests for pretrain/pretrain_helpers.py against numpy and hand-computed results."""

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import scipy.special
import scipy.stats
import tensorflow as tf

from pretrain import pretrain_helpers as ph

SPECIAL = ph.SpecialIds(pad=0, unk=100, cls=101, sep=102, mask=103)
VOCAB_FILE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "vocab" / "vocab.txt"


def random_batch(seed, batch=8, seq=32, vocab=1000):
    """BERT-like examples: [CLS] tokens [SEP] (tokens [SEP]) then padding; ids >= 104."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(104, vocab, size=(batch, seq)).astype(np.int32)
    mask = np.zeros((batch, seq), np.int32)
    for b in range(batch):
        length = rng.integers(6, seq + 1)
        ids[b, 0], ids[b, length - 1], ids[b, length // 2] = 101, 102, 102
        ids[b, length:] = 0
        mask[b, :length] = 1
    return ids, mask


# ---------------------------------------------------------------- gather / scatter


def test_gather_positions_matches_numpy():
    rng = np.random.default_rng(0)
    seq3 = rng.normal(size=(3, 6, 4)).astype(np.float32)
    pos = rng.integers(0, 6, size=(3, 5)).astype(np.int32)
    got3 = ph.gather_positions(tf.constant(seq3), tf.constant(pos)).numpy()
    assert got3.shape == (3, 5, 4)
    np.testing.assert_array_equal(got3, np.stack([seq3[b, pos[b]] for b in range(3)]))
    seq2 = rng.integers(0, 50, size=(3, 6)).astype(np.int32)
    got2 = ph.gather_positions(tf.constant(seq2), tf.constant(pos)).numpy()
    assert got2.shape == (3, 5)
    np.testing.assert_array_equal(got2, np.take_along_axis(seq2, pos, 1))


def test_scatter_update_ints_duplicates_and_position_zero():
    seq = tf.constant([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]])
    updates = tf.constant([[20, 30, 99, 41], [50, 60, 70, 80]])
    # Row 0: position 1 twice (20, 30 -> floor(50/2) = 25), position 0 ignored, 3 once.
    # Row 1: position 4 three times (50+60+70 = 180 -> 60), position 2 once.
    positions = tf.constant([[1, 1, 0, 3], [4, 4, 4, 2]])
    updated, mask = ph.scatter_update(seq, updates, positions)
    np.testing.assert_array_equal(updated.numpy(), [[1, 25, 3, 41, 5], [6, 7, 80, 9, 60]])
    np.testing.assert_array_equal(mask.numpy(), [[0, 1, 0, 1, 0], [0, 0, 1, 0, 1]])
    assert updated.dtype == tf.int32 and mask.dtype == tf.int32


def test_scatter_update_floats_with_depth_average_duplicates():
    seq = tf.zeros([1, 4, 2])
    updates = tf.constant([[[1.0, 2.0], [3.0, 6.0], [7.0, 7.0]]])
    positions = tf.constant([[2, 2, 0]])
    updated, mask = ph.scatter_update(seq, updates, positions)
    expected = np.zeros((1, 4, 2), np.float32)
    expected[0, 2] = [2.0, 4.0]
    np.testing.assert_allclose(updated.numpy(), expected)
    np.testing.assert_array_equal(mask.numpy(), [[0, 0, 1, 0]])


# ---------------------------------------------------------------- candidates / counts


def test_candidates_exclude_specials_and_padding_but_not_unk():
    ids = tf.constant([[101, 100, 103, 7, 102, 0, 0]])
    mask = tf.constant([[1, 1, 1, 1, 1, 0, 0]])
    got = ph.get_candidates_mask(ids, mask, SPECIAL).numpy()
    np.testing.assert_array_equal(got, [[False, True, False, True, False, False, False]])
    disallow = tf.constant([[False, False, False, True, False, False, False]])
    got = ph.get_candidates_mask(ids, mask, SPECIAL, disallow).numpy()
    np.testing.assert_array_equal(got, [[False, True, False, False, False, False, False]])


@pytest.mark.parametrize("length,mask_prob,n,expected", [
    (5, 0.5, 10, 2),    # 2.5 -> 2 (round half to even)
    (7, 0.5, 10, 4),    # 3.5 -> 4
    (3, 0.15, 10, 1),   # 0.45 -> 0 -> at least 1
    (128, 0.15, 19, 19),  # 19.2 -> 19
    (100, 0.5, 19, 19),  # 50 -> capped at N
    (10, 0.25, 5, 2),   # 2.5 -> 2
])
def test_num_to_predict_rounds_half_to_even(length, mask_prob, n, expected):
    ids = np.zeros((1, 128), np.int32)
    ids[0, :length] = 500
    ids[0, 0], ids[0, length - 1] = 101, 102
    mask = (ids != 0).astype(np.int32)
    out = ph.mask(tf.constant(ids), tf.constant(mask), SPECIAL, mask_prob, n, tf.constant([1, 2]))
    weights = out.masked_lm_weights.numpy()[0]
    assert weights.shape == (n,)
    np.testing.assert_array_equal(weights, [1.0] * expected + [0.0] * (n - expected))
    np.testing.assert_array_equal(out.masked_lm_positions.numpy()[0, expected:], 0)
    np.testing.assert_array_equal(out.masked_lm_ids.numpy()[0, expected:], 0)


def test_mask_outputs_are_consistent_with_inputs():
    ids, mask = random_batch(1, batch=16)
    out = ph.mask(tf.constant(ids), tf.constant(mask), SPECIAL, 0.15, 6, tf.constant([3, 4]),
                  segment_ids=tf.constant(mask))
    pos, lm_ids = out.masked_lm_positions.numpy(), out.masked_lm_ids.numpy()
    weights, masked = out.masked_lm_weights.numpy(), out.input_ids.numpy()
    candidates = ph.get_candidates_mask(ids, mask, SPECIAL).numpy()
    for b in range(16):
        used = weights[b] > 0
        assert candidates[b, pos[b, used]].all()
        np.testing.assert_array_equal(lm_ids[b, used], ids[b, pos[b, used]])
        # Chosen positions hold [MASK] or the original; every other position is unchanged.
        assert np.isin(masked[b, pos[b, used]], [103]).sum() + \
            (masked[b, pos[b, used]] == ids[b, pos[b, used]]).sum() == used.sum()
        untouched = np.ones(ids.shape[1], bool)
        untouched[pos[b, used]] = False
        np.testing.assert_array_equal(masked[b, untouched], ids[b, untouched])
    np.testing.assert_array_equal(out.segment_ids.numpy(), mask)
    restored = ph.unmask(out).input_ids.numpy()
    np.testing.assert_array_equal(restored, ids)


def test_example_without_candidates_gets_no_predictions():
    ids = tf.constant([[101, 102, 0, 0], [101, 7, 102, 0]])
    mask = tf.constant([[1, 1, 0, 0], [1, 1, 1, 0]])
    out = ph.mask(ids, mask, SPECIAL, 0.5, 2, tf.constant([0, 0]))
    # Row 1: round(3 * 0.5) = 2 draws, both necessarily the only candidate (duplicates).
    np.testing.assert_array_equal(out.masked_lm_weights.numpy(), [[0, 0], [1, 1]])
    np.testing.assert_array_equal(out.masked_lm_positions.numpy(), [[0, 0], [1, 1]])


# ---------------------------------------------------------------- statistics


def test_mask_85_15_split_and_uniform_positions():
    ids, mask = random_batch(2, batch=600, seq=24)
    out = ph.mask(tf.constant(ids), tf.constant(mask), SPECIAL, 0.5, 8, tf.constant([5, 6]))
    pos, weights = out.masked_lm_positions.numpy(), out.masked_lm_weights.numpy()
    masked = out.input_ids.numpy()
    n_mask = n_kept = 0
    counts = {}  # (candidate count, index among candidates) histogram per example shape
    candidates = ph.get_candidates_mask(ids, mask, SPECIAL).numpy()
    chi2_stats, dofs = 0.0, 0
    for b in range(len(ids)):
        used = pos[b, weights[b] > 0]
        unique, mult = np.unique(used, return_counts=True)
        single = unique[mult == 1]  # duplicates are [MASK] if any of their draws won
        n_mask += (masked[b, single] == 103).sum()
        n_kept += (masked[b, single] == ids[b, single]).sum()
        cand = np.flatnonzero(candidates[b])
        counts.setdefault(len(cand), np.zeros(len(cand)))
        counts[len(cand)] += np.bincount(np.searchsorted(cand, used), minlength=len(cand))
    total = n_mask + n_kept
    frac = n_mask / total
    sigma = np.sqrt(0.85 * 0.15 / total)
    assert total > 2000 and abs(frac - 0.85) < 4 * sigma, (frac, total)
    # Uniformity: pool a chi-square over examples with the same number of candidates.
    for k, hist in counts.items():
        if hist.sum() >= 5 * k:
            stat, _ = scipy.stats.chisquare(hist)
            chi2_stats, dofs = chi2_stats + stat, dofs + k - 1
    assert dofs > 50
    assert scipy.stats.chi2.sf(chi2_stats, dofs) > 1e-3, (chi2_stats, dofs)


def test_mask_follows_proposal_distribution():
    ids = np.full((400, 6), 500, np.int32)
    ids[:, 0], ids[:, -1] = 101, 102
    ids[:, 1] = np.arange(400) + 1000  # make examples distinct so their draws differ
    mask = np.ones_like(ids)
    proposal = np.array([0, 1, 2, 3, 4, 0], np.float32)
    out = ph.mask(tf.constant(ids), tf.constant(mask), SPECIAL, 0.5, 3, tf.constant([7, 8]),
                  proposal_distribution=tf.constant(proposal))
    hist = np.bincount(out.masked_lm_positions.numpy().ravel(), minlength=6)[1:5]
    _, p = scipy.stats.chisquare(hist, hist.sum() * proposal[1:5] / proposal.sum())
    assert p > 1e-3, hist


# ---------------------------------------------------------------- determinism / layouts


def test_masks_depend_on_seed_and_content_not_batch_layout():
    ids, mask = random_batch(3, batch=8)
    full = ph.mask(tf.constant(ids), tf.constant(mask), SPECIAL, 0.15, 5, tf.constant([9, 9]))
    halves = [ph.mask(tf.constant(ids[s]), tf.constant(mask[s]), SPECIAL, 0.15, 5,
                      tf.constant([9, 9])) for s in (slice(4, 8), slice(0, 4))]
    for field in ("input_ids", "masked_lm_positions", "masked_lm_ids", "masked_lm_weights"):
        joined = np.concatenate([getattr(halves[1], field).numpy(),
                                 getattr(halves[0], field).numpy()])
        np.testing.assert_array_equal(getattr(full, field).numpy(), joined)
    again = ph.mask(tf.constant(ids), tf.constant(mask), SPECIAL, 0.15, 5, tf.constant([9, 9]))
    np.testing.assert_array_equal(again.masked_lm_positions, full.masked_lm_positions)
    other = ph.mask(tf.constant(ids), tf.constant(mask), SPECIAL, 0.15, 5, tf.constant([9, 10]))
    assert (other.masked_lm_positions.numpy() != full.masked_lm_positions.numpy()).any()


def test_example_keys_identify_content():
    ids, _ = random_batch(4, batch=6)
    keys = ph.example_keys(tf.constant(ids)).numpy()
    assert keys.shape == (6, 2) and len({tuple(k) for k in keys}) == 6
    swapped = ids.copy()
    swapped[0, [1, 2]] = [200, 300]
    swapped_keys = ph.example_keys(tf.constant(swapped)).numpy()
    swapped[0, [1, 2]] = [300, 200]  # same tokens, other order: a different example
    assert len({tuple(keys[0]), tuple(swapped_keys[0]),
                tuple(ph.example_keys(tf.constant(swapped)).numpy()[0])}) == 3
    np.testing.assert_array_equal(ph.example_keys(tf.constant(ids[2:3])).numpy(), keys[2:3])


# ---------------------------------------------------------------- sampling


def sample_histogram(logits, rows, seed, **kwargs):
    tiled = tf.tile(tf.constant(logits)[tf.newaxis, tf.newaxis], [4, rows // 4, 1])
    one_hot = ph.sample_from_softmax(tiled, tf.constant(seed), **kwargs).numpy()
    assert one_hot.shape == tiled.shape and (one_hot.sum(-1) == 1).all()
    return one_hot.reshape(-1, len(logits)).sum(0)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 0.5])
def test_gumbel_sampling_matches_softmax(temperature):
    logits = np.array([2.0, 1.0, 0.0, -1.0, 0.5], np.float32)
    hist = sample_histogram(logits, 20000, [11, 12], temperature=temperature)
    expected = scipy.special.softmax(logits / temperature) * hist.sum()
    _, p = scipy.stats.chisquare(hist, expected)
    assert p > 1e-3, (hist, expected)


def test_gumbel_sampling_disallow():
    logits = tf.tile(tf.constant([5.0, 1.0, 0.0])[None, None], [4, 1000, 1])
    disallow = tf.one_hot(tf.zeros([4, 1000], tf.int32), 3)
    one_hot = ph.sample_from_softmax(logits, tf.constant([1, 1]), disallow=disallow).numpy()
    assert one_hot[..., 0].sum() == 0  # would win ~97% of draws without disallow
    # The remaining tokens follow softmax([1, 0]): p(token 1) = sigmoid(1) = 0.731.
    frac, n = one_hot[..., 1].mean(), 4000
    assert abs(frac - scipy.special.expit(1.0)) < 4 * np.sqrt(0.731 * 0.269 / n)


def test_per_example_sampling_noise_is_layout_independent():
    logits = tf.random.stateless_normal([6, 3, 50], [0, 1])
    ids, _ = random_batch(5, batch=6)
    keys = ph.example_keys(tf.constant(ids))
    full = ph.sample_from_softmax(logits, tf.constant([4, 2]), keys=keys).numpy()
    part = ph.sample_from_softmax(logits[3:], tf.constant([4, 2]), keys=keys[3:]).numpy()
    np.testing.assert_array_equal(full[3:], part)
    # Same logits for every row, different keys -> different samples.
    same = tf.tile(logits[:1], [6, 1, 1])
    rows = ph.sample_from_softmax(same, tf.constant([4, 2]), keys=keys).numpy().argmax(-1)
    assert len({tuple(r) for r in rows}) > 1


# ---------------------------------------------------------------- special ids


def test_special_ids_from_real_vocab():
    if not VOCAB_FILE.exists():
        pytest.skip(f"shared data vocab not found at {VOCAB_FILE}")
    vocab = {line.rstrip("\n"): i for i, line in enumerate(VOCAB_FILE.open(encoding="utf-8"))}
    assert ph.SpecialIds.from_vocab(vocab) == SPECIAL
    del vocab["[MASK]"]
    with pytest.raises(ValueError, match=r"\[MASK\]"):
        ph.special_ids_from_vocab(vocab)


def test_masks_and_samples_identical_with_xla():
    ids, mask = random_batch(6, batch=4, seq=16)
    ids, mask, seed = tf.constant(ids), tf.constant(mask), tf.constant([8, 1], tf.int64)

    def draw():
        out = ph.mask(ids, mask, SPECIAL, 0.3, 4, seed)
        logits = tf.zeros([4, 4, 30])
        sample = ph.sample_from_softmax(logits, seed, keys=ph.example_keys(ids))
        return out.input_ids, out.masked_lm_positions, sample

    for xla, eager in zip(tf.function(draw, jit_compile=True)(), draw()):
        np.testing.assert_array_equal(xla.numpy(), eager.numpy())
