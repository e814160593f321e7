"""Tests for the built-in stdlib-docstring corpus and topic task."""

import pytest

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


def test_module_names_are_top_level_packages():
    names = {top for top, _ in demo_corpus.module_docstrings()}
    assert {"email", "tkinter", "socket", "json"} <= names
    assert not any("/" in n or n.endswith(".py") for n in names)


def test_topic_task_format_balance_and_disjoint_splits(tmp_path):
    n_train, n_dev = demo_corpus.write_topic_task(str(tmp_path), n_train=200, n_dev=400)
    assert (n_train, n_dev) == (200, 400)
    splits = {}
    for split in ("train", "dev"):
        lines = (tmp_path / f"{split}.tsv").read_text().splitlines()
        assert lines[0] == "sentence\tlabel"  # SST-2 format, read by the sst task
        rows = [line.split("\t") for line in lines[1:]]
        assert all(len(r) == 2 and r[1] in ("0", "1") for r in rows)
        assert [r[1] for r in rows].count("1") == len(rows) // 2
        splits[split] = {r[0] for r in rows}
    assert len(splits["train"]) == 200 and not splits["train"] & splits["dev"]
    groups = demo_corpus.topic_sentences()
    by_sentence = {s: label for label, sents in groups.items() for s in sents}
    rows = [line.split("\t") for line in (tmp_path / "dev.tsv").read_text().splitlines()[1:]]
    assert all(by_sentence[text] == int(label) for text, label in rows)
    # Labels follow the module: an internet sentence names internet things.
    internet = " ".join(groups[1]).lower()
    assert internet.count("header") > 20 and " widget" not in internet
    again = tmp_path / "again"
    demo_corpus.write_topic_task(str(again), n_train=200, n_dev=400)
    assert (again / "dev.tsv").read_text() == (tmp_path / "dev.tsv").read_text()


def test_topic_task_too_large_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="too few topic sentences"):
        demo_corpus.write_topic_task(str(tmp_path), n_train=2000, n_dev=2000)
    assert not list(tmp_path.iterdir())
