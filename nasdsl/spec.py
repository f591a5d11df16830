"""Parse a loaded YAML tree into the spec's data model (frozen dataclasses).

Parsing pops every key it knows and reports the leftovers with the allowed
keys and a did-you-mean. Every object remembers its :class:`Location` and its
key path (``templates.Inception.body.branch2[1].args[0]``). Values that may be
expressions stay unevaluated here (:class:`Value`); :mod:`nasdsl.build`
evaluates them when it expands templates.

The language itself is documented in ``docs/spec-language.md``.
"""

from __future__ import annotations

import contextlib
import difflib
import keyword
import math
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TypeVar

from nasdsl import expr as ex
from nasdsl.errors import ErrorList, Location, NasdslError, SpecError
from nasdsl.loader import YList, YMap, scalar_type_name
from nasdsl.ops import INIT_PARAMS, MERGE_OPS, OPS, SPEC_OPS, describe

#: Keys that give a block its kind; they cannot name children of a sequence.
BLOCK_KEYS = ("op", "use", "ref", "seq", "repeat", *MERGE_OPS)
#: Keys that every block may carry besides its own.
COMMON_KEYS = ("phase", "when", "doc", "from")
#: The name a reference (or a ``from``) gives the input of the enclosing template body or model.
INPUT_REF = "in"
#: Keys of a named sequence that look like a merge but are none, and the merge meant. With a
#: list or a sequence as value such a key is refused: ``cat: [a, b]`` would be read as a
#: sequence of a and b, silently (see docs/spec-language.md, "No silent misreading").
MERGE_LOOKALIKES = {
    "cat": "concat",
    "concatenate": "concat",
    "sum": "add",
    "plus": "add",
    "multiply": "mul",
    "product": "mul",
    "prod": "mul",
    "times": "mul",
    "average": "mean",
    "avg": "mean",
    "max": None,
    "maximum": None,
    "min": None,
    "minimum": None,
}
PHASES = ("both", "train", "eval")
#: Keys that place a new entry of an extending document (see nasdsl/document.py).
PLACEMENT_KEYS = ("before", "after")
TOP_KEYS = ("nasdsl", "name", "doc", "extends", "input", "variables", "init", "templates", "model", "outputs")
#: whether the model returns its outputs by name even when it has one (torchvision's segmentation models)
TOP_KEYS += ("outputs_by_name",)
#: the evaluation section, which nasdsl/api.py takes out of the document before parsing (nasdsl/evaluation.py)
TOP_KEYS += ("evaluation",)
LANGUAGE_VERSION = 1
T = TypeVar("T")
#: The longest name of a block, template, parameter or variable.
MAX_NAME = 64


# ---------------------------------------------------------------------------
# Values


@dataclass(frozen=True)
class Value:
    """A spec value as written: a literal, an expression, or a list of values."""

    raw: object
    loc: Location
    path: str
    expr: ex.Expr | None = None
    items: tuple[Value, ...] | None = None

    @property
    def names(self) -> frozenset[str]:
        if self.expr is not None:
            return self.expr.names
        if self.items is not None:
            return frozenset().union(*(i.names for i in self.items))
        return frozenset()

    def evaluate(self, env: dict[str, object], literals: Iterable[str] = ()) -> object:
        """The value in ``env``; bare words in ``literals`` stand for themselves."""
        if self.items is not None:
            return [i.evaluate(env, literals) for i in self.items]
        if self.expr is None:
            return self.raw
        if self.raw in literals and self.raw not in env:
            return self.raw
        if self.expr.bare_name is not None and env.get(self.expr.bare_name, 0) is None:
            return None  # a parameter that is null here (not given): only a bare name passes it on
        if isinstance(env.get(self.raw), (list, tuple)):
            return list(env[self.raw])  # a bare name bound to a pair, e.g. a template's kernel [1, 7]
        try:
            return self.expr.evaluate(env)
        except ex.ExprError as e:
            error = SpecError(e.message, location=self.loc.shifted(e.offset), path=self.path)
            error.needs_section = getattr(e, "needs_section", None)  # type: ignore[attr-defined]
            raise error from None


def parse_value(raw: object, loc: Location, path: str, *, null: bool = False) -> Value:
    """A value as written. ``null`` (a template argument, a parameter's default or an op's
    attribute, not an item of a list) may be null: the parameter then gives no value, and an op
    attribute it reaches, or that is null itself, is not given (see
    :meth:`nasdsl.build._Builder._attrs`)."""
    if null and raw is None:
        return Value(None, loc, path)
    if isinstance(raw, YList):
        items = tuple(parse_value(v, raw.loc_of(i), f"{path}[{i}]") for i, v in enumerate(raw))
        return Value(None, loc, path, items=items)
    if isinstance(raw, YMap):
        raise SpecError("expected a number, a name or an expression, got a mapping", location=loc, path=path)
    if isinstance(raw, str):
        try:
            return Value(raw, loc, path, expr=ex.parse(raw))
        except ex.ExprError as e:
            raise SpecError(e.message, location=loc.shifted(e.offset), path=path) from None
    if raw is None:
        raise SpecError("expected a value, got null", location=loc, path=path)
    return Value(raw, loc, path)


# ---------------------------------------------------------------------------
# Blocks: the body of a model or template, before expansion


@dataclass(frozen=True)
class Block:
    loc: Location
    path: str
    phase: str = "both"
    when: Value | None = None
    #: ``from:``: the block whose output this one reads instead of the one before it
    source: str | None = None
    source_loc: Location | None = None
    #: ``from: [a, b]``: the values a use of a template with several inputs (or a repeat that names
    #: its ``previous`` values, or a merge) reads, in order; ``()`` otherwise
    sources: tuple[str, ...] = ()
    #: where each of ``sources`` is written
    sources_locs: tuple[Location, ...] = ()


@dataclass(frozen=True)
class InitRule:
    """How to initialise one parameter: a scheme name and its arguments (numbers; ``mode``
    and ``nonlinearity``, of the kaiming schemes and ``fan_uniform``, are words)."""

    scheme: str
    args: tuple[tuple[str, float | str], ...] = ()
    loc: Location | None = None


@dataclass(frozen=True)
class OpBlock(Block):
    op: str = ""
    attrs: tuple[tuple[str, Value], ...] = ()
    #: the block's own ``init`` rules (parameter name, rule), which replace the spec's for its op
    init: tuple[tuple[str, InitRule], ...] = ()


@dataclass(frozen=True)
class UseBlock(Block):
    template: str = ""
    #: (parameter name or None for positional, value)
    args: tuple[tuple[str | None, Value], ...] = ()
    #: where the template's name is written (the value of ``use``, or the block itself)
    template_loc: Location | None = None
    #: where ``args`` is written (None: no ``args`` key)
    args_loc: Location | None = None


@dataclass(frozen=True)
class SeqBlock(Block):
    #: (child name, block); names are "0", "1", ... for a list
    items: tuple[tuple[str, Block], ...] = ()
    named: bool = False


@dataclass(frozen=True)
class MergeBlock(Block):
    op: str = "concat"
    branches: tuple[tuple[str, Block], ...] = ()
    named: bool = False
    #: the merge op's attributes (concat's ``axis``), as an op block's
    attrs: tuple[tuple[str, Value], ...] = ()
    #: ``index: {j: [a, b, c]}``: in each branch, ``j`` is the position in that list of the value
    #: the branch reads (a DARTS node's op is strided where it reads a cell input); None: no index
    index: tuple[str, tuple[str, ...]] | None = None
    index_loc: Location | None = None


@dataclass(frozen=True)
class RepeatBlock(Block):
    """``{repeat: COUNT, block: BLOCK}``: BLOCK COUNT times in sequence, with the index bound."""

    count: Value | None = None
    body: Block | None = None
    #: the name the index has in expressions (``i`` unless ``index:`` says otherwise)
    index: str = "i"
    #: the children's names: literal text and expressions of the index (``denselayer{i + 1}``), or () for 0, 1, ...
    names: tuple[str | Value, ...] = ()
    #: ``flat: true``: the iterations' items become items of the enclosing list
    flat: bool = False
    #: ``previous: [p2, p1]``: names that the block reads the outputs of the repetitions before it by
    #: (the last name the one just before), the repeat's inputs before the first
    previous: tuple[str, ...] = ()


