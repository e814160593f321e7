"""Chunk tags <-> spans, with conlleval's chunk boundary rules (BIO and BIOES).

A tag is "O" or "<prefix>-<type>" with prefix B (begin), I (inside), E (end) or
S (single), e.g. "B-NP". A span is (start, end, type) with inclusive token indices.

Boundaries follow conlleval's endOfChunk/startOfChunk: a chunk ends after E or S,
before B, S or O, and at a type change; a chunk starts at B or S, at I/E after O,
E or S, and at a type change. The original's get_span_labels ignored type changes
(B-NP I-VP was one VP span); on well-formed BIO/BIOES sequences, such as the gold
CoNLL-2000 tags, both agree.
"""

from __future__ import annotations

from typing import Sequence

PREFIXES = ("B", "I", "E", "S")


def split_tag(tag: str) -> tuple[str, str]:
    """"B-NP" -> ("B", "NP"); "O" -> ("O", ""). Raises on any other form."""
    if tag == "O":
        return "O", ""
    prefix, sep, chunk_type = tag.partition("-")
    if not sep or prefix not in PREFIXES or not chunk_type:
        raise ValueError(f"Malformed chunk tag {tag!r}: expected 'O' or "
                         f"<B|I|E|S>-<TYPE> such as 'B-NP'.")
    return prefix, chunk_type


def is_valid_tag(tag: str) -> bool:
    try:
        split_tag(tag)
        return True
    except ValueError:
        return False


def _end_of_chunk(prev: str, prev_type: str, cur: str, cur_type: str) -> bool:
    """Whether a chunk ends between the previous token and the current one."""
    if prev in ("E", "S"):
        return True
    if prev in ("B", "I") and cur in ("B", "S", "O"):
        return True
    return prev != "O" and prev_type != cur_type


def _start_of_chunk(prev: str, prev_type: str, cur: str, cur_type: str) -> bool:
    """Whether a chunk starts at the current token."""
    if cur in ("B", "S"):
        return True
    if prev in ("E", "S", "O") and cur in ("I", "E"):
        return True
    return cur != "O" and prev_type != cur_type


def get_span_labels(tags: Sequence[str]) -> list[tuple[int, int, str]]:
    """Tags of one sentence -> [(start, end, type)] in order."""
    spans = []
    prev, prev_type = "O", ""
    start = None
    for i, tag in enumerate(tags):
        cur, cur_type = split_tag(tag)
        if start is not None and _end_of_chunk(prev, prev_type, cur, cur_type):
            spans.append((start, i - 1, prev_type))
            start = None
        if _start_of_chunk(prev, prev_type, cur, cur_type):
            start = i
        prev, prev_type = cur, cur_type
    if start is not None:
        spans.append((start, len(tags) - 1, prev_type))
    return spans


def get_tags(span_labels: Sequence[tuple[int, int, str]], length: int,
             encoding: str = "BIOES") -> list[str]:
    """Spans -> tags of a `length`-token sentence in `encoding` ("BIO" or "BIOES")."""
    tags = ["O"] * length
    for start, end, chunk_type in span_labels:
        for i in range(start, end + 1):
            tags[i] = "I-" + chunk_type
        if "E" in encoding:
            tags[end] = "E-" + chunk_type
        if "B" in encoding:
            tags[start] = "B-" + chunk_type
        if "S" in encoding and start == end:
            tags[start] = "S-" + chunk_type
    return tags


def to_bioes(tags: Sequence[str]) -> list[str]:
    """Re-encodes one sentence's BIO (or any) tags as BIOES via its spans."""
    return get_tags(get_span_labels(tags), len(tags), "BIOES")
