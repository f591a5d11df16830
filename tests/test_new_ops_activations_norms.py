"""``leaky_relu``, ``elu``, ``prelu``, ``group_norm`` and ``instance_norm`` against PyTorch's own
modules (``nn.LeakyReLU``, ``nn.ELU``, ``nn.PReLU``, ``nn.GroupNorm``, ``nn.InstanceNorm1d/2d/3d``,
the independent reference) holding random weights: the generated model loads the module's
state_dict strictly and computes its outputs, in training and at inference; ONNX Runtime's run
of the export computes them at opsets 13, 17, 18 and 21 (where GroupNorm's lowering differs);
parameter counts and the initial weights are the module's; a model using them imports from
PyTorch and from torch.onnx.export's files (``--check``); weights transfer by channel; bad
attributes are located errors."""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from located import assert_refused_entry
from onnx_runs import run_ort
from torch import nn

import nasdsl
from nasdsl import ir
from nasdsl.backends.onnx import export_onnx
from nasdsl.backends.pytorch import model_class
from nasdsl.cli import main as cli_main
from nasdsl.weights import initial_weights


@dataclass(frozen=True)
class Case:
    entry: str  # the model entry's value in the spec
    module: object  # () -> the torch module it must compute
    shape: tuple[int, ...]  # the input, batch excluded
    axes: str = ""  # the input's axes where not its rank's default (CL: a 1-D map, not tokens)


CASES = {
    "leaky_relu": Case("{op: leaky_relu, negative_slope: 0.2}", lambda: nn.LeakyReLU(0.2), (8, 6, 5)),
    "leaky_relu_default": Case("leaky_relu", lambda: nn.LeakyReLU(), (8, 6, 5)),
    "elu": Case("{op: elu, alpha: 0.5}", lambda: nn.ELU(0.5), (8, 6, 5)),
    "elu_tokens": Case("elu", lambda: nn.ELU(), (7, 8)),
    "prelu": Case("prelu", lambda: nn.PReLU(8), (8, 6, 5)),
    "prelu_features": Case("{op: prelu, init: 0.1}", lambda: nn.PReLU(8, init=0.1), (8,)),
    "prelu_shared": Case("{op: prelu, per_channel: false}", lambda: nn.PReLU(), (8, 6, 5)),
    "group_norm": Case("{op: group_norm, groups: 4}", lambda: nn.GroupNorm(4, 8), (8, 6, 5)),
    "group_norm_3d": Case(
        "{op: group_norm, groups: 2, eps: 0.001, affine: false}",
        lambda: nn.GroupNorm(2, 8, eps=0.001, affine=False),
        (8, 3, 4, 5),
    ),
    "group_norm_1d": Case("{op: group_norm, groups: 8}", lambda: nn.GroupNorm(8, 8), (8, 12), "CL"),
    "instance_norm": Case("instance_norm", lambda: nn.InstanceNorm2d(8), (8, 6, 5)),
    "instance_norm_1d": Case(
        "{op: instance_norm, affine: true}", lambda: nn.InstanceNorm1d(8, affine=True), (8, 12), "CL"
    ),
    "instance_norm_3d": Case(
        "{op: instance_norm, affine: true, track_running_stats: true, momentum: 0.2}",
        lambda: nn.InstanceNorm3d(8, affine=True, track_running_stats=True, momentum=0.2),
        (8, 3, 4, 5),
    ),
}


class Ref(nn.Module):
    """The torch module under the name the spec gives it (``layer``)."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


def _spec(case: Case) -> str:
    axes = f", axes: {case.axes}" if case.axes else ""
    return f"name: T\ninput: {{shape: {list(case.shape)}{axes}}}\nmodel:\n  layer: {case.entry}\n"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Each case: its compiled spec, the torch reference with random weights, and the generated
    model holding the reference's state_dict (loaded strictly)."""
    out = {}
    torch.manual_seed(0)
    for name, case in CASES.items():
        path = tmp_path_factory.mktemp(name) / "t.yaml"
        path.write_text(_spec(case))
        compiled = nasdsl.compile_spec(path)
        ref = Ref(case.module())
        with torch.no_grad():
            for p in ref.parameters():
                p.normal_()
            for key, b in ref.named_buffers():
                if key.endswith("running_mean"):
                    b.normal_()
                elif key.endswith("running_var"):
                    b.uniform_(0.5, 2.0)
        model = model_class(compiled.graph)()
        model.load_state_dict(ref.state_dict(), strict=True)
        out[name] = (compiled, ref, model)
    return out


