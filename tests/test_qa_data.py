"""Tests for finetune/qa/qa_data.py and the QA tasks' file handling: word split, answer
recovery on the real dev files, failure counting and clear errors on bad input."""

import gzip
import json
import os
import shutil
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

import configure_finetuning
from finetune import task_builder
from finetune.qa import qa_data
from util.cli import UserError

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SQUAD_V1 = DATA / "squad" / "dev-v1.1.reconstructed.json"
SQUAD_V2 = DATA / "squad" / "dev-v2.0.reconstructed.json"
MRQA_SQUAD = DATA / "mrqa" / "dev" / "SQuAD.jsonl.gz"
NEWSQA_SAMPLE = DATA / "mrqa" / "samples" / "NewsQA_sample.jsonl"


def _need(path):
    if not path.exists():
        pytest.skip("shared data file %s is absent" % path)
    return str(path)


def _write(path, obj_or_text):
    path.write_text(obj_or_text if isinstance(obj_or_text, str) else json.dumps(obj_or_text),
                    encoding="utf-8")
    return str(path)


def test_split_context_whitespace_and_char_map():
    words, char_to_word = qa_data.split_context(" ab\tc\u202fd\u00a0e\r\nf")
    # U+00A0 is not a separator for the original, U+202F is.
    assert words == ["ab", "c", "d\u00a0e", "f"]
    assert char_to_word == [-1, 0, 0, 0, 1, 1, 2, 2, 2, 2, 2, 3]


def test_training_answers_recovered_for_all_v1_dev_examples():
    result = qa_data.read_squad(_need(SQUAD_V1), "squadv1", True, False)
    assert (len(result.examples), result.failures) == (10570, 0)
    for ex in result.examples[:2000]:
        covered = " ".join(ex.doc_tokens[ex.start_position:ex.end_position + 1])
        assert " ".join(ex.orig_answer_text.split()).lower() in covered.lower()
    assert [e.eid for e in result.examples[:5]] == [0, 1, 2, 3, 4]


def test_v2_dev_impossible_questions():
    result = qa_data.read_squad(_need(SQUAD_V2), "squad", True, True)
    assert (len(result.examples), result.failures) == (11873, 0)
    impossible = [e for e in result.examples if e.is_impossible]
    assert len(impossible) == 5945
    assert all(e.start_position == -1 and e.orig_answer_text == "" for e in impossible)
    evaluation = qa_data.read_squad(_need(SQUAD_V2), "squad", False, True)
    assert evaluation.examples[0].start_position is None
    assert evaluation.examples[0].answers == ("France",) * 4


def test_mrqa_failures_are_counted():
    # 48 MRQA SQuAD answers carry an article ("The mermaid") outside their char span,
    # so their text is not found in the span's words: dropped, as the original does.
    result = qa_data.read_mrqa(_need(MRQA_SQUAD), "newsqa", True)
    assert (len(result.examples), result.failures) == (10507 - 48, 48)
    assert result.examples[0].qid == "b0626b3af0764c80b1e6f22c114982c1"
    # MRQA tasks are keyed by qid even when the line also has a SQuAD id.
    assert result.examples[0].qas_id == "56be4db0acb8001400a502ec"
    assert result.examples[0].example_id == result.examples[0].qid
    sample = qa_data.read_mrqa(_need(NEWSQA_SAMPLE), "newsqa", False)
    assert len(sample.examples) == 17 and sample.examples[0].example_id == sample.examples[0].qid
    debug = qa_data.read_mrqa(_need(MRQA_SQUAD), "newsqa", False, max_lines=3)
    assert len({e.doc_tokens for e in debug.examples}) == 2  # header + 2 paragraphs


def test_unrecoverable_and_out_of_range_answers_are_failures(tmp_path):
    data = {"data": [{"paragraphs": [{"context": "The cat sat.", "qas": [
        {"id": "ok", "question": "q", "answers": [{"text": "cat", "answer_start": 4}]},
        {"id": "moved", "question": "q", "answers": [{"text": "dog", "answer_start": 4}]},
        {"id": "far", "question": "q", "answers": [{"text": "sat.", "answer_start": 40}]},
    ]}]}]}
    result = qa_data.read_squad(_write(tmp_path / "t.json", data), "squadv1", True, False)
    assert [e.qas_id for e in result.examples] == ["ok"] and result.failures == 2
    # Evaluation reading keeps every question.
    assert len(qa_data.read_squad(str(tmp_path / "t.json"), "squadv1", False, False)
               .examples) == 3


