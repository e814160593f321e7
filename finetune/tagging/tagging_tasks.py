"""Sequence tagging (CoNLL-2000 chunking, spec e.3): reading, featurisation, head.

Faithful to the original, with these documented choices:
- Tags are re-encoded as BIOES; label ids index the sorted set of BIOES tags found
  in train/dev/test, pickled to <preprocessed_data_dir>/[debug_]<task>_label_mapping.pkl.
- [quirk kept] every real token, [CLS] and [SEP] included, has segment id 1.
- [quirk kept] truncation stops once (#words + 2) + tokens so far + 1 > max_seq_length,
  i.e. it reserves room for as many tokens as the sentence has words. Unlike the
  original, a word whose wordpieces would pass max_seq_length - 1 also stops it, so a
  feature can never overflow (the original failed an assert). Truncated words are
  not scored, as in the original.
- Each word is wordpieced with the task tokenizer (so it follows do_lower_case; the
  original always lower-cased words); a word with no wordpieces becomes [UNK] so later
  labels stay aligned.
- A last sentence not followed by a blank line is kept (the original dropped it).
"""

from __future__ import annotations

import collections
import dataclasses
import os

import tensorflow as tf

from finetune import task as task_lib
from finetune import task_builder
from finetune.tagging import tagging_metrics
from finetune.tagging import tagging_utils
from model import modeling
from util import io_utils
from util import logging_utils

LABEL_ENCODING = "BIOES"
SPLITS = ("train", "dev", "test")
DEBUG_MAX_SENTENCES = 100  # the original stopped once it had more than 100


@dataclasses.dataclass
class TaggingExample(task_lib.Example):
    """One sentence: its words and BIOES label ids (one per word)."""
    task_name: str
    eid: int
    words: list[str]
    labels: list[int]


class TaggingHead(tf.Module):
    """First-wordpiece hidden states -> dense n_classes -> per-word CE summed per sentence."""

    def __init__(self, task_name: str, hidden_size: int, n_classes: int):
        super().__init__(name=f"task_specific_{task_name}")
        self.n_classes = n_classes
        self.dense = modeling.Dense(f"task_specific/{task_name}/dense", hidden_size,
                                    n_classes, initializer="glorot")

    def __call__(self, encoder_output, features, is_training=False,
                 compute_dtype=tf.float32):
        """Args:
          encoder_output: EncoderOutput with sequence_output [B, S, H].
          features: labels [B, S] int32, labels_mask [B, S] float32,
            labeled_positions [B, S] int32 (first wordpiece of word i), eid [B].
        Returns:
          (losses [B], outputs: loss, logits [B, S, C], predictions [B, S],
           labels, labels_mask, eid).
        """
        del is_training  # the original's tagging head has no dropout
        reprs = tf.gather(encoder_output.sequence_output, features["labeled_positions"],
                          batch_dims=1)  # [B, S, H]: hidden state of each word
        logits = tf.cast(self.dense(reprs, compute_dtype), tf.float32)  # [B, S, C]
        labels = features["labels"]
        losses = tf.nn.softmax_cross_entropy_with_logits(
            labels=tf.one_hot(labels, self.n_classes), logits=logits)  # [B, S]
        # Per-word CE, masked to real words, summed over the sentence (no mean).
        losses = tf.reduce_sum(losses * features["labels_mask"], axis=-1)  # [B]
        outputs = {"loss": losses, "logits": logits,
                   "predictions": tf.argmax(logits, axis=-1, output_type=tf.int32),
                   "labels": labels, "labels_mask": features["labels_mask"],
                   "eid": features["eid"]}
        return losses, outputs


