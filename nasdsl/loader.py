"""Safe, location-tracking, limit-enforcing loading of YAML specs.

Threat model: spec files come from strangers (shared on the web, attached to issues, pulled
from model zoos), so loading one must never run code or exhaust the machine. Concretely:

* no object construction: only plain data (mappings, lists, str, int, float, bool, null);
  any other tag (``!!python/object/apply:os.system``, ``!!binary``, ``!foo`` ...) is refused;
* no unbounded work: file size, nesting depth, node count *after* alias expansion (the
  "billion laughs" attack) and scalar length are all capped by :class:`Limits`, and the tree
  is built from PyYAML's event stream with an explicit stack, so deep input gives a clean
  :class:`LimitError` instead of a ``RecursionError``;
* no leaked internals: every problem, including YAML syntax errors, becomes a
  :class:`SpecError` at a 1-based ``FILE:LINE:COLUMN`` position.
"""

from __future__ import annotations

import codecs
import os
import re
import stat
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

import yaml
from yaml.constructor import SafeConstructor
from yaml.events import (
    AliasEvent,
    DocumentStartEvent,
    Event,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)
from yaml.nodes import ScalarNode

from .errors import LimitError, Location, SpecError

__all__ = ["Limits", "YList", "YMap", "load_file", "load_text", "scalar_type_name"]


@dataclass(frozen=True)
class Limits:
    """Caps on what a spec may make the loader do. Every field has a matching CLI flag."""

    max_bytes: int = 1 << 20  # file size
    max_depth: int = 64  # nesting of mappings/sequences
    max_nodes: int = 200_000  # YAML nodes after alias expansion (an alias counts as its target's size)
    max_scalar_length: int = 10_000  # characters in one scalar

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_depth", "max_nodes", "max_scalar_length"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"Limits.{name} must be a positive integer, got {value!r}")


class YMap(dict):
    """A mapping from the spec: str keys, file order, and where everything came from."""

    __slots__ = ("loc", "key_locs", "value_locs")
    loc: Location
    key_locs: dict[str, Location]
    value_locs: dict[str, Location]

    def __init__(self, loc: Location) -> None:
        super().__init__()
        self.loc = loc
        self.key_locs = {}
        self.value_locs = {}

    def loc_of(self, key: str) -> Location:
        """Where the value of ``key`` starts, else where the key is, else where the mapping starts."""
        return self.value_locs.get(key) or self.key_locs.get(key) or self.loc


class YList(list):
    """A sequence from the spec, with where it and each of its items start."""

    __slots__ = ("loc", "item_locs")
    loc: Location
    item_locs: list[Location]

    def __init__(self, loc: Location) -> None:
        super().__init__()
        self.loc = loc
        self.item_locs = []

    def loc_of(self, index: int) -> Location:
        """Where item ``index`` starts (negative indices count from the end), else the list's start."""
        if -len(self.item_locs) <= index < len(self.item_locs):
            return self.item_locs[index]
        return self.loc


def scalar_type_name(v: object) -> str:
    """The user-facing name of a loaded value's type, for "expected X, got Y" messages."""
    if v is None:
        return "null"
    if isinstance(v, bool):  # before int: bool is a subclass of int
        return "a boolean"
    if isinstance(v, int):
        return "an integer"
    if isinstance(v, float):
        return "a float"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, Mapping):
        return "a mapping"
    if isinstance(v, (list, tuple)):
        return "a list"
    return f"a {type(v).__name__}"


# --------------------------------------------------------------------------- reading files


def load_file(path: str | os.PathLike[str], *, limits: Limits = Limits(), display_name: str | None = None) -> YMap:
    """Load a spec file: a YAML mapping. Raises :class:`SpecError` / :class:`LimitError`."""
    name = display_name if display_name is not None else str(path)
    data = _read_bytes(path, name, limits)
    text = _decode(data, name)
    result = load_text(text, name, limits=limits, top="mapping")
    assert isinstance(result, YMap)
    return result


