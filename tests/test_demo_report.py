"""Tests for the demo's closing comparison (util/demo_report.py)."""

import pickle

import pytest

from util import demo_report


def _write(path, trials):
    with open(path, "wb") as f:
        pickle.dump(trials, f)


def test_task_scores_reads_every_trial(tmp_path):
    _write(tmp_path / "cola_results.pkl",
           [{"cola": {"mcc": 41.0, "loss": 0.5}}, {"cola": {"mcc": 45.5, "loss": 0.4}}])
    assert demo_report.task_scores(str(tmp_path), "cola", "mcc") == [41.0, 45.5]


def test_task_scores_names_the_file_when_empty(tmp_path):
    _write(tmp_path / "cola_results.pkl", [{"sst": {"accuracy": 80.0}}])
    with pytest.raises(ValueError, match="cola_results.pkl holds no cola mcc"):
        demo_report.task_scores(str(tmp_path), "cola", "mcc")


def test_comparison_reports_medians_and_signed_difference():
    text = demo_report.comparison([50.0, 70.0, 60.0], [30.0, 20.0, 25.0], 600)
    lines = text.splitlines()
    assert "the median of 3 fine-tuning seeds" in lines[1]
    assert lines[2] == "  ELECTRA pre-trained (600 steps):   60.0   (trials: 50.0, 70.0, 60.0)"
    assert lines[3] == "  random initialisation:             25.0   (trials: 30.0, 20.0, 25.0)"
    assert "difference: +35.0 (pre-training paid off)" in text
    assert "Topic task, dev accuracy (%), the median of 3" in lines[1]
    worse = demo_report.comparison([10.0], [12.5], 600, "Some task, dev MCC x 100")
    assert lines[0] == "" and "Some task, dev MCC x 100, 1 fine-tuning seed:" in worse
    assert "difference: -2.5 (pre-training did not pay off in this run)" in worse
