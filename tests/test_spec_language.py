"""The spec language end to end: each feature compiled, and the graph it gives
(node names, ops, shapes, the order of each node's inputs) compared with what
was worked out by hand from the spec text. The arithmetic is in the comments.
"""

from __future__ import annotations

import builtins
import textwrap
from pathlib import Path

import pytest

import nasdsl
from nasdsl import ir
from nasdsl.errors import NasdslError, SpecError
from nasdsl.passes.phases import inference_graph, training_graph

ROOT = Path(__file__).resolve().parent.parent
GOOGLENET = ROOT / "specs" / "googlenet.yaml"


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def compile_text(folder: Path, text: str, overrides=()) -> nasdsl.Compiled:
    return nasdsl.compile_spec(write(folder, "spec.yaml", text), overrides)


def nodes(net: nasdsl.Compiled) -> list[tuple[str, str, tuple[int, ...], list[str]]]:
    """(name, op, shape, inputs in order) of every node, in the graph's order."""
    g = net.graph
    return [(n, d.op, d.shape, ir.inputs(g, n)) for n, d in ir.nodes(g)]


def shapes(net: nasdsl.Compiled) -> dict[str, tuple[int, ...]]:
    return {n: d.shape for n, d in ir.nodes(net.graph)}


# --------------------------------------------------------------------------- variables and expressions

EXPRESSIONS = """
name: Net
input: {shape: [3, 16, 16]}
variables:
  base: 16
  width: base * 2 + 8
  kernel: 3
  pad: (kernel - 1) // 2
  wide: width > 32
model:
  conv: {op: conv2d, out: width // 4, kernel: kernel, padding: pad}
  pool: {op: max_pool, kernel: 2 ** 1}
  mix: {op: conv2d, out: "max(2, width - 38) if wide else 1", kernel: 1}
"""


def test_variables_and_arithmetic(tmp_path: Path) -> None:
    net = compile_text(tmp_path, EXPRESSIONS)
    # width = 16 * 2 + 8 = 40; pad = (3 - 1) // 2 = 1; out = 40 // 4 = 10, 16x16 kept by the padding;
    # the pool halves it; wide = 40 > 32, so mix has max(2, 40 - 38) = 2 filters
    assert ir.info(net.graph).variables == {"base": 16, "width": 40, "kernel": 3, "pad": 1, "wide": True}
    assert nodes(net) == [
        ("x", "input", (3, 16, 16), []),
        ("conv", "conv2d", (10, 16, 16), ["x"]),
        ("pool", "max_pool", (10, 8, 8), ["conv"]),
        ("mix", "conv2d", (2, 8, 8), ["pool"]),
    ]
    assert ir.node(net.graph, "conv").attrs["padding"] == (1, 1)


def test_expressions_are_never_evaluated_by_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("eval/exec called")

    monkeypatch.setattr(builtins, "eval", refuse)
    monkeypatch.setattr(builtins, "exec", refuse)
    assert shapes(compile_text(tmp_path, EXPRESSIONS))["mix"] == (2, 8, 8)


@pytest.mark.parametrize(
    "text",
    ["__import__('os').system('true')", "().__class__", "open('spec.yaml')", "[x for x in (1,)]", "lambda: 1"],
)
def test_python_is_not_an_expression(tmp_path: Path, text: str) -> None:
    spec = EXPRESSIONS.replace("width // 4", text.replace("'", "''").join("''"))
    with pytest.raises(SpecError) as e:
        compile_text(tmp_path, spec)
    assert e.value.path == "model.conv.out"


def test_set_of_a_variable(tmp_path: Path) -> None:
    # base = 8: width = 8 * 2 + 8 = 24, conv out 24 // 4 = 6; wide = 24 > 32 is false, so mix has 1 filter
    for overrides in (["base=8"], {"base": 8}):
        got = shapes(compile_text(tmp_path, EXPRESSIONS, overrides))
        assert (got["conv"], got["mix"]) == ((6, 16, 16), (1, 8, 8))
    # a later variable set directly no longer follows the one it was computed from
    got = shapes(compile_text(tmp_path, EXPRESSIONS, ["width=100"]))
    assert (got["conv"], got["mix"]) == ((25, 16, 16), (62, 8, 8))


