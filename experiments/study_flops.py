"""Analytic FLOPs of one pre-training step (ELECTRA or MLM), for equal-compute comparisons.

Counting rules (the ELECTRA paper's, appendix D, and Kaplan et al.'s convention):
  * a multiply-add is 2 FLOPs; a training step (forward + backward) is 3 x the forward;
  * embedding lookups, layer norms, softmaxes, activations, biases, masking, sampling
    and the optimizer update are negligible and not counted;
  * every encoder runs on all B * S tokens of the batch (padding included: shapes are
    fixed); the generator's MLM head runs only at the B * N masked slots.

Per token, an encoder of L layers, hidden H, FFN F, embedding E, sequence length S does
  E * H                    embeddings_project (only when E != H)
  L * (4 * H * H           query, key, value and attention-output dense layers
       + 2 * H * F         the two FFN dense layers
       + 2 * S * H)        attention scores Q K^T and context P V: 2 * S * S * H per
                           sequence and layer, i.e. 2 * 2 * S * S * H FLOPs
multiply-adds. Heads, in multiply-adds:
  generator / MLM head, per masked slot: D * E (dense to E) + E * V (projection onto
    the tied word embeddings), D being the generator's (MLM: the network's) hidden size;
  discriminator head, per token: H * H + H (dense, then dense to one logit).
So one training step costs
  FLOPs = 3 * 2 * (B * S * (disc_encoder + disc_head + gen_encoder) + B * N * gen_head).
MLM-only has no discriminator and its "generator" is the full-size network.
"""

import dataclasses

import configure_pretraining
from model import modeling

FORWARD_FLOPS_PER_MAC = 2
TRAIN_FORWARD_MULTIPLIER = 3  # backward costs about twice the forward


def encoder_macs_per_token(bert_config, seq_length):
    """Multiply-adds per token of a BertModel (see the module docstring)."""
    h, f = bert_config.hidden_size, bert_config.intermediate_size
    project = bert_config.embedding_size * h if bert_config.embedding_size != h else 0
    per_layer = 4 * h * h + 2 * h * f + 2 * seq_length * h
    return project + bert_config.num_hidden_layers * per_layer


def token_logits_head_macs(in_dim, embedding_size, vocab_size):
    """Multiply-adds per masked slot of a TokenLogitsHead: dense to E, then E x V."""
    return in_dim * embedding_size + embedding_size * vocab_size


def generator_config(config, disc):
    """The generator's BertConfig as PretrainingModel builds it (None: uniform)."""
    if config.uniform_generator:
        return None
    if not (config.electra_objective and config.untied_generator):
        return disc  # MLM-only or a tied generator: the full-size network
    gen = modeling.get_generator_config(disc, config.generator_hidden_size,
                                        config.generator_layers)
    if config.untied_generator_embeddings:
        gen = dataclasses.replace(gen, embedding_size=gen.hidden_size)
    return gen


def train_flops_per_step(config):
    """Training FLOPs of one pre-training step.

    Args:
        config: a PretrainingConfig (sizes, objective, train_batch_size, max_seq_length,
            max_predictions_per_seq).
    Returns:
        int FLOPs (forward + backward) of one step of train_batch_size sequences.
    Raises:
        ValueError for Electric / two-tower generators, which this count does not cover.
    """
    if config.electric_objective or config.two_tower_generator:
        raise ValueError("the FLOPs count covers ELECTRA and MLM, not Electric's "
                         "two-tower generator.")
    disc = modeling.get_bert_config(config.model_size, config.vocab_size,
                                    config.embedding_size, config.model_hparam_overrides)
    gen = generator_config(config, disc)
    seq, vocab = config.max_seq_length, disc.vocab_size
    per_token, per_slot = 0, 0
    if config.electra_objective:
        h = disc.hidden_size
        per_token += encoder_macs_per_token(disc, seq) + h * h + h
    if gen is not None:
        per_token += encoder_macs_per_token(gen, seq)
        per_slot += token_logits_head_macs(gen.hidden_size, gen.embedding_size, vocab)
    batch = config.train_batch_size
    macs = batch * seq * per_token + batch * config.max_predictions_per_seq * per_slot
    return FORWARD_FLOPS_PER_MAC * TRAIN_FORWARD_MULTIPLIER * macs


def study_flops_per_step(study, objective):
    """train_flops_per_step of one objective's pre-training run in a StudyConfig."""
    config = configure_pretraining.make_config(
        "", objective, study.pretrain_model_hparams(objective))
    return train_flops_per_step(config)
