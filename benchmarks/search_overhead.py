"""What ``nasdsl search`` adds to Optuna per trial, and 10,000 trials end to end.

The space is GoogLeNet's (specs/googlenet.yaml) with the #3x3 and #5x5 filter
counts of its nine Inception modules made integer ranges (18 choices of 9
options: 1.5e17 variants, so duplicates are rare).

1. **Dispatch overhead.** Optuna alone runs a no-op objective that asks the same
   18 parameters (``study.optimize``); nasdsl runs the same study through its whole
   path with a no-op evaluator (a Python callable returning one metric): ask,
   the define-by-run mapping, the variant's key, its figures and budget check,
   the trial's folder (its spec written, its record), the dispatch, the tell and
   the trial's record in the storage. Both use the same sampler and the same kind
   of storage (in memory, and a SQLite file as ``nasdsl search`` configures it);
   nasdsl runs its trials in its own process (``--workers 0``) and on a pool of 2
   processes. Per trial is the steady state: the time from the first trial's
   end to the last one's, over the trials between (start-up excluded on both
   sides; Optuna's stamp is taken as each objective starts, with no callback,
   since Optuna deep-copies each finished trial for callbacks). Target: nasdsl
   within 1.2x of Optuna's own time per trial.
2. **10,000 proxy-free trials end to end**: ``--minimize macs --maximize params``
   (nothing is dispatched: nasdsl computes both), random sampler, the default
   SQLite storage, the wall time of the whole ``run_search`` call.

3. With ``--parts``, **where nasdsl's time goes**: one more in-process run per
   sampler and storage with a timer around each step of a trial (Optuna's ask
   and suggests, the check and figures, the spec text, the trial's folder with
   its evaluator and record, the tell), in milliseconds per trial. The timers
   add their own cost, so the parts are for comparing with each other and with
   Optuna alone, not with the table's columns.

    python benchmarks/search_overhead.py [--trials 300] [--repeat 1] [--samplers random,tpe]
        [--storages memory,sqlite] [--no-pool] [--parts] [--end-to-end 10000] [--e2e-sampler random]
        [--e2e-storage sqlite|memory]   (--trials 0: the end-to-end run alone)

With ``--repeat N`` each row's runs (Optuna alone, nasdsl in process, nasdsl on the
pool) are made one after the other, N rounds, and the medians are shown with each
round's figures and the load average: on a shared machine the ratio within a round
is what means something. The CPU columns are the process time (user and system) of
Optuna alone and of nasdsl in process, per trial: what the work costs whatever else
the machine runs (the pool's workers are other processes, so it has no CPU column).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's nasdsl, not an installed copy
sys.path.insert(0, str(Path(__file__).resolve().parent))  # this file's no-op evaluator, for the pool

import optuna  # noqa: E402

import nasdsl  # noqa: E402
from nasdsl.search import Config, goal, parse_evaluator, run_search  # noqa: E402
from nasdsl.search.study import _storage  # noqa: E402

SPEC = str(ROOT / "specs" / "googlenet.yaml")
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
TARGET = 1.2


def ranges() -> dict[str, tuple[int, int, int]]:
    """Each module's #3x3 and #5x5 from half to one and a half times the paper's, in eighths."""
    out = {}
    for module, counts in MODULES.items():
        for name, c in zip(("c3x3", "c5x5"), counts, strict=True):
            out[f"{module}.{name}"] = (c // 2, c * 3 // 2, c // 8)
    return out


OVERRIDES = tuple(f"{k}={{range: [{lo}, {hi}, {step}]}}" for k, (lo, hi, step) in ranges().items())


def noop(spec_path: str, workdir: str) -> dict:
    """The no-op evaluator."""
    return {"zero": 0.0}


def _sampler(name: str, seed: int):
    return {"random": optuna.samplers.RandomSampler, "tpe": optuna.samplers.TPESampler}[name](seed=seed)


def storage_of(kind: str, folder: str):
    if kind == "memory":
        return optuna.storages.InMemoryStorage()
    return _storage(f"sqlite:///{folder}/{kind}-{time.monotonic_ns()}.db", existing=False)


def _per_trial(stamps: list[tuple[float, float]]) -> tuple[float, float]:
    """Wall and CPU seconds per trial between the first stamp and the last."""
    (wall0, cpu0), (wall1, cpu1) = stamps[0], stamps[-1]
    return (wall1 - wall0) / (len(stamps) - 1), (cpu1 - cpu0) / (len(stamps) - 1)


def _stamp(stamps: list) -> None:
    stamps.append((time.perf_counter(), time.process_time()))


def optuna_alone(trials: int, sampler: str, storage) -> tuple[float, float]:
    """Wall and CPU seconds per trial of a no-op objective asking the same parameters, steady state."""
    study = optuna.create_study(storage=storage, sampler=_sampler(sampler, 0), direction="maximize")
    stamps: list[tuple[float, float]] = []

    space = ranges()

    def objective(trial) -> float:
        _stamp(stamps)
        for name, (lo, hi, step) in space.items():
            trial.suggest_int(name, lo, hi, step=step)
        return 0.0

    # stamped as each trial's objective starts: a callback would be given a deep copy of each
    # finished trial, work Optuna does only for callbacks (a quarter of its time per trial here)
    study.optimize(objective, n_trials=trials)
    return _per_trial(stamps)


def folder_floor(trials: int, folder: str) -> tuple[float, float]:
    """Wall and CPU seconds per trial of a trial folder's bare files: the folder, a spec.yaml as long
    as GoogLeNet's, a one-line record (no serialising, no checks, no atomic replace)."""
    text = Path(SPEC).read_text(encoding="utf-8")
    root = os.path.join(folder, f"floor-{time.monotonic_ns()}")
    stamps: list[tuple[float, float]] = []
    for n in range(trials):
        _stamp(stamps)
        where = os.path.join(root, f"trial-{n:05d}")
        os.makedirs(where)
        with open(os.path.join(where, "spec.yaml"), "w", encoding="utf-8") as f:
            f.write(text)
        with open(os.path.join(where, "trial.json"), "w", encoding="utf-8") as f:
            f.write(f'{{"trial": {n}}}\n')
    return _per_trial(stamps)


