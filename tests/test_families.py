"""The spec language beyond GoogLeNet: ResNet-18 (residual add), MobileNetV2
(depthwise convolutions, inverted residuals, width multiplier) and Inception-v3
(factorised convolutions), each against torchvision's own implementation and
its documented figures; and the examples of docs/spec-language.md, which must
compile and build, and which the page must quote exactly."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torchvision

import nasdsl
from nasdsl import build_model
from nasdsl.backends.pytorch import generate_source, load_source
from nasdsl.cli import main as cli_main
from nasdsl.ops import OPS, REQUIRED

from paths import ROOT, SPECS
from reference_models import randomise_bn_stats

DOCS = ROOT / "docs"
EXAMPLES = sorted((DOCS / "examples").glob("*.yaml"))
LANGUAGE_PAGE = DOCS / "spec-language.md"


# -- how our parameter names differ from torchvision's -------------------------------


def same_key(key: str) -> str:
    return key


def resnet_key(key: str) -> str:
    """``layer2.0.residual.main.conv1.weight`` -> ``layer2.0.conv1.weight``: torchvision's
    BasicBlock holds the residual path's layers directly; the spec makes them a branch of the add."""
    return key.replace(".residual.main.", ".").replace(".residual.downsample.", ".downsample.")


_STEP = re.compile(r"\.(branch[0-9a-z]+)\.(\d+)\.(?:([ab])\.)?")


def inception_key(key: str) -> str:
    """``Mixed_5b.branch5x5.1.conv.weight`` -> ``Mixed_5b.branch5x5_2.conv.weight``,
    ``Mixed_7b.branch3x3.1.a.conv.weight`` -> ``Mixed_7b.branch3x3_2a.conv.weight``,
    ``Mixed_5b.branch_pool.1.conv.weight`` -> ``Mixed_5b.branch_pool.conv.weight``:
    torchvision numbers the steps of a branch in attribute names; a branch is a sequence here."""
    key = key.replace(".branch_pool.1.", ".branch_pool.")
    return _STEP.sub(lambda m: f".{m[1]}_{int(m[2]) + 1}{m[3] or ''}.", key)


@dataclass(frozen=True)
class Family:
    spec: Path
    #: builds torchvision's model with random weights
    reference: Callable[..., torch.nn.Module]
    weights: torchvision.models.WeightsEnum
    batch: int
    #: our state_dict key -> torchvision's
    key: Callable[[str], str]


FAMILIES = {
    "resnet18": Family(
        SPECS / "resnet18.yaml",
        lambda **kw: torchvision.models.resnet18(weights=None, **kw),
        torchvision.models.ResNet18_Weights.IMAGENET1K_V1,
        2,
        resnet_key,
    ),
    "mobilenet_v2": Family(
        SPECS / "mobilenet_v2.yaml",
        lambda **kw: torchvision.models.mobilenet_v2(weights=None, **kw),
        torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1,
        2,
        same_key,
    ),
    "inception_v3": Family(
        SPECS / "inception_v3.yaml",
        lambda **kw: torchvision.models.inception_v3(weights=None, init_weights=False, **kw),
        torchvision.models.Inception_V3_Weights.IMAGENET1K_V1,
        1,
        inception_key,
    ),
    "squeezenet1_1": Family(
        SPECS / "squeezenet1_1.yaml",
        lambda **kw: torchvision.models.squeezenet1_1(weights=None, **kw),
        torchvision.models.SqueezeNet1_1_Weights.IMAGENET1K_V1,
        2,
        same_key,
    ),
}
NAMES = list(FAMILIES)


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def compiled() -> dict[str, nasdsl.Compiled]:
    return {name: nasdsl.compile_spec(f.spec) for name, f in FAMILIES.items()}


@pytest.fixture(scope="module")
def model_class(compiled) -> dict[str, type]:
    """The generated model class of each family (generating it is the slow part; build it once)."""
    classes = {}
    for name, net in compiled.items():
        classes[name] = getattr(load_source(generate_source(net)), net.spec.name)
    return classes


def image(family: Family, net: nasdsl.Compiled, batch: int | None = None) -> torch.Tensor:
    c, h, w = net.summary()["input"]
    return torch.randn(batch or family.batch, c, h, w, generator=torch.Generator().manual_seed(2))


# -- sizes against torchvision ---------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_parameter_count_matches_torchvision(name, compiled):
    family, net = FAMILIES[name], compiled[name]
    assert net.summary(with_aux=True)["totals"]["params"] == count(family.reference())
    assert net.summary(with_aux=True)["totals"]["params"] == family.weights.meta["num_params"]


def test_inception_v3_without_aux_head_matches_torchvision_without_it(compiled):
    reference = FAMILIES["inception_v3"].reference(aux_logits=False)
    assert compiled["inception_v3"].summary()["totals"]["params"] == count(reference) == 23_834_568
    off = nasdsl.compile_spec(FAMILIES["inception_v3"].spec, {"aux_logits": False})
    assert off.summary(with_aux=True)["totals"]["params"] == count(reference)


