"""Built-in demo data: English text from the Python standard library's docstrings.

Every machine that runs this project has the standard library's sources, so the
demo needs no download and no third-party corpus. Docstrings are real English
prose (with some code). Each docstring is one document; each paragraph is one
line, the layout build_pretraining_dataset.py expects (blank lines separate
documents).

The same sentences give a small built-in fine-tuning task in the CoLA format:
"is this sentence as written, or were its words shuffled?" (label 1 / 0), scored
with MCC like CoLA. (Detecting a single swapped word pair was too hard for a model
pre-trained for a few minutes; a shuffled sentence is not.)
"""

import ast
import os
import random
import re
import sysconfig

from util import io_utils

# Packages whose docstrings are mostly test scaffolding or non-prose.
_SKIP_DIRS = {"site-packages", "test", "tests", "idlelib", "lib2to3", "__pycache__",
                            "turtledemo", "ensurepip", "pydoc_data"}
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_WORDY = re.compile(r"^[A-Za-z][A-Za-z ,;:'()-]*[.!?]$")


def stdlib_docstrings(stdlib_dir=None):
    """Yields the docstrings of the standard library's modules, classes, functions.

    Files are visited in sorted order and parsed (never imported), so the output
    is deterministic for a given Python version.
    """
    root = stdlib_dir or sysconfig.get_paths()["stdlib"]
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        for name in sorted(filenames):
            if not name.endswith(".py"):
                continue
            try:
                with open(os.path.join(dirpath, name), encoding="utf-8") as f:
                    tree = ast.parse(f.read())
            except (SyntaxError, UnicodeDecodeError, ValueError):
                continue  # a few stdlib files are deliberately invalid or not UTF-8
            for node in ast.walk(tree):
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                                          ast.AsyncFunctionDef)):
                    doc = ast.get_docstring(node)
                    if doc and len(doc) > 40:
                        yield doc


def docstring_paragraphs(doc):
    """Splits a docstring into paragraphs with their line wraps joined."""
    paragraphs = []
    for block in re.split(r"\n\s*\n", doc):
        text = " ".join(line.strip() for line in block.splitlines() if line.strip())
        if text:
            paragraphs.append(text)
    return paragraphs


def write_corpus(corpus_dir, stdlib_dir=None, num_files=4):
    """Writes the docstring corpus as `num_files` text files (so builders can run
    one process per file); returns (list of paths, n_documents)."""
    docs = []
    for doc in stdlib_docstrings(stdlib_dir):
        docs.append("\n".join(docstring_paragraphs(doc)) + "\n\n")
    per_file = -(-len(docs) // num_files)
    paths = []
    for i in range(num_files):
        path = os.path.join(corpus_dir, f"stdlib_docstrings_{i}.txt")
        io_utils.write_text("".join(docs[i * per_file:(i + 1) * per_file]), path)
        paths.append(path)
    return paths, len(docs)


def prose_sentences(corpus_paths, min_words=6, max_words=25):
    """Distinct, mostly-prose sentences of the corpus files, in corpus order."""
    seen, sentences = set(), []
    for path in corpus_paths:
        with open(path, encoding="utf-8") as f:
            for line in f:
                for sentence in _SENTENCE_END.split(line.strip()):
                    n_words = len(sentence.split())
                    if (min_words <= n_words <= max_words and _WORDY.match(sentence)
                            and sentence not in seen):
                        seen.add(sentence)
                        sentences.append(sentence)
    return sentences


def shuffle_words(sentence, rng):
    """The sentence with its words in a new random order (None if none differs)."""
    words = sentence.split()
    for _ in range(10):
        shuffled = rng.sample(words, len(words))
        if shuffled != words:
            return " ".join(shuffled)
    return None


def write_acceptability_task(corpus_paths, task_dir, n_train=2000, n_dev=400, seed=0):
    """Writes CoLA-format train.tsv / dev.tsv (no header: source, label, mark, text).

    Half the sentences are left as written (label 1), half get their words shuffled
    (label 0). Train and dev use disjoint sentences.
    Returns:
        (n_train_rows, n_dev_rows).
    """
    rng = random.Random(seed)
    sentences = prose_sentences(corpus_paths)
    rng.shuffle(sentences)
    counts = []
    offset = 0
    for split, n in (("train", n_train), ("dev", n_dev)):
        rows = []
        for sentence in sentences[offset:offset + n]:
            if rng.random() < 0.5:
                rows.append(f"stdlib\t1\t\t{sentence}")
            else:
                corrupted = shuffle_words(sentence, rng)
                if corrupted:
                    rows.append(f"stdlib\t0\t*\t{corrupted}")
        offset += n
        io_utils.write_text("\n".join(rows) + "\n", os.path.join(task_dir, split + ".tsv"))
        counts.append(len(rows))
    return tuple(counts)
