"""BERT-style transformer encoder used by ELECTRA's generator, discriminator and fine-tuning.

Every module is a `tf.Module` that creates its variables eagerly in `__init__`, each named
with the original TF1 checkpoint name (spec f), so name-based checkpoints round-trip with
the released models. Mixed precision: weights are float32 master copies cast to the
`compute_dtype` keyword at use; LayerNorm statistics and the attention softmax run in
float32.

Shape legend: B = batch size, S = sequence length, E = embedding size, H = hidden size,
N = attention heads, D = head size (H / N), V = vocabulary size, F = intermediate size.
"""

import collections
import dataclasses
import difflib
import math
import re

import tensorflow as tf

from model.layer_norm import layer_norm
from util import backend

_MODEL_SIZES = {"small": (256, 12), "base": (768, 12), "large": (1024, 24)}
# TF1 contrib layer_norm's epsilon, which the original encoder used everywhere.
_LAYER_NORM_EPSILON = 1e-12
# Added to attention scores of masked keys: exp(-10000) underflows to 0 in float32.
_MASK_ADDER = -10000.0


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """Transformer hyperparameters (the original's BertConfig plus embedding_size)."""

    vocab_size: int  # wordpiece vocabulary size V
    hidden_size: int  # transformer width H
    num_hidden_layers: int  # number of encoder layers L
    num_attention_heads: int  # heads per attention layer N (must divide H)
    intermediate_size: int  # FFN inner width F
    hidden_act: str = "gelu"  # FFN activation: gelu (erf form), relu, tanh or linear
    hidden_dropout_prob: float = 0.1  # dropout after embeddings and each sub-layer
    attention_probs_dropout_prob: float = 0.1  # dropout on attention probabilities
    max_position_embeddings: int = 512  # rows of the position table
    type_vocab_size: int = 2  # rows of the token-type (segment) table
    initializer_range: float = 0.02  # stddev of the truncated-normal initialiser
    embedding_size: int | None = None  # embedding width E; None -> hidden_size

    def __post_init__(self):
        if self.embedding_size is None:
            # Frozen dataclass: resolve the sentinel once so every reader sees an int.
            object.__setattr__(self, "embedding_size", self.hidden_size)
        for field in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                      "intermediate_size", "max_position_embeddings", "type_vocab_size",
                      "embedding_size"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"BertConfig.{field} must be a positive int, got {value!r}.")
        for field in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if not 0.0 <= getattr(self, field) < 1.0:
                raise ValueError(f"BertConfig.{field} must be in [0, 1), got "
                                 f"{getattr(self, field)!r}.")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"BertConfig.hidden_size ({self.hidden_size}) must be a multiple of "
                f"num_attention_heads ({self.num_attention_heads}); change one of them.")
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"BertConfig.hidden_act {self.hidden_act!r} is not one of "
                             f"{sorted(ACTIVATIONS)}.")


