"""Pre-training runner: input checks, strategy, model, optimizer, train / eval, results.

`run_pretraining(config)` is the one library function behind run_pretraining.py:

  do_train: restore the latest checkpoint of model_dir (ours, or a released-style one
    without Adam slots, whose slots start at zero) and train until global_step reaches
    num_train_steps with util/training.py; re-running the same command resumes, and an
    already finished model exits with a message. SIGTERM / SIGINT save a checkpoint at
    the step reached and raise preemption.Preempted (run_pretraining.py exits 75).
    Under multi_worker a dead worker makes the others raise worker_loss.WorkerLost
    (exit 69) without saving; re-running every worker continues from the last checkpoint.
  do_eval: num_eval_steps batches without dropout; prints the metrics of spec c.10 and
    the real-token / representation extras of pretrain/metrics.py as
    "  <metric> = <value>" sorted and writes results_txt / results_pkl atomically.
"""

import glob
import os
import shutil

import tensorflow as tf

from model import optimization, tokenization
from pretrain import metrics as pretrain_metrics
from pretrain import data_checks, pretrain_data, pretrain_helpers, pretrain_model
from util import checkpoint, config_utils, distribute, io_utils, loss_scale, preemption
from util import training, worker_loss
from util.cli import UserError
from util.logging_utils import heading, log

CONFIG_FILE = "pretrain_config.json"  # resolved config, written next to the checkpoints
_ADAM_SLOT_SUFFIXES = ("/adam_m", "/adam_v")


def check_vocab(config):
    """Loads the vocab and checks it against vocab_size.

    Returns:
      (vocab dict token -> id, pretrain_helpers.SpecialIds).
    Raises:
      UserError: the file is missing, lacks a special token, or has more tokens than
        vocab_size (ids would index past the embedding table).
    """
    try:
        vocab = tokenization.load_vocab(config.vocab_file)
    except tokenization.VocabError as e:
        raise UserError(f"{e} Set the vocab_file hparam or place vocab.txt in "
                        f"--data-dir ({config.data_dir}).") from None
    if len(vocab) > config.vocab_size:
        raise UserError(
            f"{config.vocab_file} has {len(vocab)} tokens but vocab_size is "
            f"{config.vocab_size}; set the vocab_size hparam to at least {len(vocab)}.")
    return vocab, pretrain_helpers.special_ids_from_vocab(vocab)


def check_data(config):
    """data_checks.CheckedData: the TFRecord files after the start-up checks (every
    pattern matches, shards agree with their metadata, first records have
    max_seq_length; with skip_corrupt_records, each file's readable part)."""
    try:
        files = pretrain_data.expand_file_patterns(config.pretrain_tfrecords)
    except FileNotFoundError as e:
        raise UserError(str(e)) from None
    return data_checks.check_files(files, config.max_seq_length, config.skip_corrupt_records)


def is_adam_slot(name):
    """Adam slots may be absent (released checkpoints): they then start at zero."""
    return name.endswith(_ADAM_SLOT_SUFFIXES)


def find_checkpoint(model_dir):
    """The checkpoint to continue from: the `checkpoint` state file's latest, else the
    newest one it lists that still exists, else the single prefix with an .index file
    (a released model unpacked without a state file).

    Returns:
      A checkpoint prefix, or None when model_dir holds no checkpoint.
    """
    latest = tf.train.latest_checkpoint(model_dir) if os.path.isdir(model_dir) else None
    if latest:
        return latest
    state = tf.train.get_checkpoint_state(model_dir) if os.path.isdir(model_dir) else None
    listed = [p if os.path.isabs(p) else os.path.join(model_dir, p)
              for p in (state.all_model_checkpoint_paths if state else [])]
    existing = [p for p in listed if os.path.exists(p + ".index")]
    if existing:  # the newest was moved away (e.g. corrupt): the newest one left
        log(f"{state.model_checkpoint_path} is missing; continuing from {existing[-1]}")
        return existing[-1]
    prefixes = sorted(p[:-len(".index")] for p in glob.glob(os.path.join(
        glob.escape(model_dir), "*.index")) if not os.path.basename(p).startswith("."))
    if len(prefixes) > 1:
        raise UserError(f"{model_dir} holds several checkpoints {prefixes} but no "
                        "'checkpoint' state file naming the latest; keep one of them.")
    return prefixes[0] if prefixes else None


def may_be_missing(name):
    """Adam slots (released checkpoints) and the float16 loss scale (checkpoints of
    other precisions) may be absent: they then keep their initial values."""
    return is_adam_slot(name) or loss_scale.is_name(name)


