"""Resizes imported as the source computes them. The reference is the torch model itself
(``F.interpolate``, ``nn.Upsample``), run on the same input as the generated model of each
import: from the module (the Python API) and from its ``torch.onnx.export(..., dynamo=False)``
file. Sizes and scales are where float32 matters: 10 x 2.3 is 23 in double precision, as
PyTorch computes it, and 22.99999952 with the float32 2.29999995 that an ONNX file holds (ONNX's
shape inference says 22, ONNX Runtime 23); 7 x 1.5 and 9 x 0.75 are no whole numbers, so that a
size in place of the scale would map the positions by another ratio. ONNX's first resizes
(Upsample at opsets 7 and 9, Resize at opset 10), which no exporter of today writes, are built
node by node and their reference is ONNX Runtime's run of the file."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
import yaml
from onnx import TensorProto, helper
from onnx_runs import agreement, run_ort

import nasdsl
from nasdsl.backends.onnx import export_onnx
from nasdsl.backends.pytorch import generate_source, load_source
from nasdsl.cli import main as cli_main
from nasdsl.importer import ImportFailure, import_model


class _Resize(torch.nn.Module):
    """A 1x1 convolution (so that the file has weights to carry) and a resize: ``F.interpolate``
    with ``resize``'s arguments, or ``nn.Upsample`` with them where ``module``."""

    def __init__(self, module: bool, **resize):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 2, 1)
        self.resize = resize
        self.up = torch.nn.Upsample(**resize) if module else None

    def forward(self, x):
        x = self.conv(x)
        return self.up(x) if self.up is not None else F.interpolate(x, **self.resize)


def _onnx_file(model: torch.nn.Module, x: torch.Tensor) -> onnx.ModelProto:
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), f, dynamo=False, opset_version=17)
    return onnx.load_from_string(f.getvalue())


def _generated(result) -> torch.nn.Module:
    """The PyTorch backend's model of an import holding the tensors it carried."""
    net = result.compiled
    model = getattr(load_source(generate_source(net.graph)), net.spec.name)()
    model.load_state_dict({k: torch.as_tensor(np.array(v)) for k, v in result.weights.items()}, strict=True)
    return model.eval()


def _resized(result) -> dict:
    (entry,) = [v for v in yaml.safe_load(result.text)["model"].values() if v.get("op") == "interpolate"]
    return entry


#: (input, module, the resize's arguments, the spec's entry from PyTorch, from the ONNX file):
#: the scale as written (2.3, not the file's 2.29999995); a size as given, one integer or one
#: per side (the file holds the four sizes); scales per side that are whole ratios of the sizes
#: as the sizes (PyTorch's positions are the same)
CASES = [
    ((3, 10, 10), False, {"scale_factor": 2.3}, {"scale": 2.3}, {"scale": 2.3}),
    ((3, 10, 10), True, {"scale_factor": 2.3, "mode": "bilinear"}, {"scale": 2.3}, {"scale": 2.3}),
    ((3, 7, 9), False, {"scale_factor": 1.5, "mode": "bilinear"}, {"scale": 1.5}, {"scale": 1.5}),
    ((3, 7, 9), True, {"scale_factor": 0.75}, {"scale": 0.75}, {"scale": 0.75}),
    (
        (3, 7, 9),
        False,
        {"scale_factor": 0.75, "mode": "bilinear", "align_corners": True},
        {"scale": 0.75, "align_corners": True},
        {"scale": 0.75, "align_corners": True},
    ),
    ((3, 7, 9), True, {"size": 12, "mode": "bilinear"}, {"size": 12}, {"size": [12, 12]}),
    ((3, 7, 9), False, {"size": (5, 1), "mode": "bilinear"}, {"size": [5, 1]}, {"size": [5, 1]}),
    ((3, 7, 9), True, {"size": (14, 18)}, {"size": [14, 18]}, {"size": [14, 18]}),
    ((3, 8, 6), False, {"scale_factor": (2.0, 3.0)}, {"size": [16, 18]}, {"size": [16, 18]}),
]


