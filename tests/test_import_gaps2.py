"""``nasdsl import`` of forms that were refused, each built here by hand and run against its source.

* PyTorch's functional layers given a module's tensors as their weights (``F.conv1d/2d/3d``,
  ``F.linear``, ``F.batch_norm`` at inference with the module's running statistics,
  ``F.layer_norm``): each is the layer of the module holding the tensors, its ``state_dict`` keys
  the spec's, run against the module (what ``--check`` runs); what a spec cannot hold is refused
  at the forward's line.
* ``nn.Conv1d/2d/3d`` with ``padding_mode`` reflect, replicate or circular: a ``pad`` in that mode
  before the convolution, which keeps the module's name (its ``state_dict`` keys); torch.onnx.export's
  ``Pad`` and ``Conv`` of one read back the same way.
* ONNX's ``DepthToSpace`` in both orders and ``SpaceToDepth``, run against ONNX Runtime at two
  opsets, and the channel orders pinned from the standard's definition.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper
from onnx_runs import agreement, run_ort

from nasdsl.backends.verify import verify_import
from nasdsl.importer import import_model

HERE = __file__


def checked(source, shape=None):
    """The import of ``source`` with its tensors, run against the source (the module in eval,
    or ONNX Runtime's run of the file): what ``--check`` runs."""
    result = import_model(source, input_shape=shape, weights=True)
    verification = verify_import(result.compiled.graph, result.weights, result.reference or source)
    assert verification.ok and max(c.max_rel for c in verification.checks) <= 1e-5, verification
    return result


def model_of(result) -> dict:
    return yaml.safe_load(result.text)["model"]


# -- ONNX: DepthToSpace and SpaceToDepth -------------------------------------------------------


def _one_node(op: str, shape: list[int], opset: int, **attrs) -> onnx.ModelProto:
    node = helper.make_node(op, ["x"], ["y"], name="move", **attrs)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=7)


def test_the_channel_orders_are_the_standard_s():
    """Transcribed from the ONNX operator docs (DepthToSpace, SpaceToDepth): in DCR order input
    channel ``(i * r + j) * C + c`` fills position ``(i, j)`` of each block of output channel ``c``;
    in CRD order, channel ``c * r * r + i * r + j``; SpaceToDepth is DCR's inverse. On a map
    whose values are their own channel numbers, ONNX Runtime agrees, so the imports below are
    checked against these orders."""
    x = np.broadcast_to(np.arange(8, dtype=np.float32)[None, :, None, None], (1, 8, 1, 1)).copy()
    dcr = run_ort(_one_node("DepthToSpace", [1, 8, 1, 1], 13, blocksize=2), x)
    crd = run_ort(_one_node("DepthToSpace", [1, 8, 1, 1], 13, blocksize=2, mode="CRD"), x)
    assert dcr[0].tolist() == [[[0, 2], [4, 6]], [[1, 3], [5, 7]]]
    assert crd[0].tolist() == [[[0, 1], [2, 3]], [[4, 5], [6, 7]]]
    position = np.arange(2 * 2 * 2, dtype=np.float32).reshape(1, 2, 2, 2)  # channel c holds 4c + 2i + j
    down = run_ort(_one_node("SpaceToDepth", [1, 2, 2, 2], 13, blocksize=2), position)
    assert down[0, :, 0, 0].tolist() == [0, 4, 1, 5, 2, 6, 3, 7]


#: (op, input shape, attributes) -> the spec's reading
MOVES = [
    ("DepthToSpace", [1, 8, 3, 4], {"blocksize": 2}, ["reshape", "permute", "reshape"]),
    ("DepthToSpace", [1, 18, 2, 3], {"blocksize": 3, "mode": "DCR"}, ["reshape", "permute", "reshape"]),
    ("DepthToSpace", [1, 8, 3, 4], {"blocksize": 2, "mode": "CRD"}, ["pixel_shuffle"]),
    ("SpaceToDepth", [1, 3, 4, 6], {"blocksize": 2}, ["reshape", "permute", "reshape"]),
    ("SpaceToDepth", [1, 2, 6, 3], {"blocksize": 3}, ["reshape", "permute", "reshape"]),
]


@pytest.mark.parametrize("opset", [11, 13])
@pytest.mark.parametrize(("op", "shape", "attrs", "ops"), MOVES, ids=[f"{m[0]}-{m[2]}" for m in MOVES])
def test_depth_and_space_moves_compute_what_onnx_runtime_does(op, shape, attrs, ops, opset):
    proto = _one_node(op, shape, opset, **attrs)
    result = checked(proto)  # the generated PyTorch model against ONNX Runtime
    layers = model_of(result)
    assert [v["op"] for v in layers.values()] == ops, layers
    assert agreement(proto, result) <= 1e-6  # the spec's own ONNX export against the file
