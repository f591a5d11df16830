"""Inference-time simplifications: identities dropped, BatchNorm folded into the layer before it.

- :func:`drop_identities` removes ``identity`` nodes, wiring their consumers
  (and any output that reads them) to their input.
- :func:`fold_norms` folds each ``batch_norm`` whose input is a convolution
  (``conv1d``, ``conv2d``, ``conv3d``), a transposed convolution (``conv_transpose1d``,
  ``2d``, ``3d``), or a ``linear`` over flat features, that nothing else reads and that is
  no output, into that layer: the layer keeps its name, gains a bias, and reads as
  before; the BatchNorm node disappears and its readers (and any output) read the
  layer. A chain ``conv2d``, ``batch_norm``, ``batch_norm`` folds both, one after
  the other. This is the one place where BatchNorm is folded: the ONNX export and
  every inference build use it.

Folding preserves the function the graph computes at inference (BatchNorm in
eval mode is the per-channel affine map ``(x - mean) / sqrt(var + eps) * gamma
+ beta``, which composes with the layer's own affine map), every other node,
every output's name and shape, and the state_dict names of the layers. It
does not preserve training behaviour (batch statistics are gone): run it on
an inference graph only. Weights are not read: the fold is recorded as a
:class:`~nasdsl.passes.derive.FoldNorm` step in the graph's ``derivation``
(:func:`nasdsl.passes.derive.derive_weights` replays it on a state_dict).

Both change the graph through :class:`nasdsl.ir.rewrite.Rewriter`, so the block
tree stays the spec's: a removed node's block passes its input on (``skip``),
and a template keeps its one class where every use of it changed alike (each
``BasicConv2d`` loses its BatchNorm and gains a convolution bias). Both leave
their argument unchanged.
"""

from __future__ import annotations

import dataclasses

import networkx as nx

from nasdsl import ir
from nasdsl.ir.rewrite import Rewriter
from nasdsl.ops.conv import CONV_NAMES
from nasdsl.ops.conv_transpose import CONV_TRANSPOSE_NAMES
from nasdsl.passes.derive import FoldNorm, record
from nasdsl.passes.symbolic import infer_symbols

#: the transposed convolutions: they keep their output channels on the weight's second axis,
#: group by group, which the fold scales (see :class:`~nasdsl.passes.derive.FoldNorm`)
TRANSPOSED = frozenset(CONV_TRANSPOSE_NAMES.values())
#: the convolutions a BatchNorm folds into: the others keep their output channels on the
#: weight's first axis, as a linear layer does
FOLDED_CONVOLUTIONS = frozenset(CONV_NAMES.values()) | TRANSPOSED


def drop_identities(g: nx.DiGraph, *, copy: bool = True) -> nx.DiGraph:
    """A copy of ``g`` (``g`` itself with ``copy=False``) without ``identity``
    nodes (except one a consumer needs to read the same value twice, see
    :meth:`nasdsl.ir.rewrite.Rewriter.bypass`, and those that stand for the inputs of a
    template with several, ``Block.entries``); ``g`` itself where it holds none."""
    identities = {n for n, r in ir.nodes(g) if r.op == "identity"}
    if not identities:
        return g
    rw = Rewriter(ir.copy(g) if copy else g, infer_symbols)
    entries = {n for root in ir.roots(g) for b in ir.walk(root) for n in b.entries}  # a template's named inputs
    for node in [n for n in ir.order(rw.g) if n in identities and n not in entries]:
        rw.bypass(node)
    return rw.finish()


def norm_foldable(g: nx.DiGraph, norm: str) -> bool:
    """Whether the BatchNorm ``norm`` can be folded into its input: a convolution or a transposed
    convolution of any rank, or a ``linear`` over flat features, read by ``norm`` alone and no
    output itself."""
    (src,) = ir.inputs(g, norm)
    layer = ir.node(g, src)
    if layer.op == "linear":
        if layer.attrs.get("dim", "features") != "features":
            return False
    elif layer.op not in FOLDED_CONVOLUTIONS:
        return False
    if g.out_degree(src) != 1:
        return False
    return all(o.node != src for o in ir.info(g).outputs)


def with_bias(layer: ir.Node) -> ir.Node:
    """``layer`` (a convolution, transposed or not, or a linear layer) with a bias: ``bias`` is then
    its default, so no longer written (the class's other arguments stay as the spec wrote them)."""
    drop = lambda m: ir.frozen({k: v for k, v in m.items() if k != "bias"})  # noqa: E731
    return dataclasses.replace(
        layer,
        attrs=layer.attrs.replace(bias=True),
        given=tuple(k for k in layer.given if k != "bias"),
        exprs=drop(layer.exprs),
        deps=drop(layer.deps),
        nulls=drop(layer.nulls),
    )


def fold_norms(g: nx.DiGraph) -> nx.DiGraph:
    """A copy of ``g`` with every foldable BatchNorm folded (see the module docstring)."""
    rw = Rewriter.on_copy(g, infer_symbols)
    g = rw.g
    steps: list[FoldNorm] = []
    for norm in [n for n in ir.order(g) if ir.node(g, n).op == "batch_norm"]:
        if not norm_foldable(g, norm):
            continue
        (layer,) = ir.inputs(g, norm)
        data = ir.node(g, layer)
        groups = data.attrs["groups"] if data.op in TRANSPOSED else 0
        rw.replace(layer, with_bias(data))
        steps.append(FoldNorm(layer, norm, ir.node(g, norm).attrs["eps"], groups))
        rw.bypass(norm)  # the layer is read by norm alone: this always removes it
    record(g, *steps)
    return rw.finish()


__all__ = ["drop_identities", "fold_norms", "norm_foldable", "with_bias"]
