"""A small YAML writer for specs: block style for structure, flow style for a layer that fits
on a line, and scalars written so that the spec loader reads them back as they were.

Values are plain Python data: ``dict`` (a mapping, written flow-style when it fits), ``list``,
:class:`Block` (a mapping or list always written block-style: a body, a template), numbers,
booleans, strings and :class:`~nasdsl.importer.params.Expr` (an expression, quoted unless it
is one name). Keys are names. The output is deterministic.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

from nasdsl.importer.params import Expr

WIDTH = 110
_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: plain words YAML reads as something other than a string
_SPECIAL = frozenset(
    {"true", "false", "yes", "no", "on", "off", "null", "y", "n", "True", "False", "Yes", "No", "On", "Off", "Null"}
    | {"TRUE", "FALSE", "YES", "NO", "ON", "OFF", "NULL", "Y", "N"}
)


@dataclass
class Block:
    """A mapping or list that is always written block-style."""

    value: dict | list


def scalar(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"cannot write {v} in a spec")
        text = repr(float(f"{v:.12g}"))  # 12 significant digits: 0.0375, not 0.037500000000000006
        if "e" in text:
            mantissa, exponent = text.split("e")
            if "." not in mantissa:
                mantissa += ".0"
            if exponent[0] not in "+-":
                exponent = "+" + exponent
            text = f"{mantissa}e{exponent}"
        elif "." not in text:
            text += ".0"
        return text
    text = str(v)
    if _PLAIN.match(text) and text not in _SPECIAL:
        return text
    return json.dumps(text)


def flow(v: object) -> str:
    if isinstance(v, Block):
        return flow(v.value)
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {flow(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(flow(x) for x in v) + "]"
    return scalar(v)


def _is_block(v: object) -> bool:
    if isinstance(v, Block):
        return True
    if isinstance(v, dict):
        return any(_is_block(x) for x in v.values())
    if isinstance(v, list):
        return any(_is_block(x) for x in v)
    return False


def entry(key: str, value: object, indent: int) -> list[str]:
    pad = " " * indent
    if not isinstance(value, (dict, list, tuple, Block)):
        return [f"{pad}{key}: {scalar(value)}"]
    if not _is_block(value):
        line = f"{pad}{key}: {flow(value)}"
        if len(line) <= WIDTH:
            return [line]
    raw = value.value if isinstance(value, Block) else value
    lines = [f"{pad}{key}:"]
    if isinstance(raw, dict):
        for k, x in raw.items():
            lines += entry(k, x, indent + 2)
    else:
        for x in raw:
            lines += item(x, indent + 2)
    return lines


def item(value: object, indent: int) -> list[str]:
    """One item of a list."""
    pad = " " * indent
    if not isinstance(value, (dict, list, tuple, Block)):
        return [f"{pad}- {scalar(value)}"]
    if not _is_block(value):
        line = f"{pad}- {flow(value)}"
        if len(line) <= WIDTH:
            return [line]
    raw = value.value if isinstance(value, Block) else value
    if isinstance(raw, dict):
        lines: list[str] = []
        for k, x in raw.items():
            inner = entry(k, x, indent + 2)
            inner[0] = (f"{pad}- " if not lines else f"{pad}  ") + inner[0][indent + 2 :]
            lines += inner
        return lines
    lines = [f"{pad}-"]
    for x in raw:
        lines += item(x, indent + 2)
    return lines


def document(sections: dict, header: list[str]) -> str:
    lines = [f"# {h}" if h else "#" for h in header]
    for key, value in sections.items():
        lines += entry(key, value, 0)
    return "\n".join(lines) + "\n"


__all__ = ["Block", "Expr", "document", "entry", "flow", "item", "scalar"]
