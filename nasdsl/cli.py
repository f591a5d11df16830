"""The ``nasdsl`` command line.

Every error caused by input prints one-line, compiler-style diagnostics and
exits 2: a bad spec, a bad option value, an option that does not apply. An
internal error prints one line asking for a bug report and exits 1 (with the
traceback only under ``--debug``, which may stand anywhere on the line). Only
this module (and the commands it runs) writes files, atomically, creating a
missing output folder.

Each subcommand is a :class:`Command`: its help, description, examples, its
own options and a ``run(args, net)`` that gets the compiled spec. Commands of
their own modules (``nasdsl/commands/``) plug in through :data:`MODULES`.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import gc
import importlib
import io
import math
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from nasdsl import __version__, ir
from nasdsl.api import MAX_PARAMS, compile_spec, few_collections
from nasdsl.build import MAX_NODES
from nasdsl.ensemble import CompiledEnsemble
from nasdsl.errors import NasdslError, SpecError, UsageError, one_line, terminal_text
from nasdsl.figures import check_batch_memory
from nasdsl.files import write_atomic
from nasdsl.loader import Limits
from nasdsl.optimize import ARTIFACT_TOLERANCE, DEFAULT_TARGET, ONNX_TARGETS, deployment, target_names
from nasdsl.summary import render
from nasdsl.weights import MAX_MEMORY, check_memory

#: commands that only walk graphs and write files (no torch, no data loops): they run with the
#: cyclic garbage collector paused, as compiling does
QUICK_COMMANDS = ("check", "summary", "compile", "space", "sweep", "diff", "draw")
BUG = "nasdsl: internal error: {}: please report a bug with the spec that caused it (rerun with --debug for details)"
OPSETS = range(13, 22)
DEFAULT_OPSET = 17
#: output extensions and the backend each implies
BACKEND_OF = {".py": "pytorch", ".onnx": "onnx"}
#: options that only the ONNX backend takes, with their defaults
ONNX_ONLY = {
    "weights": None,
    "random_weights": False,
    "opset": DEFAULT_OPSET,
    "batch": 1,
    "with_aux": False,
    "data": None,
}


# ---------------------------------------------------------------------------
# Option values: each check names what it allows


def _int_in(name: str, lo: int, hi: int, *, extra: str = "") -> Callable[[str], int | str]:
    def check(text: str) -> int | str:
        if extra and text == extra:
            return text
        try:
            n = int(text)
        except ValueError:
            n = None
        if n is None or not lo <= n <= hi:
            allowed = f"an integer from {lo} to {hi:,}" + (f" or '{extra}'" if extra else "")
            raise argparse.ArgumentTypeError(f"{name}: expected {allowed}, got {text!r}")
        return n

    return check


def _bytes(name: str) -> Callable[[str], int]:
    """A size in bytes, with an optional K, M, G or T suffix (powers of 1024)."""

    def check(text: str) -> int:
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(text[-1:].upper(), 1)
        digits = text[:-1] if scale > 1 else text
        if not (digits.isascii() and digits.isdecimal()) or not 1 <= int(digits) * scale <= 1 << 50:
            raise argparse.ArgumentTypeError(f"{name}: expected a size in bytes such as 8G or 512M, got {text!r}")
        return int(digits) * scale

    return check


def _choice(name: str, *allowed: str) -> Callable[[str], str]:
    def check(text: str) -> str:
        if text not in allowed:
            close = difflib.get_close_matches(text, allowed, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise argparse.ArgumentTypeError(f"{name}: expected one of {', '.join(allowed)}, got {text!r}{hint}")
        return text

    return check


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line and exit 2, like every other input error.
    An option is written whole: argparse would take a prefix of one (``--samp`` for
    ``--sampler``), so a typo could silently name another option; an unknown option's error
    names the options it is close to."""

    def __init__(self, *args, **kwargs):
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # argparse's hook; never returns
        message = message.replace("argument ", "")
        if message.endswith(": expected one argument") and message.startswith("--"):
            option = message.split(":", 1)[0].split("/")[-1]  # its long form, the last argparse lists
            message += f" (a value beginning with '-' is read as an option: write {option}=VALUE)"
        if message.startswith("unrecognized arguments: "):
            message += self._close_options(message.split(": ", 1)[1].split())
        if ": " in message and message.split(": ", 1)[1].startswith(message.split(": ", 1)[0]):
            message = message.split(": ", 1)[1]  # our checks name the option themselves
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def parse_args(self, args=None, namespace=None):
        """argparse's, with unknown options reported by the command that was given them (a
        command's parser passes what it does not know up to the main parser, which knows none
        of the command's options to name)."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            commands = [a for a in self._actions if isinstance(a, argparse._SubParsersAction)]
            given = getattr(parsed, commands[0].dest, None) if commands else None
            where = commands[0].choices.get(given, self) if given is not None else self
            where.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed

    def _close_options(self, unknown: list[str]) -> str:
        """``; did you mean --sampler?`` for the unknown options that are close to one of this
        parser's (what was written before an ``=`` is compared)."""
        known = [o for a in self._actions for o in a.option_strings if o.startswith("--")]
        hints = []
        for word in unknown:
            name = word.split("=", 1)[0]
            if not name.startswith("--"):
                continue
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
            close += [o for o in known if o.startswith(name) and o not in close][: 3 - len(close)]
            if close:
                hints.append(f"{name}: did you mean {' or '.join(close)}?")
        return f"; {'; '.join(hints)}" if hints else ""

    def _get_values(self, action: argparse.Action, arg_strings: list[str]):  # argparse's hook for every value
        """An empty value (``-o ''``, ``--data ''``, an empty OTHER) is refused: taken as given, it
        read as no value at all where a command tests the option for truth (``diff SPEC ''``
        compared SPEC with itself, ``--workdir ''`` used the default folder)."""
        if "" in arg_strings and action.nargs not in (argparse.PARSER, argparse.REMAINDER):
            name = max(action.option_strings, key=len) if action.option_strings else action.metavar or action.dest
            self.error(f"{name}: expected a value, got an empty string")
        return super()._get_values(action, arg_strings)


