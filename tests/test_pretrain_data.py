"""Tests for pretrain/pretrain_data.py on TFRecords written to a temp dir (and real text)."""

import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import tensorflow as tf

from pretrain import pretrain_data
from pretrain import pretrain_helpers

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def write_shard(path, rows):
    """rows: list of (input_ids, input_mask, segment_ids) int lists -> one TFRecord file."""
    with tf.io.TFRecordWriter(str(path)) as writer:
        for ids, mask, segs in rows:
            feature = {name: tf.train.Feature(int64_list=tf.train.Int64List(value=values))
                       for name, values in zip(pretrain_data.FEATURE_NAMES, (ids, mask, segs))}
            writer.write(tf.train.Example(
                features=tf.train.Features(feature=feature)).SerializeToString())


def numbered_rows(start, count, seq=8):
    """Rows whose first id identifies them (start + i), so tests can track records."""
    rows = []
    for i in range(count):
        ids = [start + i] + [5] * (seq - 3) + [0, 0]
        rows.append((ids, [1] * (seq - 2) + [0, 0], [0] * seq))
    return rows


@pytest.fixture()
def shards(tmp_path):
    out = tmp_path / "pretrain_tfrecords"
    out.mkdir()
    for k in range(4):
        write_shard(out / f"pretrain_data.tfrecord-{k}-of-4", numbered_rows(100 * k, 10))
    return out


def first_ids(dataset, batches):
    got = []
    for batch in dataset.take(batches):
        got.extend(batch["input_ids"].numpy()[:, 0].tolist())
    return got


def test_dataset_yields_int32_batches_of_all_records(shards):
    d = pretrain_data.get_dataset(str(shards / "pretrain_data.tfrecord*"), 8, 5, True, seed=1)
    batch = next(iter(d))
    assert set(batch) == {"input_ids", "input_mask", "segment_ids"}
    for value in batch.values():
        assert value.dtype == tf.int32 and value.shape == (5, 8)
    np.testing.assert_array_equal(batch["input_mask"].numpy()[0], [1] * 6 + [0, 0])
    # 40 records, repeated; the file shuffle runs after repeat (as the original), so epochs
    # overlap and only the set of records read is fixed.
    seen = first_ids(d, 60)
    assert set(seen) == {100 * k + i for k in range(4) for i in range(10)}


def test_seeded_dataset_is_reproducible(shards):
    make = lambda: pretrain_data.get_dataset(str(shards / "*"), 8, 4, True, seed=7)
    assert first_ids(make(), 5) == first_ids(make(), 5)


def test_comma_separated_and_list_patterns(shards):
    pattern = f"{shards}/pretrain_data.tfrecord-0-of-4, {shards}/pretrain_data.tfrecord-2-of-4"
    files = pretrain_data.expand_file_patterns(pattern)
    assert [os.path.basename(f) for f in files] == ["pretrain_data.tfrecord-0-of-4",
                                                   "pretrain_data.tfrecord-2-of-4"]
    assert pretrain_data.expand_file_patterns([pattern, str(shards / "*-0-of-4")]) == files
    d = pretrain_data.get_dataset(pattern, 8, 4, False, seed=0)
    assert set(first_ids(d, 30)) == set(range(10)) | set(range(200, 210))


def test_no_matching_files_names_patterns_location_and_command(tmp_path):
    pattern = str(tmp_path / "missing" / "pretrain_data.tfrecord*")
    with pytest.raises(FileNotFoundError) as info:
        pretrain_data.get_dataset(pattern, 128, 8, True)
    message = str(info.value)
    assert pattern in message
    assert "<data-dir>/pretrain_tfrecords/pretrain_data.tfrecord*" in message
    assert "build_pretraining_dataset.py" in message


def test_record_length_mismatch_is_reported_with_both_lengths(shards):
    with pytest.raises(ValueError) as info:
        pretrain_data.get_dataset(str(shards / "*"), 128, 4, True)
    message = str(info.value)
    assert "length 8" in message and "max_seq_length is 128" in message
    assert "--max-seq-length 128" in message


