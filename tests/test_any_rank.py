"""Tensors of any rank (IR v2): ViT-B/16 and R3D-18 against torchvision, every op of any rank against
PyTorch and ONNX Runtime, sizes from the IR's shapes, and located errors for a rank an op does not take.

The references are independent of nasdsl: torchvision's models (built with random weights, never
downloaded) and their documented figures (``weights.meta``), and ONNX Runtime.
"""

from __future__ import annotations

import textwrap

import pytest
import torch
import torchvision
from torchvision.models import get_model_weights

import nasdsl
from nasdsl import ir
from nasdsl.backends.pytorch import generate_source, model_class
from nasdsl.backends.verify import verify
from nasdsl.cli import main
from nasdsl.weights import parameters

from paths import SPECS
from reference_models import without_initialisation

VIT = SPECS / "vit_b_16.yaml"
R3D = SPECS / "r3d_18.yaml"


def _randomised(model: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state_dict of ``model``'s shapes with random values (positive variances), so that no
    output is trivially zero (the ViT head starts at zeros)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in model.state_dict().items():
        if not v.is_floating_point():
            out[k] = v
        elif k.endswith("running_var"):
            out[k] = torch.rand(v.shape, generator=g) + 0.5
        else:
            out[k] = torch.randn(v.shape, generator=g) * 0.05
    return out


@pytest.fixture(scope="module")
def vit():
    reference = torchvision.models.vit_b_16().eval()
    state = _randomised(reference)
    reference.load_state_dict(state)
    return nasdsl.compile_spec(VIT), reference, state


@pytest.fixture(scope="module")
def r3d():
    reference = torchvision.models.video.r3d_18().eval()
    state = _randomised(reference, seed=1)
    reference.load_state_dict(state)
    return reference, state


def test_vit_b_16_is_torchvisions(vit):
    compiled, reference, state = vit
    meta = get_model_weights("vit_b_16").DEFAULT.meta
    totals = compiled.totals()
    assert totals["params"] == meta["num_params"] == 86_567_656
    assert round(totals["macs"] / 1e9, 3) == meta["_ops"]
    assert {k: w.shape for k, w in parameters(compiled.graph).items()} == {k: tuple(v.shape) for k, v in state.items()}
    model = model_class(compiled.graph)().eval()
    assert list(model.state_dict()) == list(reference.state_dict())  # torchvision's names, in its order
    model.load_state_dict(state, strict=True)
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        got, want = model(x), reference(x)
    assert (got - want).abs().max() <= 1e-5 * want.abs().max()
    for name, module in reference.named_modules():  # every module holding tensors: torchvision's class
        if any(True for _ in module.parameters(recurse=False)):
            mine = model.get_submodule(name) if name else model
            assert type(mine).__name__ == type(module).__name__ and mine.extra_repr() == module.extra_repr(), name


def test_vit_b_16_agrees_with_onnx_runtime():
    """Every op of the spec through ONNX Runtime: one encoder block of the twelve (the others add
    only time), random weights (the head starts at zeros: an output of zeros proves nothing)."""
    compiled = nasdsl.compile_spec(VIT, {"num_layers": 1})
    state = _randomised(model_class(compiled.graph)(), seed=5)
    result = verify(compiled.graph, state_dict=state, batch=2, opset=17)
    assert result.ok, result


def test_r3d_18_is_torchvisions(r3d):
    reference, state = r3d
    meta = get_model_weights("r3d_18").DEFAULT.meta
    full = nasdsl.compile_spec(R3D)
    assert ir.node(full.graph, "x").type == ir.TensorType((3, 16, 112, 112), "CTHW")
    assert full.totals()["params"] == meta["num_params"] == 33_371_472
    assert round(full.totals()["macs"] / 1e9, 3) == meta["_ops"]
    # the smallest clip every layer takes: the same weights, one real forward
    small = nasdsl.compile_spec(R3D, {"frames": 4, "size": 32})
    model = model_class(small.graph)().eval()
    assert list(model.state_dict()) == list(reference.state_dict())
    model.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        got, want = model(x), reference(x)
    assert (got - want).abs().max() <= 1e-5 * want.abs().max()
    assert type(model.layer1[0].conv1[0]).__name__ == "Conv3DSimple"
    assert model.layer2[0].conv1[0].extra_repr() == reference.layer2[0].conv1[0].extra_repr()
    assert verify(small.graph, state_dict=state, batch=2, opset=17).ok


def test_generated_transformer_reads_like_a_person_wrote_it():
    source = generate_source(nasdsl.compile_spec(VIT))
    assert "class EncoderBlock(nn.Module):" in source and "class MLPBlock(nn.Sequential):" in source
    assert "self.self_attention = nn.MultiheadAttention(\n" in source or (
        "self.self_attention = nn.MultiheadAttention(in_features, num_heads" in source
    )
    assert "x = self.self_attention(x, x, x, need_weights=False)[0]  # (N, L, in_features)" in source
    assert "self.class_token = nn.Parameter(torch.zeros(1, 1, 768))" in source
    assert "x = self.first(x)  # (N, 768)" in source


# -- every op of any rank against PyTorch and ONNX Runtime -------------------------------------------

ZOO_ANY_RANK = """\
nasdsl: 1
name: AnyRank
input: {name: clip, shape: [3, 4, 12, 12], mean: [0.5, 0.4, 0.3], std: [0.2, 0.25, 0.3]}
templates:
  Attend:
    params: [heads, hidden]
    body:
      norm: {op: layer_norm, dim: last, eps: 1.0e-6}
      attn: {op: attention, heads: heads}
      res: {add: [{ref: attn}, {ref: in}]}
      mlp: [{op: linear, out: hidden, dim: last}, gelu, {op: linear, out: 8, dim: last}]
      out: {add: [{ref: mlp}, {ref: res}]}
model:
  conv3: {op: conv3d, out: 8, kernel: [3, 3, 3], stride: [1, 2, 2], padding: 1, bias: false}
  bn3: batch_norm
  act3: relu
  pool3: {op: max_pool3d, kernel: [1, 2, 2], stride: [1, 2, 2], ceil_mode: true}
  avg3: {op: avg_pool3d, kernel: [2, 1, 1], stride: [1, 1, 1], padding: [1, 0, 0], count_include_pad: false}
  ad3: {op: adaptive_avg_pool3d, size: [2, 3, 3]}
  frames: {op: flatten, start: 1, end: 3}      # (8, 18): the positions as a sequence
  conv1: {op: conv1d, out: 8, kernel: 3, padding: 1}
  pool1: {op: avg_pool1d, kernel: 2, ceil_mode: true}
  tokens: {op: transpose, axis0: 0, axis1: 1}  # (9, 8)
  cls: {op: parameter, shape: [1, 8]}
  joined: {concat: [{ref: cls}, {ref: tokens}], axis: 0}  # (10, 8)
  block: {use: Attend, args: [2, 16]}
  rolled: {op: roll, shifts: [3], axes: [0]}
  scores: {matmul: [{ref: rolled}, {ref: block}], transpose_b: true}  # (10, 10)
  probs: {op: softmax, dim: last}
  mixed: {matmul: [{ref: probs}, {ref: block}]}   # (10, 8)
  every_other: {op: slice, axis: 0, start: 1, stop: 9, step: 2}  # (4, 8)
  grid: {op: reshape, shape: [8, 2, 2], axes: CHW}
  up: {op: interpolate, scale: 3, mode: bilinear}
  near: {op: interpolate, size: [5, 4]}
  back: {interpolate_like: [{ref: near}, {ref: up}], mode: bilinear, align_corners: true}
  zero: {op: constant, value: 0.5}
  first: {op: select, axis: 0, index: 1}
  gap: {op: flatten}
  fc: {op: linear, out: 5}
"""


@pytest.fixture(scope="module")
def any_rank(tmp_path_factory) -> nasdsl.Compiled:
    path = tmp_path_factory.mktemp("any_rank") / "any_rank.yaml"
    path.write_text(ZOO_ANY_RANK)
    return nasdsl.compile_spec(path)


@pytest.mark.parametrize("opset", [17, 20])
def test_every_op_of_any_rank_agrees_with_onnx_runtime(any_rank, opset):
    g = any_rank.graph
    assert {d.op for _, d in ir.nodes(g)} >= {
        "conv3d", "max_pool3d", "avg_pool3d", "adaptive_avg_pool3d", "conv1d", "avg_pool1d", "transpose",
        "parameter", "attention", "roll", "matmul", "softmax", "slice", "reshape", "interpolate",
        "interpolate_like", "constant", "select",
    }  # fmt: skip
    state = _randomised(model_class(g)(), seed=4)
    result = verify(g, state_dict=state, batch=2, opset=opset)
    assert result.ok, result


def test_symbolic_sizes_reach_the_constructor_arguments(tmp_path):
    """The generated class's layers take their sizes from the IR's shapes: a layer over the last
    axis inside a template is as wide as that axis (it used to be built from the channel count)."""
    path = tmp_path / "last.yaml"
    path.write_text(
        textwrap.dedent("""\
        nasdsl: 1
        name: LastDim
        input: {shape: [8, 4, 6]}
        templates:
          Head:
            params: [out]
            body:
              norm: {op: layer_norm, dim: last}
              fc: {op: linear, out: out, dim: last}
        model:
          head: {use: Head, args: [5]}
          chw: {op: permute, dims: [2, 0, 1]}
          cat: {concat: [{ref: chw}, {ref: chw}]}
          fc: {op: linear, out: 3, dim: last}
        """)
    )
    compiled = nasdsl.compile_spec(path)
    model = model_class(compiled.graph)()
    assert sum(p.numel() for p in model.parameters()) == compiled.totals()["params"] == 12 + 35 + 15
    # the permuted map is (W, C, H): its channels are its second axis, which concat joins
    assert model(torch.randn(2, 8, 4, 6)).shape == (2, 5, 16, 3)
    assert ir.node(compiled.graph, "head.fc").in_sym == ((ir.Sym.name("in_channels"), 4, 6),)
    assert ir.info(compiled.graph).templates["Head"].input_param == "in_channels"


def test_every_spec_builds_the_parameters_its_summary_counts():
    """For every spec, the generated module (on the meta device: sizes only) holds exactly the
    parameters the summary counts, tensor by tensor."""
    for path in sorted(SPECS.glob("*.yaml")):
        compiled = nasdsl.compile_spec(path)
        with torch.device("meta"), without_initialisation():  # sizes only: nothing to fill
            model = model_class(compiled.graph)()
        counted = compiled.summary(with_aux=True)["totals"]["params"]
        assert sum(p.numel() for p in model.parameters()) == counted, path.name
        expected = {k: w.shape for k, w in parameters(compiled.graph).items()}
        assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == expected, path.name


# -- errors -------------------------------------------------------------------------------------------

RANK_ERRORS = {
    "conv3d on an image": (
        "model:\n  c: {op: conv3d, out: 4, kernel: 3}\n",
        "error: model.c: expected a feature map (C, T, H, W) as the input of conv3d, got a (C, H, W) map 3x8x8",
    ),
    "attention on a map": (
        "model:\n  a: {op: attention, heads: 1}\n",
        "error: model.a: expected tokens (L, C) as the input of attention, got a (C, H, W) map 3x8x8",
    ),
    "conv2d on channels-last": (
        "model:\n  p: {op: permute, dims: [1, 2, 0]}\n  c: {op: conv2d, out: 4, kernel: 3}\n",
        "error: model.c: expected a feature map (C, H, W) as the input of conv2d, got a tensor (H, W, C) 8x8x3",
    ),
    "reshape that loses values": (
        "model:\n  r: {op: reshape, shape: [5, 5]}\n",
        "error: model.r: cannot reshape a (C, H, W) map 3x8x8 (192 values) to 5x5 (25 values)",
    ),
    "select past the end": (
        "model:\n  s: {op: select, axis: 1, index: 8}\n",
        "error: model.s: expected an index from -8 to 7 along axis 1 of a (C, H, W) map 3x8x8",
    ),
    "a tensor too large at any rank": (
        "model:\n  up: {op: interpolate, scale: 4096}\n  up2: {op: interpolate, scale: 3}\n",
        "error: model.up2: expected a tensor of at most 17,179,869,184 values per sample, got 28,991,029,248 "
        "(3x98304x98304)",
    ),
    "concat along an axis where sizes differ": (
        "model:\n  a: {op: conv2d, out: 4, kernel: 1}\n  b: {op: max_pool, kernel: 2}\n"
        "  c: {concat: [{ref: a}, {ref: b}], axis: 0}\n",
        "error: model.c: expected concat inputs that differ only in channels, got 4x8x8, 4x4x4 (from a, b)",
    ),
}


@pytest.mark.parametrize("case", sorted(RANK_ERRORS), ids=lambda c: c.replace(" ", "-"))
def test_an_op_given_a_rank_it_does_not_take_is_a_located_error(case, tmp_path, capsys):
    body, message = RANK_ERRORS[case]
    path = tmp_path / "net.yaml"
    path.write_text(f"nasdsl: 1\nname: Net\ninput: {{shape: [3, 8, 8]}}\n{body}")
    out_file = tmp_path / "net.py"
    assert main(["compile", str(path), "-o", str(out_file)]) == 2
    err = capsys.readouterr().err
    assert message in err and str(path) in err and not out_file.exists(), err


def test_inputs_of_any_rank_and_their_axes(tmp_path):
    spec = tmp_path / "signal.yaml"
    spec.write_text("nasdsl: 1\nname: S\ninput: {shape: [2, 50], axes: CL, mean: [0.5, 0.1]}\nmodel:\n  c: "
                    "{op: conv1d, out: 4, kernel: 5}\n  g: global_avg_pool\n  f: flatten\n")  # fmt: skip
    g = nasdsl.compile_spec(spec).graph
    assert ir.node(g, "x").type == ir.TensorType((2, 50), "CL") and ir.node(g, "f").shape == (4,)
    tokens = nasdsl.compile_spec(VIT, {"image_size": 32, "num_layers": 1}).graph
    assert ir.node(tokens, "sequence").type == ir.TensorType((5, 768), "LC")
