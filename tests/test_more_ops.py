"""``pixel_shuffle``, ``pixel_unshuffle``, ``adaptive_max_pool1d/_/3d``, ``clamp``, ``softplus``,
``mish``, ``selu`` and ``log_softmax`` (nasdsl/ops/more_ops.py) against PyTorch's own modules and
functions (the independent reference): the generated model computes them exactly; ONNX Runtime's
run of the export computes them at opsets 13, 17, 18 and 21 (the adaptive windows that overlap,
a softplus threshold that cuts, Mish from 18); the summary counts no parameters (as the modules
hold none) and no multiply-adds; a model using them imports from PyTorch (modules, functions and
methods) and from torch.onnx.export's files, and nasdsl's own export reads back; bad attributes
are located errors."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from located import assert_refused_entry
from onnx import TensorProto, helper
from onnx_runs import run_ort
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import nasdsl
from nasdsl import ir
from nasdsl.backends.onnx import export_onnx
from nasdsl.backends.pytorch import generate_source, model_class
from nasdsl.cli import main as cli_main


class Fn(nn.Module):
    """A function of torch as a module (the reference of a clamp with one bound)."""

    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


@dataclass(frozen=True)
class Case:
    entry: str  # the model entry's value in the spec
    module: object  # () -> the torch module it must compute
    shape: tuple[int, ...]  # the input, batch excluded
    axes: str = ""


CASES = {
    "pixel_shuffle": Case("{op: pixel_shuffle, factor: 2}", lambda: nn.PixelShuffle(2), (8, 3, 5)),
    "pixel_shuffle_3": Case("{op: pixel_shuffle, factor: 3}", lambda: nn.PixelShuffle(3), (18, 2, 3)),
    "pixel_unshuffle": Case("{op: pixel_unshuffle, factor: 2}", lambda: nn.PixelUnshuffle(2), (3, 4, 6)),
    "adaptive_max_pool": Case("{op: adaptive_max_pool, size: [3, 2]}", lambda: nn.AdaptiveMaxPool2d((3, 2)), (3, 7, 5)),
    "adaptive_max_pool_even": Case("{op: adaptive_max_pool, size: [2, 3]}", lambda: nn.AdaptiveMaxPool2d((2, 3)),
                                   (3, 4, 6)),
    "adaptive_max_pool_to_1": Case("{op: adaptive_max_pool, size: 1}", lambda: nn.AdaptiveMaxPool2d(1), (3, 4, 6)),
    "adaptive_max_pool1d": Case("{op: adaptive_max_pool1d, size: 4}", lambda: nn.AdaptiveMaxPool1d(4), (3, 10), "CL"),
    "adaptive_max_pool3d": Case("{op: adaptive_max_pool3d, size: [2, 3, 4]}",
                                lambda: nn.AdaptiveMaxPool3d((2, 3, 4)), (2, 5, 6, 7)),
    "clamp": Case("{op: clamp, min: -0.5, max: 0.5}", lambda: nn.Hardtanh(-0.5, 0.5), (3, 4, 4)),
    "clamp_min": Case("{op: clamp, min: -0.5}", lambda: Fn(lambda x: torch.clamp(x, min=-0.5)), (3, 4, 4)),
    "clamp_max": Case("{op: clamp, max: 0.3}", lambda: Fn(lambda x: x.clamp(max=0.3)), (6,)),
    "softplus": Case("softplus", lambda: nn.Softplus(), (3, 4, 4)),
    "softplus_cut": Case("{op: softplus, beta: 2, threshold: 1.5}", lambda: nn.Softplus(2, 1.5), (3, 4, 4)),
    "mish": Case("mish", lambda: nn.Mish(), (3, 4, 4)),
    "selu": Case("selu", lambda: nn.SELU(), (5, 6), "LC"),
    "log_softmax": Case("log_softmax", lambda: nn.LogSoftmax(1), (3, 4, 4)),
    "log_softmax_last": Case("{op: log_softmax, dim: last}", lambda: nn.LogSoftmax(-1), (5, 6), "LC"),
}  # fmt: skip


def _spec(case: Case) -> str:
    axes = f", axes: {case.axes}" if case.axes else ""
    return f"name: T\ninput: {{shape: {list(case.shape)}{axes}}}\nmodel:\n  layer: {case.entry}\n"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Each case: its compiled spec, the torch reference, the generated model and an input
    (scaled by 3, so that clamps, thresholds and softplus's cut are reached)."""
    out = {}
    torch.manual_seed(0)
    for name, case in CASES.items():
        path = tmp_path_factory.mktemp(name) / "t.yaml"
        path.write_text(_spec(case))
        compiled = nasdsl.compile_spec(path)
        out[name] = (compiled, case.module(), model_class(compiled.graph)().eval(), torch.randn(2, *case.shape) * 3)
    return out


