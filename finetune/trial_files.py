"""The files a fine-tuning run writes besides its checkpoints (spec g), all atomically.

results/<tasks>_results.txt and .pkl (every trial so far), results/<tasks>_predictions/
(each task's dev predictions per trial), <model dir>/eval (TensorBoard scalars of the
dev metrics) and, with write_test_outputs, test_predictions/ (the original's pickles,
GLUE-server TSVs, SQuAD answers). Under `multi_worker` only the chief calls these.
"""

from __future__ import annotations

import os

import tensorflow as tf

from finetune.classification import classification_tasks
from finetune.classification import glue_outputs
from finetune.qa import qa_scorer
from finetune.qa import qa_tasks
from util import io_utils
from util import training
from util.logging_utils import log

EVAL_SUMMARY_DIR = "eval"  # TensorBoard run of the dev metrics, inside the model dir


def prediction_path(config, task_name, split, trial):
    """results/<tasks>_predictions/<task>_<split>_<trial>.txt (TSV or CoNLL columns)."""
    tasks = ",".join(config.task_names)
    return os.path.join(config.results_dir, f"{tasks}_predictions",
                        f"{task_name}_{split}_{trial}.txt")


def glue_submission_dir(config, trial):
    """test_predictions/glue_submission_<trial>: GLUE-server files of one trial."""
    return os.path.join(config.test_predictions_dir, f"glue_submission_{trial}")


def results_lines(results, seeds):
    """results_txt lines: "<task>: <metric>: <value:.2f> - ... - seed: <seed>"."""
    lines = []
    for trial_results, seed in zip(results, seeds):
        for task_name, metrics in trial_results.items():
            values = " - ".join(f"{k}: {v:.2f}" for k, v in metrics.items())
            lines.append(f"{task_name}: {values} - seed: {seed}")
    return lines


def write_results(config, results, seeds):
    """Rewrites results_txt (one line per trial per task) and results_pkl (the list of
    per-trial {task: {metric: value}}), each atomically."""
    log(f"Writing results to {config.results_txt}")
    io_utils.write_text("\n".join(results_lines(results, seeds)) + "\n", config.results_txt)
    io_utils.write_pickle(results, config.results_pkl)


def write_eval_summaries(model_dir, step, results):
    """TensorBoard scalars "<task>/<metric>" of the evaluation at `step`, in the run
    `<model_dir>/eval` (training losses are in `<model_dir>` itself)."""
    writer = tf.summary.create_file_writer(os.path.join(model_dir, EVAL_SUMMARY_DIR))
    training.write_scalars(writer, step, {f"{task}/{metric}": value
                                          for task, metrics in results.items()
                                          for metric, value in metrics.items()})
    writer.close()


def write_test_outputs(runner, trial):
    """The original's test-set files, plus GLUE-server TSVs for GLUE tasks.

    Args:
      runner: the trial's finetune_runner.ModelRunner (its config, tasks, predictions).
      trial: 1-based trial number, part of every file name.
    """
    c = runner.config
    for task in runner.tasks:
        if isinstance(task, classification_tasks.SingleOutputTask):
            for split in task.get_test_splits():
                outputs = glue_outputs.collect_test_outputs(
                    task, runner.predictions(task, split))
                pkl = glue_outputs.write_test_pickle(
                    outputs, c.test_predictions(task.name, split, trial))
                tsv = glue_outputs.write_glue_submission(
                    task, split, outputs, glue_submission_dir(c, trial))
                log(f"Wrote {task.name} {split} predictions to {pkl} and {tsv}")
        elif isinstance(task, qa_tasks.QATask) and task.get_test_splits():
            for split in task.get_test_splits():
                _write_qa_test_outputs(runner, task, split, trial)
        else:
            log(f"{task.name}: no test-set outputs (written for GLUE tasks and squad)")


def _write_qa_test_outputs(runner, task, split, trial):
    """{question id: answer, "" when the null score exceeds qa_na_threshold} JSON."""
    c = runner.config
    scorer = task.get_scorer(split)
    for example_outputs in runner.predictions(task, split):
        scorer.update(example_outputs)
    predictions, null_odds = scorer.decode()
    if task.v2:
        predictions = qa_scorer.thresholded_answers(predictions, null_odds,
                                                    c.qa_na_threshold)
    # The original wrote this JSON under a ".pkl" name; it gets its real suffix here.
    path = os.path.splitext(c.test_predictions(task.name, split, trial))[0] + ".json"
    io_utils.write_json(predictions, path)
    log(f"Wrote {task.name} {split} predictions to {path}")
