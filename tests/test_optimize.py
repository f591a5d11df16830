"""Inference builds: each rewriting pass on small graphs, every spec end to end against the
unoptimised model (fp32, same weights, 1e-5 relative), the generated inference module
(ruff, TorchScript, determinism, the training state_dict it takes), the ONNX export of an
optimised graph, the command line, and the GPU benchmark's CPU path.

The specs and their weights are shared by module-scoped fixtures: building a model is most
of a test's time.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import re
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterator
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
import torch

import nasdsl
from nasdsl import ir
from nasdsl.backends.pytorch import generate_source, load_source, model_class
from nasdsl.cli import main
from nasdsl.errors import NasdslError
from nasdsl.optimize import PREPARE, TARGETS, optimize, optimized_weights, training_weights
from nasdsl.passes.derive import FoldNorm, JoinLayers
from nasdsl.passes.fold import fold_norms
from nasdsl.passes.fuse import fuse_siblings
from nasdsl.passes.hoist import hoist_activations
from nasdsl.passes.pipeline import PassError, run_pipeline, verify_graph
from nasdsl.weights import parameters

from paths import ROOT, SPECS, STRUCTURE_OVERRIDES, small_overrides

ALL_SPECS = sorted(SPECS.glob("*.yaml"))
#: the segmentation models on resnet50.yaml's backbone, dilated (its layers at 1/8 of the input make
#: the check several seconds; the MobileNetV3 segmentation models check the same constructs here)
HEAVY = {"fcn_resnet50", "deeplabv3_resnet50"}
#: one target per distinct pipeline (targets that share a pipeline are tested once)
PIPELINES = sorted({passes: target for target, passes in reversed(TARGETS.items())}.values())
#: input sizes tried, smallest first (a fixed pooling window needs a larger one)
SIZES = (32, 64, 96, 160, 224)


def lively(g: nx.DiGraph, seed: int = 0) -> dict[str, np.ndarray]:
    """Random weights that keep activations alive through the depth (a weight's variance is
    1 / fan-in), and BatchNorm statistics and affine parameters away from the identity, so that
    folding is not trivial. Every tensor is cut from one shared block of random numbers (at a
    random offset): drawing a hundred million fresh ones would take most of the test's time."""
    rng = np.random.default_rng(seed)
    block = rng.uniform(-1.0, 1.0, (1 << 20) + 1).astype(np.float32)

    def draw(shape: tuple[int, ...]) -> np.ndarray:
        """The block's numbers from a random offset on, wrapping around as often as needed."""
        n = int(np.prod(shape))
        start = int(rng.integers(0, 1 << 20))
        if start + n <= block.size:  # no wrap: a slice (both copies below cost the whole block each time)
            return block[start : start + n].reshape(shape)
        return np.resize(np.roll(block, -start), n).reshape(shape)

    out = {}
    for key, w in parameters(g).items():
        leaf = key.rsplit(".", 1)[-1]
        if w.dtype == "int64":
            out[key] = np.zeros(w.shape, np.int64)
        elif len(w.shape) > 1:
            out[key] = draw(w.shape) * np.float32(np.sqrt(3.0 / np.prod(w.shape[1:])))
        elif leaf in ("running_var", "weight"):
            out[key] = draw(w.shape) * np.float32(0.5) + np.float32(1.0)
        else:
            out[key] = draw(w.shape) * np.float32(0.1)
    return out


def graph(tmp_path: Path, text: str) -> nasdsl.Compiled:
    path = tmp_path / "net.yaml"
    path.write_text("name: Net\ninput: {shape: [3, 8, 8]}\n" + textwrap.dedent(text))
    return nasdsl.compile_spec(path)


def training_model(net: nasdsl.Compiled, weights: dict[str, np.ndarray]) -> torch.nn.Module:
    torch.manual_seed(0)
    model = model_class(net.graph)()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
    return model.eval()