def get_bert_config(model_size, vocab_size=30522, embedding_size=None,
                    model_hparam_overrides=None):
    """Transformer dims for a model size, as the original's training_utils.get_bert_config.

    heads = max(1, hidden // 64) and intermediate = 4 * hidden are derived from the
    (possibly overridden) hidden size unless the overrides set them explicitly.

    Args:
      model_size: "small", "base" or "large".
      vocab_size: V.
      embedding_size: E, or None for E = H (callers apply the small -> 128 default).
      model_hparam_overrides: dict of BertConfig fields that win over everything above.
    Returns:
      BertConfig.
    """
    if model_size not in _MODEL_SIZES:
        raise ValueError(f"Unknown model_size {model_size!r}; use one of {sorted(_MODEL_SIZES)}.")
    overrides = dict(model_hparam_overrides or {})
    names = [f.name for f in dataclasses.fields(BertConfig)]
    for key in overrides:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"Unknown model_hparam_overrides key {key!r} for BertConfig.{hint}")
    hidden, layers = _MODEL_SIZES[model_size]
    args = {"hidden_size": hidden, "num_hidden_layers": layers, "vocab_size": vocab_size,
            "embedding_size": embedding_size}
    args.update(overrides)
    args.setdefault("num_attention_heads", max(1, args["hidden_size"] // 64))
    args.setdefault("intermediate_size", 4 * args["hidden_size"])
    return BertConfig(**args)


def get_generator_config(disc, generator_hidden_size, generator_layers):
    """Generator dims: hidden and layers scaled from the discriminator's (spec b.2).

    The embedding size stays the discriminator's E because the embeddings are shared.
    Python's round() (half to even) matches the original.
    """
    hidden = int(round(disc.hidden_size * generator_hidden_size))
    layers = int(round(disc.num_hidden_layers * generator_layers))
    if hidden <= 0 or layers <= 0:
        raise ValueError(f"generator_hidden_size={generator_hidden_size} and generator_layers="
                         f"{generator_layers} give a generator with hidden {hidden} and "
                         f"{layers} layers; both must be at least 1.")
    return dataclasses.replace(disc, hidden_size=hidden, num_hidden_layers=layers,
                               intermediate_size=4 * hidden,
                               num_attention_heads=max(1, hidden // 64))


def gelu(x, training=False):
    """Exact GELU, 0.5 * x * (1 + erf(x / sqrt(2))), as the original (not the tanh form).

    Without training, plain TF ops: oneDNN's graph rewrite fuses them into the MatMul +
    BiasAdd before them. When training, forward and backward each run as one
    XLA-compiled loop: TF's autodiff of the erfc form makes about eight passes over the
    [B*S, F] activations, among the largest tensors of a step (ELECTRA-Small fine-tuning
    step 3-5% faster on a 2-core AMD EPYC, with the same dropout change).
    """
    if not training:
        return tf.nn.gelu(x, approximate=False)
    return _gelu_fused_gradient(x)


_SQRT_HALF = 0.7071067811865476
_INV_SQRT_2PI = 0.3989422804014327


@tf.function(jit_compile=True)
def _gelu_forward(x):
    return 0.5 * x * tf.math.erfc(x * -_SQRT_HALF)


@tf.function(jit_compile=True)
def _gelu_backward(x, dy):
    """d gelu / dx = Phi(x) + x * phi(x): the normal CDF and density."""
    cdf = 0.5 * tf.math.erfc(x * -_SQRT_HALF)
    return dy * (cdf + x * tf.exp(-0.5 * x * x) * _INV_SQRT_2PI)


@tf.custom_gradient
def _gelu_fused_gradient(x):
    return _gelu_forward(x), lambda dy: _gelu_backward(x, dy)


def _relu(x, training=False):  # pylint: disable=unused-argument
    return tf.nn.relu(x)


def _tanh(x, training=False):  # pylint: disable=unused-argument
    return tf.tanh(x)


# hidden_act name -> fn(x, training); None = linear. Shared with the pre-training heads.
ACTIVATIONS = {"gelu": gelu, "relu": _relu, "tanh": _tanh, "linear": None}


def _initial_value(initializer, shape, stddev):
    """Returns a callable producing the initial value (called under the right device)."""
    if initializer == "truncated_normal":
        # tf.random.truncated_normal re-draws beyond 2 sigma, like TF1's initializer.
        return lambda: tf.random.truncated_normal(shape, stddev=stddev)
    if initializer == "glorot":
        limit = math.sqrt(6.0 / (shape[0] + shape[1]))
        return lambda: tf.random.uniform(shape, -limit, limit)
    if initializer == "zeros":
        return lambda: tf.zeros(shape)
    if initializer == "ones":
        return lambda: tf.ones(shape)
    raise ValueError(f"Unknown initializer {initializer!r}; use truncated_normal or glorot.")


def _variable(name, shape, initializer, stddev=0.02):
    return tf.Variable(_initial_value(initializer, shape, stddev), name=name,
                       dtype=tf.float32, trainable=True)


def _module_name(scope):
    """tf.Module names must be identifiers; the real name lives in `scope`."""
    return re.sub(r"\W", "_", scope)


def _hash_uint32(x):
    """lowbias32 integer hash (C. Wellons): well-mixed 32-bit output for counter inputs."""
    for shift, multiplier in ((16, 0x7FEB352D), (15, 0x846CA68B)):
        x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(shift, tf.uint32)))
        x = x * tf.constant(multiplier, tf.uint32)
    return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(16, tf.uint32)))


