"""Every op attribute a template's parameter may set is written by the PyTorch writer as that
parameter: one class serves uses that give it different values.

For each op, a template whose parameters set the op's attributes is used twice, with different
values (a number at one use and one per axis at the other where the attribute takes either), each
use reading the model's input. The generated file must hold one class for the template, and its
model must compute what the spec's ONNX export computes under ONNX Runtime (the ONNX backend
writes every node's own values), and, for the ops whose lowering wrote a use's own values
(pad, interpolate, slice), what torch.nn.functional computes with the values written out here.
An attribute the class cannot take from its arguments is refused where the spec writes it.
:func:`test_every_attribute_a_parameter_may_set_is_covered` fails for an op or attribute this
table does not cover.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import nasdsl
from nasdsl import ir
from nasdsl.backends.onnx import export_onnx
from nasdsl.backends.pytorch import generate_source, load_source
from nasdsl.errors import NasdslError
from nasdsl.ops import OPS, SPEC_OPS

#: op -> (input, template parameters, template body, arguments at use a, arguments at use b);
#: the input is ``[shape]`` or ``[shape, axes]``
CASES: dict[str, tuple[str, str, str, str, str]] = {
    "conv1d": (
        "[[4, 9], CL]",
        "[k, s, p, d, g, b]",
        "{op: conv1d, out: 4, kernel: k, stride: s, padding: p, dilation: d, groups: g, bias: b}",
        "[3, 1, 1, 1, 1, true]",
        "[[2], 2, 0, 2, 2, false]",
    ),
    "conv2d": (
        "[[4, 7, 8]]",
        "[o, k, s, p, d, g, b]",
        "{op: conv2d, out: o, kernel: k, stride: s, padding: p, dilation: d, groups: g, bias: b}",
        "[4, 3, 1, 1, 1, 1, true]",
        "[6, [1, 3], [2, 1], [0, 1], [1, 2], 2, false]",
    ),
    "conv3d": (
        "[[2, 5, 6, 7]]",
        "[k, s, p, d, g, b]",
        "{op: conv3d, out: 4, kernel: k, stride: s, padding: p, dilation: d, groups: g, bias: b}",
        "[3, 1, 1, 1, 1, true]",
        "[[1, 3, 3], [1, 2, 2], [0, 1, 1], [1, 2, 1], 2, false]",
    ),
    "conv_transpose1d": (
        "[[4, 5], CL]",
        "[k, s, p, o, d, g, b]",
        "{op: conv_transpose1d, out: 4, kernel: k, stride: s, padding: p, output_padding: o, dilation: d, "
        "groups: g, bias: b}",
        "[3, 1, 1, 0, 1, 1, true]",
        "[[2], 3, 0, 2, 2, 2, false]",
    ),
    "conv_transpose2d": (
        "[[4, 5, 6]]",
        "[c, k, s, p, o, d, g, b]",
        "{op: conv_transpose2d, out: c, kernel: k, stride: s, padding: p, output_padding: o, dilation: d, "
        "groups: g, bias: b}",
        "[4, 3, 2, 1, 1, 1, 1, true]",
        "[6, [2, 3], [1, 2], [0, 1], [1, 1], [2, 1], 2, false]",
    ),
    "conv_transpose3d": (
        "[[2, 3, 4, 5]]",
        "[k, s, p, o, d, g, b]",
        "{op: conv_transpose3d, out: 4, kernel: k, stride: s, padding: p, output_padding: o, dilation: d, "
        "groups: g, bias: b}",
        "[3, 2, 1, 1, 1, 1, true]",
        "[[1, 2, 3], [1, 2, 2], [0, 1, 0], [0, 1, 0], [1, 1, 2], 2, false]",
    ),
    "max_pool1d": (
        "[[3, 9], CL]",
        "[k, s, p, c]",
        "{op: max_pool1d, kernel: k, stride: s, padding: p, ceil_mode: c}",
        "[3, 2, 1, true]",
        "[[2], 1, 0, false]",
    ),
    "avg_pool1d": (
        "[[3, 9], CL]",
        "[k, s, p, c, i]",
        "{op: avg_pool1d, kernel: k, stride: s, padding: p, ceil_mode: c, count_include_pad: i}",
        "[3, 2, 1, true, false]",
        "[2, 1, 0, false, true]",
    ),
    "adaptive_avg_pool1d": ("[[3, 9], CL]", "[s]", "{op: adaptive_avg_pool1d, size: s}", "[2]", "[[4]]"),
    "max_pool": (
        "[[3, 8, 9]]",
        "[k, s, p, c]",
        "{op: max_pool, kernel: k, stride: s, padding: p, ceil_mode: c}",
        "[3, 2, 1, true]",
        "[[2, 3], [1, 2], 0, false]",
    ),
    "avg_pool": (
        "[[3, 8, 9]]",
        "[k, s, p, c, i]",
        "{op: avg_pool, kernel: k, stride: s, padding: p, ceil_mode: c, count_include_pad: i}",
        "[3, 2, 1, true, false]",
        "[[2, 3], [1, 2], [1, 0], false, true]",
    ),
    "adaptive_avg_pool": ("[[3, 8, 9]]", "[s]", "{op: adaptive_avg_pool, size: s}", "[3]", "[[2, 3]]"),
    "max_pool3d": (
        "[[2, 4, 6, 6]]",
        "[k, s, p, c]",
        "{op: max_pool3d, kernel: k, stride: s, padding: p, ceil_mode: c}",
        "[3, 2, 1, true]",
        "[[1, 2, 2], 1, 0, false]",
    ),
    "avg_pool3d": (
        "[[2, 4, 6, 6]]",
        "[k, s, p, c, i]",
        "{op: avg_pool3d, kernel: k, stride: s, padding: p, ceil_mode: c, count_include_pad: i}",
        "[3, 2, 1, true, false]",
        "[[1, 2, 2], 1, 0, false, true]",
    ),
    "adaptive_avg_pool3d": ("[[2, 4, 6, 6]]", "[s]", "{op: adaptive_avg_pool3d, size: s}", "[1]", "[[1, 2, 3]]"),
    "batch_norm": ("[[3, 5, 5]]", "[e, m]", "{op: batch_norm, eps: e, momentum: m}", "[0.001, 0.1]", "[0.5, 0.2]"),
    "lrn": (
        "[[6, 4, 4]]",
        "[s, a, b, k]",
        "{op: lrn, size: s, alpha: a, beta: b, k: k}",
        "[3, 0.001, 0.5, 2]",
        "[5, 0.2, 0.75, 1]",
    ),
    "dropout": ("[[3, 4, 4]]", "[p]", "{op: dropout, p: p}", "[0.1]", "[0.2]"),
    "stochastic_depth": ("[[3, 4, 4]]", "[p]", "{op: stochastic_depth, p: p}", "[0.1]", "[0.2]"),
    "layer_scale": ("[[3, 4, 4]]", "[i]", "{op: layer_scale, init: i}", "[0.5]", "[2]"),
    "flatten": ("[[3, 4, 5]]", "[s, e]", "{op: flatten, start: s, end: e}", "[0, -1]", "[1, 2]"),
    "reshape": ("[[3, 4, 5]]", "[s]", "{op: reshape, shape: s}", "[[12, 5]]", "[[3, 2, -1]]"),
    "permute": ("[[3, 4, 5]]", "[d]", "{op: permute, dims: d}", "[[1, 2, 0]]", "[[2, 0, 1]]"),
    "transpose": ("[[3, 4, 5]]", "[a, b]", "{op: transpose, axis0: a, axis1: b}", "[0, -1]", "[1, 2]"),
    "slice": (
        "[[6, 7, 8]]",
        "[a, s, e, k]",
        "{op: slice, axis: a, start: s, stop: e, step: k}",
        "[0, 1, 5, 1]",
        "[-1, 2, 7, 2]",
    ),
    "select": ("[[3, 4, 5]]", "[a, i]", "{op: select, axis: a, index: i}", "[0, 1]", "[-1, -2]"),
    "roll": ("[[3, 4, 5]]", "[s, a]", "{op: roll, shifts: s, axes: a}", "[[1, 2], [1, 2]]", "[[-2], [-3]]"),
    "pad": ("[[3, 4, 5]]", "[p, v]", "{op: pad, pads: p, value: v}", "[[[0, 1], [2, 0]], 0.5]", "[[[1, 1]], 2]"),
    "channel_shuffle": ("[[6, 3, 3]]", "[g]", "{op: channel_shuffle, groups: g}", "[2]", "[3]"),
    "parameter": ("[[3, 4, 5]]", "[s]", "{op: parameter, shape: s}", "[[6, 2]]", "[[2, 3, 4]]"),
    "constant": ("[[3, 4, 5]]", "[v]", "{op: constant, value: v}", "[0.5]", "[2]"),
    "interpolate": (
        "[[3, 4, 5]]",
        "[s, c]",
        "{op: interpolate, size: s, mode: bilinear, align_corners: c}",
        "[7, true]",
        "[[6, 9], false]",
    ),
    "linear": ("[[4, 6], LC]", "[o, b]", "{op: linear, out: o, bias: b, dim: last}", "[3, true]", "[5, false]"),
    "layer_norm": ("[[4, 6], LC]", "[e]", "{op: layer_norm, eps: e}", "[0.001]", "[0.5]"),
    "softmax": ("[[3, 4, 5]]", "[d]", "{op: softmax, dim: d}", "[0]", "[-1]"),
    "attention": (
        "[[5, 8], LC]",
        "[h, d, b]",
        "{op: attention, heads: h, dropout: d, bias: b}",
        "[2, 0.1, true]",
        "[4, 0.0, false]",
    ),
    "pooling_attention": (
        "[[17, 8], LC]",
        "[h, o, g, k, s, r, p, c, d]",
        "{op: pooling_attention, heads: h, out: o, grid: g, kernel_q: k, stride_q: s, kernel_kv: k, stride_kv: s,"
        " rel_pos: r, residual_pool: p, class_token: c, dropout: d, eps: 0.001}",
        "[2, 8, [1, 4, 4], 3, [1, 2, 2], true, true, true, 0.1]",
        "[4, 12, [1, 1, 17], [1, 1, 3], 1, false, false, false, 0.0]",
    ),
    "positional_encoding": ("[[8, 2, 3, 3]]", "[a]", "{op: positional_encoding, absolute: a}", "[true]", "[false]"),
    "window_attention": (
        "[[6, 7, 8], HWC]",
        "[h, w, s, f, q, p, a, d]",
        "{op: window_attention, heads: h, window: w, shift: s, fit: f, qkv_bias: q, proj_bias: p,"
        " attention_dropout: a, dropout: d}",
        "[2, [3, 3], 1, true, true, false, 0.1, 0.0]",
        "[4, [2, 4], [1, 2], false, false, true, 0.0, 0.2]",
    ),
    "patch_merging": ("[[6, 7, 8], HWC]", "[o, e]", "{op: patch_merging, out: o, eps: e}", "[16, 0.001]", "[8, 0.5]"),
    "pad_to_multiple": ("[[3, 6, 7]]", "[m]", "{op: pad_to_multiple, multiple: m}", "[4]", "[[5, 3]]"),
    "partition_attention": (
        "[[2, 9, 8], TLC]",
        "[d, s]",
        "{op: partition_attention, head_dim: d, size: s}",
        "[2, 3]",
        "[4, 3]",
    ),
    "leaky_relu": ("[[3, 4, 4]]", "[s]", "{op: leaky_relu, negative_slope: s}", "[0.1]", "[-0.5]"),
    "elu": ("[[3, 4, 4]]", "[a]", "{op: elu, alpha: a}", "[0.5]", "[2.0]"),
    "prelu": ("[[3, 4, 4]]", "[i]", "{op: prelu, init: i}", "[0.1]", "[0.3]"),
    "group_norm": ("[[6, 4, 4]]", "[g, e]", "{op: group_norm, groups: g, eps: e}", "[2, 0.001]", "[3, 0.5]"),
    "instance_norm": (
        "[[3, 4, 4]]",
        "[e, m]",
        "{op: instance_norm, eps: e, momentum: m, affine: true, track_running_stats: true}",
        "[0.001, 0.1]",
        "[0.5, 0.2]",
    ),
    "pixel_shuffle": ("[[8, 3, 4]]", "[f]", "{op: pixel_shuffle, factor: f}", "[2]", "[1]"),
    "pixel_unshuffle": ("[[2, 4, 6]]", "[f]", "{op: pixel_unshuffle, factor: f}", "[2]", "[1]"),
    "adaptive_max_pool1d": ("[[3, 9], CL]", "[s]", "{op: adaptive_max_pool1d, size: s}", "[2]", "[[4]]"),
    "adaptive_max_pool": ("[[3, 8, 9]]", "[s]", "{op: adaptive_max_pool, size: s}", "[3]", "[[2, 3]]"),
    "adaptive_max_pool3d": ("[[2, 4, 6, 6]]", "[s]", "{op: adaptive_max_pool3d, size: s}", "[1]", "[[1, 2, 3]]"),
    "clamp": ("[[3, 4, 4]]", "[a, b]", "{op: clamp, min: a, max: b}", "[-0.5, 0.5]", "[null, 1]"),
    "softplus": ("[[3, 4, 4]]", "[b, t]", "{op: softplus, beta: b, threshold: t}", "[2, 1.5]", "[0.5, 20]"),
    "log_softmax": ("[[3, 4, 5]]", "[d]", "{op: log_softmax, dim: d}", "[0]", "[-1]"),
}

#: attributes a parameter cannot set: they take words alone (an expression gives no word)
WORDS = {
    ("gelu", "approximate"),
    ("stochastic_depth", "mode"),
    ("reshape", "axes"),
    ("parameter", "axes"),
    ("opaque", "axes"),
    ("interpolate", "mode"),
    ("interpolate_like", "mode"),
    ("linear", "dim"),
    ("layer_norm", "dim"),
    ("patch_merging", "norm"),
    ("pad", "mode"),
}
#: attributes set by a parameter at the model level only (see test_interpolate_scale)
ELSEWHERE = {("interpolate", "scale"), ("opaque", "shape")}

#: for attributes the class cannot take from its arguments (``Attr.fixed``): a template that
#: tries, with what the refusal names
FIXED = {
    ("concat", "axis"): ("[[3, 4, 5]]", "[a]", "{concat: [identity, identity], axis: a}", "[1]", "[2]"),
    ("matmul", "transpose_b"): (
        "[[4, 4], LC]",
        "[t]",
        "{matmul: [identity, identity], transpose_b: t}",
        "[true]",
        "[false]",
    ),
    ("interpolate_like", "align_corners"): (
        "[[3, 4, 4]]",
        "[c]",
        "{interpolate_like: [{op: max_pool, kernel: 2}, identity], mode: bilinear, align_corners: c}",
        "[true]",
        "[false]",
    ),
    ("window_attention", "version"): (
        "[[6, 6, 8], HWC]",
        "[v]",
        "{op: window_attention, heads: 2, window: [3, 3], version: v}",
        "[1]",
        "[2]",
    ),
    ("prelu", "per_channel"): ("[[3, 4, 4]]", "[p]", "{op: prelu, per_channel: p}", "[true]", "[false]"),
    ("group_norm", "affine"): ("[[4, 4, 4]]", "[a]", "{op: group_norm, groups: 2, affine: a}", "[true]", "[false]"),
    ("instance_norm", "affine"): ("[[3, 4, 4]]", "[a]", "{op: instance_norm, affine: a}", "[true]", "[false]"),
    ("instance_norm", "track_running_stats"): (
        "[[3, 4, 4]]",
        "[t]",
        "{op: instance_norm, track_running_stats: t}",
        "[true]",
        "[false]",
    ),
}


def _spec(case: tuple[str, str, str, str, str]) -> str:
    inp, params, body, a, b = case
    shape, _, axes = inp[1:-1].partition("], ")
    axes_key = f", axes: '{axes}'" if axes else ""
    return f"""\