@pytest.mark.parametrize("name", CASES)
def test_the_generated_model_computes_the_torch_module_and_counts_none(built, name):
    compiled, ref, model, x = built[name]
    with torch.no_grad():
        assert torch.equal(model(x), ref(x)), name
    assert ir.node(compiled.graph, "layer").op in name
    totals = compiled.totals()
    assert totals["params"] == sum(p.numel() for p in ref.parameters()) == 0
    with FlopCounterMode(display=False) as flops:  # torch's own count: none for these ops
        ref(x)
    assert totals["macs"] == flops.get_total_flops() == 0


def test_clamp_is_hardtanh_with_both_bounds_and_torch_clamp_with_one(built):
    assert "nn.Hardtanh(-0.5, 0.5)" in generate_source(built["clamp"][0].graph)
    source = generate_source(built["clamp_min"][0].graph)
    assert "torch.clamp(x, self.low, self.high)" in source and "Clamp(-0.5, None)" in source


#: ONNX node kinds each case's export must (True) or must not (False) hold, by opset
KINDS = {
    "pixel_shuffle": lambda opset: {"DepthToSpace": True},
    "pixel_unshuffle": lambda opset: {"SpaceToDepth": False, "Transpose": True},
    "adaptive_max_pool": lambda opset: {"Gather": True, "ReduceMax": True},
    "adaptive_max_pool_even": lambda opset: {"MaxPool": True},
    "adaptive_max_pool_to_1": lambda opset: {"GlobalMaxPool": True},
    "softplus": lambda opset: {"Where": False},
    "softplus_cut": lambda opset: {"Where": True},
    "mish": lambda opset: {"Mish": opset >= 18},
    "clamp_max": lambda opset: {"Clip": True},
}


@pytest.mark.parametrize("opset", [13, 17, 18, 21])
def test_onnx_runtime_computes_the_torch_module(built, opset):
    for name, (compiled, ref, _, x) in built.items():
        proto = export_onnx(compiled.graph, opset=opset, batch=2)
        onnx.checker.check_model(proto, full_check=True)
        with torch.no_grad():
            want = ref(x).numpy()
        error = np.abs(run_ort(proto, x.numpy()) - want).max()
        assert error < 1e-5, (name, opset, error)
        present = {n.op_type for n in proto.graph.node}
        for kind, wanted in KINDS.get(name, lambda o: {})(opset).items():
            assert (kind in present) == wanted, (name, opset, kind, present)


def test_onnx_space_to_depth_is_not_torchs_pixel_unshuffle():
    """Why pixel_unshuffle is no SpaceToDepth: ONNX puts the offset in a block before the channel."""
    x = np.arange(2 * 4 * 4, dtype=np.float32).reshape(1, 2, 4, 4)
    node = helper.make_node("SpaceToDepth", ["x"], ["y"], blocksize=2)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 2, 2])])  # fmt: skip
    theirs = run_ort(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), x)
    ours = F.pixel_unshuffle(torch.from_numpy(x), 2).numpy()
    assert theirs[0, :, 0, 0].tolist() == [0, 16, 1, 17, 4, 20, 5, 21]
    assert ours[0, :, 0, 0].tolist() == [0, 1, 4, 5, 16, 17, 20, 21]


