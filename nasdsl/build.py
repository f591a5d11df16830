"""Expand a parsed spec into the graph IR.

The result is a ``networkx.DiGraph`` (see :mod:`nasdsl.ir` for its contract)
plus the expanded block tree that the PyTorch backend turns into classes.
Expansion evaluates every expression, binds template arguments, resolves
references and enforces the expansion limits; shapes are left to the
:func:`nasdsl.passes.shapes.infer_shapes` pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import networkx as nx

from nasdsl import ir
from nasdsl.errors import ErrorList, GraphError, LimitError, NasdslError, SpecError
from nasdsl.loader import scalar_type_name
from nasdsl.ops import MAX_CHANNELS, OPS, check_int
from nasdsl.spec import Block, MergeBlock, OpBlock, RefBlock, SeqBlock, Spec, Template, UseBlock, Value, did_you_mean

MAX_NODES = 100_000
MAX_TEMPLATE_DEPTH = 64
MAX_SPATIAL = 1 << 16


@dataclass
class Tree:
    """One expanded block. ``output`` is the graph node that carries its result."""

    #: "op", "seq", "merge", "use", "ref", "input", or "skip" (switched off by
    #: ``when``: passes its input through)
    kind: str
    name: str
    path: str
    block: Block | None
    output: str
    inputs: tuple[str, ...]
    children: list[Tree] = field(default_factory=list)
    template: str | None = None
    #: evaluated template arguments, in the template's parameter order
    args: dict[str, object] = field(default_factory=dict)
    phase: str = "both"


@dataclass
class _Scope:
    root: str  # qualified path of the scope (model: "")
    env: dict[str, object]
    templates: tuple[str, ...]  # template names being expanded, outermost first


class _Builder:
    def __init__(self, spec: Spec, variables: dict[str, object], max_nodes: int):
        self.spec = spec
        self.variables = variables
        self.max_nodes = max_nodes
        self.g = nx.DiGraph()
        self.paths: dict[str, str] = {}  # block path -> output node

    # -- nodes ---------------------------------------------------------------
    def add_node(self, name: str, op: str, attrs: dict, given: tuple[str, ...], block: Block | None, phase: str,
                 inputs: tuple[str, ...], scope: _Scope) -> str:
        if self.g.number_of_nodes() >= self.max_nodes:
            raise LimitError(
                f"more than {self.max_nodes} nodes after template expansion (raise it with --max-nodes)",
                location=block.loc if block else None,
                path=block.path if block else None,
            )
        if name in self.g:
            raise GraphError(f"duplicate node name '{name}'", location=block.loc if block else None, path=name)
        self.g.add_node(
            name,
            op=op,
            attrs=attrs,
            given=given,
            shape=None,
            loc=block.loc if block else self.spec.input.loc,
            keypath=block.path if block else "input",
            phase=phase,
            scope=scope.templates,
        )
        for i, src in enumerate(inputs):
            self.g.add_edge(src, name, index=i)
        return name

    # -- blocks --------------------------------------------------------------
    def expand(self, block: Block, name: str, path: str, inputs: tuple[str, ...], scope: _Scope, phase: str) -> Tree:
        if block.phase != "both":
            phase = block.phase
        if block.when is not None:
            cond = block.when.evaluate(scope.env)
            if not isinstance(cond, bool):
                raise SpecError(
                    f"expected a condition (true or false), got {scalar_type_name(cond)}",
                    location=block.when.loc,
                    path=block.when.path,
                )
            if not cond:
                return Tree("skip", name, path, block, inputs[0], inputs, phase=phase)
        if isinstance(block, OpBlock):
            tree = self._op(block, name, path, inputs, scope, phase)
        elif isinstance(block, SeqBlock):
            tree = self._seq(block, name, path, inputs, scope, phase)
        elif isinstance(block, MergeBlock):
            tree = self._merge(block, name, path, inputs, scope, phase)
        elif isinstance(block, UseBlock):
            tree = self._use(block, name, path, inputs, scope, phase)
        else:
            assert isinstance(block, RefBlock)
            tree = self._ref(block, name, path, inputs, scope, phase)
        self.paths[path] = tree.output
        return tree

    def _op(self, b: OpBlock, name: str, path: str, inputs: tuple[str, ...], scope: _Scope, phase: str) -> Tree:
        opdef = OPS[b.op]
        given = {}
        for key, value in b.attrs:
            given[key] = value.evaluate(scope.env, opdef.attr_index[key].literals)
        try:
            attrs = opdef.normalise(given)
        except SpecError as e:
            value = dict(b.attrs).get(e.path) if e.path else None
            raise SpecError(
                e.message,
                location=value.loc if value else b.loc,
                path=value.path if value else b.path,
            ) from None
        node = self.add_node(path, b.op, attrs, tuple(given), b, phase, inputs[:1], scope)
        return Tree("op", name, path, b, node, inputs[:1], phase=phase)

    def _seq(self, b: SeqBlock, name: str, path: str, inputs: tuple[str, ...], scope: _Scope, phase: str) -> Tree:
        tree = Tree("seq", name, path, b, inputs[0], inputs, phase=phase)
        current = inputs
        for child_name, child in b.items:
            sub = self.expand(child, child_name, _join(path, child_name), current, scope, phase)
            tree.children.append(sub)
            current = (sub.output,)
        tree.output = current[0]
        return tree

    def _merge(self, b: MergeBlock, name: str, path: str, inputs: tuple[str, ...], scope: _Scope, phase: str) -> Tree:
        tree = Tree("merge", name, path, b, "", inputs, phase=phase)
        outs = []
        for branch_name, branch in b.branches:
            sub = self.expand(branch, branch_name, _join(path, branch_name), inputs, scope, phase)
            tree.children.append(sub)
            outs.append(sub.output)
        tree.output = self.add_node(path, b.op, {}, (), b, phase, tuple(outs), scope)
        return tree

    def _use(self, b: UseBlock, name: str, path: str, inputs: tuple[str, ...], scope: _Scope, phase: str) -> Tree:
        if b.template in OPS:
            return self._op(OpBlock(b.loc, b.path, b.phase, b.when, op=b.template), name, path, inputs, scope, phase)
        t = self.spec.templates.get(b.template)
        if t is None:
            known = [*self.spec.templates, *OPS]
            raise SpecError(
                f"unknown op or template '{b.template}'{did_you_mean(b.template, known)}", location=b.loc, path=b.path
            )
        if t.name in scope.templates:
            chain = " -> ".join([*scope.templates[scope.templates.index(t.name):], t.name])
            raise LimitError(f"template {t.name} instantiates itself ({chain})", location=b.loc, path=b.path)
        if len(scope.templates) >= MAX_TEMPLATE_DEPTH:
            raise LimitError(f"templates nested deeper than {MAX_TEMPLATE_DEPTH} levels", location=b.loc, path=b.path)
        args = self.bind(t, b, scope)
        env = {**self.variables, **args}
        inner = _Scope(path, env, (*scope.templates, t.name))
        body = self.expand(t.body, name, path, inputs, inner, phase)
        tree = Tree("use", name, path, b, body.output, inputs, [body], t.name, args, phase)
        return tree

    def bind(self, t: Template, b: UseBlock, scope: _Scope) -> dict[str, object]:
        names = [p.name for p in t.params]
        bound: dict[str, Value] = {}
        positional = [v for k, v in b.args if k is None]
        if len(positional) > len(names):
            raise SpecError(
                f"{t.name} takes {len(names)} argument{'s' if len(names) != 1 else ''} "
                f"({', '.join(names)}), got {len(positional)}",
                location=positional[len(names)].loc if positional else b.loc,
                path=f"{b.path}.args",
            )
        for pname, v in zip(names, positional):
            bound[pname] = v
        for key, v in b.args:
            if key is None:
                continue
            if key not in names:
                raise SpecError(
                    f"{t.name} has no parameter '{key}'{did_you_mean(key, names)}; parameters: {', '.join(names)}",
                    location=v.loc,
                    path=v.path,
                )
            if key in bound:
                raise SpecError(f"argument '{key}' given twice", location=v.loc, path=v.path)
            bound[key] = v
        values: dict[str, object] = {}
        for p in t.params:
            if p.name in bound:
                values[p.name] = bound[p.name].evaluate(scope.env)
            elif p.default is not None:
                values[p.name] = p.default.evaluate({**self.variables, **values})
            else:
                missing = [q.name for q in t.params if q.name not in bound and q.default is None]
                raise SpecError(
                    f"{t.name} takes {len(names)} arguments ({', '.join(names)}), "
                    f"got {len(bound)}: missing {', '.join(missing)}",
                    location=b.loc,
                    path=f"{b.path}.args",
                )
        return values

    def _ref(self, b: RefBlock, name: str, path: str, inputs: tuple[str, ...], scope: _Scope, phase: str) -> Tree:
        target = _join(scope.root, b.target)
        if path == target or path.startswith(target + "."):
            raise GraphError(
                f"reference to '{b.target}' from inside it would make a cycle", location=b.loc, path=f"{b.path}.ref"
            )
        node = self.paths.get(target)
        if node is None:
            prefix = scope.root + "." if scope.root else ""
            known = [p[len(prefix):] for p in self.paths if p.startswith(prefix)]
            raise GraphError(
                f"no node named '{b.target}' before this point{did_you_mean(b.target, known)}",
                location=b.loc,
                path=f"{b.path}.ref",
            )
        return Tree("ref", name, path, b, node, inputs, phase=phase)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def evaluate_variables(spec: Spec, overrides: Mapping[str, object] | None = None) -> dict[str, object]:
    """Evaluate the spec's variables in order; each may use the ones before it.
    ``overrides`` replaces evaluated values (backends use it to explore variants)."""
    env: dict[str, object] = {}
    for name, value in spec.variables:
        v = overrides[name] if overrides and name in overrides else value.evaluate(env)
        if isinstance(v, list):
            raise SpecError("expected a number or a boolean, found a list", location=value.loc, path=value.path)
        env[name] = v
    return env


def _input_shape(spec: Spec, env: dict[str, object]) -> tuple[int, int, int]:
    shape = spec.input.shape.evaluate(env)
    out = []
    for i, (v, item) in enumerate(zip(shape, spec.input.shape.items)):
        try:
            out.append(check_int(v, 1, MAX_CHANNELS if i == 0 else MAX_SPATIAL))
        except SpecError as e:
            raise e.at(location=item.loc, path=item.path) from None
    return tuple(out)


def _input_stats(value: Value | None, channels: int, env: dict[str, object]) -> tuple[float, ...] | None:
    if value is None:
        return None
    v = value.evaluate(env)
    if not isinstance(v, list):
        v = [v] * channels
    if len(v) != channels:
        raise SpecError(
            f"expected {channels} values (one per input channel), found {len(v)}", location=value.loc, path=value.path
        )
    for x in v:
        if isinstance(x, bool) or not isinstance(x, (int, float)) or x != x or x in (float("inf"), float("-inf")):
            raise SpecError(f"expected numbers, found {x!r}", location=value.loc, path=value.path)
    return tuple(float(x) for x in v)


def build(
    spec: Spec, *, max_nodes: int = MAX_NODES, variables: Mapping[str, object] | None = None
) -> tuple[nx.DiGraph, Tree]:
    """Expand ``spec`` into the graph IR and the expanded block tree.
    ``variables`` overrides evaluated variable values."""
    env = evaluate_variables(spec, variables)
    shape = _input_shape(spec, env)
    mean = _input_stats(spec.input.mean, shape[0], env)
    std = _input_stats(spec.input.std, shape[0], env)
    if std is not None and any(s == 0 for s in std):
        raise SpecError("expected non-zero values", location=spec.input.std.loc, path=spec.input.std.path)
    b = _Builder(spec, env, max_nodes)
    scope = _Scope("", dict(env), ())
    inp = spec.input.name
    b.g.add_node(inp, op="input", attrs={"shape": shape, "mean": mean, "std": std}, given=(), shape=shape,
                 loc=spec.input.loc, keypath="input", phase="both", scope=())
    root = Tree("input", "", "", None, inp, ())
    model_names = {n for n, _ in spec.model.items}
    if inp in model_names:
        raise GraphError(f"the input's name '{inp}' is also the name of a model entry", location=spec.input.loc,
                         path="input.name")
    model = b.expand(spec.model, "", "", (inp,), scope, "both")
    root.children.append(model)
    outputs = []
    errors: list[NasdslError] = []
    for out in spec.outputs or ():
        try:
            info = _output(b, spec, out, scope, model_names)
        except NasdslError as e:
            errors.append(e)
            continue
        if info is not None:
            outputs.append(info[0])
            if info[1] is not None:
                root.children.append(info[1])
    if errors:
        raise ErrorList(errors) if len(errors) > 1 else errors[0]
    if not spec.outputs:
        outputs.append(ir.Output("out", model.output, 1.0, False, None))
    if outputs[0].training_only:
        first = spec.outputs[0]
        raise SpecError("the first output is the model's main output; it cannot be training-only",
                        location=first.loc, path=first.path)
    b.g.graph.update(
        name=spec.name,
        input=inp,
        outputs=tuple(outputs),
        variables=env,
        spec=spec,
        sha256=spec.sha256,
    )
    return b.g, root


def _output(b: _Builder, spec: Spec, out, scope: _Scope, model_names: set[str]):
    if out.when is not None:
        cond = out.when.evaluate(scope.env)
        if not isinstance(cond, bool):
            raise SpecError(f"expected true or false, got {scalar_type_name(cond)}", location=out.when.loc,
                            path=out.when.path)
        if not cond:
            return None
    src = b.paths.get(out.source)
    if src is None:
        known = [p for p in b.paths if p]
        raise GraphError(f"no node named '{out.source}'{did_you_mean(out.source, known)}", location=out.source_loc,
                         path=f"{out.path}.from")
    weight = 1.0
    if out.loss_weight is not None:
        weight = out.loss_weight.evaluate(scope.env)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight <= 1e6:
            raise SpecError(f"expected a number >= 0, got {weight!r}", location=out.loss_weight.loc,
                            path=out.loss_weight.path)
    tree = None
    node = src
    if out.head is not None:
        if out.name in model_names:
            raise GraphError(f"output '{out.name}' has a head and the same name as a model entry", location=out.loc,
                             path=out.path)
        phase = "train" if out.training_only else "both"
        tree = b.expand(out.head, out.name, out.name, (src,), scope, phase)
        node = tree.output
    return ir.Output(out.name, node, float(weight), out.training_only, out.when.raw if out.when else None), tree
