"""Fold BatchNorm into the convolution or linear layer before it, at inference.

:func:`fold_norms` takes each ``batch_norm`` whose input is a ``conv2d``, or a
``linear`` over flat features, that nothing else reads and that is no output,
and folds it into that layer: the layer keeps its name, gains a bias, and
reads as before; the BatchNorm node disappears and its readers (and any
output) read the layer. A chain ``conv2d``, ``batch_norm``, ``batch_norm``
folds both, one after the other.

It preserves the function the graph computes at inference (BatchNorm in eval
mode is the per-channel affine map ``(x - mean) / sqrt(var + eps) * gamma +
beta``, which composes with the layer's own affine map), every other node,
every output's name and shape, and the state_dict names of the layers. It
does not preserve training behaviour (batch statistics are gone): run it on an
inference graph only.

Weights are not read: the fold is recorded as a
:class:`~nasdsl.passes.derive.FoldNorm` step in ``g.graph["derivation"]``.
The block tree is flattened (:mod:`~nasdsl.passes.flatten`). The argument is
left unchanged.
"""

from __future__ import annotations

import networkx as nx

from nasdsl import ir
from nasdsl.passes.derive import FoldNorm, given_of, record
from nasdsl.passes.flatten import flatten_tree


def norm_foldable(g: nx.DiGraph, norm: str) -> bool:
    """Whether the BatchNorm ``norm`` can be folded into its input: a ``conv2d``, or a
    ``linear`` over flat features, read by ``norm`` alone and no output itself."""
    (src,) = ir.inputs(g, norm)
    data = g.nodes[src]
    if data["op"] == "linear":
        if data["attrs"].get("dim", "features") != "features":
            return False
    elif data["op"] != "conv2d":
        return False
    if g.out_degree(src) != 1:
        return False
    return all(o.node != src for o in g.graph["outputs"])


def fold_norms(g: nx.DiGraph) -> nx.DiGraph:
    """A copy of ``g`` with every foldable BatchNorm folded (see the module docstring)."""
    g = g.copy()
    g.graph["derivation"] = g.graph.get("derivation", ())
    for norm in [n for n in ir.order(g) if g.nodes[n]["op"] == "batch_norm"]:
        if not norm_foldable(g, norm):
            continue
        (layer,) = ir.inputs(g, norm)
        data = g.nodes[layer]
        attrs = {**data["attrs"], "bias": True}
        data.update(attrs=attrs, given=given_of(data["op"], attrs))
        record(g, FoldNorm(layer, norm, g.nodes[norm]["attrs"]["eps"]))
        ir.bypass(g, norm)  # the layer is read by norm alone: this always removes it
    return flatten_tree(g, copy=False)


__all__ = ["fold_norms", "norm_foldable"]
