"""ONNX files of older opsets, whose ops read otherwise than today's: each is imported as the file's
own opset says (ONNX's operator changelog), or refused where the spec has no op that computes it.
The reference is ONNX Runtime's run of each file, built node by node (no exporter of today writes
these opsets), against the ONNX export of the imported spec with the tensors it carried.

* Slice took its bounds as attributes before opset 10, and as inputs from it.
* Softmax before opset 13 is over all the axes from ``axis`` (1 unless said) on, flattened into one;
  from opset 13 over ``axis`` alone (-1 unless said).
* Before opset 7, Add and Mul broadcast by their ``broadcast`` and ``axis`` attributes and Reshape
  took its shape as an attribute; ONNX Runtime runs opset 7 and later, and so does the importer. A
  file of IR version 1 or 2 names no opset at all, which ONNX's checker reads as opset 1.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx_runs import agreement, run_ort

from nasdsl.cli import main as cli_main
from nasdsl.importer import ImportFailure, import_model

SHAPE = [1, 4, 6, 6]


def _file(last, opset: int, out_shape, *, initializers=(), ir_version: int = 7, opsets: bool = True):
    """A padded 3x3 convolution of a 1x4x6x6 map (weights to carry), then the node ``last`` (reading
    ``c``, writing ``y``)."""
    weight = np.random.default_rng(0).standard_normal((4, 4, 3, 3)).astype(np.float32)
    conv = helper.make_node("Conv", ["x", "conv.weight"], ["c"], pads=[1, 1, 1, 1])
    graph = helper.make_graph(
        [conv, last],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        [numpy_helper.from_array(weight, "conv.weight"), *initializers],
    )
    if ir_version < 4:  # before IR version 4 every initializer is a graph input too
        graph.input.append(helper.make_tensor_value_info("conv.weight", TensorProto.FLOAT, weight.shape))
    imports = [helper.make_opsetid("", opset)] if opsets else []
    return helper.make_model(graph, opset_imports=imports, ir_version=ir_version)


def _ints(name: str, values: list[int]):
    return numpy_helper.from_array(np.array(values, dtype=np.int64), name)


#: (label, the last node, opset, output shape, initializers): files whose import computes what
#: ONNX Runtime does
READ = [
    ("slice-attributes-9", helper.make_node("Slice", ["c"], ["y"], axes=[1], starts=[1], ends=[3]), 9,
     [1, 2, 6, 6], ()),
    ("slice-attributes-open-end-9", helper.make_node("Slice", ["c"], ["y"], axes=[1], starts=[-3], ends=[2**62]), 9,
     [1, 3, 6, 6], ()),
    ("slice-inputs-10", helper.make_node("Slice", ["c", "s", "e", "a"], ["y"]), 10, [1, 2, 6, 6],
     (_ints("s", [1]), _ints("e", [3]), _ints("a", [1]))),
    ("softmax-channels-13", helper.make_node("Softmax", ["c"], ["y"], axis=1), 13, SHAPE, ()),
]  # fmt: skip


@pytest.mark.parametrize(("label", "last", "opset", "out_shape", "initializers"), READ, ids=[r[0] for r in READ])
def test_ops_of_older_opsets_import_as_onnx_runtime_runs_them(label, last, opset, out_shape, initializers):
    proto = _file(last, opset, out_shape, initializers=initializers)
    x = np.random.default_rng(1).standard_normal(SHAPE).astype(np.float32)
    assert run_ort(proto, x).shape == tuple(out_shape)
    result = import_model(proto, weights=True)
    assert agreement(proto, result, least=0.1) < 1e-5


def test_a_softmax_before_opset_13_is_over_the_axes_from_axis_on_taken_as_one(tmp_path, capsys):
    """Over a 1x4x6x6 map it is over all 144 values of a sample, which no spec op computes: an error
    naming the node (the second of the graph, though it has no name), exit 2, no spec written.
    Over a map whose later axes are 1 it is over the channels, the spec's softmax."""
    flat = _file(helper.make_node("Softmax", ["c"], ["y"], axis=1), 11, SHAPE)
    whole = r"a Softmax of opset 11 over the axes from 1 on, taken as one \(4 x 6 x 6\)"
    with pytest.raises(ImportFailure, match=whole):
        import_model(flat)
    onnx.save(flat, tmp_path / "flat.onnx")
    assert cli_main(["import", str(tmp_path / "flat.onnx"), "-o", str(tmp_path / "flat.yaml")]) == 2
    err = capsys.readouterr().err
    assert "flat.onnx: graph.node[1] '' (Softmax): error: a Softmax of opset 11" in err
    assert "Traceback" not in err and not (tmp_path / "flat.yaml").exists()
    pool = helper.make_node("GlobalAveragePool", ["c"], ["p"])
    soft = helper.make_node("Softmax", ["p"], ["y"])  # axis 1 unless said
    pooled = _file(pool, 11, [1, 4, 1, 1])
    pooled.graph.node.append(soft)
    pooled.graph.output[0].name = "y"
    assert agreement(pooled, import_model(pooled, weights=True), least=0.1) < 1e-5


@pytest.mark.parametrize(
    ("opsets", "opset", "ir_version", "said"),
    [(True, 6, 3, "is opset 6"), (False, 1, 2, "names no version of it (IR version < 3: opset 1)")],
    ids=["opset-6", "ir-2-no-opset"],
)
def test_files_older_than_opset_7_are_refused(tmp_path, capsys, opsets, opset, ir_version, said):
    """Their ops read otherwise (Add's broadcast attribute, Reshape's shape attribute): an error
    that says which opsets are read and how to convert the file, exit 2, no spec written."""
    proto = _file(helper.make_node("Relu", ["c"], ["y"]), opset, SHAPE, ir_version=ir_version, opsets=opsets)
    onnx.checker.check_model(proto)  # a valid file: ONNX reads it as that opset
    path = tmp_path / "old.onnx"
    onnx.save(proto, path)
    assert cli_main(["import", str(path), "-o", str(tmp_path / "old.yaml")]) == 2
    err = capsys.readouterr().err
    assert f"old.onnx: error: the file's default domain {said}; nasdsl reads opset 7 and later" in err
    assert "onnx.version_converter.convert_version" in err and not (tmp_path / "old.yaml").exists()
