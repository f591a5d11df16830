"""ONNX backend: an ``onnx.ModelProto`` built from the IR with ``onnx.helper``.

Public entries:

- :func:`export_onnx` returns the inference graph of a compiled spec as an
  ONNX model (no tracing: every node comes from an IR node).
- :func:`export_onnx_bytes` returns the same model serialised, the weights
  copied once (what the command line writes).
- :func:`export_graph` is the IR graph that is exported (the passes of
  :data:`PIPELINE`).

Neither imports torch: weights are numpy arrays (or anything with the
``numpy()`` of a tensor), the default ones drawn by
:func:`nasdsl.weights.initial_weights` from the spec's ``init`` rules.

The exported graph is the one that runs at inference: training-only heads
dropped unless ``with_aux``, no dropout, no identities, BatchNorm folded into
the convolution before it where it can be (:mod:`nasdsl.passes.fold`), the
input's mean and std applied first. Names come from the spec: the input and
outputs by their spec names, a node by its IR path with ``/``
(``inception4a/branch2/0/conv``), a node's result by its IR name
(``inception4a.branch2.0.conv``) and a parameter by its state_dict key
(``inception4a.branch2.0.conv.weight``). Helpers of a lowering that needs
several ONNX nodes are named below it (``stem/act/Sigmoid``).

Same spec and same weights give the same bytes: nothing depends on the time,
the path the spec was read from, or dict order.
"""

from __future__ import annotations

import functools
import math
import numbers
import os
from collections.abc import Mapping, Sequence

import networkx as nx
import numpy as np
import onnx
from onnx import TensorProto, helper

from nasdsl import __version__, ir
from nasdsl.ensemble_ir import is_ensemble
from nasdsl.errors import CodegenError
from nasdsl.ops import lowering, lowering_of, same_padding
from nasdsl.optimize import rewrite
from nasdsl.passes.derive import NORM_PARAMS as BN_PARAMS
from nasdsl.passes.derive import derive_weights
from nasdsl.passes.pipeline import run_pipeline
from nasdsl.weights import MAX_MEMORY, check_memory, check_weights, initial_weights

from .pyformat import safe_text

SUPPORTED_OPSETS = range(13, 22)
DEFAULT_OPSET = 17
#: the ``batch`` value that makes the batch dimension symbolic, and its name
DYNAMIC = "dynamic"
BATCH_PARAM = "N"
#: the passes that make the exported graph (inference view, no identities, no dead nodes)
PIPELINE = ("inference", "drop_identities", "drop_unused")
PIPELINE_WITH_AUX = ("inference_aux", "drop_identities", "drop_unused")

Shape = tuple[int | str, ...]


# ---------------------------------------------------------------------------
# Emission


