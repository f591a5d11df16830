"""The generated PyTorch model used as ML engineers use torchvision's: built on the meta device and
started with ``to_empty`` and ``reset_parameters`` (as FSDP and large-model loaders do), traced
with ``torch.fx`` (as torchvision's ``create_feature_extractor`` does), and read as a file that
passes ``ruff`` (the README's claim, for every spec the repository holds, not only ``specs/``).

The references are PyTorch's documented starting state of its layers (a BatchNorm's running mean 0,
variance 1 and counter 0; ``nn.Linear``'s weights and bias uniform within 1/sqrt(fan_in)), the spec's
own input statistics, and the eager model itself for the traced one.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys

import pytest
import torch

import nasdsl
from nasdsl.backends.pytorch import generate, generate_source, load_source, model_class
from nasdsl.backends.pytorch_ops import HELPER_CLASSES

from paths import ROOT, SPECS

#: a convolution with a rule, BatchNorm, and a linear layer without one (PyTorch's default), after
#: the input's mean and std
TINY = """\
nasdsl: 1
name: Tiny
input: {shape: [3, 8, 8], mean: [0.5, 0.4, 0.3], std: [0.2, 0.25, 0.5]}
init:
  conv2d: {weight: kaiming_normal}
model:
  conv: {op: conv2d, out: 4, kernel: 3, padding: 1, bias: false}
  bn: batch_norm
  relu: relu
  pool: global_avg_pool
  flat: flatten
  fc: {op: linear, out: 5}
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny") / "tiny.yaml"
    path.write_text(TINY)
    return model_class(nasdsl.compile_spec(path))


def _spoil(model: torch.nn.Module) -> None:
    """What ``to_empty`` may leave: memory of any value (here NaN, and a huge counter)."""
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            t.fill_(math.nan if t.is_floating_point() else 2**40)


def test_meta_then_to_empty_then_reset_parameters_is_a_started_model(tiny):
    with torch.device("meta"):
        model = tiny()
    model.to_empty(device="cpu")
    _spoil(model)
    model.reset_parameters()

    assert torch.equal(model.bn.running_mean, torch.zeros(4))
    assert torch.equal(model.bn.running_var, torch.ones(4))
    assert model.bn.num_batches_tracked.item() == 0
    assert torch.equal(model.bn.weight.detach(), torch.ones(4))
    assert torch.equal(model.bn.bias.detach(), torch.zeros(4))
    # the spec's statistics, not in the state_dict
    assert model.input_mean.flatten().tolist() == pytest.approx([0.5, 0.4, 0.3])
    assert model.input_std.flatten().tolist() == pytest.approx([0.2, 0.25, 0.5])
    # nn.Linear as PyTorch starts it: uniform within 1/sqrt(fan_in) = 0.5, drawn (not one value)
    for t in (model.fc.weight, model.fc.bias):
        assert t.abs().max().item() <= 0.5 and t.std().item() > 0
    assert torch.isfinite(model.conv.weight).all() and model.conv.weight.std().item() > 0

    # the same function as a model built on the CPU holding the same weights
    built = tiny().eval()
    built.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), built(x))


def test_reset_parameters_forgets_training(tiny):
    """reset_parameters on a model that has trained: BatchNorm's statistics start again too."""
    model = tiny().train()
    model(torch.randn(4, 3, 8, 8) * 5 + 3)
    assert model.bn.num_batches_tracked.item() == 1 and model.bn.running_mean.abs().sum() > 0
    model.reset_parameters()
    assert torch.equal(model.bn.running_mean, torch.zeros(4))
    assert torch.equal(model.bn.running_var, torch.ones(4))
    assert model.bn.num_batches_tracked.item() == 0


@pytest.fixture(scope="module")
def lraspp():
    """LR-ASPP reads a map inside its backbone (a run of layers, then another): shrunk."""
    torch.manual_seed(0)
    net = nasdsl.compile_spec(
        SPECS / "lraspp_mobilenet_v3_large.yaml", {"input.shape": [3, 32, 32], "inter_channels": 8}
    )
    return model_class(net)().eval()


def test_a_model_that_reads_inside_a_sequence_traces_with_fx(lraspp):
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        eager = lraspp(x)
        traced_graph = torch.fx.symbolic_trace(lraspp)
        traced = traced_graph(x)
    torch.testing.assert_close(traced["out"], eager["out"])

    # each layer of the backbone a call of the module the model holds (what torchvision's
    # create_feature_extractor names nodes by)
    called = [n.target for n in traced_graph.graph.nodes if n.op == "call_module"]
    assert [t for t in called if t.startswith("backbone.")][:2] == ["backbone.0.0", "backbone.0.1"]


#: shrunk Swin-V2-T: one head and one block per stage after the first, 8-dimensional embedding
SWIN_V2 = {"image_size": 64, "embed_dim": 8, "depth2": 1, "depth3": 1, "depth4": 1} | {
    f"heads{i}": 1 for i in (1, 2, 3, 4)
}


