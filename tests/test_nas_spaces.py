"""Search spaces as NAS research writes them (issue 23): choices inside `repeat`, honest counts and
samples (`space --count` with filters, `--sample N` that says when it finds fewer, `--sample-by`).

Expected figures are computed here by hand from the layers' formulas, or by compiling each
variant's plain document in full (the slow path the fast evaluator must agree with)."""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from pathlib import Path

import pytest

import nasdsl
from nasdsl import document
from nasdsl import space as spaces
from nasdsl.cli import main
from nasdsl.errors import NasdslError
from nasdsl.summary import summarize
from nasdsl.variants import Evaluator, peak_activations

from paths import SPECS


def _write(tmp_path: Path, text: str, name: str = "space.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _agrees(space: spaces.Space, evaluator: Evaluator, picks: tuple[int, ...]) -> None:
    """The fast figures of a variant equal those of its plain document compiled in full."""
    fast = evaluator.evaluate(picks)
    doc = space.document_of(picks)
    try:
        net = nasdsl.compile_spec(nasdsl.spec.parse_spec(doc, space.file, document.spec_hash(doc), space.files))
    except NasdslError as e:
        assert not fast.valid and fast.error == e.format(), (space.choices(picks), fast, e.format())
        return
    assert fast.valid, (space.choices(picks), fast.error)
    totals = summarize(net.graph)["totals"]
    f = fast.figures
    assert (f.params, f.macs, f.depth) == (totals["params"], totals["macs"], totals["depth"]), space.choices(picks)
    assert f.peak == peak_activations(net.graph)


# --------------------------------------------------------------------------- repeat in a space

#: choices inside a repeated block, a repeat count that is a choice, the repeat's index in an
#: attribute, and a repeat inside a template body whose argument is a choice
REPEATED = """\
nasdsl: 1
name: Repeated
input:
  shape: [3, 16, 16]
variables:
  w: {choice: [8, 16]}
  n: {choice: [1, 2, 3]}
templates:
  Stage:
    params: [out, {k: 3}]
    body:
      repeat: 2
      block:
        - {op: conv2d, out: "out + 4 * i", kernel: k, padding: "(k - 1) // 2", bias: false}
        - batch_norm
        - relu
model:
  stem: {op: conv2d, out: w, kernel: 3, padding: 1}
  stage:
    repeat: n
    block:
      - {op: conv2d, out: w, kernel: {choice: [1, 3]}, padding: 0}
      - relu
  body: {use: Stage, args: [w, {choice: [3, 5]}]}
  gap: global_avg_pool
  flat: flatten
  fc: {op: linear, out: 10}
"""


def _repeated_macs(w: int, n: int, k1: int, k2: int) -> tuple[int, int]:
    """Parameters and multiply-adds of REPEATED by hand (each conv: out * in * k * k per output position)."""
    params = macs = 0
    size = 16
    params += w * 3 * 9 + w  # the stem, with a bias
    macs += w * 3 * 9 * size * size
    for _ in range(n):  # padding 0: a k x k kernel shrinks the map by k - 1
        size -= k1 - 1
        params += w * w * k1 * k1 + w
        macs += w * w * k1 * k1 * size * size
    c = w
    for i in range(2):
        out = w + 4 * i
        params += out * c * k2 * k2 + 2 * out  # the conv (no bias) and the batch norm's scale and shift
        macs += out * c * k2 * k2 * size * size
        c = out
    params += 10 * c + 10
    macs += 10 * c
    return params, macs


def test_choices_inside_repeat_are_found_evaluated_and_agree_with_full_compiles(tmp_path):
    space = spaces.load_space(_write(tmp_path, REPEATED))
    assert [p.name for p in space.points] == ["w", "n", "stage.block.0.kernel", "body.k"]
    assert space.count() == 2 * 3 * 2 * 2
    evaluator = Evaluator(space)
    for picks in space.variants():
        _agrees(space, evaluator, picks)
        c = space.choices(picks)
        r = evaluator.evaluate(picks)
        assert (r.figures.params, r.figures.macs) == _repeated_macs(
            c["w"], c["n"], c["stage.block.0.kernel"], c["body.k"]
        )
    assert evaluator.recompiled == 2  # one full compile per other repeat count, then its program is reused


def test_repeat_works_in_space_sweep_and_pick(tmp_path, capsys):
    path = _write(tmp_path, REPEATED)
    code, out, _ = _run(capsys, "space", path, "--format", "json")
    data = json.loads(out)
    assert code == 0 and data["count"] == 24 and all(v["valid"] for v in data["variants"])
    code, out, _ = _run(capsys, "sweep", path, "--set", "w=[4,12]", "--set", "n=[1,2]", "--format", "json")
    data = json.loads(out)
    assert code == 0 and data["count"] == 4
    assert [(v["params"], v["macs"]) for v in data["variants"]] == [
        _repeated_macs(w, n, 1, 3) for w in (4, 12) for n in (1, 2)
    ]
    # variant 23: w 16, n 3, kernel 3, the template's kernel 5
    code, out, _ = _run(capsys, "space", path, "--pick", "23", "-o", str(tmp_path / "v.yaml"))
    assert code == 0
    net = nasdsl.compile_spec(tmp_path / "v.yaml")
    totals = summarize(net.graph)["totals"]
    assert (totals["params"], totals["macs"]) == _repeated_macs(16, 3, 3, 5)
    assert "  n: 3\n" in (tmp_path / "v.yaml").read_text()


# --------------------------------------------------------------------------- honest counts and samples

#: 3 widths x 3 kernels x 2 depths, one constraint: 16 variants, their MACs known by hand
CONVS = """\
nasdsl: 1
name: Convs
input:
  shape: [3, 8, 8]
variables:
  w: {choice: [4, 8, 16]}
  k: {choice: [1, 3, 5]}
  deep: {choice: [false, true]}
constraints:
  - "w < 16 or k < 5"
model:
  conv1: {op: conv2d, out: w, kernel: k, padding: "(k - 1) // 2", bias: false}
  conv2: {op: conv2d, out: w, kernel: k, padding: "(k - 1) // 2", bias: false, when: deep}
  gap: global_avg_pool
"""


def _convs_macs(w: int, k: int, deep: bool) -> int:
    return 64 * (w * 3 * k * k + (w * w * k * k if deep else 0))


def _convs(budget: float) -> list[tuple[int, int, bool]]:
    return [
        (w, k, d)
        for w in (4, 8, 16)
        for k in (1, 3, 5)
        for d in (False, True)
        if (w < 16 or k < 5) and _convs_macs(w, k, d) <= budget
    ]


def test_count_applies_budgets_and_constraints(tmp_path, capsys):
    path = _write(tmp_path, CONVS)
    assert _run(capsys, "space", path, "--count")[1] == "16\n"
    for budget in (5_000, 20_000, 100_000):
        code, out, _ = _run(capsys, "space", path, "--count", "--max-macs", str(budget))
        assert code == 0 and int(out) == len(_convs(budget)), budget
    assert 0 < len(_convs(20_000)) < 16  # the budget leaves some out
    code, out, _ = _run(capsys, "space", path, "--count", "--max-macs", "20000", "--shard", "1/3")
    assert int(out) == len(_convs(20_000)[::3])
    code, _, err = _run(capsys, "space", path, "--count", "--sample", "3")
    assert code == 2 and "--count counts the whole space exactly; it does not take --sample" in err


def test_count_estimates_what_it_cannot_count_exactly(capsys):
    # each module's width feeds the next module: the costs do not add up by module, and 4^9 variants
    # are too many to list, so the count under a budget is an estimate, and says so
    modules = ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b")
    argv = ["sweep", str(SPECS / "googlenet.yaml"), *(f"--set=inception{m}.c1x1=[64,96,128,160]" for m in modules)]
    assert _run(capsys, *argv, "--count") == (0, f"{4**9}\n", "")
    code, out, err = _run(capsys, *argv, "--count", "--max-macs", "1.5G", "--sample", "100")
    assert code == 0 and out.startswith("estimate: about ") and "of 100 variants drawn uniformly passed" in out
    assert "an estimate, not an exact count (inception3a.c1x1 is not a variable of its own)" in err
    code, out, err = _run(capsys, *argv, "--count", "--max-macs", "1G", "--pareto", "macs,params:max")
    assert code == 2 and out == ""
    assert "cannot count the variants that pass --max-macs 1e+09, --pareto: --pareto compares every variant" in err


def test_sample_returns_n_that_pass_the_filters_or_says_why(tmp_path, capsys):
    path = _write(tmp_path, CONVS)
    cheap = _convs(20_000)
    code, out, err = _run(capsys, "space", path, "--sample", "4", "--max-macs", "20000", "--format", "json")
    data = json.loads(out)
    assert code == 0 and data["listed"] == 4 and data["shortfall"] is None and err == ""
    assert all(v["macs"] <= 20_000 for v in data["variants"])
    assert len({v["id"] for v in data["variants"]}) == 4
    # more than pass: every one that passes, and why no more
    code, out, err = _run(capsys, "space", path, "--sample", "15", "--max-macs", "20000", "--format", "json")
    data = json.loads(out)
    assert code == 0 and data["listed"] == len(cheap)
    why = f"--sample 15: found {len(cheap)} of 15 variants that pass --max-macs 20000: the space has 16 variants"
    assert data["shortfall"].startswith(why) and why in err
    # more than the space holds
    code, out, err = _run(capsys, "space", path, "--sample", "20", "--format", "ids")
    assert len(out.split()) == 16
    assert "--sample 20: found 16 of 20 variants: the space has 16 variants, and all were drawn" in err


def test_sample_gives_up_after_a_bounded_number_of_draws(tmp_path, capsys):
    # 1,000 variants of which one passes the budget: 5 asked, at most 10 x 5 + 100 drawn
    text = CONVS.replace("w: {choice: [4, 8, 16]}", "w: {range: [4, 999, 1]}").replace("constraints:\n", "")
    text = text.replace('  - "w < 16 or k < 5"\n', "")
    path = _write(tmp_path, text)
    code, out, err = _run(capsys, "space", path, "--sample", "5", "--max-macs", "800", "--format", "ids")
    assert code == 0
    assert "--sample 5: found" in err and "stopped after 150 draws (at most 10 N + 100)" in err
    assert all(int(i) in (0, 1) for i in out.split())  # only w 4, k 1 passes (768 MACs), deep or not


#: a variant whose other choices are off is one variant; by choice it comes up half the time
DEPTHS = """\
nasdsl: 1
name: Depths
input:
  shape: [3, 8, 8]
variables:
  d: {choice: [1, 2]}
  k2: {choice: [1, 3, 5], when: "d == 2"}
model:
  conv1: {op: conv2d, out: 4, kernel: 1}
  conv2: {op: conv2d, out: 4, kernel: k2, padding: "(k2 - 1) // 2", when: "d == 2"}
"""


def test_sample_by_variant_or_by_choice(tmp_path, capsys):
    space = spaces.load_space(_write(tmp_path, DEPTHS))
    assert space.count() == 4
    for by, share in (("variant", 1 / 4), ("choice", 1 / 2)):
        rng = random.Random(0)
        draws = Counter(space.choices(space.draw(rng, by))["d"] for _ in range(4000))
        assert abs(draws[1] / 4000 - share) < 0.03, (by, draws)
    path = _write(tmp_path, DEPTHS)
    argv = ["space", path, "--sample", "2", "--sample-by", "choice", "--seed", "3", "--format", "ids"]
    code, out, _ = _run(capsys, *argv)
    assert code == 0 and len(set(out.split())) == 2
    with pytest.raises(SystemExit) as exit_:
        main(["space", path, "--sample", "2", "--sample-by", "uniform"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "--sample-by: expected one of variant, choice, got 'uniform'" in err


def test_sample_by_choice_respects_constraints(tmp_path):
    space = spaces.load_space(_write(tmp_path, CONVS))
    picks = space.sample(16, seed=1, by="choice")
    assert len(picks) == 16 and all(space.why_not(p) is None for p in picks)
    with pytest.raises(ValueError, match="expected a distribution"):
        space.draw(random.Random(0), "uniform")


# --------------------------------------------------------------------------- NAS-Bench-201

NB201 = str(SPECS / "spaces" / "nas_bench_201.yaml")
#: the cell's choices, named by their edges (j -> i) in the benchmark's order
NB201_EDGES = ("edge_0_1", "edge_0_2", "edge_1_2", "edge_0_3", "edge_1_3", "edge_2_3")


def test_the_guide_shows_the_spec_as_it_is():
    guide = (Path(__file__).parent.parent / "docs" / "design-space.md").read_text()
    section = guide[guide.index("## 9. A cell space") : guide.index("## Reference")]
    excerpt = section[section.index("```yaml\n") + 8 : section.index("```\n", section.index("```yaml"))]
    assert excerpt in Path(NB201).read_text()


def test_nas_bench_201_has_15625_cells(capsys):
    space = spaces.load_space(NB201)
    assert [p.name for p in space.points] == list(NB201_EDGES)
    assert all(
        p.options == ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3") for p in space.points
    )
    assert space.independent and space.count() == 15_625  # every pick tuple is a cell: exact by construction
    assert _run(capsys, "space", NB201, "--count") == (0, "15625\n", "")


#: cells with none edges: into nodes 2 and 3 with the four other ops; node 1 nothing (its one edge is
#: none), so that the edges leaving it are left out too, and every op
NB201_CELLS = (
    ("nor_conv_3x3", "none", "skip_connect", "avg_pool_3x3", "none", "nor_conv_1x1"),
    ("none", "skip_connect", "nor_conv_3x3", "avg_pool_3x3", "nor_conv_1x1", "nor_conv_3x3"),
)


def _cell(ops: tuple[str, ...]) -> list[str]:
    return [f"{edge}={op}" for edge, op in zip(NB201_EDGES, ops, strict=True)]


def test_nas_bench_201_parameters_and_multiply_adds_equal_a_hand_written_reference():
    import torch
    from nb201_reference import TinyNetwork, multiply_adds

    for ops in [*NB201_CELLS, ("nor_conv_3x3",) * 6, ("skip_connect", "none", "none", "avg_pool_3x3", "none", "none")]:
        totals = summarize(nasdsl.compile_spec(NB201, _cell(ops)).graph)["totals"]
        reference = TinyNetwork(ops)  # the benchmark's network (N = 5): small enough for the CPU
        macs = multiply_adds(reference, torch.zeros(1, 3, 32, 32))
        assert (totals["params"], totals["macs"]) == (sum(p.numel() for p in reference.parameters()), macs), ops
    # cells without parameters: the skeleton's own, by hand (stem, two reduction blocks, BatchNorm, classifier)
    skeleton = 3 * 16 * 9 + 2 * 16
    skeleton += 16 * 32 * 9 + 2 * 32 + 32 * 32 * 9 + 2 * 32 + 16 * 32
    skeleton += 32 * 64 * 9 + 2 * 64 + 64 * 64 * 9 + 2 * 64 + 32 * 64
    assert totals["params"] == skeleton + 2 * 64 + 64 * 10 + 10 == 73_306  # the paper's smallest, 0.07 M


def test_nas_bench_201_outputs_equal_a_hand_written_reference():
    import torch
    from nb201_reference import TinyNetwork

    ops = NB201_CELLS[1]  # node 1 is nothing: BatchNorm's shift must not leak through the edges from it
    net = nasdsl.compile_spec(NB201, [*_cell(ops), "N=1"])  # one cell a stage: the same classes
    torch.manual_seed(0)
    reference = TinyNetwork(ops, n=1).eval()
    model = nasdsl.build_model(net).eval()
    x = torch.randn(2, 3, 32, 32)
    # the same weights: the two state_dicts list the same tensors in the same order
    ours, theirs = model.state_dict(), reference.state_dict()
    assert [v.shape for v in ours.values()] == [v.shape for v in theirs.values()]
    for v in ours.values():
        if v.dtype.is_floating_point:
            v.copy_(torch.randn_like(v).abs() + 0.5)  # BatchNorm's statistics too: a shift that is no zero
    reference.load_state_dict(dict(zip(theirs, ours.values(), strict=True)))
    with torch.no_grad():
        got, want = model(x), reference(x)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5 * want.abs().max().item())


# --------------------------------------------------------------------------- choices between blocks, zero

#: a cell of three nodes: a choice between blocks in both forms, words as options, `from` on a choice
CELL = """\
nasdsl: 1
name: Cell
input:
  shape: [4, 8, 8]
templates:
  none: {body: zero}
  skip: {body: identity}
  conv3: {params: [{C: 4}], body: [relu, {op: conv2d, out: C, kernel: 3, padding: 1, bias: false}, batch_norm]}
model:
  n1: {choice: [conv3, skip, none]}
  n2:
    add:
      e0: {choice: {conv: [relu, {op: conv2d, out: 4, kernel: 3, padding: 1, bias: false}, batch_norm],
                    skip: identity, none: zero}, from: in}
      e1: {choice: [conv3, skip, none], default: skip}
"""


def _cell_params(n1: str, e0: str, e1: str) -> int | None:
    """Parameters by hand (a conv 4 x 4 x 3 x 3 and its BatchNorm: 152); None where the output is nothing."""
    n1_zero = n1 == "none"
    live_e0 = e0 != "none"
    live_e1 = e1 != "none" and not n1_zero  # an op that reads nothing is nothing
    if not (live_e0 or live_e1):
        return None
    convs = (n1 == "conv3") + (e0 == "conv") + (live_e1 and e1 == "conv3")
    return 152 * convs


def test_a_choice_between_blocks_shows_words_and_every_variant_agrees(tmp_path, capsys):
    path = _write(tmp_path, CELL)
    space = spaces.load_space(path)
    assert [(p.name, p.kind, p.options) for p in space.points] == [
        ("n1", "block", ("conv3", "skip", "none")),
        ("n2.add.e0", "block", ("conv", "skip", "none")),
        ("n2.add.e1", "block", ("conv3", "skip", "none")),
    ]
    assert space.default == (0, 0, 1)
    evaluator = Evaluator(space)
    for picks in space.variants():
        _agrees(space, evaluator, picks)
        c = space.choices(picks)
        r = evaluator.evaluate(picks)
        expected = _cell_params(c["n1"], c["n2.add.e0"], c["n2.add.e1"])
        assert (r.figures.params if r.valid else None) == expected, c
        if not r.valid:
            assert "the output 'out' is a zero (nothing)" in r.error
    code, out, _ = _run(capsys, "space", path, "--format", "csv", "--limit", "2")
    assert out.splitlines()[1].startswith("0,conv3,conv,conv3,true,456,")
    # --set takes a word, in check, summary and a sweep
    code, out, _ = _run(capsys, "summary", path, "--set", "n1=none", "--set", "n2.add.e0=skip")
    assert code == 0 and "total" in out and " 0 " in out.splitlines()[-1]
    code, out, _ = _run(capsys, "sweep", path, "--set", "n1=[skip,none]", "--set", "n2.add.e0=[conv,none]",
                        "--format", "json")  # fmt: skip
    rows = json.loads(out)["variants"]
    assert [tuple(v["choices"].values()) for v in rows] == [(a, b) for a in ("skip", "none") for b in ("conv", "none")]
    assert [v["params"] for v in rows] == [
        _cell_params(a, b, "skip") for a, b in [tuple(v["choices"].values()) for v in rows]
    ]


def test_zero_left_out_generates_the_cell_without_the_edge(tmp_path):
    import torch

    path = _write(tmp_path, CELL)
    space = spaces.load_space(path)
    # n1 is nothing, e0 a conv from the input, e1 a conv of n1: left out; the model is e0's conv alone
    picks = (2, 0, 0)
    doc = space.document_of(picks)
    net = nasdsl.compile_spec(nasdsl.spec.parse_spec(doc, space.file, document.spec_hash(doc), space.files))
    model = nasdsl.build_model(net).eval()
    sd = model.state_dict()
    assert sorted(k for k in sd if k.endswith("weight")) == ["n2.e0.1.weight", "n2.e0.2.weight"]
    reference = torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Conv2d(4, 4, 3, padding=1, bias=False),
                                    torch.nn.BatchNorm2d(4)).eval()  # fmt: skip
    reference.load_state_dict({k.removeprefix("n2.e0."): v for k, v in sd.items()})
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        assert torch.allclose(model(x), reference(x), atol=1e-6)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"n1: {choice: [conv3, skip, none]}": "n1: {choice: [conv3, skip, none], weight: 2}"},
         "n1.weight: unknown key 'weight' in a choice between blocks; allowed: choice, default, name, from, doc"),
        ({"n1: {choice: [conv3, skip, none]}": "n1: {choice: [conv3, skip, conv3]}"},
         "n1.choice: option conv3 is given twice"),
        ({"n1: {choice: [conv3, skip, none]}": "n1: {choice: [conv3, skip, none], default: zero}"},
         "n1.default: expected the default to be one of the options (conv3, skip, none), got 'zero'"),
        ({"n1: {choice: [conv3, skip, none]}": "n1: {choice: [conv3, 3]}"},
         "n1.choice[1]: expected an option that names an op or a template"),
        ({"skip: identity, none: zero}": "skip: {op: avg_pool, kernel: {choice: [1, 3]}}, none: zero}"},
         "n2.e0.choice.skip: expected an option without choices of its own"),
        ({"n1: {choice: [conv3, skip, none]}": "n1: {choice: [conv3, skip, none], name: e1}",
          "default: skip}": "default: skip, name: e1}"},
         "n2.e1.name: two choices are named 'e1' (the other at "),
        ({"n1: {choice: [conv3, skip, none]}": "n1: {choice: [conv3, skip, none], name: 1st}"},
         "n1.name: expected a choice name"),
        ({"    add:\n": "    concat:\n", "default: skip}": "default: none}"},
         "model.n2.e1: branch 'e1' of this concat is a zero (nothing): only an add leaves a zero out"),
        ({"e1: {choice: [conv3, skip, none], default: skip}": "e1: {choice: [conv3, skip, none], from: in}",
          "skip: identity, none: zero}, from: in}": "skip: identity, none: {op: zero, from: n1}}, from: in}"},
         "option 2 of this choice has its own 'from': give it on the choice or on the option, not both"),
    ],
)  # fmt: skip
def test_a_malformed_choice_between_blocks_is_a_located_error(tmp_path, capsys, edit, message):
    text = CELL
    for old, new in edit.items():
        assert old in text
        text = text.replace(old, new)
    code, out, err = _run(capsys, "check", _write(tmp_path, text))
    assert code == 2 and message in err, err
    assert re.search(r"space\.yaml:\d+:\d+: error: ", err), err


