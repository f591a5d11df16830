"""Counting the variants within a budget in spaces too large to list (issue 23, item 5): exact by
stages where the costs add up (nasdsl/counting.py), checked against brute force on small spaces and
against counts worked out by hand from the layers' formulas; otherwise an estimate with a 95%
Wilson interval, said to be one."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest

from nasdsl import counting
from nasdsl import space as spaces
from nasdsl.cli import main
from nasdsl.variants import Evaluator

from paths import SPECS

#: the stages of STAGES: (width, stride of its first block)
WIDTHS = (8, 16, 24, 32)
KERNELS = (1, 3)
RATIOS = (1, 2)


def stages_spec(n: int, *, shared_width: bool = False, size: object = 16) -> str:
    """A space of ``n`` stages of one or two inverted bottlenecks (depth d_s), each block choosing
    its kernel and expansion ratio, the second block's choices made only when it exists. With
    ``shared_width``, stage 1's width is a choice that stage 2 reads (their costs do not add)."""
    lines = [
        "nasdsl: 1",
        "name: Stages",
        "input: {shape: [3, size, size]}",
        "variables:",
        f"  size: {size}",
        "  w1: {choice: [8, 12]}" if shared_width else "  w1: 8",
    ]
    for s in range(1, n + 1):
        lines.append(f"  d{s}: {{choice: [1, 2]}}")
        lines.append(f"  k{s}_1: {{choice: {list(KERNELS)}}}")
        lines.append(f"  e{s}_1: {{choice: {list(RATIOS)}}}")
        lines.append(f'  k{s}_2: {{choice: {list(KERNELS)}, when: "d{s} == 2"}}')
        lines.append(f'  e{s}_2: {{choice: {list(RATIOS)}, when: "d{s} == 2"}}')
    lines += [
        "templates:",
        "  Block:",
        "    params: [inp, out, kernel, ratio, stride]",
        "    body:",
        '      - {op: conv2d, out: "inp * ratio", kernel: 1, bias: false}',
        "      - relu",
        '      - {op: conv2d, out: "inp * ratio", kernel: kernel, stride: stride, padding: "kernel // 2",'
        ' groups: "inp * ratio", bias: false}',
        "      - {op: conv2d, out: out, kernel: 1, bias: false}",
        "model:",
        "  stem: {op: conv2d, out: 8, kernel: 3, padding: 1, bias: false}",
    ]
    width = "8"
    for s in range(1, n + 1):
        out = "w1" if s == 1 else str(WIDTHS[s - 1])
        lines.append(f"  b{s}_1: {{use: Block, args: [{width}, {out}, k{s}_1, e{s}_1, 2]}}")
        lines.append(f'  b{s}_2: {{use: Block, args: [{out}, {out}, k{s}_2, e{s}_2, 1], when: "d{s} == 2"}}')
        width = out
    lines += ["  pool: global_avg_pool", "  flat: flatten", "  fc: {op: linear, out: 10}"]
    return "\n".join(lines) + "\n"


def stage_options(n: int, size: int = 16) -> list[list[tuple[int, int]]]:
    """Per stage, the (parameters, multiply-adds) of each of its 20 variants, by hand: a Block is a
    1x1 expansion to inp x ratio channels (at the input's size), a k x k depthwise convolution and a
    1x1 projection (at the output's size: half the input's at stride 2, odd kernels, padding k // 2)."""
    out = []
    width = 8
    for s in range(n):
        c = WIDTHS[s]
        small = size // 2
        options = []
        for d in (1, 2):
            for picks in itertools.product(KERNELS, RATIOS, *([KERNELS, RATIOS] if d == 2 else [])):
                k1, r1 = picks[:2]
                mid = width * r1
                params = width * mid + mid * k1 * k1 + mid * c
                macs = width * mid * size * size + (mid * k1 * k1 + mid * c) * small * small
                if d == 2:
                    k2, r2 = picks[2:]
                    mid2 = c * r2
                    params += c * mid2 + mid2 * k2 * k2 + mid2 * c
                    macs += (c * mid2 + mid2 * k2 * k2 + mid2 * c) * small * small
                options.append((params, macs))
        out.append(options)
        size, width = small, c
    return out


def by_hand(n: int, size: int = 16) -> list[tuple[int, int]]:
    """(parameters, multiply-adds) of every variant, by hand: the stem, the stages, the classifier."""
    fixed = (3 * 8 * 9 + WIDTHS[n - 1] * 10 + 10, 3 * 8 * 9 * size * size + WIDTHS[n - 1] * 10)
    return [
        (fixed[0] + sum(p for p, _ in combo), fixed[1] + sum(m for _, m in combo))
        for combo in itertools.product(*stage_options(n, size))
    ]


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return str(path)


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """The two-stage space (400 variants) and every variant's figures, evaluated one by one."""
    path = _write(tmp_path_factory.mktemp("small"), stages_spec(2))
    space = spaces.load_space(path)
    evaluator = Evaluator(space)
    figures = [evaluator.evaluate(p).figures for p in space.variants()]
    return space, figures


