"""The figures of variants that choose other blocks, composed from pieces compiled once.

In a cell space (NAS-Bench-201: six edges, each a choice between five blocks) nearly every
variant chooses a combination of blocks no variant before it chose, so a program per
combination (:mod:`nasdsl.variants`) would compile nearly every variant in full. A
:class:`Composer` compiles instead, once, the *skeleton* variant (each choice between blocks at
an option that is no ``zero``) and one *probe* per other option (the skeleton with that one
choice changed), and keeps from them:

* the skeleton's nodes, in the order the builder made them, each reading skeleton nodes or the
  *slot* of a choice (where its block stands in one template use, repeat or model entry);
* each option's *piece* at each slot: the nodes the probe made there, in order, reading the
  slot's input, each other or skeleton nodes; a ``zero`` option's piece is a zero.

A variant is the skeleton with each slot's chosen piece in its place, and the builder's zero rule
(docs/design-space.md, "The zero op") applied as the builder applies it: a piece or op that reads
a zero is a zero (left out, with its parameters), an ``add`` leaves zero terms out (one term left:
that term, no node; none: a zero), and an output that is a zero is the builder's error. The
variant's shapes, parameters, multiply-adds, depth and peak are then computed on that list of
nodes as :func:`nasdsl.figures.figures` computes them on a compiled graph, and its hash as
:func:`nasdsl.unique.graph_hash` does: the tests compare both with full compiles.

A composer is made only where every option is a piece it can place (see :meth:`Composer.make`:
no training-only heads, dropout, dormant blocks or switches, no choice inside another's option,
nodes well under ``max_nodes``), and where it gives the skeleton's and every probe's figures and
hash exactly as their full compiles do; a variant it cannot finish (a shape error) is left to a full
compile, so every error is the compiler's own. A zero reaching a merge other than ``add`` is the
builder's error: compiled in full until each such merge's error line has been seen, then its text is
made of those lines as the compiler orders them (:meth:`Composer.error_text`).

Input choices (a ``from`` that picks among earlier values, as DARTS' nodes do) change what pieces
and skeleton nodes read, and a piece itself where its scope's ``index`` gives the position of what it
reads (a strided op on a cell input): :func:`nasdsl.compose_wired.make_wired` learns from compiled probes which
choice decides what, and compiles each piece for each value it may read.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import networkx as nx

from nasdsl import ir
from nasdsl.choices import plain
from nasdsl.errors import LimitError, NasdslError, SpecError
from nasdsl.ops import MERGE_OPS, OPS
from nasdsl.spec import Block, OpBlock, SeqBlock, Spec, UseBlock
from nasdsl.unique import COMMUTATIVE, passes_on

#: a value that is a zero (nothing)
ZERO = -1
#: entries of the shape cache before it is emptied
CACHE = 65536
#: pieces and skeleton nodes above this share of max_nodes: no composer (the builder's count is exact)
NODE_SHARE = 0.5


class Unplaceable(Exception):
    """What the composer cannot do for this variant: compile it in full.

    ``key``: where a zero reaches a merge other than ``add``, what the builder's errors are made of
    (:meth:`Composer._build_errors`): every variant with that key has the same error text
    (:attr:`Composer.errors` keeps it once a full compile has given it); None otherwise."""

    def __init__(self, key: tuple | None = None):
        super().__init__(key)
        self.key = key


class _ByInput:
    """What an input choice decides: one item (a skeleton node's wiring, a piece) per option of the
    choice ``point``."""

    __slots__ = ("point", "options")

    def __init__(self, point: int, options: list):
        self.point = point
        self.options = options


@dataclass(frozen=True)
class _Node:
    """A node of the skeleton or of a piece: what computing its figures and hash needs."""

    name: str
    op: str
    attrs: object
    #: where each input comes from: ("node", skeleton index), ("slot", a slot's output), ("own", index in
    #: the piece)
    inputs: tuple[tuple[str, int], ...]
    merge: bool
    #: an input of a template of several inputs (an identity node of the use): the builder refuses a zero
    #: there instead of passing it on
    template_input: bool = False
    #: a layer with parameters (it counts in the depth); a view (it holds its input's memory)
    layer: bool = field(init=False, compare=False)
    view: bool = field(init=False, compare=False)

    #: the start of the node's label in nasdsl.unique.graph_hash: its op and sorted attributes
    label: str = field(init=False, compare=False, repr=False)

    def __post_init__(self):
        opdef = OPS.get(self.op)
        object.__setattr__(self, "layer", bool(opdef and opdef.layer))
        object.__setattr__(self, "view", bool(opdef and opdef.aliases))
        items = sorted((k, repr(v)) for k, v in self.attrs.items())
        object.__setattr__(self, "label", f"({self.op!r}, {items!r}, ")


def _is_zero(block: Block, spec: Spec, seen: frozenset[str] = frozenset()) -> bool:
    """Whether a block is the zero op itself (``zero``, ``{op: zero}``, a template whose body is one)."""
    if isinstance(block, OpBlock):
        return block.op == "zero" and block.when is None
    if isinstance(block, UseBlock) and block.when is None:
        if block.template == "zero":
            return True
        t = spec.templates.get(block.template)
        return t is not None and block.template not in seen and _is_zero(t.body, spec, seen | {block.template})
    if isinstance(block, SeqBlock) and len(block.items) == 1 and block.when is None:
        return _is_zero(block.items[0][1], spec, seen)
    return False


class Composer:
    """Evaluates the variants of one assignment of the value choices (see the module docstring)."""

    def __init__(self, spec: Spec, skeleton: list, slots: list, pieces: list, outputs: list, input_type):
        self.spec = spec
        #: the skeleton in order: ("node", _Node), ("wired", _ByInput of _Nodes: an input choice decides
        #: what the node reads) or ("slot", slot index)
        self.skeleton = skeleton
        #: per slot: its choice point's index
        self.slots = slots
        #: per slot, per option: a tuple of _Nodes (the last is the piece's output), ZERO, or a _ByInput
        #: of such tuples (an input choice decides the piece)
        self.pieces = pieces
        #: the model's outputs: (name, ("node" | "slot", index))
        self.outputs = outputs
        #: each type met, by itself: equal types are one object, whose id keys the shape cache
        self.types: dict = {input_type: input_type}
        self.input_type = input_type
        #: (id of a _Node, which the composer keeps, and its input types) -> (output type or None for a
        #: shape error, params, macs)
        self.shaped: dict = {}
        #: the builder's error text by Unplaceable.key (see Unplaceable), as a full compile gave it
        self.errors: dict[tuple, str] = {}
        #: the line of each merge's error, by (merge node, branch)
        self.lines: dict[tuple[str, int], str] = {}
        #: the model's entry of each skeleton node and of each slot, and what each entry reads (see
        #: :meth:`_build_errors`); None: a zero reaching a merge is compiled in full each time
        self.entries: tuple | None = None

    # -- making one

    @staticmethod
    def options_of(space, picks: tuple[int, ...], block_points):
        """(the skeleton's picks: ``picks`` with each zero option replaced by a live one, the zero
        options of each block choice, the live ones), or None where an option does not parse or a
        choice has only zeros."""
        skeleton_picks = list(picks)
        zero_options: dict[int, set[int]] = {}
        alive_options: dict[int, list[int]] = {}
        #: whether an option is a zero, by its text: the spec around it is the same (DARTS' 16 edges
        #: share 8 options)
        known: dict[str, bool | None] = {}
        for i in block_points:
            p = space.points[i]
            zero_options[i] = set()
            for k in range(len(p.options)):
                text = repr(plain(p.block(k)))
                if text not in known:
                    known[text] = _option_is_zero(space, picks, i, k)
                parsed = known[text]
                if parsed is None:
                    return None
                if parsed:
                    zero_options[i].add(k)
            alive = [k for k in range(len(p.options)) if k not in zero_options[i]]
            if not alive:
                return None
            alive_options[i] = alive
            if picks[i] in zero_options[i]:
                skeleton_picks[i] = alive[0]
        return tuple(skeleton_picks), zero_options, alive_options

    @classmethod
    def make(
        cls, compile_variant, space, picks: tuple[int, ...], block_points, max_nodes: int, max_params: int
    ) -> Composer | None:
        """A composer for the variants that share the value choices of ``picks``, or None where the
        space is no cell space it can compose. ``compile_variant(picks)`` returns what
        ``Evaluator._compile_graph`` does: (the checked graph before shapes, ..., its spec). A space
        with input choices is composed by :func:`nasdsl.compose_wired.make_composer`."""
        found = cls.options_of(space, picks, block_points)
        if found is None:
            return None
        skeleton_picks, zero_options, _ = found
        structure, outcome, spec = compile_variant(skeleton_picks)
        if structure is None or not _plain_graph(structure):
            return None
        #: each variant compiled here, to check the composer against: (picks, shaped graph or error)
        compiled = [(skeleton_picks, outcome)]
        paths = {pos.spec_path: i for i in block_points for pos in space.points[i].positions}
        slot_blocks = _slot_blocks(structure, paths)
        if slot_blocks is None:
            return None
        slots = [paths[b.keypath] for b in slot_blocks]
        pieces: list[list] = [[None] * len(space.points[i].options) for i in slots]
        skeleton_nodes, _, layout = _skeleton(structure, slot_blocks)
        if skeleton_nodes is None:
            return None
        index_of = {n: j for j, n in enumerate(skeleton_nodes)}
        out_of = {b.passed: s for s, b in enumerate(slot_blocks)}
        merges = _merges(structure)
        wiring = _wiring(structure, skeleton_nodes, index_of, out_of, merges)
        if wiring is None:
            return None
        for s, b in enumerate(slot_blocks):
            piece = _piece(structure, b, index_of, out_of, merges)
            if piece is None:
                return None
            pieces[s][skeleton_picks[slots[s]]] = piece
        for i in block_points:
            for k in range(len(space.points[i].options)):
                if k == skeleton_picks[i]:
                    continue
                if k in zero_options[i]:
                    for s, point in enumerate(slots):
                        if point == i:
                            pieces[s][k] = ZERO
                    continue
                probe = list(skeleton_picks)
                probe[i] = k
                g, outcome, _ = compile_variant(tuple(probe))
                if g is None or not _plain_graph(g):
                    return None
                compiled.append((tuple(probe), outcome))
                found = _slot_blocks(g, paths)
                if found is None or [b.path for b in found] != [b.path for b in slot_blocks]:
                    return None
                names, _, probe_layout = _skeleton(g, found)
                probe_out = {b.passed: s for s, b in enumerate(found)}
                probe_merges = _merges(g)
                if probe_layout != layout or _wiring(g, names, index_of, probe_out, probe_merges) != wiring:
                    return None  # the rest of the graph changed: not a piece in a fixed skeleton
                for s, b in enumerate(found):
                    if slots[s] == i:
                        piece = _piece(g, b, index_of, probe_out, probe_merges)
                        if piece is None:
                            return None
                        pieces[s][k] = piece
        largest = len(skeleton_nodes) + sum(max(len(x) if x != ZERO else 1 for x in row) for row in pieces)
        if largest > NODE_SHARE * max_nodes:
            return None
        order = [("node", wiring[index_of[x]]) if isinstance(x, str) else ("slot", x) for x in layout]
        outputs = output_refs(structure, index_of, out_of)
        if outputs is None:
            return None
        composer = cls(spec, order, slots, pieces, outputs, ir.node(structure, ir.info(structure).input).type)
        composer.entries = _entries(structure, skeleton_nodes, index_of, slot_blocks)
        return composer if all(composer._agrees(p, outcome, max_params) for p, outcome in compiled) else None

    def _build_errors(self, picks: tuple[int, ...]) -> tuple | None:
        """The key of a variant where a zero reaches a merge other than ``add``.

        The builder reports such a merge's error and goes on: a sequence goes on with its next entry,
        which reads the failed entry's input as its value (a repeat stops at its first failed
        repetition). The key is the first such merge (and the position of its first zero) of each
        entry of the model that fails, found by placing the variant as the builder goes on (zeros
        only: shapes are checked after the build); None (compiled in full) where a merge inside an
        entry may be followed by another error in that entry (:func:`_entries`)."""
        if self.entries is None:
            return None
        node_entry, slot_entry, entry_input, lone, _ = self.entries
        skeleton_zero: list[bool] = []
        slot_zero: list[bool] = [True] * len(self.slots)
        failed: dict[int, bool] = {}  # entry -> whether the value it passes on is a zero
        events: list = []

        def zero(ref: tuple[str, int], reader: int) -> bool:
            where, i = ref
            entry = node_entry[i] if where == "node" else slot_entry[i]
            if entry in failed and entry != reader:
                return failed[entry]
            return skeleton_zero[i] if where == "node" else slot_zero[i]

        def place(node: _Node, ins: list[bool], entry: int) -> bool | None:
            """Whether the node is a zero; None where it fails (an event of ``entry``)."""
            if node.merge:
                if node.op == "add":
                    return all(ins)
                if any(ins):
                    if node.name not in lone:
                        raise Unplaceable
                    events.append((node.name, ins.index(True)))
                    before = entry_input[entry]
                    failed[entry] = zero(before, -2) if before is not None else False
                    return None
                return False
            if node.template_input and ins and ins[0]:
                raise Unplaceable  # a template's input that is a zero stops the build there
            return bool(ins) and ins[0] and node.op != "input"

        try:
            for kind, item in self.skeleton:
                if kind == "slot":
                    entry = slot_entry[item]
                    piece = self.pieces[item][picks[self.slots[item]]]
                    if entry in failed or isinstance(piece, int):
                        slot_zero[item] = True if isinstance(piece, int) else failed[entry]
                        continue
                    if isinstance(piece, _ByInput):
                        piece = piece.options[picks[piece.point]]
                    if isinstance(piece, _Pass):
                        slot_zero[item] = zero(piece.source, entry)
                        continue
                    own: list[bool] = []
                    for node in piece:
                        ins = [own[i] if where == "own" else zero((where, i), entry) for where, i in node.inputs]
                        z = place(node, ins, entry)
                        if z is None:
                            break
                        own.append(z)
                    slot_zero[item] = failed[entry] if entry in failed else own[-1]
                    continue
                entry = node_entry[len(skeleton_zero)]
                if entry in failed:
                    skeleton_zero.append(failed[entry])
                    continue
                if kind == "wired":
                    item = item.options[picks[item.point]]
                z = place(item, [zero(ref, entry) for ref in item.inputs], entry)
                skeleton_zero.append(failed[entry] if z is None else z)
        except Unplaceable:
            return None
        return tuple(events) or None

    def error_text(self, key: tuple | None) -> str | None:
        """The builder's error text of a variant whose key (:meth:`_build_errors`) is ``key``, where
        known: given for that key by a full compile, or made of its merges' errors as
        ``nasdsl.spec.raise_errors`` makes them (one each, in the order of their location, each
        place once) where a full compile gave each of them."""
        if key is None:
            return None
        known = self.errors.get(key)
        if known is not None:
            return known
        kept = self._reported(key)
        if kept is None or any(e not in self.lines for e in kept):
            return None
        return "\n".join(self.lines[e] for e in kept)

    def learn(self, key: tuple, text: str) -> None:
        """Keep the error text a full compile gave for ``key``, and each merge's line of it."""
        self.errors[key] = text
        kept = self._reported(key)
        lines = text.split("\n")
        if kept is not None and len(kept) == len(lines):
            self.lines.update(zip(kept, lines, strict=True))

    def _reported(self, key: tuple) -> list | None:
        """The errors of ``key`` the builder reports, in its order (each place once, by location)."""
        branches = self.entries[4] if self.entries is not None else {}
        places = []
        for name, k in key:
            found = branches.get(name)
            if found is None or k >= len(found) or found[k][0] is None:
                return None
            places.append((found[k], (name, k)))
        seen: set = set()
        kept = []
        for place, event in places:
            if place not in seen:
                seen.add(place)
                kept.append((place, event))
        kept.sort(key=lambda x: (x[0][0], x[0][1]))
        return [event for _, event in kept]

    def _agrees(self, picks: tuple[int, ...], outcome, max_params: int) -> bool:
        """Whether the composed figures and hash of a variant equal those of its full compile
        (``outcome``: the shaped graph or the compiler's error)."""
        from nasdsl.figures import figures
        from nasdsl.unique import graph_hash

        try:
            composed, h = self.run(picks, max_params=max_params, want_hash=True)
        except Unplaceable:
            return isinstance(outcome, NasdslError)
        if isinstance(outcome, NasdslError) or isinstance(composed, NasdslError):
            return isinstance(composed, NasdslError) and composed.format() == outcome.format()
        return composed == figures(outcome) and h == graph_hash(outcome)

    # -- evaluating

    def run(self, picks: tuple[int, ...], *, max_params: int, want_hash: bool = False):
        """(Figures or the compiler's error, the hash or None); raises Unplaceable.

        One pass places each node as the builder would (:meth:`_Placed.place`) and computes its type,
        parameters, multiply-adds and depth as it goes; the peak and the hash need the whole list."""
        from nasdsl.figures import Figures

        try:
            return self._run(picks, max_params, want_hash, Figures)
        except Unplaceable as e:
            if e.key is None:
                raise
            raise Unplaceable(self._build_errors(picks)) from None

    def _run(self, picks: tuple[int, ...], max_params: int, want_hash: bool, Figures):
        placed = _Placed(self)
        skeleton_value: list[int] = []
        slot_value: list[int] = [ZERO] * len(self.slots)
        for kind, item in self.skeleton:
            if kind == "slot":
                piece = self.pieces[item][picks[self.slots[item]]]
                if isinstance(piece, int):
                    continue  # a zero
                if isinstance(piece, _ByInput):
                    piece = piece.options[picks[piece.point]]
                if isinstance(piece, _Pass):
                    where, i = piece.source
                    slot_value[item] = skeleton_value[i] if where == "node" else slot_value[i]
                    continue
                own: list[int] = []
                for node in piece:
                    ins = [
                        own[i] if where == "own" else (skeleton_value[i] if where == "node" else slot_value[i])
                        for where, i in node.inputs
                    ]
                    own.append(placed.place(node, ins))
                slot_value[item] = own[-1]
                continue
            if kind == "wired":
                item = item.options[picks[item.point]]
            ins = [skeleton_value[i] if where == "node" else slot_value[i] for where, i in item.inputs]
            skeleton_value.append(placed.place(item, ins))
        outputs = []
        for name, (kind, i) in self.outputs:
            v = skeleton_value[i] if kind == "node" else slot_value[i]
            if v == ZERO:
                error = SpecError(
                    f"the output '{name}' is a zero (nothing): every path to it from the input passes through a "
                    "zero op",
                    location=self.spec.model.loc,
                    path="model",
                )
                return error, None
            outputs.append(v)
        if placed.params > max_params:
            error = LimitError(
                f"the model has {placed.params:,} parameters, above the limit of {max_params:,} "
                "(raise it with --max-params)",
                location=self.spec.model.loc,
                path="model",
            )
            return error, None
        nodes, reads, types = placed.nodes, placed.reads, placed.types
        depth = max(placed.depth, default=0)
        figures = Figures(placed.params, placed.macs, depth, _peak(nodes, reads, types, outputs), placed.params,
                          placed.macs)  # fmt: skip
        return figures, (_hash(nodes, reads, types, outputs) if want_hash else None)


