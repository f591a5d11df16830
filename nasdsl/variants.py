"""The figures of many variants of one spec, fast.

Compiling a variant from its document costs a parse, a template expansion,
checks and shape inference. :class:`Evaluator` parses once and compiles the
default variant once, and keeps from the graph a *program*: its nodes in
order, each with the spec values that give its attributes, the template uses
whose arguments bind those values, and every condition (``when``) with the
value it had. A variant is then evaluated by re-evaluating those values with
its options (the same :meth:`nasdsl.spec.Value.evaluate` the builder calls,
so floats, ``make_divisible`` and parameters bound to pairs behave alike),
normalising the attributes with the op registry, and running each op's shape
rule, parameter and multiply-add counts node by node.

A variant whose conditions come out differently (a ``when`` flips, or a
``repeat`` count changes: other nodes exist) does not fit the program; it is compiled in full, and the
program of its graph kept for the variants of the same structure (a program
needs the structure only: a graph whose shapes do not fit gives one too, and
its variants' shape errors are reported as ``infer_shapes`` reports them).
A ``repeat`` whose count comes out differently is another structure too (each
repetition's scope binds the index); a variant that chooses other blocks
(a choice between blocks, or what a block reads: an input choice) is composed from pieces compiled
once (:mod:`nasdsl.compose`, one composer per assignment of the value choices) where that applies,
else run only by a program of the same blocks. A variant
that raises anything but a shape error while it is re-evaluated is compiled
in full too, so that its error is exactly the compiler's. :attr:`Evaluator.recompiled`
counts these full compilations.

Figures (:class:`Figures`), for the inference graph (training-only heads and
layers left out), batch 1:

* ``params``, ``macs``: as ``nasdsl summary`` totals them; ``params_train``
  and ``macs_train`` with the training-only heads;
* ``depth``: layers with parameters on the longest path (the paper's depth);
* ``peak``: the peak activation size, :func:`peak_activations`;
* ``latency_ms``: with a latency model (:mod:`nasdsl.bench.latency`), the predicted
  milliseconds of one sample, its nodes' costs added up as the shapes are (None without one).
"""

from __future__ import annotations

import gc
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import networkx as nx

from nasdsl import document, ir
from nasdsl.build import MAX_LOSS_WEIGHT, MAX_NODES, MAX_SPATIAL, build
from nasdsl.errors import ErrorList, LimitError, NasdslError, ShapeError
from nasdsl.expr import MAX_INT
from nasdsl.figures import Figures, figures, memory_plan, peak_activations
from nasdsl.ops import MAX_CHANNELS, OPS, check_int
from nasdsl.passes.check import check
from nasdsl.passes.phases import inference_graph
from nasdsl.passes.shapes import infer_shapes
from nasdsl.space import Space
from nasdsl.spec import (
    Block,
    MergeBlock,
    OpBlock,
    RepeatBlock,
    Spec,
    Template,
    UseBlock,
    Value,
    parse_spec,
)
from nasdsl.summary import depth

#: refuse models above this many parameters, as compile_spec does by default
MAX_PARAMS = 10**10
#: the kinds of choice that choose structure (blocks, or the values a block reads): a program serves
#: only the variants that choose as it does
STRUCTURAL_KINDS = ("block", "input")
#: programs kept for variants of different structure: at least MIN_PROGRAMS, and more while their nodes
#: add up to at most PROGRAM_NODES (OFA's space has 243 depth structures of about 300 nodes each: with 64
#: programs, three variants in four were compiled in full)
MIN_PROGRAMS = 64
PROGRAM_NODES = 100_000
#: composers kept (one per assignment of the value choices, in a space with choices between blocks)
MAX_COMPOSERS = 8
#: the kinds of choice whose options are values (the others choose blocks or what a block reads)
VALUE_KINDS = ("choice", "range")
#: full compiles between two collections of cyclic garbage, where the collector is paused
COLLECT_EVERY = 64


@dataclass(frozen=True)
class Result:
    """One variant: its id and picks, its figures or the compiler's error, and whether it was
    compiled in full."""

    id: int
    picks: tuple[int, ...]
    figures: Figures | None
    error: str = ""
    recompiled: bool = False
    #: the architecture hash (nasdsl.unique), where it was asked for
    hash: str = ""

    @property
    def valid(self) -> bool:
        return self.figures is not None


