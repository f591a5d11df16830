"""``nasdsl import`` of forms that were refused, each built here by hand and run against its source.

* PyTorch's functional layers given a module's tensors as their weights (``F.conv1d/2d/3d``,
  ``F.linear``, ``F.batch_norm`` at inference with the module's running statistics,
  ``F.layer_norm``): each is the layer of the module holding the tensors, its ``state_dict`` keys
  the spec's, run against the module (what ``--check`` runs); what a spec cannot hold is refused
  at the forward's line. Subclasses of ``nn.Conv2d`` and ``nn.Linear`` are read through them.
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
import torch.nn.functional as F
import yaml
from import_checks import assert_refused_at_the_forward, checked, model_of
from onnx import TensorProto, helper
from onnx_runs import agreement, run_ort
from torch import nn

import nasdsl

HERE = __file__


# -- PyTorch: functional layers -----------------------------------------------------------------


class ConvF(nn.Module):
    """``F.conv{n}d`` of the module's own weight and bias, its settings as a forward passes them."""

    def __init__(self, n: int, cin: int, cout: int, kernel: int, bias: bool = True, by_position=(), **settings):
        super().__init__()
        self.n, self.by_position, self.settings = n, by_position, settings
        self.weight = nn.Parameter(torch.randn(cout, cin // settings.get("groups", 1), *(kernel,) * n) * 0.3)
        self.bias = nn.Parameter(torch.randn(cout)) if bias else None

    def forward(self, x):
        function = (F.conv1d, F.conv2d, F.conv3d)[self.n - 1]
        return function(x, self.weight, self.bias, *self.by_position, **self.settings)


class LinearF(nn.Module):
    def __init__(self, cin: int, cout: int, bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin) * 0.3)
        self.bias = nn.Parameter(torch.randn(cout)) if bias else None

    def forward(self, x):
        return F.linear(x, weight=self.weight, bias=self.bias)


class BatchNormF(nn.Module):
    """``F.batch_norm`` as nn.BatchNorm2d calls it, its running statistics buffers (random here,
    so that normalising by the batch's instead would show), with or without the counter."""

    def __init__(self, channels: int, counter: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.rand(channels) + 0.5)
        self.bias = nn.Parameter(torch.randn(channels))
        self.register_buffer("running_mean", torch.randn(channels))
        self.register_buffer("running_var", torch.rand(channels) + 0.5)
        if counter:
            self.register_buffer("num_batches_tracked", torch.tensor(5))

    def forward(self, x):
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, self.training, 0.2, 1e-3)


class LayerNormF(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.rand(channels) + 0.5)
        self.bias = nn.Parameter(torch.randn(channels))

    def forward(self, x):
        return F.layer_norm(x, (x.shape[-1],), bias=self.bias, weight=self.weight, eps=1e-4)


class Functional(nn.Module):
    """Each function once or more: positional and keyword settings, with and without a bias,
    ranks 1 to 3, features and tokens."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = ConvF(2, 3, 8, 3, by_position=(1, 1))  # stride and padding
        self.bn = BatchNormF(8, counter=True)
        self.dw = ConvF(2, 8, 8, 3, bias=False, groups=8, padding="same", dilation=2)
        self.bn_bare = BatchNormF(8, counter=False)
        self.line = ConvF(1, 8, 4, 3, padding=2, stride=2)
        self.ln = LayerNormF(4)
        self.tokens = LinearF(4, 5)
        self.clip = ConvF(3, 8, 2, 1)
        self.head = LinearF(2 * 36, 3, bias=False)

    def forward(self, x):
        y = self.bn_bare(self.dw(self.bn(self.conv(x))))
        a = self.tokens(self.ln(self.line(y.flatten(2)).transpose(1, 2)))
        return a, self.head(self.clip(y.unsqueeze(2)).flatten(1))


@pytest.fixture(scope="module")
def functional():
    torch.manual_seed(0)
    net = Functional().eval()
    return net, checked(net, (3, 6, 6))


def test_functional_layers_are_the_layers_of_their_modules(functional):
    net, result = functional
    assert model_of(result) == {
        "conv": {"op": "conv2d", "out": 8, "kernel": 3, "padding": 1},
        "bn": {"op": "batch_norm", "eps": 0.001, "momentum": 0.2},
        "dw": {"op": "conv2d", "out": 8, "kernel": 3, "padding": "same", "dilation": 2, "groups": 8, "bias": False},
        "bn_bare": {"op": "batch_norm", "eps": 0.001, "momentum": 0.2},
        "flatten": {"op": "flatten", "start": 1},
        "line": {"op": "conv1d", "out": 4, "kernel": 3, "stride": 2, "padding": 2},
        "transpose": {"op": "transpose", "axis0": 0, "axis1": 1},
        "ln": {"op": "layer_norm", "eps": 0.0001, "dim": "last"},
        "tokens": {"op": "linear", "out": 5, "dim": "last"},
        "unsqueeze": {"op": "reshape", "shape": [8, 1, 6, 6], "from": "bn_bare"},
        "clip": {"op": "conv3d", "out": 2, "kernel": 1},
        "flatten_1": "flatten",
        "head": {"op": "linear", "out": 3, "bias": False},
    }, result.text


def test_functional_layers_keep_the_source_s_state_dict(functional):
    """The keys and tensors are the module's (the counter where the module keeps one); the
    generated model loads the module's state_dict strictly (PyTorch's BatchNorm starts a counter
    that a state_dict lacks at 0)."""
    net, result = functional
    assert list(result.weights) == list(net.state_dict())
    for key, value in net.state_dict().items():
        assert np.array_equal(result.weights[key], value.numpy()), key
    generated = nasdsl.build_model(result.compiled)
    assert str(generated.load_state_dict(net.state_dict(), strict=True)) == "<All keys matched successfully>"


def test_batch_norm_in_training_normalises_by_the_batch_as_the_module_does(functional):
    """In training mode the spec's batch_norm and F.batch_norm(training=self.training) both
    normalise by the batch's statistics and move the running ones by the momentum."""
    from nasdsl.api import build_model

    net, result = functional
    generated = build_model(result.compiled, weights=result.weights)
    torch.manual_seed(5)
    x = torch.randn(4, 3, 6, 6)
    source = Functional()
    source.load_state_dict(net.state_dict())
    source.train(), generated.train()
    for want, got in zip(source(x), generated(x), strict=True):
        assert torch.allclose(want, got, atol=1e-5)
    state = generated.state_dict()
    for key in ("bn.running_mean", "bn.running_var", "bn_bare.running_var"):
        assert torch.allclose(state[key], source.state_dict()[key], atol=1e-6), key
        assert not torch.allclose(state[key], net.state_dict()[key]), key  # they moved


