"""Inference builds on the CPU: torchvision's models against nasdsl's optimised ones, same weights,
same layout, same precision, measured in one run; prints speedups (torchvision time / ours).

    python benchmarks/optimize_speed.py [--families googlenet,resnet50,mobilenet_v2]
        [--engines eager,ort] [--batch 16] [--repeats 9] [--quick]

For each family, torchvision's model gets random weights and BatchNorm statistics; the
generated training model's state_dict is made of the same tensors, and each variant of the
optimised model is built from it the way a user would (``from_training_state_dict``, or the
ONNX export with the same weights). Variants are pipelines of rewrites after the inference
view (see nasdsl/optimize.py): ``fold`` (BatchNorm folded), ``fold+fuse`` (and sibling
convolutions joined), ``fold+fuse+hoist`` (and activations hoisted above the split);
``nasdsl`` is the unoptimised generated model (a sanity row: it is torchvision's computation).

- eager: PyTorch eager on the CPU, fp32, channels_last for every model (input too),
  ``torch.inference_mode``.
- ort: ONNX Runtime's CPU provider, fp32, default graph optimisations; torchvision's model
  exported by ``torch.onnx.export(dynamo=False)``, ours by ``export_onnx_bytes`` (which folds
  BatchNorm in every export; ``+fuse`` and ``+fuse+hoist`` add the rewrites).

All models of a family run interleaved, one call each per round in a rotating order, so a
drift in machine speed hits all alike; the figure is the median over rounds. ``resnet50``
needs specs/resnet50.yaml; without it ``resnet18`` is measured in its place (said in the
output). Nothing is downloaded: every weight is random.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torchvision

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import nasdsl  # noqa: E402
from nasdsl import ir  # noqa: E402
from nasdsl.backends.pytorch import model_class  # noqa: E402
from nasdsl.optimize import PREPARE, optimize, optimized_weights  # noqa: E402
from nasdsl.passes.pipeline import run_pipeline  # noqa: E402
from nasdsl.weights import parameters  # noqa: E402

#: the rewrites of each measured variant
VARIANTS = {
    "fold": ("fold_norms",),
    "fold+fuse": ("fold_norms", "fuse_siblings"),
    "fold+fuse+hoist": ("fold_norms", "fuse_siblings", "hoist_activations"),
}

#: family -> (spec, torchvision constructor)
FAMILIES: dict[str, tuple[str, Callable[[], torch.nn.Module]]] = {
    "googlenet": (
        "googlenet_bn.yaml",
        lambda: torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True),
    ),
    "resnet50": ("resnet50.yaml", lambda: torchvision.models.resnet50(weights=None)),
    "resnet18": ("resnet18.yaml", lambda: torchvision.models.resnet18(weights=None)),
    "mobilenet_v2": ("mobilenet_v2.yaml", lambda: torchvision.models.mobilenet_v2(weights=None)),
    "vit_b_16": ("vit_b_16.yaml", lambda: torchvision.models.vit_b_16(weights=None)),
    "inception_v3": (
        "inception_v3.yaml",
        lambda: torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False),
    ),
    # a video model: every BatchNorm follows a conv3d (clips of 3x16x112x112; channels_last_3d)
    "r3d_18": ("r3d_18.yaml", lambda: torchvision.models.video.r3d_18(weights=None)),
    # Inception blocks of 1x1x1 conv3d siblings (what fuse_siblings joins)
    "s3d": ("s3d.yaml", lambda: torchvision.models.video.s3d(weights=None)),
}


def torchvision_key(ours: str, theirs: dict[str, torch.Tensor]) -> str | None:
    """torchvision's name for one of our state_dict keys: the same name, or the ResNet spec's
    branch naming undone (``layer1.0.residual.main.conv1`` is torchvision's ``layer1.0.conv1``)."""
    candidates = [
        ours,
        ours.replace(".residual.main.", ".").replace(".residual.downsample.", ".downsample."),
        ours.replace(".main.", ".").replace(".shortcut.", ".downsample."),
    ]
    return next((k for k in candidates if k in theirs), None)


def randomise(model: torch.nn.Module, seed: int = 1) -> None:
    """BatchNorm statistics and affine parameters away from the identity (fresh ones make folding
    trivial), and random values for parameters that start at zeros (a ViT's head: its outputs
    would all be zero)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
        for p in model.parameters():
            if not p.any():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)


def pair(family: str, size: int | None) -> tuple[nasdsl.Compiled, torch.nn.Module, dict[str, torch.Tensor]]:
    """The compiled spec, torchvision's model (eval, random weights) and our training state_dict
    holding the same tensors."""
    spec, make = FAMILIES[family]
    net = nasdsl.compile_spec(ROOT / "specs" / spec)
    if size:  # the height and width only (a clip keeps its frames)
        shape = ir.node(net.graph, ir.info(net.graph).input).shape
        net = nasdsl.compile_spec(ROOT / "specs" / spec, {"input.shape": [*shape[:-2], size, size]})
    torch.manual_seed(0)
    reference = make().eval()
    randomise(reference)
    theirs = reference.state_dict()
    needed = parameters(run_pipeline(net.graph, PREPARE))
    state = {}
    for key in needed:
        found = torchvision_key(key, theirs)
        if found is None:
            raise SystemExit(f"{family}: no torchvision weight for {key}")
        state[key] = theirs[found]
    return net, reference, state


def interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int) -> dict[str, float]:
    """Median seconds per call of each function, run round-robin in a rotating order."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def report(title: str, medians: dict[str, float], reference: str) -> list[tuple[str, float, float]]:
    print(f"\n{title}")
    print(f"  {'model':<28} {'ms':>9} {'speedup vs torchvision':>24}")
    rows = []
    for name, t in medians.items():
        speedup = medians[reference] / t
        rows.append((name, t * 1e3, speedup))
        print(f"  {name:<28} {t * 1e3:9.2f} {speedup:24.3f}", flush=True)
    return rows


def eager(family: str, batch: int, repeats: int, warmup: int, size: int | None) -> list:
    net, reference, state = pair(family, size)
    shape = ir.node(net.graph, ir.info(net.graph).input).shape
    x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(2))
    layout = torch.channels_last_3d if x.dim() == 5 else torch.channels_last
    x = x.contiguous(memory_format=layout)
    training = nasdsl.build_model(net)
    training.load_state_dict(state, strict=False)  # the training-only heads keep their initialisation
    models = {"torchvision": reference, "nasdsl": training.eval()}
    for name, rewrites in VARIANTS.items():
        cls = model_class(optimize(net, rewrites=rewrites))
        models[name] = cls.from_training_state_dict(state)
    models = {k: m.to(memory_format=layout) for k, m in models.items()}
    with torch.inference_mode():
        want = models["torchvision"](x)
        for name, m in models.items():
            got = m(x)
            err = ((got - want).abs().max() / want.abs().max()).item()
            if err > 1e-4:
                raise SystemExit(f"{family} {name}: relative error {err:.2e} against torchvision")
        fns = {name: (lambda m=m: m(x)) for name, m in models.items()}
        medians = interleaved(fns, repeats, warmup)
    title = f"{family} ({net.name}): eager CPU fp32 channels_last batch {batch}, {tuple(shape)}"
    return report(title, medians, "torchvision")


