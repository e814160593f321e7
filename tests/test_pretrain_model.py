"""Tests for pretrain/pretrain_model.py: names/shapes (spec f), losses, gradients, labels."""

import dataclasses
import math
import os
import types

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import scipy.special
import tensorflow as tf

from model import modeling
from pretrain import pretrain_helpers as ph
from pretrain import pretrain_model as pm

SPECIAL = ph.SpecialIds(pad=0, unk=1, cls=2, sep=3, mask=4)
SEQ, N = 16, 4


def make_config(**overrides):
    args = dict(electra_objective=True, electric_objective=False, gen_weight=1.0,
                disc_weight=50.0, mask_prob=0.15, max_predictions_per_seq=N, max_seq_length=SEQ,
                uniform_generator=False, two_tower_generator=False,
                untied_generator_embeddings=False, untied_generator=True, generator_layers=1.0,
                generator_hidden_size=0.5, disallow_correct=False, temperature=1.0)
    args.update(overrides)
    return types.SimpleNamespace(**args)


def tiny_bert(vocab=50, **overrides):
    args = dict(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                intermediate_size=64, max_position_embeddings=32, embedding_size=16)
    args.update(overrides)
    return modeling.BertConfig(**args)


def tiny_model(vocab=50, bert=None, **overrides):
    tf.random.set_seed(0)
    return pm.PretrainingModel(make_config(**overrides), SPECIAL, bert or tiny_bert(vocab))


def random_features(seed=0, batch=4, vocab=50):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, vocab, size=(batch, SEQ)).astype(np.int32)
    mask = np.ones((batch, SEQ), np.int32)
    for b in range(batch):
        length = rng.integers(8, SEQ + 1)
        ids[b, 0], ids[b, length - 1] = SPECIAL.cls, SPECIAL.sep
        ids[b, length:], mask[b, length:] = 0, 0
    return {"input_ids": tf.constant(ids), "input_mask": tf.constant(mask),
            "segment_ids": tf.zeros_like(tf.constant(ids))}


def shapes(model):
    return {name: tuple(v.shape) for name, v in model.named_variables().items()}


def scopes(model):
    return {name.split("/")[0] for name in model.named_variables()}


# ---------------------------------------------------------------- names and shapes (spec f)


def expected_small(g):
    """Spec f.1 for ELECTRA-Small with generator hidden g (layers 12, ffn 4g)."""
    out = {"electra/embeddings/word_embeddings": (30522, 128),
           "electra/embeddings/position_embeddings": (512, 128),
           "electra/embeddings/token_type_embeddings": (2, 128),
           "electra/embeddings/LayerNorm/gamma": (128,),
           "electra/embeddings/LayerNorm/beta": (128,),
           "discriminator_predictions/dense/kernel": (256, 256),
           "discriminator_predictions/dense/bias": (256,),
           "discriminator_predictions/dense_1/kernel": (256, 1),
           "discriminator_predictions/dense_1/bias": (1,),
           "generator_predictions/dense/kernel": (g, 128),
           "generator_predictions/dense/bias": (128,),
           "generator_predictions/LayerNorm/gamma": (128,),
           "generator_predictions/LayerNorm/beta": (128,),
           "generator_predictions/output_bias": (30522,)}
    for scope, h in (("electra", 256), ("generator", g)):
        out[f"{scope}/embeddings_project/kernel"] = (128, h)
        out[f"{scope}/embeddings_project/bias"] = (h,)
        for k in range(12):
            p = f"{scope}/encoder/layer_{k}"
            for sub in ("attention/self/query", "attention/self/key", "attention/self/value",
                        "attention/output/dense"):
                out[f"{p}/{sub}/kernel"], out[f"{p}/{sub}/bias"] = (h, h), (h,)
            for ln in ("attention/output/LayerNorm", "output/LayerNorm"):
                out[f"{p}/{ln}/gamma"], out[f"{p}/{ln}/beta"] = (h,), (h,)
            out[f"{p}/intermediate/dense/kernel"] = (h, 4 * h)
            out[f"{p}/intermediate/dense/bias"] = (4 * h,)
            out[f"{p}/output/dense/kernel"], out[f"{p}/output/dense/bias"] = (4 * h, h), (h,)
    return out


