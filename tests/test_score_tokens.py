"""Tests for score_tokens.py / pretrain/scoring.py on a model trained on real text."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from scipy.stats import mannwhitneyu
from sklearn.metrics import roc_auc_score

import pretrain_fixtures
import score_tokens
from pretrain import pretrain_data, scoring
from pretrain.pretrain_helpers import special_ids_from_vocab
from pretrain.pretrain_model import PretrainingModel
from model import tokenization
from util import checkpoint
from util.cli import UserError

pytestmark = pytest.mark.skipif(not pretrain_fixtures.have_shared_data(),
                                reason=f"real data not found at {pretrain_fixtures.SHARED}")


@pytest.fixture(name="learned", scope="module")
def fixture_learned(tmp_path_factory):
    """(data dir, scorer) for the session's learned model, sizes read from its
    saved pretrain_config.json (no --hparams)."""
    base = tmp_path_factory.getbasetemp()
    train_config, _ = pretrain_fixtures.learned_model(base)
    config = scoring.make_scoring_config(train_config.data_dir, "learn", {})
    return pretrain_fixtures.data_dir(base), scoring.TokenScorer(config)


def test_mask_literal_stays_one_token(learned):
    _, scorer = learned
    assert scorer.tokenize("The [MASK] sat.") == ["the", "[MASK]", "sat", "."]
    assert scorer.tokenize("[MASK][MASK] ok") == ["[MASK]", "[MASK]", "ok"]


def _real_batch(data_dir, n=128):
    """n full-length examples (no padding) of the real pre-training data, read in order."""
    files = sorted(str(p) for p in (data_dir / "pretrain_tfrecords").glob("*.tfrecord*"))
    dataset = pretrain_data.get_dataset(files, pretrain_fixtures.SEQ, 128, False, seed=1)
    parts, count = [], 0
    for batch in dataset.take(16):
        full = np.flatnonzero(batch["input_mask"].numpy().min(-1) == 1)  # no padding
        parts.append({k: tf.gather(v, full) for k, v in batch.items()})
        count += len(full)
        if count >= n:
            break
    return {k: tf.concat([p[k] for p in parts], 0)[:n] for k in parts[0]}


def test_replaced_tokens_score_higher_than_originals(learned):
    data_dir, scorer = learned
    batch = _real_batch(data_dir)
    # Corrupt real text exactly as in training: mask, sample from the generator.
    out = scorer.model(batch, tf.constant([3, 4], tf.int64), training=False)
    fake, labels = out.fake_input_ids.numpy(), out.disc_labels.numpy()
    probs, _ = scorer.score_ids(fake, segment_ids=batch["segment_ids"].numpy())
    assert probs.shape == fake.shape
    assert np.all((probs >= 0) & (probs <= 1))
    # score_ids runs the same discriminator as the pre-training forward pass.
    np.testing.assert_allclose(probs, out.disc_probs.numpy(), atol=1e-5)
    replaced, original = probs[labels == 1], probs[labels == 0]
    auc = roc_auc_score(labels.ravel(), probs.ravel())
    p_value = mannwhitneyu(replaced, original, alternative="greater").pvalue
    print(f"mean p(replaced): replaced tokens {replaced.mean():.3f}, originals "
          f"{original.mean():.3f} ({replaced.size} replaced of {labels.size}); AUC {auc:.3f}, "
          f"one-sided Mann-Whitney p {p_value:.1e}")
    assert replaced.size > 500
    # The 300-step model is weak (on 32 examples its AUC read 0.536 and 0.547 on two CPUs,
    # under an earlier threshold of 0.55), so the test asks for what it reliably has:
    # replaced tokens ranked above originals far beyond chance. A scorer that knows
    # nothing gives AUC 0.5 +- 0.01 on this many tokens and p around 0.5; measured on an
    # AMD EPYC Zen 3: 0.170 vs 0.120, AUC 0.575, p 1.5e-15.
    assert replaced.mean() > original.mean() + 0.015
    assert auc > 0.52 and p_value < 1e-4


def test_cli_prints_scores_and_writes_json(learned, tmp_path, capsys):
    data_dir, _ = learned
    out_json = tmp_path / "scores.json"
    score_tokens.main(["--data-dir", str(data_dir), "--model-name", "learn", "--text",
                       "We the people of the United [MASK].", "--json", str(out_json)])
    printed = capsys.readouterr().out.splitlines()
    result = json.loads(out_json.read_text())
    assert result["tokens"] == ["[CLS]", "we", "the", "people", "of", "the", "united",
                                "[MASK]", ".", "[SEP]"]
    assert all(0.0 <= p <= 1.0 for p in result["replaced_probs"])
    (fill,) = result["mask_fill_ins"]
    assert fill["position"] == 7 and len(fill["top"]) == 5
    top_probs = [p for _, p in fill["top"]]
    assert top_probs == sorted(top_probs, reverse=True) and sum(top_probs) <= 1.0 + 1e-6
    assert printed[1] == "token\tp(replaced)" and printed[2].startswith("[CLS]\t")
    assert printed[-1].startswith("[MASK] at position 7: ")


def test_released_style_checkpoint_loads_with_hparams(tmp_path_factory):
    data_dir = pretrain_fixtures.data_dir(tmp_path_factory.getbasetemp())
    sizes = {k: pretrain_fixtures.TINY[k]
             for k in ("model_hparam_overrides", "embedding_size", "max_seq_length")}
    hparams = {**sizes, "generator_hidden_size": 1.0}
    config = scoring.make_scoring_config(str(data_dir), "released_small", hparams)
    vocab = tokenization.load_vocab(config.vocab_file)
    model = PretrainingModel(config, special_ids_from_vocab(vocab))
    checkpoint.save_checkpoint(model.named_variables(),
                               os.path.join(config.model_dir, "electra_small"))
    scorer = scoring.TokenScorer(config)
    assert scorer.checkpoint_path.endswith("electra_small")
    name = "electra/encoder/layer_0/output/dense/kernel"
    np.testing.assert_array_equal(scorer.model.named_variables()[name].numpy(),
                                  model.named_variables()[name].numpy())
    scores = scorer.score("hello [MASK] world")
    assert len(scores.tokens) == len(scores.replaced_probs) == 5
    assert list(scores.fill_ins) == [2]
    # Wrong sizes: one clear error naming the mismatched variable.
    wrong = scoring.make_scoring_config(str(data_dir), "released_small", sizes)
    with pytest.raises(UserError, match=r"generator/.*shape"):
        scoring.TokenScorer(wrong)


def test_missing_checkpoint_is_a_clear_error(tmp_path_factory):
    data_dir = pretrain_fixtures.data_dir(tmp_path_factory.getbasetemp())
    config = scoring.make_scoring_config(str(data_dir), "nothing_here",
                                         pretrain_fixtures.TINY)
    with pytest.raises(UserError, match="No checkpoint in .*nothing_here"):
        scoring.TokenScorer(config)