@dataclass(frozen=True)
class RefBlock(Block):
    target: str = ""
    #: where the target's name is written
    target_loc: Location | None = None


# ---------------------------------------------------------------------------
# The spec


@dataclass(frozen=True)
class Param:
    name: str
    default: Value | None
    loc: Location


@dataclass(frozen=True)
class Template:
    name: str
    params: tuple[Param, ...]
    body: Block
    loc: Location
    doc: str = ""
    #: the entries of the body in the order the class builds them (its state_dict's order), where
    #: that is not the order they run in; the others follow in theirs
    build_order: tuple[str, ...] = ()
    #: ``inputs: [s0, s1]``: the names of a template's inputs, where it reads several; ``()``: one input
    inputs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Output:
    name: str
    source: str
    source_loc: Location
    head: Block | None
    loss_weight: Value | None
    training_only: bool
    when: Value | None
    loc: Location
    path: str


INIT_SCHEMES = {
    "default": (),
    "constant": ("value",),
    "zeros": (),
    "ones": (),
    "normal": ("mean", "std"),
    "trunc_normal": ("mean", "std", "a", "b"),
    "uniform": ("a", "b"),
    "xavier_uniform": ("gain",),
    "xavier_normal": ("gain",),
    "xavier_caffe": (),
    "kaiming_normal": ("mode", "nonlinearity"),
    "kaiming_uniform": ("mode", "nonlinearity"),
    "fan_uniform": ("mode", "scale"),
    "fan_trunc_normal": ("mode", "scale"),
}
#: the arguments of an init scheme that are words, and the words each takes (the first is the default)
INIT_WORDS = {
    "mode": ("fan_out", "fan_in"),
    "nonlinearity": ("relu", "leaky_relu", "linear", "sigmoid", "tanh"),
}
#: the ops whose parameters ``init`` can set, and those parameters (from the op registry)
INIT_OPS = INIT_PARAMS


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: Value
    mean: Value | None
    std: Value | None
    loc: Location
    #: what the input holds (channel order, value range), for the generated class's docstring
    doc: str = ""
    #: the role of each axis (``CHW``, ``CTHW``, ``LC``; see nasdsl.ir.types.AXES), or None for the default
    axes: str | None = None


@dataclass(frozen=True)
class Spec:
    name: str
    doc: str
    file: str
    input: InputSpec
    variables: tuple[tuple[str, Value], ...]
    init: dict[str, dict[str, InitRule]]
    templates: dict[str, Template]
    model: SeqBlock
    outputs: tuple[Output, ...]
    sha256: str = ""
    files: tuple[str, ...] = field(default=())
    #: the ``evaluation`` section (a nasdsl.evaluation.Evaluation; None when the spec has none)
    evaluation: object = None
    #: ``outputs_by_name``: the model returns its outputs as a NamedTuple even when it has one
    outputs_by_name: bool = False
    #: where ``name`` is written (None for a spec without one, or made in code)
    name_loc: Location | None = None

    def template(self, name: str) -> Template | None:
        return self.templates.get(name)

    def blocks(self) -> dict[str, Block]:
        """Every block of the model, the templates' bodies and the outputs' heads, by key path
        (``model.inception4a``, ``templates.Inception.body.b2``)."""
        out: dict[str, Block] = {}
        stack: list[Block] = [self.model, *(t.body for t in self.templates.values())]
        stack += [o.head for o in self.outputs if o.head is not None]
        while stack:
            b = stack.pop()
            out[b.path] = b
            if isinstance(b, SeqBlock):
                stack.extend(child for _, child in b.items)
            elif isinstance(b, MergeBlock):
                stack.extend(child for _, child in b.branches)
            elif isinstance(b, RepeatBlock) and b.body is not None:
                stack.append(b.body)
        return out


# ---------------------------------------------------------------------------
# Helpers in the torchgen manner: pop what you know, refuse the rest


#: the longest word a did-you-mean is looked for (longer ones are not typos of a name)
MAX_SUGGESTED = 100


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest option, or ``""``. Only options of about the
    word's length are compared, so that the cost stays small against tens of thousands."""
    if len(word) > MAX_SUGGESTED:
        return ""
    slack = max(3, len(word) // 3)
    options = [o for o in options if abs(len(o) - len(word)) <= slack]
    # 0.7, not difflib's 0.6: at 0.6 a word shares half its letters with a suggestion that means
    # nothing to the writer ('Nope' drew 'opaque'); every typo the docs show scores 0.75 or more
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.7)
    return f" (did you mean '{close[0]}'?)" if close else ""


#: the longest list of allowed names written on the error's own line (a longer one gets a line of its own)
ALLOWED_INLINE = 160


def allowed_after(names: Iterable[str]) -> str:
    """``; allowed: a, b`` after an error's message, or on an indented line of its own where the list
    is long (the registry's ops with parameters), so that the first line stays readable."""
    joined = ", ".join(names)
    return f"; allowed: {joined}" if len(joined) <= ALLOWED_INLINE else f"\n  allowed: {joined}"


#: where unknown keys go while :func:`deferring_unknown_keys` is active (else they are raised)
_DEFERRED: ContextVar[list[NasdslError] | None] = ContextVar("nasdsl_deferred_errors", default=None)


def refuse_leftovers(m: YMap, allowed: Iterable[str], path: str, what: str, *, deferrable: bool = True) -> None:
    """Refuse every key of ``m`` (the keys left after the known ones were popped), each with
    the allowed keys and a did-you-mean. Under :func:`deferring_unknown_keys` they are
    recorded instead and parsing goes on without them (unless not ``deferrable``)."""
    allowed = list(allowed)
    errors: list[NasdslError] = []
    for key in m:
        hint = did_you_mean(key, allowed)
        if key in PLACEMENT_KEYS and key not in allowed:
            hint = f" ('{key}' places an entry only in a model or outputs section of a document that extends another)"
        error = SpecError(
            f"unknown key '{key}' in {what}{hint}; allowed: {', '.join(allowed)}",
            location=m.key_locs.get(key, m.loc),
            path=join(path, key),
        )
        error.ignored_key = key  # type: ignore[attr-defined]
        errors.append(error)
    deferred = _DEFERRED.get() if deferrable else None
    if deferred is not None:
        for e in errors:
            e.ignored_in = path  # the block parsed without this key (see ``follows_from_ignored``)
        deferred.extend(errors)
        return
    raise_errors(errors)


def follows_from_ignored(e: NasdslError, deferred: Iterable[NasdslError]) -> bool:
    """Whether ``e`` is about a block that was parsed without one of its (unknown) keys: such
    an error may only follow from the ignored key (``kernal: 3`` gives "missing attribute
    kernel"), and is not reported beside it. So is an unknown template or name where the spec's
    ``templates`` or ``variables`` section was ignored under a misspelt key (``template:``)."""
    blocks = {getattr(d, "ignored_in", None) for d in deferred}
    section = getattr(e, "needs_section", None)
    if section is not None:
        misspelt = (getattr(d, "ignored_key", "") for d in deferred if getattr(d, "ignored_in", None) == "")
        if any(did_you_mean(key, [section]) for key in misspelt):
            return True
    return e.path is not None and e.path in blocks


@contextlib.contextmanager
def deferring_unknown_keys() -> Iterator[list[NasdslError]]:
    """Collect the unknown keys that parsing finds in the list this yields instead of raising
    them: an unknown key is ignored, the rest of its entry is parsed, and the errors the
    build finds later (an unknown template, a bad reference) are reported in the same run.
    The caller must raise what the list holds (``nasdsl.api`` does, with every other error)."""
    found: list[NasdslError] = []
    token = _DEFERRED.set(found)
    try:
        yield found
    finally:
        _DEFERRED.reset(token)


def defer(errors: list[NasdslError]) -> None:
    """Record ``errors`` under :func:`deferring_unknown_keys`, or raise them at once."""
    deferred = _DEFERRED.get()
    if deferred is not None:
        deferred.extend(errors)
    else:
        raise_errors(errors)


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def expect_map(v: object, loc: Location, path: str, what: str = "a mapping") -> YMap:
    if not isinstance(v, YMap):
        raise SpecError(f"expected {what}, got {scalar_type_name(v)}", location=loc, path=path)
    return v


