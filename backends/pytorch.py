"""PyTorch backend: readable source for a compiled graph, and in-memory models.

Public entries:

- :func:`generate_source` returns the source of a Python module (``str``) that
  depends on torch alone: one ``nn.Module`` class per spec template, the model
  class named after the spec, a NamedTuple of the training outputs, a ``loss``
  method with the spec's loss weights and a ``reset_parameters`` method with
  the spec's initialisation.
- :func:`load_source` imports such source as a module; :func:`model_class`
  gives the model class of a graph.

The backend reads the graph IR and nothing else (``docs/ir.md``): the block
tree (``g.graph["model"]`` and the outputs' heads) says which classes and
attributes to write, each node's ``exprs`` how a class computes an attribute
from its arguments, ``g.graph["templates"]`` the classes' signatures. Python
decides everything here; ``templates/pytorch.py.jinja`` only lays out. The
file's constructor arguments are the variables the exposure analysis
(:mod:`nasdsl.passes.exposure`) finds; the others are folded into the code.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.util
import linecache
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import jinja2
import networkx as nx

from nasdsl import __version__, ir
from nasdsl.errors import CodegenError
from nasdsl.expr import Sym
from nasdsl.ops import OPS, lowering, lowering_of
from nasdsl.passes.pipeline import run_pipeline

from .names import BUILTINS, IMPORTED, METHOD_LOCALS, Namespace, check_attribute
from .pyformat import Call, docstring, docstring_with_args, layout, literal, safe_text, wrap

#: The passes this backend runs before it writes (see nasdsl/passes/pipeline.py).
PIPELINE = ("expose", "inplace")


# ---------------------------------------------------------------------------
# Lowerings: one per op, registered in the op's registry entry


@dataclass(frozen=True)
class TorchLowering:
    """How an op becomes PyTorch.

    ``module(ctx, node, lead)`` returns the ``nn.X(...)`` call of an op node and
    the leading dimension of its output; ``classes`` are the module classes it
    makes (``reset_parameters`` applies the spec's ``init`` to them). A merge
    has no module: ``join(terms)`` is the expression combining its branches'
    values in a ``forward``, and ``helper`` the ``nn.ModuleDict`` subclass
    that holds unnamed branches (name, docstring, and the lines of its
    ``forward`` that combine the list ``results`` of the branches' outputs).
    """

    module: Callable[[_Ctx, str, object], tuple[Call, object]] | None = None
    classes: tuple[str, ...] = ()
    join: Callable[[list[str]], str | Call] | None = None
    helper: tuple[str, str, tuple[str, ...]] | None = None


RENAME = {"out": "out_channels"}


def _kw(ctx: _Ctx, node: str, *keys: str) -> list[str]:
    given = ir.node(ctx.g, node)["given"]
    return [f"{RENAME.get(k, k)}={_render(_attr(ctx, node, k))}" for k in keys if k in given]


def _conv(ctx: _Ctx, node: str, lead: object) -> tuple[Call, object]:
    out = _attr(ctx, node, "out")
    args = [_render(lead), _render(out), _render(_attr(ctx, node, "kernel"))]
    args += _kw(ctx, node, "stride", "padding", "dilation", "groups", "bias")
    return Call("nn.Conv2d", tuple(args)), out


def _linear(ctx: _Ctx, node: str, lead: object) -> tuple[Call, object]:
    out = _attr(ctx, node, "out")
    return Call("nn.Linear", (_render(lead), _render(out), *_kw(ctx, node, "bias"))), out


def _batch_norm(ctx: _Ctx, node: str, lead: object) -> tuple[Call, object]:
    g = ir.graph_of(ctx.g, node)
    (src,) = ir.inputs(g, node)
    cls = "nn.BatchNorm2d" if len(g.nodes[src]["shape"]) == 3 else "nn.BatchNorm1d"
    return Call(cls, (_render(lead), *_kw(ctx, node, "eps", "momentum"))), lead


def _pool(cls: str, extra: tuple[str, ...] = ()) -> Callable[[_Ctx, str, object], tuple[Call, object]]:
    def module(ctx: _Ctx, node: str, lead: object) -> tuple[Call, object]:
        kernel = _render(_attr(ctx, node, "kernel"))
        return Call(cls, (kernel, *_kw(ctx, node, "stride", "padding", "ceil_mode", *extra))), lead

    return module


def _fixed(cls: str, *args: str) -> Callable[[_Ctx, str, object], tuple[Call, object]]:
    return lambda ctx, node, lead: (Call(cls, args), lead)


def _activation(cls: str) -> Callable[[_Ctx, str, object], tuple[Call, object]]:
    def module(ctx: _Ctx, node: str, lead: object) -> tuple[Call, object]:
        data = ir.node(ctx.g, node)
        if data["op"] == "gelu" and "approximate" in data["given"]:
            return Call(cls, (f"approximate={_render(_attr(ctx, node, 'approximate'))}",)), lead
        inplace = OPS[data["op"]].in_place and ctx.inplace(node)
        return Call(cls, ("inplace=True",) if inplace else ()), lead

    return module


def _flatten(ctx: _Ctx, node: str, lead: object) -> tuple[Call, object]:
    g = ir.graph_of(ctx.g, node)
    (src,) = ir.inputs(g, node)
    for d in g.nodes[src]["shape"][1:]:
        lead = lead * d
    return Call("nn.Flatten", ()), lead


def _adaptive(ctx: _Ctx, node: str, lead: object) -> tuple[Call, object]:
    return Call("nn.AdaptiveAvgPool2d", (_render(_attr(ctx, node, "size")),)), lead


def _lrn(ctx: _Ctx, node: str, lead: object) -> tuple[Call, object]:
    return Call(
        "nn.LocalResponseNorm", (_render(_attr(ctx, node, "size")), *_kw(ctx, node, "alpha", "beta", "k"))
    ), lead


def _dropout(ctx: _Ctx, node: str, lead: object) -> tuple[Call, object]:
    return Call("nn.Dropout", (f"p={_render(_attr(ctx, node, 'p'))}",)), lead


lowering("pytorch", "conv2d")(TorchLowering(_conv, ("nn.Conv2d",)))
lowering("pytorch", "linear")(TorchLowering(_linear, ("nn.Linear",)))
lowering("pytorch", "batch_norm")(TorchLowering(_batch_norm, ("nn.BatchNorm2d", "nn.BatchNorm1d")))
lowering("pytorch", "max_pool")(TorchLowering(_pool("nn.MaxPool2d")))
lowering("pytorch", "avg_pool")(TorchLowering(_pool("nn.AvgPool2d", ("count_include_pad",))))
lowering("pytorch", "adaptive_avg_pool")(TorchLowering(_adaptive))
lowering("pytorch", "global_avg_pool")(TorchLowering(_fixed("nn.AdaptiveAvgPool2d", "1")))
lowering("pytorch", "lrn")(TorchLowering(_lrn))
lowering("pytorch", "dropout")(TorchLowering(_dropout))
lowering("pytorch", "flatten")(TorchLowering(_flatten))
lowering("pytorch", "softmax")(TorchLowering(_fixed("nn.Softmax", "dim=1")))
lowering("pytorch", "identity")(TorchLowering(_fixed("nn.Identity")))
for _op, _cls in (
    ("relu", "nn.ReLU"),
    ("relu6", "nn.ReLU6"),
    ("sigmoid", "nn.Sigmoid"),
    ("tanh", "nn.Tanh"),
    ("silu", "nn.SiLU"),
    ("gelu", "nn.GELU"),
):
    lowering("pytorch", _op)(TorchLowering(_activation(_cls)))
lowering("pytorch", "concat")(
    TorchLowering(
        join=lambda terms: Call("torch.cat", (Call("", tuple(terms), "[", "]"), "1")),
        helper=(
            "Concat",
            "Runs every branch on the same input and joins the results on channels",
            ("return torch.cat(results, 1)",),
        ),
    )
)
lowering("pytorch", "add")(
    TorchLowering(
        join=lambda terms: " + ".join(terms),
        helper=(
            "Add",
            "Runs every branch on the same input and sums the results",
            ("total = results[0]", "for result in results[1:]:", "    total = total + result", "return total"),
        ),
    )
)


def _lowering(ctx: _Ctx, node: str) -> TorchLowering:
    data = ir.node(ctx.g, node)
    return lowering_of("pytorch", data["op"], node, data)  # type: ignore[return-value]


def _merge_lowering(ctx: _Ctx, b: ir.Block) -> TorchLowering:
    low = _lowering(ctx, b.output)
    if low.join is None:
        raise CodegenError(
            f"the PyTorch backend cannot lower op '{b.op}' as a merge (node {b.path})", location=b.loc, path=b.keypath
        )
    return low


# ---------------------------------------------------------------------------
# Values as a class sees them


@dataclass
class _Ctx:
    """Where a class is being generated: the graph, and whose arguments its expressions name."""

    g: nx.DiGraph
    template: str | None  # None for the model class
    exposed: frozenset[str]
    #: whether an activation node may be in-place (a template's answer holds for all its uses)
    inplace: Callable[[str], bool]
    #: the class's arguments as its code names them (a spec name that would shadow something is renamed)
    arguments: dict[str, str] = field(default_factory=dict)
    #: class names of the templates and the merge helpers
    classes: dict[str, str] = field(default_factory=dict)
    #: keyword names of each template class's parameters
    keywords: dict[str, dict[str, str]] = field(default_factory=dict)
    used_helpers: set[str] = field(default_factory=set)
    #: leading dimension of each top-level entry produced so far, by path (for references)
    leads: dict[str, object] = field(default_factory=dict)

    def value(self, expr: object, concrete: object) -> object:
        """An expression of the IR as this class writes it: a template class writes its
        parameters' names; the model writes exposed variables' names and folds the others."""
        if expr is None:
            return concrete
        names = _names(expr)
        if self.template is None:
            if not names & self.exposed:
                return concrete
            variables = self.g.graph["variables"]
            fold: dict[str, object] = {n: variables[n] for n in names - self.exposed}
        else:
            fold = {}
        fold.update({n: Sym.name(self.arguments[n]) for n in names if self.arguments.get(n, n) != n})
        if not fold:
            return expr
        if isinstance(expr, Sym):
            return expr.substitute(fold)
        if isinstance(expr, tuple):
            return tuple(x.substitute(fold) if isinstance(x, Sym) else x for x in expr)
        return expr


def _names(expr: object) -> frozenset[str]:
    if isinstance(expr, Sym):
        return expr.names
    if isinstance(expr, tuple):
        return frozenset().union(*(_names(x) for x in expr))
    return frozenset()


def _render(v: object) -> str:
    if isinstance(v, Sym):
        return v.render()
    if isinstance(v, list):
        return literal(tuple(v)) if all(not isinstance(x, Sym) for x in v) else "(" + ", ".join(map(_render, v)) + ")"
    if isinstance(v, tuple) and any(isinstance(x, Sym) for x in v):
        return "(" + ", ".join(map(_render, v)) + ")"
    return literal(v)


def _square(v: object) -> object:
    if isinstance(v, tuple) and len(v) == 2 and v[0] == v[1] and not isinstance(v[0], Sym):
        return v[0]
    return v


def _attr(ctx: _Ctx, node: str, key: str) -> object:
    """An op attribute: the spec's expression if it wrote one, else the default."""
    data = ir.node(ctx.g, node)
    concrete = data["attrs"][key]
    if key in data["given"] and key in data["exprs"]:
        v = ctx.value(data["exprs"][key], None)
        if v is not None:
            if isinstance(v, list):
                v = tuple(v)
            if v == "valid":
                v = (0, 0)
            if isinstance(concrete, float) and isinstance(v, int) and not isinstance(v, bool):
                v = float(v)  # a float attribute written as an integer stays a float (TorchScript's types)
            return _square(v) if not isinstance(v, Sym) else v
    return _square(concrete)


def _arg(ctx: _Ctx, a: ir.Arg) -> object:
    return ctx.value(a.expr, a.value)


# ---------------------------------------------------------------------------
# Module expressions


def _op_module(ctx: _Ctx, b: ir.Block, lead: object) -> tuple[Call, object]:
    """``nn.X(...)`` for an op block and the leading dimension of its output."""
    low = _lowering(ctx, b.output)
    if low.module is None:
        data = ir.node(ctx.g, b.output)
        raise CodegenError(
            f"the PyTorch backend cannot lower op '{data['op']}' as a module (node {b.output})",
            location=data["loc"],
            path=data["keypath"],
        )
    return low.module(ctx, b.output, lead)


def _template_call(ctx: _Ctx, b: ir.Block, lead: object) -> tuple[Call, object]:
    """``Template(in_channels, args...)`` and the leading dimension it returns:
    required parameters positional, defaulted ones by keyword when given."""
    tmpl = ctx.g.graph["templates"][b.template]
    args = [_render(lead)]
    for p, a in zip(tmpl.params, b.args, strict=True):
        explicit = not p.required and p.default is None and p.default_expr is None
        if not a.given and not explicit:
            continue
        text = _render(_arg(ctx, a))
        args.append(text if p.required or explicit else f"{ctx.keywords[b.template][p.name]}={text}")
    return Call(ctx.classes[b.template], tuple(args)), _lead_of(ctx, b, lead)


def _lead_of(ctx: _Ctx, b: ir.Block, lead: object) -> object:
    """The leading dimension after block ``b``, symbolically where possible."""
    if b.kind in ("skip",):
        return lead
    if b.kind == "op":
        data = ir.node(ctx.g, b.output)
        rule = OPS[data["op"]].lead
        if rule == "out":
            return _attr(ctx, b.output, "out")
        if rule == "flatten":
            g = ir.graph_of(ctx.g, b.output)
            (src,) = ir.inputs(g, b.output)
            for d in g.nodes[src]["shape"][1:]:
                lead = lead * d
            return lead
        return lead
    if b.kind == "seq":
        for c in b.children:
            if not _off(ctx, c):
                lead = _lead_of(ctx, c, lead)
        return lead
    if b.kind == "merge":
        leads = [lead if _off(ctx, c) else _lead_of(ctx, c, lead) for c in b.children]
        if OPS[b.op].lead == "sum":
            total = leads[0]
            for x in leads[1:]:
                total = total + x
            return total
        return leads[0]
    if b.kind == "use":
        values = {ctx.keywords[b.template][a.name]: _arg(ctx, a) for a in b.args}
        inner = _Ctx(ctx.g, b.template, ctx.exposed, ctx.inplace, ctx.keywords[b.template], ctx.classes, ctx.keywords)
        return _substitute(_lead_of(inner, b.children[0], Sym.name("in_channels")), {**values, "in_channels": lead})
    if b.kind == "ref":
        if b.target in ctx.leads:
            return ctx.leads[b.target]
        return ir.node(ctx.g, b.output)["shape"][0]
    raise CodegenError(f"unexpected block kind {b.kind}")


def _substitute(value: object, values: dict[str, object]) -> object:
    """A template's lead (in its parameters and ``in_channels``) in the caller's terms."""
    if not isinstance(value, Sym):
        return value
    ints = {k: v for k, v in values.items() if isinstance(v, (int, Sym)) and not isinstance(v, bool)}
    if not value.names <= ints.keys():
        raise CodegenError(f"cannot write the channel count {value.render()} in the caller's terms")
    return value.substitute(ints)


def _off(ctx: _Ctx, b: ir.Block) -> bool:
    """Whether the generated code leaves block ``b`` out (switched off for good)."""
    return b.kind == "skip" or (b.dormant and b.when.switch not in ctx.exposed)


def _module_expr(ctx: _Ctx, b: ir.Block, lead: object) -> tuple[Call, object]:
    """A module expression for a block nested inside a class."""
    if _off(ctx, b):
        return Call("nn.Identity", ()), lead
    if b.kind == "op":
        return _op_module(ctx, b, lead)
    if b.kind == "use":
        return _template_call(ctx, b, lead)
    if b.kind == "seq":
        items = []
        for c in b.children:
            call, lead = _module_expr(ctx, c, lead)
            items.append(call)
        if b.named:
            named = tuple(f"{c.name}={call.flat()}" for c, call in zip(b.children, items, strict=True))
            return Call("nn.Sequential", (Call("OrderedDict", named),)), lead
        return Call("nn.Sequential", tuple(items)), lead
    if b.kind == "merge":
        _merge_lowering(ctx, b)
        helper = ctx.classes[f"merge:{b.op}"]
        ctx.used_helpers.add(b.op)
        args, leads = [], []
        for c in b.children:
            call, out = _module_expr(ctx, c, lead)
            args.append(f"{c.name}={call.flat()}" if b.named else call)
            leads.append(out)
        out_lead = leads[0]
        if OPS[b.op].lead == "sum":
            for x in leads[1:]:
                out_lead = out_lead + x
        return Call(helper, tuple(args)), out_lead
    data = ir.node(ctx.g, b.output) if b.output in ctx.g else {}
    raise CodegenError(
        "the PyTorch backend supports references only between the top-level entries of a model or template",
        location=b.loc or data.get("loc"),
        path=b.keypath or b.path,
    )


# ---------------------------------------------------------------------------
# Classes


@dataclass
class ClassCode:
    """A class laid out as lines (the template adds blank lines between parts)."""

    name: str
    head: list[str]
    init: list[str]
    methods: list[list[str]] = field(default_factory=list)
    #: merge ops whose helper class (Concat, Add) the class uses
    helpers: set[str] = field(default_factory=set)


def _annotation(values: list[object]) -> str:
    kinds: list[str] = []
    for v in values:
        if isinstance(v, bool):
            k = "bool"
        elif isinstance(v, int):
            k = "int"
        elif isinstance(v, float):
            k = "float"
        else:
            k = "tuple[int, int]"
        if k not in kinds:
            kinds.append(k)
    if kinds == ["int", "float"] or kinds == ["float", "int"]:
        return "float"
    return " | ".join(kinds) if kinds else "int"


def _shape_note(shape: tuple[int, ...], lead: object | None = None, spatial: str | None = None) -> str:
    channels = _render(lead) if lead is not None else str(shape[0])
    if len(shape) == 1:
        return f"(N, {channels})"
    return f"(N, {channels}, {spatial if spatial is not None else f'{shape[1]}, {shape[2]}'})"


def _model_lead(lead: object) -> object | None:
    """A model-level leading dimension for a comment: written out only when it names an argument."""
    return lead if isinstance(lead, Sym) else None


class _Writer:
    """Builds the classes of one generated file."""

    def __init__(self, g: nx.DiGraph):
        self.g = g
        self.exposed = frozenset(g.graph["exposed"])
        self.helpers: set[str] = set()
        self.needs_math = False
        #: the nodes under each path (a template use's nodes), built once
        self.members: dict[str, list[str]] = {}
        for graph in (g, g.graph["dormant"].graph):
            for n, data in graph.nodes(data=True):
                if data["op"] == "external":
                    continue
                parts = n.split(".")
                for i in range(1, len(parts) + 1):
                    self.members.setdefault(".".join(parts[:i]), []).append(n)
        self._check_attributes()
        self._name_everything()

    def _name_everything(self) -> None:
        """The file's identifiers, from one module-level namespace: class names (the model's
        first, then the outputs', the templates', the merge helpers'), and per class the
        names of its constructor arguments, renamed where a spec name would shadow a
        builtin, an import or a class."""
        g = self.g
        self.module_names = Namespace(BUILTINS | IMPORTED | METHOD_LOCALS)
        self.model_class_name = self.module_names.create(g.graph["name"])
        self.outputs_class_name = self.module_names.create(f"{self.model_class_name}Outputs")
        self.classes: dict[str, str] = {}
        for name in g.graph["templates"]:
            self.classes[name] = self.module_names.create(name)
        merges = sorted({b.op for root in ir.roots(g) for b in ir.walk(root) if b.kind == "merge"})
        for op in merges:
            low = OPS[op].lowerings.get("pytorch")
            if low is not None and low.helper is not None:
                self.classes[f"merge:{op}"] = self.module_names.create(low.helper[0])
        self.keywords: dict[str, dict[str, str]] = {}
        for name, t in g.graph["templates"].items():
            scope = Namespace({"self", "in_channels"}, outer=self.module_names)
            self.keywords[name] = {p.name: scope.create(p.name) for p in t.params}
        scope = Namespace({"self"}, outer=self.module_names)
        self.arguments = {v: scope.create(v) for v in g.graph["exposed"]}

    def _ctx(self, template: str | None, inplace: Callable[[str], bool]) -> _Ctx:
        arguments = self.keywords[template] if template is not None else self.arguments
        return _Ctx(self.g, template, self.exposed, inplace, arguments, self.classes, self.keywords)

    def _locals(self) -> Namespace:
        """A namespace for the locals of one method: never a module-level name, ``self`` or ``x``."""
        return Namespace({"self", "x"}, outer=self.module_names)

    def _check_attributes(self) -> None:
        """Refuse spec names that become attributes (the state_dict keys, kept exactly)
        and would hide what nn.Module, nn.Sequential, nn.ModuleDict or the generated model
        use; output names that cannot be NamedTuple fields."""
        g = self.g
        # switches of output heads are kept as self.<flag>
        flags = frozenset(o.when for o in ir.all_outputs(g) if o.when is not None and o.when in self.exposed)
        for graph in (g, g.graph["dormant"].graph):
            for n, d in graph.nodes(data=True):
                if d["op"] in ("input", "external"):
                    continue
                for part in n.split("."):
                    if not part.isdigit():
                        check_attribute(part, "name", d["loc"], d["keypath"], flags)
        for o in ir.all_outputs(g):
            check_attribute(o.name, "output name", o.loc, o.keypath or "outputs", flags)

    # -- shared pieces -------------------------------------------------------
    def _spatial_notes(self, instances: list[ir.Block]) -> dict[str, str]:
        """Per node of a template body (path relative to the instance): how to
        show its spatial size in a comment, the same for every instance."""
        seen: dict[str, set] = {}
        for inst in instances:
            in_shape = ir.node(self.g, inst.inputs[0])["shape"]
            for n in self.members.get(inst.path, ()):
                s = ir.node(self.g, n)["shape"]
                note = None if s is None or len(s) == 1 else ("H, W" if s[1:] == in_shape[1:] else f"{s[1]}, {s[2]}")
                seen.setdefault(n[len(inst.path) :], set()).add(note)
        return {rel: (notes.pop() if len(notes) == 1 else "H', W'") for rel, notes in seen.items()}

    def _statements(
        self, ctx: _Ctx, t: ir.Block, lead: object, notes, after=None, names: Namespace | None = None
    ) -> tuple[list[str], list[str], object]:
        """Init and forward lines for the children of a root sequence; ``after(child)``
        gives lines to run right after a child (the model's auxiliary heads); ``names``
        holds the forward's locals (values kept for references)."""
        names = names if names is not None else self._locals()
        init: list[str] = []
        fwd: list[str] = []
        targets = {c.target for c in t.children if c.kind == "ref"}
        targets |= {b.target for c in t.children if c.kind == "merge" for b in c.children if b.kind == "ref"}
        target_nodes = {c.output for c in t.children if c.kind == "ref"}
        target_nodes |= {b.output for c in t.children if c.kind == "merge" for b in c.children if b.kind == "ref"}
        produced: dict[str, str] = {}  # path or node -> local variable
        for c in t.children:
            wanted = c.path in targets or c.passed in target_nodes
            if _off(ctx, c):  # switched off: x holds its input, which a ref or an output may read as its value
                if wanted and c.path not in produced:
                    local = names.create(c.name)
                    fwd.append(f"{local} = x")
                    produced[c.path] = local
                    produced.setdefault(c.passed, local)
                ctx.leads[c.path] = lead
                if after is not None:
                    fwd += after(c)
                continue
            if c.kind == "ref":
                name, lead = self._referenced(ctx, c, lead, produced)
                fwd.append(f"x = {name}")
                continue
            cond = self._condition(ctx, c)
            suffix = f" if {cond} else None" if cond else ""
            if c.kind == "merge" and any(b.kind == "ref" for b in c.children):
                call, value, out_lead = self._merge_with_refs(ctx, c, lead, produced)
            else:
                call, out_lead = _module_expr(ctx, c, lead)
                value = f"self.{c.name}(x)"
            if call is not None:
                init += layout(f"self.{c.name} = ", call, 2, suffix)
            shape = ir.node(self.g, c.output)["shape"]
            if ctx.template:
                note = _shape_note(shape, out_lead, notes(c))
            else:
                note = _shape_note(shape, _model_lead(out_lead))
            stmt = layout("x = ", value, 0, comment=note)
            guard = []
            if cond:
                guard.append(f"self.{c.name} is not None")
            if c.phase == "eval" and t.phase != "eval":
                guard.append("not self.training")
            elif c.phase == "train" and t.phase != "train":
                guard.append("self.training")
            if guard:
                fwd.append(f"if {' and '.join(guard)}:")
                fwd += ["    " + s for s in stmt]
            else:
                fwd += stmt
            lead = out_lead
            ctx.leads[c.path] = lead
            if wanted:
                local = names.create(c.name)
                fwd.append(f"{local} = x")
                produced[c.path] = local
                produced.setdefault(c.passed, local)
                produced.setdefault(c.output, local)
            if after is not None:
                fwd += after(c)
        return init, fwd, lead

    def _referenced(self, ctx: _Ctx, ref: ir.Block, lead: object, produced: dict[str, str]) -> tuple[str, object]:
        """The local variable holding a referenced entry's value, and its leading dimension."""
        name = produced.get(ref.target) or produced.get(ref.output)
        if name is None:
            raise CodegenError(
                "the PyTorch backend supports references only to earlier top-level entries",
                location=ref.loc,
                path=ref.keypath,
            )
        if ctx.template is None:
            return name, ir.node(self.g, ref.output)["shape"][0]
        return name, _lead_of(ctx, ref, lead)

    def _merge_with_refs(self, ctx: _Ctx, c: ir.Block, lead: object, produced: dict[str, str]):
        """A merge whose branches include references to earlier entries: its other
        branches live in an ``nn.ModuleDict`` named after the merge, and the
        forward line joins them with the referenced values."""
        modules, terms, leads = [], [], []
        for b in c.children:
            if b.kind == "ref":
                name, ref_lead = self._referenced(ctx, b, lead, produced)
                terms.append(name)
                leads.append(ref_lead)
            elif _off(ctx, b):
                terms.append("x")
                leads.append(lead)
            else:
                call, out = _module_expr(ctx, b, lead)
                modules.append(f'"{b.name}": {call.flat()}')
                terms.append(f'self.{c.name}["{b.name}"](x)')
                leads.append(out)
        container = Call("nn.ModuleDict", (Call("", tuple(modules), "{", "}"),)) if modules else None
        value = _merge_lowering(ctx, c).join(terms)
        total = leads[0]
        if OPS[c.op].lead == "sum":
            for x in leads[1:]:
                total = total + x
        return container, value, total

    def _condition(self, ctx: _Ctx, c: ir.Block) -> str:
        """The guard of a block the class builds only when an argument says so."""
        w = c.when
        if w is None or not isinstance(w.expr, Sym):
            return ""
        if ctx.template is None and w.switch not in self.exposed:
            return ""
        return ctx.value(w.expr, None).render()

    # -- templates -----------------------------------------------------------
    def template_class(self, name: str, instances: list[ir.Block]) -> ClassCode:
        texts = {}
        spatial = self._spatial_notes(instances)
        inplace: dict[str, bool] = {}
        for inst in instances:
            for n in self.members.get(inst.path, ()):
                data = ir.node(self.g, n)
                if "inplace" in data:
                    rel = n[len(inst.path) :]
                    inplace[rel] = inplace.get(rel, True) and data["inplace"]
        tmpl = self.g.graph["templates"][name]
        annotations = {p.name: _annotation([i.arg(p.name).value for i in instances]) for p in tmpl.params}
        for inst in instances:
            code = self._template_class_for(name, inst, annotations, spatial, inplace)
            self.helpers |= code.helpers
            key = "\n".join(code.head + code.init + sum(code.methods, []))
            texts.setdefault(key, (code, inst))
        if len(texts) > 1:
            (_, a), (_, b) = list(texts.values())[:2]
            raise CodegenError(
                f"template {name} needs different code at {a.path or 'the top'} and {b.path}: the uses differ in "
                "what `when` switches on, or a layer's size depends on the input's spatial size; use one "
                "template per variant, or make the size a parameter",
                location=b.loc,
                path=b.keypath,
            )
        return next(iter(texts.values()))[0]

    def _template_class_for(
        self, name: str, inst: ir.Block, annotations: dict[str, str], spatial: dict, inplace: dict[str, bool]
    ) -> ClassCode:
        tmpl = self.g.graph["templates"][name]
        ctx = self._ctx(name, lambda node: inplace.get(node[len(inst.path) :], False))
        keywords = self.keywords[name]
        class_name = self.classes[name]
        lead = Sym.name("in_channels")
        body = inst.children[0]

        def notes(c: ir.Block) -> str:
            return spatial.get(c.output[len(inst.path) :], "H', W'")

        params = ["self", "in_channels: int"]
        fixups: list[str] = []
        for p in tmpl.params:
            ann = annotations[p.name]
            own = keywords[p.name]
            if p.required or (p.default is None and p.default_expr is None):
                params.append(f"{own}: {ann}")
            elif p.default is not None:
                params.append(f"{own}: {ann} = {_render(p.default)}")
            else:
                params.append(f"{own}: {ann} | None = None")
                fixups += [f"if {own} is None:", f"    {own} = {_render(ctx.value(p.default_expr, None))}"]
        head = [f"class {class_name}(nn.Module):"] + docstring(tmpl.doc or f"The {name} block of the spec.", 1)
        sig = layout("def ", Call("__init__", tuple(params)), 1, " -> None:")
        sig += docstring_with_args(f"Build the {name} block", self._template_arg_docs(tmpl, inst), 2)
        fix = ["        " + f for f in fixups]
        if body.kind == "seq" and body.named and not _off(ctx, body):
            init, fwd, out_lead = self._statements(ctx, body, lead, notes)
            forward = layout("def ", Call("forward", ("self", "x: torch.Tensor")), 1, " -> torch.Tensor:")
            forward += ["        " + f if f else "" for f in fwd] + ["        return x"]
            start = [*sig, "        super().__init__()", *fix]
            return ClassCode(class_name, head, start + init, [forward], ctx.used_helpers)
        if body.kind == "merge" and body.named and not _off(ctx, body):
            init, fwd = [], []
            outs = []
            names = self._locals()
            for c in body.children:
                call, out_lead = _module_expr(ctx, c, lead)
                init += layout(f"self.{c.name} = ", call, 2)
                note = _shape_note(ir.node(self.g, c.output)["shape"], out_lead, notes(c))
                local = names.create(c.name)
                fwd += layout(f"{local} = ", f"self.{c.name}(x)", 2, comment=note)
                outs.append(local)
            total = _lead_of(ctx, body, lead)
            note = _shape_note(ir.node(self.g, body.output)["shape"], total, notes(body))
            fwd += layout("return ", _merge_lowering(ctx, body).join(outs), 2, comment=note)
            forward = layout("def ", Call("forward", ("self", "x: torch.Tensor")), 1, " -> torch.Tensor:") + fwd
            start = [*sig, "        super().__init__()", *fix]
            return ClassCode(class_name, head, start + init, [forward], ctx.used_helpers)
        # A single module, an unnamed sequence or unnamed branches: subclass it.
        call, _ = _module_expr(ctx, body, lead)
        base = call.func
        head[0] = f"class {class_name}({base}):"
        init = docstring_with_args(f"Build the {name} block", self._template_arg_docs(tmpl, inst), 2)
        init += layout("super().__init__", Call("", call.args), 2)
        if fixups:
            raise CodegenError(
                f"template {name}: defaults computed from other parameters need a named body",
                location=tmpl.loc,
                path=f"templates.{name}",
            )
        return ClassCode(class_name, head, sig + init, [], ctx.used_helpers)

    # -- the model -----------------------------------------------------------
    def model_class(self) -> tuple[ClassCode, ClassCode | None]:
        g = self.g
        name = self.model_class_name
        outputs_name = self.outputs_class_name
        variables = g.graph["variables"]
        ctx = self._ctx(None, lambda node: bool(ir.node(g, node).get("inplace")))
        names = self._locals()
        model = g.graph["model"]
        outputs = [o for o in ir.all_outputs(g) if o.when is None or variables[o.when] or o.when in self.exposed]
        inp = g.nodes[g.graph["input"]]["attrs"]
        lead = inp["shape"][0]

        # the main output is what forward's x holds at the end, unless it reads an earlier entry or has a head
        main = outputs[0]
        tap_main = main.head is not None or not model.children or model.children[-1].path != main.source
        taps: dict[str, list[ir.Output]] = {}
        for o in outputs if tap_main else outputs[1:]:
            entry = next((c.path for c in model.children if c.path == o.source), None)
            if entry is None:  # a path inside an entry that ends where the entry does
                src_node = o.head.inputs[0] if o.head is not None else o.node
                found = [c.path for c in model.children if c.kind not in ("ref", "skip") and c.passed == src_node]
                entry = found[-1] if found else None
            if entry is None:
                raise CodegenError(
                    "the PyTorch backend reads outputs only from top-level model entries",
                    location=o.loc,
                    path=f"{o.keypath}.from",
                )
            taps.setdefault(entry, []).append(o)

        head_init: list[str] = []
        exposed_flags: list[str] = []
        local = {o.name: names.create(o.name) for o in outputs if o in outputs[1:] or tap_main}

        def after(c: ir.Block) -> list[str]:
            lines = []
            for o in taps.pop(c.path, []):
                guards = []
                cond = o.when if o.when is not None and o.when in self.exposed else ""
                if o.head is None:
                    lines.append(f"{local[o.name]} = x")
                    continue
                source_shape = ir.node(g, o.head.inputs[0])["shape"]
                call, _ = _module_expr(ctx, o.head, source_shape[0])
                suffix = f" if {self.arguments[cond]} else None" if cond else ""
                head_init.extend(layout(f"self.{o.name} = ", call, 2, suffix))
                if cond:
                    guards.append(f"self.{o.name} is not None")
                if o.training_only:
                    guards.append("self.training")
                note = _shape_note(ir.node(g, o.node)["shape"], _model_lead(_lead_of(ctx, o.head, source_shape[0])))
                mine = local[o.name]
                if guards:
                    lines.append(f"{mine}: torch.Tensor | None = None")
                    lines.append(f"if {' and '.join(guards)}:")
                    lines += ["    " + s for s in layout(f"{mine} = ", f"self.{o.name}(x)", 0, comment=note)]
                else:
                    lines += layout(f"{mine} = ", f"self.{o.name}(x)", 0, comment=note)
                if cond and cond not in exposed_flags:
                    exposed_flags.append(cond)
            return lines

        init, fwd, _ = self._statements(ctx, model, lead, lambda c: None, after, names)
        self.helpers |= ctx.used_helpers
        pre: list[str] = []
        pre_init: list[str] = []
        if inp["mean"] is not None:
            pre_init += self._buffer("input_mean", inp["mean"])
            pre.append("x = x - self.input_mean")
        if inp["std"] is not None:
            pre_init += self._buffer("input_std", inp["std"])
            pre.append("x = x / self.input_std")

        params = ["self"]
        for v in g.graph["exposed"]:
            val = variables[v]
            params.append(f"{self.arguments[v]}: {_annotation([val])} = {literal(val)}")
        head = [f"class {name}(nn.Module):"] + docstring_with_args(
            g.graph["doc"] or f"The {name} model", [], 1, paragraphs=[self._input_doc()]
        )
        extras = outputs[1:]
        outputs_class = None
        weights = Call("", tuple(f'"{o.name}": {literal(o.loss_weight)}' for o in outputs), "{", "}")
        sig = layout("def ", Call("__init__", tuple(params)), 1, " -> None:")
        sig += docstring_with_args(
            "Build the model with the spec's layers",
            [(self.arguments[v], self._variable_doc(v)) for v in g.graph["exposed"]],
            2,
            paragraphs=[] if g.graph["exposed"] else ["Every variable of the spec is folded into the code"],
        )
        body = ["        super().__init__()"]
        body += layout("self.loss_weights = ", weights, 2)
        body += [f"        self.{f} = {self.arguments[f]}" for f in exposed_flags]
        body += pre_init + init + head_init + ["        self.reset_parameters()"]
        ret_type = "torch.Tensor"
        fwd_lines = [*pre, *fwd]
        final = local[main.name] if tap_main else "x"
        if extras:
            outputs_class = self._outputs_class(outputs)
            ret_type = f"{outputs_name} | torch.Tensor"
            fields = ", ".join([final, *(local[o.name] for o in extras)])
            if all(o.training_only for o in extras):
                flags = [f"self.{f}" for f in exposed_flags]
                unconditional = any(o.when is None or o.when not in self.exposed for o in extras)
                cond = "self.training" + (
                    ""
                    if unconditional or not flags
                    else f" and ({' or '.join(flags)})"
                    if len(flags) > 1
                    else f" and {flags[0]}"
                )
                fwd_lines += [f"if {cond}:"] + ["    " + s for s in layout("return ", f"{outputs_name}({fields})", 0)]
                fwd_lines.append(f"return {final}")
            else:
                ret_type = outputs_name
                fwd_lines += layout("return ", f"{outputs_name}({fields})", 0)
        else:
            fwd_lines.append(f"return {final}")
        forward = layout("def ", Call("forward", ("self", "x: torch.Tensor")), 1, f" -> {ret_type}:")
        forward += ["        " + f for f in fwd_lines]
        methods = [forward, self._loss(outputs, extras), self._reset()]
        return ClassCode(name, head, sig + body, methods), outputs_class

    def _input_doc(self) -> str:
        """What the model expects: the input's shape, what the spec says it holds, and the
        normalisation the model applies itself."""
        g = self.g
        attrs = g.nodes[g.graph["input"]]["attrs"]
        text = f"Input: a batch of shape (N, {', '.join(map(str, attrs['shape']))})"
        if g.graph.get("input_doc"):
            text += f", {g.graph['input_doc'].rstrip('.')}"
        text += ". "
        done = []
        if attrs["mean"] is not None:
            done.append(f"subtracts the per-channel mean {_numbers(attrs['mean'])}")
        if attrs["std"] is not None:
            done.append(f"divides by the per-channel std {_numbers(attrs['std'])}")
        text += f"The model {' and '.join(done)} itself" if done else "The model applies no normalisation itself"
        return text

    def _variable_doc(self, v: str) -> str:
        """What a constructor argument changes: the layers and attributes that use it, or
        the blocks and outputs it switches."""
        g = self.g
        value = g.graph["variables"][v]
        switched = [o.name for o in ir.all_outputs(g) if o.when == v]
        for root in ir.roots(g):
            switched += [b.path for b in ir.walk(root) if b.when is not None and b.when.switch == v and b.path]
        uses = []
        for graph in (g, g.graph["dormant"].graph):
            for n, data in graph.nodes(data=True):
                uses += [f"{attr} of {n}" for attr, deps in data.get("deps", {}).items() if v in deps]
        parts = []
        if switched:
            parts.append(f"builds {_listed(sorted(set(switched)))} when true")
        if uses:
            parts.append(f"sets {_listed(uses)}")
        return f"{'; '.join(parts) or 'passed to the templates that take it'} (default {literal(value)})"

    def _template_arg_docs(self, tmpl: ir.Template, inst: ir.Block) -> list[tuple[str, str]]:
        """``(name, text)`` for each constructor argument of a template's class."""
        prefix = inst.path + "."
        uses: dict[str, list[str]] = {p.name: [] for p in tmpl.params}
        stack = list(inst.children)
        while stack:
            b = stack.pop()
            rel = b.path[len(prefix) :] if b.path.startswith(prefix) else b.name
            if b.when is not None and isinstance(b.when.expr, Sym):
                for name in b.when.expr.names & uses.keys():
                    uses[name].append(f"builds {rel or b.name} when true")
            if b.kind == "use" and b is not inst:
                for a in b.args:
                    for name in _names(a.expr) & uses.keys():
                        uses[name].append(f"{a.name} of {rel} ({b.template})")
                continue  # its own class documents what it does with them
            if b.kind == "op":
                data = ir.node(self.g, b.output)
                for attr, expr in data["exprs"].items():
                    for name in _names(expr) & uses.keys():
                        uses[name].append(f"{attr} of {rel}")
            stack.extend(b.children)
        docs = [("in_channels", "channels of the input")]
        for p in tmpl.params:
            found = uses[p.name]
            docs.append((p.name, _listed(found) if found else "unused by the layers"))
        return docs

    def _buffer(self, name: str, values: tuple[float, ...]) -> list[str]:
        tensor = Call("torch.tensor", (Call("", tuple(literal(float(v)) for v in values), "[", "]"),))
        view = f"{tensor.flat()}.view(1, -1, 1, 1)"
        return layout("self.register_buffer", Call("", (f'"{name}"', view, "persistent=False")), 2)

    def _outputs_class(self, outputs: list[ir.Output]) -> ClassCode:
        name = self.outputs_class_name
        head = [f"class {name}(NamedTuple):"] + docstring("The model's outputs in training, main output first", 1)
        fields = []
        for i, o in enumerate(outputs):
            optional = i > 0 and (o.training_only or (o.when is not None and o.when in self.exposed))
            fields.append(f"    {o.name}: torch.Tensor{' | None' if optional else ''}")
        return ClassCode(name, head + [""] + fields, [])

    def _loss(self, outputs: list[ir.Output], extras: list[ir.Output]) -> list[str]:
        outputs_name = self.outputs_class_name
        lines = layout(
            "def ",
            Call(
                "loss",
                (
                    "self",
                    f"outputs: {outputs_name} | torch.Tensor" if extras else "outputs: torch.Tensor",
                    "target: torch.Tensor",
                ),
            ),
            1,
            " -> torch.Tensor:",
        )
        weights = ", ".join(f"{o.name} {o.loss_weight:g}" for o in outputs)
        lines += docstring(
            f"Cross-entropy of each training output, weighted as the spec says ({weights}). "
            "Call it on what the model returns in training mode",
            2,
        )
        main = outputs[0]
        scale = "" if main.loss_weight == 1.0 else f"{literal(main.loss_weight)} * "
        if not extras:
            lines.append(f"        return {scale}F.cross_entropy(outputs, target)")
            return lines
        lines += [
            "        if isinstance(outputs, torch.Tensor):",
            f"            return {scale}F.cross_entropy(outputs, target)",
        ]
        lines += layout("total = ", f"{scale}F.cross_entropy(outputs.{main.name}, target)", 2)
        for o in extras:
            if o.loss_weight == 0:
                continue  # an output that is not trained (an embedding, say)
            add = f"total + {literal(o.loss_weight)} * F.cross_entropy(outputs.{o.name}, target)"
            optional = o.training_only or (o.when is not None and o.when in self.exposed)
            if optional:
                lines.append(f"        if outputs.{o.name} is not None:")
                lines += layout("total = ", add, 3)
            else:
                lines += layout("total = ", add, 2)
        lines.append("        return total")
        return lines

    def _reset(self) -> list[str]:
        lines = ["    def reset_parameters(self) -> None:"]
        rules = self.g.graph["init"]
        described = "; ".join(
            f"{op} "
            + ", ".join(
                f"{p} {r.scheme}" + (f" {r.args[0][1]:g}" if r.scheme == "constant" else "") for p, r in rs.items()
            )
            for op, rs in rules.items()
        )
        lines += docstring(f"Initialise the parameters as the spec says: {described or 'PyTorch defaults'}", 2)
        branches: list[tuple[list[str], list[str]]] = []
        for op, rs in rules.items():
            body = []
            for pname, rule in rs.items():
                stmt = self._init_stmt(f"m.{pname}", rule)
                if stmt is None:
                    continue
                if pname == "bias":
                    body += ["if m.bias is not None:", "    " + stmt]
                else:
                    body.append(stmt)
            if body:
                classes = list(OPS[op].lowerings["pytorch"].classes)
                same = [i for i, (_, b) in enumerate(branches) if b == body]
                if same:
                    names, _ = branches[same[0]]
                    branches[same[0]] = ([*names, *classes], body)
                else:
                    branches.append((classes, body))
        if not branches:
            return lines
        lines.append("        for m in self.modules():")
        for i, (names, body) in enumerate(branches):
            cls = names[0] if len(names) == 1 else "(" + ", ".join(names) + ")"
            lines += layout(f"{'if' if i == 0 else 'elif'} isinstance", Call("", ("m", cls)), 3, ":")
            lines += ["                " + b for b in body]
        return lines

    def _init_stmt(self, target: str, rule: ir.InitRule) -> str | None:
        args = dict(rule.args)
        s = rule.scheme
        if s == "default":
            return None
        if s == "xavier_caffe":
            self.needs_math = True
            return f"_xavier_caffe_({target})"
        if s in ("zeros", "ones"):
            return f"nn.init.{s}_({target})"
        if s == "constant":
            return f"nn.init.constant_({target}, {literal(args.get('value', 0.0))})"
        if s == "kaiming_normal" or s == "kaiming_uniform":
            return f'nn.init.{s}_({target}, mode="fan_out", nonlinearity="relu")'
        defaults = {
            "normal": {"mean": 0.0, "std": 1.0},
            "trunc_normal": {"mean": 0.0, "std": 1.0, "a": -2.0, "b": 2.0},
            "uniform": {"a": 0.0, "b": 1.0},
            "xavier_uniform": {"gain": 1.0},
            "xavier_normal": {"gain": 1.0},
        }
        full = {**defaults[s], **args}
        kws = ", ".join(f"{k}={literal(float(v))}" for k, v in full.items())
        return f"nn.init.{s}_({target}, {kws})"


def _numbers(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"


def _listed(items: list[str], most: int = 4) -> str:
    """``a, b and c``, at most ``most`` items then "and N more"."""
    shown = items[:most]
    if len(items) > most:
        return f"{', '.join(shown)} and {len(items) - most} more"
    return ", ".join(shown[:-1]) + (" and " if len(shown) > 1 else "") + shown[-1] if shown else ""


def _helper_class(op: str, name: str) -> ClassCode:
    _, doc, join = OPS[op].lowerings["pytorch"].helper
    head = [f"class {name}(nn.ModuleDict):"] + docstring(doc, 1)
    init = [
        "    def __init__(self, /, *branches: nn.Module, **named: nn.Module) -> None:",
        "        super().__init__({**{str(i): b for i, b in enumerate(branches)}, **named})",
    ]
    forward = [
        "    def forward(self, x: torch.Tensor) -> torch.Tensor:",
        "        results: list[torch.Tensor] = []",
        "        for branch in self.values():",
        "            results.append(branch(x))",
        *(f"        {line}" for line in join),
    ]
    return ClassCode(name, head, init, [forward])


def _template_order(g: nx.DiGraph, exposed: frozenset[str]) -> tuple[list[str], dict[str, list[ir.Block]]]:
    """Templates in the order their first use (that the code builds) finishes expanding."""
    instances: dict[str, list[ir.Block]] = {}
    order: list[str] = []

    def visit(b: ir.Block) -> None:
        if b.kind == "skip" or (b.dormant and b.when.switch not in exposed):
            return
        for c in b.children:
            visit(c)
        if b.kind == "use":
            instances.setdefault(b.template, []).append(b)
            if b.template not in order:
                order.append(b.template)

    for root in ir.roots(g):
        visit(root)
    return order, instances


_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader(__package__ or "backends", "templates"),
    autoescape=False,
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
    undefined=jinja2.StrictUndefined,
)


def prepare(graph: object, *, verify: bool = False) -> nx.DiGraph:
    """The graph this backend writes from: ``graph`` through :data:`PIPELINE`."""
    return run_pipeline(ir.as_graph(graph), PIPELINE, verify=verify)


@dataclass(frozen=True)
class Generated:
    """A generated module: its source and the name of its model class (the spec's name,
    unless that would shadow something the file uses)."""

    source: str
    model_class: str


def generate(graph: object, *, source_name: str | None = None, verify: bool = False) -> Generated:
    """The PyTorch module for a graph (or a compiled spec), with its model class's name."""
    g = prepare(graph, verify=verify)
    w = _Writer(g)
    order, instances = _template_order(g, w.exposed)
    templates = [w.template_class(name, instances[name]) for name in order]
    model, outputs = w.model_class()
    helpers = sorted((_helper_class(op, w.classes[f"merge:{op}"]) for op in w.helpers), key=lambda c: c.name)
    name = g.graph["name"]
    exposed = ", ".join(w.arguments[v] for v in g.graph["exposed"]) or "none"
    shown = safe_text(os.path.basename(source_name or g.graph["file"])) or "a spec"
    all_names = sorted([model.name, *([outputs.name] if outputs else []), *(c.name for c in templates)])
    public = layout("__all__ = ", Call("", tuple(f'"{n}"' for n in all_names), "[", "]"), 0)
    source = _ENV.get_template("pytorch.py.jinja").render(
        version=__version__,
        source=shown,
        sha=g.graph["sha256"][:16],
        doc=docstring(g.graph["doc"] or f"The {name} model", 0),
        header=["# " + line for line in wrap(f"It depends on torch alone. Constructor arguments: {exposed}.", 86)],
        needs_math=w.needs_math,
        needs_namedtuple=outputs is not None,
        needs_ordered_dict=any("OrderedDict(" in line for c in [*templates, model] for line in c.init),
        public=public,
        helpers=helpers,
        templates=templates,
        outputs=outputs,
        model=model,
    )
    return Generated(source, model.name)


def generate_source(graph: object, *, source_name: str | None = None, verify: bool = False) -> str:
    """The PyTorch module for a graph (or a compiled spec), as a string (deterministic)."""
    return generate(graph, source_name=source_name, verify=verify).source


# ---------------------------------------------------------------------------
# Loading generated source in memory


class _SourceLoader(importlib.abc.Loader):
    def __init__(self, source: str, filename: str):
        self.source = source
        self.filename = filename

    def create_module(self, spec):  # noqa: ANN001 - importlib protocol
        return None

    def exec_module(self, module) -> None:  # noqa: ANN001
        exec(compile(self.source, self.filename, "exec"), module.__dict__)  # noqa: S102 - our own generated code

    def get_source(self, fullname: str) -> str:
        return self.source


def load_source(source: str):
    """Import generated source as a module (registered in ``sys.modules``)."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    name = f"nasdsl_generated_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    filename = f"<nasdsl generated {digest}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    spec = importlib.util.spec_from_loader(name, _SourceLoader(source, filename), origin=filename)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def model_class(graph: object) -> type:
    """The generated model class of a graph (or a compiled spec), built in memory."""
    generated = generate(ir.as_graph(graph))
    return getattr(load_source(generated.source), generated.model_class)


__all__ = ["PIPELINE", "Generated", "generate", "generate_source", "load_source", "model_class", "prepare"]
