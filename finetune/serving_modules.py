"""The tf.Modules exported as SavedModels: raw text in, one task's predictions out.

Each module holds the fine-tuned encoder with one task head, the in-graph tokenizer
(model/graph_tokenization.py) and the task's metadata as non-trainable variables
(task_name, task_type, label_names, max_seq_length, do_lower_case), and exposes two
tf.functions with fixed string inputs ([batch] each):
  serve(...)     -> predictions (the `serving_default` signature);
  featurize(...) -> the encoder inputs it packs (the `featurize` signature, for checks).
Inputs by family: "text" (single sentence), "text_a" + "text_b" (sentence pair),
"question" + "context" (QA), "text" = whitespace-separated words (tagging).
The model always computes in float32, whatever mixed_precision it was trained with.
"""

from __future__ import annotations

import abc

import tensorflow as tf

from finetune import serving_features as sf
from finetune.classification import classification_tasks
from finetune.qa import qa_serving
from finetune.qa import qa_tasks
from finetune.tagging import tagging_tasks
from model import graph_tokenization


class ServingModule(tf.Module, abc.ABC):
    """Base: tokenizer, model, metadata and the two tf.functions.

    Args:
      model: finetune_model.FinetuningModel holding only `task` (restored weights).
      task: the finetune.task.Task served.
      config: the model's FinetuningConfig.
      vocab: token -> id (model.tokenization.load_vocab).
    """

    kind = ""  # the task_type: classification, regression, tagging or qa
    input_names: tuple = ()

    def __init__(self, model, task, config, vocab):
        super().__init__(name="electra_serving")
        self.model = model
        self.tokenizer = graph_tokenization.GraphTokenizer(vocab, config.do_lower_case)
        self._task_name = task.name
        self._max_seq_length = config.max_seq_length
        self._special = {t: vocab[t] for t in ("[CLS]", "[SEP]", "[UNK]")}
        self._own_features = tuple((s.name, s.shape, s.is_int_feature)
                                   for s in task.get_feature_specs())
        self._labels = tuple(self._label_list(task))
        metadata = {"task_name": task.name, "task_type": self.kind,
                    "label_names": tf.constant(self._labels, tf.string),
                    "max_seq_length": config.max_seq_length,
                    "do_lower_case": config.do_lower_case}
        # Variables, not constants: tf.saved_model only saves trackable attributes.
        for name, value in metadata.items():
            setattr(self, name, tf.Variable(value, trainable=False, name=name))
        self.label_table = tf.constant(self._labels or ("",), tf.string)
        specs = [tf.TensorSpec([None], tf.string, name=n) for n in self.input_names]
        names = self.input_names
        # No Python control flow depends on tensors here, so autograph (seconds of
        # tracing) is off.
        self.serve = tf.function(lambda *texts: self.predict(dict(zip(names, texts))),
                                 input_signature=specs, autograph=False)
        self.featurize = tf.function(lambda *texts: self.features(dict(zip(names, texts))),
                                     input_signature=specs, autograph=False)

    def _label_list(self, task) -> list:
        del task
        return []

    @abc.abstractmethod
    def output_names(self) -> tuple:
        """Keys of predict's dict, sorted (as the signature lists them)."""

    def metadata(self) -> dict:
        """JSON-able description written next to the SavedModel's variables."""
        return {"task_name": self._task_name, "task_type": self.kind,
                "inputs": list(self.input_names), "outputs": list(self.output_names()),
                "label_names": list(self._labels),
                "max_seq_length": self._max_seq_length,
                "do_lower_case": self.tokenizer.do_lower_case,
                "strip_accents": self.tokenizer.strip_accents}

    def head_outputs(self, inputs: sf.PackedInputs, extra: dict | None = None) -> dict:
        """Encoder + head on packed inputs; label features are zero placeholders."""
        batch = tf.shape(inputs.input_ids)[0]
        own = {name: tf.zeros(tf.concat([[batch], tf.constant(shape, tf.int32)], 0),
                              tf.int32 if is_int else tf.float32)
               for name, shape, is_int in self._own_features}
        own.update(extra or {})
        features = {**inputs._asdict(), "task_id": tf.zeros([batch], tf.int32),
                    self._task_name: own}
        return self.model.predict(features, self._task_name)

    @abc.abstractmethod
    def features(self, inputs: dict) -> dict:
        """{feature name: [B, ...] tensor} the model sees."""

    @abc.abstractmethod
    def predict(self, inputs: dict) -> dict:
        """{output name: [B, ...] tensor}."""


