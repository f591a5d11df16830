"""The inputs the bench uses: a user's file (``--data``) or generated ones, said which.

A data file is a ``.npy`` array of shape (N, C, H, W), or a ``.npz`` archive holding one such
array (or several, one named ``x``), of preprocessed float inputs (what the model takes, after
resizing and normalising). Its first half (at most :data:`MAX_CALIBRATION` samples) calibrates
int8 quantisation; the second half is the evaluation data on which top-1 agreement with the
fp32 reference is counted (one sample: it does both). Generated data is standard normal, seed 0,
and agreement is not reported on it.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass

import numpy as np

from nasdsl.errors import NasdslError

#: samples that calibrate int8 at most
MAX_CALIBRATION = 64
#: generated calibration samples
GENERATED = 16


class DataError(NasdslError):
    """A data file that cannot be read or does not fit the model (exit 2)."""


@dataclass(frozen=True)
class Inputs:
    """Calibration and evaluation inputs (float32, N x C x H x W) and where they came from."""

    calibration: np.ndarray
    evaluation: np.ndarray
    source: str
    given: bool

    def describe(self) -> str:
        c, e = len(self.calibration), len(self.evaluation)
        if self.given:
            return f"{self.source}: {c} samples calibrate int8, {e} evaluate top-1 agreement"
        return f"generated data ({self.source}): {c} samples calibrate int8 (give --data for real inputs)"


def generated(shape: tuple[int, ...], n: int = GENERATED, seed: int = 0) -> Inputs:
    """``n`` standard normal inputs of ``shape`` (C, H, W), drawn with ``seed``."""
    x = np.random.default_rng(seed).standard_normal((n, *shape), dtype=np.float32)
    return Inputs(x, x[:0], f"{n} standard normal samples, seed {seed}", False)


def load(path: str | os.PathLike, shape: tuple[int, ...]) -> Inputs:
    """The inputs of a data file, checked against the model's input ``shape`` (C, H, W)."""
    name = os.fspath(path)
    x = _read(name)
    if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != tuple(shape):
        want = "(N, " + ", ".join(map(str, shape)) + ")"
        raise DataError(f"expected an array of shape {want} (the model's input), got {tuple(x.shape)}", path=name)
    if len(x) == 0:
        raise DataError("expected at least one sample, got none", path=name)
    if not np.issubdtype(x.dtype, np.floating) and not np.issubdtype(x.dtype, np.integer):
        raise DataError(f"expected numbers, got an array of {x.dtype}", path=name)
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise DataError("expected finite values, got NaN or infinity", path=name)
    half = max(1, min(MAX_CALIBRATION, len(x) // 2))
    evaluation = x[half:] if len(x) > 1 else x
    return Inputs(x[:half], evaluation, name, True)


def _read(name: str) -> np.ndarray:
    if not name.endswith((".npy", ".npz")):
        raise DataError("expected a .npy or .npz file of preprocessed inputs", path=name)
    try:
        found = np.load(name, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"cannot read: {e}", path=name) from None
    if isinstance(found, np.ndarray):
        return found
    with found:
        keys = list(found.keys())
        if "x" in keys:
            return found["x"]
        if len(keys) == 1:
            return found[keys[0]]
    raise DataError(f"expected one array or one named 'x', found {', '.join(keys) or 'none'}", path=name)


__all__ = ["DataError", "GENERATED", "Inputs", "MAX_CALIBRATION", "generated", "load"]
