"""GoogLeNet on a GPU: torchvision's model against nasdsl's inference builds, same weights, measured
in one run; prints throughputs, ratios (ours / torchvision) and compile times.

    python benchmarks/gpu_speed.py                      # on a CUDA machine
    python benchmarks/gpu_speed.py --device cpu --quick # the same code path, small, on the CPU

Models: ``torchvision.models.googlenet`` (random weights, random BatchNorm statistics, no
auxiliary heads) and the classes that ``nasdsl compile specs/googlenet_bn.yaml --optimize``
writes, built in memory and given torchvision's state_dict through
``from_training_state_dict``, one per rewrite pipeline in ``--variants``: by default BatchNorm
folding alone (``fold``), folding and each Inception module's three 1x1 convolutions joined
into one (``fold+fuse``), and that with the ReLU hoisted above the split (``fold+fuse+hoist``,
the ``cuda`` target's pipeline today). One run so measures which rewrites pay on the GPU, the
numbers ``TARGETS["cuda"]`` in nasdsl/optimize.py is to follow.

Cases, each with every model interleaved call by call:

1. bf16 weights and input, channels_last, batch 256, eager;
2. the same under ``torch.compile`` (default mode; the first call's time is reported as the
   compile time, for every model);
3. fp32, channels_last, batch 1: latency.

Targets (issue 11), for the ``cuda`` target's pipeline: compiled throughput at least 1.3x
torchvision's, eager at least 1.0x, batch-1 latency no worse. ``--quick`` (batch 2, 32x32
input, 3 rounds, and no ``torch.compile`` unless ``--compile-backend`` names a backend:
``eager`` checks that path without compiling) checks the script, not the speed.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torchvision

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import nasdsl  # noqa: E402
from nasdsl.backends.pytorch import model_class  # noqa: E402
from nasdsl.optimize import TARGETS, optimize  # noqa: E402

SPEC = ROOT / "specs" / "googlenet_bn.yaml"


#: the variants --variants may name: a label and the rewrites after the inference view
VARIANTS = {
    "fold": ("fold_norms",),
    "fold+fuse": ("fold_norms", "fuse_siblings"),
    "fold+fuse+hoist": ("fold_norms", "fuse_siblings", "hoist_activations"),
}
#: the variant that is the cuda target's pipeline (the one the targets are read from)
TARGET = next(label for label, rewrites in VARIANTS.items() if rewrites == TARGETS["cuda"])


def models(size: int, variants: list[str]) -> dict[str, torch.nn.Module]:
    """torchvision's GoogLeNet and one optimised model per variant, holding the same weights,
    fp32, eval, on the CPU."""
    torch.manual_seed(0)
    # PyTorch's default initialisation (init_weights=False): the values do not matter here, and it is fast
    reference = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=False).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in reference.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    net = nasdsl.compile_spec(SPEC, {"input.shape": [3, size, size]})
    built = {"torchvision": reference}
    for label in variants:
        cls = model_class(optimize(net, "cuda", rewrites=VARIANTS[label]))
        built[label] = cls.from_training_state_dict(reference.state_dict())
    return built


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn, x, device: str) -> float:
    sync(device)
    start = time.perf_counter()
    fn(x)
    sync(device)
    return time.perf_counter() - start


def compare(fns: dict[str, object], x, device: str, repeats: int, warmup: int) -> dict[str, float]:
    """Median seconds per call of each model, interleaved (alternating which goes first)."""
    names = list(fns)
    with torch.inference_mode():
        for _ in range(warmup):
            for name in names:
                fns[name](x)
        times: dict[str, list[float]] = {name: [] for name in names}
        for i in range(repeats):
            for name in names if i % 2 == 0 else names[::-1]:
                times[name].append(timed(fns[name], x, device))
    return {name: statistics.median(t) for name, t in times.items()}


def first_call(fn, x, device: str) -> float:
    with torch.inference_mode():
        return timed(fn, x, device)


def line(case: str, medians: dict[str, float], batch: int, labels: list[str], higher_is_better: bool = True):
    """One row per model of a case: throughput (or latency) and speedup over torchvision."""
    theirs = medians["torchvision"]
    ratios = {}
    for label in ["torchvision", *labels]:
        ours = medians[label]
        ratio = theirs / ours  # speedup: throughput ratio, or latency ratio inverted
        ratios[label] = ratio
        figure = f"{batch / ours:12.1f} img/s" if higher_is_better else f"{ours * 1e3:12.3f} ms   "
        print(f"{case:<40} {label:<16} {figure}   speedup {ratio:6.3f}", flush=True)
    return ratios


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--size", type=int, default=224, help="input height and width")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma-separated rewrite pipelines to measure, of {', '.join(VARIANTS)} (default: all)",
    )
    ap.add_argument(
        "--compile-backend", default=None, help="torch.compile backend (default inductor; none with --quick)"
    )
    ap.add_argument("--quick", action="store_true", help="batch 2, 32x32, 3 rounds: checks the script, not the speed")
    args = ap.parse_args(argv)
    labels = [v for v in args.variants.split(",") if v]
    unknown = [v for v in labels if v not in VARIANTS]
    if unknown or not labels:
        ap.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    if args.quick:
        args.batch, args.size, args.repeats, args.warmup = 2, 32, min(args.repeats, 3), min(args.warmup, 1)
    backend = args.compile_backend or (None if args.quick else "inductor")
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: run with --device cpu (and --quick) to check the script")
        return 2
    name = torch.cuda.get_device_name() if device == "cuda" else platform.processor() or platform.machine()
    print(
        f"python {platform.python_version()}, torch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"nasdsl {nasdsl.__version__}; device {device} ({name}); torch.compile backend {backend}"
    )
    print("variants: " + "; ".join(f"{label} = {' + '.join(VARIANTS[label])}" for label in labels))
    print(f"the cuda target's pipeline today: {TARGET}")
    built = models(args.size, labels)

    # the same function, in fp32 on the device
    x32 = torch.randn(2, 3, args.size, args.size, generator=torch.Generator().manual_seed(2)).to(device)
    built = {k: m.to(device) for k, m in built.items()}
    with torch.inference_mode():
        want = built["torchvision"](x32)
        for label in labels:
            err = ((built[label](x32) - want).abs().max() / want.abs().max()).item()
            print(f"fp32 max relative difference, batch 2, {label}: {err:.2e}")

    print(f"{'case':<40} {'model':<16} {'':>12}")
    ratios: dict[str, dict[str, float]] = {}
    # 1 and 2: bf16, channels_last, large batch, eager then compiled
    low = {"dtype": torch.bfloat16, "memory_format": torch.channels_last}
    models_low = {k: m.to(**low) for k, m in built.items()}
    x = torch.randn(args.batch, 3, args.size, args.size, device=device).to(**low)
    medians = compare(models_low, x, device, args.repeats, args.warmup)
    ratios["eager"] = line(f"bf16 channels_last batch {args.batch} eager", medians, args.batch, labels)
    if backend is None:
        print("torch.compile: skipped (--quick without --compile-backend)")
    else:
        compiled = {k: torch.compile(m, backend=backend) for k, m in models_low.items()}
        compile_s = {k: first_call(m, x, device) for k, m in compiled.items()}
        medians = compare(compiled, x, device, args.repeats, args.warmup)
        ratios["compile"] = line(f"bf16 channels_last batch {args.batch} compiled", medians, args.batch, labels)
        for k, seconds in compile_s.items():
            print(f"{'torch.compile first call (s)':<40} {k:<16} {seconds:12.1f}", flush=True)

    # 3: fp32 batch-1 latency
    fp32 = {"dtype": torch.float32, "memory_format": torch.channels_last}
    models_fp32 = {k: m.to(**fp32) for k, m in built.items()}
    x1 = torch.randn(1, 3, args.size, args.size, device=device).to(**fp32)
    medians = compare(models_fp32, x1, device, args.repeats * 2, args.warmup)
    ratios["latency"] = line("fp32 channels_last batch 1 latency", medians, 1, labels, False)

    for label in labels:
        got = {case: r[label] for case, r in ratios.items()}
        met = got["eager"] >= 1.0 and got.get("compile", 0.0) >= 1.3 and got["latency"] >= 1.0
        shown = ", ".join(f"{case} {r:.3f}" for case, r in got.items())
        verdict = "met" if met else "NOT met"
        print(f"{label}: {shown}; targets (eager >= 1.0, compiled >= 1.3, latency >= 1.0) {verdict}")
    if "compile" in ratios:
        best = max(labels, key=lambda label: ratios["compile"][label])
        print(f"fastest compiled: {best}" + ("" if best == TARGET or TARGET not in labels else f" (not {TARGET})"))
    if device != "cuda":
        print("CPU run: not the GPU figures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
