"""Tests for finetune/qa/qa_head.py: variable names/shapes (spec f.3), and logits,
beam search and losses against a plain numpy re-computation of the original's maths."""

import os
import types

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import scipy.special
import tensorflow as tf

from finetune.qa import qa_head
from model import modeling

B, S, H, K = 3, 12, 16, 4


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    hidden = rng.normal(size=(B, S, H)).astype(np.float32)
    input_mask = np.ones((B, S), np.int32)
    input_mask[1, 9:] = 0  # padding in example 1
    segment_ids = np.zeros((B, S), np.int32)
    segment_ids[:, 5:] = 1
    segment_ids *= input_mask
    features = dict(input_mask=input_mask, segment_ids=segment_ids,
                    start_positions=np.array([0, 6, 8], np.int32),
                    end_positions=np.array([0, 7, 11], np.int32),
                    is_impossible=np.array([1, 0, 0], np.int32),
                    eid=np.array([1000, 2000, 2001], np.int32))
    return types.SimpleNamespace(sequence_output=tf.constant(hidden)), features


def _np_weights(head):
    return {name.split("/", 2)[2]: var.numpy()
            for name, var in modeling.variables_by_name(head).items()}


def _gelu(x):
    return 0.5 * x * (1.0 + scipy.special.erf(x / np.sqrt(2.0)))


def _log_softmax(x):
    return x - scipy.special.logsumexp(x, axis=-1, keepdims=True)


def _reference(head, hidden, features):
    """The original's head in numpy: concat features, no decomposition."""
    w = _np_weights(head)
    allowed = features["input_mask"] * features["segment_ids"]
    allowed[:, 0] = 1
    adder = -1000.0 * (1 - allowed)
    start = hidden @ w["dense/kernel"][:, 0] + w["dense/bias"][0] + adder

    def end_logits(start_vec, b):  # start_vec [H] -> [S]
        concat = np.concatenate([np.tile(start_vec, (S, 1)), hidden[b]], -1)
        inner = _gelu(concat @ w["qa_hidden/kernel"] + w["qa_hidden/bias"])
        return inner @ w["dense_1/kernel"][:, 0] + w["dense_1/bias"][0] + adder[b]

    end = np.stack([end_logits(hidden[b, features["start_positions"][b]], b)
                    for b in range(B)])
    p = scipy.special.softmax(start, -1)
    feats = np.concatenate([hidden[:, 0], np.einsum("bs,bsh->bh", p, hidden)], -1)
    answerable = (_gelu(feats @ w["dense_2/kernel"] + w["dense_2/bias"])
                  @ w["dense_3/kernel"][:, 0] + w["dense_3/bias"][0])
    return start, end, answerable, end_logits


def test_variable_names_and_shapes():
    head = qa_head.QAHead("squad", H, beam_size=K)
    shapes = {name: tuple(v.shape) for name, v in modeling.variables_by_name(head).items()}
    p = "task_specific/squad/"
    assert shapes == {
        p + "dense/kernel": (H, 1), p + "dense/bias": (1,),
        p + "qa_hidden/kernel": (2 * H, 512), p + "qa_hidden/bias": (512,),
        p + "dense_1/kernel": (512, 1), p + "dense_1/bias": (1,),
        p + "dense_2/kernel": (2 * H, 512), p + "dense_2/bias": (512,),
        p + "dense_3/kernel": (512, 1), p + "dense_3/bias": (1,)}
    plain = qa_head.QAHead("newsqa", H, joint_prediction=False,
                           answerable_uses_start_logits=False)
    shapes = {name: tuple(v.shape) for name, v in modeling.variables_by_name(plain).items()}
    assert shapes == {
        "task_specific/newsqa/dense/kernel": (H, 1), "task_specific/newsqa/dense/bias": (1,),
        "task_specific/newsqa/dense_1/kernel": (H, 1),
        "task_specific/newsqa/dense_1/bias": (1,),
        "task_specific/newsqa/dense_2/kernel": (H, 1),
        "task_specific/newsqa/dense_2/bias": (1,)}
    bare = qa_head.QAHead("x", H, answerable_classifier=False)
    assert len(modeling.variables_by_name(bare)) == 6


