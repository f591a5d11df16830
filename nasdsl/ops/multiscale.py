"""Multiscale vision transformers (MViT, Fan et al. 2021; MViTv2, Li et al. 2022): pooling attention
over the tokens of a (T, H, W) grid, and the class token and position embedding that make those tokens.

The tokens of a video are a sequence ``(L, C)`` whose first token is a class token and whose others
are the positions of a ``(T, H, W)`` grid in order (``L = 1 + T * H * W``). The sequence does not say
its grid, so the ops that need it take it as an attribute (``grid``) and check it against ``L``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from nasdsl.errors import ShapeError
from nasdsl.ir.types import TensorType
from nasdsl.ops.core import (
    MAX_WINDOW,
    Attr,
    OpDef,
    Weight,
    boolean,
    describe_type,
    fmt,
    integer,
    known,
    need_map,
    positive,
    real,
    register,
    tuple_of,
)

#: the three pooled projections of pooling attention, in the order torchvision builds them
POOLS = ("q", "k", "v")


def pooled(attrs: Mapping[str, object], which: str) -> bool:
    """Whether pooling attention pools ``which`` (``q``, ``k`` or ``v``): a window or a stride larger
    than one (torchvision builds no pool otherwise)."""
    kind = "q" if which == "q" else "kv"
    return math.prod(attrs[f"kernel_{kind}"]) > 1 or math.prod(attrs[f"stride_{kind}"]) > 1


def pooled_grid(attrs: Mapping[str, object], which: str) -> tuple[int, ...]:
    """The (T, H, W) grid of ``which`` after its pooling: a depthwise convolution padded by half its
    window (rounded down) on each side."""
    grid = attrs["grid"]
    if not pooled(attrs, which):
        return grid
    kind = "q" if which == "q" else "kv"
    kernel, stride = attrs[f"kernel_{kind}"], attrs[f"stride_{kind}"]
    return tuple((n + 2 * (k // 2) - k) // s + 1 for n, k, s in zip(grid, kernel, stride, strict=True))


def rel_pos_sizes(attrs: Mapping[str, object]) -> tuple[int, int]:
    """The rows of the relative position tables: spatial (``rel_pos_h``, ``rel_pos_w``) and temporal
    (``rel_pos_t``), as torchvision sizes them from the input grid and the strides along the height."""
    t, h, w = attrs["grid"]
    size = max(h, w)
    q_size = size // attrs["stride_q"][1]
    kv_size = size // attrs["stride_kv"][1]
    return 2 * max(q_size, kv_size) - 1, 2 * t - 1


def _check_tokens(t: TensorType, op: str, grid: Sequence[int], cls: int) -> None:
    if t.rank != 2 or t.axes[-1] != "C" and "?" not in t.axes:
        raise ShapeError(f"expected tokens (L, C) as the input of {op}, got {describe_type(t)}")
    length = t.shape[0]
    want = cls + math.prod(grid)
    if known(length) and length != want:
        token = " and a class token" if cls else ""
        raise ShapeError(
            f"expected {want} tokens (a {fmt(grid)} grid{token}) as the input of {op}, got {describe_type(t)}"
        )


def _pooling_attention_infer(types: Sequence[TensorType], a: Mapping[str, object]) -> TensorType:
    t = types[0]
    cls = 1 if a["class_token"] else 0
    _check_tokens(t, "pooling_attention", a["grid"], cls)
    out, heads = a["out"], a["heads"]
    if known(out) and out % heads:
        raise ShapeError(f"expected heads that divide out ({out}), got {heads}")
    for which in POOLS:
        if any(n < 1 for n in pooled_grid(a, which)):
            raise ShapeError(f"pooling {which} leaves no positions of the {fmt(a['grid'])} grid")
    if a["rel_pos"] and any(s < 1 for s in rel_pos_sizes(a)):
        raise ShapeError(
            f"expected a stride_q or stride_kv no larger than the grid's height and width for rel_pos, got a "
            f"{fmt(a['grid'])} grid and strides {fmt(a['stride_q'])} and {fmt(a['stride_kv'])}"
        )
    return TensorType((cls + math.prod(pooled_grid(a, "q")), out), t.axes, t.dtype)


def _pooling_attention_weights(types: Sequence[TensorType], a: Mapping[str, object]) -> tuple[Weight, ...]:
    c = types[0].shape[-1]
    out = a["out"]
    head = out // a["heads"]
    weights = []
    if a["rel_pos"]:  # the module's own parameters come first in its state_dict
        spatial, temporal = rel_pos_sizes(a)
        weights += [Weight(f"rel_pos_{axis}", (n, head)) for axis, n in (("h", spatial), ("w", spatial))]
        weights.append(Weight("rel_pos_t", (temporal, head)))
    weights += [
        Weight("qkv.weight", (3 * out, c), init="torch_default", layer="linear"),
        Weight("qkv.bias", (3 * out,), init="torch_default", layer="linear"),
        Weight("project.0.weight", (out, out), init="torch_default", layer="linear"),
        Weight("project.0.bias", (out,), init="torch_default", layer="linear"),
    ]
    for which in POOLS:
        if pooled(a, which):
            kernel = a["kernel_q"] if which == "q" else a["kernel_kv"]
            weights += [
                Weight(f"pool_{which}.pool.weight", (head, 1, *kernel), init="torch_default", layer="conv3d"),
                Weight(f"pool_{which}.norm_act.0.weight", (head,), init="ones", layer="layer_norm"),
                Weight(f"pool_{which}.norm_act.0.bias", (head,), init="zeros", layer="layer_norm"),
            ]
    return tuple(weights)


def _pooling_attention_macs(types: Sequence[TensorType], a: Mapping[str, object], out_type: TensorType) -> int:
    """The projections, the depthwise pooling convolutions, q k^T and the weighted sum of v, and the
    relative positions' products with q (torchvision's figures count each of them)."""
    length, c = types[0].shape
    out, heads = a["out"], a["heads"]
    head = out // heads
    cls = 1 if a["class_token"] else 0
    q_grid, kv_grid = pooled_grid(a, "q"), pooled_grid(a, "k")
    lq, lk = cls + math.prod(q_grid), cls + math.prod(kv_grid)
    macs = length * c * 3 * out + lq * out * out
    for which, grid in (("q", q_grid), ("k", kv_grid), ("v", kv_grid)):
        if pooled(a, which):
            kernel = a["kernel_q"] if which == "q" else a["kernel_kv"]
            macs += math.prod(grid) * out * math.prod(kernel)  # one weight per channel of each head
    macs += 2 * heads * lq * lk * head
    if a["rel_pos"]:
        macs += heads * math.prod(q_grid) * sum(kv_grid) * head
    return macs


def _encoding_infer(types: Sequence[TensorType], a: Mapping[str, object]) -> TensorType:
    t = types[0]
    need_map(t, "positional_encoding", 3)
    c, frames, h, w = t.shape
    return TensorType((1 + frames * h * w, c), "LC", t.dtype)


def _encoding_weights(types: Sequence[TensorType], a: Mapping[str, object]) -> tuple[Weight, ...]:
    c, frames, h, w = types[0].shape
    weights = [Weight("class_token", (c,))]
    if a["absolute"]:
        weights += [Weight("spatial_pos", (h * w, c)), Weight("temporal_pos", (frames, c)), Weight("class_pos", (c,))]
    return tuple(weights)


register(
    OpDef(
        "pooling_attention",
        "multi-head self-attention over the tokens of a (T, H, W) grid (a class token first) whose q, k "
        "and v are pooled on that grid, each head alike, by a depthwise 3-D convolution and LayerNorm "
        "(MViT's MultiscaleAttention: qkv, project, pool_q, pool_k, pool_v; with rel_pos, MViTv2's "
        "decomposed relative positions rel_pos_h, rel_pos_w, rel_pos_t; with residual_pool, the pooled q "
        "added to the result); the output's grid is q's",
        (
            Attr("heads", integer(), role="count", doc="attention heads; they divide out"),
            Attr("out", integer(), role="count", doc="output features (q, k and v have as many)", symbolic=True),
            Attr("grid", tuple_of(3, 1, MAX_WINDOW), doc="the input tokens' [t, h, w] grid"),
            Attr("kernel_q", tuple_of(3), default=(1, 1, 1), doc="q's pooling window; 1 and stride 1: no pooling"),
            Attr("stride_q", tuple_of(3), default=(1, 1, 1), doc="q's pooling stride: the output grid's"),
            Attr("kernel_kv", tuple_of(3), default=(1, 1, 1), doc="k's and v's pooling window"),
            Attr("stride_kv", tuple_of(3), default=(1, 1, 1), doc="k's and v's pooling stride"),
            Attr("rel_pos", boolean, default=False, role="flag", doc="MViTv2's decomposed relative positions"),
            Attr("residual_pool", boolean, default=False, role="flag", doc="add the pooled q (not its class token)"),
            Attr("class_token", boolean, default=True, role="flag", doc="the first token is a class token"),
            Attr("dropout", real(0.0, 1.0, hi_open=True), default=0.0, role="rate", doc="after the projection"),
            Attr("eps", positive, default=1e-5, role="rate", doc="the pools' LayerNorm"),
        ),
        _pooling_attention_infer,
        _pooling_attention_weights,
        _pooling_attention_macs,
        lead="out",
        layer=True,
        init_params=("rel_pos_h", "rel_pos_w", "rel_pos_t"),
        fresh=True,
    ),
    OpDef(
        "positional_encoding",
        "the positions of a (C, T, H, W) map as tokens (T * H * W, C) behind a learned class token "
        "(1 + T * H * W, C); with absolute, plus a learned position embedding: a spatial (H * W, C) and a "
        "temporal (T, C) table summed, and the class token's own (MViT's PositionalEncoding: class_token, "
        "spatial_pos, temporal_pos, class_pos)",
        (Attr("absolute", boolean, default=False, role="flag", doc="add the learned position embedding"),),
        _encoding_infer,
        _encoding_weights,
        lead="same",
        spatial="fixed",
        init_params=("class_token", "spatial_pos", "temporal_pos", "class_pos"),
    ),
)
