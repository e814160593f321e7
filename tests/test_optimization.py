"""Tests for model/optimization.py: schedule, AdamWeightDecay vs numpy, layer-wise LR, 2 replicas."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import tensorflow as tf

from model import modeling, optimization

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- schedule


def lr_at(step, **kw):
    return float(optimization.learning_rate_schedule(tf.constant(step, tf.int64), **kw))


def test_schedule_warmup_and_linear_decay():
    kw = dict(learning_rate=1e-3, num_train_steps=1000, warmup_steps=100)
    assert lr_at(0, **kw) == 0.0
    # At step 50: decay (1 - 50/1000) = 0.95, warmup factor 0.5.
    assert lr_at(50, **kw) == pytest.approx(1e-3 * 0.95 * 0.5, rel=1e-6)
    assert lr_at(100, **kw) == pytest.approx(1e-3 * 0.9, rel=1e-6)  # peak below lr0
    assert lr_at(600, **kw) == pytest.approx(1e-3 * 0.4, rel=1e-6)
    assert lr_at(1000, **kw) == 0.0
    assert lr_at(5000, **kw) == 0.0  # beyond T stays at 0


def test_schedule_power_proportion_and_no_warmup():
    kw = dict(learning_rate=2.0, num_train_steps=200, lr_decay_power=2.0)
    assert lr_at(0, **kw) == pytest.approx(2.0)  # warmup 0: no warmup factor, no NaN
    assert lr_at(50, **kw) == pytest.approx(2.0 * 0.75 ** 2, rel=1e-6)
    # warmup = max(200 * 0.1, 5) = 20 steps.
    kw = dict(learning_rate=1.0, num_train_steps=200, warmup_steps=5, warmup_proportion=0.1)
    assert lr_at(10, **kw) == pytest.approx((1 - 10 / 200) * 10 / 20, rel=1e-6)
    assert lr_at(30, **kw) == pytest.approx(1 - 30 / 200, rel=1e-6)
    # The spec's example: peak 0.99 * lr0 at t = 10k of 1M.
    assert lr_at(10_000, learning_rate=5e-4, num_train_steps=1_000_000,
                 warmup_steps=10_000) == pytest.approx(0.99 * 5e-4, rel=1e-6)


def test_schedule_in_tf_function():
    fn = tf.function(lambda s: optimization.learning_rate_schedule(s, 1.0, 10, warmup_steps=2))
    assert float(fn(tf.constant(1, tf.int64))) == pytest.approx(0.9 * 0.5)


# ---------------------------------------------------------------- optimizer vs numpy


def numpy_adamw(params, grads_per_step, lrs, names, wd, mults, b1=0.9, b2=0.999, eps=1e-6):
    """The original AdamWeightDecayOptimizer.apply_gradients, in float64 numpy."""
    params = {n: p.astype(np.float64) for n, p in params.items()}
    m = {n: np.zeros_like(p) for n, p in params.items()}
    v = {n: np.zeros_like(p) for n, p in params.items()}
    for grads, lr in zip(grads_per_step, lrs):
        for n in names:
            g = grads[n]
            m[n] = b1 * m[n] + (1 - b1) * g
            v[n] = b2 * v[n] + (1 - b2) * g * g
            update = m[n] / (np.sqrt(v[n]) + eps)
            if not any(k in n for k in ("LayerNorm", "layer_norm", "bias")):
                update = update + wd * params[n]
            params[n] = params[n] - lr * mults.get(n, 1.0) * update
    return params, m, v


def make_named_vars(seed=0):
    rng = np.random.default_rng(seed)
    shapes = {"electra/encoder/layer_0/output/dense/kernel": (3, 4),
              "electra/encoder/layer_0/output/dense/bias": (4,),
              "electra/encoder/layer_0/output/LayerNorm/gamma": (4,),
              "generator_predictions/output_bias": (5,),
              "task_specific/rte/dense/kernel": (4, 2)}
    init = {n: rng.normal(size=s).astype(np.float32) for n, s in shapes.items()}
    return init, {n: tf.Variable(x, name=n) for n, x in init.items()}


@pytest.mark.parametrize("wd,use_mults,compiled", [(0.01, False, False), (0.1, True, True),
                                                   (0.0, True, False)])
@pytest.mark.parametrize("fused,rtol", [(False, 1e-6), (True, 1e-4)])
def test_optimizer_matches_numpy(wd, use_mults, compiled, fused, rtol):
    """fused=True rounds (1 - beta_2) in float32 (1.3e-5 relative), hence its looser rtol."""
    init, named = make_named_vars()
    names = list(named)
    mults = {names[0]: 0.5, names[3]: 0.25} if use_mults else {}
    opt = optimization.AdamWeightDecay(named, weight_decay_rate=wd, lr_multipliers=mults,
                                       fused=fused)
    rng = np.random.default_rng(1)
    steps = [{n: rng.normal(size=init[n].shape).astype(np.float32) for n in names}
             for _ in range(5)]
    lrs = [0.1, 0.05, 0.02, 0.1, 0.01]
    apply = opt.apply_gradients
    if compiled:
        apply = tf.function(apply, jit_compile=True)
    for grads, lr in zip(steps, lrs):
        apply([tf.constant(grads[n]) for n in names], tf.constant(lr))
    ref, m, v = numpy_adamw(init, steps, lrs, names, wd, mults)
    slots = opt.slot_variables()
    for n in names:
        np.testing.assert_allclose(named[n].numpy(), ref[n], rtol=rtol, atol=rtol, err_msg=n)
        np.testing.assert_allclose(slots[f"{n}/adam_m"].numpy(), m[n], rtol=rtol, atol=1e-7)
        np.testing.assert_allclose(slots[f"{n}/adam_v"].numpy(), v[n], rtol=rtol, atol=1e-7)


@pytest.mark.parametrize("fused,rtol", [(False, 1e-6), (True, 5e-5)])
def test_no_bias_correction_first_step(fused, rtol):
    """First step: m = 0.1 g, v = 0.001 g^2, so |update| = 0.1 / sqrt(0.001) = 3.16, not the
    bias-corrected 1.0."""
    var = tf.Variable([1.0, -2.0], name="x/bias")
    opt = optimization.AdamWeightDecay({"x/bias": var}, fused=fused)
    opt.apply_gradients([tf.constant([4.0, -1.0])], 1.0)
    step = 0.1 * 4 / (np.sqrt(0.001) * 4 + 1e-6), -0.1 / (np.sqrt(0.001) + 1e-6)
    np.testing.assert_allclose(var.numpy(), [1.0 - step[0], -2.0 - step[1]], rtol=rtol)


def test_slots_names_and_errors():
    _, named = make_named_vars()
    opt = optimization.AdamWeightDecay(named, weight_decay_rate=0.01)
    slots = opt.slot_variables()
    assert sorted(slots) == sorted([f"{n}/adam_{s}" for n in named for s in "mv"])
    assert all(not s.trainable and s.dtype == tf.float32 for s in slots.values())
    assert slots["task_specific/rte/dense/kernel/adam_m"].name == \
        "task_specific/rte/dense/kernel/adam_m:0"
    assert opt.decay_mask == (True, False, False, False, True)  # bias/LayerNorm excluded
    with pytest.raises(ValueError, match="5 variables"):
        opt.apply_gradients([None], 0.1)
    with pytest.raises(ValueError, match="does not have"):
        optimization.AdamWeightDecay(named, lr_multipliers={"nope": 1.0})


def test_none_gradient_and_indexed_slices():
    table = tf.Variable(np.ones((4, 2), np.float32), name="electra/embeddings/word_embeddings")
    other = tf.Variable([1.0], name="other/bias")
    opt = optimization.AdamWeightDecay({"a": table, "b": other})
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.gather(table, [1, 1, 3]))
    grad = tape.gradient(loss, table)
    assert isinstance(grad, tf.IndexedSlices)
    opt.apply_gradients([grad, None], 0.1)
    assert other.numpy()[0] == 1.0
    changed = np.abs(table.numpy() - 1.0).sum(axis=1) > 0
    np.testing.assert_array_equal(changed, [False, True, False, True])


def test_converges_on_quadratic():
    """bert's optimization_test: minimise ||w - target||^2 from zero."""
    w = tf.Variable(tf.zeros([3]), name="w")
    target = tf.constant([0.4, 0.2, -0.5])
    opt = optimization.AdamWeightDecay({"w": w}, weight_decay_rate=0.0)

    @tf.function
    def step(lr):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum((w - target) ** 2)
        (grad,) = tape.gradient(loss, [w])
        grad, _ = tf.clip_by_global_norm([grad], 1.0)
        opt.apply_gradients(grad, lr)

    for i in range(300):
        step(optimization.learning_rate_schedule(i, 0.2, 300, warmup_steps=10))
    np.testing.assert_allclose(w.numpy(), target.numpy(), atol=1e-3)