@pytest.mark.parametrize("name", NAMES)
def test_multiply_adds_match_torchvisions_documented_ops(name, compiled):
    # torchvision documents GFLOPS counted as multiply-adds of convolutions and linear layers, 3 decimals
    macs = compiled[name].summary()["totals"]["macs"]
    assert round(macs / 1e9, 3) == FAMILIES[name].weights.meta["_ops"]


@pytest.mark.parametrize("width", [0.35, 0.5, 0.75, 1.4])
def test_mobilenet_v2_width_multiplier_matches_torchvision(width):
    net = nasdsl.compile_spec(FAMILIES["mobilenet_v2"].spec, {"width": width})
    assert net.summary()["totals"]["params"] == count(torchvision.models.mobilenet_v2(width_mult=width))


def test_resnet18_figures_by_hand(compiled):
    """Table 1 of the ResNet paper by hand: 3x3 convolutions at 56, 28, 14, 7 with 64..512 channels."""
    rows = {r["name"]: r for r in compiled["resnet18"].summary()["rows"]}
    assert rows["conv1"]["params"] == 64 * 3 * 7 * 7
    # four 64->64 3x3 convolutions and their BatchNorm (weight, bias)
    assert rows["layer1"]["params"] == 4 * (64 * 64 * 9 + 2 * 64)
    assert rows["layer1"]["macs"] == 4 * 56 * 56 * 64 * 64 * 9
    assert rows["layer4"]["output"] == [512, 7, 7]
    assert compiled["resnet18"].summary()["totals"]["depth"] == 18


# -- the generated models against torchvision's ------------------------------------------


@pytest.fixture(scope="module")
def pair(model_class) -> Callable[[str], tuple[torch.nn.Module, torch.nn.Module]]:
    """(torchvision's model with random weights and BatchNorm statistics, ours holding the same
    tensors, loaded strictly under our names), built once per family with the default options."""
    made: dict[str, tuple[torch.nn.Module, torch.nn.Module]] = {}

    def get(name: str) -> tuple[torch.nn.Module, torch.nn.Module]:
        if name not in made:
            family = FAMILIES[name]
            torch.manual_seed(0)
            reference = family.reference()
            randomise_bn_stats(reference)
            with torch.device("meta"):  # skip our initialisation: every tensor is loaded below
                model = model_class[name]()
            state = reference.state_dict()
            model.load_state_dict({k: state[family.key(k)] for k in model.state_dict()}, strict=True, assign=True)
            made[name] = reference.eval(), model.eval()
        return made[name]

    return get


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_forward_gives_the_expected_shape(name, compiled, model_class):
    family, net = FAMILIES[name], compiled[name]
    model = model_class[name](num_classes=10).eval()
    with torch.no_grad():
        out = model(image(family, net))
    assert isinstance(out, torch.Tensor) and out.shape == (family.batch, 10)


def test_build_model_applies_variables():
    model = build_model(FAMILIES["mobilenet_v2"].spec, width=0.5, num_classes=7)
    assert count(model) == count(torchvision.models.mobilenet_v2(width_mult=0.5, num_classes=7))
    assert model.features[0][0].out_channels == 16


@pytest.mark.parametrize("name", NAMES)
def test_parameter_names_are_torchvisions_up_to_the_documented_renaming(name, pair):
    reference, model = pair(name)
    ours, theirs = list(model.state_dict()), list(reference.state_dict())
    renamed = [FAMILIES[name].key(k) for k in ours]
    assert len(set(renamed)) == len(ours)
    assert set(renamed) == set(theirs)
    if name in ("mobilenet_v2", "squeezenet1_1"):
        assert ours == theirs


@pytest.mark.parametrize("name", NAMES)
def test_outputs_match_torchvision_with_its_weights(name, compiled, pair):
    """Eval mode, one forward each at the spec's input size (batch 1 for Inception-v3 at 299x299)."""
    family, net = FAMILIES[name], compiled[name]
    reference, model = pair(name)
    x = image(family, net)
    with torch.no_grad():
        expected, got = reference(x), model(x)
    assert isinstance(got, torch.Tensor) and got.shape == expected.shape == (family.batch, 1000)
    assert (expected - got).abs().max().item() <= 1e-5


def test_one_fire_class_serves_every_width(compiled):
    """SqueezeNet's Fire module reads its squeeze layer through a reference; the class takes that
    width from its argument, so one class serves the uses at 16, 32, 48 and 64 squeeze channels."""
    source = generate_source(compiled["squeezenet1_1"])
    assert source.count("class Fire(") == 1
    assert "self.expand3x3 = nn.Conv2d(squeeze_planes, expand3x3_planes, 3, padding=1)" in source
    widths = sorted({b.args[0].value for b in compiled["squeezenet1_1"].graph.graph["model"].children[0].children
                     if b.kind == "use"})  # fmt: skip
    assert widths == [16, 32, 48, 64]


