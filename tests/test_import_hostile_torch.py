"""``nasdsl import`` of small hand-written PyTorch models that torchvision has none of.

Each model is imported with its tensors and either checked against itself (the module run in
eval, on one seeded input: ``nasdsl.backends.verify.verify_import``, what ``--check`` runs), or
refused with an error located at the line of the forward that made the node (exit 2 at the
command line, nothing written). Every case here was once read otherwise: a spec that computed
something else than the module (``torch.add(a, b, alpha=2)`` read as ``a + b``, a softmax of a
permuted map's axis 1 read as one over its channels, ``keep = y; y += z`` read as if ``keep``
kept the value before the sum), an internal error or a traceback, or a refusal of what a spec
says (a chunk along another axis than the channels, ``y[:, :4]``, ``sum(...)`` of branches).
"""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nasdsl.backends.verify import verify_import
from nasdsl.cli import main as cli_main
from nasdsl.importer import ImportFailure, import_model

HERE = __file__


def imported(cls, shape=(3, 8, 8)):
    torch.manual_seed(0)
    return import_model(cls, input_shape=shape, weights=True)


def checked(cls, shape=(3, 8, 8)):
    """The import of ``cls``, run against the module it was read from."""
    result = imported(cls, shape)
    verification = verify_import(result.compiled.graph, result.weights, result.reference)
    assert verification.ok, [(c.name, c.max_rel) for c in verification.checks]
    assert max(c.max_rel for c in verification.checks) <= 1e-4
    return result


def refused(cls, shape=(3, 8, 8)) -> str:
    with pytest.raises(ImportFailure) as e:
        imported(cls, shape)
    return e.value.format()


def located(cls, text: str) -> None:
    """Refused with ``text``, at a line of this file (the forward's)."""
    message = refused(cls)
    assert message.startswith(f"{HERE}:"), message
    assert text in message, message


# -- models -----------------------------------------------------------------------------------


class TwoConvs(nn.Module):
    """Two 1x1 convolutions of the input, for the forwards below to join."""

    def __init__(self, out: int = 4):
        super().__init__()
        self.a = nn.Conv2d(3, out, 1)
        self.b = nn.Conv2d(3, out, 1)


class AddAlpha(TwoConvs):
    def forward(self, x):
        return torch.add(self.a(x), self.b(x), alpha=2)


class KeptBeforeSum(TwoConvs):
    def forward(self, x):
        y = self.a(x)
        keep = y  # the same tensor: the sum below changes it too
        y += self.b(x)
        return torch.cat([keep, y], 1)


class ReluInPlaceReadAgain(TwoConvs):
    def forward(self, x):
        y = self.a(x)
        z = F.relu(y, inplace=True)
        return y + z  # y is relu(y) by now


class ModuleInPlaceReadAgain(TwoConvs):
    def __init__(self):
        super().__init__()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        y = self.a(x)
        return self.b(x) * self.act(y) + y


class MethodsInPlace(TwoConvs):
    def forward(self, x):
        y = self.a(x)
        y.add_(self.b(x))
        return y.relu_()


class ViewChangedInPlace(TwoConvs):
    def forward(self, x):
        y = self.a(x)
        p, _ = y.chunk(2, 1)
        p.relu_()  # changes y's first two channels
        return y


class DropoutAtInference(TwoConvs):
    def forward(self, x):
        return F.dropout(self.a(x), 0.3)  # training=True unless given: it drops in eval too


class PermutedSoftmax(TwoConvs):
    def forward(self, x):
        return F.softmax(self.a(x).permute(0, 2, 3, 1), dim=1)  # over H: the channels are last


class PermutedCat(TwoConvs):
    def forward(self, x):
        return torch.cat([self.a(x).permute(0, 2, 3, 1), self.b(x).permute(0, 2, 3, 1)], 1)


class PermutedChunk(TwoConvs):
    def forward(self, x):
        p, q = self.a(x).permute(0, 2, 3, 1).chunk(2, 1)
        return p * q


class PermutedPool(TwoConvs):
    def forward(self, x):
        return F.max_pool2d(self.a(x).permute(0, 3, 1, 2), 2)


