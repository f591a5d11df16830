"""The DARTS search space (issue 23): specs/spaces/darts.yaml against the evaluation network written
by hand from the paper (tests/darts_reference.py): parameters, multiply-adds and outputs for DARTS-V2
and sampled cells with `none` edges, at a small size (C = 8, 8 cells, 16x16) to stay fast; DARTS-V2's
3,349,342 parameters at C = 36 with 20 cells; and the count of the space."""

from __future__ import annotations

import random
from math import comb, prod

import pytest
import torch
from darts_reference import DARTS_V2, OPS, Network, count_macs, count_params, load_from_nasdsl, spec_settings

import nasdsl
from nasdsl.backends.pytorch import model_class
from nasdsl.cli import main

from paths import SPECS

SPEC = SPECS / "spaces" / "darts.yaml"
SMALL = {"C": 8, "layers": 8, "input.shape": [3, 16, 16]}


def _genotype(rng: random.Random) -> dict:
    """A random cell pair with at least one `none` edge, no node of two `none`s (such a node is nothing,
    and the cell's concat refuses it)."""
    while True:
        cells = {}
        for kind in ("normal", "reduce"):
            edges = []
            for i in range(4):
                a, b = rng.sample(range(i + 2), 2)
                ops = [rng.choice(OPS), rng.choice(OPS)]
                if ops == ["none", "none"]:
                    ops[rng.randrange(2)] = rng.choice(OPS[1:])
                edges += [(ops[0], a), (ops[1], b)]
            cells[kind] = edges
        if any(op == "none" for edges in cells.values() for op, _ in edges):
            return cells


CELLS = [("darts_v2", DARTS_V2)] + [(f"sampled_{seed}", _genotype(random.Random(seed))) for seed in (1, 2, 3)]


@pytest.mark.parametrize(("label", "genotype"), CELLS, ids=[c[0] for c in CELLS])
def test_the_spec_is_the_papers_network(label, genotype):
    sets = [f"{k}={v}" for k, v in SMALL.items()] + ([] if label == "darts_v2" else spec_settings(genotype))
    net = nasdsl.compile_spec(SPEC, sets)
    reference = Network(genotype, c=SMALL["C"], layers=SMALL["layers"])
    totals = net.summary()["totals"]
    assert totals["params"] == count_params(reference)
    assert totals["macs"] == count_macs(reference, (3, 16, 16))
    model = model_class(net.graph)().eval()
    torch.manual_seed(0)
    with torch.no_grad():  # weights and BatchNorm statistics drawn, then shared
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand_like(t) + 0.5 if "running_var" in name else torch.randn_like(t) * 0.5)
    load_from_nasdsl(reference, model.state_dict())
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        got, want = model(x), reference.eval()(x)
    assert (got - want).abs().max() / want.abs().max() < 1e-5


def test_darts_v2_has_the_papers_parameters():
    """3,349,342 at C = 36 and 20 cells: the authors' count_parameters_in_MB, which leaves the
    auxiliary head out (the paper's 3.3 M)."""
    with torch.device("meta"):
        reference = Network(DARTS_V2)
    assert count_params(reference) == 3_349_342
    assert nasdsl.compile_spec(SPEC).summary()["totals"]["params"] == 3_349_342


def test_the_space_counts_each_cell_type_as_the_docs_say(capsys):
    """Per cell type, node i picks 2 of its i + 2 earlier values (unordered) and one of 8 ops for each."""
    per_cell = prod(comb(i + 2, 2) * 8**2 for i in range(4))
    assert main(["space", str(SPEC), "--count"]) == 0
    assert int(capsys.readouterr().out) == per_cell**2 == 9_119_789_245_425_254_400


def test_the_guide_quotes_the_spec_and_its_figures():
    guide = (SPECS.parent / "docs" / "design-space.md").read_text()
    section = guide.split("\n## 11. A cell space with input choices: DARTS\n", 1)[1].split("\n## ", 1)[0]
    (block,) = [b.split("```", 1)[0] for b in section.split("```yaml\n")[1:]]
    assert block in SPEC.read_text()
    per_cell = prod(comb(i + 2, 2) * 8**2 for i in range(4))
    assert f"= {per_cell:,} cells" in " ".join(section.split())