@pytest.mark.parametrize(("shape", "module", "resize", "from_torch", "from_onnx"), CASES)
def test_a_resize_imports_from_pytorch_and_onnx_as_the_model_computes_it(shape, module, resize, from_torch, from_onnx):
    torch.manual_seed(0)
    model = _Resize(module, **resize).eval()
    x = torch.randn(1, *shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = model(x)
    mode = {"mode": resize["mode"]} if "mode" in resize else {}
    for result, entry in (
        (import_model(model, input_shape=shape, weights=True), from_torch),
        (import_model(_onnx_file(model, x), weights=True), from_onnx),
    ):
        assert _resized(result) == {"op": "interpolate", **entry, **mode}
        with torch.no_grad():
            got = _generated(result)(x)
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_scales_per_side_that_no_one_scale_or_sizes_compute_are_refused():
    """7 x 1.5 and 9 x 0.75 are no whole numbers: the sizes 10 and 6 map the positions by 7 / 10
    and 9 / 6 where PyTorch maps them by 1 / 1.5 and 1 / 0.75, and the spec takes one scale."""
    model = _Resize(False, scale_factor=(1.5, 0.75), mode="bilinear").eval()
    with pytest.raises(ImportFailure) as info:
        import_model(model, input_shape=(3, 7, 9))
    assert info.value.format().endswith(
        "interpolate: function torch.nn.functional.interpolate (fx node 'interpolate'): scale factors [1.5, 0.75]: "
        "the spec's interpolate takes one scale, and the sizes [10, 6] would map the positions by other ratios"
    )
    with pytest.raises(ImportFailure) as info:
        import_model(_onnx_file(model, torch.randn(1, 3, 7, 9)))
    assert info.value.format() == (
        "<onnx model>: graph.node[2] '/Resize' (Resize): error: a Resize by [1.5, 0.75] in mode linear with "
        "half_pixel coordinates: no one scale or sizes of the spec's interpolate (PyTorch's F.interpolate) give "
        "its sizes and positions"
    )


def _resize_to_one(coordinates: str) -> onnx.ModelProto:
    """A linear Resize of a 1x3x5x5 map to 4x1 positions."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 5, 5])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 1])
    sizes = helper.make_tensor("sizes", TensorProto.INT64, [4], [1, 3, 4, 1])
    node = helper.make_node(
        "Resize", ["x", "", "", "sizes"], ["y"], name="down", mode="linear", coordinate_transformation_mode=coordinates
    )
    graph = helper.make_graph([node], "g", [x], [y], initializer=[sizes])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_to_a_side_of_1_half_pixel_is_pytorchs_and_pytorch_half_pixel_is_refused():
    """To one position, PyTorch's bilinear (and ``half_pixel``) reads the side's middle, 2.0 of
    0..4, and ``pytorch_half_pixel`` its first, 0.0."""
    ramp = np.broadcast_to(np.arange(5, dtype=np.float32), (1, 3, 5, 5)).copy()
    want = F.interpolate(torch.from_numpy(ramp), size=(4, 1), mode="bilinear", align_corners=False).numpy()
    assert want[0, 0, 0, 0] == 2.0
    half = _resize_to_one("half_pixel")
    np.testing.assert_allclose(run_ort(half, ramp), want, rtol=0, atol=1e-6)
    result = import_model(half, weights=True)
    assert _resized(result) == {"op": "interpolate", "size": [4, 1], "mode": "bilinear"}
    np.testing.assert_allclose(run_ort(export_onnx(result.compiled.graph, opset=17), ramp), want, atol=1e-6)
    pytorch_half = _resize_to_one("pytorch_half_pixel")
    assert run_ort(pytorch_half, ramp)[0, 0, 0, 0] == 0.0
    with pytest.raises(ImportFailure) as info:
        import_model(pytorch_half)
    assert info.value.format() == (
        "<onnx model>: graph.node[0] 'down' (Resize): error: a linear Resize to [4, 1] with pytorch_half_pixel "
        "coordinates to a side of 1: it reads the side's first position where PyTorch's F.interpolate (and "
        "half_pixel) reads its middle"
    )


def test_a_nearest_resize_that_picks_other_positions_than_pytorch_is_refused():
    """torch.onnx.export writes nearest by 2.3 on a side of 3 as a Resize that copies positions
    0, 0, 0, 1 (``floor(i / 2.3)``, ONNX Runtime); PyTorch's kernel doubles the side, 0, 0, 1, 1."""
    model = _Resize(False, scale_factor=2.3).eval()
    x = torch.arange(3.0).reshape(1, 1, 3, 1).expand(1, 3, 3, 9).contiguous()  # rows 0, 1, 2
    proto = _onnx_file(model, x)
    with torch.no_grad():
        ours, theirs = model.conv(x), run_ort(proto, x.numpy())
        want = F.interpolate(ours, scale_factor=2.3)
    assert theirs.shape == tuple(want.shape) == (1, 2, 6, 20)
    assert not np.allclose(theirs, want.numpy(), atol=1e-5)
    with pytest.raises(ImportFailure, match=r"'/Resize' \(Resize\): error: a Resize by \[2.29999995, 2.29999995\]"):
        import_model(proto)


def _spec(tmp_path: Path, shape, resize: str) -> nasdsl.Compiled:
    path = tmp_path / "resize.yaml"
    path.write_text(
        f"nasdsl: 1\nname: Resize\ninput: {{shape: {list(shape)}}}\n"
        f"model:\n  conv: {{op: conv2d, out: 2, kernel: 1}}\n  up: {resize}\n"
    )
    return nasdsl.compile_spec(path)


@pytest.mark.parametrize(
    ("resize", "entry"),
    [
        ("{op: interpolate, scale: 2.3, mode: bilinear}", {"scale": 2.3, "mode": "bilinear"}),
        # 5 x 1.1 keeps its size: the export scales that side by 1
        ("{op: interpolate, scale: 1.1, mode: bilinear}", {"scale": 1.1, "mode": "bilinear"}),
        ("{op: interpolate, scale: 1.5}", {"scale": 1.5}),
        # nearest where a Resize would pick other positions: a Gather of PyTorch's along each side
        ("{op: interpolate, scale: 2.3}", {"scale": 2.3}),
        ("{op: interpolate, scale: 1.1}", {"scale": 1.1}),
        ("{op: interpolate, size: [13, 7]}", {"size": [13, 7]}),  # no one scale gives 13 of 10 and 7 of 5
    ],
)
def test_nasdsls_own_export_imports_back_to_its_scale(tmp_path, resize, entry):
    """nasdsl's export moves a float32 scale by the units that keep its sizes (2.3 as 2.3000002
    and 2.29999995 on the sides 10 and 5), scales a side that keeps its size by 1, and writes
    nearest as Gathers of PyTorch's positions where a Resize would pick others. ONNX Runtime runs
    the file and the import's export alike."""
    net = _spec(tmp_path, (3, 10, 5), resize)
    proto = export_onnx(net.graph, opset=17)
    assert [n.op_type for n in proto.graph.node][1:] in (["Resize"], ["Gather"], ["Gather", "Gather"])
    result = import_model(proto, weights=True)
    assert _resized(result) == {"op": "interpolate", **entry}
    assert agreement(proto, result) <= 1e-6


# -- the first resizes: Upsample (opset 7, 9) and Resize (opset 10) ----------------------------


def _first_resize(op: str, opset: int, scales: tuple[float, float], mode: str, *, attribute: bool = False):
    """A 1x1 convolution of a 1x3x10x6 map (weights to carry) and ``op`` by ``scales`` along its
    height and width, in a file of ``opset``: Upsample's scales an attribute at opset 7, an input
    (as Resize's at opset 10) from opset 9."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 10, 6])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, "height", "width"])
    weight = np.random.default_rng(0).standard_normal((2, 3, 1, 1)).astype(np.float32)
    tensors = [onnx.numpy_helper.from_array(weight, "conv.weight")]
    factors = [1.0, 1.0, *scales]
    if attribute:
        resize = helper.make_node(op, ["c"], ["y"], name="up", mode=mode, scales=factors)
    else:
        tensors.append(helper.make_tensor("scales", TensorProto.FLOAT, [4], factors))
        resize = helper.make_node(op, ["c", "scales"], ["y"], name="up", mode=mode)
    conv = helper.make_node("Conv", ["x", "conv.weight"], ["c"], name="conv")
    graph = helper.make_graph([conv, resize], "g", [x], [y], initializer=tensors)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


#: (op, opset, scales attribute, scales, the spec's entry): nearest by whole or fractional scales
#: of 1 or more (output position i copies floor(i / scale), PyTorch's too), and Resize's by 0.5,
#: whose positions 2i are whole numbers (no rounding to say); scales per side as the sizes
FIRST_RESIZES = [
    ("Upsample", 7, True, (2.0, 2.0), {"scale": 2.0}),
    ("Upsample", 9, False, (2.0, 3.0), {"size": [20, 18]}),
    ("Resize", 10, False, (3.0, 3.0), {"scale": 3.0}),
    ("Resize", 10, False, (1.5, 2.5), {"size": [15, 15]}),
    ("Resize", 10, False, (0.5, 0.5), {"scale": 0.5}),
]


@pytest.mark.parametrize(("op", "opset", "attribute", "scales", "entry"), FIRST_RESIZES)
def test_nearest_upsample_and_resize_of_opset_10_import_as_onnx_runtime_runs_them(op, opset, attribute, scales, entry):
    proto = _first_resize(op, opset, scales, "nearest", attribute=attribute)
    x = np.random.default_rng(1).standard_normal((1, 3, 10, 6)).astype(np.float32)
    want = run_ort(proto, x)
    result = import_model(proto, weights=True)
    assert _resized(result) == {"op": "interpolate", **entry}
    with torch.no_grad():
        got = _generated(result)(torch.from_numpy(x)).numpy()
    assert got.shape == want.shape == (1, 2, int(10 * scales[0]), int(6 * scales[1]))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


#: (file, the error after the file's name): linear reads other positions than PyTorch's; a shrinking
#: nearest rounds as the file does not say; Upsample takes no scale under 1
FIRST_REFUSED = [
    (
        ("Resize", 10, (2.0, 2.0), "linear"),
        "graph.node[1] 'up' (Resize): error: a linear Resize of opset 10 by [2.0, 2.0]: its positions are ONNX's "
        "asymmetric coordinates (output position i reads i / scale), which none of PyTorch's linear modes, the "
        "spec's interpolate, reads: half_pixel reads (i + 0.5) / scale - 0.5, align_corners (side - 1) / (out - 1) * i",
    ),
    (
        ("Upsample", 9, (2.0, 2.0), "linear"),
        "graph.node[1] 'up' (Upsample): error: a linear Upsample of opset 9 by [2.0, 2.0]: its positions are",
    ),
    (
        ("Resize", 10, (0.6, 1.0), "nearest"),
        "graph.node[1] 'up' (Resize): error: a nearest Resize of opset 10 by [0.600000024, 1.0] shrinks axis 2 "
        "(10 to 6) reading positions i / 0.600000024 that fall between the input's: how those round, the Upsample "
        "of opset 7 to 9 and Resize of opset 10 leave unsaid (ONNX Runtime rounds them up, PyTorch's nearest down; "
        "from opset 11, Resize's nearest_mode says it)",
    ),
    (
        ("Upsample", 9, (0.5, 0.5), "nearest"),
        "graph.node[1] 'up' (Upsample): error: an Upsample of opset 9 by [0.5, 0.5]: ONNX's Upsample takes scales "
        "of 1 or more",
    ),
    # a scale that is no finite number > 0, which ONNX Runtime refuses as it loads the file
    (
        ("Resize", 10, (float("nan"), 2.0), "nearest"),
        "graph.node[1] 'up' (Resize): error: a Resize of opset 10 by [1.0, 1.0, nan, 2.0]: scales are finite "
        "numbers > 0",
    ),
    (
        ("Upsample", 9, (float("inf"), 1.0), "nearest"),
        "graph.node[1] 'up' (Upsample): error: an Upsample of opset 9 by [1.0, 1.0, inf, 1.0]: scales are finite "
        "numbers > 0",
    ),
    # bilinear is Upsample-1's mode; from opset 7 the modes are nearest and linear (ONNX Runtime
    # refuses the file), even where every side keeps its size
    (
        ("Upsample", 9, (1.0, 1.0), "bilinear"),
        "graph.node[1] 'up' (Upsample): error: an Upsample of opset 9 in mode bilinear: the spec's interpolate "
        "computes nearest and linear modes",
    ),
    # sizes that ONNX's shape inference (double precision: 22) and ONNX Runtime (float32: 23) give
    # differently, which a file of these opsets cannot settle with sizes of its own
    (
        ("Resize", 10, (2.3, 1.0), "nearest"),
        "graph.node[1] 'up' (Resize): error: a Resize by [2.29999995, 1.0] of [10, 6]: ONNX's shape inference "
        "gives it the sides [22, 6], ONNX Runtime [23, 6]",
    ),
    (
        ("Upsample", 9, (2.3, 1.0), "nearest"),
        "graph.node[1] 'up' (Upsample): error: an Upsample by [2.29999995, 1.0] of [10, 6]: ONNX's shape "
        "inference gives it the sides [22, 6], ONNX Runtime [23, 6]",
    ),
    # Upsample is deprecated from opset 10 on: ONNX's checker refuses the file
    (
        ("Upsample", 10, (2.0, 2.0), "nearest"),
        "error: not a valid ONNX model: Op registered for Upsample is deprecated in domain_version of 10",
    ),
    (
        ("Resize", 10, (1e4, 1.0), "nearest"),
        "graph.node[1] 'up' (Resize): error: a Resize by [10000.0, 1.0] of [10, 6] to [100000, 6]: the "
        "spec's interpolate makes sides of at most 65536",
    ),
]


@pytest.mark.parametrize(("made", "message"), FIRST_REFUSED)
def test_first_resizes_that_pytorch_does_not_compute_are_refused(tmp_path, capsys, made, message):
    op, opset, scales, mode = made
    path = tmp_path / "up.onnx"
    path.write_bytes(_first_resize(op, opset, scales, mode).SerializeToString())
    out = tmp_path / "up.yaml"
    assert cli_main(["import", str(path), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: {message}" in err
    assert "Traceback" not in err
    assert not out.exists()


def test_onnx_runtime_reads_other_positions_than_pytorch_where_the_first_resizes_are_refused():
    """What the refusals above guard against: ONNX Runtime's linear Resize of opset 10 by 2 is
    not PyTorch's bilinear by 2, and its nearest by 0.6 rounds up where PyTorch rounds down."""
    x = np.random.default_rng(1).standard_normal((1, 3, 10, 6)).astype(np.float32)
    conv = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 3, 1, 1)).astype(np.float32))
    mapped = torch.nn.functional.conv2d(torch.from_numpy(x), conv)
    linear = run_ort(_first_resize("Resize", 10, (2.0, 2.0), "linear"), x)
    ours = F.interpolate(mapped, scale_factor=2.0, mode="bilinear").numpy()
    assert linear.shape == ours.shape and not np.allclose(linear, ours, atol=1e-3)
    shrunk = run_ort(_first_resize("Resize", 10, (0.6, 1.0), "nearest"), x)
    ours = F.interpolate(mapped, scale_factor=(0.6, 1.0), mode="nearest").numpy()
    assert shrunk.shape == ours.shape == (1, 2, 6, 6) and not np.allclose(shrunk, ours, atol=1e-3)


