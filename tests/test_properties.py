"""Property-based tests over random specs (hypothesis).

1. Random *valid* specs (sequences, named and unnamed concat/add merges, convolutions with every
   kernel/stride/padding/dilation/groups combination that fits, max/avg pools with ceil_mode,
   batch norm, activations, templates with parameters used more than once, references, variables
   that become constructor arguments, phases, conditions and a second output) are written as
   YAML text and compiled. The shapes nasdsl infers must equal both the shapes this generator
   computes on its own (from PyTorch's documented formulas) and the shapes the generated PyTorch
   model actually produces (forward hooks on its top-level modules); the generated file must pass
   the structural check of ``test_hostile.generated_problems``; ONNX Runtime must agree with
   PyTorch numerically (:func:`nasdsl.backends.verify.verify`).
2. Valid specs (the generated ones and ``specs/googlenet*.yaml``) are mutated at random, as text
   (lines deleted, duplicated, swapped, cut short, random bytes) and as a tree (keys deleted,
   duplicated, renamed onto each other, values retyped or replaced by huge numbers, strings and
   code). Compiling a mutant and generating its source must end in success or a
   :class:`~nasdsl.errors.NasdslError`, never another exception; generated source must be valid
   Python (``compile()`` only: a mutant's code is never run).

In CI each property runs a bounded, derandomised number of examples. The long run is one command:

    NASDSL_HYPOTHESIS_PROFILE=long python -m pytest tests/test_properties.py
"""

from __future__ import annotations

import copy
import math
import os
import re
import signal
import string
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nasdsl
from nasdsl import ir
from nasdsl.backends.pytorch import generate_source, load_source, prepare
from nasdsl.errors import NasdslError

from test_hostile import generated_problems

SPECS = Path(__file__).resolve().parent.parent / "specs"
SEEDS = sorted(SPECS.glob("googlenet*.yaml"))

# Profiles: "ci" (the default: bounded and derandomised, so CI is repeatable) and "long".
_COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("nasdsl-ci", derandomize=True, print_blob=True, **_COMMON)
settings.register_profile("nasdsl-long", derandomize=False, **_COMMON)
PROFILE_NAME = os.environ.get("NASDSL_HYPOTHESIS_PROFILE", "ci")
if PROFILE_NAME not in ("ci", "long"):
    raise ValueError(f"NASDSL_HYPOTHESIS_PROFILE must be 'ci' or 'long', not {PROFILE_NAME!r}")
PROFILE = settings.get_profile(f"nasdsl-{PROFILE_NAME}")
EXAMPLES = {
    "ci": {"shapes": 80, "mutations": 400, "names": 25},
    "long": {"shapes": 2000, "mutations": 10_000, "names": 2000},
}[PROFILE_NAME]


def profile(kind: str) -> settings:
    return settings(PROFILE, max_examples=EXAMPLES[kind])


# --------------------------------------------------------------------------- shapes, independently

Shape = tuple[int, ...]


def conv_out(size: int, k: int, s: int, p: int, d: int) -> int:
    """torch.nn.Conv2d's documented output size."""
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def pool_out(size: int, k: int, s: int, p: int, ceil_mode: bool) -> int:
    """torch.nn.MaxPool2d/AvgPool2d's documented output size (the last window starts inside)."""
    if not ceil_mode:
        return (size + 2 * p - k) // s + 1
    n = math.ceil((size + 2 * p - k) / s) + 1
    return n - 1 if (n - 1) * s >= size + p else n


# --------------------------------------------------------------------------- random valid specs


@dataclass
class Spec:
    """A spec being generated: its YAML data and the shapes this generator expects."""

    input: Shape
    variables: dict[str, object] = field(default_factory=dict)
    templates: dict[str, dict] = field(default_factory=dict)
    model: dict[str, object] = field(default_factory=dict)
    outputs: dict[str, object] = field(default_factory=dict)
    shapes: dict[str, Shape] = field(default_factory=dict)  # top-level entry -> expected output shape
    uses: dict[str, int] = field(default_factory=dict)
    referred: set[str] = field(default_factory=set)  # entries a ref names
    #: what every use of the Switched template passes as ``sw`` (a template whose uses differ in what
    #: ``when`` switches on needs one class per variant, and is refused): unset, a literal or "extra"
    switch: object = "unset"

    def text(self) -> str:
        doc: dict[str, object] = {"nasdsl": 1, "name": "Net", "input": {"shape": list(self.input)}}
        if self.variables:
            doc["variables"] = self.variables
        if self.templates:
            doc["templates"] = self.templates
        doc["model"] = self.model
        if self.outputs:
            doc["outputs"] = self.outputs
        return yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=100)


# Switches for features that wait for the fix of a bug these properties found (FOUND, at the end):
# a merge may be wrapped in a template of its own (False) where one outside a template root broke
# the PyTorch backend, and a layer may be kept out of the training phase only (False) where that
# broke the ONNX export; both are fixed. A merge has at most PASS_THROUGH_BRANCHES branches that
# the ONNX export drops (identity, dropout): raise it to 3 once that bug is fixed.
MERGES_OUTSIDE_TEMPLATES = True  # FOUND["top-level-merge"]
TRAIN_ONLY_LAYERS = True  # FOUND["train-phase-layer"]
PASS_THROUGH_BRANCHES = 3  # FOUND["onnx-concat-of-dropped-branches"]
# A ref targets an entry at most once, and not one followed by a block that may hand on the same
# tensor (identity, dropout, flatten, a ref, a block with phase or when), where an in-place
# activation after it would overwrite the referenced output. True once that bug is fixed.
REFS_ACROSS_ALIASES = True  # FOUND["inplace-through-an-alias"]

