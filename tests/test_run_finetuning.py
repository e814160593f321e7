"""End-to-end tests of run_finetuning.py on truncated real task files.

Every task family runs train + dev evaluation through the real script entry point,
starting from a tiny pre-trained checkpoint (tests/finetune_run_fixtures.py), and the
written files are checked: result lines and pickles, per-task dev predictions (from
which the reported metrics are recomputed), fine-tuned checkpoints and test outputs.
Bad inputs must end in one clear message and exit code 2.
"""

import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest
import tensorflow as tf
from sklearn.metrics import matthews_corrcoef

import finetune_run_fixtures as rf
import run_finetuning
from finetune.qa import squad_eval
from finetune.tagging import tagging_metrics
from util import cli

REPO = Path(__file__).resolve().parents[1]
ALL_TASKS = ("cola", "sts", "chunk", "squadv1", "squad", "newsqa")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = rf.make_data_dir(tmp_path_factory.mktemp("ft_run_data"), ALL_TASKS)
    rf.make_pretrained_model(root, "tiny")
    return root


def _run(data_dir, hparams, model_name="tiny"):
    """run_finetuning.main as the script runs it (through cli.run_main)."""
    argv = ["--data-dir", data_dir, "--model-name", model_name,
            "--hparams", json.dumps({**rf.FAST_HPARAMS, **hparams})]
    return cli.run_main(lambda: run_finetuning.main(argv))


def _model_root(data_dir, model_name="tiny"):
    return Path(data_dir) / "models" / model_name


def _results(data_dir, tasks):
    results = _model_root(data_dir) / "results"
    lines = (results / f"{tasks}_results.txt").read_text().splitlines()
    with open(results / f"{tasks}_results.pkl", "rb") as f:
        return lines, pickle.load(f)


def _checkpoint_vars(model_dir):
    return dict(tf.train.list_variables(tf.train.latest_checkpoint(str(model_dir))))


def test_glue_multitask_trials_write_results_predictions_and_test_outputs(data_dir):
    _run(data_dir, {"task_names": ["cola", "sts"], "num_trials": 2, "keep_all_models": False,
                    "write_test_outputs": True, "n_writes_test": 1, "seed": 5})
    lines, pkl = _results(data_dir, "cola,sts")
    assert len(pkl) == 2 and all(set(trial) == {"cola", "sts"} for trial in pkl)
    for trial, seed in zip(pkl, (5, 6)):
        assert list(trial["cola"]) == ["mcc", "loss"]
        assert list(trial["sts"]) == ["pearson", "spearman", "mse", "loss"]
        assert -100 <= trial["cola"]["mcc"] <= 100 and trial["cola"]["loss"] > 0
        assert -100 <= trial["sts"]["spearman"] <= 100 and trial["sts"]["mse"] >= 0
        assert f"cola: mcc: {trial['cola']['mcc']:.2f} - loss: " \
               f"{trial['cola']['loss']:.2f} - seed: {seed}" in lines
    assert len(lines) == 4
    root = _model_root(data_dir)
    # keep_all_models false: only the last trial's model dir is kept.
    assert not (root / "finetuning_models" / "cola,sts_model_1").exists()
    names = _checkpoint_vars(root / "finetuning_models" / "cola,sts_model_2")
    assert {n.split("/")[0] for n in names} == {"electra", "task_specific", "global_step"}
    assert "task_specific/sts/dense/kernel/adam_m" in names
    # 320 CoLA + 2 x 160 STS (double_unordered) examples, batch 16, 1 epoch.
    reader = tf.train.load_checkpoint(str(root / "finetuning_models" / "cola,sts_model_2"))
    assert reader.get_tensor("global_step") == 640 // 16
    _check_cola_predictions(root, pkl[1]["cola"]["mcc"])
    tests = root / "test_predictions"
    with open(tests / "cola_test_1_predictions.pkl", "rb") as f:
        cola_test = pickle.load(f)
    assert sorted(cola_test) == list(range(40)) and cola_test[0].shape == (2,)
    submission = (tests / "glue_submission_1" / "STS-B.tsv").read_text().splitlines()
    assert submission[0] == "index\tprediction" and len(submission) == 41
    assert all(0.0 <= float(row.split("\t")[1]) <= 5.0 for row in submission[1:])
    assert not (tests / "cola_test_2_predictions.pkl").exists()  # n_writes_test = 1


def _check_cola_predictions(root, reported_mcc):
    """The dev predictions TSV has one row per dev example and reproduces the MCC."""
    path = root / "results" / "cola,sts_predictions" / "cola_dev_2.txt"
    rows = [line.split("\t") for line in path.read_text().splitlines()]
    assert rows[0] == ["eid", "prediction", "gold"] and len(rows) == 101
    dev = (Path(root).parents[1] / "finetuning_data" / "cola" / "dev.tsv").read_text()
    assert [r[2] for r in rows[1:]] == [line.split("\t")[1] for line in dev.splitlines()]
    mcc = 100 * matthews_corrcoef([r[2] for r in rows[1:]], [r[1] for r in rows[1:]])
    assert mcc == pytest.approx(reported_mcc, abs=1e-6)


