"""Question answering tasks: SQuAD 2.0 ("squad"), SQuAD 1.1 ("squadv1") and the MRQA
2019 tasks ("newsqa", "naturalqs", "triviaqa", "searchqa", "hotpotqa").

Files (spec e.1) under <data-dir>/finetuning_data/<task>/: SQuAD tasks read
`<split>.json` (`<split>-debug.json` in debug mode), MRQA tasks `<split>.jsonl` (the
first 11 lines in debug mode). Answers are extracted only for the "train" split;
training answers that cannot be recovered from the context are dropped and counted.
"""

import abc

from finetune import task as task_lib
from finetune import task_builder
from finetune.qa import qa_data
from finetune.qa import qa_featurize
from finetune.qa import qa_head
from finetune.qa import qa_scorer
from util import logging_utils

# The original's debug mode stopped MRQA reading after line index 10.
MRQA_DEBUG_MAX_LINES = 11


class QATask(task_lib.Task):
    """A span-extraction QA task (shared featurisation, head and scorer).

    Args:
      config: FinetuningConfig (max_seq_length, max_query_length, doc_stride, the
        answerable_* / joint_prediction / beam_size / n_best_size / max_answer_length /
        qa_na_threshold hparams, debug, qa_results_dir).
      name: task name.
      tokenizer: model.tokenization.FullTokenizer.
      v2: SQuAD 2.0 semantics (unanswerable questions, null odds).
    """

    def __init__(self, config, name, tokenizer, v2=False):
        super().__init__(config, name, tokenizer)
        self.v2 = v2
        self._examples = {}
        self.failures = {}
        self._featurizer = qa_featurize.QAFeaturizer(
            tokenizer, config.max_seq_length, config.max_query_length, config.doc_stride)

    @abc.abstractmethod
    def gold_file_name(self, split):
        """File name of `split` inside the task's data directory."""

    def gold_file(self, split):
        """Path of `split`'s file (a clear error if it is missing)."""
        return self.data_file(self.gold_file_name(split))

    @abc.abstractmethod
    def _read(self, path, is_training):
        """Reads one file into a qa_data.ReadResult."""

    def get_examples(self, split):
        """Examples of `split` (cached); logs "N examples created, M failures"."""
        if split not in self._examples:
            result = self._read(self.gold_file(split), is_training=split == "train")
            self._examples[split] = result.examples
            self.failures[split] = result.failures
            logging_utils.log("%s %s: %d examples created, %d failures" % (
                self.name, split, len(result.examples), result.failures))
        return self._examples[split]

    def featurize_windows(self, example, is_training):
        """All windows of `example` as qa_featurize.QAFeature (token maps included)."""
        return self._featurizer.featurize(example, is_training)

    def featurize(self, example, is_training, log=False):
        """One feature dict per window: shared features, eid (1000 * example eid +
        window) and, for training, start/end_positions and is_impossible."""
        dicts = []
        for window in self.featurize_windows(example, is_training):
            features = self.shared_features(window.input_ids, window.input_mask,
                                            window.segment_ids)
            features["eid"] = window.feature_id
            if is_training:
                features.update(start_positions=window.start_position,
                                end_positions=window.end_position,
                                is_impossible=int(window.is_impossible))
            if log:
                self._log_window(example, window)
            dicts.append(features)
        return dicts

    @staticmethod
    def _log_window(example, window):
        """Logs one window the way the original's log_examples did (tokens, targets)."""
        lines = ["  %s window %d: %s" % (example.example_id, window.doc_span_index,
                                         " ".join(window.tokens))]
        if window.start_position is not None:
            answer = " ".join(window.tokens[window.start_position:window.end_position + 1])
            lines.append("    start %d end %d answer: %s%s" % (
                window.start_position, window.end_position, answer,
                " (impossible)" if window.is_impossible else ""))
        logging_utils.log("\n".join(lines))

    def get_feature_specs(self):
        return [self.feature("eid"), self.feature("start_positions"),
                self.feature("end_positions"), self.feature("is_impossible")]

    def get_prediction_module(self, hidden_size):
        c = self.config
        return qa_head.QAHead(
            self.name, hidden_size, beam_size=c.beam_size,
            joint_prediction=c.joint_prediction,
            answerable_classifier=c.answerable_classifier,
            answerable_uses_start_logits=c.answerable_uses_start_logits,
            answerable_weight=c.answerable_weight)

    def get_scorer(self, split="dev", output_dir=None):
        return qa_scorer.SpanBasedQAScorer(self, split, output_dir)

    def cache_settings(self):
        c = self.config
        return {**super().cache_settings(), "v2": self.v2,
                "max_seq_length": c.max_seq_length, "max_query_length": c.max_query_length,
                "doc_stride": c.doc_stride, "do_lower_case": c.do_lower_case,
                "debug": c.debug}


class SQuADTask(QATask):
    """SQuAD 1.1 or 2.0 JSON files."""

    def gold_file_name(self, split):
        return split + ("-debug" if self.config.debug else "") + ".json"

    def _read(self, path, is_training):
        return qa_data.read_squad(path, self.name, is_training, self.v2)

    def get_test_splits(self):
        return ["test"] if self.v2 else []


class MRQATask(QATask):
    """A task of the MRQA 2019 shared task (JSON lines, header line skipped)."""

    def gold_file_name(self, split):
        return split + ".jsonl"

    def _read(self, path, is_training):
        max_lines = MRQA_DEBUG_MAX_LINES if self.config.debug else None
        return qa_data.read_mrqa(path, self.name, is_training, max_lines)

    def get_test_splits(self):
        return []


@task_builder.register_task("squad")
class SQuAD(SQuADTask):
    def __init__(self, config, tokenizer):
        super().__init__(config, "squad", tokenizer, v2=True)


@task_builder.register_task("squadv1")
class SQuADv1(SQuADTask):
    def __init__(self, config, tokenizer):
        super().__init__(config, "squadv1", tokenizer)


@task_builder.register_task("newsqa")
class NewsQA(MRQATask):
    def __init__(self, config, tokenizer):
        super().__init__(config, "newsqa", tokenizer)


@task_builder.register_task("naturalqs")
class NaturalQuestions(MRQATask):
    def __init__(self, config, tokenizer):
        super().__init__(config, "naturalqs", tokenizer)


@task_builder.register_task("searchqa")
class SearchQA(MRQATask):
    def __init__(self, config, tokenizer):
        super().__init__(config, "searchqa", tokenizer)


@task_builder.register_task("triviaqa")
class TriviaQA(MRQATask):
    def __init__(self, config, tokenizer):
        super().__init__(config, "triviaqa", tokenizer)


@task_builder.register_task("hotpotqa")
class HotpotQA(MRQATask):
    def __init__(self, config, tokenizer):
        super().__init__(config, "hotpotqa", tokenizer)
