"""SIGTERM / SIGINT during training: a checkpoint at the step reached, exit code 75, and a
rerun that continues (util/preemption.py, util/training.py, both runners).

The loop-level tests use a toy least-squares model; the end-to-end ones run the real
scripts in subprocesses with tiny models and send real signals.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from model.optimization import AdamWeightDecay
from util import preemption, training

REPO = Path(__file__).resolve().parents[1]
DIM, BATCH = 4, 8


class RecordingManager:
    """Stands in for util.checkpoint.CheckpointManager: records the saved steps."""

    def __init__(self):
        self.saved = []

    def save(self, named_vars, step):
        del named_vars
        self.saved.append(step)
        return f"ckpt-{step}"


def _toy(num_train_steps, steps_per_loop, on_step=None):
    """A least-squares Trainer; on_step(step) runs (eagerly) inside every step."""
    rng = np.random.RandomState(0)
    x = rng.randn(64, DIM).astype(np.float32)
    y = x @ np.array([1.0, -2.0, 0.5, 3.0], np.float32)
    w = tf.Variable(np.zeros(DIM, np.float32), name="w")

    def loss_fn(features, seed, is_training):
        del is_training
        if on_step is not None:
            def call(step):
                on_step(int(step.numpy()))  # py_function with no outputs must return None

            tf.py_function(call, [seed[1]], [])
        mse = tf.reduce_mean((tf.linalg.matvec(features["x"], w) - features["y"]) ** 2)
        return mse, {}

    settings = training.LoopSettings(num_train_steps=num_train_steps,
                                     steps_per_loop=steps_per_loop,
                                     log_every_steps=num_train_steps,
                                     save_checkpoints_steps=10 * num_train_steps)
    step = training.make_global_step()
    trainer = training.Trainer(tf.distribute.get_strategy(), loss_fn, {"w": w},
                               AdamWeightDecay({"w": w}), lambda s: tf.constant(0.1), step,
                               settings, [])
    data = tf.data.Dataset.from_tensor_slices({"x": x, "y": y}).repeat().batch(BATCH)
    return trainer, {"w": w, "global_step": step}, iter(data)


def test_stop_inside_a_long_compiled_call_ends_it_before_the_next_step():
    stop = preemption.StopRequest()
    # The request arrives during step 3 of a single 100-step compiled call.
    trainer, state, data = _toy(100, 100, lambda s: s == 3 and stop.request(signal.SIGTERM))
    manager = RecordingManager()
    with pytest.raises(preemption.Preempted) as info:
        training.train(trainer, data, manager, state, stop=stop)
    assert int(state["global_step"].numpy()) == 4  # steps 0..3 ran, no more
    assert manager.saved == [4]
    assert str(info.value) == ("Stopped by SIGTERM at step 4; checkpoint saved to ckpt-4; "
                               "re-run the same command to continue.")
    # Resuming continues at step 4 and finishes without another checkpoint at 4.
    result = training.train(trainer, data, manager, state, stop=preemption.StopRequest())
    assert (result.global_step, result.steps_run) == (100, 96) and manager.saved == [4, 100]


def test_stop_before_training_saves_at_the_start_step_without_running_one():
    stop = preemption.StopRequest()
    stop.request(signal.SIGINT)
    trainer, state, data = _toy(10, 5)
    state["global_step"].assign(3)  # as if resumed from a step-3 checkpoint
    manager = RecordingManager()
    with pytest.raises(preemption.Preempted, match="Stopped by SIGINT at step 3;"):
        training.train(trainer, data, manager, state, stop=stop)
    assert manager.saved == [3] and int(state["global_step"].numpy()) == 3
    np.testing.assert_array_equal(state["w"].numpy(), np.zeros(DIM))


def test_a_real_sigterm_reaches_the_compiled_loop_within_a_step():
    # The signal is sent from inside step 2; Python handlers cannot run until the
    # compiled call returns, so only the wakeup-fd watcher can stop it early.
    holder = {}

    def on_step(step):
        if step == 2:
            # Listeners fire in order, so once ours has fired the loop's flag is set too.
            # Waiting for it (not a fixed sleep) keeps the test exact on a loaded machine.
            fired = threading.Event()
            holder["stop"].add_listener(fired.set)
            os.kill(os.getpid(), signal.SIGTERM)
            assert fired.wait(60), "the watcher thread never saw the signal"

    previous = signal.getsignal(signal.SIGTERM)
    trainer, state, data = _toy(200, 200, on_step)
    with pytest.raises(preemption.Preempted, match="Stopped by SIGTERM at step 3;"):
        with preemption.StopRequest() as stop:
            holder["stop"] = stop
            training.train(trainer, data, RecordingManager(), state, stop=stop)
    assert signal.getsignal(signal.SIGTERM) is previous  # handlers restored
    assert signal.set_wakeup_fd(-1) == -1  # and the wakeup fd


def test_second_ctrl_c_aborts_at_once():
    # Restored to whatever was there before: SIG_IGN when the suite runs as a background
    # job of a non-interactive shell, Python's default handler otherwise.
    previous = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        with preemption.StopRequest() as stop:
            os.kill(os.getpid(), signal.SIGINT)
            deadline = time.time() + 10
            while not stop.requested and time.time() < deadline:
                time.sleep(0.01)
            assert stop.signal_name == "SIGINT"
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)  # the second signal interrupts this
    assert signal.getsignal(signal.SIGINT) is previous


def test_outside_the_main_thread_it_does_nothing():
    seen = []

    def run():
        with preemption.StopRequest() as stop:
            seen.append(signal.getsignal(signal.SIGTERM) is not stop._handle)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert seen == [True]


# -- end to end: the real scripts in subprocesses ---------------------------------------

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
STOP_LINE = (r"Stopped by {signal} at step (\d+); checkpoint saved to (\S+); re-run the "
             r"same command to continue\.")


def _progress_lines(text):
    return [line for line in text.splitlines() if ", SPS: " in line]


def _loss(line):
    return float(line.split(" - loss: ")[1].split()[0])


def _signal_after(cmd, sig, ready):
    """Runs cmd, sends `sig` once ready(stdout lines so far) is true; returns
    (returncode, stdout lines, stderr)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=ENV, cwd=str(REPO))
    lines, deadline = [], time.time() + 600
    try:
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if ready(lines) or time.time() > deadline:
                proc.send_signal(sig)
                break
        lines += proc.stdout.read().splitlines()
        stderr = proc.stderr.read()
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, lines, stderr