@pytest.mark.parametrize("fraction,g", [(1.0, 256), (0.25, 64)])
def test_small_variable_names_and_shapes_match_spec(fraction, g):
    config = make_config(generator_hidden_size=fraction, max_seq_length=128,
                         max_predictions_per_seq=19)
    small = modeling.get_bert_config("small", embedding_size=128)
    model = pm.PretrainingModel(config, SPECIAL, small)
    got = shapes(model)
    assert got == expected_small(g)
    if g == 256:  # parameter counts quoted in spec f.1
        count = lambda prefix: sum(math.prod(s) for n, s in got.items() if n.startswith(prefix))
        assert count("electra/") - count("electra/embeddings/") == 13483008 - 3972864
        assert count("electra/embeddings/") == 3972864
        assert count("discriminator_predictions/") == 66049
        assert count("generator/") + count("generator_predictions/") == 9573818


def test_untied_generator_embeddings_have_generator_width():
    got = shapes(tiny_model(untied_generator_embeddings=True))
    assert got["generator/embeddings/word_embeddings"] == (50, 16)  # G = 0.5 * 32
    assert got["generator_predictions/dense/kernel"] == (16, 16)
    assert got["generator_predictions/output_bias"] == (50,)
    assert "generator/embeddings_project/kernel" not in got
    assert got["electra/embeddings/word_embeddings"] == (50, 16)


def test_variant_scopes():
    assert scopes(tiny_model()) == {"electra", "generator", "generator_predictions",
                                    "discriminator_predictions"}
    tied = tiny_model(untied_generator=False)
    assert scopes(tied) == {"electra", "generator_predictions", "discriminator_predictions"}
    assert shapes(tied)["generator_predictions/dense/kernel"] == (32, 16)
    assert tied.generator is tied.discriminator
    assert scopes(tiny_model(uniform_generator=True)) == {"electra", "discriminator_predictions"}
    mlm = tiny_model(electra_objective=False)
    assert scopes(mlm) == {"electra", "generator_predictions"}
    assert shapes(mlm)["generator_predictions/dense/kernel"] == (32, 16)


def test_electric_variables():
    got = shapes(tiny_model(electra_objective=False, electric_objective=True,
                            two_tower_generator=True, generator_hidden_size=0.25))
    assert {n.split("/")[0] for n in got} == {"electra", "generator_ltr", "generator_rtl",
                                              "cloze_predictions", "discriminator_predictions"}
    assert got["cloze_predictions/dense/kernel"] == (16, 16)  # concat of two G=8 towers -> E
    assert got["cloze_predictions/output_bias"] == (50,)
    assert got["generator_ltr/embeddings_project/kernel"] == (16, 8)
    assert got["generator_rtl/encoder/layer_1/intermediate/dense/kernel"] == (8, 32)
    assert not any(n.startswith("generator_ltr/embeddings/") for n in got)  # shared table
    untied = shapes(tiny_model(electric_objective=True, two_tower_generator=True,
                               untied_generator_embeddings=True, generator_hidden_size=0.25))
    assert untied["generator_rtl/embeddings/word_embeddings"] == (50, 8)
    assert untied["cloze_predictions/dense/kernel"] == (16, 8)  # ltr table width G
    assert "generator_rtl/embeddings_project/kernel" not in untied


def test_invalid_combinations_raise():
    with pytest.raises(ValueError, match="two_tower_generator"):
        tiny_model(electric_objective=True)
    with pytest.raises(ValueError, match="untied_generator=true"):
        tiny_model(electric_objective=True, two_tower_generator=True, untied_generator=False)


# ---------------------------------------------------------------- losses


def test_initial_loss_is_ln_vocab_plus_50_ln_2():
    vocab = 30522
    model = tiny_model(vocab=vocab)
    out = model(random_features(vocab=vocab, batch=8), tf.constant([1, 2]))
    assert abs(out.mlm_loss.numpy() - math.log(vocab)) < 0.1, out.mlm_loss
    assert abs(out.disc_loss.numpy() - math.log(2)) < 0.02, out.disc_loss
    expected = math.log(vocab) + 50 * math.log(2)  # 45.0
    assert abs(out.loss.numpy() - expected) < 1.2
    np.testing.assert_allclose(out.loss, out.mlm_loss + 50 * out.disc_loss, rtol=1e-6)


