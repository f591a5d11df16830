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
    """The positions PyTorch's nearest mode copies along one side (the PyTorch backend's and
    the ONNX export's rule, :func:`nasdsl.backends.onnx_ops.nearest_sources`)."""
    from nasdsl.backends.onnx_ops import nearest_sources

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