def _started_on_meta(cls) -> torch.nn.Module:
    with torch.device("meta"):
        model = cls()
    model.to_empty(device="cpu")
    _spoil(model)
    model.reset_parameters()
    return model


def test_window_attention_tables_start_again_as_torchvisions():
    """Swin V2's attention makes its offsets' coordinates, their index and the logit scale itself:
    after to_empty and reset_parameters they are torchvision's (same names, same values)."""
    from torchvision.models import swin_transformer as swin

    cls = model_class(nasdsl.compile_spec(SPECS / "swin_v2_t.yaml", SWIN_V2))
    model = _started_on_meta(cls)
    reference = swin.SwinTransformer(
        patch_size=[4, 4],
        embed_dim=8,
        depths=[2, 1, 1, 1],
        num_heads=[1, 1, 1, 1],
        window_size=[8, 8],
        block=swin.SwinTransformerBlockV2,
        downsample_layer=swin.PatchMergingV2,
    ).state_dict()
    ours = model.state_dict()
    made = [k for k in ours if k.endswith(("relative_coords_table", "relative_position_index", "logit_scale"))]
    assert len(made) == 3 * 5  # five blocks
    for k in made:
        torch.testing.assert_close(ours[k], reference[k], rtol=0, atol=0, msg=k)
    assert all(torch.isfinite(t).all() for t in ours.values())


def test_partition_attention_index_starts_again_as_torchvisions():
    """MaxViT's attention: its bias table drawn again, its index torchvision's."""
    from torchvision.models.maxvit import RelativePositionalMultiHeadAttention

    shrunk = {"image_size": 64, "partition_size": 2, "stem_channels": 8, "head_dim": 8}
    shrunk |= {"c1": 8, "c2": 16, "c3": 16, "c4": 16, "n1": 1, "n2": 1, "n3": 1, "n4": 1}
    model = _started_on_meta(model_class(nasdsl.compile_spec(SPECS / "maxvit_t.yaml", shrunk)))
    index = RelativePositionalMultiHeadAttention(8, 8, 4).relative_position_index
    tables = {k: v for k, v in model.state_dict().items() if k.endswith("relative_position_index")}
    assert len(tables) == 8  # block and grid attention of four stages
    for k, v in tables.items():
        assert torch.equal(v, index), k
    for k, v in model.state_dict().items():
        if k.endswith("relative_position_bias_table"):
            assert torch.isfinite(v).all() and 0 < v.std().item() < 0.05, k


#: the specs of the repository beyond specs/*.yaml (whose files tests/test_pytorch.py checks one by one)
OTHER_SPECS = sorted(
    [
        *(ROOT / "docs" / "examples").glob("*.yaml"),
        *(SPECS / "spaces").glob("*.yaml"),
        *(ROOT / "tests" / "specs").glob("*.yaml"),
        *(ROOT / "tests" / "specs" / "new").glob("*.yaml"),
    ]
)


def _helper_classes() -> str:
    """Every helper class the backend can write, under its own name, in one module."""
    texts = ["import torch\nimport torch.nn.functional as F\nfrom torch import nn"]
    for name, lines in HELPER_CLASSES.items():
        text = "\n".join(lines).replace("{name}", name)
        texts.append(re.sub(r"\{([A-Z]\w*)\}", r"\1", text).strip("\n"))  # {Pool}: another helper's name
    return "\n\n\n".join(texts) + "\n"


def test_every_generated_file_and_helper_class_passes_ruff(tmp_path):
    for spec in OTHER_SPECS:
        name = f"{spec.parent.name}_{spec.stem}.py"
        (tmp_path / name).write_text(generate_source(nasdsl.compile_spec(spec)))
    (tmp_path / "helpers.py").write_text(_helper_classes())
    ruff = [sys.executable, "-m", "ruff"]
    strict = ["--select", "E,F,W,I,B,UP,RUF"]  # as tests/test_pytorch.py checks the specs' files
    for args in (["check", "--isolated", *strict, str(tmp_path)], ["format", "--isolated", "--check", str(tmp_path)]):
        run = subprocess.run(ruff + args, capture_output=True, text=True)
        assert run.returncode == 0, run.stdout + run.stderr


def test_a_model_built_in_memory_pickles_within_its_process(tiny):
    """The README's word on build_model's class: deepcopy, pickle and torch.save(model) round trip."""
    import copy
    import io
    import pickle

    model = tiny().eval()
    x = torch.randn(1, 3, 8, 8)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    copies = [copy.deepcopy(model), pickle.loads(pickle.dumps(model)), torch.load(buffer, weights_only=False)]
    assert type(model).__module__.startswith("nasdsl_generated_")
    with torch.no_grad():
        for other in copies:
            torch.testing.assert_close(other(x), model(x), rtol=0, atol=0)