nasdsl: 1
name: Uses
outputs_by_name: true
input: {{shape: {shape.rstrip("]")}]{axes_key}}}
templates:
  T:
    params: {params}
    body:
      x: {body}
model:
  a: {{use: T, args: {a}}}
  b: {{use: T, args: {b}, from: in}}
outputs:
  oa: {{from: a}}
  ob: {{from: b}}
"""


def _compile(tmp_path, text: str):
    path = tmp_path / "uses.yaml"
    path.write_text(text)
    return nasdsl.compile_spec(path)


def _run(compiled, x: torch.Tensor):
    """The generated model's two outputs, the ONNX Runtime run of the export's, and the source."""
    import onnxruntime as ort

    source = generate_source(compiled.graph)
    torch.manual_seed(0)
    model = load_source(source).Uses().eval()
    with torch.no_grad():
        for p in model.parameters():  # nothing left at zero: a learned tensor shows
            p.add_(torch.rand_like(p))
        got = model(x)
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    proto = export_onnx(compiled.graph, opset=17, state_dict=state, batch=2)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    want = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    return source, [got["oa"].detach().numpy(), got["ob"].detach().numpy()], want


@pytest.mark.parametrize("op", sorted(CASES))
def test_one_class_serves_uses_with_different_values(tmp_path, op):
    """One class for the template's two uses, passing each use's values on; the model computes
    what the export computes under ONNX Runtime; the file is the same when written again."""
    compiled = _compile(tmp_path, _spec(CASES[op]))
    x = torch.randn(2, *_input_shape(CASES[op]), generator=torch.Generator().manual_seed(1))
    source, got, want = _run(compiled, x)
    assert source.count("class T(nn.Module):") == 1
    assert len(got) == len(want) == 2
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(w).max())))
    assert generate_source(compiled.graph) == source


def _input_shape(case) -> list[int]:
    return [int(v) for v in case[0][2:].partition("]")[0].split(",")]


def test_pad_interpolate_slice_against_functional(tmp_path):
    """The three lowerings that wrote a use's own values (pad's pads, the upsample's size, a
    slice's settings): the model against torch.nn.functional with each use's values written out."""
    spec = """\
