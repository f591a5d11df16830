#!/usr/bin/env python
"""Train a model that nasdsl generates from a spec, on one device or many (torchrun + DDP).

    python examples/train.py specs/googlenet.yaml --data /data/imagenet/train --val-data /data/imagenet/val
    torchrun --nproc_per_node 8 examples/train.py specs/googlenet.yaml --data ... --amp bf16

The model is the spec's generated PyTorch class (``generate_source`` then ``load_source``), trained with
its own ``loss`` (every training output, auxiliary heads included, weighted as the spec says). Data is an
ImageFolder (torchvision, imported only when a folder is given) or a seeded synthetic data set. The
script runs unchanged under ``torchrun``: it reads WORLD_SIZE, RANK and LOCAL_RANK, joins the process
group (nccl on CUDA, gloo on the CPU), shards the data with DistributedSampler and wraps the model in
DistributedDataParallel. docs/training.md is the guide; this file depends on torch, nasdsl and, for
ImageFolder data only, torchvision.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import itertools
import math
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset

import nasdsl
from nasdsl import ir
from nasdsl.backends.pytorch import generate_source, load_source
from nasdsl.commands.evaluate import MAX_WORKERS
from nasdsl.weights import TRAIN_CHECKPOINT_KEYS

EPILOG = """\
examples:
  # a smoke run on generated data, on the CPU
  python examples/train.py specs/googlenet.yaml --set num_classes=10 --synthetic 256 \\
      --synthetic-val 64 --batch-size 8 --epochs 1 --steps 10 --lr 0.01 --device cpu
  # one GPU, an ImageFolder, bf16 autocast, checkpoints every epoch
  python examples/train.py specs/googlenet.yaml --data /data/imagenet/train \\
      --val-data /data/imagenet/val --amp bf16 --checkpoint-dir runs/googlenet
  # eight GPUs on one machine (global batch = 8 x --batch-size)
  torchrun --nproc_per_node 8 examples/train.py specs/googlenet.yaml --data ... --amp bf16
  # continue a run
  torchrun --nproc_per_node 8 examples/train.py specs/googlenet.yaml --data ... \\
      --resume runs/googlenet/last.pt --checkpoint-dir runs/googlenet
  # fine-tune torchvision's weights on 10 classes (the new classifier starts as the spec says)
  python examples/train.py specs/resnet50.yaml --set num_classes=10 --weights resnet50.pth --data ...

