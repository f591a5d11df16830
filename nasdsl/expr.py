"""Safe arithmetic expressions in spec values.

A spec may write a value as an expression over its variables and parameters::

    out: c3x3
    p: dropout
    out: "make_divisible(64 * width)"
    padding: "(k - 1) // 2"

This module parses such text with a hand-written tokenizer and a
precedence-climbing parser (never Python's ``eval``), evaluates it against an
environment of values, and renders it back as Python source. The language is
a small subset of Python's expression syntax and, where both accept a text,
gives the same result as Python.

Lexical rules
-------------
Whitespace (space, tab, CR, LF) separates tokens and is otherwise ignored.

=========== ===============================================================
token       form
=========== ===============================================================
integer     ``0``, ``00``, ``[1-9][0-9]*``; no sign, no ``_``, no ``0x``.
            Leading zeros (``007``) are an error, as in Python.
float       ``1.5``, ``1.``, ``.5``, ``1e-3``, ``2.5E+2``: digits with a
            ``.`` and/or an exponent.
boolean     ``true``, ``false``, ``True``, ``False``
name        ``[A-Za-z_][A-Za-z0-9_]*`` (ASCII only), except the words below
            and Python's other keywords (``None``, ``lambda``, ``import`` ...),
            which are reserved and rejected.
word ops    ``and or not if else``
operators   ``+ - * / // % ** == != < <= > >= ( ) ,``
=========== ===============================================================

There are no strings, attributes, subscripts, lists, lambdas or keyword
arguments: the only things an expression can do are listed here.

Grammar
-------
From the lowest precedence to the highest (``[x]``: optional, ``{x}``: zero or
more times)::

    expression  := disjunction [ "if" disjunction "else" expression ]
    disjunction := conjunction { "or" conjunction }
    conjunction := negation { "and" negation }
    negation    := "not" negation | comparison
    comparison  := sum [ ("==" | "!=" | "<" | "<=" | ">" | ">=") sum ]
    sum         := term { ("+" | "-") term }
    term        := factor { ("*" | "/" | "//" | "%") factor }
    factor      := ("-" | "+") factor | power
    power       := primary [ "**" factor ]
    primary     := integer | float | boolean | name | call | "(" expression ")"
    call        := function "(" [ expression { "," expression } [ "," ] ] ")"
    function    := "min" | "max" | "abs" | "int" | "round" | "floor" | "ceil"
                 | "make_divisible"

Binary operators associate to the left except ``**``, which associates to the
right and binds tighter than a unary minus on its left: ``-2 ** 2 == -4``,
``2 ** -1 == 0.5``, ``2 ** 3 ** 2 == 512``. A comparison cannot be chained
(``a < b < c`` is an error; write ``a < b and b < c``).

Values and types
----------------
A value is an integer, a float, a boolean, or a symbolic integer (:class:`Sym`).
Booleans are not numbers here (unlike Python):

* ``+ - * / // % **``, unary ``-`` and ``+``, ``< <= > >=`` and the functions
  take numbers; a boolean operand is an error ("expected a number, got a
  boolean").
* ``and``, ``or``, ``not`` and the condition of ``if`` take booleans.
  ``and``/``or`` short-circuit and the conditional evaluates one branch only.
* ``==`` and ``!=`` compare two numbers or two booleans.
* ``/`` always gives a float; ``//`` and ``%`` give an integer for integers
  (floor division and modulo as in Python); dividing by zero is an error.
* ``**`` of integers gives an integer, or a float for a negative exponent.
  Zero to a negative power and a negative number to a fractional power are
  errors.

Functions (positional arguments only):

=================================== ========================================
``min(a, b, ...)``, ``max(...)``    two or more numbers
``abs(x)``                          absolute value
``int(x)``                          truncates a float toward zero
``round(x)``                        Python's ``round``: to an integer, ties to
                                    even
``floor(x)``, ``ceil(x)``           ``math.floor``, ``math.ceil``: an integer
``make_divisible(v, d, m)``         :func:`make_divisible`: ``v`` rounded to a
                                    multiple of ``d`` (an integer > 0, default
                                    8), at least ``m`` (an integer, default
                                    ``d``), never 10% below ``v``
=================================== ========================================

Limits
------
An expression is at most :data:`MAX_LENGTH` characters long and at most
:data:`MAX_DEPTH` levels deep, counting each pair of parentheses, each prefix
operator, each ``**`` and ``else`` branch, and each level of the parse tree
(so ``1 + 1 + ... + 1`` may have at most 50 operators). Every integer and
float, literal, input or result, must lie within ``|x| <= 2**53``
(:data:`MAX_INT`); floats must be finite. Powers are refused before they are
computed when they would be out of range.

Errors
------
Every error is an :class:`ExprError` whose ``offset`` is the 0-based index in
the text where the problem is. Syntax errors, unknown functions and wrong
argument counts are found by :func:`parse`; unknown names, type errors,
division by zero and out-of-range results by :meth:`Expr.evaluate`.

Symbolic integers
-----------------
A :class:`Sym` stands for an integer not known yet, such as a constructor
parameter in generated code. Passing ``Sym`` values in the environment makes
``+ - * //``, unary ``-`` and ``+``, ``min``, ``max`` and ``int`` produce a
``Sym``, folded and simplified (``x + 0`` is ``x``, ``(a + 3) + 4`` is
``a + 7``, ``c * 4 * 4`` is ``c * 16``); anything else on a ``Sym``
(comparisons, ``/``, ``%``, ``**``, ``abs``, ``round`` ...) raises
:class:`SymbolicError`, as does building a ``Sym`` nested more than
:data:`MAX_SYM_DEPTH` levels deep. :meth:`Sym.render` writes Python source
that computes the same integer.

Rendering
---------
:meth:`Expr.render` and :meth:`Sym.render` write Python source with minimal
parentheses. Names can be mapped (``rename``) to other identifiers or dotted
names (``self.width``). The functions ``min max abs int round`` are Python
builtins; ``floor`` and ``ceil`` are ``math``'s and ``make_divisible`` is this
module's: code that runs rendered text must have them in scope.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import keyword
import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from nasdsl.errors import Location, SpecError
from nasdsl.ir.sym import (
    ADD,
    AND,
    ATOM,
    CMP,
    COND,
    LOWEST,
    MAX_SYM_DEPTH,
    MUL,
    NOT,
    OR,
    POW,
    UNARY,
    Sym,
    SymbolicError,
    _sym_min_max,
    is_identifier,
    renamer,
    wrap,
)
from nasdsl.ir.sym import IDENTIFIER as IDENTIFIER

__all__ = [
    "MAX_DEPTH",
    "MAX_INT",
    "MAX_LENGTH",
    "MAX_SYM_DEPTH",
    "FUNCTIONS",
    "Expr",
    "ExprError",
    "Sym",
    "SymbolicError",
    "is_identifier",
    "make_divisible",
    "parse",
    "render_value",
]

MAX_LENGTH = 1000
"""The longest expression text, in characters."""

MAX_DEPTH = 50
"""The deepest nesting of parentheses and operators in an expression."""

MAX_INT = 2**53
"""The largest magnitude of any integer or float an expression handles."""

_RANGE = "|n| <= 2**53"
_FLOAT_RANGE = "|x| <= 2**53"


class ExprError(SpecError):
    """An expression is malformed or cannot be evaluated.

    ``offset`` is the 0-based index in the expression text where the problem is.
    """

    def __init__(
        self,
        message: str,
        offset: int = 0,
        *,
        location: Location | None = None,
        path: str | None = None,
    ):
        super().__init__(message, location=location, path=path)
        self.offset = offset


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """MobileNet's channel rounding: ``v`` to the nearest multiple of ``divisor``.

    The result is at least ``min_value`` (``divisor`` when it is None or 0) and
    never more than 10% below ``v``.
    """
    new = max(min_value or divisor, int(v + divisor / 2) // divisor * divisor)
    if new < 0.9 * v:
        new += divisor
    return new


# ---------------------------------------------------------------------------
# Tokens

_NUMBER = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_NUMBER_TAIL = re.compile(r"[A-Za-z0-9_.]*")
_WHITESPACE = frozenset(" \t\r\n")
_OPERATORS = ("**", "//", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "<", ">", "(", ")", ",")
_WORD_OPERATORS = frozenset({"and", "or", "not", "if", "else"})
_BOOLEANS = {"true": True, "false": False, "True": True, "False": False}
_RESERVED = frozenset(keyword.kwlist) - _WORD_OPERATORS - _BOOLEANS.keys()
_HINTS = {
    "'": "strings are not supported",
    '"': "strings are not supported",
    ".": "attribute access is not supported",
    "[": "subscripts and lists are not supported",
    "]": "subscripts and lists are not supported",
    "{": "dictionaries and sets are not supported",
    "}": "dictionaries and sets are not supported",
    "=": "did you mean '=='?",
    "!": "did you mean 'not' or '!='?",
    "&": "did you mean 'and'?",
    "|": "did you mean 'or'?",
}


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "int", "float", "bool", "name", "op" (operators and word operators) or "end"
    text: str
    offset: int
    value: int | float | bool | None = None


def _show(text: str, limit: int = 30) -> str:
    """``text`` cut short for a message."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe_token(token: _Token) -> str:
    return "end of expression" if token.kind == "end" else f"'{_show(token.text)}'"


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        if text[pos] in _WHITESPACE:
            pos += 1
            continue
        token = _number_token(text, pos) or _word_token(text, pos) or _operator_token(text, pos)
        tokens.append(token)
        pos += len(token.text)
    tokens.append(_Token("end", "", len(text)))
    return tokens


