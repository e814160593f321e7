"""Shared, session-cached pre-training fixtures: real-text TFRecords and a learned model.

Both live under pytest's session base temp dir, so test_run_pretraining.py and
test_score_tokens.py build the data and train the ~300-step model only once per session.
"""

import shutil
import time
from pathlib import Path

import configure_pretraining
from pretrain import dataset_builder, pretrain_runner

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SEQ = 64
# 2 layers, hidden 64: a few steps per second on CPU; the vocab is BERT's full 30522.
TINY = {"model_hparam_overrides": {"hidden_size": 64, "num_hidden_layers": 2,
                                   "num_attention_heads": 2, "intermediate_size": 256},
        "embedding_size": 64, "generator_hidden_size": 0.5, "max_seq_length": SEQ,
        "train_batch_size": 16, "eval_batch_size": 16, "num_warmup_steps": 10,
        "learning_rate": 2e-3, "iterations_per_loop": 5, "log_every_steps": 5}
LEARN_STEPS = 300
# lr 3e-3 learned more than 1e-2 here (final disc_loss 0.366 vs 0.389 at 300 steps).
LEARN = {"num_train_steps": LEARN_STEPS, "train_batch_size": 32, "learning_rate": 3e-3,
         "num_warmup_steps": 30, "iterations_per_loop": 50, "log_every_steps": 50,
         "save_checkpoints_steps": LEARN_STEPS}


def have_shared_data():
    return (SHARED / "corpus").is_dir() and (SHARED / "vocab" / "vocab.txt").is_file()


def data_dir(base):
    """<base>/pretrain_data: vocab.txt + pretrain_tfrecords/ from ~270 KB of real text
    (US inaugural addresses), length-64 examples, 2 shards."""
    root = Path(base) / "pretrain_data"
    if (root / "pretrain_tfrecords" / dataset_builder.METADATA_NAME).exists():
        return root
    corpus = root / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    text = (SHARED / "corpus" / "inaugural.txt").read_text(encoding="utf-8")
    (corpus / "inaugural_part.txt").write_text(text[:270_000], encoding="utf-8")
    shutil.copy(SHARED / "vocab" / "vocab.txt", root / "vocab.txt")
    dataset_builder.build_dataset(dataset_builder.BuildConfig(
        vocab_file=str(root / "vocab.txt"), output_dir=str(root / "pretrain_tfrecords"),
        max_seq_length=SEQ, num_out_files=2), [str(corpus / "inaugural_part.txt")])
    return root


def config(data, name, **hparams):
    return configure_pretraining.make_config(str(data), name, {**TINY, **hparams})


def learned_model(base):
    """Trains model "learn" for LEARN_STEPS steps once per session.

    Returns:
      (training config, seconds the training took or None if cached).
    """
    data = data_dir(base)
    train_config = config(data, "learn", **LEARN)
    done = Path(train_config.model_dir) / "DONE"
    if done.exists():
        return train_config, None
    start = time.time()
    pretrain_runner.run_pretraining(train_config)
    seconds = time.time() - start
    done.write_text(f"{seconds:.1f}\n")
    return train_config, seconds
