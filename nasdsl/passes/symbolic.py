"""Symbolic shapes: every size as the generated class that holds a node computes it.

A template's class is built for any of its uses: its layers' sizes are
expressions of its parameters (``c3x3``) and of its input's channel count, the
class's first argument (``in_channels``, or ``in_features`` for tokens). After
:func:`~nasdsl.passes.shapes.infer_shapes` has the concrete types, this pass
runs each op's own shape rule again with those expressions
(:class:`~nasdsl.ir.sym.Sym`) in place of the numbers: the node's input types
as its class sees them (``Node.in_sym``), its ``out`` or ``shape`` attributes
as written (``Node.exprs``), giving ``Node.sym``. A size the rule cannot
compute symbolically (a window over a symbolic size) falls back to the number
(and a class that would need a different number at another use is refused by
the code generator). The block tree gets the same for each block (``Block.sym``,
``Block.in_sym``), in the terms of the class that holds the block as an
attribute; a template use's output is translated into its caller's terms by
putting the use's arguments (``Arg.expr``) for the parameters.

So a backend reads every size from the IR: ``nn.Linear(in_features, ...)``'s
first argument is ``Node.in_sym[0][-1]``, never worked out a second time.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Mapping

import networkx as nx

from nasdsl import ir
from nasdsl.errors import NasdslError
from nasdsl.ir.sym import Sym, SymbolicError
from nasdsl.ops import OPS

_FAILED = (SymbolicError, TypeError, ValueError, ZeroDivisionError, NasdslError, AssertionError, KeyError)


def input_param(t: ir.TensorType | None) -> str:
    """The name of a class's first argument for an input of type ``t``."""
    if t is not None and t.channel_axis is not None and t.channel_axis == t.rank - 1 and t.rank > 1:
        return "in_features"
    return "in_channels"


