"""Fuse sibling convolutions: one wide convolution, then a channel split.

Convolutions of one rank (``conv1d``, ``conv2d``, ``conv3d``) that read the
same tensor with the same window (kernel, stride, padding, dilation; ``groups``
1) compute independent output channels of one convolution.
:func:`fuse_siblings` replaces each such set (two or more, none an output) by

- one convolution of their rank with their output channels added up, ``<block>.fused``: a new
  entry of the innermost block holding them all, before them (an Inception
  module's merge is wrapped in a named sequence at its own path, the fused
  convolution first: ``inception3a.fused``), where the tree has such a place;
- one ``slice`` per original convolution in its place, which its readers now
  read: named ``<parent>.split`` for an entry of a named sequence
  (``inception3a.branch2.0.split``), else under the convolution's own name
  (an item of an unnamed sequence keeps its index, a branch its name).

The fused layer's ``out`` and the slices' bounds are written in the terms of
the class that holds the fused layer (``c1x1 + c3x3red + c5x5red``, translated
through the uses' arguments), so every Inception module keeps one class; the
uses of a template whose convolution became a slice are inlined into that
class (see :mod:`nasdsl.ir.rewrite`). In a ResNet-50 bottleneck whose
projection has stride 1, the projection and the first 1x1 convolution become
one (that block alone then differs from the other bottlenecks, and is written
as a class of its own). Convolutions with different windows (SqueezeNet's
1x1 and 3x3 expands) are left alone, and so are sets the tree has no place for
(such as convolutions that read a value made inside the entry holding one of
them: LR-ASPP's low classifier beside the backbone row that reads the same map).

It preserves the function the graph computes (each slice holds exactly the
channels its convolution computed), the shapes every reader sees, the
outputs, and every node that is not one of the fused convolutions. The fused
layer has a bias when any part had one (zeros for the others).

Weights are not read: each fusion is recorded as a
:class:`~nasdsl.passes.derive.JoinLayers` step in the graph's ``derivation``.
The argument is left unchanged.
"""

from __future__ import annotations

import dataclasses

import networkx as nx

from nasdsl import ir
from nasdsl.ir.rewrite import RewriteError, Rewriter
from nasdsl.ir.sym import Sym
from nasdsl.ops import OPS
from nasdsl.ops.conv import CONV_NAMES
from nasdsl.passes.derive import JoinLayers, given_of, record
from nasdsl.passes.symbolic import infer_symbols

#: the convolutions fused: their output channels are the first axis of their output and weight
CONVOLUTIONS = frozenset(CONV_NAMES.values())

#: attributes that must agree for two convolutions to be fused
WINDOW = ("kernel", "stride", "padding", "dilation")


def sibling_groups(g: nx.DiGraph) -> list[list[str]]:
    """The sets of convolutions :func:`fuse_siblings` fuses, each in graph order."""
    outputs = {o.node for o in ir.info(g).outputs}
    groups: list[list[str]] = []
    rank = None
    for src in ir.order(g):
        by_window: dict[tuple, list[str]] = {}
        for c in g.successors(src):
            data = ir.node(g, c)
            if data.op not in CONVOLUTIONS or data.attrs["groups"] != 1 or c in outputs:
                continue
            by_window.setdefault((data.op, *(data.attrs[k] for k in WINDOW)), []).append(c)
        for convs in by_window.values():
            if len(convs) > 1 and not _split_by_tree(g, src, convs):
                rank = rank or {n: i for i, n in enumerate(ir.order(g))}
                groups.append(sorted(convs, key=rank.__getitem__))
    return groups


def _unique(g: nx.DiGraph, wanted: str) -> str:
    name, i = wanted, 0
    while name in g:
        i += 1
        name = f"{wanted}_{i}"
    return name


def fuse_siblings(g: nx.DiGraph) -> nx.DiGraph:
    """A copy of ``g`` with every set of sibling convolutions fused (see the module docstring)."""
    rw = Rewriter.on_copy(g, infer_symbols)
    for convs in sibling_groups(rw.g):
        try:
            _fuse(rw, convs)
        except RewriteError:
            continue  # the tree has no place for the fused layer: the set stays apart
    return rw.finish()