# ---------------------------------------------------------------------------
# Commands


@dataclass(frozen=True)
class Command:
    """A subcommand: ``add_arguments`` adds its own options (the spec, ``--set`` and the
    limits are common), ``run(args, net)`` does the work on the compiled spec."""

    name: str
    help: str
    description: str
    examples: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, object], int]
    #: checks the options before the spec is read (raises UsageError)
    check_options: Callable[[argparse.Namespace], None] = lambda args: None
    #: whether the command reads a spec (``import`` makes one: no SPEC, ``--set`` or limits; ``run`` gets None)
    takes_spec: bool = True


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
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks of internal errors")
    limits = p.add_argument_group("limits", "what a spec may cost before it is refused (exit 2)")
    limits.add_argument(
        "--max-bytes", type=_int_in("--max-bytes", 1, 1 << 40), default=Limits.max_bytes, help="largest spec file"
    )
    limits.add_argument(
        "--max-depth", type=_int_in("--max-depth", 1, 1 << 20), default=Limits.max_depth, help="deepest YAML nesting"
    )
    limits.add_argument(
        "--max-yaml-nodes",
        type=_int_in("--max-yaml-nodes", 1, 1 << 40),
        default=Limits.max_nodes,
        help="most YAML nodes, aliases expanded (billion-laughs guard)",
    )
    limits.add_argument(
        "--max-scalar-length",
        type=_int_in("--max-scalar-length", 1, 1 << 40),
        default=Limits.max_scalar_length,
        help="longest YAML scalar (characters)",
    )
    limits.add_argument(
        "--max-nodes",
        type=_int_in("--max-nodes", 1, 1 << 40),
        default=MAX_NODES,
        help="most graph nodes after template expansion",
    )
    limits.add_argument(
        "--max-params", type=_int_in("--max-params", 1, 1 << 62), default=MAX_PARAMS, help="most parameters in a model"
    )
    limits.add_argument(
        "--max-memory",
        type=_bytes("--max-memory"),
        default=MAX_MEMORY,
        metavar="BYTES",
        help="most memory the weights may need to export or verify, and the activations of a batch to verify "
        "or bench (e.g. 8G, 512M; default 8G)",
    )


