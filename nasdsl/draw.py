"""Pictures of an architecture: the graph IR as Graphviz DOT text, laid out by Graphviz's ``dot``.

:func:`to_dot` turns a compiled graph into DOT text (pure, deterministic: the
same graph and options give the same bytes); :func:`render` runs ``dot`` on it
(SVG, PNG or PDF bytes); :func:`to_html` wraps an SVG in a self-contained page.
``docs/drawing.md`` describes the pictures and the options.

What a picture shows
    One box per *unit*: a top-level model entry, an output head, a template
    use or an op. ``depth`` says how many levels of template uses are opened:
    ``0`` draws the top-level entries (and heads) as boxes, each further level
    opens the template uses one deeper, ``None`` opens everything down to the
    ops. An opened unit is a cluster labelled like its box; the named or
    listed branches of a merge are clusters of their own, emitted in branch
    order, so that ``dot`` sets them side by side. Edges carry the shape of the
    tensor they move (``192x28x28``). Training-only parts (phase ``train``:
    GoogLeNet's auxiliary heads) are dashed and grey, and absent with
    ``inference``.

Every name and value from the spec reaches the DOT text through :func:`_text`
(HTML-like labels) or :func:`_quote` (identifiers), and the page through
:func:`html.escape`, so that no name can end a string, a label or the page.
"""

from __future__ import annotations

import html
import os
import re
import shutil
from dataclasses import dataclass, field

import networkx as nx

from nasdsl import ir
from nasdsl.errors import NasdslError
from nasdsl.ops import OPS, REQUIRED
from nasdsl.passes.shapes import macs, params

#: What :func:`render` can produce (DOT text needs no rendering).
FORMATS = ("svg", "png", "pdf")
#: What ``show`` may hold.
SHOW = ("params", "macs")
RANKDIRS = ("TB", "LR")
#: The most boxes and edges :func:`render` hands to ``dot`` (whose layout time grows faster than the picture).
MAX_ITEMS = 10_000
INSTALL = "install Graphviz's dot (apt-get install graphviz / brew install graphviz)"

# Colours: template uses blue, ops grey, merges sand; diff: added green, removed red, changed orange.
_FILL = {"use": "#dbe8f7", "op": "#f4f4f4", "merge": "#fbefd0", "seq": "#e8e8f4", "io": "#ffffff"}
_CLUSTER = {"use": "#5b84b1", "seq": "#8a8ab8", "branch": "#b8b8b8"}
_TRAIN = "#9a9a9a"
_DIFF = {
    "added": ("#2e7d32", "#d9f2d9"),
    "removed": ("#c62828", "#fadada"),
    "changed": ("#e65100", "#ffe3c2"),
}


class DrawError(NasdslError):
    """A picture that cannot be made: an unknown option value, or no Graphviz to render it."""


# ---------------------------------------------------------------------------
# Escaping


def _visible(text: str) -> str:
    """Control and other unprintable characters shown as their escapes (``\\x1b``, ``\\n``)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def _text(text: object) -> str:
    """Text for an HTML-like label: every markup character as an entity, backslashes doubled
    (``dot`` reads ``\\\\`` in such a label as one backslash)."""
    return html.escape(_visible(str(text)), quote=True).replace("\\", "\\\\")


def _quote(text: str) -> str:
    """A DOT quoted string (identifiers): backslashes and quotes escaped, nothing unprintable."""
    return '"' + _visible(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, tuple):
        if len(v) == 2 and v[0] == v[1]:
            return _value(v[0])
        return "(" + ", ".join(_value(x) for x in v) + ")"
    if isinstance(v, float):
        return f"{v:g}"
    if v is None:  # a null argument, as the spec writes it
        return "null"
    return str(v)


def shape_text(shape: tuple[int, ...] | None) -> str:
    """``(192, 28, 28)`` as ``192x28x28``."""
    return "?" if shape is None else "x".join(str(d) for d in shape)


# ---------------------------------------------------------------------------
# Labels


def _name(block: ir.Block) -> str:
    return f"[{block.name}]" if block.name.isdigit() else block.name


def _title(g: nx.DiGraph, block: ir.Block) -> tuple[str, str, str]:
    """(kind, name, details) of a block's box: ``("Inception", "inception4a", "(192, 96, ...)")``."""
    if block.kind == "use":
        return block.template or "", _name(block), "(" + ", ".join(_value(a.value) for a in block.args) + ")"
    if block.kind == "op":
        data = ir.node(g, block.path)
        return data.op, "" if block.name == data.op else _name(block), _attributes(data)
    if block.kind == "merge":
        return block.op or "", _name(block), f"of {_contents(g, block)}"
    return "sequence", _name(block), _contents(g, block)


