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
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import jinja2
import networkx as nx

from nasdsl import __version__, ir
from nasdsl.ensemble_ir import is_ensemble
from nasdsl.errors import CodegenError
from nasdsl.expr import Sym
from nasdsl.ops import INIT_PARAMS, OPS, lowering, lowering_of
from nasdsl.passes.pipeline import run_pipeline

from .names import BUILTINS, IMPORTED, METHOD_LOCALS, MODEL_ARGUMENTS_RESERVED, Namespace, check_attribute
from .pyformat import Call, docstring, docstring_with_args, layout, layout_or_none, literal, safe_text, wrap
from .pyloops import loop_lines

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
    #: classes of :data:`HELPER_CLASSES` that ``module`` uses (the file defines them)
    defines: tuple[str, ...] = ()
    #: a parameter of the enclosing module rather than a child module: ``parameter(ctx, node, lead)``
    #: returns the expression that makes it and how forward applies it to ``x`` (``"x * {}"``)
    parameter: Callable[[_Ctx, str, object], tuple[str, str]] | None = None
    #: a merge of two values that the in-place analysis lets overwrite the first:
    #: ``join_into(first, second)`` (``"bn3.add_(downsample)"``, torchvision's ``out += identity``)
    join_into: Callable[[str, str], str] | None = None


#: Classes a generated file defines for ops torch.nn has no module for (written only when used).
#: ``{name}`` is the class's name in the file.
HELPER_CLASSES: dict[str, tuple[str, ...]] = {
    "Slice": (
        "class {name}(nn.Module):",
        '    """The channels from start up to stop (None: to the end)."""',
        "",
        "    def __init__(self, start: int, stop: int | None = None) -> None:",
        "        super().__init__()",
        "        self.start = start",
        "        self.stop = stop",
        "",
        "    def forward(self, x: torch.Tensor) -> torch.Tensor:",
        "        return x[:, self.start : self.stop]",
    ),
    "Permute": (
        "class {name}(nn.Module):",
        '    """Reorders the axes after the batch: (1, 2, 0) makes (N, C, H, W) channels-last."""',
        "",
        "    def __init__(self, dims: tuple[int, ...]) -> None:",
        "        super().__init__()",
        "        self.dims = [0] + [d + 1 for d in dims]",
        "",
        "    def forward(self, x: torch.Tensor) -> torch.Tensor:",
        "        return x.permute(self.dims)",
    ),
    "LayerNorm2d": (
        "class {name}(nn.LayerNorm):",
        '    """LayerNorm over the channels of an (N, C, H, W) map."""',
        "",
        "    def forward(self, x: torch.Tensor) -> torch.Tensor:",
        "        x = x.permute(0, 2, 3, 1)",
        "        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)",
        "        return x.permute(0, 3, 1, 2)",
    ),
    "StochasticDepth": (
        "class {name}(nn.Module):",
        '    """Drops whole samples ("row") or the whole batch with probability p in training; an',
        '    identity at inference (Huang et al. 2016)."""',
        "",
        "    def __init__(self, p: float, mode: str) -> None:",
        "        super().__init__()",
        "        self.p = p",
        "        self.mode = mode",
        "",
        "    def forward(self, x: torch.Tensor) -> torch.Tensor:",
        "        if not self.training or self.p == 0.0:",
        "            return x",
        "        survival = 1.0 - self.p",
        "        size = [1] * x.dim()",
        '        if self.mode == "row":',
        "            size[0] = x.shape[0]",
        "        noise = torch.empty(size, dtype=x.dtype, device=x.device).bernoulli_(survival)",
        "        if survival > 0.0:",
        "            noise = noise / survival",
        "        return x * noise",
    ),
}


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
    # a value folded from a variable that is PyTorch's default too (EfficientNet's bn_eps at B0) is
    # left out, as a hand-written model leaves it; the op's defaults are nn.BatchNorm2d's
    index = OPS["batch_norm"].attr_index
    keys = [
        k
        for k in ("eps", "momentum")
        if isinstance(_attr(ctx, node, k), Sym) or _attr(ctx, node, k) != index[k].default
    ]
    return Call(cls, (_render(lead), *_kw(ctx, node, *keys))), lead


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
        join_into=lambda first, second: f"{first}.add_({second})",
        helper=(
            "Add",
            "Runs every branch on the same input and sums the results",
            ("total = results[0]", "for result in results[1:]:", "    total = total + result", "return total"),
        ),
    )
)
lowering("pytorch", "mul")(
    TorchLowering(
        join=lambda terms: " * ".join(terms),
        helper=(
            "Mul",
            "Runs every branch on the same input and multiplies the results (they broadcast)",
            ("total = results[0]", "for result in results[1:]:", "    total = total * result", "return total"),
        ),
    )
)
lowering("pytorch", "mean")(
    TorchLowering(
        join=lambda terms: f"({' + '.join(terms)}) / {len(terms)}",
        helper=(
            "Mean",
            "Runs every branch on the same input and averages the results",
            (
                "total = results[0]",
                "for result in results[1:]:",
                "    total = total + result",
                "return total / len(results)",
            ),
        ),
    )
)


