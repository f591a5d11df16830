"""Expand a parsed spec into the graph IR.

The result is a ``networkx.DiGraph`` (see :mod:`nasdsl.ir` for its contract)
plus the expanded block tree that the PyTorch backend turns into classes.
Expansion evaluates every expression, binds template arguments, resolves
references and enforces the expansion limits; shapes are left to the
:func:`nasdsl.passes.shapes.infer_shapes` pass.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import networkx as nx

from nasdsl import ir
from nasdsl.errors import GraphError, LimitError, NasdslError, SpecError
from nasdsl.ops import MAX_CHANNELS, OPS, check_int, describe
from nasdsl.spec import (
    Block,
    MergeBlock,
    OpBlock,
    RefBlock,
    SeqBlock,
    Spec,
    Template,
    UseBlock,
    Value,
    did_you_mean,
    flatten,
    raise_errors,
)

MAX_NODES = 100_000
MAX_TEMPLATE_DEPTH = 64
MAX_SPATIAL = 1 << 16
MAX_LOSS_WEIGHT = 1e6


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
    #: for each name in ``env`` that the spec wrote somewhere: that value and the scope it is evaluated in
    sources: dict[str, tuple[Value, _Scope]] = field(default_factory=dict)

    def blame(self, value: Value) -> Value:
        """The value the user wrote that ``value`` stands for.

        A value that is a bare name (``out: c3x3``) stands for what that name was
        bound to: a template argument at the use site, a parameter's default or a
        variable (maybe from ``--set``). Errors about the value are reported there.
        """
        scope: _Scope = self
        for _ in range(MAX_TEMPLATE_DEPTH + len(self.sources) + 1):
            name = value.raw.strip() if isinstance(value.raw, str) and value.items is None else None
            if name is None or name not in scope.sources:
                break
            value, scope = scope.sources[name]
        return value


class _Builder:
    def __init__(self, spec: Spec, variables: dict[str, object], max_nodes: int):
        self.spec = spec
        self.variables = variables
        self.max_nodes = max_nodes
        self.g = nx.DiGraph()
        self.paths: dict[str, str] = {}  # block path -> output node
        #: where each variable's value was written (a variable passed to build() has no place)
        self.sources: dict[str, tuple[Value, _Scope]] = {}

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
    ) -> str:
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
            try:
                cond = _condition(block.when, scope, f"node {path}")
            except SpecError as e:
                raise _in_node(e, scope, path) from None
            if not cond:
                self.paths[path] = inputs[0]  # a reference to a switched-off block reads its input
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
            try:
                given[key] = value.evaluate(scope.env, opdef.attr_index[key].literals)
            except SpecError as e:
                raise _in_node(e, scope, path) from None
        try:
            attrs = opdef.normalise(given)
        except SpecError as e:
            raise self._attr_error(e, b, path, scope) from None
        node = self.add_node(path, b.op, attrs, tuple(given), b, phase, inputs[:1], scope)
        return Tree("op", name, path, b, node, inputs[:1], phase=phase)

    def _attr_error(self, e: SpecError, b: OpBlock, node: str, scope: _Scope) -> SpecError:
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
            out = sub.output
            if out in outs:  # the same value twice (two refs to one node): one edge each, via an identity
                out = self.add_node(sub.path, "identity", {}, (), branch, phase, (out,), scope)
            outs.append(out)
        tree.output = self.add_node(path, b.op, {}, (), b, phase, tuple(outs), scope)
        return tree

    def _use(self, b: UseBlock, name: str, path: str, inputs: tuple[str, ...], scope: _Scope, phase: str) -> Tree:
        use_path = b.path if b.template_loc in (None, b.loc) else f"{b.path}.use"
        if b.template in OPS:
            if b.args:
                raise SpecError(
                    f"expected a template after 'use', got the op '{b.template}', which takes no 'args': "
                    f"write {{op: {b.template}, ...}} with its attributes as keys",
                    location=b.template_loc or b.loc,
                    path=use_path,
                )
            return self._op(OpBlock(b.loc, b.path, b.phase, b.when, op=b.template), name, path, inputs, scope, phase)
        t = self.spec.templates.get(b.template)
        if t is None:
            known = [*self.spec.templates, *OPS]
            raise SpecError(
                f"unknown op or template '{b.template}'{did_you_mean(b.template, known)}",
                location=b.template_loc or b.loc,
                path=use_path,
            )
        if t.name in scope.templates:
            chain = " -> ".join([*scope.templates[scope.templates.index(t.name) :], t.name])
            raise LimitError(f"template {t.name} instantiates itself ({chain})", location=b.loc, path=b.path)
        if len(scope.templates) >= MAX_TEMPLATE_DEPTH:
            raise LimitError(f"templates nested deeper than {MAX_TEMPLATE_DEPTH} levels", location=b.loc, path=b.path)
        args, sources = self.bind(t, b, scope, path)
        env = {**self.variables, **args}
        inner = _Scope(path, env, (*scope.templates, t.name), sources)
        body = self.expand(t.body, name, path, inputs, inner, phase)
        tree = Tree("use", name, path, b, body.output, inputs, [body], t.name, args, phase)
        return tree

    def bind(
        self, t: Template, b: UseBlock, scope: _Scope, node: str
    ) -> tuple[dict[str, object], dict[str, tuple[Value, _Scope]]]:
        """The template's arguments at this use, in parameter order, and where each was written."""
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
        values: dict[str, object] = {}
        sources = dict(self.sources)
        for p in t.params:
            try:
                if p.name in bound:
                    values[p.name] = bound[p.name].evaluate(scope.env)
                    sources[p.name] = (bound[p.name], scope)
                else:
                    assert p.default is not None
                    values[p.name] = p.default.evaluate({**self.variables, **values})
                    sources[p.name] = (p.default, _Scope(node, {}, (), dict(sources)))
            except SpecError as e:
                raise _in_node(e, scope, node) from None
        return values, sources

    def _ref(self, b: RefBlock, name: str, path: str, inputs: tuple[str, ...], scope: _Scope, phase: str) -> Tree:
        target = _join(scope.root, b.target)
        where = {"location": b.target_loc or b.loc, "path": f"{b.path}.ref"}
        if path == target or path.startswith(target + "."):
            raise GraphError(f"cannot refer to '{b.target}' from inside it: that would make a cycle", **where)
        node = self.paths.get(target)
        if node is None:
            prefix = scope.root + "." if scope.root else ""
            known = [p[len(prefix) :] for p in self.paths if p.startswith(prefix) and p != scope.root]
            hint = did_you_mean(b.target, known)
            if not hint:  # 'conv' for 'stage.conv': a ref names a node by its whole path
                last = {k: k.rsplit(".", 1)[-1] for k in known}
                close = [k for k in known if did_you_mean(b.target, [last[k]])]
                hint = f" (did you mean '{close[-1]}'?)" if close else ""
            raise GraphError(f"no node named '{b.target}' before this point{hint}", **where)
        return Tree("ref", name, path, b, node, inputs, phase=phase)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


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


