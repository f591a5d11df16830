"""``nasdsl summary`` against the GoogLeNet paper's Table 1 and exact reference figures.

The expected values are data in tests/data (each file names its source): Table 1 as the
paper prints it (googlenet_table1.csv); the weights and multiply-adds of each row worked out
from the table's shapes, and the exact parameter and multiply-add totals of Caffe's
bvlc_googlenet and torchvision's GoogLeNet (googlenet_figures.yaml). torchvision itself is
the second, independent reference for the BatchNorm variant.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from nasdsl.cli import main

from paths import DATA, ROOT, SPECS

GOOGLENET = SPECS / "googlenet.yaml"
GOOGLENET_BN = SPECS / "googlenet_bn.yaml"
TABLE_1 = DATA / "googlenet_table1.csv"
FIGURES = DATA / "googlenet_figures.yaml"

# Table 1's filter columns (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj), in the
# paper's order, which is also the order of our Inception template's parameters.
FILTER_COLUMNS = ("n1x1", "n3x3_reduce", "n3x3", "n5x5_reduce", "n5x5", "pool_proj")


# --------------------------------------------------------------------------- the reference data


@dataclass(frozen=True)
class PaperRow:
    type: str
    patch: str  # "7x7/2" or ""
    output: tuple[int, int, int]  # H, W, C as printed
    depth: int
    filters: dict[str, int]  # the filter columns that are filled in
    params_k: float | None  # printed params in K (None where blank)
    ops_m: float | None  # printed ops in M


def _uncommented(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines() if not line.startswith("#")]


def _number(text: str) -> float | None:
    return float(text) if text.strip() else None


def paper_table() -> list[PaperRow]:
    """Table 1 of the paper, as transcribed in googlenet_table1.csv."""
    rows = []
    for cell in csv.DictReader(_uncommented(TABLE_1)):
        rows.append(
            PaperRow(
                type=cell["layer"],
                patch=cell["patch_stride"],
                output=(int(cell["out_h"]), int(cell["out_w"]), int(cell["out_c"])),
                depth=int(cell["depth"]),
                filters={k: int(cell[k]) for k in FILTER_COLUMNS if cell[k]},
                params_k=_number(cell["params_k"]),
                ops_m=_number(cell["ops_m"]),
            )
        )
    return rows


def _figures() -> dict:
    return yaml.safe_load(FIGURES.read_text(encoding="utf-8"))


def computed_figures() -> dict[str, tuple[float, float | None]]:
    """The figures worked out from the table's shapes: {row: (weights in K, MACs in M)}."""
    return {row: (f["weights_k"], f["macs_m"]) for row, f in _figures()["table_1_rows"].items()}


def exact_figures() -> dict[str, int]:
    """The exact totals of Caffe's bvlc_googlenet and torchvision's GoogLeNet, the weights
    of Table 1's shapes and the paper's depth."""
    figures = _figures()
    caffe, tv = figures["caffe_bvlc_googlenet"], figures["torchvision_googlenet"]
    return {
        "params": caffe["params"],
        "params_aux": caffe["params_with_aux"],
        "aux1_params": caffe["aux1_params"],
        "aux2_params": caffe["aux2_params"],
        "macs": caffe["macs"],
        "aux_macs": caffe["aux_macs"],
        "bn_params": tv["params"],
        "bn_params_aux": tv["params_with_aux"],
        "bn_macs": tv["macs"],
        "weights": figures["table_1_weights"],
        "depth": figures["depth"],
    }


# --------------------------------------------------------------------------- running the CLI


def summary_json(capsys, *args: str) -> dict:
    rc = main(["summary", *args, "--format", "json"])
    out, err = capsys.readouterr()
    assert (rc, err) == (0, "")
    return json.loads(out)


@pytest.fixture
def googlenet(capsys) -> dict:
    return summary_json(capsys, str(GOOGLENET))


def _hwc(output: list[int]) -> tuple[int, int, int]:
    """Our [C, H, W] (or flat [F]) as the paper's H x W x C."""
    if len(output) == 1:
        return (1, 1, output[0])
    c, h, w = output
    return (h, w, c)


