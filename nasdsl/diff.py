"""What differs between two compiled specs, read from their graphs.

The comparison is of graphs, not texts: comments, layout, the order of
templates, positional against named arguments and ``doc`` text change nothing.
Each side is cut into *entries*: the input, every top-level model entry that
runs, every output head and the outputs themselves. Entries are paired by
name; an entry of one side left without a partner that has exactly the
structure of one left on the other side (same kind, arguments, shapes and
nodes, relative to the entry) is a rename. So inserting a module is one
``added`` entry, and the entries after it change only where their input did.

For each entry the diff lists what changed: its kind (op or template), its
arguments (a template use's) or written attributes (an op's), what it reads
(the entries, or the input, whose values it is given: ``from:``), its input and
output shapes, and, where none of those did, the nodes inside it whose op,
attributes, shape or inputs (``reads``: what the node reads, named from the entry) did; with its
parameters and multiply-adds on both sides.
Totals are those of ``nasdsl summary`` (inference) and with the training heads.

:func:`compare` returns plain data (:class:`Diff`); :func:`as_json` and
:func:`render` format it. The JSON contract::

    {"a": {"name", "file", "params", "macs", "params_train", "macs_train"}, "b": {...},
     "entries": [{"name", "status": "added" | "removed" | "changed" | "renamed", "was": old name or null,
                  "kind", "training_only", "output": [C, H, W] or [F],
                  "changes": [{"what": "kind" | "arg" | "reads" | "input" | "output" | "node" | "phase" | "outputs",
                               "key", "a", "b", "absent": ["a"] | ["b"] (an argument only one side has)}],
                  "params": {"a", "b", "delta"}, "macs": {"a", "b", "delta"}}],
     "totals": {"params" | "macs" | "params_train" | "macs_train": {"a", "b", "delta"}},
     "counts": {"added", "removed", "changed", "renamed"},
     "hash": {"a", "b"}, "same_architecture": true | false}

A side's value is null where the entry does not exist on it. An argument's is null where it is
``null`` or where the side has no such argument; ``absent`` then names that side (the key is left
out where both sides have the argument).

``reads`` holds, on each side, the values from outside the entry that its nodes read, in the
order they read them (what ``from:`` gives it, then what a ``{ref: ...}`` inside it reaches, as a
merge's branches): an entry's name where it reads an entry's output, else the node's path (the
input's name, a node inside an entry: ``blk.inner``). A reads change, and an output's ``from``
that differs, is listed only between values both sides have: an entry that reads an inserted one
changes only where its input did, and a renamed one (or a node inside it) is read under its new
name.

``hash`` is each side's architecture hash (:func:`nasdsl.unique.graph_hash`): where they are equal
the two compute the same function up to the names of their nodes, the order of a sum's terms,
identities and nodes no output reads (two NAS-Bench-201 cells written with their edges in another
order), and :func:`render` says so instead of listing the changed entries that have the same layers
on both sides (the same multiset of ops, attributes and shapes, identities aside), only named or
wired otherwise; an entry whose layers differ (a dropout's rate, which the hash does not see) is
still listed, and so is one whose arguments differ (``null`` against the default they stand for).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from dataclasses import dataclass

import networkx as nx

from nasdsl import ir
from nasdsl.passes.shapes import macs, params
from nasdsl.unique import graph_hash

STATUSES = ("added", "removed", "changed", "renamed")
_MARK = {"added": "+", "removed": "-", "changed": "~", "renamed": ">"}
#: the key under which a node's inputs are compared with its attributes (a node wired otherwise)
_READS = "reads"


@dataclass(frozen=True)
class Entry:
    """One entry of a side: what the comparison looks at."""

    name: str
    kind: str
    args: tuple[tuple[str, object], ...]
    inputs: tuple[tuple[int, ...], ...]
    output: tuple[int, ...] | None
    nodes: tuple[tuple[str, str, tuple, tuple[int, ...] | None], ...]  # (relative name, op, attrs, shape)
    params: int
    macs: int
    training_only: bool
    #: the values from outside it that its nodes read, in order: the entry whose output each is
    #: (its name), else the node's path
    reads: tuple[str, ...] = ()

    def signature(self) -> tuple:
        return (self.kind, self.args, self.inputs, self.output, self.nodes, self.training_only)


@dataclass(frozen=True)
class Change:
    what: str
    key: str
    a: object
    b: object
    #: the sides ("a", "b") that have no such argument (its value there is None, as a null's is)
    absent: tuple[str, ...] = ()


@dataclass(frozen=True)
class EntryDiff:
    name: str
    status: str
    kind: str
    changes: tuple[Change, ...]
    params: tuple[int | None, int | None]
    macs: tuple[int | None, int | None]
    training_only: bool = False
    was: str | None = None
    #: its output shape (the new side's, or the old side's for a removed entry)
    output: tuple[int, ...] | None = None
    #: a changed entry with the same layers on both sides (ops, attributes and shapes, identities
    #: aside), only named or wired otherwise
    same_layers: bool = False


@dataclass(frozen=True)
class Side:
    name: str
    file: str
    params: int
    macs: int
    params_train: int
    macs_train: int


@dataclass(frozen=True)
class Diff:
    a: Side
    b: Side
    entries: tuple[EntryDiff, ...]
    #: each side's architecture hash (nasdsl.unique.graph_hash)
    hashes: tuple[str, str] = ("", "")

    @property
    def same_architecture(self) -> bool:
        return self.hashes[0] == self.hashes[1] != ""

    def counts(self) -> dict[str, int]:
        return {s: sum(1 for e in self.entries if e.status == s) for s in STATUSES}


# ---------------------------------------------------------------------------
# Entries of a graph


def _plain(v: object) -> object:
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    return v


def _simple(v: object) -> object:
    """A pair of equal numbers as one number, as the summary shows attributes."""
    if isinstance(v, tuple) and len(v) == 2 and v[0] == v[1]:
        return v[0]
    return _plain(v)


def _shape(s) -> tuple[int, ...] | None:
    return tuple(s) if s is not None else None


def _kind(g: nx.DiGraph, tree: ir.Block) -> tuple[str, tuple[tuple[str, object], ...]]:
    if tree.kind == "use":
        return tree.template or "", tuple((a.name, _plain(a.value)) for a in tree.args)
    if tree.kind == "op":
        data = ir.node(g, tree.output)
        return data.op, tuple((k, _simple(data.attrs[k])) for k in data.given)
    if tree.kind == "merge":
        return tree.op or "", ()
    if tree.kind == "seq":
        return "sequence", ()
    if tree.kind == "ref":
        return "ref", (("target", tree.target),)
    return tree.kind, ()


def entries(g: nx.DiGraph) -> list[Entry]:
    """The entries of a compiled graph, in order: the input, the model's entries that run, the heads."""
    g = ir.as_graph(g)
    members: dict[str, list[str]] = {}
    for n, data in ir.nodes(g):
        if data.op != "input":
            members.setdefault(n.split(".")[0], []).append(n)
    inp = ir.info(g).input
    data = ir.node(g, inp)
    attrs = data.attrs
    stats = (("mean", _plain(attrs.get("mean"))), ("std", _plain(attrs.get("std"))))
    out = [Entry(inp, "input", stats, (), _shape(data.shape), (), 0, 0, False)]
    heads = [(o.head, o.training_only) for o in ir.info(g).outputs if o.head is not None]
    trees = [(c, False) for c in ir.info(g).model.children if c.kind != "skip" and not c.dormant] + heads
    # a value read by another entry is named by the entry whose output it is
    produced = {t.output: t.name for t, _ in reversed(trees)}
    for tree, training_only in trees:
        nodes = members.get(tree.name, [])
        kind, args = _kind(g, tree)
        own = set(nodes)
        # what its nodes read from outside it: its inputs and what a ref inside it reaches
        read = [i for n in nodes for i in ir.inputs(g, n) if i not in own] if nodes else list(tree.inputs)
        inside = []
        for n in nodes:
            d = ir.node(g, n)
            rel = n[len(tree.name) + 1 :] if n != tree.name else ""
            attrs = tuple((k, _plain(v)) for k, v in d.attrs.items())
            # what it reads, in order: a cell that picks other inputs is wired otherwise
            attrs += ((_READS, [_seen_from(tree, i) for i in ir.inputs(g, n)]),)
            inside.append((rel, d.op, attrs, _shape(d.shape)))
        out.append(
            Entry(
                tree.name,
                kind,
                args,
                tuple(_shape(ir.node(g, i).shape) for i in tree.inputs),
                _shape(ir.node(g, tree.output).shape),
                tuple(inside),
                sum(params(g, n) for n in nodes),
                sum(macs(g, n) for n in nodes),
                training_only,
                tuple(produced.get(i, i) for i in read),
            )
        )
    return out


