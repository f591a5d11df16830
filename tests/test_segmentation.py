"""torchvision's segmentation models as specs (issue 22), and what the language needed for them:
outputs and `from:` that read a block nested in a model entry, dilated convolutions, a map
resized to another value's size (`interpolate_like`) and ASPP's pooled value broadcast back over
the map. The 101-layer models are `--set`s of these specs, checked with the other variants in
test_families.py."""

from __future__ import annotations

import pytest
import torch
import torchvision

import nasdsl
from nasdsl.backends.onnx import export_onnx
from nasdsl.backends.pytorch import generate_source, load_source
from nasdsl.backends.verify import verify
from nasdsl.cli import main
from nasdsl.errors import CodegenError

from paths import ROOT, SPECS
from reference_models import assert_module_for_module, randomise

#: torchvision's builder -> the spec that writes it
WRITTEN = {
    "fcn_resnet50": "fcn_resnet50",
    "deeplabv3_resnet50": "deeplabv3_resnet50",
    "deeplabv3_mobilenet_v3_large": "deeplabv3_mobilenet_v3_large",
    "lraspp_mobilenet_v3_large": "lraspp_mobilenet_v3_large",
}
#: the models compared with torchvision's forward, at the smallest input their maps allow here
FORWARD = {"fcn_resnet50": 32, "deeplabv3_mobilenet_v3_large": 64, "lraspp_mobilenet_v3_large": 64}
#: the builders compared with torchvision's forward, with the auxiliary head or without (None: the
#: model has none)
COMPARED = [
    ("fcn_resnet50", True),
    ("deeplabv3_mobilenet_v3_large", True),
    ("deeplabv3_mobilenet_v3_large", False),
    ("lraspp_mobilenet_v3_large", None),
]


def _options(builder: str, aux: bool | None = True) -> dict:
    """What gives the model its default weights' figures: the auxiliary head where the model has
    one (torchvision's builders leave it out unless weights are given), no backbone weights."""
    return {"weights_backbone": None, **({} if builder.startswith("lraspp") else {"aux_loss": aux})}


def _ours(net: nasdsl.Compiled, device: str = "cpu") -> torch.nn.Module:
    with torch.device(device):
        return getattr(load_source(generate_source(net)), net.spec.name)()


@pytest.mark.parametrize("builder", sorted(WRITTEN))
def test_spec_is_torchvisions_model_module_for_module(builder):
    """On the meta device: state_dict names in torchvision's order with its shapes; every module
    holding tensors of torchvision's class with its settings (``extra_repr``: dilation, padding,
    eps...); every dropout rate; the parameters and the GFLOPS documented with the default
    weights, at their 520x520 input (auxiliary head included: the figures count it)."""
    weights = torchvision.models.get_model_weights(builder).DEFAULT
    (size,) = weights.transforms().resize_size
    net = nasdsl.compile_spec(SPECS / f"{WRITTEN[builder]}.yaml", {"input.shape": [3, size, size]})
    with torch.device("meta"):
        reference = torchvision.models.get_model(builder, weights=None, **_options(builder))
    model = _ours(net, "meta")
    assert_module_for_module(model, reference)
    totals = net.summary()["totals"]
    assert totals["params"] == sum(p.numel() for p in reference.parameters()) == weights.meta["num_params"]
    assert round(totals["macs"] / 1e9, 3) == weights.meta["_ops"]


@pytest.fixture(scope="module")
def pair():
    """(torchvision's model with random weights and statistics, ours loaded strictly from its
    state_dict, our spec compiled at the test size), in eval mode, once per model."""
    made = {}

    def get(builder: str, aux: bool | None = True):
        if (builder, aux) not in made:
            torch.manual_seed(0)
            reference = torchvision.models.get_model(builder, weights=None, **_options(builder, aux))
            randomise(reference)
            size = FORWARD[builder]
            sets = {"input.shape": [3, size, size], **({"aux_loss": aux} if aux is not None else {})}
            net = nasdsl.compile_spec(SPECS / f"{WRITTEN[builder]}.yaml", sets)
            model = _ours(net, "meta")  # every tensor is loaded below
            model.load_state_dict(reference.state_dict(), strict=True, assign=True)
            made[builder, aux] = reference.eval(), model.eval(), net
        return made[builder, aux]

    return get


