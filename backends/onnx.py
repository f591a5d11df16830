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
import numbers
import os
import sys
from collections.abc import Mapping, Sequence

import networkx as nx
import numpy as np
import onnx
from onnx import TensorProto, helper

from nasdsl import __version__, ir
from nasdsl.errors import CodegenError
from nasdsl.ops import lowering
from nasdsl.optimize import rewrite
from nasdsl.passes.derive import derive_weights
from nasdsl.passes.pipeline import run_pipeline
from nasdsl.weights import MAX_MEMORY, check_memory, check_weights, initial_weights

from . import onnx_ensemble
from .onnx_ops import GraphLowering, check_supported, graph_lowering, lower
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
        if shape is not None:  # None: an int64 helper (a Shape's result), left to ONNX's inference
            self.shapes[out] = shape
        return out


def _set_attribute(attr: onnx.AttributeProto, name: str, value: object) -> None:
    """``attr`` as :func:`onnx.helper.make_attribute` makes it, for the kinds of
    value the lowerings use: an int, a float, a string, a list of ints or a tensor."""
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
    elif isinstance(value, onnx.TensorProto):
        attr.t.CopyFrom(value)
        attr.type = onnx.AttributeProto.TENSOR
    else:
        raise TypeError(f"attribute {name}: unexpected value {value!r}")  # a lowering's bug, not the user's


def export_graph(graph: object, *, with_aux: bool = False, verify: bool | str | None = None) -> nx.DiGraph:
    """The IR graph that is exported, before BatchNorm folding: the inference
    graph without identities and without nodes that reach no output (of an ensemble: of each member)."""
    whole = graph_lowering(ir.as_graph(graph))
    if whole is not None:  # an op whose lowering exports the whole graph: an ensemble's members
        return whole.export_graph(ir.as_graph(graph), with_aux=with_aux, verify=verify)
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
    whole = graph_lowering(source)
    if whole is not None:  # an op whose lowering exports the whole graph: an ensemble's members
        return whole.emit(source, opset, state_dict, with_aux, batch, deferred, max_memory)
    # the weights (drawn or given), the folded ones and the serialised model
    check_memory(source, 3, max_memory, "exporting ONNX")
    g = export_graph(source, with_aux=with_aux)
    checked = check_weights(source, g, initial_weights(source) if state_dict is None else state_dict)
    # a graph optimised already holds the steps its weights (keyed by its own names) went through
    done = len(ir.info(g).derivation)
    g = rewrite(g, optimize)  # BatchNorm folded (every export), then the target's rewrites
    check_supported(g)
    weights = derive_weights(ir.info(g).derivation[done:], checked)

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
        lower(e, g, node, [produced[i] for i in ir.inputs(g, node)], out, opset)
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


# the lowering of an ensemble's ops, which export the whole graph with this module's functions
_this = sys.modules[__name__]
lowering("onnx", "member", "average")(
    GraphLowering(
        functools.partial(onnx_ensemble.export_graph, single=_this), functools.partial(onnx_ensemble.emit, single=_this)
    )
)

__all__ = ["DEFAULT_OPSET", "PIPELINE", "SUPPORTED_OPSETS", "export_graph", "export_onnx", "export_onnx_bytes"]