def _seen_from(tree: ir.Block, n: str) -> str:
    """Node ``n`` as entry ``tree`` sees it: inside it, its path from there; one of the values it is
    given, ``<in>`` (``<in0>``, ``<in1>``... where it is given several); else its name."""
    if n.startswith(tree.name + "."):
        return n[len(tree.name) + 1 :]
    if n in tree.inputs:
        return f"<in{tree.inputs.index(n)}>" if len(tree.inputs) > 1 else "<in>"
    return n


def _outputs(g: nx.DiGraph) -> dict[str, tuple]:
    return {o.name: (o.source, o.loss_weight, o.training_only) for o in ir.info(g).outputs}


def _totals(g: nx.DiGraph, name: str = "") -> Side:
    nodes = [n for n, d in ir.nodes(g) if d.op != "input"]
    inference = [n for n in nodes if ir.node(g, n).phase != "train"]
    return Side(
        ir.info(g).name,
        name or str(ir.info(g).file),
        sum(params(g, n) for n in inference),
        sum(macs(g, n) for n in inference),
        sum(params(g, n) for n in nodes),
        sum(macs(g, n) for n in nodes),
    )


# ---------------------------------------------------------------------------
# Comparing


def compare(a, b, *, a_name: str = "", b_name: str = "") -> Diff:
    """The differences from graph (or compiled spec) ``a`` to ``b``; ``a_name`` and ``b_name``
    say what each is (default: the file each was read from)."""
    ga, gb = ir.as_graph(a), ir.as_graph(b)
    ea, eb = entries(ga), entries(gb)
    by_a = {e.name: e for e in ea}
    by_b = {e.name: e for e in eb}
    removed = [e for e in ea if e.name not in by_b]
    added = [e for e in eb if e.name not in by_a]
    renamed: dict[str, str] = {}  # new name -> old name
    for new in added:
        for old in removed:
            if old.name not in renamed.values() and old.signature() == new.signature():
                renamed[new.name] = old.name
                break
    # a value read on both sides, by its name on side a
    both = {name for name in by_a if name in by_b} | set(renamed.values()) | {ir.info(ga).input}
    as_a = {**{n: n for n in both}, **renamed}
    out: list[EntryDiff] = []
    for name in _merged_order([e.name for e in ea], [e.name for e in eb]):
        old, new = by_a.get(name), by_b.get(name)
        if old is not None and new is not None:
            changes = _changes(old, new, as_a)
            if changes or old.params != new.params or old.macs != new.macs:
                entry = _entry(name, "changed", old, new, changes)
                out.append(dataclasses.replace(entry, same_layers=_layers(old) == _layers(new)))
        elif new is not None:
            if name in renamed:
                out.append(_entry(name, "renamed", by_a[renamed[name]], new, (), was=renamed[name]))
            else:
                out.append(_entry(name, "added", None, new, ()))
        elif old is not None and old.name not in renamed.values():
            out.append(_entry(name, "removed", old, None, ()))
    outs = _output_changes(_outputs(ga), _outputs(gb), as_a)
    if outs:
        out.append(EntryDiff("outputs", "changed", "outputs", outs, (0, 0), (0, 0)))
    return Diff(_totals(ga, a_name), _totals(gb, b_name), tuple(out), (graph_hash(ga), graph_hash(gb)))


