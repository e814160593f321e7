"""Learns a BERT-convention WordPiece vocab.txt from raw text.

Layout of the result (ids = line numbers):
  [PAD] [UNK] [CLS] [SEP] [MASK]   -- [PAD] is id 0, the padding id everywhere
  every kept character c, then "##c" for each of them
  merged pieces, in the order a deterministic BPE learner finds them

Words come from the reference BasicTokenizer (so lower-casing, accent stripping and
punctuation splitting match tokenization at training time). The learner starts from
characters, "c" at a word start and "##c" inside a word, and repeatedly merges the most
frequent adjacent pair (ties broken by the pieces' text), e.g. "t" + "##he" -> "the",
"##in" + "##g" -> "##ing". Since every kept character is in the vocab in both forms,
the greedy WordPiece tokenizer can split every word made of kept characters without
[UNK]; frequent words end up as single tokens.
"""

import argparse
import collections
import heapq
import os
import sys
from collections.abc import Iterable

from model import tokenization
from util import io_utils
from util.logging_utils import log

# The reference WordpieceTokenizer maps longer words to [UNK] anyway.
_MAX_WORD_CHARS = 200


def count_words(lines: Iterable[str], do_lower_case: bool = True,
                strip_accents: bool = True) -> collections.Counter:
    """Counts the BasicTokenizer words of all lines."""
    basic = tokenization.BasicTokenizer(do_lower_case=do_lower_case, strip_accents=strip_accents)
    counts = collections.Counter()
    for line in lines:
        counts.update(basic.tokenize(line))
    return counts


def _select_characters(word_counts: dict[str, int], budget: int) -> list[str]:
    """Characters by frequency (ties: code point), at most `budget` of them."""
    char_counts = collections.Counter()
    for word, count in word_counts.items():
        for char in word:
            char_counts[char] += count
    ranked = sorted(char_counts, key=lambda c: (-char_counts[c], c))
    return sorted(ranked[:budget])


class _PairMerger:
    """Incremental BPE over weighted words: pair counts, an index and a lazy heap."""

    def __init__(self, words: list[list[str]], counts: list[int]):
        self.words, self.counts = words, counts
        self.pair_counts = collections.Counter()
        self.where = collections.defaultdict(set)  # pair -> indices of words holding it
        for index, symbols in enumerate(words):
            for pair in zip(symbols, symbols[1:]):
                self.pair_counts[pair] += counts[index]
                self.where[pair].add(index)
        self.heap = [(-n, a, b) for (a, b), n in self.pair_counts.items()]
        heapq.heapify(self.heap)

    def best_pair(self, min_frequency: int) -> tuple[str, str] | None:
        """The most frequent pair (ties: smallest texts), or None below min_frequency."""
        while self.heap:
            negative_count, a, b = self.heap[0]
            if self.pair_counts.get((a, b), 0) != -negative_count:  # stale entry
                heapq.heappop(self.heap)
                continue
            return (a, b) if -negative_count >= min_frequency else None
        return None

    def merge(self, pair: tuple[str, str]) -> str:
        """Replaces every occurrence of `pair` by the joined piece; returns it."""
        a, b = pair
        joined = a + b[2:]  # b is always a "##" continuation piece
        changed = set()
        for index in sorted(self.where.pop(pair, ())):
            old = self.words[index]
            new, i = [], 0
            while i < len(old):
                if i + 1 < len(old) and old[i] == a and old[i + 1] == b:
                    new.append(joined)
                    i += 2
                else:
                    new.append(old[i])
                    i += 1
            count = self.counts[index]
            for p in zip(old, old[1:]):
                self.pair_counts[p] -= count
                changed.add(p)
            for p in zip(new, new[1:]):
                self.pair_counts[p] += count
                changed.add(p)
            old_pairs, new_pairs = set(zip(old, old[1:])), set(zip(new, new[1:]))
            for p in old_pairs - new_pairs - {pair}:
                self.where[p].discard(index)
            for p in new_pairs:
                self.where[p].add(index)
            self.words[index] = new
        for p in changed:
            if self.pair_counts[p] <= 0:
                del self.pair_counts[p]
            else:
                heapq.heappush(self.heap, (-self.pair_counts[p], p[0], p[1]))
        return joined


