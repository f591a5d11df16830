"""How the rewriting passes change the weights, recorded rather than done.

A rewriting pass (BatchNorm folding, sibling fusion) changes which parameters
a graph has. It does not touch weights: it appends a *step* to
``ir.info(g).derivation``, a tuple of the records below in the order the
passes made them. Replaying the steps on the unoptimised model's state_dict
gives the optimised graph's weights:

- :func:`derive_weights` replays them on numpy arrays (no torch: the ONNX
  export uses it);
- the generated inference module (``backends/pytorch.py`` for a graph made by
  :func:`nasdsl.optimize.optimize`, see ``backends/pytorch_weights.py``) writes the
  same steps as calls in its ``from_training_state_dict`` classmethod, in torch.

Both compute the per-channel factors and the biases in float64, rounded once
to the weight's dtype, and the product of a weight with its factor in the
weight's dtype (one rounding; no float64 copy of a large weight), so they
agree to the last bit. Keys are state_dict keys of the graph the step was made on
(``inception3a.branch1.conv.weight``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import networkx as nx

from nasdsl import ir
from nasdsl.ops import OPS, REQUIRED

if TYPE_CHECKING:  # imported where weights are derived: checking a spec never needs numpy
    import numpy as np

#: BatchNorm's parameters and buffers that a fold consumes
NORM_PARAMS = ("weight", "bias", "running_mean", "running_var")


@dataclass(frozen=True)
class FoldNorm:
    """The BatchNorm ``norm`` folded into ``layer``, the convolution, transposed convolution or
    linear layer before it.

    With ``s = gamma / sqrt(running_var + eps)`` per output channel, the layer's
    weight becomes ``W * s`` (each output channel's weights scaled) and its bias
    ``(b - running_mean) * s + beta`` (``b = 0`` when the layer had none). The
    norm's parameters and its ``num_batches_tracked`` counter are consumed.

    A convolution or linear layer holds its output channels on its weight's first axis. A
    transposed convolution of ``transposed_groups`` groups holds them on the second, group by
    group: its weight is ``(C_in, C_out / groups, *kernel)``, and the output channel
    ``k * C_out / groups + j`` reads ``W[i, j]`` for the input channels ``i`` of group ``k``.
    ``transposed_groups`` is 0 for any other layer.
    """

    layer: str
    norm: str
    eps: float
    transposed_groups: int = 0


@dataclass(frozen=True)
class JoinLayers:
    """The layers ``parts`` (convolutions reading the same tensor with the same
    window) joined into one layer ``into``: weights concatenated along the output
    channels in the order of ``parts``, biases likewise (zeros for a part without
    one; no bias when no part has one). The parts' parameters are consumed."""

    into: str
    parts: tuple[str, ...]


Step = FoldNorm | JoinLayers


def record(g: nx.DiGraph, *steps: Step) -> None:
    """Append ``steps`` to the graph's derivation (the graph is the pass's own copy). A pass of many
    steps records them at once: the derivation is a tuple, copied at each call."""
    ir.update_info(g, derivation=(*ir.info(g).derivation, *steps))


def derive_weights(steps: tuple[Step, ...], weights: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The weights after ``steps``: a new mapping (the arrays given are never written).

    Every key a step reads must be present (check the state_dict first:
    :func:`nasdsl.weights.check_weights`); keys no step mentions pass through.
    """
    out = dict(weights)
    for step in steps:
        if isinstance(step, FoldNorm):
            _fold(out, step)
        elif isinstance(step, JoinLayers):
            _join(out, step)
        else:  # pragma: no cover - a new kind of step without its replay
            raise TypeError(f"unknown derivation step {step!r}")
    return out


def _fold(out: dict[str, np.ndarray], step: FoldNorm) -> None:
    import numpy as np

    gamma, beta, mean, var = (np.asarray(out.pop(f"{step.norm}.{p}"), dtype=np.float64) for p in NORM_PARAMS)
    out.pop(f"{step.norm}.num_batches_tracked", None)
    weight = np.asarray(out[f"{step.layer}.weight"])
    bias = out.get(f"{step.layer}.bias")
    bias = np.zeros_like(mean) if bias is None else np.asarray(bias, dtype=np.float64)
    scale = gamma / np.sqrt(var + step.eps)
    factors = scale.astype(weight.dtype)  # one rounding, and no float64 copy of the weight
    if step.transposed_groups:
        out[f"{step.layer}.weight"] = scale_transposed(weight, factors, step.transposed_groups)
    else:
        out[f"{step.layer}.weight"] = scale_rows(weight, factors)
    out[f"{step.layer}.bias"] = ((bias - mean) * scale + beta).astype(weight.dtype)


def scale_rows(weight: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``weight`` with each output channel (first axis) multiplied by ``scale``, in the weight's dtype."""
    return _product(weight, scale.reshape(-1, *[1] * (weight.ndim - 1)))


def scale_transposed(weight: np.ndarray, scale: np.ndarray, groups: int) -> np.ndarray:
    """``weight``, a transposed convolution's ``(C_in, C_out / groups, *kernel)``, with each output
    channel multiplied by ``scale`` (``C_out`` factors), in the weight's dtype: the input channels
    of group ``k`` (the ``k``-th ``C_in / groups`` rows) are scaled along the second axis by the
    factors of the output channels of that group."""
    blocks = weight.reshape(groups, weight.shape[0] // groups, *weight.shape[1:])
    factors = scale.reshape(groups, 1, weight.shape[1], *[1] * (weight.ndim - 2))
    return _product(blocks, factors).reshape(weight.shape)


def _product(weight: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """``weight * factors`` (broadcast), in the weight's dtype, by numpy on one thread: torch's
    kernel, a little faster on an idle machine, slowed by a factor of 25 once its thread pool
    contended with other busy processes (GoogLeNet's 59 products: 1.7 ms on one torch thread,
    2.6 ms in numpy, 44 ms on two torch threads with two other processes running)."""
    return weight * factors


def _join(out: dict[str, np.ndarray], step: JoinLayers) -> None:
    import numpy as np

    weights = [np.asarray(out.pop(f"{p}.weight")) for p in step.parts]
    biases = [out.pop(f"{p}.bias", None) for p in step.parts]
    out[f"{step.into}.weight"] = np.concatenate(weights, axis=0)
    if any(b is not None for b in biases):
        dtype = weights[0].dtype
        filled = [
            np.zeros(w.shape[0], dtype) if b is None else np.asarray(b, dtype)
            for w, b in zip(weights, biases, strict=True)
        ]
        out[f"{step.into}.bias"] = np.concatenate(filled)


def given_of(op: str, attrs: Mapping[str, object]) -> tuple[str, ...]:
    """The attributes a code generator should write for a node a pass made: the
    required ones and those that differ from their default."""
    given = []
    for a in OPS[op].attrs:
        if a.default is REQUIRED:
            given.append(a.name)
            continue
        default = a.default(attrs) if callable(a.default) else a.default
        if attrs[a.name] != default:
            given.append(a.name)
    return tuple(given)


__all__ = [
    "NORM_PARAMS",
    "FoldNorm",
    "JoinLayers",
    "Step",
    "derive_weights",
    "given_of",
    "record",
    "scale_rows",
    "scale_transposed",
]
