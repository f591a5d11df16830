"""Inference and training views of a graph."""

from __future__ import annotations

import networkx as nx

from nasdsl import ir
from nasdsl.ops import OPS


def _bypass(g: nx.DiGraph, node: str) -> None:
    """Take a one-input node out of the data path: bypass it, or, where a consumer
    already reads its input (``concat: [identity, dropout]``), make it an identity."""
    if not ir.bypass(g, node):
        ir.update_node(g, node, op="identity", attrs=ir.EMPTY, given=(), exprs=ir.EMPTY, deps=ir.EMPTY)


def _drop_phase(g: nx.DiGraph, phase: str) -> None:
    """Take out the nodes of ``phase``: a node that nothing reads any more is removed, any other
    is bypassed (its consumers read its first input), so a ``phase: train`` layer on the main
    path is an identity in the other phase and a training-only head disappears whole."""
    for node in reversed(ir.order(g)):  # consumers first: a head is gone before its root is reached
        if ir.node(g, node).phase != phase:
            continue
        if g.out_degree(node) or any(o.node == node for o in ir.info(g).outputs):
            _bypass(g, node)
        else:
            g.remove_node(node)


def inference_graph(g: nx.DiGraph, *, keep_aux: bool = False, keep_dropout: bool = False) -> nx.DiGraph:
    """The graph as it runs at inference: training-only heads and ``phase: train``
    layers taken out (unless ``keep_aux``), dropout removed (unless ``keep_dropout``)."""
    g = ir.copy(g)
    if not keep_aux:
        ir.update_info(g, outputs=tuple(o for o in ir.info(g).outputs if not o.training_only))
        _drop_phase(g, "train")
    if not keep_dropout:
        for node in [n for n, r in ir.nodes(g) if r.op in OPS and OPS[r.op].inference_identity]:
            _bypass(g, node)
    return g


def training_graph(g: nx.DiGraph) -> nx.DiGraph:
    """The graph as it runs in training: inference-only nodes bypassed."""
    g = ir.copy(g)
    _drop_phase(g, "eval")
    return g
