"""Design spaces: choices in specs (nasdsl/space.py), their fast evaluation (nasdsl/variants.py), and the
``space`` and ``sweep`` commands. The fast figures are checked against full compilations of the
variants' plain documents, exhaustively on small spaces and with hypothesis on random picks."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nasdsl
from nasdsl import document, ir
from nasdsl import space as spaces
from nasdsl.cli import main
from nasdsl.document import to_yaml
from nasdsl.errors import NasdslError
from nasdsl.summary import summarize
from nasdsl.variants import Evaluator, figures, peak_activations

from paths import SPECS

#: a small spec that uses every kind of choice: in variables (numbers, booleans, a range, a dependent
#: choice, a conditional one), a parameter default, a template body, a list item, a structural `when`,
#: a constraint; some variants do not fit (the pooling window outgrows the map)
FAMILY = """\
nasdsl: 1
name: Family
input:
  shape: [3, res, res]
variables:
  res: {choice: [32, 24, 16]}
  width: {range: [8, 24, 8]}
  wide: {choice: ["width", "2 * width"]}
  deep: {choice: [true, false]}
  head_p: {choice: [0.5, 0.2], when: deep}
  k: {choice: [3, 5], default: 5}
constraints:
  - "wide <= 32 or not deep"
templates:
  ConvBN:
    params: [out, {kernel: {choice: [3, 1]}}, {stride: 1}]
    body:
      conv: {op: conv2d, out: out, kernel: kernel, stride: stride, padding: "(kernel - 1) // 2", bias: false}
      bn: batch_norm
      relu: relu
  Block:
    params: [out]
    body:
      concat:
        a: {use: ConvBN, args: [out]}
        b: {use: ConvBN, args: {out: {choice: ["out", "out // 2"]}, kernel: 1}}
model:
  stem: {use: ConvBN, args: [wide, k, 2]}
  pool: {op: max_pool, kernel: [{choice: [2, 3]}, 2]}
  block1: {use: Block, args: [width]}
  block2: {use: Block, args: [wide], when: deep}
  gap: {op: avg_pool, kernel: "res // 4"}
  flat: flatten
  drop: {op: dropout, p: head_p, when: {choice: [true, false]}}
  fc: {op: linear, out: 10}
outputs:
  logits: {from: fc}
  aux:
    from: block1
    head: [global_avg_pool, flatten, {op: linear, out: 10}]
    training_only: true
    when: deep
"""


def _write(tmp_path: Path, text: str, name: str = "family.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _space(path: Path, overrides=()) -> spaces.Space:
    return spaces.load_space(path, overrides)


@pytest.fixture(scope="module")
def family(tmp_path_factory) -> spaces.Space:
    return _space(_write(tmp_path_factory.mktemp("family"), FAMILY))


@pytest.fixture(scope="module")
def family_evaluator(family) -> Evaluator:
    return Evaluator(family)


def _full(space: spaces.Space, picks: tuple[int, ...]):
    """A variant compiled the slow way: its plain document through compile_spec's stages, no shortcuts."""
    doc = space.document_of(picks)
    spec = nasdsl.spec.parse_spec(doc, space.file, document.spec_hash(doc), space.files)
    return nasdsl.compile_spec(spec)


# --------------------------------------------------------------------------- the syntax


def test_the_choice_points_of_a_document(family):
    names = [p.name for p in family.points]
    assert names == [
        *("res", "width", "wide", "deep", "head_p", "k"),  # variables first, in order
        "pool.kernel.0",  # then the model's
        "drop.when",
        "templates.ConvBN.params.1.kernel",  # then the templates'
        "templates.Block.body.concat.b.out",
    ]
    width = family.points[1]
    assert width.kind == "range" and width.options == (8, 16, 24) and width.default == 0
    assert family.points[5].default == 1  # default: 5
    assert family.points[4].when is not None and family.points[4].variable == "head_p"
    assert family.size == 3 * 3 * 2 * 2 * 2 * 2 * 2 * 2 * 2 * 2
    assert [c.text for c in family.constraints] == ["wide <= 32 or not deep"]


def test_a_spec_with_choices_compiles_as_its_default_variant(tmp_path, family):
    path = _write(tmp_path, FAMILY)
    net = nasdsl.compile_spec(path)
    assert ir.info(net.graph).variables == {"res": 32, "width": 8, "wide": 8, "deep": True, "head_p": 0.5, "k": 5}
    assert ir.node(net.graph, "stem.conv").attrs["kernel"] == (5, 5)
    assert ir.node(net.graph, "pool").attrs["kernel"] == (2, 2)
    default = _full(family, family.default)
    assert figures(net.graph) == figures(default.graph)
    # --set on a choice replaces it by that value (any value, as when editing the file)
    other = nasdsl.compile_spec(path, ["width=12", "pool.kernel.0=1"])
    assert ir.info(other.graph).variables["width"] == 12
    assert ir.node(other.graph, "pool").attrs["kernel"] == (1, 2)


def test_a_plain_document_is_left_alone():
    doc, _ = document.load_document(SPECS / "googlenet.yaml")
    assert spaces.default_document(doc) is doc