def test_metadata_length_is_checked(shards):
    (shards / pretrain_data.METADATA_FILE).write_text(json.dumps({"max_seq_length": 16}))
    with pytest.raises(ValueError, match="length 16 but max_seq_length is 8"):
        pretrain_data.check_record_length(sorted(map(str, shards.glob("*tfrecord*"))), 8)
    (shards / pretrain_data.METADATA_FILE).write_text(json.dumps({"max_seq_length": 8}))
    pretrain_data.check_record_length(sorted(map(str, shards.glob("*tfrecord*"))), 8)


def test_missing_feature_is_reported(tmp_path):
    path = tmp_path / "bad.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        feature = {"input_ids": tf.train.Feature(int64_list=tf.train.Int64List(value=[1] * 8))}
        writer.write(tf.train.Example(
            features=tf.train.Features(feature=feature)).SerializeToString())
    with pytest.raises(ValueError, match="no feature 'input_mask'"):
        pretrain_data.check_record_length([str(path)], 8)


def test_input_context_shards_files_and_sets_per_replica_batch(shards):
    seen = []
    for pipeline in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline,
                                             num_replicas_in_sync=2)
        d = pretrain_data.get_dataset(str(shards / "*"), 8, 6, True, context, seed=3)
        batch = next(iter(d))
        assert batch["input_ids"].shape == (3, 8)
        seen.append({i // 100 for i in first_ids(d, 20)})
    assert len(seen[0]) == 2 and len(seen[1]) == 2 and not seen[0] & seen[1]


def test_input_context_with_fewer_files_than_pipelines_shards_records(tmp_path):
    write_shard(tmp_path / "only.tfrecord", numbered_rows(0, 12))
    streams = []
    for pipeline in range(3):
        context = tf.distribute.InputContext(num_input_pipelines=3, input_pipeline_id=pipeline,
                                             num_replicas_in_sync=3)
        d = pretrain_data.get_dataset(str(tmp_path / "only.tfrecord"), 8, 6, True, context)
        assert next(iter(d))["input_ids"].shape == (2, 8)
        streams.append(set(first_ids(d, 20)))
    # One ordered stream 0..11 repeated; pipeline p keeps every third record from p on.
    assert streams == [set(range(p, 12, 3)) for p in range(3)]


def test_real_text_round_trips_and_masks_only_words(tmp_path):
    vocab_file, text_file = SHARED / "vocab" / "vocab.txt", SHARED / "corpus" / "inaugural.txt"
    if not (vocab_file.exists() and text_file.exists()):
        pytest.skip(f"shared data not found under {SHARED}")
    vocab = {line.rstrip("\n"): i for i, line in enumerate(vocab_file.open(encoding="utf-8"))}
    special = pretrain_helpers.SpecialIds.from_vocab(vocab)
    rows, seq = [], 32
    for line in text_file.open(encoding="utf-8"):
        words = [w.strip(".,;:!?\"'()").lower() for w in line.split()][:seq - 2]
        if len(words) < 5:
            continue
        ids = [special.cls] + [vocab.get(w, special.unk) for w in words] + [special.sep]
        n = len(ids)
        rows.append((ids + [0] * (seq - n), [1] * n + [0] * (seq - n), [0] * seq))
        if len(rows) == 16:
            break
    write_shard(tmp_path / "pretrain_data.tfrecord-0-of-1", rows)
    d = pretrain_data.get_dataset(str(tmp_path / "*"), seq, 16, False, seed=0)
    batch = next(iter(d))
    written = {tuple(r[0]) for r in rows}
    assert {tuple(r) for r in batch["input_ids"].numpy().tolist()} <= written
    masked = pretrain_helpers.mask(batch["input_ids"], batch["input_mask"], special, 0.15, 4,
                                   tf.constant([0, 1]))
    used = masked.masked_lm_weights.numpy() > 0
    targets = masked.masked_lm_ids.numpy()[used]
    assert used.sum() >= 16 and not np.isin(targets, [special.cls, special.sep, special.pad]).any()
    changed = masked.input_ids.numpy() != batch["input_ids"].numpy()
    assert (masked.input_ids.numpy()[changed] == special.mask).all() and changed.any()