def _fuse(rw: Rewriter, convs: list[str]) -> None:
    g = rw.g
    (src,) = ir.inputs(g, convs[0])
    holder = rw.holder_of(convs)
    instance = rw.instance_of(holder)
    parts = [ir.node(g, c) for c in convs]
    first = parts[0]
    outs = [_expr(rw, p, "out", instance) for p in parts]
    total = sum(p.attrs["out"] for p in parts)
    bias = any(p.attrs["bias"] for p in parts)
    attrs = first.attrs.replace(out=total, bias=bias)
    # written: what differs from its default, and what the class computes from its parameters
    window = {k: _expr(rw, first, k, instance, None) for k in first.given if k not in ("out", "bias")}
    exprs = {k: v for k, v in window.items() if v is not None}
    exprs["out"] = sum(outs)
    wanted = set(given_of(first.op, attrs)) | {k for k, v in exprs.items() if isinstance(v, Sym)}
    given = tuple(a.name for a in OPS[first.op].attrs if a.name in wanted)
    exprs = {k: v for k, v in exprs.items() if k in given}
    fused = _unique(g, f"{holder.path}.fused" if holder.path else "fused")
    made = dataclasses.replace(
        first, attrs=attrs, given=given, exprs=ir.frozen(exprs), deps=ir.EMPTY, instance=instance, init=ir.EMPTY,
        nulls=ir.EMPTY, type=ir.TensorType((total, *first.shape[1:]), first.type.axes), sym=None, in_sym=None,
        inplace=None,
    )  # fmt: skip
    rw.insert(fused, made, (src,), before=convs)
    start, low = 0, 0
    for c, data, out in zip(convs, parts, outs, strict=True):
        stop, high = start + out, low + data.attrs["out"]
        slice_attrs = ir.frozen(OPS["slice"].normalise({"start": low, "stop": high}))
        slice_given = given_of("slice", slice_attrs)
        bounds = {"start": start, "stop": stop}
        split = dataclasses.replace(
            data, op="slice", attrs=slice_attrs, given=slice_given, deps=ir.EMPTY, instance=instance, init=ir.EMPTY,
            exprs=ir.frozen({k: v for k, v in bounds.items() if k in slice_given}), sym=None, in_sym=None,
            inplace=None, nulls=ir.EMPTY,
        )  # fmt: skip
        parent = rw.parent_of(c)
        name = _unique(g, f"{parent.path}.split" if parent.path else "split") if _named(parent) else None
        rw.replace(c, split, rename=name, sources=(fused,))
        start, low = stop, high
    record(g, JoinLayers(fused, tuple(convs)))


def _split_by_tree(g: nx.DiGraph, src: str, convs: list[str]) -> bool:
    """Whether a block makes ``src`` (not as its input) and holds some but not all of ``convs``:
    the fused layer would have to go before that block, ahead of its own input (LR-ASPP's low
    classifier and the expansion of the backbone's row 5 both read row 4, made inside the entry
    `backbone` that holds the expansion)."""
    for b in ir.walk(ir.info(g).model):
        if b.kind == "ref":
            continue
        made = {x.output for x in ir.walk(b) if x.kind != "ref"}
        if src in made and src not in b.inputs[:1]:
            held = sum(c in made for c in convs)
            if 0 < held < len(convs):
                return True
    return False


def _named(parent: ir.Block) -> bool:
    """Whether an entry of ``parent`` may take a name of its own (a named sequence's entries)."""
    return parent.kind == "seq" and parent.named


def _expr(rw: Rewriter, data: ir.Node, key: str, instance: str, default: object = "value") -> object:
    """Attribute ``key`` of ``data`` in the terms of ``instance``'s class: its expression translated
    there, else its value (or ``default`` when that is not "value")."""
    if key in data.given and key in data.exprs:
        found = rw.translate(data.exprs[key], data.instance, instance)
        if found is not None:
            return found
    return data.attrs[key] if default == "value" else default


__all__ = ["fuse_siblings", "sibling_groups"]