nasdsl: 1
name: Uses
outputs_by_name: true
input: {shape: [3, 5, 6]}
templates:
  T:
    params: [pads, size, start, stop, step]
    body:
      pad: {op: pad, pads: pads, value: 0.5}
      up: {op: interpolate, size: size}
      cut: {op: slice, axis: -1, start: start, stop: stop, step: step}
model:
  a: {use: T, args: [[[0, 1], [2, 0]], 8, 1, 6, 1]}
  b: {use: T, args: [[[1, 2]], [7, 10], 0, 10, 3], from: in}
outputs:
  oa: {from: a}
  ob: {from: b}
"""
    compiled = _compile(tmp_path, spec)
    source = generate_source(compiled.graph)
    assert source.count("class T(nn.Module):") == 1
    x = torch.randn(2, 3, 5, 6, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        got = load_source(source).Uses().eval()(x)
    # F.pad takes the last axis first; the slice keeps every step-th position of [start, stop)
    a = F.interpolate(F.pad(x, [2, 0, 0, 1], value=0.5), size=(8, 8))[..., 1:6:1]
    b = F.interpolate(F.pad(x, [1, 2], value=0.5), size=(7, 10))[..., 0:10:3]
    torch.testing.assert_close(got["oa"], a)
    torch.testing.assert_close(got["ob"], b)


def test_interpolate_scale(tmp_path):
    """A scale a parameter gives (interpolate takes a size or a scale, not both, so its own case)."""
    case = ("[[3, 4, 5]]", "[s]", "{op: interpolate, scale: s}", "[2]", "[3]")
    compiled = _compile(tmp_path, _spec(case))
    x = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(3))
    source, got, want = _run(compiled, x)
    assert source.count("class T(nn.Module):") == 1
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("key", sorted(FIXED), ids=lambda k: f"{k[0]}.{k[1]}")
def test_an_attribute_the_class_cannot_take_is_refused_where_written(tmp_path, key):
    op, attr = key
    with pytest.raises(NasdslError) as e:
        _compile(tmp_path, _spec(FIXED[key]))
    text = e.value.format() if hasattr(e.value, "format") else str(e.value)
    assert "uses.yaml:9:" in text
    assert f"templates.T.body.x.{attr}: {op}'s {attr} may not be given by a template parameter" in text
    assert OPS[op].attr_index[attr].fixed in text


def test_the_refusal_is_a_located_error_with_exit_2(tmp_path, capsys):
    from nasdsl.cli import main

    path = tmp_path / "uses.yaml"
    path.write_text(_spec(FIXED[("concat", "axis")]))
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert "uses.yaml:9:" in err and "concat's axis may not be given by a template parameter ('a')" in err
    assert "Traceback" not in err


NESTED = """\
nasdsl: 1
name: Uses
input: {shape: [3, 4, 5]}
templates:
  U:
    params: [v]
    body: {op: constant, value: v}
  T:
    params: [v]
    body:
      x: {use: U, args: ["v * 0.5"]}
