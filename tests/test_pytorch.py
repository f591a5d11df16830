"""The PyTorch backend against independent references: torchvision's GoogLeNet,
Caffe's train_val.prototxt, and PyTorch's own loss and init functions."""

from __future__ import annotations

import ast
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from ruff.__main__ import find_ruff_bin

import nasdsl
from nasdsl import build_model, ir
from nasdsl.backends.pytorch import generate_source, load_source, model_class

from caffe import parameter_shapes
from paths import ROOT, SPECS, compile_small
from reference_models import randomise_bn_stats

GOOGLENET = SPECS / "googlenet.yaml"
GOOGLENET_BN = SPECS / "googlenet_bn.yaml"
ALL_SPECS = sorted(SPECS.glob("*.yaml"))
#: the ruff program of the environment (``python -m ruff`` runs it after starting Python)
RUFF = find_ruff_bin()
#: specs whose training forward and backward cost several seconds and add nothing another test
#: lacks: the segmentation models on dilated backbones (resnet50.yaml's and mobilenet_v3_large.yaml's
#: layers at 1/8 and 1/16 of the input; their heads, outputs and nested reads are run in
#: tests/test_segmentation.py, LR-ASPP's here)
HEAVY = {"fcn_resnet50", "deeplabv3_resnet50", "deeplabv3_mobilenet_v3_large"}


def torchvision_googlenet(**kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return torchvision.models.googlenet(weights=None, init_weights=True, **kwargs)


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))


# -- googlenet_bn against torchvision ----------------------------------------------


def test_bn_loads_torchvision_weights_and_matches_eval(image):
    reference = torchvision_googlenet(aux_logits=True)
    randomise_bn_stats(reference)
    model = build_model(GOOGLENET_BN)
    model.load_state_dict(reference.state_dict(), strict=True)
    reference.eval(), model.eval()
    with torch.no_grad():
        expected, got = reference(image), model(image)
    assert isinstance(got, torch.Tensor) and got.shape == (2, 1000)
    assert (expected - got).abs().max().item() <= 1e-5


def test_bn_training_outputs_match_torchvision_without_dropout(image):
    reference = torchvision_googlenet(aux_logits=True, dropout=0.0, dropout_aux=0.0)
    model = build_model(GOOGLENET_BN, dropout=0.0, dropout_aux=0.0)
    model.load_state_dict(reference.state_dict(), strict=True)
    reference.train(), model.train()
    expected, got = reference(image), model(image)
    assert type(got).__name__ == "GoogLeNetBNOutputs" and got._fields == ("logits", "aux1", "aux2")
    assert (expected.logits - got.logits).abs().max().item() <= 1e-5
    # torchvision 0.29: aux_logits1 comes from aux1 (on 4a), aux_logits2 from aux2 (on 4d)
    assert (expected.aux_logits1 - got.aux1).abs().max().item() <= 1e-5
    assert (expected.aux_logits2 - got.aux2).abs().max().item() <= 1e-5


def test_bn_without_aux_heads_matches_torchvision_without_aux(image):
    reference = torchvision_googlenet(aux_logits=False)
    randomise_bn_stats(reference)
    model = build_model(GOOGLENET_BN, aux_logits=False)
    assert model.aux1 is None and model.aux2 is None
    model.load_state_dict(reference.state_dict(), strict=True)
    reference.train(), model.train()
    torch.manual_seed(3)
    expected = reference(image)
    torch.manual_seed(3)
    got = model(image)  # no aux heads: a plain tensor even in training
    assert isinstance(got, torch.Tensor)
    assert (expected - got).abs().max().item() <= 1e-5


def test_state_dict_keys_are_torchvisions(torchvision_googlenet_state_dict):
    keys = list(torchvision_googlenet_state_dict)
    model = build_model(GOOGLENET_BN)
    assert sorted(model.state_dict()) == sorted(keys)


