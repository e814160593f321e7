"""Input rows and output records of predict.py: TSV, JSON lines and plain text.

Inputs hold one example per line, checked line by line:
  * TSV: the model's input columns in order, tab-separated, no quoting (as GLUE); a
    first line naming exactly those columns is a header and skipped;
  * JSONL: one object per line with the input fields as strings; an "id" field is
    copied to the output; blank lines are skipped;
  * text: one text per line (single-input tasks only: single sentences, tagging).
A bad row (wrong column count, invalid JSON, a missing or non-string field, bytes that
are not UTF-8) raises BadRow naming the file and line. Outputs: one record per input
row, carrying its 1-based input line number, written as JSON lines or as TSV with a
header (probabilities / tags flattened into columns).
"""

from __future__ import annotations

import json
import os
from typing import Iterator

import numpy as np

from util.cli import UserError

FORMATS = {".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".txt": "text"}


class BadRow(UserError):
    """One input line cannot be used; the message names the file and line."""

    def __init__(self, path: str, line: int, reason: str):
        super().__init__(f"{path}: line {line}: {reason}")
        self.line = line


def file_format(path: str, given: str | None, allowed: tuple, what: str) -> str:
    """`given`, else the format of the file extension; one of `allowed`."""
    fmt = given or FORMATS.get(os.path.splitext(path)[1].lower())
    if fmt not in allowed:
        raise UserError(f"Cannot tell the {what} format of {path} from its extension; pass "
                        f"--{what}-format ({' or '.join(allowed)}).")
    return fmt


def _lines(path: str) -> Iterator[tuple[int, bytes]]:
    """(1-based number, line without its \\n or \\r\\n) of every line of a file."""
    try:
        with open(path, "rb") as f:
            for number, raw in enumerate(f, 1):
                yield number, raw.rstrip(b"\n").rstrip(b"\r")
    except FileNotFoundError:
        raise UserError(f"Input file {path} not found.") from None
    except IsADirectoryError:
        raise UserError(f"Input path {path} is a directory; pass a file.") from None


def _decode(path: str, number: int, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadRow(path, number, f"not valid UTF-8 ({e.reason} at byte {e.start}); "
                                   "re-save the file as UTF-8") from None


def count_rows(path: str) -> int:
    """Number of lines (an upper bound on the rows), for the progress line."""
    return sum(1 for _ in _lines(path))


def _tsv_row(path, number, text, names) -> dict:
    fields = text.split("\t")
    if len(fields) != len(names):
        raise BadRow(path, number, f"expected {len(names)} tab-separated column(s) "
                                   f"({', '.join(names)}), got {len(fields)}")
    return dict(zip(names, fields))


def _jsonl_row(path, number, text, names) -> dict | None:
    if not text.strip():
        return None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise BadRow(path, number, f"not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(obj, dict):
        raise BadRow(path, number, f"expected a JSON object with the field(s) "
                                   f"{', '.join(names)}, got {type(obj).__name__}")
    for name in names:
        if name not in obj:
            raise BadRow(path, number, f"missing field {name!r} (the model's inputs are "
                                       f"{', '.join(names)})")
        if not isinstance(obj[name], str):
            raise BadRow(path, number, f"field {name!r} should be a string, got "
                                       f"{type(obj[name]).__name__}")
    row = {name: obj[name] for name in names}
    if "id" in obj:
        row["id"] = obj["id"]
    return row


def read_rows(path: str, fmt: str, names: tuple) -> Iterator[tuple[int, dict | BadRow]]:
    """Yields (line number, {input name: text[, "id"]} or the BadRow of that line).

    Bad rows are yielded, not raised, so the caller decides whether to stop or skip.
    """
    if fmt == "text" and len(names) != 1:
        raise UserError(f"Plain-text input gives one text per line but this model takes "
                        f"{', '.join(names)}; use a TSV or JSONL file.")
    for number, raw in _lines(path):
        try:
            text = _decode(path, number, raw)
            if fmt == "tsv":
                if number == 1 and text == "\t".join(names):
                    continue  # header
                row = _tsv_row(path, number, text, names)
            elif fmt == "jsonl":
                row = _jsonl_row(path, number, text, names)
            else:
                row = {names[0]: text}
        except BadRow as bad:
            yield number, bad
            continue
        if row is not None:
            yield number, row


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def records(task_type: str, labels: list, outputs: dict, rows: list) -> list[dict]:
    """One JSON-able record per row from a batch of serving outputs (numpy, [B, ...])."""
    result = []
    for i, (number, row) in enumerate(rows):
        rec = {"line": number, **({"id": row["id"]} if "id" in row else {})}
        if task_type == "classification":
            rec.update(label=_text(outputs["label"][i]), label_id=int(outputs["label_id"][i]),
                       probabilities=dict(zip(labels, map(float, outputs["probabilities"][i]))),
                       logits=[float(x) for x in outputs["logits"][i]])
        elif task_type == "regression":
            rec.update(score=float(outputs["score"][i]),
                       prediction=float(outputs["prediction"][i]))
        elif task_type == "qa":
            rec.update(answer=_text(outputs["answer"][i]), score=float(outputs["score"][i]),
                       context_truncated=bool(outputs["context_truncated"][i]))
            if "no_answer_score" in outputs:
                rec.update(no_answer_score=float(outputs["no_answer_score"][i]),
                           thresholded_answer=_text(outputs["thresholded_answer"][i]))
        else:
            n_words, n_tagged = int(outputs["num_words"][i]), int(outputs["num_tagged_words"][i])
            rec.update(words=[_text(w) for w in outputs["words"][i][:n_words]],
                       tags=[_text(t) for t in outputs["tags"][i][:n_tagged]],
                       num_tagged_words=n_tagged)
        result.append(rec)
    return result


def tsv_header(task_type: str, labels: list, qa_v2: bool) -> list[str]:
    """Column names of a TSV output."""
    if task_type == "classification":
        return ["line", "label", "label_id"] + [f"p_{label}" for label in labels]
    if task_type == "regression":
        return ["line", "score", "prediction"]
    if task_type == "qa":
        return ["line", "answer", "score", "context_truncated"] + (
            ["no_answer_score", "thresholded_answer"] if qa_v2 else [])
    return ["line", "tags", "num_words", "num_tagged_words"]


def tsv_line(record: dict, header: list[str]) -> str:
    """A record as one TSV line; tabs and newlines inside texts become spaces."""
    values = []
    for name in header:
        if name.startswith("p_") and "probabilities" in record:
            value = record["probabilities"][name[2:]]
        elif name == "tags":
            value = " ".join(record["tags"])
        elif name == "num_words":
            value = len(record["words"])
        else:
            value = record[name]
        if isinstance(value, float):
            value = f"{value:.6g}"
        values.append(" ".join(str(value).replace("\t", " ").splitlines()))
    return "\t".join(values)


def as_numpy(outputs: dict) -> dict:
    """{name: numpy array} of a serving function's outputs."""
    return {name: np.asarray(value) for name, value in outputs.items()}