@pytest.mark.parametrize("name", CASES)
def test_the_generated_model_computes_the_torch_module(built, name):
    compiled, ref, model = built[name]
    x = torch.randn(3, *CASES[name].shape)
    for train in (True, False):  # training: instance statistics, and the running ones updated alike
        ref.train(train)
        model.train(train)
        with torch.no_grad():
            assert torch.equal(model(x), ref(x)), name
    for key, value in ref.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    assert str(ir.node(compiled.graph, "layer").op) in name


@pytest.mark.parametrize("name", CASES)
def test_parameters_and_initial_weights_are_the_modules(built, name):
    compiled, _, _ = built[name]
    fresh = CASES[name].module()
    assert compiled.totals()["params"] == sum(p.numel() for p in fresh.parameters())
    assert compiled.totals()["macs"] == 0  # element-wise ops and norms count none (docs/spec-language.md)
    drawn = initial_weights(compiled.graph)
    assert sorted(drawn) == sorted(f"layer.{k}" for k in fresh.state_dict())
    for key, value in fresh.state_dict().items():  # PReLU's 0.25 (or init), the norms' ones and zeros
        np.testing.assert_array_equal(drawn[f"layer.{key}"], value.numpy())


@pytest.mark.parametrize("opset", [13, 17, 18, 21])
def test_onnx_runtime_computes_the_generated_model(built, opset):
    for name, (compiled, _, model) in built.items():
        state = {k: v.numpy() for k, v in model.state_dict().items()}
        proto = export_onnx(compiled.graph, opset=opset, state_dict=state, batch=2)
        onnx.checker.check_model(proto, full_check=True)
        x = torch.randn(2, *CASES[name].shape)
        with torch.no_grad():
            want = model.eval()(x).numpy()
        error = np.abs(run_ort(proto, x.numpy()) - want).max()
        assert error < 1e-5, (name, opset, error)
        kinds = {n.op_type for n in proto.graph.node}
        if name == "group_norm":  # GroupNormalization from opset 21, InstanceNormalization below it
            assert ("GroupNormalization" in kinds) == (opset >= 21), kinds
        if name == "prelu":
            assert "PRelu" in kinds


