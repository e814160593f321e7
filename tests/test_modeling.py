"""Tests for model/modeling.py: configs, names/shapes, numpy reference, masks, precision."""

import math
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import scipy.special
import tensorflow as tf

from model import modeling

BATCH, SEQ, VOCAB, HIDDEN = 13, 7, 99, 32
VOCAB_FILE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "vocab" / "vocab.txt"


def tiny_config(**overrides):
    args = dict(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=37, max_position_embeddings=64, type_vocab_size=2)
    args.update(overrides)
    return modeling.BertConfig(**args)


def random_inputs(seed=0, batch=BATCH, seq=SEQ, vocab=VOCAB):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, size=(batch, seq)).astype(np.int32)
    lengths = rng.integers(1, seq + 1, size=batch)
    mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int32)
    segments = rng.integers(0, 2, size=(batch, seq)).astype(np.int32) * mask
    return ids, mask, segments


# ---------------------------------------------------------------- configs


def test_get_bert_config_sizes():
    small = modeling.get_bert_config("small")
    assert (small.hidden_size, small.num_hidden_layers, small.num_attention_heads,
            small.intermediate_size, small.embedding_size) == (256, 12, 4, 1024, 256)
    base = modeling.get_bert_config("base")
    assert (base.hidden_size, base.num_attention_heads, base.intermediate_size) == (768, 12, 3072)
    large = modeling.get_bert_config("large", vocab_size=100, embedding_size=64)
    assert (large.hidden_size, large.num_hidden_layers, large.num_attention_heads,
            large.vocab_size, large.embedding_size) == (1024, 24, 16, 100, 64)


@pytest.mark.skipif(not VOCAB_FILE.exists(), reason=f"shared data vocab missing: {VOCAB_FILE}")
def test_default_vocab_size_matches_real_vocab_and_embeds_it():
    lines = VOCAB_FILE.read_text(encoding="utf-8").splitlines()
    cfg = modeling.get_bert_config("small", embedding_size=128)
    assert cfg.vocab_size == len(lines) == 30522
    # Ids of real special tokens ([PAD]=0, [CLS]=101, [SEP]=102, [MASK]=103, last id) embed.
    ids = [[lines.index("[CLS]"), lines.index("[MASK]"), len(lines) - 1, lines.index("[SEP]"),
            lines.index("[PAD]")]]
    embeddings = modeling.Embeddings(cfg)
    out = embeddings(tf.constant(ids), tf.zeros([1, 5], tf.int32))
    assert out.shape == (1, 5, 128)
    with pytest.raises(tf.errors.InvalidArgumentError):
        embeddings(tf.constant([[len(lines)]]), tf.zeros([1, 1], tf.int32))


def test_get_bert_config_overrides_rederive_heads_and_ffn():
    cfg = modeling.get_bert_config("small", model_hparam_overrides={"hidden_size": 144,
                                                                   "num_hidden_layers": 3})
    assert (cfg.hidden_size, cfg.num_attention_heads, cfg.intermediate_size) == (144, 2, 576)
    cfg = modeling.get_bert_config("small", model_hparam_overrides={
        "hidden_size": 144, "num_attention_heads": 4, "intermediate_size": 100})
    assert (cfg.num_attention_heads, cfg.intermediate_size) == (4, 100)
    with pytest.raises(ValueError, match="hidden_sise.*hidden_size"):
        modeling.get_bert_config("small", model_hparam_overrides={"hidden_sise": 3})
    with pytest.raises(ValueError, match="Unknown model_size"):
        modeling.get_bert_config("medium")


def test_config_validation():
    with pytest.raises(ValueError, match="multiple of num_attention_heads"):
        tiny_config(num_attention_heads=5)
    with pytest.raises(ValueError, match="hidden_act"):
        tiny_config(hidden_act="swish")
    with pytest.raises(ValueError, match="attention_probs_dropout_prob must be in"):
        tiny_config(attention_probs_dropout_prob=1.0)
    with pytest.raises(ValueError, match="vocab_size must be a positive int"):
        tiny_config(vocab_size=0)
    with pytest.raises(ValueError, match="rate must be in"):
        modeling.dropout(tf.ones([2]), 1.0)


