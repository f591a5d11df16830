"""Choices written in a spec document: where they stand, what they offer (see ``docs/design-space.md``).

A value of a spec may be a choice: ``{choice: [v1, v2, ...]}`` or ``{range: [from,
to, step]}``, with an optional ``default`` (one of the options; else the first)
and ``when`` (a condition of the variables under which the choice is made). This
module finds them in a loaded document by walking the positions the parser
reads as values (variables, the input's shape and statistics, template
arguments, parameter defaults, op attributes and the items of list values,
``when``, an output's ``loss_weight``), reads each by popping the keys it knows
(a near-miss such as ``choise`` is an error with a did-you-mean), and writes a
document with chosen options in their place (:func:`substitute`). A mapping
where a value belongs that has no choice key is left to the parser. The same
mapping reached twice (a YAML alias) is one choice: it is tied.

Where a block stands (a model entry, a sequence's item, a merge's branch, a
repeated block, a template's body), ``{choice: [name, ...]}`` or ``{choice:
{word: block, ...}}`` is a *choice between blocks* (kind ``block``): its options
are words, and :meth:`ChoicePoint.block` gives the block a word stands for.

:mod:`nasdsl.space` builds the design space on top.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from nasdsl import document
from nasdsl.errors import Location, SpecError
from nasdsl.loader import YList, YMap, scalar_type_name
from nasdsl.numbers import number_ok
from nasdsl.ops import MERGE_OPS, OPS, REQUIRED, describe
from nasdsl.spec import (
    Value,
    block_kind,
    block_path,
    check_entry_name,
    check_model,
    check_name,
    did_you_mean,
    parse_value,
    refuse_entry_beside,
)

#: the keys of a choice mapping
CHOICE_KEYS = ("choice", "range", "default", "when", "name")
#: the keys of an input choice (``from: {choice: [s0, s1, n0], pick: 2}``)
INPUT_CHOICE_KEYS = ("choice", "pick", "default", "when", "name")
#: the most options one choice (a range) may have
MAX_OPTIONS = 10_000
#: the document key of the constraints
CONSTRAINTS = "constraints"


@dataclass(frozen=True)
class Position:
    """One place a choice stands: the keys from the document's root, the parser's key path of
    the value there (``model.inception4a.args[2]``) and the ``--set`` path that names it."""

    keys: tuple[str | int, ...]
    spec_path: str
    set_path: str
    #: the value there may be null: a template argument, a parameter's default or an op's (or a
    #: merge's) attribute (docs/spec-language.md, "Null arguments"); not an item of a list
    null: bool = False


@dataclass(frozen=True)
class ChoicePoint:
    """A choice: ``options`` as written (numbers, booleans, expression text, or lists of
    those; None, ``null``, where every place may be null), the index of the ``default``, and its
    places (several when a YAML alias ties them)."""

    name: str
    kind: str  # "choice", "range", "block" or "input" (a `from` or `ref` among earlier values)
    options: tuple[object, ...]
    option_locs: tuple[Location, ...]
    default: int
    loc: Location
    positions: tuple[Position, ...]
    #: the variable the choice defines, when it is one
    variable: str | None = None
    #: the condition under which the choice is made (else it keeps its default)
    when: Value | None = None
    #: a choice between blocks (kind "block"): the choice mapping, whose options are words
    #: naming blocks (:func:`nasdsl.document.option_block` gives option k's block)
    block_choice: YMap | None = None

    @property
    def null_allowed(self) -> bool:
        """Whether ``null`` may be an option: every place of the choice may be null."""
        return all(p.null for p in self.positions)

    def block(self, k: int) -> object:
        """The block option ``k`` of a choice between blocks stands for."""
        assert self.block_choice is not None
        return document.option_block(self.block_choice, k)

    def describe(self) -> dict:
        """Plain data for JSON."""
        return {
            "name": self.name,
            "options": [plain(o) for o in self.options],
            "default": plain(self.options[self.default]),
            "when": self.when.raw if self.when is not None else None,
            "at": str(self.loc),
            "tied": [p.set_path for p in self.positions[1:]],
        }


@dataclass(frozen=True)
class Constraint:
    """A condition every variant satisfies: its parsed value and its text."""

    value: Value
    text: str


def find_choices(doc: YMap, names: Mapping[int, str] | None = None) -> tuple[ChoicePoint, ...]:
    """The choice points of a document, in their order: variables, input, model, outputs, templates.
    ``names`` names the points whose choice mapping has that ``id()``; the others are named by
    their ``--set`` path. Raises :class:`SpecError` for a malformed choice."""
    scan = _Scanner(doc, names or {})
    scan.run()
    points = tuple(scan.points())
    seen: dict[str, ChoicePoint] = {}
    for p in points:
        if p.name in seen:
            raise SpecError(
                f"two choices are named '{p.name}' (the other at {seen[p.name].loc}): give each its own name",
                location=p.loc,
                path=f"{p.positions[0].spec_path}.name",
            )
        seen[p.name] = p
    return points


def constraints(doc: YMap) -> tuple[Constraint, ...]:
    """The document's ``constraints``: a list of conditions on the variables."""
    if CONSTRAINTS not in doc:
        return ()
    raw = doc[CONSTRAINTS]
    loc = doc.loc_of(CONSTRAINTS)
    if raw is None:
        return ()
    if not isinstance(raw, YList):
        raise SpecError(
            f"expected a list of conditions (expressions of the variables), got {scalar_type_name(raw)}",
            location=loc,
            path=CONSTRAINTS,
        )
    out = []
    for i, item in enumerate(raw):
        path = f"{CONSTRAINTS}[{i}]"
        if isinstance(item, (YMap, YList)) or item is None:
            raise SpecError(
                f"expected a condition (an expression of the variables), got {scalar_type_name(item)}",
                location=raw.loc_of(i),
                path=path,
            )
        out.append(Constraint(parse_value(item, raw.loc_of(i), path), str(item)))
    return tuple(out)


