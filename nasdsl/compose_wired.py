"""Composers for spaces with input choices (nasdsl/compose.py): what each input choice decides, read
from compiled variants.

An input choice (a ``from`` that picks among earlier values, as DARTS' nodes do) changes what
pieces and skeleton nodes read, and a piece itself where its scope's ``index`` gives the position of
what it reads (an op strided where it reads a cell input). :func:`make_wired` compiles the skeleton,
one probe per other option of each input choice (what changes is decided by that choice), and a
grid of the options between blocks against a few options of each input choice (each piece for each
value it reads), and makes the :class:`nasdsl.compose.Composer` whose skeleton nodes and pieces an
input choice decides (:class:`nasdsl.compose._ByInput`).
"""

from __future__ import annotations

import networkx as nx

from nasdsl import ir
from nasdsl.compose import (
    NODE_SHARE,
    ZERO,
    Composer,
    _ByInput,
    _entries,
    _merges,
    _Node,
    _Pass,
    _plain_graph,
    _skeleton,
    _slot_blocks,
    output_refs,
    template_inputs,
)


def make_composer(compile_variant, space, picks, block_points, max_nodes: int, max_params: int, input_points=()):
    """A composer for the variants that share the value choices of ``picks`` (see
    :meth:`nasdsl.compose.Composer.make`), with the input choices ``input_points`` where the space
    has them (:func:`make_wired`), or None."""
    if not input_points:
        return Composer.make(compile_variant, space, picks, block_points, max_nodes, max_params)
    found = Composer.options_of(space, picks, block_points)
    if found is None:
        return None
    _, zero_options, alive_options = found
    wired = Wired(compile_variant, space, picks, block_points, input_points, alive_options)
    return make_wired(Composer, wired, zero_options, max_nodes, max_params)


