"""BatchNorm folded into a transposed convolution, and the latency model's entries for the
transposed convolutions, the per-sample norms and the activations with a parameter.

The folding cases (ranks 1 to 3, one group and several, depthwise, with and without a bias, one
BatchNorm and two in a row) run against the same network written by hand in torch
(``nn.ConvTranspose{n}d``, ``nn.BatchNorm{n}d`` in eval mode with running statistics and affine
weights far from the identity): the ONNX export under ONNX Runtime (no BatchNormalization left),
the optimised PyTorch build made by the generated ``from_training_state_dict``, and the folded
weight against the fold worked out here channel by channel in float64. The latency model is
checked with made-up coefficients (nothing is measured): a transposed convolution costs what the
convolution it is the transpose of costs, and scales as a convolution does."""

from __future__ import annotations

import functools
import subprocess
import sys
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

import nasdsl
from nasdsl import ir
from nasdsl.backends.onnx import export_onnx
from nasdsl.backends.pytorch import generate_source
from nasdsl.bench import latency
from nasdsl.optimize import optimize, optimized_weights
from nasdsl.passes.derive import FoldNorm
from nasdsl.passes.fold import fold_norms

#: (input shape, the transposed convolution's attributes as the spec writes them, BatchNorms after it)
CASES = {
    "1d-g1-bias": ([4, 7], {"out": 6, "kernel": 3, "stride": 2}, 1),
    # the ONNX export adds the positions past the scatter's end by a Pad before the (folded) bias
    "1d-g2-nobias-dilated": (
        [4, 7],
        {"out": 4, "kernel": 2, "padding": 1, "output_padding": 2, "dilation": 3, "groups": 2, "bias": False},
        1,
    ),  # fmt: skip
    "2d-g1-nobias": (
        [4, 5, 6],
        {"out": 5, "kernel": 3, "stride": 2, "padding": 1, "output_padding": 1, "bias": False},
        1,
    ),  # fmt: skip
    "2d-g3-bias-two-norms": ([6, 4, 5], {"out": 9, "kernel": [2, 3], "stride": [2, 1], "groups": 3}, 2),
    "2d-depthwise-nobias": (
        [4, 5, 6],
        {"out": 4, "kernel": 4, "stride": 2, "padding": 1, "groups": 4, "bias": False},
        1,
    ),  # fmt: skip
    "3d-g2-bias": ([4, 3, 4, 5], {"out": 6, "kernel": 3, "stride": [1, 2, 2], "padding": 1, "groups": 2}, 1),
    "3d-g1-nobias": ([3, 2, 3, 3], {"out": 5, "kernel": [1, 2, 2], "stride": 2, "bias": False}, 1),
}
#: the first BatchNorm's eps (not the default, so that the fold must read it)
EPS = 1e-3


def _yaml(v: object) -> str:
    return ("true" if v else "false") if isinstance(v, bool) else str(v)


def _spec(shape: list[int], attrs: dict, norms: int) -> str:
    n = len(shape) - 1
    fields = ", ".join(f"{k}: {_yaml(v)}" for k, v in attrs.items())
    axes = ", axes: CL" if n == 1 else ""
    lines = [
        "nasdsl: 1",
        "name: Up",
        f"input: {{shape: {shape}{axes}}}",
        "model:",
        f"  up: {{op: conv_transpose{n}d, {fields}}}",
        f"  bn: {{op: batch_norm, eps: {EPS}}}",
        *(["  bn2: batch_norm"] if norms == 2 else []),
        "  act: {op: leaky_relu, negative_slope: 0.2}",
    ]
    return "\n".join(lines) + "\n"


def _by_hand(shape: list[int], attrs: dict, norms: int) -> nn.Sequential:
    """The case's network in torch, with every tensor drawn far from its default (seeded)."""
    n = len(shape) - 1
    conv = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[n]
    norm = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[n]
    window = {k: tuple(v) if isinstance(v, list) else v for k, v in attrs.items() if k not in ("out", "kernel")}
    kernel = tuple(attrs["kernel"]) if isinstance(attrs["kernel"], list) else attrs["kernel"]
    layers = OrderedDict(up=conv(shape[0], attrs["out"], kernel, **window), bn=norm(attrs["out"], eps=EPS))
    if norms == 2:
        layers["bn2"] = norm(attrs["out"])
    layers["act"] = nn.LeakyReLU(0.2)
    model = nn.Sequential(layers)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for key, t in model.state_dict().items():
            leaf = key.rsplit(".", 1)[-1]
            if leaf == "num_batches_tracked":
                t.fill_(7)
            elif leaf == "running_var":
                t.copy_(torch.rand(t.shape, generator=g) * 1.5 + 0.2)
            elif key.startswith("bn") and leaf == "weight":  # gamma of either sign, away from 1
                t.copy_((torch.rand(t.shape, generator=g) * 2 - 1) * 2)
            else:  # weights, biases, running means, betas
                t.copy_(torch.rand(t.shape, generator=g) * 2 - 1)
    return model.eval()


