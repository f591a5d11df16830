"""ONNX backend: an ``onnx.ModelProto`` built from the IR with ``onnx.helper``.

Public entries:

- :func:`export_onnx` returns the inference graph of a compiled spec as an
  ONNX model (no tracing: every node comes from an IR node).
- :func:`export_onnx_bytes` returns the same model serialised, the weights
  copied once (what the command line writes).
- :func:`load_state_dict` reads a ``torch.save``-d state_dict safely.
- :func:`initial_state_dict` gives the weights the PyTorch backend's model
  starts with (seed 0), for export without trained weights.

The exported graph is the one that runs at inference
(:func:`nasdsl.passes.phases.inference_graph`): training-only heads dropped
unless ``with_aux``, no dropout, no identities, BatchNorm folded into the
convolution before it where it can be (:mod:`nasdsl.passes.fold`), the
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
import weakref
from collections.abc import Mapping, Sequence

import networkx as nx
import numpy as np
import onnx
import torch
from onnx import TensorProto, helper

from nasdsl import __version__, ir
from nasdsl.api import Compiled
from nasdsl.errors import CodegenError, WeightsError
from nasdsl.ops import same_padding
from nasdsl.passes.check import unused
from nasdsl.passes.fold import BN_PARAMS, drop_identities, fold_batch_norm
from nasdsl.passes.phases import inference_graph

from . import pytorch
from .pyformat import safe_text

SUPPORTED_OPSETS = range(13, 22)
DEFAULT_OPSET = 17
#: the ``batch`` value that makes the batch dimension symbolic, and its name
DYNAMIC = "dynamic"
BATCH_PARAM = "N"
#: how many offending names an error lists before "and N more"
_SHOWN = 5

Shape = tuple[int | str, ...]


# ---------------------------------------------------------------------------
# Weights


def param_shapes(g: nx.DiGraph, node: str) -> dict[str, tuple[int, ...]]:
    """The parameters of ``node`` as the generated PyTorch module names them, with their shapes."""
    data = g.nodes[node]
    op, a = data["op"], data["attrs"]
    if op == "conv2d":
        (src,) = ir.inputs(g, node)
        shapes = {"weight": (a["out"], g.nodes[src]["shape"][0] // a["groups"], *a["kernel"])}
        return shapes | ({"bias": (a["out"],)} if a["bias"] else {})
    if op == "linear":
        (src,) = ir.inputs(g, node)
        shapes = {"weight": (a["out"], g.nodes[src]["shape"][0])}
        return shapes | ({"bias": (a["out"],)} if a["bias"] else {})
    if op == "batch_norm":
        return {p: (data["shape"][0],) for p in BN_PARAMS}
    return {}


def parameters(g: nx.DiGraph) -> dict[str, tuple[int, ...]]:
    """Every parameter of ``g`` by state_dict key, in graph order."""
    return {f"{n}.{p}": s for n in ir.order(g) for p, s in param_shapes(g, n).items()}


def _listing(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_SHOWN])
    return shown + (f", and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")


def _dims(shape: Sequence[int]) -> str:
    return "x".join(map(str, shape)) or "a scalar"


def check_state_dict(compiled: Compiled, g: nx.DiGraph, state_dict: Mapping[str, object]) -> dict[str, np.ndarray]:
    """The weights that graph ``g`` (derived from ``compiled.graph``) needs, as float32 arrays.

    Keys must be those of the generated PyTorch model: every parameter of
    ``g`` present, nothing that no node of ``compiled.graph`` has (parameters
    of parts ``g`` leaves out, such as auxiliary heads, are accepted and
    ignored; so is BatchNorm's ``num_batches_tracked``), every shape right.
    Raises :class:`WeightsError` listing the offenders.
    """
    known = parameters(compiled.graph)
    needed = parameters(g)
    norms = {n for n, d in compiled.graph.nodes(data=True) if d["op"] == "batch_norm"}
    missing = [k for k in needed if k not in state_dict]
    unexpected: list[str] = []
    wrong: list[str] = []
    out: dict[str, np.ndarray] = {}
    for key, value in state_dict.items():
        if not isinstance(key, str):
            unexpected.append(repr(key))
        elif key not in known:
            owner, _, leaf = key.rpartition(".")
            if not (leaf == "num_batches_tracked" and owner in norms):
                unexpected.append(key)
        elif not isinstance(value, torch.Tensor):
            wrong.append(f"{key} (expected a tensor, found {type(value).__name__})")
        elif tuple(value.shape) != known[key]:
            wrong.append(f"{key} (expected {_dims(known[key])}, found {_dims(tuple(value.shape))})")
        elif not value.is_floating_point():
            wrong.append(f"{key} (expected floating point values, found {value.dtype})")
        elif key in needed:
            out[key] = value.detach().to(device="cpu", dtype=torch.float32).numpy()  # read, never written
    if missing or unexpected or wrong:
        lines = [f"the state_dict does not fit {compiled.spec.name}:"]
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong", wrong)):
            if items:
                lines.append(f"  {label} ({len(items)}): {_listing(items)}")
        raise WeightsError("\n".join(lines))
    return {k: out[k] for k in needed}


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state_dict saved with ``torch.save`` (``weights_only``: no code runs).

    Raises :class:`WeightsError` naming the file when it cannot be read or
    holds something other than a mapping from names to tensors.
    """
    name = os.fspath(path)
    try:
        obj = torch.load(name, weights_only=True, map_location="cpu")
    except OSError as e:
        raise WeightsError(f"cannot read weights from '{name}': {e.strerror or e}") from None
    except Exception as e:  # noqa: BLE001 - torch.load raises many kinds for a bad file
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        reason = next((line for line in lines if "Unpickler error" in line), lines[0] if lines else type(e).__name__)
        raise WeightsError(
            f"cannot read weights from '{name}': not a file of tensors saved with torch.save ({reason})"
        ) from None
    if not isinstance(obj, Mapping):
        raise WeightsError(f"'{name}' holds a {type(obj).__name__}, expected a state_dict (names to tensors)")
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        hint = "; for a checkpoint, save its state_dict alone" if {"state_dict", "model"} & set(map(str, obj)) else ""
        raise WeightsError(f"'{name}' is not a state_dict: entries that are not tensors: {_listing(sorted(bad))}{hint}")
    return dict(obj)


#: generated PyTorch source by graph (generation is slow next to export; the key is weak)
_SOURCES: weakref.WeakKeyDictionary[nx.DiGraph, str] = weakref.WeakKeyDictionary()


def reference_model(compiled: Compiled, state_dict: Mapping[str, torch.Tensor] | None = None) -> torch.nn.Module:
    """The PyTorch backend's model for ``compiled`` in eval mode, initialised with
    seed 0 (the global RNG is left as it was), then given ``state_dict`` (checked
    as :func:`export_onnx` checks it; parts it leaves out keep their initial values)."""
    source = _SOURCES.get(compiled.graph)
    if source is None:
        source = _SOURCES[compiled.graph] = pytorch.generate_source(compiled)
    model_class = getattr(pytorch.load_source(source), compiled.spec.name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = model_class()
    if state_dict is not None:
        check_state_dict(compiled, export_graph(compiled), state_dict)
        model.load_state_dict(dict(state_dict), strict=False)
    return model.eval()


def initial_state_dict(compiled: Compiled) -> dict[str, torch.Tensor]:
    """The state_dict the PyTorch backend's model has after construction with seed 0."""
    return {k: v.detach().clone() for k, v in reference_model(compiled).state_dict().items()}


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


def _lower(e: _Emitter, g: nx.DiGraph, node: str, xs: list[str], out: str, opset: int) -> None:
    """Emit the ONNX nodes for IR node ``node`` reading tensors ``xs`` and writing ``out``.

    The one place that branches on the op.
    """
    data = g.nodes[node]
    op, a = data["op"], data["attrs"]
    shape = e.full(data["shape"])
    in_shape = g.nodes[ir.inputs(g, node)[0]]["shape"]
    x = xs[0]

    def emit(op_type: str, inputs: Sequence[str], at: Shape = shape, last: bool = False, **attrs: object) -> str:
        return e.add(op_type, inputs, node=node, shape=at, out=out if last else None, **attrs)

    def param(name: str) -> str:
        return e.param(f"{node}.{name}")

    if op == "conv2d":
        (kh, kw), (dh, dw) = a["kernel"], a["dilation"]
        if a["padding"] == "same":
            (top, bottom), (left, right) = same_padding(kh, dh), same_padding(kw, dw)
        else:
            (top, left), (bottom, right) = a["padding"], a["padding"]
        inputs = [x, param("weight"), *([param("bias")] if a["bias"] else [])]
        emit("Conv", inputs, last=True, kernel_shape=[kh, kw], strides=list(a["stride"]),
             pads=[top, left, bottom, right], dilations=[dh, dw], group=a["groups"])  # fmt: skip
    elif op == "batch_norm":
        inputs = [x, *(param(p) for p in BN_PARAMS)]
        emit("BatchNormalization", inputs, last=True, epsilon=a["eps"])
    elif op in ("relu", "sigmoid", "tanh"):
        emit({"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh"}[op], [x], last=True)
    elif op == "relu6":
        emit("Clip", [x, e.scalar(0.0), e.scalar(6.0)], last=True)
    elif op == "silu":
        emit("Mul", [x, emit("Sigmoid", [x])], last=True)
    elif op == "gelu" and opset >= 20:
        emit("Gelu", [x], last=True, approximate=a["approximate"])
    elif op == "gelu" and a["approximate"] == "tanh":
        # PyTorch: 0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x^3)))
        cube = emit("Mul", [emit("Mul", [x, x]), x])
        inner = emit("Add", [x, emit("Mul", [cube, e.scalar(0.044715)])])
        tanh = emit("Tanh", [emit("Mul", [inner, e.scalar(math.sqrt(2 / math.pi))])])
        gate = emit("Mul", [x, emit("Add", [tanh, e.scalar(1.0)])])
        emit("Mul", [gate, e.scalar(0.5)], last=True)
    elif op == "gelu":
        # PyTorch: 0.5 * x * (1 + erf(x / sqrt(2)))
        erf = emit("Erf", [emit("Mul", [x, e.scalar(math.sqrt(0.5))])])
        gate = emit("Mul", [x, emit("Add", [erf, e.scalar(1.0)])])
        emit("Mul", [gate, e.scalar(0.5)], last=True)
    elif op == "max_pool":
        begin, end, ceil, _ = _pool_geometry(in_shape, data["shape"], a)
        emit("MaxPool", [x], last=True, kernel_shape=list(a["kernel"]), strides=list(a["stride"]), pads=begin + end,
             ceil_mode=ceil)  # fmt: skip
    elif op == "avg_pool":
        begin, end, ceil, overhang = _pool_geometry(in_shape, data["shape"], a)
        window = {"kernel_shape": list(a["kernel"]), "strides": list(a["stride"]), "ceil_mode": ceil}
        if overhang and a["count_include_pad"] and any(begin):
            # PyTorch divides a window that reaches past the padded input by its part
            # inside the padded input; with the padding made real, ONNX's
            # count_include_pad=0 does exactly that.
            c, h, w = in_shape
            padded_shape = e.full((c, h + 2 * begin[0], w + 2 * begin[1]))
            padded = emit("Pad", [x, e.ints("pads", [0, 0, *begin, 0, 0, *begin])], at=padded_shape)
            extra = [end[0] - begin[0], end[1] - begin[1]]
            emit("AveragePool", [padded], last=True, pads=[0, 0, *extra], count_include_pad=0, **window)
        else:
            # without an overhang, or counting real inputs only, ONNX and PyTorch agree
            include = int(a["count_include_pad"] and not overhang)
            emit("AveragePool", [x], last=True, pads=begin + end, count_include_pad=include, **window)
    elif op == "global_avg_pool" or (op == "adaptive_avg_pool" and a["size"] == (1, 1)):
        emit("GlobalAveragePool", [x], last=True)
    elif op == "adaptive_avg_pool":
        c, h, w = in_shape
        oh, ow = a["size"]
        if h % oh == 0 and w % ow == 0:
            kernel = [h // oh, w // ow]
            emit("AveragePool", [x], last=True, kernel_shape=kernel, strides=kernel)
        else:
            # PyTorch's windows overlap or differ in size: average with one matrix per axis
            y = x
            if w != ow:
                cols = e.initializer(f"{node.replace('.', '/')}/cols", _adaptive_matrix(w, ow).T)
                y = emit("MatMul", [y, cols], at=e.full((c, h, ow)), last=h == oh)
            if h != oh:
                rows = e.initializer(f"{node.replace('.', '/')}/rows", _adaptive_matrix(h, oh))
                emit("MatMul", [rows, y], last=True)
    elif op == "lrn" and a["size"] % 2:
        emit("LRN", [x], last=True, size=a["size"], alpha=a["alpha"], beta=a["beta"], bias=a["k"])
    elif op == "lrn":
        # PyTorch centres an even window one channel lower than ONNX's LRN does:
        # x / (k + alpha * mean(x^2 over channels c - size/2 .. c + size/2 - 1)) ^ beta
        c, h, w = in_shape
        n = a["size"]
        axis = e.ints("axes", [1])
        lifted = emit("Unsqueeze", [emit("Mul", [x, x]), axis], at=e.full((1, c, h, w)))
        pads = e.ints("pads", [0, 0, n // 2, 0, 0, 0, 0, (n - 1) // 2, 0, 0])
        padded = emit("Pad", [lifted, pads], at=e.full((1, c + n - 1, h, w)))
        mean = emit("AveragePool", [padded], at=e.full((1, c, h, w)), kernel_shape=[n, 1, 1])
        mean = emit("Squeeze", [mean, axis])
        scaled = emit("Add", [emit("Mul", [mean, e.scalar(a["alpha"])]), e.scalar(a["k"])])
        emit("Div", [x, emit("Pow", [scaled, e.scalar(a["beta"])])], last=True)
    elif op == "flatten":
        emit("Flatten", [x], last=True, axis=1)
    elif op == "linear":
        inputs = [x, param("weight"), *([param("bias")] if a["bias"] else [])]
        emit("Gemm", inputs, last=True, transB=1)
    elif op == "softmax":
        emit("Softmax", [x], last=True, axis=1)
    elif op == "identity":  # kept only where a consumer reads the same value twice
        emit("Identity", [x], last=True)
    elif op == "concat":
        emit("Concat", xs, last=True, axis=1)
    elif op == "add":
        total = xs[0]
        for i, term in enumerate(xs[1:], start=2):
            total = emit("Add", [total, term], last=i == len(xs))
    else:
        raise CodegenError(
            f"the ONNX backend cannot lower op '{op}' (node {node})", location=data.get("loc"), path=data.get("keypath")
        )


def export_graph(compiled: Compiled, *, with_aux: bool = False) -> nx.DiGraph:
    """The IR graph that is exported, before BatchNorm folding: the inference
    graph without identities and without nodes that reach no output."""
    g = drop_identities(inference_graph(compiled.graph, keep_aux=with_aux), copy=False)  # a fresh graph already
    g.remove_nodes_from([n for n in unused(g) if n != g.graph["input"]])
    return g


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


def _doc(data: Mapping[str, object]) -> str:
    """Where a node comes from: ``file:line:column key.path``, made safe."""
    loc = data.get("loc")
    where = f"{os.path.basename(loc.file)}:{loc.line}:{loc.column} " if loc is not None else ""
    return safe_text(f"{where}{data.get('keypath') or ''}", 200)


def export_onnx(
    compiled: Compiled,
    *,
    opset: int = DEFAULT_OPSET,
    state_dict: Mapping[str, torch.Tensor] | None = None,
    with_aux: bool = False,
    batch: int | str = 1,
) -> onnx.ModelProto:
    """The inference graph of ``compiled`` as an ONNX model.

    ``state_dict`` is keyed like the generated PyTorch model's (defaults to
    :func:`initial_state_dict`); ``with_aux`` keeps the training-only outputs;
    ``batch`` is a fixed batch size or ``"dynamic"`` (symbolic dimension ``N``).
    Raises :class:`CodegenError` for what it cannot export.
    """
    model, _ = _emit(compiled, opset, state_dict, with_aux, batch, deferred=None)
    return model


def export_onnx_bytes(
    compiled: Compiled,
    *,
    opset: int = DEFAULT_OPSET,
    state_dict: Mapping[str, torch.Tensor] | None = None,
    with_aux: bool = False,
    batch: int | str = 1,
) -> bytes:
    """The serialised model of :func:`export_onnx` (the same message, parsed), made
    with one copy of the weights: the model is serialised without its
    initializers, which follow as a second ``graph`` field that protobuf merges
    into the first. This is what the command line writes."""
    deferred: list[tuple[str, np.ndarray]] = []
    model, _ = _emit(compiled, opset, state_dict, with_aux, batch, deferred=deferred)
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


def _scale_rows(weight: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """:func:`nasdsl.passes.fold.scale_rows` with torch's kernels: the same products
    (one rounding each), several times faster on tens of megabytes."""
    rows = torch.from_numpy(scale).reshape(-1, *[1] * (weight.ndim - 1))
    return torch.mul(torch.from_numpy(weight), rows).numpy()


def _emit(
    compiled: Compiled,
    opset: int,
    state_dict: Mapping[str, torch.Tensor] | None,
    with_aux: bool,
    batch: int | str,
    deferred: list[tuple[str, np.ndarray]] | None,
) -> tuple[onnx.ModelProto, list[tuple[str, np.ndarray]] | None]:
    batch_dim = _check_args(opset, batch)
    g = export_graph(compiled, with_aux=with_aux)
    weights = check_state_dict(compiled, g, initial_state_dict(compiled) if state_dict is None else state_dict)
    g, weights = fold_batch_norm(g, weights, scale=_scale_rows, copy=False)  # g is export_graph's own

    inp = g.graph["input"]
    outputs = g.graph["outputs"]
    if inp in {o.name for o in outputs}:
        raise CodegenError(f"an output is named '{inp}' like the input; ONNX needs distinct names")
    model = onnx.ModelProto()
    e = _Emitter(model.graph, batch_dim, weights, {n: _doc(d) for n, d in g.nodes(data=True)}, deferred)
    e.tensor(inp)
    for o in outputs:
        e.tensor(o.name)
    # the first output a node produces is written under the output's name
    result: dict[str, str] = {}
    for o in outputs:
        if o.node != inp:
            result.setdefault(o.node, o.name)
    in_attrs = g.nodes[inp]["attrs"]
    in_shape = e.full(g.nodes[inp]["shape"])
    x = inp
    for key, op_type in (("mean", "Sub"), ("std", "Div")):
        if in_attrs.get(key) is not None:
            values = np.asarray(in_attrs[key], dtype=np.float32).reshape(1, -1, *[1] * (len(in_shape) - 2))
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
            e.add("Identity", [produced[o.node]], node=o.name, shape=e.full(g.nodes[o.node]["shape"]), out=o.name)

    graph = model.graph
    graph.name = compiled.spec.name
    _set_value_info(graph.input.add(), inp, in_shape)
    for o in outputs:
        _set_value_info(graph.output.add(), o.name, e.full(g.nodes[o.node]["shape"]))
    named = {inp} | {o.name for o in outputs}
    for t, shape in e.shapes.items():
        if t not in named:
            _set_value_info(graph.value_info.add(), t, shape)
    opset_id = helper.make_opsetid("", opset)
    model.opset_import.append(opset_id)
    model.producer_name = "nasdsl"
    model.producer_version = __version__
    doc = safe_text(compiled.spec.doc or "", 1000)
    if doc:
        model.doc_string = doc
    model.ir_version = helper.find_min_ir_version_for([opset_id])
    spec = compiled.spec
    helper.set_model_props(
        model,
        {
            "nasdsl.spec.name": spec.name,
            "nasdsl.spec.file": safe_text(os.path.basename(spec.file), 200),
            "nasdsl.spec.sha256": spec.sha256,
            "nasdsl.version": __version__,
        },
    )
    return model, deferred


__all__ = [
    "DEFAULT_OPSET",
    "SUPPORTED_OPSETS",
    "check_state_dict",
    "export_onnx",
    "export_onnx_bytes",
    "initial_state_dict",
    "load_state_dict",
    "parameters",
    "reference_model",
]
