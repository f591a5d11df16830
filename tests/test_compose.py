"""Variants that choose other blocks, composed from pieces compiled once (nasdsl/compose.py): their
figures, errors and hashes equal those of each variant's plain document compiled in full, for
sampled NAS-Bench-201 cells and every variant of a small space where the zero rule, shapes that
change, errors and value choices meet."""

from __future__ import annotations

import random
from pathlib import Path

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
        g = nasdsl.compile_spec(nasdsl.api.parse_spec(doc, space.file, document.spec_hash(doc), space.files)).graph
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


def test_nas_bench_201_composed_at_five_cells_a_stage():
    space = spaces.load_space(NB201)
    evaluator = Evaluator(space)
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
  conv: {params: [{C: 4}, {s: 1}], body: [relu, {op: conv2d, out: C, kernel: 3, padding: 1, stride: s, bias: false}, batch_norm]}
model:
  a: {choice: {conv: {use: conv, args: [w]}, pool: {op: max_pool, kernel: 3, stride: 1, padding: 1}, skip: identity, none: zero}}
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
