"""Ensemble specs: a network made of other specs, each with its own overrides and weights.

An ensemble spec has an ``ensemble`` section instead of ``input`` and
``model``::

    nasdsl: 1
    name: ILSVRC2014
    ensemble:
      combine: probabilities        # or logits: what is averaged
      members:
        googlenet1: {spec: googlenet.yaml, weights: weights/googlenet1.safetensors}
        wide: {spec: googlenet.yaml, set: {inception5b.c1x1: 512}, weight: 2}
    evaluation: {preset: 144-crop}  # optional (nasdsl/evaluation.py)

A member is ``spec`` (a path relative to the ensemble file), ``set`` (overrides
written as ``--set`` takes them, checked like the member's file), ``weights``
(its weights file, relative to the ensemble file) and ``weight`` (its share of
the average, 1 by default; the shares are normalised). A member written as a
plain string is its spec's path. ``--set`` on an ensemble changes the ensemble
(``ensemble.combine=logits``, ``evaluation.preset=10-crop``,
``ensemble.members.wide.set.inception5b.c1x1=384``) or, for any other path,
every member (``num_classes=10``), after the members' own ``set``.

:func:`load_ensemble` parses the document; :func:`compile_ensemble` compiles
the members and builds the ensemble graph (:mod:`nasdsl.ensemble_ir`).
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import networkx as nx

from nasdsl import document, ir
from nasdsl.ensemble_ir import Member
from nasdsl.ensemble_ir import combine as combine_of
from nasdsl.ensemble_ir import members as members_of
from nasdsl.errors import ErrorList, LimitError, Location, NasdslError, SpecError
from nasdsl.evaluation import DEFAULT, Evaluation, parse_evaluation
from nasdsl.loader import Limits, YMap, scalar_type_name
from nasdsl.numbers import number_errors
from nasdsl.ops import describe
from nasdsl.spec import check_name, defer, did_you_mean, flatten, join, refuse_leftovers

TOP_KEYS = ("nasdsl", "name", "doc", "extends", "ensemble", "evaluation")
ENSEMBLE_KEYS = ("members", "combine")
MEMBER_KEYS = ("spec", "set", "weights", "weight")
COMBINES = ("probabilities", "logits")
#: the sections an ensemble's ``--set`` changes itself; any other path goes to every member
OWN_PATHS = ("ensemble", "evaluation", "name", "doc")
MAX_MEMBERS = 256


@dataclass(frozen=True)
class MemberSpec:
    """A member as written: its spec file, overrides and weights."""

    name: str
    #: the spec file: as shown in messages (relative to the working folder) and its real path
    shown: str
    path: Path
    #: ``set`` and pass-through overrides: path -> YAML value, and where each is written
    overrides: tuple[tuple[str, object, Location], ...]
    weights: str | None
    weight: float
    loc: Location
    keypath: str
    spec_loc: Location
    weights_loc: Location | None = None


@dataclass(frozen=True)
class EnsembleSpec:
    name: str
    doc: str
    file: str
    files: tuple[str, ...]
    sha256: str
    members: tuple[MemberSpec, ...]
    combine: str
    evaluation: Evaluation
    name_loc: Location
    loc: Location
    #: whether the ensemble writes an evaluation section (else its members' sections are used)
    evaluation_written: bool = False


def is_ensemble_document(doc: YMap) -> bool:
    return isinstance(doc, YMap) and "ensemble" in doc


# ---------------------------------------------------------------------------
# Parsing


def load_ensemble(
    doc: YMap, files: tuple[str, ...], overrides: Mapping[str, object], locations: Mapping[str, Location]
) -> EnsembleSpec:
    """Parse an ensemble document (``extends`` already merged) with ``--set`` overrides:
    those of :data:`OWN_PATHS` change the document, the rest go to every member."""
    passed: list[tuple[str, object, Location]] = []
    for path, value in overrides.items():
        loc = locations.get(path) or Location(f"<override {path[:60]}>", 1, 1)
        if path.split(".")[0] in OWN_PATHS:
            doc = set_path(doc, path, value, loc)
        else:
            passed.append((path, value, loc))
    defer(number_errors(doc))  # member weights near the float limit summed to infinity
    sha = document.spec_hash(doc)
    return parse_ensemble(doc, files[0], files, sha, tuple(passed))


def parse_ensemble(
    doc: YMap, file: str, files: tuple[str, ...], sha256: str, passed: tuple[tuple[str, object, Location], ...] = ()
) -> EnsembleSpec:
    errors: list[NasdslError] = []
    left = dict(doc)
    left.pop("extends", None)
    version = left.pop("nasdsl", 1)
    if version != 1:
        errors.append(
            SpecError(
                f"expected language version 1, got {describe(version)}", location=doc.loc_of("nasdsl"), path="nasdsl"
            )
        )
    name = "Ensemble"
    if "name" not in left:
        errors.append(
            SpecError("missing key 'name': the ensemble's class name, e.g. ILSVRC2014", location=doc.loc, path="name")
        )
    else:
        try:
            name = check_name(left.pop("name"), doc.loc_of("name"), "name", "model name")
        except NasdslError as e:
            errors.append(e)
    text = left.pop("doc", "")
    if not isinstance(text, str):
        errors.append(
            SpecError(f"expected a string, got {scalar_type_name(text)}", location=doc.loc_of("doc"), path="doc")
        )
        text = ""
    members: tuple[MemberSpec, ...] = ()
    combine = "probabilities"
    try:
        members, combine = _parse_section(left.pop("ensemble"), doc.loc_of("ensemble"), file, passed)
    except ErrorList as e:
        errors.extend(e.errors)
    except NasdslError as e:
        errors.append(e)
    evaluation = replace(DEFAULT, loc=doc.loc)
    written = "evaluation" in left
    if written:
        try:
            evaluation = parse_evaluation(left.pop("evaluation"), doc.loc_of("evaluation"))
        except NasdslError as e:
            errors.append(e)
    if left:
        rest = YMap(doc.loc)
        rest.update(left)
        rest.key_locs = doc.key_locs
        hint = " (an ensemble's layers are its members' specs: ensemble.members)"
        try:
            refuse_leftovers(rest, TOP_KEYS, "", "an ensemble spec", deferrable=False)
        except NasdslError as e:
            for x in flatten(e):
                if x.path in ("model", "input"):
                    x.message += hint
                errors.append(x)
    if errors:
        raise ErrorList(errors) if len(errors) > 1 else errors[0]
    return EnsembleSpec(
        name, text, file, files, sha256, members, combine, evaluation, doc.loc_of("name"), doc.loc, written
    )


def _parse_section(raw: object, loc: Location, file: str, passed) -> tuple[tuple[MemberSpec, ...], str]:
    if not isinstance(raw, YMap):
        raise SpecError(
            f"expected a mapping with members and combine, got {scalar_type_name(raw)}", location=loc, path="ensemble"
        )
    left = dict(raw)
    combine = left.pop("combine", "probabilities")
    if combine not in COMBINES:
        raise SpecError(
            f"expected {' or '.join(COMBINES)}, got {describe(combine)}{did_you_mean(str(combine), COMBINES)}",
            location=raw.loc_of("combine"),
            path="ensemble.combine",
        )
    if "members" not in left:
        _unknown_first(raw, left, ENSEMBLE_KEYS, "ensemble", "an ensemble section")
        raise SpecError(
            "missing key 'members': the specs to combine, by name", location=raw.loc, path="ensemble.members"
        )
    entries = left.pop("members")
    rest = YMap(raw.loc)
    rest.update(left)
    rest.key_locs = raw.key_locs
    refuse_leftovers(rest, ENSEMBLE_KEYS, "ensemble", "an ensemble section")
    where = raw.loc_of("members")
    if not isinstance(entries, YMap) or not entries:
        got = "an empty mapping" if isinstance(entries, YMap) else scalar_type_name(entries)
        raise SpecError(
            f"expected a mapping of member names to specs, got {got}", location=where, path="ensemble.members"
        )
    if len(entries) > MAX_MEMBERS:
        raise LimitError(f"more than {MAX_MEMBERS} members", location=where, path="ensemble.members")
    errors: list[NasdslError] = []
    members = []
    for key, value in entries.items():
        try:
            members.append(_parse_member(key, value, entries, file, passed))
        except NasdslError as e:
            errors.append(e)
    if errors:
        raise ErrorList(errors)
    return tuple(members), combine


def _unknown_first(raw: YMap, left: dict, allowed: tuple[str, ...], path: str, what: str) -> None:
    """Where a required key is missing beside unknown keys, refuse those (with their did-you-mean):
    ``membres`` is the author's typo, and 'missing members' the wrong news."""
    unknown = YMap(raw.loc)
    unknown.update({k: v for k, v in left.items() if k not in allowed})
    unknown.key_locs = raw.key_locs
    if unknown:
        refuse_leftovers(unknown, allowed, path, what, deferrable=False)