ERRORS = [
    (
        "width: {choise: [1, 2]}",
        "variables.width.choise: unknown key 'choise' in a choice (did you mean 'choice'?); "
        "allowed: choice, range, default, when, name",
        (7, 11),
    ),
    ("width: {choice: []}", "variables.width.choice: expected a list of one or more options, got an empty list", None),
    ("width: {range: [8, 4, 2]}", "variables.width.range[1]: expected to >= from (8), got 4", None),
    ("width: {range: [8, 16, 0]}", "variables.width.range[2]: expected a step > 0, got 0", None),
    ("width: {range: [8, 16.5]}", "variables.width.range: expected [from, to] or [from, to, step], integers", None),
    (
        "width: {choice: [8, 16], default: 12}",
        "variables.width.default: expected the default to be one of the options (8, 16), got 12",
        None,
    ),
    ("width: {choice: [8, 16, 8]}", "variables.width.choice[2]: option 8 is given twice", None),
    (
        "width: {choice: [8, {choice: [1]}]}",
        "variables.width.choice[1]: expected an option that is a number, true, false or an expression, "
        "got a choice inside a choice",
        None,
    ),
    ("width: {choice: [8], range: [1, 2]}", "variables.width: expected a choice with one of the keys", None),
    ("width: {lo: 1, hi: 2}", "variables.width: expected a number, a name or an expression, got a mapping", None),
    ("width: {default: 8}", "variables.width: expected a choice with one of the keys 'choice'", None),
    ("width: {choice: [8, 16], when: later}", "a choice's condition may use only the variables before it", None),
    ("width: {choice: [8, 16], when: [1]}", "variables.width.when: expected a condition", None),
]


@pytest.mark.parametrize(("line", "message", "where"), ERRORS, ids=[e[0] for e in ERRORS])
def test_a_malformed_choice_is_a_located_error(tmp_path, capsys, line, message, where):
    text = f"""\
nasdsl: 1
name: Bad
input:
  shape: [3, 8, 8]
variables:
  n: 4
  {line}
  later: 1
model:
  conv: {{op: conv2d, out: width, kernel: 1}}
"""
    path = _write(tmp_path, text, "bad.yaml")
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert err.startswith(f"{path}:7:"), err
    if where is not None:
        assert err.startswith(f"{path}:{where[0]}:{where[1]}: error: "), err
    assert main(["space", str(path), "--count"]) == 2


#: a space whose model has an entry named ENTRY (beside a choice); names that are a block's key or a
#: key every block may carry cannot name an entry (docs/spec-language.md, "Names")
CLASH = """\
nasdsl: 1
name: Clash
input: {shape: [3, 8, 8]}
model:
  conv: {op: conv2d, out: {choice: [4, 8]}, kernel: 3, padding: 1}
  ENTRY
  pool: global_avg_pool
"""
CLASHES = [
    (
        "seq: relu",
        "6:3: error: model.seq: 'seq' is a block's key and cannot name a model entry (the model would read as "
        "one 'seq' block): give the entry another name",
    ),
    (
        "add: relu",
        "6:3: error: model.add: 'add' is a block's key and cannot name a model entry (the model would read as "
        "one 'add' block): give the entry another name",
    ),
    (
        "when: relu",
        "6:3: error: model.when: 'when' belongs to a block with one of the keys op, use, ref, seq, repeat, concat, "
        "add, mul, mean, matmul, interpolate_like; this mapping is a sequence of named blocks",
    ),
    (  # one level down: a named sequence with a child `seq` is a `seq` block that has a stray key
        "act: {relu: relu, seq: relu}",
        "6:9: error: model.act.relu: unknown key 'relu' beside 'seq': a mapping with the key 'seq' is a sequence, "
        "whose only other keys are phase, when, doc, from (a block's key cannot name an entry of a sequence: give "
        "the entry another name)",
    ),
]


@pytest.mark.parametrize(("entry", "message"), CLASHES, ids=[c[0].split(":")[0] for c in CLASHES])
def test_an_entry_named_after_a_key_is_refused_where_the_space_is_loaded(tmp_path, capsys, entry, message):
    """The choices are found by walking the document as the parser reads it. An entry named after a
    block's key made the walk read the model (or the entry) as another kind of block and find no
    choices, silently, where the compiler refuses the spec: the walk now refuses it where the
    parser does, with the compiler's error (load_space, and the command line with exit 2)."""
    path = _write(tmp_path, CLASH.replace("ENTRY", entry), "clash.yaml")
    with pytest.raises(NasdslError) as raised:
        spaces.load_space(path)
    message = f"{path}:{message}"
    assert str(raised.value) == message
    with pytest.raises(NasdslError) as compiled:
        nasdsl.compile_spec(path)
    assert str(compiled.value) == str(raised.value)
    assert main(["space", str(path), "--count"]) == 2
    assert capsys.readouterr().err.strip() == message


def test_a_branch_may_be_named_after_a_key_and_its_choices_are_found(tmp_path):
    """A merge's branches are named freely (`seq`, `when`): the parser reads them as branches, and so
    does the walk that finds the choices."""
    branches = "act: {add: {seq: {op: conv2d, out: {choice: [4, 8]}, kernel: 1}, when: relu}}"
    path = _write(tmp_path, CLASH.replace("ENTRY", branches), "branches.yaml")
    space = spaces.load_space(path)
    assert [p.name for p in space.points] == ["conv.out", "act.add.seq.out"] and space.count() == 4
    net = nasdsl.compile_spec(path, space.set_arguments((1, 1)))
    assert ir.node(net.graph, "act.seq").attrs["out"] == 8 and ir.node(net.graph, "conv").attrs["out"] == 8


def test_an_ops_chosen_input_is_one_place_of_one_choice(tmp_path):
    """An op's `from` is walked once, as the value it reads (it was also walked as an attribute:
    the choice stood twice at the same place)."""
    text = CLASH.replace(
        "ENTRY", "other: {op: conv2d, out: 4, kernel: 1}\n  act: {op: relu, from: {choice: [conv, other]}}"
    )
    space = spaces.load_space(_write(tmp_path, text, "from.yaml"))
    chosen = space.points[-1]
    assert chosen.kind == "input" and [p.spec_path for p in chosen.positions] == ["model.act.from"]
    assert space.count() == 4