model:
  a: {use: T, args: [1.0]}
  b: {use: T, args: [3.0]}
"""


@pytest.mark.parametrize(
    ("text", "cause"),
    [
        (_spec(("[[3, 4, 5]]", "[v]", "{op: constant, value: 'v * 0.5'}", "[1.0]", "[3.0]")), "x's value"),
        (NESTED, "x's argument v"),
    ],
    ids=["attribute", "argument"],
)
def test_a_value_the_class_cannot_compute_is_named_in_the_message(tmp_path, text, cause):
    """Where uses still need different code (an expression of a parameter the class cannot write:
    a float factor), the message names the entry, the attribute or argument, and both values."""
    compiled = _compile(tmp_path, text)
    with pytest.raises(NasdslError) as e:
        generate_source(compiled.graph)
    assert f"template T needs different code at a and b: {cause} is 0.5 at a and 1.5 at b, from an expression" in str(
        e.value
    )
    assert "pass the value itself as an argument" in str(e.value)


def test_every_attribute_a_parameter_may_set_is_covered():
    """Each attribute of each op a spec may write is exercised above with two values, refused
    (``Attr.fixed``), or takes words alone: a new op or attribute must join one of them."""
    covered = set(ELSEWHERE) | set(WORDS) | set(FIXED)
    for op, case in CASES.items():
        body = case[2]
        covered |= {(op, a.name) for a in OPS[op].attrs if f" {a.name}: " in body or f"{{{a.name}: " in body}
    for op, attr in WORDS:  # no number or boolean, which is all an expression gives
        check = OPS[op].attr_index[attr].check
        for value in (1, True):
            with pytest.raises(NasdslError):
                check(value)
    for op, attr in FIXED:
        assert OPS[op].attr_index[attr].fixed
    missing = [
        f"{op}.{a.name}" for op in SPEC_OPS for a in OPS[op].attrs if (op, a.name) not in covered and not a.fixed
    ]
    assert missing == []
    fixed = {(op, a.name) for op in SPEC_OPS for a in OPS[op].attrs if a.fixed}
    assert fixed == set(FIXED)


#: a refused attribute in blocks that no build expands: a switch (a model variable) off, a
#: template parameter false at every use, a template no use reaches
SWITCHED_OFF = """\
nasdsl: 1
name: Uses
variables: {side: false}
input: {shape: [3, 4, 5]}
templates:
  T:
    params: [a, extra]
    body:
      x: {op: relu}
      y: {concat: [identity, identity], axis: a, when: side}
      z: {concat: [identity, identity], axis: a, when: extra}
  Unused:
    params: [t]
    body: {matmul: [identity, identity], transpose_b: t}
