"""Deployment speed on the CPU: nasdsl's best verified artifact against the best way to run
torchvision's model, in the same precision, all measured in one interleaved run per model.

    python benchmarks/deploy_speed.py [--families googlenet,resnet50,mobilenet_v2] [--batch 16]
        [--repeats 7] [--quick]

The anchors (torchvision's model, random weights and BatchNorm statistics):
``tv eager`` (channels_last, fp32), ``tv fx-fuse`` (``torch.fx.experimental.optimization.fuse``:
BatchNorm folded into the convolutions), ``tv onnx ort`` and ``tv onnx ov`` (``torch.onnx.export``,
run by ONNX Runtime and OpenVINO), each engine with each session setting tried for ours, and in
bf16 ``tv onnx ov bf16``, in int8 ``tv onnx ort int8`` / ``tv onnx ov int8`` (quantised by the same
``quantize_static`` on the same generated calibration inputs as ours).

nasdsl's candidates hold the same tensors (the training state_dict made of torchvision's): the
``cpu`` target's module in eager PyTorch (channels_last; bf16 too), and its ONNX artifacts in
ONNX Runtime and OpenVINO with each pipeline of rewrites (``fold``: what every export does;
``fold+fuse``: sibling convolutions joined; ``fold+fuse+hoist``: activations hoisted above the
split) and each engine setting (ONNX Runtime: graph optimisation level ``all`` (its default) or
``extended``; OpenVINO: the ``latency`` or ``throughput`` performance hint). A candidate counts
only when it is verified: fp32 within 1e-4 of torchvision's output (relative to its largest
magnitude); bf16 and int8 report their deviation.

Every candidate of a model runs in the same rounds in a rotating order; the figure is the
median over rounds (images per second). Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.fx.experimental.optimization
import torchvision

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from optimize_speed import interleaved as _interleaved  # noqa: E402
from optimize_speed import pair  # noqa: E402

import nasdsl  # noqa: E402
from nasdsl import ir  # noqa: E402
from nasdsl.backends.onnx import export_onnx_bytes  # noqa: E402
from nasdsl.bench.artifacts import quantize  # noqa: E402
from nasdsl.bench.engines import available, open_onnx  # noqa: E402
from nasdsl.bench.hardware import machine  # noqa: E402
from nasdsl.optimize import optimize, optimized_weights  # noqa: E402

#: the rewrites of each ONNX pipeline measured
PIPELINES = {
    "fold": ("fold_norms",),
    "fold+fuse": ("fold_norms", "fuse_siblings"),
    "fold+fuse+hoist": ("fold_norms", "fuse_siblings", "hoist_activations"),
}
#: the engine settings tried (for torchvision's ONNX too)
ORT_SETTINGS = {"all": {}, "extended": {"graph_optimization_level": "extended"}}
OV_SETTINGS = {"latency": {}, "throughput": {"PERFORMANCE_HINT": "THROUGHPUT"}}
TOLERANCE = 1e-4


def _ort_options(setting: dict) -> dict:
    import onnxruntime as ort

    if setting.get("graph_optimization_level") == "extended":
        return {"graph_optimization_level": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED}
    return {}


class Candidate:
    """One way to run a model: its name, owner (torchvision or nasdsl), precision, and a callable
    on a prepared input; ``output`` gives the main output as float32 for the deviation."""

    def __init__(
        self, name: str, owner: str, precision: str, call: Callable[[], object], output: Callable[[], np.ndarray]
    ):
        self.name, self.owner, self.precision, self.call, self.output = name, owner, precision, call, output


def torch_candidate(name, owner, precision, module, x: torch.Tensor) -> Candidate:
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    module = module.to(memory_format=torch.channels_last).to(dtype).eval()
    xin = x.to(dtype).contiguous(memory_format=torch.channels_last)

    def call():
        with torch.inference_mode():
            return module(xin)

    def output():
        r = call()
        return (r if isinstance(r, torch.Tensor) else r[0]).float().numpy()

    return Candidate(name, owner, precision, call, output)


def onnx_candidate(name, owner, precision, data: bytes, engine: str, setting: dict, x: np.ndarray, threads: int):
    options = _ort_options(setting) if engine == "onnxruntime" else setting
    runner = open_onnx(data, engine, precision, threads, options=options)
    fed = runner.feed(x)
    return Candidate(name, owner, precision, lambda: runner.run(fed), lambda: runner.output(runner.run(fed)))


def candidates(family: str, batch: int, threads: int, size: int | None) -> tuple[list[Candidate], np.ndarray, str]:
    net, reference, state = pair(family, size)
    shape = ir.node(net.graph, ir.info(net.graph).input).shape
    x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(2))
    xn = x.numpy()
    calibration = np.random.default_rng(0).standard_normal((16, *shape), dtype=np.float32)
    with torch.inference_mode():
        want = reference(x).float().numpy()
    engines = ["onnxruntime"] + (["openvino"] if available("openvino") else [])
    settings = {"onnxruntime": ORT_SETTINGS, "openvino": OV_SETTINGS}
    short = {"onnxruntime": "ort", "openvino": "ov"}
    bf16 = machine().bf16
    out: list[Candidate] = []
    # the anchors
    out.append(torch_candidate("tv eager", "torchvision", "fp32", reference, x))
    fused = torch.fx.experimental.optimization.fuse(reference.eval())
    out.append(torch_candidate("tv fx-fuse", "torchvision", "fp32", fused, x))
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(reference, (x,), buffer, dynamo=False, opset_version=17, input_names=["x"])
    tv_onnx = buffer.getvalue()
    tv_int8 = quantize(tv_onnx, calibration, batch)
    for engine in engines:
        for label, setting in settings[engine].items():
            out.append(
                onnx_candidate(
                    f"tv onnx {short[engine]} {label}", "torchvision", "fp32", tv_onnx, engine, setting, xn, threads
                )
            )
        first = next(iter(settings[engine].values()))
        out.append(
            onnx_candidate(f"tv onnx {short[engine]} int8", "torchvision", "int8", tv_int8, engine, first, xn, threads)
        )
    if bf16 and "openvino" in engines:
        out.append(onnx_candidate("tv onnx ov bf16", "torchvision", "bf16", tv_onnx, "openvino", {}, xn, threads))
    # nasdsl
    module = nasdsl.build_model(net, optimize="cpu", weights=state)
    out.append(torch_candidate("nasdsl eager", "nasdsl", "fp32", module, x))
    if bf16:
        out.append(
            torch_candidate(
                "nasdsl eager bf16", "nasdsl", "bf16", nasdsl.build_model(net, optimize="cpu", weights=state), x
            )
        )
    numpy_state = {k: v.numpy() for k, v in state.items()}
    exports = {}
    for label, rewrites in PIPELINES.items():
        g = optimize(net, rewrites=rewrites)
        exports[label] = export_onnx_bytes(g, state_dict=optimized_weights(net, g, numpy_state), batch=batch)
    for engine in engines:
        for label, data in exports.items():
            for setting_label, setting in settings[engine].items():
                name = f"nasdsl onnx {short[engine]} {label} {setting_label}"
                out.append(onnx_candidate(name, "nasdsl", "fp32", data, engine, setting, xn, threads))
        int8 = quantize(exports["fold"], calibration, batch)
        first = next(iter(settings[engine].values()))
        out.append(
            onnx_candidate(f"nasdsl onnx {short[engine]} int8", "nasdsl", "int8", int8, engine, first, xn, threads)
        )
    if bf16 and "openvino" in engines:
        for label, data in exports.items():
            out.append(
                onnx_candidate(f"nasdsl onnx ov {label} bf16", "nasdsl", "bf16", data, "openvino", {}, xn, threads)
            )
    title = f"{family} ({net.name}), batch {batch}, {tuple(shape)}, {threads} threads"
    return out, want, title


def deviation(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got.astype(np.float64) - want).max() / np.abs(want).max())


def run_family(family: str, batch: int, repeats: int, threads: int, size: int | None) -> list[dict]:
    cands, want, title = candidates(family, batch, threads, size)
    devs = {c.name: deviation(c.output(), want) for c in cands}
    seconds = _interleaved({c.name: c.call for c in cands}, repeats, warmup=1)
    rows = [
        {
            "name": c.name,
            "owner": c.owner,
            "precision": c.precision,
            "ips": batch / seconds[c.name],
            "dev": devs[c.name],
        }
        for c in cands
    ]
    fp32_anchor = max(
        (r for r in rows if r["owner"] == "torchvision" and r["precision"] == "fp32"), key=lambda r: r["ips"]
    )
    tv_eager = next(r for r in rows if r["name"] == "tv eager")
    print(f"\n{title}")
    head = f"  {'candidate':<40} {'prec':<5} {'img/s':>8} {'vs best tv same prec':>21}"
    print(f"{head} {'vs tv eager fp32':>17} {'max dev':>9}")
    for r in sorted(rows, key=lambda r: (r["precision"], -r["ips"])):
        same = [a for a in rows if a["owner"] == "torchvision" and a["precision"] == r["precision"]]
        best = max(same, key=lambda a: a["ips"]) if same else None
        ratio = f"{r['ips'] / best['ips']:.3f}" if best else ""
        ok = "" if r["precision"] != "fp32" or r["dev"] <= TOLERANCE else "  (NOT verified)"
        print(f"  {r['name']:<40} {r['precision']:<5} {r['ips']:8.1f} {ratio:>21} {r['ips'] / tv_eager['ips']:17.3f} "
              f"{r['dev']:9.2e}{ok}")  # fmt: skip
    print(f"  best torchvision fp32: {fp32_anchor['name']} ({fp32_anchor['ips']:.1f} img/s)")
    for r in rows:
        r["family"] = family
    return rows


def summary(rows: list[dict]) -> None:
    print("\nsummary: nasdsl's best verified artifact against the best torchvision anchor, same precision")
    print(f"  {'model':<14} {'prec':<5} {'nasdsl best':<40} {'img/s':>8} {'best anchor':<28} {'img/s':>8} {'ratio':>6}"
          f" {'x tv eager fp32':>16}")  # fmt: skip
    for family in dict.fromkeys(r["family"] for r in rows):
        mine = [r for r in rows if r["family"] == family]
        eager = next(r for r in mine if r["name"] == "tv eager")["ips"]
        for precision in ("fp32", "bf16", "int8"):
            ours = [r for r in mine if r["owner"] == "nasdsl" and r["precision"] == precision
                    and (precision != "fp32" or r["dev"] <= TOLERANCE)]  # fmt: skip
            theirs = [r for r in mine if r["owner"] == "torchvision" and r["precision"] == precision]
            if not ours or not theirs:
                continue
            a, b = max(ours, key=lambda r: r["ips"]), max(theirs, key=lambda r: r["ips"])
            print(f"  {family:<14} {precision:<5} {a['name']:<40} {a['ips']:8.1f} {b['name']:<28} {b['ips']:8.1f} "
                  f"{a['ips'] / b['ips']:6.3f} {a['ips'] / eager:16.3f}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", default="googlenet,resnet50,mobilenet_v2")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--quick", action="store_true", help="a smoke run: batch 2, 64x64 inputs, 2 repeats")
    args = ap.parse_args(argv)
    size = None
    if args.quick:
        args.batch, args.repeats, size = 2, 2, 64
    cpu = machine()
    threads = args.threads or cpu.cores
    torch.set_num_threads(threads)
    import onnxruntime

    onnxruntime.set_default_logger_severity(3)  # torch.onnx.export leaves unused constants: not news

    ov = "not installed"
    if available("openvino"):
        import openvino

        ov = openvino.__version__
    print(f"CPU: {cpu.describe()}\npython {platform.python_version()}, torch {torch.__version__}, torchvision "
          f"{torchvision.__version__}, onnxruntime {onnxruntime.__version__}, openvino {ov}, "
          f"load {os.getloadavg()[0]:.2f}")  # fmt: skip
    rows: list[dict] = []
    for family in args.families.split(","):
        rows += run_family(family, args.batch, args.repeats, threads, size)
    summary(rows)
    print(f"load at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
