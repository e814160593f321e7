"""WordPiece tokenization, behaving exactly like BERT's / ELECTRA's reference tokenizer.

Spec d.3. The reference processes text in these steps, and so do we:

1. Decode bytes as UTF-8, silently dropping invalid sequences (`errors="ignore"`,
   the reference's `convert_to_unicode`; note it is *not* "replace").
2. Clean: drop NUL, U+FFFD and every control character (Unicode category C*, i.e.
   Cc/Cf/Cs/Co/Cn, ELECTRA's rule; tab/newline/CR are whitespace instead); map
   whitespace (space, tab, LF, CR, category Zs) to a space; put spaces around each CJK
   ideograph.
3. Split on whitespace (Python's `str.split`, which also splits on U+2028/U+2029, as the
   reference's `whitespace_tokenize` does).
4. Only if lower-casing: lower-case, then (only if `strip_accents`) NFD-normalise and drop
   combining marks (category Mn).
5. Split every punctuation character (ASCII 33-47, 58-64, 91-96, 123-126 or Unicode
   category P*) into its own token. There is no never-split list: "[SEP]" in text
   becomes "[", "sep", "]".
6. WordPiece: words over 200 characters become [UNK]; otherwise greedy longest match
   first from the left with "##" continuation pieces; a word with an unmatched
   remainder becomes a single [UNK].

For speed the per-token loops of the reference are replaced by whole-string C-level
operations (for ASCII text a control-character check, `str.lower` and one regex
`findall`; otherwise `str.translate` with lazily filled per-character tables, `str.lower`
and `unicodedata.normalize`), and WordPiece results are cached per word. Doing steps 4-5 on
the whole cleaned string rather than per whitespace token gives the same result because
the separators are plain spaces (or U+2028/9): they are neither cased nor case-ignorable
(so Greek final-sigma lower-casing sees the same context) and are canonical starters (so
NFD never reorders marks across them). tests/test_tokenization.py checks this against the
reference on the shared corpus and on every BMP code point.
"""

import collections
import itertools
import re
import unicodedata
from pathlib import Path

from util.cli import UserError

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

# Cap on cached distinct words; the cache is simply cleared when it fills (a corpus's
# word distribution is Zipfian, so it refills with the frequent words at once).
_WORD_CACHE_SIZE = 1 << 20

# Inclusive code point ranges that the reference treats as CJK ideographs.
_CJK_RANGES = (
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F),
)


# ASCII fast path of BasicTokenizer. The ASCII characters the reference deletes are the
# category Cc ones other than tab, LF and CR.
ASCII_CONTROL = "".join(chr(c) for c in [*range(0, 9), 11, 12, *range(14, 32), 127])
_ASCII_CONTROL_RE = re.compile("[" + re.escape(ASCII_CONTROL) + "]")
ASCII_DELETE_CONTROL = str.maketrans("", "", ASCII_CONTROL)
# Once control characters are gone, an ASCII word is a maximal run of characters that
# are neither whitespace nor punctuation (ASCII 33-47, 58-64, 91-96, 123-126), and each
# punctuation character is a word of its own.
_ASCII_WORD_RE = re.compile(r"[^\s!-/:-@\[-`{-~]+|[!-/:-@\[-`{-~]")


class VocabError(UserError):
    """The vocabulary file is missing, unreadable or lacks a special token.

    A util.cli.UserError (so also a ValueError): scripts print it as one line, exit 2.
    """


def _is_whitespace(char):
    """True for space, tab, LF, CR and Unicode category Zs."""
    return char in " \t\n\r" or unicodedata.category(char) == "Zs"


def _is_control(char):
    """True for Unicode category C* except tab, LF and CR (which count as whitespace)."""
    if char in "\t\n\r":
        return False
    return unicodedata.category(char).startswith("C")


def _is_punctuation(char):
    """True for every non-alphanumeric printable ASCII character and category P*."""
    cp = ord(char)
    # ASCII symbols such as "$", "^" and "`" are not Unicode punctuation, but the
    # reference splits them too.
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(char).startswith("P")


def _is_cjk(cp):
    """True if code point `cp` is in one of the reference's CJK ideograph blocks."""
    return any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