def _number_token(text: str, pos: int) -> _Token | None:
    match = _NUMBER.match(text, pos)
    if match is None:
        return None
    literal = match.group()
    tail = _NUMBER_TAIL.match(text, match.end()).group()
    if tail:
        pair = re.fullmatch(r"([1-9][0-9]*)x([1-9][0-9]*)", literal + tail)
        hint = f" (write a pair as [{pair[1]}, {pair[2]}])" if pair else ""
        raise ExprError(f"invalid number '{_show(literal + tail)}'{hint}", pos)
    if any(c in literal for c in ".eE"):
        value = float(literal)
        if not math.isfinite(value) or abs(value) > MAX_INT:
            raise ExprError(f"float {_show(literal)} is out of range ({_FLOAT_RANGE})", pos)
        return _Token("float", literal, pos, value)
    if len(literal) > 1 and literal[0] == "0" and literal.strip("0"):
        raise ExprError(f"invalid number '{_show(literal)}' (leading zeros are not allowed)", pos)
    if len(literal) > 16 or int(literal) > MAX_INT:
        raise ExprError(f"integer {_show(literal)} is out of range ({_RANGE})", pos)
    return _Token("int", literal, pos, int(literal))


def _word_token(text: str, pos: int) -> _Token | None:
    match = IDENTIFIER.match(text, pos)
    if match is None:
        return None
    word = match.group()
    if word in _WORD_OPERATORS:
        return _Token("op", word, pos)
    if word in _BOOLEANS:
        return _Token("bool", word, pos, _BOOLEANS[word])
    if word in _RESERVED:
        raise ExprError(f"'{word}' is a reserved word", pos)
    return _Token("name", word, pos)


