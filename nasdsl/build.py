"""Expand a parsed spec into the graph IR (see :mod:`nasdsl.ir` and ``docs/ir.md``).

Expansion evaluates every expression, binds template arguments, resolves
references and enforces the expansion limits; shapes are left to the
:func:`nasdsl.passes.shapes.infer_shapes` pass. Each value is evaluated once
with the spec's values and once symbolically (template parameters, and the
model's variables, as :class:`~nasdsl.ir.sym.Sym`), so that the graph says how a
generated class computes it; the model variables each value depends on are
recorded beside it. A block that a boolean variable switches off is expanded
all the same, into the graph's dormant part, so that a generated class can take
that variable as an argument.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections import ChainMap
from collections.abc import Mapping
from dataclasses import dataclass, field

import networkx as nx

from nasdsl import ir
from nasdsl.errors import GraphError, LimitError, NasdslError, SpecError
from nasdsl.ir.sym import Sym, SymbolicError, is_identifier
from nasdsl.ir.tree import bypassed, map_tree, retarget, skip_of
from nasdsl.ops import MAX_CHANNELS, OPS, REQUIRED, SPEC_OPS, check_int, describe
from nasdsl.spec import (
    INPUT_REF,
    MAX_REPEAT,
    Block,
    MergeBlock,
    OpBlock,
    RefBlock,
    RepeatBlock,
    SeqBlock,
    Spec,
    Template,
    UseBlock,
    Value,
    check_name,
    did_you_mean,
    flatten,
    raise_errors,
)

MAX_NODES = 100_000
MAX_TEMPLATE_DEPTH = 64
MAX_SPATIAL = 1 << 16
MAX_LOSS_WEIGHT = 1e6

_NO_DEPS: frozenset[str] = frozenset()
#: the record of a dormant graph's stub for a node of the main graph it reads
_EXTERNAL = ir.Node("external")


@dataclass
class _Scope:
    """Where a value is evaluated: the model, or one template use."""

    root: str  # qualified path of the scope (model: "")
    env: Mapping[str, object]  # names to their values
    sym: Mapping[str, object]  # names as the enclosing class sees them (Sym for its parameters)
    deps: Mapping[str, frozenset[str]]  # names to the model variables their values depend on
    switches: Mapping[str, str | None]  # names that stand for one boolean model variable, to that variable
    templates: tuple[str, ...]  # template names being expanded, outermost first
    instance: str = ""  # the innermost template use ("" in the model)
    #: for each name in ``env`` that the spec wrote somewhere: that value and the scope it is evaluated in
    sources: Mapping[str, tuple[Value, _Scope]] = field(default_factory=dict)
    input: str = ""  # the node the template body (or the model) reads: what `ref: in` names
    #: names that stand for values here: a template's inputs (``s0``), a repeat's ``previous`` values
    named: Mapping[str, str] = field(default_factory=dict)
    #: the template whose inputs are named (``in`` names none of them), or ""
    several: str = ""

    def blame(self, value: Value) -> Value:
        """The value the user wrote that ``value`` stands for.

        A value that is a bare name (``out: c3x3``) stands for what that name was
        bound to: a template argument at the use site, a parameter's default or a
        variable (maybe from ``--set``). Errors about the value are reported there.
        """
        scope: _Scope = self
        for _ in range(MAX_TEMPLATE_DEPTH + len(self.sources) + 1):
            name = _bare_name(value)
            if name is None or name not in scope.sources:
                break
            value, scope = scope.sources[name]
        return value

    def evaluate(self, value: Value, literals: tuple[str, ...] = ()) -> tuple[object, object, frozenset[str]]:
        """``value`` here: its value, its expression for the enclosing class (None if it
        has none) and the model variables it depends on."""
        concrete = value.evaluate(self.env, literals)
        if not value.names:  # a literal is its own expression
            return concrete, tuple(concrete) if isinstance(concrete, list) else concrete, _NO_DEPS
        return concrete, self.symbolic(value, literals), self.depends(value)

    def symbolic(self, value: Value, literals: tuple[str, ...] = ()) -> object:
        try:
            result = value.evaluate(self.sym, literals)
        except (SymbolicError, NasdslError):
            return None
        return tuple(result) if isinstance(result, list) else result

    def depends(self, value: Value) -> frozenset[str]:
        names = value.names
        if not names:
            return _NO_DEPS
        return frozenset().union(*(self.deps.get(n, _NO_DEPS) for n in names))

    def switch(self, value: Value) -> str | None:
        name = _bare_name(value)
        return self.switches.get(name) if name is not None else None  # None also where a parameter hides it


def _bare_name(value: Value) -> str | None:
    """The name a value consists of (``out: c3x3``), or None."""
    if value.items is not None or not isinstance(value.raw, str):
        return None
    name = value.raw.strip()
    return name if is_identifier(name) else None


class _Builder:
    def __init__(self, spec: Spec, variables: dict[str, object], max_nodes: int):
        self.spec = spec
        self.variables = variables
        self.max_nodes = max_nodes
        self.g = nx.DiGraph()
        self.dormant_graph = nx.DiGraph()
        self.count = 0
        self.paths: dict[str, str] = {}  # block path -> output node (live blocks)
        #: paths of the dormant blocks being expanded, innermost last (a ref there may read them)
        self.dormant_paths: list[dict[str, str]] = []
        self.guards: tuple[str, ...] = ()  # the switches around the block being expanded
        self.dormant_errors: dict[str, str] = {}
        self.instances: dict[str, list[str]] = {}  # template -> use paths, in the order they finished
        self.param_info: dict[str, tuple[ir.Param, ...]] = {}
        #: what every scope knows of the variables: the variables each depends on, the boolean ones
        self.variable_deps: dict[str, frozenset[str]] = {}
        #: the variables that repeat counts depend on (they decide how many blocks there are)
        self.structural: set[str] = set()
        self.variable_switches: dict[str, str] = {n: n for n, v in variables.items() if isinstance(v, bool)}
        #: where each variable's value was written (a variable passed to build() has no place)
        self.sources: dict[str, tuple[Value, _Scope]] = {}
        #: the nodes that are a `zero` (nothing): an op that reads one is left out, an add drops it
        self.zeros: set[str] = set()
        #: the live nodes in the order they were made
        self.made: list[str] = []

    @property
    def dormant(self) -> bool:
        return bool(self.dormant_paths)

    # -- nodes ---------------------------------------------------------------
    def add_node(
        self,
        name: str,
        op: str,
        attrs: dict,
        given: tuple[str, ...],
        block: Block | None,
        phase: str,
        inputs: tuple[str, ...],
        scope: _Scope,
        exprs: dict[str, object] | None = None,
        deps: dict[str, frozenset[str]] | None = None,
        init: dict[str, ir.InitRule] | None = None,
        nulls: dict[str, object] | None = None,
    ) -> str:
        if self.count >= self.max_nodes:
            raise LimitError(
                f"more than {self.max_nodes} nodes after template expansion (raise it with --max-nodes)",
                location=block.loc if block else None,
                path=block.path if block else None,
            )
        g = self.dormant_graph if self.dormant else self.g
        dormant = self.dormant_graph
        if name in self.g or (dormant and name in dormant and ir.node(dormant, name).op != "external"):
            raise GraphError(f"duplicate node name '{name}'", location=block.loc if block else None, path=name)
        self.count += 1
        record = ir.Node(
            op,
            ir.frozen(attrs),
            given=given,
            exprs=ir.frozen(exprs),
            deps=ir.frozen(deps),
            loc=block.loc if block else self.spec.input.loc,
            keypath=block.path if block else "input",
            phase=phase,
            when=self.guards,
            scope=scope.templates,
            instance=scope.instance,
            init=ir.frozen(init),
            nulls=ir.frozen(nulls),
        )
        g.add_node(name, **{ir.KEY: record})
        if g is self.g:
            self.made.append(name)
        for i, src in enumerate(inputs):
            if src not in g:  # a dormant node reading a live one: a stub stands for it
                g.add_node(src, **{ir.KEY: _EXTERNAL})
            g.add_edge(src, name, index=i)
        return name

    def lookup(self, path: str) -> str | None:
        for paths in reversed(self.dormant_paths):
            if path in paths:
                return paths[path]
        return self.paths.get(path)

    def record(self, path: str, node: str) -> None:
        (self.dormant_paths[-1] if self.dormant else self.paths)[path] = node

    # -- blocks --------------------------------------------------------------
    def expand(
        self, block: Block, name: str, path: str, inputs: tuple[str, ...], scope: _Scope, phase: str
    ) -> ir.Block:
        if block.phase != "both":
            phase = block.phase
        named = (block.source,) if block.source is not None else block.sources  # what `from:` names
        if block.source is not None:  # `from:` this block reads another block's output
            where = {"location": block.source_loc or block.loc, "path": f"{block.path}.from"}
            inputs = (self.resolve(block.source, scope, path, where),)
        elif block.sources:  # `from: [a, b]`: several values, in order
            inputs = tuple(
                self.resolve(
                    source,
                    scope,
                    path,
                    {
                        "location": block.sources_locs[k] if block.sources_locs else block.loc,
                        "path": f"{block.path}.from[{k}]",
                    },
                )
                for k, source in enumerate(block.sources)
            )
        when = None
        if block.when is not None:
            try:
                cond = _condition(block.when, scope, f"node {path}")
            except SpecError as e:
                raise _in_node(e, scope, path) from None
            when = ir.When(cond, scope.symbolic(block.when), scope.switch(block.when), scope.depends(block.when))
            if not cond:
                if when.switch is not None:
                    return _named(self._dormant(block, name, path, inputs, scope, phase, when), named, scope)
                self.record(path, inputs[0])  # a reference to a switched-off block reads its input
                return _named(_skip(block, name, path, inputs, phase, when), named, scope)
        outer = self.guards
        if when is not None and when.switch is not None:
            self.guards = (*outer, when.switch)
        try:
            tree = self._expand(block, name, path, inputs, scope, phase, when)
        finally:
            self.guards = outer
        self.record(path, tree.passed)
        return _named(tree, named, scope)

    def _expand(
        self, block: Block, name: str, path: str, inputs: tuple[str, ...], scope: _Scope, phase: str, when
    ) -> ir.Block:
        if isinstance(block, OpBlock):
            return self._op(block, name, path, inputs, scope, phase, when)
        if isinstance(block, SeqBlock):
            return self._seq(block, name, path, inputs, scope, phase, when)
        if isinstance(block, MergeBlock):
            return self._merge(block, name, path, inputs, scope, phase, when)
        if isinstance(block, UseBlock):
            return self._use(block, name, path, inputs, scope, phase, when)
        if isinstance(block, RepeatBlock):
            return self._repeat(block, name, path, inputs, scope, phase, when)
        assert isinstance(block, RefBlock)
        return self._ref(block, name, path, inputs, scope, phase, when)

    def _dormant(
        self, block: Block, name: str, path: str, inputs: tuple[str, ...], scope: _Scope, phase: str, when: ir.When
    ) -> ir.Block:
        """A block its switch turns off: expanded into the dormant graph; if that fails,
        the switch is recorded as one that a generated class cannot take."""
        nodes_before = len(self.dormant_graph)
        count_before = self.count
        outer = self.guards
        self.dormant_paths.append({})
        self.guards = (*outer, when.switch)
        try:
            tree = self._expand(block, name, path, inputs, scope, phase, when)
        except NasdslError as e:
            self.dormant_errors.setdefault(when.switch, e.format())
            added = list(self.dormant_graph.nodes)[nodes_before:]
            self.dormant_graph.remove_nodes_from(added)
            self.count = count_before
            for uses in self.instances.values():
                uses[:] = [u for u in uses if not (u == path or u.startswith(path + "."))]
            tree = None
        finally:
            self.guards = outer
            self.dormant_paths.pop()
        self.record(path, inputs[0])  # with the switch off, a reference reads the block's input
        if tree is None:
            return _skip(block, name, path, inputs, phase, dataclasses.replace(when, switch=None))
        return tree

    def _attrs(self, b: OpBlock | MergeBlock, path: str, scope: _Scope) -> tuple[dict, dict, dict, tuple, dict]:
        """An op's (or a merge's) attributes here: normalised values, expressions, the model
        variables each depends on, the names the spec gave, and the attributes a template
        parameter that is null here leaves not given (each as the expression the class writes)."""
        opdef = OPS[b.op]
        given: dict[str, object] = {}
        exprs: dict[str, object] = {}
        deps: dict[str, frozenset[str]] = {}
        nulls: dict[str, object] = {}
        for key, value in b.attrs:
            try:
                concrete, expr, dep = scope.evaluate(value, opdef.attr_index[key].literals)
            except SpecError as e:
                raise _in_node(_where_null(e, value, scope), scope, path) from None
            if concrete is None:  # null, or a parameter given null: the attribute is not given, as if left out
                if opdef.attr_index[key].default is REQUIRED:
                    e = SpecError(f"expected a value for {key}, which {b.op} requires, got null", path=key)
                    raise self._attr_error(e, b, path, scope) from None
                if expr is not None:  # a parameter: the class writes the attribute from it
                    nulls[key] = expr
                continue
            given[key] = concrete
            if expr is not None:
                exprs[key] = expr
            if dep:
                deps[key] = dep
        try:
            attrs = opdef.normalise(given)
        except SpecError as e:
            raise self._attr_error(e, b, path, scope) from None
        return attrs, exprs, deps, tuple(given), nulls

    def _op(
        self, b: OpBlock, name: str, path: str, inputs: tuple[str, ...], scope: _Scope, phase: str, when
    ) -> ir.Block:
        attrs, exprs, deps, given, nulls = self._attrs(b, path, scope)
        if inputs[0] in self.zeros:  # an op that reads nothing is nothing: left out, its parameters too
            return _skip(b, name, path, inputs[:1], phase, None)
        init = {k: ir.InitRule(r.scheme, r.args) for k, r in b.init}
        node = self.add_node(path, b.op, attrs, given, b, phase, inputs[:1], scope, exprs, deps, init, nulls)
        if b.op == "zero":
            self.zeros.add(node)
        return _block("op", name, path, b, inputs[:1], node, phase, when, op=b.op)

    def _attr_error(self, e: SpecError, b: OpBlock | MergeBlock, node: str, scope: _Scope) -> SpecError:
        """An error about attribute ``e.path`` of op block ``b``, reported where its value was written."""
        value = dict(b.attrs).get(e.path) if e.path else None
        if value is None:  # a missing attribute, or an error about several
            return _in_node(SpecError(e.message, location=b.loc, path=b.path), scope, node)
        origin = scope.blame(value)
        if origin is value:
            return _in_node(SpecError(e.message, location=value.loc, path=value.path), scope, node)
        blamed = SpecError(f"{e.message} (used as '{e.path}' of node {node})", location=origin.loc, path=origin.path)
        blamed.node_named = True  # type: ignore[attr-defined]
        return blamed

    def _seq(
        self, b: SeqBlock, name: str, path: str, inputs: tuple[str, ...], scope: _Scope, phase: str, when
    ) -> ir.Block:
        children = []
        current = inputs
        errors: list[NasdslError] = []
        for child_name, child, child_scope in self._items(b, scope, path):
            child_path = _join(path, child_name)
            try:
                sub = self.expand(child, child_name, child_path, current, child_scope, phase)
            except NasdslError as e:
                if self.dormant:
                    raise
                # report it and go on with the next entry (its input passes through): check finds all
                errors.extend(flatten(e))
                self.record(child_path, current[0])
                for value_name in child.previous if isinstance(child, RepeatBlock) else ():  # read after it
                    self.record(_join(child_path, value_name), current[0])
                sub = _skip(child, child_name, child_path, current, phase, None)
            children.append(sub)
            current = (sub.passed,)
        raise_errors(errors)
        return _block("seq", name, path, b, inputs, current[0], phase, when, children=children, named=b.named)

    def _items(self, b: SeqBlock, scope: _Scope, path: str):
        """(name, block, scope) of each child of a sequence; a ``flat`` repeat in a list gives
        its iterations' items as items of the list, numbered on (VGG's ``features.0`` ... ``43``)."""
        if not any(isinstance(c, RepeatBlock) and c.flat for _, c in b.items):
            for name, child in b.items:
                yield name, child, scope
            return
        at = 0
        for _, child in b.items:
            if not (isinstance(child, RepeatBlock) and child.flat):
                yield str(at), child, scope
                at += 1
                continue
            if b.named or not (isinstance(child.body, SeqBlock) and not child.body.named):
                raise SpecError(
                    "expected a repeat that is an item of a list and repeats a list for 'flat: true', got "
                    + ("an entry of a named sequence" if b.named else "a repeat of a block that is no list"),
                    location=child.loc,
                    path=f"{child.path}.flat",
                )
            for i in range(self._count(child, scope, path)):
                inner = self._indexed(scope, child.index, i)
                for _, item in child.body.items:
                    yield str(at), item, inner
                    at += 1

    def _count(self, b: RepeatBlock, scope: _Scope, path: str) -> int:
        self.structural |= scope.depends(b.count)
        for piece in b.names:
            if isinstance(piece, Value):
                self.structural |= scope.depends(piece)
        try:
            count = b.count.evaluate(scope.env)
        except SpecError as e:
            raise _in_node(e.at(location=b.count.loc, path=b.count.path), scope, path) from None
        # a count a parameter gives (null, 0, 2.5): reported where the argument was written, as a `when`'s is
        origin = scope.blame(b.count)
        used = f" (used as the count of repeat {path})" if origin is not b.count else ""
        if count is None:
            raise SpecError(f"expected an integer > 0, got null{used}", location=origin.loc, path=origin.path)
        try:
            return check_int(count, 1, MAX_REPEAT)
        except SpecError as e:
            if origin is b.count:
                raise _in_node(e.at(location=b.count.loc, path=b.count.path), scope, path) from None
            raise SpecError(f"{e.message}{used}", location=origin.loc, path=origin.path) from None

    @staticmethod
    def _indexed(scope: _Scope, index: str, i: int) -> _Scope:
        """``scope`` with a repeat's index bound to ``i``: in the symbolic scope too, so that a
        class writes each repetition's values (a loop, if any, is found from them)."""
        return dataclasses.replace(
            scope,
            env=_layer({index: i}, scope.env),
            sym=_layer({index: i}, scope.sym),
            deps=_layer({index: _NO_DEPS}, scope.deps),
            switches=_layer({index: None}, scope.switches),
        )

    def _repeat(
        self, b: RepeatBlock, name: str, path: str, inputs: tuple[str, ...], scope: _Scope, phase: str, when
    ) -> ir.Block:
        """``b.body`` ``count`` times in sequence, each with the index bound to 0, 1, ...; the
        children are named by the pattern or by the index."""
        if b.flat:
            raise SpecError(
                "expected a repeat that is an item of a list and repeats a list for 'flat: true', "
                "got one that is not an item of a list",
                location=b.loc,
                path=f"{b.path}.flat",
            )
        count = self._count(b, scope, path)
        children = []
        current = inputs
        names: set[str] = set()
        # `previous: [p2, p1]`: the values of the repetitions before, the repeat's inputs before the first
        values = list(inputs if len(inputs) == len(b.previous) else inputs[:1] * len(b.previous))
        for value_name in b.previous:
            if value_name in scope.named or self.lookup(_join(scope.root, value_name)) is not None:
                raise SpecError(
                    f"'{value_name}' in 'previous' is already the name of a value here: give another name",
                    location=b.loc,
                    path=f"{b.path}.previous",
                )
        if b.previous:
            current = (values[-1],)
        for i in range(count):
            inner = self._indexed(scope, b.index, i)
            if b.previous:
                inner = dataclasses.replace(
                    inner, named=_layer(dict(zip(b.previous, values, strict=True)), scope.named)
                )
            child_name = _repeat_name(b, inner, i)
            if child_name in names:
                raise SpecError(f"the name pattern gives '{child_name}' twice", location=b.loc, path=f"{b.path}.name")
            names.add(child_name)
            sub = self.expand(b.body, child_name, _join(path, child_name), current, inner, phase)
            children.append(sub)
            current = (sub.passed,)
            if b.previous:
                values = [*values[1:], sub.passed]
        for value_name, value in zip(b.previous, values, strict=True):  # `stage.s0`: their values after the last
            if value_name in names:
                raise SpecError(
                    f"'{value_name}' in 'previous' is also the name of a repetition",
                    location=b.loc,
                    path=f"{b.path}.previous",
                )
            self.record(_join(path, value_name), value)
        counted = scope.symbolic(b.count)
        count_expr = counted if isinstance(counted, Sym) else None
        repeat = ir.Repeat(b.index, count, _pattern_text(b.names), count_expr=count_expr, previous=b.previous)
        return _block(
            "seq", name, path, b, inputs, current[0], phase, when, children=children, named=bool(b.names), repeat=repeat
        )

    def _merge(
        self, b: MergeBlock, name: str, path: str, inputs: tuple[str, ...], scope: _Scope, phase: str, when
    ) -> ir.Block:
        children = []
        outs: list[str] = []
        #: the branches that are a zero: (index, name, block, path, the nodes they made)
        zeros: list[tuple[int, str, Block, str, list[str]]] = []
        positions = self._index_positions(b, scope, path) if b.index is not None else {}
        for k, (branch_name, branch) in enumerate(b.branches):
            branch_path = _join(path, branch_name)
            made_before = len(self.made)
            reads = (inputs[k],) if b.sources else inputs  # `from: [a, b]`: one value a branch
            inner = scope
            if b.index is not None:  # `index: {j: [...]}`: the position of the value the branch reads
                read = reads[0]
                if branch.source is not None:
                    read = self.resolve(
                        branch.source,
                        scope,
                        branch_path,
                        {"location": branch.source_loc, "path": f"{branch.path}.from"},
                    )
                if read not in positions:
                    raise SpecError(
                        f"branch '{branch_name}' reads a value that is not in the list of 'index'",
                        location=b.index_loc,
                        path=f"{b.path}.index",
                    )
                inner = self._indexed(scope, b.index[0], positions[read])
            sub = self.expand(branch, branch_name, branch_path, reads, inner, phase)
            if (b.sources or b.source is not None) and not sub.sources and sub.kind != "ref":
                # the value `from: [a, b]` names for this branch, or the one `from: a` names for every branch
                named = b.sources[k] if b.sources else b.source
                sub = dataclasses.replace(sub, sources=_source_paths((named,), scope))
            children.append(sub)
            if sub.passed in self.zeros and not sub.dormant and not (sub.kind == "skip" and sub.when is not None):
                if b.op != "add":
                    raise _in_node(
                        SpecError(
                            f"branch '{branch_name}' of this {b.op} is a zero (nothing): only an add leaves a zero "
                            "out (of its sum)",
                            location=branch.loc,
                            path=branch.path,
                        ),
                        scope,
                        path,
                    )
                zeros.append((len(children) - 1, branch_name, branch, branch_path, self.made[made_before:]))
                continue
            if sub.kind == "skip" or sub.dormant:
                continue  # a branch its `when` switches off is absent from the merge (not its input passed on)
            out = sub.passed
            if out in outs:  # the same value twice (two refs to one node): one edge each, via an identity
                out = self.add_node(sub.path, "identity", {}, (), branch, phase, (out,), scope)
                children[-1] = _retarget(sub, sub.inputs, out)
            outs.append(out)
        if zeros and not self.dormant:
            # a zero is left out of the sum: its branch is absent, and the nodes it made go; a sum of
            # zeros is a zero (the first zero branch's)
            dropped = zeros[0 if outs else 1 :]
            for _, _, _, branch_path, made in dropped:
                self._drop(made, branch_path)
            gone = {i for i, *_ in dropped}
            kept = [c for i, c in enumerate(children) if i not in gone]
            if not outs:
                first = children[zeros[0][0]]
                return _block(
                    "seq", name, path, b, first.inputs, first.passed, phase, when, children=kept, named=b.named
                )
            children = kept
        if not outs:
            raise _in_node(
                SpecError(f"every branch of this {b.op} is switched off by its `when`", location=b.loc, path=b.path),
                scope,
                path,
            )
        if len(outs) == 1:  # a merge left with one branch is that branch
            self._attrs(b, path, scope)  # its attributes are still checked
            live = next(c for c in children if c.passed == outs[0] and c.kind != "skip")
            # it reads what that branch reads (another value, with `from:`)
            seq = _block("seq", name, path, b, live.inputs, outs[0], phase, when, children=children, named=b.named)
            return dataclasses.replace(seq, sources=live.sources)
        attrs, exprs, deps, given, nulls = self._attrs(b, path, scope)
        node = self.add_node(path, b.op, attrs, given, b, phase, tuple(outs), scope, exprs, deps, nulls=nulls)
        return _block("merge", name, path, b, inputs, node, phase, when, children=children, named=b.named, op=b.op)

    def _index_positions(self, b: MergeBlock, scope: _Scope, path: str) -> dict[str, int]:
        """The nodes of a merge's ``index`` list and their positions (the first, for one named twice)."""
        name, values = b.index
        out: dict[str, int] = {}
        for k, value in enumerate(values):
            node = self.resolve(value, scope, path, {"location": b.index_loc, "path": f"{b.path}.index.{name}[{k}]"})
            out.setdefault(node, k)
        return out

    def _drop(self, made: list[str], path: str) -> None:
        """Remove the nodes a branch made (a zero left out of a sum), and what names them."""
        gone = set(made)
        self.g.remove_nodes_from(made)
        self.count -= len(made)
        self.zeros -= gone
        for key in [k for k, v in self.paths.items() if v in gone]:
            del self.paths[key]
        for uses in self.instances.values():
            uses[:] = [u for u in uses if not (u == path or u.startswith(path + "."))]

    def _use(
        self, b: UseBlock, name: str, path: str, inputs: tuple[str, ...], scope: _Scope, phase: str, when
    ) -> ir.Block:
        use_path = b.path if b.template_loc in (None, b.loc) else f"{b.path}.use"
        if b.template in SPEC_OPS:
            if b.args:
                raise SpecError(
                    f"expected a template after 'use', got the op '{b.template}', which takes no 'args': "
                    f"write {{op: {b.template}, ...}} with its attributes as keys",
                    location=b.template_loc or b.loc,
                    path=use_path,
                )
            op = OpBlock(b.loc, b.path, b.phase, b.when, op=b.template)
            return self._op(op, name, path, inputs, scope, phase, when)
        t = self.spec.templates.get(b.template)
        if t is None:
            known = [*self.spec.templates, *SPEC_OPS]
            unknown = SpecError(
                f"unknown op or template '{b.template}'{did_you_mean(b.template, known)}",
                location=b.template_loc or b.loc,
                path=use_path,
            )
            unknown.needs_section = "templates"  # type: ignore[attr-defined]  # see spec.follows_from_ignored
            raise unknown
        if t.name in scope.templates:
            chain = " -> ".join([*scope.templates[scope.templates.index(t.name) :], t.name])
            raise LimitError(f"template {t.name} instantiates itself ({chain})", location=b.loc, path=b.path)
        if len(scope.templates) >= MAX_TEMPLATE_DEPTH:
            raise LimitError(f"templates nested deeper than {MAX_TEMPLATE_DEPTH} levels", location=b.loc, path=b.path)
        if len(inputs) != max(1, len(t.inputs)):
            wanted = f"{len(t.inputs)} inputs ({', '.join(t.inputs)})" if t.inputs else "one input"
            how = ": give them in order, 'from: [a, b]'" if t.inputs else ""
            raise SpecError(
                f"template {t.name} reads {wanted}{how}, got {len(inputs)}",
                location=b.source_loc or b.template_loc or b.loc,
                path=f"{b.path}.from" if b.source_loc else use_path,
            )
        inner, args = self.bind(t, b, scope, path)
        entries: tuple[str, ...] = ()
        if t.inputs:  # each input is an identity node of the use, which the body reads by its name
            for input_name, src in zip(t.inputs, inputs, strict=True):
                if src in self.zeros:
                    raise SpecError(
                        f"input '{input_name}' of template {t.name} is a zero (nothing)",
                        location=b.source_loc or b.loc,
                        path=f"{b.path}.from",
                    )
            entries = tuple(
                self.add_node(_join(path, n), "identity", {}, (), b, phase, (src,), inner)
                for n, src in zip(t.inputs, inputs, strict=True)
            )
            inner.named = dict(zip(t.inputs, entries, strict=True))
            inner.several = t.name
        inner.input = entries[0] if entries else inputs[0]
        body = self.expand(t.body, name, path, (inner.input,), inner, phase)
        self.instances.setdefault(t.name, []).append(path)
        output = body.passed
        block = _block("use", name, path, b, inputs, output, phase, when, children=[body], template=t.name, args=args)
        return dataclasses.replace(block, entries=entries) if entries else block

    def template_params(self, t: Template) -> tuple[ir.Param, ...]:
        """The template's parameters with their defaults, as its class declares them."""
        if t.name not in self.param_info:
            params = []
            sym: dict[str, object] = dict(self.variables)
            for p in t.params:
                default = expr = None
                if p.default is not None:
                    try:
                        default = p.default.evaluate(self.variables)
                    except NasdslError:
                        default = None  # uses other parameters: only the expression can say
                    default = tuple(default) if isinstance(default, list) else default
                    try:
                        expr = p.default.evaluate(sym)
                    except (SymbolicError, NasdslError):
                        expr = None
                    expr = tuple(expr) if isinstance(expr, list) else expr
                null = p.default is not None and p.default.raw is None and p.default.items is None
                params.append(ir.Param(p.name, p.default is None, default, expr, p.loc, null))
                sym[p.name] = Sym.name(p.name)
            self.param_info[t.name] = tuple(params)
        return self.param_info[t.name]

    def bind(self, t: Template, b: UseBlock, scope: _Scope, node: str) -> tuple[_Scope, tuple[ir.Arg, ...]]:
        """The scope of the template's body at this use, and its arguments in parameter order."""
        names = [p.name for p in t.params]
        bound: dict[str, Value] = {}
        positional = [v for k, v in b.args if k is None]
        if len(positional) > len(names):
            extra = positional[len(names)]
            most = f"at most {len(names)} argument{'s' if len(names) != 1 else ''}" if names else "no arguments"
            raise SpecError(
                f"expected {most} to {_signature(t)}, got {len(positional)}", location=extra.loc, path=extra.path
            )
        for pname, v in zip(names, positional, strict=False):
            bound[pname] = v
        for key, v in b.args:
            if key is None:
                continue
            if key not in names:
                raise SpecError(
                    f"unknown parameter '{key}' of {t.name}{did_you_mean(key, names)}; "
                    f"parameters: {_signature(t)[len(t.name) + 1 : -1] or 'none'}",
                    location=v.loc,
                    path=v.path,
                )
            if key in bound:
                raise SpecError(f"argument '{key}' given twice, by position and by name", location=v.loc, path=v.path)
            bound[key] = v
        missing = [p.name for p in t.params if p.name not in bound and p.default is None]
        if missing:
            s = "s" if len(missing) > 1 else ""
            raise SpecError(
                f"missing argument{s} {', '.join(map(_quoted, missing))} of {_signature(t)}",
                location=b.args_loc or b.loc,
                path=f"{b.path}.args" if b.args_loc else b.path,
            )
        # the body's scope: the parameters over the variables, layered rather than copied
        # (a use costs its parameters, not the spec's variables)
        values: dict[str, object] = {}
        caller: dict[str, object] = {}  # the arguments as the caller's class writes them
        own_sym: dict[str, object] = {}
        own_deps: dict[str, frozenset[str]] = {}
        own_switches: dict[str, str | None] = {}  # None: a parameter hides a variable's switch
        own_sources: dict[str, tuple[Value, _Scope]] = {}
        deps = ChainMap(own_deps, self.variable_deps)
        switches = ChainMap(own_switches, self.variable_switches)
        args = []
        for p in t.params:
            try:
                if p.name in bound:
                    value = bound[p.name]
                    try:
                        values[p.name], caller[p.name], own_deps[p.name] = scope.evaluate(value)
                    except SpecError as e:
                        raise _where_null(e, value, scope) from None
                    own_sources[p.name] = (value, scope)
                    switch = scope.switch(value)
                else:
                    assert p.default is not None
                    values[p.name] = p.default.evaluate(ChainMap(values, self.variables))
                    caller[p.name] = _symbolic(ChainMap(caller, self.variables), p.default)
                    own_deps[p.name] = frozenset().union(_NO_DEPS, *(deps.get(n, _NO_DEPS) for n in p.default.names))
                    where = _Scope(node, {}, {}, {}, {}, (), sources=ChainMap(dict(own_sources), self.sources))
                    own_sources[p.name] = (p.default, where)
                    name = _bare_name(p.default)
                    switch = switches.get(name) if name is not None else None
            except SpecError as e:
                raise _in_node(e, scope, node) from None
            own_switches[p.name] = switch
            value = values[p.name]
            args.append(
                ir.Arg(
                    p.name,
                    tuple(value) if isinstance(value, list) else value,
                    caller[p.name],
                    p.name in bound,
                    deps[p.name],
                )
            )
            own_sym[p.name] = Sym.name(p.name)
        self.template_params(t)
        env = _layer(values, self.variables)
        inner = _Scope(
            node,
            env,
            _layer(own_sym, self.variables),
            _layer(own_deps, self.variable_deps),
            _layer(own_switches, self.variable_switches),
            (*scope.templates, t.name),
            node,
            _layer(own_sources, self.sources),
        )
        return inner, tuple(args)

    def _ref(
        self, b: RefBlock, name: str, path: str, inputs: tuple[str, ...], scope: _Scope, phase: str, when
    ) -> ir.Block:
        where = {"location": b.target_loc or b.loc, "path": f"{b.path}.ref"}
        node = self.resolve(b.target, scope, path, where)
        target = None if b.target == INPUT_REF else _join(scope.root, b.target)
        return _block("ref", name, path, b, inputs, node, phase, when, target=target)

    def resolve(self, target: str, scope: _Scope, path: str, where: dict) -> str:
        """The node a ``ref:`` or ``from:`` names: an earlier block of the same body (by its
        path in that body), or ``in``, the body's input."""
        if target == INPUT_REF:
            if scope.several:
                names = ", ".join(self.spec.templates[scope.several].inputs)
                raise GraphError(
                    f"'in' is ambiguous in template {scope.several}, which reads several inputs ({names}): "
                    "name one of them",
                    **where,
                )
            return scope.input
        if target in scope.named:
            return scope.named[target]
        full = _join(scope.root, target)
        if path == full or path.startswith(full + "."):
            raise GraphError(f"cannot refer to '{target}' from inside it: that would make a cycle", **where)
        node = self.lookup(full)
        if node is None:
            prefix = scope.root + "." if scope.root else ""
            visible = [*self.paths, *(p for paths in self.dormant_paths for p in paths)]
            known = [p[len(prefix) :] for p in visible if p.startswith(prefix) and p != scope.root]
            known += list(scope.named)
            hint = did_you_mean(target, known)
            if not hint:  # 'conv' for 'stage.conv': a ref names a node by its whole path
                last = {k: k.rsplit(".", 1)[-1] for k in known}
                close = [k for k in known if did_you_mean(target, [last[k]])]
                hint = f" (did you mean '{close[-1]}'?)" if close else ""
            raise GraphError(f"no node named '{target}' before this point{hint}", **where)
        return node


