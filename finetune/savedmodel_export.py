"""Exports a fine-tuned model dir as a TensorFlow SavedModel that takes raw text.

The library behind export_savedmodel.py (and predict.py's checkpoint mode). The source
is a run_finetuning.py trial dir, finetuning_models/<tasks>_model_<trial>: its
finetuning_config.json rebuilds the task, the tokenizer settings and the encoder sizes,
and its latest checkpoint gives the weights. One task is exported (--task picks it in
a multi-task model). The SavedModel (see finetune/serving_modules.py for the
signatures) holds the vocab and the tokenizer as graph ops, so it loads with
tf.saved_model.load after `import tensorflow_text`, without this repository, and
serves with TensorFlow Serving. Its assets/ hold vocab.txt and electra_task.json (task,
inputs, outputs, label names, max_seq_length, do_lower_case, QA settings, source).
The directory is written under a hidden temporary name and renamed when complete.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile

import tensorflow as tf

from configure_finetuning import FinetuningConfig
from finetune import finetune_model
from finetune import finetune_runner
from finetune import init_checkpoint
from finetune import serving_modules
from finetune import task_builder
from finetune.qa import qa_tasks
from finetune.tagging import tagging_tasks
from model import layer_norm
from model import modeling
from model import tokenization
from util import config_utils
from util import io_utils
from util.cli import UserError
from util.logging_utils import log

METADATA_FILE = "electra_task.json"
FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class LoadedTask:
    """A fine-tuned model restored for one task."""
    config: FinetuningConfig
    task: object  # finetune.task.Task
    model: finetune_model.FinetuningModel
    vocab: dict  # token -> id
    checkpoint: str  # prefix the weights came from


@dataclasses.dataclass(frozen=True)
class ExportResult:
    output_dir: str
    task_name: str
    task_type: str
    inputs: tuple
    outputs: tuple
    checkpoint: str


def load_config(model_dir: str) -> FinetuningConfig:
    """The FinetuningConfig that run_finetuning.py saved in `model_dir`."""
    path = os.path.join(model_dir, finetune_runner.MODEL_DIR_MARKER)
    if not os.path.isdir(model_dir):
        raise UserError(f"Model dir {model_dir} does not exist; pass a fine-tuned model dir "
                        "such as <data-dir>/models/<model>/finetuning_models/cola_model_1.")
    try:
        saved = config_utils.load_saved_config(path)
    except ValueError as e:
        raise UserError(f"{path} is not valid JSON ({e}).") from None
    if saved is None:
        raise UserError(f"{model_dir} is not a fine-tuned model dir (no "
                        f"{finetune_runner.MODEL_DIR_MARKER}); pass a "
                        "finetuning_models/<tasks>_model_<trial> dir written by "
                        "run_finetuning.py.")
    return FinetuningConfig(**config_utils.check_overrides(FinetuningConfig, saved))


def choose_task(config: FinetuningConfig, task_name: str | None) -> str:
    """`task_name`, checked; None is allowed for a single-task model."""
    names = list(config.task_names)
    if task_name is None:
        if len(names) > 1:
            raise UserError(f"This model was fine-tuned on several tasks {names}; choose one "
                            "with --task.")
        return names[0]
    if task_name not in names:
        raise UserError(f"--task {task_name!r} is not one of this model's tasks {names}.")
    return task_name


def _check_task(task, config: FinetuningConfig) -> None:
    """Files and settings the export needs beyond the checkpoint."""
    if isinstance(task, tagging_tasks.TaggingTask) and not os.path.exists(
            task.label_mapping_path):
        raise UserError(f"The tag list of task {task.name!r} ({task.label_mapping_path}, "
                        "written by run_finetuning.py) is missing; the export needs it to "
                        "name the tags.")
    if isinstance(task, qa_tasks.QATask) and (
            config.max_seq_length < config.max_query_length + 4):
        raise UserError(f"max_seq_length {config.max_seq_length} leaves no room for the "
                        f"context after a question of max_query_length "
                        f"{config.max_query_length}.")


def _load_vocab(config: FinetuningConfig) -> dict:
    vocab = tokenization.load_vocab(config.vocab_file)  # VocabError is a UserError
    if max(vocab.values()) >= config.vocab_size:
        raise UserError(f"{config.vocab_file} has ids up to {max(vocab.values())} but the "
                        f"model's vocab_size is {config.vocab_size}; it is not this "
                        "model's vocab.")
    return vocab


def load_finetuned(model_dir: str, task_name: str | None = None) -> LoadedTask:
    """Rebuilds the model of one task from a fine-tuned model dir and restores it."""
    config = load_config(model_dir)
    name = choose_task(config, task_name)
    # The task alone, as task 0 (FinetuningModel indexes heads by position).
    config = dataclasses.replace(config, task_names=(name,))
    vocab = _load_vocab(config)
    tokenizer = tokenization.FullTokenizer(config.vocab_file, config.do_lower_case)
    task = task_builder.get_task(config, name, tokenizer)
    _check_task(task, config)
    try:
        bert_config = modeling.get_bert_config(config.model_size, config.vocab_size,
                                               config.embedding_size,
                                               config.model_hparam_overrides)
    except ValueError as e:
        raise UserError(str(e)) from None
    model = finetune_model.FinetuningModel(bert_config, [task])
    prefix = init_checkpoint.resolve_checkpoint(model_dir)
    init_checkpoint.init_from_checkpoint(model.named_variables(), prefix,
                                         require_heads=True)
    return LoadedTask(config, task, model, vocab, prefix)


def build_module(loaded: LoadedTask) -> serving_modules.ServingModule:
    return serving_modules.serving_module(loaded.model, loaded.task, loaded.config,
                                          loaded.vocab)


def check_output_dir(output_dir: str, overwrite: bool, model_dir: str) -> None:
    """Refuses a non-empty output dir unless overwrite, and never the model dir."""
    if os.path.lexists(output_dir) and not os.path.isdir(output_dir):
        raise UserError(f"Output path {output_dir} exists and is not a directory.")
    out, src = os.path.realpath(output_dir), os.path.realpath(model_dir)
    if os.path.commonpath([out, src]) in (out, src):
        raise UserError(f"Output dir {output_dir} overlaps the model dir {model_dir}; "
                        "choose a directory outside it.")
    if os.path.isdir(output_dir) and os.listdir(output_dir) and not overwrite:
        raise UserError(f"Output dir {output_dir} is not empty; choose a new one or pass "
                        "--overwrite to replace it.")


def save(module: serving_modules.ServingModule, loaded: LoadedTask,
         output_dir: str) -> ExportResult:
    """Writes the SavedModel (atomically) with its two signatures and assets."""
    # The tf.functions themselves, not concrete functions: saving traces them anyway
    # (in its own context), so tracing them before would double the work.
    signatures = {"serving_default": module.serve, "featurize": module.featurize}
    metadata = {"format_version": FORMAT_VERSION, **module.metadata(),
                "vocab_size": loaded.config.vocab_size,
                "source_checkpoint": os.path.abspath(loaded.checkpoint),
                "model_size": loaded.config.model_size}
    with tempfile.TemporaryDirectory() as staging:
        meta_path = os.path.join(staging, METADATA_FILE)
        with open(meta_path, "w", encoding="utf-8") as f:
            f.write(json.dumps(metadata, indent=2) + "\n")
        module.metadata_file = tf.saved_model.Asset(meta_path)
        module.vocab_file = tf.saved_model.Asset(loaded.config.vocab_file)
        # Saving traces the graph: with TensorFlow's plain LayerNorm ops, which every
        # build and device runs (TensorFlow Serving, GPUs), not oneDNN's CPU kernel.
        with io_utils.atomic_dir(output_dir) as temp, layer_norm.portable():
            tf.saved_model.save(module, temp, signatures=signatures)
    return ExportResult(output_dir, metadata["task_name"], module.kind,
                        tuple(module.input_names), module.output_names(), loaded.checkpoint)


def export(model_dir: str, output_dir: str, task: str | None = None,
           overwrite: bool = False) -> ExportResult:
    """Exports one task of a fine-tuned model dir as a SavedModel in `output_dir`.

    Args:
      model_dir: finetuning_models/<tasks>_model_<trial> of run_finetuning.py.
      output_dir: directory to write (absent or empty unless overwrite).
      task: the task to export; required when the model has several.
      overwrite: replace a non-empty output_dir.
    Returns:
      ExportResult.
    """
    check_output_dir(output_dir, overwrite, model_dir)
    loaded = load_finetuned(model_dir, task)
    module = build_module(loaded)
    result = save(module, loaded, output_dir)
    log(f"Wrote SavedModel of task {result.task_name} ({result.task_type}; inputs "
        f"{', '.join(result.inputs)}; outputs {', '.join(result.outputs)}) from "
        f"{loaded.checkpoint} to {output_dir}")
    return result