def restore(named_state, model_dir, required):
    """Restores the model_dir checkpoint into named_state (may_be_missing allowed).

    Returns:
      The restored checkpoint prefix, or None (fresh start; an error if `required`).
    """
    path = find_checkpoint(model_dir)
    if path is None:
        if required:
            raise UserError(f"No checkpoint in {model_dir}: train first (do_train) or set "
                            "model_dir / --model-name to a pre-trained model.")
        return None
    try:
        report = checkpoint.restore_checkpoint(named_state, path, allow_missing=may_be_missing)
    except ValueError as e:
        raise UserError(f"Cannot continue from {path}: {e}") from None
    slots = [name for name in report.missing if is_adam_slot(name)]
    if slots:
        log(f"{path} has no Adam slots (a released checkpoint?): {len(slots)} "
            "optimizer slots start at zero.")
    return path


def build_model(config, special_ids, strategy):
    """PretrainingModel and global_step created under the strategy scope."""
    with strategy.scope():
        model = pretrain_model.PretrainingModel(config, special_ids)
        global_step = training.make_global_step()
    return model, global_step


def _dataset(config, strategy, data, batch_size, is_training, seed):
    name = "train_batch_size" if is_training else "eval_batch_size"

    def dataset_fn(input_context, per_replica_batch):
        del per_replica_batch  # get_dataset derives it from the global size and context
        return pretrain_data.get_dataset(data.files, config.max_seq_length, batch_size,
                                         is_training, input_context, seed,
                                         record_limits=data.record_limits)

    return distribute.distribute_dataset(strategy, dataset_fn, batch_size, name)


def _data_seed(config, start_step):
    # Shuffling depends on (seed, resume step): a resumed run reads a new but
    # reproducible order instead of replaying the data it has already seen.
    return (config.seed * 1000003 + start_step) % (2 ** 31 - 1)


def _loop_settings(config, data):
    return training.LoopSettings(
        num_train_steps=config.num_train_steps, steps_per_loop=config.iterations_per_loop,
        log_every_steps=config.log_every_steps,
        save_checkpoints_steps=config.save_checkpoints_steps,
        mixed_precision=config.mixed_precision, initial_loss_scale=config.loss_scale,
        jit_compile=config.jit_compile, seed=config.seed, summary_dir=config.model_dir,
        progress_counts=_skip_counts(config, data))


def _skip_counts(config, data):
    return {"skipped_records": data.skipped_records} if config.skip_corrupt_records else {}


def _trainer(config, strategy, data, model, trainable, optimizer, global_step):
    dtype = training.compute_dtype(config.mixed_precision)

    def loss_fn(features, seed, is_training):
        out = model(features, seed, is_training, dtype)
        return out.loss, {"mlm_loss": out.mlm_loss, "disc_loss": out.disc_loss}

    def lr_fn(step):
        return optimization.learning_rate_schedule(
            step, config.learning_rate, config.num_train_steps,
            warmup_steps=config.num_warmup_steps, lr_decay_power=config.lr_decay_power)

    return training.Trainer(strategy, loss_fn, trainable, optimizer, lr_fn, global_step,
                            _loop_settings(config, data), ["mlm_loss", "disc_loss"])


def train(config, strategy, data, special_ids):
    """Trains (or resumes) to num_train_steps. Returns util.training.TrainResult."""
    chief = distribute.is_chief(strategy)
    model, global_step = build_model(config, special_ids, strategy)
    trainable = model.named_variables()
    with strategy.scope():
        optimizer = optimization.AdamWeightDecay(
            trainable, weight_decay_rate=config.weight_decay_rate)
    trainer = _trainer(config, strategy, data, model, trainable, optimizer, global_step)
    # The float16 loss scale is part of the state, so a resumed run continues with it.
    named_state = {**trainable, **optimizer.slot_variables(), "global_step": global_step,
                   **trainer.checkpoint_variables()}
    restore(named_state, config.model_dir, required=False)
    start = int(global_step.numpy())
    if start >= config.num_train_steps:
        log(f"Model in {config.model_dir} is already trained for {start} steps "
            f"(num_train_steps={config.num_train_steps}); nothing to do.")
        return training.TrainResult(global_step=start, steps_run=0, losses={})
    if chief:
        config_utils.save_config(config, os.path.join(config.model_dir, CONFIG_FILE))
    dataset = _dataset(config, strategy, data, config.train_batch_size, True,
                       _data_seed(config, start))
    manager = checkpoint.CheckpointManager(config.model_dir, config.keep_checkpoint_max)
    log("Model is built!")
    log(f"Training for {config.num_train_steps - start} steps (from step {start})")
    # SIGTERM / SIGINT from here on: checkpoint at the step reached, raise Preempted.
    with data_checks.reported_data_errors(data.files, config.max_seq_length,
                                          config.model_dir):
        with preemption.StopRequest() as stop:
            result = training.train(trainer, iter(dataset), manager, named_state,
                                    is_chief=chief, stop=stop)
    # Every worker says so (only the chief logs progress lines).
    log(f"Finished training at step {result.global_step}")
    return result