@pytest.mark.parametrize("content, message", [
    ('{"data": [', r"t\.json: not valid JSON"),
    ({"version": "1.1"}, r"t\.json: missing key 'data'"),
    ({"data": [{"paragraphs": [{"qas": []}]}]},
     r"data\[0\]\.paragraphs\[0\]: missing key 'context'"),
    ({"data": [{"paragraphs": [{"context": "c", "qas": [{"id": "x"}]}]}]},
     r"paragraphs\[0\]\.qas\[0\]: missing key 'question'"),
    ({"data": [{"paragraphs": [{"context": "c", "qas": [
        {"id": "x", "question": "q", "answers": []}]}]}]},
     r"qas\[0\]: an answerable training question needs at least one entry"),
    ({"data": [{"paragraphs": [{"context": "c", "qas": [
        {"id": "x", "question": "q", "answers": [{"text": "c", "answer_start": "0"}]}]}]}]},
     r"answers\[0\]: key 'answer_start' should be int, got str"),
])
def test_bad_squad_files_raise_one_clear_error(tmp_path, content, message):
    path = _write(tmp_path / "t.json", content)
    with pytest.raises(qa_data.QADataError, match=message) as info:
        qa_data.read_squad(path, "squadv1", True, False)
    # A UserError: run_finetuning prints it as one line and exits 2 (no traceback).
    assert isinstance(info.value, UserError) and "\n" not in str(info.value)


def test_v2_training_needs_is_impossible(tmp_path):
    data = {"data": [{"paragraphs": [{"context": "c", "qas": [
        {"id": "x", "question": "q", "answers": [{"text": "c", "answer_start": 0}]}]}]}]}
    with pytest.raises(qa_data.QADataError, match="missing key 'is_impossible'"):
        qa_data.read_squad(_write(tmp_path / "t.json", data), "squad", True, True)


def test_bad_jsonl_names_the_line(tmp_path):
    good = {"context": "a b", "qas": [{"qid": "1", "question": "q", "answers": ["a"],
                                       "detected_answers": [{"text": "a",
                                                             "char_spans": [[0, 0]]}]}]}
    lines = [json.dumps({"header": {"dataset": "x"}}), json.dumps(good), "{oops"]
    path = _write(tmp_path / "d.jsonl", "\n".join(lines) + "\n")
    with pytest.raises(qa_data.QADataError, match=r"d\.jsonl line 3: not valid JSON"):
        qa_data.read_mrqa(path, "newsqa", True)
    bad = dict(good, qas=[{"qid": "1", "question": "q", "detected_answers": [{"text": "a"}]}])
    path = _write(tmp_path / "e.jsonl", json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(qa_data.QADataError,
                       match=r"e\.jsonl line 2\.qas\[0\]\.detected_answers\[0\]: missing "
                             r"key 'char_spans'"):
        qa_data.read_mrqa(path, "newsqa", True)
    with pytest.raises(qa_data.QADataError, match="file not found"):
        qa_data.read_mrqa(str(tmp_path / "missing.jsonl"), "newsqa", True)


def _config(tmp_path, task, **hparams):
    return configure_finetuning.make_config(
        str(tmp_path), "m", dict(task_names=[task], **hparams))


def test_tasks_read_the_expected_layout(tmp_path):
    root = tmp_path / "finetuning_data"
    (root / "squadv1").mkdir(parents=True)
    (root / "newsqa").mkdir()
    # Symlinks: the shared data is read-only and must not be copied around.
    os.symlink(_need(SQUAD_V1), root / "squadv1" / "dev.json")
    with gzip.open(_need(MRQA_SQUAD), "rb") as src, open(root / "newsqa" / "dev.jsonl",
                                                         "wb") as dst:
        shutil.copyfileobj(src, dst)
    squad = task_builder.get_task(_config(tmp_path, "squadv1"), "squadv1", tokenizer=None)
    assert len(squad.get_examples("dev")) == 10570 and squad.failures["dev"] == 0
    news = task_builder.get_task(_config(tmp_path, "newsqa", debug=True), "newsqa", None)
    assert len(news.get_examples("dev")) == 216  # questions of the 10 paragraphs on lines 2-11
    with pytest.raises(FileNotFoundError, match="'train.jsonl' not found"):
        news.get_examples("train")
    assert task_builder.get_task(_config(tmp_path, "squad"), "squad", None).v2
