"""Design-space evaluation: variants per second, against compiling each variant in full.

The space is GoogLeNet's (specs/googlenet.yaml) with the filter counts of its
nine Inception modules made choices: each module's #3x3 and #5x5 take one of
three values (18 choices, 3^18 = 387,420,489 variants), plus, in the second
case, the auxiliary heads on or off and inception4b and 4c present or not
(structural choices: a variant whose structure was not seen yet is compiled in
full once). For each case this prints how many variants per second
``nasdsl.variants.Evaluator`` evaluates in one process (target: at least 300),
how many it compiled in full, and the rate of compiling every variant in full,
and checks that a sample of the fast figures equal the full compile's.

Then the cell spaces, whose variants choose other blocks (nasdsl/compose.py): every
NAS-Bench-201 cell listed in one process (specs/spaces/nas_bench_201.yaml, 15,625;
target 1,000 a second, under 1 GB), with the peak resident memory, and the DARTS space
sampled (specs/spaces/darts.yaml, target 300 a second after the one-time set-up, which is
timed apart; skipped with a message where the spec does not exist).

    python benchmarks/space.py [--variants 2000] [--seed 0] [--check 50] [--no-cells]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's nasdsl, not an installed one

import nasdsl  # noqa: E402
from nasdsl import document  # noqa: E402
from nasdsl import space as spaces  # noqa: E402
from nasdsl.variants import Evaluator  # noqa: E402

#: the paper's #3x3 and #5x5 of each module
MODULES = {
    "inception3a": (128, 32),
    "inception3b": (192, 96),
    "inception4a": (208, 48),
    "inception4b": (224, 64),
    "inception4c": (256, 64),
    "inception4d": (288, 64),
    "inception4e": (320, 128),
    "inception5a": (320, 128),
    "inception5b": (384, 128),
}
TARGET = 300
#: cells listed a second (NAS-Bench-201) and sampled a second (DARTS)
CELL_TARGET, DARTS_TARGET = 1000, 300
MEMORY_TARGET = 1 << 30


def filter_counts() -> dict[str, object]:
    out: dict[str, object] = {}
    for module, (c3, c5) in MODULES.items():
        out[f"{module}.c3x3"] = {"choice": [c3, c3 * 3 // 4, c3 * 5 // 4]}
        out[f"{module}.c5x5"] = {"choice": [c5, c5 // 2, c5 * 3 // 2]}
    return out


def structural() -> dict[str, object]:
    out = filter_counts()
    out["aux_logits"] = {"choice": [True, False]}
    for module, rest in (("inception4b", [160, 112, 224, 24, 64, 64]), ("inception4c", [128, 128, 256, 24, 64, 64])):
        args = dict(zip(("c1x1", "c3x3red", "c3x3", "c5x5red", "c5x5", "pool_proj"), rest, strict=True))
        args["c3x3"] = out.pop(f"{module}.c3x3")
        args["c5x5"] = out.pop(f"{module}.c5x5")
        out[module] = {"use": "Inception", "args": args, "when": {"choice": [True, False]}}
    return out


def case(name: str, overrides: dict[str, object], n: int, seed: int, check: int) -> float:
    doc, files = document.load_document(ROOT / "specs" / "googlenet.yaml")
    space = spaces.find_space(spaces.apply_overrides(doc, overrides), files[0], files)
    picks = space.sample(n, seed)
    start = time.perf_counter()
    evaluator = Evaluator(space)
    results = [evaluator.evaluate(p) for p in picks]
    fast = time.perf_counter() - start
    rate = len(results) / fast
    start = time.perf_counter()
    full = [evaluator.compile(p) for p in picks[:check]]
    slow = (time.perf_counter() - start) / max(len(full), 1)
    agree = all(a.figures == b.figures and a.error == b.error for a, b in zip(results, full, strict=False))
    print(
        f"{name:34s} {space.count():>13,} {len(results):>8,} {rate:>10,.0f} {evaluator.recompiled:>10,} "
        f"{slow * 1000:>9.1f} {1 / slow:>8,.0f}  {'equal' if agree else 'DIFFERENT'}"
    )
    if not agree:
        raise SystemExit(f"{name}: fast figures differ from a full compile's")
    return rate


def _rss() -> int:
    """The peak resident memory of this process, in bytes."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def nas_bench_201(check: int) -> bool:
    space = spaces.load_space(ROOT / "specs" / "spaces" / "nas_bench_201.yaml")
    start, cpu = time.perf_counter(), time.process_time()
    evaluator = Evaluator(space)
    results = [evaluator.evaluate(p) for p in space.variants()]
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    rate = len(results) / seconds
    rss = _rss()
    step = max(len(results) // max(check, 1), 1)
    agree = all(evaluator.compile(r.picks) == dataclasses.replace(r, recompiled=True) for r in results[::step][:check])
    print(
        f"NAS-Bench-201, every cell: {len(results):,} in {seconds:.1f} s ({rate:,.0f}/s, target {CELL_TARGET:,}/s; "
        f"{len(results) / cpu:,.0f} per CPU second), "
        f"{evaluator.recompiled} compiled in full, {sum(not r.valid for r in results)} invalid; peak RSS "
        f"{rss / 2**20:,.0f} MiB (target under {MEMORY_TARGET / 2**20:,.0f}); {min(check, len(results))} checked: "
        f"{'equal' if agree else 'DIFFERENT'}"
    )
    if not agree:
        raise SystemExit("NAS-Bench-201: composed figures differ from a full compile's")
    return rate >= CELL_TARGET and rss < MEMORY_TARGET


def darts(n: int, seed: int, check: int) -> bool:
    """Sample the DARTS space: the evaluator's set-up (the first variant: the composer's compiles) timed
    apart from the rate over the other samples; a sample of them checked against full compiles."""
    path = ROOT / "specs" / "spaces" / "darts.yaml"
    if not path.exists():
        print(f"DARTS: skipped, {path.relative_to(ROOT)} does not exist")
        return True
    space = spaces.load_space(path)
    picks = space.sample(n + 1, seed)
    start = time.perf_counter()
    evaluator = Evaluator(space)
    results = [evaluator.evaluate(picks[0])]
    setup, compiled = time.perf_counter() - start, evaluator.recompiled
    start, cpu = time.perf_counter(), time.process_time()
    results += [evaluator.evaluate(p) for p in picks[1:]]
    rate = n / (time.perf_counter() - start)
    per_cpu = n / (time.process_time() - cpu)
    step = max(len(results) // max(check, 1), 1)
    agree = all(evaluator.compile(r.picks) == dataclasses.replace(r, recompiled=True) for r in results[::step][:check])
    print(
        f"DARTS, {n:,} sampled of {space.count():,}: {rate:,.0f}/s (target {DARTS_TARGET}/s; "
        f"{per_cpu:,.0f} per CPU second) after a set-up of {setup:.1f} s ({compiled} compiled in full), "
        f"{evaluator.recompiled - compiled} compiled in full after it, {sum(not r.valid for r in results)} invalid; "
        f"{min(check, len(results))} checked: {'equal' if agree else 'DIFFERENT'}"
    )
    if not agree:
        raise SystemExit("DARTS: composed figures differ from a full compile's")
    return rate >= DARTS_TARGET


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", type=int, default=2000, help="variants evaluated per case (default 2000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--check", type=int, default=50, help="variants also compiled in full (default 50)")
    ap.add_argument("--no-cells", action="store_true", help="leave out NAS-Bench-201 and DARTS")
    args = ap.parse_args()
    print(f"python {sys.version.split()[0]}, nasdsl {nasdsl.__version__}; one process")
    print(
        f"{'case':34s} {'variants':>13s} {'sampled':>8s} {'fast /s':>10s} {'recompiled':>10s} "
        f"{'full ms':>9s} {'full /s':>8s}  check"
    )
    rates = [
        case("filter counts of 9 modules (18)", filter_counts(), args.variants, args.seed, args.check),
        case("... + aux heads, 4b, 4c on/off (21)", structural(), args.variants, args.seed, args.check),
    ]
    worst = min(rates)
    print(f"slowest rate {worst:,.0f} variants/s: {'met' if worst >= TARGET else 'MISSED'} (target {TARGET}/s)")
    if not args.no_cells:
        met = nas_bench_201(args.check)
        met = darts(args.variants, args.seed, args.check) and met
        print(f"cell spaces: {'met' if met else 'MISSED'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