def _parse_member(name: str, raw: object, entries: YMap, file: str, passed) -> MemberSpec:
    path = f"ensemble.members.{name}"
    name = check_name(name, entries.key_locs.get(name, entries.loc), path, "member name")
    loc = entries.loc_of(name)
    if isinstance(raw, str):
        raw_map = YMap(loc)
        document.put(raw_map, "spec", raw, loc, loc)
        raw = raw_map
    if not isinstance(raw, YMap):
        raise SpecError(
            f"expected a spec's path or a mapping of {', '.join(MEMBER_KEYS)}, got {scalar_type_name(raw)}",
            location=loc,
            path=path,
        )
    left = dict(raw)
    if "spec" not in left:
        _unknown_first(raw, left, MEMBER_KEYS, path, "a member")
        raise SpecError("missing key 'spec': the member's spec file", location=raw.loc, path=path)
    spec = left.pop("spec")
    spec_loc = raw.loc_of("spec")
    real, shown = _relative(spec, spec_loc, join(path, "spec"), file, "a spec file")
    if not real.is_file():
        raise SpecError(f"no such file: {shown}", location=spec_loc, path=join(path, "spec"))
    overrides: list[tuple[str, object, Location]] = []
    sets = left.pop("set", None)
    if sets is not None:
        if not isinstance(sets, YMap):
            raise SpecError(
                f"expected a mapping of override paths to values, got {scalar_type_name(sets)}",
                location=raw.loc_of("set"),
                path=join(path, "set"),
            )
        overrides = [(key, value, sets.loc_of(key)) for key, value in sets.items()]
    weights = left.pop("weights", None)
    weights_path = None
    if weights is not None:
        weights_path = str(_relative(weights, raw.loc_of("weights"), join(path, "weights"), file, "a weights file")[0])
    weight = left.pop("weight", 1)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight <= 0:
        raise SpecError(
            f"expected a number > 0, got {describe(weight)}", location=raw.loc_of("weight"), path=join(path, "weight")
        )
    rest = YMap(raw.loc)
    rest.update(left)
    rest.key_locs = raw.key_locs
    refuse_leftovers(rest, MEMBER_KEYS, path, "a member")
    weights_loc = raw.loc_of("weights") if weights is not None else None
    return MemberSpec(
        name, shown, real, (*overrides, *passed), weights_path, float(weight), loc, path, spec_loc, weights_loc
    )


