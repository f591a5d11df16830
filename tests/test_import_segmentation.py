"""``nasdsl import`` of models that return their outputs by name: torchvision's FCN (its
classes, on a ResNet-18 backbone to stay small) returns a dict, and so must the generated model
(``outputs_by_name: true``), its keys in the source's order and its values torchvision's, the
upsampling back to the input (``F.interpolate``) included. The reference is torchvision's model
itself, run in eval with the same tensors."""

from __future__ import annotations

import io
import warnings

import onnx
import pytest
import torch
import torch.nn.functional as F
import torchvision
import yaml
from onnx import TensorProto, helper
from onnx_runs import agreement
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.segmentation.fcn import FCN, FCNHead

import nasdsl
from nasdsl.importer import import_model

from reference_models import generated_with_weights, randomise


def small_fcn() -> torch.nn.Module:
    """torchvision's FCN as ``fcn_resnet50(aux_loss=True)`` assembles it, on a ResNet-18 backbone:
    the auxiliary head reads the backbone's layer3."""
    layers = {"layer4": "out", "layer3": "aux"}
    backbone = IntermediateLayerGetter(torchvision.models.resnet18(weights=None), return_layers=layers)
    return FCN(backbone, FCNHead(512, 3), FCNHead(256, 3))


class TwoHeads(torch.nn.Module):
    """A model of one's own returning two named outputs, not in alphabetical order, one of them
    upsampled by a scale factor."""

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.ReLU())
        self.seg = torch.nn.Conv2d(8, 4, 1)
        self.edges = torch.nn.Conv2d(8, 1, 1)

    def forward(self, x):
        f = self.body(x)
        seg = F.interpolate(self.seg(f), scale_factor=2.0, mode="bilinear", align_corners=False)
        return {"seg": seg, "edges": torch.sigmoid(self.edges(f))}


def _agrees(reference: torch.nn.Module, result, size: int) -> None:
    torch.manual_seed(0)
    randomise(reference)
    reference.eval()
    ours = generated_with_weights(result.compiled, reference)
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected, got = reference(x), ours(x)
    assert isinstance(expected, dict)
    assert list(got._fields) == list(expected)
    for name, value in expected.items():
        assert got[name].shape == value.shape, name
        assert torch.allclose(got[name], value, rtol=1e-5, atol=1e-5 * value.abs().max().item()), name


@pytest.fixture(scope="module")
def fcn():
    return import_model(small_fcn, input_shape=(3, 32, 32))


def test_fcn_returns_its_dict_by_name_as_torchvisions(fcn):
    spec = yaml.safe_load(fcn.text)
    assert spec["outputs_by_name"] is True
    assert list(spec["outputs"]) == ["out", "aux"]
    # back to the input's size, as torchvision's F.interpolate(x, size=input_shape) at the traced size
    assert spec["model"]["interpolate"] == {"op": "interpolate", "size": [32, 32], "mode": "bilinear"}
    # the backbone is written inline, so that the auxiliary head can read its layer3
    assert list(spec["model"]["backbone"]) == [
        "conv1",
        "bn1",
        "relu",
        "maxpool",
        "layer1",
        "layer2",
        "layer3",
        "layer4",
    ]
    assert spec["model"]["aux_classifier"]["from"] == "backbone.layer3"
    torch.manual_seed(0)
    _agrees(small_fcn(), fcn, 32)


def test_a_dict_of_two_outputs_keeps_its_order():
    result = import_model(TwoHeads, input_shape=(3, 16, 16))
    spec = yaml.safe_load(result.text)
    assert spec["outputs_by_name"] is True
    assert list(spec["outputs"]) == ["seg", "edges"]
    assert spec["model"]["interpolate"] == {"op": "interpolate", "scale": 2.0, "mode": "bilinear"}
    torch.manual_seed(0)
    _agrees(TwoHeads(), result, 16)