def _repeat_name(b: RepeatBlock, scope: _Scope, i: int) -> str:
    """The name of repetition ``i``: the index, or the pattern with its expressions evaluated."""
    if not b.names:
        return str(i)
    text = ""
    for piece in b.names:
        if isinstance(piece, str):
            text += piece
            continue
        value = piece.evaluate(scope.env)
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(
                f"expected an integer in the name, got {describe(value)}", location=piece.loc, path=piece.path
            )
        text += str(value)
    if "-" in text:  # torchvision's RegNet names blocks 'block1-0': a name a module holds, never an attribute
        check_name(text.replace("-", "_"), b.loc, f"{b.path}.name", "block name")
        if not DASHED_NAME.fullmatch(text):
            raise SpecError(
                f"expected a block name, got {describe(text)}: a '-' may only join two parts of a name",
                location=b.loc,
                path=f"{b.path}.name",
            )
        return text
    return check_name(text, b.loc, f"{b.path}.name", "block name")


#: A repeated block's name with dashes (``block1-0``).
DASHED_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:-[A-Za-z0-9_]+)+")


def _pattern_text(pieces: tuple) -> str | None:
    """The name pattern as the spec wrote it (``denselayer{i + 1}``), or None."""
    if not pieces:
        return None
    return "".join(p if isinstance(p, str) else "{" + p.raw + "}" for p in pieces)


