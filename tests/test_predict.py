"""Tests of predict.py on the tiny fine-tuned models of tests/serving_fixtures.py.

Predictions from a fine-tuned model dir and from its exported SavedModel must agree
with each other and with run_finetuning.py's dev prediction files, for plain-text,
TSV and JSONL inputs and outputs. Bad rows stop the run with one line naming the file
and line (exit code 2) unless skipped; an interrupted run never leaves a file under
the output name, and a rerun completes.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

import predict
import serving_fixtures as sfx
from finetune_fixtures import require_shared_data
from util import cli
from util import io_utils

REPO = Path(__file__).resolve().parents[1]


def _predict(argv, capsys=None):
    """predict.main as the script runs it; returns (PredictResult or exit code, stdout)."""
    try:
        result = cli.run_main(lambda: predict.main(argv))
    except SystemExit as e:
        result = e.code
    out = capsys.readouterr() if capsys else None
    return result, out


def _jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def _cola_dev_lines():
    rows = sfx.task_file("cola", "dev.tsv").read_text(encoding="utf-8").splitlines()
    return [row.split("\t")[3] for row in rows]


def test_text_input_checkpoint_and_savedmodel_agree_with_the_runner(tmp_path, capsys):
    require_shared_data()
    sentences = _cola_dev_lines()
    (tmp_path / "in.txt").write_text("\n".join(sentences) + "\n", encoding="utf-8")
    ckpt, _ = _predict(["--model", str(sfx.fine_tuned("glue")), "--task", "cola", "--input",
                        str(tmp_path / "in.txt"), "--output", str(tmp_path / "a.jsonl"),
                        "--batch-size", "7"], capsys)
    saved, out = _predict(["--model", str(sfx.exported("cola")), "--input",
                           str(tmp_path / "in.txt"), "--output", str(tmp_path / "b.jsonl")],
                          capsys)
    assert ckpt.rows == saved.rows == len(sentences) and saved.bad_rows == 0
    assert "Predicted 100/100 = 100.0%, rows/s:" in out.out and "ETA" in out.out
    a, b = _jsonl(tmp_path / "a.jsonl"), _jsonl(tmp_path / "b.jsonl")
    assert [r["line"] for r in b] == list(range(1, len(sentences) + 1))
    assert [r["label"] for r in a] == [r["label"] for r in b]
    np.testing.assert_allclose([r["logits"] for r in a], [r["logits"] for r in b], atol=1e-5)
    runner = [line.split("\t")[1] for line in
              (sfx.predictions_dir("glue") / "cola_dev_1.txt").read_text().splitlines()[1:]]
    assert [r["label"] for r in b] == runner
    assert set(b[0]["probabilities"]) == {"0", "1"}


def test_tsv_pairs_with_header_to_tsv(tmp_path, capsys):
    require_shared_data()
    rows = sfx.task_file("sts", "dev.tsv").read_text(encoding="utf-8").splitlines()[1:]
    pairs = [row.split("\t")[-3:-1] for row in rows]
    lines = ["text_a\ttext_b"] + ["\t".join(p) for p in pairs]
    (tmp_path / "pairs.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    result, _ = _predict(["--model", str(sfx.exported("sts")), "--input",
                          str(tmp_path / "pairs.tsv"), "--output", str(tmp_path / "out.tsv")],
                         capsys)
    table = [line.split("\t") for line in (tmp_path / "out.tsv").read_text().splitlines()]
    assert table[0] == ["line", "score", "prediction"] and len(table) == len(pairs) + 1
    assert [int(r[0]) for r in table[1:]] == list(range(2, len(pairs) + 2))
    runner = [float(line.split("\t")[1]) for line in
              (sfx.predictions_dir("glue") / "sts_dev_1.txt").read_text().splitlines()[1:]]
    np.testing.assert_allclose([float(r[2]) for r in table[1:]], runner, atol=1e-5)
    assert result.rows == len(pairs)


def test_jsonl_questions_with_ids_and_tagging_text(tmp_path, capsys):
    require_shared_data()
    data = json.loads(sfx.task_file("squadv1", "dev.json").read_text(encoding="utf-8"))
    questions = [{"id": qa["id"], "question": qa["question"], "context": p["context"]}
                 for a in data["data"] for p in a["paragraphs"] for qa in p["qas"]]
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    _predict(["--model", str(sfx.exported("squadv1")), "--input", str(tmp_path / "q.jsonl"),
              "--output", str(tmp_path / "a.jsonl"), "--batch-size", "16"], capsys)
    answers = _jsonl(tmp_path / "a.jsonl")
    runner = sfx.qa_results("qa", "squadv1")["preds"]
    single = [a for a in answers if not a["context_truncated"]]
    assert len(answers) == len(questions) and len(single) >= 40
    assert [a["answer"] for a in single] == [runner[a["id"]] for a in single]
    sentences = [line for line in sfx.task_file("chunk", "dev.txt").read_text().split("\n\n")
                 if line.strip()]
    words = [[row.split()[0] for row in s.splitlines()] for s in sentences]
    (tmp_path / "s.txt").write_text("".join(" ".join(w) + "\n" for w in words))
    _predict(["--model", str(sfx.exported("chunk")), "--input", str(tmp_path / "s.txt"),
              "--output", str(tmp_path / "tags.jsonl")], capsys)
    tagged = _jsonl(tmp_path / "tags.jsonl")
    assert [t["words"] for t in tagged] == words
    written = (sfx.predictions_dir("glue") / "chunk_dev_1.txt").read_text().split("\n")[:-1]
    runner_tags, current = [], []
    for line in written:
        if line:
            current.append(line.split()[2])
        else:
            runner_tags.append(current)
            current = []
    assert [t["tags"] for t in tagged] == runner_tags


BAD_INPUTS = [  # file name, content, bad line, message, line of the one good row
    ("rows.tsv", b"text_a\ttext_b\nfine\tpair\nonly one column\n", 3,
     "expected 2 tab-separated column(s) (text_a, text_b), got 1", 2),
    ("rows.jsonl", b'{"text_a": "a", "text_b": "b"}\n{"text_a": "a"}\n', 2,
     "missing field 'text_b'", 1),
    ("rows.jsonl", b'{"text_a": "a", "text_b": "b"}\n{"text_a": "a", "text_b": \n', 2,
     "not valid JSON", 1),
    ("rows.tsv", b"a\tb\ncaf\xe9\tb\n", 2, "not valid UTF-8", 1),
]


@pytest.mark.parametrize("name,content,line,reason,good_line", BAD_INPUTS)
def test_bad_rows_stop_with_file_and_line_unless_skipped(tmp_path, capsys, name, content,
                                                         line, reason, good_line):
    require_shared_data()
    path = tmp_path / name
    path.write_bytes(content)
    out = tmp_path / "out.jsonl"
    code, captured = _predict(["--model", str(sfx.exported("sts")), "--input", str(path),
                               "--output", str(out)], capsys)
    assert code == 2 and not out.exists() and os.listdir(tmp_path) == [name]
    err = captured.err.strip()
    assert err.startswith(f"error: {path}: line {line}: {reason}") and "\n" not in err
    result, captured = _predict(["--model", str(sfx.exported("sts")), "--input", str(path),
                                 "--output", str(out), "--skip-bad-rows"], capsys)
    assert result.rows == 1 and result.bad_rows == 1
    assert [r["line"] for r in _jsonl(out)] == [good_line]
    assert f"Skipping bad row: {path}: line {line}: {reason}" in captured.out


def test_usage_errors(tmp_path, capsys):
    require_shared_data()
    (tmp_path / "in.txt").write_text("a\n")
    sts = str(sfx.exported("sts"))
    cases = [
        (["--input", str(tmp_path / "in.txt")], "Plain-text input gives one text per line"),
        (["--input", str(tmp_path / "missing.tsv")], "Input file"),
        (["--input", str(tmp_path / "in.txt"), "--task", "sts"], "--task applies to"),
    ]
    for extra, message in cases:
        code, captured = _predict(["--model", sts, "--output", str(tmp_path / "o.jsonl"),
                                   *extra], capsys)
        assert code == 2 and message in captured.err, captured.err
    code, captured = _predict(["--model", sts, "--input", str(tmp_path / "in.txt"),
                               "--output", str(tmp_path / "o.out")], capsys)
    assert code == 2 and "--output-format" in captured.err


def _wait_for_temp(directory, name, proc, timeout=240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(io_utils.is_temp_name_for(f, name) for f in os.listdir(directory)):
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    raise AssertionError("predict.py never started writing")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_interrupted_run_leaves_no_complete_looking_file_and_rerun_works(tmp_path, sig):
    require_shared_data()
    sentences = _cola_dev_lines() * 40  # 4000 rows, batch 1: long enough to interrupt
    (tmp_path / "in.txt").write_text("\n".join(sentences) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    out.write_text('{"previous": "complete run"}\n')
    args = [sys.executable, str(REPO / "predict.py"), "--model", str(sfx.exported("cola")),
            "--input", str(tmp_path / "in.txt"), "--output", str(out)]
    proc = subprocess.Popen(args + ["--batch-size", "1"], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for_temp(tmp_path, out.name, proc)
        proc.send_signal(sig)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    # The earlier complete output is untouched; no partial file under the output name.
    assert out.read_text() == '{"previous": "complete run"}\n'
    temps = [f for f in os.listdir(tmp_path) if io_utils.is_temp_name_for(f, out.name)]
    assert len(temps) == (1 if sig == signal.SIGKILL else 0)  # SIGTERM cleans up
    done = subprocess.run(args + ["--batch-size", "256"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(_jsonl(out)) == len(sentences)
    assert sorted(os.listdir(tmp_path)) == ["in.txt", "out.jsonl"]  # stale temp removed
