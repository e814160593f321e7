"""Fine-tuning driver: trials of train + dev evaluation, results and prediction files.

The original's run_finetuning.py (ModelRunner, run_finetuning) on top of the shared
pieces: the task registry and TFRecord preprocessing (finetune/), the encoder and
optimizer (model/), the one training loop, checkpoints and strategies (util/); the
result files are written by finetune/trial_files.py. Per trial t (spec e.4, g):

  1. wipe finetuning_models/<tasks>_model_<t> (only if this tool wrote it) and build a
     fresh model seeded with config.seed + t - 1, initialised from init_checkpoint;
  2. train with util/training.py (AdamW, layer-wise LR decay, clipping at 1.0);
  3. evaluate every task on dev (tagging also on test.txt when present), print
     "<task>: <metric>: <value> - ...", write each task's dev predictions under
     results/ and the metrics as TensorBoard scalars under <model dir>/eval (training
     losses are in the model dir), then rewrite results_txt / results_pkl atomically;
  4. optionally write test-set outputs; with keep_all_models false delete the model dir
     of every trial but the last.

Under `multi_worker` every worker builds the same models (their variables are created
together) and trains; only the chief writes: model dirs, checkpoints, summaries,
evaluation, results, predictions and resume markers. The other workers featurise into
a temporary directory of their own, removed at the end, and skip evaluation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf

import configure_finetuning
from finetune import finetune_model
from finetune import init_checkpoint
from finetune import preprocessing
from finetune import resume
from finetune import task_builder
from finetune import trial_files
from model import modeling
from model import optimization
from util import checkpoint
from util import config_utils
from util import distribute
from util import io_utils
from util import loss_scale
from util import preemption
from util import training
from util import worker_loss
from util.cli import UserError
from util.logging_utils import heading, log

# Written into every trial's model dir; a dir without it is never deleted.
MODEL_DIR_MARKER = "finetuning_config.json"
EVAL_LOG_LINES = 10  # at most this many progress lines per evaluation pass


def make_run_config(data_dir, model_name, hparams):
    """make_config, then sizes from the pre-trained model's pretrain_config.json.

    Args:
      hparams: --hparams (JSON string, .json path or dict).
    Returns:
      FinetuningConfig.
    """
    user = hparams if isinstance(hparams, dict) else config_utils.load_hparams(hparams)
    config = configure_finetuning.make_config(data_dir, model_name, user)
    if config.init_checkpoint is None:
        return config
    sizes = init_checkpoint.pretrained_size_hparams(config.pretrained_model_dir, user)
    if not sizes:
        return config
    log("Model sizes from", os.path.join(config.pretrained_model_dir,
                                         init_checkpoint.PRETRAIN_CONFIG_FILE), sizes)
    return configure_finetuning.make_config(data_dir, model_name, {**user, **sizes})


class ModelRunner:
    """One trial's model: training, evaluation and prediction.

    Args:
      config: the trial's FinetuningConfig (its own model_dir and seed).
      tasks: tasks in task_names order.
      preprocessor: preprocessing.Preprocessor shared by the trials.
      strategy: tf.distribute strategy (variables are created in its scope).
      bert_config: modeling.BertConfig of the encoder.
      stop: optional active preemption.StopRequest: once requested, training saves a
        checkpoint and evaluation stops; both raise preemption.Preempted.
    """

    def __init__(self, config, tasks, preprocessor, strategy, bert_config, stop=None):
        self.config, self.tasks = config, list(tasks)
        self._preprocessor, self._strategy, self._stop = preprocessor, strategy, stop
        self.is_chief = distribute.is_chief(strategy)  # only the chief writes files
        self.compute_dtype = training.compute_dtype(config.mixed_precision)
        # The seed fixes the heads' initialisation, dropout and the data order.
        tf.random.set_seed(config.seed)
        with strategy.scope():
            self.model = finetune_model.FinetuningModel(
                bert_config, self.tasks,
                batch_shards=distribute.batch_shards(strategy, config.jit_compile))
        self.named_vars = self.model.named_variables()
        if config.init_checkpoint:
            with strategy.scope():
                init_checkpoint.init_from_checkpoint(
                    self.named_vars, config.init_checkpoint, require_heads=not config.do_train)
        self._predict_fns = {}
        self._trained_step = None  # global_step once train() returned

    def _loss_fn(self, features, seed, training_):
        del seed  # dropout draws from the trial's global seed
        output = self.model(features, is_training=training_, compute_dtype=self.compute_dtype)
        # Reduction: SUM over this replica's examples (the original's). The loop divides
        # by num_replicas_in_sync (right for per-replica means); multiplying it back
        # makes the all-reduced gradient that of the SUM over the global batch, as on
        # one device (the original's default num_tpu_cores 1), whatever the replicas.
        return output.loss * self._strategy.num_replicas_in_sync, {}

    def _optimizer(self):
        c = self.config
        multipliers = None
        if c.layerwise_lr_decay is not None and c.layerwise_lr_decay > 0:
            multipliers = optimization.layerwise_lr_multipliers(
                list(self.named_vars), self.model.bert_config.num_hidden_layers,
                c.layerwise_lr_decay)
        return optimization.AdamWeightDecay(self.named_vars,
                                            weight_decay_rate=c.weight_decay_rate,
                                            lr_multipliers=multipliers)

    def train(self):
        """Trains for int(n_padded_examples // batch * epochs) steps; saves at the end.

        Returns:
          util.training.TrainResult.
        """
        c = self.config
        dataset, num_steps = self._preprocessor.prepare_train()
        if num_steps < 1:
            raise UserError(f"the training data of {list(c.task_names)} gives 0 steps with "
                            f"train_batch_size {c.train_batch_size} and num_train_epochs "
                            f"{c.num_train_epochs}; lower the batch size or add epochs.")
        # After the data loaded: bad input leaves no files. Other workers only look.
        resuming = prepare_model_dir(c) if self.is_chief else is_resumable(c)
        log(f"Training for {num_steps} steps")
        with self._strategy.scope():
            optimizer = self._optimizer()
            global_step = training.make_global_step()

        def lr_fn(step):
            return optimization.learning_rate_schedule(
                step, c.learning_rate, num_steps, warmup_proportion=c.warmup_proportion)

        settings = training.LoopSettings(
            num_train_steps=num_steps, steps_per_loop=c.iterations_per_loop,
            log_every_steps=c.log_every_steps, save_checkpoints_steps=c.save_checkpoints_steps,
            mixed_precision=c.mixed_precision, initial_loss_scale=c.loss_scale,
            jit_compile=c.jit_compile, clip_norm=1.0, seed=c.seed, summary_dir=c.model_dir)
        trainer = training.Trainer(self._strategy, self._loss_fn, self.named_vars, optimizer,
                                   lr_fn, global_step, settings, loss_names=())
        iterator = iter(self._strategy.experimental_distribute_dataset(
            _shard_batches(dataset)))
        manager = (checkpoint.CheckpointManager(c.model_dir, max_to_keep=1)
                   if self.is_chief else None)
        state = {**self.named_vars, **optimizer.slot_variables(), "global_step": global_step,
                 **trainer.checkpoint_variables()}  # + the float16 loss scale
        if resuming:  # a stopped run of this trial: continue from its checkpoint
            checkpoint.restore_checkpoint(state, c.model_dir, allow_missing=loss_scale.is_name)
            log(f"Resuming from step {int(global_step.numpy())} of {num_steps}")
        result = training.train(trainer, iterator, manager, state, is_chief=self.is_chief,
                                stop=self._stop)
        self._trained_step = result.global_step
        return result

    def predictions(self, task, split):
        """Yields {output name: numpy value} for every real example (window) of `split`."""
        fn = self._predict_fns.get(task.name)
        if fn is None:
            fn = tf.function(lambda features: self.model.predict(
                features, task.name, self.compute_dtype), jit_compile=self.config.jit_compile)
            self._predict_fns[task.name] = fn
        dataset, n_batches = self._preprocessor.prepare_predict([task], split)
        every = max(1, n_batches // EVAL_LOG_LINES)
        for index, batch in enumerate(dataset):
            self._check_stop(split)
            outputs = {k: v.numpy() for k, v in fn(batch).items()}
            for row in np.nonzero(outputs["task_id"] == task.task_id)[0]:
                yield {k: v[row] for k, v in outputs.items() if k != "task_id"}
            if (index + 1) % every == 0 or index + 1 == n_batches:
                log(f"{task.name} {split}: {index + 1}/{n_batches} batches predicted")

    def _check_stop(self, split):
        """Raises Preempted once a stop was requested (training's checkpoint is final)."""
        if self._stop is not None and self._stop.requested:
            raise preemption.Preempted(
                self._stop.signal_name, self._trained_step,
                tf.train.latest_checkpoint(self.config.model_dir), during=f"predicting {split}")

    def evaluate_task(self, task, split="dev"):
        """Runs the scorer of `task` over `split`; returns the filled scorer."""
        scorer = task.get_scorer(split)
        for example_outputs in self.predictions(task, split):
            scorer.update(example_outputs)
        return scorer

    def evaluate(self, trial):
        """Dev (+ extra split) metrics of every task; writes each task's predictions.

        Returns:
          {task name: {metric: value}}; extra splits' metrics are prefixed "<split>_".
        """
        results = {}
        for task in self.tasks:
            log(f"Evaluating {task.name}")
            metrics = {}
            for split in task.get_eval_splits():
                scorer = self.evaluate_task(task, split)
                prefix = "" if split == "dev" else split + "_"
                metrics.update(scorer.get_results(prefix=prefix))
                path = scorer.write_predictions(trial_files.prediction_path(
                    self.config, task.name, split, trial))
                if path:
                    log(f"Wrote {task.name} {split} predictions to {path}")
            log(f"{task.name}: " + " - ".join(f"{k}: {v:.2f}" for k, v in metrics.items()))
            results[task.name] = metrics
        return results


def _shard_batches(dataset):
    """Under multi_worker, worker k keeps the k-th slice of every global batch (each
    reads the whole TFRecord file), so every step trains on the very batch one device
    would read; the AUTO policy would first try to give each worker its own files."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA)
    return dataset.with_options(options)


def is_resumable(config):
    """Whether the trial's model dir holds a stopped run of this same trial config
    (finetune/resume.py) with a checkpoint, to be continued. Only reads."""
    return bool(os.path.exists(os.path.join(config.model_dir, MODEL_DIR_MARKER))
                and resume.is_resumable(config)
                and tf.train.latest_checkpoint(config.model_dir))


def prepare_model_dir(config):
    """Wipes this trial's previous model dir (only if this tool wrote it), then marks it.

    Returns:
      is_resumable(config): the dir is then kept, to be continued.
    """
    model_dir = os.path.abspath(config.model_dir)
    if config.init_checkpoint:
        init = os.path.abspath(config.init_checkpoint)
        if init == model_dir or init.startswith(model_dir + os.sep):
            raise UserError(f"init_checkpoint {config.init_checkpoint!r} is inside the model "
                            f"dir {config.model_dir!r} that training would wipe; copy it "
                            "elsewhere or set model_dir.")
    if os.path.isdir(model_dir):
        if is_resumable(config):
            return True
        if os.path.exists(os.path.join(model_dir, MODEL_DIR_MARKER)):
            shutil.rmtree(model_dir)
        elif os.listdir(model_dir):
            raise UserError(f"model dir {config.model_dir!r} exists but was not written by "
                            f"run_finetuning.py (no {MODEL_DIR_MARKER}); move it away or set "
                            "model_dir in --hparams.")
    config_utils.save_config(config, os.path.join(model_dir, MODEL_DIR_MARKER))
    return False


def remove_model_dir(model_dir):
    """Deletes a trial's model dir (keep_all_models false); only ones this tool wrote."""
    if os.path.exists(os.path.join(model_dir, MODEL_DIR_MARKER)):
        shutil.rmtree(model_dir)


def run_trial(config, trial, tasks, preprocessor, strategy, bert_config):
    """Train and/or evaluate one trial; returns its results dict (None when not
    evaluating, and on every worker but the chief).

    When training, SIGTERM / SIGINT stop the trial with a checkpoint (preemption.Preempted);
    run_finetuning then records it for the rerun (finetune/resume.py).
    """
    if not config.do_train:
        return _train_and_evaluate(
            ModelRunner(config, tasks, preprocessor, strategy, bert_config), trial)
    with preemption.StopRequest() as stop:
        runner = ModelRunner(config, tasks, preprocessor, strategy, bert_config, stop)
        results = _train_and_evaluate(runner, trial)
    if runner.is_chief:
        resume.clear_marker(config)  # complete: a later run must not resume it
    return results


def _train_and_evaluate(runner, trial):
    config = runner.config
    train_result = None
    if config.do_train:
        heading("Start training")
        train_result = runner.train()
    # Evaluation runs on the chief's device alone (no collectives), so the other
    # workers go on to the next trial and wait for the chief in its first collective.
    if not config.do_eval or not runner.is_chief:
        return None
    heading("Run dev set evaluation")
    results = runner.evaluate(trial)
    if train_result is not None:  # eval-only runs have no model dir of their own
        trial_files.write_eval_summaries(config.model_dir, train_result.global_step, results)
    if config.write_test_outputs and trial <= config.n_writes_test:
        heading("Running on the test set and writing the predictions")
        trial_files.write_test_outputs(runner, trial)
    return results


@contextlib.contextmanager
def _featurising_config(config, chief):
    """The config to featurise with. The chief uses the run's. Other workers get a
    private temporary preprocessed_data_dir, removed at the end, so they never write
    the shared cache while the chief may be writing it; the chief's tag label maps are
    copied in (written atomically, read-only here) so that all number the tags alike."""
    if chief:
        yield config
        return
    temp = tempfile.mkdtemp(prefix="electra_worker_features_")
    log(f"Not the chief: featurising into {temp} (removed at the end)")
    try:
        for path in glob.glob(os.path.join(glob.escape(config.preprocessed_data_dir),
                                           "*label_mapping.pkl")):
            shutil.copy(path, temp)
        yield dataclasses.replace(config, preprocessed_data_dir=temp)
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def run_finetuning(config):
    """Runs config.num_trials trials (forever if negative) of train + eval.

    Returns:
      The list of per-trial {task: {metric: value}} (also written to results_pkl; on
      multi_worker workers other than the chief, an empty list).
    """
    strategy = distribute.get_strategy(config.distribution_strategy, config.tpu_name,
                                       config.tpu_zone, config.gcp_project,
                                       config.worker_heartbeat_timeout_secs)
    chief = distribute.is_chief(strategy)
    with _featurising_config(config, chief) as data_config:
        # Unknown task names and bad vocab files raise UserError (one line, exit 2).
        tasks = task_builder.get_tasks(data_config)
        if config.init_checkpoint:  # fail before featurising
            init_checkpoint.resolve_checkpoint(config.init_checkpoint)
        try:
            bert_config = modeling.get_bert_config(config.model_size, config.vocab_size,
                                                   config.embedding_size,
                                                   config.model_hparam_overrides)
        except ValueError as e:  # e.g. an unknown model_hparam_overrides key
            raise UserError(str(e)) from None
        preprocessor = preprocessing.Preprocessor(data_config, tasks)
        return _run_trials(config, tasks, preprocessor, strategy, bert_config)


def _run_trials(config, tasks, preprocessor, strategy, bert_config):
    chief = distribute.is_chief(strategy)
    results, seeds, trial = [], [], 1
    stopped = resume.find_stopped_trial(config) if config.do_train else None
    if stopped:
        trial, results, seeds = stopped
    while config.num_trials < 0 or trial <= config.num_trials:
        trial_config = config.for_trial(trial)
        heading(f"Config: model={config.model_name}, trial {trial}/{config.num_trials}")
        log(config_utils.format_config(trial_config))
        try:
            # multi_worker: a dead worker ends the others with one line (exit 69).
            with worker_loss.reported(strategy, trial_config.model_dir):
                trial_results = run_trial(trial_config, trial, tasks, preprocessor,
                                          strategy, bert_config)
        except (preemption.Preempted, worker_loss.WorkerLost):
            if chief:  # the rerun keeps the finished trials and continues this one
                resume.write_marker(trial_config, trial, results, seeds)
            raise
        if trial_results is not None:
            results.append(trial_results)
            seeds.append(trial_config.seed)
            trial_files.write_results(config, results, seeds)
        if (chief and config.do_train and not config.keep_all_models
                and trial != config.num_trials):
            remove_model_dir(trial_config.model_dir)
        trial += 1
    return results if chief else []
