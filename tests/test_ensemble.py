"""Ensemble specs: parsing and errors, the ensemble graph, the generated PyTorch module (its
output against the members run one by one), ONNX against PyTorch, check and summary."""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import re
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import nasdsl
from nasdsl import ensemble_ir, ir
from nasdsl.backends.onnx import export_onnx
from nasdsl.backends.pytorch import generate_source, load_source, model_class
from nasdsl.backends.verify import run_onnx, verify
from nasdsl.cli import main
from nasdsl.ensemble import CompiledEnsemble
from nasdsl.weights import initial_weights, to_torch

from paths import DATA, ROOT, SPECS

ILSVRC = SPECS / "ensembles" / "ilsvrc2014.yaml"

TINY = """\
nasdsl: 1
name: Tiny
variables:
  num_classes: 5
  width: 8
input: {shape: [3, 16, 16]}
model:
  conv: {op: conv2d, out: width, kernel: 3, padding: 1}
  relu: relu
  pool: global_avg_pool
  flatten: flatten
  fc: {op: linear, out: num_classes}
"""

# a second architecture with the same input and output, ending in a softmax, with a training-only head
OTHER = """\
nasdsl: 1
name: Other
variables: {num_classes: 5}
input: {shape: [3, 16, 16]}
model:
  conv: {op: conv2d, out: 4, kernel: 3, stride: 2}
  relu: relu
  pool: global_avg_pool
  flatten: flatten
  fc: {op: linear, out: num_classes}
  prob: softmax
outputs:
  prob: {from: prob}
  aux: {from: flatten, head: [{op: linear, out: num_classes}], training_only: true}
"""


