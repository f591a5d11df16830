"""Calibrating the latency model on this machine: random networks measured, coefficients fitted.

The calibration set is made here, not taken from the specs the model is judged on: random
networks (:func:`random_spec`, seeded) of four families (:data:`FAMILIES`). Most are built from
the blocks CNNs are made of (plain convolution stacks; Inception modules; ResNet bottlenecks,
plain and grouped with ResNeXt's and RegNet's group widths; MobileNet inverted residuals with
and without squeeze-and-excitation; ShuffleNet-style channel splits and shuffles; ConvNeXt
blocks; DenseNet layers; LRN; pools; classifier heads of one to three linear layers), with
widths (some not a multiple of 8), kernels, strides, activations and resolutions drawn at
random; the others are MobileNetV2/V3-, MnasNet- and EfficientNet-like stacks of inverted
residuals at 96-224 px, video networks of 3-D convolutions, and vision transformers. Each is
compiled, exported to ONNX with BatchNorm folded, opened in the engine (batch 1,
one thread) and timed (:func:`measure_ms`) in :data:`PASSES` passes, the smallest time kept;
the per-group features of its graph
(:func:`nasdsl.bench.latency.row`) and its time make one equation, and non-negative least
squares on the relative errors gives the coefficients.
"""

from __future__ import annotations

import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable

import numpy as np

from nasdsl import ir
from nasdsl.bench import latency
from nasdsl.bench.latency import LatencyModel

#: random networks measured by a calibration (two to three minutes on a 2-core Xeon)
NETWORKS = 180
#: the kinds of random networks and their shares: made of blocks of every kind (:func:`_block`),
#: MobileNet-like stacks (:func:`_mobile`), 3-D convolutional video networks (:func:`_video`),
#: vision transformers (:func:`_transformer`)
FAMILIES = {"blocks": 0.55, "mobile": 0.27, "video": 0.09, "transformer": 0.09}
#: microbenchmarks measured with them (:func:`micro_spec`)
MICRO = 96
#: windowed, pooling and partition transformers measured with them (:func:`windowed_spec`)
WINDOWED = 36
#: random networks above this many multiply-adds are drawn again (they would take long to time)
MAX_MACS = 3 * 10**9
#: a model is timed for at least this long in each pass
MIN_SECONDS = 0.15
#: passes over the networks (the smallest time of each is kept: other processes only add time)
PASSES = 2

ACTIVATIONS = ("relu", "relu", "relu", "relu6", "silu", "hardswish")


def _block(name: str, params: str, attention: str, hidden: str) -> str:
    """A pre-norm transformer block template for :data:`HEADER` (its braces doubled: the header is
    formatted): LayerNorm, ``attention``, a residual sum, LayerNorm, a GELU MLP of ``hidden``
    features, a residual sum."""
    text = (
        f"  {name}:\n    params: [{params}]\n    body:\n      ln_1: {{op: layer_norm, dim: last}}\n"
        f"      attention: {attention}\n      attended: {{add: [{{ref: attention}}, {{ref: in}}]}}\n"
        f"      ln_2: {{op: layer_norm, dim: last}}\n      fc1: {{op: linear, out: {hidden}, dim: last}}\n"
        "      act: gelu\n      fc2: {op: linear, out: dim, dim: last}\n"
        "      out: {add: [{ref: attended}, {ref: fc2}]}\n"
    )
    return text.replace("{", "{{").replace("}", "}}")


