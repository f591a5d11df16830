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

An artifact is checked before it is returned (``check``, what ``nasdsl compile`` does; the bench
compares every configuration with the PyTorch reference itself): run as the bench runs it (in
OpenVINO where its target is OpenVINO's and OpenVINO is installed, else in ONNX Runtime) on the
calibration inputs, its outputs may deviate from the fp32 export's in ONNX Runtime by at most its
precision's :data:`TOLERANCE` (``nasdsl verify``'s measure: the largest absolute difference over
the largest magnitude, the largest over the outputs), else :class:`ArtifactError` (exit 2; nothing
is written). Calibration inputs on which the fp32 model computes values that are not finite are
refused, naming the first node that does.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from nasdsl import ir
from nasdsl.errors import NasdslError
from nasdsl.optimize import ARTIFACT_TOLERANCE, deployment

#: the metadata key that names an artifact's target
TARGET_KEY = "nasdsl.target"
#: the largest deviation from the fp32 export an artifact of each precision may have
#: (nasdsl.optimize, where the command line reads it without importing the check)
TOLERANCE = ARTIFACT_TOLERANCE
#: the samples an artifact is checked on at most (the first of the calibration inputs)
CHECKED = 16


class ArtifactError(NasdslError):
    """An artifact that deviates beyond its tolerance, or calibration inputs the model cannot
    take (exit 2)."""


def onnx_artifact(graph: object, name: str, **options) -> bytes:
    """The bytes of :func:`make_artifact`'s artifact alone (what the bench measures)."""
    return make_artifact(graph, name, **options).data


@dataclass(frozen=True)
class Artifact:
    """An artifact's bytes and its check: the deviation from the fp32 export found, the engine
    it ran in and on how many calibration inputs (None, "", 0 where it was not checked: the
    ``onnxruntime`` target's artifact is the export, and an artifact only OpenVINO reads
    differently where OpenVINO is not installed)."""

    data: bytes
    deviation: float | None = None
    engine: str = ""
    samples: int = 0


def make_artifact(
    graph: object,
    name: str,
    *,
    calibration: np.ndarray,
    state_dict: Mapping[str, object] | None = None,
    batch: int | str = 1,
    opset: int | None = None,
    max_memory: int | None = None,
    check: bool = True,
    tolerance: float | None = None,
) -> Artifact:
    """The artifact of the ONNX target ``name`` (``openvino-bf16``) for ``graph``, with what its check
    found (what ``nasdsl compile`` prints). ``state_dict``: the training model's weights (None: the
    seeded initialisation); ``batch``: a size, or ``"dynamic"`` (calibrated a sample at a time);
    ``calibration`` (N x C x H x W float inputs) calibrates an int8 target. With ``check``, the
    artifact is checked against the fp32 export (see the module docstring) within ``tolerance``
    (default: its precision's, :data:`TOLERANCE`)."""
    import onnx

    from nasdsl.backends import onnx as backend

    target, precision = deployment(name)
    kwargs = {"opset": opset} if opset is not None else {}
    if max_memory is not None:
        kwargs["max_memory"] = max_memory
    g = ir.as_graph(graph)
    data = backend.export_onnx_bytes(g, state_dict=state_dict, batch=batch, optimize=target, **kwargs)
    if name == "onnxruntime":  # the export itself: the reference it would be checked against
        return Artifact(data)
    if check and isinstance(batch, int):  # the check runs the model at the batch: before any array is made
        from nasdsl.figures import check_batch_memory

        check_batch_memory(g, batch, max_memory, f"checking the {name} artifact")
    if check:
        feeds = _batches(calibration[:CHECKED], batch if isinstance(batch, int) else 1)
        reference = _run(data, "onnxruntime", "fp32", feeds)
        _refuse_non_finite(data, feeds, reference)
    model = onnx.load_from_string(quantize(data, calibration, batch) if precision == "int8" else data)
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = TARGET_KEY, name
    out = model.SerializeToString(deterministic=True)
    if not check:
        return Artifact(out)
    samples = min(len(calibration), CHECKED)
    found, engine = _check(out, name, feeds, reference, samples, tolerance)
    return Artifact(out, found, engine, samples if found is not None else 0)


def deviation(got: list[np.ndarray], want: list[np.ndarray]) -> float:
    """``nasdsl verify``'s measure, the largest over the outputs: max |got - want| / max |want|
    (inf where an output is missing, misshapen or not finite)."""
    worst = 0.0 if len(got) == len(want) else np.inf
    for a, b in zip(got, want, strict=False):
        if a.shape != b.shape or not np.isfinite(a).all():
            return float(np.inf)
        scale = float(np.max(np.abs(b), initial=0.0))
        diff = float(np.max(np.abs(a.astype(np.float64) - b), initial=0.0))
        worst = max(worst, diff / scale if scale > 0 else (0.0 if diff == 0 else np.inf))
    return float(worst)


def _engine_of(name: str) -> str:
    """The engine an artifact is checked in: its own where installed, else ONNX Runtime."""
    from nasdsl.bench.engines import available

    target, _ = deployment(name)
    return target if target == "openvino" and available("openvino") else "onnxruntime"


