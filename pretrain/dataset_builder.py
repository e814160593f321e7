"""Turns raw text into ELECTRA pre-training TFRecords (spec d.1, d.2), in parallel.

Shared by build_pretraining_dataset.py (a directory of text files, blank lines separate
documents) and build_openwebtext_pretraining_dataset.py (xz tar archives, one document
per member file). Output: `pretrain_data.tfrecord-<i>-of-<n>` shards plus the metadata
file `pretrain_data.json` (flags, counts, each shard's examples and bytes), written
last, which marks the dataset complete.

Determinism: job j draws all its randomness (file order, target lengths, segment
splits) from `random.Random(f"{seed}:{j}")`, so the same inputs, flags and process
count give byte-identical shards. Shards are written under temporary names and renamed
by the parent only after every job succeeded, so a killed run leaves no final-named
shard from that run and a rerun produces the same dataset as an uninterrupted run.
"""

import concurrent.futures
import dataclasses
import itertools
import multiprocessing
import os
import random
import re
from collections.abc import Callable, Iterable

import numpy as np
import tensorflow as tf

from model import fast_tokenization, tokenization
from pretrain import example_packing
from util import io_utils
from util.logging_utils import Progress, log

SHARD_PREFIX = "pretrain_data.tfrecord"
METADATA_NAME = "pretrain_data.json"
METADATA_FORMAT = "electra-pretraining-tfrecords"
TOOL_VERSION = 1
MIN_SEQ_LENGTH, MAX_SEQ_LENGTH = 8, 512
TOKENIZERS = ("auto", "fast", "python")
# Characters of text tokenised and packed at once: amortises the per-call costs of the
# fast tokenizer and of numpy, while keeping a job's memory to a few tens of MB.
CHUNK_CHARS = 1 << 22
# Names this tool writes: shards, metadata, and their temporaries (io_utils.temp_name_for).
_OURS = re.compile(r"^(\.)?pretrain_data\.(tfrecord-\d+-of-\d+|json)(?(1)"
                   + re.escape(io_utils.TEMP_MARKER) + r".*|)$")


class DatasetError(ValueError):
    """Bad input or output location for dataset building; the message names the fix."""


def shard_name(index: int, num_out_files: int) -> str:
    return f"{SHARD_PREFIX}-{index}-of-{num_out_files}"


@dataclasses.dataclass(frozen=True)
class BuildConfig:
    """Flags shared by both build scripts (the original's names and defaults)."""

    vocab_file: str  # BERT-convention WordPiece vocab
    output_dir: str  # where the shards and pretrain_data.json go
    max_seq_length: int = 128  # tokens per example, incl. [CLS]/[SEP]
    num_processes: int = 1  # parallel jobs; job j reads inputs k with k % n == j
    num_out_files: int = 1000  # shards; job j writes shards i with i % n == j
    blanks_separate_docs: bool = True  # blank lines end a document
    do_lower_case: bool = True  # lower-case input text
    strip_accents: bool = True  # with do_lower_case, drop accents
    seed: int = 0  # makes file order, target lengths and splits reproducible
    tokenizer: str = "auto"  # auto (fast if available) | fast | python

    def __post_init__(self):
        if not MIN_SEQ_LENGTH <= self.max_seq_length <= MAX_SEQ_LENGTH:
            raise DatasetError(
                f"--max-seq-length {self.max_seq_length} is out of range: use a value in "
                f"[{MIN_SEQ_LENGTH}, {MAX_SEQ_LENGTH}] (512 = BERT's position table).")
        if self.num_processes < 1:
            raise DatasetError(f"--num-processes must be at least 1, got {self.num_processes}.")
        if self.num_out_files < self.num_processes:
            raise DatasetError(
                f"--num-out-files ({self.num_out_files}) must be at least --num-processes "
                f"({self.num_processes}): every job writes its own shards.")
        if self.tokenizer not in TOKENIZERS:
            raise DatasetError(f"--tokenizer must be one of {TOKENIZERS}, got {self.tokenizer!r}.")