def dropout(x, rate):
    """Inverted dropout: zeroes each element with probability `rate`, scales the rest.

    Same distribution as tf.nn.dropout, but the mask comes from a counter-based integer
    hash of (element index, one fresh stateful 32-bit seed per call). Measured on a
    [4096, 1024] tensor: tf.nn.dropout 72 ms vs 27 ms on CPU, 380 ms vs 8 ms under XLA,
    because TF's Philox kernels are slow there while the hash is plain integer arithmetic
    that XLA fuses into one loop. So the seed is drawn outside XLA and the hash, mask
    and scaling run as one XLA-compiled loop, forward and backward (the backward
    recomputes the mask from the seed instead of keeping it). The keep threshold is
    exact to 2**-32.

    Args:
      x: float tensor of any shape (fewer than 2**32 elements).
      rate: Python float in [0, 1).
    Returns:
      Tensor like x.
    """
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout rate must be in [0, 1), got {rate}.")
    seed = tf.bitcast(tf.random.uniform([], -2**31, 2**31 - 1, dtype=tf.int32), tf.uint32)
    apply_mask = _hash_dropout_fn(rate)

    @tf.custom_gradient
    def masked(x):
        return apply_mask(x, seed), lambda dy: apply_mask(dy, seed)

    return masked(x)


_HASH_DROPOUT_FNS = {}


def _hash_dropout_fn(rate):
    """The XLA-compiled fn(x, seed) applying rate's hash mask (one per rate: the keep
    threshold is a compile-time constant)."""
    if rate not in _HASH_DROPOUT_FNS:
        threshold = min(int(round(rate * 2**32)), 2**32 - 1)
        scale = 1.0 / (1.0 - rate)

        def apply_mask(x, seed):
            shape = tf.shape(x)
            counter = tf.bitcast(tf.range(tf.reduce_prod(shape), dtype=tf.int32), tf.uint32)
            # Golden-ratio stride spreads consecutive counters before the hash mixes them.
            bits = _hash_uint32(counter * tf.constant(0x9E3779B9, tf.uint32) + seed)
            keep = tf.reshape(bits, shape) >= tf.constant(threshold, tf.uint32)
            return tf.where(keep, x * tf.cast(scale, x.dtype), tf.zeros_like(x))

        _HASH_DROPOUT_FNS[rate] = tf.function(apply_mask, jit_compile=True)
    return _HASH_DROPOUT_FNS[rate]


def _dropout(x, rate, training):
    return dropout(x, rate) if training and rate > 0 else x


def weight_gradient(x, dy, kernel=None):
    """x^T dy: a dense layer's weight gradient. x: [M, in], dy: [M, out] -> [in, out].

    kernel "eigen" (float32 only) runs it as BatchMatMulV3, which oneDNN's graph rewrite
    leaves to Eigen; "onednn" as a plain MatMul, which it rewrites to oneDNN's sgemm
    (util/backend.py says where each is faster). Eigen is fastest with the wider side
    as the output's columns, so it may compute (dy^T x)^T. None: the process's setting.
    """
    kernel = kernel or backend.weight_grad_matmul()
    if kernel == "onednn" or x.dtype != tf.float32:
        return tf.matmul(x, dy, transpose_a=True)
    if x.shape[1] is not None and dy.shape[1] is not None and x.shape[1] > dy.shape[1]:
        return tf.transpose(_batch_matmul_v3_t(dy, x))
    return _batch_matmul_v3_t(x, dy)


def _batch_matmul_v3_t(a, b):
    """a^T b for 2-D a, b through one-batch BatchMatMulV3."""
    return tf.raw_ops.BatchMatMulV3(x=a[None], y=b[None], Tout=a.dtype, adj_x=True)[0]


@tf.custom_gradient
def _dense_2d_training(x, kernel, bias):
    def grad(dy):
        return (tf.matmul(dy, kernel, transpose_b=True), weight_gradient(x, dy),
                tf.raw_ops.BiasAddGrad(out_backprop=dy))
    return tf.nn.bias_add(tf.matmul(x, kernel), bias), grad


def dense_2d(x, kernel, bias, training=False):
    """x [M, in] @ kernel [in, out] + bias [out] -> [M, out], all in one dtype.

    When training, the gradient is TensorFlow's own but for the weight gradient, which
    goes through `weight_gradient`. Otherwise plain ops: the custom gradient's IdentityN
    after the bias would keep oneDNN from fusing an inference GELU into the matmul.
    """
    if training:
        return _dense_2d_training(x, kernel, bias)
    return tf.nn.bias_add(tf.matmul(x, kernel), bias)


