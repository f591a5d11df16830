"""The block tree beside the nodes: walking it with parents, rebuilding it, and checking that the two agree.

The block tree (``GraphInfo.model`` and each output's ``head``) is what a
generated class is written from, the nodes are what runs; every pass keeps
them in step (the rewriting passes through :mod:`nasdsl.ir.rewrite`), and the
pass manager's verifier calls :func:`check_tree` after each pass:

* every node of the main graph but the input is held by exactly one live
  *owner* block: an ``op`` block (its ``output``), a ``merge`` block (its
  join node), a ``use`` of a template with several inputs (its ``entries``),
  or a branch whose value a merge reads twice (the builder reads
  it through an ``identity`` node named after the branch);
* an owner's op is its node's op;
* every block's ``inputs`` and ``output`` name nodes that exist: in the main
  graph, or, for a dormant block and what it holds, in the dormant graph;
* a block's ``sources`` (what its ``from:`` names) give one path per input,
  each that of a block of the tree, of an input of a template use
  (``entries``) or of a value a repeat names after it (``stage1.s0``), or None;
* every output reads a node of the main graph.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import networkx as nx

from nasdsl.errors import GraphError
from nasdsl.ir.graph import all_outputs, info, node, update_info
from nasdsl.ir.records import Block, Output

#: blocks that hold a node of their own
OWNERS = ("op", "merge")


def skip_of(b: Block, value: str) -> Block:
    """``b`` as a block that passes ``value`` on (a node the rewrite removed): no children, no node.
    A block of one input keeps the name its ``from:`` gives that input (the value it passes on)."""
    return b.evolve(
        kind="skip", inputs=(value,), output=value, children=(), op=None, template=None, args=(), when=None,
        target=None, repeat=None, named=False, sources=b.sources if len(b.sources) == 1 else (),
    )  # fmt: skip


def bypassed(b: Block) -> bool:
    """Whether ``b`` is a block a rewrite took out of the data path (it passes its input on; a
    block switched off by a condition keeps its ``when``)."""
    return b.kind == "skip" and b.when is None


def map_tree(block: Block, fn: Callable[[Block], Block], within: str | None = None) -> Block:
    """``block`` rebuilt bottom-up: ``fn`` sees each block with its children already mapped and
    returns it (unchanged: the same object) or its replacement. With ``within`` (a block's path),
    only the blocks that may hold that block are visited: a block's path extends its parent's
    (``inception3a.branch1`` inside ``inception3a``), so the others are left as they are."""
    if block.children:
        if within is None:
            children = tuple(map_tree(c, fn) for c in block.children)
        else:
            children = tuple(map_tree(c, fn, within) if _holds_path(c.path, within) else c for c in block.children)
        if any(a is not b for a, b in zip(children, block.children, strict=True)):
            block = block.evolve(children=children)
    return fn(block)


def _holds_path(path: str, within: str) -> bool:
    return path == "" or within == path or within.startswith(path + ".")


def map_roots(g: nx.DiGraph, fn: Callable[[Block], Block], within: str | None = None) -> None:
    """Apply :func:`map_tree` to the model's tree and every output's head (live and dormant),
    storing the result in ``g`` (the caller's own copy)."""
    record = info(g)

    def head(o: Output) -> Output:
        if o.head is None or (within is not None and not _holds_path(o.head.path, within)):
            return o
        new = map_tree(o.head, fn, within)
        return o if new is o.head else dataclasses.replace(o, head=new)

    model = map_tree(record.model, fn, within)
    outputs = tuple(head(o) for o in record.outputs)
    dormant = tuple(head(o) for o in record.dormant.outputs)
    changes: dict[str, object] = {}
    if model is not record.model:
        changes["model"] = model
    if any(a is not b for a, b in zip(outputs, record.outputs, strict=True)):
        changes["outputs"] = outputs
    if any(a is not b for a, b in zip(dormant, record.dormant.outputs, strict=True)):
        changes["dormant"] = dataclasses.replace(record.dormant, outputs=dormant)
    if changes:
        update_info(g, **changes)


def with_parents(g: nx.DiGraph) -> Iterator[tuple[Block, tuple[Block, ...], bool]]:
    """``(block, ancestors outermost first, dormant)`` for every block of every root; ``dormant``
    tells whether the block or one above it is switched off (its nodes are in the dormant graph)."""
    record = info(g)
    roots = [(record.model, False)]
    roots += [(o.head, False) for o in record.outputs if o.head is not None]
    roots += [(o.head, True) for o in record.dormant.outputs if o.head is not None]
    for root, off in roots:
        stack: list[tuple[Block, tuple[Block, ...], bool]] = [(root, (), off)]
        while stack:
            b, above, d = stack.pop()
            d = d or b.dormant
            yield b, above, d
            stack.extend((c, (*above, b), d) for c in reversed(b.children))


def retarget(block: Block, old: str, new: str) -> Block:
    """``block`` with node ``old`` read as ``new`` in its inputs and output (the block alone)."""
    if old not in block.inputs and block.output != old:
        return block
    inputs = tuple(new if n == old else n for n in block.inputs)
    return block.evolve(inputs=inputs, output=new if block.output == old else block.output)


def read_by_name(body: Block, switched: Callable[[Block], bool]) -> dict[str, frozenset[str | None]]:
    """For each entry of the sequence ``body`` whose ``from:`` names an earlier entry of ``body`` (or
    ``in``, None), the names (``Block.sources``) a class must read by name rather than by the value
    they hold here: those with at least one entry between them and the reader (or any, in a list of
    several: the reader reads each apart from the value just before it), where an entry from
    the named one up to the reader is ``switched`` (its ``when`` a class keeps as an argument). At a
    use where such an entry is off, the name holds the value of an entry before it, or the reader's
    input is the value just before it; where it is on, neither: one class serves both only if it
    keeps the value under the name it is given (a switched-off entry's name holds its input)."""
    position = {c.path: k for k, c in enumerate(body.children)}
    found: dict[str, frozenset[str | None]] = {}
    for i, c in enumerate(body.children):
        named = set()
        for p in c.sources:
            j = -1 if p is None else position.get(p, i)  # `in` is before the first entry
            # a list reads its values apart from x: the switched entry just before it is read by name too
            after = i - j > 1 or len(c.sources) > 1
            if after and any(switched(e) for e in body.children[max(j, 0) : i]):
                named.add(p)
        if named:
            found[c.path] = frozenset(named)
    return found


def check_tree(g: nx.DiGraph) -> None:
    """Raise a :class:`GraphError` naming the first place where the tree and the nodes disagree."""
    record = info(g)
    dormant = record.dormant.graph
    owned: dict[str, str] = {}
    repeated: set[str] = set()  # branches read through an identity named after them
    named: set[str | None] = {None}  # what a `from:` may name: a block, an input of a template use, ...
    naming: list[Block] = []  # the blocks whose `from:` names blocks
    for b, _, off in with_parents(g):
        where = b.path or "the model"
        for n in (*b.inputs, b.output):
            if n and n not in g and not (off and n in dormant):
                raise GraphError(f"block {where} ({b.kind}) reads or holds node {n}, which is not in the graph")
        named.add(b.path)
        named.update(b.entries)
        if b.repeat is not None:  # ... or a value a repeat names after it (`stage1.s0`)
            named.update(f"{b.path}.{p}" for p in b.repeat.previous)
        if b.sources:
            naming.append(b)
        if off:
            continue
        for n in b.entries:  # a template with several inputs: the use holds the identity each input is
            if n not in g or node(g, n).op != "identity":
                raise GraphError(f"block {where} holds the input node {n}, which is no identity of the graph")
            owned[n] = where
        if b.kind not in OWNERS:
            if b.kind != "skip" and b.output == b.path:
                repeated.add(b.output)
            continue
        if b.output in owned:
            raise GraphError(f"node {b.output} is held by two blocks: {owned[b.output]} and {where}")
        owned[b.output] = where
        if b.op != node(g, b.output).op:
            raise GraphError(f"block {where} says op {b.op}, its node {b.output} is a {node(g, b.output).op}")
    for b in naming:
        if len(b.sources) != len(b.inputs) or not named.issuperset(b.sources):
            raise GraphError(
                f"block {b.path or 'the model'} ({b.kind}) names {b.sources} for its inputs {b.inputs}: expected "
                "one name per input, each a block of the tree, an input of a template use or a value a repeat names"
            )
    missing = [
        n for n in g if n not in owned and n != record.input and not (n in repeated and node(g, n).op == "identity")
    ]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise GraphError(f"no block of the tree holds node{'s' * (len(missing) > 1)} {shown}")
    for o in all_outputs(g):
        if o in record.outputs and o.node not in g:
            raise GraphError(f"output {o.name} reads {o.node}, which is not in the graph")


__all__ = [
    "OWNERS",
    "bypassed",
    "check_tree",
    "map_roots",
    "map_tree",
    "read_by_name",
    "retarget",
    "skip_of",
    "with_parents",
]
