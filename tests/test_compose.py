"""Variants that choose other blocks, composed from pieces compiled once (nasdsl/compose.py): their
figures, errors and hashes equal those of each variant's plain document compiled in full, for
sampled NAS-Bench-201 cells and every variant of a small space where the zero rule, shapes that
change, errors and value choices meet."""

from __future__ import annotations

import random

import pytest

import nasdsl
from nasdsl import document
from nasdsl import space as spaces
from nasdsl.errors import NasdslError
from nasdsl.unique import graph_hash
from nasdsl.variants import Evaluator, figures

from paths import SPECS

NB201 = str(SPECS / "spaces" / "nas_bench_201.yaml")


def _full(space: spaces.Space, picks: tuple[int, ...]):
    """(figures, error text, hash) of the variant's plain document compiled in full."""
    doc = space.document_of(picks)
    try:
        g = nasdsl.compile_spec(nasdsl.spec.parse_spec(doc, space.file, document.spec_hash(doc), space.files)).graph
    except NasdslError as e:
        return None, e.format(), None
    return figures(g), "", graph_hash(g)


def _compare(space: spaces.Space, evaluator: Evaluator, picks: tuple[int, ...]) -> bool:
    """Whether the fast result equals the full compile's; returns whether the variant is valid."""
    fast = evaluator.evaluate(picks)
    want_figures, want_error, want_hash = _full(space, picks)
    assert (fast.figures, fast.error) == (want_figures, want_error), space.choices(picks)
    assert evaluator.hash(picks) == want_hash, space.choices(picks)
    return fast.valid


def test_nas_bench_201_cells_composed_equal_full_compiles():
    # one cell a stage (the same pieces and skeleton as five, compiled in a third of the time)
    doc, files = document.load_document(NB201)
    space = spaces.find_space(spaces.apply_overrides(doc, ["N=1"]), files[0], files)
    evaluator = Evaluator(space)
    evaluator.hashes = True
    rng = random.Random(0)
    picks = {space.picks_of(rng.randrange(space.size)) for _ in range(240)}
    # cells that compute nothing (node 3 cut off from the input), node 1 cut off, each op everywhere
    picks |= {(0, k, 0, 0, k, 0) for k in range(5)} | {(0, 0, 3, 0, 4, 4), (0, 0, 0, 0, 0, 1)}
    picks |= {(k,) * 6 for k in range(5)}
    valid = [_compare(space, evaluator, p) for p in sorted(picks)]
    assert 0 < valid.count(False) < len(valid)  # invalid cells among them, with the compiler's error
    assert list(evaluator.composers.values())[0] is not None  # composed, not compiled one by one
    assert evaluator.recompiled == 1 + 6 * 3  # the skeleton and one probe per other non-zero option


@pytest.fixture(scope="module")
def nb201() -> tuple[spaces.Space, Evaluator]:
    """NAS-Bench-201 as shipped (five cells a stage) and one evaluator of it, shared."""
    space = spaces.load_space(NB201)
    return space, Evaluator(space)


def test_nas_bench_201_composed_at_five_cells_a_stage(nb201):
    space, evaluator = nb201
    rng = random.Random(1)
    for _ in range(6):
        _compare(space, evaluator, space.picks_of(rng.randrange(space.size)))
    assert evaluator.recompiled == 19


#: a choice whose option changes the shape (stride 2: the add's shapes differ unless the other term is
#: none), a zero reaching a concat inside an option (the compiler's error), outputs that are a zero,
#: and a value choice (one composer per width)
TOY = """\
nasdsl: 1
name: Toy
input:
  shape: [4, 8, 8]
variables:
  w: {choice: [4, 8]}
templates:
  conv:
    params: [{C: 4}, {s: 1}]
    body: [relu, {op: conv2d, out: C, kernel: 3, padding: 1, stride: s, bias: false}, batch_norm]
model:
  a:
    choice:
      conv: {use: conv, args: [w]}
      pool: {op: max_pool, kernel: 3, stride: 1, padding: 1}
      skip: identity
      none: zero
  b:
    add:
      x: {choice: {conv: {use: conv, args: [4]}, skip: identity, none: zero}, from: in}
      y:
        choice:
          conv: {use: conv, args: [4]}
          down: {use: conv, args: [4, 2]}
          cat: [{concat: {i: identity, j: identity}}, {op: conv2d, out: 4, kernel: 1}]
          none: zero
  c:
    add:
      p: {choice: {skip: identity, none: zero}}
      q: {op: avg_pool, kernel: 3, stride: 1, padding: 1}
  gap: global_avg_pool
  flat: flatten
  fc: {op: linear, out: 3}
"""


