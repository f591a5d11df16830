"""PyTorch backend: readable source for a compiled spec, and in-memory models.

Public entries:

- :func:`generate_source` returns the source of a Python module (``str``) that
  depends on torch alone: one ``nn.Module`` class per spec template, the model
  class named after the spec, a NamedTuple of the training outputs, a ``loss``
  method with the spec's loss weights and a ``reset_parameters`` method with
  the spec's initialisation.
- :func:`build_model` compiles a spec and returns an instance of its model
  class without writing files.

Python decides everything here; ``templates/pytorch.py.jinja`` only lays out.
The file's constructor arguments are the spec's variables that can change
without changing any layer's input size (``num_classes``, dropout rates, the
switch of the auxiliary heads); the others are folded into the code.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.util
import linecache
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import networkx as nx

from nasdsl import __version__
from nasdsl.api import Compiled, compile_spec
from nasdsl.build import Tree, build
from nasdsl.errors import CodegenError, NasdslError
from nasdsl.expr import Sym, SymbolicError
from nasdsl.ops import OPS
from nasdsl.passes.check import check
from nasdsl.passes.shapes import infer_shapes
from nasdsl.spec import MergeBlock, OpBlock, SeqBlock, Spec, UseBlock, Value

from .pyformat import Call, docstring, layout, literal, safe_text

#: Names that generated methods use as locals or builtins; spec names must not shadow them.
RESERVED = frozenset(
    {"self", "x", "in_channels", "super", "isinstance", "sum", "str", "enumerate", "int", "float", "bool", "tuple"}
)
#: Module-level names of the generated file (besides the model's and templates' classes).
MODULE_NAMES = frozenset({"torch", "nn", "F", "math", "NamedTuple", "OrderedDict", "Concat", "Add", "_xavier_caffe_"})
#: Attributes the generated model class sets or defines itself.
OWN_ATTRIBUTES = frozenset({"loss", "loss_weights", "reset_parameters", "input_mean", "input_std"})


#: The public attributes of an ``nn.Module`` instance (torch 2.14); a child may not hide
#: ``train``, ``to`` or ``forward``. Names starting with '_' are refused anyway. Kept here so
#: that writing source needs no torch import; tests/test_pytorch.py checks it against torch.
MODULE_ATTRIBUTES = frozenset(
    {
        "T_destination",
        "add_module",
        "apply",
        "bfloat16",
        "buffers",
        "call_super_init",
        "children",
        "compile",
        "cpu",
        "cuda",
        "double",
        "dump_patches",
        "eval",
        "extra_repr",
        "float",
        "forward",
        "get_buffer",
        "get_extra_state",
        "get_parameter",
        "get_submodule",
        "half",
        "ipu",
        "load_state_dict",
        "modules",
        "mtia",
        "named_buffers",
        "named_children",
        "named_modules",
        "named_parameters",
        "parameters",
        "register_backward_hook",
        "register_buffer",
        "register_forward_hook",
        "register_forward_pre_hook",
        "register_full_backward_hook",
        "register_full_backward_pre_hook",
        "register_load_state_dict_post_hook",
        "register_load_state_dict_pre_hook",
        "register_module",
        "register_parameter",
        "register_state_dict_post_hook",
        "register_state_dict_pre_hook",
        "requires_grad_",
        "set_extra_state",
        "set_submodule",
        "share_memory",
        "state_dict",
        "to",
        "to_empty",
        "train",
        "training",
        "type",
        "xpu",
        "zero_grad",
    }
)


# ---------------------------------------------------------------------------
# Which variables become constructor arguments


def exposed_variables(compiled: Compiled) -> list[str]:
    """Variables that change no layer's input size and switch on or off no
    reference, nor the main output, nor an output without a head, found by
    perturbing them and comparing what the layers are built from. Up to 8
    candidates are tried one by one; more are tried in groups, halving a group
    that fails (at most ``MAX_TRIALS`` rebuilds; undecided variables are
    folded into the code)."""
    spec, g = compiled.spec, compiled.graph
    input_names = spec.input.shape.names | (spec.input.mean.names if spec.input.mean else frozenset())
    input_names |= spec.input.std.names if spec.input.std else frozenset()
    base = g.graph["variables"]
    used = _used_names(spec)
    before = _layer_inputs(g)
    candidates: list[tuple[str, object]] = []
    for i, (name, value) in enumerate(base.items()):
        if name in input_names or name not in used or name in RESERVED:
            continue
        if isinstance(value, bool):
            candidates.append((name, not value))
        elif isinstance(value, int):
            candidates.append((name, value + 1 + i))  # distinct steps, so that changes cannot cancel out
        elif isinstance(value, float):
            candidates.append((name, value * 0.5))
    budget = [MAX_TRIALS]

    refs = _refs_taken(compiled.tree)
    # outputs the class returns whatever its arguments: the main one, and those without a head module to switch off
    fixed = {o.name for o in spec.outputs or () if o.head is None} | {g.graph["outputs"][0].name}
    present = [o.name for o in g.graph["outputs"] if o.name in fixed]

    def harmless(group: list[tuple[str, object]]) -> bool:
        budget[0] -= 1
        try:
            other_graph, other_tree = build(spec, variables={**base, **dict(group)})
            other = infer_shapes(check(other_graph))
        except NasdslError:
            return False
        if _refs_taken(other_tree) != refs:
            return False  # a `when` on a ref: the generated forward reads a fixed entry
        if [o.name for o in other_graph.graph["outputs"] if o.name in fixed] != present:
            return False  # a `when` on the first output or a head-less one: the code returns a fixed set
        after = _layer_inputs(other)
        if all(isinstance(base[n], bool) for n, _ in group):
            return all(before[k] == after[k] for k in before.keys() & after.keys())
        return all(before[k] == after.get(k) for k in before)

    def decide(group: list[tuple[str, object]]) -> list[str]:
        if not group or budget[0] <= 0:
            return []
        if harmless(group):
            return [n for n, _ in group]
        if len(group) == 1:
            return []
        half = len(group) // 2
        return decide(group[:half]) + decide(group[half:])

    flags = [c for c in candidates if isinstance(base[c[0]], bool)]
    numbers = [c for c in candidates if not isinstance(base[c[0]], bool)]
    exposed: list[str] = []
    for kind in (flags, numbers):
        if len(kind) <= 8:
            exposed += [n for c in kind for n in decide([c])]
        else:
            exposed += decide(kind)
    return [n for n in base if n in exposed]


MAX_TRIALS = 64


def _used_names(spec: Spec) -> set[str]:
    names: set[str] = set()

    def visit(b) -> None:
        if b is None:
            return
        if b.when is not None:
            names.update(b.when.names)
        if isinstance(b, OpBlock):
            for _, v in b.attrs:
                names.update(v.names)
        elif isinstance(b, UseBlock):
            for _, v in b.args:
                names.update(v.names)
        elif isinstance(b, SeqBlock):
            for _, c in b.items:
                visit(c)
        elif isinstance(b, MergeBlock):
            for _, c in b.branches:
                visit(c)

    visit(spec.model)
    for t in spec.templates.values():
        visit(t.body)
        for p in t.params:
            if p.default is not None:
                names.update(p.default.names)
    for o in spec.outputs:
        visit(o.head)
        for v in (o.when, o.loss_weight):
            if v is not None:
                names.update(v.names)
    return names


def _subtrees(tree: Tree) -> Iterator[Tree]:
    """``tree`` and every block below it."""
    stack = [tree]
    while stack:
        t = stack.pop()
        stack += t.children
        yield t


def _refs_taken(tree: Tree) -> frozenset[str]:
    """The paths of the references that are followed (not switched off by ``when``)."""
    return frozenset(t.path for t in _subtrees(tree) if t.kind == "ref")


def _layer_inputs(g: nx.DiGraph) -> dict[str, tuple]:
    """What layers are built from: input sizes of sized ops, and node presence."""
    out = {}
    for n, d in g.nodes(data=True):
        if d["op"] in ("conv2d", "linear", "batch_norm"):
            (src,) = [s for s, _ in g.in_edges(n)]
            out[n] = (d["op"], g.nodes[src]["shape"][0], len(g.nodes[src]["shape"]))
        else:
            out[n] = (d["op"],)
    return out


# ---------------------------------------------------------------------------
# Symbolic evaluation of spec values inside a class


@dataclass
class _Ctx:
    """Where a class is being generated: its names and its graph."""

    g: nx.DiGraph
    env: dict[str, object]  # symbolic names and folded values
    template: str | None  # None for the model class
    #: whether an activation node may be in-place (a template's answer holds for all its uses)
    inplace: Callable[[str], bool] | None = None
    used_helpers: set[str] = field(default_factory=set)
    needs_math: bool = False


def _render(v: object) -> str:
    if isinstance(v, Sym):
        return v.render()
    if isinstance(v, list):
        return literal(tuple(v)) if all(not isinstance(x, Sym) for x in v) else "(" + ", ".join(map(_render, v)) + ")"
    if isinstance(v, tuple) and any(isinstance(x, Sym) for x in v):
        return "(" + ", ".join(map(_render, v)) + ")"
    return literal(v)


def _value(ctx: _Ctx, value: Value, concrete: object, literals=()) -> object:
    """A spec value as the class sees it: symbolic where it can be, else concrete."""
    try:
        return value.evaluate(ctx.env, literals)
    except SymbolicError:
        return concrete
    except NasdslError:
        return concrete


def _square(v: object) -> object:
    if isinstance(v, tuple) and len(v) == 2 and v[0] == v[1] and not isinstance(v[0], Sym):
        return v[0]
    return v


def _attr(ctx: _Ctx, t: Tree, key: str) -> object:
    """An op attribute: the spec's expression if it wrote one, else the default."""
    node = ctx.g.nodes[t.output]
    concrete = node["attrs"][key]
    block = t.block
    if isinstance(block, OpBlock):
        written = dict(block.attrs).get(key)
        if written is not None:
            v = _value(ctx, written, concrete, OPS[block.op].attr_index[key].literals)
            if isinstance(v, list):
                v = tuple(v)
            if v == "valid":
                v = (0, 0)
            return _square(v) if not isinstance(v, Sym) else v
    return _square(concrete)


