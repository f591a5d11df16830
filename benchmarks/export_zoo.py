"""``torch.export`` with a dynamic batch and ``torch.compile(fullgraph=True)`` on every generated model.

    python benchmarks/export_zoo.py [--models resnet18,swin_t] [--format markdown]

For every spec in specs/*.yaml, and the default variant of each search space in specs/spaces/:
the generated model (``nasdsl.build_model``, random weights, seeded) at the smallest input the
spec accepts (the tests' ``compile_small``: a square image of 32 to 299 pixels, at most 4 frames
of video), in eval mode, is

- exported with ``torch.export.export`` at a batch of 2 with the batch dimension dynamic
  (``Dim("batch", min=1, max=64)``), and the exported module run at batches of 1 and 3;
- compiled with ``torch.compile(fullgraph=True, backend="eager")`` (a graph break is an error)
  and run at a batch of 3;

and every output compared with the eager model's on the same input: the deviation is the largest
absolute difference divided by the largest magnitude of the eager output (at most 1e-5 passes).
Where the model returns something else in training (auxiliary heads: a NamedTuple instead of the
logits; every model with --train), the same is done in training mode (batches 2 and 3, the random generator seeded alike
before each run, so that dropout draws the same masks). The table gives each spec's outcome, or
the first line of the error, and the seconds the checks took; the exit status is 1 where any failed.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import nasdsl  # noqa: E402
from nasdsl import ir  # noqa: E402

from paths import small_overrides  # noqa: E402

TOLERANCE = 1e-5


def leaves(outputs) -> list[torch.Tensor]:
    """The tensors of a model's outputs (a tensor, a NamedTuple, a dict by name), in order."""
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    if isinstance(outputs, dict):
        return [t for key in sorted(outputs) for t in leaves(outputs[key])]
    if isinstance(outputs, (tuple, list)):
        return [t for item in outputs for t in leaves(item)]
    if outputs is None:
        return []
    raise TypeError(f"unexpected output {type(outputs).__name__}")


def deviation(got, want) -> float:
    """The largest absolute difference over every output, relative to the largest magnitude."""
    got, want = leaves(got), leaves(want)
    if len(got) != len(want) or any(g.shape != w.shape for g, w in zip(got, want, strict=True)):
        shapes = ([tuple(t.shape) for t in got], [tuple(t.shape) for t in want])
        raise AssertionError(f"outputs {shapes[0]}, expected {shapes[1]}")
    worst = 0.0
    for g, w in zip(got, want, strict=True):
        scale = max(w.abs().max().item(), 1e-12) if w.numel() else 1.0
        worst = max(worst, (g - w).abs().max().item() / scale if w.numel() else 0.0)
    return worst


def seeded(fn, x):
    torch.manual_seed(1234)
    with torch.no_grad():
        return fn(x)


def check(model, example: torch.Tensor, batches: tuple[int, ...]) -> tuple[str, str, float]:
    """(export's outcome, compile's outcome, the largest deviation) of ``model`` in its mode."""
    worst = 0.0
    generator = torch.Generator().manual_seed(1)
    inputs = [torch.randn(b, *example.shape[1:], generator=generator) for b in batches]
    eager = [seeded(model, x) for x in inputs]
    try:
        batch = torch.export.Dim("batch", min=1, max=64)
        exported = torch.export.export(model, (example,), dynamic_shapes=({0: batch},)).module()
        for x, want in zip(inputs, eager, strict=True):
            worst = max(worst, deviation(seeded(exported, x), want))
        exported_ok = "ok" if worst <= TOLERANCE else f"deviates by {worst:.1e}"
    except Exception as e:  # noqa: BLE001 - the table reports every failure
        exported_ok = first_line(e)
    try:
        torch._dynamo.reset()
        compiled = torch.compile(model, fullgraph=True, backend="eager")
        dev = deviation(seeded(compiled, inputs[-1]), eager[-1])
        worst = max(worst, dev)
        compiled_ok = "ok" if dev <= TOLERANCE else f"deviates by {dev:.1e}"
    except Exception as e:  # noqa: BLE001
        compiled_ok = first_line(e)
    return exported_ok, compiled_ok, worst


def first_line(e: Exception) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    text = f"{type(e).__name__}: {lines[0] if lines else ''}"
    return text[:110]


def specs(names: set[str] | None) -> list[Path]:
    found = sorted((ROOT / "specs").glob("*.yaml")) + sorted((ROOT / "specs" / "spaces").glob("*.yaml"))
    return [p for p in found if names is None or p.stem in names]


def run(spec: Path, train: bool) -> list[tuple]:
    rows = []
    start = time.perf_counter()
    overrides = small_overrides(spec)
    torch.manual_seed(0)
    net = nasdsl.compile_spec(spec, overrides)
    model = nasdsl.build_model(net).eval()
    shape = ir.node(net.graph, ir.info(net.graph).input).type.shape
    example = torch.randn(2, *shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        eval_out = model(example)
    name = spec.relative_to(ROOT / "specs").with_suffix("").as_posix()
    size = "x".join(str(s) for s in shape)
    rows.append((name, "eval", size, *check(model, example, (1, 3)), time.perf_counter() - start))
    model.train()
    with torch.no_grad():
        train_out = model(example)
    if train or type(train_out) is not type(eval_out) or len(leaves(train_out)) != len(leaves(eval_out)):
        start = time.perf_counter()
        rows.append((name, "train", size, *check(model, example, (2, 3)), time.perf_counter() - start))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated spec names (default: all)")
    parser.add_argument("--train", action="store_true", help="check every model in training mode too")
    parser.add_argument("--format", choices=["text", "markdown"], default="text")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    names = set(args.models.split(",")) if args.models else None
    print(
        f"torch {torch.__version__}, Python {platform.python_version()}, {platform.processor() or platform.machine()}"
    )
    header = ("spec", "mode", "input", "torch.export (dynamic batch)", "torch.compile fullgraph", "max dev", "s")
    if args.format == "markdown":
        print("| " + " | ".join(header) + " |")
        print("|---|---|---|---|---|---:|---:|")
    failed = 0
    total = time.perf_counter()
    for spec in specs(names):
        try:
            rows = run(spec, args.train)
        except Exception as e:  # noqa: BLE001
            rows = [(spec.stem, "eval", "?", first_line(e), "", float("nan"), 0.0)]
        for name, mode, size, exported, compiled, worst, seconds in rows:
            failed += exported != "ok" or compiled != "ok"
            cells = (name, mode, size, exported, compiled, f"{worst:.1e}", f"{seconds:.1f}")
            if args.format == "markdown":
                print("| " + " | ".join(cells) + " |", flush=True)
            else:
                print(
                    f"{name:28} {mode:5} {size:10} {exported[:48]:48} {compiled[:48]:48} {cells[5]:>8} {cells[6]:>6}",
                    flush=True,
                )
    print(f"{failed} failed; {time.perf_counter() - total:.0f} s in all")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