def test_generator_config():
    disc = modeling.get_bert_config("small", embedding_size=128)
    gen = modeling.get_generator_config(disc, 0.25, 1.0)
    assert (gen.hidden_size, gen.num_hidden_layers, gen.num_attention_heads,
            gen.intermediate_size, gen.embedding_size) == (64, 12, 1, 256, 128)
    base_gen = modeling.get_generator_config(modeling.get_bert_config("base"), 1 / 3, 1.0)
    assert (base_gen.hidden_size, base_gen.num_attention_heads, base_gen.embedding_size) == (
        256, 4, 768)


# ---------------------------------------------------------------- shapes and names


def test_output_shapes():
    cfg = tiny_config(embedding_size=16)
    model = modeling.BertModel(cfg)
    ids, mask, seg = random_inputs()
    out = model(ids, mask, seg)
    assert out.sequence_output.shape == (BATCH, SEQ, HIDDEN)
    assert out.pooled_output.shape == (BATCH, HIDDEN)
    assert out.embedding_output.shape == (BATCH, SEQ, 16)
    np.testing.assert_array_equal(out.pooled_output.numpy(), out.sequence_output[:, 0].numpy())


def _expected_encoder_shapes(prefix, h, layers, e):
    shapes = {}
    if e != h:
        shapes[f"{prefix}/embeddings_project/kernel"] = [e, h]
        shapes[f"{prefix}/embeddings_project/bias"] = [h]
    for i in range(layers):
        p = f"{prefix}/encoder/layer_{i}"
        for sub in ("attention/self/query", "attention/self/key", "attention/self/value",
                    "attention/output/dense"):
            shapes[f"{p}/{sub}/kernel"], shapes[f"{p}/{sub}/bias"] = [h, h], [h]
        shapes[f"{p}/intermediate/dense/kernel"] = [h, 4 * h]
        shapes[f"{p}/intermediate/dense/bias"] = [4 * h]
        shapes[f"{p}/output/dense/kernel"], shapes[f"{p}/output/dense/bias"] = [4 * h, h], [h]
        for ln in ("attention/output/LayerNorm", "output/LayerNorm"):
            shapes[f"{p}/{ln}/gamma"], shapes[f"{p}/{ln}/beta"] = [h], [h]
    return shapes


@pytest.mark.parametrize("gen_fraction,gen_hidden", [(0.25, 64), (1.0, 256)])
def test_electra_small_names_shapes_and_counts(gen_fraction, gen_hidden):
    disc_cfg = modeling.get_bert_config("small", embedding_size=128)
    gen_cfg = modeling.get_generator_config(disc_cfg, gen_fraction, 1.0)
    disc = modeling.BertModel(disc_cfg, "electra")
    gen = modeling.BertModel(gen_cfg, "generator", embeddings=disc.embeddings)
    expected = {
        "electra/embeddings/word_embeddings": [30522, 128],
        "electra/embeddings/position_embeddings": [512, 128],
        "electra/embeddings/token_type_embeddings": [2, 128],
        "electra/embeddings/LayerNorm/gamma": [128],
        "electra/embeddings/LayerNorm/beta": [128],
    }
    expected.update(_expected_encoder_shapes("electra", 256, 12, 128))
    expected.update(_expected_encoder_shapes("generator", gen_hidden, 12, 128))
    named = modeling.variables_by_name(disc, gen)
    assert {k: v.shape.as_list() for k, v in named.items()} == expected
    count = lambda names: sum(int(np.prod(named[n].shape)) for n in names)
    disc_names = [n for n in named if n.startswith("electra/")]
    assert count(disc_names) == 13_483_008  # spec f.1
    embeddings = [n for n in named if "/embeddings/" in n]
    assert count(embeddings) == 3_972_864
    if gen_fraction == 1.0:
        gen_encoder = [n for n in named if n.startswith("generator/encoder/")]
        assert count(gen_encoder) == 9_477_120
        assert count(["generator/embeddings_project/kernel",
                      "generator/embeddings_project/bias"]) == 33_024
    assert all(v.dtype == tf.float32 for v in named.values())


