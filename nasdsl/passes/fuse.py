"""Fuse sibling convolutions: one wide convolution, then a channel split.

Convolutions that read the same tensor with the same window (kernel, stride,
padding, dilation; ``groups`` 1) compute independent output channels of one
convolution. :func:`fuse_siblings` replaces each such set (two or more, none
an output) by

- one ``conv2d`` with their output channels added up, named after the
  innermost block holding them all, ``<prefix>.fused`` (``inception3a.fused``
  for the three 1x1 convolutions of an Inception module; ``fused_1`` and so on
  where that name is taken), and
- one ``slice`` per original convolution, named ``<its block>.split``
  (``inception3a.branch2.0.split``), which its readers now read.

The three 1x1 convolutions of an Inception module become one; in a ResNet-50
bottleneck whose projection has stride 1, the projection and the first 1x1
convolution become one. Convolutions with different windows (SqueezeNet's
1x1 and 3x3 expands) are left alone.

It preserves the function the graph computes (each slice holds exactly the
channels its convolution computed), the shapes every reader sees, the
outputs, and every node that is not one of the fused convolutions. The fused
layer has a bias when any part had one (zeros for the others).

Weights are not read: each fusion is recorded as a
:class:`~nasdsl.passes.derive.JoinLayers` step in ``ir.info(g).derivation``.
The block tree is flattened (:mod:`~nasdsl.passes.flatten`). The argument is
left unchanged.
"""

from __future__ import annotations

import dataclasses

import networkx as nx

from nasdsl import ir
from nasdsl.ops import OPS
from nasdsl.passes.derive import JoinLayers, given_of, record
from nasdsl.passes.flatten import flatten_tree, reorder

#: attributes that must agree for two convolutions to be fused
WINDOW = ("kernel", "stride", "padding", "dilation")


def sibling_groups(g: nx.DiGraph) -> list[list[str]]:
    """The sets of convolutions :func:`fuse_siblings` fuses, each in graph order."""
    outputs = {o.node for o in ir.info(g).outputs}
    groups: list[list[str]] = []
    for src in ir.order(g):
        by_window: dict[tuple, list[str]] = {}
        for c in g.successors(src):
            data = ir.node(g, c)
            if data.op != "conv2d" or data.attrs["groups"] != 1 or c in outputs:
                continue
            by_window.setdefault(tuple(data.attrs[k] for k in WINDOW), []).append(c)
        rank = None
        for convs in by_window.values():
            if len(convs) > 1:
                rank = rank or {n: i for i, n in enumerate(ir.order(g))}
                groups.append(sorted(convs, key=rank.__getitem__))
    return groups


def _unique(g: nx.DiGraph, wanted: str) -> str:
    name, i = wanted, 0
    while name in g:
        i += 1
        name = f"{wanted}_{i}"
    return name


def _prefix(names: list[str]) -> str:
    """The longest common dotted prefix of ``names`` (``""`` when they share none)."""
    common = []
    for level in zip(*(n.split(".") for n in names), strict=False):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    return ".".join(common)


def _split_name(g: nx.DiGraph, conv: str) -> str:
    parent = conv.rsplit(".", 1)[0] if "." in conv else ""
    return _unique(g, f"{parent}.split" if parent else f"{conv}_split")


def fuse_siblings(g: nx.DiGraph) -> nx.DiGraph:
    """A copy of ``g`` with every set of sibling convolutions fused (see the module docstring)."""
    g = ir.copy(g)
    position = {n: float(i) for i, n in enumerate(ir.order(g))}
    for convs in sibling_groups(g):
        (src,) = ir.inputs(g, convs[0])
        first = ir.node(g, convs[0])
        prefix = _prefix(convs)
        fused = _unique(g, f"{prefix}.fused" if prefix else "fused")
        total = sum(ir.node(g, c).attrs["out"] for c in convs)
        attrs = first.attrs.replace(out=total, bias=any(ir.node(g, c).attrs["bias"] for c in convs))
        out_type = ir.TensorType((total, *first.shape[1:]), first.type.axes)
        ir.add_node(
            g,
            fused,
            dataclasses.replace(first, attrs=attrs, given=given_of("conv2d", attrs), type=out_type, sym=None),
            (src,),
        )
        position[fused] = position[convs[0]] - 0.5
        start = 0
        for c in convs:
            data = ir.node(g, c)
            stop = start + data.attrs["out"]
            split = _split_name(g, c)
            slice_attrs = ir.frozen(OPS["slice"].normalise({"start": start, "stop": stop}))
            ir.add_node(
                g,
                split,
                dataclasses.replace(data, op="slice", attrs=slice_attrs, given=given_of("slice", slice_attrs)),
                (fused,),
            )
            position[split] = position[c]
            for reader in list(g.successors(c)):
                g.add_edge(split, reader, index=g.edges[c, reader]["index"])
            g.remove_node(c)
            start = stop
        record(g, JoinLayers(fused, tuple(convs)))
    return flatten_tree(reorder(g, position), copy=False)


__all__ = ["fuse_siblings", "sibling_groups"]
