"""Inference and training views of a graph."""

from __future__ import annotations

import networkx as nx

from nasdsl import ir
from nasdsl.ops import OPS


def _bypass(g: nx.DiGraph, node: str) -> None:
    """Remove a one-input node, wiring its consumers to its input."""
    (src,) = ir.inputs(g, node)
    for dst in list(g.successors(node)):
        index = g.edges[node, dst]["index"]
        g.add_edge(src, dst, index=index)
    g.remove_node(node)
    g.graph["outputs"] = tuple(
        o if o.node != node else type(o)(o.name, src, o.loss_weight, o.training_only, o.when)
        for o in g.graph["outputs"]
    )


def inference_graph(g: nx.DiGraph, *, keep_aux: bool = False, keep_dropout: bool = False) -> nx.DiGraph:
    """The graph as it runs at inference: training-only heads removed (unless
    ``keep_aux``), dropout removed (unless ``keep_dropout``)."""
    g = g.copy()
    if not keep_aux:
        g.graph["outputs"] = tuple(o for o in g.graph["outputs"] if not o.training_only)
        g.remove_nodes_from([n for n, d in g.nodes(data=True) if d["phase"] == "train"])
    if not keep_dropout:
        for node in [n for n, d in g.nodes(data=True) if d["op"] in OPS and OPS[d["op"]].inference_identity]:
            _bypass(g, node)
    return g


def training_graph(g: nx.DiGraph) -> nx.DiGraph:
    """The graph as it runs in training: inference-only nodes bypassed."""
    g = g.copy()
    for node in [n for n, d in g.nodes(data=True) if d["phase"] == "eval"]:
        _bypass(g, node)
    return g
