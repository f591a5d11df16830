"""``torch.export`` with a dynamic batch and ``torch.compile(fullgraph=True)`` on every generated model.

    python benchmarks/export_zoo.py [--models resnet18,swin_t] [--train] [--ensembles] [--optimize cpu]
                                    [--dynamic-hw] [--no-batch] [--format markdown]

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
before each run, so that dropout draws the same masks). The other modes, each a row of its own:

- ``--ensembles``: each ensemble spec of specs/ensembles/ too (the generated ensemble module,
  its members drawn one after another from the seeded generator; the weights files the spec
  names are not read), in eval mode;
- ``--optimize TARGET``: the inference build ``build_model(spec, optimize=TARGET)`` holding the
  eval model's weights with every BatchNorm's statistics and affine drawn at random first (so
  that folding them changes the weights), checked as in eval mode against the *unoptimised* eager
  model holding the same weights;
- ``--dynamic-hw``: the height and width dynamic too (``Dim.AUTO``, beside the batch's ``Dim``),
  exported at a batch of 2 and a square of side S + 32 (S: the spec's smallest side, so that no
  map in the network has a side of 1, which torch.export would specialise), and run at a batch
  of 1 and (S + 32) x (S + 64), and at a batch of 3 and (S + 64) x (S + 64); compiled
  (``dynamic=True``) and run at the last. Whether a spec takes those sizes is decided from its
  IR, not by trying: the spec is compiled at each of them and must compile and hold parameters
  of the same shapes as at its own size (a linear layer after a fixed flatten or pooling window
  does not: such a spec is reported as not taking those sizes, with the first parameter that differs
  or the error, and is no failure). ``--no-batch`` leaves out the eval and train rows.

The table gives each spec's outcome, or the first line of the error, and the seconds the checks
took; the exit status is 1 where any failed.
"""

from __future__ import annotations

import argparse
import logging
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
from nasdsl.backends.pytorch import model_class  # noqa: E402
from nasdsl.errors import NasdslError  # noqa: E402
from nasdsl.weights import param_shapes  # noqa: E402

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


def check(
    model, example: torch.Tensor, inputs: list[torch.Tensor], dynamic: dict, reference=None, compile_dynamic=False
) -> tuple[str, str, float]:
    """(export's outcome, compile's outcome, the largest deviation) of ``model`` in its mode:
    exported at ``example`` with ``dynamic`` (the dynamic shapes of its input) and run at each of
    ``inputs``, compiled and run at the last, each compared with ``reference`` (default: the
    model itself) run eagerly on the same input."""
    worst = 0.0
    eager = [seeded(reference or model, x) for x in inputs]
    try:
        exported = torch.export.export(model, (example,), dynamic_shapes=(dynamic,)).module()
        for x, want in zip(inputs, eager, strict=True):
            worst = max(worst, deviation(seeded(exported, x), want))
        exported_ok = "ok" if worst <= TOLERANCE else f"deviates by {worst:.1e}"
    except Exception as e:  # noqa: BLE001 - the table reports every failure
        exported_ok = first_line(e)
    try:
        torch._dynamo.reset()
        compiled = torch.compile(model, fullgraph=True, backend="eager", dynamic=compile_dynamic or None)
        dev = deviation(seeded(compiled, inputs[-1]), eager[-1])
        worst = max(worst, dev)
        compiled_ok = "ok" if dev <= TOLERANCE else f"deviates by {dev:.1e}"
    except Exception as e:  # noqa: BLE001
        compiled_ok = first_line(e)
    return exported_ok, compiled_ok, worst


def batched(shape: tuple[int, ...], batches: tuple[int, ...]) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [torch.randn(b, *shape, generator=generator) for b in batches]


def batch_dim() -> dict:
    return {0: torch.export.Dim("batch", min=1, max=64)}