@dataclass
class _Found:
    choice: YMap
    positions: list[Position]
    variable: str | None
    name: str | None
    block: bool = False
    #: a choice among earlier values, at a `from` or a `ref`
    input: bool = False


class _Scanner:
    """Walks the value positions of a document (as the parser reads it) and finds the choices."""

    def __init__(self, doc: YMap, names: Mapping[int, str]):
        self.doc = doc
        self.names = names
        self.found: dict[object, _Found] = {}
        templates = doc.get("templates")
        self.templates = templates if isinstance(templates, YMap) else {}
        variables = doc.get("variables")
        self.variable_names = set(variables) if isinstance(variables, YMap) else set()

    def run(self) -> None:
        doc = self.doc
        variables = doc.get("variables")
        if isinstance(variables, YMap):
            for name in variables:
                self.value(variables, name, ("variables", name), f"variables.{name}", name, variable=name)
        inp = doc.get("input")
        if isinstance(inp, YMap):
            for key in ("shape", "mean", "std"):
                if key in inp:
                    self.value(inp, key, ("input", key), f"input.{key}", f"input.{key}")
        model = doc.get("model")
        if isinstance(model, YMap):
            check_model(model, doc.loc_of("model"))  # as the parser reads it: no entry named after a block's key
            for name in model:
                check_entry_name(model, name, "model")
                shown = f"model.{name}" if name in self.variable_names else name
                self.block(model, name, ("model", name), f"model.{name}", shown)
        outputs = doc.get("outputs")
        if isinstance(outputs, YMap):
            for name, out in outputs.items():
                if not isinstance(out, YMap):
                    continue
                keys, path = ("outputs", name), f"outputs.{name}"
                if "head" in out:
                    self.block(out, "head", (*keys, "head"), f"{path}.head", f"{path}.head")
                for key in ("loss_weight", "when"):
                    if key in out:
                        self.value(out, key, (*keys, key), f"{path}.{key}", f"{path}.{key}")
        for name, t in self.templates.items():
            if not isinstance(t, YMap):
                continue
            keys, path = ("templates", name), f"templates.{name}"
            params = t.get("params")
            if isinstance(params, YList):
                for i, p in enumerate(params):
                    if isinstance(p, YMap) and len(p) == 1:
                        (pname,) = p
                        self.value(
                            p, pname, (*keys, "params", i, pname), f"{path}.params[{i}].{pname}",
                            f"{path}.params.{i}.{pname}", null=True,
                        )  # fmt: skip
            if "body" in t:
                self.block(t, "body", (*keys, "body"), f"{path}.body", f"{path}.body")

    def points(self) -> Iterator[ChoicePoint]:
        for f in self.found.values():
            yield _parse_choice(f)

    # -- positions

    def value(
        self, container, key, keys: tuple, spec_path: str, set_path: str, *, variable: str | None = None, null=False
    ) -> None:
        """The choices at a value's position; ``null``: the value there may be null."""
        v = container[key]
        if isinstance(v, YMap) and _choice_like(v):
            identity = _identity(v)
            found = self.found.get(identity)
            position = Position(keys, spec_path, set_path, null)
            if found is None:
                name = self.names.get(id(v))
                self.found[identity] = _Found(v, [position], variable, name)
            else:
                found.positions.append(position)
                if variable is not None and found.variable is None:
                    found.variable = variable
        elif isinstance(v, YList):
            for i in range(len(v)):
                self.value(v, i, (*keys, i), f"{spec_path}[{i}]", f"{set_path}.{i}")

    def input(self, container, key, keys: tuple, spec_path: str, set_path: str) -> None:
        """A `from` or `ref` that is a choice among earlier values."""
        v = container[key]
        if not (isinstance(v, YMap) and (_choice_like(v) or "pick" in v)):
            return
        identity = _identity(v)
        position = Position(keys, spec_path, set_path)
        if identity in self.found:
            self.found[identity].positions.append(position)
        else:
            self.found[identity] = _Found(v, [position], None, self.names.get(id(v)), input=True)

    def block(self, container, key, keys: tuple, spec_path: str, set_path: str) -> None:
        b = container[key]
        if document.is_block_choice(b):
            identity = _identity(b)
            position = Position(keys, spec_path, set_path)
            if identity in self.found:
                self.found[identity].positions.append(position)
            else:
                self.found[identity] = _Found(b, [position], None, self.names.get(id(b)), block=True)
            if "from" in b:  # the block chosen reads a value chosen among several
                self.input(b, "from", (*keys, "from"), f"{spec_path}.from", f"{set_path}.from")
            return
        if isinstance(b, YList):
            for i in range(len(b)):
                self.block(b, i, (*keys, i), f"{spec_path}[{i}]", f"{set_path}.{i}")
            return
        if not isinstance(b, YMap):
            return
        # read as the parser reads it, and refused where it refuses: a sequence's entry named after
        # a block's key makes the mapping that kind of block, whose other keys no walk would visit
        kind = block_kind(b, spec_path)
        if kind is None:  # a named sequence
            for name in b:
                check_entry_name(b, name, spec_path)
                self.block(b, name, (*keys, name), f"{spec_path}.{name}", f"{set_path}.{name}")
            return
        refuse_entry_beside(b, kind, container.loc_of(key), spec_path)
        if "when" in b:
            self.value(b, "when", (*keys, "when"), f"{spec_path}.when", f"{set_path}.when")
        if "from" in b:
            self.input(b, "from", (*keys, "from"), f"{spec_path}.from", f"{set_path}.from")
        if kind == "ref":
            self.input(b, "ref", (*keys, "ref"), f"{spec_path}.ref", f"{set_path}.ref")
        if kind == "op":
            for attr in b:
                if attr not in ("op", "phase", "when", "doc", "from"):  # `from` is read above, as an input
                    null = _optional(b["op"], attr)
                    self.value(b, attr, (*keys, attr), f"{spec_path}.{attr}", f"{set_path}.{attr}", null=null)
        elif kind == "use":
            args = b.get("args")
            params = self._params(b.get("use"))
            if isinstance(args, YList):
                for i in range(len(args)):
                    shown = params[i] if i < len(params) else f"args.{i}"
                    self.value(args, i, (*keys, "args", i), f"{spec_path}.args[{i}]", f"{set_path}.{shown}", null=True)
            elif isinstance(args, YMap):
                for name in args:
                    shown = name if name in params else f"args.{name}"
                    self.value(
                        args, name, (*keys, "args", name), f"{spec_path}.args.{name}", f"{set_path}.{shown}", null=True
                    )
        elif kind == "seq":
            items = b["seq"]
            if isinstance(items, YList):
                for i in range(len(items)):
                    self.block(items, i, (*keys, "seq", i), f"{spec_path}[{i}]", f"{set_path}.seq.{i}")
            elif isinstance(items, YMap):
                for name in items:
                    self.block(items, name, (*keys, "seq", name), f"{spec_path}.{name}", f"{set_path}.seq.{name}")
        elif kind == "repeat":
            self.value(b, "repeat", (*keys, "repeat"), f"{spec_path}.repeat", f"{set_path}.repeat")
            if "block" in b:
                self.block(b, "block", (*keys, "block"), f"{spec_path}.block", f"{set_path}.block")
        elif kind in MERGE_OPS:
            for attr in b:
                if attr not in (kind, "phase", "when", "doc", "from"):
                    null = _optional(kind, attr)
                    self.value(b, attr, (*keys, attr), f"{spec_path}.{attr}", f"{set_path}.{attr}", null=null)
            branches = b[kind]
            if isinstance(branches, YList):
                for i in range(len(branches)):
                    self.block(branches, i, (*keys, kind, i), f"{spec_path}[{i}]", f"{set_path}.{kind}.{i}")
            elif isinstance(branches, YMap):
                for name in branches:
                    self.block(branches, name, (*keys, kind, name), f"{spec_path}.{name}", f"{set_path}.{kind}.{name}")

    def _params(self, template: object) -> list[str]:
        return document.param_names(template, self.templates)