def _contents(g: nx.DiGraph, block: ir.Block) -> str:
    """What a sequence or merge holds, runs counted: ``(DownsampleBlock, BasicBlock × 3)``."""
    runs: list[list] = []
    for child in block.children:
        if child.kind == "ref" and not child.dormant and child.target:
            what = child.target.rsplit(".", 1)[-1]  # a merge of named values (ViT's class token and patch tokens)
        elif not _live(child):
            continue
        else:
            what = child.template if child.kind == "use" else child.op if child.kind == "op" else child.kind
        if child.kind == "op" and child.path in g:
            what = ir.node(g, child.path).op
        if runs and runs[-1][0] == what:
            runs[-1][1] += 1
        else:
            runs.append([what, 1])
    parts = [f"{what} × {n}" if n > 1 else str(what) for what, n in runs]
    if len(parts) > 4:
        parts = [*parts[:3], f"… {sum(n for _, n in runs)} blocks"]
    return "(" + ", ".join(parts) + ")"


def _attributes(data: dict) -> str:
    """The attributes a spec wrote that differ from the op's defaults: ``out=208 kernel=3 padding=1``."""
    spec, attrs, shown = OPS[data.op], data.attrs, []
    for k in data.given:
        a = spec.attr_index.get(k)
        default = a.default if a is None or not callable(a.default) else a.default(attrs)
        if a is None or a.default is REQUIRED or attrs[k] != default:
            shown.append(f"{k}={_value(attrs[k])}")
    return " ".join(shown)


def _plain(kind: str, name: str, details: str) -> str:
    return " ".join(p for p in (kind, name, details) if p)


def _label(kind: str, name: str, details: str, notes: list[str]) -> str:
    """An HTML-like label: the head line (kind, name, details) in bold, then each note small.
    Each line is written in one font, so that Graphviz writes it as one SVG text element: a
    line of two runs (a bold kind, then the rest) lost the space between them in some
    renderers ("Inceptioninception3a" in rsvg-convert)."""
    head = " ".join(p for p in (kind, name, details) if p)
    lines = [f"<B>{_text(head)}</B>"] if head else []
    lines += [f'<FONT POINT-SIZE="9">{_text(n)}</FONT>' for n in notes]
    return "<" + "<BR/>".join(lines or [""]) + ">"


def _figures(g: nx.DiGraph, nodes: list[str], show: tuple[str, ...]) -> list[str]:
    parts = []
    if "params" in show:
        parts.append(f"{sum(params(g, n) for n in nodes):,} params")
    if "macs" in show:
        parts.append(f"{sum(macs(g, n) for n in nodes):,} MACs")
    return [", ".join(parts)] if parts else []


# ---------------------------------------------------------------------------
# The block tree as units


def members(g: nx.DiGraph, block: ir.Block) -> list[str]:
    """The nodes of the main graph that ``block`` made, in the tree's order."""
    found: dict[str, None] = {}
    for b in ir.walk(block):
        if b.kind in ("op", "merge") and not b.dormant and b.path in g:
            found[b.path] = None
    return list(found)


def _live(block: ir.Block) -> bool:
    return block.kind not in ("skip", "ref") and not block.dormant


