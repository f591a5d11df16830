"""What an imported op becomes: the records the op tables of both frontends return.

Each frontend keeps one table from its source ops to these records (PyTorch modules,
functions and methods in :mod:`nasdsl.importer.torch_ops`; ONNX op types in
:mod:`nasdsl.importer.onnx_ops`), so that a new op of ``nasdsl/ops.py`` is one entry in each.
A handler returns one :class:`Lowered` or a chain of them (``x.mean([2, 3])`` is a global
average pool and a flatten), or raises :class:`Unsupported` with what it cannot say.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class Unsupported(Exception):
    """A handler's refusal; the frontend turns it into an ImportFailure naming the node."""


@dataclass(frozen=True)
class Lowered:
    """One nasdsl op with its attributes as a spec writes them. ``suffix`` names a node
    after the first of a chain (``mean`` then ``mean_flatten``)."""

    op: str
    attrs: dict = field(default_factory=dict)
    suffix: str = ""


def pair(v: object) -> object:
    """A pair attribute as a spec writes it: one integer when both are equal, else ``[h, w]``."""
    if isinstance(v, (list, tuple)):
        if len(v) == 1:
            return int(v[0])
        if len(v) != 2:
            raise Unsupported(f"expected one or two sizes, got {len(v)}")
        a, b = int(v[0]), int(v[1])
        return a if a == b else [a, b]
    return int(v)
