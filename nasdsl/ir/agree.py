"""Which uses of a template one class can be written from, after a rewrite.

The PyTorch writer writes one class per template from its uses, which must
agree but for the entries a parameter switches off (``when: downsample``).
:func:`signature` says what the class of a use would be written from: its
body's blocks, their nodes' ops and attributes as the class writes them (the
expression where there is one, else the value), and each block's input as the
writer reads it (in sequence, or another entry's value), relative to the use;
:func:`agree` compares two. The rewrite API (:mod:`nasdsl.ir.rewrite`) inlines
the uses a rewrite set apart.
"""

from __future__ import annotations

import networkx as nx

from nasdsl.ir.graph import node
from nasdsl.ir.records import Block
from nasdsl.ir.sym import Sym
from nasdsl.ir.tree import bypassed

#: an entry a parameter switches off at some uses: it agrees with anything (the writer gates it)
_GATED = ("gated",)


def signature(g: nx.DiGraph, use: Block) -> object:
    """What the class of ``use``'s template would be written from at this use: its body's blocks
    and their nodes' ops and attributes as the class writes them, each block's input as the
    writer reads it (in sequence, or another entry's value), relative to the use. The entries
    of a named body that a parameter switches off here are :data:`_GATED`."""
    base = use.path

    def rel(n: str) -> str:
        if n == use.inputs[0]:
            return "<in>"
        return n[len(base) + 1 :] if n.startswith(base + ".") else n

    def of_node(n: str) -> object:
        d = node(g, n)
        written = {**{k: d.exprs[k] for k in d.given if k in d.exprs}, **d.nulls}  # null here: written alike
        attrs = tuple((k, ("expr", written[k]) if k in written else ("value", v)) for k, v in d.attrs.items())
        given = tuple(k for k in d.attrs if k in d.given or k in d.nulls) if d.nulls else d.given
        return (d.op, given, attrs, d.phase)

    def of_block(b: Block, current: str | None) -> object:
        if b.kind == "skip":
            return ("skip", b.name, bypassed(b))
        if b.dormant:
            return ("off", b.name)
        when = b.when.expr if b.when is not None else None
        read = None if not b.inputs else "seq" if b.inputs[0] == current else rel(b.inputs[0])
        name = None if b.path == base else b.name  # the body (and a merge it wraps) is named after the use
        head = (b.kind, name, b.named, b.op, b.phase, when, read, b.template)
        if b.kind == "op":
            return (*head, of_node(b.output))
        if b.kind == "ref":
            return (*head, b.target and rel(b.target))
        if b.kind == "use" and b is not use:
            args = tuple(
                (a.name, a.given, ("expr", a.expr) if a.expr is not None else ("value", a.value)) for a in b.args
            )
            return (*head, args)
        return (*head, of_node(b.output) if b.kind == "merge" else None, children(b))

    def children(b: Block) -> tuple:
        out = []
        current = b.inputs[0] if b.inputs else None
        for c in b.children:
            out.append(of_block(c, current))
            if b.kind == "seq":
                current = c.passed
        return tuple(out)

    body = use.children[0]
    if body.kind == "seq" and body.named:
        entries = []
        current = body.inputs[0]
        for c in body.children:
            gated = c.when is not None and isinstance(c.when.expr, Sym) and (c.kind == "skip" or c.dormant)
            name = None if c.path == base else c.name
            entries.append((name, _GATED if gated and not bypassed(c) else of_block(c, current)))
            current = c.passed
        return ("entries", tuple(entries))
    return of_block(body, body.inputs[0] if body.inputs else None)


def agree(a: object, b: object) -> bool:
    """Whether two signatures describe one class (a gated entry agrees with anything)."""
    if a == b:
        return True
    if not (isinstance(a, tuple) and isinstance(b, tuple) and a[:1] == b[:1] == ("entries",)):
        return False
    ea, eb = a[1], b[1]
    if [n for n, _ in ea] != [n for n, _ in eb]:
        return False
    return all(x == y or x == _GATED or y == _GATED for (_, x), (_, y) in zip(ea, eb, strict=True))


__all__ = ["agree", "signature"]
