"""torchvision's multiscale vision transformers (MViT) as specs: pooling attention with relative
positions (``pooling_attention``), the class token and position embedding (``positional_encoding``)
and a template's ``build_order``, against torchvision's models (random weights, never downloaded),
their documented figures (``weights.meta``) and ONNX Runtime.
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from torchvision.models import get_model_weights
from torchvision.models.video import mvit

import nasdsl
from nasdsl import ir
from nasdsl.backends.pytorch import generate_source, model_class
from nasdsl.backends.verify import verify
from nasdsl.cli import main

from paths import SPECS
from reference_models import assert_module_for_module

V2 = SPECS / "mvit_v2_s.yaml"
V1 = SPECS / "mvit_v1_b.yaml"


@pytest.fixture(autouse=True)
def _one_thread():
    """The models here run some 400 small ops on small clips: a pool of threads costs more than it
    gives (seconds instead of tenths on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _randomised(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=g) * 0.05 for k, v in model.state_dict().items()}


def _torchvision(builder: str, frames: int, size: int) -> torch.nn.Module:
    """torchvision's model at another clip size than its builder's 16 frames of 224x224 (which it
    does not let a caller change), through the size its private ``_mvit`` takes."""
    build = mvit._mvit

    def sized(*args, **kwargs):
        return build(*args, **{**kwargs, "spatial_size": (size, size), "temporal_size": frames})

    mvit._mvit = sized
    try:
        return torchvision.models.get_model(builder)
    finally:
        mvit._mvit = build


@pytest.mark.parametrize(("builder", "spec"), [("mvit_v2_s", V2), ("mvit_v1_b", V1)])
def test_mvit_is_torchvisions_module_for_module(builder, spec):
    """On the meta device: torchvision's state_dict names in its order and their shapes, every
    module holding tensors of torchvision's class with its extra_repr, every dropout rate, and the
    parameters and GFLOPS documented with the default weights, at their clip size."""
    weights = get_model_weights(builder).DEFAULT
    (size,) = set(weights.transforms().crop_size)
    frames = weights.meta["min_temporal_size"]
    net = nasdsl.compile_spec(spec)
    assert ir.node(net.graph, "x").type == ir.TensorType((3, frames, size, size), "CTHW")
    with torch.device("meta"):
        reference = torchvision.models.get_model(builder)
        model = model_class(net.graph)()
    assert_module_for_module(model, reference)
    totals = net.totals()
    assert totals["params"] == sum(p.numel() for p in reference.parameters()) == weights.meta["num_params"]
    assert round(totals["macs"] / 1e9, 3) == weights.meta["_ops"]