# Paper row types and the kinds of our rows that stand for them; our rows of
# the kinds in NOT_IN_TABLE have no row of their own in Table 1.
KINDS = {
    "convolution": "BasicConv2d",
    "max pool": "max_pool",
    "avg pool": "avg_pool",
    "linear": "linear",
    "softmax": "softmax",
}
NOT_IN_TABLE = {"lrn", "flatten"}


def match_rows(paper: list[PaperRow], ours: list[dict]) -> list[tuple[PaperRow, list[dict]]]:
    """Pair each paper row with the run of our rows it stands for (in order).

    The paper's "convolution 3x3/1 ... depth 2" is our conv2 (1x1) and conv3 (3x3):
    consecutive convolutions are taken until their depths add up to the paper's.
    """
    rows = [r for r in ours if r["kind"] not in NOT_IN_TABLE]
    pairs = []
    i = 0
    for p in paper:
        if p.type == "softmax" and i == len(rows):
            # the spec's output is the logits in both modes; the softmax (Caffe's "prob",
            # no parameters, no multiply-adds) is the caller's
            pairs.append((p, []))
            continue
        if p.type.startswith("inception"):
            name = "inception" + re.fullmatch(r"inception \((\w+)\)", p.type)[1]
            assert rows[i]["name"] == name, (p.type, rows[i]["name"])
            group = [rows[i]]
        elif p.type.startswith("dropout"):
            assert rows[i]["kind"] == "dropout", (p.type, rows[i]["name"])
            group = [rows[i]]
        else:
            kind = KINDS[p.type]
            group = []
            while not group or sum(r["depth"] for r in group) < p.depth:
                assert rows[i + len(group)]["kind"] == kind, (p.type, rows[i + len(group)]["name"])
                group.append(rows[i + len(group)])
        pairs.append((p, group))
        i += len(group)
    assert i == len(rows), [r["name"] for r in rows[i:]]
    return pairs


# --------------------------------------------------------------------------- Table 1


def test_the_reference_table_is_parsed() -> None:
    paper = paper_table()
    assert len(paper) == 19 and paper[0].type == "convolution" and paper[-1].type == "softmax"
    assert sum(1 for p in paper if p.type.startswith("inception")) == 9
    assert sum(p.depth for p in paper) == exact_figures()["depth"] == 22


def test_every_row_of_table_1(googlenet: dict) -> None:
    pairs = match_rows(paper_table(), googlenet["rows"])
    assert len(pairs) == 19
    assert pairs[-1] == (paper_table()[-1], []) and googlenet["rows"][-1]["name"] == "fc"
    for p, group in pairs[:-1]:
        last = group[-1]
        assert _hwc(last["output"]) == p.output, p.type
        assert sum(r["depth"] for r in group) == p.depth, p.type
        if p.type.startswith("inception"):
            assert list(last["args"].values()) == [p.filters[k] for k in FILTER_COLUMNS], p.type
        elif p.filters:  # the stem's "convolution 3x3/1": 64 reduce filters, then 192
            assert p.type == "convolution" and [r["name"] for r in group] == ["conv2", "conv3"]
            assert group[0]["args"]["out"] == p.filters["n3x3_reduce"]
            assert group[1]["args"]["out"] == p.filters["n3x3"]
        if p.type.startswith("dropout"):
            rate = int(re.fullmatch(r"dropout \((\d+)%\)", p.type)[1])
            assert last["args"] == {"p": rate / 100}


def test_patch_and_stride_column(capsys) -> None:
    """The table format shows the paper's patch/stride column."""
    import nasdsl

    rows = nasdsl.compile_spec(GOOGLENET).summary()["rows"]
    for p, group in match_rows(paper_table(), rows):
        windowed = [r for r in group if r["window"]]
        shown = windowed[-1]["window"] if windowed else ""
        if p.type.startswith("inception") or p.type in ("linear", "softmax") or p.type.startswith("dropout"):
            assert shown == "", p.type
        else:
            assert shown == p.patch, p.type