def small_lraspp() -> torch.nn.Module:
    """torchvision's LRASPP and LRASPPHead, as ``lraspp_mobilenet_v3_large`` assembles them, on a
    backbone of three strided convolutions (``low`` the first, ``high`` the last)."""
    from torchvision.models.segmentation.lraspp import LRASPP

    def conv(c_in: int, c_out: int) -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), torch.nn.ReLU())

    features = torch.nn.Sequential(conv(3, 8), conv(8, 16), conv(16, 32))
    backbone = IntermediateLayerGetter(features, return_layers={"0": "low", "2": "high"})
    return LRASPP(backbone, 8, 32, 3, inter_channels=16)


def test_lraspp_whose_head_reads_two_of_the_backbones_values():
    """LR-ASPP's head reads the backbone's output and its first row: the head and the backbone
    are written inline, the head's entries reading by paths from the model (as
    specs/lraspp_mobilenet_v3_large.yaml does), and the model is torchvision's."""
    result = import_model(small_lraspp, input_shape=(3, 32, 32))
    head = yaml.safe_load(result.text)["model"]["classifier"]
    assert head["scale"]["from"] == "backbone"
    assert head["low_classifier"]["from"] == "backbone.0"
    assert head["high_classifier"]["from"] == "classifier.interpolate"
    assert head["residual"] == {"add": [{"ref": "classifier.low_classifier"}, {"ref": "classifier.high_classifier"}]}
    torch.manual_seed(0)
    _agrees(small_lraspp(), result, 32)


class _Getter(torch.nn.Module):
    """Two stages returned by name, as torchvision's IntermediateLayerGetter returns its layers;
    ``residual``: the second stage's output adds the first's, ``skip``: adds the input (its
    entries read out of turn)."""

    def __init__(self, residual: bool = False, skip: bool = False, channels: int = 8):
        super().__init__()
        self.residual, self.skip = residual, skip
        self.first = torch.nn.Sequential(torch.nn.Conv2d(channels, 8, 3, padding=1), torch.nn.ReLU())
        self.second = torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU())

    def forward(self, x):
        a = self.first(x)
        b = self.second(a)
        if self.skip:
            b = b + x
        return {"first": a, "second": b + a if self.residual else b}


class _GetterFirst(torch.nn.Module):
    """The getter as the model's first entry, its second stage adding its input and its first."""

    def __init__(self):
        super().__init__()
        self.getter = _Getter(residual=True, skip=True)
        self.side = torch.nn.Conv2d(8, 2, 1)

    def forward(self, x):
        found = self.getter(x)
        return {"out": found["second"], "side": self.side(found["first"])}