def expect_str(v: object, loc: Location, path: str) -> str:
    if not isinstance(v, str):
        raise SpecError(f"expected a string, got {scalar_type_name(v)}", location=loc, path=path)
    return v


def _a(what: str) -> str:
    """``what`` with its indefinite article: "an input name", "a block name"."""
    return f"{'an' if what[:1] in 'aeiou' else 'a'} {what}"


def check_name(name: object, loc: Location, path: str, what: str = "name") -> str:
    """A name that will become a Python attribute, an ONNX node name, a class name."""
    if not isinstance(name, str):
        raise SpecError(f"expected {_a(what)}, got {scalar_type_name(name)}", location=loc, path=path)
    if not ex.is_identifier(name):
        raise SpecError(
            f"expected {_a(what)} of letters, digits and '_' that does not start with a digit, got {describe(name)}",
            location=loc,
            path=path,
        )
    if len(name) > MAX_NAME:
        raise SpecError(
            f"expected {_a(what)} of at most {MAX_NAME} characters, got {len(name)} characters",
            location=loc,
            path=path,
        )
    if keyword.iskeyword(name) or name.startswith("__"):
        raise SpecError(
            f"expected {_a(what)} that Python does not reserve, got {describe(name)}", location=loc, path=path
        )
    return name


def check_dotted_name(name: str, loc: Location, path: str) -> str:
    """A node name such as ``inception4a`` or ``inception4a.branch2.0``."""
    if len(name) > 8 * MAX_NAME:
        raise SpecError(
            f"expected a node name of at most {8 * MAX_NAME} characters, got {len(name)} characters",
            location=loc,
            path=path,
        )
    for part in name.split("."):
        if not part.isdigit():
            check_name(part, loc, path, "node name")
    return name


class _Pop:
    """Pop keys from a copy of a mapping; ``done`` reports what is left."""

    def __init__(self, m: YMap, path: str):
        self.m = m
        self.left = YMap(m.loc)
        self.left.update(m)
        self.left.key_locs, self.left.value_locs = m.key_locs, m.value_locs
        self.path = path

    def has(self, key: str) -> bool:
        return key in self.left

    def get(self, key: str, default: object = None) -> object:
        return self.left.pop(key, default)

    def loc(self, key: str) -> Location:
        return self.m.loc_of(key)

    def done(self, allowed: Iterable[str], what: str) -> None:
        refuse_leftovers(self.left, allowed, self.path, what)

    def require(self, key: str, missing: str, location: Location, allowed: Iterable[str], what: str) -> None:
        """Refuse the mapping when it lacks ``key`` (``missing`` says what the key holds): by its
        unknown keys where it has some, with their did-you-mean (``blok`` for ``block``: the
        typo, not the missing key, is what the author must fix), else as missing."""
        if key in self.left:
            return
        allowed = list(allowed)
        unknown = YMap(self.m.loc)
        unknown.update({k: v for k, v in self.left.items() if k not in allowed})
        unknown.key_locs = self.m.key_locs
        if unknown:
            refuse_leftovers(unknown, allowed, self.path, what, deferrable=False)
        raise SpecError(f"missing key '{key}': {missing}", location=location, path=join(self.path, key))


# ---------------------------------------------------------------------------
# Blocks


def parse_block(raw: object, loc: Location, path: str) -> Block:
    """Parse one block: a string (op without attributes), a list (sequence),
    or a mapping (an op, a template use, a merge, a reference or a named sequence)."""
    if isinstance(raw, str):
        if raw in SPEC_OPS:
            return OpBlock(loc, path, op=raw)
        return UseBlock(loc, path, template=check_name(raw, loc, path, "op or template name"), template_loc=loc)
    if isinstance(raw, YList):
        if not raw:
            raise SpecError("expected at least one block in a sequence, got an empty list", location=loc, path=path)
        items, errors = [], []
        for i, v in enumerate(raw):
            try:
                items.append((str(i), parse_block(v, raw.loc_of(i), join(path, i))))
            except NasdslError as e:
                errors.extend(flatten(e))
        raise_errors(errors)
        return SeqBlock(loc, path, items=tuple(items), named=False)
    if not isinstance(raw, YMap):
        raise SpecError(
            f"expected a block (an op name, a list or a mapping), got {scalar_type_name(raw)}",
            location=loc,
            path=path,
        )
    kind = block_kind(raw, path)
    if kind is None:
        return _parse_named_seq(raw, loc, path)
    p = _Pop(raw, path)
    phase, when, source, source_loc, (sources, sources_locs) = _common(p)
    common = {
        "phase": phase,
        "when": when,
        "source": source,
        "source_loc": source_loc,
        "sources": sources,
        "sources_locs": sources_locs,
    }
    if sources and when is not None:
        raise SpecError(
            "expected no 'when' on a block that reads several values ('from' a list): switched off, it "
            "would have no one value to pass on",
            location=p.loc("when"),
            path=join(path, "when"),
        )
    if sources and kind not in ("use", "repeat", *MERGE_OPS):
        raise SpecError(
            "expected one name after 'from': a list of values is read only by a use of a template with "
            "several inputs, a repeat that names them ('previous') or a merge (one value a branch), "
            f"not by {_a(kind)} block",
            location=source_loc,
            path=join(path, "from"),
        )
    if kind == "op":
        op_loc = p.loc("op")
        op = p.get("op")
        if not isinstance(op, str) or op not in SPEC_OPS or OPS[op].merge:
            shown = op if isinstance(op, str) else scalar_type_name(op)
            hint = f" ('{shown}' is a merge: write {{{shown}: [branches]}})" if shown in MERGE_OPS else ""
            choices = [o for o in SPEC_OPS if not OPS[o].merge]
            raise SpecError(
                f"unknown op '{shown}'{hint or did_you_mean(str(op), choices)}", location=op_loc, path=join(path, "op")
            )
        attrs = []
        known = OPS[op].attr_index
        for key in list(p.left):
            if key not in known:
                continue
            attrs.append((key, parse_value(p.get(key), p.loc(key), join(path, key), null=True)))
        init = _parse_block_init(p, op, path)
        p.done(*block_keys("op", raw))
        return OpBlock(loc, path, **common, op=op, attrs=tuple(attrs), init=init)
    if kind == "use":
        use_loc = p.loc("use")
        name = check_name(p.get("use"), use_loc, join(path, "use"), "template name")
        args_loc = p.loc("args") if p.has("args") else None
        args = _parse_args(p.get("args"), args_loc or loc, join(path, "args"))
        _refuse_entry_beside(kind, p.left, loc, path)
        p.done(*block_keys("use", raw))
        return UseBlock(loc, path, **common, template=name, args=args, template_loc=use_loc, args_loc=args_loc)
    if kind == "ref":
        target_loc = p.loc("ref")
        target = block_path(p.get("ref"), target_loc, join(path, "ref"))
        _refuse_entry_beside(kind, p.left, loc, path)
        p.done(*block_keys("ref", raw))
        return RefBlock(loc, path, **common, target=target, target_loc=target_loc)
    if kind == "seq":
        items_loc = p.loc("seq")
        body = p.get("seq")
        _refuse_entry_beside(kind, p.left, loc, path)
        p.done(*block_keys("seq", raw))
        if isinstance(body, YMap) and not any(k in body for k in BLOCK_KEYS):
            inner = _parse_named_seq(body, items_loc, path)
        elif isinstance(body, YList):
            inner = parse_block(body, items_loc, path)
        else:
            raise SpecError(
                f"expected a list or a mapping of named blocks after 'seq', got {scalar_type_name(body)}",
                location=items_loc,
                path=join(path, "seq"),
            )
        return SeqBlock(loc, path, **common, items=inner.items, named=inner.named)
    if kind == "repeat":
        return _parse_repeat(p, loc, path, common)
    branches_raw = p.get(kind)
    bloc = p.loc(kind)
    known = OPS[kind].attr_index
    attrs = tuple(
        (key, parse_value(p.get(key), p.loc(key), join(path, key), null=True)) for key in list(p.left) if key in known
    )
    index = index_loc = None
    if p.has("index"):
        index_loc = p.loc("index")
        index = _parse_merge_index(p.get("index"), index_loc, join(path, "index"))
    _refuse_entry_beside(kind, p.left, loc, path)
    p.done(*block_keys(kind, raw))
    if isinstance(branches_raw, YList):
        if len(branches_raw) < 2:
            raise SpecError(
                f"expected at least two branches to {kind}, got {len(branches_raw)}",
                location=bloc,
                path=join(path, kind),
            )
        branches = tuple(
            (str(i), parse_block(v, branches_raw.loc_of(i), join(path, i))) for i, v in enumerate(branches_raw)
        )
        _check_merge_sources(common, branches, path)
        return MergeBlock(
            loc, path, **common, op=kind, branches=branches, named=False, attrs=attrs, index=index, index_loc=index_loc
        )
    m = expect_map(branches_raw, bloc, join(path, kind), "a list or mapping of branches")
    if len(m) < 2:
        raise SpecError(f"expected at least two branches to {kind}, got {len(m)}", location=bloc, path=join(path, kind))
    branches = tuple(
        (check_name(k, m.key_locs[k], join(path, k), "branch name"), parse_block(v, m.loc_of(k), join(path, k)))
        for k, v in m.items()
    )
    _check_merge_sources(common, branches, path)
    return MergeBlock(
        loc, path, **common, op=kind, branches=branches, named=True, attrs=attrs, index=index, index_loc=index_loc
    )