class SentenceServing(ServingModule):
    """GLUE-style tasks: one prediction per sentence or sentence pair."""

    def __init__(self, model, task, config, vocab):
        self.is_pair = task.layout("dev").text_b is not None
        self.input_names = ("text_a", "text_b") if self.is_pair else ("text",)
        self.is_regression = isinstance(task, classification_tasks.RegressionTask)
        self.kind = "regression" if self.is_regression else "classification"
        self.value_range = ((task.min_value, task.max_value) if self.is_regression
                            else None)
        super().__init__(model, task, config, vocab)

    def _label_list(self, task):
        return [] if self.is_regression else list(task.label_list)

    def output_names(self):
        return (("prediction", "score") if self.is_regression
                else ("label", "label_id", "logits", "probabilities"))

    def metadata(self):
        extra = {"value_range": list(self.value_range)} if self.is_regression else {}
        return {**super().metadata(), **extra}

    def _pack(self, inputs):
        tokenize = self.tokenizer.tokenize
        ids_a = tokenize(inputs["text_a" if self.is_pair else "text"])
        ids_b = tokenize(inputs["text_b"]) if self.is_pair else None
        return sf.pack_sentences(ids_a, ids_b, self._max_seq_length,
                                 self._special["[CLS]"], self._special["[SEP]"])

    def features(self, inputs):
        return self._pack(inputs)._asdict()

    def predict(self, inputs):
        out = self.head_outputs(self._pack(inputs))
        if self.is_regression:
            low, high = self.value_range
            prediction = out["predictions"]  # the training scale, (y - min) / max
            score = tf.clip_by_value(prediction * high + low, low, high)
            return {"prediction": prediction, "score": score}
        label_id = out["predictions"]
        return {"logits": out["logits"], "probabilities": tf.nn.softmax(out["logits"]),
                "label_id": label_id, "label": tf.gather(self.label_table, label_id)}


class TaggingServing(ServingModule):
    """Word tagging: input "text" holds whitespace-separated words (str.split)."""

    kind = "tagging"
    input_names = ("text",)

    def _label_list(self, task):
        mapping = task.get_label_mapping()
        return sorted(mapping, key=mapping.get)

    def output_names(self):
        return ("logits", "num_tagged_words", "num_words", "probabilities", "tag_ids",
                "tags", "words")

    def _pack(self, inputs):
        words = graph_tokenization.split_words(inputs["text"])  # [B, (W)]
        packed = sf.pack_tagging(self.tokenizer.tokenize_words(words), self._max_seq_length,
                                 self._special["[CLS]"], self._special["[SEP]"],
                                 self._special["[UNK]"])
        return words, packed

    def features(self, inputs):
        _, packed = self._pack(inputs)
        return {**packed.inputs._asdict(), "labeled_positions": packed.labeled_positions,
                "num_tagged": packed.num_tagged}

    def predict(self, inputs):
        words, packed = self._pack(inputs)
        out = self.head_outputs(packed.inputs,
                                {"labeled_positions": packed.labeled_positions})
        width = tf.cast(words.bounding_shape(axis=1), tf.int32)
        logits = out["logits"]  # [B, S, C]: row i = the i-th tagged word
        logits = tf.pad(logits, [[0, 0], [0, tf.maximum(width - self._max_seq_length, 0)],
                                 [0, 0]])[:, :width]
        tagged = tf.range(width)[None, :] < packed.num_tagged[:, None]  # [B, W]
        logits = tf.where(tagged[:, :, None], logits, 0.0)
        tag_ids = tf.where(tagged, tf.argmax(logits, -1, output_type=tf.int32), -1)
        tags = tf.where(tagged, tf.gather(self.label_table, tf.maximum(tag_ids, 0)), "")
        return {"words": words.to_tensor(""), "tags": tags, "tag_ids": tag_ids,
                "logits": logits, "probabilities": tf.where(
                    tagged[:, :, None], tf.nn.softmax(logits), 0.0),
                "num_words": tf.cast(words.row_lengths(), tf.int32),
                "num_tagged_words": packed.num_tagged}


