"""Diagnose why a pre-trained checkpoint may fine-tune worse than random init.

Usage:
  python3 experiments/diagnose_checkpoint.py analyze INIT [INIT ...] [--hparams JSON]
      [--task-dir DIR] [--task NAME] [--train-examples N] [--dev-examples N]
      [--stats-examples N] [--max-seq-length N] [--frequent-tokens K] [--vocab-file F]
      [--seed S] [--output results.json]
  python3 experiments/diagnose_checkpoint.py surgery SOURCE OUTPUT_DIR
      [--keep REGEX] [--scale-qk F] [--fresh-frequent-rows K [--task-dir DIR]
      [--task NAME] [--vocab-file F]] [--seed S] [--hparams JSON] [--overwrite]

INIT is `random` or a checkpoint prefix / model dir of this project's pre-training; the
sizes come from the pretrain_config.json beside it (`random` takes the first
checkpoint's), overridden by --hparams ({"model_size", "model_hparam_overrides",
"embedding_size", "vocab_size", "do_lower_case"}). `analyze` prints a table per init
and writes the numbers as JSON (experiments/diagnostics.py defines each statistic);
`surgery` writes a model dir to fine-tune (experiments/checkpoint_surgery.py).
"""

import argparse
import dataclasses
import os
import sys
from typing import Optional

# Run as a script, this file's directory is on sys.path instead of the repo root.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

# pylint: disable=wrong-import-position
# util.cpu_setup and util.cli first: TensorFlow's CPU settings and quiet C++ start-up
# logging must be in place before TF is imported.
import util.cpu_setup  # noqa: E402,F401  pylint: disable=unused-import
from util import cli, config_utils, io_utils
import numpy as np

from experiments import checkpoint_surgery, diagnose_inputs, diagnostics
from model import tokenization
from util.logging_utils import log

SHARED = os.path.join(os.path.dirname(REPO), "shared", "data")
PROBE_BATCH = 128  # examples per encoder call when extracting probe features


@dataclasses.dataclass(frozen=True)
class DiagnoseConfig:
    """Settings of `analyze` (one per flag)."""

    inits: tuple  # "random" or checkpoint prefixes / model dirs, in report order
    model_hparams: dict = dataclasses.field(default_factory=dict)  # checked --hparams
    task_dir: str = os.path.join(SHARED, "glue", "SST-2")  # train.tsv + dev.tsv
    task: Optional[str] = None  # task registry name; None -> from task_dir (SST-2 -> sst)
    train_examples: Optional[int] = None  # probe training rows (seeded sample); None = all
    dev_examples: Optional[int] = None  # dev rows for the probes; None = all
    stats_examples: int = 200  # first dev rows used for the geometry / attention stats
    max_seq_length: int = 128  # [CLS] + word pieces + [SEP], as fine-tuning truncates
    frequent_tokens: int = 1000  # most frequent training tokens for embedding stats
    vocab_file: Optional[str] = None  # None -> the first checkpoint's, else shared vocab
    seed: int = 0  # random init, row sampling (0 = the learning study's) and probes
    output: str = "diagnose_checkpoint.json"  # the JSON report (written atomically)

    def __post_init__(self):
        if not self.inits:
            raise cli.UserError("name at least one init: random or a checkpoint.")
        for name in ("train_examples", "dev_examples", "frequent_tokens"):
            value = getattr(self, name)
            if value is not None and value < 2:
                raise cli.UserError(f"--{name.replace('_', '-')} must be at least 2, "
                                    f"got {value}.")
        if self.stats_examples < 2:
            raise cli.UserError("--stats-examples must be at least 2 (the [CLS] cosine "
                                f"compares examples), got {self.stats_examples}.")
        if self.max_seq_length < 4:
            raise cli.UserError(f"--max-seq-length must be at least 4, got "
                                f"{self.max_seq_length}.")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    analyze = sub.add_parser("analyze", help="statistics and linear probes per init")
    analyze.add_argument("inits", nargs="+", help="random, or checkpoint prefixes / dirs")
    analyze.add_argument("--task-dir", default=DiagnoseConfig.task_dir)
    analyze.add_argument("--task", help="task name if the dir is not named after it")
    for flag, default in (("--train-examples", None), ("--dev-examples", None),
                          ("--stats-examples", 200), ("--max-seq-length", 128),
                          ("--frequent-tokens", 1000)):
        analyze.add_argument(flag, type=int, default=default)
    analyze.add_argument("--vocab-file")
    analyze.add_argument("--output", default=DiagnoseConfig.output)
    surgery = sub.add_parser("surgery", help="write a modified checkpoint dir")
    surgery.add_argument("source", help="checkpoint prefix or model dir")
    surgery.add_argument("output_dir", help="new model dir to fine-tune")
    surgery.add_argument("--keep", help="regex: variables kept from the checkpoint; the "
                         "others get a fresh random init")
    surgery.add_argument("--scale-qk", type=float, help="multiply attention scores by F "
                         "(query/key kernels and biases by sqrt(F))")
    surgery.add_argument("--fresh-frequent-rows", type=int, default=0, metavar="K",
                         help="also re-initialise the word-embedding rows of the K most "
                         "frequent tokens of --task-dir's train.tsv")
    surgery.add_argument("--task-dir", default=DiagnoseConfig.task_dir)
    surgery.add_argument("--task", help="task name if the dir is not named after it")
    surgery.add_argument("--vocab-file")
    surgery.add_argument("--overwrite", action="store_true")
    for command in (analyze, surgery):
        command.add_argument("--seed", type=int, default=0)
        command.add_argument("--hparams", default="{}", help="JSON (or .json path) of "
                             "size hparams overriding pretrain_config.json")
    return parser.parse_args(argv)