def main_output(out: object) -> torch.Tensor:
    return out if isinstance(out, torch.Tensor) else out[0]


@contextlib.contextmanager
def onednn(enabled: bool) -> Iterator[None]:
    """oneDNN convolutions on or off for a while (``torch.backends.mkldnn.flags`` also sets TF32, and warns)."""
    before = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = enabled
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = before


def relative(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got - want).abs().max() / want.abs().max()).item()


def same_function(net: nasdsl.Compiled, g: nx.DiGraph, weights: dict[str, np.ndarray], batch: int = 2) -> float:
    """The largest difference, relative to the largest output, between the unoptimised model
    and the inference class of ``g`` built from the same (training) weights."""
    reference = training_model(net, weights)
    tensors = {k: torch.from_numpy(v) for k, v in weights.items()}
    model = model_class(g).from_training_state_dict(tensors)
    shape = ir.node(net.graph, ir.info(net.graph).input).shape
    x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return relative(main_output(model(x)), main_output(reference(x)))


# -- small graphs: BatchNorm folding ----------------------------------------------------------

FOLDS = """\
model:
  conv: {op: conv2d, out: 4, kernel: 3, bias: false}
  bn: {op: batch_norm, eps: 0.001}
  bn2: batch_norm
  act: relu
  pool: global_avg_pool
  flat: flatten
  fc: {op: linear, out: 5}
  fc_bn: batch_norm
"""


def test_fold_norms_folds_into_convolutions_and_linear_layers(tmp_path):
    net = graph(tmp_path, FOLDS)
    before = nx.to_dict_of_dicts(net.graph), dict(ir.nodes(net.graph))
    g = fold_norms(net.graph)
    assert (nx.to_dict_of_dicts(net.graph), dict(ir.nodes(net.graph))) == before
    assert [n for n in ir.order(g) if n != "x"] == ["conv", "act", "pool", "flat", "fc"]
    assert ir.node(g, "conv").attrs["bias"] and "bias" not in ir.node(g, "conv").given
    assert ir.info(g).derivation == (
        FoldNorm("conv", "bn", 0.001),
        FoldNorm("conv", "bn2", 1e-5),
        FoldNorm("fc", "fc_bn", 1e-5),
    )
    assert ir.info(g).outputs[0].node == "fc"
    verify_graph(g)
    assert same_function(net, optimize(net, "cpu"), lively(net.graph)) < 1e-5


@pytest.mark.parametrize(
    "model",
    [
        "  conv: {op: conv2d, out: 4, kernel: 3}\n  both: {add: {bn: batch_norm, same: identity}}\n",
        "  conv: {op: conv2d, out: 4, kernel: 3}\n  pool: global_avg_pool\n  bn: batch_norm\n",
    ],
    ids=["conv-read-twice", "after-a-pool"],
)
def test_fold_norms_leaves_what_it_cannot_fold(tmp_path, model):
    net = graph(tmp_path, "model:\n" + model)
    g = fold_norms(run_pipeline(net.graph, PREPARE))
    assert any(d.op == "batch_norm" for _, d in ir.nodes(g)) and ir.info(g).derivation == ()


def test_a_convolution_that_is_an_output_keeps_its_norm(tmp_path):
    net = graph(tmp_path, "model:\n  conv: {op: conv2d, out: 4, kernel: 1}\n  bn: batch_norm\n"
                "outputs:\n  out: {from: bn}\n  features: {from: conv}\n")  # fmt: skip
    g = fold_norms(net.graph)
    assert "bn" in g and ir.info(g).derivation == ()


# -- small graphs: sibling fusion and hoisting ------------------------------------------------