def _layers(e: Entry) -> list[str]:
    """An entry's nodes as a multiset of (op, attributes, shape), identities and wiring left out."""
    return sorted(
        repr((op, tuple(a for a in attrs if a[0] != _READS), shape))
        for _, op, attrs, shape in e.nodes
        if op != "identity"
    )


def _merged_order(a: list[str], b: list[str]) -> list[str]:
    """The names of both sides in one order: b's, with a's missing ones where they stood."""
    out: list[str] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag == "equal":
            out += b[j1:j2]
        else:
            out += [n for n in a[i1:i2] if n not in b] + b[j1:j2]
    seen: set[str] = set()
    return [n for n in out if not (n in seen or seen.add(n))]


def _entry(name: str, status: str, old: Entry | None, new: Entry | None, changes, *, was=None) -> EntryDiff:
    shown = new if new is not None else old
    assert shown is not None
    return EntryDiff(
        name,
        status,
        shown.kind,
        tuple(changes),
        (old.params if old else None, new.params if new else None),
        (old.macs if old else None, new.macs if new else None),
        shown.training_only,
        was,
        shown.output,
    )


def _changes(old: Entry, new: Entry, as_a: dict[str, str]) -> list[Change]:
    """What differs in an entry both sides have; ``as_a`` names, by their names on side a, the
    values both sides have (side b's names as keys)."""
    changes: list[Change] = []
    if old.kind != new.kind:
        changes.append(Change("kind", "", old.kind, new.kind))
    a_args, b_args = dict(old.args), dict(new.args)
    for key in dict.fromkeys([*a_args, *b_args]):
        if a_args.get(key) != b_args.get(key) or (key in a_args) != (key in b_args):
            absent = tuple(side for side, args in (("a", a_args), ("b", b_args)) if key not in args)
            changes.append(Change("arg", key, a_args.get(key), b_args.get(key), absent))
    if _reads_otherwise(old.reads, new.reads, as_a):
        changes.append(Change("reads", "", list(old.reads), list(new.reads)))
    if old.training_only != new.training_only:
        changes.append(Change("phase", "training_only", old.training_only, new.training_only))
    if old.inputs != new.inputs:
        changes.append(Change("input", "", [_plain(s) for s in old.inputs], [_plain(s) for s in new.inputs]))
    if old.output != new.output:
        changes.append(Change("output", "", _plain(old.output), _plain(new.output)))
    if all(c.what == "reads" for c in changes) and old.nodes != new.nodes:  # a branch added to a merge
        changes += _node_changes(old, new)
    return changes


