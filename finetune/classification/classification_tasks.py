"""GLUE classification/regression tasks: TSV reading, featurisation, heads, scorers.

Columns, headers and labels follow the original (spec e.1). Each task declares, per
split, a `TsvLayout` (which columns hold text_a, text_b and the label, and whether a
header line is skipped). Rows whose column count differs from the header's (or from
the layout's fixed count for header-less files), or whose label is invalid, are
logged with file and line number, skipped and counted in `task.bad_rows[split]`.
A file that cannot be read as UTF-8 TSV at all raises task.DataError (a UserError).
"""

from __future__ import annotations

import abc
import csv
import dataclasses
from typing import Sequence

from finetune import task as task_lib
from finetune import task_builder
from finetune.classification import classification_metrics as metrics
from finetune.classification import heads
from util import logging_utils

MAX_BAD_ROWS_LOGGED = 20  # per file; the total is always reported
DEBUG_MAX_LINES = 100  # the original's debug mode reads the first 100 TSV lines


@dataclasses.dataclass(frozen=True)
class TsvLayout:
    """Where one split's fields live. Negative indices count from the row's end."""
    text_a: int
    text_b: int | None
    label: int | None  # None: unlabeled split (test), examples get a dummy label
    header: bool  # skip the first line
    n_columns: int | None = None  # expected columns; None -> the header's count


@dataclasses.dataclass
class InputExample(task_lib.Example):
    """One sentence (pair) with its label ("0"/"entailment"/... or a float for STS)."""
    task_name: str
    eid: int
    text_a: str
    text_b: str | None
    label: str | float


@dataclasses.dataclass(frozen=True)
class BadRow:
    path: str
    line: int  # 1-based line number in the file
    reason: str


def read_tsv(path: str, max_lines: int | None = None) -> list[tuple[int, list[str]]]:
    """Reads a TSV as [(1-based line number, fields)]: tab-delimited, quotes NOT special.

    GLUE text contains unbalanced double quotes, so csv quote processing (which would
    merge lines) is switched off. A UTF-8 byte-order mark (MRPC's header) is dropped.
    A file that is not UTF-8, or a line the csv module rejects, raises DataError: it
    stops the whole file (later rows cannot be trusted), unlike a bad row.
    """
    rows = []
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        try:
            for i, fields in enumerate(reader):
                if max_lines is not None and i >= max_lines:
                    break
                rows.append((reader.line_num, fields))
        except UnicodeDecodeError as e:
            raise task_lib.not_utf8_error(path, e) from None
        except csv.Error as e:  # e.g. a field over csv.field_size_limit()
            raise task_lib.DataError(
                f"{path}: line {reader.line_num} cannot be read as tab-separated text "
                f"({e}); fix or remove that line.") from None
    return rows


def truncate_seq_pair(tokens_a: list, tokens_b: list, max_length: int) -> None:
    """Pops one token at a time from the longer list (b on ties) until the total fits."""
    while len(tokens_a) + len(tokens_b) > max_length:
        if len(tokens_a) > len(tokens_b):
            tokens_a.pop()
        else:
            tokens_b.pop()


