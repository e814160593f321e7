"""Gather/scatter helpers, dynamic masking, un-masking and Gumbel sampling (spec c.3, c.5).

Randomness comes only from stateless ops driven by an explicit `seed` ([2] int tensor),
so a run is reproducible and resumable from (seed, step). Per-example draws are seeded
by the example's content (`example_keys`), never by its position in the batch: the
same example gets the same mask and the same generator sample whichever replica
processes it, so a 2-replica run and a 1-device run on one global batch agree.

Shape legend: B = batch size, S = sequence length, N = max_predictions_per_seq
(masked slots per example), D = depth, V = vocabulary size.
"""

import collections

import numpy as np
import tensorflow as tf

from pretrain import pretrain_data

_SPECIAL_TOKENS = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]",
                   "mask": "[MASK]"}


class SpecialIds(collections.namedtuple("SpecialIds", ["pad", "unk", "cls", "sep", "mask"])):
    """Ids of [PAD], [UNK], [CLS], [SEP], [MASK] (BERT uncased: 0 100 101 102 103)."""

    __slots__ = ()

    @classmethod
    def from_vocab(cls, vocab):
        """SpecialIds from a token->id dict (e.g. FullTokenizer.vocab).

        Raises:
          ValueError: a special token is missing (issue #8: SentencePiece vocabs).
        """
        missing = [tok for tok in _SPECIAL_TOKENS.values() if tok not in vocab]
        if missing:
            raise ValueError(f"The vocabulary lacks {missing}; ELECTRA needs BERT's special "
                             f"tokens {list(_SPECIAL_TOKENS.values())}. Add them to vocab.txt.")
        return cls(**{field: vocab[tok] for field, tok in _SPECIAL_TOKENS.items()})


def special_ids_from_vocab(vocab):
    """Same as SpecialIds.from_vocab."""
    return SpecialIds.from_vocab(vocab)


# Content hash of an example: sum_j ((ids_j + 1) * w_j mod P) mod P for two fixed weight rows.
# P = 2^31 - 1 keeps every product and the row sum inside int64 without overflow.
_HASH_PRIME = 2 ** 31 - 1
_HASH_WEIGHTS = np.random.RandomState(20200331).randint(1, _HASH_PRIME, size=(2, 4096))
# "auto_select" may pick another generator under XLA or on GPU; fixing Philox keeps the
# masks identical with and without jit_compile and across device types.
_RNG_ALG = "philox"
_UNIFORM_BITS = 24  # float32 mantissa: k / 2^24 is exact and < 1
# Stream ids folded into the step seed so masking and sampling draw independent numbers.
MASK_STREAM, SAMPLE_STREAM = 0, 1


def example_keys(input_ids):
    """Two int32 content hashes per example: [B, S] int -> [B, 2] int32.

    Identical examples get identical keys, so their random draws match across device
    layouts; distinct examples collide with probability about 2^-62.
    """
    seq_length = input_ids.shape[1]
    if seq_length > _HASH_WEIGHTS.shape[1]:
        raise ValueError(f"Sequences longer than {_HASH_WEIGHTS.shape[1]} are not supported.")
    ids = tf.cast(input_ids, tf.int64)[:, tf.newaxis, :]  # [B, 1, S]
    weights = tf.constant(_HASH_WEIGHTS[:, :seq_length], tf.int64)  # [2, S]
    terms = tf.math.floormod((ids + 1) * weights, _HASH_PRIME)  # [B, 2, S]
    return tf.cast(tf.math.floormod(tf.reduce_sum(terms, -1), _HASH_PRIME), tf.int32)


def per_example_uniform(seed, keys, shape):
    """U[0, 1) float32 noise of shape [B] + shape, row b seeded by (seed, keys[b]).

    Args:
      seed: [2] int32/int64 step seed.
      keys: [B, 2] int32 from example_keys.
      shape: Python list, the per-example noise shape.
    """
    return _per_example_uniform(seed, keys, tuple(shape))


# A stateless op takes one seed, so the rows are drawn in a loop. Wrapping the loop in a
# tf.function makes it a single graph op in eager mode too (an eager map_fn runs one
# Python iteration per example, ~10x slower); inside a caller's graph it is inlined.
@tf.function(reduce_retracing=True)
def _per_example_uniform(seed, keys, shape):
    def one(key):
        s = tf.random.experimental.stateless_fold_in(seed, key[0], alg=_RNG_ALG)
        s = tf.random.experimental.stateless_fold_in(s, key[1], alg=_RNG_ALG)
        return _uniform(shape, s)

    return tf.map_fn(one, keys, fn_output_signature=tf.TensorSpec(shape, tf.float32))


def _uniform(shape, seed):
    """U[0, 1) float32 from stateless Philox integers.

    TF's float stateless_uniform gives different numbers under XLA than on CPU/GPU,
    while the raw Philox integers agree; converting them here keeps masks and samples
    identical with and without jit_compile.
    """
    bits = tf.random.stateless_uniform(shape, seed, minval=None, maxval=None, dtype=tf.int32,
                                       alg=_RNG_ALG)
    low = tf.bitwise.bitwise_and(bits, (1 << _UNIFORM_BITS) - 1)
    return tf.cast(low, tf.float32) * (1.0 / (1 << _UNIFORM_BITS))