# ---------------------------------------------------------------- layer-wise LR


def test_layerwise_depths_for_every_variable_of_a_3_layer_model():
    cfg = modeling.BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=3,
                              num_attention_heads=2, intermediate_size=16, embedding_size=4)
    names = list(modeling.variables_by_name(modeling.BertModel(cfg)))
    names += ["task_specific/rte/dense/kernel", "task_specific/squad/qa_hidden/bias"]
    depths = optimization.layerwise_lr_depths(names, 3)
    assert list(depths) == names
    for name, depth in depths.items():
        if "/embeddings/" in name or "/embeddings_project/" in name:
            assert depth == 0, name
        elif name.startswith("task_specific/"):
            assert depth == 5, name
        else:
            assert depth == int(name.split("layer_")[1].split("/")[0]) + 1, name
    assert depths["electra/encoder/layer_2/output/LayerNorm/beta"] == 3
    mults = optimization.layerwise_lr_multipliers(names, 3, 0.8)
    assert mults["electra/embeddings/word_embeddings"] == pytest.approx(0.8 ** 5)
    assert mults["electra/embeddings_project/kernel"] == pytest.approx(0.8 ** 5)
    assert mults["electra/encoder/layer_0/intermediate/dense/kernel"] == pytest.approx(0.8 ** 4)
    assert mults["electra/encoder/layer_2/intermediate/dense/kernel"] == pytest.approx(0.8 ** 2)
    assert mults["task_specific/rte/dense/kernel"] == 1.0
    fixed = optimization.layerwise_lr_multipliers(names, 3, 0.8, fix_top_layer=True)
    assert fixed["electra/encoder/layer_2/intermediate/dense/kernel"] == pytest.approx(0.8)
    assert fixed["electra/embeddings/word_embeddings"] == pytest.approx(0.8 ** 4)
    assert fixed["task_specific/rte/dense/kernel"] == 1.0


