"""Config controlling hyperparameters for fine-tuning ELECTRA."""

import dataclasses
import os
from typing import Optional

from configure_pretraining import resolve_precision, validate_execution
from util import config_utils

DEBUG_DEFAULTS = dict(
        save_checkpoints_steps=1000000, use_tfrecords_if_existing=False, num_trials=1,
        iterations_per_loop=1, train_batch_size=32, num_train_epochs=3.0,
        log_examples=True, log_every_steps=1)
DEBUG_MODEL = dict(hidden_size=144, num_hidden_layers=3, intermediate_size=576,
                                      num_attention_heads=4)
QA_TASK_MARKERS = ("squad", "qa")
QA_TASKS_WITHOUT_MARKER = ("naturalqs",)  # the original missed it (spec b.3 quirk)


@dataclasses.dataclass(frozen=True)
class FinetuningConfig:
    """Every fine-tuning hparam: the original's names and defaults (spec b.3)."""
    data_dir: str
    model_name: str

    # general
    debug: bool = False  # debug mode for quickly running things
    log_examples: bool = False  # print out some train examples for debugging
    num_trials: int = 1  # how many train+eval runs to perform; < 0 loops forever
    do_train: bool = True  # train a model
    do_eval: bool = True  # evaluate the model
    keep_all_models: bool = True  # if False, only keep the last trial's ckpt

    # model
    model_size: str = "small"  # one of "small", "base", or "large"
    task_names: tuple[str, ...] = ("chunk",)  # which tasks to learn
    # override the default transformer hparams for the provided model size
    model_hparam_overrides: dict = dataclasses.field(default_factory=dict)
    embedding_size: Optional[int] = None  # None -> hidden size (128 for small)
    vocab_size: int = 30522  # number of tokens in the vocabulary
    do_lower_case: bool = True

    # training
    learning_rate: Optional[float] = None  # None -> 1e-4 (large: 5e-5)
    weight_decay_rate: float = 0.01
    layerwise_lr_decay: Optional[float] = None  # None -> 0.8 (large: 0.9); <= 0 off
    num_train_epochs: Optional[float] = None  # None -> per-task default (3, 10, 2)
    warmup_proportion: float = 0.1  # how much of training to warm up the LR for
    save_checkpoints_steps: int = 1000000
    iterations_per_loop: int = 1000
    use_tfrecords_if_existing: bool = True  # don't make tfrecords and write them
    # to disk if existing ones can be found

    # writing model outputs to disk
    write_test_outputs: bool = False  # whether to write test set outputs
    n_writes_test: int = 5  # write test set predictions for the first n trials

    # sizing
    max_seq_length: Optional[int] = None  # None -> per-task default (128, 512, 256)
    train_batch_size: int = 32
    eval_batch_size: int = 32
    predict_batch_size: int = 32
    double_unordered: bool = True  # for tasks like paraphrase where sentence
    # order doesn't matter, train the model on both sentence orderings for each example

    # for qa tasks
    max_query_length: int = 64  # max tokens in q as opposed to context
    doc_stride: int = 128  # stride when splitting doc into multiple examples
    n_best_size: int = 20  # number of predictions per example to save
    max_answer_length: int = 30  # filter out answers longer than this length
    answerable_classifier: bool = True  # answerable classifier for SQuAD 2.0
    answerable_uses_start_logits: bool = True  # more advanced answerable classifier
    answerable_weight: float = 0.5  # weight for answerability loss
    joint_prediction: bool = True  # jointly predict the start and end positions
    # of the answer span
    beam_size: int = 20  # beam size when doing joint predictions
    qa_na_threshold: float = -2.75  # threshold for "no answer" when writing SQuAD2.0 test outputs

    # TPU settings
    use_tpu: bool = False
    num_tpu_cores: int = 1
    tpu_job_name: Optional[str] = None
    tpu_name: Optional[str] = None
    tpu_zone: Optional[str] = None
    gcp_project: Optional[str] = None

    # TF2 execution (not in the original)
    distribution_strategy: str = "one_device"  # one_device, mirrored, multi_worker, tpu
    # multi_worker: seconds without a heartbeat after which a worker counts as dead and
    # the others stop (exit code 69, README "Long runs and faults"); 10 is TF's default
    worker_heartbeat_timeout_secs: float = 10.0
    mixed_precision: str = "float32"  # as in pre-training, "auto" included
    loss_scale: float = 32768.0
    jit_compile: bool = False
    seed: int = 0  # trial t (1-based) uses seed + t - 1; recorded in the results
    log_every_steps: int = 10  # the original logged every 10 steps

    # default locations of data files (None -> derived from data_dir / model_name)
    pretrained_model_dir: Optional[str] = None  # <data-dir>/models/<model-name>
    vocab_file: Optional[str] = None  # its vocab.txt if present, else <data-dir>/vocab.txt
    init_checkpoint: Optional[str] = None  # pre-trained (or fine-tuned) checkpoint/dir
    model_dir: Optional[str] = None  # finetuning_models/<tasks>_model, + _<trial>
    raw_data_dir: Optional[str] = None  # <data-dir>/finetuning_data (+ /<task>)
    preprocessed_data_dir: Optional[str] = None  # finetuning_tfrecords/<tasks>_tfrecords
    results_dir: Optional[str] = None  # <pretrained_model_dir>/results
    results_txt: Optional[str] = None
    results_pkl: Optional[str] = None
    qa_results_dir: Optional[str] = None  # results/<tasks>_qa
    test_predictions_dir: Optional[str] = None

    def __post_init__(self):
        _validate(self)

    # Paths that depend on a task name (the original used lambdas).
    def task_data_dir(self, task_name):
        return os.path.join(self.raw_data_dir, task_name)

    def qa_eval_file(self, task_name):
        return os.path.join(self.qa_results_dir, task_name + "_eval.json")

    def qa_preds_file(self, task_name):
        return os.path.join(self.qa_results_dir, task_name + "_preds.json")

    def qa_na_file(self, task_name):
        return os.path.join(self.qa_results_dir, task_name + "_null_odds.json")

    def test_predictions(self, task_name, split, trial):
        return os.path.join(self.test_predictions_dir,
                                                f"{task_name}_{split}_{trial}_predictions.pkl")

    def for_trial(self, trial):
        """The config of trial `trial` (1-based): its own model dir and seed."""
        return dataclasses.replace(self, model_dir=f"{self.model_dir}_{trial}",
                                                              seed=self.seed + trial - 1)


