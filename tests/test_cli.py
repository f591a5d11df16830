"""The command line's jobs end to end: build, compile, verify."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import nasdsl
from nasdsl.backends.onnx import export_onnx, export_onnx_bytes
from nasdsl.backends.pytorch import load_source
from nasdsl.cli import main
from nasdsl.weights import initial_weights, to_torch

from paths import ROOT, SPECS

GOOGLENET_BN = str(SPECS / "googlenet_bn.yaml")


def test_build_writes_both_artifacts_and_verifies(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["build", GOOGLENET_BN, "-o", str(out)]) == 0
    text = capsys.readouterr().out
    steps = [line.split("] ", 1)[1].split(":")[0] for line in text.splitlines() if line.startswith("[")]
    assert steps[:5] == [
        "check",
        "summary",
        "pytorch",
        "onnx",
        f"wrote {out}/GoogLeNetBN.py and {out}/GoogLeNetBN.onnx",
    ]
    assert "6,624,904 parameters for inference, 13,004,888 with the training heads" in text
    assert "logits: relative error" in text and text.rstrip().endswith("done")
    source = (out / "GoogLeNetBN.py").read_text()
    assert load_source(source).GoogLeNetBN().fc.out_features == 1000
    model = onnx.load(str(out / "GoogLeNetBN.onnx"))
    onnx.checker.check_model(model, full_check=True)
    # the same bytes as the API gives for the seeded weights, and the same model as export_onnx
    net = nasdsl.compile_spec(GOOGLENET_BN)
    weights = to_torch(initial_weights(net.graph))
    assert (out / "GoogLeNetBN.onnx").read_bytes() == export_onnx_bytes(net, state_dict=weights)
    assert model == export_onnx(net, state_dict=weights)


def test_compile_onnx_with_weights_dynamic_batch_and_opset(tmp_path, capsys):
    torch.manual_seed(5)
    net = nasdsl.compile_spec(GOOGLENET_BN, {"num_classes": 7})
    weights = {
        k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v
        for k, v in to_torch(initial_weights(net.graph)).items()
    }
    torch.save(weights, tmp_path / "sd.pt")
    target = tmp_path / "m.onnx"
    args = [
        "compile",
        GOOGLENET_BN,
        "--to",
        "onnx",
        "-o",
        str(target),
        "--set",
        "num_classes=7",
        "--weights",
        str(tmp_path / "sd.pt"),
        "--batch",
        "dynamic",
        "--opset",
        "13",
    ]
    assert main(args) == 0
    model = onnx.load(str(target))
    assert model.opset_import[0].version == 13
    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((3, 3, 224, 224)).astype(np.float32)
    (got,) = session.run(None, {"x": x})
    reference = load_source(nasdsl.backends.pytorch.generate_source(net)).GoogLeNetBN().eval()
    reference.load_state_dict(weights)
    with torch.no_grad():
        want = reference(torch.from_numpy(x)).numpy()
    assert got.shape == (3, 7)
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--opset", "12"], "nasdsl compile: error: --opset: expected an integer from 13 to 21, got '12'"),
        (["--batch", "0"], "error: --batch: expected an integer from 1 to 65,536 or 'dynamic', got '0'"),
        (["--weights", "missing.pt"], "cannot read weights from 'missing.pt'"),
    ],
)
def test_bad_onnx_options_exit_2_and_write_nothing(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) if args[0] != "--weights" else _returns_2():
        assert main(["compile", GOOGLENET_BN, "--to", "onnx", "-o", "m.onnx", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "m.onnx").exists()


class _returns_2:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc) -> bool:
        return False


def _exit_code(argv: list[str]) -> int:
    """``main``'s exit status, whether it returns it or argparse exits."""
    try:
        return main(argv)
    except SystemExit as e:
        return int(e.code)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--to", "pytorch", "-o", "m.py", "--weights", "w.pt"], "--weights: only the ONNX backend takes this"),
        (["-o", "m.py", "--opset", "13", "--batch", "2"], "--opset, --batch: only the ONNX backend takes these"),
        (["-o", "m.py", "--with-aux"], "--with-aux: only the ONNX backend takes this"),
        (["--to", "pytorch", "-o", "m.onnx"], "--to pytorch contradicts the output name 'm.onnx' (which means onnx)"),
        (["-o", "model.txt"], "--to: cannot tell the backend from the output name 'model.txt'"),
        (["--to", "tensorflow", "-o", "m.py"], "--to: expected one of pytorch, onnx, got 'tensorflow'"),
        (["-o", "m.onnx", "--batch", "many"], "--batch: expected an integer from 1 to 65,536 or 'dynamic', got 'many'"),
    ],
    ids=["weights", "opset-batch", "with-aux", "contradiction", "unknown-extension", "bad-to", "bad-batch"],
)
def test_options_that_do_not_apply_or_contradict_are_errors(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    assert _exit_code(["compile", GOOGLENET_BN, *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []


def test_the_backend_follows_from_the_extension_and_folders_are_made(tmp_path, capsys):
    assert main(["compile", GOOGLENET_BN, "-o", str(tmp_path / "a" / "m.py")]) == 0
    assert (tmp_path / "a" / "m.py").read_text().startswith("# Generated by nasdsl")
    assert main(["compile", GOOGLENET_BN, "-o", str(tmp_path / "b" / "m.onnx"), "--debug"]) == 0
    assert onnx.load(str(tmp_path / "b" / "m.onnx")).graph.name == "GoogLeNetBN"
    assert main(["--debug", "build", GOOGLENET_BN, "-o", str(tmp_path / "c" / "d")]) == 0
    assert (tmp_path / "c" / "d" / "GoogLeNetBN.onnx").exists()


def test_the_check_line_says_what_it_counts(capsys):
    assert main(["check", str(SPECS / "googlenet.yaml")]) == 0
    line = capsys.readouterr().out.strip()
    assert "6,998,552 parameters for inference, 13,378,280 with the training heads" in line, line


@pytest.mark.parametrize("command", ["check", "summary", "compile", "verify", "build"])
def test_every_command_has_a_description_defaults_examples_and_grouped_limits(command, capsys):
    assert _exit_code([command, "--help"]) == 0
    text = capsys.readouterr().out
    assert "examples:\n  nasdsl " + command in text
    assert "limits:" in text and "--max-nodes" in text.split("limits:", 1)[1]
    assert "(default" in text or command in ("check",)


def test_verify_passes_and_fails_above_tolerance(capsys, monkeypatch):
    spec = str(SPECS / "googlenet.yaml")
    assert main(["verify", spec, "--batch", "2"]) == 0
    assert ": ok" in capsys.readouterr().out
    import nasdsl.backends.verify as verify_module

    real = verify_module.run_onnx

    def off_by_a_percent(*args, **kwargs):
        return {k: v * 1.01 for k, v in real(*args, **kwargs).items()}

    monkeypatch.setattr(verify_module, "run_onnx", off_by_a_percent)
    assert main(["verify", spec]) == 1
    assert "FAILED" in capsys.readouterr().out


def test_readme_python_example_runs(monkeypatch):
    """The README's API example is run as written (from the repository root), and what its
    comments promise holds."""
    import re

    from paths import ROOT

    readme = (ROOT / "README.md").read_text()
    (block,) = re.findall(r"## The Python API\n\n```python\n(.*?)```", readme, flags=re.S)
    monkeypatch.chdir(ROOT)
    scope: dict[str, object] = {}
    exec(compile(block, "README.md", "exec"), scope)  # the project's own README, nothing from a spec
    assert scope["net"].summary()["totals"]["depth"] == 22
    assert isinstance(scope["source"], str) and isinstance(scope["model"], torch.nn.Module)
    assert onnx.ModelProto.FromString(scope["data"]) == scope["proto"]


def test_compiling_pauses_the_garbage_collector_and_restores_it():
    """Compiling runs with the cyclic collector paused (a third of the time at 100k nodes) and
    leaves it as it found it, on or off, error or not."""
    import gc

    from nasdsl.api import few_collections

    assert gc.isenabled()
    with few_collections():
        assert not gc.isenabled()
        with few_collections():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(ZeroDivisionError), few_collections():
        1 / 0  # noqa: B018
    assert gc.isenabled()
    gc.disable()
    try:
        nasdsl.compile_spec(SPECS / "resnet18.yaml")
        assert not gc.isenabled()
    finally:
        gc.enable()
    nasdsl.compile_spec(SPECS / "resnet18.yaml")
    assert gc.isenabled()


def test_a_reader_that_stops_early_ends_the_program_quietly(tmp_path):
    """`nasdsl build SPEC -o DIR | head -1`: the reader closes the pipe after the first line; the
    program's next line finds it closed, and it stops with the shell's status for SIGPIPE (141)
    and writes no traceback. The pipe is made small (one page) so that every step waits for it."""
    import fcntl
    import os
    import subprocess
    import sys

    spec = tmp_path / "small.yaml"
    spec.write_text(
        "nasdsl: 1\nname: Small\ninput: {shape: [3, 8, 8]}\nmodel:\n  conv: {op: conv2d, out: 4, kernel: 3}\n"
    )
    read, write = os.pipe()
    fcntl.fcntl(write, fcntl.F_SETPIPE_SZ, 4096)
    argv = [sys.executable, "-m", "nasdsl", "build", str(spec), "-o", str(tmp_path / "out")]
    proc = subprocess.Popen(argv, stdout=write, stderr=subprocess.PIPE, cwd=ROOT)
    os.close(write)
    with os.fdopen(read, "rb") as out:
        assert b"] check: " in out.readline()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert err == ""


@pytest.mark.parametrize(
    ("argv", "hint"),
    [
        (["search", str(SPECS / "googlenet.yaml"), "--samp", "random", "--minimize", "macs"], "--sampler?"),
        (["compile", str(SPECS / "googlenet.yaml"), "--to", "onnx", "-o", "x.onnx", "--batchsize=2"], "--batch"),
        (["space", str(SPECS / "googlenet.yaml"), "--cont"], "did you mean --count"),
    ],
)
def test_an_option_is_written_whole_and_an_unknown_one_names_the_close_ones(tmp_path, monkeypatch, capsys, argv, hint):
    # argparse takes a prefix of an option for the option: a typo could name another option silently
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"nasdsl {argv[0]}: error: unrecognized arguments: " in err  # the command's error, not the main parser's
    assert hint in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_the_training_script_takes_no_prefix_of_an_option(capsys):
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("nasdsl_example_train_cli", ROOT / "examples" / "train.py")
    train = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = train
    try:
        spec.loader.exec_module(train)
        assert train.parse_args([str(SPECS / "googlenet.yaml"), "--synthetic", "4"]).synthetic == 4
        with pytest.raises(SystemExit) as e:
            train.parse_args([str(SPECS / "googlenet.yaml"), "--synthetic", "4", "--epoch", "1"])
    finally:
        sys.modules.pop(spec.name, None)
    assert e.value.code == 2 and "unrecognized arguments: --epoch 1" in capsys.readouterr().err


def test_a_value_of_a_closed_set_names_the_close_one(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(["compile", str(SPECS / "googlenet.yaml"), "--optimize-for", "openvino-int", "-o", "x.onnx"])
    assert e.value.code == 2
    assert "--optimize-for: expected one of cuda, cpu, onnxruntime, openvino, onnxruntime-int8, openvino-bf16, " in (
        err := capsys.readouterr().err
    )
    assert "got 'openvino-int' (did you mean openvino-int8?)" in err
    assert list(tmp_path.iterdir()) == []


# A spec the compiler accepts but the PyTorch backend cannot write: an op that is a parameter of its
# module, or one called with more than its input, inside a branch. check says so, as compile does.
_FLAT = "name: branch\ninput: {shape: [3, 8, 8]}\nmodel:\n  flat: {op: flatten}\n"
_BRANCH_CASES = {
    "parameter": "{op: parameter, shape: [5]}",
    "layer_scale": "[{op: linear, out: 5}, {op: layer_scale}]",
}


def _branch_spec(op: str) -> str:
    if op == "attention":
        return (
            "name: branch\ninput: {shape: [6, 8], axes: LC}\nmodel:\n  pad: identity\n  pad2: identity\n"
            "  both:\n    add:\n      a: identity\n      b: {op: attention, heads: 2}\n"
        )
    return (
        _FLAT + f"  joined:\n    concat:\n      a: {{op: linear, out: 5}}\n      b: {_BRANCH_CASES[op]}\n    axis: 0\n"
    )


@pytest.mark.parametrize(
    ("op", "where"),
    [
        ("attention", "branch.yaml:9:10: error: model.both.b: "),
        ("layer_scale", "branch.yaml:8:33: error: model.joined.b[1]: "),
        ("parameter", "branch.yaml:8:10: error: model.joined.b: "),
    ],
)
def test_check_refuses_what_the_pytorch_backend_cannot_write(tmp_path, capsys, op, where):
    spec = tmp_path / "branch.yaml"
    spec.write_text(_branch_spec(op))
    assert _exit_code(["check", str(spec)]) == 2
    checked = capsys.readouterr().err
    assert f"{where}the PyTorch backend writes op '{op}'" in checked, checked
    assert "Traceback" not in checked
    out = tmp_path / "m.py"
    assert _exit_code(["compile", str(spec), "-o", str(out)]) == 2
    assert capsys.readouterr().err.strip() == checked.strip()
    assert not out.exists()


def test_writing_pytorch_source_never_imports_onnx():
    """check writes the PyTorch source in memory: importing that backend leaves onnx out (it is half a
    second of every check); exporting ONNX still finds an ensemble's lowerings."""
    import subprocess
    import sys

    code = (
        "import sys, nasdsl\n"
        "from nasdsl.backends.pytorch import generate_source\n"
        f"generate_source(nasdsl.compile_spec({str(SPECS / 'squeezenet1_1.yaml')!r}).graph)\n"
        "assert 'onnx' not in sys.modules, 'onnx imported'\n"
        "from nasdsl.backends.onnx_ops import graph_lowering\n"
        "from nasdsl.backends import onnx\n"
        "from nasdsl.ops import OPS\n"
        "assert 'onnx' in OPS['member'].lowerings and 'onnx' in OPS['average'].lowerings\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_check_says_when_it_did_not_write_the_source(tmp_path, capsys, monkeypatch):
    """Above CHECK_WRITES_UP_TO nodes check does not write the source, and its line says so; the
    limit is the one the docs give."""
    import nasdsl.cli as cli

    text = (ROOT / "docs" / "spec-language.md").read_text()
    assert f"for graphs of up to\n{cli.CHECK_WRITES_UP_TO:,} nodes, and holding no `opaque` op" in text
    spec = tmp_path / "branch.yaml"
    spec.write_text(_branch_spec("parameter"))
    monkeypatch.setattr(cli, "CHECK_WRITES_UP_TO", 4)
    assert main(["check", str(spec)]) == 0
    assert (
        capsys.readouterr().out.rstrip().endswith("its PyTorch source is not written above 4 nodes (compile writes it)")
    )