def make_wired(cls, w: Wired, zero_options: dict[int, set[int]], max_nodes: int, max_params: int):
    """A composer for a space with input choices (a ``from`` that picks among earlier values),
    or None.

    A piece may differ with the value it reads (``index: {j: ...}`` binds its position: a strided
    op where it reads a cell input), and a skeleton node may read other values: what depends on
    which input choice is found from the compiled graphs. The skeleton variant (each choice
    between blocks at its first non-zero option, each input choice at its first) is compiled,
    then one probe per other option of each input choice: a skeleton node or a piece that differs
    in a probe is *decided* by that choice (by two: no composer). Then a grid of variants, the
    r-th non-zero option of every choice between blocks with the m-th of a few options of every
    input choice (enough for each piece it decides to read each of its values), gives each piece
    for each option of the choice that decides it; every piece and wiring read twice must be read
    alike, and every compiled variant's figures, error and hash must be the composer's."""
    space, block_points, input_points = w.space, w.block_points, w.input_points
    base = w.read(w.chosen(0, 0))
    if base is None:
        return None
    structure, spec, found, names, layout, _ = base
    slot_paths = [b.path for b in found]
    index_of = {n: j for j, n in enumerate(names)}
    slots = [w.paths[b.keypath] for b in found]

    def parts(got, reference=None):
        """(wiring, pieces) of a compiled variant read against the skeleton's (``reference``: the
        skeleton's, to tell a value read through a slot that passes it on); None if its layout
        differs from the skeleton's or a read cannot be told."""
        if got is None:
            return None
        g, _, blocks, _, got_layout, made = got
        if [b.path for b in blocks] != slot_paths:
            return None
        empty = {s for s in range(len(blocks)) if s not in made}
        if reference is None and empty:
            return None  # the skeleton's slots each make nodes: their places are its layout
        if got_layout != [x for x in layout if not (isinstance(x, int) and x in empty)]:
            return None
        return _read_parts(g, blocks, made, names, index_of, reference)

    first = parts(base)
    if first is None:
        return None
    wiring, first_pieces = first
    reads = (wiring, [_external(piece) for piece in first_pieces])
    decides_node: dict[int, int] = {}
    decides_slot: dict[int, int] = {}
    probes: dict[tuple[int, int], tuple] = {}
    for i in input_points:
        for m in range(1, len(space.points[i].options)):
            got = parts(w.read(w.chosen(0, 0, i, m)), reads)
            if got is None:
                return None
            probes[i, m] = got
            for j, node in enumerate(got[0]):
                if node != wiring[j] and decides_node.setdefault(j, i) != i:
                    return None
            for s, piece in enumerate(got[1]):
                if piece != first_pieces[s] and decides_slot.setdefault(s, i) != i:
                    return None
    skeleton_nodes: list = list(wiring)
    for j, i in decides_node.items():
        options = [wiring[j] if m == 0 else probes[i, m][0][j] for m in range(len(space.points[i].options))]
        skeleton_nodes[j] = _ByInput(i, options)
    pieces: list[list] = []
    for s, i in enumerate(slots):
        row: list = []
        for k in range(len(space.points[i].options)):
            if k in zero_options[i]:
                row.append(ZERO)
            elif s in decides_slot:
                row.append(_ByInput(decides_slot[s], [None] * len(space.points[decides_slot[s]].options)))
            else:
                row.append(None)
        pieces.append(row)

    def fill(chosen: tuple[int, ...], got) -> bool:
        """Place a compiled variant's pieces; False where one differs from one placed before, or
        its skeleton from the skeleton its input choices give."""
        for j, node in enumerate(got[0]):
            want = skeleton_nodes[j]
            if isinstance(want, _ByInput):
                want = want.options[chosen[want.point]]
            if node != want:
                return False
        for s, piece in enumerate(got[1]):
            row, k = pieces[s], chosen[slots[s]]
            cell = row[k]
            if isinstance(cell, _ByInput):
                same = alike[s][chosen[cell.point]]
                for m, group in enumerate(alike[s]):
                    if group != same:
                        continue
                    if cell.options[m] is None:
                        cell.options[m] = piece
                    elif cell.options[m] != piece:
                        return False
            elif cell is None:
                row[k] = piece
            elif cell != piece:
                return False
        return True

    # a piece is the same block reading the same values (its scope's `index` is the position of
    # what it reads): the options of an input choice under which a slot reads alike give it one
    # piece, so the grid needs only enough options of each input choice to show each slot each
    # of its reads (a greedy cover)
    alike: dict[int, list[frozenset]] = {}
    for s, i in decides_slot.items():
        alike[s] = [
            frozenset(_external(first_pieces[s] if m == 0 else probes[i, m][1][s]))
            for m in range(len(space.points[i].options))
        ]
    cover: dict[int, list[int]] = {}
    for i in input_points:
        decided = [s for s, point in decides_slot.items() if point == i]
        needed = {(s, alike[s][m]) for s in decided for m in range(len(space.points[i].options))}
        cover[i] = []
        while needed:
            best = max(
                range(len(space.points[i].options)), key=lambda m: len({(s, alike[s][m]) for s in decided} & needed)
            )
            cover[i].append(best)
            needed -= {(s, alike[s][best]) for s in decided}
        cover[i] = cover[i] or [0]
    if not fill(w.chosen(0, 0), first):
        return None
    for (i, m), got in probes.items():
        if not fill(w.chosen(0, 0, i, m), got):
            return None
    rows = max(len(w.alive[i]) for i in block_points)
    columns = max(len(c) for c in cover.values())
    done = {w.chosen(0, 0)}
    for r in range(rows):
        for c in range(columns):
            chosen = w.chosen(r, c, cover=cover)
            if chosen in done:
                continue
            done.add(chosen)
            got = parts(w.read(chosen), reads)
            if got is None or not fill(chosen, got):
                return None
    for row in pieces:
        for cell in row:
            if cell is None or (isinstance(cell, _ByInput) and None in cell.options):
                return None  # an option no compiled variant placed
    largest = len(names) + sum(max(map(_size, row)) for row in pieces)
    if largest > NODE_SHARE * max_nodes:
        return None
    order = [
        (("wired" if isinstance(skeleton_nodes[index_of[x]], _ByInput) else "node"), skeleton_nodes[index_of[x]])
        if isinstance(x, str)
        else ("slot", x)
        for x in layout
    ]
    out_of = {b.passed: s for s, b in enumerate(found)}
    outputs = output_refs(structure, index_of, out_of)
    if outputs is None:
        return None
    input_type = ir.node(structure, ir.info(structure).input).type
    composer = cls(spec, order, slots, pieces, outputs, input_type)
    composer.entries = _entries(structure, names, index_of, found)
    return composer if all(composer._agrees(p, outcome, max_params) for p, outcome in w.compiled) else None


def _size(x) -> int:
    """Nodes a piece may place."""
    if isinstance(x, _ByInput):
        return max(map(_size, x.options))
    return 1 if isinstance(x, (int, _Pass)) else len(x)


def _external(piece) -> set[tuple[str, int]]:
    """What a piece reads from outside it."""
    if isinstance(piece, _Pass):
        return {piece.source}
    return {ref for node in piece for ref in node.inputs if ref[0] != "own"}