def test_reset_parameters_starts_a_layer_after_the_layers_inside_it():
    """nn.MultiheadAttention starts its out_proj (an nn.Linear) and then zeroes its bias, as
    PyTorch's constructor does: reset_parameters keeps that order (ViT's attention has no rule),
    after to_empty too."""
    shrunk = {"image_size": 32, "patch_size": 16, "hidden_dim": 8, "mlp_dim": 8, "num_heads": 1, "num_layers": 1}
    model = _started_on_meta(model_class(nasdsl.compile_spec(SPECS / "vit_b_16.yaml", shrunk)))
    attention = [m for m in model.modules() if isinstance(m, torch.nn.MultiheadAttention)]
    assert attention
    for m in attention:
        assert torch.equal(m.out_proj.bias.detach(), torch.zeros(8))
        assert torch.equal(m.in_proj_bias.detach(), torch.zeros(24))


#: TINY with a training-only head (the NamedTuple in training alone) and, in TINY_EMBEDDING, an output
#: read at inference too (the NamedTuple always)
TINY_AUX = (
    TINY + "outputs:\n  logits: {from: fc}\n  aux: {from: flat, head: [{op: linear, out: 5}], training_only: true}\n"
)
TINY_EMBEDDING = TINY_AUX + "  embedding: {from: flat, loss_weight: 0}\n"


@pytest.mark.parametrize("text", [TINY_AUX, TINY_EMBEDDING], ids=["training-only", "always"])
def test_the_outputs_class_says_when_the_model_returns_it(text, tmp_path):
    path = tmp_path / "outputs.yaml"
    path.write_text(text)
    generated = generate(nasdsl.compile_spec(path))
    module = load_source(generated.source)
    model = getattr(module, generated.model_class)().eval()
    with torch.no_grad():
        returned = model(torch.randn(2, 3, 8, 8))
    outputs_class = getattr(module, f"{generated.model_class}Outputs")
    at_inference = isinstance(returned, outputs_class)
    assert at_inference == (text is TINY_EMBEDDING)
    assert ("in training" in outputs_class.__doc__) == (not at_inference), outputs_class.__doc__


#: `_` as the model's, a template's and a parameter's name: renamed, never to a name that starts with
#: two underscores, which Python mangles inside a class body (`__1Outputs` read as `_1__1Outputs`)
UNDERSCORES = """\
nasdsl: 1
name: _
input: {shape: [3, 8, 8]}
templates:
  _:
    params: [_]
    body: {conv: {op: conv2d, out: _, kernel: 1}, act: relu}
model:
  block: {use: _, args: [4]}
  pool: global_avg_pool
  flat: flatten
  fc: {op: linear, out: 3}
outputs:
  logits: {from: fc}
  aux: {from: flat, head: [{op: linear, out: 3}], training_only: true}
"""


def test_underscore_names_make_a_model_that_runs(tmp_path):
    path = tmp_path / "underscores.yaml"
    path.write_text(UNDERSCORES)
    generated = generate(nasdsl.compile_spec(path))
    assert all(name.endswith("__") for name in re.findall(r"\b__\w+", generated.source))  # dunders alone
    model = getattr(load_source(generated.source), generated.model_class)().train()
    outputs = model(torch.randn(2, 3, 8, 8))
    assert outputs.logits.shape == outputs.aux.shape == (2, 3)
    model.loss(outputs, torch.zeros(2, dtype=torch.long)).backward()


def test_multiscale_attention_starts_again_after_to_empty():
    """MViT's pooling attention and position encoding make their tables themselves: after to_empty
    and reset_parameters every tensor is drawn (no NaN left) and the model computes what one built
    on the CPU with the same state_dict does."""
    shrunk = {"frames": 4, "size": 32, "embed": 8, "depth3": 2, "num_classes": 4}
    cls = model_class(nasdsl.compile_spec(SPECS / "mvit_v2_s.yaml", shrunk))
    model = _started_on_meta(cls).eval()
    state = model.state_dict()
    assert all(torch.isfinite(t.float()).all() for t in state.values())
    assert any(k.endswith("rel_pos_h") for k in state) and any(k.endswith("class_token") for k in state)
    built = cls().eval()
    built.load_state_dict(state, strict=True)
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), built(x))


def test_a_swin_gives_its_features_to_torchvisions_extractor_with_its_leaf_modules():
    """The README's recipe: the classes that compute with their input's sizes named as leaf modules,
    torchvision's create_feature_extractor (torch.fx, in eval and training mode) returns what the
    stage computes in the eager model."""
    from torchvision.models.feature_extraction import create_feature_extractor

    shrunk = {"image_size": 64, "embed_dim": 8, "depth2": 1, "depth3": 1, "depth4": 1}
    generated = generate(nasdsl.compile_spec(SPECS / "swin_t.yaml", shrunk | {f"heads{i}": 1 for i in (1, 2, 3, 4)}))
    m = load_source(generated.source)
    model = getattr(m, generated.model_class)().eval()
    leaves = [m.ShiftedWindowAttention, m.PatchMerging, m.StochasticDepth]
    extractor = create_feature_extractor(model, {"features.3": "map"}, tracer_kwargs={"leaf_modules": leaves})
    seen = {}
    hook = model.features[3].register_forward_hook(lambda module, args, out: seen.setdefault("map", out))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        model(x)
        torch.testing.assert_close(extractor(x)["map"], seen["map"])
    hook.remove()
