"""The rewrite API: change a graph's nodes and keep its block tree right and hierarchical.

A rewriting pass (BatchNorm folding, sibling fusion, hoisting, the inference
view) works on its own copy of the graph through a :class:`Rewriter`, which
changes nodes and edges and keeps the block tree (``GraphInfo.model`` and the
outputs' heads) describing them, so that the PyTorch writer writes the result
with one class per template as it writes the spec:

- :meth:`Rewriter.replace` stores a new record for a node (optionally under a
  new name, reading other inputs): its ``op`` block follows;
- :meth:`Rewriter.bypass` removes a node of one input (its readers and outputs
  read that input): its block becomes a ``skip`` block (so an unnamed
  sequence keeps the indices, the state_dict names, of what follows), and
  every block that named the node as an input or output is retargeted;
- :meth:`Rewriter.remove` removes nodes that nothing reads;
- :meth:`Rewriter.insert` adds a node as a new entry of a named sequence (a
  fused convolution before the branches that read it);
- :meth:`Rewriter.inline` turns a template use into a named sequence of the
  class that holds it (``Block.template`` keeps the template's name): its
  nodes' ``exprs``, its blocks' conditions and its nested uses' arguments are
  translated into that class's terms through the use's arguments (``Arg.expr``).

:meth:`Rewriter.finish` then inlines every use whose body the rewrites made
differ from the other uses of its template (each template keeps one class,
written from the uses that agree), reruns the symbolic shapes (``symbols``,
given by the pass: :func:`~nasdsl.passes.symbolic.infer_symbols`) so that
``Node.sym`` and ``Block.sym`` stay right, and returns the graph.

A record given to :meth:`~Rewriter.replace` or :meth:`~Rewriter.insert`
writes its ``exprs`` in the terms of the class of its ``instance``; where that
class holds the node's block only through nested uses (a slice whose bounds
are sums of the enclosing template's parameters, inside a use of another
template), those uses are inlined first. Node names stay the state_dict
prefixes of their parameters: a node is never renamed except by
:meth:`~Rewriter.replace` with ``rename``, which the pass uses only for a node
that holds no parameters (a slice in place of a convolution).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence

import networkx as nx

from nasdsl.errors import GraphError
from nasdsl.ir.agree import agree, signature
from nasdsl.ir.graph import copy, info, inputs, node, nodes, retarget_outputs, set_node, update_info
from nasdsl.ir.records import Block, Node, When
from nasdsl.ir.sym import Sym, SymbolicError
from nasdsl.ir.tree import OWNERS, bypassed, map_roots, skip_of, with_parents
from nasdsl.ir.types import frozen

_FAILED = (SymbolicError, TypeError, ValueError, ZeroDivisionError, KeyError)


class RewriteError(GraphError):
    """A rewrite the block tree cannot describe (the pass then leaves that part as it is)."""


def _holds_nothing(b: Block) -> bool:
    """Whether ``b`` holds no node: a block a rewrite took out, a ``ref`` (it reads a value held
    elsewhere: a merge that reads ``{ref: bn}`` and is gone leaves ``bn`` as it is), or a sequence
    of those."""
    if b.kind in ("skip", "ref"):
        return True
    return b.kind in ("seq", "use") and all(_holds_nothing(c) for c in b.children)


def _passes_on(b: Block) -> bool:
    """Whether ``b`` holds no node and passes its input on: a skip (a rewrite took it out, or a
    switch leaves it out), or a sequence or use of those alone."""
    if b.kind == "skip":
        return True
    return b.kind in ("seq", "use") and bool(b.children) and all(_passes_on(c) for c in b.children)


def _below(b: Block):
    """The blocks inside ``b``: its children, theirs..."""
    for c in b.children:
        yield c
        yield from _below(c)


class Rewriter:
    """Changes to ``g`` (the caller's own copy, see :func:`nasdsl.ir.copy`) that keep its tree right.

    ``Rewriter.on_copy(g, infer_symbols)`` makes the copy. Every method changes the graph's nodes at once; the
    tree follows at once for the changes that move blocks (:meth:`insert`, a rename, :meth:`inline`)
    and, for the others, in one sweep when the tree is next needed. Call :meth:`finish` once at
    the end, and read the tree only after it.
    """

    def __init__(self, g: nx.DiGraph, symbols: Callable[[nx.DiGraph], None]):
        self.g = g
        #: sets Node.sym and Block.sym again, in place, once the rewrites are done
        #: (:func:`nasdsl.passes.symbolic.infer_symbols`, a pass of the layer above)
        self.symbols = symbols
        #: the instances (use paths, "" for the model) whose bodies changed
        self.touched: set[str] = set()
        self._index: _Index | None = None
        #: changes the tree has not seen yet: node -> the node read in its place, nodes whose
        #: blocks pass their input on, nodes whose op changed, nodes whose first input changed
        self._to: dict[str, str] = {}
        self._skip: set[str] = set()
        self._ops: dict[str, str] = {}
        self._firsts: dict[str, tuple[str, str]] = {}
        #: blocks renamed (their old path -> the new), which a ``from:`` may name (``Block.sources``)
        self._renamed: dict[str, str] = {}
        self._moved = False  # nodes were added or renamed: put them in the tree's order at the end

    @classmethod
    def on_copy(cls, g: nx.DiGraph, symbols: Callable[[nx.DiGraph], None]) -> Rewriter:
        return cls(copy(g), symbols)

    # -- where things are ------------------------------------------------------------------
    def _where(self) -> _Index:
        if self._index is None:
            self._index = _Index(self.g)
        return self._index

    def uses(self) -> dict[str, tuple[Block, str]]:
        """Every live template use: its path -> (its block, the instance that holds it)."""
        return self._where().uses

    def locate(self, name: str) -> tuple[Block, tuple[Block, ...]]:
        """The live block that holds node ``name`` (an ``op`` or ``merge`` block) and its ancestors."""
        found = self._where().owners.get(name)
        if found is None or name not in self.g:
            raise RewriteError(f"no block of the tree holds node {name}")
        return found

    def instance(self, name: str) -> str:
        """The innermost template use whose class holds node ``name``'s block ("" for the model)."""
        return _instance_of(self.locate(name)[1])

    def parent_of(self, name: str) -> Block:
        """The block whose entry holds node ``name``."""
        _, above = self.locate(name)
        if not above:
            raise RewriteError(f"node {name} is the root of a tree")
        return above[-1]

    def holder_of(self, before: Sequence[str]) -> Block:
        """The block :meth:`insert` puts a node in that must precede the nodes ``before``."""
        return self._holder(before)[0]

    def instance_of(self, target: Block) -> str:
        """The innermost use whose class holds block ``target`` (as :meth:`holder_of` gives it;
        "" for the model)."""
        above = self._where().above.get(id(target))
        if above is None:
            raise RewriteError(f"block {target.path or 'the model'} is not in the tree")
        return _instance_of(above)

    # -- translation between classes ---------------------------------------------------------
    def translate(self, expr: object, inner: str, outer: str) -> object:
        """``expr`` (in the terms of the class of instance ``inner``) in the terms of the class of
        ``outer``, an instance that holds ``inner``; None where it cannot be written there."""
        here = inner
        while here != outer:
            if expr is None or here not in self.uses():
                return None
            use, parent = self.uses()[here]
            expr = self._one_level(expr, use, parent)
            here = parent
        return expr

    def _one_level(self, expr: object, use: Block, parent: str) -> object:
        """``expr`` in the terms of ``use``'s template, in the terms of the class holding ``use``."""
        if isinstance(expr, tuple):
            parts = tuple(self._one_level(x, use, parent) for x in expr)
            return None if any(p is None for p in parts) else parts
        if not isinstance(expr, Sym):
            return expr
        values: dict[str, object] = {}
        for a in use.args:
            v = a.expr if a.expr is not None else a.value
            if isinstance(v, (int, float, Sym)):
                values[a.name] = v
        template = info(self.g).templates[use.template]
        first = self._resolve(use.inputs[0])
        t = node(self.g, first).type if first in self.g else None
        if t is not None and t.channel_axis is not None and use.in_sym is not None:
            values[template.input_param] = use.in_sym[t.channel_axis]
        try:
            out = expr.substitute(values)
        except _FAILED:
            return None
        if isinstance(out, Sym) and not out.names <= self._names(parent):
            return None
        return out

    def _names(self, instance: str) -> frozenset[str]:
        """The names an expression may use in the class of ``instance``."""
        record = info(self.g)
        if instance == "":
            return frozenset(record.variables)
        t = record.templates[self.uses()[instance][0].template]
        return frozenset({t.input_param, *(p.name for p in t.params)})

    def _scope(self, instance: str) -> tuple[str, ...]:
        """The templates expanded around the class of ``instance``, outermost first."""
        scope: list[str] = []
        while instance:
            use, instance = self.uses()[instance]
            scope.insert(0, use.template)
        return tuple(scope)

    def _settle_instance(self, record: Node, holder: str) -> Node:
        """``record`` held by a block inside instance ``holder``: the uses between ``holder`` and the
        record's own instance are inlined (innermost first) so that its class holds it."""
        want = record.instance
        if want != holder and not _inside(holder, want):
            raise RewriteError(f"a record in the terms of {want or 'the model'} cannot be held inside {holder}")
        while holder != want:
            parent = self.uses()[holder][1]
            self.inline(holder)
            holder = parent
        return dataclasses.replace(record, scope=self._scope(want))

    # -- node edits --------------------------------------------------------------------------
    def replace(
        self, name: str, record: Node, *, rename: str | None = None, sources: Sequence[str] | None = None
    ) -> str:
        """Node ``name`` holds ``record`` from now on; with ``rename`` it is node ``rename`` instead
        (``<parent>.<identifier>``: a new entry name in the block's parent), with ``sources`` it
        reads those. Its readers and any output follow. Returns its name."""
        g = self.g
        _, above = self.locate(name)
        record = self._settle_instance(record, _instance_of(above))
        old_first = inputs(g, name)[0] if g.in_degree(name) else None
        new = rename or name
        _exist(g, sources or ())
        if new != name:
            self._rename(name, new, record.op)
        set_node(g, new, record)
        if sources is not None:
            for src in list(g.predecessors(new)):
                g.remove_edge(src, new)
            for i, src in enumerate(sources):
                g.add_edge(src, new, index=i)
        first = inputs(g, new)[0] if g.in_degree(new) else None
        self._ops[new] = record.op
        if old_first is not None and first is not None and first != old_first:
            self._firsts[new] = (old_first, first)
        self.touched.add(record.instance)
        return new

    def _rename(self, name: str, new: str, op: str) -> None:
        """Node ``name`` becomes node ``new`` of ``op``, an entry of the same parent: its block now
        (the blocks that read it when the tree is next brought up to date)."""
        g = self.g
        block, above = self.locate(name)
        parent = above[-1].path if above else ""
        if new in g:
            raise RewriteError(f"node {new} exists already")
        if not _child_name(new, parent):
            raise RewriteError(f"{new} cannot be an entry of {parent or 'the model'}")
        g.add_node(new)
        for src in inputs(g, name):
            g.add_edge(src, new, index=g.edges[src, name]["index"])
        for dst in list(g.successors(name)):
            g.add_edge(new, dst, index=g.edges[name, dst]["index"])
        set_node(g, new, node(g, name))
        g.remove_node(name)
        retarget_outputs(g, name, new)
        label = new[len(parent) + 1 :] if parent else new
        made: list[Block] = []

        def fn(b: Block) -> Block:
            if b.kind in OWNERS and b.output == name:
                made.append(dataclasses.replace(b, path=new, name=label, output=new, op=op))
                return made[-1]
            return b

        map_roots(g, fn, within=block.path)
        self._to[name] = new
        self._renamed[name] = new
        index = self._where()
        del index.owners[name]
        index.owners[new] = (made[0], above)
        self._moved = True

    def bypass(self, name: str) -> bool:
        """Remove node ``name`` (one input), wiring its readers and outputs to its input; its block
        passes that input on. False (nothing done) where a reader reads that input already (a graph
        holds one edge between two nodes: ``concat: [identity, dropout]``)."""
        g = self.g
        src = inputs(g, name)[0]
        readers = list(g.successors(name))
        if any(g.has_edge(src, dst) for dst in readers):
            return False
        self.touched.add(self.instance(name))
        for dst in readers:
            g.add_edge(src, dst, index=g.edges[name, dst]["index"])
        g.remove_node(name)
        retarget_outputs(g, name, src)
        self._to[name] = src
        self._skip.add(name)
        return True

    def remove(self, names: Iterable[str]) -> None:
        """Remove nodes that nothing outside them reads and that no output reads; their blocks pass
        their first input on (and blocks that named them name it)."""
        g = self.g
        gone = [n for n in names]
        outputs = {o.node for o in info(g).outputs}
        for n in gone:
            if n in outputs or any(dst not in gone for dst in g.successors(n)):
                raise RewriteError(f"node {n} is read by {'an output' if n in outputs else 'a node that stays'}")
        for n in gone:
            if n in self._where().owners:
                self.touched.add(self.instance(n))
            if g.in_degree(n):
                self._to[n] = inputs(g, n)[0]
            self._skip.add(n)
        g.remove_nodes_from(gone)

    def insert(
        self,
        name: str,
        record: Node,
        sources: Sequence[str],
        *,
        before: Sequence[str] = (),
        after: str | None = None,
    ) -> None:
        """Add node ``name`` reading ``sources`` as an ``op`` block of its own: right ``after`` the
        entry that holds node ``after``, or before the first entry of the innermost block holding
        all of ``before`` (the nodes it must precede; a merge is then wrapped in a named sequence
        at its own path, the new node first). Either way the block is an entry of a named
        sequence, and ``name`` is ``<that sequence's path>.<the entry's name>``."""
        g = self.g
        if name in g:
            raise RewriteError(f"node {name} exists already")
        _exist(g, sources)
        if after is not None:
            _, above = self.locate(after)
            holder = above[-1] if above else None
            if holder is None or holder.kind != "seq" or not holder.named:
                raise RewriteError(f"node {after} is no entry of a named sequence")
            kind, anchor = "after", next(c for c in holder.children if _holds(c, after))
        else:
            holder, (kind, anchor) = self._holder(before)
        if not _child_name(name, holder.path):
            raise RewriteError(f"{name} cannot be an entry of {holder.path or 'the model'}")
        label = name[len(holder.path) + 1 :] if holder.path else name
        if kind != "wrap" and any(c.name == label for c in holder.children):
            raise RewriteError(f"{holder.path or 'the model'} has an entry {label} already")
        record = self._settle_instance(record, _instance_of(self._where().above[id(holder)]))
        holder_above = self._where().above[id(holder)]  # (without the uses inlining took out)
        g.add_node(name)
        set_node(g, name, record)
        for i, src in enumerate(sources):
            g.add_edge(src, name, index=i)
        first = (sources[0],) if sources else ()
        new = Block("op", label, name, record.keypath, record.loc, first, name, op=record.op, phase=holder.phase)
        found: list[Block] = []

        def fn(b: Block) -> Block:
            if b.path != holder.path or b.kind != holder.kind or found:
                return b
            if kind == "wrap":
                found.append(b)
                return Block(
                    "seq", b.name, b.path, b.keypath, b.loc, first or b.inputs, b.output, (new, b), named=True,
                    phase=b.phase,
                )  # fmt: skip
            names = [c.name for c in b.children]
            if anchor.name not in names:
                return b
            found.append(b)
            k = names.index(anchor.name) + (kind == "after")
            return dataclasses.replace(b, children=(*b.children[:k], new, *b.children[k:]))

        map_roots(g, fn, within=holder.path)
        if not found:
            raise RewriteError(f"block {holder.path or 'the model'} is gone")  # pragma: no cover
        self._moved = True
        self.touched.add(record.instance)
        if kind == "wrap":
            self._index = None  # the merge's blocks have a new parent
        else:
            index = self._where()
            index.owners[name] = (new, (*holder_above, holder))

    def _holder(self, before: Sequence[str]) -> tuple[Block, tuple[str, Block | None]]:
        """Where a node that must precede the nodes ``before`` goes: the block holding them all
        and ("before", its entry to precede) for a named sequence, ("wrap", None) for a merge."""
        paths = []
        for n in before:
            b, above = self.locate(n)
            paths.append((*above, b))
        common: list[Block] = []
        for level in zip(*paths, strict=False):
            if any(b is not level[0] for b in level[1:]):
                break
            common.append(level[0])
        for depth in range(len(common) - 1, -1, -1):
            b = common[depth]
            below = all(len(p) > depth + 1 for p in paths)
            if b.kind == "seq" and b.named and below:
                return b, ("before", min((p[depth + 1] for p in paths), key=b.children.index))
            if b.kind == "merge" and below:
                return b, ("wrap", None)
            if b.kind not in ("use", "op"):
                break
        raise RewriteError("no named sequence or merge holds those nodes where a node can go before them")

    # -- the tree follows --------------------------------------------------------------------
    def _resolve(self, n: str) -> str:
        while n in self._to:
            n = self._to[n]
        return n

    def flush(self) -> None:
        """Bring the tree up to date with the node changes made since it was last (one sweep)."""
        if not (self._to or self._skip or self._ops or self._firsts):
            return
        to, skip, ops, firsts, renamed = self._to, self._skip, self._ops, self._firsts, self._renamed
        resolve = self._resolve

        def named(path: str | None) -> str | None:  # a block's path after the renames
            while path in renamed:
                path = renamed[path]
            return path

        moved: dict[int, tuple[str, str]] = {}  # blocks whose first input changed: (old, new)

        def fn(b: Block) -> Block:
            own = b.output if b.kind in OWNERS else None
            if own in skip:
                if not all(_holds_nothing(c) for c in b.children):
                    raise RewriteError(f"the merge {own} is gone but not all of its branches")
                return skip_of(b, resolve(own))
            if b.kind in ("seq", "use") and _passes_on(b) and any(bypassed(c) for c in _below(b)):
                # nothing of it is left (what the rewrite took out, and blocks a switch leaves out at
                # this use): it passes its input on, which changes the class of each use around it
                parts = b.path.split(".")
                self.touched.update(".".join(parts[:k]) for k in range(len(parts)))
                return skip_of(b, resolve(b.inputs[0]))
            changes: dict[str, object] = {}
            change = None
            if own in ops and ops[own] != b.op:
                changes["op"] = ops[own]
            if own in firsts and b.kind == "op":
                change = firsts[own]
            elif b.kind in ("seq", "use") and b.children and id(b.children[0]) in moved:
                old, new = moved[id(b.children[0])]
                if b.inputs[:1] == (old,):
                    change = (old, new)
            names = (*b.inputs, b.output)
            if change is not None:
                changes["inputs"] = (change[1], *b.inputs[1:])
            if change is not None or any(n in to for n in names):
                ins = changes.get("inputs", b.inputs)
                changes["inputs"] = tuple(resolve(n) for n in ins)
                changes["output"] = resolve(b.output)
            if b.entries and any(n in skip for n in b.entries):  # an input no longer read
                changes["entries"] = tuple(n for n in b.entries if n not in skip)
            if any(p in renamed for p in b.sources):  # what its `from:` names was renamed
                changes["sources"] = tuple(named(p) for p in b.sources)
            if changes:
                b = b.evolve(**changes)
            if change is not None:
                moved[id(b)] = change
            return b

        self._map(fn)
        self._stubs({old: resolve(old) for old in to})
        self._to, self._skip, self._ops, self._firsts, self._renamed = {}, set(), {}, {}, {}

    def _stubs(self, renamed: dict[str, str]) -> None:
        """The dormant graph reads main nodes through stubs: make those of ``renamed`` read the new ones."""
        record = info(self.g)
        d = record.dormant.graph
        hit = {old: new for old, new in renamed.items() if old in d and old != new}
        if not hit:
            return
        d = copy(d)
        for old, new in hit.items():
            if new in d:
                for dst in list(d.successors(old)):
                    d.add_edge(new, dst, **d.edges[old, dst])
                d.remove_node(old)
            else:
                d = nx.relabel_nodes(d, {old: new}, copy=True)
                set_node(d, new, Node("external", type=node(self.g, new).type))
        update_info(self.g, dormant=dataclasses.replace(record.dormant, graph=d))

    def _map(self, fn) -> None:
        map_roots(self.g, fn)
        self._index = None

    # -- templates ---------------------------------------------------------------------------
    def inline(self, path: str) -> None:
        """Turn the use at ``path`` into a named sequence (its body) of the class that holds it:
        its nodes' exprs, its blocks' conditions and its nested uses' arguments are translated
        into the terms of that class; the body block keeps the template's name (``template``)."""
        g = self.g
        use, outer = self.uses()[path]
        if use.entries:
            raise RewriteError(
                f"the use of template {use.template} at {path} reads several inputs and cannot be written "
                "into its caller's class: rewrite all of its uses alike, or none"
            )
        translate = lambda e: self._one_level(e, use, outer)  # noqa: E731
        nested: dict[str, Block] = {}  # the uses inside it, with their arguments translated

        def moved(record: Node) -> Node:
            exprs = {k: t for k, v in record.exprs.items() if (t := translate(v)) is not None}
            nulls = {k: t for k, v in record.nulls.items() if (t := translate(v)) is not None}
            return dataclasses.replace(
                record, instance=outer, scope=record.scope[:-1], exprs=frozen(exprs), nulls=frozen(nulls)
            )

        for n, record in list(nodes(g)):
            if record.instance == path:
                set_node(g, n, moved(record))
        dormant = info(g).dormant
        if any(r.instance == path for _, r in nodes(dormant.graph)):
            d = copy(dormant.graph)
            for n, record in list(nodes(d)):
                if record.instance == path:
                    set_node(d, n, moved(record))
            update_info(g, dormant=dataclasses.replace(dormant, graph=d))

        def body(b: Block) -> Block:
            changes: dict[str, object] = {}
            if b.when is not None and isinstance(b.when.expr, Sym):
                changes["when"] = When(b.when.value, translate(b.when.expr), b.when.switch, b.when.deps)
            if b.repeat is not None and b.repeat.count_expr is not None:  # None where this class has a number
                changes["repeat"] = dataclasses.replace(b.repeat, count_expr=translate(b.repeat.count_expr))
            if b.kind == "use":  # a nested use: its arguments are written by this class, its body by its own
                changes["args"] = tuple(dataclasses.replace(a, expr=translate(a.expr)) for a in b.args)
                nested[b.path] = dataclasses.replace(b, **changes)
                return nested[b.path]
            children = tuple(body(c) for c in b.children)
            if any(x is not y for x, y in zip(children, b.children, strict=True)):
                changes["children"] = children
            return dataclasses.replace(b, **changes) if changes else b

        inner = body(use.children[0])
        inner = dataclasses.replace(inner, template=use.template, when=inner.when or use.when, name=use.name)
        map_roots(g, lambda b: inner if b.kind == "use" and b.path == path and b.template == use.template else b, path)
        self._where().inlined(use, outer, nested)
        record = info(g)
        t = record.templates[use.template]
        left = tuple(i for i in t.instances if i != path)
        update_info(g, templates=frozen({**record.templates, use.template: dataclasses.replace(t, instances=left)}))
        self.touched.discard(path)
        self.touched.add(outer)

    def finish(self) -> nx.DiGraph:
        """Inline the uses whose bodies now differ from their template's other uses, recompute the
        symbolic shapes, put new nodes in the tree's order, and return the graph."""
        self.flush()
        if not self.touched:
            return self.g
        while True:
            # the index keeps the blocks as they were when it was made: an outer use whose body now
            # holds an inlined use must be compared as it is now
            self._index = None
            inline = self._disagreeing()
            if not inline:
                break
            self.symbols(self.g)  # the arguments' sizes as the rewritten graph has them
            self._index = None
            for path in sorted(inline, key=lambda p: -p.count(".")):
                if path in self.uses():
                    self.inline(path)
        if self._moved:
            self.g = _in_tree_order(self.g)
        self.symbols(self.g)
        self._index = None
        return self.g

    def _disagreeing(self) -> list[str]:
        """The uses to inline: of each template with a use whose body changed, those that do not
        agree with the largest group of uses that agree with one another."""
        by_template: dict[str, list[Block]] = {}
        for use, _ in self.uses().values():
            by_template.setdefault(use.template, []).append(use)
        out: list[str] = []
        for uses in by_template.values():
            if len(uses) < 2 or not any(u.path in self.touched for u in uses):
                continue
            sigs = {u.path: signature(self.g, u) for u in uses}
            classes: dict[object, list[Block]] = {}
            for u in uses:
                classes.setdefault(sigs[u.path], []).append(u)
            if len(classes) == 1:
                continue
            # the class most uses agree with (gated entries aside) is kept first
            support = {k: sum(len(m) for s, m in classes.items() if agree(k, s)) for k in classes}
            ordered = sorted(classes.values(), key=lambda c: (-support[sigs[c[0].path]], uses.index(c[0])))
            kept: list[object] = []
            for members in ordered:
                sig = sigs[members[0].path]
                if all(agree(sig, k) for k in kept):
                    kept.append(sig)
                else:
                    out += [u.path for u in members]
        return out


class _Index:
    """Where each node's block and each use is in the tree, found in one walk and patched by the
    changes that move few blocks. The blocks it holds may be older versions of the tree's (it is
    read for their paths, kinds and names, and for which uses hold which)."""

    def __init__(self, g: nx.DiGraph):
        self.owners: dict[str, tuple[Block, tuple[Block, ...]]] = {}
        self.uses: dict[str, tuple[Block, str]] = {}
        self.above: dict[int, tuple[Block, ...]] = {}  # by the id of a block it keeps (see blocks)
        self.blocks: list[Block] = []
        for b, above, off in with_parents(g):
            self.above[id(b)] = above
            self.blocks.append(b)
            if off:
                continue
            if b.kind in OWNERS:
                self.owners.setdefault(b.output, (b, above))
            elif b.kind == "use" and b.path not in self.uses:
                self.uses[b.path] = (b, _instance_of(above))

    def inlined(self, use: Block, outer: str, nested: dict[str, Block]) -> None:
        """The use ``use`` (held by ``outer``) is a sequence of ``outer``'s class now; ``nested`` are
        the uses it held, as they are now."""
        del self.uses[use.path]
        for path, block in nested.items():
            if path in self.uses:  # (a use a switch turns off is not listed)
                self.uses[path] = (block, outer if self.uses[path][1] == use.path else self.uses[path][1])
        drop = lambda above: tuple(a for a in above if a is not use) if any(a is use for a in above) else above  # noqa: E731
        self.owners = {n: (b, drop(above)) for n, (b, above) in self.owners.items()}
        self.above = {k: drop(above) for k, above in self.above.items()}


def _in_tree_order(g: nx.DiGraph) -> nx.DiGraph:
    """``g`` rebuilt with its nodes in the order the tree runs them (the input first, each merge
    after its branches), so that :func:`nasdsl.ir.order` lists a node a pass added where it runs."""
    rank: dict[str, int] = {info(g).input: 0}

    def visit(b: Block) -> None:
        for c in b.children:
            visit(c)
        if b.kind in OWNERS and b.output in g:
            rank.setdefault(b.output, len(rank))

    for root in [info(g).model, *(o.head for o in info(g).outputs if o.head is not None)]:
        visit(root)
    for n in g:
        rank.setdefault(n, len(rank))
    ordered = list(nx.lexicographical_topological_sort(g, key=rank.__getitem__))
    out = nx.DiGraph()
    out.graph.update(g.graph)
    out.add_nodes_from((n, g.nodes[n]) for n in ordered)
    out.add_edges_from(g.edges(data=True))
    return out


# ---------------------------------------------------------------------------
# Helpers


def _exist(g: nx.DiGraph, names: Iterable[str]) -> None:
    missing = [n for n in names if n not in g]
    if missing:
        raise RewriteError(f"no node {', '.join(missing)} to read")


def _instance_of(above: Sequence[Block]) -> str:
    for b in reversed(above):
        if b.kind == "use":
            return b.path
    return ""


def _inside(inner: str, outer: str) -> bool:
    if outer == "":
        return inner != ""
    return inner.startswith(outer + ".")


def _child_name(name: str, holder: str) -> bool:
    """Whether ``name`` is ``<holder>.<identifier>`` (or an identifier at the model's level)."""
    label = name[len(holder) + 1 :] if holder else name
    if holder and not name.startswith(holder + "."):
        return False
    return label.isidentifier()


def _holds(b: Block, node_name: str) -> bool:
    return any(x.kind in OWNERS and x.output == node_name for x in _walk(b))


def _walk(b: Block):
    yield b
    for c in b.children:
        yield from _walk(c)


__all__ = ["RewriteError", "Rewriter"]