def test_constructor_takes_the_spec_variables():
    source = generate_source(nasdsl.compile_spec(GOOGLENET_BN))
    cls = load_source(source).GoogLeNetBN
    model = cls(num_classes=10, aux_logits=True, dropout=0.5, dropout_aux=0.1)
    assert model.fc.out_features == 10 and model.aux1.fc2.out_features == 10
    assert model.dropout.p == 0.5 and model.aux2.dropout.p == 0.1
    assert cls(aux_logits=False).aux1 is None


SWITCHES = """\
nasdsl: 1
name: Net
input: {shape: [3, 8, 8]}
variables: {flag: false, more: true, pick: false, tap: true}
templates:
  T:
    params: [sw]
    body:
      a: {op: conv2d, out: 4, kernel: 1}
      b: {op: batch_norm, when: sw}
      c: relu
      d: {op: dropout, p: 0.1, when: sw}
      e: relu
model:
  t1: {use: T, args: [flag]}
  s: {op: batch_norm, when: more}
  u: relu
  t2: {use: T, args: [more]}
  k: {ref: t1, when: pick}
  w: relu
  v: {op: conv2d, out: 2, kernel: 1}
outputs:
  main: {from: w, head: [global_avg_pool, flatten, {op: linear, out: 3}]}
  side: {from: v, when: more, head: [global_avg_pool, flatten]}
  plain: {from: t2, when: tap}
"""


def test_every_combination_of_switches_matches_onnx(tmp_path):
    """The class is written once, with every switch on; built with any combination of its
    constructor's switches it must compute what the ONNX export of the spec compiled with
    those values computes, on the same weights. In-place activations after switchable blocks
    and the main output's head are where this went wrong. A switch of a ref (pick) or of an
    output without a head (tap) cannot be a constructor argument: it is folded."""
    import itertools

    from nasdsl.backends.onnx import export_onnx
    from nasdsl.backends.verify import compare, run_onnx, torch_outputs

    path = tmp_path / "switches.yaml"
    path.write_text(SWITCHES)
    source = generate_source(nasdsl.compile_spec(path))
    cls = load_source(source).Net
    assert "pick" not in source and "tap" not in source
    assert "def __init__(self, flag: bool = False, more: bool = True)" in source
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    for flag, more in itertools.product([False, True], repeat=2):
        model = cls(flag=flag, more=more).eval()
        other = nasdsl.compile_spec(path, overrides={"flag": flag, "more": more})
        got = run_onnx(export_onnx(other, state_dict=model.state_dict(), batch=4), {"x": x.numpy()})
        want = torch_outputs(model, x, list(got))
        assert sorted(got) == sorted(want) == (["main", "plain", "side"] if more else ["main", "plain"])
        for name, value in got.items():
            assert compare(name, value, want[name], 1e-5).ok, (flag, more, name)


#: ``from: a`` across an entry a constructor argument switches (in the model, and in a template
#: whose parameter that argument sets): the reader skips it whether it runs or not
FROM_ACROSS_SWITCH = """\
nasdsl: 1
name: Net
input: {shape: [3, 8, 8]}
variables: {flag: false, more: false}
templates:
  T:
    params: [sw]
    body:
      a: {op: conv2d, out: 4, kernel: 1}
      b: {op: batch_norm, when: sw}
      d: {op: conv2d, out: 4, kernel: 1, from: a}
model:
  a: {op: conv2d, out: 4, kernel: 1}
  b: {op: batch_norm, when: more}
  d: {op: conv2d, out: 4, kernel: 1, from: a}
  t: {use: T, args: [flag]}
"""


