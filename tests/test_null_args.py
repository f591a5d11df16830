"""A template argument or default that is ``null``: the parameter gives no value, and the op
attribute it reaches is not given (docs/spec-language.md, "Null arguments").

The graph of a use that passes null is compared with the graph of the same spec whose template
leaves the attribute out; the generated model, one class for uses that give the parameter and
uses that give null, is compared with ONNX Runtime's run of the export and with
torch.nn.functional computing each use by hand; null where it cannot mean "not given" is a
located error.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import nasdsl
from nasdsl import ir
from nasdsl.backends.onnx import export_onnx
from nasdsl.backends.pytorch import generate_source, load_source
from nasdsl.cli import main
from nasdsl.errors import NasdslError
from nasdsl.ir.sym import Sym

#: three optional attributes a parameter gives: interpolate's size and scale (null by default),
#: slice's stop (null by default, here a null default of the parameter too) and a convolution's
#: padding (0 by default); each template used once with a value and once with null
SPEC = """\
nasdsl: 1
name: Uses
outputs_by_name: true
input: {shape: [6, 5, 7]}
templates:
  Up:
    params: [size, scale]
    body:
      up: {op: interpolate, size: size, scale: scale}
  Cut:
    params: [start, {stop: null}]
    body:
      cut: {op: slice, start: start, stop: stop}
  Conv:
    params: [out, pad]
    body:
      conv: {op: conv2d, out: out, kernel: 3, padding: pad}
model:
  a: {use: Up, args: [[8, 8], null]}
  b: {use: Up, args: [null, 2], from: in}
  c: {use: Cut, args: [1, 4], from: in}
  d: {use: Cut, args: [2], from: in}
  e: {use: Conv, args: [4, null], from: in}
  f: {use: Conv, args: [4, [1, 2]], from: in}
outputs:
  oa: {from: a}
  ob: {from: b}
  oc: {from: c}
  od: {from: d}
  oe: {from: e}
  of: {from: f}
"""


def _compile(tmp_path, text: str, name: str = "uses.yaml", overrides=()):
    path = tmp_path / name
    path.write_text(text)
    return nasdsl.compile_spec(path, overrides)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    return _compile(tmp_path_factory.mktemp("null"), SPEC)


@pytest.fixture(scope="module")
def generated(compiled):
    """The generated source, its model with weights moved off their start, and one input."""
    source = generate_source(compiled.graph)
    torch.manual_seed(0)
    model = load_source(source).Uses().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.rand_like(p))
    x = torch.randn(2, 6, 5, 7, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = model(x)
    return source, model, x, got


def _records(g) -> dict:
    """Every node's record without ``nulls`` (the one field that says a parameter was null), and the edges."""
    nodes = {
        n: dataclasses.replace(d, nulls=ir.EMPTY, loc=dataclasses.replace(d.loc, file="") if d.loc else None)
        for n, d in ir.nodes(g)
    }
    return {"nodes": nodes, "edges": sorted(g.edges(data="index"))}


def _onnx_nodes(compiled, use: str) -> list:
    """The ONNX nodes of a use: op, attributes and inputs, a constant by its value (their names
    count the constants of the whole graph)."""
    from onnx import numpy_helper

    graph = export_onnx(compiled.graph, opset=17).graph
    constants = {t.name: numpy_helper.to_array(t).tolist() for t in graph.initializer}
    return [
        (n.op_type, str(n.attribute), [constants.get(i, i) for i in n.input])
        for n in graph.node
        if n.name.startswith(f"{use}/")
    ]


# -- the graph -----------------------------------------------------------------------------------

#: (the node, its parameter that is null, the attribute, the template's text that writes it, the
#: same text without it, and the other use's arguments changed to fit: interpolate needs one of
#: size and scale)
LEFT_OUT = [
    ("a.up", "scale", "size: size, scale: scale}", "size: size}", ("[null, 2]", "[[10, 14], 2]")),
    ("b.up", "size", "interpolate, size: size, scale:", "interpolate, scale:", ("[[8, 8], null]", "[null, 3]")),
    ("d.cut", "stop", "start: start, stop: stop}", "start: start}", ("", "")),
    ("e.conv", "pad", "kernel: 3, padding: pad}", "kernel: 3}", ("", "")),
]


def _left_out(tmp_path, case):
    """The spec with the template's text leaving the attribute out, compiled (every position that
    the null use's nodes record is kept)."""
    _, _, written, without, (other, fitted) = case
    return _compile(tmp_path, SPEC.replace(written, without).replace(other, fitted))


