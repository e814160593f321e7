"""End-to-end tests of run_pretraining.py on real text (shared/data corpus + BERT vocab).

TFRecords are built once from part of the inaugural-addresses corpus with
build_pretraining_dataset's library function; every run uses a tiny model so each test
takes seconds to a minute on 2 CPU cores.
"""

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import configure_pretraining
import run_pretraining
from pretrain import pretrain_runner
from pretrain.pretrain_model import PretrainingModel
from pretrain.pretrain_helpers import special_ids_from_vocab
from model import tokenization
from util import checkpoint, training
from util.cli import UserError

import pretrain_fixtures

REPO = Path(__file__).resolve().parents[1]
# Measured after 300 steps (2 layers, hidden 64, seq 64, batch 32, lr 3e-3):
# masked_lm_accuracy 0.072 (uniform chance 3.3e-5, most-frequent-token guess 0.075),
# disc_auc 0.60 (chance 0.5; about 1.2K replaced tokens, so the AUC's standard error
# is about 0.01). The bounds leave room for run-to-run noise. Also measured: disc_auc_real
# 0.614 (these length-64 examples have little padding), repr_mean_cosine 0.91.
MIN_MLM_ACCURACY = 0.05
UNIGRAM_FACTOR = 0.5
MIN_DISC_AUC = 0.55
TINY, SEQ = pretrain_fixtures.TINY, pretrain_fixtures.SEQ

pytestmark = pytest.mark.skipif(not pretrain_fixtures.have_shared_data(),
                                reason=f"real data not found at {pretrain_fixtures.SHARED}")


@pytest.fixture(name="data_dir", scope="module")
def fixture_data_dir(tmp_path_factory):
    return pretrain_fixtures.data_dir(tmp_path_factory.getbasetemp())


_config = pretrain_fixtures.config


def _progress_lines(text):
    return [l for l in text.splitlines() if ", SPS: " in l]


def test_train_saves_config_and_checkpoints_then_resumes_then_finishes(data_dir, capsys):
    config = _config(data_dir, "resume", num_train_steps=10, save_checkpoints_steps=5,
                     keep_checkpoint_max=1)
    result = pretrain_runner.run_pretraining(config)
    assert (result.global_step, result.steps_run) == (10, 10)
    out = capsys.readouterr().out
    assert "Config:" in out and "\nlearning_rate 0.002\n" in out and "Model is built!" in out
    assert [l.split()[0] for l in _progress_lines(out)] == ["5/10", "10/10"]
    model_dir = Path(config.model_dir)
    saved = json.loads((model_dir / "pretrain_config.json").read_text())
    assert saved["learning_rate"] == 0.002 and saved["max_seq_length"] == SEQ
    # keep_checkpoint_max=1: only the last one remains, listed in the state file.
    assert tf.train.latest_checkpoint(str(model_dir)).endswith("model.ckpt-10")
    assert not (model_dir / "model.ckpt-5.index").exists()
    names = dict(tf.train.list_variables(str(model_dir / "model.ckpt-10")))
    assert names["electra/encoder/layer_1/output/dense/kernel"] == [256, 64]
    assert names["generator/encoder/layer_0/attention/self/query/kernel/adam_m"] == [32, 32]
    assert tf.train.load_checkpoint(str(model_dir / "model.ckpt-10")).get_tensor(
        "global_step") == 10

    longer = _config(data_dir, "resume", num_train_steps=15, save_checkpoints_steps=5)
    result = pretrain_runner.run_pretraining(longer)
    assert (result.global_step, result.steps_run) == (15, 5)
    out = capsys.readouterr().out
    assert "Training for 5 steps (from step 10)" in out
    assert [l.split()[0] for l in _progress_lines(out)] == ["15/15"]

    result = pretrain_runner.run_pretraining(longer)
    assert result.steps_run == 0
    assert "already trained for 15 steps" in capsys.readouterr().out


def test_bfloat16_with_jit_compile_trains(data_dir):
    config = _config(data_dir, "bf16_xla", mixed_precision="bfloat16", jit_compile=True,
                     num_train_steps=4, save_checkpoints_steps=4, iterations_per_loop=2,
                     log_every_steps=2)
    result = pretrain_runner.run_pretraining(config)
    assert result.global_step == 4
    # Untrained: about ln(30522) + 50 ln 2 = 45 (spec c.7), in bfloat16 as in float32.
    assert 40 < result.losses["loss"] < 50 and 9 < result.losses["mlm_loss"] < 11.5
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(config.model_dir))
    assert reader.get_variable_to_dtype_map()["electra/embeddings/word_embeddings"] == tf.float32


