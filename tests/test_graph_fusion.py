"""The encoder's graph lets oneDNN fuse MatMul + BiasAdd (+ GELU) into one kernel.

TensorFlow's grappler remapper only fuses a MatMul with the BiasAdd and activation that
read it directly; a Reshape in between (as when a dense layer reshaped back to 3-D
before adding its bias) silently leaves three kernels and two extra passes over the
activations. These tests read the graph TensorFlow actually ran.
"""

import collections

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.util import _pywrap_util_port

from model import modeling
from util import backend

pytestmark = pytest.mark.skipif(not _pywrap_util_port.IsMklEnabled(),
                                reason="oneDNN is off: no remapper fusion to check")


def executed_op_counts(training, compute_dtype=tf.float32, embedding_size=None):
    """{op type: count} of the partition graphs of one encoder run (after grappler)."""
    graph = tf.Graph()
    with graph.as_default():
        config = modeling.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64,
                                     embedding_size=embedding_size)
        model = modeling.BertModel(config)
        ids = tf.compat.v1.placeholder(tf.int32, [2, 8])
        out = model(ids, tf.ones_like(ids), tf.zeros_like(ids), training=training,
                    compute_dtype=compute_dtype).sequence_output
        fetch = out
        if training:
            fetch = tf.gradients(tf.reduce_sum(tf.cast(out, tf.float32)),
                                 model.trainable_variables)
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            metadata = tf.compat.v1.RunMetadata()
            session.run(fetch, {ids: np.ones([2, 8], np.int32)},
                        options=tf.compat.v1.RunOptions(output_partition_graphs=True),
                        run_metadata=metadata)
    return collections.Counter(node.op for g in metadata.partition_graphs for node in g.node)


# oneDNN computes bfloat16 only with AVX-512; elsewhere TensorFlow falls back to Eigen.
BF16_KERNELS = pytest.param(tf.bfloat16, marks=pytest.mark.skipif(
    "avx512bw" not in backend.read_cpu_flags(),
    reason="oneDNN's bfloat16 kernels need AVX-512 (avx512bw)"))


@pytest.mark.parametrize("compute_dtype", [tf.float32, BF16_KERNELS])
@pytest.mark.parametrize("embedding_size", [None, 16])
def test_inference_dense_layers_are_single_fused_kernels(compute_dtype, embedding_size):
    ops = executed_op_counts(False, compute_dtype, embedding_size)
    # 4 dense layers per transformer layer (fused QKV, attention output, FFN in and out),
    # plus embeddings_project when E != H.
    expected = 2 * 4 + (embedding_size is not None)
    assert ops["_MklNativeFusedMatMul"] == expected, ops
    # No standalone bias add or GELU pieces: they ran inside the matmul kernels.
    assert not {"BiasAdd", "Erfc", "Erf", "_MklMatMul", "MatMul"} & set(ops), ops


@pytest.mark.parametrize("kernel", ["eigen", "onednn"])
def test_weight_gradients_run_on_the_chosen_kernel(kernel, monkeypatch):
    monkeypatch.setenv(backend.WEIGHT_GRAD_VAR, kernel)
    ops = executed_op_counts(True)
    # 4 dense layers per transformer layer, each with one weight gradient x^T dy; the
    # plain MatMuls become oneDNN's _MklMatMul, BatchMatMulV3 stays Eigen's.
    assert ops["BatchMatMulV3"] == (2 * 4 if kernel == "eigen" else 0), ops
    assert ops["_MklMatMul"] == 2 * 4 * (1 if kernel == "eigen" else 2), ops


def test_training_forward_keeps_bias_fused():
    ops = executed_op_counts(True)
    # Forward: each dense layer's bias is fused (GELU stays separate: its input is needed
    # by the backward pass). Standalone BiasAdds would mean a Reshape crept back in.
    assert ops["BiasAdd"] == 0, ops
    assert ops["_MklNativeFusedMatMul"] >= 2 * 4, ops


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("kernel", ["fused", "ops"])
def test_layer_norms_run_on_the_chosen_kernel(kernel, training, monkeypatch):
    monkeypatch.setenv(backend.LAYER_NORM_VAR, kernel)
    ops = executed_op_counts(training)
    # Two per transformer layer plus the embeddings'; with "ops", TensorFlow's moments.
    # When training only the gradients are fetched, and the last LayerNorm's output is
    # then unused: its gradient recomputes the statistics from its input.
    assert ops["_MklLayerNorm"] == (2 * 2 + 1 - training if kernel == "fused" else 0), ops
    assert (ops["SquaredDifference"] > 0) == (kernel == "ops"), ops