ACTIVATIONS = ["relu", "relu6", "sigmoid", "tanh", "silu", "gelu", "identity"]


@st.composite
def activation(draw) -> object:
    name = draw(st.sampled_from(ACTIVATIONS))
    if name == "gelu" and draw(st.booleans()):
        return {"op": "gelu", "approximate": draw(st.sampled_from(["none", "tanh"]))}
    return name


@st.composite
def pair_or_int(draw, values: st.SearchStrategy[int]) -> tuple[object, int, int]:
    """A kernel/stride/... written as one int or as [h, w]; returns (written, h, w)."""
    h = draw(values)
    if draw(st.booleans()):
        return h, h, h
    w = draw(values)
    return [h, w], h, w


@st.composite
def conv(draw, shape: Shape, *, out: int | None = None, keep_size: bool = False) -> tuple[dict, Shape]:
    c, h, w = shape
    groups = draw(st.sampled_from([g for g in (1, 2, 3, 4) if c % g == 0]))
    if out is None:
        out = groups * draw(st.integers(1, max(1, 8 // groups)))
    if out % groups:
        groups = 1
    block: dict[str, object] = {"op": "conv2d", "out": out}
    if keep_size:  # odd kernel, stride 1, "same" padding written out or spelled 'same'
        k = draw(st.sampled_from([1, 3, 5]))
        d = draw(st.sampled_from([1, 1, 2]))
        block["kernel"] = k
        if d > 1:
            block["dilation"] = d
        if draw(st.booleans()):
            block["padding"] = "same"
        elif k > 1:
            block["padding"] = d * (k - 1) // 2
        out_shape = (out, h, w)
    else:
        kw, kh, kww = draw(pair_or_int(st.integers(1, 4)))
        dw, dh, dww = draw(pair_or_int(st.sampled_from([1, 1, 2])))
        sw, sh, sww = draw(pair_or_int(st.sampled_from([1, 1, 2, 3])))
        pw, ph, pww = draw(pair_or_int(st.integers(0, 2)))
        if conv_out(h, kh, sh, ph, dh) < 1 or conv_out(w, kww, sww, pww, dww) < 1:
            kw, kh, kww, dw, dh, dww = 1, 1, 1, 1, 1, 1
        block["kernel"] = kw
        for key, written, default in (("stride", sw, 1), ("padding", pw, 0), ("dilation", dw, 1)):
            if written != default and written != [default, default]:
                block[key] = written
        out_shape = (out, conv_out(h, kh, sh, ph, dh), conv_out(w, kww, sww, pww, dww))
    if groups > 1:
        block["groups"] = groups
    if draw(st.integers(0, 3)) == 0:
        block["bias"] = False
    return block, out_shape


@st.composite
def pool(draw, shape: Shape, *, keep_size: bool = False) -> tuple[dict, Shape]:
    c, h, w = shape
    op = draw(st.sampled_from(["max_pool", "avg_pool"]))
    if keep_size:
        k = draw(st.sampled_from([1, 3]))
        return {"op": op, "kernel": k, "stride": 1, "padding": k // 2}, shape
    k = draw(st.integers(1, min(3, h, w)))
    s = draw(st.integers(1, 3))
    p = draw(st.integers(0, k // 2))
    ceil_mode = draw(st.booleans())
    block: dict[str, object] = {"op": op, "kernel": k}
    if s != k or draw(st.booleans()):
        block["stride"] = s
    if p:
        block["padding"] = p
    if ceil_mode:
        block["ceil_mode"] = True
    if op == "avg_pool" and draw(st.booleans()):
        block["count_include_pad"] = False
    return block, (c, pool_out(h, k, s, p, ceil_mode), pool_out(w, k, s, p, ceil_mode))


@st.composite
def shape_keeping(draw, shape: Shape) -> tuple[object, Shape]:
    """A block that keeps the shape: an activation, batch norm, dropout, lrn, softmax."""
    kind = draw(st.sampled_from(["act", "act", "bn", "dropout", "lrn", "softmax"]))
    if kind == "act":
        return draw(activation()), shape
    if kind == "bn":
        return draw(st.sampled_from(["batch_norm", {"op": "batch_norm", "eps": 0.001, "momentum": 0.01}])), shape
    if kind == "dropout":
        return {"op": "dropout", "p": draw(st.sampled_from([0.0, 0.2, 0.5]))}, shape
    if kind == "lrn" and len(shape) == 3:
        return {"op": "lrn", "size": draw(st.integers(1, 5)), "alpha": 0.001, "beta": 0.75, "k": 2}, shape
    return "softmax", shape


@st.composite
def branch(draw, shape: Shape, out: int | None) -> tuple[object, Shape]:
    """A branch of a merge that keeps the spatial size (ending with ``out`` channels if given)."""
    items: list[object] = []
    current = shape
    if draw(st.booleans()):
        block, current = draw(shape_keeping(current))
        items.append(block)
    if out is not None or draw(st.booleans()):
        kind = draw(st.sampled_from(["conv", "conv", "pool"])) if out is None or out == current[0] else "conv"
        if kind == "conv":
            block, current = draw(conv(current, out=out, keep_size=True))
        else:
            block, current = draw(pool(current, keep_size=True))
        items.append(block)
    if not items:
        items.append(draw(activation()))
    return (items[0] if len(items) == 1 else items), current


def _aliases(block: object) -> bool:
    """Whether a model entry may hand on its input tensor itself (or a view of it)."""
    if block in ("identity", "flatten"):
        return True
    return isinstance(block, dict) and (
        block.get("op") in ("identity", "dropout", "flatten") or bool({"ref", "phase", "when"} & set(block))
    )


def _passes_through(block: object) -> bool:
    items = block if isinstance(block, list) else [block]
    return all(
        b == "identity" or isinstance(b, dict) and b.get("op") in ("identity", "dropout") and "when" not in b
        for b in items
    )


@st.composite
def merge(draw, shape: Shape) -> tuple[dict, Shape]:
    op = draw(st.sampled_from(["concat", "add"]))
    n = draw(st.integers(2, 3))
    out = None
    if op == "add":
        out = draw(st.sampled_from([shape[0], draw(st.integers(1, 8))]))
    branches = [draw(branch(shape, out)) for _ in range(n)]
    passing = [i for i, (b, _) in enumerate(branches) if _passes_through(b)]
    for i in passing[PASS_THROUGH_BRANCHES:]:
        branches[i] = ("relu", branches[i][1])
    shapes = [s for _, s in branches]
    if op == "add":
        assert all(s == shapes[0] for s in shapes)
        result = shapes[0]
    else:
        result = (sum(s[0] for s in shapes), *shape[1:])
    blocks: object = [b for b, _ in branches]
    if draw(st.booleans()):
        blocks = {f"b{i}": b for i, b in enumerate(blocks)}
    return {op: blocks}, result


# Templates: parametric families whose output shape this generator can compute for any arguments.


def _conv_block_template(draw) -> tuple[dict, Callable[[Shape, dict], Shape]]:
    body: dict[str, object] = {"conv": {"op": "conv2d", "out": "c", "kernel": "k", "padding": "(k - 1) // 2"}}
    if draw(st.booleans()):
        body["bn"] = "batch_norm"
    body["act"] = draw(activation())
    if draw(st.booleans()):  # the parameter used a second time
        body["conv2"] = {"op": "conv2d", "out": "c", "kernel": 1}
    template = {"doc": "A convolution block.", "params": ["c", {"k": draw(st.sampled_from([1, 3]))}], "body": body}
    return template, lambda shape, args: (args["c"], *shape[1:])


def _mixed_template(draw) -> tuple[dict, Callable[[Shape, dict], Shape]]:
    branches = {
        "one": {"op": "conv2d", "out": "c", "kernel": 1},
        "three": [{"op": "conv2d", "out": "c // 2 + 1", "kernel": 3, "padding": 1}, "relu"],
        "pool": {"op": "max_pool", "kernel": 3, "stride": 1, "padding": 1},
    }
    template = {"params": ["c"], "body": {"concat": branches}}
    return template, lambda shape, args: (args["c"] + args["c"] // 2 + 1 + shape[0], *shape[1:])


def _down_template(draw) -> tuple[dict, Callable[[Shape, dict], Shape]]:
    template = {
        "params": ["c", {"s": 2}],
        "body": [{"op": "conv2d", "out": "c", "kernel": 3, "stride": "s", "padding": 1}, draw(activation())],
    }
    return template, lambda shape, args: (args["c"], *(conv_out(x, 3, args.get("s", 2), 1, 1) for x in shape[1:]))


def _residual_template(draw) -> tuple[dict, Callable[[Shape, dict], Shape]]:
    main = [{"op": "conv2d", "out": "c", "kernel": 3, "padding": 1, "bias": False}, "batch_norm"]
    template = {"params": ["c"], "body": {"add": {"main": main, "skip": "identity"}}}
    return template, lambda shape, args: shape


def _switched_template(draw) -> tuple[dict, Callable[[Shape, dict], Shape]]:
    """Layers a parameter switches off: with ``sw`` bound to a variable, a constructor argument
    of the model that the template class takes too."""
    body = {
        "conv": {"op": "conv2d", "out": "c", "kernel": 1},
        "bn": {"op": "batch_norm", "when": "sw"},
        "act": draw(activation()),
        "drop": {"op": "dropout", "p": 0.1, "when": "sw"},
        "act2": draw(activation()),
    }
    return {"params": ["c", {"sw": False}], "body": body}, lambda shape, args: (args["c"], *shape[1:])


TEMPLATE_FAMILIES = {
    "ConvBlock": _conv_block_template,
    "Mixed": _mixed_template,
    "Down": _down_template,
    "Residual": _residual_template,
    "Switched": _switched_template,
}


@st.composite
def template_use(draw, spec: Spec, shape: Shape, rules: dict) -> tuple[dict, Shape] | None:
    if not rules:
        return None
    name = draw(st.sampled_from(sorted(rules)))
    if name == "Residual":
        args: dict[str, int] = {"c": shape[0]}
    elif name == "Down":
        args = {"c": draw(st.integers(1, 8))}
        if draw(st.booleans()):
            args["s"] = draw(st.integers(1, 2))
        if min(shape[1:]) < 2:
            return None
    else:
        args = {"c": draw(st.integers(1, 8))}
        if name == "ConvBlock" and draw(st.booleans()):
            args["k"] = draw(st.sampled_from([1, 3]))
        if name == "Switched":
            if spec.switch == "unset":
                # mostly the variable: that is the case where the model passes its argument on
                spec.switch = draw(st.sampled_from([None, True, *(["extra"] * 4 if "extra" in spec.variables else [])]))
            if spec.switch is not None:
                args["sw"] = spec.switch
    written: dict | list
    if draw(st.booleans()) and list(args) == ["c"]:
        written = [args["c"]]
    elif "width" in spec.variables and args.get("c") == spec.variables["width"] and name != "Residual":
        written = {**args, "c": "width"}
    else:
        written = dict(args)
    spec.uses[name] = spec.uses.get(name, 0) + 1
    return {"use": name, "args": written}, rules[name](shape, args)


def _ref_targets(spec: Spec) -> list[str]:
    """The entries a ref may name (see REFS_ACROSS_ALIASES)."""
    names = list(spec.model)
    targets = [n for n in names if n in spec.shapes]
    if REFS_ACROSS_ALIASES:
        return targets
    following = dict(zip(names, names[1:], strict=False))
    return [n for n in targets if n not in spec.referred and not _aliases(spec.model.get(following.get(n)))]


@st.composite
def specs(draw) -> tuple[str, Spec]:
    """A random valid spec as YAML text, with the shapes expected of it."""
    c = draw(st.integers(1, 4))
    spec = Spec(input=(c, draw(st.integers(7, 19)), draw(st.integers(7, 19))))
    rules = {}
    for name in draw(st.lists(st.sampled_from(sorted(TEMPLATE_FAMILIES)), max_size=3, unique=True)):
        spec.templates[name], rules[name] = TEMPLATE_FAMILIES[name](draw)
    if draw(st.booleans()):
        spec.variables["width"] = draw(st.integers(1, 8))
    if draw(st.booleans()):
        spec.variables["rate"] = draw(st.sampled_from([0.1, 0.25]))  # changes no size: a constructor argument
    if draw(st.booleans()):
        spec.variables["extra"] = draw(st.booleans())  # a switch: a constructor argument

    shape: Shape = spec.input
    entries = draw(st.integers(1, 7))
    for i in range(entries):
        name = f"e{i}"
        kind = draw(st.sampled_from(["conv", "conv", "pool", "keep", "merge", "merge", "use", "use", "ref", "misc"]))
        block: object = None
        new_shape = shape
        if kind == "conv":
            block, new_shape = draw(conv(shape))
            if "width" in spec.variables and draw(st.booleans()):
                block["out"] = "width * 2" if draw(st.booleans()) else "width"
                new_shape = (spec.variables["width"] * (2 if block["out"] == "width * 2" else 1), *new_shape[1:])
                if block.get("groups", 1) > 1:
                    del block["groups"]
        elif kind == "pool":
            block, new_shape = draw(pool(shape))
        elif kind == "keep":
            block, new_shape = draw(shape_keeping(shape))
            if "rate" in spec.variables and isinstance(block, dict) and block.get("op") == "dropout":
                block["p"] = "rate"
            if draw(st.booleans()):
                block = {"op": block} if isinstance(block, str) else dict(block)
                if "extra" in spec.variables:
                    block["when"] = "extra"
                else:
                    block["phase"] = draw(st.sampled_from(["train", "eval"] if TRAIN_ONLY_LAYERS else ["eval"]))
        elif kind == "merge":
            block, new_shape = draw(merge(shape))
            if not MERGES_OUTSIDE_TEMPLATES:
                spec.templates[f"Merge{i}"] = {"body": block}
                block = {"use": f"Merge{i}"} if draw(st.booleans()) else f"Merge{i}"
        elif kind == "use":
            found = draw(template_use(spec, shape, rules))
            if found is not None:
                block, new_shape = found
        elif kind == "ref":
            earlier = _ref_targets(spec)
            if earlier:
                target = draw(st.sampled_from(earlier))
                spec.model[name] = {"ref": target}
                spec.referred.add(target)
                if "extra" in spec.variables and draw(st.integers(0, 3)) == 0:
                    spec.model[name]["when"] = "extra"  # followed or not: extra cannot be a constructor argument
                    if not spec.variables["extra"]:
                        continue  # switched off: the shape stays
                shape = spec.shapes[target]
                continue
        else:
            choice = draw(st.sampled_from(["global", "adaptive", "seq"]))
            if choice == "global":
                block, new_shape = {"op": "global_avg_pool"}, (shape[0], 1, 1)
            elif choice == "adaptive":
                size = draw(st.integers(1, min(shape[1:])))
                block, new_shape = {"op": "adaptive_avg_pool", "size": size}, (shape[0], size, size)
            else:  # a nested named sequence
                first, mid = draw(conv(shape, keep_size=True))
                second, new_shape = draw(shape_keeping(mid))
                block = {"first": first, "second": second}
        if block is None:
            block, new_shape = draw(activation()), shape
        spec.model[name] = block
        spec.shapes[name] = shape = new_shape
    map_entries = [n for n in spec.shapes if len(spec.shapes[n]) == 3]
    if draw(st.booleans()):
        spec.model["flat"] = "flatten"
        spec.shapes["flat"] = shape = (math.prod(shape),)
        if draw(st.booleans()):
            spec.model["bn1d"] = "batch_norm"
            spec.shapes["bn1d"] = shape
        out = draw(st.integers(1, 10))
        spec.model["fc"] = {"op": "linear", "out": out}
        spec.shapes["fc"] = shape = (out,)
    if map_entries and draw(st.integers(0, 2)) == 0:
        source = draw(st.sampled_from(map_entries))
        last = list(spec.model)[-1]
        # usually the last entry; an earlier one leaves the entries after it computed for nothing
        main = last if draw(st.integers(0, 3)) else draw(st.sampled_from(list(spec.model)))
        spec.outputs["main"] = {"from": main}
        if main in map_entries and draw(st.integers(0, 3)) == 0:
            spec.outputs["main"]["head"] = ["global_avg_pool", "flatten", {"op": "linear", "out": 4}]
        spec.outputs["aux"] = {
            "from": source,
            "head": ["global_avg_pool", "flatten", {"op": "linear", "out": 3}],
            "loss_weight": 0.3,
            "training_only": draw(st.booleans()),
        }
    return spec.text(), spec


# --------------------------------------------------------------------------- property 1: shapes and backends


def _compile(tmp_path: Path, text: str, name: str = "spec.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return nasdsl.compile_spec(path)


def _model_and_hooks(compiled, source: str):
    import torch

    model = load_source(source).Net()
    model.eval()
    seen: dict[str, tuple[int, ...]] = {}
    for name, module in model.named_children():
        module.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, tuple(o.shape)))
    return model, seen, torch


@profile("shapes")
@given(specs())
def test_inferred_shapes_are_pytorchs_and_onnx_agrees(tmp_path_factory, generated) -> None:
    text, spec = generated
    tmp_path = tmp_path_factory.mktemp("spec")
    compiled = _compile(tmp_path, text)
    g = compiled.graph
    top = {t.name: t for t in ir.info(g).model.children}
    for name, expected in spec.shapes.items():
        assert ir.node(g, top[name].passed).shape == expected, f"{name}: nasdsl and this generator disagree\n{text}"

    source = generate_source(compiled)
    assert generated_problems(source) == [], text
    model, seen, torch = _model_and_hooks(compiled, source)
    x = torch.randn(2, *spec.input, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        result = model(x)
    main = result if isinstance(result, torch.Tensor) else result[0]
    assert tuple(main.shape) == (2, *ir.node(g, ir.info(g).outputs[0].node).shape), text
    for name, t in top.items():
        if name in seen and t.kind not in ("ref", "skip") and not t.dormant:
            assert seen[name] == (2, *ir.node(g, t.output).shape), f"{name}: PyTorch disagrees\n{text}"

    from nasdsl.backends.verify import verify

    # the tolerance is relative to the output's largest magnitude: a batch of VERIFY_BATCH keeps a
    # one-unit output whose sum happens to cancel near zero from standing for the output's scale
    result = verify(compiled, batch=VERIFY_BATCH)
    assert result.ok, f"{result}\n{text}"
    _every_switch_flipped_agrees(tmp_path / "spec.yaml", compiled, source, text)


VERIFY_BATCH = 4


def _every_switch_flipped_agrees(path: Path, compiled, source: str, text: str) -> None:
    """The generated class takes the exposed switches as constructor arguments: built with
    one of them flipped, it must compute what the ONNX export of the spec compiled with that
    value computes, on the same weights (what it may do in place depends on the switches)."""
    import torch

    from nasdsl.backends.onnx import export_onnx
    from nasdsl.backends.verify import compare, run_onnx, torch_outputs

    shape = ir.node(compiled.graph, ir.info(compiled.graph).input).shape
    x = torch.randn(VERIFY_BATCH, *shape, generator=torch.Generator().manual_seed(1))

    variables = ir.info(compiled.graph).variables
    for name in ir.info(prepare(compiled)).exposed:
        if not isinstance(variables[name], bool):
            continue
        flipped = {name: not variables[name]}
        model = load_source(source).Net(**flipped).eval()
        other = nasdsl.compile_spec(path, overrides=flipped)
        got = run_onnx(
            export_onnx(other, state_dict=model.state_dict(), batch=VERIFY_BATCH),
            {ir.info(other.graph).input: x.numpy()},
        )
        want = torch_outputs(model, x, list(got))
        assert set(want) == set(got), f"{name}={flipped[name]}: outputs differ\n{text}"
        for output, value in got.items():
            check = compare(output, value, want[output], 1e-4)
            assert check.ok, f"{name}={flipped[name]}: {check}\n{text}"


# --------------------------------------------------------------------------- property 1b: hostile names

# Names a generated file could trip over: builtins, what nn.Module, nn.Sequential and nn.ModuleDict
# define, what the generated file itself defines or uses, and names that differ only by case or
# underscores (and from the renamed forms: torch_1).
HOSTILE_NAMES = [
    *("sum", "int", "float", "max", "min", "list", "dict", "type", "id", "input", "print", "len", "range"),
    *("object", "str", "bool", "tuple", "super", "isinstance", "enumerate", "zip", "map", "eval", "exec"),
    *("forward", "train", "training", "to", "cuda", "half", "apply", "modules", "parameters", "state_dict"),
    *("children", "add_module", "register_buffer", "values", "keys", "items", "update", "pop", "append"),
    *("torch", "nn", "F", "math", "NamedTuple", "OrderedDict", "Concat", "Add", "x", "self", "results", "total"),
    *("branch", "result", "loss", "loss_weights", "reset_parameters", "input_mean", "Net", "NetOutputs"),
    *("Torch", "TORCH", "torch_", "torch_1", "x_1", "X", "_x", "x__", "Self", "Concat_1", "sum_1", "self_1"),
]
#: the identifiers specs() writes that may be renamed, and where a name is an attribute (kept, or refused)
RENAMABLE = [
    *(f"e{i}" for i in range(7)),
    *("flat", "bn1d", "fc", "main", "aux", "conv", "bn", "act", "conv2", "drop", "act2", "first", "second"),
    *("b0", "b1", "b2", "one", "three", "skip", "c", "s", "sw", "width", "rate", "extra"),
    *TEMPLATE_FAMILIES,
]
_TEMPLATE_NAMES = set(TEMPLATE_FAMILIES)


@st.composite
def hostile_specs(draw) -> tuple[str, Spec, dict[str, str]]:
    """A spec of specs() whose names are replaced, one to one, by names from HOSTILE_NAMES."""
    from nasdsl.backends.names import TAKEN_ATTRIBUTES

    text, spec = draw(specs())
    present = [n for n in RENAMABLE if re.search(rf"\b{n}\b", text)]
    # mostly names that can work anywhere; now and then one that a layer may not take (refused)
    pool = HOSTILE_NAMES if draw(st.integers(0, 3)) == 0 else [n for n in HOSTILE_NAMES if n not in TAKEN_ATTRIBUTES]
    pool = [n for n in pool if n != "x"]  # the input's name: refused as an entry name, by the parser
    chosen = draw(st.lists(st.sampled_from(pool), min_size=len(present), max_size=len(present), unique=True))
    rename = {}
    for old, new in zip(present, chosen, strict=True):
        if old in _TEMPLATE_NAMES and (new in nasdsl.ops.OPS or not new[0].isalpha()):
            continue  # a template may not be named like an op
        if old in ("c", "s", "sw") and new in ("self", "in_channels"):
            continue  # reserved parameter names: the parser says so
        rename[old] = new
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, sorted(rename, key=len, reverse=True))) + r")\b")
    renamed = pattern.sub(lambda m: rename[m[1]], text) if rename else text
    name = draw(st.sampled_from(["Net", "torch", "nn", "Concat", "sum", "Self"]))
    renamed = renamed.replace("name: Net\n", f"name: {name}\n", 1)
    return renamed, spec, {**rename, "__model__": name}


@profile("names")
@given(hostile_specs())
def test_hostile_names_give_a_working_model_or_a_located_refusal(tmp_path_factory, generated) -> None:
    """Every identifier of the generated file comes from one namespace: a spec name that would
    shadow a builtin, an import, a generated class or local is renamed; a layer name that would
    hide an nn.Module, nn.Sequential or nn.ModuleDict attribute (a state_dict key, kept exactly)
    is refused with a located error. Whatever compiles imports, builds, runs in train and eval,
    has the shapes shape inference predicts and agrees with its ONNX export."""
    import torch

    from nasdsl.backends.names import TAKEN_ATTRIBUTES
    from nasdsl.backends.pytorch import generate
    from nasdsl.backends.verify import verify

    text, spec, rename = generated
    tmp_path = tmp_path_factory.mktemp("names")
    try:
        compiled = _compile(tmp_path, text)
    except NasdslError as e:  # a name the language refuses in that place (a variable named like a function, ...)
        assert all(one.location is not None for one in getattr(e, "errors", [e])), f"{e}\n{text}"
        return
    try:
        code = generate(compiled)
    except NasdslError as e:
        clash = re.search(r"name '([^']+)' clashes", str(e))
        assert clash and (clash[1] in TAKEN_ATTRIBUTES or clash[1].startswith("_")), f"{e}\n{text}"
        assert e.location is not None and str(e).count("\n") == 0, str(e)
        return
    assert generated_problems(code.source, None) == [], text
    model = getattr(load_source(code.source), code.model_class)()
    shapes = {rename.get(k, k): v for k, v in spec.shapes.items()}
    seen: dict[str, tuple[int, ...]] = {}
    for child, module in model.named_children():
        module.register_forward_hook(lambda m, i, o, child=child: seen.__setitem__(child, tuple(o.shape)))
    x = torch.randn(VERIFY_BATCH, *spec.input, generator=torch.Generator().manual_seed(0))
    for training in (True, False):
        model.train(training)
        with torch.no_grad():
            out = model(x)
        first = out if isinstance(out, torch.Tensor) else out[0]
        assert torch.isfinite(first).all(), text
    top = {t.name: t for t in ir.info(compiled.graph).model.children}
    for entry, expected in shapes.items():
        assert ir.node(compiled.graph, top[entry].passed).shape == expected, text
        if entry in seen and top[entry].kind not in ("ref", "skip") and not top[entry].dormant:
            assert seen[entry] == (VERIFY_BATCH, *expected), f"{entry}: PyTorch disagrees\n{text}"
    result = verify(compiled, batch=VERIFY_BATCH)
    assert result.ok, f"{result}\n{text}"


# --------------------------------------------------------------------------- property 2: mutants


SEED_TEXTS = [p.read_text() for p in SEEDS]
WEIRD_VALUES = [
    None, True, 0, -1, 2**31, 10**30, 2**53 + 1, 1e308, -1e-300, float("nan"), float("inf"), 0.5, "", "relu",
    "x" * 200, "same", "c * 2", "10**10**10", "__import__('os').system('touch PWNED')", "torch", "self", "forward",
    [], [1, 2, 3], {}, {"op": "relu"}, {"use": "Nope"}, {"ref": "nowhere"}, {"concat": [1, 2]}, [[[[[]]]]],
]  # fmt: skip
WEIRD_KEYS = [
    "op",
    "use",
    "ref",
    "concat",
    "add",
    "args",
    "when",
    "phase",
    "doc",
    "head",
    "from",
    "extends",
    "x",
    "__init__",
]


def _paths(node: object, path: tuple = ()) -> Iterator[tuple]:
    yield path
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*path, i))


def _get(node: object, path: tuple) -> object:
    for p in path:
        node = node[p]  # type: ignore[index]
    return node


@st.composite
def tree_mutant(draw, text: str) -> str:
    doc = yaml.safe_load(text)
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(doc))
        path = draw(st.sampled_from(paths))
        if not path:
            continue
        parent, key = _get(doc, path[:-1]), path[-1]
        action = draw(st.sampled_from(["delete", "replace", "retype", "duplicate", "rename", "insert"]))
        if action == "delete":
            del parent[key]
        elif action == "replace":
            parent[key] = copy.deepcopy(draw(st.sampled_from(WEIRD_VALUES)))
        elif action == "retype":
            value = parent[key]
            parent[key] = [value] if not isinstance(value, list) else {"k": value} if value else str(value)
        elif action == "duplicate" and isinstance(parent, list):
            parent.insert(key, copy.deepcopy(parent[key]))
        elif action in ("duplicate", "rename") and isinstance(parent, dict):
            others = [k for k in parent if k != key]
            new = draw(st.sampled_from(others)) if action == "rename" and others else f"{key}_copy"
            value = parent.pop(key) if action == "rename" else copy.deepcopy(parent[key])
            parent[new] = value  # rename onto another key replaces it, as swapping names would
        elif action == "insert" and isinstance(parent, dict):
            parent[draw(st.sampled_from(WEIRD_KEYS))] = copy.deepcopy(draw(st.sampled_from(WEIRD_VALUES)))
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, default_flow_style=None)


