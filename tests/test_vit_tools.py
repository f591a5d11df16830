"""The tools on a transformer (issue 22, item 6): `nasdsl draw --roll` on ViT-B/16, a design space
over a ViT's depth, width, heads and patch size (tests/specs/vit_space.yaml) evaluated without torch
and against torchvision's VisionTransformer, and weight transfer between ViT widths and depths."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torchvision
from test_draw import parse
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models.vision_transformer import VisionTransformer

import nasdsl
from nasdsl import document, draw
from nasdsl import space as spaces
from nasdsl.cli import main
from nasdsl.summary import summarize
from nasdsl.transfer import transfer_weights
from nasdsl.variants import Evaluator
from nasdsl.weights import initial_weights

from paths import ROOT, SPECS

VIT = SPECS / "vit_b_16.yaml"
VIT_SPACE = ROOT / "tests" / "specs" / "vit_space.yaml"


@pytest.fixture(scope="module")
def vit():
    return nasdsl.compile_spec(VIT).graph


def _torchvision_vit(**options) -> tuple[int, int]:
    """(parameters, multiply-adds at 224x224) of torchvision's VisionTransformer on the meta
    device: its multiply-adds counted by PyTorch's FLOP counter (two FLOPs a multiply-add)."""
    with torch.device("meta"):
        model = VisionTransformer(image_size=224, **options).eval()
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(torch.empty(1, 3, 224, 224))
    return sum(p.numel() for p in model.parameters()), counter.get_total_flops() // 2


# --------------------------------------------------------------------------- draw --roll


def test_roll_draws_the_twelve_encoder_blocks_once(vit):
    full = parse(draw.to_dot(vit, roll=True))
    block = full.cluster("EncoderBlock encoder_layer_0–encoder_layer_11 (12, 768, 3072, 0, 0) × 12")
    assert "encoder.layers.encoder_layer_0.self_attention" in block.all_nodes()
    assert not any(n.startswith("encoder.layers.encoder_layer_1") for n in full.nodes)
    assert full.edge_label("encoder.layers.encoder_layer_0.out", "encoder.ln") == "197x768"
    # the class token joins the patch tokens; no data flows into the learned tensors
    assert full.cluster("concat sequence of (class_token, tokens)")
    assert not [e for e in full.edges if e[1] in ("class_token", "encoder.pos_embedding")]
    assert full.edge_label("class_token", "sequence") == "1x768"

    boxes = parse(draw.to_dot(vit, depth=1, roll=True, show=["params"]))
    with torch.device("meta"):
        reference = torchvision.models.vit_b_16()
    per_block = sum(p.numel() for p in reference.encoder.layers.parameters())
    assert boxes.label("encoder.layers.encoder_layer_0") == (
        f"EncoderBlock encoder_layer_0–encoder_layer_11 (12, 768, 3072, 0, 0) × 12\n{per_block:,} params"
    )


# --------------------------------------------------------------------------- space and sweep