def _onnx_options(p: argparse.ArgumentParser, *, batch_dynamic: bool = True) -> None:
    onnx = p.add_argument_group("ONNX", "options of the ONNX export")
    onnx.add_argument(
        "--opset",
        type=_int_in("--opset", OPSETS.start, OPSETS.stop - 1),
        default=None,
        help=f"ONNX opset, {OPSETS.start} to {OPSETS.stop - 1} (default {DEFAULT_OPSET})",
    )
    onnx.add_argument(
        "--weights",
        default=None,
        metavar="FILE",
        help="weights keyed like the generated PyTorch model's state_dict: .safetensors, or a torch.save file "
        "(default: an ensemble's members' own weights files, else drawn from the spec's init rules, seed 0)",
    )
    _random_weights_option(onnx)
    onnx.add_argument(
        "--batch",
        type=_int_in("--batch", 1, 1 << 16, extra="dynamic" if batch_dynamic else ""),
        default=None,
        help="the batch size" + (", or 'dynamic' for a symbolic one" if batch_dynamic else "") + " (default 1)",
    )


# -- check -----------------------------------------------------------------------------------


#: check writes the PyTorch source (in memory) of graphs up to this many nodes: what the backend
#: cannot write is refused by check, as by compile. Above it, writing would add half again to a
#: check's time (about 4.4 s to the 8 s of a check of 100,000 nodes on two cores, over the 10 s such a
#: check may take), and the line says that it was not written.
CHECK_WRITES_UP_TO = 20_000


def _run_check(args: argparse.Namespace, net) -> int:
    nodes = net.graph.number_of_nodes()
    placeholders = [n for n, d in ir.nodes(net.graph) if d.op == "opaque"]
    unwritten = ""
    if placeholders:  # an import's stand-in for what no op computes: the spec is read, not built
        unwritten = (
            f"; no backend writes it while it holds an opaque op ({', '.join(placeholders[:3])}"
            f"{', ...' if len(placeholders) > 3 else ''})"
        )
    elif nodes > CHECK_WRITES_UP_TO:
        unwritten = f"; its PyTorch source is not written above {CHECK_WRITES_UP_TO:,} nodes (compile writes it)"
    else:
        from nasdsl.backends.pytorch import generate_source

        generate_source(net.graph, source_name=args.spec)
    inference = net.totals()
    training = net.totals(with_aux=True)
    ms = (time.perf_counter() - args.started) * 1000
    print(f"{one_line(args.spec)}: ok: {_counts(net, inference, training)} ({ms:.0f} ms){unwritten}")
    return 0


def _counts(net, inference: dict, training: dict) -> str:
    """What ``check`` says of a model: nodes, parameters and multiply-adds, for inference
    and, where training adds heads, for training too (of an ensemble: members and totals)."""
    if isinstance(net, CompiledEnsemble):
        return net.describe()
    text = f"{net.graph.number_of_nodes()} nodes, {inference['params']:,} parameters for inference"
    if training["params"] != inference["params"]:
        text += f", {training['params']:,} with the training heads"
    text += f"; {inference['macs']:,} multiply-adds"
    if training["macs"] != inference["macs"]:
        text += f", {training['macs']:,} in training"
    return text


CHECK = Command(
    "check",
    "check a spec; print its size or every error",
    "Load, expand, check and shape a spec, and write its PyTorch source in memory, as compile would "
    f"(what the backend cannot write is an error here too; up to {CHECK_WRITES_UP_TO:,} nodes). "
    "Prints one line: the graph's node count, "
    "the parameters for inference and with the training-only heads, and the multiply-adds; or every error found, "
    "each as FILE:LINE:COL: error: KEY.PATH: message (exit 2).",
    "nasdsl check specs/googlenet.yaml\nnasdsl check specs/googlenet.yaml --set inception4a.c3x3=256",
    lambda p: None,
    _run_check,
)


# -- summary ----------------------------------------------------------------------------------


def _summary_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--format",
        type=_choice("--format", "table", "json", "markdown"),
        default="table",
        help="table, json or markdown (default table)",
    )
    p.add_argument("--with-aux", action="store_true", help="include training-only heads in rows and totals")
    p.add_argument(
        "--latency",
        action="store_true",
        help="predict each entry's latency (batch 1) with this machine's latency model (nasdsl bench --calibrate)",
    )
    _optimize_options(p, "also count the nodes of the inference graph optimised for the PyTorch default target")


def _run_summary(args: argparse.Namespace, net) -> int:
    summary = net.summary(with_aux=args.with_aux)
    counts = _optimized_counts(args, net) if args.optimize or args.optimize_for else None
    if counts is not None and args.format == "json":
        summary = {**summary, "optimized": counts}
    predicted = None
    if args.latency:
        from nasdsl.bench.latency import require, summary_latency

        predicted = summary_latency(require(), net.graph, summary)
        summary = predicted.summary if args.format == "json" else summary
    sys.stdout.write(render(summary, args.format))
    if predicted is not None and args.format != "json":
        print(predicted.text)
    if counts is not None and args.format != "json":
        print(
            f"optimised for {counts['target']}: {counts['nodes']} nodes, from {counts['inference_nodes']} in the "
            f"inference graph ({counts['folded']} BatchNorm folded, {counts['joined']} sets of convolutions joined)"
        )
    return 0


