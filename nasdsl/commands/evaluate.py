"""``nasdsl evaluate``: top-1/top-5 of a model or an ensemble on an ImageFolder, with its spec's crops.

The crops come from the spec's ``evaluation`` section (``nasdsl/evaluation.py``;
one central crop when it has none) and are cut on the device in batches
(``nasdsl/tta.py``). Needs torch, torchvision and Pillow (imported only here).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time

from nasdsl import ir
from nasdsl.errors import one_line
from nasdsl.imagefolder import BadImage

HELP = "top-1/top-5 accuracy and images/s on an image folder, with the spec's multi-crop evaluation"

DESCRIPTION = (
    "Evaluate a model or an ensemble on an ImageFolder (one subfolder per class, classes in sorted order "
    "are labels 0, 1, ...). Each image is cut into the crops the spec's evaluation section asks for (the "
    "default: one central crop; --set evaluation.preset=10-crop or 144-crop), the crops are cut on the "
    "device in batches, and the outputs averaged. Prints top-1, top-5, images/s and crops/s; a progress "
    "bar on stderr. Weights: --weights FILE (a state_dict of the whole model), else an ensemble's "
    "members' own weights files; --random-weights uses the seeded initialisation (for trying it out)."
)

EXAMPLES = """\
nasdsl evaluate specs/googlenet_bn.yaml --weights googlenet.safetensors --data imagenet/val
nasdsl evaluate specs/ensembles/ilsvrc2014.yaml --data imagenet/val --device cuda --batch-size 4
nasdsl evaluate specs/googlenet.yaml --random-weights --data tiny/ --set evaluation.preset=10-crop
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, metavar="DIR", help="an ImageFolder: DIR/<class>/<image>")
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument("--weights", metavar="FILE", help="a state_dict (.safetensors or torch.save) of the model")
    weights.add_argument(
        "--random-weights", action="store_true", help="the seeded initialisation instead of trained weights"
    )
    parser.add_argument("--batch-size", type=_positive("--batch-size"), default=8, help="images a step (default 8)")
    parser.add_argument(
        "--crop-batch", type=_positive("--crop-batch"), default=256, help="crops a forward pass (default 256)"
    )
    parser.add_argument(
        "--workers",
        type=_positive("--workers", 0, MAX_WORKERS),
        default=2,
        help=f"loader processes, at most {MAX_WORKERS} (default 2)",
    )
    parser.add_argument("--limit", type=_positive("--limit"), default=None, help="evaluate N images, evenly spread")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, mps or xpu (default: cuda when available)")
    parser.add_argument("--format", choices=("text", "json"), default="text", help="the result as text or JSON")


#: the most loader processes: each is a process of its own, started at once (--workers 1000000
#: would try to start a million)
MAX_WORKERS = 256


def _positive(name: str, lo: int = 1, hi: int = 1 << 24):
    def check(text: str) -> int:
        if not (text.isascii() and text.isdecimal()) or not lo <= int(text) <= hi:
            most = f" and <= {hi}" if hi < 1 << 24 else ""
            raise argparse.ArgumentTypeError(f"{name}: expected an integer >= {lo}{most}, got {text!r}")
        return int(text)

    return check


class _Progress:
    """A bar rewritten in place on a terminal, else a line every 10 seconds (stderr)."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.every = 0.25 if self.tty else 10.0
        self.last = 0.0

    def show(self, done: int, total: int, text: str, final: bool = False) -> None:
        now = time.perf_counter()
        if not final and now - self.last < self.every:
            return
        self.last = now
        if self.tty:
            filled = int(24 * done / max(total, 1))
            line = f"[{'#' * filled}{'.' * (24 - filled)}] {done}/{total} {text}"
            sys.stderr.write("\r" + line[: shutil.get_terminal_size().columns - 1])
            if final:
                sys.stderr.write("\n")
        else:
            sys.stderr.write(f"{done}/{total} images, {text}\n")
        sys.stderr.flush()


def _convention(graph) -> tuple[float, bool]:
    """Pixels as the spec's input expects them: 0-255 BGR when its mean is above 1 (Caffe), else 0-1 RGB."""
    from nasdsl.ensemble_ir import is_ensemble, members

    graphs = [m.graph for m in members(graph)] if is_ensemble(graph) else [graph]
    kinds = set()
    for g in graphs:
        mean = ir.node(g, ir.info(g).input).attrs.get("mean")
        kinds.add(mean is not None and max(mean) > 1)
    if len(kinds) > 1:
        from nasdsl.errors import UsageError

        raise UsageError("the members expect different pixel ranges (some 0-255, some 0-1); cannot feed them one image")
    big = kinds.pop()
    return (255.0, True) if big else (1.0, False)