def _block(
    kind: str,
    name: str,
    path: str,
    b: Block,
    inputs: tuple[str, ...],
    output: str,
    phase: str,
    when: ir.When | None,
    *,
    children: list[ir.Block] | tuple[ir.Block, ...] = (),
    named: bool = False,
    op: str | None = None,
    template: str | None = None,
    args: tuple[ir.Arg, ...] = (),
    target: str | None = None,
    repeat: ir.Repeat | None = None,
) -> ir.Block:
    return ir.Block(
        kind, name, path, b.path, b.loc, tuple(inputs), output, tuple(children), named, op, template, args, when,
        phase, target, repeat,
    )  # fmt: skip


def _source_paths(names: tuple[str, ...], scope: _Scope) -> tuple[str | None, ...]:
    """The paths of the blocks a ``from:`` names (None for ``in``, the body's input; an input of a
    template is its identity node, ``cell.s0``), or ``()`` where one of them is the value of a
    repeat's ``previous``, which is no block's."""
    paths = tuple(None if n == INPUT_REF else _join(scope.root, n) for n in names)
    if any(n in scope.named and scope.named[n] != p for n, p in zip(names, paths, strict=True)):
        return ()
    return paths


def _named(tree: ir.Block, named: tuple[str, ...], scope: _Scope) -> ir.Block:
    """``tree`` with the paths of the blocks its ``from:`` names (``named``), one per input; a merge
    left with one branch names what that branch reads."""
    if not named or tree.sources or len(named) != len(tree.inputs):
        return tree
    return dataclasses.replace(tree, sources=_source_paths(named, scope))


