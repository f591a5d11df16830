"""The block tree of an optimised graph: flat, one ``op`` block per node.

The rewriting passes (:mod:`~nasdsl.passes.fold_norms`,
:mod:`~nasdsl.passes.fuse`, :mod:`~nasdsl.passes.hoist`) change nodes across
template boundaries: folding the BatchNorm of a template's body changes every
use of the template, and a fused convolution belongs to no branch of the merge
it feeds. The spec's tree (templates, uses, merges) no longer describes such a
graph, so each of those passes ends with :func:`flatten_tree`, which replaces
it by a tree that describes exactly the nodes:

- ``ir.info(g).model`` is a ``seq`` block whose children are one ``op`` block
  per node, in :func:`nasdsl.ir.order`, each naming its inputs (so a child may
  read any earlier node, not only the one before it);
- ``templates`` is empty, outputs have no head (their nodes are in the model's
  sequence) and read their own node (``source``), the dormant part is empty;
- every variable is folded: nodes keep ``attrs`` and ``shape`` but lose
  ``exprs``, ``deps``, ``when``, ``scope`` and ``instance``;
- ``ir.info(g).flat`` is True, and :func:`check_flat` (run by the pass
  manager's verifier) checks that the tree and the nodes agree.

Nothing else changes: nodes, edges, shapes and outputs are preserved.
"""

from __future__ import annotations

import dataclasses

import networkx as nx

from nasdsl import ir
from nasdsl.errors import GraphError


def flatten_tree(g: nx.DiGraph, *, copy: bool = True) -> nx.DiGraph:
    """``g`` (a copy, unless ``copy=False``) with the flat tree described above."""
    if copy:
        g = ir.copy(g)
    info = ir.info(g)
    inp = info.input
    children = []
    for n in ir.order(g):
        if n == inp:
            continue
        data = ir.update_node(g, n, exprs=ir.EMPTY, deps=ir.EMPTY, when=(), scope=(), instance="", sym=None)
        children.append(
            ir.Block("op", n, n, data.keypath, data.loc, tuple(ir.inputs(g, n)), n, op=data.op, phase=data.phase)
        )
    root = info.model
    outputs = tuple(dataclasses.replace(o, head=None, source=o.node) for o in info.outputs)
    last = children[-1].output if children else inp
    ir.update_info(
        g,
        model=ir.Block("seq", "", "", root.keypath, root.loc, (inp,), last, tuple(children)),
        templates=ir.EMPTY,
        outputs=outputs,
        dormant=ir.Dormant(),
        flat=True,
        exposed=() if info.exposed is not None else None,
    )
    return g


def reorder(g: nx.DiGraph, position: dict[str, float]) -> nx.DiGraph:
    """``g`` rebuilt with its nodes inserted in a topological order that follows
    ``position`` where the edges leave it free (so that :func:`nasdsl.ir.order`,
    and the code written from it, puts a node a pass made where the nodes it
    replaced were). Returns a new graph; ``g`` is not changed."""
    nodes = list(nx.lexicographical_topological_sort(g, key=lambda n: (position[n], n)))
    out = nx.DiGraph()
    out.graph.update(g.graph)
    out.add_nodes_from((n, dict(g.nodes[n])) for n in nodes)
    out.add_edges_from(g.edges(data=True))
    return out


def check_flat(g: nx.DiGraph) -> None:
    """Raise a :class:`GraphError` where a flat tree and the nodes disagree."""
    info = ir.info(g)
    inp = info.input
    blocks = {b.path: b for b in info.model.children}
    nodes = [n for n in ir.order(g) if n != inp]
    if set(blocks) != set(nodes) or len(blocks) != len(info.model.children):
        extra, missing = sorted(set(blocks) - set(nodes)), sorted(set(nodes) - set(blocks))
        raise GraphError(f"the flat tree does not list the nodes: extra blocks {extra}, nodes without one {missing}")
    for n in nodes:
        b = blocks[n]
        if b.kind != "op" or b.op != ir.node(g, n).op or b.inputs != tuple(ir.inputs(g, n)) or b.children:
            raise GraphError(f"the flat tree's block {n} does not describe node {n}")
    if info.templates or any(o.head is not None for o in info.outputs):
        raise GraphError("a flat graph has templates or output heads")


__all__ = ["check_flat", "flatten_tree", "reorder"]