INCEPTION = """\
model:
  stem: {op: conv2d, out: 8, kernel: 3, padding: 1}
  block:
    concat:
      a: [{op: conv2d, out: 4, kernel: 1, bias: false}, batch_norm, relu]
      b: [{op: conv2d, out: 6, kernel: 1}, relu, {op: conv2d, out: 5, kernel: 3, padding: 1}]
      c: [{op: conv2d, out: 3, kernel: 3, padding: 1}, relu]
      d: [{op: max_pool, kernel: 3, stride: 1, padding: 1}, {op: conv2d, out: 2, kernel: 1}]
  pool: global_avg_pool
  flat: flatten
  fc: {op: linear, out: 3}
"""

WINDOWS = """\
model:
  stem: {op: conv2d, out: 8, kernel: 3, padding: 1}
  block:
    concat:
      a: {op: conv2d, out: 4, kernel: 1, stride: 2}
      b: {op: conv2d, out: 4, kernel: 1, stride: 2, groups: 2}
      c: {op: conv2d, out: 4, kernel: 3, stride: 2, padding: 1}
      d: {op: conv2d, out: 4, kernel: 2, stride: 2}
      e: {op: conv2d, out: 2, kernel: 1, stride: 2, bias: false}
"""


@pytest.fixture(scope="module")
def inception(tmp_path_factory) -> nasdsl.Compiled:
    return graph(tmp_path_factory.mktemp("inception"), INCEPTION)


def test_fuse_siblings_joins_convolutions_with_one_window(inception):
    g = fuse_siblings(fold_norms(run_pipeline(inception.graph, PREPARE)))
    fused = ir.node(g, "block.fused")
    assert fused.op == "conv2d" and fused.attrs["out"] == 10 and fused.attrs["bias"]
    assert fused.shape == (10, 8, 8) and ir.inputs(g, "block.fused") == ["stem"]
    splits = {n: ir.node(g, n).attrs for n in g.successors("block.fused")}
    # each slice takes its convolution's place (an item of an unnamed sequence keeps its index)
    assert splits == {
        "block.a.0": {"start": 0, "stop": 4, "step": 1, "axis": "channels"},
        "block.b.0": {"start": 4, "stop": 10, "step": 1, "axis": "channels"},
    }
    assert ir.node(g, "block.a.0").op == "slice" and ir.inputs(g, "block.a.0") == ["block.fused"]
    assert "block.c.0" in g and "block.d.1" in g  # a 3x3 window, and a convolution of another tensor
    assert ir.info(g).derivation[-1] == JoinLayers("block.fused", ("block.a.0", "block.b.0"))
    assert ir.inputs(g, "block") == ["block.a.2", "block.b.2", "block.c.1", "block.d.1"]  # branch order kept
    order = ir.order(g)
    assert order.index("block.fused") < order.index("block.a.0") < order.index("block.c.0")
    # the tree: the merge is wrapped in a named sequence at its path, the fused convolution first
    entry = next(b for b in ir.info(g).model.children if b.name == "block")
    assert (entry.kind, entry.named, [c.kind for c in entry.children]) == ("seq", True, ["op", "merge"])
    assert entry.children[0].path == "block.fused" and entry.children[1].path == "block"
    assert [c.inputs for c in entry.children[1].children] == [("block.fused",), ("block.fused",), ("stem",), ("stem",)]
    verify_graph(g)


def test_convolutions_with_another_window_or_groups_stay_apart(tmp_path):
    net = graph(tmp_path, WINDOWS)
    g = fuse_siblings(net.graph)
    assert ir.info(g).derivation == (JoinLayers("block.fused", ("block.a", "block.e")),)
    assert {n: ir.node(g, n).attrs for n in g.successors("block.fused")} == {
        "block.a": {"start": 0, "stop": 4, "step": 1, "axis": "channels"},  # a branch keeps its name
        "block.e": {"start": 4, "stop": 6, "step": 1, "axis": "channels"},
    }
    assert ir.node(g, "block.fused").attrs["bias"]  # a zero bias for the part without one
    assert same_function(net, optimize(net, "cuda"), lively(net.graph, seed=2)) < 1e-5