@pytest.mark.parametrize(("builder", "aux"), COMPARED, ids=[f"{b}-aux={a}" for b, a in COMPARED])
def test_outputs_match_torchvision_with_its_weights(builder, aux, pair):
    """Every output, by name and in order (torchvision's dict: `out`, and `aux` where there is
    an auxiliary head), read as torchvision's are (`outputs["aux"]`), within 1e-5 of the largest
    value; `out` alone (LR-ASPP, or without the auxiliary head) is returned by name too, as
    torchvision returns it, not as a bare tensor."""
    reference, model, _ = pair(builder, aux)
    size = FORWARD[builder]
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    # subnormal floats (below 1.2e-38) are read as zero by both models: with them the CPU runs these
    # forwards fifty times slower, and they are far below the tolerance
    flush = torch.set_flush_denormal(True)
    try:
        with torch.no_grad():
            expected, got = reference(x), model(x)
    finally:
        torch.set_flush_denormal(False) if flush else None
    # a NamedTuple, read by name as torchvision's dict is
    assert isinstance(expected, dict) and not isinstance(got, torch.Tensor)
    assert list(got._fields) == list(expected) == (["out", "aux"] if aux else ["out"])
    for name, value in expected.items():
        assert got[name].shape == value.shape == (2, 21, size, size), name
        assert (value - got[name]).abs().max().item() <= 1e-5 * value.abs().max().item(), name


def test_verify_passes_with_torchvisions_weights(pair):
    """ONNX Runtime (opset 17) against the generated model with torchvision's tensors: LR-ASPP
    resizes twice (to the low map's size, to the input's) and reads two backbone values."""
    reference, _, net = pair("lraspp_mobilenet_v3_large", None)
    weights = {k: v.numpy() for k, v in reference.state_dict().items()}
    result = verify(net.graph, state_dict=weights, batch=1, opset=17)
    assert result.ok, result


# -- the language features, on small specs ------------------------------------------------

NESTED = """
nasdsl: 1
name: Nested
input:
  shape: [3, 20, 20]
templates:
  Pooled:
    doc: The map's mean per channel through a 1x1 convolution, broadcast back to the map's size.
    params: [out]
    body:
      - {op: adaptive_avg_pool, size: 1}
      - {op: conv2d, out: out, kernel: 1}
      - relu
      - {interpolate_like: [identity, {ref: in}], mode: bilinear}
model:
  body:
    stem: {op: conv2d, out: 8, kernel: 3, stride: 2, padding: 1}
    inner:
      - {op: conv2d, out: 8, kernel: 3, padding: 2, dilation: 2}
      - relu
      - {use: Pooled, args: [8]}
    last: {op: conv2d, out: 4, kernel: 3, padding: 1}
  head: {op: conv2d, out: 2, kernel: 1}
  side: {op: conv2d, out: 2, kernel: 1, from: body.inner.1}
  side_up: {interpolate_like: [{ref: side}, {ref: in}], mode: bilinear}
outputs:
  main: {from: head}
  stem: {from: body.stem}
  dilated: {from: body.inner.0, head: {op: conv2d, out: 3, kernel: 1}}
  side: {from: side_up}
"""


def _compile(tmp_path, text: str, name: str = "spec.yaml") -> nasdsl.Compiled:
    path = tmp_path / name
    path.write_text(text)
    return nasdsl.compile_spec(path)


