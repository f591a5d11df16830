"""ONNX files of older opsets, whose ops read otherwise than today's: each is imported as the file's
own opset says (ONNX's operator changelog), or refused where the spec has no op that computes it.
The reference is ONNX Runtime's run of each file, built node by node (no exporter of today writes
these opsets), against the ONNX export of the imported spec with the tensors it carried.

* Slice took its bounds as attributes before opset 10, and as inputs from it.
* Softmax before opset 13 is over all the axes from ``axis`` (1 unless said) on, flattened into one;
  from opset 13 over ``axis`` alone (-1 unless said).
* Each op of the importer's table at the versions whose reading differs (ONNX's operator
  changelog, opset 7 to 20): Clip's bounds attributes before 11, inputs from it;
  BatchNormalization's ``spatial`` (7, 8) and ``training_mode`` (from 14); Dropout's
  ``training_mode`` input (from 12) and its mask; Split's sizes as an attribute (before 13), an
  input (from 13), or left out (equal parts: one per output before 18, ``num_outputs`` from 18);
  Squeeze's and Unsqueeze's axes (attributes before 13), folded in shape arithmetic, as is a Slice
  of attributes; Flatten's negative axis (from 11); Gemm's bias broadcast (from 7); ReduceMean's
  axes (an input from 18); the pools' ``ceil_mode`` (from 10) and ``count_include_pad`` (from 7);
  Resize's ``keep_aspect_ratio_policy`` (from 18) and coordinates; the other ops of the table at
  the oldest opset that has them. An op the file's opset lacks (Gelu before 20, HardSwish before
  14, LayerNormalization before 17) is refused by ONNX's checker.
* torch.onnx.export's attention at opsets 11 and 13, whose Reshapes to computed shapes ONNX's
  shape inference leaves without one below opset 14.
* Before opset 7, Add and Mul broadcast by their ``broadcast`` and ``axis`` attributes and Reshape
  took its shape as an attribute; ONNX Runtime runs opset 7 and later, and so does the importer. A
  file of IR version 1 or 2 names no opset at all, which ONNX's checker reads as opset 1.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx_runs import agreement, run_ort
from test_import_onnx_transformers import _ops, _randomised, _Tokens

from nasdsl.cli import main as cli_main
from nasdsl.importer import ImportFailure, import_model

SHAPE = [1, 4, 6, 6]


def _file(last, opset: int, out_shape, *, initializers=(), ir_version: int = 7, opsets: bool = True):
    """A padded 3x3 convolution of a 1x4x6x6 map (weights to carry), then the node ``last`` or the
    list of nodes ``last`` (reading ``c``, writing ``y``)."""
    weight = np.random.default_rng(0).standard_normal((4, 4, 3, 3)).astype(np.float32)
    conv = helper.make_node("Conv", ["x", "conv.weight"], ["c"], pads=[1, 1, 1, 1])
    graph = helper.make_graph(
        [conv, *(last if isinstance(last, list) else [last])],
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


def _floats(name: str, values) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=np.float32), name)


_draw = np.random.default_rng(2)
#: a BatchNormalization's scale, bias, mean and variance, one per channel
STATS = (_floats("s", _draw.uniform(0.5, 1.5, 4)), _floats("b", _draw.standard_normal(4)),
         _floats("m", _draw.standard_normal(4)), _floats("v", _draw.uniform(0.5, 1.5, 4)))  # fmt: skip
_node = helper.make_node


def _batch_norm(**attrs):
    return _node("BatchNormalization", ["c", "s", "b", "m", "v"], ["y"], **attrs)


def _split_swapped(*inputs: str, **attrs) -> list:
    """The channels split in two and joined the other way round."""
    return [_node("Split", ["c", *inputs], ["a", "z"], axis=1, **attrs), _node("Concat", ["z", "a"], ["y"], axis=1)]


def _layer_norm_parts(opset: int) -> list:
    """LayerNorm over the channels written out in primitive ops between two Transposes, as
    exporters write it below opset 17; the ReduceMeans' axes an attribute before 18, an input from it."""

    def mean(x: str, out: str):
        if opset < 18:
            return _node("ReduceMean", [x], [out], axes=[-1])
        return _node("ReduceMean", [x, "last"], [out])

    return [_node("Transpose", ["c"], ["t"], perm=[0, 2, 3, 1]), mean("t", "mu"), _node("Sub", ["t", "mu"], ["d"]),
            _node("Mul", ["d", "d"], ["sq"]), mean("sq", "var"), _node("Add", ["var", "eps"], ["ve"]),
            _node("Sqrt", ["ve"], ["sd"]), _node("Div", ["d", "sd"], ["n"]), _node("Mul", ["n", "lw"], ["nw"]),
            _node("Add", ["nw", "lb"], ["nb"]), _node("Transpose", ["nb"], ["y"], perm=[0, 3, 1, 2])]  # fmt: skip