def test_the_brute_force_figures_are_the_hand_worked_ones(small):
    space, figures = small
    assert space.count() == 20**2 == len(figures)
    assert sorted((f.params, f.macs) for f in figures) == sorted(by_hand(2))


BUDGETS = [
    [counting.Bound("macs", "max", 112_288)],  # a variant's figure: the bound is included
    [counting.Bound("macs", "max", 120_000.5)],
    [counting.Bound("params", "max", 2_000)],
    [counting.Bound("macs", "min", 124_704)],
    [counting.Bound("macs", "min", 100_000), counting.Bound("macs", "max", 140_000)],
    [counting.Bound("macs", "max", 130_000), counting.Bound("params", "max", 2_500)],
    [counting.Bound("macs", "max", 82_719)],  # below the smallest
    [counting.Bound("params", "max", 10**9)],  # above the largest
]


@pytest.mark.parametrize("bounds", BUDGETS)
def test_counts_by_stages_equal_brute_force(small, bounds):
    space, figures = small
    expected = sum(1 for f in figures if all(b.passes(getattr(f, b.column)) for b in bounds))
    result = counting.count_by_stages(space, bounds)
    assert result.exact and result.method == "stages" and result.value == expected
    assert result.groups == 4  # per stage: the first block's kernel and ratio; the depth and the second block's


def test_stages_whose_costs_do_not_add_are_counted_as_one_group(tmp_path):
    # stage 1's width is a choice that stage 2's first block reads: the two stages are one group
    space = spaces.load_space(_write(tmp_path, stages_spec(2, shared_width=True)))
    evaluator = Evaluator(space)
    figures = [evaluator.evaluate(p).figures for p in space.variants()]
    bound = counting.Bound("macs", "max", 80_000)
    result = counting.count_by_stages(space, [bound])
    assert result.value == sum(1 for f in figures if f.macs <= 80_000) and result.groups < 4


def test_invalid_variants_and_shapes_that_cross_stages(tmp_path):
    # without padding, each kernel shrinks the map: stage 2's shapes follow stage 1's choices (one
    # group), and a deep stage 2 after large kernels leaves nothing to convolve (invalid variants)
    text = stages_spec(2).replace('padding: "kernel // 2"', "padding: 0")
    space = spaces.load_space(_write(tmp_path, text))
    evaluator = Evaluator(space)
    figures = [evaluator.evaluate(p).figures for p in space.variants()]
    invalid = sum(1 for f in figures if f is None)
    assert 0 < invalid < len(figures)
    for valid_only in (False, True):
        bound = counting.Bound("macs", "max", 110_992)  # the median of the valid variants'
        result = counting.count_by_stages(space, [bound], valid_only=valid_only)
        passing = sum(1 for f in figures if f is not None and f.macs <= 110_992)
        assert 0 < passing and result.value == passing + (0 if valid_only else invalid) and result.groups == 1


#: a repeat whose count is a choice, a choice inside the repeated block, a template with its own
#: repeat, and a layer switched by a choice whose width is another choice
REPEATS = """\
nasdsl: 1
name: Repeated
input:
  shape: [3, 16, 16]
variables:
  w: 8
  n: {choice: [1, 2, 3]}
  k1: {choice: [1, 3]}
  k2: {choice: [3, 5]}
  m: {choice: [1, 2]}
  wide: {choice: [false, true]}
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
      - {op: conv2d, out: w, kernel: k1, padding: "(k1 - 1) // 2"}
      - relu
  body: {use: Stage, args: [w, k2]}
  extra: {op: conv2d, out: "16 * m", kernel: 1, when: wide}
  gap: global_avg_pool
  flat: flatten
  fc: {op: linear, out: 10}
"""