class StandardConv(nn.Conv2d):
    """A subclass keeping nn.Conv2d's forward: not the op table's class, so traced into, down to
    its ``F.conv2d`` of its own weight and bias."""


class Classifier(nn.Linear):
    pass


def test_subclasses_of_conv_and_linear_are_read_by_their_functions():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = StandardConv(3, 4, 3, stride=2, bias=False)
            self.fc = Classifier(4, 2)

        def forward(self, x):
            return self.fc(self.conv(x).mean((2, 3)))

    torch.manual_seed(6)
    layers = model_of(checked(Net().eval(), (3, 7, 7)))
    assert layers["conv"] == {"op": "conv2d", "out": 4, "kernel": 3, "stride": 2, "bias": False}
    assert layers["fc"] == {"op": "linear", "out": 2}


FOUR, STATS = torch.rand(4) + 0.5, {"buf_running_mean": torch.zeros(4), "buf_running_var": torch.ones(4)}
AFFINE = {"weight": FOUR, "bias": torch.zeros(4)}
REFUSED = [
    ("conv-buffer-weight", lambda s, x: F.conv2d(x, s.weight), {"buf_weight": torch.rand(2, 4, 1, 1)},
     "reads 'block.weight', which is no parameter (a buffer or a constant): the spec's tensors are learned"),
    ("conv-computed-weight", lambda s, x: F.conv2d(x, s.weight.abs()), {"weight": torch.rand(2, 4, 1, 1)},
     "reads the tensor 'block.weight' directly"),
    ("conv-made-weight", lambda s, x: F.conv2d(x, torch.ones(2, 4, 1, 1)), {},
     "its weight '_tensor_constant0' is computed in the forward (a constant tensor): the spec's conv2d holds its "
     "weight as a learned tensor"),
    ("linear-named-otherwise", lambda s, x: F.linear(x, s.w), {"w": torch.rand(3, 4)},
     "its weights are 'block.w': the spec's linear is a layer holding them as 'LAYER.weight'"),
    ("batch-norm-training-always", lambda s, x: F.batch_norm(x, s.running_mean, s.running_var, s.weight, s.bias, True),
     {**AFFINE, **STATS}, "training=True at inference too: the spec's batch_norm normalises by the batch's statistics "
     "in training and by its running statistics at inference (pass training=self.training)"),
    ("batch-norm-frozen", lambda s, x: F.batch_norm(x, s.running_mean, s.running_var, s.weight, s.bias, False),
     {**AFFINE, **STATS}, "training=False in training too"),
    ("batch-norm-statistics-learned",
     lambda s, x: F.batch_norm(x, s.running_mean, s.running_var, s.weight, s.bias, s.training),
     {**AFFINE, "running_mean": torch.zeros(4), "running_var": torch.ones(4)},
     "reads 'block.running_mean' as its running_mean, which is no buffer: the spec's batch_norm keeps its "
     "running_mean as a buffer"),
    ("batch-norm-no-statistics", lambda s, x: F.batch_norm(x, None, None, s.weight, s.bias, True), AFFINE,
     "no running statistics: the spec's batch_norm keeps them"),
    ("batch-norm-not-affine", lambda s, x: F.batch_norm(x, s.running_mean, s.running_var, training=s.training), STATS,
     "no weight and bias: the spec's batch_norm holds both (affine)"),
    ("layer-norm-over-two-axes", lambda s, x: F.layer_norm(x, x.shape[-2:]), {},
     "normalized_shape [4, 4]: the spec's layer_norm normalises over the last axis alone"),
    ("layer-norm-weight-alone", lambda s, x: F.layer_norm(x, (4,), s.weight), {"weight": FOUR},
     "a weight without a bias: the spec's layer_norm holds both (affine) or neither"),
]  # fmt: skip


@pytest.mark.parametrize(("forward", "tensors", "said"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_what_a_spec_cannot_hold_is_refused_at_the_forward_s_line(forward, tensors, said):
    assert_refused_at_the_forward(forward, tensors, said, HERE)


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