def entries(g: nx.DiGraph) -> list[ir.Block]:
    """The top-level units: the model's live entries, then the live outputs' heads."""
    model = [b for b in ir.info(g).model.children if _live(b)]
    return model + [o.head for o in ir.info(g).outputs if o.head is not None and _live(o.head)]


def _body(block: ir.Block) -> ir.Block:
    return block.children[0] if block.kind == "use" and block.children else block


@dataclass
class _Diff:
    """What the other spec says about each top-level entry of this one."""

    status: dict[str, tuple[str, str]]  # entry path: ("added" | "changed", note)
    removed: list[ir.Block]
    other: nx.DiGraph


def _signature(g: nx.DiGraph, block: ir.Block) -> tuple:
    nodes = members(g, block)
    inside = set(nodes)
    body = []
    for n in nodes:
        data = ir.node(g, n)
        attrs = tuple(sorted((k, repr(v)) for k, v in data.attrs.items()))
        reads = tuple(u if u in inside else "" for u in ir.inputs(g, n))
        body.append((n[len(block.path) :], data.op, attrs, data.shape, reads, data.phase))
    args = tuple((a.name, repr(a.value)) for a in block.args)
    ins = tuple(ir.node(g, n).shape for n in block.inputs if n in g)
    return (block.kind, block.template, block.op, args, ins, tuple(body))


def _change(g: nx.DiGraph, new: ir.Block, other: nx.DiGraph, old: ir.Block) -> str:
    """What changed about an entry, in a few words: its arguments, its output or input shape, or its inside."""
    (kind, _, details), (was_kind, _, was_details) = _title(g, new), _title(other, old)
    if (kind, details) != (was_kind, was_details):
        return f"was {was_kind} {was_details}".strip()
    shape, was_shape = ir.node(g, new.output).shape, ir.node(other, old.output).shape
    if shape != was_shape:
        return f"output was {shape_text(was_shape)}"
    ins = [shape_text(ir.node(g, n).shape) for n in new.inputs if n in g]
    was_ins = [shape_text(ir.node(other, n).shape) for n in old.inputs if n in other]
    if ins != was_ins:
        return f"input was {', '.join(was_ins)}"
    return "changed inside"


def compare(g: nx.DiGraph, other: nx.DiGraph, *, inference: bool = False) -> _Diff:
    """Top-level entries of ``g`` added to or changed from ``other``, and those of ``other`` that ``g``
    lacks; with ``inference``, training-only entries on either side are left out."""
    theirs = {b.path: b for b in entries(other)}
    ours = {b.path for b in entries(g)}
    status: dict[str, tuple[str, str]] = {}
    for b in entries(g):
        if inference and b.phase == "train":
            continue
        old = theirs.get(b.path)
        if old is None:
            status[b.path] = ("added", "added")
        elif _signature(g, b) != _signature(other, old):
            status[b.path] = ("changed", _change(g, b, other, old))
    removed = [b for b in entries(other) if b.path not in ours and not (inference and b.phase == "train")]
    return _Diff(status, removed, other)


# ---------------------------------------------------------------------------
# DOT