def _relative(value: object, loc: Location, path: str, file: str, what: str) -> tuple[Path, str]:
    """A path written in the ensemble file: its real path (relative to that file) and how it is shown."""
    if not isinstance(value, str) or not value or "\0" in value:
        got = (
            scalar_type_name(value)
            if not isinstance(value, str)
            else "an empty string"
            if not value
            else "a NUL character"
        )
        raise SpecError(f"expected the path of {what}, got {got}", location=loc, path=path)
    return Path(file).parent / value, os.path.normpath(os.path.join(os.path.dirname(file), value))


# ---------------------------------------------------------------------------
# --set on an ensemble document


def set_path(doc: YMap, path: str, value: object, loc: Location) -> YMap:
    """A copy of ``doc`` with ``path`` set to ``value``. Mappings along the path are copied;
    the last key may be new (the parser then checks it). Below a member's ``set`` the rest
    of the path is one override path (``ensemble.members.wide.set.inception5b.c1x1``)."""
    at = Location(loc.file, loc.line, 1)
    parts = path.split(".")
    if any(not p for p in parts):
        raise SpecError("expected a dotted path like evaluation.preset", location=at, path=path)
    root = _copy_map(doc)
    node, walked = root, ""
    i = 0
    while i < len(parts):
        part = parts[i]
        last = i == len(parts) - 1
        if walked.endswith(".set") and walked.startswith("ensemble.members."):
            part, last = ".".join(parts[i:]), True
        if last:
            document.put(node, part, value, loc, loc)
            return root
        child = node.get(part)
        here = join(walked, part)
        if child is None and (here == "evaluation" or (part == "set" and _is_member(walked))):
            child = YMap(loc)
        if isinstance(child, str) and _is_member(here):  # a member written as its spec's path
            child = YMap(node.loc_of(part))
            document.put(child, "spec", node[part], node.loc_of(part), node.loc_of(part))
        if not isinstance(child, YMap):
            where = walked or "the ensemble spec"
            if part not in node:
                raise SpecError(f"no key '{part}' under {where}{did_you_mean(part, node)}", location=at, path=path)
            raise SpecError(
                f"{join(walked, part)} is {scalar_type_name(child)}, it has no key '{parts[i + 1]}'",
                location=at,
                path=path,
            )
        child = _copy_map(child)
        document.put(node, part, child, node.key_locs.get(part, loc), node.value_locs.get(part, loc))
        node, walked = child, join(walked, part)
        i += 1
    return root