def _relative(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / np.abs(want).max())


@functools.cache
def _run(case: str, folder: str) -> dict:
    """Every figure of one case, computed once and shared by the tests below."""
    import onnxruntime as ort

    shape, attrs, norms = CASES[case]
    path = f"{folder}/{case}.yaml"
    with open(path, "w") as f:
        f.write(_spec(shape, attrs, norms))
    net = nasdsl.compile_spec(path)
    reference = _by_hand(shape, attrs, norms)
    state = {k: v.clone() for k, v in reference.state_dict().items()}
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = reference(x).numpy()

    arrays = {k: v.numpy() for k, v in state.items()}
    proto = export_onnx(net.graph, opset=17, state_dict=arrays, batch=2)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})

    built = nasdsl.build_model(net, optimize="cpu", weights=state)  # its from_training_state_dict
    with torch.no_grad():
        got = built(x).numpy()
    return {
        "net": net,
        "state": state,
        "onnx_ops": [n.op_type for n in proto.graph.node],
        "onnx_err": _relative(onnx_out, want),
        "torch_err": _relative(got, want),
        "built": built,
        "want_scale": float(np.abs(want).max()),
    }


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("fold_transpose"))


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_fold_pass_records_the_groups_of_a_transposed_convolution(case, folder):
    _, attrs, norms = CASES[case]
    net = _run(case, folder)["net"]
    g = fold_norms(net.graph)
    groups = attrs.get("groups", 1)
    want = (FoldNorm("up", "bn", EPS, groups), FoldNorm("up", "bn2", 1e-5, groups))[:norms]
    assert ir.info(g).derivation == want
    assert not any(d.op == "batch_norm" for _, d in ir.nodes(g))
    up = ir.node(g, "up")
    assert up.attrs["bias"] and "bias" not in up.given and ir.inputs(g, "act") == ["up"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_folded_onnx_export_matches_the_network_written_in_torch(case, folder):
    r = _run(case, folder)
    assert "BatchNormalization" not in r["onnx_ops"] and "ConvTranspose" in r["onnx_ops"]
    assert r["want_scale"] > 0.5  # an output that vanished would make any difference small
    assert r["onnx_err"] < 1e-5


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_optimised_pytorch_build_matches_the_network_written_in_torch(case, folder):
    r = _run(case, folder)
    built = r["built"]
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in built.modules())
    assert built.up.bias is not None
    assert r["torch_err"] < 1e-5


