"""Swin Transformers (window attention with a cyclic shift and relative-position bias, patch
merging) against torchvision: Swin-T, Swin-V2-T and Swin3D-T, and the V2 variants, here; the
--set variants of Swin-T and Swin3D-T in test_families.py.

The references are independent of nasdsl: torchvision's models (built with random weights, never
downloaded; on the meta device where only sizes matter), their documented figures
(``weights.meta``), and ONNX Runtime.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torchvision.models import get_model_weights
from torchvision.models import swin_transformer as swin
from torchvision.models.video import swin_transformer as swin3d

import nasdsl
from nasdsl.backends.pytorch import generate_source, load_source, model_class
from nasdsl.backends.verify import verify

from paths import SPECS
from reference_models import assert_module_for_module

#: each torchvision builder: its spec, the spec's --set, and the input of the builder's default
#: weights (their crop; a video's 16 frames, at which torchvision measured its GFLOPS)
BUILDERS = {
    "swin_t": ("swin_t", {}, [3, 224, 224]),
    "swin_v2_t": ("swin_v2_t", {}, [3, 256, 256]),
    "swin_v2_s": ("swin_v2_t", {"depth3": 18, "stochastic_depth_prob": 0.3}, [3, 256, 256]),
    "swin_v2_b": (
        "swin_v2_t",
        {"embed_dim": 128, "heads1": 4, "heads2": 8, "heads3": 16, "heads4": 32, "depth3": 18}
        | {"stochastic_depth_prob": 0.5},
        [3, 256, 256],
    ),
    "swin3d_t": ("swin3d_t", {}, [3, 16, 224, 224]),
}
#: the learned tensors' names end otherwise: these buffers are computed from the window
COMPUTED = ("relative_position_index", "relative_coords_table")


@pytest.mark.parametrize("builder", sorted(BUILDERS))
def test_spec_is_torchvisions_model_module_for_module(builder):
    """On the meta device: the state_dict's names (buffers included) in torchvision's order with
    its shapes, every module holding tensors of torchvision's class with its extra_repr, every
    dropout and stochastic depth rate, and the parameters and GFLOPS documented with
    torchvision's default weights at their input size."""
    spec, sets, shape = BUILDERS[builder]
    compiled = nasdsl.compile_spec(SPECS / f"{spec}.yaml", {**sets, "input.shape": shape})
    with torch.device("meta"):
        model = getattr(load_source(generate_source(compiled)), compiled.spec.name)()
        reference = torchvision.models.get_model(builder, weights=None)
    assert_module_for_module(model, reference)
    meta = get_model_weights(builder).DEFAULT.meta
    totals = compiled.totals()
    assert totals["params"] == meta["num_params"]
    assert round(totals["macs"] / 1e9, 3) == meta["_ops"]


def _pair(builder: str, attention: torch.nn.Module, spec: str, sets: dict) -> tuple:
    """torchvision's model and ours, both with one random state_dict (ours loads it strictly);
    built on the meta device, then given memory, so that no time goes into drawing weights. The
    buffers computed from the window are torchvision's own (every block has the same window)."""
    with torch.device("meta"):
        reference = torchvision.models.get_model(builder)
        model = model_class(nasdsl.compile_spec(SPECS / f"{spec}.yaml", sets).graph)()
    g = torch.Generator().manual_seed(0)
    state = {
        k: getattr(attention, k.rsplit(".", 1)[-1])
        if k.endswith(COMPUTED)
        else torch.randn(v.shape, generator=g) * 0.05
        for k, v in reference.state_dict().items()
    }
    for m in (reference, model):
        m.to_empty(device="cpu")
        m.load_state_dict(state, strict=True)
        m.eval()
    return reference, model