class _Mismatch(Exception):
    """The variant's conditions differ from the program's: other nodes exist."""


class _Recompile(Exception):
    """Something the compiler reports with more context than a re-evaluation could give."""


# ---------------------------------------------------------------------------
# Programs


_CONST, _FIXED, _CHOSEN = 0, 1, 2


def _how(value: Value, reach: set[str]) -> tuple[int, object]:
    """How a program gets a value: a literal no choice reaches is a constant (its raw value), a
    value a choice may replace is resolved for each variant, any other is evaluated as it is."""
    if value.path in reach:
        return _CHOSEN, value
    if value.expr is None and value.items is None:
        return _CONST, value.raw
    return _FIXED, value


def _name_of(value: object) -> str | None:
    """The name a spec value is, when it is one name and nothing else (``c3x3``): its value, when
    that is an integer in range, is the name's own (what :meth:`Value.evaluate` returns); None for
    anything else, which is evaluated."""
    if isinstance(value, Value) and value.items is None and value.expr is not None:
        return value.expr.bare_name
    return None


def _evaluate(value: Value, name: str | None, env: Mapping[str, object], literals=()) -> object:
    """``value.evaluate(env, literals)``, with a name bound to an integer looked up directly."""
    if name is not None:
        v = env.get(name)
        if type(v) is int and -MAX_INT <= v <= MAX_INT:
            return v
    return value.evaluate(env, literals)


def _bound(t: Template, use: UseBlock) -> tuple[tuple[str, Value | None, Value | None], ...]:
    """Each parameter of ``t`` at ``use``: (name, the argument written, else None; the default)."""
    names = [p.name for p in t.params]
    given: dict[str, Value] = dict(zip(names, (v for k, v in use.args if k is None), strict=False))
    given.update({k: v for k, v in use.args if k is not None})
    return tuple((p.name, given.get(p.name), p.default) for p in t.params)


@dataclass
class _Node:
    index: int
    name: str
    op: str
    attrs: dict | None  # fixed attributes, or None when they are evaluated
    #: (attribute, how (_CONST, _FIXED, _CHOSEN), the constant or the Value, literal words)
    values: tuple[tuple[str, int, object, tuple[str, ...]], ...]
    inputs: tuple[int, ...]
    scope: int
    train: bool
    data: dict
    #: normalised attributes by the values given (typed: 1, 1.0 and true differ)
    normalised: dict = field(default_factory=dict)
    #: how the latency model sees the node (nasdsl.bench.latency.contexts); "" without one
    context: str = ""
    #: (output shape, parameters, multiply-adds, shape error, latency, output size, attributes) by the ids
    #: of the attributes and of the input shapes (interned by the program, see _Program.types)
    shaped: dict = field(default_factory=dict)
    #: the op's registry entry (None for the input)
    opdef: object = None
    #: ``values`` as they are evaluated: (how, the constant or the Value, literal words, the name it is)
    plan: tuple = ()


#: entries a node's caches hold before they are emptied
CACHE = 4096
#: distinct tensor types a program shares between its nodes' caches before it forgets them
MAX_TYPES = 1 << 16


def _key(v: object) -> object:
    """A value as a cache key that tells types apart (``1 == 1.0 == True`` in Python)."""
    if isinstance(v, (list, tuple)):
        return tuple(map(_key, v))
    return (type(v), v)


def _remember(cache: dict, key: object, value: object) -> None:
    if len(cache) >= CACHE:
        cache.clear()
    cache[key] = value


