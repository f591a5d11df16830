"""torchvision's classification zoo written as specs: for each model, the parameter
count, the multiply-adds of torchvision's documented figures, the parameter names (a
randomly initialised torchvision model's state_dict loads strictly, in order), the
eval outputs (within 1e-5 relative) and `nasdsl verify`; and the examples of
docs/spec-language.md, which must compile and build, and which the page must quote
exactly."""

from __future__ import annotations

import functools
import math
import re
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import torchvision

import nasdsl
from nasdsl import build_model, ir
from nasdsl.backends.pytorch import generate_source, load_source
from nasdsl.backends.verify import verify
from nasdsl.cli import main as cli_main
from nasdsl.ops import OPS, REQUIRED, SPEC_OPS

from paths import ROOT, SPECS
from reference_models import assert_module_for_module, randomise, without_initialisation

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
    #: whether `nasdsl verify` runs on it (VGG-16 without BatchNorm: vgg16_bn runs the same ops,
    #: and a second export of 138M parameters to ONNX Runtime costs 12 s of the suite;
    #: EfficientNetV2-M: the ops of EfficientNetV2-S)
    verify: bool = True
    #: whether the initialisation is compared with torchvision's (VGG-16: vgg16_bn's rules, which
    #: it extends, for the same convolutions and linear layers; 138M parameters drawn twice)
    init_check: bool = True

    @property
    def spec(self) -> Path:
        return SPECS / f"{self.name}.yaml"

    def reference(self, **kw) -> torch.nn.Module:
        return torchvision.models.get_model(self.name, weights=None, **{**self.options, **kw})

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
    Family("vgg16", "VGG16_Weights", batch=1, verify=False, init_check=False),
    Family("alexnet", "AlexNet_Weights"),
    Family("squeezenet1_1", "SqueezeNet1_1_Weights"),
    Family("squeezenet1_0", "SqueezeNet1_0_Weights"),
    Family("mobilenet_v2", "MobileNet_V2_Weights"),
    Family("mobilenet_v3_small", "MobileNet_V3_Small_Weights"),
    Family("mobilenet_v3_large", "MobileNet_V3_Large_Weights"),
    Family("efficientnet_b0", "EfficientNet_B0_Weights"),
    Family("efficientnet_v2_s", "EfficientNet_V2_S_Weights"),
    Family("efficientnet_v2_m", "EfficientNet_V2_M_Weights", batch=1, verify=False),
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
    reference = _torchvision_on_meta(name, **family.options)  # sizes only: nothing allocated or initialised
    assert net.summary(with_aux=True)["totals"]["params"] == count(reference)
    assert net.summary(with_aux=True)["totals"]["params"] == family.meta["num_params"]


@pytest.mark.parametrize("name", NAMES)
def test_multiply_adds_match_torchvisions_documented_ops(name, compiled):
    # torchvision documents GFLOPS counted as multiply-adds of convolutions and linear layers, 3 decimals
    family = FAMILIES[name]
    macs = compiled[name].summary()["totals"]["macs"]
    assert round(macs / 1e9, 3) == (family.ops if family.ops is not None else family.meta["_ops"])


def _agree_in_distribution(ours: torch.Tensor, theirs: torch.Tensor) -> bool:
    """Whether two independently drawn tensors come from the same initialisation: equal where
    torchvision's is a constant; else standard deviations within 15% and means within 0.2 of
    it, and for large tensors kurtoses within 0.5 (which tells a uniform draw, 1.8, from a
    normal one of the same spread, 3)."""
    # the elements are drawn independently: the first 65,536 say as much as all of them
    a, b = (t.detach().flatten()[:65536].double() for t in (theirs, ours))
    if a.numel() > 1 and a.std() == 0:
        return bool((b == a).all())
    if a.numel() < 1024:  # too few for the spread to say much: PyTorch's small default biases
        return True
    sa, sb = a.std().item(), b.std().item()
    close = 0.85 < sb / sa < 1.18 and abs(a.mean().item() - b.mean().item()) < 0.2 * sa
    if a.numel() >= 4096:
        kurtosis = [(((t - t.mean()) / t.std()) ** 4).mean().item() for t in (a, b)]
        close = close and abs(kurtosis[0] - kurtosis[1]) < 0.5
    return close


