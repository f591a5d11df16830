"""The pass manager: run a named list of passes, checking the graph between them.

Every pass is a function from graph to graph that leaves its argument
unchanged. :data:`PASSES` names them; :func:`run_pipeline` runs a list of
names in order and, with ``verify`` (the tests, and the command line's
``--debug``), checks the graph after each pass with :func:`verify_graph`, so
that a pass that breaks an invariant is caught where it ran, with its name.

=====================  ==========================================================
name                   pass
=====================  ==========================================================
``expose``             :func:`nasdsl.passes.exposure.expose` (analysis)
``inplace``            :func:`nasdsl.passes.inplace.mark_inplace` (analysis)
``inference``          :func:`nasdsl.passes.phases.inference_graph`
``inference_aux``      the same, keeping the training-only outputs
``training``           :func:`nasdsl.passes.phases.training_graph`
``drop_identities``    :func:`nasdsl.passes.fold.drop_identities`
``drop_unused``        :func:`nasdsl.passes.check.drop_unused`
``fold_norms``         :func:`nasdsl.passes.fold.fold_norms` (records a weight derivation)
``fuse_siblings``      :func:`nasdsl.passes.fuse.fuse_siblings` (records a weight derivation)
``hoist_activations``  :func:`nasdsl.passes.hoist.hoist_activations`
=====================  ==========================================================

The passes that change nodes do it through :mod:`nasdsl.ir.rewrite`, which keeps
the block tree describing them; the verifier checks that the two agree
(:func:`nasdsl.ir.tree.check_tree`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable

import networkx as nx

from nasdsl import ir
from nasdsl.errors import GraphError, NasdslError
from nasdsl.ir.tree import check_tree
from nasdsl.ops import OPS
from nasdsl.passes.check import check, drop_unused
from nasdsl.passes.exposure import expose
from nasdsl.passes.fold import drop_identities, fold_norms
from nasdsl.passes.fuse import fuse_siblings
from nasdsl.passes.hoist import hoist_activations
from nasdsl.passes.inplace import mark_inplace
from nasdsl.passes.phases import inference_graph, training_graph

Pass = Callable[[nx.DiGraph], nx.DiGraph]

PASSES: dict[str, Pass] = {
    "expose": expose,
    "inplace": mark_inplace,
    "inference": inference_graph,
    "inference_aux": functools.partial(inference_graph, keep_aux=True),
    "training": training_graph,
    "drop_identities": drop_identities,
    "drop_unused": drop_unused,
    "fold_norms": fold_norms,
    "fuse_siblings": fuse_siblings,
    "hoist_activations": hoist_activations,
}


class PassError(GraphError):
    """A pass left the graph broken (a bug in the pass, not in the spec)."""


def verify_graph(g: nx.DiGraph) -> None:
    """The invariants every pass must keep: the structural checks of :func:`check`,
    every node shaped as its op's rule says from its inputs' shapes, and the
    block tree and the nodes in agreement (:func:`~nasdsl.ir.tree.check_tree`:
    every node held by one block, every block's inputs and output present).
    Raises on the first breach."""
    check(g)
    for n in ir.order(g):
        data = ir.node(g, n)
        if data.op == "input":
            continue
        expected = OPS[data.op].infer(ir.input_types(g, n), data.attrs)
        if data.type != expected:
            raise PassError(f"node {n} has type {data.type}, its op's rule gives {expected}")
    info = ir.info(g)
    for o in info.outputs:
        if o.node not in g:
            raise PassError(f"output {o.name} reads {o.node}, which is not in the graph")
    check_tree(g)


def run_pipeline(g: nx.DiGraph, names: Iterable[str], *, verify: bool = False) -> nx.DiGraph:
    """``g`` through the passes ``names`` (keys of :data:`PASSES`), in order."""
    for name in names:
        try:
            g = PASSES[name](g)
        except KeyError:
            if name not in PASSES:
                raise ValueError(f"unknown pass {name!r}; passes: {', '.join(PASSES)}") from None
            raise
        if verify:
            try:
                verify_graph(g)
            except NasdslError as e:
                raise PassError(f"after pass {name}: {e.format()}") from None
    return g


__all__ = ["PASSES", "PassError", "run_pipeline", "verify_graph"]
