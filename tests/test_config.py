"""Tests for the strict config plumbing and both configs' defaults and derivations."""

import json
import os

import pytest

import configure_finetuning
import configure_pretraining
from util import config_utils
from util.config_utils import ConfigError


def test_pretraining_defaults_match_original():
    c = configure_pretraining.make_config("/d", "m")
    assert (c.learning_rate, c.disc_weight, c.gen_weight, c.mask_prob) == (5e-4, 50.0, 1.0, 0.15)
    assert (c.num_train_steps, c.num_warmup_steps, c.train_batch_size) == (1000000, 10000, 128)
    assert c.generator_hidden_size == 0.25 and c.untied_generator and not c.two_tower_generator
    assert c.embedding_size == 128  # forced for small
    assert c.max_predictions_per_seq == 19  # int((0.15 + 0.005) * 128)
    assert c.pretrain_tfrecords == "/d/pretrain_tfrecords/pretrain_data.tfrecord*"
    assert c.vocab_file == "/d/vocab.txt"
    assert c.model_dir == "/d/models/m"
    assert c.results_txt == "/d/models/m/results/unsup_results.txt"


@pytest.mark.parametrize("mask_prob,seq,expected", [(0.15, 512, 79), (0.25, 512, 130)])
def test_max_predictions_derived_after_overrides(mask_prob, seq, expected):
    c = configure_pretraining.make_config(
            "/d", "m", {"mask_prob": mask_prob, "max_seq_length": seq})
    assert c.max_predictions_per_seq == expected


def test_user_values_win_over_debug_and_size_defaults():
    c = configure_pretraining.make_config(
            "/d", "m", {"debug": True, "train_batch_size": 16, "embedding_size": 64,
                                    "model_hparam_overrides": {"num_hidden_layers": 2}})
    assert c.train_batch_size == 16 and c.num_train_steps == 20  # debug default kept
    assert c.embedding_size == 64
    assert c.model_hparam_overrides == {"hidden_size": 144, "num_hidden_layers": 2,
                                                                            "intermediate_size": 576, "num_attention_heads": 4}
    # max_predictions_per_seq is now settable (the original raised "Unknown hparam").
    c = configure_pretraining.make_config("/d", "m", {"max_predictions_per_seq": 7})
    assert c.max_predictions_per_seq == 7


def test_electric_implies_two_tower_unless_overridden():
    c = configure_pretraining.make_config(
            "/d", "m", {"electra_objective": False, "electric_objective": True})
    assert c.two_tower_generator
    c = configure_pretraining.make_config(
            "/d", "m", {"electric_objective": True, "two_tower_generator": False})
    assert not c.two_tower_generator


def test_unknown_key_names_key_and_closest():
    with pytest.raises(ConfigError, match=r"'learning_rat'.*PretrainingConfig.*'learning_rate'"):
        configure_pretraining.make_config("/d", "m", {"learning_rat": 1e-3})
    with pytest.raises(ConfigError, match=r"'num_train_epoch'.*'num_train_epochs'"):
        configure_finetuning.make_config("/d", "m", {"num_train_epoch": 2})


@pytest.mark.parametrize("key,value,expected", [
        ("num_train_steps", "100", "int"), ("debug", 1, "bool"),
        ("learning_rate", "1e-4", "float"), ("num_train_steps", 1.5, "int"),
        ("model_hparam_overrides", [1], "dict")])
def test_wrong_type_names_key_and_type(key, value, expected):
    with pytest.raises(ConfigError, match=rf"'{key}'.*expects {expected}"):
        configure_pretraining.make_config("/d", "m", {key: value})


def test_int_accepted_for_float():
    c = configure_pretraining.make_config("/d", "m", {"learning_rate": 1})
    assert c.learning_rate == 1.0 and isinstance(c.learning_rate, float)


