"""Tests for the built-in stdlib-docstring corpus and acceptability task."""

import random

from util import demo_corpus


def test_corpus_is_deterministic_prose(tmp_path):
    paths, n_docs = demo_corpus.write_corpus(str(tmp_path / "a"))
    again, _ = demo_corpus.write_corpus(str(tmp_path / "b"))
    assert len(paths) == 4
    text = "".join(open(p, encoding="utf-8").read() for p in paths)
    assert text == "".join(open(p, encoding="utf-8").read() for p in again)
    assert text.count("\n\n") == n_docs  # one blank line after each document
    assert n_docs > 1000 and len(text) > 500_000
    words = text.split()
    assert sum(w.lower() in ("the", "a", "of", "to", "is") for w in words) / len(words) > 0.05


def test_paragraph_joining():
    doc = "First line\ncontinues here.\n\n  Second paragraph.\n"
    assert demo_corpus.docstring_paragraphs(doc) == [
            "First line continues here.", "Second paragraph."]


def test_shuffle_keeps_words_and_changes_order():
    rng = random.Random(0)
    sentence = "Return the number of items in the queue."
    shuffled = demo_corpus.shuffle_words(sentence, rng)
    assert shuffled != sentence and sorted(shuffled.split()) == sorted(sentence.split())
    assert demo_corpus.shuffle_words("same same same", rng) is None


def test_acceptability_task_format(tmp_path):
    corpus, _ = demo_corpus.write_corpus(str(tmp_path))
    n_train, n_dev = demo_corpus.write_acceptability_task(
            corpus, str(tmp_path / "cola"), n_train=300, n_dev=100)
    assert n_train > 280 and n_dev > 90
    train = (tmp_path / "cola" / "train.tsv").read_text().splitlines()
    dev = (tmp_path / "cola" / "dev.tsv").read_text().splitlines()
    rows = [line.split("\t") for line in train + dev]
    assert all(len(r) == 4 and r[1] in ("0", "1") for r in rows)
    labels = [r[1] for r in rows]
    assert 0.35 < labels.count("1") / len(labels) < 0.65
    assert not {r[3] for r in rows[:len(train)]} & {r[3] for r in rows[len(train):]}
