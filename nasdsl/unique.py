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

:class:`BenchmarkRule` is NAS-Bench-201's own rule (its ``Structure.to_unique_str(consider_zero=True)``),
for a space whose choices between blocks are the edges of one cell (docs/design-space.md).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import networkx as nx

from nasdsl import ir
from nasdsl.ops import OPS

#: merges whose inputs' order does not matter
COMMUTATIVE = frozenset({"add", "mul", "mean"})


def passes_on(op: str) -> bool:
    """Whether a node of this op passes its input on at inference (an identity, dropout, ...)."""
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
        if data.op != "input" and passes_on(data.op) and ins:
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
    nodes = sorted(value[n] for n in read if n in value and not passes_on(ir.node(g, n).op))
    whole = repr(([value.get(o, "") for o in outputs], nodes))
    return hashlib.sha256(whole.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------
# NAS-Bench-201's rule


class BenchmarkRule:
    """NAS-Bench-201's rule of which cells are one (``to_unique_str`` with ``consider_zero``), on
    the cell of a space.

    The cell is a template whose body is a named sequence of nodes, each either one choice between
    blocks (an edge) or an ``add`` whose branches are each one (a node summing its edges); an edge
    reads the template's input (node 0), an earlier node (``from:``), or, without ``from:``, what
    its entry reads (the node before it). Every choice between blocks of the space is an edge of
    that cell. Each node is a string: node 0 is ``0``; an edge is ``#`` (a zero) when its option is
    the ``zero`` op or its source is ``#``, its source's string when its option is ``identity``, else
    ``(source)@word`` (the option's word); a node is its edges' strings sorted and joined by ``+``.
    The cell's key is its last node's string, so a node whose edges are all zeros (``#+#``) is not
    recognised as one, as in the benchmark. Two variants are one under the rule when their cells'
    keys and their other choices are equal; it says nothing of whether a variant compiles.
    """

    def __init__(self, space):
        self.space = space
        self.edges, self.last = _cell_edges(space)
        blocks = {i for _, _, i in self.edges}
        self.others = tuple(i for i in range(len(space.points)) if i not in blocks)
        self.kinds = {i: tuple(_option_kind(space, i, k) for k in range(len(space.points[i].options))) for i in blocks}

    def key(self, picks: tuple[int, ...]) -> str:
        nodes = ["0"]
        terms_of: dict[int, list[str]] = {}
        for target, source, i in self.edges:
            while len(nodes) < target:  # every edge into the nodes before is read: they are complete
                nodes.append("+".join(sorted(terms_of.get(len(nodes), []))))
            kind = self.kinds[i][picks[i]]
            word = self.space.points[i].options[picks[i]]
            src = nodes[source]
            term = "#" if kind == "zero" or src == "#" else src if kind == "identity" else f"({src})@{word}"
            terms_of.setdefault(target, []).append(term)
        while len(nodes) <= self.last:
            nodes.append("+".join(sorted(terms_of.get(len(nodes), []))))
        others = ",".join(str(picks[i]) for i in self.others)
        return f"{nodes[self.last]};{others}"

    def hash(self, picks: tuple[int, ...]) -> str:
        return hashlib.sha256(self.key(picks).encode()).hexdigest()[:16]


def _refuse(message: str):
    from nasdsl.errors import SpecError

    return SpecError(f"--unique=benchmark: {message}", path="--unique")


def _cell_edges(space) -> tuple[list[tuple[int, int, int]], int]:
    """The cell's edges (target node, source node, choice point), edges into a node in order, and
    its last node; a SpecError where the space is no such cell."""
    from nasdsl.loader import YMap
    from nasdsl.spec import INPUT_REF

    blocks = [i for i, p in enumerate(space.points) if p.kind == "block"]
    if not blocks:
        raise _refuse("the space has no choice between blocks (the rule is about a cell's edges)")
    at: dict[tuple, int] = {}
    for i in blocks:
        for pos in space.points[i].positions:
            at[pos.keys] = i
    templates = {keys[1] for keys in at if len(keys) > 3 and keys[0] == "templates" and keys[2] == "body"}
    if len(templates) != 1:
        raise _refuse("expected every choice between blocks in the body of one template (the cell)")
    name = templates.pop()
    body = space.document["templates"][name]["body"]
    if not isinstance(body, YMap):
        raise _refuse(f"expected template {name}'s body to be a named sequence of nodes")
    index = {INPUT_REF: 0}
    edges: list[tuple[int, int, int]] = []
    base = ("templates", name, "body")

    def source(entry, default: int, where: str) -> int:
        ref = entry.get("from") if isinstance(entry, YMap) else None
        if ref is None:
            return default
        if ref not in index:
            raise _refuse(f"{where}: expected 'from' to name the cell's input or an earlier node, got {ref!r}")
        return index[ref]

    for n, (entry_name, entry) in enumerate(body.items(), start=1):
        where = f"templates.{name}.body.{entry_name}"
        if (*base, entry_name) in at:
            edges.append((n, source(entry, n - 1, where), at[(*base, entry_name)]))
        elif isinstance(entry, YMap) and "add" in entry and isinstance(entry["add"], YMap):
            reads = source(entry, n - 1, where)
            for branch_name, branch in entry["add"].items():
                keys = (*base, entry_name, "add", branch_name)
                if keys not in at:
                    raise _refuse(f"{where}.add.{branch_name}: expected each term of a node's sum to be a choice")
                edges.append((n, source(branch, reads, f"{where}.add.{branch_name}"), at[keys]))
        else:
            raise _refuse(f"{where}: expected a node that is a choice between blocks or an add of such choices")
        index[entry_name] = n
    if len(edges) != len(at):
        raise _refuse("expected every choice between blocks to be an edge of the cell, each in one place")
    return edges, len(body)


def _option_kind(space, i: int, k: int) -> str:
    """``zero``, ``identity`` or ``op``: what option ``k`` of block point ``i`` is to the rule."""
    block = space.points[i].block(k)
    seen: set[str] = set()
    while True:
        if isinstance(block, str):
            word = block
        elif isinstance(block, Mapping) and set(block) <= {"use", "op", "from"}:
            word = block.get("use", block.get("op"))
        else:
            return "op"
        if word in ("zero", "identity"):
            return word
        templates = space.document.get("templates") or {}
        if word not in templates or word in seen:
            return "op"
        seen.add(word)
        t = templates[word]
        block = t.get("body") if isinstance(t, Mapping) else None


__all__ = ["COMMUTATIVE", "BenchmarkRule", "graph_hash", "passes_on"]
