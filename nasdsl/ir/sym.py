"""Symbolic integers: the IR's value for a size a generated class computes from its arguments.

A :class:`Sym` is an immutable integer expression over names (``c1x1 + c3x3 * 2``,
``in_channels // 4``, ``min(width, 64)``), folded as it is built and rendered as
Python source. The IR stores attributes, template arguments and tensor shapes as
such expressions wherever a generated class computes them from its parameters
(``docs/ir.md``); the spec's expression language (:mod:`nasdsl.expr`) evaluates
to them when names are symbols. Nothing here depends on the parser.
"""

from __future__ import annotations

import dataclasses
import functools
import keyword
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

MAX_SYM_DEPTH = 64
"""The deepest symbolic expression; deeper ones raise :class:`SymbolicError`."""

# Binding power of Python's operators, lowest first (the expression parser uses the same table).
# LOWEST is the context of a whole expression.
LOWEST, COND, OR, AND, NOT, CMP, ADD, MUL, UNARY, POW, ATOM = range(11)
_LOWEST, _ADD, _MUL, _UNARY, _ATOM = LOWEST, ADD, MUL, UNARY, ATOM

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_IDENTIFIER = IDENTIFIER


class SymbolicError(Exception):
    """An operation cannot be done on a symbolic integer (:class:`Sym`)."""


def is_identifier(name: str) -> bool:
    """Whether ``name`` is an ASCII identifier: ``[A-Za-z_][A-Za-z0-9_]*``."""
    return isinstance(name, str) and _IDENTIFIER.fullmatch(name) is not None


def _is_dotted_identifier(text: object) -> bool:
    return isinstance(text, str) and all(
        is_identifier(part) and not keyword.iskeyword(part) for part in text.split(".")
    )


def renamer(rename: Mapping[str, str] | None) -> Callable[[str], str]:
    """A function mapping names through ``rename``; refuses targets that are not (dotted) identifiers."""

    def lookup(name: str) -> str:
        target = rename.get(name, name) if rename else name
        if not _is_dotted_identifier(target):
            raise ValueError(f"cannot rename {name!r} to {target!r}: not an identifier or dotted name")
        return target

    return lookup


_renamer = renamer


def wrap(text_and_precedence: tuple[str, int], min_precedence: int) -> str:
    """Source text in parentheses when its outermost operator binds less than ``min_precedence``."""
    text, precedence = text_and_precedence
    return f"({text})" if precedence < min_precedence else text


_wrap = wrap


def _refuse(message: str) -> Callable[..., object]:
    def method(self: Sym, *args: object) -> object:
        raise SymbolicError(message)

    return method


