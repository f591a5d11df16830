"""torchvision's convolutional video models as specs: MC3-18 and R(2+1)-D-18 (specs/mc3_18.yaml and
specs/r2plus1d_18.yaml, which extend specs/r3d_18.yaml) and S3D (specs/s3d.yaml).

The references are independent of nasdsl: torchvision's models (random weights, never downloaded;
on the meta device where only sizes matter), the figures documented with their default weights
(``meta["num_params"]``, ``meta["_ops"]``) and ONNX Runtime.
"""

from __future__ import annotations

import pytest
import torch
from torchvision.models import get_model, get_model_weights

import nasdsl
from nasdsl import ir
from nasdsl.backends.pytorch import generate_source, model_class
from nasdsl.backends.verify import verify

from paths import SPECS
from reference_models import assert_module_for_module, randomise

MODELS = ("mc3_18", "r2plus1d_18", "s3d")

#: a small clip for the real forwards, where they are cheap: the video ResNets pool adaptively and
#: take any clip (4x32x32, as tests/test_any_rank.py runs R3D-18: at 2x16x16 PyTorch's CPU kernels
#: for R(2+1)D's 3x1x1 convolutions take 30 times as long). S3D's final 2x7x7 average pooling needs a
#: 2x7x7 map, which takes a clip of 13x209x209 at least (14.8 GMACs, under a second a forward here)
SMALL = {
    "mc3_18": {"frames": 4, "size": 32},
    "r2plus1d_18": {"frames": 4, "size": 32},
    "s3d": {"frames": 13, "size": 209},
}


@pytest.fixture(autouse=True)
def _without_onednn():
    """PyTorch's own 3-D convolution kernels, not oneDNN's: on these small clips oneDNN's take
    about 1.5 s of CPU for a forward of S3D or R(2+1)D where PyTorch's take 0.2 to 0.5 s."""
    before = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = before


def _spec(name: str):
    return SPECS / f"{name}.yaml"


def _settings(module: torch.nn.Module) -> dict:
    """A pooling or dropout module's settings, a window given as one number read as three."""
    triple = torch.nn.modules.utils._triple
    names = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "count_include_pad", "p")
    return {k: triple(v) if isinstance(v, int) and not isinstance(v, bool) and k != "p" else v
            for k in names if (v := getattr(module, k, None)) is not None}  # fmt: skip


@pytest.mark.parametrize("name", MODELS)
def test_video_model_is_torchvisions_module_for_module(name):
    """On the meta device: the state_dict's names in torchvision's order with its shapes; every
    module that holds tensors of torchvision's class with its settings (``extra_repr``); the
    parameters and GFLOPS documented with the default weights, at the spec's default input, which
    is the weights' crop and the 16 frames the figures were measured at."""
    weights = get_model_weights(name).DEFAULT
    net = nasdsl.compile_spec(_spec(name))
    assert ir.node(net.graph, "x").type == ir.TensorType((3, 16, *weights.transforms().crop_size), "CTHW")
    with torch.device("meta"):
        reference = get_model(name, weights=None)
        model = model_class(net.graph)()
    held, _ = assert_module_for_module(model, reference)
    modules = dict(model.named_modules())
    for path, module in reference.named_modules():
        if isinstance(module, (torch.nn.MaxPool3d, torch.nn.AvgPool3d, torch.nn.Dropout)):
            assert type(modules[path]).__name__ == type(module).__name__, path
            assert _settings(modules[path]) == _settings(module), path
    layers = (torch.nn.Conv3d, torch.nn.BatchNorm3d, torch.nn.Linear)
    assert held == sum(isinstance(m, layers) for m in reference.modules())
    totals = net.totals()
    assert totals["params"] == sum(p.numel() for p in reference.parameters()) == weights.meta["num_params"]
    assert round(totals["macs"] / 1e9, 3) == weights.meta["_ops"]


