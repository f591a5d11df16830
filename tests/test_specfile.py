"""A trial's spec.yaml joined from cut entries (nasdsl/search/specfile.py) against ``spec_yaml``
writing each variant's document whole: the cut must give the same bytes wherever it is made, and
must not be made where a variant's entry could be laid out otherwise (a one-line collection that a
longer option breaks into lines, a line that a longer option makes wrap)."""

from __future__ import annotations

import random

import pytest

from nasdsl import space as spaces
from nasdsl.document import WIDTH, canonical_json, spec_yaml
from nasdsl.search.specfile import SpecTexts

#: a doc long enough that, with the longer option, the one-line mapping it is in grows past
#: spec_yaml's limit for one line (document._short: 90 characters) and is written as a block
NEAR = "n" * 60
#: a key so long that its one-line mapping, with the longer option, runs past the width and wraps
KEY = "k" * 60

CUTS = f"""\
nasdsl: 1
name: Cuts
variables:
  flag: {{choice: [true, false]}}
  w: 8
model:
  plain: {{op: conv2d, out: {{choice: [4, 8, 16]}}, kernel: {{choice: [1, 3]}}}}
  quoted: {{op: relu, note: {{choice: ["make_divisible(w, 8)", "yes", "on", w, "w * 2", null, true, "- w"]}}}}
  floats: {{op: dropout, p: {{choice: [0.1, 0.25, 1.0e-05, 1]}}}}
  near: {{op: conv2d, out: 4, kernel: 1, note: {{choice: [w, {NEAR}]}}}}
  {KEY}: {{op: conv2d, note: {{choice: [w, {"w" * 40}]}}, out: 4, kernel: 1}}
  block:
    op: conv2d
    doc: {"d" * 80}
    out: {{choice: [2, 3]}}
    note: {{choice: ["max(w, 2)", {"b" * 100}]}}
    kernel: 1
  folded:
    op: conv2d
    out: 4
    note: {{choice: [w, "{" + ".join(["w"] * 40)}"]}}
    kernel: 1
  pair: {{op: max_pool, kernel: {{choice: [[2, 2], [3, 1]]}}}}
  tied: {{op: conv2d, out: &t {{choice: [5, 7]}}, kernel: 1}}
  again: {{op: conv2d, out: *t, kernel: 1}}
"""


@pytest.fixture(scope="module")
def cuts(tmp_path_factory):
    path = tmp_path_factory.mktemp("cuts") / "cuts.yaml"
    path.write_text(CUTS, encoding="utf-8")
    return spaces.load_space(path, check=False)


def cut_entries(texts: SpecTexts) -> set[str]:
    return {
        str(sub if sub is not None else key)
        for (key, sub, _), cut in zip(texts.entries, texts.cuts, strict=True)
        if cut
    }


def test_entries_are_cut_where_every_variant_is_laid_out_alike(cuts):
    """Scalars of any kind are cut, in one-line mappings and in block ones, and a choice tied to
    another place (a YAML alias) in each entry where it stands; the entries where an option changes
    the layout, spans lines, or is a list are written per variant instead."""
    texts = SpecTexts(cuts)
    assert [len(p.positions) for p in cuts.points if p.name == "tied.out"] == [2]
    assert cut_entries(texts) == {"flag", "plain", "quoted", "floats", "block", "tied", "again"}
    long_line = next(line for line in spec_yaml(cuts.document_of(cuts.default)).splitlines() if KEY in line)
    assert len(long_line) <= WIDTH  # the default fits: it is the longer option that would wrap


def test_the_joined_text_is_spec_yamls_for_every_variant_drawn(cuts):
    """Variants drawn at random (seeded) from the space's 2 x 3 x 2 x 8 x 4 x 2 x 2 x 2 x 2 x 2 x 2 x 2
    options, each against spec_yaml writing its document whole; a writer whose memory of the entries
    it writes per variant is emptied along the way gives the same."""
    texts, small = SpecTexts(cuts), SpecTexts(cuts, keep=3)
    rng = random.Random(7)
    drawn = [cuts.default] + [tuple(rng.randrange(len(p.options)) for p in cuts.points) for _ in range(150)]
    drawn.append(tuple(len(p.options) - 1 for p in cuts.points))
    for picks in drawn:
        doc = cuts.document_of(picks)
        expected = spec_yaml(doc)
        assert texts(picks, canonical_json(doc)) == expected
        assert small(picks, canonical_json(doc)) == expected
    # the layouts the refusals guard against are really met among the variants drawn
    written = [spec_yaml(cuts.document_of(p)) for p in drawn]
    assert any("  near:\n    op: conv2d" in t for t in written) and any("  near: {op: conv2d" in t for t in written)
    lines = [line for t in written for line in t.splitlines()]
    assert any(KEY in line and line.endswith(",") for line in lines)  # the long key's mapping wrapped
    assert any(line.startswith("    note: w + w") and not line.endswith("w + w") for line in lines)  # folded
