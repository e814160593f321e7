"""The one training loop shared by pre-training and fine-tuning.

The loop is model-agnostic: the caller supplies `loss_fn(features, seed, training) ->
(loss, aux)` (per-replica mean loss, float32 scalar; aux a dict of float32 scalars),
the named trainable variables, an optimizer with `apply_gradients(grads, lr)` and a
learning-rate function of the global step. One compiled `tf.function` runs up to
`steps_per_loop` steps per call (a `tf.range` loop, cutting Python overhead); the
Python loop around it does the cadence, visible at a glance:

    while step < num_train_steps:
        run min(steps_per_loop, steps to the next log / checkpoint / end) steps
        stop with TrainingDiverged if a loss went non-finite (nothing saved)
        float16: steps whose gradients overflowed were skipped, not counted
        log a progress line + TensorBoard scalars every log_every_steps
        checkpoint every save_checkpoints_steps and at the end
        on SIGTERM / SIGINT (util/preemption.py): checkpoint now, raise Preempted

The compiled call checks the stop flag before every step, so a signal stops training
within one step even when steps_per_loop is large.
"""

import collections
import dataclasses
import time

import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from util import distribute
from util import logging_utils
from util import loss_scale
from util.cli import UserError
from util.preemption import Preempted

COMPUTE_DTYPES = {"float32": tf.float32, "bfloat16": tf.bfloat16, "float16": tf.float16}
# What TensorBoard's scalar summary attaches; written with core TF's tf.summary.write so
# the tensorboard package is not a dependency.
_SCALAR_METADATA = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
    data_class=summary_pb2.DATA_CLASS_SCALAR)


class TrainingDiverged(UserError):
    """A loss became NaN/Inf; the last good checkpoint is kept and nothing is saved."""


@dataclasses.dataclass(frozen=True)
class LoopSettings:
    """Cadence and numerics of `train` (filled from a run config by the caller)."""

    num_train_steps: int  # train until global_step reaches this
    steps_per_loop: int = 1  # steps per compiled call (the original's iterations_per_loop)
    log_every_steps: int = 100  # progress line + summaries interval
    save_checkpoints_steps: int = 1000  # checkpoint interval (one is also written at the end)
    mixed_precision: str = "float32"  # float32, bfloat16 or float16 (dynamic loss scaling)
    initial_loss_scale: float = 2.0 ** 15  # float16 only
    loss_scale_growth_steps: int = 2000  # float16: double the scale after this many good steps
    jit_compile: bool = False  # compile forward + backward with XLA
    clip_norm: float = 1.0  # global-norm gradient clipping (the original's 1.0)
    seed: int = 0  # base of the per-step stateless seeds
    summary_dir: str | None = None  # TensorBoard event files (None: no summaries)
    # {name: int} shown on every progress line, e.g. {"skipped_records": 3}
    progress_counts: dict = dataclasses.field(default_factory=dict)


TrainResult = collections.namedtuple("TrainResult", ["global_step", "steps_run", "losses"])
TrainResult.__doc__ = "global_step at the end, steps run by this call, last logged losses."


def compute_dtype(mixed_precision):
    """The dtype models compute in for a `mixed_precision` setting."""
    if mixed_precision not in COMPUTE_DTYPES:
        raise UserError(f"mixed_precision must be one of {sorted(COMPUTE_DTYPES)}, "
                        f"got {mixed_precision!r}.")
    return COMPUTE_DTYPES[mixed_precision]


def make_global_step():
    """The int64 `global_step` variable (create it inside strategy.scope())."""
    return tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step",
                       aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)


def step_seed(base_seed, step):
    """[2] int64 stateless seed for one global step: (seed, step) -> deterministic draws.

    A resumed run therefore draws the same masks/samples at step t as an uninterrupted one.
    """
    return tf.stack([tf.cast(base_seed, tf.int64), tf.cast(step, tf.int64)])