class _Emitter:
    """Collects nodes and tensor shapes, writes initializers straight into
    ``graph`` (weights are most of a model's bytes: they are copied once); keeps
    names unique."""

    def __init__(
        self,
        graph: onnx.GraphProto,
        batch: int | str,
        weights: Mapping[str, np.ndarray],
        doc: Mapping[str, str],
        deferred: list[tuple[str, np.ndarray]] | None = None,
    ):
        self.graph = graph
        #: when a list, initializers are collected here instead of written into ``graph``
        self.deferred = deferred
        self.batch = batch
        self.weights = weights
        self.params: dict[str, str] = {}
        self.shapes: dict[str, Shape] = {}
        self.tensor_names: set[str] = set()
        self.node_names: set[str] = set()
        self.consts: dict[tuple, str] = {}
        self.doc = doc

    @staticmethod
    def _unique(taken: set[str], wanted: str) -> str:
        name, i = wanted, 0
        while name in taken:
            i += 1
            name = f"{wanted}_{i}"
        taken.add(name)
        return name

    def tensor(self, wanted: str) -> str:
        return self._unique(self.tensor_names, wanted)

    def initializer(self, wanted: str, array: np.ndarray) -> str:
        name = self.tensor(wanted)
        array = np.asarray(array)
        if self.deferred is not None:
            self.deferred.append((name, array))
            return name
        tensor = self.graph.initializer.add()
        tensor.name = name
        tensor.data_type = helper.np_dtype_to_tensor_dtype(array.dtype)
        tensor.dims.extend(array.shape)
        tensor.raw_data = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()  # ONNX is little-endian
        return name

    def param(self, key: str) -> str:
        """The initializer of parameter ``key`` (a state_dict key), added on first use."""
        if key not in self.params:
            self.params[key] = self.initializer(key, self.weights[key])
        return self.params[key]

    def const(self, wanted: str, values: object, dtype: type) -> str:
        """A shared constant (one initializer per distinct value)."""
        array = np.asarray(values, dtype=dtype)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self.consts:
            self.consts[key] = self.initializer(f"const/{wanted}", array)
        return self.consts[key]

    def scalar(self, value: float) -> str:
        return self.const(f"{value:g}", value, np.float32)

    def ints(self, wanted: str, values: Sequence[int]) -> str:
        return self.const(wanted, list(values), np.int64)

    def full(self, shape: Sequence[int]) -> Shape:
        """A shape with the batch dimension in front."""
        return (self.batch, *shape)

    def add(
        self, op_type: str, inputs: Sequence[str], *, node: str, shape: Shape, out: str | None = None, **attrs: object
    ) -> str:
        """One ONNX node lowering (part of) IR node ``node``; returns its output.

        The node that writes ``out`` (the IR node's own result) is named after
        the IR node; helpers (``out`` None) are named below it by their op type.
        The node is written into the graph as :func:`onnx.helper.make_node`
        would make it (attributes sorted by name), without a copy.
        """
        path = node.replace(".", "/")
        name = self._unique(self.node_names, path if out is not None else f"{path}/{op_type}")
        if out is None:
            out = self.tensor(name)
        proto = self.graph.node.add()
        proto.op_type = op_type
        proto.input.extend(inputs)
        proto.output.append(out)
        proto.name = name
        doc = self.doc.get(node)
        if doc:
            proto.doc_string = doc
        for key in sorted(attrs):
            _set_attribute(proto.attribute.add(), key, attrs[key])
        self.shapes[out] = shape
        return out


def _set_attribute(attr: onnx.AttributeProto, name: str, value: object) -> None:
    """``attr`` as :func:`onnx.helper.make_attribute` makes it, for the kinds of
    value the lowerings use: an int, a float, a string or a list of ints."""
    attr.name = name
    # exact types first: the abstract-class checks cost more than the rest of the node
    if type(value) is int or (not isinstance(value, float) and isinstance(value, numbers.Integral)):
        attr.i = int(value)
        attr.type = onnx.AttributeProto.INT
    elif isinstance(value, numbers.Real):
        attr.f = float(value)
        attr.type = onnx.AttributeProto.FLOAT
    elif isinstance(value, str):
        attr.s = value.encode()
        attr.type = onnx.AttributeProto.STRING
    elif isinstance(value, list) and all(type(v) is int or isinstance(v, numbers.Integral) for v in value):
        attr.ints.extend(int(v) for v in value)
        attr.type = onnx.AttributeProto.INTS
    else:
        raise TypeError(f"attribute {name}: unexpected value {value!r}")  # a lowering's bug, not the user's