def test_a_from_across_a_switch_of_the_constructor_reads_what_it_names(tmp_path):
    """The class is written with the switches off; built with any of them on, ``d`` must still
    read ``a`` (not the switched entry after it), as the ONNX export of the spec compiled with
    those values computes."""
    import itertools

    from nasdsl.backends.onnx import export_onnx
    from nasdsl.backends.verify import compare, run_onnx, torch_outputs

    path = tmp_path / "across.yaml"
    path.write_text(FROM_ACROSS_SWITCH)
    cls = load_source(generate_source(nasdsl.compile_spec(path))).Net
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    for flag, more in itertools.product([False, True], repeat=2):
        model = cls(flag=flag, more=more).eval()
        with torch.no_grad():
            for m in model.modules():  # a BatchNorm that is not the identity
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.uniform_(-1, 1)
                    m.running_var.uniform_(0.5, 2)
        other = nasdsl.compile_spec(path, overrides={"flag": flag, "more": more})
        got = run_onnx(export_onnx(other, state_dict=model.state_dict(), batch=2), {"x": x.numpy()})
        want = torch_outputs(model, x, list(got))
        for name, value in got.items():
            assert compare(name, value, want[name], 1e-5).ok, (flag, more, name)


# -- googlenet against Caffe's prototxt ----------------------------------------------

CAFFE_NAMES = {
    "conv1/7x7_s2": "conv1.conv",
    "conv2/3x3_reduce": "conv2.conv",
    "conv2/3x3": "conv3.conv",
    "loss3/classifier": "fc",
}
BRANCHES = {
    "1x1": "branch1.conv",
    "3x3_reduce": "branch2.0.conv",
    "3x3": "branch2.1.conv",
    "5x5_reduce": "branch3.0.conv",
    "5x5": "branch3.1.conv",
    "pool_proj": "branch4.1.conv",
}


def caffe_to_ours(layer: str) -> str:
    if layer in CAFFE_NAMES:
        return CAFFE_NAMES[layer]
    head, _, tail = layer.partition("/")
    if head.startswith("inception_"):
        return f"inception{head[len('inception_') :]}.{BRANCHES[tail]}"
    aux = {"loss1": "aux1", "loss2": "aux2"}[head]
    return f"{aux}.{ {'conv': 'conv.conv', 'fc': 'fc1', 'classifier': 'fc2'}[tail] }"


def test_googlenet_parameters_have_caffes_shapes():
    caffe = parameter_shapes()  # from bvlc_googlenet's train_val.prototxt, aux heads included
    expected = {}
    for key, shape in caffe.items():
        layer, _, param = key.rpartition(".")
        expected[f"{caffe_to_ours(layer)}.{param}"] = shape
    model = build_model(GOOGLENET)
    got = {k: tuple(p.shape) for k, p in model.named_parameters()}
    assert got == expected
    assert sum(math.prod(s) for s in expected.values()) == 13_378_280


def test_googlenet_eval_output_and_softmax(image):
    model = build_model(GOOGLENET).eval()
    with torch.no_grad():
        out = model(image)
    assert out.shape == (2, 1000)
    # the output is the logits, at inference as in training (Caffe's deploy "prob" is their softmax)
    assert not torch.allclose(out.sum(1), torch.ones(2), atol=1e-3)
    model.train()
    with torch.no_grad():
        torch.manual_seed(0)
        trained = model(image)
    assert trained.logits.shape == out.shape  # the same kind of value in both modes


def test_googlenet_training_lowers_the_weighted_loss():
    torch.manual_seed(0)
    model = build_model(GOOGLENET, num_classes=10).train()
    x = torch.randn(4, 3, 224, 224) * 50  # the model subtracts a 0-255 mean itself
    target = torch.tensor([0, 1, 2, 3])
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    losses = []
    for _ in range(4):
        out = model(x)
        loss = model.loss(out, target)
        manual = F.cross_entropy(out.logits, target) + 0.3 * (
            F.cross_entropy(out.aux1, target) + F.cross_entropy(out.aux2, target)
        )
        assert torch.allclose(loss, manual)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses


def test_mean_subtraction_is_part_of_the_model(image):
    with_mean = build_model(GOOGLENET).eval()
    without = build_model(nasdsl.compile_spec(GOOGLENET, {"input.mean": None})).eval()
    without.load_state_dict(with_mean.state_dict(), strict=True)
    mean = torch.tensor([104.0, 117.0, 123.0]).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(with_mean(image), without(image - mean), atol=1e-6)