@pytest.mark.parametrize("case", LEFT_OUT, ids=[c[0] for c in LEFT_OUT])
def test_a_null_argument_builds_the_graph_of_the_attribute_left_out(tmp_path, compiled, case):
    """The use that passes null and the same use of a template whose text leaves the attribute out
    give the same node record (but for ``nulls``: which parameter the class writes there), the
    same edges and the same ONNX nodes."""
    node, param = case[:2]
    other = _left_out(tmp_path, case)
    mine, theirs = _records(compiled.graph), _records(other.graph)
    assert mine["edges"] == theirs["edges"]
    assert mine["nodes"][node] == theirs["nodes"][node]
    key = {"pad": "padding"}.get(param, param)
    assert key not in ir.node(compiled.graph, node).given and key not in ir.node(compiled.graph, node).exprs
    assert ir.node(compiled.graph, node).nulls == {key: Sym.name(param)}
    assert ir.node(other.graph, node).nulls == {}
    mine, theirs = (_onnx_nodes(c, node.split(".")[0]) for c in (compiled, other))
    assert mine == theirs and mine
    nulled = {n for n, d in ir.nodes(compiled.graph) if d.nulls}
    assert nulled == {c[0] for c in LEFT_OUT}  # the uses that give the parameter record none


@pytest.mark.parametrize("spelling", ["~", "Null", "NULL", "", "null"])
def test_every_spelling_of_null_is_the_same_null(tmp_path, compiled, spelling):
    """YAML 1.1 and 1.2 read ``~``, ``Null``, ``NULL`` and an empty value as null alike."""
    text = SPEC.replace("args: [[8, 8], null]", f"args: {{size: [8, 8], scale: {spelling}}}")
    assert _records(_compile(tmp_path, text).graph) == _records(compiled.graph)


def test_set_gives_null_as_the_file_does(tmp_path, compiled, capsys):
    """``--set a.scale=null`` (and the API's None) is the file's null; nothing after ``=`` is refused."""
    text = SPEC.replace("args: [[8, 8], null]", "args: [[8, 8], 3]")
    for overrides in (["a.scale=null"], {"a.scale": None}):
        over = _compile(tmp_path, text, overrides=overrides)
        assert _records(over.graph) == _records(compiled.graph)
        assert generate_source(over.graph).split("\n", 1)[1] == generate_source(compiled.graph).split("\n", 1)[1]
    assert main(["check", str(tmp_path / "uses.yaml"), "--set", "a.scale="]) == 2
    assert capsys.readouterr().err == (
        "<--set a.scale=>:1:9: error: a.scale: expected a value after '=', got nothing (write null for no value)\n"
    )


# -- the generated model ---------------------------------------------------------------------------


def test_one_class_per_template_with_optional_annotations(generated):
    source = generated[0]
    for name in ("Up", "Cut", "Conv"):
        assert source.count(f"class {name}(nn.Module):") == 1
    assert "self, in_channels: int, size: tuple[int, int] | None, scale: int | None" in source
    assert "scale_factor=None if scale is None else float(scale)," in source  # 2 is an integer
    assert "size=size," in source
    assert "def __init__(self, in_channels: int, start: int, stop: int | None = None) -> None:" in source
    assert "self.cut = Slice(start, stop)" in source
    assert "self.conv = nn.Conv2d(in_channels, out, 3, padding=0 if pad is None else pad)" in source
    assert "stop: stop of cut (None: not given, the op's default)" in source
    for call in ("Up(6, (8, 8), None)", "Up(6, None, 2)", "Cut(6, 1, stop=4)", "Cut(6, 2)", "Conv(6, 4, None)"):
        assert f"= {call}\n" in source


def test_the_model_computes_what_onnx_runtime_computes(compiled, generated):
    import onnxruntime as ort

    source, model, x, got = generated
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    proto = export_onnx(compiled.graph, opset=17, state_dict=state, batch=2)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    want = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert len(want) == len(got) == 6
    for g, w in zip(got, want, strict=True):
        assert tuple(g.shape) == w.shape
        np.testing.assert_allclose(g.numpy(), w, rtol=1e-4, atol=1e-5)
    assert generate_source(compiled.graph) == source
    # the export against torch.nn.functional too: the uses without weights, by hand
    np.testing.assert_allclose(want[0], F.interpolate(x, size=(8, 8)).numpy())
    np.testing.assert_allclose(want[1], F.interpolate(x, scale_factor=2.0).numpy())
    np.testing.assert_allclose(want[3], x[:, 2:].numpy())


def test_the_model_computes_each_use_as_written_by_hand(generated):
    """torch.nn.functional with each use's values: the null one left out."""
    _, model, x, got = generated
    torch.testing.assert_close(got.oa, F.interpolate(x, size=(8, 8)))
    torch.testing.assert_close(got.ob, F.interpolate(x, scale_factor=2.0))
    torch.testing.assert_close(got.oc, x[:, 1:4])
    torch.testing.assert_close(got.od, x[:, 2:])
    w, b = model.e.conv.weight, model.e.conv.bias
    torch.testing.assert_close(got.oe, F.conv2d(x, w, b))
    w, b = model.f.conv.weight, model.f.conv.bias
    torch.testing.assert_close(got.of, F.conv2d(x, w, b, padding=(1, 2)))
    assert tuple(got.ob.shape) == (2, 6, 10, 14) and tuple(got.oe.shape) == (2, 4, 3, 5)


