"""``nasdsl import`` of transformers from ONNX: torchvision's ViT and Swin (V1 and V2) exported by
``torch.onnx.export`` (TorchScript exporter), and nasdsl's own export of the hand-written specs.

The references are independent of the importer: the small models built by torchvision's own
classes (their ``state_dict``: every tensor the import writes must be torchvision's, the
relative-position bias table recovered from the bias the exporter computed included), and
ONNX Runtime running the source file against the imported spec's export with the carried
weights. LayerNorm written out in primitive ops (below opset 17) is checked here too, on the
small ViT and a small ConvNeXt. Small sizes keep the file fast: a ViT of 2 layers of width 32 on 32x32 images, Swins
of embedding 16, two stages of two blocks and 4x4 windows.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx_runs import agreement
from torch import nn
from torchvision.models.convnext import CNBlockConfig, ConvNeXt
from torchvision.models.swin_transformer import PatchMergingV2, SwinTransformer, SwinTransformerBlockV2
from torchvision.models.vision_transformer import VisionTransformer

import nasdsl
from nasdsl import ir
from nasdsl.backends.onnx import export_onnx
from nasdsl.importer import ImportFailure, import_model
from nasdsl.weights import initial_weights

from paths import SPECS


def _torch_onnx(model: nn.Module, size: int = 32):
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, 3, size, size),), buf, dynamo=False, opset_version=17)
    return onnx.load_from_string(buf.getvalue())


def _randomised(model: nn.Module) -> nn.Module:
    """Every parameter moved off its initial value (a ViT's head and class token start at zero,
    which would hide a difference)."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.1)
    return model.eval()


def _ops(result, op: str) -> dict:
    g = result.compiled.graph
    return {name: data.attrs for name, data in ir.nodes(g) if data.op == op}


def _uses(result) -> dict[str, int]:
    return {name: uses for name, _, uses in result.report.templates}


def _vit() -> nn.Module:
    torch.manual_seed(0)
    model = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64)
    return _randomised(model)


def _swin(v2: bool) -> nn.Module:
    torch.manual_seed(0)
    extra = {"block": SwinTransformerBlockV2, "downsample_layer": PatchMergingV2} if v2 else {}
    model = SwinTransformer(
        patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 2], window_size=[4, 4], **extra
    )
    return _randomised(model)


@pytest.fixture(scope="module")
def exported():
    """name -> (torchvision's module, its torch.onnx.export file, the import with weights)."""
    out = {}
    for name, model in (("vit", _vit()), ("swin", _swin(False)), ("swin_v2", _swin(True))):
        proto = _torch_onnx(model)
        out[name] = (model, proto, import_model(proto, weights=True))
    return out


def _same_state(result, model: nn.Module) -> None:
    """The import's tensors are torchvision's state_dict: the same names, the same values. Swin
    V2 zeroes the keys' part of its qkv bias in its forward, so that the file holds zeros there,
    and so does the import."""
    theirs = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    assert set(result.weights) == set(theirs)
    for key, value in theirs.items():
        if key.endswith("attn.qkv.bias") and "logit_scale" in " ".join(theirs):
            width = value.shape[0] // 3
            value[width : 2 * width] = 0.0
    for key, value in theirs.items():
        np.testing.assert_allclose(result.weights[key], value, rtol=1e-6, atol=1e-7, err_msg=key)


def test_vit_from_torch_onnx_export(exported):
    model, proto, result = exported["vit"]
    attention = _ops(result, "attention")
    assert sorted(attention) == [f"encoder.layers.encoder_layer_{i}.self_attention" for i in range(2)]
    assert all(a["heads"] == 2 and a["bias"] for a in attention.values())
    assert _ops(result, "parameter").keys() == {"class_token", "encoder.pos_embedding"}
    assert _ops(result, "select") == {"gather": {"axis": 0, "index": 0}}
    # torchvision's EncoderBlock: one template, used by both encoder layers
    assert _uses(result)["EncoderLayer"] == 2
    _same_state(result, model)
    assert agreement(proto, result) <= 1e-5


