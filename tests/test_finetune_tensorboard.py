"""Fine-tuning writes TensorBoard scalars: training losses in the model dir, dev metrics
in its eval/ run, readable by TensorBoard's own event reader."""

import os
import pickle

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

import serving_fixtures as sfx
from finetune_fixtures import require_shared_data

accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.plugin_event_accumulator")
tensor_util = pytest.importorskip("tensorboard.util.tensor_util")


def _scalars(run_dir):
    """{tag: [(step, value)]} of the scalar-plugin summaries of one TensorBoard run."""
    acc = accumulator.EventAccumulator(str(run_dir), size_guidance={"tensors": 0})
    acc.Reload()
    tags = [t for t in acc.Tags()["tensors"]
            if acc.SummaryMetadata(t).plugin_data.plugin_name == "scalars"]
    return {tag: [(e.step, float(tensor_util.make_ndarray(e.tensor_proto)))
                  for e in acc.Tensors(tag)] for tag in tags}


def test_training_losses_and_dev_metrics_are_tensorboard_scalars():
    require_shared_data()
    model_dir = sfx.fine_tuned("glue")
    train = _scalars(model_dir)
    assert {"loss", "learning_rate", "steps_per_sec"} <= set(train)
    assert [step for step, _ in train["loss"]] == [5 * i for i in range(1, 11)]  # log every 5
    evaluation = _scalars(model_dir / "eval")
    with open(sfx.model_root() / "results" / "cola,sts,chunk_results.pkl", "rb") as f:
        results = pickle.load(f)[0]
    expected = {f"{task}/{metric}": value for task, metrics in results.items()
                for metric, value in metrics.items()}
    assert set(evaluation) == set(expected) and "chunk/test_f1" in expected
    for tag, value in expected.items():
        assert evaluation[tag] == [(50, pytest.approx(value, rel=1e-6, abs=1e-6))], tag