def _optimize_options(p: argparse.ArgumentParser, what: str) -> None:
    group = p.add_argument_group("optimisation", "an inference build, per deployment target (docs/optimize.md)")
    group.add_argument("--optimize", action="store_true", help=what)
    group.add_argument(
        "--optimize-for",
        type=_choice("--optimize-for", *target_names()),
        default=None,
        metavar="TARGET",
        help=f"the target: {', '.join(target_names())} (implies --optimize; a precision after a dash is an "
        "ONNX artifact for that engine, as nasdsl bench measured it; default: "
        + ", ".join(f"{k} for {b}" for b, k in DEFAULT_TARGET.items())
        + ")",
    )


def _target(args: argparse.Namespace, backend: str) -> str | None:
    """The optimisation target the options ask for, or None for no optimisation."""
    if args.optimize_for is not None:
        args.optimize = True
        return args.optimize_for
    return DEFAULT_TARGET[backend] if args.optimize else None


def _optimized_counts(args: argparse.Namespace, net) -> dict:
    from nasdsl.optimize import PREPARE, optimize
    from nasdsl.passes.derive import FoldNorm
    from nasdsl.passes.pipeline import run_pipeline

    target = _target(args, "pytorch")
    g = optimize(net.graph, deployment(target)[0], verify=args.debug or None)
    steps = ir.info(g).derivation
    folded = sum(isinstance(s, FoldNorm) for s in steps)
    return {
        "target": target,
        "nodes": g.number_of_nodes(),
        "inference_nodes": run_pipeline(net.graph, PREPARE).number_of_nodes(),
        "folded": folded,
        "joined": len(steps) - folded,
    }


SUMMARY = Command(
    "summary",
    "print a table of layers, shapes, parameters and multiply-adds",
    "One row per top-level model entry, like Table 1 of the GoogLeNet paper: its kind (op or template), "
    "window, output shape, depth (layers with parameters), parameters, multiply-adds and arguments; "
    "totals at the end. JSON rows carry every column of the table.",
    "nasdsl summary specs/googlenet.yaml\nnasdsl summary specs/googlenet.yaml --format json --with-aux",
    _summary_arguments,
    _run_summary,
)


# -- compile ----------------------------------------------------------------------------------


def _compile_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--to",
        type=_choice("--to", "pytorch", "onnx"),
        default=None,
        help="the backend: pytorch or onnx (default: from the output's extension, .py or .onnx)",
    )
    p.add_argument("-o", "--output", required=True, help="the file to write (its folder is made if missing)")
    _onnx_options(p)
    p.add_argument(
        "--with-aux", action="store_true", default=None, help="ONNX: keep the training-only heads as outputs"
    )
    p.add_argument(
        "--data",
        default=None,
        metavar="FILE",
        help="int8 targets: the inputs to calibrate on, as nasdsl bench --data takes them (default: generated)",
    )
    p.add_argument(
        "--tolerance",
        type=_tolerance,
        default=None,
        metavar="REL",
        help="ONNX artifact targets: the largest deviation from the fp32 export the artifact may have before it is "
        "refused (max |out - ref| / max |ref|; default by precision: "
        + ", ".join(f"{k} {v:g}" for k, v in ARTIFACT_TOLERANCE.items())
        + ")",
    )
    _optimize_options(
        p,
        "write the inference graph optimised for the backend's default target: for pytorch a flat module "
        "with a from_training_state_dict classmethod, for onnx the graph ONNX Runtime runs best",
    )


def _backend(args: argparse.Namespace) -> str:
    """The backend ``--to`` names, or the output's extension implies; a contradiction is an error."""
    implied = BACKEND_OF.get(os.path.splitext(args.output)[1].lower())
    if args.to is None:
        if implied is None:
            raise UsageError(
                f"--to: cannot tell the backend from the output name '{args.output}'; "
                "expected --to pytorch or --to onnx, or an output ending in .py or .onnx"
            )
        return implied
    if implied is not None and implied != args.to:
        raise UsageError(f"--to {args.to} contradicts the output name '{args.output}' (which means {implied})")
    return args.to


