"""Once-for-All's MobileNetV3 sub-networks, written by hand in PyTorch from the definitions (Cai et al.,
"Once-for-All: Train One Network and Specialize it for Efficient Deployment", ICLR 2020, section 3, and
the OFAMobileNetV3 supernet of the authors' code), as the reference that
specs/spaces/ofa_mobilenet_v3.yaml is tested against.

A sub-network is given as OFA gives it: ``ks`` and ``e``, the kernel and expansion ratio of each of
the 20 elastic blocks (4 per stage, the ones a stage's depth leaves out ignored), and ``d``, the depth
of each of the 5 stages. Widths are the base widths times ``width`` rounded to multiples of 8
(``make_divisible``): 16 (first conv and first block), 24, 40, 80, 112, 160 (the stages), 960 (final
expand), 1280 (feature mix). Strides 2, 2, 2, 1, 2 (the stage's first block); ReLU in stages 1 and 2,
hard-swish after; SE in stages 2, 4 and 5, on the depthwise convolution's output, squeezing to
make_divisible(channels // 4, 8). The modules are registered in the order the spec writes them, so
that state_dicts line up by position.
"""

from __future__ import annotations

import torch
from torch import nn

WIDTHS = (24, 40, 80, 112, 160)
STRIDES = (2, 2, 2, 1, 2)
HSWISH = (False, False, True, True, True)
SE = (False, True, False, True, True)


def make_divisible(v: float, divisor: int = 8) -> int:
    """The TensorFlow MobileNet rule: the nearest multiple of ``divisor``, at least ``divisor`` and
    never more than 10% below ``v``."""
    rounded = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * v else rounded


def _act(hswish: bool) -> nn.Module:
    return nn.Hardswish() if hswish else nn.ReLU()


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        mid = make_divisible(channels // 4)
        self.reduce = nn.Conv2d(channels, mid, 1)
        self.expand = nn.Conv2d(mid, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.mean(dim=(2, 3), keepdim=True)
        return x * nn.functional.hardsigmoid(self.expand(torch.relu(self.reduce(y))))


class MBConv(nn.Module):
    """expand (1x1, BN, act; left out at ratio 1), depthwise k x k (BN, act, SE), project (1x1, BN)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, ratio: int, stride: int, hswish: bool, se: bool):
        super().__init__()
        mid = c_in * ratio
        layers: list[nn.Module] = []
        if ratio != 1:
            layers += [nn.Conv2d(c_in, mid, 1, bias=False), nn.BatchNorm2d(mid), _act(hswish)]
        layers += [
            nn.Conv2d(mid, mid, kernel, stride=stride, padding=kernel // 2, groups=mid, bias=False),
            nn.BatchNorm2d(mid),
            _act(hswish),
        ]
        if se:
            layers.append(SqueezeExcite(mid))
        layers += [nn.Conv2d(mid, c_out, 1, bias=False), nn.BatchNorm2d(c_out)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return y + x if self.residual else y


class OFASubnet(nn.Module):
    def __init__(self, ks, e, d, width: float = 1.0, num_classes: int = 1000):
        super().__init__()
        assert len(ks) == len(e) == 20 and len(d) == 5 and all(2 <= n <= 4 for n in d)
        stem = make_divisible(16 * width)
        layers: list[nn.Module] = [
            nn.Conv2d(3, stem, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(stem),
            nn.Hardswish(),
            MBConv(stem, stem, 3, 1, 1, hswish=False, se=False),
        ]
        c = stem
        for s in range(5):
            out = make_divisible(WIDTHS[s] * width)
            for b in range(d[s]):
                i = 4 * s + b
                stride = STRIDES[s] if b == 0 else 1
                layers.append(MBConv(c, out, ks[i], e[i], stride, HSWISH[s], SE[s]))
                c = out
        final, last = make_divisible(960 * width), make_divisible(1280 * width)
        layers += [nn.Conv2d(c, final, 1, bias=False), nn.BatchNorm2d(final), nn.Hardswish()]
        self.features = nn.Sequential(*layers)
        self.mix = nn.Conv2d(final, last, 1, bias=False)
        self.classifier = nn.Linear(last, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x).mean(dim=(2, 3), keepdim=True)
        x = nn.functional.hardswish(self.mix(x))
        return self.classifier(x.flatten(1))


def settings(ks, e, d) -> list[str]:
    """The ``--set`` arguments of specs/spaces/ofa_mobilenet_v3.yaml for this sub-network."""
    out = [f"d{s + 1}={d[s]}" for s in range(5)]
    for s in range(5):
        for b in range(d[s]):
            out += [f"k{s + 1}_{b + 1}={ks[4 * s + b]}", f"e{s + 1}_{b + 1}={e[4 * s + b]}"]
    return out
