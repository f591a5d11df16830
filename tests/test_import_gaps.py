"""``nasdsl import`` of forms that were once refused or read wrong, each built here by hand.

* PyTorch's functional layers given a module's parameters as their weights (``F.prelu(x,
  self.weight)``, ``F.group_norm``, ``F.instance_norm``, ``F.conv_transpose1d/2d/3d``): each is
  the layer of the module holding the weights, run against the module (what ``--check`` runs),
  its ``state_dict`` keys the spec's; what a spec cannot hold is refused at the forward's line.
* ``nn.InstanceNorm2d(track_running_stats=True)``, whose inference normalises by the running
  statistics.
* ONNX's ``ConvTranspose`` with ``auto_pad`` SAME_UPPER or SAME_LOWER or ``output_shape``, whose
  crops the ONNX standard computes from the sizes (``output_shape[i] = input[i] * stride[i]`` for
  SAME, the total split in halves, the odd one at the end for SAME_UPPER): the expected readings
  below are worked out from the standard's formulas by hand, and each import is run against ONNX
  Runtime's run of the file; ``InstanceNormalization`` (no running statistics in ONNX).
* ``--input-shape`` in every wrong form, and in an NHWC file's order.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
import yaml
from import_checks import assert_refused_at_the_forward, checked, holding, model_of
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from nasdsl.cli import main as cli_main
from nasdsl.importer import ImportFailure, import_model

HERE = __file__


# -- PyTorch: functional layers ------------------------------------------------------------------


class Slopes(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.rand(channels))

    def forward(self, x):
        return F.prelu(x, self.weight)


class GroupNormF(nn.Module):
    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.groups = groups
        self.weight = nn.Parameter(torch.rand(channels) + 0.5)
        self.bias = nn.Parameter(torch.randn(channels))

    def forward(self, x):
        return F.group_norm(x, self.groups, self.weight, self.bias, eps=1e-3)


class InstanceNormF(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.rand(channels) + 0.5)
        self.bias = nn.Parameter(torch.randn(channels))

    def forward(self, x):
        return F.instance_norm(x, weight=self.weight, bias=self.bias, eps=1e-4)


class UpF(nn.Module):
    """``F.conv_transpose{n}d`` with its settings passed as a forward would."""

    def __init__(self, n: int, cin: int, cout: int, kernel, groups: int = 1, bias: bool = True, **settings) -> None:
        super().__init__()
        self.n, self.groups, self.settings = n, groups, settings
        sides = kernel if isinstance(kernel, tuple) else (kernel,) * n
        self.weight = nn.Parameter(torch.randn(cin, cout // groups, *sides) * 0.3)
        self.bias = nn.Parameter(torch.randn(cout)) if bias else None

    def forward(self, x):
        function = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[self.n - 1]
        return function(x, self.weight, self.bias, groups=self.groups, **self.settings)


class Functional(nn.Module):
    """Each functional form once, its weights in a module of its own, and the forms without weights."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.act = Slopes(8)
        self.shared = Slopes(1)
        self.gn = GroupNormF(8, 4)
        self.inorm = InstanceNormF(8)
        self.up = UpF(2, 8, 6, (3, 2), groups=2, stride=2, padding=1, output_padding=1, dilation=(1, 2))

    def forward(self, x):
        x = self.inorm(self.gn(self.shared(self.act(self.conv(x)))))
        x = F.elu(F.leaky_relu(F.instance_norm(F.group_norm(x, 2)), 0.2), 0.5)
        return self.up(x)


