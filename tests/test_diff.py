"""``nasdsl diff`` and nasdsl/diff.py: graph-level differences between two specs, entry by entry."""

from __future__ import annotations

import json
import re

import pytest

import nasdsl
from nasdsl.cli import main
from nasdsl.diff import as_dict, compare, render

from paths import SPECS

GOOGLENET = (SPECS / "googlenet.yaml").read_text()


@pytest.fixture(scope="module")
def googlenet():
    return nasdsl.compile_spec(SPECS / "googlenet.yaml")


def _compile(tmp_path, text: str, name: str = "other.yaml", overrides=()):
    path = tmp_path / name
    path.write_text(text)
    return nasdsl.compile_spec(path, overrides)


def _statuses(diff) -> dict[str, str]:
    return {e.name: e.status for e in diff.entries}


def test_the_same_graph_differs_in_nothing_whatever_the_text(tmp_path, googlenet):
    """Comments, blank lines, the order of templates and positional against named arguments are not the graph."""
    text = re.sub(r"#.*", "", GOOGLENET)
    text = text.replace(
        "inception4a: {use: Inception, args: [192, 96, 208, 16, 48, 64]}",
        "inception4a:\n    use: Inception\n"
        "    args: {c1x1: 192, c3x3red: 96, c3x3: 208, c5x5red: 16, c5x5: 48, pool_proj: 64}",
    )
    head, templates = text.split("templates:\n", 1)
    templates, rest = templates.split("\nmodel:\n", 1)
    blocks = re.split(r"\n(?=  \w+:\n)", templates.strip("\n"))
    text = head + "templates:\n" + "\n".join(reversed(blocks)) + "\n\nmodel:\n" + rest
    other = _compile(tmp_path, text)
    diff = compare(googlenet, other)
    assert diff.entries == () and diff.counts() == {"added": 0, "removed": 0, "changed": 0, "renamed": 0}
    assert render(diff).splitlines()[-1] == "no differences"


def test_a_changed_argument_changes_its_entry_and_the_inputs_after_it(googlenet):
    other = nasdsl.compile_spec(SPECS / "googlenet.yaml", ["inception4a.c3x3=256"])
    diff = compare(googlenet, other, a_name="a", b_name="b")
    assert _statuses(diff) == {"inception4a": "changed", "inception4b": "changed", "aux1": "changed"}
    first = diff.entries[0]
    assert [(c.what, c.key, c.a, c.b) for c in first.changes] == [
        ("arg", "c3x3", 208, 256),
        ("output", "", [512, 14, 14], [560, 14, 14]),
    ]
    assert first.params[1] - first.params[0] == 96 * 48 * 9 + 48  # 48 more 3x3 filters on 96 channels, with biases
    assert [c.what for c in diff.entries[1].changes] == ["input"]
    text = render(diff)
    assert "~ inception4a (Inception): c3x3 208 -> 256; output 512x14x14 -> 560x14x14; params +41,520" in text
    assert "~ inception4b (Inception): input 512x14x14 -> 560x14x14; params +17,280, MACs +3,386,880" in text
    # the entries' deltas add up to the totals'
    data = as_dict(diff)
    assert sum(e["params"]["delta"] for e in data["entries"]) == data["totals"]["params_train"]["delta"]
    assert sum(e["macs"]["delta"] for e in data["entries"]) == data["totals"]["macs_train"]["delta"]
    inference = [e for e in data["entries"] if not e["training_only"]]
    assert sum(e["params"]["delta"] for e in inference) == data["totals"]["params"]["delta"] == 58_800


def test_an_inserted_module_is_one_insertion(tmp_path, googlenet):
    line = "  inception4b: {use: Inception, args: [160, 112, 224, 24, 64, 64]}\n"
    text = GOOGLENET.replace(line, line + "  inception4x: {use: Inception, args: [160, 112, 224, 24, 64, 64]}\n")
    diff = compare(googlenet, _compile(tmp_path, text))
    assert _statuses(diff) == {"inception4x": "added"}
    (entry,) = diff.entries
    assert entry.output == (512, 14, 14) and entry.params == (None, diff.b.params - diff.a.params)
    assert "+ inception4x (Inception): added, output 512x14x14; params +449,160, MACs +87,908,352" in render(diff)
    back = compare(_compile(tmp_path, text), googlenet)
    assert _statuses(back) == {"inception4x": "removed"}


