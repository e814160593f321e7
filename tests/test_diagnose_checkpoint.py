"""Tests of experiments/diagnose_checkpoint.py: each statistic against a hand or numpy
computation, the tool end to end on random init and a tiny saved checkpoint with real
SST-2 rows, and checkpoint surgery (kept/fresh variables, q/k scaling)."""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import tensorflow as tf
from sklearn.linear_model import LogisticRegression

import configure_pretraining
from experiments import (checkpoint_surgery, diagnose_checkpoint, diagnose_inputs,
                         diagnostics, study_data)
from finetune import init_checkpoint
from finetune_fixtures import SHARED_DATA, require_shared_data
from model import modeling, tokenization
from util import checkpoint, config_utils
from util.cli import UserError
from util.config_utils import ConfigError

VOCAB = str(SHARED_DATA / "vocab" / "vocab.txt")
SST = str(SHARED_DATA / "glue" / "SST-2")
# 2 layers, hidden 32, embedding 16 (so embeddings_project is exercised), full vocab.
TINY = {"model_hparam_overrides": {"hidden_size": 32, "num_hidden_layers": 2,
                                   "num_attention_heads": 2, "intermediate_size": 64},
        "embedding_size": 16}
SMALL_RUN = ["--train-examples", "60", "--dev-examples", "40", "--stats-examples", "12",
             "--frequent-tokens", "50"]


def tiny_bert_config():
    return diagnose_inputs.bert_config_for(TINY)


@pytest.fixture(name="tiny_checkpoint", scope="module")
def fixture_tiny_checkpoint(tmp_path_factory):
    """A model dir laid out as run_pretraining leaves it: pretrain_config.json, the
    discriminator under electra/, generator head, global_step, model.ckpt-7. Weights
    are a seed-1 init with sharper attention, so they differ from random seed 0."""
    require_shared_data()
    root = tmp_path_factory.mktemp("pretrained")
    config = configure_pretraining.make_config(str(root), "tiny",
                                               {**TINY, "vocab_file": VOCAB})
    os.makedirs(config.model_dir)
    config_utils.save_config(config, os.path.join(config.model_dir, "pretrain_config.json"))
    tf.random.set_seed(1)
    model = modeling.BertModel(tiny_bert_config(), "electra")
    for layer in model.layers:  # scores x 900: peaked attention
        layer.query.kernel.assign(layer.query.kernel * 30.0)
        layer.key.kernel.assign(layer.key.kernel * 30.0)
    named = dict(modeling.variables_by_name(model))
    named["generator_predictions/output_bias"] = tf.Variable(tf.zeros([30522]))
    named["global_step"] = tf.Variable(7, dtype=tf.int64)
    prefix = checkpoint.CheckpointManager(config.model_dir, 0).save(named, 7)
    return config.model_dir, prefix


# ---- statistics against hand / numpy computations ------------------------------------

def test_mean_pairwise_cosine_hand_cases_and_brute_force():
    v = np.array([1.0, 2.0, -3.0])
    assert diagnostics.mean_pairwise_cosine(np.stack([v, v, 2 * v])) == pytest.approx(1.0)
    assert diagnostics.mean_pairwise_cosine(np.eye(4)) == pytest.approx(0.0)
    assert diagnostics.mean_pairwise_cosine(np.stack([v, -v])) == pytest.approx(-1.0)
    x = np.random.default_rng(0).normal(size=(7, 5))
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    brute = np.mean([unit[i] @ unit[j] for i in range(7) for j in range(7) if i != j])
    assert diagnostics.mean_pairwise_cosine(x) == pytest.approx(brute, abs=1e-12)
    with pytest.raises(ValueError, match="at least 2"):
        diagnostics.mean_pairwise_cosine(x[:1])


def test_token_cosine_ignores_padding_and_one_token_examples():
    hidden = np.random.default_rng(1).normal(size=(3, 5, 4))
    hidden[0, :3] = [1.0, 0.0, 0.0, 0.0]  # 3 identical real tokens -> cosine 1
    hidden[1, :2] = [[1.0, 0, 0, 0], [0, 1.0, 0, 0]]  # orthogonal -> 0
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]])
    assert diagnostics.token_cosine(hidden, mask) == pytest.approx(0.5)