def stream_seed(seed, stream):
    """An independent [2] int32 seed for one use (stream) of the step seed."""
    return tf.random.experimental.stateless_fold_in(seed, stream, alg=_RNG_ALG)


def gather_positions(sequence, positions):
    """Values at `positions` of each example.

    Args:
      sequence: [B, S] or [B, S, D] tensor.
      positions: [B, N] int tensor of indices into S.
    Returns:
      [B, N] or [B, N, D] tensor.
    """
    return tf.gather(sequence, positions, batch_dims=1)


def scatter_update(sequence, updates, positions):
    """Writes `updates` at `positions`; position 0 is never written, duplicates averaged.

    Args:
      sequence: [B, S] or [B, S, D] tensor (int or float).
      updates: [B, N] or [B, N, D] tensor of the same dtype.
      positions: [B, N] int tensor; slots pointing at 0 are ignored ([CLS] is never a
        target, so zero-padded positions are harmless).
    Returns:
      (updated [B, S(, D)] same dtype as sequence, updates_mask [B, S] int32 with 1 at
      every updated position, once even if it was a target several times). Updates to the
      same position are summed and divided by their count (floor division for ints, so
      two different ids give a third id: the original's quirk).
    """
    depth = sequence.shape.rank == 3
    if not depth:
        sequence, updates = sequence[..., tf.newaxis], updates[..., tf.newaxis]
    batch, seq_length = tf.shape(sequence)[0], tf.shape(sequence)[1]
    n = tf.shape(positions)[1]
    batch_index = tf.tile(tf.range(batch)[:, tf.newaxis], [1, n])  # [B, N]
    index = tf.stack([batch_index, tf.cast(positions, tf.int32)], -1)  # [B, N, 2]
    out_shape = tf.stack([batch, seq_length, tf.shape(sequence)[2]])
    summed = tf.scatter_nd(index, updates, out_shape)  # [B, S, D]
    counts = tf.scatter_nd(index, tf.ones([batch, n], tf.int32), [batch, seq_length])
    counts *= tf.concat([tf.zeros([batch, 1], tf.int32),
                         tf.ones([batch, seq_length - 1], tf.int32)], 1)  # drop position 0
    counts_3d = counts[..., tf.newaxis]
    if sequence.dtype.is_integer:
        summed = tf.math.floordiv(summed, tf.cast(tf.maximum(1, counts_3d), sequence.dtype))
    else:
        summed = summed / tf.cast(tf.maximum(1, counts_3d), sequence.dtype)
    updates_mask = tf.minimum(counts, 1)
    updated = tf.where(updates_mask[..., tf.newaxis] > 0, summed, sequence)
    if not depth:
        updated = tf.squeeze(updated, -1)
    return updated, updates_mask


def get_candidates_mask(input_ids, input_mask, special_ids, disallow_from_mask=None):
    """Positions that may be masked: real tokens other than [CLS], [SEP], [MASK], [PAD].

    Args:
      input_ids, input_mask: [B, S] int.
      special_ids: SpecialIds.
      disallow_from_mask: optional [B, S] bool of further excluded positions.
    Returns:
      [B, S] bool. [UNK] and ordinary tokens are candidates.
    """
    candidates = tf.cast(input_mask, tf.bool)
    for ignore_id in (special_ids.sep, special_ids.cls, special_ids.mask, special_ids.pad):
        candidates &= tf.not_equal(input_ids, ignore_id)
    if disallow_from_mask is not None:
        candidates &= ~disallow_from_mask
    return candidates


def _sample_positions(candidates, proposal_distribution, uniform):
    """Inverse-CDF draws with replacement over candidate positions.

    Args:
      candidates: [B, S] bool.
      proposal_distribution: scalar or [B, S] non-negative scores.
      uniform: [B, N] U[0, 1) noise.
    Returns:
      [B, N] int32 positions; each draw is position s with probability
      w_s / sum(w), w = proposal * candidates (uniform over candidates by default).
    """
    weights = tf.cast(candidates, tf.float32) * tf.cast(proposal_distribution, tf.float32)
    cumulative = tf.cumsum(weights, axis=-1)  # [B, S]
    target = uniform * cumulative[:, -1:]  # [B, N]
    # The drawn position is the number of positions whose cumulative weight is <= target.
    positions = tf.reduce_sum(
        tf.cast(cumulative[:, tf.newaxis, :] <= target[..., tf.newaxis], tf.int32), -1)
    # Float rounding can push the count past the last candidate; clamp onto it.
    seq_length = tf.shape(candidates)[1]
    reversed_nonzero = tf.cast(tf.reverse(weights, [1]) > 0, tf.int32)
    last = seq_length - 1 - tf.argmax(reversed_nonzero, axis=-1, output_type=tf.int32)  # [B]
    return tf.minimum(positions, last[:, tf.newaxis])