def _fold_by_hand(weight: np.ndarray, bias: np.ndarray | None, norm: dict, eps: float, groups: int):
    """The fold, output channel by output channel, in float64: output channel o of group k
    (o = k * per + j, per = C_out / groups) reads weight[k * C_in / groups : (k + 1) * C_in / groups, j]."""
    weight = weight.astype(np.float64).copy()
    scale = norm["weight"] / np.sqrt(norm["running_var"] + eps)
    per, rows = weight.shape[1], weight.shape[0] // groups
    for o, s in enumerate(scale):
        k, j = divmod(o, per)
        weight[k * rows : (k + 1) * rows, j] *= s
    b = np.zeros(len(scale)) if bias is None else bias.astype(np.float64)
    return weight, (b - norm["running_mean"]) * scale + norm["bias"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_folded_weights_are_the_fold_worked_out_by_hand(case, folder):
    """The generated ``from_training_state_dict`` (torch) and ``derive_weights`` (numpy, the ONNX
    export's) give the same bits, and the fold worked out here within float32 rounding."""
    _, attrs, norms = CASES[case]
    r = _run(case, folder)
    state = {k: v.numpy().astype(np.float64) for k, v in r["state"].items()}
    weight, bias = state["up.weight"], state.get("up.bias")
    for norm, eps in (("bn", EPS), ("bn2", 1e-5))[:norms]:
        stats = {p: state[f"{norm}.{p}"] for p in ("weight", "bias", "running_mean", "running_var")}
        weight, bias = _fold_by_hand(weight, bias, stats, eps, attrs.get("groups", 1))
    torch_side = {k: v.numpy() for k, v in r["built"].state_dict().items()}
    numpy_side = optimized_weights(r["net"], optimize(r["net"], "cpu"), r["state"])
    assert set(torch_side) == set(numpy_side) == {"up.weight", "up.bias"}
    for key in torch_side:
        assert np.array_equal(torch_side[key], numpy_side[key]), key
    assert np.allclose(torch_side["up.weight"], weight, rtol=1e-5, atol=1e-6)
    assert np.allclose(torch_side["up.bias"], bias, rtol=1e-5, atol=1e-6)


def test_the_export_without_torch_folds_the_same_bits(folder, monkeypatch):
    """``derive_weights`` multiplies with torch where torch is imported and with numpy otherwise
    (an ONNX export never imports torch): both give the same bits."""
    from nasdsl.passes.derive import derive_weights

    r = _run("2d-g3-bias-two-norms", folder)
    steps = ir.info(optimize(r["net"], "cpu")).derivation
    weights = {k: v.numpy() for k, v in r["state"].items()}
    with_torch = derive_weights(steps, weights)
    monkeypatch.setitem(sys.modules, "torch", None)  # as if never imported
    without = derive_weights(steps, weights)
    assert set(with_torch) == set(without)
    for key, value in with_torch.items():
        assert np.array_equal(value, without[key]), key


DECODER = """\
nasdsl: 1
name: Decoder
input: {shape: [3, 4, 4]}
templates:
  Up:
    params: [out]
    body:
      - {op: conv_transpose2d, out: out, kernel: 2, stride: 2, groups: 2, bias: false}
      - batch_norm
      - relu
model:
  stem: [{op: conv2d, out: 8, kernel: 3, padding: 1, bias: false}, batch_norm, relu]
  up1: {use: Up, args: [6]}
  up2: {use: Up, args: [4]}
"""


def test_a_file_with_both_folds_defines_both_and_passes_ruff(tmp_path):
    """Convolutions and transposed convolutions in one file: each fold has its function, the
    template keeps its one class (both uses lost their BatchNorm alike), the file passes the
    strict ruff rules, and its model matches the unoptimised one."""
    path = tmp_path / "decoder.yaml"
    path.write_text(DECODER)
    net = nasdsl.compile_spec(path)
    source = generate_source(optimize(net, "cpu"))
    assert 'fold_batch_norm(state, "stem.0", "stem.1", 1e-05)' in source
    assert 'fold_batch_norm_transposed(state, "up1.0", "up1.1", 1e-05, groups=2)' in source
    assert 'fold_batch_norm_transposed(state, "up2.0", "up2.1", 1e-05, groups=2)' in source
    assert source.count("class Up(") == 1 and "nn.ConvTranspose2d(in_channels, out, 2, stride=2, groups=2)" in source
    assert "nn.BatchNorm" not in source
    written = tmp_path / "decoder_inference.py"
    written.write_text(source)
    strict = ["--select", "E,F,W,I,B,UP,RUF"]
    for args in (["check", "--isolated", *strict, str(written)], ["format", "--isolated", "--check", str(written)]):
        run = subprocess.run([sys.executable, "-m", "ruff", *args], capture_output=True, text=True)
        assert run.returncode == 0, run.stdout + run.stderr

    training = nasdsl.build_model(net).eval()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for key, t in training.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g) + (0.3 if key.endswith("running_var") else -0.5))
    built = nasdsl.build_model(net, optimize="cpu", weights=training.state_dict())
    x = torch.randn(2, 3, 4, 4, generator=g)
    with torch.no_grad():
        assert _relative(built(x).numpy(), training(x).numpy()) < 1e-5


# ---------------------------------------------------------------------------
# The latency model


def _model(**coefficients: float) -> latency.LatencyModel:
    """A latency model of made-up coefficients (every other one 0): nothing measured."""
    coef = dict.fromkeys(latency.columns(), 0.0) | coefficients
    return latency.LatencyModel("onnxruntime", "0", "test", 1, coef)