class Dense(tf.Module):
    """Fully connected layer with `<name>/kernel` [in, out] and `<name>/bias` [out]."""

    def __init__(self, name, in_dim, out_dim, initializer="truncated_normal", stddev=0.02,
                 activation=None):
        super().__init__(name=_module_name(name))
        self.scope = name
        self.activation = activation
        self.kernel = _variable(f"{name}/kernel", [in_dim, out_dim], initializer, stddev)
        self.bias = _variable(f"{name}/bias", [out_dim], "zeros")

    def __call__(self, x, compute_dtype=tf.float32, training=False):
        """x: [..., in] -> [..., out] in compute_dtype; training picks the activation's
        training form (see gelu) and the weight gradient's kernel (see dense_2d)."""
        kernel = tf.cast(self.kernel, compute_dtype)
        x = tf.cast(x, compute_dtype)
        # One 2-D matmul is faster on CPU than a broadcast batch matmul, and with the bias
        # and activation applied before reshaping back, oneDNN's graph rewrite fuses
        # MatMul + BiasAdd (+ GELU) into one kernel (a Reshape in between blocks that).
        x2d = x if x.shape.rank == 2 else tf.reshape(x, [-1, kernel.shape[0]])
        y = dense_2d(x2d, kernel, tf.cast(self.bias, compute_dtype), training)
        if self.activation is not None:
            y = self.activation(y, training)
        if x.shape.rank == 2:
            return y
        return tf.reshape(y, tf.concat([tf.shape(x)[:-1], tf.shape(kernel)[-1:]], axis=0))


class LayerNorm(tf.Module):
    """Layer normalisation over the last axis with `<name>/gamma`, `<name>/beta` [dim]."""

    def __init__(self, name, dim):
        super().__init__(name=_module_name(name))
        self.scope = name
        self.gamma = _variable(f"{name}/gamma", [dim], "ones")
        self.beta = _variable(f"{name}/beta", [dim], "zeros")

    def __call__(self, x, compute_dtype=tf.float32):
        """x: [..., dim] -> [..., dim] in compute_dtype; statistics in float32."""
        y = layer_norm(tf.cast(x, tf.float32), self.gamma, self.beta, _LAYER_NORM_EPSILON)
        return tf.cast(y, compute_dtype)


class Embeddings(tf.Module):
    """Word + token-type + position embeddings, LayerNorm and dropout (spec c.1)."""

    def __init__(self, config, scope="electra/embeddings"):
        super().__init__(name=_module_name(scope))
        self.scope = scope
        self.config = config
        e, std = config.embedding_size, config.initializer_range
        self.word_embeddings = _variable(f"{scope}/word_embeddings", [config.vocab_size, e],
                                         "truncated_normal", std)
        self.token_type_embeddings = _variable(f"{scope}/token_type_embeddings",
                                               [config.type_vocab_size, e], "truncated_normal", std)
        self.position_embeddings = _variable(f"{scope}/position_embeddings",
                                             [config.max_position_embeddings, e],
                                             "truncated_normal", std)
        self.layer_norm = LayerNorm(f"{scope}/LayerNorm", e)

    def __call__(self, input_ids, segment_ids, training=False, compute_dtype=tf.float32):
        """input_ids, segment_ids: [B, S] int -> [B, S, E] in compute_dtype."""
        seq_length = tf.shape(input_ids)[1]
        # A gather is much faster than the TPU-style one-hot matmul on CPU/GPU and gives
        # the same values; its gradient is an IndexedSlices over the used rows.
        x = tf.gather(self.word_embeddings, input_ids)
        x += tf.gather(self.token_type_embeddings, segment_ids)
        x += self.position_embeddings[tf.newaxis, :seq_length]  # [1, S, E]
        x = self.layer_norm(x, compute_dtype)
        return _dropout(x, self.config.hidden_dropout_prob, training)