@pytest.mark.parametrize("name", [n for n in NAMES if FAMILIES[n].init_check])
def test_initialisation_is_torchvisions_in_distribution(name, compiled):
    """reset_parameters against torchvision's own initialisation, parameter by parameter: the
    spec's init rules and the layers' own (SqueezeNet's last convolution, Inception-v3's
    auxiliary fc) give every tensor torchvision's distribution, fan_in or fan_out included."""
    family = FAMILIES[name]
    torch.manual_seed(0)
    reference = family.reference(**({"init_weights": True} if "init_weights" in family.options else {}))
    torch.manual_seed(1)
    ours = dict(build_model(compiled[name]).named_parameters())
    differ = [k for k, t in reference.named_parameters() if not _agree_in_distribution(ours[k], t)]
    assert differ == []


@pytest.mark.parametrize(("name", "bound"), [("mnasnet1_0", math.sqrt(3 / 10)), ("efficientnet_b0", 1 / math.sqrt(10))])
def test_classifier_initialisation_follows_the_number_of_classes(name, bound):
    """The classifiers' bounds follow num_classes, as torchvision's do: MNASNet's is He-uniform
    for a sigmoid on fan_out (sqrt(3 / 10) for 10 classes), EfficientNet's 1 / sqrt(fan_out)."""
    torch.manual_seed(0)
    reference = getattr(torchvision.models, name)(num_classes=10).classifier[1].weight
    ours = build_model(small(FAMILIES[name]), num_classes=10).classifier[1].weight
    assert _agree_in_distribution(ours, reference)
    assert bound * 0.99 < ours.abs().max().item() <= bound


def test_inception_v3_without_aux_head_matches_torchvision_without_it(compiled):
    reference = FAMILIES["inception_v3"].reference(aux_logits=False)
    assert compiled["inception_v3"].summary()["totals"]["params"] == count(reference) == 23_834_568
    off = nasdsl.compile_spec(FAMILIES["inception_v3"].spec, {"aux_logits": False})
    assert off.summary(with_aux=True)["totals"]["params"] == count(reference)


def _regnet(widths, depths, group_width, se=True) -> dict:
    """The --set of regnet_y_400mf.yaml for another RegNet: torchvision's stage widths, depths
    and group width (what its BlockParams.from_init_params computes), and whether it has SE."""
    sets = {f"w{k}": w for k, w in enumerate(widths, 1)} | {f"d{k}": d for k, d in enumerate(depths, 1)}
    return sets | {"group_width": group_width} | ({} if se else {"se": False})


def _efficientnet(width, depth, dropout, tf_norm=False) -> dict:
    """The --set of efficientnet_b0.yaml for B1-B7: torchvision's width and depth multipliers,
    dropout, and for B5-B7 BatchNorm with eps 0.001 and momentum 0.01."""
    sets = {"width": width, "depth": depth, "dropout": dropout}
    return sets | ({"bn_eps": 0.001, "bn_momentum": 0.01} if tf_norm else {})


def _convnext(widths, depths, drop) -> dict:
    sets = {f"c{k}": c for k, c in enumerate(widths, 1)} | {f"d{k}": d for k, d in enumerate(depths, 1)}
    return sets | {"stochastic_depth_prob": drop}


def _vit(hidden_dim, mlp_dim, num_heads, num_layers, patch_size) -> dict:
    return {
        "hidden_dim": hidden_dim,
        "mlp_dim": mlp_dim,
        "num_heads": num_heads,
        "num_layers": num_layers,
        "patch_size": patch_size,
    }


