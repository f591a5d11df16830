"""The IR's records: every node, block, template, output and the graph itself, as frozen dataclasses.

A graph is a ``networkx.DiGraph``; each node holds one :class:`Node` under the
key :data:`KEY` and the graph one :class:`GraphInfo` under the same key. Records
never change: a pass that changes a node stores a new record
(``dataclasses.replace``) in its own copy of the graph. Their mappings are
:class:`~nasdsl.ir.types.FrozenDict` and their sequences tuples, so nothing
inside a record can change either. ``docs/ir.md`` documents every field.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

import networkx as nx

from nasdsl.errors import Location
from nasdsl.ir.types import EMPTY, FrozenDict, TensorType

#: the key of a node's record in its networkx attributes, and of the graph's record in ``g.graph``
KEY = "ir"


@dataclass(frozen=True)
class Arg:
    """One argument of a template use.

    ``value`` is what it evaluated to; ``expr`` the same as an expression of the
    enclosing class's parameters (a :class:`~nasdsl.ir.sym.Sym`, a number, a bool,
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
    repetitions, the ``names`` pattern (``denselayer{i + 1}``; None: named 0, 1, ...), and
    ``count_expr``, the count in the terms of the class that holds the block where a template
    parameter sets it (a :class:`~nasdsl.ir.sym.Sym`; None where the count is a number there)."""

    index: str
    count: int
    names: str | None = None
    count_expr: object = None
    #: the names the repeated block reads earlier repetitions' outputs by (``previous:``, the last
    #: name the repetition just before), ``()`` where it reads only the one before; the block's
    #: ``inputs`` are their values before the first repetition
    previous: tuple[str, ...] = ()


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
    switch ``when.switch``; its nodes are in ``ir.info(g).dormant.graph``.

    ``inputs`` are the nodes it reads, ``output`` the node that carries its
    result when it runs (in the dormant graph for a dormant block; its input
    for a ``skip``), and :attr:`passed` the node that what follows it reads;
    ``sources`` the blocks a ``from:`` names for its inputs, by path.
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
    #: the shape of ``output`` as the class holding the block writes it: ints and
    #: :class:`~nasdsl.ir.sym.Sym` of that class's parameters (None until shapes are inferred)
    sym: tuple | None = None
    #: the same of its first input
    in_sym: tuple | None = None
    #: a use of a template with several inputs: the ``identity`` nodes (``cell.s0``, ``cell.s1``) that
    #: stand for its inputs inside its body, one per input, in order (``()`` otherwise)
    entries: tuple[str, ...] = ()
    #: the shapes of all its ``inputs``, as :attr:`in_sym` is of the first (None until shapes are inferred)
    in_syms: tuple | None = None
    #: a block written with ``from:`` (or a branch of a merge written with ``from: [a, b]``): for each of
    #: ``inputs``, the path of the block the spec names for it (None: ``in``, the body's input; an input
    #: of a template, ``cell.s0``, or a value a repeat names, ``stage1.s0``), which a backend reads by
    #: that name where a switch makes the value differ between uses; ``()`` otherwise (and inside a
    #: repeat that names its ``previous`` values, which are no block's)
    sources: tuple[str | None, ...] = ()

    @property
    def dormant(self) -> bool:
        return self.when is not None and not self.when.value and self.kind != "skip"

    @property
    def passed(self) -> str:
        """The node the block hands on: its output, or its input while it is switched off."""
        return self.inputs[0] if self.dormant else self.output

    def arg(self, name: str) -> Arg:
        return next(a for a in self.args if a.name == name)

    def evolve(self, **changes: object) -> Block:
        """``dataclasses.replace(self, **changes)``, five times as fast: a Block has no
        ``__post_init__``, so its fields are copied as they are (a rewrite rebuilds hundreds of
        blocks, each block above a changed one)."""
        unknown = changes.keys() - _BLOCK_FIELDS
        if unknown:
            raise TypeError(f"Block has no field {sorted(unknown)[0]!r}")
        new = object.__new__(Block)
        new.__dict__.update(self.__dict__)
        new.__dict__.update(changes)
        return new


#: the fields of a Block, for Block.evolve
_BLOCK_FIELDS = frozenset(f.name for f in dataclasses.fields(Block))


@dataclass(frozen=True)
class Param:
    """A template parameter. ``default`` is its default evaluated with the
    variables (None if it has none, or if the default uses other parameters);
    ``default_expr`` the default as an expression of the parameters before it
    (None where it has none or it cannot be written as one); ``null_default``: the default is
    null (the parameter gives no value unless a use gives one)."""

    name: str
    required: bool
    default: object = None
    default_expr: object = None
    loc: Location | None = None
    null_default: bool = False


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
    #: the class's first argument: the size of its input's channel axis, ``in_channels`` for a
    #: channels-first map, ``in_features`` for tokens and other channels-last input (set with the shapes)
    input_param: str = "in_channels"
    #: the body's entries in the order the class builds them (its state_dict's order) where the spec
    #: gives one (``build_order``); the others follow in the body's order. ``()``: the body's order
    build_order: tuple[str, ...] = ()
    #: a template with several inputs: their names (``("s0", "s1")``), which its class's ``forward``
    #: takes; ``()`` for one input
    inputs: tuple[str, ...] = ()
    #: the class's first arguments for a template with several inputs: each input's size along its
    #: channel axis (``s0_channels``, ``s1_channels``), set with the shapes; ``()`` for one input
    input_params: tuple[str, ...] = ()


@dataclass(frozen=True)
class InitRule:
    """How to initialise one parameter: a scheme and its arguments (numbers, or words for
    the kaiming schemes' ``mode`` and ``nonlinearity``). ``GraphInfo.init`` holds the rules
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


@dataclass(frozen=True, eq=False)
class Dormant:
    """The parts that a switch turns off with the spec's values, expanded anyway
    so that a generated class can build them when asked: ``graph`` holds their
    nodes (nodes of the main graph they read are present as ``external`` stubs),
    ``outputs`` the outputs switched off, ``errors`` the first problem of each
    switch whose dormant part does not build or does not fit (such a switch is
    not offered as a constructor argument)."""

    graph: nx.DiGraph = field(default_factory=nx.DiGraph)
    outputs: tuple[Output, ...] = ()
    errors: Mapping[str, str] = EMPTY


@dataclass(frozen=True, slots=True, weakref_slot=True)
class Node:
    """One op of the graph.

    ``op`` names its entry in :data:`nasdsl.ops.OPS` (or is ``input``, or ``external`` for a
    stub in the dormant graph); ``attrs`` its attributes, checked, defaults filled in;
    ``type`` its output's :class:`TensorType` (None until shapes are inferred); ``sym`` the
    same shape as the node's class writes it, each size an int or a
    :class:`~nasdsl.ir.sym.Sym` of the class's parameters, and ``in_sym`` its inputs' shapes
    as that class sees them (None until shapes are inferred);
    ``given`` the attributes the spec wrote; ``exprs`` each given attribute as an expression
    of the class's parameters, where it can be one; ``deps`` the model variables each
    attribute depends on; ``loc``, ``keypath`` where the spec writes it; ``phase`` when it
    runs (``both``, ``train``, ``eval``); ``when`` the switches guarding it; ``scope`` the
    templates being expanded, outermost first; ``instance`` the innermost template use
    (``""`` in the model); ``init`` its own :class:`InitRule` per parameter; ``inplace`` the
    in-place analysis' answer (None: not analysed, or not an op that could); ``nulls`` the
    attributes a template parameter that is null at this use leaves not given (so ``attrs``
    holds the op's default, as where the spec leaves them out), each as the expression the
    class writes for it (the parameter's name): the class passes the parameter on, None here.
    """

    op: str
    attrs: FrozenDict = EMPTY
    type: TensorType | None = None
    given: tuple[str, ...] = ()
    exprs: FrozenDict = EMPTY
    deps: FrozenDict = EMPTY
    loc: Location | None = None
    keypath: str = ""
    phase: str = "both"
    when: tuple[str, ...] = ()
    scope: tuple[str, ...] = ()
    instance: str = ""
    init: FrozenDict = EMPTY
    inplace: bool | None = None
    sym: tuple | None = None
    in_sym: tuple | None = None
    nulls: FrozenDict = EMPTY

    @property
    def shape(self) -> tuple[int, ...] | None:
        """The output's shape without the batch dimension, or None before shapes are inferred."""
        return None if self.type is None else self.type.shape


@dataclass(frozen=True)
class GraphInfo:
    """What a graph holds besides its nodes (``g.graph[KEY]``).

    ``name`` (a class name), ``doc``, ``file`` (the spec's path as given), ``sha256`` (of the
    merged, overridden spec document), ``name_loc`` (where the model is written), ``input``
    (the input node), ``input_doc``, ``outputs`` (the outputs that exist with the spec's
    values, main first), ``outputs_by_name`` (the model returns its outputs by name even when
    it has one, as torchvision's segmentation models do), ``variables`` (evaluated, after overrides), ``variable_locs``,
    ``variable_deps`` (the variables each variable's definition uses), ``structural`` (the
    variables that decide how many blocks there are), ``model`` (the block tree),
    ``templates`` (name to :class:`Template`), ``init`` (op to parameter to
    :class:`InitRule`), ``dormant`` (:class:`Dormant`), ``evaluation`` (the spec's evaluation
    section, bound to the input, or None).

    Set by passes: ``exposed`` (the variables a generated class takes; None until the
    analysis ran), ``derivation`` (how a rewritten graph's weights come from the original's),
    ``optimized`` and ``pipeline`` (the target and passes of an inference build) and
    ``facts`` (the properties the passes that ran guarantee; see ``nasdsl.passes.pipeline``).
    """

    name: str
    input: str
    outputs: tuple[Output, ...]
    model: Block
    doc: str = ""
    file: str = ""
    sha256: str = ""
    name_loc: Location | None = None
    input_doc: str = ""
    outputs_by_name: bool = False
    variables: FrozenDict = EMPTY
    variable_locs: FrozenDict = EMPTY
    variable_deps: FrozenDict = EMPTY
    structural: frozenset[str] = frozenset()
    templates: FrozenDict = EMPTY
    init: FrozenDict = EMPTY
    dormant: Dormant = field(default_factory=Dormant)
    evaluation: object | None = None
    exposed: tuple[str, ...] | None = None
    derivation: tuple = ()
    optimized: str | None = None
    pipeline: tuple[str, ...] = ()
    facts: frozenset[str] = frozenset()


__all__ = [
    "KEY",
    "Arg",
    "Block",
    "Dormant",
    "GraphInfo",
    "InitRule",
    "Node",
    "Output",
    "Param",
    "Repeat",
    "Template",
    "When",
]