class Net(nn.Module):
    """Every new op in one model, functional forms too."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.gn = nn.GroupNorm(4, 8)
        self.act = nn.PReLU(8)
        self.gn2 = nn.GroupNorm(2, 8, affine=False)
        self.inn = nn.InstanceNorm2d(8, affine=True)
        self.elu = nn.ELU(0.7)
        self.lr = nn.LeakyReLU(0.1)
        self.inn2 = nn.InstanceNorm2d(8)
        self.pr = nn.PReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.gn(self.conv(x)))
        x = self.lr(self.elu(self.inn(self.gn2(x))))
        x = F.leaky_relu(self.inn2(x), 0.3)
        return self.pr(F.elu(x, alpha=2.0))


NET_OPS = {
    "gn": ("group_norm", {"groups": 4, "affine": True}),
    "act": ("prelu", {"per_channel": True}),
    "gn2": ("group_norm", {"groups": 2, "affine": False}),
    "inn": ("instance_norm", {"affine": True, "track_running_stats": False}),
    "elu": ("elu", {"alpha": 0.7}),
    "lr": ("leaky_relu", {"negative_slope": 0.1}),
    "inn2": ("instance_norm", {"affine": False}),
    "pr": ("prelu", {"per_channel": False}),
}


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(1)
    m = Net()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_()
    return m.eval()


def _read_as(graph, name: str, op: str, attrs: dict) -> None:
    data = ir.node(graph, name)
    assert data.op == op, name
    for key, value in attrs.items():
        assert data.attrs[key] == pytest.approx(value), (name, key)


def test_import_from_pytorch_reads_every_op_and_computes_the_module(net):
    result = nasdsl.import_model(net, input_shape=(3, 8, 8), weights=True)
    for name, (op, attrs) in NET_OPS.items():
        _read_as(result.compiled.graph, name, op, attrs)
    model = nasdsl.build_model(result.compiled, weights=result.weights).eval()
    model.load_state_dict(net.state_dict(), strict=True)  # the module's own names
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(model(x), net(x), atol=1e-6)
    functional = [n for n, d in ir.nodes(result.compiled.graph) if n not in NET_OPS and d.op in ("leaky_relu", "elu")]
    assert len(functional) == 2  # F.leaky_relu(x, 0.3) and F.elu(x, alpha=2.0)


@pytest.mark.parametrize("opset", [13, 17, 18])
def test_import_of_torch_onnx_export_files_agrees_with_onnx_runtime(net, tmp_path, opset):
    x = torch.randn(1, 3, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (x,), tmp_path / "m.onnx", dynamo=False, opset_version=opset)
    proto = onnx.load(tmp_path / "m.onnx")
    result = nasdsl.import_model(proto, weights=True)
    for name, (op, attrs) in NET_OPS.items():
        _read_as(result.compiled.graph, name, op, attrs)
    model = nasdsl.build_model(result.compiled, weights=result.weights).eval()
    with torch.no_grad():
        got = model(x).numpy()
    assert np.abs(run_ort(proto, x.numpy()) - got).max() < 1e-5


def _group_normalization_18() -> onnx.ModelProto:
    """A GroupNormalization of opset 18 (scale and bias one per group), as another tool writes it."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(2)
    scale, bias = (numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), k) for k in ("s", "b"))
    node = helper.make_node("GroupNormalization", ["x", "s", "b"], ["y"], name="layer", num_groups=4, epsilon=1e-3)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 6, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 6, 5])],
        [scale, bias],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)


def test_group_normalization_nodes_import(built, tmp_path, capsys):
    """A GroupNormalization of opset 21 (a scale per channel), from nasdsl's own export, read back
    and run against ONNX Runtime; one of opset 18 (a scale per group, deprecated) is refused."""
    compiled, _, model = built["group_norm"]
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    proto = export_onnx(compiled.graph, opset=21, state_dict=state)
    assert "GroupNormalization" in {n.op_type for n in proto.graph.node}
    result = nasdsl.import_model(proto, weights=True)
    (name,) = [n for n, d in ir.nodes(result.compiled.graph) if d.op == "group_norm"]  # named by structure
    _read_as(result.compiled.graph, name, "group_norm", {"groups": 4, "affine": True})
    back = nasdsl.build_model(result.compiled, weights=result.weights).eval()
    x = torch.randn(1, 8, 6, 5)
    with torch.no_grad():
        assert np.abs(back(x).numpy() - run_ort(proto, x.numpy())).max() < 1e-5
    onnx.save(_group_normalization_18(), tmp_path / "g18.onnx")
    assert cli_main(["import", str(tmp_path / "g18.onnx"), "-o", str(tmp_path / "g.yaml")]) == 2
    err = capsys.readouterr().err
    assert "error: not a valid ONNX model: Op registered for GroupNormalization is deprecated" in err
    assert not (tmp_path / "g.yaml").exists()


NET_SOURCE = """\
import torch.nn.functional as F
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.gn = nn.GroupNorm(4, 8)
        self.act = nn.PReLU(8)
        self.inn = nn.InstanceNorm2d(8, affine=True, track_running_stats=True)
        self.elu = nn.ELU(0.5)

    def forward(self, x):
        x = self.inn(self.act(self.gn(self.conv(x))))
        return F.leaky_relu(self.elu(x), 0.2)
"""


