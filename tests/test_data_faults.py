"""Broken pre-training data: caught at start-up when the metadata can tell, otherwise as
one clear error mid-run, and skipped (and counted) with skip_corrupt_records.

Every test works on a private copy of real shards built from the inaugural-addresses
corpus (tests/pretrain_fixtures.py: 2 shards of length-64 examples) and a tiny model.
"""

import json
import os
import shutil
from pathlib import Path

import pytest
import tensorflow as tf

from pretrain import data_checks, pretrain_data, pretrain_runner
from util.cli import UserError

import pretrain_fixtures

SEQ = pretrain_fixtures.SEQ
SHARD_0 = "pretrain_data.tfrecord-0-of-2"

pytestmark = pytest.mark.skipif(not pretrain_fixtures.have_shared_data(),
                                reason=f"real data not found at {pretrain_fixtures.SHARED}")


@pytest.fixture(name="built", scope="module")
def fixture_built(tmp_path_factory):
    return pretrain_fixtures.data_dir(tmp_path_factory.getbasetemp())


@pytest.fixture(name="data")
def fixture_data(built, tmp_path):
    """A private copy: vocab.txt + pretrain_tfrecords/ (2 shards + pretrain_data.json)."""
    root = tmp_path / "data"
    shutil.copytree(built / "pretrain_tfrecords", root / "pretrain_tfrecords")
    shutil.copy(built / "vocab.txt", root / "vocab.txt")
    return root


def _shards(data):
    return data / "pretrain_tfrecords"


def _truncate(path):
    """Cuts the file in half; returns its original size."""
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    return size


def _config(data, name="m", **hparams):
    return pretrain_fixtures.config(data, name, **{"save_checkpoints_steps": 2, **hparams})


def _write_records(path, length, n=3):
    with tf.io.TFRecordWriter(str(path)) as writer:
        for _ in range(n):
            feature = {k: tf.train.Feature(int64_list=tf.train.Int64List(value=[1] * length))
                       for k in pretrain_data.FEATURE_NAMES}
            writer.write(tf.train.Example(
                features=tf.train.Features(feature=feature)).SerializeToString())


def test_builder_metadata_records_every_shard_size(data):
    meta = json.loads((_shards(data) / pretrain_data.METADATA_FILE).read_text())
    assert meta["bytes_per_file"] == {name: (_shards(data) / name).stat().st_size
                                      for name in meta["examples_per_file"]}
    assert all(size > 0 for size in meta["bytes_per_file"].values())


def test_truncated_shard_is_caught_before_any_step(data, capsys):
    shard = _shards(data) / SHARD_0
    full = _truncate(shard)
    with pytest.raises(UserError) as info:
        pretrain_runner.run_pretraining(_config(data))
    message = str(info.value)
    assert f"{shard} has {full // 2} bytes but " in message
    assert f"records {full} (" in message and "truncated or was replaced" in message
    assert "build_pretraining_dataset.py" in message and "skip_corrupt_records" in message
    assert "Model is built!" not in capsys.readouterr().out
    assert not (data / "models" / "m").exists() or not os.listdir(data / "models" / "m")


def test_corrupt_shard_without_metadata_stops_with_file_and_record(data):
    config = _config(data, num_train_steps=2)
    pretrain_runner.run_pretraining(config)  # a good checkpoint at step 2
    latest = tf.train.latest_checkpoint(config.model_dir)
    before = {p: p.read_bytes() for p in Path(config.model_dir).glob("model.ckpt-2*")}
    (_shards(data) / pretrain_data.METADATA_FILE).unlink()  # user-made records
    shard = _shards(data) / SHARD_0
    _truncate(shard)
    readable, damaged = data_checks.readable_prefix(str(shard))
    assert damaged and readable > 0  # the first record is fine: start-up cannot tell
    with pytest.raises(UserError) as info:
        pretrain_runner.run_pretraining(_config(data, num_train_steps=40))
    message = str(info.value)
    assert f"Unreadable pre-training data in {shard}, record {readable} (from 0) (" in message
    assert "truncated record at" in message
    assert f"the latest checkpoint {latest} is unchanged" in message
    assert tf.train.latest_checkpoint(config.model_dir) == latest
    assert {p: p.read_bytes() for p in Path(config.model_dir).glob("model.ckpt-2*")} == before


