"""The `pad` op (issue 23: FactorizedReduce and friends): a constant border on the last axes, against
torch.nn.functional.pad written here and ONNX Runtime; and the spatial crop `x[:, :, 1:, 1:]` as
two `slice`s."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import nasdsl
from nasdsl.backends.pytorch import model_class
from nasdsl.backends.verify import verify
from nasdsl.cli import main

SPEC = """\
nasdsl: 1
name: Pads
input: {{shape: {shape}}}
model:
  out: {{op: pad, pads: {pads}, value: {value}}}
"""


def _net(tmp_path: Path, shape, pads, value=0.0):
    path = tmp_path / "pad.yaml"
    path.write_text(SPEC.format(shape=list(shape), pads=[list(p) for p in pads], value=value))
    return nasdsl.compile_spec(path)


@pytest.mark.parametrize(
    ("shape", "pads", "value"),
    [
        ((3, 5, 6), [(0, 1), (2, 0)], 0.5),  # height and width: nn.ConstantPad2d
        ((3, 5, 6), [(1, 2), (0, 1), (3, 0)], 0.0),  # the channels too
        ((7,), [(2, 3)], -1.0),  # flat features
        ((2, 3, 4, 5), [(1, 0), (0, 2), (1, 1), (0, 1)], 2.0),  # four axes: F.pad in a module of its own
    ],
)
def test_pad_is_torch_pad_in_both_backends(tmp_path, shape, pads, value):
    net = _net(tmp_path, shape, pads, value)
    x = torch.randn(2, *shape)
    torch_order = [n for pair in reversed(pads) for n in pair]  # F.pad's order: the last axis first
    want = F.pad(x, torch_order, value=value)
    assert net.summary()["rows"][0]["output"] == list(want.shape[1:])
    with torch.no_grad():
        got = model_class(net.graph)().eval()(x)
    assert torch.equal(got, want)
    result = verify(net.graph, batch=2)
    assert result.ok and all(c.max_abs == 0.0 for c in result.checks), result


def test_a_crop_by_two_slices_is_the_shifted_view(tmp_path):
    """FactorizedReduce's second path reads x[:, :, 1:, 1:]."""
    path = tmp_path / "crop.yaml"
    path.write_text(
        "nasdsl: 1\nname: Crop\ninput: {shape: [3, 6, 6]}\nmodel:\n"
        "  rows: {op: slice, start: 1, axis: 1}\n  cols: {op: slice, start: 1, axis: 2}\n"
    )
    net = nasdsl.compile_spec(path)
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        assert torch.equal(model_class(net.graph)()(x), x[:, :, 1:, 1:])
    assert verify(net.graph, batch=2).ok


@pytest.mark.parametrize(
    ("pads", "message"),
    [
        ("[[0, 1], [2]]", "model.out.pads: expected a pair [before, after] for each axis, got [2]"),
        ("[[0, -1]]", "model.out.pads: expected an integer"),
        ("[[0, 1], [0, 1], [0, 1], [0, 1]]", "expected at most 3 pairs in pads for a (C, H, W) map 3x5x6, got 4"),
        ("3", "model.out.pads: expected a list of 1 to"),
    ],
)
def test_malformed_pads_are_located_errors(tmp_path, capsys, pads, message):
    path = tmp_path / "bad.yaml"
    path.write_text(SPEC.format(shape=[3, 5, 6], pads=pads, value=0.0))
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:5:" in err and message in err and "Traceback" not in err, err
