"""The latency model: a variant's latency predicted from its graph alone, per engine and machine.

Every node of the inference graph is one part or more (an attention op runs as many kernels at
different rates: :mod:`nasdsl.bench.attention`), and every part costs, in milliseconds, a
non-negative combination of four figures (:func:`features`)::

    cost(part) = a[group] * work + b * traffic + d * streamed + c[group]

``work`` is the arithmetic (multiply-adds; for a convolution in the engine's blocked channel
layout with its channels rounded up to the vector block of 16, so that a width of 20 costs like
32, and without the kernel rows that fall on the padding, which the blocked kernels skip; for a
convolution unfolded into a matrix product, its output channels rounded up to the block) at the
rate of the part's *group*, ``traffic`` the values read and written (activations and weights)
at one rate for all (a roofline's memory side), ``streamed`` the weights of a layer too large
for one core's L2 cache, read again from farther away on every run (a linear layer on one
vector is bound by them), and ``c`` a fixed cost per part of the group (a kernel launch, a
layout reorder). Groups tell apart what engines run differently: 1x1, k x k, depthwise and
grouped convolutions in the blocked layout, the convolutions left in the plain layout
(:func:`blocked`: ONNX Runtime's NCHWc takes a multiple of 4 channels, a depthwise convolution
on 35 channels runs many times slower than on 36), the first convolution on few channels,
pointwise and unfolded 1-D and 3-D convolutions (a transposed convolution is charged as the
convolution it is the transpose of: :func:`adjoint`), linear layers on one vector and on many,
the parts of attention (batched small products, passes over the scores, subnormal masked
scores, copies of the tokens, MViT's pooling and relative positions), pools, a map scaled per
channel (squeeze-and-excitation's gate: ONNX Runtime reorders the map around it), concatenations
in the blocked layout and those reordered out of it and back (:func:`concat_blocked`), slices,
permutes that move one axis and the others (:func:`moves_one_axis`; a pixel shuffle is one of
the others), resizes, GELU (erf and four element-wise ops in ONNX), adaptive max pooling (as a
global average pooling), the norms (LayerNorm, GroupNorm, InstanceNorm, softmax, log-softmax; a
BatchNorm standing, or an InstanceNorm by its running statistics, is an affine map), each other
element-wise op standing alone (PReLU as a map scaled per channel), and the ops an engine fuses
into the layer before them (an activation, a residual sum into a 2-D convolution, a BatchNorm
folded into a convolution, transposed or not: :func:`contexts`; a SiLU after a convolution
apart, which ONNX Runtime runs on its own). A model adds a fixed cost and a cost per input
value. The coefficients are fitted by non-negative least squares on measured models
(:mod:`nasdsl.bench.calibrate`), relative error weighted, and cached per machine, engine and
engine version (:func:`cache_path`).

A prediction is a sum over nodes: no model is built, and :class:`nasdsl.variants.Evaluator`
adds it node by node (its column ``latency_ms``), each distinct node's cost computed once.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from nasdsl.bench import attention
from nasdsl.bench.attention import Part
from nasdsl.errors import NasdslError

#: the engines a latency model can be calibrated for (the first is the default)
LATENCY_ENGINES = ("onnxruntime", "openvino")
#: the environment variable naming the cache folder (default: $XDG_CACHE_HOME/nasdsl, else .cache/nasdsl at home)
CACHE_ENV = "NASDSL_CACHE_DIR"
#: the version of the features; a cached model of another version is measured again
FORMAT = 6
#: the vector block a convolution's channels are rounded up to
BLOCK = 16
#: activations the engines fuse into the convolution, linear layer or residual sum before them
#: (ONNX Runtime 1.32 makes a LeakyRelu after a Conv or Gemm the fused kernel's activation, as a
#: Relu; an Elu or a PRelu it runs on its own, after reordering the map out of its blocked layout)
FUSABLE = frozenset({"relu", "relu6", "leaky_relu", "sigmoid", "hardsigmoid", "hardswish", "silu"})
#: of those, the ones ONNX Runtime runs on their own after a convolution (a group of their own)
SWISH = frozenset({"silu"})
#: the convolutions (a BatchNorm after one is folded into it)
CONVS = frozenset({"conv1d", "conv2d", "conv3d"})
#: the transposed convolutions, each charged as the convolution it is the transpose of (its
#: output's channels in, its input's out: :func:`adjoint`); a BatchNorm after one is folded into
#: it too, but no activation or sum is fused into it (ONNX Runtime runs its ConvTranspose alone)
TRANSPOSED = frozenset({"conv_transpose1d", "conv_transpose2d", "conv_transpose3d"})
#: the convolutions of each rank
CONV_OF_RANK = {1: "conv1d", 2: "conv2d", 3: "conv3d"}
#: the convolutions an engine adds a residual sum into (ONNX Runtime's blocked 2-D ones; a 3-D
#: convolution's sum, and a linear layer's or an attention's, whose bias the product took, stand alone)
SUMMING = frozenset({"conv2d"})
#: ops that move no data at inference (a reshape is an alias in ONNX Runtime)
VIEWS = frozenset({"identity", "dropout", "stochastic_depth", "flatten", "reshape", "input"})
#: ops that copy part of their input as it lies
COPIES = frozenset({"slice", "select", "pad_to_multiple", "pad", "roll"})
#: ops that copy their input into another order (a strided gather)
PERMUTES = frozenset({"permute", "transpose", "channel_shuffle"})
#: adaptive max pooling, priced as the global average pooling is (one read of every value)
ADAPTIVE_MAX = frozenset({"adaptive_max_pool", "adaptive_max_pool1d", "adaptive_max_pool3d"})


class LatencyError(NasdslError):
    """No latency model for this machine and engine, or one that does not fit (exit 2)."""


# ---------------------------------------------------------------------------
# Reading the graph: the one adapter


class NodeView(NamedTuple):
    """What the model reads of a node."""

    name: str
    op: str
    attrs: Mapping[str, object]
    inputs: tuple[str, ...]
    in_shapes: tuple[tuple[int, ...], ...]
    shape: tuple[int, ...]
    macs: int
    train: bool


def _nodes(g) -> Iterator[NodeView]:
    """Every node of the graph IR ``g`` (shaped) in order, as :class:`NodeView`. The one place
    this package reads node records."""
    from nasdsl import ir
    from nasdsl.passes.shapes import macs

    for n in ir.order(g):
        d = ir.node(g, n)
        sources = tuple(ir.inputs(g, n))
        yield NodeView(
            n,
            d.op,
            d.attrs,
            sources,
            tuple(ir.node(g, s).shape for s in sources),
            d.shape,
            macs(g, n),
            d.phase == "train",
        )


# ---------------------------------------------------------------------------
# Features


def contexts(nodes: Iterable[tuple[str, str, tuple[str, ...], bool]]) -> dict[str, str]:
    """How an engine runs each node, from the structure alone (``(name, op, inputs, train)`` in
    order): ``skip`` (a training-only node), ``view`` (moves nothing), ``folded`` (a BatchNorm
    folded into the convolution before it), ``fused`` (an activation fused into the convolution,
    linear layer or standing BatchNorm before it, or a residual sum fused into the 2-D convolution
    before it), or ``""`` (runs on its own)."""
    nodes = list(nodes)
    items = [n for n in nodes if not n[3]]
    readers: dict[str, int] = {}
    for _, _, ins, _ in items:
        for s in ins:
            readers[s] = readers.get(s, 0) + 1
    op = {name: o for name, o, _, _ in items}
    out: dict[str, str] = {name: "skip" for name, _, _, train in nodes if train}
    through: dict[str, str] = {}  # a node -> the convolution (or fused sum) its value comes straight from

    def conv_before(source: str, convs: frozenset[str] = CONVS) -> bool:
        root = through.get(source, source)
        return readers.get(source, 0) == 1 and (op.get(root) in convs or out.get(root) == "fused")

    def alone_before(source: str) -> bool:  # a linear layer, or a BatchNorm left standing (a 1x1 depthwise conv)
        return readers.get(source, 0) == 1 and (
            op.get(source) == "linear" or (op.get(source) == "batch_norm" and out.get(source) == "")
        )

    for name, o, ins, _ in items:
        if o in VIEWS:
            out[name] = "view"
            if len(ins) == 1:  # what reads it reads the node before
                through[name] = through.get(ins[0], ins[0])
        elif (
            o == "batch_norm" and len(ins) == 1 and op.get(ins[0]) in CONVS | TRANSPOSED and readers.get(ins[0], 0) == 1
        ):
            out[name] = "folded"
            through[name] = ins[0]
        elif o in FUSABLE and len(ins) == 1 and (conv_before(ins[0]) or alone_before(ins[0])):
            out[name] = "fused"
            through[name] = through.get(ins[0], ins[0])
        elif o == "add" and any(conv_before(s, SUMMING) for s in ins):
            out[name] = "fused"
        else:
            out[name] = ""
    return out


def _block(c: int) -> int:
    return -(-c // BLOCK) * BLOCK


def features(
    op: str, attrs: Mapping[str, object], ins: tuple[tuple[int, ...], ...], out: tuple[int, ...], macs: int, ctx: str
) -> tuple[Part, ...]:
    """The parts of one node, each ``(group, work, traffic, streamed)``; none for a node that costs
    nothing. Most nodes are one part; an attention op is several (:mod:`nasdsl.bench.attention`).
    ``streamed`` is the weights of a layer too large for one core's L2 cache (:func:`cache_values`),
    read from farther away on every run."""
    if ctx in ("skip", "view", "folded") or op in VIEWS:
        return ()
    parts = attention.PARTS.get(op)
    if parts is not None:
        return parts(ins, attrs, _streamed)
    return (_part(op, attrs, ins, out, macs, ctx),)


def _part(
    op: str, attrs: Mapping[str, object], ins: tuple[tuple[int, ...], ...], out: tuple[int, ...], macs: int, ctx: str
) -> Part:
    if op in TRANSPOSED:
        conv, conv_ins, conv_out = adjoint(op, ins, out)
        return _part(conv, attrs, conv_ins, conv_out, macs, ctx)
    size = math.prod(out)
    read = sum(math.prod(s) for s in ins)
    if op == "conv2d":
        cin, cout, groups = ins[0][0], out[0], attrs["groups"]
        kh, kw = attrs["kernel"]
        weights = cout * (cin // groups) * kh * kw
        traffic, streamed = read + size + weights, _streamed(weights)
        if not blocked(cin, cout, groups):  # the plain layout: unfolded into matrix products
            if groups == cin:
                return "conv_dw_nchw", macs, traffic, streamed
            per = cout // groups  # each group's product has as many columns, in panels of a vector block
            return ("conv_nchw" if groups == 1 else "conv_group"), macs // per * _block(per), traffic, streamed
        inside = taps_inside(ins[0][1:], out[1:], attrs) if max(attrs["dilation"]) > 1 else 1.0
        if groups == cin and groups > 1:
            return "conv_dw", _block(cin) * (size // cout) * kh * kw * inside, traffic, streamed
        padded = _block(cin // groups) * _block(cout // groups) * groups * (size // cout) * kh * kw * inside
        if cin <= 4:
            return "conv_stem", padded, traffic, streamed
        return ("conv_1x1" if kh * kw == 1 else "conv_kxk"), padded, traffic, streamed
    if op in CONVS:  # 1-D and 3-D: no blocked layout; a matrix product of the unfolded input (im2col)
        groups = attrs.get("groups", 1)
        kernel = math.prod(_sizes(attrs["kernel"], len(out) - 1))
        weights = out[0] * (ins[0][0] // groups) * kernel
        traffic, streamed = read + size + weights, _streamed(weights)
        if kernel == 1 and groups == 1:  # pointwise: a matrix product of the input as it is
            return "conv_nd_1x1", macs, traffic, streamed
        per = out[0] // groups  # the product's columns, in panels of a vector block
        return "conv_nd", macs // per * _block(per), traffic, streamed
    if op == "linear":  # on one vector each weight is read once (memory-bound); on many, a matrix product
        rows = math.prod(out[:-1])
        weights = macs // rows
        return ("linear" if rows == 1 else "linear_seq"), macs, read + size + weights, _streamed(weights)
    if op in ("max_pool", "avg_pool", "max_pool3d", "avg_pool3d"):
        return "pool", size * math.prod(_sizes(attrs["kernel"], len(out) - 1)), read + size, 0
    if op in ("global_avg_pool", "adaptive_avg_pool", "adaptive_avg_pool3d") or op in ADAPTIVE_MAX:
        return "gap", read, read + size, 0  # each value read once, into its window's sum or maximum
    if op == "lrn":
        return "lrn", size * attrs["size"], read + size, 0
    if op == "gelu":  # erf and four element-wise ops in ONNX
        return "gelu", size, read + size, 0
    if macs:  # the other ops made of matrix products
        return "matmul", macs, read + size, 0
    if ctx == "fused":
        if op == "add":
            return "fused_add", size, read, 0
        return ("fused_swish" if op in SWISH else "fused_act"), size, read, 0
    if (op in ("add", "mul") and len(set(ins)) > 1) or op == "layer_scale":  # a map scaled per channel
        return "broadcast", size, read + size, 0
    if op == "concat":
        return ("concat" if concat_blocked(ins, out) else "concat_reorder"), size, read + size, 0
    if op in PERMUTES:
        return ("permute" if moves_one_axis(op, attrs, len(out)) else "permute_nd"), size, read + size, 0
    if op in ("pixel_shuffle", "pixel_unshuffle"):  # a reshape, a transpose of several axes, a reshape
        return "permute_nd", size, read + size, 0
    if op in COPIES:
        return "copy", size, read + size, 0
    if op in ("interpolate", "interpolate_like"):  # each value from its neighbours along each axis
        taps = 1 if attrs["mode"] == "nearest" else 2 ** (len(out) - 1)
        return "resize", size * taps, read + size, 0
    if op == "batch_norm" or (op == "instance_norm" and attrs["track_running_stats"]):  # by running statistics
        return "affine", size, read + size, 0
    if op in ("layer_norm", "softmax", "log_softmax", "group_norm", "instance_norm"):  # statistics of each sample
        return "norm", size, read + size, 0
    if op == "prelu":  # a slope per channel (or one): the map is reordered around it, as around a gate
        return "broadcast", size, read + size, 0
    if op in ("sigmoid", "silu", "tanh", "hardswish", "hardsigmoid", "elu", "softplus", "mish", "selu"):
        return "transcendental", size, read + size, 0
    return "elementwise", size, read + size, 0


def adjoint(
    op: str, ins: tuple[tuple[int, ...], ...], out: tuple[int, ...]
) -> tuple[str, tuple[tuple[int, ...], ...], tuple[int, ...]]:
    """The convolution a transposed convolution ``op`` is the transpose of, as ``(op, ins, out)``:
    it reads a map of the transposed one's output shape and writes one of its input shape, with the
    same kernel, stride, padding, dilation and groups, and the same multiply-adds and weights. A
    transposed convolution is charged as it: in ONNX Runtime 1.32 (one thread) a ConvTranspose took
    1.1 to 1.5 times as long as that convolution (``benchmarks/conv_transpose_latency.py``; 64 to
    32 channels on a 28x28 map, kernel 4, stride 2: 0.40 against 0.26 ms)."""
    return CONV_OF_RANK[len(out) - 1], (out,), ins[0]


def taps_inside(sizes: tuple[int, ...], outs: tuple[int, ...], attrs: Mapping[str, object]) -> float:
    """The share of a convolution's kernel rows that land inside the map (not on its padding),
    over every output row: ONNX Runtime's blocked kernels skip the rows that fall on the padding
    (not the columns, which they run through). DeepLabV3's 3x3 kernels dilated by 36 on a 65x65
    map keep 63% of their rows (measured: 69% of the time of the same convolution undilated, one
    thread). Counted for dilated kernels only: an undilated one loses a row or two at the edges,
    which saves little (a 3x3 kernel on 256 channels of a 7x7 map: 93% of the time of a 7x7 map
    computed whole, where 90% of the rows are inside)."""
    n, m = sizes[0], outs[0]
    k, s, d = attrs["kernel"][0], attrs["stride"][0], attrs["dilation"][0]
    padding = attrs["padding"]
    p = d * (k - 1) // 2 if padding == "same" else padding[0]
    inside = 0
    for tap in range(k):  # the output rows o with 0 <= o * s - p + tap * d < n
        first = max(0, -(-(p - tap * d) // s))
        last = min(m - 1, (n + p - tap * d - 1) // s)
        inside += max(0, last - first + 1)
    return inside / (m * k)


def moves_one_axis(op: str, attrs: Mapping[str, object], rank: int) -> bool:
    """Whether a permute moves one axis and keeps the others in order ((C, H, W) to (H, W, C); a
    channel shuffle; two neighbouring axes swapped): ONNX Runtime copies such a transpose in
    contiguous runs. Any other order (MaxViT's (C, h, p, w, p) to (h, w, p, p, C)) it gathers
    value by value, several times slower a value."""
    if op == "channel_shuffle":
        return True
    if op == "transpose":
        a, b = (attrs[k] % rank for k in ("axis0", "axis1"))
        return abs(a - b) <= 1
    dims = list(attrs["dims"])
    return any(dims[:i] + dims[i + 1 :] == sorted(dims[:i] + dims[i + 1 :]) for i in range(len(dims)))


def concat_blocked(ins: tuple[tuple[int, ...], ...], out: tuple[int, ...]) -> bool:
    """Whether a concatenation runs in the blocked channel layout, a plain copy of each input:
    ONNX Runtime's NCHWc takes one of (C, H, W) maps along the channels when every input has whole
    blocks of :data:`BLOCK` channels. Any other concatenation of maps the convolutions wrote in
    that layout has them reordered out of it (each input) and back (the result): three passes
    where the blocked one makes one (SqueezeNet's and DenseNet's concatenations are blocked; a
    concatenation of 24 and 40 channels is not). Tokens and flat features are never blocked."""
    if len(out) != 3:
        return True
    return all(s[0] % BLOCK == 0 for s in ins) and sum(s[0] for s in ins) == out[0]


def blocked(cin: int, cout: int, groups: int) -> bool:
    """Whether a 2-D convolution runs in the blocked channel layout (ONNX Runtime's NCHWc, blocks
    of :data:`BLOCK` channels on AVX-512, as ONNX Runtime 1.32 does it): a depthwise one on a
    multiple of 4 channels, a grouped one on groups of whole blocks, a dense one on a multiple of
    4 input channels or fewer than a block. The others run in the plain layout, unpadded."""
    if groups == 1:
        return cin < BLOCK or cin % 4 == 0
    if groups == cin:
        return cin % 4 == 0
    return (cin // groups) % BLOCK == 0 and (cout // groups) % BLOCK == 0


def _sizes(value: object, dims: int) -> tuple[int, ...]:
    """A kernel given as one number or one per spatial axis."""
    return tuple(value) if isinstance(value, (list, tuple)) else (int(value),) * dims


def cache_values() -> int:
    """The float32 values one core's L2 cache holds (this machine's; see :mod:`nasdsl.bench.hardware`)."""
    from nasdsl.bench.hardware import machine

    return machine().l2 // 4


def _streamed(weights: int) -> int:
    return weights if weights > cache_values() else 0


#: every group, in the order of the fitted coefficients
GROUPS = (
    "conv_1x1",
    "conv_kxk",
    "conv_dw",
    "conv_group",
    "conv_nchw",
    "conv_dw_nchw",
    "conv_stem",
    "conv_nd",
    "conv_nd_1x1",
    "linear",
    "linear_seq",
    "matmul",
    "attn_product",
    "attn_matrix",
    "attn_copy",
    "scores",
    "masked",
    "einsum",
    "conv_pool",
    "pool",
    "gap",
    "lrn",
    "fused_act",
    "fused_add",
    "fused_swish",
    "broadcast",
    "concat",
    "concat_reorder",
    "copy",
    "permute",
    "permute_nd",
    "resize",
    "affine",
    "norm",
    "transcendental",
    "gelu",
    "elementwise",
)
#: each group's coefficients
TERMS = ("work", "count")
#: the coefficients shared by every group: the cost of a value read or written; then the
#: model-wide terms: a fixed cost, a cost per input value
SHARED = ("traffic", "streamed", "model", "model_input")


def columns() -> tuple[str, ...]:
    """The design matrix's columns: :data:`TERMS` per group, then :data:`SHARED`."""
    return (*(f"{g}.{k}" for g in GROUPS for k in TERMS), *SHARED)