class Sym:
    """An immutable symbolic integer expression, such as ``c1x1 + c3x3 * 2``.

    Make names with :meth:`Sym.name` and combine them with ints and other
    ``Sym`` through ``+ - * //`` and unary ``-``. Results are folded: an
    operation without names gives a plain int. Equality and hashing are
    structural. Truth, ordering, ``/``, ``%``, ``**``, ``abs``, ``float()`` and
    ``int()`` raise :class:`SymbolicError`: a ``Sym`` has no value yet.
    """

    __slots__ = ("_depth",)

    @staticmethod
    def name(n: str) -> Sym:
        """The symbol for the identifier ``n`` (one shared object per name: a Sym is immutable)."""
        return _symbol(n)

    def __post_init__(self) -> None:
        depth = 1 + max((c._depth for c in self._children() if isinstance(c, Sym)), default=0)
        if depth > MAX_SYM_DEPTH:
            message = f"symbolic expression is nested too deeply (more than {MAX_SYM_DEPTH} levels)"
            raise SymbolicError(message)
        object.__setattr__(self, "_depth", depth)

    def _children(self) -> tuple[Sym | int, ...]:
        raise NotImplementedError

    def __reduce__(self) -> tuple[type, tuple[object, ...]]:
        # Rebuild through __init__ (for copy and pickle) so that the depth is computed again.
        return type(self), tuple(getattr(self, f.name) for f in dataclasses.fields(self))

    @property
    def names(self) -> frozenset[str]:
        """The names the expression uses."""
        return frozenset().union(*(c.names for c in self._children() if isinstance(c, Sym)))

    def render(self, rename: Mapping[str, str] | None = None) -> str:
        """Python source computing the same integer, names mapped through ``rename``."""
        return _render_sym(self, _renamer(rename))[0]

    def substitute(self, values: Mapping[str, int | Sym]) -> int | Sym:
        """The expression with names replaced by ``values``; an int once no names are left.

        Names missing from ``values`` stay symbolic. Division by zero raises
        ``ZeroDivisionError``.
        """
        return _substitute(self, values)

    def __str__(self) -> str:
        return self.render()

    def __repr__(self) -> str:
        return f"Sym({self.render()!r})"

    def __add__(self, other: object) -> Sym | int:
        operand = _sym_operand(other)
        return NotImplemented if operand is None else _sym_add(self, operand)

    def __radd__(self, other: object) -> Sym | int:
        operand = _sym_operand(other)
        return NotImplemented if operand is None else _sym_add(operand, self)

    def __sub__(self, other: object) -> Sym | int:
        operand = _sym_operand(other)
        return NotImplemented if operand is None else _sym_add(self, _sym_scale(operand, -1))

    def __rsub__(self, other: object) -> Sym | int:
        operand = _sym_operand(other)
        return NotImplemented if operand is None else _sym_add(operand, _sym_scale(self, -1))

    def __mul__(self, other: object) -> Sym | int:
        operand = _sym_operand(other)
        return NotImplemented if operand is None else _sym_mul(self, operand)

    def __rmul__(self, other: object) -> Sym | int:
        operand = _sym_operand(other)
        return NotImplemented if operand is None else _sym_mul(operand, self)

    def __floordiv__(self, other: object) -> Sym | int:
        operand = _sym_operand(other)
        return NotImplemented if operand is None else _sym_floordiv(self, operand)

    def __rfloordiv__(self, other: object) -> Sym | int:
        operand = _sym_operand(other)
        return NotImplemented if operand is None else _sym_floordiv(operand, self)

    def __neg__(self) -> Sym | int:
        return _sym_scale(self, -1)

    def __pos__(self) -> Sym:
        return self

    __bool__ = _refuse("a symbolic integer has no truth value")
    __lt__ = __le__ = __gt__ = __ge__ = _refuse("cannot order symbolic integers")
    __truediv__ = __rtruediv__ = _refuse("cannot apply '/' to a symbolic integer")
    __mod__ = __rmod__ = __divmod__ = __rdivmod__ = _refuse("cannot apply '%' to a symbolic integer")
    __pow__ = __rpow__ = _refuse("cannot apply '**' to a symbolic integer")
    __abs__ = _refuse("cannot apply abs() to a symbolic integer")
    __round__ = __floor__ = __ceil__ = __trunc__ = _refuse("cannot round a symbolic integer")
    __int__ = __index__ = __float__ = __complex__ = _refuse("a symbolic integer has no value yet")


@dataclass(frozen=True, slots=True, repr=False)
class _SName(Sym):
    ident: str

    def _children(self) -> tuple[Sym | int, ...]:
        return ()

    @property
    def names(self) -> frozenset[str]:
        return frozenset({self.ident})


@dataclass(frozen=True, slots=True, repr=False)
class _SLin(Sym):
    """``sum(base * coefficient) + const``: no base is an _SLin, no coefficient 0."""

    terms: tuple[tuple[Sym, int], ...]
    const: int

    def _children(self) -> tuple[Sym | int, ...]:
        return tuple(base for base, _ in self.terms)


@dataclass(frozen=True, slots=True, repr=False)
class _SProd(Sym):
    """A product of two or more factors; none is an _SProd or a scaled term."""

    factors: tuple[Sym, ...]

    def _children(self) -> tuple[Sym | int, ...]:
        return self.factors


