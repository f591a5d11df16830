"""Input choices (issue 23): a `from` or `ref` that chooses among earlier values, one of n or k of
n (`pick`), a merge that gives each branch its own value (`from: [a, b]`) and knows its position
(`index`); counted, listed, set and picked like every choice.

The expected wiring is written by hand as plain specs (no choices) and compared node by node."""

from __future__ import annotations

import json
from math import comb
from pathlib import Path

import networkx as nx
import pytest

import nasdsl
from nasdsl import ir
from nasdsl.cli import main

from paths import ROOT

SPACE = (ROOT / "docs" / "examples" / "input_choices.yaml").read_text()

#: variant c_in=b n_in=[a,c] op0=conv op1=conv e_op=conv e_in=a f_in=n, written out by hand: the second
#: branch reads c, the fourth value of the index list, so its dilation is 3
PLAIN = """\
nasdsl: 1
name: Inputs
input: {shape: [4, 8, 8]}
model:
  a: {op: conv2d, out: 4, kernel: 1}
  b: {op: conv2d, out: 4, kernel: 3, padding: 1}
  c: {op: conv2d, out: 4, kernel: 1, from: b}
  n:
    add:
      - {op: conv2d, out: 4, kernel: 3, padding: 1, from: a}
      - {op: conv2d, out: 4, kernel: 3, padding: 3, dilation: 3, from: c}
  e: {op: conv2d, out: 4, kernel: 1, from: a}
  f: {ref: n}
"""


