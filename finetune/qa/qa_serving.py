"""In-graph answer decoding of exported QA models (one window per question).

qa_decoding.decode_example, restricted to the first window: the same candidates (the
head's beam with joint_prediction, else the top n_best_size start and end logits), the
same filter (start and end on document pieces inside the window, end >= start, length
<= max_answer_length; in one window every piece has max context), the same order (the
best start + end score, the first candidate on ties, as the stable sort there) and the
same text (wordpieces detokenised, then get_final_text's character alignment with the
original words). Differences, documented in the README: a document longer than the
window is cut (the runner slides windows over it), and a question without any valid
span gets "" where the runner writes its nonce "empty".

Shape legend: B = batch, S = max_seq_length, K = candidates per side, W = words.
"""

from __future__ import annotations

import typing

import tensorflow as tf

# Score of invalid candidates: below any real log-prob or logit sum.
_INVALID = -1e30


class BestSpan(typing.NamedTuple):
    """found [B] bool; start, end [B] int32 window positions; score [B] float64
    (start + end score); start_score [B] float64 (its start part)."""
    found: tf.Tensor
    start: tf.Tensor
    end: tf.Tensor
    score: tf.Tensor


def candidate_pairs(outputs: dict, joint_prediction: bool, n_best_size: int) -> tuple:
    """(starts [B, C], ends [B, C] int32, start scores, end scores [B, C] float64) in
    qa_decoding._pairs order."""
    if joint_prediction:
        k = tf.shape(outputs["start_top_index"])[1]
        starts = tf.repeat(outputs["start_top_index"], k, axis=1)  # [B, K*K], i-major
        start_scores = tf.repeat(outputs["start_top_log_probs"], k, axis=1)
        ends = tf.reshape(outputs["end_top_index"], [tf.shape(starts)[0], -1])
        end_scores = tf.reshape(outputs["end_top_log_probs"], tf.shape(ends))
    else:
        k = tf.minimum(n_best_size, tf.shape(outputs["start_logits"])[1])
        top_starts = tf.math.top_k(outputs["start_logits"], k)  # lower index first on ties
        top_ends = tf.math.top_k(outputs["end_logits"], k)
        n = tf.shape(top_starts.indices)[1]
        starts = tf.repeat(top_starts.indices, n, axis=1)
        start_scores = tf.repeat(top_starts.values, n, axis=1)
        ends = tf.tile(top_ends.indices, [1, n])
        end_scores = tf.tile(top_ends.values, [1, n])
    # The runner adds Python floats: float64 sums keep its order on near-ties.
    return (tf.cast(starts, tf.int32), tf.cast(ends, tf.int32),
            tf.cast(start_scores, tf.float64), tf.cast(end_scores, tf.float64))


def best_span(outputs: dict, doc_offset: tf.Tensor, doc_length: tf.Tensor,
              max_answer_length: int, joint_prediction: bool,
              n_best_size: int) -> BestSpan:
    """The best valid candidate of each window.

    Args:
      outputs: the QA head's outputs (qa_head.QAHead), [B, ...].
      doc_offset, doc_length: [B] int32, where the window's document pieces are.
    """
    starts, ends, start_scores, end_scores = candidate_pairs(outputs, joint_prediction,
                                                             n_best_size)
    first, last = doc_offset[:, None], (doc_offset + doc_length)[:, None]
    valid = ((starts >= first) & (starts < last) & (ends >= first) & (ends < last)
             & (ends >= starts) & (ends - starts + 1 <= max_answer_length))
    scores = tf.where(valid, start_scores + end_scores, _INVALID)
    best = tf.argmax(scores, axis=1, output_type=tf.int32)  # first maximum
    found = tf.reduce_any(valid, axis=1)
    return BestSpan(found=found, start=tf.gather(starts, best, batch_dims=1),
                    end=tf.gather(ends, best, batch_dims=1),
                    score=tf.gather(scores, best, batch_dims=1))


def null_score(outputs: dict, span: BestSpan, answerable_classifier: bool) -> tf.Tensor:
    """SQuAD 2.0 null odds of one window [B] float64, as qa_decoding.decode_example."""
    if answerable_classifier:
        return tf.cast(outputs["answerable_logit"], tf.float64)
    window_null = tf.cast(outputs["start_logits"][:, 0] + outputs["end_logits"][:, 0],
                          tf.float64)
    return window_null - tf.where(span.found, span.score, 0.0)


def detokenize(tokens: tf.RaggedTensor) -> tf.Tensor:
    """qa_decoding.detokenize of each row: [B, (pieces)] strings -> [B]."""
    text = tf.strings.reduce_join(tokens, axis=1, separator=" ")
    text = tf.strings.regex_replace(text, " ##", "")
    return tf.strings.regex_replace(text, "##", "")


def span_words(words: tf.RaggedTensor, first: tf.Tensor, last: tf.Tensor) -> tf.Tensor:
    """" ".join(words[first:last + 1]) per row: [B, (W)] strings, [B] -> [B] strings."""
    positions = tf.ragged.range(tf.cast(words.row_lengths(), tf.int32))
    keep = (positions >= first[:, None]) & (positions <= last[:, None])
    return tf.strings.reduce_join(tf.ragged.boolean_mask(words, keep), axis=1,
                                  separator=" ")


def final_text(pred_text: tf.Tensor, orig_text: tf.Tensor, basic_tokenize) -> tf.Tensor:
    """qa_decoding.get_final_text for one example (scalar strings).

    Args:
      basic_tokenize: [N] strings -> [N, (words)] (GraphTokenizer.basic_tokenize).
    """
    tok_text = tf.strings.reduce_join(basic_tokenize(orig_text[None])[0], separator=" ")
    parts = tf.strings.split(tok_text, sep=pred_text, maxsplit=1)
    found = (tf.size(parts) == 2) & (tf.strings.length(pred_text) > 0)
    start = tf.strings.length(parts[0], unit="UTF8_CHAR")
    end = start + tf.strings.length(pred_text, unit="UTF8_CHAR") - 1
    orig_chars = tf.strings.unicode_decode(orig_text, "UTF-8")
    tok_chars = tf.strings.unicode_decode(tok_text, "UTF-8")
    orig_ns = tf.cast(tf.where(orig_chars != 32)[:, 0], tf.int32)  # non-space positions
    tok_is_ns = tok_chars != 32
    same_length = tf.size(orig_ns) == tf.reduce_sum(tf.cast(tok_is_ns, tf.int32))
    # Padded by one entry so the look-ups below stay in range; `ok` rejects those cases.
    tok_is_ns = tf.concat([tok_is_ns, [False]], axis=0)
    ns_before = tf.cumsum(tf.cast(tok_is_ns, tf.int32), exclusive=True)
    orig_ns = tf.concat([orig_ns, [0]], axis=0)
    last = tf.size(tok_chars)
    safe_start, safe_end = tf.clip_by_value(start, 0, last), tf.clip_by_value(end, 0, last)
    # A boundary on a space has no non-space index (the runner's dict lookup fails).
    on_chars = tf.gather(tok_is_ns, safe_start) & tf.gather(tok_is_ns, safe_end)
    top = tf.size(orig_ns) - 1
    orig_start = tf.gather(orig_ns, tf.minimum(tf.gather(ns_before, safe_start), top))
    orig_end = tf.gather(orig_ns, tf.minimum(tf.gather(ns_before, safe_end), top))
    ok = found & same_length & on_chars
    return tf.cond(ok, lambda: tf.strings.substr(orig_text, orig_start,
                                                  orig_end - orig_start + 1,
                                                  unit="UTF8_CHAR"),
                   lambda: orig_text)