def test_hoist_activations_applies_one_relu_before_the_split(inception):
    g = hoist_activations(fuse_siblings(fold_norms(run_pipeline(inception.graph, PREPARE))))
    assert ir.node(g, "block.fused_relu").op == "relu" and ir.inputs(g, "block.fused_relu") == ["block.fused"]
    assert set(g.successors("block.fused_relu")) == {"block.a.0", "block.b.0"}
    assert "block.a.2" not in g and "block.b.1" not in g
    assert ir.inputs(g, "block")[0] == "block.a.0" and ir.inputs(g, "block.b.2") == ["block.b.0"]
    entry = next(b for b in ir.info(g).model.children if b.name == "block")
    assert [c.path for c in entry.children] == ["block.fused", "block.fused_relu", "block"]
    # the activations' blocks pass their input on: the unnamed branches keep their indices
    branch_a = entry.children[2].children[0]
    assert [(c.name, c.kind) for c in branch_a.children] == [("0", "op"), ("1", "skip"), ("2", "skip")]
    verify_graph(g)


def test_hoisting_needs_every_slice_read_by_the_same_activation(inception):
    g = fuse_siblings(fold_norms(run_pipeline(inception.graph, PREPARE)))
    ir.update_node(g, "block.b.1", op="sigmoid")
    assert "block.fused_relu" not in hoist_activations(g) and "block.fused_sigmoid" not in hoist_activations(g)


@pytest.mark.parametrize("target", PIPELINES)
def test_small_inception_computes_the_same_function(inception, target):
    g = optimize(inception, target, verify=True)
    assert same_function(inception, g, lively(inception.graph, seed=3)) < 1e-5


def test_passes_leave_their_argument_unchanged(inception):
    g = run_pipeline(inception.graph, PREPARE)
    before = (nx.to_dict_of_dicts(g), dict(ir.nodes(g)), ir.info(g))
    for run in (fold_norms, fuse_siblings, hoist_activations):
        run(g)
        assert (nx.to_dict_of_dicts(g), dict(ir.nodes(g)), ir.info(g)) == before


def test_the_verifier_names_a_pass_that_breaks_the_tree(inception, monkeypatch):
    from nasdsl.passes import pipeline

    def drops_a_block(g):
        g = fold_norms(g)
        root = ir.info(g).model
        ir.update_info(g, model=dataclasses.replace(root, children=root.children[1:]))
        return g

    monkeypatch.setitem(
        pipeline.PASSES, "fold_norms", dataclasses.replace(pipeline.PASSES["fold_norms"], run=drops_a_block)
    )
    with pytest.raises(PassError, match="after pass fold_norms: .*no block of the tree holds node stem"):
        optimize(inception, "onnxruntime", verify=True)


def test_an_unknown_target_is_an_error():
    with pytest.raises(NasdslError, match="unknown optimisation target 'gpu'; expected one of cuda, cpu, onnxruntime"):
        optimize(nasdsl.compile_spec(SPECS / "resnet18.yaml"), "gpu")


# -- every spec, end to end -------------------------------------------------------------------


class Specs(dict):
    """Each spec at the smallest input size in :data:`SIZES` it takes, with lively weights,
    made on first use and kept for the module."""

    def __missing__(self, stem: str) -> tuple[nasdsl.Compiled, dict[str, np.ndarray]]:
        path = SPECS / f"{stem}.yaml"
        net = None
        # without the training-only heads where a switch turns them off (the inference graph has none,
        # and an auxiliary head's fixed window is what needs a large input)
        tried = [{"input.shape": [3, s, s], **aux} for s in SIZES for aux in ({"aux_logits": False}, {})]
        # a spec whose fixed window needs a large input: first the smaller window of
        # paths.STRUCTURE_OVERRIDES (MaxViT's partitions), at the input that takes
        first = [small_overrides(path)] if stem in STRUCTURE_OVERRIDES else []
        for overrides in [*first, *tried]:
            try:
                net = nasdsl.compile_spec(path, overrides)
                break
            except NasdslError:
                continue
        # a clip (C, T, H, W), frames included, or sizes set by variables: the smallest small_overrides finds
        # (looked for only here: it compiles the spec at several sizes)
        net = net or nasdsl.compile_spec(path, small_overrides(path))
        self[stem] = net, lively(net.graph)
        return self[stem]


