"""GLUE tasks on the real files: columns, headers, labels, featurisation, bad rows, heads."""

import abc
import csv
import pickle
import types

import numpy as np
import pytest
import tensorflow as tf

from finetune import feature_spec
from finetune import scorer as scorer_lib
from finetune import task as task_lib
from finetune import task_builder
from finetune.classification import classification_metrics as cm
from finetune.classification import classification_tasks as ct
from finetune.classification import glue_outputs
from model import modeling
from util.cli import UserError
import finetune_fixtures as fx

ALL_TASKS = ["chunk", "cola", "mnli", "mrpc", "qnli", "qqp", "rte", "sst", "sts", "wnli"]


@pytest.fixture
def data_dir(tmp_path):
    return fx.make_data_dir(tmp_path)


def get_task(data_dir, name, **hparams):
    config = fx.make_config(data_dir, [name], **hparams)
    return task_builder.get_task(config, name, fx.tokenizer())


def decode(task, features):
    ids = [i for i, m in zip(features["input_ids"], features["input_mask"]) if m]
    return task.tokenizer.convert_ids_to_tokens(ids)


# ---- registry ------------------------------------------------------------------------

def test_registry_has_every_task():
    assert set(ALL_TASKS) <= set(task_builder.valid_task_names())


def test_unknown_task_name_lists_valid_names(tmp_path):
    config = fx.make_config(tmp_path, ["colaa"])
    # Checked before the tokenizer is built: vocab_file does not exist here.
    with pytest.raises(UserError, match=r"unknown task name\(s\) \['colaa'\]") as info:
        task_builder.get_tasks(config)
    for name in ALL_TASKS:
        assert name in str(info.value)
    with pytest.raises(UserError, match=r"unknown task name\(s\) \['nope'\].*cola, "):
        task_builder.get_task(config, "nope", tokenizer=object())


def test_empty_or_repeated_task_names_are_user_errors(tmp_path):
    # FinetuningConfig itself rejects an empty list; get_tasks also serves other configs.
    with pytest.raises(UserError, match="task_names is empty"):
        task_builder.get_tasks(types.SimpleNamespace(task_names=()), tokenizer=object())
    with pytest.raises(UserError, match=r"\['cola', 'sst', 'cola'\] lists a task more"):
        task_builder.get_tasks(fx.make_config(tmp_path, ["cola", "sst", "cola"]),
                               tokenizer=object())


# Every family answers get_scorer(split) and get_eval_splits() through the base-class
# signature, so the runner needs no per-family special case.
EXPECTED_SCORERS = {"cola": cm.MCCScorer, "mrpc": cm.F1Scorer, "qqp": cm.F1Scorer,
                    "sts": cm.RegressionScorer, "sst": cm.AccuracyScorer,
                    "mnli": cm.AccuracyScorer, "qnli": cm.AccuracyScorer,
                    "rte": cm.AccuracyScorer, "wnli": cm.AccuracyScorer}


def test_every_task_takes_a_split_in_get_scorer_and_has_eval_splits(data_dir):
    for name in task_builder.valid_task_names():
        task = get_task(data_dir, name)
        positional, keyword = task.get_scorer("dev"), task.get_scorer(split="dev")
        assert isinstance(positional, scorer_lib.Scorer), name
        assert type(positional) is type(keyword) is type(task.get_scorer()), name
        if name in EXPECTED_SCORERS:
            assert type(positional) is EXPECTED_SCORERS[name], name
        # The shared-data chunk dir has no test.txt, so every task evaluates dev only.
        assert task.get_eval_splits() == ["dev"], name


def test_abstract_methods_are_enforced():
    class Incomplete(task_lib.Task):
        def get_examples(self, split):
            return []

    with pytest.raises(TypeError, match="abstract"):
        Incomplete(None, "x", None)
    assert isinstance(task_lib.Task, abc.ABCMeta)


def test_register_rejects_duplicates_and_non_tasks():
    with pytest.raises(ValueError, match="registered twice"):
        task_builder.register_task("cola")(ct.SST)
    with pytest.raises(TypeError, match="not a finetune.task.Task"):
        task_builder.register_task("thing")(dict)


def test_missing_data_file_names_file_and_directory(data_dir):
    task = get_task(data_dir, "qnli")  # shared data has no QNLI train.tsv
    with pytest.raises(FileNotFoundError) as info:
        task.get_examples("train")
    assert "'train.tsv'" in str(info.value)
    assert str(data_dir / "finetuning_data" / "qnli") in str(info.value)
    mnli = get_task(data_dir, "mnli")  # MNLI "dev" reads dev_matched.tsv
    with pytest.raises(FileNotFoundError, match="dev_matched.tsv"):
        mnli.get_examples("dev")