def _helper(ctx: _Ctx, name: str) -> str:
    return ctx.classes[f"helper:{name}"]


def _slice(ctx: _Ctx, node: str, lead: object) -> tuple[Call, object]:
    start, stop = _attr(ctx, node, "start"), _attr(ctx, node, "stop")
    args = (_render(start), *((_render(stop),) if stop is not None else ()))
    return Call(_helper(ctx, "Slice"), args), (lead if stop is None else stop) - start


def _permute(ctx: _Ctx, node: str, lead: object) -> tuple[Call, object]:
    return Call(_helper(ctx, "Permute"), (_render(tuple(ir.node(ctx.g, node)["attrs"]["dims"])),)), lead


def _layer_norm(ctx: _Ctx, node: str, lead: object) -> tuple[Call, object]:
    g = ir.graph_of(ctx.g, node)
    (src,) = ir.inputs(g, node)
    data = g.nodes[node]
    on_map = data["attrs"]["dim"] == "channels" and len(g.nodes[src]["shape"]) == 3
    cls = _helper(ctx, "LayerNorm2d") if on_map else "nn.LayerNorm"
    return Call(cls, (_render(lead), *_kw(ctx, node, "eps"))), lead


def _stochastic_depth(ctx: _Ctx, node: str, lead: object) -> tuple[Call, object]:
    p, mode = _attr(ctx, node, "p"), _attr(ctx, node, "mode")
    return Call(_helper(ctx, "StochasticDepth"), (_render(p), _render(mode))), lead


def _layer_scale(ctx: _Ctx, node: str, lead: object) -> tuple[str, str]:
    g = ir.graph_of(ctx.g, node)
    (src,) = ir.inputs(g, node)
    shape = f"({_render(lead)}, 1, 1)" if len(g.nodes[src]["shape"]) == 3 else f"({_render(lead)},)"
    return f"nn.Parameter(torch.full({shape}, {_render(_attr(ctx, node, 'init'))}))", "x * {}"


lowering("pytorch", "slice")(TorchLowering(_slice, defines=("Slice",)))
lowering("pytorch", "permute")(TorchLowering(_permute, defines=("Permute",)))
lowering("pytorch", "layer_norm")(TorchLowering(_layer_norm, ("nn.LayerNorm",), defines=("LayerNorm2d",)))
lowering("pytorch", "stochastic_depth")(TorchLowering(_stochastic_depth, defines=("StochasticDepth",)))
lowering("pytorch", "layer_scale")(TorchLowering(parameter=_layer_scale))
lowering("pytorch", "channel_shuffle")(
    TorchLowering(lambda ctx, node, lead: (Call("nn.ChannelShuffle", (_render(_attr(ctx, node, "groups")),)), lead))
)
for _op, _cls in (("hardswish", "nn.Hardswish"), ("hardsigmoid", "nn.Hardsigmoid")):
    lowering("pytorch", _op)(TorchLowering(_activation(_cls)))


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


def _joined(ctx: _Ctx, b: ir.Block, terms: list[str]) -> str | Call:
    """The expression of merge ``b`` over its branches' values ``terms``: into the first
    value where the in-place analysis allows it (a local made for this merge alone)."""
    low = _merge_lowering(ctx, b)
    if low.join_into is not None and len(terms) == 2 and terms[0].isidentifier() and ctx.inplace(b.output):
        return low.join_into(*terms)
    return low.join(terms)


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
    #: merge ops whose helper class the code uses, and "helper:Name" for HELPER_CLASSES
    used_helpers: set[str] = field(default_factory=set)
    #: leading dimension of each top-level entry produced so far, by path (for references)
    leads: dict[str, object] = field(default_factory=dict)
    #: paths of blocks to write as switched off (to compare a template's uses, see template_class)
    off: frozenset[str] = frozenset()

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
    ctx.used_helpers.update(f"helper:{d}" for d in low.defines)
    if low.parameter is not None:
        raise CodegenError(
            f"op '{b.op}' is a parameter of its module: it can be an entry of a model or a template body, "
            "not a part of a nested sequence or branch",
            location=b.loc,
            path=b.keypath,
        )
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
    keyword_only = _keyword_only(tmpl)
    for k, (p, a) in enumerate(zip(tmpl.params, b.args, strict=True)):
        if not a.given and _has_default(p):
            continue
        text = _render(_arg(ctx, a))
        positional = not _has_default(p) and k < keyword_only
        args.append(text if positional else f"{ctx.keywords[b.template][p.name]}={text}")
    return Call(ctx.classes[b.template], tuple(args)), _lead_of(ctx, b, lead)