@pytest.fixture(scope="module")
def specs() -> Specs:
    return Specs()


@pytest.fixture
def cheap(monkeypatch):
    """Layers built without PyTorch's random initialisation: every weight is loaded right after
    (``from_training_state_dict`` raises on a missing one), and drawing them is most of the time."""
    for cls in (torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear):
        monkeypatch.setattr(cls, "reset_parameters", lambda self: None)


@pytest.mark.parametrize("spec", [p.stem for p in ALL_SPECS if p.stem not in HEAVY])
def test_every_spec_computes_the_same_function(specs, spec, cheap):
    """The graph after every rewrite of the CUDA pipeline (which includes the others' passes)
    against the same inference graph unrewritten, written by the same backend, same weights."""
    net, weights = specs[spec]
    g = optimize(net, "cuda", verify=True)
    unrewritten = optimize(net, rewrites=())
    assert g.number_of_nodes() <= run_pipeline(net.graph, PREPARE).number_of_nodes()
    if not ir.info(g).derivation:  # no rewrite applied (no BatchNorm, nothing to fuse or hoist)
        # the same module, but for the header that names the passes run: nothing to run
        body, same = (generate_source(x).split("\nimport ", 1)[1] for x in (g, unrewritten))
        assert body == same
        return
    state = {k: torch.from_numpy(v) for k, v in training_weights(net, weights).items()}
    reference = model_class(unrewritten).from_training_state_dict(state)
    model = model_class(g).from_training_state_dict(state)
    shape = ir.node(net.graph, ir.info(net.graph).input).shape
    x = torch.randn(1, *shape, generator=torch.Generator().manual_seed(1))
    # oneDNN's first call of each convolution costs far more than these small inputs; PyTorch's own
    # kernels are quick here, except for grouped convolutions, which they run one group at a time
    grouped = any(d.op == "conv2d" and d.attrs["groups"] > 1 for _, d in ir.nodes(g))
    with torch.no_grad(), onednn(grouped):
        assert relative(main_output(model(x)), main_output(reference(x))) < 1e-5


def test_the_fusions_are_where_they_pay(specs):
    """GoogLeNet: the three 1x1 convolutions of each Inception module; ResNet-50: the first block's
    projection beside its first 1x1 convolution (stride 1); S3D: the three 1x1x1 ``conv3d`` of each
    of its nine Inception blocks; no BatchNorm is left."""
    for spec, expected in (("googlenet_bn", 9), ("resnet50", 1), ("squeezenet1_1", 0), ("s3d", 9)):
        g = optimize(specs[spec][0], "cuda")
        joins = [s for s in ir.info(g).derivation if isinstance(s, JoinLayers)]
        assert len(joins) == expected, spec
        assert not any(d.op == "batch_norm" for _, d in ir.nodes(g)), spec
    g = optimize(specs["googlenet_bn"][0], "cuda")
    assert JoinLayers("inception3a.fused", ("inception3a.branch1.conv", "inception3a.branch2.0.conv",
                                            "inception3a.branch3.0.conv")) in ir.info(g).derivation  # fmt: skip


