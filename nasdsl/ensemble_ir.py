"""The IR of an ensemble: one graph whose members are graphs (``docs/ir.md``, "Ensembles").

An ensemble graph is an IR graph like any other (its record, its outputs, its
evaluation section), whose nodes are of three ops of the registry, in the
manner of ``torch.fx``'s ``call_module`` (a node that calls a sub-module the
graph holds):

* ``input``: the images, as in a model graph (``attrs`` ``shape``; ``mean``
  and ``std`` are None: each member normalises its own input);
* ``member`` (``nasdsl/ops/ensemble.py``): one per member, named after it,
  reading the input; its attribute ``member`` holds a :class:`Member`, whose
  ``graph`` is the member's compiled model graph (the whole IR contract holds
  for it); it gives that graph's main output, and its parameters are that
  graph's under the node's name (``googlenet1.inception4a.branch2.1.conv.weight``);
* ``average``: reads the members in order and combines them; ``attrs``:
  ``of`` (``probabilities``: the mean of each member's softmax, or ``logits``),
  ``weights`` (one per member, summing to 1) and ``softmax`` (one bool per
  member: whether the lowering applies a softmax to it; false for a member
  whose output is a softmax already).

:func:`members` reads the members off the nodes; nothing else about an
ensemble is kept beside the graph. Only networkx and the IR's records here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import networkx as nx

from nasdsl import ir
from nasdsl.errors import Location

#: the ops of an ensemble graph besides ``input``
ENSEMBLE_OPS = ("member", "average")


@dataclass(frozen=True)
class Member:
    """One member of an ensemble.

    ``graph`` is its compiled graph (what ``compile_spec`` gives for its spec
    and overrides); ``spec`` the member's spec file (as shown in messages);
    ``overrides`` its ``set`` entries, ``(path, value)`` in the spec's order;
    ``weights`` its weights file or None; ``weight`` its share of the
    combination (the members' shares sum to 1).
    """

    name: str
    graph: nx.DiGraph
    spec: str
    overrides: tuple[tuple[str, object], ...] = ()
    weights: str | None = None
    weight: float = 1.0
    loc: Location | None = None
    keypath: str = ""
    #: where ``weights`` is written (errors reading the file point there)
    weights_loc: Location | None = None


def is_ensemble(graph: object) -> bool:
    """Whether ``graph`` (a graph, or anything with a ``.graph``) calls member graphs."""
    g = graph if isinstance(graph, nx.DiGraph) else getattr(graph, "graph", None)
    if not isinstance(g, nx.DiGraph) or not isinstance(g.graph.get(ir.KEY), ir.GraphInfo):
        return False
    return any(d.op == "member" for _, d in ir.nodes(g))


def members(g: nx.DiGraph) -> tuple[Member, ...]:
    """The members of an ensemble graph, in the spec's order (the records its ``member`` nodes hold)."""
    return tuple(d.attrs["member"] for _, d in ir.nodes(g) if d.op == "member")


def combine(g: nx.DiGraph) -> str | None:
    """What an ensemble averages (``probabilities`` or ``logits``), None for a model graph."""
    return next((d.attrs["of"] for _, d in ir.nodes(g) if d.op == "average"), None)


def member_graphs(g: nx.DiGraph) -> Iterator[tuple[str, nx.DiGraph]]:
    """``(state_dict prefix, graph)`` of each member."""
    for m in members(g):
        yield f"{m.name}.", m.graph


def with_member_graphs(g: nx.DiGraph, graphs: list[nx.DiGraph]) -> nx.DiGraph:
    """A copy of ensemble ``g`` whose members hold ``graphs`` (a pass applied to each member)."""
    from dataclasses import replace

    out = ir.copy(g)
    for m, h in zip(members(g), graphs, strict=True):
        data = ir.node(out, m.name)
        ir.update_node(out, m.name, attrs=data.attrs.replace(member=replace(m, graph=h)))
    return out


def split_state_dict(g: nx.DiGraph, state_dict: dict) -> tuple[list[dict], list[str]]:
    """Each member's part of an ensemble state_dict (keys without the member's prefix),
    and the keys that belong to no member."""
    parts: list[dict] = [{} for _ in members(g)]
    prefixes = [f"{m.name}." for m in members(g)]
    unknown: list[str] = []
    for key, value in state_dict.items():
        for i, prefix in enumerate(prefixes):
            if isinstance(key, str) and key.startswith(prefix):
                parts[i][key[len(prefix) :]] = value
                break
        else:
            unknown.append(str(key))
    return parts, unknown


__all__ = [
    "ENSEMBLE_OPS",
    "Member",
    "combine",
    "is_ensemble",
    "member_graphs",
    "members",
    "split_state_dict",
    "with_member_graphs",
]