def _operator_token(text: str, pos: int) -> _Token:
    for op in _OPERATORS:
        if text.startswith(op, pos):
            return _Token("op", op, pos)
    char = text[pos]
    hint = _HINTS.get(char)
    raise ExprError(f"unexpected character {char!r}" + (f" ({hint})" if hint else ""), pos)


# ---------------------------------------------------------------------------
# Parse tree

# Binding power of each operator: the table of nasdsl.ir.sym, which renders Sym with the same rules.

_BINARY_PRECEDENCE = {
    "or": OR,
    "and": AND,
    "==": CMP,
    "!=": CMP,
    "<": CMP,
    "<=": CMP,
    ">": CMP,
    ">=": CMP,
    "+": ADD,
    "-": ADD,
    "*": MUL,
    "/": MUL,
    "//": MUL,
    "%": MUL,
    "**": POW,
}
_COMPARISONS = frozenset({"==", "!=", "<", "<=", ">", ">="})

# name -> (fewest arguments, most arguments or None for no limit)
_FUNCTIONS: dict[str, tuple[int, int | None]] = {
    "abs": (1, 1),
    "ceil": (1, 1),
    "floor": (1, 1),
    "int": (1, 1),
    "make_divisible": (1, 3),
    "max": (2, None),
    "min": (2, None),
    "round": (1, 1),
}