def _optional(op: object, attr: str) -> bool:
    """Whether ``attr`` of ``op`` may be null (not given): an optional attribute, or one the
    parser refuses anyway (an unknown op or key)."""
    found = OPS[op].attr_index.get(attr) if isinstance(op, str) and op in OPS else None
    return found is None or found.default is not REQUIRED


def _identity(m: YMap) -> object:
    """What makes two places one choice: the same YAML node, known by where it is written (a copy
    of the document, as ``--set`` makes, keeps that), or by the object itself for a value made in
    Python, whose places are all alike (``<override ...>:1:1``)."""
    return id(m) if m.loc.file.startswith("<override ") else m.loc


def _choice_like(m: YMap) -> bool:
    """A mapping meant as a choice: one of its keys is a choice's, or nearly (``choise``). Any
    other mapping where a value belongs is left to the parser, which says what it expects."""
    meant = CHOICE_KEYS[:4]  # a `name` alone (or a near miss of it) makes no choice
    return any(k in meant or did_you_mean(k, meant) for k in m)


#: the keys of a choice between blocks
BLOCK_CHOICE_KEYS = ("choice", "default", "name", *document.BLOCK_CHOICE_EXTRA)


def _parse_block_choice(f: _Found) -> ChoicePoint:
    """A choice between blocks: ``{choice: [name, ...]}`` (op or template names) or
    ``{choice: {word: block, ...}}``, with ``default`` (a word), ``from`` and ``doc``."""
    m = f.choice
    first = f.positions[0]
    path = first.spec_path
    _known_keys(m, BLOCK_CHOICE_KEYS, "a choice between blocks", path)
    raw = m["choice"]
    where = {"location": m.loc_of("choice"), "path": f"{path}.choice"}
    if not raw:
        raise SpecError("expected one or more options, got none", **where)
    if len(raw) > MAX_OPTIONS:
        raise SpecError(f"expected at most {MAX_OPTIONS:,} options, got {len(raw):,}", **where)
    words, blocks, locs = document.block_options(m)
    for i, (word, block, loc) in enumerate(zip(words, blocks, locs, strict=True)):
        at = {"location": loc, "path": f"{path}.choice.{word}" if isinstance(raw, YMap) else f"{path}.choice[{i}]"}
        if isinstance(raw, YList) and not isinstance(word, str):
            raise SpecError(
                "expected an option that names an op or a template (a choice between blocks written as a list; "
                f"write {{choice: {{word: block, ...}}}} for other blocks), got {scalar_type_name(word)}",
                **at,
            )
        check_name(word, loc, at["path"], "option name")
        inner = _choice_inside(block)
        if inner is not None:
            raise SpecError(
                "expected an option without choices of its own: a choice inside an option of a choice between blocks "
                "is not supported (make it a variable's choice, with `when`, and use the variable)",
                location=inner.loc,
                path=at["path"],
            )
    if len(set(words)) != len(words):
        word = next(w for i, w in enumerate(words) if w in words[:i])
        raise SpecError(f"option {word} is given twice", **where)
    for k in range(len(words)):  # each option takes the choice's `from` and `doc`, chosen or not
        try:
            document.option_block(m, k)
        except SpecError as e:
            raise SpecError(e.message, location=e.location, path=f"{path}.choice.{words[k]}.{e.path}") from None
    default = 0
    if "default" in m:
        given = m["default"]
        if given not in words:
            raise SpecError(
                f"expected the default to be one of the options ({', '.join(words)}), got {describe(plain(given))}",
                location=m.loc_of("default"),
                path=f"{path}.default",
            )
        default = words.index(given)
    name = f.name or _given_name(m, path) or first.set_path
    return ChoicePoint(
        name, "block", tuple(words), tuple(locs), default, m.loc, tuple(f.positions), None, None, block_choice=m
    )


