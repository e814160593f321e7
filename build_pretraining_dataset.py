"""Writes out text data as tfrecords that ELECTRA can be pre-trained on.

Every file directly in --corpus-dir is read (sorted; file k goes to job
k % --num-processes); blank lines separate documents. See pretrain/dataset_builder.py.
"""

import argparse
import os
import sys

from pretrain import dataset_builder
from pretrain.dataset_builder import DatasetError

_TRUE, _FALSE = ("true", "yes", "1", "t", "y"), ("false", "no", "0", "f", "n")


def str_to_bool(text: str) -> bool:
    """Parses true/false/yes/no/1/0 (the original's type=bool took "false" as True)."""
    if text.strip().lower() in _TRUE:
        return True
    if text.strip().lower() in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, yes/no or 1/0, got {text!r}")


def list_corpus_files(corpus_dir: str) -> list[str]:
    """The regular, non-hidden files directly in corpus_dir, sorted by name."""
    if not os.path.isdir(corpus_dir):
        raise DatasetError(f"--corpus-dir {corpus_dir} is not a directory; pass the "
                           "directory holding the raw text files.")
    paths = [os.path.join(corpus_dir, n) for n in sorted(os.listdir(corpus_dir))
             if not n.startswith(".") and os.path.isfile(os.path.join(corpus_dir, n))]
    if not paths:
        raise DatasetError(f"--corpus-dir {corpus_dir} holds no text files (subdirectories "
                           "are not searched); put the corpus files directly in it.")
    if all(os.path.getsize(p) == 0 for p in paths):
        raise DatasetError(f"--corpus-dir {corpus_dir} holds only empty files; there is no "
                           "text to build examples from.")
    return paths


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    """Flags shared with build_openwebtext_pretraining_dataset.py."""
    parser.add_argument("--max-seq-length", default=128, type=int,
                        help="Number of tokens per example.")
    parser.add_argument("--num-processes", default=1, type=int,
                        help="Parallelize across multiple processes.")
    parser.add_argument("--num-out-files", default=1000, type=int,
                        help="Number of output tfrecord shards (1000 as the original).")
    parser.add_argument("--seed", default=0, type=int,
                        help="Random seed: same inputs, flags and seed give identical output.")
    parser.add_argument("--tokenizer", default="auto", choices=dataset_builder.TOKENIZERS,
                        help="auto: the fast (tensorflow-text) tokenizer if available, which "
                             "gives identical ids; python: the reference implementation.")
    parser.add_argument("--do-lower-case", dest="do_lower_case", action="store_true",
                        help="Lower case input text.")
    parser.add_argument("--no-lower-case", dest="do_lower_case", action="store_false",
                        help="Don't lower case input text.")
    parser.add_argument("--do-strip-accents", dest="strip_accents", action="store_true",
                        help="Strip accents.")
    parser.add_argument("--no-strip-accents", dest="strip_accents", action="store_false",
                        help="Don't strip accents.")
    parser.set_defaults(do_lower_case=True, strip_accents=True)


def config_from_args(args: argparse.Namespace, vocab_file: str, output_dir: str,
                     blanks_separate_docs: bool) -> dataset_builder.BuildConfig:
    return dataset_builder.BuildConfig(
        vocab_file=vocab_file, output_dir=output_dir, max_seq_length=args.max_seq_length,
        num_processes=args.num_processes, num_out_files=args.num_out_files,
        blanks_separate_docs=blanks_separate_docs, do_lower_case=args.do_lower_case,
        strip_accents=args.strip_accents, seed=args.seed, tokenizer=args.tokenizer)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--corpus-dir", required=True,
                        help="Location of pre-training text files.")
    parser.add_argument("--vocab-file", required=True, help="Location of vocabulary file.")
    parser.add_argument("--output-dir", required=True, help="Where to write out the tfrecords.")
    parser.add_argument("--blanks-separate-docs", default=True, type=str_to_bool,
                        help="Whether blank lines indicate document boundaries (true/false).")
    add_common_flags(parser)
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args, args.vocab_file, args.output_dir,
                                  args.blanks_separate_docs)
        dataset_builder.build_dataset(config, list_corpus_files(args.corpus_dir))
    except DatasetError as err:
        print(f"Error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