def test_attention_entropy_uniform_one_hot_and_cls_self_weight():
    mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0]])
    n = mask.sum(1)
    uniform = np.broadcast_to((mask / n[:, None])[:, None, None, :], (2, 3, 4, 4))
    assert diagnostics.cls_attention_entropy(uniform) == pytest.approx(
        np.mean(np.log([4, 2])))
    # Tokens weigh equally: 4 real tokens at log 4, 2 at log 2.
    by_hand = (4 * np.log(4) + 2 * np.log(2)) / 6
    assert diagnostics.token_attention_entropy(uniform, mask) == pytest.approx(by_hand)
    assert diagnostics.uniform_entropy(mask) == pytest.approx((np.mean(np.log([4, 2])),
                                                               by_hand))
    assert diagnostics.cls_self_weight(uniform) == pytest.approx(np.mean([1 / 4, 1 / 2]))
    one_hot = np.zeros((2, 3, 4, 4))
    one_hot[..., 0] = 1.0
    assert diagnostics.cls_attention_entropy(one_hot) == 0.0
    assert diagnostics.token_attention_entropy(one_hot, mask) == 0.0
    assert diagnostics.cls_self_weight(one_hot) == 1.0
    p = np.array([0.5, 0.25, 0.25, 0.0])
    assert diagnostics.attention_entropy(p[None, None, None])[0, 0, 0] == pytest.approx(
        1.5 * np.log(2))


def test_pooling_bag_of_embeddings_and_frequent_tokens():
    hidden = np.arange(12, dtype=float).reshape(2, 3, 2)
    mask = np.array([[1, 1, 0], [1, 1, 1]])
    np.testing.assert_allclose(diagnostics.masked_mean(hidden, mask),
                               [[1.0, 2.0], [8.0, 9.0]])
    table = np.array([[0.0, 0.0], [1.0, 3.0], [3.0, 5.0]])
    np.testing.assert_allclose(diagnostics.bag_of_embeddings(table, [[1, 2], [2], []]),
                               [[2.0, 4.0], [3.0, 5.0], [0.0, 0.0]])
    ids = [[5, 3, 3, 9], [9, 3, 100, 5], [100]]
    assert diagnostics.frequent_token_ids(ids, 3) == [3, 5, 9]  # 3 x3; 5, 9, 100 x2
    assert diagnostics.frequent_token_ids(ids, 10, exclude=[3]) == [5, 9, 100]


def test_top_pc_variance_share():
    rng = np.random.default_rng(2)
    rank_one = rng.normal(size=(50, 1)) * rng.normal(size=(1, 8)) + 3.0
    assert diagnostics.top_pc_variance_share(rank_one, k=1) == pytest.approx(1.0)
    # Equal variance along 10 orthogonal directions: 5 of them hold half.
    isotropic = np.concatenate([np.eye(10), -np.eye(10)]) * 2.0
    assert diagnostics.top_pc_variance_share(isotropic, k=5) == pytest.approx(0.5)


def test_linear_probe_standardises_with_train_statistics():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 3))
    y = (x[:, 0] + 0.3 * rng.normal(size=200) > 0).astype(int)
    acc = diagnostics.linear_probe(x[:150], y[:150], x[150:], y[150:])
    mean, std = x[:150].mean(0), x[:150].std(0) + 1e-6
    reference = LogisticRegression(C=1.0, max_iter=3000).fit((x[:150] - mean) / std, y[:150])
    assert acc == pytest.approx(reference.score((x[150:] - mean) / std, y[150:]))
    assert acc > 0.8
    scaled = x * np.array([1000.0, 1e-3, 1.0])  # standardising makes scale irrelevant
    assert diagnostics.linear_probe(scaled[:150], y[:150], scaled[150:], y[150:]) == \
        pytest.approx(acc)


