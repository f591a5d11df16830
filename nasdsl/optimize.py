"""Inference builds: the passes that pay on each deployment target, and the weights they need.

A rewrite that helps one target can hurt another (ONNX Runtime fuses
Conv+ReLU and folds BatchNorm itself; a wider convolution helps a GPU more
than a CPU), so the pipeline is chosen per target. Each choice is backed by a
measurement in ``benchmarks/RESULTS.md`` (see ``docs/optimize.md``):

=============== ==================================================================
target          passes after the inference view (``inference``, ``drop_identities``,
                ``drop_unused``)
=============== ==================================================================
``cuda``        ``fold_norms``, ``fuse_siblings``, ``hoist_activations``
``cpu``         ``fold_norms``
``onnxruntime`` ``fold_norms``
``openvino``    ``fold_norms``
=============== ==================================================================

A target may name a precision after a dash (:data:`PRECISIONS`): ``onnxruntime-int8``,
``openvino-bf16``, ``openvino-int8``. The rewrites are the target's; the precision says how
the artifact runs (an int8 ONNX model quantised by ONNX Runtime; a bf16 inference hint that
the artifact records for OpenVINO): :func:`deployment` splits a name, and
:mod:`nasdsl.bench.artifacts` writes the artifact that ``nasdsl bench`` measured.

:func:`optimize` runs a target's pipeline on a graph; the rewriting passes
record how the weights change (:mod:`nasdsl.passes.derive`), and
:func:`optimized_weights` replays that on a state_dict of the unoptimised
model. :func:`rewrite_weighted` does both on a graph whose weights travel
with it (the ONNX export). Nothing here imports torch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

import networkx as nx

from nasdsl import ir
from nasdsl.errors import NasdslError
from nasdsl.passes.pipeline import run_pipeline

if TYPE_CHECKING:  # numpy is imported where weights are handled: `nasdsl check` never needs it
    import numpy as np

#: the inference view every target starts from (the ONNX backend's pipeline)
PREPARE = ("inference", "drop_identities", "drop_unused")
#: the rewrites each target gets after PREPARE
TARGETS: dict[str, tuple[str, ...]] = {
    "cuda": ("fold_norms", "fuse_siblings", "hoist_activations"),
    "cpu": ("fold_norms",),
    "onnxruntime": ("fold_norms",),
    "openvino": ("fold_norms",),
}
#: the target ``--optimize`` means for each backend when ``--optimize-for`` names none
DEFAULT_TARGET = {"pytorch": "cuda", "onnx": "onnxruntime"}
#: the precisions each target may name after a dash (fp32, the default, is not written)
PRECISIONS: dict[str, tuple[str, ...]] = {
    "cuda": ("fp32",),
    "cpu": ("fp32",),
    "onnxruntime": ("fp32", "int8"),
    "openvino": ("fp32", "bf16", "int8"),
}
#: targets whose artifact only an ONNX model can be (an engine that reads ONNX)
ONNX_TARGETS = ("openvino",)


class OptimizeError(NasdslError):
    """An unknown target (exit 2 at the command line)."""


def check_target(target: str) -> str:
    if target not in TARGETS:
        raise OptimizeError(f"unknown optimisation target {target!r}; expected one of {', '.join(TARGETS)}")
    return target


def deployment(name: str) -> tuple[str, str]:
    """A target name split into (target, precision): ``openvino-bf16`` is ("openvino", "bf16"),
    ``cpu`` is ("cpu", "fp32"). Raises :class:`OptimizeError` for a name :func:`target_names`
    does not list."""
    target, _, precision = name.partition("-")
    if target not in TARGETS or (precision and precision not in PRECISIONS[target][1:]):
        raise OptimizeError(f"unknown optimisation target {name!r}; expected one of {', '.join(target_names())}")
    return target, precision or "fp32"


def target_names() -> tuple[str, ...]:
    """Every name ``--optimize-for`` takes: each target, then each with a precision other than fp32."""
    return (*TARGETS, *(f"{t}-{p}" for t, ps in PRECISIONS.items() for p in ps[1:]))


def pipeline(target: str) -> tuple[str, ...]:
    """Every pass :func:`optimize` runs for ``target``, in order."""
    return PREPARE + TARGETS[check_target(target)]


def optimize(
    graph: object, target: str = "cuda", *, rewrites: tuple[str, ...] | None = None, verify: bool = False
) -> nx.DiGraph:
    """The inference graph of ``graph`` (the IR or a compiled spec) optimised for
    ``target``: ``g.graph["optimized"]`` names the target, ``g.graph["pipeline"]``
    the passes, ``g.graph["derivation"]`` how its weights come from the
    unoptimised model's. ``rewrites`` replaces the target's rewrites (pass names,
    for experiments such as the benchmarks'). With ``verify``, the graph is checked
    after every pass."""
    passes = pipeline(target) if rewrites is None else PREPARE + tuple(rewrites)
    source = ir.as_graph(graph)
    if "members" in source.graph:
        raise OptimizeError("an ensemble is not optimised as a whole; optimise the spec of each member")
    g = run_pipeline(source, passes, verify=verify)
    if not g.graph.get("flat"):  # a target without rewrites: the tree still says what runs
        g = run_pipeline(g, ("flatten",), verify=verify)
    g.graph.update(optimized=target, pipeline=passes, derivation=g.graph.get("derivation", ()))
    return g


def training_weights(source: object, state_dict: Mapping[str, object]) -> dict[str, np.ndarray]:
    """The weights of a state_dict of the unoptimised model of ``source`` that its
    inference graph uses, checked (the generated model's keys; parts inference does not
    run, such as aux heads, and BatchNorm counters may be there or not), as float32
    numpy arrays. Raises a ``WeightsError`` listing what does not fit."""
    g = ir.as_graph(source)
    from nasdsl.weights import check_weights

    return check_weights(g, run_pipeline(g, PREPARE), state_dict)


def optimized_weights(source: object, optimized: nx.DiGraph, state_dict: Mapping[str, object]) -> dict[str, np.ndarray]:
    """The weights of ``optimized`` (made by :func:`optimize` from ``source``) from a
    state_dict of the unoptimised model (see :func:`training_weights`), keyed by the
    optimised graph's names."""
    from nasdsl.passes.derive import derive_weights

    return derive_weights(optimized.graph["derivation"], training_weights(source, state_dict))


def build_inference(
    source: object, target: str | bool = True, weights: Mapping[str, object] | str | os.PathLike | None = None
):
    """An instance of the generated inference class of ``source`` optimised for ``target``
    (True: the PyTorch default, :data:`DEFAULT_TARGET`), built in memory and in eval mode,
    holding ``weights``: a state_dict of the *training* model or a weights file
    (:func:`nasdsl.weights.load_weights`), folded and fused by the class's
    ``from_training_state_dict``; without weights, the spec's seeded initialisation
    (:func:`nasdsl.weights.initial_weights`, what the ONNX export uses). Imports torch."""
    import torch

    from nasdsl.backends.inference import inference_class
    from nasdsl.weights import initial_weights, load_weights

    g = ir.as_graph(source)
    chosen = DEFAULT_TARGET["pytorch"] if target is True else check_target(str(target))
    cls = inference_class(optimize(g, chosen))
    if weights is None:
        state: Mapping[str, object] = initial_weights(g)
    else:
        state = load_weights(weights) if isinstance(weights, (str, os.PathLike)) else weights
    checked = training_weights(g, state)
    return cls.from_training_state_dict({k: torch.from_numpy(v) for k, v in checked.items()})


def rewrite_weighted(g: nx.DiGraph, target: str) -> nx.DiGraph:
    """``g`` (an inference graph whose ``g.graph["weights"]`` holds its weights)
    through ``target``'s rewrites, the weights derived to match (a copy)."""
    steps_before = len(g.graph.get("derivation", ()))
    out = run_pipeline(g, TARGETS[check_target(target)])
    if not out.graph.get("flat"):
        out = run_pipeline(out, ("flatten",))
    steps = out.graph.get("derivation", ())[steps_before:]
    from nasdsl.passes.derive import derive_weights

    out.graph["weights"] = derive_weights(steps, out.graph["weights"])
    # the weights are derived already: nothing is left to replay
    out.graph.update(optimized=target, pipeline=PREPARE + TARGETS[target], derivation=())
    return out


__all__ = [
    "DEFAULT_TARGET",
    "build_inference",
    "PREPARE",
    "TARGETS",
    "OptimizeError",
    "ONNX_TARGETS",
    "PRECISIONS",
    "check_target",
    "deployment",
    "optimize",
    "optimized_weights",
    "pipeline",
    "rewrite_weighted",
    "target_names",
    "training_weights",
]
