"""Tests for model/batch_sharding.py and its use by the fine-tuning model and runner:
slicing a batch into independent slices inside a step must give the whole batch's
losses, outputs and gradients (real task files: CoLA, STS-B, CoNLL-2000, SQuAD 2.0),
really split the graph, and follow ELECTRA_BATCH_SHARDS where the runner allows it."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import tensorflow as tf

import finetune_run_fixtures as rf
from finetune import finetune_model
from finetune import finetune_runner
from finetune import task_builder
from model import batch_sharding
from util import backend
from util import distribute
from test_finetune_model import _batch, _config

TASKS = ("cola", "sts", "chunk", "squad")


@pytest.mark.parametrize("batch, shards, expected", [
    (32, 2, [16, 16]), (10, 3, [4, 3, 3]), (5, 2, [3, 2]), (2, 2, [1, 1]),
    (1, 2, None), (32, 1, None), (None, 2, None)])
def test_slice_sizes_cover_the_batch_or_leave_it_whole(batch, shards, expected):
    assert batch_sharding.slice_sizes(batch, shards) == expected


def test_slice_sizes_reject_fewer_than_one_shard():
    with pytest.raises(ValueError, match="shards must be >= 1, got 0"):
        batch_sharding.slice_sizes(8, 0)


def test_split_then_concat_gives_back_a_nested_batch():
    rng = np.random.RandomState(0)
    batch = {"input_ids": tf.constant(rng.randint(0, 9, (7, 4))),
             "task": {"label": tf.constant(rng.rand(7).astype(np.float32))}}
    parts = batch_sharding.split_batch(batch, [3, 2, 2])
    assert [p["input_ids"].shape[0] for p in parts] == [3, 2, 2]
    np.testing.assert_array_equal(parts[1]["task"]["label"].numpy(),
                                  batch["task"]["label"].numpy()[3:5])
    joined = batch_sharding.concat_batch(parts)
    for got, want in zip(tf.nest.flatten(joined), tf.nest.flatten(batch)):
        np.testing.assert_array_equal(got.numpy(), want.numpy())


@pytest.fixture(scope="module")
def model_and_batch(tmp_path_factory):
    data_dir = rf.make_data_dir(tmp_path_factory.mktemp("sharding_data"), TASKS)
    config = _config(data_dir, TASKS)
    tasks = task_builder.get_tasks(config)
    tf.random.set_seed(0)
    model = finetune_model.FinetuningModel(rf.tiny_bert_config(), tasks)
    # Rows of all four tasks and two padding rows: 10 rows, uneven in 3 slices.
    return data_dir, tasks, model, _batch(tasks, (3, 2, 2, 1), 2, config.max_seq_length)


def _loss_and_grads(model, batch, shards):
    model.batch_shards = shards
    variables = list(model.named_variables().values())
    with tf.GradientTape() as tape:
        out = model(batch, is_training=False)
    return out, tape.gradient(out.loss, variables)


@pytest.mark.parametrize("shards", [2, 3])
def test_sliced_batches_give_the_whole_batchs_loss_outputs_and_gradients(
        model_and_batch, shards):
    _, tasks, model, batch = model_and_batch
    whole, whole_grads = _loss_and_grads(model, batch, 1)
    sliced, sliced_grads = _loss_and_grads(model, batch, shards)
    assert float(sliced.loss) == pytest.approx(float(whole.loss), rel=1e-5)
    np.testing.assert_allclose(sliced.per_example_loss, whole.per_example_loss,
                               rtol=1e-5, atol=1e-6)
    for got, want in zip(tf.nest.flatten(sliced.outputs), tf.nest.flatten(whole.outputs)):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    for got, want in zip(sliced_grads, whole_grads):
        np.testing.assert_allclose(tf.convert_to_tensor(got), tf.convert_to_tensor(want),
                                   rtol=1e-4, atol=1e-6)
    for task in tasks:
        model.batch_shards = 1
        whole_pred = model.predict(batch, task.name)
        model.batch_shards = shards
        sliced_pred = model.predict(batch, task.name)
        assert sorted(sliced_pred) == sorted(whole_pred)
        for name, value in whole_pred.items():
            np.testing.assert_allclose(sliced_pred[name], value, rtol=1e-4, atol=1e-5)


def _ops_of(model, batch, shards, op_type):
    model.batch_shards = shards
    graph = tf.function(lambda f: model.predict(f, "cola")).get_concrete_function(
        batch).graph
    return sum(op.type == op_type for op in graph.get_operations())


def test_each_slice_runs_its_own_encoder_in_the_graph(model_and_batch):
    _, _, model, batch = model_and_batch
    per_slice = _ops_of(model, batch, 1, "Softmax")
    assert per_slice == model.bert_config.num_hidden_layers  # one per attention layer
    assert _ops_of(model, batch, 2, "Softmax") == 2 * per_slice
    # A batch of unknown size stays whole.
    model.batch_shards = 2
    spec = tf.nest.map_structure(lambda t: tf.TensorSpec([None] + t.shape[1:], t.dtype), batch)
    graph = tf.function(lambda f: model.predict(f, "cola")).get_concrete_function(spec).graph
    assert sum(op.type == "Softmax" for op in graph.get_operations()) == per_slice


def test_model_rejects_fewer_than_one_shard(model_and_batch):
    with pytest.raises(ValueError, match="shards must be >= 1"):
        finetune_model.FinetuningModel(rf.tiny_bert_config(), model_and_batch[1][:1],
                                       batch_shards=0)


def test_runner_slices_batches_as_the_environment_says_except_under_xla(
        model_and_batch, monkeypatch):
    data_dir = model_and_batch[0]
    strategy = tf.distribute.get_strategy()
    monkeypatch.setenv(backend.BATCH_SHARDS_VAR, "3")
    assert distribute.batch_shards(strategy, jit_compile=True) == 1
    for jit, expected in ((False, 3), (True, 1)):
        config = _config(data_dir, ("cola",), jit_compile=jit)
        runner = finetune_runner.ModelRunner(config, task_builder.get_tasks(config), None,
                                             strategy, rf.tiny_bert_config())
        assert runner.model.batch_shards == expected
    monkeypatch.setenv(backend.BATCH_SHARDS_VAR, "none")
    with pytest.raises(ValueError, match="ELECTRA_BATCH_SHARDS='none'"):
        distribute.batch_shards(strategy, jit_compile=False)