def test_constraints_are_checked_on_the_default_and_must_be_conditions(tmp_path, capsys):
    base = FAMILY.replace('  - "wide <= 32 or not deep"', '  - "width >= 16"')
    path = _write(tmp_path, base)
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"{path}:13:6: error: constraints[0]: the spec's values break this constraint (width = 8)", err
    assert main(["check", str(path), "--set", "width=16"]) == 0
    capsys.readouterr()
    path = _write(tmp_path, FAMILY.replace('  - "wide <= 32 or not deep"', '  - "width + 1"'))
    assert main(["check", str(path)]) == 2
    assert "constraints[0]: expected a condition that gives true or false, got 9" in capsys.readouterr().err
    path = _write(tmp_path, FAMILY.replace('constraints:\n  - "wide <= 32 or not deep"', "constraints: wide"))
    assert main(["check", str(path)]) == 2
    assert "constraints: expected a list of conditions" in capsys.readouterr().err


# --------------------------------------------------------------------------- counting, ids, sampling


def test_the_count_is_exact_and_the_enumeration_is_in_id_order(family):
    listed = list(family.variants())
    ids = [family.id_of(p) for p in listed]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert family.count() == len(listed)
    # by brute force: every pick tuple, kept when inactive choices are at their default and the constraint holds
    brute = 0
    for n in range(family.size):
        picks = family.picks_of(n)
        assert family.id_of(picks) == n
        env = family.environment(picks)
        if not env["deep"] and picks[4] != family.points[4].default:
            continue
        if not (env["wide"] <= 32 or not env["deep"]):
            continue
        brute += 1
        assert family.why_not(picks) is None
    assert brute == family.count() == 1536


def test_an_independent_space_is_counted_without_enumerating():
    doc, files = document.load_document(SPECS / "googlenet.yaml")
    overrides = {f"inception{m}.c3x3": {"range": [64, 512, 16]} for m in ("3a", "3b", "4a", "4b", "4c", "4d", "4e")}
    space = spaces.find_space(spaces.apply_overrides(doc, overrides), files[0], files)
    assert space.independent and space.count() == 29**7
    last = space.picks_of(space.count() - 1)
    assert last == (28,) * 7 and space.id_of(last) == 29**7 - 1


def test_sampling_is_seeded_distinct_and_in_the_space(family):
    a = family.sample(25, seed=3)
    assert a == family.sample(25, seed=3) and a != family.sample(25, seed=4)
    ids = [family.id_of(p) for p in a]
    assert len(set(ids)) == 25 and ids == sorted(ids)
    assert all(family.why_not(p) is None for p in a)
    assert len(family.sample(10_000, seed=0)) == family.count()


def test_a_yaml_alias_ties_a_choice_and_names_reach_it(tmp_path):
    text = FAMILY.replace(
        "  block1: {use: Block, args: [width]}", "  block1: {use: Block, args: [&w {choice: [8, 12]}]}"
    )
    text = text.replace("  fc: {op: linear, out: 10}", "  fc: {op: linear, out: *w}")
    space = _space(_write(tmp_path, text))
    (tied,) = [p for p in space.points if len(p.positions) == 2]
    assert tied.name == "block1.out" and [q.set_path for q in tied.positions] == ["block1.out", "fc.out"]
    doc = space.document_of(tuple(1 if p is tied else p.default for p in space.points))
    assert doc["model"]["block1"]["args"][0] == 12 and doc["model"]["fc"]["out"] == 12
    # --set copies the document: the tie holds all the same
    again = _space(tmp_path / "family.yaml", ["k=3"])
    assert [len(p.positions) for p in again.points].count(2) == 1 and again.count() == space.count() // 2


def test_every_point_name_is_a_set_path_to_its_place(family):
    """Setting a point's name to an option with --set gives the document of that pick (for one point at a time)."""
    default_doc = family.document_of(family.default)
    for i, p in enumerate(family.points):
        picks = tuple(len(q.options) - 1 if j == i else q.default for j, q in enumerate(family.points))
        value = to_yaml(p.options[-1], p.option_locs[-1])
        via_set = document.apply_overrides(default_doc, {p.name: value})
        want = family.document_of(picks)
        assert _normal(via_set) == _normal(want), p.name


def _normal(doc) -> str:
    """A document's canonical text, template uses' positional arguments named (as --set makes them)."""
    plain = json.loads(document.canonical_json(doc))
    names = {t: [next(iter(p)) if isinstance(p, dict) else p for p in body.get("params", [])]
             for t, body in plain.get("templates", {}).items()}  # fmt: skip

    def fix(node):
        if isinstance(node, dict):
            node = {k: fix(v) for k, v in node.items()}
            if isinstance(node.get("use"), str) and isinstance(node.get("args"), list):
                node["args"] = dict(zip(names.get(node["use"], []), node["args"], strict=False))
            return node
        if isinstance(node, list):
            return [fix(v) for v in node]
        return node

    return json.dumps(fix(plain), sort_keys=True)


# --------------------------------------------------------------------------- fast figures = full compiles