def test_initialisation_follows_the_spec():
    caffe = build_model(GOOGLENET)
    conv = caffe.inception4a.branch2[1].conv
    bound = math.sqrt(3.0 / (conv.in_channels * 9))
    assert conv.weight.abs().max().item() <= bound
    assert abs(conv.weight.std().item() - bound / math.sqrt(3)) < 0.1 * bound
    assert torch.all(conv.bias == 0.2) and torch.all(caffe.fc.bias == 0.2)
    bn = build_model(GOOGLENET_BN)
    assert abs(bn.inception4a.branch2[1].conv.weight.std().item() - 0.01) < 0.001
    assert torch.all(bn.conv1.bn.weight == 1) and torch.all(bn.conv1.bn.bias == 0)


LAYER_RULES = """\
name: Net
input: {shape: [3, 16, 16]}
variables: {aux: false}
init:
  conv2d: {bias: zeros}
templates:
  Block:
    params: [c]
    body:
      conv: {op: conv2d, out: c, kernel: 3, padding: 1, init: {weight: 0.25}}
      act: relu
model:
  stem: {op: conv2d, out: 8, kernel: 3}
  stage: {repeat: 3, name: "layer{i + 1}", block: {use: Block, args: [8]}}
  pool: global_avg_pool
  flat: flatten
  fc: {op: linear, out: 5}
outputs:
  logits: {from: fc}
  side:
    from: stage
    when: aux
    training_only: true
    head: [global_avg_pool, flatten, {op: linear, out: 5, init: {weight: 0.5, bias: -1}}]
"""


def test_layers_with_rules_of_their_own(tmp_path):
    """A block's own init, in a repeated template and in a head that a constructor argument
    builds: the generated class and nasdsl's numpy draw (the ONNX export's weights) both follow
    it, and the op's rule for the parameters it leaves out (the convolutions' zero bias)."""
    from nasdsl.weights import initial_weights

    path = tmp_path / "net.yaml"
    path.write_text(LAYER_RULES)
    net = nasdsl.compile_spec(path)  # aux false: the head is dormant, the class builds it on request
    for aux in (False, True):
        state = build_model(net, aux=aux).state_dict()
        for k in ("stage.layer1.conv", "stage.layer2.conv", "stage.layer3.conv"):
            assert torch.all(state[f"{k}.weight"] == 0.25) and torch.all(state[f"{k}.bias"] == 0), k
        assert not torch.all(state["stem.weight"] == 0.25) and torch.all(state["stem.bias"] == 0)
        assert ("side.2.weight" in state) == aux
        if aux:
            assert torch.all(state["side.2.weight"] == 0.5) and torch.all(state["side.2.bias"] == -1)
    drawn = initial_weights(nasdsl.compile_spec(path, {"aux": True}).graph)
    assert np.all(drawn["stage.layer2.conv.weight"] == 0.25) and np.all(drawn["side.2.bias"] == -1)
    assert np.all(drawn["stage.layer2.conv.bias"] == 0)


# -- every spec -------------------------------------------------------------------


@pytest.mark.parametrize("spec", [p for p in ALL_SPECS if p.stem not in HEAVY], ids=lambda p: p.stem)
def test_every_spec_runs_forward_and_backward(spec):
    """At the smallest input the spec accepts: the structure is what is tested."""
    net = compile_small(spec)
    model = build_model(net).train()
    out = model(torch.randn(2, *net.summary()["input"]))
    main = out if isinstance(out, torch.Tensor) else out[0]
    assert tuple(main.shape[1:]) == tuple(ir.node(net.graph, ir.info(net.graph).outputs[0].node).shape)
    if main.dim() == 2:
        loss = model.loss(out, torch.zeros(2, dtype=torch.long))
    else:  # every output's mean (a segmentation model's `out` and `aux`)
        loss = sum(o.float().mean() for o in ([out] if isinstance(out, torch.Tensor) else out) if o is not None)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert sum(p.numel() for p in model.parameters()) == net.summary(with_aux=True)["totals"]["params"]


