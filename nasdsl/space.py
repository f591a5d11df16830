"""Design spaces: choices written in a spec, and the variants they span.

A value of a spec may be a *choice* instead of a value (``docs/design-space.md``)::

    variables:
      width: {choice: [0.5, 0.75, 1.0], default: 1.0}
      deep: {choice: [true, false]}
      dropout_aux: {choice: [0.5, 0.7], when: aux_logits}
    model:
      inception4a: {use: Inception, args: [192, 96, {range: [160, 256, 48]}, 16, 48, 64]}
    constraints:
      - "width >= 0.75 or not deep"

This module works on the loaded document, before the parser sees it.
:func:`find_space` gathers the *choice points* (:mod:`nasdsl.choices` finds and
reads them: where each stands, its options, default and condition), the
document's ``constraints`` and how the variables are computed, into a
:class:`Space` that counts, numbers, enumerates and samples the variants and
writes the plain document of any of them (:meth:`Space.document_of`);
:func:`default_document` (which ``nasdsl.api.load_spec`` calls) gives the
default variant's, so that every command compiles a spec with choices as its
default variant. :mod:`nasdsl.variants` evaluates variants fast.

A variant is a tuple of *picks*, one option index per point. Its id is the
picks read as a mixed-radix number, the first point the most significant
(points are numbered variables first, then input, model, outputs and
templates, each in file order). A point whose ``when`` is false takes its
default; a variant must satisfy every constraint. Spaces without conditions
and constraints are *independent*: every id below :meth:`Space.size` is a
variant and :meth:`Space.count` is their product.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property

from nasdsl import document, ensemble
from nasdsl.choices import (
    CHOICE_KEYS,
    CONSTRAINTS,
    ChoicePoint,
    Constraint,
    Position,
    constraints,
    find_choices,
    option_text,
    plain,
    substitute,
)
from nasdsl.errors import Location, NasdslError, SpecError, one_line
from nasdsl.evaluation import parse_evaluation
from nasdsl.loader import YMap
from nasdsl.numbers import number_errors
from nasdsl.ops import describe
from nasdsl.spec import (
    Spec,
    Value,
    defer,
    deferring_unknown_keys,
    did_you_mean,
    flatten,
    parse_spec,
    parse_value,
    raise_errors,
)

#: the most work counting or listing the variants of a group of tied choices may take: the
#: assignments tried times the expression nodes each one evaluates (a few seconds)
MAX_WORK = 3_000_000


@dataclass(frozen=True)
class Space:
    """The choice points of a document and what the variants they span need."""

    document: YMap
    file: str
    files: tuple[str, ...]
    points: tuple[ChoicePoint, ...]
    constraints: tuple[Constraint, ...] = ()
    #: the variables in order: (name, its Value, or the index of the point that defines it)
    steps: tuple[tuple[str, Value | int], ...] = ()
    #: the option Values of each point, parsed at its first place
    option_values: tuple[tuple[Value, ...], ...] = field(default=(), repr=False)

    # -- sizes

    @property
    def radix(self) -> tuple[int, ...]:
        return tuple(len(p.options) for p in self.points)

    @property
    def size(self) -> int:
        """The number of pick tuples, variant or not: the ids run below it."""
        return math.prod(self.radix)

    @property
    def independent(self) -> bool:
        """No conditions and no constraints: every pick tuple is a variant."""
        return not self.constraints and all(p.when is None for p in self.points)

    @property
    def default(self) -> tuple[int, ...]:
        return tuple(p.default for p in self.points)

    @cached_property
    def _dependencies(self) -> tuple[tuple[frozenset[int], ...], tuple[frozenset[int], ...]]:
        """The points each point's condition and each constraint depend on (through the variables)."""
        of_variable = self.points_of_variables()

        def points_of(value: Value | None) -> frozenset[int]:
            if value is None:
                return frozenset()
            return frozenset().union(*(of_variable.get(n, frozenset()) for n in value.names))

        return (
            tuple(points_of(p.when) for p in self.points),
            tuple(points_of(c.value) for c in self.constraints),
        )

    @cached_property
    def _groups(self) -> tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]:
        """The points that conditions and constraints tie together: (points, constraints) per
        group, in the order of their first point; a point that nothing ties is a group of one
        without constraints."""
        when_deps, constraint_deps = self._dependencies
        parent = list(range(len(self.points)))

        def find(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        def union(group: Iterable[int]) -> None:
            group = list(group)
            for j in group[1:]:
                parent[find(j)] = find(group[0])

        for i, deps in enumerate(when_deps):
            if self.points[i].when is not None:
                union([i, *deps])
        for deps in constraint_deps:
            union(deps)
        groups: dict[int, list[int]] = {}
        for i in range(len(self.points)):
            groups.setdefault(find(i), []).append(i)
        out = []
        for members in groups.values():
            constrained = tuple(
                c for c, deps in enumerate(constraint_deps) if deps and find(next(iter(deps))) == find(members[0])
            )
            out.append((tuple(members), constrained))
        return tuple(out)

    @property
    def groups(self) -> tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]:
        """The points that conditions and constraints tie together, with their constraints: (points,
        constraints) per group, in the order of their first point."""
        return self._groups

    def is_free(self, g: int) -> bool:
        """Whether group ``g`` is one point that nothing ties (every option is a variant's)."""
        return self._free(*self._groups[g])

    def admissible(self, g: int) -> tuple[tuple[int, ...], ...]:
        """The assignments of group ``g``'s points that are variants (option indices in point
        order), in id order; a located SpecError where trying them all costs too much."""
        if self.is_free(g):
            return tuple((k,) for k in range(len(self.points[self._groups[g][0][0]].options)))
        return self._admissible(g)

    def points_of_variables(self) -> dict[str, frozenset[int]]:
        """For each variable, the points its value depends on (its own, and those of the
        variables it reads)."""
        of_variable: dict[str, frozenset[int]] = {}
        for name, step in self.steps:
            if isinstance(step, int):
                names = frozenset().union(*(v.names for v in self.option_values[step]))
                own = frozenset({step})
            else:
                names, own = step.names, frozenset()
            of_variable[name] = own.union(*(of_variable.get(n, frozenset()) for n in names))
        return of_variable

    def _free(self, members: tuple[int, ...], constrained: tuple[int, ...]) -> bool:
        return len(members) == 1 and self.points[members[0]].when is None and not constrained

    def count(self) -> int:
        """The exact number of variants: the product of the option counts where choices are
        independent; else the product, over groups of points that conditions and constraints
        tie together, of the assignments of each group that are variants."""
        if self.independent:
            return self.size
        total = 1
        for g, (members, constrained) in enumerate(self._groups):
            if self._free(members, constrained):
                total *= len(self.points[members[0]].options)
            else:
                total *= len(self._admissible(g))
        # constraints that depend on no choice hold for every variant or for none
        for c, deps in enumerate(self._dependencies[1]):
            if not deps and self._holds(c, self.default) is False:
                return 0
        return total

    def _work(self, members: tuple[int, ...], constrained: tuple[int, ...]) -> int:
        """What trying one assignment of a group costs, in expression nodes evaluated: every
        variable, the group's constraints and the conditions of its points."""
        cost = 1 + sum(
            max(map(_size, self.option_values[s])) if isinstance(s, int) else _size(s) for _, s in self.steps
        )
        cost += sum(_size(self.constraints[c].value) for c in constrained)
        return cost + sum(_size(self.points[i].when) for i in members)

    def _admissible(self, g: int) -> tuple[tuple[int, ...], ...]:
        """The assignments of group ``g``'s points (option indices, in point order) that are
        variants, in id order; refused (a located SpecError) when trying them all would cost
        more than :data:`MAX_WORK`."""
        found = self.__dict__.setdefault("_admissible_cache", {})
        if g in found:
            return found[g]
        members, constrained = self._groups[g]
        tries = math.prod(len(self.points[i].options) for i in members)
        work = tries * self._work(members, constrained)
        if work > MAX_WORK:
            first = self.points[members[0]]
            raise SpecError(
                f"cannot count the variants exactly: {len(members)} choices that conditions or constraints tie "
                f"together have {tries:,} combinations; trying them all means {work:,} evaluation steps, more "
                f"than {MAX_WORK:,} (fewer options, or constraints on fewer choices)",
                location=first.loc,
                path=first.name,
            )
        picks = list(self.default)
        out = []
        for combo in _odometer([len(self.points[i].options) for i in members]):
            for i, k in zip(members, combo, strict=True):
                picks[i] = k
            if self._admits(tuple(picks), members, constrained):
                out.append(combo)
        found[g] = tuple(out)
        return found[g]

    # -- ids and picks

    def id_of(self, picks: tuple[int, ...]) -> int:
        n = 0
        for k, r in zip(picks, self.radix, strict=True):
            n = n * r + k
        return n

    def picks_of(self, variant: int) -> tuple[int, ...]:
        if not 0 <= variant < self.size:
            raise SpecError(f"expected a variant id from 0 to {self.size - 1:,}, got {variant}", path="--pick")
        picks = []
        for r in reversed(self.radix):
            variant, k = divmod(variant, r)
            picks.append(k)
        return tuple(reversed(picks))

    def environment(self, picks: tuple[int, ...]) -> dict[str, object]:
        """The variables' values with these picks (raises SpecError as the compiler would)."""
        env: dict[str, object] = {}
        for name, step in self.steps:
            value = self.option_values[step][picks[step]] if isinstance(step, int) else step
            v = value.evaluate(env)
            if isinstance(v, list):
                raise SpecError("expected a number or a boolean, got a list", location=value.loc, path=value.path)
            env[name] = v
        return env

    def _holds(self, c: int, picks: tuple[int, ...], env: dict | None = None) -> bool | None:
        """Whether constraint ``c`` holds (None when it cannot be evaluated: the variant is kept,
        and compiling it will say what is wrong)."""
        try:
            value = self.constraints[c].value.evaluate(env if env is not None else self.environment(picks))
        except NasdslError:
            return None
        return value if isinstance(value, bool) else None

    def _active(self, i: int, env: dict) -> bool:
        when = self.points[i].when
        if when is None:
            return True
        try:
            value = when.evaluate(env)
        except NasdslError:
            return True
        return value if isinstance(value, bool) else True

    def _admits(self, picks: tuple[int, ...], members: Iterable[int], constrained: Iterable[int]) -> bool:
        try:
            env = self.environment(picks)
        except NasdslError:
            return True  # kept: compiling it reports the error
        for i in members:
            if picks[i] != self.points[i].default and not self._active(i, env):
                return False
        return all(self._holds(c, picks, env) is not False for c in constrained)

    def why_not(self, picks: tuple[int, ...]) -> str | None:
        """Why these picks are no variant (a choice made under a false condition, a broken
        constraint), or None when they are one."""
        try:
            env = self.environment(picks)
        except NasdslError:
            return None
        for i, p in enumerate(self.points):
            if picks[i] != p.default and not self._active(i, env):
                return f"{p.name} is chosen only when {p.when.raw} (else it is {option_text(p.options[p.default])})"
        for c, constraint in enumerate(self.constraints):
            if self._holds(c, picks, env) is False:
                return f"it breaks the constraint {constraint.text} ({constraint.value.loc})"
        return None

    def variants(self) -> Iterator[tuple[int, ...]]:
        """Every variant's picks in id order. Where choices are tied, only the options that
        keep every group's assignment so far a start of one of its variants are tried, so the
        next variant is found without walking the pick tuples that are none."""
        radix = self.radix
        if self.independent:
            yield from _odometer(radix)
            return
        if self.count() == 0:
            return
        # per point: its group's admissible prefixes up to it (None: a free point)
        group_of: dict[int, tuple[int, int]] = {}
        prefixes: dict[int, list[set[tuple[int, ...]]]] = {}
        for g, (members, constrained) in enumerate(self._groups):
            if self._free(members, constrained):
                continue
            sets: list[set[tuple[int, ...]]] = [set() for _ in members]
            for combo in self._admissible(g):
                for j in range(len(members)):
                    sets[j].add(combo[: j + 1])
            prefixes[g] = sets
            for j, i in enumerate(members):
                group_of[i] = (g, j)
        n = len(radix)
        partial: dict[int, tuple[int, ...]] = {g: () for g in prefixes}

        def options(i: int) -> list[int]:
            if i not in group_of:
                return list(range(radix[i]))
            g, j = group_of[i]
            return [k for k in range(radix[i]) if (*partial[g], k) in prefixes[g][j]]

        picks: list[int] = []
        stack = [iter(options(0))] if n else []
        while stack:
            i = len(stack) - 1
            k = next(stack[-1], None)
            if len(picks) > i:  # the option tried before at this point is undone
                picks.pop()
                if i in group_of:
                    g = group_of[i][0]
                    partial[g] = partial[g][:-1]
            if k is None:
                stack.pop()
                continue
            picks.append(k)
            if i in group_of:
                g = group_of[i][0]
                partial[g] = (*partial[g], k)
            if i == n - 1:
                yield tuple(picks)
            else:
                stack.append(iter(options(i + 1)))

    def sample(self, n: int, seed: int, by: str = "variant") -> list[tuple[int, ...]]:
        """``n`` distinct variants drawn with ``seed`` (all of them when there are fewer), in id
        order.

        ``by="variant"`` (the default): every variant is equally likely. Where choices are tied,
        each group of tied choices takes one of its admissible assignments (:meth:`_admissible`),
        so no draw is wasted on a pick tuple that is no variant. Time and memory follow ``n``.

        ``by="choice"``: each choice is drawn on its own, every option equally likely
        (:meth:`draw`); a variant whose choices make few variants (a shallow network whose
        deeper blocks' choices are off) comes up more often. Draws that break a constraint or
        repeat a variant are drawn again, at most :func:`draw_limit` times in all, so fewer
        than ``n`` may come back."""
        if by == "choice":
            return self.sample_by_choice(n, seed)[0]
        rng = random.Random(seed)
        size = self.size
        if self.independent:
            if n >= size:
                return list(self.variants())
            if size < 1 << 62:
                ids = rng.sample(range(size), n)
            else:
                chosen: set[int] = set()
                while len(chosen) < n:
                    chosen.add(rng.randrange(size))
                ids = list(chosen)
            return [self.picks_of(i) for i in sorted(ids)]
        count = self.count()
        if n >= count:
            return list(self.variants())
        if 2 * n >= count:  # most of them: draw from the list rather than wait for the last ones
            return sorted(rng.sample(list(self.variants()), n))
        found: dict[int, tuple[int, ...]] = {}
        while len(found) < n:
            picks = self._draw(rng)
            found.setdefault(self.id_of(picks), picks)
        return [found[i] for i in sorted(found)]

    def sample_by_choice(self, n: int, seed: int) -> tuple[list[tuple[int, ...]], int]:
        """:meth:`sample` ``by="choice"``, and the draws it made."""
        rng = random.Random(seed)
        found: dict[int, tuple[int, ...]] = {}
        wanted = min(n, self.count())
        draws = 0
        while len(found) < wanted and draws < draw_limit(n):
            draws += 1
            picks = self.draw(rng, "choice")
            if picks is not None:
                found.setdefault(self.id_of(picks), picks)
        return [found[i] for i in sorted(found)], draws

    def draw(self, rng: random.Random, by: str = "variant") -> tuple[int, ...] | None:
        """One draw: a variant, every one equally likely (``by="variant"``), or each choice's
        option, every option equally likely (``by="choice"``: a choice whose condition is false
        keeps its default; None when the picks break a constraint)."""
        if by == "variant":
            if self.independent:
                return self.picks_of(rng.randrange(self.size))
            return self._draw(rng)
        if by != "choice":
            raise ValueError(f"expected a distribution 'variant' or 'choice', got {by!r}")
        picks = list(self.default)
        for i, p in enumerate(self.points):
            picks[i] = rng.randrange(len(p.options))
        if not self.independent:
            # a variable's condition reads the variables before it, and the others' conditions every
            # variable: in point order, each condition sees its final values
            for i, p in enumerate(self.points):
                if p.when is None:
                    continue
                try:
                    env = self.environment(tuple(picks))
                except NasdslError:
                    break  # kept: compiling it reports the error
                if not self._active(i, env):
                    picks[i] = p.default
            if self.why_not(tuple(picks)) is not None:
                return None
        return tuple(picks)

    def _draw(self, rng: random.Random) -> tuple[int, ...]:
        """One variant, uniformly: a random admissible assignment of each group of tied choices,
        a random option of each free one."""
        picks = list(self.default)
        for g, (members, constrained) in enumerate(self._groups):
            if self._free(members, constrained):
                picks[members[0]] = rng.randrange(len(self.points[members[0]].options))
            else:
                for i, k in zip(members, rng.choice(self._admissible(g)), strict=True):
                    picks[i] = k
        return tuple(picks)

    # -- what a variant is

    def choices(self, picks: tuple[int, ...]) -> dict[str, object]:
        """The option each point takes, as written, by point name."""
        return {p.name: plain(p.options[k]) for p, k in zip(self.points, picks, strict=True)}

    def set_arguments(self, picks: tuple[int, ...]) -> list[str]:
        """``--set`` arguments that make this variant from the spec: ``["width=0.5", ...]``."""
        return [f"{p.name}={option_text(p.options[k])}" for p, k in zip(self.points, picks, strict=True)]

    def check(self, picks: tuple[int, ...]) -> None:
        """Raise a SpecError when ``picks`` are no variant of the space."""
        reason = self.why_not(picks)
        if reason is not None:
            raise SpecError(f"variant {self.id_of(picks)} is not in the space: {reason}", path="--pick")

    def document_of(self, picks: tuple[int, ...], *, keep_constraints: bool = False) -> YMap:
        """The plain document of a variant: each choice replaced by the option picked, written
        where that option is written; without ``constraints`` unless ``keep_constraints``."""
        chosen: dict[tuple[str | int, ...], tuple[object, Location]] = {}
        for p, k in zip(self.points, picks, strict=True):
            for pos in p.positions:
                chosen[pos.keys] = (p.block(k) if p.kind == "block" else p.options[k], p.option_locs[k])
        return substitute(self.document, (), chosen, top=not keep_constraints)


