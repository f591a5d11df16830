"""The PyTorch lowering of every op: how a node becomes an ``nn.Module`` (or a line of ``forward``).

Each op's entry in the registry (:data:`nasdsl.ops.OPS`) holds a
:class:`TorchLowering` under ``"pytorch"``. A lowering reads the node and
nothing else: its attributes as the class writes them (:func:`attr`: the
spec's expression where it wrote one), and every size it needs from the IR's
symbolic shapes (:func:`in_size`: ``Node.in_sym``, the input's shape as the
node's class sees it), never from a second derivation here. The class being
written is described by a :class:`ClassContext`.

Ops that ``torch.nn`` has no module for get a small class in the generated
file (:data:`HELPER_CLASSES`, written only when used).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import networkx as nx

from nasdsl import ir
from nasdsl.errors import CodegenError, SpecError
from nasdsl.ir.sym import Sym
from nasdsl.ops import OPS, lowering, lowering_of
from nasdsl.ops.tensor import PAD_MODES

from .pyformat import Call, Chain, literal

# ---------------------------------------------------------------------------
# The class being written


@dataclass
class ClassContext:
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
    #: paths of blocks to write as switched off (to compare a template's uses, see template_class)
    off: frozenset[str] = frozenset()
    #: how a rewritten block that needs a forward of its own is written (an inference build's
    #: writer gives it a class, and this returns the call that builds it); None: no such block
    own_class: Callable[[ClassContext, ir.Block], Call] | None = None
    #: the class's arguments (as its code names them) that a use may give as an integer: where one
    #: gives a float attribute, the class writes ``float(name)`` (TorchScript takes no int for a float)
    integral: frozenset[str] = frozenset()
    #: the class's arguments (as its code names them) that a use gives null (not given): an op
    #: attribute one of them gives is written so that None takes the attribute's default
    nullable: frozenset[str] = frozenset()

    def value(self, expr: object, concrete: object) -> object:
        """An expression of the IR as this class writes it: a template class writes its
        parameters' names; the model writes exposed variables' names and folds the others."""
        if expr is None:
            return concrete
        names = names_in(expr)
        if self.template is None:
            if not names & self.exposed:
                return concrete
            variables = ir.info(self.g).variables
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

    def size(self, sym: object, concrete: int) -> object:
        """One size of a shape as this class writes it (an int, or a Sym of its arguments)."""
        return self.value(sym if isinstance(sym, Sym) else None, concrete)


def names_in(expr: object) -> frozenset[str]:
    if isinstance(expr, Sym):
        return expr.names
    if isinstance(expr, tuple):
        return frozenset().union(*(names_in(x) for x in expr))
    return frozenset()


@dataclass(frozen=True)
class AsFloat:
    """An expression of a class's arguments that gives a float attribute but may be an integer:
    written ``float(...)``; ``None if x is None else float(x)`` where ``x`` may be null."""

    expr: Sym
    nullable: bool = False


@dataclass(frozen=True)
class OrDefault:
    """An attribute a class's argument gives that a use may give null (not given): written
    ``default if x is None else x`` (``float(x)`` where ``x`` may be an integer and the attribute
    is a float), the op's default where the argument is None."""

    expr: Sym
    default: object
    as_float: bool = False


def render(v: object) -> str:
    if isinstance(v, Sym):
        return v.render()
    if isinstance(v, AsFloat):
        name = v.expr.render()
        return f"None if {name} is None else float({name})" if v.nullable else f"float({name})"
    if isinstance(v, OrDefault):
        name = v.expr.render()
        return f"{render(v.default)} if {name} is None else {f'float({name})' if v.as_float else name}"
    if isinstance(v, list):
        return literal(tuple(v)) if all(not isinstance(x, Sym) for x in v) else "(" + ", ".join(map(render, v)) + ")"
    if isinstance(v, tuple) and any(isinstance(x, Sym) for x in v):
        return "(" + ", ".join(map(render, v)) + ")"
    return literal(v)


def square(v: object) -> object:
    """``(3, 3)`` or ``(3, 3, 3)`` as ``3``: what PyTorch's modules take for a window of equal sides."""
    if isinstance(v, tuple) and len(v) >= 2 and len(set(v)) == 1 and not isinstance(v[0], Sym):
        return v[0]
    return v


def _written(data: ir.Node, key: str) -> object:
    """The expression the class writes for attribute ``key``: the spec's where it gave one, the
    parameter's where a parameter that is null at this use leaves it not given; else None."""
    return data.exprs.get(key) if key in data.given else data.nulls.get(key)


def _float_attribute(op: str, key: str) -> bool:
    """Whether the op's attribute holds a float (its check makes one of an integer)."""
    try:
        return isinstance(OPS[op].attr_index[key].check(1), float)
    except SpecError:
        return False


def _null_default(ctx: ClassContext, data: ir.Node, key: str, v: Sym) -> object:
    """The op's default for ``key`` where ``v`` (which gives it) is an argument some use gives null
    and that default is not None; else None (None passes on as it is: the op's own "not given")."""
    if not v.names & ctx.nullable:
        return None
    default = OPS[data.op].attr_index[key].default
    if callable(default):
        raise CodegenError(
            f"{data.op}'s {key} is a parameter that a use gives null, and its default depends on other "
            f"attributes: the class cannot write it for every use; give {key} a value at every use",
            location=data.loc,
            path=f"{data.keypath}.{key}",
        )
    return None if default is None else square(default)


def _symbolic(ctx: ClassContext, data: ir.Node, key: str, v: Sym, floating: bool = False) -> object:
    """An attribute an expression of the class's arguments gives, as the class writes it: ``float()``
    of it where an integer may reach a float attribute, and the op's default where it may be None
    (a bare name: an expression of a parameter that is null is refused where the spec writes it)."""
    as_float = floating and bool(v.names & ctx.integral)
    default = _null_default(ctx, data, key, v)
    if default is not None:
        return OrDefault(v, default, as_float)
    return AsFloat(v, bool(v.names & ctx.nullable)) if as_float else v


def attr(ctx: ClassContext, node: str, key: str) -> object:
    """An op attribute: the spec's expression if it wrote one (or a parameter that is null at
    this use: the class writes it for every use), else the default."""
    data = ir.node(ctx.g, node)
    concrete = data.attrs[key]
    expr = _written(data, key)
    if expr is not None:
        v = ctx.value(expr, None)
        if v is not None:
            if isinstance(v, list):
                v = tuple(v)
            if v == "valid":
                v = (0,) * len(concrete)
            floating = isinstance(concrete, float) or (concrete is None and _float_attribute(data.op, key))
            if floating and isinstance(v, int) and not isinstance(v, bool):
                v = float(v)  # a float attribute written as an integer stays a float (TorchScript's types)
            return _symbolic(ctx, data, key, v, floating) if isinstance(v, Sym) else square(v)
    return square(concrete)


def in_size(ctx: ClassContext, node: str, axis: int | None = None, which: int = 0) -> object:
    """The size of input ``which`` of ``node`` along ``axis`` (its channel axis by default), as the
    node's class writes it: read from the IR's symbolic shapes."""
    g = ir.graph_of(ctx.g, node)
    data = ir.node(ctx.g, node)
    src = ir.inputs(g, node)[which]
    t = ir.node(ctx.g, src).type
    if axis is None:
        axis = t.channel_axis if t.channel_axis is not None else t.rank - 1
    sym = data.in_sym[which][axis] if data.in_sym is not None else t.shape[axis]
    return ctx.size(sym, t.shape[axis])


def in_type(ctx: ClassContext, node: str, which: int = 0) -> ir.TensorType:
    g = ir.graph_of(ctx.g, node)
    return ir.node(ctx.g, ir.inputs(g, node)[which]).type


RENAME = {"out": "out_channels"}


def keywords(ctx: ClassContext, node: str, *keys: str) -> list[str]:
    """``key=value`` for each of ``keys`` the spec wrote (a parameter that is null at this use
    included: the class writes it for every use)."""
    data = ir.node(ctx.g, node)
    return [f"{RENAME.get(k, k)}={render(attr(ctx, node, k))}" for k in keys if k in data.given or k in data.nulls]


# ---------------------------------------------------------------------------
# Lowerings


