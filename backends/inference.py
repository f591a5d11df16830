"""PyTorch inference backend: a flat, readable module for an optimised graph.

Public entries:

- :func:`generate_inference` returns the source (``str``, in a
  :class:`~nasdsl.backends.pytorch.Generated`) of a module that depends on
  torch alone, for a graph made by :func:`nasdsl.optimize.optimize`: one
  class, ``<Name>Inference``, with one attribute per layer, a ``forward``
  that runs the nodes in order, and a classmethod ``from_training_state_dict``
  that takes the *training* model's state_dict (the generated training model's
  keys, torchvision's for the torchvision-compatible specs) and replays the
  graph's weight derivation (BatchNorm folds, joined convolutions) in torch.
- :func:`inference_class` builds that class in memory.

The optimised graph's block tree is flat (:mod:`nasdsl.passes.flatten`):
fusions cross template boundaries, so this backend writes from the nodes
alone, in :func:`nasdsl.ir.order`, and groups the lines of each top-level
model entry under a comment. Layers are lowered by the PyTorch backend's
lowerings (the registry's ``"pytorch"`` entries), so every op it can write,
this module writes the same way; a ``slice`` is written as indexing and a
merge as its expression. Attribute names are the node names with dots made
underscores (``inception3a.fused`` -> ``inception3a_fused``), made safe and
unique by :class:`~nasdsl.backends.names.Namespace`; the module's ``LAYERS``
maps each back to its node. Same graph, same bytes.
"""

from __future__ import annotations

import os

import networkx as nx

from nasdsl import __version__, ir
from nasdsl.errors import CodegenError
from nasdsl.ops import OPS, lowering_of
from nasdsl.passes.derive import FoldNorm, JoinLayers
from nasdsl.passes.pipeline import run_pipeline

from .names import BUILTINS, IMPORTED, TAKEN_ATTRIBUTES, Namespace
from .pyformat import LINE_LENGTH, Call, docstring, layout, literal, safe_text, wrap
from .pytorch import Generated, load_source
from .pytorch_ops import HELPER_CLASSES
from .pytorch_ops import ClassContext as _Ctx

#: the analysis this backend runs on the optimised graph before it writes
PIPELINE = ("inplace",)
#: the classmethod that builds the model from the training model's weights
FROM_TRAINING = "from_training_state_dict"

_FOLD = (
    "def {fold}(",
    "    state: dict[str, torch.Tensor], layer: str, norm: str, eps: float",
    ") -> None:",
    '    """Fold the BatchNorm `norm` into `layer`, the convolution or linear layer before',
    "    it: with s = gamma / sqrt(running_var + eps), the weight becomes W * s (per output",
    "    channel) and the bias (b - running_mean) * s + beta. s and the bias are computed in",
    '    float64 and rounded once; W * s is one product in the weight\'s dtype."""',
    '    names = ("weight", "bias", "running_mean", "running_var")',
    '    gamma, beta, mean, var = (state.pop(f"{{norm}}.{{name}}").double() for name in names)',
    '    state.pop(f"{{norm}}.num_batches_tracked", None)',
    '    weight = state[f"{{layer}}.weight"]',
    '    bias = state.get(f"{{layer}}.bias")',
    "    scale = gamma / torch.sqrt(var + eps)",
    "    rows = scale.to(weight.dtype).reshape([-1] + [1] * (weight.dim() - 1))",
    '    state[f"{{layer}}.weight"] = weight * rows',
    "    bias = torch.zeros_like(mean) if bias is None else bias.double()",
    '    state[f"{{layer}}.bias"] = ((bias - mean) * scale + beta).to(weight.dtype)',
)
_JOIN = (
    "def {join}(",
    "    state: dict[str, torch.Tensor], into: str, parts: tuple[str, ...]",
    ") -> None:",
    '    """Join layers that read the same tensor with the same window into one layer',
    "    `into`: weights and biases concatenated along the output channels, in the order",
    '    of `parts` (a zero bias for a part without one)."""',
    '    weights = [state.pop(f"{{part}}.weight") for part in parts]',
    '    biases = [state.pop(f"{{part}}.bias", None) for part in parts]',
    '    state[f"{{into}}.weight"] = torch.cat(weights)',
    "    if any(b is not None for b in biases):",
    '        state[f"{{into}}.bias"] = torch.cat(',
    "            [",
    "                w.new_zeros(w.shape[0]) if b is None else b.to(w.dtype)",
    "                for w, b in zip(weights, biases, strict=True)",
    "            ]",
    "        )",
)