def _check_merge_sources(common: dict, branches: tuple[tuple[str, Block], ...], path: str) -> None:
    """A merge's ``from: [a, b]`` gives each branch one value: as many values as branches, and no
    branch with a ``from`` of its own."""
    sources = common["sources"]
    if not sources:
        return
    if len(sources) != len(branches):
        raise SpecError(
            f"expected one value after 'from' for each of the {len(branches)} branches, got {len(sources)}",
            location=common["source_loc"],
            path=join(path, "from"),
        )
    for name, b in branches:
        if b.source is not None or b.sources:
            raise SpecError(
                f"branch '{name}' has a 'from' of its own beside the merge's list: give it on one of them",
                location=b.source_loc or b.loc,
                path=join(b.path, "from"),
            )


def _parse_merge_index(raw: object, loc: Location, path: str) -> tuple[str, tuple[str, ...]]:
    """``index: {j: [a, b, c]}``: one name and the values whose positions it takes."""
    if not isinstance(raw, YMap) or len(raw) != 1:
        got = f"a mapping of {len(raw)} keys" if isinstance(raw, YMap) else scalar_type_name(raw)
        raise SpecError(f"expected {{name: [values...]}} after 'index', got {got}", location=loc, path=path)
    ((name, values),) = raw.items()
    check_name(name, raw.key_locs[name], join(path, name), "index name")
    if not isinstance(values, YList) or not values:
        got = "an empty list" if isinstance(values, YList) else scalar_type_name(values)
        raise SpecError(f"expected a list of values after '{name}', got {got}", location=raw.loc_of(name), path=path)
    return name, tuple(block_path(v, values.loc_of(i), join(join(path, name), i)) for i, v in enumerate(values))


def block_path(target: object, loc: Location, path: str) -> str:
    """A block's path as ``ref:`` and ``from:`` name it: dotted names and indices, or ``in``."""
    if not isinstance(target, str):
        raise SpecError(f"expected a node name, got {scalar_type_name(target)}", location=loc, path=path)
    if target == INPUT_REF:
        return target
    for part in target.split("."):
        if not part.isdigit():
            check_name(part, loc, path, "node name")
    return target


#: The names under which a generated class receives its input's size: no parameter's names.
INPUT_SIZE_NAMES = ("in_channels", "in_features")

#: The keys of the input section, of a template and of an output.
INPUT_KEYS = ("name", "shape", "axes", "mean", "std", "doc")
TEMPLATE_KEYS = ("params", "inputs", "body", "doc", "build_order")
OUTPUT_KEYS = ("from", "head", "loss_weight", "training_only", "when")

#: The most repetitions a ``repeat`` block may ask for (the node limit bounds the total anyway).
MAX_REPEAT = 10_000


def _parse_repeat(p: _Pop, loc: Location, path: str, common: dict) -> RepeatBlock:
    count = parse_value(p.get("repeat"), p.loc("repeat"), join(path, "repeat"))
    p.require("block", "the block to repeat", loc, *block_keys("repeat", p.m))
    body = parse_block(p.get("block"), p.loc("block"), join(path, "block"))
    index = "i"
    if p.has("index"):
        index = check_name(p.get("index"), p.loc("index"), join(path, "index"), "index name")
    names: tuple[str | Value, ...] = ()
    if p.has("name"):
        names = _parse_name_pattern(p.get("name"), p.loc("name"), join(path, "name"))
    flat = False
    if p.has("flat"):
        flat = p.get("flat")
        if not isinstance(flat, bool):
            raise SpecError(
                f"expected true or false, got {scalar_type_name(flat)}", location=p.loc("flat"), path=join(path, "flat")
            )
        if flat and names:
            raise SpecError(
                "expected either 'flat: true' or 'name': a flat repeat's items are numbered by the list",
                location=p.loc("flat"),
                path=join(path, "flat"),
            )
    previous: tuple[str, ...] = ()
    if p.has("previous"):
        previous = _parse_input_names(p.get("previous"), p.loc("previous"), join(path, "previous"), "previous")
        if index in previous:
            raise SpecError(
                f"'{index}' names both the index and a previous value",
                location=p.loc("previous"),
                path=join(path, "previous"),
            )
    if common["sources"] and not previous:
        raise SpecError(
            "expected 'previous' beside a list after 'from': the names the repeated block reads the values by",
            location=common["source_loc"],
            path=join(path, "from"),
        )
    if common["sources"] and len(common["sources"]) != len(previous):
        raise SpecError(
            f"expected as many values after 'from' as names in 'previous' ({len(previous)}), "
            f"got {len(common['sources'])}",
            location=common["source_loc"],
            path=join(path, "from"),
        )
    _refuse_entry_beside("repeat", p.left, loc, path)
    p.done(*block_keys("repeat", p.m))
    return RepeatBlock(
        loc, path, **common, count=count, body=body, index=index, names=names, flat=flat, previous=previous
    )


def _parse_input_names(raw: object, loc: Location, path: str, what: str) -> tuple[str, ...]:
    """A template's ``inputs`` or a repeat's ``previous``: two or more distinct names, none ``in``."""
    if not isinstance(raw, YList) or len(raw) < 2:
        got = f"a list of {len(raw)}" if isinstance(raw, YList) else scalar_type_name(raw)
        raise SpecError(f"expected a list of two or more names after '{what}', got {got}", location=loc, path=path)
    names: list[str] = []
    for i, item in enumerate(raw):
        iloc, ipath = raw.loc_of(i), join(path, i)
        name = check_name(item, iloc, ipath, "input name")
        if name in (INPUT_REF, "self", "x"):
            raise SpecError(f"input name '{name}' is reserved", location=iloc, path=ipath)
        if name in names:
            raise SpecError(f"duplicate input name '{name}'", location=iloc, path=ipath)
        names.append(name)
    return tuple(names)


def _parse_name_pattern(raw: object, loc: Location, path: str) -> tuple[str | Value, ...]:
    """``denselayer{i + 1}``: literal name characters and ``{expression}`` pieces."""
    text = expect_str(raw, loc, path)
    pieces: list[str | Value] = []
    at = 0
    while at < len(text):
        open_ = text.find("{", at)
        if open_ < 0:
            pieces.append(text[at:])
            break
        if open_ > at:
            pieces.append(text[at:open_])
        close = text.find("}", open_)
        if close < 0:
            raise SpecError(
                f"expected '}}' to close the '{{' at column {open_ + 1} of the name", location=loc, path=path
            )
        pieces.append(parse_value(text[open_ + 1 : close], loc.shifted(open_ + 1), path))
        at = close + 1
    for piece in pieces:
        if isinstance(piece, str) and not all(c.isascii() and (c.isalnum() or c in "_-") for c in piece):
            raise SpecError(
                f"expected letters, digits, '_', '-' and {{expressions}} in a name pattern, got {describe(text)}",
                location=loc,
                path=path,
            )
    if not any(isinstance(piece, Value) for piece in pieces):
        raise SpecError(
            f"expected a name pattern with the index in it, such as 'layer{{i}}', got {describe(text)}",
            location=loc,
            path=path,
        )
    return tuple(pieces)