#: a rate for every group's work and count, and for traffic: any part's cost shows
EVERY = _model(
    **{f"{g}.work": 1e-6 * (i + 1) for i, g in enumerate(latency.GROUPS)},
    **{f"{g}.count": 1e-3 * (i + 1) for i, g in enumerate(latency.GROUPS)},
    traffic=1e-7,
)


def _costs(tmp_path, name: str, shape: list[int], body: str) -> dict[str, float]:
    axes = ", axes: CL" if len(shape) == 2 else ""
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"nasdsl: 1\nname: N\ninput: {{shape: {shape}{axes}}}\nmodel:\n{body}")
    return EVERY.costs(nasdsl.compile_spec(path).graph)


def _fields(attrs: dict) -> str:
    return ", ".join(f"{k}: {v}" for k, v in attrs.items())


@pytest.mark.parametrize(
    ("rank", "cin", "cout", "side", "window"),
    [
        (1, 32, 16, 8, {"kernel": 4, "stride": 2, "padding": 1}),
        (2, 32, 16, 6, {"kernel": 4, "stride": 2, "padding": 1}),
        (2, 20, 12, 6, {"kernel": 3, "stride": 2, "padding": 1, "output_padding": 1}),  # not whole blocks
        (2, 32, 32, 6, {"kernel": 3, "padding": 1, "groups": "depthwise"}),
        (3, 16, 8, 3, {"kernel": 2, "stride": 2}),
    ],
)
def test_a_transposed_convolution_costs_what_the_convolution_it_transposes_costs(
    tmp_path, rank, cin, cout, side, window
):
    """``conv_transpose{n}d`` from C_in to C_out on a map of ``side`` against ``conv{n}d`` from
    C_out to C_in with the same window on the transposed one's output (which it maps back to the
    input's size), each with its own shapes and multiply-adds (the registry's scatter count for
    the one, the convolution's for the other): the same cost, at twice the channels and sides
    too, so that it grows as the convolution's does."""
    ups, downs = [], []
    for scale in (1, 2):
        attrs = {k: cin * scale if v == "depthwise" else v for k, v in window.items()}
        k, s, p, o = (attrs.get(key, 0) for key in ("kernel", "stride", "padding", "output_padding"))
        n = side * scale
        out_side = (n - 1) * (s or 1) - 2 * p + k + o  # PyTorch's output size
        up = {"op": f"conv_transpose{rank}d", "out": cout * scale, **attrs}
        down = {"op": f"conv{rank}d", "out": cin * scale, **{k: v for k, v in attrs.items() if k != "output_padding"}}
        ups.append(_costs(tmp_path, "up", [cin * scale] + [n] * rank, f"  up: {{{_fields(up)}}}\n")["up"])
        downs.append(
            _costs(tmp_path, "down", [cout * scale] + [out_side] * rank, f"  down: {{{_fields(down)}}}\n")["down"]
        )
        assert ups[-1] == pytest.approx(downs[-1], rel=1e-12)
    assert ups[1] > 2 * ups[0]  # twice the channels and the sides: several times the work


def test_a_transposed_convolution_is_no_generic_product():
    """Worked out by hand: 32 to 16 channels, kernel 4, stride 2, padding 1 on an 8x8 map (out
    16x16) is the 16-to-32-channel 4x4 convolution on 16x16 with stride 2, blocked: 16 x 32
    channels x 64 positions x 16 taps of work; it reads 32 x 64 values, writes 16 x 256, and
    holds 32 x 16 x 16 weights."""
    attrs = {"kernel": (4, 4), "stride": (2, 2), "padding": (1, 1), "dilation": (1, 1), "output_padding": (0, 0)}
    attrs["groups"] = 1
    macs = 32 * 16 * 16 * 64
    (part,) = latency.features("conv_transpose2d", attrs, ((32, 8, 8),), (16, 16, 16), macs, "")
    assert part == ("conv_kxk", 16 * 32 * 64 * 16, 32 * 64 + 16 * 256 + 32 * 16 * 16, 0)
    # 1-D and 3-D: unfolded into a matrix product, as conv1d and conv3d are
    (part,) = latency.features("conv_transpose1d", {**attrs, "kernel": (4,)}, ((32, 8),), (16, 16), 32 * 16 * 4 * 8, "")
    assert part[:2] == ("conv_nd", 32 * 16 * 4 * 8)