class _Symbols:
    def __init__(self, g: nx.DiGraph):
        self.g = g
        self.info = ir.info(g)
        self.uses: dict[str, ir.Block] = {}  # instance path -> its use block
        self.parent: dict[str, str] = {}  # instance path -> the enclosing instance ("" for the model)
        #: instances whose path a nested use shares (a template whose body is one use): their nodes
        #: cannot tell the two classes apart, so their sizes are written as numbers
        self.ambiguous: set[str] = set()
        #: the identity nodes that stand for the inputs of a template with several: their class's argument
        self.entries: dict[str, str] = {}
        for root in ir.roots(g):
            self._index(root, "")
        self.memo: dict[tuple[str, str], tuple] = {}
        self.records: dict[str, ir.Node] = {}  # nodes with their symbols, main and dormant
        templates = dict(self.info.templates)
        chosen: dict[str, str] = {}
        several: dict[str, tuple[str, ...]] = {}
        for use in self.uses.values():
            if use.template not in chosen:
                chosen[use.template] = input_param(self._type(use.inputs[0]))
                if use.entries:  # s0_channels, s1_channels: each input's size
                    kinds = [input_param(self._type(n)).removeprefix("in_") for n in use.inputs]
                    several[use.template] = tuple(
                        f"{n}_{kind}" for n, kind in zip(templates[use.template].inputs, kinds, strict=True)
                    )
        self.templates = {
            name: dataclasses.replace(
                t,
                input_param=several[name][0] if name in several else chosen.get(name, t.input_param),
                input_params=several.get(name, ()),
            )
            for name, t in templates.items()
        }
        for use in self.uses.values():
            for entry, param in zip(use.entries, self.templates[use.template].input_params, strict=False):
                self.entries[entry] = param

    def _index(self, b: ir.Block, instance: str) -> None:
        if b.kind == "use":
            if b.path in self.uses:  # a template whose body is one use: both classes at one path
                self.ambiguous.add(b.path)
            else:
                self.uses[b.path] = b
                self.parent[b.path] = instance
            instance = b.path
        for c in b.children:
            self._index(c, instance)

    def _record(self, name: str) -> ir.Node:
        if name in self.records:
            return self.records[name]
        return ir.node(self.g, name)

    def _type(self, name: str) -> ir.TensorType | None:
        return self._record(name).type

    # -- symbols of a node as a class sees them --------------------------------------------
    def seen_from(self, name: str, instance: str) -> tuple | None:
        """The shape of node ``name``'s output in the terms of the class of ``instance``.

        A view from outside a use reads the views of the use's inputs from its caller, and those
        of the use before it, and so on: a model of 2,000 uses in a row is a chain of 2,000. The
        views a view needs are made first, from a stack, so that each is made with the ones it
        reads at hand (no recursion as deep as the chain)."""
        key = (name, instance)
        memo = self.memo
        if key in memo:
            return memo[key]
        unkept: dict[tuple[str, str], None] = {}  # views of nodes without a type: None, not memoised
        stack = [key]
        while stack:
            top = stack[-1]
            if top in memo or top in unkept:
                stack.pop()
                continue
            missing = [k for k in self._needs(*top) if k not in memo and k not in unkept]
            if missing:
                stack.extend(missing)
                continue
            stack.pop()
            out = self._seen_from(*top)
            if top not in memo:
                unkept[top] = out
        return memo[key] if key in memo else unkept[key]

    def _needs(self, name: str, instance: str) -> list[tuple[str, str]]:
        """The views that :meth:`_seen_from` of this one reads (see :meth:`seen_from`)."""
        record = self._record(name)
        if record.type is None:
            return []
        own = record.instance if record.op not in ("input", "external") else ""
        if own in self.ambiguous or instance in self.ambiguous or own == instance or not _inside(own, instance):
            return []
        child = own
        while self.parent.get(child, "") != instance:
            child = self.parent[child]
        inner = (name, child)
        if inner not in self.memo:
            return [inner]
        sym = self.memo[inner]
        if sym is None or not any(isinstance(d, Sym) for d in sym):
            return []
        use = self.uses[child]
        tmpl = self.templates[use.template]
        params = tmpl.input_params or (tmpl.input_param,)
        return [(source, self.parent[child]) for _, source in zip(params, use.inputs, strict=False)]

    def _seen_from(self, name: str, instance: str) -> tuple | None:
        key = (name, instance)
        if key in self.memo:
            return self.memo[key]
        record = self._record(name)
        if record.type is None:
            return None
        own = record.instance if record.op not in ("input", "external") else ""
        if own in self.ambiguous or instance in self.ambiguous:
            out = record.type.shape
        elif own == instance:
            out = record.sym if record.sym is not None else record.type.shape
        elif _inside(own, instance):
            child = own
            while self.parent.get(child, "") != instance:
                child = self.parent[child]
            out = self._translate(self.seen_from(name, child), child)
        else:  # the input of the class's use: its channel count is the class's first argument
            out = self._input(record.type, instance)
        self.memo[key] = out
        return out

    def _input(self, t: ir.TensorType, instance: str) -> tuple:
        use = self.uses.get(instance)
        if use is None:
            return t.shape
        c = t.channel_axis
        shape = list(t.shape)
        if c is not None:
            shape[c] = Sym.name(self.templates[use.template].input_param)
        return tuple(shape)

    def _translate(self, sym: tuple | None, instance: str) -> tuple | None:
        """A shape in the terms of ``instance``'s class, in the terms of its caller."""
        if sym is None or not any(isinstance(d, Sym) for d in sym):
            return sym
        use = self.uses[instance]
        values: dict[str, object] = {}
        for a in use.args:
            v = a.expr if a.expr is not None else a.value
            if isinstance(v, (int, Sym)) and not isinstance(v, bool):
                values[a.name] = v
        tmpl = self.templates[use.template]
        for param, source in zip(tmpl.input_params or (tmpl.input_param,), use.inputs, strict=False):
            outer = self.seen_from(source, self.parent[instance])
            t = self._type(source)
            if outer is not None and t is not None and t.channel_axis is not None:
                values[param] = outer[t.channel_axis]
        out = []
        for d, concrete in zip(sym, self._concrete(sym), strict=True):
            if isinstance(d, Sym):
                try:
                    d = d.substitute(values)
                except _FAILED:
                    d = concrete
                if isinstance(d, Sym) and not d.names <= _caller_names(self, instance):
                    d = concrete  # names the caller does not have: the number
            out.append(d)
        return tuple(out)

    def _concrete(self, sym: tuple) -> tuple:
        return tuple(d if isinstance(d, int) else None for d in sym)

    # -- nodes -------------------------------------------------------------------------------
    def node(self, name: str, record: ir.Node, graph: nx.DiGraph) -> ir.Node:
        if record.op in ("input", "external") or record.type is None:
            sym = record.type.shape if record.type else None
            if record.op == "input" and record.sym != sym:
                record = dataclasses.replace(record, sym=sym)
            self.records[name] = record
            return record
        sources = ir.inputs(graph, name)
        in_sym = tuple(self.seen_from(s, record.instance) for s in sources)
        sym = record.type.shape
        if name in self.entries:  # an input of a template with several: its size is the class's argument
            c = record.type.channel_axis
            if c is not None:
                sym = tuple(Sym.name(self.entries[name]) if i == c else d for i, d in enumerate(sym))
            if record.sym != sym or record.in_sym != (sym,):
                record = dataclasses.replace(record, sym=sym, in_sym=(sym,))
            self.records[name] = record
            return record
        ambiguous = record.instance in self.ambiguous
        # what the views below are worked out from, besides the record's own fields
        context = (in_sym, ambiguous, tuple(self._type(src) for src in sources))
        seen = _SEEN.get(id(record)) if record.in_sym is not None else None  # (else never viewed)
        if seen is not None and seen[0]() is record and seen[1] == context:
            self.records[name] = record  # its views are those worked out for it in this context
            return record
        if ambiguous or record.op not in OPS:  # (an op a backend will refuse)
            pass
        elif any(x is not None and any(isinstance(d, Sym) for d in x) for x in in_sym) or _symbolic_attrs(record):
            try:
                types = [ir.TensorType(tuple(s), self._type(src).axes) for s, src in zip(in_sym, sources, strict=True)]
                attrs = {**record.attrs, **_attr_exprs(record)}
                out = OPS[record.op].infer(types, attrs).shape
                sym = tuple(d if isinstance(d, Sym) else c for d, c in zip(out, record.type.shape, strict=True))
            except _FAILED:
                sym = _channels_kept(record, in_sym, self._type(sources[0]) if sources else None)
            else:
                if OPS[record.op].merge and len(in_sym) > 1:
                    sym = _merged_sizes(sym, in_sym, [self._type(src).shape for src in sources])
        if record.sym != sym or record.in_sym != in_sym:
            record = dataclasses.replace(record, sym=sym, in_sym=in_sym)
        _remember(record, context)
        self.records[name] = record
        return record


