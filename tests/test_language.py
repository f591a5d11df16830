"""The constructs that let the language write torchvision's zoo: references to the
body's input and `from`, explicit sequences, repetition (loops in the generated code,
flat repetition, dashed names), entries a template parameter switches, placement in
`extends`, and the ops and merges added for MobileNetV3, EfficientNet, ShuffleNetV2,
ConvNeXt. Each op is compared with an independent computation: torch's own functions
or torchvision's modules for the generated PyTorch, ONNX Runtime for the export."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
import torchvision

import nasdsl
from nasdsl import ir
from nasdsl.backends.onnx import export_onnx
from nasdsl.backends.pytorch import generate_source, load_source
from nasdsl.backends.verify import run_onnx, verify
from nasdsl.errors import NasdslError

from paths import ROOT

EXAMPLES = ROOT / "docs" / "examples"


def compile_text(tmp_path: Path, text: str, name: str = "spec.yaml", **overrides) -> nasdsl.Compiled:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return nasdsl.compile_spec(path, overrides or ())


def model_of(net: nasdsl.Compiled) -> torch.nn.Module:
    torch.manual_seed(0)
    return getattr(load_source(generate_source(net)), net.spec.name)().eval()


def one_op(tmp_path: Path, shape: list[int], block: str) -> nasdsl.Compiled:
    return compile_text(tmp_path, f"name: Net\ninput: {{shape: {shape}}}\nmodel:\n  layer: {block}\n")


# -- ops against torch's functions -----------------------------------------------------------


@pytest.mark.parametrize(
    ("block", "reference"),
    [
        ("hardswish", F.hardswish),
        ("hardsigmoid", F.hardsigmoid),
        ("{op: channel_shuffle, groups: 3}", torch.nn.ChannelShuffle(3)),
        ("{op: slice, start: 2, stop: 5}", lambda x: x[:, 2:5]),
        ("{op: slice, start: 4}", lambda x: x[:, 4:]),
        ("{op: permute, dims: [1, 2, 0]}", lambda x: x.permute(0, 2, 3, 1)),
        ("{op: stochastic_depth, p: 0.5}", lambda x: x),  # an identity at inference
    ],
    ids=["hardswish", "hardsigmoid", "channel_shuffle", "slice", "slice_to_end", "permute", "stochastic_depth"],
)
def test_op_computes_what_torch_computes(tmp_path, block, reference):
    net = one_op(tmp_path, [6, 5, 7], block)
    x = torch.randn(2, 6, 5, 7, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference(x.clone())
        got = model_of(net)(x.clone())
    assert got.shape == expected.shape and tuple(got.shape[1:]) == ir.node(net.graph, "layer").shape
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_layer_norm_over_channels_is_torchvisions_layernorm2d(tmp_path):
    net = one_op(tmp_path, [8, 5, 5], "{op: layer_norm, eps: 1.0e-6}")
    model = model_of(net)
    reference = torchvision.models.convnext.LayerNorm2d(8, eps=1e-6)
    with torch.no_grad():
        reference.weight.copy_(torch.rand(8) + 0.5)
        reference.bias.copy_(torch.randn(8))
    model.load_state_dict({"layer." + k: v for k, v in reference.state_dict().items()}, strict=True)
    x = torch.randn(2, 8, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=1e-6, atol=1e-6)
    assert net.summary()["totals"]["params"] == 16 and net.summary()["totals"]["macs"] == 0


def test_linear_on_the_last_axis_counts_per_position(tmp_path):
    """ConvNeXt's MLP: a linear layer on the last axis of a channels-last map costs
    in x out multiply-adds at every position (torchvision's convention for its GFLOPS)."""
    net = compile_text(
        tmp_path,
        """
        name: Net
        input: {shape: [8, 5, 6]}
        model:
          last: {op: permute, dims: [1, 2, 0]}
          fc: {op: linear, out: 16, dim: last}
        """,
    )
    rows = {r["name"]: r for r in net.summary()["rows"]}
    assert rows["fc"]["params"] == 8 * 16 + 16 and rows["fc"]["macs"] == 5 * 6 * 8 * 16
    model = model_of(net)
    x = torch.randn(2, 8, 5, 6)
    with torch.no_grad():
        expected = F.linear(x.permute(0, 2, 3, 1), model.fc.weight, model.fc.bias)
        torch.testing.assert_close(model(x), expected)


def test_stochastic_depth_matches_torchvision_in_training(tmp_path):
    """Same random stream, same samples dropped and the same 1 / (1 - p) scaling."""
    net = one_op(tmp_path, [4, 3, 3], "{op: stochastic_depth, p: 0.3}")
    model = model_of(net).train()
    x = torch.randn(64, 4, 3, 3)
    torch.manual_seed(5)
    got = model(x)
    torch.manual_seed(5)
    expected = torchvision.ops.stochastic_depth(x, 0.3, "row", training=True)
    torch.testing.assert_close(got, expected)
    assert 0 < int((got.flatten(1).abs().sum(1) == 0).sum()) < 64  # some samples dropped, not all


def test_mul_broadcasts_a_channel_gate_and_mean_averages(tmp_path):
    net = compile_text(
        tmp_path,
        """
        name: Net
        input: {shape: [6, 4, 4]}
        model:
          gated:
            mul:
              - identity
              - [global_avg_pool, sigmoid]
          avg:
            mean:
              a: relu
              b: tanh
        """,
    )
    assert ir.node(net.graph, "gated").shape == (6, 4, 4)
    x = torch.randn(2, 6, 4, 4)
    with torch.no_grad():
        gated = x * torch.sigmoid(x.mean((2, 3), keepdim=True))
        expected = (torch.relu(gated) + torch.tanh(gated)) / 2
        torch.testing.assert_close(model_of(net)(x), expected)
    assert net.summary()["totals"]["macs"] == 0


def test_layer_scale_is_a_parameter_named_after_its_entry(tmp_path):
    net = compile_text(
        tmp_path,
        """
        name: Net
        input: {shape: [5, 3, 3]}
        model:
          layer_scale: {op: layer_scale, init: 0.5}
        """,
    )
    model = model_of(net)
    assert list(model.state_dict()) == ["layer_scale"] and model.layer_scale.shape == (5, 1, 1)
    assert torch.all(model.layer_scale == 0.5)
    x = torch.randn(2, 5, 3, 3)
    with torch.no_grad():
        torch.testing.assert_close(model(x), x * 0.5)


# -- ONNX against the generated PyTorch ------------------------------------------------------


NEW_CONSTRUCT_EXAMPLES = [
    "resnet_stage",
    "dense_block",
    "dense_block_variant",
    "vgg_features",
    "squeeze_excitation",
    "shuffle_block",
    "convnext_block",
]


@pytest.mark.parametrize("name", NEW_CONSTRUCT_EXAMPLES)
def test_example_exports_to_onnx_with_the_same_outputs(name):
    net = nasdsl.compile_spec(EXAMPLES / f"{name}.yaml", {"input.shape": _small_input(name)})
    result = verify(net.graph, batch=2)
    assert result.ok, result


def _small_input(name: str) -> list[int]:
    channels = nasdsl.compile_spec(EXAMPLES / f"{name}.yaml").summary()["input"][0]
    return [channels, 16, 16]


@pytest.mark.parametrize("dim", ["channels", "last"])
def test_layer_norm_in_onnx_at_every_opset(tmp_path, dim):
    """LayerNormalization from opset 17, primitive ops below it: the same numbers (numpy's
    arithmetic as the reference), a learned weight and bias included."""
    net = one_op(tmp_path, [4, 3, 5], f"{{op: layer_norm, dim: {dim}}}")
    rng = np.random.default_rng(0)
    weight, bias = rng.standard_normal(5 if dim == "last" else 4), rng.standard_normal(5 if dim == "last" else 4)
    state = {"layer.weight": weight.astype(np.float32), "layer.bias": bias.astype(np.float32)}
    x = rng.standard_normal((2, 4, 3, 5)).astype(np.float32)
    axis = -1 if dim == "last" else 1
    mean, var = x.mean(axis, keepdims=True), x.var(axis, keepdims=True)
    shape = (1, 1, 1, 5) if dim == "last" else (1, 4, 1, 1)
    expected = (x - mean) / np.sqrt(var + 1e-5) * weight.reshape(shape) + bias.reshape(shape)
    kinds = {}
    for opset in (13, 16, 17, 21):
        model = export_onnx(net.graph, state_dict=state, opset=opset, batch=2)
        onnx.checker.check_model(model, full_check=True)
        kinds[opset] = {node.op_type for node in model.graph.node}
        (got,) = run_onnx(model, {"x": x}).values()
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert "LayerNormalization" in kinds[17] and "LayerNormalization" not in kinds[16]
    assert {"ReduceMean", "Sqrt"} <= kinds[13]


# -- repetition --------------------------------------------------------------------------------


def test_repeat_names_children_and_writes_a_loop():
    net = nasdsl.compile_spec(EXAMPLES / "dense_block.yaml")
    source = generate_source(net)
    assert "for i in range(6):" in source and 'f"denselayer{i + 1}", DenseLayer(64 + 32 * i, 32)' in source
    assert source.count("DenseLayer(") == 1 + 1  # the class and the loop's one call
    keys = list(model_of(net).state_dict())
    assert "denseblock1.denselayer6.conv2.weight" in keys and "denseblock1.denselayer7.conv2.weight" not in keys
    # layer i reads 64 + 32 i channels (DenseNet-121's first block)
    assert ir.node(net.graph, "denseblock1.denselayer4.norm1").shape[0] == 64 + 32 * 3


def test_a_first_block_that_differs_comes_before_the_loop():
    source = generate_source(nasdsl.compile_spec(EXAMPLES / "resnet_stage.yaml"))
    assert "self.layer2 = nn.Sequential(BasicBlock(64, 128, stride=2, downsample=True))" in source
    assert "for _ in range(1, 4):" in source


def test_flat_repeat_keeps_torchvisions_vgg_indices():
    model = model_of(nasdsl.compile_spec(EXAMPLES / "vgg_features.yaml"))
    reference = torchvision.models.vgg16_bn().features[:24]  # the first three stages
    assert list(model.features.state_dict()) == list(reference.state_dict())


def test_repeat_count_variable_is_no_constructor_argument():
    net = nasdsl.compile_spec(EXAMPLES / "dense_block.yaml")
    assert "layers" not in ir.info(net.graph).structural or "layers" not in _exposed(net)
    assert "def __init__(self) -> None:" in generate_source(net)
    smaller = nasdsl.compile_spec(EXAMPLES / "dense_block.yaml", {"layers": 2})
    assert "for i in range(2):" not in generate_source(smaller)  # two blocks: a list, not a loop
    assert len(model_of(smaller).denseblock1) == 2


def _exposed(net: nasdsl.Compiled) -> tuple[str, ...]:
    from nasdsl.passes.exposure import expose

    return ir.info(expose(net.graph)).exposed


def test_dashed_names_are_state_dict_keys(tmp_path):
    net = compile_text(
        tmp_path,
        """
        name: Net
        input: {shape: [3, 8, 8]}
        model:
          trunk:
            seq:
              block1:
                repeat: 3
                name: "block1-{i}"
                block: [{op: conv2d, out: 4, kernel: 3, padding: 1}, relu]
        """,
    )
    keys = list(model_of(net).state_dict())
    assert keys[:2] == ["trunk.block1.block1-0.0.weight", "trunk.block1.block1-0.0.bias"]
    assert verify(net.graph).ok


def test_index_in_a_template_is_written_per_repetition(tmp_path):
    net = compile_text(
        tmp_path,
        """
        name: Net
        input: {shape: [3, 8, 8]}
        templates:
          Stage:
            params: [growth]
            body:
              layers:
                repeat: 3
                name: "layer{i + 1}"
                block: {op: conv2d, out: "growth * (i + 1)", kernel: 3, padding: 1}
        model:
          a: {use: Stage, args: [4]}
          b: {use: Stage, args: [2]}
        """,
    )
    source = generate_source(net)
    assert "layer3=nn.Conv2d(growth * 2, growth * 3, 3, padding=1)" in source
    model = model_of(net)
    assert model.a.layers.layer3.out_channels == 12 and model.b.layers.layer3.out_channels == 6


# -- entries switched by a template parameter ---------------------------------------------------


def test_one_class_builds_the_projection_where_its_argument_says():
    net = nasdsl.compile_spec(EXAMPLES / "resnet_stage.yaml")
    source = generate_source(net)
    assert source.count("class BasicBlock(") == 1
    model = model_of(net)
    assert model.layer2[0].downsample is not None and model.layer2[1].downsample is None
    assert model.layer1[0].downsample is None
    # torchvision's BasicBlock holds the same tensors under the same names
    reference = torchvision.models.resnet.BasicBlock(
        64,
        128,
        stride=2,
        downsample=torch.nn.Sequential(torch.nn.Conv2d(64, 128, 1, 2, bias=False), torch.nn.BatchNorm2d(128)),
    )
    assert list(model.layer2[0].state_dict()) == list(reference.state_dict())
    reference.load_state_dict(model.layer2[0].state_dict())
    x = torch.randn(2, 64, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model.layer2[0](x), reference.eval()(x))


def test_a_switched_entry_that_changes_width_cannot_be_read_in_sequence(tmp_path):
    with pytest.raises(NasdslError, match="cannot read it in sequence"):
        generate_source(
            compile_text(
                tmp_path,
                """
                name: Net
                input: {shape: [3, 8, 8]}
                templates:
                  B:
                    params: [{wide: false}]
                    body:
                      widen: {op: conv2d, out: 16, kernel: 1, when: wide}
                      conv: {op: conv2d, out: 4, kernel: 1}
                model:
                  a: {use: B, args: {wide: true}}
                  b: {use: B}
                """,
            )
        )


def test_a_switched_entry_is_read_in_sequence_where_the_class_writes_the_same_width(tmp_path):
    """The widths are compared as the class writes them: a model whose switched convolution keeps
    the channel count once its variables are folded (both 16 here, neither an argument) is written,
    as nasdsl search's variants of examples/digits_space.yaml are (IR v2's symbolic widths,
    width1 against width2, refused it)."""
    text = """
        name: Net
        input: {shape: [1, 8, 8]}
        variables: {w1: 16, w2: 16, second: false}
        model:
          conv1: {op: conv2d, out: w1, kernel: 3, padding: 1}
          conv2: {op: conv2d, out: w2, kernel: 3, padding: 1, when: second}
          relu2: {op: relu, when: second}
          pool: {op: max_pool, kernel: 2}
          flat: flatten
          fc: {op: linear, out: 10}
        """
    for second in (False, True):
        net = compile_text(tmp_path, text, second=second)
        model = model_of(net)
        assert ("conv2.weight" in model.state_dict()) is second
        assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    assert "second: bool" in generate_source(compile_text(tmp_path, text))  # the switch is an argument
    wider = generate_source(compile_text(tmp_path, text, w2=32))  # which it cannot be if it changes fc's width
    assert "second" not in wider.split("def __init__")[1].split(")")[0]


def test_a_residual_whose_projection_a_parameter_switches_is_one_class(tmp_path):
    """The sum reads the projection at one use and the block's input at the other (a switched-off
    entry passes its input on); its size is written as the body's width at both, so one class
    serves them (``nasdsl import`` writes torchvision's RegNet block so, and it was refused)."""
    net = compile_text(
        tmp_path,
        """
        name: Net
        input: {shape: [3, 8, 8]}
        templates:
          Block:
            params: [width, {with_proj: false}]
            body:
              proj: {op: conv2d, out: width, kernel: 1, when: with_proj}
              f: {op: conv2d, out: width, kernel: 3, padding: 1, from: in}
              residual: {add: [{ref: proj}, {ref: f}]}
              act: relu
        model:
          a: {use: Block, args: [8, true]}
          b: {use: Block, args: [8]}
        """,
    )
    source = generate_source(net)
    assert source.count("class Block(") == 1 and "x = proj + f  # (N, width, H, W)" in source
    model = model_of(net)
    sd = model.state_dict()
    x = torch.randn(2, 3, 8, 8)

    def conv(name, v, padding):
        return F.conv2d(v, sd[f"{name}.weight"], sd[f"{name}.bias"], padding=padding)

    y = F.relu(conv("a.proj", x, 0) + conv("a.f", x, 1))
    want = F.relu(y + conv("b.f", y, 1))
    torch.testing.assert_close(model(x), want, rtol=1e-5, atol=1e-6)


def test_a_parameter_after_a_defaulted_one_is_keyword_only(tmp_path):
    """A default the class cannot write makes its parameter required; after a defaulted one it is
    keyword-only, and calls name it (it was a SyntaxError in the generated file)."""
    net = compile_text(
        tmp_path,
        """
        name: Net
        input: {shape: [3, 8, 8]}
        templates:
          Block:
            params: [out, {k: 1}, {wide: "out * 2 if out > 4 else out"}]
            body:
              conv: {op: conv2d, out: out, kernel: k}
              conv2: {op: conv2d, out: wide, kernel: 1}
        model:
          a: {use: Block, args: [4]}
          b: {use: Block, args: [8, 3]}
        """,
    )
    source = generate_source(net)
    assert "def __init__(self, in_channels: int, out: int, k: int = 1, *, wide: int) -> None:" in source
    assert "Block(3, 4, wide=4)" in source and "Block(4, 8, k=3, wide=16)" in source
    assert model_of(net).b.conv2.out_channels == 16


# -- extends: placement ---------------------------------------------------------------------


def test_extends_places_entries_before_and_after(tmp_path):
    net = nasdsl.compile_spec(EXAMPLES / "dense_block_variant.yaml")
    entries = [b.name for b in ir.info(net.graph).model.children]
    assert entries == ["denseblock1", "dropout", "squeeze", "transition1"]