def _agrees(space: spaces.Space, evaluator: Evaluator, picks: tuple[int, ...]) -> None:
    fast = evaluator.evaluate(picks)
    try:
        net = _full(space, picks)
    except NasdslError as e:
        assert not fast.valid and fast.error == e.format(), (space.choices(picks), fast, e.format())
        return
    assert fast.valid, (space.choices(picks), fast.error)
    totals, training = summarize(net.graph)["totals"], summarize(net.graph, with_aux=True)["totals"]
    f = fast.figures
    assert (f.params, f.macs, f.depth) == (totals["params"], totals["macs"], totals["depth"]), space.choices(picks)
    assert (f.params_train, f.macs_train) == (training["params"], training["macs"])
    assert f.peak == peak_activations(net.graph)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_fast_figures_equal_a_full_compile(family, family_evaluator, data):
    picks = tuple(data.draw(st.integers(0, len(p.options) - 1), label=p.name) for p in family.points)
    _agrees(family, family_evaluator, picks)


def test_fast_figures_equal_a_full_compile_along_the_enumeration(family):
    evaluator = Evaluator(family)
    listed = list(family.variants())
    valid = 0
    for picks in listed[::7]:
        _agrees(family, evaluator, picks)
    results = [evaluator.evaluate(p) for p in listed]
    valid = sum(r.valid for r in results)
    assert 0 < valid < len(results)  # the family has both
    # the structure changes with `deep` and with the dropout's `when`: four programs
    assert len(evaluator.programs) == 4


def test_googlenet_filter_counts_never_recompile_and_agree():
    doc, files = document.load_document(SPECS / "googlenet.yaml")
    overrides = {
        "inception4a.c3x3": {"choice": [208, 160, 256]},
        "inception4e.c5x5": {"choice": [128, 64]},
        "inception5b.c1x1": {"range": [256, 512, 128]},
        "dropout": {"choice": [0.4, 0.2]},
        "input.shape": {"choice": [[3, 224, 224], [3, 192, 192]]},
    }
    space = spaces.find_space(spaces.apply_overrides(doc, overrides), files[0], files)
    evaluator = Evaluator(space)
    for picks in space.variants():
        _agrees(space, evaluator, picks)
    assert evaluator.recompiled == 0  # 192x192 does not fit the 7x7 pool: a shape error, reported without compiling


def test_forgetting_the_shared_shapes_keeps_the_figures_right(family, monkeypatch):
    """The node caches key input shapes by id, each entry keeping its own alive: the table that
    makes equal shapes one object may be emptied at any time (here after every two shapes)."""
    import nasdsl.variants

    monkeypatch.setattr(nasdsl.variants, "MAX_TYPES", 2)
    evaluator = Evaluator(family)
    listed = list(family.variants())
    for picks in listed[::10] + listed[::-10]:
        _agrees(family, evaluator, picks)


def test_a_space_of_many_structures_compiles_each_once(tmp_path, monkeypatch):
    import nasdsl.variants

    """125 depth structures (more than the 64 programs always kept): each is compiled in full
    once, and every variant after its first is evaluated by its structure's program."""
    text = """\
nasdsl: 1
name: Depths
input: {shape: [3, 8, 8]}
variables: {a: {range: [1, 5]}, b: {range: [1, 5]}, c: {range: [1, 5]}}
model:
  first: {repeat: a, block: {op: conv2d, out: 4, kernel: 3, padding: 1}}
  second: {repeat: b, block: {op: conv2d, out: 4, kernel: 3, padding: 1}}
  third: {repeat: c, block: {op: conv2d, out: 4, kernel: 3, padding: 1}}
  pool: global_avg_pool
  flat: flatten
  fc: {op: linear, out: 2}
"""
    space = spaces.load_space(_write(tmp_path, text, "depths.yaml"))
    evaluator = Evaluator(space)
    listed = list(space.variants())
    assert len(listed) == 125
    for picks in listed:
        assert evaluator.evaluate(picks).valid
    # the second time through, each variant is run by its own structure's program, found first (the
    # depths a, b and c are the points the repeat counts name), not after trying the others
    runs = []
    program_run = nasdsl.variants._Program.run
    monkeypatch.setattr(nasdsl.variants._Program, "run", lambda self, *a: runs.append(self) or program_run(self, *a))
    for picks in listed:
        assert evaluator.evaluate(picks).valid
    assert len(runs) == len(listed) == len(set(map(id, runs)))
    assert evaluator.recompiled == 124  # the default's structure is compiled when the evaluator is made
    _agrees(space, evaluator, listed[-1])


