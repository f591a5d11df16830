"""Consecutive uses of one template as a ``repeat``.

A block whose entries are all uses of one template, each reading the one before, is a
``repeat`` when every argument follows the index: the same in every use, the first use's
own then the same (``"2 if i == 0 else 1"``, ``"i == 0"``), or an arithmetic progression
(``"64 + 32 * i"``). Names that number the uses from some k (``denselayer1`` ...,
``block1-0`` ...) become a name pattern (``"denselayer{i + 1}"``). In a list, a run of at
least three such uses becomes a ``flat: true`` repeat of its own. A named sequence whose
names are not identifiers (RegNet's ``block1-0``) can only be written as a repeat; its
arguments may then be a chain of conditionals.
"""

from __future__ import annotations

import re

from nasdsl.importer.bodies import PREV, Item
from nasdsl.importer.params import Expr

#: the longest chain of conditionals written for arguments that follow no pattern
MAX_CHAIN = 8


def _lit(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(float(f"{v:.12g}"))
    return str(v)


def index_expr(values: list[object], *, chain: bool = False) -> object | None:
    """The values of one argument over the iterations as an expression of ``i``, or None."""
    first = values[0]
    if all(_same(v, first) for v in values):
        return first
    if any(isinstance(v, (list, tuple, Expr, str)) for v in values):
        return None
    rest = values[1:]
    if all(_same(v, rest[0]) for v in rest):
        if isinstance(first, bool) and isinstance(rest[0], bool):
            return Expr("i == 0" if first else "i != 0")
        return Expr(f"{_lit(first)} if i == 0 else {_lit(rest[0])}")
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        step = values[1] - values[0]
        if all(v == first + step * k for k, v in enumerate(values)):
            return Expr(_linear(first, step))
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        step = values[1] - values[0]
        scale = max(abs(float(v)) for v in values) or 1.0
        if all(abs(first + step * k - v) <= 1e-12 * scale for k, v in enumerate(values)):
            return Expr(_linear(first, step))
    if chain and len(values) <= MAX_CHAIN and not any(isinstance(v, (list, tuple)) for v in values):
        text = _lit(values[-1])
        for k in range(len(values) - 2, -1, -1):
            text = (
                f"{_lit(values[k])} if i == {k} else ({text})"
                if k < len(values) - 2
                else f"{_lit(values[k])} if i == {k} else {text}"
            )
        return Expr(text)
    return None


def _linear(first: object, step: object) -> str:
    if first == 0:
        return f"{_lit(step)} * i"
    if isinstance(step, (int, float)) and step < 0:
        return f"{_lit(first)} - {_lit(-step)} * i"
    return f"{_lit(first)} + {_lit(step)} * i"


def _same(a: object, b: object) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, Expr) or isinstance(b, Expr):
        return isinstance(a, Expr) and isinstance(b, Expr) and a.text == b.text
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    return a == b


def name_pattern(names: list[str]) -> str | None:
    """``denselayer{i + 1}`` for denselayer1, denselayer2, ...; ``block1-{i}`` for block1-0, ...;
    None for 0, 1, 2 (the default) or names that follow no pattern."""
    if all(n == str(k) for k, n in enumerate(names)):
        return None
    parts = [re.fullmatch(r"(.*?)(\d+)([A-Za-z_-]*)", n) for n in names]
    if not all(parts):
        return ""
    prefixes = {(p[1], p[3]) for p in parts}
    if len(prefixes) != 1:
        return ""
    numbers = [int(p[2]) for p in parts]
    start = numbers[0]
    if numbers != list(range(start, start + len(names))) or any(p[2] != str(int(p[2])) for p in parts):
        return ""
    prefix, suffix = prefixes.pop()
    index = "i" if start == 0 else f"i + {start}"
    return f"{prefix}{{{index}}}{suffix}"


def _run_ok(items: list[Item], writer) -> bool:
    if not items or not all(c.kind == "use" and c.source is PREV and not c.when and c.phase == "both" for c in items):
        return False
    return len({writer.found.assigned[c.scope][0] if c.scope else c.op for c in items}) == 1


def _block_args(items: list[Item], writer, *, chain: bool) -> dict | None:
    per = [writer.args_of(c) for c in items]
    keys = list(per[0])
    if any(list(a) != keys for a in per):
        return None
    out = {}
    for k in keys:
        e = index_expr([a[k] for a in per], chain=chain)
        if e is None:
            return None
        out[k] = e
    return out


def as_repeat(writer, item: Item) -> dict | None:
    """A list or named sequence of one template's uses as ``{repeat: ..., block: ...}``."""
    if item.kind not in ("list", "seq") or not _run_ok(item.children, writer):
        return None
    names = [c.name for c in item.children]
    pattern = name_pattern(names) if item.kind == "seq" else None
    if pattern == "":
        return None
    forced = item.kind == "seq" and not all(n.isidentifier() for n in names)
    args = _block_args(item.children, writer, chain=forced)
    if args is None:
        return None
    if not forced and len(names) < 2:
        return None
    if not forced and len(names) < 3 and not all(not isinstance(v, Expr) for v in args.values()):
        return None
    out: dict = {"repeat": len(names)}
    if pattern:
        out["name"] = pattern
    out["block"] = writer.use_value(item.children[0], args=args)
    return out


def flat_runs(writer, children: list[Item]) -> list:
    """A list's items, with runs of three or more uses of one template that follow the
    index written as ``flat: true`` repeats, then runs of a group of items repeated as it
    is (VGG's ``[conv, batch_norm, relu]`` twice) likewise."""
    return _periodic(_index_runs(writer, children))


def _periodic(values: list) -> list:
    """Consecutive repetitions of the same group of written items as one flat repeat, where
    that is shorter (a group of p items repeated k >= 2 times)."""
    out: list = []
    k = 0
    while k < len(values):
        best = None
        for period in range(1, 5):
            reps = 1
            while (
                k + (reps + 1) * period <= len(values)
                and values[k + reps * period : k + (reps + 1) * period] == values[k : k + period]
            ):
                reps += 1
            group = values[k : k + period]
            flat_inside = any(isinstance(v, dict) and v.get("flat") for v in group)
            if reps >= 2 and not flat_inside and (best is None or reps * period > best[0] * best[1]):
                best = (reps, period)
        if best is None or best[0] * best[1] < 3:
            out.append(values[k])
            k += 1
            continue
        reps, period = best
        out.append({"repeat": reps, "flat": True, "block": list(values[k : k + period])})
        k += reps * period
    return out


def _index_runs(writer, children: list[Item]) -> list:
    out: list = []
    k = 0
    while k < len(children):
        best = None
        for end in range(len(children), k + 2, -1):
            run = children[k:end]
            if not _run_ok(run, writer):
                continue
            args = _block_args(run, writer, chain=False)
            if args is None:
                continue
            best = (end, args)
            break
        if best is None:
            out.append(writer.value(children[k]))
            k += 1
            continue
        end, args = best
        out.append({"repeat": end - k, "flat": True, "block": [writer.use_value(children[k], args=args)]})
        k = end
    return out
