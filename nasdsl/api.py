"""The Python API.

>>> import nasdsl
>>> net = nasdsl.compile_spec("specs/googlenet.yaml", overrides={"num_classes": 10})
>>> net.summary()["totals"]["params"]
5983802

``compile_spec`` loads a spec (following ``extends``), applies overrides,
parses, expands, checks and infers shapes. The result (:class:`Compiled`)
holds the parsed spec and the graph IR; backends read only the graph.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import networkx as nx

from nasdsl import document, ensemble, ir
from nasdsl.build import MAX_NODES, build
from nasdsl.ensemble import CompiledEnsemble, EnsembleSpec
from nasdsl.errors import LimitError, NasdslError, SpecError
from nasdsl.loader import Limits, YMap
from nasdsl.passes.check import check
from nasdsl.passes.shapes import infer_shapes
from nasdsl.space import model_spec
from nasdsl.spec import (
    Spec,
    deferring_unknown_keys,
    flatten,
    follows_from_ignored,
    raise_errors,
)
from nasdsl.summary import Counts, summarize, totals

#: The loader's limits when the caller gives none (Limits is frozen, so one instance serves all).
DEFAULT_LIMITS = Limits()
#: Refuse models above this many parameters unless the caller raises the limit.
MAX_PARAMS = 10**10


@dataclass(frozen=True)
class Compiled:
    """A checked, shape-inferred spec."""

    spec: Spec
    graph: nx.DiGraph

    @property
    def name(self) -> str:
        return self.spec.name

    def summary(self, *, with_aux: bool = False) -> dict:
        return summarize(self.graph, with_aux=with_aux)

    def totals(self, *, with_aux: bool = False) -> dict:
        """The summary's totals alone: parameters, multiply-adds, depth."""
        return totals(self.graph, with_aux=with_aux, counts=self._counts)

    @functools.cached_property
    def _counts(self) -> Counts:
        return Counts(self.graph)


def load_spec(
    path: str | os.PathLike,
    overrides: Mapping[str, object] | Iterable[str] = (),
    *,
    limits: Limits = DEFAULT_LIMITS,
) -> Spec | EnsembleSpec:
    """Load and parse a spec (or an ensemble spec, :mod:`nasdsl.ensemble`). ``overrides`` is
    ``{path: value}`` or ``["path=value", ...]`` (the CLI's ``--set``), checked like the file."""
    doc, files = document.load_document(path, limits=limits)
    values, locations = document.override_values(overrides)
    if ensemble.is_ensemble_document(doc):
        return ensemble.load_ensemble(doc, files, values, locations)
    return model_spec(doc, files, values, locations)


def compile_spec(
    spec: Spec | EnsembleSpec | str | os.PathLike,
    overrides: Mapping[str, object] | Iterable[str] = (),
    *,
    limits: Limits = DEFAULT_LIMITS,
    max_nodes: int = MAX_NODES,
    max_params: int = MAX_PARAMS,
) -> Compiled | CompiledEnsemble:
    """Load (unless given a Spec), expand, check and shape a spec; an ensemble spec
    gives a :class:`nasdsl.ensemble.CompiledEnsemble`."""
    with few_collections():
        return _compile_spec(spec, overrides, limits=limits, max_nodes=max_nodes, max_params=max_params)


