"""Hostile inputs to the deployment side: nasdsl bench, nasdsl compile --optimize-for and the latency
model's cache, on specs the tests of test_bench.py do not use (tokens, a video map, several outputs,
a zeroed classifier), with inputs that overflow, artifacts that are wrong and cache files that are
not calibrations. Each bad input is one clear line and exit 2, nothing written; what the bench
prints is what it measured against the fp32 PyTorch reference. Tiny models; no torch.compile.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import shlex

import numpy as np
import pytest

from nasdsl.bench import artifacts, calibrate, latency, measure
from nasdsl.cli import main

TINY = """\
nasdsl: 1
name: Tiny
input: {name: x, shape: [3, 16, 16]}
variables:
  num_classes: 10
model:
  conv: [{op: conv2d, out: 8, kernel: 3, padding: 1, bias: false}, batch_norm, relu]
  pool: {op: max_pool, kernel: 2}
  conv2: [{op: conv2d, out: 16, kernel: 3, padding: 1}, relu]
  gap: global_avg_pool
  flat: flatten
  fc: {op: linear, out: num_classes}
"""

TOKENS = """\
nasdsl: 1
name: Tokens
input: {name: x, shape: [16, 32], axes: LC}
model:
  norm: {op: layer_norm, dim: last}
  attn: {op: attention, heads: 4}
  first: {op: select, axis: 0}
  head: {op: linear, out: 10}
"""

VIDEO = """\
nasdsl: 1
name: Video
input: {name: x, shape: [3, 4, 9, 9]}
model:
  conv: [{op: conv3d, out: 8, kernel: 3, padding: 1, bias: false}, batch_norm, relu]
  gap: global_avg_pool
  flat: flatten
  fc: {op: linear, out: 3}
"""

#: two outputs at inference: the logits and an embedding (spec-language.md's outputs)
TWO_OUTPUTS = """\
nasdsl: 1
name: TwoOutputs
input: {name: x, shape: [3, 12, 12]}
model:
  conv: [{op: conv2d, out: 8, kernel: 3, padding: 1}, relu]
  gap: global_avg_pool
  flat: flatten
  emb: {op: linear, out: 6}
  fc: {op: linear, out: 4}
outputs:
  logits: {from: fc}
  embedding: {from: emb, loss_weight: 0}
"""

#: a classifier whose seeded initialisation is zero, as ViT's head (specs/vit_b_16.yaml)
ZEROED = TINY.replace(
    "fc: {op: linear, out: num_classes}", "fc: {op: linear, out: 10, init: {weight: zeros, bias: zeros}}"
)

QUICK = ["--repeats", "1", "--threads", "1"]


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code
    return code, out.getvalue(), err.getvalue()


def one_error(code: int, out: str, err: str, *parts: str) -> None:
    """Exit 2, nothing on stdout, one line on stderr holding every part, no traceback."""
    assert code == 2 and out == "", (code, out, err)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for part in parts:
        assert part in err, err


@pytest.fixture(scope="module")
def specs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("deploy")
    paths = {}
    for name, text in {"tiny": TINY, "tokens": TOKENS, "video": VIDEO, "two": TWO_OUTPUTS, "zeroed": ZEROED}.items():
        paths[name] = folder / f"{name}.yaml"
        paths[name].write_text(text)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 16, 16), dtype=np.float32)
    np.save(folder / "huge.npy", np.full((4, 3, 16, 16), 1e38, np.float32))  # finite inputs, overflowing sums
    half = x.copy()
    half[:2] = 1e38  # the calibration half overflows, the evaluation half is ordinary
    np.save(folder / "half.npy", half)
    np.save(folder / "same.npy", np.repeat(x[:1], 4, axis=0))
    np.save(folder / "val.npy", rng.standard_normal((16, 3, 16, 16), dtype=np.float32))
    paths["folder"] = folder
    return paths


# ---------------------------------------------------------------------------
# Layouts: channels-last exists for 2-D and 3-D maps alone


def test_channels_last_follows_the_input(specs):
    """eager-cl on tokens failed in every row ('required rank 4 tensor to use channels_last format');
    a video map needs channels_last_3d. Now: tokens refuse eager-cl by name (exit 2), the plan leaves
    it out by default, and a video map runs it, computing the reference's function."""
    from nasdsl.bench.engines import channels_last

    assert (channels_last("CHW"), channels_last("CTHW"), channels_last("LC"), channels_last("CL")) == (
        "channels_last",
        "channels_last_3d",
        None,
        None,
    )
    one_error(
        *run(["bench", str(specs["tokens"]), "--engines", "eager,eager-cl", *QUICK]),
        "error: --engines: eager-cl: the input (LC) is no 2-D or 3-D map",
    )
    assert [c.engine for c in measure.plan(["eager", "eager-cl"], ["fp32"], [1], ("fp32",), None)] == ["eager"]
    code, out, err = run(["bench", str(specs["video"]), "--engines", "eager-cl", "--precisions", "fp32",
                          "--batch", "2", "--format", "json", *QUICK])  # fmt: skip
    assert code == 0, err
    (row,) = json.loads(out)["rows"]
    assert row["error"] == "" and row["deviation"] < 1e-5


