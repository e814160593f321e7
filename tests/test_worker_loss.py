"""A dead worker in `multi_worker` pre-training (util/worker_loss.py): the survivor stops
within a bound with one line and exit code 69, nothing the chief wrote is damaged, and
re-running every worker continues from the chief's latest checkpoint.

Two real run_pretraining.py processes on localhost ports with a tiny model.
"""

import json
import re
import signal
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

import pretrain_fixtures
from pretrain import pretrain_runner
from util import io_utils, worker_loss
from worker_fixtures import REPO, Cluster, free_ports

STEPS, SAVE_EVERY = 30, 10
# Small enough for ~1 step/s per worker on a loaded 2-core machine; the data's length.
HPARAMS = {**pretrain_fixtures.TINY, "model_hparam_overrides": {
    "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 1,
    "intermediate_size": 64}, "embedding_size": 32, "num_train_steps": STEPS,
    "save_checkpoints_steps": SAVE_EVERY, "iterations_per_loop": 1, "log_every_steps": 1,
    "distribution_strategy": "multi_worker"}
# The survivor must stop within this many seconds of the loss, measured to its exit
# (TensorFlow notices at once on a reset connection, else after the heartbeat timeout;
# the rest is a loaded machine's slack).
BOUND = 60
LOST = (r"error: Lost worker {index} \(127\.0\.0\.1:{port}\) of the multi_worker cluster: "
        r"(?P<cause>[^.]+)\. This worker stopped; nothing was saved after the chief's "
        r"latest checkpoint (?P<ckpt>\S+); restart every worker with the same command to "
        r"continue from it\.")


@pytest.fixture(name="data_dir", scope="module")
def fixture_data_dir(tmp_path_factory):
    if not pretrain_fixtures.have_shared_data():
        pytest.skip(f"real data not found at {pretrain_fixtures.SHARED}")
    return pretrain_fixtures.data_dir(tmp_path_factory.getbasetemp())


def _cmd(data_dir, name, **hparams):
    return [sys.executable, str(REPO / "run_pretraining.py"), "--data-dir", str(data_dir),
            "--model-name", name, "--hparams", json.dumps({**HPARAMS, **hparams})]


def _reached(step):
    return lambda out: re.search(rf"^{step}/{STEPS} ", out, re.M) is not None


def _stops_within_bound(survivor, lost_index, port):
    """Waits for the survivor; returns (seconds to its exit, checkpoint it names, cause)."""
    start = time.monotonic()
    code = survivor.wait(BOUND)
    seconds = time.monotonic() - start
    err = survivor.err()
    assert code == worker_loss.EXIT_CODE == 69, (code, err[-3000:])
    assert "Traceback" not in err, err[-3000:]
    match = re.fullmatch(LOST.format(index=lost_index, port=port), err.strip().splitlines()[-1])
    assert match, err[-2000:]
    return seconds, match.group("ckpt"), match.group("cause")


def _check_checkpoint(path):
    """The checkpoint loads completely: its step, finite weights; returns the step."""
    reader = tf.train.load_checkpoint(path)
    step = int(reader.get_tensor("global_step"))
    assert path.endswith(f"model.ckpt-{step}")
    for name, _ in tf.train.list_variables(path):
        value = reader.get_tensor(name)
        assert value.dtype.kind != "f" or np.isfinite(value).all(), name
    return step