def test_an_invalid_default_still_gives_the_fast_path_its_structure(capsys):
    """The first input shape does not fit GoogLeNet's 7x7 pool: no variant is compiled in full all the same."""
    spec = str(SPECS / "googlenet.yaml")
    argv = ["sweep", spec, "--set", "input.shape=[[3,192,192],[3,224,224]]", "--set", "num_classes=[10,20]"]
    assert main([*argv, "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["recompiled"] == 0 and [v["valid"] for v in data["variants"]] == [False, True, False, True]
    with pytest.raises(NasdslError) as caught:
        nasdsl.compile_spec(spec, ["input.shape=[3,192,192]", "num_classes=20"])
    assert data["variants"][2]["error"] == caught.value.format()


def test_a_variant_above_the_parameter_limit_is_invalid_with_the_compilers_message(family):
    evaluator = Evaluator(family, max_params=1000)
    result = evaluator.evaluate(family.default)
    assert not result.valid and "parameters, above the limit of 1,000 (raise it with --max-params)" in result.error
    assert result.error == Evaluator(family, max_params=1000).compile(family.default).error


def test_peak_activation_size_by_hand(tmp_path):
    text = """\
nasdsl: 1
name: Tiny
input: {shape: [2, 4, 4]}
model:
  conv: {op: conv2d, out: 3, kernel: 1}
  relu: relu
  both: {concat: [identity, {op: conv2d, out: 1, kernel: 1}]}
  flat: flatten
  drop: {op: dropout, p: 0.5}
  fc: {op: linear, out: 5}
"""
    g = nasdsl.compile_spec(_write(tmp_path, text, "tiny.yaml")).graph
    # x 32; conv 48 (x freed after); relu 48 (conv freed); the identity is a view of relu; the branch's conv 16;
    # concat 64 while relu (48) and the branch (16) are still held: 48 + 16 + 64 = 128; flatten is a view
    assert peak_activations(g) == 128
    assert figures(g).peak == 128


# --------------------------------------------------------------------------- the commands


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_space_lists_counts_and_formats(tmp_path, capsys):
    path = str(_write(tmp_path, FAMILY))
    code, out, _ = _run(capsys, "space", path, "--count")
    assert code == 0 and out == "1536\n"
    code, out, _ = _run(capsys, "space", path)
    lines = out.splitlines()
    assert code == 0 and lines[0].startswith("Family: 1,536 variants (res 3 x width 3 x wide 2 x deep 2 x head_p 2")
    assert "1 constraint)" in lines[0]
    assert lines[1].split()[:4] == ["id", "res", "width", "wide"] and "invalid" in out
    assert any(line.startswith("variant ") and ": error: " in line for line in lines)
    code, out, _ = _run(capsys, "space", path, "--format", "json")
    data = json.loads(out)
    assert data["count"] == 1536 == len(data["variants"]) and data["constraints"] == ["wide <= 32 or not deep"]
    first = data["variants"][0]
    assert set(first) == {"id", "choices", "set", "valid", "error", "params", "macs", "depth", "peak",
                          "params_train", "macs_train"}  # fmt: skip
    assert first["set"][0] == "res=32" and first["choices"]["wide"] == "width"
    code, out, _ = _run(capsys, "space", path, "--format", "csv", "--valid-only")
    rows = out.splitlines()
    assert rows[0].startswith("id,res,width,wide,deep,head_p,k,") and rows[0].endswith(",error")
    assert all(",true," in r for r in rows[1:]) and len(rows) - 1 == sum(v["valid"] for v in data["variants"])
    code, out, _ = _run(capsys, "space", path, "--format", "markdown", "--limit", "3")
    assert out.startswith("**Family: 1,536 variants") and out.count("\n| ") == 4
    code, out, _ = _run(capsys, "space", path, "--format", "ids", "--limit", "4")
    assert out.split() == [str(v["id"]) for v in data["variants"][:4]]


def test_budgets_pareto_and_sort(tmp_path, capsys):
    path = str(_write(tmp_path, FAMILY))
    first = ["--limit", "400", "--format", "json"]  # the first 400 variants: enough of both kinds
    _, out, _ = _run(capsys, "space", path, *first)
    valid = [v for v in json.loads(out)["variants"] if v["valid"]]
    budget = sorted(v["macs"] for v in valid)[len(valid) // 2]
    _, out, _ = _run(capsys, "space", path, *first, "--max-macs", str(budget), "--max", "params=3k")
    kept = json.loads(out)["variants"]
    want = [v for v in json.loads(_run(capsys, "space", path, *first)[1])["variants"]
            if not v["valid"] or (v["macs"] <= budget and v["params"] <= 3000)]  # fmt: skip
    assert [v["id"] for v in kept] == [v["id"] for v in want]
    _, out, _ = _run(
        capsys,
        "space",
        path,
        "--limit",
        "400",
        "--format",
        "json",
        "--max-params",
        "2.5k",
        "--min",
        "depth=4",
        "--valid-only",
    )
    kept = json.loads(out)["variants"]
    assert kept and all(v["params"] <= 2500 and v["depth"] >= 4 and v["valid"] for v in kept)
    _, out, _ = _run(capsys, "space", path, *first, "--pareto", "macs,params:max")
    front = json.loads(out)["variants"]
    for v in front:
        assert not any(w["macs"] <= v["macs"] and w["params"] >= v["params"] and (w["macs"], w["params"]) !=
                       (v["macs"], v["params"]) for w in valid)  # fmt: skip
    assert {(v["macs"], v["params"]) for v in front} == {
        (v["macs"], v["params"]) for v in valid
        if not any(w["macs"] <= v["macs"] and w["params"] >= v["params"] and w is not v
                   and (w["macs"], w["params"]) != (v["macs"], v["params"]) for w in valid)
    }  # fmt: skip
    _, out, _ = _run(capsys, "space", path, *first, "--sort", "macs", "--valid-only")
    macs = [v["macs"] for v in json.loads(out)["variants"]]
    assert macs == sorted(macs)


def test_shards_split_the_listing_exactly(tmp_path, capsys):
    path = str(_write(tmp_path, FAMILY))
    for extra in (
        ["--limit", "300"],
        ["--sample", "50", "--seed", "7"],
        ["--valid-only", "--sort", "params", "--limit", "200"],
    ):
        whole = _run(capsys, "space", path, "--format", "ids", *extra)[1].split()
        shards = [_run(capsys, "space", path, "--format", "ids", "--shard", f"{i}/4", *extra)[1].split()
                  for i in range(1, 5)]  # fmt: skip
        seen = [v for s in shards for v in s]
        assert sorted(seen, key=int) == sorted(whole, key=int) and len(set(seen)) == len(seen)
        assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_pick_writes_a_plain_spec_that_round_trips(tmp_path, capsys, family):
    path = str(_write(tmp_path, FAMILY))
    picks = next(p for p in family.variants() if family.id_of(p) > 0 and Evaluator(family).evaluate(p).valid
                 and family.environment(p)["deep"] is False)  # fmt: skip
    variant = family.id_of(picks)
    out = tmp_path / "variant.yaml"
    code, text, _ = _run(capsys, "space", path, "--pick", str(variant), "-o", str(out))
    assert code == 0 and text.startswith(f"wrote {out}") and f"variant {variant}" in text
    written = out.read_text()
    assert written.startswith(f"# variant {variant} of {path}: res=") and "choice" not in written.split("\n", 2)[2]
    assert "constraints" not in written
    reread = nasdsl.compile_spec(out)
    assert figures(reread.graph) == Evaluator(family).evaluate(picks).figures
    assert spaces.find_space(document.load_document(out)[0]).points == ()
    assert document.canonical_json(document.load_document(out)[0]) == document.canonical_json(family.document_of(picks))
    # printed without -o; an error for an id outside the space
    assert _run(capsys, "space", path, "--pick", str(variant))[1] == written
    code, _, err = _run(capsys, "space", path, "--pick", str(family.size))
    assert code == 2 and f"--pick: expected a variant id from 0 to {family.size - 1:,}" in err


def test_pick_refuses_excluded_and_invalid_variants(tmp_path, capsys, family):
    path = str(_write(tmp_path, FAMILY))
    excluded = next(n for n in range(family.size) if family.why_not(family.picks_of(n)) is not None)
    code, _, err = _run(capsys, "space", path, "--pick", str(excluded))
    assert code == 2 and f"variant {excluded} is not in the space:" in err
    evaluator = Evaluator(family)
    invalid = next(p for p in family.variants() if not evaluator.evaluate(p).valid)
    code, _, err = _run(capsys, "space", path, "--pick", str(family.id_of(invalid)))
    assert code == 2 and "does not compile" in err and "expected a kernel no larger than" in err


def test_pick_does_not_write_over_the_spec_it_reads(tmp_path, capsys, family, monkeypatch):
    """-o naming the spec (written another way: a relative path, through a link) is refused before
    anything is written: the variant would replace the space."""
    path = _write(tmp_path, FAMILY)
    before = path.read_bytes()
    (tmp_path / "link.yaml").symlink_to(path)
    monkeypatch.chdir(tmp_path)
    for output in (str(path), path.name, "./" + path.name, "link.yaml"):
        code, _, err = _run(capsys, "space", str(path), "--pick", "0", "-o", output)
        assert code == 2 and f"--output: {output} is read by this command (the spec)" in err
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--shard", "0/4"], "--shard: expected i/n with 1 <= i <= n, got '0/4'"),
        (["--max-macs", "lots"], "--max-macs: expected a number such as 1500000, 1.5e6 or 1.5M, got 'lots'"),
        (["--max", "flops=3"], "--max: expected COLUMN=N with a column of params, macs, depth, peak"),
        (["--pareto", "macs,speed"], "--pareto: expected columns of params, macs"),
        (["-o", "x.yaml"], "-o names the file --pick writes; give --pick K"),
    ],
)
def test_bad_options_exit_2(tmp_path, capsys, argv, message):
    path = str(_write(tmp_path, FAMILY))
    code, out, err = _run_exit(capsys, ["space", path, *argv])
    assert code == 2 and message in err and out == ""


def _run_exit(capsys, argv):
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_a_huge_space_needs_a_sample_or_a_limit(capsys):
    spec = str(SPECS / "googlenet.yaml")
    argv = [
        "sweep",
        spec,
        *(f"--set=inception{m}.c1x1=[64,96,128,160]" for m in ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b")),
    ]
    code, _, err = _run(capsys, *argv)
    assert code == 2 and "the space has 262,144 variants: evaluate --sample N of them or the first --limit N" in err
    code, out, _ = _run(capsys, *argv, "--sample", "20", "--seed", "1", "--format", "json")
    data = json.loads(out)
    assert code == 0 and data["count"] == 4**9 and data["listed"] == 20 and data["recompiled"] == 0


def test_sweep_crosses_its_axes_and_fixes_the_rest(capsys, tmp_path):
    spec = str(SPECS / "googlenet.yaml")
    code, out, _ = _run(
        capsys, "sweep", spec, "--set", "inception4a.c3x3=[160,208]", "--set", "num_classes=[10,1000]",
        "--set", "dropout=0.5", "--set", "maxpool4.kernel=[[2,2],[3,3]]", "--format", "json",
    )  # fmt: skip
    data = json.loads(out)
    assert code == 0 and data["count"] == 8
    assert [p["name"] for p in data["choices"]] == ["num_classes", "inception4a.c3x3", "maxpool4.kernel"]
    by_choice = {}
    for v in data["variants"]:
        c = v["choices"]
        by_choice[(c["inception4a.c3x3"], c["num_classes"], tuple(c["maxpool4.kernel"]))] = v
    want = nasdsl.compile_spec(spec, ["inception4a.c3x3=160", "num_classes=10", "dropout=0.5", "maxpool4.kernel=[3,3]"])
    got = by_choice[(160, 10, (3, 3))]
    totals = want.summary()["totals"]
    assert (got["params"], got["macs"], got["set"]) == (
        totals["params"], totals["macs"], ["num_classes=10", "inception4a.c3x3=160", "maxpool4.kernel=[3,3]"]
    )  # fmt: skip
    # a spec's own choices keep their defaults in a sweep
    path = str(_write(tmp_path, FAMILY))
    code, out, _ = _run(capsys, "sweep", path, "--set", "k=[3,5,7]", "--format", "json")
    data = json.loads(out)
    assert (
        data["count"] == 3
        and [p["name"] for p in data["choices"]] == ["k"]
        and data["constraints"] == ["wide <= 32 or not deep"]
    )


NO_TORCH = """
import sys
from nasdsl.cli import main
for argv in ARGV:
    code = main(argv)
    assert code == 0, (argv, code)
loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
assert not loaded, loaded[:5]
"""


def test_space_sweep_and_diff_never_import_torch(tmp_path):
    path = str(_write(tmp_path, FAMILY))
    argv = [
        ["space", path, "--format", "json", "--limit", "20"],
        ["space", path, "--pick", "1", "-o", str(tmp_path / "v.yaml")],
        ["sweep", str(SPECS / "googlenet.yaml"), "--set", "inception4a.c3x3=[160,208]"],
        ["diff", str(SPECS / "googlenet.yaml"), str(SPECS / "googlenet_bn.yaml"), "--format", "json"],
    ]
    script = NO_TORCH.replace("ARGV", repr(argv))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_commands_say_what_they_do(capsys):
    for command in ("space", "sweep", "diff", "transfer"):
        code, out, _ = _run_exit(capsys, [command, "--help"])
        assert code == 0 and f"examples:\n  nasdsl {command}" in out and "limits:" in out, command


# --------------------------------------------------------------------------- the guide


def _fenced(text: str) -> list[tuple[str, str]]:
    """The fenced blocks of a Markdown text, in order: (info string, body)."""
    return [(m[1].strip(), m[2]) for m in re.finditer(r"```([^\n]*)\n(.*?)```", text, flags=re.S)]


def _out(capsys, argv: list[str]) -> str:
    code = main(argv)
    out = capsys.readouterr().out
    assert code == 0, (argv, out)
    return out


def _guide_parts() -> list[str]:
    """docs/design-space.md cut where its sections stop sharing files: the guide around GoogLeNet's
    space (sections 1 to 8, whose commands read what the earlier ones wrote), then each later
    section on its own (the benchmark spaces, the reference)."""
    from paths import ROOT

    text = (ROOT / "docs" / "design-space.md").read_text()
    cuts = [m.start() for m in re.finditer(r"^## (?:9|[1-9][0-9])\.|^## Reference", text, flags=re.M)]
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]


@pytest.mark.parametrize("part", range(len(_guide_parts())))
def test_the_design_space_guide_runs(part, tmp_path, monkeypatch, capsys):
    """Every command of docs/design-space.md runs, in order, in a copy of the layout it assumes
    (its spec file at the repository root, next to specs/), and the job script's nasdsl lines
    split the selected variants into shards that hold each exactly once. The guide is run in
    parts that share no files, each in its own folder."""
    from paths import ROOT

    whole = _fenced((ROOT / "docs" / "design-space.md").read_text())
    blocks = _fenced(_guide_parts()[part])
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "googlenet.yaml").write_text((SPECS / "googlenet.yaml").read_text())
    (tmp_path / "specs" / "spaces").mkdir()
    for space in ("nas_bench_201.yaml", "ofa_mobilenet_v3.yaml", "darts.yaml"):
        (tmp_path / "specs" / "spaces" / space).write_text((SPECS / "spaces" / space).read_text())
    monkeypatch.chdir(tmp_path)
    ran = shown = 0
    last = None  # what the last command printed: a text block right after its block shows lines of it
    for info, body in whole:  # the space the guide writes in its first section, for every part
        if info == "yaml title=googlenet_space.yaml":
            Path("googlenet_space.yaml").write_text(body)
    for info, body in blocks:
        if info == "yaml title=googlenet_space.yaml":
            continue
        elif info == "python":
            exec(compile(body, "docs/design-space.md", "exec"), {})  # the project's own guide
            ran += 1
        elif info == "sh":
            for line in body.splitlines():
                line = line.split("  #", 1)[0].strip()
                if line.startswith("nasdsl "):
                    last = _out(capsys, shlex.split(line)[1:])
                    ran += 1
            continue
        elif info == "text" and last is not None:
            printed = last.splitlines()
            for line in body.splitlines():
                assert not line.strip() or line in printed, f"the guide shows a line nasdsl does not print:\n{line}"
                shown += 1
        last = None
    if part > 0:  # a benchmark space's section, or the reference: its commands ran
        assert ran >= 1 or not any(info in ("sh", "python") for info, _ in blocks)
        return
    assert ran >= 12 and shown >= 12
    assert Path("variant.yaml").exists() and Path("variant.safetensors").exists()
    (script,) = [body for info, body in blocks if info == "bash title=train_shard.sh"]
    (select,) = [line for line in script.splitlines() if "--shard" in line]
    argv = shlex.split(select[select.index("$(nasdsl ") + 2 : select.rindex(")")])[1:]
    whole = _out(capsys, [a for a in argv if a not in ("--shard", "$shard")]).split()
    seen = []
    for task in range(2):
        seen += _out(capsys, [f"{task + 1}/2" if a == "$shard" else a for a in argv]).split()
    assert sorted(seen, key=int) == sorted(whole, key=int) and len(set(seen)) == len(seen) and whole
    (pick,) = [line.strip() for line in script.splitlines() if "--pick" in line]
    _out(capsys, [a.replace("$id", whole[-1]) for a in shlex.split(pick)[1:]])
    assert nasdsl.compile_spec(f"runs/{whole[-1]}/spec.yaml").summary()["totals"]["macs"] <= 1e9