NESTED = """\
nasdsl: 1
name: Uses
outputs_by_name: true
input: {shape: [3, 4, 5]}
templates:
  Up:
    params: [size, scale]
    body:
      up: {op: interpolate, size: size, scale: scale, mode: bilinear}
  Outer:
    params: [s, {f: null}]
    body:
      conv: {op: conv2d, out: 4, kernel: 1}
      up: {use: Up, args: [s, f]}
model:
  a: {use: Outer, args: [[6, 9]]}
  b: {use: Outer, args: [null, 1.5], from: in}
outputs:
  oa: {from: a}
  ob: {from: b}
"""


def test_null_passes_through_a_template_to_another(tmp_path):
    """Outer passes its parameters on to Up; null at Outer's use reaches Up's interpolate."""
    import onnxruntime as ort

    compiled = _compile(tmp_path, NESTED)
    source = generate_source(compiled.graph)
    assert source.count("class Up(nn.Module):") == source.count("class Outer(nn.Module):") == 1
    assert "self.up = Up(4, s, f)" in source
    model = load_source(source).Uses().eval()
    x = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        got = model(x)
        conv = model.b.conv
        torch.testing.assert_close(got.ob, F.interpolate(conv(x), scale_factor=1.5, mode="bilinear"))
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    session = ort.InferenceSession(
        export_onnx(compiled.graph, opset=17, state_dict=state, batch=2).SerializeToString(),
        providers=["CPUExecutionProvider"],
    )
    for g, w in zip(got, session.run(None, {session.get_inputs()[0].name: x.numpy()}), strict=True):
        np.testing.assert_allclose(g.numpy(), w, rtol=1e-4, atol=1e-5)


# -- what the summary shows ---------------------------------------------------------------------


def test_the_summary_shows_the_argument_null_and_the_op_without_it(tmp_path, compiled, capsys):
    rows = {r["name"]: r for r in compiled.summary()["rows"]}
    assert rows["a"]["args"] == {"size": [8, 8], "scale": None}
    assert rows["d"]["args"] == {"start": 2, "stop": None}
    assert rows["e"]["args"] == {"out": 4, "pad": None}
    path = tmp_path / "uses.yaml"
    path.write_text(SPEC)
    assert main(["summary", str(path)]) == 0
    table = capsys.readouterr().out
    assert "size=[8,8] scale=null" in table and "size=null scale=2" in table and "out=4 pad=null" in table
    path.write_text(SPEC.replace("model:\n", "model:\n  one: {op: slice, start: 2}\n"))
    one = nasdsl.compile_spec(path)
    assert ir.node(one.graph, "one").given == ir.node(one.graph, "d.cut").given == ("start",)
    assert main(["check", str(path)]) == 0


# -- where null cannot mean "not given" ----------------------------------------------------------

ERRORS = """\
nasdsl: 1
name: E
input: {shape: [6, 5, 7]}
templates:
  Conv:
    params: [out, pad]
    body:
      conv: {op: conv2d, out: out, kernel: 3, padding: pad}
  Twice:
    params: [size]
    body:
      up: {op: interpolate, size: "size * 2"}
  Outer:
    params: [s]
    body:
      t: {use: Twice, args: [s]}
  Switch:
    params: [sw]
    body:
      r: {op: relu, when: sw}
  Pool:
    params: [s]
    body:
      p: {op: max_pool, kernel: 2, stride: s}
model:
"""


