"""Tests of nasdsl.expr: parsing, evaluation, limits, rendering and symbolic integers.

Python's own ``eval`` of the same text is the independent reference for the
results (only here, in the tests, and only on text the tests generate).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import pickle
import time

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from nasdsl.errors import SpecError
from nasdsl.expr import (
    FUNCTIONS,
    MAX_DEPTH,
    MAX_INT,
    MAX_LENGTH,
    Expr,
    ExprError,
    Sym,
    SymbolicError,
    is_identifier,
    make_divisible,
    parse,
    render_value,
)

ENV = {"a": 7, "b": 3, "c": -2, "w": 0.75, "t": True, "f": False}
PYTHON_SCOPE = {"__builtins__": {}, "min": min, "max": max, "abs": abs, "int": int, "round": round}
PYTHON_SCOPE |= {"floor": math.floor, "ceil": math.ceil, "make_divisible": make_divisible}
FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def python(text: str, env: dict[str, object]) -> object:
    """The reference: Python's evaluation of the same text."""
    return eval(text, dict(PYTHON_SCOPE), dict(env))  # noqa: S307 - test-only reference


def error(text: str, env: dict[str, object] | None = None) -> ExprError:
    """The ExprError that parsing (and evaluating, given ``env``) ``text`` raises."""
    with pytest.raises(ExprError) as info:
        expr = parse(text)
        if env is not None:
            expr.evaluate(env)
    return info.value


# ---------------------------------------------------------------------------
# Evaluation against Python


@pytest.mark.parametrize(
    "text",
    [
        "0",
        "00",
        "42",
        "1.5",
        "1.",
        ".5",
        "1e-3",
        "2.5E+2",
        "1e3",
        "-2**2",
        "(-2)**2",
        "2**-1",
        "2**3**2",
        "(2**3)**2",
        "2 ** -2 ** 2",
        "-a**2",
        "-a ** -1",
        "a - b - c",
        "a - (b - c)",
        "a // b * c",
        "a * b // c",
        "a * (b // c)",
        "a % b * c",
        "-a // b",
        "-a % b",
        "a / b",
        "7 // -2",
        "7 % -3",
        "-7.5 // 2",
        "7.5 % -2",
        "a + b * c ** 2 // 3 - -a",
        "+a",
        "- -a",
        "--a",
        "a*-1",
        "a + b > b * 3",
        "a != b",
        "a >= 7",
        "a == 7.0",
        "not t or f",
        "not not t",
        "not a == b",
        "not a < b and b < a",
        "t and f or t",
        "t or f and f",
        "(t or f) and f",
        "(a < b) == f",
        "t == (a > b)",
        "a if t else b",
        "a if f else b + 1",
        "1 + 2 if f else 3",
        "a if f else b if t else c",
        "(a if f else b) if t else c",
        "a * (b if a > b else c)",
        "min(a, b) + max(a, b, c) * abs(c)",
        "min(a, w)",
        "max(1, 2.5, b,)",
        "abs(-w)",
        "round(2.5)",
        "round(3.5)",
        "round(-0.5)",
        "round(w)",
        "int(-2.7)",
        "int(a / 2)",
        "floor(-2.5)",
        "ceil(-2.5)",
        "floor(a / b)",
        "ceil(a / b)",
        "1e-3 * 1000",
        ".5 + .25",
        "make_divisible(64 * w)",
        "make_divisible(a * 10, 4, 16)",
        "2 ** 53",
        "-(2 ** 53)",
        "2 ** 53 - 1 + 1",
        "(1 +\n 2)\t* 3",
    ],
)
def test_evaluates_like_python(text: str) -> None:
    expected = python(text, ENV)
    result = parse(text).evaluate(ENV)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize("word, value", [("true", True), ("false", False), ("True", True), ("False", False)])
def test_booleans(word: str, value: bool) -> None:
    assert parse(word).evaluate({}) is value
    assert parse(word).render() == str(value)


def test_the_integer_bound_is_inclusive() -> None:
    assert parse("2 ** 53").evaluate({}) == MAX_INT
    assert parse("x + 0").evaluate({"x": -MAX_INT}) == -MAX_INT
    assert parse("9007199254740992").evaluate({}) == MAX_INT
    assert "out of range" in error("x + 1", {"x": MAX_INT}).message


def test_division_always_gives_a_float() -> None:
    assert parse("6 / 3").evaluate({}) == 2.0
    assert isinstance(parse("6 / 3").evaluate({}), float)
    assert isinstance(parse("7 // 2").evaluate({}), int)
    assert isinstance(parse("2 ** -1").evaluate({}), float)