@dataclass
class _Drawer:
    g: nx.DiGraph
    depth: int | None
    roll: bool
    show: tuple[str, ...]
    inference: bool
    diff: _Diff | None
    lines: list[str] = field(default_factory=list)
    unit: dict[str, str] = field(default_factory=dict)  # graph node -> DOT node id
    train: set[str] = field(default_factory=set)  # DOT node ids of training-only units
    copy: dict[str, dict[int, int]] = field(default_factory=dict)  # node -> {rolled-up run: which copy}
    ranks: list[str] = field(default_factory=list)  # rank=same chains that keep branches in order
    clusters: int = 0
    groups: int = 0

    # -- nodes and clusters

    def hidden(self, phase: str) -> bool:
        return self.inference and phase == "train"

    def box(self, pad: str, uid: str, label: str, fill: str, phase: str, extra: str = "", shape: str = "") -> None:
        style = "filled" if shape else "rounded,filled"
        attrs = f"label={label}, fillcolor={_quote(fill)}"
        if shape:
            attrs += f", shape={shape}"
        if phase == "train":
            style += ",dashed"
            attrs += f", color={_quote(_TRAIN)}, fontcolor={_quote('#555555')}"
            self.train.add(uid)
        self.lines.append(f"{pad}{_quote(uid)} [{attrs}, style={_quote(style)}{extra}];")

    def colours(self, path: str | None) -> tuple[str, str] | None:
        if self.diff is None or path is None or path not in self.diff.status:
            return None
        return _DIFF[self.diff.status[path][0]]

    def notes(self, block: ir.Block, nodes: list[str], entry: bool, phase: str) -> list[str]:
        notes = _figures(self.g, nodes, self.show)
        if phase == "train":
            notes.append("training only")
        elif phase == "eval":
            notes.append("inference only")
        if entry and self.diff is not None and block.path in self.diff.status:
            notes.append(self.diff.status[block.path][1])
        return notes

    def heading(self, group: list[ir.Block]) -> tuple[str, str, str]:
        """The title of a box or cluster standing for ``group`` (one block, or a rolled-up run)."""
        first, last = group[0], group[-1]
        kind, name, details = _title(self.g, first)
        if len(group) > 1:
            both = first.name.isdigit() and last.name.isdigit()
            name = f"[{first.name}–{last.name}]" if both else f"{name}–{_name(last)}"
            details = f"{details} × {len(group)}".strip()
        return kind, name, details

    def collapsed(self, group: list[ir.Block], pad: str, entry: bool) -> None:
        block = group[0]
        every = [n for b in group for n in members(self.g, b)]
        nodes = [n for n in every if not self.hidden(ir.node(self.g, n).phase)]
        if block.kind == "op":
            phase = ir.node(self.g, block.path).phase
            fill = _FILL["op"]
        else:
            phase = block.phase
            fill = _FILL["use" if block.kind == "use" else ("merge" if block.kind == "merge" else "seq")]
        kind, name, details = self.heading(group)
        extra = ""
        colour = self.colours(block.path) if entry else None
        if colour is not None:
            fill = colour[1]
            extra = f", color={_quote(colour[0])}, penwidth=2"
        notes = self.notes(block, nodes, entry, phase)
        if block.kind == "op" and details:
            details, notes = "", [details, *notes]
        self.box(pad, block.path, _label(kind, name, details, notes), fill, phase, extra)
        for n in nodes:
            self.unit[n] = block.path

    def unit_block(self, group: list[ir.Block], level: int, pad: str, entry: bool = False) -> None:
        """A top-level entry, a head or a template use (or a rolled-up run of them): a box, or opened as a cluster."""
        block = group[0]
        if block.kind == "op":
            if block.path in self.g and not self.hidden(ir.node(self.g, block.path).phase):
                self.collapsed(group, pad, entry)
        elif self.depth is not None and level >= self.depth:
            self.collapsed(group, pad, entry)
        else:
            self.cluster(group, level, pad, entry)
        if len(group) > 1:
            self.roll_up(group)

    def cluster(self, group: list[ir.Block], level: int, pad: str, entry: bool) -> None:
        block = group[0]
        self.clusters += 1
        nodes = [n for b in group for n in members(self.g, b)]
        phase = block.phase
        title = _label(*self.heading(group), self.notes(block, nodes, entry, phase))
        style = "rounded,dashed" if phase == "train" else "rounded"
        colour = _TRAIN if phase == "train" else _CLUSTER["use" if block.kind == "use" else "seq"]
        extra = ""
        diff = self.colours(block.path) if entry else None
        if diff is not None:
            colour, fill = diff
            style += ",filled"
            extra = f" fillcolor={_quote(fill)}; penwidth=2;"
        self.lines.append(f"{pad}subgraph cluster_{self.clusters} {{")
        self.lines.append(f"{pad}  label={title}; labeljust=l; style={_quote(style)}; color={_quote(colour)};{extra}")
        self.inner(_body(block), level + 1, pad + "  ", branch=False)
        self.lines.append(f"{pad}}}")

    def inner(self, block: ir.Block, level: int, pad: str, branch: bool) -> None:
        """The structure inside an opened unit: sequences and merges are drawn through."""
        if not _live(block) or self.hidden(block.phase):
            return
        if block.kind in ("use", "op"):
            self.unit_block([block], level, pad)
        elif block.kind == "merge":
            for child in block.children:
                self.inner(child, level, pad, branch=True)
            self.side_by_side(block)
            if block.path in self.g:
                data = ir.node(self.g, block.path)
                label = _label(data.op, "", "", self.notes(block, [block.path], False, data.phase))
                self.box(pad, block.path, label, _FILL["merge"], data.phase)
                self.unit[block.path] = block.path
        elif branch and sum(1 for c in block.children if _live(c)) > 1:
            self.clusters += 1
            self.lines.append(f"{pad}subgraph cluster_{self.clusters} {{")
            self.lines.append(
                f"{pad}  label={_label('', _name(block), '', [])}; labeljust=l; "
                f"style={_quote('rounded,dashed')}; color={_quote(_CLUSTER['branch'])};"
            )
            self.sequence(block.children, level, pad + "  ")
            self.lines.append(f"{pad}}}")
        else:
            self.sequence(block.children, level, pad)

    def side_by_side(self, merge: ir.Block) -> None:
        """Keep a merge's branches in branch order across the page: their first units on one rank, in order."""
        heads: list[str] = []
        for child in merge.children:
            for n in members(self.g, child) if _live(child) else []:
                if n in self.unit and all(u in merge.inputs for u in ir.inputs(self.g, n)):
                    if self.unit[n] not in heads:
                        heads.append(self.unit[n])
                    break
        if len(heads) > 1:
            chain = " -> ".join(_quote(h) for h in heads)
            self.ranks.append(f"  {{ rank=same; {chain} [style=invis]; }}")

    def sequence(self, children: tuple[ir.Block, ...] | list[ir.Block], level: int, pad: str, top=False) -> None:
        for group in self.runs([c for c in children if _live(c) and not self.hidden(c.phase)]):
            if len(group) > 1 or top:
                self.unit_block(group, level, pad, entry=top)
            else:
                self.inner(group[0], level, pad, branch=False)

    def roll_up(self, group: list[ir.Block]) -> None:
        """The nodes of a rolled-up run's later copies are drawn by the first copy's units."""
        first = group[0]
        self.groups += 1
        for k, member in enumerate(group):
            for n in members(self.g, member):
                twin = first.path + n[len(member.path) :]
                if k and twin in self.unit:
                    self.unit[n] = self.unit[twin]
                if k:  # runs inside the first copy are runs inside this one too
                    self.copy.setdefault(n, {}).update(self.copy.get(twin, {}))
                self.copy.setdefault(n, {})[self.groups] = k

    # -- rolling

    def runs(self, blocks: list[ir.Block]) -> list[list[ir.Block]]:
        """Consecutive identical template uses grouped (with ``roll``), else one block a group."""
        out: list[list[ir.Block]] = []
        for b in blocks:
            if self.roll and out and self.same(out[-1][-1], b):
                out[-1].append(b)
            else:
                out.append([b])
        return out

    def same(self, a: ir.Block, b: ir.Block) -> bool:
        if a.kind != "use" or b.kind != "use" or a.template != b.template or a.phase != b.phase:
            return False
        if tuple(repr(x.value) for x in a.args) != tuple(repr(x.value) for x in b.args):
            return False
        if ir.node(self.g, a.output).shape != ir.node(self.g, b.output).shape or b.inputs != (a.output,):
            return False
        if self.diff is not None and self.diff.status.get(a.path) != self.diff.status.get(b.path):
            return False
        inside = set(members(self.g, a)) | set(members(self.g, b))
        if any(o.node in inside and o.node != b.output for o in ir.info(self.g).outputs):
            return False
        return all(s in inside for n in members(self.g, a) for s in self.g.successors(n))