def _pretrain_cmd(data_dir, name, **hparams):
    import pretrain_fixtures  # pylint: disable=import-outside-toplevel
    hparams = {**pretrain_fixtures.TINY, "num_train_steps": 30, "save_checkpoints_steps": 100,
               **hparams}
    return [sys.executable, str(REPO / "run_pretraining.py"), "--data-dir", str(data_dir),
            "--model-name", name, "--hparams", json.dumps(hparams)]


@pytest.fixture(name="pretrain_data", scope="module")
def fixture_pretrain_data(tmp_path_factory):
    import pretrain_fixtures  # pylint: disable=import-outside-toplevel
    if not pretrain_fixtures.have_shared_data():
        pytest.skip(f"real data not found at {pretrain_fixtures.SHARED}")
    return pretrain_fixtures.data_dir(tmp_path_factory.getbasetemp())


def _stopped_at(stderr, sig_name, model_dir):
    import re  # pylint: disable=import-outside-toplevel
    match = re.fullmatch(STOP_LINE.format(signal=sig_name), stderr.strip().splitlines()[-1])
    assert match, stderr[-2000:]
    step, path = int(match.group(1)), match.group(2)
    assert path == str(model_dir / f"model.ckpt-{step}")
    assert tf.train.latest_checkpoint(str(model_dir)) == path
    assert tf.train.load_checkpoint(path).get_tensor("global_step") == step
    return step


def test_pretraining_sigterm_saves_at_the_step_reached_and_the_rerun_finishes(pretrain_data):
    cmd = _pretrain_cmd(pretrain_data, "sigterm", iterations_per_loop=1, log_every_steps=1)
    code, lines, stderr = _signal_after(
        cmd, signal.SIGTERM, lambda seen: any(l.startswith("4/30") for l in seen))
    assert code == preemption.EXIT_CODE == 75
    model_dir = pretrain_data / "models" / "sigterm"
    step = _stopped_at(stderr, "SIGTERM", model_dir)
    first = _progress_lines("\n".join(lines))
    assert 4 <= step < 30 and first[-1].startswith(f"{step}/30")  # logged at the stop
    rerun = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600,
                           cwd=str(REPO))
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"Training for {30 - step} steps (from step {step})" in rerun.stdout
    second = _progress_lines(rerun.stdout)
    assert second[0].startswith(f"{step + 1}/30") and second[-1].startswith("30/30")
    latest = tf.train.latest_checkpoint(str(model_dir))
    assert latest.endswith("model.ckpt-30")
    assert tf.train.load_checkpoint(latest).get_tensor("global_step") == 30
    # Losses continue from the saved weights: the first resumed loss is not above the
    # last one before the stop by more than a quarter of the way back to the untrained
    # first-step loss (about 45), where a restart from scratch would put it.
    initial, before, after = _loss(first[0]), _loss(first[-1]), _loss(second[0])
    assert before < initial and after - before < 0.25 * (initial - before), \
        (initial, before, after)