def layer_stats(trace, input_mask):
    """Per-layer geometry and attention rows (index 0 = embeddings) of an EncoderTrace."""
    rows = []
    for i, hidden in enumerate(trace.hidden_states):
        row = {"layer": i, "token_cosine": diagnostics.token_cosine(hidden, input_mask),
               "cls_cosine": diagnostics.mean_pairwise_cosine(hidden[:, 0])}
        if i:
            probs = trace.attention_probs[i - 1]
            row.update(cls_attention_entropy=diagnostics.cls_attention_entropy(probs),
                       token_attention_entropy=diagnostics.token_attention_entropy(
                           probs, input_mask),
                       cls_self_weight=diagnostics.cls_self_weight(probs))
        rows.append(row)
    return rows


def top_layer_features(model, token_ids, tokenizer):
    """([B, H] top-layer [CLS], [B, H] top-layer mean over real tokens), no dropout."""
    cls, mean = [], []
    for start in range(0, len(token_ids), PROBE_BATCH):
        ids, mask = diagnose_inputs.encode(token_ids[start:start + PROBE_BATCH], tokenizer)
        hidden = model(ids, mask, np.zeros_like(ids), training=False).sequence_output.numpy()
        cls.append(hidden[:, 0])
        mean.append(diagnostics.masked_mean(hidden, mask))
    return np.concatenate(cls), np.concatenate(mean)


def analyse_init(model, data, tokenizer, config):
    """The report entry of one loaded encoder (without its name/size fields)."""
    train, dev = data
    ids, mask = diagnose_inputs.encode(dev.token_ids[:config.stats_examples], tokenizer)
    trace = diagnostics.encoder_trace(model, ids, mask, np.zeros_like(ids))
    uniform_cls, uniform_tokens = diagnostics.uniform_entropy(mask)
    table = model.embeddings.word_embeddings.numpy()
    frequent = diagnostics.frequent_token_ids(train.token_ids, config.frequent_tokens,
                                              exclude=[tokenizer.vocab["[UNK]"]])
    features = {"cls": [], "mean_pool": [], "bag_of_embeddings": []}
    for split in (train, dev):
        cls, mean = top_layer_features(model, split.token_ids, tokenizer)
        for name, values in (("cls", cls), ("mean_pool", mean), ("bag_of_embeddings",
                             diagnostics.bag_of_embeddings(table, split.token_ids))):
            features[name].append(values)
    probes = {name: diagnostics.linear_probe(tr, train.labels, dv, dev.labels, config.seed)
              for name, (tr, dv) in features.items()}
    return {"layers": layer_stats(trace, mask),
            "uniform_entropy": {"cls": uniform_cls, "tokens": uniform_tokens},
            "word_embeddings": {
                "num_tokens": len(frequent),
                "mean_cosine": diagnostics.mean_pairwise_cosine(table[frequent]),
                "top5_pc_variance_share": diagnostics.top_pc_variance_share(table[frequent])},
            "probes": probes}


