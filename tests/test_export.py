"""The generated models export with torch.export with a dynamic batch, and the exported program
computes what the eager model does at other batch sizes.

One model of each kind whose forward does something of its own with its input's sizes: window
attention (Swin: padding, shifts and their mask from the map's sizes), partition attention
(MaxViT), a video transformer (Swin3D: windows over time too), a segmentation model
(LR-ASPP: outputs by name, upsampling to the input's size) and a classifier with auxiliary heads
in training (GoogLeNet: a NamedTuple). Each is shrunk (small inputs, narrow layers) so that the
whole file takes a few seconds; ``benchmarks/export_zoo.py`` does the same for every spec at its
smallest input, and ``torch.compile(fullgraph=True)`` too. A shrunk ResNet-18 also exports with its
height and width dynamic, and its inference build (BatchNorm folded) with a dynamic batch, each
against the eager model at two sizes or batches (the script's ``--dynamic-hw`` and ``--optimize``).
"""

from __future__ import annotations

import pytest
import torch

import nasdsl
from nasdsl import build_model, ir
from nasdsl.weights import param_shapes

from paths import SPECS


def _one(prefix: str, *stages: int) -> dict:
    return {f"{prefix}{i}": 1 for i in stages}


def _widths() -> dict:
    return {"c1": 8, "c2": 16, "c3": 16, "c4": 16}


#: spec -> (its --sets, the mode it is exported in)
MODELS = {
    # a shifted window in the first stage (16x16 tokens, 7x7 windows), windows that shrink to the map later
    "swin_t": (
        {
            "image_size": 64,
            "embed_dim": 8,
            "heads1": 1,
            "heads2": 1,
            "heads3": 1,
            "heads4": 1,
            **_one("depth", 2, 3, 4),
        },
        "eval",
    ),
    # 2x2 blocks and grids at every stage
    "maxvit_t": (
        {
            "image_size": 64,
            "partition_size": 2,
            "stem_channels": 8,
            "head_dim": 8,
            **_widths(),
            **_one("n", 1, 2, 3, 4),
        },
        "eval",
    ),
    # 3-D windows: 2x8x8 tokens, 8x7x7 windows that shrink to 2 frames, one shifted
    "swin3d_t": (
        {
            "frames": 4,
            "size": 32,
            "embed_dim": 8,
            "heads1": 1,
            "heads2": 1,
            "heads3": 1,
            "heads4": 1,
            **_one("depth", 2, 3, 4),
        },
        "eval",
    ),
    "lraspp_mobilenet_v3_large": ({"input.shape": [3, 32, 32], "inter_channels": 8}, "eval"),
    "googlenet_bn": ({"input.shape": [3, 32, 32]}, "train"),
}


def tensors(outputs) -> list[torch.Tensor]:
    """A model's outputs (a tensor, a NamedTuple, a dict by name) as a list, in order."""
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    if isinstance(outputs, dict):
        return [outputs[key] for key in sorted(outputs)]
    return list(outputs)


def seeded(model, x):
    torch.manual_seed(0)  # dropout draws the same masks in both runs
    with torch.no_grad():
        return tensors(model(x))


@pytest.mark.parametrize("name", MODELS)
def test_exports_with_a_dynamic_batch(name):
    sets, mode = MODELS[name]
    net = nasdsl.compile_spec(SPECS / f"{name}.yaml", sets)
    shape = ir.node(net.graph, ir.info(net.graph).input).type.shape
    torch.manual_seed(0)
    model = build_model(net).train(mode == "train")
    example = torch.randn(2, *shape, generator=torch.Generator().manual_seed(1))
    batch = torch.export.Dim("batch", min=1, max=64)
    exported = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    program = exported.module()
    for size in (1, 3) if mode == "eval" else (3,):
        x = torch.randn(size, *shape, generator=torch.Generator().manual_seed(size))
        got, want = seeded(program, x), seeded(model, x)
        assert [t.shape for t in got] == [t.shape for t in want]
        assert all(t.shape[0] == size for t in want)
        for g, w in zip(got, want, strict=True):
            assert torch.allclose(g, w, rtol=0, atol=1e-5 * w.abs().max().item())


#: ResNet-18 shrunk: 8 channels wide, one block a stage; its adaptive pooling takes any input size
SMALL_RESNET = {"width": 8, "blocks1": 1, "blocks2": 1, "blocks3": 1, "blocks4": 1, "num_classes": 10}


@pytest.fixture(scope="module")
def small_resnet():
    net = nasdsl.compile_spec(SPECS / "resnet18.yaml", {**SMALL_RESNET, "input.shape": [3, 48, 48]})
    torch.manual_seed(0)
    return net, build_model(net).eval()


def _close(got: list[torch.Tensor], want: list[torch.Tensor]) -> None:
    assert [t.shape for t in got] == [t.shape for t in want]
    for g, w in zip(got, want, strict=True):
        assert torch.allclose(g, w, rtol=0, atol=1e-5 * w.abs().max().item())


def test_exports_with_a_dynamic_height_and_width(small_resnet):
    """The height and width dynamic (``Dim.AUTO``) beside the batch: the program, exported at
    64x48 (no map of a side of 1, which torch.export would specialise), computes the eager
    model's outputs at other sizes and batches. The spec's IR says the sizes are the model's:
    compiled at each, its parameters have the same shapes."""
    net, model = small_resnet
    sizes = [(1, 48, 80), (3, 96, 64)]
    for _, h, w in sizes:
        other = nasdsl.compile_spec(SPECS / "resnet18.yaml", {**SMALL_RESNET, "input.shape": [3, h, w]})
        assert param_shapes(other.graph) == param_shapes(net.graph)
    auto = torch.export.Dim.AUTO
    dynamic = {0: torch.export.Dim("batch", min=1, max=64), 2: auto, 3: auto}
    example = torch.randn(2, 3, 64, 48, generator=torch.Generator().manual_seed(1))
    program = torch.export.export(model, (example,), dynamic_shapes=(dynamic,)).module()
    for b, h, w in sizes:
        x = torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(h))
        _close(seeded(program, x), seeded(model, x))


def test_an_optimised_build_exports_and_computes_the_eager_model(small_resnet):
    """``build_model(..., optimize="cpu")`` (every BatchNorm folded into its convolution), with
    the eager model's weights and BatchNorm statistics drawn at random (so that the folding
    changes the weights), exports with a dynamic batch and computes what the unoptimised eager
    model does at batches of 1 and 3."""
    net, model = small_resnet
    generator = torch.Generator().manual_seed(2)
    state = dict(model.state_dict())
    for key in [k for k in state if k.endswith("running_var")]:
        prefix, shape = key.removesuffix("running_var"), state[key].shape
        state[key] = torch.rand(shape, generator=generator) + 0.5
        state[prefix + "running_mean"] = torch.randn(shape, generator=generator) * 0.2
        state[prefix + "weight"] = torch.rand(shape, generator=generator) + 0.5
        state[prefix + "bias"] = torch.randn(shape, generator=generator) * 0.2
    reference = build_model(net, weights=state).eval()
    optimized = build_model(net, optimize="cpu", weights=state)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in optimized.modules())
    example = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(optimized, (example,), dynamic_shapes=({0: batch},)).module()
    for size in (1, 3):
        x = torch.randn(size, 3, 48, 48, generator=torch.Generator().manual_seed(size))
        want = seeded(reference, x)
        assert not torch.allclose(want[0], seeded(model, x)[0], atol=1e-3)  # the statistics drawn count
        _close(seeded(program, x), want)
