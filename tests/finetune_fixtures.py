"""Shared helpers for the fine-tuning tests: a temp <data-dir> linked to shared/data.

The real task files stay in ../shared/data (read-only); each test builds
<tmp>/finetuning_data/<task>/ with symlinks to them, as the original's layout expects.
"""

import functools
import os
from pathlib import Path

import pytest

import configure_finetuning
from model import tokenization

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# task dir -> {file name expected by the task: path under shared/data}
TASK_FILES = {
    "cola": {f"{s}.tsv": f"glue/CoLA/{s}.tsv" for s in ("train", "dev", "test")},
    "sst": {f"{s}.tsv": f"glue/SST-2/{s}.tsv" for s in ("train", "dev", "test")},
    "mrpc": {f"{s}.tsv": f"glue/MRPC/{s}.tsv" for s in ("train", "dev", "test")},
    "sts": {f"{s}.tsv": f"glue/STS-B/{s}.tsv" for s in ("train", "dev", "test")},
    "qnli": {f"{s}.tsv": f"glue/QNLI/{s}.tsv" for s in ("dev", "test")},
    "rte": {f"{s}.tsv": f"glue/RTE/{s}.tsv" for s in ("train", "dev", "test")},
    "wnli": {f"{s}.tsv": f"glue/WNLI/{s}.tsv" for s in ("train", "dev", "test")},
    "mnli": {"diagnostic.tsv": "glue/diagnostic/diagnostic.tsv"},
    # ELECTRA reports chunking on the CoNLL-2000 test set, read as dev.txt.
    "chunk": {"train.txt": "chunk/train.txt", "dev.txt": "chunk/test.txt"},
}


def require_shared_data():
    if not (SHARED_DATA / "glue").is_dir() or not (SHARED_DATA / "vocab").is_dir():
        pytest.skip(f"shared task data not found at {SHARED_DATA} (read-only data kept "
                    "beside the repo); these tests need the real GLUE/CoNLL files.")


def make_data_dir(root, tasks=tuple(TASK_FILES)):
    """Creates root/vocab.txt and root/finetuning_data/<task>/* as symlinks; returns root."""
    require_shared_data()
    root = Path(root)
    (root / "finetuning_data").mkdir(parents=True, exist_ok=True)
    if not (root / "vocab.txt").exists():
        os.symlink(SHARED_DATA / "vocab" / "vocab.txt", root / "vocab.txt")
    for task in tasks:
        task_dir = root / "finetuning_data" / task
        task_dir.mkdir(exist_ok=True)
        for name, source in TASK_FILES.get(task, {}).items():
            os.symlink(SHARED_DATA / source, task_dir / name)
    return root


def make_config(data_dir, task_names, **hparams):
    """A real FinetuningConfig for `task_names` rooted at `data_dir`."""
    return configure_finetuning.make_config(
        str(data_dir), "test_model", {"task_names": list(task_names), **hparams})


@functools.lru_cache(maxsize=None)
def tokenizer(do_lower_case=True):
    require_shared_data()
    return tokenization.FullTokenizer(str(SHARED_DATA / "vocab" / "vocab.txt"),
                                      do_lower_case=do_lower_case)


def write_tsv(path, rows):
    """Writes rows (lists of fields) tab-joined, one per line."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("".join("\t".join(r) + "\n" for r in rows), encoding="utf-8")
