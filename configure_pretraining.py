"""Config controlling hyperparameters for pre-training ELECTRA."""

import dataclasses
import os
from typing import Optional

from util import backend, config_utils

MODEL_SIZES = ("small", "base", "large")
STRATEGIES = ("one_device", "mirrored", "multi_worker", "tpu")
PRECISIONS = ("float32", "bfloat16", "float16")
AUTO_PRECISION = "auto"  # make_config: bfloat16 where the CPU has it natively, else float32
MAX_HEARTBEAT_TIMEOUT_SECS = 86400  # a day; longer is a typo, not a setting

# The original's debug settings; the tiny model is its 3-layer / 144-hidden one.
DEBUG_DEFAULTS = dict(
        train_batch_size=8, num_train_steps=20, eval_batch_size=4,
        iterations_per_loop=1, num_eval_steps=2, save_checkpoints_steps=10,
        log_every_steps=1)
DEBUG_MODEL = dict(hidden_size=144, num_hidden_layers=3, intermediate_size=576,
                                      num_attention_heads=4)


@dataclasses.dataclass(frozen=True)
class PretrainingConfig:
    """Every pre-training hparam: the original's names and defaults (spec b.1)."""
    data_dir: str
    model_name: str

    debug: bool = False  # debug mode: a tiny model trained for a few steps
    do_train: bool = True  # pre-train ELECTRA
    do_eval: bool = False  # evaluate generator/discriminator on unlabeled data

    # loss functions
    electra_objective: bool = True  # false for MLM only ("BERT w/o NSP")
    electric_objective: bool = False  # Electric (two-tower cloze generator)
    gen_weight: float = 1.0  # masked language modeling / generator loss
    disc_weight: float = 50.0  # discriminator loss
    mask_prob: float = 0.15  # percent of input tokens to mask out / replace

    # optimization
    learning_rate: float = 5e-4
    lr_decay_power: float = 1.0  # linear weight decay by default
    weight_decay_rate: float = 0.01
    num_warmup_steps: int = 10000

    # training settings
    iterations_per_loop: int = 200
    save_checkpoints_steps: int = 1000
    num_train_steps: int = 1000000
    num_eval_steps: int = 100
    keep_checkpoint_max: int = 5  # maximum number of recent checkpoint files to keep; 0 = all

    # model settings
    model_size: str = "small"  # one of "small", "base", or "large"
    # override the default transformer hparams for the provided model size
    model_hparam_overrides: dict = dataclasses.field(default_factory=dict)
    embedding_size: Optional[int] = None  # None -> hidden size (128 for small)
    vocab_size: int = 30522  # number of tokens in the vocabulary
    do_lower_case: bool = True  # lowercase the input?

    # generator settings
    uniform_generator: bool = False  # generator is uniform at random
    two_tower_generator: bool = False  # generator is a two-tower cloze model
    untied_generator_embeddings: bool = False  # tie generator/discriminator token embeddings?
    untied_generator: bool = True  # tie all generator/discriminator weights?
    generator_layers: float = 1.0  # frac of discriminator layers for generator
    generator_hidden_size: float = 0.25  # frac of discrim hidden size for gen
    disallow_correct: bool = False  # force the generator to sample incorrect tokens
    temperature: float = 1.0  # temperature for sampling from generator

    # batch sizes
    max_seq_length: int = 128
    train_batch_size: int = 128
    eval_batch_size: int = 128
    # None -> int((mask_prob + 0.005) * max_seq_length), computed after overrides
    max_predictions_per_seq: Optional[int] = None

    # TPU settings (used with distribution_strategy "tpu")
    use_tpu: bool = False
    num_tpu_cores: int = 1
    tpu_job_name: Optional[str] = None
    tpu_name: Optional[str] = None  # cloud TPU to use for training
    tpu_zone: Optional[str] = None  # GCE zone where the Cloud TPU is located in
    gcp_project: Optional[str] = None  # project name for the Cloud TPU-enabled project

    # TF2 execution (not in the original)
    distribution_strategy: str = "one_device"  # one_device, mirrored, multi_worker, tpu
    # multi_worker: seconds without a heartbeat after which a worker counts as dead and
    # the others stop (exit code 69, README "Long runs and faults"); 10 is TF's default
    worker_heartbeat_timeout_secs: float = 10.0
    # float32, bfloat16, float16 (with loss scaling) or auto (bfloat16 only on CPUs with
    # native bfloat16, else float32: util/backend.py)
    mixed_precision: str = "float32"
    loss_scale: float = 32768.0  # initial dynamic loss scale for float16
    jit_compile: bool = False  # compile the train step with XLA
    seed: int = 0  # seeds masking, sampling, dropout and data order
    log_every_steps: int = 100  # progress line interval
    # read a damaged TFRecord file up to its first bad record instead of failing;
    # the skipped records are counted in the log, progress lines and eval results
    skip_corrupt_records: bool = False

    # default locations of data files (None -> derived from data_dir / model_name)
    pretrain_tfrecords: Optional[str] = None  # comma-separated glob patterns
    vocab_file: Optional[str] = None
    model_dir: Optional[str] = None
    results_txt: Optional[str] = None
    results_pkl: Optional[str] = None

    def __post_init__(self):
        _validate(self)