def _skip(b: Block, name: str, path: str, inputs: tuple[str, ...], phase: str, when: ir.When) -> ir.Block:
    return _block("skip", name, path, b, inputs, inputs[0], phase, when)


def _retarget(tree: ir.Block, inputs: tuple[str, ...], output: str) -> ir.Block:
    """``tree`` read through another node (an identity for a merge that reads one value twice)."""
    return dataclasses.replace(tree, inputs=tuple(inputs), output=output)


def _symbolic(env: Mapping[str, object], value: Value) -> object:
    """``value`` evaluated in ``env`` where that gives an expression, else None."""
    try:
        result = value.evaluate(dict(env))
    except (SymbolicError, NasdslError):
        return None
    return tuple(result) if isinstance(result, list) else result


#: above this many variables a template use's scope is layered over them rather than copied
_COPY_LIMIT = 64


def _layer(own: Mapping, base: Mapping) -> Mapping:
    """``own`` over ``base``: a merged dict (fast lookups) when ``base`` is small, else a
    ``ChainMap`` (so that a use costs its own names, not the spec's variables)."""
    if len(base) <= _COPY_LIMIT:
        return {**base, **own}
    return ChainMap(own, base)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _where_null(e: SpecError, value: Value, scope: _Scope) -> SpecError:
    """``e``, about ``value``, saying where a name of it that is null here was given null (an
    expression of a null parameter is refused at the expression, which the template's text holds)."""
    for name in sorted(value.names):
        if name in scope.sources and scope.env.get(name, 0) is None and f"'{name}'" in e.message:
            origin = scope.blame(Value(name, value.loc, value.path))
            if origin.raw is None:
                e.message += f" ('{name}' is null as {origin.path} gives it, at {origin.loc})"
            break
    return e


