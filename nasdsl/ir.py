"""The graph IR: a ``networkx.DiGraph`` whose nodes are primitive ops.

This page is the IR's whole contract.

Nodes
    The key is the node's qualified name: the spec's hierarchy joined with
    dots (``inception4a.branch2.1.conv``); the input node is named after the
    spec's input (``x``). Each node has these attributes:

    ``op``        an op of :data:`nasdsl.ops.OPS`, or ``"input"``
    ``attrs``     the op's attributes, checked and with defaults filled in
                  (pairs are tuples; ``padding`` may be ``"same"``); the input
                  node holds ``shape``, ``mean`` and ``std``
    ``given``     the attribute names the spec wrote explicitly
    ``shape``     the output shape without the batch dimension, set by
                  :func:`nasdsl.passes.shapes.infer_shapes` (``None`` before)
    ``loc``       :class:`nasdsl.errors.Location` in the spec file
    ``keypath``   the spec key path the node came from
    ``phase``     ``"both"``, ``"train"`` (auxiliary heads) or ``"eval"``
                  (e.g. a softmax that only runs at inference)
    ``scope``     the names of the templates being expanded, outermost first

Edges
    ``src -> dst`` with attribute ``index``: the position of ``src`` among
    ``dst``'s inputs. Always read inputs with :func:`inputs`.

Graph attributes (``g.graph``)
    ``name`` (model name), ``input`` (input node), ``outputs`` (tuple of
    :class:`Output`, the main output first), ``variables`` (evaluated spec
    variables), ``spec`` (the parsed :class:`nasdsl.spec.Spec`), ``sha256``
    (hash of the expanded spec document).

Passes (:mod:`nasdsl.passes`) are functions from graph to graph; they copy
rather than mutate their argument.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx


@dataclass(frozen=True)
class Output:
    """A model output: its name, the node it reads, its loss weight, whether
    it exists only in training, and the variable that switches it on."""

    name: str
    node: str
    loss_weight: float
    training_only: bool
    when: object


def inputs(g: nx.DiGraph, node: str) -> list[str]:
    """The inputs of ``node`` in order."""
    pred = g.pred[node]
    if len(pred) == 1:
        return list(pred)
    return sorted(pred, key=lambda src: pred[src]["index"])


def consumers(g: nx.DiGraph, node: str) -> list[str]:
    return list(g.successors(node))


def order(g: nx.DiGraph) -> list[str]:
    """Nodes in a deterministic topological order (insertion order where free).

    Expansion adds every node after its inputs and the passes only rewire to
    earlier nodes, so insertion order is usually topological already: that is
    checked in one sweep over the edges before falling back to a sort.
    """
    nodes = list(g.nodes)
    rank = {n: i for i, n in enumerate(nodes)}
    if all(rank[u] < rank[v] for u, v in g.edges):
        return nodes
    return list(nx.lexicographical_topological_sort(g, key=rank.__getitem__))


def output_names(g: nx.DiGraph) -> list[str]:
    return [o.name for o in g.graph["outputs"]]


def bypass(g: nx.DiGraph, node: str) -> bool:
    """Remove a node in place, wiring its consumers (and outputs) to its first input.

    A ``DiGraph`` holds one edge between two nodes, so when a consumer already
    reads that input (``concat: [identity, dropout]``) the node stays, and the
    answer is False; True when it was removed.
    """
    src = inputs(g, node)[0]
    consumers = list(g.successors(node))
    if any(g.has_edge(src, dst) for dst in consumers):
        return False
    for dst in consumers:
        g.add_edge(src, dst, index=g.edges[node, dst]["index"])
    g.remove_node(node)
    g.graph["outputs"] = tuple(
        o if o.node != node else type(o)(o.name, src, o.loss_weight, o.training_only, o.when)
        for o in g.graph["outputs"]
    )
    return True