# --------------------------------------------------------------------------- --pick writes what it picked

#: a choice of every kind, one option an expression holding a newline; the file's name is the issue's,
#: a newline and a YAML section in it (the header comment wrote it out raw: the picked spec had that section)
KINDS = """\
nasdsl: 1
name: Kinds
input:
  shape: [3, {choice: [16, 12]}, 16]
  mean: [0.5, 0.5, {choice: [0.5, 0.25]}]
variables:
  width: {range: [4, 8, 4]}
  grow: &grow {choice: ["width", "width\\n+ 4"]}
  deep: {choice: [true, false]}
  p: {choice: [0.5, 0.25], when: deep}
  k: {choice: [3, 1], default: 1}
constraints:
  - "width >= 4"
templates:
  Block:
    params: [out, {kernel: {choice: [3, 1]}}]
    body:
      conv: {op: conv2d, out: out, kernel: kernel, padding: "(kernel - 1) // 2"}
model:
  a: {use: Block, args: [grow]}
  b: {use: Block, args: [*grow, k]}
  c: {op: conv2d, out: 8, kernel: [{choice: [1, 3]}, 1], padding: [{choice: [0, 1]}, 0]}
  pool: {op: max_pool, kernel: {choice: [[2, 2], [2, 1]]}}
  gap: global_avg_pool
  flat: flatten
  drop: {op: dropout, p: p, when: deep}
  fc: {op: linear, out: 10}
outputs:
  logits: {from: fc}
  aux:
    from: a
    head: [global_avg_pool, flatten, {op: linear, out: 10}]
    training_only: true
    loss_weight: {choice: [0.3, 0.1]}
"""
HOSTILE_NAME = "kinds\ninit: {conv2d: {weight: zeros}}\n#.yaml"


