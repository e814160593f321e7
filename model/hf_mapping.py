"""The map from ELECTRA checkpoint variables (spec f) to HuggingFace ELECTRA parameters.

HuggingFace's modeling_electra names a parameter by its PyTorch module path and stores
it in PyTorch's layouts. For each HF parameter this module gives the TF variable it is
read from, the TF shape expected there, and whether it is transposed:
  * Linear: TF `<scope>/kernel` [in, out] becomes `<module>.weight` [out, in]
    (transposed) and `<scope>/bias` becomes `<module>.bias`;
  * LayerNorm: `gamma` / `beta` become `weight` / `bias`;
  * embedding tables are stored as they are, as `<table>.weight` [rows, E];
  * layers: `encoder/layer_<i>` becomes `encoder.layer.<i>`;
  * heads: `discriminator_predictions/dense_1` becomes `...dense_prediction`, and
    `generator_predictions/output_bias` becomes `generator_lm_head.bias`.
`generator_lm_head.weight` is left out on purpose: HF ties it to the input word
embeddings when loading, exactly as our generator's output matrix is tied, and its own
save_pretrained omits it too. Pure data, no I/O: pretrain/hf_export.py reads and writes.
"""

import dataclasses

# The original's TF1 layer_norm epsilon (model/modeling.py uses the same value); HF's
# ElectraConfig defaults to 1e-12 as well but we write it explicitly.
LAYER_NORM_EPS = 1e-12
ARCHITECTURES = {"discriminator": "ElectraForPreTraining",
                 "generator": "ElectraForMaskedLM",
                 "encoder": "ElectraModel"}
# BertConfig fields written to config.json under the same name.
_CONFIG_FIELDS = ("vocab_size", "embedding_size", "hidden_size", "num_hidden_layers",
                  "num_attention_heads", "intermediate_size", "hidden_act",
                  "hidden_dropout_prob", "attention_probs_dropout_prob",
                  "max_position_embeddings", "type_vocab_size", "initializer_range")


@dataclasses.dataclass(frozen=True)
class Param:
    """One HF parameter and the checkpoint variable holding it."""

    hf_name: str  # e.g. "electra.encoder.layer.0.attention.self.query.weight"
    tf_name: str  # e.g. "electra/encoder/layer_0/attention/self/query/kernel"
    tf_shape: tuple  # shape the checkpoint must have, from the model config
    transpose: bool  # TF kernel [in, out] -> torch Linear weight [out, in]


@dataclasses.dataclass(frozen=True)
class Network:
    """Where one exported network lives in the checkpoint.

    which: "discriminator", "generator" or "encoder" (the encoder without a head).
    config: its modeling.BertConfig (for the generator, the generator's own sizes).
    scope: TF scope of the encoder, "electra" or "generator".
    embeddings_scope: TF scope of its embedding tables; "electra/embeddings" when the
      generator shares the discriminator's, "generator/embeddings" when untied.
    """

    which: str
    config: object
    scope: str
    embeddings_scope: str


def _dense(hf, tf, n_in, n_out):
    return [Param(f"{hf}.weight", f"{tf}/kernel", (n_in, n_out), True),
            Param(f"{hf}.bias", f"{tf}/bias", (n_out,), False)]


def _layer_norm(hf, tf, dim):
    return [Param(f"{hf}.weight", f"{tf}/gamma", (dim,), False),
            Param(f"{hf}.bias", f"{tf}/beta", (dim,), False)]


def _embeddings(config, hf, tf):
    e = config.embedding_size
    tables = [("word_embeddings", config.vocab_size),
              ("position_embeddings", config.max_position_embeddings),
              ("token_type_embeddings", config.type_vocab_size)]
    params = [Param(f"{hf}.{name}.weight", f"{tf}/{name}", (rows, e), False)
              for name, rows in tables]
    return params + _layer_norm(f"{hf}.LayerNorm", f"{tf}/LayerNorm", e)


def _layer(config, hf, tf):
    """One encoder layer: hf "...encoder.layer.<i>", tf "<scope>/encoder/layer_<i>"."""
    h, f = config.hidden_size, config.intermediate_size
    params = []
    for name in ("query", "key", "value"):
        params += _dense(f"{hf}.attention.self.{name}", f"{tf}/attention/self/{name}", h, h)
    params += _dense(f"{hf}.attention.output.dense", f"{tf}/attention/output/dense", h, h)
    params += _layer_norm(f"{hf}.attention.output.LayerNorm",
                          f"{tf}/attention/output/LayerNorm", h)
    params += _dense(f"{hf}.intermediate.dense", f"{tf}/intermediate/dense", h, f)
    params += _dense(f"{hf}.output.dense", f"{tf}/output/dense", f, h)
    return params + _layer_norm(f"{hf}.output.LayerNorm", f"{tf}/output/LayerNorm", h)


def encoder_params(network, hf_prefix):
    """Embeddings, optional embeddings_project and layers of `network` (ElectraModel).

    hf_prefix: "electra." inside ElectraForPreTraining / ElectraForMaskedLM, "" for a
      bare ElectraModel (HF's base-model checkpoints carry no prefix).
    """
    config = network.config
    params = _embeddings(config, f"{hf_prefix}embeddings", network.embeddings_scope)
    if config.embedding_size != config.hidden_size:
        # Both sides create the projection exactly when E != H.
        params += _dense(f"{hf_prefix}embeddings_project", f"{network.scope}/embeddings_project",
                         config.embedding_size, config.hidden_size)
    for i in range(config.num_hidden_layers):
        params += _layer(config, f"{hf_prefix}encoder.layer.{i}",
                         f"{network.scope}/encoder/layer_{i}")
    return params


def _discriminator_head(config):
    h = config.hidden_size
    return (_dense("discriminator_predictions.dense", "discriminator_predictions/dense", h, h)
            + _dense("discriminator_predictions.dense_prediction",
                     "discriminator_predictions/dense_1", h, 1))


def _generator_head(config):
    g, e = config.hidden_size, config.embedding_size
    return (_dense("generator_predictions.dense", "generator_predictions/dense", g, e)
            + _layer_norm("generator_predictions.LayerNorm", "generator_predictions/LayerNorm", e)
            + [Param("generator_lm_head.bias", "generator_predictions/output_bias",
                     (config.vocab_size,), False)])


def param_map(network):
    """Every parameter of the HF model for `network`, in HF's module order.

    Returns:
      list of Param; the HF model class is ARCHITECTURES[network.which].
    """
    if network.which == "encoder":
        return encoder_params(network, "")
    params = encoder_params(network, "electra.")
    if network.which == "discriminator":
        return params + _discriminator_head(network.config)
    if network.which == "generator":
        return params + _generator_head(network.config)
    raise ValueError(f"Unknown network {network.which!r}; use one of {sorted(ARCHITECTURES)}.")


def hf_config(network, pad_token_id):
    """The config.json dict of HF's ElectraConfig for `network`.

    Args:
      network: Network.
      pad_token_id: id of [PAD] in the vocab (HF's embedding padding_idx).
    Returns:
      JSON-able dict.
    """
    config = {"architectures": [ARCHITECTURES[network.which]], "model_type": "electra"}
    config.update({name: getattr(network.config, name) for name in _CONFIG_FIELDS})
    # "torch_dtype" (not 4.56+'s "dtype"): every transformers version reads it silently.
    config.update({"layer_norm_eps": LAYER_NORM_EPS, "position_embedding_type": "absolute",
                   "pad_token_id": pad_token_id, "torch_dtype": "float32"})
    return config
