"""torchvision's classification zoo written as specs: for each model, the parameter
count, the multiply-adds of torchvision's documented figures, the parameter names (a
randomly initialised torchvision model's state_dict loads strictly, in order), the
eval outputs (within 1e-5 relative) and `nasdsl verify`; and the examples of
docs/spec-language.md, which must compile and build, and which the page must quote
exactly."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import torchvision

import nasdsl
from nasdsl import build_model
from nasdsl.backends.pytorch import generate_source, load_source
from nasdsl.backends.verify import verify
from nasdsl.cli import main as cli_main
from nasdsl.ops import OPS, REQUIRED

from paths import ROOT, SPECS
from reference_models import randomise

DOCS = ROOT / "docs"
EXAMPLES = sorted((DOCS / "examples").glob("*.yaml"))
LANGUAGE_PAGE = DOCS / "spec-language.md"


@dataclass(frozen=True)
class Family:
    """A torchvision model and the spec that writes it."""

    #: torchvision's builder (torchvision.models.NAME) and the spec (specs/NAME.yaml)
    name: str
    #: the name of its weights enum in torchvision.models (for the documented figures)
    weights: str
    #: the side of the square input the comparisons use: the weights do not depend on the
    #: input size, so a small input keeps the suite fast (the figures use the spec's own size)
    size: int = 64
    batch: int = 2
    #: keyword arguments of torchvision's builder
    options: dict = field(default_factory=dict)
    #: for the comparisons at the small size: the spec's overrides and the builder's extra options
    #: (Inception-v3's auxiliary head needs a 299x299 input; below it both leave it out)
    small_overrides: dict = field(default_factory=dict)
    small_options: dict = field(default_factory=dict)
    #: our multiply-adds in GMACs where they differ from torchvision's `_ops` (the docs say why)
    ops: float | None = None

    @property
    def spec(self) -> Path:
        return SPECS / f"{self.name}.yaml"

    def reference(self, **kw) -> torch.nn.Module:
        return getattr(torchvision.models, self.name)(weights=None, **{**self.options, **kw})

    @property
    def meta(self) -> dict:
        return getattr(torchvision.models, self.weights).DEFAULT.meta


ZOO = [
    Family("resnet18", "ResNet18_Weights"),
    Family("resnet50", "ResNet50_Weights"),
    Family("resnext50_32x4d", "ResNeXt50_32X4D_Weights"),
    Family("wide_resnet50_2", "Wide_ResNet50_2_Weights", batch=1),
    Family("densenet121", "DenseNet121_Weights"),
    Family("vgg16_bn", "VGG16_BN_Weights", batch=1),
    Family("alexnet", "AlexNet_Weights"),
    Family("squeezenet1_1", "SqueezeNet1_1_Weights"),
    Family("mobilenet_v2", "MobileNet_V2_Weights"),
    Family("mobilenet_v3_small", "MobileNet_V3_Small_Weights"),
    Family("mobilenet_v3_large", "MobileNet_V3_Large_Weights"),
    Family("efficientnet_b0", "EfficientNet_B0_Weights"),
    Family("shufflenet_v2_x1_0", "ShuffleNet_V2_X1_0_Weights"),
    Family("mnasnet1_0", "MNASNet1_0_Weights"),
    Family("regnet_y_400mf", "RegNet_Y_400MF_Weights"),
    Family("convnext_tiny", "ConvNeXt_Tiny_Weights"),
    Family(
        "inception_v3",
        "Inception_V3_Weights",
        size=107,
        batch=1,
        options={"init_weights": False},
        small_overrides={"aux_logits": False},
        small_options={"aux_logits": False},
    ),
]
FAMILIES = {f.name: f for f in ZOO}
NAMES = list(FAMILIES)


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class _Compiled(dict):
    """Each spec at its own input size (for the figures), compiled when first asked for."""

    def __missing__(self, name: str) -> nasdsl.Compiled:
        self[name] = nasdsl.compile_spec(FAMILIES[name].spec)
        return self[name]


@pytest.fixture(scope="module")
def compiled() -> dict[str, nasdsl.Compiled]:
    return _Compiled()


def small(family: Family) -> nasdsl.Compiled:
    return nasdsl.compile_spec(family.spec, {"input.shape": [3, family.size, family.size], **family.small_overrides})


def image(family: Family, batch: int | None = None) -> torch.Tensor:
    size = (batch or family.batch, 3, family.size, family.size)
    return torch.randn(size, generator=torch.Generator().manual_seed(2))


# -- sizes against torchvision ---------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_parameter_count_matches_torchvision(name, compiled):
    family, net = FAMILIES[name], compiled[name]
    assert net.summary(with_aux=True)["totals"]["params"] == count(family.reference())
    assert net.summary(with_aux=True)["totals"]["params"] == family.meta["num_params"]


@pytest.mark.parametrize("name", NAMES)
def test_multiply_adds_match_torchvisions_documented_ops(name, compiled):
    # torchvision documents GFLOPS counted as multiply-adds of convolutions and linear layers, 3 decimals
    family = FAMILIES[name]
    macs = compiled[name].summary()["totals"]["macs"]
    assert round(macs / 1e9, 3) == (family.ops if family.ops is not None else family.meta["_ops"])


def test_inception_v3_without_aux_head_matches_torchvision_without_it(compiled):
    reference = FAMILIES["inception_v3"].reference(aux_logits=False)
    assert compiled["inception_v3"].summary()["totals"]["params"] == count(reference) == 23_834_568
    off = nasdsl.compile_spec(FAMILIES["inception_v3"].spec, {"aux_logits": False})
    assert off.summary(with_aux=True)["totals"]["params"] == count(reference)


#: the variants docs/spec-language.md gives as --set of a family spec: (spec, overrides, torchvision builder, options)
VARIANTS = [
    ("resnet18", {"blocks1": 3, "blocks2": 4, "blocks3": 6, "blocks4": 3}, "resnet34", {}),
    ("resnet50", {"blocks3": 23}, "resnet101", {}),
    ("resnet50", {"groups": 32, "width_per_group": 4}, "resnext50_32x4d", {}),
    ("resnet50", {"width_per_group": 128}, "wide_resnet50_2", {}),
    ("vgg16_bn", {"convs1": 1, "convs2": 1, "convs3": 2, "convs4": 2, "convs5": 2}, "vgg11_bn", {}),
    ("vgg16_bn", {"convs3": 4, "convs4": 4, "convs5": 4}, "vgg19_bn", {}),
    ("mnasnet1_0", {"alpha": 0.5}, "mnasnet0_5", {}),
    ("mobilenet_v3_large", {"width": 0.75}, "mobilenet_v3_large", {"width_mult": 0.75}),
    ("mobilenet_v3_small", {"width": 0.5}, "mobilenet_v3_small", {"width_mult": 0.5}),
]


@pytest.mark.parametrize(("spec", "overrides", "builder", "options"), VARIANTS, ids=lambda v: str(v))
def test_documented_variants_have_torchvisions_parameter_count(spec, overrides, builder, options):
    net = nasdsl.compile_spec(SPECS / f"{spec}.yaml", overrides)
    with torch.device("meta"):  # sizes only: nothing is allocated
        reference = getattr(torchvision.models, builder)(weights=None, **options)
    assert net.summary()["totals"]["params"] == count(reference)


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
def pair() -> Callable[[str], tuple[torch.nn.Module, torch.nn.Module, nasdsl.Compiled]]:
    """(torchvision's model with random weights, BatchNorm statistics and norm parameters,
    ours loaded strictly from its state_dict, our spec compiled at the test size), built
    once per family with the default options."""
    made: dict[str, tuple[torch.nn.Module, torch.nn.Module, nasdsl.Compiled]] = {}

    def get(name: str) -> tuple[torch.nn.Module, torch.nn.Module, nasdsl.Compiled]:
        if name not in made:
            family = FAMILIES[name]
            torch.manual_seed(0)
            reference = family.reference(**family.small_options)
            randomise(reference)
            net = small(family)
            with torch.device("meta"):  # skip our initialisation: every tensor is loaded below
                model = getattr(load_source(generate_source(net)), net.spec.name)()
            model.load_state_dict(reference.state_dict(), strict=True, assign=True)
            made[name] = reference.eval(), model.eval(), net
        return made[name]

    return get


@pytest.mark.parametrize("name", NAMES)
def test_parameter_names_are_torchvisions_in_order(name, pair):
    reference, model, _ = pair(name)
    assert list(model.state_dict()) == list(reference.state_dict())


@pytest.mark.parametrize("name", NAMES)
def test_outputs_match_torchvision_with_its_weights(name, pair):
    """Eval mode, one forward each; the largest difference relative to the largest output."""
    family = FAMILIES[name]
    reference, model, _ = pair(name)
    x = image(family)
    with torch.no_grad():
        expected, got = reference(x), model(x)
    assert isinstance(got, torch.Tensor) and got.shape == expected.shape == (family.batch, 1000)
    assert (expected - got).abs().max().item() <= 1e-5 * expected.abs().max().item()


@pytest.mark.parametrize("name", NAMES)
def test_verify_passes_with_torchvisions_weights(name, pair):
    """`nasdsl verify`'s check (ONNX Runtime against the generated model) with torchvision's tensors."""
    reference, _, net = pair(name)
    weights = {k: v.numpy() for k, v in reference.state_dict().items()}
    result = verify(net.graph, state_dict=weights, batch=1)
    assert result.ok, result


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_forward_gives_the_expected_shape(name, compiled):
    family, net = FAMILIES[name], small(FAMILIES[name])
    model = getattr(load_source(generate_source(net)), net.spec.name)(num_classes=10).eval()
    with torch.no_grad():
        out = model(image(family))
    assert isinstance(out, torch.Tensor) and out.shape == (family.batch, 10)


def test_build_model_applies_variables():
    model = build_model(FAMILIES["mobilenet_v2"].spec, width=0.5, num_classes=7)
    assert count(model) == count(torchvision.models.mobilenet_v2(width_mult=0.5, num_classes=7))
    assert model.features[0][0].out_channels == 16


def test_one_fire_class_serves_every_width(compiled):
    """SqueezeNet's Fire module reads its squeeze layer through a reference; the class takes that
    width from its argument, so one class serves the uses at 16, 32, 48 and 64 squeeze channels."""
    source = generate_source(compiled["squeezenet1_1"])
    assert source.count("class Fire(") == 1
    assert "self.expand3x3 = nn.Conv2d(squeeze_planes, expand3x3_planes, 3, padding=1)" in source
    widths = sorted({b.args[0].value for b in compiled["squeezenet1_1"].graph.graph["model"].children[0].children
                     if b.kind == "use"})  # fmt: skip
    assert widths == [16, 32, 48, 64]


def test_inception_v3_aux_head_reads_mixed_6e_in_training_only(compiled):
    """Its outputs against torchvision's, in training at 299x299, are in tests/test_inception_v3.py."""
    g = compiled["inception_v3"].graph
    aux = next(o for o in g.graph["outputs"] if o.name == "AuxLogits")
    assert aux.training_only and aux.loss_weight == 0.4
    mixed_6e = next(c.output for c in g.graph["model"].children if c.name == "Mixed_6e")
    first = next(
        n
        for n, d in g.nodes(data=True)
        if d["keypath"].startswith("templates.InceptionAux") and any(p == mixed_6e for p in g.predecessors(n))
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
    if value is None:
        return text == "null"
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
