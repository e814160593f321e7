"""StudyConfig: every setting of the learning study, its FULL defaults and QUICK preset.

Built like the run scripts' configs: defaults (FULL) -> the QUICK preset (--quick) ->
the user's --hparams JSON -> derived fields (None sentinels, so explicit values win).
"""

import dataclasses
import math
from typing import Optional

import configure_finetuning
from util import config_utils

SHARED_VOCAB_SIZE = 30522  # tokens in <shared-data>/vocab/vocab.txt (BERT's uncased)
TASKS = ("cola", "sst", "mrpc", "sts", "rte", "chunk")
OBJECTIVES = ("electra", "mlm")
# The metric the ELECTRA paper reports per task, as named by the task's scorer.
PRIMARY_METRIC = {"cola": "mcc", "sst": "accuracy", "mrpc": "accuracy", "sts": "spearman",
                  "rte": "accuracy", "chunk": "f1"}
# FinetuningConfig fields the study sets itself; task_hparams may not override them.
OWNED_FINETUNE_HPARAMS = frozenset((
    "task_names", "model_size", "model_hparam_overrides", "embedding_size", "vocab_size",
    "vocab_file", "do_lower_case", "init_checkpoint", "num_trials", "seed",
    "keep_all_models", "do_train", "do_eval", "debug", "pretrained_model_dir",
    "raw_data_dir", "preprocessed_data_dir", "model_dir", "results_dir", "results_txt",
    "results_pkl", "qa_results_dir", "test_predictions_dir", "write_test_outputs"))

# Settings added after the first FULL work dirs were made, with the value those ran with.
ADDED_SETTINGS = {"corpus_vocab_size": None, "pretrain_dropout": 0.1, "temperature": 1.0}

# The QUICK preset: a 2-layer, 32-wide model, 20 pre-training steps on one small corpus
# file and 64-example task subsets, so the whole study runs in a couple of minutes.
QUICK = dict(
    corpus_files=("inaugural.txt",), num_out_files=2,
    hidden_size=32, num_hidden_layers=2, intermediate_size=128,
    electra_steps=20, checkpoint_steps=(10, 20), train_batch_size=8, eval_batch_size=8,
    num_eval_steps=2, num_warmup_steps=5, log_every_steps=10,
    train_examples={task: 64 for task in TASKS}, dev_examples={task: 64 for task in TASKS},
    final_seeds=2, curve_seeds=1, finetune_epochs=1.0, finetune_max_seq_length=64,
    finetune_batch_size=16, task_hparams={})


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """Settings of experiments/learning_study.py; defaults are the FULL study."""

    # data
    corpus_files: tuple = ()  # corpus/*.txt file names to pre-train on; () = every .txt
    max_seq_length: int = 128  # pre-training tokens per example
    num_processes: int = 2  # dataset-building processes
    num_out_files: int = 16  # pre-training TFRecord shards
    data_seed: int = 0  # seeds TFRecord building and the task subsamples
    # task -> training rows kept (sentences for chunk); a task not listed keeps all
    train_examples: dict = dataclasses.field(default_factory=lambda: {
        task: 2000 for task in TASKS})
    dev_examples: dict = dataclasses.field(default_factory=dict)  # same, dev; {} = whole

    # model: the discriminator (MLM trains a network of this size; the ELECTRA
    # generator is generator_hidden_size times as wide)
    hidden_size: int = 128
    num_hidden_layers: int = 4
    num_attention_heads: Optional[int] = None  # None -> max(1, hidden_size // 64)
    intermediate_size: Optional[int] = None  # None -> 4 * hidden_size
    embedding_size: Optional[int] = None  # None -> hidden_size
    generator_hidden_size: float = 0.25  # frac of the discriminator's hidden size
    # None: the shared BERT vocab; N: a WordPiece vocab of at most N tokens learnt from
    # the pre-training corpus in the data stage (a smaller table trains faster and
    # each row is updated more often; both objectives and random init use it)
    corpus_vocab_size: Optional[int] = None
    vocab_size: Optional[int] = None  # None -> corpus_vocab_size, or 30522 (shared vocab)
    # dropout while pre-training (hidden and attention; the original's 0.1); fine-tuning
    # always uses the model's 0.1
    pretrain_dropout: float = 0.1
    # ELECTRA's generator sampling temperature (the original's `temperature`, 1.0);
    # above 1, early fakes are rarer than the tokens they replace, so detectable
    temperature: float = 1.0

    # pre-training (both objectives: same data, batch, peak LR, warmup and seed)
    electra_steps: int = 4000  # ELECTRA pre-training steps
    checkpoint_steps: tuple = (500, 1000, 2000, 4000)  # ELECTRA steps evaluated
    mlm_steps: Optional[int] = None  # None -> same total FLOPs as ELECTRA
    mlm_checkpoint_steps: Optional[tuple] = None  # None -> checkpoint_steps scaled alike
    train_batch_size: int = 32
    learning_rate: float = 1e-3
    num_warmup_steps: int = 200
    eval_batch_size: int = 32
    num_eval_steps: int = 20  # pre-training eval batches per checkpoint
    seed: int = 0  # pre-training seed; fine-tuning seeds are seed, seed + 1, ...
    log_every_steps: int = 100  # pre-training progress line interval

    # fine-tuning
    tasks: tuple = TASKS  # tasks fine-tuned from every init
    final_seeds: int = 3  # seeds for random init and each objective's final checkpoint
    curve_seeds: int = 1  # seeds for the intermediate checkpoints
    finetune_learning_rate: float = 3e-4  # the paper's ELECTRA-Small value
    finetune_epochs: float = 3.0
    layerwise_lr_decay: float = 0.8
    finetune_batch_size: int = 32
    finetune_max_seq_length: int = 128
    # task -> {FinetuningConfig hparam: value}, applied over the fields above
    task_hparams: dict = dataclasses.field(default_factory=lambda: {
        "cola": {"max_seq_length": 64}, "sst": {"max_seq_length": 64}})

    def __post_init__(self):
        _validate(self)

    def model_hparam_overrides(self):
        """The transformer sizes as PretrainingConfig/FinetuningConfig overrides."""
        return {"hidden_size": self.hidden_size, "num_hidden_layers": self.num_hidden_layers,
                "num_attention_heads": self.num_attention_heads,
                "intermediate_size": self.intermediate_size}

    def steps(self, objective):
        return self.electra_steps if objective == "electra" else self.mlm_steps

    def objective_checkpoint_steps(self, objective):
        return (self.checkpoint_steps if objective == "electra"
                else self.mlm_checkpoint_steps)

    def pretrain_model_hparams(self, objective):
        """PretrainingConfig hparams that fix the model and one step's shape (FLOPs)."""
        overrides = {**self.model_hparam_overrides(),
                     "hidden_dropout_prob": self.pretrain_dropout,
                     "attention_probs_dropout_prob": self.pretrain_dropout}
        return {"electra_objective": objective == "electra", "model_size": "small",
                "model_hparam_overrides": overrides,
                "embedding_size": self.embedding_size, "vocab_size": self.vocab_size,
                "generator_hidden_size": self.generator_hidden_size,
                "max_seq_length": self.max_seq_length,
                "train_batch_size": self.train_batch_size}

    def pretrain_hparams(self, objective):
        """Every PretrainingConfig hparam of one objective's run (paths excepted)."""
        steps = self.objective_checkpoint_steps(objective)
        return {**self.pretrain_model_hparams(objective),
                "num_train_steps": self.steps(objective), "learning_rate": self.learning_rate,
                "temperature": self.temperature,
                "num_warmup_steps": self.num_warmup_steps,
                "eval_batch_size": self.eval_batch_size, "num_eval_steps": self.num_eval_steps,
                "save_checkpoints_steps": save_interval(steps),
                "keep_checkpoint_max": 0, "seed": self.seed,
                "log_every_steps": self.log_every_steps}