def draw_limit(n: int) -> int:
    """The draws a sample of ``n`` may take before it stops short: ``10 n + 100``."""
    return 10 * n + 100


SAMPLE_BY = ("variant", "choice")


# ---------------------------------------------------------------------------
# Spaces of documents


def find_space(
    doc: YMap, file: str = "", files: tuple[str, ...] = (), *, names: Mapping[int, str] | None = None
) -> Space:
    """The choice points and constraints of a loaded (merged, overridden) document.

    ``names`` renames the points whose choice mapping has that ``id()`` (``nasdsl sweep``
    names its axes as its ``--set`` keys). Raises :class:`SpecError` for a malformed choice.
    """
    points = find_choices(doc, names)
    steps, option_values = _steps(doc, points)
    space = Space(doc, file, files or (file,), points, constraints(doc), steps, option_values)
    _check_conditions(space)
    return space


def load_space(path, overrides: Mapping[str, object] | Iterable[str] = (), *, limits=None, check: bool = True) -> Space:
    """Load a spec file (following ``extends``), apply ``--set``-style overrides and find its space.

    With ``check`` (the default) the spec is first parsed as the compiler parses it, as its
    default variant: a spec the parser refuses (an unknown key, a bad name, a section or a
    ``doc`` of the wrong type, a ``--set`` of nothing) raises the compiler's errors, every one
    located, and an ensemble spec is refused. Whether the default variant builds (its
    references, its attributes' values, its shapes) is left to the evaluation of the variants,
    as for any other variant. The commands, which have compiled
    the default variant already, pass ``check=False``.
    """
    kwargs = {"limits": limits} if limits is not None else {}
    if check:
        _parse_default(path, overrides, kwargs)
    doc, files = document.load_document(path, **kwargs)
    doc = apply_overrides(doc, overrides)
    return find_space(doc, files[0], files)


