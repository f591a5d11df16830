"""``nasdsl import`` of files written by ``torch.onnx.export``'s default exporter (``dynamo=True``),
which keeps no module names in node names and writes some layers otherwise than the TorchScript
exporter: ConvNeXt's and Swin's heads pool and then copy the map through an ``as_strided`` (a
``Reshape`` to ``[-1]`` and a ``Gather`` of every index in order), ViT's class token arrives
already expanded to a batch of one, as a constant, Swin V2's weight-only computations are folded
(its logit scale, the first layer of its position-bias MLP), and MaxViT's window departition and
the grid partition after it share one ``Reshape``. Untrained (as torchvision initialises them),
equal tensors are stored once and read by many modules, and ViT's out projection's zero bias is
dropped.

The references are independent of the importer: small models built by torchvision's own
classes, their initializers named by torchvision's ``state_dict``, and ONNX Runtime running the
source file against the imported spec's export with the carried weights. One export per model,
shared by the module.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx_runs import agreement
from torch import nn
from torchvision.models.convnext import CNBlockConfig, ConvNeXt
from torchvision.models.maxvit import MaxVit
from torchvision.models.swin_transformer import PatchMergingV2, SwinTransformer, SwinTransformerBlockV2
from torchvision.models.vision_transformer import VisionTransformer

from nasdsl import ir
from nasdsl.importer import ImportFailure, import_model

from reference_models import randomise

pytest.importorskip("onnxscript")  # torch.onnx.export's dynamo exporter needs it


def _dynamo_onnx(model: nn.Module, size: int) -> onnx.ModelProto:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (torch.randn(1, 3, size, size),), dynamo=True)
    return program.model_proto


def _ops(result, op: str) -> dict:
    return {name: data.attrs for name, data in ir.nodes(result.compiled.graph) if data.op == op}


def _same_state(result, model: nn.Module, renamed: dict | None = None) -> None:
    """Every tensor of torchvision's state_dict is carried, under its name (``renamed``: the
    names the file does not keep); ConvNeXt's ``layer_scale`` of shape ``(C, 1, 1)`` is held by
    nasdsl's ``layer_scale`` op as ``(C,)``."""
    renamed = renamed or {}
    theirs = {renamed.get(k, k): v.numpy() for k, v in model.state_dict().items()}
    assert set(result.weights) == set(theirs)
    for key, value in theirs.items():
        np.testing.assert_allclose(result.weights[key].reshape(value.shape), value, rtol=1e-6, atol=1e-7, err_msg=key)


def _same_untrained_state(result, model: nn.Module, names: set[str], renamed: dict | None = None) -> None:
    """The zero biases of convolutions and linear layers whose Add the exporter dropped are in
    neither the file (its initializer ``names``) nor the import; every other tensor of
    torchvision's state_dict is carried, under its own name, with its values."""
    renamed = renamed or {}
    state = {renamed.get(k, k): v.numpy() for k, v in model.state_dict().items()}
    dropped = set(state) - set(result.weights)
    assert dropped and all(k.endswith(".bias") and not state[k].any() and k not in names for k in dropped)
    assert set(result.weights) <= set(state)
    for key in set(state) - dropped:
        np.testing.assert_array_equal(result.weights[key].reshape(state[key].shape), state[key], err_msg=key)


def _convnext(randomised: bool = True) -> nn.Module:
    torch.manual_seed(0)
    model = ConvNeXt([CNBlockConfig(8, 16, 2), CNBlockConfig(16, None, 1)], num_classes=10)
    if randomised:
        randomise(model)
    return model.eval()


def _vit(randomised: bool = True) -> nn.Module:
    torch.manual_seed(0)
    model = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64)
    if randomised:
        randomise(model)
    else:  # torchvision's head starts at zeros, which would hide every other layer's output
        with torch.no_grad():
            model.heads.head.weight.normal_()
    return model.eval()