def test_short_circuit_and_one_branch() -> None:
    env = {"x": 0}
    assert parse("x != 0 and 10 / x > 1").evaluate(env) is False
    assert parse("x == 0 or 10 / x > 1").evaluate(env) is True
    assert parse("1 if x == 0 else 10 // x").evaluate(env) == 1
    assert parse("missing if false else 2").evaluate({}) == 2


def test_spec_examples() -> None:
    env = {"c3x3": 128, "dropout": 0.4, "width": 0.35, "k": 5}
    assert parse("c3x3").evaluate(env) == 128
    assert parse("dropout").evaluate(env) == 0.4
    assert parse("make_divisible(64 * width)").evaluate(env) == 24
    assert parse("(k - 1) // 2").evaluate(env) == 2


@pytest.mark.parametrize(
    "args, expected",
    [((24.0,), 24), ((3,), 8), ((90,), 88), ((10,), 16), ((10, 8, 32), 32), ((100, 16), 96), ((30, 8, 0), 32)],
)
def test_make_divisible(args: tuple, expected: int) -> None:
    assert make_divisible(*args) == expected
    text = "make_divisible(" + ", ".join(map(repr, args)) + ")"
    assert parse(text).evaluate({}) == expected


# ---------------------------------------------------------------------------
# Errors: message and offset


@pytest.mark.parametrize(
    "text, message, offset",
    [
        ("", "expected an operand, got end of expression", 0),
        ("   ", "expected an operand, got end of expression", 3),
        ("1 +", "expected an operand, got end of expression", 3),
        (")", "expected an operand, got ')'", 0),
        ("a * ()", "expected an operand, got ')'", 5),
        ("(1 + 2", "unclosed '('", 0),
        ("((1) + 2", "unclosed '('", 0),
        ("(1 2)", "expected ')', got '2'", 3),
        ("1 + 2)", "unmatched ')'", 5),
        ("1 2", "expected an operator, got '2'", 2),
        ("a b", "expected an operator, got 'b'", 2),
        ("a not b", "expected an operator, got 'not'", 2),
        ("a $ b", "unexpected character '$'", 2),
        ("a ? b", "unexpected character '?'", 2),
        ("a ~ b", "unexpected character '~'", 2),
        ("a.b", "unexpected character '.' (attribute access is not supported)", 1),
        ("'x'", 'unexpected character "\'" (strings are not supported)', 0),
        ('x + "y"', "unexpected character '\"' (strings are not supported)", 4),
        ("x[0]", "unexpected character '[' (subscripts and lists are not supported)", 1),
        ("a = 1", "unexpected character '=' (did you mean '=='?)", 2),
        ("a & b", "unexpected character '&' (did you mean 'and'?)", 2),
        ("!a", "unexpected character '!' (did you mean 'not' or '!='?)", 0),
        ("a\u00a0+ 1", "unexpected character '\\xa0'", 1),
        ("caf\u00e9", "unexpected character '\u00e9'", 3),
        ("007", "invalid number '007' (leading zeros are not allowed)", 0),
        ("1 + 1abc", "invalid number '1abc'", 4),
        ("0x10", "invalid number '0x10'", 0),
        ("1_000", "invalid number '1_000'", 0),
        ("1e", "invalid number '1e'", 0),
        ("1.5.3", "invalid number '1.5.3'", 0),
        ("9007199254740993", "integer 9007199254740993 is out of range (|n| <= 2**53)", 0),
        ("1e400", "float 1e400 is out of range (|x| <= 2**53)", 0),
        ("x + 1e16", "float 1e16 is out of range (|x| <= 2**53)", 4),
        ("lambda", "'lambda' is a reserved word", 0),
        ("x + None", "'None' is a reserved word", 4),
        ("a is b", "'is' is a reserved word", 2),
        ("foo(1)", "unknown function 'foo' (allowed: abs, ceil, floor, int, make_divisible, max, min, round)", 0),
        ("1 + sqrt(4)", "unknown function 'sqrt' (allowed: abs, ceil, floor, int, make_divisible, max, min, round)", 4),
        ("abs(1, 2)", "abs() expects 1 argument, got 2", 0),
        ("x * int()", "int() expects 1 argument, got 0", 4),
        ("min(1)", "min() expects at least 2 arguments, got 1", 0),
        ("max()", "max() expects at least 2 arguments, got 0", 0),
        ("make_divisible()", "make_divisible() expects 1 to 3 arguments, got 0", 0),
        ("make_divisible(1, 2, 3, 4)", "make_divisible() expects 1 to 3 arguments, got 4", 0),
        ("min(1, 2", "unclosed '('", 3),
        ("min(1 2)", "expected ',' or ')', got '2'", 6),
        ("min(1,, 2)", "expected an operand, got ','", 6),
        ("a < b < c", "chained comparisons are not supported (use 'and')", 6),
        ("a == b != c", "chained comparisons are not supported (use 'and')", 7),
        ("a if b", "expected 'else', got end of expression", 6),
        ("a if b then c", "expected 'else', got 'then'", 7),
        ("1 + not a", "expected an operand, got 'not'", 4),
        ("a == not b", "expected an operand, got 'not'", 5),
        ("-not a", "expected an operand, got 'not'", 1),
        ("if", "expected an operand, got 'if'", 0),
        ("a ** ", "expected an operand, got end of expression", 5),
    ],
)
def test_parse_errors(text: str, message: str, offset: int) -> None:
    e = error(text)
    assert (e.message, e.offset) == (message, offset)


