"""MaxViT's attention within partitions: multi-head self-attention inside each block or grid
partition of a map, with a learned bias for each relative offset between two positions.

A MaxViT layer (Tu et al. 2022, "MaxViT: Multi-Axis Vision Transformer") cuts a (C, H, W) map
into partitions of P x P positions: *block* partitions are P x P windows of neighbouring
positions; *grid* partitions take one position every H/P rows and W/P columns, so that each
sees the whole map sparsely. Both are written in a spec with ``reshape``, ``permute`` and
``transpose`` (tokens ``(G, L, C)``: G partitions of L = P * P positions); this op is the
attention that follows, torchvision's ``RelativePositionalMultiHeadAttention``:

* ``to_qkv``, a linear layer C -> 3C, gives the queries, keys and values; C / ``head_dim`` heads;
* scores ``q k^T`` with the keys scaled by ``C ** -0.5`` (the feature size, as torchvision and
  the reference implementation scale, not the head size), plus, per head, a bias read from
  ``relative_position_bias_table`` (``(2P - 1)^2`` rows, one per relative offset (dy, dx)) at
  the offset between the two positions; softmax over the keys; the weighted sum of the values;
* the heads joined, and ``merge``, a linear layer C -> C.

Its tensors, in torchvision's state_dict order: ``relative_position_bias_table`` (learned),
``relative_position_index`` (an int64 buffer that is not learned: for each pair of positions,
its row of the table, computed from the partition's side as Swin's window attention computes
it: :func:`nasdsl.ops.window.relative_position_index`), ``to_qkv.weight``, ``to_qkv.bias``,
``merge.weight``, ``merge.bias``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from nasdsl.errors import ShapeError
from nasdsl.ir.types import TensorType
from nasdsl.ops.core import MAX_WINDOW, Attr, OpDef, Weight, describe_type, integer, known, register
from nasdsl.ops.window import relative_position_index


def _infer(types: Sequence[TensorType], a: Mapping[str, object]) -> TensorType:
    t = types[0]
    if t.rank < 2 or (t.channel_axis is not None and t.channel_axis != t.rank - 1):
        raise ShapeError(
            f"expected tokens (..., L, C), features last, as the input of partition_attention, got {describe_type(t)}"
        )
    length, channels = t.shape[-2], t.shape[-1]
    size = a["size"]
    if known(length) and length != size * size:
        raise ShapeError(
            f"expected partitions of size x size = {size * size} positions (the second last axis), "
            f"got {describe_type(t)}"
        )
    if known(channels) and channels % a["head_dim"]:
        raise ShapeError(f"expected a head_dim that divides the feature size {channels}, got {a['head_dim']}")
    return t


def _weights(types: Sequence[TensorType], a: Mapping[str, object]) -> tuple[Weight, ...]:
    channels = types[0].shape[-1]
    size = a["size"]
    heads = channels // a["head_dim"]
    offsets = (2 * size - 1) * (2 * size - 1)
    return (
        Weight("relative_position_bias_table", (offsets, heads), init="zeros"),
        Weight("relative_position_index", (size * size, size * size), kind="buffer", init="computed", dtype="int64"),
        Weight(
            "to_qkv.weight", (3 * channels, channels), init="torch_default", parts=3, layer="linear"
        ),  # query, key, value
        Weight("to_qkv.bias", (3 * channels,), init="torch_default", parts=3, layer="linear"),
        Weight("merge.weight", (channels, channels), init="torch_default", layer="linear"),
        Weight("merge.bias", (channels,), init="torch_default", layer="linear"),
    )


def _computed(types: Sequence[TensorType], a: Mapping[str, object]) -> dict[str, object]:
    return {"relative_position_index": relative_position_index((a["size"], a["size"]))}


def _macs(types: Sequence[TensorType], a: Mapping[str, object], out: TensorType) -> int:
    shape = types[0].shape
    partitions = math.prod(shape[:-2])
    length, channels = shape[-2], shape[-1]
    projections = length * channels * 3 * channels + length * channels * channels
    products = 2 * length * length * channels  # q k^T and the weighted sum of v, over every head
    return partitions * (projections + products)


register(
    OpDef(
        "partition_attention",
        "multi-head self-attention within each of G partitions of size x size positions, tokens (G, L, C), "
        "with a learned relative-position bias (MaxViT's block and grid attention; its parameters: "
        "relative_position_bias_table, to_qkv, merge, and the buffer relative_position_index)",
        (
            Attr("head_dim", integer(), role="count", doc="features per head; it divides the feature size"),
            Attr("size", integer(1, MAX_WINDOW), doc="the side of a partition: L = size * size positions"),
        ),
        _infer,
        _weights,
        _macs,
        layer=True,
        init_params=("relative_position_bias_table", "to_qkv.weight", "to_qkv.bias", "merge.weight", "merge.bias"),
        fan_params=("to_qkv.weight", "merge.weight"),
        fresh=True,
        computed=_computed,
    ),
)
