"""Tests for util/training.py: the shared loop on a toy least-squares problem.

The loss is mean((x w - y)^2) over a batch, so gradients, clipping and the optimizer
update can be recomputed by hand in numpy.
"""

import glob
import os

import numpy as np
import pytest
import tensorflow as tf

from model.optimization import AdamWeightDecay
from util import training

DIM, BATCH = 4, 8


class RecordingManager:
    """Stands in for util.checkpoint.CheckpointManager: records what would be saved."""

    def __init__(self):
        self.saved = []  # (step, {name: value})

    def save(self, named_vars, step):
        self.saved.append((step, {k: v.numpy().copy() for k, v in named_vars.items()}))


def _data(n=64, seed=0):
    rng = np.random.RandomState(seed)
    x = rng.randn(n, DIM).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5, 3.0], np.float32)).astype(np.float32)
    return x, y


def _dataset(x, y):
    return tf.data.Dataset.from_tensor_slices({"x": x, "y": y}).repeat().batch(BATCH)


def _build(settings, loss_fn=None, lr=0.1, w0=None):
    strategy = tf.distribute.get_strategy()
    w = tf.Variable(np.zeros(DIM, np.float32) if w0 is None else w0, name="w")
    trainable = {"w": w}
    optimizer = AdamWeightDecay(trainable)
    global_step = training.make_global_step()

    def default_loss(features, seed, is_training):
        del seed, is_training
        err = tf.linalg.matvec(features["x"], w) - features["y"]
        mse = tf.reduce_mean(err ** 2)
        return mse, {"mse": mse}

    trainer = training.Trainer(strategy, loss_fn or default_loss, trainable, optimizer,
                               lambda step: tf.constant(lr), global_step, settings, ["mse"])
    state = {"w": w, **optimizer.slot_variables(), "global_step": global_step}
    return trainer, state


def test_one_step_matches_numpy_adam_with_clipping():
    x, y = _data()
    w0 = np.array([0.3, 0.1, -0.2, 0.0], np.float32)
    trainer, state = _build(training.LoopSettings(num_train_steps=1, log_every_steps=1),
                            w0=w0, lr=0.05)
    result = training.train(trainer, iter(_dataset(x, y)), None, state)
    xb, yb = x[:BATCH], y[:BATCH]
    grad = 2.0 / BATCH * xb.T @ (xb @ w0 - yb)
    norm = np.linalg.norm(grad)
    grad = grad * min(1.0, 1.0 / norm)  # global-norm clip at 1.0
    m, v = 0.1 * grad, 0.001 * grad ** 2  # no bias correction
    expected = w0 - 0.05 * m / (np.sqrt(v) + 1e-6)
    assert norm > 1.0  # the clip was active
    np.testing.assert_allclose(state["w"].numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state["w/adam_m"].numpy(), m, rtol=1e-5)
    assert result.global_step == 1 and int(state["global_step"].numpy()) == 1
    np.testing.assert_allclose(result.losses["loss"], np.mean((xb @ w0 - yb) ** 2), rtol=1e-5)


def test_loss_decreases_and_cadence_of_logs_and_checkpoints(capsys, tmp_path):
    x, y = _data()
    settings = training.LoopSettings(num_train_steps=25, steps_per_loop=4, log_every_steps=10,
                                     save_checkpoints_steps=8, summary_dir=str(tmp_path))
    trainer, state = _build(settings)
    manager = RecordingManager()
    result = training.train(trainer, iter(_dataset(x, y)), manager, state)
    assert result.global_step == 25 and result.steps_run == 25
    assert [s for s, _ in manager.saved] == [8, 16, 24, 25]
    lines = [l for l in capsys.readouterr().out.splitlines() if "SPS" in l]
    assert [l.split(" ")[0] for l in lines] == ["10/25", "20/25", "25/25"]
    assert " - loss: " in lines[0] and " - mse: " in lines[0] and "ETA: " in lines[0]
    first = float(lines[0].split(" - loss: ")[1].split()[0])
    final = float(lines[-1].split(" - loss: ")[1].split()[0])
    assert final < 0.5 * first  # least squares with Adam at lr 0.1 converges quickly
    events = glob.glob(os.path.join(str(tmp_path), "events.out.tfevents.*"))
    assert events
    tags = {v.tag for e in tf.compat.v1.train.summary_iterator(events[0])
            for v in e.summary.value}
    assert {"loss", "mse", "learning_rate", "steps_per_sec"} <= tags


def test_steps_per_loop_does_not_change_the_result():
    x, y = _data()
    weights = []
    for steps_per_loop in (1, 5):
        settings = training.LoopSettings(num_train_steps=10, steps_per_loop=steps_per_loop,
                                         log_every_steps=10, save_checkpoints_steps=100)
        trainer, state = _build(settings)
        training.train(trainer, iter(_dataset(x, y)), None, state)
        weights.append(state["w"].numpy())
    np.testing.assert_allclose(weights[0], weights[1], rtol=1e-6)


