"""Ops that join several inputs (written as a merge of branches, ``{concat: [...]}``): concat,
add, mul, mean and matmul."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from nasdsl.errors import ShapeError
from nasdsl.ir.types import TensorType
from nasdsl.ops.core import (
    Attr,
    OpDef,
    axis_of,
    boolean,
    describe_type,
    fmt,
    identity_channels,
    known,
    register,
)
from nasdsl.ops.tensor import AXIS_DOC, INTERPOLATE_MODE, _axis, interpolate_attrs, interpolate_infer

MANY = 1 << 16


def _concat_infer(types: Sequence[TensorType], a: Mapping[str, object]) -> TensorType:
    first = types[0]
    axis = axis_of(first, a["axis"], "concat")
    for t in types[1:]:
        differ = t.rank != first.rank or any(
            i != axis and known(d, e) and d != e for i, (d, e) in enumerate(zip(first.shape, t.shape, strict=False))
        )
        if differ:
            what = "channels" if axis == first.channel_axis else f"axis {axis}"
            got = ", ".join(fmt(x.shape) for x in types)
            raise ShapeError(f"expected concat inputs that differ only in {what}, got {got}")
    total = types[0].shape[axis]
    for t in types[1:]:
        total = total + t.shape[axis]
    return TensorType((*first.shape[:axis], total, *first.shape[axis + 1 :]), first.axes, first.dtype)


def _concat_channels(types: Sequence[TensorType], a: Mapping[str, object], out: TensorType) -> tuple | None:
    first = types[0]
    if first.channel_axis is None:
        return None
    if axis_of(first, a["axis"], "concat") != first.channel_axis:
        return tuple((0, c) for c in range(out.shape[out.channel_axis]))
    return tuple((i, c) for i, t in enumerate(types) for c in range(t.shape[t.channel_axis]))


def _same_shapes(op: str):
    def infer(types: Sequence[TensorType], a: Mapping[str, object]) -> TensorType:
        first = types[0]
        for t in types[1:]:
            if t.rank != first.rank or (known(*t.shape, *first.shape) and t.shape != first.shape):
                got = ", ".join(fmt(x.shape) for x in types)
                raise ShapeError(f"expected {op} inputs of one shape, got {got}")
        return first

    return infer


def _broadcast_infer(op: str):
    """NumPy-style broadcasting of inputs of one rank: (C, 1, 1) times (C, H, W) is (C, H, W)."""

    def infer(types: Sequence[TensorType], a: Mapping[str, object]) -> TensorType:
        first = types[0]
        if any(t.rank != first.rank for t in types):
            raise ShapeError(f"expected {op} inputs of one rank, got {', '.join(fmt(t.shape) for t in types)}")
        out = []
        for dims in zip(*(t.shape for t in types), strict=True):
            sizes = [d for d in dims if not (known(d) and d == 1)]
            distinct = {d for d in sizes}
            if len(distinct) > 1 and all(known(d) for d in distinct):
                got = ", ".join(fmt(t.shape) for t in types)
                raise ShapeError(f"expected {op} inputs that broadcast (each size equal or 1), got {got}")
            out.append(sizes[0] if sizes else 1)
        widest = max(types, key=lambda t: sum(1 for d in t.shape if not (known(d) and d == 1)))
        return TensorType(tuple(out), widest.axes, first.dtype)

    return infer


def _first_channels(types: Sequence[TensorType], a: Mapping[str, object], out: TensorType) -> tuple | None:
    """The sum of inputs mixes their channels: each output channel reads channel c of every input."""
    c = out.channel_axis
    return None if c is None else tuple((0, i) for i in range(out.shape[c]))


def _matmul_infer(types: Sequence[TensorType], a: Mapping[str, object]) -> TensorType:
    x, y = types
    if x.rank < 2 or y.rank < 2:
        raise ShapeError(f"expected matmul inputs of two or more axes, got {describe_type(x)} and {describe_type(y)}")
    ys = y.shape[:-2] + (y.shape[-1], y.shape[-2]) if a["transpose_b"] else y.shape
    if x.shape[:-2] != ys[:-2] and known(*x.shape[:-2], *ys[:-2]):
        raise ShapeError(f"expected matmul inputs with the same leading axes, got {fmt(x.shape)} and {fmt(ys)}")
    if known(x.shape[-1], ys[-2]) and x.shape[-1] != ys[-2]:
        raise ShapeError(f"expected matmul inputs (..., n, k) and (..., k, m), got {fmt(x.shape)} and {fmt(ys)}")
    return TensorType((*x.shape[:-1], ys[-1]), x.axes, x.dtype)


def _matmul_macs(types: Sequence[TensorType], a: Mapping[str, object], out: TensorType) -> int:
    k = types[0].shape[-1]
    n = 1
    for d in out.shape:
        n *= d
    return n * k


register(
    OpDef(
        "concat",
        "join inputs along an axis (the channels by default)",
        (
            Attr(
                "axis",
                _axis,
                default="channels",
                doc=AXIS_DOC,
                literals=("channels", "last"),
                fixed="the generated class's forward joins the branches along it",
            ),
        ),
        _concat_infer,
        min_inputs=2,
        max_inputs=MANY,
        lead="sum",
        merge=True,
        channel_map=_concat_channels,
    ),
    OpDef(
        "add",
        "element-wise sum of inputs of one shape",
        (),
        _same_shapes("add"),
        min_inputs=2,
        max_inputs=MANY,
        merge=True,
        accumulates=True,
        channel_map=_first_channels,
    ),
    OpDef(
        "mul",
        "element-wise product of inputs that broadcast: (C, 1, 1) scales (C, H, W) (squeeze-and-excitation)",
        (),
        _broadcast_infer("mul"),
        min_inputs=2,
        max_inputs=MANY,
        merge=True,
        channel_map=_first_channels,
    ),
    OpDef(
        "mean",
        "element-wise mean of inputs of one shape (an ensemble's average)",
        (),
        _same_shapes("mean"),
        min_inputs=2,
        max_inputs=MANY,
        merge=True,
        channel_map=_first_channels,
    ),
    OpDef(
        "matmul",
        "the matrix product of two inputs over their last two axes, (..., n, k) x (..., k, m) (with transpose_b: "
        "the second given as (..., m, k))",
        (Attr("transpose_b", boolean, default=False, role="flag", fixed="the generated class's forward writes it"),),
        _matmul_infer,
        macs=_matmul_macs,
        min_inputs=2,
        max_inputs=2,
        lead="other",
        merge=True,
    ),
    OpDef(
        "interpolate_like",
        "resize the first branch's map to the spatial size of the second's (a segmentation head back to the "
        "input's size)",
        (
            INTERPOLATE_MODE[0],
            dataclasses.replace(INTERPOLATE_MODE[1], fixed="the generated class's forward writes it"),
        ),
        interpolate_infer,
        check_attrs=interpolate_attrs,
        min_inputs=2,
        max_inputs=2,
        spatial="fixed",
        merge=True,
        channel_map=identity_channels,
    ),
)
