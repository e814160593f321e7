"""Sliding-window featurisation of QA examples (spec e.2).

Layout of every window: [CLS] question [SEP] (segment 0) doc-window [SEP] (segment 1),
zero-padded to max_seq_length. The question is cut to max_query_length wordpieces;
windows over the document's wordpieces start at 0 and advance by
min(window length, doc_stride). A document token seen by several windows is "max
context" in the window maximising min(left context, right context) + 0.01 * window
length. Training targets point at the answer's wordpieces when the whole answer is
inside the window, else (and for impossible questions) at [CLS] (0). A window's id is
1000 * example eid + window index.
"""

import dataclasses

from util.cli import UserError

# Feature ids pack the window index into the last three decimal digits.
MAX_WINDOWS_PER_EXAMPLE = 1000


class FeaturizeError(UserError):
    """QA featurisation settings (doc_stride, max_query_length, max_seq_length) cannot
    produce a valid window; the message names the setting to change."""


@dataclasses.dataclass(frozen=True)
class DocSpan:
    """A window over the document's wordpieces: [start, start + length)."""
    start: int
    length: int


@dataclasses.dataclass(frozen=True)
class TokenizedDoc:
    """A document's wordpieces with the maps to and from its whitespace words.

    Attributes:
      tokens: wordpieces of the whole document.
      tok_to_orig: tok_to_orig[i] = index of the word wordpiece i came from.
      orig_to_tok: orig_to_tok[w] = index of word w's first wordpiece (for a word
        that yields no wordpiece, the index of the next word's first one).
    """
    tokens: tuple
    tok_to_orig: tuple
    orig_to_tok: tuple


@dataclasses.dataclass(frozen=True)
class QAFeature:
    """One window of one example.

    Attributes:
      feature_id: 1000 * example eid + doc_span_index.
      example_eid: eid of the example.
      doc_span_index: index of the window within the example.
      tokens: the window's tokens ([CLS] q [SEP] doc [SEP], no padding).
      token_to_orig_map: {window position: doc word index} for document tokens.
      token_is_max_context: {window position: bool} for document tokens.
      input_ids / input_mask / segment_ids: [max_seq_length] ints.
      start_position / end_position: training targets (0 = [CLS]); None at inference.
      is_impossible: the example's unanswerable flag.
    """
    feature_id: int
    example_eid: int
    doc_span_index: int
    tokens: tuple
    token_to_orig_map: dict
    token_is_max_context: dict
    input_ids: list
    input_mask: list
    segment_ids: list
    start_position: object = None
    end_position: object = None
    is_impossible: bool = False


def tokenize_document(doc_words, tokenizer):
    """Wordpiece-tokenises each whitespace word separately and keeps both maps."""
    tokens, tok_to_orig, orig_to_tok = [], [], []
    for word_index, word in enumerate(doc_words):
        orig_to_tok.append(len(tokens))
        for piece in tokenizer.tokenize(word):
            tok_to_orig.append(word_index)
            tokens.append(piece)
    return TokenizedDoc(tuple(tokens), tuple(tok_to_orig), tuple(orig_to_tok))


def improve_answer_span(doc_tokens, input_start, input_end, tokenizer, answer_text):
    """Returns the tightest wordpiece span inside [input_start, input_end] whose tokens
    equal the tokenised answer, else the input span.

    Character annotations project onto whole words: for the answer "1895" in
    "(1895-1943)." the word span covers all of "( 1895 - 1943 ) .", while the
    wordpiece "1895" alone matches the answer exactly. Search order (earliest start,
    then longest end) follows the original.
    """
    tok_answer_text = " ".join(tokenizer.tokenize(answer_text))
    for new_start in range(input_start, input_end + 1):
        for new_end in range(input_end, new_start - 1, -1):
            if " ".join(doc_tokens[new_start:new_end + 1]) == tok_answer_text:
                return new_start, new_end
    return input_start, input_end


def answer_token_span(example, doc, tokenizer):
    """Training answer as (start, end) wordpiece indices; (-1, -1) if impossible."""
    if example.is_impossible:
        return -1, -1
    tok_start = doc.orig_to_tok[example.start_position]
    if example.end_position < len(example.doc_tokens) - 1:
        tok_end = doc.orig_to_tok[example.end_position + 1] - 1
    else:
        tok_end = len(doc.tokens) - 1
    return improve_answer_span(doc.tokens, tok_start, tok_end, tokenizer,
                               example.orig_answer_text)


def make_doc_spans(num_tokens, max_tokens_for_doc, doc_stride):
    """Windows of at most max_tokens_for_doc tokens; the next starts
    min(length, doc_stride) later; the last one reaches the document's end."""
    spans, start = [], 0
    while start < num_tokens:
        length = min(num_tokens - start, max_tokens_for_doc)
        spans.append(DocSpan(start, length))
        if start + length == num_tokens:
            break
        start += min(length, doc_stride)
    return spans