def _conll_sentences(path):
    gold, pred = [], []
    for block in Path(path).read_text().strip().split("\n\n"):
        columns = [line.split() for line in block.splitlines()]
        assert all(len(c) == 3 for c in columns)
        gold.append([c[1] for c in columns])
        pred.append([c[2] for c in columns])
    return gold, pred


def test_chunk_train_eval_then_eval_only_from_the_fine_tuned_model(data_dir):
    _run(data_dir, {"task_names": ["chunk"]})
    lines, pkl = _results(data_dir, "chunk")
    trained = pkl[0]["chunk"]
    assert list(trained) == ["precision", "recall", "f1", "loss", "test_precision",
                             "test_recall", "test_f1", "test_loss"]
    assert all(0 <= trained[k] <= 100 for k in ("f1", "test_f1", "precision"))
    assert len(lines) == 1 and lines[0].endswith(" - seed: 0")
    predictions = _model_root(data_dir) / "results" / "chunk_predictions"
    for split, prefix in (("dev", ""), ("test", "test_")):
        gold, pred = _conll_sentences(predictions / f"chunk_{split}_1.txt")
        assert len(gold) == (48 if split == "dev" else 24)
        _, _, f1 = tagging_metrics.span_prf(gold, pred)
        assert f1 == pytest.approx(trained[prefix + "f1"], abs=1e-6)
    model_dir = _model_root(data_dir) / "finetuning_models" / "chunk_model_1"
    _run(data_dir, {"task_names": ["chunk"], "do_train": False,
                    "init_checkpoint": str(model_dir)})
    _, reloaded = _results(data_dir, "chunk")
    assert reloaded[0]["chunk"] == pytest.approx(trained, rel=1e-5)
    assert model_dir.exists()  # evaluation never wipes the model it reads


def test_squadv1_and_mrqa_multitask_write_predictions_that_score_as_reported(data_dir):
    _run(data_dir, {"task_names": ["squadv1", "newsqa"], "max_seq_length": 128})
    _, pkl = _results(data_dir, "squadv1,newsqa")
    assert set(pkl[0]) == {"squadv1", "newsqa"}
    qa_dir = _model_root(data_dir) / "results" / "squadv1,newsqa_qa"
    for task in ("squadv1", "newsqa"):
        assert sorted(pkl[0][task]) == ["exact_match", "f1"]
        assert all(0 <= v <= 100 for v in pkl[0][task].values())
        assert json.loads((qa_dir / f"{task}_eval.json").read_text()) == pytest.approx(
            pkl[0][task])
    dev = json.loads((Path(data_dir) / "finetuning_data" / "squadv1" / "dev.json").read_text())
    predictions = json.loads((qa_dir / "squadv1_preds.json").read_text())
    qids = {qa["id"] for p in dev["data"][0]["paragraphs"] for qa in p["qas"]}
    assert set(predictions) == qids
    assert squad_eval.evaluate_v1(dev["data"], predictions) == pytest.approx(pkl[0]["squadv1"])


def test_squad_v2_reports_the_official_dict_and_writes_test_answers(data_dir):
    _run(data_dir, {"task_names": ["squad"], "max_seq_length": 128,
                    "write_test_outputs": True})
    _, pkl = _results(data_dir, "squad")
    metrics = pkl[0]["squad"]
    assert list(metrics) == sorted(["HasAns_exact", "HasAns_f1", "HasAns_total",
                                    "NoAns_exact", "NoAns_f1", "NoAns_total", "best_exact",
                                    "best_exact_thresh", "best_f1", "best_f1_thresh",
                                    "exact", "f1", "total"])
    assert metrics["HasAns_total"] + metrics["NoAns_total"] == metrics["total"] == 25
    assert 0 <= metrics["exact"] <= metrics["best_exact"] <= 100
    null_odds = json.loads((_model_root(data_dir) / "results" / "squad_qa" /
                            "squad_null_odds.json").read_text())
    assert len(null_odds) == 25
    test = json.loads((Path(data_dir) / "finetuning_data" / "squad" / "test.json").read_text())
    answers = json.loads((_model_root(data_dir) / "test_predictions" /
                          "squad_test_1_predictions.json").read_text())
    assert set(answers) == {qa["id"] for p in test["data"][0]["paragraphs"] for qa in p["qas"]}
    assert all(isinstance(a, str) for a in answers.values())