def test_shared_embeddings_are_one_object_and_width_checked():
    cfg = tiny_config(embedding_size=16)
    disc = modeling.BertModel(cfg)
    gen = modeling.BertModel(modeling.get_generator_config(cfg, 0.5, 0.5), "generator",
                             embeddings=disc.embeddings)
    named = modeling.variables_by_name(disc, gen)
    assert named["electra/embeddings/word_embeddings"] is gen.embeddings.word_embeddings
    assert not any(n.startswith("generator/embeddings/") for n in named)
    with pytest.raises(ValueError, match="embedding_size"):
        modeling.BertModel(tiny_config(embedding_size=8), "generator", embeddings=disc.embeddings)


def test_duplicate_names_rejected():
    a = modeling.BertModel(tiny_config())
    b = modeling.BertModel(tiny_config())
    with pytest.raises(ValueError, match="Two different variables"):
        modeling.variables_by_name(a, b)


def test_initialisers():
    tf.random.set_seed(1)
    cfg = modeling.get_bert_config("small", vocab_size=2000, embedding_size=128)
    model = modeling.BertModel(cfg)
    named = modeling.variables_by_name(model)
    word = named["electra/embeddings/word_embeddings"].numpy()
    assert np.abs(word).max() <= 0.04 + 1e-7  # truncated at 2 sigma
    assert abs(word.std() - 0.02 * 0.8796) < 5e-4  # std of a 2-sigma truncated normal
    project = named["electra/embeddings_project/kernel"].numpy()
    limit = math.sqrt(6 / (128 + 256))
    assert np.abs(project).max() <= limit and np.abs(project).max() > 0.9 * limit  # glorot
    assert np.all(named["electra/encoder/layer_0/output/LayerNorm/gamma"].numpy() == 1)
    assert np.all(named["electra/encoder/layer_0/output/LayerNorm/beta"].numpy() == 0)
    assert np.all(named["electra/encoder/layer_3/intermediate/dense/bias"].numpy() == 0)


# ---------------------------------------------------------------- numpy reference


def _np_layer_norm(x, gamma, beta):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-12) * gamma + beta


def _np_dense(named, name, x):
    return x @ named[f"{name}/kernel"] + named[f"{name}/bias"]


def _np_forward(named, cfg, ids, mask, seg, causal=None):
    """Straightforward float64 re-implementation of the original encoder."""
    w = {k: v.numpy().astype(np.float64) for k, v in named.items()}
    e = "electra/embeddings"
    x = w[f"{e}/word_embeddings"][ids] + w[f"{e}/token_type_embeddings"][seg]
    x = x + w[f"{e}/position_embeddings"][: ids.shape[1]]
    x = _np_layer_norm(x, w[f"{e}/LayerNorm/gamma"], w[f"{e}/LayerNorm/beta"])
    if cfg.embedding_size != cfg.hidden_size:
        x = _np_dense(w, "electra/embeddings_project", x)
    b, s = ids.shape
    n, d = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads
    visible = np.broadcast_to(mask[:, None, :], (b, s, s)).astype(np.float64)
    if causal == "ltr":
        visible = visible * np.tril(np.ones((s, s)))
    for i in range(cfg.num_hidden_layers):
        p = f"electra/encoder/layer_{i}"
        heads = lambda t: t.reshape(b, s, n, d).transpose(0, 2, 1, 3)
        q, k, v = (heads(_np_dense(w, f"{p}/attention/self/{m}", x))
                   for m in ("query", "key", "value"))
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(d) + (1 - visible[:, None]) * -10000.0
        probs = scipy.special.softmax(scores, axis=-1)
        context = (probs @ v).transpose(0, 2, 1, 3).reshape(b, s, n * d)
        attn = _np_dense(w, f"{p}/attention/output/dense", context)
        attn = _np_layer_norm(attn + x, w[f"{p}/attention/output/LayerNorm/gamma"],
                              w[f"{p}/attention/output/LayerNorm/beta"])
        inter = _np_dense(w, f"{p}/intermediate/dense", attn)
        inter = 0.5 * inter * (1 + scipy.special.erf(inter / math.sqrt(2)))
        out = _np_dense(w, f"{p}/output/dense", inter)
        x = _np_layer_norm(out + attn, w[f"{p}/output/LayerNorm/gamma"],
                           w[f"{p}/output/LayerNorm/beta"])
    return x


