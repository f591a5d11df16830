"""NAS-Bench-201's network, written by hand in PyTorch from the paper's definition (Dong & Yang,
"NAS-Bench-201: Extending the Scope of Reproducible Neural Architecture Search", ICLR 2020, section
2.1 and figure 1), as the reference that specs/spaces/nas_bench_201.yaml is tested against.

The skeleton: a 3x3 convolution (3 -> C, no bias) and BatchNorm; three stages of N cells at C, 2C and
4C channels; between the stages a residual block that halves the resolution and doubles the channels
(ReLU-conv3x3/2-BN, ReLU-conv3x3-BN, plus a shortcut of 2x2 average pooling and a 1x1 convolution);
then BatchNorm, ReLU, global average pooling and a linear classifier.

The cell: node 0 is the cell's input; node i (1..3) is the sum over j < i of op_ij(node j); node 3 is
the output. An op is ``none``, ``skip_connect``, ``nor_conv_1x1``, ``nor_conv_3x3`` (ReLU, convolution
without bias, BatchNorm) or ``avg_pool_3x3`` (stride 1, padding 1, padding not counted). A ``none`` edge
is absent from its node's sum; a node none of whose edges is present is absent, and so are the edges
that leave it (they would read nothing). The modules are registered in the order the spec writes
them (the edges into node 1, node 2, node 3, each in order of its source), so that state_dicts line
up by position.
"""

from __future__ import annotations

import torch
from torch import nn

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
#: the edges (source, target) in the order the cell's modules are registered
EDGES = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))


class ReLUConvBN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1):
        super().__init__(
            nn.ReLU(),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=(kernel - 1) // 2, bias=False),
            nn.BatchNorm2d(c_out),
        )


def _op(name: str, c: int) -> nn.Module:
    if name == "skip_connect":
        return nn.Identity()
    if name == "nor_conv_1x1":
        return ReLUConvBN(c, c, 1)
    if name == "nor_conv_3x3":
        return ReLUConvBN(c, c, 3)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise ValueError(name)


class Cell(nn.Module):
    def __init__(self, c: int, ops: tuple[str, ...]):
        super().__init__()
        self.live = {0}
        self.edges = nn.ModuleDict()
        for (j, i), name in zip(EDGES, ops, strict=True):
            if name != "none" and j in self.live:
                self.edges[f"{j}_{i}"] = _op(name, c)
                self.live.add(i)
        assert 3 in self.live, "a cell whose output is cut off from its input"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = {0: x}
        for i in (1, 2, 3):
            terms = [self.edges[f"{j}_{i}"](nodes[j]) for j in range(i) if f"{j}_{i}" in self.edges]
            if terms:
                nodes[i] = sum(terms[1:], terms[0])
        return nodes[3]


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, stride=2)
        self.conv_b = ReLUConvBN(c_out, c_out, 3)
        self.downsample = nn.Sequential(nn.AvgPool2d(2, stride=2), nn.Conv2d(c_in, c_out, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_b(self.conv_a(x)) + self.downsample(x)


class TinyNetwork(nn.Module):
    def __init__(self, ops: tuple[str, ...], c: int = 16, n: int = 5, num_classes: int = 10):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)]
        for stage, width in enumerate((c, 2 * c, 4 * c)):
            if stage:
                layers.append(ResBlock(width // 2, width))
            layers += [Cell(width, ops) for _ in range(n)]
        layers += [nn.BatchNorm2d(4 * c), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(4 * c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def multiply_adds(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-adds of one sample: each convolution's output elements x its input channels per group
    x its window, each linear layer's inputs x outputs (pooling and BatchNorm count none)."""
    total = 0

    def conv(m: nn.Conv2d, _, out: torch.Tensor) -> None:
        nonlocal total
        total += out[0].numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def linear(m: nn.Linear, _, out: torch.Tensor) -> None:
        nonlocal total
        total += m.in_features * m.out_features

    hooks = [m.register_forward_hook(conv) for m in model.modules() if isinstance(m, nn.Conv2d)]
    hooks += [m.register_forward_hook(linear) for m in model.modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        model(x[:1])
    for h in hooks:
        h.remove()
    return total