def test_encoder_trace_matches_model_and_numpy_attention():
    tf.random.set_seed(4)
    model = modeling.BertModel(tiny_bert_config(), "electra")
    ids = np.array([[2, 7, 9, 3, 0], [2, 5, 3, 0, 0]], np.int32)
    mask = (ids > 0).astype(np.int32)
    trace = diagnostics.encoder_trace(model, ids, mask, np.zeros_like(ids))
    assert len(trace.hidden_states) == 3 and len(trace.attention_probs) == 2
    out = model(ids, mask, np.zeros_like(ids)).sequence_output.numpy()
    np.testing.assert_allclose(trace.hidden_states[-1], out, atol=1e-5)
    layer, x = model.layers[0], trace.hidden_states[0]  # x: [B, S, H]
    q = x @ layer.query.kernel.numpy() + layer.query.bias.numpy()
    k = x @ layer.key.kernel.numpy() + layer.key.bias.numpy()
    q, k = (t.reshape(2, 5, 2, 16).transpose(0, 2, 1, 3) for t in (q, k))  # [B, N, S, D]
    scores = q @ k.transpose(0, 1, 3, 2) / 4.0 + (mask[:, None, None, :] - 1) * 1e4
    expected = np.exp(scores - scores.max(-1, keepdims=True))
    expected /= expected.sum(-1, keepdims=True)
    np.testing.assert_allclose(trace.attention_probs[0], expected, atol=1e-5)


# ---- inputs ---------------------------------------------------------------------------

def test_read_split_samples_like_the_learning_study():
    require_shared_data()
    tokenizer = tokenization.FullTokenizer(VOCAB)
    task = diagnose_inputs.single_sentence_task(diagnose_inputs.task_name_for(SST))
    split = diagnose_inputs.read_split(task, os.path.join(SST, "train.tsv"), 30,
                                       "0:sst:train", tokenizer, 126)
    text, _ = study_data.subsample_tsv(os.path.join(SST, "train.tsv"), 30, True,
                                       "0:sst:train")
    rows = [line.split("\t") for line in text.splitlines()[1:]]
    assert split.token_ids == [tokenizer.text_to_ids(r[0]) for r in rows]
    assert split.labels.tolist() == [int(r[1]) for r in rows] and split.bad_rows == 0
    cola = diagnose_inputs.single_sentence_task(
        diagnose_inputs.task_name_for(str(SHARED_DATA / "glue" / "CoLA")))
    dev = diagnose_inputs.read_split(cola, str(SHARED_DATA / "glue" / "CoLA" / "dev.tsv"),
                                     None, "0:cola:dev", tokenizer, 3)
    assert len(dev.labels) == 1043 and max(map(len, dev.token_ids)) == 3
    with pytest.raises(UserError, match="single-sentence"):
        diagnose_inputs.single_sentence_task("mrpc")


def test_hparams_are_checked():
    with pytest.raises(ConfigError, match="'learning_rate'.*only the model's size"):
        diagnose_inputs.check_model_hparams('{"learning_rate": 0.1}')
    with pytest.raises(ConfigError, match="embedding_size"):
        diagnose_inputs.check_model_hparams({"embedding_size": "big"})


# ---- the tool end to end ----------------------------------------------------------------

def run_analyze(tmp_path, inits, *extra):
    out = tmp_path / "report.json"
    diagnose_checkpoint.main(["analyze", *inits, "--task-dir", SST, "--vocab-file", VOCAB,
                              "--output", str(out), *SMALL_RUN, *extra])
    return json.loads(out.read_text())


def check_entry(entry, layers):
    assert len(entry["layers"]) == layers + 1
    assert entry["layers"][0]["layer"] == 0 and "cls_attention_entropy" not in entry[
        "layers"][0]
    for row in entry["layers"][1:]:
        assert 0.0 <= row["cls_attention_entropy"] <= entry["uniform_entropy"]["cls"] + 1e-5
        assert 0.0 <= row["cls_self_weight"] <= 1.0
    assert all(-1.0 <= r["token_cosine"] <= 1.0 for r in entry["layers"])
    assert set(entry["probes"]) == {"cls", "mean_pool", "bag_of_embeddings"}
    assert all(0.0 <= a <= 1.0 for a in entry["probes"].values())
    assert entry["word_embeddings"]["num_tokens"] == 50