def test_the_layout_each_engine_feeds(specs, monkeypatch):
    """torch.compile is fed the contiguous layout where there is no channels-last one (torch.compile
    itself stubbed: no inductor here); by default eager-cl is left out, said so."""
    import torch

    from nasdsl.bench import engines
    from nasdsl.bench.engines import Config, torch_runner

    monkeypatch.setattr(torch, "compile", lambda module: module)  # the layout is nasdsl's; inductor is not run
    x = np.zeros((2, 3, 4, 9, 9), np.float32)
    cl3d = torch_runner(torch.nn.Identity(), Config("eager-cl", "fp32", 2, "channels_last_3d"), 1).feed(x)
    assert cl3d.is_contiguous(memory_format=torch.channels_last_3d) and not cl3d.is_contiguous()
    flat = torch_runner(torch.nn.Identity(), Config("compile", "fp32", 2, None), 1).feed(
        np.zeros((2, 16, 32), np.float32)
    )
    assert flat.is_contiguous()
    monkeypatch.setattr(engines, "ENGINES", {"eager": ("fp32",), "eager-cl": ("fp32", "bf16")})
    code, out, err = run(["bench", str(specs["tokens"]), "--precisions", "fp32", "--batch", "1", *QUICK])
    assert code == 0, err
    assert "eager-cl: not run: the input (LC) is no 2-D or 3-D map, which a channels-last layout needs" in out
    assert [line.split()[0] for line in out.splitlines() if line.endswith("cpu *") or line.endswith("cpu")] == ["eager"]


# ---------------------------------------------------------------------------
# What the bench prints is what it measured


def test_every_output_is_compared(specs, monkeypatch):
    """A model with two outputs at inference: an artifact whose second output is wrong (negated)
    deviates by 2 (|-e - e| / max |e|), where comparing the first output alone saw nothing."""
    import onnx
    from onnx import helper

    made = artifacts.onnx_artifact

    def second_negated(*args, **kwargs):
        model = onnx.load_from_string(made(*args, **kwargs))
        second = model.graph.output[1]
        model.graph.node.append(helper.make_node("Neg", [second.name], [second.name + "_neg"]))
        second.name += "_neg"
        return model.SerializeToString()

    monkeypatch.setattr(artifacts, "onnx_artifact", second_negated)
    code, out, err = run(["bench", str(specs["two"]), "--engines", "eager,onnxruntime", "--precisions", "fp32",
                          "--batch", "3", "--format", "json", *QUICK])  # fmt: skip
    assert code == 0, err
    rows = {r["engine"]: r for r in json.loads(out)["rows"]}
    assert rows["eager"]["deviation"] < 1e-5
    assert rows["onnxruntime"]["deviation"] == pytest.approx(2.0) and not rows["onnxruntime"]["fastest"]


