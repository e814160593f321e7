"""Tests for finetune/qa/squad_eval.py: hand-checked cases of the official SQuAD v1.1,
v2.0 and MRQA definitions, and perfect-prediction runs over the real dev files."""

import json
from pathlib import Path

import pytest

from finetune.qa import squad_eval
from util.cli import UserError

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SQUAD_V1 = DATA / "squad" / "dev-v1.1.reconstructed.json"
SQUAD_V2 = DATA / "squad" / "dev-v2.0.reconstructed.json"

V2_KEYS = ["HasAns_exact", "HasAns_f1", "HasAns_total", "NoAns_exact", "NoAns_f1",
           "NoAns_total", "best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh",
           "exact", "f1", "total"]


def _load(path):
    if not path.exists():
        pytest.skip("shared data file %s is absent" % path)
    return json.loads(path.read_text(encoding="utf-8"))


def _dataset(questions):
    """SQuAD `data` from [(id, [answer texts])]."""
    qas = [{"id": qid, "question": "q", "answers": [{"text": t, "answer_start": 0}
                                                   for t in texts]}
           for qid, texts in questions]
    return [{"title": "t", "paragraphs": [{"context": "c", "qas": qas}]}]


@pytest.mark.parametrize("text, expected", [
    ("The  Cat!", "cat"),
    ("a theater, an apple and THE end.", "theater apple and end"),
    ("  Hello,\tworld\n", "hello world"),
    ("don't", "dont"),
    ("24\u201310", "24\u201310"),  # the en dash is not in string.punctuation
    ("the", ""),
])
def test_normalize_answer(text, expected):
    assert squad_eval.normalize_answer(text) == expected


def test_exact_and_f1_hand_cases():
    # "big cat" vs "big dog": 1 shared token, P = R = 1/2.
    assert squad_eval.f1_score_v1("the Big cat", "a big dog.") == pytest.approx(0.5)
    assert squad_eval.f1_score_v2("the Big cat", "a big dog.") == pytest.approx(0.5)
    # P = 2/3, R = 2/2 -> F1 = 0.8; repeated tokens count as a bag.
    assert squad_eval.f1_score_v1("big big cat", "big cat") == pytest.approx(0.8)
    assert squad_eval.f1_score_v1("big big cat", "big big") == pytest.approx(0.8)
    assert squad_eval.exact_match_score("The Cat.", "cat") == 1
    assert squad_eval.exact_match_score("cats", "cat") == 0


def test_empty_answers_differ_between_v1_and_v2():
    # v1.1: no shared token -> 0 even when both are empty; v2.0: 1 iff both empty.
    assert squad_eval.f1_score_v1("", "") == 0.0
    assert squad_eval.f1_score_v2("", "") == 1.0
    assert squad_eval.f1_score_v2("an", "") == 1.0  # normalises to empty
    assert squad_eval.f1_score_v2("cat", "") == 0.0
    assert squad_eval.exact_match_score("", "") == 1


def test_evaluate_v1_max_over_gold_and_missing_counts_zero():
    data = _dataset([("q1", ["big cat", "the cat"]), ("q2", ["dog"]), ("q3", ["x"])])
    preds = {"q1": "cat", "q2": "dog park"}  # q3 missing
    result = squad_eval.evaluate_v1(data, preds)
    # q1: EM 1 (vs "the cat"), F1 1; q2: EM 0, F1 = 2*(1/2*1)/(3/2) = 2/3; q3: 0.
    assert result["exact_match"] == pytest.approx(100 / 3)
    assert result["f1"] == pytest.approx(100 * (1 + 2 / 3) / 3)


def test_evaluate_mrqa_skips_missing_predictions():
    answers = {"a": ["Denver Broncos"], "b": ["x"], "c": ["y"]}
    preds = {"a": "the Denver Broncos", "b": "z"}
    assert squad_eval.evaluate_mrqa(answers, preds) == {"exact_match": 50.0, "f1": 50.0}
    counted = squad_eval.evaluate_mrqa(answers, preds, skip_no_answer=False)
    assert counted["exact_match"] == pytest.approx(100 / 3)
    with pytest.raises(squad_eval.EvalInputError, match="no question has a prediction") as e:
        squad_eval.evaluate_mrqa(answers, {"zzz": "x"})
    assert isinstance(e.value, UserError)