#: every other model of torchvision's classification and video modules that a --set of a spec writes
#: (the convolutional networks, the ViTs, Swin and Swin3D), with its spec and --set;
#: docs/spec-language.md lists the same table
VARIANTS = {
    "resnet34": ("resnet18", {"blocks1": 3, "blocks2": 4, "blocks3": 6, "blocks4": 3}),
    "resnet101": ("resnet50", {"blocks3": 23}),
    "resnet152": ("resnet50", {"blocks2": 8, "blocks3": 36}),
    "fcn_resnet101": ("fcn_resnet50", {"blocks3": 23}),
    "deeplabv3_resnet101": ("deeplabv3_resnet50", {"blocks3": 23}),
    "resnext101_32x8d": ("resnet50", {"groups": 32, "width_per_group": 8, "blocks3": 23}),
    "resnext101_64x4d": ("resnet50", {"groups": 64, "width_per_group": 4, "blocks3": 23}),
    "wide_resnet101_2": ("resnet50", {"width_per_group": 128, "blocks3": 23}),
    "vgg11": ("vgg16", {"convs1": 1, "convs2": 1, "convs3": 2, "convs4": 2, "convs5": 2}),
    "vgg13": ("vgg16", {"convs1": 2, "convs2": 2, "convs3": 2, "convs4": 2, "convs5": 2}),
    "vgg19": ("vgg16", {"convs3": 4, "convs4": 4, "convs5": 4}),
    "vgg11_bn": ("vgg16_bn", {"convs1": 1, "convs2": 1, "convs3": 2, "convs4": 2, "convs5": 2}),
    "vgg13_bn": ("vgg16_bn", {"convs1": 2, "convs2": 2, "convs3": 2, "convs4": 2, "convs5": 2}),
    "vgg19_bn": ("vgg16_bn", {"convs3": 4, "convs4": 4, "convs5": 4}),
    "densenet161": ("densenet121", {"growth_rate": 48, "num_init_features": 96, "layers3": 36, "layers4": 24}),
    "densenet169": ("densenet121", {"layers3": 32, "layers4": 32}),
    "densenet201": ("densenet121", {"layers3": 48, "layers4": 32}),
    "efficientnet_b1": ("efficientnet_b0", _efficientnet(1.0, 1.1, 0.2)),
    "efficientnet_b2": ("efficientnet_b0", _efficientnet(1.1, 1.2, 0.3)),
    "efficientnet_b3": ("efficientnet_b0", _efficientnet(1.2, 1.4, 0.3)),
    "efficientnet_b4": ("efficientnet_b0", _efficientnet(1.4, 1.8, 0.4)),
    "efficientnet_b5": ("efficientnet_b0", _efficientnet(1.6, 2.2, 0.4, tf_norm=True)),
    "efficientnet_b6": ("efficientnet_b0", _efficientnet(1.8, 2.6, 0.5, tf_norm=True)),
    "efficientnet_b7": ("efficientnet_b0", _efficientnet(2.0, 3.1, 0.5, tf_norm=True)),
    "efficientnet_v2_l": (
        "efficientnet_v2_m",
        {f"w{k}": w for k, w in enumerate([32, 64, 96, 192, 224, 384, 640], 1)}
        | {f"n{k}": n for k, n in enumerate([4, 7, 7, 10, 19, 25, 7], 1)}
        | {"dropout": 0.4},
    ),
    "mnasnet0_5": ("mnasnet1_0", {"alpha": 0.5}),
    "mnasnet0_75": ("mnasnet1_0", {"alpha": 0.75}),
    "mnasnet1_3": ("mnasnet1_0", {"alpha": 1.3}),
    "shufflenet_v2_x0_5": (
        "shufflenet_v2_x1_0",
        {"stage2_channels": 48, "stage3_channels": 96, "stage4_channels": 192},
    ),
    "shufflenet_v2_x1_5": (
        "shufflenet_v2_x1_0",
        {"stage2_channels": 176, "stage3_channels": 352, "stage4_channels": 704},
    ),
    "shufflenet_v2_x2_0": (
        "shufflenet_v2_x1_0",
        {"stage2_channels": 244, "stage3_channels": 488, "stage4_channels": 976, "conv5_channels": 2048},
    ),
    "regnet_y_800mf": ("regnet_y_400mf", _regnet([64, 144, 320, 784], [1, 3, 8, 2], 16)),
    "regnet_y_1_6gf": ("regnet_y_400mf", _regnet([48, 120, 336, 888], [2, 6, 17, 2], 24)),
    "regnet_y_3_2gf": ("regnet_y_400mf", _regnet([72, 216, 576, 1512], [2, 5, 13, 1], 24)),
    "regnet_y_8gf": ("regnet_y_400mf", _regnet([224, 448, 896, 2016], [2, 4, 10, 1], 56)),
    "regnet_y_16gf": ("regnet_y_400mf", _regnet([224, 448, 1232, 3024], [2, 4, 11, 1], 112)),
    "regnet_y_32gf": ("regnet_y_400mf", _regnet([232, 696, 1392, 3712], [2, 5, 12, 1], 232)),
    "regnet_y_128gf": ("regnet_y_400mf", _regnet([528, 1056, 2904, 7392], [2, 7, 17, 1], 264)),
    "regnet_x_400mf": ("regnet_y_400mf", _regnet([32, 64, 160, 400], [1, 2, 7, 12], 16, se=False)),
    "regnet_x_800mf": ("regnet_y_400mf", _regnet([64, 128, 288, 672], [1, 3, 7, 5], 16, se=False)),
    "regnet_x_1_6gf": ("regnet_y_400mf", _regnet([72, 168, 408, 912], [2, 4, 10, 2], 24, se=False)),
    "regnet_x_3_2gf": ("regnet_y_400mf", _regnet([96, 192, 432, 1008], [2, 6, 15, 2], 48, se=False)),
    "regnet_x_8gf": ("regnet_y_400mf", _regnet([80, 240, 720, 1920], [2, 5, 15, 1], 120, se=False)),
    "regnet_x_16gf": ("regnet_y_400mf", _regnet([256, 512, 896, 2048], [2, 6, 13, 1], 128, se=False)),
    "regnet_x_32gf": ("regnet_y_400mf", _regnet([336, 672, 1344, 2520], [2, 7, 13, 1], 168, se=False)),
    "convnext_small": ("convnext_tiny", _convnext([96, 192, 384, 768], [3, 3, 27, 3], 0.4)),
    "convnext_base": ("convnext_tiny", _convnext([128, 256, 512, 1024], [3, 3, 27, 3], 0.5)),
    "convnext_large": ("convnext_tiny", _convnext([192, 384, 768, 1536], [3, 3, 27, 3], 0.5)),
    "vit_b_32": ("vit_b_16", {"patch_size": 32}),
    "vit_l_16": ("vit_b_16", _vit(1024, 4096, 16, 24, 16)),
    "vit_l_32": ("vit_b_16", _vit(1024, 4096, 16, 24, 32)),
    "vit_h_14": ("vit_b_16", _vit(1280, 5120, 16, 32, 14) | {"image_size": 518}),
    "swin_s": ("swin_t", {"depth3": 18, "stochastic_depth_prob": 0.3}),
    "swin_b": (
        "swin_t",
        {"embed_dim": 128, "heads1": 4, "heads2": 8, "heads3": 16, "heads4": 32, "depth3": 18}
        | {"stochastic_depth_prob": 0.5},
    ),
    "swin3d_s": ("swin3d_t", {"depth3": 18}),
    "swin3d_b": (
        "swin3d_t",
        {"embed_dim": 128, "heads1": 4, "heads2": 8, "heads3": 16, "heads4": 32, "depth3": 18},
    ),
}
#: the models of torchvision's classification, segmentation and video modules that no spec writes
#: yet: each leaves this set when its spec or --set lands (none now: every one is written)
NOT_YET_WRITTEN: set[str] = set()
#: written elsewhere than this file's tables: GoogLeNet by specs/googlenet_bn.yaml (test_pytorch.py),
#: ViT-B/16 and R3D-18 by their specs (test_any_rank.py), MaxViT-T by its spec (test_maxvit.py), the
#: segmentation models by theirs (test_segmentation.py), MC3-18, R(2+1)D-18 and S3D by theirs
#: (test_video.py), Swin-T, Swin-V2 (its three sizes, one spec) and Swin3D-T by
#: theirs (test_swin.py), MViT by theirs (test_mvit.py)
WRITTEN_ELSEWHERE = {
    *("googlenet", "vit_b_16", "r3d_18", "maxvit_t"),
    *("fcn_resnet50", "deeplabv3_resnet50", "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large"),
    *("mc3_18", "r2plus1d_18", "s3d"),
    *("swin_t", "swin_v2_t", "swin_v2_s", "swin_v2_b", "swin3d_t"),
    *("mvit_v2_s", "mvit_v1_b"),
}


