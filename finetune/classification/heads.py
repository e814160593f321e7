"""Classification and regression heads on the [CLS] vector (spec e.1).

Both heads: pooled output (the raw final [CLS] hidden state, no pooler) -> dropout 0.1
(training only) -> one dense layer named `task_specific/<task>/dense` with the TF
default Glorot-uniform init -> per-example loss. Logits and losses are float32 even
under mixed precision.
"""

from __future__ import annotations

import tensorflow as tf

from model import modeling

HEAD_DROPOUT = 0.1


def _cls_dense(dense: modeling.Dense, encoder_output, is_training: bool,
               compute_dtype) -> tf.Tensor:
    """pooled_output [B, H] -> dropout -> dense -> [B, out] float32."""
    reprs = encoder_output.pooled_output  # [B, H]
    if is_training:
        reprs = tf.nn.dropout(reprs, rate=HEAD_DROPOUT)
    return tf.cast(dense(reprs, compute_dtype), tf.float32)


class ClassificationHead(tf.Module):
    """Softmax classifier; loss = cross-entropy per example."""

    def __init__(self, task_name: str, hidden_size: int, num_labels: int):
        super().__init__(name=f"task_specific_{task_name}")
        self.num_labels = num_labels
        self.dense = modeling.Dense(f"task_specific/{task_name}/dense", hidden_size,
                                    num_labels, initializer="glorot")

    def __call__(self, encoder_output, features, is_training=False,
                 compute_dtype=tf.float32):
        """Args:
          encoder_output: EncoderOutput with pooled_output [B, H].
          features: dict with "label_ids" [B] int32 and "eid" [B] int32.
        Returns:
          (losses [B] float32, outputs dict: loss [B], logits [B, n], predictions [B]
           int32, label_ids [B], eid [B]).
        """
        logits = _cls_dense(self.dense, encoder_output, is_training, compute_dtype)
        log_probs = tf.nn.log_softmax(logits, axis=-1)  # [B, n]
        label_ids = features["label_ids"]
        one_hot = tf.one_hot(label_ids, self.num_labels, dtype=tf.float32)
        losses = -tf.reduce_sum(one_hot * log_probs, axis=-1)  # per-example CE, no reduction
        outputs = {
            "loss": losses,
            "logits": logits,
            "predictions": tf.argmax(logits, axis=-1, output_type=tf.int32),
            "label_ids": label_ids,
            "eid": features["eid"],
        }
        return losses, outputs


class RegressionHead(tf.Module):
    """Scalar regressor; loss = squared error per example."""

    def __init__(self, task_name: str, hidden_size: int):
        super().__init__(name=f"task_specific_{task_name}")
        self.dense = modeling.Dense(f"task_specific/{task_name}/dense", hidden_size, 1,
                                    initializer="glorot")

    def __call__(self, encoder_output, features, is_training=False,
                 compute_dtype=tf.float32):
        """Args:
          encoder_output: EncoderOutput with pooled_output [B, H].
          features: dict with "targets" [B] float32 (normalised) and "eid" [B].
        Returns:
          (losses [B], outputs dict: loss, predictions [B], targets [B], eid [B]).
        """
        predictions = _cls_dense(self.dense, encoder_output, is_training, compute_dtype)
        predictions = tf.squeeze(predictions, axis=-1)  # [B]; axis given so B=1 survives
        targets = features["targets"]
        losses = tf.square(predictions - targets)  # per-example squared error
        outputs = {"loss": losses, "predictions": predictions, "targets": targets,
                   "eid": features["eid"]}
        return losses, outputs
