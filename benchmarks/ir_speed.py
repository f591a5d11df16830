"""Code generation from the IR: ``generate_source`` against ``compile_spec``, per spec.

The PyTorch backend reads the graph and nothing else; it never rebuilds it. For
every spec in specs/ this prints the median time of ``compile_spec`` (load,
parse, expand, check, shape) and of ``generate_source`` on its result (the
pass pipeline, then the writer), their ratio (target: at most 2), and how many
times the builder ran during generation (target: 0), counted by wrapping it.

    python benchmarks/ir_speed.py [--repeats 9]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

import nasdsl  # noqa: E402
from nasdsl import build as build_module  # noqa: E402
from nasdsl.backends.pytorch import generate_source  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=9)
    args = ap.parse_args()
    calls = [0]
    real_build = build_module.build

    def counting(*a, **k):
        calls[0] += 1
        return real_build(*a, **k)

    print(f"python {sys.version.split()[0]}, nasdsl {nasdsl.__version__}; median of {args.repeats}")
    print(f"{'spec':28s} {'compile ms':>10s} {'generate ms':>11s} {'ratio':>6s} {'rebuilds':>8s}  target ratio <= 2")
    worst = 0.0
    for spec in sorted((ROOT / "specs").glob("*.yaml")):
        compile_times, generate_times = [], []
        rebuilds = 0
        for _ in range(args.repeats):
            start = time.perf_counter()
            net = nasdsl.compile_spec(spec)
            middle = time.perf_counter()
            build_module.build, nasdsl.api.build = counting, counting
            calls[0] = 0
            try:
                generate_source(net)
            finally:
                build_module.build, nasdsl.api.build = real_build, real_build
            end = time.perf_counter()
            rebuilds = max(rebuilds, calls[0])
            compile_times.append(middle - start)
            generate_times.append(end - middle)
        c, g = statistics.median(compile_times) * 1000, statistics.median(generate_times) * 1000
        worst = max(worst, g / c)
        print(f"{spec.name:28s} {c:10.1f} {g:11.1f} {g / c:6.2f} {rebuilds:8d}")
    print(f"worst ratio {worst:.2f}: {'met' if worst <= 2 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