def _run(model: bytes, engine: str, precision: str, feeds: list[np.ndarray]) -> list[np.ndarray]:
    """Every output of ``model`` over ``feeds``, concatenated per output."""
    from nasdsl.bench.engines import open_onnx

    runner = open_onnx(model, engine, precision, 1)
    outs = [runner.every(x) for x in feeds]
    return [np.concatenate(o) for o in zip(*outs, strict=True)]


def _check(
    artifact: bytes,
    name: str,
    feeds: list[np.ndarray],
    reference: list[np.ndarray],
    samples: int,
    tolerance: float | None = None,
) -> tuple[float | None, str]:
    """The deviation of ``artifact`` from ``reference`` and the engine it ran in; raises
    :class:`ArtifactError` beyond ``tolerance`` (default: its precision's, :data:`TOLERANCE`)."""
    _, precision = deployment(name)
    most = TOLERANCE[precision] if tolerance is None else tolerance
    engine = _engine_of(name)
    if engine == "onnxruntime" and precision != "int8":
        return None, ""  # ONNX Runtime runs the fp32 export's graph itself: the reference
    got = _run(artifact, engine, precision, feeds)
    found = deviation(got, reference)
    if not found <= most:
        raise ArtifactError(
            f"the {name} artifact deviates from the fp32 export by {found:.3g} (max |out - ref| / max |ref| on "
            f"{samples} calibration input{'s' if samples != 1 else ''}, run in {engine}), above the {precision} "
            f"{'tolerance' if tolerance is None else 'tolerance given (--tolerance)'} {most:g}: not written "
            "(for int8, calibrate on inputs like the real ones with --data; --tolerance accepts a larger deviation)",
            path="--optimize-for",
        )
    return found, engine


def _refuse_non_finite(model: bytes, feeds: list[np.ndarray], outputs: list[np.ndarray] | None = None) -> None:
    """Refuse calibration inputs on which the fp32 ``model`` computes a value that is not finite,
    naming the first node (in the graph's order) that does; ``outputs``: its outputs, known
    finite or not (then the intermediate values are only looked at where they are not)."""
    if outputs is not None and all(np.isfinite(o).all() for o in outputs):
        return
    found = _first_non_finite(model, feeds)
    if found is not None:
        node, sample = found
        raise ArtifactError(
            f"the calibration inputs drive the fp32 model to values that are not finite (inf or NaN) from "
            f"node '{node}' on (sample {sample}; the largest input is {_largest(feeds):.3g}): expected inputs "
            "preprocessed as the model takes them, of ordinary size (--data), and weights that keep them finite"
        )


def _largest(feeds: list[np.ndarray]) -> float:
    return max(float(np.max(np.abs(x), initial=0.0)) for x in feeds)


def _first_non_finite(model: bytes, feeds: list[np.ndarray]) -> tuple[str, int] | None:
    """The first value of ``model`` (by graph order) that is not finite on one of ``feeds``, and
    the sample's index, or None."""
    import onnx

    proto = onnx.load_from_string(model)
    given = {o.name for o in proto.graph.output}
    order = [o for node in proto.graph.node for o in node.output if o]
    proto.graph.output.extend(onnx.ValueInfoProto(name=o) for o in order if o not in given)
    from nasdsl.bench.engines import open_onnx

    runner = open_onnx(proto.SerializeToString(), "onnxruntime", "fp32", 1)
    names = [o.name for o in proto.graph.output]
    start = 0
    for x in feeds:
        values = dict(zip(names, runner.every(x), strict=True))
        for name in order:
            v = values[name].reshape(len(x), -1) if values[name].ndim and len(values[name]) == len(x) else None
            if v is not None and not np.isfinite(v).all():
                return name, start + int(np.argmax(~np.isfinite(v).all(axis=1)))
        start += len(x)
    return None


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

    if not np.isfinite(calibration).all():
        raise ArtifactError("expected finite calibration inputs, got NaN or infinity", path="--data")
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
            feeds = _batches(calibration, batch if isinstance(batch, int) else 1)
            try:
                _quantize_static(
                    source,
                    target,
                    _Reader(_input_name(model), feeds),
                    quant_format=QuantFormat.QDQ,
                    per_channel=True,
                    weight_type=QuantType.QInt8,
                    activation_type=QuantType.QUInt8,
                    calibrate_method=CalibrationMethod.MinMax,
                )
            except AssertionError:  # its ranges' checks ("scale issue"): a value that is not finite, named
                _refuse_non_finite(model, feeds)
                raise
        with open(target, "rb") as f:
            return f.read()


@contextlib.contextmanager
def _quiet():
    """ONNX Runtime's quantiser without its log and numpy's warnings (an all-NaN range: the
    caller says what it means in one line)."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
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


__all__ = [
    "Artifact",
    "ArtifactError",
    "CHECKED",
    "make_artifact",
    "TARGET_KEY",
    "TOLERANCE",
    "deviation",
    "onnx_artifact",
    "quantize",
    "target_of",
]
