"""Ops over windows of a channels-last map: Swin's shifted window attention and its patch merging.

``window_attention`` is multi-head self-attention inside non-overlapping windows of a
``(H, W, C)`` or ``(T, H, W, C)`` map, with a learned relative-position bias and an optional
cyclic shift (Liu et al. 2021, "Swin Transformer"; Liu et al. 2022, "Video Swin
Transformer"); ``version: 2`` is Swin V2's scaled cosine attention with a log-spaced
continuous position bias (Liu et al. 2022, "Swin Transformer V2"). ``patch_merging``
joins each 2x2 neighbourhood into the channels and projects them (Swin's downsampling).
Parameter and buffer names are torchvision's (``qkv``, ``proj``,
``relative_position_bias_table``, ``relative_position_index``, ``cpb_mlp``,
``logit_scale``, ``relative_coords_table``; ``reduction``, ``norm``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from nasdsl.errors import ShapeError, SpecError
from nasdsl.ir.types import TensorType
from nasdsl.ops.core import (
    MAX_WINDOW,
    Attr,
    OpDef,
    Weight,
    boolean,
    check_int,
    describe,
    describe_type,
    identity_channels,
    integer,
    known,
    one_of,
    positive,
    real,
    register,
)

#: Swin V2's continuous position bias: its MLP's hidden width (torchvision's 512)
CPB_HIDDEN = 512


def _window(v: object) -> tuple[int, ...]:
    if not isinstance(v, (list, tuple)) or len(v) not in (2, 3):
        raise SpecError(f"expected the window, [h, w] or [t, h, w], got {describe(v)}")
    return tuple(check_int(x, 1, MAX_WINDOW) for x in v)


def _shift(v: object) -> int | tuple[int, ...]:
    if isinstance(v, (list, tuple)):
        if len(v) not in (2, 3):
            raise SpecError(f"expected the shift, an integer, [h, w] or [t, h, w], got {describe(v)}")
        return tuple(check_int(x, 0, MAX_WINDOW) for x in v)
    return check_int(v, 0, MAX_WINDOW)


def shift_of(a: Mapping[str, object]) -> tuple[int, ...]:
    """The shift along each axis of the window (an integer shifts every axis alike)."""
    shift = a["shift"]
    return (shift,) * len(a["window"]) if isinstance(shift, int) else tuple(shift)


def _check_window_attrs(a: Mapping[str, object]) -> None:
    window, shift = a["window"], shift_of(a)
    if len(shift) != len(window):
        raise SpecError(f"expected a shift of {len(window)} sizes, one per window axis, got {len(shift)}").at(
            path="shift"
        )
    if any(s >= w for s, w in zip(shift, window, strict=True)):
        raise SpecError(f"expected each shift smaller than the window {list(window)}, got {list(shift)}").at(
            path="shift"
        )
    if a["version"] == 2 and (len(window) != 2 or min(window) < 2):
        raise SpecError(
            f"expected a 2-D window of sides >= 2 for version 2 (its position bias divides by the side - 1), "
            f"got {list(window)}"
        ).at(path="window")


def _channels_last(t: TensorType, op: str, spatial: int) -> None:
    ok = t.rank == spatial + 1 and t.axes[-1] in "C?" and "C" not in t.axes[:-1]
    if not ok:
        names = "(H, W, C)" if spatial == 2 else "(T, H, W, C)"
        raise ShapeError(f"expected a channels-last map {names} as the input of {op}, got {describe_type(t)}")


def _attention_infer(types: Sequence[TensorType], a: Mapping[str, object]) -> TensorType:
    t = types[0]
    _channels_last(t, "window_attention", len(a["window"]))
    c = t.shape[-1]
    if known(c) and c % a["heads"]:
        raise ShapeError(f"expected heads that divide the channels {c}, got {a['heads']}")
    return t


def windows_of(sizes: Sequence[int], a: Mapping[str, object]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The window and the shift that run over a map of ``sizes``: with ``fit`` (Video Swin) a window
    larger than the map shrinks to it, unshifted; otherwise (Swin) the map is padded to whole
    windows, and an axis whose window covers the padded map is not shifted."""
    window, shift = list(a["window"]), list(shift_of(a))
    for i, n in enumerate(sizes):
        if a["fit"] and n <= window[i]:
            window[i], shift[i] = n, 0
        padded = -(-n // window[i]) * window[i]
        if window[i] >= padded:
            shift[i] = 0
    return tuple(window), tuple(shift)


def table_sides(a: Mapping[str, object]) -> tuple[int, ...]:
    """The relative positions along each axis of a window: 2 * side - 1."""
    return tuple(2 * w - 1 for w in a["window"])


def _attention_weights(types: Sequence[TensorType], a: Mapping[str, object]) -> tuple[Weight, ...]:
    c = types[0].shape[-1]
    heads, window = a["heads"], a["window"]
    n = math.prod(window)
    index = Weight("relative_position_index", (n * n,) if len(window) == 2 else (n, n), "buffer", "computed", "int64")
    # the linear layers start as nn.Linear does, the table as torchvision's module starts it
    linear = [Weight("qkv.weight", (3 * c, c), init="torch_default", layer="linear")]
    if a["qkv_bias"]:
        linear.append(Weight("qkv.bias", (3 * c,), init="torch_default", layer="linear"))
    linear.append(Weight("proj.weight", (c, c), init="torch_default", layer="linear"))
    if a["proj_bias"]:
        linear.append(Weight("proj.bias", (c,), init="torch_default", layer="linear"))
    sides = table_sides(a)
    if a["version"] == 1:  # torchvision's order: the module's parameter, its buffer, then qkv and proj
        table = Weight("relative_position_bias_table", (math.prod(sides), heads), init="trunc_normal:0.02")
        return (table, index, *linear)
    return (
        Weight("logit_scale", (heads, 1, 1), init=f"constant:{math.log(10.0)!r}"),
        Weight("relative_coords_table", (1, *sides, 2), "buffer", "computed"),
        index,
        *linear,
        Weight("cpb_mlp.0.weight", (CPB_HIDDEN, 2), init="torch_default", layer="linear"),
        Weight("cpb_mlp.0.bias", (CPB_HIDDEN,), init="torch_default", layer="linear"),
        Weight("cpb_mlp.2.weight", (heads, CPB_HIDDEN), init="torch_default", layer="linear"),
    )


def relative_position_index(window: Sequence[int]):
    """For each pair of positions (i, j) of a window, flattened row-major, the row of the
    bias table holding their offset: offsets shifted to start at 0, numbered row-major over
    the table's sides (2 * side - 1). A numpy int64 array (N, N)."""
    import numpy as np

    coords = np.stack(np.meshgrid(*(np.arange(w) for w in window), indexing="ij")).reshape(len(window), -1)
    offsets = coords[:, :, None] - coords[:, None, :]  # (axes, N, N)
    index = np.zeros(offsets.shape[1:], dtype=np.int64)
    for axis, w in enumerate(window):
        stride = math.prod(2 * v - 1 for v in window[axis + 1 :])
        index += (offsets[axis] + w - 1) * stride
    return index


def relative_coords_table(window: Sequence[int]):
    """Swin V2's log-spaced coordinates of every relative offset: each axis's offset scaled to
    [-8, 8], then sign(x) * log2(|x| + 1) / 3. A numpy float32 array (1, 2h-1, 2w-1, 2)."""
    import numpy as np

    axes = [np.arange(-(w - 1), w, dtype=np.float64) / (w - 1) * 8 for w in window]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)[None]
    return (np.sign(grid) * np.log2(np.abs(grid) + 1.0) / 3.0).astype(np.float32)