@dataclass(frozen=True)
class _Pass:
    """A piece that makes no nodes: the slot's value is the value it reads (a ``when`` switched its
    block off, as DARTS' skip_connect where it is not strided)."""

    source: tuple[str, int]


class _Placed:
    """The nodes of one variant as they are placed, with their types, counts and depth."""

    __slots__ = ("composer", "nodes", "reads", "types", "depth", "params", "macs")

    def __init__(self, composer: Composer):
        self.composer = composer
        self.nodes: list[_Node] = []
        self.reads: list[tuple[int, ...]] = []
        self.types: list = []
        #: layers with parameters on the longest path to each node
        self.depth: list[int] = []
        self.params = self.macs = 0

    def place(self, node: _Node, ins: list[int]) -> int:
        """Add ``node`` reading ``ins`` by the zero rule; its index, ZERO (it is a zero) or the index of
        the one value it passes on (an ``add`` left with one term)."""
        if node.merge:
            if ZERO in ins:
                if node.op != "add":
                    raise Unplaceable((node.name, ins.index(ZERO)))  # the builder's error at the branch
                ins = [i for i in ins if i != ZERO]
                if not ins:
                    return ZERO
                if len(ins) == 1:
                    return ins[0]  # a merge left with one branch is that branch
                if len(set(ins)) < len(ins):
                    raise Unplaceable  # the builder reads a repeated value through an identity
        elif ins and ins[0] == ZERO:
            if node.template_input:
                raise Unplaceable  # the builder's error (a template's input is a zero): compiled in full
            return ZERO  # an op that reads a zero is a zero
        types = self.types
        if node.op == "input":
            out, p, m = self.composer.input_type, 0, 0
        else:
            in_types = tuple(types[i] for i in ins)
            # types are few and shared: their ids key the cache, which keeps them alive
            key = (id(node), *map(id, in_types))
            shaped = self.composer.shaped
            known = shaped.get(key)
            if known is None:
                out, p, m = _shape(node, in_types)
                if out is not None:  # one object per type: the keys of later nodes stay the same
                    out = self.composer.types.setdefault(out, out)
                known = (out, p, m, in_types)
                if len(shaped) >= CACHE:
                    shaped.clear()
                shaped[key] = known
            out, p, m, _ = known
            if out is None:
                raise Unplaceable  # a shape error: the compiler reports it
        depth = self.depth
        before = max([depth[i] for i in ins], default=0)
        depth.append(before + node.layer)
        self.params += p
        self.macs += m
        self.nodes.append(node)
        self.reads.append(tuple(ins))
        types.append(out)
        return len(self.nodes) - 1