def test_every_variant_of_a_small_space_composed_equals_its_full_compile(tmp_path):
    path = tmp_path / "toy.yaml"
    path.write_text(TOY)
    space = spaces.load_space(str(path))
    assert space.count() == 2 * 4 * 3 * 4 * 2
    evaluator = Evaluator(space)
    evaluator.hashes = True
    errors = set()
    for picks in space.variants():
        if not _compare(space, evaluator, picks):
            errors.add(evaluator.evaluate(picks).error.split(": error: ")[-1])
    assert len(evaluator.composers) == 2 and None not in evaluator.composers.values()
    assert any(e.startswith("model: the output 'out' is a zero (nothing)") for e in errors), errors
    assert any(e.startswith("model.b.y[0].i: branch 'i' of this concat is a zero (nothing)") for e in errors)
    assert any(e.startswith("model.b: expected add inputs of one shape, got 4x8x8, 4x4x4") for e in errors)
    # a parameter limit: the variants above it are the compiler's LimitError, composed or compiled
    limited = Evaluator(space, max_params=400)
    results = [(limited.evaluate(p), limited.compile(p)) for p in list(space.variants())[::5]]
    assert all((a.figures, a.error) == (b.figures, b.error) for a, b in results)
    assert any("above the limit of 400" in a.error for a, _ in results) and any(a.valid for a, _ in results)
    assert None not in limited.composers.values()


def test_a_space_the_composer_cannot_place_is_evaluated_as_before(tmp_path):
    # dropout in the skeleton: the inference graph differs from the graph, so no composer; programs serve
    path = tmp_path / "drop.yaml"
    path.write_text(TOY.replace("  gap: global_avg_pool\n", "  gap: global_avg_pool\n  drop: {op: dropout, p: 0.5}\n"))
    space = spaces.load_space(str(path))
    evaluator = Evaluator(space)
    rng = random.Random(2)
    for _ in range(5):
        _compare(space, evaluator, space.picks_of(rng.randrange(space.size)))
    assert set(evaluator.composers.values()) == {None}


#: input choices (issue 23): a skeleton node that reads one of two values (b), a node that sums an op on
#: each of two values picked of three, strided where it reads the input (`index`: a pool, or a template
#: whose only block a `when` switches off elsewhere: no nodes, the value passed on), a zero option, a
#: concat a zero reaches (the compiler's error), shapes that do not fit, and a value choice
WIRED = """\
nasdsl: 1
name: Wired
input: {shape: [4, 8, 8]}
variables:
  w: {choice: [3, 5]}
templates:
  down:
    params: [halve]
    body:
      reduce: {op: conv2d, out: 4, kernel: 1, stride: 2, when: halve}
model:
  a: {op: conv2d, out: 4, kernel: 1}
  b: {op: conv2d, out: 4, kernel: 3, padding: 1, from: {choice: [in, a], name: b_in}}
  n:
    from: {choice: [in, a, b], pick: 2, name: n_in}
    index: {j: [in, a, b]}
    add:
      - name: op0
        choice:
          none: zero
          pool: {op: max_pool, kernel: 3, stride: "2 if j < 1 else 1", padding: 1}
          skip: {use: down, args: ["j < 1"]}
      - {name: op1, choice: {none: zero, conv: {op: conv2d, out: 4, kernel: 3, padding: 1}, skip: identity}}
  m: {op: max_pool, kernel: 1, stride: 1}
  out: {concat: [{ref: n}, {ref: m}]}
  gap: global_avg_pool
  flat: flatten
  fc: {op: linear, out: w}
"""


def test_every_variant_of_a_space_with_input_choices_composed_equals_its_full_compile(tmp_path):
    from nasdsl.compose import _ByInput, _Pass

    path = tmp_path / "wired.yaml"
    path.write_text(WIRED)
    space = spaces.load_space(str(path))
    evaluator = Evaluator(space)
    evaluator.hashes = True
    variants = list(space.variants())
    assert len(variants) == 2 * 2 * 3 * 3 * 3
    valid = [_compare(space, evaluator, picks) for picks in variants]
    assert evaluator.recompiled < len(variants) / 2  # composed, not compiled one by one
    errors = {
        evaluator.evaluate(p).error.split(": error: ")[-1] for p, ok in zip(variants, valid, strict=True) if not ok
    }
    assert 0 < valid.count(False) < len(valid)
    assert (
        "model.out[0]: branch '0' of this concat is a zero (nothing): only an add leaves a zero out (of its sum)"
        in errors
    )
    assert any(e.startswith("model.n: expected add inputs of one shape, got 4x4x4, 4x8x8") for e in errors)
    composers = list(evaluator.composers.values())
    assert len(composers) == 2 and None not in composers
    # composed: b's wiring and the pieces the input choice decides, a piece that passes its value on
    composer = composers[0]
    assert [kind for kind, _ in composer.skeleton].count("wired") == 1
    pieces = [p for row in composer.pieces for cell in row if isinstance(cell, _ByInput) for p in cell.options]
    assert any(isinstance(p, _Pass) for p in pieces) and any(isinstance(p, tuple) for p in pieces)


