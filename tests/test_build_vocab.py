"""Tests for build_vocab.py: hand-computed merges, and a vocab learnt from the shared corpus."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import build_vocab
from model import tokenization

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "data" / "corpus"
needs_corpus = pytest.mark.skipif(not CORPUS.exists(), reason=f"shared corpus absent: {CORPUS}")
SPECIALS = list(tokenization.SPECIAL_TOKENS)


def test_hand_computed_merges():
    # Words: ab x3, abc x2, bc x1. Pairs: (a,##b) 5, (##b,##c) 2, (b,##c) 1.
    # Merge 1: a+##b -> "ab"; then (ab,##c) 2, (b,##c) 1. Merge 2: "abc". (b,##c) < 2: stop.
    vocab = build_vocab.build_vocab(["ab ab ab", "abc abc bc"], 20, do_lower_case=True)
    assert vocab == SPECIALS + ["a", "b", "c", "##a", "##b", "##c", "ab", "abc"]


def test_ties_broken_by_text_and_size_is_a_cap():
    # Both pairs are seen twice: the smaller text merges first.
    vocab = build_vocab.build_vocab(["zw xy zw xy"], 100, do_lower_case=True)
    assert vocab == SPECIALS + ["w", "x", "y", "z", "##w", "##x", "##y", "##z", "xy", "zw"]
    # A smaller size is a cap: the same learner stops early, giving a prefix. (Both
    # sizes keep all 4 characters: at most (size - 5) // 4 characters are kept.)
    lines = ["abcd dcba bdca cadb acbd dbca"] * 2
    large = build_vocab.build_vocab(lines, 100, do_lower_case=True)
    assert len(large) > 21 and build_vocab.build_vocab(lines, 21, True) == large[:21]


def test_basic_tokenizer_words_lower_case_and_punctuation():
    vocab = build_vocab.build_vocab(["Hello, World! hello world"], 60, do_lower_case=True)
    assert "hello" in vocab and "world" in vocab and "," in vocab and "H" not in vocab
    cased = build_vocab.build_vocab(["Hello Hello"], 60, do_lower_case=False)
    assert "Hello" in cased and "H" in cased


def test_bad_arguments():
    with pytest.raises(ValueError, match="too small"):
        build_vocab.build_vocab(["a b"], 6, do_lower_case=True)
    with pytest.raises(ValueError, match="No words"):
        build_vocab.build_vocab(["", "  \t"], 100, do_lower_case=True)


def _lines(name, max_bytes):
    with open(CORPUS / name, encoding="utf-8") as f:
        text = f.read(max_bytes)
    return text.split("\n")


@needs_corpus
def test_vocab_from_5mb_of_corpus_is_fast_complete_and_useful(tmp_path):
    lines = _lines("reuters.txt", 2_500_000) + _lines("gutenberg.txt", 2_500_000)
    start = time.perf_counter()
    vocab = build_vocab.build_vocab(lines, 8000, do_lower_case=True)
    seconds = time.perf_counter() - start
    assert seconds < 60, f"building took {seconds:.1f} s"
    assert vocab[:5] == SPECIALS and len(vocab) == len(set(vocab)) == 8000
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = tokenization.FullTokenizer(str(path))
    assert tokenizer.vocab["[PAD]"] == 0
    held_out = _lines("state_union.txt", 300_000)
    words = [w for line in held_out for w in tokenizer.basic_tokenizer.tokenize(line)]
    pieces = [tokenizer.wordpiece_tokenizer.tokenize_word(w) for w in words]
    known = set(vocab)
    for word, word_pieces in zip(words, pieces):
        if all(c in known for c in word):  # every word of seen characters is tokenizable
            assert "[UNK]" not in word_pieces, word
    assert all(w in known for w in ("the", "of", "and", "president", "company"))
    # Merges compress: far fewer pieces than characters on unseen text.
    n_pieces, n_chars = sum(map(len, pieces)), sum(map(len, words))
    assert n_pieces < 1.4 * len(words) and n_pieces < 0.35 * n_chars


@needs_corpus
def test_cli_output_independent_of_hash_seed(tmp_path):
    sample = tmp_path / "sample.txt"
    sample.write_text("\n".join(_lines("inaugural.txt", 300_000)), encoding="utf-8")
    outputs = []
    for seed in ("1", "2"):
        out = tmp_path / f"vocab{seed}.txt"
        subprocess.run([sys.executable, str(REPO / "build_vocab.py"), "--input-files", str(sample),
                        "--output", str(out), "--vocab-size", "2000"], cwd=REPO, check=True,
                       env=dict(os.environ, PYTHONHASHSEED=seed), capture_output=True)
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]
    assert outputs[0].decode("utf-8").split("\n")[:5] == SPECIALS


def test_cli_errors(tmp_path, capsys):
    assert build_vocab.main(["--corpus-dir", str(tmp_path / "missing")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert build_vocab.main(["--input-files", str(tmp_path / "nope.txt")]) == 2
    assert "no such input file" in capsys.readouterr().err
    (tmp_path / "a.txt").write_text("some words here\n")
    assert build_vocab.main(["--corpus-dir", str(tmp_path), "--vocab-size", "3"]) == 2
    assert "too small" in capsys.readouterr().err
    out = tmp_path / "v" / "vocab.txt"
    assert build_vocab.main(["--corpus-dir", str(tmp_path), "--output", str(out)]) == 0
    assert out.read_text().split("\n")[:5] == SPECIALS
