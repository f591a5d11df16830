"""Transposed convolutions (PyTorch's ``nn.ConvTranspose1d``/``2d``/``3d``): ``conv_transpose1d``,
``conv_transpose2d``, ``conv_transpose3d``.

Each input position scatters ``kernel`` outputs, ``stride`` apart: along each spatial axis the
output has ``(size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1``
positions. ``output_padding`` adds positions at the end of each axis (it picks which of the
sizes that a strided convolution maps to the same input size the result has), and must be below
the stride or the dilation, as PyTorch asks. The weight is laid out as PyTorch lays it out,
input channels first: ``(C_in, out / groups, *kernel)``.

Multiply-adds count the work of the scatter: every input position times ``C_in * out / groups``
times the kernel's size, as ``torch.utils.flop_counter`` and fvcore count them (their FLOPs are
twice this). ptflops counts output positions instead, which is about ``stride ** rank`` times more.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from nasdsl.errors import ShapeError, SpecError
from nasdsl.ir.types import TensorType
from nasdsl.ops.core import (
    Attr,
    OpDef,
    Weight,
    boolean,
    fmt,
    integer,
    known,
    need_map,
    register,
    tuple_of,
    window_text,
)

#: the op name of each rank
CONV_TRANSPOSE_NAMES = {1: "conv_transpose1d", 2: "conv_transpose2d", 3: "conv_transpose3d"}


def _check_attrs(a: Mapping[str, object]) -> None:
    extra, stride, dilation = a["output_padding"], a["stride"], a["dilation"]
    if any(o >= s and o >= d for o, s, d in zip(extra, stride, dilation, strict=True)):
        raise SpecError(
            f"expected output_padding below the stride {window_text(stride)} or the dilation "
            f"{window_text(dilation)} on each axis, got {window_text(extra)}",
            path="output_padding",
        )


def _padding(n: int):
    sides = tuple_of(n, 0)

    def check(v: object) -> tuple[int, ...]:
        if isinstance(v, str):
            raise SpecError(f"expected an integer >= 0 or a list (a transposed convolution pads no 'same'), got '{v}'")
        return sides(v)

    return check


def out_sizes(sizes: Sequence[int], a: Mapping[str, object]) -> tuple[int, ...]:
    """The output's spatial sizes: PyTorch's rule for ``nn.ConvTranspose{n}d``, axis by axis."""
    return tuple(
        (n - 1) * s - 2 * p + d * (k - 1) + o + 1
        for n, k, s, p, d, o in zip(
            sizes, a["kernel"], a["stride"], a["padding"], a["dilation"], a["output_padding"], strict=True
        )
    )


def _infer(n: int):
    name = CONV_TRANSPOSE_NAMES[n]

    def infer(types: Sequence[TensorType], a: Mapping[str, object]) -> TensorType:
        t = types[0]
        need_map(t, name, n)
        c, g = t.shape[0], a["groups"]
        if known(c) and c % g or known(a["out"]) and a["out"] % g:
            raise ShapeError(
                f"expected groups that divide the input channels {c} and the output channels {a['out']}, got {g}"
            )
        sizes = t.shape[1:]
        if not known(*sizes):
            raise ShapeError("a window over a symbolic size")  # the shape pass keeps the concrete sizes
        out = out_sizes(sizes, a)
        if any(o < 1 for o in out):
            raise ShapeError(
                f"expected padding {window_text(a['padding'])} small enough to leave an output of the input "
                f"{fmt(sizes)}, got an output of {fmt(out)}"
            )
        return TensorType((a["out"], *out), t.axes, t.dtype)

    return infer


def _weights(types: Sequence[TensorType], a: Mapping[str, object]) -> tuple[Weight, ...]:
    c = types[0].shape[0]
    # torch_default reads the fan-in from dimension 1, as torch's ConvTranspose does: out / groups x kernel
    weight = Weight("weight", (c, a["out"] // a["groups"], *a["kernel"]), init="torch_default")
    return (weight, Weight("bias", (a["out"],), init="torch_default")) if a["bias"] else (weight,)


def _macs(types: Sequence[TensorType], a: Mapping[str, object], out: TensorType) -> int:
    c, *sizes = types[0].shape
    return math.prod(sizes) * c * (a["out"] // a["groups"]) * math.prod(a["kernel"])


def _conv_transpose(n: int) -> OpDef:
    return OpDef(
        CONV_TRANSPOSE_NAMES[n],
        f"{n}-D transposed convolution",
        (
            Attr("out", integer(), role="count", doc="output channels", symbolic=True),
            Attr("kernel", tuple_of(n)),
            Attr("stride", tuple_of(n), default=(1,) * n),
            Attr("padding", _padding(n), default=(0,) * n, literals=("same", "valid")),
            Attr("output_padding", tuple_of(n, 0), default=(0,) * n, doc="positions added at the end"),
            Attr("dilation", tuple_of(n), default=(1,) * n),
            Attr("groups", integer(), default=1),
            Attr("bias", boolean, default=True, role="flag"),
        ),
        _infer(n),
        _weights,
        _macs,
        lead="out",
        layer=True,
        check_attrs=_check_attrs,
        init_params=("weight", "bias"),
        fan_params=("weight",),
        fresh=True,
    )


register(*(_conv_transpose(n) for n in (1, 2, 3)))
