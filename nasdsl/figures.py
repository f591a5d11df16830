"""A compiled variant's figures: parameters, multiply-adds, depth, peak activations and,
with a latency model, its predicted latency (what ``nasdsl space`` lists; docs/design-space.md,
"What the figures are"). Computed from a shaped graph alone, so that the evaluators above it
(:mod:`nasdsl.variants`, :mod:`nasdsl.compose`) share one definition.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import networkx as nx

from nasdsl import ir
from nasdsl.errors import LimitError
from nasdsl.ops import OPS
from nasdsl.passes.phases import inference_graph
from nasdsl.summary import depth


@dataclass(frozen=True)
class Figures:
    params: int
    macs: int
    depth: int
    peak: int
    params_train: int
    macs_train: int
    latency_ms: float | None = None


def peak_activations(g: nx.DiGraph) -> int:
    """The peak activation size of a shaped graph, in values (multiply by 4 for float32 bytes).

    The inference graph (``nasdsl.passes.phases.inference_graph``: no training-only heads
    or layers, no dropout) runs one node at a time in the backends' order (``ir.order``),
    batch 1. A node's output is held from the step that computes it until the last step
    that reads it (the model's outputs until the end); a view (``flatten``, ``identity``)
    holds no memory of its own but keeps its input's alive. The peak is the largest total
    held during one step: the node's inputs, its output and everything still to be read.
    In-place activations are not assumed.
    """
    inf = inference_graph(g)
    plan = memory_plan(inf, ir.order(inf))
    sizes = {n: math.prod(ir.node(inf, n).shape) for n in inf}
    return peak_of_plan(plan, sizes)


def memory_plan(g: nx.DiGraph, order: list[str]) -> tuple[tuple[str | None, tuple[str, ...]], ...]:
    """For each step: the node whose memory it allocates (None for a view) and the nodes freed after it."""
    root: dict[str, str] = {}
    for n in order:
        op = ir.node(g, n).op
        ins = ir.inputs(g, n)
        root[n] = root[ins[0]] if op in OPS and OPS[op].aliases and ins else n
    step = {n: i for i, n in enumerate(order)}
    last: dict[str, int] = {r: step[r] for r in set(root.values())}
    for n in order:
        for src in ir.inputs(g, n):
            last[root[src]] = max(last[root[src]], step[n])
    for o in ir.info(g).outputs:
        last[root[o.node]] = len(order)
    frees: dict[int, list[str]] = {}
    for r, i in last.items():
        frees.setdefault(i, []).append(r)
    return tuple((n if root[n] == n else None, tuple(sorted(frees.get(i, ())))) for i, n in enumerate(order))


def peak_of_plan(plan, sizes: Mapping[str, int]) -> int:
    live = peak = 0
    for alloc, frees in plan:
        if alloc is not None:
            live += sizes[alloc]
        peak = max(peak, live)
        for r in frees:
            live -= sizes[r]
    return peak


def figures(g: nx.DiGraph, latency=None) -> Figures:
    """The figures of a compiled (shaped) graph, computed from it directly (``latency``: a
    :class:`nasdsl.bench.latency.LatencyModel` that predicts ``latency_ms``)."""
    from nasdsl.passes.shapes import macs, params

    nodes = [n for n, d in ir.nodes(g) if d.op != "input"]
    inference = [n for n in nodes if ir.node(g, n).phase != "train"]
    return Figures(
        params=sum(params(g, n) for n in inference),
        macs=sum(macs(g, n) for n in inference),
        depth=depth(g, inference),
        peak=peak_activations(g),
        params_train=sum(params(g, n) for n in nodes),
        macs_train=sum(macs(g, n) for n in nodes),
        latency_ms=latency.predict(g) if latency is not None else None,
    )


__all__ = ["Figures", "check_batch_memory", "figures", "memory_plan", "peak_activations", "peak_of_plan"]


def check_batch_memory(g, batch: int, limit: int | None, what: str, option: str | None = "--batch") -> None:
    """Refuse, before anything runs, running ``g`` at ``batch`` where its activations would not fit
    ``limit``: the peak it holds at batch 1 (:func:`nasdsl.figures.peak_activations`) in float32,
    times the batch, once for PyTorch and once for ONNX Runtime (an input of 3x1024x1024 at batch
    8,192 was an internal error where the allocation failed, or the machine ran out of memory)."""
    need = 2 * 4 * batch * peak_activations(g)
    if limit is not None and need > limit:
        hint = "lower the batch, or raise --max-memory" if option else "raise --max-memory"
        raise LimitError(
            f"{what} at batch {batch:,} needs about {need / (1 << 30):,.1f} GiB of memory for the activations, "
            f"above the limit of {limit / (1 << 30):,.1f} GiB ({hint})",
            path=option,
        )
