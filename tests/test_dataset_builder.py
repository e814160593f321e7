"""Tests for pretrain/dataset_builder.py and the two build scripts, on the shared corpus.

The oracle for example packing is `reference_build` below: spec d.2 written out
step by step, consuming the same seeded random stream. Statistical checks compute
what the algorithm implies for the actual line lengths instead of fixed shares.
"""

import math
import os
import random
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import tensorflow as tf

import build_openwebtext_pretraining_dataset
import build_pretraining_dataset
from model import tokenization
from pretrain import dataset_builder as db

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
CORPUS, VOCAB = DATA / "corpus", DATA / "vocab" / "vocab.txt"
pytestmark = pytest.mark.skipif(not VOCAB.exists(), reason=f"shared data absent: {DATA}")
FILES = ("inaugural.txt", "state_union.txt")  # 0.8 MB + 2 MB of the shared corpus
MAX_LEN = 128


@pytest.fixture(scope="module")
def tokenizer():
    return tokenization.FullTokenizer(str(VOCAB))


def make_corpus(directory, names=FILES):
    os.makedirs(directory, exist_ok=True)
    for name in names:
        os.symlink(CORPUS / name, os.path.join(directory, name))
    return str(directory)


def config(output_dir, **kwargs):
    kwargs.setdefault("num_out_files", 3)
    kwargs.setdefault("tokenizer", "python")
    return db.BuildConfig(vocab_file=str(VOCAB), output_dir=str(output_dir), **kwargs)


def read_shard(path):
    """[(input_ids, input_mask, segment_ids)] of one TFRecord file."""
    rows = []
    for raw in tf.data.TFRecordDataset(str(path)):
        feature = tf.train.Example.FromString(raw.numpy()).features.feature
        rows.append(tuple(list(feature[k].int64_list.value)
                          for k in ("input_ids", "input_mask", "segment_ids")))
    return rows