#: a choice between blocks inside a repeated block: one choice, the same block in every repetition
REPEATED_CELL = CELL.replace("model:\n", "model:\n  stack:\n    repeat: 2\n    block: {choice: [conv3, skip]}\n")


def test_a_choice_between_blocks_inside_repeat_and_zero_in_both_backends(tmp_path, capsys):
    from nasdsl.backends.pytorch import generate_source
    from nasdsl.backends.verify import verify

    path = _write(tmp_path, REPEATED_CELL)
    space = spaces.load_space(path)
    assert [p.name for p in space.points][0] == "stack.block" and space.count() == 2 * 27
    code, out, _ = _run(capsys, "space", path, "--format", "json", "--limit", "27")
    rows = {v["id"]: v for v in json.loads(out)["variants"]}
    # stack conv3 twice (2 x 152), n1 none, e0 conv (152), e1 conv3 of nothing: left out
    assert rows[18]["choices"] == {"stack.block": "conv3", "n1": "none", "n2.add.e0": "conv", "n2.add.e1": "conv3"}
    assert rows[18]["params"] == 3 * 152
    code, out, _ = _run(capsys, "space", path, "--pick", "18", "-o", str(tmp_path / "v.yaml"))
    assert code == 0
    net = nasdsl.compile_spec(tmp_path / "v.yaml")
    assert not [n for n, d in nasdsl.ir.nodes(net.graph) if d.op == "zero"]  # n1: nothing reads it, it goes
    assert "Fill" not in generate_source(net)
    result = verify(net.graph, batch=2, opset=17)  # PyTorch against ONNX Runtime
    assert result.ok, result