def test_outputs_and_from_read_blocks_nested_in_an_entry(tmp_path):
    """Outputs that read a block nested in an entry (`body.stem`, `body.inner.0` with a head) and
    an entry that reads one (`from: body.inner.1`): the names stay the spec's (`body.inner.0`),
    the forward runs the entry block by block, and ONNX Runtime agrees on every output."""
    net = _compile(tmp_path, NESTED)
    model = _ours(net).eval()
    assert [k for k in model.state_dict() if k.endswith("weight")] == [
        "body.stem.weight",
        "body.inner.0.weight",
        "body.inner.2.1.weight",
        "body.last.weight",
        "head.weight",
        "side.weight",
        "dilated.weight",
    ]
    x = torch.randn(2, 3, 20, 20)
    with torch.no_grad():
        got = model(x)
        stem = model.body.stem(x)
        dilated = model.body.inner[0](stem)
        side = model.side(torch.relu(dilated))
    assert torch.equal(got.stem, stem)
    assert torch.equal(got.dilated, model.dilated(dilated))
    expected_side = torch.nn.functional.interpolate(side, size=(20, 20), mode="bilinear", align_corners=False)
    assert torch.allclose(got.side, expected_side, rtol=0, atol=1e-6)
    result = verify(net.graph, batch=2, opset=17)
    assert result.ok and [c.name for c in result.checks] == ["main", "stem", "dilated", "side"], result


def test_nested_reads_train_and_survive_the_inference_rewrites(tmp_path):
    """In training every parameter gets a gradient through the outputs read inside `body`; the
    inference graph after the CPU rewrites (BatchNorm-free here, so the weights carry over as
    they are) computes every output the training model does."""
    from nasdsl.optimize import optimize

    net = _compile(tmp_path, NESTED)
    model = _ours(net).train()
    outputs = model(torch.randn(2, 3, 20, 20))
    sum(o.float().mean() for o in outputs).backward()
    assert all(p.grad is not None for p in model.parameters())
    inference = load_source(generate_source(optimize(net, "cpu"))).NestedInference
    fast = inference.from_training_state_dict(model.state_dict()).eval()
    x = torch.randn(2, 3, 20, 20)
    with torch.no_grad():
        expected, got = model.eval()(x), fast(x)
    for name in expected._fields:
        assert torch.allclose(getattr(got, name), getattr(expected, name), rtol=1e-5, atol=1e-6), name


def test_pooled_value_is_broadcast_over_the_map(tmp_path):
    """The `Pooled` template (torchvision's ASPPPooling): an nn.Sequential whose forward resizes
    its 1x1 result to its input's size; every position holds the channel's value."""
    model = _ours(_compile(tmp_path, NESTED)).eval()
    pooled = model.body.inner[2]
    assert isinstance(pooled, torch.nn.Sequential) and len(pooled) == 3
    x = torch.randn(2, 8, 10, 10)
    with torch.no_grad():
        y = pooled(x)
        value = torch.relu(pooled[1](x.mean((2, 3), keepdim=True)))
    assert y.shape == (2, 8, 10, 10)
    assert torch.allclose(y, value.expand_as(y), rtol=0, atol=1e-6)


@pytest.mark.parametrize(("dilation", "stride", "size"), [(2, 1, 17), (3, 2, 17), (6, 1, 13)])
def test_dilated_convolution_shape_and_multiply_adds(tmp_path, dilation, stride, size):
    """A dilated convolution's output size is torch's; its multiply-adds are one per weight
    and output position, as an undilated one's (the window has as many taps)."""
    text = (
        f"nasdsl: 1\nname: Dilated\ninput:\n  shape: [4, {size}, {size}]\nmodel:\n"
        f"  conv: {{op: conv2d, out: 6, kernel: 3, stride: {stride}, padding: {dilation}, dilation: {dilation}}}\n"
    )
    net = _compile(tmp_path, text)
    conv = torch.nn.Conv2d(4, 6, 3, stride=stride, padding=dilation, dilation=dilation)
    out = conv(torch.zeros(1, 4, size, size)).shape[1:]
    (row,) = net.summary()["rows"]
    assert tuple(row["output"]) == tuple(out)
    assert row["macs"] == out.numel() * 4 * 9


