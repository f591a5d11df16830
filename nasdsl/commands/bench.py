"""``nasdsl bench``: the spec's model under every engine and precision this CPU offers, checked
against the fp32 PyTorch reference and timed in one interleaved run; the fastest within a
tolerance marked, with the ``nasdsl compile --optimize-for`` line that writes its artifact.
``--calibrate`` measures the latency model's per-op costs instead (docs/deploy.md)."""

from __future__ import annotations

import argparse
import sys

from nasdsl import ir
from nasdsl.errors import NasdslError

HELP = "measure the model under every engine and precision of this CPU; calibrate the latency model"

DESCRIPTION = (
    "Runs the spec's inference model under each engine installed (PyTorch eager NCHW and channels_last, "
    "torch.compile, ONNX Runtime, OpenVINO with the nasdsl[openvino] extra) at each precision the CPU supports "
    "(fp32; bf16 where it has avx512_bf16 or AMX; int8 quantised by ONNX Runtime's quantize_static, calibrated "
    "on --data or on generated inputs), with a progress bar on stderr. Prints engine, precision, batch, images "
    "per second, milliseconds per batch, the largest deviation from the fp32 PyTorch reference (relative to "
    "its largest magnitude), top-1 agreement with it on --data, and the --optimize-for target whose artifact "
    "was measured; marks (*) the fastest of each batch size within --tolerance (none where the reference's output "
    "varies across the inputs by no more than the tolerance: give --weights). With --calibrate it measures "
    "the latency model's costs on this machine for --engine instead (a few minutes; cached per machine, engine "
    "and version) and predicts the spec's latency: then summary --latency and the latency_ms column of "
    "space and sweep work."
)

EXAMPLES = """\
nasdsl bench specs/googlenet_bn.yaml
nasdsl bench specs/resnet50.yaml --engines onnxruntime,openvino --batch 1,16 --format markdown
nasdsl bench specs/mobilenet_v2.yaml --data val.npz --tolerance 0.02 --format json
nasdsl bench specs/googlenet_bn.yaml --calibrate
"""

DEFAULT_TOLERANCE = 0.01


class BenchUsageError(NasdslError):
    """A bad option of bench (exit 2)."""


def _listing(option: str, allowed: tuple[str, ...]):
    def parse(text: str) -> tuple[str, ...]:
        items = tuple(t.strip() for t in text.split(",") if t.strip())
        bad = [t for t in items if t not in allowed]
        if not items or bad:
            raise argparse.ArgumentTypeError(
                f"{option}: expected a comma-separated list of {', '.join(allowed)}, got {text!r}{_guess(bad, allowed)}"
            )
        return tuple(dict.fromkeys(items))

    return parse


def _guess(bad: list[str], allowed: tuple[str, ...]) -> str:
    """'; did you mean X?' for the first misspelt item that is close to an allowed one."""
    import difflib

    for item in bad:
        close = difflib.get_close_matches(item.lower(), allowed, n=1, cutoff=0.6)
        if close:
            return f" (did you mean {close[0]!r} for {item!r}?)"
    return ""


def _one_of(option: str, allowed: tuple[str, ...]):
    def parse(text: str) -> str:
        if text not in allowed:
            raise argparse.ArgumentTypeError(
                f"{option}: expected one of {', '.join(allowed)}, got {text!r}{_guess([text], allowed)}"
            )
        return text

    return parse


def _batches(text: str) -> tuple[int, ...]:
    try:
        items = tuple(int(t) for t in text.split(","))
    except ValueError:
        items = ()
    if not items or any(not 1 <= b <= 4096 for b in items):
        raise argparse.ArgumentTypeError(f"--batch: expected batch sizes from 1 to 4096 such as 1,16, got {text!r}")
    return tuple(dict.fromkeys(items))


#: the most threads an engine may be given: --threads 1000000 asked the engines for a million (while
#: one ran, other processes on the machine failed to start threads)
MAX_THREADS = 1024
#: the most timed rounds: each times every engine at every batch, and --repeats 10**12 ran until
#: interrupted; a median of 1,000 rounds is as steady as a benchmark gets
MAX_REPEATS = 1000


