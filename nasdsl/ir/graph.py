"""Reading and writing the graph: nodes, edges in order, the graph's record.

Every reader goes through these functions rather than networkx's attribute
dicts: :func:`node` gives a node's :class:`~nasdsl.ir.records.Node`,
:func:`info` the graph's :class:`~nasdsl.ir.records.GraphInfo`, :func:`inputs`
a node's inputs in order. Writers (passes, on their own copy of a graph) use
:func:`set_node`, :func:`update_node`, :func:`add_node` and :func:`update_info`; a pass that
removes, renames or adds nodes goes through :mod:`nasdsl.ir.rewrite`, which keeps the block
tree in step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator

import networkx as nx

from nasdsl.ir.records import KEY, Block, GraphInfo, Node, Output


def as_graph(graph: object) -> nx.DiGraph:
    """The graph IR, given itself or anything that holds it as ``.graph`` (``nasdsl.Compiled``)."""
    g = graph if isinstance(graph, nx.DiGraph) else getattr(graph, "graph", None)
    if not isinstance(g, nx.DiGraph) or not isinstance(g.graph.get(KEY), GraphInfo):
        raise TypeError("expected the graph IR (nasdsl.compile_spec(...).graph) or a compiled spec")
    return g


def info(g: nx.DiGraph) -> GraphInfo:
    """The graph's record."""
    return g.graph[KEY]


def set_info(g: nx.DiGraph, record: GraphInfo) -> None:
    """Store ``record`` as the graph's record (``g`` is the caller's own copy)."""
    g.graph[KEY] = record


def update_info(g: nx.DiGraph, **changes: object) -> GraphInfo:
    """Replace fields of the graph's record (``g`` is the caller's own copy); returns the new record."""
    record = dataclasses.replace(g.graph[KEY], **changes)
    g.graph[KEY] = record
    return record


def node(g: nx.DiGraph, name: str) -> Node:
    """A node's record, from the main graph or, failing that, from the dormant parts."""
    data = g._node.get(name)
    if data is not None:
        return data[KEY]
    return g.graph[KEY].dormant.graph._node[name][KEY]


def nodes(g: nx.DiGraph) -> Iterator[tuple[str, Node]]:
    """``(name, record)`` of every node of ``g`` (main graph only), in insertion order."""
    for name, data in g._node.items():
        yield name, data[KEY]


def has_node(g: nx.DiGraph, name: str) -> bool:
    return name in g._node


def set_node(g: nx.DiGraph, name: str, record: Node) -> None:
    """Store ``record`` as node ``name`` (existing or new) of ``g`` (the caller's own copy)."""
    if name in g._node:
        g._node[name] = {KEY: record}
    else:
        g.add_node(name, **{KEY: record})


def update_node(g: nx.DiGraph, name: str, **changes: object) -> Node:
    """Replace fields of node ``name``'s record in ``g`` (the caller's own copy)."""
    record = dataclasses.replace(g._node[name][KEY], **changes)
    g._node[name] = {KEY: record}
    return record


def add_node(g: nx.DiGraph, name: str, record: Node, sources: Iterable[str] = ()) -> None:
    """Add node ``name`` reading ``sources`` in order."""
    g.add_node(name, **{KEY: record})
    for i, src in enumerate(sources):
        g.add_edge(src, name, index=i)


def copy(g: nx.DiGraph) -> nx.DiGraph:
    """A copy of ``g`` a pass may change: the records are shared (they never change). The same
    graph as ``g.copy()`` (its nodes, edges and each node's predecessors in the same order, an
    edge's data one dict seen from both ends), made without networkx's edge-by-edge checks: 2.6x
    as fast (216 nodes: 0.13 ms against 0.34), and passes copy the graph once each."""
    h = g.__class__()
    h.graph.update(g.graph)
    succ, pred = h._succ, h._pred
    for n, data in g._node.items():
        h._node[n] = data.copy()
        succ[n] = {}
        pred[n] = {}
    for u, nbrs in g._succ.items():
        out = succ[u]
        for v, data in nbrs.items():
            out[v] = pred[v][u] = data.copy()
    return h


def inputs(g: nx.DiGraph, name: str) -> list[str]:
    """The inputs of ``name`` in order."""
    pred = g._pred[name]
    if len(pred) == 1:
        return list(pred)
    return sorted(pred, key=lambda src: pred[src]["index"])


def input_types(g: nx.DiGraph, name: str) -> list:
    """The :class:`~nasdsl.ir.types.TensorType` of each input of ``name``, in order."""
    return [g._node[i][KEY].type for i in inputs(g, name)]


def input_shapes(g: nx.DiGraph, name: str) -> list:
    """The shape of each input of ``name``, in order."""
    return [g._node[i][KEY].shape for i in inputs(g, name)]


def consumers(g: nx.DiGraph, name: str) -> list[str]:
    return list(g.successors(name))


def order(g: nx.DiGraph) -> list[str]:
    """Nodes in a deterministic topological order (insertion order where free).

    Expansion adds every node after its inputs and the passes only rewire to
    earlier nodes, so insertion order is usually topological already: that is
    checked in one sweep over the edges before falling back to a sort.
    """
    names = list(g.nodes)
    rank = {n: i for i, n in enumerate(names)}
    if all(rank[u] < rank[v] for u, v in g.edges):
        return names
    return list(nx.lexicographical_topological_sort(g, key=rank.__getitem__))


def output_names(g: nx.DiGraph) -> list[str]:
    return [o.name for o in info(g).outputs]


def graph_of(g: nx.DiGraph, name: str) -> nx.DiGraph:
    """The graph (main or dormant) that holds node ``name``."""
    if name in g:
        return g
    return info(g).dormant.graph


def walk(block: Block | None) -> Iterator[Block]:
    """``block`` and every block below it, parents first."""
    stack = [block] if block is not None else []
    while stack:
        b = stack.pop()
        yield b
        stack.extend(reversed(b.children))


def all_outputs(g: nx.DiGraph) -> list[Output]:
    """Every output of the spec in its order, live and dormant."""
    record = info(g)
    return sorted([*record.outputs, *record.dormant.outputs], key=lambda o: o.position)


def roots(g: nx.DiGraph) -> list[Block]:
    """The model's block tree and the heads of every output (live and dormant)."""
    return [info(g).model, *(o.head for o in all_outputs(g) if o.head is not None)]


def live(g: nx.DiGraph, switches: Iterable[str]) -> bool:
    """Whether every switch in ``switches`` is on with the graph's variables."""
    variables = info(g).variables
    return all(variables.get(s) is True for s in switches)


def retarget_outputs(g: nx.DiGraph, old: str, new: str) -> None:
    """Outputs reading ``old`` read ``new`` instead (``g`` is the caller's own copy)."""
    record = info(g)
    if any(o.node == old for o in record.outputs):
        outputs = tuple(o if o.node != old else dataclasses.replace(o, node=new) for o in record.outputs)
        update_info(g, outputs=outputs)


__all__ = [
    "add_node",
    "all_outputs",
    "as_graph",
    "consumers",
    "copy",
    "graph_of",
    "has_node",
    "info",
    "input_shapes",
    "input_types",
    "inputs",
    "live",
    "node",
    "nodes",
    "order",
    "output_names",
    "retarget_outputs",
    "roots",
    "set_info",
    "set_node",
    "update_info",
    "update_node",
    "walk",
]
