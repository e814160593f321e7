"""Statistics that show why a pre-trained encoder may fine-tune worse than random init.

Pure functions from arrays to numbers (numpy in, Python floats out), plus
`encoder_trace`, which runs a modeling.BertModel layer by layer and returns every
hidden state and attention distribution for them. The questions they answer:
  * Representation collapse: do all tokens of a sentence (token_cosine) or the [CLS]
    vectors of different sentences (mean_pairwise_cosine) point the same way?
  * Attention collapse: is attention sharply peaked (low entropy, e.g. [CLS] looking only
    at itself) or close to uniform (entropy near log n)?
  * Embedding anisotropy: do the word embeddings share a few dominant directions?
  * Linear probes: how much task signal does a frozen feature carry?

Shape legend: B = examples, S = sequence length, H = hidden size, N = attention heads,
E = embedding size, n = vectors, d = their width, V = vocabulary size.
"""

import collections
import math

import numpy as np
import tensorflow as tf
from sklearn.linear_model import LogisticRegression

from model import modeling

# Keeps a zero vector's cosine at 0 instead of 0/0.
_NORM_FLOOR = 1e-12
# Added to the train-set std before standardising, so a constant feature maps to 0.
_STD_FLOOR = 1e-6

EncoderTrace = collections.namedtuple("EncoderTrace", ["hidden_states", "attention_probs"])
EncoderTrace.__doc__ = """What the encoder computed, as float32 numpy arrays.

hidden_states: L + 1 arrays [B, S, H]: the embedding output (after embeddings_project
  when E != H, i.e. what layer 1 reads) and the output of each encoder layer.
attention_probs: L arrays [B, N, S(query), S(key)], each row a distribution over keys.
"""


def mean_pairwise_cosine(vectors):
    """Mean cosine similarity over all ordered pairs i != j.

    Exact, in O(n d): with unit vectors u_i, sum_{i != j} u_i.u_j = |sum_i u_i|^2 -
    sum_i |u_i|^2, so no n x n matrix is built (n is 5000 for embedding tables).

    Args:
      vectors: [n, d], n >= 2.
    Returns:
      float in [-1, 1]; a zero vector counts as cosine 0 with everything.
    """
    vectors = np.asarray(vectors, np.float64)
    n = len(vectors)
    if n < 2:
        raise ValueError(f"mean_pairwise_cosine needs at least 2 vectors, got {n}.")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = vectors / np.maximum(norms, _NORM_FLOOR)
    total = unit.sum(axis=0)
    return float((total @ total - np.sum(unit * unit)) / (n * (n - 1)))


def token_cosine(hidden, input_mask):
    """Mean over examples of the mean pairwise cosine of that example's real tokens.

    Args:
      hidden: [B, S, H].
      input_mask: [B, S], 1 for real tokens (including [CLS] and [SEP]), 0 for padding.
    Returns:
      float; examples with fewer than 2 real tokens are left out.
    """
    values = [mean_pairwise_cosine(h[m.astype(bool)])
              for h, m in zip(np.asarray(hidden), np.asarray(input_mask)) if m.sum() >= 2]
    if not values:
        raise ValueError("token_cosine needs an example with at least 2 real tokens.")
    return float(np.mean(values))


def attention_entropy(probs):
    """Entropy in nats of each attention row.

    Args:
      probs: [B, N, S, S], rows summing to 1 over the last (key) axis.
    Returns:
      [B, N, S] float64; 0 log 0 counts as 0, so masked keys (probability exactly 0 in
      float32) do not contribute.
    """
    p = np.asarray(probs, np.float64)
    logs = np.log(np.where(p > 0, p, 1.0))
    return -np.sum(p * logs, axis=-1)


def cls_attention_entropy(probs):
    """Mean entropy of the attention from [CLS] (query position 0) over examples and heads.

    Args:
      probs: [B, N, S, S].
    Returns:
      float (nats).
    """
    return float(np.mean(attention_entropy(probs)[:, :, 0]))


def token_attention_entropy(probs, input_mask):
    """Mean entropy of the attention from every real query token, over heads and examples.

    Args:
      probs: [B, N, S, S].
      input_mask: [B, S]; padded query positions are left out.
    Returns:
      float (nats): each real token of each head weighs the same.
    """
    mask = np.asarray(input_mask, np.float64)[:, np.newaxis, :]  # [B, 1, S]
    entropy = attention_entropy(probs)  # [B, N, S]
    return float(np.sum(entropy * mask) / (np.sum(mask) * entropy.shape[1]))


def uniform_entropy(input_mask):
    """Entropies that uniform attention over the real keys would have, for reference.

    Args:
      input_mask: [B, S].
    Returns:
      (cls, tokens): mean over examples of log n_b (what cls_attention_entropy gives for
      uniform attention) and sum_b n_b log n_b / sum_b n_b (token_attention_entropy's
      weighting), with n_b the example's number of real tokens.
    """
    n = np.asarray(input_mask, np.float64).sum(axis=1)
    return float(np.mean(np.log(n))), float(np.sum(n * np.log(n)) / np.sum(n))


