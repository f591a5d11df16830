"""Apply an activation once before a channel split instead of once per slice.

After :mod:`~nasdsl.passes.fuse`, each slice of a fused convolution is usually
read by its own activation (the ReLU of each Inception branch). An
element-wise activation (``OpDef.elementwise``) commutes with taking channels,
so :func:`hoist_activations` rewrites

    conv -> slice_i -> act_i -> readers_i      (for every slice of conv)

into ``conv -> act -> slice_i -> readers_i``: one activation node right after
the convolution, a new entry of the same named sequence named
``<entry>_<op>`` (``inception3a.fused_relu``), where a backend can fuse it
with the convolution (cuDNN, inductor and ONNX Runtime all fuse Conv+ReLU),
and the slices read it.

It applies only where every reader of the node is a slice, every slice is
read by exactly one node, all those readers are the same activation (same op,
same attributes), none of them is an output, and the node is an entry of a
named sequence. It preserves the function the graph computes, the shapes
every reader sees and the outputs; the slices keep their names and the
per-slice activations disappear (their readers read the slices; their blocks
pass their input on). The argument is left unchanged. No weights are involved.
"""

from __future__ import annotations

import dataclasses

import networkx as nx

from nasdsl import ir
from nasdsl.ir.rewrite import RewriteError, Rewriter
from nasdsl.ops import OPS
from nasdsl.passes.symbolic import infer_symbols


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
    op = next(iter(kinds))[0]
    if len(kinds) != 1 or op not in OPS or not OPS[op].elementwise or outputs & set(acts):
        return None
    return acts


def hoist_activations(g: nx.DiGraph) -> nx.DiGraph:
    """A copy of ``g`` with activations hoisted above channel splits (see the module docstring)."""
    rw = Rewriter.on_copy(g, infer_symbols)
    g = rw.g
    outputs = {o.node for o in ir.info(g).outputs}
    for node in list(ir.order(g)):
        acts = _hoistable(g, node, outputs) if node in g else None
        if acts is None:
            continue
        first = ir.node(g, acts[0])
        try:
            parent = rw.parent_of(node)
            entry = node[len(parent.path) + 1 :] if parent.path else node
            wanted = f"{parent.path}.{entry}_{first.op}" if parent.path else f"{entry}_{first.op}"
            name, i = wanted, 0
            while name in g:
                i += 1
                name = f"{wanted}_{i}"
            instance = rw.instance(node)
            exprs = {k: rw.translate(v, first.instance, instance) for k, v in first.exprs.items()}
            exprs = {k: v for k, v in exprs.items() if v is not None}
            made = dataclasses.replace(
                first, type=ir.node(g, node).type, sym=None, in_sym=None, instance=instance, exprs=ir.frozen(exprs),
                inplace=None, nulls=ir.EMPTY,
            )  # fmt: skip
            rw.insert(name, made, (node,), after=node)
        except RewriteError:
            continue  # no named sequence to hold it: the activations stay
        for s in [s for s in g.successors(node) if s != name]:
            rw.replace(s, ir.node(g, s), sources=(name,))
        for a in acts:
            rw.bypass(a)
    return rw.finish()


__all__ = ["hoist_activations"]