def _has_default(p: ir.Param) -> bool:
    """Whether the class's signature gives the parameter a default (``None`` for one it computes)."""
    return not p.required and (p.default is not None or p.default_expr is not None)


def _keyword_only(tmpl: ir.Template) -> int:
    """The index of the first parameter that must be keyword-only: one without a default after
    one with a default (whose default the class cannot write, so every use passes it)."""
    seen_default = False
    for k, p in enumerate(tmpl.params):
        if _has_default(p):
            seen_default = True
        elif seen_default:
            return k
    return len(tmpl.params)


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
        if rule == "slice":
            stop = _attr(ctx, b.output, "stop")
            return (lead if stop is None else stop) - _attr(ctx, b.output, "start")
        return lead
    if b.kind == "seq":
        read = {b.inputs[0]: lead}  # the leading dimension of each node the children read
        for c in b.children:
            if c.kind != "ref" and c.inputs[0] in read:  # in sequence, or `from:` an earlier entry
                lead = read[c.inputs[0]]
            if not _off(ctx, c):
                lead = _lead_of(ctx, c, lead)
            read[c.passed] = lead
            if b.named and ctx.template is not None:
                ctx.leads.setdefault(c.path, lead)  # what a later `ref:` to it reads
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
        inner.leads[None] = Sym.name("in_channels")  # what `ref: in` reads
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


def _ordered(children: list[ir.Block], calls: list[Call]) -> Call:
    """``OrderedDict(a=..., b=...)``, or with (name, module) pairs when a name is no
    identifier (RegNet's ``block1-0``)."""
    if all(c.name.isidentifier() for c in children):
        return Call("OrderedDict", tuple(_keyword(c.name, call) for c, call in zip(children, calls, strict=True)))
    pairs = tuple(Call("", (f'"{c.name}"', call)) for c, call in zip(children, calls, strict=True))
    return Call("OrderedDict", (Call("", pairs, "[", "]"),))


def _keyword(name: str, call: Call) -> Call:
    """``name=call`` as one argument that lays out like the call."""
    return Call(f"{name}={call.func}", call.args, call.open, call.close)


