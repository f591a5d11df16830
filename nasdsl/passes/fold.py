"""Inference-time simplifications: identities dropped, BatchNorm folded into the layer before it.

- :func:`drop_identities` removes ``identity`` nodes, wiring their consumers
  (and any output that reads them) to their input.
- :func:`fold_norms` folds each ``batch_norm`` whose input is a ``conv2d``, or
  a ``linear`` over flat features, that nothing else reads and that is no
  output, into that layer: the layer keeps its name, gains a bias, and reads
  as before; the BatchNorm node disappears and its readers (and any output)
  read the layer. A chain ``conv2d``, ``batch_norm``, ``batch_norm`` folds both,
  one after the other. This is the one place where BatchNorm is folded: the
  ONNX export and every inference build use it.

Folding preserves the function the graph computes at inference (BatchNorm in
eval mode is the per-channel affine map ``(x - mean) / sqrt(var + eps) * gamma
+ beta``, which composes with the layer's own affine map), every other node,
every output's name and shape, and the state_dict names of the layers. It
does not preserve training behaviour (batch statistics are gone): run it on
an inference graph only. Weights are not read: the fold is recorded as a
:class:`~nasdsl.passes.derive.FoldNorm` step in the graph's ``derivation``
(:func:`nasdsl.passes.derive.derive_weights` replays it on a state_dict).

Both passes leave their argument unchanged.
"""

from __future__ import annotations

import networkx as nx

from nasdsl import ir
from nasdsl.passes.derive import FoldNorm, given_of, record
from nasdsl.passes.flatten import flatten_tree


def drop_identities(g: nx.DiGraph, *, copy: bool = True) -> nx.DiGraph:
    """A copy of ``g`` (``g`` itself with ``copy=False``) without ``identity``
    nodes (except one a consumer needs to read the same value twice, see
    :func:`nasdsl.ir.bypass`)."""
    if copy:
        g = ir.copy(g)
    for node in [n for n in ir.order(g) if ir.node(g, n).op == "identity"]:
        ir.bypass(g, node)
    return g


def norm_foldable(g: nx.DiGraph, norm: str) -> bool:
    """Whether the BatchNorm ``norm`` can be folded into its input: a ``conv2d``, or a
    ``linear`` over flat features, read by ``norm`` alone and no output itself."""
    (src,) = ir.inputs(g, norm)
    layer = ir.node(g, src)
    if layer.op == "linear":
        if layer.attrs.get("dim", "features") != "features":
            return False
    elif layer.op != "conv2d":
        return False
    if g.out_degree(src) != 1:
        return False
    return all(o.node != src for o in ir.info(g).outputs)


def fold_norms(g: nx.DiGraph) -> nx.DiGraph:
    """A copy of ``g`` with every foldable BatchNorm folded (see the module docstring)."""
    g = ir.copy(g)
    for norm in [n for n in ir.order(g) if ir.node(g, n).op == "batch_norm"]:
        if not norm_foldable(g, norm):
            continue
        (layer,) = ir.inputs(g, norm)
        data = ir.node(g, layer)
        attrs = data.attrs.replace(bias=True)
        ir.update_node(g, layer, attrs=attrs, given=given_of(data.op, attrs))
        record(g, FoldNorm(layer, norm, ir.node(g, norm).attrs["eps"]))
        ir.bypass(g, norm)  # the layer is read by norm alone: this always removes it
    return flatten_tree(g, copy=False)


__all__ = ["drop_identities", "fold_norms", "norm_foldable"]