_EVAL_FIELDS = ("loss", "masked_lm_ids", "masked_lm_weights", "mlm_preds",
                "mlm_per_example_loss", "sampled_tokids", "input_mask", "disc_labels",
                "disc_preds", "disc_probs", "disc_per_example_loss", "candidates_mask",
                "repr_cosine")


def evaluate(config, strategy, data, special_ids):
    """num_eval_steps batches without dropout -> {metric: value} (spec c.10 + extras)."""
    model, global_step = build_model(config, special_ids, strategy)
    restore({**model.named_variables(), "global_step": global_step}, config.model_dir,
            required=True)
    dtype = training.compute_dtype(config.mixed_precision)
    dataset = _dataset(config, strategy, data, config.eval_batch_size, False, config.seed)

    @tf.function
    def eval_step(features, step):
        def replica_fn(f):
            # repr_cosine is reduced to [B] on the device: no [B, S, H] copy to the host.
            out = model(f, training.step_seed(config.seed, step), False, dtype,
                        with_repr_cosine=True)
            return {name: getattr(out, name) for name in _EVAL_FIELDS}
        return strategy.run(replica_fn, args=(features,))

    scores = pretrain_metrics.PretrainingMetrics(model.has_discriminator, config.disc_weight,
                                                 has_encoder=model.encoder is not None)
    iterator = iter(dataset)
    log("Model is built!")
    with data_checks.reported_data_errors(data.files, config.max_seq_length,
                                          config.model_dir):
        for i in range(config.num_eval_steps):
            outputs = eval_step(next(iterator), tf.constant(i, tf.int64))
            local = {k: strategy.experimental_local_results(v) for k, v in outputs.items()}
            for r in range(len(local["loss"])):
                scores.update(_Fields({k: v[r] for k, v in local.items()}))
    results = scores.result()
    results["global_step"] = int(global_step.numpy())
    results.update(_skip_counts(config, data))
    return dict(sorted(results.items()))


class _Fields:
    """Attribute access to a dict, as PretrainingMetrics.update reads output fields."""

    def __init__(self, values):
        self.__dict__.update(values)


def write_results(config, results):
    """Prints "  <metric> = <value>" lines and writes results_txt / results_pkl."""
    lines = [f"  {key} = {results[key]}" for key in sorted(results)]
    for line in lines:
        log(line)
    io_utils.write_text("\n".join(lines) + "\n", config.results_txt)
    io_utils.write_pickle(results, config.results_pkl)
    log(f"Writing results to {config.results_txt}")


def remove_debug_model_dir(model_dir):
    """As the original, a debug training run starts from scratch, but only a model dir
    that holds a debug model written by this tool is deleted; anything else is refused."""
    saved = config_utils.load_saved_config(os.path.join(model_dir, CONFIG_FILE))
    if not os.listdir(model_dir):
        return
    if not (saved and saved.get("debug")):
        raise UserError(
            f"debug mode trains from scratch and would delete {model_dir}, which does not "
            "hold a debug model written by run_pretraining.py; choose another --model-name.")
    log(f"debug mode: removing the previous debug model {model_dir}")
    shutil.rmtree(model_dir)


def run_pretraining(config):
    """Runs do_train or do_eval for a PretrainingConfig.

    Returns:
      TrainResult (do_train) or the eval results dict (do_eval).
    Raises:
      UserError / FileNotFoundError with a message naming the problem and the fix.
    """
    heading("Config:")
    for line in config_utils.format_config(config).splitlines():
        log(line)
    log()
    if config.debug and config.do_train and os.path.isdir(config.model_dir):
        remove_debug_model_dir(config.model_dir)
    # The strategy must exist before any other TF op (multi-worker / TPU set up the runtime).
    strategy = distribute.get_strategy(config.distribution_strategy, config.tpu_name,
                                       config.tpu_zone, config.gcp_project,
                                       config.worker_heartbeat_timeout_secs)
    _, special_ids = check_vocab(config)
    data = check_data(config)
    tf.random.set_seed(config.seed)  # dropout masks (the rest uses stateless seeds)
    # multi_worker: a dead worker ends the others with one line (exit 69), not a hang.
    with worker_loss.reported(strategy, config.model_dir):
        if config.do_train:
            heading("Running training")
            return train(config, strategy, data, special_ids)
        heading("Running evaluation")
        results = evaluate(config, strategy, data, special_ids)
    if distribute.is_chief(strategy):
        write_results(config, results)
    return results