def test_pretraining_sigint_cuts_a_long_compiled_call_short(pretrain_data):
    # 10 steps per compiled call: the stop must come inside the call after step 10.
    cmd = _pretrain_cmd(pretrain_data, "sigint", iterations_per_loop=10, log_every_steps=10)
    code, _, stderr = _signal_after(
        cmd, signal.SIGINT, lambda seen: any(l.startswith("10/30") for l in seen))
    assert code == 75
    model_dir = pretrain_data / "models" / "sigint"
    step = _stopped_at(stderr, "SIGINT", model_dir)
    assert 10 <= step < 20, step
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    rerun = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600,
                           cwd=str(REPO))
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"(from step {step})" in rerun.stdout
    assert tf.train.latest_checkpoint(str(model_dir)).endswith("model.ckpt-30")


def test_finetuning_stop_in_trial_2_resumes_that_trial_and_keeps_trial_1(tmp_path):
    import pickle  # pylint: disable=import-outside-toplevel
    import finetune_run_fixtures as rf  # pylint: disable=import-outside-toplevel
    data_dir = rf.make_data_dir(tmp_path / "data", ["cola"])
    rf.make_pretrained_model(data_dir, "tiny")
    hparams = {**rf.FAST_HPARAMS, "task_names": ["cola"], "num_trials": 2,
               "keep_all_models": False, "num_train_epochs": 3.0, "log_every_steps": 2,
               "iterations_per_loop": 2}
    cmd = [sys.executable, str(REPO / "run_finetuning.py"), "--data-dir", data_dir,
           "--model-name", "tiny", "--hparams", json.dumps(hparams)]

    def in_trial_2(seen):
        heading = [i for i, l in enumerate(seen) if "trial 2/2" in l]
        return bool(heading) and any(l.startswith("10/60") for l in seen[heading[0]:])

    code, lines, stderr = _signal_after(cmd, signal.SIGTERM, in_trial_2)
    assert code == 75, stderr[-2000:]
    root = Path(data_dir) / "models" / "tiny"
    trial_dir = root / "finetuning_models" / "cola_model_2"
    step = _stopped_at(stderr, "SIGTERM", trial_dir)
    assert 10 <= step < 60
    marker = json.loads((trial_dir / "preempted.json").read_text())
    assert marker["trial"] == 2 and len(marker["results"]) == 1
    with open(root / "results" / "cola_results.pkl", "rb") as f:
        trial_1 = pickle.load(f)
    assert len(trial_1) == 1 and marker["results"][0]["cola"]["mcc"] == \
        pytest.approx(float(trial_1[0]["cola"]["mcc"]))
    assert not (root / "finetuning_models" / "cola_model_1").exists()  # keep_all_models
    first_lines = (root / "results" / "cola_results.txt").read_text().splitlines()

    rerun = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600,
                           cwd=str(REPO))
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "Resuming the stopped run at trial 2" in rerun.stdout
    assert f"Resuming from step {step} of 60" in rerun.stdout
    assert "trial 1/2" not in rerun.stdout  # the finished trial is not run again
    assert _progress_lines(rerun.stdout)[-1].startswith("60/60")
    assert not (trial_dir / "preempted.json").exists()
    assert tf.train.latest_checkpoint(str(trial_dir)).endswith("model.ckpt-60")
    with open(root / "results" / "cola_results.pkl", "rb") as f:
        both = pickle.load(f)
    assert len(both) == 2 and both[0]["cola"]["mcc"] == pytest.approx(
        float(trial_1[0]["cola"]["mcc"]))
    lines = (root / "results" / "cola_results.txt").read_text().splitlines()
    assert len(first_lines) == 1 and len(lines) == 2 and lines[0] == first_lines[0]
    assert lines[1].endswith(f"seed: {marker['config']['seed']}")
