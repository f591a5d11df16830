"""``nasdsl import`` of MaxViT from ONNX: torchvision's MaxVit exported by ``torch.onnx.export``
(TorchScript exporter), and nasdsl's own export of the hand-written ``specs/maxvit_t.yaml``.

The references are independent of the importer: a small MaxViT built by torchvision's own
``MaxVit`` class (2x2 partitions at 64x64, as in tests/test_import_maxvit.py), whose
``state_dict`` the import's tensors must be (the relative-position bias table recovered from the
bias the exporter computed included), ONNX Runtime running the source file against the imported
spec's export with the carried weights, and the spec the PyTorch importer writes for the same
module (its partitions' reshapes and permutes). maxvit_t's round trip at full size is
``benchmarks/import_zoo.py --models maxvit_t --check``.
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
from torchvision.models.maxvit import MaxVit

import nasdsl
from nasdsl import ir
from nasdsl.backends.onnx import export_onnx
from nasdsl.importer import ImportFailure, import_model
from nasdsl.weights import initial_weights

from paths import SPECS
from reference_models import MAXVIT_CHANNELS, MAXVIT_LAYERS, MAXVIT_SPEC_VARIABLES, randomise, small_maxvit

#: the small MaxViT's settings, as torchvision's constructor and the hand-written spec name them
#: (tests/test_import_maxvit.py's)
CHANNELS, LAYERS, SPEC_VARIABLES = MAXVIT_CHANNELS, MAXVIT_LAYERS, MAXVIT_SPEC_VARIABLES


def _small_maxvit() -> MaxVit:
    torch.manual_seed(0)
    model = small_maxvit(stochastic_depth_prob=0.0)
    randomise(model)
    with torch.no_grad():  # torchvision's 0.02 would hide a wrong offset or a small head
        for name, p in model.named_parameters():
            if name.endswith("relative_position_bias_table") or name == "classifier.5.weight":
                p.normal_(0.0, 1.0)
    return model.eval()


def _torch_onnx(model: nn.Module) -> onnx.ModelProto:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, 3, 64, 64),), buf, dynamo=False, opset_version=17)
    return onnx.load_from_string(buf.getvalue())


def _ops(graph, op: str) -> dict:
    return {name: data.attrs for name, data in ir.nodes(graph) if data.op == op}


def _given(attrs) -> dict:
    """An op's attributes as a spec gives them (lists; the defaults left out)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in attrs.items() if v is not None}


@pytest.fixture(scope="module")
def exported():
    model = _small_maxvit()
    proto = _torch_onnx(model)
    return model, proto, import_model(proto, weights=True)


def test_maxvit_from_torch_onnx_export(exported):
    model, proto, result = exported
    attention = _ops(result.compiled.graph, "partition_attention")
    layers = [f"blocks.{b}.layers.{k}.layers" for b, n in enumerate(LAYERS) for k in range(n)]
    assert sorted(attention) == sorted(
        f"{layer}.{kind}.attn_layer.1" for layer in layers for kind in ("window_attention", "grid_attention")
    )
    assert all(a == {"head_dim": 8, "size": 2} for a in attention.values())
    # WindowPartition and WindowDepartition as the PyTorch importer writes them (the first layer's
    # 16x16 map of 8 channels: 2x2 squares, an 8x8 grid of them)
    ops = {name: (d.op, _given(d.attrs)) for name, d in ir.nodes(result.compiled.graph)}
    block = "blocks.0.layers.0.layers.window_attention"
    assert ops[f"{block}.partition_op"] == ("reshape", {"shape": [8, 8, 2, 8, 2]})
    assert ops[f"{block}.partition_op_permute"] == ("permute", {"dims": [1, 3, 2, 4, 0]})
    assert ops[f"{block}.partition_op_tokens"] == ("reshape", {"shape": [64, 4, 8], "axes": "LLC"})
    assert ops[f"{block}.departition_op"] == ("reshape", {"shape": [8, 8, 2, 2, 8]})
    assert ops[f"{block}.departition_op_permute"] == ("permute", {"dims": [4, 0, 2, 1, 3]})
    assert ops[f"{block}.departition_op_map"] == ("reshape", {"shape": [8, 16, 16], "axes": "CHW"})
    # the attention's tensors are torchvision's (the exporter folds each BatchNorm after a
    # convolution into it: those differ from the state_dict, and ONNX Runtime checks them)
    theirs = {k: v.detach().numpy() for k, v in model.state_dict().items() if ".attn_layer.1." in k}
    assert len(theirs) == 10 * 6 and {k for k in result.weights if ".attn_layer.1." in k} == set(theirs)
    for key, value in theirs.items():
        np.testing.assert_allclose(result.weights[key], value, rtol=1e-6, atol=1e-7, err_msg=key)
    assert agreement(proto, result, least=0.1) <= 1e-5


def test_block_and_grid_attention_are_one_template_switching_the_axis_swap(exported):
    """torchvision's PartitionAttentionLayer is one class for both partitions, the grid's with
    its axis swaps (``SwapAxes``) where the block's has ``nn.Identity``: from the file's names,
    the two are one template too, used at each of torchvision's instances, its swaps switched
    on exactly where torchvision's partition is the grid."""
    from torchvision.models.maxvit import PartitionAttentionLayer

    model, _, result = exported
    theirs = {p: m.partition_type == "grid" for p, m in model.named_modules() if type(m) is PartitionAttentionLayer}
    assert len(theirs) == 2 * sum(LAYERS)
    g = result.compiled.graph
    (name,) = [n for n, t in ir.info(g).templates.items() if set(t.instances) & set(theirs)]
    assert sorted(ir.info(g).templates[name].instances) == sorted(theirs)
    for path, grid in theirs.items():
        assert g.has_node(f"{path}.partition_swap") == g.has_node(f"{path}.departition_swap") == grid, path