def cls_self_weight(probs):
    """Mean attention weight from [CLS] to itself, over examples and heads.

    Args:
      probs: [B, N, S, S].
    Returns:
      float in [0, 1].
    """
    return float(np.mean(np.asarray(probs)[:, :, 0, 0]))


def masked_mean(hidden, input_mask):
    """Mean over the real tokens of each example (mean pooling).

    Args:
      hidden: [B, S, H].
      input_mask: [B, S].
    Returns:
      [B, H] float64.
    """
    mask = np.asarray(input_mask, np.float64)[:, :, np.newaxis]  # [B, S, 1]
    return np.sum(np.asarray(hidden) * mask, axis=1) / np.maximum(mask.sum(axis=1), 1.0)


def bag_of_embeddings(word_embeddings, id_lists):
    """Mean word-embedding row of each example's word pieces (no [CLS]/[SEP]).

    Args:
      word_embeddings: [V, E].
      id_lists: B lists of token ids.
    Returns:
      [B, E] float64; an example without tokens gets zeros.
    """
    table = np.asarray(word_embeddings, np.float64)
    out = np.zeros((len(id_lists), table.shape[1]))
    for i, ids in enumerate(id_lists):
        if len(ids):
            out[i] = table[list(ids)].mean(axis=0)
    return out


def frequent_token_ids(id_lists, k, exclude=()):
    """The k most frequent token ids in id_lists, most frequent first (ties: lower id).

    Args:
      id_lists: lists of token ids.
      k: how many ids (fewer if there are fewer distinct ids).
      exclude: ids never returned (e.g. [UNK]).
    Returns:
      list of int.
    """
    skip = set(exclude)
    counts = collections.Counter(i for ids in id_lists for i in ids if i not in skip)
    return [i for i, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:k]]


def top_pc_variance_share(matrix, k=5):
    """Share of the total variance along the k leading principal components.

    Args:
      matrix: [n, d] (rows are samples); centred here.
      k: number of components.
    Returns:
      float in [0, 1]: k / min(n, d) for isotropic data, near 1 when a few directions
      dominate.
    """
    centred = np.asarray(matrix, np.float64) - np.mean(matrix, axis=0)
    singular = np.linalg.svd(centred, compute_uv=False)
    power = singular ** 2
    return float(np.sum(power[:k]) / np.sum(power))


def linear_probe(train_x, train_y, dev_x, dev_y, seed=0):
    """Dev accuracy of logistic regression on frozen features.

    Features are standardised with the training set's mean and std, so the probe's L2
    penalty (C = 1) treats features of very different scales (embedding rows vs
    LayerNorm outputs) alike.

    Args:
      train_x: [n_train, d]; train_y: [n_train] int labels.
      dev_x: [n_dev, d]; dev_y: [n_dev] int labels.
      seed: random_state of the solver.
    Returns:
      float: fraction of dev examples classified correctly.
    """
    train_x = np.asarray(train_x, np.float64)
    mean, std = train_x.mean(axis=0), train_x.std(axis=0) + _STD_FLOOR
    probe = LogisticRegression(C=1.0, max_iter=3000, random_state=seed)
    probe.fit((train_x - mean) / std, train_y)
    return float(probe.score((np.asarray(dev_x, np.float64) - mean) / std, dev_y))


def attention_probs(layer, x, mask_adder):
    """The attention distributions of one modeling.TransformerLayer, as its _attention.

    Args:
      layer: modeling.TransformerLayer.
      x: [B, S, H] float32, the layer's input.
      mask_adder: [B, 1, 1, S] from modeling.attention_mask_adder.
    Returns:
      [B, N, S, S] float32 tensor (no dropout).
    """
    n = layer.config.num_attention_heads
    d = layer.config.hidden_size // n
    batch, seq = tf.shape(x)[0], tf.shape(x)[1]
    q = tf.reshape(layer.query(x), [batch, seq, n, d])  # [B, S, N, D]
    k = tf.reshape(layer.key(x), [batch, seq, n, d])
    scores = tf.einsum("bqnd,bknd->bnqk", q, k) / math.sqrt(d)  # [B, N, S, S]
    return tf.nn.softmax(scores + mask_adder, axis=-1)


def encoder_trace(model, input_ids, input_mask, segment_ids):
    """Runs the encoder (no dropout, float32) keeping every layer's input and attention.

    Args:
      model: modeling.BertModel.
      input_ids, input_mask, segment_ids: [B, S] int arrays.
    Returns:
      EncoderTrace; hidden_states[-1] equals model(...).sequence_output.
    """
    x = model.embeddings(input_ids, segment_ids, training=False)
    if model.embeddings_project is not None:
        x = model.embeddings_project(x)  # [B, S, H]
    mask_adder = modeling.attention_mask_adder(input_mask)
    hidden, probs = [x.numpy()], []
    for layer in model.layers:
        probs.append(attention_probs(layer, x, mask_adder).numpy())
        x = layer(x, mask_adder, training=False)
        hidden.append(x.numpy())
    return EncoderTrace(hidden_states=hidden, attention_probs=probs)