def _validate(c):
    if not c.task_names:
        raise config_utils.ConfigError("task_names must name at least one task.")
    if not (c.do_train or c.do_eval):
        raise config_utils.ConfigError("at least one of do_train or do_eval must be true.")
    validate_execution(c)
    for name in ("train_batch_size", "eval_batch_size", "predict_batch_size"):
        if getattr(c, name) < 1:
            raise config_utils.ConfigError(f"{name} must be >= 1, got {getattr(c, name)}.")


def is_qa_task(task_name):
    return (any(m in task_name for m in QA_TASK_MARKERS)
                    or task_name in QA_TASKS_WITHOUT_MARKER)


def _task_defaults(task_names):
    """Per-task defaults, applied (as in the original) only for a single task."""
    if len(task_names) != 1:
        return {"num_train_epochs": 3.0, "max_seq_length": 128}
    task = task_names[0]
    if task in ("rte", "sts"):
        return {"num_train_epochs": 10.0, "max_seq_length": 128}
    if is_qa_task(task):
        return {"num_train_epochs": 2.0, "max_seq_length": 512}
    if task == "chunk":
        return {"num_train_epochs": 3.0, "max_seq_length": 256}
    return {"num_train_epochs": 3.0, "max_seq_length": 128}


def _path_defaults(data_dir, model_name, c):
    pretrained = c.get("pretrained_model_dir") or os.path.join(data_dir, "models", model_name)
    tasks = ",".join(c["task_names"])
    own_vocab = os.path.join(pretrained, "vocab.txt")
    results = c.get("results_dir") or os.path.join(pretrained, "results")
    suffix = "-debug" if c.get("debug") else ""
    return {
            "pretrained_model_dir": pretrained,
            "vocab_file": own_vocab if os.path.exists(own_vocab)
                                        else os.path.join(data_dir, "vocab.txt"),
            # The original set init_checkpoint before reading overrides, so "debug"
            # passed in --hparams never took effect there; debug starts from scratch.
            "init_checkpoint": None if c.get("debug") else pretrained,
            "model_dir": os.path.join(pretrained, "finetuning_models", tasks + "_model"),
            "raw_data_dir": os.path.join(data_dir, "finetuning_data"),
            "preprocessed_data_dir": os.path.join(
                    pretrained, "finetuning_tfrecords", tasks + "_tfrecords" + suffix),
            "results_dir": results,
            "results_txt": os.path.join(results, tasks + "_results.txt"),
            "results_pkl": os.path.join(results, tasks + "_results.pkl"),
            "qa_results_dir": os.path.join(results, tasks + "_qa"),
            "test_predictions_dir": os.path.join(pretrained, "test_predictions"),
    }


def make_config(data_dir, model_name, hparams=None):
    """Defaults -> user overrides -> debug/task/size defaults -> derived paths."""
    # init_checkpoint: null fine-tunes from random weights; embedding_size: null asks for
    # the hidden size.
    user = config_utils.user_overrides(FinetuningConfig, hparams,
                                       none_is_a_value=("init_checkpoint", "embedding_size"))
    if not user.get("do_train", True) and not user.get("init_checkpoint"):
        raise config_utils.ConfigError(
                "do_eval without do_train needs init_checkpoint pointing at a fine-tuned "
                "model dir, e.g. <data-dir>/models/<model-name>/finetuning_models/"
                "<task>_model_1.")
    c = dict(user)
    c["task_names"] = tuple(c.get("task_names", FinetuningConfig.task_names))
    # Later layers win over earlier ones, the user's values over all (the
    # original's order: task defaults, size defaults, debug, then overrides).
    size = c.get("model_size", "small")
    layered = _task_defaults(c["task_names"])
    layered.update({"learning_rate": 5e-5 if size == "large" else 1e-4,
                                    "layerwise_lr_decay": 0.9 if size == "large" else 0.8})
    if size == "small":
        layered["embedding_size"] = 128
    if c.get("debug"):
        layered.update(DEBUG_DEFAULTS)
        c["model_hparam_overrides"] = {**DEBUG_MODEL, **user.get("model_hparam_overrides", {})}
    config_utils.merge_defaults(c, user, layered)
    if c.get("use_tpu"):
        config_utils.merge_defaults(c, user, {"distribution_strategy": "tpu"})
    config_utils.merge_defaults(c, user, _path_defaults(data_dir, model_name, c))
    resolve_precision(c)
    return FinetuningConfig(data_dir=data_dir, model_name=model_name, **c)