def _parse_default(path, overrides: Mapping[str, object] | Iterable[str], kwargs: dict) -> None:
    """Parse the default variant of the spec at ``path`` as ``nasdsl.compile_spec`` does: every
    unknown key reported with the other errors (see :func:`load_space`)."""
    with deferring_unknown_keys() as deferred:
        try:
            doc, files = document.load_document(path, **kwargs)
            values, locations = document.override_values(overrides)
            if ensemble.is_ensemble_document(doc):
                raise SpecError(
                    "is an ensemble spec, which has no design space of its own: load a member's spec",
                    location=Location(str(path), 1, 1),
                )
            model_spec(doc, files, values, locations)
        except NasdslError as e:
            raise_errors([*flatten(e), *deferred])
    raise_errors(deferred)


def model_spec(
    doc: YMap, files: tuple[str, ...], values: Mapping[str, object], locations: Mapping[str, Location]
) -> Spec:
    """Parse a loaded model document with overrides; its ``evaluation`` section (and the
    overrides below it) are parsed apart (:mod:`nasdsl.evaluation`) and kept on the Spec."""
    own = {k: v for k, v in values.items() if k.split(".")[0] == "evaluation"}
    for key, value in own.items():
        doc = ensemble.set_path(doc, key, value, locations.get(key) or Location(f"<override {key}>", 1, 1))
    values = {k: v for k, v in values.items() if k not in own}
    if values:
        doc = document.apply_overrides(doc, values, locations)
    defer(number_errors(doc))  # every number, the options of choices included, finite and within 2^53
    rounds = option_documents(doc)
    doc = default_document(doc)  # a spec with choices compiles as its default variant
    section = None
    if "evaluation" in doc:
        section = parse_evaluation(doc["evaluation"], doc.loc_of("evaluation"))
        doc = _without_evaluation(doc)
    spec = parse_spec(doc, files[0], document.spec_hash(doc), files)
    errors: list[NasdslError] = []
    for other in rounds:  # the options of choices between blocks the default leaves out, parsed too
        try:
            parse_spec(_without_evaluation(other), files[0], "", files)
        except NasdslError as e:
            errors += flatten(e)
    raise_errors(errors)
    return dataclasses.replace(spec, evaluation=section) if section is not None else spec