def nasdsl_search(trials: int, sampler: str, storage, workers: int, folder: str) -> tuple[float, float, int]:
    """Wall and CPU seconds (of this process) per trial evaluated through nasdsl's path, steady
    state; and the duplicates seen."""
    stamps: list[tuple[float, float]] = []
    evaluate = noop if workers == 0 else "search_overhead:noop"
    cfg = Config(
        spec=SPEC,
        overrides=OVERRIDES,
        goals=(goal("metric:zero", "maximize"),),
        trials=trials,
        sampler=sampler,
        evaluator=parse_evaluator(evaluate),
        workdir=os.path.join(folder, f"w{time.monotonic_ns()}"),
        storage=storage,
        study_name="overhead",
        workers=workers,
    )
    summary = run_search(cfg, say=lambda line: _stamp(stamps))
    return *_per_trial(stamps), summary.duplicates


#: the steps of a trial timed by --parts: (label, module, owner within it or None, name)
PARTS = (
    ("Optuna: ask", "optuna.study", "Study", "ask"),
    ("Optuna: the suggests (nasdsl's mapping)", "nasdsl.search.params", "Asker", "__call__"),
    ("the variant's key", "nasdsl.search.identity", "Identities", "__call__"),
    ("the check and figures", "nasdsl.variants", "Evaluator", "evaluate"),
    ("the spec text", "nasdsl.search.specfile", "SpecTexts", "__call__"),
    ("the spec's header", "nasdsl.space", None, "variant_header"),
    ("the folder, evaluator and record", "nasdsl.search.executors", None, "run_trial"),
    ("Optuna: tell (with the record)", "nasdsl.search.study", None, "tell"),
)


@contextlib.contextmanager
def _timed(totals: dict[str, float]):
    """Each of PARTS wrapped in a timer adding to ``totals`` while the block runs."""
    undo = []
    for label, module, owner, name in PARTS:
        where = sys.modules[module] if owner is None else getattr(sys.modules[module], owner)
        original = getattr(where, name)

        @functools.wraps(original)
        def timed(*args, _original=original, _label=label, **kwargs):
            started = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                totals[_label] = totals.get(_label, 0.0) + time.perf_counter() - started

        setattr(where, name, timed)
        undo.append((where, name, original))
    try:
        yield
    finally:
        for where, name, original in undo:
            setattr(where, name, original)


def parts(args, folder: str) -> None:
    """Milliseconds per trial in each step of nasdsl's in-process path (see the module docstring)."""
    print(f"\n3. where nasdsl's time goes, in process, {args.trials} trials (ms per trial, timers included)")
    rows = [(s, k) for s in args.samplers.split(",") for k in args.storages.split(",")]
    print("| step | " + " | ".join(f"{s}, {k}" for s, k in rows) + " |")
    print("|---|" + "---:|" * len(rows))
    found = []
    for sampler, kind in rows:
        totals: dict[str, float] = {}
        with _timed(totals):
            started = time.perf_counter()
            nasdsl_search(args.trials, sampler, storage_of(kind, folder), 0, folder)
            totals["the whole run"] = time.perf_counter() - started
        found.append(totals)
    for label in [p[0] for p in PARTS] + ["the whole run"]:
        print(f"| {label} | " + " | ".join(f"{t.get(label, 0.0) / args.trials * 1e3:.3f}" for t in found) + " |")


