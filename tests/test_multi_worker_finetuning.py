"""Fine-tuning under `multi_worker` (finetune/finetune_runner.py): two local worker
processes train the same model as one device and only the chief writes files.

The task is CoNLL-2000 chunking cut to a few hundred sentences (tests/
finetune_run_fixtures.py), from a tiny "pre-trained" checkpoint, with every dropout off:
the encoder's through model_hparam_overrides, and the tagging head has none (the GLUE
heads' fixed dropout 0.1 would draw other masks on two replicas than on one).
"""

import json
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import finetune_run_fixtures as rf
import run_finetuning
from util import cli
from worker_fixtures import REPO, Cluster, free_ports

HPARAMS = {**rf.FAST_HPARAMS, "task_names": ["chunk"], "num_train_epochs": 2.0,
           "embedding_size": rf.TINY_EMBEDDING,
           "model_hparam_overrides": {**rf.TINY_OVERRIDES, "hidden_dropout_prob": 0.0,
                                      "attention_probs_dropout_prob": 0.0}}
# Float tolerance: the all-reduce adds the two half-batch gradients in another order.
TOLERANCE = 1e-4


def _files(root):
    """Relative paths under root; TensorBoard event files differ by host, pid and time."""
    names = set()
    for path in Path(root).rglob("*"):
        if path.is_file():
            rel = path.relative_to(root).as_posix()
            names.add(rel.split(".tfevents.")[0] + ".tfevents" if ".tfevents." in rel else rel)
    return names


def _events_files(root):
    return sorted(p for p in Path(root).rglob("*") if ".tfevents." in p.name)


def _results(root):
    with open(root / "results" / "chunk_results.pkl", "rb") as f:
        return pickle.load(f)


def _losses(stdout):
    """{step: loss} of the progress lines."""
    return {int(line.split("/")[0]): float(line.split(" - loss: ")[1].split()[0])
            for line in stdout.splitlines() if ", SPS: " in line}


def test_two_workers_train_as_one_device_and_only_the_chief_writes(tmp_path, capsys,
                                                                    monkeypatch):
    data_dir = rf.make_data_dir(tmp_path / "data", ["chunk"])
    for name in ("one_device", "two_workers"):
        rf.make_pretrained_model(data_dir, name)  # the same weights (seed 0) twice
    one, two = (Path(data_dir) / "models" / name for name in ("one_device", "two_workers"))
    before = _files(two)

    cli.run_main(lambda: run_finetuning.main([
        "--data-dir", data_dir, "--model-name", "one_device", "--hparams",
        json.dumps(HPARAMS)]))
    one_device_losses = _losses(capsys.readouterr().out)
    worker_tmp = tmp_path / "worker_tmp"  # where the non-chief featurises
    worker_tmp.mkdir()
    cmd = [sys.executable, str(REPO / "run_finetuning.py"), "--data-dir", data_dir,
           "--model-name", "two_workers", "--hparams",
           json.dumps({**HPARAMS, "distribution_strategy": "multi_worker"})]
    monkeypatch.setenv("TMPDIR", str(worker_tmp))  # read by the workers' tempfile
    with Cluster(cmd, tmp_path / "logs", free_ports(2)) as cluster:
        assert cluster.wait_all() == [0, 0], cluster.workers[1].err()[-3000:]
        chief_out, worker_out = (w.out() for w in cluster.workers)

    # Same training: the losses (of the whole global batch), the fine-tuned weights and
    # every metric equal one device's.
    assert len(one_device_losses) >= 4 and _losses(chief_out).keys() == one_device_losses.keys()
    for step, loss in _losses(chief_out).items():
        assert loss == pytest.approx(one_device_losses[step], rel=TOLERANCE, abs=1e-3), step
    ckpts = [tf.train.latest_checkpoint(str(root / "finetuning_models" / "chunk_model_1"))
             for root in (one, two)]
    assert ckpts[1].endswith("model.ckpt-20")
    readers = [tf.train.load_checkpoint(path) for path in ckpts]
    for name, _ in tf.train.list_variables(ckpts[0]):
        np.testing.assert_allclose(readers[1].get_tensor(name), readers[0].get_tensor(name),
                                   rtol=TOLERANCE, atol=TOLERANCE, err_msg=name)
    want, got = _results(one), _results(two)
    assert len(got) == 1 and set(got[0]["chunk"]) == set(want[0]["chunk"])
    for metric, value in want[0]["chunk"].items():
        assert got[0]["chunk"][metric] == pytest.approx(value, rel=TOLERANCE, abs=TOLERANCE)
    assert want[0]["chunk"]["f1"] > 0  # it learned something to compare

    # Written once, by the chief: the same files as the one-device run, one event file
    # per TensorBoard run, results and predictions with the chief's content.
    assert _files(two) - before == _files(one) - before
    assert len(_events_files(two / "finetuning_models")) == 2  # training + eval
    for name in ("results/chunk_results.txt", "results/chunk_predictions/chunk_dev_1.txt"):
        assert (two / name).read_text() == (one / name).read_text(), name
    assert "Writing results to" in chief_out and "Run dev set evaluation" in chief_out
    assert "Writing results to" not in worker_out
    assert "Run dev set evaluation" not in worker_out and "Wrote " not in worker_out
    # The non-chief featurised into its own temporary dir, now removed.
    assert f"featurising into {worker_tmp}{os.sep}electra_worker_features_" in worker_out
    assert not list(worker_tmp.iterdir())