HEADER = (
    """\
nasdsl: 1
name: Calibration{index}
input: {{name: x, shape: [3, {shape}]}}
templates:
  SE:
    params: [channels, squeeze]
    body:
      pool: global_avg_pool
      fc1: {{op: conv2d, out: squeeze, kernel: 1}}
      act: relu
      fc2: {{op: conv2d, out: channels, kernel: 1}}
      gate: hardsigmoid
      scale: {{mul: [{{ref: gate}}, {{ref: in}}]}}
  SESigmoid:
    params: [channels, squeeze]
    body:
      pool: global_avg_pool
      fc1: {{op: conv2d, out: squeeze, kernel: 1}}
      act: silu
      fc2: {{op: conv2d, out: channels, kernel: 1}}
      gate: sigmoid
      scale: {{mul: [{{ref: gate}}, {{ref: in}}]}}
  Split:
    params: [half]
    body:
      a: {{op: slice, stop: half}}
      b: [{{from: in, op: slice, start: half}}, {{op: conv2d, out: half, kernel: 1}}, relu,
          {{op: conv2d, out: half, kernel: 3, padding: 1, groups: half}}, {{op: conv2d, out: half, kernel: 1}}, relu]
      join: {{concat: [{{ref: a}}, {{ref: b}}]}}
      shuffle: {{op: channel_shuffle, groups: 2}}
  ConvNeXt:
    params: [dim, mlp]
    body:
      block:
        - {{op: conv2d, out: dim, kernel: 7, padding: 3, groups: dim}}
        - {{op: permute, dims: [1, 2, 0]}}
        - {{op: layer_norm, dim: last}}
        - {{op: linear, out: mlp, dim: last}}
        - gelu
        - {{op: linear, out: dim, dim: last}}
        - {{op: permute, dims: [2, 0, 1]}}
      scale: layer_scale
      residual: {{add: [{{ref: scale}}, {{ref: in}}]}}
"""
    + "".join(
        _block(name, params, attention, hidden)
        for name, params, attention, hidden in (
            ("Encoder", "heads, dim, mlp", "{op: attention, heads: heads}", "mlp"),
            (
                "SwinBlock",
                "heads, dim, mlp, wt, w, st, s",
                "{op: window_attention, heads: heads, window: [wt, w, w], shift: [st, s, s], fit: true}",
                "mlp",
            ),
            # a window attention's version is its class's code, not an argument: a template per version
            (
                "SwinBlock2D",
                "heads, dim, mlp, w, s",
                "{op: window_attention, heads: heads, window: [w, w], shift: s}",
                "mlp",
            ),
            (
                "SwinBlock2DV2",
                "heads, dim, mlp, w, s",
                "{op: window_attention, heads: heads, window: [w, w], shift: s, version: 2}",
                "mlp",
            ),
            (
                "PoolingBlock",
                "heads, dim, t, h, w, kv, rel, residual",
                "{op: pooling_attention, heads: heads, out: dim, grid: [t, h, w], kernel_q: 3, kernel_kv: 3,\n"
                "                  stride_kv: [1, kv, kv], rel_pos: rel, residual_pool: residual}",
                '"4 * dim"',
            ),
        )
    )
    + """\
  PartitionBlock:
    params: [channels, size, p, grid]
    body:
      split: {{op: reshape, shape: [channels, "size // p", p, "size // p", p]}}
      tiles: {{op: permute, dims: [1, 3, 2, 4, 0]}}
      cut: {{op: reshape, shape: ["(size // p) * (size // p)", "p * p", channels], axes: LLC}}
      swap: {{op: transpose, axis0: 0, axis1: 1, when: grid}}
      tokens: identity
      ln_1: {{op: layer_norm, dim: last}}
      attention: {{op: partition_attention, head_dim: 32, size: "size // p if grid else p"}}
      attended: {{add: [{{ref: attention}}, {{ref: tokens}}]}}
      ln_2: {{op: layer_norm, dim: last}}
      fc1: {{op: linear, out: "4 * channels", dim: last}}
      act: gelu
      fc2: {{op: linear, out: channels, dim: last}}
      mixed: {{add: [{{ref: attended}}, {{ref: fc2}}]}}
      unswap: {{op: transpose, axis0: 0, axis1: 1, when: grid}}
      grid_back: {{op: reshape, shape: ["size // p", "size // p", p, p, channels]}}
      untiles: {{op: permute, dims: [4, 0, 2, 1, 3]}}
      map: {{op: reshape, shape: [channels, size, size], axes: CHW}}
model:
"""
)
#: torchvision's initialisation of its transformers' linear layers (the windowed family's): small
#: weights keep the attention scores small, as in the real networks (a shifted window's masked
#: scores then come out subnormal, as there: see nasdsl.bench.attention)
WINDOWED_INIT = """\
init:
  linear: {weight: {trunc_normal: {std: 0.02}}, bias: zeros}
  partition_attention: {to_qkv.weight: {normal: {std: 0.02}}, merge.weight: {normal: {std: 0.02}}}
"""


