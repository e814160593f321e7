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

import collections
import concurrent.futures
import dataclasses
import multiprocessing
import os
import random
import re
from collections.abc import Callable, Iterable
from typing import NamedTuple

import tensorflow as tf

from model import fast_tokenization, tokenization
from util import io_utils
from util.logging_utils import Progress, log

SHARD_PREFIX = "pretrain_data.tfrecord"
METADATA_NAME = "pretrain_data.json"
METADATA_FORMAT = "electra-pretraining-tfrecords"
TOOL_VERSION = 1
MIN_SEQ_LENGTH, MAX_SEQ_LENGTH = 8, 512
TOKENIZERS = ("auto", "fast", "python")
# Lines handed to the tokenizer at once: amortises the fast tokenizer's per-call cost.
LINES_PER_BATCH = 4096
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


class PackedExample(NamedTuple):
    """One unpadded example: [CLS] A [SEP] (segment 0), then B [SEP] (segment 1) if any."""

    input_ids: list[int]
    first_length: int  # len([CLS] A [SEP])


class ExampleBuilder:
    """Packs a stream of tokenised lines into examples of at most max_length (spec d.2).

    Draws from `rng` in exactly the original's order (single-segment coin, A/B coins
    only when the original's short-circuit reaches them, next target length), so a
    seeded rng reproduces the original's random.seed behaviour.
    """

    def __init__(self, cls_id: int, sep_id: int, max_length: int, rng: random.Random):
        self._cls_id, self._sep_id = cls_id, sep_id
        self._max_length = max_length
        self._rng = rng
        self._sentences: list[list[int]] = []
        self._current_length = 0
        self._target_length = max_length
        # Outcome counts (examples, single_segment, random_target) for metadata and tests.
        self.stats = collections.Counter()

    def add_line(self, token_ids: list[int]) -> PackedExample | None:
        """Buffers one non-blank line's wordpiece ids; returns an example once full."""
        self._sentences.append(token_ids)
        self._current_length += len(token_ids)
        if self._current_length >= self._target_length:
            return self._create_example()
        return None

    def end_document(self) -> PackedExample | None:
        """A blank line or end of file: emits the buffered tokens, if any, early."""
        return self._create_example() if self._current_length else None

    def _create_example(self) -> PackedExample:
        rng = self._rng
        self.stats["examples"] += 1
        if rng.random() < 0.1:  # single segment, as in classification tasks
            self.stats["single_segment"] += 1
            # The original's constant: a later line of ~100k tokens can still flip to B.
            first_target = 100000
        else:
            first_target = (self._target_length - 3) // 2  # -3 for [CLS] and two [SEP]
        first, second = [], []
        for sentence in self._sentences:
            # Lazy like the original: the coin is flipped only when A is non-empty, the
            # sentence would overflow A, B is empty and A is under target. [quirk] After
            # B has started a short sentence can still join A (A/B not contiguous).
            if (not first or len(first) + len(sentence) < first_target
                    or (not second and len(first) < first_target and rng.random() < 0.5)):
                first += sentence
            else:
                second += sentence
        first = first[:self._max_length - 2]
        second = second[:max(0, self._max_length - len(first) - 3)]
        self._sentences, self._current_length = [], 0
        if rng.random() < 0.05:  # occasionally a short example
            self.stats["random_target"] += 1
            self._target_length = rng.randint(5, self._max_length)
        else:
            self._target_length = self._max_length
        input_ids = [self._cls_id] + first + [self._sep_id]
        if second:
            input_ids += second + [self._sep_id]
        return PackedExample(input_ids, len(first) + 2)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited protobuf field: tag, varint length, payload."""
    return tag + _varint(len(payload)) + payload


def _feature_entry(name: bytes, packed: bytes) -> bytes:
    """Features.feature (1) map entry {key (1), value (2): Feature.int64_list (3)}."""
    int64_list = _field(b"\x0a", packed)  # Int64List.value = 1, packed varints
    return _field(b"\x0a", _field(b"\x0a", name) + _field(b"\x12", _field(b"\x1a", int64_list)))


class ExampleEncoder:
    """Serialises examples as tf.train.Example bytes (spec d.1), written by hand.

    Output: int64 features input_ids, input_mask, segment_ids, each max_length long,
    zero-padded, in sorted key order: byte-identical to the protobuf library's
    deterministic serialisation (tested) and about twice as fast, which matters once
    the fast tokenizer has made tokenising cheap.
    """

    def __init__(self, max_length: int, max_id: int):
        self._max_length = max_length
        self._varints = [_varint(i) for i in range(max_id + 1)]
        self._mask_and_segments = {}  # (length, first_length) -> encoded entries

    def encode(self, example: PackedExample) -> bytes:
        length, first = len(example.input_ids), example.first_length
        pad = self._max_length - length
        rest = self._mask_and_segments.get((length, first))
        if rest is None:  # at most max_length**2 / 2 distinct layouts
            rest = (_feature_entry(b"input_mask", b"\x01" * length + b"\x00" * pad)
                    + _feature_entry(b"segment_ids", b"\x00" * first + b"\x01" * (length - first)
                                     + b"\x00" * pad))
            self._mask_and_segments[(length, first)] = rest
        varints = self._varints
        ids = b"".join([varints[i] for i in example.input_ids]) + b"\x00" * pad
        return _field(b"\x0a", _feature_entry(b"input_ids", ids) + rest)  # Example.features


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
                        ) -> tuple[Callable[[list[str]], list[list[int]]], dict, str]:
    """Returns (tokenize_lines: N lines -> N id lists, vocab token->id, kind).

    Both paths give identical ids (tests/test_fast_tokenization.py); the fast one is
    fed batches of lines to amortise its per-call cost.
    """
    full, kind = resolve_tokenizer(config)
    if kind == "fast":
        fast = fast_tokenization.FastTokenizer(config.vocab_file, config.do_lower_case,
                                               config.strip_accents)
        return fast.tokenize_to_ids, full.vocab, kind
    return (lambda lines: [full.text_to_ids(line) for line in lines]), full.vocab, kind


class ExampleWriter:
    """Tokenises text files and writes one job's examples round-robin to its shards."""

    def __init__(self, job_id: int, config: BuildConfig, rng: random.Random):
        self._config = config
        self._tokenize, vocab, self.tokenizer_kind = make_line_tokenizer(config)
        self.builder = ExampleBuilder(vocab["[CLS]"], vocab["[SEP]"], config.max_seq_length, rng)
        self.encoder = ExampleEncoder(config.max_seq_length, max(vocab.values()))
        self.shard_counts: dict[str, int] = {}
        self._temps: dict[str, str] = {}  # final shard name -> temporary path
        self._writers = []
        for i in range(job_id, config.num_out_files, config.num_processes):
            name = shard_name(i, config.num_out_files)
            self._temps[name] = io_utils.temp_name_for(os.path.join(config.output_dir, name))
            self._writers.append((name, tf.io.TFRecordWriter(self._temps[name])))
            self.shard_counts[name] = 0
        self.n_written = 0
        self.n_tokens = 0

    def _write(self, example: PackedExample | None) -> None:
        if example is None:
            return
        name, writer = self._writers[self.n_written % len(self._writers)]
        writer.write(self.encoder.encode(example))
        self.shard_counts[name] += 1
        self.n_written += 1

    def _feed(self, lines: list[str]) -> None:
        """Feeds stripped lines; blank ones are document boundaries."""
        token_lists = self._tokenize([line for line in lines if line])
        self.n_tokens += sum(map(len, token_lists))
        ids = iter(token_lists)
        add_line, end_document = self.builder.add_line, self.builder.end_document
        for line in lines:
            example = add_line(next(ids)) if line else end_document()
            if example is not None:
                self._write(example)

    def write_examples(self, input_file: str) -> None:
        """Writes the examples of one text file; its end is a document boundary."""
        batch = []
        # newline="\n": lines end only at LF, as with the original's GFile; invalid
        # UTF-8 becomes U+FFFD, which the tokenizer then drops.
        with open(input_file, encoding="utf-8", errors="replace", newline="\n") as f:
            for line in f:
                line = line.strip()
                if line or self._config.blanks_separate_docs:
                    batch.append(line)
                if len(batch) >= LINES_PER_BATCH:
                    self._feed(batch)
                    batch = []
        self._feed(batch)
        self._write(self.builder.end_document())

    def finish(self) -> dict[str, str]:
        """Closes the shards; returns {temporary path: final path}."""
        for _, writer in self._writers:
            writer.close()
        return {temp: os.path.join(self._config.output_dir, name)
                for name, temp in self._temps.items()}

    def abort(self) -> None:
        """Closes and deletes this job's temporary shards."""
        for temp in self.finish():
            if os.path.exists(temp):
                os.remove(temp)


def text_file_documents(path: str, rng: random.Random) -> Iterable[str]:
    """Document source for a corpus: the file itself (blank lines may split it further).

    A document source maps one input to the text files to read, in order, and may
    draw from the job's rng (build_openwebtext_pretraining_dataset shuffles members).
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
    stats: dict[str, int]  # ExampleBuilder.stats


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
            progress.update(file_no, extra=f"{writer.n_written} examples written")
    except BaseException:
        writer.abort()
        raise
    return JobResult(writer.finish(), writer.shard_counts, writer.n_written, writer.n_tokens,
                     dict(writer.builder.stats))


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