def test_every_torchvision_model_is_a_spec_or_a_variant():
    """A model that torchvision adds to its classification, segmentation or video module shows
    up here until a spec or a --set writes it, and one that lands must leave NOT_YET_WRITTEN."""
    models = torchvision.models
    listed = {n for module in (models, models.segmentation, models.video) for n in models.list_models(module=module)}
    written = {*NAMES, *VARIANTS, *WRITTEN_ELSEWHERE}
    missing = listed - written
    assert missing == NOT_YET_WRITTEN, {
        "new": sorted(missing - NOT_YET_WRITTEN),
        "landed": sorted(NOT_YET_WRITTEN - missing),
    }
    assert written <= listed, sorted(written - listed)


def test_the_language_page_lists_every_variant_with_its_sets():
    """docs/spec-language.md's table, row by row: model, spec, and the --set values as YAML reads them."""
    import yaml

    rows = re.findall(r"^\| (\w+) \| `(\w+)\.yaml` \| `([^`]*)` \|$", LANGUAGE_PAGE.read_text(), re.M)
    listed = {
        model: (spec, {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in sets.split())})
        for model, spec, sets in rows
    }
    assert listed == VARIANTS


def _builder_options(builder: str) -> dict:
    """The options that make torchvision's builder give the model its default weights describe:
    a segmentation model with its auxiliary head where it has one (``aux_loss``, which the
    weights' figures count), and no backbone weights to download."""
    if builder not in torchvision.models.list_models(module=torchvision.models.segmentation):
        return {}
    return {"weights_backbone": None, **({} if builder.startswith("lraspp") else {"aux_loss": True})}