def read_in_write_order(output_dir, num_out_files):
    """Examples of a 1-process dataset in write order (example n is in shard n % k)."""
    shards = [read_shard(os.path.join(output_dir, db.shard_name(i, num_out_files)))
              for i in range(num_out_files)]
    total = sum(map(len, shards))
    return [shards[n % num_out_files][n // num_out_files] for n in range(total)]


def events_of(paths, tokenizer, blanks_separate_docs=True):
    """Token-id lists for non-blank lines, None for a document boundary."""
    events = []
    for path in paths:
        with open(path, encoding="utf-8", errors="replace", newline="\n") as f:
            for line in f:
                line = line.strip()
                if line:
                    events.append(tokenizer.text_to_ids(line))
                elif blanks_separate_docs:
                    events.append(None)
        events.append(None)
    return events


def reference_build(events, rng, max_len, cls_id, sep_id):
    """Spec d.2, step by step. Returns dicts: ids, buffer, two_seg_target, flushed."""
    out, buffer, target = [], [], max_len
    for event in events:
        if event is not None:
            buffer.append(event)
        if sum(map(len, buffer)) == 0 or (event is not None and sum(map(len, buffer)) < target):
            continue
        single = rng.random() < 0.1
        a_target = 100000 if single else (target - 3) // 2
        a, b = [], []
        for sentence in buffer:
            if len(a) == 0:
                a = a + sentence
            elif len(a) + len(sentence) < a_target:
                a = a + sentence
            elif len(b) == 0 and len(a) < a_target and rng.random() < 0.5:
                a = a + sentence
            else:
                b = b + sentence
        a = a[:max_len - 2]
        b = b[:max(0, max_len - len(a) - 3)]
        ids = [cls_id] + a + [sep_id] + (b + [sep_id] if b else [])
        out.append(dict(ids=ids, buffer=buffer, two_seg_target=(target - 3) // 2,
                        flushed=event is None))
        buffer = []
        target = rng.randint(5, max_len) if rng.random() < 0.05 else max_len
    return out


def prob_no_second_segment(buffer, a_target, max_len):
    """P(example has no B) given its buffer, in two-segment mode, over the A/B coins."""
    def walk(index, a_len, b_started, prob):
        if index == len(buffer):
            return prob if (not b_started or min(a_len, max_len - 2) >= max_len - 3) else 0.0
        n = len(buffer[index])
        if a_len == 0 or a_len + n < a_target:
            return walk(index + 1, a_len + n, b_started, prob)
        if not b_started and a_len < a_target:  # the coin: heads joins A, tails starts B
            return (walk(index + 1, a_len + n, False, prob / 2)
                    + walk(index + 1, a_len, n > 0, prob / 2))
        return walk(index + 1, a_len, b_started or n > 0, prob)
    return walk(0, 0, False, 1.0)


@pytest.fixture(scope="module")
def built(tmp_path_factory, tokenizer):
    """A 1-process build of two corpus files, plus the reference examples."""
    root = tmp_path_factory.mktemp("built")
    corpus = make_corpus(root / "corpus")
    metadata = db.build_dataset(config(root / "out"), db.list_corpus_files(corpus))
    rng = random.Random("0:0")
    paths = sorted(os.path.join(corpus, n) for n in FILES)
    rng.shuffle(paths)
    reference = reference_build(events_of(paths, tokenizer), rng, MAX_LEN,
                                tokenizer.vocab["[CLS]"], tokenizer.vocab["[SEP]"])
    return dict(out=root / "out", corpus=corpus, metadata=metadata, paths=paths,
                examples=read_in_write_order(root / "out", 3), reference=reference)


def test_examples_equal_reference_algorithm(built):
    examples, reference = built["examples"], built["reference"]
    assert len(examples) == len(reference) == built["metadata"]["num_examples"] > 1500
    for (ids, _, _), ref in zip(examples, reference):
        assert ids == ref["ids"] + [0] * (MAX_LEN - len(ref["ids"]))


def test_layout_segments_and_mask(built, tokenizer):
    cls_id, sep_id = tokenizer.vocab["[CLS]"], tokenizer.vocab["[SEP]"]
    for ids, mask, segments in built["examples"]:
        assert len(ids) == len(mask) == len(segments) == MAX_LEN
        length = sum(mask)
        assert mask == [1] * length + [0] * (MAX_LEN - length) and length >= 3
        assert ids[0] == cls_id and ids[length - 1] == sep_id and ids[length:] == [0] * (MAX_LEN - length)
        seps = [i for i in range(length) if ids[i] == sep_id]
        assert seps[-1] == length - 1 and len(seps) in (1, 2) and seps[0] >= 2
        expected = [0] * (seps[0] + 1) + [1] * (length - seps[0] - 1) + [0] * (MAX_LEN - length)
        assert segments == expected


def test_tokens_follow_corpus_order(built, tokenizer):
    """Segment A of each example starts with a whole corpus line (or its prefix, if
    truncated), at a line after the previous example's first line."""
    lines = [event for event in events_of(built["paths"], tokenizer) if event]
    sep_id, line_no = tokenizer.vocab["[SEP]"], -1
    for ids, _, _ in built["examples"]:
        first = ids[1:ids.index(sep_id)]
        line_no += 1
        while line_no < len(lines) and first[:len(lines[line_no])] != lines[line_no][:len(first)]:
            line_no += 1
        assert line_no < len(lines), f"segment A {first[:8]}... starts no later corpus line"


def test_shares_consistent_with_algorithm(built):
    """Draw counts are Binomial(n, 0.1 / 0.05); the no-B share matches what the line lengths imply."""
    n, meta = len(built["examples"]), built["metadata"]
    for count, p in ((meta["single_segment_examples"], 0.1), (meta["random_target_lengths"], 0.05)):
        assert abs(count - n * p) < 4.5 * math.sqrt(n * p * (1 - p)), (count, n, p)
    probs = [0.1 + 0.9 * prob_no_second_segment(r["buffer"], r["two_seg_target"], MAX_LEN)
             for r in built["reference"]]
    observed = sum(1 for _, _, segments in built["examples"] if 1 not in segments)
    expected, sd = sum(probs), math.sqrt(sum(p * (1 - p) for p in probs))
    assert abs(observed - expected) < 4.5 * sd + 1, (observed, expected, sd)
    # Full-length targets always yield full examples; short ones need a draw or a flush.
    short = sum(1 for (_, mask, _), r in zip(built["examples"], built["reference"])
                if sum(mask) < MAX_LEN and not r["flushed"])
    assert short <= meta["random_target_lengths"]


def test_reproducible_with_seed_and_metadata(built, tmp_path):
    db.build_dataset(config(tmp_path / "again"), db.list_corpus_files(built["corpus"]))
    for i in range(3):
        name = db.shard_name(i, 3)
        assert (tmp_path / "again" / name).read_bytes() == (built["out"] / name).read_bytes()
    meta = db.load_metadata(str(tmp_path / "again"))
    assert meta == built["metadata"]
    assert meta["max_seq_length"] == MAX_LEN and meta["vocab_sha256"].startswith("07eced37")
    assert sum(meta["examples_per_file"].values()) == meta["num_examples"]
    db.build_dataset(config(tmp_path / "other", seed=1), db.list_corpus_files(built["corpus"]))
    assert read_in_write_order(tmp_path / "other", 3) != built["examples"]
