"""Fuzz pass (issue 9): random bad hparams, damaged pre-training shards and damaged
checkpoints must end in one clear error (ConfigError / UserError) or a correct result,
never a traceback, a hang or silently wrong values. Seeded, so failures reproduce.
"""

import dataclasses
import math
import os
import random
import shutil

import numpy as np
import pytest
import tensorflow as tf

import configure_finetuning
import configure_pretraining
from pretrain import data_checks, pretrain_data, pretrain_runner
from util import checkpoint
from util.cli import UserError
from util.config_utils import ConfigError

import pretrain_fixtures

VALUES = [None, "", "x", 0, -1, 1, 10 ** 12, 0.5, -0.5, math.nan, math.inf, True, False,
          [], {}, [1], ["cola"], {"a": 1}]


@pytest.mark.parametrize("module, cls", [
    (configure_pretraining, configure_pretraining.PretrainingConfig),
    (configure_finetuning, configure_finetuning.FinetuningConfig)])
def test_every_hparam_with_any_json_value_is_accepted_or_a_config_error(module, cls, tmp_path):
    fields = [f.name for f in dataclasses.fields(cls) if f.name not in ("data_dir",
                                                                          "model_name")]
    for name in fields:
        for value in VALUES:
            try:
                module.make_config(str(tmp_path), "m", {name: value})
            except ConfigError:
                pass


def test_the_cases_the_fuzzing_found(tmp_path):
    make = configure_pretraining.make_config
    with pytest.raises(ConfigError, match="'mask_prob' of PretrainingConfig must be a "
                                          "finite number, got nan"):
        make(str(tmp_path), "m", '{"mask_prob": NaN}')
    # null is the "derive it" sentinel of Optional fields...
    assert make(str(tmp_path), "m", {"max_predictions_per_seq": None}) == make(
        str(tmp_path), "m", {})
    assert make(str(tmp_path), "m", {"vocab_file": None}).vocab_file.endswith("vocab.txt")
    ft = configure_finetuning.make_config
    assert ft(str(tmp_path), "m", {"task_names": ["cola"], "max_seq_length": None,
                                   "learning_rate": None}).max_seq_length == 128
    # ...except where null is a choice of its own.
    assert ft(str(tmp_path), "m", {"init_checkpoint": None}).init_checkpoint is None
    assert make(str(tmp_path), "m", {"embedding_size": None}).embedding_size is None
    with pytest.raises(ConfigError, match="'task_names' of FinetuningConfig expects"):
        ft(str(tmp_path), "m", {"task_names": [1]})


def _mutate(path, rng):
    """One random kind of damage; returns its description."""
    data = bytearray(path.read_bytes())
    kind = rng.choice(["flip", "truncate", "append", "zero"])
    if kind == "flip":
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        data = data[:rng.randrange(len(data))]
    elif kind == "append":
        data += bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    else:  # zeroes a run of bytes, keeping the size (bit rot the metadata cannot see)
        start = rng.randrange(len(data))
        end = min(len(data), start + rng.randint(1, 200))
        data[start:end] = bytes(end - start)
    path.write_bytes(bytes(data))
    return kind


def _read_all(config, checked):
    """Reads every record twice through the training pipeline's parsing."""
    dataset = pretrain_data.get_dataset(checked.files, config.max_seq_length, 16, False,
                                        seed=0, record_limits=checked.record_limits)
    with data_checks.reported_data_errors(checked.files, config.max_seq_length,
                                          config.model_dir):
        for _ in dataset.take(30):
            pass


@pytest.fixture(name="built", scope="module")
def fixture_built(tmp_path_factory):
    if not pretrain_fixtures.have_shared_data():
        pytest.skip(f"real data not found at {pretrain_fixtures.SHARED}")
    return pretrain_fixtures.data_dir(tmp_path_factory.getbasetemp())


@pytest.mark.parametrize("seed", range(16))
def test_damaged_shards_give_a_clear_error_naming_the_file_or_are_skipped(built, tmp_path,
                                                                         seed):
    rng = random.Random(seed)
    data = tmp_path / "data"
    shutil.copytree(built / "pretrain_tfrecords", data / "pretrain_tfrecords")
    shutil.copy(built / "vocab.txt", data / "vocab.txt")
    if seed % 2:  # user-made records: nothing to compare sizes against
        (data / "pretrain_tfrecords" / pretrain_data.METADATA_FILE).unlink()
    shard = data / "pretrain_tfrecords" / "pretrain_data.tfrecord-1-of-2"
    kind = _mutate(shard, rng)
    for skip in (False, True):
        config = pretrain_fixtures.config(data, "m", skip_corrupt_records=skip)
        try:
            checked = pretrain_runner.check_data(config)
            _read_all(config, checked)
        except UserError as e:
            # The damage is always in this file; the other one is intact.
            assert str(shard) in str(e) or "No readable pre-training records" in str(e), \
                (kind, skip, str(e))
            assert not skip or "cannot be read" in str(e) or "length" in str(e) or \
                "not a tf.train.Example" in str(e), (kind, str(e))


@pytest.mark.parametrize("seed", range(12))
def test_damaged_checkpoints_restore_exactly_or_fail_clearly(tmp_path, seed):
    rng = random.Random(seed)
    values = {"electra/w": np.arange(600, dtype=np.float32).reshape(20, 30),
              "electra/b": np.linspace(-1, 1, 30).astype(np.float32),
              "global_step": np.int64(7)}
    prefix = checkpoint.save_checkpoint({k: tf.Variable(v) for k, v in values.items()},
                                        str(tmp_path / "model.ckpt-7"))
    target = rng.choice([prefix + ".index", prefix + ".data-00000-of-00001"])
    kind = _mutate(type(tmp_path)(target), rng)
    fresh = {k: tf.Variable(np.zeros_like(v)) for k, v in values.items()}
    try:
        checkpoint.restore_checkpoint(fresh, prefix)
    except (UserError, ValueError, FileNotFoundError) as e:
        assert prefix in str(e), (kind, target, str(e))
        return
    for name, value in values.items():  # restored: then exactly the saved values
        np.testing.assert_array_equal(fresh[name].numpy(), value, err_msg=f"{kind} {target}")


def test_a_corrupt_latest_checkpoint_is_named_and_moving_it_resumes_the_previous(tmp_path):
    manager = checkpoint.CheckpointManager(str(tmp_path), max_to_keep=3)
    for step in (2, 4):
        manager.save({"w": tf.Variable(np.full(8, step, np.float32)),
                      "global_step": tf.Variable(np.int64(step))}, step)
    latest = str(tmp_path / "model.ckpt-4")
    with open(latest + ".data-00000-of-00001", "r+b") as f:
        f.truncate(10)
    state = {"w": tf.Variable(np.zeros(8, np.float32)),
             "global_step": tf.Variable(np.int64(0))}
    with pytest.raises(UserError, match=f"Checkpoint {latest} cannot be read .* move them "
                                        "away to continue from the newest earlier"):
        pretrain_runner.restore(state, str(tmp_path), required=True)
    os.makedirs(tmp_path / "corrupt")
    for name in os.listdir(tmp_path):
        if name.startswith("model.ckpt-4."):
            os.rename(tmp_path / name, tmp_path / "corrupt" / name)
    assert pretrain_runner.restore(state, str(tmp_path), required=True).endswith(
        "model.ckpt-2")
    assert int(state["global_step"].numpy()) == 2