def _positive(option: str, kind=float, lo=0.0, hi: float | None = None):
    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            v = None
        if v is None or not lo < v < float("inf") or (hi is not None and v > hi):
            most = f" and at most {hi:,}" if hi is not None else ""
            endless = " (expected a finite one)" if v == float("inf") else ""
            raise argparse.ArgumentTypeError(f"{option}: expected a number above {lo:g}{most}, got {text!r}{endless}")
        return v

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from nasdsl.bench.engines import ENGINES
    from nasdsl.bench.latency import LATENCY_ENGINES

    parser.add_argument(
        "--engines",
        type=_listing("--engines", tuple(ENGINES)),
        default=None,
        help=f"the engines to run: {', '.join(ENGINES)} (default: every one installed)",
    )
    parser.add_argument(
        "--precisions",
        type=_listing("--precisions", ("fp32", "bf16", "int8")),
        default=None,
        help="fp32, bf16, int8 (default: every one this CPU supports)",
    )
    parser.add_argument("--batch", type=_batches, default=None, help="batch sizes, e.g. 1,16 (default 16)")
    parser.add_argument(
        "--data",
        metavar="FILE",
        help="preprocessed inputs (.npy, or .npz with one array or 'x'; N x C x H x W): the first half calibrates "
        "int8, the rest measures top-1 agreement (default: generated standard normal inputs, said so)",
    )
    parser.add_argument(
        "--weights", metavar="FILE", help="the training model's weights (.safetensors or .pt; default: seeded init)"
    )
    parser.add_argument(
        "--tolerance",
        type=_positive("--tolerance"),
        default=None,
        help=f"the largest deviation from the fp32 reference the fastest may have (default {DEFAULT_TOLERANCE:g})",
    )
    parser.add_argument(
        "--repeats",
        type=_positive("--repeats", int, 0, MAX_REPEATS),
        default=None,
        help=f"timed rounds, at most {MAX_REPEATS:,} (default 7; the median)",
    )
    parser.add_argument(
        "--threads",
        type=_positive("--threads", int, 0, MAX_THREADS),
        default=None,
        help=f"threads per engine, at most {MAX_THREADS:,} (default: every core)",
    )
    parser.add_argument(
        "--format",
        type=_one_of("--format", ("table", "json", "markdown")),
        default=None,
        help="table, json or markdown (default table)",
    )
    cal = parser.add_argument_group("latency model")
    cal.add_argument(
        "--calibrate", action="store_true", help="measure the latency model's per-op costs on this machine, cache them"
    )
    cal.add_argument(
        "--engine",
        type=_one_of("--engine", LATENCY_ENGINES),
        default=None,
        help=f"the latency model's engine: {', '.join(LATENCY_ENGINES)} (default {LATENCY_ENGINES[0]})",
    )
    cal.add_argument("--force", action="store_true", help="with --calibrate: measure again even if cached")


#: the options of a measurement, none of which a calibration takes (it runs its own networks at
#: batch 1 on one thread): given with --calibrate, each was ignored
MEASURING = ("engines", "precisions", "batch", "data", "weights", "tolerance", "repeats", "threads", "format")
#: what a measurement takes when an option is not given
DEFAULTS = {"batch": (16,), "tolerance": DEFAULT_TOLERANCE, "repeats": 7, "format": "table"}


def run(args: argparse.Namespace, net) -> int:
    if not args.calibrate and (args.engine is not None or args.force):
        option = "--engine" if args.engine is not None else "--force"
        raise BenchUsageError(f"{option} goes with --calibrate", path=option)
    if args.calibrate:
        given = [f"--{k}" for k in MEASURING if getattr(args, k) is not None]
        if given:
            raise BenchUsageError(
                f"{', '.join(given)}: not with --calibrate, which measures its own networks at batch 1 on one "
                "thread for --engine (measure the spec without --calibrate)",
                path=given[0],
            )
        return _calibrate(args, net)
    for key, value in DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return _bench(args, net)