def test_a_batchnorm_after_a_conv1d_folds_into_it(tmp_path):
    """docs/optimize.md: the fold takes a convolution of any rank; a (C, L) map's ``conv1d`` here,
    the video models' ``conv3d`` below. The inference class computes the unoptimised model."""
    path = tmp_path / "net.yaml"
    path.write_text(
        "name: Net\ninput: {shape: [3, 16], axes: CL}\nmodel:\n  conv: {op: conv1d, out: 4, kernel: 3, bias: false}\n"
        "  bn: batch_norm\n  relu: relu\n"
    )
    net = nasdsl.compile_spec(path)
    g = optimize(net, "cpu")
    assert [s.layer for s in ir.info(g).derivation if isinstance(s, FoldNorm)] == ["conv"]
    assert not any(d.op == "batch_norm" for _, d in ir.nodes(g)) and ir.node(g, "conv").attrs["bias"]
    assert same_function(net, g, lively(net.graph)) < 1e-5


def test_video_models_fold_their_batchnorms_into_3d_convolutions(specs):
    """Every BatchNorm of R3D-18 and R(2+1)D-18 follows a ``conv3d``: the inference build has none
    left, the convolutions gain their biases (the function is checked by the test above)."""
    for spec in ("r3d_18", "r2plus1d_18"):
        net = specs[spec][0]
        norms = sum(1 for _, d in ir.nodes(net.graph) if d.op == "batch_norm")
        g = optimize(net, "cpu")
        folded = [s for s in ir.info(g).derivation if isinstance(s, FoldNorm)]
        assert len(folded) == norms > 0, spec
        assert not any(d.op == "batch_norm" for _, d in ir.nodes(g)), spec
        assert all(ir.node(g, s.layer).op == "conv3d" and ir.node(g, s.layer).attrs["bias"] for s in folded), spec


def test_numpy_and_generated_torch_derivations_agree_bit_for_bit(specs):
    net, weights = specs["googlenet_bn"]
    g = optimize(net, "cuda")
    numpy_side = optimized_weights(net, g, weights)
    module = load_source(generate_source(g))
    state = {k: torch.from_numpy(v) for k, v in training_weights(net, weights).items()}
    model = module.GoogLeNetBNInference.from_training_state_dict(state)
    own = model.state_dict()
    # the module's layers sit where the graph's nodes say: its keys are the derived weights' names
    assert set(own) == set(numpy_side)
    for key, value in own.items():
        assert torch.equal(value, torch.from_numpy(numpy_side[key])), key


def test_a_state_dict_that_does_not_fit_is_a_clear_error(specs):
    net, weights = specs["resnet18"]
    gone = next(k for k in weights if k.endswith(".running_var"))
    broken = {k: v for k, v in weights.items() if k != gone}
    with pytest.raises(NasdslError, match=rf"does not fit ResNet18:\n  missing \(1\): {re.escape(gone)}$"):
        nasdsl.build_model(net, optimize=True, weights=broken)


# -- the generated inference module -----------------------------------------------------------


@pytest.fixture(scope="module")
def written(tmp_path_factory, specs) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("inference")
    paths = {}
    for spec in ("googlenet_bn", "resnet50", "mobilenet_v2"):
        paths[spec] = folder / f"{spec}_inference.py"
        paths[spec].write_text(generate_source(optimize(specs[spec][0], "cuda")))
    return paths


def test_inference_source_passes_ruff_and_imports_torch_alone(written):
    files = [str(p) for p in written.values()]
    ruff = [sys.executable, "-m", "ruff"]
    strict = ["--select", "E,F,W,I,B,UP,RUF"]
    for args in (["check", "--isolated", *strict, *files], ["format", "--isolated", "--check", *files]):
        run = subprocess.run(ruff + args, capture_output=True, text=True)
        assert run.returncode == 0, run.stdout + run.stderr
    for path in written.values():
        tree = ast.parse(path.read_text())
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert imported <= {"torch", "typing", "collections"}, path.name  # torch and the standard library


def test_inference_source_is_deterministic(specs, written):
    again = generate_source(optimize(specs["googlenet_bn"][0], "cuda"))
    assert again == written["googlenet_bn"].read_text()


