"""Ops PyTorch has modules for that the other families lack: ``pixel_shuffle`` and
``pixel_unshuffle`` (sub-pixel convolution's rearrangements), adaptive max pooling in 1, 2 and 3
spatial dimensions, ``clamp``, and the activations ``softplus``, ``mish``, ``selu`` and
``log_softmax``, each as PyTorch computes it (``nn.PixelShuffle``, ``nn.AdaptiveMaxPool2d``,
``nn.Hardtanh`` or ``torch.clamp``, ``nn.Softplus``, ``nn.Mish``, ``nn.SELU``, ``nn.LogSoftmax``).

None has parameters or counts multiply-adds (rearrangements, pooling and element-wise ops count
zero, as everywhere in the registry).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from nasdsl.errors import ShapeError, SpecError
from nasdsl.ir.types import TensorType
from nasdsl.ops.core import (
    MAX_WINDOW,
    Attr,
    OpDef,
    axis_of,
    describe,
    describe_type,
    identity_channels,
    integer,
    is_finite,
    known,
    need_map,
    positive,
    real,
    register,
    same_type,
    tuple_of,
)
from nasdsl.ops.tensor import AXIS_DOC, _axis

#: the bound of a clamp's bounds and a softplus's threshold (any finite number PyTorch takes, within reason)
_BOUND = 1e6

# -- pixel_shuffle, pixel_unshuffle ----------------------------------------------------------------


def _pixel_shuffle_infer(types: Sequence[TensorType], a: Mapping[str, object]) -> TensorType:
    """(C * r^2, H, W) -> (C, H * r, W * r): channel c * r^2 + i * r + j goes to position (i, j) of
    each r x r block of channel c."""
    t, r = types[0], a["factor"]
    need_map(t, "pixel_shuffle", 2)
    c, h, w = t.shape
    if known(c) and c % (r * r):
        raise ShapeError(f"expected channels divisible by factor^2 = {r * r}, got {describe_type(t)}")
    return TensorType((c // (r * r), h * r, w * r), t.axes, t.dtype)


def _pixel_unshuffle_infer(types: Sequence[TensorType], a: Mapping[str, object]) -> TensorType:
    """(C, H, W) -> (C * r^2, H / r, W / r), the inverse of pixel_shuffle."""
    t, r = types[0], a["factor"]
    need_map(t, "pixel_unshuffle", 2)
    c, h, w = t.shape
    if known(h, w) and (h % r or w % r):
        raise ShapeError(f"expected a height and width divisible by the factor {r}, got {describe_type(t)}")
    return TensorType((c * r * r, h // r, w // r), t.axes, t.dtype)


def _unshuffle_channels(types: Sequence[TensorType], a: Mapping[str, object], out: TensorType) -> tuple:
    """Output channel o holds one r x r phase of input channel o // r^2."""
    block = a["factor"] * a["factor"]
    return tuple((0, o // block) for o in range(out.shape[0]))


_FACTOR = Attr("factor", integer(1, MAX_WINDOW), doc="the side of each block of positions")

# -- adaptive max pooling ------------------------------------------------------------------------

#: the suffix of each rank's op name, as the other pools name theirs (max_pool1d, max_pool, max_pool3d)
_SUFFIX = {1: "1d", 2: "", 3: "3d"}


def adaptive_windows(size: int, out: int) -> list[list[int]]:
    """PyTorch's adaptive windows over a side of ``size`` to ``out``: row i lists the positions of
    window i, [floor(i*size/out), ceil((i+1)*size/out)), its last repeated up to the longest
    window's length (a max is the same). The ONNX export gathers them; the importer reads them."""
    starts = [(i * size) // out for i in range(out)]
    ends = [-(-((i + 1) * size) // out) for i in range(out)]
    longest = max(e - s for s, e in zip(starts, ends, strict=True))
    return [[min(s + k, e - 1) for k in range(longest)] for s, e in zip(starts, ends, strict=True)]


def _adaptive_max(n: int) -> OpDef:
    name = f"adaptive_max_pool{_SUFFIX[n]}"

    def infer(types: Sequence[TensorType], a: Mapping[str, object]) -> TensorType:
        t = types[0]
        need_map(t, name, n)
        return TensorType((t.shape[0], *a["size"]), t.axes, t.dtype)

    return OpDef(
        name,
        f"{n}-D max pooling to a fixed size",
        (Attr("size", tuple_of(n)),),
        infer,
        spatial="fixed",
        channel_map=identity_channels,
    )


# -- clamp ---------------------------------------------------------------------------------------


def _bound(v: object) -> float | None:
    if v is None:
        return None
    if not is_finite(v) or abs(v) > _BOUND:
        raise SpecError(f"expected a number from {-_BOUND} to {_BOUND}, or null, got {describe(v)}")
    return float(v)


def _clamp_attrs(a: Mapping[str, object]) -> None:
    lo, hi = a["min"], a["max"]
    if lo is None and hi is None:
        raise SpecError("expected min, max or both for clamp, got neither")
    if lo is not None and hi is not None and not lo < hi:
        raise SpecError(f"expected a max above min {lo!r}, got {hi!r}", path="max")


# -- log_softmax ---------------------------------------------------------------------------------


def _log_softmax_infer(types: Sequence[TensorType], a: Mapping[str, object]) -> TensorType:
    axis_of(types[0], a["dim"], "log_softmax")
    return types[0]


def _activation(name: str, doc: str, attrs: tuple[Attr, ...] = ()) -> OpDef:
    return OpDef(name, doc, attrs, same_type, elementwise=True, channel_map=identity_channels)


register(
    OpDef(
        "pixel_shuffle",
        "(C * r^2, H, W) to (C, H * r, W * r): each group of r^2 channels laid out as r x r blocks (nn.PixelShuffle)",
        (_FACTOR,),
        _pixel_shuffle_infer,
        lead="other",
    ),
    OpDef(
        "pixel_unshuffle",
        "(C, H, W) to (C * r^2, H / r, W / r): each r x r block of a channel as r^2 channels (nn.PixelUnshuffle)",
        (_FACTOR,),
        _pixel_unshuffle_infer,
        lead="other",
        channel_map=_unshuffle_channels,
    ),
    *(_adaptive_max(n) for n in (1, 2, 3)),
    OpDef(
        "clamp",
        "each value limited to [min, max]; either bound may be left out (null), not both",
        (
            Attr("min", _bound, default=None, role="rate", doc="the lower bound, or null for none"),
            Attr("max", _bound, default=None, role="rate", doc="the upper bound, or null for none"),
        ),
        same_type,
        check_attrs=_clamp_attrs,
        elementwise=True,
        channel_map=identity_channels,
    ),
    _activation(
        "softplus",
        "log(1 + exp(beta * x)) / beta, and x itself where beta * x > threshold",
        (
            Attr("beta", positive, default=1.0, role="rate"),
            Attr("threshold", real(-_BOUND, _BOUND), default=20.0, role="rate"),
        ),
    ),
    _activation("mish", "x * tanh(softplus(x))"),
    _activation("selu", "scale * (max(0, x) + min(0, alpha * (exp(x) - 1))), PyTorch's (and ONNX's) constants"),
    OpDef(
        "log_softmax",
        "the logarithm of softmax over an axis (the channels by default)",
        (Attr("dim", _axis, default="channels", doc=AXIS_DOC, literals=("channels", "last")),),
        _log_softmax_infer,
        channel_map=identity_channels,
    ),
)
