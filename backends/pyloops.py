"""Repeated blocks written as loops: ``for i in range(...)`` instead of one line per block.

A ``repeat`` in a spec expands to a sequence of blocks that differ only in numbers
that follow the index (DenseNet's growing input, ``64 + 32 * i``) and in names that
count (``denselayer1``, ``denselayer2``...). The PyTorch backend first writes every
block as a call with concrete values, then asks :func:`loop_lines` whether the
calls, from some block on, are one call whose differing integers are affine in the
index; if so the class builds the sequence with a loop, as torchvision's DenseNet
does::

    self.denseblock1 = nn.Sequential()
    for i in range(6):
        self.denseblock1.add_module(f"denselayer{i + 1}", DenseLayer(64 + 32 * i, 32))

The loop is found from the calls themselves and checked against every one of them,
so whatever the loop writes is exactly what the list would have written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .pyformat import Call, layout

#: The fewest blocks worth a loop; below it, one line per block reads better.
MIN_LOOP = 3

_INT = re.compile(r"-?[0-9]+")
_KEYWORD = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)", re.DOTALL)
_COUNTED = re.compile(r"([A-Za-z_][A-Za-z0-9_-]*?)([0-9]+)")


def _leaves(x: str | Call, shape: list[str], values: list[str]) -> None:
    """Split a call into its skeleton (function names, keywords) and its argument texts."""
    if isinstance(x, str):
        m = _KEYWORD.fullmatch(x)
        if m:
            shape.append(f"{m.group(1)}=")
            values.append(m.group(2))
        else:
            shape.append("")
            values.append(x)
        return
    shape.append(f"{x.func}{x.open}{len(x.args)}{x.close}")
    for a in x.args:
        _leaves(a, shape, values)


def _rebuild(x: str | Call, values: list[str]) -> str | Call:
    """The call with its argument texts taken, in order, from ``values``."""
    if isinstance(x, str):
        m = _KEYWORD.fullmatch(x)
        v = values.pop(0)
        return f"{m.group(1)}={v}" if m else v
    return Call(x.func, tuple(_rebuild(a, values) for a in x.args), x.open, x.close)


def affine(values: list[int], start: int, index: str) -> str | None:
    """``a + b * index`` written for ``values`` at ``index = start, start + 1, ...``, or None."""
    if len(values) < 2:
        return None
    step = values[1] - values[0]
    base = values[0] - step * start
    if any(v != base + step * (start + k) for k, v in enumerate(values)):
        return None
    term = index if step == 1 else f"{step} * {index}"
    if step == 0:
        return str(base)
    if base == 0:
        return term
    if step == 1:
        return f"{index} + {base}" if base > 0 else f"{index} - {-base}"
    return f"{base} + {term}" if step > 0 else f"{base} - {-step} * {index}"


def _fit(calls: list[Call], start: int, index: str) -> Call | None:
    """One call that gives ``calls[k]`` at ``index = start + k``, or None."""
    shapes, texts = [], []
    for c in calls:
        shape: list[str] = []
        values: list[str] = []
        _leaves(c, shape, values)
        shapes.append(shape)
        texts.append(values)
    if any(s != shapes[0] for s in shapes[1:]):
        return None
    fitted: list[str] = []
    for column in zip(*texts, strict=True):
        if all(v == column[0] for v in column):
            fitted.append(column[0])
            continue
        if not all(_INT.fullmatch(v) for v in column):
            return None
        text = affine([int(v) for v in column], start, index)
        if text is None:
            return None
        fitted.append(text)
    return _rebuild(calls[0], fitted)  # type: ignore[return-value]


def _name_pattern(names: list[str], start: int, index: str) -> str | None:
    """An f-string giving ``names`` at ``index = start, ...`` (``f"layer{i + 1}"``), or None."""
    parts = [_COUNTED.fullmatch(n) for n in names]
    if not all(parts) or any(p.group(1) != parts[0].group(1) for p in parts):  # type: ignore[union-attr]
        return None
    numbers = [int(p.group(2)) for p in parts]  # type: ignore[union-attr]
    if any(str(n) != p.group(2) for n, p in zip(numbers, parts, strict=True)):  # type: ignore[union-attr]
        return None  # leading zeros: 'layer01'
    text = affine(numbers, start, index)
    if text is None:
        return None
    return f'f"{parts[0].group(1)}{{{text}}}"'  # type: ignore[union-attr]


@dataclass(frozen=True)
class Loop:
    """A loop that builds blocks ``start`` on, each ``body`` (``index`` in it), named by the
    f-string ``pattern`` (None: numbered)."""

    start: int
    body: Call
    pattern: str | None


def find_loop(calls: list[Call], names: list[str] | None, index: str, count: str | None = None) -> Loop | None:
    """The loop that writes ``calls`` (named ``names``, or numbered 0, 1, ... when None), or None
    when no loop of at least :data:`MIN_LOOP` blocks writes them. The blocks before the loop, if
    the first ones differ (ResNet's strided first block), are written out in the constructor.
    ``count`` is the number of blocks as the class's arguments give it (``num_layers``), written
    as the loop's end in place of the number; with it the loop is written for fewer blocks too,
    so that a class reads the same at every count; where the first block differs from the others
    (it reads the class's input, ``in_channels``, where the others read what the block before
    makes), it is written before a loop from 1, which is right at every count of 1 or more."""
    starts = range(min(2, len(calls))) if count is not None else range(len(calls) - MIN_LOOP + 1)
    for start in starts:
        body = _fit(calls[start:], start, index)
        pattern = None
        if names is not None:  # one name after the first says no pattern: the names from the first do
            tail = len(names) - start > 1
            pattern = _name_pattern(names[start:], start, index) if tail else _name_pattern(names, 0, index)
        if body is not None and (names is None or pattern is not None):
            return Loop(start, body, pattern)
    if count is not None:
        return find_loop(calls, names, index)
    return None


def loop_lines(
    attribute: str,
    calls: list[Call],
    names: list[str] | None,
    index: str,
    indent: int,
    count: str | None = None,
    loop: Loop | None = None,
) -> list[str] | None:
    """``__init__`` lines that build ``attribute`` (empty: the class itself) as an
    ``nn.Sequential`` of ``calls`` with ``loop`` (by default the one :func:`find_loop` finds),
    or None where there is none."""
    loop = loop or find_loop(calls, names, index, count)
    if loop is None:
        return None
    return _loop(attribute, calls, names, index, indent, loop, count)


def _loop(
    attribute: str, calls: list[Call], names: list[str] | None, index: str, indent: int, loop: Loop, count: str | None
) -> list[str]:
    """The lines of :func:`loop_lines` for a loop from block ``start`` on, each block ``body``.
    An empty ``attribute`` is the class itself, an ``nn.Sequential`` built by ``super().__init__``."""
    start, body = loop.start, loop.body
    target = f"self.{attribute}" if attribute else "self"
    sequential = "nn.Sequential" if attribute else "super().__init__"
    if names is None:
        add = Call(f"{target}.append", (body,))
        head = Call(sequential, tuple(calls[:start]))
    else:
        add = Call(f"{target}.add_module", (loop.pattern, body))
        pairs = tuple(Call("", (f'"{n}"', c)) for n, c in zip(names[:start], calls[:start], strict=True))
        head = Call(sequential, (Call("OrderedDict", (Call("", pairs, "[", "]"),)),) if pairs else ())
    end = count if count is not None else str(len(calls))
    span = f"range({end})" if start == 0 else f"range({start}, {end})"
    used = re.search(rf"\b{index}\b", add.flat()) is not None
    lines = layout(f"{target} = " if attribute else "", head, indent)
    lines.append("    " * indent + f"for {index if used else '_'} in {span}:")
    return lines + layout("", add, indent + 1)