def test_inference_source_reads_as_the_graph(written):
    """One class per template, as the training model's file has: every BasicConv2d lost its
    BatchNorm and gained a bias alike; every Inception module reads one fused 1x1 convolution
    (its out written in the class's parameters) and slices it in its branches."""
    text = written["googlenet_bn"].read_text()
    assert "class GoogLeNetBNInference(nn.Module):" in text
    assert text.count("class BasicConv2d(nn.Module):") == text.count("class Inception(nn.Module):") == 1
    basic = text.split("class BasicConv2d(nn.Module):", 1)[1].split("\nclass ", 1)[0]
    assert "        self.conv = nn.Conv2d(in_channels, out, kernel, stride=stride, padding=padding)\n" in basic
    inception = text.split("class Inception(nn.Module):", 1)[1].split("\nclass ", 1)[0]
    assert "        self.fused = nn.Conv2d(in_channels, c1x1 + c3x3red + c5x5red, 1)\n" in inception
    assert "        self.fused_relu = nn.ReLU(inplace=True)\n" in inception
    assert "        self.branch1 = nn.Sequential(OrderedDict(split=Slice(0, c1x1)))\n" in inception
    assert "nn.Sequential(OrderedDict(split=Slice(c1x1, c1x1 + c3x3red)))," in inception
    assert "        x = self.fused(x)  # (N, c1x1 + c3x3red + c5x5red, H, W)\n" in inception
    assert "        branch4 = self.branch4(identity)  # (N, pool_proj, H, W)\n" in inception
    assert "        self.inception3a = Inception(192, 64, 96, 128, 16, 32, 32)\n" in text
    assert 'fold_batch_norm(state, "conv1.conv", "conv1.bn", 0.001)' in text
    assert "nn.BatchNorm" not in text


