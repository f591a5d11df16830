"""nasdsl bench and the latency model: the table's columns and formats, the fastest
configuration within a tolerance, the --optimize-for artifact byte for byte what the bench
measured, bad options and a missing OpenVINO (exit 2, one clear line), the calibration cache
and its invalidation, the latency column of space/sweep/summary against a full compile, and
the least-squares fit against known coefficients. Tiny models; never an absolute time.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sys

import numpy as np
import pytest

from nasdsl.bench import calibrate, latency, measure
from nasdsl.bench.engines import available
from nasdsl.bench.hardware import Machine
from nasdsl.cli import main

TINY = """\
nasdsl: 1
name: Tiny
input: {name: x, shape: [3, 16, 16]}
model:
  conv: [{op: conv2d, out: 8, kernel: 3, padding: 1, bias: false}, batch_norm, relu]
  pool: {op: max_pool, kernel: 2}
  conv2: [{op: conv2d, out: 16, kernel: 3, padding: 1}, relu]
  gap: global_avg_pool
  flat: flatten
  fc: {op: linear, out: 10}
"""

#: a space over the input size alone: the latency model's input term tells its variants apart
SPACE = TINY.replace("shape: [3, 16, 16]", "shape: [3, size, size]").replace(
    "model:", "variables:\n  size: {choice: [8, 16, 24, 32]}\nmodel:"
)

ONNX_ENGINES = "onnxruntime,openvino" if available("openvino") else "onnxruntime"


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "tiny.yaml"
    path.write_text(TINY)
    return path


@pytest.fixture(scope="module")
def report(tiny):
    """One bench run in JSON, shared: every ONNX engine at every precision, and eager, batch 2."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = main(["bench", str(tiny), "--engines", "eager," + ONNX_ENGINES, "--batch", "2", "--repeats", "1",
                     "--threads", "1", "--precisions", "fp32,int8", "--format", "json"])  # fmt: skip
    assert code == 0
    return json.loads(out.getvalue())


def test_json_rows_carry_the_columns_and_every_configuration(report):
    assert report["columns"] == [
        "engine", "precision", "batch", "images_per_s", "latency_ms", "deviation", "agreement", "target",
    ]  # fmt: skip
    got = {(r["engine"], r["precision"], r["target"]) for r in report["rows"]}
    want = {
        ("eager", "fp32", "cpu"),
        ("onnxruntime", "fp32", "onnxruntime"),
        ("onnxruntime", "int8", "onnxruntime-int8"),
    }
    if available("openvino"):
        want |= {("openvino", "fp32", "openvino"), ("openvino", "int8", "openvino-int8")}
    assert got == want
    for r in report["rows"]:
        assert r["error"] == "" and r["batch"] == 2
        assert r["images_per_s"] == pytest.approx(2 / (r["latency_ms"] / 1e3))
        assert r["agreement"] is None  # generated data: no agreement claimed
        # fp32 engines compute the reference's function; int8 deviates, but boundedly
        assert r["deviation"] < (1e-5 if r["precision"] == "fp32" else 0.2)
    assert "generated data" in report["data"]


def test_compile_optimize_for_writes_the_bytes_the_bench_measured(report, tiny, tmp_path, capsys):
    onnx_rows = [r for r in report["rows"] if r["sha256"]]
    assert {r["target"] for r in onnx_rows} >= {"onnxruntime", "onnxruntime-int8"}
    for r in onnx_rows:
        out = tmp_path / f"{r['target']}.onnx"
        code, _, err = run(
            ["compile", str(tiny), "--optimize-for", r["target"], "--batch", "2", "-o", str(out)], capsys
        )
        assert code == 0, err
        assert hashlib.sha256(out.read_bytes()).hexdigest() == r["sha256"], r["target"]


def test_an_artifact_opens_as_it_was_measured(report, tiny, tmp_path, capsys):
    """The int8 artifact names its target, and run from the file it gives the outputs the bench
    compared: its deviation from the fp32 ONNX export is what the bench reported, within fp32 noise."""
    from nasdsl.bench.artifacts import target_of
    from nasdsl.bench.engines import open_onnx

    paths = {}
    for target in ("onnxruntime", "onnxruntime-int8"):
        paths[target] = tmp_path / f"{target}.onnx"
        assert (
            run(["compile", str(tiny), "--optimize-for", target, "--batch", "2", "-o", str(paths[target])], capsys)[0]
            == 0
        )
    assert target_of(paths["onnxruntime-int8"].read_bytes()) == "onnxruntime-int8"
    assert target_of(paths["onnxruntime"].read_bytes()) == "onnxruntime"
    x = np.random.default_rng(1).standard_normal((2, 3, 16, 16), dtype=np.float32)
    int8 = open_onnx(paths["onnxruntime-int8"].read_bytes(), "onnxruntime", "int8", 1)(x)
    fp32 = open_onnx(paths["onnxruntime"].read_bytes(), "onnxruntime", "fp32", 1)(x)
    row = next(r for r in report["rows"] if r["target"] == "onnxruntime-int8")
    assert np.abs(int8 - fp32).max() / np.abs(fp32).max() == pytest.approx(row["deviation"], rel=1e-3, abs=1e-6)