class Trainer:
    """Builds the compiled multi-step train function for one model/optimizer/strategy."""

    def __init__(self, strategy, loss_fn, trainable, optimizer, lr_fn, global_step,
                 settings, loss_names):
        """Args:
          strategy: tf.distribute.Strategy whose scope created all variables.
          loss_fn: fn(features, seed [2] int64, training: bool) -> (loss, aux dict).
          trainable: dict name -> tf.Variable, in the optimizer's order.
          optimizer: has apply_gradients(list of grads aligned with `trainable`, lr).
          lr_fn: fn(global_step int64 tensor) -> float32 learning rate.
          global_step: the int64 step variable.
          settings: LoopSettings.
          loss_names: the keys of loss_fn's aux dict (fixed, for the loop state).
        """
        self.strategy, self.loss_fn, self.optimizer = strategy, loss_fn, optimizer
        self.names, self.variables = tuple(trainable), tuple(trainable.values())
        self.lr_fn, self.global_step, self.settings = lr_fn, global_step, settings
        self.loss_names = ("loss",) + tuple(loss_names)
        self.loss_scale = None
        if settings.mixed_precision == "float16":
            with strategy.scope():
                self.loss_scale = loss_scale.DynamicLossScale(
                    settings.initial_loss_scale, settings.loss_scale_growth_steps)
        # stop_flag is set from any thread by a preemption.StopRequest listener and read
        # by the compiled loop before each step; `stopped` records that the loop broke
        # off for it (agreed by all workers, so they all stop at the same step).
        with tf.init_scope():
            self.stop_flag = tf.Variable(False, trainable=False, name="stop_requested")
            self.stopped = tf.Variable(False, trainable=False, name="stopped")
        self._agree_on_stop = distribute.is_multi_worker(strategy)
        grads_fn = self._loss_and_grads
        if settings.jit_compile:
            grads_fn = tf.function(grads_fn, jit_compile=True)
        self._grads_fn = grads_fn
        self.train_steps = tf.function(self._train_steps)

    def _loss_and_grads(self, features, seed, scale):
        """Per-replica forward + backward. Returns (loss, aux, grads) with grads of the
        loss divided by num_replicas_in_sync (so the SUM all-reduce is the global mean)
        and multiplied by `scale` (1 unless float16)."""
        with tf.GradientTape() as tape:
            loss, aux = self.loss_fn(features, seed, True)
            scaled = loss / self.strategy.num_replicas_in_sync * scale
        grads = tape.gradient(scaled, self.variables)
        # Embedding gathers give IndexedSlices; Adam updates every row anyway (m and v
        # decay), so densify once here rather than in the all-reduce and the clip.
        grads = [None if g is None else tf.convert_to_tensor(g) for g in grads]
        return loss, aux, grads

    def _replica_step(self, features, seed, lr):
        """One step on one replica; returns (losses dict, grads-finite flag)."""
        scale = self.loss_scale.scale if self.loss_scale else tf.constant(1.0)
        loss, aux, grads = self._grads_fn(features, seed, scale)
        ctx = tf.distribute.get_replica_context()
        present = [i for i, g in enumerate(grads) if g is not None]
        summed = ctx.all_reduce(tf.distribute.ReduceOp.SUM, [grads[i] for i in present])
        for i, g in zip(present, summed):
            grads[i] = g / scale if self.loss_scale else g
        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(grads[i])) for i in present])
        clipped, _ = tf.clip_by_global_norm([grads[i] for i in present], self.settings.clip_norm)
        for i, g in zip(present, clipped):
            grads[i] = g
        if self.loss_scale is None:
            self.optimizer.apply_gradients(grads, lr)
        else:
            ctx.merge_call(self._apply_if_finite, args=(grads, lr, finite))
        losses = {"loss": loss, **{k: tf.cast(aux[k], tf.float32) for k in self.loss_names[1:]}}
        return losses, finite

    def _apply_if_finite(self, strategy, grads, lr, finite):
        """Cross-replica: skip the update on overflow. Every replica holds the same
        all-reduced gradients, so the local flag of any replica decides for all."""
        flag = strategy.experimental_local_results(finite)[0]

        def apply():
            # Automatic control dependencies run the (stateful) updates in this branch.
            self.optimizer.apply_gradients(grads, lr)
            return tf.constant(True)

        return tf.cond(flag, apply, lambda: tf.constant(False))

    def _one_step(self, iterator):
        step = self.global_step.read_value()
        lr = self.lr_fn(step)
        seed = step_seed(self.settings.seed, step)
        losses, finite = self.strategy.run(self._replica_step, args=(next(iterator), seed, lr))
        mean = tf.distribute.ReduceOp.MEAN
        losses = {k: self.strategy.reduce(mean, v, axis=None) for k, v in losses.items()}
        advance = tf.constant(1, tf.int64)
        if self.loss_scale is not None:
            n_finite = self.strategy.reduce(tf.distribute.ReduceOp.SUM,
                                            tf.cast(finite, tf.int32), axis=None)
            all_finite = n_finite == self.strategy.num_replicas_in_sync
            self.loss_scale.update(all_finite)
            # A skipped update is no step (Keras' LossScaleOptimizer leaves iterations):
            # the step, so the LR and the masking seed, are retried with the next batch.
            advance = tf.cast(all_finite, tf.int64)
        self.global_step.assign_add(advance)
        return losses, lr

    def checkpoint_variables(self):
        """{name: variable} of the loop's own state to checkpoint with the model: the
        float16 loss scale and its good-step counter (util/loss_scale.py), else {}."""
        return self.loss_scale.checkpoint_variables() if self.loss_scale else {}

    def _stop_requested(self):
        if not self._agree_on_stop:
            return self.stop_flag.read_value()
        # Several workers: a worker that left the loop alone would hang the others in
        # their next all-reduce, so every worker stops once any of them was signalled.
        votes = self.strategy.run(lambda: tf.cast(self.stop_flag.read_value(), tf.int32))
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, votes, axis=None) > 0

    def _train_steps(self, iterator, num_steps):
        """Runs up to num_steps steps; stops right after a step with a non-finite loss,
        and before a step once a stop was requested (then sets `stopped`).

        Returns:
          (mean losses over the steps run, losses of the last step, lr of the last step).
        """
        zero = tf.constant(0.0)
        last = {k: zero for k in self.loss_names}
        total = {k: zero for k in self.loss_names}
        lr = zero
        count = zero
        for _ in tf.range(num_steps):
            if self._stop_requested():
                self.stopped.assign(True)
                break
            last, lr = self._one_step(iterator)
            total = {k: total[k] + last[k] for k in self.loss_names}
            count += 1.0
            if not tf.reduce_all([tf.math.is_finite(v) for v in last.values()]):
                break
        mean = {k: v / tf.maximum(count, 1.0) for k, v in total.items()}
        return mean, last, lr