def _off(ctx: _Ctx, b: ir.Block) -> bool:
    """Whether the generated code leaves block ``b`` out (switched off for good)."""
    return b.kind == "skip" or (b.dormant and b.when.switch not in ctx.exposed) or b.path in ctx.off


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
            return Call("nn.Sequential", (_ordered(b.children, items),)), lead
        return Call("nn.Sequential", tuple(items)), lead
    if b.kind == "merge":
        _merge_lowering(ctx, b)
        helper = ctx.classes[f"merge:{b.op}"]
        ctx.used_helpers.add(b.op)
        args, leads = [], []
        for c in b.children:
            call, out = _module_expr(ctx, c, lead)
            args.append(_keyword(c.name, call) if b.named else call)
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
        self.init_helpers: set[str] = set()  # the init functions of the file's head the code calls
        #: the nodes under each path (a template use's nodes), built once
        self.members: dict[str, list[str]] = {}
        for graph in (g, g.graph["dormant"].graph):
            for n, data in graph.nodes(data=True):
                if data["op"] == "external":
                    continue
                parts = n.split(".")
                for i in range(1, len(parts) + 1):
                    self.members.setdefault(".".join(parts[:i]), []).append(n)
        self._name_everything()
        self._check_attributes()

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
        self.defines: set[str] = set()  # helper classes the file uses
        for name in g.graph["templates"]:
            self.classes[name] = self.module_names.create(name)
        ops = {d["op"] for graph in (g, g.graph["dormant"].graph) for _, d in graph.nodes(data=True)}
        for op in sorted(ops & OPS.keys()):
            for helper in getattr(OPS[op].lowerings.get("pytorch"), "defines", ()):
                if f"helper:{helper}" not in self.classes:
                    self.classes[f"helper:{helper}"] = self.module_names.create(helper)
        merges = sorted({b.op for root in ir.roots(g) for b in ir.walk(root) if b.kind == "merge"})
        for op in merges:
            low = OPS[op].lowerings.get("pytorch")
            if low is not None and low.helper is not None:
                self.classes[f"merge:{op}"] = self.module_names.create(low.helper[0])
        self.keywords: dict[str, dict[str, str]] = {}
        for name, t in g.graph["templates"].items():
            scope = Namespace({"self", "in_channels"}, outer=self.module_names)
            self.keywords[name] = {p.name: scope.create(p.name) for p in t.params}
        scope = Namespace(MODEL_ARGUMENTS_RESERVED, outer=self.module_names)
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
        flags = frozenset(
            self.arguments[o.when] for o in ir.all_outputs(g) if o.when is not None and o.when in self.exposed
        )
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
        for inst in instances:  # a node that some uses leave out (`when:`) varies with the uses
            mine = {n[len(inst.path) :] for n in self.members.get(inst.path, ())}
            for rel in seen.keys() - mine:
                seen[rel].add(None)
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
        # a merge the code leaves out (a `when:` switched off) reads nothing: keep no locals for it
        merges = [c for c in t.children if c.kind == "merge" and not _off(ctx, c)]
        targets |= {b.target for c in merges for b in c.children if b.kind == "ref"}
        target_nodes = {c.output for c in t.children if c.kind == "ref"}
        target_nodes |= {b.output for c in merges for b in c.children if b.kind == "ref"}
        target_nodes |= self._read_out_of_turn(ctx, t)
        produced: dict[str, str] = {}  # path or node -> local variable
        current = t.inputs[0]  # the node x holds
        node_leads = {current: lead}  # the leading dimension of each node read so far
        ctx.leads[None] = lead  # what `ref: in` reads
        if current in target_nodes:  # `ref: in` or `from: in`: the body's input is read later
            local = names.create("identity")
            fwd.append(f"{local} = x")
            produced[current] = local
        unsettled = None  # (node, block) of a switched entry whose channel count the next entry may not read
        written_off: dict[str, str] = {}  # output -> input of each entry written off (ctx.off): x holds its input
        for c in t.children:
            if unsettled is not None:
                reads = c.kind != "ref" and c.inputs[0] == unsettled[0]
                if reads and not (c.kind == "merge" and all(b.kind == "ref" for b in c.children)):
                    raise CodegenError(
                        f"'{unsettled[1].name}' is built only when its `when` holds and changes the channel "
                        f"count, so '{c.name}' cannot read it in sequence: read it with `ref:` (as a merge "
                        "branch) or give the next entry `from:`",
                        location=c.loc,
                        path=c.keypath,
                    )
                unsettled = None
            wanted = c.path in targets or c.passed in target_nodes
            reads_off = c.kind != "ref" and written_off.get(c.inputs[0]) == current  # reads an entry written off
            if c.kind != "ref" and c.inputs[0] != current and not reads_off:  # `from:` another entry (on or off)
                source = produced.get(c.inputs[0])
                if source is None:
                    raise CodegenError(
                        "the PyTorch backend reads `from` only of earlier entries of the same body",
                        location=c.loc,
                        path=c.keypath,
                    )
                fwd.append(f"x = {source}")
                lead = node_leads.get(c.inputs[0], ir.node(self.g, c.inputs[0])["shape"][0])
            current = c.passed
            if _off(ctx, c):  # switched off: x holds its input, which a ref or an output may read as its value
                if c.path in ctx.off:  # written off to compare uses: as at a use where the switch is off
                    current = c.inputs[0]
                    written_off[c.passed] = current
                # a parameter's switch: written as at the uses where it is on
                shared = c.when is not None and isinstance(c.when.expr, Sym)
                if wanted and c.path not in produced and c.passed in produced and not shared:
                    produced[c.path] = produced[c.passed]  # its input is kept already: no second local
                elif wanted and c.path not in produced:
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
                if after is not None:  # an output may read the reference entry
                    fwd += after(c)
                continue
            cond = self._condition(ctx, c)
            low = _lowering(ctx, c.output) if c.kind == "op" else None
            if low is not None and low.parameter is not None:  # a parameter of this class (layer_scale)
                make, apply = low.parameter(ctx, c.output, lead)
                call, value, out_lead = None, apply.format(f"self.{c.name}"), lead
                init += (
                    layout_or_none(f"self.{c.name} = ", make, cond, 2) if cond else layout(f"self.{c.name} = ", make, 2)
                )
            elif c.kind == "merge" and any(b.kind == "ref" for b in c.children):
                call, value, out_lead = self._merge_with_refs(ctx, c, lead, produced)
            else:
                call, out_lead = _module_expr(ctx, c, lead)
                value = f"self.{c.name}(x)"
            loop = self._repeat_loop(ctx, c, lead) if c.kind == "seq" and c.repeat and not cond else None
            if loop is not None:
                init += loop
            elif call is not None:
                init += (
                    layout_or_none(f"self.{c.name} = ", call, cond, 2) if cond else layout(f"self.{c.name} = ", call, 2)
                )
            # a switched merge of references alone has no module: the class keeps the switch itself
            flag = bool(cond) and call is None and not (low is not None and low.parameter is not None)
            if flag:
                init += layout(f"self.{c.name} = ", cond, 2)
            shape = ir.node(self.g, c.output)["shape"]
            if ctx.template:
                note = _shape_note(shape, out_lead, notes(c))
            else:
                note = _shape_note(shape, _model_lead(out_lead))
            guard = []
            if cond:
                guard.append(f"self.{c.name}" if flag else f"self.{c.name} is not None")
            if c.phase == "eval" and t.phase != "eval":
                guard.append("not self.training")
            elif c.phase == "train" and t.phase != "train":
                guard.append("self.training")
            depth = 3 if guard else 2  # the forward's body is indented twice, a guarded line once more
            stmt = [s[4 * depth :] for s in layout("x = ", value, depth, comment=note)]
            if guard:
                fwd.append(f"if {' and '.join(guard)}:")
                fwd += ["    " + s for s in stmt]
            else:
                fwd += stmt
            if cond and out_lead != lead:
                unsettled = (c.passed, c)
            lead = out_lead
            ctx.leads[c.path] = lead
            node_leads[c.passed] = lead
            if wanted:
                local = names.create(c.name)
                fwd.append(f"{local} = x")
                produced[c.path] = local
                produced.setdefault(c.passed, local)
                produced.setdefault(c.output, local)
            if after is not None:
                fwd += after(c)
        return init, fwd, lead

    def _repeat_loop(self, ctx: _Ctx, c: ir.Block, lead: object) -> list[str] | None:
        """A repeated entry built by a loop (see ``pyloops``), or None to list its blocks."""
        calls = []
        for child in c.children:
            call, lead = _module_expr(ctx, child, lead)
            calls.append(call)
        taken = {*ctx.arguments.values(), "in_channels", "self"}
        index = next(n for n in ("i", "j", "k", *(f"i{k}" for k in range(len(taken) + 1))) if n not in taken)
        return loop_lines(c.name, calls, [ch.name for ch in c.children] if c.named else None, index, 2)

    def _read_out_of_turn(self, ctx: _Ctx, t: ir.Block) -> set[str]:
        """The nodes that children of ``t`` read through ``from:`` rather than in sequence."""
        found: set[str] = set()
        current = t.inputs[0]
        for c in t.children:
            if c.kind != "ref" and c.inputs[0] != current:
                found.add(c.inputs[0])
            current = c.passed
        return found

    def _referenced(self, ctx: _Ctx, ref: ir.Block, lead: object, produced: dict[str, str]) -> tuple[str, object]:
        """The local variable holding a referenced entry's value, and its leading dimension."""
        name = (produced.get(ref.target) if ref.target is not None else None) or produced.get(ref.output)
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
                modules.append(Call(f'"{b.name}": {call.func}', call.args, call.open, call.close))
                terms.append(f'self.{c.name}["{b.name}"](x)')
                leads.append(out)
        container = Call("nn.ModuleDict", (Call("", tuple(modules), "{", "}"),)) if modules else None
        value = _joined(ctx, c, terms)
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
        documented = min(instances, key=lambda i: len(_gated(i)))  # the use that builds the most
        for inst in instances:
            code = self._template_class_for(name, inst, annotations, spatial, inplace, frozenset(), documented)
            self.helpers |= code.helpers
            texts.setdefault(_text(code), (code, inst))
        if len(texts) > 1:
            agreed = self._gated_agreement(name, list(texts.values()), annotations, spatial, inplace)
            if agreed is not None:
                return agreed
            (_, a), (_, b) = list(texts.values())[:2]
            raise CodegenError(
                f"template {name} needs different code at {a.path or 'the top'} and {b.path}: the uses differ in "
                "what `when` switches on, or a layer's size depends on the input's spatial size; use one "
                "template per variant, or make the size a parameter",
                location=b.loc,
                path=b.keypath,
            )
        return next(iter(texts.values()))[0]

    def _gated_agreement(self, name: str, variants: list, annotations, spatial, inplace) -> ClassCode | None:
        """One class for uses that differ only in entries a parameter switches off
        (``when: downsample``): the code of the use with the fewest such entries off, if
        it writes every other use's code once the entries that use leaves out are off too."""

        gated = _gated
        code, ref = min(variants, key=lambda v: len(gated(v[1])))
        for other_code, inst in variants:
            if inst is ref:
                continue
            if not gated(ref) <= gated(inst):
                return None
            off = frozenset(ref.path + rel for rel in gated(inst) - gated(ref))
            if _text(self._template_class_for(name, ref, annotations, spatial, inplace, off, ref)) != _text(other_code):
                return None
        return code

    def _template_class_for(
        self,
        name: str,
        inst: ir.Block,
        annotations: dict[str, str],
        spatial: dict,
        inplace: dict[str, bool],
        off: frozenset[str] = frozenset(),
        documented: ir.Block | None = None,
    ) -> ClassCode:
        tmpl = self.g.graph["templates"][name]
        ctx = self._ctx(name, lambda node: inplace.get(node[len(inst.path) :], False))
        ctx.off = off
        keywords = self.keywords[name]
        class_name = self.classes[name]
        lead = Sym.name("in_channels")
        body = inst.children[0]

        def notes(c: ir.Block) -> str:
            return spatial.get(c.output[len(inst.path) :], "H', W'")

        params = ["self", "in_channels: int"]
        fixups: list[str] = []
        keyword_only = _keyword_only(tmpl)
        for k, p in enumerate(tmpl.params):
            if k == keyword_only:
                params.append("*")
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
        sig += docstring_with_args(f"Build the {name} block", self._template_arg_docs(tmpl, documented or inst), 2)
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
            fwd += layout("return ", _joined(ctx, body, outs), 2, comment=note)
            forward = layout("def ", Call("forward", ("self", "x: torch.Tensor")), 1, " -> torch.Tensor:") + fwd
            start = [*sig, "        super().__init__()", *fix]
            return ClassCode(class_name, head, start + init, [forward], ctx.used_helpers)
        # A single module, an unnamed sequence or unnamed branches: subclass it.
        call, _ = _module_expr(ctx, body, lead)
        base = call.func
        head[0] = f"class {class_name}({base}):"
        init = layout("super().__init__", Call("", call.args), 2)  # `sig` has the docstring
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
                    if cond:  # the entry it reads is switched with it (exposure checked): None when off
                        lines.append(f"{local[o.name]} = x if self.{self.arguments[cond]} else None")
                        if cond not in exposed_flags:
                            exposed_flags.append(cond)
                    else:
                        lines.append(f"{local[o.name]} = x")
                    continue
                source_shape = ir.node(g, o.head.inputs[0])["shape"]
                call, _ = _module_expr(ctx, o.head, source_shape[0])
                if cond:
                    head_init.extend(layout_or_none(f"self.{o.name} = ", call, self.arguments[cond], 2))
                else:
                    head_init.extend(layout(f"self.{o.name} = ", call, 2))
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
        for o in (o for left in taps.values() for o in left):  # never silently without an output
            raise CodegenError(
                "the PyTorch backend found no place to compute this output", location=o.loc, path=f"{o.keypath}.from"
            )
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
        body += [f"        self.{self.arguments[f]} = {self.arguments[f]}" for f in exposed_flags]
        body += pre_init + init + head_init + ["        self.reset_parameters()"]
        ret_type = "torch.Tensor"
        fwd_lines = [*pre, *fwd]
        final = local[main.name] if tap_main else "x"
        if extras:
            outputs_class = self._outputs_class(outputs)
            ret_type = f"{outputs_name} | torch.Tensor"
            fields = ", ".join([final, *(local[o.name] for o in extras)])
            if all(o.training_only for o in extras):
                flags = [f"self.{self.arguments[f]}" for f in exposed_flags]
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
        left_out: dict[str, list[str]] = {}  # entries a parameter switches off at every use
        stack = list(inst.children)
        while stack:
            b = stack.pop()
            rel = b.path[len(prefix) :] if b.path.startswith(prefix) else b.name
            if b.when is not None and isinstance(b.when.expr, Sym):
                for name in b.when.expr.names & uses.keys():
                    if b.kind == "skip":  # off at the documented use, which builds the most: off at all
                        left_out.setdefault(name, []).append(rel or b.name)
                    else:
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
        for name, entries in left_out.items():
            uses[name].append(f"false at every use, so the class leaves out {_listed(entries)}")
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
        own = self._own_init_rules()
        described = "; ".join(
            [
                *(f"{op} " + ", ".join(_described(p, r) for p, r in rs.items()) for op, rs in rules.items()),
                *(
                    (names[0] if len(names) == 1 else f"{names[0]} and {len(names) - 1} more")
                    + " "
                    + ", ".join(_described(p, r) for p, r in rs)
                    for names, rs in own
                ),
            ]
        )
        lines += docstring(f"Initialise the parameters as the spec says: {described or 'PyTorch defaults'}", 2)
        branches: list[tuple[list[str], list[str]]] = []
        for op, rs in rules.items():
            body = self._init_body(rs.items())
            if body:
                classes = list(OPS[op].lowerings["pytorch"].classes)
                same = [i for i, (_, b) in enumerate(branches) if b == body]
                if same:
                    names, _ = branches[same[0]]
                    branches[same[0]] = ([*names, *classes], body)
                else:
                    branches.append((classes, body))
        if not branches and not own:
            return lines
        # layers with rules of their own come first, picked by name (they exist only where built)
        lines.append("        for name, m in self.named_modules():" if own else "        for m in self.modules():")
        for i, (names, rs) in enumerate(own):
            test = Call("", tuple(f'"{n}"' for n in names)) if len(names) > 1 else f'"{names[0]}"'
            lines += layout(f"{'if' if i == 0 else 'elif'} name {'in' if len(names) > 1 else '=='} ", test, 3, ":")
            lines += self._init_body(rs) or ["                pass"]
        for i, (names, body) in enumerate(branches):
            cls = names[0] if len(names) == 1 else "(" + ", ".join(names) + ")"
            lines += layout(f"{'if' if i == 0 and not own else 'elif'} isinstance", Call("", ("m", cls)), 3, ":")
            lines += body
        return lines

    def _own_init_rules(self) -> list[tuple[list[str], list[tuple[str, ir.InitRule]]]]:
        """The layers whose block has rules of its own (``init:``), grouped by their rules once
        merged with their op's: (names, [(parameter, rule)]), in graph order. A layer a switch
        leaves out (the dormant graph) is listed too: the class builds it when asked."""
        groups: dict[tuple, list[str]] = {}
        for graph in (self.g, self.g.graph["dormant"].graph):
            for n in ir.order(graph):
                data = graph.nodes[n]
                if not data.get("init"):
                    continue
                if not _MODULE_PATH.fullmatch(n):
                    raise CodegenError(f"cannot write the layer name {n!r} into the code", location=data["loc"])
                merged = {**self.g.graph["init"].get(data["op"], {}), **data["init"]}
                order = INIT_PARAMS[data["op"]]  # weight, then bias
                key = (data["op"], tuple(sorted(merged.items(), key=lambda kv: order.index(kv[0]))))
                groups.setdefault(key, []).append(n)
        return [(names, list(key[1])) for key, names in groups.items()]

    def _init_body(self, rules) -> list[str]:
        """The statements of one branch of reset_parameters' loop (its module is ``m``)."""
        body = []
        for pname, rule in rules:
            stmt = self._init_stmt(f"m.{pname}", rule)
            if stmt is None:
                continue
            if pname == "bias":  # laid out at their depth in the loop below, split as ruff would
                body += ["                if m.bias is not None:", *layout("", stmt, 5)]
            else:
                body += layout("", stmt, 4)
        return body

    def _init_stmt(self, target: str, rule: ir.InitRule) -> str | Call | None:
        args = dict(rule.args)
        s = rule.scheme
        if s == "default":
            return None
        if s == "xavier_caffe" or s == "fan_uniform":
            self.init_helpers.add(s)
            if s == "xavier_caffe":
                return f"_xavier_caffe_({target})"
            mode, scale = args.get("mode", "fan_out"), float(args.get("scale", 1.0))
            return Call("_fan_uniform_", (target, f"mode={literal(mode)}", f"scale={literal(scale)}"))
        if s in ("zeros", "ones"):
            return f"nn.init.{s}_({target})"
        if s == "constant":
            return f"nn.init.constant_({target}, {literal(args.get('value', 0.0))})"
        if s == "kaiming_normal" or s == "kaiming_uniform":
            mode, nonlinearity = args.get("mode", "fan_out"), args.get("nonlinearity", "relu")
            return Call(f"nn.init.{s}_", (target, f"mode={literal(mode)}", f"nonlinearity={literal(nonlinearity)}"))
        defaults = {
            "normal": {"mean": 0.0, "std": 1.0},
            "trunc_normal": {"mean": 0.0, "std": 1.0, "a": -2.0, "b": 2.0},
            "uniform": {"a": 0.0, "b": 1.0},
            "xavier_uniform": {"gain": 1.0},
            "xavier_normal": {"gain": 1.0},
        }
        full = {**defaults[s], **args}
        return Call(f"nn.init.{s}_", (target, *(f"{k}={literal(float(v))}" for k, v in full.items())))


