"""PyTorch backend: readable source for a compiled graph, and in-memory models.

Public entries:

- :func:`generate_source` returns the source of a Python module (``str``) that
  depends on torch alone: one ``nn.Module`` class per spec template, the model
  class named after the spec, a NamedTuple of the training outputs, a ``loss``
  method with the spec's loss weights, an ``_init_parameters`` method with
  the spec's initialisation and a ``reset_parameters`` that starts every layer
  again before it. An inference build (a graph made by
  :func:`nasdsl.optimize.optimize`, rewritten with its block tree kept) is written
  by the same code: the rewritten templates' classes, and ``<Name>Inference``,
  which takes no arguments, has no ``loss`` or ``reset_parameters``, and builds
  itself from the training model's state_dict with ``from_training_state_dict``
  (:mod:`backends.pytorch_weights`).
- :func:`load_source` imports such source as a module; :func:`model_class`
  gives the model class of a graph.

The backend reads the graph IR and nothing else (``docs/ir.md``): the block
tree (``ir.info(g).model`` and the outputs' heads) says which classes and
attributes to write, each node's ``exprs`` how a class computes an attribute
from its arguments, ``ir.info(g).templates`` the classes' signatures. Python
decides everything here; ``templates/pytorch.py.jinja`` only lays out. The
file's constructor arguments are the variables the exposure analysis
(:mod:`nasdsl.passes.exposure`) finds; the others are folded into the code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.abc
import importlib.util
import keyword
import linecache
import operator
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import jinja2
import networkx as nx

from nasdsl import __version__, ir
from nasdsl.errors import CodegenError
from nasdsl.ir.sym import Sym
from nasdsl.ir.tree import bypassed, read_by_name
from nasdsl.ops import INIT_PARAMS, OPS, describe
from nasdsl.passes.pipeline import run_pipeline

from .names import BUILTINS, IMPORTED, METHOD_LOCALS, MODEL_ARGUMENTS_RESERVED, Namespace, check_attribute
from .pyformat import Call, Chain, docstring, docstring_with_args, layout, layout_or_none, literal, safe_text, wrap
from .pyloops import Loop, find_loop, loop_lines
from .pytorch_ops import HELPER_CLASSES, ClassContext, check_lowering, lowering_for, names_in, render
from .pytorch_weights import FROM_TRAINING, Replay

#: The passes this backend runs before it writes (see nasdsl/passes/pipeline.py).
PIPELINE = ("expose", "inplace")


# ---------------------------------------------------------------------------
# Module expressions


def _op_module(ctx: ClassContext, b: ir.Block) -> Call:
    """``nn.X(...)`` for an op block (an item of a module expression)."""
    low = lowering_for(ctx, b.output)
    if low.parameter is not None:
        raise CodegenError(
            f"the PyTorch backend writes op '{b.op}' (a parameter of its module) only as an entry of a model or "
            "a template body, not as a part of a nested sequence or branch",
            location=b.loc,
            path=b.keypath,
        )
    check_lowering(ctx, b.output, low)
    if low.apply != "{m}({x})":
        raise CodegenError(
            f"the PyTorch backend writes op '{b.op}' (called with more than its input) only as an entry of a "
            "model or a named template body, not as a part of a nested sequence or branch",
            location=b.loc,
            path=b.keypath,
        )
    return low.module(ctx, b.output)


def _template_call(ctx: ClassContext, b: ir.Block) -> Call:
    """``Template(in_channels, args...)``: the input's size first (from the IR's symbolic shapes),
    then required parameters positional, defaulted ones by keyword when given."""
    info = ir.info(ctx.g)
    tmpl = info.templates[b.template]
    args = [render(_input_size(ctx, b, k)) for k in range(len(b.inputs) if b.entries else 1)]
    keyword_only = _keyword_only(tmpl)
    for k, (p, a) in enumerate(zip(tmpl.params, b.args, strict=True)):
        if not a.given and _has_default(p):
            continue
        text = render(_arg(ctx, a))
        positional = not _has_default(p) and k < keyword_only
        args.append(text if positional else f"{ctx.keywords[b.template][p.name]}={text}")
    return Call(ctx.classes[b.template], tuple(args))


def _input_size(ctx: ClassContext, b: ir.Block, k: int = 0) -> object:
    """The size of a use's input (its ``k``-th) along its channel axis, as the calling class writes it."""
    t = ir.node(ctx.g, b.inputs[k]).type
    axis = t.channel_axis if t.channel_axis is not None else 0
    in_sym = b.in_syms[k] if b.in_syms is not None else b.in_sym if k == 0 else None
    sym = in_sym[axis] if in_sym is not None else t.shape[axis]
    return ctx.size(sym, t.shape[axis])


def _arg(ctx: ClassContext, a: ir.Arg) -> object:
    return ctx.value(a.expr, a.value)


def _has_default(p: ir.Param) -> bool:
    """Whether the class's signature gives the parameter a default (``None`` for one it computes
    or whose default is null)."""
    return not p.required and (p.default is not None or p.default_expr is not None or p.null_default)


def _refuse_null_for_computed_defaults(tmpl: ir.Template, instances: list[ir.Block]) -> None:
    """A use that gives null to a parameter whose default the class computes (``if p is None:
    p = ...``) would get the default there: the class cannot tell null from not given."""
    for p in tmpl.params:
        if _has_default(p) and p.default is None and not p.null_default:
            for inst in instances:
                a = inst.arg(p.name)
                if a.given and a.value is None:
                    raise CodegenError(
                        f"template {tmpl.name} computes the default of its parameter {p.name}, and the use at "
                        f"{inst.path} gives it null: the generated class cannot tell null from not given; "
                        "give a value there, or make the default null",
                        location=inst.loc,
                        path=inst.keypath,
                    )


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


def _off(ctx: ClassContext, b: ir.Block) -> bool:
    """Whether the generated code leaves block ``b`` out (switched off for good, or taken out of
    the data path by a rewrite: it passes its input on)."""
    return b.kind == "skip" or (b.dormant and b.when.switch not in ctx.exposed) or b.path in ctx.off


def _absent(ctx: ClassContext, b: ir.Block) -> bool:
    """Whether branch ``b`` is absent from its merge: switched off (a branch a rewrite took out of
    the data path is there, as its input)."""
    return _off(ctx, b) and not bypassed(b)


def _merge_lowering(ctx: ClassContext, b: ir.Block):
    low = lowering_for(ctx, b.output)
    if low.join is None:
        raise CodegenError(
            f"the PyTorch backend cannot lower op '{b.op}' as a merge (node {b.path})", location=b.loc, path=b.keypath
        )
    return low


def _joined(ctx: ClassContext, b: ir.Block, terms: list[str]) -> str | Call | Chain:
    """The expression of merge ``b`` over its branches' values ``terms``: into the first
    value where the in-place analysis allows it (a local made for this merge alone)."""
    low = _merge_lowering(ctx, b)
    if low.join_into is not None and len(terms) == 2 and terms[0].isidentifier() and ctx.inplace(b.output):
        return low.join_into(*terms)
    return low.join(ctx, b.output, terms)


def _module_expr(ctx: ClassContext, b: ir.Block) -> Call:
    """A module expression for a block nested inside a class."""
    if _off(ctx, b):
        return Call("nn.Identity", ())
    if b.kind == "op":
        return _op_module(ctx, b)
    if b.kind == "use":
        if b.entries:
            raise CodegenError(
                f"template {b.template} reads several inputs: the PyTorch backend calls it as an entry of a model "
                "or a template body, or as the block of a repeat that names its 'previous' values",
                location=b.loc,
                path=b.keypath,
            )
        return _template_call(ctx, b)
    if b.kind == "seq":
        if ctx.own_class is not None and b.named and not _sequential(ctx, b):
            return ctx.own_class(ctx, b)  # a rewritten block that needs a forward of its own
        children = list(b.children)
        if b.named:  # an entry a rewrite took out has no name to keep
            children = [c for c in children if not bypassed(c)]
        else:  # an item a rewrite took out keeps the indices of those after it (nn.Identity); none follow the last
            while children and bypassed(children[-1]):
                children.pop()
        items = [_module_expr(ctx, c) for c in children]
        # a list left with items that are not 0, 1, ... (a sum's `zero` branch left out): named so too
        if b.named or [c.name for c in children] != [str(i) for i in range(len(children))]:
            return Call("nn.Sequential", (_ordered(children, items),))
        return Call("nn.Sequential", tuple(items))
    if b.kind == "merge":
        low = _merge_lowering(ctx, b)
        data = ir.node(ctx.g, b.output)
        if low.helper is None or data.given:
            raise CodegenError(
                f"a {b.op} merge with {'attributes' if data.given else 'this op'} can be an entry of a model or "
                "a named template body, not a part of a nested sequence or branch",
                location=b.loc,
                path=b.keypath,
            )
        helper = ctx.classes[f"merge:{b.op}"]
        ctx.used_helpers.add(b.op)
        live = [c for c in b.children if not _absent(ctx, c)]  # a branch switched off is absent
        calls = [_module_expr(ctx, c) for c in live]
        if b.named:
            return Call(helper, tuple(_keyword(c.name, call) for c, call in zip(live, calls, strict=True)))
        if [c.name for c in live] == [str(i) for i in range(len(live))]:
            return Call(helper, tuple(calls))
        # unnamed branches with one switched off before the last: keyed by their indices, as the IR names them
        pairs = tuple(Call(f'"{c.name}": {call.func}', call.args, call.open, call.close) for c, call in zip(
            live, calls, strict=True))  # fmt: skip
        return Call(helper, (Call("**", (Call("", pairs, "{", "}"),)),))
    data = ir.node(ctx.g, b.output) if b.output in ctx.g else None
    raise CodegenError(
        "the PyTorch backend supports references only between the top-level entries of a model or template",
        location=b.loc or (data.loc if data else None),
        path=b.keypath or b.path,
    )


def _reads_input(c: ir.Block) -> bool:
    """Whether merge ``c`` joins the value it is given (``identity``) and its body's input
    (``{ref: in}``) alone, with at least one of the latter."""
    refs = [b for b in c.children if b.kind == "ref"]
    others = [b for b in c.children if b.kind != "ref"]
    return (
        bool(refs)
        and all(b.target is None for b in refs)
        and all((b.kind == "op" and b.op == "identity") or bypassed(b) for b in others)
    )


def _resized_after(body: ir.Block) -> bool:
    """Whether a list body ends in merges that read its input (see :func:`_reads_input`)."""
    return any(c.kind == "merge" and _reads_input(c) for c in body.children)


def _inside(c: ir.Block) -> set[str]:
    """The nodes block ``c`` computes, and its input."""
    made = {b.output for b in ir.walk(c) if b.kind not in ("ref", "skip")}
    return made | {n for b in ir.walk(c) for n in b.entries} | set(c.inputs)


def _reads_of(c: ir.Block) -> tuple[set[str], set[str]]:
    """The paths and nodes that blocks inside ``c`` read by `ref:` or `from:` from outside it."""
    inside = _inside(c)
    refs = [b for b in ir.walk(c) if b.kind == "ref" and b.output not in inside]
    froms = {b.inputs[0] for b in ir.walk(c) if b.kind != "ref" and b.inputs and b.inputs[0] not in inside}
    return {b.target for b in refs if b.target is not None}, {b.output for b in refs} | froms


def _own_body(ctx: ClassContext, c: ir.Block) -> bool:
    """Whether ``c``, an entry of the model, is a named sequence whose blocks read values from
    outside it (LR-ASPP's head reads two of the backbone's): it cannot be a module of one input,
    so the model holds its entries in an ``nn.Module`` and its forward runs them."""
    if ctx.template is not None or c.kind != "seq" or not c.named or c.repeat or _off(ctx, c):
        return False
    paths, nodes = _reads_of(c)
    return bool(paths or nodes)


def _read_within(c: ir.Block, nodes, paths) -> bool:
    """Whether a value made strictly inside block ``c`` (not its own result) is read: a node of
    ``nodes`` or a block of ``paths``."""
    return any(
        (b.path in paths or b.output in nodes) and b.output != c.output and b.path != c.path
        for b in ir.walk(c)
        if b.kind not in ("ref", "skip") and b.output not in c.inputs  # (a merge may read several)
    )


def _apart(c: ir.Block, t: ir.Block) -> bool:
    """Whether ``c``, an entry of ``t``, is a merge whose branches read values of their own rather
    than its input (a rewrite put the fused convolution their slices read before it), or that
    joins ``t``'s own branches (its path is ``t``'s)."""
    if c.kind != "merge":
        return False
    return c.path == t.path or any(b.kind != "ref" and b.inputs[:1] != c.inputs[:1] for b in c.children)