def test_a_renamed_entry_is_a_rename(tmp_path, googlenet):
    text = GOOGLENET.replace("  conv2: {use: BasicConv2d", "  conv2_reduce: {use: BasicConv2d")
    diff = compare(googlenet, _compile(tmp_path, text))
    assert _statuses(diff) == {"conv2_reduce": "renamed"}
    assert diff.entries[0].was == "conv2" and diff.entries[0].params == (4160, 4160)
    assert "> conv2_reduce (BasicConv2d): renamed from conv2" in render(diff)


def test_two_specs_removed_entries_node_changes_and_outputs(googlenet):
    bn = nasdsl.compile_spec(SPECS / "googlenet_bn.yaml")
    diff = compare(googlenet, bn)
    statuses = _statuses(diff)
    assert statuses["lrn1"] == statuses["lrn2"] == "removed"
    assert statuses["avgpool"] == "changed" and "renamed" not in statuses.values()
    conv1 = next(e for e in diff.entries if e.name == "conv1")
    assert {(c.key, json.dumps(c.a), json.dumps(c.b)) for c in conv1.changes} == {
        ("conv", '{"bias": true}', '{"bias": false}'),
        ("bn", "null", '{"op": "batch_norm", "shape": [64, 112, 112]}'),
    }
    text = render(diff)
    assert "~ conv1 (BasicConv2d): conv: bias true -> false; bn: batch_norm added; params +64" in text
    assert "branch3.1.conv: kernel [5,5] -> [3,3], padding [2,2] -> [1,1], bias true -> false" in text
    assert text.splitlines()[-2].startswith("total: params 6,998,552 -> 6,624,904 (-373,648)")
    off = nasdsl.compile_spec(SPECS / "googlenet.yaml", {"aux_logits": False})
    diff = compare(googlenet, off)
    assert _statuses(diff) == {"aux1": "removed", "aux2": "removed", "outputs": "changed"}
    outputs = diff.entries[-1]
    assert [(c.key, c.b) for c in outputs.changes] == [("aux1", None), ("aux2", None)]


