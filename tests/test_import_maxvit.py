"""``nasdsl import`` of torchvision's MaxViT: its RelativePositionalMultiHeadAttention as the
``partition_attention`` op, WindowPartition and WindowDepartition as reshapes, a permute and
flattens, SwapAxes as a transpose, the templates named after torchvision's classes.

The references are independent of the importer: a small MaxViT built by torchvision's own
``MaxVit`` class (2x2 partitions at 64x64, five layers, so that the test stays fast), whose
``state_dict`` must load strictly into the generated model and whose outputs it must give, and
the hand-written ``specs/maxvit_t.yaml`` (checked against torchvision's documented maxvit_t
figures in tests/test_maxvit.py) compiled with the same settings, whose parameters and
multiply-adds the import must have; and maxvit_t's documented figures. maxvit_t's round trip at full
size is ``benchmarks/import_zoo.py --models maxvit_t --check``.
"""

from __future__ import annotations

import inspect

import pytest
import torch
import yaml
from torchvision.models import MaxVit_T_Weights, maxvit
from torchvision.models.maxvit import MaxVit, RelativePositionalMultiHeadAttention

import nasdsl
from nasdsl.cli import main as cli_main
from nasdsl.importer import ImportFailure, import_model

from paths import SPECS
from reference_models import (
    MAXVIT_CHANNELS,
    MAXVIT_LAYERS,
    MAXVIT_SPEC_VARIABLES,
    generated_with_weights,
    randomise,
    small_maxvit,
)

#: the small MaxViT's settings, as torchvision's constructor and the hand-written spec name them
CHANNELS, LAYERS, SPEC_VARIABLES = MAXVIT_CHANNELS, MAXVIT_LAYERS, MAXVIT_SPEC_VARIABLES


def _line_of(code: str) -> int:
    """The line of torchvision's maxvit.py holding ``code`` (where the located error points)."""
    lines = inspect.getsource(maxvit).splitlines()
    return next(k for k, line in enumerate(lines, 1) if code in line)


@pytest.fixture(scope="module")
def imported():
    return import_model(small_maxvit, input_shape=(3, 64, 64))


def test_templates_are_torchvisions_classes_with_its_arguments(imported):
    """Block and grid attention are one PartitionAttentionLayer whose grid uses swap the axes
    (where the block's have an nn.Identity); MBConv's projection and stochastic depth (an
    nn.Identity where the block has none, or its rate is 0) are switched; the partitions' sizes
    are expressions of the constructor's grid_size, or parameters of their own."""
    templates = {name: params for name, params, _ in imported.report.templates}
    assert templates["PartitionAttentionLayer"] == [
        *("channels_in", "grid_size", "p_stochastic_dropout"),
        *("partition_op_shape_1", "partition_op_shape_2", "with_partition_swap"),
    ]
    assert templates["MBConv"] == [
        "out_channels",
        "stride",
        "p_stochastic_dropout",
        "with_proj",
        "with_stochastic_depth",
    ]
    assert {"MaxVitLayer", "MaxVitBlock", "SqueezeExcitation", "Conv2dNormActivation"} <= set(templates)
    assert not {"PartitionAttentionLayer_2", "MBConv_2", "MaxVitLayer_2"} & set(templates)
    spec = yaml.safe_load(imported.text)["templates"]
    attention = spec["PartitionAttentionLayer"]["body"]
    assert attention["attn_layer"][1] == {"op": "partition_attention", "head_dim": 8, "size": 2}
    swap = {"op": "transpose", "axis0": 0, "axis1": 1, "when": "with_partition_swap"}
    assert attention["partition_swap"] == attention["departition_swap"] == swap
    # WindowPartition: (C, H, W) -> (C, H / p, p, W / p, p) -> (H / p, W / p, p, p, C) -> (H / p * W / p, p * p, C)
    sizes = ["partition_op_shape_1", "partition_op_shape_2"]
    assert attention["partition_op"] == {"op": "reshape", "shape": ["channels_in", *sizes, *sizes]}
    assert attention["partition_op_permute"] == {"op": "permute", "dims": [1, 3, 2, 4, 0]}
    tokens = ["partition_op_shape_1 * partition_op_shape_1", "partition_op_shape_2 * partition_op_shape_2"]
    assert attention["partition_op_tokens"] == {"op": "reshape", "shape": [*tokens, "channels_in"], "axes": "LLC"}
    assert attention["departition_op_map"]["shape"] == ["channels_in", "grid_size", "grid_size"]
    # block partitions: 2x2 squares of neighbours; grid partitions: a 2x2 grid of positions grid_size / 2 apart
    layer = spec["MaxVitLayer"]["body"]["layers"]
    assert layer["window_attention"]["args"][3:] == ["grid_size // 2"]
    assert layer["grid_attention"]["args"] == {
        **{"channels_in": "out_channels", "grid_size": "grid_size", "p_stochastic_dropout": "p_stochastic_dropout"},
        **{"partition_op_shape_2": "grid_size // 2", "with_partition_swap": True},
    }


