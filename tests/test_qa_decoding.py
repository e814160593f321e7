"""Tests for finetune/qa/qa_decoding.py and qa_scorer.py: final-text alignment, span
filters on synthetic logits, null odds, and full scorer runs (files + official metrics)
on real dev data with logits that point at the gold spans."""

import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

import configure_finetuning
from finetune import task_builder
from finetune.qa import qa_data
from finetune.qa import qa_decoding
from finetune.qa import qa_featurize
from model import tokenization

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
VOCAB = DATA / "vocab" / "vocab.txt"
SQUAD_V1 = DATA / "squad" / "dev-v1.1.reconstructed.json"
SQUAD_V2 = DATA / "squad" / "dev-v2.0.reconstructed.json"
NEWSQA_SAMPLE = DATA / "mrqa" / "samples" / "NewsQA_sample.jsonl"
TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "what", "is", "?", "a", "b",
              "c", "d", "e", "f"]
K = 3


def _need(path):
    if not path.exists():
        pytest.skip("shared data file %s is absent" % path)
    return path


@pytest.mark.parametrize("pred, orig, lower, expected", [
    ("steve smith", "Steve Smith's", True, "Steve Smith"),
    ("cafe", "Café,", True, "Café"),  # accents stripped by the tokenizer, kept in output
    ("1895", "(1895-1943).", True, "1895"),
    ("Denver", "Denver Broncos", False, "Denver"),
    ("xyz", "Steve Smith's", True, "Steve Smith's"),  # not found: original words
])
def test_get_final_text(pred, orig, lower, expected):
    assert qa_decoding.get_final_text(pred, orig, lower) == expected


def test_detokenize_and_softmax():
    assert qa_decoding.detokenize(["st", "##eve", "smith", "##'", "s"]) == "steve smith' s"
    np.testing.assert_allclose(qa_decoding.softmax([0.0, np.log(3.0)]), [0.25, 0.75])
    assert qa_decoding.best_indexes([0.1, 0.5, 0.3, 0.5], 3) == [1, 3, 2]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """An example over "a b c d e f" in two windows: [0, 4) and [2, 6) (see
    test_qa_featurize.test_hand_worked_windows for the layout)."""
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(TINY_VOCAB) + "\n", encoding="utf-8")
    featurizer = qa_featurize.QAFeaturizer(tokenization.FullTokenizer(str(path)), 10, 64, 2)
    example = qa_data.QAExample("squad", 0, "q0", None, "what is ?",
                                tuple("A b C d e f".split()))
    return example, featurizer.featurize(example, False)


def _result(feature_id, starts, ends, start_lp=None, end_lp=None, answerable=0.0, s=10):
    """A joint RawResult with the given top-K start / end indices (best first)."""
    start_lp = start_lp if start_lp is not None else -np.arange(K, dtype=np.float32)
    end_lp = end_lp if end_lp is not None else -np.tile(np.arange(K, dtype=np.float32),
                                                        (K, 1))
    return qa_decoding.RawResult(
        feature_id, np.zeros(s, np.float32), np.zeros(s, np.float32), answerable,
        np.asarray(start_lp, np.float32), np.asarray(starts), np.asarray(end_lp, np.float32),
        np.asarray(ends))


def test_synthetic_joint_logits_give_the_span_text(tiny):
    example, windows = tiny
    settings = qa_decoding.DecodeSettings(n_best_size=5, max_answer_length=30)
    results = {
        # Window 0: best (7, 8) = "C d"; window 1: its best start (5 = "C") is not
        # max-context there, so only (6, 8) = "d e f" survives, with a lower score.
        0: _result(0, [7, 6, 0], [[8, 7, 9], [6, 0, 0], [0, 0, 0]]),
        1: _result(1, [5, 6, 0], [[6, 7, 0], [8, 0, 0], [0, 0, 0]], start_lp=[0, -0.5, -9]),
    }
    pred = qa_decoding.decode_example(example, windows, results, settings, v2=False)
    assert pred.text == "C d"  # original casing restored by get_final_text
    # Scores: (w0, 7, 8) 0; (w1, 6, 8) -0.5; (w0, 7, 7) -1; (w0, 6, 6) -1 (ties stable).
    assert [e.text for e in pred.nbest] == ["C d", "d e f", "C", "b"]
    # Position 9 is the final [SEP] (no word), so (7, 9) was dropped.
    short = qa_decoding.DecodeSettings(n_best_size=5, max_answer_length=1)
    assert qa_decoding.decode_example(example, windows, results, short, False).text == "C"


def test_no_valid_span_gives_empty_and_v2_null_score(tiny):
    example, windows = tiny
    settings = qa_decoding.DecodeSettings()
    results = {0: _result(0, [0, 0, 0], [[0] * K] * K, answerable=1.5),
               1: _result(1, [0, 0, 0], [[0] * K] * K, answerable=-0.25)}
    pred = qa_decoding.decode_example(example, windows, results, settings, v2=False)
    assert pred.text == "empty" and pred.null_score is None
    pred = qa_decoding.decode_example(example, windows, results, settings, v2=True)
    assert pred.null_score == -0.25  # minimum over windows
    with pytest.raises(KeyError, match="no head output for feature 1"):
        qa_decoding.decode_example(example, windows, {0: results[0]}, settings, True)