def _pool_geometry(
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
    for i in range(2):
        size, n = in_shape[i + 1], out_shape[i + 1]
        reach = (n - 1) * s[i] + k[i] - size - p[i]  # end padding the last window needs
        ends.append(max(p[i], reach))
        over.append(reach > p[i])
        naive_ok.append(-(-(size + 2 * p[i] - k[i]) // s[i]) + 1 == n)
    if any(over) and all(naive_ok):
        return list(p), list(p), 1, any(over)
    return list(p), ends, 0, any(over)


def _adaptive_matrix(size: int, out: int) -> np.ndarray:
    """(out, size): row i averages PyTorch's adaptive window i, [floor(i*size/out), ceil((i+1)*size/out))."""
    m = np.zeros((out, size), dtype=np.float64)
    for i in range(out):
        start, end = (i * size) // out, -(-((i + 1) * size) // out)
        m[i, start:end] = 1.0 / (end - start)
    return m.astype(np.float32)


class _Node:
    """What a lowering sees of one IR node: its data, its input tensors and how to emit."""

    def __init__(self, e: _Emitter, g: nx.DiGraph, node: str, xs: list[str], out: str, opset: int):
        self.e, self.g, self.node, self.xs, self.out, self.opset = e, g, node, xs, out, opset
        self.data = ir.node(g, node)
        self.a = self.data.attrs
        self.shape = e.full(self.data.shape)
        self.in_shape = ir.node(g, ir.inputs(g, node)[0]).shape
        self.x = xs[0]

    def emit(self, op_type: str, inputs: Sequence[str], at: Shape | None = None, last: bool = False, **attrs) -> str:
        """One ONNX node; ``last`` marks the one that writes the IR node's result."""
        shape = self.shape if at is None else at
        return self.e.add(op_type, inputs, node=self.node, shape=shape, out=self.out if last else None, **attrs)

    def param(self, name: str) -> str:
        return self.e.param(f"{self.node}.{name}")


def _lower(e: _Emitter, g: nx.DiGraph, node: str, xs: list[str], out: str, opset: int) -> None:
    """Emit the ONNX nodes for IR node ``node`` reading tensors ``xs`` and writing ``out``:
    the op's registered ONNX lowering, or an error naming the op and node."""
    data = ir.node(g, node)
    lowering_of("onnx", data.op, node, data)(_Node(e, g, node, xs, out, opset))


@lowering("onnx", "conv2d")
def _conv(n: _Node) -> None:
    a = n.a
    (kh, kw), (dh, dw) = a["kernel"], a["dilation"]
    if a["padding"] == "same":
        (top, bottom), (left, right) = same_padding(kh, dh), same_padding(kw, dw)
    else:
        (top, left), (bottom, right) = a["padding"], a["padding"]
    inputs = [n.x, n.param("weight"), *([n.param("bias")] if a["bias"] else [])]
    n.emit("Conv", inputs, last=True, kernel_shape=[kh, kw], strides=list(a["stride"]),
           pads=[top, left, bottom, right], dilations=[dh, dw], group=a["groups"])  # fmt: skip


@lowering("onnx", "batch_norm")
def _batch_norm(n: _Node) -> None:
    n.emit("BatchNormalization", [n.x, *(n.param(p) for p in BN_PARAMS)], last=True, epsilon=n.a["eps"])


@lowering("onnx", "relu", "sigmoid", "tanh")
def _unary(n: _Node) -> None:
    n.emit({"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh"}[n.data.op], [n.x], last=True)


@lowering("onnx", "relu6")
def _relu6(n: _Node) -> None:
    n.emit("Clip", [n.x, n.e.scalar(0.0), n.e.scalar(6.0)], last=True)


@lowering("onnx", "silu")
def _silu(n: _Node) -> None:
    n.emit("Mul", [n.x, n.emit("Sigmoid", [n.x])], last=True)


@lowering("onnx", "gelu")
def _gelu(n: _Node) -> None:
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


@lowering("onnx", "max_pool")
def _max_pool(n: _Node) -> None:
    begin, end, ceil, _ = _pool_geometry(n.in_shape, n.data.shape, n.a)
    n.emit("MaxPool", [n.x], last=True, kernel_shape=list(n.a["kernel"]), strides=list(n.a["stride"]),
           pads=begin + end, ceil_mode=ceil)  # fmt: skip


@lowering("onnx", "avg_pool")
def _avg_pool(n: _Node) -> None:
    a = n.a
    begin, end, ceil, overhang = _pool_geometry(n.in_shape, n.data.shape, a)
    window = {"kernel_shape": list(a["kernel"]), "strides": list(a["stride"]), "ceil_mode": ceil}
    if overhang and a["count_include_pad"] and any(begin):
        # PyTorch divides a window that reaches past the padded input by its part
        # inside the padded input; with the padding made real, ONNX's
        # count_include_pad=0 does exactly that.
        c, h, w = n.in_shape
        padded_shape = n.e.full((c, h + 2 * begin[0], w + 2 * begin[1]))
        padded = n.emit("Pad", [n.x, n.e.ints("pads", [0, 0, *begin, 0, 0, *begin])], at=padded_shape)
        extra = [end[0] - begin[0], end[1] - begin[1]]
        n.emit("AveragePool", [padded], last=True, pads=[0, 0, *extra], count_include_pad=0, **window)
    else:
        # without an overhang, or counting real inputs only, ONNX and PyTorch agree
        include = int(a["count_include_pad"] and not overhang)
        n.emit("AveragePool", [n.x], last=True, pads=begin + end, count_include_pad=include, **window)


@lowering("onnx", "global_avg_pool")
def _global_avg_pool(n: _Node) -> None:
    n.emit("GlobalAveragePool", [n.x], last=True)


@lowering("onnx", "adaptive_avg_pool")
def _adaptive_avg_pool(n: _Node) -> None:
    c, h, w = n.in_shape
    oh, ow = n.a["size"]
    if (oh, ow) == (1, 1):
        n.emit("GlobalAveragePool", [n.x], last=True)
    elif h % oh == 0 and w % ow == 0:
        kernel = [h // oh, w // ow]
        n.emit("AveragePool", [n.x], last=True, kernel_shape=kernel, strides=kernel)
    else:
        # PyTorch's windows overlap or differ in size: average with one matrix per axis
        y = n.x
        path = n.node.replace(".", "/")
        if w != ow:
            cols = n.e.initializer(f"{path}/cols", _adaptive_matrix(w, ow).T)
            y = n.emit("MatMul", [y, cols], at=n.e.full((c, h, ow)), last=h == oh)
        if h != oh:
            rows = n.e.initializer(f"{path}/rows", _adaptive_matrix(h, oh))
            n.emit("MatMul", [rows, y], last=True)


@lowering("onnx", "lrn")
def _lrn(n: _Node) -> None:
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


@lowering("onnx", "flatten")
def _flatten(n: _Node) -> None:
    n.emit("Flatten", [n.x], last=True, axis=1)


@lowering("onnx", "linear")
def _linear(n: _Node) -> None:
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


@lowering("onnx", "hardsigmoid")
def _hardsigmoid(n: _Node) -> None:  # PyTorch: relu6(x + 3) / 6
    n.emit("HardSigmoid", [n.x], last=True, alpha=1 / 6, beta=0.5)


@lowering("onnx", "hardswish")
def _hardswish(n: _Node) -> None:  # PyTorch: x * relu6(x + 3) / 6
    if n.opset >= 14:
        n.emit("HardSwish", [n.x], last=True)
    else:
        n.emit("Mul", [n.x, n.emit("HardSigmoid", [n.x], alpha=1 / 6, beta=0.5)], last=True)


@lowering("onnx", "channel_shuffle")
def _channel_shuffle(n: _Node) -> None:
    c, h, w = n.in_shape
    g = n.a["groups"]
    split = n.emit("Reshape", [n.x, n.e.ints("shape", [0, g, c // g, h, w])], at=n.e.full((g, c // g, h, w)))
    moved = n.emit("Transpose", [split], at=n.e.full((c // g, g, h, w)), perm=[0, 2, 1, 3, 4])
    n.emit("Reshape", [moved, n.e.ints("shape", [0, c, h, w])], last=True)


@lowering("onnx", "slice")
def _slice(n: _Node) -> None:
    stop = n.in_shape[0] if n.a["stop"] is None else n.a["stop"]
    starts, ends, axes = (n.e.ints(name, [v]) for name, v in (("starts", n.a["start"]), ("ends", stop), ("axes", 1)))
    n.emit("Slice", [n.x, starts, ends, axes], last=True)


@lowering("onnx", "permute")
def _permute(n: _Node) -> None:
    n.emit("Transpose", [n.x], last=True, perm=[0, *(d + 1 for d in n.a["dims"])])


@lowering("onnx", "layer_norm")
def _layer_norm(n: _Node) -> None:
    eps = n.a["eps"]
    if n.a["dim"] == "channels" and len(n.in_shape) == 3:  # over the channels of a map: channels-last first
        c, h, w = n.in_shape
        last = n.emit("Transpose", [n.x], at=n.e.full((h, w, c)), perm=[0, 2, 3, 1])
        normed = _normalise_last_axis(n, last, n.e.full((h, w, c)), eps)
        n.emit("Transpose", [normed], last=True, perm=[0, 3, 1, 2])
    else:
        _normalise_last_axis(n, n.x, n.shape, eps, last=True)


def _normalise_last_axis(n: _Node, x: str, shape: Shape, eps: float, last: bool = False) -> str:
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


@lowering("onnx", "layer_scale")
def _layer_scale(n: _Node) -> None:
    n.emit("Mul", [n.x, n.e.param(n.node)], last=True)


@lowering("onnx", "stochastic_depth")
def _stochastic_depth(n: _Node) -> None:  # an inference graph has none (an identity at inference)
    n.emit("Identity", [n.x], last=True)


@lowering("onnx", "mul")
def _mul(n: _Node) -> None:
    total = n.xs[0]
    for i, term in enumerate(n.xs[1:], start=2):
        total = n.emit("Mul", [total, term], last=i == len(n.xs))


@lowering("onnx", "mean")
def _mean(n: _Node) -> None:
    n.emit("Mean", n.xs, last=True)


@lowering("onnx", "softmax")
def _softmax(n: _Node) -> None:
    n.emit("Softmax", [n.x], last=True, axis=1)


@lowering("onnx", "identity")
def _identity(n: _Node) -> None:  # kept only where a consumer reads the same value twice
    n.emit("Identity", [n.x], last=True)


@lowering("onnx", "dropout")
def _dropout(n: _Node) -> None:  # an inference graph has none; a training export would keep it as an identity
    n.emit("Identity", [n.x], last=True)


@lowering("onnx", "concat")
def _concat(n: _Node) -> None:
    n.emit("Concat", n.xs, last=True, axis=1)


@lowering("onnx", "add")
def _add(n: _Node) -> None:
    total = n.xs[0]
    for i, term in enumerate(n.xs[1:], start=2):
        total = n.emit("Add", [total, term], last=i == len(n.xs))


def export_graph(graph: object, *, with_aux: bool = False, verify: bool = False) -> nx.DiGraph:
    """The IR graph that is exported, before BatchNorm folding: the inference
    graph without identities and without nodes that reach no output (of an ensemble: of each member)."""
    if is_ensemble(graph):
        from . import onnx_ensemble

        return onnx_ensemble.export_graph(ir.as_graph(graph), with_aux=with_aux, verify=verify)
    return run_pipeline(ir.as_graph(graph), PIPELINE_WITH_AUX if with_aux else PIPELINE, verify=verify)


def _check_args(opset: int, batch: int | str) -> int | str:
    if isinstance(opset, bool) or opset not in SUPPORTED_OPSETS:
        raise CodegenError(
            f"opset {opset} is not supported; expected {SUPPORTED_OPSETS.start} to {SUPPORTED_OPSETS.stop - 1}"
        )
    if batch == DYNAMIC:
        return BATCH_PARAM
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise CodegenError(f"batch must be an integer > 0 or '{DYNAMIC}', got {batch!r}")
    return batch


def _set_value_info(info: onnx.ValueInfoProto, name: str, shape: Shape) -> None:
    """``info`` as :func:`onnx.helper.make_tensor_value_info` makes it for a
    float tensor of ``shape`` (a symbolic dimension is a string)."""
    info.name = name
    tensor_type = info.type.tensor_type
    tensor_type.elem_type = TensorProto.FLOAT
    dims = tensor_type.shape.dim
    for d in shape:
        if isinstance(d, str):
            dims.add().dim_param = d
        else:
            dims.add().dim_value = d


def _doc(data: ir.Node) -> str:
    """Where a node comes from: ``file:line:column key.path``, made safe."""
    loc = data.loc
    where = f"{os.path.basename(loc.file)}:{loc.line}:{loc.column} " if loc is not None else ""
    return safe_text(f"{where}{data.keypath or ''}", 200)


def export_onnx(
    graph: object,
    *,
    opset: int = DEFAULT_OPSET,
    state_dict: Mapping[str, object] | None = None,
    with_aux: bool = False,
    batch: int | str = 1,
    max_memory: int | None = MAX_MEMORY,
    optimize: str | None = None,
) -> onnx.ModelProto:
    """The inference graph of ``graph`` (the IR, or a compiled spec) as an ONNX model.

    ``state_dict`` is keyed like the generated PyTorch model's, its values numpy
    arrays or torch tensors (defaults to :func:`nasdsl.weights.initial_weights`);
    ``with_aux`` keeps the training-only outputs; ``batch`` is a fixed batch
    size or ``"dynamic"`` (symbolic dimension ``N``). Raises
    :class:`CodegenError` for what it cannot export, and a ``LimitError`` when the
    weights would need more than ``max_memory`` bytes (None: no limit). ``optimize`` names a
    target of :mod:`nasdsl.optimize` whose rewrites run after BatchNorm folding (None: none;
    ``onnxruntime`` adds nothing to what every export does, see docs/optimize.md).
    """
    model, _ = _emit(ir.as_graph(graph), opset, state_dict, with_aux, batch, None, max_memory, optimize)
    return model


def export_onnx_bytes(
    graph: object,
    *,
    opset: int = DEFAULT_OPSET,
    state_dict: Mapping[str, object] | None = None,
    with_aux: bool = False,
    batch: int | str = 1,
    max_memory: int | None = MAX_MEMORY,
    optimize: str | None = None,
) -> bytes:
    """The serialised model of :func:`export_onnx` (the same message, parsed), made
    with one copy of the weights: the model is serialised without its
    initializers, which follow as a second ``graph`` field that protobuf merges
    into the first. This is what the command line writes."""
    deferred: list[tuple[str, np.ndarray]] = []
    model, _ = _emit(ir.as_graph(graph), opset, state_dict, with_aux, batch, deferred, max_memory, optimize)
    head = model.SerializeToString(deterministic=True)
    parts: list[bytes | memoryview] = []
    for name, array in deferred:
        raw = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))  # ONNX is little-endian
        fields = b"".join(_varint_field(1, d) for d in array.shape)
        fields += _varint_field(2, helper.np_dtype_to_tensor_dtype(array.dtype))
        fields += _bytes_header(8, len(name.encode())) + name.encode() + _bytes_header(9, raw.nbytes)
        parts += [_bytes_header(5, len(fields) + raw.nbytes), fields, memoryview(raw).cast("B")]
    size = sum(len(p) if isinstance(p, bytes) else p.nbytes for p in parts)
    return b"".join([head, _bytes_header(7, size), *parts])


@functools.lru_cache(maxsize=4096)
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _varint_field(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _bytes_header(number: int, length: int) -> bytes:
    return _varint(number << 3 | 2) + _varint(length)


def _emit(
    source: nx.DiGraph,
    opset: int,
    state_dict: Mapping[str, object] | None,
    with_aux: bool,
    batch: int | str,
    deferred: list[tuple[str, np.ndarray]] | None,
    max_memory: int | None = MAX_MEMORY,
    optimize: str | None = None,
) -> tuple[onnx.ModelProto, list[tuple[str, np.ndarray]] | None]:
    batch_dim = _check_args(opset, batch)
    if is_ensemble(source):  # members are graphs of their own: backends/onnx_ensemble.py
        from . import onnx_ensemble

        return onnx_ensemble.emit(source, opset, state_dict, with_aux, batch, deferred, max_memory)
    # the weights (drawn or given), the folded ones and the serialised model
    check_memory(source, 3, max_memory, "exporting ONNX")
    g = export_graph(source, with_aux=with_aux)
    checked = check_weights(source, g, initial_weights(source) if state_dict is None else state_dict)
    g = rewrite(g, optimize)  # BatchNorm folded (every export), then the target's rewrites
    weights = derive_weights(ir.info(g).derivation, checked)

    info = ir.info(g)
    inp = info.input
    outputs = info.outputs
    if inp in {o.name for o in outputs}:
        raise CodegenError(f"an output is named '{inp}' like the input; ONNX needs distinct names")
    model = onnx.ModelProto()
    e = _Emitter(model.graph, batch_dim, weights, {n: _doc(d) for n, d in ir.nodes(g)}, deferred)
    e.tensor(inp)
    for o in outputs:
        e.tensor(o.name)
    # the first output a node produces is written under the output's name
    result: dict[str, str] = {}
    for o in outputs:
        if o.node != inp:
            result.setdefault(o.node, o.name)
    in_record = ir.node(g, inp)
    in_attrs = in_record.attrs
    in_shape = e.full(in_record.shape)
    channel_axis = in_record.type.channel_axis
    x = inp
    for key, op_type in (("mean", "Sub"), ("std", "Div")):
        if in_attrs.get(key) is not None:
            stats = [1] * len(in_shape)
            stats[1 + (channel_axis or 0)] = -1
            values = np.asarray(in_attrs[key], dtype=np.float32).reshape(stats)
            const = e.initializer(f"input_{key}", values)
            x = e.add(op_type, [x, const], node=f"{inp}.{key}", shape=in_shape, out=e.tensor(f"{inp}.{key}"))
    produced = {inp: x}
    for node in ir.order(g):
        if node == inp:
            continue
        out = result.get(node) or e.tensor(node)
        _lower(e, g, node, [produced[i] for i in ir.inputs(g, node)], out, opset)
        produced[node] = out
    for o in outputs:
        if produced[o.node] != o.name:
            e.add("Identity", [produced[o.node]], node=o.name, shape=e.full(ir.node(g, o.node).shape), out=o.name)

    graph = model.graph
    graph.name = info.name
    _set_value_info(graph.input.add(), inp, in_shape)
    for o in outputs:
        _set_value_info(graph.output.add(), o.name, e.full(ir.node(g, o.node).shape))
    named = {inp} | {o.name for o in outputs}
    for t, shape in e.shapes.items():
        if t not in named:
            _set_value_info(graph.value_info.add(), t, shape)
    describe_model(model, source, opset)
    return model, deferred


def describe_model(model: onnx.ModelProto, g: nx.DiGraph, opset: int, props: Mapping[str, str] | None = None) -> None:
    """The model's opset, IR version, producer, doc string (the spec's, made safe) and the
    properties that name the spec it was made from, then ``props``."""
    opset_id = helper.make_opsetid("", opset)
    model.opset_import.append(opset_id)
    model.producer_name = "nasdsl"
    model.producer_version = __version__
    info = ir.info(g)
    doc = safe_text(info.doc or "", 1000)
    if doc:
        model.doc_string = doc
    model.ir_version = helper.find_min_ir_version_for([opset_id])
    spec = {
        "nasdsl.spec.name": info.name,
        "nasdsl.spec.file": safe_text(os.path.basename(info.file), 200),
        "nasdsl.spec.sha256": info.sha256,
    }
    helper.set_model_props(model, {**spec, **(props or {}), "nasdsl.version": __version__})


__all__ = ["DEFAULT_OPSET", "PIPELINE", "SUPPORTED_OPSETS", "export_graph", "export_onnx", "export_onnx_bytes"]