#: the records whose views this pass worked out, by id, for as long as each record lives (a weak
#: reference, whose end takes the entry out), with what they were worked out from: (reference,
#: context). A pass leaves most records as they were, so the views of a graph derived from one seen
#: before are mostly found here.
_SEEN: dict[int, tuple[weakref.ref, tuple]] = {}


def _remember(record: ir.Node, context: tuple) -> None:
    """``record``, with its views, as the graphs derived from its graph will hold it."""
    key = id(record)
    seen = _SEEN.get(key)
    if seen is not None and seen[0]() is record:
        _SEEN[key] = (seen[0], context)
    else:
        _SEEN[key] = (weakref.ref(record, lambda _, key=key: _SEEN.pop(key, None)), context)


def _channels_kept(record: ir.Node, in_sym: tuple, source: ir.TensorType | None) -> tuple:
    """The sizes of a node whose rule cannot run on its class's expressions (a window over a grid of
    a template's parameters): the numbers, but the input's channel expression where the op keeps
    its input's channels on the same axis (a pooling window), so that the class reads the same at
    every use."""
    t = record.type
    c = t.channel_axis
    if OPS[record.op].lead != "same" or c is None or not in_sym or in_sym[0] is None or source is None:
        return t.shape
    if source.channel_axis != c or len(in_sym[0]) != t.rank or source.shape[c] != t.shape[c]:
        return t.shape
    return tuple(in_sym[0][i] if i == c else d for i, d in enumerate(t.shape))


