"""Throughput of pre-training dataset building: pure-Python vs fast tokenizer path.

On a fixed slice of the shared corpus (the first --megabytes, spread over its files)
and for each tokenizer path it prints
  * tokenizer setup time (one-off per process),
  * tokenization alone: input MB/s and tokens/s, batched as the builder does,
  * the whole build (1 process, max_seq_length 128, setup included): MB/s, tokens/s,
    examples/s,
then the fast/python ratios and whether both builds wrote byte-identical shards.

  python3 bench/bench_build_dataset.py [--megabytes 26] [--corpus-dir DIR] [--vocab-file F]
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import build_pretraining_dataset  # pylint: disable=wrong-import-position
from pretrain import dataset_builder  # pylint: disable=wrong-import-position

DATA = REPO.parent / "shared" / "data"


def make_slice(corpus_dir: Path, megabytes: float, out_dir: Path) -> int:
    """Copies the first `megabytes` of each corpus file (cut at a line end); returns bytes."""
    budget = int(megabytes * 1e6)
    files = sorted(p for p in corpus_dir.iterdir() if p.is_file())
    per_file = budget // len(files)
    total = 0
    for path in files:
        data = path.read_bytes()[:per_file]
        data = data[:data.rfind(b"\n") + 1] if b"\n" in data else data
        (out_dir / path.name).write_bytes(data)
        total += len(data)
    return total


def time_tokenizer(config, corpus: Path) -> tuple[float, float, int]:
    """Returns (setup seconds, tokenization seconds, tokens) over the corpus lines, read
    and batched as the builder does."""
    chunks = [[line for line in lines if line] for path in sorted(corpus.iterdir())
              for lines in dataset_builder.read_stripped_lines(str(path))]
    start = time.perf_counter()
    tokenize, _, _ = dataset_builder.make_line_tokenizer(config)
    setup = time.perf_counter() - start
    start, tokens = time.perf_counter(), 0
    for lines in chunks:
        tokens += len(tokenize(lines)[0])
    return setup, time.perf_counter() - start, tokens


def time_build(config, corpus: Path) -> tuple[float, dict]:
    start = time.perf_counter()
    inputs = build_pretraining_dataset.list_corpus_files(str(corpus))
    metadata = dataset_builder.build_dataset(config, inputs)
    return time.perf_counter() - start, metadata


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus-dir", default=str(DATA / "corpus"))
    parser.add_argument("--vocab-file", default=str(DATA / "vocab" / "vocab.txt"))
    parser.add_argument("--megabytes", type=float, default=26.0,
                        help="Size of the corpus slice (spread over all corpus files).")
    parser.add_argument("--repeats", type=int, default=2, help="Runs per measurement.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "corpus").mkdir()
        size = make_slice(Path(args.corpus_dir), args.megabytes, tmp / "corpus")
        dataset_builder.resolve_tokenizer(  # one-off imports (tensorflow_text) first
            dataset_builder.BuildConfig(vocab_file=args.vocab_file, output_dir=str(tmp / "x")))
        mb, tok_secs, build_secs = size / 1e6, {}, {}
        for kind in ("python", "fast"):
            config = dataset_builder.BuildConfig(vocab_file=args.vocab_file, num_out_files=8,
                                                 output_dir=str(tmp / kind), tokenizer=kind)
            # Best of --repeats: the machine is shared, the minimum is the least disturbed.
            setup, tok_secs[kind], tokens = min((time_tokenizer(config, tmp / "corpus")
                                                 for _ in range(args.repeats)), key=lambda r: r[1])
            build_secs[kind], meta = min((time_build(config, tmp / "corpus")
                                          for _ in range(args.repeats)), key=lambda r: r[0])
            print(f"{kind:>6}: setup {setup:5.2f} s | tokenize {mb / tok_secs[kind]:6.2f} MB/s "
                  f"{tokens / tok_secs[kind]:10,.0f} tokens/s | build {build_secs[kind]:6.2f} s "
                  f"{mb / build_secs[kind]:6.2f} MB/s {tokens / build_secs[kind]:10,.0f} tokens/s "
                  f"{meta['num_examples'] / build_secs[kind]:7,.0f} examples/s")
        print(f"corpus slice {mb:.1f} MB, {tokens:,} tokens, {meta['num_examples']:,} examples")
        identical = all((tmp / "fast" / name).read_bytes() == (tmp / "python" / name).read_bytes()
                        for name in meta["examples_per_file"])
        print(f"fast/python speed-up: tokenize {tok_secs['python'] / tok_secs['fast']:.2f}x, "
              f"build {build_secs['python'] / build_secs['fast']:.2f}x; "
              f"shards identical: {identical}")


if __name__ == "__main__":
    main()