# ---------------------------------------------------------------------------
# Module constructors


def _op_module(ctx: _Ctx, t: Tree, lead: object) -> tuple[Call, object]:
    """``nn.X(...)`` for an op node and the leading dimension of its output."""
    g = ctx.g
    node = g.nodes[t.output]
    op = node["op"]
    given = set(node["given"])
    (src,) = [s for s, _ in g.in_edges(t.output)]
    in_rank = len(g.nodes[src]["shape"])

    def kw(*keys: str) -> list[str]:
        return [f"{k if k not in RENAME else RENAME[k]}={_render(_attr(ctx, t, k))}" for k in keys if k in given]

    out_lead = lead
    if op == "conv2d":
        out = _attr(ctx, t, "out")
        args = [_render(lead), _render(out), _render(_attr(ctx, t, "kernel"))]
        args += kw("stride", "padding", "dilation", "groups", "bias")
        call, out_lead = Call("nn.Conv2d", tuple(args)), out
    elif op == "linear":
        out = _attr(ctx, t, "out")
        call, out_lead = Call("nn.Linear", (_render(lead), _render(out), *kw("bias"))), out
    elif op == "batch_norm":
        cls = "nn.BatchNorm2d" if in_rank == 3 else "nn.BatchNorm1d"
        call = Call(cls, (_render(lead), *kw("eps", "momentum")))
    elif op in ("max_pool", "avg_pool"):
        cls = "nn.MaxPool2d" if op == "max_pool" else "nn.AvgPool2d"
        extra = ("count_include_pad",) if op == "avg_pool" else ()
        call = Call(cls, (_render(_attr(ctx, t, "kernel")), *kw("stride", "padding", "ceil_mode", *extra)))
    elif op == "adaptive_avg_pool":
        call = Call("nn.AdaptiveAvgPool2d", (_render(_attr(ctx, t, "size")),))
    elif op == "global_avg_pool":
        call = Call("nn.AdaptiveAvgPool2d", ("1",))
    elif op == "lrn":
        call = Call("nn.LocalResponseNorm", (_render(_attr(ctx, t, "size")), *kw("alpha", "beta", "k")))
    elif op == "dropout":
        call = Call("nn.Dropout", tuple(f"p={_render(_attr(ctx, t, 'p'))}" for _ in [0]))
    elif op == "flatten":
        src_shape = g.nodes[src]["shape"]
        call = Call("nn.Flatten", ())
        out_lead = lead
        for d in src_shape[1:]:
            out_lead = out_lead * d
    elif op in SIMPLE:
        inplace = ctx.inplace is not None and ctx.inplace(t.output)
        args = ("inplace=True",) if op in INPLACE and inplace else ()
        if op == "gelu" and "approximate" in given:
            args = (f"approximate={_render(_attr(ctx, t, 'approximate'))}",)
        call = Call(SIMPLE[op], args)
    elif op == "softmax":
        call = Call("nn.Softmax", ("dim=1",))
    elif op == "identity":
        call = Call("nn.Identity", ())
    else:
        raise CodegenError(f"the PyTorch backend cannot lower op '{op}'", location=node["loc"], path=node["keypath"])
    return call, out_lead