#: ops that read their input for its batch size alone (a class token, a position embedding):
#: no edge is drawn into them, which would show a flow of data that does not happen
_BATCH_ONLY = frozenset({"parameter"})


def _edges(d: _Drawer, g: nx.DiGraph) -> list[tuple[str, str, str]]:
    """(source id, target id, label) for every edge between two units, once, in graph order."""
    seen: dict[tuple[str, str], list[str]] = {}
    for v in ir.order(g):
        if v not in d.unit:
            continue
        if ir.node(g, v).op in _BATCH_ONLY:
            continue  # no data flows in: a learned tensor takes only the batch size from its input
        for u in ir.inputs(g, v):
            while d.inference and u not in d.unit and ir.node(g, u).phase == "train" and ir.inputs(g, u):
                u = ir.inputs(g, u)[0]  # a hidden training-only node passes its input on
            while u not in d.unit and ir.node(g, u).op == "identity" and ir.inputs(g, u):
                u = ir.inputs(g, u)[0]  # an input of a template with several (Block.entries): its value
            if u not in d.unit or d.unit[u] == d.unit[v]:
                continue
            runs = d.copy.get(u, {})
            if any(runs[r] != k for r, k in d.copy.get(v, {}).items() if r in runs):
                continue  # between two copies of a rolled-up run
            labels = seen.setdefault((d.unit[u], d.unit[v]), [])
            text = shape_text(ir.node(g, u).shape)
            if text not in labels:
                labels.append(text)
    return [(a, b, ", ".join(labels)) for (a, b), labels in seen.items()]