# ---- reading the real files --------------------------------------------------------------

# (task, split, count, first text_a, first text_b, first label)
FIRST_EXAMPLES = [
    ("cola", "train", 8551,
     "Our friends won't buy this analysis, let alone the next one we propose.", None, "1"),
    ("cola", "dev", 1043, "The sailors rode the breeze clear of the rocks.", None, "1"),
    ("cola", "test", 1063, "Bill whistled past the house.", None, "0"),
    ("sst", "train", 67349, "hide new secretions from the parental units ", None, "0"),
    ("sst", "test", 1821, "uneasy mishmash of styles and genres .", None, "0"),
    ("mrpc", "dev", 408, "He said the foodservice pie business doesn 't fit the company 's "
     "long-term growth strategy .", '" The foodservice pie business does not fit our '
     "long-term growth strategy .", "1"),
    ("sts", "dev", 1500, "A man with a hard hat is dancing.",
     "A man wearing a hard hat is dancing.", 5.0),
    ("sts", "test", 1379, "A girl is styling her hair.", "A girl is brushing her hair.", 0.0),
    ("qnli", "dev", 5463, "What came into force after the new constitution was herald?",
     "As of that day, the new constitution heralding the Second Republic came into force.",
     "entailment"),
    ("rte", "train", 2490, "No Weapons of Mass Destruction Found in Iraq Yet.",
     "Weapons of Mass Destruction Found in Iraq.", "not_entailment"),
    ("rte", "test", 3000, "Mangla was summoned after Madhumita's sister Nidhi Shukla, who "
     "was the first witness in the case.", "Shukla is related to Mangla.", "entailment"),
    ("wnli", "dev", 71, "The drain is clogged with hair. It has to be cleaned.",
     "The hair has to be cleaned.", "0"),
    ("mnli", "diagnostic", 1104, "The cat sat on the mat.",
     "The cat did not sit on the mat.", "contradiction"),
]


@pytest.mark.parametrize("name,split,count,text_a,text_b,label", FIRST_EXAMPLES)
def test_first_examples_of_real_files(data_dir, name, split, count, text_a, text_b, label):
    task = get_task(data_dir, name)
    examples = task.get_examples(split)
    assert len(examples) == count
    assert task.bad_rows[split] == []
    first = examples[0]
    assert (first.eid, first.text_a, first.text_b, first.label) == (0, text_a, text_b, label)
    assert [e.eid for e in examples] == list(range(count))


@pytest.mark.parametrize("name,split,labels", [
    ("cola", "dev", {"0": 322, "1": 721}), ("rte", "dev", {"entailment": 146,
                                                           "not_entailment": 131}),
    ("wnli", "dev", {"0": 40, "1": 31}), ("qnli", "dev", {"entailment": 2702,
                                                          "not_entailment": 2761})])
def test_label_sets_of_real_files(data_dir, name, split, labels):
    examples = get_task(data_dir, name).get_examples(split)
    values, counts = np.unique([e.label for e in examples], return_counts=True)
    assert dict(zip(values.tolist(), counts.tolist())) == labels


def test_double_unordered_and_sts_scaling(data_dir):
    mrpc = get_task(data_dir, "mrpc")
    train = mrpc.get_examples("train")
    assert len(train) == 2 * 3668
    assert (train[3668].eid, train[3668].text_a, train[3668].text_b) == (
        3668, train[0].text_b, train[0].text_a)
    assert len(get_task(data_dir, "mrpc", double_unordered=False).get_examples("train")) \
        == 3668
    assert len(mrpc.get_examples("dev")) == 408  # only train is doubled
    sts = get_task(data_dir, "sts")
    examples = sts.get_examples("train")
    assert len(examples) == 2 * 5749
    assert examples[0].label == 5.0
    targets = [sts.featurize(e, True)[0]["targets"] for e in examples[:50]]
    assert targets[0] == 1.0 and all(0.0 <= t <= 1.0 for t in targets)
    assert targets == pytest.approx([e.label / 5.0 for e in examples[:50]])


def test_featurize_pair_layout_on_real_example(data_dir):
    task = get_task(data_dir, "rte", max_seq_length=16)
    features, = task.featurize(task.get_examples("dev")[0], False)
    tokens = decode(task, features)
    # 40 + 6 wordpieces truncated from the longer side to 13 = 16 - 3.
    assert tokens == ["[CLS]", "dana", "reeve", ",", "the", "widow", "of", "the", "[SEP]",
                      "christopher", "reeve", "had", "an", "accident", ".", "[SEP]"]
    assert features["segment_ids"] == [0] * 9 + [1] * 7
    assert features["label_ids"] == 1 and features["task_id"] == 0
    single, = get_task(data_dir, "cola", max_seq_length=8).featurize(
        get_task(data_dir, "cola").get_examples("dev")[0], True)
    assert len(single["input_ids"]) == 8 and sum(single["input_mask"]) == 8
    assert single["segment_ids"] == [0] * 8