class TaggingTask(task_lib.Task):
    """A word-level tagging task whose files are CoNLL-style columns."""

    def __init__(self, config, name, tokenizer):
        super().__init__(config, name, tokenizer)
        self._label_mapping = None
        self.bad_sentences: dict[str, list[tuple[str, int, str]]] = {}

    @property
    def label_mapping_path(self) -> str:
        prefix = "debug_" if self.config.debug else ""
        return os.path.join(self.config.preprocessed_data_dir,
                            f"{prefix}{self.name}_label_mapping.pkl")

    def split_file(self, split: str) -> str:
        return split + ".txt"

    def has_split(self, split: str) -> bool:
        return os.path.exists(os.path.join(self.raw_data_dir, self.split_file(split)))

    def get_eval_splits(self) -> list[str]:
        """dev, plus test when test.txt is present."""
        return ["dev"] + (["test"] if self.has_split("test") else [])

    def read_sentences(self, split: str) -> list[tuple[list[str], list[str]]]:
        """[(words, BIOES tags)]: word = first column, tag = last; blank line ends a
        sentence; -DOCSTART- skipped. Sentences with a malformed line are skipped,
        logged with file and line number, and counted in bad_sentences[split]."""
        path = self.data_file(self.split_file(split))
        sentences, bad, current, current_bad = [], [], [], None
        limit = DEBUG_MAX_SENTENCES if self.config.debug else None

        def flush():
            nonlocal current, current_bad
            if current_bad is not None:
                bad.append(current_bad)
                logging_utils.log(f"WARNING: {path}:{current_bad[1]}: skipping sentence "
                                  f"for task {self.name}: {current_bad[2]}")
            elif current:
                words = [w for w, _ in current]
                tags = tagging_utils.to_bioes([t for _, t in current])
                sentences.append((words, tags))
            current, current_bad = [], None

        with open(path, encoding="utf-8") as f:
            try:
                for line_no, line in enumerate(f, 1):
                    if limit is not None and len(sentences) > limit:
                        break
                    fields = line.split()
                    if not fields:
                        flush()
                    elif fields[0] != "-DOCSTART-" and current_bad is None:
                        if len(fields) < 2 or not tagging_utils.is_valid_tag(fields[-1]):
                            current_bad = (path, line_no, f"line {line.strip()!r} needs a "
                                           "word and a chunk tag (O or B-/I-/E-/S-<TYPE>)")
                        else:
                            current.append((fields[0], fields[-1]))
            except UnicodeDecodeError as e:
                raise task_lib.not_utf8_error(path, e) from None
            flush()
        self.bad_sentences[split] = bad
        return sentences

    def get_label_mapping(self) -> dict[str, int]:
        """{BIOES tag: id}, ids in sorted tag order over every split present."""
        if self._label_mapping is None:
            if os.path.exists(self.label_mapping_path):
                self._label_mapping = io_utils.load_pickle(self.label_mapping_path)
            else:
                tags = collections.Counter()
                for split in SPLITS:
                    if self.has_split(split):
                        for _, sentence_tags in self.read_sentences(split):
                            tags.update(sentence_tags)
                mapping = {tag: i for i, tag in enumerate(sorted(tags))}
                io_utils.write_pickle(mapping, self.label_mapping_path)
                self._label_mapping = mapping
        return self._label_mapping

    def get_examples(self, split):
        sentences = self.read_sentences(split)
        mapping = self.get_label_mapping()
        unknown = sorted({t for _, tags in sentences for t in tags} - set(mapping))
        if unknown:
            raise task_lib.DataError(
                f"Task {self.name}: tags {unknown} in {split} are not in the label mapping "
                f"{self.label_mapping_path}; delete that file so it is rebuilt from the "
                "current data.")
        bad = len(self.bad_sentences.get(split, []))
        logging_utils.log(f"{self.name} {split}: {len(sentences)} sentences"
                          + (f", {bad} bad sentences skipped" if bad else ""))
        return [TaggingExample(self.name, i, words, [mapping[t] for t in tags])
                for i, (words, tags) in enumerate(sentences)]

    def word_pieces(self, words):
        """[[wordpieces of word] for each word]; empty results become ["[UNK]"]."""
        return [self.tokenizer.tokenize(w) or ["[UNK]"] for w in words]

    def featurize(self, example, is_training, log=False):
        del is_training
        max_len = self.config.max_seq_length
        vocab = self.tokenizer.vocab
        words_to_tokens = [["[CLS]"]] + self.word_pieces(example.words) + [["[SEP]"]]
        input_ids, tagged_positions = [], []
        for index, word_tokens in enumerate(words_to_tokens):
            is_special = index in (0, len(words_to_tokens) - 1)
            room = max_len - (0 if is_special and index > 0 else 1)
            if (len(words_to_tokens) + len(input_ids) + 1 > max_len  # original's check
                    or len(input_ids) + len(word_tokens) > room):  # never overflow
                input_ids.append(vocab["[SEP]"])
                break
            if not is_special:
                tagged_positions.append(len(input_ids))
            input_ids.extend(vocab[t] for t in word_tokens)

        def pad(values):
            return list(values) + [0] * (max_len - len(values))

        features = self.shared_features(pad(input_ids), pad([1] * len(input_ids)),
                                        pad([1] * len(input_ids)))  # segment 1: quirk
        features.update(eid=example.eid, labels=pad(example.labels[:max_len]),
                        labels_mask=pad([1.0] * len(tagged_positions)),
                        labeled_positions=pad(tagged_positions))
        if log:
            logging_utils.log(f"  Example {example.eid}: {' '.join(example.words)}\n"
                              f"    features: {features}")
        return [features]

    def get_feature_specs(self):
        seq = (self.config.max_seq_length,)
        return [self.feature("eid"), self.feature("labels", seq),
                self.feature("labels_mask", seq, is_int_feature=False),
                self.feature("labeled_positions", seq)]

    def get_prediction_module(self, hidden_size):
        return TaggingHead(self.name, hidden_size, len(self.get_label_mapping()))

    def get_scorer(self, split="dev"):
        cache = {}

        def words_for_eid(eid):
            if not cache:
                cache.update(enumerate(w for w, _ in self.read_sentences(split)))
            return cache[eid]

        return tagging_metrics.EntityLevelF1Scorer(self.get_label_mapping(), words_for_eid)

    def cache_settings(self):
        return {**super().cache_settings(), "labels": sorted(self.get_label_mapping()),
                "encoding": LABEL_ENCODING}


@task_builder.register_task("chunk")
class Chunking(TaggingTask):
    """CoNLL-2000 text chunking (span F1)."""

    def __init__(self, config, tokenizer):
        super().__init__(config, "chunk", tokenizer)
