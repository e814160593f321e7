"""Chunking: conlleval span rules, BIOES, label mapping, featurisation, head, scorer."""

import pickle

import numpy as np
import pytest
import tensorflow as tf

from finetune import task as task_lib
from finetune import task_builder
from finetune.tagging import tagging_metrics as tm
from finetune.tagging import tagging_utils as tu
from util.cli import UserError
import finetune_fixtures as fx


# ---- conlleval semantics on hand cases -----------------------------------------------

@pytest.mark.parametrize("tags,spans", [
    (["B-NP", "I-NP", "O", "B-VP"], [(0, 1, "NP"), (3, 3, "VP")]),  # BIO
    (["O", "I-NP", "I-NP", "O"], [(1, 2, "NP")]),  # I- after O starts a chunk
    (["B-NP", "I-VP", "I-VP"], [(0, 0, "NP"), (1, 2, "VP")]),  # type change splits
    (["B-NP", "B-NP", "I-NP"], [(0, 0, "NP"), (1, 2, "NP")]),  # B- always starts
    (["S-NP", "B-VP", "I-VP", "E-VP", "B-NP", "E-NP"],
     [(0, 0, "NP"), (1, 3, "VP"), (4, 5, "NP")]),  # BIOES
    (["B-NP", "E-NP", "I-NP"], [(0, 1, "NP"), (2, 2, "NP")]),  # chunk ends after E-
    (["S-NP", "I-NP"], [(0, 0, "NP"), (1, 1, "NP")]),  # and after S-
    (["I-NP", "E-NP", "E-NP"], [(0, 1, "NP"), (2, 2, "NP")]),
    (["O", "O"], []),
    (["B-ADJP", "I-ADJP"], [(0, 1, "ADJP")]),
])
def test_span_labels_follow_conlleval(tags, spans):
    assert tu.get_span_labels(tags) == spans


def test_bioes_conversion():
    assert tu.to_bioes(["B-NP", "I-NP", "I-NP", "B-PP", "O", "B-NP", "I-VP"]) == [
        "B-NP", "I-NP", "E-NP", "S-PP", "O", "S-NP", "S-VP"]
    assert tu.get_tags([(0, 2, "NP")], 4, "BIO") == ["B-NP", "I-NP", "I-NP", "O"]
    with pytest.raises(ValueError, match="Malformed chunk tag 'NP'"):
        tu.split_tag("NP")


def test_span_prf_hand_computed():
    gold = [["B-NP", "E-NP", "O", "S-VP"], ["S-NP"]]
    pred = [["B-NP", "E-NP", "O", "S-NP"], ["S-NP", ]]
    # gold chunks 3, predicted 3, correct 2 (the VP/NP type mismatch is wrong).
    p, r, f1 = tm.span_prf(gold, pred)
    assert (p, r, f1) == pytest.approx((200 / 3, 200 / 3, 200 / 3))
    assert tm.span_prf([["S-NP"]], [["O"]]) == (0.0, 0.0, 0.0)
    p, r, _ = tm.span_prf([["B-NP", "I-NP"]], [["B-NP", "I-NP", ]])
    assert (p, r) == (100.0, 100.0)


# ---- the real CoNLL-2000 files --------------------------------------------------------

@pytest.fixture
def chunk(tmp_path):
    data = fx.make_data_dir(tmp_path, tasks=["chunk"])
    config = fx.make_config(data, ["chunk"])
    return task_builder.get_task(config, "chunk", fx.tokenizer())


def test_label_mapping_sorted_and_pickled(chunk):
    mapping = chunk.get_label_mapping()
    # 22 BIO tags in train+test -> the BIOES tags that occur: 42 of them.
    assert len(mapping) == 42
    assert list(mapping) == sorted(mapping) and list(mapping.values()) == list(range(42))
    assert mapping["B-ADJP"] == 0 and mapping["O"] == 31 and mapping["S-VP"] == 41
    with open(chunk.label_mapping_path, "rb") as f:
        assert pickle.load(f) == mapping
    assert chunk.label_mapping_path.endswith("finetuning_tfrecords/chunk_tfrecords/"
                                             "chunk_label_mapping.pkl")