def _on_a(name: str, as_a: dict[str, str]) -> str | None:
    """Side b's value ``name`` (an entry, or a node inside one: ``blk.inner``) by its name on side
    a; None where side a has no such entry."""
    if name in as_a:
        return as_a[name]
    entry, dot, rest = name.partition(".")
    return f"{as_a[entry]}.{rest}" if dot and entry in as_a else None


def _reads_otherwise(a: tuple[str, ...], b: tuple[str, ...], as_a: dict[str, str]) -> bool:
    """Whether an entry reads other values on side b than on side a, among the values both sides
    have (what reads an added or a removed entry changes with it)."""
    known_a = set(as_a.values())
    known = [x in known_a or x.partition(".")[0] in known_a for x in a]
    mapped = [_on_a(y, as_a) for y in b]
    if len(a) != len(b):
        return all(known) and None not in mapped
    return any(k and y is not None and y != x for x, k, y in zip(a, known, mapped, strict=True))


def _node_changes(old: Entry, new: Entry) -> list[Change]:
    """The nodes inside an entry that differ: each side holds what differs (its op, the attributes
    that differ, its shape), or the node's op and shape where the other side lacks it."""
    a = {rel: (op, dict(attrs), shape) for rel, op, attrs, shape in old.nodes}
    b = {rel: (op, dict(attrs), shape) for rel, op, attrs, shape in new.nodes}
    # wiring is compared between values both sides have (nodes of the entry, or what it is given)
    both = {r for r in a if r in b} | {r for rel in a.values() for r in rel[1].get(_READS, ()) if r.startswith("<in")}
    out = []
    for rel in dict.fromkeys([*a, *b]):
        x, y = a.get(rel), b.get(rel)
        if x == y:
            continue
        if x is None or y is None:
            out.append(Change("node", rel, _node_data(x), _node_data(y)))
            continue
        da: dict[str, object] = {}
        db: dict[str, object] = {}
        if x[0] != y[0]:
            da["op"], db["op"] = x[0], y[0]
        for k in dict.fromkeys([*x[1], *y[1]]):
            if k == _READS and not all(r in both for r in [*x[1].get(k, ()), *y[1].get(k, ())]):
                continue  # it reads a node one side lacks: that node's change says it
            if x[1].get(k) != y[1].get(k):
                da[k], db[k] = x[1].get(k), y[1].get(k)
        if x[2] != y[2]:
            da["shape"], db["shape"] = _plain(x[2]), _plain(y[2])
        if da or db:
            out.append(Change("node", rel, da, db))
    return out