TOKENS = """\
nasdsl: 1
name: Tokens
input: {name: x, shape: [16, 32], axes: LC}
model:
  norm: {op: layer_norm, dim: last}
  attn: {op: attention, heads: 4}
  mlp: [{op: linear, out: 64, dim: last}, gelu, {op: linear, out: 32, dim: last}]
  first: {op: select, axis: 0}
  head: {op: linear, out: 10}
"""


def test_int8_quantises_every_weight_as_a_weight(tmp_path, capsys):
    """In the int8 artifact every matrix product's weight is an int8 initializer with a scale per
    output channel, dequantised: the export's Transpose(weight) is folded before quantising, not
    taken for an activation (quantised per tensor to uint8 at run time). Its output stays near
    the fp32 export's."""
    import onnx
    from onnx import numpy_helper

    from nasdsl.bench.engines import open_onnx

    spec = tmp_path / "tokens.yaml"
    spec.write_text(TOKENS)
    paths = {t: tmp_path / f"{t}.onnx" for t in ("onnxruntime", "onnxruntime-int8")}
    for target, path in paths.items():
        code, _, err = run(["compile", str(spec), "--optimize-for", target, "--batch", "2", "-o", str(path)], capsys)
        assert code == 0, err
    model = onnx.load(str(paths["onnxruntime-int8"]))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    made = {o: n for n in model.graph.node for o in n.output}
    products = [n for n in model.graph.node if n.op_type in ("MatMul", "Gemm")]
    weights = 0
    for node in products:
        sources = [made.get(i) for i in node.input[:2]]
        assert all(s is not None and s.op_type == "DequantizeLinear" for s in sources), node.name
        for s in sources:
            if s.input[0] in inits:  # a weight
                weights += 1
                assert inits[s.input[0]].dtype == np.int8, node.name
                assert inits[s.input[1]].size > 1, f"{node.name}: one scale for the whole weight"
    # the attention's two projections, the MLP's two layers and the head
    assert weights == 5
    x = np.random.default_rng(3).standard_normal((2, 16, 32), dtype=np.float32)
    int8 = open_onnx(paths["onnxruntime-int8"].read_bytes(), "onnxruntime", "int8", 1)(x)
    fp32 = open_onnx(paths["onnxruntime"].read_bytes(), "onnxruntime", "fp32", 1)(x)
    assert np.abs(int8 - fp32).max() / np.abs(fp32).max() < 0.1


def test_table_and_markdown_show_the_columns_and_mark_the_fastest(tiny, capsys):
    argv = ["bench", str(tiny), "--engines", "onnxruntime", "--batch", "1,2", "--repeats", "1", "--threads", "1"]
    code, out, err = run(argv, capsys)
    assert code == 0, err
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("engine"))
    assert lines[head].split() == ["engine", "precision", "batch", "img/s", "latency", "ms", "max", "deviation",
                                   "top-1", "agree", "target"]  # fmt: skip
    rows = lines[head + 2 : head + 2 + 4]
    assert [r.split()[:3] for r in rows] == [
        ["onnxruntime", "fp32", "1"], ["onnxruntime", "int8", "1"],
        ["onnxruntime", "fp32", "2"], ["onnxruntime", "int8", "2"],
    ]  # fmt: skip
    assert sum(r.endswith("*") for r in rows) == 2  # one fastest per batch size
    assert "--optimize-for onnxruntime" in out and "[" in err  # the progress bar is on stderr
    code, out, _ = run([*argv, "--format", "markdown"], capsys)
    assert (
        code == 0
        and "| engine | precision | batch | img/s | latency ms | max deviation | top-1 agree | target |" in out
    )


def _row(engine, precision, batch, speed, deviation, error=""):
    return measure.Row(engine, precision, batch, engine, speed, 1.0, deviation, None, None, error)


def test_the_fastest_is_chosen_per_batch_within_the_tolerance():
    rows = [
        _row("a", "fp32", 1, 100.0, 1e-7),
        _row("b", "int8", 1, 300.0, 5e-2),  # fastest, but deviates too much
        _row("c", "bf16", 1, 200.0, 5e-3),
        _row("d", "fp32", 8, 900.0, None, error="RuntimeError: no"),  # failed: never chosen
        _row("e", "fp32", 8, 400.0, 0.0),
    ]
    marked = measure.mark_fastest(rows, 1e-2)
    assert [r.engine for r in marked if r.fastest] == ["c", "e"]
    assert [r.engine for r in measure.mark_fastest(rows, 0.1) if r.fastest] == ["b", "e"]
    assert [r.engine for r in measure.mark_fastest(rows, 1e-6) if r.fastest] == ["a", "e"]