#: a zero reaching an input of a template of several inputs: the builder refuses it (it does not pass a
#: zero on there, as an op reading one does), so every such variant is the compiler's error
ZERO_INTO_TEMPLATE = """\
nasdsl: 1
name: ZeroIn
input: {shape: [4, 8, 8]}
variables:
  w: {choice: [3, 5]}
templates:
  Pair:
    inputs: [s0, s1]
    body:
      p0: {op: conv2d, out: 4, kernel: 1, from: s0}
      p1: {op: conv2d, out: 4, kernel: 1, from: s1}
      s: {add: [{ref: p0}, {ref: p1}]}
model:
  a: {choice: {conv: {op: conv2d, out: 4, kernel: 3, padding: 1}, skip: identity, none: zero}}
  b: {choice: {conv: {op: conv2d, out: 4, kernel: 1}, none: zero}, from: in}
  c: {use: Pair, from: [a, b]}
  gap: global_avg_pool
  flat: flatten
  fc: {op: linear, out: w}
"""


def test_a_zero_reaching_a_template_input_is_the_compilers_error(tmp_path):
    path = tmp_path / "zero_in.yaml"
    path.write_text(ZERO_INTO_TEMPLATE)
    space = spaces.load_space(str(path))
    evaluator = Evaluator(space)
    evaluator.hashes = True
    valid = [_compare(space, evaluator, picks) for picks in space.variants()]
    assert valid.count(True) == 4  # a and b both something, at either width
    assert None not in evaluator.composers.values()  # the valid ones composed
    error = evaluator.evaluate(space.picks_of(1)).error
    assert "model.c.from: input 's1' of template Pair is a zero (nothing)" in error


def test_darts_sampled_cells_composed_equal_full_compiles():
    # the DARTS space at a small size: every cell kind, the reduction cell's strided edges where an op
    # reads a cell input (FactorizedReduce for skip_connect), cells a none pair makes invalid
    doc, files = document.load_document(SPECS / "spaces" / "darts.yaml")
    small = ["C=8", "layers=8", "model.stage1.repeat=1", "input.shape=[3, 16, 16]"]  # seven cells
    space = spaces.find_space(spaces.apply_overrides(doc, small), files[0], files)
    evaluator = Evaluator(space)
    evaluator.hashes = True
    names = [p.name for p in space.points]
    picks = set(space.sample(48, 5))
    for first, second in (("normal_n1_op0", "normal_n1_op1"), ("reduce_n3_op0", "reduce_n3_op1")):
        for base in sorted(picks)[:3]:  # a node whose two ops are none: the cell's concat reads a zero
            chosen = list(base)
            chosen[names.index(first)] = chosen[names.index(second)] = 0
            picks.add(tuple(chosen))
    valid = [_compare(space, evaluator, p) for p in sorted(picks)]
    assert 0 < valid.count(False) < len(valid)
    assert None not in evaluator.composers.values()
    assert evaluator.recompiled < 80  # the composer's compiles and one per error met first


# --------------------------------------------------------------------------- NAS-Bench-201's own rule

#: the benchmark's cells by their edges (edge_0_1, edge_0_2, edge_1_2, edge_0_3, edge_1_3, edge_2_3)
NB201_EDGES = ("edge_0_1", "edge_0_2", "edge_1_2", "edge_0_3", "edge_1_3", "edge_2_3")
OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")


def _picks(*ops: str) -> tuple[int, ...]:
    return tuple(OPS.index(op) for op in ops)