def test_losses_match_numpy_reductions():
    out = tiny_model()(random_features(1), tf.constant([3, 4]))
    w, nll = out.masked_lm_weights.numpy(), out.mlm_per_example_loss.numpy()
    np.testing.assert_allclose(out.mlm_loss, (w * nll).sum() / (w.sum() + 1e-6), rtol=1e-5)
    p, y = out.disc_probs.numpy().astype(np.float64), out.disc_labels.numpy()
    m = out.input_mask.numpy()
    bce = -(y * np.log(p) + (1 - y) * np.log(1 - p)) * m
    np.testing.assert_allclose(out.disc_loss, bce.sum() / (m.sum() + 1e-6), rtol=1e-4)
    np.testing.assert_allclose(out.disc_per_example_loss, bce.sum(1) / (m.sum(1) + 1e-6),
                               rtol=1e-4)
    np.testing.assert_array_equal(out.disc_preds, (p > 0.5).astype(np.int32))


def test_tied_logits_values_and_gradients_match_numpy():
    rng = np.random.default_rng(5)
    x, table = rng.normal(size=(7, 6)).astype(np.float32), rng.normal(size=(11, 6)).astype(
        np.float32)
    upstream = rng.normal(size=(7, 11)).astype(np.float32)
    xt, tt = tf.constant(x), tf.constant(table)
    with tf.GradientTape() as tape:
        tape.watch([xt, tt])
        logits = pm.tied_logits(xt, tt)
        total = tf.reduce_sum(logits * upstream)
    dx, dtable = tape.gradient(total, [xt, tt])
    np.testing.assert_allclose(logits.numpy(), x @ table.T, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx.numpy(), upstream @ table, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dtable.numpy(), upstream.T @ x, rtol=1e-5, atol=1e-5)


def test_token_logits_keep_static_shapes_with_an_unknown_batch():
    """Under several workers the batch size is unknown when the step is traced; the
    generator's logits must still have static N and V (sampling noise is drawn per
    example with a static shape)."""
    model = tiny_model()
    heads = [m for m in model.submodules if isinstance(m, pm.TokenLogitsHead)]
    assert heads, "the default model has a generator MLM head"
    head = heads[0]
    width = head.dense.kernel.shape[0]

    @tf.function(input_signature=[tf.TensorSpec([None, N, width], tf.float32)])
    def logits_of(reprs):
        logits = head(reprs)
        assert logits.shape.as_list() == [None, N, head.output_bias.shape[0]], logits.shape
        return logits

    assert logits_of(tf.zeros([3, N, width])).shape == (3, N, head.output_bias.shape[0])


def test_uniform_generator_and_mlm_only_objectives():
    out = tiny_model(uniform_generator=True)(random_features(2), tf.constant([0, 1]))
    np.testing.assert_allclose(out.mlm_loss, math.log(50), rtol=1e-5)  # zero logits
    mlm = tiny_model(electra_objective=False, gen_weight=2.0)
    out = mlm(random_features(2), tf.constant([0, 1]))
    assert out.disc_loss.numpy() == 0.0
    np.testing.assert_allclose(out.loss, 2.0 * out.mlm_loss, rtol=1e-6)


def test_bfloat16_compute_keeps_float32_logits_and_close_loss():
    model = tiny_model()
    features, seed = random_features(3), tf.constant([5, 6])
    full = model(features, seed)
    half = model(features, seed, compute_dtype=tf.bfloat16)
    assert half.mlm_per_example_loss.dtype == tf.float32 and half.loss.dtype == tf.float32
    np.testing.assert_array_equal(full.masked_lm_positions, half.masked_lm_positions)
    assert abs(half.mlm_loss.numpy() - full.mlm_loss.numpy()) < 0.05
    assert abs(half.disc_loss.numpy() - full.disc_loss.numpy()) < 0.02


# ---------------------------------------------------------------- gradients