def test_analyze_random_end_to_end(tmp_path, capsys):
    require_shared_data()
    report = run_analyze(tmp_path, ["random"], "--hparams", json.dumps(TINY))
    assert report["task"] == "sst" and report["examples"]["train"] == 60
    assert report["examples"]["dev"] == 40 and report["examples"]["stats"] == 12
    (entry,) = report["inits"]
    assert entry["checkpoint"] is None and entry["model"]["embedding_size"] == 16
    check_entry(entry, layers=2)
    # Every [CLS] embedding is the same sum of word, position 0 and segment 0 rows.
    assert entry["layers"][0]["cls_cosine"] == pytest.approx(1.0)
    printed = capsys.readouterr().out
    assert "layer 2" in printed and "summary (sst" in printed and "bag-of-embeddings" in printed


def test_analyze_checkpoint_and_random_from_its_config(tmp_path, tiny_checkpoint):
    model_dir, prefix = tiny_checkpoint
    report = run_analyze(tmp_path, [model_dir, "random", prefix])
    ckpt, rand, same = report["inits"]
    assert ckpt["checkpoint"] == prefix == same["checkpoint"]
    assert ckpt["model"] == rand["model"] and ckpt["model"]["hidden_size"] == 32
    for entry in report["inits"]:
        check_entry(entry, layers=2)
    assert ckpt["layers"] == same["layers"] and ckpt["probes"] == same["probes"]
    # The checkpoint's sharper queries lower the attention entropy below random init's.
    assert (ckpt["layers"][1]["token_attention_entropy"]
            < rand["layers"][1]["token_attention_entropy"] - 0.1)


def test_analyze_errors(tmp_path):
    require_shared_data()
    with pytest.raises(UserError, match="neither a directory nor"):
        run_analyze(tmp_path, [str(tmp_path / "nope")])
    with pytest.raises(UserError, match="single-sentence"):
        run_analyze(tmp_path, ["random"], "--task", "rte")
    with pytest.raises(UserError, match="--stats-examples"):
        run_analyze(tmp_path, ["random"], "--stats-examples", "1")


# ---- surgery ----------------------------------------------------------------------------

def load_into_fresh_model(model_dir):
    """What run_finetuning does: every electra/ variable from the checkpoint."""
    model = modeling.BertModel(tiny_bert_config(), "electra")
    named = modeling.variables_by_name(model)
    loaded = init_checkpoint.init_from_checkpoint(named, model_dir)
    assert loaded == sorted(named)
    return {n: v.numpy() for n, v in named.items()}


def test_surgery_keeps_chosen_variables_and_reinitialises_the_rest(tmp_path,
                                                                    tiny_checkpoint):
    model_dir, prefix = tiny_checkpoint
    out = tmp_path / "emb_only"
    diagnose_checkpoint.main(["surgery", model_dir, str(out), "--keep",
                              "^electra/embeddings/", "--seed", "5"])
    loaded = load_into_fresh_model(str(out))
    reader = tf.train.load_checkpoint(prefix)
    fresh = checkpoint_surgery.fresh_variables(tiny_bert_config(), 5)
    for name, value in loaded.items():
        if name.startswith("electra/embeddings/"):
            np.testing.assert_array_equal(value, reader.get_tensor(name))
        else:
            np.testing.assert_array_equal(value, fresh[name].numpy())
            if not name.endswith(("bias", "beta", "gamma")):  # constant inits agree
                assert not np.array_equal(value, reader.get_tensor(name)), name
    assert tf.train.latest_checkpoint(str(out)).endswith("model.ckpt-7")
    assert (out / "pretrain_config.json").read_bytes() == (
        open(os.path.join(model_dir, "pretrain_config.json"), "rb").read())
    record = json.loads((out / "surgery.json").read_text())
    assert record["kept"] == sorted(n for n in loaded if n.startswith("electra/embeddings/"))
    with pytest.raises(UserError, match="--overwrite"):
        diagnose_checkpoint.main(["surgery", model_dir, str(out), "--keep", "encoder"])
    with pytest.raises(UserError, match="matches no variable"):
        diagnose_checkpoint.main(["surgery", model_dir, str(tmp_path / "x"), "--keep", "zz"])


