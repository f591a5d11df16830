"""The engines the bench runs a spec's model under, each at the precisions it offers.

================ ============================ =============================================
engine           precisions                   what runs
================ ============================ =============================================
``eager``        fp32                         the ``cpu`` target's inference module, NCHW
``eager-cl``     fp32, bf16                   the same module and input channels_last (bf16:
                                              weights and input cast to bfloat16); a 3-D map
                                              (C, T, H, W) channels_last_3d
``compile``      fp32, bf16                   ``eager-cl`` under ``torch.compile`` (inductor);
                                              contiguous where the input is no 2-D or 3-D map
``onnxruntime``  fp32, int8                   the ``onnxruntime[-int8]`` artifact, CPU provider
``openvino``     fp32, bf16, int8             the ``openvino[-bf16|-int8]`` artifact, CPU plugin,
                                              latency hint
================ ============================ =============================================

bf16 is offered where the CPU has a bf16 flag (:mod:`nasdsl.bench.hardware`); ONNX Runtime's
CPU provider has no bf16 convolutions, so it is not offered there; int8 is quantised by ONNX
Runtime (:mod:`nasdsl.bench.artifacts`); the PyTorch engines offer no int8 (PyTorch's eager
quantisation is a separate workflow). A channels-last layout exists for 2-D and 3-D maps alone
(:func:`channels_last`): for tokens or a 1-D signal ``eager-cl`` is not offered (it would be
``eager`` again) and ``compile`` runs the contiguous layout. OpenVINO is an optional extra (``pip install
'nasdsl[openvino]'``): :func:`available` says whether it is installed.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nasdsl.errors import NasdslError

if TYPE_CHECKING:  # numpy is imported where models run: the command line's parser never needs it
    import numpy as np

#: each engine and the precisions it offers
ENGINES: dict[str, tuple[str, ...]] = {
    "eager": ("fp32",),
    "eager-cl": ("fp32", "bf16"),
    "compile": ("fp32", "bf16"),
    "onnxruntime": ("fp32", "int8"),
    "openvino": ("fp32", "bf16", "int8"),
}
#: the Python module each engine needs, and how to install it
NEEDS = {
    "onnxruntime": ("onnxruntime", "pip install onnxruntime"),
    "openvino": ("openvino", "pip install 'nasdsl[openvino]'"),
}
#: OpenVINO's name of each precision (its INFERENCE_PRECISION_HINT)
OPENVINO_PRECISION = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}


#: torch's channels-last layout for an input of these axes (a map with the channels first)
CHANNELS_LAST = {"CHW": "channels_last", "CTHW": "channels_last_3d"}


def channels_last(axes: str) -> str | None:
    """The name of torch's channels-last memory format for a sample of ``axes`` (the IR's
    input axes: ``CHW`` or ``CTHW``), or None where none exists (tokens, a 1-D signal)."""
    return CHANNELS_LAST.get(axes)


class EngineError(NasdslError):
    """An engine that is asked for and missing, or that cannot run a model (exit 2)."""


@dataclass(frozen=True)
class Config:
    """One measured configuration."""

    engine: str
    precision: str
    batch: int
    #: torch's memory format of the PyTorch engines other than ``eager`` (None: contiguous)
    layout: str | None = "channels_last"

    @property
    def target(self) -> str:
        """The ``--optimize-for`` target whose artifact this runs."""
        if self.engine in ("onnxruntime", "openvino"):
            return self.engine if self.precision == "fp32" else f"{self.engine}-{self.precision}"
        return "cpu"

    @property
    def onnx(self) -> bool:
        return self.engine in ("onnxruntime", "openvino")


def available(engine: str) -> bool:
    """Whether ``engine``'s package is installed (the PyTorch engines always are)."""
    need = NEEDS.get(engine)
    if need is None:
        return True
    try:
        return importlib.util.find_spec(need[0]) is not None
    except (ImportError, ValueError):  # a module set to None in sys.modules (the tests do that)
        return False


def missing_message(engine: str) -> str:
    return f"{engine} is not installed: {NEEDS[engine][1]}"