def _steps_this_call(step, settings):
    """Steps until the next log point, checkpoint, end, capped at steps_per_loop."""
    s = settings
    until = [s.num_train_steps - step, s.steps_per_loop,
             s.log_every_steps - step % s.log_every_steps,
             s.save_checkpoints_steps - step % s.save_checkpoints_steps]
    return max(1, min(until))


def _check_finite(last, step):
    bad = [name for name, value in last.items() if not tf.math.is_finite(value)]
    if bad:
        values = ", ".join(f"{n}={float(last[n])}" for n in bad)
        raise TrainingDiverged(
            f"non-finite loss at step {step} ({values}); training stopped without "
            "saving, so the latest checkpoint holds the last good state. Lower "
            "learning_rate, raise num_warmup_steps, or use mixed_precision float32.")


def train(trainer, iterator, checkpoint_manager, named_state, is_chief=True, stop=None):
    """Runs the loop until global_step reaches settings.num_train_steps.

    Args:
      trainer: Trainer.
      iterator: iterator over the (distributed) training dataset.
      checkpoint_manager: has save(named_vars, step); None disables checkpoints.
      named_state: dict name -> variable to checkpoint (weights, optimizer slots, step).
      is_chief: only the chief logs, writes summaries and checkpoints.
      stop: optional preemption.StopRequest (active); once it is requested, training
        stops before the next step, saves a checkpoint and raises Preempted.
    Returns:
      TrainResult.
    Raises:
      TrainingDiverged: a loss became NaN/Inf (names the step and the loss), or float16
        gradients overflowed even at loss scale 1.
      Preempted: a stop was requested (names the signal, the step and the checkpoint).
    """
    s = trainer.settings
    start = int(trainer.global_step.numpy())
    _connect_stop(trainer, stop)
    logger = _Logger(trainer, start, is_chief)
    saver = _Saver(checkpoint_manager if is_chief else None, named_state)
    step = start
    try:
        while step < s.num_train_steps:
            n = _steps_this_call(step, s)
            scale_before = _scale(trainer)
            mean, last, lr = trainer.train_steps(iterator, tf.constant(n, tf.int32))
            new_step = int(trainer.global_step.numpy())
            _check_finite(last, new_step)
            stopped = bool(trainer.stopped.numpy())
            ran, step = new_step - step, new_step
            if not ran and not stopped:
                _check_scale_can_recover(scale_before, step)
            logger.count(ran)
            if ran and (step % s.log_every_steps == 0 or step == s.num_train_steps or stopped):
                logger.log(step, mean, lr)
            if step % s.save_checkpoints_steps == 0 or step == s.num_train_steps or stopped:
                saver.save(step)
            if stopped:
                name = stop.signal_name if stop is not None and stop.requested else None
                raise Preempted(name or "a signal to another worker", step, saver.path)
    finally:
        logger.close()
    return TrainResult(global_step=step, steps_run=step - start, losses=logger.last)