def _attention_computed(types: Sequence[TensorType], a: Mapping[str, object]) -> dict[str, object]:
    index = relative_position_index(a["window"])
    out = {"relative_position_index": index.reshape(-1) if len(a["window"]) == 2 else index}
    if a["version"] == 2:
        out["relative_coords_table"] = relative_coords_table(a["window"])
    return out


def _attention_macs(types: Sequence[TensorType], a: Mapping[str, object], out: TensorType) -> int:
    """The projections and the two products of every window (padding included), and Swin V2's
    position-bias MLP over the table: what torchvision's figures count (its matrix products)."""
    *sizes, c = types[0].shape
    window, _ = windows_of(sizes, a)
    tokens = math.prod(-(-n // w) * w for n, w in zip(sizes, window, strict=True))
    n = math.prod(window)
    macs = tokens * c * 3 * c + 2 * tokens * n * c + tokens * c * c
    if a["version"] == 2:
        macs += math.prod(table_sides(a)) * (2 * CPB_HIDDEN + CPB_HIDDEN * a["heads"])
    return macs


def merged_sizes(t: TensorType) -> tuple:
    """The map's sizes after patch merging: the two axes before the channels halved, rounded up."""
    h, w = t.shape[-3], t.shape[-2]
    return (*t.shape[:-3], (h + 1) // 2, (w + 1) // 2)


def _merging_infer(types: Sequence[TensorType], a: Mapping[str, object]) -> TensorType:
    t = types[0]
    if not (t.rank in (3, 4) and t.axes[-1] in "C?" and "C" not in t.axes[:-1]):
        raise ShapeError(
            f"expected a channels-last map (H, W, C) or (T, H, W, C) as the input of patch_merging, "
            f"got {describe_type(t)}"
        )
    return TensorType((*merged_sizes(t), a["out"]), t.axes, t.dtype)


def _merging_weights(types: Sequence[TensorType], a: Mapping[str, object]) -> tuple[Weight, ...]:
    c = types[0].shape[-1]
    normed = 4 * c if a["norm"] == "before" else a["out"]
    return (
        Weight("reduction.weight", (a["out"], 4 * c), init="torch_default", layer="linear"),
        Weight("norm.weight", (normed,), init="ones", layer="layer_norm"),
        Weight("norm.bias", (normed,), init="zeros", layer="layer_norm"),
    )


def _merging_macs(types: Sequence[TensorType], a: Mapping[str, object], out: TensorType) -> int:
    return math.prod(out.shape[:-1]) * 4 * types[0].shape[-1] * a["out"]


register(
    OpDef(
        "window_attention",
        "multi-head self-attention inside windows of a channels-last map, with a relative-position bias "
        "and a cyclic shift (Swin, Swin V2, Video Swin), as torchvision's ShiftedWindowAttention computes it",
        (
            Attr("heads", integer(), role="count", doc="attention heads; they divide the channels"),
            Attr("window", _window, doc="the window, [h, w] or [t, h, w]"),
            Attr("shift", _shift, default=0, doc="the cyclic shift (one per axis, or one for all), under the window"),
            Attr(
                "version",
                integer(1, 2),
                default=1,
                doc="2: Swin V2's cosine attention and continuous bias",
                fixed="the generated file writes each version as a class of its own",
            ),
            Attr("fit", boolean, default=False, role="flag", doc="a window larger than the map shrinks to it"),
            Attr("qkv_bias", boolean, default=True, role="flag"),
            Attr("proj_bias", boolean, default=True, role="flag"),
            Attr("attention_dropout", real(0.0, 1.0, hi_open=True), default=0.0, role="rate"),
            Attr("dropout", real(0.0, 1.0, hi_open=True), default=0.0, role="rate"),
        ),
        _attention_infer,
        _attention_weights,
        _attention_macs,
        layer=True,
        fresh=True,
        check_attrs=_check_window_attrs,
        computed=_attention_computed,
    ),
    OpDef(
        "patch_merging",
        "Swin's downsampling: each 2x2 neighbourhood of a channels-last map (padded to even sides) "
        "joined into 4C channels, LayerNorm and a linear layer to `out` without bias "
        "(norm: after normalises its output instead: Swin V2)",
        (
            Attr("out", integer(), role="count", doc="output channels", symbolic=True),
            Attr("norm", one_of("before", "after"), default="before", literals=("before", "after")),
            Attr("eps", positive, default=1e-5, role="rate"),
        ),
        _merging_infer,
        _merging_weights,
        _merging_macs,
        lead="out",
        layer=True,
        fresh=True,
    ),
)


def _multiple(v: object) -> int | tuple[int, ...]:
    if isinstance(v, (list, tuple)):
        if not 1 <= len(v) <= 3:
            raise SpecError(f"expected an integer or one per spatial axis, [h, w] or [t, h, w], got {describe(v)}")
        return tuple(check_int(x, 1, MAX_WINDOW) for x in v)
    return check_int(v, 1, MAX_WINDOW)


def spatial_axes(t: TensorType) -> list[int]:
    """The axes of a map other than its channels (all of them where it has none)."""
    return [i for i in range(t.rank) if i != t.channel_axis]


def pad_amounts(t: TensorType, a: Mapping[str, object]) -> list[int]:
    """The zeros padded at the end of each spatial axis (in order) to reach a multiple."""
    axes = spatial_axes(t)
    multiple = a["multiple"]
    multiples = (multiple,) * len(axes) if isinstance(multiple, int) else multiple
    if len(multiples) != len(axes):
        raise ShapeError(
            f"expected one multiple per spatial axis ({len(axes)}) of {describe_type(t)}, got {len(multiples)}"
        )
    return [-t.shape[i] % m if known(t.shape[i]) else 0 for i, m in zip(axes, multiples, strict=True)]


def _pad_infer(types: Sequence[TensorType], a: Mapping[str, object]) -> TensorType:
    t = types[0]
    if t.rank < 2 or t.channel_axis is None:
        raise ShapeError(f"expected a map with a channel axis as the input of pad_to_multiple, got {describe_type(t)}")
    if not known(*(t.shape[i] for i in spatial_axes(t))):
        raise ShapeError("a padding to a multiple of a symbolic size")  # the shape pass keeps the numbers
    shape = list(t.shape)
    for i, p in zip(spatial_axes(t), pad_amounts(t, a), strict=True):
        shape[i] += p
    return TensorType(tuple(shape), t.axes, t.dtype)


register(
    OpDef(
        "pad_to_multiple",
        "zeros at the end of each spatial axis of a map, up to a multiple of `multiple` "
        "(Video Swin's patch embedding, before its strided convolution)",
        (Attr("multiple", _multiple, doc="an integer, or one per spatial axis"),),
        _pad_infer,
        channel_map=identity_channels,
    ),
)
