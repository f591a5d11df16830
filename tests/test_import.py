"""``nasdsl import``: templates discovered from torchvision's GoogLeNet and ResNet-50, the
generated models against torchvision's (strict state_dict load, eval outputs), ONNX round
trips under ONNX Runtime, the command line, errors, and docs/import.md's walkthrough.

The references are independent of the importer: the paper's Table 1
(tests/data/googlenet_table1.csv), torchvision's state_dict keys
(tests/data/torchvision_googlenet_state_dict.txt), torchvision's models themselves, and ONNX
Runtime running the source file. The whole zoo's round trips are
``benchmarks/import_zoo.py --check``.
"""

from __future__ import annotations

import csv
import io
import re
import warnings

import numpy as np
import onnx
import pytest
import torch
import torchvision
import yaml
from onnx import TensorProto, helper
from onnx_runs import run_ort

import nasdsl
from nasdsl.backends.onnx import export_onnx
from nasdsl.backends.pytorch import generate_source, load_source
from nasdsl.cli import main as cli_main
from nasdsl.importer import ImportFailure, import_model

from paths import DATA, ROOT
from reference_models import generated_with_weights, randomise

DOC = ROOT / "docs" / "import.md"


@pytest.fixture(scope="module")
def googlenet():
    return import_model("torchvision:googlenet")


@pytest.fixture(scope="module")
def resnet50():
    return import_model("torchvision:resnet50")


def _table1() -> dict[str, list[int]]:
    """Table 1's six filter columns per inception module, from the transcribed CSV."""
    lines = [line for line in (DATA / "googlenet_table1.csv").read_text().splitlines() if not line.startswith("#")]
    cols = ("n1x1", "n3x3_reduce", "n3x3", "n5x5_reduce", "n5x5", "pool_proj")
    out = {}
    for row in csv.DictReader(lines):
        m = re.fullmatch(r"inception \((\w+)\)", row["layer"])
        if m:
            out[f"inception{m[1]}"] = [int(row[c]) for c in cols]
    return out


# -- templates ------------------------------------------------------------------------------


def test_googlenet_inception_is_one_template_with_table_1s_arguments(googlenet):
    templates = {name: (params, uses) for name, params, uses in googlenet.report.templates}
    assert templates["Inception"] == (["ch1x1", "ch3x3red", "ch3x3", "ch5x5red", "ch5x5", "pool_proj"], 9)
    assert templates["BasicConv2d"][1] == 59  # 57 in the trunk, one in each auxiliary head
    model = yaml.safe_load(googlenet.text)["model"]
    table = _table1()
    assert len(table) == 9
    for name, filters in table.items():
        assert model[name] == {"use": "Inception", "args": filters}, name


def test_googlenet_state_dict_keys_are_torchvisions_in_order(googlenet, torchvision_googlenet_state_dict):
    with torch.device("meta"):
        model = load_source(generate_source(googlenet.compiled.graph)).GoogLeNet()
    state = model.state_dict()
    assert list(state) == list(torchvision_googlenet_state_dict)
    assert [tuple(t.shape) for t in state.values()] == list(torchvision_googlenet_state_dict.values())


def test_resnet50_bottleneck_switches_its_projection_and_stages_repeat(resnet50):
    templates = {name: (params, uses) for name, params, uses in resnet50.report.templates}
    assert templates == {"Bottleneck": (["planes", "stride", "downsample"], 16)}
    spec = yaml.safe_load(resnet50.text)
    body = spec["templates"]["Bottleneck"]["body"]
    assert body["downsample"]["when"] == "downsample" and body["downsample"]["from"] == "in"
    assert body["conv3"]["out"] == "4 * planes"
    assert spec["model"]["layer1"] == {
        "repeat": 3,
        "block": {"use": "Bottleneck", "args": {"planes": 64, "downsample": "i == 0"}},
    }
    assert spec["model"]["layer3"]["repeat"] == 6
    assert resnet50.report.params == 25_557_032  # torchvision's documented count


# -- the generated model against torchvision's ----------------------------------------------


def _tiny_densenet() -> torch.nn.Module:
    return torchvision.models.DenseNet(growth_rate=8, block_config=(3, 2), num_init_features=16, bn_size=2)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "shufflenet_v2_x0_5", "tiny densenet"])
def test_imported_model_loads_torchvisions_state_dict_and_agrees(name, tmp_path):
    """The generated model holds torchvision's tensors (strictly, in its order) and computes
    what torchvision's does; the tiny DenseNet's layers concatenate lists of every earlier
    output, which the spec writes as each layer joining its input to its output."""
    result = import_model(_tiny_densenet if name == "tiny densenet" else f"torchvision:{name}")
    spec = tmp_path / "imported.yaml"
    spec.write_text(result.text)
    net = nasdsl.compile_spec(spec, {"input.shape": [3, 48, 48]})
    torch.manual_seed(0)
    reference = _tiny_densenet() if name == "tiny densenet" else torchvision.models.get_model(name, weights=None)
    randomise(reference)
    reference.eval()
    ours = generated_with_weights(net, reference)
    x = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        a, b = reference(x), ours(x)
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-5 * a.abs().max().item())
    assert result.report.params == sum(p.numel() for p in reference.parameters())


