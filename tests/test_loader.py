"""Tests of nasdsl.loader: safe YAML loading with locations and limits.

Hostile inputs are refused by construction (limits checked as events arrive), so these tests
only run them: a regression to super-linear work shows up as a slow test file, not a flaky
timing assertion. ``yaml.safe_load`` is the independent reference for what benign YAML means.
"""

from __future__ import annotations

import inspect
import math
import random
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nasdsl import loader
from nasdsl.errors import LimitError, Location, NasdslError, SpecError
from nasdsl.loader import Limits, YList, YMap, load_file, load_text, scalar_type_name

HAVE_LIBYAML = hasattr(yaml, "CSafeLoader")
PARSERS = [
    pytest.param(
        "libyaml",
        id="libyaml",
        marks=pytest.mark.skipif(not HAVE_LIBYAML, reason="PyYAML built without libyaml"),
    ),
    pytest.param("python", id="python"),
]


def _parser_class(name: str) -> type:
    return yaml.CSafeLoader if name == "libyaml" else yaml.SafeLoader


@pytest.fixture(params=PARSERS)
def parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with each of PyYAML's parsers producing the events; yields the parser's name."""
    cls = _parser_class(request.param)
    monkeypatch.setattr(loader, "_parser_loader", lambda: cls)
    return request.param


def write(tmp_path: Path, content: str | bytes, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    return path


def file_error(path: Path, error: type[SpecError] = SpecError, **kwargs: object) -> str:
    with pytest.raises(error) as info:
        load_file(path, display_name="spec.yaml", **kwargs)  # type: ignore[arg-type]
    return str(info.value)


def text_error(text: str, error: type[SpecError] = SpecError, **kwargs: object) -> str:
    with pytest.raises(error) as info:
        load_text(text, "spec.yaml", **kwargs)  # type: ignore[arg-type]
    return str(info.value)


def same(ours: object, ref: object) -> bool:
    """Equal values of equal types all the way down (1 == True == 1.0 is not good enough here)."""
    if isinstance(ref, dict):
        return isinstance(ours, YMap) and list(ours) == list(ref) and all(same(ours[k], v) for k, v in ref.items())
    if isinstance(ref, list):
        return isinstance(ours, YList) and len(ours) == len(ref) and all(map(same, ours, ref))
    if isinstance(ref, float) and math.isnan(ref):
        return isinstance(ours, float) and math.isnan(ours)
    return type(ours) is type(ref) and ours == ref


# --------------------------------------------------------------------------- code execution


def test_python_object_tag_is_refused_at_the_tag(tmp_path: Path) -> None:
    path = write(tmp_path, "model:\n  layers: !!python/object/apply:os.system ['echo pwned']\n")
    assert file_error(path) == (
        "spec.yaml:2:11: error: tag '!!python/object/apply:os.system' is not allowed: specs hold plain data only"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: !!python/name:os.system\n", "1:4: error: tag '!!python/name:os.system' is not allowed"),
        ("a: &x !!python/object:os.Foo {b: 1}\n", "1:7: error: tag '!!python/object:os.Foo' is not allowed"),
        ("a: [1, !!python/tuple [2]]\n", "1:8: error: tag '!!python/tuple' is not allowed"),
        ("a: !foo bar\n", "1:4: error: tag '!foo' is not allowed"),
        ("a: !<tag:example.com,2000:x> 1\n", "1:4: error: tag '!<tag:example.com,2000:x>' is not allowed"),
        ("a: !!binary aGVsbG8=\n", "1:4: error: tag '!!binary' is not allowed"),
        ("a: !!set {x, y}\n", "1:4: error: tag '!!set' is not allowed"),
        ("a: !!omap [x: 1]\n", "1:4: error: tag '!!omap' is not allowed"),
        ("a: !!timestamp 2001-12-14\n", "1:4: error: tag '!!timestamp' is not allowed"),
        (
            "%TAG !p! tag:yaml.org,2002:python/\n---\na: !p!name:os.system\n",
            "3:4: error: tag '!!python/name:os.system'",
        ),
        (
            "!!python/object/apply:os.system\n- ls\n",
            "1:1: error: tag '!!python/object/apply:os.system' is not",
        ),
    ],
)
def test_non_standard_tags_are_refused(parser: str, text: str, message: str) -> None:
    assert text_error(text, top="any").startswith("spec.yaml:" + message)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: !!seq x\n", "spec.yaml:1:4: error: tag '!!seq' cannot be used on a scalar"),
        ("a: !!int [1]\n", "spec.yaml:1:4: error: tag '!!int' cannot be used on a list"),
        ("a: !!map [1]\n", "spec.yaml:1:4: error: tag '!!map' cannot be used on a list"),
        ("a: !!seq {b: 1}\n", "spec.yaml:1:4: error: tag '!!seq' cannot be used on a mapping"),
        ("a: !!int abc\n", "spec.yaml:1:4: error: 'abc' is not an integer (tagged !!int)"),
        ("a: !!float x1\n", "spec.yaml:1:4: error: 'x1' is not a float (tagged !!float)"),
        ("a: !!bool maybe\n", "spec.yaml:1:4: error: 'maybe' is not a boolean (tagged !!bool)"),
        ("a: !!int ''\n", "spec.yaml:1:4: error: '' is not an integer (tagged !!int)"),
    ],
)
def test_misused_standard_tags(text: str, message: str) -> None:
    assert text_error(text) == message


def test_standard_tags_mean_what_safe_load_says(parser: str) -> None:
    text = (
        "s: !!str 1\ni: !!int '3'\nf: !!float 1\nb: !!bool yes\nn: !!null ''\n"
        "q: !!seq [1]\nm: !!map {a: 1}\nbang: ! 12\nquoted: ! '12'\n"
    )
    assert same(load_text(text, "spec.yaml"), yaml.safe_load(text))


# --------------------------------------------------------------------------- blow-ups


def billion_laughs(levels: int = 9, fanout: int = 10) -> str:
    lines = ["a0: &a0 [" + ", ".join(["lol"] * fanout) + "]"]
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * fanout) + "]")
    return "\n".join(lines) + "\n"


def test_billion_laughs_is_refused_without_expanding(tmp_path: Path) -> None:
    path = write(tmp_path, billion_laughs())
    assert file_error(path, LimitError) == (
        "spec.yaml:6:10: error: alias expansion exceeds 200000 nodes (billion-laughs guard); "
        "raise it with --max-yaml-nodes"
    )


def test_aliases_count_as_the_size_of_their_target() -> None:
    # root + 'a' + [1, 2, 3] (4 nodes) + 'b' + [*a, *a] (1 + 2 * 4) = 16 nodes
    text = "a: &a [1, 2, 3]\nb: [*a, *a]\n"
    doc = load_text(text, "spec.yaml", limits=Limits(max_nodes=16))
    assert isinstance(doc, YMap)
    assert doc["b"][0] is doc["a"] and doc["b"] == [[1, 2, 3], [1, 2, 3]]
    assert text_error(text, LimitError, limits=Limits(max_nodes=15)) == (
        "spec.yaml:2:9: error: alias expansion exceeds 15 nodes (billion-laughs guard); raise it with --max-yaml-nodes"
    )


def test_node_limit_without_aliases(tmp_path: Path) -> None:
    path = write(tmp_path, "a: [" + ",".join(["1"] * 250_000) + "]\n")
    # root, 'a' and the list make 3 nodes: item 199,998 is node 200,001, at column 5 + 2 * 199,997
    assert file_error(path, LimitError) == (
        "spec.yaml:1:399999: error: the spec has more than 200000 YAML nodes (raise it with --max-yaml-nodes)"
    )


def test_a_100000_element_flow_list_loads(tmp_path: Path) -> None:
    path = write(tmp_path, "model: [" + ",".join(["1"] * 100_000) + "]\n")
    doc = load_file(path)
    assert doc["model"] == [1] * 100_000
    assert doc["model"].loc_of(99_999) == Location(str(path), 1, 9 + 2 * 99_999)


DEEP_FLOW_LOCATION = {"libyaml": "1:1007", "python": "1:71"}


def test_10000_deep_flow_nesting(parser: str, tmp_path: Path) -> None:
    # libyaml looks ahead for a possible simple key and stops at its own limit of 1000 levels
    # before handing out the 65th event; the pure-Python parser hands it out right away.
    path = write(tmp_path, "model: " + "[" * 10_000 + "]" * 10_000 + "\n")
    assert file_error(path, LimitError) == (
        f"spec.yaml:{DEEP_FLOW_LOCATION[parser]}: error: nesting deeper than 64 levels (raise it with --max-depth)"
    )


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("a: " + "{a: " * 10_000 + "1" + "}" * 10_000 + "\n", "1:256"),
        ("- " * 10_000 + "x\n", "1:129"),
        ("".join(" " * i + "k:\n" for i in range(65)), "65:65"),
    ],
    ids=["flow-mappings", "block-sequences", "block-mappings"],
)
def test_deep_nesting_is_refused_at_level_65(parser: str, text: str, where: str) -> None:
    assert text_error(text, LimitError, top="any") == (
        f"spec.yaml:{where}: error: nesting deeper than 64 levels (raise it with --max-depth)"
    )


def test_10000_deep_block_mappings(parser: str) -> None:
    text = "".join(" " * i + "k:\n" for i in range(10_000))  # 50 MB of indentation
    assert text_error(text, LimitError) == (
        "spec.yaml:1:1: error: text is 50025000 characters long, above the limit of 1048576 (raise it with --max-bytes)"
    )
    assert text_error(text, LimitError, limits=Limits(max_bytes=1 << 30)) == (
        "spec.yaml:65:65: error: nesting deeper than 64 levels (raise it with --max-depth)"
    )


def test_64_levels_are_fine_and_the_limit_can_be_raised(parser: str) -> None:
    value = load_text("[" * 64 + "]" * 64, "spec.yaml", top="any")
    for _ in range(63):
        assert isinstance(value, YList) and len(value) == 1
        value = value[0]
    assert value == []
    assert load_text("[" * 100 + "]" * 100, "spec.yaml", top="any", limits=Limits(max_depth=100))


def test_building_the_tree_does_not_recurse(parser: str) -> None:
    # 71 levels of nesting (31 block mappings, 40 flow lists) fit in a stack 40 frames deeper than ours
    text = "".join(" " * i + "k:\n" for i in range(30)) + " " * 30 + "k: " + "[" * 40 + "]" * 40 + "\n"
    depth = len(inspect.stack(0))
    old_limit = sys.getrecursionlimit()
    sys.setrecursionlimit(depth + 40)
    try:
        doc = load_text(text, "spec.yaml", limits=Limits(max_depth=74))
    finally:
        sys.setrecursionlimit(old_limit)
    assert isinstance(doc, YMap)


def test_aliases_cannot_stack_nesting_past_the_limit() -> None:
    text = "a: &a " + "[" * 40 + "]" * 40 + "\nb: &b " + "[" * 30 + "*a" + "]" * 30 + "\n"
    assert text_error(text, LimitError) == (
        "spec.yaml:2:37: error: nesting deeper than 64 levels once alias '*a' is expanded (raise it with --max-depth)"
    )


def test_long_scalars_and_huge_integers() -> None:
    assert text_error("a: " + "x" * 10_001 + "\n", LimitError) == (
        "spec.yaml:1:4: error: scalar is 10001 characters long, above the limit of 10000 "
        "(raise it with --max-scalar-length)"
    )
    assert load_text("a: " + "x" * 10_000, "spec.yaml")["a"] == "x" * 10_000  # type: ignore[index]
    assert text_error("a: " + "7" * 5000 + "\n") == (
        "spec.yaml:1:4: error: integer '77777777777777777777...77777777777777777777' has 5000 digits, "
        "more than the 4300 allowed"
    )


def test_file_size_limit(tmp_path: Path) -> None:
    path = write(tmp_path, "a: " + "x" * ((2 << 20) - 4) + "\n")
    assert file_error(path, LimitError) == (
        "spec.yaml:1:1: error: file is 2097152 bytes, above the limit of 1048576 (raise it with --max-bytes)"
    )
    limits = Limits(max_bytes=4 << 20, max_scalar_length=4 << 20)
    assert len(load_file(path, limits=limits)["a"]) == (2 << 20) - 4


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_depth"):
        Limits(max_depth=0)


# --------------------------------------------------------------------------- bad files


def test_missing_file_and_directory(tmp_path: Path) -> None:
    assert file_error(tmp_path / "nope.yaml") == "spec.yaml:1:1: error: no such file"
    assert file_error(tmp_path) == "spec.yaml:1:1: error: is a directory, expected a YAML file"
    with pytest.raises(SpecError) as info:
        load_file(tmp_path / "nope.yaml")
    assert info.value.location == Location(str(tmp_path / "nope.yaml"), 1, 1)


def test_non_utf8_bytes(tmp_path: Path) -> None:
    path = write(tmp_path, "model:\n  name: café\n  x: caf\xe9\n".encode()[:-3] + b"\xff\n")
    assert file_error(path) == "spec.yaml:1:1: error: file is not valid UTF-8: byte 0xff at line 3, column 9"
    latin1 = write(tmp_path, "a: é\n".encode("latin-1"), "latin1.yaml")
    assert file_error(latin1) == "spec.yaml:1:1: error: file is not valid UTF-8: byte 0xe9 at line 1, column 4"


def test_binary_garbage(tmp_path: Path) -> None:
    garbage = random.Random(1234).randbytes(4096)
    assert file_error(write(tmp_path, garbage)) == (
        "spec.yaml:1:1: error: file contains a NUL byte at line 10, column 68: "
        "it looks like binary data, not a YAML text file"
    )
    no_nul = write(tmp_path, garbage.replace(b"\0", b"1"), "no_nul.yaml")
    assert file_error(no_nul) == "spec.yaml:1:1: error: file is not valid UTF-8: byte 0xb9 at line 1, column 1"
    utf16 = write(tmp_path, "a: 1\n".encode("utf-16"), "utf16.yaml")
    assert file_error(utf16) == "spec.yaml:1:1: error: file is UTF-16 encoded: save it as UTF-8"


def test_control_characters_in_text() -> None:
    for breaks in ("\n", "\r\n", "\r", "\x85", "\u2028"):  # all line breaks to YAML
        assert text_error(f"a: 1{breaks}b: \x07") == (
            "spec.yaml:2:4: error: found character '\\x07' (U+0007), which YAML does not allow"
        )
    assert (
        text_error("a: b\x07\n") == "spec.yaml:1:5: error: found character '\\x07' (U+0007), which YAML does not allow"
    )
    assert text_error("a: 1\nb: \x00\n") == (
        "spec.yaml:2:4: error: found a NUL character: this looks like binary data, not YAML text"
    )


@pytest.mark.parametrize("content", ["", "\n\n", "# only a comment\n\n# another\n", "---\n", "\ufeff"])
def test_empty_file(tmp_path: Path, content: str) -> None:
    assert file_error(write(tmp_path, content)) == (
        "spec.yaml:1:1: error: the file is empty: expected a mapping with at least the key 'model'"
    )


@pytest.mark.parametrize(
    ("content", "found", "where"),
    [("- a\n- b\n", "a list", "1:1"), ("# c\nhello\n", "a string", "2:1"), ("--- 3\n", "an integer", "1:5")],
)
def test_top_level_must_be_a_mapping(tmp_path: Path, content: str, found: str, where: str) -> None:
    assert file_error(write(tmp_path, content)) == (
        f"spec.yaml:{where}: error: expected a mapping at the top level, got {found}"
    )


def test_multiple_documents(tmp_path: Path) -> None:
    assert file_error(write(tmp_path, "model: a\n---\nmodel: b\n")) == (
        "spec.yaml:2:1: error: found a second YAML document: a spec holds exactly one"
    )
    assert load_file(write(tmp_path, "---\nmodel: a\n...\n", "one.yaml")) == {"model": "a"}


def test_bom_is_skipped(tmp_path: Path) -> None:
    assert load_file(write(tmp_path, "\ufeffmodel: 1\n")) == {"model": 1}


# --------------------------------------------------------------------------- keys and aliases


def test_duplicate_keys() -> None:
    text = "model:\n  conv1: {op: conv}\n  pool: {op: max}\n  conv1: {op: relu}\n"
    assert text_error(text) == "spec.yaml:4:3: error: duplicate key 'conv1' (first defined at line 2)"
    assert (
        text_error("a: {x: 1, x: 2}\n")
        == "spec.yaml:1:11: error: duplicate key 'x' (first defined at line 1, column 5)"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1: x\n", "1:1: error: expected a string key, got int 1"),
        ("null: x\n", "1:1: error: expected a string key, got null"),
        ("~: x\n", "1:1: error: expected a string key, got null"),
        ("? \n: x\n", "1:2: error: expected a string key, got null"),
        ("yes: x\n", "1:1: error: expected a string key, got bool yes"),
        ("1.5: x\n", "1:1: error: expected a string key, got float 1.5"),
        ("[a]: x\n", "1:1: error: expected a string key, got a list"),
        ("? {a: 1}\n: x\n", "1:3: error: expected a string key, got a mapping"),
        ("{0x10: a}\n", "1:2: error: expected a string key, got int 0x10"),
        ("a: &n 1\n*n : 2\n", "2:1: error: expected a string key, got int 1"),
        ("a: &l [1]\n*l : 2\n", "2:1: error: expected a string key, got a list"),
        ("<<: {a: 1}\n", "1:1: error: merge keys ('<<') are not supported: write the keys out in full"),
        (
            "base: &b {a: 1}\nx:\n  <<: *b\n",
            "3:3: error: merge keys ('<<') are not supported: write the keys out in full",
        ),
    ],
)
def test_keys_must_be_strings(text: str, message: str) -> None:
    assert text_error(text) == "spec.yaml:" + message


def test_quoted_keys_and_string_aliases_are_fine() -> None:
    doc = load_text("'1': a\n\"null\": b\n'<<': c\nk: &k name\n*k : d\n", "spec.yaml")
    assert same(doc, {"1": "a", "null": "b", "<<": "c", "k": "name", "name": "d"})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: *x\n", "1:4: error: alias '*x' refers to no anchor '&x' defined before it"),
        (
            "a: &x [1, *x]\n",
            "1:11: error: alias '*x' is inside the collection it refers to: recursive data is not allowed",
        ),
        ("a: &x 1\nb: &x 2\n", "2:4: error: duplicate anchor '&x' (first defined at line 1)"),
        ("a: &x [1, &x 2]\n", "1:11: error: duplicate anchor '&x' (first defined at line 1)"),
    ],
)
def test_alias_errors(text: str, message: str) -> None:
    assert text_error(text) == "spec.yaml:" + message


# --------------------------------------------------------------------------- syntax errors

SYNTAX_ERRORS = {
    "tab-indent": (
        "model:\n\tconv: 1\n",
        {
            "libyaml": "2:1: error: found character '\\t' that cannot start any token: use spaces, "
            "YAML does not allow tabs here",
            "python": "2:1: error: found character '\\t' that cannot start any token: use spaces, "
            "YAML does not allow tabs here",
        },
    ),
    "tab-in-block": (
        "model:\n  a: 1\n\t b: 2\n",
        {
            "libyaml": "3:1: error: found a tab character that violates indentation: use spaces, "
            "YAML does not allow tabs here (while scanning a plain scalar started at line 2, column 6)",
            "python": "3:1: error: found character '\\t' that cannot start any token: use spaces, "
            "YAML does not allow tabs here",
        },
    ),
    "unclosed-bracket": (
        "model:\n  layers: [conv1, conv2\n  head: fc\n",
        {
            "libyaml": "3:7: error: did not find expected ',' or ']' "
            "(while parsing a flow sequence started at line 2, column 11)",
            "python": "3:7: error: expected ',' or ']', but got ':' "
            "(while parsing a flow sequence started at line 2, column 11)",
        },
    ),
    "unclosed-at-end": (
        "model: {a: 1\n",
        {
            "libyaml": "2:1: error: did not find expected ',' or '}' "
            "(while parsing a flow mapping started at line 1, column 8)",
            "python": "2:1: error: expected ',' or '}', but got '<stream end>' "
            "(while parsing a flow mapping started at line 1, column 8)",
        },
    ),
    "missing-colon": (
        "model:\n  a: 1\n  b\n  c: 2\n",
        {
            "libyaml": "4:3: error: could not find expected ':' "
            "(while scanning a simple key started at line 3, column 3)",
            "python": "4:3: error: could not find expected ':' "
            "(while scanning a simple key started at line 3, column 3)",
        },
    ),
    "unterminated-quote": (
        "a: 'abc\n",
        {
            "libyaml": "2:1: error: found unexpected end of stream "
            "(while scanning a quoted scalar started at line 1, column 4)",
            "python": "2:1: error: found unexpected end of stream "
            "(while scanning a quoted scalar started at line 1, column 4)",
        },
    ),
}


@pytest.mark.parametrize("case", list(SYNTAX_ERRORS))
def test_syntax_errors(parser: str, tmp_path: Path, case: str) -> None:
    text, messages = SYNTAX_ERRORS[case]
    message = file_error(write(tmp_path, text))
    assert message == "spec.yaml:" + messages[parser]
    assert "Traceback" not in message and "<unicode string>" not in message


def test_syntax_errors_are_shifted_like_everything_else(parser: str) -> None:
    with pytest.raises(SpecError) as info:
        load_text("[1, 2", "<--set a.b>", top="any", line=1, column=5)
    assert info.value.location == Location("<--set a.b>", 1, 10)  # the end of the text, on its only line
    assert info.value.__cause__ is None and info.value.__suppress_context__


YAMLISH = st.text(alphabet=st.sampled_from(list("ab1 :-[]{},'\"\n\t#&*!|>?%@`.\\~") + ["é", "\x07"]), max_size=40)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=YAMLISH, parser_name=st.sampled_from(["libyaml", "python"] if HAVE_LIBYAML else ["python"]))
def test_garbage_in_gives_values_or_spec_errors(text: str, parser_name: str) -> None:
    cls = _parser_class(parser_name)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loader, "_parser_loader", lambda: cls)
        try:
            load_text(text, "fuzz.yaml", top="any")
        except SpecError as exc:
            assert exc.location is not None and exc.location.file == "fuzz.yaml"
            assert exc.location.line >= 1 and exc.location.column >= 1


# --------------------------------------------------------------------------- locations

LOCATED = """\
model:
  conv1:
    op: conv
    args: {c_out: 64, kernel: 3}
    inputs:
      - x
      - "y"
  héllo: [a, é, c]
  empty:
  block: |
    text