def _listed(capsys) -> dict[tuple, dict]:
    assert main(["space", str(VIT_SPACE), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    keys = ("patch_size", "num_layers", "num_heads", "hidden_dim")
    return {tuple(v["choices"][k] for k in keys): v for v in data["variants"]}


def test_space_lists_vits_with_torchvisions_figures(capsys):
    listed = _listed(capsys)
    assert len(listed) == 48  # of 54: width 192 in 12 heads (16 features a head) for each patch size and depth
    b32 = listed[(32, 12, 12, 768)]
    weights = torchvision.models.ViT_B_32_Weights.DEFAULT.meta
    assert b32["params"] == weights["num_params"] == 88_224_232
    assert round(b32["macs"] / 1e9, 3) == weights["_ops"]
    options = {"patch_size": 32, "num_layers": 12, "num_heads": 12, "hidden_dim": 768, "mlp_dim": 3072}
    assert (b32["params"], b32["macs"]) == _torchvision_vit(**options)
    narrow = listed[(16, 6, 6, 192)]
    options = {"patch_size": 16, "num_layers": 6, "num_heads": 6, "hidden_dim": 192, "mlp_dim": 768}
    assert (narrow["params"], narrow["macs"]) == _torchvision_vit(**options) == (3_048_232, 641_388_288)
    assert (16, 3, 12, 192) not in listed  # 16-feature heads: against the constraint


def test_the_space_compiles_once_per_depth_and_agrees_with_full_compiles():
    doc, files = document.load_document(VIT_SPACE)
    space = spaces.find_space(doc, files[0], files)
    evaluator = Evaluator(space)
    variants = list(space.variants())
    results = [evaluator.evaluate(p) for p in variants]
    assert evaluator.recompiled == 2  # the default's program serves depth 12; 6 and 3 are other structures
    for picks, fast in list(zip(variants, results, strict=True))[::9]:
        net = nasdsl.compile_spec(VIT_SPACE, space.choices(picks))
        totals = summarize(net.graph)["totals"]
        assert (fast.figures.params, fast.figures.macs, fast.figures.depth) == (
            totals["params"],
            totals["macs"],
            totals["depth"],
        ), space.choices(picks)


NO_TORCH = """
import sys
from nasdsl.cli import main
assert main(["space", SPACE, "--format", "csv"]) == 0
sets = ["num_layers=[12,6]", "hidden_dim=[768,384]", "patch_size=[16,32]"]
assert main(["sweep", VIT, *(a for s in sets for a in ("--set", s))]) == 0
loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
assert not loaded, loaded[:5]
"""


def test_space_and_sweep_over_a_vit_never_import_torch():
    script = NO_TORCH.replace("SPACE", repr(str(VIT_SPACE))).replace("VIT", repr(str(VIT)))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "8 listed; 8 evaluated" in done.stdout


# --------------------------------------------------------------------------- transfer


def test_transfer_to_half_the_width_keeps_the_leading_channels_of_each_projection():
    parent = nasdsl.compile_spec(VIT, {"num_layers": 1})
    child = nasdsl.compile_spec(VIT, {"num_layers": 1, "hidden_dim": 384, "mlp_dim": 1536, "num_heads": 6})
    weights = initial_weights(parent.graph, seed=1)
    moved = transfer_weights(parent, weights, child)
    status = {m.key: m for m in moved.report}
    assert {m.status for m in moved.report} == {"adapted", "copied"}
    assert status["heads.head.bias"].status == "copied"
    attention = "encoder.layers.encoder_layer_0.self_attention"
    m = status[f"{attention}.in_proj_weight"]
    assert (m.copied, m.size) == (1152 * 384, 1152 * 384)
    assert m.note == "from 2304x768; dim 0: 2304 -> 1152; dim 1: 768 -> 384"
    # the query, key and value projections each keep the leading rows of the parent's own
    old, new = weights[f"{attention}.in_proj_weight"], moved[f"{attention}.in_proj_weight"]
    for part in range(3):
        np.testing.assert_array_equal(new[part * 384 : (part + 1) * 384], old[part * 768 : part * 768 + 384, :384])
    np.testing.assert_array_equal(
        moved[f"{attention}.in_proj_bias"][384:768], weights[f"{attention}.in_proj_bias"][768:1152]
    )
    # the class token, the position embedding, the final LayerNorm and the head: the leading features
    np.testing.assert_array_equal(moved["class_token"], weights["class_token"][..., :384])
    np.testing.assert_array_equal(moved["encoder.pos_embedding"], weights["encoder.pos_embedding"][..., :384])
    np.testing.assert_array_equal(moved["encoder.ln.weight"], weights["encoder.ln.weight"][:384])
    np.testing.assert_array_equal(moved["heads.head.weight"], weights["heads.head.weight"][:, :384])
    np.testing.assert_array_equal(moved["encoder.layers.encoder_layer_0.mlp.3.weight"],
                                  weights["encoder.layers.encoder_layer_0.mlp.3.weight"][:384, :1536])  # fmt: skip


def test_transfer_to_half_the_depth_copies_the_first_blocks_and_drops_the_rest():
    narrow = {"hidden_dim": 192, "mlp_dim": 768, "num_heads": 3, "patch_size": 32}
    parent = nasdsl.compile_spec(VIT, narrow)
    child = nasdsl.compile_spec(VIT, {**narrow, "num_layers": 6})
    weights = initial_weights(parent.graph, seed=1)
    moved = transfer_weights(parent, weights, child)
    counts = {s: sum(m.status == s for m in moved.report) for s in ("copied", "adapted", "initialised", "dropped")}
    per_block = 12  # two LayerNorms, attention's four tensors, the MLP's two linear layers
    assert counts == {"copied": 4 + 6 * per_block + 4, "adapted": 0, "initialised": 0, "dropped": 6 * per_block}
    dropped = {m.key.split(".")[2] for m in moved.report if m.status == "dropped"}
    assert dropped == {f"encoder_layer_{i}" for i in range(6, 12)}
    for key in ("encoder.layers.encoder_layer_5.mlp.0.weight", "encoder.ln.weight", "heads.head.weight"):
        np.testing.assert_array_equal(moved[key], weights[key])