class SingleOutputTask(task_lib.Task):
    """A GLUE task with one prediction per (single or paired) sentence input."""

    DOUBLE_UNORDERED = False  # MRPC/STS: add b/a-swapped copies of train if configured
    pooled_output_only = True  # the heads (heads.py) read the [CLS] output alone

    def __init__(self, config, name, tokenizer):
        super().__init__(config, name, tokenizer)
        self.bad_rows: dict[str, list[BadRow]] = {}

    # -- reading ------------------------------------------------------------------------

    def file_name(self, split: str) -> str:
        return split + ".tsv"

    @abc.abstractmethod
    def layout(self, split: str) -> TsvLayout:
        """Column layout of `split`."""

    @abc.abstractmethod
    def _parse_label(self, raw: str):
        """Returns the label, or raises ValueError naming why `raw` is not valid."""

    @abc.abstractmethod
    def _dummy_label(self):
        """Label given to unlabeled (test) examples."""

    def get_examples(self, split: str) -> list[InputExample]:
        path = self.data_file(self.file_name(split))
        rows = read_tsv(path, DEBUG_MAX_LINES if self.config.debug else None)
        layout = self.layout(split)
        examples, bad = self._rows_to_examples(path, rows, layout)
        n_data_rows = len(rows) - (1 if layout.header and rows else 0)
        if self.DOUBLE_UNORDERED and self.config.double_unordered and split == "train":
            # Swapped copies get eid + number of data rows, so ids stay unique even when
            # some rows were skipped (the original offset by the example count).
            examples += [dataclasses.replace(e, eid=e.eid + n_data_rows, text_a=e.text_b,
                                             text_b=e.text_a) for e in list(examples)]
        self.bad_rows[split] = bad
        logging_utils.log(f"{self.name} {split}: {len(examples)} examples from {path}"
                          + (f", {len(bad)} bad rows skipped" if bad else ""))
        return examples

    def _rows_to_examples(self, path, rows, layout):
        examples, bad = [], []
        expected = layout.n_columns
        if layout.header and rows:
            expected = expected or len(rows[0][1])
            rows = rows[1:]
        for eid, (line, fields) in enumerate(rows):
            reason = None
            if len(fields) != expected:
                reason = f"has {len(fields)} columns, expected {expected}"
            else:
                try:
                    label = (self._dummy_label() if layout.label is None
                             else self._parse_label(fields[layout.label]))
                except ValueError as e:
                    reason = str(e)
            if reason is not None:
                bad.append(BadRow(path, line, reason))
                if len(bad) <= MAX_BAD_ROWS_LOGGED:
                    logging_utils.log(f"WARNING: {path}:{line}: skipping row for task "
                                      f"{self.name}: {reason}")
                continue
            text_b = fields[layout.text_b] if layout.text_b is not None else None
            examples.append(InputExample(self.name, eid, fields[layout.text_a], text_b, label))
        return examples, bad

    # -- featurisation ------------------------------------------------------------------

    def featurize(self, example: InputExample, is_training: bool,
                  log: bool = False) -> list[dict]:
        """[CLS] a [SEP] (segment 0) b [SEP] (segment 1), zero-padded to max_seq_length."""
        del is_training  # featurisation is the same for training and evaluation
        max_len = self.config.max_seq_length
        tokens_a = self.tokenizer.tokenize(example.text_a)
        tokens_b = self.tokenizer.tokenize(example.text_b) if example.text_b else []
        if tokens_b:
            truncate_seq_pair(tokens_a, tokens_b, max_len - 3)  # room for [CLS] [SEP] [SEP]
        else:
            tokens_a = tokens_a[:max_len - 2]  # room for [CLS] [SEP]
        tokens = ["[CLS]"] + tokens_a + ["[SEP]"]
        segment_ids = [0] * len(tokens)
        if tokens_b:
            tokens += tokens_b + ["[SEP]"]
            segment_ids += [1] * (len(tokens_b) + 1)
        input_ids = self.tokenizer.convert_tokens_to_ids(tokens)
        input_mask = [1] * len(input_ids)
        pad = max_len - len(input_ids)
        features = self.shared_features(input_ids + [0] * pad, input_mask + [0] * pad,
                                        segment_ids + [0] * pad)
        features["eid"] = example.eid
        features.update(self._label_features(example))
        if log:
            logging_utils.log(f"  Example {example.eid}\n    tokens: {' '.join(tokens)}\n"
                              f"    features: {features}")
        return [features]

    @abc.abstractmethod
    def _label_features(self, example: InputExample) -> dict:
        """The task's label feature(s) for `example`."""


class ClassificationTask(SingleOutputTask):
    """Single categorical label per input; softmax head; accuracy by default."""

    def __init__(self, config, name, tokenizer, label_list: Sequence[str]):
        super().__init__(config, name, tokenizer)
        self.label_list = list(label_list)
        self._label_ids = {label: i for i, label in enumerate(self.label_list)}

    def _parse_label(self, raw):
        if raw not in self._label_ids:
            raise ValueError(f"label {raw!r} is not one of {self.label_list}")
        return raw

    def _dummy_label(self):
        return self.label_list[0]

    def _label_features(self, example):
        return {"label_ids": self._label_ids[example.label]}

    def get_feature_specs(self):
        return [self.feature("eid"), self.feature("label_ids")]

    def get_prediction_module(self, hidden_size):
        return heads.ClassificationHead(self.name, hidden_size, len(self.label_list))

    def get_scorer(self, split="dev"):
        return metrics.AccuracyScorer(self.label_list)

    def cache_settings(self):
        return {**super().cache_settings(), "labels": self.label_list}


class RegressionTask(SingleOutputTask):
    """Real-valued target in [min_value, max_value], trained on (y - min) / max."""

    def __init__(self, config, name, tokenizer, min_value: float, max_value: float):
        super().__init__(config, name, tokenizer)
        self.min_value = min_value
        self.max_value = max_value

    def _parse_label(self, raw):
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"label {raw!r} is not a number") from None
        if not self.min_value <= value <= self.max_value:
            raise ValueError(f"label {value} is outside [{self.min_value}, {self.max_value}]")
        return value

    def _dummy_label(self):
        return 0.0

    def normalize(self, value: float) -> float:
        # The original's normalisation: (y - min) / max (= y / 5 for STS, min being 0).
        return (value - self.min_value) / self.max_value

    def denormalize(self, value: float) -> float:
        return value * self.max_value + self.min_value

    def _label_features(self, example):
        return {"targets": self.normalize(float(example.label))}

    def get_feature_specs(self):
        return [self.feature("eid"), self.feature("targets", is_int_feature=False)]

    def get_prediction_module(self, hidden_size):
        return heads.RegressionHead(self.name, hidden_size)

    def get_scorer(self, split="dev"):
        return metrics.RegressionScorer()

    def cache_settings(self):
        return {**super().cache_settings(), "range": [self.min_value, self.max_value]}