def test_every_shard_is_checked_for_the_sequence_length(data):
    odd = _shards(data) / "pretrain_data.tfrecord-zz-extra"  # sorts after the good shards
    _write_records(odd, SEQ // 2)
    with pytest.raises(UserError, match=f"{odd} \\(feature input_ids\\) holds sequences of "
                                        f"length {SEQ // 2} but max_seq_length is {SEQ}"):
        pretrain_runner.check_data(_config(data))


def test_empty_shards(data, capsys):
    empty = _shards(data) / "pretrain_data.tfrecord-zz-empty"
    empty.write_bytes(b"")
    checked = pretrain_runner.check_data(_config(data))  # not in the metadata: left out
    assert str(empty) not in checked.files and len(checked.files) == 2
    assert f"1 empty pre-training file(s) left out, e.g. {empty}" in capsys.readouterr().out
    (_shards(data) / SHARD_0).write_bytes(b"")  # the metadata says it holds examples
    with pytest.raises(UserError, match=f"{_shards(data) / SHARD_0} has 0 bytes but "):
        pretrain_runner.check_data(_config(data))
    (_shards(data) / pretrain_data.METADATA_FILE).unlink()
    (_shards(data) / "pretrain_data.tfrecord-1-of-2").write_bytes(b"")
    with pytest.raises(UserError, match="All 3 pre-training file\\(s\\) are empty"):
        pretrain_runner.check_data(_config(data))


def test_garbage_file_is_named(data):
    junk = _shards(data) / "pretrain_data.tfrecord-zz-junk"
    junk.write_bytes(b"this is not a TFRecord file at all, just text")
    with pytest.raises(UserError, match=f"{junk}: the first record cannot be read"):
        pretrain_runner.check_data(_config(data))


def test_a_pattern_matching_nothing_among_several_is_an_error(data):
    good = str(_shards(data) / "pretrain_data.tfrecord*")
    typo = str(_shards(data) / "pretrain_dta.tfrecord*")
    with pytest.raises(UserError) as info:
        pretrain_runner.check_data(_config(data, pretrain_tfrecords=f"{good},{typo}"))
    assert f"pattern(s) ['{typo}'] match no file" in str(info.value)
    assert "match 2 file(s)" in str(info.value)


def test_skip_corrupt_records_trains_on_the_readable_part_and_counts(data, capsys):
    shard = _shards(data) / SHARD_0
    meta = json.loads((_shards(data) / pretrain_data.METADATA_FILE).read_text())
    _truncate(shard)
    readable, _ = data_checks.readable_prefix(str(shard))
    skipped = meta["examples_per_file"][SHARD_0] - readable
    assert skipped > 0
    config = _config(data, skip_corrupt_records=True, num_train_steps=4,
                     iterations_per_loop=2, log_every_steps=2, save_checkpoints_steps=4)
    result = pretrain_runner.run_pretraining(config)
    assert result.global_step == 4
    out = capsys.readouterr().out
    assert f"{shard}: reading its first {readable} records; {skipped} skipped" in out
    progress = [l for l in out.splitlines() if ", SPS: " in l]
    assert progress and all(l.endswith(f" - skipped_records: {skipped}") for l in progress)
    results = pretrain_runner.run_pretraining(_config(
        data, skip_corrupt_records=True, do_train=False, do_eval=True, num_eval_steps=1))
    assert results["skipped_records"] == skipped and results["global_step"] == 4
    # Without metadata the unreadable tail is counted as (at least) one record.
    (_shards(data) / pretrain_data.METADATA_FILE).unlink()
    checked = pretrain_runner.check_data(_config(data, skip_corrupt_records=True))
    assert checked.record_limits == {str(shard): readable} and checked.skipped_records == 1
    files = [str(shard), str(_shards(data) / "pretrain_data.tfrecord-1-of-2")]
    batches = pretrain_data.get_dataset(files, SEQ, 8, False, seed=0,
                                        record_limits=checked.record_limits)
    assert sum(1 for _ in batches.take(50)) == 50  # repeats without meeting the bad tail
