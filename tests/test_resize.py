"""`interpolate` and `interpolate_like` compute one thing in the IR's shapes, the generated PyTorch and
the ONNX graph: PyTorch's `F.interpolate` with `recompute_scale_factor` unset (the output size
floor(size * scale), the coordinates mapped by the given scale), called here directly as the
reference, and ONNX Runtime running the export. Sizes and scales are chosen where the product is no
whole number (7 x 1.5, 9 x 2.3), where ONNX's float32 scale would round it down (10 x 1.4), where a
nearest position is a whole quotient (7 / 1.4 = 5, which ONNX's Resize divides to another
position), where the size stays under a scale other than 1 (5 x 1.1) and where a side becomes 1."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from onnx_runs import run_ort

import nasdsl
from nasdsl.backends.onnx import export_onnx
from nasdsl.backends.pytorch import model_class
from nasdsl.cli import main

AXES = {1: "CL", 2: "CHW", 3: "CTHW"}

#: the input (channels first, no batch) of each number of spatial axes
SHAPES = {1: (2, 7), 2: (2, 7, 9), 3: (2, 3, 7, 9)}

#: the linear mode of each number of spatial axes
LINEAR = {1: "linear", 2: "bilinear", 3: "trilinear"}

SCALES = (0.75, 1.1, 1.5, 2.3)


def _compile(tmp_path: Path, shape, body: str) -> nasdsl.Compiled:
    path = tmp_path / "resize.yaml"
    path.write_text(
        f"nasdsl: 1\nname: Resize\ninput: {{shape: {list(shape)}, axes: {AXES[len(shape) - 1]}}}\n"
        f"model:\n  up: {body}\n"
    )
    return nasdsl.compile_spec(path)


def _agree(net: nasdsl.Compiled, x: torch.Tensor, want: torch.Tensor) -> None:
    """The IR's shape, the generated module's output and ONNX Runtime's are the reference's."""
    assert tuple(net.summary()["rows"][-1]["output"]) == tuple(want.shape[1:])
    with torch.no_grad():
        got = model_class(net.graph)().eval()(x)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    ran = run_ort(export_onnx(net.graph, opset=17, batch=x.shape[0]), x.numpy())
    assert ran.shape == tuple(want.shape)
    np.testing.assert_allclose(ran, want.numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(ran, got.numpy(), rtol=0, atol=1e-5)


def _modes():
    for spatial in (1, 2, 3):
        yield spatial, "nearest", False
        yield spatial, LINEAR[spatial], False
        yield spatial, LINEAR[spatial], True


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize(("spatial", "mode", "corners"), list(_modes()), ids=lambda v: str(v))
def test_a_scale_is_pytorchs_scale_factor_everywhere(tmp_path, spatial, mode, corners, scale):
    shape = SHAPES[spatial]
    flag = ", align_corners: true" if corners else ""
    net = _compile(tmp_path, shape, f"{{op: interpolate, scale: {scale}, mode: {mode}{flag}}}")
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(spatial))
    kwargs = {"align_corners": corners} if mode != "nearest" else {}
    want = F.interpolate(x, scale_factor=scale, mode=mode, **kwargs)
    assert want.shape[2:] == tuple(math.floor(d * scale) for d in shape[1:])
    _agree(net, x, want)


@pytest.mark.parametrize(
    ("shape", "scale", "mode"),
    [
        ((2, 10), 1.4, "nearest"),  # 10 x 1.4 is 14 in double, 13.99... in float32
        ((2, 10), 1.4, "linear"),
        ((2, 31), 2.3, "nearest"),  # 69 / 2.3: PyTorch's float32 inverse takes position 29, Resize 30
        ((2, 5), 1.1, "nearest"),  # the size stays, the positions move (ONNX Runtime would copy)
        ((2, 5, 5), 1.1, "nearest"),  # on a 2-D map PyTorch copies an axis whose size stays
        ((2, 5, 6), 2.05, "nearest"),  # ... and halves the positions of one that doubles
        ((2, 5, 5), 1.1, "bilinear"),  # PyTorch's linear kernels copy an axis whose size stays
        ((2, 1, 2, 3), 1.1, "trilinear"),
        ((2, 7, 9), 0.2, "bilinear"),  # to a side of 1: half_pixel coordinates, not pytorch_half_pixel
    ],
)
def test_where_float32_and_runtimes_would_part(tmp_path, shape, scale, mode):
    net = _compile(tmp_path, shape, f"{{op: interpolate, scale: {scale}, mode: {mode}}}")
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(5))
    _agree(net, x, F.interpolate(x, scale_factor=scale, mode=mode))


@pytest.mark.parametrize(
    ("shape", "size", "mode", "corners"),
    [
        ((2, 7, 9), 4, "nearest", False),  # one number: every spatial axis
        ((2, 7, 9), 4, "bilinear", True),
        ((2, 14, 9), [8, 20], "nearest", False),  # 14 to 8: PyTorch's in / out, not Resize's out / in
        ((2, 7, 9), [1, 1], "bilinear", False),  # a side of 1
        ((2, 7), [12], "linear", False),  # a list of one on a 1-D map
        ((2, 3, 7, 9), [2, 5, 13], "trilinear", False),
        ((2, 3, 7, 9), 5, "nearest", False),
    ],
)
def test_a_size_is_pytorchs_size_everywhere(tmp_path, shape, size, mode, corners):
    flag = ", align_corners: true" if corners else ""
    net = _compile(tmp_path, shape, f"{{op: interpolate, size: {size}, mode: {mode}{flag}}}")
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(6))
    kwargs = {"align_corners": corners} if mode != "nearest" else {}
    _agree(net, x, F.interpolate(x, size=size, mode=mode, **kwargs))


@pytest.mark.parametrize(
    "body",
    [
        "{op: interpolate, scale: 1.5}",
        "{op: interpolate, scale: 2.3, mode: bilinear}",
        "{op: interpolate, size: 4, mode: bilinear}",
    ],
)
def test_a_dynamic_batch_resizes_alike(tmp_path, body):
    net = _compile(tmp_path, (2, 7, 9), body)
    x = torch.randn(3, 2, 7, 9, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        want = model_class(net.graph)().eval()(x)
    ran = run_ort(export_onnx(net.graph, opset=17, batch="dynamic"), x.numpy())
    np.testing.assert_allclose(ran, want.numpy(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_interpolate_like_is_the_size_of_the_second_input(tmp_path, mode):
    body = f"{{interpolate_like: [{{op: max_pool, kernel: 3, stride: 2}}, identity], mode: {mode}}}"
    net = _compile(tmp_path, (2, 14, 9), body)
    x = torch.randn(2, 2, 14, 9, generator=torch.Generator().manual_seed(7))
    _agree(net, x, F.interpolate(F.max_pool2d(x, 3, 2), size=(14, 9), mode=mode))


@pytest.mark.parametrize(
    ("shape", "body", "message"),
    [
        (
            (2, 7, 9),
            "{op: interpolate, size: [64]}",
            "resize.yaml:5:7: error: model.up: expected a size of one integer (every spatial axis) or a list of 2 "
            "(one per spatial axis) for a (C, H, W) map 2x7x9, got [64]",
        ),
        (
            (2, 7, 9),
            "{op: interpolate, scale: 2, align_corners: true}",
            "resize.yaml:5:50: error: model.up.align_corners: expected align_corners false with mode nearest "
            "(PyTorch takes it in the linear modes), got true",
        ),
        (
            (2, 7, 9),
            "{op: interpolate, scale: 2, mode: linear}",
            "resize.yaml:5:7: error: model.up: expected a (C, L) map for mode linear, got a (C, H, W) map 2x7x9",
        ),
    ],
    ids=["a list of one on a 2-D map", "align_corners with nearest", "linear on a 2-D map"],
)
def test_what_pytorch_would_refuse_is_a_located_error(tmp_path, capsys, shape, body, message):
    path = tmp_path / "resize.yaml"
    path.write_text(f"nasdsl: 1\nname: Resize\ninput: {{shape: {list(shape)}}}\nmodel:\n  up: {body}\n")
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_one_number_is_every_axis_in_the_generated_source(tmp_path):
    """`size: 64` is nn.Upsample(size=64) (every spatial axis), a list is written per axis."""
    from nasdsl.backends.pytorch import generate_source

    one = generate_source(_compile(tmp_path, (2, 7, 9), "{op: interpolate, size: 64}").graph)
    assert "nn.Upsample(size=64, " in one
    two = generate_source(_compile(tmp_path, (2, 7, 9), "{op: interpolate, size: [64, 32]}").graph)
    assert "nn.Upsample(size=(64, 32), " in two


def test_why_nearest_is_a_gather_where_resize_parts_from_pytorch():
    """ONNX Runtime's Resize by the scale, in PyTorch's nearest (asymmetric, rounded down), parts from
    F.interpolate where a quotient is whole (69 / 2.3) and where no side changes (5 x 1.1): the export
    writes a Gather instead (docs/spec-language.md, Resizing)."""
    import onnx
    from onnx import TensorProto, helper

    for size, scale in ((31, 2.3), (5, 1.1)):
        out = math.floor(size * scale)
        node = helper.make_node(
            "Resize", ["x", "", "scales"], ["y"], mode="nearest", coordinate_transformation_mode="asymmetric",
            nearest_mode="floor",
        )  # fmt: skip
        graph = helper.make_graph(
            [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, size])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, out])],
            [helper.make_tensor("scales", TensorProto.FLOAT, [3], [1.0, 1.0, scale])],
        )  # fmt: skip
        proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        onnx.checker.check_model(proto)
        x = torch.arange(float(size)).reshape(1, 1, size)
        resized = run_ort(proto, x.numpy())
        want = F.interpolate(x, scale_factor=scale, mode="nearest")
        assert resized.shape == tuple(want.shape)
        assert not np.array_equal(resized, want.numpy())


@pytest.mark.parametrize(
    ("body", "ops"),
    [
        ("{op: interpolate, scale: 2}", ["Resize"]),  # a scale float32 holds: Resize picks PyTorch's positions
        ("{op: interpolate, scale: 1.5}", ["Resize"]),
        ("{op: interpolate, size: [14, 18]}", ["Resize"]),
        ("{op: interpolate, scale: 2.3}", ["Gather", "Gather"]),  # one Gather per side
        ("{op: interpolate, size: [4, 9]}", ["Gather"]),  # 7 to 4: 7 / 4 in float32; the width stays
        ("{op: interpolate, scale: 2.3, mode: bilinear}", ["Resize"]),
    ],
)
def test_nearest_is_a_resize_where_float32_cannot_part_them(tmp_path, body, ops):
    net = _compile(tmp_path, (2, 7, 9), body)
    assert [node.op_type for node in export_onnx(net.graph, opset=17).graph.node] == ops
    x = torch.randn(1, 2, 7, 9, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        want = model_class(net.graph)().eval()(x)
    np.testing.assert_allclose(run_ort(export_onnx(net.graph, opset=17), x.numpy()), want.numpy(), rtol=0, atol=1e-5)