@pytest.mark.parametrize("name", MODELS)
def test_video_model_loads_torchvisions_weights_and_agrees(name):
    """torchvision's model with random weights (BatchNorm statistics and affine parameters too):
    its state_dict loads strictly into the generated model, whose eval outputs agree within 1e-5
    relative at a small clip; for S3D, ONNX Runtime (opset 17) agrees too."""
    overrides = SMALL[name]
    frames, side = overrides["frames"], overrides["size"]
    reference = get_model(name, weights=None)
    randomise(reference, seed=7)
    reference.eval()
    state = reference.state_dict()
    small = nasdsl.compile_spec(_spec(name), overrides)
    with torch.device("meta"):  # no initialisation drawn: every tensor is torchvision's
        model = model_class(small.graph)().eval()
    model.load_state_dict(state, strict=True, assign=True)
    batch = 1 if name == "s3d" else 2
    x = torch.randn(batch, 3, frames, side, side, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        got, want = model(x), reference(x)
    assert got.shape == want.shape == (batch, 400)
    assert (got - want).abs().max() <= 1e-5 * want.abs().max()
    if name == "s3d":  # R(2+1)D below; MC3's ops are R3D-18's (tests/test_any_rank.py) and R(2+1)D's
        result = verify(small.graph, state_dict=state, batch=1, opset=17)
        assert result.ok, result


def test_r2plus1d_agrees_with_onnx_runtime():
    """ONNX Runtime (opset 17) against the generated R(2+1)D-18 with one block per stage, every
    layer of which the full model has (a strided block with its projection and (2+1)-D convolutions
    strided in space and time, and stage 1's block without either), with random weights, BatchNorm
    statistics included: exporting the 31.5M parameters of all eight blocks doubles the time."""
    net = nasdsl.compile_spec(_spec("r2plus1d_18"), {**SMALL["r2plus1d_18"], **{f"blocks{k}": 1 for k in range(1, 5)}})
    model = model_class(net.graph)()
    randomise(model, seed=8)
    result = verify(net.graph, state_dict=model.state_dict(), batch=1, opset=17)
    assert result.ok, result


def test_r2plus1d_mid_channels_follow_torchvisions_formula():
    """The spec's expression for a (2+1)-D block's mid channels, floor(27 N_in N_out / (9 N_in +
    3 N_out)) from the block's input width for both of its convolutions, as the generated class
    writes it and as torchvision's weights have them (stage 2's second convolution: 230, not 288)."""
    source = generate_source(nasdsl.compile_spec(_spec("r2plus1d_18")))
    assert "midplanes = inplanes * planes * 27 // (inplanes * 9 + planes * 3)" in source
    with torch.device("meta"):
        reference = get_model("r2plus1d_18", weights=None)
    assert reference.layer2[0].conv2[0][0].out_channels == 230
    model = model_class(nasdsl.compile_spec(_spec("r2plus1d_18")).graph)
    with torch.device("meta"):
        ours = model()
    assert type(ours.layer2[0].conv2[0]).__name__ == "Conv2Plus1D"
    assert ours.layer2[0].conv2[0][0].out_channels == 230 and ours.layer4[1].conv1[0][0].out_channels == 1152


def test_generated_video_code_speaks_in_clips():
    """Shape comments in (N, C, T, H, W) terms: a block's symbolic, the model's concrete; S3D's
    scores averaged over time and space as torchvision's torch.mean(x, dim=(2, 3, 4))."""
    r2plus1d = generate_source(nasdsl.compile_spec(_spec("r2plus1d_18")))
    assert "x = self.conv1(x)  # (N, planes, T', H', W')" in r2plus1d
    assert "x = self.layer2(x)  # (N, 128, 8, 28, 28)" in r2plus1d
    assert "class Conv2Plus1D(nn.Sequential):" in r2plus1d and "class R2Plus1dStem(nn.Sequential):" in r2plus1d
    mc3 = generate_source(nasdsl.compile_spec(_spec("mc3_18")))
    assert "class Conv3DNoTemporal(nn.Conv3d):" in mc3 and "x = self.layer4(x)  # (N, 512, 16, 7, 7)" in mc3
    assert "x = self.conv1(x)  # (N, planes, T, H', W')" in mc3  # over space alone: the clip keeps its frames
    s3d = generate_source(nasdsl.compile_spec(_spec("s3d")))
    assert "class TemporalSeparableConv(nn.Sequential):" in s3d and "class SepInceptionBlock3D(nn.Module):" in s3d
    assert "x = self.features(x)  # (N, 1024, 2, 7, 7)" in s3d
    assert "x = self.flatten(x)  # (N, num_classes)" in s3d
