"""Inference and training views of a graph.

Both change the graph through :class:`nasdsl.ir.rewrite.Rewriter`: a node taken
out of the data path leaves a block that passes its input on, a training-only
head goes with its output, so the block tree still describes what runs.
"""

from __future__ import annotations

import dataclasses

import networkx as nx

from nasdsl import ir
from nasdsl.ir.rewrite import Rewriter
from nasdsl.ops import OPS
from nasdsl.passes.symbolic import infer_symbols


def _bypass(rw: Rewriter, node: str) -> None:
    """Take a one-input node out of the data path: bypass it, or, where a consumer
    already reads its input (``concat: [identity, dropout]``), make it an identity."""
    if not rw.bypass(node):
        record = ir.node(rw.g, node)
        rw.replace(
            node,
            dataclasses.replace(
                record, op="identity", attrs=ir.EMPTY, given=(), exprs=ir.EMPTY, deps=ir.EMPTY, nulls=ir.EMPTY
            ),
        )


def _drop_phase(rw: Rewriter, phase: str) -> None:
    """Take out the nodes of ``phase``: a node that nothing reads any more is removed, any other
    is bypassed (its consumers read its first input), so a ``phase: train`` layer on the main
    path is an identity in the other phase and a training-only head disappears whole."""
    g = rw.g
    for node in reversed(ir.order(g)):  # consumers first: a head is gone before its root is reached
        if ir.node(g, node).phase != phase:
            continue
        if g.out_degree(node) or any(o.node == node for o in ir.info(g).outputs):
            _bypass(rw, node)
        else:
            rw.remove([node])


def inference_graph(g: nx.DiGraph, *, keep_aux: bool = False, keep_dropout: bool = False) -> nx.DiGraph:
    """The graph as it runs at inference: training-only heads and ``phase: train``
    layers taken out (unless ``keep_aux``), dropout removed (unless ``keep_dropout``)."""
    rw = Rewriter.on_copy(g, infer_symbols)
    if not keep_aux:
        ir.update_info(rw.g, outputs=tuple(o for o in ir.info(rw.g).outputs if not o.training_only))
        _drop_phase(rw, "train")
    if not keep_dropout:
        for node in [n for n, r in ir.nodes(rw.g) if r.op in OPS and OPS[r.op].inference_identity]:
            _bypass(rw, node)
    return rw.finish()


def training_graph(g: nx.DiGraph) -> nx.DiGraph:
    """The graph as it runs in training: inference-only nodes bypassed."""
    rw = Rewriter.on_copy(g, infer_symbols)
    _drop_phase(rw, "eval")
    return rw.finish()