def test_data_gives_top1_agreement(tiny, tmp_path, capsys):
    x = np.random.default_rng(3).standard_normal((6, 3, 16, 16), dtype=np.float32)
    np.savez(tmp_path / "val.npz", x=x)
    argv = ["bench", str(tiny), "--engines", "onnxruntime", "--precisions", "fp32", "--batch", "2", "--repeats", "1",
            "--threads", "1", "--data", str(tmp_path / "val.npz"), "--format", "json"]  # fmt: skip
    code, out, err = run(argv, capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["rows"][0]["agreement"] == 1.0  # fp32 ONNX Runtime agrees with fp32 PyTorch on every sample
    assert report["data"].endswith("val.npz: 3 samples calibrate int8, 3 evaluate top-1 agreement")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--engines", "eager,tvm"], "--engines: expected a comma-separated list of eager, eager-cl, compile, "
                                     "onnxruntime, openvino, got 'eager,tvm'"),
        (["--batch", "0"], "--batch: expected batch sizes from 1 to 4096 such as 1,16, got '0'"),
        (["--tolerance", "-1"], "--tolerance: expected a number above 0, got '-1'"),
        (["--format", "xml"], "--format: expected one of table, json, markdown, got 'xml'"),
        (["--force"], "error: --force: --force goes with --calibrate"),
        (["--precisions", "int4"], "--precisions: expected a comma-separated list of fp32, bf16, int8, got 'int4'"),
        (["--data", "DATA/x.npy"], "error: DATA/x.npy: expected an array of shape (N, 3, 16, 16) (the model's input), "
                                   "got (2, 3, 8, 8)"),
        (["--data", "DATA/x.txt"], "error: DATA/x.txt: expected a .npy or .npz file of preprocessed inputs"),
    ],
    ids=["engine", "batch", "tolerance", "format", "force", "precision", "data-shape", "data-kind"],
)  # fmt: skip
def test_bad_options_exit_2_with_one_clear_line(tiny, tmp_path, capsys, argv, message):
    np.save(tmp_path / "x.npy", np.zeros((2, 3, 8, 8), np.float32))
    (tmp_path / "x.txt").write_text("1 2 3")
    argv = [a.replace("DATA", str(tmp_path)) for a in argv]
    code, out, err = run(["bench", str(tiny), *argv], capsys)
    assert code == 2 and out == ""
    assert (
        message.replace("DATA", str(tmp_path)) in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    )


def test_bf16_is_refused_where_the_cpu_has_no_bf16(tiny, capsys, monkeypatch):
    plain = Machine("Some CPU", ("avx2", "fma"), 2)
    monkeypatch.setattr("nasdsl.bench.hardware.machine", lambda: plain)
    assert plain.precisions() == ("fp32", "int8")
    code, _, err = run(["bench", str(tiny), "--precisions", "bf16"], capsys)
    assert code == 2
    assert "bf16: this CPU has neither avx512_bf16 nor amx_bf16 (its flags: avx2 fma)" in err


def test_a_missing_openvino_is_said_clearly(tiny, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)
    code, _, err = run(["bench", str(tiny), "--engines", "onnxruntime,openvino"], capsys)
    assert code == 2
    assert "error: --engines: openvino is not installed: pip install 'nasdsl[openvino]'" in err
    assert "Traceback" not in err
    from nasdsl.bench import engines

    assert not engines.available("openvino") and engines.available("onnxruntime")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--optimize-for", "openvino-bf16", "-o", "OUT/m.py"],
         "--optimize-for openvino-bf16: its artifact is an ONNX model; write .onnx or give --to onnx"),
        (["--optimize-for", "onnxruntime", "--data", "OUT/x.npy", "-o", "OUT/m.onnx"],
         "--data: only an int8 target (--optimize-for onnxruntime-int8, openvino-int8) takes it"),
        (["--optimize-for", "onnxruntime-bf16", "-o", "OUT/m.onnx"], "--optimize-for: expected one of"),
    ],
    ids=["pytorch-output", "data-without-int8", "unknown-precision"],
)  # fmt: skip
def test_compile_refuses_a_deployment_target_that_does_not_fit(tiny, tmp_path, capsys, argv, message):
    argv = [a.replace("OUT", str(tmp_path)) for a in argv]
    code, _, err = run(["compile", str(tiny), *argv], capsys)
    assert code == 2 and message in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------------
# The latency model