def test_a_configuration_whose_outputs_are_not_finite_failed(specs, monkeypatch):
    """An artifact computing NaN was a row 'max deviation inf' (or nan), timed, and --format json
    wrote Infinity/NaN, which strict JSON readers refuse. Now it is a failed row, not timed, and
    the JSON is strict."""
    import onnx
    from onnx import helper

    made = artifacts.onnx_artifact

    def nan(*args, **kwargs):
        model = onnx.load_from_string(made(*args, **kwargs))
        out = model.graph.output[0]
        model.graph.node.extend([
            helper.make_node("Abs", [out.name], [out.name + "_abs"]),
            helper.make_node("Neg", [out.name + "_abs"], [out.name + "_neg"]),
            helper.make_node("Sqrt", [out.name + "_neg"], [out.name + "_nan"]),
        ])  # fmt: skip
        out.name += "_nan"
        return model.SerializeToString()

    monkeypatch.setattr(artifacts, "onnx_artifact", nan)
    code, out, err = run(["bench", str(specs["tiny"]), "--engines", "onnxruntime", "--precisions", "fp32",
                          "--batch", "2", "--format", "json", *QUICK])  # fmt: skip
    assert code == 0, err

    def refuse(word):
        raise AssertionError(f"not strict JSON: {word}")

    (row,) = json.loads(out, parse_constant=refuse)["rows"]
    assert row["images_per_s"] is None and row["deviation"] is None
    assert row["error"] == "its outputs ((10,)) are not finite or not the reference's ((10,)): not timed"


def test_inputs_that_overflow_are_refused(specs, tmp_path):
    """Finite inputs of 1e38 overflow the model: the bench said 'max deviation inf, top-1 agree
    100%' (and the int8 row failed with ONNX Runtime's 'AssertionError: scale issue'); compile
    was an internal error (exit 1). Now both name the file or the node, exit 2, nothing written."""
    huge = specs["folder"] / "huge.npy"
    one_error(
        *run(["bench", str(specs["tiny"]), "--engines", "onnxruntime", "--data", str(huge), *QUICK]),
        f"error: {huge}: the fp32 PyTorch reference's output is not finite (inf or NaN) on evaluation sample 0",
        "the largest here is 1e+38",
    )
    out = tmp_path / "int8.onnx"
    one_error(
        *run(
            [
                "compile",
                str(specs["tiny"]),
                "--optimize-for",
                "onnxruntime-int8",
                "--batch",
                "2",
                "--data",
                str(huge),
                "-o",
                str(out),
            ]
        ),  # fmt: skip
        "the calibration inputs drive the fp32 model to values that are not finite (inf or NaN) from node 'gap'",
    )
    assert not out.exists()
    # in the bench the evaluation half is ordinary: the int8 row alone fails, saying why
    code, text, err = run(["bench", str(specs["tiny"]), "--engines", "onnxruntime", "--batch", "2",
                           "--data", str(specs["folder"] / "half.npy"), "--format", "json", *QUICK])  # fmt: skip
    assert code == 0, err
    rows = {r["precision"]: r for r in json.loads(text)["rows"]}
    assert rows["fp32"]["error"] == "" and rows["fp32"]["deviation"] < 1e-5
    assert rows["int8"]["error"].startswith("the calibration inputs drive the fp32 model to values that are not")


def test_a_reference_that_checks_nothing_is_said_so(specs):
    """A zeroed classifier gives 0 for every input: every engine 'deviated by 0.00e+00' and the
    fastest was marked as verified. Now no deviation is claimed and none is marked. A reference
    that varies across the inputs by no more than the tolerance (here: --data of one sample
    repeated; GoogLeNet-BN's seeded initialisation gives every input the same logits) cannot
    tell a wrong function from a right one: the deviation is printed, none is marked."""
    code, out, err = run(["bench", str(specs["zeroed"]), "--engines", "eager,onnxruntime", "--precisions", "fp32",
                          "--batch", "2", "--format", "json", *QUICK])  # fmt: skip
    assert code == 0, err
    report = json.loads(out)
    assert [r["deviation"] for r in report["rows"]] == [None, None] and report["fastest"] == []
    assert any(n.startswith("the reference's output is 0 on every evaluation input") for n in report["notes"])
    same = str(specs["folder"] / "same.npy")
    code, out, err = run(["bench", str(specs["tiny"]), "--engines", "onnxruntime", "--precisions", "fp32",
                          "--batch", "2", "--data", same, "--format", "json", *QUICK])  # fmt: skip
    assert code == 0, err
    report = json.loads(out)
    assert report["fastest"] == [] and report["rows"][0]["deviation"] < 1e-5  # measured, but proves nothing
    assert "the reference's output varies by 0 of its largest magnitude across the 2 evaluation inputs" in out