def resolve_tokenizer(config: BuildConfig) -> tuple[tokenization.FullTokenizer, str]:
    """Loads the vocab and picks the tokenizer path: "fast" or "python".

    Raises:
      DatasetError: bad vocab, or --tokenizer fast while tensorflow-text is missing.
    """
    try:
        full = tokenization.FullTokenizer(config.vocab_file, do_lower_case=config.do_lower_case,
                                          strip_accents=config.strip_accents)
    except tokenization.VocabError as err:
        raise DatasetError(str(err)) from None
    if config.tokenizer == "python":
        return full, "python"
    if fast_tokenization.available():
        return full, "fast"
    if config.tokenizer == "fast":
        raise DatasetError("--tokenizer fast needs tensorflow-text, which is not importable "
                           "here; install it or use --tokenizer python.")
    return full, "python"


def make_line_tokenizer(config: BuildConfig
                        ) -> tuple[Callable[[list[str]], tuple[np.ndarray, np.ndarray]], dict, str]:
    """Returns (tokenize_lines, vocab token->id, kind).

    tokenize_lines(N lines) -> (ids [total] int32, lengths [N] int64): the lines' ids
    back to back. Both paths give identical ids (tests/test_fast_tokenization.py).
    """
    full, kind = resolve_tokenizer(config)
    if kind == "fast":
        fast = fast_tokenization.FastTokenizer(config.vocab_file, config.do_lower_case,
                                               config.strip_accents)

        def tokenize_fast(lines):
            ids, row_splits = fast.tokenize_to_arrays(lines)
            return ids, np.diff(row_splits)
        return tokenize_fast, full.vocab, kind

    def tokenize_python(lines):
        id_lists = [full.text_to_ids(line) for line in lines]
        return (np.fromiter(itertools.chain.from_iterable(id_lists), np.int32),
                np.fromiter(map(len, id_lists), np.int64, len(id_lists)))
    return tokenize_python, full.vocab, kind


def read_stripped_lines(path: str) -> Iterable[list[str]]:
    """Yields the file's lines, stripped, a chunk of about CHUNK_CHARS at a time.

    newline="\n": lines end only at LF, as with the original's GFile; invalid UTF-8
    becomes U+FFFD, which the tokenizer then drops. Reading chunks and splitting them
    in C is several times faster than iterating over the file's lines.
    """
    with open(path, encoding="utf-8", errors="replace", newline="\n") as f:
        partial: list[str] = []  # a line longer than a chunk, in pieces
        while chunk := f.read(CHUNK_CHARS):
            cut = chunk.rfind("\n")
            if cut < 0:
                partial.append(chunk)
                continue
            lines = ("".join(partial) + chunk[:cut]).split("\n")
            partial = [chunk[cut + 1:]]
            yield [line.strip() for line in lines]
        if "".join(partial):
            yield ["".join(partial).strip()]


class ExampleWriter:
    """Tokenises text files and writes one job's examples round-robin to its shards.

    Lines are buffered across files (a file's end is a document boundary) and
    tokenised, packed and encoded a batch at a time: many small files, as in
    OpenWebText, then cost no more per byte than a few large ones.
    """

    def __init__(self, job_id: int, config: BuildConfig, rng: random.Random):
        self._config = config
        self._tokenize, vocab, self.tokenizer_kind = make_line_tokenizer(config)
        self.packer = example_packing.ExamplePacker(vocab["[CLS]"], vocab["[SEP]"],
                                                    config.max_seq_length, rng)
        self.encoder = example_packing.ExampleEncoder(config.max_seq_length, max(vocab.values()))
        self._temps: dict[str, str] = {}  # final shard name -> temporary path
        self._writers = []
        for i in range(job_id, config.num_out_files, config.num_processes):
            name = shard_name(i, config.num_out_files)
            self._temps[name] = io_utils.temp_name_for(os.path.join(config.output_dir, name))
            self._writers.append(tf.io.TFRecordWriter(self._temps[name]))
        self._lines: list[str] = []  # buffered lines; "" is a document boundary
        self._buffered_chars = 0
        self.n_written = 0
        self.n_tokens = 0

    @property
    def shard_counts(self) -> dict[str, int]:
        """Examples per shard: example n went to this job's shard n % (its shards)."""
        k = len(self._writers)
        return {name: self.n_written // k + (j < self.n_written % k)
                for j, name in enumerate(self._temps)}

    def flush(self) -> None:
        """Tokenises, packs and writes the buffered lines."""
        if not self._lines:
            return
        lines, self._lines, self._buffered_chars = self._lines, [], 0
        is_text = np.fromiter(map(bool, lines), bool, len(lines))
        ids, text_lengths = self._tokenize(list(itertools.compress(lines, is_text)))
        self.n_tokens += len(ids)
        lengths = np.zeros(len(lines), np.int64)
        lengths[is_text] = text_lengths
        records = self.encoder.encode(self.packer.pack(ids, lengths, ~is_text))
        writers, start = self._writers, self.n_written
        for n, record in enumerate(records, start):
            writers[n % len(writers)].write(record)
        self.n_written += len(records)

    def write_examples(self, input_file: str) -> None:
        """Adds the lines of one text file; its end is a document boundary."""
        for lines in read_stripped_lines(input_file):
            if not self._config.blanks_separate_docs:
                lines = [line for line in lines if line]
            self._lines += lines
            self._buffered_chars += sum(map(len, lines))
            if self._buffered_chars >= CHUNK_CHARS:
                self.flush()
        self._lines.append("")

    def finish(self) -> dict[str, str]:
        """Writes what is buffered and closes the shards; returns {temporary: final path}."""
        self.flush()
        return self.close()

    def close(self) -> dict[str, str]:
        """Closes the shards; returns {temporary path: final path}."""
        for writer in self._writers:
            writer.close()
        return {temp: os.path.join(self._config.output_dir, name)
                for name, temp in self._temps.items()}

    def abort(self) -> None:
        """Closes and deletes this job's temporary shards."""
        for temp in self.close():
            if os.path.exists(temp):
                os.remove(temp)