def test_a_factory_of_ones_own_names_parameters_after_its_constructor(tmp_path):
    """A model of the user's (a factory, traced with torch.fx): a block class used with
    different widths becomes a template whose parameter is the constructor's argument."""

    class Block(torch.nn.Module):
        def __init__(self, width: int, stride: int = 1):
            super().__init__()
            self.conv = torch.nn.Conv2d(width // stride, width, 3, stride=stride, padding=1, bias=False)
            self.bn = torch.nn.BatchNorm2d(width)

        def forward(self, x):
            return torch.relu(self.bn(self.conv(x)))

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.blocks = torch.nn.Sequential(Block(16, 2), Block(16), Block(32, 2))
            self.head = torch.nn.Linear(32, 5)

        def forward(self, x):
            x = self.blocks(self.stem(x))
            return self.head(x.mean([2, 3]))

    result = import_model(Net, input_shape=(3, 32, 32))
    assert [(n, p, u) for n, p, u in result.report.templates] == [("Block", ["width", "stride"], 3)]
    spec = yaml.safe_load(result.text)
    assert spec["templates"]["Block"]["params"] == ["width", {"stride": 1}]  # the constructor's default
    assert spec["templates"]["Block"]["body"]["conv"] == {
        "op": "conv2d",
        "out": "width",
        "kernel": 3,
        "stride": "stride",
        "padding": 1,
        "bias": False,
    }
    assert [b["args"] for b in spec["model"]["blocks"]] == [[16, 2], 16, [32, 2]]
    torch.manual_seed(0)
    reference = Net().eval()
    randomise(reference)
    ours = nasdsl.build_model(result.compiled, weights=reference.state_dict()).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(reference(x), ours(x), atol=1e-6)


# -- ONNX ------------------------------------------------------------------------------------


def _round_trip(proto, size: int) -> tuple[float, object]:
    result = import_model(proto, weights=True)
    back = export_onnx(result.compiled.graph, opset=17, state_dict=result.weights)
    x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    a, b = run_ort(proto, x), run_ort(back, x)
    return float(np.abs(a - b).max() / np.abs(a).max()), result


def test_onnx_from_torch_onnx_export_round_trips_under_onnx_runtime():
    torch.manual_seed(0)
    model = torchvision.models.squeezenet1_1(weights=None).eval()
    randomise(model)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, 3, 64, 64),), buf, dynamo=False, opset_version=17)
    err, result = _round_trip(onnx.load_from_string(buf.getvalue()), 64)
    assert err < 1e-5
    # the Fire modules are one template; the initializers are torchvision's own tensors
    assert [uses for _, _, uses in result.report.templates] == [8]
    assert np.array_equal(
        result.weights["features.3.squeeze.weight"], model.features[3].squeeze.weight.detach().numpy()
    )


def test_onnx_from_nasdsls_export_round_trips_with_the_input_normalisation():
    net = nasdsl.compile_spec(ROOT / "docs" / "examples" / "inception_module.yaml", {"input.shape": [192, 12, 12]})
    proto = export_onnx(net.graph, opset=17)
    result = import_model(proto, weights=True)
    x = np.random.default_rng(0).standard_normal((1, 192, 12, 12)).astype(np.float32)
    back = export_onnx(result.compiled.graph, opset=17, state_dict=result.weights)
    np.testing.assert_allclose(run_ort(back, x), run_ort(proto, x), rtol=1e-5, atol=1e-6)
    names = {n for n in result.compiled.graph.nodes}
    assert {"inception3a.branch2.1.conv", "inception3a"} <= names  # nasdsl's names come back


# -- errors ----------------------------------------------------------------------------------