class SumBroadcastFirst(TwoConvs):
    def forward(self, x):
        y = self.a(x)
        return F.adaptive_avg_pool2d(y, 1) + y  # (C, 1, 1) + (C, H, W): the spec's add takes one shape


class Pieces(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 1)
        self.b = nn.Conv2d(5, 5, 3, padding=1)

    def forward(self, x):
        y = self.a(x)
        p, q = y.split([3, 5], dim=1)
        r, s = torch.chunk(y, 2, -1)  # along the width
        quarters = y.chunk(4, 1)
        left = torch.cat([p, self.b(q)], 1)
        right = torch.cat([r * s, y[..., ::2]], -1)
        return torch.cat([left + right, quarters[-1], quarters[0], y[:, 2:6]], 1)


class ChannelsSliced(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x):
        y = self.a(x)
        return y[:, :4] + y[:, 4:]


class Branches(nn.Module):
    def __init__(self):
        super().__init__()
        self.branches = nn.ModuleList([nn.Conv2d(3, 4, k, padding=k // 2) for k in (1, 3, 5)])

    def forward(self, x):
        return sum(b(x) for b in self.branches)


class Scores(nn.Module):
    """A self-attention's scores written out: queries times transposed keys."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Conv2d(3, 8, 2, stride=2)
        self.q = nn.Linear(8, 8)
        self.k = nn.Linear(8, 8)

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2)
        return torch.softmax(self.q(x) @ self.k(x).transpose(-2, -1), -1)


class Flags(TwoConvs):
    def forward(self, x, scale: float = 1.0, features=False, mask=None):
        y = self.a(x)
        if features:
            return y
        if mask is not None:
            y = y * mask
        return F.relu(y) * scale


class TwoInputs(TwoConvs):
    def forward(self, x, y):
        return self.a(x) + self.b(y)


class Inputs(TwoConvs):
    def forward(self, *inputs):
        return self.a(inputs[0])


class Shapes(TwoConvs):
    def forward(self, x):
        y = torch.mean(self.a(x), (2, 3))
        z = self.b(x).view(-1, 4 * 8 * 8)
        return torch.cat([y, z], 1) * 1 + 0


class TokenBlock(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.gamma = nn.Parameter(torch.linspace(0.1, 1.0, dim))

    def forward(self, x):
        return x + self.gamma * self.fc2(F.gelu(self.fc1(self.norm(x))))


class Tokens(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Conv2d(3, 8, 2, stride=2)
        self.blocks = nn.ModuleList([TokenBlock(8, 16) for _ in range(3)])
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2)
        for block in self.blocks:
            x = block(x)
        return self.head(x[:, 0])


class ScaleOfWidth(nn.Module):
    """A (C,) scale of a (C, H, W) map multiplies its width, as torch broadcasts it."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 1)
        self.gamma = nn.Parameter(torch.linspace(0.1, 1.0, 8))

    def forward(self, x):
        return self.a(x) * self.gamma


class BufferScale(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 1)
        self.register_buffer("scale", torch.linspace(0.5, 2.0, 4).view(4, 1, 1))

    def forward(self, x):
        return self.a(x) * self.scale


class ScaleTwice(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 1)
        self.gamma = nn.Parameter(torch.full((4, 1, 1), 0.5))

    def forward(self, x):
        y = self.a(x)
        return self.gamma * y + self.gamma * F.relu(y)


class ScaleInPlace(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 1)
        self.gamma = nn.Parameter(torch.linspace(1.0, 2.0, 4).view(4, 1, 1))

    def forward(self, x):
        y = self.a(x)
        y *= self.gamma
        return y


class KeywordNames(nn.Module):
    def __init__(self):
        super().__init__()
        setattr(self, "in", nn.Conv2d(3, 4, 1))

    def forward(self, x):
        return getattr(self, "in")(x)


class Res(nn.Module):
    def __init__(self, c: int, stride: int = 1):
        super().__init__()
        self.c1 = nn.Conv2d(c, c * stride, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(c * stride)
        self.c2 = nn.Conv2d(c * stride, c * stride, 3, 1, 1)
        self.down = nn.Conv2d(c, c * stride, 1, stride) if stride > 1 else None

    def forward(self, x):
        identity = x if self.down is None else self.down(x)
        out = self.c2(F.relu(self.bn(self.c1(x)), inplace=True))
        out += identity
        return F.relu(out, inplace=True)


class ResNetish(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.layers = nn.Sequential(Res(4), Res(4, 2), Res(8), Res(8, 2), Res(16))
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        return self.head(torch.flatten(F.adaptive_avg_pool2d(self.layers(self.stem(x)), 1), 1))


class First:
    class Unit2(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)

        def forward(self, x):
            return F.relu(self.conv(x))


class Second:
    class Unit2(nn.Module):
        """Another class of the same name, another structure."""

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.bn = nn.BatchNorm2d(3)

        def forward(self, x):
            return self.bn(self.conv(x))


class AlikeNames(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(First.Unit2(), First.Unit2())
        self.b = nn.Sequential(Second.Unit2(), Second.Unit2())

    def forward(self, x):
        return self.b(self.a(x))


class Focus(nn.Module):
    """YOLOv5's space-to-depth: four strided slices of the input side by side."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(12, 4, 1)

    def forward(self, x):
        parts = [x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[:, :, 1::2, 1::2]]
        return self.conv(torch.cat(parts, 1))


class Padded(nn.Module):
    def __init__(self):
        super().__init__()
        self.zero = nn.ZeroPad2d((1, 0, 2, 1))
        self.constant = nn.ConstantPad2d(1, 0.5)
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return F.pad(self.conv(self.constant(self.zero(x))), (1, 1, 0, 0))


class SqueezeExcite(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.fc = nn.Linear(4, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        y = self.conv(x.float())
        s = torch.sigmoid(self.fc(F.adaptive_avg_pool2d(y, 1).squeeze(-1).squeeze(-1)))
        y = y * s.unsqueeze(-1).unsqueeze(-1) + y * s[:, :, None, None]
        return self.head(y.mean((2, 3)).clone())


class Hooked(TwoConvs):
    def __init__(self):
        super().__init__()
        self.a.register_forward_hook(lambda module, args, out: out * 2)

    def forward(self, x):
        return self.a(x)


class OldWeightNorm(TwoConvs):
    def __init__(self):
        super().__init__()
        with pytest.warns(FutureWarning):
            self.a = nn.utils.weight_norm(nn.Conv2d(3, 4, 1))  # its weight made by a pre-hook

    def forward(self, x):
        return self.a(x)


class Tied(TwoConvs):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(4, 4, 1)
        self.d = nn.Conv2d(4, 4, 1)
        self.d.weight = self.c.weight

    def forward(self, x):
        return self.d(F.relu(self.c(self.a(x))))


class WrongWidth(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(x.mean((2, 3)))


class Arithmetic(TwoConvs):
    """Numbers and differences: ``x * 0.5 + 1``, ``q / sqrt(d)``, ``1 - x``, ``a - b``, ``-x``, and a
    number made of a size (``x.shape[-1] ** -0.5``)."""

    def __init__(self):
        super().__init__()
        self.scale = 8**-0.5

    def forward(self, x):
        a, b = self.a(x), self.b(x)
        y = (a * 0.5 + 1) / 3.0 + (1 - torch.sigmoid(b)) * self.scale
        return -(y - b) * b.shape[-1] ** -0.5 - 2


class UnetBlock(nn.Module):
    """pix2pix's U-Net block, shortened: it holds the next one (the innermost holds none)."""

    def __init__(self, outer: int, inner: int, sub: nn.Module | None = None):
        super().__init__()
        self.down = nn.Conv2d(outer, inner, 4, 2, 1)
        self.sub = sub
        self.up = nn.Upsample(scale_factor=2)
        self.proj = nn.Conv2d(inner if sub is None else 2 * inner, outer, 1)

    def forward(self, x):
        y = F.relu(self.down(x))
        if self.sub is not None:
            y = self.sub(y)
        return torch.cat([x, self.proj(self.up(y))], 1)


class Unet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 1)
        self.net = UnetBlock(4, 8, UnetBlock(8, 8, UnetBlock(8, 8)))

    def forward(self, x):
        return self.net(self.stem(x))


class Conditions(TwoConvs):
    """Conditions on shapes, decided at the traced size: one true, one false."""

    def forward(self, x):
        assert x.dim() == 4, "expected a batch of maps"
        n, c, h, w = x.shape
        assert h == w
        y = self.a(x)
        if y.shape[-1] > 100:  # false at 8x8: no pooling
            y = F.max_pool2d(y, 2)
        if h % 2 == 0:
            y = F.relu(y)
        return y


class ValueCondition(TwoConvs):
    def forward(self, x):
        y = self.a(x)
        return self.b(x) if y.sum() > 0 else y


class LoopOnShape(TwoConvs):
    def forward(self, x):
        y = self.a(x)
        while y.shape[-1] > 2:
            y = F.max_pool2d(y, 2)
        return y


class SelfAttention(nn.Module):
    """Attention written out: heads split by view, scores by matrix products, scaled by a size."""

    def __init__(self, dim: int, heads: int = 2):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        d = c // self.heads
        q = self.q(x).view(b, n, self.heads, d).transpose(1, 2)
        k = self.k(x).view(b, n, self.heads, d).transpose(1, 2)
        v = self.v(x).view(b, n, self.heads, d).transpose(1, 2)
        scores = torch.softmax(q @ k.transpose(-2, -1) / d**0.5, dim=-1)
        return self.out((scores @ v).transpose(1, 2).contiguous().view(b, n, c))


class BatchMoved(TwoConvs):
    def forward(self, x):
        return self.a(x).permute(1, 0, 2, 3)  # read whole: the batch moved


class TimmAttention(nn.Module):
    """timm's ViT attention as it is written there: queries, keys and values of one projection,
    permuted so that they come first (the batch second), taken apart by unbind."""

    def __init__(self, dim: int, heads: int = 2):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        return self.proj((attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, c))


class EncoderBlock(nn.Module):
    def __init__(self, dim: int, attention: type = SelfAttention):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = attention(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyTransformer(nn.Module):
    def __init__(self, attention: type = SelfAttention):
        super().__init__()
        self.patch = nn.Conv2d(3, 8, 2, 2)
        self.blocks = nn.Sequential(EncoderBlock(8, attention), EncoderBlock(8, attention))
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        return self.head(self.blocks(x)[:, 0])


# -- what is imported, and agrees with the module ------------------------------------------------


@pytest.mark.parametrize(
    "cls",
    [
        KeptBeforeSum,
        ReluInPlaceReadAgain,
        ModuleInPlaceReadAgain,
        MethodsInPlace,
        PermutedSoftmax,
        PermutedCat,
        PermutedChunk,
        Pieces,
        ChannelsSliced,
        Scores,
        Flags,
        Shapes,
        ScaleInPlace,
        Focus,
        Padded,
        SqueezeExcite,
        Arithmetic,
    ],
)
def test_imported_and_agrees_with_the_module(cls):
    checked(cls)


def test_a_permuted_maps_axis_1_is_written_as_a_number_not_as_the_channels():
    text = checked(PermutedSoftmax).text
    assert "{op: softmax, dim: 0}" in text


def test_a_sum_of_branches_is_one_sum_of_the_list():
    result = checked(Branches)
    assert result.text.endswith(
        "model:\n"
        "  branches:\n"
        "    add:\n"
        "      - {op: conv2d, out: 4, kernel: 1}\n"
        "      - {op: conv2d, out: 4, kernel: 3, padding: 1}\n"
        "      - {op: conv2d, out: 4, kernel: 5, padding: 2}\n"
    )
    assert result.report.nodes == 1 + 3 + 1  # the input, three convolutions, one sum


def test_token_layer_scales_are_read_as_the_spec_holds_them():
    result = checked(Tokens)
    assert result.report.templates == [("TokenBlock", [], 3)]
    assert {k: v.shape for k, v in result.weights.items() if k.endswith("gamma")} == {
        f"blocks.{i}.gamma": (8,) for i in range(3)
    }


def test_repeated_blocks_are_found_in_a_hand_written_resnet():
    result = checked(ResNetish)
    uses = sum(isinstance(m, Res) for m in ResNetish().modules())
    assert result.report.templates == [("Res", ["c", "stride", "with_down"], uses)]


def test_a_class_holding_an_instance_of_itself_is_a_template_per_level():
    result = checked(Unet)
    assert [(name, uses) for name, _, uses in result.report.templates] == [
        ("UnetBlock", 1),
        ("UnetBlock2", 1),
        ("UnetBlock3", 1),
    ]
    assert "      sub: UnetBlock2\n" in result.text and "  net: UnetBlock3\n" in result.text


def test_conditions_on_shapes_are_taken_as_they_are_at_the_traced_size():
    text = checked(Conditions).text
    assert "max_pool" not in text and "relu" in text
    message = refused(Conditions, (3, 8, 6))  # h == w is false there, and an assertion has no other branch
    line = next(k for k, text in enumerate(open(HERE).read().splitlines(), 1) if text.strip() == "assert h == w")
    assert message.startswith(f"{HERE}:{line}:1: error: _assert (fx node '_assert_1'): the forward branches on a ")
    assert "taken as true while tracing and false on the example input (zeros of shape [3, 8, 6])" in message


def test_conditions_on_values_and_loops_on_shapes_are_refused():
    assert "no spec op computes this" in refused(ValueCondition)  # its sum, before the condition
    assert "more than 256 conditions on traced values (a loop on a shape?)" in refused(LoopOnShape)


def test_an_attention_written_out_is_read_op_by_op_its_blocks_found():
    result = checked(TinyTransformer)
    assert result.report.templates == [("SelfAttention", [], 2), ("EncoderBlock", [], 2)]
    assert "      product: {matmul: [{ref: transpose}, {ref: transpose_3}]}\n" in result.text  # q @ k^T
    assert "      product_1: {matmul: [{ref: softmax}, {ref: transpose_2}]}\n" in result.text  # scores @ v


def test_timms_attention_takes_queries_keys_and_values_apart_by_select():
    result = checked(lambda: TinyTransformer(TimmAttention))
    assert result.report.templates == [("TimmAttention", [], 2), ("EncoderBlock", [], 2)]
    for k in range(3):  # (N, L, 3, heads, d) -> (N, heads, L, d) for each of q, k and v
        assert f"      part{k}_permute: {{op: permute, dims: [1, 0, 2]}}\n" in result.text


def test_a_permute_that_moves_the_batch_and_is_read_whole_is_refused():
    located(BatchMoved, "method Tensor.permute (fx node 'permute'): permute(1, 0, 2, 3) moves the batch axis")


def test_two_classes_named_alike_are_two_templates_the_second_named_apart():
    result = checked(AlikeNames)
    assert [(name, uses) for name, _, uses in result.report.templates] == [("Unit2", 2), ("Unit2_2", 2)]


# -- what is refused, located at the forward's line --------------------------------------------


def test_numbers_are_constants_joined_by_add_and_mul():
    text = imported(Arithmetic).text
    assert "scale_value: {op: constant, value: 0.5, from: a}" in text
    assert "shift_2_value: {op: constant, value: -2.0}" in text  # - 2 as + (-2)
    assert "{op: constant, value: 0.353553390593}" in text  # 8 ** -0.5, of the width 8


def test_torch_add_with_alpha_is_refused():
    located(AddAlpha, "add with alpha=2: the spec's add joins its inputs as they are")


def test_a_dropout_that_drops_at_inference_is_refused():
    located(DropoutAtInference, "drops at inference too (F.dropout's training is True unless given")


def test_changing_a_view_in_place_is_refused_where_its_base_is_read_after():
    located(ViewChangedInPlace, "changes 'getitem' in place, a view of 'a', which 'output' reads after")


def test_an_op_whose_spec_rule_refuses_the_input_is_located():
    located(PermutedPool, "the spec's max_pool does not take this input: expected a feature map (C, H, W)")
    located(SumBroadcastFirst, "the spec's add does not take this input: expected add inputs of one shape")


def test_a_scale_of_another_shape_than_the_spec_holds_is_refused():
    located(ScaleOfWidth, "multiplies by 'gamma' of shape [8]: a scale the spec's layer_scale holds is one per")


def test_a_buffer_or_a_tensor_read_twice_is_refused():
    located(BufferScale, "reads 'scale', which is no parameter (a buffer or a constant)")
    located(ScaleTwice, "reads 'gamma' a second time: a spec's tensor belongs to one layer")


def test_a_second_input_or_a_tuple_of_inputs_is_refused():
    assert "the forward takes a second input 'y' without a default: a spec's model reads one input" in refused(
        TwoInputs
    )
    assert refused(Inputs) == (
        "Inputs: error: _inputs: input *inputs (fx node '_inputs'): the forward's input '*inputs' is no tensor: "
        "a spec's input is one"
    )


class RootHooked(TwoConvs):
    def __init__(self):
        super().__init__()
        self.register_forward_pre_hook(lambda module, args: (args[0] * 2,))

    def forward(self, x):
        return self.a(x)


def test_hooks_and_tied_weights_are_refused():
    for cls in (Hooked, OldWeightNorm):
        located(cls, "has forward hooks, which change what it computes where torch.fx records the call alone")
    assert refused(RootHooked) == (
        "RootHooked: error: the model has forward hooks, which torch.fx does not trace (it reads the forward "
        "alone): a spec's model computes its entries"
    )
    located(Tied, "holds the tensor that 'c.weight' holds (tied weights): a spec's layers own their tensors")


def test_a_model_that_does_not_run_says_where_and_prints_no_traceback(capsys):
    message = refused(WrongWidth)
    assert (
        "does not run on an input of shape [3, 8, 8] (give --input-shape) at fx node 'fc' (module Linear): " in message
    )
    assert "(module Linear): RuntimeError: " in message  # PyTorch's own words follow
    assert "Traceback" not in capsys.readouterr().err


def test_a_model_on_the_meta_device_imports_without_weights_and_refuses_them():
    with torch.device("meta"):
        model = KeptBeforeSum()
    assert import_model(model, input_shape=(3, 8, 8)).report.params == 2 * (3 * 4 + 4)
    with pytest.raises(ImportFailure) as e:
        import_model(model, input_shape=(3, 8, 8), weights=True)
    assert e.value.format() == (
        "KeptBeforeSum: error: the tensor 'a.weight' is on PyTorch's meta device, which holds no values: the "
        "weights cannot be written (build the model on the CPU, or import it without --weights and --check)"
    )


def test_layers_the_forward_never_calls_are_named_in_the_report():
    notes = checked(ReluInPlaceReadAgain).report.notes  # its b is never called
    assert notes == [
        "2 tensors of the source that the forward never reads (b.weight, b.bias) are left out: its state_dict "
        "loads only without them"
    ]
    assert checked(KeptBeforeSum).report.notes == []


@pytest.mark.parametrize("shape", [(3.5, 8, 8), (True, 8, 8), 5])
def test_an_input_shape_of_other_than_whole_numbers_is_refused(shape):
    """int() read 3.5 as 3: a spec of another input than asked for."""
    assert (
        refused(KeptBeforeSum, shape) == "import: error: input_shape: expected a sequence of whole numbers, the sizes "
        f"of one sample (C, H, W), got {shape!r}"
    )


def test_a_module_named_by_a_keyword_is_refused_not_a_traceback():
    assert "torch.fx cannot write the traced forward as Python" in refused(KeywordNames)


# -- the command ---------------------------------------------------------------------------------


def test_the_command_exits_2_and_writes_nothing_or_checks_and_writes(tmp_path, monkeypatch, capsys):
    (tmp_path / "hostile_nets.py").write_text(
        "from tests.test_import_hostile_torch import AddAlpha, KeptBeforeSum\n", encoding="utf-8"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "hostile_nets", raising=False)
    base = ["import", "--input-shape", "3,8,8", "--check", "--weights", "w.safetensors", "-o", "m.yaml"]
    assert cli_main([*base, "module:hostile_nets:AddAlpha"]) == 2
    err = capsys.readouterr().err
    assert "add with alpha=2" in err and "Traceback" not in err
    assert not list(tmp_path.glob("m.yaml")) and not list(tmp_path.glob("w.safetensors"))
    assert cli_main([*base, "module:hostile_nets:KeptBeforeSum"]) == 0
    assert "check: 1 output against the source model" in capsys.readouterr().out
    assert (tmp_path / "m.yaml").exists() and (tmp_path / "w.safetensors").exists()