class _Program:
    """What re-evaluating the variants of one structure needs (see the module docstring)."""

    def __init__(
        self,
        spec: Spec,
        blocks: dict[str, Block],
        g: nx.DiGraph,
        env: Mapping[str, object],
        reach: set[str],
        latency=None,
    ):
        self.spec = spec
        self.latency = latency
        self.reach = reach
        #: the options of the space's choices between blocks this structure has (Evaluator sets it)
        self.blocks: tuple[int, ...] = ()
        # (parent scope, bound parameters, whether the parent's names stay visible); scope 0 is the model.
        # A template use sees the model's variables and its parameters; a repeat's iteration sees its
        # caller's names and the index.
        self.scopes: list[tuple[int, tuple, bool]] = []
        self.scope_of: dict[str, int] = {"": 0}
        #: the scope of each node an op or merge block makes (a node inside a repeat sees the index)
        self.node_scope: dict[str, int] = {}
        self.conditions: list[tuple[Value, int, bool]] = []
        #: each repeat's count with the scope it is evaluated in and the count this structure has
        self.counts: list[tuple[Value, int, int]] = []
        #: the variables that repeat counts depend on, with their values here: a flat repeat (VGG's
        #: features) leaves no block of its own in the graph, so a change of these is a mismatch
        self.structural = {k: env[k] for k in sorted(ir.info(g).structural) if k in env}
        for out in spec.outputs:
            if out.when is not None:
                self.conditions.append((out.when, 0, out.when.evaluate(dict(env)) is True))
        roots = [ir.info(g).model, *(o.head for o in ir.info(g).outputs if o.head is not None)]
        for root in roots:
            self._visit(root, 0, blocks)
        # each bound parameter with the name it is, where it is one (see _evaluate)
        self.scopes = [
            (parent, tuple((*b, _name_of(b[2]) if b[1] == _FIXED else None) for b in bound), inherit)
            for parent, bound, inherit in self.scopes
        ]
        # the model's conditions are checked before the template uses are bound: a mismatch shows early
        self.model_conditions = [c for c in self.conditions if c[1] == 0]
        self.conditions = [c for c in self.conditions if c[1] != 0]
        self.weights = [o.loss_weight for o in spec.outputs if o.loss_weight is not None]
        order = ir.order(g)
        index = {n: i for i, n in enumerate(order)}
        self.input = index[ir.info(g).input]
        self.nodes: list[_Node] = []
        for i, n in enumerate(order):
            data = ir.node(g, n)
            values: tuple = ()
            attrs: dict | None = data.attrs
            b = blocks.get(data.keypath) if data.op != "input" else None
            # the block's values, where it writes any: a null one gives no attribute (``given`` lacks it)
            written = isinstance(b, (OpBlock, MergeBlock)) and b.op == data.op and bool(b.attrs)
            if (data.given or data.nulls) and not written:
                raise AssertionError(f"node {n}: no op block at {data.keypath}")
            if written:
                opdef = OPS[b.op]
                values = tuple((k, *_how(v, reach), opdef.attr_index[k].literals) for k, v in b.attrs)
                if any(how != _CONST for _, how, _, _ in values):
                    attrs = None  # else every attribute is a literal no choice reaches: the graph's attrs hold
            scope = self.node_scope.get(n, self.scope_of[data.instance] if data.instance else 0)
            inputs = tuple(index[s] for s in ir.inputs(g, n))
            node = _Node(i, n, data.op, attrs, values, inputs, scope, data.phase == "train", data)
            node.opdef = OPS.get(data.op)
            node.plan = tuple((how, x, lit, _name_of(x) if how == _FIXED else None) for _, how, x, lit in values)
            self.nodes.append(node)
        #: what _nodes reads of each node, unpacked once
        self.steps = tuple(
            (n, n.opdef, n.attrs, n.scope, n.plan, n.normalised, n.inputs, n.shaped, n.train) for n in self.nodes
        )
        if latency is not None:
            from nasdsl.bench.latency import contexts

            found = contexts((n.name, n.op, tuple(ir.inputs(g, n.name)), n.train) for n in self.nodes)
            for node in self.nodes:
                node.context = found[node.name]
        counted = [n for n, d in ir.nodes(g) if d.op != "input" and d.phase != "train"]
        self.depth = depth(g, counted)
        self.channel_axis = ir.node(g, ir.info(g).input).type.axes.find("C")
        inf = inference_graph(g)
        self.plan = tuple(
            (index[a] if a is not None else None, tuple(index[r] for r in frees))
            for a, frees in memory_plan(inf, ir.order(inf))
        )
        #: each output shape seen, once: equal shapes are one object, and the caches key them by id
        self.types: dict[ir.TensorType, ir.TensorType] = {}

    def _visit(self, block: ir.Block, scope: int, blocks: dict[str, Block]) -> None:
        if block.when is not None:
            self.conditions.append((blocks[block.keypath].when, scope, block.when.value))
        if block.kind == "skip" or block.dormant:
            return
        if block.kind in ("op", "merge"):
            self.node_scope[block.path] = scope
        if block.repeat is not None:
            rb = blocks[block.keypath]
            assert isinstance(rb, RepeatBlock) and rb.count is not None
            self.counts.append((rb.count, scope, block.repeat.count))
            for i, child in enumerate(block.children):
                self.scopes.append((scope, ((rb.index, _CONST, i, False),), True))
                self._visit(child, len(self.scopes), blocks)
            return
        if block.kind == "use":
            use = blocks[block.keypath]
            assert isinstance(use, UseBlock)
            inner = len(self.scopes) + 1
            bound = tuple(
                (name, *_how(given if given is not None else default, self.reach), given is None)
                for name, given, default in _bound(self.spec.templates[block.template], use)
            )
            self.scopes.append((scope, bound, False))
            self.scope_of[block.path] = inner
            scope = inner
        for child in block.children:
            self._visit(child, scope, blocks)

    def run(self, env: dict[str, object], resolve, max_params: int) -> Figures | NasdslError:
        """The figures of the variant whose variables are ``env`` (``resolve`` maps a spec value
        to the variant's), its shape error, or _Mismatch / _Recompile."""
        scopes: list[dict[str, object]] = [env]
        if any(env.get(k) != v for k, v in self.structural.items()):
            raise _Mismatch
        for value, scope, expected in self.model_conditions:
            self._condition(value, scopes, scope, expected, resolve)
        try:
            for parent, bound, inherit in self.scopes:
                caller = scopes[parent]
                values: dict[str, object] = {}
                for name, how, x, is_default, bare in bound:
                    if how == _CONST:
                        values[name] = x
                    elif how == _FIXED:
                        values[name] = _evaluate(x, bare, {**env, **values} if is_default else caller)
                    else:
                        value = resolve(x)
                        values[name] = _evaluate(value, _name_of(value), {**env, **values} if is_default else caller)
                scopes.append({**(caller if inherit else env), **values})
            counts = [resolve(value).evaluate(scopes[scope]) for value, scope, _ in self.counts]
        except NasdslError:
            raise _Recompile from None
        for got, (_, _, expected) in zip(counts, self.counts, strict=True):
            if isinstance(got, bool) or got != expected:
                raise _Mismatch  # another number of blocks: another structure (or an error the compiler gives)
        for value, scope, expected in self.conditions:
            self._condition(value, scopes, scope, expected, resolve)
        self._check_model_values(env, resolve)
        return self._nodes(env, scopes, resolve, max_params)

    @staticmethod
    def _condition(value: Value, scopes, scope: int, expected: bool, resolve) -> None:
        try:
            got = resolve(value).evaluate(scopes[scope])
        except NasdslError:
            raise _Recompile from None
        if not isinstance(got, bool):
            raise _Recompile
        if got != expected:
            raise _Mismatch

    def _check_model_values(self, env: dict[str, object], resolve) -> None:
        """The loss weights and the input's statistics: checked as the builder checks them."""
        try:
            for value in self.weights:
                w = resolve(value).evaluate(env)
                if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0 <= w <= MAX_LOSS_WEIGHT:
                    raise _Recompile
            inp = self.spec.input
            axis = self.channel_axis
            channels = check_int(resolve(inp.shape).evaluate(env)[axis], 1, MAX_CHANNELS) if axis >= 0 else 1
            for stats in (inp.mean, inp.std):
                if stats is None:
                    continue
                v = resolve(stats).evaluate(env)
                v = v if isinstance(v, list) else [v] * channels
                if len(v) != channels or any(isinstance(x, bool) or not isinstance(x, (int, float)) for x in v):
                    raise _Recompile
                if stats is inp.std and any(x == 0 for x in v):
                    raise _Recompile
        except NasdslError:
            raise _Recompile from None

    def _nodes(self, env, scopes, resolve, max_params: int) -> Figures | NasdslError:
        shapes: list[ir.TensorType | None] = [None] * len(self.nodes)
        sizes = [0] * len(self.nodes)
        params = macs = params_train = macs_train = 0
        latency = self.latency
        types = self.types
        ms = 0.0
        errors: list[NasdslError] = []
        for node, opdef, attrs, scope_at, plan, normalised, inputs, shaped, train in self.steps:
            try:
                if opdef is None:  # the input
                    shape = resolve(self.spec.input.shape).evaluate(env)
                    axes = node.data.type.axes
                    t = ir.TensorType(
                        tuple(
                            check_int(v, 1, MAX_CHANNELS if x in "C?" else MAX_SPATIAL)
                            for v, x in zip(shape, axes, strict=True)
                        ),
                        axes,
                    )
                    shapes[node.index] = types.setdefault(t, t)
                    sizes[node.index] = math.prod(t.shape)
                    continue
                if attrs is None:
                    scope = scopes[scope_at]
                    given = []
                    for how, x, lit, bare in plan:
                        if how == _CONST:
                            given.append(x)
                        elif how == _FIXED:
                            # a name bound to an integer is the common case (_evaluate, inlined)
                            v = scope.get(bare) if bare is not None else None
                            given.append(
                                v if type(v) is int and -MAX_INT <= v <= MAX_INT else _evaluate(x, None, scope, lit)
                            )
                        else:
                            x = resolve(x)
                            given.append(_evaluate(x, _name_of(x), scope, lit))
                    key = tuple([(type(v), v) if type(v) is not list else _key(v) for v in given])
                    attrs = normalised.get(key)
                    if attrs is None:
                        # a value that is null (or a parameter given null) gives no attribute, as in the builder
                        attrs = opdef.normalise(
                            {v[0]: g for v, g in zip(node.values, given, strict=True) if g is not None}
                        )
                        _remember(normalised, key, attrs)
            except NasdslError:
                raise _Recompile from None
            if len(inputs) == 1:
                a = shapes[inputs[0]]
                if a is None:
                    continue
                known = shaped.get((id(attrs), id(a)))
                if known is None:
                    ins: tuple = (a,)
                    key = (id(attrs), id(a))
            else:
                ins = tuple([shapes[i] for i in inputs])
                if None in ins:
                    continue
                key = (id(attrs), *map(id, ins))
                known = shaped.get(key)
            if known is None:
                known = self._shaped(node, opdef, ins, attrs)
                # the attributes and the input shapes kept alive with the entry: their ids stay their own
                _remember(shaped, key, (*known, attrs, ins))
            out = known[0]
            if out is None:  # its shape error
                errors.append(known[3])
                continue
            shapes[node.index] = out
            sizes[node.index] = known[5]
            p = known[1]
            m = known[2]
            params_train += p
            macs_train += m
            if not train:
                params += p
                macs += m
                ms += known[4]
        if errors:
            return ErrorList(errors) if len(errors) > 1 else errors[0]
        if params_train > max_params:
            return LimitError(
                f"the model has {params_train:,} parameters, above the limit of {max_params:,} "
                "(raise it with --max-params)",
                location=self.spec.model.loc,
                path="model",
            )
        live = peak = 0
        for alloc, frees in self.plan:
            if alloc is not None:
                live += sizes[alloc]
                if live > peak:
                    peak = live
            for r in frees:
                live -= sizes[r]
        if latency is not None:
            ms += latency.model_cost(shapes[self.input].shape)  # type: ignore[union-attr]
        return Figures(params, macs, self.depth, peak, params_train, macs_train, ms if latency is not None else None)

    def _shaped(self, node: _Node, opdef, ins: tuple, attrs: dict) -> tuple:
        """A node's output shape (interned), parameters, multiply-adds, shape error, latency and
        output size, for these attributes and input shapes."""
        try:
            out = opdef.infer(ins, attrs)
        except ShapeError as e:
            return (None, 0, 0, _shape_error(e, node, [self.nodes[i].name for i in node.inputs]), 0.0, 0)
        types = self.types
        if len(types) >= MAX_TYPES:
            types.clear()  # only the sharing of equal shapes is lost: each cache entry keeps its own alive
        out = types.setdefault(out, out)
        p = opdef.params(ins, attrs) if opdef.init_params else 0
        m = opdef.macs(ins, attrs, out)
        latency = self.latency
        cost = (
            latency.node_cost(node.op, attrs, tuple(t.shape for t in ins), out.shape, m, node.context)
            if latency is not None
            else 0.0
        )
        return (out, p, m, None, cost, math.prod(out.shape))


