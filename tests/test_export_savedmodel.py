"""Tests of export_savedmodel.py: in-graph tokenizer, featurisation and predictions.

SavedModels exported from tiny models fine-tuned by run_finetuning.py
(tests/serving_fixtures.py: CoLA, STS-B and chunking at max_seq_length 32, SQuAD 1.1 and
2.0 at 256) are loaded in a fresh `python -I` process (no repository on sys.path, cwd
outside it, only tensorflow + tensorflow_text imported) and run on the real dev (and
test) rows. Their packed inputs must equal the Python featurizers' and their predictions
the files run_finetuning.py wrote; QA only on questions whose context fits one window.
"""

import dataclasses
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import tensorflow as tf

import export_savedmodel
import serving_fixtures as sfx
from finetune import savedmodel_export
from finetune import serving_features
from finetune import task_builder
from finetune.classification.classification_tasks import truncate_seq_pair
from finetune_fixtures import SHARED_DATA, require_shared_data
from model import graph_tokenization
from model import tokenization
from util import cli

VOCAB = SHARED_DATA / "vocab" / "vocab.txt"
TASKS = ("cola", "sts", "chunk", "squadv1", "squad")

# Run by `python -I`: loads each SavedModel and runs both signatures on its inputs.
CLEAN_SCRIPT = r'''
import json, sys
import tensorflow as tf
import tensorflow_text  # registers the tokenizer ops
assert not {"finetune", "model", "util"} & {m.split(".")[0] for m in sys.modules}

def plain(value):
    value = value.tolist() if hasattr(value, "tolist") else value
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return [plain(v) for v in value] if isinstance(value, list) else value

out = {}
for name, job in json.load(open(sys.argv[1])).items():
    model = tf.saved_model.load(job["dir"])
    inputs = {k: tf.constant(v, tf.string) for k, v in job["inputs"].items()}
    out[name] = {sig: {k: plain(v.numpy()) for k, v in model.signatures[sig](**inputs).items()}
                 for sig in ("serving_default", "featurize")}
    out[name]["attrs"] = {k: plain(getattr(model, k).numpy()) for k in (
        "task_name", "task_type", "label_names", "max_seq_length", "do_lower_case")}
    out[name]["asset"] = plain(model.metadata_file.asset_path.numpy())
json.dump(out, open(sys.argv[2], "w"))
'''


def task_of(task_name, split_examples=("dev",)):
    """(task object, {split: examples}) as the fine-tuned model's config builds them."""
    model_dir = sfx.fine_tuned(sfx.RUN_OF_TASK[task_name])
    config = dataclasses.replace(savedmodel_export.load_config(str(model_dir)),
                                 task_names=(task_name,))
    task = task_builder.get_task(config, task_name, tokenization.FullTokenizer(
        config.vocab_file, config.do_lower_case))
    return task, {split: task.get_examples(split) for split in split_examples}


def squad_rows(task):
    """[(question id, question, raw context)] of the dev file, in example order."""
    data = json.loads(Path(task.gold_file("dev")).read_text(encoding="utf-8"))["data"]
    return [(qa["id"], qa["question"], p["context"])
            for article in data for p in article["paragraphs"] for qa in p["qas"]]