def test_the_command_compares_files_or_sets(tmp_path, capsys):
    spec = str(SPECS / "googlenet.yaml")
    assert main(["diff", spec, "--other-set", "inception4a.c3x3=256", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["b"]["file"] == "googlenet.yaml --set inception4a.c3x3=256"
    assert data["counts"] == {"added": 0, "removed": 0, "changed": 3, "renamed": 0}
    assert set(data["entries"][0]) == {
        "name", "status", "was", "kind", "training_only", "output", "changes", "params", "macs"
    }  # fmt: skip
    # --set applies to SPEC; OTHER defaults to SPEC's file without it
    assert main(["diff", spec, "--set", "dropout=0.5"]) == 0
    out = capsys.readouterr().out
    assert "~ dropout (dropout): p 0.5 -> 0.4" in out
    assert main(["diff", spec, str(SPECS / "googlenet_bn.yaml")]) == 0
    assert "- lrn1 (lrn): removed (its output was 64x56x56)" in capsys.readouterr().out
    assert main(["diff", spec, str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml:1:1: error: no such file" in capsys.readouterr().err
    assert main(["diff", spec, "--other-set", "inception4a.c3x3=-1"]) == 2
    assert "expected an integer > 0, got -1" in capsys.readouterr().err


def test_a_node_that_reads_other_values_is_a_change(capsys):
    """DARTS's node 3 of the normal cell picking (preprocess1, n0) where DARTS-V2 picks
    (preprocess0, n0): the same layers, wired otherwise, so another architecture; the diff names
    the node and what it reads on each side, in every normal cell."""
    from nasdsl.cli import main

    spec = str(SPECS / "spaces" / "darts.yaml")
    assert main(["diff", spec, "--set", "normal_n3_in=[preprocess1,n0]"]) == 0
    out = capsys.readouterr().out
    assert "no differences" not in out and "architecture hash" in out
    assert '~ first3 (NormalCellAfterReduction): n3.0: reads ["preprocess1.2"] -> ["preprocess0.bn"]' in out


#: three convolutions of the same shape: which one ``c`` reads is all the wiring there is
WIRED = """\
nasdsl: 1
name: Wired
input: {shape: [4, 8, 8]}
model:
  a: {op: conv2d, out: 4, kernel: 3, padding: 1}
  b: {op: conv2d, out: 4, kernel: 3, padding: 1}
  c: {op: conv2d, out: 4, kernel: 1, from: b}
"""


def test_an_entry_that_reads_another_entry_is_a_change(tmp_path):
    """``c`` reading ``a`` instead of ``b``: the same layers and shapes, another network (it was
    'no differences'); the reader is named with what it reads on each side."""
    a = _compile(tmp_path, WIRED, "a.yaml")
    b = _compile(tmp_path, WIRED.replace("from: b}", "from: a}"), "b.yaml")
    diff = compare(a, b)
    assert [(e.name, e.status) for e in diff.entries] == [("c", "changed")]
    assert as_dict(diff)["entries"][0]["changes"] == [{"what": "reads", "key": "", "a": ["b"], "b": ["a"]}]
    assert "~ c (conv2d): reads b -> a" in render(diff) and "no differences" not in render(diff)
    assert not diff.same_architecture


def test_what_reads_an_inserted_or_renamed_entry_is_not_a_change(tmp_path):
    """An entry put before ``b`` is the one change (``b`` now reads it); a renamed ``b`` is read by
    ``c`` under its new name, and only the rename is listed."""
    a = _compile(tmp_path, WIRED, "a.yaml")
    inserted = _compile(tmp_path, WIRED.replace("  b:", "  act: relu\n  b:"), "inserted.yaml")
    assert _statuses(compare(a, inserted)) == {"act": "added"}
    renamed = _compile(tmp_path, WIRED.replace("  b:", "  bb:").replace("from: b}", "from: bb}"), "renamed.yaml")
    assert _statuses(compare(a, renamed)) == {"bb": "renamed"}


def test_architectures_that_differ_are_never_no_differences(tmp_path):
    """Where no entry shows a difference but the hashes differ, the text says the architectures do."""
    import dataclasses

    a = _compile(tmp_path, WIRED, "a.yaml")
    diff = dataclasses.replace(compare(a, a), hashes=("1111", "2222"))
    assert diff.entries == () and "no differences" not in render(diff)
    assert "the architectures do: hash 1111 -> 2222" in render(diff)


NULL_ARG = """\
nasdsl: 1
name: N
input: {shape: [4, 8, 8]}
templates:
  P:
    params: [{pad: 1}]
    body:
      c: {op: conv2d, out: 4, kernel: 3, padding: pad}
  Q:
    params: [{pad: 1}, {p: 0.5}]
    body:
      c: {op: conv2d, out: 4, kernel: 3, padding: pad}
      d: {op: dropout, p: p}
model:
  a: {use: P, args: [1]}
"""


def test_an_argument_given_null_is_told_from_one_that_is_absent(tmp_path):
    """``pad 1 -> null`` (given null: the convolution unpadded) and ``p (none) -> 0.5`` (the other
    template has no such parameter); the JSON says which side lacks the argument."""
    a = _compile(tmp_path, NULL_ARG, "a.yaml")
    diff = compare(a, _compile(tmp_path, NULL_ARG.replace("args: [1]", "args: [null]"), "b.yaml"))
    assert "~ a (P): pad 1 -> null; output 4x8x8 -> 4x6x6" in render(diff)
    assert as_dict(diff)["entries"][0]["changes"][0] == {"what": "arg", "key": "pad", "a": 1, "b": None}
    diff = compare(a, _compile(tmp_path, NULL_ARG.replace("use: P, args: [1]", "use: Q, args: [1]"), "c.yaml"))
    assert "p (none) -> 0.5" in render(diff)
    (p,) = [c for c in as_dict(diff)["entries"][0]["changes"] if c["key"] == "p"]
    assert p == {"what": "arg", "key": "p", "a": None, "b": 0.5, "absent": ["a"]}


#: a merge of refs to other entries, an entry reading a node inside a template's use, an output head
MERGED = """\
nasdsl: 1
name: Merged
input: {shape: [4, 8, 8]}
templates:
  Two:
    params: [c]
    body:
      inner: {op: conv2d, out: c, kernel: 3, padding: 1}
      other: {op: conv2d, out: c, kernel: 3, padding: 1}
model:
  a: {op: conv2d, out: 4, kernel: 3, padding: 1}
  b: {op: conv2d, out: 4, kernel: 3, padding: 1}
  blk: {use: Two, args: [4]}
  cat: {concat: [{ref: a}, {ref: b}]}
  d: {op: conv2d, out: 8, kernel: 1, from: blk.inner}
  f: {concat: [{ref: cat}, {ref: d}]}
outputs:
  main: {from: f}
  aux: {from: b}
"""


@pytest.mark.parametrize(
    ("old", "new", "line"),
    [
        # a merge's refs are what it reads: their order, or another entry (it was 'no entry differs')
        ("{concat: [{ref: a}, {ref: b}]}", "{concat: [{ref: b}, {ref: a}]}", "~ cat (concat): reads a, b -> b, a"),
        ("{ref: b}]}", "{ref: blk.inner}]}", "~ cat (concat): reads a, b -> a, blk.inner"),
        # the same value twice: an identity inside the merge (it was only '1: identity added')
        ("{ref: b}]}", "{ref: a}]}", "~ cat (concat): reads a, b -> a, a; 1: identity added"),
        # a node inside an entry, by its path; blk.other is blk's output
        ("from: blk.inner}", "from: blk.other}", "~ d (conv2d): reads blk.inner -> blk"),
        ("from: blk.inner}", "from: a}", "~ d (conv2d): reads blk.inner -> a"),
    ],
)
def test_what_a_merge_or_a_from_path_reads_is_named(tmp_path, old, new, line):
    a = _compile(tmp_path, MERGED, "a.yaml")
    b = _compile(tmp_path, MERGED.replace(old, new, 1), "b.yaml")
    diff = compare(a, b)
    assert [e.name for e in diff.entries] == [line.split()[1]]
    assert line in render(diff).splitlines()


def test_what_reads_a_renamed_entry_or_a_node_inside_it_is_not_a_change(tmp_path):
    """An output's ``from`` and a ``from: blk.inner`` follow a rename (the output was listed as
    changed, 'from b -> from bb')."""
    a = _compile(tmp_path, MERGED, "a.yaml")
    text = (
        MERGED.replace("  b: {op", "  bb: {op")
        .replace("{ref: b}", "{ref: bb}")
        .replace("aux: {from: b}", "aux: {from: bb}")
    )
    assert _statuses(compare(a, _compile(tmp_path, text, "b.yaml"))) == {"bb": "renamed"}
    text = MERGED.replace("  blk: {use", "  blk2: {use").replace("from: blk.inner}", "from: blk2.inner}")
    assert _statuses(compare(a, _compile(tmp_path, text, "c.yaml"))) == {"blk2": "renamed"}
    moved = compare(a, _compile(tmp_path, MERGED.replace("aux: {from: b}", "aux: {from: a}"), "d.yaml"))
    assert as_dict(moved)["entries"][-1]["changes"] == [
        {"what": "outputs", "key": "aux", "a": "from b, loss weight 1", "b": "from a, loss weight 1"}
    ]


def test_an_argument_that_makes_the_same_layers_is_still_listed(tmp_path):
    """``pad`` null against 0 (the op's default): the same architecture, and the entry is listed
    with its argument, not hidden as 'named or wired otherwise' (it was '1 entries ... are not
    listed')."""
    a = _compile(tmp_path, NULL_ARG.replace("args: [1]", "args: [null]"), "a.yaml")
    diff = compare(a, _compile(tmp_path, NULL_ARG.replace("args: [1]", "args: [0]"), "b.yaml"))
    text = render(diff)
    assert diff.same_architecture and "~ a (P): pad null -> 0" in text
    assert "not listed" not in text