def _randomise(model, seed):
    """Non-trivial LN/bias values so the reference test exercises every parameter."""
    rng = np.random.default_rng(seed)
    for var in model.variables:
        var.assign(rng.normal(0, 0.5, var.shape).astype(np.float32))


@pytest.mark.parametrize("causal,embedding_size,layers", [(None, 16, 1), ("ltr", None, 2)])
def test_matches_numpy_reference(causal, embedding_size, layers):
    cfg = tiny_config(embedding_size=embedding_size, num_hidden_layers=layers)
    model = modeling.BertModel(cfg)
    _randomise(model, 3)
    ids, mask, seg = random_inputs(seed=5)
    out = model(ids, mask, seg, causal=causal).sequence_output.numpy()
    ref = _np_forward(modeling.variables_by_name(model), cfg, ids, mask, seg, causal)
    np.testing.assert_allclose(out, ref, atol=1e-5, rtol=0)


def test_gelu_is_erf_form():
    x = np.linspace(-5, 5, 101)
    ref = 0.5 * x * (1 + scipy.special.erf(x / math.sqrt(2)))
    out = modeling.gelu(tf.constant(x)).numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-12)
    tanh_form = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    assert np.abs(out - tanh_form).max() > 1e-4  # distinguishable from the approximation


@pytest.mark.parametrize("dtype,rtol", [(tf.float64, 1e-6), (tf.float32, 2e-6)])
def test_gelu_training_form_value_and_gradient(dtype, rtol):
    """The XLA-fused training form: same values, and the exact derivative Phi + x phi."""
    x = np.linspace(-6, 6, 241)
    ref = 0.5 * x * (1 + scipy.special.erf(x / math.sqrt(2)))
    slope = 0.5 * (1 + scipy.special.erf(x / math.sqrt(2))) + x * np.exp(-x * x / 2) / math.sqrt(
        2 * math.pi)
    upstream = np.cos(x)
    xt = tf.constant(x, dtype)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        out = modeling.gelu(xt, training=True)
        total = tf.reduce_sum(out * tf.constant(upstream, dtype))
    np.testing.assert_allclose(out.numpy(), ref, rtol=rtol, atol=1e-6)
    np.testing.assert_allclose(tape.gradient(total, xt).numpy(), upstream * slope,
                               rtol=rtol, atol=1e-6)


