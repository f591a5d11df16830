"""A transposed convolution against the convolution it is the transpose of, in ONNX Runtime.

    python benchmarks/conv_transpose_latency.py [--seconds 1.0]

The latency model (nasdsl/bench/latency.py, ``adjoint``) charges ``conv_transpose{n}d`` from C_in
to C_out on a map as ``conv{n}d`` from C_out to C_in on the transposed one's output, with the same
window: the same multiply-adds and weights. This measures both, each alone in a model of its own
(nasdsl's ONNX export, batch 1, one thread, the fastest run's CPU time:
``nasdsl.bench.calibrate.measure_ms``), and prints their ratio, so that what the model leaves
out shows. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nasdsl.bench.calibrate import compile_text, measure_ms  # noqa: E402

#: (rank, C_in, C_out, input side, the window as the spec writes it)
CASES = (
    (2, 64, 32, 28, {"kernel": 4, "stride": 2, "padding": 1}),
    (2, 128, 64, 14, {"kernel": 4, "stride": 2, "padding": 1}),
    (2, 256, 128, 14, {"kernel": 3, "stride": 2, "padding": 1, "output_padding": 1}),
    (2, 64, 64, 28, {"kernel": 2, "stride": 2}),
    (2, 32, 32, 28, {"kernel": 3, "padding": 1}),
    (1, 128, 64, 64, {"kernel": 4, "stride": 2, "padding": 1}),
    (3, 32, 16, 8, {"kernel": 2, "stride": 2}),
)


def _spec(rank: int, channels: int, side: int, layer: dict) -> str:
    fields = ", ".join(f"{k}: {v}" for k, v in layer.items())
    axes = ", axes: CL" if rank == 1 else ""
    return f"nasdsl: 1\nname: M\ninput: {{shape: {[channels] + [side] * rank}{axes}}}\nmodel:\n  layer: {{{fields}}}\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="the least time each model runs")
    args = parser.parse_args()
    print(f"{'case':<70} {'transposed ms':>13} {'conv ms':>9} {'ratio':>6}")
    for rank, cin, cout, side, window in CASES:
        k, s, p, o = (window.get(key, 0) for key in ("kernel", "stride", "padding", "output_padding"))
        out_side = (side - 1) * (s or 1) - 2 * p + k + o
        conv_window = {key: v for key, v in window.items() if key != "output_padding"}
        up = _spec(rank, cin, side, {"op": f"conv_transpose{rank}d", "out": cout, **window})
        down = _spec(rank, cout, out_side, {"op": f"conv{rank}d", "out": cin, **conv_window})
        t_up = measure_ms(compile_text(up), "onnxruntime", 1, args.seconds)
        t_down = measure_ms(compile_text(down), "onnxruntime", 1, args.seconds)
        case = f"{rank}-D {cin}->{cout} on {side}, {', '.join(f'{key} {v}' for key, v in window.items())}"
        print(f"{case:<70} {t_up:>13.3f} {t_down:>9.3f} {t_up / t_down:>6.2f}")


if __name__ == "__main__":
    main()
