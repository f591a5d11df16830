"""How well the latency model predicts: every spec in specs/ and variants sampled from the
GoogLeNet and MobileNetV2 design spaces, predicted without building and measured.

    python benchmarks/latency_model.py [--engine onnxruntime] [--variants 100] [--calibrate]
        [--seed 0] [--passes 2] [--quick] [--dump FILE]

The model is this machine's calibration (``nasdsl bench --calibrate``), or with ``--calibrate`` a
new one, measured in the same passes as the models it is judged on (calibration networks and
evaluation models shuffled together in each pass: on a machine shared with other processes the
speed drifts by 10-20% over minutes, and a calibration measured before the evaluation would carry
that drift into the errors), fitted to the calibration networks alone, and cached as
``nasdsl bench --calibrate`` caches it. The GoogLeNet space is docs/design-space.md's
``googlenet_space.yaml`` (486 variants: widths per stage, optional modules, aux heads,
resolution); the MobileNetV2 space (:data:`MOBILENET_SPACE`, 96 variants) makes the width, the
resolution, the expansion ratio and the depthwise kernel choices. ``--variants`` are drawn from
each. A variant's prediction is what ``nasdsl space`` computes (``Evaluator`` with the model:
its nodes' costs added as they are shaped); a spec's is ``LatencyModel.predict`` on its graph.
Each model is measured as the calibration measures (``calibrate.measure_ms``: ONNX Runtime,
batch 1, one thread, CPU time, the fastest run) in ``--passes`` passes in alternating order; the
smallest is kept (other processes only ever add time). Prints the share of predictions within
10% and 20% of measured, the median error, Kendall's tau, per group and over all, the worst
predictions, and the rate of predicting (variants per second, with and without the model).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import nasdsl  # noqa: E402
from nasdsl import space as spaces  # noqa: E402
from nasdsl.bench import calibrate, latency  # noqa: E402
from nasdsl.bench.hardware import machine  # noqa: E402
from nasdsl.space import variant_yaml  # noqa: E402
from nasdsl.variants import Evaluator  # noqa: E402

MOBILENET_SPACE = """\
nasdsl: 1
extends: {root}/specs/mobilenet_v2.yaml
name: MobileNetV2Space
doc: MobileNetV2 with its width, resolution, expansion ratio and depthwise kernel made choices.
input:
  shape: [3, resolution, resolution]
variables:
  width: {{choice: [0.5, 0.75, 1.0, 1.3]}}
  resolution: {{choice: [128, 160, 192, 224]}}
  ratio: {{choice: [3, 4, 6]}}
  dwk: {{choice: [3, 5]}}
templates:
  InvertedResidual:
    doc: Expand (ratio), filter each channel (dwk x dwk), project.
    params: [inp, out, stride, expand, {{hidden: "inp * ratio"}}]
    body:
      conv:
        - {{use: ConvBNReLU6, args: [hidden, 1]}}
        - {{use: ConvBNReLU6, args: {{out: hidden, kernel: dwk, stride: stride, groups: hidden}}}}
        - {{op: conv2d, out: out, kernel: 1, bias: false}}
        - batch_norm
  InvertedResidualAdd:
    doc: The same, adding its input.
    params: [inp, expand, {{hidden: "inp * ratio"}}]
    body:
      add:
        shortcut: identity
        conv:
          - {{use: ConvBNReLU6, args: [hidden, 1]}}
          - {{use: ConvBNReLU6, args: {{out: hidden, kernel: dwk, groups: hidden}}}}
          - {{op: conv2d, out: inp, kernel: 1, bias: false}}
          - batch_norm
"""


def googlenet_space_text() -> str:
    """docs/design-space.md's googlenet_space.yaml, its ``extends`` made absolute."""
    doc = (ROOT / "docs" / "design-space.md").read_text()
    text = re.search(r"```yaml title=googlenet_space.yaml\n(.*?)```", doc, re.S).group(1)
    return text.replace("extends: specs/googlenet.yaml", f"extends: {ROOT}/specs/googlenet.yaml")


def sampled(folder: Path, name: str, text: str, n: int, seed: int) -> tuple[spaces.Space, list]:
    """The space ``text`` and (label, picks, compiled) of ``n`` variants drawn from it."""
    path = folder / f"{name}.yaml"
    path.write_text(text)
    space = spaces.load_space(str(path))
    out = []
    for picks in space.sample(min(n, space.count()), seed):
        variant = folder / f"{name}-{space.id_of(picks)}.yaml"
        variant.write_text(variant_yaml(space, picks, str(path)))
        out.append((f"{name} #{space.id_of(picks)}", picks, nasdsl.compile_spec(str(variant))))
    return space, out


def rate(text: str, folder: Path, model, n: int = 2000) -> tuple[float, float]:
    """Variants per second evaluated with and without the latency model (GoogLeNet space: ``n``
    drawn, so most of its 486 variants several times; structures compiled in full included)."""
    path = folder / "rate.yaml"
    path.write_text(text)
    space = spaces.load_space(str(path))
    picks = space.sample(min(n, space.count()), 1)
    best = {True: 0.0, False: 0.0}
    for m in (model, None, model, None, model, None):  # alternating; the best of three (CPU time)
        evaluator = Evaluator(space, latency=m)
        start = time.process_time()
        for p in picks:
            evaluator.evaluate(p)
        best[m is not None] = max(best[m is not None], len(picks) / (time.process_time() - start))
    return best[True], best[False]


