"""float16 dynamic loss scaling: an overflowing step is skipped without advancing
global_step or the learning-rate schedule (as Keras' LossScaleOptimizer leaves
optimizer.iterations in NVIDIA's AMP path), and the scale and its good-step counter are
checkpointed under their own names and restored.

Toy least-squares model (float32 maths; only the loop's scaling is float16's), then a
tiny real pre-training run that overflows float16 at the start.
"""

import numpy as np
import pytest
import tensorflow as tf

from model.optimization import AdamWeightDecay
from pretrain import pretrain_runner
from util import checkpoint, loss_scale, training

import pretrain_fixtures

DIM, BATCH = 4, 8
W0 = np.array([0.3, 0.1, -0.2, 0.0], np.float32)


def _batch():
    rng = np.random.RandomState(0)
    x = rng.randn(BATCH, DIM).astype(np.float32)
    return {"x": x, "y": x @ np.array([1.0, -2.0, 0.5, 3.0], np.float32)}


def _build(num_steps, precision="float16", scale=2.0 ** 127, growth=2000, extra_loss=None):
    """A Trainer whose LR is 0.01 * (step + 1): any advance of the schedule shows."""
    w = tf.Variable(W0, name="w")

    def loss_fn(features, seed, is_training):
        del seed, is_training
        mse = tf.reduce_mean((tf.linalg.matvec(features["x"], w) - features["y"]) ** 2)
        return mse + (extra_loss(w) if extra_loss else 0.0), {}

    step = training.make_global_step()
    optimizer = AdamWeightDecay({"w": w})
    settings = training.LoopSettings(num_train_steps=num_steps, log_every_steps=num_steps,
                                     mixed_precision=precision, initial_loss_scale=scale,
                                     loss_scale_growth_steps=growth)
    trainer = training.Trainer(tf.distribute.get_strategy(), loss_fn, {"w": w}, optimizer,
                               lambda s: 0.01 * tf.cast(s + 1, tf.float32), step, settings, [])
    state = {"w": w, **optimizer.slot_variables(), "global_step": step,
             **trainer.checkpoint_variables()}
    return trainer, state


def _same_batch_forever():
    return iter(tf.data.Dataset.from_tensors(_batch()).repeat())


def test_an_overflow_step_advances_neither_global_step_nor_the_lr():
    trainer, state = _build(2)
    data = _same_batch_forever()
    _, _, lr = trainer.train_steps(data, tf.constant(1))
    # 2^127 * loss overflows float32: the update is skipped and the scale halved.
    assert int(state["global_step"].numpy()) == 0 and float(lr) == pytest.approx(0.01)
    np.testing.assert_array_equal(state["w"].numpy(), W0)
    assert float(trainer.loss_scale.scale.numpy()) == 2.0 ** 126
    assert int(trainer.loss_scale.good_steps.numpy()) == 0
    _, _, lr = trainer.train_steps(data, tf.constant(1))
    assert int(state["global_step"].numpy()) == 0 and float(lr) == pytest.approx(0.01)
    # train() retries until two updates were applied, at LR 0.01 then 0.02: the same
    # weights as float32 on the same batches, where no step was ever skipped.
    result = training.train(trainer, data, None, state)
    skipped_scale = float(trainer.loss_scale.scale.numpy())
    assert result.global_step == 2 and skipped_scale < 2.0 ** 126
    assert int(trainer.loss_scale.good_steps.numpy()) == 2
    reference, ref_state = _build(2, precision="float32")
    training.train(reference, _same_batch_forever(), None, ref_state)
    np.testing.assert_allclose(state["w"].numpy(), ref_state["w"].numpy(), rtol=1e-6)
    assert not np.allclose(state["w"].numpy(), W0)


def test_gradients_that_overflow_even_at_scale_one_stop_training():
    # d/dw sqrt(0 * |w0|) = inf * 0 = NaN while the loss stays finite.
    trainer, state = _build(5, scale=2.0, extra_loss=lambda w: tf.sqrt(tf.abs(w[0]) * 0.0))
    with pytest.raises(training.TrainingDiverged,
                       match=r"non-finite gradients at step 0 with the float16 loss scale "
                             r"at its minimum 1\.0 \(the loss itself is finite\)"):
        training.train(trainer, _same_batch_forever(), None, state)
    assert int(state["global_step"].numpy()) == 0