model:
  a: {use: T, args: [1, false]}
"""


def test_the_refusal_does_not_depend_on_a_switch(tmp_path):
    """The refusal is a property of the template's text: the same errors whether a switch keeps
    the block off (``--set side=true`` would turn it on) or not, and in a template never used."""
    with pytest.raises(NasdslError) as e:
        _compile(tmp_path, SWITCHED_OFF)
    lines = [line for line in e.value.format().splitlines() if "error:" in line]
    text = SWITCHED_OFF.splitlines()

    def at(line: int, key: str) -> str:  # the file, line and column where the key's value is written
        return f"{tmp_path / 'uses.yaml'}:{line}:{text[line - 1].index(key + ': ') + len(key) + 3}"

    assert lines == [
        f"{at(n, 'axis')}: error: templates.T.body.{p}.axis: concat's axis may not be given by a "
        "template parameter ('a'): the generated class's forward joins the branches along it; write the value "
        "here (a template per value)"
        for n, p in ((10, "y"), (11, "z"))
    ] + [
        f"{at(14, 'transpose_b')}: error: templates.Unused.body.transpose_b: matmul's transpose_b may not "
        "be given by a template parameter ('t'): the generated class's forward writes it; write the value here "
        "(a template per value)"
    ]
    on = SWITCHED_OFF.replace("side: false", "side: true").replace("[1, false]", "[1, true]")
    with pytest.raises(NasdslError) as e_on:
        _compile(tmp_path, on)
    assert e_on.value.format() == e.value.format()


# -- one class for uses whose parameters switch different entries on ---------------------------

#: a template whose switches choose between entries (a search space's choice between blocks
#: written as switches); {uses} are the model's entries, {outputs} an output per use
SWITCHES = """\
nasdsl: 1
name: Uses
outputs_by_name: true
input: {{shape: [4, 6, 6]}}
templates:
  T:
    params: [a, b, c]
    body:
      s: {{op: conv2d, out: 6, kernel: 1}}
      bn: {{op: batch_norm, when: a}}
      pool: {{op: max_pool, kernel: 3, stride: 1, padding: 1, when: b}}
      mix: {{op: conv2d, out: 6, kernel: 3, padding: 1, groups: 6, when: c}}
      act: relu
model:
{uses}
outputs:
{outputs}
"""


def _switched_spec(args: list[str], template: str = SWITCHES) -> str:
    uses = "\n".join(f"  u{k}: {{use: T, args: {a}, from: in}}" for k, a in enumerate(args))
    outputs = "\n".join(f"  o{k}: {{from: u{k}}}" for k in range(len(args)))
    return template.format(uses=uses, outputs=outputs)


def _against_onnx_runtime(compiled, shape: tuple[int, ...], classes: int = 1) -> str:
    """The generated model's outputs equal ONNX Runtime's run of the export with the same
    weights; the source is the same when written again; each template is one class."""
    import onnxruntime as ort

    source = generate_source(compiled.graph)
    assert source.count("(nn.Module):") - source.count("class Uses(nn.Module):") == classes
    torch.manual_seed(0)
    model = load_source(source).Uses().eval()
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for p in model.parameters():  # nothing left at zero or one: a switched entry shows
            p.add_(torch.rand_like(p))
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
        got = model(x)
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    proto = export_onnx(compiled.graph, opset=17, state_dict=state, batch=2)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    want = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert len(want) == len(got)
    for g, w in zip(got.values() if isinstance(got, dict) else got, want, strict=True):
        np.testing.assert_allclose(g.detach().numpy(), w, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(w).max())))
    assert generate_source(compiled.graph) == source
    return source


@pytest.mark.parametrize(
    "args",
    [
        ["[true, false, false]", "[false, true, false]"],  # two switches, each on at one use
        ["[true, false, false]", "[false, true, false]", "[false, false, true]", "[false, false, false]"],
        ["[true, true, false]", "[false, true, true]", "[true, false, true]"],  # three, two on at each
    ],
    ids=["two", "three", "pairs"],
)
def test_uses_that_switch_different_entries_on_share_one_class(tmp_path, args):
    """No use builds every entry, yet one class serves them all: it builds and runs each switched
    entry under its argument, and computes what the ONNX export computes at each use."""
    source = _against_onnx_runtime(_compile(tmp_path, _switched_spec(args)), (4, 6, 6))
    built = {
        ("a", "bn"): "self.bn = nn.BatchNorm2d(6) if a else None",
        ("b", "pool"): "self.pool = nn.MaxPool2d(3, stride=1, padding=1) if b else None",
        ("c", "mix"): "self.mix = nn.Conv2d(6, 6, 3, padding=1, groups=6) if c else None",
    }
    for k, ((name, entry), line) in enumerate(built.items()):
        if any(a.strip("[]").split(", ")[k] == "true" for a in args):  # built under its switch
            assert line in source and f"{name}: builds {entry} when true" in source
        else:  # false at every use: left out
            assert f"self.{entry} =" not in source and f"{name}: false at every use" in source


#: a switched entry a later entry reads: ``ref`` to it reads its input where it is off, ``from:``
#: too (docs/spec-language.md, `when:`)
READ = SWITCHES.replace(
    "      act: relu\n",
    "      act: {{add: [{{ref: bn}}, identity]}}\n      join: {{concat: [{{ref: pool}}, identity]}}\n"
    "      tail: {{op: conv2d, out: 5, kernel: 1, from: bn}}\n      last: {{concat: [{{ref: join}}, identity]}}\n",
)


def test_a_switched_entry_read_later_is_its_input_where_off(tmp_path):
    """``ref: bn`` and ``ref: pool`` read the entry's input at the uses that leave it out, ``from:
    bn`` too; the class computes what the export computes at each use."""
    args = ["[true, false, true]", "[false, true, false]", "[false, false, false]"]
    source = _against_onnx_runtime(_compile(tmp_path, _switched_spec(args, READ)), (4, 6, 6))
    assert source.count("class T(nn.Module):") == 1


#: a switch inside a nested template: Inner's switches are Outer's arguments, and Outer switches
#: a use of Inner
NESTED_SWITCHES = """\
nasdsl: 1
name: Uses
outputs_by_name: true
input: {shape: [4, 6, 6]}
templates:
  Inner:
    params: [p, q]
    body:
      bn: {op: batch_norm, when: p}
      pool: {op: avg_pool, kernel: 3, stride: 1, padding: 1, when: q}
  Outer:
    params: [p, q, deep]
    body:
      inner: {use: Inner, args: [p, q]}
      more: {use: Inner, args: [q, p], when: deep}
      act: relu