def _known_keys(m, allowed: tuple[str, ...], what: str, path: str) -> None:
    """Refuse the first key of ``m`` not in ``allowed``, at its place, with the keys allowed."""
    for key in m:
        if key not in allowed:
            raise SpecError(
                f"unknown key '{key}' in {what}{did_you_mean(key, allowed)}; allowed: {', '.join(allowed)}",
                location=m.key_locs.get(key, m.loc),
                path=f"{path}.{key}",
            )


def _parse_input_choice(f: _Found) -> ChoicePoint:
    """A choice among earlier values: ``{choice: [s0, s1, n0]}`` (one of them) or, with ``pick: k``,
    k of them, each option a list of k values in the order the list gives them."""
    m = f.choice
    path = f.positions[0].spec_path
    _known_keys(m, INPUT_CHOICE_KEYS, "a choice of values", path)
    if "choice" not in m:
        raise SpecError("expected 'choice': the values to choose among", location=m.loc, path=path)
    raw = m["choice"]
    where = {"location": m.loc_of("choice"), "path": f"{path}.choice"}
    if not isinstance(raw, YList) or not raw:
        got = "an empty list" if isinstance(raw, YList) else scalar_type_name(raw)
        raise SpecError(f"expected a list of the values to choose among, got {got}", **where)
    values: list = []
    lists = isinstance(raw[0], YList)  # each option the values of a block that reads several
    for i, item in enumerate(raw):
        at = {"location": raw.loc_of(i), "path": f"{path}.choice[{i}]"}
        if lists and isinstance(item, YList) and len(item) == len(raw[0]) and "pick" not in m:
            values.append(tuple(block_path(v, item.loc_of(k), f"{at['path']}[{k}]") for k, v in enumerate(item)))
            continue
        if lists or not isinstance(item, str):
            what = f"a list of {len(raw[0])} names, as the first option" if lists else "the name of an earlier value"
            raise SpecError(f"expected {what}, got {describe(plain(item))}", **at)
        values.append(block_path(item, at["location"], at["path"]))
    if len(set(values)) != len(values):
        value = next(v for i, v in enumerate(values) if v in values[:i])
        raise SpecError(f"option {option_text(value)} is given twice", **where)
    pick = None
    if "pick" in m:
        pick = m["pick"]
        if isinstance(pick, bool) or not isinstance(pick, int) or not 2 <= pick <= len(values):
            raise SpecError(
                f"expected 'pick' to be a number of values from 2 to {len(values)}, got {describe(plain(pick))}",
                location=m.loc_of("pick"),
                path=f"{path}.pick",
            )
    if pick is None:
        options: tuple = tuple(values)
        locs = tuple(raw.loc_of(i) for i in range(len(raw)))
    else:  # the k-subsets, each in the list's order, in lexicographic order of positions
        combos = list(itertools.combinations(range(len(values)), pick))
        if len(combos) > MAX_OPTIONS:
            raise SpecError(f"expected at most {MAX_OPTIONS:,} options, got {len(combos):,}", **where)
        options = tuple(tuple(values[i] for i in c) for c in combos)
        locs = (m.loc_of("choice"),) * len(options)
    default = 0
    if "default" in m:
        given = plain(m["default"])
        wanted = tuple(given) if isinstance(given, list) else given
        if wanted not in options:
            shown = ", ".join(option_text(o) for o in options[:8]) + (", ..." if len(options) > 8 else "")
            raise SpecError(
                f"expected the default to be one of the options ({shown}), got {describe(given)}",
                location=m.loc_of("default"),
                path=f"{path}.default",
            )
        default = options.index(wanted)
    when = None
    if "when" in m:
        when = parse_value(m["when"], m.loc_of("when"), f"{path}.when")
    name = f.name or _given_name(m, path) or f.positions[0].set_path
    return ChoicePoint(name, "input", options, locs, default, m.loc, tuple(f.positions), None, when)