def _without_evaluation(doc: YMap) -> YMap:
    if "evaluation" not in doc:
        return doc
    doc = document.merge(doc, document.new_map(doc.loc))  # a copy, without the section
    doc.pop("evaluation")
    return doc


def apply_overrides(doc: YMap, overrides: Mapping[str, object] | Iterable[str]) -> YMap:
    """``overrides`` (``{path: value}`` or ``["path=value", ...]``) applied as ``load_spec`` applies them."""
    values, locations = document.override_values(overrides)
    return document.apply_overrides(doc, values, locations) if values else doc


def default_document(doc: YMap) -> YMap:
    """The document of the default variant: every choice replaced by its default, the
    constraints checked and removed. A document without choices and constraints is
    returned as it is. Raises :class:`SpecError` for a malformed choice or when the default
    breaks a constraint."""
    points = find_choices(doc)
    if not points and CONSTRAINTS not in doc:
        return doc
    rules = constraints(doc)
    option_values = _option_values(points)  # an option that is no value is refused, chosen or not
    try:
        steps, option_values = _steps(doc, points, option_values)
    except NasdslError:
        steps = None  # a malformed variable: the parser reports it
    space = Space(doc, "", (), points, rules, steps or (), option_values if steps else ())
    if steps is not None:
        _check_conditions(space)
        picks = space.default
        try:
            env = space.environment(picks)
        except NasdslError:
            env = None  # the compiler reports it
        if env is not None:
            for c in rules:
                try:
                    holds = c.value.evaluate(env)
                except NasdslError as e:
                    raise e.at(location=c.value.loc, path=c.value.path) from None
                if not isinstance(holds, bool):
                    raise SpecError(
                        f"expected a condition that gives true or false, got {describe(holds)}",
                        location=c.value.loc,
                        path=c.value.path,
                    )
                if not holds:
                    raise SpecError(
                        f"the spec's values break this constraint ({_values_used(c.value, env)})",
                        location=c.value.loc,
                        path=c.value.path,
                    )
    return space.document_of(picks if steps is not None else tuple(p.default for p in points))


