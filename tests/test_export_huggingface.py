"""export_huggingface.py writes model dirs that transformers' from_pretrained loads.

A tiny PretrainingModel (E=48 != H=64, a 1-layer G=32 generator, non-default position /
type tables, the real 30522-token vocab) is randomised and saved as run_pretraining does
(weights + Adam slots + global_step + pretrain_config.json), then exported. HF's
ElectraForPreTraining / ElectraForMaskedLM / ElectraModel must load with no missing,
unexpected or mismatched parameter and give our logits to 1e-4 on real corpus lines;
the configs must round-trip every size; HF's tokenizers must give our ids on a corpus
sample; every user error must be one line with exit code 2 and leave nothing behind.

Shape legend: B = batch, S = sequence length, V = vocabulary, H = hidden size.
"""

import dataclasses
import json
import os
import shutil
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import tensorflow as tf

torch = pytest.importorskip(
    "torch", reason="torch is not installed: `pip install -r requirements-dev.txt`")
transformers = pytest.importorskip(
    "transformers", reason="transformers is not installed: `pip install -r requirements-dev.txt`")
from safetensors.numpy import load_file  # noqa: E402  (after the skips)

import configure_finetuning  # noqa: E402
import configure_pretraining  # noqa: E402
import export_huggingface  # noqa: E402
from finetune import finetune_runner  # noqa: E402
from model import hf_mapping, modeling, optimization, tokenization  # noqa: E402
from pretrain import hf_export, pretrain_helpers, pretrain_model  # noqa: E402
from util import checkpoint, cli, config_utils, training  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
if not (SHARED / "vocab" / "vocab.txt").is_file():
    pytest.skip("shared/data (real vocab and corpus) is missing", allow_module_level=True)
SEQ, TOLERANCE = 64, 1e-4
SIZES = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
         "intermediate_size": 96, "max_position_embeddings": 80, "type_vocab_size": 3,
         "initializer_range": 0.03, "hidden_dropout_prob": 0.05,
         "attention_probs_dropout_prob": 0.07}
TINY = {"embedding_size": 48, "generator_hidden_size": 0.5, "generator_layers": 0.5,
        "max_seq_length": SEQ, "model_hparam_overrides": SIZES}


