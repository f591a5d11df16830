"""The ``nasdsl`` command line.

Every error caused by input prints compiler-style diagnostics and exits 2; an
internal error prints one line asking for a bug report and exits 1 (with the
traceback only under ``--debug``). Only this module writes files, atomically.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import stat
import sys
import tempfile
import time
import traceback

from nasdsl import __version__
from nasdsl.api import MAX_PARAMS, compile_spec
from nasdsl.build import MAX_NODES
from nasdsl.errors import NasdslError
from nasdsl.loader import Limits
from nasdsl.summary import render

BUG = "nasdsl: internal error: {}: please report a bug with the spec that caused it (rerun with --debug for details)"


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="the spec file (YAML)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="override a variable or a model entry's key, e.g. num_classes=10 or inception4a.c3x3=256",
    )
    p.add_argument("--max-bytes", type=int, default=Limits.max_bytes, help="largest spec file accepted (bytes)")
    p.add_argument("--max-depth", type=int, default=Limits.max_depth, help="deepest YAML nesting accepted")
    p.add_argument(
        "--max-yaml-nodes",
        type=int,
        default=Limits.max_nodes,
        help="most YAML nodes, aliases expanded (billion-laughs guard)",
    )
    p.add_argument(
        "--max-scalar-length",
        type=int,
        default=Limits.max_scalar_length,
        help="longest YAML scalar accepted (characters)",
    )
    p.add_argument("--max-nodes", type=int, default=MAX_NODES, help="most graph nodes after template expansion")
    p.add_argument("--max-params", type=int, default=MAX_PARAMS, help="most parameters in a model")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="nasdsl", description="Compile neural-architecture specs.")
    ap.add_argument("--version", action="version", version=f"nasdsl {__version__}")
    ap.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("check", help="check a spec; print its size or every error")
    _common(p)
    p = sub.add_parser("summary", help="print a table of layers, shapes, parameters and multiply-adds")
    _common(p)
    p.add_argument("--format", choices=("table", "json", "markdown"), default="table")
    p.add_argument("--with-aux", action="store_true", help="include training-only heads in rows and totals")
    p = sub.add_parser("compile", help="write PyTorch source or an ONNX model")
    _common(p)
    p.add_argument("--to", choices=("pytorch", "onnx"), required=True, help="the backend")
    p.add_argument("-o", "--output", required=True, help="the file to write")
    _onnx_options(p)
    p.add_argument("--with-aux", action="store_true", help="ONNX: keep the training-only heads as extra outputs")
    p.add_argument("--batch", default="1", help="ONNX: the batch size, or 'dynamic'")
    p = sub.add_parser("verify", help="check that the PyTorch and ONNX backends compute the same function")
    _common(p)
    _onnx_options(p)
    p.add_argument("--batch", type=_batch_int, default=1, help="the batch size of the random input")
    p = sub.add_parser("build", help="the main job: check, summary, PyTorch source, ONNX model, verify")
    _common(p)
    p.add_argument("-o", "--output-dir", default="out", help="where to write <name>.py and <name>.onnx")
    _onnx_options(p)
    return ap


def _batch_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if not 1 <= n <= 1 << 16:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return n


def _onnx_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--opset", type=int, default=17, help="ONNX opset, 13 to 21 (default 17)")
    p.add_argument("--weights", help="a state_dict saved from the generated PyTorch model (torch.save)")


def _compile(args: argparse.Namespace):
    try:
        limits = Limits(
            max_bytes=args.max_bytes,
            max_depth=args.max_depth,
            max_nodes=args.max_yaml_nodes,
            max_scalar_length=args.max_scalar_length,
        )
    except ValueError as e:
        raise UsageError(str(e)) from None
    return compile_spec(args.spec, args.overrides, limits=limits, max_nodes=args.max_nodes, max_params=args.max_params)


def cmd_check(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    net = _compile(args)
    t = net.summary()["totals"]
    ms = (time.perf_counter() - start) * 1000
    print(
        f"{args.spec}: ok: {net.graph.number_of_nodes()} nodes, {t['params']:,} parameters, "
        f"{t['macs']:,} multiply-adds ({ms:.0f} ms)"
    )
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    net = _compile(args)
    sys.stdout.write(render(net.summary(with_aux=args.with_aux), args.format))
    return 0


def _onnx_args(args: argparse.Namespace):
    from nasdsl.backends import onnx as onnx_backend
    from nasdsl.weights import load_weights

    if args.opset not in onnx_backend.SUPPORTED_OPSETS:
        raise UsageError(f"--opset: expected 13 to 21, got {args.opset}")
    weights = load_weights(args.weights) if args.weights else None
    return onnx_backend, weights


def cmd_compile(args: argparse.Namespace) -> int:
    net = _compile(args)
    if args.to == "pytorch":
        from nasdsl.backends.pytorch import generate_source

        data = generate_source(net.graph, source_name=args.spec, verify=args.debug).encode()
    else:
        batch: int | str = "dynamic" if args.batch == "dynamic" else _batch_arg(args.batch)
        onnx_backend, weights = _onnx_args(args)
        data = onnx_backend.export_onnx_bytes(
            net.graph, opset=args.opset, state_dict=weights, with_aux=args.with_aux, batch=batch
        )
    write_atomic(args.output, data)
    print(f"wrote {args.output} ({len(data):,} bytes)")
    return 0


def _batch_arg(text: str) -> int:
    try:
        return _batch_int(text)
    except argparse.ArgumentTypeError as e:
        raise UsageError(f"--batch: {e}") from None


def cmd_verify(args: argparse.Namespace) -> int:
    net = _compile(args)
    _, weights = _onnx_args(args)
    from nasdsl.backends.verify import verify

    result = verify(net.graph, state_dict=weights, batch=args.batch, opset=args.opset)
    _print_verification(result)
    return 0 if result.ok else 1


def _print_verification(result) -> None:
    for c in result.checks:
        status = "ok" if c.ok else "FAILED"
        print(
            f"  {c.name}: max abs error {c.max_abs:.3g}, relative {c.max_rel:.3g} "
            f"(tolerance {result.tolerance:g}): {status}"
        )


def cmd_build(args: argparse.Namespace) -> int:
    """check, summary, <name>.py, <name>.onnx, verify: a line per step; files are
    written only when every step before verification succeeded."""
    start = time.perf_counter()

    def step(text: str) -> None:
        print(f"[{time.perf_counter() - start:6.2f}s] {text}", flush=True)

    net = _compile(args)
    t = net.summary()["totals"]
    step(
        f"check: {args.spec}: {net.graph.number_of_nodes()} nodes, {t['params']:,} parameters, "
        f"{t['macs']:,} multiply-adds"
    )
    step("summary:")
    sys.stdout.write(render(net.summary(), "table"))
    from nasdsl.backends.pytorch import generate_source

    source = generate_source(net.graph, source_name=args.spec, verify=args.debug).encode()
    step(f"pytorch: {net.name}.py, {len(source):,} bytes")
    onnx_backend, weights = _onnx_args(args)
    if weights is None:
        from nasdsl.weights import initial_weights

        weights = initial_weights(net.graph)  # the seeded initialisation, shared with verify
    data = onnx_backend.export_onnx_bytes(net.graph, opset=args.opset, state_dict=weights)
    step(f"onnx: {net.name}.onnx, opset {args.opset}, {len(data):,} bytes")
    out = os.path.join(args.output_dir, net.name)
    os.makedirs(args.output_dir, exist_ok=True)
    write_atomic(out + ".py", source)
    write_atomic(out + ".onnx", data)
    step(f"wrote {out}.py and {out}.onnx")
    from nasdsl.backends.verify import verify

    result = verify(net.graph, state_dict=weights, opset=args.opset)
    step("verify: PyTorch (eval) against ONNX Runtime, same weights, same random input")
    _print_verification(result)
    step("done" if result.ok else "verification FAILED")
    return 0 if result.ok else 1


class UsageError(NasdslError):
    """A bad command-line option (exit 2)."""


def write_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and
    a rename, so that readers see the old file or the whole new one."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise UsageError(f"{path}: is a directory, expected a file to write")
    if os.path.lexists(path) and not stat.S_ISREG(os.lstat(path).st_mode):
        raise UsageError(f"{path}: exists and is not a regular file (a link, pipe or device); not replacing it")
    if not os.path.isdir(folder):
        raise UsageError(f"{path}: the folder {folder} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".nasdsl-", suffix=".tmp", dir=folder)
    except OSError as e:
        raise UsageError(f"{path}: cannot write: {e.strerror or e}") from None
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # as open() would have made it, not mkstemp's 0600
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise UsageError(f"{path}: cannot write: {e.strerror or e}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


COMMANDS = {
    "check": cmd_check,
    "summary": cmd_summary,
    "compile": cmd_compile,
    "verify": cmd_verify,
    "build": cmd_build,
}


def main(argv: list[str] | None = None) -> int:
    ap = parser()
    args = ap.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except NasdslError as e:
        print(e.format(), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nasdsl: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the last line of defence
        if args.debug:
            traceback.print_exc()
        print(BUG.format(type(e).__name__), file=sys.stderr)
        return 1