# -- the generated source ------------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [GOOGLENET, GOOGLENET_BN, SPECS / "vit_b_16.yaml", SPECS / "r3d_18.yaml", SPECS / "swin_t.yaml"],
    ids=lambda p: p.stem,
)
def test_golden_source(spec, update_golden):
    source = generate_source(nasdsl.compile_spec(spec), source_name=f"specs/{spec.name}")
    golden = ROOT / "tests" / "golden" / f"{spec.stem}.py"
    if update_golden:
        golden.write_text(source)
    assert golden.exists(), "run pytest --update-golden once to create the golden files"
    assert source == golden.read_text(), "generated source changed; review and rerun with --update-golden"


def test_a_docs_backticks_are_kept_and_its_quotes_dropped(tmp_path):
    """A ``doc:`` keeps its backticks (``width``, not "width ," with the mark turned into a space)
    and loses what could end the docstring or escape from it."""
    spec = tmp_path / "doc.yaml"
    spec.write_text(
        "nasdsl: 1\nname: Doc\ninput: {shape: [3, 8, 8]}\ntemplates:\n  Block:\n"
        '    doc: \'Conv to `width`, then `act`. Not """here""" nor \\\\there.\'\n'
        "    params: [width]\n    body:\n      conv: {op: conv2d, out: width, kernel: 1}\n"
        "model:\n  b: {use: Block, args: [4]}\n"
    )
    source = generate_source(nasdsl.compile_spec(spec))
    (cls,) = [n for n in ast.parse(source).body if isinstance(n, ast.ClassDef) and n.name == "Block"]
    assert ast.get_docstring(cls).startswith("Conv to `width`, then `act`. Not here nor there.")


@pytest.mark.parametrize(
    "doc, said",
    [
        ("!!! ???", "The Block block of the spec."),  # nothing left once made safe: the default is said
        ("日本語", "The Block block of the spec."),
        ("w" * 120, "w" * 120 + "."),  # one word longer than the line: ruff keeps it on the quotes' line
        ("`" + "x" * 90 + "`", "`" + "x" * 90 + "`."),
    ],
)
def test_a_doc_with_nothing_safe_or_one_long_word_gives_a_docstring_ruff_keeps(doc, said, tmp_path):
    spec = tmp_path / "doc.yaml"
    spec.write_text(
        f"nasdsl: 1\nname: Doc\ndoc: {json.dumps(doc)}\ninput: {{shape: [3, 8, 8]}}\ntemplates:\n  Block:\n"
        f"    doc: {json.dumps(doc)}\n    params: [width]\n    body:\n"
        "      conv: {op: conv2d, out: width, kernel: 1}\nmodel:\n  b: {use: Block, args: [4]}\n"
    )
    source = generate_source(nasdsl.compile_spec(spec))
    path = tmp_path / "doc.py"
    path.write_text(source)
    run = subprocess.run([RUFF, "format", "--isolated", "--check", str(path)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    classes = {n.name: n for n in ast.parse(source).body if isinstance(n, ast.ClassDef)}
    assert ast.get_docstring(classes["Block"]) == said
    assert ast.get_docstring(classes["Doc"]).splitlines()[0] == said.replace("Block block of the spec", "Doc model")


@pytest.mark.parametrize("spec", ALL_SPECS, ids=lambda p: p.stem)
def test_source_passes_ruff_and_imports_torch_alone(spec, tmp_path):
    net = nasdsl.compile_spec(spec)
    source = generate_source(net)
    path = tmp_path / f"{spec.stem}.py"
    path.write_text(source)
    ruff = [RUFF]
    strict = ["--select", "E,F,W,I,B,UP,RUF"]  # RUF100 finds a stale noqa pragma
    for args in (["check", "--isolated", *strict, str(path)], ["format", "--isolated", "--check", str(path)]):
        run = subprocess.run(ruff + args, capture_output=True, text=True)
        assert run.returncode == 0, run.stdout + run.stderr
    tree = ast.parse(source)
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module.split(".")[0])
    assert imported <= {"torch", "typing", "collections", "math"}
    public = ast.literal_eval(next(n.value for n in tree.body if isinstance(n, ast.Assign)))
    # ruff's RUF022 order: SCREAMING_CASE names (S3D) first, then the classes
    assert net.spec.name in public and public == sorted(public, key=lambda n: (not n.isupper(), n))
    assert "noqa" not in source


def test_source_is_deterministic_across_processes():
    code = (
        "import sys; from nasdsl.backends.pytorch import generate_source; import nasdsl;"
        f"sys.stdout.write(generate_source(nasdsl.compile_spec({str(GOOGLENET_BN)!r})))"
    )
    outputs = set()
    for seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        outputs.add(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, check=True).stdout)
    assert len(outputs) == 1