def test_loss_scale_is_checkpointed_under_its_own_names_and_restored(tmp_path):
    trainer, state = _build(3, scale=2.0 ** 10, growth=2)
    training.train(trainer, _same_batch_forever(), None, state)
    scale, good = float(trainer.loss_scale.scale.numpy()), int(
        trainer.loss_scale.good_steps.numpy())
    assert (scale, good) == (2.0 ** 11, 1)  # doubled after 2 good steps, then 1 more
    path = checkpoint.save_checkpoint(state, str(tmp_path / "f16" / "model.ckpt-3"))
    names = dict(tf.train.list_variables(path))
    assert names[loss_scale.SCALE] == [] and names[loss_scale.GOOD_STEPS] == []
    f32, f32_state = _build(3, precision="float32")
    assert f32.checkpoint_variables() == {}
    assert set(names) - set(f32_state) == set(loss_scale.NAMES)  # the other names as ever

    resumed, resumed_state = _build(6, scale=2.0 ** 15, growth=2)
    checkpoint.restore_checkpoint(resumed_state, path, allow_missing=loss_scale.is_name)
    assert float(resumed.loss_scale.scale.numpy()) == scale
    assert int(resumed.loss_scale.good_steps.numpy()) == good
    training.train(resumed, _same_batch_forever(), None, resumed_state)
    # Continues the count: step 4 completes the growth period (scale x2), 5 and 6 another.
    assert float(resumed.loss_scale.scale.numpy()) == 2.0 ** 13

    # A checkpoint without them (float32) loads; the scale keeps its initial value.
    old = checkpoint.save_checkpoint(f32_state, str(tmp_path / "f32" / "model.ckpt-0"))
    fresh, fresh_state = _build(3, scale=2.0 ** 15)
    report = checkpoint.restore_checkpoint(fresh_state, old, allow_missing=loss_scale.is_name)
    assert sorted(report.missing) == sorted(loss_scale.NAMES)
    assert float(fresh.loss_scale.scale.numpy()) == 2.0 ** 15


@pytest.fixture(name="data", scope="module")
def fixture_data(tmp_path_factory):
    if not pretrain_fixtures.have_shared_data():
        pytest.skip(f"real data not found at {pretrain_fixtures.SHARED}")
    return pretrain_fixtures.data_dir(tmp_path_factory.getbasetemp())


def _f16_config(data, steps):
    # 2^40 overflows float16's backward pass (max 65504): the first steps are skipped.
    return pretrain_fixtures.config(data, "f16", mixed_precision="float16",
                                    loss_scale=2.0 ** 40, num_train_steps=steps,
                                    save_checkpoints_steps=steps, iterations_per_loop=1,
                                    log_every_steps=1)


def test_pretraining_in_float16_skips_overflows_and_resumes_with_the_saved_scale(data):
    config = _f16_config(data, 3)
    assert pretrain_runner.run_pretraining(config).global_step == 3
    path = tf.train.latest_checkpoint(config.model_dir)
    reader = tf.train.load_checkpoint(path)
    assert reader.get_tensor("global_step") == 3 and path.endswith("model.ckpt-3")
    assert float(reader.get_tensor(loss_scale.SCALE)) < 2.0 ** 40  # halved on overflows
    # Plant a scale that cannot overflow and a recognisable count: a resumed run must
    # continue from them, where a restart at 2^40 would overflow and reset the count.
    values = {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}
    values[loss_scale.SCALE] = np.float32(4.0)
    values[loss_scale.GOOD_STEPS] = np.int64(7)
    checkpoint.save_checkpoint({k: tf.Variable(v) for k, v in values.items()}, path)
    assert pretrain_runner.run_pretraining(_f16_config(data, 5)).global_step == 5
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(config.model_dir))
    assert float(reader.get_tensor(loss_scale.SCALE)) == 4.0
    assert reader.get_tensor(loss_scale.GOOD_STEPS) == 9
