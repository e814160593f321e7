"""In-graph featurisation for exported models: each task family's featurize, on ragged ids.

Pure tensors-in/tensors-out, so a SavedModel's serving function can pack raw text into
exactly the input_ids / input_mask / segment_ids the fine-tuning TFRecords held:
  * sentence (pair): classification_tasks.SingleOutputTask.featurize with
    truncate_seq_pair's "pop from the longer list, b on ties" in closed form;
  * QA: the first window of qa_featurize.QAFeaturizer ([CLS] question [SEP] doc [SEP]);
  * tagging: tagging_tasks.TaggingTask.featurize, its truncation quirk included.
tests/test_export_savedmodel.py compares every function with the Python featurizer.

Shape legend: B = batch, S = max_seq_length, W = words, P = pieces (ragged dims in
parentheses).
"""

from __future__ import annotations

import typing

import tensorflow as tf


class PackedInputs(typing.NamedTuple):
    """Encoder inputs, each [B, S] int32, zero-padded."""
    input_ids: tf.Tensor
    input_mask: tf.Tensor
    segment_ids: tf.Tensor


class QAWindow(typing.NamedTuple):
    """The first window of each QA example.

    inputs: PackedInputs.
    doc_offset: [B] int32, window position of the first document piece (len(q) + 2).
    doc_length: [B] int32, document pieces inside the window.
    truncated: [B] bool, the document had pieces beyond the window.
    """
    inputs: PackedInputs
    doc_offset: tf.Tensor
    doc_length: tf.Tensor
    truncated: tf.Tensor


class TaggingInputs(typing.NamedTuple):
    """inputs: PackedInputs; labeled_positions [B, S] int32 (first piece of each tagged
    word, 0-padded); num_tagged [B] int32 (words kept, a prefix of the sentence)."""
    inputs: PackedInputs
    labeled_positions: tf.Tensor
    num_tagged: tf.Tensor


def take_prefix(values: tf.RaggedTensor, lengths: tf.Tensor) -> tf.RaggedTensor:
    """The first lengths[b] items of each row of values [B, (N), ...].

    Built from flat indices: ragged broadcasting would cost seconds of tracing.
    """
    row_of = values.value_rowids()  # [items] int64
    position = (tf.range(tf.size(row_of, out_type=tf.int64))
                - tf.gather(values.row_starts(), row_of))  # index within its row
    lengths = tf.maximum(tf.cast(lengths, tf.int64), 0)
    keep = tf.where(position < tf.gather(lengths, row_of))[:, 0]
    return tf.RaggedTensor.from_row_lengths(tf.gather(values.values, keep),
                                            tf.minimum(values.row_lengths(), lengths),
                                            validate=False)


