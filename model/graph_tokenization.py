"""In-graph WordPiece tokenization (TensorFlow + tensorflow_text ops), id-identical to
model/tokenization.py's FullTokenizer, for SavedModels that take raw text.

The steps are FullTokenizer's (see its module docstring), each a whole-batch string op:
drop invalid UTF-8 (unicode_transcode errors="ignore", Python's errors="ignore"),
delete control characters, map whitespace to spaces, space out CJK ideographs, then
(lower-casing only) ICU lower-casing (tf.strings.lower, Python's str.lower agrees on
every code point this Python knows), NFD and deletion of combining marks (Mn), then
spacing out punctuation, splitting on spaces, the 200-character [UNK] rule and
tensorflow_text's greedy longest-match-first WordpieceTokenizer.

The character classes are NOT RE2's \\p{...} tables: RE2 and ICU ship a newer Unicode
than Python's unicodedata, so a code point unassigned for Python (a control character,
deleted) can be a letter for RE2 (kept, giving [UNK]). The classes are therefore built
here from this Python's unicodedata and baked into the graph as explicit code point
ranges: the exported tokenizer equals the Python tokenizer that featurised the training
data, code point for code point (tests/test_export_savedmodel.py checks every BMP code
point and the planes beyond).
"""

from __future__ import annotations

import functools
import sys
import unicodedata

import tensorflow as tf
import tensorflow_text as tf_text

from model import tokenization

# Surrogates never survive UTF-8 decoding, and RE2 rejects them in a class.
_SURROGATES = range(0xD800, 0xE000)
# Characters split into words by QA's qa_data.split_context (the original's set).
QA_WHITESPACE = " \t\r\n\u202f"
# Words of up to 200 characters have at most 800 UTF-8 bytes; longer words were already
# replaced by [UNK] (the reference counts characters, tensorflow_text counts bytes).
_MAX_BYTES_PER_WORD = 4 * 200 + 4


def _char_class(code_points) -> str:
    """An RE2 character class "[...]" of the (sorted) code points."""
    ranges = []
    for cp in code_points:
        if ranges and cp == ranges[-1][1] + 1:
            ranges[-1][1] = cp
        else:
            ranges.append([cp, cp])
    body = "".join(f"\\x{{{lo:X}}}" if lo == hi else f"\\x{{{lo:X}}}-\\x{{{hi:X}}}"
                   for lo, hi in ranges)
    return f"[{body}]"


def _deleted(cp: int) -> bool:
    """BasicTokenizer's cleaning deletes NUL, U+FFFD and control characters."""
    return cp == 0 or cp == 0xFFFD or tokenization._is_control(chr(cp))


def _space(cp: int) -> bool:
    """Cleaned to a space, or a separator of Python's str.split that survives cleaning
    (U+2028/U+2029): both end words and neither is cased, punctuation or a mark, so
    turning them into spaces first changes nothing else."""
    char = chr(cp)
    return not _deleted(cp) and (tokenization._is_whitespace(char) or char.isspace())


@functools.lru_cache(maxsize=None)
def character_classes() -> dict:
    """{"delete", "space", "cjk", "mark", "punct", "split"}: RE2 classes from this Python.

    "split" is Python's str.isspace() set (how a tagging sentence is cut into words).
    """
    predicates = {
        "delete": _deleted,
        "space": _space,
        "cjk": tokenization._is_cjk,
        "mark": lambda cp: unicodedata.category(chr(cp)) == "Mn",
        "punct": lambda cp: tokenization._is_punctuation(chr(cp)),
        "split": lambda cp: chr(cp).isspace(),
    }
    members = {name: [] for name in predicates}
    for cp in range(sys.maxunicode + 1):
        if cp in _SURROGATES:
            continue
        if unicodedata.category(chr(cp)) == "Cn":  # unassigned: only ever deleted
            members["delete"].append(cp)
            continue
        for name, predicate in predicates.items():
            if predicate(cp):
                members[name].append(cp)
    return {name: _char_class(cps) for name, cps in members.items()}


