"""The objectives a search may minimise or maximise: one registry, one entry each.

An objective is computed in one of three places:

* ``figures``: by nasdsl, from the variant before it is dispatched (the figures
  ``nasdsl space`` lists: :mod:`nasdsl.variants`), in the driver; a search whose
  objectives are all of this kind runs nothing at all;
* ``model``: in the trial, on the generated PyTorch model at its
  initialisation, with one batch (the zero-cost proxies, :mod:`nasdsl.search.proxies`);
* ``evaluator``: ``metric:NAME``, read from the metrics the trial's evaluator returns
  (:mod:`nasdsl.search.evaluators`).

Adding an objective is one :class:`Objective` in :data:`OBJECTIVES`.
``latency_ms`` is a figure too: the latency this machine's latency model predicts
(:mod:`nasdsl.bench.latency`, made by ``nasdsl bench --calibrate``); a search that
names it, as an objective or a budget, needs that model and says so without it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

from nasdsl.errors import NasdslError
from nasdsl.figures import Figures
from nasdsl.space import Space

MINIMIZE, MAXIMIZE = "minimize", "maximize"
FIGURES, MODEL, EVALUATOR = "figures", "model", "evaluator"
#: the prefix of an evaluator's metric
METRIC = "metric:"
#: the figure a latency model predicts (nasdsl.bench.latency)
LATENCY = "latency_ms"


class ObjectiveError(NasdslError):
    """An objective that does not exist, or lacks what it needs (exit 2)."""


@dataclass
class Variant:
    """What a ``figures`` objective reads: the variant's picks and figures, and its compiled
    graph, made only when an objective asks for it."""

    space: Space
    picks: tuple[int, ...]
    figures: Figures

    @cached_property
    def graph(self):
        from nasdsl import api

        spec = api.model_spec(self.space.document_of(self.picks), self.space.files, {}, {})
        return api.compile_spec(spec).graph


@dataclass(frozen=True)
class Objective:
    """One objective: its name, the direction it takes unless told, where it is computed and
    how (``figure(variant)`` or ``model(module, batch)``), and a line of help."""

    name: str
    direction: str | None
    where: str
    about: str
    figure: Callable[[Variant], float] | None = None
    model: Callable[..., float] | None = None


def _figure(column: str) -> Callable[[Variant], float]:
    def compute(variant: Variant) -> float:
        return float(getattr(variant.figures, column))

    compute.__name__ = column
    return compute


def _proxy(name: str) -> Callable[..., float]:
    def compute(model, batch) -> float:
        from nasdsl.search import proxies

        return getattr(proxies, name)(model, batch)

    compute.__name__ = name
    return compute


OBJECTIVES: dict[str, Objective] = {
    o.name: o
    for o in (
        Objective("params", MINIMIZE, FIGURES, "parameters at inference", figure=_figure("params")),
        Objective("macs", MINIMIZE, FIGURES, "multiply-adds at inference, batch 1", figure=_figure("macs")),
        Objective("depth", MINIMIZE, FIGURES, "layers with parameters on the longest path", figure=_figure("depth")),
        Objective("peak", MINIMIZE, FIGURES, "peak activation size in values, batch 1", figure=_figure("peak")),
        Objective(
            LATENCY,
            MINIMIZE,
            FIGURES,
            "milliseconds a sample (batch 1), predicted by this machine's latency model (nasdsl bench --calibrate)",
            figure=_figure(LATENCY),
        ),
        Objective(
            "synflow",
            MAXIMIZE,
            MODEL,
            "SynFlow, the synaptic flow at initialisation (Tanaka et al. 2020)",
            model=_proxy("synflow"),
        ),
        Objective(
            "naswot",
            MAXIMIZE,
            MODEL,
            "NASWOT, the log-determinant of the activation-pattern kernel (Mellor et al. 2021)",
            model=_proxy("naswot"),
        ),
    )
}

#: names asked for that a later version will have, and why they are not here yet
PLANNED: dict[str, str] = {}


@dataclass(frozen=True)
class Goal:
    """An objective of a search, with its direction."""

    objective: Objective
    direction: str

    @property
    def name(self) -> str:
        return self.objective.name

    @property
    def where(self) -> str:
        return self.objective.where

    @property
    def metric(self) -> str | None:
        """The evaluator's metric it reads, for ``metric:NAME``."""
        return self.name[len(METRIC) :] if self.where == EVALUATOR else None


def objective(name: str) -> Objective:
    """The objective called ``name``: a registry entry or ``metric:NAME``."""
    if name in OBJECTIVES:
        return OBJECTIVES[name]
    metric = name[len(METRIC) :] if name.startswith(METRIC) else None
    if metric is not None and metric.strip() and metric != metric.strip():
        # 'metric: top1' would read a metric named ' top1', which no evaluator writes: every trial would fail
        raise ObjectiveError(f"{name!r}: expected a metric's name without spaces around it", path="--objective")
    if metric:
        return Objective(name, None, EVALUATOR, f"the evaluator's metric {metric}")
    if name in PLANNED:
        raise ObjectiveError(PLANNED[name], path="--objective")
    known = ", ".join([*OBJECTIVES, "metric:NAME"])
    raise ObjectiveError(f"expected an objective of {known}, got {name!r}", path="--objective")


def goal(name: str, direction: str | None) -> Goal:
    """``name`` with ``direction`` (``minimize``/``maximize``), or the objective's own."""
    o = objective(name)
    chosen = direction or o.direction
    if chosen is None:
        raise ObjectiveError(
            f"{name}: say whether to maximise or minimise it (--maximize {name} or --minimize {name})",
            path="--objective",
        )
    return Goal(o, chosen)


def checked(name: str, value: object) -> float:
    """An objective's value as a float; NaN is refused (Optuna fails a trial told NaN), an
    infinity kept (a NASWOT kernel that is singular scores minus infinity: worst, not failed)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ObjectiveError(f"{name}: expected a number, got {type(value).__name__} {value!r}")
    try:
        value = float(value)
    except OverflowError:  # an int past 1.8e308 (JSON and Python write integers of any length)
        raise ObjectiveError(
            f"{name}: expected a number a float holds, got an integer of {value.bit_length():,} bits (past 1.8e308)"
        ) from None
    if math.isnan(value):
        raise ObjectiveError(f"{name}: expected a number, got NaN")
    return value


__all__ = [
    "EVALUATOR",
    "FIGURES",
    "LATENCY",
    "MAXIMIZE",
    "MINIMIZE",
    "MODEL",
    "OBJECTIVES",
    "PLANNED",
    "Goal",
    "Objective",
    "ObjectiveError",
    "Variant",
    "checked",
    "goal",
    "objective",
]
