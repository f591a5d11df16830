"""Shape inference: the output shape of every node, or every error found."""

from __future__ import annotations

import dataclasses

import networkx as nx

from nasdsl import ir
from nasdsl.errors import ErrorList, NasdslError, ShapeError
from nasdsl.ops import OPS


def infer_shapes(g: nx.DiGraph, *, copy: bool = True) -> nx.DiGraph:
    """Return a copy of ``g`` (``g`` itself with ``copy=False``) with ``shape`` set on every node.

    Errors name the node and its place in the spec; nodes downstream of an
    error are skipped, so each error is reported once. The dormant part (see
    :class:`nasdsl.ir.Dormant`) is shaped too, from the main graph's shapes;
    a problem there is no error of the spec as it stands: it is recorded
    against the switch that turns that part on, which then stays folded.
    """
    if copy:
        g = g.copy()
    errors = _infer(g)
    if errors:
        raise ErrorList(errors) if len(errors) > 1 else errors[0]
    dormant = g.graph.get("dormant")
    if dormant is not None and len(dormant.graph):
        d = dormant.graph.copy()
        for n, data in d.nodes(data=True):
            if data["op"] == "external":
                data["shape"] = g.nodes[n]["shape"]
        problems = dict(dormant.errors)
        for e, node in _infer(d, with_nodes=True):
            for switch in d.nodes[node]["when"]:
                if not g.graph["variables"].get(switch):
                    problems.setdefault(switch, e.format())
        g.graph["dormant"] = dataclasses.replace(dormant, graph=d, errors=problems)
    return g


def _infer(g: nx.DiGraph, *, with_nodes: bool = False) -> list:
    errors: list = []
    for node in ir.order(g):
        data = g.nodes[node]
        if data["op"] in ("input", "external"):
            continue
        sources = ir.inputs(g, node)
        shapes = [g.nodes[i]["shape"] for i in sources]
        if any(s is None for s in shapes):
            data["shape"] = None
            continue
        try:
            data["shape"] = tuple(OPS[data["op"]].infer(shapes, data["attrs"]))
        except ShapeError as e:
            message = e.message
            if len(sources) > 1:
                message += f" (from {', '.join(sources)})"
            if data.get("scope"):  # inside a template: its text is shared by all its uses
                message += f" (in node {node})"
            error: NasdslError = ShapeError(message, location=data["loc"], path=data["keypath"])
            errors.append((error, node) if with_nodes else error)
            data["shape"] = None
    return errors


def params(g: nx.DiGraph, node: str) -> int:
    data = g.nodes[node]
    if data["op"] == "input":
        return 0
    return OPS[data["op"]].params([g.nodes[i]["shape"] for i in ir.inputs(g, node)], data["attrs"])


def macs(g: nx.DiGraph, node: str) -> int:
    data = g.nodes[node]
    if data["op"] == "input":
        return 0
    return OPS[data["op"]].macs([g.nodes[i]["shape"] for i in ir.inputs(g, node)], data["attrs"], data["shape"])