def _swin(v2: bool = False, randomised: bool = True) -> nn.Module:
    torch.manual_seed(0)
    extra = {"block": SwinTransformerBlockV2, "downsample_layer": PatchMergingV2} if v2 else {}
    # one stage of two blocks (the second shifted) on an 8x8 map of 4x4 windows
    model = SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2], num_heads=[2], window_size=[4, 4], **extra)
    if randomised:
        randomise(model)
    return model.eval()


def _maxvit() -> nn.Module:
    """2x2 partitions at 32x32: the first stage's 8x8 map has a grid of 4x4 cells (the
    departition and the grid partition share a Reshape), the second's 4x4 map one of 2x2 cells
    (the Reshape dropped)."""
    torch.manual_seed(0)
    model = MaxVit(
        input_size=(32, 32),
        stem_channels=8,
        partition_size=2,
        block_channels=[8, 16],
        block_layers=[1, 1],
        head_dim=8,
        stochastic_depth_prob=0.0,
        num_classes=10,
    )
    randomise(model)
    with torch.no_grad():  # torchvision's 0.02 would hide a wrong offset
        for name, p in model.named_parameters():
            if name.endswith("relative_position_bias_table"):
                p.normal_(0.0, 1.0)
    return model.eval()


MODELS = {
    "convnext": (_convnext, 32),
    "vit": (_vit, 32),
    "swin": (_swin, 32),
    "swin_v2": (lambda: _swin(True), 32),
    "maxvit": (_maxvit, 32),
    # as torchvision initialises them: LayerNorms of ones and zeros, zero biases, which the
    # exporter stores once however many modules read them (or drops, where an Add of zeros)
    "convnext_untrained": (lambda: _convnext(randomised=False), 32),
    "vit_untrained": (lambda: _vit(randomised=False), 32),
    "swin_untrained": (lambda: _swin(randomised=False), 32),
}


@pytest.fixture(scope="module")
def exported():
    """name -> (torchvision's module, its dynamo export), made on first use."""
    made: dict = {}

    def get(name: str):
        if name not in made:
            build, size = MODELS[name]
            model = build()
            made[name] = (model, _dynamo_onnx(model, size))
        return made[name]

    return get


def test_convnext_from_dynamo_export(exported):
    model, proto = exported("convnext")
    assert "Gather" in {n.op_type for n in proto.graph.node}  # the head's as_strided copy is there
    result = import_model(proto, weights=True)
    dims = {name: attrs["dim"] for name, attrs in _ops(result, "layer_norm").items()}
    assert dims["features.0.1"] == "channels" and dims["features.1.0.block.2"] == "last"
    assert dims["classifier.0"] == "channels"
    assert len(_ops(result, "global_avg_pool")) == 1
    _same_state(result, model)
    assert agreement(proto, result) <= 1e-5


def test_a_strided_copy_in_another_order_is_a_located_error(exported):
    """The same pair with its indices reversed is no copy: the Reshape is refused, located."""
    _, proto = exported("convnext")
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    gather = next(n for n in proto.graph.node if n.op_type == "Gather")
    index = next(i for i in proto.graph.initializer if i.name == gather.input[1])
    values = onnx.numpy_helper.to_array(index)
    index.CopyFrom(onnx.numpy_helper.from_array(values.reshape(-1)[::-1].reshape(values.shape).copy(), index.name))
    with pytest.raises(ImportFailure) as e:
        import_model(proto)
    assert str(e.value) == (
        "<onnx model>: graph.node[42] 'node_Reshape_16' (Reshape): error: a Reshape from [1, 16, 1, 1] to [16]: "
        "the spec reads a Reshape as a flatten, a channel shuffle or MaxViT's partitions"
    )


def test_vit_from_dynamo_export(exported):
    """The exporter folds the class token's ``expand`` to a batch of one into a constant named
    ``expand``, joined to the patches by the ``Concat``: a ``parameter`` under that name."""
    model, proto = exported("vit")
    assert "Expand" not in {n.op_type for n in proto.graph.node}
    result = import_model(proto, weights=True)
    assert _ops(result, "parameter") == {
        "expand": {"shape": (1, 32), "axes": None},
        "encoder.pos_embedding": {"shape": (17, 32), "axes": None},
    }
    attention = _ops(result, "attention")
    assert sorted(attention) == [f"encoder.layers.encoder_layer_{i}.self_attention" for i in range(2)]
    assert all(a["heads"] == 2 for a in attention.values())
    _same_state(result, model, renamed={"class_token": "expand"})
    assert agreement(proto, result) <= 1e-5


