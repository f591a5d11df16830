"""``nasdsl import`` of forms that were refused, each built here by hand and run against its source.

* PyTorch's functional layers given a module's tensors as their weights (``F.conv1d/2d/3d``,
  ``F.linear``, ``F.batch_norm`` at inference with the module's running statistics,
  ``F.layer_norm``): each is the layer of the module holding the tensors, its ``state_dict`` keys
  the spec's, run against the module (what ``--check`` runs); what a spec cannot hold is refused
  at the forward's line.
* ``nn.Conv1d/2d/3d`` with ``padding_mode`` reflect, replicate or circular: a ``pad`` in that mode
  before the convolution, which keeps the module's name (its ``state_dict`` keys); torch.onnx.export's
  ``Pad`` and ``Conv`` of one read back the same way.
* ONNX's ``DepthToSpace`` in both orders and ``SpaceToDepth``, run against ONNX Runtime at two
  opsets, and the channel orders pinned from the standard's definition.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
import torch
import yaml
from onnx import TensorProto, helper
from onnx_runs import agreement, run_ort
from torch import nn

from nasdsl.backends.verify import verify_import
from nasdsl.importer import import_model

HERE = __file__


def checked(source, shape=None):
    """The import of ``source`` with its tensors, run against the source (the module in eval,
    or ONNX Runtime's run of the file): what ``--check`` runs."""
    result = import_model(source, input_shape=shape, weights=True)
    verification = verify_import(result.compiled.graph, result.weights, result.reference or source)
    assert verification.ok and max(c.max_rel for c in verification.checks) <= 1e-5, verification
    return result


def model_of(result) -> dict:
    return yaml.safe_load(result.text)["model"]


# -- ONNX: DepthToSpace and SpaceToDepth -------------------------------------------------------


def _one_node(op: str, shape: list[int], opset: int, **attrs) -> onnx.ModelProto:
    node = helper.make_node(op, ["x"], ["y"], name="move", **attrs)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=7)


def test_the_channel_orders_are_the_standard_s():
    """Transcribed from the ONNX operator docs (DepthToSpace, SpaceToDepth): in DCR order input
    channel ``(i * r + j) * C + c`` fills position ``(i, j)`` of each block of output channel ``c``;
    in CRD order, channel ``c * r * r + i * r + j``; SpaceToDepth is DCR's inverse. On a map
    whose values are their own channel numbers, ONNX Runtime agrees, so the imports below are
    checked against these orders."""
    x = np.broadcast_to(np.arange(8, dtype=np.float32)[None, :, None, None], (1, 8, 1, 1)).copy()
    dcr = run_ort(_one_node("DepthToSpace", [1, 8, 1, 1], 13, blocksize=2), x)
    crd = run_ort(_one_node("DepthToSpace", [1, 8, 1, 1], 13, blocksize=2, mode="CRD"), x)
    assert dcr[0].tolist() == [[[0, 2], [4, 6]], [[1, 3], [5, 7]]]
    assert crd[0].tolist() == [[[0, 1], [2, 3]], [[4, 5], [6, 7]]]
    position = np.arange(2 * 2 * 2, dtype=np.float32).reshape(1, 2, 2, 2)  # channel c holds 4c + 2i + j
    down = run_ort(_one_node("SpaceToDepth", [1, 2, 2, 2], 13, blocksize=2), position)
    assert down[0, :, 0, 0].tolist() == [0, 4, 1, 5, 2, 6, 3, 7]


#: (op, input shape, attributes) -> the spec's reading
MOVES = [
    ("DepthToSpace", [1, 8, 3, 4], {"blocksize": 2}, ["reshape", "permute", "reshape"]),
    ("DepthToSpace", [1, 18, 2, 3], {"blocksize": 3, "mode": "DCR"}, ["reshape", "permute", "reshape"]),
    ("DepthToSpace", [1, 8, 3, 4], {"blocksize": 2, "mode": "CRD"}, ["pixel_shuffle"]),
    ("SpaceToDepth", [1, 3, 4, 6], {"blocksize": 2}, ["reshape", "permute", "reshape"]),
    ("SpaceToDepth", [1, 2, 6, 3], {"blocksize": 3}, ["reshape", "permute", "reshape"]),
]


@pytest.mark.parametrize("opset", [11, 13])
@pytest.mark.parametrize(("op", "shape", "attrs", "ops"), MOVES, ids=[f"{m[0]}-{m[2]}" for m in MOVES])
def test_depth_and_space_moves_compute_what_onnx_runtime_does(op, shape, attrs, ops, opset):
    proto = _one_node(op, shape, opset, **attrs)
    result = checked(proto)  # the generated PyTorch model against ONNX Runtime
    layers = model_of(result)
    assert [v["op"] for v in layers.values()] == ops, layers
    assert agreement(proto, result) <= 1e-6  # the spec's own ONNX export against the file


# -- PyTorch: convolutions with padding_mode -----------------------------------------------------


