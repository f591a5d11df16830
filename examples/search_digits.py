#!/usr/bin/env python
"""A real architecture search, measured: a small CNN space on scikit-learn's handwritten digits.

    python examples/search_digits.py                 # 40 trials (TPE) and 20 random ones, on 2 Ray workers
    python examples/search_digits.py --trials 8 --random 4 --workers 0 --epochs 1   # a quick look, no Ray

The space is examples/digits_space.yaml (320 variants: widths, kernel, BatchNorm, a second convolution, a
hidden layer). Each trial builds its variant with nasdsl, trains it for --epochs on 1,437 of the 1,797 8x8
images that scikit-learn ships (load_digits: nothing is downloaded) and reports its accuracy on the other
360. The search maximises that accuracy and minimises the multiply-adds (nasdsl's count, known before the
trial runs) with Optuna's TPE; a second study draws variants at random, as the baseline. The script prints
the Pareto front, the best accuracy found against the random variants' mean and best, and the wall times.
docs/search.md shows a run's figures. Needs the search extra: pip install 'nasdsl[search]'.

:func:`evaluate` is the trial's evaluator (``--evaluate examples.search_digits:evaluate`` on the command line,
from the repository's root): it starts from ``WORKDIR/init.safetensors`` when a warm start made one.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SPACE = os.path.join(HERE, "digits_space.yaml")
#: training epochs per trial (the command line's --epochs sets it for the trials of this script)
EPOCHS = int(os.environ.get("DIGITS_EPOCHS", "2"))


def data():
    """The digits split once and for all: 1,437 images to train on, 360 to validate on (stratified, seed 0),
    pixels scaled from 0..16 to 0..1, as tensors of shape (N, 1, 8, 8)."""
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    train_idx, val_idx = train_test_split(range(len(y)), test_size=360, random_state=0, stratify=digits.target)
    return x[train_idx], y[train_idx], x[val_idx], y[val_idx]


def evaluate(spec_path: str, workdir: str) -> dict:
    """Train the variant at ``spec_path`` for EPOCHS epochs (Adam, batch 32, seed 0) and return its validation
    accuracy, last training loss and seconds."""
    import torch
    import torch.nn.functional as F

    import nasdsl

    started = time.perf_counter()
    torch.manual_seed(0)
    init = os.path.join(workdir, "init.safetensors")
    model = nasdsl.build_model(spec_path, weights=init if os.path.exists(init) else None)
    x, y, vx, vy = data()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    order = torch.Generator().manual_seed(0)
    loss = torch.tensor(0.0)
    for _ in range(EPOCHS):
        model.train()
        for idx in torch.randperm(len(y), generator=order).split(32):
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(vx).argmax(1) == vy).float().mean())
    print(f"{spec_path}: accuracy {accuracy:.4f} after {EPOCHS} epochs")
    return {"accuracy": accuracy, "train_loss": loss.item(), "seconds": round(time.perf_counter() - started, 3)}


def main(argv: list[str] | None = None) -> int:
    global EPOCHS
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--trials", type=int, default=40, help="variants the TPE search evaluates (default 40)")
    p.add_argument("--random", type=int, default=20, help="variants drawn at random, the baseline (default 20)")
    p.add_argument("--workers", type=int, default=2, help="trials at once (default 2; 0: in this process)")
    p.add_argument("--no-ray", action="store_true", help="a local process pool instead of a local Ray instance")
    p.add_argument("--epochs", type=int, default=EPOCHS, help=f"training epochs per trial (default {EPOCHS})")
    p.add_argument("--seed", type=int, default=0, help="TPE's seed (default 0); the random baseline's is one more")
    p.add_argument(
        "--exhaustive",
        action="store_true",
        help="also train every variant of the space (320), to rank what the searches found among all",
    )
    p.add_argument(
        "--workdir",
        default="search-digits",
        help="the folder of the searches: each study's trials and storage in a folder of its own under it "
        "(tpe, random, all; default %(default)s)",
    )
    args = p.parse_args(argv)
    os.environ["DIGITS_EPOCHS"] = str(args.epochs)  # the trials' processes read it at import
    EPOCHS = args.epochs

    for extra in ("optuna", "sklearn") + (("ray",) if not args.no_ray and args.workers > 0 else ()):
        try:
            __import__(extra)
        except ImportError:
            raise SystemExit(f"search_digits.py needs {extra}: pip install 'nasdsl[search]'") from None
    from nasdsl.search import Config, goal, parse_evaluator, run_search
    from nasdsl.search.report import front

    use_ray = not args.no_ray and args.workers > 0
    ray_seconds = 0.0
    if use_ray:
        import ray

        t = time.perf_counter()
        ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
        ray_seconds = time.perf_counter() - t

    def apart(study: str) -> str:
        """A study's own folder: every study numbers its trial folders from 0."""
        return os.path.join(args.workdir, study)

    common = {
        "spec": SPACE,
        "goals": (goal("metric:accuracy", "maximize"), goal("macs", "minimize")),
        "evaluator": parse_evaluator(evaluate),
        "workers": args.workers,
        "ray": "auto" if use_ray else None,
    }
    started = time.perf_counter()
    searched = run_search(
        Config(**common, trials=args.trials, sampler="tpe", seed=args.seed, study_name="tpe", workdir=apart("tpe")),
        say=print,
    )
    middle = time.perf_counter()
    drawn = run_search(
        Config(
            **common,
            trials=args.random,
            sampler="random",
            seed=args.seed + 1,
            study_name="random",
            workdir=apart("random"),
        ),
        say=print,
    )
    ended = time.perf_counter()
    every = None
    if args.exhaustive:
        # random proposals until every variant has been seen (duplicates cost no training)
        every = run_search(
            Config(
                **common,
                trials=10**6,
                sampler="random",
                seed=args.seed + 2,
                study_name="all",
                patience=10**6,
                workdir=apart("all"),
            )
        )
    exhaustive_end = time.perf_counter()
    if use_ray:
        ray.shutdown()

    def accuracies(study) -> list[float]:
        trials = study.get_trials(deepcopy=False)
        return [t.values[0] for t in trials if t.user_attrs["nasdsl"]["status"] == "evaluated"]

    found, baseline = accuracies(searched.study), accuracies(drawn.study)
    print(f"\nPareto front of the TPE search (accuracy against multiply-adds), {len(found)} variants evaluated:")
    print("| trial | accuracy | MACs | choices |\n|---:|---:|---:|---|")
    for t in sorted(front(searched.study), key=lambda t: t.values[1]):
        made = " ".join(f"{k}={str(v).lower()}" for k, v in t.params.items())
        print(f"| {t.number} | {t.values[0]:.4f} | {t.values[1]:,.0f} | {made} |")
    print(
        f"\nbest accuracy found by TPE: {max(found):.4f} ({len(found)} variants); random variants: mean "
        f"{statistics.mean(baseline):.4f}, best {max(baseline):.4f} ({len(baseline)} variants)"
    )
    print(f"mean accuracy of the TPE search's variants: {statistics.mean(found):.4f}")
    if every is not None:
        everything = sorted(accuracies(every.study), reverse=True)
        rank = 1 + sum(a > max(found) for a in everything)
        print(
            f"all {len(everything)} variants: best {everything[0]:.4f}, mean {statistics.mean(everything):.4f}, "
            f"median {statistics.median(everything):.4f}; TPE's best ranks {rank} of {len(everything)}, "
            f"the random baseline's best {1 + sum(a > max(baseline) for a in everything)}"
        )
        exact = {t.user_attrs["nasdsl"]["variant"] for t in front(every.study)}
        on = sum(t.user_attrs["nasdsl"]["variant"] in exact for t in front(searched.study))
        print(f"the exact Pareto front of all variants has {len(exact)}; {on} of the TPE front's are on it")
    where = f"{args.workers} Ray workers" if use_ray else f"{args.workers or 1} local worker(s)"
    print(
        f"wall time: TPE search {middle - started:.1f} s, random {ended - middle:.1f} s"
        + (f", all variants {exhaustive_end - ended:.1f} s" if every is not None else "")
        + f", on {where}"
        + (f" (Ray started in {ray_seconds:.1f} s)" if use_ray else "")
        + f"; {args.epochs} epoch(s) a trial; duplicates {searched.duplicates} + {drawn.duplicates}, "
        f"rejected {searched.rejected} + {drawn.rejected}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
