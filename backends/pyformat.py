"""Lay out generated Python the way ``ruff format`` (and black) would.

The PyTorch backend builds calls as small trees (:class:`Call`) and asks
:func:`layout` for lines; the result is already formatted, so generated files
pass ``ruff format --check`` without running a formatter at generation time.
Only the shapes the backend produces are handled: assignments, returns and
expression statements whose right-hand side is a (nested) call or a list.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

LINE_LENGTH = 88
INDENT = "    "


@dataclass(frozen=True)
class Call:
    """``func(args...)``; an argument is a string or another Call."""

    func: str
    args: tuple[str | Call, ...] = ()
    open: str = "("
    close: str = ")"

    def flat(self) -> str:
        inner = ", ".join(a if isinstance(a, str) else a.flat() for a in self.args)
        return f"{self.func}{self.open}{inner}{self.close}"


@dataclass(frozen=True)
class Chain:
    """``a + b + c``: terms joined by a binary operator; a long one is split as ruff splits it
    (in parentheses, on one line if it fits there, else one term a line, the operator first)."""

    op: str
    terms: tuple[str, ...]

    def flat(self) -> str:
        return f" {self.op} ".join(self.terms)


def flat(x: str | Call | Chain) -> str:
    return x if isinstance(x, str) else x.flat()


def layout(
    prefix: str, value: str | Call | Chain, indent: int, suffix: str = "", comment: str = "", pragma: str = ""
) -> list[str]:
    """Lines for ``prefix + value + suffix`` at ``indent`` levels, split like ruff.

    A trailing ``comment`` stays on the line when everything fits, else it
    goes on its own line above the statement. A ``pragma`` (``noqa: ...``)
    always ends the first line; ruff does not count it in the line length.
    """
    if pragma:
        lines = layout(prefix, value, indent, suffix)
        return [f"{lines[0]}  # {pragma}", *lines[1:]]
    pad = INDENT * indent
    one = f"{pad}{prefix}{flat(value)}{suffix}"
    if len(one) <= LINE_LENGTH:
        if comment and len(one) + 2 + len(comment) + 2 <= LINE_LENGTH:
            return [f"{one}  # {comment}"]
        return ([f"{pad}# {comment}"] if comment else []) + [one]
    lines = _split(prefix, value, indent, suffix)
    return ([f"{pad}# {comment}"] if comment else []) + lines


def layout_or_none(prefix: str, value: str | Call, condition: str, indent: int) -> list[str]:
    """``prefix + value if condition else None`` laid out as ruff formats it: on one
    line if it fits, else the conditional expression in parentheses, split further
    (value, ``if``, ``else`` on lines of their own) when it does not fit on one line."""
    pad = INDENT * indent
    one = f"{pad}{prefix}{flat(value)} if {condition} else None"
    if len(one) <= LINE_LENGTH:
        return [one]
    inner = f"{pad}{INDENT}{flat(value)} if {condition} else None"
    if len(inner) <= LINE_LENGTH:
        return [f"{pad}{prefix}(", inner, f"{pad})"]
    body = layout("", value, indent + 1)
    return [f"{pad}{prefix}(", *body, f"{pad}{INDENT}if {condition}", f"{pad}{INDENT}else None", f"{pad})"]


def _split(prefix: str, value: str | Call | Chain, indent: int, suffix: str) -> list[str]:
    pad = INDENT * indent
    if isinstance(value, Chain):
        inner = INDENT * (indent + 1)
        body = [inner + value.flat()]
        if len(body[0]) > LINE_LENGTH:
            body = [inner + (f"{value.op} " if i else "") + t for i, t in enumerate(value.terms)]
        return [f"{pad}{prefix}(", *body, f"{pad}){suffix}"]
    if isinstance(value, str) or not value.args:
        return [f"{pad}{prefix}{flat(value)}{suffix}"]
    head = f"{pad}{prefix}{value.func}{value.open}"
    tail = f"{pad}{value.close}{suffix}"
    hugged = INDENT * (indent + 1) + ", ".join(flat(a) for a in value.args)
    # ruff hugs the arguments of a call on one line when they fit; a literal
    # list, tuple or dict that must split puts one item per line
    if len(hugged) <= LINE_LENGTH and value.func:
        return [head, hugged, tail]
    lines = [head]
    for a in value.args:
        inner = INDENT * (indent + 1) + flat(a) + ","
        if len(inner) <= LINE_LENGTH or isinstance(a, str):
            lines.append(inner)
        else:
            lines.extend(_split("", a, indent + 1, ","))
    lines.append(tail)
    return lines


_SAFE_TEXT = re.compile(r"[^A-Za-z0-9 .,;:()\[\]'+*/=%_\-`]")


def safe_text(text: str, limit: int = 400) -> str:
    """Spec text made safe for a comment or docstring: a conservative character
    set (no quotes, backslashes or newlines survive), squeezed spaces, bounded length."""
    text = _SAFE_TEXT.sub(" ", text)
    text = " ".join(text.split())
    return text[:limit].rstrip()


def wrap(text: str, width: int) -> list[str]:
    """Greedy word wrap."""
    lines: list[str] = []
    current = ""
    for word in text.split():
        if current and len(current) + 1 + len(word) > width:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    if current:
        lines.append(current)
    return lines


def docstring(text: str, indent: int, otherwise: str = "") -> list[str]:
    """A docstring laid out as ruff keeps it: one line if it fits, else wrapped.

    ``otherwise`` is said where ``text`` has nothing left once made safe (a doc
    of punctuation or of letters outside ASCII): a class keeps a docstring.
    """
    pad = INDENT * indent
    text = safe_text(text) or safe_text(otherwise)
    if not text:
        return []
    if not text.endswith("."):
        text += "."
    # wrapped to one line (a word longer than the line): ruff joins it with its quotes
    body = wrap(text, LINE_LENGTH - len(pad) - 6)
    if len(pad) + len(text) + 6 <= LINE_LENGTH or len(body) == 1:
        return [f'{pad}"""{text}"""']
    return [f'{pad}"""{body[0]}', *(f"{pad}{b}" for b in body[1:]), f'{pad}"""']


def literal(v: object) -> str:
    """Python source for a plain value from the IR (numbers, bools, strings, tuples, None: a
    template argument given null)."""
    if v is None:
        return "None"
    if isinstance(v, bool):
        return "True" if v else "False"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        r = repr(v)
        return r
    if isinstance(v, (tuple, list)):
        inner = ", ".join(literal(x) for x in v)
        return f"({inner},)" if len(v) == 1 else f"({inner})"
    if isinstance(v, str) and re.fullmatch(r"[a-z_]+", v):
        return f'"{v}"'
    raise TypeError(f"cannot write {type(v).__name__} into generated code")


def docstring_with_args(
    summary: str, args: list[tuple[str, str]], indent: int, *, paragraphs: list[str] = ()
) -> list[str]:
    """A docstring with a summary line, optional paragraphs and an ``Args:`` section
    (Google style), wrapped to the line length; names must be identifiers."""
    pad = INDENT * indent
    width = LINE_LENGTH - len(pad)
    summary = safe_text(summary)
    if summary and not summary.endswith("."):
        summary += "."
    first = wrap(summary, width - 3) or [""]
    lines = [f'{pad}"""{first[0]}', *(f"{pad}{w}" for w in first[1:])]
    for text in paragraphs:
        text = safe_text(text)
        if text:
            if not text.endswith("."):
                text += "."
            lines += ["", *(f"{pad}{w}" for w in wrap(text, width))]
    if args:
        lines += ["", f"{pad}Args:"]
        for name, text in args:
            body = wrap(f"{name}: {safe_text(text)}", width - 4)
            lines.append(f"{pad}    {body[0]}")
            lines += [f"{pad}        {b}" for b in wrap(" ".join(body[1:]), width - 8)] if len(body) > 1 else []
    lines.append(f'{pad}"""')
    return lines