def _default_evaluation(net, shape):
    """The single crop bound to the model's input; an input it cannot crop is located at the spec's
    ``input.shape`` (an ensemble's members were bound as it compiled)."""
    from nasdsl.errors import NasdslError, SpecError
    from nasdsl.evaluation import DEFAULT

    try:
        return DEFAULT.bind(shape)
    except NasdslError as e:
        where = getattr(getattr(net, "spec", None), "input", None)
        loc = where.shape.loc if where is not None else None
        raise SpecError(e.message, location=loc, path="input.shape") from None


def _gives_probabilities(graph) -> bool:
    from nasdsl.ensemble_ir import combine

    if combine(graph) is not None:
        return combine(graph) == "probabilities"
    return ir.node(graph, ir.info(graph).outputs[0].node).op == "softmax"


def _state_dict(args: argparse.Namespace, net):
    from nasdsl.ensemble import CompiledEnsemble, member_state_dict
    from nasdsl.ensemble_ir import members
    from nasdsl.errors import UsageError
    from nasdsl.optimize import load_checked
    from nasdsl.weights import initial_weights

    if args.weights:
        return load_checked(args.weights, net.graph, max_bytes=args.max_memory)
    if args.random_weights:
        return initial_weights(net.graph)
    if isinstance(net, CompiledEnsemble):
        bare = [m.name for m in members(net.graph) if m.weights is None]
        if bare:
            raise UsageError(
                f"members without a weights file: {', '.join(bare)}; name one in the spec (weights:), pass "
                "--weights FILE for the whole ensemble, or --random-weights"
            )
        return member_state_dict(net)
    raise UsageError("evaluate needs trained weights: --weights FILE (or --random-weights to try it out)")


