"""``conv_transpose1d``/``2d``/``3d`` end to end: each case's generated module against torch's
``nn.ConvTranspose{n}d`` holding the same random weights (its state_dict loads strictly), the
ONNX export under ONNX Runtime against the generated module, the parameters against torch's,
the summary's multiply-adds against the scatter's count worked out here and against
``torch.utils.flop_counter`` (which counts FLOPs, two per multiply-add, over the input's
positions for a transposed convolution); the imports of a PyTorch module and of
``torch.onnx.export``'s file with ``--check``; bad attributes as located errors (exit 2); the U-Net
of docs/examples/unet_decoder.yaml against the same network written by hand."""

from __future__ import annotations

import functools
import math
import re
import sys
import warnings

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
import yaml
from onnx import TensorProto, helper, numpy_helper
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import nasdsl
from nasdsl.backends.onnx import export_onnx
from nasdsl.cli import main as cli_main
from nasdsl.importer import import_model

from paths import ROOT
from reference_models import generated_with_weights

#: (input shape, attributes as the spec writes them): ranks 1 to 3, strides 1, 2, 3 and per axis,
#: padding, output padding (below the stride, or below the dilation at stride 1), groups,
#: dilation, no bias
CASES = {
    "1d-plain": ([4, 7], {"out": 3, "kernel": 3}),
    "1d-s3-p1-op2-g2-nobias": (
        [4, 7],
        {"out": 6, "kernel": 4, "stride": 3, "padding": 1, "output_padding": 2, "groups": 2, "bias": False},
    ),  # fmt: skip
    "2d-s2-p1-op1": ([4, 5, 6], {"out": 6, "kernel": 3, "stride": 2, "padding": 1, "output_padding": 1}),
    "2d-axes-g2-d12-nobias": (
        [4, 5, 6],
        {
            "out": 6,
            "kernel": [2, 3],
            "stride": [2, 3],
            "padding": [0, 1],
            "output_padding": [1, 2],
            "groups": 2,
            "dilation": [1, 2],
            "bias": False,
        },
    ),  # fmt: skip
    "1d-s1-d3-op2-nobias": (
        [4, 7],
        {"out": 3, "kernel": 2, "padding": 1, "output_padding": 2, "dilation": 3, "bias": False},
    ),  # fmt: skip
    "2d-s1-d2-op1": ([4, 5, 6], {"out": 5, "kernel": 3, "output_padding": 1, "dilation": 2}),
    "2d-depthwise-s2": ([4, 5, 6], {"out": 4, "kernel": 4, "stride": 2, "padding": 1, "groups": 4}),
    "3d-s2-p1-op1": ([4, 3, 4, 5], {"out": 2, "kernel": 3, "stride": 2, "padding": 1, "output_padding": 1}),
    "3d-axes-g2-nobias": (
        [4, 3, 4, 5],
        {
            "out": 6,
            "kernel": [1, 2, 3],
            "stride": [1, 2, 3],
            "padding": [0, 1, 0],
            "output_padding": [0, 1, 2],
            "groups": 2,
            "bias": False,
        },
    ),  # fmt: skip
}