def test_seed_and_step_reach_the_loss_fn():
    x, y = _data()
    seen = []

    def loss_fn(features, seed, is_training):
        assert is_training is True
        w = state_holder["w"]
        mse = tf.reduce_mean((tf.linalg.matvec(features["x"], w) - features["y"]) ** 2)
        # A seed-dependent term with zero gradient effect would be invisible, so record it.
        tf.py_function(lambda s: seen.append(s.numpy().tolist()), [seed], [])
        return mse, {"mse": mse}

    settings = training.LoopSettings(num_train_steps=3, seed=7, log_every_steps=3)
    state_holder = {}
    trainer, state = _build(settings, loss_fn=loss_fn)
    state_holder["w"] = state["w"]
    training.train(trainer, iter(_dataset(x, y)), None, state)
    assert seen == [[7, 0], [7, 1], [7, 2]]


def test_resume_continues_from_global_step():
    x, y = _data()
    settings = training.LoopSettings(num_train_steps=6, log_every_steps=3,
                                     save_checkpoints_steps=3)
    trainer, state = _build(settings)
    state["global_step"].assign(4)  # as if restored from a step-4 checkpoint
    manager = RecordingManager()
    result = training.train(trainer, iter(_dataset(x, y)), manager, state)
    assert (result.global_step, result.steps_run) == (6, 2)
    assert [s for s, _ in manager.saved] == [6]
    done = training.train(trainer, iter(_dataset(x, y)), manager, state)
    assert done.steps_run == 0 and len(manager.saved) == 1


def test_nan_loss_stops_with_step_and_loss_name_and_saves_nothing_bad():
    x, y = _data()
    holder = {}

    def loss_fn(features, seed, is_training):
        w = holder["w"]
        mse = tf.reduce_mean((tf.linalg.matvec(features["x"], w) - features["y"]) ** 2)
        # The auxiliary loss becomes infinite from global step 5 (seed[1] is the step).
        bad = tf.where(seed[1] >= 5, tf.constant(np.inf, tf.float32), 0.0)
        return mse + bad, {"mse": mse, "aux_term": bad}

    settings = training.LoopSettings(num_train_steps=20, steps_per_loop=4, log_every_steps=4,
                                     save_checkpoints_steps=4)
    strategy = tf.distribute.get_strategy()
    w = tf.Variable(np.zeros(DIM, np.float32), name="w")
    holder["w"] = w
    optimizer = AdamWeightDecay({"w": w})
    step = training.make_global_step()
    trainer = training.Trainer(strategy, loss_fn, {"w": w}, optimizer,
                               lambda s: tf.constant(0.1), step, settings, ["mse", "aux_term"])
    manager = RecordingManager()
    state = {"w": w, "global_step": step}
    with pytest.raises(training.TrainingDiverged, match=r"step 6 .*loss=inf.*aux_term=inf"):
        training.train(trainer, iter(_dataset(x, y)), manager, state)
    assert [s for s, _ in manager.saved] == [4]
    assert all(np.isfinite(v).all() for _, vals in manager.saved for v in vals.values())


def test_float16_loss_scale_skips_overflow_and_halves():
    x, y = _data()
    settings = training.LoopSettings(num_train_steps=1, mixed_precision="float16",
                                     initial_loss_scale=2.0 ** 127, log_every_steps=1)
    w0 = np.array([0.3, 0.1, -0.2, 0.0], np.float32)
    trainer, state = _build(settings, w0=w0)
    # scale * loss overflows float32, so the gradients are inf: skip the update, which
    # is no step (tests/test_loss_scale.py follows the retries).
    trainer.train_steps(iter(_dataset(x, y)), tf.constant(1))
    np.testing.assert_array_equal(state["w"].numpy(), w0)
    assert float(trainer.loss_scale.scale.numpy()) == 2.0 ** 126
    assert int(state["global_step"].numpy()) == 0


def test_float16_loss_scale_grows_after_good_steps_and_matches_unscaled():
    x, y = _data()
    settings = training.LoopSettings(num_train_steps=3, mixed_precision="float16",
                                     initial_loss_scale=8.0, loss_scale_growth_steps=2,
                                     log_every_steps=3)
    trainer, state = _build(settings)
    training.train(trainer, iter(_dataset(x, y)), None, state)
    assert float(trainer.loss_scale.scale.numpy()) == 16.0  # doubled after 2 good steps
    reference, ref_state = _build(training.LoopSettings(num_train_steps=3, log_every_steps=3))
    training.train(reference, iter(_dataset(x, y)), None, ref_state)
    np.testing.assert_allclose(state["w"].numpy(), ref_state["w"].numpy(), rtol=1e-5)


def test_jit_compile_gives_the_same_weights():
    x, y = _data()
    weights = []
    for jit in (False, True):
        settings = training.LoopSettings(num_train_steps=4, jit_compile=jit, log_every_steps=4)
        trainer, state = _build(settings)
        training.train(trainer, iter(_dataset(x, y)), None, state)
        weights.append(state["w"].numpy())
    np.testing.assert_allclose(weights[0], weights[1], rtol=1e-5, atol=1e-6)


def test_compute_dtype_rejects_unknown_precision():
    assert training.compute_dtype("bfloat16") == tf.bfloat16
    with pytest.raises(ValueError, match="mixed_precision must be one of"):
        training.compute_dtype("float8")
