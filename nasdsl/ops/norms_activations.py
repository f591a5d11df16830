"""Activations with a parameter and the per-sample norms: ``leaky_relu``, ``elu``, ``prelu``,
``group_norm``, ``instance_norm``, each as PyTorch's module computes it and names its tensors.

Defaults are the modules' own (``nn.LeakyReLU()``'s slope 0.01, ``nn.ELU()``'s alpha 1,
``nn.GroupNorm``'s affine weight and bias, ``nn.InstanceNorm2d``'s neither weights nor running
statistics), with one exception: ``prelu`` holds one slope per channel (``nn.PReLU(C)``) unless
``per_channel: false`` asks for ``nn.PReLU()``'s one shared slope. None counts multiply-adds
(element-wise ops and norms count zero, as everywhere in the registry).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from nasdsl.errors import ShapeError
from nasdsl.ir.types import TensorType
from nasdsl.ops.core import (
    Attr,
    OpDef,
    Weight,
    boolean,
    describe_type,
    identity_channels,
    integer,
    known,
    need,
    positive,
    real,
    register,
    same_type,
)

#: the bound of a slope or an ELU's alpha (any finite number PyTorch takes, within reason)
_BOUND = 1e6


def _channels_first(t: TensorType, op: str, what: str, ranks: range) -> None:
    """``op`` reads the channels at PyTorch's dim 1: a channels-first input of one of ``ranks``."""
    need(t, op, what, t.rank in ranks and (t.rank == 1 or t.channels_first or "?" in t.axes))


def _prelu_infer(types: Sequence[TensorType], a: Mapping[str, object]) -> TensorType:
    t = types[0]
    if a["per_channel"]:  # nn.PReLU(C) scales dim 1 of (N, C, ...): the channels must be there
        _channels_first(t, "prelu", "flat features or a channels-first map (C, ...)", range(1, 5))
    return t


def _prelu_weights(types: Sequence[TensorType], a: Mapping[str, object]) -> tuple[Weight, ...]:
    size = types[0].shape[0] if a["per_channel"] else 1
    return (Weight("weight", (size,), init=f"constant:{a['init']!r}"),)


def _group_norm_infer(types: Sequence[TensorType], a: Mapping[str, object]) -> TensorType:
    t = types[0]
    _channels_first(t, "group_norm", "flat features or a channels-first map (C, ...)", range(1, 5))
    c = t.shape[0]
    if known(c) and c % a["groups"]:
        raise ShapeError(f"expected groups that divide the {c} channels of {describe_type(t)}, got {a['groups']}")
    return t


def _affine(c: object) -> tuple[Weight, ...]:
    return (Weight("weight", (c,), init="ones"), Weight("bias", (c,), init="zeros"))


def _group_norm_weights(types: Sequence[TensorType], a: Mapping[str, object]) -> tuple[Weight, ...]:
    return _affine(types[0].shape[0]) if a["affine"] else ()


def _instance_norm_infer(types: Sequence[TensorType], a: Mapping[str, object]) -> TensorType:
    _channels_first(types[0], "instance_norm", "a feature map (C, L), (C, H, W) or (C, T, H, W)", range(2, 5))
    return types[0]


def _instance_norm_weights(types: Sequence[TensorType], a: Mapping[str, object]) -> tuple[Weight, ...]:
    c = types[0].shape[0]
    weights = _affine(c) if a["affine"] else ()
    if a["track_running_stats"]:
        weights += (
            Weight("running_mean", (c,), "buffer", "zeros"),
            Weight("running_var", (c,), "buffer", "ones"),
            Weight("num_batches_tracked", (), "buffer", "zeros", "int64"),
        )
    return weights


_EPS = Attr("eps", positive, default=1e-5, role="rate")

register(
    OpDef(
        "leaky_relu",
        "LeakyReLU: x where x >= 0, negative_slope * x below",
        (Attr("negative_slope", real(-_BOUND, _BOUND), default=0.01, role="rate"),),
        same_type,
        elementwise=True,
        channel_map=identity_channels,
    ),
    OpDef(
        "elu",
        "ELU: x where x > 0, alpha * (exp(x) - 1) below",
        (Attr("alpha", real(-_BOUND, _BOUND), default=1.0, role="rate"),),
        same_type,
        elementwise=True,
        channel_map=identity_channels,
    ),
    OpDef(
        "prelu",
        "PReLU: x where x >= 0, a learned slope times x below; one slope per channel (PyTorch's dim 1), "
        "or one for all with per_channel false",
        (
            Attr(
                "per_channel",
                boolean,
                default=True,
                role="flag",
                fixed="it decides the size of the module's weight",
            ),
            Attr("init", real(-_BOUND, _BOUND), default=0.25, role="rate"),
        ),
        _prelu_infer,
        _prelu_weights,
        init_params=("weight",),
        channel_map=identity_channels,
    ),
    OpDef(
        "group_norm",
        "GroupNorm: each sample's channels in `groups` groups, each normalised over its channels and "
        "positions, then a per-channel weight and bias (affine)",
        (
            Attr("groups", integer(), role="count", doc="groups of channels; they divide the channels"),
            _EPS,
            Attr("affine", boolean, default=True, role="flag", fixed="it decides the module's parameters"),
        ),
        _group_norm_infer,
        _group_norm_weights,
        init_params=("weight", "bias"),
        channel_map=identity_channels,
    ),
    OpDef(
        "instance_norm",
        "InstanceNorm: each channel of each sample normalised over its positions; a weight and bias with "
        "affine; running statistics (used at inference) with track_running_stats",
        (
            _EPS,
            Attr("momentum", real(0.0, 1.0), default=0.1, role="rate"),
            Attr("affine", boolean, default=False, role="flag", fixed="it decides the module's parameters"),
            Attr(
                "track_running_stats",
                boolean,
                default=False,
                role="flag",
                fixed="it decides the module's buffers",
            ),
        ),
        _instance_norm_infer,
        _instance_norm_weights,
        init_params=("weight", "bias"),
        channel_map=identity_channels,
    ),
)
