"""Span QA head: joint start/end prediction plus an answerability classifier (spec e.2).

Shape legend: B = batch, S = sequence length, H = encoder hidden size, K = beam size,
D = 512 (width of the qa_hidden / answerability hidden layers).

Variables (spec f.3), under `task_specific/<task>/`, numbered as TF1's tf.layers.dense
auto-naming numbered them:
  joint_prediction:   dense [H,1] (start), qa_hidden [2H,D], dense_1 [D,1] (end)
  otherwise:          dense [H,1] (start), dense_1 [H,1] (end)
  answerable_classifier with answerable_uses_start_logits: next two denses [2H,D], [D,1]
  answerable_classifier without it: next dense [H,1]
Logits are computed in float32 whatever the encoder's compute dtype.
"""

import tensorflow as tf

from model import modeling

HIDDEN_DIM = 512
REQUIRED_FEATURES = ("input_mask", "segment_ids", "start_positions", "end_positions",
                     "is_impossible", "eid")
# Added to the logits of positions a span cannot start or end at (the original's value).
DISALLOWED_ADDER = -1000.0


def answer_mask(input_mask, segment_ids):
    """1.0 where a span may start/end: [CLS] and real segment-1 tokens (incl. the last
    [SEP]); [B,S] int -> [B,S] float32."""
    mask = tf.cast(input_mask, tf.float32) * tf.cast(segment_ids, tf.float32)
    seq_length = tf.shape(mask)[1]
    return mask + tf.one_hot(0, seq_length, dtype=tf.float32)


def masked_cross_entropy(logits, positions):
    """Softmax cross-entropy per example: logits [B,S], positions [B] int -> [B]."""
    log_probs = tf.nn.log_softmax(logits, axis=-1)
    one_hot = tf.one_hot(positions, tf.shape(logits)[-1], dtype=tf.float32)
    return -tf.reduce_sum(one_hot * log_probs, axis=-1)


