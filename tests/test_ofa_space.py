"""Once-for-All's MobileNetV3 space (specs/spaces/ofa_mobilenet_v3.yaml, issue 23) against the facts
the paper and the authors' code publish (tests/data/ofa_mbv3_space.yaml) and against a PyTorch
reference written by hand from the definitions (tests/ofa_reference.py): the count, parameters,
multiply-adds and outputs of the largest sub-network and of sampled ones, in the generated PyTorch
and in ONNX Runtime."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
import yaml

import nasdsl
from nasdsl import space as spaces
from nasdsl.cli import main
from nasdsl.summary import summarize

from paths import DATA, SPECS

OFA = str(SPECS / "spaces" / "ofa_mobilenet_v3.yaml")
FACTS = yaml.safe_load((DATA / "ofa_mbv3_space.yaml").read_text())


def _subnets() -> list[tuple[list[int], list[int], list[int]]]:
    """The largest sub-network, the smallest and two drawn at random (OFA's own sampling: each
    block's kernel and ratio, each stage's depth, uniformly)."""
    rng = random.Random(23)
    out = [([7] * 20, [6] * 20, [4] * 5), ([3] * 20, [3] * 20, [2] * 5)]
    for _ in range(2):
        out.append(
            (
                [rng.choice(FACTS["kernel_sizes"]) for _ in range(20)],
                [rng.choice(FACTS["expand_ratios"]) for _ in range(20)],
                [rng.choice(FACTS["depths"]) for _ in range(5)],
            )
        )
    return out


SUBNETS = _subnets()


def test_the_space_is_the_papers(capsys):
    space = spaces.load_space(OFA)
    per_unit = sum((len(FACTS["kernel_sizes"]) * len(FACTS["expand_ratios"])) ** d for d in FACTS["depths"])
    assert per_unit == 7_371
    assert space.count() == per_unit ** FACTS["units"] == 21_758_655_492_572_485_851
    assert FACTS["subnetworks_at_least"] < space.count() < 1.1 * FACTS["subnetworks_about"]
    assert main(["space", OFA, "--count"]) == 0
    assert capsys.readouterr().out == f"{per_unit**5}\n"
    by_name = {p.name: p for p in space.points}
    for s in range(1, 6):
        assert sorted(by_name[f"d{s}"].options) == FACTS["depths"]
        for b in range(1, 5):
            assert sorted(by_name[f"k{s}_{b}"].options) == FACTS["kernel_sizes"]
            assert sorted(by_name[f"e{s}_{b}"].options) == FACTS["expand_ratios"]
    # the resolution as a choice: OFA's 25 input sizes multiply the count
    r = FACTS["resolution"]
    wider = spaces.load_space(OFA, [f"resolution={{range: [{r['from']}, {r['to']}, {r['step']}]}}"])
    assert wider.count() == 25 * space.count()


@pytest.mark.parametrize("width", FACTS["width_multipliers"])
def test_parameters_and_multiply_adds_equal_the_reference(width):
    import torch
    from nb201_reference import multiply_adds
    from ofa_reference import OFASubnet, settings

    for ks, e, d in SUBNETS if width == 1.0 else SUBNETS[:1]:
        net = nasdsl.compile_spec(OFA, [*settings(ks, e, d), f"width={width}"])  # at 224 pixels
        totals = summarize(net.graph)["totals"]
        with torch.device("meta"):  # shapes only: the hooks count, nothing is computed
            reference = OFASubnet(ks, e, d, width)
            macs = multiply_adds(reference, torch.zeros(1, 3, 224, 224))
        assert (totals["params"], totals["macs"]) == (sum(p.numel() for p in reference.parameters()), macs)


def test_outputs_equal_the_reference_in_pytorch_and_onnx():
    import onnxruntime
    import torch
    from ofa_reference import OFASubnet, settings

    from nasdsl.backends.onnx import export_onnx

    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    for ks, e, d in (SUBNETS[0], SUBNETS[2]):  # the default (the largest) and one drawn at random
        net = nasdsl.compile_spec(OFA, [*settings(ks, e, d), "resolution=32", "num_classes=10"])
        model = nasdsl.build_model(net).eval()
        reference = OFASubnet(ks, e, d, num_classes=10).eval()
        ours, theirs = model.state_dict(), reference.state_dict()
        assert [v.shape for v in ours.values()] == [v.shape for v in theirs.values()]
        for v in ours.values():  # BatchNorm's weights, shifts and statistics (and biases) away from 1 and 0
            if v.dtype.is_floating_point and v.dim() == 1:
                v.copy_(torch.rand_like(v) * 0.5 + 0.75)
        reference.load_state_dict(dict(zip(theirs, ours.values(), strict=True)))
        with torch.no_grad():
            got, want = model(x), reference(x)
        scale = want.abs().max().item()
        assert (got - want).abs().max().item() < 1e-5 * scale, (ks, e, d)
        session = onnxruntime.InferenceSession(
            export_onnx(net, state_dict=model.state_dict(), batch="dynamic").SerializeToString(),
            providers=["CPUExecutionProvider"],
        )
        (onnx_out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
        assert abs(torch.from_numpy(onnx_out) - want).max().item() < 1e-5 * scale, (ks, e, d)


def test_the_guide_shows_the_spec_as_it_is():
    guide = (Path(__file__).parent.parent / "docs" / "design-space.md").read_text()
    start = guide.index("## 10. A block space")
    section = guide[start : guide.index("\n## ", start + 1)]
    excerpts = [m.group(1) for m in re.finditer(r"```yaml\n(.*?)```", section, flags=re.S)]
    spec = Path(OFA).read_text()
    assert len(excerpts) == 2 and all(e in spec for e in excerpts)


def test_names_follow_ofa_and_a_shallow_stage_leaves_its_numbers_unused():
    from ofa_reference import settings

    ks, e, d = [3] * 20, [3] * 20, [2, 4, 4, 4, 4]
    net = nasdsl.compile_spec(OFA, [*settings(ks, e, d), "resolution=64"])
    names = set(nasdsl.build_model(net).state_dict())
    assert "blocks.2.conv.point_linear.bn.running_var" in names and not any(n.startswith("blocks.3.") for n in names)
    assert "blocks.5.conv.depth_conv.se.fc.reduce.weight" in names  # stage 2's first block: SE
    assert "blocks.9.conv.inverted_bottleneck.conv.weight" in names
    assert "blocks.0.conv.inverted_bottleneck.conv.weight" not in names  # the first block has no expansion