def mask(input_ids, input_mask, special_ids, mask_prob, max_predictions_per_seq, seed,
         proposal_distribution=1.0, disallow_from_mask=None, segment_ids=None, keys=None):
    """Dynamic masking, exactly the original's rule (spec c.3).

    Per example: num_to_predict = max(1, min(N, round_half_even(num_tokens * mask_prob)))
    with num_tokens = sum(input_mask) (counting [CLS]/[SEP]); N positions drawn with
    replacement from the candidates; slots past num_to_predict get position 0 and weight
    0; each drawn slot becomes [MASK] with probability 0.85 and keeps its token otherwise
    (no random-token replacement). An example with no candidate at all (only specials)
    gets weight 0 everywhere instead of the original's undefined draw.

    Args:
      input_ids, input_mask: [B, S] int32.
      special_ids: SpecialIds.
      mask_prob: Python float.
      max_predictions_per_seq: N, Python int.
      seed: [2] int step seed (stream MASK_STREAM is used).
      proposal_distribution: scalar or [B, S] scores for non-uniform masking.
      disallow_from_mask: optional [B, S] bool of positions never masked.
      segment_ids: optional [B, S], passed through to the result.
      keys: optional [B, 2] example keys; default example_keys(input_ids).
    Returns:
      Inputs with masked input_ids and masked_lm_positions / ids / weights ([B, N]).
    """
    n = max_predictions_per_seq
    candidates = get_candidates_mask(input_ids, input_mask, special_ids, disallow_from_mask)
    num_tokens = tf.cast(tf.reduce_sum(input_mask, -1), tf.float32)
    # tf.round rounds half to even, like the original (2.5 -> 2, 3.5 -> 4).
    num_to_predict = tf.maximum(1, tf.minimum(n, tf.cast(tf.round(num_tokens * mask_prob),
                                                         tf.int32)))
    has_candidate = tf.reduce_any(candidates, -1)
    num_to_predict *= tf.cast(has_candidate, tf.int32)
    weights = tf.sequence_mask(num_to_predict, n, dtype=tf.float32)  # [B, N]

    keys = example_keys(input_ids) if keys is None else keys
    noise = per_example_uniform(stream_seed(seed, MASK_STREAM), keys, [2, n])  # [B, 2, N]
    positions = _sample_positions(candidates, proposal_distribution, noise[:, 0])
    positions *= tf.cast(weights, tf.int32)
    masked_lm_ids = gather_positions(input_ids, positions) * tf.cast(weights, input_ids.dtype)

    # Slots losing the 85% coin flip point at position 0, which scatter_update ignores.
    replace_positions = positions * tf.cast(noise[:, 1] < 0.85, tf.int32)
    mask_ids = tf.fill(tf.shape(positions), tf.cast(special_ids.mask, input_ids.dtype))
    masked_ids, _ = scatter_update(input_ids, mask_ids, replace_positions)
    return pretrain_data.Inputs(
        input_ids=tf.stop_gradient(masked_ids), input_mask=input_mask,
        segment_ids=segment_ids, masked_lm_positions=positions,
        masked_lm_ids=masked_lm_ids, masked_lm_weights=weights)


def unmask(inputs):
    """Inputs with the original ids written back at masked_lm_positions."""
    ids, _ = scatter_update(inputs.input_ids, inputs.masked_lm_ids, inputs.masked_lm_positions)
    return inputs._replace(input_ids=ids)


def sample_from_softmax(logits, seed, temperature=1.0, disallow=None, keys=None):
    """One Gumbel-max sample per row of logits / temperature, as a stop-gradient one-hot.

    g = -log(-log(u + 1e-9) + 1e-9) with u ~ U[0, 1); token = argmax(logits / T + g)
    (the original took argmax of the softmax of that sum: same argmax). With `disallow`,
    1000 is subtracted after the temperature division, as the original.

    Args:
      logits: [B, ..., V] float (computed in float32).
      seed: [2] int seed.
      temperature: Python float.
      disallow: optional [B, ..., V] float, 1 for tokens to avoid (the original id).
      keys: optional [B, 2] example keys: row b's noise then depends only on (seed,
        keys[b]); without keys one draw covers the whole tensor.
    Returns:
      [B, ..., V] float32 one-hot of the sampled ids, under stop_gradient.
    """
    logits = tf.cast(logits, tf.float32) / temperature
    if disallow is not None:
        logits -= 1000.0 * tf.cast(disallow, tf.float32)
    if keys is None:
        uniform = _uniform(tf.shape(logits), seed)
    else:
        uniform = per_example_uniform(seed, keys, logits.shape[1:].as_list())
    gumbel = -tf.math.log(-tf.math.log(uniform + 1e-9) + 1e-9)
    sampled = tf.argmax(logits + gumbel, -1, output_type=tf.int32)
    return tf.stop_gradient(tf.one_hot(sampled, tf.shape(logits)[-1], dtype=tf.float32))
