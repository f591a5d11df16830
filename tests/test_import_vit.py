"""``nasdsl import`` of torchvision's Vision Transformer: the shape arithmetic of its
``_process_input`` evaluated at the traced size, ``nn.MultiheadAttention`` as the ``attention``
op, the class token and the position embedding as ``parameter`` ops, ``x[:, 0]`` as ``select``.

The references are torchvision's: its VisionTransformer (a small one built with the
constructor's own arguments, so that the test stays fast) loaded strictly into the generated
model and run against it, and ViT-B/16's parameter count and multiply-adds as torchvision
documents them with its default weights.
"""

from __future__ import annotations

import pytest
import torch
import yaml
from torchvision.models import get_model_weights
from torchvision.models.swin_transformer import PatchMergingV2, SwinTransformer, SwinTransformerBlockV2
from torchvision.models.vision_transformer import VisionTransformer

import nasdsl
from nasdsl.importer import ImportFailure, import_model

from reference_models import generated_with_weights, randomise


def small_vit() -> VisionTransformer:
    """torchvision's ViT at 32x32: 16 patches of 8x8, two layers of two heads."""
    return VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=10
    )


@pytest.fixture(scope="module")
def imported():
    return import_model(small_vit, input_shape=(3, 32, 32))


def test_encoder_blocks_are_one_template_named_as_torchvision(imported):
    templates = {name: uses for name, _, uses in imported.report.templates}
    assert templates == {"MLPBlock": 2, "EncoderBlock": 2, "Encoder": 1}
    spec = yaml.safe_load(imported.text)
    assert spec["templates"]["EncoderBlock"]["body"]["self_attention"] == {"op": "attention", "heads": 2}
    encoder = spec["templates"]["Encoder"]["body"]
    assert encoder["pos_embedding"] == {"op": "parameter", "shape": [17, 16]}  # 16 patches and the class token
    assert encoder["layers"] == {"repeat": 2, "name": "encoder_layer_{i}", "block": "EncoderBlock"}
    model = spec["model"]
    assert model["reshape"] == {"op": "flatten", "start": 1}  # x.reshape(n, hidden_dim, n_h * n_w)
    assert model["class_token"] == {"op": "parameter", "shape": [1, 16]}
    assert model["cat"] == {"concat": [{"ref": "class_token"}, {"ref": "permute"}], "axis": 0}
    assert model["select"] == {"op": "select", "axis": 0}  # x[:, 0]


def test_generated_model_loads_torchvisions_state_dict_and_agrees(imported):
    torch.manual_seed(0)
    reference = small_vit()
    randomise(reference)
    with torch.no_grad():  # the head and the class token start at zero: they would hide a difference
        reference.heads.head.weight.normal_(0, 0.1)
        reference.class_token.normal_(0, 0.1)
    reference.eval()
    net = imported.compiled
    ours = generated_with_weights(net, reference)
    assert "encoder.layers.encoder_layer_1.self_attention.in_proj_weight" in ours.state_dict()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        a, b = reference(x), ours(x)
    assert a.abs().max() > 0.1
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-5 * a.abs().max().item())
    assert imported.report.params == sum(p.numel() for p in reference.parameters())


def test_vit_b_16_has_torchvisions_documented_parameters_and_multiply_adds():
    result = import_model("torchvision:vit_b_16")
    meta = get_model_weights("vit_b_16").DEFAULT.meta
    assert result.report.params == meta["num_params"] == 86_567_656
    assert round(result.report.macs / 1e9, 3) == meta["_ops"]
    assert [(n, u) for n, _, u in result.report.templates] == [("MLPBlock", 12), ("EncoderBlock", 12), ("Encoder", 1)]


def test_swin_t_has_torchvisions_documented_parameters_and_multiply_adds():
    result = import_model("torchvision:swin_t")
    meta = get_model_weights("swin_t").DEFAULT.meta
    assert result.report.params == meta["num_params"] == 28_288_354
    assert round(result.report.macs / 1e9, 3) == meta["_ops"]
    templates = {name: (params, uses) for name, params, uses in result.report.templates}
    assert templates == {
        "MLP": (["channels_in"], 12),
        "SwinTransformerBlock": (["dim", "num_heads", "shift_size", "stochastic_depth_prob"], 12),
    }


# -- what stays refused ------------------------------------------------------------------------


class _Attending(torch.nn.Module):
    def __init__(self, batch_first: bool = True, cross: bool = False):
        super().__init__()
        self.proj = torch.nn.Conv2d(3, 8, 4, stride=4)
        self.attn = torch.nn.MultiheadAttention(8, 2, batch_first=batch_first)
        self.cross = cross

    def forward(self, x):
        t = self.proj(x).flatten(2).transpose(1, 2)
        y, _ = self.attn(t, torch.relu(t) if self.cross else t, t)
        return y