def _read_parts(g: nx.DiGraph, blocks: list, made: dict, names, index_of: dict[str, int], reference):
    """The skeleton's nodes and each slot's piece in a compiled variant, as :func:`_wiring` and
    :func:`_piece` read them (``made``: the nodes of each slot, in order); a slot with none is a
    :class:`_Pass`. A value such a
    slot passes on is read through the slot where ``reference`` (the skeleton's wiring and what each
    slot's piece reads there) reads that slot, else as the value itself; None where that cannot be
    told or a node reads inside a slot."""
    empty = {s for s in range(len(blocks)) if s not in made}
    out_of = {b.passed: s for s, b in enumerate(blocks) if s not in empty}
    passed: dict[str, list[int]] = {}
    for s in sorted(empty):
        passed.setdefault(blocks[s].passed, []).append(s)
    merges = _merges(g)
    held = template_inputs(g)

    def ref(src: str, wanted, reader: int = -1) -> tuple[str, int] | None:
        """``wanted``: the ref the reference has at this place, or the set the reader (a slot, or -1)
        reads there; the value itself where the reference reads no slot that passes it on."""
        plain = ("slot", out_of[src]) if src in out_of else ("node", index_of[src]) if src in index_of else None
        through = [("slot", s) for s in passed.get(src, ()) if s != reader]
        if not through:
            return plain
        if isinstance(wanted, tuple):
            return wanted if wanted in through else plain
        matched = [c for c in through if c in wanted]
        if len(matched) > 1:
            return None
        return matched[0] if matched else plain

    wiring = []
    for j, n in enumerate(names):
        expected = reference[0][j].inputs if reference is not None else None
        d = ir.node(g, n)
        refs = []
        for pos, src in enumerate(ir.inputs(g, n)):
            want = expected[pos] if expected is not None and pos < len(expected) else None
            r = ref(src, want) if want is not None else ref(src, set())
            if r is None:
                return None
            refs.append(r)
        wiring.append(_Node(n, d.op, d.attrs, tuple(refs), n in merges, n in held))
    pieces: list = []
    for s, b in enumerate(blocks):
        wanted = reference[1][s] if reference is not None else set()
        if s in empty:
            source = ref(b.passed, wanted, s)
            if source is None:
                return None
            pieces.append(_Pass(source))
            continue
        if made[s][-1] != b.passed:
            return None
        own = {n: j for j, n in enumerate(made[s])}
        nodes = []
        for n in made[s]:
            refs = []
            for src in ir.inputs(g, n):
                r = ("own", own[src]) if src in own else ref(src, wanted, s)
                if r is None:
                    return None
                refs.append(r)
            d = ir.node(g, n)
            nodes.append(_Node(n, d.op, d.attrs, tuple(refs), n in merges, n in held))
        pieces.append(tuple(nodes))
    return wiring, pieces


class Wired:
    """The variants :func:`make_wired` compiles, and what it reads off each."""

    def __init__(self, compile_variant, space, picks, block_points, input_points, alive: dict[int, list[int]]):
        self.compile_variant = compile_variant
        self.space = space
        self.picks = picks
        self.block_points = block_points
        self.input_points = input_points
        self.alive = alive
        self.paths = {pos.spec_path: i for i in block_points for pos in space.points[i].positions}
        #: each variant compiled, to check the composer against: (picks, shaped graph or error)
        self.compiled: list = []

    def chosen(
        self, r: int, m: int, point: int | None = None, option: int = 0, cover: dict | None = None
    ) -> tuple[int, ...]:
        """The picks with the r-th non-zero option of every choice between blocks and the m-th option
        of every input choice (each modulo its options; with ``cover``, the m-th of the options it
        lists for that choice), ``point`` at ``option``."""
        out = list(self.picks)
        for i in self.block_points:
            out[i] = self.alive[i][r % len(self.alive[i])]
        for i in self.input_points:
            out[i] = cover[i][m % len(cover[i])] if cover else m % len(self.space.points[i].options)
        if point is not None:
            out[point] = option
        return tuple(out)

    def read(self, chosen: tuple[int, ...]):
        """(graph, spec, slot blocks, skeleton node names, layout) of a compiled variant; None where
        it does not build or is no plain graph."""
        structure, outcome, spec = self.compile_variant(chosen)
        if structure is None or not _plain_graph(structure):
            return None
        self.compiled.append((chosen, outcome))
        found = _slot_blocks(structure, self.paths)
        if found is None:
            return None
        names, owner, layout = _skeleton(structure, found)
        if names is None:
            return None
        made: dict[int, list[str]] = {}
        for n in ir.order(structure):
            if n in owner:
                made.setdefault(owner[n], []).append(n)
        return structure, spec, found, names, layout, made


__all__ = ["Wired", "make_wired"]
