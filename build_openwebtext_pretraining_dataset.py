"""Preprocesses the OpenWebText corpus for ELECTRA pre-training.

Reads <data-dir>/openwebtext/*.xz (each an xz-compressed tar of text files, one
document per file; blank lines do not separate documents) with <data-dir>/vocab.txt
and writes <data-dir>/pretrain_tfrecords. See pretrain/dataset_builder.py.
"""

import argparse
import os
import sys

import build_pretraining_dataset
from pretrain import dataset_builder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", required=True,
                        help="Location of data (vocab file, corpus, etc).")
    build_pretraining_dataset.add_common_flags(parser)
    args = parser.parse_args(argv)
    try:
        config = build_pretraining_dataset.config_from_args(
            args, vocab_file=os.path.join(args.data_dir, "vocab.txt"),
            output_dir=os.path.join(args.data_dir, "pretrain_tfrecords"),
            blanks_separate_docs=False)
        archives = dataset_builder.list_owt_archives(args.data_dir)
        dataset_builder.build_dataset(config, archives, input_kind="owt")
    except dataset_builder.DatasetError as err:
        print(f"Error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