def test_the_fastest_line_writes_the_bytes_measured(specs, tmp_path):
    """The command printed for the fastest configuration carried neither --set, --weights nor
    --data: run as printed, it wrote another model than the one measured. Now it writes the
    measured bytes (the row's sha256)."""
    import torch

    import nasdsl

    weights = tmp_path / "w.pt"
    with torch.random.fork_rng():  # the training model takes torch's default initialisation: seeded here
        torch.manual_seed(0)
        model = nasdsl.build_model(specs["tiny"], num_classes=7)
    torch.save({k: v + 0.01 if v.is_floating_point() else v for k, v in model.state_dict().items()}, weights)
    data = specs["folder"] / "val.npy"
    code, out, err = run(["bench", str(specs["tiny"]), "--set", "num_classes=7", "--weights", str(weights),
                          "--data", str(data), "--engines", "onnxruntime", "--precisions", "int8",
                          "--tolerance", "0.03", "--batch", "2", "--format", "json", *QUICK])  # fmt: skip
    assert code == 0, err
    report = json.loads(out)
    (row,) = report["fastest"]
    line = report["fastest_text"][0].split(": ", 2)[2]
    argv = shlex.split(line)
    assert argv[:2] == ["nasdsl", "compile"] and "--weights" in argv and "--data" in argv
    written = tmp_path / "model.onnx"
    argv[argv.index("-o") + 1] = str(written)
    code, _, err = run(argv[1:])
    assert code == 0, err
    assert hashlib.sha256(written.read_bytes()).hexdigest() == row["sha256"]


# ---------------------------------------------------------------------------
# compile --optimize-for: an artifact is checked before it is written


def test_a_wrong_artifact_is_refused_and_not_written(specs, tmp_path, monkeypatch):
    """A quantiser that returned a wrong model (here: the fp32 model with its logits negated) was
    written silently. Now the artifact is run and compared with the fp32 export: a deviation of 2,
    above int8's tolerance, is refused, and the file already there is left as it was."""
    import onnx
    from onnx import helper

    def negated(model: bytes, calibration, batch) -> bytes:
        proto = onnx.load_from_string(model)
        out = proto.graph.output[0]
        proto.graph.node.append(helper.make_node("Neg", [out.name], [out.name + "_neg"]))
        out.name += "_neg"
        return proto.SerializeToString()

    target = tmp_path / "int8.onnx"
    target.write_bytes(b"before")
    monkeypatch.setattr(artifacts, "quantize", negated)
    one_error(
        *run(["compile", str(specs["tiny"]), "--optimize-for", "onnxruntime-int8", "--batch", "2", "-o", str(target)]),
        "error: --optimize-for: the onnxruntime-int8 artifact deviates from the fp32 export by 2 ",
        "above the int8 tolerance 0.1: not written",
    )
    assert target.read_bytes() == b"before"
    monkeypatch.undo()
    code, _, err = run(["compile", str(specs["tiny"]), "--optimize-for", "onnxruntime-int8", "--batch", "2",
                        "-o", str(target)])  # fmt: skip
    assert code == 0, err


def test_the_check_fits_the_memory_limit(specs, tmp_path):
    """The check runs the artifact at its batch: --batch 65536 allocated every sample before any
    limit was asked (an internal MemoryError); now the limit is asked first, exit 2."""
    out = tmp_path / "m.onnx"
    one_error(
        *run(
            [
                "compile",
                str(specs["tiny"]),
                "--optimize-for",
                "openvino-bf16",
                "--batch",
                "4096",
                "--max-memory",
                "10M",
                "-o",
                str(out),
            ]
        ),  # fmt: skip
        "error: --batch: checking the openvino-bf16 artifact at batch 4,096 needs about",
    )
    assert not out.exists()