@dataclass(frozen=True)
class TorchLowering:
    """How an op becomes PyTorch.

    ``module(ctx, node)`` returns the ``nn.X(...)`` call of an op node; ``classes``
    are the module classes it makes (``reset_parameters`` applies the spec's
    ``init`` to them); ``apply`` how ``forward`` calls the module on a value
    (``{m}({x})`` by default; attention's returns a pair). A merge has no module:
    ``join(ctx, node, terms)`` is the expression combining its branches' values
    in a ``forward``, and ``helper`` the ``nn.ModuleDict`` subclass that holds
    unnamed branches (name, docstring, and the lines of its ``forward`` that
    combine the list ``results`` of the branches' outputs).
    """

    module: Callable[[ClassContext, str], Call] | None = None
    classes: tuple[str, ...] = ()
    join: Callable[[ClassContext, str, list[str]], str | Call | Chain] | None = None
    helper: tuple[str, str, tuple[str, ...]] | None = None
    #: classes of :data:`HELPER_CLASSES` that ``module`` uses (the file defines them)
    defines: tuple[str, ...] = ()
    #: a parameter of the enclosing module rather than a child module: ``parameter(ctx, node)``
    #: returns the expression that makes it and how forward applies it to ``x`` (``"x * {}"``)
    parameter: Callable[[ClassContext, str], tuple[str, str]] | None = None
    #: a merge of two values that the in-place analysis lets overwrite the first:
    #: ``join_into(first, second)`` (``"bn3.add_(downsample)"``, torchvision's ``out += identity``)
    join_into: Callable[[str, str], str] | None = None
    #: how forward calls the module ``{m}`` on the value ``{x}``; only ``{m}({x})`` can be an item
    #: of an nn.Sequential
    apply: str = "{m}({x})"
    #: module classes beyond ``classes`` that inputs of a given rank make (``reset_parameters``
    #: lists them only where the graph has such a node)
    extra_classes: Mapping[int, str] = field(default_factory=dict)
    #: for an op that calls other graphs (an ensemble's ``member``): ``module_writer(g, source_name=,
    #: verify=)`` writes the whole module of a graph holding such nodes
    module_writer: Callable[..., object] | None = None


def lowering_for(ctx: ClassContext, node: str) -> TorchLowering:
    data = ir.node(ctx.g, node)
    return lowering_of("pytorch", data.op, node, data)  # type: ignore[return-value]


def helper_name(ctx: ClassContext, name: str) -> str:
    """The file's name of helper class ``name`` (one of the lowering's ``defines``), which the file then holds."""
    ctx.used_helpers.add(f"helper:{name}")
    return ctx.classes[f"helper:{name}"]


def _conv(n: int) -> Callable[[ClassContext, str], Call]:
    def module(ctx: ClassContext, node: str) -> Call:
        args = [render(in_size(ctx, node, 0)), render(attr(ctx, node, "out")), render(attr(ctx, node, "kernel"))]
        args += keywords(ctx, node, "stride", "padding", "dilation", "groups", "bias")
        return Call(f"nn.Conv{n}d", tuple(args))

    return module


def _conv_transpose(n: int) -> Callable[[ClassContext, str], Call]:
    def module(ctx: ClassContext, node: str) -> Call:
        args = [render(in_size(ctx, node, 0)), render(attr(ctx, node, "out")), render(attr(ctx, node, "kernel"))]
        args += keywords(ctx, node, "stride", "padding", "output_padding", "groups", "bias", "dilation")
        return Call(f"nn.ConvTranspose{n}d", tuple(args))

    return module


def _linear(ctx: ClassContext, node: str) -> Call:
    size = in_size(ctx, node, -1)
    return Call("nn.Linear", (render(size), render(attr(ctx, node, "out")), *keywords(ctx, node, "bias")))


def _batch_norm(ctx: ClassContext, node: str) -> Call:
    rank = in_type(ctx, node).rank
    cls = {1: "nn.BatchNorm1d", 2: "nn.BatchNorm1d", 3: "nn.BatchNorm2d", 4: "nn.BatchNorm3d"}[rank]
    # a value folded from a variable that is PyTorch's default too (EfficientNet's bn_eps at B0) is
    # left out, as a hand-written model leaves it; the op's defaults are nn.BatchNorm2d's
    index = OPS["batch_norm"].attr_index
    keys = [
        k for k in ("eps", "momentum") if isinstance(attr(ctx, node, k), Sym) or attr(ctx, node, k) != index[k].default
    ]
    return Call(cls, (render(in_size(ctx, node, 0)), *keywords(ctx, node, *keys)))


def _pool(cls: str, extra: tuple[str, ...] = ()) -> Callable[[ClassContext, str], Call]:
    def module(ctx: ClassContext, node: str) -> Call:
        kernel = render(attr(ctx, node, "kernel"))
        return Call(cls, (kernel, *keywords(ctx, node, "stride", "padding", "ceil_mode", *extra)))

    return module


def _adaptive(cls: str) -> Callable[[ClassContext, str], Call]:
    return lambda ctx, node: Call(cls, (render(attr(ctx, node, "size")),))


def _global(ctx: ClassContext, node: str) -> Call:
    n = in_type(ctx, node).rank - 1
    return Call(f"nn.AdaptiveAvgPool{n}d", ("1",))


def _fixed(cls: str, *args: str) -> Callable[[ClassContext, str], Call]:
    return lambda ctx, node: Call(cls, args)


def _activation(cls: str) -> Callable[[ClassContext, str], Call]:
    def module(ctx: ClassContext, node: str) -> Call:
        data = ir.node(ctx.g, node)
        if data.op == "gelu" and "approximate" in data.given:
            return Call(cls, (f"approximate={render(attr(ctx, node, 'approximate'))}",))
        inplace = OPS[data.op].in_place and ctx.inplace(node)
        return Call(cls, ("inplace=True",) if inplace else ())

    return module


def _batch_axis(axis: object, rank: int) -> int:
    """An axis of the IR (no batch; channels, last or an index) as PyTorch's dim (batch first)."""
    if axis == "last" or axis == -1:
        return -1
    if isinstance(axis, int) and axis < 0:
        return axis
    return (0 if axis == "channels" else int(axis)) + 1


def _flatten(ctx: ClassContext, node: str) -> Call:
    t = in_type(ctx, node)
    start, end = torch_dim(ctx, node, "start"), torch_dim(ctx, node, "end")
    if start == "1" and end in ("-1", str(t.rank)):
        return Call("nn.Flatten", ())
    return Call("nn.Flatten", (start, end))


def _axis_index(t: ir.TensorType, axis: object) -> int:
    if axis == "channels":
        return t.channel_axis if t.channel_axis is not None else 0
    if axis == "last":
        return t.rank - 1
    return int(axis) % t.rank  # type: ignore[arg-type]


def torch_dim(ctx: ClassContext, node: str, key: str, *, many: bool = False) -> str:
    """Axis attribute ``key`` of ``node`` (one axis, or with ``many`` a list) as PyTorch's dims, the
    batch first, in source: a word or number the spec wrote as the number it stands for
    (``channels`` of a (C, H, W) map is 1, ``-1`` is 3), and an expression of the class's
    arguments as an expression that counts the same way (``axis % 3 + 1``: the spec's axis may
    be negative; the rank is the input's, the same at every use the class serves)."""
    t = in_type(ctx, node)

    def one(a: object) -> str:
        if isinstance(a, Sym):
            return f"{operand(a.render())} % {t.rank} + 1"
        return str(_axis_index(t, a) + 1)

    v = exact(ctx, node, key)
    if isinstance(v, Sym):
        if not many:
            return one(v)
        loop = "d" if "d" not in v.names else "axis_"
        return f"tuple({loop} % {t.rank} + 1 for {loop} in {operand(v.render())})"
    if isinstance(v, tuple):
        return "(" + ", ".join(map(one, v)) + ("," if len(v) == 1 else "") + ")"
    return one(v)


def operand(text: str) -> str:
    """Source text as the operand of a binary operator: a bare name or number as it is, else in
    parentheses."""
    return text if text.isidentifier() or text.isdigit() else f"({text})"


def _lrn(ctx: ClassContext, node: str) -> Call:
    return Call("nn.LocalResponseNorm", (render(attr(ctx, node, "size")), *keywords(ctx, node, "alpha", "beta", "k")))


def _dropout(ctx: ClassContext, node: str) -> Call:
    return Call("nn.Dropout", (f"p={render(attr(ctx, node, 'p'))}",))


def _slice(ctx: ClassContext, node: str) -> Call:
    start, stop, step = attr(ctx, node, "start"), attr(ctx, node, "stop"), attr(ctx, node, "step")
    dim = torch_dim(ctx, node, "axis")
    if dim == "1" and step == 1:  # channels: the indexing a person writes, x[:, a:b]
        args = (render(start), *((render(stop),) if stop is not None else ()))
        return Call(helper_name(ctx, "Slice"), args)
    args = [dim, render(start)]
    if stop is not None:  # else to the end, whatever the size (a class used at several sizes)
        args.append(render(stop))
    if step != 1:
        args.append(f"step={render(step)}")
    return Call(helper_name(ctx, "Narrow"), tuple(args))