def _yaml(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _spec(shape: list[int], attrs: dict) -> str:
    n = len(shape) - 1
    fields = ", ".join(f"{k}: {_yaml(v)}" for k, v in attrs.items())
    axes = ", axes: CL" if n == 1 else ""
    return f"nasdsl: 1\nname: Up\ninput: {{shape: {shape}{axes}}}\nmodel:\n  up: {{op: conv_transpose{n}d, {fields}}}\n"


def _reference(shape: list[int], attrs: dict) -> nn.Module:
    """torch's module with the attributes given by their torch names."""
    n = len(shape) - 1
    cls = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[n]
    keys = {"stride": "stride", "padding": "padding", "output_padding": "output_padding", "groups": "groups",
            "dilation": "dilation", "bias": "bias"}  # fmt: skip
    kwargs = {keys[k]: tuple(v) if isinstance(v, list) else v for k, v in attrs.items() if k in keys}
    kernel = tuple(attrs["kernel"]) if isinstance(attrs["kernel"], list) else attrs["kernel"]
    return cls(shape[0], attrs["out"], kernel, **kwargs)


def _scatter_macs(shape: list[int], attrs: dict) -> int:
    """C_in x out / groups x prod(kernel) x prod(input positions)."""
    n = len(shape) - 1
    kernel = attrs["kernel"] if isinstance(attrs["kernel"], list) else [attrs["kernel"]] * n
    return shape[0] * attrs["out"] // attrs.get("groups", 1) * math.prod(kernel) * math.prod(shape[1:])


@functools.cache
def _run(case: str, tmp: str) -> dict:
    """Every figure of one case (computed once, shared by the tests below)."""
    import onnxruntime as ort

    shape, attrs = CASES[case]
    path = f"{tmp}/{case}.yaml"
    with open(path, "w") as f:
        f.write(_spec(shape, attrs))
    compiled = nasdsl.compile_spec(path)
    torch.manual_seed(0)
    ref = _reference(shape, attrs).eval()
    for p in ref.parameters():  # a bias far from zero shows
        torch.nn.init.uniform_(p, -1.0, 1.0)
    ours = nasdsl.build_model(compiled).eval()
    ours.up.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = ref(x), ours(x)
    state = {k: v.numpy() for k, v in ours.state_dict().items()}
    proto = export_onnx(compiled.graph, opset=17, state_dict=state, batch=2)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with FlopCounterMode(display=False) as counter:
        ref(x[:1])
    return {
        "shapes": (tuple(got.shape), tuple(want.shape), onnx_out.shape),
        "torch_err": float((got - want).abs().max()),
        "ort_err": float(np.abs(onnx_out - got.numpy()).max()),
        "params": (compiled.totals()["params"], sum(p.numel() for p in ref.parameters())),
        "macs": (compiled.totals()["macs"], _scatter_macs(shape, attrs), counter.get_total_flops() // 2),
        "keys": (list(ours.up.state_dict()), list(ref.state_dict())),
    }


@pytest.fixture(scope="module")
def tmp(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("conv_transpose"))


@pytest.mark.parametrize("case", sorted(CASES))
def test_generated_model_computes_torchs_transposed_convolution(case, tmp):
    r = _run(case, tmp)
    got, want, onnx_shape = r["shapes"]
    assert got == want == onnx_shape
    assert r["keys"][0] == r["keys"][1]
    assert r["torch_err"] < 1e-5
    assert r["ort_err"] < 1e-4


@pytest.mark.parametrize("case", sorted(CASES))
def test_parameters_and_multiply_adds(case, tmp):
    r = _run(case, tmp)
    ours, theirs = r["params"]
    assert ours == theirs
    summary, worked_out, flop_counter = r["macs"]
    assert summary == worked_out == flop_counter


def test_a_torch_state_dict_loads_strictly_into_the_whole_model(tmp):
    """The generated model's own keys and shapes are torch's: the weight (C_in, out / groups, k...)."""
    shape, attrs = CASES["2d-axes-g2-d12-nobias"]
    _run("2d-axes-g2-d12-nobias", tmp)
    ref = _reference(shape, attrs)
    ours = nasdsl.build_model(f"{tmp}/2d-axes-g2-d12-nobias.yaml")
    ours.load_state_dict({f"up.{k}": v for k, v in ref.state_dict().items()}, strict=True)
    assert tuple(ours.up.weight.shape) == (4, 3, 2, 3)


def test_initialisation_is_torchs_bound(tmp):
    """torch's ConvTranspose draws weight and bias from U(-b, b), b = 1 / sqrt(out / groups x kernel)
    (its fan-in is read from the weight's dimension 1)."""
    path = f"{tmp}/init.yaml"
    with open(path, "w") as f:
        f.write(_spec([16, 4, 4], {"out": 64, "kernel": 3, "stride": 2, "groups": 2}))
    model = nasdsl.build_model(path)
    bound = 1 / math.sqrt(32 * 9)
    for p in (model.up.weight, model.up.bias):
        top = float(p.detach().abs().max())
        assert 0.9 * bound < top <= bound


# --------------------------------------------------------------------------- bad attributes


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        (
            "out: 6, kernel: 3, stride: 2, output_padding: 2",
            r":5:\d+: error: model\.up\.output_padding: expected output_padding below the stride 2 or the "
            r"dilation 1 on each axis, got 2",
        ),
        (
            "out: 6, kernel: 3, stride: [2, 1], dilation: [1, 2], output_padding: [1, 2]",
            r":5:\d+: error: model\.up\.output_padding: expected output_padding below the stride 2x1 or the "
            r"dilation 1x2 on each axis, got 1x2",
        ),
        (
            "out: 6, kernel: 3, groups: 3",
            r":5:7: error: model\.up: expected groups that divide the input channels 4 and the output "
            r"channels 6, got 3",
        ),
        (
            "out: 5, kernel: 3, groups: 2",
            r":5:7: error: model\.up: expected groups that divide the input channels 4 and the output "
            r"channels 5, got 2",
        ),
        ("out: 6, kernel: 3, padding: 9", r":5:7: error: model\.up: expected padding 9 small enough"),
        (
            "out: 6, kernel: 3, padding: same",
            r"model\.up\.padding: expected an integer >= 0 or a list \(a transposed convolution pads no 'same'\)",
        ),
        ("out: 6, kernel: 3, output_pading: 1", r"output_pading.*output_padding"),
    ],
    ids=["output-padding", "per-axis", "groups-in", "groups-out", "too-much-padding", "same", "typo"],
)
def test_bad_attributes_are_located_errors(tmp_path, capsys, attrs, message):
    path = tmp_path / "bad.yaml"
    path.write_text(
        f"nasdsl: 1\nname: Bad\ninput: {{shape: [4, 5, 6]}}\nmodel:\n  up: {{op: conv_transpose2d, {attrs}}}\n"
    )
    assert cli_main(["compile", str(path), "-o", str(tmp_path / "bad.py")]) == 2
    err = capsys.readouterr().err
    assert re.search(re.escape(str(path)) + ".*" + message, err), err
    assert "Traceback" not in err
    assert not (tmp_path / "bad.py").exists()


