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

from paths import SPECS

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
    assert "6,624,904 parameters" in text and "logits: max abs error" in text and text.rstrip().endswith("done")
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
        (["--opset", "12"], "error: --opset: expected 13 to 21, got 12"),
        (["--batch", "0"], "error: --batch: expected a positive integer, got '0'"),
        (["--weights", "missing.pt"], "cannot read weights from 'missing.pt'"),
    ],
)
def test_bad_onnx_options_exit_2_and_write_nothing(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    assert main(["compile", GOOGLENET_BN, "--to", "onnx", "-o", "m.onnx", *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()


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
