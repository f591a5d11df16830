"""Speed of every zoo spec's generated model against torchvision's, same weights, one run.

    python benchmarks/zoo_speed.py [--batch 16] [--repeats 3] [--models resnet50,densenet121]
                                   [--channels-last] [--check-seconds]

For each model in specs/ that has a torchvision twin: torchvision's model with random
weights (seeded), the generated model holding the same tensors (loaded strictly), both
in eval mode, fp32, on the CPU; they run interleaved (ours, theirs, theirs, ours, ...)
after a warm-up, and the median times give the ratio generated / torchvision (target:
at most 1.0 within noise, i.e. no slower). With --check-seconds it also times
``python -m nasdsl check SPEC`` as a whole process (target: under 0.5 s), the median of
five runs after a first one that writes the bytecode cache. Ratios are what to read;
absolute times depend on the machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torchvision

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import nasdsl  # noqa: E402
from nasdsl.backends.pytorch import generate_source, load_source  # noqa: E402

#: torchvision builder -> options it needs to build the same network as the spec
ZOO = {
    "resnet18": {},
    "resnet50": {},
    "resnext50_32x4d": {},
    "wide_resnet50_2": {},
    "densenet121": {},
    "vgg16_bn": {},
    "vgg16": {},
    "alexnet": {},
    "squeezenet1_1": {},
    "squeezenet1_0": {},
    "mobilenet_v2": {},
    "mobilenet_v3_small": {},
    "mobilenet_v3_large": {},
    "efficientnet_b0": {},
    "efficientnet_v2_s": {},
    "efficientnet_v2_m": {},
    "shufflenet_v2_x1_0": {},
    "mnasnet1_0": {},
    "regnet_y_400mf": {},
    "convnext_tiny": {},
    "inception_v3": {"init_weights": False, "aux_logits": True},
}


def pair(name: str, channels_last: bool) -> tuple[torch.nn.Module, torch.nn.Module, tuple[int, ...]]:
    torch.manual_seed(0)
    reference = getattr(torchvision.models, name)(weights=None, **ZOO[name]).eval()
    net = nasdsl.compile_spec(ROOT / "specs" / f"{name}.yaml")
    with torch.device("meta"):
        ours = getattr(load_source(generate_source(net)), net.spec.name)()
    ours.load_state_dict(reference.state_dict(), strict=True, assign=True)
    ours.eval()
    if channels_last:
        ours, reference = ours.to(memory_format=torch.channels_last), reference.to(memory_format=torch.channels_last)
    return ours, reference, tuple(net.summary()["input"])


def median_times(ours, reference, x, repeats: int, warmup: int = 1) -> tuple[float, float]:
    with torch.inference_mode():
        for _ in range(warmup):
            ours(x), reference(x)
        a, b = [], []
        for i in range(repeats):
            order = [(ours, a), (reference, b)] if i % 2 == 0 else [(reference, b), (ours, a)]
            for fn, times in order:
                start = time.perf_counter()
                fn(x)
                times.append(time.perf_counter() - start)
    return statistics.median(a), statistics.median(b)


def check_seconds(name: str) -> float:
    """The median of five whole-process runs, after one that leaves the bytecode cache as an
    installed package has it after its first run (PYTHONDONTWRITEBYTECODE is dropped: with it
    every run compiles nasdsl's sources again, about 0.15 s)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    command = [sys.executable, "-m", "nasdsl", "check", str(ROOT / "specs" / f"{name}.yaml")]
    times = []
    for _ in range(6):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, env=env)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--models", default=",".join(ZOO), help="comma-separated torchvision names")
    p.add_argument("--channels-last", action="store_true", help="both models in channels_last")
    p.add_argument("--check-seconds", action="store_true", help="also time `nasdsl check` per spec")
    args = p.parse_args()
    names = [n for n in args.models.split(",") if n]
    unknown = [n for n in names if n not in ZOO]
    if unknown:
        p.error(f"unknown models {unknown}; known: {', '.join(ZOO)}")
    layout = "channels_last" if args.channels_last else "NCHW"
    cpu = platform.processor() or platform.machine()
    print(
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, {cpu}, "
        f"{os.cpu_count()} CPUs, {torch.get_num_threads()} threads; fp32 {layout}, batch {args.batch}, "
        f"median of {args.repeats}",
        flush=True,
    )
    header = f"{'model':<20} {'nasdsl ms':>10} {'torchvision ms':>15} {'ratio':>7}"
    print(header + ("  check s" if args.check_seconds else ""), flush=True)
    ratios = []
    for name in names:
        ours, reference, shape = pair(name, args.channels_last)
        x = torch.randn(args.batch, *shape, generator=torch.Generator().manual_seed(1))
        if args.channels_last:
            x = x.to(memory_format=torch.channels_last)
        mine, theirs = median_times(ours, reference, x, args.repeats)
        ratios.append(mine / theirs)
        line = f"{name:<20} {mine * 1e3:10.1f} {theirs * 1e3:15.1f} {mine / theirs:7.3f}"
        if args.check_seconds:
            line += f"  {check_seconds(name):7.3f}"
        print(line, flush=True)
        del ours, reference
    worst = max(ratios)
    geo = statistics.geometric_mean(ratios)
    print(f"geometric mean ratio {geo:.3f}, worst {worst:.3f} (generated / torchvision; lower is faster)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