def save_interval(checkpoint_steps):
    """The save_checkpoints_steps that saves every step of `checkpoint_steps`: the gcd
    of all but the last (the last, num_train_steps, is always saved)."""
    return math.gcd(*checkpoint_steps[:-1]) if len(checkpoint_steps) > 1 else checkpoint_steps[0]


def _check_steps(name, steps, total, total_name):
    if steps is None:
        return
    if not steps or list(steps) != sorted(set(steps)) or steps[0] < 1:
        raise config_utils.ConfigError(
            f"{name} must be increasing positive steps, got {list(steps)}.")
    if steps[-1] != total:
        raise config_utils.ConfigError(
            f"{name} must end at {total_name} ({total}), got {list(steps)}; the last "
            "checkpoint is the final model.")


def _check_task_dict(name, value, check_value):
    for task, v in value.items():
        if task not in TASKS:
            raise config_utils.ConfigError(
                f"{name} names unknown task {task!r}; the study's tasks are {TASKS}.")
        check_value(task, v)


def _positive_int(name):
    def check(task, v):
        if not (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
            raise config_utils.ConfigError(f"{name}[{task!r}] must be an int >= 1, got {v!r}.")
    return check


def _check_task_hparams(task, hparams):
    if not isinstance(hparams, dict):
        raise config_utils.ConfigError(f"task_hparams[{task!r}] must be a dict of "
                                       f"FinetuningConfig hparams, got {hparams!r}.")
    owned = sorted(set(hparams) & OWNED_FINETUNE_HPARAMS)
    if owned:
        raise config_utils.ConfigError(
            f"task_hparams[{task!r}] sets {owned}, which the study sets itself; use the "
            "StudyConfig fields instead.")
    config_utils.check_overrides(configure_finetuning.FinetuningConfig, hparams)


def _validate(c):
    unknown = [t for t in c.tasks if t not in TASKS]
    if unknown or not c.tasks or len(set(c.tasks)) != len(c.tasks):
        raise config_utils.ConfigError(
            f"tasks must list distinct tasks among {TASKS}, got {list(c.tasks)}.")
    _check_steps("checkpoint_steps", c.checkpoint_steps, c.electra_steps, "electra_steps")
    _check_steps("mlm_checkpoint_steps", c.mlm_checkpoint_steps, c.mlm_steps, "mlm_steps")
    for name in ("final_seeds", "curve_seeds", "electra_steps", "train_batch_size",
                 "eval_batch_size", "num_eval_steps", "num_processes", "finetune_batch_size"):
        if getattr(c, name) < 1:
            raise config_utils.ConfigError(f"{name} must be >= 1, got {getattr(c, name)}.")
    if c.corpus_vocab_size is not None and c.corpus_vocab_size < 100:
        raise config_utils.ConfigError(
            f"corpus_vocab_size must be at least 100 tokens, got {c.corpus_vocab_size}.")
    if c.vocab_size < (c.corpus_vocab_size or 1):
        raise config_utils.ConfigError(
            f"vocab_size {c.vocab_size} is smaller than corpus_vocab_size "
            f"{c.corpus_vocab_size}: leave vocab_size out to use the corpus vocab's size.")
    if c.temperature <= 0:
        raise config_utils.ConfigError(f"temperature must be > 0, got {c.temperature}.")
    if not 0.0 <= c.pretrain_dropout < 1.0:
        raise config_utils.ConfigError(
            f"pretrain_dropout must be in [0, 1), got {c.pretrain_dropout}.")
    if c.num_out_files < c.num_processes:
        raise config_utils.ConfigError("num_out_files must be at least num_processes.")
    bad_files = [f for f in c.corpus_files if not f.endswith(".txt") or "/" in f]
    if bad_files:
        raise config_utils.ConfigError(
            f"corpus_files must be .txt file names in <shared-data>/corpus, got {bad_files}.")
    _check_task_dict("train_examples", c.train_examples, _positive_int("train_examples"))
    _check_task_dict("dev_examples", c.dev_examples, _positive_int("dev_examples"))
    _check_task_dict("task_hparams", c.task_hparams, _check_task_hparams)


def _derive_sizes(c):
    """Transformer sizes left None: the original's heads = hidden / 64, FFN = 4 x hidden."""
    hidden = c.get("hidden_size", StudyConfig.hidden_size)
    if c.get("num_attention_heads") is None:
        c["num_attention_heads"] = max(1, hidden // 64)
    if c.get("intermediate_size") is None:
        c["intermediate_size"] = 4 * hidden
    if c.get("embedding_size") is None:
        c["embedding_size"] = hidden
    if c.get("vocab_size") is None:
        c["vocab_size"] = c.get("corpus_vocab_size") or SHARED_VOCAB_SIZE


def _derive_mlm_schedule(study, flops_ratio, mlm_steps=None, mlm_checkpoint_steps=None):
    """Fills mlm_steps = round(electra_steps * ratio) (equal total FLOPs) and MLM
    checkpoint steps at the same fractions of training, unless given.

    Intermediate ELECTRA checkpoints are multiples k * u of u = save_interval; the MLM ones
    are k * round(u * ratio), so one save interval saves them all (scaling each step on
    its own could leave a gcd of 1: a checkpoint every step). They match ELECTRA's FLOPs
    to within 0.5 / u relative; the final checkpoint is mlm_steps exactly.
    """
    mlm_steps = mlm_steps or max(1, round(study.electra_steps * flops_ratio))
    if mlm_checkpoint_steps is None:
        unit = save_interval(study.checkpoint_steps)
        mlm_unit = max(1, round(unit * flops_ratio))
        mlm_checkpoint_steps = tuple(
            s // unit * mlm_unit for s in study.checkpoint_steps[:-1]) + (mlm_steps,)
    return dataclasses.replace(study, mlm_steps=mlm_steps,
                               mlm_checkpoint_steps=tuple(mlm_checkpoint_steps))


def make_study_config(quick=False, hparams=None):
    """FULL defaults -> QUICK preset (if quick) -> --hparams -> derived fields.

    Args:
        quick: apply the QUICK preset.
        hparams: dict, JSON string or .json path of StudyConfig overrides.
    Returns:
        A frozen StudyConfig with every derived field filled in.
    Raises:
        ConfigError naming an unknown key, a wrong type or an invalid combination.
    """
    # Deferred: study_flops imports TensorFlow (through model.modeling).
    from experiments import study_flops  # pylint: disable=import-outside-toplevel
    user = config_utils.user_overrides(StudyConfig, hparams)
    c = {**(QUICK if quick else {}), **user}
    _derive_sizes(c)
    mlm_steps = c.pop("mlm_steps", None)
    mlm_checkpoint_steps = c.pop("mlm_checkpoint_steps", None)
    study = StudyConfig(**c)  # validated without the MLM schedule first
    ratio = (study_flops.study_flops_per_step(study, "electra")
             / study_flops.study_flops_per_step(study, "mlm"))
    return _derive_mlm_schedule(study, ratio, mlm_steps, mlm_checkpoint_steps)