def test_layerwise_layer_1_does_not_match_layer_11():
    depths = optimization.layerwise_lr_depths(
        ["electra/encoder/layer_1/x", "electra/encoder/layer_11/x"], 12)
    assert depths == {"electra/encoder/layer_1/x": 2, "electra/encoder/layer_11/x": 12}


def test_layerwise_unmatched_raises():
    with pytest.raises(ValueError, match="'discriminator_predictions/dense/kernel'"):
        optimization.layerwise_lr_depths(["electra/encoder/layer_0/a",
                                          "discriminator_predictions/dense/kernel"], 1)
    with pytest.raises(ValueError, match="encoder/layer_5/a"):
        optimization.layerwise_lr_depths(["electra/encoder/layer_5/a"], 3)


# ---------------------------------------------------------------- distribution


MIRRORED_SCRIPT = textwrap.dedent("""
    import os, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from model import optimization

    def run(strategy):
        with strategy.scope():
            named = {"layer/kernel": tf.Variable(np.full((3, 2), 0.5, np.float32),
                                                 name="layer/kernel"),
                     "layer/bias": tf.Variable(np.zeros(2, np.float32), name="layer/bias")}
            opt = optimization.AdamWeightDecay(named, weight_decay_rate=0.1,
                                               lr_multipliers={"layer/bias": 0.5})
        x = np.arange(24, dtype=np.float32).reshape(8, 3) / 10.0
        y = np.linspace(-1, 1, 16, dtype=np.float32).reshape(8, 2)
        data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8).repeat()
        iterator = iter(strategy.experimental_distribute_dataset(data))

        def replica_step(batch, lr):
            bx, by = batch
            with tf.GradientTape() as tape:
                pred = bx @ named["layer/kernel"] + named["layer/bias"]
                # Sum over the global batch / 8: replicas' gradients add up to the same total.
                loss = tf.reduce_sum((pred - by) ** 2) / 8.0
            grads = tape.gradient(loss, list(named.values()))
            grads = tf.distribute.get_replica_context().all_reduce("sum", grads)
            grads, _ = tf.clip_by_global_norm(grads, 1.0)
            opt.apply_gradients(grads, lr)

        @tf.function
        def step(lr):
            strategy.run(replica_step, args=(next(iterator), lr))

        for lr in (0.1, 0.05, 0.02):
            step(tf.constant(lr))
        values = {n: np.stack([t.numpy() for t in strategy.experimental_local_results(v)])
                  for n, v in {**named, **opt.slot_variables()}.items()}
        return values

    one = run(tf.distribute.OneDeviceStrategy("/cpu:0"))
    two = run(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
    # Single-worker MultiWorkerMirrored (collective ops, one replica) takes the same path.
    multi = run(tf.distribute.MultiWorkerMirroredStrategy())
    for name in one:
        np.testing.assert_allclose(multi[name][0], one[name][0], rtol=1e-5, atol=1e-6)
    for name in one:
        assert two[name].shape[0] == 2, name
        np.testing.assert_allclose(two[name][0], two[name][1], atol=0, err_msg=name)
        np.testing.assert_allclose(two[name][0], one[name][0], rtol=1e-5, atol=1e-6,
                                   err_msg=name)
        assert np.abs(one[name][0]).max() > 0, name
    assert abs(one["layer/kernel"][0] - 0.5).max() > 1e-3
    print("MIRRORED_OK")
""")


def test_mirrored_strategy_two_replicas_matches_one_device():
    """Logical devices must be configured before TF initialises, hence a subprocess."""
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert "MIRRORED_OK" in result.stdout, result.stderr[-3000:]
