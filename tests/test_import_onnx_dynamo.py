"""``nasdsl import`` of files written by ``torch.onnx.export``'s default exporter (``dynamo=True``),
which keeps no module names in node names and writes some layers otherwise than the TorchScript
exporter: ConvNeXt's head pools and then copies the map through an ``as_strided`` (a ``Reshape``
to ``[-1]`` and a ``Gather`` of every index in order).

The references are independent of the importer: small models built by torchvision's own
classes, their initializers named by torchvision's ``state_dict``, and ONNX Runtime running the
source file against the imported spec's export with the carried weights. One export per model,
shared by the module.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
import torch
from torch import nn
from torchvision.models.convnext import CNBlockConfig, ConvNeXt

from nasdsl import ir
from nasdsl.backends.onnx import export_onnx
from nasdsl.importer import ImportFailure, import_model

from reference_models import randomise

pytest.importorskip("onnxscript")  # torch.onnx.export's dynamo exporter needs it


def _dynamo_onnx(model: nn.Module, size: int) -> onnx.ModelProto:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (torch.randn(1, 3, size, size),), dynamo=True)
    return program.model_proto


def _ort(proto, x):
    import onnxruntime as ort

    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _agreement(proto, result) -> float:
    """The imported spec's ONNX export, with the weights the import carried, against the file."""
    back = export_onnx(result.compiled.graph, opset=17, state_dict=result.weights)
    shape = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    a, b = _ort(proto, x), _ort(back, x)
    return float(np.abs(a - b).max() / np.abs(a).max())


def _ops(result, op: str) -> dict:
    return {name: data.attrs for name, data in ir.nodes(result.compiled.graph) if data.op == op}


def _same_state(result, model: nn.Module) -> None:
    """Every tensor of torchvision's state_dict is carried, under its name; the one exception is
    ConvNeXt's ``layer_scale`` (shape ``(C, 1, 1)``), which nasdsl's ``layer_scale`` op holds as its
    ``scale`` of shape ``(C,)`` (``features.1.0.scale``)."""
    theirs = {k.replace(".layer_scale", ".scale"): v.numpy() for k, v in model.state_dict().items()}
    assert set(result.weights) == set(theirs)
    for key, value in theirs.items():
        np.testing.assert_allclose(result.weights[key].reshape(value.shape), value, rtol=1e-6, atol=1e-7, err_msg=key)


def _convnext() -> nn.Module:
    torch.manual_seed(0)
    model = ConvNeXt([CNBlockConfig(8, 16, 2), CNBlockConfig(16, None, 1)], num_classes=10)
    randomise(model)
    return model.eval()


MODELS = {"convnext": (_convnext, 32)}


@pytest.fixture(scope="module")
def exported():
    """name -> (torchvision's module, its dynamo export), made on first use."""
    made: dict = {}

    def get(name: str):
        if name not in made:
            build, size = MODELS[name]
            model = build()
            made[name] = (model, _dynamo_onnx(model, size))
        return made[name]

    return get


def test_convnext_from_dynamo_export(exported):
    model, proto = exported("convnext")
    assert "Gather" in {n.op_type for n in proto.graph.node}  # the head's as_strided copy is there
    result = import_model(proto, weights=True)
    dims = {name: attrs["dim"] for name, attrs in _ops(result, "layer_norm").items()}
    assert dims["features.0.1"] == "channels" and dims["features.1.0.block.2"] == "last"
    assert dims["classifier.0"] == "channels"
    assert len(_ops(result, "global_avg_pool")) == 1
    _same_state(result, model)
    assert _agreement(proto, result) <= 1e-5


def test_a_strided_copy_in_another_order_is_a_located_error(exported):
    """The same pair with its indices reversed is no copy: the Reshape is refused, located."""
    _, proto = exported("convnext")
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    gather = next(n for n in proto.graph.node if n.op_type == "Gather")
    index = next(i for i in proto.graph.initializer if i.name == gather.input[1])
    values = onnx.numpy_helper.to_array(index)
    index.CopyFrom(onnx.numpy_helper.from_array(values.reshape(-1)[::-1].reshape(values.shape).copy(), index.name))
    with pytest.raises(ImportFailure) as e:
        import_model(proto)
    assert str(e.value) == (
        "<onnx model>: graph.node[42] 'node_Reshape_16' (Reshape): error: a Reshape from [1, 16, 1, 1] to [16]: "
        "the spec reads a Reshape as a flatten, a channel shuffle or MaxViT's partitions"
    )