def _in_node(e: NasdslError, scope: _Scope, node: str) -> NasdslError:
    """Name the node an error inside a template concerns: the template's text is shared by all its uses."""
    if scope.templates and not getattr(e, "node_named", False):
        e.message = f"{e.message} (in node {node})"
        e.node_named = True  # type: ignore[attr-defined]
    return e


def _condition(value: Value, scope: _Scope, user: str) -> bool:
    """The value of a ``when``; ``user`` names what it switches (for messages)."""
    cond = value.evaluate(scope.env)
    if not isinstance(cond, bool):
        origin = scope.blame(value)
        used = f" (used as 'when' of {user})" if origin is not value else ""
        e = SpecError(f"expected true or false, got {describe(cond)}{used}", location=origin.loc, path=origin.path)
        e.node_named = bool(used)  # type: ignore[attr-defined]
        raise e
    return cond


def _quoted(name: str) -> str:
    return f"'{name}'"


def _signature(t: Template) -> str:
    """``Block(c, k=3)``: a template's name and parameters, for messages."""

    def param(p) -> str:
        if p.default is None:
            return p.name
        raw = p.default.raw
        shown = "[...]" if p.default.items is not None else raw if isinstance(raw, str) else describe(raw)
        return f"{p.name}={shown}"

    return f"{t.name}({', '.join(param(p) for p in t.params)})"