def _bench(args: argparse.Namespace, net) -> int:
    from nasdsl.bench import data, engines, measure
    from nasdsl.bench.hardware import machine
    from nasdsl.figures import check_batch_memory

    cpu = machine()
    notes: list[str] = []
    if args.engines is None:
        names = [e for e in engines.ENGINES if engines.available(e)]
        notes += [f"{e}: not run: {engines.missing_message(e)}" for e in engines.ENGINES if e not in names]
    else:
        missing = [e for e in args.engines if not engines.available(e)]
        if missing:
            raise BenchUsageError("; ".join(engines.missing_message(e) for e in missing), path="--engines")
        names = list(args.engines)
    offered = cpu.precisions()
    if args.precisions is not None:
        if "bf16" in args.precisions and "bf16" not in offered:
            raise BenchUsageError(
                "bf16: this CPU has neither avx512_bf16 nor amx_bf16 (its flags: "
                + (" ".join(cpu.flags) or "none")
                + ")",
                path="--precisions",
            )
        wanted = args.precisions
    else:
        wanted = offered
    if not cpu.amx and "bf16" in offered:
        notes.append("bf16 runs on AVX-512 BF16 here; this CPU has no AMX, whose bf16 tiles give the large speedups")
    g = net.graph
    start = ir.node(g, ir.info(g).input)
    layout = engines.channels_last(start.type.axes)
    if layout is None:
        flat = f"the input ({start.type.axes}) is no 2-D or 3-D map, which a channels-last layout needs"
        if args.engines is not None and "eager-cl" in names:
            raise BenchUsageError(f"eager-cl: {flat}; eager and compile run it contiguous", path="--engines")
        if "eager-cl" in names:
            notes.append(f"eager-cl: not run: {flat}")
        if "compile" in names:
            notes.append("compile: runs the contiguous layout (no channels-last one for this input)")
    configs = measure.plan(names, wanted, args.batch, offered, layout)
    if not configs:
        raise BenchUsageError(
            f"no engine of {', '.join(names)} offers {', '.join(wanted)}; see nasdsl bench --help", path="--precisions"
        )
    check_batch_memory(g, max(args.batch), args.max_memory, "benchmarking the model")
    shape = ir.node(g, ir.info(g).input).shape
    inputs = data.load(args.data, shape) if args.data else data.generated(shape)
    weights = None
    if args.weights:
        from nasdsl.optimize import load_checked

        weights = load_checked(args.weights, g, max_bytes=args.max_memory)
    threads = args.threads or cpu.cores
    rows = measure.bench(
        net,
        configs,
        inputs=inputs,
        weights=weights,
        threads=threads,
        repeats=args.repeats,
        progress=measure.Progress(len(configs) + len(args.batch)),
        notes=notes,
        tolerance=args.tolerance,
    )
    notes.append(
        f"{threads} thread{'s' if threads != 1 else ''} per engine; "
        "deviation: max |out - ref| / max |ref| on the evaluation inputs"
    )
    report = measure.report(
        args.spec,
        net.name,
        rows,
        tolerance=args.tolerance,
        machine=cpu,
        data=inputs.describe(),
        notes=notes,
        options=[*(f"--set={o}" for o in args.overrides), *(["--weights", args.weights] if args.weights else [])],
        calibration=args.data,
    )
    sys.stdout.write(measure.render(report, args.format))
    return 0


def _calibrate(args: argparse.Namespace, net) -> int:
    from nasdsl.bench import calibrate, latency
    from nasdsl.bench.hardware import machine
    from nasdsl.bench.latency import LATENCY_ENGINES

    engine = args.engine or LATENCY_ENGINES[0]
    model = calibrate.load_or_calibrate(engine, force=args.force, progress=sys.stderr)
    cpu = machine()
    print(f"latency model for {engine}: {model.describe()}")
    print(f"machine: {cpu.describe()}")
    print(f"cached at {latency.cache_path(engine)}")
    threads = f"{model.threads} thread{'s' if model.threads != 1 else ''}"
    print(f"{args.spec}: predicted {model.predict(net.graph):.2f} ms a sample (batch 1, {threads})")
    return 0