def _v2_case():
    # a, c answerable; b, d unanswerable (empty answer list).
    data = _dataset([("a", ["cat"]), ("b", []), ("c", ["dog"]), ("d", [])])
    preds = {"a": "cat", "b": "x", "c": "bird", "d": ""}
    na_probs = {"a": -5.0, "b": -3.0, "c": -1.0, "d": 0.5}
    return data, preds, na_probs


def test_find_best_thresh_hand_case():
    data, preds, na_probs = _v2_case()
    exact, _, has_ans = squad_eval.v2_raw_scores(data, preds)
    # Start at 2 (abstain on all); a: +1 -> 3 (best, thresh -5); b: -1; c: 0; d: 0.
    assert squad_eval.find_best_thresh(preds, exact, na_probs, has_ans) == (75.0, -5.0)
    # If every answer were wrong, abstaining everywhere (threshold 0.0) is best.
    wrong = {"a": "dog", "b": "x", "c": "bird", "d": "y"}
    exact_wrong, _, _ = squad_eval.v2_raw_scores(data, wrong)
    assert squad_eval.find_best_thresh(wrong, exact_wrong, na_probs, has_ans) == (50.0, 0.0)


def test_evaluate_v2_hand_case():
    data, preds, na_probs = _v2_case()
    result = squad_eval.evaluate_v2(data, preds, na_probs, na_prob_thresh=-2.75)
    assert list(result) == V2_KEYS
    # -2.75: a answered (right), b answered "x" (wrong), c, d abstain (0, 1).
    assert result["exact"] == result["f1"] == 50.0
    assert (result["HasAns_exact"], result["NoAns_exact"]) == (50.0, 50.0)
    assert (result["HasAns_total"], result["NoAns_total"], result["total"]) == (2, 2, 4)
    assert (result["best_exact"], result["best_exact_thresh"]) == (75.0, -5.0)
    # Without null odds: everything answered, no best_* keys (as the official script).
    plain = squad_eval.evaluate_v2(data, preds)
    assert "best_exact" not in plain
    assert plain["exact"] == 50.0  # a right, d right ("" on unanswerable), b, c wrong
    with pytest.raises(squad_eval.EvalInputError, match="no null odds"):
        squad_eval.evaluate_v2(data, preds, {"a": 0.0})


def test_evaluate_v2_drops_gold_answers_normalising_to_empty():
    data = _dataset([("q", ["the", "Cat"])])
    # "the" normalises to "" and is dropped, so predicting "" is wrong here.
    assert squad_eval.evaluate_v2(data, {"q": ""})["exact"] == 0.0
    assert squad_eval.evaluate_v2(data, {"q": "cat"})["exact"] == 100.0


def test_perfect_predictions_on_real_v1_dev():
    data = _load(SQUAD_V1)["data"]
    preds = {qa["id"]: qa["answers"][0]["text"]
             for article in data for p in article["paragraphs"] for qa in p["qas"]}
    assert len(preds) == 10570
    assert squad_eval.evaluate_v1(data, preds) == {"exact_match": 100.0, "f1": 100.0}
    # Dropping 57 predictions costs exactly 57 / 10570.
    partial = dict(list(preds.items())[57:])
    result = squad_eval.evaluate_v1(data, partial)
    assert result["exact_match"] == pytest.approx(100.0 * (10570 - 57) / 10570)


def test_perfect_predictions_on_real_v2_dev_with_null_odds():
    data = _load(SQUAD_V2)["data"]
    qas = [qa for article in data for p in article["paragraphs"] for qa in p["qas"]]
    preds = {qa["id"]: qa["answers"][0]["text"] if qa["answers"] else "" for qa in qas}
    null_odds = {qa["id"]: -10.0 if qa["answers"] else 10.0 for qa in qas}
    result = squad_eval.evaluate_v2(data, preds, null_odds, -2.75)
    assert list(result) == V2_KEYS
    assert (result["total"], result["HasAns_total"], result["NoAns_total"]) == (
        11873, 5928, 5945)
    for key in ("exact", "f1", "HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1",
                "best_exact", "best_f1"):
        assert result[key] == 100.0, key
    assert result["best_exact_thresh"] == result["best_f1_thresh"] == -10.0
    # A threshold below every null score abstains everywhere: only NoAns is right.
    abstain = squad_eval.evaluate_v2(data, preds, null_odds, -20.0)
    assert abstain["exact"] == pytest.approx(100.0 * 5945 / 11873)
    assert abstain["HasAns_exact"] == 0.0 and abstain["NoAns_exact"] == 100.0