def _node_data(node: tuple | None) -> dict | None:
    if node is None:
        return None
    op, _, shape = node
    return {"op": op, "shape": _plain(shape)}


def _output_changes(a: dict[str, tuple], b: dict[str, tuple], as_a: dict[str, str]) -> tuple[Change, ...]:
    """The outputs that differ; one that reads a renamed entry under its new name does not."""
    out = []
    for name in dict.fromkeys([*a, *b]):
        old, new = a.get(name), b.get(name)
        if old is not None and new is not None and (_on_a(new[0], as_a), *new[1:]) == old:
            continue
        if old != new:
            out.append(Change("outputs", name, _output_text(old), _output_text(new)))
    return tuple(out)


def _output_text(o: tuple | None) -> str | None:
    if o is None:
        return None
    source, weight, training_only = o
    return f"from {source}, loss weight {weight:g}" + (", training only" if training_only else "")


# ---------------------------------------------------------------------------
# Formats


def _pair(a: int | None, b: int | None) -> dict:
    delta = (b or 0) - (a or 0)
    return {"a": a, "b": b, "delta": delta}


def as_dict(diff: Diff) -> dict:
    """The diff as the JSON contract of the module docstring."""

    def side(s: Side) -> dict:
        return {
            "name": s.name, "file": s.file, "params": s.params, "macs": s.macs,
            "params_train": s.params_train, "macs_train": s.macs_train,
        }  # fmt: skip

    return {
        "a": side(diff.a),
        "b": side(diff.b),
        "entries": [
            {
                "name": e.name,
                "status": e.status,
                "was": e.was,
                "kind": e.kind,
                "training_only": e.training_only,
                "output": _plain(e.output),
                "changes": [
                    {
                        "what": c.what,
                        "key": c.key,
                        "a": c.a,
                        "b": c.b,
                        **({"absent": list(c.absent)} if c.absent else {}),
                    }
                    for c in e.changes
                ],
                "params": _pair(*e.params),
                "macs": _pair(*e.macs),
            }
            for e in diff.entries
        ],
        "totals": {
            k: _pair(getattr(diff.a, k), getattr(diff.b, k)) for k in ("params", "macs", "params_train", "macs_train")
        },
        "counts": diff.counts(),
        "hash": {"a": diff.hashes[0], "b": diff.hashes[1]},
        "same_architecture": diff.same_architecture,
    }


def as_json(diff: Diff) -> str:
    return json.dumps(as_dict(diff), indent=2) + "\n"


def _dims(shape) -> str:
    if shape is None:
        return "?"
    return "x".join(str(d) for d in shape)


def _value(v: object, null: str = "(none)") -> str:
    """A value for people; None is ``null`` (an argument given null: spec syntax) or "(none)"."""
    if v is None:
        return null
    if isinstance(v, list) and v and all(isinstance(x, list) for x in v):
        return ", ".join(_dims(x) for x in v)
    if isinstance(v, (list, dict, bool)) or v is None:
        return json.dumps(v, separators=(",", ":"))
    return str(v)


def _signed(n: int) -> str:
    return f"{n:+,}"


def _describe(e: EntryDiff) -> str:
    parts = []
    nodes: dict[str, list[str]] = {}
    for c in e.changes:
        if c.what == "arg":
            a = "(none)" if "a" in c.absent else _value(c.a, null="null")
            b = "(none)" if "b" in c.absent else _value(c.b, null="null")
            parts.append(f"{c.key} {a} -> {b}")
        elif c.what == "reads":
            parts.append(f"reads {', '.join(c.a) or '(nothing)'} -> {', '.join(c.b) or '(nothing)'}")
        elif c.what == "input":
            parts.append(f"input {', '.join(map(_dims, c.a))} -> {', '.join(map(_dims, c.b))}")
        elif c.what == "output":
            parts.append(f"output {_dims(c.a)} -> {_dims(c.b)}")
        elif c.what == "kind":
            parts.append(f"was {c.a}")
        elif c.what == "phase":
            parts.append("training only" if c.b else "no longer training only")
        elif c.what == "node":
            nodes.setdefault(_node_change_text(c.a, c.b), []).append(c.key or e.name)
        elif c.what == "outputs":
            parts.append(f"{c.key}: {c.a or '(none)'} -> {c.b or '(none)'}")
    for text, names in nodes.items():
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        parts.append(f"{shown}: {text}")
    return "; ".join(parts)