@pytest.mark.parametrize("kernel", ["eigen", "onednn"])
@pytest.mark.parametrize("in_dim, out_dim", [(24, 40), (40, 24)])  # both of Eigen's forms
def test_training_dense_gradients_match_numpy(kernel, in_dim, out_dim, monkeypatch):
    """dense_2d's training form: TF's values, and x^T dy, dy W^T, sum(dy) as gradients
    whichever kernel computes the weight gradient."""
    monkeypatch.setenv("ELECTRA_WEIGHT_GRAD_MATMUL", kernel)
    rng = np.random.default_rng(3)
    x, w, b = (rng.normal(size=s).astype(np.float32) for s in
               ((50, in_dim), (in_dim, out_dim), (out_dim,)))
    upstream = rng.normal(size=(50, out_dim)).astype(np.float32)
    xt, wt, bt = tf.constant(x), tf.constant(w), tf.constant(b)

    @tf.function
    def forward_backward(xt, wt, bt):
        with tf.GradientTape() as tape:
            tape.watch([xt, wt, bt])
            y = modeling.dense_2d(xt, wt, bt, training=True)
            total = tf.reduce_sum(y * upstream)
        return y, tape.gradient(total, [xt, wt, bt])

    y, (dx, dw, db) = forward_backward(xt, wt, bt)
    np.testing.assert_allclose(y.numpy(), x @ w + b, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx.numpy(), upstream @ w.T, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dw.numpy(), x.T @ upstream, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(db.numpy(), upstream.sum(0), rtol=1e-5, atol=1e-5)
    graph_ops = {op.type for op in forward_backward.get_concrete_function(
        xt, wt, bt).graph.get_operations()}
    assert ("BatchMatMulV3" in graph_ops) == (kernel == "eigen")


# ---------------------------------------------------------------- masks and dropout


def test_padding_invariance():
    model = modeling.BertModel(tiny_config())
    ids, mask, seg = random_inputs(seed=7)
    mask[:, -2:] = 0
    out1 = model(ids, mask, seg).sequence_output.numpy()
    ids2 = ids.copy()
    ids2[:, -2:] = (ids2[:, -2:] + 17) % VOCAB
    out2 = model(ids2, mask, seg).sequence_output.numpy()
    real = mask.astype(bool)
    np.testing.assert_allclose(out1[real], out2[real], atol=1e-6)
    assert np.abs(out1[~real] - out2[~real]).max() > 1e-3  # padded queries do change


@pytest.mark.parametrize("causal", ["ltr", "rtl"])
def test_causal_masks(causal):
    model = modeling.BertModel(tiny_config())
    ids, _, seg = random_inputs(seed=9)
    mask = np.ones_like(ids)
    pos = 3
    ids2 = ids.copy()
    changed = slice(pos + 1, None) if causal == "ltr" else slice(0, pos)
    ids2[:, changed] = (ids2[:, changed] + 11) % VOCAB
    out1 = model(ids, mask, seg, causal=causal).sequence_output.numpy()
    out2 = model(ids2, mask, seg, causal=causal).sequence_output.numpy()
    same = slice(0, pos + 1) if causal == "ltr" else slice(pos, None)
    np.testing.assert_allclose(out1[:, same], out2[:, same], atol=1e-6)
    assert np.abs(out1 - out2).max() > 1e-3
    with pytest.raises(ValueError, match="causal"):
        model(ids, mask, seg, causal="both")


@pytest.mark.parametrize("causal", [None, "ltr"])
def test_pooled_only_gives_the_full_encoders_cls_output_and_gradients(causal):
    """The last layer computed at the first position only: same [CLS] output, same
    gradients for every variable (dropout off: training=True with rates 0 takes the
    training code path deterministically)."""
    model = modeling.BertModel(tiny_config(hidden_dropout_prob=0.0,
                                           attention_probs_dropout_prob=0.0))
    ids, mask, seg = random_inputs(seed=4)
    results = {}
    for pooled_only in (False, True):
        with tf.GradientTape() as tape:
            out = model(ids, mask, seg, training=True, causal=causal, pooled_only=pooled_only)
            loss = tf.reduce_sum(out.pooled_output * tf.cos(tf.range(HIDDEN, dtype=tf.float32)))
        grads = tape.gradient(loss, model.trainable_variables)
        results[pooled_only] = out, grads
    (full, full_grads), (pooled, pooled_grads) = results[False], results[True]
    assert pooled.sequence_output is None and full.sequence_output.shape == (BATCH, SEQ, HIDDEN)
    np.testing.assert_allclose(pooled.pooled_output.numpy(), full.pooled_output.numpy(),
                               rtol=1e-5, atol=1e-5)
    for var, a, b in zip(model.trainable_variables, full_grads, pooled_grads):
        np.testing.assert_allclose(tf.convert_to_tensor(b).numpy(),
                                   tf.convert_to_tensor(a).numpy(), rtol=1e-4, atol=1e-5,
                                   err_msg=var.name)


def test_dropout_only_in_training():
    model = modeling.BertModel(tiny_config())
    ids, mask, seg = random_inputs()
    eval1 = model(ids, mask, seg, training=False).sequence_output.numpy()
    eval2 = model(ids, mask, seg, training=False).sequence_output.numpy()
    np.testing.assert_array_equal(eval1, eval2)
    train = model(ids, mask, seg, training=True).sequence_output.numpy()
    assert np.abs(train - eval1).max() > 1e-3


# ---------------------------------------------------------------- compilation and precision


def test_tf_function_and_xla_match_eager():
    model = modeling.BertModel(tiny_config(embedding_size=16))
    ids, mask, seg = random_inputs()
    eager = model(ids, mask, seg).sequence_output.numpy()
    fn = lambda a, b, c: model(a, b, c).sequence_output
    graph = tf.function(fn)(ids, mask, seg).numpy()
    xla = tf.function(fn, jit_compile=True)(ids, mask, seg).numpy()
    np.testing.assert_allclose(graph, eager, atol=1e-5)
    np.testing.assert_allclose(xla, eager, atol=1e-4)
    # Training mode (dropout) also compiles under XLA.
    train = tf.function(lambda a, b, c: model(a, b, c, training=True).sequence_output,
                        jit_compile=True)(ids, mask, seg)
    assert train.shape == (BATCH, SEQ, HIDDEN)


def test_gradients_reach_every_variable():
    model = modeling.BertModel(tiny_config(embedding_size=16))
    ids, mask, seg = random_inputs()
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(ids, mask, seg, training=True).sequence_output ** 2)
    named = modeling.variables_by_name(model)
    grads = tape.gradient(loss, list(named.values()))
    missing = [n for n, g in zip(named, grads) if g is None]
    assert not missing