@pytest.mark.parametrize(
    ("builder", "attention", "spec", "sets", "shape"),
    [
        # 10x10 tokens in 7x7 windows: padded to 14x14, every second block shifted and masked;
        # then 5x5, 3x3 (odd sides: patch merging pads) and 2x2
        ("swin_t", swin.ShiftedWindowAttention(8, [7, 7], [0, 0], 1), "swin_t", {}, [3, 40, 40]),
        # 12x12 tokens in 8x8 windows: padded to 16x16, shifted and masked; then 6, 3, 2
        ("swin_v2_t", swin.ShiftedWindowAttentionV2(8, [8, 8], [0, 0], 1), "swin_v2_t", {}, [3, 48, 48]),
        # 17x30x30 frames padded to whole 2x4x4 patches: 9x8x8 tokens in 8x7x7 windows, padded to
        # 16x14x14, shifted and masked in time and space; then 9x4x4 (the 7x7 windows pad), 9x2x2
        ("swin3d_t", swin3d.ShiftedWindowAttention3d(8, [8, 7, 7], [0, 0, 0], 1), "swin3d_t", {}, [3, 17, 30, 30]),
    ],
    ids=["swin_t", "swin_v2_t", "swin3d_t"],
)
def test_spec_computes_what_torchvision_computes(builder, attention, spec, sets, shape):
    reference, model = _pair(builder, attention, spec, {**sets, "input.shape": shape})
    x = torch.randn(1, *shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got, want = model(x), reference(x)
    assert (got - want).abs().max() <= 1e-5 * want.abs().max()


def test_swin_t_agrees_with_onnx_runtime():
    """The shifted, masked and padded windows and the patch merging through ONNX Runtime (opset
    17): two blocks in each stage (the second shifts), at 40x40 as above; a quarter of the width
    (the heads as Swin-T's: 8 features each), which changes no op's kind of work, only its cost."""
    sets = {"input.shape": [3, 40, 40], "depth3": 2, "embed_dim": 24}
    compiled = nasdsl.compile_spec(SPECS / "swin_t.yaml", sets)
    g = torch.Generator().manual_seed(3)
    state = {
        k: v if k.endswith(COMPUTED) else torch.randn(v.shape, generator=g) * 0.05
        for k, v in model_class(compiled.graph)().state_dict().items()
    }
    result = verify(compiled.graph, state_dict=state, batch=2, opset=17)
    assert result.ok, result


WINDOWS = """\
nasdsl: 1
name: Windows
input: {shape: [3, 5, 19, 20]}
model:
  pad: {op: pad_to_multiple, multiple: [2, 2, 2]}                    # (3, 6, 20, 20)
  embed: {op: conv3d, out: 8, kernel: [2, 2, 2], stride: [2, 2, 2]}  # (8, 3, 10, 10)
  last: {op: permute, dims: [1, 2, 3, 0]}                             # (3, 10, 10, 8)
  video: {op: window_attention, heads: 2, window: [2, 4, 4], shift: [1, 2, 2], fit: true}
  merge: {op: patch_merging, out: 12}                                 # (3, 5, 5, 12)
  frames: {op: reshape, shape: [15, 5, 12], axes: HWC}
  v2: {op: window_attention, heads: 3, window: [4, 3], shift: [2, 1], version: 2, qkv_bias: false}
  merge2: {op: patch_merging, out: 16, norm: after}                  # (8, 3, 16)
  head: {op: linear, out: 4, dim: last}
"""


@pytest.mark.parametrize("opset", [13, 17])
def test_window_ops_of_every_kind_agree_with_onnx_runtime(tmp_path, opset):
    """3-D windows (padded, shifted in all three axes), Swin V2's attention on an uneven window
    without a qkv bias, and both patch mergings (an odd side), through ONNX Runtime, with the
    weights nasdsl draws (its computed buffers included) and with random ones."""
    path = tmp_path / "windows.yaml"
    path.write_text(WINDOWS)
    compiled = nasdsl.compile_spec(path)
    assert verify(compiled.graph, batch=2, opset=opset).ok


#: a template whose parameters set a padding multiple, a kernel, a stride, a window shift and a
#: roll, given as one number at one use and as one per axis at the other (a shift of 1 is 1 along
#: both axes; a pair is one per axis), and a window that differs between the uses
INT_OR_PAIR = """\
nasdsl: 1
name: IntOrPair
input: {shape: [4, 11, 12]}
templates:
  Stage:
    params: [m, k, s, window, shift, roll]
    body:
      pad: {op: pad_to_multiple, multiple: m}
      conv: {op: conv2d, out: 8, kernel: k, stride: s, padding: 1}
      last: {op: permute, dims: [1, 2, 0]}
      attn: {op: window_attention, heads: 2, window: window, shift: shift}
      roll: {op: roll, shifts: roll, axes: [0, 1]}
      first: {op: permute, dims: [2, 0, 1]}
model:
  a: {use: Stage, args: [4, 3, 1, [3, 3], 1, [1, 2]]}                      # (8, 12, 12)
  b: {use: Stage, args: [[5, 3], [3, 1], [1, 2], [3, 2], [2, 1], [2, -1]]}  # (8, 15, 7)
"""


def _int_or_pair_by_hand(x: torch.Tensor, state: dict) -> torch.Tensor:
    """INT_OR_PAIR written out: each setting given per axis (the numbers as the pairs they stand
    for), the convolution functional, and torchvision's shifted window attention."""
    uses = (
        ("a", (4, 4), (3, 3), (1, 1), [3, 3], [1, 1], [1, 2]),
        ("b", (5, 3), (3, 1), (1, 2), [3, 2], [2, 1], [2, -1]),
    )
    for name, multiple, kernel, stride, window, shift, roll in uses:
        h, w = x.shape[-2:]
        x = F.pad(x, [0, -w % multiple[1], 0, -h % multiple[0]])
        weight = state[f"{name}.conv.weight"]
        assert tuple(weight.shape[-2:]) == kernel
        x = F.conv2d(x, weight, state[f"{name}.conv.bias"], stride=stride, padding=1)
        attention = swin.ShiftedWindowAttention(8, window, shift, 2)
        own = {k.removeprefix(f"{name}.attn."): v for k, v in state.items() if k.startswith(f"{name}.attn.")}
        attention.load_state_dict(own, strict=True)
        x = attention(x.permute(0, 2, 3, 1))
        x = torch.roll(x, roll, (1, 2)).permute(0, 3, 1, 2)
    return x


def test_a_template_parameter_may_be_a_number_at_one_use_and_a_pair_at_another(tmp_path):
    """One class serves both uses and passes each setting on as the use gives it: the window
    attention's shift and the padding multiple were written (p, p) (a pair became a pair of
    pairs), a roll's shifts as the first use's numbers (the second use refused), and a window
    given by a parameter crashed the writer. The model
    computes what the network written by hand computes, and what its ONNX export computes under
    ONNX Runtime."""
    path = tmp_path / "int_or_pair.yaml"
    path.write_text(INT_OR_PAIR)
    compiled = nasdsl.compile_spec(path)
    source = generate_source(compiled.graph)
    assert source.count("class Stage(nn.Module):") == 1
    model = load_source(source).IntOrPair().eval()
    state = model.state_dict()
    x = torch.randn(2, 4, 11, 12, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got, want = model(x), _int_or_pair_by_hand(x, state)
    assert got.shape == want.shape == (2, 8, 15, 7)
    assert (got - want).abs().max() <= 1e-5 * want.abs().max()
    weights = {k: v.numpy() for k, v in state.items()}
    result = verify(compiled.graph, state_dict=weights, batch=2, opset=17)
    assert result.ok, result