class _BatchSum(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Conv2d(3, 8, 4, stride=4)

    def forward(self, x):
        y = self.proj(x)
        return y.reshape(y.shape[0] * 2, -1)


class _Broadcast(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Conv2d(3, 8, 4, stride=4)
        self.bias = torch.nn.Parameter(torch.zeros(1, 8, 1, 1))

    def forward(self, x):
        return self.proj(x) + self.bias


def test_what_the_spec_cannot_say_is_a_located_error():
    with pytest.raises(ImportFailure) as e:
        import_model(_BatchSum(), input_shape=(3, 16, 16))
    assert "test_import_vit.py" in e.value.format()
    assert "mul: function mul (fx node 'mul'): computes with the batch size" in e.value.format()
    with pytest.raises(ImportFailure, match=r"attn: module MultiheadAttention .*batch_first=False"):
        import_model(_Attending(batch_first=False), input_shape=(3, 16, 16))
    with pytest.raises(ImportFailure, match=r"key or value other than the query"):
        import_model(_Attending(cross=True), input_shape=(3, 16, 16))
    with pytest.raises(ImportFailure) as e:  # broadcast over the positions: no spec op adds it so
        import_model(_Broadcast(), input_shape=(3, 16, 16))
    assert "bias: tensor bias (fx node 'bias'): of shape [1, 8, 1, 1] is added to a tensor of [1, 8, 4, 4]" in (
        e.value.format()
    )


def small_swin(v2: bool = False) -> SwinTransformer:
    """torchvision's Swin (V2: its blocks and patch merging) at 32x32: 4x4 patches, two stages of
    two blocks, windows of 4x4."""
    v2_parts = {"block": SwinTransformerBlockV2, "downsample_layer": PatchMergingV2} if v2 else {}
    return SwinTransformer(
        patch_size=[4, 4],
        embed_dim=16,
        depths=[2, 2],
        num_heads=[2, 4],
        window_size=[4, 4],
        stochastic_depth_prob=0.2,
        num_classes=10,
        **v2_parts,
    )


@pytest.mark.parametrize("v2", [False, True], ids=["swin", "swin_v2"])
def test_swin_blocks_are_one_template_and_the_model_is_torchvisions(v2):
    """ShiftedWindowAttention(V2) is the window_attention op, PatchMerging(V2) patch_merging;
    the blocks, shifted and not, are one template whose parameters are the constructor's. V2's
    block builds norm1 before attn but runs it after: the template's build_order says so, and
    the state_dict comes in torchvision's order."""
    result = import_model(lambda: small_swin(v2), input_shape=(3, 32, 32))
    block = "SwinTransformerBlockV2" if v2 else "SwinTransformerBlock"
    templates = {name: (params, uses) for name, params, uses in result.report.templates}
    assert templates[block] == (["dim", "num_heads", "shift_size", "stochastic_depth_prob"], 4)
    assert result.report.notes == []
    spec = yaml.safe_load(result.text)
    attn = spec["templates"][block]["body"]["attn"]
    assert attn == {"op": "window_attention", "heads": "num_heads", "window": [4, 4], "shift": "shift_size"} | (
        {"version": 2} if v2 else {}
    )
    assert spec["templates"][block].get("build_order") == (["norm1", "attn", "norm2", "mlp"] if v2 else None)
    merging = {"op": "patch_merging", "out": 32} | ({"norm": "after"} if v2 else {})
    assert spec["model"]["features"][2] == merging
    assert [b["args"][2] for b in spec["model"]["features"][1]] == [0, 2]  # torchvision shifts every other block
    torch.manual_seed(0)
    reference = small_swin(v2)
    randomise(reference)
    reference.eval()
    net = result.compiled
    ours = generated_with_weights(net, reference)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        a, b = reference(x), ours(x)
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-5 * a.abs().max().item())
    assert result.report.params == sum(p.numel() for p in reference.parameters())


def test_a_vit_spec_imported_compiles_at_its_own_size_only(imported, tmp_path):
    """The position embedding is for the traced size: another input size is a shape error of the
    spec, not a silently different network."""
    spec = tmp_path / "vit.yaml"
    spec.write_text(imported.text)
    with pytest.raises(nasdsl.NasdslError, match="expected add inputs of one shape"):
        nasdsl.compile_spec(spec, {"input.shape": [3, 64, 64]})


def test_a_users_self_attention_over_a_maps_positions_round_trips():
    """``x.flatten(2).transpose(1, 2)`` makes tokens of a map's positions (a flatten from axis
    1 and a transpose of the spec's axes); nn.MultiheadAttention reads them as one tensor."""
    torch.manual_seed(0)
    reference = _Attending().eval()
    result = import_model(_Attending, input_shape=(3, 16, 16))
    model = yaml.safe_load(result.text)["model"]
    assert model["flatten"] == {"op": "flatten", "start": 1}
    assert model["transpose"] == {"op": "transpose", "axis0": 0, "axis1": 1}
    assert model["attn"] == {"op": "attention", "heads": 2}
    ours = nasdsl.build_model(result.compiled, weights=reference.state_dict()).eval()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = reference(x), ours(x)
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-5 * a.abs().max().item())
