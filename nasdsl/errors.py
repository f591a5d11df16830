"""One error hierarchy for everything that can go wrong with a spec.

Every error that a user's input can cause is a :class:`NasdslError`. It knows
where in which file it happened (a :class:`Location`) and which key path of the
spec it concerns, and formats itself as a compiler diagnostic::

    specs/googlenet.yaml:42:7: error: model.inception4a.args.c3x3: expected an integer > 0, got -64

Context is added on the way up (:meth:`NasdslError.at`) rather than threaded
through every call.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Location:
    """A position in a source: file name, 1-based line and column."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"

    def shifted(self, columns: int) -> Location:
        """The same place, ``columns`` characters further along the line."""
        return Location(self.file, self.line, self.column + columns)


#: the longest run of text without a space that a diagnostic quotes in full
MAX_WORD = 120


def printable(text: str) -> str:
    """Text safe to print on a terminal: control and bidirectional characters
    (escape sequences, carriage returns, right-to-left overrides) from a spec
    are shown escaped; newlines of multi-line messages stay; a word longer than
    :data:`MAX_WORD` (a 9,000-character name) is cut in its middle with an ellipsis."""
    shown = "".join(c if c.isprintable() or c == "\n" else repr(c)[1:-1] for c in text)
    if len(shown) <= MAX_WORD:
        return shown
    return re.sub(rf"[^\s]{{{MAX_WORD + 1},}}", _cut, shown)


#: what a terminal must not get raw: C0 and C1 controls but tab and newline, DEL, bidirectional overrides
TERMINAL_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def terminal_text(text: str) -> str:
    """``text`` with every character of :data:`TERMINAL_CONTROL` shown as its escape; newlines
    and tabs kept (what the command line's standard output goes through)."""
    return TERMINAL_CONTROL.sub(lambda m: repr(m[0])[1:-1], text)


def one_line(text: str) -> str:
    """Text that stays on one line of a terminal, a comment or a log: every character that is
    not printable, the newline included, shown as its escape (``\\n``, ``\\x1b``, ``\\u202e``)."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _cut(m: re.Match[str]) -> str:
    word = m[0]
    return f"{word[: MAX_WORD // 2]}...{word[-MAX_WORD // 4 :]}"


class NasdslError(Exception):
    """Base class of every error caused by input. Exit code 2 at the CLI."""

    kind = "error"

    def __init__(self, message: str, *, location: Location | None = None, path: str | None = None):
        super().__init__(message)
        self.message = message
        self.location = location
        self.path = path

    def at(self, *, location: Location | None = None, path: str | None = None) -> NasdslError:
        """Fill in the location and key path if they are still unknown; return self."""
        if self.location is None and location is not None:
            self.location = location
        if self.path is None and path is not None:
            self.path = path
        return self

    def format(self) -> str:
        where = f"{printable(one_line(str(self.location)))}: " if self.location is not None else ""
        what = f"{printable(one_line(self.path))}: " if self.path else ""
        return f"{where}{self.kind}: {what}{printable(self.message)}"

    def __str__(self) -> str:
        return self.format()


class SpecError(NasdslError):
    """The spec is malformed: syntax, unknown keys, wrong types, bad values."""


class LimitError(SpecError):
    """The spec exceeds a safety limit (size, depth, expansion, parameters)."""


class ShapeError(NasdslError):
    """Shapes do not fit: a kernel larger than its input, a concat of mismatched maps."""


class GraphError(NasdslError):
    """The graph is not well formed: cycles, dangling references, duplicate names."""


class CodegenError(NasdslError):
    """A backend cannot lower what the spec describes."""


class WeightsError(NasdslError):
    """A weights file that cannot be read, or a state_dict that does not fit the spec."""


class DataError(NasdslError):
    """Evaluation or training data that cannot be used: a folder, an image (nasdsl/imagefolder.py)."""


class ErrorList(NasdslError):
    """Several errors found in one go; ``check`` reports them all."""

    def __init__(self, errors: list[NasdslError]):
        self.errors = sorted(errors, key=_sort_key)
        super().__init__("\n".join(e.format() for e in self.errors))

    def format(self) -> str:
        return "\n".join(e.format() for e in self.errors)


def _sort_key(e: NasdslError):
    loc = e.location
    return (loc is None, loc or Location("", 0, 0), e.path or "", e.message)


class UsageError(NasdslError):
    """A bad command-line option (exit 2)."""