def ort_session(model: bytes, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def ort_runs(family: str, batch: int, repeats: int, warmup: int, size: int | None) -> list:
    from nasdsl.backends.onnx import export_onnx_bytes

    net, reference, state = pair(family, size)
    shape = ir.node(net.graph, ir.info(net.graph).input).shape
    x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(2))
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(reference, (x,), buffer, dynamo=False, opset_version=17, input_names=["x"])
    numpy_state = {k: v.numpy() for k, v in state.items()}
    graphs = {"torchvision": buffer.getvalue(), "nasdsl": export_onnx_bytes(net, state_dict=numpy_state, batch=batch)}
    for name, rewrites in VARIANTS.items():
        if name == "fold":
            continue  # every export folds BatchNorm: that is the "nasdsl" row
        g = optimize(net, rewrites=rewrites)
        graphs[name] = export_onnx_bytes(g, state_dict=optimized_weights(net, g, numpy_state), batch=batch)
    threads = torch.get_num_threads()
    sessions = {name: ort_session(data, threads) for name, data in graphs.items()}
    feed = x.numpy()
    want = sessions["torchvision"].run(None, {"x": feed})[0]
    for name, s in sessions.items():
        got = s.run(None, {s.get_inputs()[0].name: feed})[0]
        err = float(np.abs(got - want).max() / np.abs(want).max())
        if err > 1e-4:
            raise SystemExit(f"{family} {name}: relative error {err:.2e} against torchvision in ONNX Runtime")
    fns = {name: (lambda s=s: s.run(None, {s.get_inputs()[0].name: feed})) for name, s in sessions.items()}
    medians = interleaved(fns, repeats, warmup)
    title = f"{family} ({net.name}): ONNX Runtime CPU fp32 batch {batch}, {threads} threads, {tuple(shape)}"
    return report(title, medians, "torchvision")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", default="googlenet,resnet50,mobilenet_v2")
    ap.add_argument("--engines", default="eager,ort")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="a smoke run: batch 1, 96x96 inputs, 2 repeats")
    args = ap.parse_args(argv)
    size = None
    if args.quick:
        args.batch, args.repeats, args.warmup, size = 1, 2, 1, 96
    import onnxruntime

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"python {platform.python_version()}, torch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"onnxruntime {onnxruntime.__version__}, nasdsl {nasdsl.__version__}\n"
        f"CPU: {cpu_name()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, load {load:.2f}"
    )
    families = args.families.split(",")
    if "resnet50" in families and not (ROOT / "specs" / "resnet50.yaml").exists():
        print("specs/resnet50.yaml does not exist: measuring resnet18 in its place")
        families = ["resnet18" if f == "resnet50" else f for f in families]
    for family in families:
        for engine in args.engines.split(","):
            run = {"eager": eager, "ort": ort_runs}[engine]
            run(family, args.batch, args.repeats, args.warmup, size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