def _is_member(path: str) -> bool:
    return path.startswith("ensemble.members.") and path.count(".") == 2


def _copy_map(m: YMap) -> YMap:
    out = YMap(m.loc)
    for k, v in m.items():
        document.put(out, k, v, m.key_locs.get(k, m.loc), m.loc_of(k))
    return out


# ---------------------------------------------------------------------------
# Compiling


@dataclass(frozen=True)
class CompiledEnsemble:
    """A checked ensemble: its spec, its graph (:mod:`nasdsl.ensemble_ir`) and each member compiled."""

    spec: EnsembleSpec
    graph: nx.DiGraph
    members: tuple[tuple[str, object], ...]  # (name, nasdsl.api.Compiled)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def evaluation(self) -> Evaluation:
        return ir.info(self.graph).evaluation

    def totals(self, *, with_aux: bool = False) -> dict:
        """Parameters and multiply-adds of all members for one crop; depth of the deepest."""
        each = [c.totals(with_aux=with_aux) for _, c in self.members]
        return {
            "params": sum(t["params"] for t in each),
            "macs": sum(t["macs"] for t in each),
            "depth": max(t["depth"] for t in each),
        }

    def summary(self, *, with_aux: bool = False) -> dict:
        """The summary's contract (``nasdsl/summary.py``) with one row per member, plus
        ``members``, ``combine``, ``evaluation`` and ``footer`` (lines the table ends with)."""
        rows = []
        specs = {m.name: m for m in self.spec.members}
        for name, c in self.members:
            t = c.totals(with_aux=with_aux)
            m = specs[name]
            args: dict[str, object] = {"spec": m.shown}
            args.update({k: _plain(v) for k, v, _ in m.overrides})
            member = next(x for x in members_of(self.graph) if x.name == name)
            if not _equal_weights(self.graph):
                args["weight"] = round(member.weight, 6)
            rows.append(
                {
                    "name": name,
                    "kind": ir.info(c.graph).name,
                    "window": "",
                    "output": list(ir.node(self.graph, name).shape),
                    "depth": t["depth"],
                    "args": args,
                    "params": t["params"],
                    "macs": t["macs"],
                    "weights": m.weights,
                }
            )
        totals = self.totals(with_aux=with_aux)
        ev = self.evaluation
        per_image = totals["macs"] * ev.count
        distinct = len({ir.info(c.graph).sha256 for _, c in self.members})
        n = len(self.members)
        if distinct == 1:
            cost = f"{rows[0]['macs']:,} (one member, one crop) x {n} member{'s' * (n > 1)} x {_crops(ev.count)}"
        else:
            cost = f"{totals['macs']:,} (all members, one crop) x {_crops(ev.count)}"
        footer = [
            f"members: {n} ({distinct} distinct spec{'s' * (distinct > 1)} after overrides); "
            f"combine: {'weighted ' if not _equal_weights(self.graph) else ''}mean of {combine_of(self.graph)}",
            f"evaluation: {ev.describe()}",
            f"multiply-adds per image: {cost} = {per_image:,}",
        ]
        return {
            "name": self.name,
            "input": list(ir.node(self.graph, ir.info(self.graph).input).shape),
            "rows": rows,
            "totals": totals,
            "kind": "ensemble",
            "combine": combine_of(self.graph),
            "evaluation": {"preset": ev.preset, "crops": ev.count, "description": ev.describe()},
            "macs_per_image": per_image,
            "footer": footer,
        }

    def describe(self) -> str:
        """What ``check`` says of an ensemble."""
        inference, training = self.totals(), self.totals(with_aux=True)
        n = len(self.members)
        text = f"an ensemble of {n} member{'s' * (n > 1)}, {inference['params']:,} parameters for inference"
        if training["params"] != inference["params"]:
            text += f", {training['params']:,} with the training heads"
        count = self.evaluation.count
        text += f"; {inference['macs']:,} multiply-adds a crop, {inference['macs'] * count:,} an image ({count} crop"
        return text + ("s)" if count != 1 else ")")