RENAME = {"out": "out_channels"}
SIMPLE = {
    "relu": "nn.ReLU",
    "relu6": "nn.ReLU6",
    "sigmoid": "nn.Sigmoid",
    "tanh": "nn.Tanh",
    "silu": "nn.SiLU",
    "gelu": "nn.GELU",
}


#: activations written with ``inplace=True`` where that is safe
INPLACE = ("relu", "relu6", "silu")
#: ops whose module returns a new tensor, never a view or an alias of its input
#: (identity, flatten, dropout in eval and in-place activations do)
FRESH = frozenset(
    {
        "conv2d",
        "batch_norm",
        "linear",
        "max_pool",
        "avg_pool",
        "adaptive_avg_pool",
        "global_avg_pool",
        "lrn",
        "softmax",
        "concat",
        "add",
        "sigmoid",
        "tanh",
        "gelu",
    }
)


def _can_inplace(g: nx.DiGraph, node: str, guards: Mapping[str, frozenset[str]]) -> bool:
    """An activation may overwrite its input when that tensor is read by nothing
    else. Its input may be an alias of an earlier value (a dropout in eval, a node
    of another phase that is skipped, a node that a ``when`` the activation is not
    under can switch off), so walk back through those: every value on the way
    must have this single reader and be no output, and the walk must end at an
    op that makes a fresh tensor.

    ``g`` is the graph the code is written from, every switch on; ``guards``
    gives, for each node, the paths of the ``when`` blocks around it. The
    walk's nodes have one reader in ``g``, so whichever of them the switches
    leave out, the value the activation reads is still read by it alone."""
    outputs = {o.node for o in g.graph["outputs"]}
    phase = g.nodes[node]["phase"]
    mine = guards.get(node, frozenset())
    (src,) = [s for s, _ in g.in_edges(node)]
    while True:
        data = g.nodes[src]
        if g.out_degree(src) != 1 or src in outputs:
            return False
        switchable = not guards.get(src, frozenset()) <= mine  # may be off while the activation runs
        passes_through = data["phase"] != phase or data["op"] == "dropout" or switchable
        if not passes_through:
            return data["op"] in FRESH
        sources = [s for s, _ in g.in_edges(src)]
        if len(sources) != 1:
            return False
        src = sources[0]


def _bound(t: Tree, tmpl) -> dict[str, Value]:
    """The spec values a template use binds, by parameter name."""
    b = t.block
    assert isinstance(b, UseBlock)
    positional = [v for k, v in b.args if k is None]
    bound = dict(zip([p.name for p in tmpl.params][: len(positional)], positional, strict=True))
    bound.update({k: v for k, v in b.args if k is not None})
    return bound


def _template_values(ctx: _Ctx, t: Tree) -> dict[str, object]:
    """The arguments of a template use as the enclosing class sees them."""
    tmpl = ctx.g.graph["spec"].templates[t.template]
    bound = _bound(t, tmpl)
    return {
        p.name: (_value(ctx, bound[p.name], t.args[p.name]) if p.name in bound else t.args[p.name]) for p in tmpl.params
    }


def _template_call(ctx: _Ctx, t: Tree, lead: object, classes: dict[str, str]) -> tuple[Call, object]:
    """``Template(in_channels, args...)`` and the leading dimension it returns:
    required parameters positional, defaulted ones by keyword when given."""
    tmpl = ctx.g.graph["spec"].templates[t.template]
    bound = _bound(t, tmpl)
    values = _template_values(ctx, t)
    args = [_render(lead)]
    for p in tmpl.params:
        if p.name not in bound:
            continue
        text = _render(values[p.name])
        args.append(text if p.default is None else f"{p.name}={text}")
    return Call(classes[t.template], tuple(args)), _lead_of(ctx, t, lead)