def row(views: Iterable[NodeView]) -> list[float]:
    """One model's design-matrix row: its features summed per group (:func:`columns`)."""
    views = list(views)
    ctx = contexts((v.name, v.op, v.inputs, v.train) for v in views)
    index = {g: i for i, g in enumerate(GROUPS)}
    r = [0.0] * (len(TERMS) * len(GROUPS) + len(SHARED))
    for v in views:
        for group, work, traffic, streamed in features(v.op, v.attrs, v.in_shapes, v.shape, v.macs, ctx[v.name]):
            i = len(TERMS) * index[group]
            r[i] += work
            r[i + 1] += 1
            r[-4] += traffic
            r[-3] += streamed
    first = next(v for v in views if v.op == "input")
    r[-2] = 1.0
    r[-1] = float(math.prod(first.shape))
    return r


# ---------------------------------------------------------------------------
# The model


@dataclass(frozen=True)
class LatencyModel:
    """Fitted coefficients (ms per unit) for one engine on one machine, and how they were made."""

    engine: str
    version: str
    machine: str
    threads: int
    coefficients: Mapping[str, float]
    fit: Mapping[str, float] = field(default_factory=dict)

    def node_cost(
        self,
        op: str,
        attrs: Mapping[str, object],
        ins: tuple[tuple[int, ...], ...],
        out: tuple[int, ...],
        macs: int,
        ctx: str,
    ) -> float:
        """Milliseconds one node costs (see the module docstring)."""
        rates, (per_traffic, per_streamed) = self._rates
        total = 0.0
        for group, work, traffic, streamed in features(op, attrs, ins, out, macs, ctx):
            per_work, fixed = rates[group]
            total += per_work * work + per_traffic * traffic + per_streamed * streamed + fixed
        return total

    @functools.cached_property
    def _rates(self) -> tuple[dict[str, tuple[float, float]], tuple[float, float]]:
        """Each group's (work, count) coefficients, and the traffic's and streaming's, looked up once."""
        c = self.coefficients
        return {g: (c[f"{g}.work"], c[f"{g}.count"]) for g in GROUPS}, (c["traffic"], c["streamed"])

    def model_cost(self, input_shape: tuple[int, ...]) -> float:
        return self.coefficients["model"] + self.coefficients["model_input"] * math.prod(input_shape)

    def predict(self, graph) -> float:
        """Predicted milliseconds of one sample (batch 1) through ``graph``'s inference graph."""
        from nasdsl import ir

        return sum(self.costs(ir.as_graph(graph)).values())

    def costs(self, g) -> dict[str, float]:
        """Each node's predicted milliseconds, and the model's own fixed cost under ``""``."""
        views = list(_nodes(g))
        ctx = contexts((v.name, v.op, v.inputs, v.train) for v in views)
        out = {v.name: self.node_cost(v.op, v.attrs, v.in_shapes, v.shape, v.macs, ctx[v.name]) for v in views}
        first = next(v for v in views if v.op == "input")
        out[""] = self.model_cost(first.shape)
        return out

    def describe(self) -> str:
        figures = ", ".join(f"{k} {v:.3g}" for k, v in self.fit.items())
        return f"{self.engine} {self.version}, {self.threads} thread(s), batch 1" + (
            f"; fit: {figures}" if figures else ""
        )

    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "engine": self.engine,
            "version": self.version,
            "machine": self.machine,
            "threads": self.threads,
            "coefficients": dict(self.coefficients),
            "fit": dict(self.fit),
        }