def _find(g: nx.DiGraph, path: str) -> ir.Block:
    for root in [ir.info(g).model, *(o.head for o in ir.info(g).outputs if o.head is not None)]:
        for b in ir.walk(root):
            if b.path == path and b.path and _live(b):
                return b
    names = ", ".join(b.path for b in entries(g)[:4])
    raise DrawError(f"no block {path!r} to focus on; expected a block's path such as {names}", path="--focus")


def _outside(name: str, focus: str) -> str:
    """The part of an outside node's path that tells where it is, seen from the focused block."""
    mine, theirs = focus.split("."), name.split(".")
    common = 0
    while common < min(len(mine), len(theirs)) and mine[common] == theirs[common]:
        common += 1
    return ".".join(theirs[: common + 1])


def to_dot(
    g: nx.DiGraph,
    *,
    depth: int | None = None,
    roll: bool = False,
    show: tuple[str, ...] | list[str] = (),
    inference: bool = False,
    rankdir: str = "TB",
    focus: str | None = None,
    diff: nx.DiGraph | None = None,
    diff_name: str = "",
) -> str:
    """The architecture of ``g`` (the graph IR or a ``Compiled``) as DOT text.

    ``depth``: levels of template uses to open (``0``: top-level entries only;
    ``None``: every op). ``roll``: draw consecutive uses of one template with
    the same arguments and output shape once, as ``× N``. ``show``: ``params``
    and/or ``macs`` in every box. ``inference``: leave out training-only parts.
    ``rankdir``: ``TB`` (top to bottom) or ``LR``. ``focus``: the path of one
    block to draw alone (``inception4a``), with its inputs and readers as
    stubs. ``diff``: another spec's graph: top-level entries added (green),
    changed (orange) and removed (red, drawn from ``diff``) from it to ``g``;
    ``diff_name`` names it in the title (default: its file's base name).
    """
    g = ir.as_graph(g)
    show = tuple(show)
    for s in show:
        if s not in SHOW:
            raise DrawError(f"cannot show {s!r}; expected some of {', '.join(SHOW)}", path="--show")
    if rankdir not in RANKDIRS:
        raise DrawError(f"expected TB or LR, got {rankdir!r}", path="--rankdir")
    if depth is not None and depth < 0:
        raise DrawError(f"expected a level >= 0, got {depth}", path="--depth")
    if diff is not None and focus is not None:
        raise DrawError("a difference is drawn for the whole model; leave out --focus", path="--diff")
    compared = compare(g, ir.as_graph(diff), inference=inference) if diff is not None else None
    d = _Drawer(g, depth, roll, show, inference, compared)
    title = _text(ir.info(g).name)
    if d.diff is not None:
        counts = {k: sum(1 for s, _ in d.diff.status.values() if s == k) for k in ("added", "changed")}
        other = diff_name or os.path.basename(str(ir.info(d.diff.other).file))
        title += _text(
            f" against {other}: {counts['added']} added, {len(d.diff.removed)} removed, {counts['changed']} changed"
        )
    head = [
        "digraph nasdsl {",
        f'  graph [rankdir={rankdir}, label=<<B>{title}</B>>, labelloc=t, fontname="Helvetica", fontsize=12,',
        "         nodesep=0.25, ranksep=0.3, ordering=out, newrank=true];",
        '  node [shape=box, fontname="Helvetica", fontsize=10, margin="0.08,0.04", height=0.3];',
        '  edge [fontname="Helvetica", fontsize=8, color="#555555", arrowsize=0.6];',
    ]
    start = ir.info(g).input
    edges: list[tuple[str, str, str]] = []
    if focus is None:
        d.box("  ", start, _label("input", start, "", []), _FILL["io"], "both", shape="oval")
        d.unit[start] = start
        d.sequence(entries(g), 0, "  ", top=True)
    else:
        block = _find(g, focus)
        if d.hidden(block.phase):
            raise DrawError(f"{focus!r} runs in training only; leave out --inference", path="--focus")
        if block.kind == "op":
            d.unit_block([block], 0, "  ")
        else:
            d.cluster([block], -1, "  ", False)
        edges.extend(_stubs(d, g, focus))
    for o in ir.info(g).outputs:
        if o.node in d.unit and not (inference and o.training_only):
            phase = "train" if o.training_only else "both"
            label = _label("output", o.name, "", ["training only"] if o.training_only else [])
            d.box("  ", "output:" + o.name, label, _FILL["io"], phase, shape="oval")
            edges.append((d.unit[o.node], "output:" + o.name, shape_text(ir.node(g, o.node).shape)))
    if d.diff is not None:
        for b in d.diff.removed:
            kind, name, details = _title(d.diff.other, b)
            notes = [*_figures(d.diff.other, members(d.diff.other, b), show), "removed"]
            colour, fill = _DIFF["removed"]
            d.lines.append(
                f"  {_quote('removed:' + b.path)} [label={_label(kind, name, details, notes)}, "
                f'fillcolor="{fill}", color="{colour}", style="rounded,filled,dashed", penwidth=2];'
            )
    body = []
    for u, v, text in dict.fromkeys([*_edges(d, g), *edges]):
        style = f', style=dashed, color="{_TRAIN}", weight=0' if u in d.train or v in d.train else ""
        body.append(f"  {_quote(u)} -> {_quote(v)} [label={_quote(' ' + text)}{style}];")
    if d.diff is not None:
        body.extend(_removed_edges(d, g))
    return "\n".join([*head, *d.lines, *d.ranks, *body, "}"]) + "\n"