# --------------------------------------------------------------------------- --set on GoogLeNet


def test_set_of_a_template_argument() -> None:
    net = nasdsl.compile_spec(GOOGLENET, ["inception4a.c3x3=256"])
    s = shapes(net)
    assert ir.node(net.graph, "inception4a.branch2.1.conv").attrs["out"] == 256
    # the concat joins 192 (1x1) + 256 (3x3) + 48 (5x5) + 64 (pool proj) channels
    assert s["inception4a"] == (192 + 256 + 48 + 64, 14, 14)
    # every branch of 4b reads that map
    for branch in ("branch1.conv", "branch2.0.conv", "branch3.0.conv", "branch4.0"):
        assert ir.inputs(net.graph, f"inception4b.{branch}") == ["inception4a"]
    assert s["inception4b"] == (512, 14, 14)
    # 4b's three 1x1 convolutions that read the map (160, 112 and 24 filters) and its pool
    # projection (64 filters) each gain one weight per filter for each of the 48 new channels
    before = {r["name"]: r["params"] for r in nasdsl.compile_spec(GOOGLENET).summary()["rows"]}
    after = {r["name"]: r["params"] for r in net.summary()["rows"]}
    assert after["inception4b"] - before["inception4b"] == (160 + 112 + 24 + 64) * 48
    assert after["inception4a"] - before["inception4a"] == (256 - 208) * (96 * 9 + 1)
    # the auxiliary head on 4a reads the wider map too
    assert s["aux1.conv.conv"] == (128, 4, 4)


def test_set_of_an_op_attribute_and_a_section_path() -> None:
    net = nasdsl.compile_spec(GOOGLENET, ["fc.out=10", "maxpool4.kernel=2", "variables.dropout=0.5"])
    s = shapes(net)
    assert s["fc"] == (10,) and s["aux1.fc2"] == (1000,)  # the heads keep num_classes
    # 14 -> ceil((14 - 2) / 2) + 1 = 7 with a 2x2 window as with the 3x3 one
    assert ir.node(net.graph, "maxpool4").attrs["kernel"] == (2, 2) and s["maxpool4"] == (832, 7, 7)
    assert ir.node(net.graph, "dropout").attrs["p"] == 0.5


def test_set_of_a_variable_that_switches_outputs_off() -> None:
    net = nasdsl.compile_spec(GOOGLENET, {"aux_logits": False, "num_classes": 10})
    assert [o.name for o in ir.info(net.graph).outputs] == ["logits"]
    assert not [n for n in net.graph if n.startswith("aux")]
    assert shapes(net)["fc"] == (10,)


# --------------------------------------------------------------------------- sequences, names, refs


def test_named_and_list_sequences_name_the_nodes() -> None:
    g = nasdsl.compile_spec(GOOGLENET).graph
    # named: template body keys; list: positions
    branch2 = [n for n in g if n.startswith("inception4a.branch2.")]
    assert branch2 == [
        "inception4a.branch2.0.conv",
        "inception4a.branch2.0.relu",
        "inception4a.branch2.1.conv",
        "inception4a.branch2.1.relu",
    ]
    assert [n for n in g if n.startswith("inception4a.branch4.")] == [
        "inception4a.branch4.0",
        "inception4a.branch4.1.conv",
        "inception4a.branch4.1.relu",
    ]
    assert ir.node(g, "inception4a.branch4.0").op == "max_pool"
    # the concat reads the last node of each branch, in the order the branches are written
    assert ir.inputs(g, "inception4a") == [
        "inception4a.branch1.relu",
        "inception4a.branch2.1.relu",
        "inception4a.branch3.1.relu",
        "inception4a.branch4.1.relu",
    ]
    assert ir.node(g, "inception4a.branch2.1.conv").scope == ("Inception", "BasicConv2d")


