"""Test-set outputs for GLUE tasks: the original's pickles and GLUE-server TSVs.

The original (`write_test_outputs`) pickled {eid: logits vector} per test split, and
{eid: prediction} for STS; it had no submission writer. `write_glue_submission` adds
one: "index<TAB>prediction" with label strings, under the file names the GLUE server
expects.
"""

from __future__ import annotations

import os
from typing import Iterable, Mapping

import numpy as np

from finetune.classification import classification_tasks as ct
from util import io_utils

# (task name, split) -> file name in a GLUE submission zip.
GLUE_SUBMISSION_FILES = {
    ("cola", "test"): "CoLA.tsv",
    ("sst", "test"): "SST-2.tsv",
    ("mrpc", "test"): "MRPC.tsv",
    ("sts", "test"): "STS-B.tsv",
    ("qqp", "test"): "QQP.tsv",
    ("mnli", "test_matched"): "MNLI-m.tsv",
    ("mnli", "test_mismatched"): "MNLI-mm.tsv",
    ("mnli", "diagnostic"): "AX.tsv",
    ("qnli", "test"): "QNLI.tsv",
    ("rte", "test"): "RTE.tsv",
    ("wnli", "test"): "WNLI.tsv",
}


def collect_test_outputs(task: ct.SingleOutputTask,
                         outputs: Iterable[Mapping]) -> dict:
    """Per-example head outputs (numpy, real examples only) -> the original's dict.

    Returns:
      {eid: logits [num_labels] float32} for classification tasks, or
      {eid: prediction (normalised scale) float} for regression tasks.
    """
    collected = {}
    for out in outputs:
        eid = int(out["eid"])
        if isinstance(task, ct.RegressionTask):
            collected[eid] = float(out["predictions"])
        else:
            collected[eid] = np.asarray(out["logits"], np.float32)
    return collected


def write_test_pickle(test_outputs: dict, path: str) -> str:
    """Pickles the collected outputs (atomically), as the original did."""
    io_utils.write_pickle(test_outputs, path)
    return path


def submission_lines(task: ct.SingleOutputTask, test_outputs: dict) -> list[str]:
    """Header + "index<TAB>prediction" rows sorted by index (= the test file's index)."""
    lines = ["index\tprediction"]
    for eid in sorted(test_outputs):
        value = test_outputs[eid]
        if isinstance(task, ct.RegressionTask):
            # Back to the [min, max] scale GLUE scores; clip predictions outside it.
            score = min(max(task.denormalize(float(value)), task.min_value), task.max_value)
            text = f"{score:.3f}"
        else:
            text = task.label_list[int(np.argmax(value))]
        lines.append(f"{eid}\t{text}")
    return lines


def write_glue_submission(task: ct.SingleOutputTask, split: str, test_outputs: dict,
                          output_dir: str) -> str:
    """Writes `<output_dir>/<GLUE file name>` and returns its path."""
    file_name = GLUE_SUBMISSION_FILES.get((task.name, split))
    if file_name is None:
        raise ValueError(f"No GLUE submission file for task {task.name!r} split "
                         f"{split!r}; known: {sorted(GLUE_SUBMISSION_FILES)}.")
    path = os.path.join(output_dir, file_name)
    io_utils.write_text("\n".join(submission_lines(task, test_outputs)) + "\n", path)
    return path