def build_vocab(lines_iterable: Iterable[str], vocab_size: int, do_lower_case: bool = True,
                strip_accents: bool = True, min_frequency: int = 2) -> list[str]:
    """Learns a WordPiece vocab from text lines.

    Args:
      lines_iterable: raw text lines (any iterable of str).
      vocab_size: maximum number of tokens, special tokens included; fewer are
        returned when the text has no more pairs seen min_frequency times.
      do_lower_case, strip_accents: as for the tokenizer that will use the vocab.
      min_frequency: a pair seen fewer times is never merged.
    Returns:
      The tokens in id order, starting with tokenization.SPECIAL_TOKENS.
    Raises:
      ValueError: vocab_size leaves no room for characters, or the text is empty.
    """
    specials = list(tokenization.SPECIAL_TOKENS)
    if vocab_size < len(specials) + 2:
        raise ValueError(f"vocab_size {vocab_size} is too small: it must hold the "
                         f"{len(specials)} special tokens and some characters.")
    word_counts = {w: n for w, n in count_words(lines_iterable, do_lower_case,
                                                strip_accents).items()
                   if len(w) <= _MAX_WORD_CHARS}
    if not word_counts:
        raise ValueError("No words in the text given to build_vocab: pass non-empty text.")
    # Characters take at most half of the free space, so merges get the rest.
    chars = _select_characters(word_counts, (vocab_size - len(specials)) // 4)
    kept = set(chars)
    vocab = specials + chars + ["##" + c for c in chars]
    seen = set(vocab)
    # Sorted so that the learner's input, hence its output, is independent of hashing.
    usable = sorted(w for w in word_counts if set(w) <= kept)
    merger = _PairMerger([[w[0]] + ["##" + c for c in w[1:]] for w in usable],
                         [word_counts[w] for w in usable])
    while len(vocab) < vocab_size:
        pair = merger.best_pair(min_frequency)
        if pair is None:
            break
        piece = merger.merge(pair)
        if piece not in seen:  # two merge paths can spell the same piece
            seen.add(piece)
            vocab.append(piece)
    return vocab


def read_lines(paths: list[str]) -> Iterable[str]:
    """The lines of the text files, in order (undecodable bytes replaced)."""
    for path in paths:
        with open(path, encoding="utf-8", errors="replace", newline="\n") as f:
            yield from f


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--corpus-dir", help="Directory of raw text files (not recursive).")
    source.add_argument("--input-files", nargs="+", help="Raw text files.")
    parser.add_argument("--output", default="vocab.txt", help="Where to write the vocab.")
    parser.add_argument("--vocab-size", type=int, default=30522,
                        help="Maximum number of tokens (BERT's is 30522).")
    parser.add_argument("--min-frequency", type=int, default=2,
                        help="Pairs seen fewer times are not merged.")
    parser.add_argument("--do-lower-case", dest="do_lower_case", action="store_true")
    parser.add_argument("--no-lower-case", dest="do_lower_case", action="store_false")
    parser.set_defaults(do_lower_case=True)
    args = parser.parse_args(argv)
    if args.corpus_dir:
        if not os.path.isdir(args.corpus_dir):
            print(f"Error: --corpus-dir {args.corpus_dir} is not a directory.", file=sys.stderr)
            return 2
        paths = sorted(os.path.join(args.corpus_dir, n) for n in os.listdir(args.corpus_dir)
                       if not n.startswith(".")
                       and os.path.isfile(os.path.join(args.corpus_dir, n)))
    else:
        paths = args.input_files
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing or not paths:
        print(f"Error: no such input file(s): {', '.join(missing) or '(none given)'}.",
              file=sys.stderr)
        return 2
    try:
        vocab = build_vocab(read_lines(paths), args.vocab_size, args.do_lower_case,
                            min_frequency=args.min_frequency)
    except ValueError as err:
        print(f"Error: {err}", file=sys.stderr)
        return 2
    io_utils.write_text("\n".join(vocab) + "\n", args.output)
    log(f"Wrote {len(vocab)} tokens to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
