"""Attention and Swin's windows in an ONNX graph: a region of many nodes read as one spec op.

An exporter writes one attention layer as dozens of nodes (projections, reshapes and transposes
into heads, a product, a softmax, a product, the heads joined, a projection), and a Swin
window attention adds the padding, the cyclic shift and the windows around them. No short run
of nodes says which op they are, so :func:`find_regions` reads them whole:

1. **Anchors.** A ``Softmax`` whose result multiplies another computed tensor (a ``MatMul``,
   or an ``Einsum`` that is one, as MaxViT writes it: attention; a classifier's Softmax is left
   to the op table), or a ``Concat`` along the last axis of four
   strided slices of one map followed by ``LayerNormalization`` and a projection (patch
   merging).
2. **The region.** From an attention's anchor, the projection of its values upstream and the
   projection after its weighted sum downstream (``MatMul`` or ``Gemm`` with a constant
   weight); from those, the moves of data around them (``Reshape``, ``Transpose``, ``Slice``,
   ``Concat``, ``Pad``, ...) out to the first other op on each side: the value it reads and the
   value it makes. The region is every node that the made value depends on back to the read
   one; none of its values may be read outside it.
3. **The op.** The input's rank says which (tokens ``(L, C)``: ``attention``; a map ``(H, W,
   C)`` reshaped into windows: ``window_attention``; tokens ``(G, L, C)`` of partitions, without
   such a reshape: MaxViT's ``partition_attention``); the settings come from the shapes (heads from the width of a
   head, the window from the reshape into windows, the shift from the slices of the roll) and
   the weights from the constants the region reads (a linear layer's weight oriented by how it
   is used; a relative-position bias table recovered from the bias the exporter computed; Swin
   V2's position-bias MLP and logit scale as they are).
4. **The check.** The op so read is lowered by nasdsl's own ONNX backend with those weights,
   and both it and the region are evaluated by the onnx package's reference evaluator on one
   random input: they must agree within 1e-4 relative, or the import stops with an error
   naming the anchor node. Nothing else is accepted as the op: a region that computes
   something else (another scale, a mask, separate projections) is never silently a
   different network.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

import numpy as np

from nasdsl.importer.onnx_ops import Match, View, slice_bounds
from nasdsl.importer.ops_table import Lowered

#: ops that only move or cut values: a region extends across them to the value it reads and makes
MOVES = frozenset({"Reshape", "Transpose", "Slice", "Concat", "Pad", "Squeeze", "Unsqueeze", "Identity"})
#: the largest relative difference between a region and the op read from it
TOLERANCE = 1e-4
#: the most values the check of a region may compute (its intermediate tensors together)
MAX_CHECKED = 1 << 28


class RegionError(Exception):
    """A region that is no spec op: the reader turns it into an error naming ``node``."""

    def __init__(self, node, message: str) -> None:
        super().__init__(message)
        self.node = node


@dataclass
class Region:
    #: the op, its settings and weights, as a match of the op table
    match: Match
    #: every node the region evaluates (its constants' producers included), in graph order
    closure: list


class _Graph:
    """What the search needs: the view of constants and shapes, graph order, which values
    depend on the input."""

    def __init__(self, view: View, nodes: list, source: str, initializers: set[str]) -> None:
        self.view = view
        self.nodes = nodes
        self.order = {id(n): k for k, n in enumerate(nodes)}
        self.initializers = initializers
        self.source = source
        reach = {source}
        for n in nodes:
            if any(i in reach for i in n.input if i):
                reach.update(o for o in n.output if o)
        self.reach = reach
        #: the forms of the regions checked so far (:func:`_form`)
        self.checked: set[str] = set()

    def data(self, value: str) -> bool:
        """Whether ``value`` is computed from the input (not a constant, folded or not)."""
        return bool(value) and value in self.reach and self.view.get(value) is None

    def inputs(self, node) -> list[str]:
        return [i for i in node.input if self.data(i)]

    def users(self, value: str) -> list:
        return [u for u in self.view.consumers.get(value, []) if any(self.data(o) for o in u.output)]

    def producer(self, value: str):
        return self.view.producer.get(value)

    def shape(self, value: str) -> tuple:
        return tuple(self.view.shapes.get(value, ()))


def find_regions(view: View, nodes: list, source: str, initializers: set[str], opset: int) -> list[Region]:
    """Every region of the graph read as one op, in graph order; a region that is none raises
    :class:`RegionError`."""
    g = _Graph(view, nodes, source, initializers)
    found: list[Region] = []
    taken: set[int] = set()
    for node in nodes:
        if id(node) in taken:
            continue
        region = None
        if node.op_type == "Softmax" and g.data(node.output[0]):
            region = _attention(g, node, opset)
        elif node.op_type == "Concat" and g.data(node.output[0]):
            region = _patch_merging(g, node, opset)
        if region is not None:
            taken.update(id(n) for n in region.closure)
            found.append(region)
    return found


# -- the region around an anchor ----------------------------------------------------------


def _upstream(g: _Graph, value: str) -> list[str]:
    """The values a run of moves may start from, furthest first: upstream of ``value``, each value
    that every path back to the input passes, up to the first made by another op than a move
    (or the input). Empty when the paths meet at another op first."""
    frontier, seen = {value}, []
    while True:
        if len(frontier) == 1:
            v = next(iter(frontier))
            seen.append(v)
            p = g.producer(v)
            if p is None or p.op_type not in MOVES:
                return seen[::-1]
        v = max(frontier, key=lambda v: g.order[id(g.producer(v))] if g.producer(v) is not None else -1)
        p = g.producer(v)
        if p is None or p.op_type not in MOVES:
            return []
        frontier.remove(v)
        frontier.update(g.inputs(p))


def _downstream(g: _Graph, value: str) -> list[str]:
    """The values a run of moves may end at, furthest first: downstream of ``value``, each value
    where the moves join again, up to the last before another op reads it."""
    frontier, seen = {value}, []
    while True:
        if len(frontier) == 1:
            v = next(iter(frontier))
            seen.append(v)
            users = g.users(v)
            if not users or any(u.op_type not in MOVES for u in users):
                return seen[::-1]
        v = min(frontier, key=lambda v: g.order[id(g.producer(v))])
        users = g.users(v)
        if not users or any(u.op_type not in MOVES for u in users):
            return seen[::-1]
        frontier.remove(v)
        frontier.update(o for u in users for o in u.output if g.data(o))


def _closure(g: _Graph, x: str, y: str, anchor) -> list:
    """The nodes ``y`` depends on back to ``x`` (constants' producers included), in graph order;
    none of their values but ``y`` is read outside."""
    seen: dict[int, object] = {}
    stack = [y]
    done: set[str] = set()
    while stack:
        v = stack.pop()
        if v in done or v == x or not v or v in g.initializers:
            continue
        done.add(v)
        p = g.producer(v)
        if p is None:
            raise RegionError(anchor, f"it also reads '{v}', besides '{x}': a spec op reads one tensor")
        if id(p) not in seen:
            seen[id(p)] = p
            stack.extend(p.input)
    closure = sorted(seen.values(), key=lambda n: g.order[id(n)])
    inside = {id(n) for n in closure}
    for n in closure:
        for o in n.output:
            if o == y or not g.data(o):
                continue
            outside = [u for u in g.view.consumers.get(o, []) if id(u) not in inside]
            if outside:
                raise RegionError(anchor, f"its value '{o}' is also read by '{outside[0].name}', outside it")
    return closure


def _only_user(g: _Graph, value: str):
    users = g.users(value)
    return users[0] if len(users) == 1 else None


def _projection_before(g: _Graph, value: str):
    """The first linear layer upstream of ``value`` along nodes of one computed input."""
    node = g.producer(value)
    for _ in range(_REACH):
        if node is None or _projection(node, g):
            return node
        inputs = g.inputs(node)
        node = g.producer(inputs[0]) if len(inputs) == 1 else None
    return None


def _projection_after(g: _Graph, value: str):
    """The first linear layer downstream of ``value`` along nodes of one reader."""
    users = g.users(value)
    for _ in range(_REACH):
        node = users[0] if len(users) == 1 else None
        if node is None or _projection(node, g):
            return node
        users = g.users(node.output[0])
    return None


#: the most nodes between an attention's weighted sum and its projections
_REACH = 64


def _weight(g: _Graph, node) -> np.ndarray | None:
    """A linear layer's weight as ``(out, in)``: a MatMul's constant second operand transposed, a
    Gemm's as its ``transB`` says."""
    if node.op_type == "MatMul":
        w = g.view.get(node.input[1])
        return None if w is None or w.ndim != 2 else np.ascontiguousarray(w.T)
    if node.op_type == "Gemm":
        a = View.attrs(node)
        w = g.view.get(node.input[1])
        if w is None or a.get("transA", 0) or float(a.get("alpha", 1.0)) != 1.0:
            return None
        return np.ascontiguousarray(w if a.get("transB", 0) else w.T)
    return None


def _projection(node, g: _Graph) -> bool:
    return node.op_type in ("MatMul", "Gemm") and len(g.inputs(node)) == 1 and _weight(g, node) is not None


def _bias(g: _Graph, node, width: int) -> tuple[np.ndarray | None, str]:
    """The bias of the linear layer ``node`` (a Gemm's third operand, or an Add of a constant of
    ``width`` after it) and the value that ends the layer."""
    if node.op_type == "Gemm" and len(node.input) > 2 and node.input[2]:
        b = g.view.get(node.input[2])
        return (None if b is None else b.reshape(-1)), node.output[0]
    users = [u for u in g.view.consumers.get(node.output[0], []) if u.op_type != "Shape"]
    if len(users) == 1 and users[0].op_type == "Add":
        add = users[0]
        other = add.input[1] if add.input[0] == node.output[0] else add.input[0]
        b = g.view.get(other)
        if b is not None and b.size == width:
            return b.reshape(-1), add.output[0]
    return None, node.output[0]


def _name(closure: list, g: _Graph) -> str:
    """The module path the region's nodes share, from their names (torch.onnx.export's
    ``/encoder/layers/encoder_layer_0/self_attention/MatMul``, or nasdsl's
    ``encoder/layers/encoder_layer_0/self_attention/MatMul`` and, for the node writing the
    result, ``encoder/layers/encoder_layer_0/self_attention``, or the dynamo exporter's
    metadata); empty when they share none."""
    from nasdsl.importer.onnx_names import NAME_SCOPES, listed, metadata, torch_scope

    parts = []
    # a file with the dynamo exporter's metadata: the nodes its rewrites made without any (a
    # Split) name no module
    dynamo = any(NAME_SCOPES in metadata(n) for n in closure)
    for n in closure:
        if not any(g.data(o) for o in n.output):
            continue
        scopes = listed(metadata(n).get(NAME_SCOPES, ""))
        if dynamo and not scopes:
            continue
        if scopes:
            parts.append(next((s for s in reversed(scopes[1:-1]) if s), "").split(".") if len(scopes) > 2 else [])
        elif n.name.startswith("/"):
            scope = torch_scope(n.name)[0]
            parts.append(scope.split(".") if scope else [])
        else:  # nasdsl names the node writing an op's result by the op's path, the others below it
            parts.append(n.name.split("/") if n.name else [])
    common = os.path.commonprefix(parts) if parts else []
    return ".".join(common)


# -- attention -----------------------------------------------------------------------------


def _attention(g: _Graph, softmax, opset: int) -> Region | None:
    """The attention around ``softmax`` when its result weights values (a MatMul with another
    computed tensor); another Softmax (a classifier's) is left to the op table."""
    users = g.users(softmax.output[0])
    mix = users[0] if len(users) == 1 and _product(users[0]) else None
    if mix is None or mix.input[0] != softmax.output[0] or not g.data(mix.input[1]):
        return None
    rank = len(g.shape(softmax.input[0]))
    axis = int(View.attrs(softmax).get("axis", -1 if opset >= 13 else 1))  # before 13: the axes from it on
    if axis % max(rank, 1) != rank - 1:
        raise RegionError(softmax, f"a Softmax over axis {axis}: attention's is over the last")
    p_in = _projection_before(g, mix.input[1])  # the values' projection
    p_out = _projection_after(g, mix.output[0])  # the projection of the weighted sum
    if p_in is None or p_out is None:
        which = "input projection" if p_in is None else "output projection"
        raise RegionError(softmax, f"no {which} (a MatMul or Gemm with a constant weight) around this attention")
    w_in, w_out = _weight(g, p_in), _weight(g, p_out)
    c = w_out.shape[0]
    if w_in.shape != (3 * c, c) or w_out.shape != (c, c):
        raise RegionError(
            softmax,
            f"projections of shapes {list(w_in.shape)} and {list(w_out.shape)}: the spec's attention projects "
            f"queries, keys and values together ({3 * c}x{c}) and back ({c}x{c})",
        )
    b_in, _ = _bias(g, p_in, 3 * c)
    b_out, end = _bias(g, p_out, c)
    d = g.shape(mix.input[1])[-1]
    if not isinstance(d, int) or c % d:
        raise RegionError(softmax, f"values of width {d}: the heads do not divide the {c} channels")
    # where the layer begins and ends: the moves of data around the projections may belong to it
    # (a Swin's windows, the batch-first transposes of nn.MultiheadAttention) or to the model (a
    # ViT's tokens): the furthest reading that is the op wins, tried while one fails
    pairs = [
        (x, y)
        for x in _upstream(g, g.inputs(p_in)[0])
        for y in _downstream(g, end)
        if len(g.shape(x)) in (3, 4) and g.shape(x)[0] == 1 and g.shape(x) == g.shape(y)
    ]
    if not pairs:
        raise RegionError(softmax, "its moves of data around the projections do not join into one input and output")
    failure = None
    for x, y in pairs[:_TRIES]:
        try:
            return _attention_between(g, softmax, x, y, c // d, c, (w_in, b_in, w_out, b_out), opset)
        except RegionError as e:
            failure = e
    raise failure


def _product(node) -> bool:
    """A MatMul, or an Einsum that is one (``B G H I J, B G H J D -> B G H I D``, as
    torchvision's MaxViT writes its weighted sum): the same leading axes, a product over the
    last axis of the first and the second last of the second."""
    if node.op_type == "MatMul":
        return True
    if node.op_type != "Einsum" or len(node.input) != 2:
        return False
    equation = View.attrs(node).get("equation", b"")
    equation = (equation.decode() if isinstance(equation, bytes) else equation).replace(" ", "")
    found = re.fullmatch(r"([A-Za-z]*)([A-Za-z])([A-Za-z]),\1\3([A-Za-z])->\1\2\4", equation)
    return found is not None and len(set(equation) - set(",->")) == len(found.group(1)) + 3


#: the readings of an attention's extent tried before it is refused
_TRIES = 6


def _attention_between(g: _Graph, softmax, x: str, y: str, heads: int, c: int, linear, opset: int) -> Region:
    """The region from ``x`` to ``y`` read as ``attention`` (tokens) or ``window_attention`` (a
    map), and checked."""
    closure = _closure(g, x, y, softmax)
    w_in, b_in, w_out, b_out = linear
    if len(g.shape(x)) == 3:
        if (b_in is None) != (b_out is None):
            # an all-zero bias the exporter dropped (its Add removed) beside one it kept, shared
            # or not: the absent one is zeros too, which is exactly what the graph computes
            present = b_in if b_in is not None else b_out
            if not np.any(present):
                dtype = present.dtype
                b_in = np.zeros(3 * c, dtype) if b_in is None else b_in
                b_out = np.zeros(c, dtype) if b_out is None else b_out
        if (b_in is None) != (b_out is None):
            raise RegionError(softmax, "a bias on one projection only: the spec's attention has both or neither")
        lowered = Lowered("attention", {"heads": heads} | ({} if b_in is not None else {"bias": False}))
        tensors = {"in_proj_weight": w_in, "out_proj.weight": w_out}
        if b_in is not None:
            tensors |= {"in_proj_bias": b_in, "out_proj.bias": b_out}
        axes, held = "LC", []
    elif _windows(g, closure, c) is None:  # tokens of partitions (G, L, C): no reshape into windows
        lowered, tensors, held = _partition_attention(g, softmax, closure, x, heads, c, linear)
        axes = "LLC"
    else:
        lowered, tensors, held = _window_attention(g, softmax, closure, x, heads, c, linear)
        axes = "HWC"
    return _checked(g, softmax, x, y, closure, lowered, tensors, axes, opset, held)


def _windows(g: _Graph, closure: list, c: int) -> list[int] | None:
    """The window of the reshape of a map (N, H, W, C) into windows, (N, H / wh, wh, W / ww, ww,
    C); not another reshape to six axes (MaxViT's queries, keys and values (N, G, L, 3, heads,
    d), which are C wide where one head holds every feature)."""
    for n in closure:
        if n.op_type == "Reshape" and g.data(n.output[0]):
            out, shape = g.shape(n.output[0]), g.shape(n.input[0])
            if len(out) != 6 or len(shape) != 4 or out[-1] != c or shape[-1] != c:
                continue
            if not all(isinstance(d, int) for d in (*out, *shape)):
                continue
            if (out[0], out[1] * out[2], out[3] * out[4]) == tuple(shape[:3]):
                return [int(out[2]), int(out[4])]
    return None


def _relative_table(softmax, bias: np.ndarray, index: np.ndarray, offsets: int, held: list) -> np.ndarray:
    """The relative-position bias table a (heads, n, n) bias was gathered from by ``index``."""
    heads = bias.shape[0]
    table = np.zeros((offsets, heads), dtype=bias.dtype)
    table[index.reshape(-1)] = bias.reshape(heads, -1).T
    if not np.array_equal(table[index.reshape(-1)].T.reshape(bias.shape), bias):
        raise RegionError(softmax, "the bias added to the scores is not one value per relative position")
    held.append(bias)  # made from the table exactly: a weight the op holds
    return table


def _window_attention(g: _Graph, softmax, closure: list, x: str, heads: int, c: int, linear) -> tuple:
    """Swin's window attention over a channels-last map: (the op, its tensors, the constants made
    exactly from them). Version 2 where a logit scale of (heads, 1, 1) is clamped."""
    from nasdsl.ops import window as win

    w_in, b_in, w_out, b_out = linear
    window = _windows(g, closure, c)
    if window is None:
        raise RegionError(softmax, "no reshape of the map into windows (N, H/wh, wh, W/ww, ww, C)")
    shift = _roll_shift(g, closure, x)
    logit = next(
        (
            g.view.get(n.input[0])
            for n in closure
            if n.op_type in ("Clip", "Min") and g.view.get(n.input[0]) is not None
            and g.view.get(n.input[0]).shape == (heads, 1, 1)
        ),
        None,
    )  # fmt: skip
    if logit is None:  # the dynamo exporter folds the clamp and exp: their result scales the scores
        logit = _folded_logit_scale(g, closure, heads)
    version = 2 if logit is not None else 1
    attrs = {"heads": heads, "window": window, "shift": shift[0] if shift[0] == shift[1] else shift}
    attrs |= {"version": 2} if version == 2 else {}
    if b_in is None:
        attrs["qkv_bias"] = False
    if b_out is None:
        attrs["proj_bias"] = False
    tensors = {"qkv.weight": w_in, "proj.weight": w_out}
    tensors |= {"qkv.bias": b_in} if b_in is not None else {}
    tensors |= {"proj.bias": b_out} if b_out is not None else {}
    n_tokens = window[0] * window[1]
    index = win.relative_position_index(window)
    held: list[np.ndarray] = []
    if version == 1:
        bias = _position_bias(g, closure, heads, n_tokens)
        if bias is None:
            raise RegionError(
                softmax, f"no relative position bias ({heads}, {n_tokens}, {n_tokens}) added to the scores"
            )
        offsets = math.prod(win.table_sides({"window": window}))
        tensors["relative_position_bias_table"] = _relative_table(softmax, bias, index, offsets, held)
    else:
        mlp = _cpb_mlp(g, closure) or _folded_cpb_mlp(g, closure, window)
        if mlp is None:
            raise RegionError(softmax, "no continuous position-bias MLP (Swin V2's cpb_mlp) in this window attention")
        tensors |= {"logit_scale": logit, **mlp}
        tensors["relative_coords_table"] = win.relative_coords_table(window)
    tensors["relative_position_index"] = index.reshape(-1)
    return Lowered("window_attention", attrs), tensors, held


def _partition_attention(g: _Graph, softmax, closure: list, x: str, heads: int, c: int, linear) -> tuple:
    """MaxViT's attention within partitions, tokens (G, L, C) of partitions of size x size
    positions: (the op, its tensors, the constants made exactly from them)."""
    from nasdsl.ops import window as win

    w_in, b_in, w_out, b_out = linear
    length = g.shape(x)[-2]
    size = math.isqrt(length) if isinstance(length, int) else 0
    if size * size != length or size < 1:
        raise RegionError(softmax, f"partitions of {length} positions: the spec's partitions are size x size")
    if b_in is None or b_out is None:
        raise RegionError(softmax, "a projection without a bias: the spec's partition_attention has both")
    bias = _position_bias(g, closure, heads, length)
    if bias is None:
        raise RegionError(softmax, f"no relative position bias ({heads}, {length}, {length}) added to the scores")
    index = win.relative_position_index((size, size))
    held: list[np.ndarray] = []
    table = _relative_table(softmax, bias, index, (2 * size - 1) ** 2, held)
    tensors = {
        "relative_position_bias_table": table,
        "relative_position_index": index.reshape(length, length),
        "to_qkv.weight": w_in,
        "to_qkv.bias": b_in,
        "merge.weight": w_out,
        "merge.bias": b_out,
    }
    return Lowered("partition_attention", {"head_dim": c // heads, "size": size}), tensors, held


def _roll_shift(g: _Graph, closure: list, x: str) -> list[int]:
    """The shift of the windows: the start of the first slice of each roll (a Concat of two
    slices of one value along a spatial axis) on the way into the windows."""
    shift = [0, 0]
    for n in closure:
        if n.op_type != "Concat" or len(n.input) != 2:
            continue
        first, second = (g.producer(i) for i in n.input)
        if first is None or second is None or first.op_type != "Slice" or second.op_type != "Slice":
            continue
        if first.input[0] != second.input[0] or len(g.shape(n.output[0])) != 4:
            continue
        axis = int(View.attrs(n).get("axis", 0)) % 4
        bounds = slice_bounds(g.view.get, first, g.view.opset)  # attributes before opset 10
        if axis in (1, 2) and bounds is not None and not shift[axis - 1]:
            size = g.shape(n.output[0])[axis]
            shift[axis - 1] = int(bounds[0][0]) % size
    return shift


def _position_bias(g: _Graph, closure: list, heads: int, n: int) -> np.ndarray | None:
    """The constant (heads, n, n) added to the attention scores."""
    for node in closure:
        if node.op_type != "Add":
            continue
        for i in node.input:
            v = g.view.get(i)
            if v is not None and v.ndim >= 3 and v.shape[-3:] == (heads, n, n) and v.size == heads * n * n:
                return v.reshape(heads, n, n)
    return None


def _cpb_mlp(g: _Graph, closure: list) -> dict | None:
    """Swin V2's position-bias MLP: linear 2 -> hidden with bias, ReLU, linear without bias."""
    for node in closure:
        if node.op_type not in ("MatMul", "Gemm"):
            continue
        w0 = _weight(g, node)
        if w0 is None or w0.shape[1] != 2:
            continue
        b0, end = _bias(g, node, w0.shape[0])
        relu = next((u for u in g.view.consumers.get(end, []) if u.op_type == "Relu"), None)
        second = relu and next(
            (u for u in g.view.consumers.get(relu.output[0], []) if u.op_type in ("MatMul", "Gemm")), None
        )
        w2 = second is not None and _weight(g, second)
        if b0 is None or w2 is None or w2 is False:
            return None
        return {"cpb_mlp.0.weight": w0, "cpb_mlp.0.bias": b0, "cpb_mlp.2.weight": w2}
    return None


def _folded_logit_scale(g: _Graph, closure: list, heads: int) -> np.ndarray | None:
    """Swin V2's logit scale where the file holds ``exp(clamp(logit_scale, max=log(100)))``, a
    constant (heads, 1, 1) multiplying the cosine scores (the queries and keys normalised, by
    ``ReduceL2``): its logarithm, which the same clamp and exp give back."""
    if not any(n.op_type == "ReduceL2" for n in closure):
        return None
    for node in closure:
        if node.op_type != "Mul" or len([i for i in node.input if g.data(i)]) != 1:
            continue
        scale = next((g.view.get(i) for i in node.input if g.view.get(i) is not None), None)
        if scale is not None and scale.shape == (heads, 1, 1) and np.all(scale > 0):
            return np.log(scale.astype(np.float64)).astype(np.float32)
    return None


def _folded_cpb_mlp(g: _Graph, closure: list, window: list[int]) -> dict | None:
    """Swin V2's position-bias MLP where the exporter folded its first product with the fixed
    coordinates table (the dynamo exporter): ``Add(table @ w0.T, b0), Relu, MatMul(w2.T)``. The
    first weight is solved back from that product and the table (two columns of full rank),
    and kept only when it gives the product again."""
    from nasdsl.ops import window as win

    table = win.relative_coords_table(window).reshape(-1, 2).astype(np.float64)
    for relu in closure:
        add = relu.op_type == "Relu" and g.producer(relu.input[0])
        if not add or add.op_type != "Add":
            continue
        product, b0 = (g.view.get(i) for i in add.input)
        users = g.view.consumers.get(relu.output[0], [])
        w2 = _weight(g, users[0]) if len(users) == 1 and users[0].op_type in ("MatMul", "Gemm") else None
        if product is None or b0 is None or w2 is None or b0.ndim != 1 or product.shape[-1] != b0.shape[0]:
            continue
        product = product.reshape(-1, b0.shape[0]).astype(np.float64)
        if product.shape[0] != table.shape[0]:
            continue
        w0 = np.linalg.lstsq(table, product, rcond=None)[0].T
        if not np.allclose(table @ w0.T, product, rtol=1e-5, atol=1e-6):
            return None
        return {"cpb_mlp.0.weight": w0.astype(np.float32), "cpb_mlp.0.bias": b0, "cpb_mlp.2.weight": w2}
    return None


# -- patch merging -------------------------------------------------------------------------


def _patch_merging(g: _Graph, concat, opset: int) -> Region | None:
    """Four strided 2x2 slices of one map joined on the channels, then LayerNorm and a linear
    layer without bias (or the other way round): Swin's patch merging. Another Concat is left
    to the op table."""
    shape = g.shape(concat.output[0])
    if len(shape) != 4 or int(View.attrs(concat).get("axis", 0)) % 4 != 3 or len(concat.input) != 4:
        return None
    if not all(_strided(g, i) for i in concat.input):
        return None
    first = _only_user(g, concat.output[0])
    second = first is not None and _only_user(g, first.output[0])
    kinds = (first.op_type if first else "", second.op_type if second else "")
    if kinds == ("LayerNormalization", "MatMul"):
        norm, reduction, order = first, second, "before"
    elif kinds == ("MatMul", "LayerNormalization"):
        reduction, norm, order = first, second, "after"
    else:
        return None
    weight = _weight(g, reduction)
    scale, shift = (g.view.get(norm.input[k]) if len(norm.input) > k else None for k in (1, 2))
    if weight is None or scale is None or shift is None or int(View.attrs(norm).get("axis", -1)) % 4 != 3:
        return None
    starts = _upstream(g, concat.output[0])
    if not starts:
        raise RegionError(concat, "the slices of this patch merging do not come from one map")
    x = starts[0]
    y = second.output[0]
    closure = _closure(g, x, y, concat)
    attrs = {"out": int(weight.shape[0])}
    attrs |= {"norm": "after"} if order == "after" else {}
    eps = float(np.float32(View.attrs(norm).get("epsilon", 1e-5)))
    attrs |= {"eps": eps} if eps != float(np.float32(1e-5)) else {}
    tensors = {"reduction.weight": weight, "norm.weight": scale, "norm.bias": shift}
    return _checked(g, concat, x, y, closure, Lowered("patch_merging", attrs), tensors, "HWC", opset)


def _strided(g: _Graph, value: str) -> bool:
    p = g.producer(value)
    while p is not None and p.op_type == "Slice":
        bounds = slice_bounds(g.view.get, p, g.view.opset)  # no steps before opset 10
        if bounds is not None and 2 in [int(s) for s in bounds[3]]:
            return True
        p = g.producer(p.input[0])
    return False


# -- the check -----------------------------------------------------------------------------


def _checked(
    g: _Graph, anchor, x, y, closure, lowered: Lowered, tensors: dict, axes: str, opset: int, held: list = ()
) -> Region:
    """The region as ``lowered``, after both agree on a random input (else a RegionError).
    ``held``: constants of the region made exactly from the op's tensors (Swin's position bias)."""
    shape = g.shape(y)
    if not all(isinstance(d, int) for d in shape):
        raise RegionError(anchor, f"its output '{y}' has an unknown shape")
    computing = [n for n in closure if any(g.data(o) for o in n.output)]
    if not computing or computing[-1].output[0] != y:
        computing = [n for n in computing if y not in n.output] + [g.producer(y)]
    form = _form(g, closure, x, y, lowered, [*tensors.values(), *held])
    difference, what = (0.0, "") if form in g.checked else _difference(g, x, y, closure, lowered, tensors, axes, opset)
    if not difference <= TOLERANCE:
        raise RegionError(
            anchor,
            f"the {len(computing)} nodes from '{x}' to '{y}' read as {what}, but differ from it by "
            f"{difference:.2g} relative: no spec op computes this",
        )
    g.checked.add(form)
    match = Match(lowered, [x], y, computing, tensors, name=_name(closure, g), shape=tuple(shape[1:]))
    return Region(match, closure)


def _form(g: _Graph, closure: list, x: str, y: str, lowered: Lowered, tensors: list) -> str:
    """A hash of what the check of a region depends on but the values of the weights the op
    holds: the op and its settings, the input's shape, every node's op, attributes and reads,
    and every other constant by value. A region of a form checked already computes the op with
    its own weights as the first did (a ViT's twelve encoder layers are checked once)."""
    import hashlib

    held = [t for t in tensors if t.size > 64]
    local = {x: "x"}
    for k, n in enumerate(closure):
        local.update((o, f"{k}.{j}") for j, o in enumerate(n.output))
    h = hashlib.sha256(repr((lowered.op, sorted(lowered.attrs.items()), g.shape(x), local.get(y))).encode())
    for n in closure:
        h.update(f"|{n.domain}:{n.op_type}".encode())
        for a in sorted(n.attribute, key=lambda a: a.name):
            h.update(a.SerializeToString())
        for i in n.input:
            if i in local or not i:
                h.update(f",{local.get(i, '')}".encode())
                continue
            v = np.asarray(g.view.get(i))
            h.update(repr((v.shape, str(v.dtype))).encode())
            if not any(_same(v, t) for t in held):
                h.update(np.ascontiguousarray(v).tobytes())
    return h.hexdigest()


def _same(v: np.ndarray, t: np.ndarray) -> bool:
    """Whether ``v`` is the held tensor ``t`` (in any shape of its size) or its transpose."""
    if v.size == t.size and np.array_equal(v.reshape(t.shape), t):
        return True
    return v.ndim == 2 and v.T.shape == t.shape and np.array_equal(v.T, t)


def _describe(lowered: Lowered) -> str:
    settings = ", ".join(f"{k}: {v}" for k, v in lowered.attrs.items())
    return f"{lowered.op} ({settings})" if settings else lowered.op


def _difference(g: _Graph, x, y, closure, lowered: Lowered, tensors: dict, axes: str, opset: int) -> tuple[float, str]:
    """The largest difference between the region and the op, relative to the region's largest
    value, on one random input, both evaluated by onnx.reference."""
    from onnx import TensorProto, helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    from nasdsl.backends.onnx import export_onnx
    from nasdsl.errors import NasdslError
    from nasdsl.importer.check import compile_text

    what = _describe(lowered)
    in_shape = g.shape(x)
    values = [(g.shape(o), g.data(o)) for n in closure for o in n.output if o]
    known = [s for s, _ in values if all(isinstance(d, int) for d in s)]
    if any(not all(isinstance(d, int) for d in s) for s, data in values if data) or (
        sum(math.prod(s) for s in known) > MAX_CHECKED
    ):
        return math.inf, f"{what} (too large to check: more than {MAX_CHECKED:,} values, or sizes unknown)"
    settings = ", ".join(f"{k}: {_yaml(v)}" for k, v in lowered.attrs.items())
    text = (
        f'nasdsl: 1\nname: Probe\ninput: {{name: x, shape: {list(in_shape[1:])}, axes: "{axes}"}}\n'
        f"model:\n  probe: {{op: {lowered.op}{', ' if settings else ''}{settings}}}\n"
    )
    try:
        probe = compile_text(text, "probe")
        state = {f"probe.{k}": v for k, v in tensors.items()}
        op_model = export_onnx(probe.graph, opset=max(opset, 17), state_dict=state)
    except NasdslError as e:
        return math.inf, f"{what} ({e.message})"
    produced = {o for n in closure for o in n.output}
    outside = sorted({i for n in closure for i in n.input if i and i != x and i not in produced})
    initializers = []
    for name in outside:
        value = g.view.get(name)
        if value is None:
            return math.inf, what
        initializers.append(numpy_helper.from_array(np.asarray(value), name))
    region = helper.make_model(
        helper.make_graph(
            list(closure),
            "region",
            [helper.make_tensor_value_info(x, TensorProto.FLOAT, list(in_shape))],
            [helper.make_tensor_value_info(y, TensorProto.FLOAT, None)],
            initializers,
        ),
        opset_imports=[helper.make_opsetid("", opset)],
    )
    sample = np.random.default_rng(0).standard_normal(in_shape).astype(np.float32)
    ops = [_contiguous_matmul()]
    try:
        theirs = ReferenceEvaluator(region, new_ops=ops).run(None, {x: sample})[0]
    except Exception as e:  # noqa: BLE001 - an op the reference evaluator cannot run
        return math.inf, f"{what} (the region cannot be evaluated: {type(e).__name__}: {str(e)[:100]})"
    ours = ReferenceEvaluator(op_model, new_ops=ops).run(None, {op_model.graph.input[0].name: sample})[0]
    if theirs.shape != ours.shape:
        return math.inf, f"{what} (of shape {list(ours.shape)}, the region's {list(theirs.shape)})"
    scale = float(np.abs(theirs).max()) or 1.0
    return float(np.abs(theirs - ours).max()) / scale, what


def _contiguous_matmul():
    """The reference evaluator's MatMul on contiguous copies of its operands: numpy multiplies
    the strided views a Transpose leaves without BLAS, a hundred times slower."""
    from onnx.reference.ops.op_matmul import MatMul

    class ContiguousMatMul(MatMul):
        op_domain = ""

        def _run(self, a, b):
            return (np.matmul(np.ascontiguousarray(a), np.ascontiguousarray(b)).astype(a.dtype, copy=False),)

    ContiguousMatMul.__name__ = "MatMul"
    return ContiguousMatMul


def _yaml(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_yaml(x) for x in v) + "]"
    if isinstance(v, str) and not re.fullmatch(r"[a-z_]+", v):
        raise ValueError(v)
    return repr(v) if isinstance(v, float) else str(v)