def _shape_note(shape: tuple[int, ...]) -> str:
    return f"(N, {', '.join(map(str, shape))})"


def _wanted(node: str) -> str:
    """A local variable's name for a value that needs its own: the node's path inside its
    top-level entry, indices and the op's own name dropped (``branch2``, ``residual_main``)."""
    parts = node.split(".")
    rel = parts[1:]
    if not rel:
        return parts[0]
    named = [p for p in rel if not p.isdigit()]
    if len(named) > 1 and not rel[-1].isdigit():
        named = named[:-1]
    return "_".join(named) or parts[0]


class _Writer:
    """The lines of one inference module."""

    def __init__(self, g: nx.DiGraph):
        self.g = g
        self.module_names = Namespace(BUILTINS | IMPORTED | {"NamedTuple"})
        self.class_name = self.module_names.create(f"{ir.info(g).name}Inference")
        self.outputs_class = self.module_names.create(f"{self.class_name}Outputs")
        self.layers_name = self.module_names.create("LAYERS")
        steps = ir.info(g).derivation
        kinds = {type(s) for s in steps}
        self.fold = self.module_names.create("fold_batch_norm") if FoldNorm in kinds else None
        self.join = self.module_names.create("join_layers") if JoinLayers in kinds else None
        self.helpers: dict[str, str] = {}
        ops = sorted({d.op for _, d in ir.nodes(g)} & OPS.keys())
        for op in ops:
            for helper in getattr(OPS[op].lowerings.get("pytorch"), "defines", ()):
                self.helpers.setdefault(f"helper:{helper}", self.module_names.create(helper))
        own = Namespace(TAKEN_ATTRIBUTES | {FROM_TRAINING, "input_mean", "input_std"} | {"x"})
        inp = ir.info(g).input
        self.attribute = {n: own.create(n.replace(".", "_")) for n in ir.order(g) if n != inp}
        self.used_helpers: set[str] = set()

    # -- the class ------------------------------------------------------------------------
    def layers(self) -> tuple[list[str], list[str], dict[str, str]]:
        """``__init__`` lines, ``forward`` lines and the attributes that hold weights (to nodes)."""
        g = self.g
        inp = ir.info(g).input
        ctx = _Ctx(g, None, frozenset(), lambda node: bool(ir.node(g, node).inplace), {}, self.helpers, {})
        init: list[str] = []
        weighted: dict[str, str] = {}
        fwd: list[str] = []
        order = [n for n in ir.order(g) if n != inp]
        position = {n: i for i, n in enumerate(order)}
        outputs = {o.node for o in ir.info(g).outputs}
        last_use = {n: max((position[c] for c in g.successors(n)), default=-1) for n in [inp, *order]}
        for n in outputs:
            last_use[n] = len(order)
        attrs = ir.node(g, inp).attrs
        if attrs.get("mean") is not None:
            init += self._buffer("input_mean", attrs["mean"])
            fwd.append("        x = x - self.input_mean")
        if attrs.get("std") is not None:
            init += self._buffer("input_std", attrs["std"])
            fwd.append("        x = x / self.input_std")
        var = {inp: "x"}
        live = {"x": inp}
        group = None
        sizes: dict[str, int] = {}
        for n in order:
            sizes[n.split(".")[0]] = sizes.get(n.split(".")[0], 0) + 1
        for i, n in enumerate(order):
            data = ir.node(g, n)
            op = data.op
            sources = ir.inputs(g, n)
            here = n.split(".")[0]
            if here != group:
                group = here
                if sizes[here] > 1:
                    fwd.append(f"        # {here}")
            terms = [var[s] for s in sources]
            dead = [v for v in dict.fromkeys(terms) if last_use[live[v]] <= i]
            if op == "slice":
                target = None
            elif "x" in dead:
                target = "x"
            elif terms and terms[0] in dead:
                target = terms[0]
            else:
                target = None
            for v in dead:
                del live[v]
            if target is None:
                target = Namespace(set(live) | {"self", "x"}, outer=self.module_names).create(_wanted(n))
            live[target] = n
            var[n] = target
            changed = data.shape != ir.node(g, sources[0]).shape if sources else True
            note = _shape_note(data.shape) if changed else ""
            value = self._value(ctx, n, terms, init, weighted)
            fwd += layout(f"{target} = ", value, 2, comment=note)
        self.used_helpers |= ctx.used_helpers
        outs = ir.info(g).outputs
        if len(outs) == 1:
            fwd.append(f"        return {var[outs[0].node]}")
        else:
            fields = tuple(f"{o.name}={var[o.node]}" for o in outs)
            fwd += layout("return ", Call(self.outputs_class, fields), 2)
        return init, fwd, weighted

    def _value(self, ctx: _Ctx, n: str, terms: list[str], init: list[str], weighted: dict[str, str]) -> str | Call:
        """The expression computing node ``n`` from the variables ``terms``; its module's
        ``__init__`` line goes to ``init``."""
        g = self.g
        data = ir.node(g, n)
        op = data.op
        if op == "slice":
            start, stop = data.attrs["start"], data.attrs["stop"]
            size = ir.node(g, ir.inputs(g, n)[0]).shape[0]
            low = str(start) if start else ""
            high = str(stop) if stop is not None and stop != size else ""
            return f"{terms[0]}[:, {low}:{high}]"
        low = lowering_of("pytorch", op, n, data)
        attribute = self.attribute[n]
        if low.join is not None and low.module is None:
            if low.join_into is not None and len(terms) == 2 and terms[0].isidentifier() and data.inplace:
                return low.join_into(*terms)  # a residual sum into its first input (passes/inplace.py)
            return low.join(ctx, n, terms)
        if OPS[op].has_weights:
            weighted[attribute] = n
        if low.parameter is not None:
            made, apply = low.parameter(ctx, n)
            init += layout(f"self.{attribute} = ", made, 2)
            return apply.format(f"self.{attribute}").replace("x", terms[0], 1)
        if low.module is None:
            raise CodegenError(
                f"the PyTorch backend cannot lower op '{op}' as a module (node {n})",
                location=data.loc,
                path=data.keypath,
            )
        call = low.module(ctx, n)
        init += layout(f"self.{attribute} = ", call, 2)
        return low.apply.format(m=f"self.{attribute}", x=terms[0])

    def _buffer(self, name: str, values: tuple[float, ...]) -> list[str]:
        tensor = Call("torch.tensor", (Call("", tuple(literal(float(v)) for v in values), "[", "]"),))
        view = f"{tensor.flat()}.view(1, -1, 1, 1)"
        return layout("self.register_buffer", Call("", (f'"{name}"', view, "persistent=False")), 2)

    # -- the classmethod -----------------------------------------------------------------
    def from_training(self) -> list[str]:
        name = self.class_name
        lines = layout(
            "def ",
            Call(FROM_TRAINING, ("cls", "state_dict: dict[str, torch.Tensor]")),
            1,
            f' -> "{name}":',
        )
        lines = ["    @classmethod", *lines]
        folds = sum(isinstance(s, FoldNorm) for s in ir.info(self.g).derivation)
        joins = sum(isinstance(s, JoinLayers) for s in ir.info(self.g).derivation)
        done = [f"folds {folds} BatchNorm layers" if folds else "", f"joins {joins} sets of layers" if joins else ""]
        what = " and ".join(d for d in done if d) or "takes the weights as they are"
        lines += docstring(
            f"The model holding the weights of a state_dict of the training model (its generated "
            f"module's keys; parts inference does not run, such as auxiliary heads, are ignored): "
            f"{what}. The result is in eval mode",
            2,
        )
        lines.append("        state = {key: value.detach() for key, value in state_dict.items()}")
        for step in ir.info(self.g).derivation:
            if isinstance(step, FoldNorm):
                call = Call(self.fold, ("state", f'"{step.layer}"', f'"{step.norm}"', literal(float(step.eps))))
            else:
                parts = Call("", tuple(f'"{p}"' for p in step.parts) + (("",) if len(step.parts) == 1 else ()))
                call = Call(self.join, ("state", f'"{step.into}"', parts))
            lines += layout("", call, 2)
        lines += [
            "        model = cls()",
            "        weights = {}",
            "        for key in model.state_dict():",
            '            attribute, _, name = key.partition(".")',
            f'            source = f"{{{self.layers_name}[attribute]}}.{{name}}" if name else '
            f"{self.layers_name}[attribute]",
            "            if source in state:",
            "                weights[key] = state[source]",
            "        missing, _ = model.load_state_dict(weights, strict=False)",
            '        missing = [key for key in missing if not key.endswith("num_batches_tracked")]',
            "        if missing:",
            '            raise KeyError(f"the state_dict lacks the weights of {missing}")',
            "        return model.eval()",
        ]
        return lines