def _shape_error(e: ShapeError, node: _Node, sources: list[str]) -> ShapeError:
    """The error ``infer_shapes`` gives for this node."""
    message = e.message
    if len(sources) > 1:
        message += f" (from {', '.join(sources)})"
    if node.data.scope:
        message += f" (in node {node.name})"
    return ShapeError(message, location=node.data.loc, path=node.data.keypath)


# ---------------------------------------------------------------------------
# The evaluator


_INDEX = re.compile(r"\[\d+\]$")


class Evaluator:
    """Evaluates variants of a :class:`~nasdsl.space.Space` (see the module docstring).

    ``max_nodes`` and ``max_params`` are the compiler's limits (``compile_spec``'s): a
    variant above them is invalid, with the compiler's error. ``latency``: a
    :class:`nasdsl.bench.latency.LatencyModel` whose prediction fills ``latency_ms``.
    """

    def __init__(self, space: Space, *, max_nodes: int = MAX_NODES, max_params: int = MAX_PARAMS, latency=None):
        self.space = space
        self.latency = latency
        self.max_nodes = max_nodes
        self.max_params = max_params
        self.recompiled = 0
        self.evaluated = 0
        doc = space.document_of(space.default)
        self.spec = parse_spec(doc, space.file, document.spec_hash(doc), space.files)
        self.blocks = self.spec.blocks()
        self.programs: list[_Program] = []
        self.nested: set[str] = set()  # spec paths of list values that hold a choice
        self.reach: set[str] = set()  # spec paths of the values a choice may replace
        for p in space.points:
            for pos in p.positions:
                path = pos.spec_path
                self.reach.add(path)
                while _INDEX.search(path):
                    path = _INDEX.sub("", path)
                    self.nested.add(path)
        self.reach |= self.nested
        #: the choices between blocks: a program serves the variants that choose its blocks
        self.block_points = tuple(i for i, p in enumerate(space.points) if p.kind in STRUCTURAL_KINDS)
        #: the choices a composer (nasdsl.compose) places pieces for, and the others, by whose options
        #: composers are kept (None: none can be made)
        self.composed_points = tuple(i for i, p in enumerate(space.points) if p.kind == "block")
        #: the input choices: a composer learns what each decides (the wiring, the pieces)
        self.input_points = tuple(i for i, p in enumerate(space.points) if p.kind == "input")
        self.value_points = tuple(i for i, p in enumerate(space.points) if p.kind not in STRUCTURAL_KINDS)
        composable = all(space.points[i].kind in VALUE_KINDS for i in self.value_points)
        self.composers: dict[tuple[int, ...], object] | None = (
            {} if self.composed_points and composable and latency is None else None
        )
        #: full compiles the composers took, and the variants they evaluated
        self._composing = [0, 0]
        #: the hash of the variant evaluate() composed last: (picks, hash)
        self._composed_hash: tuple[tuple[int, ...], str] | None = None
        #: compute each composed variant's hash as it is evaluated (--unique sets it)
        self.hashes = False
        structure, outcome, _ = self._compile_graph(doc)
        if structure is not None:  # a program, even when the default's shapes do not fit
            program = _Program(self.spec, self.blocks, structure, ir.info(structure).variables, self.reach, latency)
            program.blocks = tuple(space.default[i] for i in self.block_points)
            self.programs.append(program)
        #: the points that decide which program a variant's structure has, as far as the names of the
        #: repeat counts and conditions tell (a hint: the program it gives is tried first, then the others)
        self.shape_points: tuple[int, ...] = _structure_points(space, self.programs)
        self.hints: dict[tuple[int, ...], _Program] = {}

    def _compile_graph(self, doc) -> tuple[nx.DiGraph | None, nx.DiGraph | NasdslError, Spec | None]:
        """Compile a variant's document as ``compile_spec`` does: its checked graph before shapes
        (None when it does not build), the shaped graph or the compiler's error, and its spec."""
        self._compiles = getattr(self, "_compiles", 0) + 1
        if self._compiles % COLLECT_EVERY == 0 and not gc.isenabled():
            # the commands run with the cyclic collector paused (nasdsl.api.few_collections): a full
            # compile leaves cycles behind, and listing thousands of them grew by gigabytes
            gc.collect()
        spec = None
        try:
            spec = parse_spec(doc, self.space.file, document.spec_hash(doc), self.space.files)
            structure = check(build(spec, max_nodes=self.max_nodes))
        except NasdslError as e:
            return None, e, spec
        try:
            g = infer_shapes(structure)
        except NasdslError as e:
            return structure, e, spec
        total = figures_params_train(g)
        if total > self.max_params:
            return (
                structure,
                LimitError(
                    f"the model has {total:,} parameters, above the limit of {self.max_params:,} "
                    "(raise it with --max-params)",
                    location=spec.model.loc,
                    path="model",
                ),
                spec,
            )
        return structure, g, spec

    def evaluate(self, picks: tuple[int, ...]) -> Result:
        """The figures of one variant, or the compiler's error."""
        self.evaluated += 1
        variant = self.space.id_of(picks)
        overrides: dict[str, Value] = {}
        for i, (p, k) in enumerate(zip(self.space.points, picks, strict=True)):
            if k != p.default and p.kind not in STRUCTURAL_KINDS:
                for pos in p.positions:
                    overrides[pos.spec_path] = self.space.option_values[i][k]
        resolve = self._resolver(overrides)
        try:
            env = self.space.environment(picks)
        except NasdslError:
            return self._full(variant, picks)
        composer = self._composer(picks)
        if composer is not None:
            from nasdsl.compose import Unplaceable

            self._composing[1] += 1
            try:
                outcome, h = composer.run(picks, max_params=self.max_params, want_hash=self.hashes)
            except Unplaceable as e:
                # a zero reaching a concat: the builder's error, the same text wherever it is met first
                known = composer.error_text(e.key)
                if known is not None:
                    return Result(variant, picks, None, known)
                result = self._full(variant, picks)
                if e.key is not None and not result.valid:
                    composer.learn(e.key, result.error)
                return result
            if isinstance(outcome, NasdslError):
                return Result(variant, picks, None, outcome.format())
            if h is not None:
                self._composed_hash = (picks, h)
            return Result(variant, picks, outcome)
        blocks = tuple(picks[i] for i in self.block_points)
        hint = tuple(picks[i] for i in self.shape_points)
        hinted = self.hints.get(hint)
        programs = self.programs if hinted is None else [hinted, *(p for p in self.programs if p is not hinted)]
        for program in programs:
            if program.blocks != blocks:
                continue  # another block chosen somewhere: another structure
            try:
                outcome = program.run(env, resolve, self.max_params)
            except _Mismatch:
                continue
            except _Recompile:
                return self._full(variant, picks)
            if program is not self.programs[0]:  # most recently used first
                self.programs.remove(program)
                self.programs.insert(0, program)
            self._hint(hint, program)
            if isinstance(outcome, NasdslError):
                return Result(variant, picks, None, outcome.format())
            return Result(variant, picks, outcome)
        return self._full(variant, picks, keep=True)

    def _hint(self, key: tuple[int, ...], program: _Program) -> None:
        if len(self.hints) >= CACHE:
            self.hints.clear()
        self.hints[key] = program

    def _composer(self, picks: tuple[int, ...]):
        """The composer of the variants with these value choices (made the first time), or None."""
        if self.composers is None:
            return None
        key = tuple(picks[i] for i in self.value_points)
        if key not in self.composers:
            spent, served = self._composing
            if len(self.composers) >= MAX_COMPOSERS or (self.composers and served < spent):
                # the value choices vary too much (the composers cost more compiles than they saved):
                # programs serve them better
                self.composers = None
                return None
            from nasdsl.compose_wired import make_composer

            def compile_variant(chosen: tuple[int, ...]):
                self.recompiled += 1
                self._composing[0] += 1
                return self._compile_graph(self.space.document_of(chosen))

            self.composers[key] = make_composer(
                compile_variant,
                self.space,
                picks,
                self.composed_points,
                self.max_nodes,
                self.max_params,
                self.input_points,
            )
        return self.composers[key]

    def hash(self, picks: tuple[int, ...]) -> str | None:
        """The architecture hash of a variant (:func:`nasdsl.unique.graph_hash`), composed or
        compiled in full; None when it does not compile."""
        from nasdsl.compose import Unplaceable
        from nasdsl.unique import graph_hash

        composed = self._composed_hash
        if composed is not None and composed[0] == picks:
            return composed[1]
        composer = self._composer(picks) if self.space.why_not(picks) is None else None
        if composer is not None:
            try:
                outcome, h = composer.run(picks, max_params=self.max_params, want_hash=True)
            except Unplaceable as e:
                if composer.error_text(e.key) is not None:
                    return None  # the builder's error (see evaluate)
            else:
                return None if isinstance(outcome, NasdslError) else h
        last = self.__dict__.pop("_last_graph", None)  # the variant evaluate() just compiled in full
        outcome = last[1] if last is not None and last[0] == picks else None
        if outcome is None:
            _, outcome, _ = self._compile_graph(self.space.document_of(picks))
        return None if isinstance(outcome, NasdslError) else graph_hash(outcome)

    def compile(self, picks: tuple[int, ...]) -> Result:
        """The same as :meth:`evaluate`, by compiling the variant in full (what the tests compare)."""
        return self._full(self.space.id_of(picks), picks, count=False)

    def _full(self, variant: int, picks: tuple[int, ...], *, keep: bool = False, count: bool = True) -> Result:
        if count:
            self.recompiled += 1
        structure, outcome, spec = self._compile_graph(self.space.document_of(picks))
        if keep and structure is not None:
            if self.block_points:  # other blocks than the default's: the program reads this variant's
                blocks = spec.blocks()
                program = _Program(spec, blocks, structure, ir.info(structure).variables, self.reach, self.latency)
            else:
                program = _Program(
                    self.spec, self.blocks, structure, ir.info(structure).variables, self.reach, self.latency
                )
            program.blocks = tuple(picks[i] for i in self.block_points)
            self.programs.insert(0, program)
            held = 0
            for n, kept in enumerate(self.programs):
                held += len(kept.nodes)
                if n >= MIN_PROGRAMS and held > PROGRAM_NODES:
                    del self.programs[n:]  # the least recently used
                    self.hints.clear()
                    break
            # the points the new structure's counts and conditions read join the others (a hint: kept)
            points = tuple(sorted({*self.shape_points, *_structure_points(self.space, [program])}))
            if points != self.shape_points:
                self.shape_points = points
                self.hints.clear()  # keyed by the old points
            self._hint(tuple(picks[i] for i in self.shape_points), program)
        if isinstance(outcome, NasdslError):
            return Result(variant, picks, None, outcome.format(), recompiled=True)
        g = outcome
        self._last_graph = (picks, g)
        return Result(variant, picks, figures(g, self.latency), recompiled=True)

    def _resolver(self, overrides: dict[str, Value]):
        if not overrides:
            return _same
        nested = self.nested

        def resolve(value: Value) -> Value:
            found = overrides.get(value.path)
            if found is not None:
                return found
            if value.items is not None and value.path in nested:
                return Value(value.raw, value.loc, value.path, value.expr, tuple(resolve(v) for v in value.items))
            return value

        return resolve