@pytest.mark.parametrize(
    "text, message, offset",
    [
        ("a + t", "expected a number, got a boolean", 4),
        ("-t", "expected a number, got a boolean", 1),
        ("t * 2", "expected a number, got a boolean", 0),
        ("abs(f)", "expected a number, got a boolean", 4),
        ("min(1, t)", "expected a number, got a boolean", 7),
        ("t < f", "expected a number, got a boolean", 0),
        ("a == t", "expected a number, got a boolean", 5),
        ("t == a", "expected a boolean, got an integer", 5),
        ("t and 1", "expected a boolean, got an integer", 6),
        ("w or t", "expected a boolean, got a float", 0),
        ("not a", "expected a boolean, got an integer", 4),
        ("1 if 2 else 3", "expected a boolean, got an integer", 5),
        ("1 / 0", "division by zero", 2),
        ("a // (b - 3)", "division by zero", 2),
        ("a % 0", "division by zero", 2),
        ("w // 0.0", "division by zero", 2),
        ("w % -0.0", "division by zero", 2),
        ("0 ** -1", "zero cannot be raised to a negative power", 2),
        ("0.0 ** -0.5", "zero cannot be raised to a negative power", 4),
        ("(-8) ** w", "a negative number cannot be raised to a fractional power", 5),
        ("2 ** 54", "integer result of 2 ** 54 is out of range (|n| <= 2**53)", 2),
        ("3 ** 34", "integer result 16677181699666569 is out of range (|n| <= 2**53)", 2),
        ("10 ** 10 ** 10", "integer result of 10 ** 10000000000 is out of range (|n| <= 2**53)", 3),
        ("-(2 ** 53) - 1", "integer result -9007199254740993 is out of range (|n| <= 2**53)", 11),
        ("2 ** 53 * 2 ** 53", "integer result 8.113e+31 is out of range (|n| <= 2**53)", 8),
        ("1e15 * 1e15", "float result 1e+30 is out of range (|x| <= 2**53)", 5),
        ("1 / 1e-300", "float result 1e+300 is out of range (|x| <= 2**53)", 2),
        ("1.5 ** 100000", "float result of 1.5 ** 100000 is out of range (|x| <= 2**53)", 4),
        ("1.5 ** 100", "float result 4.06561e+17 is out of range (|x| <= 2**53)", 4),
        ("make_divisible(a, 0)", "expected a positive integer divisor, got 0", 18),
        ("make_divisible(a, 2.5)", "expected a positive integer divisor, got 2.5", 18),
        ("make_divisible(a, 8, w)", "expected an integer min_value, got a float", 21),
    ],
)
def test_evaluation_errors(text: str, message: str, offset: int) -> None:
    e = error(text, ENV)
    assert (e.message, e.offset) == (message, offset)


def test_unknown_name_lists_few_known_names() -> None:
    e = error("a + bb", {"a": 1, "c": 2})
    assert (e.message, e.offset) == ("unknown name 'bb' (known: a, c)", 4)
    assert error("x", {}).message == "unknown name 'x'"


def test_unknown_name_suggests_among_many() -> None:
    env = {f"name{i}": i for i in range(20)} | {"c3x3": 1}
    assert error("c3x4", env).message == "unknown name 'c3x4' (did you mean 'c3x3'?)"
    assert error("zzz", env).message == "unknown name 'zzz'"