class _Net:
    """The state of a random network being written: its lines, channels and map size."""

    def __init__(self, rng: np.random.Generator, channels: int, size: int):
        self.rng, self.c, self.size, self.lines, self.n = rng, channels, size, [], 0

    def width(self, lo: int = 8, hi: int = 512) -> int:
        w = int(math.exp(self.rng.uniform(math.log(lo), math.log(hi))))
        return max(1, w if self.rng.random() < 0.2 else max(8, w // 8 * 8))

    def act(self) -> str:
        return str(self.rng.choice(ACTIVATIONS))

    def conv(
        self, out: int, k: int = 1, s: int = 1, g: int = 1, bn: bool = True, act: str | None = "relu"
    ) -> list[str]:
        bias = str(not bn).lower()
        items = [f"{{op: conv2d, out: {out}, kernel: {k}, stride: {s}, padding: {k // 2}, groups: {g}, bias: {bias}}}"]
        if bn:
            items.append("batch_norm")
        if act:
            items.append(act)
        return items

    def entry(self, text: str) -> None:
        self.lines.append(f"  b{self.n}: {text}")
        self.n += 1

    def seq(self, items: list[str]) -> str:
        return "[" + ", ".join(items) + "]"

    def stride(self) -> int:
        return 2 if self.size >= 8 and self.rng.random() < 0.35 else 1

    def shrink(self, s: int, k: int) -> None:
        self.size = (self.size + 2 * (k // 2) - k) // s + 1


def _block(net: _Net) -> None:
    rng = net.rng
    kinds = {"plain": 0.18, "inception": 0.13, "bottleneck": 0.13, "inverted": 0.15, "separable": 0.07, "grouped": 0.07,
             "pool": 0.07, "split": 0.05, "convnext": 0.04, "lrn": 0.04, "dense": 0.07}  # fmt: skip
    kind = rng.choice(list(kinds), p=list(kinds.values()))
    c = net.c
    if kind == "plain":
        k, s, out = int(rng.choice([1, 3, 3, 5])), net.stride(), net.width()
        net.entry(net.seq(net.conv(out, k, s, act=net.act())))
        net.shrink(s, k)
        net.c = out
    elif kind == "inception":
        a, r3, b3, r5, b5, p = (net.width(8, 256) for _ in range(6))
        branches = {
            "b1": net.conv(a, 1),
            "b2": net.conv(r3, 1) + net.conv(b3, 3),
            "b3": net.conv(r5, 1) + net.conv(b5, 5 if rng.random() < 0.5 else 3),
            "b4": ["{op: max_pool, kernel: 3, stride: 1, padding: 1}", *net.conv(p, 1)],
        }
        net.entry("{concat: {" + ", ".join(f"{k}: {net.seq(v)}" for k, v in branches.items()) + "}}")
        net.c = a + b3 + b5 + p
    elif kind in ("bottleneck", "grouped"):
        mid, s = net.width(8, 256), net.stride()
        if kind == "grouped":  # ResNeXt's and RegNet's group widths
            per = int(rng.choice([4, 8, 16, 24, 32, 64]))
            mid = max(2 * per, mid // per * per)
            g = mid // per
        else:
            g = 1
        out = c if s == 1 and rng.random() < 0.6 else net.width(16, 1024)
        main = net.conv(mid, 1) + net.conv(mid, 3, s, g) + net.conv(out, 1, act=None)
        short = "identity" if s == 1 and out == c else net.seq(net.conv(out, 1, s, act=None))
        net.entry(f"[{{add: {{main: {net.seq(main)}, shortcut: {short}}}}}, relu]")
        net.shrink(s, 3)
        net.c = out
    elif kind == "inverted":
        e, s, k = int(rng.choice([1, 3, 4, 6])), net.stride(), int(rng.choice([3, 3, 5, 7]))
        out = c if s == 1 and rng.random() < 0.6 else net.width(8, 320)
        _inverted(net, e, s, k, out, net.act(), rng.random() < 0.35)
    elif kind == "separable":
        s, out = net.stride(), net.width()
        net.entry(net.seq(net.conv(c, 3, s, c, act="relu6") + net.conv(out, 1, act="relu6")))
        net.shrink(s, 3)
        net.c = out
    elif kind == "pool":
        if net.size < 4:
            return
        op = rng.choice(["max_pool", "avg_pool"])
        k = int(rng.choice([2, 3]))
        net.entry(f"{{op: {op}, kernel: {k}, stride: 2}}")
        net.size = (net.size - k) // 2 + 1
    elif kind == "split":
        if c % 2 or c < 4:
            return
        net.entry(f"{{use: Split, args: [{c // 2}]}}")
    elif kind == "convnext":
        net.entry(f"{{use: ConvNeXt, args: [{c}, {c * int(rng.choice([1, 2, 4]))}]}}")
    elif kind == "lrn":
        net.entry("{op: lrn, size: 5}")
    elif kind == "dense":  # DenseNet's pre-activation layers: BatchNorm that follows a concatenation
        growth = net.width(8, 48)
        for _ in range(int(rng.integers(1, 4))):
            layer = ["batch_norm", "relu", *net.conv(4 * growth, 1), *net.conv(growth, 3, bn=False, act=None)]
            net.entry(f"{{concat: {{prev: identity, new: {net.seq(layer)}}}}}")
            net.c += growth


def _inverted(net: _Net, e: int, s: int, k: int, out: int, act: str, se: bool, gate: str = "SE") -> None:
    """A MobileNetV2 inverted residual: expand ``e`` times (1x1), filter each channel (k x k,
    stride ``s``), squeeze-and-excite (``gate``: the SE template) when ``se``, project to ``out``."""
    c = net.c
    hidden = c * e
    main = (net.conv(hidden, 1, act=act) if e > 1 else []) + net.conv(hidden, k, s, hidden, act=act)
    if se:
        main.append(f"{{use: {gate}, args: [{hidden}, {max(8, hidden // 4 // 8 * 8)}]}}")
    main += net.conv(out, 1, act=None)
    if s == 1 and out == c:
        net.entry(f"{{add: {{main: {net.seq(main)}, shortcut: identity}}}}")
    else:
        net.entry(net.seq(main))
    net.shrink(s, k)
    net.c = out


def _mobile(net: _Net) -> None:
    """The body of a MobileNetV2/V3-, MnasNet- or EfficientNet-like network: MobileNetV2's stages
    (widths 16 to 320 times a width multiplier of 0.35-1.4, rounded to multiples of 8; strides
    1, 2, 2, 2, 1, 2, 1) of one to four inverted residuals of one activation, expansion and
    kernel each, with or without squeeze-and-excitation (a hard-sigmoid or a sigmoid gate), then
    a wide 1x1 convolution."""
    rng = net.rng
    act = str(rng.choice(["relu6", "relu6", "hardswish", "silu", "relu"]))
    se, gate = float(rng.choice([0.0, 0.0, 0.5, 1.0])), str(rng.choice(["SE", "SESigmoid"]))
    scale = float(rng.uniform(0.35, 1.4))
    for stage, (width, s) in enumerate(zip((16, 24, 32, 64, 96, 160, 320), (1, 2, 2, 2, 1, 2, 1), strict=True)):
        out = max(8, int(round(width * scale / 8)) * 8)
        e, k = int(rng.choice([3, 4, 6] if stage else [1])), int(rng.choice([3, 3, 5]))
        s = s if net.size >= 4 else 1
        for j in range(1 if stage in (0, 6) else int(rng.integers(1, 5))):
            _inverted(net, e, s if j == 0 else 1, k, out, act, rng.random() < se, gate)
    wide = max(8, int(round(int(rng.choice([960, 1280])) * max(1.0, scale) / 8)) * 8)
    net.entry(net.seq(net.conv(wide, 1, act=act)))
    net.c = wide


def _video(net: _Net, frames: int) -> None:
    """An R3D-, R(2+1)D- or S3D-like network on a clip: 3-D convolutions (full, split into a
    spatial and a temporal one, or a bottleneck of pointwise ones around either), residual sums,
    3-D max pools, a global 3-D pool and a linear head."""
    rng = net.rng
    stem = net.width(16, 64)
    net.entry(f"[{{op: conv3d, out: {stem}, kernel: [3, 7, 7], stride: [1, 2, 2], padding: [1, 3, 3], bias: false}}, "
              "batch_norm, relu]")  # fmt: skip
    net.shrink(2, 7)
    c = stem
    for _ in range(int(rng.integers(2, 6))):
        kind = rng.choice(["full", "split", "bottleneck", "pool"], p=[0.35, 0.25, 0.25, 0.15])
        if kind == "pool" and net.size >= 4 and frames >= 2:
            net.entry("{op: max_pool3d, kernel: 3, stride: 2, padding: 1}")
            net.size, frames = (net.size - 1) // 2 + 1, (frames - 1) // 2 + 1
            continue
        out = c if rng.random() < 0.5 else min(256, net.width(16, 256))
        if kind == "bottleneck":  # S3D's and the ResNet-3D's: pointwise convolutions around a filter
            mid, k = net.width(16, 128), str(rng.choice(["3", "[1, 3, 3]", "[3, 1, 1]"]))
            pad = {"3": "1", "[1, 3, 3]": "[0, 1, 1]", "[3, 1, 1]": "[1, 0, 0]"}[k]
            conv = [f"{{op: conv3d, out: {mid}, kernel: 1, bias: false}}", "batch_norm", "relu",
                    f"{{op: conv3d, out: {mid}, kernel: {k}, padding: {pad}, bias: false}}", "batch_norm", "relu",
                    f"{{op: conv3d, out: {out}, kernel: 1, bias: false}}", "batch_norm"]  # fmt: skip
            net.entry(f"[{{add: {{main: {net.seq(conv)}, shortcut: identity}}}}, relu]" if out == c else
                      net.seq([*conv, "relu"]))  # fmt: skip
            c = out
            continue
        split = kind == "split"  # R(2+1)D's: a spatial convolution, then a temporal one
        first, second, mid = ("[1, 3, 3]", "[3, 1, 1]", net.width(16, 256)) if split else ("3", "3", out)
        pads = ("[0, 1, 1]", "[1, 0, 0]") if split else ("1", "1")
        conv = [
            f"{{op: conv3d, out: {mid}, kernel: {first}, padding: {pads[0]}, bias: false}}",
            "batch_norm",
            "relu",
            f"{{op: conv3d, out: {out}, kernel: {second}, padding: {pads[1]}, bias: false}}",
            "batch_norm",
        ]
        if out == c:
            net.entry(f"[{{add: {{main: {net.seq(conv)}, shortcut: identity}}}}, relu]")
        else:
            net.entry(net.seq([*conv, "relu"]))
        c = out
    net.entry(
        f"[{{op: adaptive_avg_pool3d, size: [1, 1, 1]}}, flatten, {{op: linear, out: {int(rng.choice([10, 400]))}}}]"
    )


def _transformer(net: _Net) -> None:
    """A ViT-like network: patches embedded by a strided convolution, pre-norm encoder blocks
    (multi-head self-attention and an MLP with GELU, each added to its input), a final LayerNorm
    and the first token's features to a linear head."""
    rng = net.rng
    patch = int(rng.choice([p for p in (4, 8, 16, 32) if net.size // p >= 2]))
    heads = int(rng.choice([1, 2, 4, 8, 12]))
    dim = heads * int(rng.choice([16, 32, 64]))
    mlp = dim * int(rng.choice([2, 4]))
    net.entry(f"[{{op: conv2d, out: {dim}, kernel: {patch}, stride: {patch}}}, {{op: flatten, start: 1}}, "
              "{op: permute, dims: [1, 0]}]")  # fmt: skip
    for _ in range(int(rng.integers(1, 5))):
        net.entry(f"{{use: Encoder, args: [{heads}, {dim}, {mlp}]}}")
    classes = int(rng.choice([10, 1000]))
    net.entry(f"[{{op: layer_norm, dim: last}}, {{op: select, axis: 0, index: 0}}, {{op: linear, out: {classes}}}]")


def _windowed(net: _Net, frames: int) -> str:
    """A small windowed, pooling or partition transformer (Swin's, Video Swin's, MViT's and MaxViT's
    attention) on a (3, size, size) image or a clip of ``frames``; returns the input's shape."""
    rng = net.rng
    kind = str(rng.choice(["swin", "swin", "swin3d", "mvit", "maxvit"]))
    heads = int(rng.choice([1, 2, 3, 4]))
    dim, size = 32 * heads, net.size
    # Swin's maps are whole windows at every stage (Swin-T's 56, 28, 14, 7): a padded map, with the
    # zero biases of a network never trained, has padded tokens whose v is zero, and queries that
    # see only those and masked keys come out subnormal, slowing the projection after them a
    # hundredfold (a trained network's biases are not zero)
    if kind == "swin":
        patch, window, version = int(rng.choice([2, 4])), int(rng.choice([4, 7, 7, 8])), int(rng.choice([1, 1, 2]))
        multiple = int(rng.choice([2, 4, 8]))
        size = patch * window * multiple
        net.entry(f"[{{op: conv2d, out: {dim}, kernel: {patch}, stride: {patch}}}, {{op: permute, dims: [1, 2, 0]}}, "
                  "{op: layer_norm, dim: last}]")  # fmt: skip
        for stage in range(min(int(rng.integers(1, 4)), multiple.bit_length())):
            if stage:
                heads, dim = 2 * heads, 2 * dim
                net.entry(f"{{op: patch_merging, out: {dim}}}")
            for shift in [0, window // 2] * int(rng.integers(1, 3)):
                block = "SwinBlock2D" if version == 1 else "SwinBlock2DV2"  # a version is a class's code
                net.entry(f"{{use: {block}, args: [{heads}, {dim}, {4 * dim}, {window}, {shift}]}}")
        net.entry("[{op: layer_norm, dim: last}, {op: permute, dims: [2, 0, 1]}, global_avg_pool, flatten, "
                  "{op: linear, out: 10}]")  # fmt: skip
        return f"{size}, {size}"
    if kind == "swin3d":
        window, wt = int(rng.choice([4, 7])), int(rng.choice([2, 4, 8]))
        size = 4 * window * int(rng.choice([1, 2, 4]))
        net.entry(f"[{{op: conv3d, out: {dim}, kernel: [2, 4, 4], stride: [2, 4, 4]}}, "
                  "{op: permute, dims: [1, 2, 3, 0]}, {op: layer_norm, dim: last}]")  # fmt: skip
        for st, s in [(0, 0), (wt // 2, window // 2)] * int(rng.integers(1, 3)):
            net.entry(f"{{use: SwinBlock, args: [{heads}, {dim}, {4 * dim}, {wt}, {window}, {st}, {s}]}}")
        net.entry("[{op: layer_norm, dim: last}, {op: permute, dims: [3, 0, 1, 2]}, "
                  "{op: adaptive_avg_pool3d, size: [1, 1, 1]}, flatten, {op: linear, out: 10}]")  # fmt: skip
        return f"{frames}, {size}, {size}"
    if kind == "mvit":
        t, side = (frames + 1) // 2, size // 4
        kv = int(rng.choice([1, 2, 4, 8]))
        kv = kv if side % kv == 0 else 1
        rel, residual = str(rng.random() < 0.7).lower(), str(rng.random() < 0.7).lower()
        net.entry(f"[{{op: conv3d, out: {dim}, kernel: [3, 7, 7], stride: [2, 4, 4], padding: [1, 3, 3]}}, "
                  "positional_encoding]")  # fmt: skip
        for _ in range(int(rng.integers(1, 4))):
            net.entry(f"{{use: PoolingBlock, args: [{heads}, {dim}, {t}, {side}, {side}, {kv}, {rel}, {residual}]}}")
        net.entry("[{op: layer_norm, dim: last}, {op: select, axis: 0, index: 0}, {op: linear, out: 10}]")
        return f"{frames}, {size}, {size}"
    # MaxViT: block and grid partitions of a (C, size, size) map
    p = int(rng.choice([4, 7, 8]))
    side = size // 4 // p * p
    side = side if side >= p else p
    net.entry(f"[{{op: conv2d, out: {dim}, kernel: 4, stride: 4}}, {{op: adaptive_avg_pool, size: {side}}}]")
    for _ in range(int(rng.integers(1, 3))):
        for grid in ("false", "true"):
            net.entry(f"{{use: PartitionBlock, args: [{dim}, {side}, {side // p if grid == 'true' else p}, {grid}]}}")
    net.entry("[global_avg_pool, flatten, {op: linear, out: 10}]")
    return f"{size}, {size}"


def random_spec(index: int, seed: int = 0) -> str:
    """The YAML text of random network ``index`` of the calibration set."""
    rng = np.random.default_rng([seed, index])
    family = rng.choice(list(FAMILIES), p=list(FAMILIES.values()))
    if family == "video":
        frames, size = int(rng.choice([4, 8, 16])), int(rng.choice([32, 56, 112]))
        net = _Net(rng, 3, size)
        _video(net, frames)
        return HEADER.format(index=index, shape=f"{frames}, {size}, {size}") + "\n".join(net.lines) + "\n"
    size = int(rng.choice([96, 128, 160, 192, 224] if family != "blocks" else [32, 64, 96, 128, 160, 192, 224]))
    net = _Net(rng, 3, size)
    if family == "transformer":
        _transformer(net)
        return HEADER.format(index=index, shape=f"{size}, {size}") + "\n".join(net.lines) + "\n"
    stem, k = net.width(16, 64), int(rng.choice([3, 3, 7]))
    s = 2 if size >= 64 else 1
    net.entry(net.seq(net.conv(stem, k, s, act=net.act())))
    net.shrink(s, k)
    net.c = stem
    if family == "mobile":
        _mobile(net)
    else:
        for _ in range(int(rng.integers(2, 12))):
            _block(net)
            if net.size < 2:
                break
    head = rng.random()
    if head < 0.75:
        classes = int(rng.choice([10, 100, 1000]))
        net.entry(f"[global_avg_pool, flatten, {{op: linear, out: {classes}}}]")
    else:
        hidden, pooled = net.width(64, 4096), int(rng.choice([1, 2, 4, 6]))
        net.entry(f"[{{op: adaptive_avg_pool, size: {pooled}}}, flatten, {{op: linear, out: {hidden}}}, relu, "
                  f"{{op: linear, out: {net.width(64, 1024)}}}, relu, {{op: linear, out: 1000}}]")  # fmt: skip
    return HEADER.format(index=index, shape=f"{size}, {size}") + "\n".join(net.lines) + "\n"


def windowed_spec(index: int, seed: int = 0) -> str:
    """The YAML text of windowed transformer ``index`` of the calibration set (:func:`_windowed`)."""
    rng = np.random.default_rng([seed, 2 << 20, index])
    net = _Net(rng, 3, int(rng.choice([56, 64, 112, 128, 160, 224])))
    shape = _windowed(net, int(rng.choice([4, 8, 16])))
    header = HEADER.format(index=f"Windowed{index}", shape=shape)
    return header.replace("templates:\n", WINDOWED_INIT + "templates:\n", 1) + "\n".join(net.lines) + "\n"


#: the microbenchmarks: (kind, channels, map sizes); each is a stack of four blocks of one kind
MICRO_KINDS = (
    "conv1x1", "conv3x3", "dw3", "dw5", "dw7", "inverted", "linear", "pool", "se", "concat", "concat_odd", "resize"
)  # fmt: skip


def micro_spec(index: int, seed: int = 0) -> str:
    """The YAML text of microbenchmark ``index``: four identical blocks of one kind, at one width
    and map size (drawn with ``seed``), so that the kind's own cost dominates the model's."""
    rng = np.random.default_rng([seed, 1 << 20, index])
    kind = MICRO_KINDS[index % len(MICRO_KINDS)]
    c = int(rng.choice([16, 24, 32, 48, 64, 96, 144, 192, 256, 384, 576, 960]))
    size = int(rng.choice([7, 14, 28, 56, 112]))
    while c * c * size * size > 2 * 10**8 and size > 7:  # keep it to a few milliseconds
        size //= 2
    while kind == "resize" and c * size * size > 2 * 10**5 and size > 7:
        size //= 2
    act = str(rng.choice(["relu", "relu6"]))
    block = {
        "conv1x1": f"[{{op: conv2d, out: {c}, kernel: 1, bias: false}}, batch_norm, {act}]",
        "conv3x3": f"[{{op: conv2d, out: {c}, kernel: 3, padding: 1, bias: false}}, batch_norm, {act}]",
        "inverted": f"{{add: {{shortcut: identity, main: [{{op: conv2d, out: {4 * c}, kernel: 1, bias: false}}, "
        f"batch_norm, {act}, {{op: conv2d, out: {4 * c}, kernel: 3, padding: 1, groups: {4 * c}, bias: false}}, "
        f"batch_norm, {act}, {{op: conv2d, out: {c}, kernel: 1, bias: false}}, batch_norm]}}}}",
        "pool": "{op: max_pool, kernel: 3, stride: 1, padding: 1}",
        "se": f"{{use: SE, args: [{c}, {max(8, c // 4)}]}}",
        "resize": "[{op: interpolate, scale: 2, mode: bilinear}, {op: max_pool, kernel: 2, stride: 2}]",
    }
    # two 1x1 branches joined: halves of whole 16-channel blocks (ONNX Runtime's blocked
    # concatenation), or of 8 more (reordered out of the blocked layout and back)
    for name, half in (("concat", max(16, c // 32 * 16)), ("concat_odd", 8 * (2 * (c // 32) + 1))):
        branch = f"[{{op: conv2d, out: {half}, kernel: 1, bias: false}}, batch_norm, {act}]"
        block[name] = f"{{concat: {{a: {branch}, b: {branch}}}}}"
    for k in (3, 5, 7):
        block[f"dw{k}"] = (
            f"[{{op: conv2d, out: {c}, kernel: {k}, padding: {k // 2}, groups: {c}, bias: false}}, batch_norm, {act}]"
        )
    lines = [f"  b0: [{{op: conv2d, out: {c}, kernel: 1}}, relu]"]
    if kind == "linear":
        lines += ["  b1: [global_avg_pool, flatten]"]
        width = int(rng.choice([256, 512, 1024, 2048, 4096]))
        lines += [f"  l{i}: [{{op: linear, out: {width}}}, relu]" for i in range(4)]
    else:
        lines += [f"  m{i}: {block[kind]}" for i in range(4)]
    return (
        HEADER.format(index=f"Micro{index}", shape=f"{size}, {size}").replace("shape: [3,", f"shape: [{c},")
        + "\n".join(lines)
        + "\n"
    )


def compile_text(text: str):
    """A spec's text compiled (through a temporary file: the loader reads files)."""
    import nasdsl

    with tempfile.TemporaryDirectory(prefix="nasdsl-cal-") as folder:
        path = os.path.join(folder, "spec.yaml")
        with open(path, "w") as f:
            f.write(text)
        return nasdsl.compile_spec(path)


def measure_ms(graph, engine: str, threads: int = 1, min_seconds: float | None = None) -> float:
    """Milliseconds of one sample (batch 1) through ``graph``'s ONNX export in ``engine``:
    after two warm-up runs, runs until ``min_seconds`` have passed (at least 5); the fastest
    run. With one thread the time is the process's CPU time, not the wall clock: on a machine
    other processes share, time spent waiting for a core is not the model's, and interference
    from them (caches emptied, memory bandwidth taken) only ever adds time, hence the fastest run."""
    from nasdsl.backends.onnx import export_onnx_bytes
    from nasdsl.bench.engines import open_onnx

    runner = open_onnx(export_onnx_bytes(graph, optimize="onnxruntime"), engine, "fp32", threads)
    g = graph.graph if hasattr(graph, "graph") else graph
    shape = ir.node(g, ir.info(g).input).shape
    x = runner.feed(np.random.default_rng(0).standard_normal((1, *shape), dtype=np.float32))
    runner.run(x)
    runner.run(x)
    min_seconds = MIN_SECONDS if min_seconds is None else min_seconds
    clock = time.process_time if threads == 1 else time.perf_counter
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < 5 or time.perf_counter() - started < min_seconds:
        t = clock()
        runner.run(x)
        times.append(clock() - t)
    return min(times) * 1e3


def fit(rows: list[list[float]], times: list[float]) -> dict[str, float]:
    """Non-negative coefficients minimising the squared relative errors of ``rows`` against
    ``times`` (scipy's NNLS; columns scaled to unit norm first, for conditioning)."""
    try:
        from scipy.optimize import nnls
    except ImportError:
        raise latency.LatencyError("calibrating needs scipy: pip install 'nasdsl[bench]'") from None

    a = np.asarray(rows, dtype=np.float64)
    t = np.asarray(times, dtype=np.float64)
    a = a / t[:, None]
    scale = np.linalg.norm(a, axis=0)
    scale[scale == 0] = 1.0
    x, _ = nnls(a / scale, np.ones(len(t)), maxiter=50 * a.shape[1])
    return dict(zip(latency.columns(), (x / scale).tolist(), strict=True))


def networks_for(count: int | None = None, seed: int = 0) -> list:
    """The calibration set: ``count`` (default :data:`NETWORKS`) random networks, :data:`MICRO`
    microbenchmarks (:func:`micro_spec`) and :data:`WINDOWED` windowed transformers
    (:func:`windowed_spec`; a fifth of ``count`` each when it is given), compiled; networks above
    :data:`MAX_MACS` are drawn again."""
    micro = MICRO if count is None else count // 5
    windowed = WINDOWED if count is None else count // 5
    count = NETWORKS if count is None else count
    return (
        _drawn(random_spec, count, seed)
        + [compile_text(micro_spec(i, seed)) for i in range(micro)]
        + _drawn(windowed_spec, windowed, seed)
    )


def _drawn(spec: Callable[[int, int], str], count: int, seed: int) -> list:
    """The first ``count`` networks of ``spec`` (by index) at most :data:`MAX_MACS`, compiled."""
    nets, index = [], 0
    while len(nets) < count:
        net = compile_text(spec(index, seed))
        index += 1
        if net.totals()["macs"] <= MAX_MACS:
            nets.append(net)
    return nets


def fit_model(engine: str, nets: list, times: list[float], threads: int = 1) -> LatencyModel:
    """The latency model fitted to ``nets`` measured at ``times`` (ms), with how well it fits them."""
    from nasdsl.bench.hardware import machine

    rows = [latency.row(latency._nodes(net.graph)) for net in nets]
    coefficients = fit(rows, times)
    model = LatencyModel(engine, latency.engine_version(engine), machine().key(), threads, coefficients)
    errors = [abs(p / t - 1) for p, t in zip(_predict_rows(model, rows), times, strict=True)]
    summary = {
        "networks": len(nets),
        "within_10pct": sum(e <= 0.1 for e in errors) / len(errors),
        "median_error": statistics.median(errors),
    }
    return LatencyModel(model.engine, model.version, model.machine, threads, coefficients, summary)


def calibrate(
    engine: str, *, threads: int = 1, networks: int | None = None, seed: int = 0, progress=None
) -> LatencyModel:
    """Measure ``networks`` (default :data:`NETWORKS`) random networks in ``engine`` and fit a latency model."""
    nets = networks_for(networks, seed)
    times = [math.inf] * len(nets)
    for k in range(PASSES):  # in alternating order; the smallest of each network's times
        order = range(len(nets)) if k % 2 == 0 else reversed(range(len(nets)))
        for step, i in enumerate(order):
            if progress is not None:
                progress(k * len(nets) + step, PASSES * len(nets))
            times[i] = min(times[i], measure_ms(nets[i], engine, threads))
    return fit_model(engine, nets, times, threads)


def _predict_rows(model: LatencyModel, rows: list[list[float]]) -> list[float]:
    c = np.array([model.coefficients[k] for k in latency.columns()])
    return (np.asarray(rows) @ c).tolist()


def load_or_calibrate(engine: str, *, threads: int = 1, force: bool = False, progress=None) -> LatencyModel:
    """The cached model, or a new calibration (cached) when there is none or ``force``."""
    from nasdsl.bench.engines import EngineError, available, missing_message

    if not available(engine):
        raise EngineError(missing_message(engine))
    try:
        model = None if force else latency.cached(engine, threads)
    except latency.LatencyError as e:  # a corrupt file where the calibration goes: measured again, said so
        model = None
        if progress is not None:
            progress.write(f"{e.format()}: measuring again\n")
    if model is not None:
        return model
    latency.check_writable(engine, threads)
    report: Callable[[int, int], None] | None = None
    if progress is not None:

        def report(i: int, n: int) -> None:
            progress.write(f"\rcalibrating {engine}: measurement {i + 1}/{n}")
            progress.flush()

    model = calibrate(engine, threads=threads, progress=report)
    if progress is not None:
        progress.write("\n")
    latency.save(model)
    return model


__all__ = [
    "NETWORKS",
    "calibrate",
    "compile_text",
    "fit",
    "fit_model",
    "load_or_calibrate",
    "measure_ms",
    "networks_for",
    "random_spec",
]