def _merged_sizes(sym: tuple, in_sym: tuple, concrete: list[tuple]) -> tuple:
    """The output sizes of a merge whose inputs share a size under different expressions (a
    residual sum of the class's input, ``in_channels``, and of its body, ``width_out``): the
    expression of an input that is not the class's first argument, where one is (a parameter's
    expression, never a number in place of ``in_channels``). So the size
    reads the same at every use of the template, whichever branch a parameter switches off."""
    out = list(sym)
    for i, d in enumerate(sym):
        sizes = {c[i] for c in concrete if len(c) == len(sym)}
        if len(sizes) != 1 or not isinstance(d, Sym) or not d.names & _FIRST_ARGUMENTS:
            continue
        other = [x[i] for x in in_sym if x is not None and len(x) == len(sym)]
        better = [x for x in other if isinstance(x, Sym) and not x.names & _FIRST_ARGUMENTS]  # (not a number)
        if better:
            out[i] = better[0]
    return tuple(out)


#: the names a class's first argument takes (input_param)
_FIRST_ARGUMENTS = frozenset({"in_channels", "in_features"})


def _inside(own: str, instance: str) -> bool:
    """Whether instance ``own`` lies within ``instance`` (the model holds every instance)."""
    if instance == "":
        return own != ""
    return own.startswith(instance + ".")


def _caller_names(s: _Symbols, instance: str) -> frozenset[str]:
    """The names an expression may use in the class that holds the use ``instance``: that class's
    parameters and first argument, or (in the model) the spec's variables."""
    outer = s.parent[instance]
    if outer == "":
        return frozenset(s.info.variables)
    use = s.uses[outer]
    t = s.templates[use.template]
    return frozenset({t.input_param, *t.input_params, *(p.name for p in t.params)})


def _symbolic_attrs(record: ir.Node) -> bool:
    """Whether an attribute that enters the output's shape is written as an expression."""
    return bool(_attr_exprs(record))


def _attr_exprs(record: ir.Node) -> Mapping[str, object]:
    """The node's symbolic attributes as written (``out: c3x3``), where they are expressions."""
    op = OPS[record.op]
    out: dict[str, object] = {}
    for key, expr in record.exprs.items():
        if not op.attr_index[key].symbolic:
            continue
        if isinstance(expr, Sym) or (isinstance(expr, int) and not isinstance(expr, bool)):
            out[key] = expr
        elif isinstance(expr, tuple) and all(isinstance(x, (int, Sym)) and not isinstance(x, bool) for x in expr):
            out[key] = expr
    return out


def infer_symbols(g: nx.DiGraph) -> None:
    """Set ``sym`` and ``in_sym`` on every node (main and dormant graph), ``sym`` and ``in_sym`` on
    every block, and each template's ``input_param``, in place (``g`` is the shape pass's own)."""
    s = _Symbols(g)
    info = s.info
    dormant = info.dormant
    for graph in (g, dormant.graph):
        for name in ir.order(graph):
            record = ir.node(graph, name) if graph is not g else g.nodes[name][ir.KEY]
            if graph is dormant.graph and record.op == "external":
                continue
            new = s.node(name, record, graph)
            graph.nodes[name][ir.KEY] = new

    def rebuild(b: ir.Block, instance: str) -> ir.Block:
        inner = b.path if b.kind == "use" else instance
        children = tuple(rebuild(c, inner) for c in b.children)
        sym = s.seen_from(b.output, instance) if b.output else None
        in_sym = s.seen_from(b.inputs[0], instance) if b.inputs else None
        in_syms = tuple(s.seen_from(n, instance) for n in b.inputs) if len(b.inputs) > 1 else None
        if (
            all(x is y for x, y in zip(children, b.children, strict=True))
            and b.sym == sym
            and b.in_sym == in_sym
            and b.in_syms == in_syms
        ):
            return b
        return b.evolve(children=children, sym=sym, in_sym=in_sym, in_syms=in_syms)

    def head(o: ir.Output) -> ir.Output:
        return o if o.head is None else dataclasses.replace(o, head=rebuild(o.head, ""))

    ir.update_info(
        g,
        model=rebuild(info.model, ""),
        outputs=tuple(head(o) for o in info.outputs),
        templates=ir.frozen(s.templates),
        dormant=dataclasses.replace(dormant, outputs=tuple(head(o) for o in dormant.outputs)),
    )


__all__ = ["infer_symbols", "input_param"]
