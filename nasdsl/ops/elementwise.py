"""Ops that keep their input's type: activations, dropout, stochastic depth, identity, a learned scale."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from nasdsl.ir.types import TensorType
from nasdsl.ops.core import (
    Attr,
    OpDef,
    Weight,
    identity_channels,
    one_of,
    real,
    register,
    same_type,
)

_DOC = "applied element-wise; shape unchanged"


def _activation(name: str, *, in_place: bool = False, attrs: tuple[Attr, ...] = ()) -> OpDef:
    return OpDef(
        name,
        _DOC,
        attrs,
        same_type,
        in_place=in_place,
        elementwise=True,
        channel_map=identity_channels,
    )


def _layer_scale_weights(types: Sequence[TensorType], a: Mapping[str, object]) -> tuple[Weight, ...]:
    t = types[0]
    c = t.channel_axis if t.channel_axis is not None else t.rank - 1
    # a channels-first map scales (C, 1, 1) as ConvNeXt's layer scale; anything else its last axis
    shape = (t.shape[0], *(1,) * (t.rank - 1)) if t.rank >= 3 and c == 0 else (t.shape[-1],)
    return (Weight("", shape, init=f"constant:{a['init']!r}"),)


register(
    *(
        _activation(n, in_place=n in ("relu", "relu6", "silu", "hardswish", "hardsigmoid"))
        for n in ("relu", "relu6", "sigmoid", "tanh", "silu", "hardswish", "hardsigmoid")
    ),  # fmt: skip
    _activation(
        "gelu",
        attrs=(Attr("approximate", one_of("none", "tanh"), default="none", role="flag", literals=("none", "tanh")),),
    ),
    OpDef(
        "dropout",
        "dropout (training only)",
        (Attr("p", real(0.0, 1.0, hi_open=True), default=0.5, role="rate"),),
        same_type,
        inference_identity=True,
        aliases=True,
        channel_map=identity_channels,
    ),
    OpDef(
        "stochastic_depth",
        "drop whole samples (`row`) or the batch with probability p in training; an identity at inference",
        (
            Attr("p", real(0.0, 1.0, hi_open=True), default=0.0, role="rate"),
            Attr("mode", one_of("row", "batch"), default="row", role="flag", literals=("row", "batch")),
        ),
        same_type,
        inference_identity=True,
        aliases=True,
        channel_map=identity_channels,
    ),
    OpDef(
        "layer_scale",
        "a learned per-channel scale, started at `init` (ConvNeXt); a parameter of its module",
        (Attr("init", real(-1e6, 1e6), default=1e-6, role="rate"),),
        same_type,
        _layer_scale_weights,
        channel_map=identity_channels,
    ),
    OpDef("identity", "pass the input through", (), same_type, aliases=True, channel_map=identity_channels),
)