def test_independent_start_end_logits(tiny):
    example, windows = tiny
    settings = qa_decoding.DecodeSettings(joint_prediction=False,
                                          answerable_classifier=False)
    start = np.full(10, -5.0, np.float32)
    end = np.full(10, -5.0, np.float32)
    start[[0, 5]], end[[0, 8]] = 3.0, 2.0  # window 0: "A" .. "d"; [CLS] scores 5
    result = qa_decoding.RawResult(0, start, end, 0.0, np.zeros(K), np.zeros(K, int),
                                   np.zeros((K, K)), np.zeros((K, K), int))
    low = qa_decoding.RawResult(1, np.full(10, -9.0), np.full(10, -9.0), 0.0, np.zeros(K),
                                np.zeros(K, int), np.zeros((K, K)), np.zeros((K, K), int))
    pred = qa_decoding.decode_example(example, windows, {0: result, 1: low}, settings, True)
    assert pred.text == "A b C d"
    # No answerable classifier: null = min([CLS] scores) - best span score = -18 - 5.
    assert pred.null_score == pytest.approx(-18.0 - 5.0)


def _gold_results(task, gold_examples, impossible_logit=5.0):
    """Results whose top start/end are the gold span in windows that contain it."""
    results = {}
    for example in gold_examples:
        for w in task.featurize_windows(example, is_training=True):
            starts = [w.start_position, 0, 0]
            ends = [[w.end_position, 0, 0]] + [[0] * K] * (K - 1)
            results[w.feature_id] = _result(
                w.feature_id, starts, ends, start_lp=[-0.01, -5, -6],
                answerable=impossible_logit if example.is_impossible else -5.0,
                s=task.config.max_seq_length)
    return results


def _task(tmp_path, name, file_name, source, n_lines_or_articles):
    root = tmp_path / "finetuning_data" / name
    root.mkdir(parents=True)
    if file_name.endswith(".json"):
        data = json.loads(source.read_text(encoding="utf-8"))
        data["data"] = data["data"][:n_lines_or_articles]
        (root / file_name).write_text(json.dumps(data), encoding="utf-8")
    else:
        lines = source.read_text(encoding="utf-8").splitlines()[:n_lines_or_articles]
        (root / file_name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = configure_finetuning.make_config(
        str(tmp_path), "m", dict(task_names=[name], max_seq_length=256, beam_size=K,
                                 vocab_file=str(_need(VOCAB))))
    return task_builder.get_tasks(config)[0]


def _run_scorer(task, gold_examples, output_dir):
    scorer = task.get_scorer(output_dir=str(output_dir))
    for result in _gold_results(task, gold_examples).values():
        scorer.update(dict(eid=result.feature_id, loss=0.5, start_logits=result.start_logits,
                           end_logits=result.end_logits,
                           answerable_logit=np.float32(result.answerable_logit),
                           start_top_log_probs=result.start_top_log_probs,
                           start_top_index=result.start_top_index,
                           end_top_log_probs=result.end_top_log_probs,
                           end_top_index=result.end_top_index))
    return scorer, dict(scorer.get_results())


def test_scorer_on_real_v2_dev_gold_logits(tmp_path):
    task = _task(tmp_path, "squad", "dev.json", _need(SQUAD_V2), 2)
    gold = qa_data.read_squad(task.gold_file("dev"), "squad", True, True).examples
    scorer, metrics = _run_scorer(task, gold, tmp_path / "out")
    files = sorted(os.listdir(tmp_path / "out"))
    assert files == ["squad_eval.json", "squad_null_odds.json", "squad_preds.json"]
    written = json.loads((tmp_path / "out" / "squad_eval.json").read_text())
    assert written == metrics and list(written) == sorted(written)
    preds = json.loads((tmp_path / "out" / "squad_preds.json").read_text())
    odds = json.loads((tmp_path / "out" / "squad_null_odds.json").read_text())
    assert set(preds) == set(odds) == {e.qas_id for e in gold}
    assert all(odds[e.qas_id] == (5.0 if e.is_impossible else -5.0) for e in gold)
    assert metrics["NoAns_exact"] == 100.0 and metrics["total"] == len(gold)
    print("v2 gold-logit decode:", metrics)
    assert metrics["HasAns_exact"] > 97.0 and metrics["HasAns_f1"] > 98.0
    assert scorer.get_loss() == pytest.approx(0.5)


def test_scorer_on_real_v1_dev_gold_logits(tmp_path):
    task = _task(tmp_path, "squadv1", "dev.json", _need(SQUAD_V1), 2)
    gold = qa_data.read_squad(task.gold_file("dev"), "squadv1", True, False).examples
    _, metrics = _run_scorer(task, gold, tmp_path / "out")
    assert sorted(os.listdir(tmp_path / "out")) == ["squadv1_eval.json", "squadv1_preds.json"]
    print("v1 gold-logit decode:", metrics, "over", len(gold))
    assert metrics["exact_match"] > 97.0 and metrics["f1"] > 98.5


def test_scorer_on_mrqa_sample(tmp_path):
    task = _task(tmp_path, "newsqa", "dev.jsonl", _need(NEWSQA_SAMPLE), 3)
    gold = qa_data.read_mrqa(task.gold_file("dev"), "newsqa", True).examples
    _, metrics = _run_scorer(task, gold, tmp_path / "out")
    preds = json.loads((tmp_path / "out" / "newsqa_preds.json").read_text())
    assert set(preds) == {e.qid for e in gold}
    assert metrics["exact_match"] == 100.0 and metrics["f1"] == 100.0
