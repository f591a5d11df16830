"""Check an ONNX export against the PyTorch backend's model, numerically.

:func:`verify` builds both backends' models for one graph with the same
weights, runs the PyTorch model in eval mode and ONNX Runtime (CPU) on the
same seeded random input, and compares every output of the ONNX graph (an
output that only one of them gives fails).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort
import torch

from nasdsl import ir
from nasdsl.errors import UsageError
from nasdsl.weights import check_weights, initial_weights, to_torch

from .onnx import DEFAULT_OPSET, export_graph, export_onnx
from .pytorch import model_class


@dataclass(frozen=True)
class OutputCheck:
    """One output compared: the largest absolute difference, that difference
    relative to the largest magnitude of the reference, and whether it is within tolerance."""

    name: str
    max_abs: float
    max_rel: float
    ok: bool
    #: why the figures are not differences (outputs of other shapes, a model that could not run)
    note: str = ""


@dataclass(frozen=True)
class Verification:
    """Every output of the ONNX graph compared with PyTorch's."""

    checks: tuple[OutputCheck, ...]
    tolerance: float

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)


def compare(name: str, got: np.ndarray, want: np.ndarray, tolerance: float) -> OutputCheck:
    """``got`` against the reference ``want``: rel = max |got - want| / max |want|."""
    if got.shape != want.shape:
        shown = "x".join(map(str, got.shape)) or "a scalar", "x".join(map(str, want.shape)) or "a scalar"
        return OutputCheck(name, math.inf, math.inf, False, f"shape {shown[0]} against the reference's {shown[1]}")
    max_abs = float(np.max(np.abs(got.astype(np.float64) - want), initial=0.0))
    scale = float(np.max(np.abs(want), initial=0.0))
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else math.inf)
    return OutputCheck(name, max_abs, max_rel, math.isfinite(max_rel) and max_rel <= tolerance)


def run_onnx(model, inputs: Mapping[str, np.ndarray], threads: int = 0) -> dict[str, np.ndarray]:
    """Run an ONNX model on ONNX Runtime's CPU provider; outputs by name."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, dict(inputs)), strict=True))


def torch_outputs(model: torch.nn.Module, x: torch.Tensor, names: list[str]) -> dict[str, np.ndarray]:
    """The generated model's outputs in eval mode, by output name."""
    with torch.no_grad():
        result = model(x)
    if isinstance(result, torch.Tensor):
        return {names[0]: result.detach().numpy()}
    fields = getattr(result, "_fields", names)
    return {f: v.detach().numpy() for f, v in zip(fields, result, strict=False) if v is not None}


def torch_model(graph: object, state_dict: Mapping[str, object] | None = None) -> torch.nn.Module:
    """The PyTorch backend's model for ``graph`` in eval mode with the given weights:
    ``state_dict`` (numpy arrays or tensors, checked as :func:`export_onnx` checks
    them; parts it leaves out keep the seeded initialisation) or, when None,
    :func:`nasdsl.weights.initial_weights`."""
    g = ir.as_graph(graph)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = model_class(g)()
    if state_dict is None:
        model.load_state_dict(to_torch(initial_weights(g)), strict=True)
    else:
        check_weights(g, export_graph(g), state_dict)
        tensors = {
            k: v if isinstance(v, torch.Tensor) else torch.from_numpy(np.array(v)) for k, v in state_dict.items()
        }
        model.load_state_dict(tensors, strict=False)
    return model.eval()


def verify(
    graph: object,
    *,
    state_dict: Mapping[str, object] | None = None,
    batch: int = 1,
    opset: int = DEFAULT_OPSET,
    seed: int = 0,
    tolerance: float = 1e-4,
) -> Verification:
    """Compare the ONNX export of ``graph`` with the generated PyTorch model.

    Both get ``state_dict`` (:func:`nasdsl.weights.initial_weights` when None)
    and a standard normal input drawn with ``seed``. An output passes when its
    largest absolute error, divided by the largest magnitude of PyTorch's
    output, is at most ``tolerance``.
    """
    g = ir.as_graph(graph)
    weights = initial_weights(g) if state_dict is None else state_dict
    reference = torch_model(g, weights)
    model = export_onnx(g, opset=opset, state_dict=weights, batch=batch)
    before = _before_softmax(g, model)
    inp = ir.info(g).input
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn((batch, *ir.node(g, inp).shape), generator=generator)
    got = run_onnx(model, {inp: x.numpy()})
    captured = _capture_inputs(reference, before)
    tensors = {tensor for tensor, _ in before.values()}
    want = torch_outputs(reference, x, [n for n in got if n not in tensors])
    for output, (tensor, _) in before.items():
        if captured.get(output):
            want[tensor] = captured[output][0]
    shown = {tensor: f"{output} (before softmax)" for output, (tensor, _) in before.items()}
    checks = tuple(
        compare(shown.get(name, name), value, want[name], tolerance)
        if name in want
        else OutputCheck(shown.get(name, name), math.inf, math.inf, False)
        for name, value in got.items()
    )
    # an output only PyTorch gives is a disagreement too
    checks += tuple(OutputCheck(name, math.inf, math.inf, False) for name in want if name not in got)
    return Verification(checks, tolerance)


