"""Ops over channels-first maps: convolutions, pooling and normalisation, in 1, 2 and 3 spatial dimensions.

``conv1d`` reads ``(C, L)``, ``conv2d`` ``(C, H, W)``, ``conv3d`` ``(C, T, H, W)``;
so do the pools of the same rank (``max_pool`` and ``avg_pool`` are the 2-D ones,
as in every spec before 3-D ones existed). ``batch_norm`` normalises the channels
of a map of any of those ranks, or flat features.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from nasdsl.errors import ShapeError, SpecError
from nasdsl.ir.types import TensorType
from nasdsl.ops.core import (
    MAX_WINDOW,
    Attr,
    OpDef,
    Weight,
    boolean,
    identity_channels,
    integer,
    known,
    need,
    need_map,
    padding_of,
    positive,
    real,
    register,
    spatial_out,
    tuple_of,
    window_text,
)

#: the suffix of each rank's op names: conv1d, conv2d, conv3d; max_pool1d, max_pool, max_pool3d
CONV_NAMES = {1: "conv1d", 2: "conv2d", 3: "conv3d"}
POOL_SUFFIX = {1: "1d", 2: "", 3: "3d"}


def _conv_attrs(a: Mapping[str, object]) -> None:
    if a["padding"] == "same" and any(s != 1 for s in a["stride"]):
        raise SpecError(f"expected stride 1 with padding 'same', got stride {window_text(a['stride'])}", path="padding")


def _pool_attrs(a: Mapping[str, object]) -> None:
    k, p = a["kernel"], a["padding"]
    if any(pi * 2 > ki for pi, ki in zip(p, k, strict=True)):
        raise SpecError(
            f"expected padding at most half the kernel {window_text(k)}, got {window_text(p)}", path="padding"
        )


def _conv_infer(n: int):
    name = CONV_NAMES[n]

    def infer(types: Sequence[TensorType], a: Mapping[str, object]) -> TensorType:
        t = types[0]
        need_map(t, name, n)
        c = t.shape[0]
        g = a["groups"]
        if known(c) and c % g or known(a["out"]) and a["out"] % g:
            raise ShapeError(
                f"expected groups that divide the input channels {c} and the output channels {a['out']}, got {g}"
            )
        return TensorType((a["out"], *spatial_out(t.shape[1:], a)), t.axes, t.dtype)

    return infer


def _conv_weights(types: Sequence[TensorType], a: Mapping[str, object]) -> tuple[Weight, ...]:
    c = types[0].shape[0]
    weight = Weight("weight", (a["out"], c // a["groups"], *a["kernel"]), init="torch_default")
    return (weight, Weight("bias", (a["out"],), init="torch_default")) if a["bias"] else (weight,)


def _conv_macs(types: Sequence[TensorType], a: Mapping[str, object], out: TensorType) -> int:
    window = 1
    for k in a["kernel"]:
        window *= k
    positions = 1
    for d in out.shape:
        positions *= d
    return positions * (types[0].shape[0] // a["groups"]) * window


def _conv_channels(types: Sequence[TensorType], a: Mapping[str, object], out: TensorType) -> tuple | None:
    """A depthwise convolution (one group per input channel) filters each input channel on its own:
    output channel o comes from input channel o // (out / groups), as BatchNorm's come from
    theirs. Any other convolution makes its channels anew (None)."""
    c = types[0].shape[0]
    if a["groups"] == 1 or a["groups"] != c:
        return None
    per = out.shape[0] // a["groups"]
    return tuple((0, o // per) for o in range(out.shape[0]))


def _conv(n: int) -> OpDef:
    return OpDef(
        CONV_NAMES[n],
        f"{n}-D convolution",
        (
            Attr("out", integer(), role="count", doc="output channels", symbolic=True),
            Attr("kernel", tuple_of(n)),
            Attr("stride", tuple_of(n), default=(1,) * n),
            Attr("padding", padding_of(n), default=(0,) * n, literals=("same", "valid")),
            Attr("dilation", tuple_of(n), default=(1,) * n),
            Attr("groups", integer(), default=1),
            Attr("bias", boolean, default=True, role="flag"),
        ),
        _conv_infer(n),
        _conv_weights,
        _conv_macs,
        lead="out",
        layer=True,
        check_attrs=_conv_attrs,
        init_params=("weight", "bias"),
        fan_params=("weight",),
        fresh=True,
        channel_map=_conv_channels,
    )


def _pool_infer(op: str, n: int):
    def infer(types: Sequence[TensorType], a: Mapping[str, object]) -> TensorType:
        t = types[0]
        need_map(t, op, n)
        return TensorType((t.shape[0], *spatial_out(t.shape[1:], a, a["ceil_mode"])), t.axes, t.dtype)

    return infer


def _stride_default(attrs: Mapping[str, object]) -> object:
    return attrs["kernel"]


def _window(n: int) -> tuple[Attr, ...]:
    return (
        Attr("kernel", tuple_of(n), doc="window size"),
        Attr("stride", tuple_of(n), default=_stride_default, doc="defaults to the kernel"),
        Attr("padding", tuple_of(n, 0), default=(0,) * n),
    )


def _pools(n: int) -> list[OpDef]:
    suffix = POOL_SUFFIX[n]
    return [
        OpDef(
            f"max_pool{suffix}",
            f"{n}-D max pooling",
            (*_window(n), Attr("ceil_mode", boolean, default=False)),
            _pool_infer(f"max_pool{suffix}", n),
            check_attrs=_pool_attrs,
            channel_map=identity_channels,
        ),
        OpDef(
            f"avg_pool{suffix}",
            f"{n}-D average pooling",
            (
                *_window(n),
                Attr("ceil_mode", boolean, default=False),
                Attr("count_include_pad", boolean, default=True, role="flag"),
            ),
            _pool_infer(f"avg_pool{suffix}", n),
            check_attrs=_pool_attrs,
            channel_map=identity_channels,
        ),
        OpDef(
            f"adaptive_avg_pool{suffix}",
            f"{n}-D average pooling to a fixed size",
            (Attr("size", tuple_of(n)),),
            _adaptive_infer(f"adaptive_avg_pool{suffix}", n),
            spatial="fixed",
            channel_map=identity_channels,
        ),
    ]


def _adaptive_infer(op: str, n: int):
    def infer(types: Sequence[TensorType], a: Mapping[str, object]) -> TensorType:
        t = types[0]
        need_map(t, op, n)
        return TensorType((t.shape[0], *a["size"]), t.axes, t.dtype)

    return infer


def _global_infer(types: Sequence[TensorType], a: Mapping[str, object]) -> TensorType:
    t = types[0]
    need(t, "global_avg_pool", "a feature map (C, ...)", 2 <= t.rank <= 4 and (t.channels_first or "?" in t.axes))
    return TensorType((t.shape[0], *(1,) * (t.rank - 1)), t.axes, t.dtype)


def _bn_infer(types: Sequence[TensorType], a: Mapping[str, object]) -> TensorType:
    t = types[0]
    need(t, "batch_norm", "flat features or a feature map (C, ...)", t.rank <= 4 and (t.rank == 1 or t.channels_first))
    return t


def _bn_weights(types: Sequence[TensorType], a: Mapping[str, object]) -> tuple[Weight, ...]:
    c = (types[0].shape[0],)
    return (
        Weight("weight", c, init="ones"),
        Weight("bias", c, init="zeros"),
        Weight("running_mean", c, "buffer", "zeros"),
        Weight("running_var", c, "buffer", "ones"),
        Weight("num_batches_tracked", (), "buffer", "zeros", "int64"),
    )


def _lrn_infer(types: Sequence[TensorType], a: Mapping[str, object]) -> TensorType:
    need_map(types[0], "lrn", 2)
    return types[0]


register(
    *(_conv(n) for n in (1, 2, 3)),
    *(op for n in (1, 2, 3) for op in _pools(n)),
    OpDef(
        "global_avg_pool",
        "average over all positions of a map of any rank; output (C, 1, ...)",
        (),
        _global_infer,
        spatial="fixed",
        channel_map=identity_channels,
    ),
    OpDef(
        "batch_norm",
        "batch normalisation over the channels of a map (1-D, 2-D or 3-D) or flat features",
        (
            Attr("eps", positive, default=1e-5, role="rate"),
            Attr("momentum", real(0.0, 1.0), default=0.1, role="rate"),
        ),
        _bn_infer,
        _bn_weights,
        init_params=("weight", "bias"),
        fresh=True,
        channel_map=identity_channels,
    ),
    OpDef(
        "lrn",
        "local response normalisation across channels",
        (
            Attr("size", integer(1, MAX_WINDOW), default=5),
            Attr("alpha", positive, default=1e-4, role="rate"),
            Attr("beta", positive, default=0.75, role="rate"),
            Attr("k", positive, default=1.0, role="rate"),
        ),
        _lrn_infer,
        channel_map=identity_channels,
    ),
)