def _crops(n: int) -> str:
    return f"{n} crop{'s' * (n != 1)}"


def _plain(v: object) -> object:
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def _equal_weights(g: nx.DiGraph) -> bool:
    shares = [m.weight for m in members_of(g)]
    return max(shares) - min(shares) <= 1e-12


def compile_ensemble(
    spec: EnsembleSpec, compile_member: Callable[..., object], *, limits: Limits, max_params: int
) -> CompiledEnsemble:
    """Compile every member with ``compile_member(doc, files, values, locations)`` (the API's
    compilation of a model document: this module does not import the API, which imports it) --
    a spec used twice with the same overrides is compiled once -- and build the ensemble graph.
    Errors inside a member say which member they come from."""

    @functools.cache
    def compiled(path: str, overrides: str) -> object:
        m = by_key[(path, overrides)]
        doc, files = document.load_document(m.path, limits=limits, display_name=m.shown)
        if is_ensemble_document(doc):  # itself, or a cycle a -> b -> a, or any nesting
            raise SpecError(
                f"member {m.name}: {m.shown} is an ensemble spec; a member must be a model spec "
                "(ensembles do not nest: list the inner ensemble's members here instead)",
                location=m.spec_loc,
                path=join(m.keypath, "spec"),
            )
        values = {k: v for k, v, _ in m.overrides}
        locations = {k: loc for k, _, loc in m.overrides}
        return compile_member(doc, files, values, locations)

    by_key = {}
    results: list[tuple[str, object]] = []
    errors: list[NasdslError] = []
    for m in spec.members:
        key = (os.path.realpath(m.path), document.canonical_json([[k, v] for k, v, _ in m.overrides]))
        by_key.setdefault(key, m)
        try:
            results.append((m.name, compiled(*key)))
        except NasdslError as e:
            errors.extend(_in_member(e, m))
    if errors:
        raise ErrorList(errors) if len(errors) > 1 else errors[0]
    graph = _build(spec, results)
    total = sum(c.totals(with_aux=True)["params"] for _, c in results)
    if total > max_params:
        raise LimitError(
            f"the ensemble has {total:,} parameters, above the limit of {max_params:,} (raise it with --max-params)",
            location=spec.loc,
            path="ensemble.members",
        )
    return CompiledEnsemble(spec, graph, tuple(results))