def _given_name(m: YMap, path: str) -> str | None:
    """A choice's own ``name`` (what tables and ``--set`` call it), or None."""
    if "name" not in m:
        return None
    return check_name(m["name"], m.loc_of("name"), f"{path}.name", "choice name")


def _choice_inside(node: object) -> YMap | None:
    """A choice mapping anywhere inside ``node`` (a block), or None."""
    if isinstance(node, YMap):
        if _choice_like(node) or document.is_block_choice(node):
            return node
        values = node.values()
    elif isinstance(node, YList):
        values = node
    else:
        return None
    for v in values:
        found = _choice_inside(v)
        if found is not None:
            return found
    return None


def _parse_choice(f: _Found) -> ChoicePoint:
    """A choice mapping, read by popping its known keys and refusing the rest."""
    if f.block:
        return _parse_block_choice(f)
    if f.input:
        return _parse_input_choice(f)
    m = f.choice
    first = f.positions[0]
    path = first.spec_path
    kinds = [k for k in ("choice", "range") if k in m]
    unknown = [k for k in m if k not in CHOICE_KEYS]
    if unknown:
        key = unknown[0]
        hint = did_you_mean(key, CHOICE_KEYS)
        if not kinds and not hint:
            raise SpecError(
                "expected a number, a name, an expression or a choice ({choice: [...]} or {range: [from, to, step]}), "
                f"got a mapping with the key{'s' if len(m) > 1 else ''} {', '.join(map(str, m))}",
                location=m.loc,
                path=path,
            )
        raise SpecError(
            f"unknown key '{key}' in a choice{hint}; allowed: {', '.join(CHOICE_KEYS)}",
            location=m.key_locs.get(key, m.loc),
            path=f"{path}.{key}",
        )
    if len(kinds) != 1:
        got = "both" if kinds else "neither"
        raise SpecError(
            f"expected a choice with one of the keys 'choice' (a list of options) or 'range' ([from, to, step]), "
            f"got {got}",
            location=m.loc,
            path=path,
        )
    kind = kinds[0]
    raw = m[kind]
    loc = m.loc_of(kind)
    if kind == "choice":
        options, locs = _options(raw, loc, f"{path}.choice", null=all(p.null for p in f.positions))
    else:
        options, locs = _range(raw, loc, f"{path}.range")
    default = 0
    if "default" in m:
        given = m["default"]
        wanted = option_key(plain(given))
        matches = [i for i, o in enumerate(options) if option_key(o) == wanted]
        if not matches:
            shown = ", ".join(option_text(o) for o in options[:8]) + (", ..." if len(options) > 8 else "")
            raise SpecError(
                f"expected the default to be one of the options ({shown}), got {describe(plain(given))}",
                location=m.loc_of("default"),
                path=f"{path}.default",
            )
        default = matches[0]
    when = None
    if "when" in m:
        w = m["when"]
        if isinstance(w, (YMap, YList)) or w is None:
            raise SpecError(
                f"expected a condition (an expression of the variables), got {scalar_type_name(w)}",
                location=m.loc_of("when"),
                path=f"{path}.when",
            )
        when = parse_value(w, m.loc_of("when"), f"{path}.when")
    name = f.name or _given_name(m, path) or first.set_path
    positions = tuple(f.positions)
    return ChoicePoint(name, kind, options, locs, default, m.loc, positions, f.variable, when)