def test_truncate_seq_pair_pops_from_longer_one_at_a_time():
    a, b = list("abcdefg"), list("xyz")
    ct.truncate_seq_pair(a, b, 6)
    assert (a, b) == (list("abc"), list("xyz"))
    a, b = list("ab"), list("xy")
    ct.truncate_seq_pair(a, b, 3)  # tie: b loses first
    assert (a, b) == (list("ab"), list("x"))


# ---- bad input ---------------------------------------------------------------------------

def test_bad_rows_are_warned_with_line_number_skipped_and_counted(tmp_path, capsys):
    data = fx.make_data_dir(tmp_path, tasks=())
    fx.write_tsv(data / "finetuning_data" / "rte" / "dev.tsv", [
        ["index", "sentence1", "sentence2", "label"],
        ["0", 'He said "hi.', "He spoke.", "entailment"],  # unbalanced quote is fine
        ["1", "too", "few"],
        ["2", "a", "b", "maybe"],
        ["3", "Last one.", "Ok.", "not_entailment"]])
    task = get_task(data, "rte")
    examples = task.get_examples("dev")
    assert [(e.eid, e.text_a, e.label) for e in examples] == [
        (0, 'He said "hi.', "entailment"), (3, "Last one.", "not_entailment")]
    assert [(r.line, r.reason) for r in task.bad_rows["dev"]] == [
        (3, "has 3 columns, expected 4"),
        (4, "label 'maybe' is not one of ['entailment', 'not_entailment']")]
    out = capsys.readouterr().out
    assert f"{data}/finetuning_data/rte/dev.tsv:3: skipping row" in out
    assert "2 bad rows skipped" in out


def test_unreadable_tsv_is_one_user_error_naming_file_and_line(tmp_path):
    data = fx.make_data_dir(tmp_path, tasks=())
    path = data / "finetuning_data" / "rte" / "dev.tsv"
    fx.write_tsv(path, [["index", "sentence1", "sentence2", "label"]]
                 + [[str(i), "a", "b", "entailment"] for i in range(3000)])
    with open(path, "ab") as f:  # line 3002, past the first 8 KB decoding block
        f.write(b"3000\tcaf\xe9\tb\tentailment\n")
    task = get_task(data, "rte")
    with pytest.raises(task_lib.DataError,
                       match=rf"{path}: line 3002 is not valid UTF-8 \(invalid continuation"):
        task.get_examples("dev")
    assert issubclass(task_lib.DataError, UserError)
    fx.write_tsv(path, [["index", "sentence1", "sentence2", "label"],
                        ["0", "a" * 50, "b", "entailment"]])
    previous_limit = csv.field_size_limit(10)  # a field of 50 characters is now too long
    try:
        with pytest.raises(task_lib.DataError, match=rf"{path}: line 2 cannot be read as "
                           r"tab-separated text \(field larger than field limit"):
            task.get_examples("dev")
    finally:
        csv.field_size_limit(previous_limit)


def test_qqp_layout_and_sts_bad_score(tmp_path):
    data = fx.make_data_dir(tmp_path, tasks=())
    header = ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"]
    fx.write_tsv(data / "finetuning_data" / "qqp" / "train.tsv",
                 [header, ["7", "1", "2", "How?", "Why?", "1"]])
    fx.write_tsv(data / "finetuning_data" / "qqp" / "test.tsv",
                 [["id", "question1", "question2"], ["0", "Who?", "Whom?"]])
    qqp = get_task(data, "qqp")
    assert [(e.text_a, e.text_b, e.label) for e in qqp.get_examples("train")] == [
        ("How?", "Why?", "1")]
    assert [(e.text_a, e.text_b, e.label) for e in qqp.get_examples("test")] == [
        ("Who?", "Whom?", "0")]
    fx.write_tsv(data / "finetuning_data" / "sts" / "dev.tsv",
                 [["i", "s1", "s2", "score"], ["0", "a", "b", "5.5"], ["1", "a", "b", "x"]])
    sts = get_task(data, "sts")
    assert sts.get_examples("dev") == []
    assert [r.reason for r in sts.bad_rows["dev"]] == [
        "label 5.5 is outside [0.0, 5.0]", "label 'x' is not a number"]


# ---- heads -------------------------------------------------------------------------------

def tiny_encoder_output(batch=4, seq=7, hidden=32):
    config = modeling.BertConfig(vocab_size=99, hidden_size=hidden, num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=37)
    model = modeling.BertModel(config)
    ids = tf.random.stateless_uniform([batch, seq], [1, 2], 0, 99, tf.int32)
    return model(ids, tf.ones_like(ids), tf.zeros_like(ids))


