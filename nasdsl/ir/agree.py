"""Which uses of a template one class can be written from, after a rewrite.

The PyTorch writer writes one class per template from its uses, which must
agree but for the entries a parameter switches off (``when: downsample``).
:func:`signature` says what the class of a use would be written from: its
body's blocks, their nodes' ops and attributes as the class writes them (the
expression where there is one, else the value), and each block's input as the
writer reads it (in sequence, another entry's value, or by the name a ``from:``
gives where a switch makes that differ between uses), relative to the use;
:func:`agree` compares two. The rewrite API (:mod:`nasdsl.ir.rewrite`) inlines
the uses a rewrite set apart.
"""

from __future__ import annotations

import networkx as nx

from nasdsl.ir.graph import node
from nasdsl.ir.records import Block
from nasdsl.ir.sym import Sym
from nasdsl.ir.tree import bypassed, read_by_name

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

    def of_block(b: Block, current: str | None, named: frozenset = frozenset()) -> object:
        if b.kind == "skip":
            return ("skip", b.name, bypassed(b))
        if b.dormant:
            return ("off", b.name)
        when = b.when.expr if b.when is not None else None
        read = None if not b.inputs else "seq" if b.inputs[0] == current else rel(b.inputs[0])
        if b.sources and b.sources[0] in named:  # read by the name its `from:` gives
            read = ("from", "<in>" if b.sources[0] is None else rel(b.sources[0]))
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
        return (*head, of_node(b.output) if b.kind == "merge" else None, children(b, named))

    def children(b: Block, named: frozenset) -> tuple:
        out = []
        current = b.inputs[0] if b.inputs else None
        for c in b.children:  # a merge's branches read the names its `from:` gives as it does
            out.append(of_block(c, current, named if b.kind == "merge" else frozenset()))
            if b.kind == "seq":
                current = c.passed
        return tuple(out)

    body = use.children[0]
    if body.kind == "seq" and body.named:
        entries = []
        current = body.inputs[0]
        by_name = read_by_name(body, _switched)
        for c in body.children:
            gated = _switched(c) and (c.kind == "skip" or c.dormant)
            name = None if c.path == base else c.name
            read = of_block(c, current, by_name.get(c.path, frozenset()))
            entries.append((name, _GATED if gated and not bypassed(c) else read))
            current = c.passed
        return ("entries", tuple(entries))
    return of_block(body, body.inputs[0] if body.inputs else None)


def _switched(b: Block) -> bool:
    """Whether a parameter (or a variable) switches ``b``: the class builds it where the argument
    says."""
    return b.when is not None and isinstance(b.when.expr, Sym)


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
