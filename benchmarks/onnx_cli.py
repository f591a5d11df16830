"""Whole-process ONNX export: ``nasdsl compile --to onnx`` against torch.onnx.export.

Both are separate processes, timed from start to exit, interleaved round by
round so that load on the machine hits both alike:

- ``nasdsl compile specs/googlenet_bn.yaml --to onnx -o g.onnx`` (no weights: the
  spec's init rules drawn in numpy; torch is never imported), and the same with
  a ``.safetensors`` weights file;
- ``python -c "import torch, torchvision; torch.onnx.export(googlenet(...), ...)"``:
  a process that imports torch and exports torchvision's GoogLeNet with the
  TorchScript exporter (dynamo=False, the faster of the two).

Prints each median and the ratio ours / torch's (target: at most 1/3).

    python benchmarks/onnx_cli.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

TORCH_EXPORT = """
import sys, warnings
warnings.filterwarnings("ignore")
import torch, torchvision
model = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=False).eval()
torch.onnx.export(model, (torch.randn(1, 3, 224, 224),), sys.argv[1], opset_version=17, dynamo=False)
"""

MAKE_WEIGHTS = """
import sys
import nasdsl
from nasdsl.weights import initial_weights
from safetensors.numpy import save_file
save_file(initial_weights(nasdsl.compile_spec(sys.argv[1]).graph, seed=1), sys.argv[2])
"""


def _time(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    spec = str(ROOT / "specs" / "googlenet_bn.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        weights = out / "w.safetensors"
        subprocess.run([sys.executable, "-c", MAKE_WEIGHTS, spec, str(weights)], check=True)
        ours = [sys.executable, "-m", "nasdsl", "compile", spec, "--to", "onnx", "-o", str(out / "a.onnx")]
        cases = {
            "nasdsl compile --to onnx": ours,
            "nasdsl compile --to onnx --weights .safetensors": [*ours, "--weights", str(weights)],
            "torch.onnx.export (TorchScript), torchvision googlenet": [
                sys.executable,
                "-c",
                TORCH_EXPORT,
                str(out / "b.onnx"),
            ],
        }
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.rounds):
            for name, cmd in cases.items():
                times[name].append(_time(cmd))
    reference = statistics.median(times["torch.onnx.export (TorchScript), torchvision googlenet"])
    print(f"whole process, median of {args.rounds} interleaved rounds (seconds)")
    for name, values in times.items():
        median = statistics.median(values)
        spread = f"range {min(values):.2f}-{max(values):.2f}"
        print(f"{name:56s} {median:6.2f}  {median / reference:5.2f} of torch's  ({spread})")
    worst = max(statistics.median(v) for k, v in times.items() if k.startswith("nasdsl")) / reference
    print(f"target <= 0.33 of torch's: {'met' if worst <= 1 / 3 else 'MISSED'} ({worst:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