def test_classification_head_names_shapes_and_loss(data_dir):
    task = get_task(data_dir, "mnli")
    head = task.get_prediction_module(32)
    names = {v.name: v.shape.as_list() for v in head.variables}
    assert names == {"task_specific/mnli/dense/kernel:0": [32, 3],
                     "task_specific/mnli/dense/bias:0": [3]}
    enc = tiny_encoder_output()
    features = {"label_ids": tf.constant([0, 1, 2, 1]), "eid": tf.range(4)}
    losses, out = head(enc, features, is_training=False)
    assert losses.shape == [4] and out["logits"].shape == [4, 3]
    logits = out["logits"].numpy()
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = -log_probs[np.arange(4), [0, 1, 2, 1]]
    np.testing.assert_allclose(losses.numpy(), expected, rtol=1e-5)
    np.testing.assert_array_equal(out["predictions"].numpy(), logits.argmax(-1))
    again, _ = head(enc, features, is_training=False)
    np.testing.assert_array_equal(again.numpy(), losses.numpy())  # no dropout in eval
    trained, _ = head(enc, features, is_training=True)
    assert not np.allclose(trained.numpy(), losses.numpy())  # dropout in training
    half, _ = head(enc, features, compute_dtype=tf.bfloat16)
    assert half.dtype == tf.float32
    np.testing.assert_allclose(half.numpy(), losses.numpy(), atol=0.05)


def test_regression_head_squared_error(data_dir):
    head = get_task(data_dir, "sts").get_prediction_module(32)
    assert {v.name for v in head.variables} == {"task_specific/sts/dense/kernel:0",
                                                "task_specific/sts/dense/bias:0"}
    enc = tiny_encoder_output(batch=1)  # batch 1 must keep its batch dimension
    losses, out = head(enc, {"targets": tf.constant([0.25]), "eid": tf.constant([3])})
    assert losses.shape == [1] and out["predictions"].shape == [1]
    np.testing.assert_allclose(losses.numpy(), (out["predictions"].numpy() - 0.25) ** 2,
                               rtol=1e-6)


def test_head_reads_task_features_from_nested_batch():
    batch = {"input_ids": 1, "input_mask": 2, "segment_ids": 3, "task_id": 4,
             "cola": {"eid": 5, "label_ids": 6}, "sts": {"eid": 7, "targets": 8}}
    assert feature_spec.features_for_task(batch, "sts") == {
        "input_ids": 1, "input_mask": 2, "segment_ids": 3, "task_id": 4, "eid": 7,
        "targets": 8}


# ---- test-set outputs --------------------------------------------------------------------

def test_glue_submission_and_pickles(data_dir, tmp_path):
    mnli, sts = get_task(data_dir, "mnli"), get_task(data_dir, "sts")
    outs = glue_outputs.collect_test_outputs(mnli, [
        {"eid": 1, "logits": np.array([0.0, 2.0, 1.0])},
        {"eid": 0, "logits": np.array([0.0, 1.0, 3.0])}])
    path = glue_outputs.write_glue_submission(mnli, "test_mismatched", outs, tmp_path)
    assert path.endswith("/MNLI-mm.tsv")
    assert open(path).read() == "index\tprediction\n0\tneutral\n1\tentailment\n"
    pkl = glue_outputs.write_test_pickle(outs, str(tmp_path / "p.pkl"))
    loaded = pickle.load(open(pkl, "rb"))
    np.testing.assert_array_equal(loaded[1], [0.0, 2.0, 1.0])
    sts_outs = glue_outputs.collect_test_outputs(sts, [{"eid": 0, "predictions": 0.5},
                                                       {"eid": 1, "predictions": 1.2}])
    path = glue_outputs.write_glue_submission(sts, "test", sts_outs, tmp_path)
    assert open(path).read() == "index\tprediction\n0\t2.500\n1\t5.000\n"  # clipped
    for (name, split), file_name in [(("cola", "test"), "CoLA.tsv"),
                                     (("mnli", "diagnostic"), "AX.tsv")]:
        assert glue_outputs.GLUE_SUBMISSION_FILES[(name, split)] == file_name
    with pytest.raises(ValueError, match="No GLUE submission file"):
        glue_outputs.write_glue_submission(mnli, "dev", outs, tmp_path)


def test_debug_reads_first_100_lines(data_dir):
    assert len(get_task(data_dir, "cola", debug=True).get_examples("train")) == 100
    assert len(get_task(data_dir, "rte", debug=True).get_examples("dev")) == 99  # header
    assert len(get_task(data_dir, "mrpc", debug=True).get_examples("train")) == 2 * 99