def validate_execution(c):
    """Checks shared by both configs: sequence length, strategy, heartbeat timeout,
    precision, size."""
    if c.model_size not in MODEL_SIZES:
        raise config_utils.ConfigError(
                f"model_size must be one of {MODEL_SIZES}, got {c.model_size!r}.")
    if not 8 <= c.max_seq_length <= 512:
        raise config_utils.ConfigError(
                f"max_seq_length must be in [8, 512] (learned positions stop at 512), "
                f"got {c.max_seq_length}.")
    if c.distribution_strategy not in STRATEGIES:
        raise config_utils.ConfigError(
                f"distribution_strategy must be one of {STRATEGIES}, "
                f"got {c.distribution_strategy!r}.")
    if not 0 < c.worker_heartbeat_timeout_secs <= MAX_HEARTBEAT_TIMEOUT_SECS:
        raise config_utils.ConfigError(
                f"worker_heartbeat_timeout_secs must be in (0, {MAX_HEARTBEAT_TIMEOUT_SECS}] "
                f"seconds, got {c.worker_heartbeat_timeout_secs}.")
    if c.mixed_precision not in PRECISIONS:
        raise config_utils.ConfigError(
                f"mixed_precision must be {AUTO_PRECISION!r} or one of {PRECISIONS}, got "
                f"{c.mixed_precision!r}" + (" (only make_config resolves it)."
                                            if c.mixed_precision == AUTO_PRECISION else "."))


def resolve_precision(c):
    """Replaces mixed_precision "auto" in resolved hparams `c` by this machine's choice."""
    if c.get("mixed_precision") == AUTO_PRECISION:
        c["mixed_precision"] = backend.auto_precision()


def _validate(c):
    if c.do_train == c.do_eval:
        raise config_utils.ConfigError(
                "exactly one of do_train or do_eval must be true (got do_train="
                f"{c.do_train}, do_eval={c.do_eval}); evaluate with "
                "'{\"do_train\": false, \"do_eval\": true}'.")
    if not 0.0 < c.mask_prob < 1.0:
        raise config_utils.ConfigError(f"mask_prob must be in (0, 1), got {c.mask_prob}.")
    validate_execution(c)
    for name in ("num_train_steps", "train_batch_size", "eval_batch_size",
                 "save_checkpoints_steps", "log_every_steps", "max_predictions_per_seq"):
        if getattr(c, name) < 1:
            raise config_utils.ConfigError(f"{name} must be >= 1, got {getattr(c, name)}.")
    if c.keep_checkpoint_max < 0:
        raise config_utils.ConfigError("keep_checkpoint_max must be >= 0 (0 keeps all).")


def make_config(data_dir, model_name, hparams=None):
    """Defaults -> user overrides -> debug/size defaults -> derived fields.

    Explicit user values always win (the original reached the same precedence by
    applying the overrides twice).

    Args:
        data_dir: the --data-dir directory.
        model_name: the --model-name.
        hparams: dict of overrides, a JSON string, or a path to a .json file.
    Returns:
        A frozen PretrainingConfig.
    """
    # embedding_size: null asks for the hidden size (small's default is 128).
    user = config_utils.user_overrides(PretrainingConfig, hparams,
                                       none_is_a_value=("embedding_size",))
    c = dict(user)
    if c.get("debug"):
        config_utils.merge_defaults(c, user, DEBUG_DEFAULTS)
        c["model_hparam_overrides"] = {**DEBUG_MODEL, **user.get("model_hparam_overrides", {})}
    if c.get("model_size", "small") == "small":
        config_utils.merge_defaults(c, user, {"embedding_size": 128})
    if c.get("electric_objective"):
        config_utils.merge_defaults(c, user, {"two_tower_generator": True})
    mask_prob = c.get("mask_prob", 0.15)
    seq_len = c.get("max_seq_length", 128)
    config_utils.merge_defaults(c, user, {
            "max_predictions_per_seq": int((mask_prob + 0.005) * seq_len)})
    model_dir = c.get("model_dir") or os.path.join(data_dir, "models", model_name)
    config_utils.merge_defaults(c, user, {
            "pretrain_tfrecords": os.path.join(data_dir, "pretrain_tfrecords",
                                                                                  "pretrain_data.tfrecord*"),
            "vocab_file": os.path.join(data_dir, "vocab.txt"),
            "model_dir": model_dir,
            "results_txt": os.path.join(model_dir, "results", "unsup_results.txt"),
            "results_pkl": os.path.join(model_dir, "results", "unsup_results.pkl"),
    })
    if c.get("use_tpu"):
        config_utils.merge_defaults(c, user, {"distribution_strategy": "tpu"})
    resolve_precision(c)
    return PretrainingConfig(data_dir=data_dir, model_name=model_name, **c)
