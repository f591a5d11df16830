"""Ops over features: fully connected layers, normalisation over an axis, softmax and attention."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from nasdsl.errors import ShapeError
from nasdsl.ir.types import TensorType
from nasdsl.ops.core import (
    Attr,
    OpDef,
    Weight,
    axis_of,
    boolean,
    describe_type,
    identity_channels,
    integer,
    known,
    need_flat,
    one_of,
    positive,
    real,
    register,
)
from nasdsl.ops.tensor import AXIS_DOC, _axis


def _linear_infer(types: Sequence[TensorType], a: Mapping[str, object]) -> TensorType:
    t = types[0]
    if a["dim"] == "last":  # over the last axis of any tensor (tokens, channels-last maps, ConvNeXt's MLP)
        return TensorType((*t.shape[:-1], a["out"]), t.axes, t.dtype)
    need_flat(t, "linear")
    return TensorType((a["out"],), "C", t.dtype)


def _linear_weights(types: Sequence[TensorType], a: Mapping[str, object]) -> tuple[Weight, ...]:
    weight = Weight("weight", (a["out"], types[0].shape[-1]), init="torch_default")
    return (weight, Weight("bias", (a["out"],), init="torch_default")) if a["bias"] else (weight,)


def _positions(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _linear_macs(types: Sequence[TensorType], a: Mapping[str, object], out: TensorType) -> int:
    shape = types[0].shape
    return _positions(shape[:-1]) * shape[-1] * a["out"]


def norm_axis(t: TensorType, dim: str) -> int:
    """The axis a layer_norm normalises over: the channels (of a map or tokens), else the last axis."""
    if dim == "channels" and t.channel_axis is not None:
        return t.channel_axis
    return t.rank - 1


def _layer_norm_infer(types: Sequence[TensorType], a: Mapping[str, object]) -> TensorType:
    t = types[0]
    if a["dim"] == "channels" and t.channel_axis is None:
        raise ShapeError(f"expected a tensor with a channel axis for dim: channels, got {describe_type(t)}")
    return t


def _layer_norm_weights(types: Sequence[TensorType], a: Mapping[str, object]) -> tuple[Weight, ...]:
    t = types[0]
    c = (t.shape[norm_axis(t, a["dim"])],)
    return (Weight("weight", c, init="ones"), Weight("bias", c, init="zeros"))


def _softmax_infer(types: Sequence[TensorType], a: Mapping[str, object]) -> TensorType:
    axis_of(types[0], a["dim"], "softmax")
    return types[0]


def _attention_infer(types: Sequence[TensorType], a: Mapping[str, object]) -> TensorType:
    t = types[0]
    if t.rank != 2:
        raise ShapeError(f"expected tokens (L, C) as the input of attention, got {describe_type(t)}")
    e = t.shape[1]
    if known(e) and e % a["heads"]:
        raise ShapeError(f"expected heads that divide the embedding size {e}, got {a['heads']}")
    return t


def _attention_weights(types: Sequence[TensorType], a: Mapping[str, object]) -> tuple[Weight, ...]:
    e = types[0].shape[-1]
    weights = [Weight("in_proj_weight", (3 * e, e), init="xavier_uniform", parts=3)]  # query, key, value
    if a["bias"]:
        weights.append(Weight("in_proj_bias", (3 * e,), init="zeros", parts=3))
    weights.append(Weight("out_proj.weight", (e, e), init="torch_default", layer="linear"))
    if a["bias"]:
        weights.append(Weight("out_proj.bias", (e,), init="zeros", layer="linear"))
    return tuple(weights)


def _attention_macs(types: Sequence[TensorType], a: Mapping[str, object], out: TensorType) -> int:
    length, e = types[0].shape
    projections = length * e * 3 * e + length * e * e
    products = 2 * length * length * e  # q k^T and the weighted sum of v
    return projections + products


register(
    OpDef(
        "linear",
        "fully connected layer",
        (
            Attr("out", integer(), role="count", doc="output features", symbolic=True),
            Attr("bias", boolean, default=True, role="flag"),
            Attr(
                "dim",
                one_of("features", "last"),
                default="features",
                literals=("features", "last"),
                doc="features: the input must be flat; last: over the last axis of any tensor",
            ),
        ),
        _linear_infer,
        _linear_weights,
        _linear_macs,
        lead="out",
        layer=True,
        init_params=("weight", "bias"),
        fan_params=("weight",),
        fresh=True,
    ),
    OpDef(
        "layer_norm",
        "LayerNorm over the channels of a map or of tokens (dim: channels), or over the last axis (dim: last)",
        (
            Attr("eps", positive, default=1e-5, role="rate"),
            Attr("dim", one_of("channels", "last"), default="channels", role="flag", literals=("channels", "last")),
        ),
        _layer_norm_infer,
        _layer_norm_weights,
        init_params=("weight", "bias"),
        channel_map=identity_channels,
    ),
    OpDef(
        "softmax",
        "softmax over an axis (the channels by default)",
        (Attr("dim", _axis, default="channels", doc=AXIS_DOC, literals=("channels", "last")),),
        _softmax_infer,
        channel_map=identity_channels,
    ),
    OpDef(
        "attention",
        "multi-head self-attention over tokens (L, C), as torch.nn.MultiheadAttention with batch_first "
        "(its parameters: in_proj_weight, in_proj_bias, out_proj)",
        (
            Attr("heads", integer(), role="count", doc="attention heads; they divide the embedding size"),
            Attr("dropout", real(0.0, 1.0, hi_open=True), default=0.0, role="rate"),
            Attr("bias", boolean, default=True, role="flag"),
        ),
        _attention_infer,
        _attention_weights,
        _attention_macs,
        layer=True,
        init_params=("in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"),
        fan_params=("in_proj_weight", "out_proj.weight"),
        fresh=True,
    ),
)