class QAServing(ServingModule):
    """Extractive QA over the first window of each context (finetune/qa/qa_serving.py)."""

    kind = "qa"
    input_names = ("question", "context")

    def __init__(self, model, task, config, vocab):
        self.v2 = task.v2
        self._settings = {k: getattr(config, k) for k in (
            "max_query_length", "max_answer_length", "joint_prediction", "n_best_size",
            "answerable_classifier", "qa_na_threshold")}
        super().__init__(model, task, config, vocab)

    def output_names(self):
        v2 = ("no_answer_score",) if self.v2 else ()
        return ("answer", "context_truncated", *v2, "score") + (
            ("thresholded_answer",) if self.v2 else ())

    def metadata(self):
        return {**super().metadata(), **dict(self._settings), "squad_v2": self.v2}

    def _pack(self, inputs):
        words = graph_tokenization.split_words(inputs["context"],
                                               graph_tokenization.QA_WHITESPACE)
        pieces = self.tokenizer.tokenize_words(words)  # [B, (W), (P)]
        # Word index (within its example) of every document piece: tok_to_orig.
        word = pieces.values.value_rowids()  # [pieces] word index in the batch
        first_word = tf.gather(pieces.row_starts(), tf.gather(pieces.value_rowids(), word))
        word_of_piece = pieces.with_flat_values(tf.cast(word - first_word, tf.int32))
        window = sf.pack_qa_window(self.tokenizer.tokenize(inputs["question"]),
                                   pieces.merge_dims(1, 2), self._max_seq_length,
                                   self._settings["max_query_length"],
                                   self._special["[CLS]"], self._special["[SEP]"])
        return words, word_of_piece.merge_dims(1, 2), window

    def features(self, inputs):
        _, _, window = self._pack(inputs)
        return {**window.inputs._asdict(), "doc_offset": window.doc_offset,
                "doc_length": window.doc_length, "context_truncated": window.truncated}

    def predict(self, inputs):
        words, word_of_piece, window = self._pack(inputs)
        out = self.head_outputs(window.inputs)
        s = self._settings
        span = qa_serving.best_span(out, window.doc_offset, window.doc_length,
                                    s["max_answer_length"], s["joint_prediction"],
                                    s["n_best_size"])
        answer = self._answer_text(words, word_of_piece, window, span)
        result = {"answer": answer, "score": tf.cast(span.score, tf.float32),
                  "context_truncated": window.truncated}
        if self.v2:
            no_answer = qa_serving.null_score(out, span, s["answerable_classifier"])
            result["no_answer_score"] = tf.cast(no_answer, tf.float32)
            result["thresholded_answer"] = tf.where(no_answer > s["qa_na_threshold"], "",
                                                    answer)
        return result

    def _answer_text(self, words, word_of_piece, window, span):
        """get_final_text of the best span; "" where no span is valid."""
        ids = window.inputs.input_ids
        positions = tf.range(self._max_seq_length)[None, :]
        in_span = (positions >= span.start[:, None]) & (positions <= span.end[:, None])
        tokens = self.tokenizer.ids_to_tokens(tf.ragged.boolean_mask(ids, in_span))
        pred_text = qa_serving.detokenize(tokens)
        padded = tf.pad(word_of_piece.to_tensor(0), [[0, 0], [0, 1]])  # >= 1 column
        # Rows without a valid span read any in-range word; their text is dropped below.
        top = tf.shape(padded)[1] - 1
        first = tf.clip_by_value(span.start - window.doc_offset, 0, top)
        last = tf.clip_by_value(span.end - window.doc_offset, 0, top)
        orig_text = qa_serving.span_words(words, tf.gather(padded, first, batch_dims=1),
                                          tf.gather(padded, last, batch_dims=1))
        text = tf.map_fn(lambda x: qa_serving.final_text(x[0], x[1],
                                                         self.tokenizer.basic_tokenize),
                         (pred_text, orig_text), fn_output_signature=tf.string)
        return tf.where(span.found, text, "")


def serving_module(model, task, config, vocab) -> ServingModule:
    """The module class for `task`'s family."""
    if isinstance(task, classification_tasks.SingleOutputTask):
        return SentenceServing(model, task, config, vocab)
    if isinstance(task, qa_tasks.QATask):
        return QAServing(model, task, config, vocab)
    if isinstance(task, tagging_tasks.TaggingTask):
        return TaggingServing(model, task, config, vocab)
    raise ValueError(f"No SavedModel export for task {task.name!r} "
                     f"({type(task).__name__}).")
