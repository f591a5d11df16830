"""Numbers a spec may hold: finite, and of magnitude at most 2^53, wherever they stand.

Expressions already keep every number and result within ±2^53 (:data:`nasdsl.expr.MAX_INT`).
A number written plainly (``weight: 1.7e+308``, ``mean: [1e300, 0, 0]``, ``.nan``) used to
reach arithmetic that overflows without a word: two ensemble weights near the float limit
summed to infinity and every share became 0, a mean beyond float32's range became ``inf`` in
the generated model's buffer. :func:`number_errors` walks a loaded document and gives a
located error for every number outside that rule, so that no position can forget the check.

Where a position checks its own range (a channel count, a kernel) its message is more
precise; the caller reports that one first and this module's error for the same place is
then left out (:func:`nasdsl.spec.raise_errors` keeps one error per place).
"""

from __future__ import annotations

import math

from nasdsl.errors import SpecError
from nasdsl.expr import MAX_INT
from nasdsl.loader import YList, YMap
from nasdsl.ops import describe
from nasdsl.spec import join

#: how many out-of-range numbers one document reports before it says how many more
MAX_REPORTED = 10


def number_ok(v: object) -> bool:
    """A number (not a bool) that is finite and within ±2^53; anything else is not a number here."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return True
    if isinstance(v, int):
        return abs(v) <= MAX_INT
    return math.isfinite(v) and abs(v) <= MAX_INT


def number_errors(doc: YMap) -> list[SpecError]:
    """A located :class:`SpecError` for each number of ``doc`` that is not finite or is larger
    in magnitude than 2^53 (at most :data:`MAX_REPORTED`, then one saying how many more)."""
    found: list[SpecError] = []
    more = 0
    stack: list[tuple[object, str]] = [(doc, "")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, YMap):
            items = [(node[k], join(path, k), node.loc_of(k)) for k in node]
        elif isinstance(node, YList):
            items = [(v, join(path, i), node.loc_of(i)) for i, v in enumerate(node)]
        else:
            continue
        for value, where, loc in reversed(items):
            if isinstance(value, (YMap, YList)):
                stack.append((value, where))
            elif not number_ok(value):
                if len(found) < MAX_REPORTED:
                    found.append(
                        SpecError(
                            f"expected a finite number of magnitude at most 2^53 ({MAX_INT:,}), as in expressions, "
                            f"got {describe(value)}",
                            location=loc,
                            path=where,
                        )
                    )
                else:
                    more += 1
    if more:
        last = found[-1]
        found.append(
            SpecError(f"and {more} more numbers out of that range", location=last.location, path=f"{last.path} ...")
        )
    return found


__all__ = ["MAX_REPORTED", "number_errors", "number_ok"]