def _refuse_onnx_options(args: argparse.Namespace, backend: str) -> None:
    given = [f"--{k.replace('_', '-')}" for k in ONNX_ONLY if getattr(args, k, None) is not None]
    if backend != "onnx" and given:
        raise UsageError(f"{', '.join(given)}: only the ONNX backend takes {'these' if len(given) > 1 else 'this'}")


def _onnx_values(args: argparse.Namespace) -> dict:
    return {k: default if getattr(args, k, None) is None else getattr(args, k) for k, default in ONNX_ONLY.items()}


def _check_compile_options(args: argparse.Namespace) -> None:
    args.backend = _backend(args)
    _refuse_onnx_options(args, args.backend)
    args.target = _target(args, args.backend)
    if args.target is not None and args.with_aux:
        raise UsageError("--with-aux: an optimised graph is the inference graph, without training-only heads")
    if args.target is not None and _artifact_target(args.target) and args.backend != "onnx":
        raise UsageError(f"--optimize-for {args.target}: its artifact is an ONNX model; write .onnx or give --to onnx")
    if args.data is not None and (args.target is None or deployment(args.target)[1] != "int8"):
        raise UsageError("--data: only an int8 target (--optimize-for onnxruntime-int8, openvino-int8) takes it")
    if args.tolerance is not None and (args.target is None or not _artifact_target(args.target)):
        raise UsageError(
            "--tolerance: only an ONNX artifact target (--optimize-for onnxruntime-int8, openvino, openvino-bf16, "
            "openvino-int8) is checked against a tolerance"
        )