@contextlib.contextmanager
def few_collections():
    """Run the body with the cyclic garbage collector paused. Compiling allocates objects that
    live as long as the graph and makes little cyclic garbage; with the collector on, it scans
    them again and again: a third of the time of checking a spec of 100,000 nodes. The
    collector is switched back on afterwards if it was on (nested uses are fine)."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


def _compile_spec(
    spec: Spec | EnsembleSpec | str | os.PathLike,
    overrides: Mapping[str, object] | Iterable[str],
    *,
    limits: Limits,
    max_nodes: int,
    max_params: int,
) -> Compiled | CompiledEnsemble:
    deferred: list[NasdslError] = []
    if not isinstance(spec, (Spec, EnsembleSpec)):
        with deferring_unknown_keys() as deferred:
            try:
                spec = load_spec(spec, overrides, limits=limits)
            except NasdslError as e:
                raise_errors([*flatten(e), *deferred])
    try:
        return _compile_loaded(spec, deferred, max_nodes=max_nodes, max_params=max_params, limits=limits)
    except NasdslError as e:
        if not deferred:
            raise
        found = [x for x in flatten(e) if not follows_from_ignored(x, deferred)]
        raise_errors([*found, *deferred])  # an error found here first, then the rest (one per place)
        raise


def _compile_loaded(
    spec: Spec | EnsembleSpec, deferred: list[NasdslError], *, max_nodes: int, max_params: int, limits: Limits
) -> Compiled | CompiledEnsemble:
    """Build, check and shape a parsed spec. ``deferred``: errors parsing found but let pass
    (unknown keys, numbers out of range), raised once the build has said what it finds too;
    shapes are inferred only without them (a shape error then may follow from an ignored key)."""
    if isinstance(spec, EnsembleSpec):

        def member(doc: YMap, files: tuple[str, ...], values: Mapping, locations: Mapping) -> Compiled:
            return compile_spec(model_spec(doc, files, values, locations), max_nodes=max_nodes, max_params=max_params)

        compiled_ensemble = ensemble.compile_ensemble(spec, member, limits=limits, max_params=max_params)
        raise_errors(deferred)
        return compiled_ensemble
    g = check(build(spec, max_nodes=max_nodes))
    raise_errors(deferred)
    g = infer_shapes(g, copy=False)  # a fresh graph: no copy
    if spec.evaluation is not None:
        evaluation = spec.evaluation.bind(ir.node(g, ir.info(g).input).shape)
        if evaluation.average == "logits" and ir.node(g, ir.info(g).outputs[0].node).op == "softmax":
            raise SpecError(
                "expected probabilities, got logits: the model gives probabilities (its output is a softmax)",
                location=evaluation.loc,
                path="evaluation.average",
            )
        ir.update_info(g, evaluation=evaluation)
    compiled = Compiled(spec, g)
    total = sum(compiled._counts.params.values())
    if total > max_params:
        raise LimitError(
            f"the model has {total:,} parameters, above the limit of {max_params:,} (raise it with --max-params)",
            location=spec.model.loc,
            path="model",
        )
    return compiled


def build_model(
    spec: Compiled | str | os.PathLike,
    *,
    weights: Mapping[str, object] | str | os.PathLike | None = None,
    optimize: bool | str = False,
    **variables: object,
):
    """Compile a spec (``variables`` override the spec's, checked like ``--set``) and
    return an instance of its generated PyTorch model class, built in memory.

    ``weights`` is a state_dict (numpy arrays or tensors) or a weights file
    (``.safetensors`` or a ``torch.save``-d state_dict); it must fit the model
    exactly (``load_state_dict(strict=True)``, BatchNorm counters optional).

    ``optimize`` (True, or a target: ``cuda``, ``cpu``, ``onnxruntime``) returns the
    inference model instead, optimised for that target (:mod:`nasdsl.optimize`,
    docs/optimize.md), in eval mode, with ``weights`` (the training model's state_dict)
    folded and fused; without weights it holds the spec's seeded initialisation.
    """
    from nasdsl.backends.pytorch import model_class
    from nasdsl.weights import check_weights, load_weights

    if not isinstance(spec, (Compiled, CompiledEnsemble)):
        spec = compile_spec(spec, variables)
    elif variables:
        spec = compile_spec(spec.spec.file, variables)
    if optimize:
        from nasdsl.optimize import build_inference

        return build_inference(spec.graph, optimize, weights)
    model = model_class(spec.graph)()
    if weights is None and isinstance(spec, CompiledEnsemble):
        weights = ensemble.member_state_dict(spec)  # the members' own weights files
    if weights is not None:
        import numpy as np
        import torch

        state = load_weights(weights) if isinstance(weights, (str, os.PathLike)) else weights
        check_weights(spec.graph, spec.graph, state)
        tensors = {k: v if isinstance(v, torch.Tensor) else torch.from_numpy(np.array(v)) for k, v in state.items()}
        missing, unexpected = model.load_state_dict(tensors, strict=False)
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        if missing or unexpected:  # check_weights let only BatchNorm counters through
            raise AssertionError(f"weights do not fit: missing {missing}, unexpected {unexpected}")
    return model
