"""Shape inference: the output type of every node, or every error found."""

from __future__ import annotations

import math

import networkx as nx

from nasdsl import ir
from nasdsl.errors import ErrorList, NasdslError, ShapeError
from nasdsl.ops import OPS
from nasdsl.passes.symbolic import infer_symbols

#: the most values one tensor may hold per sample, at any rank (2**34: 64 GiB of float32)
MAX_ELEMENTS = 1 << 34


def infer_shapes(g: nx.DiGraph, *, copy: bool = True) -> nx.DiGraph:
    """Return a copy of ``g`` (``g`` itself with ``copy=False``) with ``type`` set on every node.

    Errors name the node and its place in the spec; nodes downstream of an
    error are skipped, so each error is reported once. The dormant part (see
    :class:`nasdsl.ir.Dormant`) is shaped too, from the main graph's types;
    a problem there is no error of the spec as it stands: it is recorded
    against the switch that turns that part on, which then stays folded.
    """
    if copy:
        g = ir.copy(g)
    errors = _infer(g)
    if errors:
        raise ErrorList(errors) if len(errors) > 1 else errors[0]
    _shape_dormant(g)
    infer_symbols(g)
    return g


def _shape_dormant(g: nx.DiGraph) -> None:
    """Shape the dormant part from the main graph's types; its problems go to its switches."""
    info = ir.info(g)
    dormant = info.dormant
    if len(dormant.graph):
        d = ir.copy(dormant.graph)
        for n, record in list(ir.nodes(d)):
            if record.op == "external":
                ir.set_node(d, n, ir.Node("external", type=ir.node(g, n).type))
        problems = dict(dormant.errors)
        for e, node in _infer(d, with_nodes=True):
            for switch in ir.node(d, node).when:
                if not info.variables.get(switch):
                    problems.setdefault(switch, e.format())
        ir.update_info(g, dormant=ir.Dormant(d, dormant.outputs, ir.frozen(problems)))


def _infer(g: nx.DiGraph, *, with_nodes: bool = False) -> list:
    errors: list = []
    for name in ir.order(g):
        record = ir.node(g, name)
        if record.op in ("input", "external"):
            continue
        sources = ir.inputs(g, name)
        types = [ir.node(g, i).type for i in sources]
        if any(t is None for t in types):
            ir.update_node(g, name, type=None)
            continue
        try:
            out = OPS[record.op].infer(types, record.attrs)
            size = math.prod(out.shape)
            if size > MAX_ELEMENTS:
                raise ShapeError(
                    f"expected a tensor of at most {MAX_ELEMENTS:,} values per sample, got {size:,} "
                    f"({'x'.join(map(str, out.shape))})"
                )
        except ShapeError as e:
            message = e.message
            if len(sources) > 1:
                message += f" (from {', '.join(sources)})"
            if record.scope:  # inside a template: its text is shared by all its uses
                message += f" (in node {name})"
            error: NasdslError = ShapeError(message, location=record.loc, path=record.keypath)
            errors.append((error, name) if with_nodes else error)
            out = None
        ir.update_node(g, name, type=out)
    return errors


def params(g: nx.DiGraph, name: str) -> int:
    record = ir.node(g, name)
    if record.op == "input":
        return 0
    return OPS[record.op].params(ir.input_types(g, name), record.attrs)


def macs(g: nx.DiGraph, name: str) -> int:
    record = ir.node(g, name)
    if record.op == "input":
        return 0
    return OPS[record.op].macs(ir.input_types(g, name), record.attrs, record.type)