FUNCTIONS: frozenset[str] = frozenset(_FUNCTIONS)
"""The names of the functions an expression may call."""


class _Node:
    """A node of the parse tree.

    ``offset``: where its text starts; ``depth``: how many levels of operators it holds (0 for a leaf).
    """

    __slots__ = ()
    offset: int
    depth: int


@dataclass(frozen=True, slots=True)
class _Lit(_Node):
    value: int | float | bool
    offset: int
    depth: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class _Var(_Node):
    name: str
    offset: int
    depth: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class _Unary(_Node):
    op: str  # "-", "+" or "not"
    operand: _Node
    offset: int
    depth: int = field(default=1, compare=False)


@dataclass(frozen=True, slots=True)
class _Binary(_Node):
    op: str  # an arithmetic operator, a comparison, "and" or "or"
    left: _Node
    right: _Node
    offset: int
    op_offset: int
    depth: int = field(default=1, compare=False)


@dataclass(frozen=True, slots=True)
class _Cond(_Node):
    body: _Node
    test: _Node
    orelse: _Node
    offset: int
    depth: int = field(default=1, compare=False)


@dataclass(frozen=True, slots=True)
class _Call(_Node):
    func: str
    args: tuple[_Node, ...]
    offset: int
    depth: int = field(default=1, compare=False)


def _height(*children: _Node) -> int:
    return 1 + max((child.depth for child in children), default=0)


def _too_deep(offset: int) -> ExprError:
    return ExprError(f"expression is nested too deeply (more than {MAX_DEPTH} levels)", offset)


class _Parser:
    """Precedence climbing over a token list; one instance per parse."""

    def __init__(self, text: str):
        self._tokens = _tokenize(text)
        self._pos = 0
        self._nesting = 0
        self.names: set[str] = set()

    def parse(self) -> _Node:
        node = self._conditional()
        token = self._peek()
        if token.kind == "end":
            return node
        if token.text == ")":
            raise ExprError("unmatched ')'", token.offset)
        raise ExprError(f"expected an operator, got {_describe_token(token)}", token.offset)

    # -- token helpers

    def _peek(self) -> _Token:
        return self._tokens[self._pos]

    def _advance(self) -> _Token:
        token = self._tokens[self._pos]
        if token.kind != "end":
            self._pos += 1
        return token

    def _at(self, op: str) -> bool:
        token = self._peek()
        return token.kind == "op" and token.text == op

    def _expect(self, op: str) -> _Token:
        token = self._peek()
        if not self._at(op):
            raise ExprError(f"expected '{op}', got {_describe_token(token)}", token.offset)
        return self._advance()

    def _enter(self, token: _Token) -> None:
        """One level deeper into recursion; bounded so that no input exhausts the stack."""
        self._nesting += 1
        if self._nesting > MAX_DEPTH:
            raise _too_deep(token.offset)

    def _leave(self) -> None:
        self._nesting -= 1

    @staticmethod
    def _checked(node: _Node, offset: int) -> _Node:
        if node.depth > MAX_DEPTH:
            raise _too_deep(offset)
        return node

    # -- grammar

    def _conditional(self) -> _Node:
        body = self._binary(LOWEST)
        if not self._at("if"):
            return body
        self._advance()
        test = self._binary(LOWEST)
        else_token = self._expect("else")
        self._enter(else_token)
        orelse = self._conditional()
        self._leave()
        node = _Cond(body, test, orelse, body.offset, depth=_height(body, test, orelse))
        return self._checked(node, else_token.offset)

    def _binary(self, min_precedence: int) -> _Node:
        left = self._prefix(min_precedence)
        while True:
            token = self._peek()
            precedence = _BINARY_PRECEDENCE.get(token.text) if token.kind == "op" else None
            if precedence is None or precedence < min_precedence:
                return left
            self._advance()
            if token.text == "**":
                self._enter(token)
                right = self._binary(UNARY)  # right-associative; the exponent may carry a sign
                self._leave()
            else:
                right = self._binary(precedence + 1)
            node = _Binary(token.text, left, right, left.offset, token.offset, depth=_height(left, right))
            left = self._checked(node, token.offset)
            if token.text in _COMPARISONS:
                self._refuse_chain()

    def _refuse_chain(self) -> None:
        token = self._peek()
        if token.kind == "op" and token.text in _COMPARISONS:
            raise ExprError("chained comparisons are not supported (use 'and')", token.offset)

    def _prefix(self, min_precedence: int) -> _Node:
        token = self._peek()
        if token.kind == "op" and token.text in ("-", "+"):
            operand_precedence = UNARY
        elif token.kind == "op" and token.text == "not" and min_precedence <= NOT:
            operand_precedence = NOT
        else:
            return self._primary()
        self._advance()
        self._enter(token)
        operand = self._binary(operand_precedence)
        self._leave()
        node = _Unary(token.text, operand, token.offset, depth=_height(operand))
        return self._checked(node, token.offset)

    def _primary(self) -> _Node:
        token = self._advance()
        if token.kind in ("int", "float", "bool"):
            return _Lit(token.value, token.offset)
        if token.kind == "name":
            if self._at("("):
                return self._call(token)
            self.names.add(token.text)
            return _Var(token.text, token.offset)
        if token.kind == "op" and token.text == "(":
            self._enter(token)
            inner = self._conditional()
            self._leave()
            self._close(token)
            return inner
        raise ExprError(f"expected an operand, got {_describe_token(token)}", token.offset)

    def _close(self, opening: _Token) -> None:
        token = self._peek()
        if self._at(")"):
            self._advance()
        elif token.kind == "end":
            raise ExprError("unclosed '('", opening.offset)
        else:
            raise ExprError(f"expected ')', got {_describe_token(token)}", token.offset)

    def _call(self, name: _Token) -> _Node:
        if name.text not in _FUNCTIONS:
            allowed = ", ".join(sorted(_FUNCTIONS))
            raise ExprError(f"unknown function '{_show(name.text)}' (allowed: {allowed})", name.offset)
        opening = self._advance()
        self._enter(opening)
        args: list[_Node] = []
        while not self._at(")"):
            args.append(self._conditional())
            if self._at(","):
                self._advance()
            elif self._peek().kind == "end":
                raise ExprError("unclosed '('", opening.offset)
            elif not self._at(")"):
                token = self._peek()
                raise ExprError(f"expected ',' or ')', got {_describe_token(token)}", token.offset)
        self._advance()
        self._leave()
        _check_arity(name.text, len(args), name.offset)
        node = _Call(name.text, tuple(args), name.offset, depth=_height(*args))
        return self._checked(node, name.offset)


