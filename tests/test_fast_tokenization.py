"""Tests for model/fast_tokenization.py: ids identical to FullTokenizer on all the corpus."""

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

from model import fast_tokenization
from model.tokenization import FullTokenizer, VocabError

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
VOCAB = DATA / "vocab" / "vocab.txt"
CORPUS = sorted((DATA / "corpus").glob("*.txt"))

pytestmark = pytest.mark.skipif(not fast_tokenization.available(),
                                reason="tensorflow_text is not installed")
needs_data = pytest.mark.skipif(not VOCAB.is_file() or not CORPUS,
                                reason=f"shared data (vocab, corpus) not found under {DATA}")

EDGE_LINES = [
    "", "Hello, World!", "a\x01b\x7fc\x0bd\x0ce\x1cf", "[SEP] [sep] [UNK]",
    "x" * 200, "x" * 201,
    "tab\tcr\rnewline\ninside", "Naïve café", "   ", "中文 mixed ascii", "$5^2`~|<>=+#@%&*",
    "don't STOP", "UPPER lower MiXeD", "\x00", "emoji 😀", b"bytes \xc3\xa9 \xff ok", b"plain bytes",
    "ends with newline\n", "\n\n",
]


def count_fallbacks(fast):
    """Wraps fast.full_tokenizer.text_to_ids to count the lines sent to the pure path."""
    calls = []
    inner = fast.full_tokenizer.text_to_ids

    def counting(text):
        calls.append(text)
        return inner(text)
    fast.full_tokenizer.text_to_ids = counting
    return calls


def test_available_is_bool():
    assert fast_tokenization.available() is True


@needs_data
@pytest.mark.parametrize("lower,strip", [(True, True), (False, True), (True, False)])
def test_edge_lines_match_full_tokenizer(lower, strip):
    fast = fast_tokenization.FastTokenizer(VOCAB, lower, strip)
    full = FullTokenizer(VOCAB, lower, strip)
    expected = [full.text_to_ids(line) for line in EDGE_LINES]
    assert fast.tokenize_to_ids(EDGE_LINES) == expected
    # Line order must survive any mix of fast-path and fallback lines.
    for start in range(len(EDGE_LINES)):
        assert fast.tokenize_to_ids(EDGE_LINES[start:start + 3]) == expected[start:start + 3]
    assert fast.tokenize_to_ids([]) == []
    assert fast.tokenize_to_ids([""]) == [[]]


@needs_data
def test_every_ascii_pair_matches_full_tokenizer():
    lines = [" ".join(f"a{chr(c)}B{chr(d)} {chr(c)}{chr(d)}x" for d in range(128))
             for c in range(128)]
    for lower in (True, False):
        fast, full = fast_tokenization.FastTokenizer(VOCAB, lower), FullTokenizer(VOCAB, lower)
        assert fast.tokenize_to_ids(lines) == [full.text_to_ids(line) for line in lines]


@needs_data
def test_arrays_layout():
    fast = fast_tokenization.FastTokenizer(VOCAB)
    ids, row_splits = fast.tokenize_to_arrays(["Hello world", "", "Été", "a-b"])
    assert ids.dtype == np.int32 and row_splits.dtype == np.int64
    # hello=7592 world=2088 | - | ete=3802 ##e... from the pure path | a - b
    full = FullTokenizer(VOCAB)
    assert row_splits.tolist() == [0, 2, 2, 2 + len(full.text_to_ids("Été")),
                                   5 + len(full.text_to_ids("Été"))]
    assert ids[:2].tolist() == [7592, 2088]
    assert ids[row_splits[3]:].tolist() == [1037, 1011, 1038]


def test_duplicate_and_blank_vocab_lines(tmp_path):
    # "want" appears twice (the later id wins), line 5 is blank and one line has a space.
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "", "want", "un", "##want", "a b",
              "##ed", "want", ","]
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    lines = ["unwanted, want want", "a b", "wanted", ""]
    fast, full = fast_tokenization.FastTokenizer(path), FullTokenizer(path)
    assert fast.tokenize_to_ids(lines) == [full.text_to_ids(line) for line in lines] == \
        [[7, 8, 10, 12, 11, 11], [1, 1], [11, 10], []]


def test_vocab_error_propagates(tmp_path):
    with pytest.raises(VocabError, match="not found"):
        fast_tokenization.FastTokenizer(tmp_path / "nope.txt")


@needs_data
@pytest.mark.parametrize("lower", [True, False])
def test_whole_corpus_identical_to_full_tokenizer(lower):
    lines = []
    for path in CORPUS:
        lines += path.read_text(encoding="utf-8").split("\n")
    assert len(lines) > 380_000
    fast, full = fast_tokenization.FastTokenizer(VOCAB, lower), FullTokenizer(VOCAB, lower)
    fallbacks = count_fallbacks(fast)
    got = fast.tokenize_to_ids(lines)
    # Only the ~190 lines that are not pure ASCII may take the pure-Python path.
    assert len(fallbacks) == sum(not line.isascii() for line in lines) < 250
    assert got == [full.text_to_ids(line) for line in lines]