def kendall(a: list[float], b: list[float]) -> float:
    from scipy.stats import kendalltau

    return float(kendalltau(a, b).statistic)


def summarise(label: str, items: list[tuple[str, float, float]]) -> None:
    errors = [p / m - 1 for _, p, m in items]
    within = [sum(abs(e) <= x for e in errors) / len(errors) for x in (0.10, 0.20)]
    tau = kendall([p for _, p, _ in items], [m for _, _, m in items])
    print(
        f"  {label:<22} {len(items):4d} models  within 10%: {100 * within[0]:5.1f}%  within 20%: "
        f"{100 * within[1]:5.1f}%  median |error| {100 * statistics.median(map(abs, errors)):4.1f}%  "
        f"mean error {100 * statistics.fmean(errors):+5.1f}%  Kendall tau {tau:.3f}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engine", default="onnxruntime", choices=latency.LATENCY_ENGINES)
    ap.add_argument("--variants", type=int, default=100, help="variants drawn from each space (default 100)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--passes", type=int, default=2)
    ap.add_argument("--calibrate", action="store_true", help="calibrate again first")
    ap.add_argument("--quick", action="store_true", help="a smoke run: 3 specs, 4 variants of each space, 1 pass")
    ap.add_argument("--dump", metavar="FILE", help="also write each model's features and time (a pickle)")
    args = ap.parse_args(argv)
    if args.quick:
        args.variants, args.passes = 4, 1
    cpu = machine()
    print(f"CPU: {cpu.describe()}\npython {platform.python_version()}, nasdsl {nasdsl.__version__}, "
          f"{args.engine} {latency.engine_version(args.engine)}, load {os.getloadavg()[0]:.2f}")  # fmt: skip
    started = time.perf_counter()
    model = None if args.calibrate else calibrate.load_or_calibrate(args.engine, progress=sys.stderr)
    specs = sorted((ROOT / "specs").glob("*.yaml"))[: 3 if args.quick else None]
    with tempfile.TemporaryDirectory(prefix="nasdsl-latency-") as tmp:
        folder = Path(tmp)
        evaluation = [(f"specs/{p.name}", None, nasdsl.compile_spec(p)) for p in specs]
        groups, found_spaces = {"specs": len(evaluation)}, {}
        google = googlenet_space_text()
        for name, text in (("googlenet_space", google), ("mobilenet_space", MOBILENET_SPACE.format(root=ROOT))):
            found_spaces[name], found = sampled(folder, name, text, args.variants, args.seed)
            groups[name] = len(found)
            evaluation += found
        nets = calibrate.networks_for(8 if args.quick else None) if args.calibrate else []
        items = [(f"calibration #{i}", net) for i, net in enumerate(nets)] + [(k, n) for k, _, n in evaluation]
        measured: dict[str, float] = {}
        rng = random.Random(args.seed)
        for k in range(args.passes):
            rng.shuffle(items)
            for i, (label, net) in enumerate(items):
                ms = calibrate.measure_ms(net, args.engine, 1)
                measured[label] = min(ms, measured.get(label, ms))
                print(f"\rpass {k + 1}/{args.passes}: {i + 1}/{len(items)}", end="", file=sys.stderr, flush=True)
            print(file=sys.stderr)
        if args.calibrate:
            model = calibrate.fit_model(args.engine, nets, [measured[f"calibration #{i}"] for i in range(len(nets))])
            print(f"cached the new calibration at {latency.save(model)}")
        print(f"latency model: {model.describe()} ({time.perf_counter() - started:.0f} s in all)")
        predicted = {}
        for label, picks, net in evaluation:
            if picks is None:
                predicted[label] = model.predict(net)
        for name, space in found_spaces.items():  # what nasdsl space computes
            evaluator = Evaluator(space, latency=model)
            for label, picks, _ in evaluation:
                if label.startswith(name + " "):
                    predicted[label] = evaluator.evaluate(picks).figures.latency_ms
        with_model, without = rate(google, folder, model)
    models = [(label, predicted[label], None) for label, _, _ in evaluation]
    if args.dump:
        import pickle

        rows = {label: latency.row(latency._nodes(net.graph)) for label, _, net in evaluation}
        rows |= {f"calibration #{i}": latency.row(latency._nodes(n.graph)) for i, n in enumerate(nets)}
        Path(args.dump).write_bytes(pickle.dumps({"rows": rows, "measured": measured}))
    items = [(label, p, measured[label]) for label, p, _ in models]
    print(f"\npredicted against measured ({args.engine}, batch 1, 1 thread, CPU time, min of "
          f"{args.passes} passes; load now {os.getloadavg()[0]:.2f}):")  # fmt: skip
    start = 0
    for name, count in groups.items():
        summarise(name, items[start : start + count])
        start += count
    summarise("all", items)
    print("\nthe specs:")
    for label, p, m in items[: groups["specs"]]:
        print(f"  {label:<34} predicted {p:8.2f} ms  measured {m:8.2f} ms  {100 * (p / m - 1):+6.1f}%")
    print("\nthe ten worst predictions:")
    for label, p, m in sorted(items, key=lambda t: -abs(t[1] / t[2] - 1))[:10]:
        print(f"  {label:<34} predicted {p:8.2f} ms  measured {m:8.2f} ms  {100 * (p / m - 1):+6.1f}%")
    print(f"\nprediction rate (GoogLeNet space, nasdsl space's evaluator): {with_model:,.0f} variants/s with "
          f"latency_ms, {without:,.0f}/s without")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