def _stubs(d: _Drawer, g: nx.DiGraph, focus: str) -> list[tuple[str, str, str]]:
    """Ovals for what the focused block reads and what reads it; the edges to and from them."""
    inside = set(d.unit)
    names: list[str] = []
    edges: list[tuple[str, str, str]] = []
    for v in ir.order(g):
        for u in ir.inputs(g, v):
            if (u in inside) == (v in inside) or d.hidden(ir.node(g, u).phase) or d.hidden(ir.node(g, v).phase):
                continue
            name = _outside(u if v in inside else v, focus)
            names.append(name)
            stub, text = "outside:" + name, shape_text(ir.node(g, u).shape)
            edges.append((stub, d.unit[v], text) if v in inside else (d.unit[u], stub, text))
    for name in dict.fromkeys(names):
        d.box("  ", "outside:" + name, _label("", name, "", []), "#eeeeee", "both", shape="oval")
    return edges


def _removed_edges(d: _Drawer, g: nx.DiGraph) -> list[str]:
    """Dashed red edges from and to each removed entry: to the units its neighbours in the other spec are now."""
    assert d.diff is not None
    other = d.diff.other
    colour = _DIFF["removed"][0]
    out: list[str] = []
    for b in d.diff.removed:
        rid = "removed:" + b.path
        nodes = set(members(other, b))
        pairs: list[tuple[str, str, str]] = []
        for n in ir.order(other.subgraph(nodes)):
            for u in ir.inputs(other, n):
                if u not in nodes and u in d.unit:
                    pairs.append((d.unit[u], rid, shape_text(ir.node(other, u).shape)))
            for v in other.successors(n):
                if v not in nodes and v in d.unit:
                    pairs.append((rid, d.unit[v], shape_text(ir.node(other, n).shape)))
        for u, v, text in dict.fromkeys(pairs):
            out.append(f'  {_quote(u)} -> {_quote(v)} [label={_quote(" " + text)}, style=dashed, color="{colour}"];')
    return out