def test_generated_model_loads_torchvisions_state_dict_and_agrees(imported):
    torch.manual_seed(0)
    reference = small_maxvit()
    randomise(reference)
    with torch.no_grad():  # torchvision's 0.02 would hide a wrong offset or a small head
        for name, p in reference.named_parameters():
            if name.endswith("relative_position_bias_table") or name == "classifier.5.weight":
                p.normal_(0.0, 1.0)
    reference.eval()
    net = imported.compiled
    ours = generated_with_weights(net, reference)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        a, b = reference(x), ours(x)
    assert a.abs().max() > 0.1
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-5 * a.abs().max().item())


def test_parameters_and_multiply_adds_are_the_hand_written_specs(imported):
    hand = nasdsl.compile_spec(SPECS / "maxvit_t.yaml", SPEC_VARIABLES).summary()["totals"]
    assert imported.report.params == sum(p.numel() for p in small_maxvit().parameters()) == hand["params"]
    assert imported.report.macs == hand["macs"]


def test_maxvit_t_has_torchvisions_documented_parameters_and_multiply_adds():
    """At full size (on the meta device: no weights made), the figures torchvision documents with
    its default weights; block and grid attention of the eleven layers are 22 uses of one template."""
    result = import_model("torchvision:maxvit_t")
    meta = MaxVit_T_Weights.DEFAULT.meta
    assert result.report.params == meta["num_params"] == 30_919_624
    assert round(result.report.macs / 1e9, 3) == meta["_ops"] == 5.558
    uses = {name: n for name, _, n in result.report.templates}
    assert (uses["MBConv"], uses["PartitionAttentionLayer"], uses["MaxVitLayer"]) == (11, 22, 11)


def test_an_attention_scaled_otherwise_is_a_located_error(tmp_path, monkeypatch, capsys):
    """Keys scaled by the head's size (the usual scaling, not torchvision's C ** -0.5) are another
    network: exit 2, the node and the source line named, nothing written."""

    def per_head() -> MaxVit:
        model = small_maxvit()
        for m in model.modules():
            if isinstance(m, RelativePositionalMultiHeadAttention):
                m.scale_factor = m.head_dim**-0.5
        return model

    with pytest.raises(ImportFailure) as e:
        import_model(per_head, input_shape=(3, 64, 64))
    # the first stage's 8 features are one head of 8: both scalings agree there, the second's do not
    assert e.value.format() == (
        f"{maxvit.__file__}:{_line_of('self.attn_layer(x)')}:1: error: "
        "blocks.1.layers.0.layers.window_attention.attn_layer.1: module "
        "RelativePositionalMultiHeadAttention (fx node 'blocks_1_layers_0_layers_window_attention_attn_layer_1'): "
        "keys scaled by 0.353553: the spec's partition_attention scales them by the feature size's 16 ** -0.5 = "
        "0.25, as torchvision builds it"
    )
    (tmp_path / "per_head_maxvit.py").write_text(
        "from torchvision.models.maxvit import MaxVit, RelativePositionalMultiHeadAttention\n\n\n"
        "def build():\n"
        "    model = MaxVit(input_size=(32, 32), stem_channels=8, partition_size=2, block_channels=[16],\n"
        "                   block_layers=[1], head_dim=8, stochastic_depth_prob=0.0, num_classes=10)\n"
        "    for m in model.modules():\n"
        "        if isinstance(m, RelativePositionalMultiHeadAttention):\n"
        "            m.scale_factor = m.head_dim ** -0.5\n"
        "    return model\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(__import__("sys").modules, "per_head_maxvit", raising=False)
    out = tmp_path / "maxvit.yaml"
    assert cli_main(["import", "module:per_head_maxvit:build", "-o", str(out), "--input-shape", "3,32,32"]) == 2
    assert "module RelativePositionalMultiHeadAttention" in capsys.readouterr().err
    assert not out.exists()


class _Swapping(torch.nn.Module):
    """A map's positions as tokens by torch.swapaxes (the function SwapAxes calls) and back by
    the tensor method."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Conv2d(3, 8, 4, stride=4)
        self.mix = torch.nn.Linear(8, 8)

    def forward(self, x):
        t = torch.swapaxes(self.proj(x).flatten(2), 1, 2)
        return self.mix(t).swapaxes(2, 1)


def test_swapaxes_as_a_function_or_a_method_is_transpose():
    torch.manual_seed(0)
    reference = _Swapping().eval()
    result = import_model(_Swapping, input_shape=(3, 16, 16))
    model = yaml.safe_load(result.text)["model"]
    assert model["swapaxes"] == model["swapaxes_1"] == {"op": "transpose", "axis0": 0, "axis1": 1}
    ours = nasdsl.build_model(result.compiled, weights=reference.state_dict()).eval()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = reference(x), ours(x)
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-5 * a.abs().max().item())