def test_training_logits_and_loss_match_numpy():
    head = qa_head.QAHead("squad", H, beam_size=K)
    encoder_output, features = _inputs()
    losses, out = head(encoder_output, features, is_training=True)
    hidden = encoder_output.sequence_output.numpy()
    start, end, answerable, _ = _reference(head, hidden, features)
    np.testing.assert_allclose(out["start_logits"], start, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(out["end_logits"], end, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(out["answerable_logit"], answerable, rtol=1e-5, atol=1e-5)
    rows = np.arange(B)
    ce = -(_log_softmax(start)[rows, features["start_positions"]]
           + _log_softmax(end)[rows, features["end_positions"]]) / 2
    y, z = features["is_impossible"], answerable
    sigmoid_ce = np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))
    np.testing.assert_allclose(losses, ce + 0.5 * sigmoid_ce, rtol=1e-5)
    assert losses.shape == (B,) and losses.dtype == tf.float32
    assert out["end_top_index"].shape == (B, K, K) and not out["end_top_index"].numpy().any()
    # Disallowed positions (question tokens, padding) are pushed down by 1000.
    assert (out["start_logits"].numpy()[1, 1:5] < -900).all()
    assert (out["start_logits"].numpy()[1, 9:] < -900).all()


def test_beam_search_matches_numpy():
    head = qa_head.QAHead("squad", H, beam_size=K)
    encoder_output, features = _inputs(seed=1)
    _, out = head(encoder_output, features, is_training=False)
    hidden = encoder_output.sequence_output.numpy()
    start, _, _, end_logits = _reference(head, hidden, features)
    start_lp = _log_softmax(start)
    for b in range(B):
        top = np.argsort(-start_lp[b], kind="stable")[:K]
        np.testing.assert_array_equal(out["start_top_index"][b], top)
        np.testing.assert_allclose(out["start_top_log_probs"][b], start_lp[b, top],
                                   rtol=1e-5, atol=1e-5)
        for i, s in enumerate(top):
            end_lp = _log_softmax(end_logits(hidden[b, s], b))
            end_top = np.argsort(-end_lp, kind="stable")[:K]
            np.testing.assert_array_equal(out["end_top_index"][b, i], end_top)
            np.testing.assert_allclose(out["end_top_log_probs"][b, i], end_lp[end_top],
                                       rtol=1e-5, atol=1e-4)
    # Top starts are allowed positions only: [CLS] or segment-1 real tokens.
    allowed = (features["input_mask"] * features["segment_ids"]).astype(bool)
    allowed[:, 0] = True
    for b in range(B):
        assert allowed[b, out["start_top_index"][b].numpy()].all()


def test_independent_end_and_no_answerable_classifier():
    head = qa_head.QAHead("squadv1", H, beam_size=K, joint_prediction=False,
                          answerable_classifier=False)
    encoder_output, features = _inputs(seed=2)
    losses, out = head(encoder_output, features, is_training=False)
    w = _np_weights(head)
    hidden = encoder_output.sequence_output.numpy()
    allowed = features["input_mask"] * features["segment_ids"]
    allowed[:, 0] = 1
    end = hidden @ w["dense_1/kernel"][:, 0] + w["dense_1/bias"][0] - 1000.0 * (1 - allowed)
    np.testing.assert_allclose(out["end_logits"], end, rtol=1e-5, atol=1e-4)
    assert not out["answerable_logit"].numpy().any()
    rows = np.arange(B)
    start = out["start_logits"].numpy()
    expected = -(_log_softmax(start)[rows, features["start_positions"]]
                 + _log_softmax(end)[rows, features["end_positions"]]) / 2
    np.testing.assert_allclose(losses, expected, rtol=1e-5, atol=1e-5)


def test_bfloat16_encoder_output_gives_float32_logits():
    head = qa_head.QAHead("squad", H, beam_size=K)
    encoder_output, features = _inputs()
    half = types.SimpleNamespace(
        sequence_output=tf.cast(encoder_output.sequence_output, tf.bfloat16))
    losses, out = head(half, features, is_training=False, compute_dtype=tf.bfloat16)
    assert losses.dtype == out["start_logits"].dtype == tf.float32
    assert np.isfinite(losses.numpy()).all()