def test_hparams_json_string_file_and_malformed(tmp_path):
    assert config_utils.load_hparams('{"debug": true}') == {"debug": True}
    path = tmp_path / "h.json"
    path.write_text('{"num_train_steps": 5}')
    assert config_utils.load_hparams(str(path)) == {"num_train_steps": 5}
    with pytest.raises(ConfigError, match=r"line 1, column 11"):
        config_utils.load_hparams('{"debug": tru}')
    with pytest.raises(ConfigError, match="does not exist"):
        config_utils.load_hparams(str(tmp_path / "missing.json"))
    with pytest.raises(ConfigError, match="JSON object"):
        config_utils.load_hparams("[1, 2]")


def test_validation_rules():
    with pytest.raises(ConfigError, match="exactly one of do_train or do_eval"):
        configure_pretraining.make_config("/d", "m", {"do_eval": True})
    with pytest.raises(ConfigError, match="max_seq_length must be in"):
        configure_pretraining.make_config("/d", "m", {"max_seq_length": 1024})
    with pytest.raises(ConfigError, match="model_size"):
        configure_pretraining.make_config("/d", "m", {"model_size": "huge"})
    with pytest.raises(ConfigError, match="init_checkpoint"):
        configure_finetuning.make_config("/d", "m", {"do_train": False})


def test_saved_config_round_trips(tmp_path):
    c = configure_pretraining.make_config("/d", "m", {"debug": True})
    path = tmp_path / "config.json"
    config_utils.save_config(c, str(path))
    saved = json.loads(path.read_text())
    assert list(saved) == sorted(saved)
    saved.pop("data_dir"), saved.pop("model_name")
    assert configure_pretraining.make_config("/d", "m", saved) == c


@pytest.mark.parametrize("task,epochs,seq_len", [
        ("rte", 10.0, 128), ("sts", 10.0, 128), ("squad", 2.0, 512), ("squadv1", 2.0, 512),
        ("newsqa", 2.0, 512), ("naturalqs", 2.0, 512), ("chunk", 3.0, 256), ("mnli", 3.0, 128)])
def test_finetuning_per_task_defaults(task, epochs, seq_len):
    c = configure_finetuning.make_config("/d", "m", {"task_names": [task]})
    assert (c.num_train_epochs, c.max_seq_length) == (epochs, seq_len)


def test_finetuning_defaults_and_paths(tmp_path):
    c = configure_finetuning.make_config(str(tmp_path), "m", {"task_names": ["rte", "mnli"]})
    assert (c.learning_rate, c.layerwise_lr_decay, c.embedding_size) == (1e-4, 0.8, 128)
    assert (c.num_train_epochs, c.max_seq_length) == (3.0, 128)  # several tasks: no task defaults
    pre = os.path.join(str(tmp_path), "models", "m")
    assert c.init_checkpoint == pre
    assert c.model_dir == os.path.join(pre, "finetuning_models", "rte,mnli_model")
    assert c.results_txt == os.path.join(pre, "results", "rte,mnli_results.txt")
    assert c.qa_eval_file("squad") == os.path.join(pre, "results", "rte,mnli_qa", "squad_eval.json")
    assert c.vocab_file == os.path.join(str(tmp_path), "vocab.txt")
    os.makedirs(pre)
    open(os.path.join(pre, "vocab.txt"), "w").close()
    c = configure_finetuning.make_config(str(tmp_path), "m", {"model_size": "large"})
    assert c.vocab_file == os.path.join(pre, "vocab.txt")
    assert (c.learning_rate, c.layerwise_lr_decay, c.embedding_size) == (5e-5, 0.9, None)
    trial = c.for_trial(3)
    assert trial.model_dir == c.model_dir + "_3" and trial.seed == c.seed + 2


def test_finetuning_debug_set_in_hparams_takes_effect():
    # The original derived these before reading --hparams, so debug did nothing here.
    c = configure_finetuning.make_config("/d", "m", {"debug": True, "task_names": ["rte"]})
    assert c.init_checkpoint is None
    assert c.preprocessed_data_dir.endswith("rte_tfrecords-debug")
    assert c.num_train_epochs == 3.0 and c.num_trials == 1


@pytest.mark.parametrize("module", [configure_pretraining, configure_finetuning])
def test_paths_from_flags_cannot_be_overridden_in_hparams(module):
    with pytest.raises(ConfigError, match="data_dir is set by --data-dir"):
        module.make_config("/d", "m", {"data_dir": "/other"})