class TransformerLayer(tf.Module):
    """One post-LN encoder layer: self-attention + FFN, each with residual and LayerNorm."""

    def __init__(self, config, scope):
        super().__init__(name=_module_name(scope))
        self.scope = scope
        self.config = config
        h, f, std = config.hidden_size, config.intermediate_size, config.initializer_range
        self.query = Dense(f"{scope}/attention/self/query", h, h, stddev=std)
        self.key = Dense(f"{scope}/attention/self/key", h, h, stddev=std)
        self.value = Dense(f"{scope}/attention/self/value", h, h, stddev=std)
        self.attention_output = Dense(f"{scope}/attention/output/dense", h, h, stddev=std)
        self.attention_layer_norm = LayerNorm(f"{scope}/attention/output/LayerNorm", h)
        self.intermediate = Dense(f"{scope}/intermediate/dense", h, f, stddev=std,
                                  activation=ACTIVATIONS[config.hidden_act])
        self.output_dense = Dense(f"{scope}/output/dense", f, h, stddev=std)
        self.output_layer_norm = LayerNorm(f"{scope}/output/LayerNorm", h)

    def _attention(self, x, mask_adder, training, compute_dtype, first_only=False):
        """x: [B, S, H], mask_adder: [B, 1, 1 or S, S] float32 -> context [B, S, H], or
        [B, 1, H] with first_only: the first position's query alone."""
        n = self.config.num_attention_heads
        h = self.config.hidden_size
        d = h // n
        batch, seq = tf.shape(x)[0], tf.shape(x)[1]
        # One [H, 3H] matmul instead of three [H, H] ones: fewer, larger GEMMs on CPU.
        kernel = tf.cast(tf.concat([self.query.kernel, self.key.kernel, self.value.kernel], 1),
                         compute_dtype)
        bias = tf.cast(tf.concat([self.query.bias, self.key.bias, self.value.bias], 0),
                       compute_dtype)
        qkv = dense_2d(tf.reshape(x, [-1, h]), kernel, bias, training)  # [B*S, 3H]
        qkv = tf.reshape(qkv, [batch, seq, 3, n, d])
        # unstack, not qkv[i]: a strided slice's gradient writes a full-size zero tensor
        # per slice, while unstack's gradient is one stack.
        q, k, v = tf.unstack(tf.transpose(qkv, [2, 0, 3, 1, 4]))  # each [B, N, S, D]
        if first_only:
            q, mask_adder = q[:, :, :1], mask_adder[:, :, :1]  # [B, N, 1, D], [B, 1, 1, S]
        # Scaling q instead of the [B, N, S, S] scores is the same maths on a smaller tensor.
        q = q * tf.cast(1.0 / math.sqrt(d), compute_dtype)
        scores = tf.matmul(q, k, transpose_b=True)  # [B, N, S, S]
        probs = tf.nn.softmax(tf.cast(scores, tf.float32) + mask_adder, axis=-1)
        probs = _dropout(tf.cast(probs, compute_dtype),
                         self.config.attention_probs_dropout_prob, training)
        context = tf.matmul(probs, v)  # [B, N, S, D]
        context = tf.transpose(context, [0, 2, 1, 3])  # [B, S, N, D]
        return tf.reshape(context, [batch, 1 if first_only else seq, h])

    def __call__(self, x, mask_adder, training=False, compute_dtype=tf.float32,
                 first_only=False):
        """x: [B, S, H] compute_dtype, mask_adder: [B, 1, 1 or S, S] -> [B, S, H], or the
        first position's output [B, 1, H] with first_only (the others are not computed:
        every position after attention is computed on its own)."""
        rate = self.config.hidden_dropout_prob
        context = self._attention(x, mask_adder, training, compute_dtype, first_only)
        if first_only:
            x = x[:, :1]
        attention = _dropout(self.attention_output(context, compute_dtype, training), rate, training)
        attention = self.attention_layer_norm(attention + x, compute_dtype)
        hidden = self.intermediate(attention, compute_dtype, training)
        hidden = self.output_dense(hidden, compute_dtype, training)
        hidden = _dropout(hidden, rate, training)
        return self.output_layer_norm(hidden + attention, compute_dtype)


EncoderOutput = collections.namedtuple(
    "EncoderOutput", ["sequence_output", "pooled_output", "embedding_output"])
EncoderOutput.__doc__ = """Encoder outputs, all in compute_dtype.

sequence_output: [B, S, H] final hidden states (None when called with pooled_only).
pooled_output: [B, H] = sequence_output[:, 0] ([CLS]); ELECTRA has no pooler layer.
embedding_output: [B, S, E] embedding block output, before embeddings_project.
"""