class _Softsigned(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.up = torch.nn.Softsign()

    def forward(self, x):
        return self.up(self.conv(x))


class _RootMeanSquare(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = torch.nn.RMSNorm(8)

    def forward(self, x):
        return self.norm(x)


def _net_with_sin():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return torch.sin(self.conv(x))

    return Net()


def test_an_op_without_spec_equivalent_is_a_located_error_naming_node_and_op():
    with pytest.raises(ImportFailure) as e:
        import_model(_net_with_sin(), input_shape=(3, 16, 16))
    text = e.value.format()
    assert re.search(
        r"test_import\.py:\d+:1: error: sin: function (torch\.)?sin \(fx node 'sin'\): no spec op", text
    ), text
    with pytest.raises(ImportFailure) as e:
        import_model(_Softsigned(), input_shape=(3, 16, 16))
    assert "up: module Softsign (fx node 'up'): no spec op computes this module" in e.value.format()


class _SoftmaxAtInference(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)

    def forward(self, x):
        x = self.conv(x)
        return x if self.training else torch.softmax(x, 1)


def test_a_forward_that_differs_at_inference_beyond_dropout_is_an_error():
    with pytest.raises(ImportFailure, match=r"computes something else at inference .*\(first at softmax\)"):
        import_model(_SoftmaxAtInference(), input_shape=(3, 8, 8))


def test_an_onnx_op_without_spec_equivalent_names_the_node():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])
    graph = helper.make_graph([helper.make_node("Sin", ["x"], ["y"], name="wave")], "g", [x], [y])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ImportFailure) as e:
        import_model(proto)
    assert e.value.format() == (
        "<onnx model>: graph.node[0] 'wave' (Sin): error: no spec op computes this (the op table is "
        "nasdsl/importer/onnx_ops.py)"
    )
    kept = yaml.safe_load(import_model(proto, allow_opaque=True).text)["model"]
    assert kept == {
        "opaque": {"op": "opaque", "shape": [3, 8, 8], "doc": "opaque: ONNX Sin (no spec op computes this)"}
    }


def test_allow_opaque_keeps_the_op_marked_and_the_backends_refuse_it(tmp_path, capsys):
    result = import_model(_Softsigned(), input_shape=(3, 16, 16), allow_opaque=True)
    up = yaml.safe_load(result.text)["model"]["up"]
    assert up == {
        "op": "opaque",
        "shape": [4, 14, 14],
        "doc": "opaque: module Softsign (no spec op computes this module)",
    }
    assert result.report.notes == ["1 opaque op (up): no backend writes the model until they are replaced"]
    spec = tmp_path / "up.yaml"
    spec.write_text(result.text)
    assert cli_main(["check", str(spec)]) == 0
    assert capsys.readouterr().out.rstrip().endswith("; no backend writes it while it holds an opaque op (up)")
    for out in ("up.py", "up.onnx"):
        assert cli_main(["compile", str(spec), "-o", str(tmp_path / out)]) == 2
        assert "cannot lower op 'opaque' (node up)" in capsys.readouterr().err
        assert not (tmp_path / out).exists()
    with pytest.raises(ImportFailure, match="norm: module RMSNorm .*: no spec op"):  # weights: never opaque
        import_model(_RootMeanSquare(), input_shape=(3, 8, 8), allow_opaque=True)