def test_surgery_scale_qk_zero_gives_uniform_attention(tmp_path, tiny_checkpoint):
    model_dir, prefix = tiny_checkpoint
    out = tmp_path / "soft"
    diagnose_checkpoint.main(["surgery", prefix, str(out), "--scale-qk", "0"])
    loaded = load_into_fresh_model(str(out))
    reader = tf.train.load_checkpoint(prefix)
    for name, value in loaded.items():
        if checkpoint_surgery.QUERY_KEY_RE.match(name):
            assert not value.any(), name
        else:
            np.testing.assert_array_equal(value, reader.get_tensor(name))
    (entry,) = run_analyze(tmp_path, [str(out)])["inits"]
    for row in entry["layers"][1:]:
        assert row["cls_attention_entropy"] == pytest.approx(entry["uniform_entropy"]["cls"],
                                                             abs=1e-5)
        assert row["token_attention_entropy"] == pytest.approx(
            entry["uniform_entropy"]["tokens"], abs=1e-5)


def test_scale_query_key_scales_scores_by_the_factor():
    values = {"electra/encoder/layer_0/attention/self/query/kernel": np.full((2, 2), 2.0),
              "electra/encoder/layer_0/attention/self/key/bias": np.full((2,), 3.0),
              "electra/encoder/layer_0/attention/self/value/kernel": np.ones((2, 2))}
    scaled, names = checkpoint_surgery.scale_query_key(values, 4.0)
    assert names == sorted(values)[:2]
    assert scaled[names[1]][0, 0] == 4.0 and scaled[names[0]][0] == 6.0
    np.testing.assert_array_equal(scaled[sorted(values)[2]], 1.0)
    with pytest.raises(UserError, match=">= 0"):
        checkpoint_surgery.scale_query_key(values, -1.0)


def test_surgery_fresh_frequent_rows_replaces_only_those_rows(tmp_path, tiny_checkpoint):
    model_dir, prefix = tiny_checkpoint
    task_dir = tmp_path / "cola"
    task_dir.mkdir()
    # CoLA layout (source, label, mark, text): "the" x4, "cat" x2, "sat" x1.
    (task_dir / "train.tsv").write_text("s\t1\t\tthe the cat\ns\t0\t*\tthe cat the sat\n")
    out = tmp_path / "rows"
    diagnose_checkpoint.main(["surgery", model_dir, str(out), "--fresh-frequent-rows", "2",
                              "--task-dir", str(task_dir), "--vocab-file", VOCAB,
                              "--seed", "3"])
    vocab = tokenization.load_vocab(VOCAB)
    rows = [vocab["the"], vocab["cat"]]
    loaded = load_into_fresh_model(str(out))
    reader = tf.train.load_checkpoint(prefix)
    fresh = checkpoint_surgery.fresh_variables(tiny_bert_config(), 3)
    name = checkpoint_surgery.WORD_EMBEDDINGS
    table, source = loaded[name], reader.get_tensor(name)
    np.testing.assert_array_equal(table[rows], fresh[name].numpy()[rows])
    assert not np.array_equal(table[rows], source[rows])
    others = np.ones(len(table), bool)
    others[rows] = False
    np.testing.assert_array_equal(table[others], source[others])
    for other in loaded:
        if other != name:
            np.testing.assert_array_equal(loaded[other], reader.get_tensor(other))
    assert json.loads((out / "surgery.json").read_text())["fresh_rows"] == rows
    with pytest.raises(UserError, match=">= 0"):
        diagnose_checkpoint.main(["surgery", model_dir, str(tmp_path / "y"),
                                  "--fresh-frequent-rows", "-1"])