def _biases(group: list[dict]) -> int:
    """The biases of a run of rows, from their filter counts: one per output channel of every layer."""
    total = 0
    for r in group:
        if r["kind"] == "Inception":
            total += sum(r["args"].values())  # each of the six convolutions has one bias per filter
        elif r["kind"] == "BasicConv2d":
            total += r["args"]["out"]
        elif r["kind"] == "linear":
            total += r["args"]["out"]
    return total


def _row_key(p: PaperRow, group: list[dict]) -> str:
    """The name the reference's computed figures use for a row (conv1, conv2, 3a, ..., linear)."""
    if p.type.startswith("inception"):
        return group[0]["name"].removeprefix("inception")
    if p.type == "convolution":
        return group[0]["name"]
    return p.type


def test_weights_and_macs_per_row_match_the_computed_figures(googlenet: dict) -> None:
    """Our rows count weights and biases; without the biases they are the reference's
    weights-only figures (K = 1024), and their multiply-adds its ops (M = 10**6)."""
    computed = computed_figures()
    seen = set()
    for p, group in match_rows(paper_table(), googlenet["rows"]):
        params = sum(r["params"] for r in group)
        if params == 0:
            assert p.params_k is None, p.type
            continue
        key = _row_key(p, group)
        weights_k, macs_m = computed[key]
        assert round((params - _biases(group)) / 1024, 1) == weights_k, key
        assert round(sum(r["macs"] for r in group) / 1e6, 1) == macs_m, key
        seen.add(key)
    assert seen == set(computed)


# The params column as printed has misprints (the reference lists them); elsewhere
# it is approximate. The summary shows the computed values, never the printed ones.
MISPRINTED_PARAMS = {"conv1", "4c", "5a"}
MISPRINTED_OPS = {"conv1"}


def test_printed_columns_are_close_except_for_the_misprints(googlenet: dict) -> None:
    for p, group in match_rows(paper_table(), googlenet["rows"]):
        if p.params_k is None:
            continue
        key = _row_key(p, group)
        weights_k = (sum(r["params"] for r in group) - _biases(group)) / 1024
        macs_m = sum(r["macs"] for r in group) / 1e6
        params_off = abs(weights_k - p.params_k) / p.params_k
        ops_off = abs(macs_m - p.ops_m) / p.ops_m
        assert (params_off > 0.05) == (key in MISPRINTED_PARAMS), (key, weights_k, p.params_k)
        assert params_off < 0.02 or key in MISPRINTED_PARAMS, key
        assert (ops_off > 0.1) == (key in MISPRINTED_OPS), (key, macs_m, p.ops_m)
        assert ops_off < 0.07 or key in MISPRINTED_OPS, key


# --------------------------------------------------------------------------- totals


def test_googlenet_totals(capsys, googlenet: dict) -> None:
    ref = exact_figures()
    assert googlenet["totals"] == {"params": ref["params"], "macs": ref["macs"], "depth": ref["depth"]}
    biases = sum(_biases([r]) for r in googlenet["rows"])
    assert googlenet["totals"]["params"] - biases == ref["weights"]
    with_aux = summary_json(capsys, str(GOOGLENET), "--with-aux")
    assert with_aux["totals"] == {
        "params": ref["params_aux"],
        "macs": ref["macs"] + ref["aux_macs"],
        "depth": ref["depth"],
    }
    aux = {r["name"]: r for r in with_aux["rows"] if r["name"] in ("aux1", "aux2")}
    assert (aux["aux1"]["params"], aux["aux2"]["params"]) == (ref["aux1_params"], ref["aux2_params"])
    assert aux["aux1"]["macs"] + aux["aux2"]["macs"] == ref["aux_macs"]


def test_googlenet_bn_totals(capsys) -> None:
    ref = exact_figures()
    plain = summary_json(capsys, str(GOOGLENET_BN))
    with_aux = summary_json(capsys, str(GOOGLENET_BN), "--with-aux")
    assert plain["totals"] == {"params": ref["bn_params"], "macs": ref["bn_macs"], "depth": ref["depth"]}
    assert with_aux["totals"]["params"] == ref["bn_params_aux"]


