"""ELECTRA pre-training model: masking, generator, sampling, discriminator, losses.

Variants (spec b.1, c.4-c.9, f): the default small generator sharing the embeddings
(scope `generator`), untied generator embeddings, a tied generator (one full-size
`electra` network used as both), a uniform generator (no generator variables), plain MLM
(no discriminator) and Electric's two-tower cloze generator (`generator_ltr`/`_rtl`).

Shape legend: B = batch size, S = sequence length, N = max_predictions_per_seq,
V = vocabulary size, E = embedding size, H = discriminator hidden, G = generator hidden.
"""

import collections
import dataclasses
import math

import tensorflow as tf

from model import modeling
from pretrain import pretrain_helpers

PretrainingOutput = collections.namedtuple("PretrainingOutput", [
    "loss", "mlm_loss", "disc_loss",
    "masked_lm_positions", "masked_lm_ids", "masked_lm_weights",
    "mlm_preds", "mlm_per_example_loss", "sampled_tokids",
    "input_mask", "masked_input_ids", "fake_input_ids",
    "disc_labels", "disc_probs", "disc_preds", "disc_per_example_loss",
    "candidates_mask", "repr_cosine"])
PretrainingOutput.__doc__ = """Losses and the tensors the eval metrics need (all tensors).

loss: scalar, gen_weight * mlm_loss + disc_weight * disc_loss (float32).
mlm_loss: scalar generator loss in the total: weighted MLM mean, or the cloze loss over
  all candidate positions for a two-tower generator.
disc_loss: scalar mean over input_mask (0 without a discriminator).
masked_lm_positions / masked_lm_ids [B, N] int32, masked_lm_weights [B, N] float32.
mlm_preds [B, N] int32 argmax; mlm_per_example_loss [B, N] -log p(original) per slot.
sampled_tokids [B, N] int32 generator samples; input_mask [B, S] int32.
masked_input_ids / fake_input_ids [B, S] int32: generator / discriminator inputs.
disc_labels [B, S] int32: 1 = replaced (set even without a discriminator).
disc_probs [B, S] float32, disc_preds [B, S] int32 (logit > 0), disc_per_example_loss [B]:
  zeros without a discriminator.
candidates_mask [B, S] int32: 1 where masking could choose the position (a real token
  other than [CLS], [SEP], [MASK]), for the eval's disc_auc_candidates.
repr_cosine [B] float32: mean_pairwise_cosine of the `electra` network's top layer (the
  encoder fine-tuning starts from) over each example's real tokens; only computed when the
  call asks for it (eval), else zeros, so a train step pays nothing for it.
"""

def _check_config(config):
    """One error per invalid combination the original would crash on."""
    if config.electric_objective and not config.two_tower_generator:
        raise ValueError("electric_objective needs two_tower_generator=true (the cloze "
                         "generator supplies log q); remove the override setting it to false.")
    if config.electric_objective and (config.uniform_generator or not config.untied_generator):
        raise ValueError("electric_objective needs the two-tower generator: set "
                         "uniform_generator=false and untied_generator=true.")
    if config.temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {config.temperature}.")


def roll(sequence, shift):
    """Circular shift along S: [B, S, D] -> [B, S, D], out[:, i] = in[:, (i - shift) % S].

    shift=1 gives each position the previous position's vector, shift=-1 the next one's.
    """
    return tf.concat([sequence[:, -shift:], sequence[:, :-shift]], axis=1)


def mean_pairwise_cosine(sequence, input_mask):
    """Per-example mean cosine similarity over pairs i != j of real tokens.

    With unit vectors u_i of the real tokens, sum_{i != j} u_i.u_j equals
    |sum_i u_i|^2 - sum_i |u_i|^2, which costs O(B*S*D) instead of a [B, S, S] Gram matrix.

    Args:
      sequence: [B, S, D] token vectors (any float dtype; computed in float32).
      input_mask: [B, S] int, 1 = real token.
    Returns:
      [B] float32 in [-1, 1]; 0 for an example with fewer than 2 real tokens (no pairs;
      the eval weights those out). A zero vector has cosine 0 with everything.
    """
    mask = tf.cast(input_mask, tf.float32)[:, :, None]  # [B, S, 1]
    unit = tf.math.l2_normalize(tf.cast(sequence, tf.float32), axis=-1) * mask
    pair_sum = (tf.reduce_sum(tf.square(tf.reduce_sum(unit, 1)), -1)  # |sum_i u_i|^2, [B]
                - tf.reduce_sum(tf.square(unit), [1, 2]))
    n = tf.reduce_sum(mask, [1, 2])  # [B] real tokens
    # divide_no_nan: 0 for no pairs, but a NaN from a diverged encoder still shows.
    return tf.math.divide_no_nan(pair_sum, n * (n - 1))


