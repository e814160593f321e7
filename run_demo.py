"""End-to-end demo on built-in text: vocab, TFRecords, pre-training, eval, fine-tuning.

The text is the docstrings of the installed Python standard library, so nothing is
downloaded. Each stage runs the project's real command-line tools, printed before
they run so they can be copied. Re-running resumes: finished stages are reused,
pre-training continues from its last checkpoint.
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

from util import demo_corpus, demo_report

HERE = os.path.dirname(os.path.abspath(__file__))
# A small ELECTRA (the debug-sized 3-layer transformer at hidden 144 would learn
# too little in a few minutes; this one is 4 layers of 128 with a 64-wide generator).
MODEL = {"hidden_size": 128, "num_hidden_layers": 4, "intermediate_size": 512,
         "num_attention_heads": 2}
# Fine-tuning trials per initialisation; the comparison reports their median. With
# 200 labelled sentences one trial is noisy (random init: 77.5-85.0% over 3 seeds).
FINETUNE_TRIALS = 3
# Sampling the generator at temperature 2 (the original's `temperature` hparam; 1 by
# default). For the first few thousand steps the generator is close to the unigram
# distribution, so its samples are as common as the words they replace and the
# discriminator has almost nothing to detect: it sits at the base rate and its token
# vectors collapse, and the model fine-tunes worse than random weights. Flatter samples
# are detectable from the start (over real tokens disc AUC 0.84 against 0.59 after 600
# steps), so the discriminator learns (docs/STATUS.md, issue 7).
TEMPERATURE = 2.0
# TensorFlow's C++ start-up lines, printed before any Python setting can mute them.
_TF_STARTUP_NOISE = ("All log messages before absl::InitializeLog()", "port.cc:153] oneDNN",
                     "cpu_feature_guard.cc", "To enable the following instructions",
                     "fast_bert_normalizer_model_builder.cc")


def run(args):
    """Prints and runs one of the project's scripts; stops the demo if it fails."""
    cmd = [sys.executable] + args
    print("\n$ " + " ".join(shlex.quote(a) for a in ["python3"] + args), flush=True)
    start = time.time()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    with subprocess.Popen(cmd, cwd=HERE, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout:
            if not any(noise in line for noise in _TF_STARTUP_NOISE):
                print(line, end="", flush=True)
    if proc.returncode:
        sys.exit(f"demo stopped: the command above failed (exit code {proc.returncode})")
    print(f"[{time.time() - start:.0f} s]", flush=True)


def vocab_size(vocab_file):
    with open(vocab_file, encoding="utf-8") as f:
        return sum(1 for _ in f)


def prepare_text(data_dir):
    """Writes the corpus and the topic task (skipped if already there)."""
    corpus_dir = os.path.join(data_dir, "corpus")
    task_dir = os.path.join(data_dir, "finetuning_data", "sst")
    paths = sorted(os.path.join(corpus_dir, f) for f in os.listdir(corpus_dir)) \
        if os.path.isdir(corpus_dir) else []
    if not paths:
        paths, n_docs = demo_corpus.write_corpus(corpus_dir)
        size = sum(os.path.getsize(p) for p in paths) / 1e6
        print(f"Wrote {n_docs} docstrings ({size:.1f} MB) to {corpus_dir}")
    if not os.path.exists(os.path.join(task_dir, "dev.tsv")):
        n_train, n_dev = demo_corpus.write_topic_task(task_dir)
        print(f"Wrote the topic task, internet vs user-interface modules ({n_train} train / "
              f"{n_dev} dev, SST-2 format) to {task_dir}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=os.path.join(HERE, "demo_data"))
    parser.add_argument("--model-name", default="demo_electra")
    parser.add_argument("--pretrain-steps", type=int, default=600)
    parser.add_argument("--vocab-size", type=int, default=8000)
    args = parser.parse_args()
    data, name = args.data_dir, args.model_name
    prepare_text(data)
    vocab = os.path.join(data, "vocab.txt")
    if not os.path.exists(vocab):
        run(["build_vocab.py", "--corpus-dir", os.path.join(data, "corpus"),
             "--output", vocab, "--vocab-size", str(args.vocab_size)])
    records = os.path.join(data, "pretrain_tfrecords")
    if not os.path.exists(os.path.join(records, "pretrain_data.json")):
        run(["build_pretraining_dataset.py", "--corpus-dir", os.path.join(data, "corpus"),
             "--vocab-file", vocab, "--output-dir", records, "--max-seq-length", "128",
             "--num-processes", "2", "--num-out-files", "8"])
    pretrain = {"vocab_size": vocab_size(vocab), "model_hparam_overrides": MODEL,
                "embedding_size": 128, "generator_hidden_size": 0.5,
                "train_batch_size": 32, "eval_batch_size": 32,
                "num_train_steps": args.pretrain_steps, "num_warmup_steps": 100,
                "learning_rate": 5e-4, "temperature": TEMPERATURE,
                "save_checkpoints_steps": 200,
                "log_every_steps": 50, "num_eval_steps": 20}
    run(["run_pretraining.py", "--data-dir", data, "--model-name", name,
         "--hparams", json.dumps(pretrain)])
    run(["run_pretraining.py", "--data-dir", data, "--model-name", name,
         "--hparams", json.dumps({**pretrain, "do_train": False, "do_eval": True})])
    # 200 training sentences: 10 epochs are 63 steps of 32.
    finetune = {"task_names": ["sst"], "vocab_size": pretrain["vocab_size"],
                "model_hparam_overrides": MODEL, "embedding_size": 128,
                "learning_rate": 3e-4, "num_train_epochs": 10.0, "max_seq_length": 64,
                "layerwise_lr_decay": 0.8, "log_every_steps": 50,
                "num_trials": FINETUNE_TRIALS}
    run(["run_finetuning.py", "--data-dir", data, "--model-name", name,
         "--hparams", json.dumps(finetune)])
    # The same fine-tuning from random weights, so the run shows what pre-training gave.
    baseline = name + "_random_init"
    run(["run_finetuning.py", "--data-dir", data, "--model-name", baseline,
         "--hparams", json.dumps({**finetune, "init_checkpoint": None})])
    models = os.path.join(data, "models")
    print(demo_report.comparison(
        demo_report.task_scores(os.path.join(models, name, "results"), "sst", "accuracy"),
        demo_report.task_scores(os.path.join(models, baseline, "results"), "sst", "accuracy"),
        args.pretrain_steps))
    print(f"Results, predictions and configs are under {models}")

if __name__ == "__main__":
    main()