def _values_used(value: Value, env: Mapping[str, object]) -> str:
    return ", ".join(f"{n} = {describe(env[n])}" for n in sorted(value.names) if n in env) or "no variables"


def option_documents(doc: YMap) -> list[YMap]:
    """Plain documents in which every option of a choice between blocks stands at least once,
    for the parser to read: round ``k`` picks each such choice's option ``k`` (the default where
    that is it, or where the choice has fewer options) and every other choice's default. A typo
    in an option the default leaves out (an unknown key, an unknown op) is then the spec's
    error, as it is in the default's, whichever variant is picked. None for a document without
    such choices; the rounds whose options are all defaults are left out."""
    points = find_choices(doc)
    blocks = [p for p in points if p.kind == "block"]
    if not blocks:
        return []
    space = Space(doc, "", (), points, (), (), ())
    out = []
    for k in range(max(len(p.options) for p in blocks)):
        moved = {id(p): k for p in blocks if k < len(p.options) and k != p.default}
        if moved:
            out.append(space.document_of(tuple(moved.get(id(p), p.default) for p in points)))
    return out


def _option_values(points: tuple[ChoicePoint, ...]) -> tuple[tuple[Value, ...], ...]:
    """Every option of every point parsed as a value (a malformed one is the spec's error,
    whether or not it is the default)."""
    return tuple(
        tuple(
            Value(o, loc, p.positions[0].spec_path)  # a block's word, a value's name: no value of the variables
            if p.kind in ("block", "input")
            else parse_value(document.to_yaml(o, loc), loc, p.positions[0].spec_path, null=p.null_allowed)
            for o, loc in zip(p.options, p.option_locs, strict=True)
        )
        for p in points
    )


