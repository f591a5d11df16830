"""Counting the variants within a budget in spaces too large to list (``nasdsl space --count``).

A space of 10^19 variants cannot be evaluated one by one. Where its costs add up stage by stage,
the variants within a budget are still counted exactly: :func:`count_by_stages`. Elsewhere
:func:`estimate` draws variants uniformly and gives the share that passes with a 95% Wilson
interval, and says that it is an estimate.

**When the costs add up.** A figure such as the multiply-adds is a sum over the nodes of the
inference graph of a cost that depends on the node's op, its attributes and its input shapes, and
counts only where the node exists. So the variants' figures decompose into independent parts when
the choices fall into *groups* such that every node's attributes, existence and input shapes
depend on the choices of one group at most. :func:`count_by_stages` finds the groups from the
compiled graphs, assuming nothing about the spec:

1. the choices that conditions and constraints tie together are one group (as the space counts
   them: :meth:`nasdsl.space.Space.groups`), and so are the choices that the attributes or the
   conditions of one node depend on: each node's ``deps`` and the ``deps`` of the conditions of the
   blocks around it (``docs/ir.md``), followed through the variables to the choices;
2. each group's admissible assignments are tried, the other choices at their defaults: the graph of
   each structure they make (the blocks that exist) is built once; each node's attributes that the
   group's choices reach are evaluated from the spec's values, with the template uses' parameters
   bound as the builder binds them, and its shape and cost computed with the op registry. The
   nodes whose attributes, existence or input shapes differ from the default variant's are the
   group's *region*; a condition that a structure shows on more of the group's choices makes them
   structural too, and the group is tried again;
3. two groups whose regions share a node are merged, and the analysis runs again, until every node
   is in one region at most (or a group becomes too large to try: then the costs do not decompose).

Then, by induction over the graph's order, a variant's node has the attributes, existence and input
shapes it has when only its own group differs from the default, so a figure is the default's
outside the regions plus each group's cost in its region: the count of the variants within a
budget is a convolution of the groups' cost histograms, exact in integers
(:func:`_count_within`). A variant that does not build or whose shapes do not fit fails in one
group's region, so it is counted as invalid once. Where a choice is not a variable of its own, a
choice is between blocks, the input's shape is a choice (every node depends on it: the
resolution), a group has too many assignments, or a budget names a figure that does not add
(``depth``, ``peak``, ``latency_ms``), the costs are not known to decompose, and the reason is given.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import networkx as nx
import numpy as np

from nasdsl import document, ir
from nasdsl.build import MAX_NODES, build
from nasdsl.errors import NasdslError
from nasdsl.ops import OPS
from nasdsl.passes.check import check
from nasdsl.space import Space
from nasdsl.spec import Spec, parse_spec
from nasdsl.variants import MAX_PARAMS

#: the figures that are sums over the nodes, which count_by_stages can count
ADDITIVE = ("params", "macs", "params_train", "macs_train")
#: the most assignments one group may have (each is evaluated node by node)
MAX_GROUP = 20_000
#: the most cost bins the convolution may hold (a dense array of the costs below the budget)
MAX_BINS = 16_000_000
#: the most distinct cost tuples of budgets on several figures
MAX_PAIRS = 2_000_000
#: draws of an estimate when none are asked for
DRAWS = 1_000
#: the normal quantile of a 95% interval
Z95 = 1.959963984540054


class NotDecomposable(Exception):
    """The costs are not known to add up by groups of choices: the reason, in words."""


@dataclass(frozen=True)
class Count:
    """How many variants pass a set of budgets: exactly, or an estimate with its interval."""

    value: int
    exact: bool
    #: "stages" (exact, by convolving the groups' costs) or "sampled" (an estimate)
    method: str
    #: the 95% interval of an estimate (both equal the value when exact)
    low: int
    high: int
    #: stages: the number of groups; sampled: the draws made, and how many passed
    groups: int = 0
    draws: int = 0
    passed: int = 0
    #: why the count is an estimate (the decomposition's reason), "" when exact
    why: str = ""

    def text(self) -> str:
        """One line: the exact count alone, or the estimate with what it rests on."""
        if self.exact:
            return str(self.value)
        return (
            f"estimate: about {self.value:,} (95% interval {self.low:,} to {self.high:,}; {self.passed:,} of "
            f"{self.draws:,} variants drawn uniformly passed)"
        )

    def as_json(self) -> dict:
        return {
            "count": self.value,
            "exact": self.exact,
            "method": self.method,
            "estimate": not self.exact,
            "interval": [self.low, self.high],
            "groups": self.groups or None,
            "draws": self.draws or None,
            "passed": self.passed if not self.exact else None,
            "why_estimate": self.why or None,
        }


# ---------------------------------------------------------------------------
# Budgets


@dataclass(frozen=True)
class Bound:
    """A budget: ``column`` at most (``way == "max"``) or at least (``"min"``) ``value``."""

    column: str
    way: str
    value: float

    def passes(self, figure: int) -> bool:
        return figure <= self.value if self.way == "max" else figure >= self.value


# ---------------------------------------------------------------------------
# Exact counts by stages


def count_by_stages(
    space: Space,
    bounds: Iterable[Bound],
    *,
    valid_only: bool = False,
    max_nodes: int = MAX_NODES,
    max_params: int = MAX_PARAMS,
) -> Count:
    """The exact number of variants whose figures pass ``bounds`` (invalid variants pass unless
    ``valid_only``), where the figures add up by groups of choices (see the module docstring);
    raises :class:`NotDecomposable` with the reason otherwise."""
    bounds = tuple(bounds)
    for b in bounds:
        if b.column not in ADDITIVE:
            raise NotDecomposable(f"{b.column} is not a sum over the nodes")
    base_costs, parts = stage_costs(space, max_nodes)
    largest = base_costs["params_train"] + sum(max((c or {}).get("params_train", 0) for c in part) for part in parts)
    if largest > max_params:
        raise NotDecomposable(f"some variants may have more than {max_params:,} parameters (the compiler's limit)")
    columns = sorted({b.column for b in bounds})
    base = tuple(base_costs[c] for c in columns)
    histograms = []
    valid_total = 1
    for part in parts:
        h: dict[tuple[int, ...], int] = {}
        for costs in part:
            if costs is not None:
                key = tuple(costs[c] for c in columns)
                h[key] = h.get(key, 0) + 1
        histograms.append(h)
        valid_total *= sum(h.values())
    within = _count_within(histograms, base, [[b for b in bounds if b.column == c] for c in columns])
    total = space.count()
    value = within if valid_only else within + (total - valid_total)
    return Count(value, True, "stages", value, value, groups=len(parts))


#: stage analyses of the spaces seen last in this process, by document, choices and node limit
_ANALYSES: dict[tuple, tuple | NotDecomposable] = {}
#: how many _ANALYSES keeps
KEPT = 4


def stage_costs(space: Space, max_nodes: int = MAX_NODES) -> tuple[dict[str, int], list[list[dict | None]]]:
    """The figures outside every group's region, and per group the figures in its region of each of
    its admissible assignments (None: that variant does not compile). Raises NotDecomposable. The
    analysis of a document is kept (the last few), so that counts under several budgets make it once."""
    # the document and where its choices stand (an alias ties two places into one choice)
    where = tuple((p.name, tuple(pos.keys for pos in p.positions)) for p in space.points)
    key = (document.spec_hash(space.document), where, max_nodes)
    if key not in _ANALYSES:
        try:
            analysis = _Analysis(space, max_nodes)
            parts = analysis.run()
            found: tuple | NotDecomposable = (analysis.base, parts)
        except NotDecomposable as e:
            found = e
        while len(_ANALYSES) >= KEPT:
            del _ANALYSES[next(iter(_ANALYSES))]
        _ANALYSES[key] = found
    found = _ANALYSES[key]
    if isinstance(found, NotDecomposable):
        raise found
    return found


def _count_within(histograms: list[dict[tuple, int]], base: tuple[int, ...], bounds: list[list[Bound]]) -> int:
    """The number of ways to take one cost from each histogram (with multiplicity) whose sum plus
    ``base`` passes the bounds of each column."""
    if not bounds:
        return math.prod(sum(h.values()) for h in histograms)
    if len(bounds) == 1:
        return _count_one_column(histograms, base[0], bounds[0])
    # several columns: a histogram of cost tuples, pruned above the upper bounds, while it stays small
    upper = [min((b.value for b in bs if b.way == "max"), default=math.inf) for bs in bounds]
    partial: dict[tuple[int, ...], int] = {base: 1}
    for h in histograms:
        out: dict[tuple[int, ...], int] = {}
        for key, n in partial.items():
            for cost, m in h.items():
                s = tuple(a + c for a, c in zip(key, cost, strict=True))
                if all(v <= u for v, u in zip(s, upper, strict=True)):
                    out[s] = out.get(s, 0) + n * m
        if len(out) > MAX_PAIRS:
            raise NotDecomposable(f"budgets on {len(bounds)} figures make more than {MAX_PAIRS:,} distinct cost pairs")
        partial = out
    return sum(
        n for key, n in partial.items() if all(b.passes(v) for v, bs in zip(key, bounds, strict=True) for b in bs)
    )


def _count_one_column(histograms: list[dict[tuple, int]], base: int, bounds: list[Bound]) -> int:
    """One figure, between its bounds: counts of the ways at most a bound (:func:`_at_most`),
    subtracted."""
    low = max((math.ceil(b.value) for b in bounds if b.way == "min"), default=None)
    high = min((math.floor(b.value) for b in bounds if b.way == "max"), default=None)
    total = math.prod(sum(h.values()) for h in histograms)
    if high is None:  # at least `low`: all but those at most low - 1
        return total - _at_most(histograms, base, low - 1)
    below = _at_most(histograms, base, high)
    return below - (_at_most(histograms, base, low - 1) if low is not None else 0)


def _at_most(histograms: list[dict[tuple, int]], base: int, bound: int) -> int:
    """The number of ways whose cost sum plus ``base`` is at most ``bound``, exactly.

    The groups' costs are added one group at a time into an array of counts by partial sum, on
    the lattice of the costs' common divisor. Only the partial sums still undecided are kept: one
    that stays within the bound whatever the remaining groups add is counted at once (times the
    number of ways of the rest), one that exceeds it whatever they add is dropped. The counts are
    kept twice, modulo 2^64 (wrapping unsigned integers) and approximately (floats): the exact count
    is the one with that residue nearest to the approximation, which is off by far less than 2^63."""
    groups = [sorted((k[0], n) for k, n in h.items()) for h in histograms]
    if any(not g for g in groups):
        return 0
    # the groups whose costs differ by large steps first: the partial sums stay on a coarse lattice longer
    groups.sort(key=lambda g: -math.gcd(*(v - g[0][0] for v, _ in g)))
    ways = math.prod(sum(n for _, n in g) for g in groups)
    if ways >= 1 << 100:  # the floats' error could pass 2^63
        raise NotDecomposable("more than 2^100 combinations of the groups' costs")
    wrapped = _band_count(groups, base, bound, np.uint64)
    if ways < 1 << 64:
        return wrapped  # every count fits in 64 bits
    approximate = _band_count(groups, base, bound, np.float64)
    high = round((approximate - wrapped) / 2**64)
    return wrapped + (high << 64)


def _band_count(groups: list[list[tuple[int, int]]], base: int, bound: int, dtype) -> int | float:
    exact = dtype is np.uint64
    ways_after = [1] * (len(groups) + 1)
    for i in range(len(groups) - 1, -1, -1):
        ways_after[i] = ways_after[i + 1] * sum(n for _, n in groups[i])
    min_after = [0] * (len(groups) + 1)
    max_after = [0] * (len(groups) + 1)
    for i in range(len(groups) - 1, -1, -1):
        min_after[i] = min_after[i + 1] + groups[i][0][0]
        max_after[i] = max_after[i + 1] + groups[i][-1][0]
    passed: int | float = 0
    # the undecided partial sums: lo + j * unit for j below len(counts)
    lo, unit = base, 0
    counts = np.ones(1, dtype=dtype)
    for i, group in enumerate(groups):
        step = 0
        for v, _ in group:
            step = math.gcd(step, v - group[0][0])
        new_unit = math.gcd(unit, step) or 1
        stride = unit // new_unit if unit else 1
        # the partial sums after this group that are still undecided: above bound - max_after[i + 1]
        # (else they pass whatever follows) and at most bound - min_after[i + 1] (else they fail)
        first = lo + group[0][0]
        keep_lo = max(first, bound - max_after[i + 1] + 1)
        keep_hi = bound - min_after[i + 1]
        start = first + _ceil_div(keep_lo - first, new_unit) * new_unit
        size = (keep_hi - start) // new_unit + 1 if keep_hi >= start else 0
        if size > MAX_BINS:
            raise NotDecomposable(f"the budget leaves {size:,} undecided cost steps, more than {MAX_BINS:,}")
        cumulative = np.cumsum(counts, dtype=dtype)
        new = np.zeros(max(size, 0), dtype=dtype)
        ways = ways_after[i + 1]
        for v, n in group:
            # the sums lo + v + j * unit: those at most bound - max_after pass for sure
            sure = bound - max_after[i + 1] - lo - v
            if sure >= 0:
                j = min(sure // unit if unit else 0, len(counts) - 1)
                passed += _scalar(cumulative[j], exact) * n * ways
            if size == 0:
                continue
            # the others within [start, keep_hi] go into the new array
            offset = lo + v - start  # the new index of j = 0 is offset / new_unit
            j0 = _ceil_div(-offset, stride * new_unit) if offset < 0 else 0
            t0 = (offset + j0 * stride * new_unit) // new_unit
            if t0 >= size:
                continue
            count = min(len(counts) - j0, (size - 1 - t0) // stride + 1)
            if count <= 0:
                continue
            with np.errstate(over="ignore"):
                new[t0 : t0 + (count - 1) * stride + 1 : stride] += counts[j0 : j0 + count] * dtype(n)
        if exact:
            passed %= 1 << 64
        lo, unit, counts = start, new_unit, new
        if size == 0:
            break
    return passed


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _scalar(value, exact: bool) -> int | float:
    return int(value) if exact else float(value)


class _Analysis:
    """The groups of choices whose costs add up, found from the compiled graphs (module docstring)."""

    def __init__(self, space: Space, max_nodes: int):
        self.space = space
        self.max_nodes = max_nodes
        for p in space.points:
            if p.kind == "block":
                raise NotDecomposable(f"{p.name} chooses between blocks")
            if p.variable is None or len(p.positions) > 1:
                raise NotDecomposable(f"{p.name} is not a variable of its own")
        self.of_variable = space.points_of_variables()
        self.structures: dict[tuple, nx.DiGraph | NasdslError] = {}
        #: per graph: its nodes in order, its template uses, and its shaping with its own attributes
        self._plans: dict[int, tuple] = {}
        self._specs: dict[int, Spec] = {}
        #: the choices each node of a structure depends on, by graph
        self._seen: dict[int, list[frozenset[int]]] = {}
        self.default = self._structure(space.default)
        if isinstance(self.default, NasdslError):
            raise NotDecomposable("the default variant does not build")
        self.reference = self._shaped(self.default, space.default)
        if self.reference is None:
            raise NotDecomposable("the default variant's shapes do not fit")
        self.base: dict[str, int] = {}

    # -- building and shaping

    def _structure(self, picks: tuple[int, ...]) -> nx.DiGraph | NasdslError:
        """The checked graph of these picks before shapes (or the compiler's error); its spec's
        blocks are kept to evaluate attributes with other picks of the same structure."""
        doc = self.space.document_of(picks)
        try:
            spec = parse_spec(doc, self.space.file, document.spec_hash(doc), self.space.files)
            g = check(build(spec, max_nodes=self.max_nodes))
        except NasdslError as e:
            return e
        self._specs[id(g)] = spec
        return g

    def _shaped(self, g: nx.DiGraph, picks: tuple[int, ...], vary: frozenset[int] = frozenset()):
        """Each node's (attributes, input shapes, figures) with these picks, where the attributes
        that the choices ``vary`` reach are evaluated from their expressions; None where a shape does
        not fit or an attribute is refused. A node whose attributes no choice of ``vary`` reaches and
        whose inputs are shaped as with the graph's own attributes keeps what it had there."""
        plan = self._plans.get(id(g))
        if plan is None:
            order = []
            for n in ir.order(g):
                record = ir.node(g, n)
                reach = tuple((a, self._points(deps)) for a, deps in record.deps.items())
                order.append((n, record, tuple(ir.inputs(g, n)), reach, frozenset().union(*(p for _, p in reach))))
            plan = self._plans[id(g)] = (order, _Scopes(g, self._specs[id(g)]), None)
            plan = self._plans[id(g)] = (order, plan[1], self._shape(order, plan[1], None, None, frozenset()))
        order, uses, own = plan
        if not vary:
            return own[0] if own is not None else None
        if own is None:
            return None
        try:
            env = self.space.environment(picks)
        except NasdslError:
            return None  # a variable the compiler refuses with these picks: the variant is invalid
        shaped = self._shape(order, uses.at(env), None, own, vary)
        return shaped[0] if shaped is not None else None

    def _shape(self, order, scopes, env, own, vary: frozenset[int]):
        out: dict[str, tuple] = {}
        types: dict[str, ir.TensorType] = {}
        for name, record, sources, reach, reached in order:
            if record.op == "input":
                if reached & vary:
                    raise NotDecomposable("the input's shape is a choice: every node's shape depends on it")
                types[name] = record.type
                continue
            attrs = record.attrs
            changed = [a for a, points in reach if points & vary] if reached & vary else []
            if not changed and own is not None and all(types[i] == own[1][i] for i in sources):
                out[name] = own[0][name]
                types[name] = own[1][name]
                continue
            if changed:
                given = {a: attrs[a] for a in record.given}
                try:
                    given.update(scopes.attributes(name, record, changed))
                    # a null value gives no attribute, as in the builder
                    attrs = OPS[record.op].normalise({a: v for a, v in given.items() if v is not None})
                except NasdslError:
                    return None
            ins = tuple(types[i] for i in sources)
            opdef = OPS[record.op]
            try:
                t = opdef.infer(ins, attrs)
            except NasdslError:
                return None
            types[name] = t
            p = opdef.params(ins, attrs) if opdef.init_params else 0
            m = opdef.macs(ins, attrs, t)
            train = record.phase == "train"
            figures = {"params": 0 if train else p, "macs": 0 if train else m, "params_train": p, "macs_train": m}
            out[name] = ((record.op, tuple(sorted(attrs.items()))), tuple(x.shape for x in ins), figures)
        return out, types

    def _points(self, deps: Iterable[str] | Mapping) -> frozenset[int]:
        names = set().union(*deps.values()) if isinstance(deps, Mapping) else set(deps)
        return frozenset().union(*(self.of_variable.get(n, frozenset()) for n in names))

    def _node_points(self, g: nx.DiGraph) -> list[frozenset[int]]:
        """For each node: the choices its attributes and existence depend on."""
        info = ir.info(g)
        structural = self._points(info.structural)
        out = []
        for root in ir.roots(g):
            stack = [(root, frozenset())]
            while stack:
                b, around = stack.pop()
                if b.when is not None:
                    around = around | self._points(b.when.deps)
                if b.repeat is not None:
                    around = around | structural
                if b.kind in ("op", "merge") and b.path in g:
                    out.append(around | self._points(ir.node(g, b.path).deps))
                stack.extend((c, around) for c in b.children)
        return out

    # -- the groups

    def run(self) -> list[list[dict[str, int] | None]]:
        """The costs (figures in the group's region) of each admissible assignment of each group,
        None for an assignment whose variant does not compile."""
        space = self.space
        parent = list(range(len(space.points)))

        def find(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        def union(points: Iterable[int]) -> bool:
            points = list(points)
            merged = False
            for j in points[1:]:
                a, b = find(points[0]), find(j)
                if a != b:
                    parent[b] = a
                    merged = True
            return merged

        for members, _ in space.groups:
            union(members)
        for deps in self._node_points(self.default):
            union(deps)
        while True:
            groups: dict[int, list[int]] = {}
            for i in range(len(space.points)):
                groups.setdefault(find(i), []).append(i)
            tied = [(g, members) for g, (members, _) in enumerate(space.groups)]
            results = []
            owner: dict[str, int] = {}
            restart = False
            for members in groups.values():
                parts = [g for g, m in tied if find(m[0]) == find(members[0])]
                region, costs, seen = self._enumerate(parts)
                for deps in seen:
                    if union(deps):
                        restart = True
                clash = [owner[n] for n in region if n in owner]
                if clash:
                    union([members[0], clash[0]])
                    restart = True
                for n in region:
                    owner.setdefault(n, members[0])
                results.append((region, costs))
                if restart:
                    break
            if not restart:
                break
        regions = set().union(*(r for r, _ in results)) if results else set()
        self.base = {c: sum(f[c] for n, (_, _, f) in self.reference.items() if n not in regions) for c in ADDITIVE}
        zero = dict.fromkeys(ADDITIVE, 0)
        parts = []
        for region, costs in results:
            fixed = {n: self.reference[n][2] if n in self.reference else zero for n in region}
            parts.append(
                [
                    None if c is None else {k: sum(c.get(n, fixed[n])[k] for n in region) for k in ADDITIVE}
                    for c in costs
                ]
            )
        if math.prod(len(part) for part in parts) != space.count():
            raise NotDecomposable("the groups' assignments do not make the space's variants")
        return parts

    def _enumerate(self, tied: list[int]) -> tuple[set[str], list[dict[str, dict] | None], list[frozenset[int]]]:
        """Try every admissible assignment of the tied groups ``tied`` (together), the other choices
        at their defaults: the nodes that differ from the default variant's (the region), each
        assignment's figures of the nodes that differ (None: it does not compile), and the choices
        each node of the structures met depends on."""
        space = self.space
        members = [i for g in tied for i in space.groups[g][0]]
        options = [space.admissible(g) for g in tied]
        n = math.prod(len(o) for o in options)
        if n > MAX_GROUP:
            first = space.points[members[0]].name
            raise NotDecomposable(f"the choices tied to {first} have {n:,} assignments, more than {MAX_GROUP:,}")
        vary = frozenset(members)
        structural = self._structural_points(vary)
        while True:
            found = self._try(tied, options, vary, structural)
            if isinstance(found, tuple):
                return found
            structural |= found  # a structure showed a condition on more of the group's choices: again

    def _try(self, tied, options, vary: frozenset[int], structural: set[int]):
        """One pass of :meth:`_enumerate`; the larger set of structural choices where a structure
        built shows a condition on a choice of ``vary`` that ``structural`` lacks."""
        space = self.space
        region: set[str] = set()
        costs: list[dict[str, dict] | None] = []
        seen: list[frozenset[int]] = [
            p for g in self.structures.values() if id(g) in self._seen for p in self._seen[id(g)]
        ]
        for combo in _product(options):
            picks = list(space.default)
            for g, assignment in zip(tied, combo, strict=True):
                for i, k in zip(space.groups[g][0], assignment, strict=True):
                    picks[i] = k
            picks = tuple(picks)
            # the structure is built once, from the default with the structural choices of these picks
            key = tuple((i, picks[i]) for i in sorted(structural))
            g = self.structures.get(key)
            if g is None:
                shown = list(space.default)
                for i in structural:
                    shown[i] = picks[i]
                g = self.structures[key] = self._structure(tuple(shown))
            if isinstance(g, NasdslError):
                costs.append(None)
                continue
            more = self._deciding(g) & vary
            if not more <= structural:
                return set(more)
            if id(g) not in self._seen:
                self._seen[id(g)] = self._node_points(g)
                seen.extend(self._seen[id(g)])
            shaped = self._shaped(g, picks, vary)
            if shaped is None:
                costs.append(None)
                continue
            differ: dict[str, dict] = {}
            for name, (attrs, ins, figures) in shaped.items():
                known = self.reference.get(name)
                if known is None or known[0] != attrs or known[1] != ins:
                    differ[name] = figures
            for name in self.reference:
                if name not in shaped:
                    differ[name] = dict.fromkeys(ADDITIVE, 0)
            region |= set(differ)
            costs.append(differ)
        return region, costs, seen

    def _deciding(self, g: nx.DiGraph) -> frozenset[int]:
        """The choices that decide which blocks of ``g`` exist: the conditions of its blocks (those
        switched off included), its outputs' conditions, its repeat counts."""
        out = set(self._points(ir.info(g).structural))
        for o in ir.all_outputs(g):
            if o.when is not None:
                out |= self._points({o.when})
        for root in ir.roots(g):
            stack = [root]
            while stack:
                b = stack.pop()
                if b.when is not None:
                    out |= self._points(b.when.deps)
                stack.extend(b.children)
        return frozenset(out)

    def _structural_points(self, vary: frozenset[int]) -> set[int]:
        """The choices of ``vary`` known to decide which blocks exist: the conditions and repeat
        counts of the default's graph, and those that a choice's own condition reads (more are found
        as structures are built)."""
        out = set(self._deciding(self.default) & vary)
        for i in vary:
            if self.space.points[i].when is not None:
                out |= self._points(self.space.points[i].when.names) & vary
        return out


def _product(options: list) -> Iterable[tuple]:
    if not options:
        yield ()
        return
    first, *rest = options
    for a in first:
        for tail in _product(rest):
            yield (a, *tail)


class _Scopes:
    """The values a node's attributes are evaluated with, as the builder binds them: the model's
    variables, then each template use's parameters (its arguments evaluated where it is used, its
    defaults with the parameters before them) and each repeat's index, from the spec's own values."""

    def __init__(self, g: nx.DiGraph, spec: Spec):
        self.blocks: dict[str, object] = spec.blocks()
        self.spec = spec
        #: per node: the frames around it, outermost first: ("use", block) or ("index", name, i)
        self.frames: dict[str, tuple] = {}
        for root in ir.roots(g):
            todo = [(root, ())]
            while todo:
                b, frames = todo.pop()
                if b.kind == "use":
                    frames = (*frames, ("use", b))
                if b.kind in ("op", "merge"):
                    self.frames[b.path] = frames
                if b.repeat is not None:
                    todo.extend((c, (*frames, ("index", b.repeat.index, i))) for i, c in enumerate(b.children))
                else:
                    todo.extend((c, frames) for c in b.children)
        self.env: dict[str, object] = {}
        self.cache: dict[tuple, dict] = {}

    def at(self, env: dict[str, object]) -> _Scopes:
        self.env = env
        self.cache = {}
        return self

    def scope(self, frames: tuple) -> dict[str, object]:
        if not frames:
            return self.env
        found = self.cache.get(frames)
        if found is not None:
            return found
        caller = self.scope(frames[:-1])
        frame = frames[-1]
        if frame[0] == "index":
            out = {**caller, frame[1]: frame[2]}
        else:
            use = self.blocks[frame[1].keypath]
            template = self.spec.templates[use.template]
            names = [p.name for p in template.params]
            given = dict(zip(names, (v for k, v in use.args if k is None), strict=False))
            given.update({k: v for k, v in use.args if k is not None})
            values: dict[str, object] = {}
            for p in template.params:
                if p.name in given:
                    values[p.name] = given[p.name].evaluate(caller)
                else:
                    values[p.name] = p.default.evaluate({**self.env, **values})
            out = {**self.env, **values}
        self.cache[frames] = out
        return out

    def attributes(self, name: str, record: ir.Node, wanted: list[str]) -> dict[str, object]:
        """The attributes ``wanted`` of node ``name``, evaluated from its block's values."""
        block = self.blocks[record.keypath]
        scope = self.scope(self.frames.get(name, ()))
        literals = OPS[record.op].attr_index
        values = dict(block.attrs)
        return {a: values[a].evaluate(scope, literals[a].literals) for a in wanted}


# ---------------------------------------------------------------------------
# Estimates


def wilson(passed: int, draws: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (``passed`` of ``draws``)."""
    if draws == 0:
        return 0.0, 1.0
    p = passed / draws
    centre = (p + z * z / (2 * draws)) / (1 + z * z / draws)
    half = z * math.sqrt(p * (1 - p) / draws + z * z / (4 * draws * draws)) / (1 + z * z / draws)
    # at 0 (or all) passed the interval ends at 0 (or 1) exactly; floats leave a trace there
    low = 0.0 if passed == 0 else max(0.0, centre - half)
    high = 1.0 if passed == draws else min(1.0, centre + half)
    return low, high


def estimate(space: Space, passes, *, draws: int = DRAWS, seed: int = 0, why: str = "") -> Count:
    """An estimate of how many variants ``passes`` (a function of picks) accepts, from ``draws``
    variants drawn uniformly with ``seed`` (with replacement), with a 95% Wilson interval."""
    rng = random.Random(seed)
    total = space.count()
    passed = sum(1 for _ in range(draws) if passes(space.draw(rng, "variant")))
    lo, hi = wilson(passed, draws)
    value = (2 * total * passed + draws) // (2 * draws) if draws else 0  # total x passed / draws, rounded
    low, high = min(math.floor(total * lo), value), max(min(math.ceil(total * hi), total), value)
    return Count(value, False, "sampled", low, high, draws=draws, passed=passed, why=why)


__all__ = ["ADDITIVE", "Bound", "Count", "NotDecomposable", "count_by_stages", "estimate", "stage_costs", "wilson"]