def _check_arity(func: str, count: int, offset: int) -> None:
    fewest, most = _FUNCTIONS[func]
    if count >= fewest and (most is None or count <= most):
        return
    if most is None:
        expected = f"at least {fewest} arguments"
    elif fewest == most:
        expected = f"{fewest} argument" + ("" if fewest == 1 else "s")
    else:
        expected = f"{fewest} to {most} arguments"
    raise ExprError(f"{func}() expects {expected}, got {count}", offset)


# ---------------------------------------------------------------------------
# Public entry points


@dataclass(frozen=True)
class Expr:
    """A parsed expression: its ``source`` text and the free variable ``names`` it uses.

    Make one with :func:`parse`.
    """

    source: str
    names: frozenset[str]
    _root: _Node = field(repr=False)

    def evaluate(self, env: Mapping[str, object]) -> int | float | bool | Sym:
        """The value of the expression, with its names looked up in ``env``.

        Values in ``env`` must be ints, floats, bools or :class:`Sym`. Raises
        :class:`ExprError`, or :class:`SymbolicError` for an operation that a
        ``Sym`` cannot take part in.
        """
        return _evaluate(self._root, env)

    @functools.cached_property
    def bare_name(self) -> str | None:
        """The name, when the expression is one name and nothing else (``c3x3``); else None."""
        return self._root.name if type(self._root) is _Var else None

    def render(self, rename: Mapping[str, str] | None = None) -> str:
        """Python source for the expression, with names mapped through ``rename``."""
        return _render(self._root, renamer(rename))[0]

    @functools.cached_property
    def size(self) -> int:
        """The number of nodes of the parse tree: what one evaluation costs, about."""
        count, stack = 0, [self._root]
        while stack:
            node = stack.pop()
            count += 1
            stack.extend(
                getattr(node, f.name) for f in dataclasses.fields(node) if isinstance(getattr(node, f.name), _Node)
            )
            if isinstance(node, _Call):
                stack.extend(node.args)
        return count


