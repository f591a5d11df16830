"""The artifact of each ONNX deployment target: the bytes ``nasdsl compile --optimize-for``
writes and ``nasdsl bench`` runs (one function makes both, so what was measured is what ships).

=================== =======================================================================
target              artifact
=================== =======================================================================
``onnxruntime``     the ONNX export with the target's rewrites (every export's bytes)
``onnxruntime-int8`` that model quantised by ONNX Runtime's ``quantize_static`` (QDQ, int8
                    weights per output channel, uint8 activations, min-max calibration)
``openvino``        the ONNX export with ``openvino``'s rewrites
``openvino-bf16``   the same, recording bf16 as OpenVINO's inference precision
``openvino-int8``   ``onnxruntime-int8``'s quantised model, for OpenVINO (which runs QDQ
                    models with its int8 kernels)
=================== =======================================================================

Every artifact but ``onnxruntime``'s records its target in the model's metadata
(``nasdsl.target``): :func:`target_of` reads it, and :func:`nasdsl.bench.engines.open_onnx`
runs an artifact the way the bench measured it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Mapping

import numpy as np

from nasdsl import ir
from nasdsl.optimize import deployment

#: the metadata key that names an artifact's target
TARGET_KEY = "nasdsl.target"


def onnx_artifact(
    graph: object,
    name: str,
    *,
    calibration: np.ndarray,
    state_dict: Mapping[str, object] | None = None,
    batch: int | str = 1,
    opset: int | None = None,
    max_memory: int | None = None,
) -> bytes:
    """The artifact of the ONNX target ``name`` (``openvino-bf16``) for ``graph``, with the
    training model's ``state_dict`` (None: the seeded initialisation), ``batch`` (a size, or
    ``"dynamic"``: calibrated a sample at a time);
    ``calibration`` (N x C x H x W float inputs) calibrates an int8 target."""
    import onnx

    from nasdsl.backends import onnx as backend

    target, precision = deployment(name)
    kwargs = {"opset": opset} if opset is not None else {}
    if max_memory is not None:
        kwargs["max_memory"] = max_memory
    data = backend.export_onnx_bytes(ir.as_graph(graph), state_dict=state_dict, batch=batch, optimize=target, **kwargs)
    if name == "onnxruntime":
        return data
    model = onnx.load_from_string(quantize(data, calibration, batch) if precision == "int8" else data)
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = TARGET_KEY, name
    return model.SerializeToString(deterministic=True)


def target_of(model: bytes) -> str:
    """The target an artifact was made for (``onnxruntime`` where it names none)."""
    import onnx

    found = {p.key: p.value for p in onnx.load_from_string(model).metadata_props}
    return found.get(TARGET_KEY, "onnxruntime")


def quantize(model: bytes, calibration: np.ndarray, batch: int | str) -> bytes:
    """``model`` (fp32 ONNX, fixed ``batch``) quantised by ONNX Runtime's ``quantize_static``,
    its activation ranges calibrated on ``calibration`` fed ``batch`` samples at a time (the
    samples repeated to fill a batch)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static as _quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="nasdsl-int8-") as folder:
        written, source = os.path.join(folder, "fp32.onnx"), os.path.join(folder, "pre.onnx")
        target = os.path.join(folder, "int8.onnx")
        with open(written, "wb") as f:
            f.write(model)
        with _quiet():
            # ONNX Runtime's pre-processing: its graph optimiser folds what is constant. A linear
            # layer's export multiplies by Transpose(weight) (the initializer keeps the state_dict's
            # layout); unfolded, the quantiser takes that product for an activation and quantises
            # the weight per tensor to uint8 at run time (ViT-B/16 ran at 0.43x torchvision's
            # quantised export). Symbolic shape inference is left out: it is for models with
            # symbolic sizes, and it refuses some fixed-size exports' reshapes.
            quant_pre_process(written, source, skip_symbolic_shape=True)
            _quantize_static(
                source,
                target,
                _Reader(_input_name(model), _batches(calibration, batch if isinstance(batch, int) else 1)),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                weight_type=QuantType.QInt8,
                activation_type=QuantType.QUInt8,
                calibrate_method=CalibrationMethod.MinMax,
            )
        with open(target, "rb") as f:
            return f.read()


@contextlib.contextmanager
def _quiet():
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def _input_name(model: bytes) -> str:
    import onnx

    graph = onnx.load_from_string(model).graph
    initializers = {t.name for t in graph.initializer}
    return next(i.name for i in graph.input if i.name not in initializers)


def _batches(x: np.ndarray, batch: int) -> list[np.ndarray]:
    """``x`` in batches of ``batch`` samples, the last filled by repeating samples from the start."""
    count = max(1, -(-len(x) // batch))
    index = np.arange(count * batch) % len(x)
    return [np.ascontiguousarray(x[index[i * batch : (i + 1) * batch]]) for i in range(count)]


class _Reader:
    """ONNX Runtime's calibration data reader: one feed per batch, then None."""

    def __init__(self, name: str, batches: list[np.ndarray]):
        self._feeds = iter([{name: b} for b in batches])

    def get_next(self) -> dict | None:
        return next(self._feeds, None)


__all__ = ["TARGET_KEY", "onnx_artifact", "quantize", "target_of"]
