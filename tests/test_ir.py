"""The graph IR as the one input of every backend (docs/ir.md).

- the contract page documents every attribute and record field a graph carries;
- backends import neither the parser, the builder nor the document loader, and
  generating PyTorch source builds nothing (the graph is the input);
- every op has a lowering in both backends, and an op or merge without one is an
  error naming it, never a silent sum;
- exporting ONNX without weights, or with .safetensors weights, never imports torch;
- the numpy initialisation follows the spec's init rules (and PyTorch's defaults).
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import networkx as nx
import numpy as np
import pytest

import nasdsl
from nasdsl import ir
from nasdsl.errors import CodegenError
from nasdsl.ops import BACKENDS, OPS, OpDef
from nasdsl.weights import initial_weights, parameters

from paths import ROOT, SPECS

IR_PAGE = ROOT / "docs" / "ir.md"
ALL_SPECS = sorted(SPECS.glob("*.yaml"))


@pytest.fixture(scope="module")
def graphs() -> dict[str, nx.DiGraph]:
    return {p.stem: nasdsl.compile_spec(p).graph for p in ALL_SPECS}


def write(tmp_path: Path, text: str, name: str = "net.yaml") -> nasdsl.Compiled:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return nasdsl.compile_spec(path)


# -- the contract page ---------------------------------------------------------------------


def test_ir_page_documents_every_attribute_and_field(graphs, tmp_path):
    text = IR_PAGE.read_text()
    seen: set[str] = {"index"}  # the one edge attribute
    records = (ir.Node, ir.GraphInfo, ir.TensorType, ir.Block, ir.Arg, ir.When, ir.Param, ir.Template, ir.Output)
    for record in (*records, ir.Repeat, ir.Dormant, ir.InitRule):
        seen |= {f.name for f in dataclasses.fields(record)}
    for g in graphs.values():  # every edge attribute a compiled graph carries
        seen |= set().union(set(), *(d.keys() for _, _, d in g.edges(data=True)))
    missing = sorted(key for key in seen if f"`{key}`" not in text)
    assert not missing, f"{IR_PAGE.name} does not document {missing}"


def test_the_page_example_is_what_compile_spec_gives(graphs):
    data = ir.node(graphs["googlenet"], "inception3a.branch2.1.conv")
    text = IR_PAGE.read_text()
    for key in ("exprs", "given", "scope", "instance", "when", "type", "sym"):
        assert repr(getattr(data, key)).replace(" ", "") in text.replace(" ", "").replace("\n", ""), key


# -- backends read the graph alone -----------------------------------------------------------

FRONT_END = {"nasdsl.spec", "nasdsl.build", "nasdsl.document", "nasdsl.loader", "nasdsl.api", "nasdsl.cli"}


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


@pytest.mark.parametrize("path", sorted((ROOT / "backends").glob("*.py")), ids=lambda p: p.name)
def test_backends_import_nothing_from_the_front_end(path):
    bad = {m for m in _imports(path) if any(m == f or m.startswith(f + ".") for f in FRONT_END)}
    assert not bad, f"{path.name} imports {sorted(bad)}"


@pytest.mark.parametrize("module", ["passes", "summary.py", "weights.py", "ir", "ops"])
def test_passes_and_the_ir_import_nothing_from_the_front_end(module):
    base = ROOT / "nasdsl" / module
    for path in sorted(base.glob("*.py")) if base.is_dir() else [base]:
        bad = {m for m in _imports(path) if any(m == f or m.startswith(f + ".") for f in FRONT_END)}
        assert not bad, f"{path.name} imports {sorted(bad)}"


def test_generating_source_builds_nothing(graphs, monkeypatch):
    """The graph is the single input: the builder is never called again (no trial rebuilds)."""
    from nasdsl import build
    from nasdsl.backends import onnx, pytorch

    def refuse(*args, **kwargs):
        raise AssertionError("a backend rebuilt the graph")

    monkeypatch.setattr(build, "build", refuse)
    monkeypatch.setattr(nasdsl.api, "build", refuse)
    for g in graphs.values():
        assert pytorch.generate_source(g)
        if _size(g) < 30_000_000:  # the export draws every initial weight: the large ones only add time
            assert onnx.export_onnx_bytes(g)


def _size(g: nx.DiGraph) -> int:
    return sum(math.prod(w.shape) for w in parameters(g).values())


def _state(g: nx.DiGraph) -> tuple:
    """Everything a graph holds, compared by value down to the last nested attribute (the dormant
    graph included): what a pass must leave as it found it."""
    info = ir.info(g)
    fields = {f.name: getattr(info, f.name) for f in dataclasses.fields(info) if f.name != "dormant"}
    dormant = info.dormant
    inner = _state_of_nodes(dormant.graph) if len(dormant.graph) else None
    return (
        _state_of_nodes(g),
        set(g.graph),
        fields,
        (inner, dormant.outputs, dict(dormant.errors)),
    )


def _state_of_nodes(g: nx.DiGraph) -> tuple:
    return (
        [(u, v, dict(d)) for u, v, d in g.edges(data=True)],
        [(n, set(d), copy.deepcopy(d[ir.KEY])) for n, d in g.nodes(data=True)],
    )


def test_passes_leave_their_input_unchanged(graphs):
    """Every pass of the pass manager, on every spec: its argument, nested attributes included
    (a record's mappings, the block tree, the dormant graph), compares equal afterwards."""
    from nasdsl.passes.pipeline import PASSES

    for spec in ("googlenet_bn", "convnext_tiny", "inception_v3", "mobilenet_v3_large"):
        g = graphs[spec]
        before = copy.deepcopy(_state(g))
        for name, info in PASSES.items():
            info.run(g)
            assert _state(g) == before, (spec, name)


def test_records_cannot_change():
    g = nasdsl.compile_spec(SPECS / "googlenet.yaml").graph
    data = ir.node(g, "conv1.conv")
    with pytest.raises(dataclasses.FrozenInstanceError):
        data.op = "relu"
    with pytest.raises(TypeError, match="cannot change"):
        data.attrs["out"] = 3
    with pytest.raises(TypeError, match="cannot change"):
        ir.info(g).variables["num_classes"] = 3


# -- the op registry ----------------------------------------------------------------------------


def test_every_op_has_a_lowering_in_every_backend():
    import nasdsl.backends.onnx  # noqa: F401 - registers its lowerings
    import nasdsl.backends.pytorch  # noqa: F401

    missing = [(op, b) for op in OPS for b in BACKENDS if b not in OPS[op].lowerings]
    assert not missing


def _with_op(monkeypatch, opdef: OpDef) -> None:
    monkeypatch.setitem(OPS, opdef.name, opdef)


def _block_op(g, node: str, op: str) -> None:
    """The op block holding ``node`` says ``op`` (in ``g``, the caller's copy)."""
    from nasdsl.ir.tree import map_roots

    map_roots(g, lambda b: dataclasses.replace(b, op=op) if b.kind == "op" and b.output == node else b)


def test_an_op_without_lowerings_is_an_error_naming_op_and_node(graphs, monkeypatch):
    from nasdsl.backends import onnx, pytorch

    g = graphs["resnet18"].copy()
    _with_op(monkeypatch, dataclasses.replace(OPS["relu"], name="frob", lowerings={}))
    ir.update_node(g, "relu", op="frob")
    _block_op(g, "relu", "frob")  # the tree and the nodes agree (the verifier checks it)
    with pytest.raises(CodegenError, match=r"the PyTorch backend cannot lower op 'frob' \(node relu\)"):
        pytorch.generate_source(g)
    with pytest.raises(CodegenError, match=r"the ONNX backend cannot lower op 'frob' \(node relu\)"):
        onnx.export_onnx(g)


def test_a_merge_without_a_lowering_is_an_error_not_a_sum(graphs, monkeypatch):
    """Four places used to write any merge that is not a concat as a sum."""
    from nasdsl.backends import onnx, pytorch

    g = graphs["resnet18"]
    merge = next(b for b in ir.walk(ir.info(g).model) if b.kind == "merge")
    assert merge.op == "add"
    h = g.copy()
    _with_op(monkeypatch, dataclasses.replace(OPS["add"], name="mul", lowerings={}))
    ir.update_node(h, merge.path, op="mul")

    def renamed(b: ir.Block) -> ir.Block:
        children = tuple(renamed(c) for c in b.children)
        return dataclasses.replace(b, children=children, op="mul" if b.path == merge.path else b.op)

    ir.update_info(h, model=renamed(ir.info(h).model))
    with pytest.raises(CodegenError, match=r"cannot lower op 'mul'.*\(node layer1\.0\.residual\)"):
        pytorch.generate_source(h)
    with pytest.raises(CodegenError, match=r"cannot lower op 'mul' \(node layer1\.0\.residual\)"):
        onnx.export_onnx(h)


def test_registry_parameters_agree_with_torch(graphs):
    """Parameter names and shapes come from the registry; PyTorch's modules must agree."""
    from nasdsl.backends.pytorch import model_class

    for name in ("googlenet_bn", "mobilenet_v2", "squeezenet1_1"):
        g = graphs[name]
        model = model_class(g)()
        want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        assert {k: w.shape for k, w in parameters(g).items()} == want, name


# -- the pass manager --------------------------------------------------------------------------


def test_the_pass_manager_names_a_pass_that_breaks_the_graph(graphs, monkeypatch):
    from nasdsl.passes import pipeline

    def broken(g: nx.DiGraph) -> nx.DiGraph:
        g = g.copy()
        ir.update_node(g, "fc", type=ir.TensorType((3,), "C"))
        return g

    monkeypatch.setitem(pipeline.PASSES, "broken", pipeline.PassInfo(broken))
    g = graphs["resnet18"]
    assert ir.node(pipeline.run_pipeline(g, ["broken"], verify=False), "fc").shape == (3,)  # unchecked
    with pytest.raises(pipeline.PassError, match=r"after pass broken: .*node fc has type .*\(3,\)"):
        pipeline.run_pipeline(g, ["inference", "broken"], verify=True)
    with pytest.raises(ValueError, match="unknown pass 'nope'"):
        pipeline.run_pipeline(g, ["nope"])


def test_a_pass_runs_only_on_a_graph_that_holds_what_it_requires(graphs):
    """Contracts: the rewriting passes require the eval view (no dropout); run on a training graph,
    the manager refuses, naming the pass and the fact; after a pipeline the graph lists its facts."""
    from nasdsl.passes import pipeline

    g = graphs["googlenet_bn"]
    with pytest.raises(pipeline.PassError, match="pass fold_norms requires eval, which the graph does not hold"):
        pipeline.run_pipeline(g, ["fold_norms"])
    out = pipeline.run_pipeline(g, ["inference", "drop_identities", "fold_norms"], verify="full")
    assert {"shaped", "inference", "eval", "no_identities", "norms_folded"} <= ir.info(out).facts
    assert ir.info(g).facts == frozenset()  # the input is left as it was


def test_the_verifier_checks_every_fact_a_graph_claims(graphs, monkeypatch):
    """A pass that claims a fact its output does not hold is caught where it ran."""
    from nasdsl.passes import pipeline

    lazy = pipeline.PassInfo(lambda g: g, guarantees=frozenset({"norms_folded"}))  # claims the folds, does none
    monkeypatch.setitem(pipeline.PASSES, "fold_norms", lazy)
    with pytest.raises(pipeline.PassError, match=r"after pass fold_norms: .*claims 'norms_folded' but foldable"):
        pipeline.run_pipeline(graphs["googlenet_bn"], ["inference", "fold_norms"], verify="full")
    assert pipeline.run_pipeline(graphs["googlenet_bn"], ["inference", "fold_norms"], verify="cheap")


@pytest.mark.parametrize("spec", ALL_SPECS, ids=lambda p: p.stem)
def test_every_pipeline_keeps_the_invariants(spec, graphs):
    from nasdsl.backends import onnx, pytorch
    from nasdsl.passes.pipeline import run_pipeline

    g = graphs[spec.stem]
    pytorch.prepare(g, verify=True)
    onnx.export_graph(g, verify=True)
    onnx.export_graph(g, with_aux=True, verify=True)
    run_pipeline(g, ["training", "drop_identities"], verify=True)


# -- ONNX without torch ------------------------------------------------------------------------

NO_TORCH = """
import sys
from nasdsl.cli import main
code = main(sys.argv[1:])
assert code == 0, code
loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
assert not loaded, loaded[:5]
"""


def _run_without_torch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", NO_TORCH, *args], capture_output=True, text=True, timeout=120)


def test_onnx_export_never_imports_torch(tmp_path):
    out = tmp_path / "g.onnx"
    done = _run_without_torch("compile", str(SPECS / "googlenet_bn.yaml"), "--to", "onnx", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert out.stat().st_size > 20_000_000


def test_safetensors_weights_never_import_torch(tmp_path, graphs):
    import onnx
    from safetensors.numpy import save_file

    from nasdsl.backends.verify import run_onnx

    g = graphs["squeezenet1_1"]
    weights = {k: v * 1.5 if v.dtype == np.float32 else v for k, v in initial_weights(g, seed=3).items()}
    save_file(weights, tmp_path / "w.safetensors")
    out = tmp_path / "s.onnx"
    done = _run_without_torch(
        "compile", str(SPECS / "squeezenet1_1.yaml"), "--to", "onnx", "-o", str(out), "--weights",
        str(tmp_path / "w.safetensors"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    # the file holds exactly those weights: the same as exporting them in this process
    from nasdsl.backends.onnx import export_onnx_bytes

    assert out.read_bytes() == export_onnx_bytes(g, state_dict=weights)
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    assert run_onnx(onnx.load(out), {"x": x})["out"].shape == (1, 1000)


def test_pt_weights_still_load(tmp_path, graphs):
    import torch

    from nasdsl.backends.onnx import export_onnx_bytes
    from nasdsl.weights import load_weights, to_torch

    g = graphs["resnet18"]
    weights = to_torch(initial_weights(g, seed=5))
    torch.save(weights, tmp_path / "w.pt")
    loaded = load_weights(tmp_path / "w.pt")
    assert all(torch.equal(loaded[k], weights[k]) for k in weights)
    assert export_onnx_bytes(g, state_dict=loaded) == export_onnx_bytes(g, state_dict=initial_weights(g, seed=5))


# -- initialisation in numpy -------------------------------------------------------------------


def test_initial_weights_follow_the_googlenet_init_rules(graphs):
    """GoogLeNet (Caffe): xavier filler (uniform in +-sqrt(3 / fan_in)), every bias 0.2."""
    g = graphs["googlenet"]
    w = initial_weights(g)
    assert w.keys() == parameters(g).keys()
    conv = w["inception4a.branch2.1.conv.weight"]  # 208 x 96 x 3 x 3: fan_in 864
    bound = math.sqrt(3 / (96 * 9))
    assert conv.dtype == np.float32 and np.abs(conv).max() <= bound
    assert abs(float(conv.std()) - bound / math.sqrt(3)) < 0.02 * bound  # uniform's std
    assert all(np.all(v == np.float32(0.2)) for k, v in w.items() if k.endswith(".bias"))
    assert np.array_equal(initial_weights(g)["fc.weight"], w["fc.weight"])  # seeded
    assert not np.array_equal(initial_weights(g, seed=1)["fc.weight"], w["fc.weight"])


def test_initial_weights_follow_pytorch_defaults_and_batch_norm_rules(graphs):
    g = graphs["googlenet_bn"]  # conv: trunc_normal std 0.01 (torchvision); BatchNorm 1, 0
    w = initial_weights(g)
    conv = w["inception4a.branch2.1.conv.weight"]
    rule = ir.info(g).init["conv2d"]["weight"]
    assert rule.scheme == "trunc_normal"
    args = dict(rule.args)
    assert conv.min() >= args["a"] and conv.max() <= args["b"]
    assert abs(float(conv.std()) - args["std"]) < 0.1 * args["std"]
    assert np.all(w["conv1.bn.weight"] == 1) and np.all(w["conv1.bn.bias"] == 0)
    assert np.all(w["conv1.bn.running_var"] == 1) and w["conv1.bn.num_batches_tracked"].dtype == np.int64
    sq = graphs["squeezenet1_1"]  # kaiming_uniform with fan_in for convolutions, but the last one's own rule
    ws = initial_weights(sq)
    fire = ws["features.3.expand3x3.weight"]  # 64 x 16 x 3 x 3: fan_in 144 (fan_out 576)
    bound = math.sqrt(2) * math.sqrt(3 / 144)
    assert np.abs(fire).max() <= bound and abs(float(fire.std()) / (bound / math.sqrt(3)) - 1) < 0.05
    assert np.all(ws["features.3.expand3x3.bias"] == 0)
    last = ws["classifier.1.weight"]  # normal, std 0.01 (1000 x 512)
    assert abs(float(last.std()) / 0.01 - 1) < 0.02 and np.abs(last).max() > 0.03  # normal: tails beyond 3 std
    assert np.all(ws["classifier.1.bias"] == 0)  # the op's rule for what the layer's own leaves out


def test_initial_weights_match_the_generated_reset_parameters_in_distribution(graphs):
    """The same rules drive the generated reset_parameters: the two draws differ, their spread does not."""
    import torch

    from nasdsl.backends.pytorch import model_class

    for name, key in (
        ("googlenet", "inception5b.branch2.1.conv.weight"),
        ("resnet18", "layer3.0.conv1.weight"),
        ("densenet121", "features.denseblock3.denselayer1.conv1.weight"),  # kaiming_normal, fan_in
        ("squeezenet1_1", "classifier.1.weight"),  # a layer's own rule
        ("efficientnet_b0", "classifier.1.weight"),  # fan_uniform, fan_out
    ):
        g = graphs[name]
        torch.manual_seed(0)
        ours = initial_weights(g)[key]
        theirs = model_class(g)().state_dict()[key].numpy()
        assert ours.shape == theirs.shape
        assert abs(float(ours.std()) / float(theirs.std()) - 1) < 0.05, name


def test_pytorch_default_init_bounds(tmp_path):
    c = write(
        tmp_path,
        """\
        name: Plain
        input: {shape: [4, 5, 5]}
        model:
          conv: {op: conv2d, out: 6, kernel: 3}
          flat: flatten
          fc: {op: linear, out: 2}
        """,
    )
    w = initial_weights(c.graph)
    for key, fan_in in (("conv.weight", 36), ("conv.bias", 36), ("fc.weight", 54), ("fc.bias", 54)):
        assert np.abs(w[key]).max() <= 1 / math.sqrt(fan_in), key


SWITCHED = """\
name: Switched
input: {shape: [3, 8, 8]}
variables: {extra: false, aux: false, wide: 4}
templates:
  Block:
    params: [c, {sw: false}]
    body:
      conv: {op: conv2d, out: c, kernel: 1}
      bn: {op: batch_norm, when: sw}
      act: relu
model:
  a: {use: Block, args: {c: wide, sw: extra}}
  b: {op: conv2d, out: 8, kernel: 3, padding: 1, when: extra}
  pool: global_avg_pool
  flat: flatten
  fc: {op: linear, out: 3}
outputs:
  logits: {from: fc}
  side: {from: a, head: [global_avg_pool, flatten, {op: linear, out: 2}], when: aux, training_only: true}
"""


#: layers inside ops' modules (the attentions' projections, patch merging's reduction and norm, a
#: pooling attention's convolution and norm), rules by op, a block's own rule for an attention's
#: out_proj and its op's, each naming a parameter a layer rule names too, and a rule for an op
#: the model does not use
INNER_LAYERS = """\
name: InnerLayers
input: {shape: [3, 8, 8]}
init:
  linear: {weight: 0.25, bias: 0.5}
  layer_norm: {weight: 2, bias: -1}
  conv3d: {weight: 0.125}
  attention: {out_proj.bias: 0.75}
  partition_attention: {merge.weight: 0.75}  # no such layer here: a rule for nothing
model:
  embed: {op: conv2d, out: 8, kernel: 1}
  last: {op: permute, dims: [1, 2, 0]}
  windows: {op: window_attention, heads: 2, window: [4, 4], shift: [2, 2]}
  v2: {op: window_attention, heads: 2, window: [4, 4], version: 2}
  merge: {op: patch_merging, out: 12}
  first: {op: permute, dims: [2, 0, 1]}
  parts: {op: reshape, shape: [12, 4, 4], axes: CHW}
  tokens: [{op: flatten, start: 1}, {op: permute, dims: [1, 0]}]
  mha: {op: attention, heads: 2, init: {out_proj.weight: -0.5}}
  head: {op: linear, out: 3, dim: last}
"""


def test_layers_inside_op_modules_follow_their_ops_rules_alike_in_both_backends(tmp_path):
    """The rules of linear, layer_norm and conv3d reach the layers an op's module holds; a rule of
    the block or of its op for such a parameter comes first: numpy's initial weights (what
    `compile --to onnx` draws) and the generated reset_parameters agree on every constant."""
    from nasdsl.backends.pytorch import model_class

    path = tmp_path / "inner.yaml"
    path.write_text(INNER_LAYERS)
    g = nasdsl.compile_spec(path).graph
    ours = initial_weights(g)
    theirs = {k: v.numpy() for k, v in model_class(g)().state_dict().items()}
    expected = {
        "windows.qkv.weight": 0.25,
        "windows.proj.bias": 0.5,
        "v2.cpb_mlp.0.weight": 0.25,
        "v2.cpb_mlp.2.weight": 0.25,
        "merge.reduction.weight": 0.25,
        "merge.norm.weight": 2.0,
        "merge.norm.bias": -1.0,
        "mha.out_proj.weight": -0.5,
        "mha.out_proj.bias": 0.75,
        "head.weight": 0.25,
    }
    for key, value in expected.items():
        assert np.all(ours[key] == value), key
        assert np.all(theirs[key] == value), key
    # PyTorch's default where no rule names it: the attention's packed input projection
    assert len(np.unique(ours["mha.in_proj_weight"])) > 1 and len(np.unique(theirs["mha.in_proj_weight"])) > 1
