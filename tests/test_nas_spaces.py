"""Search spaces as NAS research writes them (issue 23): choices inside `repeat`, honest counts and
samples (`space --count` with filters, `--sample N` that says when it finds fewer, `--sample-by`).

Expected figures are computed here by hand from the layers' formulas, or by compiling each
variant's plain document in full (the slow path the fast evaluator must agree with)."""

from __future__ import annotations

import json
import random
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
        net = nasdsl.compile_spec(nasdsl.api.parse_spec(doc, space.file, document.spec_hash(doc), space.files))
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


def test_count_refuses_what_it_cannot_count_exactly(capsys):
    argv = ["sweep", "specs/googlenet.yaml", *(f"--set=inception{m}.c1x1=[64,96,128,160]" for m in ("3a", "3b", "4a",
            "4b", "4c", "4d", "4e", "5a", "5b"))]  # fmt: skip
    assert _run(capsys, *argv, "--count") == (0, f"{4**9}\n", "")
    code, out, err = _run(capsys, *argv, "--count", "--max-macs", "1G")
    assert code == 2 and out == ""
    assert "cannot count the variants that pass --max-macs 1e+09 exactly: that means evaluating all 262,144" in err


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