def test_gradients_reach_every_head_variable():
    head = qa_head.QAHead("squad", H, beam_size=K)
    encoder_output, features = _inputs()
    with tf.GradientTape() as tape:
        losses, _ = head(encoder_output, features, is_training=True)
        total = tf.reduce_sum(losses)  # fine-tuning sums per-example losses
    grads = tape.gradient(total, head.trainable_variables)
    assert len(grads) == 10 and all(g is not None for g in grads)
    for var, grad in zip(head.trainable_variables, grads):
        size = float(tf.reduce_sum(tf.abs(grad)))
        if var.name.endswith(("/dense/bias:0", "/dense_1/bias:0")):
            # The start/end biases shift every logit of a softmax equally, so the
            # cross-entropy's gradient for them is zero up to float rounding.
            assert size < 1e-5, var.name
        else:
            assert size > 0, var.name


def test_head_runs_in_tf_function():
    head = qa_head.QAHead("squad", H, beam_size=K)
    encoder_output, features = _inputs()
    eager = head(encoder_output, features, is_training=False)[1]
    graph = tf.function(lambda h, f: head(types.SimpleNamespace(sequence_output=h), f)[1])
    compiled = graph(encoder_output.sequence_output,
                     {k: tf.constant(v) for k, v in features.items()})
    for key in ("start_top_index", "end_top_index"):
        np.testing.assert_array_equal(compiled[key], eager[key])
    with pytest.raises(ValueError, match=r"features lack \['segment_ids'\]"):
        head(encoder_output, {k: v for k, v in features.items() if k != "segment_ids"})


def test_tiny_encoder_fits_real_dev_windows_through_tfrecords(tmp_path):
    """featurize -> TFRecord example -> parse -> encoder + head: training lowers the loss."""
    from pathlib import Path

    import configure_finetuning
    from finetune import feature_spec
    from finetune import task_builder
    from finetune.qa import qa_data

    data = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    squad, vocab = data / "squad" / "dev-v2.0.reconstructed.json", data / "vocab" / "vocab.txt"
    if not squad.exists() or not vocab.exists():
        pytest.skip("shared SQuAD dev / vocab files are absent")
    config = configure_finetuning.make_config(str(tmp_path), "m", dict(
        task_names=["squad"], max_seq_length=64, beam_size=K, vocab_file=str(vocab)))
    task = task_builder.get_tasks(config)[0]
    examples = qa_data.read_squad(str(squad), "squad", True, True).examples
    examples = ([e for e in examples if not e.is_impossible][:3]
                + [e for e in examples if e.is_impossible][:3])
    dicts = [d for ex in examples for d in task.featurize(ex, is_training=True)][:16]
    specs = feature_spec.get_shared_feature_specs(64) + task.get_feature_specs()
    serialized = [feature_spec.to_tf_example(specs, "squad", d).SerializeToString()
                  for d in dicts]
    parsed = tf.io.parse_example(tf.constant(serialized), feature_spec.get_parsing_spec(specs))
    batch = feature_spec.features_for_task(feature_spec.cast_and_nest(parsed, specs), "squad")
    assert batch["start_positions"].dtype == tf.int32
    assert 0 < int(tf.reduce_sum(batch["is_impossible"])) < len(dicts)

    bert = modeling.BertModel(modeling.BertConfig(
        vocab_size=len(task.tokenizer.vocab), hidden_size=32, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=64, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0))
    head = task.get_prediction_module(32)
    variables = bert.trainable_variables + head.trainable_variables

    def loss_fn():
        encoded = bert(batch["input_ids"], batch["input_mask"], batch["segment_ids"])
        losses, _ = head(encoded, batch, is_training=True)
        return tf.reduce_mean(losses)

    initial = float(loss_fn())
    learning_rate = 0.1
    for _ in range(15):
        with tf.GradientTape() as tape:
            loss = loss_fn()
        for var, grad in zip(variables, tape.gradient(loss, variables)):
            if grad is not None:
                var.assign_sub(learning_rate * tf.convert_to_tensor(grad))
    final = float(loss_fn())
    print("QA tiny-model loss: %.3f -> %.3f" % (initial, final))
    assert final < 0.5 * initial, (initial, final)