def test_the_benchmark_rule_gives_the_published_6466_unique_cells(nb201):
    from nasdsl.unique import BenchmarkRule

    space, evaluator = nb201
    rule = BenchmarkRule(space)
    # NAS-Bench-201 (Dong & Yang, ICLR 2020) and its API: 15,625 cells, 6,466 unique
    assert len({rule.key(p) for p in space.variants()}) == 6466
    # facts of its to_unique_str(consider_zero=True): a sum's terms in any order and skips are one cell
    same = [
        (_picks("nor_conv_3x3", "none", "none", "nor_conv_1x1", "skip_connect", "none"),
         _picks("nor_conv_1x1", "none", "none", "nor_conv_3x3", "skip_connect", "none")),
        # an edge from node 1 when node 1 is a single none edge is a zero
        (_picks("none", "avg_pool_3x3", "nor_conv_3x3", "skip_connect", "nor_conv_1x1", "none"),
         _picks("none", "avg_pool_3x3", "avg_pool_3x3", "skip_connect", "none", "none")),
    ]  # fmt: skip
    for a, b in same:
        assert rule.key(a) == rule.key(b), (rule.key(a), rule.key(b))
    # a node whose edges are all none (node 2 here) is "#+#", not recognised as a zero: the cells differ
    # for the benchmark, though the conv on edge 2 -> 3 reads nothing and both compute conv3x3(x)
    # for the benchmark, though the conv on edge 2 -> 3 reads nothing and both compute conv3x3(x); and a
    # sum reached through skips is one term, its string, not its terms: conv1x1(x) + conv3x3(x) twice, and
    # conv3x3(x) by skips through node 2 or straight from node 1
    differ = [
        (_picks("nor_conv_3x3", "none", "skip_connect", "none", "none", "skip_connect"),
         _picks("nor_conv_3x3", "none", "none", "none", "skip_connect", "none")),
        (_picks("skip_connect", "none", "none", "nor_conv_3x3", "none", "nor_conv_1x1"),
         _picks("skip_connect", "none", "none", "nor_conv_3x3", "none", "none")),
        (_picks("nor_conv_1x1", "nor_conv_3x3", "none", "none", "skip_connect", "skip_connect"),
         _picks("nor_conv_3x3", "nor_conv_1x1", "none", "none", "skip_connect", "skip_connect")),
    ]  # fmt: skip
    for a, b in differ:
        assert rule.key(a) != rule.key(b)
        assert evaluator.hash(a) == evaluator.hash(b)  # nasdsl's strict rule: one architecture


def test_unique_benchmark_on_the_command_line_and_where_it_cannot_apply(tmp_path, capsys):
    from nasdsl.cli import main

    code = main(["space", NB201, "--unique=benchmark", "--limit", "40", "--format", "json"])
    rows = __import__("json").loads(capsys.readouterr().out)["variants"]
    assert code == 0 and len(rows) == len({r["hash"] for r in rows}) < 40
    assert any(not r["valid"] for r in rows)  # cells that compute nothing are cells of the benchmark
    path = tmp_path / "toy.yaml"
    path.write_text(TOY)
    code = main(["space", str(path), "--count", "--unique=benchmark"])
    err = capsys.readouterr().err
    assert code == 2
    assert "--unique=benchmark: expected every choice between blocks in the body of one template (the cell)" in err
    with pytest.raises(SystemExit):
        main(["space", str(path), "--unique=loose"])
    assert "--unique: expected one of strict, benchmark, got 'loose'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stopped:  # the spec after a bare --unique is read as the rule: said so
        main(["space", "--unique", str(path)])
    assert stopped.value.code == 2
    assert "(a file? write the spec before --unique, or --unique=strict)" in capsys.readouterr().err


# --------------------------------------------------------------------------- diff


def test_diff_says_when_two_cells_are_one_architecture(capsys):
    from nasdsl.cli import main

    def sets(option: str, ops: tuple[int, ...]) -> list[str]:
        return [f"{option}={e}={OPS[k]}" for e, k in zip(NB201_EDGES, ops, strict=True)]

    a = _picks("nor_conv_1x1", "nor_conv_3x3", "none", "none", "skip_connect", "skip_connect")
    b = _picks("nor_conv_3x3", "nor_conv_1x1", "none", "none", "skip_connect", "skip_connect")
    code = main(["diff", NB201, "--set=N=1", *sets("--set", a), "--other-set=N=1", *sets("--other-set", b)])
    out = capsys.readouterr().out
    assert code == 0
    assert "same architecture (hash " in out
    assert "; 3 entries with the same layers, named or wired otherwise, are not listed" in out
    assert "~ stage" not in out  # no spurious changes
    c = _picks("nor_conv_1x1", "avg_pool_3x3", "none", "none", "skip_connect", "skip_connect")
    code = main(["diff", NB201, "--set=N=1", *sets("--set", a), "--other-set=N=1", *sets("--other-set", c),
                 "--format", "json"])  # fmt: skip
    data = __import__("json").loads(capsys.readouterr().out)
    assert code == 0 and data["same_architecture"] is False and data["hash"]["a"] != data["hash"]["b"]
    code = main(["diff", NB201, "--set=N=1", *sets("--set", a), "--other-set=N=1", *sets("--other-set", c)])
    out = capsys.readouterr().out
    # the real difference, in each stage's cell: edge 0 -> 2 a pool where it was a 3x3 convolution
    assert "0.node2.from0: avg_pool added" in out and "0.node2.from0.1: conv2d removed" in out
    assert f"architecture hash {data['hash']['a']} -> {data['hash']['b']}" in out
    # one architecture at inference whose layers differ (a dropout's rate): said, and the change listed
    code = main(["diff", str(SPECS / "googlenet.yaml"), "--set", "dropout=0.5", "--other-set", "dropout=0.4"])
    out = capsys.readouterr().out
    assert code == 0 and "same architecture (hash " in out and "not listed" not in out
    assert "~ dropout (dropout): p 0.5 -> 0.4" in out