def _pad(ctx: ClassContext, node: str) -> Call:
    """``nn.ConstantPad2d((left, right, top, bottom), value)`` for the last one to three axes (the
    torch order: the last axis first), else (more axes, or pairs a parameter gives whole, which
    may be of another number of axes at another use) a module that takes the spec's pairs."""
    pads, value = exact(ctx, node, "pads"), render(attr(ctx, node, "value"))
    mode = ir.node(ctx.g, node).attrs["mode"]
    if mode != "constant":  # nn.ReflectionPad2d((left, right, top, bottom)), or F.pad's mode in a module
        if isinstance(pads, Sym):
            return Call(helper_name(ctx, "PadFrom"), (render(pads), render(mode)))
        order = tuple(x for pair in reversed(pads) for x in pair)
        return Call(f"nn.{PAD_MODES[mode]}{len(pads)}d", (render(order),))
    if isinstance(pads, Sym) or len(pads) > 3:
        return Call(helper_name(ctx, "Pad"), (render(pads), value))
    order = tuple(x for pair in reversed(pads) for x in pair)
    return Call(f"nn.ConstantPad{len(pads)}d", (render(order), value))


def _select(ctx: ClassContext, node: str) -> Call:
    return Call(helper_name(ctx, "Select"), (torch_dim(ctx, node, "axis"), render(attr(ctx, node, "index"))))


def _permute(ctx: ClassContext, node: str) -> Call:
    return Call(helper_name(ctx, "Permute"), (render(exact(ctx, node, "dims")),))


def _transpose(ctx: ClassContext, node: str) -> Call:
    return Call(helper_name(ctx, "Transpose"), (torch_dim(ctx, node, "axis0"), torch_dim(ctx, node, "axis1")))


def exact(ctx: ClassContext, node: str, key: str) -> object:
    """An attribute as written (a list stays a list of its sizes: a shape, not a window): a tuple
    (of numbers or expressions), a number, or an expression (a template parameter that stands for
    the whole value, which may be a number at one use and a list at another: the class passes it
    on as it is, and whatever takes it must accept both)."""
    data = ir.node(ctx.g, node)
    expr = _written(data, key)
    if expr is not None:
        v = ctx.value(expr, None)
        if v is not None:
            return tuple(v) if isinstance(v, list) else _symbolic(ctx, data, key, v) if isinstance(v, Sym) else v
    return data.attrs[key]


def _reshape(ctx: ClassContext, node: str) -> Call:
    return Call(helper_name(ctx, "Reshape"), (render(exact(ctx, node, "shape")),))


def _roll(ctx: ClassContext, node: str) -> Call:
    return Call(helper_name(ctx, "Roll"), (render(exact(ctx, node, "shifts")), torch_dim(ctx, node, "axes", many=True)))


def _layer_norm(ctx: ClassContext, node: str) -> Call:
    data = ir.node(ctx.g, node)
    t = in_type(ctx, node)
    over_channels = data.attrs["dim"] == "channels" and t.channel_axis is not None
    axis = t.channel_axis if over_channels else t.rank - 1
    if axis == t.rank - 1:
        cls = "nn.LayerNorm"
    elif t.rank == 3:
        cls = helper_name(ctx, "LayerNorm2d")
    else:
        cls = helper_name(ctx, "LayerNormChannels")
    return Call(cls, (render(in_size(ctx, node, axis)), *keywords(ctx, node, "eps")))


def _softmax(ctx: ClassContext, node: str) -> Call:
    return Call("nn.Softmax", (f"dim={torch_dim(ctx, node, 'dim')}",))


def _stochastic_depth(ctx: ClassContext, node: str) -> Call:
    p, mode = attr(ctx, node, "p"), attr(ctx, node, "mode")
    return Call(helper_name(ctx, "StochasticDepth"), (render(p), render(mode)))


def _layer_scale(ctx: ClassContext, node: str) -> tuple[str, str]:
    t = in_type(ctx, node)
    size = render(in_size(ctx, node, 0 if t.rank >= 3 and t.channel_axis == 0 else t.rank - 1))
    shape = f"({size}, {', '.join(['1'] * (t.rank - 1))})" if t.rank >= 3 and t.channel_axis == 0 else f"({size},)"
    # torch.full takes its dtype from the value: a class argument is made a float whatever the uses
    # give (the model's constructor may be called with an integer), not only where one gives an integer
    init = attr(ctx, node, "init")
    value = render(AsFloat(init) if isinstance(init, Sym) else init)
    return f"nn.Parameter(torch.full({shape}, {value}))", "x * {}"


def _parameter(ctx: ClassContext, node: str) -> tuple[str, str]:
    sizes = exact(ctx, node, "shape")
    if isinstance(sizes, Sym):  # a parameter gives the whole shape: any number of axes
        return f"nn.Parameter(torch.zeros(1, *{render(sizes)}))", "{0}.expand(x.shape[0], *{0}.shape[1:])"
    keep = ", ".join(["-1"] * len(sizes))
    return (
        f"nn.Parameter(torch.zeros({', '.join(render(d) for d in (1, *sizes))}))",
        "{0}.expand(x.shape[0], " + keep + ")",
    )


def _interpolate(ctx: ClassContext, node: str) -> Call:
    data = ir.node(ctx.g, node)
    size, scale = exact(ctx, node, "size"), attr(ctx, node, "scale")
    args = []
    if size is not None:  # a number or one per axis (nn.Upsample takes either)
        args.append(f"size={render(square(size) if isinstance(size, tuple) else size)}")
    if size is None or scale is not None:  # both where parameters give them, one of them None at each use
        args.append(f"scale_factor={render(scale)}")
    args.append(f"mode={render(data.attrs['mode'])}")
    if data.attrs["mode"] != "nearest":
        args.append(f"align_corners={render(attr(ctx, node, 'align_corners'))}")
    return Call("nn.Upsample", tuple(args))


def _interpolate_like(ctx: ClassContext, node: str, terms: list[str]) -> Call:
    data = ir.node(ctx.g, node)
    spatial = in_type(ctx, node).rank - 1
    args = [terms[0], f"size={terms[1]}.shape[{-spatial}:]", f"mode={render(data.attrs['mode'])}"]
    if data.attrs["mode"] != "nearest":
        args.append(f"align_corners={render(data.attrs['align_corners'])}")
    return Call("F.interpolate", tuple(args))


def _attention(ctx: ClassContext, node: str) -> Call:
    args = [render(in_size(ctx, node, -1)), render(attr(ctx, node, "heads"))]
    args += keywords(ctx, node, "dropout", "bias")
    return Call("nn.MultiheadAttention", (*args, "batch_first=True"))


def _concat_join(ctx: ClassContext, node: str, terms: list[str]) -> Call:
    data = ir.node(ctx.g, node)
    t = in_type(ctx, node)
    dim = _batch_axis(_axis_index(t, data.attrs["axis"]), t.rank)
    return Call("torch.cat", (Call("", tuple(terms), "[", "]"), str(dim)))


def _constant(ctx: ClassContext, node: str) -> Call:
    return Call(helper_name(ctx, "Fill"), (render(attr(ctx, node, "value")),))


for _n in (1, 2, 3):
    lowering("pytorch", f"conv{_n}d")(TorchLowering(_conv(_n), (f"nn.Conv{_n}d",)))
for _n in (1, 2, 3):
    lowering("pytorch", f"conv_transpose{_n}d")(TorchLowering(_conv_transpose(_n), (f"nn.ConvTranspose{_n}d",)))
for _n, _suffix in ((1, "1d"), (2, ""), (3, "3d")):
    lowering("pytorch", f"max_pool{_suffix}")(TorchLowering(_pool(f"nn.MaxPool{_n}d")))
    lowering("pytorch", f"avg_pool{_suffix}")(TorchLowering(_pool(f"nn.AvgPool{_n}d", ("count_include_pad",))))
    lowering("pytorch", f"adaptive_avg_pool{_suffix}")(TorchLowering(_adaptive(f"nn.AdaptiveAvgPool{_n}d")))
lowering("pytorch", "linear")(TorchLowering(_linear, ("nn.Linear",)))
lowering("pytorch", "batch_norm")(
    TorchLowering(_batch_norm, ("nn.BatchNorm2d", "nn.BatchNorm1d"), extra_classes={4: "nn.BatchNorm3d"})
)
lowering("pytorch", "global_avg_pool")(TorchLowering(_global))
lowering("pytorch", "lrn")(TorchLowering(_lrn))
lowering("pytorch", "dropout")(TorchLowering(_dropout))
lowering("pytorch", "flatten")(TorchLowering(_flatten))
lowering("pytorch", "softmax")(TorchLowering(_softmax))
lowering("pytorch", "identity")(TorchLowering(_fixed("nn.Identity")))
for _op, _cls in (
    ("relu", "nn.ReLU"),
    ("relu6", "nn.ReLU6"),
    ("sigmoid", "nn.Sigmoid"),
    ("tanh", "nn.Tanh"),
    ("silu", "nn.SiLU"),
    ("gelu", "nn.GELU"),
    ("hardswish", "nn.Hardswish"),
    ("hardsigmoid", "nn.Hardsigmoid"),
):
    lowering("pytorch", _op)(TorchLowering(_activation(_cls)))