@st.composite
def text_mutant(draw, text: str) -> bytes:
    lines = text.splitlines(keepends=True)
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(["delete", "duplicate", "swap", "truncate", "bytes", "digits", "indent"]))
        i = draw(st.integers(0, max(0, len(lines) - 1)))
        if not lines:
            break
        if action == "delete":
            del lines[i]
        elif action == "duplicate":
            lines.insert(i, lines[i])
        elif action == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif action == "truncate":
            lines[i] = lines[i][: draw(st.integers(0, len(lines[i])))]
        elif action == "indent":
            lines[i] = draw(st.sampled_from(["", " ", "\t", "    "])) + lines[i].lstrip(" ")
        elif action == "digits":
            digits = [j for j, ch in enumerate(lines[i]) if ch.isdigit()]
            if digits:
                j = draw(st.sampled_from(digits))
                lines[i] = (
                    lines[i][:j] + draw(st.sampled_from(["9" * 30, "-", ".5", "e9", "0", "x"])) + lines[i][j + 1 :]
                )
        else:
            junk = draw(st.text(alphabet=string.printable + "\0\x1b\u2028\ufeff", max_size=8))
            j = draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:j] + junk + lines[i][j:]
    data = "".join(lines).encode()
    if draw(st.integers(0, 9)) == 0:
        data += draw(st.binary(max_size=16))
    return data