def _read_bytes(path: str | os.PathLike[str], name: str, limits: Limits) -> bytes:
    start = Location(name, 1, 1)
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer (a spec could `extends:` one and hang
        # the compiler). What was opened is then checked through its descriptor, so it cannot be swapped.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
        with open(fd, "rb") as f:
            info = os.fstat(fd)
            if stat.S_ISDIR(info.st_mode):
                raise SpecError("is a directory, expected a YAML file", location=start)
            if not stat.S_ISREG(info.st_mode):
                raise SpecError(
                    "is not a regular file (a pipe, a device or a socket), expected a YAML file", location=start
                )
            if info.st_size > limits.max_bytes:
                raise _too_big(info.st_size, limits, start)
            data = f.read(limits.max_bytes + 1)
    except FileNotFoundError:
        raise SpecError("no such file", location=start) from None
    except IsADirectoryError:
        raise SpecError("is a directory, expected a YAML file", location=start) from None
    except PermissionError:
        raise SpecError("permission denied: cannot read the file", location=start) from None
    except OSError as exc:
        raise SpecError(f"cannot read the file: {exc.strerror or exc}", location=start) from None
    except ValueError:  # e.g. a NUL character in the path
        raise SpecError("cannot read the file: invalid file name", location=start) from None
    if len(data) > limits.max_bytes:
        raise _too_big(None, limits, start)
    return data


def _too_big(size: int | None, limits: Limits, location: Location) -> LimitError:
    what = f"file is {size} bytes" if size is not None else f"file is more than {limits.max_bytes} bytes"
    return LimitError(f"{what}, above the limit of {limits.max_bytes} (raise it with --max-bytes)", location=location)


def _decode(data: bytes, name: str) -> str:
    """UTF-8 text of a file, refusing UTF-16, binary data and invalid UTF-8 with a clear message."""
    start = Location(name, 1, 1)
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise SpecError("file is UTF-16 encoded: save it as UTF-8", location=start)
    body = data[len(codecs.BOM_UTF8) :] if data.startswith(codecs.BOM_UTF8) else data
    nul = body.find(b"\0")
    if nul >= 0:
        line, column = _byte_position(body, nul)
        raise SpecError(
            f"file contains a NUL byte at line {line}, column {column}: "
            "it looks like binary data, not a YAML text file",
            location=start,
        )
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, column = _byte_position(body, exc.start)
        raise SpecError(
            f"file is not valid UTF-8: byte 0x{body[exc.start]:02x} at line {line}, column {column}",
            location=start,
        ) from None


def _byte_position(data: bytes, offset: int) -> tuple[int, int]:
    """1-based line and column (in characters) of byte ``offset``."""
    before = data[:offset].decode("utf-8", errors="replace")
    line, column = _position(before, len(before))
    return line + 1, column + 1


# What YAML counts as a line break (a lone CR, NEL and the Unicode separators too).
_LINE_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")


def _position(text: str, index: int) -> tuple[int, int]:
    """0-based line and column of ``text[index]``, counting lines as YAML parsers do."""
    line = line_start = 0
    for match in _LINE_BREAK.finditer(text, 0, index):
        line += 1
        line_start = match.end()
    return line, index - line_start


# --------------------------------------------------------------------------- loading text

# Characters YAML forbids in a stream (the same set PyYAML's reader refuses).
_FORBIDDEN_CHAR = re.compile("[^\t\n\r\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def load_text(
    text: str,
    file: str,
    *,
    limits: Limits = Limits(),
    top: Literal["mapping", "any"] = "mapping",
    line: int = 1,
    column: int = 1,
) -> object:
    """Load YAML ``text`` as if it started at ``line``/``column`` of ``file``.

    With ``top="mapping"`` the text must hold a mapping (a :class:`YMap` is returned); with
    ``top="any"`` any value is returned (``None`` for an empty text), e.g. for ``--set`` values.
    """
    if top not in ("mapping", "any"):
        raise ValueError(f"top must be 'mapping' or 'any', not {top!r}")
    source = _Source(file, text, line, column)
    if len(text) > limits.max_bytes:
        raise LimitError(
            f"text is {len(text)} characters long, above the limit of {limits.max_bytes} (raise it with --max-bytes)",
            location=source.start,
        )
    _check_characters(source)
    events = yaml.parse(text, Loader=_parser_loader())
    try:
        return _Builder(source, limits, top == "mapping").run(events)
    except yaml.MarkedYAMLError as exc:
        raise _syntax_error(exc, source, limits) from None
    except yaml.YAMLError as exc:
        raise SpecError(f"invalid YAML: {exc}", location=source.start) from None
    finally:
        events.close()


def _parser_loader() -> type:
    """The loader class whose parser produces the events.

    libyaml's parser (``CSafeLoader``) yields the same events as PyYAML's pure-Python one but
    about 20 times faster, which is what keeps a 1 MiB spec well under a second; the
    pure-Python ``SafeLoader`` is the fallback where PyYAML was built without libyaml.
    Only events are taken from it: construction is done here, never by PyYAML.
    """
    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _check_characters(source: _Source) -> None:
    bad = _FORBIDDEN_CHAR.search(source.text)
    if bad is None:
        return
    char = bad.group()
    location = source.at_index(bad.start())
    if char == "\0":
        raise SpecError("found a NUL character: this looks like binary data, not YAML text", location=location)
    raise SpecError(f"found character {char!r} (U+{ord(char):04X}), which YAML does not allow", location=location)


@dataclass(frozen=True)
class _Source:
    """The text being loaded and how to turn PyYAML's 0-based marks into Locations."""

    file: str
    text: str
    line: int
    column: int

    @property
    def start(self) -> Location:
        return Location(self.file, self.line, self.column)

    def at(self, line0: int, column0: int) -> Location:
        if line0 == 0:
            return Location(self.file, self.line, self.column + column0)
        return Location(self.file, self.line + line0, column0 + 1)

    def loc(self, mark: Any) -> Location:
        return self.at(mark.line, mark.column)

    def at_index(self, index: int) -> Location:
        return self.at(*_position(self.text, index))


# --------------------------------------------------------------------------- syntax errors

_LIBYAML_NESTING = "exceeded maximum nesting depth"
_LIBYAML_MAX_NESTING = 1000


def _syntax_error(exc: yaml.MarkedYAMLError, source: _Source, limits: Limits) -> SpecError:
    """A PyYAML scanner/parser error as a SpecError at the problem, without PyYAML's layout."""
    mark = exc.problem_mark or exc.context_mark
    location = _error_location(source, mark)
    problem = (exc.problem or exc.context or "invalid YAML").strip()
    if problem == _LIBYAML_NESTING:
        return LimitError(_depth_message(limits), location=location)
    char = _char_at(source.text, mark.index) if mark is not None else None
    if problem == "found character that cannot start any token" and char is not None:
        problem = f"found character {char!r} that cannot start any token"  # as PyYAML's own scanner says
    if char == "\t" or "tab character" in problem:
        problem += ": use spaces, YAML does not allow tabs here"
    context_mark = exc.context_mark
    if exc.context and context_mark is not None and context_mark is not mark:
        where = _error_location(source, context_mark)
        if (where.line, where.column) != (location.line, location.column):
            problem += f" ({exc.context.strip()} started at line {where.line}, column {where.column})"
    return SpecError(problem, location=location)


def _error_location(source: _Source, mark: Any) -> Location:
    if mark is None:
        return source.start
    if mark.index >= len(source.text):  # libyaml puts the end of a text without final newline on a new line
        return source.at_index(len(source.text))
    return source.loc(mark)


def _char_at(text: str, index: int | None) -> str | None:
    if index is None or not 0 <= index < len(text):
        return None
    return text[index]


def _depth_message(limits: Limits) -> str:
    if limits.max_depth >= _LIBYAML_MAX_NESTING:
        return f"nesting deeper than {_LIBYAML_MAX_NESTING} levels, the most the YAML parser supports"
    return f"nesting deeper than {limits.max_depth} levels (raise it with --max-depth)"


# --------------------------------------------------------------------------- scalars

_YAML = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _BOOL, _NULL = (_YAML + t for t in ("str", "int", "float", "bool", "null"))
_SEQ, _MAP, _MERGE = _YAML + "seq", _YAML + "map", _YAML + "merge"
_NON_SPECIFIC = (None, "!")

# Short type names for "expected a string key, got int 1".
_KEY_KIND = MappingProxyType({_INT: "int", _FLOAT: "float", _BOOL: "bool", _NULL: "null"})
_TAG_KIND = MappingProxyType({_INT: "an integer", _FLOAT: "a float", _BOOL: "a boolean"})


# SafeLoader's implicit resolvers, frozen at import: first character -> ((tag, regexp), ...),
# with the resolvers for any first character (key None) appended to every entry.
def _implicit_resolvers() -> Mapping[str, tuple[tuple[str, re.Pattern[str]], ...]]:
    table = yaml.SafeLoader.yaml_implicit_resolvers
    anywhere = tuple(table.get(None, ()))
    return MappingProxyType({first: tuple(pairs) + anywhere for first, pairs in table.items() if first is not None})


_IMPLICIT = _implicit_resolvers()
_RESOLVED = frozenset({_NULL, _BOOL, _INT, _FLOAT, _MERGE})  # anything else (timestamps...) stays str


def _resolve_plain(value: str) -> str:
    """The tag SafeLoader gives a plain scalar: null, bool, int, float, merge ('<<') or str."""
    for tag, regexp in _IMPLICIT.get(value[:1], ()):
        if regexp.match(value):
            return tag if tag in _RESOLVED else _STR
    return _STR


def _construct(constructor: SafeConstructor, tag: str, text: str) -> object:
    """The Python value of a scalar, exactly as SafeConstructor builds it. May raise ValueError etc."""
    if tag == _STR or tag == _MERGE:  # a plain '<<' that is not a key is just a string
        return text
    if tag == _NULL:
        return None
    if tag == _INT:
        if text.isdigit() and text.isascii() and text[0] != "0":  # the common case, without the detour
            return int(text)
        return constructor.construct_yaml_int(ScalarNode(tag, text))
    if tag == _FLOAT:
        return constructor.construct_yaml_float(ScalarNode(tag, text))
    return constructor.construct_yaml_bool(ScalarNode(tag, text))


# YAML 1.1 numbers nobody means: a leading zero makes an integer octal (010 is 8), and colons
# make a number of base 60 (3:00 is 180, the way a clock reads it).
_OCTAL = re.compile(r"[-+]?0[0-7_]+")


def _surprising_number(text: str) -> str | None:
    """How YAML 1.1 reads ``text``, an integer or a float, where that is not the decimal it looks
    like; None where it is the number it looks like (``0x10``, ``0b11`` and ``1_000`` say what they are)."""
    if ":" in text:
        return "a number of base 60 (its colons)"
    if _OCTAL.fullmatch(text):
        return "an octal number (its leading zero)"
    return None


def _show_tag(tag: str) -> str:
    if tag.startswith(_YAML):
        return "!!" + tag[len(_YAML) :]
    return tag if tag.startswith("!") else f"!<{tag}>"


def _shorten(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[: width // 2] + "..." + text[-width // 2 :]


def _bad_scalar(tag: str, text: str, exc: Exception) -> str:
    digits = sum(c.isdigit() for c in text)
    most = sys.get_int_max_str_digits()
    if tag == _INT and isinstance(exc, ValueError) and digits > most > 0:
        return f"integer {_shorten(text)!r} has {digits} digits, more than the {most} allowed"
    return f"{_shorten(text)!r} is not {_TAG_KIND[tag]} (tagged {_show_tag(tag)})"


# --------------------------------------------------------------------------- building the tree


@dataclass(slots=True)
class _Frame:
    """A mapping or sequence whose end event has not come yet."""

    container: YMap | YList
    is_map: bool
    anchor: str | None
    size: int = 1  # nodes in this subtree so far, aliases expanded
    height: int = 1  # nesting levels in this subtree, aliases expanded
    key: str | None = None  # mapping only: the key whose value comes next
    key_loc: Location | None = None


@dataclass(frozen=True, slots=True)
class _Anchor:
    """What an ``&anchor`` stands for, so that aliases can be sized without expanding them."""

    value: object
    loc: Location
    size: int
    height: int
    key_error: str | None  # why the value cannot be a mapping key (None when it can)


class _Builder:
    """Turns the event stream into YMap/YList/scalars, checking every rule and limit on the way."""

    def __init__(self, source: _Source, limits: Limits, want_mapping: bool) -> None:
        self.source = source
        self.limits = limits
        self.want_mapping = want_mapping
        self.max_nodes = limits.max_nodes
        self.max_scalar_length = limits.max_scalar_length
        self.constructor = SafeConstructor()
        self.plain_cache: dict[str, tuple[str, object]] = {}  # plain scalar text -> (tag, value)
        self.stack: list[_Frame] = []
        self.anchors: dict[str, _Anchor] = {}
        self.open_anchors: dict[str, Location] = {}
        self.nodes = 0
        self.documents = 0
        self.root: object = None
        self.root_is_empty = True
        self.handlers: dict[type, Callable[[Any], None]] = {
            ScalarEvent: self.on_scalar,
            MappingStartEvent: self.on_mapping_start,
            SequenceStartEvent: self.on_sequence_start,
            MappingEndEvent: self.on_end,
            SequenceEndEvent: self.on_end,
            AliasEvent: self.on_alias,
            DocumentStartEvent: self.on_document_start,
            StreamEndEvent: self.on_stream_end,
        }

    def run(self, events: Iterator[Event]) -> object:
        handlers = self.handlers
        for event in events:
            handler = handlers.get(type(event))
            if handler is not None:
                handler(event)
        return self.root

    # -- events

    def on_document_start(self, event: DocumentStartEvent) -> None:
        self.documents += 1
        if self.documents > 1:
            raise SpecError(
                "found a second YAML document: a spec holds exactly one",
                location=self.source.loc(event.start_mark),
            )

    def on_stream_end(self, event: StreamEndEvent) -> None:
        if self.want_mapping and self.root_is_empty:
            raise SpecError(
                "the file is empty: expected a mapping with at least the key 'model'",
                location=self.source.start,
            )

    def on_scalar(self, event: ScalarEvent) -> None:
        # The hot path: most events of a spec are plain scalars, hence the inlining.
        mark = event.start_mark
        loc = self.source.at(mark.line, mark.column)
        text: str = event.value
        if len(text) > self.max_scalar_length:
            raise self.scalar_too_long(text, loc)
        if event.tag is None and event.implicit[0]:
            tag, value = self.plain_cache.get(text) or self.plain(text, loc)
        else:
            tag, value = self.non_plain(event, loc)
        stack = self.stack
        if not stack:
            self.set_root(value, loc, empty=text == "" and tag == _NULL and event.tag is None)
        elif tag != _STR and stack[-1].key is None and stack[-1].is_map:
            raise SpecError(_key_error(tag, text) or "", location=loc)
        if event.anchor is not None:
            self.check_new_anchor(event.anchor, loc)
            self.anchors[event.anchor] = _Anchor(value, loc, 1, 0, _key_error(tag, text))
        self.nodes += 1
        if self.nodes > self.max_nodes:
            raise self.too_many_nodes(loc, alias=None)
        if event.style in ('"', "'"):
            loc = loc.shifted(1)  # where the text starts, so that columns inside an expression are exact
        self.add(value, loc, 1, 0)

    def on_mapping_start(self, event: MappingStartEvent) -> None:
        self.start_collection(event, YMap, _MAP, "a mapping")

    def on_sequence_start(self, event: SequenceStartEvent) -> None:
        self.start_collection(event, YList, _SEQ, "a list")

    def start_collection(self, event: Any, cls: type[YMap] | type[YList], own_tag: str, kind: str) -> None:
        loc = self.source.loc(event.start_mark)
        if event.tag not in _NON_SPECIFIC and event.tag != own_tag:
            self.refuse_tag(event, kind)
        if self.expecting_key():
            raise SpecError(f"expected a string key, got {kind}", location=loc)
        if len(self.stack) >= self.limits.max_depth:
            raise LimitError(_depth_message(self.limits), location=loc)
        if not self.stack:
            self.set_root(None, loc, empty=False, kind=kind)
        if event.anchor is not None:
            self.check_new_anchor(event.anchor, loc)
            self.open_anchors[event.anchor] = loc
        self.count(1, loc, alias=None)
        self.stack.append(_Frame(cls(loc), cls is YMap, event.anchor))

    def on_end(self, event: Any) -> None:
        frame = self.stack.pop()
        container = frame.container
        if frame.anchor is not None:
            del self.open_anchors[frame.anchor]
            self.anchors[frame.anchor] = _Anchor(container, container.loc, frame.size, frame.height, None)
        if self.stack:
            self.add(container, container.loc, frame.size, frame.height)
        else:
            self.root = container

    def on_alias(self, event: AliasEvent) -> None:
        loc = self.source.loc(event.start_mark)
        name: str = event.anchor
        target = self.anchors.get(name)
        if target is None:
            if name in self.open_anchors:
                raise SpecError(
                    f"alias '*{name}' is inside the collection it refers to: recursive data is not allowed",
                    location=loc,
                )
            raise SpecError(f"alias '*{name}' refers to no anchor '&{name}' defined before it", location=loc)
        if self.expecting_key():
            if target.key_error is not None:
                raise SpecError(target.key_error, location=loc)
            if not isinstance(target.value, str):
                raise SpecError(f"expected a string key, got {_collection_kind(target.value)}", location=loc)
        if len(self.stack) + target.height > self.limits.max_depth:
            raise LimitError(
                f"nesting deeper than {self.limits.max_depth} levels once alias '*{name}' is expanded "
                "(raise it with --max-depth)",
                location=loc,
            )
        self.count(target.size, loc, alias=name)
        self.add(target.value, loc, target.size, target.height)

    # -- scalars

    def plain(self, text: str, loc: Location) -> tuple[str, object]:
        """Tag and value of a plain scalar; values are immutable, so equal texts share them."""
        tag = _resolve_plain(text)
        known = self.plain_cache[text] = (tag, self.construct(tag, text, loc))
        return known

    def non_plain(self, event: ScalarEvent, loc: Location) -> tuple[str, object]:
        """Tag and value of a quoted, block or tagged scalar; only standard scalar tags pass."""
        tag = event.tag
        if tag in _NON_SPECIFIC:  # '!' on a plain scalar still resolves, as in PyYAML
            return self.plain(event.value, loc) if event.implicit[0] else (_STR, event.value)
        if tag not in (_STR, _INT, _FLOAT, _BOOL, _NULL):
            self.refuse_tag(event, "a scalar")
        return tag, self.construct(tag, event.value, loc)

    def construct(self, tag: str, text: str, loc: Location) -> object:
        try:
            value = _construct(self.constructor, tag, text)
        except (ValueError, KeyError, IndexError, TypeError, OverflowError) as exc:
            raise SpecError(_bad_scalar(tag, text, exc), location=loc) from None
        if tag in (_INT, _FLOAT) and (reading := _surprising_number(text)):
            raise SpecError(
                f"{_shorten(text)!r} reads as {value!r} in YAML 1.1, {reading}: write the number in decimal "
                "without leading zeros, or quote it if it is text",
                location=loc,
            )
        return value

    def refuse_tag(self, event: Any, kind: str) -> None:
        tag: str = event.tag
        loc = self.tag_location(event)
        if tag in (_STR, _INT, _FLOAT, _BOOL, _NULL, _SEQ, _MAP):
            raise SpecError(f"tag '{_show_tag(tag)}' cannot be used on {kind}", location=loc)
        raise SpecError(f"tag '{_show_tag(tag)}' is not allowed: specs hold plain data only", location=loc)

    def tag_location(self, event: Any) -> Location:
        """Where the tag is written: the event starts at its first property, maybe an anchor."""
        mark = event.start_mark
        text = self.source.text
        line_end = text.find("\n", mark.index)
        bang = text.find("!", mark.index, line_end if line_end >= 0 else len(text))
        if bang < 0:
            return self.source.loc(mark)
        return self.source.at(mark.line, mark.column + bang - mark.index)

    # -- structure

    def expecting_key(self) -> bool:
        return bool(self.stack) and self.stack[-1].is_map and self.stack[-1].key is None

    def set_root(self, value: object, loc: Location, *, empty: bool, kind: str | None = None) -> None:
        self.root = value
        self.root_is_empty = empty
        if not self.want_mapping or kind == "a mapping" or empty:
            return
        found = kind or scalar_type_name(value)
        raise SpecError(f"expected a mapping at the top level, got {found}", location=loc)

    def check_new_anchor(self, name: str, loc: Location) -> None:
        first = self.anchors[name].loc if name in self.anchors else self.open_anchors.get(name)
        if first is not None:
            raise SpecError(f"duplicate anchor '&{name}' (first defined at line {first.line})", location=loc)

    def count(self, size: int, loc: Location, *, alias: str | None) -> None:
        self.nodes += size
        if self.nodes > self.max_nodes:
            raise self.too_many_nodes(loc, alias=alias)

    def too_many_nodes(self, loc: Location, *, alias: str | None) -> LimitError:
        limit = self.max_nodes
        if alias is not None:
            message = f"alias expansion exceeds {limit} nodes (billion-laughs guard); raise it with --max-yaml-nodes"
        else:
            message = f"the spec has more than {limit} YAML nodes (raise it with --max-yaml-nodes)"
        return LimitError(message, location=loc)

    def scalar_too_long(self, text: str, loc: Location) -> LimitError:
        return LimitError(
            f"scalar is {len(text)} characters long, above the limit of {self.max_scalar_length} "
            "(raise it with --max-scalar-length)",
            location=loc,
        )

    def add(self, value: object, loc: Location, size: int, height: int) -> None:
        """Put a finished node into the collection being built (as a key, a value or an item)."""
        if not self.stack:
            return
        frame = self.stack[-1]
        frame.size += size
        if height >= frame.height:
            frame.height = height + 1
        container = frame.container
        if not frame.is_map:
            container.append(value)  # type: ignore[union-attr]
            container.item_locs.append(loc)  # type: ignore[union-attr]
        elif frame.key is None:
            self.add_key(frame, value, loc)
        else:
            key = frame.key
            container[key] = value  # type: ignore[index]
            container.key_locs[key] = frame.key_loc  # type: ignore[union-attr,index]
            container.value_locs[key] = loc  # type: ignore[union-attr,index]
            frame.key = None

    def add_key(self, frame: _Frame, key: object, loc: Location) -> None:
        assert isinstance(key, str) and isinstance(frame.container, YMap)
        if key in frame.container:
            first = frame.container.key_locs[key]
            where = f"line {first.line}" + (f", column {first.column}" if first.line == loc.line else "")
            raise SpecError(f"duplicate key {key!r} (first defined at {where})", location=loc)
        frame.key = key
        frame.key_loc = loc


def _key_error(tag: str, text: str) -> str | None:
    """Why a scalar with this tag cannot be a mapping key, or None if it can."""
    if tag == _STR:
        return None
    if tag == _MERGE:
        return "merge keys ('<<') are not supported: write the keys out in full"
    kind = _KEY_KIND[tag]
    return f"expected a string key, got {kind if tag == _NULL else f'{kind} {_shorten(text)}'}"


def _collection_kind(value: object) -> str:
    return "a mapping" if isinstance(value, dict) else "a list"
