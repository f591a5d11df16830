"""Speed of every zoo spec's generated model against torchvision's, same weights, one run.

    python benchmarks/zoo_speed.py [--batch 16] [--repeats 3] [--models resnet50,vit_b_16]
                                   [--families transformer,video] [--channels-last] [--check-seconds]

For each model of :data:`ZOO` (a spec in specs/, or a --set of one, with a torchvision twin):
torchvision's model with random weights (seeded), the generated model holding the same tensors
(loaded strictly), both in eval mode, fp32, on the CPU, at the spec's input (an image, tokens,
a video clip); they run interleaved (ours, theirs, theirs, ours, ...) after a warm-up, and the
median times give the ratio generated / torchvision (target: at most 1.0 within noise, i.e.
no slower; issue 22: within 1.05 for the new families). Every model is reported; the summary
gives the geometric mean of the ratios over all models, and over families (each family's own
geometric mean first, so that twenty convolutional networks count as much as one ViT). With
--check-seconds it also times ``python -m nasdsl check SPEC`` as a whole process (target:
under 0.5 s), the median of five runs after a first one that writes the bytecode cache. Ratios
are what to read; absolute times depend on the machine.

A model is one line of ZOO: its torchvision name, its family, and where they are needed the
builder's options, the spec it is written by (specs/NAME.yaml by default) and the spec's --sets.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torchvision

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import nasdsl  # noqa: E402
from nasdsl.backends.pytorch import generate_source, load_source  # noqa: E402


@dataclass(frozen=True)
class Model:
    #: what the summary groups it under
    family: str
    #: torchvision's builder's options, to build the network the spec writes
    options: dict = field(default_factory=dict)
    #: the spec (specs/SPEC.yaml; None: the model's own name) and its --sets
    spec: str | None = None
    sets: dict = field(default_factory=dict)


#: torchvision builder (torchvision.models.get_model's name) -> how to build both
ZOO = {
    "resnet18": Model("convolutional"),
    "resnet50": Model("convolutional"),
    "resnext50_32x4d": Model("convolutional"),
    "wide_resnet50_2": Model("convolutional"),
    "densenet121": Model("convolutional"),
    "vgg16_bn": Model("convolutional"),
    "vgg16": Model("convolutional"),
    "alexnet": Model("convolutional"),
    "squeezenet1_1": Model("convolutional"),
    "squeezenet1_0": Model("convolutional"),
    "mobilenet_v2": Model("convolutional"),
    "mobilenet_v3_small": Model("convolutional"),
    "mobilenet_v3_large": Model("convolutional"),
    "efficientnet_b0": Model("convolutional"),
    "efficientnet_v2_s": Model("convolutional"),
    "efficientnet_v2_m": Model("convolutional"),
    "shufflenet_v2_x1_0": Model("convolutional"),
    "mnasnet1_0": Model("convolutional"),
    "regnet_y_400mf": Model("convolutional"),
    "convnext_tiny": Model("convolutional"),
    "inception_v3": Model("convolutional", {"init_weights": False, "aux_logits": True}),
    # issue 22's families: one line each
    "vit_b_16": Model("vision transformer"),
    "vit_b_32": Model("vision transformer", spec="vit_b_16", sets={"patch_size": 32}),
    "maxvit_t": Model("vision transformer"),
    "swin_t": Model("vision transformer"),
    "swin_v2_t": Model("vision transformer"),
    "fcn_resnet50": Model("segmentation", {"aux_loss": True, "weights_backbone": None}),
    "deeplabv3_resnet50": Model("segmentation", {"aux_loss": True, "weights_backbone": None}),
    "deeplabv3_mobilenet_v3_large": Model("segmentation", {"aux_loss": True, "weights_backbone": None}),
    "lraspp_mobilenet_v3_large": Model("segmentation", {"weights_backbone": None}),
    "r3d_18": Model("video"),
    "mc3_18": Model("video"),
    "r2plus1d_18": Model("video"),
    "s3d": Model("video"),
    "mvit_v2_s": Model("video"),
    "mvit_v1_b": Model("video"),
    "swin3d_t": Model("video"),
}


def pair(name: str, channels_last: bool) -> tuple[torch.nn.Module, torch.nn.Module, tuple[int, ...]]:
    model = ZOO[name]
    torch.manual_seed(0)
    reference = torchvision.models.get_model(name, weights=None, **model.options).eval()
    net = nasdsl.compile_spec(ROOT / "specs" / f"{model.spec or name}.yaml", model.sets)
    with torch.device("meta"):
        ours = getattr(load_source(generate_source(net)), net.spec.name)()
    ours.load_state_dict(reference.state_dict(), strict=True, assign=True)
    ours.eval()
    shape = tuple(net.summary()["input"])
    if channels_last and len(shape) == 3:  # a map (C, H, W); channels_last does not apply to the others
        ours, reference = ours.to(memory_format=torch.channels_last), reference.to(memory_format=torch.channels_last)
    return ours, reference, shape


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
    p.add_argument("--models", default="", help="comma-separated torchvision names (default: every model)")
    families = sorted({m.family for m in ZOO.values()})
    p.add_argument("--families", default="", help=f"comma-separated families, of: {', '.join(families)}")
    p.add_argument("--channels-last", action="store_true", help="both models in channels_last (images only)")
    p.add_argument("--check-seconds", action="store_true", help="also time `nasdsl check` per spec")
    args = p.parse_args()
    names = [n for n in args.models.split(",") if n] or list(ZOO)
    unknown = [n for n in names if n not in ZOO]
    if unknown:
        p.error(f"unknown models {unknown}; known: {', '.join(ZOO)}")
    chosen = [f for f in args.families.split(",") if f]
    if set(chosen) - set(families):
        p.error(f"unknown families {sorted(set(chosen) - set(families))}; known: {', '.join(families)}")
    names = [n for n in names if not chosen or ZOO[n].family in chosen]
    layout = "channels_last" if args.channels_last else "NCHW"
    cpu = platform.processor() or platform.machine()
    print(
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, {cpu}, "
        f"{os.cpu_count()} CPUs, {torch.get_num_threads()} threads; fp32 {layout}, batch {args.batch}, "
        f"median of {args.repeats}",
        flush=True,
    )
    header = f"{'model':<20} {'family':<20} {'nasdsl ms':>10} {'torchvision ms':>15} {'ratio':>7}"
    print(header + ("  check s" if args.check_seconds else ""), flush=True)
    ratios: dict[str, float] = {}
    for name in names:
        ours, reference, shape = pair(name, args.channels_last)
        x = torch.randn(args.batch, *shape, generator=torch.Generator().manual_seed(1))
        if args.channels_last and x.dim() == 4:
            x = x.to(memory_format=torch.channels_last)
        mine, theirs = median_times(ours, reference, x, args.repeats)
        ratios[name] = mine / theirs
        line = f"{name:<20} {ZOO[name].family:<20} {mine * 1e3:10.1f} {theirs * 1e3:15.1f} {mine / theirs:7.3f}"
        if args.check_seconds:
            line += f"  {check_seconds(ZOO[name].spec or name):7.3f}"
        print(line, flush=True)
        del ours, reference
    by_family: dict[str, list[float]] = {}
    for name, ratio in ratios.items():
        by_family.setdefault(ZOO[name].family, []).append(ratio)
    means = {f: statistics.geometric_mean(r) for f, r in by_family.items()}
    for family, mean in means.items():
        print(f"{family}: geometric mean ratio {mean:.3f} over {len(by_family[family])} models")
    worst = max(ratios, key=ratios.__getitem__)
    print(
        f"geometric mean ratio over families {statistics.geometric_mean(means.values()):.3f}, "
        f"over models {statistics.geometric_mean(ratios.values()):.3f}, worst {worst} {ratios[worst]:.3f} "
        "(generated / torchvision; lower is faster)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