@st.composite
def mutants(draw) -> bytes:
    if draw(st.booleans()):
        text = draw(st.sampled_from(SEED_TEXTS))
    else:
        text, _ = draw(specs())
    if draw(st.booleans()):
        return draw(tree_mutant(text)).encode()
    return draw(text_mutant(text))


class _Slow(Exception):
    pass


@contextmanager
def _alarm(seconds: int) -> Iterator[None]:
    """Turn a runaway compilation into a failure naming the mutant rather than a stuck CI job."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def ring(signum, frame) -> None:
        raise _Slow(f"no result within {seconds} s")

    old = signal.signal(signal.SIGALRM, ring)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@profile("mutations")
@given(mutants())
def test_mutants_compile_or_fail_with_a_nasdsl_error(tmp_path_factory, data: bytes) -> None:
    path = tmp_path_factory.mktemp("mutant") / "spec.yaml"
    path.write_bytes(data)
    with _alarm(60):
        try:
            compiled = nasdsl.compile_spec(path)
            source = generate_source(compiled)
        except NasdslError:
            return
    compile(source, "<generated>", "exec")  # never run: only its syntax is checked


# --------------------------------------------------------------------------- what the properties found

# Minimal specs for the bugs the properties found (or that turned up while reducing them) in code
# these tests do not own. An open bug is expected to fail, strictly, so that its fix shows up as a
# pass to un-mark; a fixed one stays as a regression test.
FOUND = {
    "top-level-merge": (
        "fixed",
        "backends/pytorch.py: a merge outside a template root used the Concat/Add helper without defining it",
        "name: Net\ninput: {shape: [3, 8, 8]}\nmodel:\n  cat: {concat: {a: relu, b: {op: max_pool, kernel: 1}}}\n",
    ),
    "train-phase-layer": (
        "fixed",
        "nasdsl/passes/phases.py inference_graph: a phase: train layer inside the model was removed, not "
        "bypassed, so the layer after it lost its input (ONNX export: ValueError)",
        "name: Net\ninput: {shape: [3, 8, 8]}\nmodel:\n  f: {op: dropout, phase: train}\n"
        "  g: {op: conv2d, out: 4, kernel: 1}\n",
    ),
    "inplace-through-an-alias": (
        "fixed",
        "backends/pytorch.py _can_inplace: nn.ReLU(inplace=True) after nn.Identity (or eval dropout, flatten, a "
        "skipped block, a ref) overwrites the tensor of the entry before it, which a later ref reads: PyTorch "
        "returns relu(conv) where the spec (and ONNX) say conv",
        "name: Net\ninput: {shape: [3, 8, 8]}\nmodel:\n  e0: {op: conv2d, out: 4, kernel: 1}\n  e1: identity\n"
        "  e2: relu\n  e3: {ref: e0}\n",
    ),
    "template-first-on-the-input": (
        "fixed",
        "backends/pytorch.py: a template starting with an activation, used on the model input and again later, "
        "is refused ('needs different code') because inplace=True differs between its uses",
        "name: Net\ninput: {shape: [3, 8, 8]}\ntemplates:\n  T:\n    body: {a: relu}\nmodel:\n  b0: T\n  b1: T\n",
    ),
    "concat-of-one-node-twice": (
        "fixed",
        "nasdsl/build.py, nasdsl/ir/: the graph is a DiGraph, so two inputs from the same node are one edge; "
        "a concat of the same node twice is refused with 'expected 2 to 65536 inputs to concat, got 1'",
        "name: Net\ninput: {shape: [3, 8, 8]}\nmodel:\n  a: relu\n  cat: {concat: [{ref: a}, {ref: a}]}\n",
    ),
    "inplace-after-a-switchable-block": (
        "fixed",
        "backends/pytorch.py _can_inplace: the code is written from the graph with every exposed switch on, so "
        "a ReLU after a `when: extra` BatchNorm was made in-place; with extra off (the default) it overwrote "
        "the tensor before the BatchNorm, which a later ref reads",
        "name: Net\ninput: {shape: [3, 8, 8]}\nvariables: {extra: false}\nmodel:\n"
        "  e0: {op: conv2d, out: 4, kernel: 1}\n  e1: {op: batch_norm, when: extra}\n  e2: relu\n  e3: {ref: e0}\n",
    ),
    "main-output-from-an-earlier-entry": (
        "fixed",
        "backends/pytorch.py model_class: forward returned the last entry's value whatever the main output's "
        "`from` said (here 5 channels from e instead of d's 4)",
        "name: Net\ninput: {shape: [3, 8, 8]}\nmodel:\n  a: {op: conv2d, out: 4, kernel: 1}\n  d: relu\n"
        "  e: {op: conv2d, out: 5, kernel: 1}\noutputs:\n  main: {from: d}\n",
    ),
    "main-output-with-a-head": (
        "fixed",
        "backends/pytorch.py model_class: the main output's head was neither built nor applied (the state_dict "
        "lacked main.2.weight; forward returned the trunk)",
        "name: Net\ninput: {shape: [3, 8, 8]}\nmodel:\n  a: {op: conv2d, out: 4, kernel: 1}\n  d: relu\n"
        "outputs:\n  main: {from: d, head: [global_avg_pool, flatten, {op: linear, out: 3}]}\n",
    ),
    "main-output-switched-by-a-variable": (
        "fixed",
        "backends/pytorch.py exposed_variables: a variable in the first output's `when` became a constructor "
        "argument; with it off the spec's main output is the next one, but the class still returned both",
        "name: Net\ninput: {shape: [3, 8, 8]}\nvariables: {more: true}\nmodel:\n"
        "  a: {op: conv2d, out: 4, kernel: 1}\n  d: relu\n  e: {op: conv2d, out: 5, kernel: 1}\n"
        "outputs:\n  main: {from: d, when: more}\n  side: {from: e}\n",
    ),
    "plain-output-switched-by-a-variable": (
        "fixed",
        "backends/pytorch.py exposed_variables: a variable in the `when` of an output without a head became a "
        "constructor argument, but forward returned that output whatever its value",
        "name: Net\ninput: {shape: [3, 8, 8]}\nvariables: {more: true}\nmodel:\n"
        "  a: {op: conv2d, out: 4, kernel: 1}\n  e: {op: conv2d, out: 5, kernel: 1}\n"
        "outputs:\n  main: {from: e}\n  side: {from: a, when: more}\n",
    ),
    "output-and-ref-of-a-switched-off-entry": (
        "fixed",
        "backends/pytorch.py _statements: an entry switched off by a folded `when` got no line in forward, so an "
        "output reading it was never assigned (NameError: name 'aux' is not defined) and a ref to it, as the "
        "first entry, was refused",
        "name: Net\ninput: {shape: [3, 8, 8]}\nvariables: {extra: false}\nmodel:\n"
        "  e0: {op: batch_norm, when: extra}\n  e1: {op: conv2d, out: 4, kernel: 1}\n  e2: relu\n  e3: {ref: e0}\n"
        "  e4: {op: conv2d, out: 2, kernel: 1}\n  e5: {ref: e0, when: extra}\noutputs:\n  main: {from: e4}\n"
        "  aux: {from: e0, head: [global_avg_pool, flatten, {op: linear, out: 3}], training_only: false}\n",
    ),
    "ref-switched-by-a-variable": (
        "fixed",
        "backends/pytorch.py exposed_variables: a variable in a ref's `when` became a constructor argument, but "
        "forward read the referenced entry unconditionally (the code is written with every switch on)",
        "name: Net\ninput: {shape: [3, 8, 8]}\nvariables: {flag: false}\nmodel:\n"
        "  a: {op: conv2d, out: 4, kernel: 1}\n  b: {op: conv2d, out: 4, kernel: 1}\n  r: {ref: a, when: flag}\n"
        "  c: relu\n",
    ),
    "onnx-concat-of-dropped-branches": (
        "fixed",
        "backends/onnx.py export_graph: dropping identity and dropout joins the branches' two edges into one, "
        "so the exported concat has one input: a silently wrong model (1 channel instead of 2)",
        "name: Net\ninput: {shape: [3, 8, 8]}\ntemplates:\n  M:\n"
        "    body: {concat: [identity, {op: dropout, p: 0.0}]}\nmodel:\n  m: M\n",
    ),
}


def _found_params():
    for key, (state, why, text) in FOUND.items():
        marks = pytest.mark.xfail(strict=True, reason=why) if state == "open" else ()
        yield pytest.param(text, id=key, marks=marks)


@pytest.mark.parametrize("text", list(_found_params()))
def test_found_by_the_properties(tmp_path: Path, text: str) -> None:
    """Each compiles, runs in PyTorch and exports to ONNX that computes the same."""
    import torch

    compiled = _compile(tmp_path, text)
    model = load_source(generate_source(compiled)).Net().eval()
    with torch.no_grad():
        model(torch.randn(2, 3, 8, 8))
    from nasdsl.backends.verify import verify

    assert verify(compiled).ok
    _every_switch_flipped_agrees(tmp_path / "spec.yaml", compiled, generate_source(compiled), text)