def evaluate_variables(spec: Spec) -> dict[str, object]:
    """Evaluate the spec's variables in order; each may use the ones before it."""
    env: dict[str, object] = {}
    names = [n for n, _ in spec.variables]
    for i, (name, value) in enumerate(spec.variables):
        try:
            v = value.evaluate(env)
        except SpecError as e:
            later = sorted(n for n in value.names if n in names[i:])
            if later:
                e.message += f" ('{later[0]}' is defined later: a variable may use only the variables before it)"
            elif e.message.startswith("unknown name"):
                e.message += " (a variable is a number, true, false or an expression of the variables before it)"
            raise
        if isinstance(v, list):
            raise SpecError("expected a number or a boolean, got a list", location=value.loc, path=value.path)
        env[name] = v
    return env


def _input_axes(spec: Spec) -> str:
    return spec.input.axes or ir.default_axes(len(spec.input.shape.items))


def _input_shape(spec: Spec, scope: _Scope) -> tuple[int, ...]:
    shape = spec.input.shape.evaluate(scope.env)
    axes = _input_axes(spec)
    out = []
    for v, item, axis in zip(shape, spec.input.shape.items, axes, strict=True):
        try:
            out.append(check_int(v, 1, MAX_CHANNELS if axis in "C?" else MAX_SPATIAL))
        except SpecError as e:
            origin = scope.blame(item)
            if origin is not item:
                e.message += f" (used as {item.path})"
            raise e.at(location=origin.loc, path=origin.path) from None
    return tuple(out)