@pytest.mark.parametrize("name", ["swin", "swin_v2"])
def test_swin_from_torch_onnx_export(exported, name):
    model, proto, result = exported[name]
    attention = _ops(result, "window_attention")
    assert sorted(attention) == ["features.1.0.attn", "features.1.1.attn", "features.3.0.attn", "features.3.1.attn"]
    assert {tuple(a["window"]) for a in attention.values()} == {(4, 4)}
    assert {a["heads"] for a in attention.values()} == {2}
    assert {a["version"] for a in attention.values()} == {2 if name == "swin_v2" else 1}
    # torchvision shifts odd blocks by half a window; the second stage's 4x4 map is one window
    assert attention["features.1.1.attn"]["shift"] == 2 and attention["features.1.0.attn"]["shift"] == 0
    merging = _ops(result, "patch_merging")
    assert merging == {"features.2": {"out": 32, "norm": "after" if name == "swin_v2" else "before", "eps": 1e-5}}
    # torchvision's SwinTransformerBlock: one template of four uses
    assert list(_uses(result).values()) == [4]
    _same_state(result, model)
    assert agreement(proto, result) <= 1e-5


_SWIN = {"image_size": 32, "embed_dim": 16, "window": 4} | {f"heads{i}": 2 for i in range(1, 5)}
_SWIN |= {"depth2": 1, "depth3": 1, "depth4": 1}  # five blocks, the second shifted
SMALL_SPECS = {
    "vit_b_16": {"image_size": 32, "patch_size": 8, "num_layers": 2, "num_heads": 2, "hidden_dim": 32, "mlp_dim": 64},
    "swin_t": _SWIN,
    "swin_v2_t": _SWIN,
}


@pytest.mark.parametrize("spec", sorted(SMALL_SPECS))
def test_nasdsl_export_of_the_hand_written_specs(spec):
    overrides = {f"variables.{k}": v for k, v in SMALL_SPECS[spec].items()}
    hand = nasdsl.compile_spec(SPECS / f"{spec}.yaml", overrides)
    rng = np.random.default_rng(0)  # random values for the tensors that start at zero (the ViT's head)
    weights = {
        k: (0.1 * rng.standard_normal(v.shape)).astype(v.dtype) if v.dtype.kind == "f" and not v.any() else v
        for k, v in initial_weights(hand.graph, seed=0).items()
    }
    proto = export_onnx(hand.graph, state_dict=weights)
    result = import_model(proto, weights=True)
    op = "attention" if spec.startswith("vit") else "window_attention"
    theirs = {n: d.attrs for n, d in ir.nodes(hand.graph) if d.op == op}
    assert _ops(result, op).keys() == theirs.keys()
    for name, attrs in _ops(result, op).items():
        assert attrs["heads"] == theirs[name]["heads"]
    # the hand-written spec's blocks: one template for all encoder layers or Swin blocks
    assert max(_uses(result).values()) == (2 if spec.startswith("vit") else 5)
    assert agreement(proto, result) <= 1e-5


def _stripped(proto):
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    for node in proto.graph.node:
        node.name = ""
        del node.metadata_props[:]
    return proto


def _tensors_under(weights: dict, prefix: str) -> list[np.ndarray]:
    return sorted(
        (v for k, v in weights.items() if k.startswith(prefix)), key=lambda v: (v.shape, v.ravel()[:4].tolist())
    )


@pytest.mark.parametrize(
    ("name", "blocks"),
    [
        ("vit", [f"encoder.layers.encoder_layer_{i}." for i in range(2)]),
        ("swin", [f"features.{s}.{i}." for s in (1, 3) for i in range(2)]),
    ],
)
def test_names_stripped_the_transformer_block_is_one_template(exported, name, blocks):
    """By structure alone, a transformer block is two residual blocks that a cut separates (the
    attention and its sum, the MLP and its sum), which always occur together: one template,
    used where torchvision's EncoderBlock or SwinTransformerBlock is, each use holding exactly
    that block's tensors."""
    model, proto, _ = exported[name]
    proto = _stripped(proto)
    result = import_model(proto, weights=True)
    assert len(_ops(result, "attention" if name == "vit" else "window_attention")) == len(blocks)
    assert [uses for _, _, uses in result.report.templates] == [len(blocks)]
    (template,) = ir.info(result.compiled.graph).templates.values()
    theirs = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    for path, block in zip(sorted(template.instances), blocks, strict=True):
        ours, expected = _tensors_under(result.weights, path + "."), _tensors_under(theirs, block)
        assert len(ours) == len(expected), path
        for a, b in zip(ours, expected, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6, err_msg=path)
    assert agreement(proto, result) <= 1e-5