def test_real_sentences_and_first_wordpiece_labels(chunk):
    train = chunk.get_examples("train")
    dev = chunk.get_examples("dev")
    assert (len(train), len(dev)) == (8936, 2012)
    assert sum(len(e.words) for e in train) == 211727
    assert sum(len(e.words) for e in dev) == 47377
    first = train[0]
    inv = {i: t for t, i in chunk.get_label_mapping().items()}
    assert first.words[:4] == ["Confidence", "in", "the", "pound"]
    assert [inv[i] for i in first.labels[:6]] == ["S-NP", "S-PP", "B-NP", "E-NP",
                                                  "B-VP", "I-VP"]
    features, = chunk.featurize(first, True)
    n = int(sum(features["labels_mask"]))
    assert n == len(first.words) == 37
    tokens = chunk.tokenizer.convert_ids_to_tokens(features["input_ids"])
    labelled = [tokens[p] for p in features["labeled_positions"][:n]]
    assert labelled[:5] == ["confidence", "in", "the", "pound", "is"]
    assert tokens[0] == "[CLS]" and tokens[sum(features["input_mask"]) - 1] == "[SEP]"
    # [quirk kept] every real token, [CLS]/[SEP] included, has segment id 1.
    assert features["segment_ids"] == features["input_mask"]
    assert features["labels"][:n] == first.labels


def test_truncation_keeps_the_quirk_and_never_overflows(tmp_path):
    data = fx.make_data_dir(tmp_path, tasks=())
    (data / "finetuning_data" / "chunk").mkdir(parents=True)
    long_word = "x" * 30 + "qz" * 10  # many wordpieces
    (data / "finetuning_data" / "chunk" / "train.txt").write_text(
        "a DT B-NP\nbook NN I-NP\n\n" f"the DT B-NP\n{long_word} NN I-NP\n.\t. O\n",
        encoding="utf-8")
    config = fx.make_config(data, ["chunk"], max_seq_length=16)
    task = task_builder.get_task(config, "chunk", fx.tokenizer())
    short, long_ = task.get_examples("train")  # last sentence has no blank line after it
    features, = task.featurize(short, False)
    assert sum(features["input_mask"]) == 4 and sum(features["labels_mask"]) == 2
    assert len(task.word_pieces([long_word])[0]) > 16
    features, = task.featurize(long_, False)
    for values in features.values():
        assert np.size(values) in (1, 16)
    tokens = task.tokenizer.convert_ids_to_tokens(
        [i for i, m in zip(features["input_ids"], features["input_mask"]) if m])
    assert tokens == ["[CLS]", "the", "[SEP]"]  # the long word would overflow: stop
    assert sum(features["labels_mask"]) == 1
    # The original's check: (#words + 2) + tokens so far + 1 > max_len stops early.
    words = ["w"] * 10
    example = task.get_examples("train")[0]
    example.words, example.labels = words, [0] * 10
    features, = task.featurize(example, False)
    assert sum(features["input_mask"]) == 5  # [CLS] + 3 words + [SEP], not 12


def test_bad_line_skips_its_sentence_with_line_number(tmp_path, capsys):
    data = fx.make_data_dir(tmp_path, tasks=())
    (data / "finetuning_data" / "chunk").mkdir(parents=True)
    (data / "finetuning_data" / "chunk" / "dev.txt").write_text(
        "-DOCSTART- -X- O\n\nThe DT B-NP\ncat\n\nIt PRP B-NP\n\nGo VB X-VP\n",
        encoding="utf-8")
    config = fx.make_config(data, ["chunk"])
    task = task_builder.get_task(config, "chunk", fx.tokenizer())
    sentences = task.read_sentences("dev")
    assert sentences == [(["It"], ["S-NP"])]
    assert [line for _, line, _ in task.bad_sentences["dev"]] == [4, 8]
    assert "dev.txt:4: skipping sentence" in capsys.readouterr().out


def _small_chunk_task(tmp_path, files):
    """A chunk task over hand-written CoNLL files {name: text or bytes}."""
    data = fx.make_data_dir(tmp_path, tasks=())
    task_dir = data / "finetuning_data" / "chunk"
    task_dir.mkdir(parents=True)
    for name, content in files.items():
        target = task_dir / name
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content, encoding="utf-8")
    return task_builder.get_task(fx.make_config(data, ["chunk"]), "chunk", fx.tokenizer())