def free_sizes(net, overrides: dict) -> tuple[list[tuple[int, ...]], str | None]:
    """The input shapes of the dynamic height and width check (the module's docstring), and
    None where the spec takes each of them with its parameters' shapes unchanged, else why
    not: the spec is compiled at each and its IR's parameters compared (nothing runs)."""
    t = ir.node(net.graph, ir.info(net.graph).input).type
    if "H" not in t.axes or "W" not in t.axes:
        return [], f"no height and width axes (input {t.axes})"
    side = max(d for d, a in zip(t.shape, t.axes, strict=True) if a in "HW")
    shapes = []
    for h, w in ((side + 32, side + 32), (side + 32, side + 64), (side + 64, side + 64)):
        shapes.append(tuple(h if a == "H" else w if a == "W" else d for d, a in zip(t.shape, t.axes, strict=True)))
    own = param_shapes(net.graph)
    for shape in shapes:
        size = "x".join(map(str, shape))
        try:
            other = param_shapes(nasdsl.compile_spec(net.spec.file, {**overrides, "input.shape": list(shape)}).graph)
        except NasdslError as e:
            return shapes, f"the spec takes no input {size}: {first_line(e)}"
        for key in own:
            if other.get(key) != own[key]:
                found = "x".join(map(str, other[key])) if key in other else "absent"
                mine = "x".join(map(str, own[key]))
                return shapes, f"input size fixed: {key} is {found} at {size}, {mine} at the spec's size"
        if set(other) != set(own):
            return shapes, f"input size fixed: other parameters at {size}"
    return shapes, None


def shuffled_norms(state: dict) -> dict:
    """``state`` with every BatchNorm's running statistics, weight and bias drawn at random
    (seeded), so that folding them into the layers before changes the weights."""
    generator = torch.Generator().manual_seed(2)
    out = dict(state)
    for key, value in state.items():
        if not key.endswith("running_var"):
            continue
        prefix = key[: -len("running_var")]
        shape = value.shape
        out[key] = torch.rand(shape, generator=generator) + 0.5
        out[prefix + "running_mean"] = torch.randn(shape, generator=generator) * 0.2
        if prefix + "weight" in state:
            out[prefix + "weight"] = torch.rand(shape, generator=generator) + 0.5
            out[prefix + "bias"] = torch.randn(shape, generator=generator) * 0.2
    return out


def first_line(e: Exception) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    text = f"{type(e).__name__}: {lines[0] if lines else ''}"
    return text[:110]


def specs(names: set[str] | None, ensembles: bool) -> list[Path]:
    found = sorted((ROOT / "specs").glob("*.yaml")) + sorted((ROOT / "specs" / "spaces").glob("*.yaml"))
    if ensembles:
        found += sorted((ROOT / "specs" / "ensembles").glob("*.yaml"))
    return [p for p in found if names is None or p.stem in names]