"""


def test_locations_of_keys_values_and_items(parser: str, tmp_path: Path) -> None:
    path = write(tmp_path, LOCATED)
    doc = load_file(path, display_name="net.yaml")

    def at(line: int, column: int) -> Location:
        return Location("net.yaml", line, column)

    model = doc["model"]
    conv1 = model["conv1"]
    args = conv1["args"]
    inputs = conv1["inputs"]
    assert (doc.loc, doc.key_locs["model"], doc.value_locs["model"]) == (at(1, 1), at(1, 1), at(2, 3))
    assert (model.key_locs["conv1"], model.loc_of("conv1"), conv1.loc) == (at(2, 3), at(3, 5), at(3, 5))
    assert (conv1.key_locs["op"], conv1.loc_of("op")) == (at(3, 5), at(3, 9))
    assert args.loc == conv1.loc_of("args") == at(4, 11)
    assert args.key_locs == {"c_out": at(4, 12), "kernel": at(4, 23)}
    assert args.value_locs == {"c_out": at(4, 19), "kernel": at(4, 31)}
    # a quoted scalar is located at its text, one past the quote
    assert inputs.loc == at(6, 7) and inputs.item_locs == [at(6, 9), at(7, 10)]
    assert inputs.loc_of(1) == inputs.loc_of(-1) == at(7, 10) and inputs.loc_of(2) == at(6, 7)
    assert model.key_locs["héllo"] == at(8, 3)  # columns count characters, not bytes
    assert model["héllo"].item_locs == [at(8, 11), at(8, 14), at(8, 17)]
    assert model["empty"] is None and model.loc_of("empty") == at(9, 9)
    assert model["block"] == "text\n" and model.loc_of("block") == at(10, 10)
    assert model.loc_of("missing") == at(2, 3)


def test_loc_of_falls_back_to_the_key_then_the_mapping() -> None:
    m = YMap(Location("f", 1, 1))
    m["a"] = 1
    m.key_locs["a"] = Location("f", 2, 3)
    assert m.loc_of("a") == Location("f", 2, 3) and m.loc_of("b") == Location("f", 1, 1)


def test_set_values_are_shifted() -> None:
    value = load_text("[1, x, 3]", "<--set inception4a.c3x3>", top="any", column=26)
    assert isinstance(value, YList) and value == [1, "x", 3]
    assert value.item_locs == [Location("<--set inception4a.c3x3>", 1, c) for c in (27, 30, 33)]
    mapping = load_text("a: 1\nb: 2\n", "inline", top="any", line=10, column=5)
    assert isinstance(mapping, YMap)
    assert (mapping.loc_of("a"), mapping.loc_of("b")) == (
        Location("inline", 10, 8),
        Location("inline", 11, 4),
    )
    assert text_error("x: !!python/name:os.system", top="any", line=3, column=7) == (
        "spec.yaml:3:10: error: tag '!!python/name:os.system' is not allowed: specs hold plain data only"
    )


def test_top_any_returns_whatever_is_there() -> None:
    assert load_text("", "s", top="any") is None
    assert load_text("64", "s", top="any") == 64
    assert load_text("'64'", "s", top="any") == "64"
    assert load_text("[a, b]", "s", top="any") == ["a", "b"]
    with pytest.raises(ValueError, match="top"):
        load_text("a: 1", "s", top="list")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- scalar types

BENIGN = [
    # (017 and 1:30, octal and base 60 in YAML 1.1, are refused: tests/test_hostile_more.py)
    "a: 1_000\nb: 0x10\nc: 1e3\ne: 0b101\nf: +12\ng: -0\ni: 0o17\n",
    "a: 1.5\nb: 1.5e+3\nc: 1.5e3\nd: .inf\ne: -.Inf\nf: .NaN\ng: 1_000.5\nh: 6.8523015e+5\n",
    "a: yes\nb: No\nc: ON\nd: off\ne: True\nf: FALSE\ng: y\nh: n\ni: Yes!\n",
    "a: ~\nb: null\nc: Null\nd:\ne: ''\nf: \"\"\ng: NULL\n",
    "a: '1'\nb: \"true\"\nc: 'null'\nd: \"0x10\"\ne: \"\\u00e9\\t\"\nf: 'it''s'\n",
    "a: |\n  line 1\n  line 2\nb: >\n  folded\n  text\nc: |-\n  kept\n",
    "a: plain words\n  continued\nb: [1, two, 3.0, {c: d}]\nc:\n- x\n- - y\n  - z\n",
    "base: &b {x: 1, y: [1, 2]}\nuse: *b\nlist: &l [a]\nmore: [*l, *l]\n",
    "? complex\n: value\nkey with spaces: v\n\"quoted key\": 1\n'': empty key\n",
    "a: '-'\nb: -x\nc: =\nd: <<\ne: -1\nf: 0.\ng: .5\nh: +.inf\n",
]


@pytest.mark.parametrize("text", BENIGN)
def test_benign_documents_load_like_safe_load(parser: str, text: str) -> None:
    # safe_load refuses plain '<<' and '=' values (merge and value tags); here they are strings
    reference = yaml.safe_load(text.replace(": <<", ": '<<'").replace(": =", ": '='"))
    assert same(load_text(text, "spec.yaml"), reference)


def test_a_few_types_spelled_out() -> None:
    doc = load_text("a: 1_000\nb: 0x10\nc: 1e3\nd: 2001-12-14\ne: 2001-12-14t21:59:43.10-05:00\n", "s")
    assert same(doc, {"a": 1000, "b": 16, "c": "1e3", "d": "2001-12-14", "e": "2001-12-14t21:59:43.10-05:00"})


def test_scalar_type_name() -> None:
    values = (True, False, 1, 1.5, "s", None, {}, [], YMap(Location("f", 1, 1)), YList(Location("f", 1, 1)))
    names = ["a boolean", "a boolean", "an integer", "a float", "a string", "null", "a mapping", "a list"]
    assert [scalar_type_name(v) for v in values] == names + ["a mapping", "a list"]


scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(st.characters(exclude_categories=["Cs"]), max_size=20)
)
documents: st.SearchStrategy[object] = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=25,
)
dump_options: st.SearchStrategy[Callable[[object], str]] = st.builds(
    lambda flow, unicode, width: (
        lambda data: yaml.safe_dump(data, default_flow_style=flow, allow_unicode=unicode, width=width)
    ),
    st.sampled_from([None, True, False]),
    st.booleans(),
    st.sampled_from([20, 80]),
)


@settings(max_examples=300, deadline=None)
@given(data=documents, dump=dump_options)
def test_round_trip_agrees_with_safe_load(data: object, dump: Callable[[object], str]) -> None:
    text = dump(data)
    assert same(load_text(text, "gen.yaml", top="any"), yaml.safe_load(text))


def test_errors_are_nasdsl_errors() -> None:
    with pytest.raises(NasdslError):
        load_text("a: [", "s")
