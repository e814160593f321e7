"""Scorer for span QA: collects window outputs, decodes, writes and evaluates.

After an evaluation pass it writes, atomically, into its output directory (the
config's `results/<tasks>_qa/`): `<task>_preds.json` ({question id: answer}),
`<task>_null_odds.json` (SQuAD 2.0 only, {question id: null score}) and
`<task>_eval.json` (the official script's output dict). Metrics:
  squad   -> the official v2.0 dict (threshold qa_na_threshold), sorted by key;
  squadv1 -> exact_match, f1 (missing predictions score 0);
  MRQA    -> exact_match, f1 (questions without a prediction are skipped).
QA results contain no loss, as in the original.
"""

import os

from finetune import scorer
from finetune.qa import qa_data
from finetune.qa import qa_decoding
from finetune.qa import squad_eval
from util import io_utils


def output_paths(output_dir, task_name):
    """{kind: path} of the files a QA evaluation writes."""
    return {kind: os.path.join(output_dir, "%s_%s.json" % (task_name, kind))
            for kind in ("preds", "null_odds", "eval")}


def evaluate_predictions(task_name, v2, gold_path, predictions, null_odds,
                         na_threshold):
    """Scores predictions against the gold file with the matching official metric.

    Args:
      task_name: "squad", "squadv1" or an MRQA task name.
      v2: SQuAD 2.0 rules (needs null_odds).
      gold_path: the SQuAD JSON / MRQA JSONL the examples came from.
      predictions: {question id: text}.
      null_odds: {question id: null score} (v2 only).
      na_threshold: qa_na_threshold.
    Returns:
      dict of metric name -> value.
    """
    if gold_path.endswith(".jsonl") or gold_path.endswith(".jsonl.gz"):
        answers = qa_data.read_mrqa_answers(gold_path)
        return squad_eval.evaluate_mrqa(answers, predictions, skip_no_answer=True)
    dataset = qa_data.load_json(gold_path)
    if not isinstance(dataset, dict) or not isinstance(dataset.get("data"), list):
        raise qa_data.QADataError("%s: expected a SQuAD file with a 'data' list." % gold_path)
    if v2:
        return squad_eval.evaluate_v2(dataset["data"], predictions, null_odds, na_threshold)
    return squad_eval.evaluate_v1(dataset["data"], predictions)


class SpanBasedQAScorer(scorer.Scorer):
    """Runs evaluation for SQuAD 1.1, SQuAD 2.0 and MRQA tasks.

    Args:
      task: the qa_tasks.QATask evaluated (gives examples, windows, gold file).
      split: the evaluated split (usually "dev").
      output_dir: where the JSON files go (default: config.qa_results_dir).
    """

    def __init__(self, task, split="dev", output_dir=None):
        super().__init__()
        self._task = task
        self._split = split
        self._output_dir = output_dir or task.config.qa_results_dir
        if not self._output_dir:
            raise ValueError("SpanBasedQAScorer needs an output directory (config "
                             "qa_results_dir is unset); pass output_dir.")
        self._results = {}
        self._total_loss = 0.0
        self.predictions = self.null_odds = self.nbest = None

    def update(self, results):
        """Adds one window's outputs (numpy): eid, loss and the head's logits."""
        super().update(results)
        result = qa_decoding.RawResult.from_outputs(results)
        self._results[result.feature_id] = result
        self._total_loss += float(results["loss"])

    def get_loss(self):
        return self._total_loss / max(len(self._results), 1)

    def decode(self):
        """Decodes all examples of the split; sets predictions, null_odds, nbest."""
        task = self._task
        examples = task.get_examples(self._split)
        settings = qa_decoding.DecodeSettings.from_config(task.config)
        self.predictions, self.null_odds, self.nbest = qa_decoding.decode_all(
            examples, lambda ex: task.featurize_windows(ex, is_training=False),
            self._results, settings, task.v2)
        return self.predictions, self.null_odds

    def _get_results(self):
        predictions, null_odds = self.decode()
        task = self._task
        paths = output_paths(self._output_dir, task.name)
        io_utils.write_json(predictions, paths["preds"])
        if task.v2:
            io_utils.write_json(null_odds, paths["null_odds"])
        metrics = evaluate_predictions(task.name, task.v2, task.gold_file(self._split),
                                       predictions, null_odds, task.config.qa_na_threshold)
        io_utils.write_json(metrics, paths["eval"])
        return sorted(metrics.items())


def thresholded_answers(predictions, null_odds, na_threshold):
    """SQuAD 2.0 test output: {question id: answer, or "" if null score > threshold}."""
    return {qid: "" if null_odds[qid] > na_threshold else text
            for qid, text in predictions.items()}
