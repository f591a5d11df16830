"""ONNX export of GoogLeNet (specs/googlenet_bn.yaml): nasdsl's emitter against torch.onnx
exporting the same generated PyTorch model with the same weights, measured in one run.

    python benchmarks/onnx_export.py [--repeats N] [--ort-repeats N] [--threads N]

Emission: median wall time to a serialized model: ``export_onnx_bytes`` (what the command line
writes) from an already compiled spec and from the YAML file, and ``export_onnx`` +
``SerializeToString``, against ``torch.onnx.export`` on the TorchScript path (``dynamo=False``),
run interleaved in rounds (several runs of each of ours to one of torch's) so that drifts in
machine speed hit all alike, and on the dynamo path (``dynamo=True``); an exporter's failure is
reported, not raised. ``--ort-repeats 0`` stops after the TorchScript row.

Inference: median ONNX Runtime latency (CPU provider, the same intra-op thread count for every
graph) at batch 1 and 16, each graph exported at that batch; the graphs run interleaved too,
and a second session of our own graph shows how far two identical graphs differ on this machine.

Targets: emission at least 10x faster than the TorchScript path; ORT ratio (ours / torch's)
at most 1.05.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import math
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import nasdsl  # noqa: E402
from nasdsl.backends.onnx import DEFAULT_OPSET, export_onnx, export_onnx_bytes  # noqa: E402
from nasdsl.weights import initial_weights  # noqa: E402

SPEC = ROOT / "specs" / "googlenet_bn.yaml"
#: runs of each nasdsl emitter per run of the TorchScript exporter
OURS_PER_ROUND = 4


def median_time(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def lively(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Seeded random weights that keep activations alive through the depth (GoogLeNet's own
    initialisation leaves logits close to the classifier's bias), and BatchNorm statistics
    away from the identity, so that the graphs' outputs are worth comparing."""
    gen = torch.Generator().manual_seed(0)
    out = {}
    for key, value in state_dict.items():
        leaf = key.rsplit(".", 1)[-1]
        if leaf == "num_batches_tracked":
            out[key] = value
        elif leaf == "weight" and value.dim() > 1:
            out[key] = torch.randn(value.shape, generator=gen) * math.sqrt(2.0 / value[0].numel())
        elif leaf in ("weight", "running_var"):
            out[key] = torch.rand(value.shape, generator=gen) + 0.5
        else:
            out[key] = torch.randn(value.shape, generator=gen) * 0.1
    return out


def torch_export(model: torch.nn.Module, x: torch.Tensor, dynamo: bool) -> bytes:
    # the dynamo path logs its opset conversion attempts at length; keep the table readable
    sink = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stderr(sink), contextlib.redirect_stdout(sink):
        warnings.simplefilter("ignore")
        logging.disable(logging.CRITICAL)
        try:
            if dynamo:
                program = torch.onnx.export(model, (x,), dynamo=True, opset_version=DEFAULT_OPSET, verbose=False)
                return program.model_proto.SerializeToString()
            buffer = io.BytesIO()
            torch.onnx.export(
                model, (x,), buffer, dynamo=False, opset_version=DEFAULT_OPSET, input_names=["x"],
                output_names=["logits"],
            )  # fmt: skip
            return buffer.getvalue()
        finally:
            logging.disable(logging.NOTSET)