def test_bad_inputs_fail_with_one_clear_message(data_dir, tmp_path):
    def run(**hparams):
        with pytest.raises(UserError) as info:
            pretrain_runner.run_pretraining(_config(data_dir, "bad", **hparams))
        return str(info.value)

    assert "Vocab file not found" in run(vocab_file=str(tmp_path / "none.txt"))
    no_mask = tmp_path / "vocab_no_mask.txt"
    no_mask.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nthe\n")
    assert "lacks the special token(s) [MASK]" in run(vocab_file=str(no_mask))
    assert "has 30522 tokens but vocab_size is 1000" in run(vocab_size=1000)
    message = run(pretrain_tfrecords=str(tmp_path / "nothing*"))
    assert "No pre-training TFRecords match" in message and "nothing*" in message
    assert "build_pretraining_dataset.py" in message
    message = run(max_seq_length=128)
    assert "length 64 but max_seq_length is 128" in message


def test_cli_reports_user_errors_with_exit_code_2(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "run_pretraining.py"), "--data-dir", str(tmp_path),
         "--model-name", "m", "--hparams", '{"debug": true}'],
        capture_output=True, text=True, timeout=300, cwd=str(REPO),
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert proc.returncode == 2
    assert "error: Vocab file not found" in proc.stderr.strip().splitlines()[-1]


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(data_dir):
    config = _config(data_dir, "nan", learning_rate=1e30, num_warmup_steps=0,
                     num_train_steps=20, save_checkpoints_steps=1, iterations_per_loop=1,
                     log_every_steps=1)
    with pytest.raises(training.TrainingDiverged, match=r"non-finite loss at step \d+ \(") \
            as info:
        pretrain_runner.run_pretraining(config)
    bad_step = int(str(info.value).split("at step ")[1].split()[0])
    latest = tf.train.latest_checkpoint(config.model_dir)
    assert latest.endswith(f"model.ckpt-{bad_step - 1}")
    reader = tf.train.load_checkpoint(latest)
    for name in reader.get_variable_to_shape_map():
        assert np.all(np.isfinite(reader.get_tensor(name))), name


def _fake_released_checkpoint(data_dir, hparams):
    """models/electra_small/electra_small.* : weights + global_step 1000, no Adam slots,
    no `checkpoint` state file (as the released zips)."""
    config = configure_pretraining.make_config(str(data_dir), "electra_small", hparams)
    vocab = tokenization.load_vocab(config.vocab_file)
    model = PretrainingModel(config, special_ids_from_vocab(vocab))
    named = dict(model.named_variables())
    named["global_step"] = tf.Variable(1000, dtype=tf.int64)
    checkpoint.save_checkpoint(named, os.path.join(config.model_dir, "electra_small"))
    return {k: v.numpy() for k, v in named.items()}


def test_continue_from_released_checkpoint_readme_recipe(data_dir, capsys):
    size = {k: TINY[k] for k in ("model_hparam_overrides", "embedding_size", "max_seq_length")}
    released = _fake_released_checkpoint(data_dir, {**size, "generator_hidden_size": 1.0})
    # README: num_train_steps = current + extra, learning_rate = target * total / extra,
    # generator_hidden_size 1.0 for Small.
    hparams = {**size, "num_train_steps": 1003, "learning_rate": 2e-4 * 1003 / 3,
               "generator_hidden_size": 1.0, "train_batch_size": 8,
               "save_checkpoints_steps": 1000, "log_every_steps": 1}
    run_pretraining.main(["--data-dir", str(data_dir), "--model-name", "electra_small",
                          "--hparams", json.dumps(hparams)])
    out = capsys.readouterr().out
    assert "has no Adam slots (a released checkpoint?)" in out
    assert "Training for 3 steps (from step 1000)" in out
    model_dir = data_dir / "models" / "electra_small"
    latest = tf.train.latest_checkpoint(str(model_dir))
    assert latest.endswith("model.ckpt-1003")
    reader = tf.train.load_checkpoint(latest)
    name = "electra/encoder/layer_0/attention/self/query/kernel"
    moved = reader.get_tensor(name) - released[name]
    # Trained from the released weights: they moved, by at most ~3 tiny Adam steps.
    assert 0 < np.abs(moved).max() < 0.01
    assert np.abs(reader.get_tensor(name + "/adam_v")).max() > 0


def _kill_run(data_dir, name, steps):
    hparams = {**TINY, "num_train_steps": steps, "save_checkpoints_steps": 5,
               "iterations_per_loop": 1, "log_every_steps": 1}
    return [sys.executable, str(REPO / "run_pretraining.py"), "--data-dir", str(data_dir),
            "--model-name", name, "--hparams", json.dumps(hparams)]


