"""Structural checks of the graph IR; every problem found is reported."""

from __future__ import annotations

import re

import networkx as nx

from nasdsl import ir
from nasdsl.errors import ErrorList, GraphError, NasdslError
from nasdsl.ir.rewrite import Rewriter
from nasdsl.ops import OPS
from nasdsl.passes.symbolic import infer_symbols

#: a node name: identifiers, indices and dashed names (a repeated block's ``block1-0``) joined by dots
_PART = r"(?:[A-Za-z_][A-Za-z0-9_]*(?:-[A-Za-z0-9_]+)*|[0-9]+)"
_NODE_NAME = re.compile(rf"{_PART}(?:\.{_PART})*")


def _err(g: nx.DiGraph, node: str, message: str) -> GraphError:
    record = g.nodes[node].get(ir.KEY)
    if not isinstance(record, ir.Node):
        return GraphError(message, path=node)
    return GraphError(message, location=record.loc, path=record.keypath or node)


def check(g: nx.DiGraph) -> nx.DiGraph:
    """Raise an :class:`ErrorList` of everything wrong with ``g``; return ``g`` if all is well."""
    errors: list[NasdslError] = []
    if not nx.is_directed_acyclic_graph(g):
        cycle = nx.find_cycle(g)
        names = " -> ".join([cycle[0][0], *(v for _, v in cycle)])
        errors.append(_err(g, cycle[0][0], f"the graph has a cycle: {names}"))
    pred = g.pred
    for node, data in g.nodes(data=True):
        if not _NODE_NAME.fullmatch(node):
            errors.append(_err(g, node, f"invalid node name '{node}'"))
        record = data.get(ir.KEY)
        if not isinstance(record, ir.Node):
            errors.append(_err(g, node, f"node {node} holds no record (an ir.Node under '{ir.KEY}')"))
            continue
        op = record.op
        if op == "input":
            if g.in_degree(node):
                errors.append(_err(g, node, "the input node has inputs"))
            continue
        if op not in OPS:
            errors.append(_err(g, node, f"unknown op '{op}'"))
            continue
        opdef = OPS[op]
        sources = pred[node]
        n = len(sources)
        if not opdef.min_inputs <= n <= opdef.max_inputs:
            errors.append(_err(g, node, f"expected {opdef.min_inputs} to {opdef.max_inputs} inputs to {op}, got {n}"))
        indices = sorted(d["index"] for d in sources.values())
        if indices != list(range(n)):
            errors.append(_err(g, node, f"input indices of {node} are {indices}, expected 0..{n - 1}"))
    info = ir.info(g)
    inp = info.input
    if inp not in g:
        errors.append(GraphError(f"the input node '{inp}' is missing"))
    outs = info.outputs
    if not outs:
        errors.append(GraphError("the graph has no outputs"))
    for out in outs:
        if out.node not in g:
            errors.append(GraphError(f"output '{out.name}' reads '{out.node}', which is not in the graph"))
        elif inp in g and out.node != inp and not nx.has_path(g, inp, out.node):
            errors.append(_err(g, out.node, f"output '{out.name}' is not reachable from the input"))
    if errors:
        raise ErrorList(errors) if len(errors) > 1 else errors[0]
    return g


def unused(g: nx.DiGraph) -> list[str]:
    """Nodes whose result reaches no output (dead code)."""
    live: set[str] = set()
    for out in ir.info(g).outputs:
        live.add(out.node)
        live |= nx.ancestors(g, out.node)
    return [n for n in ir.order(g) if n not in live]


def drop_unused(g: nx.DiGraph) -> nx.DiGraph:
    """A copy of ``g`` without the nodes that reach no output (the input stays); their blocks
    pass their input on (see :meth:`nasdsl.ir.rewrite.Rewriter.remove`); ``g`` itself where
    every node reaches one."""
    dead = [n for n in unused(g) if n != ir.info(g).input]
    if not dead:
        return g
    rw = Rewriter.on_copy(g, infer_symbols)
    rw.remove(dead)
    return rw.finish()