def test_googlenet_bn_params_equal_torchvision() -> None:
    torch = pytest.importorskip("torch")
    models = pytest.importorskip("torchvision.models")
    import nasdsl

    net = nasdsl.compile_spec(GOOGLENET_BN)
    with torch.no_grad():
        for aux in (False, True):
            tv = models.googlenet(weights=None, aux_logits=aux, init_weights=False)
            expected = sum(p.numel() for p in tv.parameters())
            assert net.summary(with_aux=aux)["totals"]["params"] == expected, aux


# --------------------------------------------------------------------------- the JSON contract


def test_json_contract(capsys, googlenet: dict) -> None:
    assert list(googlenet) == ["name", "input", "rows", "totals"]
    assert (googlenet["name"], googlenet["input"]) == ("GoogLeNet", [3, 224, 224])
    assert list(googlenet["totals"]) == ["params", "macs", "depth"]
    for row in googlenet["rows"]:
        assert list(row) == ["name", "kind", "window", "output", "depth", "args", "params", "macs"]
        assert all(isinstance(row[k], int) for k in ("depth", "params", "macs"))
        assert all(isinstance(d, int) for d in row["output"])
    # one row per top-level model entry, in spec order; inference graph only
    source = yaml.safe_load(GOOGLENET.read_text(encoding="utf-8"))
    assert [r["name"] for r in googlenet["rows"]] == list(source["model"])
    # template rows: arguments named and ordered as the template's parameters
    params = {
        name: [p if isinstance(p, str) else next(iter(p)) for p in t["params"]]
        for name, t in source["templates"].items()
    }
    for row in googlenet["rows"]:
        if row["kind"] in params:
            assert list(row["args"]) == params[row["kind"]], row["name"]
        else:  # an op: the attributes the spec wrote, in its order, with variables evaluated
            written = source["model"][row["name"]]
            written = {} if isinstance(written, str) else {k: v for k, v in written.items() if k not in ("op", "phase")}
            written = {k: source["variables"].get(v, v) if isinstance(v, str) else v for k, v in written.items()}
            assert row["args"] == written, row["name"]
    assert next(r for r in googlenet["rows"] if r["name"] == "dropout")["args"] == {"p": 0.4}
    assert googlenet["rows"][0]["args"] == {"out": 64, "kernel": 7, "stride": 2, "padding": 3}


def test_with_aux_adds_the_heads_after_the_model(capsys, googlenet: dict) -> None:
    with_aux = summary_json(capsys, str(GOOGLENET), "--with-aux")
    names = [r["name"] for r in with_aux["rows"]]
    assert names == [r["name"] for r in googlenet["rows"]] + ["aux1", "aux2"]
    aux1 = with_aux["rows"][-2]
    assert (aux1["kind"], aux1["args"], aux1["output"]) == (
        "InceptionAux",
        {"num_classes": 1000, "dropout": 0.7},
        [1000],
    )
    # the paper: conv 1x1, fc 1024, linear: three layers with parameters
    assert aux1["depth"] == 3


def test_set_changes_the_summary(capsys) -> None:
    """inception4a.c3x3=256: that row's output grows to 192+256+48+64 channels."""
    s = summary_json(capsys, str(GOOGLENET), "--set", "inception4a.c3x3=256")
    rows = {r["name"]: r for r in s["rows"]}
    assert rows["inception4a"]["args"]["c3x3"] == 256
    assert rows["inception4a"]["output"] == [192 + 256 + 48 + 64, 14, 14]
    assert rows["inception4b"]["output"] == [512, 14, 14]


# --------------------------------------------------------------------------- the text formats


def _render(capsys, fmt: str, *extra: str) -> str:
    rc = main(["summary", str(GOOGLENET), "--format", fmt, *extra])
    out, err = capsys.readouterr()
    assert (rc, err) == (0, "")
    return out


