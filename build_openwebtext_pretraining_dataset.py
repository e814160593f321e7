"""Preprocesses the OpenWebText corpus for ELECTRA pre-training.

Reads <data-dir>/openwebtext/*.xz (each an xz-compressed tar of text files, one
document per file; blank lines do not separate documents) with <data-dir>/vocab.txt
and writes <data-dir>/pretrain_tfrecords. All writing is shared with
build_pretraining_dataset.py (pretrain/dataset_builder.py); this script adds only the
archive listing and a safe extraction.
"""

import argparse
import os
import random
import sys
import tarfile
import tempfile
from collections.abc import Iterator

import build_pretraining_dataset
from pretrain import dataset_builder
from pretrain.dataset_builder import DatasetError


def list_owt_archives(data_dir: str) -> list[str]:
    """<data_dir>/openwebtext/*.xz, sorted by name."""
    owt_dir = os.path.join(data_dir, "openwebtext")
    names = sorted(os.listdir(owt_dir)) if os.path.isdir(owt_dir) else []
    archives = [os.path.join(owt_dir, n) for n in names if n.endswith(".xz")]
    if not archives:
        raise DatasetError(f"No *.xz archives in {owt_dir}: extract openwebtext.tar.xz in "
                           f"{data_dir} first (tar xf openwebtext.tar.xz).")
    return archives


def _regular_files_only(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
    """tarfile's "data" filter (no absolute paths, no "..", no links leaving dest, no
    devices), then skips everything but regular files."""
    member = tarfile.data_filter(member, dest)
    return member if member.isfile() else None


def owt_archive_documents(archive: str, rng: random.Random) -> Iterator[str]:
    """Extracts one archive to a fresh temp dir; yields its files in a random order.

    The temp dir (one per job and archive) is removed when the generator finishes or
    is closed.
    """
    with tempfile.TemporaryDirectory(prefix="electra_owt_") as tmp:
        try:
            with tarfile.open(archive, "r:xz") as tar:
                tar.extractall(tmp, filter=_regular_files_only)
        except tarfile.FilterError as err:
            raise DatasetError(f"Refusing to extract {archive}: unsafe member ({err}).") from None
        except (tarfile.TarError, EOFError, OSError) as err:  # lzma.LZMAError is an OSError
            raise DatasetError(f"Cannot read {archive} ({err}): each openwebtext/*.xz must be "
                               "an xz-compressed tar of text files.") from None
        files = sorted(os.path.join(root, name) for root, _, names in os.walk(tmp)
                       for name in names)
        rng.shuffle(files)  # as the original, which shuffled the extracted files
        yield from files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", required=True,
                        help="Location of data (vocab file, corpus, etc).")
    build_pretraining_dataset.add_common_flags(parser)
    args = parser.parse_args(argv)
    try:
        config = build_pretraining_dataset.config_from_args(
            args, vocab_file=os.path.join(args.data_dir, "vocab.txt"),
            output_dir=os.path.join(args.data_dir, "pretrain_tfrecords"),
            blanks_separate_docs=False)
        dataset_builder.build_dataset(config, list_owt_archives(args.data_dir),
                                      documents_of=owt_archive_documents)
    except DatasetError as err:
        print(f"Error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