def _steps(doc: YMap, points: tuple[ChoicePoint, ...], option_values=None) -> tuple[tuple, tuple]:
    if option_values is None:
        option_values = _option_values(points)
    by_variable = {p.variable: i for i, p in enumerate(points) if p.variable is not None}
    variables = doc.get("variables")
    steps: list[tuple[str, Value | int]] = []
    if isinstance(variables, YMap):
        for name, raw in variables.items():
            if name in by_variable:
                steps.append((name, by_variable[name]))
            else:
                steps.append((name, parse_value(raw, variables.loc_of(name), f"variables.{name}")))
    return tuple(steps), option_values


def _check_conditions(space: Space) -> None:
    """A choice's condition reads variables only, and a variable's choice only the variables before it."""
    names = [n for n, _ in space.steps]
    for p in space.points:
        if p.when is None:
            continue
        visible = names[: names.index(p.variable)] if p.variable is not None else names
        unknown = sorted(n for n in p.when.names if n not in visible)
        if unknown:
            where = "the variables before it" if p.variable is not None else "the spec's variables"
            raise SpecError(
                f"a choice's condition may use only {where}, got '{unknown[0]}'{did_you_mean(unknown[0], visible)}",
                location=p.when.loc,
                path=p.when.path,
            )


def _size(value: Value | None) -> int:
    """Expression nodes in a value (a literal is one)."""
    if value is None:
        return 0
    if value.items is not None:
        return sum(_size(v) for v in value.items)
    return value.expr.size if value.expr is not None else 1