def max_context_span(doc_spans, position):
    """Index of the window where token `position` has the most context.

    Score = min(left context, right context) + 0.01 * window length; the first
    window wins ties. Returns None if no window holds the position.
    """
    best_score, best_index = None, None
    for index, span in enumerate(doc_spans):
        end = span.start + span.length - 1
        if position < span.start or position > end:
            continue
        score = min(position - span.start, end - position) + 0.01 * span.length
        if best_score is None or score > best_score:
            best_score, best_index = score, index
    return best_index


def window_targets(span, answer_span, doc_offset, is_impossible):
    """Training (start, end) in window coordinates; (0, 0) = [CLS] when the answer is
    impossible or not wholly inside the window."""
    tok_start, tok_end = answer_span
    if is_impossible or tok_start < span.start or tok_end > span.start + span.length - 1:
        return 0, 0
    return tok_start - span.start + doc_offset, tok_end - span.start + doc_offset


class QAFeaturizer:
    """Turns QAExamples into QAFeatures with fixed settings.

    Args:
      tokenizer: model.tokenization.FullTokenizer (tokenize, convert_tokens_to_ids).
      max_seq_length: window length in tokens, including [CLS] and two [SEP].
      max_query_length: question wordpieces kept (the rest is cut).
      doc_stride: maximum step between window starts.
    """

    def __init__(self, tokenizer, max_seq_length, max_query_length=64, doc_stride=128):
        if doc_stride < 1:
            raise FeaturizeError("doc_stride must be >= 1, got %d." % doc_stride)
        if max_query_length < 1:
            raise FeaturizeError("max_query_length must be >= 1, got %d." % max_query_length)
        self.tokenizer = tokenizer
        self.max_seq_length = max_seq_length
        self.max_query_length = max_query_length
        self.doc_stride = doc_stride
        # Examples of one paragraph share their doc_tokens tuple; tokenise it once.
        self._cached_words = None
        self._cached_doc = None

    def _document(self, words):
        if words is not self._cached_words:
            self._cached_words = words
            self._cached_doc = tokenize_document(words, self.tokenizer)
        return self._cached_doc

    def featurize(self, example, is_training):
        """All windows of one example.

        Args:
          example: qa_data.QAExample (training fields needed if is_training).
          is_training: fill start/end targets.
        Returns:
          list of QAFeature (empty for an empty document).
        """
        query = self.tokenizer.tokenize(example.question_text)[:self.max_query_length]
        doc = self._document(example.doc_tokens)
        # The 3 accounts for [CLS] and the two [SEP].
        max_tokens_for_doc = self.max_seq_length - len(query) - 3
        if max_tokens_for_doc < 1:
            raise FeaturizeError(
                "max_seq_length %d leaves no room for the document after a question of "
                "%d wordpieces; use max_seq_length >= max_query_length + 4 (%d)." % (
                    self.max_seq_length, len(query), self.max_query_length + 4))
        spans = make_doc_spans(len(doc.tokens), max_tokens_for_doc, self.doc_stride)
        if len(spans) > MAX_WINDOWS_PER_EXAMPLE:
            raise FeaturizeError(
                "example %r needs %d windows, more than the %d that feature ids can "
                "encode; raise doc_stride or max_seq_length." % (
                    example.example_id, len(spans), MAX_WINDOWS_PER_EXAMPLE))
        answer_span = answer_token_span(example, doc, self.tokenizer) if is_training else None
        return [self._window(example, doc, query, spans, index, answer_span)
                for index in range(len(spans))]

    def _window(self, example, doc, query, spans, index, answer_span):
        """Builds window `index`; answer_span is None at inference."""
        span = spans[index]
        tokens = ["[CLS]"] + list(query) + ["[SEP]"]
        segment_ids = [0] * len(tokens)
        doc_offset = len(tokens)
        token_to_orig_map, token_is_max_context = {}, {}
        for i in range(span.length):
            position = span.start + i
            token_to_orig_map[len(tokens)] = doc.tok_to_orig[position]
            token_is_max_context[len(tokens)] = max_context_span(spans, position) == index
            tokens.append(doc.tokens[position])
        tokens.append("[SEP]")
        segment_ids += [1] * (span.length + 1)
        input_ids = self.tokenizer.convert_tokens_to_ids(tokens)
        padding = [0] * (self.max_seq_length - len(input_ids))
        start = end = None
        if answer_span is not None:
            start, end = window_targets(span, answer_span, doc_offset, example.is_impossible)
        return QAFeature(
            feature_id=MAX_WINDOWS_PER_EXAMPLE * example.eid + index,
            example_eid=example.eid, doc_span_index=index, tokens=tuple(tokens),
            token_to_orig_map=token_to_orig_map,
            token_is_max_context=token_is_max_context,
            input_ids=input_ids + padding, input_mask=[1] * len(input_ids) + padding,
            segment_ids=segment_ids + padding, start_position=start, end_position=end,
            is_impossible=example.is_impossible)