class GraphTokenizer(tf.Module):
    """BasicTokenizer + WordpieceTokenizer as TensorFlow ops over a fixed vocab.

    Args:
      vocab: token -> id mapping as model.tokenization.load_vocab returns it (a token
        listed twice keeps its last id, as there).
      do_lower_case, strip_accents: as FullTokenizer.
      unk_token: the token of unknown words.
      max_input_chars_per_word: longer words become unk_token.
    """

    def __init__(self, vocab, do_lower_case=True, strip_accents=True, unk_token="[UNK]",
                 max_input_chars_per_word=200):
        super().__init__(name="graph_tokenizer")
        self.do_lower_case = do_lower_case
        self.strip_accents = do_lower_case and strip_accents
        self.unk_token = unk_token
        self.max_input_chars_per_word = max_input_chars_per_word
        self.classes = character_classes()
        tokens = list(vocab)
        self.table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(tokens), tf.constant([vocab[t] for t in tokens], tf.int64)),
            default_value=-1)
        inverse = [""] * (max(vocab.values()) + 1)
        for token, index in vocab.items():
            inverse[index] = token
        self.id_tokens = tf.constant(inverse)  # [V] id -> token ("" for unused ids)
        self._wordpiece = tf_text.WordpieceTokenizer(
            self.table, suffix_indicator="##", max_bytes_per_word=_MAX_BYTES_PER_WORD,
            token_out_type=tf.int64, unknown_token=unk_token)

    def clean(self, texts: tf.Tensor) -> tf.Tensor:
        """Steps 1-5 of FullTokenizer up to (excluding) the split: [N] -> [N] strings."""
        c = self.classes
        texts = tf.strings.unicode_transcode(texts, "UTF-8", "UTF-8", errors="ignore")
        texts = tf.strings.regex_replace(texts, c["delete"], "")
        texts = tf.strings.regex_replace(texts, c["space"], " ")
        texts = tf.strings.regex_replace(texts, f"({c['cjk']})", r" \1 ")
        if self.do_lower_case:
            texts = tf.strings.lower(texts, encoding="utf-8")
            if self.strip_accents:
                texts = tf_text.normalize_utf8(texts, "NFD")
                texts = tf.strings.regex_replace(texts, c["mark"], "")
        return tf.strings.regex_replace(texts, f"({c['punct']})", r" \1 ")

    def basic_tokenize(self, texts: tf.Tensor) -> tf.RaggedTensor:
        """BasicTokenizer.tokenize of each text: [N] strings -> [N, (words)] strings."""
        return tf.strings.split(self.clean(texts))

    def _word_ids(self, words: tf.RaggedTensor) -> tf.RaggedTensor:
        """[N, (words)] basic words -> [N, (pieces)] int64 ids."""
        too_long = tf.strings.length(words.flat_values, unit="UTF8_CHAR") > \
            self.max_input_chars_per_word
        # "[UNK]" cannot be a basic word (its brackets are split off), so this
        # placeholder only ever matches the vocab's unknown token.
        flat = tf.where(too_long, self.unk_token, words.flat_values)
        pieces = self._wordpiece.tokenize(words.with_flat_values(flat))  # [N, W, P]
        return pieces.merge_dims(1, 2)

    def tokenize(self, texts: tf.Tensor) -> tf.RaggedTensor:
        """FullTokenizer.text_to_ids of each text: [N] strings -> [N, (pieces)] int64."""
        return self._word_ids(self.basic_tokenize(texts))

    def tokenize_words(self, words: tf.RaggedTensor) -> tf.RaggedTensor:
        """Each word tokenised on its own: [B, (W)] strings -> [B, (W), (P)] int64 ids."""
        per_word = self.tokenize(words.flat_values)  # [N words, (P)]
        return tf.RaggedTensor.from_row_splits(per_word, words.row_splits, validate=False)

    def ids_to_tokens(self, ids: tf.Tensor) -> tf.Tensor:
        """Token strings of ids (any shape)."""
        return tf.gather(self.id_tokens, ids)


def split_words(texts: tf.Tensor, separators: str | None = None) -> tf.RaggedTensor:
    """[B] strings -> [B, (words)]: cut at runs of `separators` (a string of characters),
    or at Python's str.split() whitespace when None; no empty words."""
    if separators is None:
        pattern = character_classes()["split"] + "+"
    else:
        pattern = "[" + "".join(f"\\x{{{ord(ch):X}}}" for ch in separators) + "]+"
    return tf_text.regex_split(texts, pattern)