# --------------------------------------------------------------------------- unique architectures


def _cell_function(n1: str, e0: str, e1: str) -> tuple[str, ...] | None:
    """What a CELL variant computes, by hand: the terms of its sum (C: a conv of its own), in any order."""
    node1 = {"conv3": "C(x)", "skip": "x", "none": None}[n1]
    terms = [{"conv": "C(x)", "skip": "x", "none": None}[e0]]
    if node1 is not None:
        terms.append({"conv3": f"C({node1})", "skip": node1, "none": None}[e1])
    terms = sorted(t for t in terms if t is not None)
    return tuple(terms) or None


def test_unique_keeps_one_variant_per_function_and_counts_them(tmp_path, capsys):
    path = _write(tmp_path, CELL)
    space = spaces.load_space(path)
    first: dict[tuple, int] = {}
    for picks in space.variants():
        c = space.choices(picks)
        f = _cell_function(c["n1"], c["n2.add.e0"], c["n2.add.e1"])
        if f is not None:
            first.setdefault(f, space.id_of(picks))
    assert len(first) == 8  # of 27 variants, 22 valid
    code, out, _ = _run(capsys, "space", path, "--unique", "--format", "json")
    rows = json.loads(out)["variants"]
    assert [v["id"] for v in rows] == sorted(first.values())
    assert len({v["hash"] for v in rows}) == 8 and all(len(v["hash"]) == 16 for v in rows)
    assert _run(capsys, "space", path, "--count", "--unique") == (0, "8\n", "")
    code, out, _ = _run(capsys, "space", path, "--unique", "--format", "csv", "--limit", "1")
    assert out.splitlines()[0].endswith(",hash,error")


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        # the terms of node 3's sum in the other order: conv1x1(x) + conv3x3(x)
        (("nor_conv_1x1", "nor_conv_3x3", "none", "none", "skip_connect", "skip_connect"),
         ("nor_conv_3x3", "nor_conv_1x1", "none", "none", "skip_connect", "skip_connect"), True),
        # conv3x3(x) through skips, by two paths
        (("nor_conv_3x3", "none", "skip_connect", "none", "none", "skip_connect"),
         ("nor_conv_3x3", "none", "none", "none", "skip_connect", "none"), True),
        # node 1's conv reaches no output (a dead branch): pool(x) either way
        (("nor_conv_3x3", "avg_pool_3x3", "none", "none", "none", "skip_connect"),
         ("none", "avg_pool_3x3", "none", "none", "none", "skip_connect"), True),
        # conv3x3(x) + conv3x3(x): one layer read twice, or two layers (two sets of weights)
        (("nor_conv_3x3", "none", "skip_connect", "none", "skip_connect", "skip_connect"),
         ("nor_conv_3x3", "nor_conv_3x3", "none", "none", "skip_connect", "skip_connect"), False),
    ],
)  # fmt: skip
def test_nas_bench_201_cells_that_compute_the_same_share_a_hash(a, b, same):
    from nasdsl.unique import graph_hash

    ha, hb = (graph_hash(nasdsl.compile_spec(NB201, [*_cell(ops), "N=1"]).graph) for ops in (a, b))
    assert (ha == hb) == same