def _write(tmp_path: Path, text: str, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _wiring(g) -> set[tuple[str, str, str, tuple]]:
    """Each edge with the op it feeds and that op's attributes: the network as a set."""
    return {(u, v, ir.node(g, v).op, tuple(sorted(ir.node(g, v).attrs.items()))) for u, v in g.edges}


def test_the_choices_count_and_show_as_words(tmp_path, capsys):
    path = _write(tmp_path, SPACE)
    assert main(["space", str(path), "--count"]) == 0
    # c: 1 of 2; n: 2 of 4 values (unordered, each in the list's order) and an op for each; e: op and value;
    # f: 1 of 2
    assert capsys.readouterr().out.strip() == str(2 * comb(4, 2) * 2 * 2 * 2 * 2 * 2)
    assert main(["space", str(path), "--format", "json", "--limit", "1"]) == 0
    listed = json.loads(capsys.readouterr().out)
    choices = {c["name"]: c["options"] for c in listed["choices"]}
    assert choices["n_in"] == [["in", "a"], ["in", "b"], ["in", "c"], ["a", "b"], ["a", "c"], ["b", "c"]]
    assert choices["c_in"] == ["a", "b"] and choices["f_in"] == ["e", "n"]
    assert listed["variants"][0]["set"][:2] == ["c_in=a", "n_in=[in,a]"]


def test_a_variant_is_the_network_written_out(tmp_path, capsys):
    path = _write(tmp_path, SPACE)
    sets = ["c_in=b", "n_in=[a,c]", "op0=conv", "op1=conv", "e_op=conv", "e_in=a", "f_in=n"]
    chosen = nasdsl.compile_spec(path, sets)
    plain = nasdsl.compile_spec(_write(tmp_path, PLAIN, "plain.yaml"))
    assert _wiring(chosen.graph) == _wiring(plain.graph)
    assert chosen.summary()["totals"] == plain.summary()["totals"]
    # the same variant picked by its id writes a plain spec that compiles to the same network
    fixed = [f"--set={s}" for s in sets[:-1]]  # all but f_in: the space of its two options
    assert main(["space", str(path), *fixed, "--format", "json"]) == 0
    ids = {tuple(v["set"]): v["id"] for v in json.loads(capsys.readouterr().out)["variants"]}
    assert set(ids) == {("f_in=e",), ("f_in=n",)}
    assert main(["space", str(path), *fixed, "--pick", str(ids[("f_in=n",)]), "-o", str(tmp_path / "v.yaml")]) == 0
    assert "from: [a, c]" in (tmp_path / "v.yaml").read_text()
    assert _wiring(nasdsl.compile_spec(tmp_path / "v.yaml").graph) == _wiring(plain.graph)


def test_every_listed_variant_agrees_with_its_plain_spec(tmp_path, capsys):
    """The listing's figures (one program per choice of inputs) against each variant compiled alone."""
    path = _write(tmp_path, SPACE)
    assert main(["space", str(path), "--format", "json", "--sample", "12", "--seed", "5"]) == 0
    variants = json.loads(capsys.readouterr().out)["variants"]
    assert len(variants) == 12 and all(v["valid"] for v in variants)
    for v in variants:
        totals = nasdsl.compile_spec(path, v["set"]).summary()["totals"]
        assert (v["params"], v["macs"]) == (totals["params"], totals["macs"]), v["set"]


def test_an_input_choice_in_pytorch_and_onnx(tmp_path):
    from nasdsl.backends.verify import verify

    net = nasdsl.compile_spec(_write(tmp_path, SPACE), ["n_in=[in,c]", "op1=conv"])
    result = verify(net.graph, batch=2)
    assert result.ok, result
    assert nx.has_path(net.graph, "c", "n.1")


#: (text replaced, its replacement, the error)
MALFORMED = [
    ("pick: 2, name: n_in", "picks: 2, name: n_in", "unknown key 'picks' in a choice of values (did you mean 'pick'?)"),
    (
        "pick: 2, name: n_in",
        "pick: 5, name: n_in",
        "model.n.from.pick: expected 'pick' to be a number of values from 2 to 4, got 5",
    ),
    ("choice: [in, a, b, c], pick", "choice: [in, a, a, c], pick", "model.n.from.choice: option a is given twice"),
    (
        "choice: [a, b], name: c_in",
        "choice: [a, 3], name: c_in",
        "model.c.from.choice[1]: expected the name of an earlier value, got 3",
    ),
    (
        "index: {j: [in, a, b, c]}",
        "index: {j: [in, b, c]}",
        "model.n.index: branch '1' reads a value that is not in the list of 'index'",
    ),
    (
        "from: {choice: [in, a, b, c], pick: 2, name: n_in}",
        "from: [a, b, c]",
        "model.n.from: expected one value after 'from' for each of the 2 branches, got 3",
    ),
    ("{choice: [a, b], name: c_in}", "{choice: [a, b], pick: 2, name: c_in}", "model.c.from: expected one name"),
]


@pytest.mark.parametrize(("old", "new", "message"), MALFORMED, ids=[str(i) for i in range(len(MALFORMED))])
def test_malformed_input_choices_are_located_errors(tmp_path, capsys, old, new, message):
    assert old in SPACE
    path = _write(tmp_path, SPACE.replace(old, new, 1))
    assert main(["space", str(path), "--count"]) == 2
    err = capsys.readouterr().err
    assert f"{path}:" in err and message in err and "Traceback" not in err, err


def test_the_guide_shows_the_example_and_its_count(capsys):
    guide = (ROOT / "docs" / "design-space.md").read_text()
    section = guide.split("\n### Input choices\n", 1)[1].split("\n### ", 1)[0]
    (block,) = [b for b in section.split("```yaml\n")[1:]]
    assert block.split("```", 1)[0] in SPACE
    assert main(["space", str(ROOT / "docs" / "examples" / "input_choices.yaml"), "--count"]) == 0
    count = capsys.readouterr().out.strip()
    assert f"--count` prints {count} (" in " ".join(section.split())


def test_a_sweep_over_lists_of_values(tmp_path, capsys):
    """Options that are lists (a sweep's axis, or written so): each the values, in the order given."""
    path = _write(tmp_path, SPACE)
    assert main(["sweep", str(path), "--set", "n_in=[[a,b],[c,a]]", "--format", "json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [v["set"] for v in listed["variants"]] == [["n_in=[a,b]"], ["n_in=[c,a]"]]
    net = nasdsl.compile_spec(path, ["n_in=[c,a]", "op0=conv", "op1=conv"])
    assert ir.inputs(net.graph, "n.0") == ["c"] and ir.inputs(net.graph, "n.1") == ["a"]
    assert ir.node(net.graph, "n.1").attrs["dilation"] == (1, 1)  # a is position 1 of the index list
