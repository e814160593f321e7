"""Our pre-training checkpoints load in HuggingFace's `load_tf_weights_in_electra`.

The issue asks that our checkpoints work in tools made for the released ones. HF's
loader walks each TF variable name onto a PyTorch module path and skips (with only a
print) any name it cannot place, so "did not raise" proves little. These tests save a
tiny randomised PretrainingModel exactly as run_pretraining does (weights + Adam slots
+ global_step), load it into ElectraForPreTraining / ElectraForMaskedLM, and check that
(1) every HF parameter holds our value, (2) the only skipped names are optimizer slots,
global_step and the other network's weights, and (3) HF's logits match ours to 1e-4.

Shape legend: B = batch, S = sequence length, V = vocabulary, E = embedding size,
H = discriminator hidden, G = generator hidden.
"""

import os
import re

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import tensorflow as tf

torch = pytest.importorskip(
    "torch", reason="torch is not installed: `pip install -r requirements-dev.txt`")
hf_electra = pytest.importorskip(
    "transformers.models.electra.modeling_electra",
    reason="transformers is not installed: `pip install -r requirements-dev.txt`")
if not hasattr(hf_electra, "load_tf_weights_in_electra"):
    pytest.skip("this transformers has no load_tf_weights_in_electra (removed in 5.x); "
                "install the pinned 4.57.6 from requirements-dev.txt", allow_module_level=True)

import configure_pretraining  # noqa: E402  (after the skips: nothing to import otherwise)
from model import optimization  # noqa: E402
from pretrain import pretrain_helpers, pretrain_model  # noqa: E402
from util import checkpoint, training  # noqa: E402

SPECIAL = pretrain_helpers.SpecialIds(pad=0, unk=1, cls=2, sep=3, mask=4)
VOCAB, SEQ, BATCH = 211, 24, 3
# E=48 differs from H=64 and from G=32, so both networks have an embeddings_project.
TINY = {"vocab_size": VOCAB, "embedding_size": 48, "generator_hidden_size": 0.5,
        "max_seq_length": SEQ,
        "model_hparam_overrides": {"hidden_size": 64, "num_hidden_layers": 2,
                                   "num_attention_heads": 2, "intermediate_size": 128}}
TOLERANCE = 1e-4


def _randomise(named_vars, rng):
    """Adds noise to every float variable, so LayerNorm gammas/betas, biases and
    output_bias differ from HF's own init values (1 / 0) and a weight HF failed to
    load cannot go unnoticed."""
    for var in named_vars.values():
        if var.dtype == tf.float32:
            var.assign(var + rng.normal(0.0, 0.05, var.shape).astype(np.float32))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """-> (our PretrainingModel, checkpoint prefix, {name: numpy value} as saved)."""
    tmp = tmp_path_factory.mktemp("hf_compat")
    config = configure_pretraining.make_config(str(tmp), "m", TINY)
    tf.random.set_seed(1)
    model = pretrain_model.PretrainingModel(config, SPECIAL)
    trainable = model.named_variables()
    optimizer = optimization.AdamWeightDecay(trainable)
    global_step = training.make_global_step()
    # The same name set run_pretraining's CheckpointManager writes.
    state = {**trainable, **optimizer.slot_variables(), "global_step": global_step}
    rng = np.random.default_rng(0)
    _randomise(state, rng)  # slots too: they must be skipped, not loaded anywhere
    global_step.assign(7)
    prefix = checkpoint.save_checkpoint(state, str(tmp / "model.ckpt-7"))
    return model, prefix, {name: var.numpy() for name, var in state.items()}


def _hf_config(bert_config):
    """ElectraConfig with the sizes of one of our BertConfigs."""
    return hf_electra.ElectraConfig(
        vocab_size=bert_config.vocab_size, embedding_size=bert_config.embedding_size,
        hidden_size=bert_config.hidden_size, num_hidden_layers=bert_config.num_hidden_layers,
        num_attention_heads=bert_config.num_attention_heads,
        intermediate_size=bert_config.intermediate_size, hidden_act="gelu",  # erf form
        max_position_embeddings=bert_config.max_position_embeddings,
        type_vocab_size=bert_config.type_vocab_size, layer_norm_eps=1e-12)


def _load(hf_model, prefix, which, capsys):
    """Runs HF's loader; returns (loaded TF names, skipped TF names) from its prints."""
    capsys.readouterr()
    hf_electra.load_tf_weights_in_electra(hf_model, hf_model.config, prefix,
                                          discriminator_or_generator=which)
    out = capsys.readouterr().out
    # HF prints "Initialize PyTorch weight [parts] <tf name>" or "Skipping <tf name> ...".
    loaded = set(re.findall(r"^Initialize PyTorch weight \[.*\] (\S+)$", out, re.M))
    skipped = set(re.findall(r"^Skipping (\S+)", out, re.M))
    return loaded, skipped


def _tf_name(hf_name, network_scope):
    """Our checkpoint name for an HF parameter name, and whether it is a transposed kernel.

    HF stores Linear weights as [out, in] (TF kernels are [in, out]), LayerNorm as
    weight/bias (TF gamma/beta), `dense_1` as `dense_prediction`, layers as layer.N.
    """
    parts = hf_name.split(".")
    if parts[0] == "electra":
        # The generator shares the discriminator's `electra/embeddings`.
        parts[0] = "electra" if parts[1] == "embeddings" else network_scope
    if parts[:2] == ["generator_lm_head", "bias"]:
        return "generator_predictions/output_bias", False
    path = "/".join(parts[:-1])
    path = re.sub(r"layer/(\d+)", r"layer_\1", path).replace("dense_prediction", "dense_1")
    if path.endswith("_embeddings"):
        return path, False
    if path.endswith("LayerNorm"):
        return f"{path}/{'gamma' if parts[-1] == 'weight' else 'beta'}", False
    return f"{path}/{'kernel' if parts[-1] == 'weight' else 'bias'}", parts[-1] == "weight"