#: a space some of whose variants do not compile: a kernel wider than the 8x8 map (9 to 12)
KERNELS = """\
nasdsl: 1
name: Kernels
input: {shape: [3, 8, 8]}
model:
  conv: {op: conv2d, out: {choice: [4, 8]}, kernel: {range: [1, 12]}}
  pool: global_avg_pool
"""


def test_a_sample_says_which_variants_do_not_compile_and_why(tmp_path, capsys):
    """`--sample N` lists N variants drawn, those that do not compile among them (documented): each
    such row is marked invalid with the compiler's error, the footer and a note on stderr count them
    in every format (the ids of a job script included), and JSON has the count (--valid-only lists N
    that compile: test_sample_returns_n_that_pass_the_filters_or_says_why). The rows marked are
    exactly the variants whose kernel is wider than the map, the same that the Python API
    (Space.sample, then Evaluator) finds invalid; sweep says it alike."""
    path = _write(tmp_path, KERNELS)
    argv = ("space", path, "--sample", "10", "--seed", "1")
    code, out, err = _run(capsys, *argv, "--format", "json")
    data = json.loads(out)
    invalid = [v["id"] for v in data["variants"] if not v["valid"]]
    kernels = {v["id"]: v["choices"]["conv.kernel"] for v in data["variants"]}
    assert code == 0 and data["listed"] == 10 and data["invalid"] == len(invalid) > 1
    assert invalid == [v["id"] for v in data["variants"] if v["choices"]["conv.kernel"] > 8]
    note = (
        f"{len(invalid)} of the 10 variants listed do not compile (status invalid, listed with the compiler's "
        "errors); --valid-only lists only variants that compile"
    )
    assert err == f"nasdsl: note: {note}\n"
    code, out, err = _run(capsys, *argv)
    lines = out.splitlines()
    assert code == 0 and note in lines and err == f"nasdsl: note: {note}\n"
    assert [int(line.split()[0]) for line in lines[3:13] if line.endswith("invalid")] == invalid
    wide = "error: model.conv: expected a kernel no larger than the input 8x8"
    assert all(f"variant {i}: {path}:5:9: {wide}, got {kernels[i]}x{kernels[i]}" in lines for i in invalid)
    code, out, err = _run(capsys, *argv, "--format", "ids")
    assert code == 0 and len(out.split()) == 10 and err == f"nasdsl: note: {note}\n"
    space = spaces.load_space(path)
    evaluator = Evaluator(space)
    results = [evaluator.evaluate(picks) for picks in space.sample(10, 1)]
    assert [r.id for r in results if not r.valid] == invalid and all(wide in r.error for r in results if not r.valid)
    code, out, err = _run(capsys, "sweep", path, "--set", "conv.kernel=[1,9,3]")
    one = (
        "1 of the 3 variants listed does not compile (status invalid, listed with the compiler's error); "
        "--valid-only lists only variants that compile"
    )
    assert code == 0 and one in out.splitlines() and err == f"nasdsl: note: {one}\n"
