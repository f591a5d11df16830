"""Templates with several inputs (issue 23): a cell that reads the two cells before it, in a
`repeat` that names its previous values, at several widths, in every tool and both backends.

The reference is written here by hand from the example's definition
(docs/examples/two_input_cells.yaml): functional PyTorch on the generated model's state_dict, so
that the generated classes, their wiring and their parameter names are all checked."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import nasdsl
from nasdsl.backends.pytorch import generate_source, model_class
from nasdsl.backends.verify import verify
from nasdsl.cli import main

from paths import ROOT

EXAMPLE = ROOT / "docs" / "examples" / "two_input_cells.yaml"


@pytest.fixture(scope="module")
def net():
    return nasdsl.compile_spec(EXAMPLE)


def _bn(x, sd, key):
    return F.batch_norm(
        x, sd[f"{key}.running_mean"], sd[f"{key}.running_var"], sd[f"{key}.weight"], sd[f"{key}.bias"], eps=1e-5
    )


def _relu_conv_bn(x, sd, key):
    return _bn(F.conv2d(F.relu(x), sd[f"{key}.1.weight"]), sd, f"{key}.2")


def _cell(s0, s1, sd, key):
    """The example's cell: both inputs to C channels, n0 = their sum, n1 = conv3x3(n0) + pre1."""
    pre0 = _relu_conv_bn(s0, sd, f"{key}.pre0")
    pre1 = _relu_conv_bn(s1, sd, f"{key}.pre1")
    n0 = pre0 + pre1
    n1 = F.conv2d(n0, sd[f"{key}.n1.conv.weight"], padding=1) + pre1
    return torch.cat([n0, n1], 1)


def _reference(x, sd):
    """The network as its definition reads: s0 and s1 are the two values before each cell."""
    stem = _bn(F.conv2d(x, sd["stem.0.weight"], padding=1), sd, "stem.1")
    s0 = s1 = stem  # before the first cell, both are the stem's output
    for i in range(2):
        s0, s1 = s1, _cell(s0, s1, sd, f"stage1.{i}")
    wide = _cell(s0, s1, sd, "wide")  # stage1.s0 (the first cell) and stage1.s1 (the second)
    s0, s1 = s1, wide  # stage2 reads [stage1, wide] first
    for i in range(2):
        s0, s1 = s1, _cell(s0, s1, sd, f"stage2.{i}")
    pooled = s1.mean((2, 3))
    return F.linear(pooled, sd["fc.weight"], sd["fc.bias"])


def _randomised(model: torch.nn.Module) -> dict:
    torch.manual_seed(0)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand_like(t) + 0.5 if "running_var" in name else torch.randn_like(t))
    return model.state_dict()


def test_the_generated_model_computes_the_hand_written_network(net):
    model = model_class(net.graph)().eval()
    sd = _randomised(model)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        got, want = model(x), _reference(x, sd)
    assert (got - want).abs().max() / want.abs().max() < 1e-5
    # one class for the cell at three widths and four input widths, its forward taking both inputs
    source = generate_source(net.graph)
    assert source.count("class Cell(nn.Module)") == 1
    assert "def __init__(self, s0_channels: int, s1_channels: int, C: int) -> None:" in source
    assert "def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:" in source
    assert "self.stage1 = nn.ModuleList([Cell(24, 24, 8), Cell(24, 16, 8)])" in source
    assert "self.wide = Cell(16, 16, 16)" in source


def test_onnx_agrees_with_pytorch(net):
    result = verify(net.graph, batch=2)
    assert result.ok, result


def test_summary_counts_each_cell_once(net):
    # parameters by hand: a ReLUConvBN(c_in, C) has c_in*C + 2C; a cell's 3x3 convolution C*C*9
    def cell(c0, c1, c):
        return c0 * c + 2 * c + c1 * c + 2 * c + 9 * c * c

    stem = 3 * 24 * 9 + 2 * 24
    cells = cell(24, 24, 8) + cell(24, 16, 8) + cell(16, 16, 16) + cell(16, 32, 16) + cell(32, 32, 16)
    assert net.summary()["totals"]["params"] == stem + cells + 32 * 10 + 10


