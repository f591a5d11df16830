"""``nasdsl draw``: the architecture as a picture (SVG, PNG, PDF, DOT or a self-contained HTML page).

The CLI adds the common options (SPEC, ``--set``, the ``--max-*`` limits),
compiles the spec and calls :func:`run`; everything about the picture is in
:mod:`nasdsl.draw`. DOT text needs nothing else; the other formats run
Graphviz's ``dot`` (``docs/drawing.md``).
"""

from __future__ import annotations

import argparse
import os

from nasdsl import draw, ir
from nasdsl.errors import one_line

HELP = "draw the architecture as SVG, PNG, PDF, DOT or a self-contained HTML page (Graphviz)"

DESCRIPTION = (
    "Draw the architecture: one box per top-level entry, template use or op, template uses labelled with "
    "their template and arguments, edges labelled with tensor shapes, training-only heads dashed and grey. "
    "The format follows the output's extension (.svg, .png, .pdf, .dot or .gv, .html). Graphviz's dot lays "
    "the picture out; without it only DOT can be written (install it with apt-get install graphviz or "
    "brew install graphviz). --diff colours the top-level entries added (green), changed (orange) and "
    "removed (red) from another spec to this one. See docs/drawing.md."
)

EXAMPLES = """\
nasdsl draw specs/googlenet.yaml -o googlenet.svg --depth 1
nasdsl draw specs/googlenet.yaml -o inception4a.svg --focus inception4a
nasdsl draw specs/resnet18.yaml -o resnet18.png --depth 1 --roll --show params,macs
nasdsl draw specs/googlenet.yaml -o googlenet.html --depth 0 --inference --rankdir LR
nasdsl draw specs/googlenet.yaml -o wider.svg --depth 0 --set inception4a.c3x3=256 --diff specs/googlenet.yaml
nasdsl draw specs/googlenet.yaml -o fewer.svg --depth 0 --diff-set aux_logits=false
nasdsl draw specs/googlenet.yaml -o googlenet.dot   # DOT text: needs no Graphviz
"""

#: Output formats by file extension.
EXTENSIONS = {
    ".svg": "svg",
    ".png": "png",
    ".pdf": "pdf",
    ".dot": "dot",
    ".gv": "dot",
    ".html": "html",
    ".htm": "html",
}


def _depth(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected a level >= 0, got {text!r}")
    return n


def _show(text: str) -> tuple[str, ...]:
    items = tuple(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))
    bad = [s for s in items if s not in draw.SHOW]
    if bad or not items:
        raise argparse.ArgumentTypeError(f"expected params, macs or params,macs, got {text!r}")
    return items


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``draw``'s own options (the CLI adds SPEC, ``--set`` and the limits)."""
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="FILE",
        help="the file to write; its extension gives the format: .svg, .png, .pdf, .dot/.gv or .html",
    )
    parser.add_argument(
        "--depth",
        type=_depth,
        default=None,
        metavar="N",
        help="levels of template uses to open: 0 draws the top-level entries only (default: every op)",
    )
    parser.add_argument(
        "--roll",
        action="store_true",
        help="draw consecutive uses of one template with the same arguments and output shape once, as 'x N'",
    )
    parser.add_argument(
        "--show",
        type=_show,
        default=(),
        metavar="params,macs",
        help="write parameters and/or multiply-adds in every box",
    )
    parser.add_argument("--inference", action="store_true", help="leave out training-only heads and layers")
    parser.add_argument(
        "--rankdir", choices=draw.RANKDIRS, default="TB", help="top to bottom (TB, default) or left to right (LR)"
    )
    parser.add_argument(
        "--focus", metavar="PATH", help="draw one block alone, at the given depth below it (e.g. inception4a)"
    )
    parser.add_argument(
        "--diff",
        metavar="SPEC",
        help="colour the top-level entries added, changed and removed from SPEC to this spec",
    )
    parser.add_argument(
        "--diff-set",
        dest="diff_overrides",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="override a value of the --diff spec (without --diff: of this spec's file, without its --set)",
    )


def output_format(path: str) -> str:
    """The format an output file's extension asks for."""
    fmt = EXTENSIONS.get(os.path.splitext(path)[1].lower())
    if fmt is None:
        known = ", ".join(EXTENSIONS)
        raise draw.DrawError(f"cannot tell the format from {path!r}: expected an extension {known}", path="--output")
    return fmt


def _other(args: argparse.Namespace):
    """The --diff spec, compiled with --diff-set and the same limits as the drawn one; None without --diff."""
    diff, overrides = getattr(args, "diff", None), getattr(args, "diff_overrides", None) or []
    if diff is None and not overrides:
        return None, ""
    from nasdsl.api import DEFAULT_LIMITS, MAX_PARAMS, compile_spec
    from nasdsl.build import MAX_NODES

    path = diff or args.spec
    other = compile_spec(
        path,
        overrides,
        limits=getattr(args, "limits", None) or DEFAULT_LIMITS,
        max_nodes=getattr(args, "max_nodes", MAX_NODES),
        max_params=getattr(args, "max_params", MAX_PARAMS),
    )
    name = " ".join([os.path.basename(path), *(f"--set {o}" for o in overrides)])
    return other.graph, name


def run(args: argparse.Namespace, net) -> int:
    """Draw the compiled spec ``net`` to ``args.output``; print one line."""
    from nasdsl.files import write_atomic

    fmt = output_format(args.output)
    other, other_name = _other(args)
    text = draw.to_dot(
        net.graph,
        depth=args.depth,
        roll=args.roll,
        show=args.show,
        inference=args.inference,
        rankdir=args.rankdir,
        focus=args.focus,
        diff=other,
        diff_name=other_name,
    )
    try:
        if fmt == "dot":
            data = text.encode("utf-8")
        elif fmt == "html":
            title = f"{ir.info(net.graph).name} ({os.path.basename(args.spec)})"
            data = draw.to_html(draw.render(text, "svg"), title).encode("utf-8")
        else:
            data = draw.render(text, fmt)
    except draw.DrawError as e:
        raise e.at(path=args.output) from None
    write_atomic(args.output, data)
    print(f"wrote {one_line(args.output)} ({len(data):,} bytes)")
    return 0