# ---------------------------------------------------------------------------
# The cache


def engine_version(engine: str) -> str:
    try:
        return importlib.metadata.version(engine)
    except importlib.metadata.PackageNotFoundError:
        return ""


def cache_dir() -> Path:
    """Where calibrations are kept: ``$NASDSL_CACHE_DIR``, else ``$XDG_CACHE_HOME/nasdsl``, else
    ``.cache/nasdsl`` in the home folder."""
    given = os.environ.get(CACHE_ENV)
    if given:
        return Path(given)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "nasdsl"


def cache_key(engine: str, threads: int) -> str:
    """What a calibration is valid for: this machine (CPU model, flags, cores), the engine and
    its version, the threads and the feature format."""
    from nasdsl.bench.hardware import machine

    text = f"{machine().key()}|{engine}|{engine_version(engine)}|{threads}|{FORMAT}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_path(engine: str, threads: int = 1) -> Path:
    return cache_dir() / "latency" / f"{engine}-{cache_key(engine, threads)}.json"


def cached(engine: str, threads: int = 1) -> LatencyModel | None:
    """The calibration of ``engine`` for this machine, engine version and threads, or None
    (none made, or made for another machine, version or feature format: the key differs, or the
    file says so). A file at that path that is not a calibration (unreadable, not JSON, a
    coefficient that is not a number >= 0) is a :class:`LatencyError` naming it."""
    from nasdsl.bench.hardware import machine

    path = cache_path(engine, threads)
    try:
        text = path.read_bytes().decode()
    except (FileNotFoundError, NotADirectoryError):  # nothing there (a folder on the way is a file: nothing)
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise _corrupt(path, f"cannot read it ({getattr(e, 'strerror', None) or e})") from None
    try:
        data = json.loads(text)
    except ValueError as e:
        raise _corrupt(path, f"not JSON ({e})") from None
    if not isinstance(data, dict):
        raise _corrupt(path, f"expected a JSON object, got {type(data).__name__}")
    if (
        data.get("format") != FORMAT
        or data.get("engine") != engine
        or data.get("version") != engine_version(engine)
        or data.get("machine") != machine().key()
        or data.get("threads") != threads
    ):
        return None
    coefficients, fit = data.get("coefficients"), data.get("fit", {})
    if not isinstance(coefficients, dict) or set(coefficients) != set(columns()):
        raise _corrupt(path, f"coefficients: expected an object with the {len(columns())} keys of format {FORMAT}")
    for key, value in coefficients.items():
        if not _number(value) or not value >= 0:
            raise _corrupt(path, f"coefficients.{key}: expected a finite number >= 0, got {value!r}")
    if not isinstance(fit, dict) or not all(isinstance(k, str) and _number(v) for k, v in fit.items()):
        raise _corrupt(path, "fit: expected an object of numbers")
    return LatencyModel(engine, data["version"], data["machine"], threads, coefficients, fit)


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _corrupt(path: Path, what: str) -> LatencyError:
    return LatencyError(
        f"not a latency model: {what}; delete it, or run 'nasdsl bench SPEC --calibrate --force' to measure again",
        path=str(path),
    )


