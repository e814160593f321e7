"""The study's `data` stage: pre-training TFRecords and subsampled fine-tuning task dirs.

Reads the shared data in place and never writes to it. Task files keep their line
structure: a TSV's header row stays first and the kept rows keep their original order
and bytes; for chunking whole sentences (blank-line separated blocks) are kept.
"""

import glob
import os
import random

from util import io_utils
from util.cli import UserError
from util.logging_utils import log

# study task -> directory under <shared>/glue (as the task registry's names expect)
GLUE_DIRS = {"cola": "CoLA", "sst": "SST-2", "mrpc": "MRPC", "sts": "STS-B", "rte": "RTE"}
GLUE_HEADER = {"cola": False, "sst": True, "mrpc": True, "sts": True, "rte": True}
# chunk: train.txt = CoNLL-2000 train, dev.txt = its test set (as ELECTRA reports it)
CHUNK_FILES = {"train.txt": "train.txt", "dev.txt": "test.txt"}


def corpus_inputs(study, shared_dir):
    """The corpus text files to pre-train on, sorted."""
    corpus = os.path.join(shared_dir, "corpus")
    if study.corpus_files:
        return [os.path.join(corpus, name) for name in sorted(study.corpus_files)]
    return sorted(glob.glob(os.path.join(glob.escape(corpus), "*.txt")))


def task_sources(task, shared_dir):
    """{file name in the task dir: source path in the shared data}."""
    if task == "chunk":
        return {name: os.path.join(shared_dir, "chunk", source)
                for name, source in CHUNK_FILES.items()}
    return {f"{split}.tsv": os.path.join(shared_dir, "glue", GLUE_DIRS[task], f"{split}.tsv")
            for split in ("train", "dev")}


def check_shared_data(study, shared_dir):
    """Raises one UserError naming every missing input and the fix."""
    needed = ([] if study.corpus_vocab_size is not None
              else [os.path.join(shared_dir, "vocab", "vocab.txt")])
    needed += [p for task in study.tasks for p in task_sources(task, shared_dir).values()]
    inputs = corpus_inputs(study, shared_dir)
    missing = [p for p in needed + inputs if not os.path.isfile(p)]
    if not inputs:
        missing.append(os.path.join(shared_dir, "corpus", "*.txt"))
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise UserError(
            f"shared data missing: {', '.join(missing[:3])}{more}. Pass --shared-data DIR "
            "pointing at the shared data (corpus/, vocab/, glue/, chunk/; see its "
            "MANIFEST.md), default ../shared/data next to the repo.")


def sample_indices(n_rows, keep, seed_key):
    """Sorted indices of `keep` rows out of n_rows (all of them if keep is None/larger)."""
    if keep is None or keep >= n_rows:
        return list(range(n_rows))
    return sorted(random.Random(seed_key).sample(range(n_rows), keep))


def _read_lines(path):
    # newline="": line endings stay exactly as in the file ("\r\n" or "\n").
    with open(path, encoding="utf-8", newline="") as f:
        lines = f.readlines()
    return [line if line.endswith("\n") else line + "\n" for line in lines]


def subsample_tsv(path, keep, header, seed_key):
    """(text, rows kept): the header line (if any) then the sampled rows, in file order."""
    lines = _read_lines(path)
    head, rows = (lines[:1], lines[1:]) if header else ([], lines)
    kept = [rows[i] for i in sample_indices(len(rows), keep, seed_key)]
    return "".join(head + kept), len(kept)


def read_sentences(path):
    """Blank-line separated blocks of a CoNLL file, each a list of its lines."""
    blocks, current = [], []
    for line in _read_lines(path):
        if line.strip():
            current.append(line)
        elif current:
            blocks.append(current)
            current = []
    if current:
        blocks.append(current)
    return blocks


def subsample_conll(path, keep, seed_key):
    """(text, sentences kept): whole sentences, each followed by a blank line."""
    blocks = read_sentences(path)
    kept = [blocks[i] for i in sample_indices(len(blocks), keep, seed_key)]
    return "".join("".join(block) + "\n" for block in kept), len(kept)


def write_task_dir(study, task, shared_dir, out_dir):
    """Writes <out_dir>/<task>/{train,dev} files; returns {file name: rows kept}."""
    counts = {}
    for name, source in task_sources(task, shared_dir).items():
        split = name.split(".")[0]
        limits = study.train_examples if split == "train" else study.dev_examples
        seed_key = f"{study.data_seed}:{task}:{split}"
        if task == "chunk":
            text, n = subsample_conll(source, limits.get(task), seed_key)
        else:
            text, n = subsample_tsv(source, limits.get(task), GLUE_HEADER[task], seed_key)
        io_utils.write_text(text, os.path.join(out_dir, task, name))
        counts[name] = n
    log(f"[data] {task}: " + ", ".join(f"{name} {n} rows" for name, n in counts.items()))
    return counts


def build_corpus_vocab(study, dirs):
    """Learns the study's WordPiece vocab from its corpus (kept if already there);
    returns its size."""
    import build_vocab  # pylint: disable=import-outside-toplevel
    if not os.path.exists(dirs.vocab_file):
        paths = corpus_inputs(study, dirs.shared_dir)
        vocab = build_vocab.build_vocab(build_vocab.read_lines(paths), study.corpus_vocab_size)
        io_utils.write_text("\n".join(vocab) + "\n", dirs.vocab_file)
        log(f"[data] learnt a {len(vocab)}-token vocab from the corpus: {dirs.vocab_file}")
    with open(dirs.vocab_file, encoding="utf-8") as f:
        return sum(1 for _ in f)


def build_pretraining_data(study, dirs):
    """The TFRecords (reused when a complete dataset is already there); its metadata."""
    from pretrain import dataset_builder  # pylint: disable=import-outside-toplevel
    metadata = dataset_builder.load_metadata(dirs.tfrecords_dir)
    if metadata is not None:
        log(f"[data] reusing the complete pre-training dataset in {dirs.tfrecords_dir}")
        return metadata
    config = dataset_builder.BuildConfig(
        vocab_file=dirs.vocab_file, output_dir=dirs.tfrecords_dir,
        max_seq_length=study.max_seq_length, num_processes=study.num_processes,
        num_out_files=study.num_out_files, seed=study.data_seed)
    return dataset_builder.build_dataset(config, corpus_inputs(study, dirs.shared_dir))


def run_data(study, dirs):
    """The data unit's work; returns its record."""
    vocab_tokens = build_corpus_vocab(study, dirs) if dirs.corpus_vocab else None
    metadata = build_pretraining_data(study, dirs)
    tasks = {task: write_task_dir(study, task, dirs.shared_dir, dirs.finetuning_data_dir)
             for task in study.tasks}
    return {"pretrain_examples": metadata["num_examples"],
            "pretrain_input_tokens": metadata["num_input_tokens"],
            "corpus_files": [os.path.basename(p)
                             for p in corpus_inputs(study, dirs.shared_dir)],
            "task_rows": tasks, "vocab_file": dirs.vocab_file,
            "corpus_vocab_tokens": vocab_tokens}
