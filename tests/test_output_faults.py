"""Outputs that cannot be written (disk full, file-size limit, unwritable directory):
one error naming the path and the cause, exit code 74, the previous checkpoint and
results left loadable, and a rerun that continues once the problem is gone.

A full disk is simulated with RLIMIT_FSIZE: past the limit write(2) fails with EFBIG
("File too large"; CPython ignores SIGXFSZ). In-process tests lower only the soft limit
and restore it; the end-to-end ones set it in the child before exec.
"""

import contextlib
import json
import os
import pickle
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from pretrain import pretrain_runner
from util import checkpoint, cli, io_utils

import pretrain_fixtures

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")


@contextlib.contextmanager
def file_size_limit(limit):
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def _variables(value):
    return {"w": tf.Variable(np.full([64, 64], value, np.float32)),
            "global_step": tf.Variable(np.int64(value))}


def test_failed_text_write_names_path_and_cause_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "results.txt"
    io_utils.write_text("old\n", target)
    with file_size_limit(10):
        with pytest.raises(io_utils.OutputError) as info:
            io_utils.write_text("new results, longer than ten bytes\n", target)
    assert str(info.value).startswith(f"Cannot write {target}: File too large. What was "
                                      "there before is unchanged;")
    assert target.read_text() == "old\n" and os.listdir(tmp_path) == ["results.txt"]


def test_unwritable_directory(tmp_path):
    blocker = tmp_path / "results"
    blocker.write_text("a file where a directory is needed")
    with pytest.raises(io_utils.OutputError,
                       match=f"Cannot create the directory {blocker}: File exists. "):
        io_utils.write_pickle({"a": 1}, blocker / "r.pkl")
    assert blocker.read_text() == "a file where a directory is needed"
    if os.geteuid() == 0:
        return  # root writes into read-only directories anyway
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    readonly.chmod(0o555)
    try:
        with pytest.raises(io_utils.OutputError, match="Permission denied"):
            checkpoint.CheckpointManager(str(readonly / "model"), max_to_keep=2)
    finally:
        readonly.chmod(0o755)


def test_failed_checkpoint_keeps_the_previous_one_loadable(tmp_path):
    manager = checkpoint.CheckpointManager(str(tmp_path), max_to_keep=1)
    manager.save(_variables(1), 1)
    with file_size_limit(4096):  # the 16 KB tensor does not fit
        with pytest.raises(io_utils.OutputError) as info:
            manager.save(_variables(2), 2)
    assert f"Cannot write {tmp_path}/model.ckpt-2: File too large." in str(info.value)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint", "model.ckpt-1.data-00000-of-00001",
                                            "model.ckpt-1.index"]  # no temporaries left
    fresh = _variables(0)
    report = checkpoint.CheckpointManager(str(tmp_path), 1).restore_or_initialize(fresh)
    assert report.path.endswith("model.ckpt-1") and int(fresh["global_step"].numpy()) == 1
    assert manager.save(_variables(3), 3).endswith("model.ckpt-3")  # limit lifted


def _limited(limit):
    def set_limit():  # runs in the child, before exec; the limit survives exec
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return set_limit


def _cli(data, name, limit=None, **hparams):
    hparams = {**pretrain_fixtures.TINY, "save_checkpoints_steps": 2, **hparams}
    cmd = [sys.executable, str(REPO / "run_pretraining.py"), "--data-dir", str(data),
           "--model-name", name, "--hparams", json.dumps(hparams)]
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600,
                          cwd=str(REPO), preexec_fn=_limited(limit) if limit else None)


@pytest.fixture(name="data", scope="module")
def fixture_data(tmp_path_factory):
    if not pretrain_fixtures.have_shared_data():
        pytest.skip(f"real data not found at {pretrain_fixtures.SHARED}")
    return pretrain_fixtures.data_dir(tmp_path_factory.getbasetemp())


def test_full_disk_during_pretraining_exits_74_and_the_rerun_resumes(data):
    pretrain_runner.run_pretraining(pretrain_fixtures.config(
        data, "full_disk", num_train_steps=4, save_checkpoints_steps=2))
    model_dir = data / "models" / "full_disk"
    # The embedding table alone is 7.8 MB; everything else written stays under 1 MB.
    failed = _cli(data, "full_disk", limit=1 << 20, num_train_steps=8)
    assert failed.returncode == cli.EXIT_OUTPUT_ERROR == 74, failed.stderr[-3000:]
    last = failed.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: Cannot write {model_dir}/model.ckpt-6: File too large.")
    assert "re-run the same command" in last and "Traceback" not in failed.stderr
    latest = tf.train.latest_checkpoint(str(model_dir))
    assert latest.endswith("model.ckpt-4")
    assert tf.train.load_checkpoint(latest).get_tensor("global_step") == 4
    assert not [p for p in os.listdir(model_dir) if io_utils.TEMP_MARKER in p]
    rerun = _cli(data, "full_disk", num_train_steps=8)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "Training for 4 steps (from step 4)" in rerun.stdout
    assert tf.train.latest_checkpoint(str(model_dir)).endswith("model.ckpt-8")


def test_full_disk_when_writing_results_keeps_the_previous_results(data):
    pretrain_runner.run_pretraining(pretrain_fixtures.config(
        data, "full_results", num_train_steps=2, save_checkpoints_steps=2))
    evaluate = {"do_train": False, "do_eval": True, "num_eval_steps": 1}
    first = _cli(data, "full_results", **evaluate)
    assert first.returncode == 0, first.stderr[-3000:]
    results_dir = data / "models" / "full_results" / "results"
    txt, pkl = results_dir / "unsup_results.txt", results_dir / "unsup_results.pkl"
    before = (txt.read_text(), pkl.read_bytes())
    failed = _cli(data, "full_results", limit=200, **evaluate)  # results.txt is ~700 B
    assert failed.returncode == 74, failed.stderr[-3000:]
    assert failed.stderr.strip().splitlines()[-1].startswith(
        f"error: Cannot write {txt}: File too large.")
    assert (txt.read_text(), pkl.read_bytes()) == before
    assert pickle.loads(before[1])["global_step"] == 2
    assert sorted(os.listdir(results_dir)) == ["unsup_results.pkl", "unsup_results.txt"]
    again = _cli(data, "full_results", **evaluate)
    assert again.returncode == 0 and txt.read_text() == before[0]