def block_kind(raw: YMap, path: str) -> str | None:
    """The kind of the block a mapping is (the one key of BLOCK_KEYS it holds), or None for a
    sequence of named blocks; two such keys are an error."""
    kinds = [k for k in BLOCK_KEYS if k in raw]
    if len(kinds) > 1:
        raise SpecError(
            f"expected one of the keys {', '.join(BLOCK_KEYS)} in a block, got {' and '.join(kinds)}",
            location=raw.key_locs[kinds[1]],
            path=path,
        )
    return kinds[0] if kinds else None


#: the keys of a block of each kind besides COMMON_KEYS (an op's are its attributes, a merge's its
#: attributes and ``index``), and what messages call the block
_KIND_KEYS = {
    "use": (("use", "args"), "template use"),
    "ref": (("ref",), "reference"),
    "seq": (("seq",), "sequence"),
    "repeat": (("repeat", "block", "index", "name", "flat", "previous"), "repeat"),
}


def block_keys(kind: str, raw: YMap) -> tuple[list[str], str]:
    """The keys a block of ``kind`` may hold (as its parser lists them in a message) and what the
    message calls the block. ``raw`` is the block (an op's keys follow from its op)."""
    if kind == "op":
        op = raw.get("op")
        if not isinstance(op, str) or op not in SPEC_OPS or OPS[op].merge:
            return [*COMMON_KEYS], "op"  # no such op: the parser says so first
        return [*OPS[op].attr_index, *COMMON_KEYS, *(("init",) if op in INIT_OPS else ())], f"op {op}"
    if kind in MERGE_OPS:
        return [kind, *OPS[kind].attr_index, *COMMON_KEYS, "index"], kind
    own, what = _KIND_KEYS[kind]
    return [*own, *COMMON_KEYS], what


def refuse_entry_beside(raw: YMap, kind: str, loc: Location, path: str) -> None:
    """Raise what the parser raises for a key of block ``raw`` (of ``kind``) that is neither a key
    of that kind nor a near miss of one: the other entries of a sequence one of whose entries is
    named after a block's key (``{conv: ..., seq: ...}`` reads as a ``seq`` block).
    :mod:`nasdsl.choices` walks a document as the parser reads it, and stops where the parser
    would; keys that are near misses are left to the parser, which reports them with the rest."""
    if kind == "op":
        return  # an op's other keys are its attributes (the parser reports unknown ones, with a did-you-mean)
    allowed = block_keys(kind, raw)[0]
    left = YMap(raw.loc)
    left.update({k: v for k, v in raw.items() if k != kind and k not in allowed})
    left.key_locs, left.value_locs = raw.key_locs, raw.value_locs
    _refuse_entry_beside(kind, left, loc, path)


def _refuse_entry_beside(kind: str, left: YMap, loc: Location, path: str) -> None:
    """A key beside the key of a block's kind (other than an op's: its keys are attributes, whose
    typos get a did-you-mean) that is no key of that kind and no near miss of one: an entry named
    after the kind (``add: ...`` or ``seq: ...`` beside ``conv1: ...``)."""
    if kind == "op" or not left or left.keys() & set(PLACEMENT_KEYS):
        return
    allowed = [k for k in block_keys(kind, left)[0] if k != kind]
    key = next(iter(left))
    if key not in allowed and did_you_mean(key, allowed) == "":
        what = f"{_a(kind)} merge" if kind in MERGE_OPS else _a(_KIND_KEYS[kind][1])
        raise SpecError(
            f"unknown key '{key}' beside '{kind}': a mapping with the key '{kind}' is {what}, "
            f"whose only other keys are {', '.join(allowed)} (a block's key cannot name an entry "
            "of a sequence: give the entry another name)",
            location=left.key_locs.get(key, loc),
            path=join(path, key),
        )


def check_entry_name(raw: YMap, key: str, path: str) -> None:
    """A key every block may carry (``when``, ``doc``, ...) names no entry of a named sequence."""
    if key in COMMON_KEYS:
        raise SpecError(
            f"'{key}' belongs to a block with one of the keys {', '.join(BLOCK_KEYS)}; "
            "this mapping is a sequence of named blocks",
            location=raw.key_locs[key],
            path=join(path, key),
        )


def _parse_named_seq(raw: YMap, loc: Location, path: str) -> SeqBlock:
    """A mapping of named blocks: every entry is parsed and all their errors raised together."""
    if not raw:
        raise SpecError("expected at least one block in a sequence, got an empty mapping", location=loc, path=path)
    items = []
    errors: list[NasdslError] = []
    for key, v in raw.items():
        try:
            _refuse_keyword_lookalike(raw, key, v, path)
            items.append((key, _parse_named_item(raw, key, v, path)))
        except NasdslError as e:
            errors.extend(flatten(e))
    raise_errors(errors)
    return SeqBlock(loc, path, items=tuple(items), named=True)


def misspelt_keyword(key: str, value: object) -> str | None:
    """The block key that ``key``, as the one key of a mapping whose value is ``value``, reads as
    with a typo: a near miss of ``op``, ``use`` or ``ref`` when the value is a name, of ``seq``
    when it is a list, that keeps the key's first letter (``opp``, ``usee``, ``sq``; ``top``
    names an entry). None where it reads as a name (the importer writes such an entry's block
    with its key)."""
    kinds = ("op", "use", "ref") if isinstance(value, str) else ("seq",) if isinstance(value, list) else ()
    lowered = key.lower()
    close = difflib.get_close_matches(lowered, [k for k in kinds if k[0] == lowered[:1]], n=1, cutoff=0.7)
    return close[0] if close else None


def _refuse_keyword_lookalike(raw: YMap, key: str, value: object, path: str) -> None:
    """A key of a named sequence that reads as a block's key with a typo is refused: the mapping
    would silently be a sequence with an entry so named. That is a block's key, or a key every
    block may carry, in other case (``Add``, ``Op``, ``When``); or the one key of its mapping,
    a near miss of ``op``, ``use`` or ``ref`` naming something, or of ``seq`` holding a list,
    with the key's first letter (``{opp: relu}``, ``{usee: Block}``, ``{sq: [...]}``)."""
    keywords = (*BLOCK_KEYS, *COMMON_KEYS)
    if key in keywords:
        return  # the block's own key, or an entry named after a common key (check_entry_name)
    lowered = key.lower()
    if lowered in keywords:
        found = f"'{key}' is the key '{lowered}' in other case (keys are case-sensitive)"
        meant = lowered
    else:
        meant = misspelt_keyword(key, value) if len(raw) == 1 else None
        if meant is None:
            return
        found = f"'{key}', the one key of this mapping, reads as '{meant}' with a typo"
    raise SpecError(
        f"{found}: the mapping would be a sequence with an entry named '{key}'; write '{meant}', "
        "or give the entry another name",
        location=raw.key_locs[key],
        path=join(path, key),
    )


def _parse_named_item(raw: YMap, key: str, v: object, path: str) -> Block:
    kloc = raw.key_locs[key]
    check_entry_name(raw, key, path)
    check_name(key, kloc, join(path, key), "block name")
    _refuse_merge_lookalike(key, v, kloc, join(path, key))
    return parse_block(v, raw.loc_of(key), join(path, key))


def _edits(a: str, b: str) -> int:
    """The typos between two words: letters added, dropped or changed, and neighbours swapped
    (the optimal string alignment distance). A merge's name close to a key by difflib and within
    one typo of it (two for words of six letters or more: ``concta``, ``ad``, ``mull``) reads as a
    typo of it; ``main`` is two from ``mean``, a name of its own."""
    d = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[len(a)][len(b)]