def test_contexts_follow_what_the_engines_fuse():
    nodes = [
        ("x", "input", (), False),
        ("conv", "conv2d", ("x",), False),
        ("bn", "batch_norm", ("conv",), False),
        ("relu", "relu", ("bn",), False),
        ("pool", "max_pool", ("relu",), False),
        ("relu2", "relu", ("pool",), False),  # after a pool: runs on its own
        ("c1", "conv2d", ("relu2",), False),
        ("c2", "conv2d", ("relu2",), False),
        ("sum", "add", ("c1", "relu2"), False),  # a residual sum into the convolution c1
        ("after", "relu", ("sum",), False),  # and the activation after it
        ("both", "relu", ("c2",), False),
        ("twice", "sigmoid", ("c2",), False),  # c2 has two readers: nothing fuses into it
        ("drop", "dropout", ("after",), False),
        ("aux", "linear", ("pool",), True),
        ("cat", "concat", ("pool", "relu2"), False),
        ("norm", "batch_norm", ("cat",), False),  # DenseNet's: after a concatenation, not folded
        ("act", "relu", ("norm",), False),  # ONNX Runtime runs it as a 1x1 depthwise convolution
        ("fc", "linear", ("act",), False),
        ("fcact", "relu", ("fc",), False),  # into the linear layer
        ("c3", "conv3d", ("x",), False),
        ("bn3", "batch_norm", ("c3",), False),  # folded into a 3-D convolution too
    ]
    assert latency.contexts(nodes) == {
        "x": "view", "conv": "", "bn": "folded", "relu": "fused", "pool": "", "relu2": "", "c1": "", "c2": "",
        "sum": "fused", "after": "fused", "both": "", "twice": "", "drop": "view", "aux": "skip",
        "cat": "", "norm": "", "act": "fused", "fc": "", "fcact": "fused", "c3": "", "bn3": "folded",
    }  # fmt: skip


def _one(op, attrs, ins, out, macs=0, ctx=""):
    """The one part of a node that is one kernel: (group, work, traffic, streamed)."""
    (part,) = latency.features(op, attrs, ins, out, macs, ctx)
    return part