Input convention: the generated model subtracts the spec's input mean (and divides by its std) itself,
so the script only feeds pixels in the range and channel order the spec expects: --pixel-scale 255 and
--channel-order bgr when the spec's mean is above 1 (Caffe's GoogLeNet: BGR, 0-255), else 1 and rgb
(torchvision's convention). See docs/training.md.
"""


# --------------------------------------------------------------------------- command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="train.py",
        allow_abbrev=False,  # a prefix (--synth, --lr) would be taken for an option: options are written whole
        description="Train a nasdsl-generated model, auxiliary losses included, on an ImageFolder or on synthetic\n"
        "data. Runs unchanged under torchrun, with DistributedDataParallel.",
        epilog=EPILOG,
        formatter_class=lambda prog: _HelpFormatter(prog, max_help_position=32, width=110),
    )
    p.add_argument("spec", help="the YAML spec of the model")
    p.add_argument(
        "--set",
        metavar="K=V",
        action="append",
        default=[],
        help="override a spec value, as nasdsl's --set (num_classes=10); repeatable",
    )
    g = p.add_argument_group("data")
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", metavar="DIR", help="training images: an ImageFolder (one subfolder per class)")
    src.add_argument("--synthetic", metavar="N", type=int, help="train on N generated images (seeded, learnable)")
    g.add_argument("--val-data", metavar="DIR", help="validation ImageFolder; top-1/top-5 after each epoch")
    g.add_argument("--synthetic-val", metavar="N", type=int, default=0, help="validate on N generated images")
    g.add_argument(
        "--pixel-scale",
        choices=["auto", "1", "255"],
        default="auto",
        help="pixel range fed to the model: [0,1] or [0,255]; auto: 255 if the spec's input mean is above 1",
    )
    g.add_argument(
        "--channel-order",
        choices=["auto", "rgb", "bgr"],
        default="auto",
        help="channel order of 3-channel images; auto: bgr (Caffe's) when the pixel scale is 255, else rgb",
    )
    g.add_argument(
        "--workers",
        metavar="N",
        type=int,
        default=min(4, os.cpu_count() or 1),
        help=f"data loading processes per training process, at most {MAX_WORKERS}",
    )
    t = p.add_argument_group("training")
    t.add_argument("--epochs", metavar="E", type=int, default=90, help="epochs; the LR schedule spans them")
    t.add_argument(
        "--steps",
        metavar="S",
        type=int,
        default=None,
        help="stop after this many optimizer steps in all (smoke runs); the LR schedule still spans --epochs",
    )
    t.add_argument("--batch-size", metavar="B", type=int, default=32, help="images per process per step")
    t.add_argument(
        "--lr",
        metavar="LR",
        type=float,
        default=0.1,
        help="peak learning rate (as given: scale it with the global batch)",
    )
    t.add_argument("--momentum", metavar="M", type=float, default=0.9, help="SGD momentum")
    t.add_argument("--nesterov", action="store_true", help="Nesterov momentum")
    t.add_argument("--weight-decay", metavar="WD", type=float, default=1e-4, help="L2 weight decay")
    t.add_argument(
        "--no-bias-decay", action="store_true", help="no weight decay on biases and BatchNorm parameters (1-D tensors)"
    )
    t.add_argument("--schedule", choices=["cosine", "step"], default="cosine", help="LR schedule, applied per step")
    t.add_argument(
        "--lr-step-epochs",
        metavar="E",
        type=float,
        default=30,
        help="step schedule: multiply by --lr-gamma every E epochs",
    )
    t.add_argument("--lr-gamma", metavar="G", type=float, default=0.1, help="step schedule: the factor")
    t.add_argument(
        "--warmup-steps", metavar="S", type=int, default=0, help="linear warm-up from 0 over this many steps"
    )
    t.add_argument(
        "--amp", choices=["none", "bf16", "fp16"], default="none", help="autocast dtype (fp16: CUDA, with a GradScaler)"
    )
    t.add_argument("--channels-last", action="store_true", help="NHWC memory format (faster convolutions on GPUs)")
    t.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm across processes (CUDA, distributed)")
    t.add_argument(
        "--seed", metavar="N", type=int, default=0, help="seed of initialisation, data order, augmentation and dropout"
    )
    t.add_argument("--deterministic", action="store_true", help="deterministic algorithms only (slower on GPUs)")
    t.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto: cuda when available")
    c = p.add_argument_group("checkpoints and output")
    c.add_argument("--checkpoint-dir", metavar="DIR", help="rank 0 writes DIR/last.pt each epoch and at the end")
    c.add_argument("--save-every", type=int, default=0, metavar="E", help="also keep DIR/epochN.pt every E epochs")
    c.add_argument("--resume", metavar="PATH", help="continue from a checkpoint (model, optimizer, schedule, step)")
    c.add_argument(
        "--weights",
        metavar="PATH",
        help="start from these weights (a state_dict: .safetensors or torch.save; torchvision's for its specs); "
        "tensors whose shape differs, such as a classifier for another --set num_classes, keep their "
        "initialisation",
    )
    c.add_argument("--dump-weights", metavar="PATH", help="each rank writes its final state_dict to PATH.rank{r}")
    c.add_argument(
        "--metrics-json",
        metavar="PATH",
        help="rank 0 writes the final figures to PATH as a JSON object: top1, top5 (validation, when there is "
        "some), train_loss (the last epoch's mean), steps, seconds (what nasdsl search --evaluate reads)",
    )
    c.add_argument(
        "--log-every",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds between progress lines when stderr is not a TTY",
    )
    args = p.parse_args(argv)
    counts = [("epochs", 1), ("batch_size", 1), ("workers", 0), ("steps", 0), ("synthetic", 1)]
    counts += [("synthetic_val", 0), ("warmup_steps", 0), ("save_every", 0)]
    for name, least in counts:
        value = getattr(args, name)
        if value is not None and value < least:
            p.error(f"--{name.replace('_', '-')} must be at least {least}")
    # NaN passes every comparison: a NaN momentum or decay trained on silently into NaN weights
    for name, (lo, hi, closed, text) in _RANGES.items():
        value = getattr(args, name)
        if not (math.isfinite(value) and (lo <= value if closed else lo < value) and value <= hi):
            p.error(f"--{name.replace('_', '-')}: expected a finite number {text}, got {value}")
    if args.workers > MAX_WORKERS:  # each a process, started at once: 100000 would try to start them all
        p.error(f"--workers: expected at most {MAX_WORKERS} loader processes, got {args.workers:,}")
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available")
    if args.amp == "fp16" and args.device != "cuda":
        p.error("--amp fp16 needs CUDA (use --amp bf16 on the CPU)")
    if args.sync_bn and args.device != "cuda":
        p.error("--sync-bn needs CUDA")
    if args.weights and args.resume:
        p.error("--weights and --resume both set the model's weights: give one")
    return args


#: the float options: lowest, highest, whether the lowest is allowed, the range in words
_RANGES = {
    "lr": (0.0, math.inf, False, "> 0"),
    "momentum": (0.0, 1.0, True, "from 0 to 1"),
    "weight_decay": (0.0, math.inf, True, ">= 0"),
    "lr_step_epochs": (0.0, math.inf, False, "> 0"),
    "lr_gamma": (0.0, math.inf, False, "> 0"),
    "log_every": (0.0, math.inf, True, ">= 0"),
}


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Defaults shown (those that say something), epilog kept as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default not in (None, False, [], argparse.SUPPRESS) and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


# --------------------------------------------------------------------------- distributed set-up


@dataclass(frozen=True)
class Env:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    distributed: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_kind: str) -> tuple[Env, torch.device]:
    """Join torchrun's process group when its variables are set; pick this process's device."""
    launched = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    env = Env()
    if launched:
        env = Env(
            rank=int(os.environ["RANK"]),
            local_rank=int(os.environ.get("LOCAL_RANK", 0)),
            world_size=int(os.environ["WORLD_SIZE"]),
            distributed=True,
        )
    if device_kind == "cuda":
        device = torch.device("cuda", env.local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if env.distributed:
        if device.type == "cuda":
            dist.init_process_group(backend="nccl", device_id=device)
        else:
            dist.init_process_group(backend="gloo")
    return env, device


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any parts (independent streams for data, dropout, loaders, ...)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)  # every device too
    with contextlib.suppress(ImportError):
        import numpy

        numpy.random.seed(seed % 2**32)


# --------------------------------------------------------------------------- data


class PixelConvention:
    """Turns ToTensor's RGB in [0, 1] into what the spec's input expects (picklable for workers)."""

    def __init__(self, scale: float, bgr: bool) -> None:
        self.scale, self.bgr = scale, bgr

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        if self.bgr and t.shape[0] == 3:
            t = t.flip(0)
        return t * self.scale if self.scale != 1 else t


class SyntheticImages(Dataset):
    """N generated images; image and label are a pure function of (seed, split, index).

    Each class has a fixed coarse colour pattern and every image is its class's pattern plus noise, so
    a model can learn it (the loss falls) and validation accuracy means something.
    """

    def __init__(self, n: int, shape: tuple[int, int, int], num_classes: int, seed: int, split: str, scale: float):
        self.n, self.shape, self.num_classes = n, shape, num_classes
        self.seed, self.split, self.scale = seed, split, scale

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not 0 <= index < self.n:
            raise IndexError(index)
        c, h, w = self.shape
        g = torch.Generator().manual_seed(derive_seed(self.seed, "synthetic", self.split, index))
        label = int(torch.randint(self.num_classes, (), generator=g))
        pg = torch.Generator().manual_seed(derive_seed(self.seed, "class-pattern", label))
        pattern = torch.rand(1, c, 4, 4, generator=pg)
        pattern = F.interpolate(pattern, size=(h, w), mode="nearest")[0]
        noise = torch.rand(c, h, w, generator=g)
        return (0.6 * pattern + 0.4 * noise) * self.scale, label


def image_folder(root: str, shape: tuple[int, int, int], train: bool, convention: PixelConvention) -> Dataset:
    try:
        from torchvision import transforms
    except ImportError as e:  # pragma: no cover - torchvision is in the test extra
        raise InputError(f"--data and --val-data need torchvision ({e})") from None
    c, h, w = shape
    if c not in (1, 3):
        raise InputError(f"ImageFolder data gives 1 or 3 channels; the spec's input has {c}")
    steps: list[Any] = []
    if train:
        steps += [transforms.RandomResizedCrop((h, w), antialias=True), transforms.RandomHorizontalFlip()]
    else:  # resize the short side by 256/224 of the crop, then the central crop
        steps += [transforms.Resize(round(min(h, w) * 256 / 224), antialias=True), transforms.CenterCrop((h, w))]
    if c == 1:
        steps.append(transforms.Grayscale(1))
    steps += [transforms.ToTensor(), convention]
    from nasdsl.imagefolder import list_folder
    from nasdsl.tta import FolderImages

    option = "--data" if train else "--val-data"
    try:  # walked once by nasdsl's rules: no link followed in circles or out of the folder, regular files only
        listing = list_folder(root, option)
    except nasdsl.NasdslError as e:
        raise InputError(e.message) from None
    from nasdsl.errors import printable

    for path in listing.skipped:
        print(f"train.py: note: {option}: not following {printable(path)}: it leads out of the folder", file=sys.stderr)
    for path in listing.ignored:
        print(f"train.py: note: {option}: ignoring {printable(path)}: a file, not a class folder", file=sys.stderr)
    if not listing.samples:
        raise InputError(f"{option}: no images in {root} (expected DIR/<class>/<image>)")
    return FolderImages(listing, FolderTransform(transforms.Compose(steps)))


class FolderTransform:
    """An image of a folder as RGB, then ``steps`` (picklable for loader workers)."""

    def __init__(self, steps) -> None:
        self.steps = steps

    def __call__(self, image, path: str = "") -> torch.Tensor:
        return self.steps(image.convert("RGB"))


def listed_classes(classes: list[str], most: int = 8) -> str:
    """Class names for a message: the first ``most`` of them, and how many more."""
    shown = ", ".join(classes[:most])
    return shown + (f" and {len(classes) - most:,} more" if len(classes) > most else "")


def collate(items: list) -> Any:
    """torch's default collate, or the first image of the batch that could not be read (it
    is reported by :func:`checked` in the main process, naming the file)."""
    from torch.utils.data import default_collate

    from nasdsl.imagefolder import BadImage

    bad = next((x for x, _ in items if isinstance(x, BadImage)), None)
    return bad if bad is not None else default_collate(items)


def checked(loader: DataLoader):
    """The batches of ``loader``; an image that could not be read is an error naming the file."""
    from nasdsl.imagefolder import BadImage

    for batch in loader:
        if isinstance(batch, BadImage):
            raise InputError(batch.error().message)
        yield batch


class SkipFirst(Sampler[int]):
    """A DistributedSampler whose first ``skip`` indices are dropped (resuming in the middle of an epoch)."""

    def __init__(self, sampler: DistributedSampler) -> None:
        self.sampler, self.skip = sampler, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.sampler.set_epoch(epoch)
        self.skip = skip

    def __iter__(self):
        return itertools.islice(iter(self.sampler), self.skip, None)

    def __len__(self) -> int:
        return len(self.sampler) - self.skip


# --------------------------------------------------------------------------- model


def warm_start(model: nn.Module, net: nasdsl.Compiled, path: str) -> str:
    """Load the tensors of a state_dict file whose names and shapes the model has (fine-tuning:
    a classifier for another number of classes keeps its initialisation), by the command line's
    rules (nasdsl.weights: the same reader, the same checks; integers for floating point
    parameters are refused, not converted); a file that fits nothing is an error. Returns a
    line saying what was loaded and what was not."""
    from nasdsl.weights import fit_weights, load_weights

    try:
        fit = fit_weights(net.graph, load_weights(path), source=path)
    except nasdsl.NasdslError as e:
        raise InputError(e.message) from None
    own = model.state_dict()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in fit.arrays.items()}, strict=False)

    def listed(names: tuple[str, ...]) -> str:
        return ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")

    parts = [f"weights from {path}: {len(fit.arrays)} of the model's {len(own)} tensors"]
    if fit.reshaped:
        parts.append(f"another shape there, initialised here: {listed(fit.reshaped)}")
    if fit.missing:
        parts.append(f"not in the file, initialised here: {listed(fit.missing)}")
    if fit.unknown:
        parts.append(f"in the file, not in the model: {listed(fit.unknown)}")
    return "; ".join(parts)


#: what a checkpoint of this script holds (``checkpoint`` in ``train``): nasdsl's weights reader
#: takes such a file's ``model`` entry (``nasdsl evaluate --weights runs/x/last.pt``)
CHECKPOINT_KEYS = TRAIN_CHECKPOINT_KEYS


def read_checkpoint(path: str, net: nasdsl.Compiled, model: nn.Module, optimizer, scheduler, scaler) -> dict[str, Any]:
    """Restore model, optimizer, schedule and scaler from a checkpoint this script wrote; a file
    that is not one (a plain state_dict, other keys, a device, a pickle of code) is an error
    naming the file, never a traceback. Returns the checkpoint."""
    from nasdsl.errors import WeightsError
    from nasdsl.weights import (
        check_weights,
        file_format,
        read_regular,
        refusal,
    )  # the reader and rules of weights files

    try:
        data = read_regular(path)
    except WeightsError as e:
        raise InputError(f"--resume: {e.message}") from None
    if file_format(data) == "safetensors":
        raise InputError(
            f"--resume: '{path}' is a safetensors file of weights, not a checkpoint of train.py; "
            "to start from weights alone use --weights"
        )
    try:
        import io
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ckpt = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch.load raises many kinds for a bad file
        raise InputError(f"--resume: cannot read '{path}': {refusal(e)}") from None
    if not isinstance(ckpt, dict) or not all(k in ckpt for k in CHECKPOINT_KEYS):
        what = (
            "a state_dict of tensors"
            if isinstance(ckpt, dict) and all(isinstance(v, torch.Tensor) for v in ckpt.values())
            else f"a {type(ckpt).__name__}"
        )
        missing = [k for k in CHECKPOINT_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
        raise InputError(
            f"--resume: '{path}' is not a checkpoint of train.py (it holds {what}; missing "
            f"{', '.join(missing)}); to start from weights alone use --weights"
        )
    try:  # the model's tensors by the rules of --weights and of the command line
        check_weights(net.graph, net.graph, ckpt["model"])
    except nasdsl.NasdslError as e:
        raise InputError(f"--resume: '{path}': {e.message}") from None
    try:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        for key in ("step", "epoch", "batch"):
            if isinstance(ckpt[key], bool) or not isinstance(ckpt[key], int) or ckpt[key] < 0:
                raise ValueError(f"'{key}' is {ckpt[key]!r}, expected an integer >= 0")
    except KeyError as e:
        raise InputError(
            f"--resume: '{path}' does not fit this run: no entry {e.args[0]!r} where one is needed"
        ) from None
    except (RuntimeError, ValueError, TypeError) as e:
        reason = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise InputError(f"--resume: '{path}' does not fit this run: {reason}") from None
    return ckpt


def make_model(net: nasdsl.Compiled) -> nn.Module:
    """An instance of the spec's generated class: the source `nasdsl compile --to pytorch` writes, imported.
    Its constructor applies the spec's initialisation (_init_parameters) with torch's current RNG."""
    return getattr(load_source(generate_source(net)), net.spec.name)()


def main_output(out: Any) -> torch.Tensor:
    """The model's main output: the tensor itself, or the first field of its outputs NamedTuple."""
    return out if isinstance(out, torch.Tensor) else out[0]