def pair_lengths(len_a: tf.Tensor, len_b: tf.Tensor, budget) -> tuple:
    """Lengths truncate_seq_pair leaves: pop from the longer list (b on ties) until the
    total fits `budget`.

    Closed form: if the shorter list fits in half the budget only the longer one is cut
    (to budget - shorter); otherwise both end at budget / 2, a keeping the odd piece
    (from equal lengths b pops first, then a, alternately).
    Args:
      len_a, len_b: [B] int32; budget: scalar.
    Returns:
      (new len_a, new len_b), [B] int32 each.
    """
    fits = len_a + len_b <= budget
    only_longer = 2 * tf.minimum(len_a, len_b) <= budget  # (never with equal lengths)
    a_longer = len_a > len_b
    cut_a = tf.where(a_longer, budget - len_b, len_a)
    cut_b = tf.where(a_longer, len_b, budget - len_a)
    new_a = tf.where(fits, len_a, tf.where(only_longer, cut_a, (budget + 1) // 2))
    new_b = tf.where(fits, len_b, tf.where(only_longer, cut_b, budget // 2))
    return new_a, new_b


def _column(value, batch, dtype=tf.int64) -> tf.RaggedTensor:
    """[B, (1)] ragged column holding `value` in every row."""
    return tf.RaggedTensor.from_tensor(tf.fill([batch, 1], tf.cast(value, dtype)))


def _to_inputs(ids: tf.RaggedTensor, segments: tf.RaggedTensor, max_seq_length: int):
    """Ragged ids/segments -> zero-padded PackedInputs of width max_seq_length."""
    shape = [None, max_seq_length]
    return PackedInputs(
        input_ids=tf.cast(ids.to_tensor(0, shape=shape), tf.int32),
        input_mask=tf.cast(tf.ones_like(ids).to_tensor(0, shape=shape), tf.int32),
        segment_ids=tf.cast(segments.to_tensor(0, shape=shape), tf.int32))


def pack_sentences(ids_a: tf.RaggedTensor, ids_b: tf.RaggedTensor | None,
                   max_seq_length: int, cls_id: int, sep_id: int) -> PackedInputs:
    """[CLS] a [SEP] (b [SEP]), as SingleOutputTask.featurize.

    Args:
      ids_a, ids_b: [B, (pieces)] int64; ids_b None for single-sentence tasks. A row
        of ids_b without pieces packs that example as a single sentence, as there.
    """
    batch = tf.shape(ids_a.row_lengths())[0]
    len_a = tf.cast(ids_a.row_lengths(), tf.int32)
    if ids_b is None:
        ids_b = tf.RaggedTensor.from_row_lengths(tf.zeros([0], tf.int64),
                                                 tf.zeros([batch], tf.int64))
    len_b = tf.cast(ids_b.row_lengths(), tf.int32)
    has_b = len_b > 0
    pair_a, pair_b = pair_lengths(len_a, len_b, max_seq_length - 3)  # [CLS] [SEP] [SEP]
    keep_a = tf.where(has_b, pair_a, tf.minimum(len_a, max_seq_length - 2))
    keep_b = tf.where(has_b, pair_b, 0)
    a, b = take_prefix(ids_a, keep_a), take_prefix(ids_b, keep_b)
    cls, sep = _column(cls_id, batch), _column(sep_id, batch)
    second_sep = take_prefix(sep, tf.cast(has_b, tf.int32))  # only for pairs
    ids = tf.concat([cls, a, sep, b, second_sep], axis=1)
    segments = tf.concat([tf.zeros_like(cls), tf.zeros_like(a), tf.zeros_like(sep),
                          tf.ones_like(b), tf.ones_like(second_sep)], axis=1)
    return _to_inputs(ids, segments, max_seq_length)


def pack_qa_window(query_ids: tf.RaggedTensor, doc_ids: tf.RaggedTensor,
                   max_seq_length: int, max_query_length: int, cls_id: int,
                   sep_id: int) -> QAWindow:
    """[CLS] q [SEP] doc[:room] [SEP]: window 0 of QAFeaturizer.featurize.

    Args:
      query_ids: [B, (Q)] question pieces (cut here to max_query_length).
      doc_ids: [B, (T)] document pieces.
      max_seq_length must be >= max_query_length + 4 (the export checks it), so the
        room for the document, max_seq_length - len(q) - 3, is at least 1.
    """
    batch = tf.shape(query_ids.row_lengths())[0]
    query = take_prefix(query_ids, tf.fill([batch], max_query_length))
    q_len = tf.cast(query.row_lengths(), tf.int32)
    room = max_seq_length - q_len - 3
    doc_len = tf.cast(doc_ids.row_lengths(), tf.int32)
    doc = take_prefix(doc_ids, tf.minimum(doc_len, room))
    cls, sep = _column(cls_id, batch), _column(sep_id, batch)
    ids = tf.concat([cls, query, sep, doc, sep], axis=1)
    segments = tf.concat([tf.zeros_like(cls), tf.zeros_like(query), tf.zeros_like(sep),
                          tf.ones_like(doc), tf.ones_like(sep)], axis=1)
    return QAWindow(inputs=_to_inputs(ids, segments, max_seq_length),
                    doc_offset=q_len + 2,
                    doc_length=tf.cast(doc.row_lengths(), tf.int32),
                    truncated=doc_len > room)


def pack_tagging(word_ids: tf.RaggedTensor, max_seq_length: int, cls_id: int,
                 sep_id: int, unk_id: int) -> TaggingInputs:
    """TaggingTask.featurize on [B, (W), (P)] word pieces.

    A word without pieces becomes [UNK]. Word k (first piece at start_k = 1 + pieces
    before it) is kept while every word up to it passes the original's check
    (#words + 2) + start_k + 1 <= S and fits, start_k + pieces_k <= S - 1; [CLS] itself
    fails the first check when #words + 3 > S, leaving only [SEP]. Kept words are
    followed by [SEP]; every token has segment id 1 (the original's quirk).
    """
    batch = tf.shape(word_ids.row_lengths())[0]
    no_pieces = tf.cast(tf.equal(word_ids.values.row_lengths(), 0), tf.int32)  # [N words]
    unk = take_prefix(_column(unk_id, tf.size(no_pieces)), no_pieces)  # [N, (0 or 1)]
    word_ids = word_ids.with_values(tf.concat([word_ids.values, unk], axis=1))
    lengths = tf.cast(word_ids.row_lengths(axis=2), tf.int32)  # [B, (W)]
    starts = lengths.with_flat_values(1 + _row_exclusive_cumsum(lengths))  # [B, (W)]
    n_entries = tf.cast(word_ids.row_lengths(), tf.int32) + 2  # [B] words + [CLS] [SEP]
    ok = ((starts + (n_entries + 1)[:, None] <= max_seq_length)
          & (starts + lengths <= max_seq_length - 1))  # [B, (W)]
    # Words are kept up to (excluding) the first that fails.
    positions = tf.ragged.range(tf.cast(ok.row_lengths(), tf.int32))
    first_fail = tf.reduce_min(
        positions.with_flat_values(tf.where(ok.flat_values, max_seq_length,
                                            positions.flat_values)), axis=1)
    cls_ok = n_entries + 1 <= max_seq_length  # [B]
    num_tagged = tf.where(cls_ok, tf.minimum(first_fail, n_entries - 2), 0)
    kept_pieces = take_prefix(word_ids, num_tagged).merge_dims(1, 2)  # [B, (T)]
    cls = take_prefix(_column(cls_id, batch), tf.cast(cls_ok, tf.int32))
    ids = tf.concat([cls, kept_pieces, _column(sep_id, batch)], axis=1)
    inputs = _to_inputs(ids, tf.ones_like(ids), max_seq_length)
    positions = take_prefix(starts, num_tagged).to_tensor(0, shape=[None, max_seq_length])
    return TaggingInputs(inputs, positions, num_tagged)


def _row_exclusive_cumsum(values: tf.RaggedTensor) -> tf.Tensor:
    """Flat values of the per-row exclusive cumulative sum of [B, (N)] ints."""
    flat = values.flat_values
    running = tf.cumsum(flat, exclusive=True)  # over the whole batch
    totals = tf.concat([running, tf.reduce_sum(flat, keepdims=True)], axis=0)
    row_offsets = tf.gather(totals, values.row_starts())  # [B] sum before each row
    return running - tf.gather(row_offsets, values.value_rowids())