def _facts(g) -> tuple:
    """What a compiled graph computes, read from the IR alone: every node's op, attributes, shape
    and inputs in order, the outputs, the initialisation rules."""
    from nasdsl import ir

    nodes = tuple((n, ir.node(g, n).op, repr(ir.node(g, n).attrs), ir.node(g, n).shape, tuple(ir.inputs(g, n)))
                  for n in ir.order(g))  # fmt: skip
    outputs = tuple((o.name, o.node, o.loss_weight, o.training_only) for o in ir.info(g).outputs)
    return nodes, outputs, repr(ir.info(g).init)


def test_every_pick_rereads_to_the_graph_it_picked(tmp_path, capsys):
    """For each option of each kind of choice (numbers, booleans, expressions, one with a newline,
    a range, pairs, a default, a condition, a tie, input shape and statistics, a parameter default,
    an attribute's item, a loss weight), a variant taking it is written by --pick (under a file
    name holding a newline and YAML) and read back: the same graph as the variant's own document."""
    path = _write(tmp_path, KINDS, name=HOSTILE_NAME)
    space = _space(path)
    evaluator = Evaluator(space)
    wanted = {(i, k) for i, p in enumerate(space.points) for k in range(len(p.options))}
    chosen = []
    for picks in space.variants():
        new = {(i, k) for i, k in enumerate(picks)} & wanted
        if new and evaluator.evaluate(picks).valid:
            chosen.append(picks)
            wanted -= new
    assert not wanted, f"no valid variant takes {sorted(wanted)}"
    assert {p.kind for p in space.points} == {"choice", "range"} and len(space.points) >= 12
    for picks in chosen:
        out = tmp_path / f"v{space.id_of(picks)}.yaml"
        code, said, err = _run(capsys, "space", str(path), "--pick", str(space.id_of(picks)), "-o", str(out))
        assert code == 0, err
        header = out.read_text().split("\n")[:2]
        assert header[0].startswith("# variant ") and "\\n" in header[0] and header[1].startswith("# written by")
        assert "\n" not in said.rstrip("\n") and "\x1b" not in said
        reread = nasdsl.compile_spec(out)
        assert _facts(reread.graph) == _facts(_full(space, picks).graph), picks
        assert reread.graph.graph.get("init") in ({}, None)