def load_data(config, tokenizer):
    """(train TaskSplit, dev TaskSplit, task name) of the configured task dir."""
    name = diagnose_inputs.task_name_for(config.task_dir, config.task)
    task = diagnose_inputs.single_sentence_task(name)
    splits = []
    for split, keep in (("train", config.train_examples), ("dev", config.dev_examples)):
        path = os.path.join(config.task_dir, f"{split}.tsv")
        if not os.path.isfile(path):
            raise cli.UserError(f"{path} does not exist; --task-dir must hold train.tsv "
                                "and dev.tsv of a GLUE single-sentence task.")
        splits.append(diagnose_inputs.read_split(task, path, keep, f"{config.seed}:{name}:"
                                                 f"{split}", tokenizer,
                                                 config.max_seq_length - 2))
    return splits[0], splits[1], name


def frequent_task_tokens(args, hparams):
    """The surgery's --fresh-frequent-rows token ids: the most frequent word pieces of
    the task's train.tsv under the model's vocab ([] when not asked for)."""
    if args.fresh_frequent_rows < 0:
        raise cli.UserError(f"--fresh-frequent-rows must be >= 0, got "
                            f"{args.fresh_frequent_rows}.")
    if not args.fresh_frequent_rows:
        return []
    specs = diagnose_inputs.resolve_inits([args.source], hparams)
    vocab_file = args.vocab_file or diagnose_inputs.default_vocab_file(
        specs, os.path.join(SHARED, "vocab", "vocab.txt"))
    tokenizer = tokenization.FullTokenizer(vocab_file,
                                           specs[0].hparams.get("do_lower_case", True))
    diagnose_inputs.check_vocab_fits(specs, tokenizer)
    name = diagnose_inputs.task_name_for(args.task_dir, args.task)
    path = os.path.join(args.task_dir, "train.tsv")
    if not os.path.isfile(path):
        raise cli.UserError(f"{path} does not exist; --task-dir must hold the train.tsv "
                            "of a GLUE single-sentence task.")
    train = diagnose_inputs.read_split(diagnose_inputs.single_sentence_task(name), path,
                                       None, f"{args.seed}:{name}:train", tokenizer, 510)
    return diagnostics.frequent_token_ids(train.token_ids, args.fresh_frequent_rows,
                                          exclude=[tokenizer.vocab["[UNK]"]])


def short_name(init):
    """A table label: `random`, or the last two path parts (e128/model.ckpt-1000)."""
    parts = os.path.normpath(init).split(os.sep)
    return init if init == diagnose_inputs.RANDOM else os.path.join(*parts[-2:])


def model_summary(bert_config):
    return {field: getattr(bert_config, field) for field in (
        "num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size",
        "embedding_size", "vocab_size")}


def run_analysis(config):
    """Analyses every init; returns the report dict (also written to config.output)."""
    specs = diagnose_inputs.resolve_inits(list(config.inits), config.model_hparams)
    vocab_file = config.vocab_file or diagnose_inputs.default_vocab_file(
        specs, os.path.join(SHARED, "vocab", "vocab.txt"))
    tokenizer = tokenization.FullTokenizer(vocab_file,
                                           specs[0].hparams.get("do_lower_case", True))
    diagnose_inputs.check_vocab_fits(specs, tokenizer)
    train, dev, task = load_data(config, tokenizer)
    majority = int(np.bincount(train.labels).argmax())
    report = {"task": task, "task_dir": os.path.abspath(config.task_dir),
              "vocab_file": os.path.abspath(vocab_file),
              "settings": config_utils.config_to_dict(config),
              "examples": {"train": len(train.labels), "dev": len(dev.labels),
                           "stats": min(config.stats_examples, len(dev.labels)),
                           "bad_rows_skipped": train.bad_rows + dev.bad_rows},
              "majority_class_dev_accuracy": float(np.mean(dev.labels == majority)),
              "inits": []}
    for spec in specs:
        log(f"Analysing {spec.name} ...")
        model = diagnose_inputs.build_encoder(spec, config.seed)
        report["inits"].append({"init": spec.name, "checkpoint": spec.checkpoint,
                                "model": model_summary(spec.bert_config),
                                **analyse_init(model, (train, dev), tokenizer, config)})
    io_utils.write_json(report, config.output, indent=2)
    return report