def _lead_of(ctx: _Ctx, t: Tree, lead: object) -> object:
    """The leading dimension after block ``t``, symbolically where possible."""
    if t.kind == "op":
        node = ctx.g.nodes[t.output]
        rule = OPS[node["op"]].lead
        if rule == "out":
            return _attr(ctx, t, "out")
        if rule == "flatten":
            (src,) = [s for s, _ in ctx.g.in_edges(t.output)]
            for d in ctx.g.nodes[src]["shape"][1:]:
                lead = lead * d
            return lead
        return lead
    if t.kind == "seq":
        for c in t.children:
            lead = _lead_of(ctx, c, lead)
        return lead
    if t.kind == "merge":
        leads = [_lead_of(ctx, c, lead) for c in t.children]
        if t.block.op == "concat":
            total = leads[0]
            for x in leads[1:]:
                total = total + x
            return total
        return leads[0]
    if t.kind == "use":
        values = _template_values(ctx, t)
        inner = _Ctx(ctx.g, {**ctx.g.graph["variables"], **values}, t.template)
        return _lead_of(inner, t.children[0], lead)
    if t.kind == "ref":
        return ctx.g.nodes[t.output]["shape"][0]
    if t.kind == "skip":
        return lead
    raise CodegenError(f"unexpected block kind {t.kind}")