class TokenLogitsHead(tf.Module):
    """dense(E, act) -> LayerNorm -> x @ word_embeddings^T + output_bias (scope `name`)."""

    def __init__(self, name, in_dim, embeddings, config):
        super().__init__(name=name)
        width = embeddings.config.embedding_size
        self.embeddings = embeddings  # output matrix tied to the input word embeddings
        self.dense = modeling.Dense(f"{name}/dense", in_dim, width,
                                    stddev=config.initializer_range,
                                    activation=modeling.ACTIVATIONS[config.hidden_act])
        self.layer_norm = modeling.LayerNorm(f"{name}/LayerNorm", width)
        self.output_bias = tf.Variable(tf.zeros([config.vocab_size]),
                                       name=f"{name}/output_bias")

    def __call__(self, reprs, compute_dtype=tf.float32, training=False):
        """reprs: [B, N, in_dim] -> logits [B, N, V] float32 (the big matmul stays in fp32)."""
        hidden = self.layer_norm(self.dense(reprs, compute_dtype, training), tf.float32)
        flat = tf.reshape(hidden, [-1, hidden.shape[-1]])  # [B*N, E]
        logits = tied_logits(flat, tf.convert_to_tensor(self.embeddings.word_embeddings))
        vocab = self.output_bias.shape[0]
        logits = tf.reshape(logits + self.output_bias,
                            tf.concat([tf.shape(hidden)[:-1], [vocab]], 0))
        # Static N and V even where the batch size is unknown (several workers): the
        # per-example sampling noise needs them.
        return tf.ensure_shape(logits, hidden.shape[:-1].concatenate([vocab]))


@tf.custom_gradient
def tied_logits(x, table):
    """x [M, E] @ table^T [E, V] -> [M, V], as 2-D matmuls (an einsum ran the forward 1.4x
    slower). The table's gradient dy^T x [V, E] is computed as (x^T dy)^T: oneDNN runs
    the product with the vocabulary as the wide output side 1.5x faster (61 -> 41 ms at
    ELECTRA-Small's [608, 30522] logits on an AMD EPYC Zen 3)."""
    def grad(dy):
        return tf.matmul(dy, table), tf.transpose(tf.matmul(x, dy, transpose_a=True))
    return tf.matmul(x, table, transpose_b=True), grad


class DiscriminatorHead(tf.Module):
    """discriminator_predictions: dense H->H (act) then dense_1 H->1 (Glorot) -> logit."""

    def __init__(self, config):
        super().__init__(name="discriminator_predictions")
        h = config.hidden_size
        self.dense = modeling.Dense("discriminator_predictions/dense", h, h,
                                    stddev=config.initializer_range,
                                    activation=modeling.ACTIVATIONS[config.hidden_act])
        self.dense_1 = modeling.Dense("discriminator_predictions/dense_1", h, 1,
                                      initializer="glorot")

    def __call__(self, sequence_output, compute_dtype=tf.float32, training=False):
        """[B, S, H] -> [B, S] float32 logits."""
        hidden = self.dense(sequence_output, compute_dtype, training)
        return tf.squeeze(self.dense_1(tf.cast(hidden, tf.float32)), -1)


def softmax_output(logits, targets, weights):
    """Weighted token cross-entropy.

    Args:
      logits: [B, N, V] float32; targets: [B, N] int; weights: [B, N] float32.
    Returns:
      (loss scalar = sum(w * nll) / (sum(w) + 1e-6), per-slot nll [B, N], argmax [B, N]).
    """
    nll = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits)
    loss = tf.reduce_sum(weights * nll) / (tf.reduce_sum(weights) + 1e-6)  # weighted mean
    return loss, nll, tf.argmax(logits, -1, output_type=tf.int32)


