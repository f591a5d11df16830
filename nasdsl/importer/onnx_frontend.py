"""ONNX models into a :class:`~nasdsl.importer.flat.FlatModel`, with the onnx package alone.

The graph is read as data (``onnx.load``, ``onnx.checker``,
``onnx.shape_inference``), constant operands are folded with numpy (initializers,
``Constant`` nodes, the shape arithmetic exporters write around ``Reshape``), sizes the shape
inference lost are inferred again node by node, three rewrites undo what the dynamo exporter
joins or adds (an initializer that several modules read given to each as its own copy, an
``as_strided`` copy dropped, a Reshape between MaxViT's partitions split through the map:
``_own_copies``, ``_Reader._strided_copies`` and ``_split_partition_reshapes``), the regions of
many nodes that are one op
(attention, Swin's window attention and patch merging) are found and checked by
:mod:`nasdsl.importer.onnx_regions`, and every other node or short run of nodes is mapped
through :mod:`nasdsl.importer.onnx_ops`.

Names and the module tree come from the node names, in the two conventions this knows:

* torch.onnx.export's (TorchScript): ``/layer1/layer1.0/conv1/Conv`` is the layer
  ``layer1.0.conv1``; ``/inception3a/branch1/Relu`` a function called in
  ``inception3a.branch1`` (named ``relu`` there);
* nasdsl's own export: ``layer1/0/conv1`` (its output is named ``layer1.0.conv1``).

Otherwise nodes are named by their op (``conv_3``) in one flat model. Scopes of the tree are
grouped into classes by structure: scopes that hold the same ops, names and reads are uses of
one template.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections import Counter

import numpy as np

from nasdsl.importer import rewrite
from nasdsl.importer.check import input_within_limits
from nasdsl.importer.discover import blocks
from nasdsl.importer.flat import (
    CLASS,
    CONTAINER,
    ROOT,
    FlatModel,
    ImportFailure,
    Node,
    Output,
    Scope,
    join,
)
from nasdsl.importer.onnx_names import CLASS_HIERARCHY, NAME_SCOPES, listed, metadata, torch_scope
from nasdsl.importer.onnx_ops import PATTERNS, Match, View, per_channel, slice_bounds
from nasdsl.importer.ops_table import Lowered, Unsupported

#: the name a function-like op gets in its scope (a merge's own name is a spec keyword)
_NAMES = {"Add": "residual", "Mul": "scale", "Concat": "cat", "Div": "div", "Sub": "sub"}
_ALIASES = ("Identity", "Dropout", "Cast")
#: the numpy types of a Constant's attributes of numbers (a tensor and a sparse tensor are read as such;
#: a string one is not folded)
_CONSTANT_TYPES = {"value_float": np.float32, "value_floats": np.float32, "value_int": np.int64, "value_ints": np.int64}
#: the input types (onnx.TensorProto's names), besides FLOAT, of a model the spec computes in float32
_FLOATS = ("FLOAT16", "DOUBLE", "BFLOAT16")


#: the oldest version of the default domain the importer reads: ONNX Runtime's (an op of an older
#: one, Add with its ``broadcast`` attribute or Reshape with its ``shape``, reads otherwise)
MIN_OPSET = 7


def default_opset(proto) -> int:
    """The file's version of the default domain (``''`` or ``'ai.onnx'``): where it names none, 1,
    as ONNX's checker reads a file of IR version 1 or 2 (from IR version 3 on it refuses one).
    :func:`read_onnx` refuses a file that names it at two versions, or one below :data:`MIN_OPSET`."""
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 1)


def read_onnx_file(
    path: str,
    *,
    input_shape: tuple[int, ...] | None = None,
    name: str | None = None,
    allow_opaque: bool = False,
    by_structure: bool = False,
    find_blocks: bool = True,
) -> FlatModel:
    import onnx

    try:
        proto = onnx.load(path)
    except Exception as e:  # noqa: BLE001 - a file that is not an ONNX model
        raise ImportFailure(f"cannot read an ONNX model: {type(e).__name__}: {str(e)[:200]}", where=path) from None
    return read_onnx(
        proto,
        label=path,
        input_shape=input_shape,
        name=name,
        allow_opaque=allow_opaque,
        by_structure=by_structure,
        find_blocks=find_blocks,
    )


def read_onnx(
    proto,
    *,
    label: str,
    input_shape: tuple[int, ...] | None = None,
    name: str | None = None,
    allow_opaque: bool = False,
    by_structure: bool = False,
    find_blocks: bool = True,
) -> FlatModel:
    """``by_structure``: ignore the node names and metadata, and find the blocks by the graph's
    structure alone (:mod:`nasdsl.importer.discover`), as for a file that has neither.
    ``find_blocks`` False: a graph that names no modules stays flat (one op an entry)."""
    import onnx

    proto, order = _in_order(_default_domain(proto))
    fed = {t.name for t in proto.graph.initializer}
    for value in proto.graph.input:
        if value.name not in fed and not value.type.tensor_type.HasField("shape"):
            raise ImportFailure(
                f"the input '{value.name}' declares no shape (not even its number of axes): a spec's input has "
                "one, and ONNX's checker requires it",
                where=label,
            )
    try:
        onnx.checker.check_model(_light(proto))
    except Exception as e:  # noqa: BLE001
        raise ImportFailure(f"not a valid ONNX model: {str(e).strip().splitlines()[0][:200]}", where=label) from None
    versions = sorted({o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")})
    if len(versions) > 1:  # the checker takes one, ONNX Runtime another: how an op reads would be a guess
        raise ImportFailure(
            f"opset_import names the default domain ('' or 'ai.onnx') at versions {versions}: a file has one",
            where=label,
        )
    if default_opset(proto) < MIN_OPSET:
        said = "names no version of it (IR version < 3: opset 1)" if not versions else f"is opset {versions[0]}"
        raise ImportFailure(
            f"the file's default domain {said}; nasdsl reads opset {MIN_OPSET} and later, as ONNX Runtime "
            "runs them (convert it first: onnx.version_converter.convert_version)",
            where=label,
        )
    model = _own_copies(proto)
    if model is proto:  # the reader rewires nodes in place: the caller's model is never changed
        model = type(proto)()
        model.CopyFrom(proto)
    reader = _Reader(model, label, input_shape, allow_opaque, by_structure)
    reader.find_blocks = find_blocks
    reader.order = order
    return reader.read(name)


def _default_domain(proto):
    """The model with each node of the domain ``'ai.onnx'`` given the domain ``''``: the two
    names of ONNX's own, which ONNX Runtime takes alike and ONNX's checker does not (it finds no
    op of ``'ai.onnx'`` where only ``''`` is imported, or no ``Conv`` of ``'ai.onnx'`` at all).
    The proto passed in is left as it is."""
    if not any(n.domain == "ai.onnx" for n in proto.graph.node):
        return proto
    out = type(proto)()
    out.CopyFrom(proto)
    for node in out.graph.node:
        if node.domain == "ai.onnx":
            node.domain = ""
    if not any(o.domain == "" for o in out.opset_import):
        for o in out.opset_import:
            if o.domain == "ai.onnx":
                o.domain = ""
    return out


def _in_order(proto):
    """The model with its nodes in an order that runs each after the values it reads (ONNX
    Runtime sorts a graph itself; ONNX's checker and the reader take it in order), the file's
    order wherever it allows; and, where that moved any node, each node's index in the file (by
    its index here), which errors name; else None. A node reading a value that nothing makes is
    left where it is, for the checker to name."""
    import heapq

    graph = proto.graph
    made = {o: k for k, n in enumerate(graph.node) for o in n.output if o}
    waits: list[set] = [{made[i] for i in n.input if i in made and made[i] != k} for k, n in enumerate(graph.node)]
    if all(all(j < k for j in w) for k, w in enumerate(waits)):
        return proto, None
    readers: dict[int, list[int]] = {}
    for k, w in enumerate(waits):
        for j in w:
            readers.setdefault(j, []).append(k)
    ready = [k for k, w in enumerate(waits) if not w]
    heapq.heapify(ready)
    order = []
    while ready:
        k = heapq.heappop(ready)
        order.append(k)
        for r in readers.get(k, ()):
            waits[r].discard(k)
            if not waits[r]:
                heapq.heappush(ready, r)
    if len(order) != len(graph.node):  # a cycle: the checker names it
        return proto, None
    out = type(proto)()
    out.CopyFrom(proto)
    del out.graph.node[:]
    out.graph.node.extend(graph.node[k] for k in order)
    return out, order


def _own_copies(proto):
    """The model with each named initializer that nodes of several unrelated modules read (the
    dynamo exporter stores equal tensors once: an untrained model's LayerNorm weights of ones)
    given to each such module as its own copy, named as that module's (``<module>.<leaf>``),
    so that the module tree owns its tensors as the model did; the values, and so the numbers
    computed, are unchanged. The module of a node is the innermost one of its metadata's
    scopes; the proto passed in is left as it is (a copy is changed, when anything changes)."""
    import onnx

    graph = proto.graph
    initial = {t.name: t for t in graph.initializer}
    readers: dict[str, dict[str, list]] = {}
    for k, node in enumerate(graph.node):
        scopes = listed(metadata(node).get(NAME_SCOPES, "")) or []
        module = scopes[-2] if len(scopes) >= 2 else ""
        if not module:
            continue
        for j, value in enumerate(node.input):
            if value in initial and "." in value:
                readers.setdefault(value, {}).setdefault(module, []).append((k, j))
    moves: dict[str, list] = {}  # a copy's name -> the initializer copied, the reads it takes
    for value, by_module in readers.items():
        if len(by_module) < 2:
            continue
        owner, _, leaf = value.rpartition(".")
        for module, reads in by_module.items():
            related = module == owner or module.startswith(owner + ".") or owner.startswith(module + ".")
            name = f"{module}.{leaf}"
            if related or name in initial or name in moves:
                continue
            moves[name] = [value, reads]
    if not moves:
        return proto
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    for name, (value, reads) in moves.items():
        copy = out.graph.initializer.add()
        copy.CopyFrom(initial[value])
        copy.name = name
        for k, j in reads:
            out.graph.node[k].input[j] = name
    return out


def _as_run(light):
    """``light`` (a copy for shape inference) with each Resize by constant scales whose sizes
    ONNX's shape inference and ONNX Runtime give differently made a Resize to the sizes ONNX
    Runtime gives: the inference takes ``floor(side * scale)`` in double precision, ONNX Runtime
    (and the shapes torch.onnx.export declares) the float32 product, and 10 x float32(2.3) is 22
    by the one, 23 by the other. The importer reads the scales from the file itself
    (:func:`nasdsl.importer.onnx_ops._resize`)."""
    import onnx
    from onnx import numpy_helper

    opset = default_opset(light)
    g = light.graph
    const = {t.name: t for t in g.initializer}
    for n in g.node:
        if n.op_type == "Constant":
            const.update((n.output[0], a.t) for a in n.attribute if a.name == "value")
    resizes = [
        n for n in g.node
        if n.op_type == "Resize" and len(n.input) >= 3 and n.input[2] in const and (len(n.input) == 3 or not n.input[3])
        and not any(a.name == "axes" for a in n.attribute)
    ]  # fmt: skip
    if opset < 11 or not resizes:
        return light
    shapes = None
    for node in resizes:
        if shapes is None:
            inferred = onnx.shape_inference.infer_shapes(light, data_prop=True)
            shapes = {vi.name: _shape_of(vi) for vi in [*inferred.graph.value_info, *inferred.graph.input]}
        scales = numpy_helper.to_array(const[node.input[2]]).astype(np.float32).reshape(-1)
        shape = shapes.get(node.input[0])
        if shape is None or len(shape) != scales.size or not all(isinstance(d, int) for d in shape):
            continue
        run = [int(np.float32(d) * s) for d, s in zip(shape, scales, strict=True)]
        if run == [math.floor(d * float(s)) for d, s in zip(shape, scales, strict=True)]:
            continue
        sizes = f"{node.output[0]}::sizes_as_run"
        g.initializer.append(numpy_helper.from_array(np.array(run, np.int64), sizes))
        node.input[2] = ""
        if len(node.input) > 3:
            node.input[3] = sizes
        else:
            node.input.append(sizes)
        shapes = None  # the sizes after it change
    return light


def _light(proto, chw: tuple[int, ...] | None = None):
    """The model without the data of its large initializers (each becomes a graph input of the
    same type and shape), the input fixed to batch 1 and ``chw`` when given: what the checker
    and shape inference need, without copying the weights. With ``chw``, the shapes the file
    declares for its other values and its outputs are left out, to be inferred from that input:
    they are the file's batch and size (a batch fixed at 8), or wrong (ONNX Runtime merges a
    declared shape that contradicts its own leniently and computes as the nodes say)."""
    import onnx
    from onnx import helper

    graph = proto.graph
    big = [t for t in graph.initializer if len(t.raw_data) > 4096 or len(t.float_data) > 1024]
    big_names = {t.name for t in big}
    light = onnx.ModelProto()
    for field in ("ir_version", "producer_name", "producer_version", "domain", "model_version"):
        setattr(light, field, getattr(proto, field))
    light.opset_import.extend(proto.opset_import)
    g = light.graph
    g.name = graph.name
    g.node.extend(graph.node)
    g.input.extend(i for i in graph.input if i.name not in big_names)
    g.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in big)
    g.output.extend(graph.output)
    if chw is None:
        g.value_info.extend(graph.value_info)
        for out in g.output:  # ONNX's checker wants a shape where ONNX Runtime takes an output without one
            if out.type.HasField("tensor_type") and not out.type.tensor_type.HasField("shape"):
                out.type.tensor_type.shape.SetInParent()
    else:
        for out in g.output:
            out.type.tensor_type.ClearField("shape")
    g.initializer.extend(t for t in graph.initializer if t.name not in big_names)
    if chw is not None:
        names = [i.name for i in g.input]
        initial = {t.name for t in graph.initializer}
        first = next(k for k, i in enumerate(graph.input) if i.name not in initial)
        dims = g.input[names.index(graph.input[first].name)].type.tensor_type.shape.dim
        for d, v in zip(dims, (1, *chw), strict=True):
            d.Clear()
            d.dim_value = v
    return light


def _shape_of(value_info) -> tuple:
    t = value_info.type.tensor_type
    return tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim)


#: an input's sizes (the batch excluded) in the order a file gives them, by its rank
_ORDERS = {2: "C", 3: "L,C", 4: "C,H,W", 5: "C,T,H,W"}


def _reads_channels_last(nodes, name: str, rank: int) -> bool:
    """Whether the graph's input ``name`` is an image channels-last, (N, H, W, C), that the graph
    reads only through a Transpose to channels first (a Keras model's input, as tf2onnx writes it)."""
    readers = [n for n in nodes if name in n.input]
    return (
        rank == 4
        and len(readers) == 1
        and readers[0].op_type == "Transpose"
        and list(View.attrs(readers[0]).get("perm", [])) == [0, 3, 1, 2]
    )


class _Reader:
    def __init__(self, proto, label: str, input_shape, allow_opaque: bool = False, by_structure: bool = False) -> None:
        import onnx
        from onnx import numpy_helper

        self.allow_opaque = allow_opaque
        self.notes: list[str] = []
        self.weights = {i.name for i in proto.graph.initializer}
        self.label = label
        self.proto = proto
        graph = proto.graph
        self.const: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
        inputs = [i for i in graph.input if i.name not in self.const]
        if len(inputs) != 1:
            # a value a node reads as a constant (a resize's scales, a reshape's shape) given as an
            # input is one more input: the spec's sizes are constants, and its model takes one tensor
            readers = {i.name: [k for k, n in enumerate(graph.node) if i.name in n.input] for i in inputs}
            shown = ", ".join(
                f"'{name}'"
                + (f" (read by graph.node[{k[0]}] '{graph.node[k[0]].name}' ({graph.node[k[0]].op_type}))" if k else "")
                for name, k in readers.items()
            )
            raise ImportFailure(f"the graph has {len(inputs)} inputs, {shown}: a spec has one", where=label)
        self.input = inputs[0]
        shape = _shape_of(self.input)
        if len(shape) not in (2, 3, 4, 5):
            raise ImportFailure(
                f"the input '{self.input.name}' has shape {list(shape)}: the importer reads a batch of features "
                "(N, C), of tokens (N, L, C), of maps (N, C, H, W) or of clips (N, C, T, H, W) as a spec's input",
                where=label,
            )
        last = _reads_channels_last(graph.node, self.input.name, len(shape))
        order = _ORDERS[len(shape)] if not last else "H,W,C"
        if input_shape and len(input_shape) != len(shape) - 1:
            raise ImportFailure(
                f"the input shape given, {list(input_shape)}, has {len(input_shape)} size"
                f"{'s' if len(input_shape) != 1 else ''}: the input '{self.input.name}' {list(shape)} takes "
                f"{len(shape) - 1} ({order}{', in its channels-last order' if last else ''})",
                where=label,
            )
        chw = tuple(input_shape) if input_shape else shape[1:]
        # the file's channels, fixed by its weights: last in features (N, C), tokens (N, L, C) and NHWC
        at_end = last or len(shape) in (2, 3)
        channels, given = (-1, -1) if at_end else (1, 0)
        if input_shape and isinstance(shape[channels], int) and chw[given] != shape[channels]:
            where_said = ", channels-last, in the file's order" if last else ""
            layout = f" (the input shape is {order}{where_said})" if at_end and len(chw) > 1 else ""
            raise ImportFailure(
                f"the input '{self.input.name}' {list(shape)} has {shape[channels]} channels{layout}, and "
                f"--input-shape gives {chw[given]}{' as its last size' if at_end and len(chw) > 1 else ''}: the "
                "file's weights are for its own",
                where=label,
            )
        if not all(isinstance(d, int) for d in chw):
            raise ImportFailure(
                f"the input '{self.input.name}' has the symbolic shape {list(shape)}: give --input-shape {order}",
                where=label,
            )
        what = f"the input shape given, {list(chw)}," if input_shape else f"the input '{self.input.name}' {list(shape)}"
        hint = "" if input_shape else f": give --input-shape {order} to import it at another size"
        # the sizes checked in the order whose axes the limits name (a channels-last input's C first)
        input_within_limits((chw[2], chw[0], chw[1]) if last else chw, what=what, where=label, hint=hint)
        self._check_type(label)
        try:
            inferred = onnx.shape_inference.infer_shapes(_as_run(_light(proto, chw)), strict_mode=True, data_prop=True)
        except Exception as e:  # noqa: BLE001
            raise ImportFailure(
                f"ONNX shape inference fails: {str(e).strip().splitlines()[0][:300]}", where=label
            ) from None
        self.shapes: dict[str, tuple] = {}
        self.elem_types: dict[str, int] = {}
        for vi in [*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input]:
            if vi.type.tensor_type.HasField("shape"):  # one without is unknown (not a scalar): refined below
                self.shapes[vi.name] = _shape_of(vi)
            self.elem_types[vi.name] = vi.type.tensor_type.elem_type
        self.chw = chw
        self.docs: dict[str, str] = {}
        #: each node's index in the file, where the nodes were sorted to run in order (:func:`_in_order`)
        self.order: list[int] | None = None
        #: the type (axes included) the spec's ops give each value read so far
        self.types: dict = {}
        self.nodes = list(graph.node)
        self.alias: dict[str, str] = {}
        #: whether the file names no modules (then blocks are found by structure)
        self.unnamed = by_structure
        self.find_blocks = True

    def _check_type(self, label: str) -> None:
        """A spec's model reads float32: an input of floating point is imported (one of another
        precision with a note that the spec computes in float32); an input of integers or
        booleans (token ids, masks) has no spec equivalent and is refused."""
        from onnx import TensorProto

        code = self.input.type.tensor_type.elem_type
        name = TensorProto.DataType.Name(code) if code in TensorProto.DataType.values() else f"type {code}"
        kind = name.lower()
        if name == "FLOAT":
            return
        if name not in _FLOATS:
            raise ImportFailure(
                f"the input '{self.input.name}' holds {kind} values: a spec's input is a float tensor "
                "(float32), and an input of another type (integer token ids, a boolean mask) has no spec equivalent",
                where=label,
            )
        self.notes.append(f"the input '{self.input.name}' is {kind}: the spec's model computes in float32")

    # constants and aliases

    def fold_value(self, name: str) -> None:
        """Compute ``name`` when it is a constant: a Constant node, an alias of a constant, the
        Shape of a value whose shape is known, or a foldable op of constants (recursively)."""
        from onnx import helper, numpy_helper

        node = self.producer.get(name)
        if node is None or name in self.const or id(node) in self.folding:
            return
        self.folding.add(id(node))
        try:
            value = None
            if node.op_type == "Constant":
                a = node.attribute[0]
                v = helper.get_attribute_value(a)
                if a.name == "value":
                    value = numpy_helper.to_array(v)
                elif a.name in _CONSTANT_TYPES:  # value_float is a float32, value_int an int64 (ONNX's types)
                    value = np.array(v, dtype=_CONSTANT_TYPES[a.name])
                elif a.name == "sparse_value":
                    try:
                        value = _dense(v)
                    except (ValueError, IndexError):  # too large, or indices outside it: left to the op table
                        value = None
            elif node.op_type in ("Identity", "Dropout") and node.input and self.view.get(node.input[0]) is not None:
                value = self.const[node.input[0]]
            elif node.op_type == "Shape":
                shape = self.view.shapes.get(node.input[0])
                if shape is not None and all(isinstance(d, int) for d in shape):
                    a = View.attrs(node)  # opset 15: the part from start to end
                    value = np.array(shape, dtype=np.int64)[int(a.get("start", 0)) : a.get("end")]
            elif node.op_type == "Slice" and node.input and self.view.get(node.input[0]) is not None:
                bounds = slice_bounds(self.view.get, node, self.view.opset)
                try:
                    value = None if bounds is None else _slice_value(self.const[node.input[0]], *bounds)
                except (IndexError, ValueError):  # an axis it lacks, bounds of other lengths: left to the op table
                    value = None
            elif node.op_type in _FOLDABLE and all(not i or self.view.get(i) is not None for i in node.input):
                a = View.attrs(node)
                if node.op_type in ("Squeeze", "Unsqueeze") and self.view.opset >= 13:  # the axes an input
                    a["axes"] = self.const[node.input[1]] if len(node.input) > 1 and node.input[1] else None
                try:
                    value = _FOLDABLE[node.op_type]([self.const.get(i) for i in node.input], a)
                except Exception:  # noqa: BLE001 - left to the op table, which names it
                    value = None
            if value is not None:
                self.const[name] = np.asarray(value)
        finally:
            self.folding.discard(id(node))

    # reading

    def _passes_on(self, dropout) -> bool:
        """Whether a Dropout passes its input on, as ONNX Runtime runs it: where its ``training_mode``
        (an input from opset 12) is left out or a constant false, and its mask (an output) is read by
        no node and is no output of the graph. Another is left to the op table, which refuses it."""
        from onnx import numpy_helper

        if len(dropout.input) > 2 and dropout.input[2]:
            name = dropout.input[2]
            made = next((n for n in self.nodes if name in n.output and n.op_type == "Constant"), None)
            value = self.const.get(name)
            if value is None and made is not None and made.attribute[0].name == "value":
                value = numpy_helper.to_array(made.attribute[0].t)
            if value is None or value.size != 1 or bool(value.reshape(())):
                return False
        mask = dropout.output[1] if len(dropout.output) > 1 else ""
        outputs = {o.name for o in self.proto.graph.output}
        return not mask or (mask not in outputs and not any(mask in n.input for n in self.nodes))

    def _check_bindings(self) -> None:
        """Refuse a node whose inputs of one type parameter of its op (a Conv's ``T``: its input,
        weight and bias) hold different element types (a float16 weight on a float32 input):
        ONNX Runtime refuses to load such a file, and the spec, which computes in float32, would
        compute what the file does not."""
        import onnx
        from onnx import TensorProto

        kinds = {t.name: t.data_type for t in self.proto.graph.initializer} | self.elem_types
        opset = default_opset(self.proto)
        for node in self.nodes:
            try:
                schema = onnx.defs.get_schema(node.op_type, opset, "")
            except Exception:  # noqa: BLE001 - an op ONNX does not know: the op table names it
                continue
            formal = list(schema.inputs)
            bound: dict[str, dict[int, str]] = {}
            for k, value in enumerate(node.input):
                if not value or not formal or value not in kinds:
                    continue
                param = formal[min(k, len(formal) - 1)]
                variadic = param.option == onnx.defs.OpSchema.FormalParameterOption.Variadic
                if (k >= len(formal) and not variadic) or (variadic and not param.is_homogeneous):
                    continue
                bound.setdefault(param.type_str, {}).setdefault(kinds[value], value)
            for type_str, seen in bound.items():
                if len(seen) > 1:
                    shown = ", ".join(
                        f"'{v}' {TensorProto.DataType.Name(t).lower() if t in TensorProto.DataType.values() else t}"
                        for t, v in seen.items()
                    )
                    raise self.fail(
                        node,
                        f"its inputs of one type ({type_str}) hold different element types ({shown}): ONNX "
                        "Runtime refuses the file, and the spec computes in float32",
                    )

    def _to_float(self, cast) -> bool:
        """Whether a Cast passes its input on in the spec's float32: a Cast to float32 of a float32
        value, or of the graph's input of another floating point type (which the spec reads as
        float32). Another is left to the op table, which refuses it."""
        from onnx import TensorProto

        if int(View.attrs(cast).get("to", 0)) != TensorProto.FLOAT:
            return False
        kind = self.elem_types.get(cast.input[0])
        if cast.input[0] == self.input.name:
            return kind in (TensorProto.FLOAT, *(getattr(TensorProto, t) for t in _FLOATS))
        return kind == TensorProto.FLOAT

    def _strided_copies(self) -> list:
        """The dynamo exporter's ``as_strided`` of a contiguous tensor onto its own shape: a
        ``Reshape`` to ``[-1]`` whose one reader is a ``Gather`` along axis 0 of the constant
        indices ``0, 1, ... n - 1`` laid out in the input's shape. The pair copies its input;
        its output becomes an alias of the input and both nodes are dropped. Any other layout
        of indices is left to the op table (and its error)."""
        readers: dict[str, list] = {}
        for node in self.nodes:
            for i in node.input:
                readers.setdefault(i, []).append(node)
        copies = []
        for node in self.nodes:
            users = readers.get(node.output[0], []) if node.op_type == "Reshape" else []
            flat = self.const.get(node.input[1]) if len(node.input) > 1 else None
            if flat is None or flat.reshape(-1).tolist() != [-1] or len(users) != 1 or users[0].op_type != "Gather":
                continue
            gather = users[0]
            index = self.const.get(gather.input[1])
            shape = self.shapes.get(node.input[0])
            if index is None or shape is None or int(View.attrs(gather).get("axis", 0)) != 0:
                continue
            if gather.input[0] != node.output[0] or tuple(index.shape) != tuple(shape):
                continue
            if np.array_equal(index.reshape(-1), np.arange(index.size)):
                self.alias[gather.output[0]] = self.alias.get(node.input[0], node.input[0])
                copies += [node, gather]
        return copies

    def _split_partition_reshapes(self) -> None:
        """The dynamo exporter joins MaxViT's window departition and the grid partition after it
        into one ``Reshape`` between two views of the map, ``(N, C, H/p, p, W/p, p)`` to
        ``(N, C, H/q, q, W/q, q)``, or drops it where the two views are one (``p == q``), leaving
        two ``Transpose`` nodes in a row. That Reshape becomes two through the map ``(N, C, H,
        W)`` (a reshape of a reshape is the reshape to the last shape), and the two Transposes get
        the pair between them, so that each partition is a ``Reshape, Transpose, Reshape`` again;
        what it then reads as is left to the op table. The caller's graph is left as it is."""
        out = []
        producer = {o: n for n in self.nodes for o in n.output}
        for node in self.nodes:
            source = node.input[0] if node.input else ""
            shape_in, shape_out = (tuple(self.shapes.get(v, ())) for v in (source, node.output[0]))
            before = producer.get(source)
            if not (len(shape_in) == len(shape_out) == 6 and all(isinstance(d, int) and d > 0 for d in shape_in)):
                out.append(node)
            elif (
                node.op_type == "Reshape" and shape_out[:2] == shape_in[:2] and _joined(shape_out) == _joined(shape_in)
            ):
                image = self._reshaped(out, source, _joined(shape_in), f"{node.name}__map", before or node)
                out.append(self._reading(node, image))
            elif node.op_type == "Transpose" and before is not None and before.op_type == "Transpose":
                image = self._reshaped(out, source, _joined(shape_in), f"{node.name}__map", before)
                view = self._reshaped(out, image, shape_in, f"{node.name}__view", node)
                out.append(self._reading(node, view))
            else:
                out.append(node)
        self.nodes = out

    def _reshaped(self, out: list, source: str, shape: tuple, name: str, scope) -> str:
        """Append a Reshape of ``source`` to ``shape`` (in ``scope``'s module) to ``out``; its value."""
        from onnx import helper

        self.const[f"{name}/shape"] = np.array(shape, dtype=np.int64)
        self.shapes[name] = tuple(shape)
        node = helper.make_node("Reshape", [source, f"{name}/shape"], [name], name=name)
        node.metadata_props.extend(scope.metadata_props)
        out.append(node)
        return name

    @staticmethod
    def _reading(node, value: str):
        """A copy of ``node`` reading ``value`` first."""
        copy = type(node)()
        copy.CopyFrom(node)
        copy.input[0] = value
        return copy

    def read(self, name: str | None) -> FlatModel:
        from nasdsl.ir.types import TensorType, default_axes

        for node in self.nodes:
            if node.domain not in ("", "ai.onnx"):  # an op of another domain only shares its name with ONNX's
                raise self.fail(
                    node,
                    f"an op of the domain '{node.domain}': nasdsl reads the ops of ONNX's default domain "
                    "('' or 'ai.onnx'), and an op of another (a runtime's fused op, a custom op) computes what "
                    "that domain says",
                )
        self._check_bindings()
        listed_outputs = [o.name for o in self.proto.graph.output]
        twice = next((o for o in listed_outputs if listed_outputs.count(o) > 1), None)
        if twice is not None:
            raise ImportFailure(
                f"the graph lists the output '{twice}' {listed_outputs.count(twice)} times: a spec's outputs are "
                "distinct values (ONNX Runtime returns it once)",
                where=self.label,
            )
        copies = {id(n) for n in self._strided_copies()}
        self.nodes = [n for n in self.nodes if id(n) not in copies]
        self._split_partition_reshapes()
        for node in self.nodes:  # Identity, inference-time Dropout and a Cast to float32 pass their input on
            if node.op_type in _ALIASES and node.input and node.input[0] not in self.const:
                passes = {"Identity": lambda n: True, "Dropout": self._passes_on, "Cast": self._to_float}
                if passes[node.op_type](node):
                    self.alias[node.output[0]] = self.alias.get(node.input[0], node.input[0])
        for node in self.nodes:
            node_inputs = [self.alias.get(i, i) for i in node.input]
            del node.input[:]
            node.input.extend(node_inputs)
        self.nodes = [n for n in self.nodes if not (n.op_type in _ALIASES and n.output[0] in self.alias)]
        self.producer = producer = {o: n for n in self.nodes for o in n.output}
        consumers: dict[str, list] = {}
        for n in self.nodes:
            for i in n.input:
                consumers.setdefault(i, []).append(n)
        self.folding: set[int] = set()
        shapes = {k: v for k, v in self.shapes.items()}
        opset = default_opset(self.proto)
        view = self.view = View(self.const, shapes, consumers, producer, self.fold_value, opset)
        view.types = self.types
        view.outputs = {self.alias.get(o.name, o.name) for o in self.proto.graph.output}
        shapes[self.input.name] = (1, *self.chw)
        axes = "HWC" if self._channels_last() else default_axes(len(self.chw))
        self.types[self.input.name] = TensorType(tuple(self.chw), axes)
        input_name = _identifier(self.input.name, "x")
        inp = Node(
            input_name,
            "input",
            {"axes": axes} if axes != default_axes(len(self.chw)) else {},
            [],
            tuple(self.chw),
            "",
            input_name,
            source=f"graph input '{self.input.name}'",
        )
        value_of: dict[str, str] = {self.input.name: input_name}
        if "axes" not in inp.attrs:  # statistics are read per channel of a channels-first map
            self._normalisation(inp, view, value_of)
        for value in value_of:  # a normalised input is the input
            self.types[value] = self.types[self.input.name]
        matches: list[Match] = []
        out_shapes: list[list[tuple]] = []
        used: set[int] = set()
        regions = self._regions(view)
        for node in self.nodes:
            region = regions.get(id(node))
            if region is not None:  # a node of a region read as one op: the op at its last node
                if region.match.nodes[-1] is not node:
                    continue
                found = [region.match]
            elif id(node) in used or all(o in self.const or not o for o in node.output):
                continue
            elif all(view.get(o) is not None for o in node.output if o):
                continue  # folded
            elif node.op_type == "Split":
                found = self._split(view, node)
            else:
                found = None
                for handler in PATTERNS.get(node.op_type, ()):
                    try:
                        found = handler(view, node)
                    except Unsupported as e:
                        found = self._opaque(view, node, str(e))
                    if found is not None:
                        break
                if found is None:
                    found = self._opaque(
                        view, node, "no spec op computes this (the op table is nasdsl/importer/onnx_ops.py)"
                    )
                found = found if isinstance(found, list) else [found]
            for m in found:
                for inner in m.nodes[:-1] if region is None else ():  # a region was checked whole
                    extra = [u for o in inner.output for u in consumers.get(o, []) if u not in m.nodes]
                    if extra:
                        raise self.fail(
                            inner,
                            f"its output is also read by '{extra[0].name}', outside the {m.lowered} it belongs to",
                        )
                used.update(id(n) for n in m.nodes)
                steps = self._shapes_of(m, view, node)
                shapes[m.output] = (1, *steps[-1])
                matches.append(m)
                out_shapes.append(steps)
        paths = self._paths(matches)
        nodes: dict[str, Node] = {}
        order = 0
        for m, path, steps in zip(matches, paths, out_shapes, strict=True):
            chain = m.lowered if isinstance(m.lowered, tuple) else (m.lowered,)
            prev = []
            for i in m.inputs:
                if i not in value_of:
                    raise self.fail(m.nodes[0], f"reads '{i}', which no op the spec can name makes")
                prev.append(value_of[i])
            for k, step in enumerate(chain):
                node_path = path if k == 0 else f"{path}_{step.suffix}"
                scope, _, local = node_path.rpartition(".")
                order += 1
                nodes[node_path] = Node(
                    node_path,
                    step.op,
                    dict(step.attrs),
                    prev,
                    tuple(steps[k]),
                    scope,
                    local,
                    m.tensors if k == 0 else {},
                    source=f"node '{m.nodes[-1].name}' ({m.nodes[-1].op_type})",
                    order=order,
                    doc=self.docs.get(m.output, ""),
                )
                prev = [node_path]
            value_of[m.output] = prev[0]
        outputs = []
        taken: set[str] = set()
        for k, out in enumerate(self.proto.graph.output):
            v = self.alias.get(out.name, out.name)
            if v not in value_of:
                made = self.producer.get(v)
                if made is None:  # a constant, or the input of a graph that computes nothing with it
                    raise ImportFailure(f"the output '{out.name}' is not a tensor the spec can name", where=self.label)
                raise self.fail(
                    made,
                    f"its output '{out.name}', an output of the graph, is inside an op the importer reads from "
                    "several nodes, which makes only that op's last value",
                )
            out_name = _identifier(out.name, "out" if k == 0 else f"out{k}")
            if out_name in taken:
                out_name = f"out{k}"
            taken.add(out_name)
            outputs.append(Output(out_name, value_of[v]))
        model = FlatModel(
            name=name or _class_name(self.proto.graph.name or "Model"),
            source=self.label,
            input=inp,
            nodes=nodes,
            scopes={},
            outputs=outputs,
        )
        model.notes.extend(self.notes)
        model.generated_names = self.unnamed
        if self.unnamed:
            # a concat of every earlier output (DenseNet) read as a chain of concats first:
            # each then joins one block's input to its output, and the blocks have cuts
            rewrite.drop_single_concats(model)
            rewrite.fold_concat_prefixes(model)
        if self.unnamed:
            classes = blocks(model) if self.find_blocks else {}
            model.blocks_found = bool(classes)
        else:
            classes = metadata_classes(self.proto)
        if classes and not name and "" in classes:
            model.name = _class_name(classes[""].rsplit(".", 1)[-1])
        model.scopes = _scopes(model, classes)
        return model

    def _regions(self, view: View) -> dict:
        """Each node of a region read as one op (attention, Swin's window attention and patch
        merging: :mod:`nasdsl.importer.onnx_regions`) -> its region."""
        from nasdsl.importer.onnx_regions import RegionError, find_regions

        opset = default_opset(self.proto)
        self._refine_shapes(view)
        try:
            found = find_regions(view, self.nodes, self.input.name, self.weights, opset)
        except RegionError as e:
            raise self.fail(e.node, str(e)) from None
        return {id(n): r for r in found for n in r.closure}

    def _refine_shapes(self, view: View) -> None:
        """Where ONNX's shape inference lost a size (a Pad whose pads an exporter computes from
        the input's size, and every Reshape after it), infer it again node by node in graph
        order, with the constants folded so far as the node's input data."""
        import onnx
        from onnx import helper, numpy_helper

        def known(shape) -> bool:
            return shape is not None and all(isinstance(d, int) for d in shape)

        opsets = {o.domain or "": o.version for o in self.proto.opset_import}
        for n in self.nodes:
            outs = [o for o in n.output if o]
            if all(known(view.shapes.get(o)) for o in outs):
                continue
            for o in outs:
                if view.get(o) is not None:
                    view.shapes[o] = self.shapes[o] = tuple(np.shape(view.const[o]))
            if all(known(view.shapes.get(o)) for o in outs) or n.domain not in ("", "ai.onnx"):
                continue
            types, data = {}, {}
            for i in n.input:
                if not i:
                    continue
                value = view.get(i)
                if value is not None:
                    data[i] = numpy_helper.from_array(np.asarray(value), i)
                    types[i] = helper.make_tensor_type_proto(data[i].data_type, list(np.shape(value)))
                elif known(view.shapes.get(i)) and i in self.elem_types:
                    types[i] = helper.make_tensor_type_proto(self.elem_types[i], list(view.shapes[i]))
                else:
                    break
            else:
                try:
                    schema = onnx.defs.get_schema(n.op_type, opsets.get("", 17), "")
                    out = onnx.shape_inference.infer_node_outputs(
                        schema, n, types, data, opset_imports=list(self.proto.opset_import)
                    )
                except Exception:  # noqa: BLE001 - the size stays unknown; a reader needing it says so
                    continue
                for o, t in out.items():
                    shape = _shape_of(helper.make_value_info(o, t))
                    if known(shape):
                        view.shapes[o] = self.shapes[o] = shape
                        self.elem_types.setdefault(o, t.tensor_type.elem_type)

    def _shapes_of(self, m: Match, view: View, node) -> list[tuple]:
        """The shape after each op of a match (batch excluded), by nasdsl's own shape rules on
        the types the spec's ops give their inputs (their axes included: a permuted map is
        ``HWC``, which a convolution does not take), so that what the spec's builder would
        refuse is refused here, at the node: the exporter's inferred shapes are not needed past
        the input."""
        from nasdsl.errors import NasdslError
        from nasdsl.ir.types import TensorType, default_axes
        from nasdsl.ops import OPS

        if m.shape is not None:  # axes the reader does not track: those after it are read as their rank's default
            return [tuple(m.shape)]
        shapes = []
        for i in m.inputs:
            s = view.shapes.get(i)
            if s is None or not all(isinstance(d, int) for d in s):
                raise self.fail(node, f"the shape of its input '{i}' is unknown")
            shapes.append(tuple(s[1:]))
        known = [self.types.get(i) for i in m.inputs]
        # a value after one whose axes are not tracked (a region's) is read as its rank's default
        tracked = all(t is not None and t.shape == s for t, s in zip(known, shapes, strict=True))
        types = known if tracked else [TensorType(s, default_axes(len(s))) for s in shapes]
        out = []
        for step in m.lowered if isinstance(m.lowered, tuple) else (m.lowered,):
            spec = OPS[step.op]
            wild = _out_of_range(step.attrs)
            if wild is not None:
                raise self.fail(
                    node, f"as {step.op}: {wild}: a spec's numbers are finite and at most 2^53 in magnitude"
                )
            try:
                made = spec.infer(types, spec.normalise(step.attrs))
            except NasdslError as e:
                raise self.fail(node, f"as {step.op}: {e.message}{self._layout_hint(types)}") from None
            out.append(tuple(made.shape))
            types = [made]
        if tracked:
            self.types[m.output] = types[0]
        return out

    def _channels_last(self) -> bool:
        return _reads_channels_last(self.nodes, self.input.name, len(self.chw) + 1)

    def _layout_hint(self, types: list) -> str:
        """Why an input's axes are not what an op takes, where the graph's input is a
        channels-last map transposed to channels first (a Keras model's NHWC input)."""
        readers = [n for n in self.nodes if self.input.name in n.input]
        perm = list(View.attrs(readers[0]).get("perm", [])) if len(readers) == 1 else []
        if (
            readers
            and readers[0].op_type == "Transpose"
            and perm == [0, 3, 1, 2]
            and any(t.axes != "CHW" for t in types)
        ):
            shape = list(_shape_of(self.input))
            return (
                f" (the graph's input '{self.input.name}' {shape} is channels-last, NHWC, and a spec's input is read "
                "as (C, H, W): the importer does not write a channels-last input)"
            )
        return ""

    def _normalisation(self, inp: Node, view: View, value_of: dict) -> None:
        """Sub(input, mean) and Div(., std) on the input are the input's mean and std; so is a
        rescaling ``Mul`` or ``Div`` by a constant and an ``Add`` or ``Sub`` of one after it (a
        Keras ``Rescaling``: ``x / 127.5 - 1``), each constant one value or one per channel."""
        users = view.consumers.get(self.input.name, [])
        if len(self.chw) == 2:  # tokens (L, C), whose channels are last: no statistics per channel read here
            return
        if len(users) == 1 and users[0].op_type in ("Mul", "Div") and users[0].input[0] == self.input.name:
            self._rescaling(inp, view, value_of, users[0])
            return
        if len(users) != 1 or users[0].op_type != "Sub" or users[0].input[0] != self.input.name:
            return
        sub = users[0]
        c, rank = self.chw[0], len(self.chw) + 1
        mean = per_channel(view.get(sub.input[1]), c, rank)  # a (C,) on a map would subtract per column
        if mean is None:
            return
        value, done = sub.output[0], [sub]
        std = None
        div = view.next_node(sub, "Div")
        if div is not None and div.input[0] == value:
            s = per_channel(view.get(div.input[1]), c, rank)
            if s is not None and np.all(s != 0) and np.all(np.isfinite(s)):  # a std of 0 divides by nothing
                std, value = s, div.output[0]
                done.append(div)
        attrs = _input_stats(mean, std)
        if _out_of_range(attrs) is not None:  # left to the op table, which refuses the Sub
            return
        inp.attrs = attrs
        value_of[value] = inp.id
        self.nodes = [n for n in self.nodes if all(n is not d for d in done)]

    def _rescaling(self, inp: Node, view: View, value_of: dict, scale) -> None:
        """``x * a`` (or ``x / d``), then ``+ b`` (or ``- b``) where one follows: the input's
        ``(x - mean) / std`` with ``std = 1 / a`` and ``mean = -b / a``."""
        c, rank = self.chw[0], len(self.chw) + 1
        factor = per_channel(view.get(scale.input[1]), c, rank)
        if factor is None or not np.all(factor != 0) or not np.all(np.isfinite(factor)):
            return
        factor = factor.astype(np.float64)
        a = 1.0 / factor if scale.op_type == "Div" else factor
        value, done, shift = scale.output[0], [scale], np.zeros(c)
        after = view.next_node(scale, "Add") or view.next_node(scale, "Sub")
        if after is not None and (after.op_type == "Add" or after.input[0] == value):
            b = per_channel(view.get(after.input[1] if after.input[0] == value else after.input[0]), c, rank)
            if b is not None:
                shift = b.astype(np.float64) * (-1.0 if after.op_type == "Sub" else 1.0)
                value = after.output[0]
                done.append(after)
        std = 1.0 / a
        if not np.all(np.isfinite(std)) or not np.all(std != 0):
            return
        attrs = _input_stats(-shift / a, std)
        if _out_of_range(attrs) is not None:
            return
        inp.attrs = attrs
        value_of[value] = inp.id
        self.nodes = [n for n in self.nodes if all(n is not d for d in done)]

    def _opaque(self, view: View, node, message: str) -> Match:
        """With --allow-opaque, a node of one computed input and one output, holding no
        weights, as an ``opaque`` op with its shape; else the error."""
        computed = [i for i in node.input if i and view.get(i) is None]
        heavy = [i for i in node.input if i in self.weights and self.const[i].size > 16]
        shape = view.shapes.get(node.output[0]) if len(node.output) == 1 else None
        if (
            not self.allow_opaque
            or len(computed) != 1
            or heavy
            or not shape
            or not all(isinstance(d, int) for d in shape)
        ):
            raise self.fail(node, message)
        m = Match(Lowered("opaque", {"shape": list(shape[1:])}), computed, node.output[0], [node])
        self.docs[node.output[0]] = f"opaque: ONNX {node.op_type} ({message.split(' (the op table')[0]})"
        return m

    def _split(self, view: View, node) -> list[Match]:
        a = view.attrs(node)
        rank = view.rank(node.input[0])
        if int(a.get("axis", 0)) % max(rank, 1) != 1:
            raise self.fail(node, "a Split other than of channels (axis 1)")
        sizes = a.get("split")
        if sizes is None and len(node.input) > 1 and node.input[1]:
            sizes = view.get(node.input[1])
        channels = view.shapes[node.input[0]][1]
        if sizes is None and a.get("num_outputs") and isinstance(channels, int):
            # opset 18: equal parts, the last one smaller when they do not divide the axis
            n = int(a["num_outputs"])
            part = -(-channels // n)
            sizes = [part] * (n - 1) + [channels - part * (n - 1)]
        elif sizes is None and view.opset < 18 and isinstance(channels, int):
            # before opset 18: equal parts, one per output
            n = len(node.output)
            if channels % n:
                raise self.fail(node, f"a Split of {channels} channels into {n} equal parts")
            sizes = [channels // n] * n
        if sizes is None:
            raise self.fail(node, "a Split without sizes")
        out, start = [], 0
        for size, value in zip([int(s) for s in np.asarray(sizes).flatten()], node.output, strict=True):
            attrs = {"start": start} if start + size == channels else {"start": start, "stop": start + size}
            out.append(Match(Lowered("slice", attrs), [node.input[0]], value, [node]))
            start += size
        return out

    def fail(self, node, message: str) -> ImportFailure:
        # the node itself (its outputs are its own): unnamed nodes all have the name ''
        index = next((k for k, n in enumerate(self.proto.graph.node) if n is node or n == node), None)
        if index is not None and self.order is not None:  # the file's own index, where the reader sorted it
            index = self.order[index]
        where = f"{self.label}: graph.node[{index}] '{node.name}' ({node.op_type})" if index is not None else self.label
        return ImportFailure(message, where=where)

    # names

    def _paths(self, matches: list[Match]) -> list[str]:
        names = [m.nodes[-1].name for m in matches]
        scoped = None if self.unnamed else _metadata_names(matches, self.weights)
        if self.unnamed:
            paths = [""] * len(matches)
        elif scoped is not None:
            paths = _torch_paths(matches, scoped)
        elif names and sum(n.startswith("/") for n in names) * 2 >= len(names):
            paths = _torch_paths(matches)
        elif names and sum(_nasdsl_path(m) == m.output for m in matches) * 2 >= len(names):
            paths = [_clean_path(_nasdsl_path(m)) if m.nodes[-1].name else "" for m in matches]
        else:
            paths = [""] * len(matches)
            self.unnamed = True
        if not self.unnamed:  # an op named apart from its last node (a region, a parameter)
            paths = [_clean_path(m.name) if m.name else p for p, m in zip(paths, matches, strict=True)]
        # a node named like a block that holds other nodes is that block's merge (a named concat)
        prefixes = {p.rsplit(".", 1)[0] for p in paths if "." in p}
        prefixes |= {q for p in prefixes for q in _prefixes(p)}
        paths = [f"{p}.{_op_word(m)}" if p and p in prefixes else p for p, m in zip(paths, matches, strict=True)]
        return _unique(paths, matches)


_FOLDABLE = {
    "Gather": lambda v, a: np.take(v[0], v[1], axis=int(a.get("axis", 0))),
    # ``axes``: the attribute before opset 13, the input from it (put in ``a`` by the caller)
    "Unsqueeze": lambda v, a: np.expand_dims(v[0], tuple(int(x) for x in np.asarray(a["axes"]).reshape(-1))),
    "Squeeze": lambda v, a: np.squeeze(v[0], _axes(a.get("axes"))),
    "Concat": lambda v, a: np.concatenate(v, axis=int(a.get("axis", 0))),
    "Cast": lambda v, a: v[0].astype(_onnx_dtype(int(a["to"]))),
    "Transpose": lambda v, a: np.transpose(v[0], a.get("perm")),
    "Reshape": lambda v, a: v[0].reshape(_reshaped_to(v[0].shape, v[1], a.get("allowzero", 0))),
    "Mul": lambda v, a: v[0] * v[1],
    "Div": lambda v, a: _divided(v[0], v[1]),
    "Add": lambda v, a: v[0] + v[1],
    "Sub": lambda v, a: v[0] - v[1],
    "Sqrt": lambda v, a: np.sqrt(v[0]),
    "Mod": lambda v, a: np.fmod(v[0], v[1]) if a.get("fmod", 0) else np.mod(v[0], v[1]),
    "Equal": lambda v, a: np.equal(v[0], v[1]),
    "Where": lambda v, a: np.where(v[0], v[1], v[2]),
    "ConstantOfShape": lambda v, a: _filled(v[0], a.get("value")),
    "Expand": lambda v, a: _expand_fill(v[0], v[1]),
    "ScatterND": lambda v, a: _scatter_nd(v[0], v[1], v[2], a.get("reduction", b"none")),
}


def _axes(axes) -> tuple | None:
    """A Squeeze's axes as numpy takes them: None (every axis of size 1) where none are given."""
    return None if axes is None else tuple(int(x) for x in np.asarray(axes).reshape(-1))


def _reshaped_to(shape: tuple, target: np.ndarray, allowzero: int) -> list[int]:
    """A Reshape's target with each 0 the input's size on that axis (unless ``allowzero``, from
    opset 14, says a 0 is a 0); numpy infers the -1."""
    dims = [int(x) for x in target.reshape(-1)]
    return dims if allowzero else [shape[k] if d == 0 else d for k, d in enumerate(dims)]


def _divided(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """ONNX's Div: integers divided and truncated toward zero (numpy's ``//`` floors), as ONNX
    Runtime computes; floats divided."""
    if a.dtype.kind in "iu" and np.asarray(b).dtype.kind in "iu":
        return (np.sign(a) * np.sign(b) * (np.abs(a) // np.abs(b))).astype(np.result_type(a, b))
    return a / b


def _slice_value(data: np.ndarray, starts, ends, axes, steps) -> np.ndarray:
    """A constant sliced by :func:`nasdsl.importer.onnx_ops.slice_bounds`' bounds."""
    index = [slice(None)] * data.ndim
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        index[int(axis)] = slice(int(start), int(end), int(step))
    return data[tuple(index)]


#: the most values a folded constant may hold (a fill of a hostile size is left unfolded)
_MAX_FOLDED = 1 << 24


def _filled(shape: np.ndarray, value) -> np.ndarray:
    from onnx import numpy_helper

    if int(np.prod(shape.astype(np.float64))) > _MAX_FOLDED:
        raise ValueError("too large to fold")
    fill = numpy_helper.to_array(value) if value is not None else np.zeros(1, dtype=np.float32)
    return np.full([int(d) for d in shape.reshape(-1)], fill.reshape(-1)[0], dtype=fill.dtype)


def _input_stats(mean, std) -> dict:
    """The input's ``mean`` and ``std`` attributes, each a list of one float per channel, left out
    where it does nothing (a mean of zeros, a std of ones), as the spec's builder leaves them."""
    attrs = {}
    if mean is not None and np.any(mean != 0):
        attrs["mean"] = [float(v) + 0.0 for v in mean]
    if std is not None and np.any(std != 1):
        attrs["std"] = [float(v) for v in std]
    return attrs


def _out_of_range(attrs: dict) -> str | None:
    """The first attribute (``key value``) holding a number no spec may hold (infinite, or beyond
    2^53 in magnitude: :mod:`nasdsl.numbers`), or None."""
    from nasdsl.numbers import number_ok

    def bad(v) -> bool:
        if isinstance(v, (list, tuple)):
            return any(bad(x) for x in v)
        return not number_ok(v)

    return next((f"{k} {v}" for k, v in attrs.items() if bad(v)), None)


def _dense(sparse) -> np.ndarray:
    """A ``SparseTensorProto`` (a Constant's ``sparse_value``) as the dense array it stands for:
    zeros but for its values, at indices given as positions in the flattened tensor ``[NNZ]``
    or as coordinates ``[NNZ, rank]`` (ONNX's two layouts)."""
    from onnx import numpy_helper

    dims = [int(d) for d in sparse.dims]
    if int(np.prod(np.array(dims, dtype=np.float64))) > _MAX_FOLDED:
        raise ValueError("too large to fold")
    values = numpy_helper.to_array(sparse.values).reshape(-1)
    indices = numpy_helper.to_array(sparse.indices).astype(np.int64)
    out = np.zeros(dims, dtype=values.dtype)
    if indices.ndim == 1:
        out.reshape(-1)[indices] = values
    else:
        out[tuple(indices.T)] = values
    return out


def _expand_fill(value: np.ndarray, shape: np.ndarray) -> np.ndarray:
    """An Expand of one value (a fill): folded. A learned tensor expanded to the batch is the
    ``parameter`` op instead, left to the op table."""
    if value.size != 1:
        raise ValueError("an Expand of a learned tensor")
    if int(np.prod(shape.astype(np.float64))) > _MAX_FOLDED:
        raise ValueError("too large to fold")
    return value.reshape(()) * np.ones([int(d) for d in shape.reshape(-1)], dtype=value.dtype)


def _scatter_nd(data: np.ndarray, indices: np.ndarray, updates: np.ndarray, reduction) -> np.ndarray:
    if reduction not in (b"none", "none"):
        raise ValueError("a ScatterND with a reduction")
    out = data.copy()
    k = indices.shape[-1]
    for where, value in zip(indices.reshape(-1, k), updates.reshape(-1, *data.shape[k:]), strict=True):
        out[tuple(int(i) for i in where)] = value
    return out


def _onnx_dtype(code: int):
    from onnx import helper

    return helper.tensor_dtype_to_np_dtype(code)


def _identifier(text: str, fallback: str) -> str:
    """A graph input's or output's name as a spec may name them (:func:`nasdsl.spec.check_name`:
    ASCII letters, digits and ``_``, no Python keyword, at most 64 characters) and the generated
    module may hold them (no attribute of ``nn.Module``'s: :data:`nasdsl.backends.names.TAKEN_ATTRIBUTES`):
    ``input:0`` is ``input_0``, ``class`` is ``class_``, ``forward`` is ``forward_``; else
    ``fallback``."""
    import keyword

    from nasdsl.backends.names import TAKEN_ATTRIBUTES
    from nasdsl.errors import Location, SpecError
    from nasdsl.spec import check_name

    text = re.sub(r"[^A-Za-z0-9_]", "_", text).strip("_")
    if keyword.iskeyword(text) or text in TAKEN_ATTRIBUTES:
        text += "_"
    try:
        return check_name(text, Location("<onnx>", 1, 1), "name")
    except SpecError:
        return fallback


def _class_name(text: str) -> str:
    """A graph's (or the metadata's root class's) name as a spec's model name
    (:func:`nasdsl.spec.check_name`): ASCII letters, digits and ``_``, not starting with a digit
    (``Model_2``), no Python keyword (``class_``), at most 64 characters; else ``Model``."""
    import keyword

    from nasdsl.errors import Location, SpecError
    from nasdsl.spec import check_name

    text = re.sub(r"[^A-Za-z0-9_]", "_", text).strip("_") or "Model"
    text = f"Model_{text}" if text[0].isdigit() else text
    if keyword.iskeyword(text):
        text += "_"
    try:
        return check_name(text, Location("<onnx>", 1, 1), "name", "model name")
    except SpecError:
        return "Model"


def _torch_paths(matches: list[Match], names: list[str] | None = None) -> list[str]:
    """Each match's path from its node's module scope: a module of one op is that op, named as
    the module; a module without children whose ops hold tensors in one of them (a convolution
    after the ``Pad`` of its ``padding_mode``) is that op too, the others beside it named after
    the module (``conv_pad``), so that its tensors keep the module's keys; else each op is named
    within the module after its kind."""
    scoped = [torch_scope(n) for n in (names or [m.nodes[-1].name for m in matches])]
    per_scope = Counter(s for s, _ in scoped)
    parents = {s.rsplit(".", 1)[0] for s, _ in scoped if "." in s}
    holding = Counter(s for (s, _), m in zip(scoped, matches, strict=True) if m.tensors)
    above = {q for s, _ in scoped for q in _prefixes(s)}  # modules with modules inside
    out = []
    for (scope, op), m in zip(scoped, matches, strict=True):
        one = per_scope[scope] == 1 and scope not in parents
        leaf = scope and (one or holding[scope] == 1 and scope not in above)
        if leaf and (one or m.tensors):
            out.append(scope)
            continue
        if leaf:
            out.append(f"{scope}_{_op_word(m)}")
            continue
        base = re.sub(r"_\d+$", "", op)
        local = _NAMES.get(base, base.lower())
        suffix = op[len(base) :]
        out.append(join(scope, f"{local}{suffix}"))
    return [_clean_path(p) for p in out]


def _joined(shape: tuple) -> tuple:
    """A partition view ``(N, C, a, b, c, d)`` of a map as the map ``(N, C, a * b, c * d)``."""
    n, c, a, b, d, e = shape
    return (n, c, a * b, d * e)


def _metadata_names(matches: list[Match], weights: set[str]) -> list[str] | None:
    """Each match's name in the TorchScript exporter's form (``/layer1/layer1.0/conv1/Conv``),
    made from the dynamo exporter's metadata, or None when most nodes have none.

    The innermost module of a node holding weights is the one its initializers are named after
    (the exporter fuses a BatchNorm into the convolution before it and leaves the BatchNorm's
    scope on the result); a module without children that is called more than once
    (ResNet's ``relu``) gets a numbered scope for each further call (``relu_1``), as the
    TorchScript exporter writes it. A node without metadata (made by the exporter's own
    rewrites) sits in the innermost module that all its readers are in."""
    chains: list[list[str] | None] = []
    for m in matches:
        scopes = listed(metadata(m.nodes[-1]).get(NAME_SCOPES, ""))
        chains.append([s for s in scopes[1:-1] if s] if scopes else None)
    if not matches or sum(c is not None for c in chains) * 2 < len(matches):
        return None
    # a node the exporter's rewrites made without metadata (a Split) sits where its readers meet
    readers: dict[str, list[int]] = {}
    for k, m in enumerate(matches):
        for i in m.inputs:
            readers.setdefault(i, []).append(k)
    for k in reversed(range(len(matches))):
        if chains[k] is None:
            known = {tuple(chains[r]) for r in readers.get(matches[k].output, []) if chains[r] is not None}
            if len(known) == 1:
                chains[k] = list(known.pop())[:-1]
            elif known:
                chains[k] = list(os.path.commonprefix([list(c) for c in known]))
    out: list[list[str]] = []
    for m, chain in zip(matches, chains, strict=True):
        chain = list(chain or [])
        named = sorted({i.rsplit(".", 1)[0] for n in m.nodes for i in n.input if i in weights and "." in i})
        if len(named) == 1:
            parts = named[0].split(".")
            chain = [".".join(parts[: k + 1]) for k in range(len(parts))]
        out.append(chain)
    parents = {c for chain in out for c in chain[:-1]}
    calls: Counter = Counter()
    names = []
    for m, chain in zip(matches, out, strict=True):
        if chain and chain[-1] not in parents:
            k = calls[chain[-1]]
            calls[chain[-1]] += 1
            if k:
                chain = [*chain[:-1], f"{chain[-1]}_{k}"]
        names.append("/" + "".join(f"{c}/" for c in chain) + m.nodes[-1].op_type)
    return names


def metadata_classes(proto) -> dict[str, str]:
    """Module path -> qualified class name, from the dynamo exporter's metadata."""
    out: dict[str, str] = {}
    for node in proto.graph.node:
        meta = metadata(node)
        scopes, classes = listed(meta.get(NAME_SCOPES, "")), listed(meta.get(CLASS_HIERARCHY, ""))
        if scopes and classes and len(scopes) == len(classes):
            for path, cls in zip(scopes[:-1], classes[:-1], strict=True):
                if cls not in _CONTAINERS:
                    out.setdefault(path, cls)
    return out


#: PyTorch's containers: one class of many structures, grouped by their own structure instead
_CONTAINERS = frozenset(
    f"torch.nn.modules.container.{c}" for c in ("Sequential", "ModuleList", "ModuleDict", "ParameterList")
)


def _nasdsl_path(m: Match) -> str:
    """nasdsl's export names the last node of an op by its path, ``/`` for ``.``."""
    return m.nodes[-1].name.replace("/", ".")


def _clean_path(path: str) -> str:
    """Each part of a path as letters, digits, ``_`` and ``-`` (RegNet's ``block1-0``)."""
    parts = []
    for p in path.split("."):
        p = re.sub(r"[^\w-]", "_", p)
        parts.append(p if p else "_")
    return ".".join(parts)


def _prefixes(path: str) -> list[str]:
    parts = path.split(".")
    return [".".join(parts[:k]) for k in range(1, len(parts))]


def _op_word(m: Match) -> str:
    op = m.lowered[0].op if isinstance(m.lowered, tuple) else m.lowered.op
    return {"concat": "cat", "add": "residual", "mul": "scale"}.get(op, op)


def _unique(paths: list[str], matches: list[Match]) -> list[str]:
    seen: set[str] = set()
    out = []
    for p, m in zip(paths, matches, strict=True):
        if not p:
            p = _op_word(m)
        base, k = p, 1
        while p in seen:
            p = f"{base}_{k}"
            k += 1
        seen.add(p)
        out.append(p)
    return out


def _scopes(model: FlatModel, classes: dict[str, str] | None = None) -> dict[str, Scope]:
    """Every path prefix is a scope; a scope whose children are numbered is a list. Scopes are
    one class when they have one structure (ops, names, reads, and the classes of their child
    scopes), or one name (``block2-0``, ``block3-1``: digits aside) at one height: the
    templates of a class are then unified where they can be (a block with and without its
    projection). Where the file names the classes (``classes``: path -> qualified class name,
    from the dynamo exporter's metadata), a scope's class is the one named."""
    classes = classes or {}
    paths = {""}
    for n in model.nodes.values():
        s = n.scope
        while s and s not in paths:
            paths.add(s)
            s = s.rpartition(".")[0]
    first: dict[str, float] = {}
    for n in model.nodes.values():
        s = n.path
        while True:
            first[s] = min(first.get(s, n.order), n.order)
            if "." not in s:
                break
            s = s.rpartition(".")[0]
    children: dict[str, list[str]] = {p: [] for p in paths}
    for child in sorted(first, key=first.get):  # the order of first execution stands for registration
        parent, _, local = child.rpartition(".")
        if parent in children and local not in children[parent]:
            children[parent].append(local)
    subs: dict[str, list[str]] = {p: [] for p in paths}
    for p in paths:
        if p:
            subs[p.rpartition(".")[0]].append(p)
    own: dict[str, list[Node]] = {p: [] for p in paths}
    for n in model.nodes.values():
        own[n.scope].append(n)
    keys: dict[str, str] = {}
    height: dict[str, int] = {}
    sigs: dict[str, list[tuple]] = {}
    for p in sorted(paths, key=lambda p: -p.count(".") if p else 1):
        sig = [("op", n.name, n.op, tuple(_local(model, i, p) for i in n.inputs)) for n in own[p]]
        sig += [("scope", c.rpartition(".")[2], keys[c]) for c in subs[p]]
        sigs[p] = sig
        keys[p] = hashlib.sha256(repr(sorted(sig)).encode()).hexdigest()[:16]
        height[p] = 1 + max((height[c] for c in subs[p]), default=0)
    scopes: dict[str, Scope] = {}
    for p in sorted(paths, key=lambda p: first.get(p, -1)):
        names = children[p]
        kind = ROOT if not p else CONTAINER if names and all(c.isdigit() for c in names) else CLASS
        scopes[p] = Scope(p, kind, registration=names)
    # classes: one structure, or one name at one height (union-find)
    parent = {p: p for p in sorted(paths)}

    def find(p: str) -> str:
        while parent[p] != p:
            parent[p] = parent[parent[p]]
            p = parent[p]
        return p

    def union(a: str, b: str) -> None:
        parent[find(a)] = find(b)

    by: dict[object, str] = {}
    for p in sorted(paths):
        if scopes[p].kind != CLASS:
            continue
        if p in classes:
            key = ("class", classes[p])
            if key in by:
                union(p, by[key])
            by.setdefault(key, p)
            continue
        for key in (("structure", keys[p]), ("name", _word(p), height[p])):
            if key[1] and key in by:
                union(p, by[key])
            by.setdefault(key, p)
    _union_optional_moves(scopes, sigs, own, height, classes, find, union)
    groups: dict[str, list[str]] = {}
    for p in scopes:
        if scopes[p].kind == CLASS:
            groups.setdefault(find(p), []).append(p)
    for root, ps in groups.items():
        named = classes.get(root)
        if named:
            for p in ps:
                scopes[p].cls, scopes[p].cls_key = _class_name(named.rsplit(".", 1)[-1]), named
            continue
        words = [w for w in (_word(p) for p in ps) if w and not w.endswith("[]")]
        word = Counter(words).most_common(1)[0][0] if words else "block"
        cls = "".join(w[:1].upper() + w[1:] for w in re.split(r"[_-]", word) if w) or "Block"
        for p in ps:
            scopes[p].cls, scopes[p].cls_key = cls, f"onnx:{root}"
    scopes[""].cls = model.name
    return scopes


#: ops that move values without computing any: an entry a block may have or lack and still be
#: one class with the blocks that lack it
_MOVES = frozenset({"permute", "transpose", "reshape", "flatten"})


def _union_optional_moves(scopes, sigs, own, height, classes, find, union) -> None:
    """Blocks of different names that are one class of the source, as a file without classes
    says it: siblings in the instances of one class (their nearest enclosing blocks of one
    class), of one height, the entries of one being the other's but for entries that only move
    values (a ``permute``: MaxViT's grid attention swaps two axes where its block attention
    does not), the reads of those read through. The templates then switch those entries
    (:mod:`nasdsl.importer.templates`), as the PyTorch importer does from the class."""

    def enclosing(p: str) -> str:
        q = p.rpartition(".")[0]
        while q and scopes[q].kind != CLASS:
            q = q.rpartition(".")[0]
        return find(q) if q else ""

    roots: dict[str, list[str]] = {}
    for p in sorted(scopes):
        if p and scopes[p].kind == CLASS and p not in classes:
            roots.setdefault(find(p), []).append(p)
    reps = sorted(roots)
    for i, a in enumerate(reps):
        for b in reps[i + 1 :]:
            if find(a) == find(b) or height[a] != height[b]:
                continue
            if {enclosing(p) for p in roots[a]} != {enclosing(p) for p in roots[b]}:
                continue
            if _with_moves(sigs[a], sigs[b], own[b]) or _with_moves(sigs[b], sigs[a], own[a]):
                union(a, b)


def _with_moves(fewer: list[tuple], more: list[tuple], nodes: list[Node]) -> bool:
    """Whether ``more``'s entries are ``fewer``'s and some that only move values (one input, no
    tensors), the reads of those read through."""
    names = {e[1] for e in fewer}
    extra = {n.name: n for n in nodes if n.name not in names}
    if not extra or any(n.op not in _MOVES or n.tensors or len(n.inputs) != 1 for n in extra.values()):
        return False
    if any(e[0] == "scope" and e[1] in extra for e in more) or len(more) - len(extra) != len(fewer):
        return False
    reads = {name: next(e[3][0] for e in more if e[0] == "op" and e[1] == name) for name in extra}

    def through(read: str) -> str:
        while read in reads:
            read = reads[read]
        return read

    kept = [(*e[:3], tuple(through(r) for r in e[3])) if e[0] == "op" else e for e in more if e[1] not in extra]
    return sorted(kept) == sorted(fewer)


def _word(path: str) -> str:
    """A scope's name with its numbering left out: ``inception3a`` -> ``inception``,
    ``block2-0`` -> ``block``, ``layer1.0`` -> ``layer[]``."""
    parent, _, name = path.rpartition(".")
    if name.isdigit():
        return f"{_word(parent)}[]" if parent else ""
    return re.sub(r"[\d_-]+[a-z]?$|(?<=[a-z])[\d-]+[a-z]?(?=$)", "", name) or ""


def _local(model: FlatModel, value: str, scope: str) -> str:
    """How a scope's node reads a value: by the name of the child making it, else ``in``."""
    node = model.nodes.get(value)
    if node is None:
        return "in"
    if node.scope == scope:
        return node.name
    if not scope or node.scope.startswith(scope + "."):
        rest = node.path[len(scope) + 1 :] if scope else node.path
        return rest.split(".")[0]
    return "in"