class Ranks(nn.Module):
    """``F.conv_transpose1d`` over a map's rows made a sequence and ``F.conv_transpose3d`` over
    the map given an axis of time."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.up1 = UpF(1, 4, 2, 3, stride=2, padding=1)
        self.up3 = UpF(3, 4, 2, (1, 3, 3), bias=False, stride=(1, 2, 2), output_padding=(0, 1, 0))

    def forward(self, x):
        y = self.conv(x)
        return self.up1(y.flatten(2)), self.up3(y.unsqueeze(2))


@pytest.fixture(scope="module")
def functional():
    torch.manual_seed(0)
    net = Functional().eval()
    return net, checked(net, (3, 6, 6))


def test_functional_layers_import_and_compute_the_module(functional):
    net, result = functional
    assert model_of(result) == {
        "conv": {"op": "conv2d", "out": 8, "kernel": 3, "padding": 1},
        "act": "prelu",
        "shared": {"op": "prelu", "per_channel": False},
        "gn": {"op": "group_norm", "groups": 4, "eps": 0.001},
        "inorm": {"op": "instance_norm", "eps": 0.0001, "affine": True},
        "group_norm": {"op": "group_norm", "groups": 2, "affine": False},
        "instance_norm": "instance_norm",
        "leaky_relu": {"op": "leaky_relu", "negative_slope": 0.2},
        "elu": {"op": "elu", "alpha": 0.5},
        "up": {"op": "conv_transpose2d", "out": 6, "kernel": [3, 2], "stride": 2, "padding": 1, "output_padding": 1,
               "dilation": [1, 2], "groups": 2},
    }  # fmt: skip


def test_the_source_state_dict_is_the_spec_s(functional):
    net, result = functional
    assert list(result.weights) == list(net.state_dict())
    for key, value in net.state_dict().items():
        assert np.array_equal(result.weights[key], value.numpy()), key


def test_transposed_convolutions_of_one_and_three_dimensions():
    torch.manual_seed(1)
    result = checked(Ranks().eval(), (3, 4, 5))
    layers = model_of(result)
    assert layers["up1"] == {"op": "conv_transpose1d", "out": 2, "kernel": 3, "stride": 2, "padding": 1}
    assert layers["up3"] == {"op": "conv_transpose3d", "out": 2, "kernel": [1, 3, 3], "stride": [1, 2, 2],
                             "output_padding": [0, 1, 0], "bias": False}  # fmt: skip


REFUSED = [
    ("named-otherwise", lambda s, x: F.prelu(x, s.slope), {"slope": torch.rand(4)},
     "its weights are 'block.slope': the spec's prelu is a layer holding them as 'LAYER.weight'"),
    ("two-names", lambda s, x: F.group_norm(x, 2, s.weight, s.shift), {"weight": torch.rand(4), "shift": torch.rand(4)},
     "its weights are 'block.weight', 'block.shift': the spec's group_norm is a layer holding them as 'LAYER.weight' "
     "and 'LAYER.bias'"),
    ("two-modules", lambda s, x: F.group_norm(x, 2, s.a.weight, s.b.bias),
     {"a": nn.GroupNorm(2, 4), "b": nn.GroupNorm(2, 4)},
     "its weights are 'block.a.weight', 'block.b.bias': the spec's group_norm is a layer holding them as"),
    ("computed", lambda s, x: F.prelu(x, s.weight.abs()), {"weight": torch.rand(4)},
     "reads the tensor 'block.weight' directly"),
    ("a-buffer", lambda s, x: F.prelu(x, s.weight), {"buf_weight": torch.rand(4)},
     "reads 'block.weight', which is no parameter (a buffer or a constant): the spec's tensors are learned"),
    ("more-in-the-forward", lambda s, x: F.prelu(x, s.weight) * 2, {"weight": torch.rand(4)},
     "the module 'block' holding its weights computes more in its forward (function mul, fx node 'mul'): the "
     "spec's layer 'block' would be this prelu alone"),
    ("read-twice", lambda s, x: F.prelu(F.prelu(x, s.weight), s.weight), {"weight": torch.rand(4)},
     "the module 'block' holding its weights computes more in its forward (function torch.prelu, fx node "
     "'prelu_1')"),
    ("weight-without-bias", lambda s, x: F.group_norm(x, 2, s.weight), {"weight": torch.rand(4)},
     "a weight without a bias: the spec's group_norm holds both (affine) or neither"),
    ("running-statistics", lambda s, x: F.instance_norm(x, s.mean, s.var),
     {"buf_mean": torch.zeros(4), "buf_var": torch.ones(4)},
     "running statistics given to the function: the spec's instance_norm keeps them as "
     "nn.InstanceNorm1d/2d/3d(track_running_stats=True) does"),
    ("a-scalar-slope", lambda s, x: F.prelu(x, s.weight), {"weight": torch.tensor(0.25)},
     "holds 'weight' of shape []: the spec's prelu holds one of [1] on this input"),
]  # fmt: skip


@pytest.mark.parametrize(("forward", "tensors", "said"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_what_a_spec_cannot_hold_is_refused_at_the_forward_s_line(forward, tensors, said):
    assert_refused_at_the_forward(forward, tensors, said, HERE)


def test_instance_norm_with_running_statistics_normalises_by_them_at_inference():
    """``nn.InstanceNorm2d(track_running_stats=True)`` in eval uses its running statistics, which
    the spec's instance_norm holds (random here, so that using the sample's instead would show)."""
    torch.manual_seed(2)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.norm = nn.InstanceNorm2d(4, affine=True, track_running_stats=True, momentum=0.3)

        def forward(self, x):
            return self.norm(self.conv(x))

    net = Net()
    with torch.no_grad():
        net.norm.running_mean.uniform_(-1, 1)
        net.norm.running_var.uniform_(0.5, 2)
        net.norm.weight.uniform_(0.5, 1.5)
        net.norm.num_batches_tracked.fill_(7)
    result = checked(net.eval(), (3, 6, 6))
    assert model_of(result)["norm"] == {"op": "instance_norm", "momentum": 0.3, "affine": True,
                                        "track_running_stats": True}  # fmt: skip
    x = torch.randn(2, 3, 6, 6)
    by_sample = F.instance_norm(net.conv(x), weight=net.norm.weight, bias=net.norm.bias)
    assert not torch.allclose(net(x), by_sample, atol=1e-3)  # the check above tells the two apart


# -- ONNX: ConvTranspose and InstanceNormalization ---------------------------------------------


def _onnx(nodes, inits, shape, opset=17) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def _transposed(size: int, kernel: int, stride: int, spatial: int = 2, dilation: int = 1, **attrs) -> onnx.ModelProto:
    """One ConvTranspose of a 1x2xsize... map to 3 channels."""
    rng = np.random.default_rng(size * 100 + kernel * 10 + stride)
    inits = {
        "w": rng.standard_normal((2, 3, *[kernel] * spatial)).astype(np.float32),
        "b": rng.standard_normal(3).astype(np.float32),
    }
    node = helper.make_node(
        "ConvTranspose", ["x", "w", "b"], ["y"], name="up", strides=[stride] * spatial, dilations=[dilation] * spatial,
        **attrs,
    )  # fmt: skip
    return _onnx([node], inits, [1, 2, *[size] * spatial])


#: (size, kernel, stride, attributes) -> the spec's transposed convolution, then the slice of each
#: axis it needs, worked out from the ONNX standard: the full output is (size - 1) * stride +
#: (kernel - 1) * dilation + 1 + output_padding; SAME asks for size * stride, output_shape for
#: itself; the difference is cropped, the larger half at the end for SAME_UPPER, at the start
#: otherwise. PyTorch crops padding at the start and padding - output_padding at the end.
TRANSPOSED = [
    # full 9, asked 8: SAME_UPPER crops (0, 1): the end more than the start, a slice to 8
    ("same-upper", (4, 3, 2, {"auto_pad": "SAME_UPPER"}),
     {}, [{"axis": 1, "stop": 8}, {"axis": 2, "stop": 8}]),
    # SAME_LOWER crops (1, 0): padding 1 and output padding 1
    ("same-lower", (4, 3, 2, {"auto_pad": "SAME_LOWER"}), {"padding": 1, "output_padding": 1}, []),
    # full 10, asked 8: (1, 1) either way
    ("same-upper-even", (4, 4, 2, {"auto_pad": "SAME_UPPER"}), {"padding": 1}, []),
    # full 8, asked 4: SAME at stride 1 crops (2, 2)
    ("same-stride-1", (4, 5, 1, {"auto_pad": "SAME_UPPER"}), {"padding": 2}, []),
    # full 9 with output_padding 1 10, asked 8: (1, 1) of the 10, i.e. (1, 0) of the 9
    ("same-upper-output-padding", (4, 3, 2, {"auto_pad": "SAME_UPPER", "output_padding": [1, 1]}),
     {"padding": 1, "output_padding": 1}, []),
    # full 9, asked 7: NOTSET crops (1, 1) whatever the pads say
    ("output-shape", (4, 3, 2, {"output_shape": [7, 7], "pads": [0, 0, 2, 2]}), {"padding": 1}, []),
    # full 9, asked 6: (2, 1) NOTSET, (1, 2) SAME_UPPER
    ("output-shape-odd", (4, 3, 2, {"output_shape": [6, 6]}), {"padding": 2, "output_padding": 1}, []),
    ("output-shape-same-upper", (4, 3, 2, {"output_shape": [6, 6], "auto_pad": "SAME_UPPER"}),
     {"padding": 1}, [{"axis": 1, "stop": 6}, {"axis": 2, "stop": 6}]),
    # full 9, asked 4: (3, 2), padding 3 and output padding 1
    ("output-shape-4", (4, 3, 2, {"output_shape": [4, 4]}),
     {"padding": 3, "output_padding": 1}, []),
    # pads (3, 0): the start cropped 3 more than the end, at stride 2: padding 1 + 1, then a slice
    ("pads-start-heavy", (4, 3, 2, {"pads": [3, 3, 0, 0]}),
     {"padding": 1, "output_padding": 1}, [{"axis": 1, "start": 2}, {"axis": 2, "start": 2}]),
    # pads (0, 1) on H only: a slice of the end of H
    ("pads-end-heavy", (4, 3, 2, {"pads": [0, 0, 1, 0]}), {}, [{"axis": 1, "stop": 8}]),
    # 3-D: full 4, asked 3, 4 and 3: (1, 0), (0, 0), (1, 0)
    ("output-shape-3d", (2, 2, 2, {"output_shape": [3, 4, 3], "spatial": 3}),
     {"padding": [1, 0, 1], "output_padding": [1, 0, 1]}, []),
]  # fmt: skip


@pytest.mark.parametrize(("case", "conv", "slices"), [c[1:] for c in TRANSPOSED], ids=[c[0] for c in TRANSPOSED])
def test_conv_transpose_crops_as_onnx_defines_them(case, conv, slices):
    size, kernel, stride, attrs = case
    attrs = dict(attrs)
    proto = _transposed(size, kernel, stride, spatial=attrs.pop("spatial", 2), dilation=attrs.pop("dilation", 1),
                        **attrs)  # fmt: skip
    layers = list(model_of(checked(proto)).values())
    first = {k: v for k, v in layers[0].items() if k in ("padding", "output_padding", "dilation")}
    assert first == conv, layers
    assert [{k: v for k, v in s.items() if k != "op"} for s in layers[1:]] == slices, layers
    assert all(s["op"] == "slice" for s in layers[1:])


@pytest.mark.parametrize(
    ("case", "said"),
    [
        ((4, 3, 2, {"output_shape": [10, 10]}),
         "output_shape [10, 10] asks for an output of [10, 10], larger than the [9, 9] the transposed convolution "
         "makes: a negative padding, which the ONNX standard leaves undefined"),
        ((4, 3, 4, {"auto_pad": "SAME_LOWER"}), "auto_pad SAME_LOWER asks for an output of [16, 16], larger than the "
         "[15, 15]"),
        ((4, 3, 2, {"output_shape": [1, 7, 7]}), None),  # ONNX's shape inference refuses it first
    ],
    ids=["output-shape-larger", "same-larger", "output-shape-with-channels"],
)  # fmt: skip
def test_conv_transpose_forms_the_standard_leaves_open_are_refused(tmp_path, capsys, case, said):
    size, kernel, stride, attrs = case
    onnx.save(_transposed(size, kernel, stride, **attrs), tmp_path / "m.onnx")
    assert cli_main(["import", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "m.yaml")]) == 2
    err = capsys.readouterr().err
    if said is None:
        said = "Attribute output_shape has incorrect size"
        assert "m.onnx: error: ONNX shape inference fails: [ShapeInferenceError] " in err and said in err, err
    else:
        assert f"m.onnx: graph.node[0] 'up' (ConvTranspose): error: {said}" in err, err
    assert not (tmp_path / "m.yaml").exists()


def test_runtimes_differ_where_the_standard_leaves_the_crop_negative():
    """Why an output larger than the full one is refused: on ``output_shape`` 10 of a full 9 with
    SAME_UPPER, ONNX Runtime and ONNX's reference evaluator compute different things."""
    import onnxruntime as ort
    from onnx.reference import ReferenceEvaluator

    proto = _transposed(4, 3, 2, output_shape=[10, 10], auto_pad="SAME_UPPER")
    x = np.random.default_rng(6).standard_normal((1, 2, 4, 4)).astype(np.float32)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    by_runtime = session.run(None, {"x": x})[0]
    by_reference = ReferenceEvaluator(proto).run(None, {"x": x})[0]
    assert by_runtime.shape == by_reference.shape == (1, 3, 10, 10)
    assert not np.allclose(by_runtime, by_reference, atol=1e-3)


