"""Inference-time simplifications for backends that run a fixed set of weights.

- :func:`drop_identities` removes ``identity`` nodes, wiring their consumers
  (and any output that reads them) to their input.
- :func:`fold_batch_norm` folds a ``batch_norm`` into the ``conv2d`` before it
  when that convolution feeds the BatchNorm alone, rewriting the convolution's
  weight and bias.

Weights travel with the graph: ``g.graph["weights"]`` maps parameter names to
``numpy`` arrays, keyed as the generated PyTorch model's ``state_dict`` is
(``<node>.weight``, ``<node>.bias``, ``<node>.running_mean``, ...). Both passes
copy the graph and the mapping and leave their arguments as they were, unless
told ``copy=False``: then the graph is rewritten in place (for a caller that
made its own copy already; arrays are never written).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import networkx as nx

from nasdsl import ir

if TYPE_CHECKING:  # imported where weights are folded: checking a spec never needs numpy
    import numpy as np

#: BatchNorm parameters, in the order PyTorch and ONNX list them
BN_PARAMS = ("weight", "bias", "running_mean", "running_var")


def drop_identities(g: nx.DiGraph, *, copy: bool = True) -> nx.DiGraph:
    """A copy of ``g`` (``g`` itself with ``copy=False``) without ``identity``
    nodes (except one a consumer needs to read the same value twice, see
    :func:`nasdsl.ir.bypass`)."""
    if copy:
        g = g.copy()
    for node in [n for n in ir.order(g) if g.nodes[n]["op"] == "identity"]:
        ir.bypass(g, node)
    return g


def foldable(g: nx.DiGraph, bn: str) -> bool:
    """Whether the BatchNorm ``bn`` can be folded into its input: a
    convolution whose only reader is ``bn`` and which is no output itself."""
    (src,) = ir.inputs(g, bn)
    if g.nodes[src]["op"] != "conv2d" or g.out_degree(src) != 1:
        return False
    return all(o.node != src for o in g.graph["outputs"])


def scale_rows(weight: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``weight`` with each output channel (first axis) multiplied by ``scale``.

    Where torch is already imported its kernels do the product (the same
    correctly rounded products, several times faster on tens of megabytes);
    numpy does it otherwise, so that exporting never has to import torch."""
    import numpy as np

    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "from_numpy"):
        rows = torch.from_numpy(np.ascontiguousarray(scale)).reshape(-1, *[1] * (weight.ndim - 1))
        return torch.mul(torch.from_numpy(np.ascontiguousarray(weight)), rows).numpy()
    return weight * scale.reshape(-1, *[1] * (weight.ndim - 1))


def fold_batch_norm(
    g: nx.DiGraph,
    *,
    scale: Callable[[np.ndarray, np.ndarray], np.ndarray] = scale_rows,
    copy: bool = True,
) -> nx.DiGraph:
    """Fold every foldable BatchNorm into the convolution before it.

    With ``s = gamma / sqrt(running_var + eps)`` per output channel the
    convolution's weight becomes ``W * s`` and its bias ``(b - running_mean) * s
    + beta`` (``b = 0`` without a bias); the convolution gains a bias and keeps
    its name, the BatchNorm node and its parameters disappear. The arithmetic
    is done in float64 (the weight's product in its own dtype) and stored in the
    weight's dtype. BatchNorms that do not follow such a convolution are left
    as they are. The weights are ``g.graph["weights"]``; the result holds the
    folded ones.

    ``scale(weight, s)`` does the one large product (see :func:`scale_rows`).
    With ``copy=False`` the graph ``g`` is rewritten and returned.
    """
    import numpy as np

    if copy:
        g = g.copy()
    out = dict(g.graph["weights"])
    for bn in [n for n in ir.order(g) if g.nodes[n]["op"] == "batch_norm"]:
        if not foldable(g, bn):
            continue
        (conv,) = ir.inputs(g, bn)
        gamma, beta, mean, var = (np.asarray(out.pop(f"{bn}.{p}"), dtype=np.float64) for p in BN_PARAMS)
        out.pop(f"{bn}.num_batches_tracked", None)
        factor = gamma / np.sqrt(var + g.nodes[bn]["attrs"]["eps"])
        weight = np.asarray(out[f"{conv}.weight"])
        bias = out.get(f"{conv}.bias")
        bias = np.zeros_like(mean) if bias is None else np.asarray(bias, dtype=np.float64)
        # one rounding of the scale, one of the product: no float64 copy of the weight
        out[f"{conv}.weight"] = scale(weight, factor.astype(weight.dtype))
        out[f"{conv}.bias"] = ((bias - mean) * factor + beta).astype(weight.dtype)
        data = g.nodes[conv]
        data["attrs"] = {**data["attrs"], "bias": True}
        data["shape"] = g.nodes[bn]["shape"]
        ir.bypass(g, bn)
    g.graph["weights"] = out
    return g


__all__ = ["drop_identities", "fold_batch_norm", "foldable", "scale_rows"]
