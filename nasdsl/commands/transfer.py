"""``nasdsl transfer``: a parent variant's weights carried over to a child variant.

``nasdsl transfer --from PARENT --weights PARENT.safetensors --to CHILD -o CHILD.safetensors``.
The CLI compiles the child (``--to``, with ``--set``); :func:`run` compiles the
parent (with ``--from-set``), calls :func:`nasdsl.transfer.transfer_weights`,
prints what became of every tensor and writes the child's weights. With
``.safetensors`` in and out, torch is never imported; a ``.pt`` side needs it.
"""

from __future__ import annotations

import argparse
import json
import os

from nasdsl.errors import NasdslError, one_line, printable
from nasdsl.transfer import refuse_ensemble, transfer_weights
from nasdsl.weights import encode_weights

HELP = "carry a parent variant's weights over to a child variant: copied, adapted or initialised, tensor by tensor"

DESCRIPTION = (
    "Make the child spec's weights from the parent spec's trained weights. Each child tensor is copied (same "
    "name and shape, same meaning), adapted (a changed channel count or kernel: each channel keeps the values of "
    "the parent channel that means the same, traced through every op's channel map, and a kernel its centre; "
    "the rest is drawn by the child's init rules) or initialised by the child's init rules; parent "
    "tensors the child does not read are listed as dropped. --strict fails unless every tensor is copied. "
    "The output's extension chooses the format: .safetensors (no torch needed) or .pt (torch.save). "
    "See nasdsl/transfer.py and docs/design-space.md."
)

EXAMPLES = """\
nasdsl transfer --from specs/googlenet.yaml --weights googlenet.safetensors --to variant.yaml -o variant.safetensors
nasdsl transfer --from specs/googlenet.yaml --weights g.pt --to specs/googlenet.yaml --set aux_logits=false -o g2.pt
nasdsl transfer --from space.yaml --weights w.safetensors --to space.yaml --set width3=0.5 -o half.safetensors --strict
"""

#: output extensions and what writes them
FORMATS = (".safetensors", ".pt", ".pth")


class TransferUsageError(NasdslError):
    """A bad option of transfer (exit 2)."""


class _To(argparse.Action):
    """``--to CHILD``: the spec the CLI compiles (it stands where SPEC would)."""

    def __call__(self, parser, namespace, values, option_string=None):
        previous = getattr(namespace, "spec", None)
        if previous is not None and previous != values:
            namespace.both_specs = (previous, values)
        namespace.spec = values
        namespace.to = values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``transfer``'s options: the child spec comes with ``--to`` instead of SPEC."""
    for action in parser._actions:
        if action.dest == "spec" and not action.option_strings:
            action.nargs = "?"
            action.required = False
            action.default = argparse.SUPPRESS
            action.help = argparse.SUPPRESS
        if action.dest == "overrides":
            action.help = "override a value of the child spec (--to), e.g. aux_logits=false"
    parser.add_argument("--to", action=_To, required=True, metavar="CHILD_SPEC", help="the spec to make weights for")
    parser.add_argument("--from", dest="parent", required=True, metavar="PARENT_SPEC", help="the spec of the weights")
    parser.add_argument(
        "--from-set",
        dest="parent_overrides",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="override a value of the parent spec",
    )
    parser.add_argument(
        "--weights", required=True, metavar="FILE", help="the parent's weights: .safetensors or a torch.save state_dict"
    )
    parser.add_argument(
        "-o", "--output", required=True, metavar="FILE", help="the child's weights to write: .safetensors or .pt"
    )
    parser.add_argument("--strict", action="store_true", help="fail (exit 2) unless every tensor is copied as it is")
    parser.add_argument("--seed", type=int, default=0, help="the seed of the child's initialisation (default 0)")
    parser.add_argument(
        "--format", choices=("text", "json"), default="text", help="the report: text or json (default text)"
    )


def _text(result, parent: str, child: str) -> str:
    lines = [f"transfer {parent} -> {child}"]
    width = max((len(m.key) for m in result.report), default=0)
    for m in result.report:
        shape = "x".join(map(str, m.shape)) or "scalar"
        line = f"  {m.status:<11} {m.key:<{width}}  {shape}"
        if m.status == "adapted":
            line += f"  ({m.note}; {m.copied:,} of {m.size:,} values carried over)"
        elif m.note and m.status != "copied":
            line += f"  ({m.note})"
        lines.append(printable(line))
    counts = result.counts()
    lines.append(", ".join(f"{counts[s]} {s}" for s in counts))
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace, net) -> int:
    """Transfer the weights to the compiled child ``net`` and write them."""
    from nasdsl.api import DEFAULT_LIMITS, compile_spec
    from nasdsl.files import write_atomic

    if getattr(args, "both_specs", None):
        a, b = args.both_specs
        raise TransferUsageError(f"the child spec is given twice ({a}, {b}): give it once, with --to", path="--to")
    if os.path.splitext(args.output)[1].lower() not in FORMATS:
        raise TransferUsageError(
            f"cannot tell the format from '{args.output}': expected a name ending in .safetensors or .pt",
            path="--output",
        )
    parent = compile_spec(
        args.parent,
        args.parent_overrides,
        limits=getattr(args, "limits", None) or DEFAULT_LIMITS,
        max_nodes=args.max_nodes,
        max_params=args.max_params,
    )
    refuse_ensemble(parent, "parent", args.parent)
    result = transfer_weights(parent, args.weights, net, strict=args.strict, seed=args.seed)
    data = encode_weights(result.weights, args.output)
    write_atomic(args.output, data)
    if args.format == "json":
        report = {"parent": args.parent, "child": args.to, "output": args.output, **result.as_dict()}
        print(json.dumps(report, indent=2))
    else:
        print(_text(result, one_line(f"{args.parent} ({args.weights})"), one_line(args.to)), end="")
        print(f"wrote {one_line(args.output)} ({len(data):,} bytes)")
    return 0