def save(model: LatencyModel) -> Path:
    """Write ``model`` to its cache file (atomically) and return the path."""
    from nasdsl.files import write_atomic

    path = cache_path(model.engine, model.threads)
    write_atomic(str(path), (json.dumps(model.to_json(), indent=2, sort_keys=True) + "\n").encode())
    return path


def check_writable(engine: str, threads: int = 1) -> None:
    """Refuse, before minutes of measuring, a cache folder that cannot be made or written."""
    folder = cache_path(engine, threads).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LatencyError(
            f"cannot make the cache folder ({e.strerror or e}): set ${CACHE_ENV} to a writable folder", path=str(folder)
        ) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise LatencyError(f"cannot write the cache folder: set ${CACHE_ENV} to a writable folder", path=str(folder))


def require(engine: str = LATENCY_ENGINES[0], threads: int = 1) -> LatencyModel:
    """The cached calibration, or a :class:`LatencyError` saying how to make one."""
    model = cached(engine, threads)
    if model is None:
        raise LatencyError(
            f"no latency model for {engine} on this machine (or it was made for another machine or "
            f"{engine} version): run 'nasdsl bench SPEC --calibrate' first (a few minutes)",
            path="latency_ms",
        )
    return model


__all__ = [
    "CACHE_ENV",
    "GROUPS",
    "LATENCY_ENGINES",
    "LatencyError",
    "LatencyModel",
    "SHARED",
    "NodeView",
    "blocked",
    "cache_dir",
    "cache_key",
    "cache_path",
    "cache_values",
    "cached",
    "check_writable",
    "columns",
    "contexts",
    "features",
    "require",
    "row",
    "save",
]