# ---- the GLUE tasks (spec e.1 table) -------------------------------------------------

@task_builder.register_task("cola")
class CoLA(ClassificationTask):
    """Corpus of Linguistic Acceptability; train/dev have no header, test has one."""

    def __init__(self, config, tokenizer):
        super().__init__(config, "cola", tokenizer, ["0", "1"])

    def layout(self, split):
        if split == "test":
            return TsvLayout(text_a=1, text_b=None, label=None, header=True)
        return TsvLayout(text_a=3, text_b=None, label=1, header=False, n_columns=4)

    def get_scorer(self, split="dev"):
        return metrics.MCCScorer(self.label_list)


@task_builder.register_task("sst")
class SST(ClassificationTask):
    """Stanford Sentiment Treebank (SST-2)."""

    def __init__(self, config, tokenizer):
        super().__init__(config, "sst", tokenizer, ["0", "1"])

    def layout(self, split):
        if "test" in split:
            return TsvLayout(text_a=1, text_b=None, label=None, header=True)
        return TsvLayout(text_a=0, text_b=None, label=1, header=True)


@task_builder.register_task("mrpc")
class MRPC(ClassificationTask):
    """Microsoft Research Paraphrase Corpus; train doubled with swapped sentences."""

    DOUBLE_UNORDERED = True

    def __init__(self, config, tokenizer):
        super().__init__(config, "mrpc", tokenizer, ["0", "1"])

    def layout(self, split):
        return TsvLayout(text_a=3, text_b=4, label=None if split == "test" else 0,
                         header=True)

    def get_scorer(self, split="dev"):
        return metrics.F1Scorer(self.label_list)


@task_builder.register_task("qqp")
class QQP(ClassificationTask):
    """Quora Question Pairs (not doubled, as in the original)."""

    def __init__(self, config, tokenizer):
        super().__init__(config, "qqp", tokenizer, ["0", "1"])

    def layout(self, split):
        if split == "test":
            return TsvLayout(text_a=1, text_b=2, label=None, header=True)
        return TsvLayout(text_a=3, text_b=4, label=5, header=True)

    def get_scorer(self, split="dev"):
        return metrics.F1Scorer(self.label_list)


@task_builder.register_task("mnli")
class MNLI(ClassificationTask):
    """Multi-NLI: dev = dev_matched.tsv; test splits matched, mismatched, diagnostic."""

    def __init__(self, config, tokenizer):
        super().__init__(config, "mnli", tokenizer,
                         ["contradiction", "entailment", "neutral"])

    def file_name(self, split):
        return ("dev_matched" if split == "dev" else split) + ".tsv"

    def layout(self, split):
        if split == "diagnostic":
            return TsvLayout(text_a=1, text_b=2, label=None, header=True)
        return TsvLayout(text_a=8, text_b=9, label=None if "test" in split else -1,
                         header=True)

    def get_test_splits(self):
        return ["test_matched", "test_mismatched", "diagnostic"]


class _NLIPair(ClassificationTask):
    """index, sentence1, sentence2[, label] files (QNLI, RTE, WNLI)."""

    def layout(self, split):
        return TsvLayout(text_a=1, text_b=2, label=None if split == "test" else 3,
                         header=True)


@task_builder.register_task("qnli")
class QNLI(_NLIPair):
    """Question NLI."""

    def __init__(self, config, tokenizer):
        super().__init__(config, "qnli", tokenizer, ["entailment", "not_entailment"])


@task_builder.register_task("rte")
class RTE(_NLIPair):
    """Recognizing Textual Entailment."""

    def __init__(self, config, tokenizer):
        super().__init__(config, "rte", tokenizer, ["entailment", "not_entailment"])


@task_builder.register_task("wnli")
class WNLI(_NLIPair):
    """Winograd NLI (not in the original's task list; same layout as RTE, labels 0/1)."""

    def __init__(self, config, tokenizer):
        super().__init__(config, "wnli", tokenizer, ["0", "1"])


@task_builder.register_task("sts")
class STS(RegressionTask):
    """STS-Benchmark: similarity in [0, 5]; train doubled with swapped sentences."""

    DOUBLE_UNORDERED = True

    def __init__(self, config, tokenizer):
        super().__init__(config, "sts", tokenizer, 0.0, 5.0)

    def layout(self, split):
        if split == "test":
            return TsvLayout(text_a=-2, text_b=-1, label=None, header=True)
        return TsvLayout(text_a=-3, text_b=-2, label=-1, header=True)
