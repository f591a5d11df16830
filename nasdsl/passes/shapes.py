"""Shape inference: the output shape of every node, or every error found."""

from __future__ import annotations

import networkx as nx

from nasdsl import ir
from nasdsl.errors import ErrorList, NasdslError, ShapeError
from nasdsl.ops import OPS


def infer_shapes(g: nx.DiGraph) -> nx.DiGraph:
    """Return a copy of ``g`` with ``shape`` set on every node.

    Errors name the node and its place in the spec; nodes downstream of an
    error are skipped, so each error is reported once.
    """
    g = g.copy()
    errors: list[NasdslError] = []
    for node in ir.order(g):
        data = g.nodes[node]
        if data["op"] == "input":
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
            errors.append(ShapeError(message, location=data["loc"], path=data["keypath"]))
            data["shape"] = None
    if errors:
        raise ErrorList(errors) if len(errors) > 1 else errors[0]
    return g


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
