"""Tokenizer throughput: pure-Python FullTokenizer vs the tensorflow_text FastTokenizer.

Tokenizes every line of the shared corpus to ids with each path and prints MB/s,
tokens/s and lines/s per core (bytes over the process CPU time, so the numbers hold on
a busy machine; wall-clock rates are shown too), the fast/pure speed-up, and whether the
two outputs are identical. With bert-tensorflow installed it also times BERT's reference
tokenizer on a sample of lines, for scale. It asserts nothing about time.

  python3 bench/bench_tokenization.py [--cased] [--repeats 2] [--reference-lines 20000]
"""

import argparse
import gc
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from model import fast_tokenization, tokenization  # pylint: disable=wrong-import-position

DATA = REPO.parent / "shared" / "data"


def timed(fn, lines):
    """Runs fn(lines) with the cyclic GC paused; returns (ids, cpu seconds, wall seconds)."""
    gc.collect()
    gc.disable()
    try:
        cpu, wall = time.process_time(), time.perf_counter()
        ids = fn(lines)
        return ids, time.process_time() - cpu, time.perf_counter() - wall
    finally:
        gc.enable()


def report(name, n_bytes, n_lines, n_tokens, cpu, wall):
    """Prints one result row and returns the per-core MB/s."""
    mb_s = n_bytes / cpu / 1e6
    print(f"{name:<34} {mb_s:8.2f} MB/s {n_tokens / cpu / 1e6:7.3f} M tokens/s "
          f"{n_lines / cpu / 1e3:8.1f} k lines/s  (cpu {cpu:6.2f} s, wall {wall:6.2f} s)")
    return mb_s


def bench_reference(vocab_file, lower, lines):
    """Per-core MB/s of bert-tensorflow's FullTokenizer on `lines`, or None if missing."""
    try:
        from bert import tokenization as bert_tok  # pylint: disable=import-outside-toplevel
    except ImportError:
        print("reference (bert-tensorflow) not installed: skipped")
        return None
    # Its preserve_token reads an absl flag that is only parsed inside an absl app; the
    # flag's default (False) means "never preserve".
    bert_tok.preserve_token = lambda token, vocab: False
    ref = bert_tok.FullTokenizer(vocab_file, do_lower_case=lower)
    fn = lambda ls: [ref.convert_tokens_to_ids(ref.tokenize(line)) for line in ls]  # noqa: E731
    ids, cpu, wall = timed(fn, lines)
    n_bytes = sum(len(line.encode("utf-8")) for line in lines)
    return report(f"reference ({len(lines)} lines)", n_bytes, len(lines),
                  sum(map(len, ids)), cpu, wall)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus-dir", default=str(DATA / "corpus"))
    parser.add_argument("--vocab-file", default=str(DATA / "vocab" / "vocab.txt"))
    parser.add_argument("--cased", action="store_true", help="do_lower_case=False")
    parser.add_argument("--repeats", type=int, default=2,
                        help="Timed passes per path; the first pass starts with empty caches.")
    parser.add_argument("--reference-lines", type=int, default=20000,
                        help="Lines (every k-th) timed with BERT's reference; 0 to skip.")
    args = parser.parse_args()
    lower = not args.cased
    lines = []
    for path in sorted(Path(args.corpus_dir).glob("*.txt")):
        lines += path.read_text(encoding="utf-8").split("\n")
    n_bytes = sum(len(line.encode("utf-8")) for line in lines)
    print(f"corpus: {len(lines)} lines, {n_bytes / 1e6:.1f} MB; do_lower_case={lower}")

    full = tokenization.FullTokenizer(args.vocab_file, do_lower_case=lower)
    paths = {"pure": lambda ls: [full.text_to_ids(line) for line in ls]}
    if fast_tokenization.available():
        fast = fast_tokenization.FastTokenizer(args.vocab_file, do_lower_case=lower)
        paths["fast"] = fast.tokenize_to_ids
        paths["fast (numpy arrays)"] = fast.tokenize_to_arrays
    else:
        print("tensorflow_text not installed: fast path skipped")
    best, outputs = {}, {}
    for name, fn in paths.items():
        for rep in range(args.repeats):
            ids, cpu, wall = timed(fn, lines)
            n_tokens = len(ids[0]) if name.endswith("arrays)") else sum(map(len, ids))
            label = f"{name} pass {rep + 1}" + (" (cold)" if rep == 0 else "")
            best[name] = max(best.get(name, 0.0),
                             report(label, n_bytes, len(lines), n_tokens, cpu, wall))
        outputs[name] = ids
    if "fast" in outputs:
        print(f"identical ids (fast vs pure): {outputs['fast'] == outputs['pure']}")
        print(f"speed-up per core, best passes: fast/pure = {best['fast'] / best['pure']:.2f}x, "
              f"arrays/pure = {best['fast (numpy arrays)'] / best['pure']:.2f}x")
    if args.reference_lines:
        step = max(1, len(lines) // args.reference_lines)
        ref_mb_s = bench_reference(args.vocab_file, lower, lines[::step])
        if ref_mb_s:
            print(f"speed-up per core over the reference: pure = {best['pure'] / ref_mb_s:.1f}x"
                  + (f", fast = {best['fast'] / ref_mb_s:.1f}x" if "fast" in best else ""))


if __name__ == "__main__":
    main()