def _sequential(ctx: ClassContext, b: ir.Block) -> bool:
    """Whether the named sequence ``b`` can be an ``nn.Sequential``: each entry reads the one
    before it and is a module of one input (no reference, no merge joining this class's own
    branches, no merge whose branches read other values, no parameter of the class)."""
    current = b.inputs[0] if b.inputs else None
    for c in b.children:
        if _off(ctx, c):
            current = c.passed
            continue
        if c.kind == "ref" or (c.inputs and c.inputs[0] != current) or len(c.inputs) > 1:
            return False
        if c.kind == "merge" and (
            c.path == b.path or any(x.kind == "ref" or (x.inputs and x.inputs[:1] != c.inputs[:1]) for x in c.children)
        ):
            return False
        if c.kind == "op":
            low = lowering_for(ctx, c.output)
            if low.parameter is not None or low.module is None or low.apply != "{m}({x})":
                return False
        current = c.passed
    return True


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
    #: a template class whose body is named entries, in parts (see :class:`Pieces`)
    pieces: Pieces | None = field(default=None, compare=False)


@dataclass
class Pieces:
    """A template class whose body is named entries, in the parts that one class for uses which
    switch different entries on is put together from: the ``__init__`` lines before the entries',
    the ``forward`` lines before them, and each entry's ``__init__`` and ``forward`` lines (the
    latter not indented yet), by entry name (``""``: the forward's lines before the first entry)."""

    start: list[str]
    opening: list[str]
    entries: list[tuple[str, list[str], list[str]]]
    build_order: tuple[str, ...]

    def assembled(self, entries: list[tuple[str, list[str], list[str]]]) -> tuple[list[str], list[str]]:
        """The ``__init__`` and ``forward`` of the class made of ``entries``."""
        init = _in_build_order([(n, lines) for n, lines, _ in entries], self.build_order)
        fwd = [line for _, _, lines in entries for line in lines]
        forward = self.opening + ["        " + f if f else "" for f in fwd] + ["        return x"]
        return self.start + init, forward


