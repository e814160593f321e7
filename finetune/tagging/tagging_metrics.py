"""Tagging scorers: token accuracy and span precision/recall/F1 (conlleval rules).

Each `update` gets one sentence's head outputs: "loss" (summed over its words),
"labels" [S], "predictions" [S], "labels_mask" [S] (1.0 for the first
`n_words` positions) and "eid". The reported loss is per word: summed sentence losses
/ number of labelled words. (The original added every batch loss twice.)
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np

from finetune import scorer
from finetune.tagging import tagging_utils
from util import io_utils


def span_prf(gold_sentences: Sequence[Sequence[str]],
             pred_sentences: Sequence[Sequence[str]]) -> tuple[float, float, float]:
    """Corpus-level chunk (precision, recall, F1) x100, as conlleval's overall line.

    A predicted chunk is correct when its start, end and type all match a gold chunk.
    All three are 0 when no chunk is correct (conlleval prints 0.00 then).
    """
    n_correct = n_gold = n_pred = 0
    for gold, pred in zip(gold_sentences, pred_sentences):
        gold_spans = set(tagging_utils.get_span_labels(gold))
        pred_spans = set(tagging_utils.get_span_labels(pred))
        n_correct += len(gold_spans & pred_spans)
        n_gold += len(gold_spans)
        n_pred += len(pred_spans)
    if n_correct == 0:
        return 0.0, 0.0, 0.0
    precision = 100.0 * n_correct / n_pred
    recall = 100.0 * n_correct / n_gold
    return precision, recall, 2 * precision * recall / (precision + recall)


class WordLevelScorer(scorer.Scorer):
    """Keeps each sentence's gold and predicted label ids over its labelled words."""

    def __init__(self, label_mapping: Mapping[str, int],
                 words_for_eid: Callable[[int], Sequence[str]] | None = None):
        super().__init__()
        self._inv_label_mapping = {i: tag for tag, i in label_mapping.items()}
        self._words_for_eid = words_for_eid
        self._total_loss = 0.0
        self._total_words = 0
        self._eids: list[int] = []
        self._labels: list[np.ndarray] = []
        self._preds: list[np.ndarray] = []

    def update(self, results: Mapping) -> None:
        super().update(results)
        n_words = int(round(float(np.sum(results["labels_mask"]))))
        self._eids.append(int(results["eid"]))
        self._labels.append(np.asarray(results["labels"])[:n_words])
        self._preds.append(np.asarray(results["predictions"])[:n_words])
        self._total_loss += float(np.sum(results["loss"]))  # once (the original: twice)
        self._total_words += n_words

    def get_loss(self) -> float:
        """Summed per-word losses / number of labelled words."""
        return self._total_loss / max(1, self._total_words)

    def _tags(self, ids) -> list[str]:
        return [self._inv_label_mapping[int(i)] for i in ids]

    def write_predictions(self, path: str) -> str:
        """CoNLL columns "word gold predicted", a blank line after each sentence."""
        lines = []
        for eid, gold, pred in sorted(zip(self._eids, self._labels, self._preds),
                                      key=lambda row: row[0]):
            words = (self._words_for_eid(eid) if self._words_for_eid is not None
                     else [f"w{i}" for i in range(len(gold))])
            for word, g, p in zip(words, self._tags(gold), self._tags(pred)):
                lines.append(f"{word} {g} {p}")
            lines.append("")
        io_utils.write_text("\n".join(lines) + "\n", path)
        return path


class AccuracyScorer(WordLevelScorer):
    """Token accuracy over labelled words (for token-level tasks)."""

    def _get_results(self):
        correct = sum(int(np.sum(g == p)) for g, p in zip(self._labels, self._preds))
        count = sum(len(g) for g in self._labels)
        return [("accuracy", 100.0 * correct / max(1, count)),
                ("loss", self.get_loss())]


class EntityLevelF1Scorer(WordLevelScorer):
    """Span precision/recall/F1 (chunking, NER)."""

    def _get_results(self):
        gold = [self._tags(g) for g in self._labels]
        pred = [self._tags(p) for p in self._preds]
        precision, recall, f1 = span_prf(gold, pred)
        return [("precision", precision), ("recall", recall), ("f1", f1),
                ("loss", self.get_loss())]