class Net(nn.Module):
    """Every new op in one model, as modules, functions and tensor methods."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.up = nn.PixelShuffle(2)
        self.down = nn.PixelUnshuffle(2)
        self.soft = nn.Softplus(2.0, 5.0)
        self.mish = nn.Mish()
        self.selu = nn.SELU()
        self.tanh = nn.Hardtanh(-1.0, 2.0)
        self.pool = nn.AdaptiveMaxPool2d((2, 3))
        self.out = nn.LogSoftmax(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.down(self.up(self.conv(x)))
        x = self.tanh(self.selu(self.mish(self.soft(x))))
        x = F.hardtanh(torch.clamp(x, max=1.5).clamp(min=-0.5), -0.7, 1.2)
        x = F.pixel_unshuffle(F.pixel_shuffle(x, 2), 2)
        x = F.selu(F.mish(F.softplus(x, beta=3.0)))
        return F.log_softmax(self.out(F.adaptive_max_pool2d(self.pool(x), 1)), 1)


#: node -> (op, attributes) as both importers read Net (the file's threshold aside: torch.onnx.export drops it)
NET_OPS = {
    "up": ("pixel_shuffle", {"factor": 2}),
    "down": ("pixel_unshuffle", {"factor": 2}),
    "soft": ("softplus", {"beta": 2.0}),
    "mish": ("mish", {}),
    "selu": ("selu", {}),
    "tanh": ("clamp", {"min": -1.0, "max": 2.0}),
    "out": ("log_softmax", {}),
}


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(1)
    return Net().eval()


def _ops(graph) -> list[str]:
    return [d.op for _, d in ir.nodes(graph) if d.op != "input"]


def _read_as(graph, name: str, op: str, attrs: dict) -> None:
    data = ir.node(graph, name)
    assert data.op == op, (name, data.op)
    for key, value in attrs.items():
        assert data.attrs[key] == pytest.approx(value), (name, key)


#: the ops of Net in order, as both importers read it (torch.onnx.export writes the pool as a MaxPool)
NET_ORDER = ["conv2d", "pixel_shuffle", "pixel_unshuffle", "softplus", "mish", "selu", "clamp", "clamp", "clamp",
             "clamp", "pixel_shuffle", "pixel_unshuffle", "softplus", "mish", "selu", "POOL", "POOL", "log_softmax",
             "log_softmax"]  # fmt: skip


def test_import_from_pytorch_reads_every_op_and_computes_the_module(net):
    result = nasdsl.import_model(net, input_shape=(3, 8, 12), weights=True)
    graph = result.compiled.graph
    for name, (op, attrs) in NET_OPS.items():
        _read_as(graph, name, op, attrs)
    _read_as(graph, "soft", "softplus", {"threshold": 5.0})
    _read_as(graph, "pool", "adaptive_max_pool", {"size": (2, 3)})
    assert [d.attrs["size"] for _, d in ir.nodes(graph) if d.op == "adaptive_max_pool"] == [(2, 3), (1, 1)]
    assert _ops(graph) == [op.replace("POOL", "adaptive_max_pool") for op in NET_ORDER]
    clamps = [d.attrs for _, d in ir.nodes(graph) if d.op == "clamp"]
    assert [(a["min"], a["max"]) for a in clamps] == [(-1.0, 2.0), (None, 1.5), (-0.5, None), (-0.7, 1.2)]
    model = nasdsl.build_model(result.compiled, weights=result.weights).eval()
    model.load_state_dict(net.state_dict(), strict=True)
    x = torch.randn(2, 3, 8, 12) * 3
    with torch.no_grad():
        assert torch.equal(model(x), net(x))


@pytest.mark.parametrize("opset", [13, 17, 18])
def test_import_of_torch_onnx_export_files_agrees_with_onnx_runtime(net, tmp_path, opset):
    x = torch.randn(1, 3, 8, 12) * 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (x,), tmp_path / "m.onnx", dynamo=False, opset_version=opset)
    proto = onnx.load(tmp_path / "m.onnx")
    result = nasdsl.import_model(proto, weights=True)
    graph = result.compiled.graph
    for name, (op, attrs) in NET_OPS.items():
        _read_as(graph, name, op, attrs)
    assert _ops(graph) == [op.replace("POOL", "max_pool") for op in NET_ORDER]
    model = nasdsl.build_model(result.compiled, weights=result.weights).eval()
    with torch.no_grad():
        got = model(x).numpy()
    assert np.abs(run_ort(proto, x.numpy()) - got).max() < 1e-5


BACK = """\
name: Back
input: {shape: [8, 4, 6]}
model:
  up: {op: pixel_shuffle, factor: 2}
  down: {op: pixel_unshuffle, factor: 2}
  soft: {op: softplus, beta: 2, threshold: 1.5}
  mish: mish
  low: {op: clamp, min: -0.25}
  pool: {op: adaptive_max_pool, size: [3, 4]}
  flat: {op: flatten, start: 1}
  pool1d: {op: adaptive_max_pool1d, size: 1}
  out: {op: log_softmax, dim: 0}