def test_repeats_and_switches_are_counted_exactly(tmp_path):
    space = spaces.load_space(_write(tmp_path, REPEATS))
    evaluator = Evaluator(space)
    figures = [evaluator.evaluate(p).figures for p in space.variants()]
    for column in ("macs", "params"):
        values = sorted(getattr(f, column) for f in figures)
        for bound in (values[len(values) // 4], values[len(values) // 2]):
            result = counting.count_by_stages(space, [counting.Bound(column, "max", bound)])
            assert result.value == sum(1 for f in figures if getattr(f, column) <= bound), (column, bound)
            assert result.groups == 2  # the repeats' nodes with the repeat count; the switched layer's


def test_a_space_too_large_to_list_is_counted_exactly_by_stages(tmp_path, capsys):
    path = _write(tmp_path, stages_spec(4))
    figures = by_hand(4)
    assert len(figures) == 160_000  # above the 100,000 that --count lists
    for budget in (120_000, 146_936):
        code, out, err = _run(capsys, "space", path, "--count", "--max-macs", str(budget))
        assert (code, err) == (0, "") and int(out) == sum(1 for _, m in figures if m <= budget)
    code, out, _ = _run(capsys, "space", path, "--count", "--max-params", "9578", "--format", "json")
    data = json.loads(out)
    assert data["exact"] is True and data["estimate"] is False and data["method"] == "stages"
    assert data["count"] == sum(1 for p, _ in figures if p <= 9578)


def test_count_estimates_draw_every_variant_alike(tmp_path, capsys):
    path = _write(tmp_path, stages_spec(4))
    code, _, err = _run(capsys, "space", path, "--count", "--max-macs", "1e5", "--sample-by", "choice")
    assert code == 2 and "--sample-by choice" in err


def test_where_the_costs_do_not_add_the_count_is_an_estimate_and_says_so(tmp_path, capsys):
    # the resolution is a choice: every node's shape depends on it
    text = stages_spec(4, size="size").replace("  size: size\n", "  size: {choice: [16, 32]}\n")
    path = _write(tmp_path, text)
    truth = sum(1 for size in (16, 32) for _, m in by_hand(4, size) if m <= 300_000)
    argv = ["space", path, "--count", "--max-macs", "300000", "--sample", "300", "--seed", "1"]
    code, out, err = _run(capsys, *argv)
    assert code == 0 and out.startswith("estimate: about ") and "95% interval" in out
    assert "an estimate, not an exact count" in err
    code, out, err = _run(capsys, *argv, "--format", "json")
    data = json.loads(out)
    assert data["exact"] is False and data["estimate"] is True and data["method"] == "sampled"
    assert data["draws"] == 300 and "the input's shape is a choice" in data["why_estimate"]
    low, high = data["interval"]
    assert low <= truth <= high and low <= data["count"] <= high
    # a filter that compares variants with each other cannot be estimated: refused
    code, _, err = _run(capsys, "space", path, "--count", "--pareto", "macs,params:max")
    assert code == 2 and "--pareto compares every variant with the others" in err


def test_wilson_interval_textbook_values():
    # Wilson (1927) score intervals at 95%: 0 of 10 and 5 of 10 (Newcombe 1998, Table I, method 3)
    low, high = counting.wilson(0, 10)
    assert low == 0 and math.isclose(high, 0.2775, abs_tol=1e-4)
    low, high = counting.wilson(5, 10)
    assert math.isclose(low, 0.2366, abs_tol=1e-4) and math.isclose(high, 0.7634, abs_tol=1e-4)


OFA = str(SPECS / "spaces" / "ofa_mobilenet_v3.yaml")


def test_ofa_under_budgets_by_stages_and_a_sampled_estimate_agree():
    space = spaces.load_space(OFA)
    macs = counting.count_by_stages(space, [counting.Bound("macs", "max", 180e6)])
    params = counting.count_by_stages(space, [counting.Bound("params", "max", 6e6)])
    assert macs.exact and params.exact and macs.groups == params.groups == 15  # 3 per stage
    assert 0 < macs.value < params.value < space.count()
    # plausibility only (the exactness test is the small space's): a uniform sample's 95% interval
    evaluator = Evaluator(space)
    guess = counting.estimate(space, lambda p: evaluator.evaluate(p).figures.params <= 6e6, draws=100, seed=3)
    assert guess.low <= params.value <= guess.high, (guess, params.value)


def test_the_convolution_is_exact_beyond_64_bits():
    """The band convolution (uint64 counts and a float approximation) against plain Python integers,
    with groups whose costs step by different divisors and counts whose products pass 2^64."""
    import random

    rng = random.Random(5)
    histograms = []
    for g in range(12):
        step = (3, 5, 7, 12)[g % 4]
        histograms.append({(step * rng.randrange(0, 9),): rng.randrange(1, 60) for _ in range(5)})
    assert 1 << 64 < math.prod(sum(h.values()) for h in histograms) < 1 << 100
    sums = {0: 1}
    for h in histograms:
        out: dict[int, int] = {}
        for s, n in sums.items():
            for (c,), m in h.items():
                out[s + c] = out.get(s + c, 0) + n * m
        sums = out
    base = 1_000
    for bound in (base + 50, base + 200, base + 300, base + 10_000):
        expected = sum(n for s, n in sums.items() if base + s <= bound)
        got = counting._count_within(histograms, (base,), [[counting.Bound("macs", "max", bound)]])
        assert got == expected, bound
        low = counting._count_within(histograms, (base,), [[counting.Bound("macs", "min", bound)]])
        assert low == sum(n for s, n in sums.items() if base + s >= bound), bound