def _instance_norm_file(scale, bias, shape=(1, 3, 5, 6), made: bool = False) -> onnx.ModelProto:
    """InstanceNormalization of the input; ``made``: its scale and bias written by Constant nodes."""
    nodes = [helper.make_node("InstanceNormalization", ["x", "s", "b"], ["y"], name="norm", epsilon=1e-3)]
    inits = {"s": scale, "b": bias}
    if made:
        nodes[:0] = [helper.make_node("Constant", [], [k], value=numpy_helper.from_array(v)) for k, v in inits.items()]
        inits = {}
    return _onnx(nodes, inits, shape)


def test_instance_normalization_as_onnx_defines_it():
    """ONNX's InstanceNormalization normalises each channel of each sample over its positions,
    then scales and shifts (no running statistics): learned scale and bias are the spec's
    affine weight and bias; ones and zeros written by nodes (torch.onnx.export's norm without
    affine) are no tensors; a 5-D clip is read as one. Each runs against ONNX Runtime."""
    rng = np.random.default_rng(3)
    scale, bias = rng.uniform(0.5, 1.5, 3).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    eps = float(np.float32(1e-3))  # the file's epsilon, a float32
    result = checked(_instance_norm_file(scale, bias))
    assert list(model_of(result).values()) == [{"op": "instance_norm", "eps": pytest.approx(eps), "affine": True}]
    assert [result.weights[k].tolist() for k in sorted(result.weights)] == [bias.tolist(), scale.tolist()]
    ones, zeros = np.ones(3, np.float32), np.zeros(3, np.float32)
    made = checked(_instance_norm_file(ones, zeros, made=True))
    assert list(model_of(made).values()) == [{"op": "instance_norm", "eps": pytest.approx(eps)}] and not made.weights
    learned = checked(_instance_norm_file(ones, zeros))  # initializers: learned tensors, whatever they hold
    assert list(model_of(learned).values()) == [{"op": "instance_norm", "eps": pytest.approx(eps), "affine": True}]
    checked(_instance_norm_file(scale, bias, shape=(1, 3, 2, 3, 4)))