@pytest.mark.parametrize(
    "value, message",
    [
        ("64", "expected 'x' to be a number or a boolean, got a value of type str"),
        (
            None,
            "expected 'x' to be a number or a boolean, got null (a null parameter passes on whole only, as a "
            "bare name: to an optional attribute or another template)",
        ),
        ([1], "expected 'x' to be a number or a boolean, got a value of type list"),
        (2**60, "value of 'x' is out of range (|x| <= 2**53)"),
        (math.inf, "value of 'x' is out of range (|x| <= 2**53)"),
        (math.nan, "value of 'x' is out of range (|x| <= 2**53)"),
    ],
)
def test_environment_values_are_checked(value: object, message: str) -> None:
    e = error("1 + x", {"x": value})
    assert (e.message, e.offset) == (message, 4)


def test_expr_error_is_a_spec_error_with_an_offset() -> None:
    e = error("1 +")
    assert isinstance(e, SpecError)
    assert str(e) == "error: expected an operand, got end of expression"
    assert ExprError("boom").offset == 0
    assert ExprError("boom", 3).offset == 3


def test_parse_wants_a_string() -> None:
    with pytest.raises(TypeError):
        parse(64)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# Limits and hostile input


def test_length_limit() -> None:
    assert parse("1" + " " * (MAX_LENGTH - 1)).evaluate({}) == 1
    e = error("1" + " " * MAX_LENGTH)
    assert e.message == "expression is longer than 1000 characters"
    assert e.offset == MAX_LENGTH


def test_ten_thousand_parentheses_are_an_error_not_a_crash() -> None:
    text = "(" * 10_000 + "1" + ")" * 10_000
    e = error(text)
    assert e.message == "expression is longer than 1000 characters"


DEEP = f"expression is nested too deeply (more than {MAX_DEPTH} levels)"


@pytest.mark.parametrize(
    "text",
    [
        "(" * 450 + "1" + ")" * 450,
        "(" * 999,
        "-" * 999 + "1",
        "not " * 249 + "t",
        "2 ** " * 199 + "1",
        "1 + " * 249 + "1",
        "1 if t else " * 80 + "1",
        "min(" * 240,
        "min(1, " * 120 + "1" + ")" * 120,
        "a and " * 150 + "a",
    ],
)
def test_deep_nesting_is_refused(text: str) -> None:
    assert len(text) <= MAX_LENGTH
    assert error(text).message == DEEP


def test_depth_limit_is_exact() -> None:
    assert parse("(" * MAX_DEPTH + "1" + ")" * MAX_DEPTH).evaluate({}) == 1
    e = error("(" * (MAX_DEPTH + 1) + "1" + ")" * (MAX_DEPTH + 1))
    assert (e.message, e.offset) == (DEEP, MAX_DEPTH)
    assert parse("-" * MAX_DEPTH + "1").evaluate({}) == 1
    assert error("-" * (MAX_DEPTH + 1) + "1").message == DEEP
    assert parse(" + ".join(["1"] * (MAX_DEPTH + 1))).evaluate({}) == MAX_DEPTH + 1
    assert error(" + ".join(["1"] * (MAX_DEPTH + 2))).message == DEEP


def test_huge_powers_are_refused_fast() -> None:
    start = time.perf_counter()
    for text in ["10**10**10", "9007199254740992 ** 9007199254740992", "2 ** (2 ** 53)", "(-3) ** 65"]:
        assert "out of range" in error(text, {}).message
    assert parse("1 ** (2 ** 53)").evaluate({}) == 1
    assert parse("(-1) ** (2 ** 53 - 1)").evaluate({}) == -1
    assert parse("2 ** -(2 ** 53)").evaluate({}) == 0.0
    assert time.perf_counter() - start < 0.5


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os').system('id')",
        "__import__",
        "().__class__",
        "().__class__.__bases__[0].__subclasses__()",
        "[].__class__",
        "{}",
        "lambda: 1",
        "exec('1')",
        "eval('1 + 1')",
        "open('/etc/passwd')",
        "globals()",
        "a.__class__",
        "x[0]",
        "1; import os",
        "import os",
        "f'{1}'",
        "b'x'",
        "print(1)",
        "getattr(a, 'b')",
        "(lambda: 1)()",
        "a := 1",
        "min.__self__",
        "\\x00",
        "\x00",
        "1 if 1 else __builtins__",
    ],
)
def test_injection_is_rejected(text: str) -> None:
    with pytest.raises(ExprError):
        parse(text).evaluate({"a": 1})


def test_dunder_names_are_only_names() -> None:
    assert error("__builtins__", {}).message == "unknown name '__builtins__'"
    assert parse("__x__ + 1").evaluate({"__x__": 1}) == 2