def _finite_number(x: object) -> bool:
    """A number that fits a float (an integer beyond float range does not: 10**400)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return False
    return abs(x) <= 2**1023 if isinstance(x, int) else math.isfinite(x)


def _input_stats(
    value: Value | None, channels: int, scope: _Scope, *, nonzero: bool = False
) -> tuple[float, ...] | None:
    if value is None:
        return None
    v = value.evaluate(scope.env)
    if not isinstance(v, list):
        v = [v] * channels
    if len(v) != channels:
        raise SpecError(
            f"expected {channels} values (one per input channel), got {len(v)}", location=value.loc, path=value.path
        )
    for i, x in enumerate(v):
        if not _finite_number(x):
            item = value.items[i] if value.items is not None else value
            raise SpecError(f"expected a number, got {describe(x)}", location=item.loc, path=item.path)
        if nonzero and x == 0:
            item = value.items[i] if value.items is not None else value
            raise SpecError("expected a number other than 0, got 0", location=item.loc, path=item.path)
    return tuple(float(x) for x in v)


def _fixed_attr_errors(spec: Spec) -> list[NasdslError]:
    """A template's parameter in an attribute the generated class cannot take from its
    constructor's arguments (``Attr.fixed`` says why), wherever the template's text writes one:
    in a block a switch keeps off or in a template no use reaches as well, since a later
    ``--set`` may switch it on."""
    errors: list[NasdslError] = []
    for path, block in spec.blocks().items():
        if not isinstance(block, (OpBlock, MergeBlock)) or not path.startswith("templates."):
            continue
        params = {p.name for p in spec.templates[path.split(".")[1]].params}
        for key, value in block.attrs:
            attr = OPS[block.op].attr_index.get(key)
            used = sorted(params & value.names) if attr is not None and attr.fixed else []
            if used:
                errors.append(
                    SpecError(
                        f"{block.op}'s {key} may not be given by a template parameter ('{used[0]}'): "
                        f"{attr.fixed}; write the value here (a template per value)",
                        location=value.loc,
                        path=value.path,
                    )
                )
    return sorted(errors, key=lambda e: (e.location.file, e.location.line, e.location.column))


def build(spec: Spec, *, max_nodes: int = MAX_NODES) -> nx.DiGraph:
    """Expand ``spec`` into the graph IR (shapes are left ``None``)."""
    env = evaluate_variables(spec)
    b = _Builder(spec, env, max_nodes)
    definitions = dict(spec.variables)
    deps: dict[str, frozenset[str]] = {}
    for name, value in spec.variables:
        deps[name] = frozenset({name}).union(*(deps.get(n, _NO_DEPS) for n in value.names if n in deps))
    b.variable_deps = deps
    scope = _Scope("", dict(env), {n: Sym.name(n) for n in env}, deps, dict(b.variable_switches), ())
    scope.input = spec.input.name
    b.sources = scope.sources = {n: (v, scope) for n, v in spec.variables}
    shape = _input_shape(spec, scope)
    channel_axis = _input_axes(spec).find("C")
    channels = shape[channel_axis] if channel_axis >= 0 else 1
    mean = _input_stats(spec.input.mean, channels, scope)
    std = _input_stats(spec.input.std, channels, scope, nonzero=True)
    # a mean of zeros or a std of ones (as a switch may give: Inception-v3's transform_input) does nothing
    mean = None if mean is not None and not any(mean) else mean
    std = None if std is not None and all(v == 1 for v in std) else std
    inp = spec.input.name
    input_deps = {
        key: scope.depends(value)
        for key, value in (("shape", spec.input.shape), ("mean", spec.input.mean), ("std", spec.input.std))
        if value is not None and scope.depends(value)
    }
    input_type = ir.TensorType(shape, _input_axes(spec))
    record = ir.Node(
        "input",
        ir.frozen({"shape": shape, "mean": mean, "std": std}),
        input_type,
        deps=ir.frozen(input_deps),
        loc=spec.input.loc,
        keypath="input",
        sym=shape,
    )
    b.g.add_node(inp, **{ir.KEY: record})
    b.count = 1
    model_names = {n for n, _ in spec.model.items}
    if inp in model_names:
        # reported at the entry: where the input is not named, `input` says nothing of the name
        entry = dict(spec.model.items)[inp]
        how = (
            "('x' names an input without a name): rename the entry, or name the input "
            "(input: {name: image, shape: ...})"
            if inp == "x"
            else "(input.name): rename the entry or the input"
        )
        raise GraphError(f"the entry '{inp}' has the input's name {how}", location=entry.loc, path=f"model.{inp}")
    errors: list[NasdslError] = _fixed_attr_errors(spec)
    try:
        model = b.expand(spec.model, "", "", (inp,), scope, "both")
    except NasdslError as e:
        raise_errors([*errors, *flatten(e)])
        raise
    outputs: list[ir.Output] = []
    dormant_outputs: list[ir.Output] = []
    for position, out in enumerate(spec.outputs or ()):
        try:
            info = _output(b, out, scope, model_names, position)
        except NasdslError as e:
            errors.extend(flatten(e))
            continue
        if info is not None:
            (outputs if info.when is None or env[info.when] else dormant_outputs).append(info)
    raise_errors(errors)
    if not spec.outputs:
        outputs.append(ir.Output("out", model.passed, 1.0, False, source=model.children[-1].path))
    model = _without_unread_zeros(b, model, outputs)
    for out in outputs:
        if out.node in b.zeros:
            raise SpecError(
                f"the output '{out.name}' is a zero (nothing): every path to it from the input passes through a "
                "zero op",
                location=spec.model.loc,
                path="model",
            )
    if outputs[0].training_only:
        first = spec.outputs[0]
        raise SpecError(
            "the first output is the model's main output; it cannot be training-only",
            location=first.loc,
            path=first.path,
        )
    templates = {}
    for name in [*b.instances, *(n for n in spec.templates if n not in b.instances)]:
        t = spec.templates[name]
        params = b.template_params(t)
        templates[name] = ir.Template(
            name,
            t.doc,
            params,
            t.loc,
            f"templates.{name}",
            tuple(b.instances.get(name, ())),
            build_order=t.build_order,
            inputs=t.inputs,
        )
    info = ir.GraphInfo(
        name=spec.name,
        input=inp,
        outputs=tuple(outputs),
        model=model,
        doc=spec.doc,
        file=spec.file,
        sha256=spec.sha256,
        name_loc=spec.model.loc,
        input_doc=spec.input.doc,
        outputs_by_name=spec.outputs_by_name,
        variables=ir.frozen(env),
        variable_locs=ir.frozen({n: v.loc for n, v in spec.variables}),
        variable_deps=ir.frozen({n: frozenset(v.names) & definitions.keys() for n, v in spec.variables}),
        structural=frozenset(b.structural),
        templates=ir.frozen(templates),
        init=ir.frozen(
            {
                op: ir.frozen({p: ir.InitRule(r.scheme, r.args) for p, r in rules.items()})
                for op, rules in spec.init.items()
            }
        ),
        dormant=ir.Dormant(b.dormant_graph, tuple(dormant_outputs), ir.frozen(b.dormant_errors)),
    )
    ir.set_info(b.g, info)
    return b.g


def _without_unread_zeros(b: _Builder, model: ir.Block, outputs: list[ir.Output]) -> ir.Block:
    """The model without the zeros that nothing reads (a node whose every reader was left out): their
    blocks pass their input on, and the blocks that named them name that input."""
    read = {o.node for o in outputs}
    dead = {z: ir.inputs(b.g, z)[0] for z in b.zeros if z in b.g and not b.g.out_degree(z) and z not in read}
    if not dead:
        return model
    b.g.remove_nodes_from(dead)
    b.count -= len(dead)
    b.zeros -= dead.keys()

    def fn(block: ir.Block) -> ir.Block:
        if block.output in dead and (block.kind == "op" or all(bypassed(c) for c in block.children)):
            return skip_of(block, dead[block.output])  # the zero, or a block of nothing else
        for old, new in dead.items():
            block = retarget(block, old, new)
        return block

    return map_tree(model, fn)


def _output(b: _Builder, out, scope: _Scope, model_names: set[str], position: int) -> ir.Output | None:
    switch = None
    if out.when is not None:
        on = _condition(out.when, scope, f"output {out.name}")
        switch = scope.switch(out.when)
        if not on and switch is None:
            return None
    src = b.paths.get(out.source)
    if src is None:
        known = [p for p in b.paths if p]
        raise GraphError(
            f"no node named '{out.source}'{did_you_mean(out.source, known)}",
            location=out.source_loc,
            path=f"{out.path}.from",
        )
    weight = 1.0
    weight_deps = _NO_DEPS
    if out.loss_weight is not None:
        weight, _, weight_deps = scope.evaluate(out.loss_weight)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight <= MAX_LOSS_WEIGHT:
            origin = scope.blame(out.loss_weight)
            raise SpecError(
                f"expected a number >= 0 and <= {MAX_LOSS_WEIGHT:,.0f}, got {describe(weight)}",
                location=origin.loc,
                path=origin.path,
            )
    if out.head is not None and out.name in model_names:
        raise GraphError(
            f"output '{out.name}' has a head and the same name as a model entry", location=out.loc, path=out.path
        )
    on = switch is None or b.variables[switch]
    head = None
    node = src
    if out.head is not None:
        phase = "train" if out.training_only else "both"
        if on:
            outer = b.guards
            b.guards = (switch,) if switch else ()
            try:
                head = b.expand(out.head, out.name, out.name, (src,), scope, phase)
            finally:
                b.guards = outer
        else:
            when = ir.When(False, Sym.name(switch), switch, frozenset({switch}))
            head = b._dormant(out.head, out.name, out.name, (src,), scope, phase, when)
            if head.kind == "skip":  # its head does not build: the output is simply absent
                return None
        node = head.output
    return ir.Output(
        out.name,
        node,
        float(weight),
        out.training_only,
        switch,
        out.source,
        head,
        position,
        out.loc,
        out.path,
        weight_deps,
    )