@dataclass(frozen=True, slots=True, repr=False)
class _SDiv(Sym):
    """``num // den`` with at least one side symbolic."""

    num: Sym | int
    den: Sym | int

    def _children(self) -> tuple[Sym | int, ...]:
        return (self.num, self.den)


@dataclass(frozen=True, slots=True, repr=False)
class _SMinMax(Sym):
    """``min(...)`` or ``max(...)`` of distinct symbols and at most one int, last."""

    func: str
    args: tuple[Sym | int, ...]

    def _children(self) -> tuple[Sym | int, ...]:
        return self.args


@functools.lru_cache(maxsize=65536)
def _symbol(n: str) -> Sym:
    if not is_identifier(n) or keyword.iskeyword(n):
        raise ValueError(f"not an identifier: {n!r}")
    return _SName(n)


def _sym_operand(value: object) -> Sym | int | None:
    """``value`` if it can be combined with a Sym, None if it is foreign; raises for bools and floats."""
    if isinstance(value, bool):
        raise SymbolicError("cannot combine a symbolic integer with a boolean")
    if isinstance(value, float):
        raise SymbolicError("cannot combine a symbolic integer with a float")
    if isinstance(value, (int, Sym)):
        return value
    return None


def _linear_parts(value: Sym | int) -> tuple[list[tuple[Sym, int]], int]:
    if isinstance(value, int):
        return [], value
    if isinstance(value, _SLin):
        return list(value.terms), value.const
    return [(value, 1)], 0


def _make_linear(terms: list[tuple[Sym, int]], const: int) -> Sym | int:
    merged: dict[Sym, int] = {}
    for base, coefficient in terms:
        merged[base] = merged.get(base, 0) + coefficient
    kept = tuple((base, c) for base, c in merged.items() if c != 0)
    if not kept:
        return const
    if len(kept) == 1 and kept[0][1] == 1 and const == 0:
        return kept[0][0]
    return _SLin(kept, const)


def _sym_add(left: Sym | int, right: Sym | int) -> Sym | int:
    left_terms, left_const = _linear_parts(left)
    right_terms, right_const = _linear_parts(right)
    return _make_linear(left_terms + right_terms, left_const + right_const)


def _sym_scale(value: Sym | int, factor: int) -> Sym | int:
    if factor == 0:
        return 0
    terms, const = _linear_parts(value)
    return _make_linear([(base, c * factor) for base, c in terms], const * factor)


def _split_coefficient(value: Sym) -> tuple[int, Sym]:
    """``(c, base)`` with ``value == base * c``."""
    if isinstance(value, _SLin) and len(value.terms) == 1 and value.const == 0:
        base, coefficient = value.terms[0]
        return coefficient, base
    return 1, value


def _sym_mul(left: Sym | int, right: Sym | int) -> Sym | int:
    if isinstance(left, int):
        return _sym_scale(right, left)
    if isinstance(right, int):
        return _sym_scale(left, right)
    left_c, left_base = _split_coefficient(left)
    right_c, right_base = _split_coefficient(right)
    factors = _factors(left_base) + _factors(right_base)
    return _sym_scale(_SProd(factors), left_c * right_c)


def _factors(value: Sym) -> tuple[Sym, ...]:
    return value.factors if isinstance(value, _SProd) else (value,)


