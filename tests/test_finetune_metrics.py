"""GLUE metrics vs sklearn/scipy on fixed predictions, and the scorers built on them."""

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from finetune.classification import classification_metrics as cm

RNG = np.random.default_rng(1234)
LABELS = RNG.integers(0, 2, 500)
# Predictions that agree with the labels ~70% of the time.
PREDS = np.where(RNG.random(500) < 0.7, LABELS, 1 - LABELS)
GOLD_SCORES = np.round(RNG.uniform(0, 5, 300), 1)  # rounded: many ties
PRED_SCORES = np.round(GOLD_SCORES + RNG.normal(0, 1.0, 300), 0)  # heavy ties


def test_accuracy_matches_sklearn():
    assert cm.accuracy(LABELS, PREDS) == pytest.approx(
        100 * skm.accuracy_score(LABELS, PREDS))


@pytest.mark.filterwarnings("ignore:A single label was found")
@pytest.mark.parametrize("labels,preds", [
    (LABELS, PREDS),
    (RNG.integers(0, 3, 200), RNG.integers(0, 3, 200)),  # multi-class
    ([1, 1, 1, 1], [1, 1, 1, 1]),  # constant: undefined -> 0 as sklearn
    ([0, 1, 0, 1], [1, 1, 1, 1]),
])
def test_mcc_matches_sklearn(labels, preds):
    assert cm.matthews_corrcoef(labels, preds) == pytest.approx(
        skm.matthews_corrcoef(labels, preds), abs=1e-12)


@pytest.mark.parametrize("labels,preds", [
    (LABELS, PREDS),
    ([0, 1, 1, 0, 1], [1, 1, 0, 0, 1]),
    ([0, 0, 0], [0, 0, 0]),  # no positives at all -> 0
])
def test_f1_matches_sklearn_positive_class(labels, preds):
    expected = 100 * skm.f1_score(labels, preds, pos_label=1, zero_division=0)
    assert cm.f1_positive(labels, preds) == pytest.approx(expected)


def test_f1_hand_computed():
    # Gold positives come from the labels, predicted positives from the predictions
    # (spec e.1: the original's unused F1Scorer got the gold count wrong).
    # tp=2, predicted positives=3, gold positives=4 -> P=2/3, R=1/2, F1=4/7.
    labels = [1, 1, 1, 1, 0, 0]
    preds = [1, 1, 0, 0, 1, 0]
    assert cm.f1_positive(labels, preds) == pytest.approx(100 * 4 / 7)


def test_pearson_spearman_match_scipy_with_ties():
    assert cm.pearson(GOLD_SCORES, PRED_SCORES) == pytest.approx(
        stats.pearsonr(GOLD_SCORES, PRED_SCORES)[0], abs=1e-12)
    assert cm.spearman(GOLD_SCORES, PRED_SCORES) == pytest.approx(
        stats.spearmanr(GOLD_SCORES, PRED_SCORES)[0], abs=1e-12)
    np.testing.assert_allclose(cm.average_ranks(PRED_SCORES), stats.rankdata(PRED_SCORES))
    assert np.isnan(cm.pearson([1, 2, 3], [2, 2, 2]))


def feed(scorer, labels, preds, losses, key="label_ids"):
    for i, (y, p, loss) in enumerate(zip(labels, preds, losses)):
        scorer.update({key: np.asarray(y), "predictions": np.asarray(p),
                       "loss": np.float32(loss), "eid": np.int32(i)})


def test_scorers_report_original_names_and_mean_loss():
    losses = RNG.uniform(0, 2, 500)
    mcc = cm.MCCScorer(["0", "1"])
    feed(mcc, LABELS, PREDS, losses)
    results = dict(mcc.get_results())
    assert list(results) == ["mcc", "loss"]
    assert results["mcc"] == pytest.approx(100 * skm.matthews_corrcoef(LABELS, PREDS))
    assert results["loss"] == pytest.approx(losses.mean())
    f1 = cm.F1Scorer(["0", "1"])
    feed(f1, LABELS, PREDS, losses)
    assert [k for k, _ in f1.get_results()] == ["accuracy", "f1", "loss"]
    reg = cm.RegressionScorer()
    feed(reg, GOLD_SCORES / 5, PRED_SCORES / 5, losses[:300], key="targets")
    results = dict(reg.get_results("dev_"))
    assert list(results) == ["dev_pearson", "dev_spearman", "dev_mse", "dev_loss"]
    assert results["dev_spearman"] == pytest.approx(
        100 * stats.spearmanr(GOLD_SCORES, PRED_SCORES)[0])
    assert results["dev_mse"] == pytest.approx(np.mean((GOLD_SCORES - PRED_SCORES) ** 2) / 25)
    acc = cm.AccuracyScorer(["no", "yes"])
    feed(acc, [1, 0], [1, 1], [0.5, 1.5])
    assert acc.results_str() == "accuracy: 50.00 - loss: 1.00"


def test_dev_predictions_file(tmp_path):
    acc = cm.AccuracyScorer(["entailment", "not_entailment"])
    for eid, y, p in [(2, 1, 0), (0, 0, 0)]:
        acc.update({"label_ids": y, "predictions": p, "loss": 0.1, "eid": eid})
    path = acc.write_predictions(str(tmp_path / "rte_dev.tsv"))
    assert open(path).read() == ("eid\tprediction\tgold\n0\tentailment\tentailment\n"
                                 "2\tentailment\tnot_entailment\n")