def _structure_points(space: Space, programs: list[_Program]) -> tuple[int, ...]:
    """The points whose options the repeat counts and conditions of these programs read: their
    own places, the variables they name, and the arguments bound to the parameters they name."""
    names: set[str] = set()
    paths: set[str] = set()
    for program in programs:
        names.update(program.structural)
        for value, _, _ in (*program.model_conditions, *program.conditions, *program.counts):
            names |= value.names
            paths.add(value.path)
        for _, bound, _ in reversed(program.scopes):  # inner uses first: their arguments name outer ones
            for name, how, x, _, _ in bound:
                if name in names and how != _CONST:
                    names |= x.names
                    paths.add(x.path)
    for name, step in reversed(space.steps):
        if name in names and not isinstance(step, int):
            names |= step.names
    found = {step for name, step in space.steps if isinstance(step, int) and name in names}
    found |= {i for i, p in enumerate(space.points) if any(pos.spec_path in paths for pos in p.positions)}
    return tuple(sorted(found))


def _same(value: Value) -> Value:
    return value


def figures_params_train(g: nx.DiGraph) -> int:
    """Every learned parameter of the graph, training-only heads included (what the limit counts)."""
    from nasdsl.passes.shapes import params

    return sum(params(g, n) for n, d in ir.nodes(g) if d.op != "input")


__all__ = ["Evaluator", "Figures", "Result", "figures", "peak_activations"]