def test_kill_9_mid_run_then_rerun_resumes_to_the_end(data_dir):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    model_dir = data_dir / "models" / "killed"
    cmd = _kill_run(data_dir, "killed", 30)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=env, cwd=str(REPO))
    first_lines = []
    deadline = time.time() + 300
    try:
        for line in proc.stdout:
            first_lines += _progress_lines(line)
            # Kill between checkpoints: after step 7, so model.ckpt-5 exists.
            if first_lines and first_lines[-1].startswith("7/30") or time.time() > deadline:
                break
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    assert first_lines and first_lines[-1].startswith("7/30"), first_lines
    assert tf.train.latest_checkpoint(str(model_dir)).endswith("model.ckpt-5")
    rerun = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300,
                           cwd=str(REPO))
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    second_lines = _progress_lines(rerun.stdout)
    assert second_lines[0].startswith("6/30") and second_lines[-1].startswith("30/30")
    assert "Training for 25 steps (from step 5)" in rerun.stdout
    latest = tf.train.latest_checkpoint(str(model_dir))
    assert latest.endswith("model.ckpt-30")
    assert tf.train.load_checkpoint(latest).get_tensor("global_step") == 30
    # No half-written checkpoint files were left behind by the kill.
    assert not [p for p in os.listdir(model_dir) if ".tmp-" in p]

    def loss(line):
        return float(line.split(" - loss: ")[1].split()[0])

    # Losses continue from the checkpoint's weights: the resumed step-6 loss is close to
    # the killed run's step-6 loss and below the untrained step-1 loss (about 45).
    resumed, killed, initial = (loss(second_lines[0]), loss(first_lines[5]),
                                loss(first_lines[0]))
    assert resumed < initial and abs(resumed - killed) < 0.5 * (initial - killed) + 0.5, \
        (resumed, killed, initial)


def _most_frequent_token_rate(data_dir):
    """Accuracy of always predicting the most frequent maskable token (a unigram guess)."""
    counts = np.zeros(30522, np.int64)
    for record in tf.data.TFRecordDataset(
            sorted(str(p) for p in (data_dir / "pretrain_tfrecords").glob("*.tfrecord*"))):
        ex = tf.train.Example.FromString(record.numpy()).features.feature
        ids = np.array(ex["input_ids"].int64_list.value)
        mask = np.array(ex["input_mask"].int64_list.value)
        np.add.at(counts, ids[(mask == 1) & (ids > 103)], 1)  # no [PAD]/[CLS]/[SEP]/[MASK]
    return counts.max() / counts.sum()


def test_learns_on_real_text_beats_chance(tmp_path_factory, data_dir, capsys):
    train, train_secs = pretrain_fixtures.learned_model(tmp_path_factory.getbasetemp())
    lines = _progress_lines(capsys.readouterr().out)
    evaluate = _config(data_dir, "learn", do_train=False, do_eval=True, num_eval_steps=8,
                       eval_batch_size=32)
    results = pretrain_runner.run_pretraining(evaluate)
    out = capsys.readouterr().out
    unigram = _most_frequent_token_rate(data_dir)
    with capsys.disabled():  # the measured numbers, for the record (pytest -s shows them)
        print(f"trained {train.num_train_steps} steps in {train_secs}s; progress: {lines}; "
              f"eval: {results}; most-frequent-token rate {unigram:.4f}")
    assert results["global_step"] == train.num_train_steps
    # Chance levels: uniform guessing over 30522 tokens is 3.3e-5; always guessing the
    # most frequent token gets `unigram` (0.075 here); a random scorer has AUC 0.5.
    assert results["masked_lm_accuracy"] > MIN_MLM_ACCURACY
    assert results["masked_lm_accuracy"] > UNIGRAM_FACTOR * unigram
    assert results["disc_auc"] > MIN_DISC_AUC
    assert results["masked_lm_loss"] < np.log(30522) - 3.0
    expected = {"disc_accuracy", "disc_auc", "disc_loss", "disc_precision", "disc_recall",
                "global_step", "loss", "masked_lm_accuracy", "masked_lm_loss",
                "sampled_masked_lm_accuracy", "disc_auc_real", "disc_auc_candidates",
                "disc_replaced_rate", "disc_accuracy_baseline", "repr_mean_cosine"}
    assert set(results) == expected
    for name in ("disc_auc_real", "disc_auc_candidates", "disc_replaced_rate"):
        assert 0 < results[name] < 1, name
    assert -1 < results["repr_mean_cosine"] < 1
    txt = Path(evaluate.results_txt).read_text().splitlines()
    assert txt == [f"  {k} = {results[k]}" for k in sorted(results)]
    assert all(line in out for line in txt)
    with open(evaluate.results_pkl, "rb") as f:
        assert pickle.load(f) == results


def test_debug_restarts_only_its_own_debug_model(data_dir):
    debug = _config(data_dir, "dbg", debug=True, num_train_steps=2, save_checkpoints_steps=2)
    assert pretrain_runner.run_pretraining(debug).steps_run == 2
    again = pretrain_runner.run_pretraining(debug)  # a debug model dir is wiped and redone
    assert (again.global_step, again.steps_run) == (2, 2)
    # A model dir that is not a debug model of ours is never deleted.
    trained = _config(data_dir, "keep", num_train_steps=2, save_checkpoints_steps=2)
    pretrain_runner.run_pretraining(trained)
    with pytest.raises(UserError, match="would delete .*keep.*choose another --model-name"):
        pretrain_runner.run_pretraining(
            _config(data_dir, "keep", debug=True, num_train_steps=2))
    assert tf.train.latest_checkpoint(trained.model_dir).endswith("model.ckpt-2")