def test_killed_worker_stops_the_chief_and_both_resume_from_its_checkpoint(data_dir,
                                                                           tmp_path):
    ports = free_ports(2)
    model_dir = data_dir / "models" / "worker_killed"
    cmd = _cmd(data_dir, "worker_killed")
    with Cluster(cmd, tmp_path / "run1", ports) as cluster:
        chief, worker = cluster.workers
        cluster.wait_until(0, _reached(SAVE_EVERY + 2))  # a checkpoint exists
        worker.kill()  # SIGKILL
        seconds, ckpt, cause = _stops_within_bound(chief, 1, ports[1])
    print(f"chief stopped {seconds:.1f} s after the kill ({cause})")
    # Nothing the chief wrote is damaged: the named checkpoint is the latest, complete,
    # no temporary files are left, the config file is whole.
    assert ckpt == tf.train.latest_checkpoint(str(model_dir))
    stopped_at = _check_checkpoint(ckpt)
    assert stopped_at >= SAVE_EVERY and stopped_at % SAVE_EVERY == 0
    assert not [p for p in model_dir.iterdir() if io_utils.TEMP_MARKER in p.name]
    assert json.loads((model_dir / "pretrain_config.json").read_text())["num_train_steps"] \
        == STEPS

    with Cluster(cmd, tmp_path / "run2", ports) as cluster:  # the same command again
        assert cluster.wait_all() == [0, 0], cluster.workers[0].err()[-3000:]
        outs = [w.out() for w in cluster.workers]
    for out in outs:  # both resumed from the chief's checkpoint and ended together
        assert f"Training for {STEPS - stopped_at} steps (from step {stopped_at})" in out
        assert f"Finished training at step {STEPS}" in out
    final = tf.train.latest_checkpoint(str(model_dir))
    assert _check_checkpoint(final) == STEPS
    # The result files of an evaluation of the final model are complete.
    config = pretrain_fixtures.config(data_dir, "worker_killed", **{
        **HPARAMS, "distribution_strategy": "one_device", "do_train": False,
        "do_eval": True, "num_eval_steps": 2})
    results = pretrain_runner.run_pretraining(config)
    assert io_utils.load_pickle(config.results_pkl) == results
    assert results["global_step"] == STEPS and np.isfinite(results["disc_loss"])
    assert len(open(config.results_txt).read().splitlines()) == len(results)


def test_frozen_chief_is_found_by_the_heartbeat_timeout(data_dir, tmp_path):
    # SIGSTOP keeps the chief's sockets open, as a vanished machine would: only the
    # missing heartbeats tell the worker.
    ports = free_ports(2)
    cmd = _cmd(data_dir, "frozen", worker_heartbeat_timeout_secs=3)
    with Cluster(cmd, tmp_path / "run", ports) as cluster:
        chief, worker = cluster.workers
        cluster.wait_until(0, _reached(SAVE_EVERY + 2))
        chief.proc.send_signal(signal.SIGSTOP)
        seconds, ckpt, cause = _stops_within_bound(worker, 0, ports[0])
    print(f"worker stopped {seconds:.1f} s after the chief froze ({cause})")
    assert "heartbeat" in cause
    assert _check_checkpoint(ckpt) % SAVE_EVERY == 0


def test_lost_worker_message_names_the_worker_and_the_cause(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", json.dumps({
        "cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 0}}))
    # The silent task is the one listed, whichever task reported it.
    heartbeats = ("Collective ops is aborted by: Error reported from /job:worker/task:0: "
                  "The following tasks are unhealthy (stopped sending heartbeats):\n"
                  "/job:worker/replica:0/task:1\nThe tasks have crashed.")
    assert worker_loss.worker_lost_message(heartbeats, True, "/m/model.ckpt-20") == (
        "Lost worker 1 (b:2) of the multi_worker cluster: it stopped sending heartbeats. "
        "This worker stopped; nothing was saved after the chief's latest checkpoint "
        "/m/model.ckpt-20; restart every worker with the same command to continue from it.")
    leader_gone = "Collective ops is aborted by: Deadline Exceeded\n\nRPC: " \
                  "/tensorflow.CoordinationService/Heartbeat"
    assert worker_loss.worker_lost_message(leader_gone, False, None).startswith(
        "Lost worker 0 (a:1) of the multi_worker cluster: its coordination service "
        "stopped answering heartbeats. This worker stopped; no checkpoint was saved yet;")
    assert "Lost another worker of the multi_worker cluster: TensorFlow reported: " \
           "Socket timeout." in worker_loss.worker_lost_message(
               "Collective ops is aborted by: Socket timeout.", True, None)
