"""Bulk tokenization on tensorflow_text's FastBertTokenizer, id-identical to FullTokenizer.

FastBertTokenizer (a C++ LinMaxMatch WordPiece with BERT pre-tokenization) agrees with
the reference on whitespace/punctuation splitting, greedy longest-match-first and the
200-character [UNK] rule *for ASCII text*, but differs elsewhere:
  * it does not drop ASCII control characters (the reference deletes them, joining the
    characters around them: "a\\x01b" -> "ab"), and treats \\x0b, \\x0c, \\x1c-\\x1f as
    whitespace;
  * its length limit counts UTF-8 bytes, not characters;
  * its own lower-casing/NFD normaliser is not the reference's (Python `str.lower`).
So every ASCII line is cleaned and lower-cased here in Python (cheap C-level string
operations) and handed to FastBertTokenizer with its normaliser off, and every line that
is not pure ASCII (about 0.05% of the shared corpus) goes through the pure-Python
FullTokenizer instead. tests/test_fast_tokenization.py proves identity on every line of
the shared corpus, in both casings, and on every ASCII character in context.
"""

import gc

import numpy as np

from model.tokenization import ASCII_DELETE_CONTROL, FullTokenizer, convert_to_unicode

# Lines per FastBertTokenizer call: large enough that the per-call overhead vanishes,
# small enough to bound memory (~1 MB of text per batch on the shared corpus).
_BATCH_LINES = 8192


_TFTEXT = None  # the tensorflow_text module once imported, False if it is missing


def _import_tftext():
    """Returns the tensorflow_text module, or None if it cannot be imported."""
    global _TFTEXT  # pylint: disable=global-statement
    if _TFTEXT is None:
        try:
            import tensorflow_text  # pylint: disable=import-outside-toplevel
            _TFTEXT = tensorflow_text
        except ImportError:
            _TFTEXT = False
    return _TFTEXT or None


def available():
    """True if tensorflow_text can be imported, so FastTokenizer can be built."""
    return _import_tftext() is not None


def _fast_vocab(full):
    """The id-ordered token list for FastBertTokenizer, matching `full.vocab`'s ids.

    Ids are line numbers, so a line whose token reappears later (the later id wins),
    or whose token is empty or contains whitespace (never a whole word), is given a
    unique placeholder containing a control character: cleaned input never holds one,
    so the placeholder can never match.
    """
    size = max(full.inv_vocab) + 1
    tokens = []
    for index in range(size):
        token = full.inv_vocab.get(index)
        if token is None or len(token.split()) != 1:
            token = f"\x01unreachable{index}"
        tokens.append(token)
    return tokens