def run(spec: Path, args: argparse.Namespace) -> list[tuple]:
    """The rows of one spec: eval and train (unless ``--no-batch``), the inference build and
    the dynamic height and width where asked; an ensemble in eval mode only."""
    rows = []
    start = time.perf_counter()
    ensemble = spec.parent.name == "ensembles"
    overrides = {} if ensemble else small_overrides(spec)
    torch.manual_seed(0)
    net = nasdsl.compile_spec(spec, overrides)
    # an ensemble's members are drawn one after another from the seeded generator: the weights
    # files its spec names are not read
    model = (model_class(net.graph)() if ensemble else nasdsl.build_model(net)).eval()
    shape = ir.node(net.graph, ir.info(net.graph).input).type.shape
    example = torch.randn(2, *shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        eval_out = model(example)
    name = spec.relative_to(ROOT / "specs").with_suffix("").as_posix()
    size = "x".join(str(s) for s in shape)
    if ensemble:
        rows.append((name, "ensemble", size, *check(model, example, batched(shape, (1, 3)), batch_dim()), lap(start)))
        return rows
    if not args.no_batch:
        rows.append((name, "eval", size, *check(model, example, batched(shape, (1, 3)), batch_dim()), lap(start)))
        model.train()
        with torch.no_grad():
            train_out = model(example)
        model.eval()
        if args.train or type(train_out) is not type(eval_out) or len(leaves(train_out)) != len(leaves(eval_out)):
            start = time.perf_counter()
            model.train()
            rows.append((name, "train", size, *check(model, example, batched(shape, (2, 3)), batch_dim()), lap(start)))
            model.eval()
    if args.optimize:
        start = time.perf_counter()
        state = shuffled_norms(model.state_dict())
        model.load_state_dict(state)
        optimized = nasdsl.build_model(net, optimize=args.optimize, weights=state)
        outcome = check(optimized, example, batched(shape, (1, 3)), batch_dim(), reference=model)
        rows.append((name, f"optimize {args.optimize}", size, *outcome, lap(start)))
    if args.dynamic_hw:
        start = time.perf_counter()
        shapes, fixed = free_sizes(net, overrides)
        if fixed is not None:
            rows.append((name, "dynamic H, W", size, f"n/a: {fixed}", "n/a", float("nan"), lap(start)))
        else:
            t = ir.node(net.graph, ir.info(net.graph).input).type
            dynamic = batch_dim() | {1 + t.axes.index(a): torch.export.Dim.AUTO for a in "HW"}
            example = torch.randn(2, *shapes[0], generator=torch.Generator().manual_seed(0))
            inputs = [*batched(shapes[1], (1,)), *batched(shapes[2], (3,))]
            outcome = check(model, example, inputs, dynamic, compile_dynamic=True)
            sizes = " / ".join("x".join(map(str, s)) for s in shapes)
            rows.append((name, "dynamic H, W", sizes, *outcome, lap(start)))
    return rows


def lap(start: float) -> float:
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated spec names (default: all)")
    parser.add_argument("--train", action="store_true", help="check every model in training mode too")
    parser.add_argument("--ensembles", action="store_true", help="the ensemble specs of specs/ensembles/ too")
    parser.add_argument(
        "--optimize", metavar="TARGET", help="the inference build for TARGET (cuda, cpu, onnxruntime) too"
    )
    parser.add_argument("--dynamic-hw", action="store_true", help="the height and width dynamic too")
    parser.add_argument("--no-batch", action="store_true", help="leave out the eval and train rows")
    parser.add_argument("--format", choices=["text", "markdown"], default="text")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    # torch.export logs a traceback for each inequality of symbolic sizes its solver gives up on
    logging.getLogger("torch.fx.experimental.symbolic_shapes").setLevel(logging.ERROR)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    names = set(args.models.split(",")) if args.models else None
    print(
        f"torch {torch.__version__}, Python {platform.python_version()}, {platform.processor() or platform.machine()}"
    )
    header = ("spec", "mode", "input", "torch.export", "torch.compile fullgraph", "max dev", "s")
    if args.format == "markdown":
        print("| " + " | ".join(header) + " |")
        print("|---|---|---|---|---|---:|---:|")
    failed = 0
    total = time.perf_counter()
    for spec in specs(names, args.ensembles):
        try:
            rows = run(spec, args)
        except Exception as e:  # noqa: BLE001
            rows = [(spec.stem, "eval", "?", first_line(e), "", float("nan"), 0.0)]
        for name, mode, size, exported, compiled, worst, seconds in rows:
            failed += not exported.startswith("n/a") and (exported != "ok" or compiled != "ok")
            cells = (name, mode, size, exported, compiled, f"{worst:.1e}", f"{seconds:.1f}")
            if args.format == "markdown":
                print("| " + " | ".join(cells) + " |", flush=True)
            else:
                print(
                    f"{name:28} {mode:12} {size:10} {exported[:48]:48} {compiled[:48]:48} {cells[5]:>8} {cells[6]:>6}",
                    flush=True,
                )
    print(f"{failed} failed; {time.perf_counter() - total:.0f} s in all")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