def assert_close(got: torch.Tensor, want: torch.Tensor, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    """``torch.testing.assert_close``'s rule without its first-call import of torch.distributed (seconds)."""
    assert got.shape == want.shape, (got.shape, want.shape)
    excess = ((got - want).abs() - (atol + rtol * want.abs())).max()
    assert excess <= 0, f"off by up to {float(excess):.3g} beyond the tolerance"


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    write(tmp_path, "tiny.yaml", TINY)
    write(tmp_path, "other.yaml", OTHER)
    return tmp_path


def ensemble(folder: Path, members: str, combine: str = "probabilities", extra: str = "") -> Path:
    text = f"nasdsl: 1\nname: Team\nensemble:\n  combine: {combine}\n  members:\n"
    text += textwrap.indent(textwrap.dedent(members), "    ") + extra
    return write(folder, "team.yaml", text)


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# -- the graph ---------------------------------------------------------------------------------


def test_the_ensemble_graph_holds_each_member_graph(folder):
    path = ensemble(folder, "a: tiny.yaml\nb: {spec: tiny.yaml, set: {width: 4}, weight: 3}\n")
    net = nasdsl.compile_spec(path)
    assert isinstance(net, CompiledEnsemble)
    g = net.graph
    assert ensemble_ir.is_ensemble(g)
    assert [(n, d.op) for n, d in ir.nodes(g)] == [
        ("x", "input"),
        ("a", "member"),
        ("b", "member"),
        ("average", "average"),
    ]
    a, b = ensemble_ir.members(g)
    assert (a.name, b.name, a.weight, b.weight) == ("a", "b", 0.25, 0.75)
    assert b.overrides == (("width", 4),)
    assert ir.node(b.graph, "conv").attrs["out"] == 4 and ir.node(a.graph, "conv").attrs["out"] == 8
    assert ir.node(g, "average").attrs == {"of": "probabilities", "weights": (0.25, 0.75), "softmax": (True, True)}
    assert [o.name for o in ir.info(g).outputs] == ["probabilities"]
    # every state_dict key is a member's key under the member's name
    keys = set(initial_weights(g))
    assert keys == {f"a.{k}" for k in initial_weights(a.graph)} | {f"b.{k}" for k in initial_weights(b.graph)}


def test_weights_near_the_float_limit_are_refused_and_shares_cannot_overflow(folder, capsys):
    """Weights 1.7e308 and 1e308 summed to infinity and both shares became 0: the ensemble was an
    unweighted mean without a word. They are refused where written (numbers of a spec stay within
    2^53); and the shares, computed over the largest weight, hold for a parsed spec that has them."""
    import nasdsl.api
    from nasdsl import document
    from nasdsl import ensemble as ensembles
    from nasdsl.loader import Limits

    path = ensemble(folder, "a: {spec: tiny.yaml, weight: 1.7e+308}\nb: {spec: tiny.yaml, weight: 1.0e+308}\n")
    code, _, err = run_cli(capsys, "check", path)
    assert code == 2 and "ensemble.members.a.weight: expected a finite number of magnitude at most 2^53" in err
    doc, files = document.load_document(path)
    spec = ensembles.parse_ensemble(doc, files[0], files, "")  # past the number rule, straight to the shares

    def member(doc, files, values, locations):
        return nasdsl.api.compile_spec(nasdsl.api.model_spec(doc, files, values, locations))

    net = ensembles.compile_ensemble(spec, member, limits=Limits(), max_params=10**9)
    shares = [m.weight for m in ensemble_ir.members(net.graph)]
    assert shares == pytest.approx([1.7 / 2.7, 1.0 / 2.7]) and "weighted mean" in net.summary()["footer"][0]


def test_the_ir_page_documents_the_ensemble_graph(folder):
    net = nasdsl.compile_spec(ensemble(folder, "a: tiny.yaml\nb: other.yaml\n"))
    g = net.graph
    seen = {f.name for f in dataclasses.fields(ensemble_ir.Member)}
    seen |= set(ir.node(g, "a").attrs) | set(ir.node(g, "average").attrs)
    seen |= {d.op for _, d in ir.nodes(g)}
    text = (ROOT / "docs" / "ir.md").read_text()
    assert not sorted(k for k in seen if f"`{k}`" not in text)


# -- PyTorch: one module, one class per distinct member graph --------------------------------------


def members_one_by_one(net: CompiledEnsemble, state: dict, x: torch.Tensor) -> list[torch.Tensor]:
    """Each member built on its own from its graph, with its part of the weights, in eval mode."""
    outs = []
    for m in ensemble_ir.members(net.graph):
        model = model_class(m.graph)()
        part = {k[len(m.name) + 1 :]: v for k, v in state.items() if k.startswith(m.name + ".")}
        model.load_state_dict(part, strict=True)
        with torch.no_grad():
            out = model.eval()(x)
        outs.append(out if isinstance(out, torch.Tensor) else out[0])
    return outs


@pytest.mark.parametrize("combine", ["probabilities", "logits", "weighted"])
def test_the_ensemble_output_is_the_mean_of_its_members_run_apart(folder, combine):
    members = "a: tiny.yaml\nb: {spec: tiny.yaml, set: {width: 4}}\nc: tiny.yaml\n"
    if combine == "weighted":
        members = (
            "a: {spec: tiny.yaml, weight: 1}\n"
            "b: {spec: tiny.yaml, set: {width: 4}, weight: 2}\n"
            "c: {spec: tiny.yaml, weight: 5}\n"
        )
    net = nasdsl.compile_spec(ensemble(folder, members, "logits" if combine == "logits" else "probabilities"))
    state = to_torch(initial_weights(net.graph))
    model = model_class(net.graph)()
    model.load_state_dict(state, strict=True)
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = model.eval()(x)
    outs = members_one_by_one(net, state, x)
    assert not torch.allclose(outs[0], outs[2])  # members drawn with their own seeds differ
    if combine == "logits":
        want = sum(outs) / 3
    elif combine == "weighted":
        want = (1 * outs[0].softmax(1) + 2 * outs[1].softmax(1) + 5 * outs[2].softmax(1)) / 8
    else:
        want = sum(o.softmax(1) for o in outs) / 3
    assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_a_member_that_gives_probabilities_is_not_softmaxed_twice(folder):
    net = nasdsl.compile_spec(ensemble(folder, "a: tiny.yaml\nb: other.yaml\n"))
    assert ir.node(net.graph, "average").attrs["softmax"] == (True, False)
    state = to_torch(initial_weights(net.graph))
    model = model_class(net.graph)()
    model.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        got = model.eval()(x)
        in_training = model.train()(x)  # the member with a training head returns its outputs: the main one is used
    a, b = members_one_by_one(net, state, x)
    assert_close(got, (a.softmax(1) + b) / 2)
    assert in_training.shape == got.shape


def test_the_module_holds_one_class_per_distinct_member_graph(folder):
    path = ensemble(folder, "a: tiny.yaml\nb: tiny.yaml\nwide: {spec: tiny.yaml, set: {width: 16}}\nc: other.yaml\n")
    net = nasdsl.compile_spec(path)
    source = generate_source(net.graph)
    assert source == generate_source(nasdsl.compile_spec(path).graph)  # deterministic
    classes = [n.name for n in ast.parse(source).body if isinstance(n, ast.ClassDef)]
    assert classes == ["Tiny", "TinyWide", "OtherOutputs", "Other", "Team"]
    assert (
        "self.a = Tiny()\n        self.b = Tiny()\n        self.wide = TinyWide()\n        self.c = Other()" in source
    )
    model = load_source(source).Team()
    assert set(model.state_dict()) == set(initial_weights(net.graph))
    # TorchScript resolves the NamedTuple's annotations from a module imported from a file
    (folder / "team_module.py").write_text(source)
    spec = importlib.util.spec_from_file_location("team_module", folder / "team_module.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["team_module"] = module
    try:
        spec.loader.exec_module(module)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is deprecated in torch 2.14
            torch.jit.script(module.Team())
    finally:
        del sys.modules["team_module"]
    for args in (["check", "--isolated", "-"], ["format", "--isolated", "--check", "-"]):
        done = subprocess.run([sys.executable, "-m", "ruff", *args], input=source, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr


# -- ONNX ------------------------------------------------------------------------------------------


def test_onnx_gives_one_graph_that_agrees_with_pytorch(folder):
    members = "a: {spec: tiny.yaml, weight: 2}\nb: other.yaml\nc: {spec: tiny.yaml, set: {width: 4}}\n"
    net = nasdsl.compile_spec(ensemble(folder, members))
    result = verify(net.graph, batch=2)
    assert result.ok, result.checks
    proto = export_onnx(net.graph, batch=3)
    assert [i.name for i in proto.graph.input] == ["x"] and [o.name for o in proto.graph.output] == ["probabilities"]
    assert {t.name for t in proto.graph.initializer} >= {"a.conv.weight", "b.fc.bias", "c.fc.weight"}
    # against the members' own ONNX exports, averaged here
    x = np.random.default_rng(0).standard_normal((3, 3, 16, 16)).astype(np.float32)
    got = run_onnx(proto, {"x": x})["probabilities"]
    weights = initial_weights(net.graph)
    outs = []
    for m in ensemble_ir.members(net.graph):
        part = {k[len(m.name) + 1 :]: v for k, v in weights.items() if k.startswith(m.name + ".")}
        out = next(iter(run_onnx(export_onnx(m.graph, batch=3, state_dict=part), {"x": x}).values()))
        outs.append(out if m.name == "b" else torch.from_numpy(out).softmax(1).numpy())
    np.testing.assert_allclose(got, (2 * outs[0] + outs[1] + outs[2]) / 4, rtol=1e-5, atol=1e-6)


# -- the command line -------------------------------------------------------------------------------


def test_check_and_summary_of_the_ilsvrc_2014_spec(capsys):
    code, out, _ = run_cli(capsys, "check", ILSVRC)
    assert code == 0
    assert out.startswith(
        f"{ILSVRC}: ok: an ensemble of 7 members, 48,989,864 parameters for inference, 93,647,960 with the "
        "training heads; 11,078,703,104 multiply-adds a crop, 1,595,333,246,976 an image (144 crops)"
    )
    facts = __import__("yaml").safe_load((DATA / "googlenet_test_time.yaml").read_text())
    one = 1_582_671_872  # one GoogLeNet at one crop (tests/data/googlenet_figures.yaml)
    code, out, _ = run_cli(capsys, "summary", ILSVRC)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "ILSVRC2014: input 3x224x224"
    assert sum(line.startswith("googlenet") and "GoogLeNet" in line for line in lines) == facts["models"]
    assert lines[-3:] == [
        "members: 7 (1 distinct spec after overrides); combine: mean of probabilities",
        "evaluation: 144 crops (scales 256, 288, 320, 352; squares left, center, right; corners, center, full; "
        "mirrored; mean of probabilities)",
        f"multiply-adds per image: {one:,} (one member, one crop) x 7 members x 144 crops = {one * 7 * 144:,}",
    ]
    assert one * facts["models"] * facts["crops_per_image"] == one * facts["table_3_cost"][-1]["cost"]
    code, out, _ = run_cli(capsys, "summary", ILSVRC, "--format", "json", "--set", "evaluation.preset=10-crop")
    summary = __import__("json").loads(out)
    assert (summary["evaluation"]["crops"], summary["macs_per_image"]) == (10, one * 7 * 10)


def test_compile_writes_one_module_for_the_ilsvrc_spec(tmp_path, capsys):
    out = tmp_path / "ilsvrc.py"
    assert run_cli(capsys, "compile", ILSVRC, "-o", out)[0] == 0
    tree = ast.parse(out.read_text())
    assert [n.name for n in tree.body if isinstance(n, ast.ClassDef)] == [
        "BasicConv2d",
        "Inception",
        "InceptionAux",
        "GoogLeNetOutputs",
        "GoogLeNet",
        "ILSVRC2014",
    ]


def test_set_reaches_the_ensemble_or_every_member(folder, capsys):
    path = ensemble(folder, "a: tiny.yaml\nb: {spec: tiny.yaml, set: {width: 4}}\n")
    net = nasdsl.compile_spec(path, ["num_classes=7", "ensemble.members.b.set.width=6", "ensemble.combine=logits"])
    a, b = ensemble_ir.members(net.graph)
    assert (ir.node(a.graph, "fc").attrs["out"], ir.node(b.graph, "fc").attrs["out"]) == (7, 7)
    assert ir.node(b.graph, "conv").attrs["out"] == 6 and ensemble_ir.combine(net.graph) == "logits"


# -- errors: located, exit 2, nothing written ----------------------------------------------------------


@pytest.mark.parametrize(
    ("members", "extra", "message"),
    [
        (
            "a: {spec: tiny.yaml, weigths: a.pt}\n",
            "",
            "team.yaml:6:26: error: ensemble.members.a.weigths: unknown key 'weigths' in a member "
            "(did you mean 'weights'?); allowed: spec, set, weights, weight",
        ),
        ("a: missing.yaml\n", "", "team.yaml:6:8: error: ensemble.members.a.spec: no such file: {folder}/missing.yaml"),
        (
            "a: {spec: tiny.yaml, weight: -1}\n",
            "",
            "team.yaml:6:34: error: ensemble.members.a.weight: expected a number > 0, got -1",
        ),
        (
            "a: {spec: tiny.yaml, set: {widht: 4}}\n",
            "",
            "team.yaml:6:1: error: widht: no variable or model entry named 'widht' (did you mean 'width'?) (member a)",
        ),
        (
            "a: tiny.yaml\n",
            "evaluation: {preset: 12-crop}\n",
            "team.yaml:7:22: error: evaluation.preset: expected a preset single, 10-crop, 144-crop, got '12-crop' "
            "(did you mean '10-crop'?)",
        ),
        (
            "a: tiny.yaml\n",
            "evaluation: {mirorr: true}\n",
            "team.yaml:7:14: error: evaluation.mirorr: unknown key 'mirorr' in an evaluation section (did you mean "
            "'mirror'?); allowed: preset, size, scales, squares, crops, mirror, average",
        ),
    ],
)
def test_bad_ensembles_are_located_errors(folder, capsys, members, extra, message):
    path = ensemble(folder, members, extra=extra)
    out = folder / "out.py"
    code, stdout, err = run_cli(capsys, "compile", path, "-o", out)
    assert (code, stdout) == (2, "")
    assert err.strip() == f"{folder}/{message.format(folder=folder)}"
    assert not out.exists()


def test_a_member_error_points_into_the_member_file(folder, capsys):
    write(folder, "broken.yaml", TINY.replace("kernel: 3", "kernel: -3"))
    path = ensemble(folder, "a: tiny.yaml\nb: broken.yaml\n")
    code, _, err = run_cli(capsys, "check", path)
    assert code == 2
    assert (
        err.strip()
        == f"{folder}/broken.yaml:8:42: error: model.conv.kernel: expected an integer > 0, got -3 (member b)"
    )


def test_members_must_read_and_give_one_shape(folder, capsys):
    write(folder, "big.yaml", TINY.replace("[3, 16, 16]", "[3, 32, 32]"))
    code, _, err = run_cli(capsys, "check", ensemble(folder, "a: tiny.yaml\nb: big.yaml\n"))
    assert code == 2
    assert err.strip() == (
        f"{folder}/team.yaml:7:8: error: ensemble.members.b: member b has the input shape 3x32x32, expected 3x16x16 "
        "like member a: members must read and give tensors of one shape"
    )
    code, _, err = run_cli(capsys, "check", ensemble(folder, "a: tiny.yaml\nb: other.yaml\n", "logits"))
    assert code == 2 and "member b gives probabilities (its output 'prob' is a softmax)" in err


def test_commands_that_take_no_ensemble_say_so(folder, capsys):
    path = ensemble(folder, "a: tiny.yaml\n")
    code, _, err = run_cli(capsys, "draw", path, "-o", folder / "x.svg")
    assert code == 2 and "'draw' takes a model spec, not an ensemble" in err
    assert not (folder / "x.svg").exists()


def test_build_model_loads_each_members_own_weights_file(folder):
    from safetensors.torch import save_file

    net = nasdsl.compile_spec(ensemble(folder, "a: {spec: tiny.yaml, weights: a.safetensors}\nb: tiny.yaml\n"))
    own = to_torch(initial_weights(ensemble_ir.members(net.graph)[0].graph, seed=42))
    save_file(own, str(folder / "a.safetensors"))
    model = nasdsl.build_model(net)
    assert_close(model.a.conv.weight, own["conv.weight"])
    (folder / "a.safetensors").unlink()
    with pytest.raises(nasdsl.errors.SpecError, match="no such weights file"):
        nasdsl.build_model(net)


def test_a_members_weights_that_do_not_fit_it_are_located_at_its_weights_line(folder, capsys):
    """A member's file of another width is reported at that member's weights: (line, column,
    key path, file), with the member's own keys, and nothing is written."""
    from safetensors.numpy import save_file

    team = ensemble(folder, "a: tiny.yaml\nb: {spec: tiny.yaml, set: {width: 12}, weights: b.safetensors}\n")
    save_file(initial_weights(nasdsl.compile_spec(folder / "tiny.yaml").graph), str(folder / "b.safetensors"))
    out = folder / "team.onnx"
    code, _, err = run_cli(capsys, "compile", team, "-o", out)
    assert code == 2 and not out.exists()
    assert err.startswith(
        f"{team}:7:53: error: ensemble.members.b.weights: '{folder / 'b.safetensors'}' (member b) does not fit Tiny:\n"
        "  wrong (3): conv.weight (expected 12x3x3x3, found 8x3x3x3), conv.bias (expected 12, found 8), "
        "fc.weight (expected 5x12, found 5x8); give --weights FILE"
    ), err


def test_the_onnx_export_and_verify_use_the_members_weights_files(folder, capsys):
    """What the spec names is what the ONNX file holds: no silent fallback to random weights."""
    import onnx
    from onnx import numpy_helper
    from safetensors.torch import save_file

    team = ensemble(folder, "a: {spec: tiny.yaml, weights: a.safetensors}\nb: tiny.yaml\n")
    member = ensemble_ir.members(nasdsl.compile_spec(team).graph)[0].graph
    own = to_torch(initial_weights(member, seed=42))
    save_file(own, str(folder / "a.safetensors"))
    out = folder / "team.onnx"
    code, _, err = run_cli(capsys, "compile", team, "-o", out)
    assert code == 0, err
    stored = {t.name: numpy_helper.to_array(t) for t in onnx.load(out).graph.initializer}
    assert np.array_equal(stored["a.conv.weight"], own["conv.weight"].numpy())
    assert np.array_equal(stored["b.conv.weight"], initial_weights(member, seed=1)["conv.weight"])
    assert run_cli(capsys, "verify", team)[0] == 0

    out.unlink()
    (folder / "a.safetensors").unlink()
    for command in (["compile", team, "-o", out], ["verify", team], ["build", team, "-o", folder / "built"]):
        code, out_text, err = run_cli(capsys, *command)
        assert code == 2 and (out_text == "" or command[0] == "build"), err  # build reports its steps
        assert "team.yaml:" in err and "no such weights file" in err and "--random-weights" in err
    assert not out.exists() and not (folder / "built").exists()
    code, _, err = run_cli(capsys, "compile", team, "-o", out, "--random-weights")
    assert code == 0, err
    stored = {t.name: numpy_helper.to_array(t) for t in onnx.load(out).graph.initializer}
    assert np.array_equal(stored["a.conv.weight"], initial_weights(member, seed=0)["conv.weight"])
    code, _, err = run_cli(capsys, "compile", team, "-o", out, "--random-weights", "--weights", folder / "x.pt")
    assert code == 2 and "give one or the other" in err
    code, _, err = run_cli(capsys, "compile", team, "-o", folder / "team.py", "--random-weights")
    assert code == 2 and "--random-weights: only the ONNX backend takes this" in err


def test_the_docs_page_shows_the_spec_and_the_summary_as_they_are(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    page = (ROOT / "docs" / "ensembles.md").read_text()
    blocks = dict(re.findall(r"<!-- (.*?) -->\n```\w*\n(.*?)```", page, re.S))
    assert blocks["specs/ensembles/ilsvrc2014.yaml"] in ILSVRC.read_text()
    command = blocks.keys() - {"specs/ensembles/ilsvrc2014.yaml"}
    assert command == {"nasdsl summary specs/ensembles/ilsvrc2014.yaml"}
    code, out, _ = run_cli(capsys, "summary", str(ILSVRC.relative_to(ROOT)))
    assert code == 0 and out == blocks["nasdsl summary specs/ensembles/ilsvrc2014.yaml"]


@pytest.mark.parametrize(
    ("options", "refused"),
    [
        (["--optimize-for", "cpu", "-o", "t.onnx"], "--optimize-for cpu"),
        (["--optimize", "-o", "t.onnx"], "--optimize"),
        (["--optimize-for", "cpu", "-o", "t.py"], "--optimize-for cpu"),
        (["--optimize-for", "openvino-int8", "-o", "t.onnx"], "--optimize-for openvino-int8"),
    ],
)
def test_an_ensemble_is_not_optimised_as_a_whole(folder, capsys, monkeypatch, options, refused):
    # the ONNX export wrote the plain ensemble and said 'optimised for cpu'
    monkeypatch.chdir(folder)
    path = ensemble(folder, "a: tiny.yaml\nb: {spec: tiny.yaml, set: {width: 4}}\n")
    code, out, err = run_cli(capsys, "compile", path, *options)
    assert code == 2 and out == ""
    assert err.strip() == f"error: {refused}: an ensemble is not optimised as a whole; compile each member"
    assert not (folder / options[-1]).exists()


@pytest.mark.parametrize(
    ("text", "wanted"),
    [
        (
            "ensemble:\n  combine: probabilities\n  membres:\n    a: tiny.yaml\n",
            "team.yaml:5:3: error: ensemble.membres: unknown key 'membres' in an ensemble section (did you mean "
            "'members'?); allowed: members, combine",
        ),
        (
            "ensemble:\n  members:\n    a: {spek: tiny.yaml}\n",
            "team.yaml:5:9: error: ensemble.members.a.spek: unknown key 'spek' in a member (did you mean 'spec'?); "
            "allowed: spec, set, weights, weight",
        ),
        (
            "ensembel:\n  members:\n    a: tiny.yaml\n",
            "team.yaml:3:1: error: ensembel: unknown key 'ensembel' in a spec (did you mean 'ensemble'?)",
        ),
    ],
)
def test_a_misspelt_key_is_reported_not_the_key_it_leaves_missing(folder, capsys, text, wanted):
    # each was 'missing key members' / 'missing key spec', or input and model missing beside the typo
    path = write(folder, "team.yaml", "nasdsl: 1\nname: Team\n" + text)
    code, out, err = run_cli(capsys, "check", path)
    assert code == 2 and out == ""
    assert err.strip() == f"{folder}/{wanted}"