def end_to_end(trials: int, folder: str, sampler: str, storage: str) -> tuple[float, object]:
    cfg = Config(
        storage=optuna.storages.InMemoryStorage() if storage == "memory" else None,
        spec=SPEC,
        overrides=OVERRIDES,
        goals=(goal("macs", "minimize"), goal("params", "maximize")),
        trials=trials,
        sampler=sampler,
        workdir=os.path.join(folder, f"e2e-{sampler}"),
        study_name="e2e",
    )
    started = time.perf_counter()
    summary = run_search(cfg, say=lambda line: None)
    return time.perf_counter() - started, summary


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def overhead(args, folder: str) -> float:
    """The overhead table: each row's runs interleaved, ``--repeat`` rounds, medians."""
    print(
        f"\n1. per trial, steady state, {args.trials} trials; no-op objective / evaluator; "
        f"median of {args.repeat} interleaved rounds"
    )
    head = (
        "sampler",
        "storage",
        "Optuna alone ms",
        "nasdsl in-process ms",
        "ratio",
        "nasdsl 2-process pool ms",
        "ratio",
        "CPU ms: Optuna alone / in-process",
        "CPU ratio",
        "folder floor CPU ms",
        "best reachable",
    )
    print("| " + " | ".join(head) + " |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    worst = 0.0
    for sampler in args.samplers.split(","):
        for kind in args.storages.split(","):
            rounds, duplicates = [], 0
            for _ in range(args.repeat):
                wall, cpu = optuna_alone(args.trials, sampler, storage_of(kind, folder))
                inline, inline_cpu, dup = nasdsl_search(args.trials, sampler, storage_of(kind, folder), 0, folder)
                duplicates += dup
                pool = math.nan
                if args.pool:
                    pool, _, dup = nasdsl_search(args.trials, sampler, storage_of(kind, folder), 2, folder)
                    duplicates += dup
                _, floor = folder_floor(args.trials, folder)
                rounds.append((wall, inline, pool, cpu, inline_cpu, floor))
            a, i, p, ca, ci, fl = (statistics.median(r[n] for r in rounds) for n in range(6))
            worst = max(worst, i / a)
            print(
                f"| {sampler} | {kind} | {a * 1e3:.2f} | {i * 1e3:.2f} | {i / a:.2f}x | {p * 1e3:.2f} | {p / a:.2f}x "
                f"| {ca * 1e3:.2f} / {ci * 1e3:.2f} | {ci / ca:.2f}x | {fl * 1e3:.3f} | {(ca + fl) / ca:.2f}x |"
            )
            if args.repeat > 1:
                shown = "; ".join(" / ".join(f"{x * 1e3:.2f}" for x in r[:5]) for r in rounds)
                print(
                    f"  rounds (wall: alone / in-process / pool; CPU: alone / in-process, ms): {shown}; load {_load()}"
                )
            if duplicates:
                print(f"  ({duplicates} duplicates over the rounds)")
    return worst


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=300, help="trials per overhead measurement (default 300)")
    p.add_argument("--repeat", type=int, default=1, help="interleaved rounds per row; the medians are shown")
    p.add_argument("--samplers", default="random,tpe", help="samplers of the overhead runs (default random,tpe)")
    p.add_argument("--storages", default="memory,sqlite", help="storages of the overhead runs (default memory,sqlite)")
    p.add_argument("--parts", action="store_true", help="time each step of nasdsl's trial too")
    p.add_argument("--no-pool", dest="pool", action="store_false", help="leave out the 2-process pool")
    p.add_argument("--end-to-end", type=int, default=10_000, help="trials of the end-to-end run (default 10,000)")
    p.add_argument("--e2e-sampler", default="random", help="the end-to-end run's sampler (default random)")
    p.add_argument(
        "--e2e-storage",
        choices=("sqlite", "memory"),
        default="sqlite",
        help="the end-to-end run's storage: the default SQLite file, or Optuna's in-memory storage",
    )
    args = p.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(
        f"python {platform.python_version()}, optuna {optuna.__version__}, nasdsl {nasdsl.__version__} "
        f"({Path(nasdsl.__file__).parent}), {os.cpu_count()} CPUs, {platform.machine()}; load {_load()}"
    )
    print(f"space: GoogLeNet with {len(OVERRIDES)} integer ranges of 9 options (9^18 = {9**18:.2e} variants)")
    worst = None
    with tempfile.TemporaryDirectory() as folder:
        if args.trials:
            worst = overhead(args, folder)
            if args.parts:
                parts(args, folder)
        if args.end_to_end:
            seconds, summary = end_to_end(args.end_to_end, folder, args.e2e_sampler, args.e2e_storage)
            where = "SQLite file" if args.e2e_storage == "sqlite" else "in memory"
            print(
                f"\n2. {summary.evaluated:,} proxy-free trials end to end ({args.e2e_sampler}, {where}): "
                f"{seconds:.1f} s, {seconds / max(summary.evaluated, 1) * 1e3:.2f} ms a trial; "
                f"{summary.duplicates} duplicates, {summary.rejected} rejected; stopped: {summary.stopped}"
            )
    if worst is not None:
        print(f"\nworst in-process ratio {worst:.2f}x (target {TARGET}x); load {_load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
