"""``nasdsl diff``: what differs between two specs (or one spec with two sets of ``--set``), graph by graph.

The CLI adds the common options and compiles SPEC with ``--set``; :func:`run`
compiles the other side and prints :func:`nasdsl.diff.compare`'s result as
text or JSON. Never imports torch.
"""

from __future__ import annotations

import argparse
import os
import sys

from nasdsl import diff

HELP = "compare two specs, or one spec with two sets of --set: entries added, removed and changed"

DESCRIPTION = (
    "Compare the graphs of two specs: the model's top-level entries, the output heads, the input and the "
    "outputs, paired by name (a renamed entry with the same structure is found as a rename). For each entry "
    "that differs: its arguments or attributes, input and output shapes, the nodes inside it that changed, "
    "and its parameters and multiply-adds on both sides; then the totals. Comments, layout and doc text "
    "change nothing. Without OTHER, SPEC with its --set is compared with SPEC with --other-set. "
    "--format json writes the contract documented in nasdsl/diff.py."
)

EXAMPLES = """\
nasdsl diff specs/googlenet.yaml specs/googlenet_bn.yaml
nasdsl diff specs/googlenet.yaml --other-set inception4a.c3x3=256 --other-set aux_logits=false
nasdsl diff specs/googlenet.yaml variant17.yaml --format json
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``diff``'s own options (the CLI adds SPEC, ``--set`` and the limits)."""
    parser.add_argument("other", nargs="?", help="the spec to compare SPEC with (default: SPEC itself)")
    parser.add_argument(
        "--other-set",
        dest="other_overrides",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="override a value of OTHER (without OTHER: of SPEC's file, without SPEC's --set)",
    )
    parser.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="text for people, json for tools (default text)",
    )


def _label(path: str, overrides: list[str]) -> str:
    return " ".join([os.path.basename(path), *(f"--set {o}" for o in overrides)])


def run(args: argparse.Namespace, net) -> int:
    """Compare the compiled spec ``net`` (SPEC with --set) with OTHER (with --other-set)."""
    from nasdsl.api import DEFAULT_LIMITS, compile_spec

    other_path = args.other or args.spec
    other = compile_spec(
        other_path,
        args.other_overrides,
        limits=getattr(args, "limits", None) or DEFAULT_LIMITS,
        max_nodes=args.max_nodes,
        max_params=args.max_params,
    )
    result = diff.compare(
        net,
        other,
        a_name=_label(args.spec, args.overrides),
        b_name=_label(other_path, args.other_overrides),
    )
    sys.stdout.write(diff.as_json(result) if args.format == "json" else diff.render(result))
    return 0