def test_layer_norm_written_out_in_primitive_ops():
    """Below opset 17 exporters write LayerNorm as ReduceMean, Sub, Mul or Pow, ReduceMean, Add,
    Sqrt, Div, Mul, Add: nasdsl's export of the small ViT, and torchvision's ConvNeXt (its
    channels-first LayerNorm2d between two Transposes) from torch.onnx.export."""
    hand = nasdsl.compile_spec(
        SPECS / "vit_b_16.yaml", {f"variables.{k}": v for k, v in SMALL_SPECS["vit_b_16"].items()}
    )
    rng = np.random.default_rng(0)
    weights = {
        k: (0.1 * rng.standard_normal(v.shape)).astype(v.dtype) if v.dtype.kind == "f" and not v.any() else v
        for k, v in initial_weights(hand.graph, seed=0).items()
    }
    proto = export_onnx(hand.graph, state_dict=weights, opset=16)
    assert "LayerNormalization" not in {n.op_type for n in proto.graph.node}
    result = import_model(proto, weights=True)
    assert len(_ops(result, "layer_norm")) == 5 and agreement(proto, result) <= 1e-5
    torch.manual_seed(0)
    convnext = _randomised(ConvNeXt([CNBlockConfig(8, 16, 1), CNBlockConfig(16, None, 1)], num_classes=10))
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(convnext, (torch.randn(1, 3, 32, 32),), buf, dynamo=False, opset_version=16)
    proto = onnx.load_from_string(buf.getvalue())
    result = import_model(proto, weights=True)
    dims = {name: attrs["dim"] for name, attrs in _ops(result, "layer_norm").items()}
    assert dims == {
        "features.0.1": "channels",
        "features.1.0.block.2": "last",
        "features.2.0": "channels",
        "features.3.0.block.2": "last",
        "classifier.0": "channels",
    }
    _same_state(result, convnext)
    assert agreement(proto, result) <= 1e-5


class _Attention(nn.Module):
    """Self-attention with one projection of queries, keys and values, the spec's but for the
    scale of the scores (``scale`` times the spec's 1/sqrt(d)) or separate projections."""

    def __init__(self, width: int, heads: int, scale: float = 1.0, separate: bool = False) -> None:
        super().__init__()
        self.heads, self.scale, self.separate = heads, scale, separate
        if separate:
            self.q, self.k, self.v = (nn.Linear(width, width) for _ in range(3))
        else:
            self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x):
        n, length, c = x.shape
        d = c // self.heads
        if self.separate:
            q, k, v = (m(x).reshape(n, length, self.heads, d).transpose(1, 2) for m in (self.q, self.k, self.v))
        else:
            q, k, v = self.qkv(x).reshape(n, length, 3, self.heads, d).permute(2, 0, 3, 1, 4)
        weights = (q @ k.transpose(-2, -1) * (self.scale / d**0.5)).softmax(-1)
        return self.proj((weights @ v).transpose(1, 2).reshape(n, length, c))


class _Tokens(nn.Module):
    def __init__(self, **kwargs) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 16, 4, stride=4)
        self.attn = _Attention(16, 2, **kwargs)

    def forward(self, x):
        return self.attn(self.embed(x).flatten(2).transpose(1, 2))


class _Classifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.tokens = _Tokens()
        self.head = nn.Linear(256, 10)

    def forward(self, x):
        return self.head(self.tokens(x).flatten(1)).softmax(1)


def test_attention_as_the_spec_computes_it_is_read():
    """The reference for the two refusals below: the same module with the spec's scale. A
    classifier's softmax stays the softmax op."""
    proto = _torch_onnx(_randomised(_Classifier()), 16)
    result = import_model(proto, weights=True)
    assert _ops(result, "attention") == {"tokens.attn": {"heads": 2, "bias": True, "dropout": 0.0}}
    assert list(_ops(result, "softmax")) == ["softmax"]
    assert agreement(proto, result) <= 1e-5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"scale": 2.0},
            r"read as attention \(heads: 2\), but differ from it by .* relative: no spec op computes this",
        ),
        ({"separate": True}, r"projections of shapes \[16, 16\] and \[16, 16\]: the spec's attention projects"),
    ],
)
def test_an_attention_the_spec_cannot_say_is_a_located_error(kwargs, message):
    proto = _torch_onnx(_randomised(_Tokens(**kwargs)), 16)
    with pytest.raises(ImportFailure, match=message) as info:
        import_model(proto)
    assert "graph.node[" in info.value.format() and "'/attn/Softmax' (Softmax)" in info.value.format()