def verify_import(
    graph: object, state_dict: Mapping[str, object], source: object, *, seed: int = 0, tolerance: float = 1e-4
) -> Verification:
    """Compare the generated model of an imported spec, holding the tensors the import carried,
    with the source it was imported from: an ``onnx.ModelProto`` run by ONNX Runtime, or an
    ``nn.Module`` run in eval mode. Both get a standard normal input drawn with ``seed``, of the
    spec's input shape, for as many samples as the file's input says (else 2); the outputs are
    compared in order, as :func:`verify` compares them."""
    g = ir.as_graph(graph)
    model = torch_model(g, state_dict)
    shape = ir.node(g, ir.info(g).input).shape
    batch = 2
    if isinstance(source, torch.nn.Module):
        x = torch.randn((batch, *shape), generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            want = _flat(source.eval()(x))
    else:
        fed = {t.name for t in source.graph.initializer}
        first = next(i for i in source.graph.input if i.name not in fed)
        sizes = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in _dims(first)]
        batch = sizes[0] if sizes and sizes[0] is not None else batch
        if len(sizes) == len(shape) + 1 and None not in sizes[1:]:
            shape = tuple(sizes[1:])  # a file of a fixed size, imported at another: compared at the file's
        dtype = _FLOATS.get(first.type.tensor_type.elem_type)
        if dtype is None:
            raise ValueError(f"the file's input {first.name!r} is not of a floating-point type: nothing to compare")
        tolerance = max(tolerance, _TOLERANCE.get(dtype, 0.0))
        x = torch.randn((batch, *shape), generator=torch.Generator().manual_seed(seed))
        try:
            ran = run_onnx(source, {first.name: x.numpy().astype(dtype)})
        except Exception as e:  # noqa: BLE001 - ONNX Runtime's own errors (InvalidArgument, Fail, ...)
            first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UsageError(
                f"ONNX Runtime does not run the file, so nothing can be compared with it: {first_line[:400]}",
                path="--check",
            ) from None
        want = [o.astype(np.float32) for o in ran.values()]
    try:
        with torch.no_grad():
            got = _flat(model(x))
    except RuntimeError as e:  # the file's own size, which the generated model cannot take (a flatten to a linear)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        size = "x".join(map(str, shape))
        note = f"the generated model does not run at the input size the file fixes, {size} ({first})"
        return Verification((OutputCheck("input", math.inf, math.inf, False, note),), tolerance)
    checks = tuple(compare(f"output {k}", a, b, tolerance) for k, (a, b) in enumerate(zip(got, want, strict=False)))
    if len(got) != len(want):
        checks += (OutputCheck("outputs", math.inf, math.inf, False, f"{len(got)} against the source's {len(want)}"),)
    return Verification(checks, tolerance)


#: the numpy types of ONNX's floating-point inputs, and the tolerance a file computing in a narrower one
#: is checked with (its own rounding, against the spec's float32)
_FLOATS = {1: np.float32, 10: np.float16, 11: np.float64}
_TOLERANCE = {np.float16: 1e-2}


def _dims(value_info) -> list:
    return list(value_info.type.tensor_type.shape.dim)


def _flat(result: object) -> list[np.ndarray]:
    """A model's outputs in order (a tensor, a tuple or named tuple, a dict) as numpy arrays."""
    if isinstance(result, torch.Tensor):
        return [result.detach().numpy()]
    if isinstance(result, Mapping):
        result = list(result.values())
    return [v.detach().numpy() for v in result if v is not None]


def _before_softmax(g, model) -> dict[str, tuple[str, str]]:
    """For each output that a softmax computes: the ONNX tensor of the softmax's input (added
    to ``model``'s outputs) and the softmax's node, whose PyTorch module has the same path.
    Saturated probabilities agree where the values before them do not."""
    found: dict[str, tuple[str, str]] = {}
    tensors = {info.name: info for info in model.graph.value_info}
    producers = {node.output[0]: node for node in model.graph.node}
    for o in ir.info(g).outputs:
        node = producers.get(o.name)
        if node is None or node.op_type != "Softmax" or ir.node(g, o.node).op != "softmax":
            continue
        source = node.input[0]
        if source in tensors and all(source != t for t, _ in found.values()):
            found[o.name] = (source, o.node)
            model.graph.output.append(tensors[source])
    return found


def _capture_inputs(model: torch.nn.Module, before: dict[str, tuple[str, str]]) -> dict[str, list]:
    """Forward pre-hooks on the softmax modules of ``before``: each records its input."""
    captured: dict[str, list] = {}
    modules = dict(model.named_modules())
    for output, (_, node) in before.items():
        module = modules.get(node)
        if module is not None:
            captured[output] = []
            module.register_forward_pre_hook(lambda m, args, out=output: captured[out].append(args[0].detach().numpy()))
    return captured


__all__ = [
    "OutputCheck",
    "Verification",
    "compare",
    "run_onnx",
    "torch_model",
    "torch_outputs",
    "verify",
    "verify_import",
]
