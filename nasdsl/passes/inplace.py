"""In-place analysis: which activations may overwrite their input.

:func:`mark_inplace` sets ``inplace`` on every node whose op can run in place
(``OpDef.in_place``: ReLU, ReLU6, SiLU): True where the tensor it reads is
read by nothing else, whatever the exposed switches and the phase, so that a
generated ``nn.ReLU(inplace=True)`` can never change a value that something
else reads. Everything else is left as it is.

The value an activation reads may be an alias of an earlier tensor: an op that
hands on its input (``OpDef.aliases``: identity, flatten, dropout at
inference), a node of another phase (skipped in that phase), or a node that an
exposed switch the activation is not under may turn off. The analysis walks
back through those; every value on the way must have the activation as its only
reader and be no output, and the walk must end at an op that makes a fresh
tensor. A node read by a dormant block of an exposed switch (which, switched
on, may stand between the two) is not overwritten either.
"""

from __future__ import annotations

import networkx as nx

from nasdsl import ir
from nasdsl.ops import OPS


def mark_inplace(g: nx.DiGraph) -> nx.DiGraph:
    """A copy of ``g`` with ``inplace`` set on the nodes of in-place-capable ops
    (main and dormant graphs). Reads ``g.graph["exposed"]`` (missing: none)."""
    g = g.copy()
    exposed = frozenset(g.graph.get("exposed", ()))
    dormant = g.graph["dormant"]
    outputs = {o.node for o in ir.all_outputs(g)}
    guarded_inputs = set()  # nodes a dormant block of an exposed switch reads
    for root in ir.roots(g):
        for b in ir.walk(root):
            if b.dormant and b.when.switch in exposed:
                guarded_inputs.add(b.inputs[0])
    for n, data in g.nodes(data=True):
        if data["op"] in OPS and OPS[data["op"]].in_place:
            data["inplace"] = _can_inplace(g, n, exposed, outputs, guarded_inputs)
    if len(dormant.graph):
        d = dormant.graph.copy()
        for n, data in d.nodes(data=True):
            if data["op"] in OPS and OPS[data["op"]].in_place:
                data["inplace"] = _can_inplace(d, n, exposed, outputs, guarded_inputs)
        g.graph["dormant"] = ir.Dormant(d, dormant.outputs, dormant.errors)
    return g


def _can_inplace(
    g: nx.DiGraph, node: str, exposed: frozenset[str], outputs: set[str], guarded_inputs: set[str]
) -> bool:
    data = g.nodes[node]
    phase = data["phase"]
    mine = set(data["when"]) & exposed
    (src,) = ir.inputs(g, node)
    while True:
        here = g.nodes[src]
        if here["op"] in ("input", "external") or src in guarded_inputs:
            return False
        if g.out_degree(src) != 1 or src in outputs:
            return False
        switchable = not (set(here["when"]) & exposed) <= mine  # may be off while the activation runs
        op = OPS[here["op"]]
        passes_through = here["phase"] != phase or op.inference_identity or switchable
        if not passes_through:
            return not op.aliases and not op.in_place
        sources = ir.inputs(g, src)
        if len(sources) != 1:
            return False
        src = sources[0]


__all__ = ["mark_inplace"]