def test_a_batch_norm_after_a_transposed_convolution_is_folded_but_nothing_is_fused():
    """Every export folds it (as into a convolution); ONNX Runtime 1.32 fuses no activation into
    a ConvTranspose (its optimised graph keeps the Relu), but fuses a LeakyRelu into a Conv."""
    nodes = [
        ("x", "input", (), False),
        ("up", "conv_transpose2d", ("x",), False),
        ("bn", "batch_norm", ("up",), False),
        ("act", "relu", ("bn",), False),
        ("conv", "conv2d", ("act",), False),
        ("leaky", "leaky_relu", ("conv",), False),
        ("fc", "linear", ("leaky",), False),
        ("leaky2", "leaky_relu", ("fc",), False),
        ("elu", "elu", ("leaky2",), False),
    ]
    assert latency.contexts(nodes) == {
        "x": "view", "up": "", "bn": "folded", "act": "", "conv": "", "leaky": "fused", "fc": "", "leaky2": "fused",
        "elu": "",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("op", "attrs", "group"),
    [
        ("group_norm", {"groups": 4, "eps": 1e-5, "affine": True}, "norm"),
        ("instance_norm", {"track_running_stats": False}, "norm"),
        ("instance_norm", {"track_running_stats": True}, "affine"),  # exported as BatchNormalization
        ("elu", {"alpha": 1.0}, "transcendental"),
        ("prelu", {"per_channel": True}, "broadcast"),
        # standing alone, one select a value (after a convolution or linear layer it is fused:
        # see the contexts above)
        ("leaky_relu", {"negative_slope": 0.01}, "elementwise"),
    ],
)
def test_norms_and_activations_have_their_groups_and_scale_with_the_map(op, attrs, group):
    """Each its group (before, every one fell to the element-wise fallback), and its work and
    traffic double with the map, as those of the element-wise ops and norms do."""
    small, large = (16, 8, 8), (16, 16, 8)
    one = latency.features(op, attrs, (small,), small, 0, "")
    two = latency.features(op, attrs, (large,), large, 0, "")
    assert one == ((group, 16 * 64, 2 * 16 * 64, 0),)
    assert two == ((group, 2 * 16 * 64, 4 * 16 * 64, 0),)


ENGINE = """\
nasdsl: 1
name: Fusions
input: {shape: [16, 8, 8]}
model:
  conv1: {op: conv2d, out: 16, kernel: 3, padding: 1}
  leaky: leaky_relu
  conv2: {op: conv2d, out: 16, kernel: 3, padding: 1}
  elu: elu
  conv3: {op: conv2d, out: 16, kernel: 3, padding: 1}
  prelu: prelu
  up: {op: conv_transpose2d, out: 16, kernel: 2, stride: 2}
  bn: batch_norm
  relu: relu
"""


def test_what_the_contexts_say_onnx_runtime_fuses_it_fuses(tmp_path):
    """The facts :func:`latency.contexts` and the groups rest on, read from ONNX Runtime's own
    optimised graph of nasdsl's export: a LeakyRelu becomes the activation of the Conv before
    it (as a Relu does); an Elu and a PRelu stand alone, the map reordered out of the blocked
    layout before them; a Relu after a ConvTranspose stands alone; the BatchNorm is folded."""
    import onnx
    import onnxruntime as ort

    path = tmp_path / "fusions.yaml"
    path.write_text(ENGINE)
    net = nasdsl.compile_spec(path)
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    options.log_severity_level = 3  # its warning that the file suits this machine alone
    ort.InferenceSession(
        export_onnx(net.graph, opset=17).SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    nodes = onnx.load(str(tmp_path / "optimised.onnx")).graph.node
    ops = [n.op_type for n in nodes]
    fused = [a.s.decode() for n in nodes if n.op_type == "Conv" for a in n.attribute if a.name == "activation"]
    assert fused == ["LeakyRelu"]
    assert "LeakyRelu" not in ops and "BatchNormalization" not in ops
    for op in ("Elu", "PRelu"):
        assert ops[ops.index(op) - 1] == "ReorderOutput", ops
    assert ops[-2:] == ["ConvTranspose", "Relu"], ops
    contexts = latency.contexts((v.name, v.op, v.inputs, v.train) for v in latency._nodes(net.graph))
    assert [contexts[n] for n in ("leaky", "elu", "prelu", "bn", "relu")] == ["fused", "", "", "folded", ""]