def _tolerance(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not 0 < v < math.inf:
        raise argparse.ArgumentTypeError(f"--tolerance: expected a finite number above 0, got {text!r}")
    return v


def _artifact_target(name: str) -> bool:
    """Whether ``name`` is a target whose ONNX artifact nasdsl.bench.artifacts makes (an engine
    other than ONNX Runtime, or a precision)."""
    target, precision = deployment(name)
    return target in ONNX_TARGETS or precision != "fp32"


def _run_compile(args: argparse.Namespace, net) -> int:
    if isinstance(net, CompiledEnsemble) and args.target is not None:
        raise UsageError(
            f"--optimize-for {args.target}: an ensemble is not optimised as a whole; compile each member"
            if args.optimize_for is not None
            else "--optimize: an ensemble is not optimised as a whole; compile each member"
        )
    if args.backend == "pytorch" and args.target is not None:
        from nasdsl.backends.pytorch import generate_source
        from nasdsl.optimize import optimize

        g = optimize(net.graph, args.target, verify=args.debug or None)
        data = generate_source(g, source_name=args.spec, verify=args.debug or None).encode()
    elif args.backend == "pytorch":
        from nasdsl.backends.pytorch import generate_source

        data = generate_source(net.graph, source_name=args.spec, verify=args.debug or None).encode()
    else:
        from nasdsl.backends import onnx as onnx_backend

        o = _onnx_values(args)
        weights = _weights(o["weights"], net, getattr(args, "max_memory", MAX_MEMORY), random=o["random_weights"])
        if args.target is not None and _artifact_target(args.target):
            made = _artifact(args, net, o, weights)
            write_atomic(args.output, made.data)
            checked = (
                f"; deviation {made.deviation:.2e} from the fp32 export in {made.engine}, {made.samples} "
                f"input{'s' if made.samples != 1 else ''}"
                if made.deviation is not None
                else "; not run: OpenVINO is not installed"
            )
            print(f"wrote {one_line(args.output)} ({len(made.data):,} bytes, the {args.target} artifact{checked})")
            return 0
        data = onnx_backend.export_onnx_bytes(
            net.graph,
            opset=o["opset"],
            state_dict=weights,
            with_aux=o["with_aux"],
            batch=o["batch"],
            max_memory=args.max_memory,
            optimize=args.target,
        )
    if args.backend == "pytorch" and (why := _shadowing(args.output, data)) is not None:
        stem = os.path.splitext(os.path.basename(args.output))[0]
        raise UsageError(f"-o {args.output}: {why}; write it under another name (such as {stem}_model.py)")
    write_atomic(args.output, data)
    optimised = f", optimised for {args.target}" if args.target is not None else ""
    print(f"wrote {one_line(args.output)} ({len(data):,} bytes{optimised})")
    return 0


def _shadowing(path: str, source: bytes) -> str | None:
    """Why Python source is not written at ``path``: its module name would shadow a module it
    needs (``torch.py``, ``typing.py``), so that, run from its folder, the file would import
    itself (:func:`nasdsl.backends.names.shadowed_module`); None where it may be."""
    from nasdsl.backends.names import shadowed_module

    why = shadowed_module(path, source.decode())
    if why is None:
        return None
    stem = os.path.splitext(os.path.basename(path))[0]
    return (
        f"a file named {stem}.py would import itself when run from its folder: its module name '{stem}' is "
        f"{why}; nothing was written"
    )


def _artifact(args: argparse.Namespace, net, o: dict, weights):
    """The ONNX artifact of a deployment target (nasdsl.bench.artifacts: what nasdsl bench measured),
    checked against the fp32 export (:class:`nasdsl.bench.artifacts.Artifact`)."""
    from nasdsl.bench import data as inputs
    from nasdsl.bench.artifacts import make_artifact

    g = net.graph
    if args.target.endswith("-int8") and isinstance(o["batch"], int):  # calibrating runs the model at the batch
        check_batch_memory(g, o["batch"], args.max_memory, f"calibrating the {args.target} artifact")
    shape = ir.node(g, ir.info(g).input).shape
    given = inputs.load(o["data"], shape) if o["data"] is not None else inputs.generated(shape)
    return make_artifact(
        g,
        args.target,
        tolerance=args.tolerance,
        calibration=given.calibration,
        state_dict=weights,
        batch=o["batch"],
        opset=o["opset"],
        max_memory=args.max_memory,
    )


def _weights(path: str | None, net, max_memory: int | None = MAX_MEMORY, *, check: bool = False, random: bool = False):
    """The weights the options ask for: ``--weights FILE``; else an ensemble's members' own
    weights files, where its members name any (a missing one is an error); else None (the
    seeded initialisation), as with ``--random-weights``. ``check``: first make sure that
    building and verifying the model fits in ``max_memory``."""
    if check:
        check_memory(net.graph, 4, max_memory, "building and verifying the model")
    if path is not None and random:
        raise UsageError("--weights and --random-weights: give one or the other")
    if path is not None:
        from nasdsl.optimize import load_checked

        return load_checked(path, net.graph, max_bytes=max_memory)
    if random or not isinstance(net, CompiledEnsemble):
        return None
    from nasdsl.ensemble import member_state_dict

    try:
        return member_state_dict(net)
    except NasdslError as e:
        hint = "; give --weights FILE for the whole ensemble, or --random-weights to try it out"
        raise type(e)(e.message + hint, location=e.location, path=e.path) from None


COMPILE = Command(
    "compile",
    "write PyTorch source or an ONNX model",
    "Compile a spec to readable PyTorch source (a module that depends on torch alone) or to an ONNX "
    "model of its inference graph. The backend follows from the output's extension (.py, .onnx) "
    "unless --to names it; the ONNX options are refused for PyTorch output.",
    "nasdsl compile specs/googlenet.yaml -o GoogLeNet.py\n"
    "nasdsl compile specs/googlenet_bn.yaml -o g.onnx --weights weights.safetensors --batch dynamic\n"
    "nasdsl compile specs/googlenet_bn.yaml --optimize-for cpu -o deploy.py\n"
    "nasdsl compile specs/googlenet_bn.yaml --optimize-for openvino-bf16 --batch 16 -o g.onnx",
    _compile_arguments,
    _run_compile,
    _check_compile_options,
)


# -- verify -----------------------------------------------------------------------------------


def _verify_arguments(p: argparse.ArgumentParser) -> None:
    _onnx_options(p, batch_dynamic=False)


def _run_verify(args: argparse.Namespace, net) -> int:
    from nasdsl.backends.verify import verify

    o = _onnx_values(args)
    check_batch_memory(net.graph, o["batch"], args.max_memory, "verifying the model")
    weights = _weights(o["weights"], net, args.max_memory, check=True, random=o["random_weights"])
    result = verify(net.graph, state_dict=weights, batch=o["batch"], opset=o["opset"])
    _print_verification(result)
    return 0 if result.ok else 1


def _print_verification(result) -> None:
    for c in result.checks:
        status = "ok" if c.ok else "FAILED"
        figures = c.note or (
            f"relative error {c.max_rel:.3g} (tolerance {result.tolerance:g}), max abs error {c.max_abs:.3g}"
        )
        print(f"  {c.name}: {figures}: {status}")


VERIFY = Command(
    "verify",
    "check that the PyTorch and ONNX backends compute the same function",
    "Build the generated PyTorch model and the ONNX export with the same weights, run both on the same "
    "seeded random input (ONNX Runtime on the CPU), and compare every output, and the values before a "
    "final softmax: the largest error relative to the largest magnitude. Exit 1 above the tolerance.",
    "nasdsl verify specs/googlenet.yaml\nnasdsl verify specs/googlenet_bn.yaml --weights w.safetensors --batch 4",
    _verify_arguments,
    _run_verify,
)


# -- build ------------------------------------------------------------------------------------


def _build_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-o", "--output-dir", default="out", help="where to write <name>.py and <name>.onnx (made if missing)"
    )
    onnx = p.add_argument_group("ONNX", "options of the ONNX export")
    onnx.add_argument(
        "--opset",
        type=_int_in("--opset", OPSETS.start, OPSETS.stop - 1),
        default=DEFAULT_OPSET,
        help=f"ONNX opset, {OPSETS.start} to {OPSETS.stop - 1} (default {DEFAULT_OPSET})",
    )
    onnx.add_argument("--weights", default=None, metavar="FILE", help="weights for the ONNX model and verify")
    _random_weights_option(onnx)