"""


@pytest.mark.parametrize("opset", [13, 18])
def test_nasdsls_own_export_reads_back(tmp_path, opset):
    """The forms only nasdsl's export writes: softplus's threshold as a Where, Mish's own node
    (18), adaptive windows that overlap (a Gather and a ReduceMax per axis, each read as the
    pooling of its axis), a GlobalMaxPool of a (C, L) map, a clamp with a lower bound alone."""
    (tmp_path / "b.yaml").write_text(BACK)
    compiled = nasdsl.compile_spec(tmp_path / "b.yaml")
    proto = export_onnx(compiled.graph, opset=opset)
    result = nasdsl.import_model(proto, weights=True)
    graph = result.compiled.graph
    wanted = ["pixel_shuffle", "pixel_unshuffle", "softplus", "mish", "clamp", "adaptive_max_pool"]
    assert _ops(graph) == [*wanted, "adaptive_max_pool", "flatten", "adaptive_max_pool1d", "log_softmax"]
    pools = [d.attrs["size"] for _, d in ir.nodes(graph) if d.op == "adaptive_max_pool"]
    assert pools == [(3, 6), (3, 4)]  # the height's windows, then the width's
    (soft,) = [d.attrs for _, d in ir.nodes(graph) if d.op == "softplus"]
    assert (soft["beta"], soft["threshold"]) == (2.0, 1.5)
    x = torch.randn(1, 8, 4, 6) * 3
    with torch.no_grad():
        want = model_class(compiled.graph)().eval()(x).numpy()
        got = nasdsl.build_model(result.compiled, weights=result.weights).eval()(x).numpy()
    assert np.abs(got - want).max() < 1e-5


BAD = [
    ("clamp", [3, 4, 4], "4:10: error: model.layer: expected min, max or both for clamp, got neither"),
    ("{op: clamp, min: null, max: null}", [3, 4, 4],
     "4:10: error: model.layer: expected min, max or both for clamp, got neither"),
    ("{op: clamp, min: 1, max: 0.5}", [3, 4, 4], "4:35: error: model.layer.max: expected a max above min 1.0, got 0.5"),
    ("{op: clamp, min: .inf}", [3, 4, 4],
     "4:27: error: model.layer.min: expected a number from -1000000.0 to 1000000.0, or null, got inf"),
    ("{op: pixel_shuffle, factor: 2}", [6, 4, 4],
     "4:10: error: model.layer: expected channels divisible by factor^2 = 4, got a (C, H, W) map 6x4x4"),
    ("{op: pixel_unshuffle, factor: 3}", [2, 6, 4], "4:10: error: model.layer: expected a height and width "
     "divisible by the factor 3, got a (C, H, W) map 2x6x4"),
    ("{op: pixel_shuffle, factor: 0}", [4, 4, 4],
     "4:38: error: model.layer.factor: expected an integer > 0, got 0"),
    ("{op: pixel_shuffle, factor: 1}", [4, 6], "4:10: error: model.layer: expected a feature map (C, H, W) as the "
     "input of pixel_shuffle, got tokens (L, C) 4x6"),
    ("{op: softplus, beta: 0}", [3, 4, 4], "4:31: error: model.layer.beta: expected a number > 0, got 0"),
    ("{op: log_softmax, dim: 3}", [3, 4, 4], "4:10: error: model.layer: expected an axis from -3 to 2 of a "
     "(C, H, W) map 3x4x4, got 3"),
    ("{op: adaptive_max_pool3d, size: [1, 2]}", [3, 4, 4, 4],
     "4:42: error: model.layer.size: expected an integer or [t, h, w], got a list of 2"),
]  # fmt: skip


@pytest.mark.parametrize(("entry", "shape", "said"), BAD, ids=lambda v: v if isinstance(v, str) and "{" in v else "")
def test_bad_attributes_are_located_errors(tmp_path, capsys, entry, shape, said):
    assert_refused_entry(tmp_path, capsys, entry, shape, said)


#: pad's modes: (mode, input, pads as the spec writes them)
PAD_CASES = [
    ("reflect", (3, 4, 5), [[1, 2], [3, 1]]),
    ("replicate", (3, 6), [[2, 3]]),
    ("circular", (2, 3, 4, 5), [[1, 0], [2, 1], [0, 3]]),
    ("reflect", (3, 4, 5), [[1, 1], [3, 0], [2, 4]]),  # every axis, the channels too
]


@pytest.mark.parametrize(("mode", "shape", "pads"), PAD_CASES)
def test_pad_modes_against_f_pad_and_onnx_runtime(tmp_path, capsys, mode, shape, pads):
    axes = ", axes: CL" if len(shape) == 2 else ""
    path = tmp_path / "p.yaml"
    path.write_text(f"name: P\ninput: {{shape: {list(shape)}{axes}}}\nmodel:\n  layer: {{op: pad, pads: {pads}, "
                    f"mode: {mode}}}\n")  # fmt: skip
    compiled = nasdsl.compile_spec(path)
    x = torch.randn(2, *shape)
    want = F.pad(x, [w for pair in reversed(pads) for w in pair], mode=mode)
    with torch.no_grad():
        assert torch.equal(model_class(compiled.graph)()(x), want)
    for opset in (13, 17, 18, 21):
        if mode == "circular" and opset < 19:  # ONNX's Pad wraps from opset 19
            out = tmp_path / "p.onnx"
            assert cli_main(["compile", str(path), "-o", str(out), "--opset", str(opset)]) == 2
            assert capsys.readouterr().err.strip() == (
                f"{path}:4:10: error: model.layer.mode: the ONNX backend cannot lower pad mode circular (node "
                f"layer) at opset {opset}: ONNX's Pad wraps around from opset 19; export at opset 19 or later"
            )
            assert not out.exists()
            continue
        proto = export_onnx(compiled.graph, opset=opset, batch=2)
        assert np.abs(run_ort(proto, x.numpy()) - want.numpy()).max() == 0.0, (mode, opset)
    back = nasdsl.import_model(export_onnx(compiled.graph, opset=21), weights=True).compiled.graph
    assert [(d.attrs["mode"], [list(p) for p in d.attrs["pads"]]) for _, d in ir.nodes(back) if d.op == "pad"] == [
        (mode, pads)
    ]


class Padded(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.reflect = nn.ReflectionPad2d((1, 2, 0, 1))
        self.edge = nn.ReplicationPad1d(2)
        self.wrap = nn.CircularPad2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.wrap(self.reflect(x))
        x = F.pad(x, (1, 0, 0, 2), mode="replicate")
        return self.edge(x.flatten(2))


def test_pad_modes_import_from_pytorch():
    net = Padded()
    result = nasdsl.import_model(net, input_shape=(2, 4, 5), weights=True)
    pads = [(d.attrs["mode"], d.attrs["pads"]) for _, d in ir.nodes(result.compiled.graph) if d.op == "pad"]
    assert pads == [("reflect", ((0, 1), (1, 2))), ("circular", ((1, 1), (1, 1))), ("replicate", ((0, 2), (1, 0))),
                    ("replicate", ((2, 2),))]  # fmt: skip
    x = torch.randn(2, 2, 4, 5)
    with torch.no_grad():
        assert torch.equal(nasdsl.build_model(result.compiled).eval()(x), net(x))


BAD_PADS = [
    ("{op: pad, pads: [[1, 1]], value: 1, mode: reflect}", [3, 4, 4],
     "4:43: error: model.layer.value: expected no value with mode reflect (its border comes from the input), got 1.0"),
    ("{op: pad, pads: [[1, 1], [4, 0]], mode: reflect}", [3, 4, 4],
     "4:10: error: model.layer: expected pads below the side 4 of axis 2 with mode reflect, got [4, 0]"),
    ("{op: pad, pads: [[1, 1]], mode: circular}", [3, 4, 4], "4:10: error: model.layer: expected mode circular to "
     "pad every axis but the first of a (C, H, W) map 3x4x4, got 1 pairs (PyTorch pads at most one axis fewer than "
     "its input's after the batch so)"),
    ("{op: pad, pads: [[1, 1]], mode: mirror}", [3, 4, 4],
     "4:42: error: model.layer.mode: unknown name 'mirror'"),
]  # fmt: skip


@pytest.mark.parametrize(("entry", "shape", "said"), BAD_PADS, ids=["value", "too-wide", "too-few", "typo"])
def test_bad_pad_modes_are_located_errors(tmp_path, capsys, entry, shape, said):
    test_bad_attributes_are_located_errors(tmp_path, capsys, entry, shape, said)


PAD_TEMPLATE = """\
nasdsl: 1
name: Uses
outputs_by_name: true
input: {shape: [3, 6], axes: CL}
templates:
  T:
    params: [p]
    body:
      x: {op: pad, pads: p, mode: replicate}
