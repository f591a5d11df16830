"""How both frontends read a resize as the spec's ``interpolate``, which computes PyTorch's
``F.interpolate`` with ``recompute_scale_factor`` unset (docs/spec-language.md, "Resizing"):
a scale maps the positions by ``1 / scale`` and gives ``floor(side * scale)`` positions in double
precision; a size maps them by ``side / size``.

A source that scales each side by its own factor, or whose scale is a float32 (an ONNX file's
``scales``), is written as the one scale or the sizes that compute the same positions, or not at
all: :func:`spec_resize`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from nasdsl.ops.tensor import nearest_sources

#: how far (in float32 units in the last place) a decimal scale may lie from a file's float32
#: scale: nasdsl's own export moves a scale by a unit or two so that ONNX's shape inference and
#: ONNX Runtime agree on the sizes (2.3 is written 2.3000002)
SCALE_ULPS = 4


def float32_ulps(a: float, b: float) -> int:
    """How many float32 values lie between ``a`` and ``b`` (both positive), ``b`` excluded."""
    ia, ib = (int(np.array(v, np.float32).view(np.int32)) for v in (a, b))
    return abs(ia - ib)


def scale_sizes(ins: Sequence[int], scale: float) -> list[int]:
    """PyTorch's output sizes for one ``scale``: ``floor(side * scale)`` in double precision."""
    return [math.floor(i * scale) for i in ins]


def decimal_scale(values: Sequence[float], ins: Sequence[int], outs: Sequence[int]) -> float | None:
    """The scale with the fewest significant digits whose float32 lies within :data:`SCALE_ULPS`
    of each of ``values`` and that gives ``outs`` from ``ins`` as PyTorch computes them: the scale
    a model was written with (2.3) where a file holds float32s near it (2.29999995, or 2.3000002
    where an exporter moved it to keep a size); None where none does."""
    value = float(np.mean(values))
    if value <= 0:
        return None
    for digits in range(1, 10):
        rounded = float(f"{value:.{digits}g}")
        step = 10.0 ** (math.floor(math.log10(rounded)) - digits + 1)
        # the decimals of this many digits nearest the value, nearest first
        near = {float(f"{c:.{digits}g}") for c in (rounded - step, rounded, rounded + step)}
        for candidate in sorted(near, key=lambda c: abs(c - value)):
            if candidate <= 0 or any(float32_ulps(candidate, v) > SCALE_ULPS for v in values):
                continue
            if scale_sizes(ins, candidate) == list(outs):
                return candidate
    return None


def nearest_positions(size: int, out: int, scale: float | None, spatial: int) -> np.ndarray:
    """The positions PyTorch's nearest mode copies along one side (the op's rule,
    :func:`nasdsl.ops.tensor.nearest_sources`, which the ONNX export writes)."""
    return nearest_sources(size, out, scale, spatial)


def linear_step(size: int, out: int, scale: float | None) -> np.float32:
    """The step PyTorch's linear kernels map positions by (``align_corners`` false): ``1 / scale``
    rounded to float32 where a scale is given, else ``size / out`` in float32."""
    return np.float32(1.0 / scale) if scale is not None else np.float32(size) / np.float32(out)


def spec_resize(
    ins: Sequence[int],
    outs: Sequence[int],
    scale: float | None,
    computes: Callable[[int, int, int, float | None], bool],
) -> dict | None:
    """The spec's ``scale`` (where ``scale`` is given and gives ``outs``) or else its ``size``
    (one per side), whichever first computes what the source does on every side, as
    ``computes(k, size, out, spec_scale)`` says of side ``k``; None where neither does."""
    candidates: list[dict] = []
    if scale is not None and scale_sizes(ins, scale) == list(outs):
        candidates.append({"scale": scale})
    candidates.append({"size": list(outs)})
    for attrs in candidates:
        s = attrs.get("scale")
        if all(computes(k, i, o, s) for k, (i, o) in enumerate(zip(ins, outs, strict=True))):
            return attrs
    return None


def same_as_pytorch_scales(
    ins: Sequence[int], outs: Sequence[int], scales: Sequence[float], mode: str, align_corners: bool
) -> Callable[[int, int, int, float | None], bool]:
    """``computes`` for :func:`spec_resize` where the source is PyTorch with a scale per side
    (``scales``): the spec's positions are the source's along side ``k``."""
    spatial = len(ins)

    def computes(k: int, size: int, out: int, spec_scale: float | None) -> bool:
        if mode == "nearest":
            return np.array_equal(
                nearest_positions(size, out, spec_scale, spatial), nearest_positions(size, out, scales[k], spatial)
            )
        if align_corners or out == size:  # align_corners ignores the scale; a kept side is copied
            return True
        return linear_step(size, out, spec_scale) == linear_step(size, out, scales[k])

    return computes


def nearest_from_positions(ins: Sequence[int], tables: Sequence[np.ndarray]) -> dict | None:
    """The spec's nearest ``interpolate`` that copies ``tables[k]`` along side ``k`` (what
    nasdsl's ONNX export writes as a ``Gather`` of positions per side where ONNX's Resize would
    pick others): the ``scale`` with the fewest significant digits (up to 6) that gives those
    positions on every side, else the ``size`` that does; None where neither does."""
    outs = [len(t) for t in tables]
    spatial = len(ins)

    def picks(scale: float | None) -> bool:
        return all(
            np.array_equal(nearest_positions(i, o, scale, spatial), t)
            for i, o, t in zip(ins, outs, tables, strict=True)
        )

    # the scales that give these sizes: floor(side * scale) = out on every side
    lo = max(o / i for i, o in zip(ins, outs, strict=True))
    hi = min((o + 1) / i for i, o in zip(ins, outs, strict=True))
    for digits in range(1, 7):
        step = 10.0 ** (math.floor(math.log10(lo)) - digits + 1)
        first = math.ceil(lo / step)
        for k in range(first, min(first + 100, math.ceil(hi / step))):
            scale = float(f"{k * step:.{digits + 1}g}")
            if lo <= scale < hi and scale_sizes(ins, scale) == outs and picks(scale):
                return {"scale": scale}
    return {"size": outs} if picks(None) else None