def probe(model: nn.Module, shape: tuple[int, int, int]) -> tuple[int, list[str]]:
    """Run a copy of the model once in training mode: the number of classes of its main output and the
    parameters its loss leaves without a gradient (DDP needs find_unused_parameters for those)."""
    m = copy.deepcopy(model).cpu().train()
    x = torch.rand(2, *shape)
    out = m(x)
    logits = main_output(out)
    if logits.dim() != 2:
        raise InputError(f"train.py trains classifiers: the main output has shape {tuple(logits.shape)}, not (N, K)")
    m.loss(out, torch.zeros(2, dtype=torch.long)).backward()
    unused = [n for n, p in m.named_parameters() if p.requires_grad and p.grad is None]
    return logits.shape[1], unused


class Schedule:
    """LR factor of a step: linear warm-up, then cosine to 0 or a step decay (LambdaLR saves its fields)."""

    def __init__(self, kind: str, total: int, warmup: int, step_size: int, gamma: float) -> None:
        self.kind, self.total, self.warmup = kind, max(total, 1), warmup
        self.step_size, self.gamma = max(step_size, 1), gamma

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        if self.kind == "step":
            return self.gamma ** (step // self.step_size)
        span = max(self.total - self.warmup, 1)
        return 0.5 * (1 + math.cos(math.pi * min(step - self.warmup, span) / span))


# --------------------------------------------------------------------------- progress


class Progress:
    """A progress line on stderr, rank 0 only: rewritten in place at most 4 times a second on a TTY,
    else a plain line every --log-every seconds."""

    def __init__(self, enabled: bool, log_every: float, stream=None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.interval = 0.25 if self.tty else log_every
        self.last = 0.0
        self.width = 0

    def due(self) -> bool:
        return self.enabled and time.perf_counter() - self.last >= self.interval

    def show(self, text: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        self.last = time.perf_counter()
        if self.tty:
            filled = int(24 * done / max(total, 1))
            line = f"[{'#' * filled}{'.' * (24 - filled)}] {text}"[: shutil.get_terminal_size().columns - 1]
            self.stream.write("\r" + line.ljust(self.width))
            self.width = len(line)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def end(self) -> None:
        if self.tty and self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()
            self.width = 0


def fmt_rate(images_per_s: float) -> str:
    return f"{images_per_s:,.0f} img/s" if images_per_s >= 100 else f"{images_per_s:.3g} img/s"


def fmt_time(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


# --------------------------------------------------------------------------- checkpoints


def atomic_save(obj: object, path: Path) -> None:
    """torch.save to a temporary file beside ``path``, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_metrics(path: Path, result: dict[str, Any], seconds: float) -> None:
    """The run's final figures as one flat JSON object (for a search's evaluator), written atomically."""
    import json

    metrics: dict[str, Any] = {"steps": result["step"], "seconds": round(seconds, 3)}
    if result["train_loss"]:
        metrics["train_loss"] = result["train_loss"][-1]
    if result["val"]:
        metrics |= {"top1": result["val"][-1]["top1"], "top5": result["val"][-1]["top5"]}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(json.dumps(metrics, indent=1) + "\n")
    os.replace(tmp, path)


def sync_buffers(model: nn.Module, env: Env) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics). DDP broadcasts them at the start
    of each forward, so after the last step each rank holds statistics updated by its own batch."""
    if env.distributed:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device, autocast, env: Env, channels_last: bool):
    """Top-1/top-5 of the main output on this rank's shard, summed over ranks."""
    was_training = model.training
    model.eval()
    stats = torch.zeros(3, dtype=torch.float64, device=device)  # top-1 hits, top-5 hits, images
    for x, y in checked(loader):
        x = x.to(
            device, non_blocking=True, memory_format=torch.channels_last if channels_last else torch.preserve_format
        )
        y = y.to(device, non_blocking=True)
        with autocast():
            scores = main_output(model(x)).float()
        top = scores.topk(min(5, scores.shape[1]), dim=1).indices
        hits = top == y[:, None]
        stats += torch.stack([hits[:, 0].sum(), hits.any(dim=1).sum(), torch.tensor(len(y), device=device)])
    if env.distributed:
        dist.all_reduce(stats)
    model.train(was_training)
    n = max(int(stats[2]), 1)
    return {"top1": float(stats[0]) / n, "top5": float(stats[1]) / n, "images": int(stats[2])}


# --------------------------------------------------------------------------- main


class InputError(SystemExit):
    """Bad input (the spec, a weights or checkpoint file, the data): ``train.py: error: ...`` on
    stderr and exit code 2, as nasdsl's command line does, never a traceback."""

    def __init__(self, message: str) -> None:
        super().__init__(2)
        self.message = message

    def __str__(self) -> str:
        return self.message


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Train; returns a summary (rank 0's view): steps, per-epoch mean losses, validation results."""
    args = parse_args(argv)
    env, device = setup_distributed(args.device)
    try:
        started = time.perf_counter()
        result = train(args, env, device)
        if args.metrics_json and env.main:
            write_metrics(Path(args.metrics_json), result, time.perf_counter() - started)
        return result
    except InputError as e:
        from nasdsl.errors import printable

        print(f"train.py: error: {printable(e.message)}", file=sys.stderr, flush=True)
        raise
    finally:
        if env.distributed:
            dist.destroy_process_group()


def train(args: argparse.Namespace, env: Env, device: torch.device) -> dict[str, Any]:
    def say(*parts: object) -> None:
        if env.main:
            print(*parts, flush=True)

    seed_everything(args.seed)
    if args.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    # the model: the spec's generated class, initialised by its constructor under the seed
    try:
        net = nasdsl.compile_spec(args.spec, args.set)
        model = make_model(net)
    except nasdsl.NasdslError as e:
        raise InputError(e.format()) from None
    if args.weights:
        say(warm_start(model, net, args.weights))
    shape = tuple(ir.node(net.graph, ir.info(net.graph).input).shape)
    num_classes, unused = probe(model, shape)
    mean = getattr(model, "input_mean", None)
    spec_0_255 = mean is not None and float(mean.max()) > 1
    scale = {"auto": 255.0 if spec_0_255 else 1.0, "1": 1.0, "255": 255.0}[args.pixel_scale]
    bgr = {"auto": scale == 255.0, "rgb": False, "bgr": True}[args.channel_order]
    convention = PixelConvention(scale, bgr)
    n_params = sum(p.numel() for p in model.parameters())
    say(
        f"model {net.spec.name}: {n_params:,} parameters, input {shape}, {num_classes} classes; "
        f"pixels in [0, {scale:g}], {'BGR' if bgr else 'RGB'}"
    )
    if unused:
        names = ", ".join(unused[:3]) + (", ..." if len(unused) > 3 else "")
        say(f"DDP: {len(unused)} parameters get no gradient from the loss ({names}): find_unused_parameters=True")
    else:
        say("DDP: every parameter gets a gradient from the loss: find_unused_parameters=False")

    # data
    if args.data:
        train_set = image_folder(args.data, shape, True, convention)
        classes = len(train_set.classes)
        if classes > num_classes:
            raise InputError(
                f"{args.data} has {classes} classes, the model {num_classes}: add --set num_classes={classes}"
            )
    else:
        train_set = SyntheticImages(args.synthetic, shape, num_classes, args.seed, "train", scale)
    val_set = None
    if args.val_data:
        val_set = image_folder(args.val_data, shape, False, convention)
        classes = len(val_set.classes)
        if args.data and val_set.classes != train_set.classes:  # a class's label is its place in sorted order
            raise InputError(
                f"--val-data: {args.val_data} has the classes {listed_classes(val_set.classes)}; --data has "
                f"{listed_classes(train_set.classes)} (the same class folders give the same labels)"
            )
        if classes > num_classes:
            raise InputError(f"--val-data: {args.val_data} has {classes} classes, the model {num_classes}")
    elif args.synthetic_val:
        val_set = SyntheticImages(args.synthetic_val, shape, num_classes, args.seed, "val", scale)

    sampler = SkipFirst(
        DistributedSampler(
            train_set, num_replicas=env.world_size, rank=env.rank, shuffle=True, seed=args.seed, drop_last=True
        )
    )
    steps_per_epoch = len(sampler.sampler) // args.batch_size
    global_batch = args.batch_size * env.world_size
    if steps_per_epoch == 0:
        n = len(train_set)
        raise InputError(
            f"{'--data' if args.data else '--synthetic'}: {n:,} image{' does' if n == 1 else 's do'} not fill one "
            f"global batch of {global_batch} ({env.world_size} process(es) x --batch-size {args.batch_size}); "
            "lower --batch-size"
        )
    loader_kw: dict[str, Any] = {
        "num_workers": args.workers,
        "pin_memory": device.type == "cuda",
        "collate_fn": collate,
    }
    if args.workers:
        loader_kw |= {"persistent_workers": True, "prefetch_factor": 4}
    loader = DataLoader(
        train_set,
        batch_size=args.batch_size,
        sampler=sampler,
        drop_last=True,
        generator=torch.Generator().manual_seed(derive_seed(args.seed, "loader", env.rank)),
        **loader_kw,
    )
    val_loader = None
    if val_set is not None:  # a plain strided shard: no padding, so every image counts once
        shard = Subset(val_set, range(env.rank, len(val_set), env.world_size))
        val_loader = DataLoader(shard, batch_size=args.batch_size, shuffle=False, **loader_kw)
    backend = dist.get_backend() if env.distributed else "no process group"
    say(
        f"world size {env.world_size} ({backend}, {device.type}), "
        f"batch {args.batch_size} per process, global batch {global_batch}; "
        f"{len(train_set)} training images, {steps_per_epoch} steps per epoch"
    )

    # optimisation
    model.to(device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    decay = [p for p in model.parameters() if not (args.no_bias_decay and p.dim() <= 1)]
    no_decay = [p for p in model.parameters() if args.no_bias_decay and p.dim() <= 1]
    groups = [{"params": decay}] + ([{"params": no_decay, "weight_decay": 0.0}] if no_decay else [])
    optimizer = torch.optim.SGD(
        groups, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay, nesterov=args.nesterov
    )
    total_steps = args.epochs * steps_per_epoch
    schedule = Schedule(
        args.schedule, total_steps, args.warmup_steps, round(args.lr_step_epochs * steps_per_epoch), args.lr_gamma
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    scaler = torch.amp.GradScaler(device.type, enabled=args.amp == "fp16")
    amp_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.amp]

    def autocast():
        if amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=amp_dtype)

    step, start_epoch, start_batch = 0, 0, 0
    if args.resume:
        ckpt = read_checkpoint(args.resume, net, model, optimizer, scheduler, scaler)
        step, start_epoch, start_batch = ckpt["step"], ckpt["epoch"], ckpt["batch"]
        if ckpt.get("global_batch") != global_batch or ckpt.get("steps_per_epoch") != steps_per_epoch:
            say(
                f"warning: the checkpoint was written with global batch {ckpt.get('global_batch')} and "
                f"{ckpt.get('steps_per_epoch')} steps per epoch, this run has {global_batch} and {steps_per_epoch}: "
                "data order and schedule continue only approximately"
            )
            start_batch = min(start_batch * ckpt.get("global_batch", global_batch) // global_batch, steps_per_epoch)
        if start_batch >= steps_per_epoch:
            start_epoch, start_batch = start_epoch + 1, 0
        say(f"resumed from {args.resume}: step {step}, epoch {start_epoch + 1}, batch {start_batch}")

    train_model: nn.Module = model
    if env.distributed:
        if args.sync_bn:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            train_model = model
        train_model = DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=bool(unused),
        )
    max_steps = total_steps if args.steps is None else min(args.steps, total_steps)

    def checkpoint(epoch: int, batch: int, name: str = "last.pt") -> None:
        if not (args.checkpoint_dir and env.main):
            return
        state = {
            "model": cpu_state(model),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "epoch": epoch,
            "batch": batch,
            "step": step,
            "global_batch": global_batch,
            "steps_per_epoch": steps_per_epoch,
            "model_class": net.spec.name,
            "args": {k: (list(v) if isinstance(v, list) else v) for k, v in vars(args).items()},
        }
        atomic_save(state, Path(args.checkpoint_dir) / name)

    progress = Progress(env.main, args.log_every)
    result: dict[str, Any] = {
        "world_size": env.world_size,
        "global_batch": global_batch,
        "steps_per_epoch": steps_per_epoch,
        "num_classes": num_classes,
        "pixel_scale": scale,
        "bgr": bgr,
        "find_unused_parameters": bool(unused),
        "start_step": step,
        "train_loss": [],
        "val": [],
    }
    say(f"training: {max_steps - step} steps to go (step {step} of {max_steps}, over {args.epochs} epoch(s))")
    train_model.train()
    saved_at = step if args.resume else -1
    epoch, batch = start_epoch, start_batch
    memory_format = torch.channels_last if args.channels_last else torch.preserve_format
    t_start = time.perf_counter()
    while epoch < args.epochs and step < max_steps:
        sampler.set_epoch(epoch, skip=batch * args.batch_size)
        loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        window_sum = torch.zeros((), device=device, dtype=torch.float64)
        window_n, seen = 0, 0
        t_epoch = t_window = time.perf_counter()
        for x, y in checked(loader):
            x = x.to(device, non_blocking=True, memory_format=memory_format)
            y = y.to(device, non_blocking=True)
            # dropout and other randomness: a stream per (seed, rank, step), so a resumed run repeats it
            torch.manual_seed(derive_seed(args.seed, "step", env.rank, step))
            optimizer.zero_grad(set_to_none=True)
            with autocast():
                out = train_model(x)
                loss = model.loss(out, y)  # the spec's weighted sum over the training outputs
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step, batch, seen = step + 1, batch + 1, seen + 1
            loss_sum += loss.detach()
            window_sum += loss.detach()
            window_n += 1
            if progress.due() or (step == max_steps and progress.enabled):
                now = time.perf_counter()
                rate = window_n * global_batch / max(now - t_window, 1e-9)
                eta = (max_steps - step) * (now - t_start) / max(step - result["start_step"], 1)
                progress.show(
                    f"epoch {epoch + 1}/{args.epochs} step {batch}/{steps_per_epoch} (total {step}/{max_steps}) "
                    f"loss {float(window_sum) / window_n:.4f} lr {scheduler.get_last_lr()[0]:.4g} "
                    f"{fmt_rate(rate)} eta {fmt_time(eta)}",
                    batch,
                    steps_per_epoch,
                )
                window_sum.zero_()
                window_n, t_window = 0, now
            if step >= max_steps:
                break
        progress.end()
        sync_buffers(model, env)
        # the epoch's mean loss over every rank (all ranks reach this point after the same number of steps)
        totals = torch.stack([loss_sum, torch.tensor(float(seen), device=device, dtype=torch.float64)])
        if env.distributed:
            dist.all_reduce(totals)
        mean_loss = float(totals[0] / totals[1].clamp(min=1))
        elapsed = time.perf_counter() - t_epoch
        if not math.isfinite(mean_loss):
            raise SystemExit(
                f"train.py: the loss is {mean_loss} in epoch {epoch + 1}; lower --lr or add --warmup-steps"
            )
        result["train_loss"].append(mean_loss)
        epoch_done = batch >= steps_per_epoch
        say(
            f"epoch {epoch + 1}/{args.epochs}{'' if epoch_done else ' (stopped at --steps)'}: "
            f"step {step}, loss {mean_loss:.4f}, {fmt_rate(seen * global_batch / max(elapsed, 1e-9))}, "
            f"{elapsed:.1f} s"
        )
        if val_loader is not None:
            val = evaluate(model, val_loader, device, autocast, env, args.channels_last)
            result["val"].append(val)
            say(f"  val: top-1 {100 * val['top1']:.2f}%, top-5 {100 * val['top5']:.2f}% ({val['images']} images)")
        if epoch_done:
            epoch, batch = epoch + 1, 0
            if args.save_every and epoch % args.save_every == 0:
                checkpoint(epoch, batch, f"epoch{epoch}.pt")
            checkpoint(epoch, batch)
            saved_at = step
    if saved_at != step:
        checkpoint(epoch, batch)
    if args.checkpoint_dir:
        say(f"checkpoint: {Path(args.checkpoint_dir) / 'last.pt'} (step {step})")
    if args.dump_weights:
        atomic_save(cpu_state(model), Path(f"{args.dump_weights}.rank{env.rank}"))
    if env.distributed:
        dist.barrier()
    say(f"done: step {step}, {fmt_time(time.perf_counter() - t_start)}")
    result |= {"step": step, "epoch": epoch, "batch": batch}
    return result


if __name__ == "__main__":
    main()