class PretrainingModel(tf.Module):
    """Generator + discriminator for ELECTRA / Electric / MLM pre-training."""

    def __init__(self, config, special_ids, bert_config=None):
        """Creates every variable with its original checkpoint name.

        Args:
          config: PretrainingConfig or any object with the fields of spec b.1 used here
            (electra_objective, electric_objective, gen_weight, disc_weight, mask_prob,
            max_predictions_per_seq, max_seq_length, uniform_generator,
            two_tower_generator, untied_generator_embeddings, untied_generator,
            generator_layers, generator_hidden_size, disallow_correct, temperature and,
            when bert_config is None, model_size, vocab_size, embedding_size,
            model_hparam_overrides).
          special_ids: pretrain_helpers.SpecialIds.
          bert_config: optional discriminator BertConfig (else built from config).
        """
        super().__init__(name="pretraining_model")
        _check_config(config)
        self.config = config
        self.special_ids = special_ids
        if bert_config is None:
            bert_config = modeling.get_bert_config(
                config.model_size, config.vocab_size, config.embedding_size,
                config.model_hparam_overrides)
        self.bert_config = bert_config
        self.max_predictions = config.max_predictions_per_seq or int(
            (config.mask_prob + 0.005) * config.max_seq_length)
        self.has_discriminator = config.electra_objective or config.electric_objective
        self.embeddings = modeling.Embeddings(bert_config, "electra/embeddings")
        self.generator = self.ltr = self.rtl = self.generator_head = None
        self.two_tower = False
        if not config.uniform_generator:
            self._build_generator()
        self.discriminator = self.discriminator_head = None
        if self.has_discriminator:
            if config.untied_generator or self.generator is None:
                self.discriminator = modeling.BertModel(bert_config, "electra", self.embeddings)
            else:
                self.discriminator = self.generator  # tied: one network plays both roles
            self.discriminator_head = DiscriminatorHead(bert_config)

    def _build_generator(self):
        config, bert_config = self.config, self.bert_config
        if not (self.has_discriminator and config.untied_generator):
            # Plain MLM or tied weights: the full-size `electra` network is the generator.
            self.generator = modeling.BertModel(bert_config, "electra", self.embeddings)
            self.generator_head = TokenLogitsHead("generator_predictions",
                                                  bert_config.hidden_size,
                                                  self.embeddings, bert_config)
            return
        gen_config = modeling.get_generator_config(
            bert_config, config.generator_hidden_size, config.generator_layers)
        embeddings = self.embeddings
        if config.untied_generator_embeddings:
            # Own tables at the generator's width (so no embeddings_project), as the original.
            gen_config = dataclasses.replace(gen_config, embedding_size=gen_config.hidden_size)
            embeddings = None
        if config.two_tower_generator:
            self.two_tower = True
            self.ltr = modeling.BertModel(gen_config, "generator_ltr", embeddings)
            self.rtl = modeling.BertModel(gen_config, "generator_rtl", embeddings)
            self.generator_head = TokenLogitsHead("cloze_predictions", 2 * gen_config.hidden_size,
                                                  self.ltr.embeddings, gen_config)
        else:
            self.generator = modeling.BertModel(gen_config, "generator", embeddings)
            self.generator_head = TokenLogitsHead("generator_predictions",
                                                  gen_config.hidden_size,
                                                  self.generator.embeddings, gen_config)

    @property
    def encoder(self):
        """The `electra` BertModel fine-tuning starts from: the discriminator (ELECTRA,
        Electric, tied generator) or the full-size MLM network; None for a uniform-generator
        MLM, which has no encoder. A property, so tf.Module does not track it twice."""
        return self.discriminator if self.has_discriminator else self.generator

    def named_variables(self):
        """{original checkpoint name: tf.Variable}, shared variables once."""
        return modeling.variables_by_name(self)

    def __call__(self, features, seed, training=False, compute_dtype=tf.float32,
                 with_repr_cosine=False):
        """Masks the batch then runs forward_from_masked.

        Args:
          features: dict of input_ids, input_mask, segment_ids, each [B, S] int32.
          seed: [2] int step seed; fixes masks and generator samples (per example,
            by content, so device layout does not change them).
          training: Python bool, enables dropout.
          compute_dtype: tf.float32 / tf.bfloat16 / tf.float16 for the encoders.
          with_repr_cosine: Python bool, fills repr_cosine (eval); False leaves zeros.
        Returns:
          PretrainingOutput.
        """
        masked = pretrain_helpers.mask(
            features["input_ids"], features["input_mask"], self.special_ids,
            self.config.mask_prob, self.max_predictions, seed,
            segment_ids=features["segment_ids"])
        return self.forward_from_masked(masked, seed, training, compute_dtype,
                                        with_repr_cosine)

    def forward_from_masked(self, masked, seed, training=False, compute_dtype=tf.float32,
                            with_repr_cosine=False):
        """Generator, sampling and discriminator on already-masked inputs.

        Args:
          masked: pretrain_data.Inputs from pretrain_helpers.mask (or injected by a test).
          seed: [2] int step seed (its SAMPLE_STREAM drives the generator samples).
          training, compute_dtype, with_repr_cosine: as __call__.
        Returns:
          PretrainingOutput.
        """
        unmasked = pretrain_helpers.unmask(masked)
        gen_logits, cloze_loss, cloze_logits, gen_hidden = self._generator_logits(
            masked, unmasked, training, compute_dtype)
        mlm_loss, mlm_nll, mlm_preds = softmax_output(
            gen_logits, masked.masked_lm_ids, masked.masked_lm_weights)
        if cloze_loss is not None:
            mlm_loss = cloze_loss
        sampled, fake_ids, labels = self._fake_data(masked, unmasked, gen_logits, seed)
        total = self.config.gen_weight * mlm_loss
        if self.has_discriminator:
            fake = unmasked._replace(input_ids=fake_ids)
            disc = self._discriminator_output(fake, labels, cloze_logits, training,
                                              compute_dtype)
            total += self.config.disc_weight * disc["loss"]
            encoder_output = disc["sequence_output"]
        else:
            disc = _empty_disc_output(masked.input_mask)
            encoder_output = gen_hidden  # MLM: the generator is the `electra` network
        repr_cosine = tf.zeros(tf.shape(masked.input_mask)[:1])
        if with_repr_cosine and encoder_output is not None:
            repr_cosine = mean_pairwise_cosine(encoder_output, masked.input_mask)
        candidates = pretrain_helpers.get_candidates_mask(
            unmasked.input_ids, unmasked.input_mask, self.special_ids)
        return PretrainingOutput(
            loss=total, mlm_loss=mlm_loss, disc_loss=disc["loss"],
            masked_lm_positions=masked.masked_lm_positions, masked_lm_ids=masked.masked_lm_ids,
            masked_lm_weights=masked.masked_lm_weights, mlm_preds=mlm_preds,
            mlm_per_example_loss=mlm_nll, sampled_tokids=sampled,
            input_mask=masked.input_mask, masked_input_ids=masked.input_ids,
            fake_input_ids=fake_ids, disc_labels=labels, disc_probs=disc["probs"],
            disc_preds=disc["preds"],
            disc_per_example_loss=disc["per_example_loss"],
            candidates_mask=tf.cast(candidates, tf.int32), repr_cosine=repr_cosine)

    def cloze_logits(self, inputs, training=False, compute_dtype=tf.float32):
        """Two-tower cloze logits [B, S, V]: position i sees tokens < i and > i only.

        The representation at i is concat(ltr hidden at i-1, rtl hidden at i+1) with
        wraparound at the ends, as the original.
        """
        args = (inputs.input_ids, inputs.input_mask, inputs.segment_ids, training)
        ltr = self.ltr(*args, causal="ltr", compute_dtype=compute_dtype).sequence_output
        rtl = self.rtl(*args, causal="rtl", compute_dtype=compute_dtype).sequence_output
        reprs = tf.concat([roll(ltr, 1), roll(rtl, -1)], -1)  # [B, S, 2G]
        return self.generator_head(reprs, compute_dtype, training)

    def _generator_logits(self, masked, unmasked, training, compute_dtype):
        """-> (logits at the masked slots [B, N, V] float32, cloze loss or None,
        full cloze logits [B, S, V] or None, single-tower generator's top layer
        [B, S, G] or None)."""
        if self.config.uniform_generator:
            shape = tf.concat([tf.shape(masked.masked_lm_ids), [self.bert_config.vocab_size]], 0)
            return tf.zeros(shape), None, None, None
        if self.two_tower:
            # Electric's generator reads the unmasked input and scores every candidate.
            cloze = self.cloze_logits(unmasked, training, compute_dtype)
            weights = tf.cast(pretrain_helpers.get_candidates_mask(
                unmasked.input_ids, unmasked.input_mask, self.special_ids), tf.float32)
            cloze_loss, _, _ = softmax_output(cloze, unmasked.input_ids, weights)
            gathered = pretrain_helpers.gather_positions(cloze, masked.masked_lm_positions)
            return gathered, cloze_loss, cloze, None
        hidden = self.generator(masked.input_ids, masked.input_mask, masked.segment_ids,
                                training, compute_dtype=compute_dtype).sequence_output
        # Only the N masked positions go through the V-wide output layer.
        relevant = pretrain_helpers.gather_positions(hidden, masked.masked_lm_positions)
        return self.generator_head(relevant, compute_dtype, training), None, None, hidden

    def _fake_data(self, masked, unmasked, gen_logits, seed):
        """Samples replacements -> (sampled ids [B, N], fake input ids [B, S], labels [B, S])."""
        disallow = None
        if self.config.disallow_correct:
            disallow = tf.one_hot(masked.masked_lm_ids, self.bert_config.vocab_size)
        keys = pretrain_helpers.example_keys(unmasked.input_ids)
        sample_seed = pretrain_helpers.stream_seed(seed, pretrain_helpers.SAMPLE_STREAM)
        one_hot = pretrain_helpers.sample_from_softmax(
            gen_logits, sample_seed, self.config.temperature, disallow, keys)
        sampled = tf.argmax(one_hot, -1, output_type=tf.int32)
        fake_ids, updated = pretrain_helpers.scatter_update(
            unmasked.input_ids, sampled, masked.masked_lm_positions)
        if self.config.electric_objective:
            labels = updated  # Electric: every resampled position counts as "fake"
        else:
            # A sample equal to the original token is labelled original (0).
            labels = updated * tf.cast(tf.not_equal(fake_ids, unmasked.input_ids), tf.int32)
        return sampled, fake_ids, labels

    def _discriminator_output(self, fake, labels, cloze_logits, training, compute_dtype):
        """Per-token replaced-token detection; loss = mean over input_mask."""
        hidden = self.discriminator(fake.input_ids, fake.input_mask, fake.segment_ids,
                                    training, compute_dtype=compute_dtype).sequence_output
        logits = self.discriminator_head(hidden, compute_dtype, training)  # [B, S]
        if self.config.electric_objective:
            # Energy-based: add the (fixed) cloze log-likelihood of the token actually
            # present and the prior log-odds of a position being resampled.
            log_q = tf.gather(tf.nn.log_softmax(cloze_logits), fake.input_ids, batch_dims=2)
            mask_prob = self.config.mask_prob
            logits += tf.stop_gradient(log_q) + math.log(mask_prob / (1 - mask_prob))
        weights = tf.cast(fake.input_mask, tf.float32)
        losses = tf.nn.sigmoid_cross_entropy_with_logits(
            labels=tf.cast(labels, tf.float32), logits=logits) * weights
        return {
            "loss": tf.reduce_sum(losses) / (1e-6 + tf.reduce_sum(weights)),  # token mean
            "per_example_loss": tf.reduce_sum(losses, -1) / (1e-6 + tf.reduce_sum(weights, -1)),
            "probs": tf.sigmoid(logits),
            "preds": tf.cast(logits > 0, tf.int32),  # a logit of exactly 0 predicts 0
            "sequence_output": hidden,  # the `electra` network's top layer [B, S, H]
        }


def _empty_disc_output(input_mask):
    """Zeros in the discriminator fields when the objective has no discriminator."""
    zeros = tf.zeros_like(input_mask)
    return {"loss": tf.constant(0.0), "per_example_loss": tf.zeros(tf.shape(input_mask)[:1]),
            "probs": tf.cast(zeros, tf.float32), "preds": zeros}