def _node_change_text(a: dict | None, b: dict | None) -> str:
    if a is None:
        return f"{b['op']} added"
    if b is None:
        return f"{a['op']} removed"

    def shown(k: str, v: object) -> str:
        return _dims(v) if k == "shape" else _value(v)

    return ", ".join(f"{k} {shown(k, a[k])} -> {shown(k, b[k])}" for k in a)


def render(diff: Diff) -> str:
    """The diff for people: one line per entry that differs, then the totals."""
    a, b = diff.a, diff.b
    lines = [
        f"a: {a.name} ({a.file}): {a.params:,} parameters, {a.macs:,} multiply-adds",
        f"b: {b.name} ({b.file}): {b.params:,} parameters, {b.macs:,} multiply-adds",
    ]
    if not diff.entries and (a.params_train, a.macs_train) == (b.params_train, b.macs_train):
        if diff.hashes[0] == diff.hashes[1]:
            lines.append("no differences")
        else:  # a difference the entries do not show: never reported as none
            lines.append(
                f"no entry differs in what diff compares, but the architectures do: hash {diff.hashes[0]} -> "
                f"{diff.hashes[1]}"
            )
        return "\n".join(lines) + "\n"
    same = diff.same_architecture
    # entries whose layers are only named or wired otherwise: one line for them all (an argument
    # that differs is shown, even where both values make the same layers: null and the default)
    hidden = [e for e in diff.entries if e.same_layers and not any(c.what == "arg" for c in e.changes)] if same else []
    if same:
        line = (
            f"same architecture (hash {diff.hashes[0]}): both compute the same function, up to the names of "
            "their nodes, the order of a sum's terms, identities, dropout and nodes no output reads"
        )
        if hidden:
            some = "1 entry" if len(hidden) == 1 else f"{len(hidden)} entries"
            verb = "is" if len(hidden) == 1 else "are"
            line += f"; {some} with the same layers, named or wired otherwise, {verb} not listed"
        lines.append(line)
    for e in diff.entries:
        if hidden and e.same_layers:
            continue
        head = f"{_MARK[e.status]} {e.name} ({e.kind}{', training only' if e.training_only else ''})"
        if e.status == "renamed":
            detail = f"renamed from {e.was}"
        elif e.status == "added":
            detail = f"added, output {_dims(e.output)}"
        elif e.status == "removed":
            detail = f"removed (its output was {_dims(e.output)})"
        else:
            detail = _describe(e)
        figures = []
        pa, pb = e.params
        ma, mb = e.macs
        if (pa or 0) != (pb or 0):
            figures.append(f"params {_signed((pb or 0) - (pa or 0))}")
        if (ma or 0) != (mb or 0):
            figures.append(f"MACs {_signed((mb or 0) - (ma or 0))}")
        text = f"{head}: {detail}"
        if figures:
            text += f"; {', '.join(figures)}"
        lines.append(text)
    counts = diff.counts()
    if not same:
        lines.append(f"architecture hash {diff.hashes[0]} -> {diff.hashes[1]}")
    lines.append(
        f"total: params {a.params:,} -> {b.params:,} ({_signed(b.params - a.params)}), "
        f"MACs {a.macs:,} -> {b.macs:,} ({_signed(b.macs - a.macs)}); "
        + ", ".join(f"{counts[s]} {s}" for s in STATUSES)
    )
    if (a.params_train, a.macs_train) != (a.params, a.macs) or (b.params_train, b.macs_train) != (b.params, b.macs):
        lines.append(
            f"with training heads: params {a.params_train:,} -> {b.params_train:,} "
            f"({_signed(b.params_train - a.params_train)}), MACs {a.macs_train:,} -> {b.macs_train:,} "
            f"({_signed(b.macs_train - a.macs_train)})"
        )
    return "\n".join(lines) + "\n"


__all__ = ["Change", "Diff", "Entry", "EntryDiff", "Side", "as_dict", "as_json", "compare", "entries", "render"]
