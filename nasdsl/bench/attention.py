"""What the attention ops cost, part by part, as ONNX Runtime runs their ONNX lowerings.

An attention op is one IR node but many kernels, and they run at very different rates (ONNX
Runtime's profiler, one thread; Swin-T, MViT-V2-S, ViT-B/16, MaxViT-T):

* the **projections** (q, k and v from one linear layer; the output projection) are matrix
  products on every token, like a linear layer on a sequence (group ``linear_seq``);
* the **products** q k^T and the weighted sum of v are many small batched matrix products, one per
  window (or partition) and head (``attn_product``: their multiply-adds; ``attn_matrix``: how many
  products there are, each with its own call overhead);
* the **scores** (heads x queries x keys) are passed over once by the softmax and once more by
  each bias added to them (the relative-position bias, the shift's mask; MViT's decomposed
  relative positions are broadcast to the full scores, padded for the class token and added:
  three passes) (``scores``: elements times passes);
* a shifted window's **mask** adds -100 to the scores of tokens that the roll brought together
  from different parts of the map; their softmax weights come out as subnormal floats (about
  e^-100), which the CPU multiplies at a small fraction of its normal rate (a micro-code assist):
  in Swin-T's shifted blocks the weighted sum of v took 67 times as long as in the unshifted
  ones (``masked``: the multiply-adds with a masked weight);
* **copies** of the tokens: the pad, the roll (a split and a concatenation per shifted axis, each
  way), the windows cut out and joined (transposes), q, k and v split and moved into heads
  (``copy``: values moved);
* MViT's **pooling** of q, k and v, a depthwise 3-D convolution per head in the plain layout
  (``conv_pool``), its LayerNorm (``norm``), and its relative positions: einsums of q with a table
  per axis (``einsum``).

Each part is ``(group, work, traffic, streamed)`` as :func:`nasdsl.bench.latency.features`
gives them; which parts an op has follows from its ONNX lowering (``nasdsl/backends/onnx_ops.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

Part = tuple[str, float, float, float]


def _linear(rows: int, inner: int, out: int, streamed: Callable[[int], int]) -> Part:
    weights = inner * out
    return ("linear_seq", rows * inner * out, rows * (inner + out) + weights, streamed(weights))


def _copy(values: float) -> Part:
    return ("attn_copy", values, 2 * values, 0)


def _attend(matrices: int, queries: int, keys: int, d: int, passes: int) -> tuple[Part, ...]:
    """q k^T and the weighted sum of v for ``matrices`` (windows x heads) of ``queries`` x ``keys``
    with ``d`` features a head, and the scores passed over ``passes`` times."""
    scores = matrices * queries * keys
    values = matrices * (2 * queries + 2 * keys) * d  # q, k, v read, the result written
    return (
        ("attn_product", 2 * scores * d, values + 2 * scores, 0),
        ("attn_matrix", 2 * matrices, 0, 0),
        ("scores", scores * passes, 2 * scores * passes, 0),
    )


def plain(ins: tuple[tuple[int, ...], ...], attrs: Mapping[str, object], streamed) -> tuple[Part, ...]:
    """``attention`` on tokens (L, C): nn.MultiheadAttention's."""
    length, c = ins[0][-2], ins[0][-1]
    heads = attrs["heads"]
    rows = math.prod(ins[0][:-1])
    return (
        _linear(rows, c, 3 * c, streamed),
        *_attend(heads * (rows // length), length, length, c // heads, 1),
        _copy(5 * rows * c),  # q, k, v split into heads; k transposed; heads joined
        _linear(rows, c, c, streamed),
    )


def partition(ins: tuple[tuple[int, ...], ...], attrs: Mapping[str, object], streamed) -> tuple[Part, ...]:
    """``partition_attention`` on tokens (..., L, C): MaxViT's, with a relative-position bias."""
    shape = ins[0]
    length, c = shape[-2], shape[-1]
    heads = c // attrs["head_dim"]
    rows = math.prod(shape[:-1])
    return (
        _linear(rows, c, 3 * c, streamed),
        *_attend(heads * (rows // length), length, length, attrs["head_dim"], 2),
        _copy(5 * rows * c),
        _linear(rows, c, c, streamed),
    )


def masked_pairs(padded: tuple[int, ...], window: tuple[int, ...], shift: tuple[int, ...]) -> int:
    """The (query, key) pairs of all windows that a shifted window's mask separates: the tokens of
    a window that the roll brought from different parts of the map (Swin's ``-100``). Along each
    axis the last window holds two parts (``side - shift`` and ``shift`` positions), the others
    one; the pairs within one part, summed over windows, multiply across axes."""
    total, together = 1, 1
    for size, side, s in zip(padded, window, shift, strict=True):
        count = size // side
        total *= count * side * side
        together *= (count - 1) * side * side + ((side - s) ** 2 + s**2 if s else side * side)
    return total - together


def window(ins: tuple[tuple[int, ...], ...], attrs: Mapping[str, object], streamed) -> tuple[Part, ...]:
    """``window_attention`` on a (H, W, C) or (T, H, W, C) map: Swin's (version 1 or 2)."""
    from nasdsl.ops.window import CPB_HIDDEN, table_sides, windows_of

    *sizes, c = ins[0]
    heads = attrs["heads"]
    side, shift = windows_of(sizes, attrs)
    padded = tuple(-(-s // w) * w for s, w in zip(sizes, side, strict=True))
    tokens = math.prod(padded)
    n = math.prod(side)
    windows = tokens // n
    d = c // heads
    shifted = sum(1 for s in shift if s)
    v2 = attrs["version"] == 2
    moved = 7 * tokens * c  # windows cut out and joined, q, k, v split, k transposed, heads joined
    moved += 8 * shifted * tokens * c  # the roll there and back: a split and a concatenation per axis
    moved += 2 * tokens * c if padded != tuple(sizes) else 0  # the pad and the crop
    moved += 6 * tokens * c if v2 else 0  # q and k scaled to unit length (version 2)
    parts = [
        _linear(tokens, c, 3 * c, streamed),
        *_attend(windows * heads, n, n, d, 2 + (1 if shifted else 0) + (1 if v2 else 0)),
        _copy(moved),
        _linear(tokens, c, c, streamed),
    ]
    if v2:  # the continuous position bias: a small MLP on the table of offsets
        cells = math.prod(table_sides(attrs))
        parts.append(("linear_seq", cells * (2 * CPB_HIDDEN + CPB_HIDDEN * heads), cells * CPB_HIDDEN, 0))
    if shifted:
        parts.append(("masked", masked_pairs(padded, side, shift) * heads * d, 0, 0))
    return tuple(parts)


def merging(ins: tuple[tuple[int, ...], ...], attrs: Mapping[str, object], streamed) -> tuple[Part, ...]:
    """``patch_merging``: four strided corners joined on the channels, LayerNorm, a projection."""
    *lead, h, w, c = ins[0]
    rows = math.prod(lead) * ((h + 1) // 2) * ((w + 1) // 2)
    return (
        _copy(2 * rows * 4 * c),
        ("norm", rows * 4 * c, 2 * rows * 4 * c, 0),
        _linear(rows, 4 * c, attrs["out"], streamed),
    )


def pooling(ins: tuple[tuple[int, ...], ...], attrs: Mapping[str, object], streamed) -> tuple[Part, ...]:
    """``pooling_attention`` on tokens (L, C): MViT's, q, k and v pooled per head."""
    from nasdsl.ops.multiscale import pooled, pooled_grid

    length, c = ins[0]
    out, heads = attrs["out"], attrs["heads"]
    d = out // heads
    cls = 1 if attrs["class_token"] else 0
    q_grid, kv_grid = pooled_grid(attrs, "q"), pooled_grid(attrs, "k")
    lq, lk = cls + math.prod(q_grid), cls + math.prod(kv_grid)
    cells = length - cls
    moved = 3 * length * out + 2 * lq * out  # q, k, v split; heads joined; the pooled q added
    parts = [_linear(length, c, 3 * out, streamed)]
    for which, grid in (("q", q_grid), ("k", kv_grid), ("v", kv_grid)):
        if not pooled(attrs, which):
            continue
        kernel = attrs["kernel_q"] if which == "q" else attrs["kernel_kv"]
        pooled_cells = math.prod(grid)
        moved += 2 * cells * out + 2 * pooled_cells * out  # the grid cut out and moved, and back
        parts.append(("conv_pool", pooled_cells * out * math.prod(kernel), (cells + pooled_cells) * out, 0))
        parts.append(("norm", (cls + pooled_cells) * out, 2 * (cls + pooled_cells) * out, 0))
    passes = 1
    if attrs["rel_pos"]:  # einsums of q with each axis's table, broadcast, padded and added: 3 passes
        parts.append(("einsum", heads * math.prod(q_grid) * sum(kv_grid) * d, lq * out, 0))
        passes += 3
    parts += [*_attend(heads, lq, lk, d, passes), _copy(moved), _linear(lq, out, out, streamed)]
    return tuple(parts)


#: the ops whose parts this module gives
PARTS = {
    "attention": plain,
    "partition_attention": partition,
    "window_attention": window,
    "patch_merging": merging,
    "pooling_attention": pooling,
}

__all__ = ["PARTS", "Part", "masked_pairs"]
