"""Ops that move, cut or make tensors: flatten, reshape, permute, transpose, slice, select, roll,
channel shuffle, learned tensors, constants and interpolation."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from nasdsl.errors import ShapeError, SpecError
from nasdsl.ir.types import AXES, TensorType, default_axes
from nasdsl.ops.core import (
    MAX_CHANNELS,
    MAX_RANK,
    MAX_WINDOW,
    Attr,
    OpDef,
    Weight,
    axis_of,
    boolean,
    check_int,
    describe,
    describe_type,
    fmt,
    identity_channels,
    int_list,
    integer,
    is_finite,
    is_int,
    known,
    need,
    one_of,
    optional_int,
    register,
    signed,
)

if TYPE_CHECKING:
    import numpy


def _axis(v: object) -> str | int:
    """``channels``, ``last`` or an axis index (negative from the end)."""
    if v in ("channels", "last"):
        return v  # type: ignore[return-value]
    if is_int(v) and -MAX_RANK <= v < MAX_RANK:
        return v
    raise SpecError(f"expected channels, last or an axis index from {-MAX_RANK} to {MAX_RANK - 1}, got {describe(v)}")


#: the longest side an interpolate makes
MAX_SIDE = 1 << 16

AXIS_DOC = "channels (the channel axis), last, or an axis index without the batch (negative from the end)"


# -- flatten, reshape, permute, transpose ---------------------------------------------------------


def _flatten_infer(types: Sequence[TensorType], a: Mapping[str, object]) -> TensorType:
    t = types[0]
    start = axis_of(t, a["start"], "flatten")
    end = axis_of(t, a["end"], "flatten")
    if end < start:
        raise ShapeError(f"expected flatten's end axis ({end}) not before its start ({start}) in {describe_type(t)}")
    size = 1
    for d in t.shape[start : end + 1]:
        size = size * d
    merged = t.axes[start : end + 1]
    if start == 0 and end == t.rank - 1:
        axis = "C"  # flat features
    elif all(x in "THWL" for x in merged):
        axis = "L"  # spatial axes become a sequence (a ViT's patches)
    elif len(merged) == 1:
        axis = merged
    else:
        axis = "?"
    return TensorType((*t.shape[:start], size, *t.shape[end + 1 :]), t.axes[:start] + axis + t.axes[end + 1 :])


def _flatten_channels(types: Sequence[TensorType], a: Mapping[str, object], out: TensorType) -> tuple | None:
    t = types[0]
    if out.rank != 1:  # a partial flatten keeps the channels when it leaves the channel axis alone
        return identity_channels(types, a, out) if out.channel_axis is not None and t.channel_axis == 0 else None
    if t.channel_axis not in (0, None) or t.rank == 1:
        return identity_channels(types, a, out) if t.rank == 1 else None
    per = math.prod(t.shape[1:])
    return tuple((0, f // per) for f in range(out.shape[0]))


def _reshape_shape(v: object) -> tuple[int, ...]:
    if not isinstance(v, (list, tuple)) or not 1 <= len(v) <= MAX_RANK:
        raise SpecError(f"expected the new shape without the batch, a list of 1 to {MAX_RANK} sizes, got {describe(v)}")
    if sum(1 for x in v if x == -1) > 1:
        raise SpecError(f"expected at most one -1 (the size worked out from the others), got {describe(v)}")
    return tuple(x if x == -1 else check_int(x, 1, MAX_CHANNELS) for x in v)


class AxesWords:
    """The words an ``axes`` attribute takes literally: any string of axis letters (``CHW``)."""

    def __contains__(self, word: object) -> bool:
        return isinstance(word, str) and bool(word) and all(c in AXES for c in word)

    def __iter__(self):
        return iter(())


AXES_WORDS = AxesWords()


def _axes_text(v: object) -> str | None:
    if v is None:
        return None
    if not isinstance(v, str) or any(c not in AXES for c in v) or v.count("C") > 1:
        raise SpecError(f"expected one letter per axis from {AXES}, C at most once, got {describe(v)}")
    return v


def _reshape_infer(types: Sequence[TensorType], a: Mapping[str, object]) -> TensorType:
    t = types[0]
    target = list(a["shape"])
    total = 1
    for d in t.shape:
        total = total * d
    if -1 in target:
        rest = 1
        for d in target:
            if d != -1:
                rest = rest * d
        if known(total, rest) and (rest == 0 or total % rest):
            raise ShapeError(f"cannot reshape {describe_type(t)} to {fmt(a['shape'])}: the sizes do not divide")
        target[target.index(-1)] = total // rest
    size = 1
    for d in target:
        size = size * d
    if known(size, total) and size != total:
        raise ShapeError(f"cannot reshape {describe_type(t)} ({total} values) to {fmt(target)} ({size} values)")
    axes = a["axes"] or "?" * len(target)
    if len(axes) != len(target):
        raise ShapeError(f"expected axes of {len(target)} letters for the shape {fmt(target)}, got {a['axes']}")
    return TensorType(tuple(target), axes, t.dtype)


def _opaque_shape(v: object) -> tuple[int, ...]:
    if not isinstance(v, (list, tuple)) or not 1 <= len(v) <= MAX_RANK:
        raise SpecError(
            f"expected the output shape without the batch, a list of 1 to {MAX_RANK} sizes, got {describe(v)}"
        )
    return tuple(check_int(x, 1, MAX_CHANNELS) for x in v)


def _opaque_infer(types: Sequence[TensorType], a: Mapping[str, object]) -> TensorType:
    shape = tuple(a["shape"])
    axes = a["axes"] or default_axes(len(shape))
    if len(axes) != len(shape):
        raise ShapeError(f"expected axes of {len(shape)} letters for the shape {fmt(shape)}, got {a['axes']}")
    return TensorType(shape, axes, types[0].dtype)


def _permute_check(v: object) -> tuple[int, ...]:
    if not isinstance(v, (list, tuple)) or not 1 <= len(v) <= MAX_RANK:
        raise SpecError(f"expected a list of the axes in their new order, such as [1, 2, 0], got {describe(v)}")
    return tuple(check_int(x, 0, MAX_RANK - 1) for x in v)


def _permute_infer(types: Sequence[TensorType], a: Mapping[str, object]) -> TensorType:
    t = types[0]
    dims = a["dims"]
    if sorted(dims) != list(range(t.rank)):
        raise ShapeError(f"expected a permutation of 0..{t.rank - 1}, got {list(dims)}")
    return TensorType(tuple(t.shape[d] for d in dims), "".join(t.axes[d] for d in dims), t.dtype)


def _transpose_infer(types: Sequence[TensorType], a: Mapping[str, object]) -> TensorType:
    t = types[0]
    i, j = axis_of(t, a["axis0"], "transpose"), axis_of(t, a["axis1"], "transpose")
    order = list(range(t.rank))
    order[i], order[j] = order[j], order[i]
    return TensorType(tuple(t.shape[d] for d in order), "".join(t.axes[d] for d in order), t.dtype)


# -- slice, select, roll, channel shuffle ----------------------------------------------------------


def _slice_infer(types: Sequence[TensorType], a: Mapping[str, object]) -> TensorType:
    t = types[0]
    axis = axis_of(t, a["axis"], "slice")
    n = t.shape[axis]
    start, stop, step = a["start"], a["stop"], a["step"]
    stop = n if stop is None else stop
    if known(n, start, stop) and not start < stop <= n:
        what = "channels" if axis == t.channel_axis else f"positions of axis {axis}"
        raise ShapeError(f"expected 0 <= start < stop <= {n} {what}, got start {start} and stop {stop}")
    size = (stop - start + step - 1) // step
    return TensorType((*t.shape[:axis], size, *t.shape[axis + 1 :]), t.axes, t.dtype)


def _slice_channels(types: Sequence[TensorType], a: Mapping[str, object], out: TensorType) -> tuple | None:
    t = types[0]
    if t.channel_axis is None:
        return None
    if axis_of(t, a["axis"], "slice") != t.channel_axis:
        return identity_channels(types, a, out)  # cut elsewhere: the channels stay
    return tuple((0, a["start"] + i * a["step"]) for i in range(out.shape[out.channel_axis]))


def _select_infer(types: Sequence[TensorType], a: Mapping[str, object]) -> TensorType:
    t = types[0]
    axis = axis_of(t, a["axis"], "select")
    n = t.shape[axis]
    if known(n) and not -n <= a["index"] < n:
        raise ShapeError(f"expected an index from {-n} to {n - 1} along axis {axis} of {describe_type(t)}")
    if t.rank == 1:
        raise ShapeError(f"expected a tensor of two or more axes as the input of select, got {describe_type(t)}")
    return TensorType(t.shape[:axis] + t.shape[axis + 1 :], t.axes[:axis] + t.axes[axis + 1 :], t.dtype)


def _select_channels(types: Sequence[TensorType], a: Mapping[str, object], out: TensorType) -> tuple | None:
    t = types[0]
    if t.channel_axis is None or axis_of(t, a["axis"], "select") == t.channel_axis:
        return None  # one channel taken: what it meant is not a channel of the output
    return identity_channels(types, a, out)  # a position taken (a ViT's class token): the channels stay


def _roll_infer(types: Sequence[TensorType], a: Mapping[str, object]) -> TensorType:
    t = types[0]
    if len(a["shifts"]) != len(a["axes"]):
        raise ShapeError(f"expected one shift per axis, got {len(a['shifts'])} shifts and {len(a['axes'])} axes")
    for axis in a["axes"]:
        axis_of(t, axis, "roll")
    return t


def _shuffle_infer(types: Sequence[TensorType], a: Mapping[str, object]) -> TensorType:
    t = types[0]
    need(t, "channel_shuffle", "a feature map (C, ...)", t.rank >= 2 and t.channels_first)
    c = t.shape[0]
    if known(c) and c % a["groups"]:
        raise ShapeError(f"expected groups that divide the channels {c}, got {a['groups']}")
    return t


def _shuffle_channels(types: Sequence[TensorType], a: Mapping[str, object], out: TensorType) -> tuple:
    """torch.nn.ChannelShuffle: channel i of the output is channel (i % g) * (C // g) + i // g of the input."""
    c, g = out.shape[0], a["groups"]
    per = c // g
    return tuple((0, (i % g) * per + i // g) for i in range(c))


# -- learned tensors, constants, interpolation --------------------------------------------------------


def _tensor_shape(v: object) -> tuple[int, ...]:
    if not isinstance(v, (list, tuple)) or not 1 <= len(v) <= MAX_RANK:
        raise SpecError(
            f"expected the tensor's shape without the batch, a list of 1 to {MAX_RANK} sizes, got {describe(v)}"
        )
    return tuple(check_int(x, 1, MAX_CHANNELS) for x in v)


def _parameter_infer(types: Sequence[TensorType], a: Mapping[str, object]) -> TensorType:
    shape = tuple(a["shape"])
    axes = a["axes"] or ("LC" if len(shape) == 2 else "?" * len(shape))
    if len(axes) != len(shape):
        raise ShapeError(f"expected axes of {len(shape)} letters for the shape {fmt(shape)}, got {a['axes']}")
    return TensorType(shape, axes, types[0].dtype)


def _parameter_weights(types: Sequence[TensorType], a: Mapping[str, object]) -> tuple[Weight, ...]:
    return (Weight("", (1, *a["shape"]), init="zeros"),)


def _constant_infer(types: Sequence[TensorType], a: Mapping[str, object]) -> TensorType:
    return types[0]


def _finite_value(v: object) -> float:
    if not is_finite(v):
        raise SpecError(f"expected a number, got {describe(v)}")
    return float(v)


def _pads(v: object) -> tuple[tuple[int, int], ...]:
    if not isinstance(v, (list, tuple)) or not 1 <= len(v) <= MAX_RANK:
        raise SpecError(f"expected a list of 1 to {MAX_RANK} pairs [before, after], got {describe(v)}")
    pairs = []
    for pair in v:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise SpecError(f"expected a pair [before, after] for each axis, got {describe(pair)}")
        pairs.append((check_int(pair[0], 0, MAX_WINDOW), check_int(pair[1], 0, MAX_WINDOW)))
    return tuple(pairs)


def pad_axes(t: TensorType, a: Mapping[str, object]) -> list[int]:
    """The axes (without the batch) that ``pads`` pads, in order: the input's last ones."""
    return list(range(t.rank - len(a["pads"]), t.rank))


#: pad's modes other than a constant border, and the PyTorch module classes that pad so
PAD_MODES = {"reflect": "ReflectionPad", "replicate": "ReplicationPad", "circular": "CircularPad"}


def _pad_attrs(a: Mapping[str, object]) -> None:
    """A border taken from the input (reflect, replicate, circular) has no value, and PyTorch pads
    the last 1 to 3 axes so."""
    mode = a["mode"]
    if mode == "constant":
        return
    if a["value"] != 0.0:
        raise SpecError(f"expected no value with mode {mode} (its border comes from the input), got {a['value']}",
                        path="value")  # fmt: skip
    if len(a["pads"]) > 3:
        raise SpecError(f"expected 1 to 3 pairs with mode {mode}, got {len(a['pads'])}", path="pads")


def _pad_infer(types: Sequence[TensorType], a: Mapping[str, object]) -> TensorType:
    t = types[0]
    if len(a["pads"]) > t.rank:
        raise ShapeError(f"expected at most {t.rank} pairs in pads for {describe_type(t)}, got {len(a['pads'])}")
    mode = a["mode"]
    if mode != "constant" and t.rank > len(a["pads"]) + 1:
        raise ShapeError(
            f"expected mode {mode} to pad every axis but the first of {describe_type(t)}, got {len(a['pads'])} "
            "pairs (PyTorch pads at most one axis fewer than its input's after the batch so)"
        )
    if mode in ("reflect", "circular"):
        for axis, pair in zip(pad_axes(t, a), a["pads"], strict=True):
            side = t.shape[axis]
            if known(side) and (max(pair) >= side if mode == "reflect" else max(pair) > side):
                most = "below" if mode == "reflect" else "at most"
                raise ShapeError(
                    f"expected pads {most} the side {side} of axis {axis} with mode {mode}, got {list(pair)}"
                )
    shape = list(t.shape)
    for axis, (before, after) in zip(pad_axes(t, a), a["pads"], strict=True):
        shape[axis] = shape[axis] + before + after
    return TensorType(tuple(shape), t.axes, t.dtype)


def _pad_channels(types: Sequence[TensorType], a: Mapping[str, object], out: TensorType) -> tuple | None:
    t = types[0]
    c = out.channel_axis
    if c is None:
        return None
    padded = dict(zip(pad_axes(t, a), a["pads"], strict=True))
    before = padded.get(c, (0, 0))[0]
    n = t.shape[c]
    return tuple((0, i - before) if before <= i < before + n else None for i in range(out.shape[c]))


def interpolate_infer(types: Sequence[TensorType], a: Mapping[str, object]) -> TensorType:
    """PyTorch's sizes: ``size`` (one integer for every spatial axis, or one per axis), the second
    input's spatial sizes, or ``floor(d * scale)`` for each spatial size ``d``."""
    t = types[0]
    spatial = t.rank - 1
    need(t, "interpolate", "a feature map (C, L), (C, H, W) or (C, T, H, W)", 2 <= t.rank <= 4 and t.channels_first)
    wanted = {"linear": 1, "bilinear": 2, "trilinear": 3}.get(a["mode"])
    if wanted is not None and spatial != wanted:
        maps = {1: "a (C, L) map", 2: "a (C, H, W) map", 3: "a (C, T, H, W) map"}
        raise ShapeError(f"expected {maps[wanted]} for mode {a['mode']}, got {describe_type(t)}")
    given = [k for k in ("size", "scale") if a.get(k) is not None]
    if len(types) == 2:
        like = types[1]
        if like.rank < spatial:
            raise ShapeError(f"expected a second input with {spatial} spatial axes, got {describe_type(like)}")
        sizes = tuple(like.shape[like.rank - spatial :])
    elif len(given) != 1:
        raise ShapeError("expected one of size and scale")
    elif a["size"] is not None:
        size = a["size"]
        if isinstance(size, tuple) and len(size) != spatial:
            raise ShapeError(
                f"expected a size of one integer (every spatial axis) or a list of {spatial} (one per spatial axis) "
                f"for {describe_type(t)}, got {list(size)}"
            )
        sizes = size if isinstance(size, tuple) else (size,) * spatial
    else:
        scale = a["scale"]
        if not known(*t.shape[1:]) and scale != int(scale):
            raise ShapeError(
                "a scale that is not a whole number of a symbolic size"
            )  # the shape pass keeps the numbers
        # PyTorch's output size: the size times the scale in double precision, rounded down
        sizes = tuple(math.floor(d * scale) if known(d) else d * int(scale) for d in t.shape[1:])
        if not all(known(d) and d >= 1 for d in sizes):
            raise ShapeError(f"a scale of {a['scale']} leaves no positions of {describe_type(t)}")
    return TensorType((t.shape[0], *sizes), t.axes, t.dtype)


def _positive_real(v: object) -> float | None:
    if v is None:
        return None
    if not is_finite(v) or v <= 0 or v > MAX_WINDOW:
        raise SpecError(f"expected a number > 0 and <= {MAX_WINDOW}, got {describe(v)}")
    return float(v)


def _optional_sizes(v: object) -> int | tuple[int, ...] | None:
    """One integer (every spatial axis) or a list of one per spatial axis; kept apart, as the spec
    wrote it, so that a list of one on a 2-D map is refused rather than read as both axes."""
    if v is None or is_int(v):
        return v if v is None else check_int(v, 1, MAX_SIDE)
    return int_list("the output's spatial size", 1, MAX_SIDE, most=3)(v)


def interpolate_attrs(a: Mapping[str, object]) -> None:
    if a["mode"] == "nearest" and a["align_corners"] is True:
        message = "expected align_corners false with mode nearest (PyTorch takes it in the linear modes), got true"
        raise SpecError(message, path="align_corners")


INTERPOLATE_MODE = (
    Attr(
        "mode",
        one_of("nearest", "linear", "bilinear", "trilinear"),
        default="nearest",
        role="flag",
        literals=("nearest", "linear", "bilinear", "trilinear"),
    ),
    Attr("align_corners", boolean, default=False, role="flag"),
)


register(
    OpDef(
        "flatten",
        "flatten the axes from `start` to `end` into one (all of them by default: flat features)",
        (
            Attr("start", _axis, default=0, doc=AXIS_DOC),
            Attr("end", _axis, default=-1, doc=AXIS_DOC),
        ),
        _flatten_infer,
        lead="flatten",
        aliases=True,
        channel_map=_flatten_channels,
    ),
    OpDef(
        "reshape",
        "a new shape (without the batch) holding the same values in the same order; one size may be -1",
        (
            Attr("shape", _reshape_shape, symbolic=True, role="count"),
            Attr(
                "axes",
                _axes_text,
                default=None,
                doc="the new axes' roles (letters of CTHWL?); unknown by default",
                literals=AXES_WORDS,
            ),
        ),
        _reshape_infer,
        lead="other",
        aliases=True,
    ),
    OpDef(
        "opaque",
        "an op of an imported model that no spec op computes (`nasdsl import --allow-opaque`); no backend lowers it",
        (
            Attr("shape", _opaque_shape, doc="its output shape, batch excluded"),
            Attr(
                "axes",
                _axes_text,
                default=None,
                doc="the output axes' roles (letters of CTHWL?); by the rank's default otherwise",
                literals=AXES_WORDS,
            ),
        ),
        _opaque_infer,
        lead="other",
        spatial="fixed",
    ),
    OpDef(
        "permute",
        "reorder the axes (batch excluded): [1, 2, 0] makes a (C, H, W) map channels-last",
        (Attr("dims", _permute_check),),
        _permute_infer,
        aliases=True,
        lead="other",
    ),
    OpDef(
        "transpose",
        "swap two axes (batch excluded)",
        (Attr("axis0", _axis, doc=AXIS_DOC), Attr("axis1", _axis, doc=AXIS_DOC)),
        _transpose_infer,
        aliases=True,
        lead="other",
    ),
    OpDef(
        "slice",
        "the positions from `start` up to `stop` (default: all that follow), every `step`, along `axis` "
        "(the channels by default)",
        (
            Attr("start", integer(0), default=0, role="count", symbolic=True),
            Attr("stop", optional_int(0), default=None, role="count", symbolic=True),
            Attr("step", integer(1), default=1, symbolic=True),
            Attr("axis", _axis, default="channels", doc=AXIS_DOC, literals=("channels", "last")),
        ),
        _slice_infer,
        lead="slice",
        aliases=True,
        channel_map=_slice_channels,
    ),
    OpDef(
        "select",
        "the one position `index` along `axis`, which disappears (a ViT's class token: x[:, 0])",
        (
            Attr("axis", _axis, doc=AXIS_DOC, literals=("channels", "last")),
            Attr("index", signed(), default=0),
        ),
        _select_infer,
        lead="other",
        aliases=True,
        channel_map=_select_channels,
    ),
    OpDef(
        "roll",
        "shift the values along axes, cyclically (torch.roll; a Swin window shift)",
        (
            Attr("shifts", int_list("the shifts", -MAX_CHANNELS, MAX_CHANNELS)),
            Attr("axes", int_list("the axes, without the batch", -MAX_RANK, MAX_RANK - 1)),
        ),
        _roll_infer,
        channel_map=identity_channels,
    ),
    OpDef(
        "pad",
        "a constant border: `pads` gives [before, after] for each of the input's last axes "
        "(torch.nn.functional.pad; FactorizedReduce's shift, 'same' padding of an even window)",
        (
            Attr("pads", _pads, doc="one [before, after] pair per axis, for the last axes in order"),
            Attr("value", _finite_value, default=0.0, role="rate"),
            Attr(
                "mode",
                one_of("constant", *PAD_MODES),
                default="constant",
                role="flag",
                literals=("constant", *PAD_MODES),
                doc="constant (value), or a border from the input: reflect, replicate, circular",
            ),
        ),
        _pad_infer,
        check_attrs=_pad_attrs,
        lead="other",
        channel_map=_pad_channels,
    ),
    OpDef(
        "channel_shuffle",
        "interleave the channels of `groups` groups (ShuffleNet)",
        (Attr("groups", integer(1, MAX_CHANNELS)),),
        _shuffle_infer,
        channel_map=_shuffle_channels,
    ),
    OpDef(
        "parameter",
        "a learned tensor of `shape` (a class token, a position embedding), the same for every sample; "
        "it reads its input only for the batch size; a parameter of its module",
        (
            Attr("shape", _tensor_shape, symbolic=True, role="count"),
            Attr(
                "axes",
                _axes_text,
                default=None,
                doc="the roles of its axes (LC for tokens by default)",
                literals=AXES_WORDS,
            ),
        ),
        _parameter_infer,
        _parameter_weights,
        lead="out",
        spatial="fixed",
        init_params=("value",),
    ),
    OpDef(
        "constant",
        "a tensor shaped like the input, every value `value` (a zero branch of a search space)",
        (Attr("value", _finite_value, default=0.0, role="rate"),),
        _constant_infer,
    ),
    OpDef(
        "zero",
        "nothing, in place of a block (a search space's 'none' option): an op that reads it is left out, "
        "an `add` leaves it out of the sum",
        (),
        _constant_infer,
    ),
    OpDef(
        "interpolate",
        "resize a map to `size` or by `scale`",
        (
            Attr("size", _optional_sizes, default=None),
            Attr("scale", _positive_real, default=None, role="rate"),
            *INTERPOLATE_MODE,
        ),
        interpolate_infer,
        check_attrs=interpolate_attrs,
        spatial="fixed",
        channel_map=identity_channels,
    ),
)


def nearest_sources(size: int, out: int, scale: float | None, spatial: int) -> numpy.ndarray:
    """The input position that each of ``out`` positions copies along one axis of ``size`` in
    PyTorch's nearest mode (ATen's CPU kernels on a contiguous map): ``floor(i * step)`` in float32,
    at most ``size - 1``, where ``step`` is ``1 / scale`` rounded to float32 where a scale is given
    and ``size / out`` otherwise; on a 2-D map an axis that keeps its size is copied and one that
    doubles takes ``i // 2`` whatever the scale (``nearest_idx``)."""
    import numpy as np  # here only: check and summary import no numpy

    if spatial == 2 and out == size:
        return np.arange(out, dtype=np.int64)
    if spatial == 2 and out == 2 * size:
        return np.arange(out, dtype=np.int64) // 2
    step = np.float32(1.0 / scale) if scale is not None else np.float32(size) / np.float32(out)
    return np.minimum(np.floor(np.arange(out, dtype=np.float32) * step).astype(np.int64), size - 1)