def test_swin_from_dynamo_export(exported):
    """Swin's head pools through the same ``as_strided`` copy as ConvNeXt's."""
    _, proto = exported("swin")
    result = import_model(proto, weights=True)
    attention = _ops(result, "window_attention")
    assert sorted(attention) == ["features.1.0.attn", "features.1.1.attn"]
    assert {tuple(a["window"]) for a in attention.values()} == {(4, 4)}
    assert attention["features.1.1.attn"]["shift"] == 2 and attention["features.1.0.attn"]["shift"] == 0
    assert agreement(proto, result) <= 1e-5


def test_swin_v2_from_dynamo_export(exported):
    """The exporter folds what depends on weights alone: the logit scale arrives as
    ``exp(clamp(logit_scale))`` and the position-bias MLP's first layer as its product with the
    coordinates table. Both are read back and must be torchvision's tensors."""
    model, proto = exported("swin_v2")
    held = {i.name for i in proto.graph.initializer}
    assert not any(name.endswith(("logit_scale", "cpb_mlp.0.weight")) for name in held)  # folded
    result = import_model(proto, weights=True)
    attention = _ops(result, "window_attention")
    assert len(attention) == 2 and {a["version"] for a in attention.values()} == {2}
    theirs = model.state_dict()
    for block in ("features.1.0.attn", "features.1.1.attn"):
        for key in ("logit_scale", "cpb_mlp.0.weight", "cpb_mlp.0.bias", "cpb_mlp.2.weight"):
            np.testing.assert_allclose(
                result.weights[f"{block}.{key}"], theirs[f"{block}.{key}"].numpy(), rtol=1e-4, atol=1e-5, err_msg=key
            )
    assert agreement(proto, result) <= 1e-5


def test_maxvit_from_dynamo_export(exported):
    """Each window departition and the grid partition after it are written as ``Reshape,
    Transpose, Reshape, Transpose, Reshape`` (the middle one from ``(N, C, H/p, p, W/p, p)`` to
    ``(N, C, H/q, q, W/q, q)``): read as the two partitions the TorchScript exporter writes."""
    model, proto = exported("maxvit")
    result = import_model(proto, weights=True)
    ops = {name: (d.op, d.attrs) for name, d in ir.nodes(result.compiled.graph)}
    window = "blocks.0.layers.0.layers.window_attention"
    grid = "blocks.0.layers.0.layers.grid_attention"
    # the first layer's 8x8 map of 8 channels: back from 2x2 windows, then torchvision's
    # WindowPartition with p = 8 / 2 for the grid, x.view(C, H / p, p, W / p, p); the second's
    # 4x4 map of 16 channels, p = 4 / 2
    assert ops[f"{window}.departition_op_map"][1]["shape"] == (8, 8, 8)
    assert ops[f"{grid}.partition_op"][1]["shape"] == (8, 2, 4, 2, 4)
    assert ops["blocks.1.layers.0.layers.window_attention.departition_op_map"][1]["shape"] == (16, 4, 4)
    assert ops["blocks.1.layers.0.layers.grid_attention.partition_op"][1]["shape"] == (16, 2, 2, 2, 2)
    attention = {k: v for k, (op, v) in ops.items() if op == "partition_attention"}
    assert len(attention) == 4 and all(a["size"] == 2 for a in attention.values())
    theirs = {k: v.numpy() for k, v in model.state_dict().items() if ".attn_layer.1." in k}
    assert {k for k in result.weights if ".attn_layer.1." in k} == set(theirs)
    for key, value in theirs.items():
        np.testing.assert_allclose(result.weights[key], value, rtol=1e-6, atol=1e-7, err_msg=key)
    assert agreement(proto, result) <= 1e-5