def _options(raw: object, loc: Location, path: str, *, null: bool = False) -> tuple[tuple, tuple]:
    """The options of ``{choice: [...]}``; ``null``: the choice stands where a value may be null
    (every place of it), so ``null`` is an option too."""
    if not isinstance(raw, YList) or not raw:
        got = "an empty list" if isinstance(raw, YList) else scalar_type_name(raw)
        raise SpecError(f"expected a list of one or more options, got {got}", location=loc, path=path)
    if len(raw) > MAX_OPTIONS:
        raise SpecError(f"expected at most {MAX_OPTIONS:,} options, got {len(raw):,}", location=loc, path=path)
    options = []
    for i, item in enumerate(raw):
        where = {"location": raw.loc_of(i), "path": f"{path}[{i}]"}
        if isinstance(item, YList):
            if any(isinstance(x, (YMap, YList)) or x is None for x in item) or not item:
                held = " (got a list that holds null: a list holds values)" if None in item else ""
                raise SpecError(f"expected an option that is a value or a list of values{held}", **where)
            options.append(tuple(item))
        elif isinstance(item, YMap):
            what = "a choice inside a choice"
            raise SpecError(f"expected an option that is a number, true, false or an expression, got {what}", **where)
        elif item is None and not null:
            raise SpecError(
                "expected an option that is a number, true, false or an expression, got null (null is an option "
                "only where a value may be null: a template argument, a parameter's default or an op's optional "
                "attribute)",
                **where,
            )
        else:
            options.append(item)
    for i, o in enumerate(options):  # the rule of every number of a spec (nasdsl/numbers.py)
        if not all(number_ok(x) for x in (o if isinstance(o, tuple) else (o,))):
            raise SpecError(
                f"expected options that are finite numbers of magnitude at most 2^53, got {option_text(o)}",
                location=raw.loc_of(i),
                path=f"{path}[{i}]",
            )
    seen: set[object] = set()
    for i, o in enumerate(options):  # one pass, by key: each option against every earlier one was quadratic
        key = option_key(o)
        if key in seen:
            raise SpecError(f"option {option_text(o)} is given twice", location=raw.loc_of(i), path=f"{path}[{i}]")
        seen.add(key)
    return tuple(options), tuple(raw.loc_of(i) for i in range(len(raw)))


