"""The ``nasdsl`` command line.

Every error caused by input prints compiler-style diagnostics and exits 2; an
internal error prints one line asking for a bug report and exits 1 (with the
traceback only under ``--debug``). Only this module writes files, atomically.
"""

from __future__ import annotations

import argparse
import sys
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
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE",
                   help="override a variable or a model entry's key, e.g. num_classes=10 or inception4a.c3x3=256")
    p.add_argument("--max-bytes", type=int, default=Limits.max_bytes, help="largest spec file accepted (bytes)")
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
    return ap


def _compile(args: argparse.Namespace):
    limits = Limits(max_bytes=args.max_bytes)
    return compile_spec(args.spec, args.overrides, limits=limits, max_nodes=args.max_nodes,
                        max_params=args.max_params)


def cmd_check(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    net = _compile(args)
    t = net.summary()["totals"]
    ms = (time.perf_counter() - start) * 1000
    print(f"{args.spec}: ok: {net.graph.number_of_nodes()} nodes, {t['params']:,} parameters, "
          f"{t['macs']:,} multiply-adds ({ms:.0f} ms)")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    net = _compile(args)
    sys.stdout.write(render(net.summary(with_aux=args.with_aux), args.format))
    return 0


COMMANDS = {"check": cmd_check, "summary": cmd_summary}


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