@pytest.mark.parametrize(("builder", "spec"), [("mvit_v2_s", V2), ("mvit_v1_b", V1)])
def test_mvit_outputs_are_torchvisions(builder, spec):
    """The smallest clip the model takes (4 frames of 32x32: a 2x8x8 grid that the stages halve to
    2x1x1), torchvision's randomised state_dict loaded strictly, eval outputs within 1e-5. Both
    are built on the meta device and take the random tensors as they are (nothing is drawn twice)."""
    net = nasdsl.compile_spec(spec, {"frames": 4, "size": 32})
    with torch.device("meta"):
        reference, model = _torchvision(builder, frames=4, size=32), model_class(net.graph)()
    state = _randomised(reference, seed=0)
    reference.load_state_dict(state, assign=True)
    model.load_state_dict(state, strict=True, assign=True)
    reference.eval()
    model.eval()
    x = torch.randn(2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got, want = model(x), reference(x)
    assert (got - want).abs().max() <= 1e-5 * want.abs().max()


@pytest.mark.parametrize(
    ("spec", "opset", "overrides"),
    [(V2, 17, {"depth3": 2}), (V2, 16, {"depth3": 2}), (V1, 17, {"depth3": 3})],
    ids=["mvit_v2_s-17", "mvit_v2_s-16", "mvit_v1_b-17"],
)
def test_pooling_attention_agrees_with_onnx_runtime(spec, opset, overrides):
    """A narrow MViT (16 features first) on 6 frames of 44x44: an 11x11 grid whose halving
    (to 6x6) leaves MViTv2's relative position tables a size to resize, as torchvision does;
    MViTv1's absolute position embedding; below opset 17 LayerNorm is written in primitive ops."""
    net = nasdsl.compile_spec(spec, {"frames": 6, "size": 44, "embed": 16, **overrides})
    state = _randomised(model_class(net.graph)(), seed=3)
    result = verify(net.graph, state_dict=state, batch=2, opset=opset)
    assert result.ok, result


def test_the_block_reads_like_torchvisions():
    source = generate_source(nasdsl.compile_spec(V2))
    assert "class MultiscaleAttention(nn.Module):" in source and "class PositionalEncoding(nn.Module):" in source
    # build_order: norm2 is built before attn, as torchvision's MultiscaleBlock builds it
    assert source.index("self.norm2 = nn.LayerNorm(dim, eps=1e-06)") < source.index("self.attn = MultiscaleAttention(")
    assert "x = self.attn(x)  # (N, L', dim)" in source


ERRORS = {
    "tokens that are not the grid": (
        "  a: {op: pooling_attention, heads: 2, out: 8, grid: [2, 4, 4]}\n",
        "error: model.a: expected 33 tokens (a 2x4x4 grid and a class token) as the input of pooling_attention, "
        "got tokens (L, C) 17x8",
    ),
    "heads that do not divide out": (
        "  a: {op: pooling_attention, heads: 3, out: 8, grid: [1, 4, 4]}\n",
        "error: model.a: expected heads that divide out (8), got 3",
    ),
    "a grid of the wrong rank": (
        "  a: {op: pooling_attention, heads: 2, out: 8, grid: [4, 4]}\n",
        "error: model.a.grid: expected an integer or [t, h, w], got a list of 2",
    ),
    "a stride that leaves nothing": (
        "  a: {op: pooling_attention, heads: 2, out: 8, grid: [1, 4, 4], rel_pos: true, stride_q: [1, 8, 8],"
        " stride_kv: [1, 8, 8]}\n",
        "error: model.a: expected a stride_q or stride_kv no larger than the grid's height and width for rel_pos, "
        "got a 1x4x4 grid and strides 1x8x8 and 1x8x8",
    ),
    "an encoding of tokens": (
        "  b: positional_encoding\n",
        "error: model.b: expected a feature map (C, T, H, W) as the input of positional_encoding, got tokens (L, C) "
        "17x8",
    ),
}


@pytest.mark.parametrize("case", sorted(ERRORS), ids=lambda c: c.replace(" ", "-"))
def test_bad_pooling_attention_is_a_located_error(case, tmp_path, capsys):
    body, message = ERRORS[case]
    path = tmp_path / "net.yaml"
    path.write_text("nasdsl: 1\nname: Net\ninput: {shape: [8, 1, 4, 4]}\nmodel:\n  t: positional_encoding\n" + body)
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and f"{path}:" in err, err


@pytest.mark.parametrize(
    ("order", "message"),
    [
        ("[b, c]", "error: templates.T.build_order[1]: expected an entry of the body (a, b), got 'c'"),
        ("[b, b]", "error: templates.T.build_order[1]: entry 'b' is listed twice"),
        ("3", "error: templates.T.build_order: expected a list of the body's entries, got an integer"),
    ],
)
def test_bad_build_order_is_a_located_error(order, message, tmp_path, capsys):
    path = tmp_path / "net.yaml"
    path.write_text(
        "nasdsl: 1\nname: Net\ninput: {shape: [3, 8, 8]}\ntemplates:\n  T:\n"
        f"    build_order: {order}\n    body:\n      a: relu\n      b: {{op: conv2d, out: 4, kernel: 1}}\n"
        "model:\n  t: T\n"
    )
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and f"{path}:" in err, err


def test_pooling_attention_without_a_class_token_agrees_with_onnx_runtime(tmp_path):
    """Every token on the grid (``class_token: false``): tokens made from a map by ops of the
    language, pooled, with relative positions and the pooled q added, against ONNX Runtime."""
    path = tmp_path / "grid.yaml"
    path.write_text(
        "nasdsl: 1\nname: Grid\ninput: {shape: [8, 2, 4, 4]}\nmodel:\n"
        "  flat: {op: flatten, start: 1}\n  tokens: {op: permute, dims: [1, 0]}\n"
        "  attn: {op: pooling_attention, heads: 2, out: 12, grid: [2, 4, 4], kernel_q: 3, stride_q: [1, 2, 2],"
        " kernel_kv: [1, 3, 3], stride_kv: [2, 2, 2], rel_pos: true, residual_pool: true, class_token: false}\n"
    )
    net = nasdsl.compile_spec(path)
    assert ir.node(net.graph, "attn").shape == (2 * 2 * 2, 12)
    state = _randomised(model_class(net.graph)(), seed=4)
    result = verify(net.graph, state_dict=state, batch=2, opset=17)
    assert result.ok, result


@pytest.mark.parametrize(("spec", "overrides"), [(V2, {"depth3": 2}), (V1, {"depth3": 3})], ids=["v2", "v1"])
def test_onnx_shapes_agree_with_onnx_shape_inference(spec, overrides):
    """At a fixed batch, every tensor the ONNX lowerings make (the heads folded into the batch
    for the pooling convolutions included) has the shape ONNX's own inference gives it."""
    import onnx

    from nasdsl.backends.onnx import export_onnx

    def shapes(model: onnx.ModelProto) -> dict[str, list]:
        values = [*model.graph.value_info, *model.graph.output]
        return {v.name: [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim] for v in values}

    ours = export_onnx(nasdsl.compile_spec(spec, {"frames": 6, "size": 44, "embed": 16, **overrides}), batch=3)
    bare = onnx.ModelProto()
    bare.CopyFrom(ours)
    del bare.graph.value_info[:]
    for out in bare.graph.output:
        out.type.tensor_type.ClearField("shape")
    assert shapes(ours) == shapes(onnx.shape_inference.infer_shapes(bare, strict_mode=True))


def test_a_dynamic_batch_agrees_with_onnx_runtime():
    """Exported with a symbolic batch (the class token expanded to the batch the input has), run
    at two batches against the generated model."""
    import onnxruntime

    from nasdsl.backends.onnx import export_onnx

    net = nasdsl.compile_spec(V1, {"frames": 6, "size": 44, "embed": 16, "depth3": 3})
    model = model_class(net.graph)().eval()
    model.load_state_dict(_randomised(model, seed=6))
    onnx_model = export_onnx(net, state_dict=model.state_dict(), batch="dynamic")
    session = onnxruntime.InferenceSession(onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        x = torch.randn(batch, 3, 6, 44, 44, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            want = model(x)
        (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
        assert (torch.from_numpy(got) - want).abs().max() <= 1e-4 * want.abs().max()