def _range(raw: object, loc: Location, path: str) -> tuple[tuple, tuple]:
    ok = isinstance(raw, YList) and len(raw) in (2, 3)
    ok = ok and all(isinstance(x, int) and not isinstance(x, bool) for x in raw)
    if not ok:
        got = f"a list of {len(raw)}" if isinstance(raw, YList) else scalar_type_name(raw)
        raise SpecError(
            f"expected [from, to] or [from, to, step], integers (to included), got {got}", location=loc, path=path
        )
    start, stop, step = (*raw, 1) if len(raw) == 2 else raw
    if step < 1:
        raise SpecError(f"expected a step > 0, got {step}", location=raw.loc_of(2), path=f"{path}[2]")
    if stop < start:
        raise SpecError(f"expected to >= from ({start}), got {stop}", location=raw.loc_of(1), path=f"{path}[1]")
    n = (stop - start) // step + 1
    if n > MAX_OPTIONS:
        raise SpecError(f"expected at most {MAX_OPTIONS:,} options, got {n:,}", location=loc, path=path)
    values = tuple(range(start, stop + 1, step))
    return values, (loc,) * len(values)


# ---------------------------------------------------------------------------
# Helpers


def option_key(v: object) -> object:
    """What makes options equal, as a hashable key: the kind (booleans are not numbers, an
    expression is text without its surrounding spaces, a list its items) and the value
    (``1`` and ``1.0`` are one number)."""
    if isinstance(v, (list, tuple)):
        return ("list", tuple(option_key(x) for x in v))
    if isinstance(v, bool):
        return ("bool", v)
    if isinstance(v, str):
        return ("text", v.strip())
    if v is None:
        return ("null",)
    return ("number", v)