def test_import_check_passes_from_pytorch_and_from_onnx(tmp_path, monkeypatch, capsys, net):
    (tmp_path / "newops.py").write_text(NET_SOURCE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "newops", raising=False)
    argv = ["import", "module:newops:Net", "-o", "net.yaml", "--input-shape", "3,8,8", "--check"]
    assert cli_main(argv) == 0
    assert "check: 1 output against the source model" in capsys.readouterr().out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.randn(1, 3, 8, 8),), tmp_path / "m.onnx", dynamo=False, opset_version=17)
    assert cli_main(["import", "m.onnx", "-o", "m.yaml", "--check"]) == 0
    assert "check: 1 output against ONNX Runtime's run of the file" in capsys.readouterr().out


def test_weights_transfer_by_channel(tmp_path):
    """A wider variant keeps the parent's PReLU slopes and GroupNorm weights channel for channel."""
    spec = "name: T\ninput: {{shape: [3, 6, 6]}}\nmodel:\n  conv: {{op: conv2d, out: {c}, kernel: 3}}\n"
    spec += "  gn: {{op: group_norm, groups: 4}}\n  act: prelu\n"
    (tmp_path / "p.yaml").write_text(spec.format(c=8))
    (tmp_path / "c.yaml").write_text(spec.format(c=12))
    parent = nasdsl.compile_spec(tmp_path / "p.yaml")
    weights = {k: np.random.default_rng(0).standard_normal(v.shape).astype(np.float32)
               for k, v in initial_weights(parent.graph).items()}  # fmt: skip
    moved = nasdsl.transfer_weights(parent, weights, nasdsl.compile_spec(tmp_path / "c.yaml"))
    for key in ("gn.weight", "gn.bias", "act.weight"):
        assert moved[key].shape == (12,)
        np.testing.assert_array_equal(moved[key][:8], weights[key])
    assert {m.key: m.status for m in moved.report}["act.weight"] == "adapted"


BAD = [
    (
        "{op: leaky_relu, negative_slope: .nan}",
        [3, 4, 4],
        "4:43: error: model.layer.negative_slope: expected a number >= -1000000.0 and <= 1000000.0, got nan",
    ),
    (
        "{op: group_norm, groups: 4}",
        [6, 4, 4],
        "4:10: error: model.layer: expected groups that divide the 6 channels of a (C, H, W) map 6x4x4, got 4",
    ),
    (
        "{op: instance_norm, affine: 1}",
        [6, 4, 4],
        "4:38: error: model.layer.affine: expected true or false, got 1",
    ),
    (
        "prelu",
        [5, 8],
        "4:10: error: model.layer: expected flat features or a channels-first map (C, ...) as the "
        "input of prelu, got tokens (L, C) 5x8",
    ),  # fmt: skip
]


@pytest.mark.parametrize(("entry", "shape", "said"), BAD, ids=["nan-slope", "groups", "affine", "prelu-tokens"])
def test_bad_attributes_are_located_errors(tmp_path, capsys, entry, shape, said):
    assert_refused_entry(tmp_path, capsys, entry, shape, said)


INIT_SPEC = """\
name: I
input: {shape: [8, 6, 5]}
init:
  instance_norm: {weight: {constant: {value: 0.5}}, bias: 0}
  group_norm: {weight: 2, bias: 0.5}
  prelu: {weight: 0.1}
model:
  plain: instance_norm
  affine: {op: instance_norm, affine: true}
  g: {op: group_norm, groups: 2}
  p: prelu
"""


def test_init_rules_set_the_parameters_where_the_layers_have_them(tmp_path):
    """An instance_norm rule reaches the affine layer and passes over the one without a weight."""
    (tmp_path / "i.yaml").write_text(INIT_SPEC)
    compiled = nasdsl.compile_spec(tmp_path / "i.yaml")
    state = nasdsl.build_model(compiled).state_dict()
    want = {"affine.weight": 0.5, "affine.bias": 0.0, "g.weight": 2.0, "g.bias": 0.5, "p.weight": 0.1}
    assert sorted(state) == sorted(want)
    for key, value in want.items():
        assert torch.allclose(state[key], torch.full((8,), value)), key
    drawn = initial_weights(compiled.graph)
    assert all(np.array_equal(drawn[k], state[k].numpy()) for k in want)
