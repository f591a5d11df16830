"""Ops that only the compiler makes: an ensemble's members and their combination (``docs/ir.md``).

A ``member`` node calls a compiled model graph, in the manner of ``torch.fx``'s
``call_module``: its attribute ``member`` holds the member's record
(:class:`nasdsl.ensemble_ir.Member`: name, graph, spec file, overrides, weights
file, share of the average), its output is that graph's main output, and its
parameters are the member graph's, under the node's name
(``googlenet1.inception4a.branch2.1.conv.weight``). ``average`` combines the
members in order: ``of`` (``probabilities`` or ``logits``), ``weights`` (one
share per member, summing to 1) and ``softmax`` (per member: whether a
backend applies a softmax to its output first). No spec writes either op.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from nasdsl import ir
from nasdsl.errors import ShapeError
from nasdsl.ir.types import TensorType
from nasdsl.ops.core import OPS, Attr, OpDef, Weight, register


def _graph(a: Mapping[str, object]):
    return a["member"].graph


def _member_infer(types: Sequence[TensorType], a: Mapping[str, object]) -> TensorType:
    g = _graph(a)
    info = ir.info(g)
    expected = ir.node(g, info.input).type
    if types[0].shape != expected.shape:
        raise ShapeError(f"expected the member's input shape {expected.shape}, got {types[0].shape}")
    return ir.node(g, info.outputs[0].node).type


def _member_weights(types: Sequence[TensorType], a: Mapping[str, object]) -> tuple[Weight, ...]:
    """Every parameter and buffer of the member graph, named below the member node."""
    g = _graph(a)
    out = []
    for name in ir.order(g):
        data = ir.node(g, name)
        if data.op not in OPS:
            continue
        for w in OPS[data.op].weights(ir.input_types(g, name), data.attrs):
            out.append(Weight(f"{name}.{w.name}" if w.name else name, w.shape, w.kind, w.init, w.dtype))
    return tuple(out)


def _member_macs(types: Sequence[TensorType], a: Mapping[str, object], out: TensorType) -> int:
    g = _graph(a)
    return sum(
        OPS[d.op].macs(ir.input_types(g, n), d.attrs, d.type)
        for n, d in ir.nodes(g)
        if d.op in OPS and d.phase != "train"
    )


def _average_infer(types: Sequence[TensorType], a: Mapping[str, object]) -> TensorType:
    if any(t.shape != types[0].shape for t in types) or len(a["weights"]) != len(types):
        raise ShapeError("expected members of one output shape, one weight each")
    return types[0]


def _record(v: object) -> object:
    return v


register(
    OpDef(
        "member",
        "an ensemble's member: runs the member's compiled graph and gives its main output",
        (Attr("member", _record, role="flag"),),
        _member_infer,
        _member_weights,
        _member_macs,
        spec=False,
        subgraph=_graph,
        lead="other",
        spatial="fixed",
    ),
    OpDef(
        "average",
        "an ensemble's combination: the (weighted) mean of its members' probabilities or logits",
        (
            Attr("of", _record, role="flag"),
            Attr("weights", _record, role="rate"),
            Attr("softmax", _record, role="flag"),
        ),
        _average_infer,
        min_inputs=1,
        max_inputs=1 << 10,
        spec=False,
    ),
)