def _shape(node: _Node, in_types: tuple) -> tuple:
    """(output type or None where the shapes do not fit, parameters, multiply-adds) of a node."""
    opdef = OPS[node.op]
    try:
        out = opdef.infer(in_types, node.attrs)
    except NasdslError:
        return (None, 0, 0)
    p = opdef.params(in_types, node.attrs) if opdef.init_params else 0
    return (out, p, opdef.macs(in_types, node.attrs, out))


# ---------------------------------------------------------------------------
# Figures of a list of nodes (as nasdsl.figures.figures and nasdsl.unique.graph_hash compute them)


def _peak(nodes: list[_Node], reads, types, outputs: list[int]) -> int:
    """:func:`nasdsl.figures.peak_activations` of the variant's nodes (all of them run at inference)."""
    n = len(nodes)
    root = list(range(n))
    for j, node in enumerate(nodes):
        ins = reads[j]
        if node.view and ins:
            root[j] = root[ins[0]]
    last = {r: r for r in set(root)}
    for j, ins in enumerate(reads):
        for i in ins:
            r = root[i]
            if last[r] < j:
                last[r] = j
    for o in outputs:
        last[root[o]] = n
    frees: dict[int, int] = {}
    sizes = [math.prod(t.shape) for t in types]
    for r, i in last.items():
        frees[i] = frees.get(i, 0) + sizes[r]
    live = peak = 0
    for step in range(n):
        if root[step] == step:
            live += sizes[step]
        if live > peak:
            peak = live
        live -= frees.get(step, 0)
    return peak