#: a layer's name as reset_parameters writes it in quotes (the graph's names are dotted identifiers,
#: indices and dashed repeat names)
_MODULE_PATH = re.compile(r"[A-Za-z0-9_.\-]+")


def _described(param: str, rule: ir.InitRule) -> str:
    """``weight normal`` / ``bias constant 0`` for the reset_parameters docstring."""
    return f"{param} {rule.scheme}" + (f" {rule.args[0][1]:g}" if rule.scheme == "constant" else "")


def _gated(inst: ir.Block) -> frozenset[str]:
    """The entries of a template use's body that a parameter's ``when`` switches off."""
    body = inst.children[0]
    if body.kind != "seq" or not body.named:
        return frozenset()
    return frozenset(
        c.path[len(inst.path) :]
        for c in body.children
        if c.kind == "skip" and c.when is not None and isinstance(c.when.expr, Sym)
    )


def _isort(name: str) -> tuple:
    """The order ruff's RUF022 keeps ``__all__`` in: SCREAMING_CASE names, then CamelCase,
    then the rest, each in natural order (digit runs compared as numbers)."""
    group = 0 if name.isupper() else 1 if name[:1].isupper() else 2
    return (group, [int(p) if p.isdigit() else p for p in re.split(r"([0-9]+)", name)])