REFS = """
name: Net
input: {shape: [3, 16, 16], mean: 0.5, std: [0.25, 0.5, 1]}
variables:
  use_bn: false
templates:
  Residual:
    params: [c, {k: 3}]
    body:
      add:
        main:
          - {op: conv2d, out: c, kernel: k, padding: (k - 1) // 2}
          - {op: batch_norm, when: use_bn}
          - relu
        skip: identity
  Dense:
    params: [growth]
    body:
      conv: {op: conv2d, out: growth, kernel: 1}
      cat:
        concat:
          - {ref: conv}
          - {op: conv2d, out: growth, kernel: 3, padding: 1}
model:
  stem: {op: conv2d, out: 8, kernel: 3, padding: 1}
  res: {use: Residual, args: [8]}
  back:
    add: [{ref: stem}, identity]
  dense: {use: Dense, args: {growth: 4}}
  widen:
    concat:
      old: {ref: back}
      new: {ref: dense}
"""


def test_refs_residual_add_and_dense_concat(tmp_path: Path) -> None:
    net = compile_text(tmp_path, REFS)
    assert nodes(net) == [
        ("x", "input", (3, 16, 16), []),
        ("stem", "conv2d", (8, 16, 16), ["x"]),
        # use_bn is false: the batch norm is skipped, its neighbours keep their positions
        ("res.main.0", "conv2d", (8, 16, 16), ["stem"]),
        ("res.main.2", "relu", (8, 16, 16), ["res.main.0"]),
        ("res.skip", "identity", (8, 16, 16), ["stem"]),
        ("res", "add", (8, 16, 16), ["res.main.2", "res.skip"]),
        # a ref adds no node: the add reads stem directly, then its own second branch
        ("back.1", "identity", (8, 16, 16), ["res"]),
        ("back", "add", (8, 16, 16), ["stem", "back.1"]),
        # inside a template a ref names a node of that template: dense.conv
        ("dense.conv", "conv2d", (4, 16, 16), ["back"]),
        ("dense.cat.1", "conv2d", (4, 16, 16), ["dense.conv"]),
        ("dense.cat", "concat", (4 + 4, 16, 16), ["dense.conv", "dense.cat.1"]),
        ("widen", "concat", (8 + 8, 16, 16), ["back", "dense.cat"]),
    ]
    rows = net.summary()["rows"]
    assert [(r["name"], r["kind"]) for r in rows] == [
        ("stem", "conv2d"),
        ("res", "Residual"),
        ("back", "add"),
        ("dense", "Dense"),
        ("widen", "concat"),
    ]


def test_when_switches_a_block_on(tmp_path: Path) -> None:
    net = compile_text(tmp_path, REFS, ["use_bn=true"])
    assert ir.inputs(net.graph, "res.main.1") == ["res.main.0"]
    assert ir.inputs(net.graph, "res.main.2") == ["res.main.1"]
    assert ir.node(net.graph, "res.main.1").op == "batch_norm"