def test_markdown_format(capsys, googlenet: dict) -> None:
    lines = _render(capsys, "markdown").splitlines()
    assert lines[0] == "**GoogLeNet: input 3x224x224**" and lines[1] == ""
    header = [c.strip() for c in lines[2].strip("|").split("|")]
    assert header == ["name", "kind", "window", "output", "depth", "params", "MACs", "args"]
    assert set(lines[3].replace("|", "")) == {"-"}
    body = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines[4:]]
    assert len(body) == len(googlenet["rows"]) + 1
    for cells, row in zip(body, googlenet["rows"], strict=False):
        assert cells[0] == row["name"] and cells[1] == row["kind"]
        assert cells[3] == "x".join(map(str, row["output"]))
        assert cells[5] == f"{row['params']:,}" and cells[6] == f"{row['macs']:,}"
    assert body[-1][0] == "total" and body[-1][5] == "6,998,552" and body[-1][6] == "1,582,671,872"
    assert body[-1][4] == "22"


def test_json_rows_carry_every_column_of_the_table(capsys, googlenet: dict) -> None:
    """Each JSON row has a key for each column the table shows (MACs as "macs")."""
    columns = _render(capsys, "table").splitlines()[1].split()
    for row in googlenet["rows"]:
        assert {c.lower() for c in columns} <= set(row)
    conv1 = next(r for r in googlenet["rows"] if r["name"] == "conv1")
    assert conv1["window"] == "7x7/2"


def test_table_format(capsys, googlenet: dict) -> None:
    lines = _render(capsys, "table").splitlines()
    assert lines[0] == "GoogLeNet: input 3x224x224"
    assert lines[1].split() == ["name", "kind", "window", "output", "depth", "params", "MACs", "args"]
    assert set(lines[2].replace(" ", "")) == {"-"} and lines[-2] == lines[2]
    assert lines[-1].split() == ["total", "22", "6,998,552", "1,582,671,872"]
    inception4c = next(line for line in lines if line.startswith("inception4c "))
    assert inception4c.split()[:3] == ["inception4c", "Inception", "512x14x14"]
    assert "c3x3=256" in inception4c
    # columns line up: every row is as wide as the rule or narrower
    assert all(len(line) <= len(lines[2]) for line in lines[1:])


def test_table_with_aux_lists_the_heads(capsys) -> None:
    lines = _render(capsys, "table", "--with-aux").splitlines()
    assert lines[-1].split() == ["total", "22", "13,378,280", "1,591,044,096"]
    assert [line.split()[0] for line in lines[-4:-2]] == ["aux1", "aux2"]


# --------------------------------------------------------------------------- no torch, and fast
# (check writes the PyTorch source in memory: jinja2, light, is imported; onnx and numpy are not)


PROBE = """
import json, sys, time
t0 = time.perf_counter()
import yaml, networkx
t1 = time.perf_counter()
from nasdsl.cli import main
import contextlib, io
with contextlib.redirect_stdout(io.StringIO()):
    t2 = time.perf_counter()
    rc_check = main(["check", sys.argv[1]])
    t3 = time.perf_counter()
    rc_summary = main(["summary", sys.argv[1], "--format", "json"])
    t4 = time.perf_counter()
heavy = sorted(m for m in ("torch", "torchvision", "onnx", "onnxruntime", "numpy") if m in sys.modules)
print(json.dumps({"rc": [rc_check, rc_summary], "heavy": heavy,
                  "imports_ms": (t1 - t0) * 1000, "nasdsl_import_ms": (t2 - t1) * 1000,
                  "check_ms": (t3 - t2) * 1000, "summary_ms": (t4 - t3) * 1000}))
"""


@pytest.mark.parametrize("spec", [GOOGLENET, GOOGLENET_BN], ids=["googlenet", "googlenet_bn"])
def test_check_and_summary_import_neither_torch_nor_numpy(spec: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(spec)], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["rc"] == [0, 0]
    assert result["heavy"] == []
    # timings are reported (pytest -s), never asserted
    print(
        f"\n{spec.name}: import yaml+networkx {result['imports_ms']:.0f} ms, "
        f"nasdsl {result['nasdsl_import_ms']:.0f} ms, check {result['check_ms']:.0f} ms, "
        f"summary {result['summary_ms']:.0f} ms"
    )