def test_every_target_of_a_two_output_model_is_checked_and_written(specs, tmp_path):
    """Every ONNX target of a model with two outputs passes its check (each output within its
    precision's tolerance of the fp32 export, run in ONNX Runtime) and is written."""
    from nasdsl.bench.engines import open_onnx
    from nasdsl.optimize import target_names

    x = np.random.default_rng(2).standard_normal((2, 3, 12, 12), dtype=np.float32)
    reference = None
    for name in [t for t in target_names() if t.startswith(("onnxruntime", "openvino"))]:
        out = tmp_path / f"{name}.onnx"
        code, _, err = run(["compile", str(specs["two"]), "--optimize-for", name, "--batch", "2", "-o", str(out)])
        assert code == 0, (name, err)
        got = open_onnx(out.read_bytes(), "onnxruntime", "fp32", 1).every(x)
        reference = reference or got  # onnxruntime's, the export itself, comes first
        assert len(got) == 2
        assert artifacts.deviation(got, reference) <= artifacts.TOLERANCE["int8" if "int8" in name else "fp32"]


# ---------------------------------------------------------------------------
# Options


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--tolerance", "inf"], "--tolerance: expected a number above 0, got 'inf' (expected a finite one)"),
        (["--engines", "onnxrutime"], "(did you mean 'onnxruntime' for 'onnxrutime'?)"),
        (["--engines", "ONNXRuntime"], "(did you mean 'onnxruntime' for 'ONNXRuntime'?)"),
        (["--calibrate", "--engine", "openvin"], "(did you mean 'openvino' for 'openvin'?)"),
    ],
    ids=["tolerance-inf", "engine-typo", "engine-case", "latency-engine-typo"],
)
def test_bad_option_values(specs, argv, message):
    one_error(*run(["bench", str(specs["tiny"]), *argv]), message)


def test_one_thread_is_singular(specs):
    code, out, err = run(["bench", str(specs["tiny"]), "--engines", "eager", "--batch", "1", *QUICK])
    assert code == 0, err
    assert "1 thread per engine;" in out


