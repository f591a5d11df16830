"""DARTS' evaluation network for CIFAR-10, written by hand from the paper (Liu, Simonyan & Yang,
"DARTS: Differentiable Architecture Search", ICLR 2019, section 2 and appendix A.1.2) for the tests
of specs/spaces/darts.yaml. No auxiliary head.

A genotype lists, for each cell type, two (op, input) pairs per node: inputs 0 and 1 are the cell's
two inputs (the outputs of the cells two before and one before, each brought to C channels by a
ReLU-1x1 convolution-BatchNorm, or by FactorizedReduce where the cell before was a reduction),
input k >= 2 is node k - 2. A node sums its two ops; the cell joins its four nodes. In a reduction
cell the ops that read the cell's inputs have stride 2 (skip_connect becomes FactorizedReduce).
Cells `layers // 3` and `2 * layers // 3` are reductions and double C. The network is a 3x3
convolution of 3C channels with BatchNorm, the cells (each reading the two values before it, both
the stem's output at first), global average pooling and a linear classifier.

:func:`load_from_nasdsl` copies the weights of the model generated from the spec into this one by
the spec's names, so that both compute with the same weights.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

#: DARTS-V2, the cell the paper publishes (genotypes.py of the authors' code)
DARTS_V2 = {
    "normal": [
        ("sep_conv_3x3", 0),
        ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 0),
        ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 1),
        ("skip_connect", 0),
        ("skip_connect", 0),
        ("dil_conv_3x3", 2),
    ],
    "reduce": [
        ("max_pool_3x3", 0),
        ("max_pool_3x3", 1),
        ("skip_connect", 2),
        ("max_pool_3x3", 1),
        ("max_pool_3x3", 0),
        ("skip_connect", 2),
        ("skip_connect", 2),
        ("max_pool_3x3", 1),
    ],
}

OPS = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)


class ReLUConvBN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int):
        super().__init__(nn.ReLU(), nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))


class FactorizedReduce(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x):
        x = torch.relu(x)
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1))


class SepConv(nn.Sequential):
    def __init__(self, c: int, k: int, stride: int):
        p = k // 2
        super().__init__(
            nn.ReLU(),
            nn.Conv2d(c, c, k, stride, p, groups=c, bias=False),
            nn.Conv2d(c, c, 1, bias=False),
            nn.BatchNorm2d(c),
            nn.ReLU(),
            nn.Conv2d(c, c, k, 1, p, groups=c, bias=False),
            nn.Conv2d(c, c, 1, bias=False),
            nn.BatchNorm2d(c),
        )


class DilConv(nn.Sequential):
    def __init__(self, c: int, k: int, stride: int):
        super().__init__(
            nn.ReLU(),
            nn.Conv2d(c, c, k, stride, k - 1, dilation=2, groups=c, bias=False),
            nn.Conv2d(c, c, 1, bias=False),
            nn.BatchNorm2d(c),
        )


class Zero(nn.Module):
    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        return x[:, :, :: self.stride, :: self.stride] * 0.0


def make_op(name: str, c: int, stride: int) -> nn.Module:
    if name == "none":
        return Zero(stride)
    if name == "max_pool_3x3":
        return nn.MaxPool2d(3, stride, 1)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride, 1, count_include_pad=False)
    if name == "skip_connect":
        return nn.Identity() if stride == 1 else FactorizedReduce(c, c)
    kind, size = name.split("_conv_")
    k = int(size[0])
    return SepConv(c, k, stride) if kind == "sep" else DilConv(c, k, stride)


class Cell(nn.Module):
    def __init__(self, edges, c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool):
        super().__init__()
        self.edges = edges
        self.preprocess0 = FactorizedReduce(c_pp, c) if reduction_prev else ReLUConvBN(c_pp, c)
        self.preprocess1 = ReLUConvBN(c_p, c)
        self.ops = nn.ModuleList(make_op(op, c, 2 if reduction and j < 2 else 1) for op, j in edges)

    def forward(self, s0, s1):
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for i in range(4):
            (_, a), (_, b) = self.edges[2 * i], self.edges[2 * i + 1]
            states.append(self.ops[2 * i](states[a]) + self.ops[2 * i + 1](states[b]))
        return torch.cat(states[2:], dim=1)


class Network(nn.Module):
    def __init__(self, genotype: Mapping[str, list], c: int = 36, layers: int = 20, classes: int = 10):
        super().__init__()
        self.layers = layers
        self.stem = nn.Sequential(nn.Conv2d(3, 3 * c, 3, padding=1, bias=False), nn.BatchNorm2d(3 * c))
        c_pp, c_p, c_cur = 3 * c, 3 * c, c
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                c_cur *= 2
            edges = genotype["reduce" if reduction else "normal"]
            self.cells.append(Cell(edges, c_pp, c_p, c_cur, reduction, reduction_prev))
            reduction_prev = reduction
            c_pp, c_p = c_p, 4 * c_cur
        self.classifier = nn.Linear(c_p, classes)

    def forward(self, x):
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return self.classifier(s1.mean((2, 3)))


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, shape: tuple[int, ...]) -> int:
    """Multiply-adds of convolutions (output elements x input channels per group x window) and
    linear layers, counted by running the model once."""
    total = 0

    def conv(m, _, out):
        nonlocal total
        total += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def linear(m, _, out):
        nonlocal total
        total += out.numel() * m.in_features

    hooks = [
        m.register_forward_hook(conv if isinstance(m, nn.Conv2d) else linear)
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    with torch.no_grad():
        model.eval()(torch.zeros(1, *shape))
    for h in hooks:
        h.remove()
    return total


# ---------------------------------------------------------------------------
# The spec's names


def cell_paths(layers: int) -> list[str]:
    """The path of each cell in specs/spaces/darts.yaml, in order."""
    r1, r2 = layers // 3, 2 * layers // 3
    paths = [f"stage1.{i}" for i in range(r1)] + ["reduce1", "first2"]
    paths += [f"stage2.{i}" for i in range(r2 - r1 - 2)] + ["reduce2", "first3"]
    return paths + [f"stage3.{i}" for i in range(layers - r2 - 2)]


def _names(module: nn.Module, prefix: str) -> dict[str, str]:
    """The spec's name of each tensor of one of this file's modules (reference name -> spec name)."""
    out: dict[str, str] = {}
    if isinstance(module, ReLUConvBN | SepConv | DilConv):  # the spec's lists: the same indices
        return {k: f"{prefix}.{k}" for k in module.state_dict()}
    if isinstance(module, FactorizedReduce):
        for k in module.state_dict():
            part, rest = k.split(".", 1)
            out[k] = f"{prefix}.{'conv_2.2' if part == 'conv_2' else part}.{rest}"
        return out
    assert not module.state_dict(), module
    return out


def spec_settings(genotype: Mapping[str, list]) -> list[str]:
    """The spec's --set values for a genotype: each node's two inputs in their order, the first
    picked with op0 (node 0 always reads the cell's two inputs)."""
    names = ["preprocess0", "preprocess1", "n0", "n1", "n2"]
    sets = []
    for kind, prefix in (("normal", "normal"), ("reduce", "reduce")):
        edges = genotype[kind]
        for i in range(4):
            pair = sorted([edges[2 * i], edges[2 * i + 1]], key=lambda e: e[1])
            if pair[0][1] == pair[1][1]:
                raise ValueError(f"node {i} of the {kind} cell reads input {pair[0][1]} twice")
            if i > 0:
                sets.append(f"{prefix}_n{i}_in=[{names[pair[0][1]]},{names[pair[1][1]]}]")
            sets.append(f"{prefix}_n{i}_op0={pair[0][0]}")
            sets.append(f"{prefix}_n{i}_op1={pair[1][0]}")
    return sets


def load_from_nasdsl(model: Network, state: Mapping[str, torch.Tensor]) -> None:
    """Copy the generated model's ``state`` into ``model`` by the spec's names; every tensor of
    both is used exactly once."""
    mapping = {f"stem.{k}": f"stem.{k}" for k in model.stem.state_dict()}
    mapping |= {f"classifier.{k}": f"classifier.{k}" for k in model.classifier.state_dict()}
    for i, (cell, path) in enumerate(zip(model.cells, cell_paths(model.layers), strict=True)):
        for part in ("preprocess0", "preprocess1"):
            for k, v in _names(getattr(cell, part), f"{path}.{part}").items():
                mapping[f"cells.{i}.{part}.{k}"] = v
        for node in range(4):
            edges = [(2 * node, cell.edges[2 * node]), (2 * node + 1, cell.edges[2 * node + 1])]
            edges.sort(key=lambda e: e[1][1])  # the branch that reads the earlier value is branch 0
            for branch, (e, (name, _)) in enumerate(edges):
                where = f"{path}.n{node}.{branch}"
                op = cell.ops[e]
                if name == "skip_connect" and isinstance(op, FactorizedReduce):
                    where += ".reduce"
                for k, v in _names(op, where).items():
                    mapping[f"cells.{i}.ops.{e}.{k}"] = v
    own = model.state_dict()
    assert set(mapping) == set(own), sorted(set(own) ^ set(mapping))[:5]
    assert sorted(mapping.values()) == sorted(state), sorted(set(state) ^ set(mapping.values()))[:5]
    model.load_state_dict({k: state[v] for k, v in mapping.items()})