def run(args: argparse.Namespace, net) -> int:
    from nasdsl.errors import UsageError

    if not os.path.isdir(args.data):
        raise UsageError(f"--data: {one_line(args.data)} is not a folder (expected DIR/<class>/<image>)")
    try:
        import torch
        from torch.utils.data import DataLoader, Subset

        from nasdsl import tta
    except ImportError as e:  # pragma: no cover - torch is a dependency of evaluation
        raise UsageError(f"evaluate needs torch, torchvision and Pillow ({e})") from None
    try:
        import PIL  # noqa: F401
        import torchvision  # noqa: F401
    except ImportError as e:
        raise UsageError(f"evaluate reads images with torchvision and Pillow: pip install torchvision ({e})") from None
    g = net.graph
    shape = ir.node(g, ir.info(g).input).shape
    if len(shape) != 3 or shape[0] not in (1, 3):  # what an image of the folder becomes: grey or RGB, H x W
        raise UsageError(
            f"evaluate feeds images of 1 or 3 channels (C x H x W); the spec's input is {'x'.join(map(str, shape))}"
        )
    # a written section was bound as the spec compiled (logits of a softmax model refused there); the
    # default is bound here, and an error of it is the input's
    ev = ir.info(g).evaluation or _default_evaluation(net, shape)
    wanted = args.device if args.device != "auto" else "cuda" if torch.cuda.is_available() else "cpu"
    device = _device(torch, wanted)
    scale, bgr = _convention(g)
    _check_memory(ev, shape[0], args)
    data = tta.image_folder(
        args.data, ev, shape[0], scale, bgr, max_image_bytes=args.max_memory // (3 * args.batch_size)
    )
    if not data.samples:
        raise UsageError(f"--data: no images in {one_line(args.data)} (expected DIR/<class>/<image>)")
    for path in data.skipped:
        print(f"nasdsl: note: --data: not following {one_line(path)}: it leads out of the folder", file=sys.stderr)
    for path in data.ignored:
        print(f"nasdsl: note: --data: ignoring {one_line(path)}: a file, not a class folder", file=sys.stderr)
    out_shape = ir.node(g, ir.info(g).outputs[0].node).shape
    if len(out_shape) != 1 or len(data.classes) > out_shape[0]:
        raise UsageError(
            f"--data has {len(data.classes)} classes; the model gives {'x'.join(map(str, out_shape))} scores per image"
        )
    if args.limit is not None and args.limit < len(data):
        step = len(data) / args.limit
        data = Subset(data, [int(i * step) for i in range(args.limit)])
    from nasdsl.api import build_model

    model = build_model(net, weights=_state_dict(args, net)).eval().to(device)
    loader = DataLoader(data, batch_size=args.batch_size, num_workers=args.workers, collate_fn=tta.pad_batch)
    probabilities = _gives_probabilities(g)
    total, top1, top5 = len(data), 0, 0
    progress = _Progress()
    start = time.perf_counter()
    done = 0
    with torch.inference_mode():
        for batch in loader:
            if isinstance(batch, BadImage):
                raise batch.error()
            images, sizes, labels = (t.to(device) for t in batch)
            scores = tta.evaluate_batch(model, images, sizes, ev, probabilities=probabilities, chunk=args.crop_batch)
            if not bool(torch.isfinite(scores).all()):  # topk ranks NaN first: it would count as a guess
                first = done + int((~torch.isfinite(scores)).any(dim=1).nonzero()[0])
                raise UsageError(
                    f"the model gives NaN or infinite scores for image {first + 1} of {total}: top-1 would count "
                    "them as guesses (weights too large for the pixels, or a float overflow)"
                )
            top = scores.topk(min(5, scores.shape[1]), dim=1).indices
            hits = top == labels[:, None]
            top1 += int(hits[:, 0].sum())
            top5 += int(hits.any(dim=1).sum())
            done += len(labels)
            rate = done / max(time.perf_counter() - start, 1e-9)
            progress.show(done, total, f"top-1 {top1 / done:.4f} top-5 {top5 / done:.4f} {rate:.3g} images/s")
    seconds = time.perf_counter() - start
    rate = done / max(seconds, 1e-9)
    progress.show(done, total, f"{rate:.3g} images/s", final=True)
    result = {
        "images": done,
        "top1": top1 / max(done, 1),
        "top5": top5 / max(done, 1),
        "crops_per_image": ev.count,
        "images_per_s": rate,
        "crops_per_s": rate * ev.count,
        "seconds": seconds,
        "device": str(device),
        "evaluation": ev.describe(),
    }
    if args.format == "json":
        print(json.dumps(result, indent=2))
    else:
        print(
            f"{one_line(args.spec)}: {done:,} image{'s' if done != 1 else ''}, {ev.describe()}: "
            f"top-1 {result['top1']:.4f}, top-5 {result['top5']:.4f}; "
            f"{_rate(rate)} images/s, {_rate(rate * ev.count)} crops/s on {device} ({seconds:.1f} s)"
        )
    return 0


#: device kinds that compute (``meta`` and ``lazy`` hold no values: top-1 of nothing)
DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu")


def _device(torch, wanted: str):
    """The torch device named by ``--device``, checked to exist and to run a tensor."""
    from nasdsl.errors import UsageError

    try:
        device = torch.device(wanted)
    except RuntimeError:
        device = None
    if device is None or device.type not in DEVICE_TYPES:
        raise UsageError(
            f"--device: cannot use '{one_line(wanted)}' (expected {', '.join(DEVICE_TYPES)} or one of them "
            "with an index: cuda:1)"
        )
    try:
        torch.ones(1, device=device).sum().item()
    except (RuntimeError, AssertionError) as e:
        reason = str(e).splitlines()[0].split(". ")[0][:200] if str(e) else type(e).__name__
        raise UsageError(f"--device: cannot use '{one_line(wanted)}' ({reason})") from None
    return device


def _check_memory(ev, channels: int, args: argparse.Namespace) -> None:
    """Refuse, before any image is read, an evaluation whose batches cannot fit ``--max-memory``
    (``scales: [8192]`` on a batch of 8: gigabytes per batch), at the spec's evaluation section."""
    from nasdsl.errors import LimitError
    from nasdsl.tta import batch_bytes

    need = batch_bytes(ev, channels, args.batch_size, args.crop_batch)
    if need > args.max_memory:
        raise LimitError(
            f"evaluating batches of {args.batch_size} images at the scale {max(ev.scales)} needs about "
            f"{need / (1 << 30):.1f} GiB of memory, above the limit of {args.max_memory / (1 << 30):.1f} GiB "
            "(smaller scales or --batch-size, or raise it with --max-memory)",
            location=ev.loc,
            path="evaluation.scales",
        )


def _rate(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}" if math.isfinite(x) else "-"
