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
    """The array of a .npy file, or of an .npz's one member or member ``x``. An array of Python
    objects (a pickle inside the file) is refused before numpy is asked to read it, with no
    advice to load it otherwise: loading a pickle runs code of the file's author."""
    if not name.endswith((".npy", ".npz")):
        raise DataError("expected a .npy or .npz file of preprocessed inputs", path=name)
    try:
        if name.endswith(".npy"):
            with open(name, "rb") as f:
                _refuse_objects(f, name)
        found = np.load(name, allow_pickle=False)
        if isinstance(found, np.ndarray):
            return found
        with found:
            keys = list(found.keys())
            key = "x" if "x" in keys else keys[0] if len(keys) == 1 else None
            if key is not None:
                with found.zip.open(f"{key}.npy") as f:
                    _refuse_objects(f, f"{name}[{key}]")
                return found[key]
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
        raise DataError(f"cannot read: {e}", path=name) from None
    raise DataError(f"expected one array or one named 'x', found {', '.join(keys) or 'none'}", path=name)


def _refuse_objects(f, name: str) -> None:
    """Refuse the .npy stream ``f`` when its header says its items are Python objects."""
    fmt = np.lib.format
    read = fmt.read_array_header_1_0 if fmt.read_magic(f) == (1, 0) else fmt.read_array_header_2_0
    dtype = read(f)[2]
    if dtype.hasobject:
        raise DataError(
            "holds Python objects (a pickled array), which nasdsl does not load: expected an array of numbers "
            "(float or integer), saved with numpy.save or numpy.savez",
            path=name,
        )


__all__ = ["DataError", "GENERATED", "Inputs", "MAX_CALIBRATION", "generated", "load"]