def _inputs(task_name, task, examples):
    if task_name == "cola":
        return {"text": [e.text_a for e in examples]}
    if task_name == "sts":
        return {"text_a": [e.text_a for e in examples], "text_b": [e.text_b for e in examples]}
    if task_name == "chunk":
        return {"text": [" ".join(e.words) for e in examples]}
    rows = squad_rows(task)
    return {"question": [q for _, q, _ in rows], "context": [c for _, _, c in rows]}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """{job: outputs} of the clean process, plus the tasks and examples used."""
    require_shared_data()
    jobs, tasks = {}, {}
    for name in TASKS:
        splits = ("dev", "test") if name in ("cola", "sts", "chunk") else ("dev",)
        task, examples = task_of(name, splits)
        tasks[name] = (task, examples)
        for split in splits:
            jobs[f"{name}_{split}"] = {"dir": str(sfx.exported(name)),
                                       "inputs": _inputs(name, task, examples[split])}
    work = tmp_path_factory.mktemp("clean_process")
    (work / "run.py").write_text(CLEAN_SCRIPT)
    (work / "request.json").write_text(json.dumps(jobs))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    proc = subprocess.run([sys.executable, "-I", "run.py", "request.json", "out.json"],
                          cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((work / "out.json").read_text()), tasks


# ---- tokenizer -----------------------------------------------------------------------

def _code_point_lines(code_points):
    """Each code point inside words, next to cased Greek/Turkish letters, a combining
    mark and punctuation (as tests/test_tokenization.py)."""
    return [f"a{chr(c)}B {chr(c)}\u039f\u03a3{chr(c)}. \u0130{chr(c)}x{chr(c)}\u0301 "
            for c in code_points]


def _graph_ids(tokenizer, lines):
    fn = tf.function(tokenizer.tokenize, input_signature=[tf.TensorSpec([None], tf.string)])
    ids = []
    for start in range(0, len(lines), 8192):
        ids += fn(tf.constant(lines[start:start + 8192])).to_list()
    return ids


@pytest.mark.parametrize("lower,strip", [(True, True), (False, True), (True, False)])
def test_graph_tokenizer_equals_full_tokenizer_on_every_code_point(lower, strip):
    require_shared_data()
    extra = [*range(0x1F000, 0x1FB00), *range(0x20000, 0x2FA20, 97),
             *range(0xE0000, 0xE0080), *range(0xF0000, 0xF0100), *range(0x10FFF0, 0x110000)]
    code_points = [c for c in [*range(0x10000), *extra] if not 0xD800 <= c < 0xE000]
    lines = _code_point_lines(code_points)
    full = tokenization.FullTokenizer(VOCAB, lower, strip)
    graph = graph_tokenization.GraphTokenizer(tokenization.load_vocab(VOCAB), lower, strip)
    got = _graph_ids(graph, lines)
    bad = [hex(c) for c, ids, line in zip(code_points, got, lines)
           if ids != full.text_to_ids(line)]
    assert not bad, f"{len(bad)} code points differ, e.g. {bad[:10]}"


def _non_ascii_lines():
    """Every non-ASCII line of the GLUE, chunking and SQuAD files, plus Latin-1 text."""
    lines = ["Crème brûlée, naïve café; Zoë's façade — ½ °C, ±5 §3 ©® ¿Qué? ¡Olé!",
             "ÆØÅ æøå Straße ÐÞ ðþ ÿ µ ª º « » ¬ ¯ ´ ¸ ¹²³ ¼ ¾ × ÷ ¦ ¤ ¥ £ ¢ ¡ ¿",
             "São Paulo, Zürich, Kraków, Ångström, El Niño, Māori, Ελλάδα, İstanbul"]
    for path in sorted((SHARED_DATA / "glue").glob("*/*.tsv")) + [
            SHARED_DATA / "chunk" / "train.txt"]:
        lines += [line for line in path.read_text(encoding="utf-8").splitlines()
                  if not line.isascii()]
    data = json.loads((SHARED_DATA / "squad" / "dev-v1.1.reconstructed.json").read_text(
        encoding="utf-8"))["data"]
    for article in data:
        for p in article["paragraphs"]:
            lines += [text for text in [p["context"]] + [qa["question"] for qa in p["qas"]]
                      if not text.isascii()]
    return lines


@pytest.mark.parametrize("lower", [True, False])
def test_graph_tokenizer_equals_full_tokenizer_on_real_non_ascii_text(lower):
    require_shared_data()
    lines = _non_ascii_lines()
    assert len(lines) > 3000
    full = tokenization.FullTokenizer(VOCAB, lower)
    graph = graph_tokenization.GraphTokenizer(tokenization.load_vocab(VOCAB), lower)
    assert _graph_ids(graph, lines) == [full.text_to_ids(line) for line in lines]
    raw = [b"caf\xc3\xa9 \xff\xfeok \xc3", b"\xed\xa0\x80x", b"a\x00b\x01c\x7f\x0bd", b""]
    fn = tf.function(graph.tokenize)
    assert fn(tf.constant(raw)).to_list() == [full.text_to_ids(r) for r in raw]


def test_pair_lengths_equal_truncate_seq_pair():
    cases = [(a, b, budget) for a in range(16) for b in range(16) for budget in range(1, 34)]
    len_a, len_b, budgets = (tf.constant([c[i] for c in cases]) for i in range(3))
    new_a, new_b = serving_features.pair_lengths(len_a, len_b, budgets)
    expected = []
    for a, b, budget in cases:
        tokens_a, tokens_b = list(range(a)), list(range(b))
        truncate_seq_pair(tokens_a, tokens_b, budget)
        expected.append((len(tokens_a), len(tokens_b)))
    assert list(zip(new_a.numpy().tolist(), new_b.numpy().tolist())) == expected


# ---- exported models in a clean process ----------------------------------------------

@pytest.mark.parametrize("task_name", TASKS)
def test_in_graph_features_equal_the_python_featurizers(served, task_name):
    outputs, tasks = served
    task, examples = tasks[task_name]
    for split, split_examples in examples.items():
        got = outputs[f"{task_name}_{split}"]["featurize"]
        for i, example in enumerate(split_examples):
            want = task.featurize(example, is_training=False)[0]  # QA: the first window
            keys = ["input_ids", "input_mask", "segment_ids"] + (
                ["labeled_positions"] if task_name == "chunk" else [])
            assert {k: got[k][i] for k in keys} == {k: want[k] for k in keys}, (split, i)


def _tsv_predictions(path):
    rows = [line.split("\t") for line in path.read_text().splitlines()[1:]]
    return {int(eid): pred for eid, pred, _ in rows}


def test_classification_and_regression_match_run_finetuning_outputs(served):
    outputs, tasks = served
    results, tests = sfx.predictions_dir("glue"), sfx.model_root() / "test_predictions"
    cola = outputs["cola_dev"]["serving_default"]
    assert _tsv_predictions(results / "cola_dev_1.txt") == dict(enumerate(cola["label"]))
    with open(tests / "cola_test_1_predictions.pkl", "rb") as f:
        runner_logits = pickle.load(f)  # {eid: logits} of the test rows
    logits = np.array(outputs["cola_test"]["serving_default"]["logits"])
    np.testing.assert_allclose(logits, np.stack([runner_logits[i] for i in range(40)]),
                               atol=1e-5)
    assert outputs["cola_test"]["serving_default"]["label_id"] == \
        np.argmax(logits, axis=1).tolist()
    sts = outputs["sts_dev"]["serving_default"]
    written = _tsv_predictions(results / "sts_dev_1.txt")  # 6 decimals
    np.testing.assert_allclose([float(written[i]) for i in range(len(written))],
                               sts["prediction"], atol=1e-6)
    np.testing.assert_allclose(sts["score"], np.clip(np.array(sts["prediction"]) * 5, 0, 5),
                               atol=1e-6)
    with open(tests / "sts_test_1_predictions.pkl", "rb") as f:
        runner_sts = pickle.load(f)
    np.testing.assert_allclose(outputs["sts_test"]["serving_default"]["prediction"],
                               [runner_sts[i] for i in range(40)], atol=1e-5)


def _conll_predictions(path):
    """[[predicted tag per tagged word]] per sentence (a sentence may have none)."""
    sentences, current = [], []
    for line in path.read_text().split("\n")[:-1]:
        if line:
            current.append(line.split()[2])
        else:
            sentences.append(current)
            current = []
    return sentences


@pytest.mark.parametrize("split", ["dev", "test"])
def test_tagging_matches_run_finetuning_outputs(served, split):
    outputs, tasks = served
    got = outputs[f"chunk_{split}"]["serving_default"]
    written = _conll_predictions(sfx.predictions_dir("glue") / f"chunk_{split}_1.txt")
    examples = tasks["chunk"][1][split]
    assert len(written) == len(examples)
    for i, (tags, example) in enumerate(zip(written, examples)):
        n = got["num_tagged_words"][i]
        assert got["tags"][i][:n] == tags and got["words"][i][:len(example.words)] == \
            example.words, i
        assert set(got["tags"][i][n:]) <= {""} and got["num_words"][i] == len(example.words)
    # The truncation quirk is exercised: many sentences are only partly tagged.
    assert sum(n < w for n, w in zip(got["num_tagged_words"], got["num_words"])) > 10


@pytest.mark.parametrize("task_name", ["squadv1", "squad"])
def test_qa_matches_run_finetuning_on_one_window_questions(served, task_name):
    outputs, tasks = served
    got = outputs[f"{task_name}_dev"]["serving_default"]
    runner = sfx.qa_results("qa", task_name)
    ids = [qid for qid, _, _ in squad_rows(tasks[task_name][0])]
    single = [i for i, cut in enumerate(got["context_truncated"]) if not cut]
    assert len(single) >= (40 if task_name == "squadv1" else 15)
    assert [got["answer"][i] for i in single] == [runner["preds"][ids[i]] for i in single]
    assert len({got["answer"][i] for i in single}) > 5  # not one constant answer
    if task_name == "squad":
        np.testing.assert_allclose([got["no_answer_score"][i] for i in single],
                                   [runner["null_odds"][ids[i]] for i in single], atol=1e-5)
        for answer, score, final in zip(got["answer"], got["no_answer_score"],
                                        got["thresholded_answer"]):
            assert final == ("" if score > -2.75 else answer)  # qa_na_threshold


def test_metadata_attributes_and_assets(served):
    outputs, _ = served
    expected = {"cola": ("classification", ["0", "1"], 32), "sts": ("regression", [], 32),
                "squad": ("qa", [], 256)}
    for name, (kind, labels, length) in expected.items():
        attrs = outputs[f"{name}_dev"]["attrs"]
        assert attrs == {"task_name": name, "task_type": kind, "label_names": labels,
                         "max_seq_length": length, "do_lower_case": True}
    for job in outputs.values():  # the declared outputs are the signature's
        declared = json.loads(Path(job["asset"]).read_text())["outputs"]
        assert sorted(job["serving_default"]) == declared
    chunk = outputs["chunk_dev"]["attrs"]["label_names"]
    assert "B-NP" in chunk and "O" in chunk and len(chunk) > 10
    meta = json.loads(Path(outputs["squad_dev"]["asset"]).read_text())
    assert meta["inputs"] == ["question", "context"] and meta["squad_v2"] is True
    assert meta["outputs"] == ["answer", "context_truncated", "no_answer_score", "score",
                               "thresholded_answer"]
    assert meta["max_query_length"] == 64 and meta["qa_na_threshold"] == -2.75
    assets = sfx.exported("cola") / "assets"
    assert (assets / "vocab.txt").read_bytes() == VOCAB.read_bytes()
    assert json.loads((assets / "electra_task.json").read_text())["label_names"] == ["0", "1"]


def test_saved_graph_has_only_portable_ops():
    """Exported with TensorFlow's plain LayerNorm ops whatever the exporting machine
    used (model/layer_norm.py), so TensorFlow Serving and GPUs can run it."""
    from tensorflow.core.protobuf import saved_model_pb2  # pylint: disable=import-outside-toplevel
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((sfx.exported("cola") / "saved_model.pb").read_bytes())
    graph = proto.meta_graphs[0].graph_def
    op_types = {node.op for node in graph.node} | {
        node.op for function in graph.library.function for node in function.node_def}
    assert "SquaredDifference" in op_types  # the LayerNorms are in there, as plain ops
    assert not {op for op in op_types if op.startswith("_")}, op_types


def _run_tool(args, cwd):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_saved_model_cli_show_and_run(tmp_path):
    require_shared_data()
    sts, squad = sfx.exported("sts"), sfx.exported("squad")
    shown = _run_tool(["saved_model_cli", "show", "--dir", str(sts), "--all"], tmp_path)
    for text in ("signature_def['serving_default']", "signature_def['featurize']",
                 "inputs['text_a']", "inputs['text_b']", "outputs['score']"):
        assert text in shown
    # saved_model_cli's own process lacks the tensorflow_text ops: import them first.
    run = _run_tool([sys.executable, "-I", "-c", "import tensorflow_text; from tensorflow."
                     "python.tools.saved_model_cli import main; main()", "run", "--dir",
                     str(squad), "--tag_set", "serve", "--signature_def", "serving_default",
                     "--input_exprs", 'question=["Who wrote it?"];context=["It was written '
                     'by Jane Austen in 1813."]'], tmp_path)
    assert "Result for output key answer:" in run and "no_answer_score" in run


def _export(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.run_main(lambda: export_savedmodel.main(argv))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    return err


def test_export_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    require_shared_data()
    glue = str(sfx.fine_tuned("glue"))
    out = str(tmp_path / "out")
    (tmp_path / "empty").mkdir()
    assert "not a fine-tuned model dir" in _export(
        ["--model-dir", str(tmp_path / "empty"), "--output-dir", out], capsys)
    assert "several tasks ['cola', 'sts', 'chunk']; choose one with --task" in _export(
        ["--model-dir", glue, "--output-dir", out], capsys)
    assert "--task 'mnli' is not one of" in _export(
        ["--model-dir", glue, "--output-dir", out, "--task", "mnli"], capsys)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    assert "is not empty" in _export(
        ["--model-dir", glue, "--output-dir", out, "--task", "cola"], capsys)
    assert "overlaps the model dir" in _export(
        ["--model-dir", glue, "--output-dir", os.path.join(glue, "sm"), "--task", "cola",
         "--overwrite"], capsys)
    assert (tmp_path / "out" / "keep.txt").exists()


def test_overwrite_replaces_the_whole_dir_atomically(tmp_path):
    require_shared_data()
    out = tmp_path / "cola"
    out.mkdir()
    (out / "stale.txt").write_text("old export")
    result = export_savedmodel.main(["--model-dir", str(sfx.fine_tuned("glue")),
                                     "--output-dir", str(out), "--task", "cola",
                                     "--overwrite"])
    assert result.outputs == ("label", "label_id", "logits", "probabilities")
    assert sorted(p.name for p in out.iterdir()) == [
        "assets", "fingerprint.pb", "saved_model.pb", "variables"]
    assert os.listdir(tmp_path) == ["cola"]  # no temporary dir left beside it


def test_atomic_dir_keeps_the_old_dir_when_writing_fails(tmp_path):
    from util import io_utils  # pylint: disable=import-outside-toplevel
    target = tmp_path / "export"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with io_utils.atomic_dir(target) as temp:
            Path(temp, "new.txt").write_text("half")
            raise RuntimeError("interrupted")
    assert os.listdir(tmp_path) == ["export"] and os.listdir(target) == ["old.txt"]
    with io_utils.atomic_dir(target) as temp:
        Path(temp, "new.txt").write_text("new")
    assert os.listdir(tmp_path) == ["export"] and os.listdir(target) == ["new.txt"]
