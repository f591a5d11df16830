"""``nasdsl import``: a PyTorch model or an ONNX file as a spec, with its templates discovered.

``nasdsl import MODEL -o spec.yaml [--input-shape C,H,W] [--weights w.safetensors]``. The
work is :func:`nasdsl.importer.import_model`'s; this module parses the options, writes the
spec (and the weights) atomically and prints the report. The command reads no spec, so it
takes none of the spec options (``--set``, the limits).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

from nasdsl.errors import Location, NasdslError, SpecError, printable
from nasdsl.spec import check_name

#: the CLI reads no spec for this command (nasdsl/cli.py)
TAKES_SPEC = False

HELP = "make a spec from a PyTorch model or an ONNX file, with its repeated blocks as templates"

DESCRIPTION = (
    "Write a spec (YAML) that builds MODEL: torchvision:NAME (a torchvision classification model), "
    "module:PACKAGE.MODULE:FACTORY (a function or class of yours that returns an nn.Module, traced with "
    "torch.fx; it is your own code: importing it imports and runs it), or an .onnx file (read with the onnx "
    "package alone: the graph is data, evaluated only by that package's reference evaluator on one random input "
    "to check an attention read as one op). Repeated blocks become templates (one per module class, "
    "or per structure of a class), with the settings that differ between uses as parameters named after the "
    "constructor's arguments (GoogLeNet's Inception(ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj)); "
    "consecutive uses become repeat:. An ONNX file whose node names say nothing of the modules has its module "
    "tree read from the metadata of PyTorch's dynamo exporter, or, with none, its repeated blocks found by the "
    "graph's structure (templates Block1, Block2 ...). Names are the source's, so its state_dict loads "
    "strictly into the generated model. The spec is compiled and compared with the source node by node "
    "before it is written; with --check, the generated model holding the source's tensors is also run against "
    "the source (ONNX Runtime for a file) on one random input. "
    "An op without a spec equivalent is an error naming the node and the op (exit 2), or with "
    "--allow-opaque an 'opaque' op that the backends refuse. The report (templates, "
    "sizes, time) goes to stdout, or to stderr when the spec does (-o -). See docs/import.md."
)

EXAMPLES = """\
nasdsl import torchvision:googlenet -o googlenet.yaml
nasdsl import torchvision:resnet50 -o resnet50.yaml --input-shape 3,160,160
nasdsl import module:mypackage.nets:build_net -o net.yaml --input-shape 1,28,28
nasdsl import model.onnx -o model.yaml --weights model.safetensors
nasdsl import model.onnx -o model.yaml --check
"""

WEIGHT_FORMATS = (".safetensors", ".pt", ".pth")
#: --check's bound on the largest difference, relative to the largest value of an output (verify's)
CHECK_TOLERANCE = 1e-4


class ImportUsageError(NasdslError):
    """A bad option of import (exit 2)."""


#: what --input-shape takes, for its errors
_SHAPE_FORMS = (
    "C,H,W such as 3,224,224 (H,W,C for an ONNX file whose input is channels-last; C, L,C or C,T,H,W for an ONNX "
    "input of features, tokens or clips)"
)


def _shape(text: str) -> tuple[int, ...]:
    """The sizes of one sample, the batch excluded, written with commas (or ``x``): whole numbers of
    1 or more, digits only (``3_0`` is no size, where int() reads 30). How many the model takes is
    the importer's to say (three for a PyTorch model, an ONNX input's rank less one)."""
    parts = [p.strip() for p in text.replace("x", ",").split(",")]
    if not 1 <= len(parts) <= 4:
        raise argparse.ArgumentTypeError(f"--input-shape: expected {_SHAPE_FORMS}; got {len(parts)} sizes in {text!r}")
    for p in parts:
        if not re.fullmatch(r"[+-]?[0-9]+", p):
            what = "an empty size" if not p else f"{p!r} is no whole number"
            raise argparse.ArgumentTypeError(f"--input-shape: {what} in {text!r}: expected {_SHAPE_FORMS}")
    shape = tuple(int(p) for p in parts)
    small = next((s for s in shape if s < 1), None)
    if small is not None:
        raise argparse.ArgumentTypeError(f"--input-shape: expected sizes of 1 or more, got {small} in {text!r}")
    return shape


def _model_name(text: str) -> str:
    """A --name the spec can hold, checked as the spec's own ``name`` is (it was checked only
    once the spec was written, and a name the parser refuses was an internal error)."""
    try:
        return check_name(text, Location("<--name>", 1, 1), "name", "model name")
    except SpecError as e:
        raise argparse.ArgumentTypeError(f"--name: {e.message}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        metavar="MODEL",
        help="torchvision:NAME, module:PACKAGE.MODULE:FACTORY (your code, run) or FILE.onnx (parsed, not run)",
    )
    parser.add_argument("-o", "--output", default="-", metavar="SPEC", help="the spec to write (default -: stdout)")
    parser.add_argument(
        "--input-shape",
        type=_shape,
        default=None,
        metavar="C,H,W",
        help="the size of one sample the model is traced at, the batch excluded: C,H,W (an ONNX file's in its "
        "input's order: H,W,C where it is channels-last; C, L,C or C,T,H,W for features, tokens or clips) "
        "(default: torchvision's crop size or a ViT's image_size, the ONNX input's, else 3,224,224)",
    )
    parser.add_argument(
        "--name", type=_model_name, default=None, help="the spec's name (default: the model's class or graph name)"
    )
    parser.add_argument(
        "--weights",
        default=None,
        metavar="FILE",
        help="also write the model's tensors keyed like the generated model's state_dict: .safetensors or .pt "
        "(an ONNX file's initializers; a PyTorch model's state_dict)",
    )
    parser.add_argument(
        "--allow-opaque",
        action="store_true",
        help="keep an op without a spec equivalent (one tensor in, no weights) as an 'opaque' op with its output "
        "shape, which every backend refuses, instead of stopping with an error",
    )
    parser.add_argument(
        "--by-structure",
        action="store_true",
        help="ONNX only: ignore the node names and the exporter's metadata and find the repeated blocks by the "
        "graph's structure alone, as for a file that has neither (templates Block1, Block2 ...)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="before writing, run the generated model with the source's tensors and the source itself (ONNX "
        "Runtime for a file) on one seeded random input and compare every output; exit 1, nothing written, when "
        f"the largest difference is above {CHECK_TOLERANCE:g} of the largest value (1e-2 for a file that computes "
        "in float16)",
    )
    parser.add_argument("--format", choices=("text", "json"), default="text", help="the report (default text)")


def run(args: argparse.Namespace, net) -> int:
    from nasdsl.files import write_atomic
    from nasdsl.importer import import_model
    from nasdsl.weights import encode_weights

    if args.weights and os.path.splitext(args.weights)[1].lower() not in WEIGHT_FORMATS:
        raise ImportUsageError(
            f"cannot tell the format from '{args.weights}': expected a name ending in .safetensors or .pt",
            path="--weights",
        )
    if args.output != "-" and not args.output.lower().endswith((".yaml", ".yml")):
        raise ImportUsageError(f"expected a spec name ending in .yaml, got '{args.output}'", path="--output")
    result = import_model(
        args.model,
        input_shape=args.input_shape,
        name=args.name,
        weights=bool(args.weights) or args.check,
        allow_opaque=args.allow_opaque,
        by_structure=args.by_structure,
    )
    checked = _check(args.model, result) if args.check else None
    if checked is not None and not checked.ok:
        for c in checked.checks:
            figures = (
                c.note
                if c.note
                else f"relative error {c.max_rel:.3g} (tolerance {checked.tolerance:g}), max abs error {c.max_abs:.3g}"
            )
            sys.stderr.write(f"  {c.name}: {figures}: {'ok' if c.ok else 'FAILED'}\n")
        sys.stderr.write(
            f"error: the imported spec computes otherwise than {printable(args.model)} (--check); nothing written\n"
        )
        return 1
    if args.weights:
        write_atomic(args.weights, encode_weights(result.weights, args.weights))
    report = sys.stderr if args.output == "-" else sys.stdout
    if args.output == "-":
        sys.stdout.write(result.text)
    else:
        write_atomic(args.output, result.text.encode())
    against = "ONNX Runtime's run of the file" if result.reference is None else "the source model"
    if args.format == "json":
        extra = {}
        if checked is not None:
            extra["check"] = {
                "against": "onnxruntime" if result.reference is None else "source",
                "outputs": len(checked.checks),
                "largest_relative_difference": max(c.max_rel for c in checked.checks),
                "tolerance": checked.tolerance,
            }
        body = {**result.report.as_dict(), "output": args.output, "weights": args.weights, **extra}
        report.write(json.dumps(body, indent=2))
        report.write("\n")
    else:
        report.write(printable(result.report.as_text()))
        if checked is not None:
            n = len(checked.checks)
            report.write(
                f"check: {n} output{'s' if n != 1 else ''} against {against}: largest difference "
                f"{max(c.max_rel for c in checked.checks):.2g} of the largest value (tolerance {checked.tolerance:g})\n"
            )
        if args.output != "-":
            report.write(f"wrote {printable(args.output)}\n")
        if args.weights:
            report.write(f"wrote {printable(args.weights)} ({len(result.weights)} tensors)\n")
    return 0


def _check(model: str, result):
    """The generated model with the source's tensors against the source, on one random input."""
    from nasdsl.backends.verify import verify_import

    source = result.reference
    if source is None:  # an ONNX file: the graph as the file holds it
        import onnx

        source = onnx.load(model)
    return verify_import(result.compiled.graph, result.weights, source, tolerance=CHECK_TOLERANCE)