model:
  u0: {use: Outer, args: [true, false, false]}
  u1: {use: Outer, args: [false, true, true]}
outputs:
  o0: {from: u0}
  o1: {from: u1}
"""


def test_a_switch_inside_a_nested_template(tmp_path):
    """Outer's uses pass Inner opposite switches and switch a use of Inner: one class each."""
    source = _against_onnx_runtime(_compile(tmp_path, NESTED_SWITCHES), (4, 6, 6), classes=2)
    assert "self.more = Inner(in_channels, q, p) if deep else None" in source


#: the dropout's rate is a float factor of a parameter, which the class cannot write: u1 and u2
#: both build ``drop`` and need different code for it
DIFFERING = """\
nasdsl: 1
name: Uses
input: {shape: [4, 6, 6]}
templates:
  T:
    params: [a, b, v]
    body:
      bn: {op: batch_norm, when: a}
      drop: {op: dropout, p: 'v * 0.5', when: b}
model:
  u0: {use: T, args: [true, false, 0.2]}
  u1: {use: T, args: [false, true, 0.2], from: in}
  u2: {use: T, args: [false, true, 0.4], from: in}
outputs:
  o0: {from: u0}
  o1: {from: u1}
  o2: {from: u2}
"""


def test_an_entry_whose_code_differs_where_it_is_on_is_named(tmp_path):
    """Where two uses that build a switched entry need different code for it, the located error
    names the entry, both uses and the values."""
    compiled = _compile(tmp_path, DIFFERING)
    with pytest.raises(NasdslError) as e:
        generate_source(compiled.graph)
    line = DIFFERING.splitlines().index("  u2: {use: T, args: [false, true, 0.4], from: in}") + 1
    assert e.value.format() == (
        f"{tmp_path / 'uses.yaml'}:{line}:7: error: model.u2: template T needs different code at u1 and u2 "
        "(its entry 'drop'): drop's p is 0.1 at u1 and 0.2 at u2, from an expression the class cannot write "
        "from its arguments (only +, -, *, //, min and max of them and integers): at u1 it would write "
        "`self.drop = nn.Dropout(p=0.1) if b else None` where at u2 it would write "
        "`self.drop = nn.Dropout(p=0.2) if b else None`; pass the value itself as an argument, or use one "
        "template per variant"
    )


def test_a_from_reads_the_entry_it_names_whatever_the_switches(tmp_path):
    """``from: pool`` reads pool's value, which is bn's where pool is off (and bn is kept in a
    local of its own for ``ref: bn``): the class reads it by the name the spec gives, the local
    ``pool`` holding its input where it is off, at every use."""
    args = ["[true, false, true]", "[false, true, false]"]
    compiled = _compile(tmp_path, _switched_spec(args, READ.replace("from: bn", "from: pool")))
    tail = {b.path: b for b in ir.walk(ir.info(compiled.graph).model)}["u0.tail"]
    assert (tail.inputs, tail.sources) == (("u0.bn",), ("u0.pool",))  # the value, and the entry named
    source = _against_onnx_runtime(compiled, (4, 6, 6))
    assert "        x = pool\n        x = self.tail(x)" in source


def test_an_inference_build_keeps_the_one_class_and_its_reads_by_name(tmp_path):
    """The CPU inference build folds bn into s at the uses that build it; the uses still agree
    (nasdsl/ir/agree.py compares the read by its name), so ``T`` stays one class, and it computes
    the training model's outputs from the training state_dict."""
    from nasdsl.optimize import optimize

    args = ["[true, false, true]", "[false, true, false]"]
    compiled = _compile(tmp_path, _switched_spec(args, READ.replace("from: bn", "from: pool")))
    source = generate_source(optimize(compiled.graph, "cpu"))
    assert source.count("(nn.Module):") == 2 and "class T(nn.Module):" in source  # T and the model
    torch.manual_seed(0)
    model = load_source(generate_source(compiled.graph)).Uses().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.rand_like(p))
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
        inference = load_source(source).UsesInference.from_training_state_dict(model.state_dict()).eval()
        x = torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(1))
        for got, want in zip(inference(x), model(x), strict=True):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


#: ``from: pool`` where the entries between pool and its reader are switched too (``mix``): at a
#: use where mix is off, pool's value is the one just before the reader
FROM_ACROSS = SWITCHES.replace(
    "      act: relu\n",
    "      tail: {{op: conv2d, out: 5, kernel: 1, from: pool}}\n      last: {{concat: [{{ref: mix}}, identity]}}\n",
)


#: ``from: in`` after entries that are all switched: at a use where they are all off the input is the
#: value just before the reader
FROM_IN = (
    SWITCHES.replace("      s: {{op: conv2d, out: 6, kernel: 1}}\n", "")
    .replace("out: 6, kernel: 3, padding: 1, groups: 6", "out: 4, kernel: 3, padding: 1, groups: 4")
    .replace(
        "      act: relu\n",
        "      tail: {{op: conv2d, out: 5, kernel: 1, from: in}}\n      last: {{concat: [{{ref: mix}}, identity]}}\n",
    )
)