TYPO_IN_AN_OPTION = """\
nasdsl: 1
name: T
input: {shape: [3, 16, 16]}
model:
  conv:
    choice:
      plain: {op: conv2d, out: 8, kernel: 3}
      strided: {op: conv2d, out: 8, kernel: 3, strde: 2}
      act: [{op: conv2d, out: 8, kernel: 3}, {op: relux}]
      wide: {op: conv2d, out: 8, kernl: 3}
  gap: global_avg_pool
  flat: flatten
  fc: {op: linear, out: 2}
"""


def test_a_typo_in_an_option_the_default_leaves_out_is_the_specs_error(tmp_path, capsys):
    """Every option of a choice between blocks is parsed, not only the default's: a typo in one
    is an error of the spec (each located where it is written), for check, compile_spec and
    load_space alike, not a variant listed as invalid."""
    path = tmp_path / "typo.yaml"
    path.write_text(TYPO_IN_AN_OPTION)
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"{path}:8:48: error: model.conv.strde: unknown key 'strde' in op conv2d (did you mean 'stride'?); "
        "allowed: out, kernel, stride, padding, dilation, groups, bias, phase, when, doc, from, init",
        f"{path}:9:51: error: model.conv[1].op: unknown op 'relux' (did you mean 'relu'?)",
        f"{path}:10:34: error: model.conv.kernl: unknown key 'kernl' in op conv2d (did you mean 'kernel'?); "
        "allowed: out, kernel, stride, padding, dilation, groups, bias, phase, when, doc, from, init",
    ]
    for load in (nasdsl.compile_spec, spaces.load_space):
        with pytest.raises(NasdslError, match="unknown key 'strde'"):
            load(path)
    fixed = tmp_path / "fixed.yaml"
    fixed.write_text(TYPO_IN_AN_OPTION.replace("strde", "stride").replace("relux", "relu").replace("kernl", "kernel"))
    assert main(["space", str(fixed), "--valid-only", "--format", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["variants"]) == 4