@pytest.mark.parametrize("dtype,atol", [(tf.bfloat16, 0.1), (tf.float16, 0.02)])
def test_reduced_precision_close_to_fp32(dtype, atol):
    model = modeling.BertModel(tiny_config(embedding_size=16))
    ids, mask, seg = random_inputs()
    ref = model(ids, mask, seg).sequence_output.numpy()
    out = model(ids, mask, seg, compute_dtype=dtype)
    assert out.sequence_output.dtype == dtype and out.embedding_output.dtype == dtype
    out = tf.cast(out.sequence_output, tf.float32).numpy()
    assert np.abs(out - ref).max() < atol
    assert np.abs(out - ref).mean() < atol / 5
    assert all(v.dtype == tf.float32 for v in model.variables)


def test_dropout_statistics_and_gradient():
    x = tf.ones([400, 500])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = modeling.dropout(x, 0.1)
        total = tf.reduce_sum(y)
    values = np.unique(y.numpy())
    np.testing.assert_allclose(values, [0.0, 1 / 0.9], rtol=1e-6)
    keep = y.numpy() != 0
    # 200k Bernoulli(0.9) draws: std of the mean is 6.7e-4, so 0.003 is ~4.5 sigma.
    assert abs(keep.mean() - 0.9) < 0.003
    assert abs(keep[:, :250].mean() - keep[:, 250:].mean()) < 0.006  # no positional bias
    grad = tape.gradient(total, x).numpy()
    np.testing.assert_allclose(grad, keep / 0.9, rtol=1e-6)
    other = modeling.dropout(x, 0.1).numpy() != 0
    assert 0.15 < (keep != other).mean() < 0.21  # fresh mask per call: 2 * 0.9 * 0.1 = 0.18
    assert np.all(modeling.dropout(x, 0.0).numpy() == 1.0)