def _sym_floordiv(num: Sym | int, den: Sym | int) -> Sym | int:
    if not isinstance(den, int):
        return _SDiv(num, den)
    if den == 0:
        raise ZeroDivisionError("integer division by zero")
    if isinstance(num, int):
        return num // den
    terms, const = _linear_parts(num)
    if all(c % den == 0 for _, c in terms):
        # (den * m + k) // den == m + k // den for any integer m.
        return _make_linear([(base, c // den) for base, c in terms], const // den)
    if den > 0 and isinstance(num, _SDiv) and isinstance(num.den, int):
        # floor(floor(x) / m) == floor(x / m) for a positive integer m.
        return _SDiv(num.num, num.den * den)
    return _SDiv(num, den)


def _sym_min_max(func: str, values: list[Sym | int]) -> Sym | int:
    pick = min if func == "min" else max
    symbols: list[Sym | int] = []
    constants: list[int] = []
    for value in values:
        nested = value.args if isinstance(value, _SMinMax) and value.func == func else (value,)
        for item in nested:
            if isinstance(item, int):
                constants.append(item)
            elif item not in symbols:
                symbols.append(item)
    if not symbols:
        return pick(constants)
    if constants:
        symbols.append(pick(constants))
    return symbols[0] if len(symbols) == 1 else _SMinMax(func, tuple(symbols))


def _substitute(value: Sym | int, values: Mapping[str, int | Sym]) -> Sym | int:
    match value:
        case int():
            return value
        case _SName():
            if value.ident not in values:
                return value
            replacement = _sym_operand(values[value.ident])
            if replacement is None:
                raise TypeError(f"expected an int or a Sym for {value.ident!r}")
            return replacement
        case _SLin():
            total: Sym | int = value.const
            for base, coefficient in value.terms:
                total = _sym_add(total, _sym_scale(_substitute(base, values), coefficient))
            return total
        case _SProd():
            product: Sym | int = 1
            for factor in value.factors:
                product = _sym_mul(product, _substitute(factor, values))
            return product
        case _SDiv():
            return _sym_floordiv(_substitute(value.num, values), _substitute(value.den, values))
        case _SMinMax():
            return _sym_min_max(value.func, [_substitute(arg, values) for arg in value.args])
    raise AssertionError(f"unknown symbolic value {value!r}")


def _render_sym(value: Sym | int, rename: Callable[[str], str]) -> tuple[str, int]:
    """Python source for ``value`` and the binding power of its outermost operator."""
    match value:
        case int():
            return str(value), (_ATOM if value >= 0 else _UNARY)
        case _SName():
            return rename(value.ident), _ATOM
        case _SLin():
            return _render_linear(value, rename)
        case _SProd():
            first, *rest = value.factors
            parts = [_wrap(_render_sym(first, rename), _MUL)]
            parts += [_wrap(_render_sym(factor, rename), _UNARY) for factor in rest]
            return " * ".join(parts), _MUL
        case _SDiv():
            num = _wrap(_render_sym(value.num, rename), _MUL)
            den = _wrap(_render_sym(value.den, rename), _UNARY)
            return f"{num} // {den}", _MUL
        case _SMinMax():
            args = ", ".join(_wrap(_render_sym(arg, rename), _LOWEST) for arg in value.args)
            return f"{value.func}({args})", _ATOM
    raise AssertionError(f"unknown symbolic value {value!r}")


def _render_term(base: Sym, coefficient: int, rename: Callable[[str], str]) -> str:
    """``base * coefficient`` as a product (binding power _MUL or tighter)."""
    if coefficient == 1:
        return _wrap(_render_sym(base, rename), _MUL)
    if coefficient == -1:
        return "-" + _wrap(_render_sym(base, rename), _UNARY)
    if coefficient > 0:
        return f"{_wrap(_render_sym(base, rename), _MUL)} * {coefficient}"
    return f"-{_wrap(_render_sym(base, rename), _UNARY)} * {-coefficient}"


def _render_linear(value: _SLin, rename: Callable[[str], str]) -> tuple[str, int]:
    (first_base, first_c), *rest = value.terms
    parts = [_render_term(first_base, first_c, rename)]
    for base, coefficient in rest:
        parts.append(" + " if coefficient > 0 else " - ")
        parts.append(_render_term(base, abs(coefficient), rename))
    if value.const > 0:
        parts.append(f" + {value.const}")
    elif value.const < 0:
        parts.append(f" - {-value.const}")
    if rest or value.const:
        return "".join(parts), _ADD
    return parts[0], (_UNARY if first_c == -1 else _MUL)


__all__ = ["MAX_SYM_DEPTH", "Sym", "SymbolicError", "is_identifier", "renamer", "wrap"]
