"""The graph IR: a ``networkx.DiGraph`` of primitive ops plus the spec's structure.

The builder (:mod:`nasdsl.build`) makes it, passes (:mod:`nasdsl.passes`)
transform it, and backends read nothing else. ``docs/ir.md`` is the whole
contract; in short:

Nodes
    Keyed by qualified name (``inception4a.branch2.1.conv``; the input node is
    named after the spec's input). Attributes: ``op``, ``attrs`` (normalised,
    defaults filled in), ``given`` (attributes the spec wrote), ``exprs`` (each
    given attribute as an expression of the enclosing class's parameters, where
    it can be one), ``deps`` (the model variables each attribute depends on),
    ``shape``, ``loc``, ``keypath``, ``phase``, ``when`` (the switches guarding
    the node), ``scope`` (templates being expanded), ``instance`` (the
    innermost template use, ``""`` in the model) and ``init`` (the node's own
    :class:`InitRule` per parameter, from the block's ``init:``; usually empty).

Edges
    ``src -> dst`` with ``index``, ``src``'s position among ``dst``'s inputs;
    read inputs with :func:`inputs`.

Graph attributes (``g.graph``)
    ``name``, ``doc``, ``file``, ``sha256``, ``input``, ``outputs`` (tuple of
    :class:`Output`, the main one first), ``variables``, ``variable_deps``,
    ``model`` (the :class:`Block` tree), ``templates`` (name to
    :class:`Template`), ``init`` (op to parameter to :class:`InitRule`),
    ``dormant`` (:class:`Dormant`: the parts switched off by a switch) and, once
    the analysis pass ran, ``exposed`` (the variables a generated class takes).

Everything here is plain data: frozen dataclasses, tuples, numbers, strings
and :class:`nasdsl.expr.Sym`. Passes copy a graph rather than change it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import networkx as nx

from nasdsl.errors import Location

# ---------------------------------------------------------------------------
# Structure records


@dataclass(frozen=True)
class Arg:
    """One argument of a template use.

    ``value`` is what it evaluated to; ``expr`` the same as an expression of the
    enclosing class's parameters (a :class:`~nasdsl.expr.Sym`, a number, a bool,
    a string or a tuple of those), or ``None`` where it cannot be written as one
    (the class then folds ``value``); ``given`` tells whether the use wrote it
    (else it is the parameter's default); ``deps`` are the model variables it
    depends on.
    """

    name: str
    value: object
    expr: object
    given: bool
    deps: frozenset[str] = frozenset()


@dataclass(frozen=True)
class When:
    """A block's condition: its ``value`` here, the condition as an expression
    of the enclosing class's parameters (``expr``: a ``Sym`` name or a bool; None
    for anything else), ``switch``: the model variable it stands for when it
    is one boolean variable (passed down through template arguments), else
    None, and ``deps``: the model variables it depends on."""

    value: bool
    expr: object
    switch: str | None
    deps: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Repeat:
    """How a ``repeat`` block made its children: the ``index`` name, the ``count`` of
    repetitions, and the ``names`` pattern (``denselayer{i + 1}``; None: named 0, 1, ...)."""

    index: str
    count: int
    names: str | None = None


@dataclass(frozen=True)
class Block:
    """One block of the spec, expanded: the unit a generated class holds as an attribute.

    ``kind`` is ``op`` (one node, named ``path``), ``seq`` (children in order),
    ``merge`` (children on the same input joined by the node ``path`` with op
    ``op``), ``use`` (a template use: one child, the template's body, at the same
    path), ``ref`` (reads the block at ``target``; None: the body's input) or
    ``skip`` (switched off by a condition that is folded: passes its input
    through, has no nodes). A ``seq`` a ``repeat`` made has ``repeat`` set.

    A block whose ``when.value`` is False is *dormant*: switched off by the
    switch ``when.switch``; its nodes are in ``g.graph["dormant"].graph``.

    ``inputs`` are the nodes it reads, ``output`` the node that carries its
    result when it runs (in the dormant graph for a dormant block; its input
    for a ``skip``), and :attr:`passed` the node that what follows it reads.
    """

    kind: str
    name: str
    path: str
    keypath: str
    loc: Location | None
    inputs: tuple[str, ...]
    output: str
    children: tuple[Block, ...] = ()
    named: bool = False
    op: str | None = None
    template: str | None = None
    args: tuple[Arg, ...] = ()
    when: When | None = None
    phase: str = "both"
    target: str | None = None
    repeat: Repeat | None = None

    @property
    def dormant(self) -> bool:
        return self.when is not None and not self.when.value and self.kind != "skip"

    @property
    def passed(self) -> str:
        """The node the block hands on: its output, or its input while it is switched off."""
        return self.inputs[0] if self.dormant else self.output

    def arg(self, name: str) -> Arg:
        return next(a for a in self.args if a.name == name)


@dataclass(frozen=True)
class Param:
    """A template parameter. ``default`` is its default evaluated with the
    variables (None if it has none, or if the default uses other parameters);
    ``default_expr`` the default as an expression of the parameters before it
    (None where it has none or it cannot be written as one)."""

    name: str
    required: bool
    default: object = None
    default_expr: object = None
    loc: Location | None = None


@dataclass(frozen=True)
class Template:
    """A spec template: what a generated class is made from. ``instances`` are the
    paths of its uses (live and dormant), in the order they finished expanding."""

    name: str
    doc: str
    params: tuple[Param, ...]
    loc: Location | None
    keypath: str
    instances: tuple[str, ...] = ()


@dataclass(frozen=True)
class InitRule:
    """How to initialise one parameter: a scheme and its arguments (numbers, or words for
    the kaiming schemes' ``mode`` and ``nonlinearity``). ``g.graph["init"]`` holds the rules
    of every layer of an op, a node's ``init`` the rules of its own (which come first)."""

    scheme: str
    args: tuple[tuple[str, float | str], ...] = ()


@dataclass(frozen=True)
class Output:
    """A model output.

    ``node`` is the node it reads (the last node of its head, if it has one);
    ``source`` the path of the block its ``from`` names; ``head`` the head's
    block tree or None; ``when`` the switch variable that turns it on and off
    (None: it is always there); ``position`` its index among all the spec's
    outputs (dormant ones included).
    """

    name: str
    node: str
    loss_weight: float
    training_only: bool
    when: str | None = None
    source: str = ""
    head: Block | None = None
    position: int = 0
    loc: Location | None = None
    keypath: str = ""
    deps: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Dormant:
    """The parts that a switch turns off with the spec's values, expanded anyway
    so that a generated class can build them when asked: ``graph`` holds their
    nodes (nodes of the main graph they read are present as ``external`` stubs),
    ``outputs`` the outputs switched off, ``errors`` the first problem of each
    switch whose dormant part does not build or does not fit (such a switch is
    not offered as a constructor argument)."""

    graph: nx.DiGraph = field(default_factory=nx.DiGraph)
    outputs: tuple[Output, ...] = ()
    errors: Mapping[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------------------
# Helpers


def as_graph(graph: object) -> nx.DiGraph:
    """The graph IR, given itself or anything that holds it as ``.graph`` (``nasdsl.Compiled``)."""
    g = graph if isinstance(graph, nx.DiGraph) else getattr(graph, "graph", None)
    if not isinstance(g, nx.DiGraph) or ("model" not in g.graph and "members" not in g.graph):  # "members": an ensemble
        raise TypeError("expected the graph IR (nasdsl.compile_spec(...).graph) or a compiled spec")
    return g


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


def node(g: nx.DiGraph, name: str) -> dict:
    """A node's data, from the main graph or, failing that, from the dormant parts."""
    data = g.nodes.get(name)
    if data is not None:
        return data
    return g.graph["dormant"].graph.nodes[name]


def graph_of(g: nx.DiGraph, name: str) -> nx.DiGraph:
    """The graph (main or dormant) that holds node ``name``."""
    if name in g:
        return g
    return g.graph["dormant"].graph


def walk(block: Block | None) -> Iterator[Block]:
    """``block`` and every block below it, parents first."""
    stack = [block] if block is not None else []
    while stack:
        b = stack.pop()
        yield b
        stack.extend(reversed(b.children))


def roots(g: nx.DiGraph) -> list[Block]:
    """The model's block tree and the heads of every output (live and dormant)."""
    outs = sorted([*g.graph["outputs"], *g.graph["dormant"].outputs], key=lambda o: o.position)
    return [g.graph["model"], *(o.head for o in outs if o.head is not None)]


def all_outputs(g: nx.DiGraph) -> list[Output]:
    """Every output of the spec in its order, live and dormant."""
    return sorted([*g.graph["outputs"], *g.graph["dormant"].outputs], key=lambda o: o.position)


def live(g: nx.DiGraph, switches: Iterator[str] | tuple[str, ...]) -> bool:
    """Whether every switch in ``switches`` is on with the graph's variables."""
    variables = g.graph["variables"]
    return all(variables.get(s) is True for s in switches)


def bypass(g: nx.DiGraph, node: str) -> bool:
    """Remove a node in place, wiring its consumers (and outputs) to its first input.

    A ``DiGraph`` holds one edge between two nodes, so when a consumer already
    reads that input (``concat: [identity, dropout]``) the node stays, and the
    answer is False; True when it was removed.
    """
    src = inputs(g, node)[0]
    readers = list(g.successors(node))
    if any(g.has_edge(src, dst) for dst in readers):
        return False
    for dst in readers:
        g.add_edge(src, dst, index=g.edges[node, dst]["index"])
    g.remove_node(node)
    if any(o.node == node for o in g.graph["outputs"]):
        g.graph["outputs"] = tuple(
            o if o.node != node else dataclasses.replace(o, node=src) for o in g.graph["outputs"]
        )
    return True


__all__ = [
    "Arg",
    "Block",
    "Dormant",
    "InitRule",
    "Output",
    "Param",
    "Repeat",
    "Template",
    "When",
    "all_outputs",
    "as_graph",
    "bypass",
    "consumers",
    "graph_of",
    "inputs",
    "node",
    "order",
    "output_names",
    "roots",
    "walk",
]
