"""Dynamic loss scaling for float16 training, and its two checkpoint variables.

The rule of Keras' LossScaleOptimizer (the AMP path of NVIDIA's TF2 ELECTRA, spec section 4):
halve the scale when a step's gradients are not finite (that step's update is skipped),
double it after `growth_steps` finite steps in a row. A skipped update is not a step:
util/training.py then leaves global_step, and so the learning-rate schedule, where they
were, as Keras leaves `optimizer.iterations`.

The scale and its good-step counter are saved under their own names, SCALE and
GOOD_STEPS, in the "mixed_precision/" scope that no ELECTRA or HuggingFace variable
uses: tools that read the original names see nothing new (HuggingFace's loader skips
unknown names), and a checkpoint without them (float32/bfloat16 runs, released models)
still loads, the scale then starting at its initial value.
"""

import tensorflow as tf

SCALE = "mixed_precision/loss_scale"
GOOD_STEPS = "mixed_precision/loss_scale_good_steps"
NAMES = (SCALE, GOOD_STEPS)
MIN_SCALE = 1.0  # below 1 the scaling would shrink gradients instead of protecting them


def is_name(name):
    """Whether a checkpoint name is one of the loss-scale variables (may be absent)."""
    return name in NAMES


class DynamicLossScale:
    """The scale and good-step counter (create inside the strategy's scope)."""

    def __init__(self, initial, growth_steps):
        agg = tf.VariableAggregation.ONLY_FIRST_REPLICA
        self.scale = tf.Variable(float(initial), trainable=False, name="loss_scale",
                                 aggregation=agg)
        self.good_steps = tf.Variable(0, dtype=tf.int64, trainable=False,
                                      name="loss_scale_good_steps", aggregation=agg)
        self.growth_steps = growth_steps

    def update(self, finite):
        """Cross-replica context: adjust the scale after a step (finite: bool scalar)."""
        grow = finite & (self.good_steps + 1 >= self.growth_steps)
        new_scale = tf.where(finite, tf.where(grow, self.scale * 2.0, self.scale),
                             tf.maximum(self.scale * 0.5, MIN_SCALE))
        new_good = tf.where(finite & ~grow, self.good_steps + 1, tf.zeros_like(self.good_steps))
        return tf.group(self.scale.assign(new_scale), self.good_steps.assign(new_good))

    def checkpoint_variables(self):
        """{checkpoint name: variable} to save and restore with the model."""
        return {SCALE: self.scale, GOOD_STEPS: self.good_steps}