# --------------------------------------------------------------------------- imports

DECODER = """\
import torch
from torch import nn


class Decoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.up = nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2)
        self.mix = nn.ConvTranspose2d(6, 3, (2, 3), stride=(1, 2), dilation=(2, 1), output_padding=(0, 1), bias=False)
        self.head = nn.Conv2d(3, 2, 1)

    def forward(self, x):
        return self.head(torch.relu(self.mix(torch.relu(self.up(x)))))


class Clip(nn.Module):
    def __init__(self):
        super().__init__()
        self.up = nn.ConvTranspose3d(3, 4, (1, 2, 2), stride=(1, 2, 2))
        self.fine = nn.ConvTranspose3d(4, 2, 3, padding=1, groups=2)

    def forward(self, x):
        return self.fine(torch.relu(self.up(x)))
"""


@pytest.fixture
def decoders(tmp_path, monkeypatch):
    (tmp_path / "decoders.py").write_text(DECODER)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "decoders", raising=False)
    import decoders

    return decoders


def test_a_torch_module_imports_and_checks(decoders, tmp_path, capsys):
    assert cli_main(["import", "module:decoders:Decoder", "-o", "dec.yaml", "--input-shape", "4,5,6", "--check"]) == 0
    out = capsys.readouterr().out
    assert "check" in out
    model = yaml.safe_load((tmp_path / "dec.yaml").read_text())["model"]
    assert model["up"] == {"op": "conv_transpose2d", "out": 6, "kernel": 3, "stride": 2, "padding": 1,
                           "output_padding": 1, "groups": 2}  # fmt: skip
    assert model["mix"] == {"op": "conv_transpose2d", "out": 3, "kernel": [2, 3], "stride": [1, 2],
                            "output_padding": [0, 1], "dilation": [2, 1], "bias": False}  # fmt: skip
    net = nasdsl.compile_spec(tmp_path / "dec.yaml")
    assert net.totals()["params"] == sum(p.numel() for p in decoders.Decoder().parameters())


@pytest.mark.parametrize(("cls", "shape"), [("Decoder", (1, 4, 5, 6)), ("Clip", (1, 3, 2, 3, 4))])
def test_torch_onnx_export_imports_and_checks(decoders, tmp_path, capsys, cls, shape):
    model = getattr(decoders, cls)().eval()
    with warnings.catch_warnings():  # the TorchScript exporter's notice of its deprecation
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.randn(*shape), tmp_path / "m.onnx", dynamo=False, opset_version=17)
    assert cli_main(["import", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "m.yaml"), "--check"]) == 0
    capsys.readouterr()
    text = (tmp_path / "m.yaml").read_text()
    assert f"op: conv_transpose{len(shape) - 2}d" in text
    assert nasdsl.compile_spec(tmp_path / "m.yaml").totals()["params"] == sum(p.numel() for p in model.parameters())


def _transposed_file(**attrs) -> onnx.ModelProto:
    """One ConvTranspose of a 1x2x4x4 map to 3 channels, kernel 3, stride 2 unless given."""
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((2, 3, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(3).astype(np.float32)
    node = helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], name="up", **({"strides": [2, 2]} | attrs))
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_onnx_pads_cropping_more_at_the_start_are_read_as_output_padding(tmp_path, capsys):
    """pads (2, 1) on H: ONNX crops 2 rows before and 1 after; PyTorch's padding 2 with one more
    output padding crops the same. ONNX Runtime's run of the file is the reference (--check)."""
    onnx.save(_transposed_file(pads=[2, 0, 1, 0], output_padding=[0, 1]), tmp_path / "m.onnx")
    assert cli_main(["import", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "m.yaml"), "--check"]) == 0
    capsys.readouterr()
    (layer,) = yaml.safe_load((tmp_path / "m.yaml").read_text())["model"].values()
    assert layer == {"op": "conv_transpose2d", "out": 3, "kernel": 3, "stride": 2, "padding": [2, 0],
                     "output_padding": 1}  # fmt: skip