_LAYER_NORM = (_ints("last", [-1]), _floats("eps", 1e-5), _floats("lw", _draw.uniform(0.5, 1.5, 4)),
               _floats("lb", _draw.standard_normal(4)))  # fmt: skip


def _flattened_by(*steps) -> list:
    """A Reshape of the map to (batch, -1) whose batch is computed from its Shape by ``steps``
    (nodes from ``sh`` to ``n``, the batch as a 1-D tensor), as exporters write it."""
    return [_node("Shape", ["c"], ["sh"]), *steps, _node("Concat", ["n", "minus"], ["t"], axis=0),
            _node("Reshape", ["c", "t"], ["y"])]  # fmt: skip


_MINUS = _ints("minus", [-1])
_POOLED = [_node("GlobalAveragePool", ["c"], ["p"]), _node("Flatten", ["p"], ["q"])]
_GEMM = (_floats("gw", _draw.standard_normal((3, 4))),)


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
    ("slice-negative-axis-11", _node("Slice", ["c", "s", "e", "a"], ["y"]), 11, [1, 2, 6, 6],
     (_ints("s", [1]), _ints("e", [3]), _ints("a", [-3]))),
    ("clip-attributes-7", _node("Clip", ["c"], ["y"], min=0.0, max=6.0), 7, SHAPE, ()),
    ("clip-max-only-7", _node("Clip", ["c"], ["y"], max=6.0), 7, SHAPE, ()),
    ("clip-bounds-7", _node("Clip", ["c"], ["y"], min=-0.5, max=0.5), 7, SHAPE, ()),
    ("clip-inputs-11", _node("Clip", ["c", "lo", "hi"], ["y"]), 11, SHAPE, (_floats("lo", 0), _floats("hi", 6))),
    ("clip-constant-value-float-12", [_node("Constant", [], ["lo"], value_float=0.0),
     _node("Constant", [], ["hi"], value_float=6.0), _node("Clip", ["c", "lo", "hi"], ["y"])], 12, SHAPE, ()),
    ("batchnorm-spatial-7", _batch_norm(spatial=1), 7, SHAPE, STATS),
    ("batchnorm-9", _batch_norm(), 9, SHAPE, STATS),
    ("batchnorm-inference-15", _batch_norm(training_mode=0), 15, SHAPE, STATS),
    ("dropout-ratio-7", _node("Dropout", ["c"], ["y"], ratio=0.5), 7, SHAPE, ()),
    ("dropout-unread-mask-10", _node("Dropout", ["c"], ["y", "mask"], ratio=0.5), 10, SHAPE, ()),
    ("dropout-inference-12", _node("Dropout", ["c", "r", "t"], ["y"]), 12, SHAPE,
     (_floats("r", 0.5), numpy_helper.from_array(np.array(False), "t"))),
    ("split-equal-7", _split_swapped(), 7, SHAPE, ()),
    ("split-attribute-11", _split_swapped(split=[1, 3]), 11, SHAPE, ()),
    ("split-equal-13", _split_swapped(), 13, SHAPE, ()),
    ("split-input-13", _split_swapped("sizes"), 13, SHAPE, (_ints("sizes", [3, 1]),)),
    ("split-num-outputs-18", _split_swapped(num_outputs=2), 18, SHAPE, ()),
    ("unsqueeze-attribute-11", _flattened_by(_node("Gather", ["sh", "zero"], ["g"], axis=0),
     _node("Unsqueeze", ["g"], ["n"], axes=[0])), 11, [1, 144], (_MINUS, _ints("zero", 0))),
    ("unsqueeze-input-13", _flattened_by(_node("Gather", ["sh", "zero"], ["g"], axis=0),
     _node("Unsqueeze", ["g", "zero1"], ["n"])), 13, [1, 144], (_MINUS, _ints("zero", 0), _ints("zero1", [0]))),
    ("slice-attributes-folded-9", _flattened_by(_node("Slice", ["sh"], ["n"], starts=[0], ends=[1])), 9,
     [1, 144], (_MINUS,)),
    ("squeeze-all-11", _flattened_by(_node("Slice", ["sh", "zero1", "one"], ["d"]), _node("Squeeze", ["d"], ["g"]),
     _node("Unsqueeze", ["g"], ["n"], axes=[0])), 11, [1, 144], (_MINUS, _ints("zero1", [0]), _ints("one", [1]))),
    ("div-toward-zero-7", [_node("Div", ["three", "two"], ["half"]), _node("Concat", ["one", "half"], ["t"], axis=0),
     _node("Reshape", ["c", "t"], ["y"])], 7, [1, 144], (_ints("three", [-3]), _ints("two", [2]), _ints("one", [1]))),
    ("reshape-zero-folded-11", _flattened_by(_node("Unsqueeze", ["sh"], ["row"], axes=[0]),
     _node("Reshape", ["row", "keep"], ["row2"]), _node("Squeeze", ["row2"], ["s1"], axes=[0]),
     _node("Slice", ["s1", "zero1", "one"], ["n"])), 11, [1, 144],
     (_MINUS, _ints("keep", [0, -1]), _ints("zero1", [0]), _ints("one", [1]))),
    ("reshape-zero-copies-7", _node("Reshape", ["c", "to"], ["y"]), 7, [1, 144], (_ints("to", [0, -1]),)),
    ("flatten-9", _node("Flatten", ["c"], ["y"]), 9, [1, 144], ()),
    ("flatten-negative-axis-11", _node("Flatten", ["c"], ["y"], axis=-3), 11, [1, 144], ()),
    ("gemm-bias-7", [*_POOLED, _node("Gemm", ["q", "gw", "gb"], ["y"], transB=1)], 7, [1, 3],
     (*_GEMM, _floats("gb", _draw.standard_normal(3)))),
    ("gemm-bias-row-7", [*_POOLED, _node("Gemm", ["q", "gw", "gb"], ["y"], transB=1)], 7, [1, 3],
     (*_GEMM, _floats("gb", _draw.standard_normal((1, 3))))),
    ("reducemean-attribute-13", _node("ReduceMean", ["c"], ["y"], axes=[2, 3]), 13, [1, 4, 1, 1], ()),
    ("reducemean-input-18", _node("ReduceMean", ["c", "ax"], ["y"]), 18, [1, 4, 1, 1], (_ints("ax", [-2, -1]),)),
    ("maxpool-8", _node("MaxPool", ["c"], ["y"], kernel_shape=[3, 3], strides=[2, 2]), 8, [1, 4, 2, 2], ()),
    ("maxpool-ceil-10", _node("MaxPool", ["c"], ["y"], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1), 10,
     [1, 4, 3, 3], ()),
    ("avgpool-count-pad-7", _node("AveragePool", ["c"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
     count_include_pad=1), 7, SHAPE, ()),
    ("avgpool-ceil-10", _node("AveragePool", ["c"], ["y"], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1), 10,
     [1, 4, 3, 3], ()),
    ("avgpool-19", _node("AveragePool", ["c"], ["y"], kernel_shape=[2, 2], strides=[2, 2]), 19, [1, 4, 3, 3], ()),
    ("resize-11", _node("Resize", ["c", "roi", "sc"], ["y"], mode="nearest", nearest_mode="floor",
     coordinate_transformation_mode="asymmetric"), 11, [1, 4, 12, 12],
     (_floats("roi", []), _floats("sc", [1, 1, 2, 2]))),
    ("hardsigmoid-7", _node("HardSigmoid", ["c"], ["y"], alpha=1 / 6), 7, SHAPE, ()),
    ("hardswish-14", _node("HardSwish", ["c"], ["y"]), 14, SHAPE, ()),
    ("gelu-tanh-20", _node("Gelu", ["c"], ["y"], approximate="tanh"), 20, SHAPE, ()),
    ("lrn-7", _node("LRN", ["c"], ["y"], size=3), 7, SHAPE, ()),
    ("silu-7", [_node("Sigmoid", ["c"], ["g"]), _node("Mul", ["c", "g"], ["y"])], 7, SHAPE, ()),
    ("identity-7", _node("Identity", ["c"], ["y"]), 7, SHAPE, ()),
    ("relu-tanh-7", [_node("Relu", ["c"], ["r"]), _node("Tanh", ["r"], ["y"])], 7, SHAPE, ()),
    ("sigmoid-7", _node("Sigmoid", ["c"], ["y"]), 7, SHAPE, ()),
    ("add-7", [_node("Relu", ["c"], ["r"]), _node("Add", ["c", "r"], ["y"])], 7, SHAPE, ()),
    ("concat-7", _node("Concat", ["c", "c"], ["y"], axis=1), 7, [1, 8, 6, 6], ()),
    ("concat-negative-axis-11", _node("Concat", ["c", "c"], ["y"], axis=-3), 11, [1, 8, 6, 6], ()),
    ("transpose-7", _node("Transpose", ["c"], ["y"], perm=[0, 1, 3, 2]), 7, SHAPE, ()),
    ("global-average-pool-7", _node("GlobalAveragePool", ["c"], ["y"]), 7, [1, 4, 1, 1], ()),
    ("matmul-9", _node("MatMul", ["c", "mw"], ["y"]), 9, [1, 4, 6, 3], (_floats("mw", _draw.standard_normal((6, 3))),)),
    ("gelu-erf-9", [_node("Div", ["c", "root2"], ["d"]), _node("Erf", ["d"], ["e"]),
     _node("Add", ["e", "one_f"], ["a"]), _node("Mul", ["c", "a"], ["m"]), _node("Mul", ["m", "half"], ["y"])], 9,
     SHAPE, (_floats("root2", 2**0.5), _floats("one_f", 1.0), _floats("half", 0.5))),
    ("layernorm-parts-13", _layer_norm_parts(13), 13, SHAPE, _LAYER_NORM),
    ("layernorm-parts-18", _layer_norm_parts(18), 18, SHAPE, _LAYER_NORM),
    ("layernorm-17", [_node("Transpose", ["c"], ["t"], perm=[0, 2, 3, 1]), _node("LayerNormalization",
     ["t", "lw", "lb"], ["n"]), _node("Transpose", ["n"], ["y"], perm=[0, 3, 1, 2])], 17, SHAPE, _LAYER_NORM[2:]),
    ("gather-negative-11", _node("Gather", ["c", "i"], ["y"], axis=1), 11, [1, 6, 6], (_ints("i", -1),)),
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


#: (label, nodes, opset, output shape, initializers, the error): files of ops that read otherwise at
#: their opset and that no spec op computes, each refused naming the node (or, for an op the
#: opset lacks, by ONNX's checker)
REFUSED = [
    ("clip-equal-bounds-7", _node("Clip", ["c"], ["y"], min=6.0, max=6.0), 7, SHAPE, (),
     r"graph.node\[1\] '' \(Clip\): error: a Clip to \[6.0, 6.0\]"),
    ("batchnorm-spatial-0-7", _node("BatchNormalization", ["c", "s3", "b3", "m3", "v3"], ["y"], spatial=0), 7, SHAPE,
     tuple(_floats(n, _draw.uniform(0.5, 1.5, (4, 6, 6))) for n in ("s3", "b3", "m3", "v3")),
     r"graph.node\[1\] '' \(BatchNormalization\): error: a BatchNormalization of opset 7 with spatial 0"),
    ("batchnorm-training-14", _node("BatchNormalization", ["c", "s", "b", "m", "v"], ["y", "rm", "rv"],
     training_mode=1), 14, SHAPE, STATS, r"a BatchNormalization of training_mode 1: it is in training mode"),
    ("batchnorm-training-outputs-9", _node("BatchNormalization", ["c", "s", "b", "m", "v"],
     ["y", "mean", "var", "saved_mean", "saved_var"]), 9, SHAPE, STATS,
     r"\(BatchNormalization\): error: a BatchNormalization of opset 9 with the outputs \['y', 'mean', 'var', "
     r"'saved_mean', 'saved_var'\]: it is in training mode"),
    ("dropout-training-12", _node("Dropout", ["c", "r", "t"], ["y"]), 12, SHAPE,
     (_floats("r", 0.5), numpy_helper.from_array(np.array(True), "t")),
     r"graph.node\[1\] '' \(Dropout\): error: a Dropout whose training_mode is \[True\]"),
    ("dropout-mask-read-10", [_node("Dropout", ["c"], ["d", "mask"], ratio=0.5), _node("Cast", ["mask"], ["f"], to=1),
     _node("Add", ["d", "f"], ["y"])], 10, SHAPE, (), r"a Dropout whose mask is read"),
    ("resize-keep-aspect-18", _node("Resize", ["c", "", "", "sz"], ["y"], mode="nearest",
     coordinate_transformation_mode="asymmetric", nearest_mode="floor", keep_aspect_ratio_policy="not_larger"), 18,
     [1, 4, None, None], (_ints("sz", [1, 4, 12, 24]),), r"a Resize with keep_aspect_ratio_policy not_larger"),
    ("gemm-bias-scalar-7", [*_POOLED, _node("Gemm", ["q", "gw", "gb"], ["y"], transB=1)], 7, [1, 3],
     (*_GEMM, _floats("gb", [0.5])), r"\(Gemm\): error: a Gemm bias of shape \[1\]: one value per output"),
    ("maxpool-dilations-10", _node("MaxPool", ["c"], ["y"], kernel_shape=[2, 2], dilations=[2, 2]), 10, [1, 4, 4, 4],
     (), r"\(MaxPool\): error: dilation: the spec's pools have none"),
    ("avgpool-dilations-19", _node("AveragePool", ["c"], ["y"], kernel_shape=[2, 2], dilations=[2, 2]), 19,
     [1, 4, 4, 4], (), r"\(AveragePool\): error: dilation: the spec's pools have none"),
    ("resize-tf-half-pixel-11", _node("Resize", ["c", "roi", "sc"], ["y"], mode="nearest",
     coordinate_transformation_mode="tf_half_pixel_for_nn"), 11, [1, 4, 12, 12],
     (_floats("roi", []), _floats("sc", [1, 1, 2, 2])),
     r"a Resize in mode nearest with tf_half_pixel_for_nn coordinates rounded round_prefer_floor"),
    ("resize-half-pixel-symmetric-19", _node("Resize", ["c", "", "sc"], ["y"], mode="linear",
     coordinate_transformation_mode="half_pixel_symmetric"), 19, [1, 4, 9, 9], (_floats("sc", [1, 1, 1.5, 1.5]),),
     r"a Resize in mode linear with half_pixel_symmetric coordinates: the spec's interpolate"),
    ("gelu-17", _node("Gelu", ["c"], ["y"]), 17, SHAPE, (), "No Op registered for Gelu with domain_version of 17"),
    ("hardswish-13", _node("HardSwish", ["c"], ["y"]), 13, SHAPE, (),
     "No Op registered for HardSwish with domain_version of 13"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("label", "last", "opset", "out_shape", "initializers", "said"), REFUSED, ids=[r[0] for r in REFUSED]
)
def test_ops_that_read_otherwise_at_their_opset_are_refused(label, last, opset, out_shape, initializers, said):
    proto = _file(last, opset, out_shape, initializers=initializers)
    with pytest.raises(ImportFailure, match=said):
        import_model(proto, weights=True)


def test_what_the_refused_dropout_and_batch_norm_compute_is_not_their_input_normalised():
    """The reference for two refusals: ONNX Runtime drops values at inference where a Dropout's
    training_mode is true, and normalises by the batch's statistics where a BatchNormalization's
    is or (before opset 14) where it makes its statistics (imported as inference ops, they were
    silently wrong by 0.5 and 2.0 of the output)."""
    x = np.random.default_rng(1).standard_normal(SHAPE).astype(np.float32)
    rows = {r[0]: r for r in REFUSED}
    _, node, opset, shape, initializers, _ = rows["dropout-training-12"]
    dropped = run_ort(_file(node, opset, shape, initializers=initializers), x)
    conv = run_ort(_file(_node("Identity", ["c"], ["y"]), 12, SHAPE), x)
    assert np.count_nonzero(dropped == 0) > 0.3 * dropped.size
    assert not np.allclose(dropped, conv)
    inference = run_ort(_file(_batch_norm(), 14, SHAPE, initializers=STATS), x)
    for label in ("batchnorm-training-14", "batchnorm-training-outputs-9"):
        _, node, opset, shape, initializers, _ = rows[label]
        normalised = run_ort(_file(node, opset, shape, initializers=initializers), x)
        assert np.abs(normalised - inference).max() > 0.5 * np.abs(inference).max()


@pytest.fixture(scope="module")
def attention_at():
    """torch.onnx.export's file of a small self-attention over a conv's tokens, by opset."""
    import io

    import torch

    torch.manual_seed(0)
    model = _randomised(_Tokens()).eval()
    files = {}
    for opset in (11, 13):
        buf = io.BytesIO()
        with warnings.catch_warnings():  # the TorchScript exporter's notice of its deprecation,
            warnings.simplefilter("ignore")  # and the tracer's notes on iterating a tensor
            torch.onnx.export(model, (torch.randn(1, 3, 16, 16),), buf, dynamo=False, opset_version=opset)
        files[opset] = onnx.load_from_string(buf.getvalue())
    return files


@pytest.mark.parametrize("opset", [11, 13])
def test_an_attention_exported_below_opset_14_is_read(attention_at, opset):
    """Below opset 14 ONNX's shape inference leaves a Reshape to a computed shape without one (its
    older versions take no propagated values), which the reader took for a scalar's shape, hiding
    the tokens' shape from the attention finder (refused: "its moves of data ... do not join");
    such a shape is unknown and inferred again node by node with the folded constants. The
    queries, keys and values are a Split and Squeezes of attributes at opset 11."""
    proto = attention_at[opset]
    assert any(n.op_type == "Squeeze" and n.attribute for n in proto.graph.node) == (opset < 13)
    result = import_model(proto, weights=True)
    assert _ops(result, "attention") == {"attn": {"heads": 2, "bias": True, "dropout": 0.0}}
    assert agreement(proto, result) < 1e-5


def test_an_attention_softmax_without_its_axis_is_over_axis_1_before_opset_13(attention_at):
    """Its ``axis`` left out: 1 before opset 13, over the axes from 1 on taken as one (the heads,
    the queries and the keys), which no attention computes: an error naming it. From opset 13 the
    last axis, the attention's."""
    old = type(attention_at[11])()
    old.CopyFrom(attention_at[11])
    softmax = next(n for n in old.graph.node if n.op_type == "Softmax")
    del softmax.attribute[:]
    with pytest.raises(ImportFailure, match=r"'/attn/Softmax' \(Softmax\): error: a Softmax over axis 1: attention's"):
        import_model(old)
    new = type(attention_at[13])()
    new.CopyFrom(attention_at[13])
    del next(n for n in new.graph.node if n.op_type == "Softmax").attribute[:]
    assert agreement(new, import_model(new, weights=True)) < 1e-5