class FastTokenizer:
    """Batch tokenizer giving exactly FullTokenizer's ids, mostly in C++."""

    def __init__(self, vocab_file, do_lower_case=True, strip_accents=True):
        """Args: as FullTokenizer.

        Raises:
          VocabError: see model.tokenization.load_vocab.
          ImportError: tensorflow_text is not installed (check `available()` first and
            use FullTokenizer instead).
        """
        tftext = _import_tftext()
        if tftext is None:
            raise ImportError("FastTokenizer needs tensorflow_text: install the pinned "
                              "tensorflow-text from requirements-nodeps.txt with --no-deps, "
                              "or use model.tokenization.FullTokenizer.")
        import tensorflow as tf  # pylint: disable=import-outside-toplevel
        self._tf = tf
        self.full_tokenizer = FullTokenizer(vocab_file, do_lower_case, strip_accents)
        self.do_lower_case = do_lower_case
        self._tokenizer = tftext.FastBertTokenizer(
            vocab=_fast_vocab(self.full_tokenizer),
            # For ASCII bytes are characters: a word of over 200 becomes [UNK].
            max_bytes_per_word=self.full_tokenizer.wordpiece_tokenizer.max_input_chars_per_word,
            token_out_type=tf.int32,
            unknown_token=self.full_tokenizer.wordpiece_tokenizer.unk_token,
            lower_case_nfd_strip_accents=False)

    def _prepare_ascii(self, lines):
        """Cleans and lower-cases ASCII `lines` as the reference would.

        Returns:
          [len(lines)] tf.string tensor.
        """
        joined = "\n".join(lines)
        if joined.count("\n") != len(lines) - 1:  # some line holds a newline itself
            cleaned = [line.translate(ASCII_DELETE_CONTROL) for line in lines]
            return self._tf.constant([line.lower() for line in cleaned] if self.do_lower_case
                                     else cleaned)
        # Transform the batch as one string (ASCII translate/lower run at memory speed)
        # and split it in C++, making no per-line Python objects.
        joined = joined.translate(ASCII_DELETE_CONTROL)
        if self.do_lower_case:
            joined = joined.lower()
        return self._tf.strings.split(joined, "\n")

    def _tokenize_ascii(self, lines):
        """Returns (ids [total] int32, row_lengths [len(lines)] int64) for ASCII lines."""
        ids, lengths = [np.zeros(0, np.int32)], [np.zeros(0, np.int64)]
        for start in range(0, len(lines), _BATCH_LINES):
            batch = self._prepare_ascii(lines[start:start + _BATCH_LINES])
            ragged = self._tokenizer.tokenize(batch)
            ids.append(ragged.flat_values.numpy())
            lengths.append(ragged.row_lengths().numpy())
        return np.concatenate(ids), np.concatenate(lengths)

    def tokenize_to_arrays(self, lines):
        """Tokenizes `lines` into one flat id array with row splits.

        Args:
          lines: sequence of str or UTF-8 bytes, one text each (any length, may be empty).
        Returns:
          (ids [total_tokens] int32, row_splits [len(lines) + 1] int64): line i's ids are
          ids[row_splits[i]:row_splits[i + 1]].
        """
        texts = list(lines)
        if not set(map(type, texts)) <= {str}:
            texts = [convert_to_unicode(text) for text in texts]
        is_ascii = np.fromiter(map(str.isascii, texts), bool, len(texts))
        ascii_ids, ascii_lengths = self._tokenize_ascii(
            [texts[i] for i in np.flatnonzero(is_ascii).tolist()])
        other_ids = [np.asarray(self.full_tokenizer.text_to_ids(texts[i]), np.int32)
                     for i in np.flatnonzero(~is_ascii).tolist()]
        lengths = np.zeros(len(texts), np.int64)
        lengths[is_ascii] = ascii_lengths
        lengths[~is_ascii] = [len(ids) for ids in other_ids]
        row_splits = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        # Interleave the two paths' outputs in line order, one piece per run of ASCII
        # lines (non-ASCII lines are rare, so there are few runs).
        ascii_splits = np.concatenate([[0], np.cumsum(ascii_lengths)]).tolist()
        pieces, n_ascii, n_other = [np.zeros(0, np.int32)], 0, 0
        run_bounds = [0, *(np.flatnonzero(np.diff(is_ascii)) + 1).tolist(), len(texts)]
        if not texts:
            run_bounds = []
        for begin, end in zip(run_bounds[:-1], run_bounds[1:]):
            if is_ascii[begin]:
                pieces.append(ascii_ids[ascii_splits[n_ascii]:ascii_splits[n_ascii + end - begin]])
                n_ascii += end - begin
            else:
                pieces.extend(other_ids[n_other:n_other + end - begin])
                n_other += end - begin
        return np.concatenate(pieces), row_splits

    def tokenize_to_ids(self, lines):
        """Returns FullTokenizer.text_to_ids(line) for each line, as list[list[int]]."""
        flat, row_splits = self.tokenize_to_arrays(lines)
        # Building hundreds of thousands of lists would trigger the cyclic garbage
        # collector over and over (it tripled the time); lists of ints hold no cycles.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            flat = flat.tolist()
            bounds = row_splits.tolist()
            return [flat[bounds[i]:bounds[i + 1]] for i in range(len(bounds) - 1)]
        finally:
            if gc_was_enabled:
                gc.enable()