def _scale(trainer):
    return float(trainer.loss_scale.scale.numpy()) if trainer.loss_scale else None


def _check_scale_can_recover(scale_before, step):
    """A call whose every update was skipped, starting at the smallest loss scale, would
    repeat forever: the gradients overflow float16 even unscaled."""
    if scale_before is not None and scale_before <= loss_scale.MIN_SCALE:
        raise TrainingDiverged(
            f"non-finite gradients at step {step} with the float16 loss scale at its "
            f"minimum {loss_scale.MIN_SCALE} (the loss itself is finite): float16 cannot "
            "represent them. Training stopped without saving; use mixed_precision "
            "bfloat16 or float32, or lower learning_rate.")


def _connect_stop(trainer, stop):
    trainer.stop_flag.assign(False)
    trainer.stopped.assign(False)
    if stop is not None:
        # Fires at once if the stop was requested before training started.
        stop.add_listener(lambda: trainer.stop_flag.assign(True))


class _Saver:
    """Checkpoints through the manager (None: no checkpoints), at most once per step."""

    def __init__(self, manager, named_state):
        self._manager, self._named_state = manager, named_state
        self.step, self.path = None, None

    def save(self, step):
        if self._manager is not None and step != self.step:
            self.path = self._manager.save(self._named_state, step)
            self.step = step


class _Logger:
    """Progress lines and TensorBoard scalars (chief only); `last` = last logged losses."""

    def __init__(self, trainer, start, is_chief):
        s = trainer.settings
        self._trainer = trainer
        self._progress = logging_utils.Progress(s.num_train_steps, start=start,
                                                quiet=not is_chief)
        self._writer = (tf.summary.create_file_writer(s.summary_dir)
                        if s.summary_dir and is_chief else None)
        self._window_start, self._window_steps = time.monotonic(), 0
        self.last = {}

    def count(self, steps):
        self._window_steps += steps

    def log(self, step, mean, lr):
        self.last = {k: float(v) for k, v in mean.items()}
        self._progress.update(step, {**self.last, **self._trainer.settings.progress_counts})
        rate = self._window_steps / max(time.monotonic() - self._window_start, 1e-9)
        _write_summaries(self._writer, step, self.last, float(lr), rate,
                         self._trainer.loss_scale)
        self._window_start, self._window_steps = time.monotonic(), 0

    def close(self):
        if self._writer is not None:
            self._writer.flush()


def _write_summaries(writer, step, losses, lr, steps_per_sec, loss_scale):
    if writer is None:
        return
    scalars = dict(losses, learning_rate=lr, steps_per_sec=steps_per_sec)
    if loss_scale is not None:
        scalars["loss_scale"] = float(loss_scale.scale.numpy())
    write_scalars(writer, step, scalars)


def write_scalars(writer, step, scalars):
    """Writes {tag: number} as TensorBoard scalars at `step` with a summary file writer."""
    with writer.as_default(step=step):
        for name, value in scalars.items():
            tf.summary.write(name, tf.constant(value, tf.float32), metadata=_SCALAR_METADATA)
