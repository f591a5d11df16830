"""The pass manager: named passes with contracts, run in order, the graph verified between them.

Every pass is a function from graph to graph that leaves its argument
unchanged, registered here with its **contract** (:class:`PassInfo`): the
*facts* it requires of its input, the facts it guarantees of its output, and
the facts it preserves. A fact is a named property of a graph (:data:`FACTS`:
``shaped``, ``inference``, ``exposed`` ...) with a checker; the graph's record
lists the facts that hold (``GraphInfo.facts``). :func:`run_pipeline` runs a
list of pass names in order: before each pass it checks that the graph holds
what the pass requires (a missing fact is a :class:`PassError` naming the pass
and the fact, not a wrong result later); after it, the graph holds the facts
the pass preserved and those it guarantees, and the verifier checks them.

The verifier (:func:`verify_graph`) runs after every pass at one of two
levels: ``full`` (every node's type recomputed from its op's rule, and every
fact's checker) in the test suite (``NASDSL_VERIFY=full``, set by
``tests/conftest.py``) and with ``--debug``; ``cheap`` (the structural checks
of :func:`~nasdsl.passes.check.check`, the outputs) in every command
otherwise (not after a pass that returned its input: it changed nothing). So a pass that breaks an
invariant is caught where it ran, with its name (MLIR's ``enableVerifier``).

=====================  =========================================================  ========
The passes that change nodes do it through :mod:`nasdsl.ir.rewrite`, which keeps
the block tree describing them; the verifier checks at both levels that the two
agree (:func:`nasdsl.ir.tree.check_tree`).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import networkx as nx

from nasdsl import ir
from nasdsl.errors import GraphError, NasdslError
from nasdsl.ir.tree import check_tree
from nasdsl.ops import OPS
from nasdsl.passes.check import check, drop_unused, unused
from nasdsl.passes.exposure import expose
from nasdsl.passes.fold import drop_identities, fold_norms, norm_foldable
from nasdsl.passes.fuse import fuse_siblings, sibling_groups
from nasdsl.passes.hoist import hoist_activations
from nasdsl.passes.inplace import mark_inplace
from nasdsl.passes.phases import inference_graph, training_graph

Pass = Callable[[nx.DiGraph], nx.DiGraph]

#: what ``shaped`` means: the shape pass ran (``infer_shapes`` sets it)
SHAPED = "shaped"


class PassError(GraphError):
    """A pass left the graph broken, or ran on a graph without what it needs (a bug in the
    caller or the pass, not in the spec)."""


# ---------------------------------------------------------------------------
# Facts and their checkers


def _shaped(g: nx.DiGraph) -> str | None:
    missing = [n for n, d in ir.nodes(g) if d.type is None]
    return f"nodes without a type: {missing[:3]}" if missing else None


def _exposed(g: nx.DiGraph) -> str | None:
    return "no exposure analysis" if ir.info(g).exposed is None else None


def _inplace(g: nx.DiGraph) -> str | None:
    bad = [
        n for n, d in ir.nodes(g) if d.op in OPS and (OPS[d.op].in_place or OPS[d.op].accumulates) and d.inplace is None
    ]
    return f"in-place-capable nodes not analysed: {bad[:3]}" if bad else None


def _inference(g: nx.DiGraph) -> str | None:
    info = ir.info(g)
    bad = [n for n, d in ir.nodes(g) if d.phase == "train" or (d.op in OPS and OPS[d.op].inference_identity)]
    if bad:
        return f"training-only or dropout nodes left: {bad[:3]}"
    if any(o.training_only for o in info.outputs):
        return "a training-only output left"
    return None


def _eval(g: nx.DiGraph) -> str | None:
    bad = [n for n, d in ir.nodes(g) if d.op in OPS and OPS[d.op].inference_identity]
    return f"dropout nodes left: {bad[:3]}" if bad else None


def _training(g: nx.DiGraph) -> str | None:
    bad = [n for n, d in ir.nodes(g) if d.phase == "eval"]
    return f"inference-only nodes left: {bad[:3]}" if bad else None


def _no_identities(g: nx.DiGraph) -> str | None:
    entries = {n for root in ir.roots(g) for b in ir.walk(root) for n in b.entries}
    for n, d in ir.nodes(g):
        # an identity stays only where a reader needs it to read one value twice (see Rewriter.bypass),
        # or where it stands for an input of a template with several (Block.entries)
        if n in entries:
            continue
        if d.op == "identity" and not any(g.has_edge(ir.inputs(g, n)[0], r) for r in g.successors(n)):
            return f"identity node {n} left"
    return None


def _no_dead_nodes(g: nx.DiGraph) -> str | None:
    dead = [n for n in unused(g) if n != ir.info(g).input]
    return f"nodes that reach no output: {dead[:3]}" if dead else None


def _norms_folded(g: nx.DiGraph) -> str | None:
    left = [n for n, d in ir.nodes(g) if d.op == "batch_norm" and norm_foldable(g, n)]
    return f"foldable BatchNorms left: {left[:3]}" if left else None


def _siblings_fused(g: nx.DiGraph) -> str | None:
    groups = sibling_groups(g)
    return f"fusible sibling convolutions left: {groups[0]}" if groups else None


def _always(g: nx.DiGraph) -> str | None:
    return None


#: every fact a pass may guarantee, with the check that it holds (None: it does)
FACTS: dict[str, Callable[[nx.DiGraph], str | None]] = {
    SHAPED: _shaped,
    "exposed": _exposed,
    "inplace": _inplace,
    "inference": _inference,
    "eval": _eval,
    "training": _training,
    "no_identities": _no_identities,
    "no_dead_nodes": _no_dead_nodes,
    "norms_folded": _norms_folded,
    "siblings_fused": _siblings_fused,
    "activations_hoisted": _always,
}

# ---------------------------------------------------------------------------
# Passes and their contracts


@dataclass(frozen=True)
class PassInfo:
    """A pass and its contract: the facts it ``requires`` of its input, those it ``guarantees``
    of its output, and those of its input it ``preserves`` (every other fact is dropped)."""

    run: Pass
    requires: frozenset[str] = frozenset({SHAPED})
    guarantees: frozenset[str] = frozenset()
    preserves: frozenset[str] = frozenset()


def _facts(*names: str) -> frozenset[str]:
    unknown = set(names) - FACTS.keys()
    assert not unknown, unknown
    return frozenset(names)


#: what a rewrite keeps: the shapes (it verifies them) and the views it started from
_VIEWS = _facts(SHAPED, "inference", "eval", "no_identities", "no_dead_nodes")

PASSES: dict[str, PassInfo] = {
    "expose": PassInfo(expose, guarantees=_facts("exposed"), preserves=_facts(*FACTS)),
    "inplace": PassInfo(mark_inplace, guarantees=_facts("inplace"), preserves=_facts(*FACTS)),
    "inference": PassInfo(inference_graph, guarantees=_facts("inference", "eval"), preserves=_facts(SHAPED, "exposed")),
    "inference_aux": PassInfo(
        functools.partial(inference_graph, keep_aux=True),
        guarantees=_facts("eval"),
        preserves=_facts(SHAPED, "exposed"),
    ),
    "training": PassInfo(training_graph, guarantees=_facts("training"), preserves=_facts(SHAPED, "exposed")),
    "drop_identities": PassInfo(
        drop_identities, guarantees=_facts("no_identities"), preserves=_facts(*FACTS) - {"no_dead_nodes"}
    ),
    "drop_unused": PassInfo(drop_unused, guarantees=_facts("no_dead_nodes"), preserves=_facts(*FACTS)),
    "fold_norms": PassInfo(
        fold_norms, requires=_facts(SHAPED, "eval"), guarantees=_facts("norms_folded"), preserves=_VIEWS
    ),
    "fuse_siblings": PassInfo(
        fuse_siblings,
        requires=_facts(SHAPED, "eval"),
        guarantees=_facts("siblings_fused"),
        preserves=_VIEWS | {"norms_folded"},
    ),
    "hoist_activations": PassInfo(
        hoist_activations,
        requires=_facts(SHAPED, "eval"),
        guarantees=_facts("activations_hoisted"),
        preserves=_VIEWS | {"norms_folded", "siblings_fused"},
    ),
}

# ---------------------------------------------------------------------------
# The verifier


def verify_level() -> str:
    """How much the verifier checks after each pass: ``full`` where ``NASDSL_VERIFY=full`` (the test
    suite, ``--debug``), else ``cheap``."""
    return "full" if os.environ.get("NASDSL_VERIFY", "") == "full" else "cheap"


def verify_graph(g: nx.DiGraph, level: str = "full") -> None:
    """The invariants every pass must keep. ``cheap``: the structural checks of :func:`check`,
    every output present, and the block tree and the nodes in agreement
    (:func:`~nasdsl.ir.tree.check_tree`: every node held by one block, every block's inputs and
    output present). ``full``: also every
    node's type as its op's rule gives it from its inputs' types, and every fact the graph claims
    (``GraphInfo.facts``) by its checker. Raises on the first breach."""
    check(g)
    info = ir.info(g)
    for o in info.outputs:
        if o.node not in g:
            raise PassError(f"output {o.name} reads {o.node}, which is not in the graph")
    check_tree(g)
    if level != "full":
        return
    for n in ir.order(g):
        data = ir.node(g, n)
        if data.op == "input":
            continue
        expected = OPS[data.op].infer(ir.input_types(g, n), data.attrs)
        if data.type != expected:
            raise PassError(f"node {n} has type {data.type}, its op's rule gives {expected}")
    for fact in sorted(info.facts):
        problem = FACTS[fact](g)
        if problem is not None:
            raise PassError(f"the graph claims '{fact}' but {problem}")


def run_pipeline(g: nx.DiGraph, names: Iterable[str], *, verify: bool | str | None = None) -> nx.DiGraph:
    """``g`` through the passes ``names`` (keys of :data:`PASSES`), in order, each one's contract
    checked; ``verify``: True or ``"full"`` for the full verifier after every pass, ``"cheap"`` for
    the cheap one, None for :func:`verify_level`'s choice, False for none."""
    level = ("full" if verify is True else verify) if verify is not None else verify_level()
    for name in names:
        info = PASSES.get(name)
        if info is None:
            raise ValueError(f"unknown pass {name!r}; passes: {', '.join(PASSES)}")
        facts = _facts_of(g)
        missing = sorted(info.requires - facts)
        if missing:
            raise PassError(f"pass {name} requires {', '.join(missing)}, which the graph does not hold")
        out = info.run(g)
        unchanged = out is g
        if unchanged:
            out = ir.copy(g)
        ir.update_info(out, facts=(facts & info.preserves) | info.guarantees)
        # a pass that changed nothing broke nothing: only the full level, which checks the facts
        # it claims, looks again
        if level == "full" or (level and not unchanged):
            try:
                verify_graph(out, level)
            except NasdslError as e:
                raise PassError(f"after pass {name}: {e.format()}") from None
        g = out
    return g


def _facts_of(g: nx.DiGraph) -> frozenset[str]:
    info = ir.info(g)
    return info.facts | ({SHAPED} if _shaped(g) is None else frozenset())


__all__ = ["FACTS", "PASSES", "PassError", "PassInfo", "run_pipeline", "verify_graph", "verify_level"]