# -- --input-shape -----------------------------------------------------------------------------

FORMS = (
    "expected C,H,W such as 3,224,224 (H,W,C for an ONNX file whose input is channels-last; C, L,C or C,T,H,W for an "
    "ONNX input of features, tokens or clips)"
)


@pytest.mark.parametrize(
    ("given", "said"),
    [
        (["--input-shape", "3,8,8,8,8"], f"--input-shape: {FORMS}; got 5 sizes in '3,8,8,8,8'"),
        (["--input-shape", "0,8,8"], "--input-shape: expected sizes of 1 or more, got 0 in '0,8,8'"),
        (["--input-shape=-3,8,8"], "--input-shape: expected sizes of 1 or more, got -3 in '-3,8,8'"),
        (["--input-shape", "-3,8,8"], "--input-shape: expected one argument (a value beginning with '-' is read as "
         "an option: write --input-shape=VALUE)"),
        (["--input-shape", "3.5,8,8"], f"--input-shape: '3.5' is no whole number in '3.5,8,8': {FORMS}"),
        (["--input-shape", "three"], f"--input-shape: 'three' is no whole number in 'three': {FORMS}"),
        (["--input-shape", "3,,8"], f"--input-shape: an empty size in '3,,8': {FORMS}"),
        (["--input-shape", "3_0,8,8"], f"--input-shape: '3_0' is no whole number in '3_0,8,8': {FORMS}"),
    ],
    ids=["count", "zero", "negative", "negative-without-equals", "fraction", "text", "empty", "underscore"],
)  # fmt: skip
def test_a_wrong_input_shape_is_a_plain_usage_error(capsys, given, said):
    with pytest.raises(SystemExit) as e:
        cli_main(["import", "torchvision:resnet18", "-o", "never.yaml", *given])
    assert e.value.code == 2
    assert capsys.readouterr().err == f"nasdsl import: error: {said} (see nasdsl import --help)\n"