@pytest.mark.parametrize(
    "args",
    [
        # pool is on at u1 alone; mix, between pool and tail, at u0 and u2
        ["[true, false, true]", "[false, true, false]", "[false, false, true]", "[false, false, false]"],
        ["[false, false, false]", "[true, true, false]"],  # pool on at one use, nothing between on at any
    ],
    ids=["across", "one_use"],
)
def test_a_from_to_an_entry_on_at_one_use_alone(tmp_path, args):
    """``from: pool`` with pool switched on at one use alone: the other uses read its input under
    its name, whether mix (between pool and the reader) runs or not."""
    source = _against_onnx_runtime(_compile(tmp_path, _switched_spec(args, FROM_ACROSS)), (4, 6, 6))
    assert "        x = pool\n        x = self.tail(x)" in source


#: ``from: inner`` names a use of a nested template that Outer's switch ``deep`` leaves out; ``ref:
#: s`` keeps the value inner reads where it is off in a local of its own
NESTED_FROM = """\
nasdsl: 1
name: Uses
outputs_by_name: true
input: {shape: [4, 6, 6]}
templates:
  Inner:
    params: [p]
    body:
      bn: {op: batch_norm, when: p}
      conv: {op: conv2d, out: 6, kernel: 3, padding: 1}
  Outer:
    params: [p, deep]
    body:
      s: {op: conv2d, out: 6, kernel: 1}
      inner: {use: Inner, args: [p], when: deep}
      act: relu
      skip: {add: [{ref: s}, identity]}
      tail: {op: conv2d, out: 5, kernel: 1, from: inner}
      last: {concat: [{ref: skip}, identity]}
model:
  u0: {use: Outer, args: [true, false]}
  u1: {use: Outer, args: [false, true], from: in}
  u2: {use: Outer, args: [true, true], from: in}
outputs:
  o0: {from: u0}
  o1: {from: u1}
  o2: {from: u2}
"""


def test_a_from_in_after_switched_entries_reads_the_input(tmp_path):
    """``from: in`` where every entry before the reader is switched: kept in a local at every use."""
    args = ["[true, false, false]", "[false, false, false]", "[false, true, true]"]
    source = _against_onnx_runtime(_compile(tmp_path, _switched_spec(args, FROM_IN)), (4, 6, 6))
    assert "        identity = x\n" in source and "        x = identity\n        x = self.tail(x)" in source


def test_a_from_to_a_nested_use_a_switch_leaves_out(tmp_path):
    """``from: inner`` reads the use's value where deep is on and its input where it is off."""
    source = _against_onnx_runtime(_compile(tmp_path, NESTED_FROM), (4, 6, 6), classes=2)
    assert "self.inner = Inner(6, p) if deep else None" in source
    assert "        x = inner\n        x = self.tail(x)" in source


#: a merge whose branches read the values ``from: [bn, pool]`` names: both bn's where pool is off
FROM_LIST = SWITCHES.replace(
    "      act: relu\n",
    "      join: {{concat: [identity, {{op: conv2d, out: 4, kernel: 1}}], from: [bn, pool]}}\n"
    "      last: {{add: [{{ref: mix}}, {{op: conv2d, out: 6, kernel: 1}}]}}\n",
)

#: the same values given to a template of two inputs
FROM_LIST_USE = FROM_LIST.replace(
    "templates:\n",
    "templates:\n  Pair:\n    params: []\n    inputs: [s0, s1]\n    body:\n"
    "      a: {{op: conv2d, out: 4, kernel: 1, from: s1}}\n      b: {{concat: [{{ref: s0}}, identity]}}\n",
).replace(
    "join: {{concat: [identity, {{op: conv2d, out: 4, kernel: 1}}], from: [bn, pool]}}",
    "join: {{use: Pair, from: [bn, pool]}}",
)


#: the same values as the first ones of a repeat that names its previous values
FROM_LIST_REPEAT = FROM_LIST_USE.replace(
    "      a: {{op: conv2d, out: 4, kernel: 1, from: s1}}\n", "      a: {{op: conv2d, out: 6, kernel: 1, from: s1}}\n"
).replace(
    "join: {{use: Pair, from: [bn, pool]}}",
    "join: {{repeat: 2, previous: [s0, s1], from: [bn, pool], block: {{use: Pair, from: [s0, s1]}}}}",
)


@pytest.mark.parametrize(
    ("template", "classes", "line"),
    [
        (FROM_LIST, 1, 'x = torch.cat([self.join["0"](bn), self.join["1"](pool)], 1)'),
        (FROM_LIST_USE, 2, "x = self.join(bn, pool)"),
        (FROM_LIST_REPEAT, 2, "s0, s1 = bn, pool"),
        # the switched entry just before the reader, in a list: read by its name too (it was 'the
        # PyTorch backend kept no value for node u0.mix', with no location)
        (FROM_LIST.replace("from: [bn, pool]", "from: [s, mix]"), 1, 'self.join["0"](s), self.join["1"](mix)'),
        (FROM_LIST_USE.replace("from: [bn, pool]", "from: [s, mix]"), 2, "x = self.join(s, mix)"),
        (FROM_LIST_REPEAT.replace("from: [bn, pool]", "from: [s, mix]"), 2, "s0, s1 = s, mix"),
        # one name for every branch of a merge (a branch read the value it held: 'needs different code')
        (
            SWITCHES.replace("      act: relu\n", "      join: {{concat: [identity, {{ref: s}}], from: bn}}\n"),
            1,
            'x = torch.cat([self.join["0"](bn), s], 1)',
        ),
    ],
    ids=["merge", "two_inputs", "repeat", "merge_next", "two_inputs_next", "repeat_next", "merge_one_name"],
)
def test_the_entries_a_from_list_names_are_read_by_name(tmp_path, template, classes, line):
    """``from: [bn, pool]`` on a merge, on a use of a template of two inputs, or as the first values
    of a repeat that names its previous ones: each value is read by the name it is given, which
    holds bn's value where pool is off, at every use."""
    args = ["[true, false, true]", "[false, true, false]", "[false, false, false]"]
    source = _against_onnx_runtime(_compile(tmp_path, _switched_spec(args, template)), (4, 6, 6), classes)
    assert line in source


