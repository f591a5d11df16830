"""Where a spec's time goes in ONNX Runtime, per IR node and op, against the latency model's costs.

    python benchmarks/latency_profile.py SPEC... [--runs 8] [--nodes PATTERN] [--engine onnxruntime]

Each spec is exported to ONNX as the calibration exports it, opened in ONNX Runtime with its
profiler on (one thread, batch 1) and run ``--runs`` times; each ONNX Runtime node's time is the
smallest of its runs (other processes only ever add time), and is charged to the IR node its
name comes from (the export names an IR node ``a.b`` ``a/b`` and its helpers ``a/b/Op``; ONNX
Runtime keeps the name, adding ``_nchwc`` or ``_activation`` for what it rewrites; a convolution
with its activation fused is charged to the IR node whose name it kept, often the activation's:
compare a convolution's and its activation's rows together). Printed per
spec: the time by IR op and latency-model group (the group of the node's first part), measured
and predicted (this machine's calibration); the time by IR op and ONNX Runtime op; the nodes no
IR node claims (the layout reorders ONNX Runtime adds). ``--nodes`` also lists every ONNX Runtime
node whose name holds PATTERN (``features/1/1/attn``), with its input and output shapes.

The profile's times are the wall clock of each kernel, so on a shared machine they are larger than
``calibrate.measure_ms``'s CPU time; compare shares within one profile.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

import nasdsl  # noqa: E402
from nasdsl import ir  # noqa: E402
from nasdsl.bench import latency  # noqa: E402


def profile(graph, runs: int) -> dict[str, tuple[float, str, list, list]]:
    """Each ONNX Runtime node's smallest time (ms) over ``runs`` runs, its op and its shapes."""
    import onnxruntime as ort

    from nasdsl.backends.onnx import export_onnx_bytes

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.enable_profiling = True
    with tempfile.TemporaryDirectory(prefix="nasdsl-profile-") as folder:
        options.profile_file_prefix = str(Path(folder) / "profile")
        session = ort.InferenceSession(
            export_onnx_bytes(graph, optimize="onnxruntime"), options, providers=["CPUExecutionProvider"]
        )
        shape = ir.node(graph, ir.info(graph).input).shape
        x = np.random.default_rng(0).standard_normal((1, *shape), dtype=np.float32)
        for _ in range(runs):
            session.run(None, {session.get_inputs()[0].name: x})
        events = json.loads(Path(session.end_profiling()).read_text())
    times: dict[str, list[float]] = collections.defaultdict(list)
    info: dict[str, tuple[str, list, list]] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            name = e["name"].removesuffix("_kernel_time")
            times[name].append(e["dur"] / 1000)
            args = e.get("args", {})
            shapes = [
                [next(iter(d.values())) for d in args.get(k, [])] for k in ("input_type_shape", "output_type_shape")
            ]
            info[name] = (args.get("op_name", "?"), *shapes)
    return {name: (min(t), *info[name]) for name, t in times.items()}


def owner(name: str, paths: dict[str, str]) -> str | None:
    """The IR node an ONNX Runtime node's name comes from (the longest path it starts with)."""
    parts = re.split(r"[/ ]", name.replace(".", "/").replace("_nchwc", "").replace("_activation", ""))
    for k in range(len(parts), 0, -1):
        found = paths.get("/".join(parts[:k]))
        if found is not None:
            return found
    return None


def report(spec: str, model, runs: int, pattern: str | None) -> None:
    g = nasdsl.compile_spec(spec).graph
    views = {v.name: v for v in latency._nodes(g)}
    ctx = latency.contexts((v.name, v.op, v.inputs, v.train) for v in views.values())
    paths = {n.replace(".", "/"): n for n in views}
    nodes = profile(g, runs)
    costs = model.costs(g) if model is not None else {}
    measured, by_op, lone = collections.Counter(), collections.Counter(), collections.Counter()
    for name, (ms, op, _, _) in nodes.items():
        node = owner(name, paths)
        if node is None:
            lone[op] += ms
        else:
            measured[node] += ms
            by_op[views[node].op, op] += ms
    total = sum(ms for ms, *_ in nodes.values())
    print(f"== {spec}: {total:.2f} ms profiled (wall clock), {sum(costs.values()):.2f} ms predicted")
    groups: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0])
    for name, v in views.items():
        parts = latency.features(v.op, v.attrs, v.in_shapes, v.shape, v.macs, ctx[name])
        key = f"{v.op} / {parts[0][0] if parts else '-'}"
        groups[key][0] += measured[name]
        groups[key][1] += costs.get(name, 0.0)
    print("  IR op / group                              measured  predicted")
    for key, (m, p) in sorted(groups.items(), key=lambda kv: -max(kv[1])):
        if max(m, p) >= 0.005 * total:
            print(f"  {key:<40} {m:9.2f} {p:10.2f}")
    print("  IR op, ONNX Runtime op                     measured")
    for (op, kernel), ms in by_op.most_common():
        if ms >= 0.005 * total:
            print(f"  {op + ', ' + kernel:<40} {ms:9.2f}")
    for op, ms in lone.most_common(5):
        print(f"  (no IR node) {op:<27} {ms:9.2f}")
    if pattern:
        for name, (ms, op, ins, outs) in nodes.items():
            if pattern in name.replace(".", "/"):
                print(f"  {ms:8.3f} {op:<20} {name:<50} {ins} -> {outs}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("specs", nargs="+")
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--nodes", metavar="PATTERN", help="list the ONNX Runtime nodes whose name holds PATTERN")
    ap.add_argument("--engine", default="onnxruntime", choices=latency.LATENCY_ENGINES[:1])
    args = ap.parse_args(argv)
    model = latency.cached(args.engine)
    if model is None:
        print("no calibration on this machine: measured times only (nasdsl bench SPEC --calibrate)", file=sys.stderr)
    for spec in args.specs:
        report(spec, model, args.runs, args.nodes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