def test_inception_v3_aux_head_matches_torchvisions(compiled, pair):
    reference, model = pair("inception_v3")
    x = torch.randn(2, 768, 17, 17, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected, got = reference.AuxLogits(x), model.AuxLogits(x)
    assert got.shape == (2, 1000) and (expected - got).abs().max().item() <= 1e-5
    # torchvision reads it from Mixed_6e, in training only
    g = compiled["inception_v3"].graph
    aux = next(o for o in g.graph["outputs"] if o.name == "AuxLogits")
    assert aux.training_only and aux.loss_weight == 0.4
    first = next(
        n
        for n, d in g.nodes(data=True)
        if d["keypath"].startswith("templates.InceptionAux") and any(p == "Mixed_6e" for p in g.predecessors(n))
    )
    assert first == "AuxLogits.avgpool"


# -- the examples of the language reference -----------------------------------------------


def test_there_are_examples():
    assert {p.name for p in EXAMPLES} >= {
        "inception_module.yaml",
        "residual_block.yaml",
        "depthwise_separable.yaml",
        "tour.yaml",
    }


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_passes_check(path, capsys):
    assert cli_main(["check", str(path)]) == 0
    assert capsys.readouterr().out.startswith(f"{path}: ok: ")


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_builds_and_runs_in_pytorch(path):
    net = nasdsl.compile_spec(path)
    model = build_model(net).eval()
    c, h, w = net.summary()["input"]
    with torch.no_grad():
        out = model(torch.randn(2, c, h, w))
    main = out if isinstance(out, torch.Tensor) else out[0]
    assert tuple(main.shape) == (2, *net.graph.nodes[net.graph.graph["outputs"][0].node]["shape"])
    assert count(model) == net.summary(with_aux=True)["totals"]["params"]


def _fenced(page: Path, lang: str) -> list[tuple[str, str]]:
    """(marker comment just above, text) of each fenced block in ``lang``."""
    pattern = re.compile(r"(?:<!--\s*(.*?)\s*-->\n)?```" + lang + r"\n(.*?)```", re.S)
    return [(m[1] or "", m[2]) for m in pattern.finditer(page.read_text())]


def test_every_yaml_shown_is_quoted_from_a_checked_file():
    sources = {p: p.read_text() for p in [*EXAMPLES, *sorted(SPECS.glob("*.yaml"))]}
    blocks = _fenced(LANGUAGE_PAGE, "yaml")
    assert len(blocks) >= 10
    for _, text in blocks:
        lines = text.splitlines()
        found = [
            p for p, src in sources.items() if textwrap.dedent(text) in textwrap.dedent(src) or _indented_in(lines, src)
        ]
        assert found, f"this YAML in {LANGUAGE_PAGE.name} is in no file of docs/examples or specs:\n{text}"


def _indented_in(lines: list[str], src: str) -> bool:
    """Whether ``lines`` occur consecutively in ``src`` with one common extra indentation."""
    src_lines = src.splitlines()
    n = len(lines)
    for i in range(len(src_lines) - n + 1):
        window = src_lines[i : i + n]
        pad = len(window[0]) - len(window[0].lstrip()) - (len(lines[0]) - len(lines[0].lstrip()))
        if pad >= 0 and all(
            (w[pad:] if w.strip() else "") == (ln if ln.strip() else "") for w, ln in zip(window, lines, strict=True)
        ):
            return True
    return False


def test_generated_code_shown_is_what_the_backend_writes():
    blocks = [(marker, text) for marker, text in _fenced(LANGUAGE_PAGE, "python") if marker.startswith("generated:")]
    assert len(blocks) >= 3
    for marker, text in blocks:
        source = generate_source(nasdsl.compile_spec(ROOT / marker.removeprefix("generated:").strip()))
        assert text in source, f"{marker}: the page shows code the backend does not write:\n{text}"


def _op_table(page: Path) -> dict[str, dict[str, str]]:
    """Rows ``| `op` | `attr`=`default`, `attr` ... |`` between the page's op-table markers."""
    text = page.read_text()
    table = text[text.index("<!-- op-table -->") : text.index("<!-- /op-table -->")]
    ops: dict[str, dict[str, str]] = {}
    for m in re.finditer(r"^\|\s*`(\w+)`\s*\|([^|]*)\|", table, re.M):
        ops[m[1]] = {name: default for name, default in re.findall(r"`(\w+)`(?:=`([^`]*)`)?", m[2])}
    return ops


def _same_default(text: str, value: object) -> bool:
    """Whether ``text`` (as the page writes a default) stands for ``value``."""
    if isinstance(value, bool):
        return text == ("true" if value else "false")
    if isinstance(value, tuple):
        return value[0] == value[1] and _same_default(text, value[0])
    if isinstance(value, (int, float)):
        try:
            return float(text) == value
        except ValueError:
            return False
    return text == value


def test_op_table_matches_the_op_registry():
    table = _op_table(LANGUAGE_PAGE)
    assert list(table) == list(OPS)
    for name, op in OPS.items():
        shown = table[name]
        assert list(shown) == [a.name for a in op.attrs], name
        for a in op.attrs:
            if a.default is REQUIRED:
                assert shown[a.name] == "", f"{name}.{a.name} is required"
            elif callable(a.default):
                assert shown[a.name] == "kernel", f"{name}.{a.name} defaults to the kernel"
            else:
                assert _same_default(shown[a.name], a.default), f"{name}.{a.name}: {shown[a.name]} != {a.default}"