# -- compile, export, memory formats ---------------------------------------------


def test_torch_compile_fullgraph_has_no_graph_breaks():
    """At the smallest input the spec takes: a graph break is the code's, whatever the sizes."""
    net = compile_small(GOOGLENET_BN)
    model = build_model(net).eval()
    image = torch.randn(2, *net.summary()["input"], generator=torch.Generator().manual_seed(2))
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    with torch.no_grad():
        assert torch.allclose(compiled(image[:1]), model(image[:1]), atol=1e-5)
    model.train()
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    out = compiled(image)
    assert out.aux1.shape == (2, 1000)


def test_torch_export(image):
    model = build_model(GOOGLENET).eval()
    exported = torch.export.export(model, (image[:1],))
    with torch.no_grad():
        assert torch.allclose(exported.module()(image[:1]), model(image[:1]), atol=1e-6)


#: the examples, and the specs whose generated code uses something the others do not (a training-only
#: head, outputs, switches, parameter-switched entries, dashed names, loops, Slice, Permute, LayerNorm2d,
#: StochasticDepth, layer_scale, a head reading inside a list (LR-ASPP, DeepLabV3-MobileNetV3: run a
#: line per layer), ASPP's pooling); scripting every spec of the zoo would take minutes
SCRIPTED_SPECS = (
    "googlenet",
    "googlenet_bn",
    "inception_v3",
    "resnet18",
    "mobilenet_v3_small",
    "shufflenet_v2_x1_0",
    "regnet_y_400mf",
    "convnext_tiny",
    "lraspp_mobilenet_v3_large",
    "deeplabv3_mobilenet_v3_large",
)
SCRIPTED = [
    *(p for p in ALL_SPECS if p.stem in SCRIPTED_SPECS),
    *sorted((ROOT / "docs" / "examples").glob("*.yaml")),
    # the Pad helper and a float attribute (a pad's value, dropout's p) an integer argument gives
    ROOT / "tests" / "specs" / "pad_params.yaml",
]


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_a_class_built_in_memory_scripts_with_its_outputs_tuple():
    """model_class (load_source) compiles the source on its own, not under the backend's
    `from __future__ import annotations`: the outputs NamedTuple keeps real types and scripts."""
    cls = model_class(compile_small(GOOGLENET_BN).graph)
    outputs = sys.modules[cls.__module__].GoogLeNetBNOutputs
    assert outputs.__annotations__["aux1"] == (torch.Tensor | None)
    torch.manual_seed(0)
    model = cls().eval()
    scripted = torch.jit.script(model)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(scripted(x), model(x))


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("spec", SCRIPTED, ids=lambda p: p.stem)
def test_generated_files_script_with_torchscript(spec, tmp_path, monkeypatch):
    """The written file, imported as a module, scripts with torch.jit.script and the scripted model
    computes what the eager one does (every output, eval mode)."""
    import importlib

    net = compile_small(spec)
    (tmp_path / f"generated_{spec.stem}.py").write_text(generate_source(net))
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module(f"generated_{spec.stem}")
    torch.manual_seed(0)
    model = getattr(module, net.name)().eval()
    scripted = torch.jit.script(model)
    x = torch.randn(2, *net.summary()["input"], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = model(x), scripted(x)
    want = [want] if isinstance(want, torch.Tensor) else [w for w in want if w is not None]
    got = [got] if isinstance(got, torch.Tensor) else [w for w in got if w is not None]
    assert len(want) == len(got) and all(torch.equal(w, g) for w, g in zip(want, got, strict=True))


def test_channels_last_and_bf16_autocast(image):
    model = build_model(GOOGLENET_BN).eval()
    with torch.no_grad():
        expected = model(image)
        cl = model.to(memory_format=torch.channels_last)(image.to(memory_format=torch.channels_last))
        assert torch.allclose(cl, expected, atol=1e-4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(image)
    assert low.dtype == torch.bfloat16
    assert (low.float() - expected).abs().max().item() < 0.05 * expected.abs().max().item() + 0.05


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_channels_last(image):
    model = build_model(GOOGLENET_BN).eval().cuda().to(memory_format=torch.channels_last)
    x = image.cuda().to(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        assert model(x).shape == (2, 1000)


def test_the_lists_of_container_attributes_cover_torch():
    from nasdsl.backends.names import MODULE_ATTRIBUTES, MODULE_DICT_ATTRIBUTES, SEQUENTIAL_ATTRIBUTES

    public = {n for n in dir(torch.nn.Module()) if not n.startswith("_")}
    assert public <= MODULE_ATTRIBUTES, sorted(public - MODULE_ATTRIBUTES)
    sequential = {n for n in dir(torch.nn.Sequential()) if not n.startswith("_")} - public
    assert sequential <= SEQUENTIAL_ATTRIBUTES, sorted(sequential - SEQUENTIAL_ATTRIBUTES)
    module_dict = {n for n in dir(torch.nn.ModuleDict()) if not n.startswith("_")} - public
    assert module_dict <= MODULE_DICT_ATTRIBUTES, sorted(module_dict - MODULE_DICT_ATTRIBUTES)


def test_torch_compile_default_backend_on_the_cpu():
    """Inductor, fullgraph: a small spec keeps the C++ compile short (GoogLeNet is in the benchmark)."""
    spec = ROOT / "docs" / "examples" / "inception_module.yaml"
    net = nasdsl.compile_spec(spec)
    model = build_model(net).eval()
    c, h, w = net.summary()["input"]
    x = torch.randn(2, c, h, w)
    with torch.no_grad():
        assert torch.allclose(torch.compile(model, fullgraph=True)(x), model(x), atol=1e-5)


STAGES = """\
name: Stages
input: {shape: [3, 16, 16]}
templates:
  Stage:
    params: [width, depth]
    body:
      down: {op: conv2d, out: width, kernel: 3, stride: 2, padding: 1}
      blocks: {repeat: depth, block: [{op: conv2d, out: width, kernel: 3, padding: 1}, relu]}
model:
  s1: {use: Stage, args: [8, 2]}
  s2: {use: Stage, args: [16, 4]}
  pool: global_avg_pool
"""


def test_a_repeat_count_set_by_a_parameter_is_the_loop_end(tmp_path):
    """One class for uses at two depths: its loop runs to the argument, which the docstring says,
    and built with another depth it holds that many blocks."""
    path = tmp_path / "stages.yaml"
    path.write_text(STAGES)
    net = nasdsl.compile_spec(path)
    source = generate_source(net.graph)
    assert source.count("class Stage(nn.Module):") == 1
    assert "for _ in range(depth):" in source and "depth: repetitions of blocks" in source
    module = load_source(source)
    model = module.Stages()
    # by hand: 3x3 convolutions with bias, 3 -> 8 (stride 2), 2 x (8 -> 8), 8 -> 16, 4 x (16 -> 16)
    expected = (27 * 8 + 8) + 2 * (72 * 8 + 8) + (72 * 16 + 16) + 4 * (144 * 16 + 16)
    assert sum(p.numel() for p in model.parameters()) == expected == net.totals()["params"]
    assert len(model.s1.blocks) == 2 and len(model.s2.blocks) == 4
    assert len(module.Stage(3, 8, 5).blocks) == 5


def test_a_shape_given_by_a_template_parameter_is_passed_on(tmp_path):
    """A learned tensor's shape and a reshape's shape, each a template parameter with another list
    at each use: one class, which makes each use's tensor and reshapes to each use's shape (the
    writer took such a parameter for a list of its own, and failed)."""
    path = tmp_path / "shapes.yaml"
    path.write_text(
        """\
nasdsl: 1
name: Shapes
input: {shape: [4, 6]}
templates:
  Token:
    params: [shape, cut]
    body:
      token: {op: parameter, shape: shape}
      cut: {op: reshape, shape: cut}
model:
  a: {use: Token, args: [[1, 6], [2, 3]]}
  b: {use: Token, args: [[2, 6], [3, 4]]}
"""
    )
    source = generate_source(nasdsl.compile_spec(path).graph)
    assert source.count("class Token(nn.Module):") == 1
    model = load_source(source).Shapes()
    state = model.state_dict()
    assert [tuple(state[k].shape) for k in ("a.token", "b.token")] == [(1, 1, 6), (1, 2, 6)]
    with torch.no_grad():
        got = model(torch.randn(5, 4, 6))
    assert torch.equal(got, state["b.token"].expand(5, 2, 6).reshape(5, 3, 4))


def test_a_parameter_given_one_value_per_axis_is_annotated_with_as_many(tmp_path):
    """A template's kernel and padding given per axis of a 3-D convolution are annotated as triples
    (they were written ``tuple[int, int]`` whatever their length), and the class takes them."""
    spec = tmp_path / "sep3d.yaml"
    spec.write_text(
        "nasdsl: 1\nname: Sep3d\ninput: {shape: [3, 4, 8, 8]}\ntemplates:\n  Conv:\n"
        "    params: [out, kernel, padding]\n"
        "    body:\n      conv: {op: conv3d, out: out, kernel: kernel, padding: padding}\n"
        "model:\n  spatial: {use: Conv, args: [4, [1, 3, 3], [0, 1, 1]]}\n"
        "  temporal: {use: Conv, args: [4, [3, 1, 1], [1, 0, 0]]}\n  pool: global_avg_pool\n  flat: flatten\n"
    )
    net = nasdsl.compile_spec(spec)
    tree = ast.parse(generate_source(net))
    init = next(
        f for c in tree.body if isinstance(c, ast.ClassDef) and c.name == "Conv" for f in c.body
        if isinstance(f, ast.FunctionDef) and f.name == "__init__"
    )  # fmt: skip
    annotations = {a.arg: ast.unparse(a.annotation) for a in init.args.args if a.annotation is not None}
    assert annotations["kernel"] == annotations["padding"] == "tuple[int, int, int]"
    model = build_model(net).eval()
    assert model.temporal.conv.kernel_size == (3, 1, 1) and model(torch.randn(1, 3, 4, 8, 8)).shape == (1, 4)


def test_a_renamed_parameter_is_documented_by_its_new_name(tmp_path):
    """A template parameter named like a module-level name of the file (``F``) is renamed in the
    signature, and the docstring's Args name it as the signature does."""
    spec = tmp_path / "kw.yaml"
    spec.write_text(
        "nasdsl: 1\nname: Kw\ninput: {shape: [3, 8, 8]}\ntemplates:\n  Conv:\n    params: [F]\n"
        "    body:\n      conv: {op: conv2d, out: F, kernel: 3}\nmodel:\n  a: {use: Conv, args: [4]}\n"
        "  b: {use: Conv, args: [6]}\n"
    )
    tree = ast.parse(generate_source(nasdsl.compile_spec(spec)))
    init = next(
        f for c in tree.body if isinstance(c, ast.ClassDef) and c.name == "Conv" for f in c.body
        if isinstance(f, ast.FunctionDef) and f.name == "__init__"
    )  # fmt: skip
    signature = [a.arg for a in init.args.args][1:]
    documented = [line.split(":")[0].strip() for line in ast.get_docstring(init).split("Args:")[1].strip().splitlines()]
    assert signature == documented == ["in_channels", "F_1"]