def _cell(value, width=9):
    return f"{value:>{width}.3f}" if value is not None else f"{'-':>{width}}"


def format_init(entry, report):
    """The text block of one init: per-layer table, entropies, embeddings, probes."""
    m = entry["model"]
    lines = [f"== {entry['init']}: {m['num_hidden_layers']} layers x {m['hidden_size']} "
             f"({m['num_attention_heads']} heads, embedding {m['embedding_size']})"
             + ("" if entry["checkpoint"] else f", random init seed "
                f"{report['settings']['seed']}"),
             f"{'layer':<11}{'tok-cos':>9}{'cls-cos':>9}{'H(cls)':>9}{'H(tok)':>9}"
             f"{'cls->cls':>9}"]
    for row in entry["layers"]:
        label = "embeddings" if row["layer"] == 0 else f"layer {row['layer']}"
        lines.append(f"{label:<11}" + "".join(_cell(row.get(k)) for k in (
            "token_cosine", "cls_cosine", "cls_attention_entropy",
            "token_attention_entropy", "cls_self_weight")))
    u, w, p, n = (entry["uniform_entropy"], entry["word_embeddings"], entry["probes"],
                  report["examples"])
    lines += [f"uniform-attention entropy: [CLS] {u['cls']:.3f}, tokens {u['tokens']:.3f} "
              f"(first {n['stats']} dev examples)",
              f"word embeddings ({w['num_tokens']} most frequent train tokens): mean cosine "
              f"{w['mean_cosine']:.3f}, top-5 PC variance share "
              f"{w['top5_pc_variance_share']:.3f}",
              f"linear probes, dev accuracy ({n['train']} train / {n['dev']} dev, majority "
              f"{report['majority_class_dev_accuracy']:.3f}): [CLS] {p['cls']:.3f}, "
              f"mean-pool {p['mean_pool']:.3f}, bag-of-embeddings "
              f"{p['bag_of_embeddings']:.3f}"]
    return "\n".join(lines)


def format_summary(report):
    """One row per init: top-layer geometry/attention, embedding stats, probes."""
    names = [short_name(e["init"]) for e in report["inits"]]
    width = max(len("init"), *map(len, names)) + 2
    header = (f"{'init':<{width}}{'tok-cos':>9}{'cls-cos':>9}{'H(cls)':>9}{'uniform':>9}"
              f"{'emb-cos':>9}{'emb-PC5':>9}{'p-cls':>9}{'p-mean':>9}{'p-bow':>9}")
    lines = [f"summary ({report['task']}; top encoder layer; probes = dev accuracy)", header]
    for name, e in zip(names, report["inits"]):
        top, w, p = e["layers"][-1], e["word_embeddings"], e["probes"]
        lines.append(f"{name:<{width}}" + "".join(_cell(v) for v in (
            top["token_cosine"], top["cls_cosine"], top.get("cls_attention_entropy"),
            e["uniform_entropy"]["cls"], w["mean_cosine"], w["top5_pc_variance_share"],
            p["cls"], p["mean_pool"], p["bag_of_embeddings"])))
    return "\n".join(lines)


def make_config(args):
    return DiagnoseConfig(
        inits=tuple(args.inits),
        model_hparams=diagnose_inputs.check_model_hparams(args.hparams),
        task_dir=args.task_dir, task=args.task, train_examples=args.train_examples,
        dev_examples=args.dev_examples, stats_examples=args.stats_examples,
        max_seq_length=args.max_seq_length, frequent_tokens=args.frequent_tokens,
        vocab_file=args.vocab_file, seed=args.seed, output=args.output)


def main(argv=None):
    args = parse_args(argv)
    if args.command == "surgery":
        hparams = diagnose_inputs.check_model_hparams(args.hparams)
        checkpoint_surgery.run_surgery(
            args.source, args.output_dir, hparams, keep=args.keep, scale_qk=args.scale_qk,
            seed=args.seed, overwrite=args.overwrite,
            fresh_rows=frequent_task_tokens(args, hparams))
        return
    report = run_analysis(make_config(args))
    for entry in report["inits"]:
        log("\n" + format_init(entry, report))
    log("\n" + format_summary(report))
    log(f"\nWrote {os.path.abspath(args.output)}")


if __name__ == "__main__":
    cli.run_main(main)