@pytest.mark.parametrize(
    ("use", "error"),
    [
        (
            "{use: Conv, args: [null, 1]}",
            "26:25: error: model.a.args[0]: expected a value for out, which conv2d requires, got null "
            "(used as 'out' of node a.conv)",
        ),
        (
            "{use: Twice, args: [~]}",
            "12:36: error: templates.Twice.body.up.size: expected 'size' to be a number or a boolean, got null "
            "(a null parameter passes on whole only, as a bare name: to an optional attribute or another "
            "template) ('size' is null as model.a.args[0] gives it, at PATH:26:26) (in node a.up)",
        ),
        (
            "{use: Outer, args: {s: null}}",
            "12:36: error: templates.Twice.body.up.size: expected 'size' to be a number or a boolean, got null "
            "(a null parameter passes on whole only, as a bare name: to an optional attribute or another "
            "template) ('size' is null as model.a.args.s gives it, at PATH:26:29) (in node a.t.up)",
        ),
        (
            "{use: Switch, args: [null]}",
            "26:27: error: model.a.args[0]: expected true or false, got null (used as 'when' of node a.r)",
        ),
        ("{use: Conv, args: [4, [1, null]]}", "26:32: error: model.a.args[1][1]: expected a value, got null"),
        ("{op: relu, when: null}", "26:23: error: model.a.when: expected a value, got null"),
        (
            "{op: conv2d, out: 4, kernel: ~}",
            "26:35: error: model.a.kernel: expected a value for kernel, which conv2d requires, got null",
        ),
        (
            "{op: conv2d, out: 4, kernel: {choice: [3, null]}}",
            "26:48: error: model.a.kernel.choice[1]: expected an option that is a number, true, false or an "
            "expression, got null (null is an option only where a value may be null: a template argument, a "
            "parameter's default or an op's optional attribute)",
        ),
        (
            "{repeat: {choice: [null, 2]}, block: relu}",
            "26:25: error: model.a.repeat.choice[0]: expected an option that is a number, true, false or an "
            "expression, got null (null is an option only where a value may be null: a template argument, a "
            "parameter's default or an op's optional attribute)",
        ),
        (
            "{op: relu, when: {choice: [true, null]}}",
            "26:39: error: model.a.when.choice[1]: expected an option that is a number, true, false or an "
            "expression, got null (null is an option only where a value may be null: a template argument, a "
            "parameter's default or an op's optional attribute)",
        ),
        (
            "{use: Conv, args: [4, {choice: [1, [1, null]]}]}",
            "26:41: error: model.a.args[1].choice[1]: expected an option that is a value or a list of values (got a "
            "list that holds null: a list holds values)",
        ),
    ],
    ids=[
        "required",
        "expression",
        "passed-on",
        "when",
        "in-a-list",
        "not-an-argument",
        "written-at-a-required-attribute",
        "option-of-a-required-attribute",
        "option-of-a-repeat",
        "option-of-a-when",
        "option-in-a-list",
    ],
)
def test_null_where_it_cannot_be_left_out_is_a_located_error(tmp_path, capsys, use, error):
    path = tmp_path / "e.yaml"
    path.write_text(ERRORS + f"  a: {use}\n")
    assert main(["check", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == f"{path}:{error.replace('PATH', str(path))}\n"


#: the spec's places outside the model where an option may not be null (docs/design-space.md,
#: "Null options"): an input's shape and an output's loss_weight; the same choice without null checks
NO_NULL_OPTION = [
    (
        ERRORS.replace("shape: [6, 5, 7]", "shape: [6, {choice: [NULL, 5]}, 7]") + "  a: relu\n",
        "3:30: error: input.shape[1].choice[0]: expected an option that is a number, true, false or an "
        "expression, got null",
    ),
    (
        ERRORS
        + "  a: relu\n  b: {op: relu, from: in}\noutputs:\n  o: {from: a}\n"
        + "  p: {from: b, loss_weight: {choice: [0.5, NULL]}}\n",
        "30:44: error: outputs.p.loss_weight.choice[1]: expected an option that is a number, true, false or an "
        "expression, got null",
    ),
]


@pytest.mark.parametrize(("text", "error"), NO_NULL_OPTION, ids=["input-shape", "loss-weight"])
def test_null_is_no_option_of_an_input_shape_or_a_loss_weight(tmp_path, capsys, text, error):
    path = tmp_path / "e.yaml"
    path.write_text(text.replace("NULL", "4"))
    assert main(["check", str(path)]) == 0
    capsys.readouterr()
    path.write_text(text.replace("NULL", "null"))
    assert main(["check", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"{path}:{error} (null is an option only where a value may be null")


def test_a_default_that_depends_on_other_attributes_is_refused_by_the_writer(tmp_path, capsys):
    """A pool's stride is its kernel by default: a class cannot write that for every use."""
    path = tmp_path / "e.yaml"
    path.write_text(ERRORS + "  a: {use: Pool, args: [null]}\n  b: {use: Pool, args: [1]}\n")
    assert main(["check", str(path)]) == 2  # check writes the source too: the same error
    checked = capsys.readouterr().err
    assert main(["compile", str(path), "-o", str(tmp_path / "e.py")]) == 2
    err = capsys.readouterr().err
    assert err == checked
    assert err.startswith(f"{path}:24:10: error: templates.Pool.body.p.stride: max_pool's stride is a parameter")
    assert "give stride a value at every use" in err and not (tmp_path / "e.py").exists()


def test_args_null_is_no_arguments(tmp_path):
    path = tmp_path / "e.yaml"
    path.write_text(ERRORS.replace("params: [sw]", "params: [{sw: true}]") + "  a: {use: Switch, args: null}\n")
    assert ir.node(nasdsl.compile_spec(path).graph, "a.r").op == "relu"
    with pytest.raises(NasdslError, match="expected true or false, got null"):
        nasdsl.compile_spec(path, ["a.sw=null"])


OPTIMIZED = """\
nasdsl: 1
name: Opt
input: {shape: [6, 9, 9]}
templates:
  Conv:
    params: [out, pad]
    body:
      conv: {op: conv2d, out: out, kernel: 3, padding: pad, bias: false}
      bn: batch_norm
      act: relu
  Pair:
    params: [pad]
    body:
      one: {use: Conv, args: [4, pad]}
      two: {use: Conv, args: [4, 1]}
model:
  a: {use: Conv, args: [8, null]}
  b: {use: Conv, args: [8, [1, 2]]}
  e: {use: Pair, args: [null]}
  f: {use: Pair, args: [1]}
"""


def test_an_inference_build_keeps_the_null_uses(tmp_path):
    """BatchNorm folded into the convolutions (a rewrite of each use), null passed through Pair to
    Conv: the inference class computes what the training model computes."""
    from nasdsl.backends.pytorch import model_class
    from nasdsl.optimize import optimize

    net = _compile(tmp_path, OPTIMIZED)
    torch.manual_seed(0)
    train = model_class(net.graph)().eval()
    with torch.no_grad():
        for m in train.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    g = optimize(net, "cuda", verify=True)
    assert "padding=0 if pad is None else pad" in generate_source(g)
    model = model_class(g).from_training_state_dict(train.state_dict()).eval()
    x = torch.randn(2, 6, 9, 9, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(model(x), train(x), rtol=1e-5, atol=1e-5)


def test_null_for_a_default_the_class_computes_is_refused_by_the_writer(tmp_path, capsys):
    """``if stop is None: stop = start + 2`` would turn a use's null into the default."""
    path = tmp_path / "e.yaml"
    path.write_text(
        SPEC.replace("params: [start, {stop: null}]", "params: [start, {stop: 'start + 2'}]").replace(
            "args: [2], from: in}", "args: [2, null], from: in}"
        )
    )
    net = nasdsl.compile_spec(path)
    assert "stop" not in ir.node(net.graph, "d.cut").given and ir.node(net.graph, "c.cut").attrs["stop"] == 4
    assert main(["compile", str(path), "-o", str(tmp_path / "e.py")]) == 2
    assert capsys.readouterr().err == (
        f"{path}:22:6: error: model.d: template Cut computes the default of its parameter stop, and the use at d "
        "gives it null: the generated class cannot tell null from not given; give a value there, or make the "
        "default null\n"
    )


def test_a_layer_whose_size_a_null_attribute_sets_needs_a_template_per_variant(tmp_path, capsys):
    """A convolution after the slice reads stop - start channels at one use, in_channels - start at
    the other: one class cannot write both, and the refusal names the two lines."""
    path = tmp_path / "e.yaml"
    text = SPEC.replace("      cut: {op: slice, start: start, stop: stop}\n", "").replace(
        "    params: [start, {stop: null}]\n    body:\n",
        "    params: [start, {stop: null}]\n    body:\n      cut: {op: slice, start: start, stop: stop}\n"
        "      conv: {op: conv2d, out: 4, kernel: 1}\n",
    )
    path.write_text(text)
    assert main(["compile", str(path), "-o", str(tmp_path / "e.py")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{path}:23:6: error: model.d: template Cut needs different code at c and d: ")
    assert "`self.conv = nn.Conv2d(stop - start, 4, 1)`" in err and "nn.Conv2d(in_channels - start, 4, 1)" in err


def test_the_annotation_of_a_null_parameter_keeps_the_other_uses_types():
    """``T | None`` from the values at the uses, a falsy value (0, false) a type like any other."""
    from nasdsl.backends.pytorch import _annotation

    assert _annotation([None, 0]) == "int | None"
    assert _annotation([False, None]) == "bool | None"
    assert _annotation([(8, 8), None, 2]) == "tuple[int, int] | int | None"
    assert _annotation([None, 2, 1.5]) == "float | None"
    assert _annotation([None]) == "None"


def test_the_documented_example(capsys):
    """docs/examples/null_args.yaml, as docs/spec-language.md describes it: the summary shows the
    null arguments, one class per template, and the model matches its ONNX export."""
    from pathlib import Path

    from nasdsl.backends.verify import verify

    path = Path(__file__).resolve().parent.parent / "docs" / "examples" / "null_args.yaml"
    assert main(["summary", str(path)]) == 0
    table = capsys.readouterr().out
    assert "out=12 size=[24,24] scale=null" in table and "out=12 size=null scale=1.5" in table
    net = nasdsl.compile_spec(path)
    source = generate_source(net.graph)
    assert source.count("class Resize(nn.Module):") == source.count("class Part(nn.Module):") == 1
    assert "scale: float | None = None," in source and "self.part = Slice(start, stop)" in source
    assert verify(net.graph, batch=2).ok


# -- null written as an op's attribute -------------------------------------------------------------

#: every way an attribute may be written null (flow, block style, ~), beside ops and a merge that
#: leave it out
WRITTEN = """\
nasdsl: 1
name: Written
outputs_by_name: true
input: {shape: [6, 5, 7]}
templates:
  Pad:
    params: [out]
    body:
      conv: {op: conv2d, out: out, kernel: 3, padding: null}
model:
  a: {op: slice, start: 2, stop: null}
  b:
    op: interpolate
    size: [4, 4]
    scale: ~
    from: in
  c: {use: Pad, args: [4], from: in}
  d: {concat: [relu, sigmoid], axis: Null, from: in}
outputs:
  oa: {from: a}
  ob: {from: b}
  oc: {from: c}
  od: {from: d}
"""

LEFT = (
    WRITTEN.replace(", padding: null}", "}")
    .replace(", stop: null}", "}")
    .replace("    scale: ~\n", "")
    .replace(", axis: Null,", ",")
)


def test_an_attribute_written_null_is_the_attribute_left_out(tmp_path):
    """The graph (every node's record, ``nulls`` included: no parameter gives the null), the
    generated source and the ONNX export are those of the spec that leaves the attributes out."""
    written, left = _compile(tmp_path, WRITTEN, "w.yaml"), _compile(tmp_path, LEFT, "l.yaml")
    assert LEFT.count("null") == LEFT.count("~") == 0
    for n, d in ir.nodes(written.graph):
        assert d == dataclasses.replace(ir.node(left.graph, n), loc=d.loc)  # all but the file's name
    assert sorted(written.graph.edges(data="index")) == sorted(left.graph.edges(data="index"))
    assert ir.node(written.graph, "a").given == ("start",) and ir.node(written.graph, "c.conv").nulls == {}
    assert generate_source(written.graph).split("\n", 1)[1] == generate_source(left.graph).split("\n", 1)[1]
    for use in ("a", "b", "c", "d"):
        assert _onnx_nodes(written, use) == _onnx_nodes(left, use)


# -- null as an option of a choice -------------------------------------------------------------------

#: a template argument, an op's attribute and a parameter's default (a template's own choice) that
#: may each be null: 3 x 2 x 2 variants
CHOSEN = """\
nasdsl: 1
name: Chosen
input: {shape: [6, 5, 7]}
templates:
  Conv:
    params: [out, {pad: null}]
    body:
      conv: {op: conv2d, out: out, kernel: 3, padding: pad}
  Cut:
    params: [{stop: {choice: [3, null], name: stop, default: null}}]
    body:
      cut: {op: slice, stop: stop}
model:
  a: {use: Conv, args: [4, {choice: [null, 0, 1], name: pad}]}
  b: Cut
  c: {op: slice, start: 1, stop: {choice: [null, 2], name: cstop}}
  d: {op: conv2d, out: 2, kernel: 1}
"""


def _by_hand(pad, stop, cstop) -> dict:
    """Parameters and multiply-adds counted from the ops' definitions: a 3x3 convolution of 6 to 4
    channels (a 3x5 map, 5x7 with padding 1), the channels cut to 4 (or 3) and from the second up
    to the end (or the second only), then a 1x1 convolution to 2."""
    hw = 35 if pad == 1 else 15
    channels = (3 if stop == 3 else 4) - 1 if cstop is None else 1
    return {"params": 4 * 6 * 9 + 4 + 2 * channels + 2, "macs": 4 * 6 * 9 * hw + 2 * channels * hw}


@pytest.fixture(scope="module")
def chosen(tmp_path_factory):
    path = tmp_path_factory.mktemp("chosen") / "chosen.yaml"
    path.write_text(CHOSEN)
    return path


def _unlocated(g) -> dict:
    """Every node's record, ``nulls`` included, without its location (a plain spec is laid out anew)."""
    return {
        "nodes": {n: dataclasses.replace(d, loc=None) for n, d in ir.nodes(g)},
        "edges": sorted(g.edges(data="index")),
    }


def test_null_options_are_listed_evaluated_picked_and_hashed(chosen, tmp_path, capsys):
    """``nasdsl space`` lists null, its figures (the fast evaluator's) are those counted by hand;
    ``--pick`` writes null and its plain spec compiles to the graph of the variant's ``--set``; the
    hash tells null from 1 but not from 0, the convolution's default padding."""
    import json

    from nasdsl.space import load_space, variant_yaml
    from nasdsl.unique import graph_hash

    space = load_space(chosen)
    assert [p.options for p in space.points] == [(None, 0, 1), (None, 2), (3, None)]
    assert space.points[2].default == 1 and space.count() == 12
    assert main(["space", str(chosen), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)["variants"]
    assert len(rows) == 12 and all(row["valid"] for row in rows)
    by_pad: dict[object, set] = {}
    for row in rows:
        chosen_here = row["choices"]
        assert {k: row[k] for k in ("params", "macs")} == _by_hand(**chosen_here)
        picks = space.picks_of(row["id"])
        text = variant_yaml(space, picks, "chosen.yaml")
        # Conv's default `{pad: null}`, then each null picked (the header names them too)
        assert text.split("\n", 2)[2].count("null") == 1 + list(chosen_here.values()).count(None)
        picked = _compile(tmp_path, text, "picked.yaml")
        over = nasdsl.compile_spec(chosen, row["set"])
        assert _unlocated(picked.graph) == _unlocated(over.graph)
        assert picked.summary()["totals"]["macs"] == row["macs"]
        key = (chosen_here["stop"], chosen_here["cstop"])
        by_pad.setdefault(chosen_here["pad"], set()).add((key, graph_hash(picked.graph)))
    assert by_pad[None] == by_pad[0] and not {h for _, h in by_pad[None]} & {h for _, h in by_pad[1]}
    assert main(["space", str(chosen), "--count", "--unique"]) == 0
    assert capsys.readouterr().out.strip() == "8"


def test_a_search_picks_null_and_its_reports_write_it(chosen, tmp_path, capsys):
    """Optuna's random sampler asks for null as one of the categorical's values: the trials that
    picked it are evaluated as the figures by hand say, the report writes null, and --pick writes
    the plain spec ``nasdsl space --pick`` writes."""
    import json

    from nasdsl.space import load_space, variant_yaml

    work = tmp_path / "search"
    argv = ["search", str(chosen), "--minimize", "macs", "--trials", "12", "--sampler", "random"]
    assert main([*argv, "--seed", "0", "--workdir", str(work), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["search", str(chosen), "--workdir", str(work), "--report", "--format", "json"]) == 0
    trials = [t for t in json.loads(capsys.readouterr().out)["trials"] if t["status"] == "evaluated"]
    nulls = [t for t in trials if "null" in t["choices"].values()]
    assert nulls and len(trials) >= 6
    for t in trials:
        values = {k: None if v == "null" else int(v) for k, v in t["choices"].items()}
        assert t["values"] == {"macs": _by_hand(**{"pad": None, "cstop": None, "stop": None, **values})["macs"]}
    assert main(["search", str(chosen), "--workdir", str(work), "--report"]) == 0
    assert " null " in capsys.readouterr().out
    picked = tmp_path / "picked.yaml"
    assert (
        main(["search", str(chosen), "--workdir", str(work), "--pick", str(nulls[0]["trial"]), "-o", str(picked)]) == 0
    )
    space = load_space(chosen)
    values = {k: None if v == "null" else int(v) for k, v in nulls[0]["choices"].items()}
    picks = tuple(p.options.index(values[p.name]) if p.name in values else p.default for p in space.points)
    body = variant_yaml(space, picks, "x").split("\n", 2)[2]
    assert picked.read_text().endswith(body) and "null" in body.replace("{pad: null}", "")


def test_null_that_reaches_a_required_attribute_or_a_repeat_count_is_refused_where_it_is_written(tmp_path, capsys):
    """Through a template, where only building the variant tells: the variant that picks null is
    invalid with the compiler's error at the option, and ``--pick`` refuses it; a repeat count
    that a parameter gives null is reported at the argument, as a ``when``'s is."""
    path = tmp_path / "e.yaml"
    path.write_text(
        ERRORS.replace("templates:\n", "templates:\n  Rep:\n    params: [n]\n    body: {repeat: n, block: relu}\n")
        + "  a: {use: Conv, args: [{choice: [4, null], name: width}, 1]}\n  b: {use: Rep, args: [2]}\n"
    )
    assert main(["space", str(path)]) == 0
    out, err = capsys.readouterr()
    error = (
        f"{path}:29:38: error: model.a.args[0]: expected a value for out, which conv2d requires, got null "
        "(used as 'out' of node a.conv)"
    )
    assert " 1  null " in out and "invalid" in out and f"variant 1: {error}\n" in out
    assert main(["space", str(path), "--pick", "1", "-o", str(tmp_path / "v.yaml")]) == 2
    assert capsys.readouterr().err == f"error: --pick: variant 1 does not compile:\n{error}\n"
    assert not (tmp_path / "v.yaml").exists()
    assert main(["check", str(path), "--set", "b.n=null"]) == 2
    assert capsys.readouterr().err == (
        "<--set b.n=null>:1:5: error: model.b.args.n: expected an integer > 0, got null (used as the count of "
        "repeat b)\n"
    )


def test_sweep_and_draw_write_null_as_the_spec_does(tmp_path, capsys):
    """``nasdsl sweep --set K=[null,...]`` makes null an option (a variable cannot be null); the
    drawing labels a use's null argument ``null``."""
    from pathlib import Path

    example = Path(__file__).resolve().parent.parent / "docs" / "examples" / "null_args.yaml"
    assert main(["sweep", str(example), "--set", "parts.concat.tail.stop=[null,8]"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[3:5]]
    # the tail's channels 6..11 (null: to the end), or 6..7: the peak is the concat's output, 10 or 6 channels
    assert [(r[1], r[5], r[6]) for r in rows] == [("null", "28,512", "ok"), ("8", "23,328", "ok")]
    assert main(["sweep", str(example), "--set", "to_size.out=[null,4]"]) == 0
    assert "expected a value for out, which conv2d requires, got null" in capsys.readouterr().out
    dot = tmp_path / "n.dot"
    assert main(["draw", str(example), "-o", str(dot)]) == 0
    text = dot.read_text()
    assert "Resize to_size (12, 24, null)" in text and "Resize by_scale (12, null, 1.5)" in text


BASE = """\
nasdsl: 1
name: Base
input: {shape: [6, 5, 7]}
templates:
  Cut:
    params: [start, {stop: 4}]
    body:
      cut: {op: slice, start: start, stop: stop}
model:
  a: {use: Cut, args: [1]}
  b: {op: slice, start: 1, stop: 3, from: in}
outputs:
  oa: {from: a}
  ob: {from: b}
"""


def test_extends_overrides_a_value_with_null_and_back(tmp_path):
    """A spec that extends another gives null to a default, an argument and an attribute (each
    entry restated whole), and one that extends it gives the values back: their graphs are the
    base's with ``--set`` null, and the base's."""
    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "null.yaml").write_text(
        "extends: base.yaml\ntemplates:\n  Cut:\n    params: [start, {stop: ~}]\n"
        "    body:\n      cut: {op: slice, start: start, stop: stop}\n"
        "model:\n  b: {op: slice, start: 1, stop: Null, from: in}\n"
    )
    (tmp_path / "back.yaml").write_text(
        "extends: null.yaml\nmodel:\n  a: {use: Cut, args: [1, 4]}\n  b: {op: slice, start: 1, stop: 3, from: in}\n"
    )
    base = nasdsl.compile_spec(tmp_path / "base.yaml")
    nulled = nasdsl.compile_spec(tmp_path / "null.yaml")
    assert [ir.node(nulled.graph, n).shape for n in ("a.cut", "b")] == [(5, 5, 7), (5, 5, 7)]
    assert _unlocated(nulled.graph) == _unlocated(
        nasdsl.compile_spec(tmp_path / "base.yaml", ["templates.Cut.params.1.stop=null", "b.stop=null"]).graph
    )
    assert _unlocated(nasdsl.compile_spec(tmp_path / "back.yaml").graph) == _unlocated(base.graph)
    # the use's argument null through --set on its path: the node records the parameter (Cut's class writes it)
    over = nasdsl.compile_spec(tmp_path / "back.yaml", ["a.stop=null"])
    assert ir.node(over.graph, "a.cut").nulls == {"stop": Sym.name("stop")}


def test_the_design_space_guide_shows_what_space_prints(capsys):
    """docs/design-space.md, "Null options": its YAML is quoted from docs/examples/null_choices.yaml,
    and the listing it shows is what ``nasdsl space`` prints for that file (the figures checked
    by hand in test_null_options_are_listed_evaluated_picked_and_hashed's way: 16 * 27 * 14 * 14 + 160
    multiply-adds for pad null, all 16 channels)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    page = (root / "docs" / "design-space.md").read_text()
    section = page[page.index("### Null options") : page.index("### Choices between blocks")]
    (yaml_block,) = re.findall(r"```yaml\n(.*?)```", section, re.S)
    (listing,) = re.findall(r"```text\n(.*?)```", section, re.S)
    example = root / "docs" / "examples" / "null_choices.yaml"
    assert yaml_block in example.read_text()
    assert main(["space", str(example)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert listing.splitlines() == printed[: len(listing.splitlines())]
    assert " 0  null  null     618   84,832" in listing and 16 * 27 * 14 * 14 + 16 * 10 == 84_832


def test_a_parameter_null_at_every_use_is_typed_none(tmp_path):
    """``pad: None = None`` (``None | None`` raised a TypeError when the class was defined): the
    model is made and computes what ONNX Runtime computes."""
    from nasdsl.backends.verify import verify

    text = CHOSEN.split("model:\n")[0].replace("{choice: [3, null], name: stop, default: null}", "null")
    net = _compile(tmp_path, text + "model:\n  a: {use: Conv, args: [4]}\n  b: {use: Conv, args: {out: 2, pad: ~}}\n")
    source = generate_source(net.graph)
    assert "def __init__(self, in_channels: int, out: int, pad: None = None) -> None:" in source
    assert verify(net.graph, batch=2).ok


def test_the_onnx_export_of_null_uses_imports_back(tmp_path):
    """The default variant of CHOSEN (every null picked: padding, a slice's stop, a template's
    default) exported with weights, imported back: the imported spec's generated model computes
    what ONNX Runtime computes with the export."""
    import onnxruntime as ort

    from nasdsl.backends.pytorch import model_class
    from nasdsl.importer import import_model

    net = _compile(tmp_path, CHOSEN)
    assert [ir.node(net.graph, n).nulls for n in ("a.conv", "b.cut")] == [
        {"padding": Sym.name("pad")},
        {"stop": Sym.name("stop")},
    ]
    torch.manual_seed(0)
    model = model_class(net.graph)().eval()
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    proto = export_onnx(net.graph, opset=17, state_dict=state)
    result = import_model(proto, weights=True)
    back = model_class(result.compiled.graph)().eval()
    back.load_state_dict({k: torch.tensor(v) for k, v in result.weights.items()})
    x = torch.randn(1, 6, 5, 7, generator=torch.Generator().manual_seed(4))
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    (want,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        got = back(x)
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(got, model(x))
    assert tuple(got.shape) == (1, 2, 3, 5)  # 3x5 without padding; 2 channels from the 1x1 convolution
