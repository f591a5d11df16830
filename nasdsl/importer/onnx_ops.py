"""The ONNX op table: which ONNX nodes (or short runs of them) become which nasdsl ops.

:data:`PATTERNS` maps the op type of a run's first node to the handlers tried in order; a
handler gets the :class:`View` of the graph and the node and returns a :class:`Match` (the
nasdsl op or chain of ops, the tensors it reads, the value it makes, the nodes it consumes and
its weights) or None when the run is not its pattern. Runs cover what exporters write for one
PyTorch layer: GELU as ``Div, Erf, Add, Mul, Mul``, SiLU as ``Sigmoid, Mul``, a channels-first
LayerNorm as ``Transpose, LayerNormalization, Transpose``, LayerNorm below opset 17 as
``ReduceMean, Sub, Mul, ReduceMean, Add, Sqrt, Div, Mul, Add``, a channel shuffle as ``Reshape,
Transpose, Reshape``, MaxViT's partitions as ``Reshape, Transpose, Reshape`` too, a linear layer
on the last axis as ``MatMul, Add``, a class token as an ``Expand`` of a learned tensor (or,
from the dynamo exporter, that expand folded into a constant joined by a ``Concat``). An
attention layer, dozens of nodes, is read whole by :mod:`nasdsl.importer.onnx_regions` before
these run. A node no handler takes is an error naming it; adding an op of ``nasdsl/ops.py`` is one entry here.

Only the onnx package's data structures are read: no node is executed. Constant operands
(initializers, ``Constant`` nodes, and shape arithmetic on known shapes) are folded by
:mod:`nasdsl.importer.onnx_frontend` before the patterns run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from nasdsl.importer import resize
from nasdsl.importer.ops_table import Lowered, Unsupported, pair
from nasdsl.ops.more_ops import adaptive_windows
from nasdsl.ops.tensor import MAX_SIDE


@dataclass
class Match:
    lowered: Lowered | tuple[Lowered, ...]
    #: the tensors (value names) the op reads, in order
    inputs: list[str]
    #: the value it makes
    output: str
    #: the ONNX nodes it stands for (the last names it)
    nodes: list
    tensors: dict = field(default_factory=dict)
    #: the op's path where the nodes' names do not give it (a region's shared module, a
    #: parameter named by its initializer); empty: from the last node's name
    name: str = ""
    #: the output shape (batch excluded) where the op's own rule needs axes the reader does not
    #: track (a channels-last map); None: by the op's rule
    shape: tuple | None = None


class View:
    """What a handler may ask of the graph: attributes, constants (folded on demand by
    ``fold``), shapes (batch included; those of values already read are nasdsl's own),
    consumers, ``types`` (those the reader has tracked), ``outputs`` (the graph's); ``opset``: the
    file's version of the default domain, which says how a node's inputs and attributes read (a
    Resize of opset 10 has no ``roi`` or ``sizes``)."""

    def __init__(self, const: dict, shapes: dict, consumers: dict, producer: dict, fold=None, opset: int = 17) -> None:
        self.const = const
        self.opset = opset
        self.shapes = shapes
        self.consumers = consumers
        self.producer = producer
        self.fold = fold or (lambda name: None)
        #: the type (batch excluded, axes included) the spec's ops give each value read so far
        self.types: dict = {}
        #: the graph's outputs: a value the graph returns is read outside the nodes that read it
        self.outputs: set = set()

    def get(self, name: str) -> np.ndarray | None:
        """The value of ``name`` when it is a constant (folding its producers if need be)."""
        if not name:
            return None
        if name not in self.const:
            self.fold(name)
        return self.const.get(name)

    @staticmethod
    def attrs(node) -> dict:
        from onnx import helper

        return {a.name: helper.get_attribute_value(a) for a in node.attribute}

    def is_const(self, name: str) -> bool:
        return self.get(name) is not None

    def rank(self, name: str) -> int:
        return len(self.shapes.get(name, ()))

    def only_user(self, value: str, node) -> bool:
        return value not in self.outputs and [n for n in self.consumers.get(value, [])] == [node]

    def next_node(self, node, op_type: str):
        """The one consumer of ``node``'s output, when it has that op type and the output is
        no output of the graph (which a run of nodes read as one op would hide)."""
        if node.output[0] in self.outputs:
            return None
        users = self.consumers.get(node.output[0], [])
        return users[0] if len(users) == 1 and users[0].op_type == op_type else None

    def scalar(self, name: str) -> float | None:
        v = self.get(name)
        if v is None or v.size != 1:
            return None
        return float(v.reshape(()))


def _tensor_inputs(view: View, node) -> list[str]:
    return [i for i in node.input if i and not view.is_const(i)]


def _one(op: str, attrs: dict | None = None) -> Callable:
    def handler(view: View, node) -> Match:
        return Match(Lowered(op, attrs or {}), _tensor_inputs(view, node)[:1], node.output[0], [node])

    return handler


def _sym_pads(pads: list[int], what: str) -> object:
    if not pads:
        return 0
    half = len(pads) // 2
    begin, end = pads[:half], pads[half:]
    if list(begin) != list(end):
        raise Unsupported(f"{what} pads {list(pads)}: the spec pads each side of an axis alike")
    return pair(begin)


def _window_pads(view: View, node, kernel: list[int], strides: list[int], dilations: list[int]) -> list[tuple]:
    """A convolution's or a pool's (begin, end) padding of each spatial axis: its ``pads``, or
    those its ``auto_pad`` gives the input's sizes (``SAME_UPPER``: the output's side is
    ``ceil(side / stride)``, half the padding it needs before and the rest, one more, after;
    ``SAME_LOWER``: the other way round; ``VALID``: none)."""
    a = view.attrs(node)
    auto = _text(a, "auto_pad", "NOTSET")
    spatial = len(kernel)
    if auto in ("NOTSET", ""):
        pads = [int(p) for p in a.get("pads", [0] * 2 * spatial)]
        if len(pads) != 2 * spatial:
            raise Unsupported(f"{node.op_type} pads {pads}: one begin and one end for each of {spatial} axes")
        return list(zip(pads[:spatial], pads[spatial:], strict=True))
    if auto == "VALID":
        return [(0, 0)] * spatial
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        raise Unsupported(f"auto_pad {auto}: ONNX's are NOTSET, SAME_UPPER, SAME_LOWER and VALID")
    sizes = view.shapes.get(node.input[0], ())[2:]
    if len(sizes) != spatial or not all(isinstance(d, int) for d in sizes):
        raise Unsupported(f"auto_pad {auto} of an input of unknown sizes {list(sizes)}")
    out = []
    for n, k, st, d in zip(sizes, kernel, strides, dilations, strict=True):
        total = max((-(-n // st) - 1) * st + (k - 1) * d + 1 - n, 0)
        small, big = total // 2, total - total // 2
        out.append((small, big) if auto == "SAME_UPPER" else (big, small))
    return out


def _spatial(a: dict, key: str, spatial: int, default: int) -> list[int]:
    v = a.get(key)
    return [default] * spatial if v is None else [int(x) for x in v]


def _conv(view: View, node) -> Match | list[Match]:
    a = view.attrs(node)
    weight = view.get(node.input[1])
    if weight is None:
        raise Unsupported("a convolution whose weights are computed: the spec's conv2d holds its weights")
    if weight.ndim not in (3, 4, 5):
        raise Unsupported(f"a {weight.ndim - 2}-D convolution: the spec has conv1d, conv2d and conv3d")
    spatial = weight.ndim - 2
    bias = view.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    groups = int(a.get("group", 1))
    in_groups = f"in {groups} group{'s' if groups != 1 else ''}"
    _reads_features(view, node, int(weight.shape[1]) * groups, f"weight of shape {list(weight.shape)} {in_groups}")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise Unsupported(f"a Conv bias of shape {list(bias.shape)}: one value per output channel is read")
    nodes, out = [node], node.output[0]
    weight, bias, nodes, out = _folded_affine(view, weight, bias, nodes, out)
    auto = _text(a, "auto_pad", "NOTSET")
    strides = _spatial(a, "strides", spatial, 1)
    dilations = _spatial(a, "dilations", spatial, 1)
    pads = _window_pads(view, node, [int(k) for k in weight.shape[2:]], strides, dilations)
    border = None
    if auto == "SAME_UPPER" and strides == [1] * spatial:
        padding: object = "same"  # PyTorch's 'same' puts an odd padding's extra one after, as SAME_UPPER does
    elif all(b == e for b, e in pads):
        padding = _sizes([b for b, _ in pads])
    else:  # a border of its own, before a convolution without padding
        padding, border = 0, [list(p) for p in pads]
    attrs = {
        "out": int(weight.shape[0]),
        "kernel": _sizes(weight.shape[2:]),
        "stride": _sizes(strides),
        "padding": padding,
        "dilation": _sizes(dilations),
        "groups": groups,
        "bias": bias is not None,
    }
    tensors = {"weight": weight} | ({"bias": bias} if bias is not None else {})
    op = f"conv{spatial}d"
    if border is None:
        return Match(Lowered(op, attrs), [node.input[0]], out, nodes, tensors)
    padded = f"{node.output[0]}::pad"
    return [
        Match(Lowered("pad", {"pads": border}), [node.input[0]], padded, [node]),
        Match(Lowered(op, attrs), [padded], out, nodes, tensors),
    ]


def _conv_transpose(view: View, node) -> Match:
    """``ConvTranspose``, whatever gives its crops (:func:`_transposed_crops`): PyTorch's padding
    and output padding where they crop alike (ONNX's ``(begin, end)`` with ``begin >= end`` is
    padding ``begin`` with ``begin - end`` more output padding), and where the end is cropped
    more than the start, or the start more than an output padding below the stride or the
    dilation can make up, a ``slice`` of the rest along each axis after it."""
    a = view.attrs(node)
    weight = view.get(node.input[1])
    if weight is None:
        raise Unsupported("a transposed convolution whose weights are computed: the spec's holds its weights")
    if weight.ndim not in (3, 4, 5):
        raise Unsupported(f"a {weight.ndim - 2}-D ConvTranspose: the spec has conv_transpose1d, 2d and 3d")
    spatial = weight.ndim - 2
    groups = int(a.get("group", 1))
    out = int(weight.shape[1]) * groups
    _reads_features(view, node, int(weight.shape[0]), f"weight of shape {list(weight.shape)}")
    bias = view.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if bias is not None and bias.shape != (out,):
        raise Unsupported(f"a ConvTranspose bias of shape {list(bias.shape)}: one value per output channel is read")
    kernel = [int(k) for k in weight.shape[2:]]
    strides, dilations = _spatial(a, "strides", spatial, 1), _spatial(a, "dilations", spatial, 1)
    extra = _spatial(a, "output_padding", spatial, 0)
    if len(strides) != spatial or len(dilations) != spatial or len(extra) != spatial:
        raise Unsupported(
            f"ConvTranspose strides {strides}, dilations {dilations}, output_padding {extra}: expected one for each "
            f"of {spatial} spatial axes"
        )
    crops = _transposed_crops(view, node, kernel, strides, dilations, extra)
    sizes = view.shapes.get(node.input[0], ())[2:]
    padding, output_padding, slices = [], [], []
    for axis, ((begin, end), o, s, d, k) in enumerate(zip(crops, extra, strides, dilations, kernel, strict=True), 1):
        end -= o  # what is cropped of the positions before the output padding (below 0: positions added)
        top = max(s, d)  # PyTorch's output padding is below the stride or the dilation
        if 0 <= begin - end < top:  # PyTorch's: padding cropped at the start, padding - output_padding at the end
            p, q = begin, begin - end
        elif begin < end:  # the end cropped more: the rest by a slice
            p, q = begin, 0
        else:  # the start cropped more than an output padding makes up: the rest by a slice
            p, q = end + top - 1, top - 1
        if p < 0:
            raise Unsupported(
                f"ConvTranspose output_padding {extra} at strides {strides} and dilations {dilations}: PyTorch's "
                "output padding is below the stride or the dilation"
            )
        padding.append(p)
        output_padding.append(q)
        start, cut = begin - p, end - (p - q)
        if start or cut:
            if len(sizes) != len(kernel) or not isinstance(sizes[axis - 1], int):
                raise Unsupported(f"ConvTranspose pads {crops} of an input of unknown sizes {list(sizes)}")
            made = (sizes[axis - 1] - 1) * s - 2 * p + d * (k - 1) + q + 1
            attrs = {"axis": axis, "start": start} | ({"stop": made - cut} if cut else {})
            slices.append(Lowered("slice", attrs, suffix=f"crop{axis}"))
    attrs = {
        "out": out,
        "kernel": _sizes(kernel),
        "stride": _sizes(strides),
        "padding": _sizes(padding),
        "output_padding": _sizes(output_padding),
        "dilation": _sizes(dilations),
        "groups": groups,
        "bias": bias is not None,
    }
    tensors = {"weight": weight} | ({"bias": bias} if bias is not None else {})
    lowered = Lowered(f"conv_transpose{len(kernel)}d", attrs)
    return Match((lowered, *slices) if slices else lowered, [node.input[0]], node.output[0], [node], tensors)


def _transposed_crops(view: View, node, kernel, strides, dilations, extra) -> list[tuple[int, int]]:
    """The ``(begin, end)`` positions a ``ConvTranspose`` crops from each axis of its full output
    (``(size - 1) * stride + (kernel - 1) * dilation + 1 + output_padding``), as the ONNX
    standard defines them and ONNX Runtime computes them: its ``pads``; with ``output_shape``
    (which overrides the pads) or ``auto_pad`` SAME_UPPER or SAME_LOWER (an output of ``size *
    stride``), the full size less the one asked for, split in two halves, the odd one cropped at
    the end for SAME_UPPER and at the start otherwise. An output larger than the full one would
    crop a negative number of positions, which the standard leaves undefined (ONNX Runtime and
    ONNX's reference evaluator disagree): refused."""
    a = view.attrs(node)
    spatial = len(kernel)
    auto = _text(a, "auto_pad", "NOTSET")
    if auto not in ("NOTSET", "", "VALID", "SAME_UPPER", "SAME_LOWER"):
        raise Unsupported(f"auto_pad {auto}: ONNX's are NOTSET, SAME_UPPER, SAME_LOWER and VALID")
    if "output_shape" not in a and auto in ("NOTSET", "", "VALID"):
        pads = [0] * 2 * spatial if auto == "VALID" else [int(p) for p in a.get("pads", [0] * 2 * spatial)]
        if len(pads) != 2 * spatial or any(p < 0 for p in pads):
            raise Unsupported(f"ConvTranspose pads {pads}: expected a begin and an end of 0 or more for {spatial} axes")
        return list(zip(pads[:spatial], pads[spatial:], strict=True))
    sizes = view.shapes.get(node.input[0], ())[2:]
    if len(sizes) != spatial or not all(isinstance(n, int) for n in sizes):
        raise Unsupported(f"a ConvTranspose of an input of unknown sizes {list(sizes)}")
    full = [
        (n - 1) * s + (k - 1) * d + 1 + o
        for n, s, k, d, o in zip(sizes, strides, kernel, dilations, extra, strict=True)
    ]
    if "output_shape" in a:
        asked, what = [int(v) for v in a["output_shape"]], f"output_shape {[int(v) for v in a['output_shape']]}"
        if len(asked) != spatial:
            raise Unsupported(f"{what}: expected one size for each of {spatial} spatial axes (no batch, no channels)")
    else:
        asked, what = [n * s for n, s in zip(sizes, strides, strict=True)], f"auto_pad {auto}"
    if any(w > f for w, f in zip(asked, full, strict=True)):
        raise Unsupported(
            f"{what} asks for an output of {asked}, larger than the {full} the transposed convolution makes: a "
            "negative padding, which the ONNX standard leaves undefined (runtimes differ); write pads and "
            "output_padding"
        )
    totals = [f - w for f, w in zip(full, asked, strict=True)]
    if auto == "SAME_UPPER":
        return [(t // 2, t - t // 2) for t in totals]
    return [(t - t // 2, t // 2) for t in totals]


def _sizes(v) -> object:
    """A window attribute as a spec writes it: one integer when all are equal, else the list."""
    sizes = [int(x) for x in v]
    return sizes[0] if len(set(sizes)) == 1 else sizes


def _reads_features(view: View, node, wanted: int, what: str, axis: int = 1) -> None:
    """Refuse a layer whose weights take another number of channels or features (along ``axis``
    of its input) than its input has (a file ONNX Runtime fails to run, or an input shape given
    otherwise than the file's): the spec's layer takes its input's."""
    shape = view.shapes.get(node.input[0], ())
    have = shape[axis] if -len(shape) <= axis < len(shape) else None
    if isinstance(have, int) and have != wanted:
        raise Unsupported(
            f"a {node.op_type} whose {what} takes {wanted} channels or features, where its input "
            f"{list(shape)} has {have}"
        )


def per_channel(value: np.ndarray | None, channels: int, rank: int = 4) -> np.ndarray | None:
    """A constant that broadcasts over a channels-first tensor of ``rank`` axes, batch included
    (a map ``(N, C, H, W)``), as one value per channel: of shape ``(C, 1, 1)``, ``(1, C, 1, 1)``
    (as many 1s as the rank asks), or one value (ONNX broadcasts from the last axis, so a
    ``(C,)`` on a map is one value per column), as ``(C,)``; else None."""
    if value is None or value.ndim > rank:
        return None
    if value.size == 1:
        return np.full(channels, value.reshape(-1)[0], dtype=value.dtype)
    shape = (1,) * (rank - value.ndim) + tuple(value.shape)
    return value.reshape(-1) if shape == (1, channels, *(1,) * (rank - 2)) else None


def _folded_affine(view: View, weight, bias, nodes: list, out: str):
    """A convolution's output scaled and shifted per channel by constants (``Mul`` then
    ``Add``, a BatchNorm as a converter writes it without one) or shifted alone (``Add``, a
    bias kept apart), each the one reader of what it reads: folded into the convolution's
    weights and bias. A ``Mul`` with no ``Add`` after it stays a layer scale."""
    channels, rank = int(weight.shape[0]), weight.ndim
    mul = view.next_node(nodes[-1], "Mul")
    scale = per_channel(view.get(_other(mul, out)), channels, rank) if mul is not None else None
    after = view.next_node(mul, "Add") if scale is not None else view.next_node(nodes[-1], "Add")
    moved = mul.output[0] if scale is not None else out
    shift = per_channel(view.get(_other(after, moved)), channels, rank) if after is not None else None
    if shift is None:
        return weight, bias, nodes, out
    dtype = weight.dtype
    if scale is not None:
        weight = (weight * scale.reshape(-1, *(1,) * (rank - 1))).astype(dtype)
        bias = None if bias is None else bias * scale
        nodes = [*nodes, mul]
    bias = (shift if bias is None else bias + shift).astype(dtype)
    return weight, bias, [*nodes, after], after.output[0]


def _batch_norm(view: View, node) -> Match:
    a = view.attrs(node)
    if view.opset < 9 and not a.get("spatial", 1):
        raise Unsupported(
            f"a BatchNormalization of opset {view.opset} with spatial 0 (statistics per value, not per channel): "
            "the spec's batch_norm holds one per channel"
        )
    # training: from opset 14 its training_mode; before, any output but Y (the statistics it makes)
    training = a.get("training_mode", 0) if view.opset >= 14 else any(node.output[1:])
    if training:
        said = "training_mode 1" if view.opset >= 14 else f"opset {view.opset} with the outputs {list(node.output)}"
        raise Unsupported(
            f"a BatchNormalization of {said}: it is in training mode (it normalises by the batch's own "
            "statistics); the spec's batch_norm, at inference, by its running statistics"
        )
    scale, bias, mean, var = (view.get(i) for i in node.input[1:5])
    if any(t is None for t in (scale, bias, mean, var)):
        raise Unsupported("a BatchNormalization whose statistics are computed")
    shape = view.shapes.get(node.input[0], ())
    channels = shape[1] if len(shape) > 1 else None
    if any(t.shape != (channels,) for t in (scale, bias, mean, var)):
        shapes = [list(t.shape) for t in (scale, bias, mean, var)]
        raise Unsupported(f"a BatchNormalization whose statistics have the shapes {shapes}: one per channel is read")
    momentum = round(1.0 - float(a.get("momentum", 0.9)), 7)
    attrs = {"eps": float(np.float32(a.get("epsilon", 1e-5))), "momentum": momentum}
    tensors = {
        "weight": scale,
        "bias": bias,
        "running_mean": mean,
        "running_var": var,
        "num_batches_tracked": np.array(0, dtype=np.int64),
    }
    return Match(Lowered("batch_norm", attrs), [node.input[0]], node.output[0], [node], tensors)


def _pool(op: str) -> Callable:
    """MaxPool and AveragePool of a map (``max_pool``), a sequence (``max_pool1d``) or a clip
    (``max_pool3d``), by the input's rank."""

    def handler(view: View, node) -> Match:
        a = view.attrs(node)
        spatial = view.rank(node.input[0]) - 2
        if spatial not in (1, 2, 3):
            raise Unsupported(f"{node.op_type} of a {spatial}-D input: the spec's pools take 1-D to 3-D ones")
        if _spatial(a, "dilations", spatial, 1) != [1] * spatial:
            raise Unsupported("dilation: the spec's pools have none")
        if len(node.output) > 1 and node.output[1]:
            raise Unsupported("indices output")
        kernel = [int(k) for k in a["kernel_shape"]]
        strides = _spatial(a, "strides", spatial, 1)
        ceil_mode = bool(a.get("ceil_mode", 0))
        include = bool(a.get("count_include_pad", 0))
        pads = _window_pads(view, node, kernel, strides, [1] * spatial)
        if any(b != e for b, e in pads):
            ceil_mode = _ceil_for_extra(view, node, kernel, strides, pads, ceil_mode, include and op == "avg_pool")
        attrs = {
            "kernel": _sizes(kernel),
            "stride": _sizes(strides),
            "padding": _sizes([b for b, _ in pads]),
            "ceil_mode": ceil_mode,
        }
        if op == "avg_pool":
            attrs["count_include_pad"] = include
        return Match(Lowered(op if spatial == 2 else f"{op}{spatial}d", attrs), [node.input[0]], node.output[0], [node])

    return handler


def _ceil_for_extra(view: View, node, kernel, strides, pads, ceil_mode: bool, include: bool) -> bool:
    """A pool padded one more after than before on an axis (``SAME_UPPER`` of an odd padding)
    as PyTorch's: padding ``before`` on each side and ``ceil_mode``, which adds the last
    window the extra one allows and, over padding that is left out (a max, a mean of the values
    inside), computes it alike; where the output's sizes agree. Another is an error."""
    sizes = view.shapes.get(node.input[0], ())[2:]
    shown = [list(p) for p in pads]
    refuse = Unsupported(
        f"{'an' if node.op_type[0] in 'AEIOU' else 'a'} {node.op_type} padded {shown} (begin, end per axis): "
        "the spec's pools pad each side alike "
        "(one more after is read as ceil_mode where it computes the same)"
    )
    if ceil_mode or include or not all(isinstance(d, int) for d in sizes):
        raise refuse
    for n, k, st, (b, e) in zip(sizes, kernel, strides, pads, strict=True):
        theirs = (n + b + e - k) // st + 1
        ours = -(-(n + 2 * b - k) // st) + 1
        if (ours - 1) * st >= n + b:
            ours -= 1
        if e not in (b, b + 1) or theirs != ours or 2 * b > k:
            raise refuse
    return True


def _pad(view: View, node) -> Match:
    """A ``Pad`` of the axes after the batch: the spec's ``pad`` (its pads an attribute before
    opset 11, inputs from it, for the axes given from opset 18; modes reflect, edge and wrap as
    reflect, replicate and circular), or, where a constant one's
    reader is a convolution that pads nothing itself and it pads the two spatial axes with
    zeros alike on both sides, that convolution's padding."""
    a = view.attrs(node)
    mode = _text(a, "mode", "constant")
    rank = view.rank(node.input[0])
    if view.opset < 11:
        pads, value = a.get("pads"), a.get("value", 0.0)
    else:
        pads = view.get(node.input[1]) if len(node.input) > 1 and node.input[1] else None
        value = view.get(node.input[2]) if len(node.input) > 2 and node.input[2] else 0.0
        if len(node.input) > 2 and node.input[2] and value is None:
            raise Unsupported("a Pad by a value computed in the graph: the spec's pad fills a constant")
    if pads is None:
        raise Unsupported("a Pad by pads computed in the graph: the spec's sizes are constants")
    modes = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}
    if mode not in modes:
        raise Unsupported(f"a Pad in mode {mode}: ONNX's are constant, reflect, edge and wrap")
    if mode != "constant":
        value = 0.0  # a border from the input: the value input is not read
    pads = [int(p) for p in np.asarray(pads).reshape(-1)]
    axes = list(range(rank))
    if len(node.input) > 3 and node.input[3]:
        given = view.get(node.input[3])
        if given is None:
            raise Unsupported("a Pad of axes computed in the graph")
        axes = [int(x) % max(rank, 1) for x in np.asarray(given).reshape(-1)]
    if len(pads) != 2 * len(axes):
        raise Unsupported(f"a Pad of {len(pads)} pads for {len(axes)} axes")
    per_axis = dict.fromkeys(range(rank), (0, 0))
    per_axis.update(zip(axes, zip(pads[: len(axes)], pads[len(axes) :], strict=True), strict=True))
    fill = np.asarray(value, dtype=np.float64).reshape(-1)
    if fill.size != 1 or not np.isfinite(fill[0]):
        raise Unsupported(f"a Pad with the value {fill.tolist()}: the spec's pad fills one finite number")
    if any(b < 0 or e < 0 for b, e in per_axis.values()):
        raise Unsupported(f"a Pad by {pads}: a negative pad crops, which the spec's pad does not")
    if per_axis[0] != (0, 0):
        raise Unsupported(f"a Pad by {pads} of the batch axis")
    first = next((k for k in range(1, rank) if per_axis[k] != (0, 0)), None)
    if first is None:
        return Match(Lowered("identity"), [node.input[0]], node.output[0], [node])
    conv = view.next_node(node, "Conv")
    if (
        conv is not None
        and conv.input[0] == node.output[0]
        and rank == 4
        and first == 2
        and fill[0] == 0.0
        and mode == "constant"
        and all(per_axis[k][0] == per_axis[k][1] for k in (2, 3))
    ):
        try:
            found = _conv(view, conv)
        except Unsupported:  # the convolution's own error comes at it
            found = None
        if isinstance(found, Match) and found.lowered.attrs["padding"] == 0:
            attrs = {**found.lowered.attrs, "padding": pair([per_axis[2][0], per_axis[3][0]])}
            return Match(Lowered("conv2d", attrs), [node.input[0]], found.output, [node, *found.nodes], found.tensors)
    attrs = {"pads": [list(per_axis[k]) for k in range(first, rank)]} | ({"value": float(fill[0])} if fill[0] else {})
    if mode != "constant":
        attrs["mode"] = modes[mode]
    return Match(Lowered("pad", attrs), [node.input[0]], node.output[0], [node])


def _flatten(view: View, node) -> Match:
    # a negative axis (from opset 11) counts from the end
    if int(view.attrs(node).get("axis", 1)) % max(view.rank(node.input[0]), 1) != 1:
        raise Unsupported("a Flatten that does not keep the batch alone")
    return Match(Lowered("flatten"), [node.input[0]], node.output[0], [node])


def _gemm(view: View, node) -> Match:
    a = view.attrs(node)
    if a.get("transA", 0) or float(a.get("alpha", 1.0)) != 1.0 or float(a.get("beta", 1.0)) != 1.0:
        raise Unsupported("a Gemm other than x @ W.T + b")
    weight = view.get(node.input[1])
    if weight is None:
        raise Unsupported("a Gemm whose weights are computed")
    weight = weight if a.get("transB", 0) else weight.T
    _reads_features(view, node, int(weight.shape[1]), f"weight of shape {list(weight.shape)} (out, in)")
    bias = view.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if bias is not None and bias.shape == (1, weight.shape[0]):  # broadcast over the rows: one per output
        bias = bias.reshape(-1)
    if bias is not None and bias.shape != (weight.shape[0],):
        raise Unsupported(f"a Gemm bias of shape {list(bias.shape)}: one value per output is read")
    tensors = {"weight": np.ascontiguousarray(weight)} | ({"bias": bias} if bias is not None else {})
    attrs = {"out": int(weight.shape[0]), "bias": bias is not None, "dim": "features"}
    return Match(Lowered("linear", attrs), [node.input[0]], node.output[0], [node], tensors)


def _matmul(view: View, node) -> Match:
    """x @ W (+ b) with W a constant: a linear layer on the last axis."""
    weight = view.get(node.input[1])
    if weight is None or weight.ndim != 2:
        raise Unsupported("a MatMul of two computed tensors: the spec has linear layers with weights")
    _reads_features(view, node, int(weight.shape[0]), f"weight of shape {list(weight.shape)} (in, out)", axis=-1)
    nodes, out, bias = [node], node.output[0], None
    add = view.next_node(node, "Add")
    if add is not None:
        other = add.input[1] if add.input[0] == out else add.input[0]
        b = view.get(other)
        if b is not None and b.size == weight.shape[1] and b.shape[-1:] == (weight.shape[1],):
            if b.ndim <= view.rank(node.input[0]):  # a (1, out) broadcasts over the rows as an (out,)
                nodes, out, bias = [node, add], add.output[0], b.reshape(-1)
    attrs = {
        "out": int(weight.shape[1]),
        "bias": bias is not None,
        "dim": "last" if view.rank(node.input[0]) > 2 else "features",
    }
    tensors = {"weight": np.ascontiguousarray(weight.T)} | ({"bias": bias} if bias is not None else {})
    return Match(Lowered("linear", attrs), [node.input[0]], out, nodes, tensors)


def _concat(view: View, node) -> Match:
    rank = max(view.rank(node.output[0]), 1)
    axis = int(view.attrs(node).get("axis", 0)) % rank
    if axis == 0:
        raise Unsupported("a Concat along the batch axis")
    if axis != 1 and rank == 4:
        raise Unsupported(f"a Concat of maps along axis {axis}: the spec's concat joins their channels (axis 1)")
    # an image's or features' channels are the default; tokens (L, C) join along their sequence
    attrs = {} if rank in (2, 4) else {"axis": axis - 1}
    concat = Match(Lowered("concat", attrs), list(node.input), node.output[0], [node])
    learned = [i for i in node.input if view.is_const(i)]
    return [*(_joined_parameter(view, node, name) for name in learned), concat] if learned else concat


def _joined_parameter(view: View, node, name: str) -> Match:
    """A learned tensor of one sample joined to the tokens (a ViT's class token whose
    ``expand`` to a batch of one the dynamo exporter folded into a constant): the ``parameter``
    op, reading for the batch the first tensor it is joined to."""
    value = view.get(name)
    tensors = _tensor_inputs(view, node)
    if not tensors or value.ndim < 3 or value.shape[0] != 1:
        raise Unsupported(
            f"a Concat of a constant of shape {list(value.shape)}: the spec's concat joins tensors "
            "(a learned tensor of one sample, joined along an axis after the batch, is a parameter)"
        )
    lowered = Lowered("parameter", {"shape": list(value.shape[1:])})
    return Match(lowered, tensors[:1], name, [node], {"": value}, name=_initializer_path(node, name))


def _binary(op: str) -> Callable:
    def handler(view: View, node) -> Match | list[Match] | None:
        tensors = _tensor_inputs(view, node)
        if op == "mul" and len(tensors) == 1:
            return _layer_scale(view, node)
        if op == "add" and len(tensors) == 1:
            return _add_parameter(view, node, tensors[0])
        if len(tensors) != 2:
            raise Unsupported(f"{node.op_type} with a constant: the spec's {op} joins two tensors")
        return Match(Lowered(op), list(node.input), node.output[0], [node])

    return handler


def _initializer_path(node, name: str) -> str:
    """The path of a tensor a node holds, from its initializer's name, where the file is
    torch.onnx.export's (whose initializers are the state_dict's names: ``encoder.pos_embedding``)
    and the name lies in the node's module (from its name, or the dynamo exporter's metadata);
    else empty (the path comes from the node's name)."""
    import re

    from nasdsl.importer.onnx_names import NAME_SCOPES, listed, metadata, torch_scope

    if not re.fullmatch(r"[A-Za-z_]\w*(\.\w+)*", name):
        return ""
    if node.name.startswith("/"):
        scope = torch_scope(node.name)[0]
    else:
        scopes = listed(metadata(node).get(NAME_SCOPES, ""))
        if not scopes:
            return ""
        scope = ([s for s in scopes[1:-1] if s] or [""])[-1]
    return name if not scope or name.startswith(scope + ".") else ""


def _add_parameter(view: View, node, x: str) -> list[Match]:
    """x + a learned tensor of x's shape (a ViT's position embedding, added by broadcasting over
    the batch): the ``parameter`` op, then ``add``."""
    name = node.input[1] if node.input[0] == x else node.input[0]
    value = view.get(name)
    shape = tuple(view.shapes.get(x, ()))
    if value is None or value.shape != (1, *shape[1:]) or len(shape) < 3:
        raise Unsupported(
            f"Add with a constant of shape {list(np.shape(value))}: the spec's add joins two tensors "
            "(a learned tensor of the input's shape is a parameter; one value per channel, the bias of a "
            "convolution that nothing else reads)"
        )
    lowered = Lowered("parameter", {"shape": list(shape[1:])})
    named = _initializer_path(node, name)
    inputs = [x, name] if node.input[0] == x else [name, x]
    return [
        Match(lowered, [x], name, [node], {"": value}, name=named),
        Match(Lowered("add"), inputs, node.output[0], [node]),
    ]


def _expand(view: View, node) -> Match:
    """A learned tensor expanded to the batch (a class token, ``class_token.expand(n, -1, -1)``):
    the ``parameter`` op, reading for the batch the tensor its reader joins it to."""
    value = view.get(node.input[0])
    target = view.get(node.input[1])
    shape = tuple(view.shapes.get(node.output[0], ()))
    if value is not None and target is not None:
        shape = tuple(np.broadcast_shapes(value.shape, tuple(int(d) for d in target.reshape(-1))))
    readers = view.consumers.get(node.output[0], [])
    if value is None or len(shape) < 2 or value.shape != (1, *shape[1:]) or len(readers) != 1:
        raise Unsupported("an Expand other than of a learned tensor to the batch")
    others = [i for i in _tensor_inputs(view, readers[0]) if i != node.output[0]]
    if not others:
        raise Unsupported("an Expand whose reader joins it to no tensor")
    named = _initializer_path(node, node.input[0])
    lowered = Lowered("parameter", {"shape": list(shape[1:])})
    return Match(lowered, others[:1], node.output[0], [node], {"": value}, name=named)


def _nearest_gathers(view: View, node) -> Match | None:
    """Gathers of constant positions along the spatial axes of a map, one after another: nearest
    ``interpolate`` where they are the positions PyTorch's nearest mode copies for one scale or
    for the sizes (what nasdsl's own ONNX export writes where a Resize would pick others);
    None otherwise."""
    x = node.input[0]
    rank = view.rank(x)
    shape = view.shapes.get(x, ())
    if rank not in (3, 4, 5) or not all(isinstance(d, int) for d in shape) or view.get(x) is not None:
        return None
    ins = [int(d) for d in shape[2:]]
    tables = {}
    nodes, step = [], node
    while step is not None:
        positions = view.get(step.input[1])
        axis = int(view.attrs(step).get("axis", 0)) % rank
        if positions is None or positions.ndim != 1 or axis < 2 or axis - 2 in tables or positions.size == 0:
            break
        tables[axis - 2] = positions.astype(np.int64)
        nodes.append(step)
        after = view.next_node(step, "Gather")
        step = after if after is not None and view.only_user(step.output[0], after) else None
    if not nodes:
        return None
    found = resize.nearest_from_positions(ins, [tables.get(k, np.arange(d)) for k, d in enumerate(ins)])
    if found is None:
        return None
    return Match(Lowered("interpolate", {**found, "mode": "nearest"}), [x], nodes[-1].output[0], nodes)


def _gather(view: View, node) -> Match:
    """``x[:, i]``: one position along an axis other than the batch (a scalar index) is a select."""
    index = view.get(node.input[1])
    rank = view.rank(node.input[0])
    axis = int(view.attrs(node).get("axis", 0)) % max(rank, 1)
    if index is None or index.ndim != 0 or axis == 0 or view.get(node.input[0]) is not None:
        raise Unsupported("a Gather other than of one position along an axis (a select)")
    return Match(Lowered("select", {"axis": axis - 1, "index": int(index)}), [node.input[0]], node.output[0], [node])


def _layer_scale(view: View, node) -> Match:
    """x times a learned tensor, one value per channel as the spec's layer scale holds it: of a
    channels-first map ``(C, 1, 1)``, of anything else its last axis; the constant must
    broadcast so under ONNX's rules (from the last axis: a ``(C,)`` scales a map's columns)."""
    x = _tensor_inputs(view, node)[0]
    name = node.input[1] if node.input[0] == x else node.input[0]
    scale = view.get(name)
    shape = tuple(view.shapes.get(x, ()))
    rank = len(shape)
    known = view.types.get(x)
    first = known.rank >= 3 and known.channel_axis == 0 if known is not None else rank - 1 >= 3
    axis = 1 if first else rank - 1
    padded = (1,) * (rank - scale.ndim) + tuple(scale.shape) if 0 < scale.ndim <= rank else ()
    wanted = tuple(shape[k] if k == axis else 1 for k in range(rank)) if rank >= 2 else None
    if scale.size == 1 and wanted is not None:  # one value for every channel
        padded, scale = wanted, np.full(wanted, scale.reshape(-1)[0], dtype=scale.dtype)
    if wanted is None or padded != wanted:
        where = "a channels-first map's channels (C, 1, 1)" if first else "the last axis"
        raise Unsupported(
            f"a Mul of a {list(shape)} tensor by a constant of shape {list(scale.shape)}: the spec's layer scale "
            f"holds one value per channel, along {where}, as ONNX broadcasts it"
        )
    squeezed = scale.reshape((shape[1], *(1,) * (rank - 2)) if first else (shape[-1],))
    init = float(squeezed.flat[0]) if np.all(squeezed == squeezed.flat[0]) else 1e-6
    lowered = Lowered("layer_scale", {"init": init})
    return Match(lowered, [x], node.output[0], [node], {"": squeezed}, name=_initializer_path(node, name))


def _sigmoid(view: View, node) -> Match:
    mul = view.next_node(node, "Mul")
    x = node.input[0]
    if mul is not None and set(mul.input) == {x, node.output[0]}:
        return Match(Lowered("silu"), [x], mul.output[0], [node, mul])
    return Match(Lowered("sigmoid"), [x], node.output[0], [node])


def _gelu_start(view: View, node) -> Match | None:
    """x / sqrt(2) (or x * 1/sqrt(2)), Erf, + 1, * x, * 0.5 (in either order)."""
    x = node.input[0]
    c = view.scalar(node.input[1]) if len(node.input) > 1 else None
    if c is None or not (
        (node.op_type == "Div" and abs(c - 2**0.5) < 1e-5) or (node.op_type == "Mul" and abs(c - 2**-0.5) < 1e-5)
    ):
        return None
    erf = view.next_node(node, "Erf")
    add = erf and view.next_node(erf, "Add")
    if add is None or view.scalar(add.input[1] if add.input[0] == erf.output[0] else add.input[0]) != 1.0:
        return None
    m1 = view.next_node(add, "Mul")
    if m1 is None:
        return None
    other = m1.input[1] if m1.input[0] == add.output[0] else m1.input[0]
    m2 = view.next_node(m1, "Mul")
    if (
        other == x
        and m2 is not None
        and view.scalar(m2.input[1] if m2.input[0] == m1.output[0] else m2.input[0]) == 0.5
    ):
        return Match(Lowered("gelu"), [x], m2.output[0], [node, erf, add, m1, m2])
    half = view.scalar(other)
    producer = view.producer.get(other)
    if half is None and producer is not None and producer.op_type == "Mul" and x in producer.input:
        k = view.scalar(producer.input[1] if producer.input[0] == x else producer.input[0])
        if k == 0.5:
            return Match(Lowered("gelu"), [x], m1.output[0], [producer, node, erf, add, m1])
    return None


def _div(view: View, node) -> Match | None:
    found = _gelu_start(view, node)
    if found is None:
        raise Unsupported("a division: the spec has none")
    return found


def _mul(view: View, node) -> Match | None:
    return _gelu_start(view, node) or _binary("mul")(view, node)


def _transpose(view: View, node) -> Match:
    perm = list(view.attrs(node).get("perm", []))
    ln = view.next_node(node, "LayerNormalization")
    back = ln and view.next_node(ln, "Transpose")
    if perm == [0, 2, 3, 1] and back is not None and list(view.attrs(back).get("perm", [])) == [0, 3, 1, 2]:
        match = _layer_norm(view, ln)
        if match.lowered.attrs.get("dim") == "last":
            lowered = Lowered("layer_norm", {**match.lowered.attrs, "dim": "channels"})
            return Match(lowered, [node.input[0]], back.output[0], [node, ln, back], match.tensors)
    parts = _layer_norm_parts(view, node.output[0]) if perm == [0, 2, 3, 1] else None
    back = parts and view.next_node(parts[1][-1], "Transpose")
    if back is not None and list(view.attrs(back).get("perm", [])) == [0, 3, 1, 2]:
        out, nodes, tensors, eps = parts
        lowered = Lowered("layer_norm", {"eps": eps, "dim": "channels"})
        return Match(lowered, [node.input[0]], back.output[0], [node, *nodes, back], tensors)
    mean = view.next_node(node, "ReduceMean") if perm == [0, 2, 3, 1] else None
    if mean is not None and _mean_axes(view, mean) == [1, 2]:  # a channels-last map's mean over its positions
        back = (
            Lowered("permute", {"dims": [1, 2, 0]}, suffix="permute")
            if view.attrs(mean).get("keepdims", 1)
            else Lowered("flatten", suffix="flatten")
        )
        return Match((Lowered("global_avg_pool"), back), [node.input[0]], mean.output[0], [node, mean])
    if not perm or perm[0] != 0:
        raise Unsupported(f"a Transpose {perm} that moves the batch axis")
    return Match(Lowered("permute", {"dims": [p - 1 for p in perm[1:]]}), [node.input[0]], node.output[0], [node])


def _layer_norm(view: View, node) -> Match:
    a = view.attrs(node)
    rank = view.rank(node.input[0])
    if int(a.get("axis", -1)) % max(rank, 1) != rank - 1:
        raise Unsupported("a LayerNormalization over more than the last axis")
    weight = view.get(node.input[1])
    bias = view.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if weight is None or bias is None:
        raise Unsupported("a LayerNormalization without a constant weight and bias")
    attrs = {"eps": float(np.float32(a.get("epsilon", 1e-5))), "dim": "last"}
    return Match(
        Lowered("layer_norm", attrs), [node.input[0]], node.output[0], [node], {"weight": weight, "bias": bias}
    )


def reshape_target(view: View, node, shape_in: tuple) -> tuple | None:
    """The shape a Reshape makes, from its constant shape input (0 copies, -1 is inferred)."""
    spec = view.get(node.input[1]) if len(node.input) > 1 else None
    if spec is None or not all(isinstance(d, int) for d in shape_in):
        return None
    dims = [int(d) for d in spec.flatten()]
    dims = [shape_in[k] if d == 0 and not view.attrs(node).get("allowzero", 0) else d for k, d in enumerate(dims)]
    if dims.count(-1) == 1:
        known = int(np.prod([d for d in dims if d != -1]))
        dims[dims.index(-1)] = int(np.prod(shape_in)) // max(known, 1)
    return tuple(dims)


def _reshape(view: View, node) -> Match:
    shape_in = tuple(view.shapes.get(node.input[0], ()))
    target = reshape_target(view, node, shape_in) or tuple(view.shapes.get(node.output[0], ()))
    transpose = view.next_node(node, "Transpose")
    back = transpose and view.next_node(transpose, "Reshape")
    swapped = (target[0], target[2], target[1], *target[3:]) if len(target) == 5 else ()
    if (
        back is not None
        and len(target) == 5
        and list(view.attrs(transpose).get("perm", [])) == [0, 2, 1, 3, 4]
        and reshape_target(view, back, swapped) == shape_in
        and tuple(target[3:]) == tuple(shape_in[2:])
    ):
        return Match(
            Lowered("channel_shuffle", {"groups": int(target[1])}),
            [node.input[0]],
            back.output[0],
            [node, transpose, back],
        )
    partition = _partition(view, node, shape_in, target)
    if partition is not None:
        return partition
    if len(target) == 2 and len(shape_in) >= 2 and target[0] == shape_in[0] and target[1] == int(np.prod(shape_in[1:])):
        return Match(Lowered("flatten"), [node.input[0]], node.output[0], [node])
    merged = _merged_axes(shape_in, target)
    if merged is not None:  # a run of axes joined into one (a ViT's patches: (C, H, W) to (C, H * W))
        start, end = merged
        attrs = {"start": start - 1} | ({"end": end - 1} if end != len(shape_in) - 1 else {})
        return Match(Lowered("flatten", attrs), [node.input[0]], node.output[0], [node])
    raise Unsupported(
        f"a Reshape from {list(shape_in)} to {list(target)}: "
        "the spec reads a Reshape as a flatten, a channel shuffle or MaxViT's partitions"
    )


def _partition(view: View, node, shape_in: tuple, target: tuple) -> Match | None:
    """MaxViT's partitions (torchvision's WindowPartition and WindowDepartition), each a
    ``Reshape, Transpose, Reshape`` of exactly these shapes and this order of axes, read as the
    spec writes them (``reshape``, ``permute``, ``reshape`` with the new axes' roles):

    * a (C, H, W) map cut into p x p squares: ``(C, H/p, p, W/p, p)``, the axes
      ``[0, 2, 4, 3, 5, 1]`` (batch included), tokens ``(H/p * W/p, p * p, C)``, axes ``LLC``;
    * tokens ``(h * w, p * p, C)`` back into a map: ``(h, w, p, p, C)``, the axes
      ``[0, 5, 1, 3, 2, 4]``, a map ``(C, h * p, w * p)``, axes ``CHW``.

    Any other run is left to the other readings of a Reshape (or its error)."""
    transpose = view.next_node(node, "Transpose")
    back = transpose and view.next_node(transpose, "Reshape")
    if back is None or len(target) != 6 or not all(isinstance(d, int) for d in (*shape_in, *target)):
        return None
    perm = list(view.attrs(transpose).get("perm", []))
    moved = tuple(target[k] for k in perm) if len(perm) == 6 else ()
    end = reshape_target(view, back, moved) if moved else None
    if len(shape_in) == 4 and perm == [0, 2, 4, 3, 5, 1]:
        _, c, h, w = shape_in
        rows, p, cols = target[2], target[3], target[4]
        if target != (shape_in[0], c, rows, p, cols, p) or rows * p != h or cols * p != w:
            return None
        if end != (shape_in[0], rows * cols, p * p, c):
            return None
        chain = (
            Lowered("reshape", {"shape": [c, rows, p, cols, p]}),
            Lowered("permute", {"dims": [1, 3, 2, 4, 0]}, suffix="permute"),
            Lowered("reshape", {"shape": [rows * cols, p * p, c], "axes": "LLC"}, suffix="tokens"),
        )
    elif len(shape_in) == 4 and perm == [0, 5, 1, 3, 2, 4]:
        _, g, pp, c = shape_in
        rows, cols, p = target[1], target[2], target[3]
        if target != (shape_in[0], rows, cols, p, p, c) or rows * cols != g or p * p != pp:
            return None
        if end != (shape_in[0], c, rows * p, cols * p):
            return None
        chain = (
            Lowered("reshape", {"shape": [rows, cols, p, p, c]}),
            Lowered("permute", {"dims": [4, 0, 2, 1, 3]}, suffix="permute"),
            Lowered("reshape", {"shape": [c, rows * p, cols * p], "axes": "CHW"}, suffix="map"),
        )
    else:
        return None
    return Match(chain, [node.input[0]], back.output[0], [node, transpose, back])


def _merged_axes(shape_in: tuple, target: tuple) -> tuple[int, int] | None:
    """(first, last): the axes after the batch that ``target`` joins into one, the others kept."""
    extra = len(shape_in) - len(target)
    if extra < 1 or not target or target[0] != shape_in[0]:
        return None
    for start in range(1, len(target)):
        end = start + extra
        if (
            tuple(shape_in[:start]) == tuple(target[:start])
            and tuple(shape_in[end + 1 :]) == tuple(target[start + 1 :])
            and int(np.prod(shape_in[start : end + 1])) == target[start]
        ):
            return start, end
    return None


def _reduce_mean(view: View, node) -> Match:
    a = view.attrs(node)
    axes = a.get("axes")
    if axes is None and len(node.input) > 1:
        axes = view.get(node.input[1])
        axes = None if axes is None else [int(v) for v in axes.flatten()]
    rank = view.rank(node.input[0])
    if rank != 4 or sorted(int(v) % rank for v in (axes or [])) != [2, 3]:
        said = f"axes {list(axes)}" if axes is not None else "every axis (none given)"
        raise Unsupported(
            f"a ReduceMean over {said} of a {list(view.shapes.get(node.input[0], ()))} tensor: the spec has the mean "
            "over a channels-first map's positions (axes 2 and 3)"
        )
    keep = bool(a.get("keepdims", 1))
    lowered = Lowered("global_avg_pool") if keep else (Lowered("global_avg_pool"), Lowered("flatten", suffix="flatten"))
    return Match(lowered, [node.input[0]], node.output[0], [node])


def _mean_axes(view: View, node) -> list[int] | None:
    """A ReduceMean's axes (an attribute, or from opset 18 an input), made positive."""
    axes = view.attrs(node).get("axes")
    if axes is None and len(node.input) > 1:
        axes = view.get(node.input[1])
    rank = view.rank(node.input[0])
    return None if axes is None or not rank else sorted(int(v) % rank for v in np.asarray(axes).reshape(-1))


def _other(node, value: str) -> str:
    return node.input[1] if node.input[0] == value else node.input[0]


def _layer_norm_parts(view: View, x: str) -> tuple[str, list, dict, float] | None:
    """LayerNorm over the last axis written out in primitive ops, as exporters write it below
    opset 17: ``c = x - mean(x)``; ``c / sqrt(mean(c * c) + eps)`` (or ``Pow(c, 2)``); then
    ``* weight + bias``. (The value it ends at, its nodes, its weights, eps); None otherwise."""
    rank = view.rank(x)
    users = view.consumers.get(x, [])
    mean = next((u for u in users if u.op_type == "ReduceMean" and _mean_axes(view, u) == [rank - 1]), None)
    sub = next((u for u in users if u.op_type == "Sub" and list(u.input[:2]) == [x, mean and mean.output[0]]), None)
    if mean is None or sub is None or not view.attrs(mean).get("keepdims", 1):
        return None
    c = sub.output[0]
    readers = list({id(u): u for u in view.consumers.get(c, [])}.values())  # Mul(c, c) reads it twice
    square = next((u for u in readers if (u.op_type == "Mul" and list(u.input) == [c, c])
                   or (u.op_type == "Pow" and u.input[0] == c and view.scalar(u.input[1]) == 2.0)), None)  # fmt: skip
    div = next((u for u in readers if u.op_type == "Div" and u.input[0] == c), None)
    if square is None or div is None or len(readers) != 2:
        return None
    variance = view.next_node(square, "ReduceMean")
    add = variance and view.next_node(variance, "Add")
    root = add and view.next_node(add, "Sqrt")
    eps = add and view.scalar(_other(add, variance.output[0]))
    if root is None or eps is None or _mean_axes(view, variance) != [rank - 1] or div.input[1] != root.output[0]:
        return None
    nodes, out = [mean, sub, square, variance, add, root, div], div.output[0]
    width = view.shapes.get(x, ())[-1]
    weight, bias = np.ones(width, np.float32), np.zeros(width, np.float32)
    for op in ("Mul", "Add"):
        step = view.next_node(nodes[-1], op)
        value = step is not None and view.get(_other(step, out))
        if step is None or value is None or value is False or value.size != width:
            continue
        if op == "Mul" and len(nodes) == 7:
            weight = value.reshape(-1)
        elif op == "Add":
            bias = value.reshape(-1)
        else:
            continue
        nodes.append(step)
        out = step.output[0]
    return out, nodes, {"weight": weight, "bias": bias}, float(np.float32(eps))


def _reduce_mean_first(view: View, node) -> Match | None:
    """A ReduceMean that starts a LayerNorm written out in primitive ops."""
    found = _layer_norm_parts(view, node.input[0])
    if found is None or found[1][0] is not node:
        return None
    out, nodes, tensors, eps = found
    return Match(Lowered("layer_norm", {"eps": eps, "dim": "last"}), [node.input[0]], out, nodes, tensors)


def _hard_sigmoid(view: View, node) -> Match:
    a = view.attrs(node)
    alpha, beta = float(a.get("alpha", 0.2)), float(a.get("beta", 0.5))
    if abs(alpha - 1 / 6) > 1e-6 or abs(beta - 0.5) > 1e-6:
        raise Unsupported(
            f"a HardSigmoid with alpha {alpha:.7g} and beta {beta:.7g} (ONNX's defaults are 0.2 and 0.5): the "
            "spec's hardsigmoid is relu6(x + 3) / 6 (alpha 1/6, beta 0.5)"
        )
    return Match(Lowered("hardsigmoid"), [node.input[0]], node.output[0], [node])


#: the linear mode of a Resize by the map's spatial axes, as PyTorch and the spec name it
_LINEAR = {1: "linear", 2: "bilinear", 3: "trilinear"}


def _text(a: dict, key: str, default: str) -> str:
    v = a.get(key, default)
    return v.decode() if isinstance(v, bytes) else str(v)


def _resize(view: View, node) -> Match:
    """``Resize`` where it computes what PyTorch's ``F.interpolate`` does (what torch.onnx.export
    and nasdsl write): nearest as ``asymmetric`` coordinates rounded down where it picks PyTorch's
    positions, linear with ``half_pixel``, ``pytorch_half_pixel`` (the same but to a side of 1,
    where it reads the first position and PyTorch the middle) or ``align_corners``; the batch and
    channels kept. The sizes are ONNX Runtime's (the float32 product of a side and its scale, which
    the frontend's shape inference takes). Constant sizes are kept as ``size``; constant scales as
    the one ``scale`` a model was written with (:func:`nasdsl.importer.resize.decimal_scale`: 2.3
    for the file's float32 2.29999995) where it gives the sizes and maps the positions as the
    file's scales do, else as the sizes where those map them alike; another is an error. Below
    opset 11 a Resize is an ``Upsample`` by its input ``scales`` (:func:`_upsample`)."""
    if view.opset < 11:
        return _upsample(view, node)
    a = view.attrs(node)
    mode = _text(a, "mode", "nearest")
    coords = _text(a, "coordinate_transformation_mode", "half_pixel")
    rounding = _text(a, "nearest_mode", "round_prefer_floor")
    if a.get("antialias", 0) or "axes" in a or a.get("exclude_outside", 0):
        raise Unsupported("a Resize with antialias, axes or exclude_outside: the spec's interpolate has none")
    policy = _text(a, "keep_aspect_ratio_policy", "stretch")
    if policy != "stretch":  # opset 18: the sizes are bounds, the scale one for all axes
        raise Unsupported(
            f"a Resize with keep_aspect_ratio_policy {policy}: the spec's interpolate makes the sizes it is given"
        )
    if not (mode == "nearest" and coords == "asymmetric" and rounding == "floor") and not (
        mode == "linear" and coords in ("pytorch_half_pixel", "half_pixel", "align_corners")
    ):
        raise Unsupported(
            f"a Resize in mode {mode} with {coords} coordinates"
            + (f" rounded {rounding}" if mode == "nearest" else "")
            + ": the spec's interpolate computes PyTorch's nearest (asymmetric, floor) and linear "
            "(half_pixel, pytorch_half_pixel or align_corners)"
        )
    sizes = view.get(node.input[3]) if len(node.input) > 3 and node.input[3] else None
    scales = view.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    return _interpolation(view, node, mode, coords, sizes, scales)


#: the ops of ONNX's first resizes: Upsample (opset 7, 9) and Resize (opset 10)
_FIRST_RESIZES = "Upsample of opset 7 to 9 and Resize of opset 10"


def _upsample(view: View, node) -> Match:
    """``Upsample`` (its ``scales`` an attribute at opset 7, an input from opset 9) and the
    ``Resize`` of opset 10, which is the same op: the output's sides are ``floor(side *
    scale)`` and output position ``i`` reads ``i / scale`` (ONNX's ``asymmetric`` coordinates;
    ONNX Runtime takes the float32 quotient). Nearest rounds that down where a side grows (ONNX
    Runtime truncates it) and leaves the rounding unsaid where one shrinks (ONNX Runtime rounds
    up there): a shrinking side is read only where its positions are whole numbers, whichever
    way they round. It is then the spec's nearest ``interpolate`` where it picks PyTorch's
    positions (:func:`_interpolation`). Linear with those coordinates is no mode of PyTorch's
    (whose linear modes read ``(i + 0.5) / scale - 0.5`` or align the corners) and is refused
    wherever a side changes."""
    a = view.attrs(node)
    what = f"{node.op_type} of opset {view.opset}"
    article = "an" if what[0] in "AEIOU" else "a"
    mode = _text(a, "mode", "nearest")
    if "scales" in a:
        scales = np.asarray(a["scales"], dtype=np.float32)
    elif len(node.input) > 1 and node.input[1]:
        scales = view.get(node.input[1])
        if scales is None:
            raise Unsupported(f"{article} {what} by scales computed in the graph: the spec's sizes are constants")
    else:
        raise Unsupported(f"{article} {what} without scales")
    if mode not in ("nearest", "linear"):  # bilinear was Upsample-1's, whose scales are attributes of their own
        raise Unsupported(f"{article} {what} in mode {mode}: the spec's interpolate computes nearest and linear modes")
    factors = _factors(f"{article} {what}", scales)
    spatial = factors[2:]
    shown = [float(f"{f:.9g}") for f in spatial]
    if node.op_type == "Upsample" and any(f < 1.0 for f in factors):
        raise Unsupported(f"an {what} by {shown}: ONNX's Upsample takes scales of 1 or more")
    if mode != "nearest":
        if any(f != 1.0 for f in spatial):
            raise Unsupported(
                f"a {mode} {what} by {shown}: its positions are ONNX's asymmetric coordinates (output "
                "position i reads i / scale), which none of PyTorch's linear modes, the spec's interpolate, "
                "reads: half_pixel reads (i + 0.5) / scale - 0.5, align_corners (side - 1) / (out - 1) * i"
            )
        return _interpolation(view, node, "linear", "half_pixel", None, scales)  # every side kept: a copy
    in_shape = view.shapes.get(node.input[0], ())
    for k, (d, f) in enumerate(zip(in_shape[2:], spatial, strict=False)):
        if not isinstance(d, int) or f >= 1.0:
            continue
        out = int(np.float32(d) * np.float32(f))
        read = np.arange(out, dtype=np.float32) / np.float32(f)
        if not np.array_equal(np.floor(read), np.ceil(read)):
            raise Unsupported(
                f"a nearest {what} by {shown} shrinks axis {k + 2} ({d} to {out}) reading positions i / {shown[k]} "
                f"that fall between the input's: how those round, the {_FIRST_RESIZES} leave unsaid (ONNX Runtime "
                "rounds them up, PyTorch's nearest down; from opset 11, Resize's nearest_mode says it)"
            )
    return _interpolation(view, node, "nearest", "asymmetric", None, scales)


def _factors(what: str, scales) -> list[float]:
    """A resize's scales as the float32 values ONNX Runtime takes; refused where one is not a
    finite number > 0 (ONNX Runtime refuses those when it loads the file)."""
    factors = [float(np.float32(v)) for v in np.asarray(scales).reshape(-1)]
    if not all(np.isfinite(f) and f > 0 for f in factors):
        raise Unsupported(f"{what} by {factors}: scales are finite numbers > 0")
    return factors


def _interpolation(view: View, node, mode: str, coords: str, sizes, scales) -> Match:
    """The spec's ``interpolate`` of a resize node read by :func:`_resize` or :func:`_upsample`
    (mode, coordinates and rounding already checked) to constant ``sizes`` or by constant
    ``scales`` (numpy arrays, one per axis, or None)."""
    x = node.input[0]
    rank = view.rank(x)
    what = "a Resize" if node.op_type == "Resize" else "an Upsample"
    if rank not in (3, 4, 5):
        raise Unsupported(f"{what} of a {rank - 1}-D input: the spec's interpolate takes maps (C, L) to (C, T, H, W)")
    in_shape = view.shapes.get(x, ())
    if sizes is None and (scales is None or scales.size == 0):
        raise Unsupported(f"{what} to sizes or scales computed in the graph: the spec's sizes are constants")
    if not all(isinstance(d, int) for d in in_shape):
        raise Unsupported(f"{what} of an input of shape {list(in_shape)}: the spec's sizes are constants")
    ins = [int(d) for d in in_shape[2:]]
    if sizes is not None and sizes.size:
        sizes = [int(v) for v in sizes.reshape(-1)]
        if len(sizes) != rank or list(sizes[:2]) != list(in_shape[:2]):
            raise Unsupported(f"{what} to {sizes}: the spec's interpolate keeps the batch and the channels")
        outs, factors = sizes[2:], None
    else:
        factors = _factors(what, scales)
        if len(factors) != rank or factors[:2] != [1.0, 1.0]:
            raise Unsupported(f"{what} by {factors}: the spec's interpolate keeps the batch and the channels")
        factors = factors[2:]
        outs = [int(np.float32(d) * np.float32(f)) for d, f in zip(ins, factors, strict=True)]  # ONNX Runtime's
    shown = f"by {[float(f'{f:.9g}') for f in factors]}" if factors is not None else f"to {outs}"
    if any(o > MAX_SIDE for o in outs):
        raise Unsupported(
            f"{what} {shown} of {ins}{f' to {outs}' if factors is not None else ''}: the spec's interpolate "
            f"makes sides of at most {MAX_SIDE}"
        )
    if any(o < 1 for o in outs):
        raise Unsupported(f"{what} {shown} of {ins} leaves no positions")
    if mode == "linear" and coords == "pytorch_half_pixel" and any(o == 1 < i for i, o in zip(ins, outs, strict=True)):
        raise Unsupported(
            f"a linear Resize {shown} with pytorch_half_pixel coordinates to a side of 1: it reads the side's first "
            "position where PyTorch's F.interpolate (and half_pixel) reads its middle"
        )
    declared = view.shapes.get(node.output[0], ())
    if len(declared) == rank and all(isinstance(d, int) for d in declared) and list(declared[2:]) != outs:
        raise Unsupported(
            f"{what} {shown} of {ins}: ONNX's shape inference gives it the sides {list(declared[2:])}, ONNX "
            f"Runtime {outs}"
        )
    attrs: dict = {"mode": "nearest" if mode == "nearest" else _LINEAR[rank - 2]}
    if coords == "align_corners":
        attrs["align_corners"] = True
    scale = None
    if factors is not None:
        moved = [f for f, i, o in zip(factors, ins, outs, strict=True) if f != 1.0 or o != i]
        scale = resize.decimal_scale(moved or [1.0], ins, outs)
    computes = _resize_computes(ins, outs, factors, attrs)
    found = resize.spec_resize(ins, outs, scale, computes)
    if found is None:
        raise Unsupported(
            f"{what} {shown} in mode {mode} with {coords} coordinates: no one scale or sizes of the spec's "
            "interpolate (PyTorch's F.interpolate) give its sizes and positions"
        )
    attrs.update(found)
    return Match(Lowered("interpolate", attrs), [x], node.output[0], [node])


def _resize_computes(ins: list[int], outs: list[int], factors: list[float] | None, attrs: dict):
    """``computes`` for :func:`nasdsl.importer.resize.spec_resize`: whether the spec's
    interpolate (PyTorch's) with a scale (or, given None, the sizes) maps side ``k`` as ONNX
    Runtime's Resize by ``factors`` (or, given None, to the sizes) does. Nearest copies position
    ``floor(i / scale)`` in float32 (``out / side`` without scales), the whole input where no
    side changes; linear reads at ``(i + 0.5) / scale - 0.5``, a float32 step of its own, the
    same as PyTorch's to a few units in the last place where the scales agree to as many."""
    spatial = len(ins)
    kept = ins == outs

    def computes(k: int, size: int, out: int, spec_scale: float | None) -> bool:
        factor = np.float32(factors[k]) if factors is not None else np.float32(out) / np.float32(size)
        if attrs["mode"] == "nearest":
            if kept:
                theirs = np.arange(out)
            else:
                theirs = np.floor(np.arange(out, dtype=np.float32) / factor).astype(np.int64)
                theirs = np.minimum(theirs, size - 1)
            return np.array_equal(resize.nearest_positions(size, out, spec_scale, spatial), theirs)
        if attrs.get("align_corners"):
            return True  # (side - 1) / (out - 1), whatever the scale
        if out == size:  # PyTorch copies a side that keeps its size
            return factor == 1.0 or kept
        ours = resize.linear_step(size, out, spec_scale)
        return resize.float32_ulps(ours, 1.0 / float(factor)) <= resize.SCALE_ULPS

    return computes


def _softmax(view: View, node) -> Match:
    shape = view.shapes.get(node.input[0], ())
    rank = max(len(shape), 1)
    if view.opset < 13:
        # before opset 13 a Softmax is over the axes from ``axis`` (1 unless said) on, taken as one
        axis = int(view.attrs(node).get("axis", 1)) % rank
        if axis != 1 or any(d != 1 for d in shape[2:]):
            dims = " x ".join(str(d) for d in shape[axis:]) or "none"
            raise Unsupported(
                f"a Softmax of opset {view.opset} over the axes from {axis} on, taken as one ({dims}): the "
                "spec's softmax is over the channels alone"
            )
    elif int(view.attrs(node).get("axis", -1)) % rank != 1:
        raise Unsupported("a Softmax over another axis than 1")
    return Match(Lowered("softmax"), [node.input[0]], node.output[0], [node])


def _lrn(view: View, node) -> Match:
    a = view.attrs(node)
    attrs = {
        "size": int(a["size"]),
        "alpha": float(a.get("alpha", 1e-4)),
        "beta": float(a.get("beta", 0.75)),
        "k": float(a.get("bias", 1.0)),
    }
    return Match(Lowered("lrn", attrs), [node.input[0]], node.output[0], [node])


def _gelu(view: View, node) -> Match:
    approximate = view.attrs(node).get("approximate", b"none")
    approximate = approximate.decode() if isinstance(approximate, bytes) else approximate
    return Match(Lowered("gelu", {"approximate": approximate}), [node.input[0]], node.output[0], [node])


PATTERNS: dict[str, list[Callable]] = {
    "Conv": [_conv],
    "ConvTranspose": [_conv_transpose],
    "Pad": [_pad],
    "BatchNormalization": [_batch_norm],
    "Relu": [_one("relu")],
    "Sigmoid": [_sigmoid],
    "Tanh": [_one("tanh")],
    "HardSwish": [_one("hardswish")],
    "HardSigmoid": [_hard_sigmoid],
    "Gelu": [_gelu],
    "MaxPool": [_pool("max_pool")],
    "AveragePool": [_pool("avg_pool")],
    "GlobalAveragePool": [_one("global_avg_pool")],
    "ReduceMean": [_reduce_mean_first, _reduce_mean],
    "LRN": [_lrn],
    "Flatten": [_flatten],
    "Reshape": [_reshape],
    "Gemm": [_gemm],
    "MatMul": [_matmul],
    "Concat": [_concat],
    "Add": [_binary("add")],
    "Mul": [_mul],
    "Div": [_div],
    "Transpose": [_transpose],
    "LayerNormalization": [_layer_norm],
    "Softmax": [_softmax],
    "Resize": [_resize],
    "Upsample": [_upsample],
    "Expand": [_expand],
    "Gather": [_nearest_gathers, _gather],
}


# -- activations with a parameter and per-sample norms (nasdsl/ops/norms_activations.py) ----------


def _leaky_relu(view: View, node) -> Match:
    slope = float(np.float32(view.attrs(node).get("alpha", 0.01)))
    return Match(Lowered("leaky_relu", {"negative_slope": slope}), [node.input[0]], node.output[0], [node])


def _elu(view: View, node) -> Match:
    alpha = float(np.float32(view.attrs(node).get("alpha", 1.0)))
    return Match(Lowered("elu", {"alpha": alpha}), [node.input[0]], node.output[0], [node])


def _prelu(view: View, node) -> Match:
    """PRelu with one slope for all (``per_channel: false``) or one per channel, broadcast along
    the channels ((C, 1, 1) on a map, (C,) on features); a slope of another shape is refused."""
    slope = view.get(node.input[1])
    if slope is None:
        raise Unsupported("a PRelu whose slope is computed")
    shape = view.shapes.get(node.input[0], ())
    if slope.size == 1:
        return Match(Lowered("prelu", {"per_channel": False}), [node.input[0]], node.output[0], [node],
                     {"weight": slope.reshape(1)})  # fmt: skip
    weight = per_channel(slope, shape[1], len(shape)) if len(shape) >= 2 else None
    if weight is None:
        raise Unsupported(
            f"a PRelu slope of shape {list(slope.shape)} on an input {list(shape)}: one per channel is read"
        )
    return Match(Lowered("prelu"), [node.input[0]], node.output[0], [node], {"weight": weight})


def _made_ones_zeros(view: View, scale: str, bias: str) -> bool:
    """Whether a norm's scale and bias are ones and zeros written by nodes (as torch.onnx.export
    writes a norm without ``affine``): an initializer, whatever its values, is a learned tensor."""
    s, b = view.get(scale), view.get(bias)
    made = scale in view.producer and bias in view.producer
    return made and s is not None and b is not None and bool(np.all(s == 1) and np.all(b == 0))


def _then_affine(view: View, last, channels: int, rank: int):
    """A per-channel ``Mul`` then ``Add`` by constants after ``last``: (weight, bias, nodes, out),
    the weight and bias None where they are ones and zeros that nodes write (torch.onnx.export's
    GroupNorm without ``affine``); None where no such pair follows."""
    mul = view.next_node(last, "Mul")
    factor = _other(mul, last.output[0]) if mul is not None else ""
    scale = per_channel(view.get(factor), channels, rank) if mul is not None else None
    add = view.next_node(mul, "Add") if scale is not None else None
    term = _other(add, mul.output[0]) if add is not None else ""
    shift = per_channel(view.get(term), channels, rank) if add is not None else None
    if shift is None:
        return None
    if _made_ones_zeros(view, factor, term):
        scale = shift = None
    return scale, shift, [mul, add], add.output[0]


def _instance_norm(view: View, node) -> Match:
    scale, bias = view.get(node.input[1]), view.get(node.input[2])
    shape = view.shapes.get(node.input[0], ())
    if scale is None or bias is None:
        raise Unsupported("an InstanceNormalization whose scale or bias is computed")
    attrs = {"eps": float(np.float32(view.attrs(node).get("epsilon", 1e-5)))}
    if _made_ones_zeros(view, node.input[1], node.input[2]):
        return Match(Lowered("instance_norm", attrs), [node.input[0]], node.output[0], [node])
    if scale.shape != (shape[1],) or bias.shape != (shape[1],):
        raise Unsupported(f"an InstanceNormalization whose scale and bias have the shapes {[scale.shape, bias.shape]}")
    return Match(Lowered("instance_norm", {**attrs, "affine": True}), [node.input[0]], node.output[0], [node],
                 {"weight": scale, "bias": bias})  # fmt: skip


def _group_norm_attrs(groups: int, eps: float, weight, bias) -> tuple[dict, dict]:
    """A group_norm's attributes and tensors: without ``affine`` where ``weight`` is None."""
    attrs = {"groups": int(groups), "eps": float(np.float32(eps))}
    if weight is None:
        return {**attrs, "affine": False}, {}
    return attrs, {"weight": weight, "bias": bias}


def _group_norm(view: View, node) -> Match:
    """GroupNormalization of opset 21 on (its scale and bias one per channel; ONNX's checker refuses
    the deprecated one of opsets 18 to 20 before any node is read); a per-channel ``Mul`` and
    ``Add`` after one of ones and zeros are its weight and bias."""
    a = view.attrs(node)
    shape = view.shapes.get(node.input[0], ())
    channels, groups = shape[1], int(a["num_groups"])
    scale, bias = view.get(node.input[1]), view.get(node.input[2])
    if scale is None or bias is None or channels % groups:
        raise Unsupported(
            "a GroupNormalization whose scale or bias is computed, or whose groups do not divide the channels"
        )
    nodes, out = [node], node.output[0]
    weight = None if _made_ones_zeros(view, node.input[1], node.input[2]) else scale
    if np.all(scale == 1) and np.all(bias == 0):
        after = _then_affine(view, node, channels, len(shape))
        if after is not None:
            weight, bias, more, out = after
            nodes += more
    attrs, tensors = _group_norm_attrs(groups, a.get("epsilon", 1e-5), weight, bias)
    return Match(Lowered("group_norm", attrs), [node.input[0]], out, nodes, tensors)


def _group_norm_reshaped(view: View, node) -> Match | None:
    """torch.onnx.export's GroupNorm below opset 18 (and at it): ``Reshape`` to (N, groups, -1),
    ``InstanceNormalization`` by ones and zeros, ``Reshape`` back, then the per-channel weight
    (``Mul``) and bias (``Add``) where it is affine. None where the run is another."""
    shape_in = tuple(view.shapes.get(node.input[0], ()))
    target = tuple(view.shapes.get(node.output[0], ()))
    norm = view.next_node(node, "InstanceNormalization")
    back = view.next_node(norm, "Reshape") if norm is not None else None
    if back is None or len(shape_in) < 2 or len(target) != 3 or tuple(view.shapes.get(back.output[0], ())) != shape_in:
        return None
    groups = target[1]
    scale, bias = view.get(norm.input[1]), view.get(norm.input[2])
    if scale is None or bias is None or not (np.all(scale == 1) and np.all(bias == 0)):
        return None
    eps = view.attrs(norm).get("epsilon", 1e-5)
    nodes, out = [node, norm, back], back.output[0]
    after = _then_affine(view, back, shape_in[1], len(shape_in))
    weight = bias = None
    if after is not None:
        weight, bias, more, out = after
        nodes += more
    attrs, tensors = _group_norm_attrs(groups, eps, weight, bias)
    return Match(Lowered("group_norm", attrs), [node.input[0]], out, nodes, tensors)


PATTERNS.update(
    {
        "LeakyRelu": [_leaky_relu],
        "Elu": [_elu],
        "PRelu": [_prelu],
        "InstanceNormalization": [_instance_norm],
        "GroupNormalization": [_group_norm],
    }
)
PATTERNS["Reshape"].insert(0, _group_norm_reshaped)


def slice_bounds(get, node, opset: int) -> tuple | None:
    """A Slice's (starts, ends, axes, steps), each an array of one value per axis sliced: attributes
    before opset 10, inputs from it (``get`` gives a constant input's value, or None); the axes
    0, 1, ... and the steps 1 where left out. None where one is computed or the starts and ends
    are missing."""
    if opset < 10:
        from onnx import helper

        a = {at.name: helper.get_attribute_value(at) for at in node.attribute}
        if "starts" not in a or "ends" not in a:
            return None
        starts, ends = np.array(a["starts"], dtype=np.int64), np.array(a["ends"], dtype=np.int64)
        axes = np.array(a.get("axes", range(len(starts))), dtype=np.int64)
        return starts, ends, axes, np.ones_like(starts)
    bounds = [get(node.input[k]) if len(node.input) > k and node.input[k] else None for k in range(1, 5)]
    starts, ends, axes, steps = bounds
    if starts is None or ends is None:
        return None
    if axes is None and not (len(node.input) > 3 and node.input[3]):
        axes = np.arange(starts.size)
    if steps is None and not (len(node.input) > 4 and node.input[4]):
        steps = np.ones(starts.size, dtype=np.int64)
    if axes is None or steps is None:
        return None
    return tuple(np.asarray(v).reshape(-1).astype(np.int64) for v in (starts, ends, axes, steps))


def _slice(view: View, node) -> Match:
    bounds = slice_bounds(view.get, node, view.opset)
    if bounds is None:
        raise Unsupported(
            "a Slice with computed bounds"
            if view.opset >= 10
            else f"a Slice of opset {view.opset} without starts and ends"
        )
    starts, ends, axes, steps = bounds
    rank = view.rank(node.input[0])
    if [int(a) % rank for a in axes.flatten()] != [1] or int(steps.flatten()[0]) != 1:
        raise Unsupported("a Slice other than of channels (axis 1, step 1)")
    channels = view.shapes[node.input[0]][1]
    start, stop = (int(v.flatten()[0]) for v in (starts, ends))
    start, stop = (v + channels if v < 0 else min(v, channels) for v in (start, stop))
    attrs = {"start": start} if stop == channels else {"start": start, "stop": stop}
    return Match(Lowered("slice", attrs), [node.input[0]], node.output[0], [node])


PATTERNS["Slice"] = [_slice]


def _dropout(view: View, node) -> Match:
    """A Dropout the reader did not take as passing its input on (``_Reader._passes_on``)."""
    if len(node.input) > 2 and node.input[2]:
        mode = view.get(node.input[2])
        if mode is None or mode.size != 1 or bool(mode.reshape(())):
            said = "computed" if mode is None else f"{mode.reshape(-1).tolist()}"
            raise Unsupported(
                f"a Dropout whose training_mode is {said} (an input from opset 12; where true, ONNX Runtime "
                "drops values at inference): the spec's dropout passes its input on"
            )
    raise Unsupported("a Dropout whose mask is read: the spec's dropout makes no mask")


PATTERNS["Dropout"] = [_dropout]


def _pool_matrix(size_in: int, size_out: int) -> np.ndarray:
    """PyTorch's adaptive average pooling along one axis as a (size_out, size_in) matrix."""
    m = np.zeros((size_out, size_in), dtype=np.float64)
    for i in range(size_out):
        start, end = (i * size_in) // size_out, -(-((i + 1) * size_in) // size_out)
        m[i, start:end] = 1.0 / (end - start)
    return m


def _adaptive_matmul(view: View, node) -> Match | None:
    """x @ cols, then rows @ that: adaptive average pooling written as two products (nasdsl's
    export of sizes that do not divide), when the matrices are the pooling's."""
    cols = view.get(node.input[1])
    nxt = view.next_node(node, "MatMul")
    rows = nxt is not None and nxt.input[1] == node.output[0] and view.get(nxt.input[0])
    shape = view.shapes.get(node.input[0], ())
    if cols is None or rows is None or rows is False or len(shape) != 4 or cols.ndim != 2 or rows.ndim != 2:
        return None
    if cols.shape[0] != shape[3] or rows.shape[1] != shape[2]:
        return None
    if not (
        np.allclose(cols, _pool_matrix(shape[3], cols.shape[1]).T, rtol=1e-6, atol=1e-7)
        and np.allclose(rows, _pool_matrix(shape[2], rows.shape[0]), rtol=1e-6, atol=1e-7)
    ):
        return None
    size = (int(rows.shape[0]), int(cols.shape[1]))
    lowered = Lowered("global_avg_pool") if size == (1, 1) else Lowered("adaptive_avg_pool", {"size": pair(size)})
    return Match(lowered, [node.input[0]], nxt.output[0], [node, nxt])


PATTERNS["MatMul"] = [_adaptive_matmul, _matmul]


def _merge(op: str) -> Callable:
    """``Sum`` and ``Mean`` of tensors: the spec's ``add`` and ``mean`` of inputs of one shape
    (of one input: that input)."""

    def handler(view: View, node) -> Match:
        if any(view.is_const(i) for i in node.input):
            raise Unsupported(f"a {node.op_type} with a constant: the spec's {op} joins tensors")
        if len(node.input) == 1:
            return Match(Lowered("identity"), [node.input[0]], node.output[0], [node])
        return Match(Lowered(op), list(node.input), node.output[0], [node])

    return handler


def _max(view: View, node) -> Match:
    """``Max`` of a tensor and the constant 0: a ReLU."""
    tensors = _tensor_inputs(view, node)
    consts = [view.get(i) for i in node.input if view.is_const(i)]
    if len(tensors) == 1 and len(consts) == 1 and consts[0].size == 1 and float(consts[0].reshape(())) == 0.0:
        return Match(Lowered("relu"), tensors, node.output[0], [node])
    raise Unsupported("a Max other than of a tensor and 0 (a ReLU): the spec has no element-wise maximum")


def _cast(view: View, node) -> Match:
    """A Cast the reader did not take as passing its input on (to float32, of floating point)."""
    from onnx import TensorProto

    to = int(view.attrs(node).get("to", 0))
    name = TensorProto.DataType.Name(to) if to in TensorProto.DataType.values() else f"type {to}"
    if to == TensorProto.FLOAT:
        raise Unsupported(
            "a Cast to float of a tensor computed in another type (or of one whose type is unknown): the spec "
            "computes in float32 throughout"
        )
    raise Unsupported(f"a Cast to {name.lower()} of a computed tensor: the spec computes in float32")


def _global_max_pool(view: View, node) -> Match:
    shape = view.shapes.get(node.input[0], ())
    if len(shape) != 4 or not all(isinstance(d, int) for d in shape):
        raise Unsupported(f"a GlobalMaxPool of a {list(shape)} tensor: the spec's max_pool takes a map (C, H, W)")
    kernel = pair(shape[2:])
    return Match(Lowered("max_pool", {"kernel": kernel, "stride": kernel}), [node.input[0]], node.output[0], [node])


def _squeeze(view: View, node) -> Match:
    """A Squeeze of the two spatial axes of a map pooled to 1 x 1: a flatten."""
    a = view.attrs(node)
    axes = a.get("axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        axes = view.get(node.input[1])
        if axes is None:
            raise Unsupported("a Squeeze of axes computed in the graph")
    shape = tuple(view.shapes.get(node.input[0], ()))
    rank = len(shape)
    if axes is None:
        raise Unsupported(
            "a Squeeze without axes: it drops every axis of size 1, the batch's among them where it is 1 (the spec "
            "reads the Squeeze of a map pooled to 1 x 1, axes 2 and 3, as a flatten)"
        )
    dropped = sorted(int(x) % max(rank, 1) for x in np.asarray(axes).reshape(-1))
    if rank == 4 and dropped == [2, 3] and shape[2:] == (1, 1):
        return Match(Lowered("flatten"), [node.input[0]], node.output[0], [node])
    raise Unsupported(
        f"a Squeeze of axes {dropped} of a {list(shape)} tensor: the spec reads the Squeeze of a map pooled to "
        "1 x 1 (axes 2 and 3) as a flatten"
    )


PATTERNS.update(
    Sum=[_merge("add")],
    Mean=[_merge("mean")],
    Max=[_max],
    Cast=[_cast],
    GlobalMaxPool=[_global_max_pool],
    Squeeze=[_squeeze],
)


# -- pixel shuffles, adaptive max pooling, clamp, activations (nasdsl/ops/more_ops.py) -------------


def _blocks_of(view: View, node, what: str) -> tuple[int, int, int, int]:
    """The block size and the sizes ``(C, H, W)`` of a DepthToSpace's or SpaceToDepth's input, a
    map of known sizes."""
    shape = tuple(view.shapes.get(node.input[0], ()))
    if len(shape) != 4 or not all(isinstance(d, int) for d in shape[1:]):
        raise Unsupported(f"a {what} of a {list(shape)} tensor: expected a map (N, C, H, W) of known sizes")
    r = int(view.attrs(node).get("blocksize", 0))
    if r < 1:
        raise Unsupported(f"a {what} of blocksize {r}: expected 1 or more")
    return (r, *shape[1:])


def _depth_to_space(view: View, node) -> Match:
    """DepthToSpace: in CRD order PyTorch's pixel shuffle (``pixel_shuffle``); in DCR order, ONNX's
    default, the block's offset comes before the channel (input channel ``(i * r + j) * C + c``
    makes position ``(i, j)`` of output channel ``c``'s blocks), which is ``reshape`` to ``(r, r,
    C, H, W)``, ``permute`` to ``(C, H, r, W, r)`` and ``reshape`` to ``(C, H * r, W * r)``, as
    the ONNX standard defines it."""
    mode = _text(view.attrs(node), "mode", "DCR")
    r, c, h, w = _blocks_of(view, node, f"DepthToSpace in {mode} order")
    if c % (r * r):
        raise Unsupported(f"a DepthToSpace of {c} channels by blocks of {r}: the channels must divide by {r * r}")
    if mode == "CRD":
        return Match(Lowered("pixel_shuffle", {"factor": r}), [node.input[0]], node.output[0], [node])
    if mode != "DCR":
        raise Unsupported(f"a DepthToSpace in {mode} order: ONNX's are DCR and CRD")
    out = c // (r * r)
    chain = (
        Lowered("reshape", {"shape": [r, r, out, h, w]}),
        Lowered("permute", {"dims": [2, 3, 0, 4, 1]}, suffix="permute"),
        Lowered("reshape", {"shape": [out, h * r, w * r], "axes": "CHW"}, suffix="map"),
    )
    return Match(chain, [node.input[0]], node.output[0], [node])


def _space_to_depth(view: View, node) -> Match:
    """SpaceToDepth, DepthToSpace's inverse in DCR order: position ``(i, j)`` of each r x r block
    of channel ``c`` becomes channel ``(i * r + j) * C + c`` (PyTorch's pixel unshuffle makes it
    ``c * r * r + i * r + j``): ``reshape`` to ``(C, H / r, r, W / r, r)``, ``permute`` to ``(r,
    r, C, H / r, W / r)`` and ``reshape`` to ``(C * r * r, H / r, W / r)``."""
    r, c, h, w = _blocks_of(view, node, "SpaceToDepth")
    if h % r or w % r:
        raise Unsupported(f"a SpaceToDepth of a {h}x{w} map by blocks of {r}: the sides must divide")
    chain = (
        Lowered("reshape", {"shape": [c, h // r, r, w // r, r]}),
        Lowered("permute", {"dims": [2, 4, 0, 1, 3]}, suffix="permute"),
        Lowered("reshape", {"shape": [c * r * r, h // r, w // r], "axes": "CHW"}, suffix="map"),
    )
    return Match(chain, [node.input[0]], node.output[0], [node])


def _pixel_unshuffle(view: View, node) -> Match | None:
    """PyTorch's pixel unshuffle as torch.onnx.export writes it: ``Reshape`` of (N, C, H, W) to
    (N, C, H/r, r, W/r, r), ``Transpose`` [0, 1, 3, 5, 2, 4], ``Reshape`` to (N, C r^2, H/r, W/r).
    None where the run is another."""
    shape_in = tuple(view.shapes.get(node.input[0], ()))
    target = reshape_target(view, node, shape_in)
    transpose = view.next_node(node, "Transpose")
    back = transpose and view.next_node(transpose, "Reshape")
    if back is None or len(shape_in) != 4 or target is None or len(target) != 6:
        return None
    n, c, h, w = shape_in
    r = target[3]
    moved = (n, c, r, r, h // r, w // r)
    if (
        target == (n, c, h // r, r, w // r, r)
        and target[5] == r
        and list(view.attrs(transpose).get("perm", [])) == [0, 1, 3, 5, 2, 4]
        and reshape_target(view, back, moved) == (n, c * r * r, h // r, w // r)
    ):
        return Match(Lowered("pixel_unshuffle", {"factor": int(r)}), [node.input[0]], back.output[0],
                     [node, transpose, back])  # fmt: skip
    return None


def _global_max_pool_any(view: View, node) -> Match:
    """GlobalMaxPool: of a map (C, H, W) a max_pool over it (as the importer always read it); of a
    (C, L) or (C, T, H, W) one, adaptive max pooling to 1."""
    rank = view.rank(node.input[0])
    if rank in (3, 5):
        op = "adaptive_max_pool1d" if rank == 3 else "adaptive_max_pool3d"
        return Match(Lowered(op, {"size": 1}), [node.input[0]], node.output[0], [node])
    return _global_max_pool(view, node)


def _adaptive_max_gathered(view: View, node) -> Match | None:
    """nasdsl's export of adaptive max pooling whose windows overlap or differ in length: a
    ``Gather`` of PyTorch's windows along one spatial axis, then a ``ReduceMax`` over them. Read
    as adaptive max pooling of that axis alone (the others keep their sizes); None otherwise."""
    shape = tuple(view.shapes.get(node.input[0], ()))
    rank = len(shape)
    axis = int(view.attrs(node).get("axis", 0)) % max(rank, 1)
    index = view.get(node.input[1])
    reduce = view.next_node(node, "ReduceMax")
    if reduce is None or index is None or index.ndim != 2 or rank not in (3, 4, 5) or axis < 2:
        return None
    if view.get(node.input[0]) is not None or not all(isinstance(d, int) for d in shape):
        return None
    a = view.attrs(reduce)
    axes = a.get("axes") if view.opset < 18 else view.get(reduce.input[1]) if len(reduce.input) > 1 else None
    if axes is None or [int(x) % (rank + 1) for x in np.asarray(axes).reshape(-1)] != [axis + 1]:
        return None
    if a.get("keepdims", 1) or index.tolist() != adaptive_windows(shape[axis], index.shape[0]):
        return None
    sizes = [*shape[2:]]
    sizes[axis - 2] = index.shape[0]
    size = sizes[0] if len(set(sizes)) == 1 else sizes
    op = {3: "adaptive_max_pool1d", 4: "adaptive_max_pool", 5: "adaptive_max_pool3d"}[rank]
    return Match(Lowered(op, {"size": size}), [node.input[0]], reduce.output[0], [node, reduce])


def _clip_bound(view: View, node, k: int) -> float | None:
    """Bound ``k`` (1: min, 2: max) of a Clip: an attribute before opset 11, an input from it;
    None where it is not given."""
    if view.opset < 11:
        v = view.attrs(node).get(("min", "max")[k - 1])
        return None if v is None else _no_float32_max(float(np.float32(v)))
    if len(node.input) <= k or not node.input[k]:
        return None
    v = view.scalar(node.input[k])
    if v is None:
        raise Unsupported("a Clip whose bounds are computed: the spec's clamp takes numbers")
    return _no_float32_max(float(np.float32(v)))


def _no_float32_max(v: float) -> float | None:
    """A bound at float32's largest magnitude (Clip's default before opset 11, written out by
    some tools) bounds nothing: None."""
    return None if abs(v) >= float(np.finfo(np.float32).max) else v


def _clip(view: View, node) -> Match:
    """Clip: [0, 6] as ``relu6``, 0 and no upper bound as ``relu``, no bound as nothing, other
    bounds as ``clamp``; a bound at float32's largest magnitude is none."""
    lo, hi = _clip_bound(view, node, 1), _clip_bound(view, node, 2)
    if (lo, hi) == (0.0, 6.0):
        return Match(Lowered("relu6"), [node.input[0]], node.output[0], [node])
    if (lo, hi) == (0.0, None):
        return Match(Lowered("relu"), [node.input[0]], node.output[0], [node])
    if lo is None and hi is None:
        return Match(Lowered("identity"), [node.input[0]], node.output[0], [node])
    if lo is not None and hi is not None and not lo < hi:
        raise Unsupported(f"a Clip to [{lo}, {hi}]: the spec's clamp takes a max above its min")
    attrs = {k: v for k, v in (("min", lo), ("max", hi)) if v is not None}
    return Match(Lowered("clamp", attrs), [node.input[0]], node.output[0], [node])


def _softplus_run(view: View, x: str, scale, soft, beta: float) -> Match | None:
    """From ``soft``, a Softplus of ``x`` (``scale`` None) or of ``x * beta`` (made by the Mul
    ``scale``): the Softplus, a ``Div`` by ``beta`` where it is not 1, and nasdsl's ``Where(beta *
    x > threshold, x, ...)`` where one follows; None where the run is another."""
    scaled = soft.input[0]
    nodes, last = [*([scale] if scale is not None else []), soft], soft
    if beta != 1.0:
        div = view.next_node(soft, "Div")
        if div is None or div.input[0] != soft.output[0] or view.scalar(div.input[1]) != beta:
            return None
        nodes.append(div)
        last = div
    attrs = {} if beta == 1.0 else {"beta": beta}
    where = view.next_node(last, "Where")
    greater = where is not None and view.producer.get(where.input[0])
    if (
        greater
        and greater.op_type == "Greater"
        and list(where.input[1:]) == [x, last.output[0]]
        and greater.input[0] == scaled
        and view.only_user(greater.output[0], where)
        and view.scalar(greater.input[1]) is not None
    ):
        attrs["threshold"] = float(np.float32(view.scalar(greater.input[1])))
        nodes += [greater, where]
        last = where
    if scale is not None and not all(user in nodes for user in view.consumers.get(scaled, [])):
        return None  # x * beta is read elsewhere too
    return Match(Lowered("softplus", attrs), [x], last.output[0], nodes)


def _softplus(view: View, node) -> Match:
    """Softplus, or with a ``Tanh`` of it multiplying its input, Mish (torch.onnx.export's)."""
    tanh = view.next_node(node, "Tanh")
    mul = tanh and view.next_node(tanh, "Mul")
    if mul is not None and sorted(mul.input) == sorted([node.input[0], tanh.output[0]]):
        return Match(Lowered("mish"), [node.input[0]], mul.output[0], [node, tanh, mul])
    return _softplus_run(view, node.input[0], None, node, 1.0)


def _softplus_scaled(view: View, node) -> Match | None:
    """A ``Mul`` of a tensor by a constant beta > 0, then Softplus and a ``Div`` by beta:
    softplus with that beta (as torch.onnx.export writes nn.Softplus(beta))."""
    tensors = _tensor_inputs(view, node)
    softs = [u for u in view.consumers.get(node.output[0], []) if u.op_type == "Softplus"]
    if len(tensors) != 1 or len(softs) != 1 or node.output[0] in view.outputs:
        return None
    beta = view.scalar(_other(node, tensors[0]))
    if beta is None or not beta > 0 or beta == 1.0:
        return None
    return _softplus_run(view, tensors[0], node, softs[0], float(np.float32(beta)))


#: ONNX's Selu defaults, PyTorch's constants in float32
_SELU = {"alpha": 1.67326319217681884765625, "gamma": 1.05070102214813232421875}


def _selu(view: View, node) -> Match:
    a = view.attrs(node)
    given = {k: float(np.float32(a.get(k, v))) for k, v in _SELU.items()}
    if given != _SELU:
        raise Unsupported(f"a Selu with alpha {given['alpha']} and gamma {given['gamma']}: the spec's is PyTorch's")
    return Match(Lowered("selu"), [node.input[0]], node.output[0], [node])


def _log_softmax(view: View, node) -> Match:
    """LogSoftmax over one axis (from opset 13; before it, over the axes from ``axis`` on, read
    where the later axes are 1), written as the axis's index."""
    shape = view.shapes.get(node.input[0], ())
    rank = max(len(shape), 1)
    axis = int(view.attrs(node).get("axis", -1 if view.opset >= 13 else 1)) % rank
    if view.opset < 13 and any(d != 1 for d in shape[axis + 1 :]):
        raise Unsupported(f"a LogSoftmax of opset {view.opset} over the axes from {axis} on, taken as one")
    if axis == 0:
        raise Unsupported("a LogSoftmax over the batch axis")
    return Match(Lowered("log_softmax", {"dim": axis - 1}), [node.input[0]], node.output[0], [node])


PATTERNS.update(
    DepthToSpace=[_depth_to_space],
    SpaceToDepth=[_space_to_depth],
    GlobalMaxPool=[_global_max_pool_any],
    Clip=[_clip],
    Softplus=[_softplus],
    Mish=[_one("mish")],
    Selu=[_selu],
    LogSoftmax=[_log_softmax],
)
PATTERNS["Reshape"].insert(0, _pixel_unshuffle)
PATTERNS["Mul"].insert(0, _softplus_scaled)
PATTERNS["Gather"].insert(0, _adaptive_max_gathered)