def test_inference_module_scripts_with_torchscript(specs, written):
    net, weights = specs["googlenet_bn"]
    module = load_source(written["googlenet_bn"].read_text())
    state = {k: torch.from_numpy(v) for k, v in training_weights(net, weights).items()}
    model = module.GoogLeNetBNInference.from_training_state_dict(state)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is deprecated in torch 2.14
        scripted = torch.jit.script(model)
    x = torch.randn(1, *ir.node(net.graph, ir.info(net.graph).input).shape, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert torch.equal(scripted(x), model(x))


def test_a_use_the_rewrites_set_apart_is_a_class_of_its_own(written):
    """ResNet-50's first bottleneck alone joins its projection with its first 1x1 convolution:
    it is written as a class of its own (sizes folded, as the model writes them), beside the
    one Bottleneck class of the others; the names stay the training model's."""
    text = written["resnet50"].read_text()
    assert text.count("class Bottleneck(nn.Module):") == text.count("class Bottleneck_layer1_0(nn.Module):") == 1
    own = text.split("class Bottleneck_layer1_0(nn.Module):", 1)[1].split("\nclass ", 1)[0]
    assert "        self.fused = nn.Conv2d(64, 320, 1)\n" in own and "        self.split = Slice(0, 64)\n" in own
    assert "        self.downsample = nn.Sequential(Slice(64, 320))\n" in own
    assert "        x = fused\n        x = self.downsample(x)  # (N, 256, " in own
    assert "            Bottleneck_layer1_0(),\n            Bottleneck(256, 64, downsample=False),\n" in text


# -- the API, the ONNX export and the command line ------------------------------------------


def test_build_model_optimize_takes_the_training_state_dict(specs):
    net, weights = specs["mobilenet_v2"]
    model = nasdsl.build_model(net, optimize="cpu", weights=weights)
    assert type(model).__name__ == "MobileNetV2Inference" and not model.training
    x = torch.randn(1, *ir.node(net.graph, ir.info(net.graph).input).shape, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert relative(model(x), training_model(net, weights)(x)) < 1e-5


def test_onnx_export_of_an_optimised_graph(specs):
    import onnxruntime as ort

    from nasdsl.backends.onnx import export_onnx_bytes

    net, weights = specs["googlenet_bn"]
    shape = ir.node(net.graph, ir.info(net.graph).input).shape
    x = np.random.default_rng(6).standard_normal((1, *shape)).astype(np.float32)
    outputs = {}
    for target in (None, "cuda"):
        data = export_onnx_bytes(net, state_dict=weights, optimize=target)
        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        outputs[target] = session.run(None, {"x": x})[0]
    # a graph optimised already, with its own weights (keyed by its names): exported as it is
    g = optimize(net, "cuda")
    data = export_onnx_bytes(g, state_dict=optimized_weights(net, g, weights))
    outputs["given"] = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    want = outputs[None]
    for target in ("cuda", "given"):
        assert np.abs(outputs[target] - want).max() / np.abs(want).max() < 1e-5, target
    # ONNX Runtime's pipeline is what every export does already
    assert export_onnx_bytes(net, state_dict=weights, optimize="onnxruntime") == export_onnx_bytes(
        net, state_dict=weights
    )


def test_compile_optimize_writes_a_module_that_takes_the_training_weights(tmp_path, capsys):
    spec = str(SPECS / "resnet18.yaml")
    out = tmp_path / "deploy.py"
    small = "input.shape=[3, 32, 32]"
    assert main(["compile", spec, "--set", small, "--to", "pytorch", "--optimize", "-o", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out and "optimised for cuda" in str(out.read_text()[:400])
    module = load_source(out.read_text())
    torch.manual_seed(0)
    training = nasdsl.build_model(nasdsl.compile_spec(spec, [small])).eval()
    with torch.no_grad():
        for m in training.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 1.5)
                m.running_mean.normal_(0, 0.1)
    model = module.ResNet18Inference.from_training_state_dict(training.state_dict())
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        assert relative(model(x), training(x)) < 1e-5


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--optimize-for", "gpu"],
            "--optimize-for: expected one of cuda, cpu, onnxruntime, openvino, onnxruntime-int8, openvino-bf16, "
            "openvino-int8, got 'gpu'",
        ),
        (["--optimize", "--with-aux"], "--with-aux: an optimised graph is the inference graph"),
    ],
    ids=["unknown-target", "with-aux"],
)
def test_compile_optimize_refuses_bad_options_in_one_line(tmp_path, capsys, argv, message):
    code = None
    try:
        code = main(["compile", str(SPECS / "resnet18.yaml"), "-o", str(tmp_path / "m.onnx"), *argv])
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "m.onnx").exists()


def test_summary_shows_the_optimised_node_count(capsys):
    assert main(["summary", str(SPECS / "googlenet_bn.yaml"), "--optimize"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == (
        "optimised for cuda: 131 nodes, from 197 in the inference graph "
        "(57 BatchNorm folded, 9 sets of convolutions joined)"
    )


# -- the GPU benchmark's CPU path -------------------------------------------------------------


def test_gpu_benchmark_runs_on_the_cpu(capsys):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import gpu_speed
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    assert gpu_speed.main(["--device", "cpu", "--quick", "--repeats", "1", "--warmup", "0"]) == 0
    text = capsys.readouterr().out
    assert "torch.compile: skipped" in text and "CPU run: not the GPU figures" in text
    # every variant, and the cuda target's pipeline among them
    assert gpu_speed.TARGET in gpu_speed.VARIANTS and f"the cuda target's pipeline today: {gpu_speed.TARGET}" in text
    for label in ["torchvision", *gpu_speed.VARIANTS]:
        assert re.search(rf"bf16 channels_last batch 2 eager +{re.escape(label)} +[\d.]+ img/s", text), label
        assert re.search(rf"fp32 channels_last batch 1 latency +{re.escape(label)} +[\d.]+ ms", text), label
    for label in gpu_speed.VARIANTS:
        difference = float(text.split(f"fp32 max relative difference, batch 2, {label}: ")[1].split()[0])
        assert difference < 1e-5, label