def _refuse_merge_lookalike(key: str, value: object, loc: Location, path: str) -> None:
    """A child of a named sequence whose name reads as a merge and whose value is several
    blocks (a list, or a mapping of named blocks) is refused: ``cat: [a, b]`` is a sequence of
    ``a`` then ``b``, not their concatenation, and a typo must not change the network silently."""
    several = isinstance(value, YList) or (isinstance(value, YMap) and not any(k in value for k in BLOCK_KEYS))
    if not several:
        return
    lowered = key.lower()
    meant = MERGE_LOOKALIKES.get(lowered, "?")
    if meant == "?":
        if lowered in MERGE_OPS:
            return
        close = [
            m
            for m in difflib.get_close_matches(lowered, MERGE_OPS, n=1, cutoff=0.75)
            if _edits(lowered, m) <= (2 if min(len(lowered), len(m)) >= 6 else 1)
        ]
        if not close:
            return
        meant = close[0]
    merges = ", ".join(MERGE_OPS)
    hint = f"did you mean the merge {{{meant}: ...}}?" if meant else f"there is no such merge; the merges are {merges}"
    raise SpecError(
        f"'{key}' names a sequence of {'these blocks' if isinstance(value, YList) else 'named blocks'}, "
        f"which reads like a merge: {hint} (to keep a sequence, give it another name, "
        f"or write {key}: {{seq: ...}})",
        location=loc,
        path=path,
    )


def flatten(e: NasdslError) -> list[NasdslError]:
    """The errors an error stands for: itself, or the members of an :class:`ErrorList`."""
    return list(e.errors) if isinstance(e, ErrorList) else [e]


def raise_errors(errors: list[NasdslError]) -> None:
    """Raise nothing, the one error, or an :class:`ErrorList` of them all (an error a template
    or a repeat makes once per use is reported once, at its first use)."""
    seen: set = set()
    unique = []
    for e in errors:
        key = (e.location, e.path) if e.location is not None else id(e)
        if key not in seen:
            seen.add(key)
            unique.append(e)
    errors = unique
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise ErrorList(errors)


def _common(p: _Pop) -> tuple[str, Value | None, str | None, Location | None, tuple[tuple, tuple]]:
    phase = "both"
    if p.has("phase"):
        ploc = p.loc("phase")
        phase = p.get("phase")
        if phase not in PHASES:
            raise SpecError(
                f"expected one of {', '.join(PHASES)}, got {describe(phase)}", location=ploc, path=join(p.path, "phase")
            )
    when = None
    if p.has("when"):
        when = parse_value(p.get("when"), p.loc("when"), join(p.path, "when"))
    if p.has("doc"):
        expect_str(p.get("doc"), p.loc("doc"), join(p.path, "doc"))
    source = source_loc = None
    sources: tuple[str, ...] = ()
    sources_locs: tuple[Location, ...] = ()
    if p.has("from"):
        source_loc = p.loc("from")
        raw = p.get("from")
        if isinstance(raw, YList):
            if len(raw) < 2:
                raise SpecError(
                    f"expected a name, or a list of two or more names, after 'from', got a list of {len(raw)}",
                    location=source_loc,
                    path=join(p.path, "from"),
                )
            sources = tuple(block_path(v, raw.loc_of(i), join(join(p.path, "from"), i)) for i, v in enumerate(raw))
            sources_locs = tuple(raw.loc_of(i) for i in range(len(raw)))
        else:
            source = block_path(raw, source_loc, join(p.path, "from"))
    return phase, when, source, source_loc, (sources, sources_locs)


def _parse_args(raw: object, loc: Location, path: str) -> tuple[tuple[str | None, Value], ...]:
    if raw is None:
        return ()
    if isinstance(raw, YList):
        return tuple((None, parse_value(v, raw.loc_of(i), join(path, i), null=True)) for i, v in enumerate(raw))
    if isinstance(raw, YMap):
        return tuple(
            (
                check_name(k, raw.key_locs[k], join(path, k), "argument name"),
                parse_value(v, raw.loc_of(k), join(path, k), null=True),
            )
            for k, v in raw.items()
        )
    return ((None, parse_value(raw, loc, join(path, 0))),)


# ---------------------------------------------------------------------------
# Sections


def parse_spec(doc: YMap, file: str, sha256: str = "", files: tuple[str, ...] = ()) -> Spec:
    """Parse a whole (already merged) spec document. Collects the errors of
    independent sections so that ``check`` can show them all."""
    errors: list[NasdslError] = []
    misspelt = [k for k in doc if k not in TOP_KEYS and did_you_mean(k, ("ensemble",))]
    if misspelt:  # an ensemble's section, misspelt: the model's missing sections are no news to its author
        k = misspelt[0]
        raise SpecError(
            f"unknown key '{k}' in a spec (did you mean 'ensemble'?)",
            location=doc.key_locs.get(k, doc.loc),
            path=k,
        )
    p = _Pop(doc, "")
    p.get("extends")

    def section(fn, *args, default=None):
        try:
            return fn(*args)
        except NasdslError as e:
            errors.extend(flatten(e))
            return default

    version = p.get("nasdsl", LANGUAGE_VERSION)
    if version != LANGUAGE_VERSION:
        errors.append(
            SpecError(
                f"expected language version {LANGUAGE_VERSION}, got {describe(version)}",
                location=doc.loc_of("nasdsl"),
                path="nasdsl",
            )
        )
    name = section(_parse_model_name, p, default="Model")
    docstr = p.get("doc", "")
    if not isinstance(docstr, str):
        errors.append(
            SpecError(f"expected a string, got {scalar_type_name(docstr)}", location=doc.loc_of("doc"), path="doc")
        )
        docstr = ""
    inp = section(_parse_input, p.get("input"), p.loc("input") if "input" in doc else doc.loc)
    variables = section(_parse_variables, p.get("variables"), doc.loc_of("variables"), default=())
    init = section(_parse_init, p.get("init"), doc.loc_of("init"), default={})
    templates = section(_parse_templates, p.get("templates"), doc.loc_of("templates"), default={})
    if "model" not in doc:
        errors.append(SpecError("missing key 'model': the network's layers", location=doc.loc, path="model"))
        model = None
    else:
        model = section(_parse_model, p.get("model"), doc.loc_of("model"))
    outputs = section(_parse_outputs, p.get("outputs"), doc.loc_of("outputs"), default=())
    by_name = p.get("outputs_by_name", False)
    if not isinstance(by_name, bool):
        errors.append(
            SpecError(
                f"expected true or false, got {describe(by_name)}",
                location=doc.loc_of("outputs_by_name"),
                path="outputs_by_name",
            )
        )
        by_name = False
    section(p.done, TOP_KEYS, "a spec")
    raise_errors(errors)
    return Spec(
        name, docstr, file, inp, variables, init, templates, model, outputs, sha256, files, outputs_by_name=by_name,
        name_loc=doc.loc_of("name") if "name" in doc else None,
    )  # fmt: skip


def _parse_model_name(p: _Pop) -> str:
    if not p.has("name"):
        raise SpecError("missing key 'name': the model's class name, e.g. GoogLeNet", location=p.m.loc, path="name")
    return check_name(p.get("name"), p.loc("name"), "name", "model name")


def _parse_input(raw: object, loc: Location) -> InputSpec:
    if raw is None:
        raise SpecError("missing key 'input': the input's shape, such as [C, H, W]", location=loc, path="input")
    m = expect_map(raw, loc, "input")
    p = _Pop(m, "input")
    name = check_name(p.get("name", "x"), p.loc("name"), "input.name", "input name")
    p.require("shape", "expected a list of sizes, such as [C, H, W]", m.loc, INPUT_KEYS, "input")
    shape = parse_value(p.get("shape"), p.loc("shape"), "input.shape")
    if shape.items is None or not 1 <= len(shape.items) <= MAX_INPUT_RANK:
        got = f"a list of {len(shape.items)}" if shape.items is not None else describe(shape.raw)
        raise SpecError(
            f"expected a list of 1 to {MAX_INPUT_RANK} sizes without the batch ([C, H, W] for images, "
            f"[C, T, H, W] for video, [L, C] for tokens), got {got}",
            location=shape.loc,
            path="input.shape",
        )
    axes = None
    if p.has("axes"):
        axes = _parse_axes(p.get("axes"), p.loc("axes"), len(shape.items))
    mean = (
        parse_value(p.get("mean"), p.loc("mean"), "input.mean")
        if p.has("mean") and p.left["mean"] is not None
        else None
    )
    p.get("mean")
    std = parse_value(p.get("std"), p.loc("std"), "input.std") if p.has("std") and p.left["std"] is not None else None
    p.get("std")
    doc = expect_str(p.get("doc"), p.loc("doc"), "input.doc") if p.has("doc") else ""
    p.done(INPUT_KEYS, "input")
    return InputSpec(name, shape, mean, std, m.loc, doc, axes)