def test_command_line_imports_a_factory_of_the_users(tmp_path, monkeypatch, capsys):
    (tmp_path / "mynets.py").write_text(
        "import torch\n\n\n"
        "def layers():\n"
        "    nn = torch.nn\n"
        "    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(576, 10))\n\n\n"
        "class Net(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.layers = layers()\n\n"
        "    def forward(self, x):\n"
        "        return self.layers(x)\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(__import__("sys").modules, "mynets", raising=False)
    assert cli_main(["import", "module:mynets:Net", "-o", "net.yaml", "--input-shape", "1,14,14"]) == 0
    assert "imported mynets:Net as Net: 5 nodes, 5,810 parameters" in capsys.readouterr().out
    assert nasdsl.compile_spec(tmp_path / "net.yaml").totals()["params"] == 4 * 9 + 4 + 576 * 10 + 10
    # a bare nn.Sequential numbers its layers at the top, where a spec names them: refused, said why
    assert cli_main(["import", "module:mynets:layers", "-o", "bare.yaml", "--input-shape", "1,14,14"]) == 2
    assert "its layers are numbered (an nn.Sequential)" in capsys.readouterr().err
    assert not (tmp_path / "bare.yaml").exists()
    # the user's factory, or their module as it is imported, failing: said so, exit 2, no traceback
    (tmp_path / "broken.py").write_text("def build():\n    raise RuntimeError('no weights offline')\n")
    (tmp_path / "explodes.py").write_text("raise ValueError('bad config')\n")
    assert cli_main(["import", "module:broken:build", "-o", "b.yaml", "--input-shape", "1,14,14"]) == 2
    err = capsys.readouterr().err
    assert "module:broken:build: error: build() raised RuntimeError: no weights offline" in err
    assert "Traceback" not in err and "internal error" not in err
    assert cli_main(["import", "module:explodes:build", "-o", "b.yaml", "--input-shape", "1,14,14"]) == 2
    assert "importing explodes raised ValueError: bad config" in capsys.readouterr().err
    assert not (tmp_path / "b.yaml").exists()


def test_command_line_errors_exit_2_and_write_nothing(tmp_path, capsys):
    out = tmp_path / "x.yaml"
    assert cli_main(["import", "torchvision:resnet1", "-o", str(out)]) == 2
    assert "no classification or segmentation model 'resnet1' in torchvision" in capsys.readouterr().err
    assert cli_main(["import", "module:no_such_package_here:build", "-o", str(out)]) == 2
    assert "cannot import no_such_package_here" in capsys.readouterr().err
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not a model")
    assert cli_main(["import", str(bad), "-o", str(out)]) == 2
    assert "cannot read an ONNX model" in capsys.readouterr().err
    assert cli_main(["import", "torchvision:resnet18", "-o", str(out), "--weights", str(tmp_path / "w.npz")]) == 2
    assert not out.exists()


# -- the command and docs/import.md ------------------------------------------------------------


def _walkthrough() -> str:
    """The page's GoogLeNet walkthrough (the section on flat graphs has its own test)."""
    text = DOC.read_text()
    return text[: text.index("## Flat graphs")]


def _doc_commands() -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", _walkthrough(), re.S)
    return [line for block in blocks for line in block.splitlines() if line.startswith("nasdsl ")]


def _untimed(text: str) -> str:
    """The text without the times, torchvision's build tag (0.29.1+cu130 or 0.29.1+cpu) and the
    figure of --check, which must only be under its tolerance (the command's exit status says so)."""
    text = re.sub(r"\(\d+\.\d+ s\)", "(TIME)", text)
    text = re.sub(r"largest difference [0-9.e+-]+ of", "largest difference (FIGURE) of", text)
    return re.sub(r"\(torchvision ([\d.]+)\+\w+\)", r"(torchvision \1)", text)


def test_walkthrough_commands_run_and_print_what_the_page_shows(tmp_path, monkeypatch, capsys):
    """docs/import.md: import torchvision's GoogLeNet, edit a filter count, re-export. Every
    command of the page runs (in the page's order, the edit made where the page makes it),
    prints what the page shows (times aside), and the excerpts are in the imported spec."""
    monkeypatch.chdir(tmp_path)
    text = _walkthrough()
    source, target, before, after = re.search(
        r"<!-- edit: (\S+) -> (\S+) -->\n```yaml\n(.*?)\n```.*?```yaml\n(.*?)\n```", text, re.S
    ).groups()
    outputs = dict(re.findall(r"<!-- output: (.*?) -->\n```\n(.*?)```", text, re.S))
    excerpts = re.findall(r"<!-- excerpt: googlenet\.yaml -->\n```yaml\n(.*?)```", text, re.S)
    assert outputs and excerpts
    for command in _doc_commands():
        if target in command and not (tmp_path / target).exists():
            original = (tmp_path / source).read_text()
            assert before in original
            (tmp_path / target).write_text(original.replace(before, after))
        capsys.readouterr()
        assert cli_main(command.split()[1:]) == 0, command
        printed = capsys.readouterr().out
        if command in outputs:
            assert _untimed(printed) == _untimed(outputs.pop(command)), command
    assert outputs == {}
    imported = (tmp_path / source).read_text()
    assert all(e in imported for e in excerpts)
    wide = nasdsl.compile_spec(tmp_path / target)
    assert nasdsl.ir.node(wide.graph, "inception4a.branch2.1.conv").attrs["out"] == 256
    assert onnx.load(tmp_path / "googlenet_wide.onnx").graph.node
    model = nasdsl.build_model(wide, weights=str(tmp_path / "googlenet_wide.safetensors"))  # loads strictly
    assert model.inception4a.branch2[1].conv.weight.shape == (256, 96, 3, 3)


def test_initializers_listed_as_graph_inputs_are_read_as_the_constants_they_hold():
    """``keep_initializers_as_inputs=True`` (older exporters): every weight is also an input of the
    graph; the import reads each as its stored value (docs/import.md, "Input"), one input remains,
    and the generated model computes what ONNX Runtime computes with the file's own values."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 1)
    ).eval()
    x = torch.randn(1, 3, 6, 5)
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), f, dynamo=False, opset_version=17, keep_initializers_as_inputs=True)
    proto = onnx.load_from_string(f.getvalue())
    assert len(proto.graph.input) > 1 and {i.name for i in proto.graph.initializer} < {
        i.name for i in proto.graph.input
    }
    result = import_model(proto, weights=True)
    net = result.compiled
    generated = getattr(load_source(generate_source(net.graph)), net.spec.name)()
    generated.load_state_dict({k: torch.as_tensor(np.array(v)) for k, v in result.weights.items()}, strict=True)
    with torch.no_grad():
        got = generated.eval()(x).numpy()
    np.testing.assert_allclose(got, run_ort(proto, x.numpy()), rtol=0, atol=1e-5)