#: the cell's errors, each located where it is written
BAD = [
    (
        "  wide: {use: Cell, args: [C]}\n",
        "model.wide.use: template Cell reads 2 inputs (s0, s1): give them in order, 'from: [a, b]', got 1",
    ),
    (
        "  wide: {use: Cell, args: [C], from: [stem, stem, stem]}\n",
        "model.wide.from: template Cell reads 2 inputs (s0, s1): give them in order, 'from: [a, b]', got 3",
    ),
    (
        "  wide: {use: ReLUConvBN, args: [C], from: [stem, stem]}\n",
        "model.wide.from: template ReLUConvBN reads one input, got 2",
    ),
    (
        "  wide: {use: Cell, args: [C], from: [stem, stme]}\n",
        "model.wide.from[1]: no node named 'stme' before this point",
    ),
    ("  wide: {op: relu, from: [stem, stem]}\n", "model.wide.from: expected one name after 'from'"),
    ("  wide: {use: Cell, args: [C], from: [stem]}\n", "model.wide.from: expected a name, or a list of two or more"),
    (
        "  wide: {repeat: 2, from: [stem, stem], block: {use: Cell, args: [C]}}\n",
        "model.wide.from: expected 'previous' beside a list after 'from'",
    ),
    (
        "  wide: {repeat: 2, previous: [a, b, c], from: [stem, stem], block: relu}\n",
        "model.wide.from: expected as many values after 'from' as names in 'previous' (3), got 2",
    ),
    ("  wide: {repeat: 2, previous: [stem, b], block: relu}\n", "'stem' in 'previous' is already the name of a value"),
]


@pytest.mark.parametrize(("entry", "message"), BAD, ids=[str(i) for i in range(len(BAD))])
def test_wrong_inputs_are_located_errors(tmp_path, capsys, entry, message):
    text = EXAMPLE.read_text()
    start = text.index("  wide:")
    path = tmp_path / "bad.yaml"
    path.write_text(text[:start] + entry + text[text.index("  stage2:") :])
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:" in err and message in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("from: s1}", "from: s2}", "templates.Cell.body.pre1.from: no node named 's2' before this point"),
        ("from: s1}", "from: in}", "'in' is ambiguous in template Cell, which reads several inputs (s0, s1)"),
        ("inputs: [s0, s1]", "inputs: [s0, pre0]", "templates.Cell.inputs[1]: input name 'pre0' is also an entry"),
        ("inputs: [s0, s1]", "inputs: [s0, C]", "templates.Cell.inputs[1]: input name 'C' is also a parameter"),
        ("inputs: [s0, s1]", "inputs: [s0]", "templates.Cell.inputs: expected a list of two or more names"),
    ],
)
def test_wrong_input_names_are_located_errors(tmp_path, capsys, old, new, message):
    path = tmp_path / "bad.yaml"
    path.write_text(EXAMPLE.read_text().replace(old, new, 1))
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err


def test_every_tool_reads_cells_of_two_inputs(tmp_path, capsys):
    """space (with --pick), sweep, diff, transfer and draw on a space whose choice is the cell's width."""
    space = tmp_path / "space.yaml"
    space.write_text(EXAMPLE.read_text().replace("  C: 8", "  C: {choice: [4, 8]}", 1))
    assert main(["space", str(space), "--format", "json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [v["params"] for v in listed["variants"]] == [
        nasdsl.compile_spec(EXAMPLE, {"C": c}).summary()["totals"]["params"] for c in (4, 8)
    ]
    assert main(["space", str(space), "--pick", "0", "-o", str(tmp_path / "v.yaml")]) == 0
    picked = nasdsl.compile_spec(tmp_path / "v.yaml")
    assert picked.summary()["totals"] == nasdsl.compile_spec(EXAMPLE, {"C": 4}).summary()["totals"]
    assert main(["sweep", str(EXAMPLE), "--set", "C=[4,8]"]) == 0
    assert "2 listed" in capsys.readouterr().out
    assert main(["diff", str(EXAMPLE), str(tmp_path / "v.yaml")]) == 0
    assert "~ wide (Cell): C 16 -> 8; input 16x16x16, 16x16x16 -> 8x16x16, 8x16x16" in capsys.readouterr().out
    weights = tmp_path / "w.pt"
    torch.save(model_class(nasdsl.compile_spec(EXAMPLE).graph)().state_dict(), weights)
    out = tmp_path / "child.pt"
    argv = ["transfer", "--to", str(tmp_path / "v.yaml"), "--from", str(EXAMPLE), "--weights", str(weights)]
    assert main([*argv, "-o", str(out)]) == 0
    child = model_class(picked.graph)()
    child.load_state_dict(torch.load(out))  # every tensor has the child's shape
    assert main(["draw", str(EXAMPLE), "-o", str(tmp_path / "net.dot")]) == 0
    dot = (tmp_path / "net.dot").read_text()
    # the cell's inputs are drawn as edges from the values they are: the second cell reads the stem
    # (s0) and the first cell (s1)
    assert '"stem.1" -> "stage1.1.pre0.0"' in dot and '"stage1.0.out" -> "stage1.1.pre1.0"' in dot


def test_the_inference_build_computes_the_same(net):
    """`compile --optimize`: BatchNorm folded into the convolutions of every cell, the cell still one
    class whose forward takes both inputs."""
    from nasdsl.optimize import build_inference

    model = model_class(net.graph)().eval()
    sd = _randomised(model)
    inference = build_inference(net.graph, True, sd)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        got, want = inference(x), _reference(x, sd)
    assert (got - want).abs().max() / want.abs().max() < 1e-5
    assert not any("running_mean" in k for k in inference.state_dict())  # the norms were folded