def test_a_resize_to_sides_longer_than_the_spec_takes_is_refused_before_its_positions_are_computed():
    """A Resize of opset 13 to 2**40 rows was a MemoryError (the positions of every row)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 5, 5])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "c", "h", "w"])
    sizes = helper.make_tensor("sizes", TensorProto.INT64, [4], [1, 3, 2**40, 5])
    node = helper.make_node(
        "Resize",
        ["x", "", "", "sizes"],
        ["y"],
        name="up",
        coordinate_transformation_mode="asymmetric",
        nearest_mode="floor",
    )
    graph = helper.make_graph([node], "g", [x], [y], initializer=[sizes])
    with pytest.raises(ImportFailure) as info:
        import_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))
    assert info.value.format() == (
        "<onnx model>: graph.node[0] 'up' (Resize): error: a Resize to [1099511627776, 5] of [5, 5]: the spec's "
        "interpolate makes sides of at most 65536"
    )


@pytest.mark.parametrize("domains", [("", ""), ("", "ai.onnx")])
def test_a_file_naming_the_default_domain_at_two_versions_is_refused(domains):
    """Which version an op reads by would be a guess (ONNX Runtime refuses this Resize of opset 10
    where opset 13 is named too; nasdsl read it by the first)."""
    proto = _first_resize("Resize", 10, (2.0, 2.0), "nearest")
    del proto.opset_import[:]
    proto.opset_import.extend([helper.make_opsetid(domains[0], 10), helper.make_opsetid(domains[1], 13)])
    with pytest.raises(ImportFailure) as info:
        import_model(proto)
    assert info.value.format() == (
        "<onnx model>: error: opset_import names the default domain ('' or 'ai.onnx') at versions [10, 13]: a file "
        "has one"
    )


def test_scales_given_as_a_graph_input_are_refused_naming_what_reads_them(tmp_path, capsys):
    """An Upsample's scales as an input of the graph are no constant (whoever runs the file gives
    them): one input more than a spec's model takes, named with the node that reads it."""
    proto = _first_resize("Upsample", 9, (2.0, 2.0), "nearest")
    (scales,) = [t for t in proto.graph.initializer if t.name == "scales"]
    proto.graph.initializer.remove(scales)
    proto.graph.input.append(helper.make_tensor_value_info("scales", TensorProto.FLOAT, [4]))
    path = tmp_path / "up.onnx"
    path.write_bytes(proto.SerializeToString())
    assert cli_main(["import", str(path), "-o", str(tmp_path / "up.yaml")]) == 2
    err = capsys.readouterr().err
    assert (
        f"{path}: error: the graph has 2 inputs, 'x' (read by graph.node[0] 'conv' (Conv)), 'scales' (read by " in err
    )
    assert "graph.node[1] 'up' (Upsample)): a spec has one" in err and "Traceback" not in err