def _integral(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _annotation(values: list[object]) -> str:
    """The type of a parameter from its values at the uses; ``T | None`` where a use gives null."""
    if any(v is None for v in values):
        given = [v for v in values if v is not None]
        return f"{_annotation(given)} | None" if given else "None"
    kinds: list[str] = []
    for v in values:
        if isinstance(v, bool):
            k = "bool"
        elif isinstance(v, int):
            k = "int"
        elif isinstance(v, float):
            k = "float"
        elif isinstance(v, (list, tuple)):  # one value per axis: as many as there are axes
            k = f"tuple[{', '.join(_annotation([x]) for x in v)}]" if v else "tuple[()]"
        else:
            k = "tuple[int, int]"
        if k not in kinds:
            kinds.append(k)
    if kinds == ["int", "float"] or kinds == ["float", "int"]:
        return "float"
    if len(kinds) > 1 and all(isinstance(v, (list, tuple)) and v for v in values):
        items = {_annotation([x]) for v in values for x in v}
        if len(items) == 1:  # tuples of one kind of item but several lengths (one per axis)
            return f"tuple[{items.pop()}, ...]"
    return " | ".join(kinds) if kinds else "int"


#: how a comment names the axes of a shape that every use of a template shares with its input
AXIS_LETTERS = {"T": "T", "H": "H", "W": "W", "L": "L", "?": "S", "C": "C"}


#: the note of a shape whose axes, or whose channels as the class writes them, differ between the
#: uses of a template (a parameter that permutes the axes, picks the sliced axis or gives a learned
#: tensor's whole shape)
VARIES = ("...",)


def _shape_note(ctx: ClassContext, b: ir.Block, spatial: tuple[str, ...] | None = None) -> str:
    """``(N, 64, 56, 56)``, ``(N, c3x3, H, W)``, ``(N, L, in_features)``: the shape after block ``b``
    as its class computes it; ``spatial`` says how a template class shows the other axes
    (:data:`VARIES`: ``(N, ...)``)."""
    if spatial == VARIES:
        return "(N, ...)"
    t = ir.node(ctx.g, b.output).type
    sym = b.sym if b.sym is not None else t.shape
    c = t.channel_axis
    others = iter(spatial) if spatial is not None else None
    parts = ["N"]
    for i, (d, concrete) in enumerate(zip(sym, t.shape, strict=True)):
        if i == c or others is None:
            v = ctx.size(d, concrete)
            parts.append(render(v) if isinstance(v, Sym) else str(concrete))
        else:
            parts.append(next(others))
    return f"({', '.join(parts)})"


def _channels(ctx: ClassContext, b: ir.Block, sym: tuple | None, node: str | None = None) -> object:
    """The channel size of a shape of block ``b`` (its output's, or node ``node``'s) as the class
    writes it: a number, or an expression of its arguments."""
    t = ir.node(ctx.g, node or b.output).type
    if sym is None or t is None or t.channel_axis is None:
        return None
    return ctx.size(sym[t.channel_axis], t.shape[t.channel_axis])


class _Writer:
    """Builds the classes of one generated file."""

    def __init__(self, g: nx.DiGraph):
        self.g = g
        self.exposed = frozenset(ir.info(g).exposed)
        #: an inference build (nasdsl.optimize): its class takes the training model's weights
        self.inference = ir.info(g).optimized is not None
        #: classes of rewritten blocks that need a forward of their own (see _own_class)
        self.block_classes: list[ClassCode] = []
        self.own_classes: dict[str, str] = {}  # their blocks' paths -> class names
        self.helpers: set[str] = set()
        #: each template's parameters that some use gives an integer (see ClassContext.integral)
        self.integral: dict[str, set[str]] = {}
        #: each template's parameters that some use gives null (see ClassContext.nullable)
        self.nullable: dict[str, set[str]] = {}
        #: each template's entries that a parameter switches off at some uses, as a use that builds them has them
        self.built_elsewhere: dict[str, dict[str, ir.Block]] = {}
        self.init_helpers: set[str] = set()  # the init functions of the file's head the code calls
        #: (template, attribute): the loop from 1 a use writes for a repeat whose count a parameter
        #: gives, for the uses that repeat once (see _repeat_loop)
        self.loop_bodies: dict[tuple[str | None, str], Loop] = {}
        #: the nodes under each path (a template use's nodes), built once
        self.members: dict[str, list[str]] = {}
        for graph in (g, ir.info(g).dormant.graph):
            for n, data in ir.nodes(graph):
                if data.op == "external":
                    continue
                parts = n.split(".")
                for i in range(1, len(parts) + 1):
                    self.members.setdefault(".".join(parts[:i]), []).append(n)
        self._name_everything()
        self._check_attributes()
        self.replay = Replay(g, self.module_names) if self.inference else None
        #: for reset_parameters' scans of every node (see _all_nodes, _weights, _ops_built)
        self._nodes: list[tuple[nx.DiGraph, str, ir.Node]] | None = None
        self._node_weights: dict[tuple[int, str], list] = {}
        self._built: frozenset[str] | None = None
        self._orders: dict[int, list[str]] = {}

    def _name_everything(self) -> None:
        """The file's identifiers, from one module-level namespace: class names (the model's
        first, then the outputs', the templates', the merge helpers'), and per class the
        names of its constructor arguments, renamed where a spec name would shadow a
        builtin, an import or a class."""
        g = self.g
        self.module_names = Namespace(BUILTINS | IMPORTED | METHOD_LOCALS)
        model = f"{ir.info(g).name}Inference" if self.inference else ir.info(g).name
        self.model_class_name = self.module_names.create(model)
        self.outputs_class_name = self.module_names.create(f"{self.model_class_name}Outputs")
        self.classes: dict[str, str] = {}
        self.defines: set[str] = set()  # helper classes the file uses
        for name in ir.info(g).templates:
            self.classes[name] = self.module_names.create(name)
        ops = {d.op for graph in (g, ir.info(g).dormant.graph) for _, d in ir.nodes(graph)}
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
        for name, t in ir.info(g).templates.items():
            scope = Namespace({"self", "in_channels", *t.input_params}, outer=self.module_names)
            self.keywords[name] = {p.name: scope.create(p.name) for p in t.params}
        scope = Namespace(MODEL_ARGUMENTS_RESERVED, outer=self.module_names)
        self.arguments = {v: scope.create(v) for v in ir.info(g).exposed}

    def _ctx(self, template: str | None, inplace: Callable[[str], bool]) -> ClassContext:
        arguments = self.keywords[template] if template is not None else self.arguments
        ctx = ClassContext(self.g, template, self.exposed, inplace, arguments, self.classes, self.keywords)
        if template is None:
            variables = ir.info(self.g).variables
            integral = {v for v in self.exposed if _integral(variables[v])}
        else:
            integral = self.integral.get(template, set())
        ctx.integral = frozenset(arguments.get(n, n) for n in integral)
        if template is not None:
            ctx.nullable = frozenset(arguments.get(n, n) for n in self.nullable.get(template, ()))
        if self.inference:
            ctx.own_class = self._own_class
        return ctx

    def _own_class(self, ctx: ClassContext, b: ir.Block) -> Call:
        """A class of its own for a rewritten block that an ``nn.Sequential`` cannot be (it reads
        an earlier value, or joins branches after an entry a rewrite put before them), nested in
        a module expression of the model (a ResNet-50 bottleneck whose convolutions were joined,
        alone among the bottlenecks): every size folded, as the model writes it."""
        if b.path in self.own_classes:
            return Call(self.own_classes[b.path], ())
        if ctx.template is not None:
            raise CodegenError(
                f"the rewritten block {b.path} needs a class of its own inside template {ctx.template}",
                location=b.loc,
                path=b.keypath,
            )
        words = [p for p in re.split(r"[^A-Za-z0-9]+", b.path) if p]
        name = self.module_names.create(
            f"{b.template}_{'_'.join(words)}" if b.template else "".join(w[:1].upper() + w[1:] for w in words)
        )
        inner = self._ctx(None, ctx.inplace)
        init, fwd = self._statements(inner, b, lambda c: None)
        self.helpers |= inner.used_helpers
        what = f"the {b.template} block at {b.path}" if b.template else f"block {b.path}"
        head = [f"class {name}(nn.Module):"] + docstring(
            f"{what[:1].upper()}{what[1:]}, rewritten for inference: a class of its own, since it no longer "
            "reads as the other uses of its template do",
            1,
        )
        forward = layout("def ", Call("forward", ("self", "x: torch.Tensor")), 1, " -> torch.Tensor:")
        forward += ["        " + f if f else "" for f in fwd] + ["        return x"]
        start = ["    def __init__(self) -> None:", "        super().__init__()"]
        self.block_classes.append(ClassCode(name, head, start + init, [forward], inner.used_helpers))
        self.own_classes[b.path] = name
        return Call(name, ())

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
        for graph in (g, ir.info(g).dormant.graph):
            for n, d in ir.nodes(graph):
                if d.op in ("input", "external"):
                    continue
                for part in n.split("."):
                    if not part.isdigit():
                        check_attribute(part, "name", d.loc, d.keypath, flags)
        for o in ir.all_outputs(g):
            check_attribute(o.name, "output name", o.loc, o.keypath or "outputs", flags)

    # -- shared pieces -------------------------------------------------------
    def _spatial_notes(self, instances: list[ir.Block]) -> dict[str, tuple[str, ...]]:
        """Per node of a template body (path relative to the instance): how a comment shows the
        axes other than the channels, the same for every use: the axes' letters where they
        keep the input's sizes (``H, W``), the sizes where every use has the same, else the
        letters primed where some use changes that axis (``T, H', W'``: a convolution over space
        alone); :data:`VARIES` where the uses' shapes differ in their axes, or in their channels
        as the class writes them."""
        seen: dict[str, set] = {}
        layouts: dict[str, set] = {}  # per node, (rank, channel axis, channels as the class writes them)
        letters: dict[str, tuple[str, ...]] = {}
        changed: dict[str, set[int]] = {}  # per node, the axes (by position) that some use changes
        for inst in instances:
            t_in = ir.node(self.g, inst.inputs[0]).type
            for n in self.members.get(inst.path, ()):
                t = ir.node(self.g, n).type
                rel = n[len(inst.path) :]
                if t is None:
                    seen.setdefault(rel, set()).add(None)
                    continue
                sym, c = ir.node(self.g, n).sym, t.channel_axis
                layouts.setdefault(rel, set()).add((t.rank, c, sym[c] if sym is not None and c is not None else None))
                axes = [i for i in range(t.rank) if i != t.channel_axis]
                names = tuple(AXIS_LETTERS.get(t.axes[i], "S") for i in axes)
                letters.setdefault(rel, names)
                same = t_in is not None and t.axes == t_in.axes
                moved = {k for k, i in enumerate(axes) if not same or t.shape[i] != t_in.shape[i]}
                changed.setdefault(rel, set()).update(moved)
                seen.setdefault(rel, set()).add(names if not moved else tuple(str(t.shape[i]) for i in axes))
        for inst in instances:  # a node that some uses leave out (`when:`) varies with the uses
            mine = {n[len(inst.path) :] for n in self.members.get(inst.path, ())}
            for rel in seen.keys() - mine:
                seen[rel].add(None)

        def primed(rel: str) -> tuple[str, ...]:
            moved = changed.get(rel)
            names = letters.get(rel, ())
            return tuple(f"{x}'" if moved is None or k in moved else x for k, x in enumerate(names))

        one = {rel for rel, notes in seen.items() if len(notes) == 1 and None not in notes}
        varies = {rel for rel, kinds in layouts.items() if len(kinds) > 1}
        return {
            rel: VARIES if rel in varies else notes.pop() if rel in one else primed(rel) for rel, notes in seen.items()
        }

    def _statements(
        self,
        ctx: ClassContext,
        t: ir.Block,
        notes,
        after=None,
        names: Namespace | None = None,
        read_inside: frozenset[str] = frozenset(),
        owner: str = "self",
        produced: dict[str, str] | None = None,
        build_order: tuple[str, ...] = (),
        pieces: list | None = None,
    ) -> tuple[list[str], list[str]]:
        """Init and forward lines for the children of a root sequence; ``after(child)``
        gives lines to run right after a child (the model's auxiliary heads); ``names``
        holds the forward's locals (values kept for references); ``read_inside`` the paths
        of blocks nested in the children whose values outputs read; ``owner`` the module that
        holds the children (``self.classifier`` for the entries of a model entry); ``produced``
        the locals that hold values, by path and node, shared with the body that holds ``t``;
        ``build_order`` names the children whose init lines come first, in its order (a
        template's ``build_order``); ``pieces``, where given, receives each child's lines by
        name (:class:`Pieces`)."""
        names = names if names is not None else self._locals()
        init: list[str] = []
        starts: list[tuple[str, int]] = []  # each child's first init line
        fwd: list[str] = []
        targets = {c.target for c in t.children if c.kind == "ref"}
        # a merge the code leaves out (a `when:` switched off) reads nothing: keep no locals for it
        merges = [c for c in t.children if c.kind == "merge" and not _off(ctx, c)]
        targets |= {b.target for c in merges for b in c.children if b.kind == "ref"}
        # the value a ref reads, where no entry of this body that it names keeps it under its name
        # (an entry switched off passes the value on: the local is the named entry's, at every use)
        entries = {c.path for c in t.children}
        refs = [c for c in t.children if c.kind == "ref"] + [b for c in merges for b in c.children if b.kind == "ref"]
        target_nodes = {r.output for r in refs if r.target not in entries}
        # a `from:` read by the name it gives: that entry's value kept under its name (`in`: the input)
        by_name = read_by_name(t, lambda e: self._switched(ctx, e))
        for c in t.children:
            named = by_name.get(c.path, frozenset())
            targets |= {p for p in named if p is not None}
            target_nodes |= {n for n, p in zip(c.inputs, c.sources, strict=False) if p is None and p in named}
        target_nodes |= self._read_out_of_turn(ctx, t, by_name)
        for c in t.children:  # what the entries of an entry with a body of its own read
            if _own_body(ctx, c):
                paths, nodes = _reads_of(c)
                targets |= paths
                target_nodes |= nodes
        produced = produced if produced is not None else {}  # path or node -> local variable
        current = t.inputs[0]  # the node x holds
        if current in target_nodes and current not in produced:  # `ref: in` or `from: in`: read later
            local = names.create("identity")
            fwd.append(f"{local} = x")
            produced[current] = local

        def finished(c: ir.Block, wanted: bool) -> list[str]:
            """The forward's lines after child ``c``: its value kept in a local where a later line
            reads it, then what runs right after it (an output's head)."""
            lines = []
            if wanted:
                local = names.create(c.name)
                lines.append(f"{local} = x")
                produced[c.path] = local
                produced.setdefault(c.passed, local)
                produced.setdefault(c.output, local)
            return lines + (after(c) if after is not None else [])

        # values that an entry a parameter switches off passes on: at the uses where the switch is on,
        # that entry's value is what is read, so the local is named after it at every use (the
        # class must read alike whichever way the switch goes)
        handed_on = {
            c.passed: c.path
            for c in t.children
            if c.kind != "ref" and _off(ctx, c) and c.when is not None and isinstance(c.when.expr, Sym)
        }
        unsettled = None  # (node, block) of a switched entry whose channel count the next entry may not read
        written_off: dict[str, str] = {}  # output -> input of each entry written off (ctx.off): x holds its input
        fwd_starts: list[int] = []  # each child's first forward line
        for c in t.children:
            starts.append((c.name, len(init)))
            fwd_starts.append(len(fwd))
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
            wanted = c.path in targets or (c.passed in target_nodes and handed_on.get(c.passed, c.path) == c.path)
            reads_off = c.kind != "ref" and written_off.get(c.inputs[0]) == current  # reads an entry written off
            before = current
            named = by_name.get(c.path, frozenset())  # the names its `from:` is read by
            # its branches read values of their own: x is left as it is
            apart = _apart(c, t) or (c.kind == "merge" and bool(named))
            several = len(c.inputs) > 1 and c.kind != "merge"  # a use of a template with several inputs
            by_its_name = bool(c.sources) and c.sources[0] in named
            if (
                c.kind != "ref"
                and (by_its_name or (c.inputs[0] != current and not reads_off))
                and not apart
                and not several
            ):
                source = self._read(c, 0, None, produced, named)
                if source is None:
                    raise CodegenError(
                        "the PyTorch backend reads `from` only of earlier entries of the same body",
                        location=c.loc,
                        path=c.keypath,
                    )
                fwd.append(f"x = {source}")
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
                if after is not None:
                    fwd += after(c)
                continue
            if c.kind == "ref":
                name = self._referenced(ctx, c, produced)
                fwd.append(f"x = {name}")
                if after is not None:  # an output may read the reference entry
                    fwd += after(c)
                continue
            cond = self._condition(ctx, c)
            low = lowering_for(ctx, c.output) if c.kind == "op" else None
            attribute = f"{owner}.{c.name}"
            if _own_body(ctx, c):  # entries that read values outside it: written out in this forward
                if cond or c.phase != "both":
                    raise CodegenError(
                        "the PyTorch backend writes an entry whose blocks read values outside it only where "
                        "it always runs (no `when` it keeps as an argument, no `phase`)",
                        location=c.loc,
                        path=c.keypath,
                    )
                init.append(f"        {attribute} = nn.Module()")
                more, lines = self._statements(
                    ctx, c, notes, after, names, read_inside, owner=attribute, produced=produced
                )
                init += more
                fwd += lines
                fwd += finished(c, wanted)
                continue
            if c.repeat is not None and c.repeat.previous:  # a loop that keeps the values it names
                if cond or c.phase != "both":
                    raise CodegenError(
                        "the PyTorch backend writes a repeat that names its 'previous' values only where it always "
                        "runs (no `when` it keeps as an argument, no `phase`)",
                        location=c.loc,
                        path=c.keypath,
                    )
                more, lines = self._previous_loop(ctx, c, before, produced, names, owner, named)
                init += more
                fwd += lines
                held = produced.get(c.output)  # the loop's last value is a local already: no second one
                if wanted and held is not None:
                    produced[c.path] = held
                    produced.setdefault(c.passed, held)
                fwd += finished(c, wanted and held is None)
                continue
            if _read_within(c, target_nodes, targets | read_inside):  # run its children one by one
                if cond or c.phase != "both" or c.kind != "seq":
                    what = f": template {c.template}'s class returns its result alone" if c.kind == "use" else ""
                    raise CodegenError(
                        "the PyTorch backend reads a value inside an entry only where the entry is a sequence "
                        f"that always runs (no `when` it keeps as an argument, no `phase`){what}",
                        location=c.loc,
                        path=c.keypath,
                    )
                loop = self._repeat_loop(ctx, c, owner) if c.repeat else None
                init += loop if loop is not None else layout(f"{owner}.{c.name} = ", _module_expr(ctx, c), 2)
                read = targets | read_inside
                fwd += self._opened(ctx, c, f"{owner}.{c.name}", target_nodes, read, produced, names, after)
                fwd += finished(c, wanted)
                continue
            if low is not None and low.parameter is not None:  # a parameter of this class (layer_scale)
                make, apply = low.parameter(ctx, c.output)
                call, value = None, apply.format(f"{owner}.{c.name}")
                init += layout_or_none(f"{attribute} = ", make, cond, 2) if cond else layout(f"{attribute} = ", make, 2)
            elif c.kind == "merge" and c.path == t.path:  # this class's own branches, after entries put before
                more, lines, outs = self._own_branches(ctx, c, before, produced, notes, names)
                init += more
                fwd += lines
                call, value = None, _joined(ctx, c, outs)
            elif c.kind == "merge" and (
                apart or any(b.kind == "ref" for b in c.children) or ir.node(self.g, c.output).given
            ):
                x_holds = before if apart else c.inputs[0]
                call, value = self._merge_with_refs(ctx, c, x_holds, produced, owner, named)
            elif low is not None:
                check_lowering(ctx, c.output, low)
                call = low.module(ctx, c.output)
                value = low.apply.format(m=f"{owner}.{c.name}", x="x")
            elif c.kind == "use" and c.entries:
                call = _template_call(ctx, c)
                reads = (self._read(c, k, before, produced, named) for k in range(len(c.inputs)))
                value = Call(f"{owner}.{c.name}", tuple(reads))
            else:
                call = _module_expr(ctx, c)
                value = f"{owner}.{c.name}(x)"
            loop = self._repeat_loop(ctx, c, owner) if c.kind == "seq" and c.repeat and not cond else None
            if loop is not None:
                init += loop
            elif call is not None:
                init += layout_or_none(f"{attribute} = ", call, cond, 2) if cond else layout(f"{attribute} = ", call, 2)
            # a switched merge of references alone has no module: the class keeps the switch itself
            flag = bool(cond) and call is None and not (low is not None and low.parameter is not None)
            if flag:
                init += layout(f"{owner}.{c.name} = ", cond, 2)
            note = _shape_note(ctx, c, notes(c) if ctx.template else None)
            guard = []
            if cond:
                guard.append(f"{owner}.{c.name}" if flag else f"{owner}.{c.name} is not None")
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
            if cond and _channels(ctx, c, c.sym) != _channels(ctx, c, c.in_sym, c.inputs[0]):
                unsettled = (c.passed, c)
            fwd += finished(c, wanted)
        ends = [start for _, start in starts[1:]] + [len(init)]
        chunks = [(name, init[start:end]) for (name, start), end in zip(starts, ends, strict=True)]
        if pieces is not None:  # each entry's lines, and the forward's before the first entry's
            fwd_ends = [start for start in fwd_starts[1:]] + [len(fwd)]
            pieces.append(("", [], fwd[: fwd_starts[0] if fwd_starts else len(fwd)]))
            pieces += [
                (name, lines, fwd[start:end])
                for (name, lines), start, end in zip(chunks, fwd_starts, fwd_ends, strict=True)
            ]
        return _in_build_order(chunks, build_order), fwd

    def _opened(self, ctx: ClassContext, c: ir.Block, owner: str, nodes, paths, produced, names, after) -> list[str]:
        """Forward lines that run the children of sequence ``c`` (the module ``owner``) one by
        one, ``x = self.backbone.layer3(x)``, keeping the values that later lines read (an
        output or a `from:` of a block nested in ``c``) in locals; a child that holds such a
        block is opened in turn."""
        fwd: list[str] = []
        current = c.inputs[0]
        run: list[int] = []  # positions of a list's items that run in a row

        def flush() -> None:
            # each layer of the run a line of its own, called as itself: a slice called whole is a module
            # of its own, made at each call (no submodule of the model, so torch.fx cannot trace it and
            # hooks miss it), and TorchScript cannot call the layers of a loop over a slice
            for position in run:
                note = _shape_note(ctx, c.children[position])
                fwd.extend(s[8:] for s in layout("x = ", f"{owner}[{position}](x)", 2, comment=note))
            run.clear()

        for position, ch in enumerate(c.children):
            if bypassed(ch) or ch.path in ctx.off:  # a rewrite took it out: it passes its input on
                flush()
                current = ch.passed
                continue
            if ch.kind in ("ref", "skip") or _off(ctx, ch) or ch.when is not None or ch.phase != "both":
                raise CodegenError(
                    f"the PyTorch backend reads a value inside '{c.path}' only where its blocks always run, one "
                    "after the other (no `ref`, `when` or `phase` among them)",
                    location=ch.loc,
                    path=ch.keypath,
                )
            if ch.inputs[0] != current:
                raise CodegenError(
                    f"the PyTorch backend reads a value inside '{c.path}' only where its blocks run one after the "
                    "other (no `from:` among them)",
                    location=ch.loc,
                    path=ch.keypath,
                )
            named = c.named and ch.name.isidentifier() and not keyword.iskeyword(ch.name)
            access = f"{owner}.{ch.name}" if named else f"{owner}[{position}]"
            if not c.named and not _read_within(ch, nodes, paths):
                run.append(position)
            else:
                flush()
            if run:
                pass  # written with the run
            elif _read_within(ch, nodes, paths):
                if ch.kind != "seq":
                    what = f"template {ch.template}'s class" if ch.kind == "use" else "its module"
                    raise CodegenError(
                        f"the PyTorch backend reads values inside '{ch.path}' only through sequences: {what} returns "
                        "its result alone; read the value from a sequence (or the block's own output)",
                        location=ch.loc,
                        path=ch.keypath,
                    )
                fwd += self._opened(ctx, ch, access, nodes, paths, produced, names, after)
            else:
                fwd += [s[8:] for s in layout("x = ", f"{access}(x)", 2, comment=_shape_note(ctx, ch))]
            current = ch.passed
            kept = ch.path in paths or ch.output in nodes
            extra = after(ch) if after is not None else []  # an output reading ch: its lines
            if kept or extra:
                flush()
            if kept:
                local = names.create(ch.name if ch.name.isidentifier() else f"{c.name}_{ch.name}")
                fwd.append(f"{local} = x")
                produced[ch.path] = local
                produced.setdefault(ch.output, local)
            fwd += extra
        flush()
        return fwd

    def _repeat_loop(
        self, ctx: ClassContext, c: ir.Block, owner: str = "self", allow_several: bool = False
    ) -> list[str] | None:
        """A repeated entry built by a loop (see ``pyloops``), or None to list its blocks."""
        calls = [
            _template_call(ctx, child) if allow_several and child.entries else _module_expr(ctx, child)
            for child in c.children
        ]
        taken = {*ctx.arguments.values(), "in_channels", "in_features", "self"}
        index = next(n for n in ("i", "j", "k", *(f"i{k}" for k in range(len(taken) + 1))) if n not in taken)
        attribute = f"{owner}.{c.name}".removeprefix("self.") if owner else ""  # "": the class itself
        count = None  # the count as the class's argument gives it (a template's `repeat: num_layers`)
        if c.repeat is not None and isinstance(c.repeat.count_expr, Sym):
            with contextlib.suppress(CodegenError):
                written = ctx.value(c.repeat.count_expr, None)
                count = written.render() if written is not None else None
        names = [ch.name for ch in c.children] if c.named else None
        key = (ctx.template, attribute)
        loop = find_loop(calls, names, index, count)
        if count is not None and len(calls) == 1 and key in self.loop_bodies:
            # a use that repeats once shows no block after the first: the loop another use of the
            # class writes from 1 builds none here, and the class reads the same at every count
            loop = self.loop_bodies[key]
        elif count is not None and loop is not None and loop.start == 1 and ctx.template is not None:
            self.loop_bodies.setdefault(key, loop)
        return loop_lines(attribute, calls, names, index, 2, count=count, loop=loop)

    def _previous_loop(
        self, ctx: ClassContext, c: ir.Block, current: str, produced: dict[str, str], names, owner, named=frozenset()
    ):
        """A repeat that names its ``previous`` values: its blocks in a container, and a loop that
        hands the values on (``s0, s1 = s1, cell(s0, s1)``); after it, the locals hold the last
        repetitions' outputs, which later entries may read (``stage.s0``). Its first values are read
        by the names its ``from:`` gives where they are ``named`` (see :meth:`_read`)."""
        previous = c.repeat.previous
        k = len(previous)
        given = range(k) if len(c.inputs) == k else [0] * k  # the input each value starts as
        seeds = [c.inputs[j] for j in given]
        values = list(seeds)
        positions: list[set[int]] | None = None  # for each argument of the block, the previous values it can be
        for ch in c.children:
            if ch.kind != "use" or ch.when is not None or ch.phase != "both":
                raise CodegenError(
                    "the PyTorch backend writes a repeat that names its 'previous' values where its block is one "
                    "template use that always runs",
                    location=ch.loc,
                    path=ch.keypath,
                )
            found = [{j for j, v in enumerate(values) if v == n} for n in ch.inputs]
            if positions is None:
                positions = found
            elif len(found) == len(positions):
                positions = [a & b for a, b in zip(positions, found, strict=True)]
            else:
                positions = []
            values = [*values[1:], ch.passed]
        if not positions or not all(positions):
            raise CodegenError(
                "the PyTorch backend writes a repeat that names its 'previous' values where every repetition "
                "reads the same of them in the same order",
                location=c.loc,
                path=c.keypath,
            )
        loop = self._repeat_loop(ctx, c, owner, allow_several=True)
        init = loop if loop is not None else layout(f"{owner}.{c.name} = ", Call("nn.ModuleList", (
            Call("", tuple(_template_call(ctx, ch) for ch in c.children), "[", "]"),)), 2)  # fmt: skip
        locals_ = [names.create(p) for p in previous]
        block = names.create("block")
        fwd = [f"{', '.join(locals_)} = {', '.join(self._read(c, j, current, produced, named) for j in given)}"]
        args = ", ".join(locals_[min(p)] for p in positions)
        fwd.append(f"for {block} in {owner}.{c.name}:")
        fwd += [
            "    " + s[8:]
            for s in layout(
                f"{', '.join(locals_)} = ",
                f"{', '.join(locals_[1:])}, {block}({args})",
                2,
                comment=_shape_note(ctx, c.children[-1]),
            )
        ]
        fwd.append(f"x = {locals_[-1]}")
        for local, node in zip(locals_, values, strict=True):
            produced.setdefault(node, local)
        for p, local in zip(previous, locals_, strict=True):
            produced[f"{c.path}.{p}"] = local
        return init, fwd

    def _read_out_of_turn(self, ctx: ClassContext, t: ir.Block, by_name: dict) -> set[str]:
        """The nodes that children of ``t`` read through ``from:`` rather than in sequence (but
        those read by the name the ``from:`` gives, ``by_name``: :func:`read_by_name`)."""
        found: set[str] = set()
        current = t.inputs[0]

        def by_value(b: ir.Block, k: int, named: frozenset) -> bool:
            return not (b.sources and b.sources[k] in named)

        for c in t.children:
            named = by_name.get(c.path, frozenset())
            if _apart(c, t) or (c.kind == "merge" and named):  # branches that read values of their own
                found |= {
                    b.inputs[0]
                    for b in c.children
                    if b.kind != "ref" and b.inputs and b.inputs[0] != current and by_value(b, 0, named)
                }
            elif c.kind != "ref" and len(c.inputs) > 1:  # several inputs: each read by name
                found |= {n for k, n in enumerate(c.inputs) if n != current and by_value(c, k, named)}
            elif c.kind != "ref" and c.inputs[0] != current and by_value(c, 0, named):
                found.add(c.inputs[0])
            current = c.passed
        return found

    def _switched(self, ctx: ClassContext, b: ir.Block) -> bool:
        """Whether the class builds block ``b`` under a condition it takes as an argument: a
        template's parameter (whether on or off at this use), or a switch the model exposes."""
        w = b.when
        if w is None or not isinstance(w.expr, Sym):
            return False
        return ctx.template is not None or w.switch in self.exposed

    def _read(self, b: ir.Block, k: int, current: str | None, produced: dict[str, str], named) -> str | None:
        """The local holding input ``k`` of block ``b`` where ``x`` holds ``current``: by the name
        its ``from:`` gives where that is one of ``named`` (the value kept under it; ``in``, the
        body's input, is the node it names at every use), else by the node it is here; None where
        ``current`` is None and no local holds it."""
        if b.sources and b.sources[k] in named:
            found = produced.get(b.inputs[k] if b.sources[k] is None else b.sources[k])
            if found is not None:
                return found
        if current is None:
            return produced.get(b.inputs[k])
        return self._value_of(b.inputs[k], current, produced)

    def _referenced(self, ctx: ClassContext, ref: ir.Block, produced: dict[str, str]) -> str:
        """The local variable holding a referenced entry's value."""
        name = (produced.get(ref.target) if ref.target is not None else None) or produced.get(ref.output)
        if name is None:
            raise CodegenError(
                "the PyTorch backend supports references only to earlier top-level entries",
                location=ref.loc,
                path=ref.keypath,
            )
        return name

    def _merge_with_refs(
        self,
        ctx: ClassContext,
        c: ir.Block,
        current: str,
        produced: dict[str, str],
        owner: str = "self",
        named: frozenset = frozenset(),
    ):
        """A merge whose branches include references to earlier entries (or that has attributes):
        its other branches live in an ``nn.ModuleDict`` named after the merge, and the forward
        line joins them with the referenced values; a branch reads a value its ``from:`` gives
        by that name where it is one of ``named`` (see :meth:`_read`)."""
        modules, terms = [], []
        for b in c.children:
            if b.kind == "ref":
                terms.append(self._referenced(ctx, b, produced))
            elif _absent(ctx, b):
                continue  # a branch switched off is absent from the merge
            elif _off(ctx, b):
                terms.append(self._read(b, 0, current, produced, named))  # taken out: its input
            else:
                call = _module_expr(ctx, b)
                modules.append(Call(f'"{b.name}": {call.func}', call.args, call.open, call.close))
                terms.append(f'{owner}.{c.name}["{b.name}"]({self._read(b, 0, current, produced, named)})')
        container = Call("nn.ModuleDict", (Call("", tuple(modules), "{", "}"),)) if modules else None
        return container, _joined(ctx, c, terms)

    def _value_of(self, n: str, current: str, produced: dict[str, str]) -> str:
        """The local holding node ``n`` at a point where ``x`` holds ``current``."""
        if n == current:
            return "x"
        found = produced.get(n)
        if found is None:  # pragma: no cover - _read_out_of_turn keeps every value read later
            raise CodegenError(f"the PyTorch backend kept no value for node {n}")
        return found

    def _own_branches(self, ctx: ClassContext, c: ir.Block, current: str, produced: dict[str, str], notes, names):
        """A merge that joins this class's own branches (its path is the class's: a rewrite put
        entries before it): each branch is an attribute, run on the value it reads."""
        init, fwd, outs = [], [], []
        for b in c.children:
            if b.kind == "ref":
                outs.append(self._referenced(ctx, b, produced))
                continue
            if _absent(ctx, b):
                continue
            source = self._value_of(b.inputs[0], current, produced)
            if _off(ctx, b):
                outs.append(source)
                continue
            init += layout(f"self.{b.name} = ", _module_expr(ctx, b), 2)
            local = names.create(b.name)
            note = _shape_note(ctx, b, notes(b) if ctx.template else None)
            fwd += layout(f"{local} = ", f"self.{b.name}({source})", 2, comment=note)
            outs.append(local)
        return init, [line[8:] for line in fwd], outs

    def _condition(self, ctx: ClassContext, c: ir.Block) -> str:
        """The guard of a block the class builds only when an argument says so."""
        w = c.when
        if w is None or not isinstance(w.expr, Sym):
            return ""
        if ctx.template is None and w.switch not in self.exposed:
            return ""
        return ctx.value(w.expr, None).render()

    # -- templates -----------------------------------------------------------
    def template_class(self, name: str, instances: list[ir.Block]) -> ClassCode:
        kinds = self._use_kinds(instances)
        alike: dict[int, ir.Block] = {}  # a use of each kind (uses of one kind have one code)
        for kind, inst in zip(kinds, instances, strict=True):
            alike.setdefault(kind, inst)
        spatial = self._spatial_notes(list(alike.values()))
        inplace: dict[str, bool] = {}
        for inst in alike.values():  # a node's inplace is part of its use's kind
            for n in self.members.get(inst.path, ()):
                data = ir.node(self.g, n)
                if data.inplace is not None:
                    rel = n[len(inst.path) :]
                    inplace[rel] = inplace.get(rel, True) and data.inplace
        tmpl = ir.info(self.g).templates[name]
        annotations = {p.name: _annotation([i.arg(p.name).value for i in instances]) for p in tmpl.params}
        self.integral[name] = {p.name for p in tmpl.params if any(_integral(i.arg(p.name).value) for i in instances)}
        self.nullable[name] = {p.name for p in tmpl.params if any(i.arg(p.name).value is None for i in instances)}
        _refuse_null_for_computed_defaults(tmpl, instances)
        documented = min(instances, key=lambda i: len(_gated(i)))  # the use that builds the most
        self.built_elsewhere[name] = {
            c.name: c
            for inst in instances
            if inst.children[0].kind == "seq" and inst.children[0].named
            for c in inst.children[0].children
            if c.name in _switched_off(documented) and c.kind != "skip"
        }
        hinted = {key for key in self.loop_bodies if key[0] == name}

        def written(helpers: bool) -> dict[str, tuple[ClassCode, ir.Block]]:
            """Each distinct code of the uses, with the first use that has it."""
            texts: dict[str, tuple[ClassCode, ir.Block]] = {}
            done: set[tuple[int, int]] = set()  # a kind written with as many loops known is that code again
            for kind, inst in zip(kinds, instances, strict=True):
                if (kind, len(self.loop_bodies)) not in done:
                    done.add((kind, len(self.loop_bodies)))
                    code = self._template_class_for(name, inst, annotations, spatial, inplace, frozenset(), documented)
                    if helpers:
                        self.helpers |= code.helpers
                    texts.setdefault(_text(code), (code, inst))
            return texts

        texts = written(helpers=True)
        if len(texts) > 1 and {key for key in self.loop_bodies if key[0] == name} != hinted:
            texts = written(helpers=False)  # a later use wrote a loop that the uses repeating once can now write too
        if len(texts) > 1:
            agreed = self._gated_agreement(name, list(texts.values()), annotations, spatial, inplace)
            if agreed is not None:
                return agreed
            agreed, differing = None, None
            if len({_gated(inst) for _, inst in texts.values()}) > 1:  # they switch different entries on
                agreed, differing = _switched_agreement(list(texts.values()))
            if agreed is not None:
                return agreed
            (text_a, (_, a)), (text_b, (_, b)) = list(texts.items())[:2]
            entry = ""
            if differing is not None:  # the entry whose code differs between two uses that build it
                entry, (text_a, a), (text_b, b) = differing
                entry = f" (its entry '{entry}')" if entry else " (before its entries)"
            where_a = a.path or "the top"
            cause = self._attribute_difference(a, b, where_a)
            advice = "use one template per variant, or make what differs a parameter"
            if cause:
                advice = "pass the value itself as an argument, or use one template per variant"
            elif (branch := _switched_branch(a, b)) is not None:
                merge, name_ = branch
                cause = (
                    f"the branch '{name_}' of {merge} is built at one use and not at the other, and "
                    "a class writes a merge of the branches every use builds: "
                )
                advice = (
                    "write the branches as entries of a named body that the merge reads by `ref` (an entry "
                    "a parameter switches off passes its input on: `from: in` with `when:`), or use one "
                    "template per variant"
                )
            elif (switch := _folded_switch(a, b)) is not None:
                cause = (
                    f"'{switch}' is switched by a condition the class cannot take as an argument (an "
                    f"expression, not one parameter), {'on' if _when_at(a, switch) else 'off'} at {where_a} and "
                    f"{'on' if _when_at(b, switch) else 'off'} at {b.path}: "
                )
                advice = f"give '{switch}' a parameter of its own as its `when`, or use one template per variant"
            raise CodegenError(
                f"template {name} needs different code at {where_a} and {b.path}{entry}: {cause}"
                f"{_first_difference(text_a, text_b, where_a, b.path)}; {advice}",
                location=b.loc,
                path=b.keypath,
            )
        return next(iter(texts.values()))[0]

    def _use_kinds(self, instances: list[ir.Block]) -> list[int]:
        """Per use of a template, a number that says which uses are alike: the same :meth:`_use_key`
        (a use without one is a kind of its own). Uses of one kind are written the same code, so
        that a template used 20,000 times is written once per kind, not 20,000 times."""
        numbers: dict[object, int] = {}
        kinds: list[int] = []
        last = None  # the previous use's key: a run of alike uses is found without hashing
        for inst in instances:
            key = self._use_key(inst)
            if key is not None and key == last:
                kinds.append(kinds[-1])
                continue
            try:
                kind = numbers.setdefault(key, len(numbers)) if key is not None else None
            except TypeError:  # a value the IR holds as a list (a pad's widths)
                kind = None
            kinds.append(kind if kind is not None else -1 - len(kinds))
            last = key
        return kinds

    def _use_key(self, inst: ir.Block) -> tuple | None:
        """Everything the code of template use ``inst`` is written from, with the use's path and
        its inputs' names replaced by markers (:func:`_relative`): the use's block tree (but
        the use's own name, ``loc`` and ``keypath``, which name where it is), the records of
        its nodes (but ``instance``, the use's path), the names and types of their inputs, and
        the types of the use's inputs. Two uses with one key are the same code at two places
        (with the same loops known, see _repeat_loop): nothing the writer writes into a class
        names where the use is. None for an inference build, whose rewritten blocks get classes of
        their own per path (see _own_class)."""
        if self.inference:
            return None
        base = inst.path
        rel = _relative(base, {name: ("\x02", k) for k, name in enumerate(inst.inputs)})
        nodes = []
        for n in self.members.get(base, ()):
            data = ir.node(self.g, n)
            sources = ir.inputs(ir.graph_of(self.g, n), n)
            nodes.append((
                rel(n),
                repr(data.attrs),  # 1, 1.0 and True are equal but written differently
                _NODE_FIELDS(data),
                rel(data.instance),
                tuple((rel(s), ir.node(self.g, s).type) for s in sources),
            ))  # fmt: skip
        types = tuple(ir.node(self.g, n).type for n in inst.inputs)
        return _block_key(inst, base, rel), tuple(nodes), types

    def _attribute_difference(self, a: ir.Block, b: ir.Block, where_a: str) -> str:
        """Why two uses of a template need different code, where a setting is the cause: the first
        op attribute of the body, or argument of a template use in it, whose values differ between
        the uses and that the class cannot write from its arguments (an expression of them beyond
        +, -, *, //, min and max with integers), as ``"{entry}'s {key} is ... at a and ... at b,
        ...: "``; else ``""``."""
        found = []
        for n in self.members.get(a.path, ()):
            other = b.path + n[len(a.path) :]
            if other in self.g:
                x, y = ir.node(self.g, n), ir.node(self.g, other)
                found += [
                    (n, key, x.attrs[key], y.attrs.get(key))
                    for key in x.given
                    if key in y.given and key not in x.exprs and x.attrs[key] != y.attrs.get(key)
                ]
        theirs = {c.path[len(b.path) :]: c for c in _own_blocks(b)}
        for c in _own_blocks(a):
            twin = theirs.get(c.path[len(a.path) :])
            if c.kind == "use" and twin is not None and twin.kind == "use":
                values = {arg.name: arg.value for arg in twin.args}
                found += [
                    (c.path, f"argument {arg.name}", arg.value, values.get(arg.name))
                    for arg in c.args
                    if arg.expr is None and arg.name in values and arg.value != values[arg.name]
                ]
        if not found:
            return ""
        path, key, mine, other = found[0]
        entry = path[len(a.path) :].lstrip(".") or "its body"
        return (
            f"{entry}'s {key} is {describe(mine)} at {where_a} and {describe(other)} at {b.path}, from an "
            "expression the class cannot write from its arguments (only +, -, *, //, min and max of them "
            "and integers): "
        )

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
        tmpl = ir.info(self.g).templates[name]
        ctx = self._ctx(name, lambda node: inplace.get(node[len(inst.path) :], False))
        ctx.off = off
        keywords = self.keywords[name]
        class_name = self.classes[name]
        body = inst.children[0]

        def notes(c: ir.Block) -> tuple[str, ...]:
            return spatial.get(c.output[len(inst.path) :], ())

        params = ["self", *(f"{p}: int" for p in tmpl.input_params or (tmpl.input_param,))]
        fixups: list[str] = []
        keyword_only = _keyword_only(tmpl)
        for k, p in enumerate(tmpl.params):
            if k == keyword_only:
                params.append("*")
            ann = annotations[p.name]
            own = keywords[p.name]
            if not _has_default(p):
                params.append(f"{own}: {ann}")
            elif p.default is not None:
                params.append(f"{own}: {ann} = {render(p.default)}")
            elif p.null_default:  # `None | None` where every use gives null: a TypeError when the class is made
                given = ann.removesuffix(" | None")
                params.append(f"{own}: {given} | None = None" if given != "None" else f"{own}: None = None")
            else:
                params.append(f"{own}: {ann} | None = None")
                fixups += [f"if {own} is None:", f"    {own} = {render(ctx.value(p.default_expr, None))}"]
        head = [f"class {class_name}(nn.Module):"] + docstring(tmpl.doc or "", 1, f"The {name} block of the spec.")
        sig = layout("def ", Call("__init__", tuple(params)), 1, " -> None:")
        sig += docstring_with_args(f"Build the {name} block", self._template_arg_docs(tmpl, documented or inst), 2)
        fix = ["        " + f for f in fixups]
        if tmpl.inputs:  # forward(self, s0, s1): each input a local its entries read by name
            if not (body.kind == "seq" and body.named and not _off(ctx, body)):
                raise CodegenError(
                    f"template {name} reads several inputs: the PyTorch backend writes its body where it is "
                    "named entries",
                    location=tmpl.loc,
                    path=f"templates.{name}",
                )
            names = self._locals()
            locals_ = [names.create(n) for n in tmpl.inputs]
            produced = {f"{inst.path}.{n}": local for n, local in zip(tmpl.inputs, locals_, strict=True)}
            entries: list = []
            self._statements(
                ctx, body, notes, names=names, produced=produced, build_order=tmpl.build_order, pieces=entries
            )
            arguments = ("self", *(f"{n}: torch.Tensor" for n in locals_))
            opening = layout("def ", Call("forward", arguments), 1, " -> torch.Tensor:") + [f"        x = {locals_[0]}"]
            pieces = Pieces([*sig, "        super().__init__()", *fix], opening, entries, tmpl.build_order)
            init, forward = pieces.assembled(entries)
            return ClassCode(class_name, head, init, [forward], ctx.used_helpers, pieces)
        if body.kind == "seq" and body.repeat is not None and isinstance(body.repeat.count_expr, Sym):
            # a body that is a repeat whose count a parameter gives: an nn.Sequential built by a loop
            # to that argument, so that one class serves every count (`repeat: depth`), its blocks named as the
            # repeat's `name:` says where it says
            loop = self._repeat_loop(ctx, body, "")
            if loop is not None and not fixups and not _off(ctx, body):
                head[0] = f"class {class_name}(nn.Sequential):"
                return ClassCode(class_name, head, sig + loop, [], ctx.used_helpers)
        if body.kind == "seq" and body.named and not _off(ctx, body):
            entries = []
            self._statements(ctx, body, notes, build_order=tmpl.build_order, pieces=entries)
            opening = layout("def ", Call("forward", ("self", "x: torch.Tensor")), 1, " -> torch.Tensor:")
            pieces = Pieces([*sig, "        super().__init__()", *fix], opening, entries, tmpl.build_order)
            init, forward = pieces.assembled(entries)
            return ClassCode(class_name, head, init, [forward], ctx.used_helpers, pieces)
        if body.kind == "merge" and body.named and not _off(ctx, body):
            init, fwd = [], []
            outs = []
            names = self._locals()
            for c in body.children:
                if _absent(ctx, c):  # a branch switched off is absent from the merge
                    continue
                if _off(ctx, c):  # a branch a rewrite took out: its input
                    outs.append("x")
                    continue
                call = _module_expr(ctx, c)
                init += layout(f"self.{c.name} = ", call, 2)
                note = _shape_note(ctx, c, notes(c))
                local = names.create(c.name)
                fwd += layout(f"{local} = ", f"self.{c.name}(x)", 2, comment=note)
                outs.append(local)
            note = _shape_note(ctx, body, notes(body))
            fwd += layout("return ", _joined(ctx, body, outs), 2, comment=note)
            forward = layout("def ", Call("forward", ("self", "x: torch.Tensor")), 1, " -> torch.Tensor:") + fwd
            start = [*sig, "        super().__init__()", *fix]
            return ClassCode(class_name, head, start + init, [forward], ctx.used_helpers)
        if body.kind == "seq" and not body.named and not _off(ctx, body) and _resized_after(body):
            return self._sequential_then(ctx, class_name, head, sig, fixups, body, notes, tmpl.loc, name)
        # A single module, an unnamed sequence or unnamed branches: subclass it.
        call = _module_expr(ctx, body)
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

    def _sequential_then(self, ctx, class_name, head, sig, fixups, body, notes, loc, name) -> ClassCode:
        """A list body whose last items are merges of the list's value so far (``identity``) and the
        body's input (``{ref: in}``), such as torchvision's ASPPPooling (pool, convolution,
        BatchNorm, ReLU, then resized to the input's size): an ``nn.Sequential`` of the other
        items, whose ``forward`` runs them and then computes the merges."""
        k = next(i for i, c in enumerate(body.children) if c.kind == "merge" and _reads_input(c))
        items, tail = body.children[:k], body.children[k:]
        if not items or fixups or not all(c.kind == "merge" and _reads_input(c) for c in tail):
            raise CodegenError(
                f"template {name}: a list body joins its input (`ref: in`) only in merges after all its other "
                "items, which are modules (write the body as named entries otherwise)",
                location=loc,
                path=f"templates.{name}",
            )
        calls = tuple(_module_expr(ctx, c) for c in items)
        head[0] = f"class {class_name}(nn.Sequential):"
        init = layout("super().__init__", Call("", calls), 2)
        fwd = ["        identity = x"]
        fwd.append("        for layer in self:")  # as nn.Sequential runs them: TorchScript has no super()
        fwd += layout("x = ", "layer(x)", 3, comment=_shape_note(ctx, items[-1], notes(items[-1])))
        for c in tail:
            terms = ["identity" if b.kind == "ref" else "x" for b in c.children if not _absent(ctx, b) or bypassed(b)]
            fwd += layout("x = ", _joined(ctx, c, terms), 2, comment=_shape_note(ctx, c, notes(c)))
        forward = layout("def ", Call("forward", ("self", "x: torch.Tensor")), 1, " -> torch.Tensor:")
        forward += [*fwd, "        return x"]
        return ClassCode(class_name, head, sig + init, [forward], ctx.used_helpers)

    # -- the model -----------------------------------------------------------
    def model_class(self) -> tuple[ClassCode, ClassCode | None]:
        g = self.g
        name = self.model_class_name
        outputs_name = self.outputs_class_name
        variables = ir.info(g).variables
        ctx = self._ctx(None, lambda node: bool(ir.node(g, node).inplace))
        names = self._locals()
        model = ir.info(g).model
        outputs = [o for o in ir.all_outputs(g) if o.when is None or variables[o.when] or o.when in self.exposed]
        inp = ir.node(g, ir.info(g).input).attrs

        # the main output is what forward's x holds at the end, unless it reads an earlier entry or has a head
        main = outputs[0]
        tap_main = main.head is not None or not model.children or model.children[-1].path != main.source
        taps: dict[str, list[ir.Output]] = {}
        inside: set[str] = set()  # outputs that read a block nested in an entry: it runs child by child
        for o in outputs if tap_main else outputs[1:]:
            entry = next((c.path for c in model.children if c.path == o.source), None)
            if entry is None:  # a path inside an entry that ends where the entry does
                src_node = o.head.inputs[0] if o.head is not None else o.node
                found = [c.path for c in model.children if c.kind not in ("ref", "skip") and c.passed == src_node]
                entry = found[-1] if found else None
            if entry is None:  # a block nested in an entry
                entry = o.source
                inside.add(entry)
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
                call = _module_expr(ctx, o.head)
                if cond:
                    head_init.extend(layout_or_none(f"self.{o.name} = ", call, self.arguments[cond], 2))
                else:
                    head_init.extend(layout(f"self.{o.name} = ", call, 2))
                if cond:
                    guards.append(f"self.{o.name} is not None")
                if o.training_only:
                    guards.append("self.training")
                note = _shape_note(ctx, o.head)
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

        init, fwd = self._statements(ctx, model, lambda c: None, after, names, frozenset(inside))
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
        for v in ir.info(g).exposed:
            val = variables[v]
            params.append(f"{self.arguments[v]}: {_annotation([val])} = {literal(val)}")
        head = [f"class {name}(nn.Module):"] + docstring_with_args(
            safe_text(ir.info(g).doc or "") or f"The {name} model", [], 1, paragraphs=[self._input_doc()]
        )
        extras = outputs[1:]
        by_name = ir.info(g).outputs_by_name  # the NamedTuple even of one output (torchvision's segmentation)
        outputs_class = None
        weights = Call("", tuple(f'"{o.name}": {literal(o.loss_weight)}' for o in outputs), "{", "}")
        sig = layout("def ", Call("__init__", tuple(params)), 1, " -> None:")
        sig += docstring_with_args(
            "Build the model with the spec's layers",
            [(self.arguments[v], self._variable_doc(v)) for v in ir.info(g).exposed],
            2,
            paragraphs=[] if ir.info(g).exposed else ["Every variable of the spec is folded into the code"],
        )
        body = ["        super().__init__()"]
        if not self.inference:
            body += layout("self.loss_weights = ", weights, 2)
        body += [f"        self.{self.arguments[f]} = {self.arguments[f]}" for f in exposed_flags]
        statistics = {f"input_{k}": inp[k] for k in ("mean", "std") if inp[k] is not None}
        resets, applied = ([], []) if self.inference else self._reset(statistics)
        body += pre_init + init + head_init + applied
        ret_type = "torch.Tensor"
        fwd_lines = [*pre, *fwd]
        final = local[main.name] if tap_main else "x"
        if extras or by_name:
            in_training = bool(extras) and all(o.training_only for o in extras) and not self.inference and not by_name
            outputs_class = self._outputs_class(outputs, in_training)
            ret_type = f"{outputs_name} | torch.Tensor"
            fields = ", ".join([final, *(local[o.name] for o in extras)])
            if in_training:
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
        if self.inference:
            return ClassCode(name, head, sig + body, [forward, self.replay.method(name)]), outputs_class
        methods = [forward, self._loss(outputs, extras, by_name), *resets]
        return ClassCode(name, head, sig + body, methods), outputs_class

    def _input_doc(self) -> str:
        """What the model expects: the input's shape, what the spec says it holds, and the
        normalisation the model applies itself."""
        g = self.g
        attrs = ir.node(g, ir.info(g).input).attrs
        text = f"Input: a batch of shape (N, {', '.join(map(str, attrs['shape']))})"
        if ir.info(g).input_doc:
            text += f", {ir.info(g).input_doc.rstrip('.')}"
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
        value = ir.info(g).variables[v]
        switched = [o.name for o in ir.all_outputs(g) if o.when == v]
        for root in ir.roots(g):
            switched += [b.path for b in ir.walk(root) if b.when is not None and b.when.switch == v and b.path]
        uses = []
        for graph in (g, ir.info(g).dormant.graph):
            for n, data in ir.nodes(graph):
                uses += [f"{attr} of {n}" for attr, deps in data.deps.items() if v in deps]
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
        stack = [(prefix, b) for b in reversed(inst.children)]
        lent = self.built_elsewhere.get(tmpl.name, {})
        while stack:
            prefix, b = stack.pop()
            if b.kind == "skip" and b.name in lent and b.path == f"{inst.path}.{b.name}":
                # an entry this use leaves out that another builds (a choice between switched entries)
                b = lent[b.name]
                prefix = b.path[: -len(b.name)]
            rel = b.path[len(prefix) :] if b.path.startswith(prefix) else b.name
            if b.when is not None and isinstance(b.when.expr, Sym):
                for name in b.when.expr.names & uses.keys():
                    if b.kind == "skip":  # off at the documented use, which builds the most: off at all
                        left_out.setdefault(name, []).append(rel or b.name)
                    else:
                        uses[name].append(f"builds {rel or b.name} when true")
            if b.repeat is not None and isinstance(b.repeat.count_expr, Sym):
                for name in b.repeat.count_expr.names & uses.keys():
                    uses[name].append(f"repetitions of {'the body' if b.path == inst.path else rel or b.name}")
            if b.kind == "use" and b is not inst:
                for a in b.args:
                    for name in names_in(a.expr) & uses.keys():
                        uses[name].append(f"{a.name} of {rel} ({b.template})")
                continue  # its own class documents what it does with them
            if b.kind == "op":
                data = ir.node(self.g, b.output)
                for attr, expr in {**data.exprs, **data.nulls}.items():  # a parameter null here too
                    for name in names_in(expr) & uses.keys():
                        uses[name].append(f"{attr} of {rel}")
            stack.extend((prefix, c) for c in reversed(b.children))
        what = "features" if tmpl.input_param == "in_features" else "channels"
        docs = [(tmpl.input_param, f"{what} of the input")]
        if tmpl.inputs:
            docs = [
                (p, f"{p.rsplit('_', 1)[1]} of the input {n}")
                for p, n in zip(tmpl.input_params, tmpl.inputs, strict=True)
            ]
        for name, entries in left_out.items():
            uses[name].append(f"false at every use, so the class leaves out {_listed(entries)}")
        own = self.keywords[tmpl.name]  # each parameter as the signature names it
        for p in tmpl.params:  # a parameter read by another's default (R(2+1)D's inplanes by midplanes)
            if p.default_expr is not None:
                for name in names_in(p.default_expr) & uses.keys():
                    uses[name].append(f"the default of {own[p.name]}")
        for p in tmpl.params:
            found = uses[p.name]
            text = _listed(found) if found else "unused by the layers"
            if p.name in self.nullable.get(tmpl.name, ()):
                text += " (None: not given, the op's default)"
            docs.append((own[p.name], text))
        return docs

    def _statistic(self, values: tuple[float, ...]) -> str:
        """A per-channel statistic of the input, shaped to broadcast over the batch and the other axes."""
        tensor = Call("torch.tensor", (Call("", tuple(literal(float(v)) for v in values), "[", "]"),))
        t = ir.node(self.g, ir.info(self.g).input).type
        c = t.channel_axis if t.channel_axis is not None else 0
        return f"{tensor.flat()}.view({', '.join(['1'] + ['-1' if i == c else '1' for i in range(t.rank)])})"

    def _buffer(self, name: str, values: tuple[float, ...]) -> list[str]:
        return layout("self.register_buffer", Call("", (f'"{name}"', self._statistic(values), "persistent=False")), 2)

    def _outputs_class(self, outputs: list[ir.Output], in_training: bool) -> ClassCode:
        """The NamedTuple of the outputs, which the model returns in training alone or always."""
        name = self.outputs_class_name
        when = " in training" if in_training else ""
        head = [f"class {name}(NamedTuple):"] + docstring(f"The model's outputs{when}, main output first", 1)
        fields = []
        for i, o in enumerate(outputs):
            optional = i > 0 and (o.training_only or (o.when is not None and o.when in self.exposed))
            fields.append(f"    {o.name}: torch.Tensor{' | None' if optional else ''}")
        # read by name too, as torchvision's segmentation models' dict of outputs is (out["aux"])
        by_name = [
            "    def __getitem__(self, key: int | slice | str):",
            '        """An output by position, or by name (``outputs["aux"]``)."""',
            "        if isinstance(key, str):",
            "            return self._asdict()[key]",
            "        return tuple(self)[key]",
        ]
        return ClassCode(name, head + [""] + fields, [], [by_name])

    def _loss(self, outputs: list[ir.Output], extras: list[ir.Output], by_name: bool = False) -> list[str]:
        outputs_name = self.outputs_class_name
        lines = layout(
            "def ",
            Call(
                "loss",
                (
                    "self",
                    f"outputs: {outputs_name}"
                    if by_name
                    else f"outputs: {outputs_name} | torch.Tensor"
                    if extras
                    else "outputs: torch.Tensor",
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
            read = f"outputs.{main.name}" if by_name else "outputs"
            lines.append(f"        return {scale}F.cross_entropy({read}, target)")
            return lines
        if not by_name:
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

    def _reset(self, statistics: dict[str, tuple[float, ...]]) -> tuple[list[list[str]], list[str]]:
        """``reset_parameters``, which starts the model again as its constructor does: every layer
        as PyTorch starts it (a BatchNorm's running statistics too; so a model made on the meta device
        and moved with ``to_empty`` holds no uninitialised memory), the input's statistics, then the
        spec's rules; ``_init_parameters``, those rules alone, which the constructor applies to the
        layers it has just made; and the constructor's line that calls it (none without rules)."""
        rules = self._init_rules()
        mha = "attention" in self._ops_built()  # nn.MultiheadAttention starts its projection privately
        lines = ["    def reset_parameters(self) -> None:"]
        lines += docstring(
            "Start the model again: every layer as PyTorch starts it (a BatchNorm's running statistics "
            + ("too), the input's statistics" if statistics else "too)")
            + (", then the spec's initialisation (_init_parameters)" if rules else ""),
            2,
        )
        lines += [
            "        for m in reversed(list(self.modules())):  # inner layers first, as built",
            '            if m is not self and hasattr(m, "reset_parameters"):',
            "                m.reset_parameters()",
            *(
                ["            elif isinstance(m, nn.MultiheadAttention):", "                m._reset_parameters()"]
                if mha
                else []
            ),
        ]
        for name, values in statistics.items():
            lines += layout(f"self.{name}.copy_", Call("", (self._statistic(values),)), 2)
        for n in self._parameters_of(ruled=False):  # zeros, as the constructor makes them
            lines += layout("nn.init.zeros_", Call("", (f'self.get_parameter("{n}")',)), 2)
        if not rules:
            return [lines], []
        lines.append("        self._init_parameters()")
        return [lines, rules], ["        self._init_parameters()"]

    def _init_rules(self) -> list[str]:
        """The method ``_init_parameters``: the spec's rules (empty where it has none)."""
        lines = ["    def _init_parameters(self) -> None:"]
        rules = ir.info(self.g).init
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
        lines += docstring(f"Initialise the parameters as the spec says: {described}", 2)
        holders = self._layer_holders()
        later = holders if holders is not None else set()
        branches: list[tuple[list[str], list[str]]] = []
        outer: list[tuple[list[str], list[str]]] = []  # ops whose modules hold layers with rules
        used = self._ops_built()
        for op, rs in rules.items():
            body = self._init_body(rs.items(), self._optional(op)) if op in used else []  # a rule for no layer here
            if body:
                classes = self._init_classes(op)
                into = outer if op in later else branches
                same = [i for i, (_, b) in enumerate(into) if b == body]
                if same:
                    names, _ = into[same[0]]
                    into[same[0]] = ([*names, *classes], body)
                else:
                    into.append((classes, body))
        tensors = self._parameter_init_lines()
        if not branches and not own and not outer:
            return lines + tensors if tensors else []
        if holders is not None:  # the layers' rules first, then the rules that name layers inside a module
            lines += self._init_loop([], branches)
            return lines + self._init_loop(own, outer) + tensors
        return lines + self._init_loop(own, branches) + tensors

    def _init_loop(self, own, branches) -> list[str]:
        """A loop of reset_parameters over the modules: layers with rules of their own first,
        picked by name (they exist only where built), then the rules by class."""
        if not own and not branches:
            return []
        lines = ["        for name, m in self.named_modules():" if own else "        for m in self.modules():"]
        for i, (names, rs) in enumerate(own):
            test = Call("", tuple(f'"{n}"' for n in names)) if len(names) > 1 else f'"{names[0]}"'
            lines += layout(f"{'if' if i == 0 else 'elif'} name {'in' if len(names) > 1 else '=='} ", test, 3, ":")
            lines += self._init_body(rs) or ["                pass"]
        for i, (names, body) in enumerate(branches):
            cls = names[0] if len(names) == 1 else "(" + ", ".join(names) + ")"
            lines += layout(f"{'if' if i == 0 and not own else 'elif'} isinstance", Call("", ("m", cls)), 3, ":")
            lines += body
        return lines

    def _ops_built(self) -> set[str]:
        """The ops of the layers the model builds: its nodes' (those a switch leaves out too), and
        those of the layers inside their modules (a patch merging's ``nn.LayerNorm``)."""
        if self._built is None:
            found: set[str] = set()
            for graph, n, data in self._all_nodes():
                found.add(data.op)
                if data.op in OPS and data.type is not None and OPS[data.op].init_params != ("value",):
                    found |= {w.layer for w in self._weights(graph, n, data) if w.layer}
            self._built = frozenset(found)
        return set(self._built)

    def _all_nodes(self) -> list[tuple[nx.DiGraph, str, ir.Node]]:
        """Every node the model builds, with its graph: the graph's, then those a switch leaves
        out (the dormant graph's); listed once for the scans of reset_parameters."""
        if self._nodes is None:
            self._nodes = [
                (graph, n, data) for graph in (self.g, ir.info(self.g).dormant.graph) for n, data in ir.nodes(graph)
            ]
        return self._nodes

    def _order(self, graph: nx.DiGraph) -> list[str]:
        """``ir.order(graph)`` (the graph's or the dormant graph's), computed once."""
        key = id(graph)
        if key not in self._orders:
            self._orders[key] = ir.order(graph)
        return self._orders[key]

    def _weights(self, graph: nx.DiGraph, n: str, data: ir.Node) -> list:
        """The learned tensors of node ``n`` (its op's ``weights``), computed once per node."""
        key = (id(graph), n)
        found = self._node_weights.get(key)
        if found is None:
            found = self._node_weights[key] = OPS[data.op].weights(ir.input_types(graph, n), data.attrs)
        return found

    def _layer_holders(self) -> set[str] | None:
        """The ops whose modules hold layers (an attention's ``out_proj``, an ``nn.Linear``) where a
        rule of such a module (its block's own, or its op's) names a parameter of a layer whose op
        has a rule too; None where there is none. The loop over the modules meets a module before
        the layers inside it, so that these rules, which come first, are applied in a second loop."""
        rules = ir.info(self.g).init
        holders: set[str] = set()
        clash = False
        for graph, n, data in self._all_nodes():
            if data.op not in OPS or data.type is None:
                continue
            inner = [w for w in self._weights(graph, n, data) if w.layer]
            if not inner:
                continue
            holders.add(data.op)
            named = {**rules.get(data.op, {}), **data.init}
            clash |= any(w.name in named and w.name.rsplit(".", 1)[-1] in rules.get(w.layer, {}) for w in inner)
        return holders if clash else None

    def _parameter_init_lines(self) -> list[str]:
        """reset_parameters' statements for learned tensors that are parameters of a module
        rather than modules (a ViT's class token, position embedding): by name, after the loop."""
        lines = []
        rules = ir.info(self.g).init
        for n in self._parameters_of(ruled=True):
            data = ir.node(self.g, n)
            rule = data.init.get("value") or rules.get(data.op, {}).get("value")
            stmt = self._init_stmt(f'self.get_parameter("{n}")', rule)
            if stmt is not None:
                lines += layout("", stmt, 2)
        return lines

    def _parameters_of(self, ruled: bool) -> list[str]:
        """The learned tensors that are parameters of a module rather than modules (their names),
        those with an init rule or those without one."""
        rules = ir.info(self.g).init
        found = []
        for n in self._order(self.g):
            data = ir.node(self.g, n)
            if INIT_PARAMS.get(data.op) != ("value",):
                continue
            has_rule = (data.init.get("value") or rules.get(data.op, {}).get("value")) is not None
            if has_rule != ruled:
                continue
            if not _MODULE_PATH.fullmatch(n):
                raise CodegenError(f"cannot write the parameter name {n!r} into the code", location=data.loc)
            found.append(n)
        return found

    def _init_classes(self, op: str) -> list[str]:
        """The module classes of ``op`` that reset_parameters initialises: the lowering's, and those
        it makes only for some ranks where the graph has such a node."""
        low = OPS[op].lowerings["pytorch"]
        classes = list(low.classes)
        for graph, n, data in self._all_nodes():
            if data.op == op and data.type is not None:
                extra = low.extra_classes.get(ir.input_types(graph, n)[0].rank)
                if extra is not None and extra not in classes:
                    classes.append(extra)
        return classes

    def _own_init_rules(self) -> list[tuple[list[str], list[tuple[str, ir.InitRule]]]]:
        """The layers whose block has rules of its own (``init:``), grouped by their rules once
        merged with their op's: (names, [(parameter, rule)]), in graph order. A layer a switch
        leaves out (the dormant graph) is listed too: the class builds it when asked."""
        groups: dict[tuple, list[str]] = {}
        for graph in (self.g, ir.info(self.g).dormant.graph):
            for n in self._order(graph):
                data = ir.node(graph, n)
                if not data.init or INIT_PARAMS.get(data.op) == ("value",):
                    continue
                if not _MODULE_PATH.fullmatch(n):
                    raise CodegenError(f"cannot write the layer name {n!r} into the code", location=data.loc)
                merged = {**ir.info(self.g).init.get(data.op, {}), **data.init}
                order = INIT_PARAMS[data.op]  # weight, then bias
                key = (data.op, tuple(sorted(merged.items(), key=lambda kv: order.index(kv[0]))))
                groups.setdefault(key, []).append(n)
        return [(names, list(key[1])) for key, names in groups.items()]

    def _optional(self, op: str) -> frozenset[str]:
        """The parameters of ``op`` that some of its layers here lack (an ``nn.InstanceNorm2d``
        without ``affine`` has no weight): reset_parameters sets them where they exist."""
        if op not in OPS:
            return frozenset()
        lacking: set[str] = set()
        for graph, n, data in self._all_nodes():
            if data.op == op and data.type is not None:
                held = {w.name for w in self._weights(graph, n, data)}
                lacking |= set(OPS[op].init_params) - held
        return frozenset(lacking)

    def _init_body(self, rules, optional: frozenset[str] = frozenset()) -> list[str]:
        """The statements of one branch of reset_parameters' loop (its module is ``m``); a
        parameter of ``optional`` (one some layers lack) only where the layer has it."""
        body = []
        for pname, rule in rules:
            stmt = self._init_stmt(f"m.{pname}", rule)
            if stmt is None:
                continue
            if pname == "bias" or pname in optional:  # laid out at their depth in the loop, split as ruff would
                body += [f"                if m.{pname} is not None:", *layout("", stmt, 5)]
            else:
                body += layout("", stmt, 4)
        return body

    def _init_stmt(self, target: str, rule: ir.InitRule) -> str | Call | None:
        args = dict(rule.args)
        s = rule.scheme
        if s == "default":
            return None
        if s in ("xavier_caffe", "fan_uniform", "fan_trunc_normal"):
            self.init_helpers.add(s)
            if s == "xavier_caffe":
                return f"_xavier_caffe_({target})"
            mode, scale = args.get("mode", "fan_out"), float(args.get("scale", 1.0))
            return Call(f"_{s}_", (target, f"mode={literal(mode)}", f"scale={literal(scale)}"))
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


#: the fields of a node's record that a use's key (_Writer._use_key) holds as they are: all but
#: ``attrs`` (held as text) and ``instance`` (the use's path)
_NODE_FIELDS = operator.attrgetter(
    *(f.name for f in dataclasses.fields(ir.Node) if f.name not in ("attrs", "instance"))
)
#: the fields of a block that hold no path (a use's key holds them as they are)
_BLOCK_FIELDS = operator.attrgetter(
    "kind", "named", "op", "template", "args", "when", "phase", "repeat", "sym", "in_sym", "in_syms"
)


def _relative(base: str, inputs: dict[str, tuple]) -> Callable[[str | None], object]:
    """A node or block path as the keys of the uses at ``base`` hold it (see _Writer._use_key):
    under the use's path, relative to it; an input of the use, its marker; another, as it is."""
    under = base + "."
    cut = len(base)

    def relative(name: str | None) -> object:
        if name is None:
            return None
        if name == base or name.startswith(under):
            return "\x01" + name[cut:]
        return inputs.get(name, name)

    return relative


def _block_key(b: ir.Block, base: str, rel: Callable[[str | None], object]) -> tuple:
    """A block of a template use (see _Writer._use_key) with its paths relative to the use's path
    ``base`` (``rel``); the use's name, ``loc`` and ``keypath``, and the name of a block at the
    use's path (the body, the merge it wraps: named after the use), left out."""
    at_use = b.path == base
    return (
        _BLOCK_FIELDS(b),
        None if at_use else b.name,
        None if b.kind == "use" and at_use else (b.keypath, b.loc),
        rel(b.path),
        rel(b.output),
        rel(b.target),
        tuple(map(rel, b.inputs)),
        tuple(map(rel, b.entries)) if b.entries else (),
        tuple(map(rel, b.sources)) if b.sources else (),
        tuple(_block_key(c, base, rel) for c in b.children) if b.children else (),
    )


def _described(param: str, rule: ir.InitRule) -> str:
    """``weight normal`` / ``bias constant 0`` for the reset_parameters docstring."""
    return f"{param} {rule.scheme}" + (f" {rule.args[0][1]:g}" if rule.scheme == "constant" else "")


def _switched_agreement(variants: list[tuple[ClassCode, ir.Block]]):
    """One class for uses of a template whose parameters switch different entries on (one use
    builds ``a`` and not ``b``, another ``b`` and not ``a``): each entry's lines from a use that
    builds it, which build and run it under its switch, so the class leaves it out where the
    switch is off as those uses do. ``(class, None)``, or ``(None, (entry, (text, use), (text,
    use)))`` for the first entry whose code differs between two uses that build it (or, for an
    entry no parameter switches, between any two uses), or ``(None, None)`` where the class has
    no entries to put together."""
    if any(code.pieces is None for code, _ in variants):
        return None, None
    code = variants[0][0]
    names = [entry for entry, _, _ in code.pieces.entries]
    if any(
        (c.head, c.pieces.start, c.pieces.opening, [entry for entry, _, _ in c.pieces.entries])
        != (code.head, code.pieces.start, code.pieces.opening, names)
        for c, _ in variants
    ):
        return None, None
    chosen = []
    unkept: dict[str, tuple] = {}  # locals a use keeps where an entry is off and the class does not
    for k, entry in enumerate(names):
        builds = [(c, inst) for c, inst in variants if entry not in _switched_off(inst)] or variants
        mine, inst = builds[0]
        left = _unguarded(mine.pieces.entries[k][2], f"self.{entry}")
        for other, there in variants:
            theirs = other.pieces.entries[k]
            if (other, there) in builds:
                same = theirs == mine.pieces.entries[k]
            else:  # where it is off: the lines the switch leaves when false, but for a local kept
                same = not theirs[1] and _unkept(theirs[2]) == _unkept(left)
                unkept |= {m[1]: (entry, other, there) for m in map(_KEPT.fullmatch, theirs[2]) if m}
            if not same:
                texts = ["\n".join(lines[1] + lines[2]) for lines in (mine.pieces.entries[k], theirs)]
                return None, (entry, (texts[0], inst), (texts[1], there))
        chosen.append(mine.pieces.entries[k])
    init, forward = code.pieces.assembled(chosen)
    assigned = {m[1] for m in map(_KEPT.fullmatch, (line.strip() for line in forward)) if m}
    for local, (entry, other, there) in unkept.items():  # such a local must be one that nothing reads
        if local not in assigned and any(re.search(rf"(?<![\w.]){local}\b", line) for line in forward):
            k = names.index(entry)
            texts = ["\n".join(lines[1] + lines[2]) for lines in (chosen[k], other.pieces.entries[k])]
            return None, (entry, (texts[0], variants[0][1]), (texts[1], there))
    helpers = set().union(*(c.helpers for c, _ in variants))
    return ClassCode(code.name, code.head, init, [forward], helpers, code.pieces), None


#: a forward line that keeps x's value in a local for later lines
_KEPT = re.compile(r"(\w+) = x")


def _unkept(lines: list[str]) -> list[str]:
    return [line for line in lines if not _KEPT.fullmatch(line)]


def _unguarded(lines: list[str], attribute: str) -> list[str]:
    """Forward lines of an entry without the statement its switch guards (``if self.bn is not
    None:`` and the lines indented below it)."""
    kept, guarded = [], False
    for line in lines:
        if re.match(rf"if {re.escape(attribute)}\b", line):
            guarded = True
        elif not (guarded and line.startswith("    ")):
            guarded = False
            kept.append(line)
    return kept


def _in_build_order(chunks: list[tuple[str, list[str]]], build_order: tuple[str, ...]) -> list[str]:
    """The init lines of a body's children, by child name: those ``build_order`` names first, in
    its order, then the others in the body's."""
    first = [line for name in build_order for n, lines in chunks if n == name for line in lines]
    return first + [line for name, lines in chunks if name not in build_order for line in lines]


def _gated(inst: ir.Block) -> frozenset[str]:
    """The entries of a template use's body that a parameter's ``when`` switches off, by path
    below the use."""
    return frozenset(c.path[len(inst.path) :] for c in _gated_blocks(inst))


def _switched_off(inst: ir.Block) -> set[str]:
    """The names of the entries of a template use's body that a parameter's ``when`` switches off."""
    return {c.name for c in _gated_blocks(inst)}


def _gated_blocks(inst: ir.Block) -> list[ir.Block]:
    """The entries of a template use's body that a parameter's ``when`` switches off."""
    body = inst.children[0]
    if body.kind != "seq" or not body.named:
        return []
    return [c for c in body.children if c.kind == "skip" and c.when is not None and isinstance(c.when.expr, Sym)]


def _own_blocks(use: ir.Block):
    """The blocks of a template use's body that its class writes: all below it but inside the
    template uses it holds (their own classes), which are included themselves."""
    stack = list(reversed(use.children))
    while stack:
        c = stack.pop()
        yield c
        if c.kind != "use":
            stack.extend(reversed(c.children))


def _body_entries(use: ir.Block) -> dict[str, ir.Block]:
    """The entries of a use's body, by name, where the body is named entries."""
    body = use.children[0] if use.children else None
    return {c.name: c for c in body.children} if body is not None and body.kind == "seq" and body.named else {}


def _when_at(use: ir.Block, name: str) -> bool:
    return bool(_body_entries(use)[name].when.value)


def _switched_branch(a: ir.Block, b: ir.Block) -> tuple[str, str] | None:
    """A branch of a merge that a condition switches on at one of two uses and off at the other,
    as (the merge, as a message names it; the branch's name), or None."""
    theirs = {blk.path[len(b.path) :]: blk for blk in ir.walk(b)}
    for blk in ir.walk(a):
        other = theirs.get(blk.path[len(a.path) :])
        if blk.kind != "merge" or other is None or other.kind != "merge":
            continue
        mine = {c.name: c for c in blk.children}
        for c in other.children:
            d = mine.get(c.name)
            if d is not None and (d.when is None or d.when.value) != (c.when is None or c.when.value):
                rel = blk.path[len(a.path) :].lstrip(".")
                return (f"the merge '{rel}'" if rel else "the body's merge"), c.name
    return None


def _folded_switch(a: ir.Block, b: ir.Block) -> str | None:
    """The first entry of two uses' bodies whose ``when`` the class folds (a condition that is no
    parameter of its own: ``when.expr`` None) and that is on at one use, off at the other."""
    theirs = _body_entries(b)
    for name, c in _body_entries(a).items():
        other = theirs.get(name)
        if c.when is None or other is None or other.when is None:
            continue
        if c.when.expr is None and c.when.switch is None and c.when.value != other.when.value:
            return name
    return None


def _first_difference(a: str, b: str, where_a: str, where_b: str) -> str:
    """The first line in which two versions of a class differ, shown from each, for a message: the
    real cause of a refused template (a size a class would write as a number that differs between
    uses, a block one use switches off), whatever it is."""
    lines_a, lines_b = a.splitlines(), b.splitlines()
    for x, y in zip(lines_a, lines_b, strict=False):
        if x != y:
            return f"at {where_a} it would write `{_short(x)}` where at {where_b} it would write `{_short(y)}`"
    longer, where = (lines_a, where_a) if len(lines_a) > len(lines_b) else (lines_b, where_b)
    extra = longer[min(len(lines_a), len(lines_b))]
    return f"only at {where} it would write `{_short(extra)}`"


def _short(line: str, most: int = 90) -> str:
    text = " ".join(line.split())
    return text if len(text) <= most else text[: most - 3] + "..."


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


def _defined_class(helper: str, name: str, classes: dict[str, str]) -> ClassCode:
    """A class of HELPER_CLASSES as the file names it (``{name}``, and ``{Other}`` for another helper
    class it uses)."""
    lines = [line.replace("{name}", name) for line in HELPER_CLASSES[helper]]
    for key, other in classes.items():
        if key.startswith("helper:"):
            lines = [line.replace("{" + key[len("helper:") :] + "}", other) for line in lines]
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


def prepare(graph: object, *, verify: bool | str | None = None) -> nx.DiGraph:
    """The graph this backend writes from: ``graph`` through :data:`PIPELINE` (an inference build,
    whose every variable is folded, through the in-place analysis alone)."""
    g = ir.as_graph(graph)
    return run_pipeline(g, PIPELINE[1:] if ir.info(g).optimized else PIPELINE, verify=verify)


@dataclass(frozen=True)
class Generated:
    """A generated module: its source and the name of its model class (the spec's name,
    unless that would shadow something the file uses)."""

    source: str
    model_class: str


def _module_writer(g: nx.DiGraph):
    """The whole-module lowering of an op of ``g`` (``TorchLowering.module_writer``), or None."""
    for op in sorted({d.op for _, d in ir.nodes(g)}):
        writer = getattr(OPS[op].lowerings.get("pytorch"), "module_writer", None) if op in OPS else None
        if writer is not None:
            return writer
    return None


def generate(graph: object, *, source_name: str | None = None, verify: bool | str | None = None) -> Generated:
    """The PyTorch module for a graph (or a compiled spec), with its model class's name."""
    writer = _module_writer(ir.as_graph(graph))
    if writer is not None:  # an op whose lowering writes the whole module: an ensemble's members
        return writer(ir.as_graph(graph), source_name=source_name, verify=verify)
    g = prepare(graph, verify=verify)
    w = _Writer(g)
    order, instances = _template_order(g, w.exposed)
    templates = [w.template_class(name, instances[name]) for name in order]
    model, outputs = w.model_class()
    helpers = sorted(
        (
            _defined_class(h[len("helper:") :], w.classes[h], w.classes)
            if h.startswith("helper:")
            else _helper_class(h, w.classes[f"merge:{h}"])
            for h in w.helpers
        ),
        key=lambda c: c.name,
    )
    name = ir.info(g).name
    shown = safe_text(os.path.basename(source_name or ir.info(g).file)) or "a spec"
    public_names = [model.name, *([outputs.name] if outputs else []), *(c.name for c in templates)]
    all_names = sorted([*public_names, *(c.name for c in w.block_classes)], key=_isort)
    public = layout("__all__ = ", Call("", tuple(f'"{n}"' for n in all_names), "[", "]"), 0)
    if w.inference:
        target = ir.info(g).optimized
        header = wrap(
            f"The inference graph optimised for {target}: {', '.join(ir.info(g).pipeline)}. It depends on torch "
            f"alone. Build it from the training model's weights with {model.name}.{FROM_TRAINING}(state_dict).",
            86,
        )
        doc = docstring(
            f"{(safe_text(ir.info(g).doc or '') or f'The {name} model').rstrip('.')}: inference only, optimised for "
            f"{target}",
            0,
        )
    else:
        exposed = ", ".join(w.arguments[v] for v in ir.info(g).exposed) or "none"
        header = wrap(f"It depends on torch alone. Constructor arguments: {exposed}.", 86)
        doc = docstring(ir.info(g).doc or "", 0, f"The {name} model")
    generated = f"# Generated by nasdsl {__version__} from {shown} (spec sha256 {ir.info(g).sha256[:16]})."
    if len(generated) > 88:  # a long file name: the hash on a line of its own
        cut = generated.index(" (spec sha256")
        generated = f"{generated[:cut]}\n# {generated[cut + 1 :]}"
    source = _ENV.get_template("pytorch.py.jinja").render(
        generated=generated,
        doc=doc,
        header=["# " + line for line in header],
        init_helpers=sorted(w.init_helpers),
        functions=w.replay.functions() if w.inference else [],
        needs_namedtuple=outputs is not None,
        # the training model's loss uses it; an inference build where a layer does
        needs_functional=not w.inference
        or any(
            "F." in line
            for c in [*helpers, *templates, *w.block_classes, model]
            for line in c.head + c.init + sum(c.methods, [])
        ),
        needs_ordered_dict=any(
            "OrderedDict(" in line for c in [*templates, *w.block_classes, model] for line in c.init
        ),
        public=public,
        helpers=helpers,
        templates=[*templates, *w.block_classes],
        outputs=outputs,
        model=model,
    )
    return Generated(source, model.name)


def generate_source(graph: object, *, source_name: str | None = None, verify: bool | str | None = None) -> str:
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