def test_features_tell_apart_what_runs_differently():
    """A swish after a convolution, a gate multiplied across a map (squeeze-and-excitation) and
    a layer whose weights do not fit one core's L2 cache each have their own terms."""
    conv = {"groups": 1, "kernel": (1, 1), "dilation": (1, 1)}
    assert _one("relu", {}, ((32, 8, 8),), (32, 8, 8), 0, "fused")[0] == "fused_act"
    assert _one("silu", {}, ((32, 8, 8),), (32, 8, 8), 0, "fused")[0] == "fused_swish"
    assert _one("mul", {}, ((32, 1, 1), (32, 8, 8)), (32, 8, 8))[0] == "broadcast"
    assert _one("mul", {}, ((32, 8, 8), (32, 8, 8)), (32, 8, 8))[0] == "elementwise"
    assert _one("gelu", {}, ((10, 32),), (10, 32))[0] == "gelu"
    assert _one("linear", {}, ((10, 32),), (10, 64), 10 * 32 * 64)[0] == "linear_seq"
    assert latency.features("reshape", {}, ((32, 8, 8),), (32, 64), 0, "") == ()  # an alias: costs nothing
    # 3-D convolutions: their multiply-adds, the output channels in panels of a vector block
    conv3d = {"groups": 1, "kernel": (3, 1, 1)}
    macs = 16 * 8 * 3 * 4 * 5 * 5  # out x in x kernel x output positions
    assert _one("conv3d", conv3d, ((8, 4, 5, 5),), (16, 4, 5, 5), macs)[:2] == ("conv_nd", macs)
    assert _one("conv3d", conv3d, ((8, 4, 5, 5),), (20, 4, 5, 5), macs // 16 * 20)[:2] == ("conv_nd", macs // 16 * 32)
    # a pointwise one is a matrix product of its input as it is (no unfolding)
    pointwise = {"groups": 1, "kernel": (1, 1, 1)}
    assert _one("conv3d", pointwise, ((8, 4, 5, 5),), (20, 4, 5, 5), 8 * 20 * 100)[:2] == ("conv_nd_1x1", 8 * 20 * 100)
    fits = latency.cache_values()  # float32 values in L2
    small, large = int(math.isqrt(fits // 2)), int(math.isqrt(fits)) + 1  # a square layer of either side
    for n, streamed in ((small, 0), (large, large * large)):
        assert _one("linear", {}, ((n,),), (n,), n * n)[1:] == (n * n, 2 * n + n * n, streamed)
        assert _one("conv2d", conv, ((n, 1, 1),), (n, 1, 1), n * n)[3] == streamed


def test_a_concatenation_is_charged_by_the_layout_it_runs_in():
    """ONNX Runtime concatenates (C, H, W) maps in its blocked layout when each input has whole
    16-channel blocks (one copy); otherwise it reorders every input out of that layout and the
    result back in: the same values moved, a group (and rate) of its own."""
    ins, out = ((32, 14, 14), (64, 14, 14)), (96, 14, 14)
    blocked = _one("concat", {"axis": "channels"}, ins, out)
    assert blocked == ("concat", 96 * 196, 2 * 96 * 196, 0)
    odd = _one("concat", {"axis": "channels"}, ((24, 14, 14), (72, 14, 14)), out)
    assert odd == ("concat_reorder", *blocked[1:])  # bytes moved alike, the layout differs
    tokens = _one("concat", {"axis": 0}, ((1, 96), (196, 96)), (197, 96))
    assert tokens[0] == "concat"  # tokens are never blocked: a plain copy


def test_masked_pairs_count_the_shift_mask_of_the_onnx_export():
    """The pairs a shifted window's mask separates (whose softmax weights come out subnormal), by
    the closed form, against the mask the ONNX export writes (-100 where the roll brought the
    tokens from different parts of the map)."""
    from nasdsl.backends.onnx_ops import _shift_mask
    from nasdsl.bench.attention import masked_pairs

    for padded, window, shift in (
        ((56, 56), (7, 7), (3, 3)),
        ((14, 14), (7, 7), (3, 3)),
        ((16, 12), (8, 4), (4, 0)),
        ((8, 14, 14), (4, 7, 7), (2, 3, 3)),
    ):
        assert masked_pairs(padded, window, shift) == int(np.count_nonzero(_shift_mask(padded, window, shift)))
    assert masked_pairs((14, 14), (7, 7), (0, 0)) == 0


def _attention_graph(tmp_path, body: str, shape: str):
    import nasdsl

    path = tmp_path / "attention.yaml"
    axes = {1: "LC", 2: "LLC" if "partition" in body else "HWC"}[shape.count(",")]
    path.write_text(f"nasdsl: 1\nname: A\ninput: {{name: x, shape: [{shape}], axes: {axes}}}\nmodel:\n  a: {body}\n")
    views = list(latency._nodes(nasdsl.compile_spec(path).graph))
    return next(v for v in views if v.name == "a")


@pytest.mark.parametrize(
    ("body", "shape"),
    [
        ("{op: attention, heads: 4}", "49, 64"),
        ("{op: partition_attention, head_dim: 16, size: 7}", "4, 49, 64"),
        ("{op: window_attention, heads: 2, window: [7, 7], shift: 3}", "14, 14, 64"),
        ("{op: window_attention, heads: 2, window: [7, 7], shift: 0}", "14, 14, 64"),
    ],
)
def test_attention_is_charged_part_by_part(tmp_path, body, shape):
    """An attention op runs as projections (matrix products on every token), many small batched
    products per window and head, passes over the scores and copies of the tokens: its parts'
    multiply-adds add up to the op's own count (the registry's), and only a shifted window has
    masked scores (one term per head and feature of each separated pair)."""
    v = _attention_graph(tmp_path, body, shape)
    parts = latency.features(v.op, v.attrs, v.in_shapes, v.shape, v.macs, "")
    groups = [p[0] for p in parts]
    assert {"linear_seq", "attn_product", "attn_matrix", "scores", "attn_copy"} <= set(groups)
    products = sum(p[1] for p in parts if p[0] in ("linear_seq", "attn_product"))
    assert products == v.macs
    masked = [p[1] for p in parts if p[0] == "masked"]
    if "shift: 3" in body:
        from nasdsl.bench.attention import masked_pairs

        assert masked == [masked_pairs((14, 14), (7, 7), (3, 3)) * 64]  # heads x features a head = 64
    else:
        assert masked == []


def test_the_fit_recovers_known_coefficients():
    """Rows made from known non-negative coefficients: NNLS gives them back."""
    rng = np.random.default_rng(0)
    columns = latency.columns()
    truth = np.zeros(len(columns))
    for i, name in enumerate(columns):
        if name.startswith(("conv_1x1", "conv_kxk", "pool", "model", "traffic")):
            truth[i] = rng.uniform(0.5, 2.0)
    rows = rng.uniform(0, 1, (200, len(columns))) * (truth > 0)
    times = rows @ truth
    got = calibrate.fit(rows.tolist(), times.tolist())
    assert np.allclose([got[c] for c in columns], truth, rtol=1e-6, atol=1e-9)


def _fake_model(**coefficients) -> latency.LatencyModel:
    from nasdsl.bench.hardware import machine

    coef = dict.fromkeys(latency.columns(), 0.0) | coefficients
    return latency.LatencyModel("onnxruntime", latency.engine_version("onnxruntime"), machine().key(), 1, coef)


def test_the_calibration_cache_is_invalidated_by_machine_and_version(tmp_path, monkeypatch):
    monkeypatch.setenv(latency.CACHE_ENV, str(tmp_path))
    assert latency.cached("onnxruntime") is None
    model = _fake_model(model=1.5)
    path = latency.save(model)
    assert path.parent.parent == tmp_path and latency.cached("onnxruntime") == model
    monkeypatch.setattr(latency, "engine_version", lambda engine: "0.0.1")  # the engine was upgraded
    assert latency.cached("onnxruntime") is None
    monkeypatch.undo()
    monkeypatch.setenv(latency.CACHE_ENV, str(tmp_path))
    assert latency.cached("onnxruntime") == model
    other = Machine("Another CPU", ("avx2",), 64)
    monkeypatch.setattr("nasdsl.bench.hardware.machine", lambda: other)  # another machine
    assert latency.cached("onnxruntime") is None
    assert latency.cached("onnxruntime", threads=2) is None


def test_a_calibration_of_another_feature_format_is_measured_again(tmp_path, monkeypatch):
    """A model whose features changed (a new FORMAT) does not read the coefficients of the old
    one: neither under the old key (the key holds the format) nor a file of the old format
    found under the new key."""
    monkeypatch.setenv(latency.CACHE_ENV, str(tmp_path))
    model = _fake_model(model=1.5)
    path = latency.save(model)
    assert latency.cached("onnxruntime") == model
    monkeypatch.setattr(latency, "FORMAT", latency.FORMAT + 1)
    assert latency.cache_path("onnxruntime") != path and latency.cached("onnxruntime") is None
    stale = json.loads(path.read_text())  # the old file copied to the new key: its format says so
    latency.cache_path("onnxruntime").write_text(json.dumps(stale))
    assert latency.cached("onnxruntime") is None
    stale["format"] = latency.FORMAT
    latency.cache_path("onnxruntime").write_text(json.dumps(stale))
    assert latency.cached("onnxruntime") is not None


def test_a_missing_calibration_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(latency.CACHE_ENV, str(tmp_path / "empty"))
    spec = tmp_path / "space.yaml"
    spec.write_text(SPACE)
    code, _, err = run(["space", str(spec), "--max", "latency_ms=5"], capsys)
    assert code == 2 and "run 'nasdsl bench SPEC --calibrate' first" in err and "Traceback" not in err


def test_space_budget_and_column_take_the_prediction(tmp_path, monkeypatch, capsys):
    """A model whose only cost is 1 ms per input value: latency_ms is 3 * size**2, so the budget
    keeps the sizes whose input has at most that many values."""
    monkeypatch.setenv(latency.CACHE_ENV, str(tmp_path))
    latency.save(_fake_model(model_input=1.0))
    spec = tmp_path / "space.yaml"
    spec.write_text(SPACE)
    code, out, err = run(["space", str(spec), "--max", "latency_ms=800", "--format", "json"], capsys)
    assert code == 0, err
    variants = json.loads(out)["variants"]
    assert [v["choices"]["size"] for v in variants] == [8, 16]
    assert [v["latency_ms"] for v in variants] == [3 * 8 * 8, 3 * 16 * 16]
    code, out, _ = run(["space", str(spec), "--latency"], capsys)
    assert code == 0 and "latency ms" in out.splitlines()[1]
    code, out, _ = run(["space", str(spec)], capsys)
    assert code == 0 and "latency" not in out  # not asked: no column


def test_evaluator_latency_equals_a_full_compile(tmp_path):
    """The evaluator adds the costs node by node as it shapes; a full compile predicts from the
    graph: both agree for every variant of a space with choices of width, kernel and structure."""
    from nasdsl import space as spaces
    from nasdsl.variants import Evaluator

    spec = tmp_path / "space.yaml"
    spec.write_text(
        TINY.replace("out: 8, kernel: 3", "out: {choice: [4, 8, 20]}, kernel: {choice: [1, 3]}").replace(
            "  pool: {op: max_pool, kernel: 2}", "  pool: {op: max_pool, kernel: 2, when: {choice: [true, false]}}"
        )
    )
    rng = np.random.default_rng(0)
    model = _fake_model(**{c: float(rng.uniform(1e-6, 1e-3)) for c in latency.columns()})
    space = spaces.load_space(str(spec))
    evaluator = Evaluator(space, latency=model)
    for picks in space.variants():
        fast, full = evaluator.evaluate(picks), evaluator.compile(picks)
        assert fast.figures.latency_ms == pytest.approx(full.figures.latency_ms, rel=1e-12)


def test_summary_latency_adds_up_the_entries(tmp_path, monkeypatch, capsys, tiny):
    import nasdsl

    monkeypatch.setenv(latency.CACHE_ENV, str(tmp_path))
    rng = np.random.default_rng(1)
    model = _fake_model(**{c: float(rng.uniform(1e-6, 1e-3)) for c in latency.columns()})
    latency.save(model)
    code, out, err = run(["summary", str(tiny), "--latency", "--format", "json"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    total = model.predict(nasdsl.compile_spec(tiny))
    assert summary["totals"]["latency_ms"] == pytest.approx(total, abs=1e-3)
    fixed = model.model_cost((3, 16, 16))
    assert sum(r["latency_ms"] for r in summary["rows"]) + fixed == pytest.approx(total, abs=1e-3)
    code, out, _ = run(["summary", str(tiny), "--latency"], capsys)
    assert code == 0 and out.splitlines()[-1].startswith(f"predicted latency: {total:.2f} ms a sample")
    # a sample is one crop: where the spec's evaluation feeds an image several, the line says what an image takes
    ten = tmp_path / "ten.yaml"
    ten.write_text(tiny.read_text() + "evaluation: {preset: 10-crop}\n")
    code, out, _ = run(["summary", str(ten), "--latency"], capsys)
    assert code == 0 and out.splitlines()[-2].startswith(f"predicted latency: {total:.2f} ms a sample")
    assert out.splitlines()[-1] == f"the spec's evaluation feeds 10 crops an image: {total * 10:.2f} ms an image"


def test_calibrate_measures_fits_caches_and_predicts(tmp_path, monkeypatch, capsys, tiny):
    """A calibration on four random networks, a microbenchmark and a windowed transformer, two
    passes (the real one measures 180, 96 and 36): the cache file is written, the command
    predicts the spec, and a second call reads the cache."""
    monkeypatch.setenv(latency.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(calibrate, "NETWORKS", 4)
    monkeypatch.setattr(calibrate, "MICRO", 1)
    monkeypatch.setattr(calibrate, "WINDOWED", 1)
    monkeypatch.setattr(calibrate, "MIN_SECONDS", 0.0)
    monkeypatch.setattr(calibrate, "MAX_MACS", 5 * 10**7)
    code, out, err = run(["bench", str(tiny), "--calibrate"], capsys)
    assert code == 0, err
    model = latency.cached("onnxruntime")
    assert model is not None and model.fit["networks"] == 6
    assert all(v >= 0 and math.isfinite(v) for v in model.coefficients.values())
    assert f"predicted {model.predict(__import__('nasdsl').compile_spec(tiny)):.2f} ms" in out
    assert "calibrating onnxruntime: measurement 12/12" in err
    code, _, err = run(["bench", str(tiny), "--calibrate"], capsys)
    assert code == 0 and "calibrating" not in err  # cached


def test_random_calibration_networks_compile():
    import nasdsl

    for i in range(6):
        net = calibrate.compile_text(calibrate.random_spec(i))
        assert net.totals()["macs"] > 0 and isinstance(net, nasdsl.Compiled)


def test_the_calibration_set_holds_mobilenet_stacks():
    """Some of the random networks are MobileNet-like stacks at 96-224 px: many
    depthwise convolutions, squeeze-and-excitation gates (a map multiplied by a per-channel
    gate), MobileNetV2/V3's and EfficientNet's activations; and grouped convolutions come with
    ResNeXt's narrow groups."""
    stacks, acts, narrow, gated = 0, set(), 0, False
    for i in range(30):
        views = list(latency._nodes(calibrate.compile_text(calibrate.random_spec(i)).graph))
        depthwise = sum(v.op == "conv2d" and v.attrs["groups"] == v.in_shapes[0][0] > 1 for v in views)
        gates = sum(v.op == "mul" and v.in_shapes[0] != v.in_shapes[1] for v in views)
        narrow += sum(v.op == "conv2d" and 1 < v.attrs["groups"] < v.in_shapes[0][0] // 2 for v in views)
        if depthwise >= 10:
            stacks += 1
            assert views[0].shape[1] >= 96
            acts |= {v.op for v in views} & {"relu6", "hardswish", "silu"}
            gated = gated or gates > 0
    assert stacks >= 4 and gated and acts == {"relu6", "hardswish", "silu"} and narrow > 0


def test_the_calibration_set_holds_windowed_transformers():
    """The windowed transformers of the calibration hold what the attention ops' parts need:
    Swin's windows (2-D, shifted and not, on maps of whole windows) and Video Swin's (3-D), MViT's
    pooling attention and
    MaxViT's partitions, with torchvision's small initial weights (so that masked scores come
    out subnormal as in the real networks)."""
    from nasdsl.ops.window import windows_of

    texts = [calibrate.windowed_spec(i) for i in range(36)]
    assert all("trunc_normal: {std: 0.02}" in t for t in texts)
    used = {block for t in texts for block in re.findall(r"use: (\w+)", t.split("\nmodel:\n")[1])}
    assert used == {"SwinBlock2D", "SwinBlock2DV2", "SwinBlock", "PoolingBlock", "PartitionBlock"}
    for index, axes in ((1, 2), (17, 3)):  # the first of each kind of window
        views = list(latency._nodes(calibrate.compile_text(texts[index]).graph))
        windows = [(v.in_shapes[0][:-1], *windows_of(v.in_shapes[0][:-1], v.attrs)) for v in views
                   if v.op == "window_attention"]  # fmt: skip
        assert {any(shift) for _, _, shift in windows} == {True, False}
        # maps of whole windows, as in the real networks (no padded tokens)
        assert all(n % w == 0 for sizes, side, _ in windows for n, w in zip(sizes, side, strict=True))
        assert {len(v.attrs["window"]) for v in views if v.op == "window_attention"} == {axes}


def test_dilated_kernels_are_charged_for_the_rows_inside_the_map():
    """A dilated 3x3 kernel on a 65x65 map (DeepLabV3's atrous rates): the kernel rows that fall
    on the padding are skipped (counted by hand: at dilation 36, the top row is inside for the
    output rows 36-64 and the bottom one for 0-28: (29 + 65 + 29) / (3 * 65)); an undilated one
    is charged whole."""
    attrs = {"groups": 1, "kernel": (3, 3), "stride": (1, 1), "padding": (36, 36), "dilation": (36, 36)}
    macs = 64 * 64 * 65 * 65 * 9
    work = _one("conv2d", attrs, ((64, 65, 65),), (64, 65, 65), macs)[1]
    assert work == pytest.approx(macs * (29 + 65 + 29) / (3 * 65))
    plain = attrs | {"padding": (1, 1), "dilation": (1, 1)}
    assert _one("conv2d", plain, ((64, 65, 65),), (64, 65, 65), macs)[1] == macs


def test_copies_and_resizes_have_groups_of_their_own():
    """A permute (a strided gather), a slice (a copy of what lies in order) and a bilinear resize
    (four neighbours a value) run at rates of their own; a nearest resize reads one."""
    assert _one("permute", {"dims": (1, 2, 0)}, ((8, 4, 4),), (4, 4, 8))[:2] == ("permute", 128)
    # one axis moved (the channels last) is copied in runs; MaxViT's partition order value by value
    maxvit = _one("permute", {"dims": (1, 3, 2, 4, 0)}, ((8, 2, 2, 2, 2),), (2, 2, 2, 2, 8))
    assert maxvit[:2] == ("permute_nd", 128)
    assert _one("transpose", {"axis0": 0, "axis1": 1}, ((4, 6, 8),), (6, 4, 8))[0] == "permute"
    assert _one("transpose", {"axis0": 0, "axis1": -1}, ((4, 6, 8),), (8, 6, 4))[0] == "permute_nd"
    assert _one("channel_shuffle", {"groups": 2}, ((8, 4, 4),), (8, 4, 4))[0] == "permute"
    assert _one("slice", {}, ((8, 4, 4),), (4, 4, 4))[:2] == ("copy", 64)
    assert _one("interpolate", {"mode": "bilinear"}, ((8, 4, 4),), (8, 8, 8))[:2] == ("resize", 4 * 512)
    assert _one("interpolate", {"mode": "nearest"}, ((8, 4, 4),), (8, 8, 8))[:2] == ("resize", 512)


def test_grouped_convolutions_in_the_plain_layout_are_charged_in_panels():
    """A grouped convolution left in the plain layout is a matrix product per group whose columns
    (the group's output channels) run in panels of 16: RegNet's groups of 8 channels cost as much
    arithmetic as groups of 16."""
    attrs = {"groups": 8, "kernel": (3, 3), "dilation": (1, 1)}
    macs = 64 * 8 * 9 * 14 * 14  # 64 outputs, 8 inputs each, 3x3, 14x14 positions
    assert _one("conv2d", attrs, ((64, 14, 14),), (64, 14, 14), macs)[:2] == ("conv_group", 2 * macs)


def test_the_commands_of_docs_deploy_parse():
    """Every command line of docs/deploy.md's examples is one the CLI accepts (the options exist
    and their values are valid; running them is what the tests above do on a tiny model)."""
    import re
    import shlex

    from nasdsl.cli import parser

    from paths import ROOT

    text = (ROOT / "docs" / "deploy.md").read_text()
    lines = [line for block in re.findall(r"```sh\n(.*?)```", text, re.S) for line in block.splitlines()]
    commands = [line for line in lines if line.startswith("nasdsl ")]
    assert len(commands) >= 8
    for line in commands:
        args = parser().parse_args(shlex.split(line)[1:])
        assert args.command_spec.name == line.split()[1]