def _entry(key: str, value: str) -> str:
    """One ``"key": "value",`` line of a dict, the value parenthesised on a line of its own
    where the pair is too long (as ruff leaves it)."""
    line = f'    "{key}": "{value}",'
    if len(line) <= LINE_LENGTH:
        return line
    return f'    "{key}": (\n        "{value}"\n    ),'


def _helper_lines(helper: str, name: str) -> list[str]:
    return [line.replace("{name}", name) for line in HELPER_CLASSES[helper]]


def generate_inference(graph: object, *, source_name: str | None = None, verify: bool | str | None = None) -> Generated:
    """The inference module of an optimised graph (see the module docstring)."""
    g = ir.as_graph(graph)
    if not ir.info(g).optimized or not ir.info(g).flat:
        raise CodegenError("the inference backend writes a graph made by nasdsl.optimize.optimize")
    g = run_pipeline(g, PIPELINE, verify=verify)
    w = _Writer(g)
    init, fwd, weighted = w.layers()
    name = w.class_name
    target = ir.info(g).optimized
    shown = safe_text(os.path.basename(source_name or ir.info(g).file)) or "a spec"
    header = wrap(
        f"Generated by nasdsl {__version__} from {shown} (spec sha256 {ir.info(g).sha256[:16]}), the inference "
        f"graph optimised for {target}: {', '.join(ir.info(g).pipeline)}. It depends on torch alone. Build it "
        f"from the training model's weights with {name}.{FROM_TRAINING}(state_dict).",
        86,
    )
    doc = ir.info(g).doc or f"The {ir.info(g).name} model"
    outputs = ir.info(g).outputs
    body = ["#: Each layer with weights and the node it holds (named as in the training model)."]
    if weighted:
        body += [f"{w.layers_name} = {{", *(_entry(a, n) for a, n in weighted.items()), "}"]
    else:
        body.append(f"{w.layers_name}: dict[str, str] = {{}}")
    if w.fold:
        body += ["", "", *(line.format(fold=w.fold) for line in _FOLD)]
    if w.join:
        body += ["", "", *(line.format(join=w.join) for line in _JOIN)]
    for helper in sorted(h for h in w.used_helpers if h.startswith("helper:")):
        body += ["", "", *_helper_lines(helper[len("helper:") :], w.helpers[helper])]
    if len(outputs) > 1:
        body += ["", "", f"class {w.outputs_class}(NamedTuple):"]
        body += docstring("The model's outputs, main output first", 1)
        body += [""] + [f"    {o.name}: torch.Tensor" for o in outputs]
    inp = ir.node(g, ir.info(g).input).attrs
    body += ["", "", f"class {name}(nn.Module):"]
    body += docstring(
        f"{doc.rstrip('.')}, for inference. Input: a batch of shape (N, {', '.join(map(str, inp['shape']))}). "
        f"Build it with {FROM_TRAINING}; a fresh instance holds PyTorch's default initialisation",
        1,
    )
    body += ["", "    def __init__(self) -> None:", "        super().__init__()", *init]
    ret = w.outputs_class if len(outputs) > 1 else "torch.Tensor"
    body += ["", f"    def forward(self, x: torch.Tensor) -> {ret}:", *fwd, "", *w.from_training()]

    lines = ["# " + line for line in header]
    lines += docstring(f"{doc.rstrip('.')}: inference only, optimised for {target}", 0)
    lines.append("")
    if len(outputs) > 1:
        lines += ["from typing import NamedTuple", ""]
    lines.append("import torch")
    if any("F." in line for line in body):
        lines.append("import torch.nn.functional as F")
    lines += ["from torch import nn", ""]
    public = [name, *([w.outputs_class] if len(outputs) > 1 else [])]
    lines += layout("__all__ = ", Call("", tuple(f'"{p}"' for p in sorted(public)), "[", "]"), 0)
    lines += ["", *body]
    source = "\n".join(lines) + "\n"
    return Generated(source, name)


def inference_class(graph: object) -> type:
    """The generated inference class of an optimised graph, built in memory."""
    generated = generate_inference(graph)
    return getattr(load_source(generated.source), generated.model_class)


__all__ = ["FROM_TRAINING", "PIPELINE", "generate_inference", "inference_class"]
