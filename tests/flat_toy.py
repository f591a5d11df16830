"""A small network of three blocks of one structure and three widths, for the imports of
flat ONNX graphs (tests/test_import_flat.py).

``python tests/flat_toy.py`` writes tests/data/toy_blocks_dynamo.onnx with PyTorch's dynamo
exporter (``torch.onnx.export(..., dynamo=True)``, which needs the onnxscript package): its
nodes carry the exporter's metadata (``pkg.torch.onnx.name_scopes``,
``pkg.torch.onnx.class_hierarchy``; its stack traces are left out) and are named
``node_Conv_12``, names that say nothing of the modules.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

WIDTHS = (8, 16, 32)


class Block(nn.Module):
    """A residual block: two 3x3 convolutions, the first with the stride, a projection."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.proj = nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + self.proj(x))


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, WIDTHS[0], 3, 1, 1)
        self.blocks = nn.Sequential(*(Block(a, b, 2) for a, b in zip((WIDTHS[0], *WIDTHS[:-1]), WIDTHS, strict=True)))
        self.fc = nn.Linear(WIDTHS[-1], 10)

    def forward(self, x):
        x = self.blocks(torch.relu(self.stem(x)))
        return self.fc(x.mean((2, 3)))


def toy() -> Toy:
    """The toy with fixed random weights and BatchNorm statistics, in eval."""
    torch.manual_seed(0)
    model = Toy()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            for t in (m.weight, m.bias, m.running_mean):
                t.data.uniform_(-0.5, 0.5)
            m.running_var.data.uniform_(0.5, 1.5)
    return model.eval()


if __name__ == "__main__":
    import flat_toy  # the classes as flat_toy.Block, not __main__.Block, in the metadata
    import onnx

    out = Path(__file__).parent / "data" / "toy_blocks_dynamo.onnx"
    program = torch.onnx.export(flat_toy.toy(), (torch.randn(1, 3, 16, 16),), dynamo=True, opset_version=18)
    proto = program.model_proto
    for node in proto.graph.node:  # the stack traces name this machine's files: left out
        kept = [p for p in node.metadata_props if p.key != "pkg.torch.onnx.stack_trace"]
        del node.metadata_props[:]
        node.metadata_props.extend(kept)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(out))
    sys.stdout.write(f"wrote {out}\n")