#: the most axes an input may have (the batch not counted)
MAX_INPUT_RANK = 5


def _parse_axes(raw: object, loc: Location, rank: int) -> str:
    """``input.axes``: one letter per axis of the shape, each a role of nasdsl.ir.types.AXES."""
    text = expect_str(raw, loc, "input.axes")
    letters = "CTHWL"
    if len(text) != rank or any(c not in letters for c in text) or text.count("C") > 1:
        raise SpecError(
            f"expected {rank} letter{'s' * (rank > 1)}, one per axis of the shape, from C (channels or features), "
            f"T (time), H, W (height, width) and L (sequence), C at most once, got {describe(text)}",
            location=loc,
            path="input.axes",
        )
    return text


def _each(m: YMap, parse: Callable[[str, object], T]) -> list[T]:
    """``parse(key, value)`` for every entry of a section; the errors of all entries are raised together."""
    out: list[T] = []
    errors: list[NasdslError] = []
    for key, value in m.items():
        try:
            out.append(parse(key, value))
        except NasdslError as e:
            errors.extend(flatten(e))
    raise_errors(errors)
    return out


def _parse_variables(raw: object, loc: Location) -> tuple[tuple[str, Value], ...]:
    if raw is None:
        return ()
    m = expect_map(raw, loc, "variables")

    def variable(k: str, v: object) -> tuple[str, Value]:
        path = join("variables", k)
        check_name(k, m.key_locs[k], path, "variable name")
        if k in ex.FUNCTIONS:
            raise SpecError(
                f"expected a variable name that is not a function's, got '{k}'", location=m.key_locs[k], path=path
            )
        return k, parse_value(v, m.loc_of(k), path)

    return tuple(_each(m, variable))


def _parse_init(raw: object, loc: Location) -> dict[str, dict[str, InitRule]]:
    if raw is None:
        return {}
    m = expect_map(raw, loc, "init")
    out: dict[str, dict[str, InitRule]] = {}
    for op, rules in m.items():
        path = join("init", op)
        if op not in INIT_OPS:
            raise SpecError(
                f"unknown op '{op}' in init{did_you_mean(op, INIT_OPS)}{allowed_after(INIT_OPS)}",
                location=m.key_locs[op],
                path=path,
            )
        out[op] = dict(_parse_op_rules(expect_map(rules, m.loc_of(op), path), op, path))
    return out


def _parse_op_rules(rm: YMap, op: str, path: str) -> tuple[tuple[str, InitRule], ...]:
    """{parameter: rule} for ``op``: of the spec's ``init`` or of one op block."""
    rules = []
    for param, rule in rm.items():
        if param not in INIT_OPS[op]:
            raise SpecError(
                f"unknown parameter '{param}' of {op}{did_you_mean(param, INIT_OPS[op])}; "
                f"allowed: {', '.join(INIT_OPS[op])}",
                location=rm.key_locs[param],
                path=join(path, param),
            )
        rules.append((param, _parse_fan_rule(op, param, rule, rm.loc_of(param), join(path, param))))
    return tuple(rules)


#: the largest magnitude of an init constant or argument
MAX_INIT_VALUE = 1e6