class _Fuse(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.image = torch.nn.Conv2d(3, 4, 1)
        self.features = torch.nn.Conv2d(8, 4, 1)

    def forward(self, x, f):
        return self.image(x) + self.features(f)


class _FusedHead(torch.nn.Module):
    """A head reading the model's input and the stem's output."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU())
        self.fuse = _Fuse()

    def forward(self, x):
        return {"out": self.fuse(x, self.stem(x))}


def test_an_entry_reading_the_models_input_and_another_value():
    """Written inline, the head's entries read by paths from the model: the model's input as
    ``in``, the stem by its name, its own entries under its name."""
    result = import_model(_FusedHead, input_shape=(3, 8, 8))
    fuse = yaml.safe_load(result.text)["model"]["fuse"]
    assert fuse["from"] == "in"
    assert fuse["seq"]["features"]["from"] == "stem"
    assert fuse["seq"]["residual"] == {"add": [{"ref": "fuse.image"}, {"ref": "fuse.features"}]}
    torch.manual_seed(0)
    _agrees(_FusedHead(), result, 8)


class _TwoGetters(torch.nn.Module):
    def __init__(self, count: int, residual: bool = False):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 8, 1)
        self.getters = torch.nn.ModuleList(_Getter(residual) for _ in range(count))
        self.head = torch.nn.Conv2d(8, 2, 1)
        self.side = torch.nn.Conv2d(8, 2, 1)

    def forward(self, x):
        x = self.stem(x)
        for getter in self.getters:
            found = getter(x)
            x = found["second"]
        return {"out": self.head(x), "side": self.side(found["first"])}


def test_an_entry_read_inside_is_written_inline_once():
    """A later entry reading a block inside a model entry: the entry is written inline and the
    block read by its path; where it cannot be (its class has two instances; its entries read
    out of turn in a list of the model, which the PyTorch backend cannot write), the import
    says so, naming it."""
    result = import_model(lambda: _TwoGetters(1), input_shape=(3, 8, 8))
    assert yaml.safe_load(result.text)["model"]["side"]["from"] == "getters.0.first"
    torch.manual_seed(0)
    _agrees(_TwoGetters(1), result, 8)
    with pytest.raises(
        nasdsl.importer.ImportFailure, match=r"getters\.1\.first inside getters\.1, and its class has 2"
    ):
        import_model(lambda: _TwoGetters(2), input_shape=(3, 8, 8))
    with pytest.raises(
        nasdsl.importer.ImportFailure, match=r"getters\.0 \(_Getter\): later entries read getters\.0\.first"
    ):
        import_model(lambda: _TwoGetters(1, residual=True), input_shape=(3, 8, 8))
    with pytest.raises(
        nasdsl.importer.ImportFailure, match=r"getter \(_Getter\): later entries read getter\.first inside"
    ):
        import_model(_GetterFirst, input_shape=(8, 8, 8))


class _Returns(torch.nn.Module):
    def __init__(self, key: str = "out", **resize):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 1)
        self.key, self.resize = key, resize

    def forward(self, x):
        y = self.conv(x)
        return {self.key: F.interpolate(y, **self.resize) if self.resize else y}


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (
            lambda: _Returns("my-out"),
            r"returns a dict with the key 'my-out': a spec's output is named by an identifier",
        ),
        (lambda: _Returns("class"), r"returns a dict with the key 'class': a spec's output is named by an identifier"),
        (lambda: _Returns(scale_factor=2.0, mode="bicubic"), r"mode 'bicubic' of a 2-D map: the spec's interpolate"),
        (
            lambda: _Returns(size=(16, 16), mode="bilinear", antialias=True),
            r"antialias=True: the spec's interpolate does not filter",
        ),
        (
            lambda: _Returns(scale_factor=(2.3, 3.0)),
            r"scale factors \[2.3, 3.0\]: the spec's interpolate takes one scale, and the sizes \[18, 24\]",
        ),
    ],
)
def test_what_the_spec_cannot_say_is_a_located_error(model, message):
    with pytest.raises(nasdsl.importer.ImportFailure, match=message) as info:
        import_model(model, input_shape=(3, 8, 8))
    # an op is located at the line that calls it; the dict is the forward's
    assert ("test_import_segmentation.py:" in str(info.value)) != ("the forward returns" in str(info.value))


# -- ONNX -------------------------------------------------------------------------------------


def test_fcn_from_torch_onnx_export_agrees_under_onnx_runtime():
    """The same FCN through torch.onnx.export: its Resize back to the input's size is
    ``interpolate`` (PyTorch's bilinear, ``pytorch_half_pixel``), the backbone inline for the
    auxiliary head, and the import's export with the file's tensors agrees with the file."""
    torch.manual_seed(0)
    model = small_fcn()
    randomise(model)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (torch.randn(1, 3, 32, 32),), buf, dynamo=False, opset_version=17)
    proto = onnx.load_from_string(buf.getvalue())
    result = import_model(proto, weights=True)
    model_entries = yaml.safe_load(result.text)["model"]
    resized = [v for v in model_entries.values() if isinstance(v, dict) and v.get("op") == "interpolate"]
    assert resized == [{"op": "interpolate", "size": [32, 32], "mode": "bilinear"}] * 2
    assert model_entries["aux_classifier"]["from"] == "backbone.layer3"
    assert agreement(proto, result) <= 1e-5


def _resize_file(**attrs) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 16, 16])
    scales = helper.make_tensor("scales", TensorProto.FLOAT, [4], [1.0, 1.0, 2.0, 2.0])
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], name="up", **attrs)
    graph = helper.make_graph([node], "g", [x], [y], initializer=[scales])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_an_onnx_resize_is_read_as_pytorch_computes_it_or_refused():
    """A Resize by a scale of 2 in PyTorch's nearest (asymmetric coordinates, rounded down) is
    ``interpolate`` by that scale, and agrees under ONNX Runtime; a cubic one, or nearest
    rounded otherwise, is an error naming the node."""
    proto = _resize_file(mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    result = import_model(proto, weights=True)
    assert list(yaml.safe_load(result.text)["model"].values()) == [{"op": "interpolate", "scale": 2.0}]
    assert agreement(proto, result) <= 1e-6
    for attrs, found in (
        ({"mode": "cubic"}, "a Resize in mode cubic with half_pixel coordinates"),
        ({"mode": "nearest"}, "a Resize in mode nearest with half_pixel coordinates rounded round_prefer_floor"),
    ):
        with pytest.raises(nasdsl.importer.ImportFailure) as info:
            import_model(_resize_file(**attrs))
        assert info.value.format().startswith(f"<onnx model>: graph.node[0] 'up' (Resize): error: {found}: ")


def small_deeplab() -> torch.nn.Module:
    """torchvision's DeepLabV3 and DeepLabHead (ASPP, ASPPConv, ASPPPooling), as
    ``deeplabv3_resnet50`` assembles them, on a ResNet-18 backbone."""
    from torchvision.models.segmentation.deeplabv3 import DeepLabHead, DeepLabV3

    backbone = IntermediateLayerGetter(torchvision.models.resnet18(weights=None), return_layers={"layer4": "out"})
    return DeepLabV3(backbone, DeepLabHead(512, 3))


def test_deeplab_whose_pyramid_is_a_list_of_branches_joined():
    """DeepLabV3's ASPP runs a ModuleList of five branches on one map and joins them in its
    forward: the join moves into the list, which is then one block of branches (as
    specs/deeplabv3_resnet50.yaml writes it); ASPPPooling, an nn.Sequential whose forward
    resizes after its numbered layers, is a list whose last item is the resize."""
    result = import_model(small_deeplab, input_shape=(3, 64, 64))
    templates = yaml.safe_load(result.text)["templates"]
    branches = templates["ASPP"]["body"]["convs"]["concat"]
    kinds = ["list" if isinstance(b, list) else b if isinstance(b, str) else b["use"] for b in branches]
    assert kinds == ["list", "ASPPConv", "ASPPConv", "ASPPConv", "ASPPPooling"]
    assert [b["args"] for b in branches[1:4]] == [12, 24, 36]  # torchvision's atrous rates
    assert templates["ASPPPooling"]["body"][-1] == {"op": "interpolate", "size": [2, 2], "mode": "bilinear"}
    torch.manual_seed(0)
    _agrees(small_deeplab(), result, 64)


def test_torchvision_segmentation_names_import_with_torchvisions_documented_counts():
    """``torchvision:NAME`` takes torchvision's segmentation models too, built untrained
    (backbone included) at their weights' 520x520: LR-ASPP has the parameters and multiply-adds
    torchvision documents for its weights, and returns its dict by name."""
    result = import_model("torchvision:lraspp_mobilenet_v3_large")
    meta = torchvision.models.get_model_weights("lraspp_mobilenet_v3_large").DEFAULT.meta
    assert result.report.params == meta["num_params"] == 3_221_538
    assert round(result.report.macs / 1e9, 3) == meta["_ops"]
    spec = yaml.safe_load(result.text)
    assert spec["input"]["shape"] == [3, 520, 520] and spec["outputs_by_name"] is True
    with pytest.raises(nasdsl.importer.ImportFailure, match="no classification or segmentation model 'fcn_resnet49'"):
        import_model("torchvision:fcn_resnet49")