def _hash(nodes: list[_Node], reads, types, outputs: list[int]) -> str:
    """:func:`nasdsl.unique.graph_hash` of the variant's nodes."""
    value: list[str] = []
    passes: list[bool] = []
    for j, (node, ins) in enumerate(zip(nodes, reads, strict=True)):
        if node.op != "input" and passes_on(node.op) and ins:
            value.append(value[ins[0]])
            passes.append(True)
            continue
        terms = [value[i] for i in ins]
        if node.op in COMMUTATIVE:
            terms.sort()
        # graph_hash's repr((op, attributes, shape, terms)), its start made once per node
        text = f"{node.label}{types[j].shape!r}, {terms!r})"
        value.append(hashlib.sha256(text.encode()).hexdigest())
        passes.append(False)
    read: set[int] = set()
    stack = list(outputs)
    while stack:
        s = stack.pop()
        if s in read:
            continue
        read.add(s)
        stack.extend(reads[s])
    kept = sorted(value[s] for s in read if not passes[s])
    whole = repr(([value[o] for o in outputs], kept))
    return hashlib.sha256(whole.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------
# Reading the skeleton and the pieces off compiled graphs


def _option_is_zero(space, picks: tuple[int, ...], i: int, k: int) -> bool | None:
    """Whether option ``k`` of block point ``i`` is a zero (None: its document does not parse)."""
    from nasdsl import document
    from nasdsl.spec import parse_spec

    chosen = list(picks)
    chosen[i] = k
    doc = space.document_of(tuple(chosen))
    try:
        spec = parse_spec(doc, space.file, document.spec_hash(doc), space.files)
    except NasdslError:
        return None
    found = spec.blocks().get(space.points[i].positions[0].spec_path)
    return None if found is None else _is_zero(found, spec)


def _plain_graph(g: nx.DiGraph) -> bool:
    """No training-only heads or layers, no dropout, nothing dormant: the inference graph is the graph."""
    info = ir.info(g)
    if any(o.training_only for o in info.outputs) or info.dormant.graph.number_of_nodes():
        return False
    for _, d in ir.nodes(g):
        if d.phase == "train" or d.op == "zero" or d.when:
            return False
        if d.op != "input" and (d.op not in OPS or OPS[d.op].inference_identity):
            return False
    return True


def _slot_blocks(g: nx.DiGraph, paths: dict[str, int]) -> list[ir.Block] | None:
    """The blocks that stand where a choice between blocks stands, in the order of the tree;
    None when one holds another or is not expanded (switched off)."""
    found: list[ir.Block] = []
    stack: list[tuple[ir.Block, bool]] = [(b, False) for b in reversed(ir.roots(g))]
    while stack:
        b, inside = stack.pop()
        is_slot = b.keypath in paths and b.kind not in ("ref",)
        if is_slot:
            if inside or b.kind == "skip" or b.dormant:
                return None
            found.append(b)
        stack.extend((c, inside or is_slot) for c in reversed(b.children))
    return found


def _skeleton(g: nx.DiGraph, slot_blocks: list[ir.Block]):
    """The nodes of no slot in order, each slot node's slot, and the layout (the order of the skeleton's
    nodes and the slots, a slot where its nodes are); (None, None, None) where a slot's nodes are not
    one run in the order or another slot's path is inside it."""
    slot_of = {b.path: s for s, b in enumerate(slot_blocks)}
    if len(slot_of) < len(slot_blocks):
        return None, None, None
    owner: dict[str, int] = {}
    for n in g:  # a slot's nodes are its path and the names below it
        parts = n.split(".")
        for k in range(1, len(parts) + 1):
            s = slot_of.get(".".join(parts[:k]))
            if s is not None:
                if n in owner:
                    return None, None, None
                owner[n] = s
    layout: list[str | int] = []
    for n in ir.order(g):
        if n not in owner:
            layout.append(n)
        elif not layout or layout[-1] != owner[n]:
            layout.append(owner[n])
    runs = [x for x in layout if isinstance(x, int)]
    if len(runs) != len(set(runs)):
        return None, None, None
    return [x for x in layout if isinstance(x, str)], owner, layout


def _entries(g: nx.DiGraph, names: list[str], index_of: dict[str, int], slot_blocks: list[ir.Block]):
    """(the model entry of each skeleton node, of each slot, the value before each entry: the one it
    passes on when it fails, the merges whose error is the last of their entry) for
    :meth:`Composer._build_errors`; None where that value is inside a slot.

    A merge's error is the last of its entry where no sequence around it inside the entry has a
    later entry that holds a merge other than ``add`` or a template's inputs (which may fail too):
    the builder goes on with those (a repeat stops at the repetition that failed)."""
    model = ir.info(g).model
    children = model.children
    risky = [n for n, d in ir.nodes(g) if d.op in MERGE_OPS and d.op != "add"]
    risky += [n for root in ir.roots(g) for b in ir.walk(root) for n in b.entries]
    lone: set[str] = set()

    def under(path: str, names) -> list[str]:
        return [n for n in names if n == path or n.startswith(path + ".")]

    def visit(b: ir.Block, tainted: bool) -> None:
        goes_on = b.kind == "seq" and b.repeat is None
        for k, c in enumerate(b.children):
            later = goes_on and any(under(x.path, risky) for x in b.children[k + 1 :])
            visit(c, tainted or later)
        if not tainted:
            lone.update(n for n in under(b.path, risky) if not any(under(c.path, [n]) for c in b.children))

    for c in children:
        visit(c, False)
    #: each merge's branches: (location, key path) of the spec block each came from
    branches = {
        b.output: [(x.loc, x.keypath) for x in b.children]
        for root in ir.roots(g)
        for b in ir.walk(root)
        if b.kind == "merge" and b.output in lone
    }
    entry_of = {c.path: e for e, c in enumerate(children)}
    out_of = {b.passed: s for s, b in enumerate(slot_blocks)}

    def entry(name: str) -> int:
        return entry_of.get(name.split(".")[0], -1)

    inputs: list = []
    for e in range(len(children)):
        src = children[e - 1].passed if e else model.inputs[0]
        ref = ("node", index_of[src]) if src in index_of else ("slot", out_of[src]) if src in out_of else None
        if ref is None:
            return None
        inputs.append(ref)
    return [entry(n) for n in names], [entry(b.path) for b in slot_blocks], inputs, lone, branches


def _merges(g: nx.DiGraph) -> set[str]:
    """The nodes that join branches (a merge block's node)."""
    return {b.output for root in ir.roots(g) for b in ir.walk(root) if b.kind == "merge"}


def template_inputs(g: nx.DiGraph) -> set[str]:
    """The nodes that are the inputs of a use of a template of several inputs (its ``entries``)."""
    return {n for root in ir.roots(g) for b in ir.walk(root) for n in b.entries}


def output_refs(g: nx.DiGraph, index_of: dict[str, int], out_of: dict[str, int]) -> list | None:
    """Each output of ``g`` as ``(name, ("node" | "slot", index))``; None where one reads inside a slot."""
    outputs = []
    for o in ir.info(g).outputs:
        ref = ("node", index_of[o.node]) if o.node in index_of else ("slot", out_of.get(o.node, -1))
        if ref[1] < 0:
            return None
        outputs.append((o.name, ref))
    return outputs


def _nodes_reading(g: nx.DiGraph, names: list[str], scopes: tuple, merges: set[str]) -> list[_Node] | None:
    """``names``' nodes, each input a reference ``(kind, index)`` found in the first of ``scopes``
    (``(kind, {node: index})`` pairs) that holds it; None where an input is in none of them."""
    out = []
    held = template_inputs(g)
    for n in names:
        refs = []
        for src in ir.inputs(g, n):
            found = next(((kind, table[src]) for kind, table in scopes if src in table), None)
            if found is None:
                return None
            refs.append(found)
        d = ir.node(g, n)
        out.append(_Node(n, d.op, d.attrs, tuple(refs), n in merges, n in held))
    return out


def _wiring(g: nx.DiGraph, names: list[str], index_of: dict[str, int], out_of: dict[str, int], merges: set[str]):
    """The skeleton's nodes, each reading skeleton nodes or slots; None where one reads inside a slot."""
    return _nodes_reading(g, names, (("node", index_of), ("slot", out_of)), merges)


def _piece(
    g: nx.DiGraph, b: ir.Block, index_of: dict[str, int], out_of: dict[str, int], merges: set[str]
) -> tuple | None:
    """The nodes a slot's block made, reading each other, skeleton nodes or other slots' outputs."""
    names = [n for n in ir.order(g) if n == b.path or n.startswith(b.path + ".")]
    if not names or names[-1] != b.passed:
        return None  # no nodes, or its output is not the last node it made
    own = {n: j for j, n in enumerate(names)}
    nodes = _nodes_reading(g, names, (("own", own), ("node", index_of), ("slot", out_of)), merges)
    return tuple(nodes) if nodes is not None else None


__all__ = ["Composer", "Unplaceable", "ZERO"]
