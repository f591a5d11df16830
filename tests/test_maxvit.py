"""MaxViT-T (specs/maxvit_t.yaml) against torchvision.models.maxvit_t, and its attention within block
and grid partitions (the op partition_attention, nasdsl/ops/partition.py): module for module on the
meta device, the documented figures, one real forward at the smallest input the partitions allow
with torchvision's randomised tensors loaded strictly, ONNX Runtime on a cut-down variant, and the
op's errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from torchvision.models.maxvit import _get_relative_position_index

import nasdsl
from nasdsl.backends.pytorch import generate_source, load_source
from nasdsl.backends.verify import verify
from nasdsl.cli import main
from nasdsl.ops.window import relative_position_index
from nasdsl.weights import initial_weights

from paths import SPECS
from reference_models import assert_module_for_module, randomise

SPEC = SPECS / "maxvit_t.yaml"
#: a MaxViT small enough for ONNX Runtime in a test: 2x2 partitions at 64x64, narrow, 5 layers
CUT_DOWN = {
    **{"image_size": 64, "partition_size": 2, "head_dim": 8, "stem_channels": 8},
    **{"c1": 8, "c2": 16, "c3": 16, "c4": 32, "n1": 1, "n2": 2, "n3": 1, "n4": 1},
}


def _ours(net: nasdsl.Compiled) -> torch.nn.Module:
    with torch.device("meta"):
        return getattr(load_source(generate_source(net)), net.spec.name)()


def test_maxvit_t_is_torchvisions_module_for_module():
    """State_dict names in torchvision's order with its shapes (the int64 buffer
    relative_position_index included); every module holding tensors of torchvision's class with
    its extra_repr; the dropout and stochastic depth rates; the documented figures at 224."""
    net = nasdsl.compile_spec(SPEC)
    model = _ours(net)
    with torch.device("meta"):
        reference = torchvision.models.maxvit_t()
    _, rates = assert_module_for_module(model, reference)
    # each layer: per partition layer, its two dropouts and its stochastic depth; the MBConvs but the first
    assert rates == 6 * 11 + 10
    meta = torchvision.models.MaxVit_T_Weights.DEFAULT.meta
    totals = net.summary()["totals"]
    assert totals["params"] == sum(p.numel() for p in reference.parameters()) == meta["num_params"] == 30_919_624
    assert round(totals["macs"] / 1e9, 3) == meta["_ops"] == 5.558


@pytest.mark.parametrize("size", [1, 2, 3, 7])
def test_the_index_buffer_is_torchvisions(size):
    assert np.array_equal(relative_position_index((size, size)), _get_relative_position_index(size, size).numpy())


def test_outputs_match_torchvision_with_its_tensors():
    """At 223x223, the smallest input whose maps 7x7 partitions divide at every stage, batch 1:
    each stage's output and the logits within 1e-5 relative. The bias tables are drawn with
    std 1 (torchvision's 0.02 would hide a wrong offset)."""
    torch.manual_seed(0)
    reference = torchvision.models.maxvit_t(input_size=(223, 223)).eval()
    randomise(reference)
    with torch.no_grad():
        for name, p in reference.named_parameters():
            if name.endswith("relative_position_bias_table"):
                p.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(3))
    model = _ours(nasdsl.compile_spec(SPEC, {"image_size": 223}))
    model.load_state_dict(reference.state_dict(), strict=True, assign=True)
    model.eval()
    seen: dict[str, list[torch.Tensor]] = {}
    stages = [f"blocks.{i}" for i in range(4)]
    for net in (reference, model):
        for stage in stages:
            net.get_submodule(stage).register_forward_hook(lambda m, i, o, s=stage: seen.setdefault(s, []).append(o))
    x = torch.randn(1, 3, 223, 223, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected, got = reference(x), model(x)
    assert got.shape == expected.shape == (1, 1000)
    for stage in stages:
        theirs, ours = seen[stage]
        assert (theirs - ours).abs().max().item() <= 1e-5 * theirs.abs().max().item(), stage
    assert (expected - got).abs().max().item() <= 1e-5 * expected.abs().max().item()


def test_a_cut_down_maxvit_agrees_with_onnx_runtime_at_opset_17():
    """Block and grid partitions, the attention with its bias (tables drawn with std 1), MBConv
    with SE: ONNX Runtime against the generated PyTorch model."""
    net = nasdsl.compile_spec(SPEC, CUT_DOWN)
    assert net.summary()["totals"]["params"] > 0
    state = initial_weights(net.graph, seed=1)
    rng = np.random.default_rng(5)
    for key in state:
        if key.endswith("relative_position_bias_table"):
            state[key] = rng.normal(size=state[key].shape).astype(np.float32)
    result = verify(net.graph, state_dict=state, batch=2, opset=17)
    assert result.ok, result


ERRORS = {
    "positions that are no square partition": (
        "[4, 8]",
        "a: {op: partition_attention, head_dim: 4, size: 3}",
        "spec.yaml:5:6: error: model.a: expected partitions of size x size = 9 positions (the second last axis), "
        "got tokens (L, C) 4x8\n",
    ),
    "heads that do not divide the features": (
        "[4, 8]",
        "a: {op: partition_attention, head_dim: 3, size: 2}",
        "spec.yaml:5:6: error: model.a: expected a head_dim that divides the feature size 8, got 3\n",
    ),
    "a map": (
        "[3, 8, 8]",
        "a: {op: partition_attention, head_dim: 1, size: 2}",
        "spec.yaml:5:6: error: model.a: expected tokens (..., L, C), features last, as the input of "
        "partition_attention, got a (C, H, W) map 3x8x8\n",
    ),
    "no size": (
        "[4, 8]",
        "a: {op: partition_attention, head_dim: 4, size: 0}",
        "spec.yaml:5:51: error: model.a.size: expected an integer > 0, got 0\n",
    ),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_partition_attention_errors_are_located(case, tmp_path, monkeypatch, capsys):
    shape, entry, message = ERRORS[case]
    (tmp_path / "spec.yaml").write_text(f"nasdsl: 1\nname: Net\ninput: {{shape: {shape}}}\nmodel:\n  {entry}\n")
    monkeypatch.chdir(tmp_path)
    assert main(["check", "spec.yaml"]) == 2
    assert capsys.readouterr().err == message
