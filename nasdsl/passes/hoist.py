"""Apply an activation once before a channel split instead of once per slice.

After :mod:`~nasdsl.passes.fuse`, each slice of a fused convolution is usually
read by its own activation (the ReLU of each Inception branch). An
element-wise activation commutes with taking channels, so
:func:`hoist_activations` rewrites

    conv -> slice_i -> act_i -> readers_i      (for every slice of conv)

into ``conv -> act -> slice_i -> readers_i``: one activation node, named
``<conv>.<op>`` (``inception3a.fused.relu``), right after the convolution,
where a backend can fuse it with the convolution (cuDNN, inductor and ONNX
Runtime all fuse Conv+ReLU), and the slices read it.

It applies only where every reader of the node is a slice, every slice is
read by exactly one node, all those readers are the same activation (same op,
same attributes), and none of them is an output. It preserves the function
the graph computes, the shapes every reader sees and the outputs; the slices
keep their names and the per-slice activations disappear (their readers read
the slices). The block tree is flattened (:mod:`~nasdsl.passes.flatten`); the
argument is left unchanged. No weights are involved.
"""

from __future__ import annotations

import dataclasses

import networkx as nx

from nasdsl import ir
from nasdsl.passes.flatten import flatten_tree, reorder

#: ops that act on each element alone (and so commute with taking channels)
ELEMENTWISE = frozenset({"relu", "relu6", "sigmoid", "tanh", "silu", "gelu", "hardswish", "hardsigmoid"})


def _hoistable(g: nx.DiGraph, node: str, outputs: set[str]) -> list[str] | None:
    """The activations after ``node``'s slices, when the rewrite applies; else None."""
    slices = list(g.successors(node))
    if len(slices) < 2 or node in outputs or any(ir.node(g, s).op != "slice" or s in outputs for s in slices):
        return None
    acts = []
    for s in slices:
        readers = list(g.successors(s))
        if len(readers) != 1:
            return None
        acts.append(readers[0])
    kinds = {(ir.node(g, a).op, tuple(sorted(ir.node(g, a).attrs.items()))) for a in acts}
    if len(kinds) != 1 or next(iter(kinds))[0] not in ELEMENTWISE or outputs & set(acts):
        return None
    return acts


def hoist_activations(g: nx.DiGraph) -> nx.DiGraph:
    """A copy of ``g`` with activations hoisted above channel splits (see the module docstring)."""
    g = ir.copy(g)
    outputs = {o.node for o in ir.info(g).outputs}
    position = {n: float(i) for i, n in enumerate(ir.order(g))}
    for node in list(position):
        acts = _hoistable(g, node, outputs) if node in g else None
        if acts is None:
            continue
        first = ir.node(g, acts[0])
        name = f"{node}.{first.op}"
        i = 0
        while name in g:
            i += 1
            name = f"{node}.{first.op}_{i}"
        ir.add_node(g, name, dataclasses.replace(first, type=ir.node(g, node).type, sym=None))
        position[name] = position[node] + 0.5
        slices = list(g.successors(node))
        for s in slices:
            g.remove_edge(node, s)
            g.add_edge(name, s, index=0)
        g.add_edge(node, name, index=0)
        for a in acts:
            ir.bypass(g, a)
    return flatten_tree(reorder(g, position), copy=False)


__all__ = ["ELEMENTWISE", "hoist_activations"]