# ---------------------------------------------------------------------------
# Rendering


def dot_program() -> str | None:
    """The path of Graphviz's ``dot`` on PATH, or None."""
    return shutil.which("dot")


def render(dot_text: str, fmt: str) -> bytes:
    """Lay out and draw DOT text with Graphviz's ``dot``: SVG, PNG or PDF bytes.

    Raises :class:`DrawError` (one line saying how to install it) where ``dot``
    or the ``graphviz`` Python package is missing, or when ``dot`` fails.
    """
    if fmt not in FORMATS:
        raise DrawError(f"cannot render {fmt!r}; expected one of {', '.join(FORMATS)} (or write DOT text)")
    items = dot_text.count(" [label=")
    if items > MAX_ITEMS:
        raise DrawError(
            f"the picture has {items:,} boxes and edges, more than dot lays out in reasonable time ({MAX_ITEMS:,}): "
            "draw fewer with --depth or --focus, or write DOT text"
        )
    missing = f"drawing {fmt.upper()} needs Graphviz's dot program, which is not on PATH: {INSTALL}"
    if dot_program() is None:
        raise DrawError(missing)
    try:
        import graphviz
    except ImportError:
        raise DrawError(f"drawing {fmt.upper()} needs the graphviz Python package: pip install graphviz") from None
    try:
        return graphviz.pipe("dot", fmt, dot_text.encode("utf-8"), quiet=True)
    except graphviz.ExecutableNotFound:
        raise DrawError(missing) from None
    except graphviz.CalledProcessError as e:
        why = (e.stderr or b"").decode("utf-8", "replace").strip().splitlines()
        raise DrawError(f"Graphviz's dot failed: {why[-1] if why else f'exit status {e.returncode}'}") from None


_PROLOGUE = re.compile(r"<\?xml.*?\?>|<!DOCTYPE.*?>|<!--.*?-->", re.DOTALL)

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ margin: 0; font-family: Helvetica, Arial, sans-serif; background: #fff; }}
header {{ padding: 8px 12px; border-bottom: 1px solid #ddd; font-size: 14px; }}
main {{ overflow: auto; padding: 12px; }}
main svg {{ max-width: none; height: auto; }}
</style>
</head>
<body>
<header>{title}</header>
<main>
{svg}
</main>
</body>
</html>
"""


def to_html(svg: bytes, title: str) -> str:
    """A self-contained page showing ``svg`` (as :func:`render` made it): no scripts, nothing fetched.

    The SVG is inlined without its XML prologue, doctype and comments (which
    repeat names from the spec); ``dot`` has escaped every text in it, and the
    page's Content-Security-Policy forbids loading anything.
    """
    text = _PROLOGUE.sub("", svg.decode("utf-8")).strip()
    if not text.startswith("<svg"):
        raise DrawError("expected an SVG document from Graphviz's dot")
    return _PAGE.format(title=html.escape(_visible(title), quote=True), svg=text)
