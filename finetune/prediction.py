"""Batch prediction with a fine-tuned model: the library behind predict.py.

The model is a fine-tuned model dir (rebuilt in-process with the same serving module
export_savedmodel.py saves, so both give identical predictions) or an exported
SavedModel dir. Rows stream from the input file in batches; a progress line (rows,
rate, ETA) is logged every few seconds. Output goes to a hidden temporary file beside
the target that is renamed over it only when every row is written: an interrupted run
(Ctrl-C, SIGTERM, a crash or kill -9) never leaves a file under the output name that
looks complete, and a rerun simply starts again (leftover temporary files of dead
runs are removed then).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import time

import tensorflow as tf

from finetune import predict_io
from util import io_utils
from util.cli import UserError
from util.logging_utils import Progress, log

MAX_BAD_ROWS_LOGGED = 20
PROGRESS_EVERY_SECONDS = 5.0


@dataclasses.dataclass
class Predictor:
    """A serving function and what it serves."""
    fn: object  # callable(**{input name: [B] tf.string}) -> {output: tensor}
    input_names: tuple
    task_type: str
    labels: list
    qa_v2: bool = False
    owner: object = None  # what `fn` needs kept alive (the loaded SavedModel)

    def __call__(self, rows: list[dict]) -> dict:
        inputs = {name: tf.constant([row[name] for row in rows], tf.string)
                  for name in self.input_names}
        return predict_io.as_numpy(self.fn(**inputs))


def load_predictor(model_path: str, task: str | None = None) -> Predictor:
    """Predictor for a SavedModel dir (saved_model.pb) or a fine-tuned model dir."""
    if os.path.exists(os.path.join(model_path, "saved_model.pb")):
        if task is not None:
            raise UserError("--task applies to fine-tuned model dirs; a SavedModel serves "
                            "the one task it was exported for.")
        return _saved_model_predictor(model_path)
    from finetune import savedmodel_export  # pylint: disable=import-outside-toplevel
    loaded = savedmodel_export.load_finetuned(model_path, task)
    module = savedmodel_export.build_module(loaded)
    meta = module.metadata()
    return Predictor(lambda **inputs: module.serve(*(inputs[n] for n in module.input_names)),
                     tuple(module.input_names), meta["task_type"], meta["label_names"],
                     bool(meta.get("squad_v2")))


def _saved_model_predictor(path: str) -> Predictor:
    import tensorflow_text  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    from finetune import savedmodel_export  # pylint: disable=import-outside-toplevel
    meta_path = os.path.join(path, "assets", savedmodel_export.METADATA_FILE)
    if not os.path.exists(meta_path):
        raise UserError(f"{path} is a SavedModel but not one of export_savedmodel.py (no "
                        f"assets/{savedmodel_export.METADATA_FILE}).")
    meta = io_utils.load_json(meta_path)
    model = tf.saved_model.load(path)
    return Predictor(model.signatures["serving_default"], tuple(meta["inputs"]),
                     meta["task_type"], meta["label_names"], bool(meta.get("squad_v2")),
                     owner=model)


@contextlib.contextmanager
def sigterm_as_exit():
    """Turns SIGTERM into SystemExit so `finally` blocks (temp file removal) run."""
    def handler(signum, frame):
        del frame
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def remove_stale_temps(output: str) -> None:
    """Deletes temporary files of earlier runs on `output` whose process is gone."""
    directory, name = os.path.split(os.path.abspath(output))
    if not os.path.isdir(directory):
        return
    for entry in os.listdir(directory):
        if not io_utils.is_temp_name_for(entry, name):
            continue
        pid = entry.split(io_utils.TEMP_MARKER, 1)[1].split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            os.remove(os.path.join(directory, entry))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Writer:
    """Writes records as JSON lines or TSV to an open text file."""

    def __init__(self, f, fmt: str, predictor: Predictor):
        self._f, self._fmt, self._predictor = f, fmt, predictor
        self._header = None
        if fmt == "tsv":
            self._header = predict_io.tsv_header(predictor.task_type, predictor.labels,
                                                 predictor.qa_v2)
            f.write("\t".join(self._header) + "\n")

    def write_batch(self, rows: list) -> None:
        p = self._predictor
        outputs = p([row for _, row in rows])
        for record in predict_io.records(p.task_type, p.labels, outputs, rows):
            if self._fmt == "tsv":
                self._f.write(predict_io.tsv_line(record, self._header) + "\n")
            else:
                self._f.write(json.dumps(record, ensure_ascii=False) + "\n")


@dataclasses.dataclass(frozen=True)
class PredictResult:
    output: str
    rows: int  # predicted
    bad_rows: int  # skipped


def predict_file(predictor: Predictor, input_path: str, output_path: str,
                 input_format: str | None = None, output_format: str | None = None,
                 batch_size: int = 32, skip_bad_rows: bool = False) -> PredictResult:
    """Predicts every row of `input_path` into `output_path` (see the module docstring).

    Raises:
      predict_io.BadRow (a UserError) on the first bad row unless skip_bad_rows.
    """
    if batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {batch_size}.")
    in_fmt = predict_io.file_format(input_path, input_format, ("tsv", "jsonl", "text"),
                                    "input")
    out_fmt = predict_io.file_format(output_path, output_format, ("tsv", "jsonl"), "output")
    if os.path.isdir(output_path):
        raise UserError(f"Output path {output_path} is a directory; pass a file name.")
    remove_stale_temps(output_path)
    total = predict_io.count_rows(input_path)
    rows = predict_io.read_rows(input_path, in_fmt, predictor.input_names)
    with sigterm_as_exit(), io_utils.atomic_path(output_path) as temp:
        with open(temp, "w", encoding="utf-8") as f:
            done, bad = _predict_rows(predictor, rows, _Writer(f, out_fmt, predictor),
                                      total, batch_size, skip_bad_rows)
            f.flush()
            os.fsync(f.fileno())
    log(f"Wrote {done} predictions to {output_path}"
        + (f"; skipped {bad} bad row(s)" if bad else ""))
    return PredictResult(output_path, done, bad)


def _predict_rows(predictor, rows, writer, total, batch_size, skip_bad_rows):
    """The batching loop; returns (rows predicted, bad rows skipped)."""
    progress = Progress(total, unit_name="rows", quiet=True)
    batch, done, bad, last_line, last_log = [], 0, 0, 0, time.monotonic()
    for number, row in rows:
        last_line = number
        if isinstance(row, predict_io.BadRow):
            if not skip_bad_rows:
                raise UserError(f"{row} (pass --skip-bad-rows to skip such rows)")
            bad += 1
            if bad <= MAX_BAD_ROWS_LOGGED:
                log(f"Skipping bad row: {row}")
            continue
        batch.append((number, row))
        if len(batch) == batch_size:
            writer.write_batch(batch)
            done, batch = done + len(batch), []
            if time.monotonic() - last_log >= PROGRESS_EVERY_SECONDS:
                log("Predicted " + progress.update(last_line, f"{done} rows"))
                last_log = time.monotonic()
    if batch:
        writer.write_batch(batch)
        done += len(batch)
    log("Predicted " + progress.update(total, f"{done} rows"))
    return done, bad
