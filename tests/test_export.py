"""The generated models export with torch.export with a dynamic batch, and the exported program
computes what the eager model does at other batch sizes.

One model of each kind whose forward does something of its own with its input's sizes: window
attention (Swin: padding, shifts and their mask from the map's sizes), partition attention
(MaxViT), a video transformer (Swin3D: windows over time too), a segmentation model
(LR-ASPP: outputs by name, upsampling to the input's size) and a classifier with auxiliary heads
in training (GoogLeNet: a NamedTuple). Each is shrunk (small inputs, narrow layers) so that the
whole file takes a few seconds; ``benchmarks/export_zoo.py`` does the same for every spec at its
smallest input, and ``torch.compile(fullgraph=True)`` too.
"""

from __future__ import annotations

import pytest
import torch

import nasdsl
from nasdsl import build_model, ir

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