class Bordered(nn.Module):
    """A block of two convolutions, the first bordering by ``mode``, and a child named as the
    pad the importer would derive (``conv1_pad``), which keeps its own name."""

    def __init__(self, cin: int, cout: int, mode: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=(1, 2), dilation=(1, 2), padding_mode=mode)
        self.conv1_pad = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 2, padding="same", padding_mode=mode, bias=False)

    def forward(self, x):
        return self.conv2(self.conv1_pad(self.conv1(x)))


class Modes(nn.Module):
    """padding_mode reflect, replicate and circular over 2-D maps (a template of two uses), a
    sequence and a clip; a zero-padded and a 'valid' convolution of a non-zero mode stay one op."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, stride=2, padding=1, padding_mode="reflect")
        self.blocks = nn.Sequential(Bordered(4, 6, "replicate"), Bordered(6, 4, "replicate"))
        self.plain = nn.Conv2d(4, 4, 1, padding_mode="reflect")
        self.valid = nn.Conv2d(4, 4, 3, padding="valid", padding_mode="circular")
        self.line = nn.Conv1d(4, 3, 3, padding=2, dilation=2, padding_mode="circular")
        self.clip = nn.Conv3d(4, 2, (1, 3, 3), padding=(0, 1, 1), padding_mode="reflect")

    def forward(self, x):
        y = self.valid(self.plain(self.blocks(self.stem(x))))
        return self.line(y.flatten(2)), self.clip(y.unsqueeze(2))


@pytest.fixture(scope="module")
def modes():
    torch.manual_seed(3)
    net = Modes().eval()
    return net, checked(net, (3, 12, 14))


def test_padding_modes_are_a_pad_before_the_convolution(modes):
    net, result = modes
    spec = yaml.safe_load(result.text)
    assert spec["model"] == {
        "stem_pad": {"op": "pad", "pads": [[1, 1], [1, 1]], "mode": "reflect"},
        "stem": {"op": "conv2d", "out": 4, "kernel": 3, "stride": 2},
        "blocks": [{"use": "Bordered", "args": 6}, {"use": "Bordered", "args": 4}],
        "plain": {"op": "conv2d", "out": 4, "kernel": 1},
        "valid": {"op": "conv2d", "out": 4, "kernel": 3},  # 'valid': no padding, whatever the mode
        "flatten": {"op": "flatten", "start": 1},
        "line_pad": {"op": "pad", "pads": [[2, 2]], "mode": "circular"},
        "line": {"op": "conv1d", "out": 3, "kernel": 3, "dilation": 2},
        "unsqueeze": {"op": "reshape", "shape": [4, 1, 4, 5], "from": "valid"},
        "clip_pad": {"op": "pad", "pads": [[0, 0], [1, 1], [1, 1]], "mode": "reflect"},
        "clip": {"op": "conv3d", "out": 2, "kernel": [1, 3, 3]},
    }, result.text
    body = spec["templates"]["Bordered"]["body"]
    # torch's 'same' of a kernel of 2 pads 0 before and 1 after; the child conv1_pad keeps its name
    assert body["conv1_pad_1"] == {"op": "pad", "pads": [[1, 1], [2, 2]], "mode": "replicate"}
    assert body["conv2_pad"] == {"op": "pad", "pads": [[0, 1], [0, 1]], "mode": "replicate"}
    assert body["conv1_pad"] == "relu"


def test_padding_modes_keep_the_source_s_state_dict(modes):
    net, result = modes
    assert list(result.weights) == list(net.state_dict())
    for key, value in net.state_dict().items():
        assert np.array_equal(result.weights[key], value.numpy()), key


def test_torch_onnx_export_of_a_padding_mode_is_read_back(tmp_path):
    """torch.onnx.export writes ``padding_mode='reflect'`` as a ``Pad`` in mode reflect (its pads
    computed by nodes the importer folds) before a ``Conv``, both in the module's scope: read as
    the same two ops, the convolution named as the module (its initializers' keys), the pad
    beside it; run against ONNX Runtime."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 5, 3, padding=(2, 1), padding_mode="reflect")
            self.out = nn.Conv2d(5, 2, 1)

        def forward(self, x):
            return self.out(self.conv(x))

    torch.manual_seed(4)
    path = tmp_path / "m.onnx"
    with warnings.catch_warnings():  # the TorchScript exporter's notice of its deprecation
        warnings.simplefilter("ignore")
        torch.onnx.export(Net().eval(), torch.randn(1, 3, 6, 7), str(path), opset_version=17, dynamo=False)
    proto = onnx.load(str(path))
    assert [n.op_type for n in proto.graph.node if n.op_type in ("Pad", "Conv")] == ["Pad", "Conv", "Conv"]
    result = checked(proto)
    assert model_of(result) == {
        "conv_pad": {"op": "pad", "pads": [[2, 2], [1, 1]], "mode": "reflect"},
        "conv": {"op": "conv2d", "out": 5, "kernel": 3},
        "out": {"op": "conv2d", "out": 2, "kernel": 1},
    }, result.text
    assert sorted(result.weights) == sorted(i.name for i in proto.graph.initializer)