def test_a_folded_position_bias_mlp_that_no_weight_gives_is_a_located_error(exported):
    """One value of the folded product of the first layer and the coordinates table changed: no
    first-layer weight gives it, and the attention is refused where it is."""
    _, proto = exported("swin_v2")
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    relu = next(n for n in proto.graph.node if n.op_type == "Relu")
    add = next(n for n in proto.graph.node if n.output[0] == relu.input[0])
    product = next(i for i in proto.graph.initializer if i.name in add.input and len(i.dims) > 1)
    values = onnx.numpy_helper.to_array(product).copy()
    values.flat[0] += 1.0
    product.CopyFrom(onnx.numpy_helper.from_array(values, product.name))
    with pytest.raises(ImportFailure, match=r"graph\.node\[\d+\] 'node_softmax' \(Softmax\): error: no continuous"):
        import_model(proto)


@pytest.mark.parametrize("name", ["convnext_untrained", "swin_untrained"])
def test_an_initializer_the_exporter_shares_is_each_modules_own(exported, name):
    """An untrained model's equal tensors are stored once; the import gives each module that
    reads one its own copy under its own name: the tensors are torchvision's state_dict, and the
    numbers are the file's."""
    model, proto = exported(name)
    names = {i.name for i in proto.graph.initializer}
    assert not set(model.state_dict()) <= names  # the file shares some of them
    result = import_model(proto, weights=True)
    assert agreement(proto, result) <= 1e-5
    _same_untrained_state(result, model, names)
    assert len(proto.graph.initializer) == len(names)  # the file passed in is left as it was


def test_an_attention_whose_zero_bias_was_dropped_has_zero_biases(exported):
    """The exporter drops the Add of the untrained out projection's zero bias and keeps the
    input projection's (zeros, shared by both layers): both are read as zeros."""
    model, proto = exported("vit_untrained")
    assert "encoder.layers.encoder_layer_0.self_attention.out_proj.bias" not in {
        i.name for i in proto.graph.initializer
    }
    result = import_model(proto, weights=True)
    assert all(a["bias"] is True for a in _ops(result, "attention").values())
    _same_untrained_state(result, model, {i.name for i in proto.graph.initializer}, {"class_token": "expand"})
    assert agreement(proto, result) <= 1e-5


def test_a_bias_on_one_projection_only_is_a_located_error(exported):
    """Where the kept bias is not zeros, the absent one cannot be told from the graph: refused."""
    _, proto = exported("vit_untrained")
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    bias = next(i for i in proto.graph.initializer if i.name.endswith("self_attention.in_proj_bias"))
    bias.CopyFrom(onnx.numpy_helper.from_array(np.full(96, 0.5, np.float32), bias.name))
    with pytest.raises(ImportFailure) as e:
        import_model(proto)
    assert str(e.value) == (
        "<onnx model>: graph.node[29] 'node_Softmax_84' (Softmax): error: "
        "a bias on one projection only: the spec's attention has both or neither"
    )


def test_a_module_tree_a_spec_cannot_write_falls_back_to_blocks_found_by_structure():
    """The dynamo exporter's ShuffleNet: its branches, read from the metadata, are no blocks a spec
    can write (their BatchNorms fused away, the numbered children do not come back as a list); the
    import finds its blocks by structure instead, says so, and agrees with the file."""
    from torchvision.models.shufflenetv2 import ShuffleNetV2

    torch.manual_seed(0)
    model = ShuffleNetV2([2, 2, 2], [8, 16, 32, 64, 128], num_classes=10)
    randomise(model)
    proto = _dynamo_onnx(model.eval(), 32)
    result = import_model(proto, weights=True)
    assert result.report.notes[0].startswith("the file's module tree could not be written as a spec (")
    assert "its name cannot name an entry of a named sequence" in result.report.notes[0]
    assert result.report.notes[0].endswith("): blocks found by structure")
    assert agreement(proto, result) <= 1e-5