class QAHead(tf.Module):
    """Joint start/end + answerability head over the encoder's sequence output.

    Args:
      task_name: variables live under task_specific/<task_name>/.
      hidden_size: H of the encoder.
      beam_size: K, top starts and top ends per start kept at inference.
      joint_prediction: end logits conditioned on the start (XLNet style); else an
        independent end classifier.
      answerable_classifier: add the answerability logit and its loss.
      answerable_uses_start_logits: answerability features include the
        start-probability-weighted hidden state.
      answerable_weight: weight of the answerability loss.
    """

    def __init__(self, task_name, hidden_size, beam_size=20, joint_prediction=True,
                 answerable_classifier=True, answerable_uses_start_logits=True,
                 answerable_weight=0.5):
        super().__init__(name="qa_head_" + task_name.replace("-", "_"))
        scope = "task_specific/%s" % task_name
        self.beam_size = beam_size
        self.joint_prediction = joint_prediction
        self.answerable_classifier = answerable_classifier
        self.answerable_uses_start_logits = answerable_uses_start_logits
        self.answerable_weight = answerable_weight
        names = ("%s/dense%s" % (scope, "" if i == 0 else "_%d" % i) for i in range(4))
        # tf.layers.dense used Glorot-uniform kernels and zero biases.
        self.start_dense = modeling.Dense(next(names), hidden_size, 1, "glorot")
        self.qa_hidden = None
        if joint_prediction:
            self.qa_hidden = modeling.Dense(scope + "/qa_hidden", 2 * hidden_size,
                                            HIDDEN_DIM, "glorot")
            self.end_dense = modeling.Dense(next(names), HIDDEN_DIM, 1, "glorot")
        else:
            self.end_dense = modeling.Dense(next(names), hidden_size, 1, "glorot")
        self.answerable_hidden = self.answerable_dense = None
        if answerable_classifier and answerable_uses_start_logits:
            self.answerable_hidden = modeling.Dense(next(names), 2 * hidden_size,
                                                    HIDDEN_DIM, "glorot")
            self.answerable_dense = modeling.Dense(next(names), HIDDEN_DIM, 1, "glorot")
        elif answerable_classifier:
            self.answerable_dense = modeling.Dense(next(names), hidden_size, 1, "glorot")

    def _end_hidden_parts(self, hidden):
        """Splits qa_hidden(concat([start, end])) into start and end halves.

        concat([s, e]) @ W + b = s @ W[:H] + (e @ W[H:] + b), so the [.., S, 2H] concat
        of the original is never built; returns (W[:H] [H,D], end part [B,S,D]).
        """
        h = hidden.shape[-1]
        kernel = self.qa_hidden.kernel
        end_part = tf.einsum("bsh,hd->bsd", hidden, kernel[h:]) + self.qa_hidden.bias
        return kernel[:h], end_part

    def _end_logits_given_start(self, hidden, start_positions, mask_adder):
        """End logits with the start at start_positions [B]: -> [B,S]."""
        start_kernel, end_part = self._end_hidden_parts(hidden)
        start_features = tf.gather(hidden, start_positions, batch_dims=1)  # [B,H]
        pre = end_part + tf.matmul(start_features, start_kernel)[:, None, :]  # [B,S,D]
        logits = tf.squeeze(self.end_dense(modeling.gelu(pre)), -1)
        return logits + mask_adder

    def _beam_search(self, hidden, start_logits, mask_adder):
        """Top-K starts, then top-K ends for each.

        Returns:
          (start_top_log_probs [B,K], start_top_index [B,K],
           end_top_log_probs [B,K,K], end_top_index [B,K,K]).
        """
        k = min(self.beam_size, hidden.shape[1] or self.beam_size)
        start_top_log_probs, start_top_index = tf.nn.top_k(
            tf.nn.log_softmax(start_logits), k=k)
        start_kernel, end_part = self._end_hidden_parts(hidden)
        start_features = tf.gather(hidden, start_top_index, batch_dims=1)  # [B,K,H]
        start_part = tf.einsum("bkh,hd->bkd", start_features, start_kernel)
        pre = start_part[:, :, None, :] + end_part[:, None, :, :]  # [B,K,S,D]
        end_logits = tf.squeeze(self.end_dense(modeling.gelu(pre)), -1)  # [B,K,S]
        end_logits += mask_adder[:, None, :]
        end_top_log_probs, end_top_index = tf.nn.top_k(
            tf.nn.log_softmax(end_logits), k=k)
        return start_top_log_probs, start_top_index, end_top_log_probs, end_top_index

    def _answerable_logit(self, hidden, start_logits):
        """Answerability logit [B] (high = unanswerable); zeros without the classifier."""
        if not self.answerable_classifier:
            return tf.zeros(tf.shape(hidden)[:1])
        features = hidden[:, 0]
        if self.answerable_uses_start_logits:
            start_p = tf.nn.softmax(start_logits)  # [B,S]
            start_feature = tf.einsum("bs,bsh->bh", start_p, hidden)
            features = self.answerable_hidden(tf.concat([features, start_feature], -1))
            features = modeling.gelu(features)
        return tf.squeeze(self.answerable_dense(features), -1)

    def __call__(self, encoder_output, features, is_training=False,
                 compute_dtype=tf.float32):
        """Runs the head.

        Args:
          encoder_output: has .sequence_output [B,S,H] (any float dtype).
          features: dict with input_mask, segment_ids [B,S], start_positions,
            end_positions, is_impossible [B] (targets; zeros at inference are fine)
            and eid [B].
          is_training: training skips the beam search.
          compute_dtype: accepted for the Task contract; logits are always float32.
        Returns:
          (losses [B] float32, outputs dict): loss [B], eid [B], start_logits [B,S],
          end_logits [B,S] (given the target start when joint), answerable_logit [B],
          start_top_log_probs [B,K], start_top_index [B,K], end_top_log_probs [B,K,K],
          end_top_index [B,K,K] (zeros while training or without joint prediction).
        """
        del compute_dtype
        missing = [name for name in REQUIRED_FEATURES if name not in features]
        if missing:
            raise ValueError("QA head: features lack %s; pass the batch through "
                             "feature_spec.features_for_task(batch, task name)." % missing)
        hidden = tf.cast(encoder_output.sequence_output, tf.float32)
        mask_adder = DISALLOWED_ADDER * (
            1.0 - answer_mask(features["input_mask"], features["segment_ids"]))
        start_logits = tf.squeeze(self.start_dense(hidden), -1) + mask_adder
        start_positions = tf.cast(features["start_positions"], tf.int32)
        if self.joint_prediction:
            end_logits = self._end_logits_given_start(hidden, start_positions, mask_adder)
        else:
            end_logits = tf.squeeze(self.end_dense(hidden), -1) + mask_adder
        losses = (masked_cross_entropy(start_logits, start_positions)
                  + masked_cross_entropy(end_logits, tf.cast(features["end_positions"],
                                                             tf.int32))) / 2.0
        answerable_logit = self._answerable_logit(hidden, start_logits)
        if self.answerable_classifier:
            losses += self.answerable_weight * tf.nn.sigmoid_cross_entropy_with_logits(
                labels=tf.cast(features["is_impossible"], tf.float32),
                logits=answerable_logit)
        outputs = dict(loss=losses, eid=features["eid"], start_logits=start_logits,
                       end_logits=end_logits, answerable_logit=answerable_logit)
        outputs.update(self._top_outputs(hidden, start_logits, mask_adder, is_training))
        return losses, outputs

    def _top_outputs(self, hidden, start_logits, mask_adder, is_training):
        """Beam-search outputs, or zeros of the same shapes when not searching."""
        if self.joint_prediction and not is_training:
            values = self._beam_search(hidden, start_logits, mask_adder)
        else:
            batch = tf.shape(hidden)[0]
            k = min(self.beam_size, hidden.shape[1] or self.beam_size)
            values = (tf.zeros([batch, k]), tf.zeros([batch, k], tf.int32),
                      tf.zeros([batch, k, k]), tf.zeros([batch, k, k], tf.int32))
        keys = ("start_top_log_probs", "start_top_index", "end_top_log_probs",
                "end_top_index")
        return dict(zip(keys, values))
