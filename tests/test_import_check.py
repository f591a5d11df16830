"""``nasdsl import --check``: the generated model of an imported spec, holding the tensors the
import carried, against the source on one seeded random input (ONNX Runtime's run of an ONNX
file; the module itself for a PyTorch source). A reading of an op that computes otherwise (here
a Softmax handler put back as it was before opsets were read, which took a Softmax of opset 11
over a whole 4x6x6 map as one over its channels) is caught: exit 1, every output's figures, and
nothing written."""

from __future__ import annotations

import json
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from nasdsl.cli import main as cli_main
from nasdsl.importer import onnx_ops
from nasdsl.importer.ops_table import Lowered

NET = """\
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        return self.head(torch.flatten(x, 1))
"""


def _softmax_file(opset: int) -> onnx.ModelProto:
    """A padded 3x3 convolution of a 1x4x6x6 map and a Softmax with axis 1."""
    weight = np.random.default_rng(0).standard_normal((4, 4, 3, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "conv.weight"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Softmax", ["c"], ["y"], name="soft", axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])],
        [numpy_helper.from_array(weight, "conv.weight")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=7)


def test_an_onnx_import_is_checked_against_onnx_runtime(tmp_path, capsys):
    onnx.save(_softmax_file(13), tmp_path / "m.onnx")
    assert cli_main(["import", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "m.yaml"), "--check"]) == 0
    out = capsys.readouterr().out
    assert "check: 1 output against ONNX Runtime's run of the file: largest difference" in out
    assert (tmp_path / "m.yaml").exists() and not list(tmp_path.glob("*.safetensors"))  # no --weights: none
    assert (
        cli_main(["import", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "j.yaml"), "--check", "--format", "json"])
        == 0
    )
    check = json.loads(capsys.readouterr().out)["check"]
    assert check["against"] == "onnxruntime" and check["outputs"] == 1 and check["tolerance"] == 1e-4
    assert 0 <= check["largest_relative_difference"] < 1e-5


def test_a_pytorch_import_is_checked_against_the_module_whose_tensors_it_carries(tmp_path, monkeypatch, capsys):
    (tmp_path / "checknets.py").write_text(NET)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "checknets", raising=False)
    argv = ["import", "module:checknets:Net", "-o", "net.yaml", "--input-shape", "1,8,8", "--check"]
    assert cli_main([*argv, "--weights", "net.safetensors"]) == 0
    out = capsys.readouterr().out
    assert "check: 1 output against the source model: largest difference" in out
    assert (tmp_path / "net.yaml").exists() and (tmp_path / "net.safetensors").exists()


def test_an_import_that_computes_otherwise_is_refused_with_its_figures(tmp_path, monkeypatch, capsys):
    """The Softmax of opset 11 over a 4x6x6 map, read by a handler that takes it as a channel
    softmax (what the importer did before it read opsets): the import itself succeeds, and the
    check stops it."""

    def misread(view, node):
        return onnx_ops.Match(Lowered("softmax"), [node.input[0]], node.output[0], [node])

    monkeypatch.setitem(onnx_ops.PATTERNS, "Softmax", [misread])
    onnx.save(_softmax_file(11), tmp_path / "m.onnx")
    base = ["import", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "m.yaml"), "--weights", str(tmp_path / "w.pt")]
    assert cli_main(base) == 0  # without --check the misreading is written
    capsys.readouterr()
    (tmp_path / "m.yaml").unlink()
    (tmp_path / "w.pt").unlink()
    assert cli_main([*base, "--check"]) == 1
    err = capsys.readouterr().err
    assert "output 0: relative error" in err and ": FAILED" in err
    assert "computes otherwise than" in err and "(--check); nothing written" in err
    assert not (tmp_path / "m.yaml").exists() and not (tmp_path / "w.pt").exists()


@pytest.mark.parametrize("name", ["squeezenet1_1"])
def test_a_torchvision_import_is_checked(tmp_path, capsys, name):
    assert cli_main(["import", f"torchvision:{name}", "-o", str(tmp_path / "t.yaml"), "--check"]) == 0
    assert "check: 1 output against the source model" in capsys.readouterr().out