def same_option(a: object, b: object) -> bool:
    """Equal options: the same kind (booleans are not numbers) and value."""
    return option_key(a) == option_key(b)


def plain(v: object) -> object:
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    return v


def option_text(v: object) -> str:
    """An option as a ``--set`` value writes it."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(option_text(x) for x in v) + "]"
    if isinstance(v, float):
        return repr(v)
    return str(v)


def _option_yaml(option: object, loc: Location) -> object:
    """An option as the document holds it: a block (already a document's copy) as it is."""
    return option if isinstance(option, (YMap, YList)) else document.to_yaml(option, loc)


def substitute(node: object, keys: tuple, chosen: Mapping[tuple, tuple[object, Location]], *, top=False) -> object:
    """A copy of ``node`` (at ``keys``) with the chosen options in place of the choices."""
    if isinstance(node, YMap):
        m = document.new_map(node.loc)
        for k, v in node.items():
            if top and k == CONSTRAINTS:
                continue
            here = (*keys, k)
            if here in chosen:
                option, loc = chosen[here]
                placed = _option_yaml(option, loc)
                if isinstance(option, YMap):  # a block chosen: the value its `from` chooses, in its place
                    placed = substitute(placed, here, chosen)
                document.put(m, k, placed, node.key_locs.get(k, loc), loc)
            else:
                document.put(m, k, substitute(v, here, chosen), node.key_locs.get(k, node.loc), node.loc_of(k))
        return m
    if isinstance(node, YList):
        lst = YList(node.loc)
        locs = []
        for i, v in enumerate(node):
            here = (*keys, i)
            if here in chosen:
                option, loc = chosen[here]
                placed = _option_yaml(option, loc)
                lst.append(substitute(placed, here, chosen) if isinstance(option, YMap) else placed)
                locs.append(loc)
            else:
                lst.append(substitute(v, here, chosen))
                locs.append(node.loc_of(i))
        lst.item_locs = locs
        return lst
    return node


__all__ = [
    "CHOICE_KEYS",
    "CONSTRAINTS",
    "MAX_OPTIONS",
    "ChoicePoint",
    "Constraint",
    "Position",
    "constraints",
    "find_choices",
    "option_key",
    "option_text",
    "plain",
    "same_option",
    "substitute",
]