@pytest.mark.parametrize(
    ("spec", "sets", "options", "last"),
    [
        ("resnet50", {"dilate3": True, "dilate4": True}, {"replace_stride_with_dilation": [False, True, True]}, 28),
        ("resnet50", {"dilate2": True}, {"replace_stride_with_dilation": [True, False, False]}, 14),
        ("mobilenet_v3_large", {"dilated": True}, {"dilated": True}, 14),
    ],
)
def test_classification_spec_dilates_as_torchvision(spec, sets, options, last):
    """The dilation variables of the classification specs are torchvision's options
    (``replace_stride_with_dilation``, MobileNetV3's ``dilated``), convolution for convolution
    (``extra_repr``: stride, padding, dilation), and the last map keeps the size they say."""
    net = nasdsl.compile_spec(SPECS / f"{spec}.yaml", sets)
    with torch.device("meta"):
        reference = torchvision.models.get_model(spec, weights=None, **options)
    model = _ours(net, "meta")
    modules = dict(model.named_modules())
    convs = [(p, m) for p, m in reference.named_modules() if isinstance(m, torch.nn.Conv2d)]
    assert [p for p, _ in convs] == [p for p, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    for path, module in convs:
        assert modules[path].extra_repr() == module.extra_repr(), path
    rows = net.summary()["rows"]
    assert [r for r in rows if r["name"] in ("layer4", "features")][0]["output"][1:] == [last, last]


@pytest.mark.parametrize(
    "replace",
    [
        ("stem: {from: body.stem}", "stem: {from: body.inner.2.1}"),  # inside a use inside an entry
        ("  head: {op: conv2d, out: 2, kernel: 1}\n", "  head: {use: Pooled, args: [4]}\n"),  # a use as an entry
    ],
)
def test_a_value_inside_a_template_use_is_refused_with_its_location(tmp_path, replace):
    """A template's class returns its result alone: an output of a block inside it is refused."""
    text = NESTED.replace(*replace)
    if "use: Pooled, args: [4]" in text:
        text = text.replace("stem: {from: body.stem}", "stem: {from: head.1}")
    net = _compile(tmp_path, text)
    with pytest.raises(CodegenError) as info:
        generate_source(net)
    message = str(info.value)
    assert "spec.yaml:" in message and "Pooled's class returns its result alone" in message, message


def test_a_list_that_reads_its_input_before_its_last_item_is_refused(tmp_path):
    """Only merges after all the modules of a list body may read the body's input."""
    text = NESTED.replace(
        "      - relu\n      - {interpolate_like: [identity, {ref: in}], mode: bilinear}\n",
        "      - {interpolate_like: [identity, {ref: in}], mode: bilinear}\n      - relu\n",
    )
    net = _compile(tmp_path, text)
    with pytest.raises(CodegenError) as info:
        generate_source(net)
    message = str(info.value)
    assert "spec.yaml:" in message and "templates.Pooled" in message and "after all its other items" in message


def test_the_language_page_says_what_detection_would_need():
    page = (ROOT / "docs" / "spec-language.md").read_text()
    assert "non-maximum suppression" in page and "keypoint" in page and "optical flow" in page


BY_NAME = """\
nasdsl: 1
name: ByName
input: {shape: [3, 8, 8]}
outputs_by_name: true
model:
  conv: {op: conv2d, out: 4, kernel: 1}
"""


def test_outputs_by_name_returns_one_output_by_name(tmp_path, capsys):
    """`outputs_by_name: true`: the one output comes back in the outputs NamedTuple, read by
    position, attribute or name, in training and at inference, and `loss` reads it there; the ONNX
    graph's output keeps its name. Anything but true or false is a located error."""
    path = tmp_path / "by_name.yaml"
    path.write_text(BY_NAME)
    model = nasdsl.build_model(path)
    x, target = torch.randn(2, 3, 8, 8), torch.randint(0, 4, (2, 8, 8))
    for training in (True, False):
        got = model.train(training)(x)
        assert type(got).__name__ == "ByNameOutputs" and got._fields == ("out",)
        assert torch.equal(got["out"], got.out) and torch.equal(got[0], got.out)
        assert torch.equal(got.out, torch.nn.functional.conv2d(x, model.conv.weight, model.conv.bias))
    assert torch.equal(model.loss(got, target), torch.nn.functional.cross_entropy(got.out, target))
    net = nasdsl.compile_spec(path)
    assert [o.name for o in export_onnx(net.graph, opset=17).graph.output] == ["out"]
    assert verify(net.graph, batch=1, opset=17).ok
    path.write_text(BY_NAME.replace("outputs_by_name: true", "outputs_by_name: 1"))
    assert main(["check", str(path)]) == 2
    assert capsys.readouterr().err == f"{path}:4:18: error: outputs_by_name: expected true or false, got 1\n"