def _init_number(v: object, loc: Location, path: str) -> float:
    """An init constant or argument: a finite number of at most MAX_INIT_VALUE in magnitude."""
    ok = isinstance(v, (int, float)) and not isinstance(v, bool)
    ok = ok and (abs(v) <= MAX_INIT_VALUE if isinstance(v, int) else math.isfinite(v) and abs(v) <= MAX_INIT_VALUE)
    if not ok:
        got = describe(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else scalar_type_name(v)
        raise SpecError(
            f"expected a number from -{MAX_INIT_VALUE:g} to {MAX_INIT_VALUE:g}, got {got}", location=loc, path=path
        )
    return float(v)


def _parse_block_init(p: _Pop, op: str, path: str) -> tuple[tuple[str, InitRule], ...]:
    """An op block's own ``init``: {parameter: rule}, for the ops that ``init`` covers."""
    if not p.has("init"):
        return ()
    loc, where = p.loc("init"), join(path, "init")
    if op not in INIT_OPS:
        raise SpecError(
            f"op {op} has no parameters that init sets; init applies to {', '.join(INIT_OPS)}",
            location=loc,
            path=where,
        )
    return _parse_op_rules(expect_map(p.get("init"), loc, where, "a mapping from parameter names to rules"), op, where)


#: the schemes that count a tensor's fan_in and fan_out, which need two dimensions or more
FAN_SCHEMES = (
    "xavier_uniform",
    "xavier_normal",
    "xavier_caffe",
    "kaiming_normal",
    "kaiming_uniform",
    "fan_uniform",
    "fan_trunc_normal",
)
#: the parameters that have them, from each op's registry entry (``OpDef.fan_params``)
FAN_PARAMS = {(name, p) for name, op in OPS.items() for p in op.fan_params}


def _parse_fan_rule(op: str, param: str, raw: object, loc: Location, path: str) -> InitRule:
    """A rule for ``param`` of ``op``, refused where its scheme counts fans the tensor lacks
    (a bias, a norm's weight: one dimension)."""
    rule = _parse_init_rule(raw, loc, path)
    if rule.scheme in FAN_SCHEMES and (op, param) not in FAN_PARAMS:
        raise SpecError(
            f"{rule.scheme} counts fan_in and fan_out, which the {param} of {op} (one dimension) does not have; "
            "use constant, zeros, ones, normal, trunc_normal, uniform or default",
            location=loc,
            path=path,
        )
    return rule


def _parse_init_rule(raw: object, loc: Location, path: str) -> InitRule:
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        return InitRule("constant", (("value", _init_number(raw, loc, path)),), loc)
    if isinstance(raw, str):
        if raw not in INIT_SCHEMES:
            raise SpecError(f"unknown init scheme '{raw}'{did_you_mean(raw, INIT_SCHEMES)}", location=loc, path=path)
        return InitRule(raw, (), loc)
    m = expect_map(raw, loc, path, "a number, a scheme name or {scheme: {arguments}}")
    if len(m) != 1:
        raise SpecError(
            f"expected one scheme, got {len(m)}: {', '.join(m)}" if m else "expected one scheme, got none",
            location=loc,
            path=path,
        )
    ((scheme, args),) = m.items()
    if scheme not in INIT_SCHEMES:
        raise SpecError(
            f"unknown init scheme '{scheme}'{did_you_mean(scheme, INIT_SCHEMES)}",
            location=m.key_locs[scheme],
            path=path,
        )
    am = expect_map(args, m.loc_of(scheme), join(path, scheme)) if args is not None else {}
    parsed = []
    for k, v in am.items():
        if k not in INIT_SCHEMES[scheme]:
            allowed = ", ".join(INIT_SCHEMES[scheme]) or "none"
            raise SpecError(
                f"unknown argument '{k}' of {scheme}; allowed: {allowed}", location=am.key_locs[k], path=join(path, k)
            )
        if k in INIT_WORDS:
            if v not in INIT_WORDS[k]:
                shown = f"'{v}'" if isinstance(v, str) else scalar_type_name(v)
                raise SpecError(
                    f"expected {k} to be one of {', '.join(INIT_WORDS[k])}, got {shown}"
                    + (did_you_mean(v, INIT_WORDS[k]) if isinstance(v, str) else ""),
                    location=am.loc_of(k),
                    path=join(path, k),
                )
            parsed.append((k, v))
            continue
        parsed.append((k, _init_number(v, am.loc_of(k), join(path, k))))
    given = dict(parsed)
    negative = [k for k in ("std", "gain", "scale") if given.get(k, 0.0) < 0]
    if negative:
        key = negative[0]
        raise SpecError(f"expected {key} >= 0, got {given[key]:g}", location=am.loc_of(key), path=join(path, key))
    if "a" in given or "b" in given:
        lo, hi = (
            given.get("a", -2.0 if scheme == "trunc_normal" else 0.0),
            given.get("b", 2.0 if scheme == "trunc_normal" else 1.0),
        )
        if lo >= hi:
            raise SpecError(
                f"expected a < b, got a = {lo:g} and b = {hi:g}", location=m.loc_of(scheme), path=join(path, scheme)
            )
    return InitRule(scheme, tuple(parsed), loc)


def _parse_templates(raw: object, loc: Location) -> dict[str, Template]:
    if raw is None:
        return {}
    m = expect_map(raw, loc, "templates")

    def template(name: str, body: object) -> Template:
        path = join("templates", name)
        check_name(name, m.key_locs[name], path, "template name")
        if name in OPS:
            raise SpecError(
                f"expected a template name that is not an op's, got '{name}'", location=m.key_locs[name], path=path
            )
        tm = expect_map(body, m.loc_of(name), path, "a template: a mapping with 'params' and 'body'")
        p = _Pop(tm, path)
        params = _parse_params(p.get("params"), p.loc("params"), join(path, "params"))
        p.require("body", "the template's layers", tm.loc, TEMPLATE_KEYS, f"template {name}")
        block = parse_block(p.get("body"), p.loc("body"), join(path, "body"))
        tdoc = p.get("doc", "")
        order = _parse_build_order(p.get("build_order"), p.loc("build_order"), join(path, "build_order"), block)
        inputs: tuple[str, ...] = ()
        if p.has("inputs"):
            inputs = _parse_template_inputs(p, path, params, block)
        p.done(TEMPLATE_KEYS, f"template {name}")
        return Template(name, params, block, m.key_locs[name], tdoc if isinstance(tdoc, str) else "", order, inputs)

    return {t.name: t for t in _each(m, template)}


def _parse_template_inputs(p: _Pop, path: str, params: tuple[Param, ...], body: Block) -> tuple[str, ...]:
    """A template's ``inputs``: names its body reads its inputs by; none a parameter or an entry."""
    iloc, ipath = p.loc("inputs"), join(path, "inputs")
    raw = p.get("inputs")
    inputs = _parse_input_names(raw, iloc, ipath, "inputs")
    entries = {n for n, _ in body.items} if isinstance(body, SeqBlock) and body.named else set()
    for i, name in enumerate(inputs):
        clash = "a parameter" if name in {q.name for q in params} else "an entry of the body" if name in entries else ""
        if clash:
            raise SpecError(f"input name '{name}' is also {clash}", location=raw.loc_of(i), path=join(ipath, i))
        for k, q in enumerate(params):
            if q.name in (f"{name}_channels", f"{name}_features"):
                raise SpecError(
                    f"parameter name '{q.name}' is reserved: the generated class receives the size of the "
                    f"input '{name}' under it",
                    location=q.loc,
                    path=join(join(ipath.rsplit(".", 1)[0], "params"), k),
                )
    return inputs


def _parse_build_order(raw: object, loc: Location, path: str, body: Block) -> tuple[str, ...]:
    """A template's ``build_order``: entries of its named body, each once."""
    if raw is None:
        return ()
    if not isinstance(body, SeqBlock) or not body.named:
        raise SpecError("expected a body of named entries for build_order to order", location=loc, path=path)
    if not isinstance(raw, YList) or not raw:
        raise SpecError(f"expected a list of the body's entries, got {scalar_type_name(raw)}", location=loc, path=path)
    entries = [name for name, _ in body.items]
    order: list[str] = []
    for i, item in enumerate(raw):
        iloc, ipath = raw.loc_of(i), join(path, i)
        if item not in entries:
            shown = ", ".join(entries[:12]) + (", ..." if len(entries) > 12 else "")
            raise SpecError(f"expected an entry of the body ({shown}), got {describe(item)}", location=iloc, path=ipath)
        if item in order:
            raise SpecError(f"entry '{item}' is listed twice", location=iloc, path=ipath)
        order.append(item)
    return tuple(order)


def _parse_params(raw: object, loc: Location, path: str) -> tuple[Param, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, YList):
        raise SpecError(f"expected a list of parameter names, got {scalar_type_name(raw)}", location=loc, path=path)
    params: list[Param] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        iloc, ipath = raw.loc_of(i), join(path, i)
        default = None
        if isinstance(item, YMap):
            if len(item) != 1:
                raise SpecError(
                    "expected a name or {name: default}, got a mapping with several keys", location=iloc, path=ipath
                )
            ((item, dv),) = item.items()
            default = parse_value(dv, raw[i].loc_of(item), join(ipath, item), null=True)
        name = check_name(item, iloc, ipath, "parameter name")
        if default is None and params and params[-1].default is not None:
            raise SpecError(
                f"parameter '{name}' has no default but follows '{params[-1].name}', which has one: "
                "put the parameters with defaults last",
                location=iloc,
                path=ipath,
            )
        if name in seen:
            raise SpecError(f"duplicate parameter '{name}'", location=iloc, path=ipath)
        if name == "self":
            raise SpecError(f"parameter name '{name}' is reserved", location=iloc, path=ipath)
        if name in INPUT_SIZE_NAMES:
            raise SpecError(
                f"parameter name '{name}' is reserved: the generated class receives its input's size under "
                "it (in_channels for a map, in_features for tokens)",
                location=iloc,
                path=ipath,
            )
        seen.add(name)
        params.append(Param(name, default, iloc))
    return tuple(params)


def _parse_model(raw: object, loc: Location) -> SeqBlock:
    check_model(raw, loc)
    return _parse_named_seq(raw, loc, "model")


def check_model(raw: object, loc: Location) -> None:
    """The model is a mapping of named blocks: none of them named after a block's key."""
    if isinstance(raw, YMap):
        kinds = [k for k in BLOCK_KEYS if k in raw]
        if not kinds:
            return
        if len(raw) > 1:  # entries beside it: an entry named after a block's key
            key = kinds[0]
            raise SpecError(
                f"'{key}' is a block's key and cannot name a model entry (the model would read as one '{key}' "
                "block): give the entry another name",
                location=raw.key_locs.get(key, loc),
                path=join("model", key),
            )
        got = f"one block (with the key '{kinds[0]}')"
    else:
        got = scalar_type_name(raw)
    raise SpecError(
        f"expected a mapping of named blocks (conv1: ..., pool1: ...), got {got}", location=loc, path="model"
    )


def _parse_outputs(raw: object, loc: Location) -> tuple[Output, ...]:
    if raw is None:
        return ()
    m = expect_map(raw, loc, "outputs")

    def output(name: str, body: object) -> Output:
        path = join("outputs", name)
        check_name(name, m.key_locs[name], path, "output name")
        om = expect_map(body, m.loc_of(name), path, "a mapping with 'from'")
        p = _Pop(om, path)
        p.require("from", "the node this output reads", om.loc, OUTPUT_KEYS, f"output {name}")
        src_loc = p.loc("from")
        src = p.get("from")
        if not isinstance(src, str):
            raise SpecError(
                f"expected a node name, got {scalar_type_name(src)}", location=src_loc, path=join(path, "from")
            )
        check_dotted_name(src, src_loc, join(path, "from"))
        head = parse_block(p.get("head"), p.loc("head"), join(path, "head")) if p.has("head") else None
        weight = None
        if p.has("loss_weight"):
            weight = parse_value(p.get("loss_weight"), p.loc("loss_weight"), join(path, "loss_weight"))
        training_only = p.get("training_only", False)
        if not isinstance(training_only, bool):
            raise SpecError(
                f"expected true or false, got {describe(training_only)}",
                location=om.loc_of("training_only"),
                path=join(path, "training_only"),
            )
        when = parse_value(p.get("when"), p.loc("when"), join(path, "when")) if p.has("when") else None
        p.done(OUTPUT_KEYS, f"output {name}")
        return Output(name, src, src_loc, head, weight, training_only, when, m.key_locs[name], path)

    return tuple(_each(m, output))
