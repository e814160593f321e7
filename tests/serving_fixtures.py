"""Tiny fine-tuned models for the SavedModel and predict tests, trained once per process.

Two run_finetuning.py runs from the tiny pre-trained checkpoint of
tests/finetune_run_fixtures.py on truncated real task files:
  * "glue": cola + sts + chunk at max_seq_length 32, so that sentence-pair truncation
    and the tagging truncation quirk happen on many dev rows;
  * "qa": squadv1 + squad (2.0) at max_seq_length 256, so most dev contexts fit in
    one window.
Both write their dev predictions (results/...) and test outputs, which the tests
compare with the exported SavedModels. Training happens on first use; the models live
in a temp dir removed at exit, shared by every test module of the pytest process.
"""

import atexit
import json
import shutil
import tempfile
from pathlib import Path

import finetune_run_fixtures as rf

MODEL_NAME = "tiny"
RUNS = {
    "glue": {"task_names": ["cola", "sts", "chunk"], "max_seq_length": 32},
    "qa": {"task_names": ["squadv1", "squad"], "max_seq_length": 256,
           "train_batch_size": 8, "num_train_epochs": 2.0},
}
_ROOT = {}


def data_dir() -> Path:
    """The shared <data-dir> with task files and the tiny pre-trained model."""
    if "root" not in _ROOT:
        root = Path(tempfile.mkdtemp(prefix="serving_models_"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        tasks = [t for run in RUNS.values() for t in run["task_names"]]
        rf.make_data_dir(root, tasks)
        rf.make_pretrained_model(str(root), MODEL_NAME)
        _ROOT["root"] = root
    return _ROOT["root"]


def model_root() -> Path:
    return data_dir() / "models" / MODEL_NAME


def fine_tuned(run: str) -> Path:
    """Model dir of `run` ("glue" or "qa"), fine-tuning it on first use."""
    tasks = ",".join(RUNS[run]["task_names"])
    model_dir = model_root() / "finetuning_models" / f"{tasks}_model_1"
    if not (model_dir / "checkpoint").exists():
        from finetune import finetune_runner  # pylint: disable=import-outside-toplevel
        hparams = {**rf.FAST_HPARAMS, "write_test_outputs": True, **RUNS[run]}
        config = finetune_runner.make_run_config(str(data_dir()), MODEL_NAME, hparams)
        finetune_runner.run_finetuning(config)
    return model_dir


RUN_OF_TASK = {task: run for run, spec in RUNS.items() for task in spec["task_names"]}


def exported(task: str) -> Path:
    """SavedModel of `task` (export_savedmodel.py's library), exported on first use."""
    out = data_dir() / "savedmodels" / task / "1"
    if not (out / "saved_model.pb").exists():
        from finetune import savedmodel_export  # pylint: disable=import-outside-toplevel
        savedmodel_export.export(str(fine_tuned(RUN_OF_TASK[task])), str(out), task=task)
    return out


def predictions_dir(run: str) -> Path:
    """results/<tasks>_predictions of `run` (TSV / CoNLL dev predictions)."""
    return model_root() / "results" / (",".join(RUNS[run]["task_names"]) + "_predictions")


def qa_results(run: str, task: str) -> dict:
    """{"preds": {id: text}, "null_odds": {id: float} (2.0 only)} the runner wrote."""
    qa_dir = model_root() / "results" / (",".join(RUNS[run]["task_names"]) + "_qa")
    out = {"preds": json.loads((qa_dir / f"{task}_preds.json").read_text())}
    odds = qa_dir / f"{task}_null_odds.json"
    if odds.exists():
        out["null_odds"] = json.loads(odds.read_text())
    return out


def task_file(task: str, name: str) -> Path:
    return data_dir() / "finetuning_data" / task / name
