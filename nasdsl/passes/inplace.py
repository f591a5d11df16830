"""In-place analysis: which activations may overwrite their input, and which sums
may add into their first input.

:func:`mark_inplace` sets ``inplace`` on every node whose op can run in place
(``OpDef.in_place``: ReLU, ReLU6, SiLU): True where the tensor it reads is
read by nothing else, whatever the exposed switches and the phase, so that a
generated ``nn.ReLU(inplace=True)`` can never change a value that something
else reads. On a merge that can accumulate (``OpDef.accumulates``: ``add``)
of two inputs it sets ``inplace`` True where the same holds for its first
input and that input is made by an op whose backward does not read its output
(``OpDef.fresh``: convolution, BatchNorm, linear), so that the generated
``bn3.add_(downsample)`` (torchvision's ``out += identity``) neither changes a
value something else reads nor one autograd keeps. Everything else is left as
it is.

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
    (main and dormant graphs). Reads ``ir.info(g).exposed`` (missing: none)."""
    g = ir.copy(g)
    exposed = frozenset(ir.info(g).exposed or ())
    dormant = ir.info(g).dormant
    outputs = {o.node for o in ir.all_outputs(g)}
    guarded_inputs = set()  # nodes a dormant block of an exposed switch reads
    for root in ir.roots(g):
        for b in ir.walk(root):
            if b.dormant and b.when.switch in exposed:
                guarded_inputs.add(b.inputs[0])
    _mark(g, exposed, outputs, guarded_inputs)
    if len(dormant.graph):
        d = ir.copy(dormant.graph)
        _mark(d, exposed, outputs, guarded_inputs)
        ir.update_info(g, dormant=ir.Dormant(d, dormant.outputs, dormant.errors))
    return g


def _mark(g: nx.DiGraph, exposed: frozenset[str], outputs: set[str], guarded_inputs: set[str]) -> None:
    for n, data in list(ir.nodes(g)):
        op = OPS.get(data.op)
        if op is not None and op.in_place:
            (src,) = ir.inputs(g, n)
            ir.update_node(g, n, inplace=_can_inplace(g, n, src, exposed, outputs, guarded_inputs))
        elif op is not None and op.accumulates:
            sources = ir.inputs(g, n)
            ok = len(sources) == 2 and _can_inplace(
                g, n, sources[0], exposed, outputs, guarded_inputs, lambda made: made.fresh
            )
            ir.update_node(g, n, inplace=ok)


def _can_inplace(
    g: nx.DiGraph,
    node: str,
    src: str,
    exposed: frozenset[str],
    outputs: set[str],
    guarded_inputs: set[str],
    fresh=lambda made: not made.aliases and not made.in_place,
) -> bool:
    """Whether ``node`` may overwrite its input ``src``: every value on the way back to the op
    that made the tensor is read by ``node`` alone and is no output, and ``fresh(made)`` holds
    for that op."""
    data = ir.node(g, node)
    phase = data.phase
    mine = set(data.when) & exposed
    while True:
        here = ir.node(g, src)
        if here.op in ("input", "external") or src in guarded_inputs:
            return False
        if g.out_degree(src) != 1 or src in outputs:
            return False
        switchable = not (set(here.when) & exposed) <= mine  # may be off while the activation runs
        op = OPS[here.op]
        passes_through = here.phase != phase or op.inference_identity or switchable
        if not passes_through:
            return fresh(op)
        sources = ir.inputs(g, src)
        if len(sources) != 1:
            return False
        src = sources[0]


__all__ = ["mark_inplace"]
