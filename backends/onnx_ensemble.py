"""ONNX backend for ensemble graphs (``nasdsl/ensemble_ir.py``): one ONNX graph.

Each member's graph is exported by the ONNX backend itself (its inference
graph, its part of the weights) and laid into one graph under the member's
name: the member's input becomes the ensemble's input, and every other name
gets the member's prefix (a tensor ``inception4a.branch2.0.conv`` becomes
``googlenet1.inception4a.branch2.0.conv``, a parameter its ensemble state_dict
key ``googlenet1.conv1.conv.weight``, a node ``googlenet1/inception4a/...``).
The ``average`` node becomes a ``Softmax`` (axis 1) per member that gives
logits when probabilities are averaged, then ``Mean``, or ``Mul`` by each
member's weight and ``Sum`` for a weighted average. Same graph and weights,
same bytes.
"""

from __future__ import annotations

from collections.abc import Mapping

import networkx as nx
import numpy as np
import onnx
from onnx import helper

from nasdsl import ir
from nasdsl.ensemble_ir import members, split_state_dict, with_member_graphs
from nasdsl.errors import CodegenError
from nasdsl.weights import check_memory, check_weights, initial_weights


def export_graph(g: nx.DiGraph, *, with_aux: bool = False, verify: bool | str | None = None, single) -> nx.DiGraph:
    """The ensemble with each member's exported graph (``single``: the module
    :mod:`nasdsl.backends.onnx`, which registers these functions as the lowering of an ensemble's
    ``member`` and ``average`` ops, and whose ``export_graph`` exports each member)."""
    return with_member_graphs(g, [single.export_graph(m.graph, with_aux=with_aux, verify=verify) for m in members(g)])


def emit(
    g: nx.DiGraph,
    opset: int,
    state_dict: Mapping[str, object] | None,
    with_aux: bool,
    batch: int | str,
    deferred: list[tuple[str, np.ndarray]] | None,
    max_memory: int | None,
    *,
    single,
) -> tuple[onnx.ModelProto, list[tuple[str, np.ndarray]] | None]:
    """The ONNX model of ensemble ``g`` (the arguments are ``onnx._emit``'s; ``single``: that module,
    see :func:`export_graph`)."""
    if with_aux:
        raise CodegenError(f"{ir.info(g).name} is an ensemble: it has no training-only outputs to keep (--with-aux)")
    for node, data in ir.nodes(g):
        if data.op not in ("input", "member", "average"):
            raise CodegenError(
                f"the ONNX backend cannot lower op '{data.op}' in an ensemble (node {node})",
                location=data.loc,
                path=data.keypath,
            )
    check_memory(g, 3, max_memory, "exporting ONNX")
    weights = initial_weights(g) if state_dict is None else check_weights(g, export_graph(g, single=single), state_dict)
    parts, _ = split_state_dict(g, weights)
    inp = ir.info(g).input
    output = ir.info(g).outputs[0]
    model = onnx.ModelProto()
    graph = model.graph
    graph.name = ir.info(g).name
    results: list[str] = []
    first: onnx.ModelProto | None = None
    for m, part in zip(members(g), parts, strict=True):
        own: list[tuple[str, np.ndarray]] | None = [] if deferred is not None else None
        sub, _ = single._emit(m.graph, opset, part, False, batch, own, None)
        first = first or sub
        rename = _renamer(sub.graph, m.name, inp)
        for node in sub.graph.node:
            copy = graph.node.add()
            copy.CopyFrom(node)
            copy.name = f"{m.name}/{node.name}"
            copy.input[:] = [rename(x) for x in node.input]
            copy.output[:] = [rename(x) for x in node.output]
        for tensor in sub.graph.initializer:
            copy = graph.initializer.add()
            copy.CopyFrom(tensor)
            copy.name = rename(tensor.name)
        if own is not None:
            deferred.extend((rename(name), array) for name, array in own)
        for info in [*sub.graph.value_info, *sub.graph.output]:
            copy = graph.value_info.add()
            copy.CopyFrom(info)
            copy.name = rename(info.name)
        results.append(rename(sub.graph.output[0].name))
    out_type = first.graph.output[0].type
    average = next(n for n, d in ir.nodes(g) if d.op == "average")
    attrs = ir.node(g, average).attrs
    terms = []
    for m, result, soft, weight in zip(members(g), results, attrs["softmax"], attrs["weights"], strict=True):
        if soft:
            probs = f"{average}.{m.name}.softmax"
            graph.node.append(
                helper.make_node("Softmax", [result], [probs], name=f"{average}/{m.name}/Softmax", axis=1)
            )
            _info(graph.value_info.add(), probs, out_type)
            result = probs
        terms.append((result, weight, m.name))
    if max(w for _, w, _ in terms) - min(w for _, w, _ in terms) <= 1e-12:
        graph.node.append(helper.make_node("Mean", [t for t, _, _ in terms], [output.name], name=average))
    else:
        scaled = []
        for term, weight, name in terms:
            const = f"{average}.weight.{name}"
            graph.initializer.append(helper.make_tensor(const, onnx.TensorProto.FLOAT, [], [weight]))
            out = f"{average}.{name}.weighted"
            graph.node.append(helper.make_node("Mul", [term, const], [out], name=f"{average}/{name}/Mul"))
            _info(graph.value_info.add(), out, out_type)
            scaled.append(out)
        graph.node.append(helper.make_node("Sum", scaled, [output.name], name=average))
    graph.input.add().CopyFrom(first.graph.input[0])
    graph.input[0].name = inp
    _info(graph.output.add(), output.name, out_type)
    single.describe_model(model, g, opset, {"nasdsl.ensemble.members": ",".join(m.name for m in members(g))})
    return model, deferred


def _renamer(graph: onnx.GraphProto, prefix: str, inp: str):
    """Names of a member's graph as the ensemble writes them: its input is the ensemble's."""
    own_input = graph.input[0].name

    def rename(name: str) -> str:
        if name == "":
            return name  # an omitted optional input
        return inp if name == own_input else f"{prefix}.{name}"

    return rename


def _info(info: onnx.ValueInfoProto, name: str, like: onnx.TypeProto) -> None:
    info.name = name
    info.type.CopyFrom(like)


__all__ = ["emit", "export_graph"]