def _in_member(e: NasdslError, m: MemberSpec) -> list[NasdslError]:
    """The errors of a member, each saying which member (its messages point into its own file)."""
    found = e.errors if isinstance(e, ErrorList) else [e]
    for x in found:
        if x.location is None:
            x.location = m.spec_loc
        if not x.message.endswith(f"(member {m.name})"):
            x.message += f" (member {m.name})"
    return found


def _build(spec: EnsembleSpec, results: list[tuple[str, object]]) -> nx.DiGraph:
    """The ensemble graph: the input, one ``member`` node each, one ``average`` node."""
    first = results[0][1].graph
    inp = ir.info(first).input
    in_shape = ir.node(first, inp).shape
    out_shape = ir.node(first, ir.info(first).outputs[0].node).shape
    specs = {m.name: m for m in spec.members}
    errors: list[NasdslError] = []
    softmax: list[bool] = []
    for name, c in results:
        g = c.graph
        m = specs[name]
        shape = ir.node(g, ir.info(g).input).shape
        if shape != in_shape:
            errors.append(_mismatch(m, "input", shape, in_shape, results[0][0]))
        main = ir.info(g).outputs[0]
        if ir.node(g, main.node).shape != out_shape:
            errors.append(_mismatch(m, "output", ir.node(g, main.node).shape, out_shape, results[0][0]))
        is_softmax = ir.node(g, main.node).op == "softmax"
        if is_softmax and spec.combine == "logits":
            errors.append(
                SpecError(
                    f"member {name} gives probabilities (its output '{main.name}' is a softmax); "
                    "combine: logits needs members that give logits",
                    location=m.loc,
                    path=m.keypath,
                )
            )
        softmax.append(spec.combine == "probabilities" and not is_softmax)
    chosen = spec.evaluation
    if not spec.evaluation_written:
        try:
            chosen = _members_evaluation(spec, results) or chosen
        except NasdslError as e:
            errors.append(e)
    try:
        evaluation = chosen.bind(in_shape)
    except NasdslError as e:
        errors.append(e)
    if spec.combine == "probabilities" and chosen.average == "logits":
        errors.append(
            SpecError(
                "expected probabilities, got logits: the ensemble gives probabilities (combine: probabilities)",
                location=chosen.loc,
                path="evaluation.average",
            )
        )
    if errors:
        raise ErrorList(errors) if len(errors) > 1 else errors[0]
    # shares: each weight over the largest first, so that weights near the float limit cannot sum to
    # infinity (which made every share 0: an unweighted mean without a word)
    largest = max(m.weight for m in spec.members)
    scaled = {m.name: m.weight / largest for m in spec.members}
    total = sum(scaled.values())
    members = tuple(
        Member(
            name,
            c.graph,
            specs[name].shown,
            tuple((k, _plain(v)) for k, v, _ in specs[name].overrides),
            specs[name].weights,
            scaled[name] / total,
            specs[name].loc,
            specs[name].keypath,
            specs[name].weights_loc,
        )
        for name, c in results
    )
    g = nx.DiGraph()
    in_type = ir.node(first, inp).type
    out_type = ir.node(first, ir.info(first).outputs[0].node).type
    input_attrs = ir.frozen({"shape": in_shape, "mean": None, "std": None})
    ir.add_node(g, inp, ir.Node("input", input_attrs, in_type, loc=spec.loc, keypath="ensemble", sym=in_shape))
    for m in members:
        attrs = ir.frozen({"member": m})
        ir.add_node(g, m.name, ir.Node("member", attrs, out_type, loc=m.loc, keypath=m.keypath), (inp,))
    average = "average"
    while average in g:
        average = f"_{average}"
    attrs = ir.frozen({"of": spec.combine, "weights": tuple(m.weight for m in members), "softmax": tuple(softmax)})
    record = ir.Node("average", attrs, out_type, loc=spec.loc, keypath="ensemble.combine")
    ir.add_node(g, average, record, [name for name, _ in results])
    output = ir.Output(
        spec.combine, average, 1.0, False, source=average, position=0, loc=spec.loc, keypath="ensemble.combine"
    )
    digest = hashlib.sha256(spec.sha256.encode())
    for _, c in results:
        digest.update(ir.info(c.graph).sha256.encode())
    model = ir.Block("seq", "", "", "ensemble", spec.loc, (inp,), average)
    info = ir.GraphInfo(
        name=spec.name,
        input=inp,
        outputs=(output,),
        model=model,
        doc=spec.doc,
        file=spec.file,
        sha256=digest.hexdigest(),
        name_loc=spec.name_loc,
        input_doc=ir.info(first).input_doc,
        evaluation=evaluation,
    )
    ir.set_info(g, info)
    return g