#: ``wide`` widens its input: where it is off ``tail`` reads 6 channels, where it is on 8, which one
#: class cannot build
FROM_WIDER = SWITCHES.replace(
    "      act: relu\n",
    "      wide: {{op: conv2d, out: 8, kernel: 1, when: b}}\n      act: {{op: relu, from: pool}}\n"
    "      tail: {{op: conv2d, out: 5, kernel: 1, from: wide}}\n      last: {{concat: [{{ref: act}}, identity]}}\n",
)


def test_a_from_whose_width_differs_between_uses_is_named(tmp_path):
    """Where the entry a ``from:`` names has a different width at two uses, its reader needs
    different code: the class is refused, located at a use, naming the entry that reads it."""
    text = _switched_spec(["[true, false, true]", "[false, true, false]"], FROM_WIDER)
    compiled = _compile(tmp_path, text)
    with pytest.raises(NasdslError) as e:
        generate_source(compiled.graph)
    line = text.splitlines().index("  u1: {use: T, args: [false, true, false], from: in}") + 1
    assert e.value.format() == (
        f"{tmp_path / 'uses.yaml'}:{line}:7: error: model.u1: template T needs different code at u0 and u1 "
        "(its entry 'tail'): at u0 it would write `self.tail = nn.Conv2d(6, 5, 1)` where at u1 it would write "
        "`self.tail = nn.Conv2d(8, 5, 1)`; use one template per variant, or make what differs a parameter"
    )


#: Outer's ``mid`` (a use of Mid, switched by ``r``, holding a use of Inner switched by ``q``) is read
#: by nothing that reaches an output: the inference build drops its nodes at the uses that build it
DEAD_NESTED = """\
nasdsl: 1
name: Uses
outputs_by_name: true
input: {shape: [4, 6, 6]}
templates:
  Inner:
    params: [p]
    body:
      bn: {op: batch_norm, when: p}
      conv: {op: conv2d, out: 6, kernel: 3, padding: 1}
  Mid:
    params: [p, q]
    body:
      s: {op: conv2d, out: 6, kernel: 1}
      inner: {use: Inner, args: [p], when: q}
      tail: {op: conv2d, out: 6, kernel: 1, from: s}
  Outer:
    params: [p, q, r]
    body:
      s: {op: conv2d, out: 6, kernel: 1}
      mid: {use: Mid, args: [p, q], when: r}
      j: {concat: [identity, {ref: s}], from: s}
model:
  u0: {use: Outer, args: [true, false, true], from: in}
  u1: {use: Outer, args: [false, true, true], from: in}
  u2: {use: Outer, args: [true, true, false], from: in}
outputs:
  o0: {from: u0}
  o1: {from: u1}
  o2: {from: u2}
"""


def test_an_inference_build_drops_a_switched_use_that_nothing_reads(tmp_path):
    """A use whose blocks are all switched off or dropped passes its input on (``Inner`` at u1 was
    kept as a use of no node, outside its instance: a StopIteration writing its shape note)."""
    from nasdsl.optimize import optimize

    compiled = _compile(tmp_path, DEAD_NESTED)
    training = load_source(generate_source(compiled.graph)).Uses().eval()
    with torch.no_grad():
        for p in training.parameters():
            p.add_(torch.rand_like(p))
        inference = load_source(generate_source(optimize(compiled.graph, "cpu"))).UsesInference
        inference = inference.from_training_state_dict(training.state_dict()).eval()
        x = torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(1))
        for got, want in zip(inference(x), training(x), strict=True):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


#: ``ref: bn`` where pool, after bn, is off at every use and mix after it at some
REF_PAST_OFF = SWITCHES.replace("      act: relu\n", "      last: {{concat: [{{ref: bn}}, identity]}}\n")


def test_a_ref_reads_the_entry_it_names_past_entries_switched_off(tmp_path):
    """The value ``ref: bn`` reads is kept under bn's name at every use; pool, off at every use,
    passes it on and keeps no local of its own (it was 'template T needs different code at u0 and
    u1 (its entry 'pool'): only at u0 it would write `pool = x`')."""
    args = ["[true, false, true]", "[false, false, false]"]
    source = _against_onnx_runtime(_compile(tmp_path, _switched_spec(args, REF_PAST_OFF)), (4, 6, 6))
    assert "pool = x" not in source and 'x = torch.cat([bn, self.last["1"](x)], 1)' in source


def test_a_switch_written_as_an_expression_of_parameters_is_named(tmp_path):
    """``when: "a and b"`` is folded at each use (the class takes a switch as one parameter): where
    it differs between uses the refusal names the entry and says why (it showed only the first
    line that differs, another entry's)."""
    text = _switched_spec(
        ["[true, true, false]", "[true, false, false]"], SWITCHES.replace("when: a}", 'when: "a and b"}')
    )
    compiled = _compile(tmp_path, text)
    with pytest.raises(NasdslError) as e:
        generate_source(compiled.graph)
    line = text.splitlines().index("  u1: {use: T, args: [true, false, false], from: in}") + 1
    message = e.value.format()
    assert message.startswith(f"{tmp_path / 'uses.yaml'}:{line}:7: error: model.u1: template T needs different code")
    assert (
        "'bn' is switched by a condition the class cannot take as an argument (an expression, not one parameter), "
        "on at u0 and off at u1: "
    ) in message
    assert message.endswith("; give 'bn' a parameter of its own as its `when`, or use one template per variant")