def test_names_stripped_each_attention_and_its_mlp_is_one_template(exported):
    """By structure alone (node names and metadata stripped), MaxViT is read in blocks: the
    partitions' reshapes and permutes (a block and a grid partition differ in their order of
    axes, so they are different blocks, not one with the order as parameters), and each
    attention with its MLP, two residual halves always together, one template of ten uses,
    each holding exactly the tensors of one of torchvision's PartitionAttentionLayers (whose
    partition and departition hold none); the import agrees with the file."""
    model, proto, _ = exported
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    for node in proto.graph.node:
        node.name = ""
        del node.metadata_props[:]
    result = import_model(proto, weights=True)
    assert not result.report.notes
    g = result.compiled.graph
    holding = [t for t in ir.info(g).templates.values() if any(d.op == "partition_attention" for _, d in _body(g, t))]
    uses = max(holding, key=lambda t: len(t.instances)).instances  # the innermost: the others hold it
    assert len(uses) == 10

    def tensors(weights: dict, prefix: str) -> list:
        return sorted(
            (v for k, v in weights.items() if k.startswith(prefix)), key=lambda v: (v.shape, v.ravel()[:4].tolist())
        )

    theirs = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    layers = [p for p, m in model.named_modules() if type(m).__name__ == "PartitionAttentionLayer"]
    expected = [tensors(theirs, f"{p}.attn_layer.") + tensors(theirs, f"{p}.mlp_layer.") for p in layers]
    expected = [sorted(e, key=lambda v: (v.shape, v.ravel()[:4].tolist())) for e in expected]
    for path in uses:
        ours = tensors(result.weights, path + ".")
        matched = [
            k
            for k, e in enumerate(expected)
            if len(e) == len(ours)
            and all(a.shape == b.shape and np.allclose(a, b, atol=1e-6) for a, b in zip(ours, e, strict=True))
        ]
        assert len(matched) == 1, path
        expected.pop(matched[0])
    assert agreement(proto, result, least=0.1) <= 1e-5


def _body(g, template):
    """The nodes of a template's first use."""
    first = sorted(template.instances)[0]
    return [(n, d) for n, d in ir.nodes(g) if n.startswith(first + ".")]


def test_nasdsl_export_of_the_hand_written_spec():
    hand = nasdsl.compile_spec(SPECS / "maxvit_t.yaml", SPEC_VARIABLES)
    rng = np.random.default_rng(0)  # random values for the tensors that start at zero
    weights = {
        k: (0.1 * rng.standard_normal(v.shape)).astype(v.dtype) if v.dtype.kind == "f" and not v.any() else v
        for k, v in initial_weights(hand.graph, seed=0).items()
    }
    head = [k for k in weights if k.endswith(".weight")][-1]
    for key in [head, *(k for k in weights if k.endswith("relative_position_bias_table"))]:
        weights[key] = rng.standard_normal(weights[key].shape).astype(np.float32)  # as large as they may be
    proto = export_onnx(hand.graph, state_dict=weights)
    result = import_model(proto, weights=True)
    theirs = _ops(hand.graph, "partition_attention")
    assert len(theirs) == 10 and _ops(result.compiled.graph, "partition_attention") == theirs
    # the spec's one PartitionAttentionLayer for both partitions is one template again
    layer = set(ir.info(hand.graph).templates["PartitionAttentionLayer"].instances)
    assert [
        set(t.instances) for t in ir.info(result.compiled.graph).templates.values() if set(t.instances) & layer
    ] == [layer]
    assert agreement(proto, result, least=0.1) <= 1e-5


class _Tiles(nn.Module):
    """A map cut into 2x2 squares with the positions of each square in another order than
    WindowPartition's (``(dx, dy)`` instead of ``(dy, dx)``)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 4, stride=4)

    def forward(self, x):
        x = self.conv(x)
        b, c, h, w = x.shape
        x = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 5, 3, 1)
        return x.reshape(b, (h // 2) * (w // 2), 4, c)


def test_a_partition_the_spec_cannot_say_is_a_located_error():
    with pytest.raises(ImportFailure, match=r"a Reshape from \[1, 8, 16, 16\] to \[1, 8, 8, 2, 8, 2\]") as info:
        import_model(_torch_onnx(_Tiles().eval()))
    assert "graph.node[" in info.value.format() and "'/Reshape' (Reshape)" in info.value.format()


def test_a_partition_attention_of_another_scale_is_a_located_error(exported):
    model = _small_maxvit()
    for m in model.modules():
        if hasattr(m, "scale_factor"):
            m.scale_factor = m.head_dim**-0.5
    with pytest.raises(
        ImportFailure, match=r"read as partition_attention \(head_dim: 8, size: 2\), but differ"
    ) as info:
        import_model(_torch_onnx(model))
    assert "graph.node[" in info.value.format() and "attn_layer.1/Softmax' (Softmax)" in info.value.format()