class _WordCache(dict):
    """Memo word -> tuple computed by `compute(word)` on first use, cleared when full.

    Being a dict, its C-level `__getitem__` can be mapped over a word list with no
    Python-level loop; only misses run Python code (`__missing__`).
    """

    def __init__(self, compute):
        super().__init__()
        self._compute = compute

    def __missing__(self, word):
        value = self._compute(word)
        if len(self) >= _WORD_CACHE_SIZE:
            self.clear()
        self[word] = value
        return value


class _CleanTable(dict):
    """`str.translate` table for step 2, filled lazily: code point -> "", " ", " c " or c."""

    def __missing__(self, cp):
        char = chr(cp)
        if cp == 0 or cp == 0xFFFD or _is_control(char):
            value = None  # deletion; None (not "") keeps str.translate's ASCII fast path
        elif _is_whitespace(char):
            value = " "
        elif _is_cjk(cp):
            value = " " + char + " "
        else:
            value = char
        self[cp] = value
        return value


class _PunctTable(dict):
    """`str.translate` table for step 5 (punctuation -> " p "), optionally dropping Mn."""

    def __init__(self, drop_marks):
        super().__init__()
        self._drop_marks = drop_marks

    def __missing__(self, cp):
        char = chr(cp)
        if _is_punctuation(char):
            value = " " + char + " "
        elif self._drop_marks and unicodedata.category(char) == "Mn":
            value = ""
        else:
            value = char
        self[cp] = value
        return value


# Module-level tables are pure functions of the code point (a memo, not configuration),
# so sharing them between tokenizers is safe.
_CLEAN = _CleanTable()
_PUNCT = _PunctTable(drop_marks=False)
_PUNCT_DROP_MARKS = _PunctTable(drop_marks=True)


def convert_to_unicode(text):
    """Returns `text` as str; bytes are decoded as UTF-8 dropping invalid sequences."""
    if isinstance(text, str):
        return text
    if isinstance(text, bytes):
        return text.decode("utf-8", "ignore")
    raise ValueError(f"Unsupported text type {type(text).__name__}: pass str or UTF-8 bytes.")


def load_vocab(vocab_file):
    """Reads a BERT-convention WordPiece vocab (one token per line).

    A token's id is its line number (0-based); tokens are stripped of surrounding
    whitespace; a token listed twice keeps the id of its last line, like the reference.

    Returns:
      OrderedDict token -> id, in first-appearance order.
    Raises:
      VocabError: the file is missing or not UTF-8, or lacks one of SPECIAL_TOKENS.
    """
    fix = ("Pass a BERT-convention WordPiece vocab.txt (one token per line, containing "
           f"{' '.join(SPECIAL_TOKENS)}), e.g. BERT's uncased vocab or one made by build_vocab.py.")
    path = Path(vocab_file)
    if not path.is_file():
        raise VocabError(f"Vocab file not found: {path}. {fix}")
    try:
        # The reference reads with tf GFile in text mode: lines end at "\n" only and
        # the file must be valid UTF-8.
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise VocabError(f"Vocab file {path} is not valid UTF-8 ({err}). {fix}") from None
    lines = text.split("\n")
    if lines[-1] == "":  # the newline ending the last line starts no new token
        lines.pop()
    vocab = collections.OrderedDict()
    for index, line in enumerate(lines):
        vocab[line.strip()] = index
    missing = [tok for tok in SPECIAL_TOKENS if tok not in vocab]
    if missing:
        raise VocabError(f"Vocab file {path} lacks the special token(s) {', '.join(missing)}"
                         f" (a SentencePiece-style vocab will not work). {fix}")
    return vocab


class BasicTokenizer:
    """Cleaning, CJK spacing, optional lower-casing/accent stripping, punctuation split."""

    def __init__(self, do_lower_case=True, strip_accents=True):
        """Args:
          do_lower_case: lower-case the text.
          strip_accents: with do_lower_case, NFD-normalise and drop combining marks.
            Ignored when do_lower_case is False (the reference never strips then).
        """
        self.do_lower_case = do_lower_case
        self.strip_accents = strip_accents
        self._punct = _PUNCT_DROP_MARKS if do_lower_case and strip_accents else _PUNCT

    def tokenize(self, text):
        """Returns the list of words (str) of `text` (str or UTF-8 bytes)."""
        text = convert_to_unicode(text)
        if text.isascii():  # most text: same steps, specialised to ASCII (2-3x faster)
            if _ASCII_CONTROL_RE.search(text):
                text = text.translate(ASCII_DELETE_CONTROL)
            return _ASCII_WORD_RE.findall(text.lower() if self.do_lower_case else text)
        text = text.translate(_CLEAN)
        if self.do_lower_case:
            text = text.lower()
            if self.strip_accents and not text.isascii():
                text = unicodedata.normalize("NFD", text)
        return text.translate(self._punct).split()