def test_disc_loss_does_not_reach_generator_through_sampling():
    model = tiny_model()
    named = model.named_variables()
    with tf.GradientTape(persistent=True) as tape:
        out = model(random_features(4), tf.constant([7, 8]), training=True)
    disc_grads = dict(zip(named, tape.gradient(out.disc_loss, list(named.values()))))
    mlm_grads = dict(zip(named, tape.gradient(out.mlm_loss, list(named.values()))))

    def nonzero(grad):
        return grad is not None and float(tf.reduce_sum(tf.abs(tf.convert_to_tensor(grad)))) > 0

    for name in named:
        generator_only = name.startswith(("generator/", "generator_predictions/"))
        discriminator_only = name.startswith(("electra/encoder", "electra/embeddings_project",
                                              "discriminator_predictions/"))
        if generator_only:
            assert not nonzero(disc_grads[name]), name
        if discriminator_only:
            assert not nonzero(mlm_grads[name]), name
    assert nonzero(mlm_grads["generator/encoder/layer_0/attention/self/query/kernel"])
    assert nonzero(mlm_grads["generator_predictions/output_bias"])
    assert nonzero(disc_grads["electra/encoder/layer_1/output/dense/kernel"])
    # The shared embedding table learns from both losses.
    assert nonzero(disc_grads["electra/embeddings/word_embeddings"])
    assert nonzero(mlm_grads["electra/embeddings/word_embeddings"])


# ---------------------------------------------------------------- labels and sampling


def constant_features(token=7, batch=3):
    """[CLS] token ... token [SEP]: every masked original is `token`."""
    ids = np.full((batch, SEQ), token, np.int32)
    ids[:, 0], ids[:, -1] = SPECIAL.cls, SPECIAL.sep
    return {"input_ids": tf.constant(ids), "input_mask": tf.ones_like(tf.constant(ids)),
            "segment_ids": tf.zeros_like(tf.constant(ids))}


def force_generator(model, token, scope="generator_predictions"):
    """Makes the generator put (almost) all mass on `token`."""
    model.named_variables()[f"{scope}/output_bias"].assign(tf.one_hot(token, 50) * 100.0)


def updated_positions(out):
    """[B, S] 0/1: positions written by the sampler (weighted slots; never position 0)."""
    mask = np.zeros(out.input_mask.shape, np.int32)
    pos, w = out.masked_lm_positions.numpy(), out.masked_lm_weights.numpy()
    for b in range(len(pos)):
        mask[b, pos[b][w[b] > 0]] = 1
    mask[:, 0] = 0
    return mask


def test_sampling_the_original_token_gives_label_zero():
    model = tiny_model()
    force_generator(model, 7)
    out = model(constant_features(7), tf.constant([1, 1]))
    assert (out.sampled_tokids.numpy()[out.masked_lm_weights.numpy() > 0] == 7).all()
    np.testing.assert_array_equal(out.fake_input_ids, constant_features(7)["input_ids"])
    assert out.disc_labels.numpy().sum() == 0


def test_replaced_tokens_are_labelled_one_and_disallow_correct():
    model = tiny_model()
    force_generator(model, 9)
    out = model(constant_features(7), tf.constant([1, 1]))
    updated = updated_positions(out)
    np.testing.assert_array_equal(out.disc_labels, updated)
    np.testing.assert_array_equal(out.fake_input_ids.numpy()[updated == 1], 9)
    # disallow_correct removes the favoured original token from the choices.
    model = tiny_model(disallow_correct=True)
    force_generator(model, 7)
    out = model(constant_features(7), tf.constant([1, 1]))
    np.testing.assert_array_equal(out.disc_labels, updated_positions(out))
    assert updated_positions(out).sum() > 0


def test_electric_logits_add_log_q_and_prior_odds():
    model = tiny_model(electra_objective=False, electric_objective=True,
                       two_tower_generator=True, mask_prob=0.25)
    named = model.named_variables()
    bias = np.linspace(-1.0, 2.0, 50).astype(np.float32)
    # Zero kernels: the cloze head gives logits = output_bias, the disc head logit 0.
    for name in ("cloze_predictions/dense/kernel", "discriminator_predictions/dense_1/kernel",
                 "discriminator_predictions/dense_1/bias"):
        named[name].assign(tf.zeros_like(named[name]))
    named["cloze_predictions/output_bias"].assign(bias)
    features = random_features(5)
    out = model(features, tf.constant([2, 3]))
    log_q = scipy.special.log_softmax(bias)
    expected = scipy.special.expit(log_q[out.fake_input_ids.numpy()] + math.log(0.25 / 0.75))
    np.testing.assert_allclose(out.disc_probs, expected, rtol=1e-5)
    np.testing.assert_array_equal(out.disc_labels, updated_positions(out))  # even if unchanged
    ids, mask = features["input_ids"].numpy(), features["input_mask"].numpy()
    cand = (mask == 1) & ~np.isin(ids, [SPECIAL.cls, SPECIAL.sep, SPECIAL.mask])
    np.testing.assert_allclose(out.mlm_loss, -log_q[ids][cand].mean(), rtol=1e-5)