# ---------------------------------------------------------------------------
# Expr: names, immutability, rendering


def test_names_are_the_free_variables() -> None:
    expr = parse("min(a, b) + c * a if t else make_divisible(w)")
    assert expr.names == frozenset({"a", "b", "c", "t", "w"})
    assert parse("1 + 2").names == frozenset()
    assert expr.source == "min(a, b) + c * a if t else make_divisible(w)"
    assert FUNCTIONS == {"abs", "ceil", "floor", "int", "make_divisible", "max", "min", "round"}


@pytest.mark.parametrize("name", ["a", "_", "c3x3", "_private", "Inception4a", "x" * 100])
def test_identifiers(name: str) -> None:
    assert is_identifier(name)


@pytest.mark.parametrize("name", ["", "3x", "a-b", "a.b", "a b", "caf\u00e9", "\u0661", "a\n", None, 3])
def test_not_identifiers(name: object) -> None:
    assert not is_identifier(name)  # type: ignore[arg-type]


def test_a_variable_may_be_called_like_a_function() -> None:
    assert parse("min + 1").evaluate({"min": 1}) == 2


def test_expr_is_immutable_and_comparable() -> None:
    expr = parse("a + 1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        expr.source = "b"  # type: ignore[misc]
    assert expr == parse("a + 1")
    assert hash(expr) == hash(parse("a + 1"))
    assert isinstance(expr, Expr)


@pytest.mark.parametrize(
    "text, rendered",
    [
        ("(a+b)*2", "(a + b) * 2"),
        ("a - (b - c)", "a - (b - c)"),
        ("(a - b) - c", "a - b - c"),
        ("a + (b + c)", "a + (b + c)"),
        ("a * (b // c)", "a * (b // c)"),
        ("(a * b) // c", "a * b // c"),
        ("2 ** (3 ** 2)", "2 ** 3 ** 2"),
        ("(2 ** 3) ** 2", "(2 ** 3) ** 2"),
        ("(-2) ** 2", "(-2) ** 2"),
        ("-(2 ** 2)", "-2 ** 2"),
        ("2 ** (-1)", "2 ** -1"),
        ("-(a + b)", "-(a + b)"),
        ("(-a) * b", "-a * b"),
        ("--a", "-(-a)"),
        ("-+a", "-(+a)"),
        ("not (t and f)", "not (t and f)"),
        ("(not t) and f", "not t and f"),
        ("not (a == b)", "not a == b"),
        ("(not t) == f", "(not t) == f"),
        ("(a < b) == t", "(a < b) == t"),
        ("t or (f and t)", "t or f and t"),
        ("(t or f) and t", "(t or f) and t"),
        ("(a if t else b) + 1", "(a if t else b) + 1"),
        ("a if t else (b if f else c)", "a if t else b if f else c"),
        ("(a if t else b) if f else c", "(a if t else b) if f else c"),
        ("a if (t if f else t) else b", "a if (t if f else t) else b"),
        ("min((a if t else b), (c))", "min(a if t else b, c)"),
        ("make_divisible(64*w,8,)", "make_divisible(64 * w, 8)"),
        ("1e-3", "0.001"),
        ("1.", "1.0"),
        ("true", "True"),
    ],
)
def test_render_uses_minimal_parentheses(text: str, rendered: str) -> None:
    assert parse(text).render() == rendered
    assert parse(rendered).render() == rendered
    assert python(rendered, ENV) == python(pythonic(text), ENV)


def test_render_renames() -> None:
    expr = parse("a + b * a")
    assert expr.render({"a": "x"}) == "x + b * x"
    assert expr.render({"a": "self.width"}) == "self.width + b * self.width"
    for bad in ["a; import os", "x y", "1x", "self.", "class", "x.class"]:
        with pytest.raises(ValueError):
            expr.render({"a": bad})


# ---------------------------------------------------------------------------
# Properties: random text evaluates like Python and renders back to itself

SMALL_ENV = {"x": 3, "y": -4, "z": 0, "n": 9}
LEAVES = st.one_of(st.integers(0, 9).map(str), st.sampled_from(sorted(SMALL_ENV)))


@st.composite
def flat_arithmetic(draw: st.DrawFn) -> str:
    """Operands and binary operators without parentheses: precedence decides everything."""
    count = draw(st.integers(1, 8))
    parts = []
    for i in range(count):
        if i:
            parts.append(draw(st.sampled_from(["+", "-", "*", "/", "//", "%"])))
        sign = draw(st.sampled_from(["", "", "-", "+", "- -"]))
        operand = draw(LEAVES)
        if draw(st.booleans()):
            operand += f" ** {draw(st.integers(0, 2))}"
        parts.append(sign + operand)
    return " ".join(parts)


def _check_like_python(text: str, env: dict[str, object]) -> None:
    try:
        expected = python(text, env)
    except ZeroDivisionError:
        assert error(text, env).message in ("division by zero", "zero cannot be raised to a negative power")
        return
    expr = parse(text)
    result = expr.evaluate(env)
    assert result == expected and type(result) is type(expected)
    rendered = expr.render()
    assert parse(rendered).render() == rendered
    again = parse(rendered).evaluate(env)
    assert again == expected and type(again) is type(expected)


@FAST
@given(flat_arithmetic())
def test_flat_arithmetic_follows_python_precedence(text: str) -> None:
    _check_like_python(text, SMALL_ENV)


def int_trees() -> st.SearchStrategy[str]:
    """Integer-valued expressions, parenthesized at random where it keeps the same tree."""

    def extend(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        binary = st.tuples(children, st.sampled_from(["+", "-", "*", "//", "%"]), children).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"
        )
        return st.one_of(
            binary,
            children.map(lambda c: f"(-{c})"),
            st.tuples(st.sampled_from(["min", "max"]), st.lists(children, min_size=2, max_size=3)).map(
                lambda t: f"{t[0]}({', '.join(t[1])})"
            ),
            children.map(lambda c: f"abs({c})"),
            st.tuples(children, bool_atoms(children), children).map(lambda t: f"({t[0]} if {t[1]} else {t[2]})"),
        )

    return st.recursive(LEAVES, extend, max_leaves=10)


def bool_atoms(numbers: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    comparison = st.tuples(numbers, st.sampled_from(["==", "!=", "<", "<=", ">", ">="]), numbers).map(
        lambda t: f"({t[0]} {t[1]} {t[2]})"
    )
    atom = st.one_of(comparison, st.sampled_from(["true", "False"]))
    return st.one_of(
        atom,
        atom.map(lambda x: f"(not {x})"),
        st.tuples(atom, st.sampled_from(["and", "or"]), atom).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
    )


def pythonic(text: str) -> str:
    return text.replace("true", "True")


@FAST
@given(int_trees(), st.fixed_dictionaries({k: st.integers(-9, 9) for k in SMALL_ENV}))
def test_random_trees_evaluate_like_python(text: str, env: dict[str, int]) -> None:
    try:
        expected = python(pythonic(text), env)
    except ZeroDivisionError:
        assert error(text, env).message == "division by zero"
        return
    expr = parse(text)
    assert expr.evaluate(env) == expected
    rendered = expr.render()
    assert python(rendered, env) == expected
    assert parse(rendered).evaluate(env) == expected
    assert parse(rendered).render() == rendered
    assert len(rendered) <= len(pythonic(text))


# ---------------------------------------------------------------------------
# Symbolic integers

a, b, c = Sym.name("a"), Sym.name("b"), Sym.name("c")


def test_sym_folding() -> None:
    assert a + 0 == a
    assert 0 + a == a
    assert a * 1 == a
    assert a * 0 == 0 and isinstance(a * 0, int)
    assert a - a == 0
    assert a // 1 == a
    negated = -a
    assert -negated == a
    assert +a is a
    assert (a + 3) + 4 == a + 7
    assert ((a + 3) + 4).render() == "a + 7"
    assert (c * 128 * 4 * 4).render() == "c * 2048"
    assert (128 * 4 * 4 * c).render() == "c * 2048"
    assert (2 * a + 3 * a).render() == "a * 5"
    assert ((c * 16) // 4).render() == "c * 4"
    assert ((a * 4 + 3) // 4).render() == "a"
    assert ((a // 2) // 3).render() == "a // 6"
    assert ((a + 5) * 2 - 10).render() == "a * 2"


@pytest.mark.parametrize(
    "value, rendered",
    [
        (a + b + c, "a + b + c"),
        (a - b, "a - b"),
        (-a, "-a"),
        (-a + 3, "-a + 3"),
        (a * 2 - b * 3 - 1, "a * 2 - b * 3 - 1"),
        (-(a * 16) + 3, "-a * 16 + 3"),
        (a * b * 3, "a * b * 3"),
        ((a + b) * (c - 1), "(a + b) * (c - 1)"),
        (a // b, "a // b"),
        ((a + b) // 2, "(a + b) // 2"),
        (a // (b + 1), "a // (b + 1)"),
        (a // -b, "a // -b"),
        (-(a // 2), "-(a // 2)"),
        ((a // 2) * 3, "a // 2 * 3"),
        (b * (a // 2), "b * (a // 2)"),
        (5 - (a // 2) * 3, "-(a // 2) * 3 + 5"),
        (-5 // a, "-5 // a"),
        (c - a // b, "c - a // b"),
    ],
)
def test_sym_rendering(value: Sym, rendered: str) -> None:
    assert value.render() == rendered
    assert str(value) == rendered


def test_sym_through_expressions() -> None:
    env = {"in_channels": Sym.name("in_channels"), "c1x1": Sym.name("c1x1"), "c3x3": Sym.name("c3x3")}
    total = parse("c1x1 + c3x3 + in_channels * 0").evaluate(env)
    assert total.render() == "c1x1 + c3x3"
    assert parse("min(c1x1, c3x3) * 2").evaluate(env).render() == "min(c1x1, c3x3) * 2"
    assert parse("max(c1x1, 3, 5, c1x1)").evaluate(env).render() == "max(c1x1, 5)"
    assert parse("min(min(c1x1, 4), 2)").evaluate(env).render() == "min(c1x1, 2)"
    assert parse("int(c1x1) + -c3x3").evaluate(env).render() == "c1x1 - c3x3"
    assert parse("(c1x1 - 1) // 2 + 1 if true else 0").evaluate(env).render() == "(c1x1 - 1) // 2 + 1"
    assert parse("c1x1 * 4 * 4").evaluate(env).render({"c1x1": "self.c1x1"}) == "self.c1x1 * 16"
    assert parse("c1x1 - c1x1 + 3").evaluate(env) == 3


@pytest.mark.parametrize(
    "text",
    [
        "s / 2",
        "s % 2",
        "s ** 2",
        "2 ** s",
        "s > 1",
        "s == s",
        "s + 0.5",
        "min(s, 0.5)",
        "abs(s)",
        "round(s)",
        "floor(s)",
        "ceil(s)",
        "make_divisible(s)",
        "make_divisible(64, s)",
        "s if s > 1 else 2",
    ],
)
def test_sym_refuses_what_it_cannot_do(text: str) -> None:
    with pytest.raises(SymbolicError):
        parse(text).evaluate({"s": Sym.name("s")})


def test_sym_type_errors_stay_expr_errors() -> None:
    env = {"s": Sym.name("s"), "t": True}
    assert error("s + t", env).message == "expected a number, got a boolean"
    assert error("not s", env).message == "expected a boolean, got a symbolic integer"
    assert error("s // 0", env).message == "division by zero"


def test_sym_python_operators_refuse() -> None:
    refused = [
        lambda: bool(a),
        lambda: a < 1,
        lambda: a >= b,
        lambda: a % 2,
        lambda: a / 2,
        lambda: 2 / a,
        lambda: a**2,
        lambda: float(a),
        lambda: int(a),
        lambda: abs(a),
        lambda: round(a),
        lambda: math.floor(a),
        lambda: a + 0.5,
        lambda: a * True,
        lambda: [0, 1][a],
    ]
    for operation in refused:
        with pytest.raises(SymbolicError):
            operation()
    with pytest.raises(ZeroDivisionError):
        a // 0
    with pytest.raises(TypeError):
        a + "x"  # type: ignore[operator]


def test_sym_equality_and_hashing_are_structural() -> None:
    assert a + 1 == Sym.name("a") + 1
    assert hash(a * b + 1) == hash(Sym.name("a") * Sym.name("b") + 1)
    assert len({a + 1, Sym.name("a") + 1, a + 2}) == 2
    assert a != b and a != "a" and (a == 1) is False
    assert (a + b).names == frozenset({"a", "b"})
    assert (a // (b * c) + 2).names == frozenset({"a", "b", "c"})
    assert repr(a + 1) == "Sym('a + 1')"


def test_sym_survives_copy_and_pickle() -> None:
    value = parse("(a * 2 + 1) // b + min(a, 3)").evaluate({"a": a, "b": b})
    for copied in (copy.copy(value), copy.deepcopy(value), pickle.loads(pickle.dumps(value))):
        assert copied == value
        assert (copied * 2 + copied // c).render() == (value * 2 + value // c).render()
    expr = parse("a + 1")
    assert pickle.loads(pickle.dumps(expr)) == expr == copy.deepcopy(expr)


def test_sym_names_must_be_identifiers() -> None:
    for bad in ["1x", "a b", "", "lambda", "None", "x.y", "é"]:
        with pytest.raises(ValueError):
            Sym.name(bad)


def test_sym_substitute() -> None:
    value = parse("(a + b) * 2 // c + min(a, 3)").evaluate({"a": a, "b": b, "c": c})
    assert value.substitute({"a": 5, "b": 1, "c": 4}) == (5 + 1) * 2 // 4 + min(5, 3)
    partial = value.substitute({"b": 0})
    assert isinstance(partial, Sym) and partial.names == frozenset({"a", "c"})
    assert (a + b).substitute({"b": a}).render() == "a * 2"
    with pytest.raises(ZeroDivisionError):
        (a // b).substitute({"a": 1, "b": 0})


def test_render_value() -> None:
    assert render_value(3) == "3"
    assert render_value(a + 1, {"a": "x"}) == "x + 1"
    with pytest.raises(TypeError):
        render_value(True)


def test_sym_depth_is_bounded() -> None:
    value: Sym | int = a
    with pytest.raises(SymbolicError):
        for _ in range(200):
            value = (value + b) // c
    assert isinstance(value, Sym)
    assert value.render()  # what was built still renders


NONZERO = st.integers(-6, 6).filter(bool)


@FAST
@given(
    st.lists(st.tuples(st.sampled_from("abc"), st.integers(-12, 12)), max_size=3),
    st.integers(-20, 20),
    st.lists(st.tuples(st.sampled_from(["//", "*", "+", "-"]), NONZERO), min_size=1, max_size=4),
    st.fixed_dictionaries({k: st.integers(-30, 30) for k in "abc"}),
)
def test_sym_simplification_keeps_the_value(
    terms: list[tuple[str, int]], const: int, steps: list[tuple[str, int]], values: dict[str, int]
) -> None:
    """Linear forms divided, scaled and shifted by constants: the folding rules are exact."""
    symbolic: Sym | int = const
    concrete = const
    text = str(const)
    for name, coefficient in terms:
        symbolic = symbolic + Sym.name(name) * coefficient
        concrete += values[name] * coefficient
        text = f"({text} + {name} * ({coefficient}))"
    for op, k in steps:
        symbolic = {"//": symbolic // k, "*": symbolic * k, "+": symbolic + k, "-": symbolic - k}[op]
        concrete = {"//": concrete // k, "*": concrete * k, "+": concrete + k, "-": concrete - k}[op]
        text = f"({text} {op} ({k}))"
    assert python(render_value(symbolic), values) == concrete
    if isinstance(symbolic, Sym):
        assert symbolic.substitute(values) == concrete
    assert parse(text).evaluate({k: Sym.name(k) for k in "abc"}) == symbolic


SYM_LEAVES = st.one_of(st.integers(-5, 9), st.sampled_from(["a", "b", "c"]))


def sym_trees() -> st.SearchStrategy[str]:
    def extend(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        return st.one_of(
            st.tuples(children, st.sampled_from(["+", "-", "*", "//"]), children).map(
                lambda t: f"({t[0]} {t[1]} {t[2]})"
            ),
            children.map(lambda x: f"(-{x})"),
            st.tuples(st.sampled_from(["min", "max"]), children, children).map(lambda t: f"{t[0]}({t[1]}, {t[2]})"),
            children.map(lambda x: f"int({x})"),
        )

    return st.recursive(SYM_LEAVES.map(lambda x: f"({x})" if isinstance(x, int) else x), extend, max_leaves=12)


@FAST
@given(sym_trees(), st.fixed_dictionaries({k: st.integers(-9, 9) for k in "abc"}))
def test_sym_render_computes_the_concrete_value(text: str, values: dict[str, int]) -> None:
    expr = parse(text)
    try:
        concrete = expr.evaluate(values)
    except ExprError as e:
        assert e.message == "division by zero"
        assume(False)
    symbols = {name: Sym.name(name) for name in "abc"}
    try:
        symbolic = expr.evaluate(symbols)
    except ExprError as e:  # a literal zero divisor is found without values
        assert e.message == "division by zero"
        assume(False)
    assert isinstance(symbolic, (int, Sym))
    source = render_value(symbolic)
    try:
        rendered = python(source, values)
    except ZeroDivisionError:
        pytest.fail(f"{source!r} divides by zero but {text!r} is {concrete}")
    assert rendered == concrete
    if isinstance(symbolic, Sym):
        assert symbolic.substitute(values) == concrete
        assert symbolic.names <= expr.names
        assert parse(source).evaluate(values) == concrete