class WordpieceTokenizer:
    """Greedy longest-match-first WordPiece over a fixed vocab, cached per word."""

    def __init__(self, vocab, unk_token="[UNK]", max_input_chars_per_word=200):
        """Args:
          vocab: container of tokens (dict token -> id or a set).
          unk_token: token emitted for a word that cannot be fully matched.
          max_input_chars_per_word: longer words become `unk_token` outright.
        """
        self.vocab = vocab
        self.unk_token = unk_token
        self.max_input_chars_per_word = max_input_chars_per_word
        # No vocab entry is longer than these, so longer candidates need no look-up;
        # this only skips failing look-ups and never changes the result.
        self._max_head = max((len(t) for t in vocab if not t.startswith("##")), default=0)
        self._max_tail = max((len(t) - 2 for t in vocab if t.startswith("##")), default=0)
        # tokenize_word(word) -> tuple of pieces, memoised.
        self.tokenize_word = _WordCache(self._split).__getitem__

    def tokenize(self, text):
        """Returns the word pieces (list of str) of whitespace-separated words in `text`."""
        words = convert_to_unicode(text).split()
        return list(itertools.chain.from_iterable(map(self.tokenize_word, words)))

    def _split(self, word):
        """Uncached greedy longest-match-first split of `word`."""
        n = len(word)
        if n > self.max_input_chars_per_word:
            return (self.unk_token,)
        vocab = self.vocab
        pieces = []
        start = 0
        while start < n:
            if start == 0:
                end = min(n, self._max_head)
                while end > 0 and word[:end] not in vocab:
                    end -= 1
                piece = word[:end]
            else:
                end = min(n, start + self._max_tail)
                while end > start and "##" + word[start:end] not in vocab:
                    end -= 1
                piece = "##" + word[start:end]
            if end == start:  # nothing matched here: the whole word is unknown
                return (self.unk_token,)
            pieces.append(piece)
            start = end
        return tuple(pieces)


class FullTokenizer:
    """End-to-end tokenizer: BasicTokenizer then WordpieceTokenizer (spec d.3)."""

    def __init__(self, vocab_file, do_lower_case=True, strip_accents=True):
        """Args:
          vocab_file: path of a BERT-convention vocab.txt (see load_vocab).
          do_lower_case: lower-case input (True for the released uncased models).
          strip_accents: with do_lower_case, remove accents.
        Raises:
          VocabError: see load_vocab.
        """
        self.vocab = load_vocab(vocab_file)
        self.inv_vocab = {v: k for k, v in self.vocab.items()}
        self.basic_tokenizer = BasicTokenizer(do_lower_case, strip_accents)
        self.wordpiece_tokenizer = WordpieceTokenizer(vocab=self.vocab)
        # word -> tuple of ids, memoised (the hot path of text_to_ids).
        self._word_ids = _WordCache(self._compute_word_ids).__getitem__

    def _compute_word_ids(self, word):
        return tuple(self.vocab[p] for p in self.wordpiece_tokenizer.tokenize_word(word))

    def tokenize(self, text):
        """Returns the word pieces (list of str) of `text` (str or UTF-8 bytes)."""
        words = self.basic_tokenizer.tokenize(text)
        return list(itertools.chain.from_iterable(
            map(self.wordpiece_tokenizer.tokenize_word, words)))

    def text_to_ids(self, text):
        """Returns the ids of tokenize(text) as a list of int (faster than two calls)."""
        # map/chain over memoised per-word tuples: no Python-level loop per word.
        return list(itertools.chain.from_iterable(
            map(self._word_ids, self.basic_tokenizer.tokenize(text))))

    def convert_tokens_to_ids(self, tokens):
        """Maps tokens to ids; an unknown token raises KeyError (as the reference)."""
        vocab = self.vocab
        return [vocab[t] for t in tokens]

    def convert_ids_to_tokens(self, ids):
        """Maps ids to tokens; an unknown id raises KeyError (as the reference)."""
        inv_vocab = self.inv_vocab
        return [inv_vocab[i] for i in ids]