def _random_weights_option(group) -> None:
    group.add_argument(
        "--random-weights",
        action="store_const",
        const=True,
        default=None,
        help="the seeded initialisation even where an ensemble's members name weights files (to try it out)",
    )


def _run_build(args: argparse.Namespace, net) -> int:
    """check, summary, <name>.py, <name>.onnx, verify: a line per step; files are
    written only when every step before verification succeeded."""
    start = args.started

    def step(text: str) -> None:
        print(f"[{time.perf_counter() - start:6.2f}s] {text}", flush=True)

    inference, training = net.totals(), net.totals(with_aux=True)
    step(f"check: {one_line(args.spec)}: {_counts(net, inference, training)}")
    step("summary:")
    sys.stdout.write(render(net.summary(), "table"))
    from nasdsl.backends import onnx as onnx_backend
    from nasdsl.backends.pytorch import generate_source

    source = generate_source(net.graph, source_name=args.spec, verify=args.debug or None).encode()
    if (why := _shadowing(os.path.join(args.output_dir, f"{net.name}.py"), source)) is not None:
        raise SpecError(
            f"the model is named '{net.name}', and build writes "
            f"{os.path.join(args.output_dir, net.name)}.py: {why}; give the model another name",
            location=net.spec.name_loc,
            path="name",
        )
    step(f"pytorch: {net.name}.py, {len(source):,} bytes")
    check_batch_memory(net.graph, 1, args.max_memory, "verifying the model", option=None)
    weights = _weights(args.weights, net, args.max_memory, check=True, random=bool(args.random_weights))
    if weights is None:
        from nasdsl.weights import initial_weights

        weights = initial_weights(net.graph)  # the seeded initialisation, shared with verify
    data = onnx_backend.export_onnx_bytes(net.graph, opset=args.opset, state_dict=weights, max_memory=args.max_memory)
    step(f"onnx: {net.name}.onnx, opset {args.opset}, {len(data):,} bytes")
    out = os.path.join(args.output_dir, net.name)
    write_atomic(out + ".py", source)
    write_atomic(out + ".onnx", data)
    step(f"wrote {one_line(out)}.py and {one_line(out)}.onnx")
    from nasdsl.backends.verify import verify

    result = verify(net.graph, state_dict=weights, opset=args.opset)
    step("verify: PyTorch (eval) against ONNX Runtime, same weights, same random input")
    _print_verification(result)
    step("done" if result.ok else "verification FAILED")
    return 0 if result.ok else 1


BUILD = Command(
    "build",
    "the main job: check, summary, PyTorch source, ONNX model, verify",
    "Everything for one spec, a line per step with its time: check, the summary table, <name>.py and "
    "<name>.onnx written to the output folder, and verify (exit 1 if the two disagree).",
    "nasdsl build specs/googlenet.yaml -o out",
    _build_arguments,
    _run_build,
)

