"""The ONNX lowering of every op: the ONNX nodes one IR node becomes.

Each op's entry in the registry (:data:`nasdsl.ops.OPS`) holds its lowering
under ``"onnx"``: a function of a :class:`Lowered` (the node, its input
tensors, and the emitter that writes into the model). Shapes are the IR's;
tensors of any rank carry the batch first. Where ONNX and PyTorch differ
(pooling's ceil mode, an even LRN window, adaptive windows), the lowering
writes what gives PyTorch's result, and the tests compare the two under ONNX
Runtime op by op.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

import networkx as nx
import numpy as np
import onnx

from nasdsl import ir
from nasdsl.errors import CodegenError
from nasdsl.ops import OPS, lowering, lowering_of, same_padding
from nasdsl.ops.more_ops import adaptive_windows
from nasdsl.ops.tensor import nearest_sources

#: BatchNorm's parameters and buffers, in the order ONNX's BatchNormalization takes them
BN_PARAMS = ("weight", "bias", "running_mean", "running_var")

Shape = tuple[int | str, ...]


class Lowered:
    """What a lowering sees of one IR node: its record, its input tensors and how to emit."""

    def __init__(self, e, g: nx.DiGraph, node: str, xs: list[str], out: str, opset: int):
        self.e, self.g, self.node, self.xs, self.out, self.opset = e, g, node, xs, out, opset
        self.data = ir.node(g, node)
        self.a = self.data.attrs
        self.type = self.data.type
        self.shape = e.full(self.data.shape)
        self.in_types = ir.input_types(g, node)
        self.in_type = self.in_types[0]
        self.in_shape = self.in_type.shape
        self.x = xs[0]

    def emit(
        self,
        op_type: str,
        inputs: Sequence[str],
        at: Shape | None = None,
        last: bool = False,
        ints: bool = False,
        **attrs,
    ) -> str:
        """One ONNX node; ``last`` marks the one that writes the IR node's result; ``ints`` one whose
        result holds int64 sizes (its type is left to ONNX's shape inference)."""
        shape = None if ints else self.shape if at is None else at
        return self.e.add(op_type, inputs, node=self.node, shape=shape, out=self.out if last else None, **attrs)

    def param(self, name: str) -> str:
        return self.e.param(f"{self.node}.{name}" if name else self.node)

    def axis(self, axis: object, t: ir.TensorType | None = None) -> int:
        """An IR axis (channels, last, an index without the batch) as an ONNX axis (batch first)."""
        t = t or self.in_type
        if axis == "channels":
            index = t.channel_axis if t.channel_axis is not None else 0
        elif axis == "last":
            index = t.rank - 1
        else:
            index = int(axis) % t.rank  # type: ignore[arg-type]
        return index + 1


@dataclass(frozen=True)
class GraphLowering:
    """The lowering of an op that calls other graphs (an ensemble's ``member``): it exports the
    whole graph holding such nodes. ``export_graph(g, with_aux=, verify=)`` is what
    :func:`nasdsl.backends.onnx.export_graph` gives for it, ``emit(g, opset, state_dict, with_aux,
    batch, deferred, max_memory)`` the model and its deferred initializers."""

    export_graph: Callable[..., nx.DiGraph]
    emit: Callable[..., tuple]


def graph_lowering(g: nx.DiGraph) -> GraphLowering | None:
    """The whole-graph lowering of an op of ``g``, or None."""
    for op in sorted({d.op for _, d in ir.nodes(g)}):
        found = OPS[op].lowerings.get("onnx") if op in OPS else None
        if isinstance(found, GraphLowering):
            return found
    return None


def lower(e, g: nx.DiGraph, node: str, xs: list[str], out: str, opset: int) -> None:
    """Emit the ONNX nodes for IR node ``node`` reading tensors ``xs`` and writing ``out``:
    the op's registered ONNX lowering, or an error naming the op and node."""
    data = ir.node(g, node)
    lowering_of("onnx", data.op, node, data)(Lowered(e, g, node, xs, out, opset))


# ---------------------------------------------------------------------------
# Windows


def pool_geometry(
    in_shape: Sequence[int], out_shape: Sequence[int], a: Mapping[str, object]
) -> tuple[list[int], list[int], int, bool]:
    """ONNX pads and ceil_mode that give PyTorch's output size for a pooling window.

    Returns ``(begin, end, ceil_mode, overhang)``. PyTorch's ceil mode drops a
    last window that would start in the right padding, which ONNX shape
    inference does not; where that happens the extra end padding is written
    out explicitly with ``ceil_mode`` 0. ``overhang`` tells whether some window
    reaches past the padded input (divisors differ there: see ``avg_pool``).
    """
    k, s, p = a["kernel"], a["stride"], a["padding"]
    ends, over, naive_ok = [], [], []
    for i in range(len(k)):
        size, n = in_shape[i + 1], out_shape[i + 1]
        reach = (n - 1) * s[i] + k[i] - size - p[i]  # end padding the last window needs
        ends.append(max(p[i], reach))
        over.append(reach > p[i])
        naive_ok.append(-(-(size + 2 * p[i] - k[i]) // s[i]) + 1 == n)
    if any(over) and all(naive_ok):
        return list(p), list(p), 1, any(over)
    return list(p), ends, 0, any(over)


def adaptive_matrix(size: int, out: int) -> np.ndarray:
    """(out, size): row i averages PyTorch's adaptive window i, [floor(i*size/out), ceil((i+1)*size/out))."""
    m = np.zeros((out, size), dtype=np.float64)
    for i in range(out):
        start, end = (i * size) // out, -(-((i + 1) * size) // out)
        m[i, start:end] = 1.0 / (end - start)
    return m.astype(np.float32)


@lowering("onnx", "conv1d", "conv2d", "conv3d")
def _conv(n: Lowered) -> None:
    a = n.a
    kernel, dilation = list(a["kernel"]), list(a["dilation"])
    if a["padding"] == "same":
        pairs = [same_padding(k, d) for k, d in zip(kernel, dilation, strict=True)]
        begin, end = [p[0] for p in pairs], [p[1] for p in pairs]
    else:
        begin, end = list(a["padding"]), list(a["padding"])
    inputs = [n.x, n.param("weight"), *([n.param("bias")] if a["bias"] else [])]
    n.emit("Conv", inputs, last=True, kernel_shape=kernel, strides=list(a["stride"]),
           pads=begin + end, dilations=dilation, group=a["groups"])  # fmt: skip


@lowering("onnx", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d")
def _conv_transpose(n: Lowered) -> None:
    # Both crop the full scatter, (in - 1) * stride + (kernel - 1) * dilation + 1 long: PyTorch
    # `padding` at the start and `padding - output_padding` at the end; ONNX its pads, then adds
    # `output_padding`. ONNX Runtime takes no output_padding from the stride up (PyTorch does
    # below the dilation), so the end's crop is written as a pad where it can be, and positions
    # past the scatter's end (only the bias reaches them) as a Pad of zeros before the bias.
    a = n.a
    stride, padding, extra = a["stride"], a["padding"], a["output_padding"]
    end = [max(p - o, 0) for p, o in zip(padding, extra, strict=True)]
    past = [max(o - p, 0) for p, o in zip(padding, extra, strict=True)]
    window = {"kernel_shape": list(a["kernel"]), "strides": list(stride), "pads": list(padding) + end,
              "dilations": list(a["dilation"]), "group": a["groups"]}  # fmt: skip
    bias = [n.param("bias")] if a["bias"] else []
    if all(x < s for x, s in zip(past, stride, strict=True)):
        n.emit("ConvTranspose", [n.x, n.param("weight"), *bias], last=True, output_padding=past, **window)
        return
    c, *sizes = n.shape[1:]
    short = (c, *(size - x for size, x in zip(sizes, past, strict=True)))
    made = n.emit("ConvTranspose", [n.x, n.param("weight")], at=n.e.full(short), **window)
    pads = n.e.ints("pads", [0] * (len(sizes) + 2) + [0, 0, *past])
    if not bias:
        n.emit("Pad", [made, pads], last=True)
        return
    padded = n.emit("Pad", [made, pads])
    per_channel = n.emit("Reshape", [bias[0], n.e.ints("bias", [c, *(1,) * len(sizes)])], at=(c, *(1,) * len(sizes)))
    n.emit("Add", [padded, per_channel], last=True)


@lowering("onnx", "batch_norm")
def _batch_norm(n: Lowered) -> None:
    n.emit("BatchNormalization", [n.x, *(n.param(p) for p in BN_PARAMS)], last=True, epsilon=n.a["eps"])


@lowering("onnx", "max_pool1d", "max_pool", "max_pool3d")
def _max_pool(n: Lowered) -> None:
    begin, end, ceil, _ = pool_geometry(n.in_shape, n.data.shape, n.a)
    n.emit("MaxPool", [n.x], last=True, kernel_shape=list(n.a["kernel"]), strides=list(n.a["stride"]),
           pads=begin + end, ceil_mode=ceil)  # fmt: skip


@lowering("onnx", "avg_pool1d", "avg_pool", "avg_pool3d")
def _avg_pool(n: Lowered) -> None:
    a = n.a
    begin, end, ceil, overhang = pool_geometry(n.in_shape, n.data.shape, a)
    window = {"kernel_shape": list(a["kernel"]), "strides": list(a["stride"]), "ceil_mode": ceil}
    if overhang and a["count_include_pad"] and any(begin):
        # PyTorch divides a window that reaches past the padded input by its part
        # inside the padded input; with the padding made real, ONNX's
        # count_include_pad=0 does exactly that.
        c, *sizes = n.in_shape
        padded_shape = n.e.full((c, *(s + 2 * b for s, b in zip(sizes, begin, strict=True))))
        pads = n.e.ints("pads", [0, 0, *begin, 0, 0, *begin])
        padded = n.emit("Pad", [n.x, pads], at=padded_shape)
        extra = [e - b for e, b in zip(end, begin, strict=True)]
        zeros = [0] * len(extra)
        n.emit("AveragePool", [padded], last=True, pads=zeros + extra, count_include_pad=0, **window)
    else:
        # without an overhang, or counting real inputs only, ONNX and PyTorch agree
        include = int(a["count_include_pad"] and not overhang)
        n.emit("AveragePool", [n.x], last=True, pads=begin + end, count_include_pad=include, **window)


@lowering("onnx", "global_avg_pool")
def _global_avg_pool(n: Lowered) -> None:
    n.emit("GlobalAveragePool", [n.x], last=True)


@lowering("onnx", "adaptive_avg_pool1d", "adaptive_avg_pool", "adaptive_avg_pool3d")
def _adaptive_avg_pool(n: Lowered) -> None:
    c, *sizes = n.in_shape
    outs = list(n.a["size"])
    if all(o == 1 for o in outs):
        n.emit("GlobalAveragePool", [n.x], last=True)
    elif all(s % o == 0 for s, o in zip(sizes, outs, strict=True)):
        kernel = [s // o for s, o in zip(sizes, outs, strict=True)]
        n.emit("AveragePool", [n.x], last=True, kernel_shape=kernel, strides=kernel)
    else:
        # PyTorch's windows overlap or differ in size: average with one matrix per axis, the last
        # axis first, each axis moved last for the product and back
        y = n.x
        current = [c, *sizes]
        rank = len(current)
        path = n.node.replace(".", "/")
        todo = [i for i in range(len(sizes)) if sizes[i] != outs[i]]
        for k, i in enumerate(reversed(todo)):
            axis = i + 1  # within the unbatched shape
            last = k == len(todo) - 1
            m = n.e.initializer(f"{path}/axis{axis}", adaptive_matrix(sizes[i], outs[i]).T)
            perm = list(range(rank + 1))
            perm[axis + 1], perm[-1] = perm[-1], perm[axis + 1]
            moved = [current[p - 1] for p in perm[1:]]
            if axis + 1 != rank:
                y = n.emit("Transpose", [y], at=n.e.full(tuple(moved)), perm=perm)
            moved[-1] = outs[i]
            done = axis + 1 == rank
            y = n.emit("MatMul", [y, m], at=n.e.full(tuple(moved)), last=last and done)
            current[axis] = outs[i]
            if not done:
                y = n.emit("Transpose", [y], at=n.e.full(tuple(current)), perm=perm, last=last)


@lowering("onnx", "lrn")
def _lrn(n: Lowered) -> None:
    a, x, e = n.a, n.x, n.e
    if a["size"] % 2:
        n.emit("LRN", [x], last=True, size=a["size"], alpha=a["alpha"], beta=a["beta"], bias=a["k"])
        return
    # PyTorch centres an even window one channel lower than ONNX's LRN does:
    # x / (k + alpha * mean(x^2 over channels c - size/2 .. c + size/2 - 1)) ^ beta
    c, h, w = n.in_shape
    size = a["size"]
    axis = e.ints("axes", [1])
    lifted = n.emit("Unsqueeze", [n.emit("Mul", [x, x]), axis], at=e.full((1, c, h, w)))
    pads = e.ints("pads", [0, 0, size // 2, 0, 0, 0, 0, (size - 1) // 2, 0, 0])
    padded = n.emit("Pad", [lifted, pads], at=e.full((1, c + size - 1, h, w)))
    mean = n.emit("AveragePool", [padded], at=e.full((1, c, h, w)), kernel_shape=[size, 1, 1])
    mean = n.emit("Squeeze", [mean, axis])
    scaled = n.emit("Add", [n.emit("Mul", [mean, e.scalar(a["alpha"])]), e.scalar(a["k"])])
    n.emit("Div", [x, n.emit("Pow", [scaled, e.scalar(a["beta"])])], last=True)


# ---------------------------------------------------------------------------
# Element-wise


@lowering("onnx", "relu", "sigmoid", "tanh")
def _unary(n: Lowered) -> None:
    n.emit({"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh"}[n.data.op], [n.x], last=True)


@lowering("onnx", "relu6")
def _relu6(n: Lowered) -> None:
    n.emit("Clip", [n.x, n.e.scalar(0.0), n.e.scalar(6.0)], last=True)


@lowering("onnx", "silu")
def _silu(n: Lowered) -> None:
    n.emit("Mul", [n.x, n.emit("Sigmoid", [n.x])], last=True)


@lowering("onnx", "gelu")
def _gelu(n: Lowered) -> None:
    x, e = n.x, n.e
    if n.opset >= 20:
        n.emit("Gelu", [x], last=True, approximate=n.a["approximate"])
    elif n.a["approximate"] == "tanh":
        # PyTorch: 0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x^3)))
        cube = n.emit("Mul", [n.emit("Mul", [x, x]), x])
        inner = n.emit("Add", [x, n.emit("Mul", [cube, e.scalar(0.044715)])])
        tanh = n.emit("Tanh", [n.emit("Mul", [inner, e.scalar(math.sqrt(2 / math.pi))])])
        gate = n.emit("Mul", [x, n.emit("Add", [tanh, e.scalar(1.0)])])
        n.emit("Mul", [gate, e.scalar(0.5)], last=True)
    else:
        # PyTorch: 0.5 * x * (1 + erf(x / sqrt(2)))
        erf = n.emit("Erf", [n.emit("Mul", [x, e.scalar(math.sqrt(0.5))])])
        gate = n.emit("Mul", [x, n.emit("Add", [erf, e.scalar(1.0)])])
        n.emit("Mul", [gate, e.scalar(0.5)], last=True)


@lowering("onnx", "hardsigmoid")
def _hardsigmoid(n: Lowered) -> None:  # PyTorch: relu6(x + 3) / 6
    n.emit("HardSigmoid", [n.x], last=True, alpha=1 / 6, beta=0.5)


@lowering("onnx", "hardswish")
def _hardswish(n: Lowered) -> None:  # PyTorch: x * relu6(x + 3) / 6
    if n.opset >= 14:
        n.emit("HardSwish", [n.x], last=True)
    else:
        n.emit("Mul", [n.x, n.emit("HardSigmoid", [n.x], alpha=1 / 6, beta=0.5)], last=True)


@lowering("onnx", "leaky_relu")
def _leaky_relu(n: Lowered) -> None:
    n.emit("LeakyRelu", [n.x], last=True, alpha=n.a["negative_slope"])


@lowering("onnx", "elu")
def _elu(n: Lowered) -> None:
    n.emit("Elu", [n.x], last=True, alpha=n.a["alpha"])


def per_channel(n: Lowered, tensor: str) -> str:
    """A (C,) tensor shaped (C, 1, ...) to broadcast over the channels of a channels-first input
    (ONNX broadcasts from the last axis); as it is for flat features (N, C)."""
    c, *rest = n.in_shape
    if not rest:
        return tensor
    return n.emit("Reshape", [tensor, n.e.ints("per_channel", [c, *(1,) * len(rest)])], at=(c, *(1,) * len(rest)))


@lowering("onnx", "prelu")
def _prelu(n: Lowered) -> None:
    slope = n.param("weight")
    n.emit("PRelu", [n.x, per_channel(n, slope) if n.a["per_channel"] else slope], last=True)


def _affine_params(n: Lowered, c: int) -> tuple[str, str]:
    """A norm's weight and bias: its own with ``affine``, else ones and zeros."""
    if n.a["affine"]:
        return n.param("weight"), n.param("bias")
    return n.e.const("ones", np.ones(c), np.float32), n.e.const("zeros", np.zeros(c), np.float32)


@lowering("onnx", "group_norm")
def _group_norm(n: Lowered) -> None:
    """GroupNormalization from opset 21 (a weight per channel); below it as torch.onnx.export
    writes it: InstanceNormalization of the input reshaped to (N, groups, -1), reshaped back,
    then the per-channel weight and bias. (GroupNormalization-18, whose scale and bias are one
    per group, is deprecated: ONNX's checker refuses a file of opset 18 to 20 holding one.)"""
    c, *rest = n.in_shape
    groups, eps = n.a["groups"], n.a["eps"]
    if n.opset >= 21:
        weight, bias = _affine_params(n, c)
        n.emit("GroupNormalization", [n.x, weight, bias], last=True, epsilon=eps, num_groups=groups)
        return
    ones = n.e.const("ones", np.ones(groups), np.float32)
    zeros = n.e.const("zeros", np.zeros(groups), np.float32)
    grouped_shape = n.e.full((groups, math.prod(n.in_shape) // groups))
    grouped = n.emit("Reshape", [n.x, n.e.ints("groups", [0, groups, -1])], at=grouped_shape)
    normed = n.emit("InstanceNormalization", [grouped, ones, zeros], at=grouped_shape, epsilon=eps)
    normed = n.emit("Reshape", [normed, n.e.ints("shape", [0, c, *rest])], last=not n.a["affine"])
    if n.a["affine"]:
        scaled = n.emit("Mul", [normed, per_channel(n, n.param("weight"))])
        n.emit("Add", [scaled, per_channel(n, n.param("bias"))], last=True)


@lowering("onnx", "instance_norm")
def _instance_norm(n: Lowered) -> None:
    """InstanceNormalization; with running statistics, which an inference graph normalises by,
    BatchNormalization of them."""
    weight, bias = _affine_params(n, n.in_shape[0])
    if n.a["track_running_stats"]:
        stats = [n.param("running_mean"), n.param("running_var")]
        n.emit("BatchNormalization", [n.x, weight, bias, *stats], last=True, epsilon=n.a["eps"])
        return
    n.emit("InstanceNormalization", [n.x, weight, bias], last=True, epsilon=n.a["eps"])


@lowering("onnx", "identity", "dropout", "stochastic_depth")
def _identity(n: Lowered) -> None:
    # an inference graph has no dropout and no stochastic depth, and keeps an identity only where
    # a consumer reads the same value twice
    n.emit("Identity", [n.x], last=True)


@lowering("onnx", "layer_scale")
def _layer_scale(n: Lowered) -> None:
    n.emit("Mul", [n.x, n.param("")], last=True)


def _filled(n: Lowered, value: float) -> None:
    """A tensor of the input's shape, batch included, every value ``value``: ConstantOfShape of
    its Shape, so that none of the input's values (an inf, a NaN) reaches it, as in PyTorch's
    ``torch.full_like``."""
    shape = n.emit("Shape", [n.x], ints=True)
    fill = onnx.helper.make_tensor("value", onnx.TensorProto.FLOAT, [1], [float(value)])
    n.emit("ConstantOfShape", [shape], last=True, value=fill)


@lowering("onnx", "constant")
def _constant(n: Lowered) -> None:
    _filled(n, n.a["value"])


# ---------------------------------------------------------------------------
# Moving and cutting


@lowering("onnx", "flatten")
def _flatten(n: Lowered) -> None:
    t = n.in_type
    start, end = n.axis(n.a["start"]), n.axis(n.a["end"])
    if start == 1 and end == t.rank:
        n.emit("Flatten", [n.x], last=True, axis=1)
        return
    n.emit("Reshape", [n.x, n.e.ints("shape", [0, *(d for d in n.data.shape)])], last=True)


@lowering("onnx", "reshape")
def _reshape(n: Lowered) -> None:
    n.emit("Reshape", [n.x, n.e.ints("shape", [0, *n.data.shape])], last=True)


@lowering("onnx", "permute")
def _permute(n: Lowered) -> None:
    n.emit("Transpose", [n.x], last=True, perm=[0, *(d + 1 for d in n.a["dims"])])


@lowering("onnx", "transpose")
def _transpose(n: Lowered) -> None:
    perm = list(range(n.in_type.rank + 1))
    i, j = n.axis(n.a["axis0"]), n.axis(n.a["axis1"])
    perm[i], perm[j] = perm[j], perm[i]
    n.emit("Transpose", [n.x], last=True, perm=perm)


@lowering("onnx", "slice")
def _slice(n: Lowered) -> None:
    axis = n.axis(n.a["axis"])
    stop = n.in_shape[axis - 1] if n.a["stop"] is None else n.a["stop"]
    e = n.e
    inputs = [n.x, e.ints("starts", [n.a["start"]]), e.ints("ends", [stop]), e.ints("axes", [axis])]
    if n.a["step"] != 1:
        inputs.append(e.ints("steps", [n.a["step"]]))
    n.emit("Slice", inputs, last=True)


@lowering("onnx", "pad")
def _pad(n: Lowered) -> None:
    from nasdsl.ops.tensor import pad_axes

    begins, ends = [0] * (len(n.in_shape) + 1), [0] * (len(n.in_shape) + 1)  # with the batch axis
    for axis, (before, after) in zip(pad_axes(n.in_type, n.a), n.a["pads"], strict=True):
        begins[axis + 1], ends[axis + 1] = before, after
    pads = n.e.ints("pads", begins + ends)
    mode = n.a["mode"]
    if mode == "constant":
        n.emit("Pad", [n.x, pads, n.e.const("value", n.a["value"], np.float32)], last=True)
        return
    if mode == "circular" and n.opset < 19:
        raise CodegenError(
            f"the ONNX backend cannot lower pad mode circular (node {n.node}) at opset {n.opset}: ONNX's Pad "
            "wraps around from opset 19; export at opset 19 or later",
            location=n.data.loc,
            path=f"{n.data.keypath}.mode" if n.data.keypath else None,
        )
    n.emit("Pad", [n.x, pads], last=True, mode={"reflect": "reflect", "replicate": "edge", "circular": "wrap"}[mode])


@lowering("onnx", "select")
def _select(n: Lowered) -> None:
    index = n.e.const("index", n.a["index"], np.int64)  # a scalar index drops the axis
    n.emit("Gather", [n.x, index], last=True, axis=n.axis(n.a["axis"]))


@lowering("onnx", "roll")
def _roll(n: Lowered) -> None:
    """torch.roll as two slices joined in the other order, axis by axis."""
    y = n.x
    e = n.e
    shape = list(n.in_shape)
    pairs = list(zip(n.a["shifts"], n.a["axes"], strict=True))
    for k, (shift, axis) in enumerate(pairs):
        index = n.axis(axis)
        size = shape[index - 1]
        shift %= size
        last = k == len(pairs) - 1
        if shift == 0:
            y = n.emit("Identity", [y], last=last)
            continue
        ax = e.ints("axes", [index])
        tail = n.emit("Slice", [y, e.ints("starts", [size - shift]), e.ints("ends", [size]), ax],
                      at=e.full(tuple(shift if i == index - 1 else d for i, d in enumerate(shape))))  # fmt: skip
        head = n.emit("Slice", [y, e.ints("starts", [0]), e.ints("ends", [size - shift]), ax],
                      at=e.full(tuple(size - shift if i == index - 1 else d for i, d in enumerate(shape))))  # fmt: skip
        y = n.emit("Concat", [tail, head], last=last, axis=index)


@lowering("onnx", "channel_shuffle")
def _channel_shuffle(n: Lowered) -> None:
    c, *rest = n.in_shape
    g = n.a["groups"]
    split = n.emit("Reshape", [n.x, n.e.ints("shape", [0, g, c // g, *rest])], at=n.e.full((g, c // g, *rest)))
    perm = [0, 2, 1, *range(3, len(rest) + 3)]
    moved = n.emit("Transpose", [split], at=n.e.full((c // g, g, *rest)), perm=perm)
    n.emit("Reshape", [moved, n.e.ints("shape", [0, c, *rest])], last=True)


@lowering("onnx", "parameter")
def _parameter(n: Lowered) -> None:
    """The learned tensor expanded to the input's batch: Expand to (N, *shape)."""
    e = n.e
    batch = n.emit("Shape", [n.x], ints=True, start=0, end=1) if n.opset >= 15 else None
    if batch is None:
        whole = n.emit("Shape", [n.x], ints=True)
        batch = n.emit("Slice", [whole, e.ints("starts", [0]), e.ints("ends", [1])], ints=True)
    dims = n.emit("Concat", [batch, e.ints("dims", list(n.data.shape))], ints=True, axis=0)
    n.emit("Expand", [n.param(""), dims], last=True)


def nearest_resize_exact(size: int, out: int, ratio: Fraction, table: np.ndarray) -> bool:
    """Whether ONNX's nearest Resize by ``ratio`` (``asymmetric`` coordinates rounded down, position
    ``floor(i / ratio)``) picks ``table`` whether a runtime divides exactly or in float32: the ratio is a float32
    (as 2, 0.5, 1.5 are; 2.3 is not), so that ``size * ratio`` and a whole quotient are exact, a
    quotient that is not whole lies at least ``1 / numerator`` below the next whole number, far more
    than float32's error, and the positions are PyTorch's."""
    if Fraction(float(np.float32(ratio))) != ratio or math.floor(size * ratio) != out:
        return False
    if ratio.numerator * max(size, out) >= 1 << 20:
        return False
    return all(table[i] == math.floor(i / ratio) for i in range(out))


def resize_scale(size: int, out: int, scale: float) -> np.float32:
    """The float32 scale for ONNX's Resize that maps coordinates by ``scale`` (PyTorch's
    ``scale_factor``) and gives PyTorch's ``out = floor(size * scale)``: ``scale`` in float32,
    moved by the fewest units in the last place that make ``floor(size * s)`` ``out`` both in
    float32 (ONNX Runtime) and in double (ONNX's shape inference); 1 where the size is kept
    (PyTorch's linear kernels copy such an axis)."""
    if out == size:
        return np.float32(1.0)
    s = np.float32(scale)
    for _ in range(64):
        low = min(math.floor(size * float(s)), math.floor(float(np.float32(size) * s)))
        high = max(math.floor(size * float(s)), math.floor(float(np.float32(size) * s)))
        if low == high == out:
            return s
        s = np.nextafter(s, np.float32(math.inf if low < out else 0.0))
    raise CodegenError(f"no float32 scale near {scale} gives {out} positions from {size}")


@lowering("onnx", "interpolate", "interpolate_like")
def _interpolate(n: Lowered) -> None:
    """PyTorch's ``F.interpolate`` (``recompute_scale_factor`` unset: a scale maps the coordinates).

    Nearest is ONNX's Resize where it picks PyTorch's positions in any float32 arithmetic (a scale
    or a ratio of sizes that float32 holds, 2, 0.5, 1.5: :func:`nearest_resize_exact`), and elsewhere
    a Gather of PyTorch's positions along each axis that changes: Resize divides by the float32 scale
    where PyTorch multiplies by its rounded inverse, which picks another position where the quotient
    is a whole number (69 / 2.3), and ONNX Runtime copies the input wherever the sizes stay, whatever
    the scale. The linear modes are Resize: by ``scales`` where a scale maps the coordinates
    (``half_pixel``: PyTorch's, to a side of 1 included, which ``pytorch_half_pixel`` is not),
    otherwise to the sizes (``align_corners`` ignores the scale)."""
    e = n.e
    ins, outs = n.in_shape[1:], n.data.shape[1:]
    spatial = len(ins)
    scale = n.a.get("scale")
    if n.a["mode"] == "nearest":
        tables = [nearest_sources(i, o, scale, spatial) for i, o in zip(ins, outs, strict=True)]
        moved = [k for k, table in enumerate(tables) if not np.array_equal(table, np.arange(ins[k]))]
        if not moved:
            n.emit("Identity", [n.x], last=True)
            return
        ratios = [Fraction(scale) if scale is not None else Fraction(o, i) for i, o in zip(ins, outs, strict=True)]
        exact = all(nearest_resize_exact(*args) for args in zip(ins, outs, ratios, tables, strict=True))
        if exact and ins != outs:  # ONNX Runtime copies the input where no side changes, whatever the scale
            attrs = {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}
            _resize(n, [float(r) for r in ratios] if scale is not None else None, attrs)
            return
        y, shape = n.x, list(n.in_shape)
        for k in moved:
            shape[k + 1] = outs[k]
            positions = e.const(f"positions{k}", tables[k], np.int64)
            y = n.emit("Gather", [y, positions], at=e.full(tuple(shape)), last=k == moved[-1], axis=k + 2)
        return
    if n.a["align_corners"]:
        attrs = {"mode": "linear", "coordinate_transformation_mode": "align_corners"}
    else:
        attrs = {"mode": "linear", "coordinate_transformation_mode": "half_pixel"}
    by_scale = scale is not None and not n.a["align_corners"]
    _resize(n, [resize_scale(i, o, scale) for i, o in zip(ins, outs, strict=True)] if by_scale else None, attrs)


def _resize(n: Lowered, scales: list | None, attrs: dict) -> None:
    """A Resize by ``scales`` (one per spatial axis) or, where None, to the IR's sizes."""
    e = n.e
    if scales is not None:
        n.emit("Resize", [n.x, "", e.const("scales", [1.0, 1.0, *scales], np.float32)], last=True, **attrs)
        return
    if isinstance(n.shape[0], str):  # a symbolic batch: the input's batch and channels, then the new sizes
        whole = n.emit("Shape", [n.x], ints=True)
        first = n.emit("Slice", [whole, e.ints("starts", [0]), e.ints("ends", [2])], ints=True)
        sizes = n.emit("Concat", [first, e.ints("spatial", list(n.data.shape[1:]))], ints=True, axis=0)
    else:
        sizes = e.ints("sizes", list(n.shape))
    n.emit("Resize", [n.x, "", "", sizes], last=True, **attrs)


# ---------------------------------------------------------------------------
# Features


@lowering("onnx", "linear")
def _linear(n: Lowered) -> None:
    if len(n.in_shape) == 1:
        inputs = [n.x, n.param("weight"), *([n.param("bias")] if n.a["bias"] else [])]
        n.emit("Gemm", inputs, last=True, transB=1)
        return
    # over the last axis of a larger tensor: MatMul with the weight transposed (the initializer
    # keeps the state_dict's layout; runtimes fold the Transpose)
    out = n.a["out"]
    w = n.emit("Transpose", [n.param("weight")], at=(n.in_shape[-1], out), perm=[1, 0])
    if not n.a["bias"]:
        n.emit("MatMul", [n.x, w], last=True)
        return
    n.emit("Add", [n.emit("MatMul", [n.x, w]), n.param("bias")], last=True)


@lowering("onnx", "layer_norm")
def _layer_norm(n: Lowered) -> None:
    eps = n.a["eps"]
    t = n.in_type
    axis = t.channel_axis if n.a["dim"] == "channels" and t.channel_axis is not None else t.rank - 1
    if axis == t.rank - 1:
        normalise_last_axis(n, n.x, n.shape, eps, last=True)
        return
    # over a channel axis that is not last: move it last, normalise, move it back
    perm = [0, *(i + 1 for i in range(t.rank) if i != axis), axis + 1]
    moved = tuple(n.in_shape[p - 1] for p in perm[1:])
    last = n.emit("Transpose", [n.x], at=n.e.full(moved), perm=perm)
    normed = normalise_last_axis(n, last, n.e.full(moved), eps)
    back = [perm.index(i) for i in range(t.rank + 1)]
    n.emit("Transpose", [normed], last=True, perm=back)


def normalise_last_axis(n: Lowered, x: str, shape: Shape, eps: float, last: bool = False) -> str:
    """LayerNormalization over the last axis from opset 17; below it, the same arithmetic in
    primitive ops (mean, centred square mean, divide by the root of the variance plus eps,
    then the affine part), as PyTorch's own exporter writes it for those opsets."""
    inputs = [n.param("weight"), n.param("bias")]
    if n.opset >= 17:
        return n.emit("LayerNormalization", [x, *inputs], at=shape, last=last, axis=-1, epsilon=eps)
    reduced = (*shape[:-1], 1)
    mean = n.emit("ReduceMean", [x], at=reduced, axes=[-1], keepdims=1)
    centred = n.emit("Sub", [x, mean], at=shape)
    square = n.emit("Mul", [centred, centred], at=shape)
    variance = n.emit("ReduceMean", [square], at=reduced, axes=[-1], keepdims=1)
    spread = n.emit("Sqrt", [n.emit("Add", [variance, n.e.scalar(eps)], at=reduced)], at=reduced)
    scaled = n.emit("Mul", [n.emit("Div", [centred, spread], at=shape), inputs[0]], at=shape)
    return n.emit("Add", [scaled, inputs[1]], at=shape, last=last)


@lowering("onnx", "softmax")
def _softmax(n: Lowered) -> None:
    n.emit("Softmax", [n.x], last=True, axis=n.axis(n.a["dim"]))


@lowering("onnx", "attention")
def _attention(n: Lowered) -> None:
    """nn.MultiheadAttention (batch first, self-attention, no mask, eval): q, k and v from one
    projection, split into heads, softmax(q k^T / sqrt(d)) v per head, heads joined, projected."""
    e = n.e
    length, embed = n.in_shape
    heads = n.a["heads"]
    d = embed // heads
    batch = n.shape[0]
    w = n.emit("Transpose", [n.param("in_proj_weight")], at=(embed, 3 * embed), perm=[1, 0])
    qkv = n.emit("MatMul", [n.x, w], at=(batch, length, 3 * embed))
    if n.a["bias"]:
        qkv = n.emit("Add", [qkv, n.param("in_proj_bias")], at=(batch, length, 3 * embed))
    split = n.emit("Reshape", [qkv, e.ints("qkv_shape", [0, length, 3, heads, d])], at=(batch, length, 3, heads, d))
    moved = n.emit("Transpose", [split], at=(3, batch, heads, length, d), perm=[2, 0, 3, 1, 4])
    parts = []
    for i, name in enumerate(("q", "k", "v")):
        index = e.const(f"{name}_index", i, np.int64)
        parts.append(n.emit("Gather", [moved, index], at=(batch, heads, length, d), axis=0))
    q, k, v = parts
    kt = n.emit("Transpose", [k], at=(batch, heads, d, length), perm=[0, 1, 3, 2])
    scores = n.emit("MatMul", [q, kt], at=(batch, heads, length, length))
    scaled = n.emit("Mul", [scores, e.scalar(1.0 / math.sqrt(d))], at=(batch, heads, length, length))
    weights = n.emit("Softmax", [scaled], at=(batch, heads, length, length), axis=-1)
    mixed = n.emit("MatMul", [weights, v], at=(batch, heads, length, d))
    joined = n.emit("Transpose", [mixed], at=(batch, length, heads, d), perm=[0, 2, 1, 3])
    flat = n.emit("Reshape", [joined, e.ints("joined_shape", [0, length, embed])], at=(batch, length, embed))
    wo = n.emit("Transpose", [n.param("out_proj.weight")], at=(embed, embed), perm=[1, 0])
    if not n.a["bias"]:
        n.emit("MatMul", [flat, wo], last=True)
        return
    n.emit("Add", [n.emit("MatMul", [flat, wo], at=(batch, length, embed)), n.param("out_proj.bias")], last=True)


# ---------------------------------------------------------------------------
# Merges


@lowering("onnx", "concat")
def _concat(n: Lowered) -> None:
    n.emit("Concat", n.xs, last=True, axis=n.axis(n.a["axis"]))


@lowering("onnx", "add")
def _add(n: Lowered) -> None:
    total = n.xs[0]
    for i, term in enumerate(n.xs[1:], start=2):
        total = n.emit("Add", [total, term], last=i == len(n.xs))


@lowering("onnx", "mul")
def _mul(n: Lowered) -> None:
    total = n.xs[0]
    for i, term in enumerate(n.xs[1:], start=2):
        total = n.emit("Mul", [total, term], last=i == len(n.xs))


@lowering("onnx", "mean")
def _mean(n: Lowered) -> None:
    n.emit("Mean", n.xs, last=True)


@lowering("onnx", "matmul")
def _matmul(n: Lowered) -> None:
    x, y = n.xs
    if n.a["transpose_b"]:
        t = n.in_types[1]
        perm = list(range(t.rank + 1))
        perm[-1], perm[-2] = perm[-2], perm[-1]
        y = n.emit("Transpose", [y], at=n.e.full((*t.shape[:-2], t.shape[-1], t.shape[-2])), perm=perm)
    n.emit("MatMul", [x, y], last=True)


@lowering("onnx", "zero")
def _zero(n: Lowered) -> None:  # a search space's "none", where the builder keeps it: zeros like its input
    _filled(n, 0.0)


# ---------------------------------------------------------------------------
# MaxViT's attention within block and grid partitions (nasdsl/ops/partition.py)


@lowering("onnx", "partition_attention")
def _partition_attention(n: Lowered) -> None:
    """Tokens (N, ..., L, C): q, k and v from to_qkv, split into heads; softmax(q (k C^-1/2)^T +
    bias) v per partition and head, the bias gathered from the table at each pair's relative
    offset (the index is a constant: it follows from the partition's side alone); heads joined,
    then merge."""
    e = n.e
    *lead, length, channels = n.in_shape
    size = n.a["size"]
    heads = channels // n.a["head_dim"]
    d = n.a["head_dim"]
    batch = n.shape[0]
    k = len(lead)  # the partitions' axes, between the batch and the positions
    w = n.emit("Transpose", [n.param("to_qkv.weight")], at=(channels, 3 * channels), perm=[1, 0])
    qkv = n.emit("MatMul", [n.x, w], at=(batch, *lead, length, 3 * channels))
    qkv = n.emit("Add", [qkv, n.param("to_qkv.bias")], at=(batch, *lead, length, 3 * channels))
    split_shape = (batch, *lead, length, 3, heads, d)
    split = n.emit("Reshape", [qkv, e.ints("qkv_shape", [0, *lead, length, 3, heads, d])], at=split_shape)
    # (N, ..., L, 3, heads, d) -> (3, N, ..., heads, L, d)
    perm = [k + 2, 0, *range(1, k + 1), k + 3, k + 1, k + 4]
    moved = n.emit("Transpose", [split], at=(3, batch, *lead, heads, length, d), perm=perm)
    q, key, v = (
        n.emit("Gather", [moved, e.const(f"{name}_index", i, np.int64)], at=(batch, *lead, heads, length, d), axis=0)
        for i, name in enumerate(("q", "k", "v"))
    )
    scaled = n.emit("Mul", [key, e.scalar(channels**-0.5)], at=(batch, *lead, heads, length, d))
    rank = k + 4
    swap = [*range(rank - 2), rank - 1, rank - 2]
    kt = n.emit("Transpose", [scaled], at=(batch, *lead, heads, d, length), perm=swap)
    scores = n.emit("MatMul", [q, kt], at=(batch, *lead, heads, length, length))
    computed = OPS["partition_attention"].computed([], n.a)["relative_position_index"]
    index = e.ints(f"relative_position_index_{size}", computed.reshape(-1).tolist())
    rows = n.emit("Gather", [n.param("relative_position_bias_table"), index], at=(length * length, heads), axis=0)
    table = n.emit("Reshape", [rows, e.ints("bias_shape", [length, length, heads])], at=(length, length, heads))
    bias = n.emit("Transpose", [table], at=(heads, length, length), perm=[2, 0, 1])
    biased = n.emit("Add", [scores, bias], at=(batch, *lead, heads, length, length))
    weights = n.emit("Softmax", [biased], at=(batch, *lead, heads, length, length), axis=-1)
    mixed = n.emit("MatMul", [weights, v], at=(batch, *lead, heads, length, d))
    back = [*range(k + 1), k + 2, k + 1, k + 3]  # (N, ..., heads, L, d) -> (N, ..., L, heads, d)
    joined = n.emit("Transpose", [mixed], at=(batch, *lead, length, heads, d), perm=back)
    flat_shape = (batch, *lead, length, channels)
    flat = n.emit("Reshape", [joined, e.ints("joined_shape", [0, *lead, length, channels])], at=flat_shape)
    wm = n.emit("Transpose", [n.param("merge.weight")], at=(channels, channels), perm=[1, 0])
    merged = n.emit("MatMul", [flat, wm], at=flat_shape)
    n.emit("Add", [merged, n.param("merge.bias")], last=True)


# ---------------------------------------------------------------------------
# Multiscale vision transformers (nasdsl/ops/multiscale.py)


def _folded(batch: int | str, k: int) -> int | str:
    """The batch dimension with ``k`` more folded into it (the heads of pooling attention)."""
    return batch * k if isinstance(batch, int) else f"{batch}*{k}"


def _norm_last(n: Lowered, x: str, shape: Shape, prefix: str, eps: float) -> str:
    """LayerNorm over the last axis with the parameters ``prefix.weight`` and ``prefix.bias``."""
    weight, bias = n.param(f"{prefix}.weight"), n.param(f"{prefix}.bias")
    if n.opset >= 17:
        return n.emit("LayerNormalization", [x, weight, bias], at=shape, axis=-1, epsilon=eps)
    reduced = (*shape[:-1], 1)
    mean = n.emit("ReduceMean", [x], at=reduced, axes=[-1], keepdims=1)
    centred = n.emit("Sub", [x, mean], at=shape)
    variance = n.emit("ReduceMean", [n.emit("Mul", [centred, centred], at=shape)], at=reduced, axes=[-1], keepdims=1)
    spread = n.emit("Sqrt", [n.emit("Add", [variance, n.e.scalar(eps)], at=reduced)], at=reduced)
    scaled = n.emit("Mul", [n.emit("Div", [centred, spread], at=shape), weight], at=shape)
    return n.emit("Add", [scaled, bias], at=shape)


def _pool_heads(n: Lowered, x: str, which: str, heads: int, d: int) -> str:
    """Pool ``which`` (N, heads, L, d) on the grid, every head alike, the class token aside; then LayerNorm."""
    from nasdsl.ops.multiscale import pooled_grid

    e, a, b = n.e, n.a, n.e.batch
    cls = 1 if a["class_token"] else 0
    grid, out_grid = a["grid"], pooled_grid(a, which)
    kind = "q" if which == "q" else "kv"
    kernel, stride = list(a[f"kernel_{kind}"]), list(a[f"stride_{kind}"])
    cells, out_cells = math.prod(grid), math.prod(out_grid)
    axis = e.ints("axes", [2])
    rest = n.emit("Slice", [x, e.ints("starts", [cls]), e.ints("ends", [cls + cells]), axis], at=(b, heads, cells, d))
    moved = n.emit("Transpose", [rest], at=(b, heads, d, cells), perm=[0, 1, 3, 2])
    maps = n.emit("Reshape", [moved, e.ints("maps", [-1, d, *grid])], at=(_folded(b, heads), d, *grid))
    pads = [k // 2 for k in kernel] * 2
    conv = n.emit("Conv", [maps, n.param(f"pool_{which}.pool.weight")], at=(_folded(b, heads), d, *out_grid),
                  kernel_shape=kernel, strides=stride, pads=pads, group=d)  # fmt: skip
    back = n.emit("Reshape", [conv, e.ints("tokens", [-1, heads, d, out_cells])], at=(b, heads, d, out_cells))
    tokens = n.emit("Transpose", [back], at=(b, heads, out_cells, d), perm=[0, 1, 3, 2])
    if cls:
        token = n.emit("Slice", [x, e.ints("starts", [0]), e.ints("ends", [1]), axis], at=(b, heads, 1, d))
        tokens = n.emit("Concat", [token, tokens], at=(b, heads, cls + out_cells, d), axis=2)
    return _norm_last(n, tokens, (b, heads, cls + out_cells, d), f"pool_{which}.norm_act.0", a["eps"])


def _rel_table(n: Lowered, axis: str, q: int, k: int, d: int) -> str:
    """(q, k, d): torchvision's row of ``rel_pos_<axis>`` for each query and key position, the table
    resized linearly to 2 max(q, k) - 1 rows first where it has another number."""
    from nasdsl.ops.multiscale import rel_pos_sizes

    table = n.param(f"rel_pos_{axis}")
    spatial, temporal = rel_pos_sizes(n.a)
    have = temporal if axis == "t" else spatial
    size = 2 * max(q, k) - 1
    if have != size:  # F.interpolate(table.T[None], size, mode="linear"): half-pixel centres
        columns = n.emit("Transpose", [table], at=(d, have), perm=[1, 0])
        wide = n.emit("Reshape", [columns, n.e.ints("row", [1, d, have])], at=(1, d, have))
        resized = n.emit("Resize", [wide, "", "", n.e.ints("sizes", [1, d, size])], at=(1, d, size), mode="linear",
                         coordinate_transformation_mode="pytorch_half_pixel")  # fmt: skip
        flat = n.emit("Reshape", [resized, n.e.ints("table", [d, size])], at=(d, size))
        table = n.emit("Transpose", [flat], at=(size, d), perm=[1, 0])
    q_step, k_step = max(k / q, 1.0), max(q / k, 1.0)
    queries = np.arange(q, dtype=np.float32)[:, None] * np.float32(q_step)
    keys = (np.arange(k, dtype=np.float32)[None, :] - np.float32(k - 1)) * np.float32(k_step)
    index = n.e.const(f"rel_pos_{axis}_index", (queries - keys).astype(np.int64), np.int64)
    return n.emit("Gather", [table, index], at=(q, k, d), axis=0)


@lowering("onnx", "pooling_attention")
def _pooling_attention(n: Lowered) -> None:
    """torchvision's MultiscaleAttention at inference: q, k and v from one projection, pooled per head,
    softmax(q k^T / sqrt(d) + relative positions) v, plus the pooled q, heads joined and projected."""
    from nasdsl.ops.multiscale import pooled, pooled_grid

    e, a, b = n.e, n.a, n.e.batch
    length, c = n.in_shape
    out, heads = a["out"], a["heads"]
    d = out // heads
    cls = 1 if a["class_token"] else 0
    w = n.emit("Transpose", [n.param("qkv.weight")], at=(c, 3 * out), perm=[1, 0])
    projected = n.emit("MatMul", [n.x, w], at=(b, length, 3 * out))
    qkv = n.emit("Add", [projected, n.param("qkv.bias")], at=(b, length, 3 * out))
    split = n.emit("Reshape", [qkv, e.ints("qkv_shape", [0, length, 3, heads, d])], at=(b, length, 3, heads, d))
    moved = n.emit("Transpose", [split], at=(3, b, heads, length, d), perm=[2, 0, 3, 1, 4])
    parts = {}
    for i, which in enumerate(("q", "k", "v")):
        part = n.emit("Gather", [moved, e.const(f"{which}_index", i, np.int64)], at=(b, heads, length, d), axis=0)
        parts[which] = _pool_heads(n, part, which, heads, d) if pooled(a, which) else part
    q, k, v = parts["q"], parts["k"], parts["v"]
    q_grid, k_grid = pooled_grid(a, "q"), pooled_grid(a, "k")
    lq, lk = cls + math.prod(q_grid), cls + math.prod(k_grid)
    kt = n.emit("Transpose", [k], at=(b, heads, d, lk), perm=[0, 1, 3, 2])
    scaled = n.emit("Mul", [q, e.scalar(d**-0.5)], at=(b, heads, lq, d))
    scores = n.emit("MatMul", [scaled, kt], at=(b, heads, lq, lk))
    if a["rel_pos"]:
        (qt, qh, qw), (ktt, kh, kw) = q_grid, k_grid
        cells = qt * qh * qw
        ax = e.ints("axes", [2])
        r = n.emit("Slice", [q, e.ints("starts", [cls]), e.ints("ends", [lq]), ax], at=(b, heads, cells, d))
        r = n.emit("Reshape", [r, e.ints("grid_q", [0, heads, qt, qh, qw, d])], at=(b, heads, qt, qh, qw, d))
        terms = []
        for axis, (nq, nk), equation, spread in (
            ("h", (qh, kh), "nathwd,hkd->nathwk", [1, kh, 1]),
            ("w", (qw, kw), "nathwd,wkd->nathwk", [1, 1, kw]),
            ("t", (qt, ktt), "nathwd,tkd->nathwk", [ktt, 1, 1]),
        ):
            table = _rel_table(n, axis, nq, nk, d)
            along = n.emit("Einsum", [r, table], at=(b, heads, qt, qh, qw, nk), equation=equation)
            shape = [0, heads, qt, qh, qw, *spread]
            terms.append(n.emit("Reshape", [along, e.ints(f"along_{axis}", shape)], at=(b, *shape[1:])))
        full = (b, heads, qt, qh, qw, ktt, kh, kw)
        bias = n.emit("Add", [n.emit("Add", terms[:2], at=(b, heads, qt, qh, qw, 1, kh, kw)), terms[2]], at=full)
        flat_bias = e.ints("bias", [0, heads, cells, ktt * kh * kw])
        bias = n.emit("Reshape", [bias, flat_bias], at=(b, heads, cells, lk - cls))
        if cls:
            bias = n.emit("Pad", [bias, e.ints("pads", [0, 0, cls, cls, 0, 0, 0, 0])], at=(b, heads, lq, lk))
        scores = n.emit("Add", [scores, bias], at=(b, heads, lq, lk))
    weights = n.emit("Softmax", [scores], at=(b, heads, lq, lk), axis=-1)
    mixed = n.emit("MatMul", [weights, v], at=(b, heads, lq, d))
    if a["residual_pool"]:  # the pooled q added to every token but the class token
        keep = e.const("residual_rows", [[0.0]] * cls + [[1.0]] * (lq - cls), np.float32)
        mixed = n.emit("Add", [mixed, n.emit("Mul", [q, keep], at=(b, heads, lq, d))], at=(b, heads, lq, d))
    joined = n.emit("Transpose", [mixed], at=(b, lq, heads, d), perm=[0, 2, 1, 3])
    flat = n.emit("Reshape", [joined, e.ints("joined_shape", [0, lq, out])], at=(b, lq, out))
    wo = n.emit("Transpose", [n.param("project.0.weight")], at=(out, out), perm=[1, 0])
    n.emit("Add", [n.emit("MatMul", [flat, wo], at=(b, lq, out)), n.param("project.0.bias")], last=True)


@lowering("onnx", "positional_encoding")
def _positional_encoding(n: Lowered) -> None:
    """The map's positions as tokens behind the class token, plus the position embedding (absolute)."""
    e, b = n.e, n.e.batch
    c, frames, h, w = n.in_shape
    cells = frames * h * w
    flat = n.emit("Reshape", [n.x, e.ints("flat", [0, c, cells])], at=(b, c, cells))
    tokens = n.emit("Transpose", [flat], at=(b, cells, c), perm=[0, 2, 1])
    if isinstance(b, int):  # a fixed batch: a constant shape, which ONNX's shape inference follows
        dims = e.ints("token_dims", [b, 1, c])
    else:
        batch = n.emit("Shape", [n.x], ints=True, start=0, end=1) if n.opset >= 15 else None
        if batch is None:
            whole = n.emit("Shape", [n.x], ints=True)
            batch = n.emit("Slice", [whole, e.ints("starts", [0]), e.ints("ends", [1])], ints=True)
        dims = n.emit("Concat", [batch, e.ints("token_dims", [1, c])], ints=True, axis=0)
    token = n.emit("Reshape", [n.param("class_token"), e.ints("token", [1, 1, c])], at=(1, 1, c))
    token = n.emit("Expand", [token, dims], at=(b, 1, c))
    if not n.a["absolute"]:
        n.emit("Concat", [token, tokens], last=True, axis=1)
        return
    joined = n.emit("Concat", [token, tokens], at=(b, 1 + cells, c), axis=1)
    temporal = n.emit("Reshape", [n.param("temporal_pos"), e.ints("temporal", [frames, 1, c])], at=(frames, 1, c))
    spatial = n.emit("Reshape", [n.param("spatial_pos"), e.ints("spatial", [1, h * w, c])], at=(1, h * w, c))
    grid = n.emit("Add", [temporal, spatial], at=(frames, h * w, c))
    grid = n.emit("Reshape", [grid, e.ints("grid", [cells, c])], at=(cells, c))
    first = n.emit("Reshape", [n.param("class_pos"), e.ints("class_pos", [1, c])], at=(1, c))
    position = n.emit("Concat", [first, grid], at=(1 + cells, c), axis=0)
    n.emit("Add", [joined, position], last=True)


def check_supported(g: nx.DiGraph) -> None:
    """Refuse what no lowering here handles, before anything is written."""
    for name, data in ir.nodes(g):
        if data.op == "lrn" and data.attrs["size"] % 2 == 0 and data.type.rank != 3:
            raise CodegenError(f"an even LRN window needs a (C, H, W) map (node {name})", location=data.loc)


__all__ = ["BN_PARAMS", "Lowered", "adaptive_matrix", "check_supported", "lower", "pool_geometry"]


# ---------------------------------------------------------------------------
# Window attention and patch merging (nasdsl/ops/window.py). Every size is known at export, so
# the padding, the windows and the shift's mask are constants; the batch stays the first axis
# (windows are a second axis, not folded into the batch).


def _rolled(n: Lowered, y: str, shape: Sequence, shifts: Sequence[int]) -> str:
    """``y`` (batch first, then ``shape``) rolled by ``shifts`` along the axes after the batch."""
    e = n.e
    for axis, shift in enumerate(shifts, start=1):
        size = shape[axis - 1]
        shift %= size
        if shift == 0:
            continue
        ax = e.ints("axes", [axis])
        tail_at = e.full(tuple(shift if i == axis - 1 else d for i, d in enumerate(shape)))
        head_at = e.full(tuple(size - shift if i == axis - 1 else d for i, d in enumerate(shape)))
        tail = n.emit("Slice", [y, e.ints("starts", [size - shift]), e.ints("ends", [size]), ax], at=tail_at)
        head = n.emit("Slice", [y, e.ints("starts", [0]), e.ints("ends", [size - shift]), ax], at=head_at)
        y = n.emit("Concat", [tail, head], at=e.full(tuple(shape)), axis=axis)
    return y


def _shift_mask(padded: Sequence[int], window: Sequence[int], shift: Sequence[int]) -> np.ndarray:
    """-100 between tokens of a window that the roll brought from different parts of the map,
    0 elsewhere: (windows, 1, n, n), windows in row-major order."""
    part = np.zeros(padded, dtype=np.int64)
    for axis, (size, side, s) in enumerate(zip(padded, window, shift, strict=True)):
        if s > 0:
            along = np.zeros(size, dtype=np.int64)
            along[size - side : size - s] = 1
            along[size - s :] = 2
            part = part * 3 + along.reshape([size if j == axis else 1 for j in range(len(padded))])
    k = len(window)
    split = [d for size, side in zip(padded, window, strict=True) for d in (size // side, side)]
    order = [*range(0, 2 * k, 2), *range(1, 2 * k, 2)]
    tokens = part.reshape(split).transpose(order).reshape(-1, math.prod(window))
    mask = np.where(tokens[:, None, :] != tokens[:, :, None], -100.0, 0.0)
    return mask[:, None].astype(np.float32)


def _linear_last(n: Lowered, x: str, weight: str, bias: str | None, at: Shape, inner: int, out: int) -> str:
    w = n.emit("Transpose", [weight], at=(inner, out), perm=[1, 0])
    y = n.emit("MatMul", [x, w], at=at)
    return n.emit("Add", [y, bias], at=at) if bias is not None else y


@lowering("onnx", "window_attention")
def _window_attention(n: Lowered) -> None:
    """torchvision's shifted window attention: pad to whole windows, roll back by the shift, cut
    into windows (batch, windows, tokens, C), attention per window and head with the relative
    position bias (and the shift's mask), join the windows, roll forward, crop."""
    from nasdsl.ops import window as win

    e, a = n.e, n.a
    *sizes, c = n.in_shape
    heads, k = a["heads"], len(sizes)
    window, shift = win.windows_of(sizes, a)
    padded = [-(-s // w) * w for s, w in zip(sizes, window, strict=True)]
    counts = [p // w for p, w in zip(padded, window, strict=True)]
    windows, tokens, d = math.prod(counts), math.prod(window), c // heads
    x = n.x
    if padded != list(sizes):
        pads = [0] * (k + 2) + [0, *(p - s for p, s in zip(padded, sizes, strict=True)), 0]
        x = n.emit("Pad", [x, e.ints("pads", pads)], at=e.full((*padded, c)))
    if any(shift):
        x = _rolled(n, x, (*padded, c), [-s for s in shift])
    split = [v for pair in zip(counts, window, strict=True) for v in pair]
    x = n.emit("Reshape", [x, e.ints("split", [0, *split, c])], at=e.full((*split, c)))
    order = [0, *range(1, 2 * k, 2), *range(2, 2 * k + 1, 2), 2 * k + 1]
    x = n.emit("Transpose", [x], at=e.full((*counts, *window, c)), perm=order)
    x = n.emit("Reshape", [x, e.ints("windows", [0, windows, tokens, c])], at=e.full((windows, tokens, c)))
    bias = n.param("qkv.bias") if a["qkv_bias"] else None
    if bias is not None and a["version"] == 2:  # no bias for the keys
        keep = np.concatenate([np.ones(c), np.zeros(c), np.ones(c)]).astype(np.float32)
        bias = n.emit("Mul", [bias, e.const("key_bias_off", keep, np.float32)], at=(3 * c,))
    qkv = _linear_last(n, x, n.param("qkv.weight"), bias, e.full((windows, tokens, 3 * c)), c, 3 * c)
    qkv = n.emit("Reshape", [qkv, e.ints("qkv_shape", [0, windows, tokens, 3, heads, d])],
                 at=e.full((windows, tokens, 3, heads, d)))  # fmt: skip
    moved = n.emit("Transpose", [qkv], at=(3, e.batch, windows, heads, tokens, d), perm=[3, 0, 1, 4, 2, 5])
    q, key, v = (
        n.emit("Gather", [moved, e.const(f"{name}_index", i, np.int64)], at=e.full((windows, heads, tokens, d)), axis=0)
        for i, name in enumerate(("q", "k", "v"))
    )
    scores_at = e.full((windows, heads, tokens, tokens))
    if a["version"] == 1:
        q = n.emit("Mul", [q, e.scalar(d**-0.5)], at=e.full((windows, heads, tokens, d)))
    else:
        q, key = (_unit(n, t, e.full((windows, heads, tokens, d))) for t in (q, key))
    kt = n.emit("Transpose", [key], at=e.full((windows, heads, d, tokens)), perm=[0, 1, 2, 4, 3])
    scores = n.emit("MatMul", [q, kt], at=scores_at)
    if a["version"] == 2:
        scale = n.emit("Exp", [n.emit("Min", [n.param("logit_scale"), e.scalar(math.log(100.0))], at=(heads, 1, 1))],
                       at=(heads, 1, 1))  # fmt: skip
        scores = n.emit("Mul", [scores, scale], at=scores_at)
    full = np.asarray(win.relative_position_index(a["window"]))
    index = e.const("relative_position_index", full[:tokens, :tokens].reshape(-1), np.int64)
    if a["version"] == 1:
        table = n.param("relative_position_bias_table")
    else:
        sides = win.table_sides(a)
        coords = n.param("relative_coords_table")
        hidden = n.emit("Relu", [_linear_last(n, coords, n.param("cpb_mlp.0.weight"), n.param("cpb_mlp.0.bias"),
                                              (1, *sides, win.CPB_HIDDEN), 2, win.CPB_HIDDEN)],
                        at=(1, *sides, win.CPB_HIDDEN))  # fmt: skip
        table = _linear_last(n, hidden, n.param("cpb_mlp.2.weight"), None, (1, *sides, heads), win.CPB_HIDDEN, heads)
        table = n.emit("Reshape", [table, e.ints("table", [-1, heads])], at=(math.prod(sides), heads))
    gathered = n.emit("Gather", [table, index], at=(tokens * tokens, heads), axis=0)
    gathered = n.emit("Reshape", [gathered, e.ints("pairs", [tokens, tokens, heads])], at=(tokens, tokens, heads))
    position = n.emit("Transpose", [gathered], at=(heads, tokens, tokens), perm=[2, 0, 1])
    if a["version"] == 2:
        position = n.emit("Mul", [n.emit("Sigmoid", [position], at=(heads, tokens, tokens)), e.scalar(16.0)],
                          at=(heads, tokens, tokens))  # fmt: skip
    scores = n.emit("Add", [scores, position], at=scores_at)
    if any(shift):
        mask = e.const("shift_mask", _shift_mask(padded, window, shift), np.float32)
        scores = n.emit("Add", [scores, mask], at=scores_at)
    weights = n.emit("Softmax", [scores], at=scores_at, axis=-1)
    mixed = n.emit("MatMul", [weights, v], at=e.full((windows, heads, tokens, d)))
    joined = n.emit("Transpose", [mixed], at=e.full((windows, tokens, heads, d)), perm=[0, 1, 3, 2, 4])
    joined = n.emit("Reshape", [joined, e.ints("joined", [0, windows, tokens, c])], at=e.full((windows, tokens, c)))
    proj_bias = n.param("proj.bias") if a["proj_bias"] else None
    y = _linear_last(n, joined, n.param("proj.weight"), proj_bias, e.full((windows, tokens, c)), c, c)
    y = n.emit("Reshape", [y, e.ints("grid", [0, *counts, *window, c])], at=e.full((*counts, *window, c)))
    back = [0]
    for i in range(k):
        back += [1 + i, 1 + k + i]
    y = n.emit("Transpose", [y], at=e.full((*split, c)), perm=[*back, 2 * k + 1])
    y = n.emit("Reshape", [y, e.ints("padded", [0, *padded, c])], at=e.full((*padded, c)))
    if any(shift):
        y = _rolled(n, y, (*padded, c), list(shift))
    if padded != list(sizes):
        y = n.emit(
            "Slice", [y, e.ints("starts", [0] * k), e.ints("ends", list(sizes)), e.ints("axes", list(range(1, k + 1)))]
        )
    n.emit("Identity", [y], last=True)


def _unit(n: Lowered, x: str, at: Shape) -> str:
    """``x`` divided by its L2 norm over the last axis (at least 1e-12: F.normalize)."""
    e = n.e
    reduced = (*at[:-1], 1)
    total = n.emit("ReduceSum", [n.emit("Mul", [x, x], at=at), e.ints("last", [-1])], at=reduced, keepdims=1)
    norm = n.emit("Max", [n.emit("Sqrt", [total], at=reduced), e.scalar(1e-12)], at=reduced)
    return n.emit("Div", [x, norm], at=at)


@lowering("onnx", "patch_merging")
def _patch_merging(n: Lowered) -> None:
    """Pad odd sides, the four strided 2x2 corners joined on the channels (torchvision's order:
    (0, 0), (1, 0), (0, 1), (1, 1)), LayerNorm and the projection (or the other way round)."""
    e, a = n.e, n.a
    *lead, h, w, c = n.in_shape
    x = n.x
    ph, pw = h % 2, w % 2
    if ph or pw:
        rank = len(n.in_shape) + 1
        x = n.emit("Pad", [x, e.ints("pads", [0] * rank + [0] * len(lead) + [0, ph, pw, 0])],
                   at=e.full((*lead, h + ph, w + pw, c)))  # fmt: skip
    oh, ow = (h + 1) // 2, (w + 1) // 2
    axes = e.ints("axes", [len(lead) + 1, len(lead) + 2])
    corners = [
        n.emit(
            "Slice",
            [x, e.ints("starts", [i, j]), e.ints("ends", [h + ph, w + pw]), axes, e.ints("steps", [2, 2])],
            at=e.full((*lead, oh, ow, c)),
        )  # fmt: skip
        for i, j in ((0, 0), (1, 0), (0, 1), (1, 1))
    ]
    joined = n.emit("Concat", corners, at=e.full((*lead, oh, ow, 4 * c)), axis=-1)
    out = a["out"]

    def norm(y: str, shape: Shape, last: bool) -> str:
        inputs = [y, n.param("norm.weight"), n.param("norm.bias")]
        if n.opset >= 17:
            return n.emit("LayerNormalization", inputs, at=shape, last=last, axis=-1, epsilon=a["eps"])
        reduced = (*shape[:-1], 1)
        mean = n.emit("ReduceMean", [y], at=reduced, axes=[-1], keepdims=1)
        centred = n.emit("Sub", [y, mean], at=shape)
        variance = n.emit(
            "ReduceMean", [n.emit("Mul", [centred, centred], at=shape)], at=reduced, axes=[-1], keepdims=1
        )
        spread = n.emit("Sqrt", [n.emit("Add", [variance, e.scalar(a["eps"])], at=reduced)], at=reduced)
        scaled = n.emit("Mul", [n.emit("Div", [centred, spread], at=shape), inputs[1]], at=shape)
        return n.emit("Add", [scaled, inputs[2]], at=shape, last=last)

    def reduce(y: str, last: bool) -> str:
        weight = n.emit("Transpose", [n.param("reduction.weight")], at=(4 * c, out), perm=[1, 0])
        return n.emit("MatMul", [y, weight], at=e.full((*lead, oh, ow, out)), last=last)

    if a["norm"] == "before":
        reduce(norm(joined, e.full((*lead, oh, ow, 4 * c)), False), True)
    else:
        norm(reduce(joined, False), e.full((*lead, oh, ow, out)), True)


@lowering("onnx", "pad_to_multiple")
def _pad_to_multiple(n: Lowered) -> None:
    from nasdsl.ops.window import pad_amounts, spatial_axes

    ends = [0] * len(n.in_shape)
    for axis, amount in zip(spatial_axes(n.in_type), pad_amounts(n.in_type, n.a), strict=True):
        ends[axis] = amount
    if not any(ends):
        n.emit("Identity", [n.x], last=True)
        return
    pads = [0] * (len(ends) + 1) + [0, *ends]
    n.emit("Pad", [n.x, n.e.ints("pads", pads)], last=True)


# ---------------------------------------------------------------------------
# Pixel shuffles, adaptive max pooling, clamp and the activations of nasdsl/ops/more_ops.py


@lowering("onnx", "pixel_shuffle")
def _pixel_shuffle(n: Lowered) -> None:
    # DepthToSpace's CRD order is PyTorch's: channel c * r^2 + i * r + j to offset (i, j) of channel c
    n.emit("DepthToSpace", [n.x], last=True, blocksize=n.a["factor"], mode="CRD")


@lowering("onnx", "pixel_unshuffle")
def _pixel_unshuffle(n: Lowered) -> None:
    # SpaceToDepth puts the offset before the channel (output channel (i * r + j) * C + c);
    # PyTorch puts the channel first (c * r^2 + i * r + j): each block's offsets are split into
    # axes of their own and moved behind the channel
    r = n.a["factor"]
    c, h, w = n.in_shape
    split = (c, h // r, r, w // r, r)
    blocks = n.emit("Reshape", [n.x, n.e.ints("blocks", [0, *split])], at=n.e.full(split))
    moved = (c, r, r, h // r, w // r)
    moved_out = n.emit("Transpose", [blocks], at=n.e.full(moved), perm=[0, 1, 3, 5, 2, 4])
    n.emit("Reshape", [moved_out, n.e.ints("shape", [0, *n.data.shape])], last=True)


@lowering("onnx", "adaptive_max_pool1d", "adaptive_max_pool", "adaptive_max_pool3d")
def _adaptive_max_pool(n: Lowered) -> None:
    c, *sizes = n.in_shape
    outs = list(n.a["size"])
    if all(o == 1 for o in outs):
        n.emit("GlobalMaxPool", [n.x], last=True)
        return
    if all(s % o == 0 for s, o in zip(sizes, outs, strict=True)):
        kernel = [s // o for s, o in zip(sizes, outs, strict=True)]
        n.emit("MaxPool", [n.x], last=True, kernel_shape=kernel, strides=kernel)
        return
    # PyTorch's windows overlap or differ in length: along each axis, gather every window's
    # positions into an axis of their own (a shorter window repeats its last) and take their max
    y, current = n.x, [c, *sizes]
    todo = [i for i in range(len(sizes)) if sizes[i] != outs[i]]
    for k, i in enumerate(todo):
        axis = i + 2  # batch first
        windows = np.array(adaptive_windows(sizes[i], outs[i]), np.int64)
        gathered = list(current)
        gathered[i + 1 : i + 2] = windows.shape
        index = n.e.const(f"windows{axis}", windows, np.int64)
        y = n.emit("Gather", [y, index], at=n.e.full(tuple(gathered)), axis=axis)
        current[i + 1] = outs[i]
        done = {"last": True} if k == len(todo) - 1 else {"at": n.e.full(tuple(current))}
        if n.opset >= 18:
            y = n.emit("ReduceMax", [y, n.e.ints("axes", [axis + 1])], keepdims=0, **done)
        else:
            y = n.emit("ReduceMax", [y], axes=[axis + 1], keepdims=0, **done)


@lowering("onnx", "clamp")
def _clamp(n: Lowered) -> None:
    bounds = ["" if n.a[k] is None else n.e.scalar(n.a[k]) for k in ("min", "max")]
    n.emit("Clip", [n.x, *bounds] if bounds[1] else [n.x, bounds[0]], last=True)


#: a softplus threshold from which PyTorch's "x itself where beta * x > threshold" changes no float32
#: result: log(1 + exp(-t)) / beta is then below half a unit in the last place of x > t / beta
_SOFTPLUS_EXACT = 20.0


@lowering("onnx", "softplus")
def _softplus(n: Lowered) -> None:
    beta, threshold = n.a["beta"], n.a["threshold"]
    cut = threshold < _SOFTPLUS_EXACT
    scaled = n.x if beta == 1.0 else n.emit("Mul", [n.x, n.e.scalar(beta)])
    if beta == 1.0:
        soft = n.emit("Softplus", [scaled], last=not cut)
    else:
        soft = n.emit("Div", [n.emit("Softplus", [scaled]), n.e.scalar(beta)], last=not cut)
    if cut:
        above = n.emit("Greater", [scaled, n.e.scalar(threshold)], ints=True)
        n.emit("Where", [above, n.x, soft], last=True)


@lowering("onnx", "mish")
def _mish(n: Lowered) -> None:
    if n.opset >= 18:
        n.emit("Mish", [n.x], last=True)
    else:  # x * tanh(softplus(x)), as torch.onnx.export writes it below opset 18
        n.emit("Mul", [n.x, n.emit("Tanh", [n.emit("Softplus", [n.x])])], last=True)


@lowering("onnx", "selu")
def _selu(n: Lowered) -> None:
    n.emit("Selu", [n.x], last=True)  # ONNX's default alpha and gamma are PyTorch's constants in float32


@lowering("onnx", "log_softmax")
def _log_softmax(n: Lowered) -> None:
    n.emit("LogSoftmax", [n.x], last=True, axis=n.axis(n.a["dim"]))
