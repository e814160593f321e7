"""Tests for finetune/finetune_model.py and finetune/init_checkpoint.py.

Features come from real task files (CoLA, STS-B, CoNLL-2000, SQuAD 2.0) featurised by
the tasks themselves; the expected losses, names and LR multipliers are recomputed
independently (per head, by hand, or from the checkpoint's stored values).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import tensorflow as tf

import configure_pretraining
import finetune_run_fixtures as rf
from finetune import feature_spec
from finetune import finetune_model
from finetune import finetune_runner
from finetune import init_checkpoint
from finetune import task_builder
from model import modeling
from model import optimization
from pretrain import pretrain_helpers
from pretrain import pretrain_model
from util import checkpoint
from util import training
from util.cli import UserError

TASKS = ("cola", "sts", "chunk", "squad")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return rf.make_data_dir(tmp_path_factory.mktemp("ft_model_data"), TASKS)


def _config(data_dir, tasks=TASKS, **hparams):
    return finetune_runner.make_run_config(
        data_dir, "tiny", {"task_names": list(tasks), "max_seq_length": 64,
                           "model_hparam_overrides": rf.TINY_OVERRIDES,
                           "embedding_size": rf.TINY_EMBEDDING, "init_checkpoint": None,
                           **hparams})


def _batch(tasks, examples_per_task, n_padding, max_seq_length):
    """A parsed, nested batch: real examples of each task then padding rows, built with
    the same FeatureSpec serialisation the TFRecord pipeline uses.

    examples_per_task: per task, a count of its first train examples or a list of them.
    """
    specs = feature_spec.get_shared_feature_specs(max_seq_length)
    for task in tasks:
        specs += task.get_feature_specs()
    serialized = []
    for task, examples in zip(tasks, examples_per_task):
        if isinstance(examples, int):
            examples = task.get_examples("train")[:examples]
        for example in examples:
            features = task.featurize(example, is_training=True)[0]
            serialized.append(feature_spec.to_tf_example(specs, task.name, features))
    padding = feature_spec.to_tf_example(specs, None, {"task_id": len(tasks)})
    serialized += [padding] * n_padding
    parsed = tf.io.parse_example([s.SerializeToString() for s in serialized],
                                 feature_spec.get_parsing_spec(specs))
    return feature_spec.cast_and_nest(parsed, specs)


@pytest.fixture(scope="module")
def model_and_batch(data_dir):
    config = _config(data_dir)
    tasks = task_builder.get_tasks(config)
    tf.random.set_seed(0)
    model = finetune_model.FinetuningModel(rf.tiny_bert_config(), tasks)
    batch = _batch(tasks, (3, 2, 2, 1), 2, config.max_seq_length)
    return config, tasks, model, batch


def test_loss_is_the_batch_sum_of_each_examples_own_task_loss(model_and_batch):
    _, tasks, model, batch = model_and_batch
    out = model(batch, is_training=False)
    task_ids = batch["task_id"].numpy()
    assert list(task_ids) == [0, 0, 0, 1, 1, 2, 2, 3, 4, 4]  # last two: padding
    expected = np.zeros(len(task_ids), np.float32)
    for task in tasks:
        own_losses = model.predict(batch, task.name)["loss"].numpy()
        rows = task_ids == task.task_id
        expected[rows] = own_losses[rows]
    # Classification rows by hand: -log softmax(logits)[label].
    logits = out.outputs["cola"]["logits"].numpy()[:3]
    labels = batch["cola"]["label_ids"].numpy()[:3]
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    np.testing.assert_allclose(expected[:3], -log_probs[np.arange(3), labels], rtol=1e-5)
    np.testing.assert_allclose(out.per_example_loss.numpy(), expected, rtol=1e-5)
    assert out.per_example_loss.numpy()[-2:].tolist() == [0.0, 0.0]
    assert float(out.loss) == pytest.approx(float(expected.sum()), rel=1e-5)


def test_sentence_level_tasks_alone_skip_the_last_layers_other_positions(
        data_dir, model_and_batch):
    assert not model_and_batch[2].pooled_only  # chunk and squad read every position
    config = _config(data_dir, ("cola", "sts"))
    tasks = task_builder.get_tasks(config)
    model = finetune_model.FinetuningModel(rf.tiny_bert_config(), tasks)
    assert model.pooled_only and model.tasks_pooled_only == [True, True]
    batch = _batch(tasks, (3, 2), 1, config.max_seq_length)
    pooled = model(batch, is_training=False).per_example_loss.numpy()
    model.pooled_only = False
    full = model(batch, is_training=False).per_example_loss.numpy()
    np.testing.assert_allclose(pooled, full, rtol=1e-5, atol=1e-6)
    assert np.abs(full[:5]).min() > 0


def test_variable_names_follow_the_fine_tuning_checkpoint_layout(model_and_batch):
    _, _, model, _ = model_and_batch
    names = set(model.named_variables())
    electra = {n for n in names if n.startswith("electra/")}
    # 5 embedding variables, embeddings_project (E != H) and 16 per layer.
    assert len(electra) == 5 + 2 + 16 * 2
    assert "electra/embeddings_project/kernel" in electra
    heads = names - electra
    assert all(n.startswith("task_specific/") for n in heads)
    assert {n for n in heads if n.startswith("task_specific/squad/")} == {
        f"task_specific/squad/{layer}/{kind}"
        for layer in ("dense", "qa_hidden", "dense_1", "dense_2", "dense_3")
        for kind in ("kernel", "bias")}
    for task in ("cola", "sts", "chunk"):
        assert {n for n in heads if n.startswith(f"task_specific/{task}/")} == {
            f"task_specific/{task}/dense/kernel", f"task_specific/{task}/dense/bias"}


def test_layerwise_lr_gives_every_variable_of_every_task_family_its_depth(data_dir):
    config = _config(data_dir, layerwise_lr_decay=0.8)
    tasks = task_builder.get_tasks(config)
    runner = finetune_runner.ModelRunner(config, tasks, None, tf.distribute.get_strategy(),
                                         rf.tiny_bert_config())
    optimizer = runner._optimizer()  # pylint: disable=protected-access
    multipliers = dict(zip(optimizer.names, optimizer.lr_multipliers))
    assert set(multipliers) == set(runner.named_vars)
    # n_layers = 2: embeddings 0.8^4, layer_0 0.8^3, layer_1 0.8^2 (the original's
    # skipped pooler depth), heads 1.
    for name, value in multipliers.items():
        if "/embeddings/" in name or "/embeddings_project/" in name:
            want = 0.4096
        elif "encoder/layer_0/" in name:
            want = 0.512
        elif "encoder/layer_1/" in name:
            want = 0.64
        else:
            assert name.startswith("task_specific/")
            want = 1.0
        assert value == pytest.approx(want), name
    assert {n.split("/")[1] for n in multipliers if n.startswith("task_specific/")} == set(TASKS)
    decayed = dict(zip(optimizer.names, optimizer.decay_mask))
    assert decayed["electra/embeddings/word_embeddings"]
    assert not decayed["task_specific/cola/dense/bias"]
    assert not decayed["electra/encoder/layer_0/output/LayerNorm/gamma"]


def test_layerwise_lr_off_gives_plain_learning_rate(data_dir):
    config = _config(data_dir, ("cola",), layerwise_lr_decay=0.0)
    tasks = task_builder.get_tasks(config)
    runner = finetune_runner.ModelRunner(config, tasks, None, tf.distribute.get_strategy(),
                                         rf.tiny_bert_config())
    assert set(runner._optimizer().lr_multipliers) == {1.0}  # pylint: disable=protected-access


@pytest.fixture(scope="module")
def pretrained(data_dir):
    return rf.make_pretrained_model(data_dir, "tiny", seed=3)


def _cola_model(data_dir, bert_config=None):
    config = _config(data_dir, ("cola",))
    return finetune_model.FinetuningModel(bert_config or rf.tiny_bert_config(),
                                          task_builder.get_tasks(config))


def test_init_loads_the_discriminator_and_leaves_heads_fresh(data_dir, pretrained):
    model_dir, stored = pretrained
    model = _cola_model(data_dir)
    named = model.named_variables()
    head_before = named["task_specific/cola/dense/kernel"].numpy().copy()
    loaded = init_checkpoint.init_from_checkpoint(named, model_dir)
    assert loaded == sorted(n for n in named if n.startswith("electra/"))
    for name in loaded:
        np.testing.assert_array_equal(named[name].numpy(), stored[name])
    np.testing.assert_array_equal(named["task_specific/cola/dense/kernel"].numpy(),
                                  head_before)
    assert not any(n.startswith(("generator", "discriminator_predictions")) for n in named)


def test_init_errors_name_the_problem_and_the_fix(data_dir, pretrained):
    model_dir, _ = pretrained
    wider = dict(rf.TINY_OVERRIDES, hidden_size=48, num_attention_heads=2)
    model = _cola_model(data_dir, modeling.get_bert_config("small", 30522, 16, wider))
    with pytest.raises(UserError, match=r"electra/embeddings_project/bias.*\[32\].*\[48\]"
                                        r".*model_size.*model_hparam_overrides"):
        init_checkpoint.init_from_checkpoint(model.named_variables(), model_dir)
    model = _cola_model(data_dir, modeling.get_bert_config("small", 1000, 16,
                                                           rf.TINY_OVERRIDES))
    with pytest.raises(UserError, match=r"word_embeddings.*\[30522, 16\].*\[1000, 16\]"
                                        r".*vocab_size to 30522"):
        init_checkpoint.init_from_checkpoint(model.named_variables(), model_dir)
    deeper = dict(rf.TINY_OVERRIDES, num_hidden_layers=3)
    model = _cola_model(data_dir, modeling.get_bert_config("small", 30522, 16, deeper))
    with pytest.raises(UserError, match=r"2 encoder layers.*has 3.*num_hidden_layers"):
        init_checkpoint.init_from_checkpoint(model.named_variables(), model_dir)
    model = _cola_model(data_dir)
    with pytest.raises(UserError, match=r"lacks 2 model variable.*task_specific/cola.*"
                                        r"fine-tuned on these task_names"):
        init_checkpoint.init_from_checkpoint(model.named_variables(), model_dir,
                                             require_heads=True)
    missing = os.path.join(data_dir, "models", "no_such_model")
    with pytest.raises(UserError, match=r"no_such_model.*README 'Setup'"):
        init_checkpoint.init_from_checkpoint(model.named_variables(), missing)
    os.makedirs(missing)
    with pytest.raises(UserError, match=r"No checkpoint found in .*no_such_model"):
        init_checkpoint.resolve_checkpoint(missing)


def test_a_real_pretraining_model_in_the_released_layout_initialises_the_encoder(
        data_dir, tmp_path):
    """pretrain.PretrainingModel's checkpoint, unzipped like a released model (prefix
    <dir>/electra_tiny, no `checkpoint` state file), fills every encoder variable."""
    pretrain_config = configure_pretraining.make_config(
        data_dir, "x", {"model_hparam_overrides": rf.TINY_OVERRIDES,
                        "embedding_size": rf.TINY_EMBEDDING})
    special = pretrain_helpers.SpecialIds(pad=0, unk=100, cls=101, sep=102, mask=103)
    pretraining = pretrain_model.PretrainingModel(pretrain_config, special)
    stored = pretraining.named_variables()
    prefix = tmp_path / "electra_tiny" / "electra_tiny"
    checkpoint.save_checkpoint(stored, str(prefix))
    named = _cola_model(data_dir).named_variables()
    loaded = init_checkpoint.init_from_checkpoint(named, str(prefix.parent))
    assert loaded == sorted(n for n in named if n.startswith("electra/"))
    for name in loaded:
        np.testing.assert_array_equal(named[name].numpy(), stored[name].numpy())


def test_pretrained_size_hparams_come_from_pretrain_config(data_dir, pretrained):
    model_dir, _ = pretrained
    sizes = init_checkpoint.pretrained_size_hparams(model_dir, {})
    assert sizes == {"model_size": "small", "model_hparam_overrides": rf.TINY_OVERRIDES,
                     "embedding_size": rf.TINY_EMBEDDING, "vocab_size": 30522,
                     "do_lower_case": True}
    # A size the user set wins: none of the size hparams are taken then.
    assert init_checkpoint.pretrained_size_hparams(model_dir, {"model_size": "base"}) == {
        "vocab_size": 30522, "do_lower_case": True}
    assert init_checkpoint.pretrained_size_hparams(data_dir, {}) == {}
    config = finetune_runner.make_run_config(data_dir, "tiny", {"task_names": ["cola"]})
    assert (config.model_hparam_overrides, config.embedding_size) == (
        rf.TINY_OVERRIDES, rf.TINY_EMBEDDING)


def test_training_with_the_shared_loop_fits_a_small_real_batch(data_dir):
    """Learning check: 16 real CoLA sentences are memorised in 40 steps."""
    config = _config(data_dir, ("cola",))
    tasks = task_builder.get_tasks(config)
    tf.random.set_seed(1)
    model = finetune_model.FinetuningModel(rf.tiny_bert_config(), tasks)
    train = tasks[0].get_examples("train")
    balanced = ([e for e in train if e.label == "0"][:8]
                + [e for e in train if e.label == "1"][:8])
    batch = _batch(tasks, (balanced,), 0, config.max_seq_length)
    named = model.named_variables()
    optimizer = optimization.AdamWeightDecay(named, weight_decay_rate=0.01)
    settings = training.LoopSettings(num_train_steps=40, log_every_steps=40,
                                     save_checkpoints_steps=40)
    trainer = training.Trainer(
        tf.distribute.get_strategy(),
        lambda features, seed, is_training: (model(features, is_training).loss, {}),
        named, optimizer, lambda step: optimization.learning_rate_schedule(
            step, 3e-3, 40, warmup_proportion=0.1),
        training.make_global_step(), settings, ())
    before = float(model(batch).loss)
    training.train(trainer, iter(tf.data.Dataset.from_tensors(batch).repeat()), None, {})
    after = model(batch)
    labels = batch["cola"]["label_ids"].numpy()
    assert float(after.loss) < 0.2 * before
    np.testing.assert_array_equal(after.outputs["cola"]["predictions"].numpy(), labels)
    assert labels.sum() == 8  # both classes: a constant guess cannot pass