def _torchvision_on_meta(builder: str, **options) -> torch.nn.Module:
    """torchvision's model with tensors of the right sizes and no data (its initialisation skipped:
    it would fill nothing). RegNet's builders compute their stage widths with tensors, which must
    hold values: on the CPU."""
    from torchvision.models import regnet

    options = {**_builder_options(builder), **options}
    with torch.device("meta"), without_initialisation():
        if not builder.startswith("regnet"):
            return torchvision.models.get_model(builder, weights=None, **options)
        compute = regnet.BlockParams.from_init_params.__func__

        def on_cpu(cls, *args, **kwargs):
            with torch.device("cpu"):
                return compute(cls, *args, **kwargs)

        regnet.BlockParams.from_init_params = classmethod(on_cpu)
        try:
            return torchvision.models.get_model(builder, weights=None, **options)
        finally:
            regnet.BlockParams.from_init_params = classmethod(compute)


def _default_weights(builder: str):
    """torchvision's default weights of a model: their documented figures (``meta``: ``num_params``,
    ``_ops``) and the input size they were measured at (the crop of their ``transforms``)."""
    return torchvision.models.get_model_weights(builder).DEFAULT


def _sized_by_weights(builder: str, size: int) -> dict:
    """The options that torchvision's builder sets from its weights when it loads them, to build
    the same model without them: a ViT's position embedding is as long as its weights' input
    has patches (``image_size``: 518 for vit_h_14's default weights, 224 without weights)."""
    module = torchvision.models.get_model_builder(builder).__module__
    return {"image_size": size} if module == "torchvision.models.vision_transformer" else {}


@functools.cache
def _input_shape(spec: str) -> list:
    """A spec's input shape as it is written by default (a video's frames included)."""
    default = nasdsl.compile_spec(SPECS / f"{spec}.yaml").graph
    return list(ir.node(default, ir.info(default).input).shape)


