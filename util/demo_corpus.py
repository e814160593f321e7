"""Built-in demo data: English text from the Python standard library's docstrings.

Every machine that runs this project has the standard library's sources, so the
demo needs no download and no third-party corpus. Docstrings are real English
prose (with some code). Each docstring is one document; each paragraph is one
line, the layout build_pretraining_dataset.py expects (blank lines separate
documents).

The same docstrings give a small built-in fine-tuning task in the SST-2 format
(binary, scored by accuracy): does a sentence document the internet part of the
library (sockets, HTTP, URLs, e-mail, ...; label 1) or its user-interface part
(tkinter, turtle, curses; label 0)? With a few hundred labelled sentences, a model
must know which words go together to label sentences whose words it never saw
labelled: what unlabelled pre-training can teach. (A word-order task, "were this
sentence's words shuffled?", rewarded random initialisation instead: it hinges on
punctuation and function words, whose embeddings short pre-training makes alike;
docs/STATUS.md, issue 7.)
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
# The topic task's two classes, by top-level standard-library module.
INTERNET_MODULES = frozenset({
    "email", "http", "urllib", "mailbox", "imaplib", "smtplib", "nntplib", "xmlrpc",
    "wsgiref", "ftplib", "ssl", "socket", "socketserver", "telnetlib", "poplib", "cgi",
    "webbrowser", "mimetypes", "smtpd", "ipaddress"})
INTERFACE_MODULES = frozenset({"tkinter", "turtle", "curses", "colorsys"})
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_WORDY = re.compile(r"^[A-Za-z][A-Za-z ,;:'()-]*[.!?]$")


def module_docstrings(stdlib_dir=None):
    """Yields (top-level module name, docstring) for the standard library's modules,
    classes and functions ("email" for email/message.py, "socket" for socket.py).

    Files are visited in sorted order and parsed (never imported), so the output
    is deterministic for a given Python version.
    """
    root = stdlib_dir or sysconfig.get_paths()["stdlib"]
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        for name in sorted(filenames):
            if not name.endswith(".py"):
                continue
            path = os.path.join(dirpath, name)
            top = os.path.relpath(path, root).split(os.sep)[0].removesuffix(".py")
            try:
                with open(path, encoding="utf-8") as f:
                    tree = ast.parse(f.read())
            except (SyntaxError, UnicodeDecodeError, ValueError):
                continue  # a few stdlib files are deliberately invalid or not UTF-8
            for node in ast.walk(tree):
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                     ast.AsyncFunctionDef)):
                    doc = ast.get_docstring(node)
                    if doc and len(doc) > 40:
                        yield top, doc


def stdlib_docstrings(stdlib_dir=None):
    """Yields the docstrings of the standard library (see module_docstrings)."""
    for _, doc in module_docstrings(stdlib_dir):
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


def prose_sentences(paragraphs, seen, min_words=6, max_words=25):
    """Mostly-prose sentences of the paragraphs not in `seen` (which they are added
    to), in order."""
    sentences = []
    for paragraph in paragraphs:
        for sentence in _SENTENCE_END.split(paragraph.strip()):
            n_words = len(sentence.split())
            if (min_words <= n_words <= max_words and _WORDY.match(sentence)
                    and sentence not in seen):
                seen.add(sentence)
                sentences.append(sentence)
    return sentences


def topic_sentences(stdlib_dir=None):
    """{label: distinct prose sentences}: 1 internet modules, 0 user-interface modules."""
    groups, seen = {1: [], 0: []}, set()
    for top, doc in module_docstrings(stdlib_dir):
        label = 1 if top in INTERNET_MODULES else 0 if top in INTERFACE_MODULES else None
        if label is not None:
            groups[label] += prose_sentences(docstring_paragraphs(doc), seen)
    return groups


def write_topic_task(task_dir, stdlib_dir=None, n_train=200, n_dev=400, seed=0):
    """Writes SST-2-format train.tsv / dev.tsv (header, then sentence TAB label).

    Each split has as many sentences of each label (n // 2), drawn without
    replacement, so train and dev sentences are disjoint.
    Returns:
        (n_train_rows, n_dev_rows).
    Raises:
        ValueError if the standard library has too few sentences for the sizes asked.
    """
    rng = random.Random(seed)
    groups = topic_sentences(stdlib_dir)
    per_label = {"train": n_train // 2, "dev": n_dev // 2}
    short = {label: len(s) for label, s in groups.items()
             if len(s) < sum(per_label.values())}
    if short:
        raise ValueError(f"the standard library has too few topic sentences {short} for "
                         f"{n_train} train + {n_dev} dev rows; ask for fewer.")
    for sentences in groups.values():
        rng.shuffle(sentences)
    counts, offset = [], 0
    for split in ("train", "dev"):
        n = per_label[split]
        rows = [(sentence, label) for label, sentences in groups.items()
                for sentence in sentences[offset:offset + n]]
        rng.shuffle(rows)
        offset += n
        lines = ["sentence\tlabel"] + [f"{sentence}\t{label}" for sentence, label in rows]
        io_utils.write_text("\n".join(lines) + "\n", os.path.join(task_dir, split + ".tsv"))
        counts.append(len(rows))
    return tuple(counts)