@pytest.mark.parametrize(
    ("shape", "said"),
    [
        ((3, 8), "the input shape given, [3, 8], has 2 sizes: a PyTorch model is traced at a batch of maps (N, C, "
         "H, W), whose input shape is C,H,W"),
        ((3, 70000, 8), "the input, of shape [3, 70000, 8], has a size of 70,000 for its height (H): a spec's "
         "input has at most 65,536 there"),
        ((0, 8, 8), "input_shape: expected sizes of 1 or more, the sizes of one sample (C, H, W), got [0, 8, 8]"),
        ("3,8,8", "input_shape: expected a sequence of whole numbers, the sizes of one sample (C, H, W), got '3,8,8'"),
    ],
    ids=["count", "too-large", "zero", "text"],
)  # fmt: skip
def test_a_wrong_input_shape_for_a_pytorch_model_is_refused_before_it_is_traced(shape, said):
    with pytest.raises(ImportFailure) as e:
        import_model(holding(lambda s, x: x), input_shape=shape)
    assert e.value.format().endswith(f"error: {said}")


def _nhwc(shape) -> onnx.ModelProto:
    """A Keras-like file: its NHWC input transposed to channels first, then a 3x3 convolution of 3 channels."""
    weight = np.random.default_rng(4).standard_normal((4, 3, 3, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["t", "w"], ["y"], pads=[1, 1, 1, 1]),
    ]
    return _onnx(nodes, {"w": weight}, shape, opset=13)