def _export(*argv):
    return export_huggingface.main([str(a) for a in argv])


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A randomised tiny model saved like run_pretraining, and its two exports."""
    tmp = tmp_path_factory.mktemp("hf_export")
    shutil.copy(SHARED / "vocab" / "vocab.txt", tmp / "vocab.txt")
    config = configure_pretraining.make_config(str(tmp), "tiny", TINY)
    vocab = tokenization.load_vocab(config.vocab_file)
    tf.random.set_seed(1)
    model = pretrain_model.PretrainingModel(config, pretrain_helpers.special_ids_from_vocab(vocab))
    trainable = model.named_variables()
    state = {**trainable, **optimization.AdamWeightDecay(trainable).slot_variables(),
             "global_step": training.make_global_step()}
    rng = np.random.default_rng(0)
    for var in state.values():  # LayerNorm/bias values HF's init cannot reproduce
        if var.dtype == tf.float32:
            var.assign(var + rng.normal(0.0, 0.05, var.shape).astype(np.float32))
    prefix = checkpoint.CheckpointManager(config.model_dir, 1).save(state, 7)
    config_utils.save_config(config, os.path.join(config.model_dir, "pretrain_config.json"))
    _export("--checkpoint", config.model_dir, "--output-dir", tmp / "disc")
    _export("--checkpoint", prefix, "--output-dir", tmp / "gen", "--which", "generator")
    return {"tmp": tmp, "model": model, "config": config, "prefix": prefix,
            "values": {n: v.numpy() for n, v in state.items()}}


def _corpus_batch(vocab_file, mask_id=None):
    """[CLS] a [SEP] b [SEP] from consecutive real lines, padded: ids/mask/segments [B, S]."""
    tokenizer = tokenization.FullTokenizer(vocab_file)
    lines = (SHARED / "corpus" / "inaugural.txt").read_text(encoding="utf-8").split("\n")
    rng = np.random.default_rng(3)
    ids, mask, segments = (np.zeros((4, SEQ), np.int32) for _ in range(3))
    for b, (start, cut) in enumerate(zip(rng.integers(0, len(lines) - 2, 4), [40, 25, 12, 30])):
        a, c = (tokenizer.tokenize(lines[start + i])[:cut] for i in (0, 1))
        tokens = (["[CLS]"] + a + ["[SEP]"] + c + ["[SEP]"])[:SEQ]
        ids[b, :len(tokens)] = tokenizer.convert_tokens_to_ids(tokens)
        mask[b, :len(tokens)] = 1
        segments[b, len(a) + 2:len(tokens)] = 1
    assert (mask == 0).any() and (segments == 1).any()
    if mask_id is not None:  # a [MASK] on ~15% of the real tokens, as in pre-training
        ids[(rng.random(ids.shape) < 0.15) & (mask == 1)] = mask_id
    return ids, mask, segments


def _load(cls, directory):
    """HF model from `directory`, after checking every parameter came from the file."""
    model, info = cls.from_pretrained(str(directory), output_loading_info=True)
    for key in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        assert not info[key], f"{cls.__name__} {key}: {info[key]}"
    return model.eval()


def _hf_forward(hf_model, ids, mask, segments):
    with torch.no_grad():
        return hf_model(input_ids=torch.from_numpy(ids.astype(np.int64)),
                        attention_mask=torch.from_numpy(mask.astype(np.int64)),
                        token_type_ids=torch.from_numpy(segments.astype(np.int64)))


def _max_diff(name, theirs, ours):
    assert theirs.shape == ours.shape
    diff = float(np.abs(theirs - ours).max())
    print(f"{name}: max |HF - ours| = {diff:.3g} (scale {np.abs(ours).max():.3g})")
    assert diff < TOLERANCE
    return diff


def test_discriminator_logits_match(saved):
    model, config = saved["model"], saved["config"]
    hf_model = _load(transformers.ElectraForPreTraining, saved["tmp"] / "disc")
    ids, mask, segments = _corpus_batch(config.vocab_file)
    hidden = model.discriminator(ids, mask, segments, training=False).sequence_output
    ours = model.discriminator_head(hidden).numpy()  # [B, S]
    _max_diff("discriminator logits", _hf_forward(hf_model, ids, mask, segments).logits.numpy(),
              ours)


def test_generator_logits_match(saved):
    model, config, values = saved["model"], saved["config"], saved["values"]
    hf_model = _load(transformers.ElectraForMaskedLM, saved["tmp"] / "gen")
    # The output matrix is tied to the shared input embeddings in HF as in ours.
    np.testing.assert_array_equal(hf_model.generator_lm_head.weight.detach().numpy(),
                                  values["electra/embeddings/word_embeddings"])
    ids, mask, segments = _corpus_batch(config.vocab_file, model.special_ids.mask)
    hidden = model.generator(ids, mask, segments, training=False).sequence_output
    ours = model.generator_head(hidden).numpy()  # [B, S, V]
    _max_diff("generator logits", _hf_forward(hf_model, ids, mask, segments).logits.numpy(),
              ours)


def test_configs_round_trip_every_size_field(saved):
    model = saved["model"]
    disc, gen = model.bert_config, model.generator.config
    # The cases the export must get right: E != H, and a smaller, shallower generator.
    assert disc.embedding_size == gen.embedding_size == 48 and gen.hidden_size == 32
    assert gen.num_hidden_layers == 1 < disc.num_hidden_layers
    for name, ours in (("disc", disc), ("gen", gen)):
        theirs = transformers.ElectraConfig.from_pretrained(str(saved["tmp"] / name))
        for field in (f.name for f in dataclasses.fields(modeling.BertConfig)):
            assert getattr(theirs, field) == getattr(ours, field), (name, field)
        assert theirs.layer_norm_eps == 1e-12 and theirs.model_type == "electra"
        assert theirs.position_embedding_type == "absolute" and theirs.pad_token_id == 0
    assert json.loads((saved["tmp"] / "gen" / "config.json").read_text())["architectures"] == [
        "ElectraForMaskedLM"]


def _corpus_sample(per_file=120, non_ascii_per_file=40):
    """Random lines of every corpus file plus its first non-ASCII lines (rare: ~0.05%)."""
    rng = np.random.default_rng(0)
    sample = []
    for path in sorted((SHARED / "corpus").glob("*.txt")):
        lines = [x for x in path.read_text(encoding="utf-8").split("\n") if x.strip()]
        sample += [lines[i] for i in rng.choice(len(lines), per_file, replace=False)]
        sample += [x for x in lines if not x.isascii()][:non_ascii_per_file]
    return sample


@pytest.mark.parametrize("lower", [True, False])
def test_tokenizers_match_ours_on_the_corpus(saved, lower):
    directory = saved["tmp"] / "disc"
    if not lower:
        directory = saved["tmp"] / "cased"
        _export("--checkpoint", saved["prefix"], "--output-dir", directory,
                "--hparams", '{"do_lower_case": false}')
    ours = tokenization.FullTokenizer(saved["config"].vocab_file, do_lower_case=lower)
    sample = _corpus_sample()
    assert any(not line.isascii() for line in sample)
    expected = [ours.text_to_ids(line) for line in sample]
    auto = transformers.AutoTokenizer.from_pretrained(str(directory))
    assert isinstance(auto, transformers.ElectraTokenizerFast)
    for cls in (transformers.ElectraTokenizerFast, transformers.ElectraTokenizer):
        hf = cls.from_pretrained(str(directory))
        assert hf.do_lower_case is lower
        got = hf(sample, add_special_tokens=False)["input_ids"]
        bad = [line for line, a, b in zip(sample, got, expected) if a != b]
        assert not bad, f"{cls.__name__} differs on {len(bad)} lines, e.g. {bad[0]!r}"
        cls_id, sep_id = ours.convert_tokens_to_ids(["[CLS]", "[SEP]"])
        assert hf(sample[0])["input_ids"] == [cls_id] + expected[0] + [sep_id]


@pytest.mark.parametrize("variant", [
    {}, {"untied_generator_embeddings": True}, {"untied_generator": False},
    {"electra_objective": False}])
def test_param_map_covers_the_pretraining_model_exactly(variant):
    """Each network's map names existing variables with their shapes, and together the
    maps cover every variable of the model (so no generator variant is mis-scoped)."""
    config = configure_pretraining.make_config("/unused", "m", {**TINY, "vocab_size": 99,
                                                                 **variant})
    model = pretrain_model.PretrainingModel(config, pretrain_helpers.SpecialIds(0, 1, 2, 3, 4))
    shapes = {n: tuple(v.shape.as_list()) for n, v in model.named_variables().items()}
    whiches = ["generator", "encoder"] + (["discriminator"] if config.electra_objective else [])
    covered = set()
    for which in whiches:
        params = hf_mapping.param_map(hf_export.select_network(config, which, "pretrain"))
        assert len({p.hf_name for p in params}) == len(params)
        for p in params:
            assert shapes.get(p.tf_name) == p.tf_shape, (which, p.tf_name)
        covered |= {p.tf_name for p in params}
    assert covered == set(shapes)


def test_released_checkpoint_needs_sizes_and_exports_the_same(saved, capsys):
    released = saved["tmp"] / "released"
    released.mkdir()
    for path in Path(saved["prefix"]).parent.glob(Path(saved["prefix"]).name + ".*"):
        shutil.copy(path, released / path.name.replace("model.ckpt-7", "electra_tiny"))
    shutil.copy(saved["config"].vocab_file, released / "vocab.txt")
    out = saved["tmp"] / "released_hf"
    _expect_error(capsys, "pass --model-size", "--checkpoint", released, "--output-dir", out)
    _expect_error(capsys, "has shape", "--checkpoint", released, "--output-dir", out,
                  "--model-size", "small")
    _expect_error(capsys, "model_size must be one of", "--checkpoint", released,
                  "--output-dir", out, "--hparams", '{"model_size": "huge"}')
    _export("--checkpoint", released, "--output-dir", out, "--model-size", "small",
            "--hparams", json.dumps(TINY))
    ours, reference = load_file(out / "model.safetensors"), load_file(
        saved["tmp"] / "disc" / "model.safetensors")
    assert sorted(ours) == sorted(reference)
    for name, value in reference.items():
        np.testing.assert_array_equal(ours[name], value, err_msg=name)


def test_finetuned_dir_exports_the_encoder(saved, capsys):
    assert hf_export.FINETUNE_CONFIG_FILE == finetune_runner.MODEL_DIR_MARKER
    tmp, model = saved["tmp"], saved["model"]
    ft_dir = tmp / "finetuned"
    state = {n: v for n, v in saved["values"].items() if n.startswith("electra/")}
    state.update({"task_specific/rte/dense/kernel": np.ones((64, 2), np.float32),
                  "task_specific/rte/dense/bias": np.zeros(2, np.float32),
                  "global_step": np.int64(3)})
    checkpoint.CheckpointManager(str(ft_dir), 1).save(state, 3)
    ft_config = configure_finetuning.make_config(str(tmp), "tiny", {
        "task_names": ["rte"], "embedding_size": 48, "model_hparam_overrides": SIZES})
    config_utils.save_config(ft_config, str(ft_dir / finetune_runner.MODEL_DIR_MARKER))
    _expect_error(capsys, "fine-tuned checkpoint has no generator", "--checkpoint", ft_dir,
                  "--output-dir", tmp / "ft_gen", "--which", "generator")
    _export("--checkpoint", ft_dir, "--output-dir", tmp / "ft_hf")
    assert "task_specific/ heads" in capsys.readouterr().out
    hf_model = _load(transformers.ElectraModel, tmp / "ft_hf")
    ids, mask, segments = _corpus_batch(saved["config"].vocab_file)
    ours = model.discriminator(ids, mask, segments, training=False).sequence_output.numpy()
    theirs = _hf_forward(hf_model, ids, mask, segments).last_hidden_state.numpy()
    _max_diff("fine-tuned encoder hidden states [B, S, H]", theirs, ours)


def _expect_error(capsys, message, *argv):
    """The CLI exits with 2 and one stderr line containing `message`, writing nothing."""
    out = Path(str(argv[argv.index("--output-dir") + 1]))
    before = set(os.listdir(out)) if out.is_dir() else None
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        cli.run_main(lambda: _export(*argv))
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2
    # argparse errors come after its usage lines ("usage: ..." and indented ones).
    lines = [x for x in err.splitlines() if not x.startswith(("usage:", " "))]
    assert len(lines) == 1 and message in lines[0], err
    assert (set(os.listdir(out)) if out.is_dir() else None) == before
    assert not [n for n in os.listdir(out.parent) if n.startswith(f".{out.name}.tmp-")]


def test_user_errors(saved, capsys):
    tmp, model_dir = saved["tmp"], saved["config"].model_dir
    out = tmp / "errors"
    _expect_error(capsys, "not found", "--checkpoint", tmp / "nope", "--output-dir", out)
    _expect_error(capsys, "invalid choice: 'huge'", "--checkpoint", model_dir,
                  "--output-dir", out, "--model-size", "huge")
    short = tmp / "short_vocab.txt"
    short.write_text("\n".join(Path(saved["config"].vocab_file).read_text().split("\n")[:-2])
                     + "\n")
    _expect_error(capsys, "has 30521 lines but the model's vocab_size is 30522",
                  "--checkpoint", model_dir, "--output-dir", out, "--vocab-file", short)
    # A checkpoint without the discriminator's output layer.
    partial = tmp / "partial"
    kept = {n: v for n, v in saved["values"].items()
            if not n.startswith("discriminator_predictions/dense_1")}
    checkpoint.CheckpointManager(str(partial), 1).save(kept, 7)
    shutil.copy(Path(model_dir) / "pretrain_config.json", partial)
    _expect_error(capsys, "lacks 2 variable(s) the discriminator export needs, e.g. "
                  "discriminator_predictions/dense_1/kernel", "--checkpoint", partial,
                  "--output-dir", out)
    _expect_error(capsys, "Refusing to overwrite", "--checkpoint", model_dir,
                  "--output-dir", model_dir, "--overwrite")


def test_output_dir_must_be_empty_unless_overwrite(saved, capsys):
    out = saved["tmp"] / "occupied"
    out.mkdir()
    (out / "old.txt").write_text("x")
    args = ("--checkpoint", saved["config"].model_dir, "--output-dir", out)
    _expect_error(capsys, "is not empty", *args)
    result = _export(*args, "--overwrite")
    assert result.architecture == "ElectraForPreTraining"
    assert sorted(os.listdir(out)) == ["config.json", "model.safetensors",
                                       "special_tokens_map.json", "tokenizer_config.json",
                                       "vocab.txt"]
    assert not [n for n in os.listdir(out.parent) if n.startswith(".occupied")]
    assert (out / "vocab.txt").read_bytes() == (SHARED / "vocab" / "vocab.txt").read_bytes()