def test_two_tower_cloze_position_never_sees_its_own_token():
    model = tiny_model(electric_objective=True, two_tower_generator=True)
    features = random_features(6)
    inputs = ph.pretrain_data.features_to_inputs(features)
    base = model.cloze_logits(inputs).numpy()
    ids = features["input_ids"].numpy().copy()
    ids[:, 4] = 11 if ids[0, 4] != 11 else 12
    changed = model.cloze_logits(inputs._replace(input_ids=tf.constant(ids))).numpy()
    np.testing.assert_allclose(changed[:, 4], base[:, 4], atol=1e-5)
    assert np.abs(changed[:, 3] - base[:, 3]).max() > 1e-4  # rtl tower of position 3 sees 4
    assert np.abs(changed[:, 5] - base[:, 5]).max() > 1e-4  # ltr tower of position 5 sees 4


def test_roll_shifts_circularly():
    x = tf.reshape(tf.range(5), [1, 5, 1])
    np.testing.assert_array_equal(pm.roll(x, 1).numpy().ravel(), [4, 0, 1, 2, 3])
    np.testing.assert_array_equal(pm.roll(x, -1).numpy().ravel(), [1, 2, 3, 4, 0])


# ---------------------------------------------------------------- layouts and injection


def test_per_example_outputs_do_not_depend_on_batch_layout():
    model = tiny_model()
    features, seed = random_features(7, batch=4), tf.constant([9, 9])
    full = model(features, seed)
    halves = [model({k: v[s] for k, v in features.items()}, seed)
              for s in (slice(0, 2), slice(2, 4))]
    for field in ("masked_lm_positions", "masked_input_ids", "sampled_tokids", "fake_input_ids",
                  "disc_labels"):
        joined = np.concatenate([getattr(h, field).numpy() for h in halves])
        np.testing.assert_array_equal(getattr(full, field), joined, err_msg=field)
    for field in ("mlm_per_example_loss", "disc_probs"):
        joined = np.concatenate([getattr(h, field).numpy() for h in halves])
        np.testing.assert_allclose(getattr(full, field), joined, atol=1e-5, err_msg=field)


def test_forward_from_masked_equals_call():
    model = tiny_model()
    features, seed = random_features(8), tf.constant([4, 4])
    masked = ph.mask(features["input_ids"], features["input_mask"], SPECIAL, 0.15, N, seed,
                     segment_ids=features["segment_ids"])
    direct = model(features, seed)
    injected = model.forward_from_masked(masked, seed)
    np.testing.assert_allclose(direct.loss, injected.loss, rtol=1e-6)
    np.testing.assert_array_equal(direct.fake_input_ids, injected.fake_input_ids)


# ---------------------------------------------------------------- training


def test_tiny_model_overfits_one_batch():
    model = tiny_model()
    features, seed = random_features(9, batch=8), tf.constant([1, 2])
    variables = list(model.named_variables().values())
    # Plain Adam written out: tracing a Keras optimizer costs more than the whole test.
    slots = [(tf.Variable(tf.zeros_like(v)), tf.Variable(tf.zeros_like(v))) for v in variables]

    @tf.function
    def train(steps):
        losses = tf.TensorArray(tf.float32, size=steps)
        for i in tf.range(steps):
            with tf.GradientTape() as tape:
                out = model(features, seed)
            grads = tape.gradient(out.loss, variables)
            t = tf.cast(i + 1, tf.float32)
            lr = 1e-2 * tf.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t)  # bias-corrected step
            for var, grad, (m, v) in zip(variables, grads, slots):
                grad = tf.convert_to_tensor(grad)
                m.assign(0.9 * m + 0.1 * grad)
                v.assign(0.999 * v + 0.001 * grad * grad)
                var.assign_sub(lr * m / (tf.sqrt(v) + 1e-6))
            losses = losses.write(i, tf.stack([out.loss, out.mlm_loss]))
        return losses.stack()

    losses = train(tf.constant(60)).numpy()
    (first, first_mlm), (last, last_mlm) = losses[0], losses[-5:].mean(0)
    assert last < 0.1 * first, (first, last)  # 37.9 -> about 1
    assert last_mlm < 0.3 * first_mlm, (first_mlm, last_mlm)  # ln(50) = 3.9 -> about 0.5
