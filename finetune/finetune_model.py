"""The fine-tuning model: one shared ELECTRA encoder ("electra/...") plus a head per task.

Mirrors the original's run_finetuning.FinetuningModel (spec e.1, f.3): the discriminator
transformer is built under the scope "electra" so pre-trained weights restore by name,
each task adds its head under "task_specific/<task>/", and the loss is

    loss = sum over the batch of per_example_loss[task] * one_hot(task_id)[task]

so every example contributes only its own task's loss and padding examples (task_id =
number of tasks, whose one-hot row is all zeros) contribute nothing. The loss is a SUM,
not a mean, as in the original; global-norm clipping at 1.0 therefore sees the same
gradient magnitudes as there.

With batch_shards > 1 each batch runs as that many independent slices inside the step
(model/batch_sharding.py): per-example results are concatenated and the slices' loss
sums added, so the loss is still the batch's sum.

Shape legend: B = batch size, S = sequence length, H = hidden size, T = number of tasks.
"""

from __future__ import annotations

import typing
from typing import Mapping, Sequence

import tensorflow as tf

from finetune import feature_spec
from model import batch_sharding, modeling


class FinetuningOutput(typing.NamedTuple):
    """What one forward pass returns.

    loss: scalar float32, the summed, task-masked loss of the batch.
    per_example_loss: [B] float32, each example's own task loss (0 for padding).
    outputs: {task name: {output name: [B, ...] tensor}} from each task's head; rows of
      examples of other tasks (and padding) hold meaningless values and are skipped by
      the evaluation loop via task_id.
    """
    loss: tf.Tensor
    per_example_loss: tf.Tensor
    outputs: dict


class FinetuningModel(tf.Module):
    """Shared BertModel "electra" + one prediction module per task.

    Args:
      bert_config: modeling.BertConfig of the (pre-trained) discriminator.
      tasks: finetune.task.Task objects, in config.task_names order (their index is
        the task_id feature).
      batch_shards: slices each batch with a static size runs as (util/backend.py's
        ELECTRA_BATCH_SHARDS where the caller chose it); 1 keeps batches whole.
    """

    def __init__(self, bert_config: modeling.BertConfig, tasks: Sequence,
                 batch_shards: int = 1):
        super().__init__(name="finetuning_model")
        batch_sharding.slice_sizes(None, batch_shards)  # validates it
        self.batch_shards = batch_shards
        self.bert_config = bert_config
        self.task_names = [task.name for task in tasks]
        for index, task in enumerate(tasks):
            if task.task_id != index:
                raise ValueError(f"Task {task.name!r} has task_id {task.task_id} but is at "
                                 f"position {index}; pass the tasks in task_names order.")
        self.bert = modeling.BertModel(bert_config, scope="electra")
        # A list, not a dict, so tf.Module tracks the heads in task_id order.
        self.heads = [task.get_prediction_module(bert_config.hidden_size) for task in tasks]
        # Every head reads the [CLS] output alone: skip the last layer's other positions.
        self.tasks_pooled_only = [task.pooled_output_only for task in tasks]
        self.pooled_only = all(self.tasks_pooled_only)

    def __call__(self, features: Mapping, is_training: bool = False,
                 compute_dtype=tf.float32) -> FinetuningOutput:
        """Runs the encoder and every task head on the batch (slice by slice if sharded).

        Args:
          features: nested feature dict (finetune/feature_spec.py): input_ids,
            input_mask, segment_ids [B, S] int32, task_id [B] int32 and one sub-dict
            per task with that task's features.
          is_training: Python bool; dropout only when True.
          compute_dtype: tf.float32, tf.bfloat16 or tf.float16 for the encoder.
        Returns:
          FinetuningOutput.
        """
        parts = batch_sharding.map_slices(
            lambda part: self._forward(part, is_training, compute_dtype), features,
            self.batch_shards)
        if len(parts) == 1:
            return parts[0]
        # The loss is a sum over examples, so the slices' sums add up to the batch's.
        return FinetuningOutput(
            loss=tf.add_n([part.loss for part in parts]),
            per_example_loss=tf.concat([part.per_example_loss for part in parts], axis=0),
            outputs=batch_sharding.concat_batch([part.outputs for part in parts]))

    def _forward(self, features, is_training, compute_dtype) -> FinetuningOutput:
        """__call__ on one whole batch (or slice)."""
        encoder_output = self.bert(features["input_ids"], features["input_mask"],
                                   features["segment_ids"], training=is_training,
                                   compute_dtype=compute_dtype, pooled_only=self.pooled_only)
        losses, outputs = [], {}
        for name, head in zip(self.task_names, self.heads):
            task_losses, task_outputs = head(
                encoder_output, feature_spec.features_for_task(features, name),
                is_training=is_training, compute_dtype=compute_dtype)
            losses.append(tf.cast(task_losses, tf.float32))
            outputs[name] = task_outputs
        stacked = tf.stack(losses, axis=-1)  # [B, T]
        # Padding examples have task_id == T: their one-hot row is all zeros.
        task_mask = tf.one_hot(features["task_id"], len(self.task_names),
                               dtype=tf.float32)  # [B, T]
        per_example_loss = tf.reduce_sum(stacked * task_mask, axis=-1)  # [B]
        # Reduction: SUM over the batch (the original's), not a mean.
        loss = tf.reduce_sum(per_example_loss)
        return FinetuningOutput(loss=loss, per_example_loss=per_example_loss,
                                outputs=outputs)

    def predict(self, features: Mapping, task_name: str,
                compute_dtype=tf.float32) -> dict:
        """Inference for one task: the encoder and only that task's head, no dropout.

        Args:
          features: nested feature dict as in __call__.
          task_name: one of self.task_names.
        Returns:
          The head's outputs dict ({name: [B, ...]}) plus "task_id" [B], so the caller
          can keep only the rows of this task (padding rows have task_id == T).
        """
        index = self.task_names.index(task_name)
        parts = batch_sharding.map_slices(
            lambda part: self._predict_one(part, index, compute_dtype), features,
            self.batch_shards)
        return parts[0] if len(parts) == 1 else batch_sharding.concat_batch(parts)

    def _predict_one(self, features, index, compute_dtype) -> dict:
        """predict on one whole batch (or slice), for the task at `index`."""
        task_name, head = self.task_names[index], self.heads[index]
        encoder_output = self.bert(features["input_ids"], features["input_mask"],
                                   features["segment_ids"], training=False,
                                   compute_dtype=compute_dtype,
                                   pooled_only=self.tasks_pooled_only[index])
        _, outputs = head(encoder_output, feature_spec.features_for_task(features, task_name),
                          is_training=False, compute_dtype=compute_dtype)
        return {**outputs, "task_id": features["task_id"]}

    def named_variables(self) -> dict[str, tf.Variable]:
        """{checkpoint name: variable} for the encoder and every head, sorted by name."""
        return modeling.variables_by_name(self.bert, *self.heads)
