"""Tests for pretrain/example_packing.py and the batched dataset build that uses it.

Oracles: the original's packing step by step (dataset_reference.py), protobuf's own
serialisation, and SHA-256s of shards written by the per-example implementation this
replaced (commit 5c3a929), on text full of edge cases.
"""

import hashlib
import os
import random
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import build_pretraining_dataset
from dataset_reference import reference_build
from model import fast_tokenization
from pretrain import dataset_builder as db
from pretrain import example_packing as ep

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
VOCAB = DATA / "vocab" / "vocab.txt"
CLS, SEP = 101, 102


def random_events(rng, n):
    """Lines of varied lengths (no tokens, short, longer than an example) and runs of
    document boundaries (None), ending with one."""
    events = []
    for _ in range(n):
        draw = rng.random()
        if draw < 0.15:
            events.append(None)
        elif draw < 0.2:
            events.append([])
        else:
            length = rng.choice([1, 2, 3, 7, 20, 60, 200])
            events.append([rng.randrange(SEP + 1, 30522) for _ in range(length)])
    return events + [None]


@pytest.mark.parametrize("max_len", [8, 13, 128])
def test_packer_equals_reference_however_lines_are_batched(max_len):
    rng = random.Random(max_len)
    events = random_events(rng, 3000)
    ref_rng, rng_used = random.Random("r"), random.Random("r")
    expected = reference_build(events, ref_rng, max_len, CLS, SEP)
    lengths = [len(e or []) for e in events]
    ends = [e is None for e in events]
    ids = np.array([t for e in events if e for t in e], np.int32)
    rows = np.concatenate([[0], np.cumsum(lengths)])
    packer = ep.ExamplePacker(CLS, SEP, max_len, rng_used)
    cuts = [0] + sorted(rng.sample(range(1, len(events)), 60)) + [len(events)]
    got = []
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        batch = packer.pack(ids[rows[lo]:rows[hi]], lengths[lo:hi], ends[lo:hi])
        assert batch.input_ids.shape == (len(batch.lengths), max_len)
        got += zip(batch.input_ids.tolist(), batch.lengths.tolist(),
                   batch.first_lengths.tolist())
        assert len(packer.pack(np.zeros(0, np.int32), [], []).lengths) == 0
    assert len(got) == len(expected) == packer.stats["examples"] > 200
    for (row, length, first), ref in zip(got, expected):
        assert row == ref["ids"] + [0] * (max_len - len(ref["ids"]))
        assert (length, first) == (len(ref["ids"]), ref["first_length"])
    # The same number of draws: the streams are still in step.
    assert rng_used.random() == ref_rng.random()


@pytest.mark.parametrize("max_len, max_id", [(128, 30521), (16, 2 ** 22)])
def test_encoder_matches_protobuf_serialisation(max_len, max_id):
    rng = random.Random(5)
    n = 300
    lengths = [rng.randint(3, max_len) for _ in range(n)]
    firsts = [rng.randint(2, length) for length in lengths]
    ids = np.zeros((n, max_len), np.int32)
    for row, length in zip(ids, lengths):
        # Mostly small ids, some at the varint size edges, some up to max_id.
        row[:length] = [rng.choice([rng.randrange(200), 127, 128, 16383, 16384,
                                    rng.randrange(max_id + 1), max_id]) for _ in range(length)]
    records = ep.ExampleEncoder(max_len, max_id).encode(
        ep.PackedBatch(ids, np.array(lengths), np.array(firsts)))
    for record, row, length, first in zip(records, ids.tolist(), lengths, firsts):
        features = {"input_ids": row, "input_mask": [1] * length + [0] * (max_len - length),
                    "segment_ids": [0] * first + [1] * (length - first) + [0] * (max_len - length)}
        expected = tf.train.Example(features=tf.train.Features(feature={
            k: tf.train.Feature(int64_list=tf.train.Int64List(value=v))
            for k, v in features.items()})).SerializeToString(deterministic=True)
        assert record == expected


def edge_text(seed):
    """Text with the packer's edge cases: blank-line runs, lines with no tokens, CRLF,
    lines longer than an example (and than a small read chunk), invalid UTF-8,
    non-ASCII, no final newline."""
    rng = random.Random(seed)
    words = ["the", "union", "state", "of", "a", "nation", "café", "naïve", "中文", "x" * 250,
             ",", "."]
    out = []
    for _ in range(400):
        kind = rng.random()
        if kind < 0.15:
            out.append(b"\n" * rng.randint(1, 3))
        elif kind < 0.2:
            out.append(b"\x01\x02 \t\n")
        else:
            n = rng.choice([1, 2, 5, 20, 60, 300])
            line = " ".join(rng.choice(words) for _ in range(n)).encode()
            if rng.random() < 0.05:
                line += b" \xff\xfe bad"
            out.append(line + (b"\r\n" if rng.random() < 0.1 else b"\n"))
    return b"".join(out) + b"no final newline"


# SHA-256 of the 2 shards (concatenated) that the per-example implementation wrote for
# edge_text(1) and edge_text(2), with either tokenizer.
EDGE_SHA256 = {
    (8, True, 0): "6d6d2154ae41fd29e9af06ccab6207f5524e90bd246726799ae234c81f0b33c2",
    (40, False, 0): "b6f3bfab5a0a8256db3cdb22c7fed839acea75423204ed82b32f6d9918e34536",
    (128, True, 5): "d17ba6394af137e4a29561cfbfa60c3cf04a5b63092c4e38d1bff4a0332b5885",
}


@pytest.mark.skipif(not VOCAB.exists(), reason=f"shared data absent: {DATA}")
@pytest.mark.parametrize("chunk_chars", [db.CHUNK_CHARS, 2000])
@pytest.mark.parametrize("tokenizer", ["python", "fast"])
@pytest.mark.parametrize("key", sorted(EDGE_SHA256))
def test_edge_text_shards_equal_the_per_example_implementation(
        tmp_path, monkeypatch, key, tokenizer, chunk_chars):
    if tokenizer == "fast" and not fast_tokenization.available():
        pytest.skip("tensorflow-text not installed")
    # A small chunk splits lines and documents across batches many times.
    monkeypatch.setattr(db, "CHUNK_CHARS", chunk_chars)
    (tmp_path / "corpus").mkdir()
    for seed, name in ((1, "a.txt"), (2, "b.txt")):
        (tmp_path / "corpus" / name).write_bytes(edge_text(seed))
    max_len, blanks, seed = key
    config = db.BuildConfig(vocab_file=str(VOCAB), output_dir=str(tmp_path / "out"),
                            num_out_files=2, tokenizer=tokenizer, max_seq_length=max_len,
                            blanks_separate_docs=blanks, seed=seed)
    db.build_dataset(config, build_pretraining_dataset.list_corpus_files(
        str(tmp_path / "corpus")))
    digest = hashlib.sha256()
    for i in range(2):
        digest.update((tmp_path / "out" / db.shard_name(i, 2)).read_bytes())
    assert digest.hexdigest() == EDGE_SHA256[key]
