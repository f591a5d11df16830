"""ONNX Runtime as the import tests' reference: a file run on an input, and an imported spec's
export (with the weights the import carried) against the file it came from."""

from __future__ import annotations

import numpy as np

from nasdsl.backends.onnx import export_onnx


def run_ort(proto, x: np.ndarray) -> np.ndarray:
    """The first output of an ONNX model run by ONNX Runtime's CPU provider."""
    import onnxruntime as ort

    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def agreement(proto, result, *, least: float = 0.0) -> float:
    """The largest difference, relative to the largest output, between the file ``proto`` and the
    ONNX export of the spec ``result`` (an ``import_model`` result with ``weights=True``) imported
    from it, on one random input of the file's shape. ``least``: the file's outputs must reach it
    (a vanishing output would make any difference small)."""
    back = export_onnx(result.compiled.graph, opset=17, state_dict=result.weights)
    shape = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    a, b = run_ort(proto, x), run_ort(back, x)
    assert np.abs(a).max() > least, "the file's outputs are too small to compare"
    return float(np.abs(a - b).max() / np.abs(a).max())
