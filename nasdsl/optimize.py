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
model. :func:`rewrite` runs the folding and a target's rewrites for the ONNX export. Nothing here imports torch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

import networkx as nx

from nasdsl import ir
from nasdsl.errors import NasdslError
from nasdsl.ops import OPS
from nasdsl.passes.pipeline import run_pipeline
from nasdsl.weights import MAX_MEMORY

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


#: the largest deviation from the fp32 export an ONNX artifact of each precision may have before
#: ``compile --optimize-for`` refuses it (the bench measured 3e-3 to 7e-3 for bf16 and 1e-2 to 2.4e-2
#: for int8 on GoogLeNet, ResNet-50 and MobileNetV2: docs/deploy.md); beyond it the artifact computes
#: another function (nasdsl.bench.artifacts checks it)
ARTIFACT_TOLERANCE = {"fp32": 1e-4, "bf16": 0.05, "int8": 0.1}


def deployment(name: str) -> tuple[str, str]:
    """A target name split into (target, precision): ``openvino-bf16`` is ("openvino", "bf16"),
    ``cpu`` is ("cpu", "fp32"). Raises :class:`OptimizeError` for a name :func:`target_names`
    does not list."""
    target, _, precision = name.partition("-")
    if name not in target_names():  # "openvino-" or "cpu-fp32" too: each target is written one way
        raise OptimizeError(f"unknown optimisation target {name!r}; expected one of {', '.join(target_names())}")
    return target, precision or "fp32"


def target_names() -> tuple[str, ...]:
    """Every name ``--optimize-for`` takes: each target, then each with a precision other than fp32."""
    return (*TARGETS, *(f"{t}-{p}" for t, ps in PRECISIONS.items() for p in ps[1:]))


def pipeline(target: str) -> tuple[str, ...]:
    """Every pass :func:`optimize` runs for ``target``, in order."""
    return PREPARE + TARGETS[check_target(target)]


def optimize(
    graph: object, target: str = "cuda", *, rewrites: tuple[str, ...] | None = None, verify: bool | str | None = None
) -> nx.DiGraph:
    """The inference graph of ``graph`` (the IR or a compiled spec) optimised for
    ``target``: ``ir.info(g).optimized`` names the target, ``ir.info(g).pipeline``
    the passes, ``ir.info(g).derivation`` how its weights come from the
    unoptimised model's. ``rewrites`` replaces the target's rewrites (pass names,
    for experiments such as the benchmarks'). With ``verify``, the graph is checked
    after every pass."""
    passes = pipeline(target) if rewrites is None else PREPARE + tuple(rewrites)
    source = ir.as_graph(graph)
    if any(OPS[d.op].subgraph is not None for _, d in ir.nodes(source) if d.op in OPS):
        raise OptimizeError("an ensemble is not optimised as a whole; optimise the spec of each member")
    g = ir.copy(run_pipeline(source, passes, verify=verify))
    # every variable is folded into an inference build: its class takes no arguments
    ir.update_info(g, optimized=target, pipeline=passes, exposed=())
    return g


def training_weights(source: object, state_dict: Mapping[str, object], /, **how) -> dict[str, np.ndarray]:
    """The weights of a state_dict of the unoptimised model of ``source`` that its
    inference graph uses, checked (the generated model's keys; parts inference does not
    run, such as aux heads, and BatchNorm counters may be there or not), as float32
    numpy arrays. Raises a ``WeightsError`` listing what does not fit (``how``: how
    :func:`~nasdsl.weights.check_weights` names the file and where it was given)."""
    g = ir.as_graph(source)
    from nasdsl.weights import check_weights

    return check_weights(g, run_pipeline(g, PREPARE), state_dict, **how)


def load_checked(
    path: str | os.PathLike, g: nx.DiGraph, *, max_bytes: int | None = MAX_MEMORY, option: str = "--weights"
) -> dict[str, object]:
    """:func:`~nasdsl.weights.load_weights` of the file given by ``option``, checked at once
    against the model of ``g`` (what its inference runs: see :func:`training_weights`), so that an
    error names the file and the option."""
    from nasdsl.ensemble_ir import member_graphs
    from nasdsl.weights import load_weights

    state = load_weights(path, keypath=option, max_bytes=max_bytes)
    name = os.fspath(path)
    members = list(member_graphs(g))
    if not members:
        training_weights(g, state, source=f"'{name}'", path=option)
    for prefix, member in members:  # an ensemble's file: each member's keys ("a.conv.weight") against that member
        part = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        training_weights(member, part, source=f"'{name}' (its keys {prefix}*)", path=option)
    return state


def optimized_weights(source: object, optimized: nx.DiGraph, state_dict: Mapping[str, object]) -> dict[str, np.ndarray]:
    """The weights of ``optimized`` (made by :func:`optimize` from ``source``) from a
    state_dict of the unoptimised model (see :func:`training_weights`), keyed by the
    optimised graph's names."""
    from nasdsl.passes.derive import derive_weights

    return derive_weights(ir.info(optimized).derivation, training_weights(source, state_dict))


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

    from nasdsl.backends.pytorch import model_class
    from nasdsl.weights import initial_weights, load_weights

    g = ir.as_graph(source)
    chosen = DEFAULT_TARGET["pytorch"] if target is True else check_target(str(target))
    cls = model_class(optimize(g, chosen))
    if weights is None:
        state: Mapping[str, object] = initial_weights(g)
    else:
        state = load_weights(weights) if isinstance(weights, (str, os.PathLike)) else weights
    checked = training_weights(g, state)
    # a read-only array (an ONNX file's tensor) is copied: torch warns of one it would share
    return cls.from_training_state_dict(
        {k: torch.from_numpy(v if v.flags.writeable else v.copy()) for k, v in checked.items()}
    )


def rewrite(g: nx.DiGraph, target: str | None = None) -> nx.DiGraph:
    """``g`` (an inference graph) with BatchNorm folded, then ``target``'s rewrites (None:
    none), each recorded in the graph's ``derivation`` (:func:`nasdsl.passes.derive.derive_weights`
    replays it on the weights). What the ONNX export runs."""
    passes = ("fold_norms",) + tuple(p for p in (TARGETS[check_target(target)] if target else ()) if p != "fold_norms")
    out = run_pipeline(g, passes)
    if target is not None:
        out = ir.copy(out)
        ir.update_info(out, optimized=target, pipeline=PREPARE + TARGETS[target])
    return out


__all__ = [
    "ARTIFACT_TOLERANCE",
    "DEFAULT_TARGET",
    "build_inference",
    "load_checked",
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
    "rewrite",
    "target_names",
    "training_weights",
]