def test_onnx_runtime_runs_no_output_padding_from_the_stride_up():
    """What the export works around (docs/import.md): PyTorch's output padding 1 at stride 1 and
    dilation 2, written as ONNX's ConvTranspose says, is refused by ONNX Runtime."""
    import onnxruntime as ort

    proto = _transposed_file(strides=[1, 1], dilations=[2, 2], output_padding=[1, 1])
    with pytest.raises(Exception, match="output_padding"):
        session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        session.run(None, {"x": np.zeros((1, 2, 4, 4), np.float32)})


def test_a_forward_given_output_size_is_read_as_its_output_padding():
    class Sized(nn.Module):
        def __init__(self):
            super().__init__()
            self.up = nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1)

        def forward(self, x):
            return self.up(x, output_size=[10, 9])

    result = import_model(Sized(), input_shape=(3, 5, 5))
    assert yaml.safe_load(result.text)["model"]["up"]["output_padding"] == [1, 0]


# --------------------------------------------------------------------------- the docs' U-Net


class UNet(nn.Module):
    """docs/examples/unet_decoder.yaml written by hand: 2x2 up-convolutions by 2, halving channels."""

    def __init__(self) -> None:
        super().__init__()

        def double(cin: int, out: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, out, 3, padding=1), nn.ReLU(), nn.Conv2d(out, out, 3, padding=1), nn.ReLU()
            )

        self.enc1, self.enc2, self.bottleneck = double(3, 8), double(8, 16), double(16, 32)
        self.up2 = nn.ConvTranspose2d(32, 16, 2, stride=2)
        self.dec2 = double(32, 16)
        self.up1 = nn.ConvTranspose2d(16, 8, 2, stride=2)
        self.dec1 = double(16, 8)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        b = self.bottleneck(F.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([self.up2(b), e2], 1))
        return self.head(self.dec1(torch.cat([self.up1(d2), e1], 1)))


def test_the_docs_unet_decoder_is_the_hand_written_one():
    net = nasdsl.compile_spec(ROOT / "docs" / "examples" / "unet_decoder.yaml")
    torch.manual_seed(0)
    ref = UNet().eval()
    ours = generated_with_weights(net, ref)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)
    assert net.totals()["params"] == sum(p.numel() for p in ref.parameters())
    with FlopCounterMode(display=False) as counter:
        ref(x[:1])
    assert net.totals()["macs"] == counter.get_total_flops() // 2


# --------------------------------------------------------------------------- weight transfer

TRANSFER = """\
nasdsl: 1
name: Joined
input: {{shape: [3, 4, 4]}}
model:
  a: {{op: conv2d, out: 2, kernel: 1}}
  b: {{op: conv2d, out: 2, kernel: 1, from: in}}
  cat: {{concat: [{{ref: {first}}}, {{ref: {second}}}]}}
  up: {{op: conv_transpose2d, out: {out}, kernel: 3, stride: 2}}
"""


def test_transfer_matches_the_input_channels_of_dimension_0(tmp_path):
    """The weight (C_in, out, k, k) takes its input channels first: a child that joins b before a
    reads the parent's rows of b's channels first; its fewer output channels (dimension 1) are
    the parent's first ones, and so is the bias."""
    parent, child = tmp_path / "parent.yaml", tmp_path / "child.yaml"
    parent.write_text(TRANSFER.format(first="a", second="b", out=4))
    child.write_text(TRANSFER.format(first="b", second="a", out=3))
    rng = np.random.default_rng(0)
    state = {k: rng.standard_normal(v.shape).astype(np.float32)
             for k, v in nasdsl.build_model(parent).state_dict().items()}  # fmt: skip
    moved = nasdsl.transfer_weights(parent, state, child)
    np.testing.assert_array_equal(moved["up.weight"], state["up.weight"][[2, 3, 0, 1], :3])
    np.testing.assert_array_equal(moved["up.bias"], state["up.bias"][:3])


def test_a_file_onnx_runtime_refuses_is_a_check_error_not_an_internal_one(tmp_path, capsys):
    """torch.onnx.export writes an output_padding at or above the stride where torch allows it (below the
    dilation); ONNX Runtime refuses such a file, and --check died of its InvalidArgument."""
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((2, 3, 3, 3)).astype(np.float32), "w")
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], dilations=[2, 2], output_padding=[1, 1])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [w],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    code = cli_main(["import", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "m.yaml"), "--check"])
    err = capsys.readouterr().err
    assert code == 2 and "internal error" not in err, err
    assert "error: --check: ONNX Runtime does not run the file, so nothing can be compared with it: " in err
    assert not (tmp_path / "m.yaml").exists()