# ---------------------------------------------------------------------------
# The summary's column


@dataclass(frozen=True)
class SummaryLatency:
    """``nasdsl summary --latency``: the summary with ``latency_ms`` on each row and in the
    totals (the JSON contract), and the line the table ends with."""

    summary: dict
    text: str


def summary_latency(model: LatencyModel, graph, summary: dict) -> SummaryLatency:
    """Each top-level entry's predicted milliseconds (its nodes' costs), and the total."""
    costs = model.costs(graph)
    total = sum(costs.values())
    rows = []
    for r in summary["rows"]:
        name = r["name"]
        ms = sum(v for n, v in costs.items() if n == name or n.startswith(name + "."))
        rows.append({**r, "latency_ms": round(ms, 4)})
    out = {**summary, "rows": rows, "totals": {**summary["totals"], "latency_ms": round(total, 4)}}
    top = sorted(rows, key=lambda r: -r["latency_ms"])[:3]
    share = ", ".join(f"{r['name']} {r['latency_ms']:.2f} ms" for r in top if total > 0)
    text = (
        f"predicted latency: {total:.2f} ms a sample ({model.engine} {model.version}, batch 1, "
        f"{model.threads} thread(s), this machine's calibration); most: {share}"
    )
    from nasdsl import ir

    evaluation = ir.info(ir.as_graph(graph)).evaluation
    crops = evaluation.count if evaluation is not None else 1
    if crops > 1:  # a sample is one crop: the spec's evaluation feeds each image several
        text += f"\nthe spec's evaluation feeds {crops} crops an image: {total * crops:.2f} ms an image"
    return SummaryLatency(out, text)
