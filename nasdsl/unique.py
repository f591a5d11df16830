"""Which variants of a space are the same architecture: a hash of what a compiled graph computes.

Two graphs get the same hash (:func:`graph_hash`) when their inference graphs are the same
expression DAG up to the names of their nodes:

* what runs at inference only: no training-only heads or ``phase: train`` layers; dropout,
  stochastic depth and ``identity`` pass their input on (they are not nodes of the DAG);
* nodes that no output reads are left out (a ``zero`` nothing reads, a dead branch);
* a node is its op, its attributes (normalised, as the backends read them), its output shape and
  its inputs, in order, except for ``add``, ``mul`` and ``mean``, whose inputs are a multiset
  (``a + b`` is ``b + a``);
* the graph is its outputs, in order, and the multiset of its nodes: two layers computing the same
  thing of the same input are two layers (two sets of weights), not one.

So variants with one hash have the same layers, wired alike: the same parameters, multiply-adds and
function family (each layer's weights free). ``zero`` edges are already gone when a graph is built
(an op that reads a zero is left out, an ``add`` drops it; docs/design-space.md). The hash is
SHA-256's (its first 16 hex digits): two graphs that differ could share it only by a collision.
"""

from __future__ import annotations

import hashlib

import networkx as nx

from nasdsl import ir
from nasdsl.ops import OPS

#: merges whose inputs' order does not matter
COMMUTATIVE = frozenset({"add", "mul", "mean"})


def _passes_on(op: str) -> bool:
    return op == "identity" or (op in OPS and OPS[op].inference_identity)


def graph_hash(g: nx.DiGraph) -> str:
    """The hash of what a compiled (shaped) graph computes at inference (see the module docstring)."""
    outputs = [o.node for o in ir.info(g).outputs if not o.training_only]
    value: dict[str, str] = {}  # a node's hash, or (passing its input on) its input's
    for n in ir.order(g):
        data = ir.node(g, n)
        if data.phase == "train":
            continue
        ins = ir.inputs(g, n)
        if data.op != "input" and _passes_on(data.op) and ins:
            value[n] = value.get(ins[0], "")
            continue
        terms = [value.get(i, "") for i in ins]
        if data.op in COMMUTATIVE:
            terms.sort()
        attrs = sorted((k, repr(v)) for k, v in data.attrs.items())
        label = repr((data.op, attrs, data.shape, terms))
        value[n] = hashlib.sha256(label.encode()).hexdigest()
    # the nodes the outputs read, through the nodes that pass their input on
    read: set[str] = set()
    stack = list(outputs)
    while stack:
        n = stack.pop()
        if n in read:
            continue
        read.add(n)
        stack.extend(ir.inputs(g, n))
    nodes = sorted(value[n] for n in read if n in value and not _passes_on(ir.node(g, n).op))
    whole = repr(([value.get(o, "") for o in outputs], nodes))
    return hashlib.sha256(whole.encode()).hexdigest()[:16]


__all__ = ["COMMUTATIVE", "graph_hash"]