def _prelu(ctx: ClassContext, node: str) -> Call:
    """``nn.PReLU(C)``: one slope per channel (dim 1); ``nn.PReLU()`` for one shared slope."""
    size = (render(in_size(ctx, node, 0)),) if ir.node(ctx.g, node).attrs["per_channel"] else ()
    return Call("nn.PReLU", (*size, *keywords(ctx, node, "init")))


def _group_norm(ctx: ClassContext, node: str) -> Call:
    args = (render(attr(ctx, node, "groups")), render(in_size(ctx, node, 0)))
    return Call("nn.GroupNorm", (*args, *keywords(ctx, node, "eps", "affine")))


def _instance_norm(ctx: ClassContext, node: str) -> Call:
    cls = f"nn.InstanceNorm{in_type(ctx, node).rank - 1}d"
    keys = ("eps", "momentum", "affine", "track_running_stats")
    return Call(cls, (render(in_size(ctx, node, 0)), *keywords(ctx, node, *keys)))


lowering("pytorch", "leaky_relu")(
    TorchLowering(lambda ctx, node: Call("nn.LeakyReLU", tuple(keywords(ctx, node, "negative_slope"))))
)
lowering("pytorch", "elu")(TorchLowering(lambda ctx, node: Call("nn.ELU", tuple(keywords(ctx, node, "alpha")))))
lowering("pytorch", "prelu")(TorchLowering(_prelu, ("nn.PReLU",)))
lowering("pytorch", "group_norm")(TorchLowering(_group_norm, ("nn.GroupNorm",)))
lowering("pytorch", "instance_norm")(
    TorchLowering(
        _instance_norm, ("nn.InstanceNorm2d",), extra_classes={2: "nn.InstanceNorm1d", 4: "nn.InstanceNorm3d"}
    )
)
lowering("pytorch", "slice")(TorchLowering(_slice, defines=("Slice", "Narrow")))
lowering("pytorch", "select")(TorchLowering(_select, defines=("Select",)))
lowering("pytorch", "permute")(TorchLowering(_permute, defines=("Permute",)))
lowering("pytorch", "transpose")(TorchLowering(_transpose, defines=("Transpose",)))
lowering("pytorch", "reshape")(TorchLowering(_reshape, defines=("Reshape",)))
lowering("pytorch", "roll")(TorchLowering(_roll, defines=("Roll",)))
lowering("pytorch", "pad")(TorchLowering(_pad, defines=("Pad", "PadFrom")))
lowering("pytorch", "constant")(TorchLowering(_constant, defines=("Fill",)))
lowering("pytorch", "layer_norm")(
    TorchLowering(_layer_norm, ("nn.LayerNorm",), defines=("LayerNorm2d", "LayerNormChannels"))
)
lowering("pytorch", "stochastic_depth")(TorchLowering(_stochastic_depth, defines=("StochasticDepth",)))
lowering("pytorch", "layer_scale")(TorchLowering(parameter=_layer_scale))
lowering("pytorch", "parameter")(TorchLowering(parameter=_parameter))
lowering("pytorch", "interpolate")(TorchLowering(_interpolate))
lowering("pytorch", "attention")(
    TorchLowering(_attention, ("nn.MultiheadAttention",), apply="{m}({x}, {x}, {x}, need_weights=False)[0]")
)
lowering("pytorch", "channel_shuffle")(
    TorchLowering(lambda ctx, node: Call("nn.ChannelShuffle", (render(attr(ctx, node, "groups")),)))
)
lowering("pytorch", "concat")(
    TorchLowering(
        join=_concat_join,
        helper=(
            "Concat",
            "Runs every branch on the same input and joins the results on channels",
            ("return torch.cat(results, 1)",),
        ),
    )
)
lowering("pytorch", "add")(
    TorchLowering(
        join=lambda ctx, node, terms: Chain("+", tuple(terms)),
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
        join=lambda ctx, node, terms: Chain("*", tuple(terms)),
        helper=(
            "Mul",
            "Runs every branch on the same input and multiplies the results (they broadcast)",
            ("total = results[0]", "for result in results[1:]:", "    total = total * result", "return total"),
        ),
    )
)
lowering("pytorch", "mean")(
    TorchLowering(
        join=lambda ctx, node, terms: f"({' + '.join(terms)}) / {len(terms)}",
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
lowering("pytorch", "matmul")(
    TorchLowering(
        join=lambda ctx, node, terms: (
            f"{terms[0]} @ {terms[1]}.transpose(-2, -1)"
            if ir.node(ctx.g, node).attrs["transpose_b"]
            else f"{terms[0]} @ {terms[1]}"
        )
    )
)
lowering("pytorch", "interpolate_like")(TorchLowering(join=_interpolate_like))


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
    "Narrow": (
        "class {name}(nn.Module):",
        '    """The positions from start up to stop (None: to the end), every step, along dim."""',
        "",
        "    def __init__(",
        "        self, dim: int, start: int, stop: int | None = None, step: int = 1",
        "    ) -> None:",
        "        super().__init__()",
        "        self.dim = dim",
        "        self.start = start",
        "        self.stop = stop",
        "        self.step = step",
        "",
        "    def forward(self, x: torch.Tensor) -> torch.Tensor:",
        "        stop = x.shape[self.dim] if self.stop is None else self.stop",
        "        x = x.narrow(self.dim, self.start, stop - self.start)",
        "        if self.step == 1:",
        "            return x",
        "        index = torch.arange(0, x.shape[self.dim], self.step, device=x.device)",
        "        return x.index_select(self.dim, index)",
    ),
    "Select": (
        "class {name}(nn.Module):",
        '    """The one position index along dim (x[:, 0] for dim 1), which disappears."""',
        "",
        "    def __init__(self, dim: int, index: int) -> None:",
        "        super().__init__()",
        "        self.dim = dim",
        "        self.index = index",
        "",
        "    def forward(self, x: torch.Tensor) -> torch.Tensor:",
        "        return x.select(self.dim, self.index)",
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
    "Transpose": (
        "class {name}(nn.Module):",
        '    """Swaps two axes."""',
        "",
        "    def __init__(self, dim0: int, dim1: int) -> None:",
        "        super().__init__()",
        "        self.dim0 = dim0",
        "        self.dim1 = dim1",
        "",
        "    def forward(self, x: torch.Tensor) -> torch.Tensor:",
        "        return x.transpose(self.dim0, self.dim1)",
    ),
    "Reshape": (
        "class {name}(nn.Module):",
        '    """A new shape after the batch (one size may be -1), the values kept in order."""',
        "",
        "    def __init__(self, shape: tuple[int, ...]) -> None:",
        "        super().__init__()",
        "        self.shape = list(shape)",
        "",
        "    def forward(self, x: torch.Tensor) -> torch.Tensor:",
        "        return x.reshape([x.shape[0], *self.shape])",
    ),
    "Pad": (
        "class {name}(nn.Module):",
        '    """A constant border: pads holds [before, after] for each of the last axes, in',
        '    order."""',
        "",
        "    def __init__(self, pads: tuple[tuple[int, int], ...], value: float) -> None:",
        "        super().__init__()",
        "        # torch.nn.functional.pad's order: the last axis first",
        "        self.padding = [n for pair in reversed(pads) for n in pair]",
        "        self.value = value",
        "",
        "    def forward(self, x: torch.Tensor) -> torch.Tensor:",
        "        return F.pad(x, self.padding, value=self.value)",
    ),
    "PadFrom": (
        "class {name}(nn.Module):",
        '    """A border taken from the input (F.pad\'s mode reflect, replicate or circular): pads',
        '    holds [before, after] for each of the last axes, in order."""',
        "",
        "    def __init__(self, pads: tuple[tuple[int, int], ...], mode: str) -> None:",
        "        super().__init__()",
        "        # torch.nn.functional.pad's order: the last axis first",
        "        self.padding = [n for pair in reversed(pads) for n in pair]",
        "        self.mode = mode",
        "",
        "    def forward(self, x: torch.Tensor) -> torch.Tensor:",
        "        return F.pad(x, self.padding, mode=self.mode)",
    ),
    "Roll": (
        "class {name}(nn.Module):",
        '    """Shifts the values along dims, cyclically (torch.roll)."""',
        "",
        "    def __init__(self, shifts: tuple[int, ...], dims: tuple[int, ...]) -> None:",
        "        super().__init__()",
        "        self.shifts = list(shifts)",
        "        self.dims = list(dims)",
        "",
        "    def forward(self, x: torch.Tensor) -> torch.Tensor:",
        "        return torch.roll(x, self.shifts, self.dims)",
    ),
    "Fill": (
        "class {name}(nn.Module):",
        '    """A tensor shaped like the input, every value the same."""',
        "",
        "    def __init__(self, value: float) -> None:",
        "        super().__init__()",
        "        self.value = value",
        "",
        "    def forward(self, x: torch.Tensor) -> torch.Tensor:",
        "        return torch.full_like(x, self.value)",
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
    "LayerNormChannels": (
        "class {name}(nn.LayerNorm):",
        '    """LayerNorm over the channels (dim 1) of a map of any rank."""',
        "",
        "    def forward(self, x: torch.Tensor) -> torch.Tensor:",
        "        x = x.movedim(1, -1)",
        "        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)",
        "        return x.movedim(-1, 1)",
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


# nasdsl/ops/tensor.py's `zero` (a search space's "none"): where the builder keeps it, zeros like its input
lowering("pytorch", "zero")(
    TorchLowering(lambda ctx, node: Call(helper_name(ctx, "Fill"), ("0.0",)), defines=("Fill",))
)


def check_lowering(ctx: ClassContext, node: str, low: TorchLowering) -> None:
    """A lowering that has no module of its own cannot be an item of a module expression."""
    if low.module is None:
        data = ir.node(ctx.g, node)
        raise CodegenError(
            f"the PyTorch backend cannot lower op '{data.op}' as a module (node {node})",
            location=data.loc,
            path=data.keypath,
        )


# ---------------------------------------------------------------------------
# MaxViT's attention within block and grid partitions (nasdsl/ops/partition.py)


def _partition_attention(ctx: ClassContext, node: str) -> Call:
    args = (render(in_size(ctx, node, -1)), render(attr(ctx, node, "head_dim")), render(attr(ctx, node, "size")))
    return Call(helper_name(ctx, "RelativePositionalMultiHeadAttention"), args)


HELPER_CLASSES["RelativePositionalMultiHeadAttention"] = (
    "class {name}(nn.Module):",
    '    """Multi-head self-attention within each partition of (N, ..., L, C) tokens, the',
    "    L = size * size positions of a square window, with a learned bias for each head",
    "    and relative offset (MaxViT's block and grid attention). The keys are scaled by",
    '    C ** -0.5, as torchvision scales them."""',
    "",
    "    def __init__(self, channels: int, head_dim: int, size: int) -> None:",
    "        super().__init__()",
    "        self.heads = channels // head_dim",
    "        self.head_dim = head_dim",
    "        self.scale = channels**-0.5",
    "        self.to_qkv = nn.Linear(channels, 3 * channels)",
    "        self.merge = nn.Linear(channels, channels)",
    "        self.size = size",
    "        offsets = (2 * size - 1) * (2 * size - 1)",
    "        table = torch.empty(offsets, self.heads)",
    "        self.relative_position_bias_table = nn.Parameter(table)",
    "        index = torch.empty(size * size, size * size, dtype=torch.int64)",
    '        self.register_buffer("relative_position_index", index)',
    "        self.reset_parameters()",
    "",
    "    def reset_parameters(self) -> None:",
    '        """The tensors this module makes itself (its layers start themselves)."""',
    "        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)",
    "        # for each pair of positions (i, j), the table's row of their offset (dy, dx)",
    "        size = self.size",
    "        rows = torch.arange(size).repeat_interleave(size)",
    "        cols = torch.arange(size).repeat(size)",
    "        dy = rows[:, None] - rows[None, :] + size - 1",
    "        dx = cols[:, None] - cols[None, :] + size - 1",
    "        self.relative_position_index.copy_(dy * (2 * size - 1) + dx)",
    "",
    "    def forward(self, x: torch.Tensor) -> torch.Tensor:",
    "        length = x.shape[-2]",
    "        # (N, ..., L, 3C) -> (N, ..., L, 3, heads, d) -> three (N, ..., heads, L, d)",
    "        qkv = self.to_qkv(x).unflatten(-1, (3, self.heads, self.head_dim))",
    "        q, k, v = qkv.movedim(-3, 0).transpose(-3, -2).unbind(0)",
    "        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]",
    "        bias = bias.view(length, length, self.heads).permute(2, 0, 1)  # (heads, L, L)",
    "        scores = q @ (k * self.scale).transpose(-2, -1) + bias",
    "        out = scores.softmax(dim=-1) @ v  # (N, ..., heads, L, d)",
    "        return self.merge(out.transpose(-3, -2).flatten(-2))",
)
lowering("pytorch", "partition_attention")(
    TorchLowering(
        _partition_attention,
        ("RelativePositionalMultiHeadAttention",),
        defines=("RelativePositionalMultiHeadAttention",),
    )
)


# ---------------------------------------------------------------------------
# Multiscale vision transformers (nasdsl/ops/multiscale.py): classes named as torchvision's MViT
# names them, so that its state_dict loads strictly


def _pooling_attention(ctx: ClassContext, node: str) -> Call:
    helper_name(ctx, "Pool")  # the class builds its pools with it
    args = [render(in_size(ctx, node, -1)), render(attr(ctx, node, "out")), render(attr(ctx, node, "heads"))]
    args.append(render(exact(ctx, node, "grid")))
    keys = ("kernel_q", "stride_q", "kernel_kv", "stride_kv", "rel_pos", "residual_pool", "class_token")
    args += keywords(ctx, node, *keys, "dropout", "eps")
    return Call(helper_name(ctx, "MultiscaleAttention"), tuple(args))


def _positional_encoding(ctx: ClassContext, node: str) -> Call:
    spatial = render((in_size(ctx, node, 2), in_size(ctx, node, 3)))
    args = [render(in_size(ctx, node, 0)), spatial, render(in_size(ctx, node, 1)), *keywords(ctx, node, "absolute")]
    return Call(helper_name(ctx, "PositionalEncoding"), tuple(args))


lowering("pytorch", "pooling_attention")(
    TorchLowering(_pooling_attention, ("MultiscaleAttention",), defines=("MultiscaleAttention", "Pool"))
)
lowering("pytorch", "positional_encoding")(
    TorchLowering(_positional_encoding, ("PositionalEncoding",), defines=("PositionalEncoding",))
)

HELPER_CLASSES["Pool"] = (
    "class {name}(nn.Module):",
    '    """Pools the tokens of a (T, H, W) grid, every head alike: ``pool`` runs on',
    "    (N * heads, C, T, H, W) maps, then LayerNorm on the features of every token; a class",
    '    token skips the pooling, not the norm."""',
    "",
    "    def __init__(",
    "        self, pool: nn.Module, norm: nn.Module, class_token: bool = True",
    "    ) -> None:",
    "        super().__init__()",
    "        self.pool = pool",
    "        self.norm_act = nn.Sequential(norm)",
    "        self.first = 1 if class_token else 0",
    "",
    "    def forward(",
    "        self, x: torch.Tensor, grid: tuple[int, int, int]",
    "    ) -> tuple[torch.Tensor, tuple[int, int, int]]:",
    "        n, heads, _, c = x.shape  # (N, heads, L, C)",
    "        token, tokens = x[:, :, : self.first], x[:, :, self.first :]",
    "        maps = self.pool(",
    "            tokens.transpose(2, 3).reshape(n * heads, c, grid[0], grid[1], grid[2])",
    "        )",
    "        t, h, w = maps.shape[2:]",
    "        tokens = maps.reshape(n, heads, c, t * h * w).transpose(2, 3)",
    "        return self.norm_act(torch.cat([token, tokens], dim=2)), (t, h, w)",
)

HELPER_CLASSES["MultiscaleAttention"] = (
    "class {name}(nn.Module):",
    '    """Pooling attention (MViT, Fan et al. 2021; MViTv2, Li et al. 2022) over the tokens',
    "    of a (T, H, W) grid, a class token first: q, k and v from one projection, each",
    "    pooled on the grid by a depthwise 3-D convolution and LayerNorm (every head alike),",
    "    softmax(q k^T / sqrt(d) + relative positions) v, the pooled q added back",
    "    (residual_pool), the heads joined and projected. The output's grid is q's.",
    '    """',
    "",
    "    def __init__(",
    "        self,",
    "        embed_dim: int,",
    "        out: int,",
    "        heads: int,",
    "        grid: tuple[int, int, int],",
    "        kernel_q: int | tuple[int, int, int] = 1,",
    "        stride_q: int | tuple[int, int, int] = 1,",
    "        kernel_kv: int | tuple[int, int, int] = 1,",
    "        stride_kv: int | tuple[int, int, int] = 1,",
    "        rel_pos: bool = False,",
    "        residual_pool: bool = False,",
    "        class_token: bool = True,",
    "        dropout: float = 0.0,",
    "        eps: float = 1e-5,",
    "    ) -> None:",
    "        super().__init__()",
    "        self.heads = heads",
    "        self.head_dim = out // heads",
    "        self.scale = self.head_dim**-0.5",
    "        self.grid = (grid[0], grid[1], grid[2])",
    "        self.residual_pool = residual_pool",
    "        self.first = 1 if class_token else 0",
    "        kernel_q, stride_q, kernel_kv, stride_kv = (",
    "            (v, v, v) if isinstance(v, int) else tuple(v)",
    "            for v in (kernel_q, stride_q, kernel_kv, stride_kv)",
    "        )",
    "        self.rel_pos_h: nn.Parameter | None = None",
    "        self.rel_pos_w: nn.Parameter | None = None",
    "        self.rel_pos_t: nn.Parameter | None = None",
    "        if (",
    "            rel_pos",
    "        ):  # a row per distance along each axis, for the larger of q's and k's grids",
    "            size = max(grid[1], grid[2])",
    "            spatial = 2 * max(size // stride_q[1], size // stride_kv[1]) - 1",
    "            self.rel_pos_h = nn.Parameter(torch.zeros(spatial, self.head_dim))",
    "            self.rel_pos_w = nn.Parameter(torch.zeros(spatial, self.head_dim))",
    "            self.rel_pos_t = nn.Parameter(torch.zeros(2 * grid[0] - 1, self.head_dim))",
    "        self.qkv = nn.Linear(embed_dim, 3 * out)",
    "        self.project = nn.Sequential(",
    "            nn.Linear(out, out), *([nn.Dropout(dropout)] if dropout > 0.0 else [])",
    "        )",
    "        self.pool_q = self._pool(kernel_q, stride_q, eps, class_token)",
    "        self.pool_k = self._pool(kernel_kv, stride_kv, eps, class_token)",
    "        self.pool_v = self._pool(kernel_kv, stride_kv, eps, class_token)",
    "",
    "    def reset_parameters(self) -> None:",
    '        """The tables this module makes itself, zeros (its layers start themselves)."""',
    "        for table in self.parameters(recurse=False):",
    "            nn.init.zeros_(table)",
    "",
    "    def _pool(",
    "        self,",
    "        kernel: tuple[int, ...],",
    "        stride: tuple[int, ...],",
    "        eps: float,",
    "        class_token: bool,",
    "    ):",
    '        """A depthwise convolution padded by half its window, and LayerNorm; None for a',
    '        window and stride of 1."""',
    "        if kernel == (1, 1, 1) and stride == (1, 1, 1):",
    "            return None",
    "        d = self.head_dim",
    "        padding = tuple(k // 2 for k in kernel)",
    "        conv = nn.Conv3d(",
    "            d, d, kernel, stride=stride, padding=padding, groups=d, bias=False",
    "        )",
    "        return {Pool}(conv, nn.LayerNorm(d, eps=eps), class_token)",
    "",
    "    def forward(self, x: torch.Tensor) -> torch.Tensor:",
    "        n, length, _ = x.shape",
    "        qkv = (",
    "            self.qkv(x)",
    "            .reshape(n, length, 3, self.heads, self.head_dim)",
    "            .permute(2, 0, 3, 1, 4)",
    "        )",
    "        q, k, v = qkv[0], qkv[1], qkv[2]  # (N, heads, L, head_dim)",
    "        q_grid = k_grid = self.grid",
    "        if self.pool_k is not None:",
    "            k, k_grid = self.pool_k(k, self.grid)",
    "        if self.pool_v is not None:",
    "            v = self.pool_v(v, self.grid)[0]",
    "        if self.pool_q is not None:",
    "            q, q_grid = self.pool_q(q, self.grid)",
    "        attn = (self.scale * q) @ k.transpose(2, 3)",
    "        if (",
    "            self.rel_pos_h is not None",
    "            and self.rel_pos_w is not None",
    "            and self.rel_pos_t is not None",
    "        ):",
    "            self._add_relative_positions(attn, q, q_grid, k_grid)",
    "        x = attn.softmax(dim=-1) @ v",
    "        if self.residual_pool:  # the class token keeps its own",
    "            x = torch.cat(",
    "                [x[:, :, : self.first], x[:, :, self.first :] + q[:, :, self.first :]],",
    "                dim=2,",
    "            )",
    "        x = x.transpose(1, 2).reshape(n, -1, self.heads * self.head_dim)",
    "        return self.project(x)",
    "",
    "    def _add_relative_positions(",
    "        self,",
    "        attn: torch.Tensor,",
    "        q: torch.Tensor,",
    "        q_grid: tuple[int, int, int],",
    "        k_grid: tuple[int, int, int],",
    "    ) -> None:",
    '        """Adds to each query\'s scores, in place, what the distance to each key along',
    "        time, height and width gives (decomposed relative positions); nothing for the",
    '        class token."""',
    "        (qt, qh, qw), (kt, kh, kw) = q_grid, k_grid",
    "        n, heads, _, d = q.shape",
    "        r = q[:, :, self.first :].reshape(n, heads, qt, qh, qw, d)",
    "        along_h = torch.einsum(",
    '            "nathwd,hkd->nathwk", r, self._table(self.rel_pos_h, qh, kh)',
    "        )",
    "        along_w = torch.einsum(",
    '            "nathwd,wkd->nathwk", r, self._table(self.rel_pos_w, qw, kw)',
    "        )",
    "        along_t = torch.einsum(",
    '            "nathwd,tkd->nathwk", r, self._table(self.rel_pos_t, qt, kt)',
    "        )",
    "        scores = attn[:, :, self.first :, self.first :].view(",
    "            n, heads, qt, qh, qw, kt, kh, kw",
    "        )",
    "        scores += along_h[..., None, :, None]",
    "        scores += along_w[..., None, None, :]",
    "        scores += along_t[..., :, None, None]",
    "",
    "    @staticmethod",
    "    def _table(table: torch.Tensor, q: int, k: int) -> torch.Tensor:",
    '        """(q, k, d): the row of ``table`` for each query and key position, the coarser',
    "        grid's positions scaled to the finer's; the table resized linearly to",
    '        2 max(q, k) - 1 rows first."""',
    "        size = 2 * max(q, k) - 1",
    "        if table.shape[0] != size:",
    '            table = F.interpolate(table.t()[None], size=size, mode="linear")[0].t()',
    "        q_step, k_step = max(k / q, 1.0), max(q / k, 1.0)",
    "        queries = torch.arange(q, device=table.device)[:, None] * q_step",
    "        keys = (torch.arange(k, device=table.device)[None, :] - (k - 1)) * k_step",
    "        return table[(queries - keys).long()]",
)

HELPER_CLASSES["PositionalEncoding"] = (
    "class {name}(nn.Module):",
    '    """The positions of an (N, C, T, H, W) map as tokens behind a learned class token,',
    "    (N, 1 + T * H * W, C); with a position embedding (absolute), plus the sum of a",
    '    learned spatial (H * W, C) and temporal (T, C) table, and the class token\'s own."""',
    "",
    "    def __init__(",
    "        self,",
    "        embed_size: int,",
    "        spatial_size: tuple[int, int],",
    "        temporal_size: int,",
    "        absolute: bool = False,",
    "    ) -> None:",
    "        super().__init__()",
    "        self.class_token = nn.Parameter(torch.zeros(embed_size))",
    "        self.spatial_pos: nn.Parameter | None = None",
    "        self.temporal_pos: nn.Parameter | None = None",
    "        self.class_pos: nn.Parameter | None = None",
    "        if absolute:",
    "            self.spatial_pos = nn.Parameter(",
    "                torch.zeros(spatial_size[0] * spatial_size[1], embed_size)",
    "            )",
    "            self.temporal_pos = nn.Parameter(torch.zeros(temporal_size, embed_size))",
    "            self.class_pos = nn.Parameter(torch.zeros(embed_size))",
    "",
    "    def reset_parameters(self) -> None:",
    '        """The class token and position tables, zeros."""',
    "        for table in self.parameters():",
    "            nn.init.zeros_(table)",
    "",
    "    def forward(self, x: torch.Tensor) -> torch.Tensor:",
    "        x = x.flatten(2).transpose(1, 2)  # (N, T * H * W, C)",
    "        x = torch.cat([self.class_token.expand(x.shape[0], 1, -1), x], dim=1)",
    "        if (",
    "            self.spatial_pos is not None",
    "            and self.temporal_pos is not None",
    "            and self.class_pos is not None",
    "        ):",
    "            grid = (self.temporal_pos[:, None] + self.spatial_pos[None]).flatten(0, 1)",
    "            x = x + torch.cat([self.class_pos[None], grid])",
    "        return x",
)


__all__ = [
    "HELPER_CLASSES",
    "ClassContext",
    "TorchLowering",
    "attr",
    "in_size",
    "in_type",
    "lowering_for",
    "render",
]


# ---------------------------------------------------------------------------
# Window attention and patch merging (nasdsl/ops/window.py): torchvision's class names and
# attribute names, so that its state_dict loads; each class in the file stands alone.

#: the class each kind of window attention is written as: (rank of its input, version) -> name
WINDOW_CLASSES = {
    (3, 1): "ShiftedWindowAttention",
    (3, 2): "ShiftedWindowAttentionV2",
    (4, 1): "ShiftedWindowAttention3d",
}


def _window_attention(ctx: ClassContext, node: str) -> Call:
    data = ir.node(ctx.g, node)
    cls = helper_name(ctx, WINDOW_CLASSES[(in_type(ctx, node).rank, data.attrs["version"])])
    # the shift as written: one for every axis or one per axis, which the class tells apart when
    # it is built (a template's parameter may be either at different uses)
    args = [render(in_size(ctx, node, -1)), render(exact(ctx, node, "window")), render(exact(ctx, node, "shift"))]
    args.append(render(attr(ctx, node, "heads")))
    fit = attr(ctx, node, "fit")
    if fit is not False:
        args.append(f"fit={render(fit)}")
    args += keywords(ctx, node, "qkv_bias", "proj_bias", "attention_dropout", "dropout")
    return Call(cls, tuple(args))


def _patch_merging(ctx: ClassContext, node: str) -> Call:
    after = ir.node(ctx.g, node).attrs["norm"] == "after"
    cls = helper_name(ctx, "PatchMergingV2" if after else "PatchMerging")
    return Call(cls, (render(in_size(ctx, node, -1)), render(attr(ctx, node, "out")), *keywords(ctx, node, "eps")))


#: the pieces of the window attention classes: {v1}/{v2} lines are those of one version, {2d}/{3d}
#: those of one rank (a line starting with a tag is kept, without the tag, only for that kind)
_WINDOW_ATTENTION = '''
class {name}(nn.Module):
    """Multi-head self-attention inside windows of an {layout} map, with a bias
    per offset between two tokens of a window and a cyclic shift: the map is padded
    to whole windows (with fit, a window larger than the map shrinks to it instead),
    rolled back by the shift and cut into windows; tokens that the roll brought
    together from different parts of the map do not attend to each other.
{v2}    Swin V2: cosine attention scaled by a learned factor per head (at most 100),
{v2}    the bias from an MLP over log-spaced offsets (16 * sigmoid).
    """

    def __init__(
        self,
        dim: int,
        window_size: tuple[int, ...],
        shift_size: int | tuple[int, ...],
        num_heads: int,
        fit: bool = False,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        attention_dropout: float = 0.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.window_size = list(window_size)
        # one shift for every axis, or one per axis
        if isinstance(shift_size, int):
            self.shift_size = [shift_size] * len(self.window_size)
        else:
            self.shift_size = list(shift_size)
        self.num_heads = num_heads
        self.fit = fit
        self.attention_dropout = attention_dropout
        self.dropout = dropout
        # as nn.Linear starts (a spec's init rules for linear apply to them)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        # the offsets along each axis: -(side - 1) .. side - 1
        sides = [2 * w - 1 for w in self.window_size]
        entries, tokens = 1, 1
        for side, w in zip(sides, self.window_size, strict=True):
            entries, tokens = entries * side, tokens * w
{v1}        table = torch.empty(entries, num_heads)
{v1}        self.relative_position_bias_table = nn.Parameter(table)
{v2}        self.logit_scale = nn.Parameter(torch.empty(num_heads, 1, 1))
{v2}        coords = torch.empty(1, *sides, len(sides), dtype=torch.float32)
{v2}        self.register_buffer("relative_coords_table", coords)
{v2}        # the continuous position bias: an offset's coordinates to a bias per head
{v2}        self.cpb_mlp = nn.Sequential(
{v2}            nn.Linear(2, 512),
{v2}            nn.ReLU(inplace=True),
{v2}            nn.Linear(512, num_heads, bias=False),
{v2}        )
{2d}        index = torch.empty(tokens * tokens, dtype=torch.int64)
{3d}        index = torch.empty(tokens, tokens, dtype=torch.int64)
        self.register_buffer("relative_position_index", index)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The tensors this module makes itself (its layers start themselves)."""
{v1}        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
{v2}        # the logarithm of the scale: log(10)
{v2}        nn.init.constant_(self.logit_scale, 2.302585092994046)
{v2}        # the offsets scaled to [-8, 8] along each axis and spaced logarithmically
{v2}        axes = [
{v2}            torch.arange(1 - w, w, dtype=torch.float32) / (w - 1) * 8
{v2}            for w in self.window_size
{v2}        ]
{v2}        grid = torch.stack(torch.meshgrid(axes, indexing="ij"), dim=-1).unsqueeze(0)
{v2}        coords = torch.sign(grid) * torch.log2(grid.abs() + 1.0) / 3.0
{v2}        self.relative_coords_table.copy_(coords)
        # for each pair of tokens (i, j) of a window, the row of their offset's bias
        sides = [2 * w - 1 for w in self.window_size]
        axes = [torch.arange(w) for w in self.window_size]
        coords = torch.stack(torch.meshgrid(axes, indexing="ij")).flatten(1)
        offsets = coords[:, :, None] - coords[:, None, :]
        index = torch.zeros(offsets.shape[1:], dtype=torch.int64)
        stride = 1
        for axis in range(len(sides) - 1, -1, -1):
            index += (offsets[axis] + self.window_size[axis] - 1) * stride
            stride *= sides[axis]
{2d}        self.relative_position_index.copy_(index.flatten())
{3d}        self.relative_position_index.copy_(index)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, *sizes, channels = x.shape
        window, shift = list(self.window_size), list(self.shift_size)
        for i, size in enumerate(sizes):
            if self.fit and size <= window[i]:
                window[i], shift[i] = size, 0
        padding = [0, 0]
        for size, side in zip(reversed(sizes), reversed(window), strict=True):
            padding += [0, -size % side]
        x = F.pad(x, padding)
        padded = list(x.shape[1:-1])
        for i, size in enumerate(padded):
            if window[i] >= size:  # one window covers the axis: nothing to shift
                shift[i] = 0
        axes = list(range(1, len(sizes) + 1))
        shifted = sum(shift) > 0
        if shifted:
            x = torch.roll(x, [-s for s in shift], axes)
        tokens = self.partition(x, window)  # (N * windows, n, C)
        n, heads = tokens.shape[1], self.num_heads
{v1}        qkv = self.qkv(tokens)
{v2}        bias = self.qkv.bias
{v2}        if bias is not None:  # none for the keys
{v2}            keys = torch.zeros_like(bias[:channels])
{v2}            bias = torch.cat([bias[:channels], keys, bias[2 * channels :]])
{v2}        qkv = F.linear(tokens, self.qkv.weight, bias)
        qkv = qkv.reshape(tokens.shape[0], n, 3, heads, channels // heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
{v1}        attn = (q * (channels // heads) ** -0.5) @ k.transpose(-2, -1)
{v2}        attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
{v2}        attn = attn * torch.clamp(self.logit_scale, max=4.605170185988092).exp()
        full = 1
        for side in self.window_size:
            full *= side
        # a window that shrank to the map reads the first rows and columns
        index = self.relative_position_index.reshape(full, full)[:n, :n].reshape(-1)
{v1}        table = self.relative_position_bias_table
{v2}        table = self.cpb_mlp(self.relative_coords_table).view(-1, heads)
        bias = table[index].view(n, n, heads).permute(2, 0, 1)
{v2}        bias = 16 * torch.sigmoid(bias)
        attn = attn + bias.unsqueeze(0)
        if shifted:
            mask = self.shift_mask(x, padded, window, shift)  # (windows, n, n)
            attn = attn.view(batch, mask.shape[0], heads, n, n) + mask[None, :, None]
            attn = attn.view(-1, heads, n, n)
        attn = F.softmax(attn, dim=-1)
        attn = F.dropout(attn, p=self.attention_dropout, training=self.training)
        tokens = (attn @ v).transpose(1, 2).reshape(tokens.shape[0], n, channels)
        tokens = F.dropout(self.proj(tokens), p=self.dropout, training=self.training)
        x = self.join(tokens, batch, padded, window)
        if shifted:
            x = torch.roll(x, shift, axes)
        for i, size in enumerate(sizes):
            x = x.narrow(i + 1, 0, size)
        return x.contiguous()

    @staticmethod
    def partition(x: torch.Tensor, window: list[int]) -> torch.Tensor:
        """(N, *padded, C) to (N * windows, tokens per window, C), windows row-major."""
        batch, *padded, channels = x.shape
        split, tokens = [batch], 1
        for size, side in zip(padded, window, strict=True):
            split += [size // side, side]
            tokens *= side
        k = len(window)
        order = [0, *range(1, 2 * k, 2), *range(2, 2 * k + 1, 2), 2 * k + 1]
        x = x.view([*split, channels]).permute(order)
        return x.reshape(-1, tokens, channels)

    @staticmethod
    def join(
        tokens: torch.Tensor, batch: int, padded: list[int], window: list[int]
    ) -> torch.Tensor:
        """The inverse of partition: back to (N, *padded, C)."""
        k, channels = len(window), tokens.shape[-1]
        counts = [size // side for size, side in zip(padded, window, strict=True)]
        x = tokens.view([batch, *counts, *window, channels])
        order = [0]
        for i in range(k):
            order += [1 + i, 1 + k + i]
        x = x.permute([*order, 2 * k + 1])
        return x.reshape([batch, *padded, channels])

    def shift_mask(
        self, x: torch.Tensor, padded: list[int], window: list[int], shift: list[int]
    ) -> torch.Tensor:
        """-100 between tokens of a window that the roll brought from different parts
        of the map (along each shifted axis: the rest, the last window but its last
        shift, and the last shift), else 0: (windows, n, n)."""
        part = x.new_zeros(padded)
        for i, (size, side, s) in enumerate(zip(padded, window, shift, strict=True)):
            if s > 0:
                along = x.new_zeros(size)
                along[size - side : size - s] = 1
                along[size - s :] = 2
                shape = [size if j == i else 1 for j in range(len(padded))]
                part = part * 3 + along.view(shape)
        part = self.partition(part[None, ..., None], window)[..., 0]
        return (part[:, None, :] != part[:, :, None]).to(x.dtype) * -100.0
'''

_PATCH_MERGING = '''
class {name}(nn.Module):
    """Swin's downsampling: each 2x2 neighbourhood of an (N, ..., H, W, C) map (odd
    sides padded) joined into 4C channels and projected to out channels, with a
    LayerNorm over {normed}."""

    def __init__(self, dim: int, out: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.reduction = nn.Linear(4 * dim, out, bias=False)
        self.norm = nn.LayerNorm({width}, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-3], x.shape[-2]
        x = F.pad(x, (0, 0, 0, width % 2, 0, height % 2))
        corners = [x[..., i::2, j::2, :] for j in (0, 1) for i in (0, 1)]
        x = torch.cat(corners, -1)  # (0, 0), (1, 0), (0, 1), (1, 1)
        return {result}
'''


def _window_attention_class(rank: int, version: int) -> tuple[str, ...]:
    """The lines of one window attention class (2-D or 3-D windows, Swin or Swin V2)."""
    keep = {f"{{v{version}}}", "{2d}" if rank == 3 else "{3d}"}
    layout = "(N, H, W, C)" if rank == 3 else "(N, T, H, W, C)"
    lines = []
    for line in _WINDOW_ATTENTION.strip("\n").splitlines():
        tag = line[: line.index("}") + 1] if line.startswith("{") and "}" in line else ""
        if tag and tag != "{name}":
            if tag not in keep:
                continue
            line = line[len(tag) :]
        lines.append(line.replace("{layout}", layout))
    return tuple(lines)


def _patch_merging_class(after: bool) -> tuple[str, ...]:
    text = _PATCH_MERGING.strip("\n")
    text = text.replace("{normed}", "the projection (Swin V2)" if after else "the 4C channels")
    text = text.replace("{width}", "out" if after else "4 * dim")
    text = text.replace("{result}", "self.norm(self.reduction(x))" if after else "self.reduction(self.norm(x))")
    return tuple(text.splitlines())


HELPER_CLASSES.update({name: _window_attention_class(*kind) for kind, name in WINDOW_CLASSES.items()})
HELPER_CLASSES["PatchMerging"] = _patch_merging_class(after=False)
HELPER_CLASSES["PatchMergingV2"] = _patch_merging_class(after=True)
lowering("pytorch", "window_attention")(TorchLowering(_window_attention, defines=tuple(WINDOW_CLASSES.values())))
lowering("pytorch", "patch_merging")(TorchLowering(_patch_merging, defines=("PatchMerging", "PatchMergingV2")))


def _pad_to_multiple(ctx: ClassContext, node: str) -> Call:
    from nasdsl.ops.window import spatial_axes

    t = in_type(ctx, node)
    dims = tuple(i + 1 for i in spatial_axes(t))
    # as written: one multiple for every axis or one per axis, told apart when the class is built
    return Call(helper_name(ctx, "PadToMultiple"), (render(exact(ctx, node, "multiple")), render(dims)))


HELPER_CLASSES["PadToMultiple"] = (
    "class {name}(nn.Module):",
    '    """Zeros at the end of each of dims, up to a multiple of its entry of multiples."""',
    "",
    "    def __init__(self, multiples: int | tuple[int, ...], dims: tuple[int, ...]) -> None:",
    "        super().__init__()",
    "        # one multiple for every axis, or one per axis",
    "        if isinstance(multiples, int):",
    "            self.multiples = [multiples] * len(dims)",
    "        else:",
    "            self.multiples = list(multiples)",
    "        self.dims = list(dims)",
    "",
    "    def forward(self, x: torch.Tensor) -> torch.Tensor:",
    "        padding = [0] * (2 * x.dim())  # F.pad's order: the last axis first",
    "        for dim, multiple in zip(self.dims, self.multiples, strict=True):",
    "            padding[2 * (x.dim() - 1 - dim) + 1] = -x.shape[dim] % multiple",
    "        return F.pad(x, padding)",
)
lowering("pytorch", "pad_to_multiple")(TorchLowering(_pad_to_multiple, defines=("PadToMultiple",)))


# ---------------------------------------------------------------------------
# Pixel shuffles, adaptive max pooling, clamp and the activations of nasdsl/ops/more_ops.py


def _factor(cls: str) -> Callable[[ClassContext, str], Call]:
    return lambda ctx, node: Call(cls, (render(attr(ctx, node, "factor")),))


def _clamp(ctx: ClassContext, node: str) -> Call:
    """``nn.Hardtanh(min, max)`` where both bounds are numbers here; else (a bound left out, or
    given by a parameter that may be null at another use) ``torch.clamp`` in a small module."""
    low, high = attr(ctx, node, "min"), attr(ctx, node, "max")
    if all(isinstance(v, float) for v in (low, high)):
        return Call("nn.Hardtanh", (render(low), render(high)))
    return Call(helper_name(ctx, "Clamp"), (render(low), render(high)))


HELPER_CLASSES["Clamp"] = (
    "class {name}(nn.Module):",
    '    """Each value limited to [low, high] (torch.clamp); None leaves that side open."""',
    "",
    "    def __init__(self, low: float | None, high: float | None) -> None:",
    "        super().__init__()",
    "        self.low = low",
    "        self.high = high",
    "",
    "    def forward(self, x: torch.Tensor) -> torch.Tensor:",
    "        return torch.clamp(x, self.low, self.high)",
)

lowering("pytorch", "pixel_shuffle")(TorchLowering(_factor("nn.PixelShuffle")))
lowering("pytorch", "pixel_unshuffle")(TorchLowering(_factor("nn.PixelUnshuffle")))
for _n, _suffix in ((1, "1d"), (2, ""), (3, "3d")):
    lowering("pytorch", f"adaptive_max_pool{_suffix}")(TorchLowering(_adaptive(f"nn.AdaptiveMaxPool{_n}d")))
lowering("pytorch", "clamp")(TorchLowering(_clamp, defines=("Clamp",)))
lowering("pytorch", "softplus")(
    TorchLowering(lambda ctx, node: Call("nn.Softplus", tuple(keywords(ctx, node, "beta", "threshold"))))
)
lowering("pytorch", "mish")(TorchLowering(_activation("nn.Mish")))
lowering("pytorch", "selu")(TorchLowering(_activation("nn.SELU")))
lowering("pytorch", "log_softmax")(
    TorchLowering(lambda ctx, node: Call("nn.LogSoftmax", (f"dim={torch_dim(ctx, node, 'dim')}",)))
)