def _text(code: ClassCode) -> str:
    return "\n".join(code.head + code.init + sum(code.methods, []))


def _numbers(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"


def _listed(items: list[str], most: int = 4) -> str:
    """``a, b and c``, at most ``most`` items then "and N more"."""
    shown = items[:most]
    if len(items) > most:
        return f"{', '.join(shown)} and {len(items) - most} more"
    return ", ".join(shown[:-1]) + (" and " if len(shown) > 1 else "") + shown[-1] if shown else ""


def _defined_class(helper: str, name: str) -> ClassCode:
    """A class of HELPER_CLASSES as the file names it."""
    lines = [line.replace("{name}", name) for line in HELPER_CLASSES[helper]]
    return ClassCode(name, lines, [])


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
    if is_ensemble(graph):  # members are graphs of their own: backends/pytorch_ensemble.py
        from .pytorch_ensemble import generate_ensemble

        return generate_ensemble(ir.as_graph(graph), source_name=source_name, verify=verify)
    g = prepare(graph, verify=verify)
    w = _Writer(g)
    order, instances = _template_order(g, w.exposed)
    templates = [w.template_class(name, instances[name]) for name in order]
    model, outputs = w.model_class()
    helpers = sorted(
        (
            _defined_class(h[len("helper:") :], w.classes[h])
            if h.startswith("helper:")
            else _helper_class(h, w.classes[f"merge:{h}"])
            for h in w.helpers
        ),
        key=lambda c: c.name,
    )
    name = g.graph["name"]
    exposed = ", ".join(w.arguments[v] for v in g.graph["exposed"]) or "none"
    shown = safe_text(os.path.basename(source_name or g.graph["file"])) or "a spec"
    all_names = sorted([model.name, *([outputs.name] if outputs else []), *(c.name for c in templates)], key=_isort)
    public = layout("__all__ = ", Call("", tuple(f'"{n}"' for n in all_names), "[", "]"), 0)
    source = _ENV.get_template("pytorch.py.jinja").render(
        version=__version__,
        source=shown,
        sha=g.graph["sha256"][:16],
        doc=docstring(g.graph["doc"] or f"The {name} model", 0),
        header=["# " + line for line in wrap(f"It depends on torch alone. Constructor arguments: {exposed}.", 86)],
        init_helpers=sorted(w.init_helpers),
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
        # dont_inherit: not this file's `from __future__ import annotations`, which would turn the
        # annotations into strings (a NamedTuple's fields then do not script)
        code = compile(self.source, self.filename, "exec", dont_inherit=True)
        exec(code, module.__dict__)  # noqa: S102 - our own generated code

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
