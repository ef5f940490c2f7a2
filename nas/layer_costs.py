"""Parameter and FLOP formulas for the layer types a :class:`~runwatch.nas.architecture.Genome` models.

Layer types and attribute strings follow ``runwatch.v1.Layer`` as written by
``runwatch.client.torch_watch.describe_architecture`` (``"Conv2d"``,
``{"kernel_size": "3x3", "bias": "true"}``). Everything here is plain
arithmetic: no torch.

FLOPs are ``2 x multiply-accumulates`` of the weight layers for one example.
That count needs sizes the architecture record does not carry, so it is taken
per position: a convolution is counted for one output position (the record has
channels and kernel but no spatial size), a recurrent layer for one time step
and attention for one token's projections (the score matrix needs the sequence
length). Biases, normalizations and activations are not counted. Within one
family that makes FLOPs a consistent relative cost; across families compare
parameters instead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

__all__ = [
    "ACTIVATION_NAMES",
    "DEFAULT_TYPE",
    "NORMALIZATION_NAMES",
    "activation_key",
    "activation_name",
    "norm_params",
    "normalization_key",
    "weight_kind",
    "weight_macs",
    "weight_params",
]

# Weight-layer families: the layers a genome's blocks are made of.
_KIND_BY_TYPE = {
    "Linear": "linear",
    "LazyLinear": "linear",
    "Conv1d": "conv",
    "Conv2d": "conv",
    "Conv3d": "conv",
    "ConvTranspose1d": "conv",
    "ConvTranspose2d": "conv",
    "ConvTranspose3d": "conv",
    "RNN": "rnn",
    "GRU": "rnn",
    "LSTM": "rnn",
    "MultiheadAttention": "attention",
}
DEFAULT_TYPE = {"linear": "Linear", "conv": "Conv2d", "rnn": "LSTM", "attention": "MultiheadAttention"}
_RNN_GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}

# Canonical lower-case activation name -> torch class name.
ACTIVATION_NAMES = {
    "relu": "ReLU",
    "gelu": "GELU",
    "tanh": "Tanh",
    "silu": "SiLU",
    "sigmoid": "Sigmoid",
    "leakyrelu": "LeakyReLU",
    "elu": "ELU",
    "selu": "SELU",
    "celu": "CELU",
    "mish": "Mish",
    "softplus": "Softplus",
    "softsign": "Softsign",
    "hardtanh": "Hardtanh",
    "relu6": "ReLU6",
    "hardswish": "Hardswish",
    "hardsigmoid": "Hardsigmoid",
    "logsigmoid": "LogSigmoid",
    "tanhshrink": "Tanhshrink",
    "prelu": "PReLU",
}
# Canonical normalization name -> torch class name (for descriptions; BatchNorm's dimension comes from the block).
NORMALIZATION_NAMES = {
    "layernorm": "LayerNorm",
    "batchnorm": "BatchNorm",
    "rmsnorm": "RMSNorm",
    "groupnorm": "GroupNorm",
}
_NORMALIZATION_BY_TYPE = {
    "LayerNorm": "layernorm",
    "BatchNorm1d": "batchnorm",
    "BatchNorm2d": "batchnorm",
    "BatchNorm3d": "batchnorm",
    "SyncBatchNorm": "batchnorm",
    "RMSNorm": "rmsnorm",
    "GroupNorm": "groupnorm",
}


def weight_kind(layer_type: str) -> str | None:
    """The block kind of a weight-layer type, or ``None`` for any other layer.

    Examples
    --------
    >>> weight_kind("Conv2d"), weight_kind("LSTM"), weight_kind("Dropout")
    ('conv', 'rnn', None)
    """
    return _KIND_BY_TYPE.get(layer_type)


def activation_key(layer_type_or_name: str) -> str:
    """Canonical lower-case activation name of a torch class name ("" stays "").

    Examples
    --------
    >>> activation_key("ReLU"), activation_key("LeakyReLU"), activation_key("")
    ('relu', 'leakyrelu', '')
    """
    return layer_type_or_name.lower()


def activation_name(key: str) -> str:
    """Torch class name of a canonical activation name ("gelu" -> "GELU"); unknown names pass through.

    Examples
    --------
    >>> activation_name("gelu"), activation_name("silu")
    ('GELU', 'SiLU')
    """
    return ACTIVATION_NAMES.get(key, key)


def normalization_key(layer_type: str) -> str | None:
    """Canonical normalization name of a layer type, or ``None`` when it is not a normalization.

    Examples
    --------
    >>> normalization_key("BatchNorm2d"), normalization_key("Linear")
    ('batchnorm', None)
    """
    return _NORMALIZATION_BY_TYPE.get(layer_type)


def _flag(attributes: Mapping[str, str], name: str, default: bool) -> bool:
    value = attributes.get(name)
    return default if value is None else value.lower() in ("true", "1")


def _int(attributes: Mapping[str, str], name: str, default: int) -> int:
    try:
        return int(attributes.get(name, default))
    except ValueError:
        return default


def _kernel_volume(attributes: Mapping[str, str]) -> int:
    """Product of the kernel dimensions ("3x3" -> 9); 1 when unknown."""
    raw = attributes.get("kernel_size", "1")
    try:
        return math.prod(int(k) for k in raw.split("x"))
    except ValueError:
        return 1


def _rnn_shape(layer_type: str, attributes: Mapping[str, str], out_size: int) -> tuple[int, int, int, int]:
    """(gates, hidden size per direction, directions, stacked layers)."""
    directions = 2 if _flag(attributes, "bidirectional", False) else 1
    return _RNN_GATES.get(layer_type, 1), max(out_size // directions, 1), directions, _int(attributes, "num_layers", 1)


def weight_macs(layer_type: str, attributes: Mapping[str, str], in_size: int, out_size: int) -> int:
    """Multiply-accumulates of one weight layer for one example (per position / time step / token).

    Examples
    --------
    >>> weight_macs("Linear", {}, 64, 128)
    8192
    >>> weight_macs("Conv2d", {"kernel_size": "3x3"}, 16, 32)  # per output position
    4608
    """
    kind = weight_kind(layer_type)
    if kind == "linear":
        return in_size * out_size
    if kind == "conv":
        return in_size * out_size * _kernel_volume(attributes) // max(_int(attributes, "groups", 1), 1)
    if kind == "rnn":
        gates, hidden, directions, layers = _rnn_shape(layer_type, attributes, out_size)
        total = 0
        for layer in range(layers):
            inputs = in_size if layer == 0 else hidden * directions
            total += directions * gates * hidden * (inputs + hidden)
        return total
    if kind == "attention":
        return 4 * out_size * out_size  # q, k, v and output projections
    return 0


def weight_params(layer_type: str, attributes: Mapping[str, str], in_size: int, out_size: int) -> int:
    """Parameters of one weight layer (weights plus biases unless ``bias`` is "false").

    Examples
    --------
    >>> weight_params("Linear", {}, 64, 128)
    8320
    >>> weight_params("LSTM", {"num_layers": "1"}, 8, 16)  # 4 gates x (16 x (8 + 16) + 2 x 16)
    1664
    """
    kind = weight_kind(layer_type)
    bias = _flag(attributes, "bias", True)
    if kind == "linear":
        return in_size * out_size + (out_size if bias else 0)
    if kind == "conv":
        return weight_macs(layer_type, attributes, in_size, out_size) + (out_size if bias else 0)
    if kind == "rnn":
        gates, hidden, directions, layers = _rnn_shape(layer_type, attributes, out_size)
        biases = layers * directions * 2 * gates * hidden if bias else 0
        return weight_macs(layer_type, attributes, in_size, out_size) + biases
    if kind == "attention":
        return 4 * out_size * out_size + (4 * out_size if bias else 0)
    return 0


def norm_params(normalization: str, width: int) -> int:
    """Parameters of a normalization layer over ``width`` features (affine scale and shift).

    Examples
    --------
    >>> norm_params("layernorm", 128), norm_params("rmsnorm", 128), norm_params("", 128)
    (256, 128, 0)
    """
    if not normalization:
        return 0
    return width if normalization == "rmsnorm" else 2 * width