def session(model: bytes, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # the sessions take turns: a spinning thread pool of one would steal the cores of the next
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def ort_latency(
    graphs: dict[str, bytes], x: np.ndarray, threads: int, repeats: int
) -> dict[str, tuple[float, np.ndarray]]:
    """Median latency of each graph on ``x``, the graphs interleaved (order alternating)."""
    sessions = {k: session(v, threads) for k, v in graphs.items()}
    feeds = {k: {s.get_inputs()[0].name: x} for k, s in sessions.items()}
    outputs = {k: s.run(None, feeds[k])[0] for k, s in sessions.items()}  # warm-up
    for k, s in sessions.items():
        s.run(None, feeds[k])
    times: dict[str, list[float]] = {k: [] for k in sessions}
    names = list(sessions)
    for i in range(repeats):
        for k in names if i % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            sessions[k].run(None, feeds[k])
            times[k].append(time.perf_counter() - start)
    return {k: (statistics.median(v), outputs[k]) for k, v in times.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7, help="rounds of emission (at least 5)")
    ap.add_argument(
        "--ort-repeats",
        type=int,
        default=40,
        help="ONNX Runtime runs per graph at batch 1 (half at 16); 0 measures emission only, without the dynamo path",
    )
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="ORT intra-op threads (all graphs)")
    args = ap.parse_args()
    try:
        import onnxscript

        onnxscript_version = onnxscript.__version__
    except ImportError:
        onnxscript_version = "not installed"
    print(
        f"python {platform.python_version()}, torch {torch.__version__}, onnx {onnx.__version__}, "
        f"onnxruntime {ort.__version__}, onnxscript {onnxscript_version}, nasdsl {nasdsl.__version__}"
    )
    print(f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, ORT intra-op threads {args.threads}")
    print(f"spec {SPEC.relative_to(ROOT)}, opset {DEFAULT_OPSET}")

    compiled = nasdsl.compile_spec(SPEC)
    weights = lively({k: torch.from_numpy(v) for k, v in initial_weights(compiled.graph).items()})
    model = nasdsl.build_model(compiled, weights=weights).eval()

    def ours(batch: int = 1) -> bytes:
        return export_onnx_bytes(compiled, state_dict=weights, batch=batch)

    def ours_proto() -> bytes:
        return export_onnx(compiled, state_dict=weights).SerializeToString()

    def ours_from_yaml() -> bytes:
        return export_onnx_bytes(nasdsl.compile_spec(SPEC), state_dict=weights)

    x1 = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    ours()  # warm-up (imports, caches)
    # nasdsl's emitters and the TorchScript exporter run interleaved, round by round (several
    # runs of ours, which are cheap, to one of torch's), so drifts in machine speed hit both
    rounds = max(args.repeats, 5)
    ours_fns = {"ours": ours, "yaml": ours_from_yaml, "proto": ours_proto}
    samples: dict[str, list[float]] = {k: [] for k in [*ours_fns, "torchscript"]}

    def torchscript() -> bytes:
        return torch_export(model, x1, False)

    torchscript_error = None
    try:
        torchscript()  # warm-up
    except Exception as e:  # noqa: BLE001 - report any exporter failure and go on
        torchscript_error = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:100]}"
    for _ in range(rounds):
        for key, fn in ours_fns.items():
            samples[key] += [median_time(fn, 1)[0] for _ in range(OURS_PER_ROUND)]
        if torchscript_error is None:
            samples["torchscript"].append(median_time(torchscript, 1)[0])
    t_ours, t_yaml, t_proto = (statistics.median(samples[k]) for k in ours_fns)

    print()
    print(f"{'emission (median, to bytes)':<44} {'ms':>10} {'vs nasdsl':>10}")
    print(f"{'nasdsl export_onnx_bytes (as the CLI writes)':<44} {t_ours * 1e3:10.1f} {1.0:9.1f}x")
    print(f"{'nasdsl compile_spec + export_onnx_bytes':<44} {t_yaml * 1e3:10.1f} {t_yaml / t_ours:9.1f}x")
    print(f"{'nasdsl export_onnx + SerializeToString':<44} {t_proto * 1e3:10.1f} {t_proto / t_ours:9.1f}x")
    exporters = {}
    label = "torch.onnx.export, dynamo=False"
    if torchscript_error is not None:
        print(f"{label:<44} {'failed':>10}  {torchscript_error}")
    else:
        exporters[label] = False
        t = statistics.median(samples["torchscript"])
        ratio = t / t_ours
        # the spread of the ratio over rounds: each round's torch run against the median of its own runs of ours
        runs = samples["ours"]
        per_round = sorted(
            t_torch / statistics.median(runs[i * OURS_PER_ROUND : (i + 1) * OURS_PER_ROUND])
            for i, t_torch in enumerate(samples["torchscript"])
        )
        print(
            f"{label + f' (opset {DEFAULT_OPSET})':<44} {t * 1e3:10.1f} {ratio:9.1f}x  TorchScript path; "
            f"target >= 10x: {'met' if ratio >= 10 else 'MISSED'} (rounds {per_round[0]:.1f}x to {per_round[-1]:.1f}x)"
        )
    if args.ort_repeats == 0:
        return 0
    label = "torch.onnx.export, dynamo=True"
    try:
        torch_export(model, x1, True)  # warm-up
        t, _ = median_time(lambda: torch_export(model, x1, True), args.repeats)
    except Exception as e:  # noqa: BLE001 - report any exporter failure and go on
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:100]
        print(f"{label:<44} {'failed':>10}  {type(e).__name__}: {first}")
    else:
        exporters[label] = True
        opset = onnx.load_from_string(torch_export(model, x1, True)).opset_import
        label += f" (opset {next(o.version for o in opset if o.domain in ('', 'ai.onnx'))})"
        print(f"{label:<44} {t * 1e3:10.1f} {t / t_ours:9.1f}x")

    print()
    print(f"{'ONNX Runtime latency (median)':<44} {'ours ms':>10} {'torch ms':>10} {'ratio':>7} {'max rel diff':>13}")
    for batch in (1, 16):
        x = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(batch))
        # a second session of our own graph: the ratio of identical graphs shows the noise floor
        graphs = {"nasdsl": ours(batch), "nasdsl again": ours(batch)}
        for label, dynamo in exporters.items():
            graphs[label] = torch_export(model, x, dynamo)
        repeats = args.ort_repeats if batch == 1 else max(5, args.ort_repeats // 2)
        results = ort_latency(graphs, x.numpy(), args.threads, repeats)
        t_n, y_n = results.pop("nasdsl")
        t_again, _ = results.pop("nasdsl again")
        label = f"batch {batch}, vs itself (noise floor)"
        print(f"{label:<44} {t_n * 1e3:10.2f} {t_again * 1e3:10.2f} {t_n / t_again:7.3f}")
        for label, (t_t, y_t) in results.items():
            kind = "TorchScript" if not exporters[label] else "dynamo"
            diff = float(np.abs(y_n - y_t).max() / np.abs(y_t).max())
            ok = "met" if t_n / t_t <= 1.05 else "MISSED"
            print(
                f"{f'batch {batch}, vs {kind} graph':<44} {t_n * 1e3:10.2f} {t_t * 1e3:10.2f} {t_n / t_t:7.3f} "
                f"{diff:13.1e}  target <= 1.05: {ok}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