def _check_every_parameter(hf_model, values, network_scope):
    """Every HF parameter equals our saved value. Returns the TF names covered."""
    covered = set()
    for hf_name, param in hf_model.named_parameters():
        name, transposed = _tf_name(hf_name, network_scope)
        assert name in values, f"HF parameter {hf_name} has no checkpoint variable {name}"
        expected = values[name].T if transposed else values[name]
        np.testing.assert_array_equal(param.detach().numpy(), expected, err_msg=hf_name)
        covered.add(name)
    return covered


def _expected_loaded(values, prefixes):
    return {n for n in values
            if n.startswith(prefixes) and not n.endswith(("/adam_m", "/adam_v"))}


def _inputs():
    """Two segments and a padded tail: ids / mask / segments [B, S] int32."""
    rng = np.random.default_rng(3)
    ids = rng.integers(5, VOCAB, size=(BATCH, SEQ)).astype(np.int32)
    mask = np.ones((BATCH, SEQ), np.int32)
    segments = np.zeros((BATCH, SEQ), np.int32)
    for b, length in enumerate([SEQ, 17, 9]):
        ids[b, 0], ids[b, length // 2], ids[b, length - 1] = SPECIAL.cls, SPECIAL.sep, SPECIAL.sep
        segments[b, length // 2 + 1:length] = 1
        ids[b, length:], mask[b, length:] = SPECIAL.pad, 0
    return ids, mask, segments


def _hf_forward(hf_model, ids, mask, segments):
    hf_model.eval()
    with torch.no_grad():
        out = hf_model(input_ids=torch.from_numpy(ids.astype(np.int64)),
                       attention_mask=torch.from_numpy(mask.astype(np.int64)),
                       token_type_ids=torch.from_numpy(segments.astype(np.int64)))
    return out.logits.numpy()


def test_discriminator_loads_in_hf_and_matches(saved, capsys):
    model, prefix, values = saved
    assert model.discriminator.embeddings_project is not None  # E != H path is covered
    hf_model = hf_electra.ElectraForPreTraining(_hf_config(model.bert_config))
    loaded, skipped = _load(hf_model, prefix, "discriminator", capsys)

    expected = _expected_loaded(values, ("electra/", "discriminator_predictions/"))
    assert loaded == expected, (f"not loaded: {sorted(expected - loaded)}, "
                                f"unexpected: {sorted(loaded - expected)}")
    # Skipped: Adam slots and the generator (global_step is dropped by name, unprinted).
    assert skipped == set(values) - expected - {"global_step"}
    assert _check_every_parameter(hf_model, values, "electra") == expected

    ids, mask, segments = _inputs()
    hidden = model.discriminator(tf.constant(ids), tf.constant(mask), tf.constant(segments),
                                 training=False).sequence_output
    ours = model.discriminator_head(hidden).numpy()  # [B, S]
    theirs = _hf_forward(hf_model, ids, mask, segments)  # [B, S]
    assert theirs.shape == ours.shape == (BATCH, SEQ)
    diff = np.abs(theirs - ours).max()
    print(f"discriminator max |HF - ours| = {diff:.3g} (logit scale {np.abs(ours).max():.3g})")
    assert diff < TOLERANCE


def test_generator_loads_in_hf_and_matches(saved, capsys):
    model, prefix, values = saved
    gen_config = model.generator.config
    assert gen_config.hidden_size == 32 and model.generator.embeddings_project is not None
    hf_model = hf_electra.ElectraForMaskedLM(_hf_config(gen_config))
    loaded, skipped = _load(hf_model, prefix, "generator", capsys)

    expected = _expected_loaded(values, ("electra/embeddings/", "generator/",
                                         "generator_predictions/"))
    assert loaded == expected, (f"not loaded: {sorted(expected - loaded)}, "
                                f"unexpected: {sorted(loaded - expected)}")
    # Skipped: Adam slots and the discriminator (global_step dropped by name, unprinted).
    assert skipped == set(values) - expected - {"global_step"}
    assert _check_every_parameter(hf_model, values, "generator") == expected
    # HF's output matrix is tied to the (shared) input word embeddings, as ours.
    np.testing.assert_array_equal(hf_model.generator_lm_head.weight.detach().numpy(),
                                  values["electra/embeddings/word_embeddings"])

    ids, mask, segments = _inputs()
    ids[:, 3] = SPECIAL.mask  # a [MASK] everywhere, as the generator sees in training
    hidden = model.generator(tf.constant(ids), tf.constant(mask), tf.constant(segments),
                             training=False).sequence_output  # [B, S, G]
    # Our head takes any [B, N, G]; all S positions instead of the N gathered ones.
    ours = model.generator_head(hidden).numpy()  # [B, S, V]
    theirs = _hf_forward(hf_model, ids, mask, segments)  # [B, S, V]
    assert theirs.shape == ours.shape == (BATCH, SEQ, VOCAB)
    diff = np.abs(theirs - ours).max()
    print(f"generator max |HF - ours| = {diff:.3g} (logit scale {np.abs(ours).max():.3g})")
    assert diff < TOLERANCE