def text_file_documents(path: str, rng: random.Random) -> Iterable[str]:
    """Document source for a corpus: the file itself (blank lines may split it further).

    A document source maps one input to the text files to read, in order, and may
    draw from the job's rng (build_openwebtext_pretraining_dataset shuffles members),
    but only before it yields its first file: an input's files are packed together.
    It must be a module-level function, so that worker processes can unpickle it.
    """
    del rng  # nothing to shuffle
    return [path]


DocumentSource = Callable[[str, random.Random], Iterable[str]]


@dataclasses.dataclass(frozen=True)
class JobResult:
    """What one job wrote; shards still under their temporary names."""

    temp_to_final: dict[str, str]
    shard_counts: dict[str, int]
    num_examples: int
    num_tokens: int  # wordpiece tokens read (before packing; overflow included)
    stats: dict[str, int]  # ExamplePacker.stats


def run_job(job_id: int, config: BuildConfig, inputs: list[str],
            documents_of: DocumentSource = text_file_documents) -> JobResult:
    """One process: inputs k with k % num_processes == job_id, shuffled with its rng."""
    rng = random.Random(f"{config.seed}:{job_id}")
    mine = [path for k, path in enumerate(inputs) if k % config.num_processes == job_id]
    rng.shuffle(mine)
    writer = ExampleWriter(job_id, config, rng)
    progress = Progress(len(mine), "files", prefix=f"Job {job_id}:")
    try:
        for file_no, path in enumerate(mine, 1):
            for document_file in documents_of(path, rng):
                writer.write_examples(document_file)
            # Packing draws from rng too: it must finish this input before the next
            # input's documents_of draws, in the original's order.
            writer.flush()
            progress.update(file_no, extra=f"{writer.n_written} examples written")
        temp_to_final = writer.finish()
    except BaseException:
        writer.abort()
        raise
    return JobResult(temp_to_final, writer.shard_counts, writer.n_written, writer.n_tokens,
                     dict(writer.packer.stats))


def _run_jobs(config: BuildConfig, inputs: list[str], documents_of: DocumentSource
              ) -> list[JobResult]:
    """Runs all jobs; on any failure removes every temp shard and re-raises."""
    if config.num_processes == 1:
        return [run_job(0, config, inputs, documents_of)]
    # "spawn": forking a process that has TensorFlow's threads running is unsafe.
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(config.num_processes, mp_context=context) as pool:
        futures = [pool.submit(run_job, j, config, inputs, documents_of)
                   for j in range(config.num_processes)]
        concurrent.futures.wait(futures)
    errors = [f.exception() for f in futures if f.exception() is not None]
    results = [f.result() for f in futures if f.exception() is None]
    if errors:
        _remove_temporaries(results)
        raise errors[0]
    return results


def _remove_temporaries(results: list[JobResult]) -> None:
    for result in results:
        for temp in result.temp_to_final:
            os.remove(temp)