def _odometer(radix: list[int] | tuple[int, ...], start: tuple[int, ...] | None = None) -> Iterator[tuple[int, ...]]:
    """Every tuple below ``radix`` in mixed-radix order (the last digit fastest), from ``start``."""
    digits = list(start) if start is not None else [0] * len(radix)
    if any(r == 0 for r in radix):
        return
    while True:
        yield tuple(digits)
        i = len(digits) - 1
        while i >= 0:
            digits[i] += 1
            if digits[i] < radix[i]:
                break
            digits[i] = 0
            i -= 1
        if i < 0:
            return


# ---------------------------------------------------------------------------
# A variant as a plain spec


def variant_yaml(space: Space, picks: tuple[int, ...], source: str, writer: str = "nasdsl space --pick") -> str:
    """A variant's plain document as YAML, with a header naming where it comes from (and
    ``writer``, what wrote it): small mappings and lists on one line, as specs are written by hand
    (:func:`nasdsl.document.spec_yaml`)."""
    return variant_header(space, picks, source, writer) + document.spec_yaml(space.document_of(picks))


def variant_header(space: Space, picks: tuple[int, ...], source: str, writer: str) -> str:
    """The comment lines :func:`variant_yaml` starts with."""
    choices = " ".join(space.set_arguments(picks)) or "(no choices)"
    # a comment is one line: the file name and the options are written with their escapes
    # (a file named "a\ninit: ..." wrote a YAML section of its own)
    return f"# variant {space.id_of(picks)} of {one_line(source)}: {one_line(choices)}\n# written by {writer}\n"


__all__ = [
    "CHOICE_KEYS",
    "ChoicePoint",
    "Constraint",
    "Position",
    "Space",
    "SAMPLE_BY",
    "apply_overrides",
    "draw_limit",
    "default_document",
    "find_space",
    "load_space",
    "model_spec",
    "option_documents",
    "variant_header",
    "variant_yaml",
]