def parse(text: str) -> Expr:
    """Parse expression text; raises :class:`ExprError` with the offset of the problem."""
    if not isinstance(text, str):
        raise TypeError(f"expected the expression as a str, got {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise ExprError(f"expression is longer than {MAX_LENGTH} characters", MAX_LENGTH)
    parser = _Parser(text)
    root = parser.parse()
    return Expr(text, frozenset(parser.names), root)


def render_value(value: int | Sym, rename: Mapping[str, str] | None = None) -> str:
    """Python source for an int or a :class:`Sym`."""
    if isinstance(value, Sym):
        return value.render(rename)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise TypeError(f"expected an int or a Sym, got {type(value).__name__}")


# ---------------------------------------------------------------------------
# Evaluation

Number = int | float


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, Sym):
        return "a symbolic integer"
    return f"a value of type {type(value).__name__}"


def _number(value: object, node: _Node) -> int | float | Sym:
    if isinstance(value, bool) or not isinstance(value, (int, float, Sym)):
        raise ExprError(f"expected a number, got {_kind(value)}", node.offset)
    return value


def _boolean(value: object, node: _Node) -> bool:
    if not isinstance(value, bool):
        raise ExprError(f"expected a boolean, got {_kind(value)}", node.offset)
    return value


def _short_int(n: int) -> str:
    if abs(n) < 10**18:
        return str(n)
    try:
        return f"{float(n):.3e}"
    except OverflowError:
        return f"of {n.bit_length()} bits"


def _in_range(value: Number, offset: int) -> Number:
    """``value`` if it is within ``|x| <= 2**53`` (and finite); else an error at ``offset``."""
    if isinstance(value, int):
        if abs(value) > MAX_INT:
            raise ExprError(f"integer result {_short_int(value)} is out of range ({_RANGE})", offset)
    elif not math.isfinite(value) or abs(value) > MAX_INT:
        raise ExprError(f"float result {value:.6g} is out of range ({_FLOAT_RANGE})", offset)
    return value


def _evaluate(node: _Node, env: Mapping[str, object]) -> int | float | bool | Sym:
    # dispatched on the node's class (the node classes have no subclasses): the evaluator runs for
    # every attribute of every variant a design space lists, and a match on class patterns tries
    # them one after the other
    kind = type(node)
    if kind is _Var:
        return _lookup(node, env)
    if kind is _Lit:
        return node.value
    if kind is _Binary:
        op = node.op
        if op == "and" or op == "or":
            return _logic(node, env)
        if op in _COMPARISONS:
            return _compare(node, _evaluate(node.left, env), _evaluate(node.right, env))
        return _arithmetic(node, _evaluate(node.left, env), _evaluate(node.right, env))
    if kind is _Unary:
        return _unary(node, _evaluate(node.operand, env))
    if kind is _Cond:
        taken = node.body if _boolean(_evaluate(node.test, env), node.test) else node.orelse
        return _evaluate(taken, env)
    if kind is _Call:
        return _call(node, [_evaluate(arg, env) for arg in node.args])
    raise AssertionError(f"unknown node {node!r}")


def _lookup(node: _Var, env: Mapping[str, object]) -> int | float | bool | Sym:
    value = env.get(node.name)
    if type(value) is int and -MAX_INT <= value <= MAX_INT:  # the common case, checked as below
        return value
    if node.name not in env:
        unknown = ExprError(_unknown_name(node.name, env), node.offset)
        unknown.needs_section = "variables"  # type: ignore[attr-defined]  # see spec.follows_from_ignored
        raise unknown
    value = env[node.name]
    if isinstance(value, (bool, Sym)):
        return value
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or abs(value) > MAX_INT:
            raise ExprError(f"value of '{node.name}' is out of range ({_FLOAT_RANGE})", node.offset)
        return value
    if value is None:  # a template parameter given null: it passes on as a bare name only
        raise ExprError(
            f"expected '{node.name}' to be a number or a boolean, got null (a null parameter passes on "
            "whole only, as a bare name: to an optional attribute or another template)",
            node.offset,
        )
    raise ExprError(
        f"expected '{node.name}' to be a number or a boolean, got {_kind(value)}",
        node.offset,
    )