def prepare_output_dir(output_dir: str) -> None:
    """Creates output_dir, or empties it of this tool's files; refuses foreign files.

    The metadata file goes first, so the directory never looks complete while its
    shards are being replaced. Files this tool did not write are never deleted.
    """
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise DatasetError(f"--output-dir {output_dir} is a file; pass a directory path.")
    if os.path.isdir(output_dir):
        names = sorted(os.listdir(output_dir))
        foreign = [n for n in names
                   if not _OURS.match(n) or not os.path.isfile(os.path.join(output_dir, n))]
        if foreign:
            more = f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
            raise DatasetError(
                f"--output-dir {output_dir} holds files this tool did not write "
                f"({', '.join(foreign[:5])}{more}). "
                "Nothing was deleted: pass a new or empty directory, or move those files away.")
        for name in sorted(names, key=lambda n: n != METADATA_NAME):
            os.remove(os.path.join(output_dir, name))
    io_utils.mkdir(output_dir)


def build_dataset(config: BuildConfig, inputs: list[str],
                  documents_of: DocumentSource = text_file_documents) -> dict:
    """Writes the shards for `inputs`, then the metadata file; returns the metadata.

    Args:
      inputs: input files, in any order (they are sorted by the caller's listing).
      documents_of: maps an input to the text files to read (see text_file_documents).
    Raises:
      DatasetError: bad vocab, bad output dir, or no example could be built.
    """
    full_tokenizer, tokenizer_kind = resolve_tokenizer(config)  # fail fast on a bad vocab
    prepare_output_dir(config.output_dir)
    log(f"Building {config.num_out_files} shards from {len(inputs)} input files with "
        f"{config.num_processes} process(es), {tokenizer_kind} tokenizer")
    results = _run_jobs(config, inputs, documents_of)
    num_examples = sum(r.num_examples for r in results)
    if num_examples == 0:
        _remove_temporaries(results)
        raise DatasetError(f"No examples were built from {len(inputs)} input files: they "
                           "hold no text that the tokenizer keeps.")
    counts, sizes = {}, {}
    for result in results:
        for temp, final in result.temp_to_final.items():
            os.replace(temp, final)
            sizes[os.path.basename(final)] = os.path.getsize(final)
        counts.update(result.shard_counts)
    metadata = {
        "format": METADATA_FORMAT, "tool_version": TOOL_VERSION,
        "max_seq_length": config.max_seq_length, "num_examples": num_examples,
        "num_out_files": config.num_out_files,
        "file_pattern": f"{SHARD_PREFIX}-*-of-{config.num_out_files}",
        "examples_per_file": {shard_name(i, config.num_out_files):
                              counts[shard_name(i, config.num_out_files)]
                              for i in range(config.num_out_files)},
        # Checked before training (pretrain/data_checks.py): a truncated or replaced
        # shard fails at start-up with its name instead of mid-run.
        "bytes_per_file": {shard_name(i, config.num_out_files):
                           sizes[shard_name(i, config.num_out_files)]
                           for i in range(config.num_out_files)},
        "vocab_file": os.path.abspath(config.vocab_file),
        "vocab_sha256": io_utils.file_sha256(config.vocab_file),
        "vocab_size": max(full_tokenizer.vocab.values()) + 1,
        "do_lower_case": config.do_lower_case, "strip_accents": config.strip_accents,
        "blanks_separate_docs": config.blanks_separate_docs, "seed": config.seed,
        "num_processes": config.num_processes, "tokenizer": tokenizer_kind,
        "num_input_files": len(inputs),
        "num_input_tokens": sum(r.num_tokens for r in results),
        "single_segment_examples": sum(r.stats.get("single_segment", 0) for r in results),
        "random_target_lengths": sum(r.stats.get("random_target", 0) for r in results),
    }
    io_utils.write_json(metadata, os.path.join(config.output_dir, METADATA_NAME), indent=2)
    log(f"Done: {num_examples} examples in {config.output_dir}")
    return metadata


def load_metadata(output_dir: str) -> dict | None:
    """The metadata of a complete dataset in output_dir, or None if there is none."""
    path = os.path.join(output_dir, METADATA_NAME)
    if not os.path.exists(path):
        return None
    metadata = io_utils.load_json(path)
    if not isinstance(metadata, dict) or metadata.get("format") != METADATA_FORMAT:
        raise DatasetError(f"{path} is not a pre-training dataset metadata file.")
    return metadata