def test_debug_mode_trains_a_tiny_model_from_scratch(data_dir):
    argv = ["--data-dir", data_dir, "--model-name", "tiny",
            "--hparams", json.dumps({"debug": True, "task_names": ["cola"]})]
    cli.run_main(lambda: run_finetuning.main(argv))
    model_dir = _model_root(data_dir) / "finetuning_models" / "cola_model_1"
    names = _checkpoint_vars(model_dir)
    assert names["electra/encoder/layer_2/output/dense/bias"] == [144]  # 3 layers / 144
    assert "electra/encoder/layer_3/output/dense/bias" not in names
    # Debug reads the first 100 lines (CoLA train has no header) -> padded to 128 rows,
    # batch 32, 3 epochs.
    reader = tf.train.load_checkpoint(str(model_dir))
    assert reader.get_tensor("global_step") == 128 // 32 * 3


def _expect_exit_2(capsys, data_dir, hparams, model_name="tiny"):
    with pytest.raises(SystemExit) as info:
        _run(data_dir, hparams, model_name)
    assert info.value.code == 2
    return capsys.readouterr().err


def test_bad_inputs_give_one_clear_error_and_exit_code_2(data_dir, capsys):
    err = _expect_exit_2(capsys, data_dir, {"task_names": ["colaa"]})
    assert "unknown task name(s) ['colaa']" in err and "cola, " in err and "squad" in err
    err = _expect_exit_2(capsys, data_dir, {"task_names": ["rte"]})
    assert "'train.tsv'" in err and os.path.join("finetuning_data", "rte") in err
    err = _expect_exit_2(capsys, data_dir, {"task_names": ["cola"], "embedding_size": 16,
                                            "model_hparam_overrides":
                                            dict(rf.TINY_OVERRIDES, hidden_size=48)})
    assert re.search(r"'electra/embeddings_project/bias' has shape \[32\] in the checkpoint "
                     r"but \[48\] in the model", err) and "model_size" in err
    err = _expect_exit_2(capsys, data_dir, {"task_names": ["cola"]}, model_name="missing")
    assert os.path.join("models", "missing") in err and "README 'Setup'" in err
    assert not (_model_root(data_dir) / "finetuning_models" / "rte_model_1").exists()
    foreign = Path(data_dir) / "someone_elses"
    (Path(str(foreign) + "_1")).mkdir()
    (Path(str(foreign) + "_1") / "notes.txt").write_text("not ours")
    err = _expect_exit_2(capsys, data_dir, {"task_names": ["cola"], "model_dir": str(foreign)})
    assert "was not written by run_finetuning.py" in err
    assert (Path(str(foreign) + "_1") / "notes.txt").exists()


def _bad_input_dir(root, case):
    """<root> as --data-dir for model "m" (no pre-trained model: init_checkpoint null)
    holding one user mistake; returns the --hparams dict that runs into it."""
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = ["the", "a", "who", "is", "?"]
    vocab = [t for t in special if case != "vocab_without_unk" or t != "[UNK]"] + words
    (root / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    hparams = {**rf.FAST_HPARAMS, "model_hparam_overrides": rf.TINY_OVERRIDES,
               "embedding_size": rf.TINY_EMBEDDING, "init_checkpoint": None}
    if case == "unknown_task":
        return {**hparams, "task_names": ["nope"]}
    squad = root / "finetuning_data" / "squad"
    squad.mkdir(parents=True)
    (squad / "train.json").write_text('{"data": [{"paragraphs": [', encoding="utf-8")
    return {**hparams, "task_names": ["squad"]}


@pytest.mark.parametrize("case, message", [
    ("unknown_task", r"error: unknown task name\(s\) \['nope'\] in task_names\. Valid "
                     r"task names: .*cola, .*squad.*\. Fix task_names in --hparams\."),
    ("malformed_squad", r"error: .*train\.json: not valid JSON \(Expecting value: line 1 "
                        r"column 27 \(char 26\)\); the file may be truncated or not a "
                        r"SQuAD-format file\."),
    ("vocab_without_unk", r"error: Vocab file .*vocab\.txt lacks the special token\(s\) "
                          r"\[UNK\].*build_vocab\.py\."),
])
def test_script_user_errors_are_one_line_and_exit_code_2(tmp_path, case, message):
    hparams = _bad_input_dir(tmp_path, case)
    result = subprocess.run(
        [sys.executable, str(REPO / "run_finetuning.py"), "--data-dir", str(tmp_path),
         "--model-name", "m", "--hparams", json.dumps(hparams)],
        capture_output=True, text=True, cwd=REPO, timeout=300, check=False)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and re.fullmatch(message, error_lines[0]), result.stderr
    assert result.stderr.rstrip().endswith(error_lines[0])  # the last thing printed
    assert not (tmp_path / "models" / "m" / "finetuning_models").exists()