def _unknown_name(name: str, env: Mapping[str, object]) -> str:
    known = sorted(str(key) for key in env)
    message = f"unknown name '{_show(name)}'"
    if 0 < len(known) <= 10:
        return f"{message} (known: {', '.join(known)})"
    close = difflib.get_close_matches(name, known, n=1)
    return f"{message} (did you mean '{close[0]}'?)" if close else message


def _unary(node: _Unary, value: object) -> int | float | bool | Sym:
    if node.op == "not":
        return not _boolean(value, node.operand)
    number = _number(value, node.operand)
    return -number if node.op == "-" else +number


def _logic(node: _Binary, env: Mapping[str, object]) -> bool:
    left = _boolean(_evaluate(node.left, env), node.left)
    if node.op == "and" and not left:
        return False
    if node.op == "or" and left:
        return True
    return _boolean(_evaluate(node.right, env), node.right)


_COMPARE: dict[str, Callable[[Number, Number], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def _compare(node: _Binary, left: object, right: object) -> bool:
    if node.op in ("==", "!=") and isinstance(left, bool):
        right = _boolean(right, node.right)
    else:
        left = _number(left, node.left)
        right = _number(right, node.right)
        if isinstance(left, Sym) or isinstance(right, Sym):
            raise SymbolicError(f"cannot compare symbolic integers ('{node.op}')")
    return _COMPARE[node.op](left, right)


_ARITHMETIC: dict[str, Callable[[Number, Number], Number]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
    "//": operator.floordiv,
    "%": operator.mod,
}
_SYMBOLIC_OPERATORS = frozenset({"+", "-", "*", "//"})
#: the operators that cannot fail on two integers but by the result's range
_INT_FAST = frozenset({"+", "-", "*"})


def _arithmetic(node: _Binary, left: object, right: object) -> int | float | Sym:
    op = node.op
    if type(left) is int and type(right) is int and op in _INT_FAST:  # two integers: as below
        return _in_range(_ARITHMETIC[op](left, right), node.op_offset)
    left = _number(left, node.left)
    right = _number(right, node.right)
    if node.op in ("/", "//", "%") and isinstance(right, (int, float)) and right == 0:
        raise ExprError("division by zero", node.op_offset)
    if isinstance(left, Sym) or isinstance(right, Sym):
        return _symbolic_arithmetic(node.op, left, right)
    if node.op == "**":
        result = _power(left, right, node.op_offset)
    else:
        result = _ARITHMETIC[node.op](left, right)
    return _in_range(result, node.op_offset)


def _symbolic_arithmetic(op: str, left: int | float | Sym, right: int | float | Sym) -> Sym | int:
    if op not in _SYMBOLIC_OPERATORS:
        raise SymbolicError(f"cannot apply '{op}' to a symbolic integer")
    if isinstance(left, float) or isinstance(right, float):
        raise SymbolicError(f"cannot apply '{op}' to a symbolic integer and a float")
    return _ARITHMETIC[op](left, right)


def _power(base: Number, exponent: Number, offset: int) -> Number:
    if isinstance(base, int) and isinstance(exponent, int):
        return _integer_power(base, exponent, offset)
    if base == 0 and exponent < 0:
        raise ExprError("zero cannot be raised to a negative power", offset)
    if base < 0 and not float(exponent).is_integer():
        raise ExprError("a negative number cannot be raised to a fractional power", offset)
    try:
        return base**exponent
    except OverflowError:
        message = f"float result of {base!r} ** {exponent!r} is out of range ({_FLOAT_RANGE})"
        raise ExprError(message, offset) from None


def _integer_power(base: int, exponent: int, offset: int) -> Number:
    if exponent < 0:
        if base == 0:
            raise ExprError("zero cannot be raised to a negative power", offset)
        return base**exponent  # a float, as in Python
    if abs(base) <= 1:
        return base**exponent
    # |base| >= 2**(bit_length - 1), so this lower bound on the result's bits refuses
    # hopeless powers (10 ** 10 ** 10) before any work; the rest are at most ~120 bits.
    if exponent > 64 or (abs(base).bit_length() - 1) * exponent > 53:
        raise ExprError(f"integer result of {base} ** {exponent} is out of range ({_RANGE})", offset)
    return base**exponent


def _call(node: _Call, args: list[object]) -> int | float | Sym:
    if node.func in ("min", "max"):
        return _min_max(node, args)
    if node.func == "make_divisible":
        return _make_divisible(node, args)
    value = _number(args[0], node.args[0])
    if isinstance(value, Sym):
        if node.func == "int":
            return value
        raise SymbolicError(f"cannot apply {node.func}() to a symbolic integer")
    function: Callable[[Number], Number] = _NUMERIC_FUNCTIONS[node.func]
    return _in_range(function(value), node.offset)


_NUMERIC_FUNCTIONS: dict[str, Callable[[Number], Number]] = {
    "abs": abs,
    "int": int,
    "round": round,
    "floor": math.floor,
    "ceil": math.ceil,
}


def _min_max(node: _Call, args: list[object]) -> int | float | Sym:
    values = [_number(value, arg) for value, arg in zip(args, node.args, strict=True)]
    if not any(isinstance(value, Sym) for value in values):
        return min(values) if node.func == "min" else max(values)
    if any(isinstance(value, float) for value in values):
        raise SymbolicError(f"cannot apply {node.func}() to a symbolic integer and a float")
    return _sym_min_max(node.func, values)


def _make_divisible(node: _Call, args: list[object]) -> int:
    values = [_number(value, arg) for value, arg in zip(args, node.args, strict=True)]
    if any(isinstance(value, Sym) for value in values):
        raise SymbolicError("cannot apply make_divisible() to a symbolic integer")
    v = values[0]
    divisor = values[1] if len(values) > 1 else 8
    if not isinstance(divisor, int) or divisor <= 0:
        raise ExprError(f"expected a positive integer divisor, got {divisor!r}", node.args[1].offset)
    min_value = values[2] if len(values) > 2 else None
    if min_value is not None and not isinstance(min_value, int):
        raise ExprError(f"expected an integer min_value, got {_kind(min_value)}", node.args[2].offset)
    return _in_range(make_divisible(v, divisor, min_value), node.offset)


# ---------------------------------------------------------------------------
# Rendering


def _render(node: _Node, rename: Callable[[str], str]) -> tuple[str, int]:
    """Python source for ``node`` and the binding power of its outermost operator."""
    match node:
        case _Lit(value=bool() as value):
            return ("True" if value else "False"), ATOM
        case _Lit(value=int() as value):
            return str(value), ATOM
        case _Lit(value=value):
            return repr(value), ATOM
        case _Var():
            return rename(node.name), ATOM
        case _Unary(op="not"):
            return "not " + wrap(_render(node.operand, rename), NOT), NOT
        case _Unary():
            # "-(-a)" rather than "--a", which reads like a decrement operator.
            min_precedence = ATOM if isinstance(node.operand, _Unary) and node.operand.op != "not" else UNARY
            return node.op + wrap(_render(node.operand, rename), min_precedence), UNARY
        case _Binary():
            return _render_binary(node, rename)
        case _Cond():
            body = wrap(_render(node.body, rename), OR)
            test = wrap(_render(node.test, rename), OR)
            orelse = wrap(_render(node.orelse, rename), COND)
            return f"{body} if {test} else {orelse}", COND
        case _Call():
            args = ", ".join(wrap(_render(arg, rename), COND) for arg in node.args)
            return f"{node.func}({args})", ATOM
    raise AssertionError(f"unknown node {node!r}")


def _render_binary(node: _Binary, rename: Callable[[str], str]) -> tuple[str, int]:
    precedence = _BINARY_PRECEDENCE[node.op]
    if node.op == "**":
        left_min, right_min = ATOM, UNARY
    elif node.op in _COMPARISONS:
        left_min, right_min = precedence + 1, precedence + 1  # never a chain
    else:
        left_min, right_min = precedence, precedence + 1
    left = wrap(_render(node.left, rename), left_min)
    right = wrap(_render(node.right, rename), right_min)
    return f"{left} {node.op} {right}", precedence
