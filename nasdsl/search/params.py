"""A spec's choices as Optuna parameters, asked define-by-run (Optuna's ask-and-tell interface).

Each choice point of the space (:mod:`nasdsl.space`) is one parameter, named as
``--set`` names it (``width4``, ``inception4a.c3x3``):

* ``{range: [from, to, step]}`` is an ``IntDistribution(from, to, step)``: an
  ordered integer axis, which samplers that model order (TPE, GP, CMA-ES, QMC)
  treat as one;
* ``{choice: [...]}`` is a ``CategoricalDistribution`` of its options, unordered:
  numbers, ``true``/``false``, ``null`` (None) and expression text as written, a list
  option (a pair such as ``[1, 7]``) as ``--set`` writes it (``"[1,7]"``); where two
  options are equal to Python (``0`` and ``false``), each option of the choice as
  ``--set`` writes it (:func:`categories`). Write a ``range`` where the order of an
  integer axis matters to the sampler.

Conditional choices are asked only where they are made: the points are asked
in their order (variables first, each ``when`` reads only variables that come
before it), and a point whose ``when`` is false given the options picked so
far is not asked at all, so the trial holds no parameter for it and the
variant takes its default there, as ``nasdsl space`` counts it. Samplers see
the conditional structure as Optuna's define-by-run spaces show it.
Constraints are not parameters: a sampler may propose a variant that breaks
one, and the search rejects it before anything runs (:mod:`nasdsl.search.driver`).
"""

from __future__ import annotations

from collections.abc import Mapping

from nasdsl.choices import ChoicePoint, option_text
from nasdsl.errors import NasdslError, SpecError
from nasdsl.search.study import SearchError
from nasdsl.space import Space


def distribution(point: ChoicePoint):
    """The Optuna distribution of one choice point."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if point.kind == "range":
        low, high = point.options[0], point.options[-1]
        step = point.options[1] - low if len(point.options) > 1 else 1
        return IntDistribution(low, high, step=step)
    return CategoricalDistribution(categories(point))


def suggest(trial, space: Space) -> tuple[int, ...]:
    """Ask ``trial`` (an ``optuna.Trial``) for the points of ``space`` whose conditions hold;
    the picks of the variant it proposes (the other points at their defaults)."""
    return Asker(space)(trial)


class Asker:
    """:func:`suggest` for one space, with each point's distribution made once (a search asks
    the same points of every trial)."""

    def __init__(self, space: Space):
        self.space = space
        self.asks = []
        for point in space.points:
            d = distribution(point)
            if point.kind == "range":
                lookup = {v: k for k, v in enumerate(point.options)}
                self.asks.append((point, "int", (point.name, d.low, d.high), {"step": d.step}, lookup))
            else:
                lookup = {(type(v), v): k for k, v in enumerate(d.choices)}
                self.asks.append((point, "categorical", (point.name, d.choices), {}, lookup))

    def __call__(self, trial) -> tuple[int, ...]:
        space = self.space
        picks = list(space.default)
        for i, (point, kind, args, options, lookup) in enumerate(self.asks):
            if point.when is not None and not made(space, point, tuple(picks)):
                continue
            try:
                if kind == "int":
                    value = trial.suggest_int(*args, **options)
                    k = lookup.get(value) if type(value) is int else None
                else:
                    value = trial.suggest_categorical(*args)
                    k = lookup.get((type(value), value))
            except ValueError as e:  # Optuna: the study holds this parameter with another distribution
                raise SearchError(
                    f"the study holds the choice {point.name} as another parameter than this search asks "
                    f"({str(e).rstrip('.')}): another version of nasdsl search made it; start another --study-name",
                    path="--study-name",
                ) from None
            picks[i] = k if k is not None else index_of(point, value)
        return tuple(picks)


def picks_of(space: Space, params: Mapping[str, object]) -> tuple[int, ...]:
    """The picks of a trial's parameters (a finished trial's ``params``): a point without a
    parameter takes its default. Raises :class:`SpecError` when a value is no option of the
    spec's choice now (the spec changed since the trial ran)."""
    picks = list(space.default)
    for i, point in enumerate(space.points):
        if point.name in params:
            picks[i] = index_of(point, params[point.name])
    unknown = sorted(set(params) - {p.name for p in space.points})
    if unknown:
        raise SpecError(f"the trial has a parameter {unknown[0]!r} that is no choice of the spec")
    return tuple(picks)


def index_of(point: ChoicePoint, value: object) -> int:
    """The index of the option that the parameter value ``value`` stands for."""
    for k, mine in enumerate(categories(point)):
        if type(mine) is type(value) and mine == value:
            return k
    if point.kind == "range" and isinstance(value, int) and not isinstance(value, bool) and value in point.options:
        return point.options.index(value)
    raise SpecError(
        f"{value!r} is no option of the choice {point.name} ({', '.join(option_text(o) for o in point.options[:8])}"
        f"{', ...' if len(point.options) > 8 else ''})",
        location=point.loc,
        path=point.name,
    )


def _value(option: object) -> object:
    """An option as an Optuna categorical value (None, bool, int, float or str)."""
    return option_text(option) if isinstance(option, (list, tuple)) else option


def categories(point: ChoicePoint) -> list:
    """The Optuna categorical values of a choice's options, one each. Optuna finds a value among its
    choices by ``==``, which holds ``0 == false`` and ``1 == true``: a trial that picked ``1`` would
    be stored, and read back, as ``true``, another variant. Where two options are equal so, every
    option of the choice is its text as ``--set`` writes it (``"1"``, ``"true"``), or its Python
    ``repr`` where the texts are equal too (the number ``1`` and the string ``"1"``)."""
    values = [_value(o) for o in point.options]
    if len(set(values)) == len(values):
        return values
    texts = [option_text(o) for o in point.options]
    return texts if len(set(texts)) == len(texts) else [repr(o) for o in point.options]


def made(space: Space, point: ChoicePoint, picks: tuple[int, ...]) -> bool:
    """Whether ``point``'s condition holds with ``picks`` (where it cannot be evaluated the
    point is asked, and compiling the variant reports the error, as ``nasdsl space`` does)."""
    try:
        value = point.when.evaluate(space.environment(picks))
    except NasdslError:
        return True
    return value if isinstance(value, bool) else True


def made_arguments(space: Space, picks: tuple[int, ...]) -> list[str]:
    """The ``--set`` arguments of the choices the variant makes (not those whose condition is false)."""
    arguments = space.set_arguments(picks)
    return [arguments[i] for i, p in enumerate(space.points) if p.when is None or made(space, p, picks)]


__all__ = ["Asker", "categories", "distribution", "index_of", "made", "made_arguments", "picks_of", "suggest"]