@pytest.mark.parametrize("builder", sorted(VARIANTS))
def test_variant_is_torchvisions_model_module_for_module(builder):
    """On the meta device (sizes, no data): the state_dict's names in torchvision's order and
    their shapes; every module that holds tensors the same class with the same settings
    (``extra_repr``: kernel, stride, padding, groups, eps, momentum...); every dropout and
    stochastic depth rate; and the parameter count and GFLOPS documented with torchvision's
    default weights, at their input size."""
    spec, overrides = VARIANTS[builder]
    weights = _default_weights(builder)
    # a classifier's or a video's center crop, a segmentation model's resize
    transforms = weights.transforms()
    *_, size = getattr(transforms, "crop_size", None) or transforms.resize_size
    # the spec's input with the weights' height and width (a video's frames as the spec has them)
    shape = _input_shape(spec)
    net = nasdsl.compile_spec(SPECS / f"{spec}.yaml", {**overrides, "input.shape": [*shape[:-2], size, size]})
    reference = _torchvision_on_meta(builder, **_sized_by_weights(builder, size))
    with torch.device("meta"), without_initialisation():
        model = getattr(load_source(generate_source(net)), net.spec.name)()
    assert_module_for_module(model, reference)
    figures = net.summary()["totals"]
    assert figures["params"] == count(reference) == weights.meta["num_params"]
    assert round(figures["macs"] / 1e9, 3) == weights.meta["_ops"]


@pytest.mark.parametrize(("spec", "width"), [("mobilenet_v3_large", 0.75), ("mobilenet_v3_small", 0.5)])
def test_mobilenet_v3_width_multiplier_matches_torchvision(spec, width):
    net = nasdsl.compile_spec(SPECS / f"{spec}.yaml", {"width": width})
    with torch.device("meta"):  # sizes only: nothing is allocated
        reference = getattr(torchvision.models, spec)(weights=None, width_mult=width)
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
            with torch.device("meta"), without_initialisation():  # every tensor is loaded below
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


@pytest.mark.parametrize("name", [n for n in NAMES if FAMILIES[n].verify])
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
    widths = sorted({b.args[0].value for b in ir.info(compiled["squeezenet1_1"].graph).model.children[0].children
                     if b.kind == "use"})  # fmt: skip
    assert widths == [16, 32, 48, 64]


def test_inception_v3_aux_head_reads_mixed_6e_in_training_only(compiled):
    """Its outputs against torchvision's, in training at 299x299, are in tests/test_inception_v3.py."""
    g = compiled["inception_v3"].graph
    aux = next(o for o in ir.info(g).outputs if o.name == "AuxLogits")
    assert aux.training_only and aux.loss_weight == 0.4
    mixed_6e = next(c.output for c in ir.info(g).model.children if c.name == "Mixed_6e")
    first = next(
        n
        for n, d in ir.nodes(g)
        if d.keypath.startswith("templates.InceptionAux") and any(p == mixed_6e for p in g.predecessors(n))
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
    assert tuple(main.shape) == (2, *ir.node(net.graph, ir.info(net.graph).outputs[0].node).shape)
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
        return len(set(value)) == 1 and _same_default(text, value[0])
    if isinstance(value, (int, float)):
        try:
            return float(text) == value
        except ValueError:
            return False
    return text == value


def test_op_table_matches_the_op_registry():
    table = _op_table(LANGUAGE_PAGE)
    assert list(table) == list(SPEC_OPS)
    for name in SPEC_OPS:
        op = OPS[name]
        shown = table[name]
        assert list(shown) == [a.name for a in op.attrs], name
        for a in op.attrs:
            if a.default is REQUIRED:
                assert shown[a.name] == "", f"{name}.{a.name} is required"
            elif callable(a.default):
                assert shown[a.name] == "kernel", f"{name}.{a.name} defaults to the kernel"
            else:
                assert _same_default(shown[a.name], a.default), f"{name}.{a.name}: {shown[a.name]} != {a.default}"
