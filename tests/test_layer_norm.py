"""model/layer_norm.py: both kernels compute layer normalisation and its gradients as
numpy does in float64, the fused kernel really runs where chosen, and the "ops" form
takes over where the fused kernel cannot run (XLA)."""

import numpy as np
import pytest
import tensorflow as tf

from model import layer_norm as ln
from model import modeling
from util import backend

EPS = 1e-12
needs_fused = pytest.mark.skipif(not ln.fused_kernel_usable(),
                                 reason="no fused LayerNorm kernel in this TensorFlow")


def numpy_layer_norm(x, gamma, beta, dy):
    """Forward and gradients in float64: y, dx, dgamma, dbeta."""
    x, dy = x.astype(np.float64), dy.astype(np.float64)
    centered = x - x.mean(-1, keepdims=True)
    rstd = 1.0 / np.sqrt((centered ** 2).mean(-1, keepdims=True) + EPS)
    x_hat = centered * rstd
    g = dy * gamma
    dx = rstd * (g - g.mean(-1, keepdims=True)
                 - x_hat * (g * x_hat).mean(-1, keepdims=True))
    axes = tuple(range(x.ndim - 1))
    return x_hat * gamma + beta, dx, (dy * x_hat).sum(axes), dy.sum(axes)


def inputs(shape, shift, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=shape) * 2.0 + shift).astype(np.float32)
    gamma = (1.0 + 0.3 * rng.normal(size=shape[-1])).astype(np.float32)
    beta = (0.3 * rng.normal(size=shape[-1])).astype(np.float32)
    dy = rng.normal(size=shape).astype(np.float32)
    return x, gamma, beta, dy


def forward_backward(kernel, x, gamma, beta, dy, jit_compile=False):
    @tf.function(jit_compile=jit_compile)
    def run(x, gamma, beta):
        with tf.GradientTape() as tape:
            tape.watch([x, gamma, beta])
            y = ln.layer_norm(x, gamma, beta, EPS, kernel=kernel)
            total = tf.reduce_sum(y * dy)
        return y, tape.gradient(total, [x, gamma, beta])

    args = [tf.constant(a) for a in (x, gamma, beta)]
    y, grads = run(*args)
    ops = {op.type for op in run.get_concrete_function(*args).graph.get_operations()}
    return [t.numpy() for t in (y, *grads)], ops


@pytest.mark.parametrize("kernel", ["fused", "ops"])
@pytest.mark.parametrize("shape, shift", [((4, 7, 48), 0.0), ((30, 64), 0.0),
                                          ((6, 5, 32), 300.0)])  # large mean: two-pass
def test_values_and_gradients_match_numpy(kernel, shape, shift):
    x, gamma, beta, dy = inputs(shape, shift)
    got, ops = forward_backward(kernel, x, gamma, beta, dy)
    want = numpy_layer_norm(x, gamma, beta, dy)
    tol = 2e-5 if shift == 0 else 1e-3  # float32 round-off grows with |mean| / std
    for name, g, w in zip(("y", "dx", "dgamma", "dbeta"), got, want):
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol, err_msg=name)
    assert ("_MklLayerNorm" in ops) == (kernel == "fused" and ln.fused_kernel_usable())


@needs_fused
def test_fused_kernel_runs_eagerly_with_gradients():
    x, gamma, beta, dy = inputs((3, 9, 16), 1.0, seed=2)
    args = [tf.constant(a) for a in (x, gamma, beta)]
    with tf.GradientTape() as tape:
        tape.watch(args)
        y = ln.layer_norm(*args, EPS, kernel="fused")
        total = tf.reduce_sum(y * dy)
    got = [y.numpy()] + [g.numpy() for g in tape.gradient(total, args)]
    for g, w in zip(got, numpy_layer_norm(x, gamma, beta, dy)):
        np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-5)
    assert y.shape == (3, 9, 16)


@needs_fused
def test_under_xla_the_ops_form_takes_over():
    x, gamma, beta, dy = inputs((8, 32), 0.5, seed=3)
    got, _ = forward_backward("fused", x, gamma, beta, dy, jit_compile=True)
    for g, w in zip(got, numpy_layer_norm(x, gamma, beta, dy)):
        np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-5)


def test_kernel_comes_from_the_environment(monkeypatch):
    x, gamma, beta, dy = inputs((4, 16), 0.0, seed=4)
    for kernel in backend.LAYER_NORM_KERNELS:
        monkeypatch.setenv(backend.LAYER_NORM_VAR, kernel)
        _, ops = forward_backward(None, x, gamma, beta, dy)
        assert ("_MklLayerNorm" in ops) == (kernel == "fused" and ln.fused_kernel_usable())
    monkeypatch.setenv(backend.LAYER_NORM_VAR, "onednn")
    with pytest.raises(ValueError, match="ELECTRA_LAYER_NORM='onednn'.*fused, ops"):
        ln.layer_norm(tf.constant(x), gamma, beta, EPS)


@needs_fused
def test_encoder_outputs_and_gradients_agree_across_kernels(monkeypatch):
    config = modeling.BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=2,
                                 num_attention_heads=4, intermediate_size=64,
                                 embedding_size=16)
    model = modeling.BertModel(config)
    rng = np.random.default_rng(5)
    ids = tf.constant(rng.integers(0, 60, (3, 10)), tf.int32)
    mask = tf.constant([[1] * 10, [1] * 6 + [0] * 4, [1] * 3 + [0] * 7], tf.int32)
    results = {}
    for kernel in backend.LAYER_NORM_KERNELS:
        monkeypatch.setenv(backend.LAYER_NORM_VAR, kernel)

        @tf.function
        def run():
            with tf.GradientTape() as tape:
                out = model(ids, mask, tf.zeros_like(ids)).sequence_output
                loss = tf.reduce_sum(out * tf.sin(tf.range(32, dtype=tf.float32)))
            return out, tape.gradient(loss, model.trainable_variables)

        out, grads = run()
        results[kernel] = [out.numpy()] + [tf.convert_to_tensor(g).numpy() for g in grads]
    for fused, plain in zip(results["fused"], results["ops"]):
        np.testing.assert_allclose(fused, plain, rtol=1e-4, atol=1e-5)