# ---------------------------------------------------------------------------
# The latency model's cache file


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A valid calibration in a cache of its own; returns its path and JSON."""
    from nasdsl.bench.hardware import machine

    monkeypatch.setenv(latency.CACHE_ENV, str(tmp_path))
    coefficients = dict.fromkeys(latency.columns(), 1e-6)
    model = latency.LatencyModel(
        "onnxruntime", latency.engine_version("onnxruntime"), machine().key(), 1, coefficients, {"networks": 3}
    )
    path = latency.save(model)
    return path, json.loads(path.read_text())


MODEL = "coefficients.model: expected a finite number >= 0,"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["coefficients"].update(model="abc"), f"{MODEL} got 'abc'"),
        (lambda d: d["coefficients"].update(model=-1), f"{MODEL} got -1"),
        (lambda d: d["coefficients"].update(model=None), f"{MODEL} got None"),
        (lambda d: d["coefficients"].update(model=True), f"{MODEL} got True"),
        (lambda d: d["coefficients"].pop("model"), "coefficients: expected an object with the"),
        (lambda d: d.update(fit="x"), "fit: expected an object of numbers"),
    ],
    ids=["string", "negative", "null", "bool", "missing", "fit"],
)  # fmt: skip
def test_a_corrupt_calibration_is_a_located_error(specs, cache, change, message):
    """A cache file edited or damaged gave internal errors (TypeError, AttributeError) or
    predictions of nan or negative milliseconds."""
    path, data = cache
    change(data)
    path.write_text(json.dumps(data))
    one_error(*run(["summary", str(specs["tiny"]), "--latency"]), f"error: {path}: not a latency model: {message}")


def test_unreadable_calibrations(specs, cache):
    """Not JSON, not an object, NaN, a folder: each names the file (before: 'no latency model for
    onnxruntime on this machine', while a file was there)."""
    path, data = cache
    for text, message in [('{"format": 6', "not JSON"), ("[]", "expected a JSON object, got list")]:
        path.write_text(text)
        one_error(*run(["summary", str(specs["tiny"]), "--latency"]), f"error: {path}: not a latency model: {message}")
    data["coefficients"]["traffic"] = float("nan")
    path.write_text(json.dumps(data))  # json writes NaN
    one_error(*run(["summary", str(specs["tiny"]), "--latency"]), "coefficients.traffic: expected a finite number")
    path.unlink()
    path.mkdir()
    one_error(*run(["summary", str(specs["tiny"]), "--latency"]), f"error: {path}: not a latency model: cannot read it")


def test_calibrate_replaces_a_corrupt_calibration(cache, monkeypatch):
    """bench --calibrate measures again where the file is corrupt, saying so, and replaces it; a
    calibration of another engine version is ignored (measured again) without a word."""
    path, data = cache
    path.write_text("{")
    fresh = latency.LatencyModel(
        "onnxruntime", data["version"], data["machine"], 1, dict.fromkeys(latency.columns(), 2e-6), {}
    )
    monkeypatch.setattr(calibrate, "calibrate", lambda engine, threads, progress: fresh)
    said = io.StringIO()
    assert calibrate.load_or_calibrate("onnxruntime", progress=said) == fresh
    assert f"{path}: not a latency model: not JSON" in said.getvalue() and "measuring again" in said.getvalue()
    assert latency.cached("onnxruntime") == fresh
    data["version"] = "0.0.1"  # another version's file at this path: not a calibration for this one
    path.write_text(json.dumps(data))
    assert latency.cached("onnxruntime") is None


def test_the_check_reports_what_it_measured(specs):
    """make_artifact's deviation is the one ONNX Runtime's own sessions give (the int8 artifact
    against the fp32 export on the first 16 calibration inputs), and within int8's tolerance."""
    import onnxruntime as ort

    import nasdsl
    from nasdsl.bench.data import generated

    g = nasdsl.compile_spec(specs["tiny"]).graph
    x = generated((3, 16, 16)).calibration
    made = artifacts.make_artifact(g, "onnxruntime-int8", calibration=x, batch=16)
    assert (made.engine, made.samples) == ("onnxruntime", 16)

    def outputs(data: bytes) -> np.ndarray:
        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: x})[0]

    fp32 = outputs(artifacts.onnx_artifact(g, "onnxruntime", calibration=x, batch=16))
    want = np.abs(outputs(made.data) - fp32).max() / np.abs(fp32).max()
    assert made.deviation == pytest.approx(want, rel=1e-6) and 0 < made.deviation < artifacts.TOLERANCE["int8"]


def test_compile_takes_a_tolerance_for_the_artifact_check(specs, tmp_path):
    """An int8 artifact beyond the fixed tolerance could not be written at all: --tolerance sets it
    (tighter here, so that the tiny model's deviation is beyond it), and only for artifact targets."""
    out = tmp_path / "int8.onnx"
    tiny = str(specs["tiny"])
    one_error(
        *run(["compile", tiny, "--optimize-for", "onnxruntime-int8", "--tolerance", "1e-9", "-o", str(out)]),
        "error: --optimize-for: the onnxruntime-int8 artifact deviates from the fp32 export by ",
        "above the int8 tolerance given (--tolerance) 1e-09: not written",
    )
    assert not out.exists()
    code, text, err = run(["compile", tiny, "--optimize-for", "onnxruntime-int8", "--tolerance", "0.5", "-o", str(out)])
    assert code == 0 and out.exists(), err
    one_error(*run(["compile", tiny, "--to", "onnx", "--tolerance", "0.5", "-o", str(out)]), "--tolerance: only an")
    for bad in ("0", "nan", "inf", "-1"):
        code, text, err = run(["compile", tiny, "--optimize-for", "onnxruntime-int8", "--tolerance", bad, "-o", "x"])
        assert code == 2 and "--tolerance: expected a finite number above 0" in err


