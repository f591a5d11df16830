"""Cost against spec size: check, summary, PyTorch and ONNX compile of specs of 1k, 10k, 100k nodes.

Each spec is generated here: a stem, then a sequence of uses of a residual template (a 3x3
convolution, BatchNorm, ReLU, added to the block's input: five nodes a use) and a classifier, at
8 channels on 8x8 maps so that the weights stay small. Every command runs as its own process
(``python -m nasdsl ...``), timed from start to exit; the growth from one size to the next of
the time above the command's start-up (its best time on a spec of 10 nodes) is printed as the
exponent k in time ~ n^k (k <= 1.1 is linear-ish; n log n from 10k to 100k nodes is about
1.07); where the smaller size's work is within the noise of a process start, no exponent is
printed. Targets: no command grows faster than n log n, and ``check`` of the 100k-node spec
takes under 10 s.

    python benchmarks/scale.py [--sizes 1000 10000 100000]
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: seconds of work above start-up below which a growth exponent would measure the machine's noise
#: (a process start varies by about 0.1 s here)
NOISE = 0.3

HEAD = """\
name: Scale
input: {shape: [8, 8, 8]}
templates:
  Block:
    params: [c]
    body:
      add:
        main:
          conv: {op: conv2d, out: c, kernel: 3, padding: 1, bias: false}
          bn: batch_norm
          relu: relu
        skip: identity
model:
  stem: {op: conv2d, out: 8, kernel: 1}
  blocks:
"""
TAIL = """\
  pool: global_avg_pool
  flat: flatten
  fc: {op: linear, out: 10}
"""
COMMANDS = {
    "check": ["check"],
    "summary": ["summary"],
    "pytorch": ["compile", "-o", "OUT.py"],
    "onnx": ["compile", "-o", "OUT.onnx", "--max-params", str(10**12)],
}


def spec_text(nodes: int) -> str:
    uses = max(1, (nodes - 5) // 5)
    return HEAD + "".join("    - {use: Block, args: [8]}\n" for _ in range(uses)) + TAIL


#: this checkout's nasdsl, not an installed copy (the commands run in a temporary folder)
ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}


def run(cwd: Path, argv: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "nasdsl", *argv], cwd=cwd, capture_output=True, text=True, env=ENV)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"nasdsl {' '.join(argv)} failed:\n{done.stderr}")
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    args = ap.parse_args()
    which = [sys.executable, "-c", "import nasdsl; print(nasdsl.__file__)"]
    where = subprocess.run(which, capture_output=True, text=True, env=ENV, cwd="/").stdout.strip()
    print(f"nasdsl measured: {where}")
    times: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        tiny = cwd / "scale_tiny.yaml"
        tiny.write_text(spec_text(10))
        start = {name: min(run(cwd, [*argv, str(tiny)]) for _ in range(3)) for name, argv in COMMANDS.items()}
        for n in args.sizes:
            spec = cwd / f"scale_{n}.yaml"
            spec.write_text(spec_text(n))
            big = ["--max-nodes", str(max(100_000, 2 * n)), "--max-yaml-nodes", str(max(10**6, 20 * n))]
            times[n] = {name: run(cwd, [*argv, str(spec), *big]) for name, argv in COMMANDS.items()}
    print(f"{'nodes':>8s} " + " ".join(f"{c:>9s}" for c in COMMANDS) + "   (seconds, whole process)")
    for n, row in times.items():
        print(f"{n:8d} " + " ".join(f"{row[c]:9.2f}" for c in COMMANDS))
    print("start-up " + " ".join(f"{start[c]:9.2f}" for c in COMMANDS) + "   (a spec of 10 nodes, best of 3)")
    sizes = list(times)
    worst = 0.0
    for a, b in zip(sizes, sizes[1:], strict=False):
        for c in COMMANDS:
            # growth of the part above the fixed start-up (the command on a spec of a few nodes)
            work_a, work_b = times[a][c] - start[c], times[b][c] - start[c]
            if work_a < NOISE:
                print(f"  {c:8s} {a:>6d} -> {b:<6d} nodes: {work_a:.2f} s above start-up at {a}: within the noise")
                continue
            k = math.log(max(work_b, 1e-3) / work_a) / math.log(b / a)
            worst = max(worst, k)
            print(f"  {c:8s} {a:>6d} -> {b:<6d} nodes: time ~ n^{k:.2f}")
    largest = sizes[-1]
    print(f"worst exponent {worst:.2f} (n log n ~ 1.07); check of {largest} nodes: {times[largest]['check']:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