def attention_mask_adder(input_mask, causal=None):
    """Additive attention mask in float32.

    Args:
      input_mask: [B, S], 1 for real tokens and 0 for padding (key-side mask only).
      causal: None, "ltr" (position i sees keys j <= i) or "rtl" (keys j >= i), as
        Electric's two towers; the causal mask multiplies the padding mask.
    Returns:
      [B, 1, 1, S] (no causal) or [B, 1, S, S] float32: 0 where visible, -10000 otherwise.
    """
    mask = tf.cast(input_mask, tf.float32)[:, tf.newaxis, tf.newaxis, :]  # [B, 1, 1, S]
    if causal is not None:
        if causal not in ("ltr", "rtl"):
            raise ValueError(f"causal must be None, 'ltr' or 'rtl', got {causal!r}.")
        seq = tf.shape(input_mask)[1]
        ones = tf.ones([seq, seq], tf.float32)
        triangle = (tf.linalg.band_part(ones, -1, 0) if causal == "ltr"
                    else tf.linalg.band_part(ones, 0, -1))  # [S(query), S(key)]
        mask = mask * triangle  # [B, 1, S, S]
    return (1.0 - mask) * _MASK_ADDER


class BertModel(tf.Module):
    """The transformer encoder; variables under `<scope>/embeddings_project`, `<scope>/encoder`.

    `embeddings=None` creates `<scope>/embeddings`; passing an Embeddings object shares it
    (the generator uses the discriminator's).
    """

    def __init__(self, config, scope="electra", embeddings=None):
        super().__init__(name=_module_name(scope))
        self.scope = scope
        self.config = config
        if embeddings is None:
            embeddings = Embeddings(config, f"{scope}/embeddings")
        elif embeddings.config.embedding_size != config.embedding_size:
            raise ValueError(
                f"Shared embeddings have width {embeddings.config.embedding_size} but the "
                f"{scope} config has embedding_size {config.embedding_size}; make them equal.")
        self.embeddings = embeddings
        self.embeddings_project = None
        if config.embedding_size != config.hidden_size:
            # The original created this dense layer without an initializer: Glorot uniform.
            self.embeddings_project = Dense(f"{scope}/embeddings_project",
                                            config.embedding_size, config.hidden_size,
                                            initializer="glorot")
        self.layers = [TransformerLayer(config, f"{scope}/encoder/layer_{i}")
                       for i in range(config.num_hidden_layers)]

    def __call__(self, input_ids, input_mask, segment_ids, training=False, causal=None,
                 compute_dtype=tf.float32, pooled_only=False):
        """Runs the encoder.

        Args:
          input_ids, input_mask, segment_ids: [B, S] int tensors.
          training: Python bool; dropout only when True.
          causal: None, "ltr" or "rtl" (Electric's towers).
          compute_dtype: tf.float32, tf.bfloat16 or tf.float16.
          pooled_only: Python bool; True computes the last layer at the first position
            only (its other positions feed nothing the [CLS] output depends on), for
            heads that read pooled_output alone: about 1/13 of the encoder's FLOPs less
            at ELECTRA-Small's sizes. sequence_output is then None.
        Returns:
          EncoderOutput.
        """
        embedding_output = self.embeddings(input_ids, segment_ids, training, compute_dtype)
        x = embedding_output
        if self.embeddings_project is not None:
            x = self.embeddings_project(x, compute_dtype, training)  # [B, S, H]
        mask_adder = attention_mask_adder(input_mask, causal)
        for index, layer in enumerate(self.layers):
            last = index == len(self.layers) - 1
            x = layer(x, mask_adder, training, compute_dtype, first_only=pooled_only and last)
        return EncoderOutput(sequence_output=None if pooled_only else x, pooled_output=x[:, 0],
                             embedding_output=embedding_output)


def variables_by_name(*modules):
    """{checkpoint name (no ':0'): variable} for all variables of the modules, sorted by name.

    A variable reachable from several modules (shared embeddings) appears once; two
    different variables with the same name are an error.
    """
    named = {}
    for module in modules:
        for var in module.variables:
            name = var.name[:-2] if var.name.endswith(":0") else var.name
            if name in named and named[name] is not var:
                raise ValueError(f"Two different variables are named {name!r}; give each "
                                 f"module a distinct scope.")
            named[name] = var
    return dict(sorted(named.items()))