def evaluate_variables(spec: Spec, overrides: Mapping[str, object] | None = None) -> dict[str, object]:
    """Evaluate the spec's variables in order; each may use the ones before it.
    ``overrides`` replaces evaluated values (backends use it to explore variants)."""
    env: dict[str, object] = {}
    names = [n for n, _ in spec.variables]
    for i, (name, value) in enumerate(spec.variables):
        if overrides and name in overrides:
            env[name] = overrides[name]
            continue
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


def _input_shape(spec: Spec, scope: _Scope) -> tuple[int, int, int]:
    shape = spec.input.shape.evaluate(scope.env)
    out = []
    for i, (v, item) in enumerate(zip(shape, spec.input.shape.items, strict=True)):
        try:
            out.append(check_int(v, 1, MAX_CHANNELS if i == 0 else MAX_SPATIAL))
        except SpecError as e:
            origin = scope.blame(item)
            if origin is not item:
                e.message += f" (used as {item.path})"
            raise e.at(location=origin.loc, path=origin.path) from None
    return tuple(out)


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
        if isinstance(x, bool) or not isinstance(x, (int, float)) or (isinstance(x, float) and not math.isfinite(x)):
            item = value.items[i] if value.items is not None else value
            raise SpecError(f"expected a number, got {describe(x)}", location=item.loc, path=item.path)
        if nonzero and x == 0:
            item = value.items[i] if value.items is not None else value
            raise SpecError("expected a number other than 0, got 0", location=item.loc, path=item.path)
    return tuple(float(x) for x in v)


def build(
    spec: Spec, *, max_nodes: int = MAX_NODES, variables: Mapping[str, object] | None = None
) -> tuple[nx.DiGraph, Tree]:
    """Expand ``spec`` into the graph IR and the expanded block tree.
    ``variables`` overrides evaluated variable values."""
    env = evaluate_variables(spec, variables)
    b = _Builder(spec, env, max_nodes)
    scope = _Scope("", dict(env), ())
    b.sources = scope.sources = {n: (v, scope) for n, v in spec.variables if not (variables and n in variables)}
    shape = _input_shape(spec, scope)
    mean = _input_stats(spec.input.mean, shape[0], scope)
    std = _input_stats(spec.input.std, shape[0], scope, nonzero=True)
    inp = spec.input.name
    b.g.add_node(
        inp,
        op="input",
        attrs={"shape": shape, "mean": mean, "std": std},
        given=(),
        shape=shape,
        loc=spec.input.loc,
        keypath="input",
        phase="both",
        scope=(),
    )
    root = Tree("input", "", "", None, inp, ())
    model_names = {n for n, _ in spec.model.items}
    if inp in model_names:
        raise GraphError(
            f"the input's name '{inp}' is also the name of a model entry", location=spec.input.loc, path="input.name"
        )
    model = b.expand(spec.model, "", "", (inp,), scope, "both")
    root.children.append(model)
    outputs = []
    errors: list[NasdslError] = []
    for out in spec.outputs or ():
        try:
            info = _output(b, spec, out, scope, model_names)
        except NasdslError as e:
            errors.extend(flatten(e))
            continue
        if info is not None:
            outputs.append(info[0])
            if info[1] is not None:
                root.children.append(info[1])
    raise_errors(errors)
    if not spec.outputs:
        outputs.append(ir.Output("out", model.output, 1.0, False, None))
    if outputs[0].training_only:
        first = spec.outputs[0]
        raise SpecError(
            "the first output is the model's main output; it cannot be training-only",
            location=first.loc,
            path=first.path,
        )
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
    if out.when is not None and not _condition(out.when, scope, f"output {out.name}"):
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
    if out.loss_weight is not None:
        weight = out.loss_weight.evaluate(scope.env)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight <= MAX_LOSS_WEIGHT:
            origin = scope.blame(out.loss_weight)
            raise SpecError(
                f"expected a number >= 0 and <= {MAX_LOSS_WEIGHT:,.0f}, got {describe(weight)}",
                location=origin.loc,
                path=origin.path,
            )
    tree = None
    node = src
    if out.head is not None:
        if out.name in model_names:
            raise GraphError(
                f"output '{out.name}' has a head and the same name as a model entry", location=out.loc, path=out.path
            )
        phase = "train" if out.training_only else "both"
        tree = b.expand(out.head, out.name, out.name, (src,), scope, phase)
        node = tree.output
    return ir.Output(out.name, node, float(weight), out.training_only, out.when.raw if out.when else None), tree