def test_eval_splits_add_test_only_when_test_txt_exists(tmp_path):
    dev_only = _small_chunk_task(tmp_path / "a", {"dev.txt": "The DT B-NP\n"})
    assert dev_only.get_eval_splits() == ["dev"]
    with_test = _small_chunk_task(tmp_path / "b", {"dev.txt": "The DT B-NP\n",
                                                   "test.txt": "A DT B-NP\n"})
    assert with_test.get_eval_splits() == ["dev", "test"]


def test_tags_missing_from_a_saved_label_mapping_are_a_user_error(tmp_path):
    task = _small_chunk_task(tmp_path, {"train.txt": "The DT B-NP\ncat NN I-NP\n"})
    assert sorted(task.get_label_mapping()) == ["B-NP", "E-NP"]  # pickled now
    (tmp_path / "finetuning_data" / "chunk" / "dev.txt").write_text(
        "runs VBZ B-VP\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"tags \['S-VP'\] in dev are not in the label "
                       r"mapping .*chunk_label_mapping\.pkl; delete that file"):
        task.get_examples("dev")


def test_non_utf8_line_is_a_user_error_naming_it(tmp_path):
    task = _small_chunk_task(tmp_path, {"dev.txt": b"The DT B-NP\n\ncaf\xe9 NN B-NP\n"})
    with pytest.raises(task_lib.DataError, match=r"dev\.txt: line 3 is not valid UTF-8"):
        task.read_sentences("dev")


# ---- head and scorer ------------------------------------------------------------------

def test_head_gathers_first_wordpieces_and_sums_masked_ce(chunk):
    head = chunk.get_prediction_module(8)
    assert {v.name: v.shape.as_list() for v in head.variables} == {
        "task_specific/chunk/dense/kernel:0": [8, 42],
        "task_specific/chunk/dense/bias:0": [42]}
    seq = tf.random.stateless_normal([2, 6, 8], [3, 4])
    enc = type("Enc", (), {"sequence_output": seq})()
    features = {"labeled_positions": tf.constant([[1, 3, 4, 0, 0, 0], [1, 2, 0, 0, 0, 0]]),
                "labels": tf.constant([[5, 7, 31, 0, 0, 0], [37, 9, 0, 0, 0, 0]]),
                "labels_mask": tf.constant([[1.0, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0]]),
                "eid": tf.constant([0, 1])}
    losses, out = head(enc, features, is_training=True)
    assert losses.shape == [2] and out["logits"].shape == [2, 6, 42]
    kernel, bias = head.dense.kernel.numpy(), head.dense.bias.numpy()
    for b in range(2):
        total = 0.0
        for s in range(6):
            if features["labels_mask"][b, s] == 0:
                continue
            logits = seq[b, features["labeled_positions"][b, s]].numpy() @ kernel + bias
            log_z = np.log(np.sum(np.exp(logits - logits.max()))) + logits.max()
            total += log_z - logits[features["labels"][b, s]]
        assert losses[b].numpy() == pytest.approx(total, rel=1e-5)


def test_scorer_loss_counted_once_and_conll_predictions(chunk, tmp_path):
    mapping = chunk.get_label_mapping()
    ids = [mapping[t] for t in ["S-NP", "S-PP", "B-NP", "E-NP"]]
    scorer = chunk.get_scorer("dev")
    pred = [ids[0], ids[1], ids[2], mapping["S-NP"]]  # B-NP S-NP: two wrong chunks
    for eid, p in [(0, pred), (1, ids)]:
        scorer.update({"loss": np.float32(2.0), "labels": np.array(ids + [0, 0]),
                       "predictions": np.array(p + [5, 5]),
                       "labels_mask": np.array([1.0] * 4 + [0, 0]), "eid": eid})
    results = dict(scorer.get_results())
    assert results["loss"] == pytest.approx(4.0 / 8)  # summed sentence losses / words
    # gold chunks 3 + 3, predicted 4 + 3, correct 2 + 3.
    assert results["precision"] == pytest.approx(500 / 7)
    assert results["recall"] == pytest.approx(500 / 6)
    path = scorer.write_predictions(str(tmp_path / "chunk_dev.txt"))
    lines = open(path).read().split("\n")
    assert lines[:4] == ["Rockwell S-NP S-NP", "International S-PP S-PP",
                         "Corp. B-NP B-NP", "'s E-NP S-NP"]
    assert lines[4] == ""