COMMANDS: list[Command] = [CHECK, SUMMARY, COMPILE, VERIFY, BUILD]
#: modules of nasdsl/commands/ that define HELP, DESCRIPTION, EXAMPLES, add_arguments(parser) and run(args, net)
MODULES = ("draw", "space", "sweep", "diff", "transfer", "evaluate", "search", "bench", "import_")
#: the commands that take an ensemble spec (nasdsl/ensemble.py)
ENSEMBLE_COMMANDS = ("check", "summary", "compile", "verify", "build", "evaluate")


def _plugged(name: str) -> Command | None:
    try:
        module = importlib.import_module(f"nasdsl.commands.{name}")
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("nasdsl.commands"):
            return None  # not installed in this tree
        raise
    return Command(
        name.rstrip("_"),  # import_.py: `import` is a keyword
        module.HELP,
        module.DESCRIPTION,
        module.EXAMPLES,
        module.add_arguments,
        module.run,
        takes_spec=getattr(module, "TAKES_SPEC", True),
    )


def commands() -> list[Command]:
    return [*COMMANDS, *(c for c in map(_plugged, MODULES) if c is not None)]


# ---------------------------------------------------------------------------
# The parser and the entry point


def parser() -> argparse.ArgumentParser:
    ap = _Parser(
        prog="nasdsl",
        description="Compile neural-architecture specs (YAML) to PyTorch source and ONNX models.",
        epilog="Run 'nasdsl COMMAND --help' for a command's options and examples.",
    )
    ap.add_argument("--version", action="version", version=f"nasdsl {__version__}")
    ap.add_argument("--debug", action="store_true", default=False, help="show tracebacks of internal errors")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    for c in commands():
        p = sub.add_parser(
            c.name,
            help=c.help,
            description=c.description,
            epilog="examples:\n" + "\n".join(f"  {line}" for line in c.examples.splitlines()),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if c.takes_spec:
            _common(p)
        else:
            p.add_argument(
                "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks of internal errors"
            )
        c.add_arguments(p)
        p.set_defaults(command_spec=c)
    return ap


def _compile(args: argparse.Namespace):
    limits = Limits(
        max_bytes=args.max_bytes,
        max_depth=args.max_depth,
        max_nodes=args.max_yaml_nodes,
        max_scalar_length=args.max_scalar_length,
    )
    args.limits = limits
    return compile_spec(args.spec, args.overrides, limits=limits, max_nodes=args.max_nodes, max_params=args.max_params)


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    args = parser().parse_args(argv)
    args.started = started
    command = args.command_spec
    try:
        command.check_options(args)
        net = _compile(args) if command.takes_spec else None
        if isinstance(net, CompiledEnsemble) and command.name not in ENSEMBLE_COMMANDS:
            raise UsageError(
                f"{args.spec}: '{command.name}' takes a model spec, not an ensemble; run it on a member's spec "
                f"(the commands that take an ensemble: {', '.join(ENSEMBLE_COMMANDS)})"
            )
        with contextlib.redirect_stdout(_Terminal(sys.stdout)):
            if command.name in QUICK_COMMANDS:  # graph work alone: see api.few_collections
                with few_collections():
                    return command.run(args, net)
            return command.run(args, net)
    except NasdslError as e:
        print(e.format(), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nasdsl: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader closed standard output: entry() ends quietly
        raise
    except Exception as e:  # noqa: BLE001 - the last line of defence
        if args.debug:
            traceback.print_exc()
        print(BUG.format(type(e).__name__), file=sys.stderr)
        return 1


class _Terminal(io.TextIOBase):
    """Standard output as the commands write it, with every control character (an escape
    sequence, a carriage return, a bidirectional override from a file name, a spec or an
    option) shown as its escape: whatever a command prints, a terminal shows it as text.
    Newlines and tabs pass; a value quoted on one line is made one line where it is quoted
    (:func:`nasdsl.errors.one_line`)."""

    def __init__(self, stream) -> None:
        self.stream = stream

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.stream.write(terminal_text(text))
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()


def entry() -> int:
    """The ``nasdsl`` program (the console script and ``python -m nasdsl``): :func:`main`,
    then, as the process is about to end, every object moved out of the garbage collector's
    reach (:func:`gc.freeze`): the collection Python runs at exit would otherwise walk the
    whole graph once more (1.5 s of a 9 s check at 100,000 nodes).

    A reader that stops early (``nasdsl space SPEC | head``) closes the pipe: the program
    stops quietly with the shell's status for that signal (128 + SIGPIPE), standard output
    pointed at the null device so that the flush at exit has nowhere to fail."""
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 128 + 13
    gc.freeze()
    return code
