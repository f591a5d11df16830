"""Shape arithmetic in a traced forward, evaluated at the traced input's size.

A forward that reads ``x.shape`` (torchvision's ViT: ``n, c, h, w = x.shape``, ``torch._assert(h ==
self.image_size, ...)``, ``x.reshape(n, self.hidden_dim, n_h * n_w)``) records those reads and
the arithmetic on them as fx nodes. A spec is written for one input size (``--input-shape``), so
each such node is a constant there: :func:`evaluate` computes it from the shapes the example input
gave (a size, or a number made of sizes: ``q.shape[-1] ** -0.5``, which a spec writes as a
constant). The batch size alone is not a constant of the spec: it is :class:`Batch`, which may only
stand where a batch axis goes (the first size of a reshape or an expand); arithmetic on it is
refused. An assertion that held on the example input is dropped.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
import torch.fx as fx


@dataclass(frozen=True)
class Batch:
    """The batch size, read from the tensor ``of``'s shape."""

    of: fx.Node


class NotShape(Exception):
    """The node is no shape arithmetic: the op tables read it."""


class BatchArithmetic(Exception):
    """Arithmetic on the batch size: no spec size says it."""


_ARITHMETIC = {
    operator.add: operator.add,
    operator.sub: operator.sub,
    operator.mul: operator.mul,
    operator.floordiv: operator.floordiv,
    operator.truediv: operator.truediv,
    operator.pow: operator.pow,
    operator.mod: operator.mod,
    operator.eq: operator.eq,
    operator.ne: operator.ne,
    operator.lt: operator.lt,
    operator.le: operator.le,
    operator.gt: operator.gt,
    operator.ge: operator.ge,
    operator.neg: operator.neg,
    operator.not_: operator.not_,
}

#: what an evaluated assertion is: nothing a spec writes
ASSERTED = object()


def _shape(node: fx.Node) -> tuple:
    meta = node.meta.get("tensor_meta")
    if not hasattr(meta, "shape"):
        raise NotShape
    return (Batch(node), *(int(d) for d in meta.shape[1:]))


def evaluate(node: fx.Node, consts: dict[fx.Node, object]) -> object:
    """The value of ``node`` when it is shape arithmetic (a size, a tuple of sizes, a truth
    value, :data:`ASSERTED`); raises :class:`NotShape` otherwise."""

    def value(a: object) -> object:
        if isinstance(a, fx.Node):
            if a not in consts:
                raise NotShape
            return consts[a]
        if isinstance(a, (tuple, list)):
            return type(a)(value(x) for x in a)
        return a

    target, args = node.target, node.args
    if node.op == "call_function" and target is getattr and len(args) == 2 and args[1] == "shape":
        return _shape(args[0])
    if node.op == "call_method" and target == "size" and isinstance(args[0], fx.Node):
        shape = _shape(args[0])
        dim = args[1] if len(args) > 1 else node.kwargs.get("dim")
        return shape if dim is None else shape[value(dim)]
    if node.op == "call_method" and target == "dim" and isinstance(args[0], fx.Node):
        return len(_shape(args[0]))
    if node.op != "call_function":
        raise NotShape
    if target is torch._assert:
        if value(args[0]) is not True:  # pragma: no cover - the example input ran through it
            raise NotShape
        return ASSERTED
    if target is operator.getitem and isinstance(args[0], fx.Node) and args[0] in consts:
        return consts[args[0]][value(args[1])]
    if target in _ARITHMETIC and any(isinstance(a, fx.Node) and a in consts for a in args):
        operands = [value(a) for a in args]
        if any(isinstance(v, Batch) for v in operands):
            raise BatchArithmetic
        if not all(type(v) in (int, bool, float) for v in operands):
            raise NotShape
        try:
            return _ARITHMETIC[target](*operands)
        except (ZeroDivisionError, OverflowError, ValueError):
            raise NotShape from None  # read as an op, which no spec op computes
    raise NotShape