def _members_evaluation(spec: EnsembleSpec, results: list[tuple[str, object]]) -> Evaluation | None:
    """For an ensemble without an evaluation section: the section its members' specs write, when
    they write one and agree (a member without one counts as the default); None when none writes
    one. Members evaluated differently are an error: the ensemble must say how it is evaluated."""
    own = {name: ir.info(c.graph).evaluation for name, c in results}
    if all(ev is None for ev in own.values()):
        return None
    bound = {}
    for name, c in results:
        ev = own[name] or DEFAULT.bind(ir.node(c.graph, ir.info(c.graph).input).shape)
        bound[name] = ev
    kinds = {replace(ev, loc=None, preset="single", sevenths=()) for ev in bound.values()}
    if len(kinds) > 1:
        listed = "; ".join(f"{name}: {ev.describe()}" for name, ev in bound.items())
        raise SpecError(
            f"the members' specs evaluate them differently ({listed}); write an evaluation section in the "
            "ensemble (it decides for every member)",
            location=spec.loc,
            path="evaluation",
        )
    return next(ev for ev in own.values() if ev is not None)


def _mismatch(m: MemberSpec, what: str, got: tuple, want: tuple, first: str) -> SpecError:
    return SpecError(
        f"member {m.name} has the {what} shape {'x'.join(map(str, got))}, expected "
        f"{'x'.join(map(str, want))} like member {first}: members must read and give tensors of one shape",
        location=m.loc,
        path=m.keypath,
    )


def member_state_dict(net: CompiledEnsemble) -> dict[str, object] | None:
    """The ensemble's state_dict from the members' weights files (keys prefixed by member
    names); members without a file get the seeded initialisation. None when no member names a file."""
    from nasdsl.optimize import training_weights
    from nasdsl.weights import initial_weights, load_weights

    if not any(m.weights for m in members_of(net.graph)):
        return None
    out: dict[str, object] = {}
    for i, m in enumerate(members_of(net.graph)):
        loc, keypath = m.weights_loc or m.loc, f"{m.keypath}.weights"
        if m.weights is not None and not os.path.lexists(m.weights):
            raise SpecError(f"no such weights file: {m.weights}", location=loc, path=keypath)
        if m.weights:
            part = load_weights(m.weights, location=loc, keypath=keypath)
            # checked against its own member: the error names the file and the line that gave it
            training_weights(m.graph, part, source=f"'{m.weights}' (member {m.name})", location=loc, path=keypath)
        else:
            part = initial_weights(m.graph, seed=i)
        out.update({f"{m.name}.{k}": v for k, v in part.items()})
    return out


__all__ = [
    "CompiledEnsemble",
    "EnsembleSpec",
    "MemberSpec",
    "compile_ensemble",
    "is_ensemble_document",
    "load_ensemble",
    "member_state_dict",
    "set_path",
]