def test_input_mean_and_std(tmp_path: Path) -> None:
    attrs = ir.node(compile_text(tmp_path, REFS).graph, "x").attrs
    # one mean for every channel; one std per channel
    assert attrs == {"shape": (3, 16, 16), "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.5, 1.0)}


# --------------------------------------------------------------------------- outputs, heads and phases

HEADS = """
name: Net
input: {shape: [3, 8, 8]}
variables:
  side: true
model:
  conv: {op: conv2d, out: 6, kernel: 3}
  pool: global_avg_pool
  flat: flatten
  drop: {op: dropout, p: 0.2}
  fc: {op: linear, out: 5}
  prob: {op: softmax, phase: eval}
outputs:
  logits: {from: prob}
  aux:
    from: conv
    head:
      flat: flatten
      fc: {op: linear, out: 2}
    loss_weight: 0.25
    training_only: true
    when: side
"""


def test_outputs_with_heads(tmp_path: Path) -> None:
    net = compile_text(tmp_path, HEADS)
    g = net.graph
    # conv 8 - 3 + 1 = 6: 6x6x6 = 216 features into the head
    assert [(n, d.phase) for n, d in ir.nodes(g) if n.startswith("aux")] == [
        ("aux.flat", "train"),
        ("aux.fc", "train"),
    ]
    assert ir.inputs(g, "aux.flat") == ["conv"] and shapes(net)["aux.flat"] == (216,)
    outputs = ir.info(g).outputs
    assert [(o.name, o.node, o.loss_weight, o.training_only) for o in outputs] == [
        ("logits", "prob", 1.0, False),
        ("aux", "aux.fc", 0.25, True),
    ]
    # params: conv 6*3*9 + 6 = 168, fc 6*5 + 5 = 35; the head 216*2 + 2 = 434 counts only with_aux
    assert net.summary()["totals"]["params"] == 168 + 35
    assert net.summary(with_aux=True)["totals"]["params"] == 168 + 35 + 434
    assert [r["name"] for r in net.summary(with_aux=True)["rows"]][-1] == "aux"
    # switched off
    off = compile_text(tmp_path, HEADS, ["side=false"])
    assert [o.name for o in ir.info(off.graph).outputs] == ["logits"]
    assert "aux.fc" not in off.graph


def test_phases(tmp_path: Path) -> None:
    g = compile_text(tmp_path, HEADS).graph
    assert ir.node(g, "prob").phase == "eval"
    # inference: no training-only head, no dropout, the softmax stays
    inf = inference_graph(g)
    assert list(inf) == ["x", "conv", "pool", "flat", "fc", "prob"]
    assert ir.inputs(inf, "fc") == ["flat"]
    assert [o.name for o in ir.info(inf).outputs] == ["logits"]
    # training: the softmax is bypassed, so the main output is the logits of fc
    train = training_graph(g)
    assert "prob" not in train and "drop" in train and "aux.fc" in train
    assert [(o.name, o.node) for o in ir.info(train).outputs] == [("logits", "fc"), ("aux", "aux.fc")]


def test_a_train_phase_layer_on_the_main_path_is_bypassed_at_inference(tmp_path: Path) -> None:
    g = compile_text(
        tmp_path,
        """
        name: Net
        input: {shape: [3, 8, 8]}
        model:
          norm: {op: batch_norm, phase: train}
          conv: {op: conv2d, out: 4, kernel: 1}
          prob: {op: softmax, phase: eval}
        outputs:
          probs: {from: prob}
        """,
    ).graph
    inf = inference_graph(g)
    assert list(inf) == ["x", "conv", "prob"] and ir.inputs(inf, "conv") == ["x"]
    train = training_graph(g)
    assert list(train) == ["x", "norm", "conv"] and ir.inputs(train, "conv") == ["norm"]
    assert [(o.name, o.node) for o in ir.info(train).outputs] == [("probs", "conv")]


# --------------------------------------------------------------------------- extends


BASE = """
name: Base
doc: the base
input: {shape: [3, 8, 8], mean: [1, 2, 3]}
variables:
  width: 4
  classes: 10
templates:
  Unit:
    params: [c]
    body:
      conv: {op: conv2d, out: c, kernel: 3, padding: 1}
      relu: relu
model:
  a: {use: Unit, args: [width]}
  b: {use: Unit, args: [width * 2]}
  c: {op: max_pool, kernel: 2}
  pool: global_avg_pool
  flat: flatten
  fc: {op: linear, out: classes}
"""

DERIVED = """
extends: base.yaml
name: Derived
input:
  mean: null
variables:
  width: 6
templates:
  Unit:
    params: [c]
    body:
      conv: {op: conv2d, out: c, kernel: 1, bias: false}
      bn: batch_norm
model:
  b: {op: conv2d, out: 5, kernel: 3, padding: 1}
  c: null
  drop: {op: dropout, p: 0.1}
"""


def test_extends_overrides_deletes_and_appends(tmp_path: Path) -> None:
    write(tmp_path, "base.yaml", BASE)
    base = nasdsl.compile_spec(tmp_path / "base.yaml")
    assert [n for n, *_ in nodes(base)] == ["x", "a.conv", "a.relu", "b.conv", "b.relu", "c", "pool", "flat", "fc"]
    net = nasdsl.compile_spec(write(tmp_path, "derived.yaml", DERIVED))
    # name replaced, doc inherited; the template replaced whole (its body is new);
    # model entry b replaced whole in its place, c deleted, drop appended at the end;
    # width 6 from the derived file, classes 10 from the base
    assert (net.spec.name, net.spec.doc) == ("Derived", "the base")
    assert nodes(net) == [
        ("x", "input", (3, 8, 8), []),
        ("a.conv", "conv2d", (6, 8, 8), ["x"]),
        ("a.bn", "batch_norm", (6, 8, 8), ["a.conv"]),
        ("b", "conv2d", (5, 8, 8), ["a.bn"]),
        ("pool", "global_avg_pool", (5, 1, 1), ["b"]),
        ("flat", "flatten", (5,), ["pool"]),
        ("fc", "linear", (10,), ["flat"]),
        ("drop", "dropout", (10,), ["fc"]),
    ]
    assert ir.node(net.graph, "a.conv").attrs["bias"] is False
    # input: shape inherited, mean deleted
    assert ir.node(net.graph, "x").attrs == {"shape": (3, 8, 8), "mean": None, "std": None}
    assert net.spec.files == (str(tmp_path / "derived.yaml"), str(tmp_path / "base.yaml"))


def test_set_applies_after_extends(tmp_path: Path) -> None:
    write(tmp_path, "base.yaml", BASE)
    net = nasdsl.compile_spec(write(tmp_path, "derived.yaml", DERIVED), ["width=3", "classes=7", "a.c=2"])
    # a.c=2 sets Unit's argument of entry a; it wins over width
    assert shapes(net)["a.conv"] == (2, 8, 8) and shapes(net)["fc"] == (7,)


def test_deleting_an_entry_others_refer_to_is_reported(tmp_path: Path) -> None:
    write(tmp_path, "base.yaml", REFS)
    write(tmp_path, "derived.yaml", "extends: base.yaml\nmodel:\n  stem: null\n")
    with pytest.raises(NasdslError) as e:
        nasdsl.compile_spec(tmp_path / "derived.yaml")
    assert e.value.path == "model.back[0].ref"
    assert e.value.message == "no node named 'stem' before this point"


# --------------------------------------------------------------------------- width multiplier

MOBILE = """
name: Net
input: {shape: [3, 8, 8]}
variables:
  width: 1.0
templates:
  Conv:
    params: [c]
    body: {op: conv2d, out: make_divisible(c * width), kernel: 1}
model:
  c1: {use: Conv, args: [32]}
  c2: {use: Conv, args: [24]}
  c3: {use: Conv, args: [100]}
"""


@pytest.mark.parametrize(
    ("width", "expected"),
    [
        # make_divisible(v, 8): v rounded to the nearest multiple of 8, at least 8, never below 0.9 v
        (1.0, (32, 24, 104)),  # 100 -> 104
        (0.75, (24, 24, 72)),  # 24 * 0.75 = 18 -> 16 < 0.9 * 18 = 16.2, so 24; 75 -> 72
        (0.5, (16, 16, 48)),  # 12 -> 16; 50 -> 48
        (0.25, (8, 8, 24)),  # 8 -> 8; 6 -> 8 (at least 8); 25 -> 24
    ],
)
def test_width_multiplier(tmp_path: Path, width: float, expected: tuple[int, int, int]) -> None:
    net = compile_text(tmp_path, MOBILE, [f"width={width}"])
    assert tuple(shapes(net)[n][0] for n in ("c1", "c2", "c3")) == expected
    assert [r["args"] for r in net.summary()["rows"]] == [{"c": 32}, {"c": 24}, {"c": 100}]


def test_the_init_table_documents_every_scheme_and_its_arguments() -> None:
    """docs/spec-language.md's init table, row by row, against the parser's schemes and arguments."""
    import re

    from nasdsl.spec import INIT_SCHEMES

    section = (ROOT / "docs" / "spec-language.md").read_text().split("\n## init\n", 1)[1].split("\n## ", 1)[0]
    documented: dict[str, set[str]] = {}
    for names, arguments in re.findall(r"^\| ((?:`\w+`(?:, )?)+) \|([^|]*)\|", section, re.M):
        for name in re.findall(r"`(\w+)`", names):  # an argument's name, then its default in parentheses
            documented[name] = set(re.findall(r"`(\w+)`", re.sub(r"\([^)]*\)", "", arguments)))
    assert documented == {scheme: set(args) for scheme, args in INIT_SCHEMES.items()}