def test_compile_says_the_deviation_it_checked(specs, tmp_path):
    out = tmp_path / "int8.onnx"
    code, text, err = run(["compile", str(specs["tiny"]), "--optimize-for", "onnxruntime-int8", "-o", str(out)])
    assert code == 0, err
    found = re.fullmatch(
        rf"wrote {re.escape(str(out))} \(([\d,]+) bytes, the onnxruntime-int8 artifact; deviation (\S+) from the fp32 "
        r"export in onnxruntime, (\d+) inputs\)\n",
        text,
    )
    assert found is not None, text
    assert int(found[1].replace(",", "")) == out.stat().st_size
    assert 0 < float(found[2]) < artifacts.TOLERANCE["int8"] and int(found[3]) >= 2


def test_calibrate_refuses_an_unwritable_cache_before_measuring(specs, tmp_path, monkeypatch):
    """A cache 'folder' that is a file: calibrating measured for minutes, then failed to save;
    summary --latency called it a corrupt calibration. Now calibrate refuses at once and summary
    says there is none."""
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    monkeypatch.setenv(latency.CACHE_ENV, str(blocked))

    def measured(*args, **kwargs):
        raise AssertionError("measured before the cache folder was checked")

    monkeypatch.setattr(calibrate, "calibrate", measured)
    one_error(
        *run(["bench", str(specs["tiny"]), "--calibrate"]),
        f"error: {blocked}/latency: cannot make the cache folder (Not a directory): set $NASDSL_CACHE_DIR",
    )
    one_error(*run(["summary", str(specs["tiny"]), "--latency"]), "run 'nasdsl bench SPEC --calibrate' first")


@pytest.mark.parametrize(
    ("argv", "option"),
    [(["--threads", "4"], "--threads"), (["--batch", "1,8"], "--batch"), (["--format", "json"], "--format"),
     (["--engines", "onnxruntime", "--repeats", "3"], "--engines, --repeats")],
    ids=["threads", "batch", "format", "two"],
)  # fmt: skip
def test_calibrate_refuses_the_options_of_a_measurement(specs, tmp_path, monkeypatch, argv, option):
    """bench --calibrate --threads 4 calibrated one thread and said nothing (every option of a
    measurement was ignored with --calibrate)."""
    monkeypatch.setenv(latency.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(calibrate, "calibrate", lambda *a, **k: pytest.fail("calibrated"))
    one_error(
        *run(["bench", str(specs["tiny"]), "--calibrate", *argv]),
        f"error: {option.split(',')[0]}: {option}: not with --calibrate, which measures its own networks",
    )


@pytest.mark.parametrize("name", ["openvino-", "cpu-", "onnxruntime-fp32", "OpenVINO", "openvino-bf16 "])
def test_a_target_is_written_one_way(name):
    """deployment('openvino-') was ('openvino', 'fp32'): an artifact recorded 'openvino-' as its target."""
    from nasdsl.optimize import OptimizeError, deployment

    with pytest.raises(OptimizeError, match="unknown optimisation target"):
        deployment(name)


def test_compile_writes_one_line_for_an_artifact_named_with_a_newline(specs, tmp_path):
    out = tmp_path / "we\nird.onnx"
    code, text, err = run(["compile", str(specs["tiny"]), "--optimize-for", "openvino-bf16", "-o", str(out)])
    assert code == 0, err
    assert len(text.splitlines()) == 1, text


def test_the_fastest_is_an_artifact_compile_writes():
    """With --tolerance 0.5 an int8 row 0.2 off was marked fastest, and the compile line printed
    for it was refused (int8's tolerance is 0.1): an ONNX row is marked within both."""
    rows = [
        measure.Row("onnxruntime", "int8", 1, "onnxruntime-int8", 300.0, 1.0, 0.2, None, "a" * 64),
        measure.Row("openvino", "bf16", 1, "openvino-bf16", 200.0, 1.0, 0.04, None, "b" * 64),
        measure.Row("eager-cl", "bf16", 1, "cpu", 250.0, 1.0, 0.3, None, None),  # no artifact: --tolerance alone
    ]
    assert [r.engine for r in measure.mark_fastest(rows, 0.5) if r.fastest] == ["eager-cl"]
    assert [r.engine for r in measure.mark_fastest(rows, 0.1) if r.fastest] == ["openvino"]