def _module_expr(ctx: _Ctx, t: Tree, lead: object, classes: dict[str, str]) -> tuple[Call, object]:
    """A module expression for a block nested inside a class."""
    if t.kind == "skip":
        return Call("nn.Identity", ()), lead
    if t.kind == "op":
        return _op_module(ctx, t, lead)
    if t.kind == "use":
        return _template_call(ctx, t, lead, classes)
    if t.kind == "seq":
        items = []
        for c in t.children:
            call, lead = _module_expr(ctx, c, lead, classes)
            items.append(call)
        if t.block.named:
            named = tuple(f"{c.name}={call.flat()}" for c, call in zip(t.children, items, strict=True))
            return Call("nn.Sequential", (Call("OrderedDict", named),)), lead
        return Call("nn.Sequential", tuple(items)), lead
    if t.kind == "merge":
        helper = "Concat" if t.block.op == "concat" else "Add"
        ctx.used_helpers.add(helper)
        args, leads = [], []
        for c in t.children:
            call, out = _module_expr(ctx, c, lead, classes)
            args.append(f"{c.name}={call.flat()}" if t.block.named else call)
            leads.append(out)
        out_lead = leads[0]
        if helper == "Concat":
            for x in leads[1:]:
                out_lead = out_lead + x
        return Call(helper, tuple(args)), out_lead
    node = ctx.g.nodes.get(t.output, {})
    raise CodegenError(
        "the PyTorch backend supports references only between the top-level entries of a model or template",
        location=t.block.loc if t.block else node.get("loc"),
        path=t.block.path if t.block else t.path,
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
    #: helper classes (Concat, Add) the class uses
    helpers: set[str] = field(default_factory=set)


def _annotation(values: list[object]) -> str:
    kinds = []
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


class _Writer:
    """Builds the classes of one generated file."""

    def __init__(self, compiled: Compiled, exposed: list[str]):
        self.c = compiled
        self.g = compiled.graph
        self.spec = compiled.spec
        self.exposed = exposed
        self.helpers: set[str] = set()
        self.needs_math = False
        self.classes = {name: name for name in self.spec.templates}
        #: the nodes under each path (a template use's nodes), built once
        self.members: dict[str, list[str]] = {}
        for n in self.g.nodes:
            parts = n.split(".")
            for i in range(1, len(parts) + 1):
                self.members.setdefault(".".join(parts[:i]), []).append(n)
        #: for each node, the paths of the blocks with a ``when`` around it (the code may switch them off)
        guards: dict[str, set[str]] = {}
        for t in _subtrees(self.c.tree):
            if t.kind != "skip" and t.block is not None and t.block.when is not None:
                for n in self.members.get(t.path, ()):
                    guards.setdefault(n, set()).add(t.path)
        self.guards = {n: frozenset(p) for n, p in guards.items()}
        self._check_names()

    def _check_names(self) -> None:
        """Refuse spec names that would shadow or clash with what the generated file
        uses: module-level names, locals of ``__init__``/``forward``, ``nn.Module``
        attributes, NamedTuple fields."""
        spec = self.spec
        module_level = set(MODULE_NAMES) | {spec.name, f"{spec.name}Outputs"} | set(spec.templates)

        def refuse(name: str, what: str, loc=None, path=None) -> None:
            raise CodegenError(
                f"{what} '{name}' clashes with a name the generated PyTorch file uses; rename it",
                location=loc,
                path=path,
            )

        if spec.name in spec.templates or spec.name in MODULE_NAMES or spec.name in RESERVED:
            refuse(spec.name, "model name", spec.model.loc, "name")
        for name, t in spec.templates.items():
            if name in RESERVED or name in MODULE_NAMES or name in (spec.name, f"{spec.name}Outputs"):
                refuse(name, "template name", t.loc, f"templates.{name}")
            for p in t.params:
                if p.name in module_level or p.name in RESERVED or p.name.startswith("_"):
                    refuse(p.name, "template parameter", p.loc, f"templates.{name}.params")
        for name, value in spec.variables:
            if name in module_level or name in RESERVED or name.startswith("_"):
                refuse(name, "variable name", value.loc, f"variables.{name}")
        # switches of output heads are kept as self.<flag>
        flags = {o.when.raw for o in spec.outputs if o.when is not None and o.when.raw in self.exposed}
        attributes = MODULE_ATTRIBUTES | OWN_ATTRIBUTES | flags
        for n, d in self.g.nodes(data=True):
            if d["op"] == "input":
                continue
            for part in n.split("."):
                if part.isdigit():
                    continue
                if part in attributes or part in RESERVED or part in module_level or part.startswith("_"):
                    refuse(part, "name", d["loc"], d["keypath"])
        for o in self.g.graph["outputs"]:
            if o.name in RESERVED or o.name in module_level or o.name.startswith("_") or o.name in attributes:
                so = next((x for x in spec.outputs if x.name == o.name), None)
                refuse(o.name, "output name", so.loc if so else None, so.path if so else "outputs")

    # -- shared pieces -------------------------------------------------------
    def _spatial_notes(self, instances: list[Tree]) -> dict[str, str]:
        """Per node of a template body (path relative to the instance): how to
        show its spatial size in a comment, the same for every instance."""
        seen: dict[str, set] = {}
        for inst in instances:
            in_shape = self.g.nodes[inst.inputs[0]]["shape"]
            for n in self.members.get(inst.path, ()):
                s = self.g.nodes[n]["shape"]
                note = None if len(s) == 1 else ("H, W" if s[1:] == in_shape[1:] else f"{s[1]}, {s[2]}")
                seen.setdefault(n[len(inst.path) :], set()).add(note)
        return {rel: (notes.pop() if len(notes) == 1 else "H', W'") for rel, notes in seen.items()}

    def _statements(self, ctx: _Ctx, t: Tree, lead: object, notes, after=None) -> tuple[list[str], list[str], object]:
        """Init and forward lines for the children of a root sequence; ``after(child)``
        gives lines to run right after a child (the model's auxiliary heads)."""
        init: list[str] = []
        fwd: list[str] = []
        targets = {c.output for c in t.children if c.kind == "ref"}
        targets |= {b.output for c in t.children if c.kind == "merge" for b in c.children if b.kind == "ref"}
        produced: dict[str, str] = {}
        for c in t.children:
            if c.kind == "skip":  # switched off: x holds its input, which a ref or an output may read as its value
                if (c.output in targets or c.name in targets) and c.output not in produced:
                    fwd.append(f"{c.name} = x")
                    produced[c.output] = c.name
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
                call, out_lead = _module_expr(ctx, c, lead, self.classes)
                value = f"self.{c.name}(x)"
            if call is not None:
                init += layout(f"self.{c.name} = ", call, 2, suffix)
            shape = self.g.nodes[c.output]["shape"]
            note = _shape_note(shape, out_lead if ctx.template else None, notes(c) if ctx.template else None)
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
            if c.output in targets or c.name in targets:
                fwd.append(f"{c.name} = x")
                produced[c.output] = c.name
            else:
                produced.setdefault(c.output, c.name)
            if after is not None:
                fwd += after(c)
        return init, fwd, lead

    def _referenced(self, ctx: _Ctx, ref: Tree, lead: object, produced: dict[str, str]) -> tuple[str, object]:
        """The local variable holding a referenced entry's value, and its leading dimension."""
        name = produced.get(ref.output)
        if name is None:
            raise CodegenError(
                "the PyTorch backend supports references only to earlier top-level entries",
                location=ref.block.loc,
                path=ref.block.path,
            )
        return name, self.g.nodes[ref.output]["shape"][0] if ctx.template is None else _lead_of(ctx, ref, lead)

    def _merge_with_refs(self, ctx: _Ctx, c: Tree, lead: object, produced: dict[str, str]):
        """A merge whose branches include references to earlier entries: its other
        branches live in an ``nn.ModuleDict`` named after the merge, and the
        forward line joins them with the referenced values."""
        modules, terms, leads = [], [], []
        for b in c.children:
            if b.kind == "ref":
                name, ref_lead = self._referenced(ctx, b, lead, produced)
                terms.append(name)
                leads.append(ref_lead)
            elif b.kind == "skip":
                terms.append("x")
                leads.append(lead)
            else:
                call, out = _module_expr(ctx, b, lead, self.classes)
                modules.append(f'"{b.name}": {call.flat()}')
                terms.append(f'self.{c.name}["{b.name}"](x)')
                leads.append(out)
        container = Call("nn.ModuleDict", (Call("", tuple(modules), "{", "}"),)) if modules else None
        if c.block.op == "concat":
            value: str | Call = Call("torch.cat", (Call("", tuple(terms), "[", "]"), "1"))
            total = leads[0]
            for x in leads[1:]:
                total = total + x
        else:
            value, total = " + ".join(terms), leads[0]
        return container, value, total

    def _condition(self, ctx: _Ctx, c: Tree) -> str:
        b = c.block
        if b is None or b.when is None:
            return ""
        v = _value(ctx, b.when, True)
        return v.render() if isinstance(v, Sym) else ""

    # -- templates -----------------------------------------------------------
    def template_class(self, name: str, instances: list[Tree]) -> ClassCode:
        texts = {}
        spatial = self._spatial_notes(instances)
        inplace: dict[str, bool] = {}
        for inst in instances:
            for n in self.members.get(inst.path, ()):
                if self.g.nodes[n]["op"] in INPLACE:
                    rel = n[len(inst.path) :]
                    inplace[rel] = inplace.get(rel, True) and _can_inplace(self.g, n, self.guards)
        for inst in instances:
            code = self._template_class_for(name, inst, instances, spatial, inplace)
            self.helpers |= code.helpers
            key = "\n".join(code.head + code.init + sum(code.methods, []))
            texts.setdefault(key, (code, inst))
        if len(texts) > 1:
            (_, a), (_, b) = list(texts.values())[:2]
            raise CodegenError(
                f"template {name} needs different code at {a.path or 'the top'} and {b.path}: the uses differ in "
                "what `when` switches on, or a layer's size depends on the input's spatial size; use one "
                "template per variant, or make the size a parameter",
                location=b.block.loc if b.block else None,
                path=b.block.path if b.block else None,
            )
        return next(iter(texts.values()))[0]

    def _template_class_for(
        self, name: str, inst: Tree, instances: list[Tree], spatial: dict, inplace: dict[str, bool]
    ) -> ClassCode:
        tmpl = self.spec.templates[name]
        variables = self.g.graph["variables"]
        env: dict[str, object] = dict(variables)
        env.update({p.name: Sym.name(p.name) for p in tmpl.params})
        ctx = _Ctx(self.g, env, name, inplace=lambda node: inplace.get(node[len(inst.path) :], False))
        lead = Sym.name("in_channels")
        body = inst.children[0]

        def notes(c: Tree) -> str:
            return spatial.get(c.output[len(inst.path) :], "H', W'")

        params = ["self", "in_channels: int"]
        fixups: list[str] = []
        for p in tmpl.params:
            ann = _annotation([i.args[p.name] for i in instances])
            if p.default is None:
                params.append(f"{p.name}: {ann}")
                continue
            try:
                default = p.default.evaluate(variables)
                params.append(f"{p.name}: {ann} = {_render(tuple(default) if isinstance(default, list) else default)}")
            except NasdslError:
                sym = p.default.evaluate(env)
                params.append(f"{p.name}: {ann} | None = None")
                fixups += [f"if {p.name} is None:", f"    {p.name} = {_render(sym)}"]
        head = [f"class {name}(nn.Module):"] + docstring(tmpl.doc or f"The {name} block of the spec.", 1)
        sig = layout("def ", Call("__init__", tuple(params)), 1, " -> None:")
        fix = ["        " + f for f in fixups]
        if body.kind == "seq" and body.block.named:
            init, fwd, out_lead = self._statements(ctx, body, lead, notes)
            forward = layout("def ", Call("forward", ("self", "x: torch.Tensor")), 1, " -> torch.Tensor:")
            forward += ["        " + f if f else "" for f in fwd] + ["        return x"]
            return ClassCode(name, head, sig + ["        super().__init__()"] + fix + init, [forward], ctx.used_helpers)
        if body.kind == "merge" and body.block.named:
            init, fwd = [], []
            outs = []
            for c in body.children:
                call, out_lead = _module_expr(ctx, c, lead, self.classes)
                init += layout(f"self.{c.name} = ", call, 2)
                note = _shape_note(self.g.nodes[c.output]["shape"], out_lead, notes(c))
                fwd += layout(f"{c.name} = ", f"self.{c.name}(x)", 2, comment=note)
                outs.append(c.name)
            total = _lead_of(ctx, body, lead)
            note = _shape_note(self.g.nodes[body.output]["shape"], total, notes(body))
            if body.block.op == "concat":
                value = Call("torch.cat", (Call("", tuple(outs), "[", "]"), "1"))
                fwd += layout("return ", value, 2, comment=note)
            else:
                fwd += layout("return ", " + ".join(outs), 2, comment=note)
            forward = layout("def ", Call("forward", ("self", "x: torch.Tensor")), 1, " -> torch.Tensor:") + fwd
            return ClassCode(name, head, sig + ["        super().__init__()"] + fix + init, [forward], ctx.used_helpers)
        # A single module, an unnamed sequence or unnamed branches: subclass it.
        call, _ = _module_expr(ctx, body, lead, self.classes)
        base = call.func
        head[0] = f"class {name}({base}):"
        init = layout("super().__init__", Call("", call.args), 2)
        if fixups:
            raise CodegenError(
                f"template {name}: defaults computed from other parameters need a named body",
                location=tmpl.loc,
                path=f"templates.{name}",
            )
        return ClassCode(name, head, sig + init, [], ctx.used_helpers)

    # -- the model -----------------------------------------------------------
    def model_class(self) -> tuple[ClassCode, ClassCode | None]:
        spec, g = self.spec, self.g
        variables = g.graph["variables"]
        env: dict[str, object] = dict(variables)
        env.update({v: Sym.name(v) for v in self.exposed})
        ctx = _Ctx(g, env, None, inplace=lambda node: _can_inplace(g, node, self.guards))
        model = self.c.tree.children[0]
        heads = {h.name: h for h in self.c.tree.children[1:]}
        outputs = list(g.graph["outputs"])
        spec_outputs = {o.name: o for o in spec.outputs}
        inp = g.nodes[g.graph["input"]]["attrs"]
        lead = inp["shape"][0]

        # the main output is what forward's x holds at the end, unless it reads an earlier entry or has a head
        main_spec = spec_outputs.get(outputs[0].name)
        tap_main = main_spec is not None and (
            main_spec.head is not None or not model.children or model.children[-1].path != main_spec.source
        )
        taps: dict[str, list] = {}
        for o in outputs if tap_main else outputs[1:]:
            so = spec_outputs[o.name]
            src = self.c.tree.children[0]
            src_node = None
            for c in src.children:
                if c.path == so.source or c.output == so.source:
                    src_node = c.output
            if src_node is None:
                raise CodegenError(
                    "the PyTorch backend reads outputs only from top-level model entries",
                    location=so.source_loc,
                    path=f"{so.path}.from",
                )
            taps.setdefault(src_node, []).append((o, so))

        head_init: list[str] = []
        exposed_flags: list[str] = []

        def after(c: Tree) -> list[str]:
            lines = []
            for o, so in taps.pop(c.output, []):
                h = heads.get(o.name)
                guards = []
                cond = ""
                if so.when is not None:
                    v = _value(ctx, so.when, True)
                    cond = v.render() if isinstance(v, Sym) else ""
                if h is None:
                    lines.append(f"{o.name} = x")
                    continue
                call, _ = _module_expr(ctx, h, g.nodes[c.output]["shape"][0], self.classes)
                head_init.extend(layout(f"self.{o.name} = ", call, 2, f" if {cond} else None" if cond else ""))
                if cond:
                    guards.append(f"self.{o.name} is not None")
                if o.training_only:
                    guards.append("self.training")
                note = _shape_note(g.nodes[o.node]["shape"])
                if guards:
                    lines.append(f"{o.name}: torch.Tensor | None = None")
                    lines.append(f"if {' and '.join(guards)}:")
                    lines += ["    " + s for s in layout(f"{o.name} = ", f"self.{o.name}(x)", 0, comment=note)]
                else:
                    lines += layout(f"{o.name} = ", f"self.{o.name}(x)", 0, comment=note)
                if cond and cond not in exposed_flags and cond in self.exposed:
                    exposed_flags.append(cond)
            return lines

        init, fwd, _ = self._statements(ctx, model, lead, lambda c: None, after)
        self.helpers |= ctx.used_helpers
        main = outputs[0]
        pre: list[str] = []
        pre_init: list[str] = []
        if inp["mean"] is not None:
            pre_init += self._buffer("input_mean", inp["mean"])
            pre.append("x = x - self.input_mean")
        if inp["std"] is not None:
            pre_init += self._buffer("input_std", inp["std"])
            pre.append("x = x / self.input_std")

        name = spec.name
        params = ["self"]
        for v in self.exposed:
            val = variables[v]
            params.append(f"{v}: {_annotation([val])} = {literal(val)}")
        head = [f"class {name}(nn.Module):"] + docstring(spec.doc or f"The {name} model.", 1)
        extras = outputs[1:]
        outputs_class = None
        weights = Call("", tuple(f'"{o.name}": {literal(o.loss_weight)}' for o in outputs), "{", "}")
        sig = layout("def ", Call("__init__", tuple(params)), 1, " -> None:")
        body = ["        super().__init__()"]
        body += layout("self.loss_weights = ", weights, 2)
        body += [f"        self.{f} = {f}" for f in exposed_flags]
        body += pre_init + init + head_init + ["        self.reset_parameters()"]
        ret_type = "torch.Tensor"
        fwd_lines = [*pre, *fwd]
        final = main.name if tap_main else "x"
        if extras:
            outputs_class = self._outputs_class(outputs)
            ret_type = f"{name}Outputs | torch.Tensor"
            fields = ", ".join([final, *(o.name for o in extras)])
            all_train = all(o.training_only for o in extras)
            if all_train:
                flags = [f"self.{f}" for f in exposed_flags]
                unconditional = any(not spec_outputs[o.name].when for o in extras)
                cond = "self.training" + (
                    ""
                    if unconditional or not flags
                    else f" and ({' or '.join(flags)})"
                    if len(flags) > 1
                    else f" and {flags[0]}"
                )
                fwd_lines += [f"if {cond}:"] + ["    " + s for s in layout("return ", f"{name}Outputs({fields})", 0)]
                fwd_lines.append(f"return {final}")
            else:
                ret_type = f"{name}Outputs"
                fwd_lines += layout("return ", f"{name}Outputs({fields})", 0)
        else:
            fwd_lines.append(f"return {final}")
        forward = layout("def ", Call("forward", ("self", "x: torch.Tensor")), 1, f" -> {ret_type}:")
        forward += ["        " + f for f in fwd_lines]
        methods = [forward, self._loss(outputs, extras), self._reset()]
        return ClassCode(name, head, sig + body, methods), outputs_class

    def _buffer(self, name: str, values: tuple[float, ...]) -> list[str]:
        tensor = Call("torch.tensor", (Call("", tuple(literal(float(v)) for v in values), "[", "]"),))
        view = f"{tensor.flat()}.view(1, -1, 1, 1)"
        return layout("self.register_buffer", Call("", (f'"{name}"', view, "persistent=False")), 2)

    def _outputs_class(self, outputs) -> ClassCode:
        name = f"{self.spec.name}Outputs"
        head = [f"class {name}(NamedTuple):"] + docstring("The model's outputs in training, main output first", 1)
        fields = []
        for i, o in enumerate(outputs):
            optional = i > 0 and (o.training_only or o.when)
            fields.append(f"    {o.name}: torch.Tensor{' | None' if optional else ''}")
        return ClassCode(name, head + [""] + fields, [])

    def _loss(self, outputs, extras) -> list[str]:
        spec_name = self.spec.name
        lines = layout(
            "def ",
            Call(
                "loss",
                (
                    "self",
                    f"outputs: {spec_name}Outputs | torch.Tensor" if extras else "outputs: torch.Tensor",
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
            optional = o.training_only or o.when
            if optional:
                lines.append(f"        if outputs.{o.name} is not None:")
                lines += layout("total = ", add, 3)
            else:
                lines += layout("total = ", add, 2)
        lines.append("        return total")
        return lines

    def _reset(self) -> list[str]:
        lines = ["    def reset_parameters(self) -> None:"]
        rules = self.spec.init
        described = "; ".join(
            f"{op} "
            + ", ".join(
                f"{p} {r.scheme}" + (f" {r.args[0][1]:g}" if r.scheme == "constant" else "") for p, r in rs.items()
            )
            for op, rs in rules.items()
        )
        lines += docstring(f"Initialise the parameters as the spec says: {described or 'PyTorch defaults'}", 2)
        branches = []
        classes = {"conv2d": "nn.Conv2d", "linear": "nn.Linear", "batch_norm": "nn.BatchNorm2d, nn.BatchNorm1d"}
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
                same = [i for i, (_, b) in enumerate(branches) if b == body]
                if same:
                    names, _ = branches[same[0]]
                    branches[same[0]] = ([*names, classes[op]], body)
                else:
                    branches.append(([classes[op]], body))
        if not branches:
            return lines
        lines.append("        for m in self.modules():")
        for i, (names, body) in enumerate(branches):
            names = [n for group in names for n in group.split(", ")]
            cls = names[0] if len(names) == 1 else "(" + ", ".join(names) + ")"
            lines += layout(f"{'if' if i == 0 else 'elif'} isinstance", Call("", ("m", cls)), 3, ":")
            lines += ["                " + b for b in body]
        return lines

    def _init_stmt(self, target: str, rule) -> str | None:
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


HELPERS = {
    "Concat": (
        "Runs every branch on the same input and joins the results on channels",
        "torch.cat([branch(x) for branch in self.values()], 1)",
    ),
    "Add": ("Runs every branch on the same input and sums the results", "sum(branch(x) for branch in self.values())"),
}


def _helper_class(name: str) -> ClassCode:
    doc, expr = HELPERS[name]
    head = [f"class {name}(nn.ModuleDict):"] + docstring(doc, 1)
    init = [
        "    def __init__(self, *branches: nn.Module, **named: nn.Module) -> None:",
        "        super().__init__({**{str(i): b for i, b in enumerate(branches)}, **named})",
    ]
    forward = ["    def forward(self, x: torch.Tensor) -> torch.Tensor:", f"        return {expr}"]
    return ClassCode(name, head, init, [forward])


def _template_order(compiled: Compiled) -> tuple[list[str], dict[str, list[Tree]]]:
    """Templates in the order their first use finishes expanding (dependencies first)."""
    instances: dict[str, list[Tree]] = {}
    order: list[str] = []

    def visit(t: Tree) -> None:
        for c in t.children:
            visit(c)
        if t.kind == "use":
            instances.setdefault(t.template, []).append(t)
            if t.template not in order:
                order.append(t.template)

    visit(compiled.tree)
    return order, instances


_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader(__package__ or "backends", "templates"),
    autoescape=False,
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
    undefined=jinja2.StrictUndefined,
)


def generate_source(compiled: Compiled, *, source_name: str | None = None) -> str:
    """The PyTorch module for a compiled spec, as a string (deterministic)."""
    exposed = exposed_variables(compiled)
    codegen = _for_codegen(compiled, exposed)
    w = _Writer(codegen, exposed)
    order, instances = _template_order(codegen)
    templates = [w.template_class(name, instances[name]) for name in order]
    model, outputs = w.model_class()
    helpers = [_helper_class(h) for h in sorted(w.helpers)]
    spec = compiled.spec
    shown = safe_text(os.path.basename(source_name or spec.file)) or "a spec"
    all_names = [spec.name, *([outputs.name] if outputs else []), *order]
    # the model class first, as users look for it (hence not sorted)
    public = layout("__all__ = ", Call("", tuple(f'"{n}"' for n in all_names), "[", "]"), 0, pragma="noqa: RUF022")
    text = _ENV.get_template("pytorch.py.jinja").render(
        version=__version__,
        source=shown,
        sha=spec.sha256[:16],
        doc=docstring(spec.doc or f"The {spec.name} model", 0),
        exposed=", ".join(exposed) or "none",
        needs_math=w.needs_math,
        needs_namedtuple=outputs is not None,
        needs_ordered_dict=any("OrderedDict(" in line for c in [*templates, model] for line in c.init),
        public=public,
        helpers=helpers,
        templates=templates,
        outputs=outputs,
        model=model,
    )
    return text


def _for_codegen(compiled: Compiled, exposed: list[str]) -> Compiled:
    """The spec compiled with every exposed switch on, so that conditional
    parts exist in the graph the code is written from."""
    flags = {v: True for v in exposed if isinstance(compiled.graph.graph["variables"][v], bool)}
    if not flags or all(compiled.graph.graph["variables"][v] for v in flags):
        return compiled
    variables = {**compiled.graph.graph["variables"], **flags}
    g, tree = build(compiled.spec, variables=variables)
    g = infer_shapes(check(g))
    g.graph["variables"] = dict(compiled.graph.graph["variables"])
    return Compiled(compiled.spec, g, tree)


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


def build_model(spec: Compiled | str | os.PathLike, **variables: object):
    """Compile a spec (variables override the spec's, checked like ``--set``)
    and return an instance of its model class, built in memory."""
    if not isinstance(spec, Compiled):
        spec = compile_spec(spec, variables)
    elif variables:
        spec = compile_spec(spec.spec.file, variables)
    module = load_source(generate_source(spec))
    return getattr(module, spec.spec.name)()


def write_source(compiled: Compiled, path: str | os.PathLike) -> str:
    """Convenience for the API: the source for ``compiled`` (the CLI writes it)."""
    return generate_source(compiled, source_name=str(Path(path)))


__all__ = ["build_model", "exposed_variables", "generate_source", "load_source"]