model:
  a: {use: T, args: [[[1, 2], [0, 3]]]}
  b: {use: T, args: [[[2, 1]]], from: in}
outputs:
  oa: {from: a}
  ob: {from: b}
"""


def test_a_template_parameter_gives_a_pad_of_a_mode_its_pairs(tmp_path):
    """One class serves both uses (their pads as its argument, F.pad's mode in it: the channels
    and the length padded at one, the length alone at the other) and computes F.pad."""
    (tmp_path / "t.yaml").write_text(PAD_TEMPLATE)
    compiled = nasdsl.compile_spec(tmp_path / "t.yaml")
    source = generate_source(compiled.graph)
    assert source.count("class T(") == 1 and "return F.pad(x, self.padding, mode=self.mode)" in source
    x = torch.randn(2, 3, 6)
    with torch.no_grad():
        out = model_class(compiled.graph)().eval()(x)
    assert torch.equal(out["oa"], F.pad(x, [0, 3, 1, 2], mode="replicate"))
    assert torch.equal(out["ob"], F.pad(x, [2, 1], mode="replicate"))


@pytest.mark.parametrize(
    ("op", "attrs", "out", "group", "work"),
    [
        ("softplus", {"beta": 1.0, "threshold": 20.0}, (16, 8, 8), "transcendental", 1024),
        ("mish", {}, (16, 8, 8), "transcendental", 1024),
        ("selu", {}, (16, 8, 8), "transcendental", 1024),
        ("log_softmax", {"dim": 0}, (16, 8, 8), "norm", 1024),
        ("clamp", {"min": 0.0, "max": 1.0}, (16, 8, 8), "elementwise", 1024),
        ("pixel_shuffle", {"factor": 2}, (4, 16, 16), "permute_nd", 1024),
        ("pixel_unshuffle", {"factor": 2}, (64, 4, 4), "permute_nd", 1024),
        # every value read once into its window's maximum, as a global average pooling reads them
        ("adaptive_max_pool", {"size": [2, 2]}, (16, 2, 2), "gap", 1024),
    ],
)
def test_the_latency_model_prices_the_new_ops_by_their_kind(op, attrs, out, group, work):
    """Not the element-wise fallback where the op is something else: the transcendental
    activations, a per-sample normalisation, a reorder of several axes, a pooling."""
    from nasdsl.bench import latency

    found = latency.features(op, attrs, ((16, 8, 8),), out, 0, "")
    assert found == ((group, work, 16 * 8 * 8 + math.prod(out), 0),)
