"""Layer normalisation over the last axis: TensorFlow ops, or oneDNN's fused CPU kernel.

The "ops" form is five reductions and element-wise passes over the activations
(mean, squared difference, mean, scale, shift) and autodiff adds about as many again
for the gradient. The "fused" form runs oneDNN's _MklLayerNorm (one kernel, the same
two-pass statistics) forward, and a gradient that recomputes the statistics in one
XLA-compiled function. ELECTRA-Small, [4096, 256] on a 2-core AMD EPYC Zen 3: forward
2.5-3 -> 0.7-1 ms, forward + backward about 10.5 -> 6 ms; 25 LayerNorms per encoder
pass. util/backend.py chooses the form (ELECTRA_LAYER_NORM).

The fused kernel exists only on CPU and XLA cannot compile it, so the "ops" form is
used wherever it could not run: TensorFlow builds without it, machines with a GPU or
TPU, and code traced for XLA (jit_compile, TPU replication). SavedModels are traced
`portable()`: without it.
"""

import contextlib
import functools
import os

import tensorflow as tf
from tensorflow.python.framework import kernels, op_def_library  # pylint: disable=no-name-in-module
from tensorflow.python.ops import control_flow_util  # pylint: disable=no-name-in-module

from util import backend

_FUSED_OP = "_MklLayerNorm"


def layer_norm(x, gamma, beta, epsilon, kernel=None):
    """(x - mean) / sqrt(variance + epsilon) * gamma + beta over the last axis.

    x: [..., D] float32, gamma and beta: [D] float32 -> [..., D] float32.
    kernel: "fused" or "ops"; None reads the process's setting (util/backend.py).
    "fused" falls back to "ops" where the fused kernel cannot run (module docstring).
    """
    kernel = kernel or backend.layer_norm_kernel()
    if kernel == "fused" and x.dtype == tf.float32 and fused_kernel_usable():
        dim = x.shape[-1]
        y = _fused_layer_norm(tf.reshape(x, [-1, dim]), gamma, beta, epsilon)
        return tf.reshape(y, tf.shape(x)) if x.shape.rank != 2 else y
    return layer_norm_ops(x, gamma, beta, epsilon)


@contextlib.contextmanager
def portable():
    """Within it, the process's setting is "ops": for graphs saved to run elsewhere (a
    SavedModel served on a GPU, another TensorFlow build), which may lack the kernel."""
    saved = os.environ.get(backend.LAYER_NORM_VAR)
    os.environ[backend.LAYER_NORM_VAR] = "ops"
    try:
        yield
    finally:
        if saved is None:
            del os.environ[backend.LAYER_NORM_VAR]
        else:
            os.environ[backend.LAYER_NORM_VAR] = saved


def layer_norm_ops(x, gamma, beta, epsilon):
    """The "ops" form: TensorFlow's reductions and element-wise ops, any dtype/device."""
    mean, variance = tf.nn.moments(x, axes=[-1], keepdims=True)
    return (x - mean) * tf.math.rsqrt(variance + epsilon) * gamma + beta


def fused_kernel_usable():
    """Whether the fused kernel can run here: built in, no accelerator, not under XLA."""
    graph = None if tf.executing_eagerly() else tf.compat.v1.get_default_graph()
    in_xla = graph is not None and control_flow_util.GraphOrParentsInXlaContext(graph)
    return _cpu_kernel_registered() and not _has_accelerator() and not in_xla


@functools.lru_cache(maxsize=None)
def _cpu_kernel_registered():
    registered = kernels.get_registered_kernels_for_op(_FUSED_OP).kernel
    return any(k.device_type == "CPU" for k in registered)


@functools.lru_cache(maxsize=None)
def _has_accelerator():
    # The kernel is CPU-only: with a GPU, soft placement would move every LayerNorm to
    # the CPU and back.
    return bool(tf.config.list_physical_devices("GPU")
                or tf.config.list_physical_devices("TPU"))


def _fused_layer_norm(x, gamma, beta, epsilon):
    """x: [N, D] -> [N, D] through _MklLayerNorm, with the gradient of `_backward`."""

    @tf.custom_gradient
    def fused(x, gamma, beta):
        return _mkl_layer_norm(x, gamma, beta, epsilon), lambda dy: _backward(
            x, gamma, dy, epsilon)

    return fused(x, gamma, beta)


def _mkl_layer_norm(x, gamma, beta, epsilon):
    if tf.executing_eagerly():
        # The op has no Python wrapper to run eagerly, so it runs in a tf.function; an
        # eager tape would also record that call and ask for its (missing) gradient, on
        # top of the custom one: hence the stop_gradient.
        return _mkl_layer_norm_function(*map(tf.stop_gradient, (x, gamma, beta)), epsilon)
    # The op is internal to TensorFlow (no tf.raw_ops entry), so it is added to the graph
    # by name; its name scope may not start with "_".
    op = op_def_library._apply_op_helper(  # pylint: disable=protected-access
        _FUSED_OP, x=x, scale=gamma, offset=beta, epsilon=epsilon, name="MklLayerNorm")[2]
    return op.outputs[0]


_mkl_layer_norm_function = tf.function(_mkl_layer_norm)


@tf.function(jit_compile=True)
def _backward(x, gamma, dy, epsilon):
    """Gradients of layer_norm for x [N, D], gamma [D], dy [N, D]: (dx, dgamma, dbeta).

    The statistics are recomputed (two reductions) rather than kept from the forward.
    With x_hat = (x - mean) * rstd and g = dy * gamma:
    dx = rstd * (g - mean(g) - x_hat * mean(g * x_hat)), dgamma = sum over rows of
    dy * x_hat, dbeta = sum over rows of dy.
    """
    centered = x - tf.reduce_mean(x, axis=-1, keepdims=True)
    rstd = tf.math.rsqrt(tf.reduce_mean(tf.square(centered), axis=-1, keepdims=True)
                         + epsilon)
    x_hat = centered * rstd
    g = dy * gamma
    dx = rstd * (g - tf.reduce_mean(g, axis=-1, keepdims=True)
                 - x_hat * tf.reduce_mean(g * x_hat, axis=-1, keepdims=True))
    return dx, tf.reduce_sum(dy * x_hat, axis=0), tf.reduce_sum(dy, axis=0)