@pytest.mark.parametrize(
    ("shape", "given", "said"),
    [
        ((1, 8, 8, 3), "3,8,8", "the input 'x' [1, 8, 8, 3] has 3 channels (the input shape is H,W,C, channels-last, "
         "in the file's order), and --input-shape gives 8 as its last size: the file's weights are for its own"),
        ((1, "h", "w", 3), None, "the input 'x' has the symbolic shape [1, 'h', 'w', 3]: give --input-shape H,W,C"),
        ((1, "h", "w", 3), "8,8", "the input shape given, [8, 8], has 2 sizes: the input 'x' [1, 'h', 'w', 3] takes "
         "3 (H,W,C, in its channels-last order)"),
        ((1, 8, 8, 3), "8,70000,3", "the input shape given, [8, 70000, 3], has a size of 70,000 for its width (W): "
         "a spec's input has at most 65,536 there"),
    ],
    ids=["channels-first-order", "symbolic", "count", "too-large"],
)  # fmt: skip
def test_a_channels_last_file_takes_its_input_shape_in_its_own_order(tmp_path, capsys, shape, given, said):
    onnx.save(_nhwc(shape), tmp_path / "m.onnx")
    more = ["--input-shape", given] if given else []
    assert cli_main(["import", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "m.yaml"), *more]) == 2
    assert capsys.readouterr().err == f"{tmp_path / 'm.onnx'}: error: {said}\n"


def test_a_channels_last_file_imports_at_another_size(tmp_path, capsys):
    """Its H,W,C at another size than the file's (it was refused as a change of 'channels', the file's H)."""
    onnx.save(_nhwc((1, 8, 8, 3)), tmp_path / "m.onnx")
    argv = ["import", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "m.yaml"), "--input-shape", "5x7x3", "--check"]
    assert cli_main(argv) == 0, capsys.readouterr().err
    assert "check: 1 output against ONNX Runtime's run of the file: largest difference" in capsys.readouterr().out
    assert yaml.safe_load((tmp_path / "m.yaml").read_text())["input"]["shape"] == [5, 7, 3]


def test_a_token_file_checks_its_channels_last(tmp_path, capsys):
    """Tokens (N, L, C) hold their channels last: a file of fixed length 7 imports at another (its
    first size was compared with the file's channels, the length)."""
    rng = np.random.default_rng(5)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["y"])]
    inits = {"w": rng.standard_normal((4, 6)).astype(np.float32), "b": rng.standard_normal(6).astype(np.float32)}
    onnx.save(_onnx(nodes, inits, (1, 7, 4)), tmp_path / "m.onnx")
    argv = ["import", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "m.yaml"), "--input-shape"]
    assert cli_main([*argv, "5,4", "--check"]) == 0, capsys.readouterr().err
    assert yaml.safe_load((tmp_path / "m.yaml").read_text())["input"]["shape"] == [5, 4]
    capsys.readouterr()
    assert cli_main([*argv, "7,5"]) == 2
    assert capsys.readouterr().err == (
        f"{tmp_path / 'm.onnx'}: error: the input 'x' [1, 7, 4] has 4 channels (the input shape is L,C), and "
        "--input-shape gives 5 as its last size: the file's weights are for its own\n"
    )


def test_a_token_file_of_symbolic_length_takes_l_and_c(tmp_path, capsys):
    """An input (N, L, C) of no fixed length: --input-shape L,C (two sizes; it took three alone)."""
    rng = np.random.default_rng(5)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["y"])]
    inits = {"w": rng.standard_normal((4, 6)).astype(np.float32), "b": rng.standard_normal(6).astype(np.float32)}
    onnx.save(_onnx(nodes, inits, (1, "length", 4)), tmp_path / "m.onnx")
    argv = ["import", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "m.yaml"), "--input-shape", "5,4", "--check"]
    assert cli_main(argv) == 0, capsys.readouterr().err
    assert yaml.safe_load((tmp_path / "m.yaml").read_text())["input"]["shape"] == [5, 4]