@dataclass
class Runner:
    """A prepared model: ``feed`` turns a float32 numpy batch into the engine's input once,
    ``run`` runs it (what is timed: the whole model, every output), ``outputs`` turns a result
    into every output of the model, in order (the first is the main one), as float32."""

    feed: Callable[[np.ndarray], object]
    run: Callable[[object], object]
    outputs: Callable[[object], list[np.ndarray]]

    def output(self, result: object) -> np.ndarray:
        """The main output of a result of ``run``."""
        return self.outputs(result)[0]

    def every(self, x: np.ndarray) -> list[np.ndarray]:
        """Every output for the float32 batch ``x``."""
        return self.outputs(self.run(self.feed(x)))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.every(x)[0]


# ---------------------------------------------------------------------------
# PyTorch


def torch_runner(module, config: Config, threads: int) -> Runner:
    """``module`` (an inference module in eval mode) run as ``config`` says."""
    import torch

    torch.set_num_threads(threads)
    named = None if config.engine == "eager" else config.layout
    if named is None and config.engine == "eager-cl":
        raise EngineError("eager-cl: the input is no 2-D or 3-D map, which a channels-last layout needs")
    layout = torch.contiguous_format if named is None else getattr(torch, named)
    dtype = torch.bfloat16 if config.precision == "bf16" else torch.float32
    module = module.to(memory_format=layout).to(dtype).eval()
    if config.engine == "compile":
        module = torch.compile(module)

    def feed(x: np.ndarray):
        return torch.from_numpy(x).to(dtype).contiguous(memory_format=layout)

    def run(x):
        with torch.inference_mode():
            return module(x)

    return Runner(feed, run, torch_outputs)


def torch_outputs(result) -> list[np.ndarray]:
    """Every output of a generated model's result (a tensor, or a NamedTuple of them), as float32."""
    import torch

    values = [result] if isinstance(result, torch.Tensor) else list(result)
    return [v.float().numpy() for v in values]


# ---------------------------------------------------------------------------
# ONNX engines


def open_onnx(
    model: bytes, engine: str, precision: str, threads: int, *, options: Mapping[str, object] | None = None
) -> Runner:
    """An ONNX artifact opened in ``engine`` at ``precision`` (OpenVINO's inference precision
    hint; ONNX Runtime's precision is the model's own), on ``threads`` threads. ``options``:
    more session options (ONNX Runtime: attributes of ``SessionOptions``; OpenVINO: properties)."""
    if not available(engine):
        raise EngineError(missing_message(engine))
    if engine == "onnxruntime":
        return _onnxruntime(model, threads, options or {})
    if engine == "openvino":
        return _openvino(model, precision, threads, options or {})
    raise EngineError(f"unknown ONNX engine {engine!r}")


def _onnxruntime(model: bytes, threads: int, options: Mapping[str, object]) -> Runner:
    import numpy as np
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    for key, value in options.items():
        setattr(so, key, value)
    session = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return Runner(
        lambda x: {name: x}, lambda feed: session.run(None, feed), lambda r: [np.asarray(v, np.float32) for v in r]
    )


def _openvino(model: bytes, precision: str, threads: int, options: Mapping[str, object]) -> Runner:
    import numpy as np
    import openvino as ov

    core = ov.Core()
    with tempfile.TemporaryDirectory(prefix="nasdsl-ov-") as folder:
        path = os.path.join(folder, "model.onnx")
        with open(path, "wb") as f:
            f.write(model)
        read = core.read_model(path)
    properties = {
        "INFERENCE_PRECISION_HINT": OPENVINO_PRECISION[precision],
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": threads,
        **options,
    }
    compiled = core.compile_model(read, "CPU", properties)
    request = compiled.create_infer_request()
    ports = list(compiled.outputs)

    def run(x):
        return request.infer({0: x}, share_inputs=True)

    return Runner(lambda x: np.ascontiguousarray(x), run, lambda r: [np.asarray(r[p], np.float32) for p in ports])


__all__ = [
    "ENGINES",
    "Config",
    "EngineError",
    "OPENVINO_PRECISION",
    "Runner",
    "available",
    "channels_last",
    "missing_message",
    "open_onnx",
    "torch_outputs",
    "torch_runner",
]
