"""Speed of the generated GoogLeNet (specs/googlenet_bn.yaml) against torchvision's,
with the same weights, measured in one run; prints ratios (generated / torchvision).

    python benchmarks/pytorch_speed.py [--repeats N]

CPU: fp32 at batch 1 and 16. CUDA (when present): bf16 autocast, channels_last,
batch 256, eager and torch.compile (default mode). Target: every ratio <= 1.05.
The two models run interleaved, so drifts in machine speed hit both alike.
"""

from __future__ import annotations

import argparse
import os
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


def models(device: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    # with the auxiliary heads, whose weights the spec's model holds too (both drop them in eval mode)
    reference = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=True)
    ours = nasdsl.build_model(ROOT / "specs" / "googlenet_bn.yaml")
    ours.load_state_dict(reference.state_dict(), strict=True)
    return ours.eval().to(device), reference.eval().to(device)


def timed(fn, x, device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn(x)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def compare(name: str, ours, reference, x, device: str, repeats: int, warmup: int = 3) -> dict:
    with torch.inference_mode():
        for _ in range(warmup):
            ours(x), reference(x)
        a, b = [], []
        for i in range(repeats):
            pair = [(ours, a), (reference, b)] if i % 2 == 0 else [(reference, b), (ours, a)]
            for fn, out in pair:
                out.append(timed(fn, x, device))
    ma, mb = statistics.median(a), statistics.median(b)
    row = {"case": name, "nasdsl_ms": ma * 1e3, "torchvision_ms": mb * 1e3, "ratio": ma / mb}
    print(f"{name:<44} {ma * 1e3:10.2f} {mb * 1e3:14.2f} {ma / mb:8.3f}", flush=True)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    print(
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}"
    )
    print(f"{'case':<44} {'nasdsl ms':>10} {'torchvision ms':>14} {'ratio':>8}")
    rows = []
    ours, reference = models("cpu")
    for batch in (1, 16):
        x = torch.randn(batch, 3, 224, 224)
        rows.append(compare(f"cpu fp32 batch {batch}", ours, reference, x, "cpu", args.repeats))
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        print(f"CUDA device: {name}")
        ours, reference = models("cuda")
        ours = ours.to(memory_format=torch.channels_last)
        reference = reference.to(memory_format=torch.channels_last)
        x = torch.randn(256, 3, 224, 224, device="cuda").to(memory_format=torch.channels_last)

        def bf16(m):
            def run(inp):
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    return m(inp)

            return run

        rows.append(
            compare(
                "cuda bf16 channels_last batch 256", bf16(ours), bf16(reference), x, "cuda", args.repeats * 2, warmup=5
            )
        )
        co, cr = torch.compile(ours), torch.compile(reference)
        rows.append(
            compare(
                "cuda bf16 channels_last b256 torch.compile", bf16(co), bf16(cr), x, "cuda", args.repeats * 2, warmup=5
            )
        )
    worst = max(r["ratio"] for r in rows)
    print(f"worst ratio {worst:.3f} (target <= 1.05): {'ok' if worst <= 1.05 else 'ABOVE TARGET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
