"""Architectures that no spec of specs/ writes, written from the docs alone (tests/specs/new/), each
compared in three ways: the generated PyTorch module against a network written here by hand from the
architecture's definition (the weights copied over by name, eval outputs within 1e-5 of the largest),
the ONNX export run by ONNX Runtime against the generated module, and the summary's parameters and
multiply-adds against counts taken from the hand-written module (its parameters; hooks that count
each convolution's, linear layer's and attention's multiply-adds by the docs' convention, from the
shapes the reference computes). Then the mistakes a user makes in such specs, each a located error
with exit code 2 and nothing written."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nasdsl
from nasdsl import ir
from nasdsl.backends.onnx import export_onnx
from nasdsl.backends.pytorch import model_class

from paths import ROOT

NEW = ROOT / "tests" / "specs" / "new"


# --- the hand-written references -------------------------------------------------------------


def _conv_bn_relu(cin: int, out: int, k: int, *, stride: int = 1, pad: int = 0) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, out, k, stride=stride, padding=pad, bias=False), nn.BatchNorm2d(out), nn.ReLU())


class UNet(nn.Module):
    """Ronneberger et al.'s U-Net at two levels: two 3x3 convolutions per level, max pooling down,
    upsampling (bilinear, then nearest) up, the encoder's map concatenated after the upsampled one."""

    def __init__(self) -> None:
        super().__init__()

        def double(cin: int, out: int) -> nn.Sequential:
            return nn.Sequential(*_conv_bn_relu(cin, out, 3, pad=1), *_conv_bn_relu(out, out, 3, pad=1))

        self.enc1, self.enc2, self.bottleneck = double(3, 8), double(8, 16), double(16, 32)
        self.dec2, self.dec1 = double(32 + 16, 16), double(16 + 8, 8)
        self.head = nn.Conv2d(8, 3, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        b = self.bottleneck(F.max_pool2d(e2, 2))
        up2 = F.interpolate(b, scale_factor=2, mode="bilinear", align_corners=False)
        d2 = self.dec2(torch.cat([up2, e2], 1))
        d1 = self.dec1(torch.cat([F.interpolate(d2, scale_factor=2, mode="nearest"), e1], 1))
        return self.head(d1)


class FPN(nn.Module):
    """Lin et al.'s feature pyramid: 1x1 laterals, the coarser level upsampled (nearest, x2) and
    added, a 3x3 convolution on each level."""

    def __init__(self) -> None:
        super().__init__()
        for name, cin, out in (("c2", 3, 8), ("c3", 8, 16), ("c4", 16, 32)):
            stage = _conv_bn_relu(cin, out, 3, stride=2, pad=1)
            setattr(self, name, nn.ModuleDict({"conv": stage[0], "bn": stage[1]}))
        self.lat4, self.lat3, self.lat2 = nn.Conv2d(32, 16, 1), nn.Conv2d(16, 16, 1), nn.Conv2d(8, 16, 1)
        self.p2, self.p3, self.p4 = (nn.Conv2d(16, 16, 3, padding=1) for _ in range(3))

    def forward(self, x):
        stage = lambda m, v: F.relu(m["bn"](m["conv"](v)))  # noqa: E731
        c2 = stage(self.c2, x)
        c3 = stage(self.c3, c2)
        c4 = stage(self.c4, c3)
        m4 = self.lat4(c4)
        m3 = self.lat3(c3) + F.interpolate(m4, scale_factor=2, mode="nearest")
        m2 = self.lat2(c2) + F.interpolate(m3, scale_factor=2, mode="nearest")
        return self.p2(m2), self.p3(m3), self.p4(m4)


class AudioCNN(nn.Module):
    """A 1-D CNN: a strided stem, dilated convolutions (the second grouped), average pooling to one
    value per channel, a linear classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv1d(2, 16, 9, stride=2, padding=4, bias=False), nn.BatchNorm1d(16))
        self.dilated = nn.Sequential(
            nn.Conv1d(16, 32, 3, padding=2, dilation=2),
            nn.Identity(),
            nn.Conv1d(32, 32, 3, padding=4, dilation=4, groups=4),
        )
        self.fc = nn.Linear(32, 5)

    def forward(self, x):
        x = F.max_pool1d(F.relu(self.stem(x)), 3, stride=2, padding=1)
        x = F.relu(self.dilated[2](F.relu(self.dilated[0](x))))
        x = F.avg_pool1d(x, 2)
        return self.fc(x.mean(2))


class Tiny3D(nn.Module):
    """A 3-D CNN over (C, T, H, W) clips: a 3x5x5 stem strided in space, max pooling, a grouped
    strided 3x3x3 convolution, average pooling in time, global pooling, a linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(3, 8, (3, 5, 5), stride=(1, 2, 2), padding=(1, 2, 2), bias=False)
        self.bn1 = nn.BatchNorm3d(8)
        self.conv2 = nn.Conv3d(8, 16, 3, stride=2, padding=1, groups=2)
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        x = F.max_pool3d(F.relu(self.bn1(self.conv1(x))), (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        x = F.avg_pool3d(F.relu(self.conv2(x)), (2, 1, 1))
        return self.fc(x.mean((2, 3, 4)))


class Attention(nn.Module):
    """Multi-head self-attention written out (Vaswani et al.), its tensors named as
    nn.MultiheadAttention names them."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * dim))
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x):
        n, length, dim = x.shape
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, -1)
        split = lambda t: t.reshape(n, length, self.heads, dim // self.heads).transpose(1, 2)  # noqa: E731
        q, k, v = split(q), split(k), split(v)
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dim // self.heads), -1)
        return self.out_proj((weights @ v).transpose(1, 2).reshape(n, length, dim))


class ViT(nn.Module):
    """Dosovitskiy et al.'s ViT, small: 8x8 patches, a class token in front, a learned position
    embedding added, pre-norm blocks (x + attn(LN(x)); y + MLP(LN(y)), GELU), the class token's
    final LayerNorm classified."""

    def __init__(self, dim: int = 32, heads: int = 4, depth: int = 2) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 8, stride=8)
        self.cls = nn.Parameter(torch.empty(1, 1, dim))
        self.pos_embedding = nn.Parameter(torch.empty(1, 17, dim))
        self.blocks = nn.ModuleList(
            nn.ModuleDict(
                {
                    "ln1": nn.LayerNorm(dim),
                    "attn": Attention(dim, heads),
                    "ln2": nn.LayerNorm(dim),
                    "fc1": nn.Linear(dim, 2 * dim),
                    "fc2": nn.Linear(2 * dim, dim),
                }
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 10)

    def forward(self, x):
        tokens = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(len(x), -1, -1), tokens], 1) + self.pos_embedding
        for b in self.blocks:
            x = x + b["attn"](b["ln1"](x))
            h = b["fc1"](b["ln2"](x))
            x = x + b["fc2"](0.5 * h * (1 + torch.erf(h / math.sqrt(2))))
        return self.head(self.norm(x)[:, 0])


def _bn_convs(module: nn.Module, spec: dict) -> None:
    for name, (cin, out, k, kw) in spec.items():
        setattr(module, name, nn.Conv2d(cin, out, k, bias=False, **kw))
        setattr(module, name.replace("conv", "bn"), nn.BatchNorm2d(out))


class ResNeXtBlock(nn.Module):
    """Xie et al.'s bottleneck with C groups in the 3x3 convolution, optionally Hu et al.'s
    squeeze-and-excitation (reduction 4) on the residual and a projection shortcut."""

    def __init__(self, cin: int, out: int, groups: int, stride: int, se: bool) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, out, 1, bias=False), nn.BatchNorm2d(out)
        self.conv2 = nn.Conv2d(out, out, 3, stride=stride, padding=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(out)
        self.conv3, self.bn3 = nn.Conv2d(out, out, 1, bias=False), nn.BatchNorm2d(out)
        if se:
            self.se = nn.ModuleDict({"fc1": nn.Conv2d(out, out // 4, 1), "fc2": nn.Conv2d(out // 4, out, 1)})
        if stride != 1 or cin != out:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        if hasattr(self, "se"):
            y = y * torch.sigmoid(self.se["fc2"](F.relu(self.se["fc1"](y.mean((2, 3), keepdim=True)))))
        return F.relu(y + (self.shortcut(x) if hasattr(self, "shortcut") else x))


class SepConv(nn.Module):
    """A depthwise 3x3 convolution dilated by d (padded by d, so the size stays), a pointwise one,
    BatchNorm after each and ReLU6 at the end."""

    def __init__(self, ch: int, dilation: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(ch, ch, 3, padding=dilation, dilation=dilation, groups=ch, bias=False)
        self.bn1 = nn.BatchNorm2d(ch)
        self.pw, self.bn2 = nn.Conv2d(ch, ch, 1, bias=False), nn.BatchNorm2d(ch)

    def forward(self, x):
        return F.relu6(self.bn2(self.pw(self.bn1(self.dw(x)))))


class Mixed(nn.Module):
    """The blocks of tests/specs/new/blocks.yaml in order, ShuffleNet's channel shuffle written as
    its definition: (N, g, C/g, H, W) transposed to (N, C/g, g, H, W)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.block1 = ResNeXtBlock(16, 32, 4, 2, se=True)
        self.block2 = ResNeXtBlock(32, 32, 4, 1, se=False)
        self.sep = SepConv(32, 2)
        self.stage = nn.ModuleDict({f"layer{i}": SepConv(32, i + 1) for i in range(3)})
        self.deep = nn.ModuleDict({f"d{d}": nn.Sequential(*(SepConv(32, 1) for _ in range(d))) for d in (1, 3)})
        self.head = nn.Sequential(nn.Identity(), nn.Identity(), nn.Linear(32, 7))

    def forward(self, x):
        x = self.sep(self.block2(self.block1(self.stem(x))))
        n, c, h, w = x.shape
        x = x.reshape(n, 4, c // 4, h, w).transpose(1, 2).reshape(n, c, h, w)
        for layer in self.stage.values():
            x = layer(x)
        for seq in self.deep.values():
            x = seq(x)
        return self.head(x.mean((2, 3)))


class Residual(nn.Module):
    """He et al.'s residual blocks without the ReLU after the sum: y = F(x) + x, and y = F(x) + Ws x
    (a strided 1x1 convolution and BatchNorm) where the width and the size change."""

    def __init__(self) -> None:
        super().__init__()

        def main(cin: int, out: int, stride: int) -> nn.Sequential:
            return nn.Sequential(
                *_conv_bn_relu(cin, out, 3, stride=stride, pad=1),
                nn.Conv2d(out, out, 3, padding=1, bias=False),
                nn.BatchNorm2d(out),
            )

        projection = nn.Sequential(nn.Conv2d(8, 16, 1, stride=2, bias=False), nn.BatchNorm2d(16))
        self.b1 = nn.ModuleDict({"main": main(8, 8, 1)})
        self.b2 = nn.ModuleDict({"main": main(8, 16, 2), "projection": projection})
        self.b3 = nn.ModuleDict({"main": main(16, 16, 1)})

    def forward(self, x):
        x = self.b1["main"](x) + x
        x = self.b2["main"](x) + self.b2["projection"](x)
        return self.b3["main"](x) + x


# the cases: spec, reference, input shape (batch included), the reference's names for the spec's
CASES = {
    "unet": (UNet, (2, 3, 32, 32)),
    "fpn": (FPN, (2, 3, 64, 64)),
    "audio1d": (AudioCNN, (2, 2, 400)),
    "video3d": (Tiny3D, (2, 3, 8, 16, 16)),
    "transformer": (ViT, (2, 3, 32, 32)),
    "blocks": (Mixed, (2, 3, 32, 32)),
    "residual": (Residual, (2, 8, 16, 16)),
}


# --- multiply-adds of the reference, counted from what it computes -----------------------------


def _count_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-adds per sample as the docs count them: a convolution's output elements times
    in/groups times its window, a linear layer's inputs times outputs at each position, attention's
    projections (L·C·3C + L·C·C) and its two products (2·L²·C); nothing else."""
    total = 0

    def conv(m, args, out):
        nonlocal total
        total += out[0].numel() * (m.in_channels // m.groups) * math.prod(m.kernel_size)

    def linear(m, args, out):
        nonlocal total
        total += out[0].numel() * m.in_features

    def attention(m, args, out):
        nonlocal total
        length, dim = args[0].shape[1:]
        total += length * dim * 3 * dim + 2 * length * length * dim  # out_proj is a Linear: hooked

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d):
            hooks.append(m.register_forward_hook(conv))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear))
        elif isinstance(m, Attention):
            hooks.append(m.register_forward_hook(attention))
    with torch.no_grad():
        model(x[:1])
    for h in hooks:
        h.remove()
    return total


def _randomise(model: nn.Module, seed: int) -> None:
    """Random values everywhere, BatchNorm's statistics included, so that no layer is an identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                r = (
                    torch.rand(t.shape, generator=g) + 0.5
                    if "running_var" in name
                    else torch.randn(t.shape, generator=g)
                )
                t.copy_(r * (0.3 if t.dim() > 1 else 1.0))


def _outputs(y) -> list[torch.Tensor]:
    return list(y) if isinstance(y, tuple) else [y]


@functools.cache
def _generated(name: str):
    """The compiled spec tests/specs/new/NAME.yaml and its generated model class."""
    net = nasdsl.compile_spec(NEW / f"{name}.yaml")
    return net, model_class(net.graph)


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    """The compiled spec, its generated model holding the reference's random weights, the reference,
    an input and both models' eval outputs."""
    name = request.param
    make, shape = CASES[name]
    net, generated = _generated(name)
    torch.manual_seed(0)
    reference = make().eval()
    _randomise(reference, 1)
    model = generated().eval()
    ours, theirs = model.state_dict(), reference.state_dict()
    assert [(k, tuple(v.shape)) for k, v in ours.items() if "num_batches" not in k] == [
        (k, tuple(v.shape)) for k, v in theirs.items() if "num_batches" not in k
    ]
    model.load_state_dict(theirs, strict=True)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        got, want = _outputs(model(x)), _outputs(reference(x))
    return name, net, model, reference, x, got, want


def test_the_generated_model_computes_the_hand_written_network(case):
    _, _, _, _, _, got, want = case
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
        assert float((g - w).abs().max() / w.abs().max()) < 1e-5


def test_onnx_runtime_computes_the_generated_model(case):
    _, net, model, _, x, got, _ = case
    proto = export_onnx(net.graph, opset=17, state_dict=model.state_dict(), batch=x.shape[0])
    import onnxruntime as ort

    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    ran = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert len(ran) == len(got)
    for r, g in zip(ran, got, strict=True):
        assert float(np.abs(r - g.numpy()).max() / g.abs().max()) < 1e-5


def test_the_summary_counts_what_the_reference_holds_and_computes(case):
    _, net, _, reference, x, _, _ = case
    totals = net.summary()["totals"]
    assert totals["params"] == sum(p.numel() for p in reference.parameters())
    assert totals["macs"] == _count_macs(reference, x)


def test_a_template_whose_body_is_a_repeat_is_one_class_for_every_count():
    """blocks.yaml uses Deep (body: repeat: depth) at depths 1 and 3; its class builds any depth,
    the first block reading the class's input and the others the width it makes."""
    _, generated = _generated("blocks")
    deep = generated.__init__.__globals__["Deep"]
    for depth in (1, 2, 4):
        block = deep(48, 24, depth)  # the first depthwise convolution's 24 groups read 2 channels each
        assert len(block) == depth
        assert [m.dw.in_channels for m in block] == [48] + [24] * (depth - 1)
        assert block(torch.randn(1, 48, 5, 5)).shape == (1, 24, 5, 5)


@pytest.mark.parametrize("depths", [(1, 3), (2, 3)])
def test_a_repeated_body_with_a_name_pattern_is_one_class(depths, tmp_path):
    """Deep's blocks named `unit{i + 1}`, used at two depths (1 and 3: the loop is learned from the
    deeper use; 2 and 3: a loop from 1 of one block, named by the pattern of all the names)."""
    text = (NEW / "blocks.yaml").read_text(encoding="utf-8")
    text = text.replace("      repeat: depth\n", '      repeat: depth\n      name: "unit{i + 1}"\n', 1)
    text = text.replace(
        'd1: {use: Deep, args: ["2 * width", 1]}', f'd1: {{use: Deep, args: ["2 * width", {depths[0]}]}}'
    )
    text = text.replace(
        'd3: {use: Deep, args: ["2 * width", 3]}', f'd3: {{use: Deep, args: ["2 * width", {depths[1]}]}}'
    )
    (tmp_path / "named.yaml").write_text(text, encoding="utf-8")
    net = nasdsl.compile_spec(tmp_path / "named.yaml")
    model = model_class(net.graph)()
    names = {k.rsplit(".", 2)[0] for k in model.state_dict() if k.startswith("deep.")}
    assert names == {f"deep.d1.unit{k + 1}" for k in range(depths[0])} | {
        f"deep.d3.unit{k + 1}" for k in range(depths[1])
    }
    deep = type(model.deep.d1)(48, 24, 4)
    assert list(deep._modules) == ["unit1", "unit2", "unit3", "unit4"]
    assert [m.dw.in_channels for m in deep] == [48, 24, 24, 24]


# --- what a user gets wrong ----------------------------------------------------------------------

# (id, spec, text replaced, replacement, the whole message); each a mistake made in the specs above
MISTAKES = [
    (
        "typo-of-an-attribute",
        "unet",
        "pool1: {op: max_pool, kernel: 2}",
        "pool1: {op: max_pool, kernal: 2}",
        "{f}:26:25: error: model.pool1.kernal: unknown key 'kernal' in op max_pool (did you mean 'kernel'?); "
        "allowed: kernel, stride, padding, ceil_mode, phase, when, doc, from",
    ),
    (
        "typo-of-an-op",
        "unet",
        "pool1: {op: max_pool,",
        "pool1: {op: maxpool,",
        "{f}:26:15: error: model.pool1.op: unknown op 'maxpool' (did you mean 'max_pool'?)",
    ),
    (
        "typo-of-a-merge",
        "unet",
        "cat2: {concat:",
        "cat2: {conact:",
        "{f}:31:10: error: model.cat2.conact: 'conact' names a sequence of these blocks, which reads like a "
        "merge: did you mean the merge {{concat: ...}}? (to keep a sequence, give it another name, or write "
        "conact: {{seq: ...}})",
    ),
    (
        "typo-of-when",
        "blocks",
        "args: [out], when: se}",
        "args: [out], wen: se}",
        "{f}:39:34: error: templates.ResNeXt.body.se.wen: unknown key 'wen' in template use (did you mean "
        "'when'?); allowed: use, args, phase, when, doc, from",
    ),
    # a misspelt section: its key is named, and not every use of a template or variable it holds
    (
        "typo-of-the-templates-section",
        "unet",
        "\ntemplates:\n",
        "\ntemplate:\n",
        "{f}:12:1: error: template: unknown key 'template' in a spec (did you mean 'templates'?); allowed: nasdsl, "
        "name, doc, extends, input, variables, init, templates, model, outputs, outputs_by_name, evaluation",
    ),
    (
        "typo-of-the-variables-section",
        "unet",
        "\nvariables:\n",
        "\nvariabels:\n",
        "{f}:8:1: error: variabels: unknown key 'variabels' in a spec (did you mean 'variables'?); allowed: "
        "nasdsl, name, doc, extends, input, variables, init, templates, model, outputs, outputs_by_name, evaluation",
    ),
    # a misspelt key beside a missing one: the typo is named, not only the missing key
    (
        "typo-of-a-repeat-block",
        "transformer",
        "    block: {use: Block",
        "    blok: {use: Block",
        "{f}:38:5: error: model.blocks.blok: unknown key 'blok' in repeat (did you mean 'block'?); allowed: "
        "repeat, block, index, name, flat, previous, phase, when, doc, from",
    ),
    (
        "typo-of-a-template-body",
        "unet",
        "    body:\n",
        "    bdy:\n",
        "{f}:16:5: error: templates.DoubleConv.bdy: unknown key 'bdy' in template DoubleConv (did you mean "
        "'body'?); allowed: params, inputs, body, doc, build_order",
    ),
    (
        "typo-of-an-output-from",
        "fpn",
        "p3: {from: p3}",
        "p3: {frm: p3}",
        "{f}:37:8: error: outputs.p3.frm: unknown key 'frm' in output p3 (did you mean 'from'?); allowed: "
        "from, head, loss_weight, training_only, when",
    ),
    (
        "typo-of-the-input-shape",
        "audio1d",
        "  shape: [2, 400]",
        "  shap: [2, 400]",
        "{f}:6:3: error: input.shap: unknown key 'shap' in input (did you mean 'shape'?); allowed: name, shape, "
        "axes, mean, std, doc",
    ),
    (
        "channels-at-an-add",
        "fpn",
        "lat3: {op: conv2d, out: channels,",
        "lat3: {op: conv2d, out: 12,",
        "{f}:27:8: error: model.td3: expected add inputs of one shape, got 12x16x16, 16x16x16 (from lat3, up4)",
    ),
    (
        "sizes-at-a-concat",
        "unet",
        "up2: {op: interpolate, scale: 2, mode: bilinear}",
        "up2: identity",
        "{f}:31:9: error: model.cat2: expected concat inputs that differ only in channels, got 32x8x8, "
        "16x16x16 (from up2, enc2.5)",
    ),
    (
        "missing-template-argument",
        "unet",
        'enc2: {use: DoubleConv, args: ["2 * base"]}',
        "enc2: {use: DoubleConv}",
        "{f}:27:9: error: model.enc2: missing argument 'out' of DoubleConv(out)",
    ),
    (
        "conv2d-on-a-signal",
        "audio1d",
        "{op: conv1d, out: 16, kernel: 9",
        "{op: conv2d, out: 16, kernel: 9",
        "{f}:14:7: error: model.stem[0]: expected a feature map (C, H, W) as the input of conv2d, got a (C, L) "
        "map 2x400",
    ),
    (
        "conv3d-on-an-image",
        "video3d",
        "shape: [3, 8, 16, 16]",
        "shape: [3, 16, 16]",
        "{f}:9:10: error: model.conv1: expected a feature map (C, T, H, W) as the input of conv3d, got a "
        "(C, H, W) map 3x16x16",
    ),
    (
        "groups-that-do-not-divide",
        "blocks",
        "cardinality: 4",
        "cardinality: 5",
        "{f}:34:14: error: templates.ResNeXt.body.conv2: expected groups that divide the input channels 32 and "
        "the output channels 32, got 5 (in node block1.conv2)",
    ),
    (
        "heads-that-do-not-divide",
        "transformer",
        "heads: 4",
        "heads: 5",
        "{f}:20:13: error: templates.Block.body.attn: expected heads that divide the embedding size 32, got 5 "
        "(in node blocks.0.attn)",
    ),
    # a repeat's count a template argument gives is blamed on the argument, as an attribute's is
    (
        "a-repeat-count-of-zero",
        "blocks",
        'd3: {use: Deep, args: ["2 * width", 3]}',
        'd3: {use: Deep, args: ["2 * width", 0]}',
        "{f}:78:41: error: model.deep.d3.args[1]: expected an integer > 0, got 0 (used as the count of repeat deep.d3)",
    ),
    # the class's first argument is its input's size: a parameter of that name wrote a class with two
    # arguments of one name (a SyntaxError in a file said to be written)
    (
        "a-parameter-named-in-features",
        "transformer",
        "params: [heads, mlp]",
        "params: [heads, in_features]",
        "{f}:17:21: error: templates.Block.params[1]: parameter name 'in_features' is reserved: the generated "
        "class receives its input's size under it (in_channels for a map, in_features for tokens)",
    ),
]


@pytest.mark.parametrize("mistake", MISTAKES, ids=[m[0] for m in MISTAKES])
def test_a_mistake_is_a_located_error_and_nothing_is_written(mistake, tmp_path, monkeypatch, capsys):
    from nasdsl.cli import main

    name, spec, old, new, message = mistake
    text = (NEW / f"{spec}.yaml").read_text(encoding="utf-8")
    assert text.count(old) == 1, old
    (tmp_path / f"{name}.yaml").write_text(text.replace(old, new), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    target = "x.onnx" if MISTAKES.index(mistake) % 2 else "x.py"  # the error comes before either backend
    rc = main(["compile", f"{name}.yaml", "-o", f"out/{target}"])
    out, err = capsys.readouterr()
    assert (rc, out, err) == (2, "", message.format(f=f"{name}.yaml") + "\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{name}.yaml"]


def test_a_sequence_named_main_is_a_sequence_and_typos_of_merges_are_still_refused(tmp_path):
    """`main` is two typos from `mean`: a residual block's main path, not a misspelt merge."""
    net = nasdsl.compile_spec(NEW / "residual.yaml")
    assert ir.node(net.graph, "b2.main.0").op == "conv2d"
    assert ir.node(net.graph, "b1.sum").op == "add"
    assert ir.inputs(net.graph, "b1.sum") == ["b1.main.4", "x"]  # the projection off: the block's input
    text = (NEW / "residual.yaml").read_text(encoding="utf-8")
    for typo, merge in (("mian", "mean"), ("mull", "mul"), ("concta", "concat"), ("ad", "add")):
        (tmp_path / "typo.yaml").write_text(text.replace("      main:\n", f"      {typo}:\n", 1), encoding="utf-8")
        with pytest.raises(nasdsl.NasdslError, match=rf"did you mean the merge \{{{merge}: ...\}}\?"):
            nasdsl.compile_spec(tmp_path / "typo.yaml")


def test_a_merge_branch_switched_at_some_uses_says_how_to_write_it(tmp_path, monkeypatch, capsys):
    from nasdsl.cli import main

    text = (NEW / "residual.yaml").read_text(encoding="utf-8")
    start, end = text.index("    body:\n"), text.index("model:\n")
    branches = """    body:
      add:
        main:
          - {op: conv2d, out: out, kernel: 3, stride: stride, padding: 1, bias: false}
          - batch_norm
        shortcut: {op: identity, when: same}
        projection:
          when: proj
          seq:
            - {op: conv2d, out: out, kernel: 1, stride: stride, bias: false}
            - batch_norm
"""
    text = text[:start] + branches + text[end:]
    text = text.replace("{proj: false}]", '{proj: false}, {same: "not proj"}]')
    (tmp_path / "branches.yaml").write_text(text, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert main(["compile", "branches.yaml", "-o", "out/x.py"]) == 2
    out, err = capsys.readouterr()
    assert (out, err) == (
        "",
        "branches.yaml:24:7: error: model.b2: template Res needs different code at b1 and b2: the branch "
        "'shortcut' of the body's merge is built at one use and not at the other, and a class writes a merge "
        "of the branches every use builds: at b1 it would write `self.shortcut = nn.Identity()` where at b2 it "
        "would write `self.projection = nn.Sequential(`; write the branches as entries of a named body that the "
        "merge reads by `ref` (an entry a parameter switches off passes its input on: `from: in` with `when:`), "
        "or use one template per variant\n",
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["branches.yaml"]


def test_a_parameter_named_after_an_input_size_is_refused(tmp_path):
    """A template of two inputs s0 and s1 receives s0_channels and s1_channels: a parameter so named
    made the class build its layers from the parameter where it meant the input's size."""
    (tmp_path / "cell.yaml").write_text(
        """nasdsl: 1
name: TwoInputs
input:
  shape: [4, 8, 8]
templates:
  Cell:
    params: [s0_channels]
    inputs: [s0, s1]
    body:
      a: {op: conv2d, out: s0_channels, kernel: 1, from: s0}
      b: {op: conv2d, out: s0_channels, kernel: 1, from: s1}
      s: {add: [{ref: a}, {ref: b}]}
model:
  stem: {op: conv2d, out: 6, kernel: 1}
  c: {use: Cell, args: [5], from: [stem, stem]}
""",
        encoding="utf-8",
    )
    with pytest.raises(nasdsl.NasdslError) as e:
        nasdsl.compile_spec(tmp_path / "cell.yaml")
    assert e.value.format().endswith(
        "cell.yaml:7:14: error: templates.Cell.params[0]: parameter name 's0_channels' is reserved: the generated "
        "class receives the size of the input 's0' under it"
    )


def test_the_importer_renames_a_constructor_argument_named_in_features(tmp_path, monkeypatch):
    (tmp_path / "mlpnet.py").write_text(
        """from torch import nn


class Block(nn.Module):
    # a constructor argument named as the spec's reserved input size of tokens
    def __init__(self, in_features, hidden):
        super().__init__()
        self.expand = nn.Conv2d(in_features, hidden, 1)
        self.act = nn.ReLU()
        self.project = nn.Conv2d(hidden, in_features, 1)

    def forward(self, x):
        return self.project(self.act(self.expand(x)))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.a = Block(8, 32)
        self.proj = nn.Conv2d(8, 24, 1)
        self.b = Block(24, 48)

    def forward(self, x):
        return self.b(self.proj(self.a(self.stem(x))))


def build():
    return Net()
""",
        encoding="utf-8",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    result = nasdsl.import_model("module:mlpnet:build", input_shape=(3, 8, 8))
    assert "in_features" not in result.text and "params: [features_in, hidden]" in result.text
