"""The PyTorch op table: which modules, functions and tensor methods become which nasdsl ops.

Three tables, one entry per source op:

* :data:`MODULES`: a module class (matched exactly: a subclass may compute something else)
  to ``handler(module, call) -> Lowered | tuple[Lowered, ...]``;
* :data:`FUNCTIONS`: a function object (``torch.cat``, ``torch.nn.functional.relu``,
  ``operator.add``) to ``handler(call)``;
* :data:`METHODS`: a tensor method name (``flatten``, ``mean``) to ``handler(call)``.

A handler raises :class:`Unsupported` for settings without a spec equivalent (a BatchNorm
without running statistics, an adaptive pooling to a size of None); a module class, function or
method missing from the tables is a located error naming the node. The modules of the table
are the tracer's leaves: their forward is not traced into. Adding an op of ``nasdsl/ops.py``
(``conv3d``) is one entry here and one in :mod:`nasdsl.importer.onnx_ops`.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from nasdsl.importer import resize
from nasdsl.importer.ops_table import Lowered, Unsupported, pair
from nasdsl.importer.torch_shapes import Batch

_MISSING = object()


@dataclass
class Call:
    """A traced call as a handler sees it: its arguments (tensors are fx nodes) and the
    shapes of its tensor inputs and of its output, batch included."""

    args: tuple
    kwargs: dict
    in_shapes: list[tuple[int, ...]]
    out_shape: tuple[int, ...] | None
    #: the tensor inputs' types as the spec's ops infer them (their axes say which is the channels)
    in_types: list = field(default_factory=list)
    #: whether the trace read is the training one (``self.training`` was True)
    training: bool = False

    def arg(self, index: int, name: str, default: object = _MISSING) -> object:
        if len(self.args) > index:
            return self.args[index]
        if name in self.kwargs:
            return self.kwargs[name]
        if default is _MISSING:
            raise Unsupported(f"missing argument '{name}'")
        return default

    @property
    def rank(self) -> int:
        return len(self.in_shapes[0]) if self.in_shapes else 0


def _spec_axis(dim: object, call: Call) -> int:
    """A torch dimension of the input as the spec's axis (the batch excluded)."""
    axis = int(dim) % call.rank - 1
    if axis < 0:
        raise Unsupported("an op along the batch axis: the spec's ops work on each sample")
    return axis


def _axis_attr(dim: object, call: Call, key: str) -> dict:
    """``{key: axis}`` for a dimension of the input; nothing (the default, the channels) for axis 1
    of an image (N, C, H, W) or of features (N, C) whose channels the spec's types keep there (a
    permuted map's channels are elsewhere: its axis 1 is then written as a number)."""
    axis = _spec_axis(dim, call)
    first = not call.in_types or call.in_types[0].channel_axis == 0
    return {} if axis == 0 and call.rank in (2, 4) and first else {key: axis}


def _map_input(call: Call, what: str) -> None:
    if call.rank != 4:
        raise Unsupported(f"{what} of a {call.rank - 1}-D input: the spec's ops take (C, H, W) maps here")


# -- modules -----------------------------------------------------------------------------


def _conv(m: nn.modules.conv._ConvNd, call: Call) -> Lowered | tuple[Lowered, ...]:
    """``nn.Conv1d``, ``2d`` and ``3d``. A ``padding_mode`` other than zeros (reflect, replicate,
    circular) is the border the module adds first: a ``pad`` in that mode, then the convolution
    without padding, which keeps the module's name and tensors (the pad is named after it)."""
    n = len(m.kernel_size)
    padding = m.padding if isinstance(m.padding, str) else _window(m.padding)
    attrs = {
        "out": m.out_channels,
        "kernel": _window(m.kernel_size),
        "stride": _window(m.stride),
        "padding": padding,
        "dilation": _window(m.dilation),
        "groups": m.groups,
        "bias": m.bias is not None,
    }
    conv = Lowered(f"conv{n}d", attrs)
    if m.padding_mode == "zeros" or m.padding == "valid":
        return conv
    if m.padding == "same":  # as PyTorch pads it: the total d * (k - 1), an odd one's extra position after
        totals = [d * (k - 1) for d, k in zip(m.dilation, m.kernel_size, strict=True)]
        pads = [[t // 2, t - t // 2] for t in totals]
    else:
        pads = [[int(p), int(p)] for p in m.padding]
    if not any(w for sides in pads for w in sides):
        return conv
    border = Lowered("pad", {"pads": pads, "mode": m.padding_mode}, suffix="pad")
    return border, Lowered(f"conv{n}d", attrs | {"padding": 0})


def _window(v: object) -> object:
    """A window of any rank as a spec writes it: one integer when all sides are equal, else the list."""
    sides = [int(x) for x in v] if isinstance(v, (list, tuple)) else [int(v)]
    return sides[0] if len(set(sides)) == 1 else sides


def _conv_transpose(m: nn.modules.conv._ConvTransposeNd, call: Call) -> Lowered:
    """``nn.ConvTranspose{1,2,3}d``; a forward given ``output_size`` is read by the output
    padding that gives the size it made (the traced output's)."""
    n = len(m.kernel_size)
    if m.padding_mode != "zeros":  # pragma: no cover - torch refuses any other for a transposed convolution
        raise Unsupported(f"padding_mode '{m.padding_mode}': the spec's conv_transpose{n}d pads with zeros")
    extra = [int(x) for x in m.output_padding]
    if (len(call.args) > 1 or "output_size" in call.kwargs) and call.out_shape is not None:
        sizes, out = call.in_shapes[0][2:], call.out_shape[2:]
        made = zip(sizes, m.kernel_size, m.stride, m.padding, m.dilation, strict=True)
        extra = [o - ((i - 1) * s - 2 * p + d * (k - 1) + 1) for o, (i, k, s, p, d) in zip(out, made, strict=True)]
    attrs = {
        "out": m.out_channels,
        "kernel": _window(m.kernel_size),
        "stride": _window(m.stride),
        "padding": _window(m.padding),
        "output_padding": _window(extra),
        "dilation": _window(m.dilation),
        "groups": m.groups,
        "bias": m.bias is not None,
    }
    return Lowered(f"conv_transpose{n}d", attrs)


def _batch_norm(m: nn.modules.batchnorm._BatchNorm, call: Call) -> Lowered:
    if not m.affine:
        raise Unsupported("affine=False: the spec's batch_norm has a weight and a bias")
    if not m.track_running_stats:
        raise Unsupported("track_running_stats=False: the spec's batch_norm keeps running statistics")
    if m.momentum is None:
        raise Unsupported("momentum=None (a cumulative average): the spec's batch_norm takes a momentum in [0, 1]")
    expected = 4 if isinstance(m, nn.BatchNorm2d) else 2
    if call.rank != expected:
        raise Unsupported(f"{type(m).__name__} of a {call.rank}-D input")
    return Lowered("batch_norm", {"eps": float(m.eps), "momentum": float(m.momentum)})


def _linear(m: nn.Linear, call: Call) -> Lowered:
    dim = "features" if call.rank == 2 else "last"
    return Lowered("linear", {"out": m.out_features, "bias": m.bias is not None, "dim": dim})


def _pool_common(m, what: str) -> dict:
    kernel = pair(m.kernel_size)
    stride = pair(m.stride if m.stride is not None else m.kernel_size)
    return {"kernel": kernel, "stride": stride, "padding": pair(m.padding), "ceil_mode": bool(m.ceil_mode)}


def _max_pool(m: nn.MaxPool2d, call: Call) -> Lowered:
    _map_input(call, "MaxPool2d")
    if pair(m.dilation) != 1:
        raise Unsupported("dilation: the spec's max_pool has none")
    if m.return_indices:
        raise Unsupported("return_indices=True")
    return Lowered("max_pool", _pool_common(m, "max_pool"))


def _avg_pool(m: nn.AvgPool2d, call: Call) -> Lowered:
    _map_input(call, "AvgPool2d")
    if m.divisor_override is not None:
        raise Unsupported("divisor_override: the spec's avg_pool divides by the window")
    return Lowered("avg_pool", {**_pool_common(m, "avg_pool"), "count_include_pad": bool(m.count_include_pad)})


def _adaptive(size: object, call: Call) -> Lowered:
    _map_input(call, "adaptive average pooling")
    sizes = size if isinstance(size, (list, tuple)) else (size, size)
    if any(s is None for s in sizes):
        raise Unsupported("an output size of None (keep that side): the spec's adaptive_avg_pool takes sizes")
    if tuple(sizes) == (1, 1):
        return Lowered("global_avg_pool")
    return Lowered("adaptive_avg_pool", {"size": pair(sizes)})


def _flatten_dims(start: int, end: int, call: Call) -> Lowered:
    """``flatten(start, end)`` of torch's axes: all but the batch is flat features, the
    default; a run of later axes (a map's positions into a sequence) says where."""
    first, last = _spec_axis(start, call), _spec_axis(end, call)
    if first == 0 and last == call.rank - 2:
        return Lowered("flatten")
    return Lowered("flatten", {"start": first} if last == call.rank - 2 else {"start": first, "end": last})


def _flatten_module(m: nn.Flatten, call: Call) -> Lowered:
    return _flatten_dims(m.start_dim, m.end_dim, call)


def _layer_norm(m: nn.LayerNorm, call: Call) -> Lowered:
    if not m.elementwise_affine or m.bias is None:
        raise Unsupported("a LayerNorm without a weight and a bias")
    if len(m.normalized_shape) != 1 or m.normalized_shape[0] != call.in_shapes[0][-1]:
        raise Unsupported(f"normalized_shape {tuple(m.normalized_shape)}: the spec normalises over the last axis")
    return Lowered("layer_norm", {"eps": float(m.eps), "dim": "last"})


def _layer_norm_2d(m: nn.LayerNorm, call: Call) -> Lowered:
    _map_input(call, "LayerNorm2d")
    if not m.elementwise_affine or m.bias is None:
        raise Unsupported("a LayerNorm2d without a weight and a bias")
    return Lowered("layer_norm", {"eps": float(m.eps), "dim": "channels"})


def _permute_dims(dims: object, call: Call) -> Lowered:
    dims = [int(d) % call.rank for d in dims]
    if dims[0] != 0:
        raise Unsupported(f"permute{tuple(dims)} moves the batch axis")
    return Lowered("permute", {"dims": [d - 1 for d in dims[1:]]})


def _softmax(dim: object, call: Call) -> Lowered:
    if dim is None:
        raise Unsupported("softmax without a dim: say which axis")
    return Lowered("softmax", _axis_attr(dim, call, "dim"))


def _dropout_p(p: float) -> Lowered:
    return Lowered("dropout", {"p": float(p)})


def _gelu(approximate: str) -> Lowered:
    return Lowered("gelu", {"approximate": approximate})


def _simple(op: str) -> Callable[..., Lowered]:
    return lambda *_: Lowered(op)


def _lrn(m: nn.LocalResponseNorm, call: Call) -> Lowered:
    _map_input(call, "LocalResponseNorm")
    return Lowered("lrn", {"size": m.size, "alpha": float(m.alpha), "beta": float(m.beta), "k": float(m.k)})


def _attention(m: nn.MultiheadAttention, call: Call) -> Lowered:
    """Self-attention over batch-first tokens: query, key and value one tensor, no masks."""
    if not m.batch_first:
        raise Unsupported("batch_first=False: the spec's attention reads batch-first tokens (N, L, C)")
    if not m._qkv_same_embed_dim or m.kdim != m.embed_dim or m.vdim != m.embed_dim:
        raise Unsupported("kdim or vdim other than embed_dim: the spec's attention projects one tensor")
    if m.bias_k is not None or m.add_zero_attn:
        raise Unsupported("add_bias_kv or add_zero_attn: the spec's attention has neither")
    if m.in_proj_bias is None and m.out_proj.bias is not None:  # pragma: no cover - torch ties them
        raise Unsupported("an output bias without input biases")
    query = call.arg(0, "query")
    if call.arg(1, "key") is not query or call.arg(2, "value") is not query:
        raise Unsupported("key or value other than the query: the spec's attention is self-attention")
    for name, index in (("key_padding_mask", 3), ("attn_mask", 5)):
        if call.arg(index, name, None) is not None:
            raise Unsupported(f"a {name}: the spec's attention takes none")
    if call.arg(7, "is_causal", False):
        raise Unsupported("is_causal=True: the spec's attention is not causal")
    if call.rank != 3:
        raise Unsupported(f"attention over a {call.rank - 1}-D input: the spec's attention reads tokens (L, C)")
    return Lowered("attention", {"heads": m.num_heads, "dropout": float(m.dropout), "bias": m.in_proj_bias is not None})


def _stochastic_depth(m, call: Call) -> Lowered:
    return Lowered("stochastic_depth", {"p": float(m.p), "mode": m.mode})


MODULES: dict[type, Callable[..., Lowered | tuple[Lowered, ...]]] = {
    nn.Conv1d: _conv,
    nn.Conv2d: _conv,
    nn.Conv3d: _conv,
    nn.ConvTranspose1d: _conv_transpose,
    nn.ConvTranspose2d: _conv_transpose,
    nn.ConvTranspose3d: _conv_transpose,
    nn.BatchNorm2d: _batch_norm,
    nn.BatchNorm1d: _batch_norm,
    nn.Linear: _linear,
    nn.ReLU: _simple("relu"),
    nn.ReLU6: _simple("relu6"),
    nn.Sigmoid: _simple("sigmoid"),
    nn.Tanh: _simple("tanh"),
    nn.SiLU: _simple("silu"),
    nn.Hardswish: _simple("hardswish"),
    nn.Hardsigmoid: _simple("hardsigmoid"),
    nn.GELU: lambda m, call: _gelu(m.approximate),
    nn.MaxPool2d: _max_pool,
    nn.AvgPool2d: _avg_pool,
    nn.AdaptiveAvgPool2d: lambda m, call: _adaptive(m.output_size, call),
    nn.Dropout: lambda m, call: _dropout_p(m.p),
    nn.Flatten: _flatten_module,
    nn.LayerNorm: _layer_norm,
    nn.Softmax: lambda m, call: _softmax(m.dim, call),
    nn.LocalResponseNorm: _lrn,
    nn.Identity: _simple("identity"),
    nn.MultiheadAttention: _attention,
}


def _window_attention(m, call: Call, version: int) -> Lowered:
    """torchvision's ShiftedWindowAttention (V2: version 2) over a channels-last map."""
    if call.rank != 4:
        raise Unsupported(f"window attention over a {call.rank - 1}-D input: expected a channels-last map (H, W, C)")
    attrs = {
        "heads": m.num_heads,
        "window": [int(w) for w in m.window_size],
        "shift": pair(m.shift_size),
        "version": version,
        "qkv_bias": m.qkv.bias is not None,
        "proj_bias": m.proj.bias is not None,
        "attention_dropout": float(m.attention_dropout),
        "dropout": float(m.dropout),
    }
    return Lowered("window_attention", attrs)


def _patch_merging(m, call: Call, norm: str) -> Lowered:
    """torchvision's PatchMerging (norm before the reduction) and PatchMergingV2 (after)."""
    if call.rank != 4:
        raise Unsupported(f"patch merging of a {call.rank - 1}-D input: expected a channels-last map (H, W, C)")
    if type(m.norm) is not nn.LayerNorm or not m.norm.elementwise_affine or m.norm.bias is None:
        raise Unsupported(f"a norm_layer {type(m.norm).__name__}: the spec's patch_merging has an affine LayerNorm")
    if m.reduction.bias is not None:  # pragma: no cover - torchvision's has none
        raise Unsupported("a reduction with a bias")
    return Lowered("patch_merging", {"out": m.reduction.out_features, "norm": norm, "eps": float(m.norm.eps)})


def _partition_attention(m, call: Call) -> Lowered:
    """torchvision's MaxViT RelativePositionalMultiHeadAttention over tokens (..., L, C) of
    partitions of ``size`` x ``size`` positions, its keys scaled by ``C ** -0.5``."""
    tokens = call.in_shapes[0][1:]
    channels = tokens[-1]
    if m.max_seq_len != m.size * m.size:
        raise Unsupported(f"max_seq_len {m.max_seq_len} is no square: the spec's partitions are size x size")
    if len(tokens) < 2 or tokens[-2] != m.max_seq_len:
        raise Unsupported(f"tokens of shape {list(tokens)}: expected (..., {m.max_seq_len}, C)")
    if m.n_heads * m.head_dim != channels:
        raise Unsupported(f"{m.n_heads} heads of {m.head_dim} features on {channels}: the spec's heads share them")
    if m.scale_factor != channels**-0.5:
        raise Unsupported(
            f"keys scaled by {m.scale_factor:.6g}: the spec's partition_attention scales them by the feature "
            f"size's {channels} ** -0.5 = {channels**-0.5:.6g}, as torchvision builds it"
        )
    if m.to_qkv.bias is None or m.merge.bias is None:  # pragma: no cover - torchvision's have biases
        raise Unsupported("projections without biases: the spec's partition_attention has them")
    return Lowered("partition_attention", {"head_dim": m.head_dim, "size": m.size})


def _sizes(call: Call, *args: tuple[int, str]) -> list[int]:
    """Arguments that must be sizes known at the traced input (a partition's side)."""
    values = [call.arg(k, name) for k, name in args]
    for (_, name), v in zip(args, values, strict=True):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise Unsupported(f"{name}={v!r}: expected a size (an integer, known at the traced input)")
    return values


def _window_partition(m, call: Call) -> tuple[Lowered, ...]:
    """torchvision's MaxViT WindowPartition: a (C, H, W) map cut into p x p squares, tokens
    (H / p * W / p, p * p, C): the squares a sequence, the positions in each another."""
    _map_input(call, "WindowPartition")
    (p,) = _sizes(call, (1, "p"))
    channels, height, width = call.in_shapes[0][1:]
    if height % p or width % p:  # pragma: no cover - torchvision asserts it first
        raise Unsupported(f"a map of {height}x{width} cut into squares of {p}: the sides must divide")
    rows, cols = height // p, width // p
    return (
        Lowered("reshape", {"shape": [channels, rows, p, cols, p]}),
        Lowered("permute", {"dims": [1, 3, 2, 4, 0]}, suffix="permute"),
        Lowered("reshape", {"shape": [rows * cols, p * p, channels], "axes": "LLC"}, suffix="tokens"),
    )


def _window_departition(m, call: Call) -> tuple[Lowered, ...]:
    """torchvision's MaxViT WindowDepartition, WindowPartition's inverse: tokens (h * w, p * p,
    C) of an h x w grid of p x p squares back into a (C, h * p, w * p) map."""
    p, rows, cols = _sizes(call, (1, "p"), (2, "h_partitions"), (3, "w_partitions"))
    shape = call.in_shapes[0][1:]
    if len(shape) != 3 or shape[:2] != (rows * cols, p * p):
        raise Unsupported(f"tokens of shape {list(shape)}: expected ({rows * cols}, {p * p}, C)")
    channels = shape[2]
    return (
        Lowered("reshape", {"shape": [rows, cols, p, p, channels]}),
        Lowered("permute", {"dims": [4, 0, 2, 1, 3]}, suffix="permute"),
        Lowered("reshape", {"shape": [channels, rows * p, cols * p], "axes": "CHW"}, suffix="map"),
    )


def _torchvision_modules() -> None:
    """torchvision's own layers, when torchvision is installed (it is optional)."""
    try:
        from torchvision.models.convnext import LayerNorm2d
        from torchvision.models.maxvit import (
            RelativePositionalMultiHeadAttention,
            SwapAxes,
            WindowDepartition,
            WindowPartition,
        )
        from torchvision.models.swin_transformer import (
            PatchMerging,
            PatchMergingV2,
            ShiftedWindowAttention,
            ShiftedWindowAttentionV2,
        )
        from torchvision.ops import StochasticDepth
        from torchvision.ops.misc import Permute
    except ImportError:  # pragma: no cover - torchvision is a test dependency
        return
    MODULES[LayerNorm2d] = _layer_norm_2d
    MODULES[Permute] = lambda m, call: _permute_dims(m.dims, call)
    MODULES[StochasticDepth] = _stochastic_depth
    MODULES[ShiftedWindowAttention] = lambda m, call: _window_attention(m, call, 1)
    MODULES[ShiftedWindowAttentionV2] = lambda m, call: _window_attention(m, call, 2)
    MODULES[PatchMerging] = lambda m, call: _patch_merging(m, call, "before")
    MODULES[PatchMergingV2] = lambda m, call: _patch_merging(m, call, "after")
    MODULES[RelativePositionalMultiHeadAttention] = _partition_attention
    MODULES[SwapAxes] = lambda m, call: _swap(m.a, m.b, call)
    MODULES[WindowPartition] = _window_partition
    MODULES[WindowDepartition] = _window_departition


_torchvision_modules()


# -- functions and methods -----------------------------------------------------------------


def _cat(call: Call) -> Lowered:
    return Lowered("concat", _axis_attr(call.arg(1, "dim", 0), call, "axis"))


def _binary(op: str) -> Callable[[Call], Lowered]:
    """Two tensors joined (a tensor and a number are the reader's: ``constant`` and the op)."""

    def handler(call: Call) -> Lowered:
        alpha = call.kwargs.get("alpha", 1)
        if alpha != 1:
            raise Unsupported(f"{op} with alpha={alpha!r}: the spec's {op} joins its inputs as they are")
        if len(call.in_shapes) != 2:
            raise Unsupported(f"{op} with a constant: the spec's {op} joins two tensors")
        return Lowered(op)

    return handler


def _padding(pad: object, value: object, mode: str) -> Lowered:
    """``F.pad``'s widths, (left, right, top, bottom, ...) from the last axis back, as the
    spec's ``pads``, one [before, after] pair per axis from the first padded one on."""
    if mode not in ("constant", "reflect", "replicate", "circular"):
        raise Unsupported(f"mode '{mode}': the spec's pad is constant, reflect, replicate or circular")
    widths = [int(w) for w in pad]
    if len(widths) % 2 or any(w < 0 for w in widths):
        raise Unsupported(f"pad {tuple(widths)}: the spec's pad takes pairs of widths of 0 or more")
    pairs = [widths[k : k + 2] for k in range(0, len(widths), 2)]
    if mode != "constant":
        return Lowered("pad", {"pads": pairs[::-1], "mode": mode})
    return Lowered("pad", {"pads": pairs[::-1], **({"value": float(value)} if value else {})})


def _f_pad(call: Call) -> Lowered:
    value = call.arg(3, "value", None)
    return _padding(call.arg(1, "pad"), 0.0 if value is None else value, call.arg(2, "mode", "constant"))


def _pad_module(m: nn.Module, call: Call) -> Lowered:
    return _padding(m.padding, getattr(m, "value", 0.0), "constant")


def _squeeze_call(call: Call) -> Lowered:
    """``x.squeeze(dim)``, ``x.unsqueeze(dim)``: axes of size 1 taken or put, a reshape; a
    squeeze without a dim would take the batch's too where it is 1."""
    dim = call.arg(1, "dim", None)
    dims = dim if isinstance(dim, (list, tuple)) else [dim]
    if dim is None or any(not isinstance(d, int) or isinstance(d, bool) for d in dims):
        raise Unsupported("a squeeze without a dim: it would take the batch's axis too where the batch is 1")
    rank = max(call.rank, len(call.out_shape or ()))
    if any(int(d) % rank == 0 for d in dims):
        raise Unsupported("an axis of the batch taken or put: the spec's ops work on each sample")
    return Lowered("reshape", {"shape": list(call.out_shape[1:])})


def _same_dtype(call: Call) -> Lowered:
    """``x.float()``, ``x.clone()``: the tensor as it is (a spec computes in float32)."""
    if call.kwargs.get("memory_format") is not None:
        raise Unsupported("a memory format: the spec's tensors have one")
    return Lowered("identity")


def _matmul(call: Call) -> Lowered:
    if len(call.in_shapes) != 2 or min(len(s) for s in call.in_shapes) < 3:
        raise Unsupported("a matrix product of other than two tensors of 2 or more axes beside the batch")
    return Lowered("matmul")


def _flatten_call(call: Call) -> Lowered:
    start = int(call.arg(1, "start_dim", 0))
    end = int(call.arg(2, "end_dim", -1))
    if start % call.rank == 0:
        raise Unsupported(f"flatten({start}, {end}): the spec's flatten keeps the batch alone")
    return _flatten_dims(start, end, call)


def _swap(dim0: object, dim1: object, call: Call) -> Lowered:
    a, b = _spec_axis(dim0, call), _spec_axis(dim1, call)
    return Lowered("transpose", {"axis0": min(a, b), "axis1": max(a, b)})


def _transpose_call(call: Call) -> Lowered:
    return _swap(call.arg(1, "dim0"), call.arg(2, "dim1"), call)


def _swapaxes_call(call: Call) -> Lowered:
    return _swap(call.arg(1, "axis0"), call.arg(2, "axis1"), call)


def _mean(call: Call) -> tuple[Lowered, ...] | Lowered:
    if call.kwargs.get("dtype") is not None:
        raise Unsupported("a mean with a dtype: the spec computes in float32")
    dims = call.arg(1, "dim", None)
    if dims is None:
        raise Unsupported("a mean over every axis, the batch's too: the spec's ops work on each sample")
    keep = bool(call.arg(2, "keepdim", False))
    dims = sorted(int(d) % call.rank for d in (dims if isinstance(dims, (list, tuple)) else [dims]))
    if call.rank != 4 or dims != [2, 3]:
        raise Unsupported(f"a mean over axes {dims}: the spec has the mean over all positions (axes 2 and 3)")
    return Lowered("global_avg_pool") if keep else (Lowered("global_avg_pool"), Lowered("flatten", suffix="flatten"))


def _f_avg_pool(call: Call) -> Lowered:
    _map_input(call, "avg_pool2d")
    if call.arg(6, "divisor_override", None) is not None:
        raise Unsupported("divisor_override: the spec's avg_pool divides by the window")
    kernel = call.arg(1, "kernel_size")
    stride = call.arg(2, "stride", None) or kernel
    attrs = {
        "kernel": pair(kernel),
        "stride": pair(stride),
        "padding": pair(call.arg(3, "padding", 0)),
        "ceil_mode": bool(call.arg(4, "ceil_mode", False)),
        "count_include_pad": bool(call.arg(5, "count_include_pad", True)),
    }
    return Lowered("avg_pool", attrs)


def _f_max_pool(call: Call) -> Lowered:
    _map_input(call, "max_pool2d")
    if pair(call.arg(4, "dilation", 1)) != 1:
        raise Unsupported("dilation: the spec's max_pool has none")
    if call.arg(6, "return_indices", False):
        raise Unsupported("return_indices=True")
    kernel = call.arg(1, "kernel_size")
    stride = call.arg(2, "stride", None) or kernel
    attrs = {
        "kernel": pair(kernel),
        "stride": pair(stride),
        "padding": pair(call.arg(3, "padding", 0)),
        "ceil_mode": bool(call.arg(5, "ceil_mode", False)),
    }
    return Lowered("max_pool", attrs)


def _f_dropout(call: Call) -> Lowered:
    if not call.arg(2, "training", True):
        return Lowered("identity")
    return _dropout_p(call.arg(1, "p", 0.5))


def _f_gelu(call: Call) -> Lowered:
    return _gelu(call.arg(1, "approximate", "none"))


_RESIZE_MODES = {3: ("nearest", "linear"), 4: ("nearest", "bilinear"), 5: ("nearest", "trilinear")}


def _interpolation(call: Call, size, scale, mode, align_corners, recompute, antialias) -> Lowered:
    """``F.interpolate``'s and ``nn.Upsample``'s arguments as ``interpolate``: a size as given (one
    integer or one per side; a size read from a tensor's shape is evaluated at the traced size),
    a scale as given where the sides share it (PyTorch maps positions by it), scales per side as
    the sizes where those map the positions alike (2 and 3 on whole sides), and the sizes a scale
    gives where the call asks that they be used instead (``recompute_scale_factor=True``)."""
    modes = _RESIZE_MODES.get(call.rank)
    if modes is None:
        raise Unsupported(
            f"interpolation of a {call.rank - 1}-D input: the spec's interpolate takes maps (C, L) to (C, T, H, W)"
        )
    if mode not in modes:
        raise Unsupported(f"mode '{mode}' of a {call.rank - 2}-D map: the spec's interpolate does {', '.join(modes)}")
    if antialias:
        raise Unsupported("antialias=True: the spec's interpolate does not filter")
    attrs: dict = {"mode": mode}
    if mode != "nearest" and align_corners:
        attrs["align_corners"] = True
    ins, outs = [int(d) for d in call.in_shapes[0][2:]], [int(d) for d in call.out_shape[2:]]
    if scale is None or recompute:  # the size given, or the one the scale gave
        sizes = outs if size is None else size
        attrs["size"] = [int(s) for s in sizes] if isinstance(sizes, (list, tuple)) else int(sizes)
        return Lowered("interpolate", attrs)
    scales = [float(s) for s in scale] if isinstance(scale, (list, tuple)) else [float(scale)] * len(ins)
    computes = resize.same_as_pytorch_scales(ins, outs, scales, mode, bool(attrs.get("align_corners")))
    found = resize.spec_resize(ins, outs, scales[0] if len(set(scales)) == 1 else None, computes)
    if found is None:
        raise Unsupported(
            f"scale factors {scales}: the spec's interpolate takes one scale, and the sizes {outs} would map "
            "the positions by other ratios"
        )
    attrs.update(found)
    return Lowered("interpolate", attrs)


def _f_interpolate(call: Call) -> Lowered:
    """``F.interpolate`` to ``interpolate`` (:func:`_interpolation`)."""
    return _interpolation(
        call,
        call.arg(1, "size", None),
        call.arg(2, "scale_factor", None),
        call.arg(3, "mode", "nearest"),
        call.arg(4, "align_corners", None),
        call.arg(5, "recompute_scale_factor", None),
        call.arg(6, "antialias", False),
    )


def _upsample(m: nn.Upsample, call: Call) -> Lowered:
    """``nn.Upsample`` to ``interpolate`` (:func:`_interpolation`): its forward is ``F.interpolate``
    with the module's settings."""
    return _interpolation(call, m.size, m.scale_factor, m.mode, m.align_corners, m.recompute_scale_factor, False)


MODULES[nn.Upsample] = _upsample
MODULES[nn.ZeroPad2d] = _pad_module
MODULES[nn.ConstantPad2d] = _pad_module


def _channel_shuffle(call: Call) -> Lowered:
    _map_input(call, "channel_shuffle")
    return Lowered("channel_shuffle", {"groups": int(call.arg(1, "groups"))})


def _permute_call(call: Call) -> Lowered:
    rest = call.args[1:]
    dims = rest[0] if len(rest) == 1 and isinstance(rest[0], (list, tuple)) else rest or call.kwargs.get("dims", ())
    return _permute_dims(dims, call)


def _reshape(call: Call) -> Lowered:
    """``x.reshape(n, c, h * w)`` with the sizes evaluated (:mod:`nasdsl.importer.torch_shapes`):
    a merge of neighbouring axes is a flatten from ``start`` to ``end``, anything else a reshape."""
    sizes = call.args[1:] or call.kwargs.get("shape", ())
    if len(sizes) == 1 and isinstance(sizes[0], (list, tuple)):
        sizes = sizes[0]
    if sizes and sizes[0] == -1 and all(isinstance(s, int) and s > 0 for s in sizes[1:]):
        per_sample = 1
        for d in call.in_shapes[0][1:]:
            per_sample *= d
        rest = 1
        for d in sizes[1:]:
            rest *= d
        if rest == per_sample:  # x.view(-1, c * h * w): the -1 is the batch
            sizes = (Batch(None), *sizes[1:])
    if not sizes or not isinstance(sizes[0], Batch):
        raise Unsupported("a reshape whose first size is not the batch size (x.shape[0]): the spec's reshape keeps it")
    if any(isinstance(s, Batch) for s in sizes[1:]):
        raise Unsupported("the batch size as a size other than the first")
    old, new = list(call.in_shapes[0][1:]), list(call.out_shape[1:])
    start = next((k for k, (a, b) in enumerate(zip(old, new, strict=False)) if a != b), min(len(old), len(new)))
    merged = len(old) - len(new) + 1
    if 0 < merged and old[:start] == new[:start] and old[start + merged :] == new[start + 1 :]:
        if merged == 1:
            return Lowered("identity")
        end = start + merged - 1
        return Lowered("flatten", {"start": start} if end == len(old) - 1 else {"start": start, "end": end})
    return Lowered("reshape", {"shape": new})


def _index(call: Call) -> Lowered:
    """``x[:, 0]``, ``x[..., -1]``: one position along one axis (the batch kept whole) is a
    select; ``x[:, 2:6]``, ``x[..., ::2]``: a run of positions along one axis is a slice;
    ``x[:, :, None, None]``: axes of size 1 put after the batch, a reshape."""
    index = call.args[1]
    index = index if isinstance(index, tuple) else (index,)
    if call.in_shapes and sum(i is Ellipsis for i in index) == 1:
        at = index.index(Ellipsis)
        index = index[:at] + (slice(None),) * (call.rank - len(index) + 1) + index[at + 1 :]
    full = slice(None, None, None)
    if None in index and index[0] == full and all(i is None or i == full for i in index):
        return Lowered("reshape", {"shape": list(call.out_shape[1:])})  # x[:, :, None, None]: axes of 1 put
    taken = [k for k, i in enumerate(index) if i != full]
    refused = Unsupported(
        f"indexing with {index!r}: the spec takes one position (select) or runs of positions (slice) along axes "
        "other than the batch"
    )
    if not taken or taken[0] == 0 or len(index) > call.rank:
        raise refused
    item = index[taken[0]]
    if len(taken) == 1 and isinstance(item, int) and not isinstance(item, bool):
        return Lowered("select", {"axis": taken[0] - 1, "index": item})
    steps = []
    for axis in taken:  # x[..., ::2, 1::2]: a slice along each axis, one after the other
        item = index[axis]
        if not isinstance(item, slice) or not all(
            type(v) is int or v is None for v in (item.start, item.stop, item.step)
        ):
            raise refused
        length = call.in_shapes[0][axis]
        start, stop, step = item.indices(length)
        if step < 1 or start >= stop:
            raise refused
        if start == 0 and stop >= length and step == 1:
            continue  # x[:, 0:100] of 6 channels: all of them
        attrs = {**_axis_attr(axis, call, "axis"), "start": start}
        if stop < length:
            attrs["stop"] = stop
        if step != 1:
            attrs["step"] = step
        steps.append(Lowered("slice", attrs, suffix=f"axis{axis - 1}" if steps else ""))
    return tuple(steps) if len(steps) > 1 else steps[0] if steps else Lowered("identity")


FUNCTIONS: dict[object, Callable[[Call], Lowered | tuple[Lowered, ...]]] = {
    torch.cat: _cat,
    torch.concat: _cat,
    operator.add: _binary("add"),
    operator.iadd: _binary("add"),
    torch.add: _binary("add"),
    operator.mul: _binary("mul"),
    operator.imul: _binary("mul"),
    torch.mul: _binary("mul"),
    operator.matmul: _matmul,
    torch.matmul: _matmul,
    torch.bmm: _matmul,
    torch.mean: _mean,
    F.pad: _f_pad,
    torch.squeeze: _squeeze_call,
    torch.unsqueeze: _squeeze_call,
    torch.flatten: _flatten_call,
    torch.permute: _permute_call,
    torch.reshape: _reshape,
    torch.transpose: _transpose_call,
    torch.swapaxes: _swapaxes_call,
    operator.getitem: _index,
    F.relu: _simple("relu"),
    torch.relu: _simple("relu"),
    F.relu6: _simple("relu6"),
    torch.sigmoid: _simple("sigmoid"),
    F.sigmoid: _simple("sigmoid"),
    torch.tanh: _simple("tanh"),
    F.silu: _simple("silu"),
    F.hardswish: _simple("hardswish"),
    F.hardsigmoid: _simple("hardsigmoid"),
    F.gelu: _f_gelu,
    F.dropout: _f_dropout,
    F.avg_pool2d: _f_avg_pool,
    F.max_pool2d: _f_max_pool,
    F.adaptive_avg_pool2d: lambda call: _adaptive(call.arg(1, "output_size"), call),
    F.softmax: lambda call: _softmax(call.arg(1, "dim", None), call),
    F.interpolate: _f_interpolate,
    torch.softmax: lambda call: _softmax(call.arg(1, "dim", None), call),
}

METHODS: dict[str, Callable[[Call], Lowered | tuple[Lowered, ...]]] = {
    "flatten": _flatten_call,
    "mean": _mean,
    "relu": _simple("relu"),
    "sigmoid": _simple("sigmoid"),
    "tanh": _simple("tanh"),
    "permute": _permute_call,
    "add": _binary("add"),
    "mul": _binary("mul"),
    "contiguous": _simple("identity"),
    "reshape": _reshape,
    "transpose": _transpose_call,
    "swapaxes": _swapaxes_call,
    "view": _reshape,
    "matmul": _matmul,
    "squeeze": _squeeze_call,
    "unsqueeze": _squeeze_call,
    "float": _same_dtype,
    "clone": _same_dtype,
    "softmax": lambda call: _softmax(call.arg(1, "dim", None), call),
}
#: a method's in-place form (``y.add_(x)``, ``x.relu_()``) computes what the method does; the
#: reader makes later reads of the tensor it changes read its result
METHODS.update({f"{name}_": METHODS[name] for name in ("relu", "sigmoid", "tanh", "add", "mul")})


def _number(call: Call, index: int, name: str, default: float) -> float:
    """A number argument of a function (a slope): one the traced call gives as a constant."""
    v = call.arg(index, name, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise Unsupported(f"{name}={v!r}: expected a number known when the model is traced")
    return float(v)


def _prelu(m: nn.PReLU, call: Call) -> Lowered:
    if m.num_parameters == 1:
        return Lowered("prelu", {"per_channel": False})
    if call.rank < 2 or call.in_shapes[0][1] != m.num_parameters:  # pragma: no cover - torch refuses it first
        raise Unsupported(f"{m.num_parameters} slopes for an input of shape {list(call.in_shapes[0])}")
    return Lowered("prelu")


def _group_norm(m: nn.GroupNorm, call: Call) -> Lowered:
    return Lowered("group_norm", {"groups": m.num_groups, "eps": float(m.eps), "affine": bool(m.affine)})


def _instance_norm(m: nn.modules.instancenorm._InstanceNorm, call: Call) -> Lowered:
    expected = {nn.InstanceNorm1d: 3, nn.InstanceNorm2d: 4, nn.InstanceNorm3d: 5}[type(m)]
    if call.rank != expected:
        raise Unsupported(f"{type(m).__name__} of a {call.rank}-D input (an unbatched one)")
    if m.track_running_stats and m.momentum is None:
        raise Unsupported("momentum=None (a cumulative average): the spec's instance_norm takes a momentum in [0, 1]")
    attrs = {"eps": float(m.eps), "affine": bool(m.affine), "track_running_stats": bool(m.track_running_stats)}
    if m.momentum is not None:
        attrs["momentum"] = float(m.momentum)
    return Lowered("instance_norm", attrs)


MODULES.update(
    {
        nn.LeakyReLU: lambda m, call: Lowered("leaky_relu", {"negative_slope": float(m.negative_slope)}),
        nn.ELU: lambda m, call: Lowered("elu", {"alpha": float(m.alpha)}),
        nn.PReLU: _prelu,
        nn.GroupNorm: _group_norm,
        nn.InstanceNorm1d: _instance_norm,
        nn.InstanceNorm2d: _instance_norm,
        nn.InstanceNorm3d: _instance_norm,
    }
)
FUNCTIONS.update(
    {
        F.leaky_relu: lambda call: Lowered("leaky_relu", {"negative_slope": _number(call, 1, "negative_slope", 0.01)}),
        F.elu: lambda call: Lowered("elu", {"alpha": _number(call, 1, "alpha", 1.0)}),
    }
)


# -- functions given a module's parameters as their weights ---------------------------------


def _held_shape(value: object, name: str) -> tuple[int, ...]:
    """The shape of a tensor argument: an fx node the example input ran."""
    meta = value.meta.get("tensor_meta") if hasattr(value, "meta") else None
    if not hasattr(meta, "shape"):
        raise Unsupported(f"{name}={value!r}: expected a tensor")
    return tuple(int(d) for d in meta.shape)


def _affine_pair(call: Call, at: tuple[int, int], op: str) -> dict:
    """A norm's ``weight`` and ``bias`` arguments: both (``affine``) or neither, as the spec's op holds them."""
    weight, bias = call.arg(at[0], "weight", None), call.arg(at[1], "bias", None)
    if (weight is None) != (bias is None):
        given = "a weight without a bias" if bias is None else "a bias without a weight"
        raise Unsupported(f"{given}: the spec's {op} holds both (affine) or neither")
    return {"weight": weight, "bias": bias}


def _whole(call: Call, index: int, name: str, default: object = _MISSING) -> int:
    v = call.arg(index, name, default)
    if isinstance(v, bool) or not isinstance(v, int):
        raise Unsupported(f"{name}={v!r}: expected a whole number known when the model is traced")
    return v


def _f_prelu(call: Call) -> tuple[Lowered, dict]:
    """``F.prelu(x, weight)``: one slope for all where the weight holds one (``per_channel: false``), else one per
    channel (the shapes are checked against the spec's own when the node is added)."""
    weight = call.arg(1, "weight")
    size = 1
    for d in _held_shape(weight, "weight"):
        size *= d
    return Lowered("prelu", {} if size != 1 else {"per_channel": False}), {"weight": weight}


def _f_group_norm(call: Call) -> tuple[Lowered, dict]:
    held = _affine_pair(call, (2, 3), "group_norm")
    attrs = {"groups": _whole(call, 1, "num_groups"), "eps": _number(call, 4, "eps", 1e-5)}
    return Lowered("group_norm", attrs | ({} if held["weight"] is not None else {"affine": False})), held


def _f_instance_norm(call: Call) -> tuple[Lowered, dict]:
    """``F.instance_norm`` normalising by each sample's statistics; running statistics handed to the function are
    refused: the spec's ``instance_norm`` keeps them as ``nn.InstanceNorm2d(track_running_stats=True)`` does."""
    if call.arg(1, "running_mean", None) is not None or call.arg(2, "running_var", None) is not None:
        raise Unsupported(
            "running statistics given to the function: the spec's instance_norm keeps them as "
            "nn.InstanceNorm1d/2d/3d(track_running_stats=True) does (running_mean, running_var and "
            "num_batches_tracked, used at inference): call such a module instead"
        )
    if call.arg(5, "use_input_stats", True) is not True:  # pragma: no cover - torch refuses it without statistics
        raise Unsupported("use_input_stats other than True: the spec's instance_norm normalises by each sample's")
    held = _affine_pair(call, (3, 4), "instance_norm")
    attrs = {"eps": _number(call, 7, "eps", 1e-5), "affine": held["weight"] is not None}
    return Lowered("instance_norm", attrs), held


def _f_conv_transpose(n: int) -> Callable[[Call], tuple[Lowered, dict]]:
    """``F.conv_transpose{n}d(x, weight, bias, stride, padding, output_padding, groups, dilation)``."""

    def handler(call: Call) -> tuple[Lowered, dict]:
        if call.rank != n + 2:
            raise Unsupported(f"conv_transpose{n}d of a {call.rank - 1}-D input: expected a batch of {n}-D maps")
        weight, bias = call.arg(1, "weight"), call.arg(2, "bias", None)
        shape = _held_shape(weight, "weight")
        groups = _whole(call, 6, "groups", 1)
        attrs = {
            "out": shape[1] * groups,
            "kernel": _window(shape[2:]),
            "stride": _window(call.arg(3, "stride", 1)),
            "padding": _window(call.arg(4, "padding", 0)),
            "output_padding": _window(call.arg(5, "output_padding", 0)),
            "dilation": _window(call.arg(7, "dilation", 1)),
            "groups": groups,
            "bias": bias is not None,
        }
        return Lowered(f"conv_transpose{n}d", attrs), {"weight": weight, "bias": bias}

    return handler


def _f_conv(n: int) -> Callable[[Call], tuple[Lowered, dict]]:
    """``F.conv{n}d(x, weight, bias, stride, padding, dilation, groups)``: padding as numbers or
    ``same`` / ``valid``, zeros as the function pads."""

    def handler(call: Call) -> tuple[Lowered, dict]:
        if call.rank != n + 2:
            raise Unsupported(f"conv{n}d of a {call.rank - 1}-D input: expected a batch of {n}-D maps")
        weight, bias = call.arg(1, "weight"), call.arg(2, "bias", None)
        shape = _held_shape(weight, "weight")
        padding = call.arg(4, "padding", 0)
        attrs = {
            "out": shape[0],
            "kernel": _window(shape[2:]),
            "stride": _window(call.arg(3, "stride", 1)),
            "padding": padding if isinstance(padding, str) else _window(padding),
            "dilation": _window(call.arg(5, "dilation", 1)),
            "groups": _whole(call, 6, "groups", 1),
            "bias": bias is not None,
        }
        return Lowered(f"conv{n}d", attrs), {"weight": weight, "bias": bias}

    return handler


def _f_linear(call: Call) -> tuple[Lowered, dict]:
    """``F.linear(x, weight, bias)``: over flat features, or the last axis of tokens."""
    weight, bias = call.arg(1, "weight"), call.arg(2, "bias", None)
    shape = _held_shape(weight, "weight")
    if len(shape) != 2:
        raise Unsupported(f"a weight of shape {list(shape)}: the spec's linear holds one of (out, in)")
    attrs = {"out": shape[0], "bias": bias is not None, "dim": "features" if call.rank == 2 else "last"}
    return Lowered("linear", attrs), {"weight": weight, "bias": bias}


def _f_batch_norm(call: Call) -> tuple[Lowered, dict]:
    """``F.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)`` as
    ``nn.BatchNorm2d`` calls it: the batch's statistics in training, the running ones at
    inference (``training=self.training``), a weight and a bias."""
    training = call.arg(5, "training", False)
    if training is not call.training:
        said = "training=True at inference too" if training else "training=False in training too"
        raise Unsupported(
            f"{said}: the spec's batch_norm normalises by the batch's statistics in training and by its running "
            "statistics at inference (pass training=self.training)"
        )
    held = {
        "running_mean": call.arg(1, "running_mean"),
        "running_var": call.arg(2, "running_var"),
        **_affine_pair(call, (3, 4), "batch_norm"),
    }
    if held["running_mean"] is None or held["running_var"] is None:
        raise Unsupported("no running statistics: the spec's batch_norm keeps them, used at inference")
    if held["weight"] is None:
        raise Unsupported("no weight and bias: the spec's batch_norm holds both (affine)")
    momentum = _number(call, 6, "momentum", 0.1)
    if not 0.0 <= momentum <= 1.0:
        raise Unsupported(f"momentum={momentum}: the spec's batch_norm takes a momentum in [0, 1]")
    return Lowered("batch_norm", {"eps": _number(call, 7, "eps", 1e-5), "momentum": momentum}), held


def _f_layer_norm(call: Call) -> tuple[Lowered, dict]:
    """``F.layer_norm(x, normalized_shape, weight, bias, eps)`` over the last axis, with a weight and a bias."""
    sizes = call.arg(1, "normalized_shape")
    sizes = [sizes] if isinstance(sizes, int) else list(sizes) if isinstance(sizes, (list, tuple)) else sizes
    if sizes != [call.in_shapes[0][-1]]:
        raise Unsupported(f"normalized_shape {sizes!r}: the spec's layer_norm normalises over the last axis alone")
    held = _affine_pair(call, (2, 3), "layer_norm")
    if held["weight"] is None:
        raise Unsupported("no weight and bias: the spec's layer_norm holds both")
    return Lowered("layer_norm", {"eps": _number(call, 4, "eps", 1e-5), "dim": "last"}), held


#: functions that read a module's parameters as their weights (``F.prelu(x, self.weight)``) to
#: ``handler(call) -> (Lowered, {suffix: argument})``: the tensor arguments (fx nodes, or None where
#: not given) that are the op's weights under the names it holds them by. The reader makes the call
#: the layer of the module holding them (:meth:`nasdsl.importer.torch_frontend._Reader.layer_function`).
LAYER_FUNCTIONS: dict[object, Callable[[Call], tuple[Lowered, dict]]] = {
    F.prelu: _f_prelu,
    F.group_norm: _f_group_norm,
    F.instance_norm: _f_instance_norm,
    F.conv_transpose1d: _f_conv_transpose(1),
    F.conv_transpose2d: _f_conv_transpose(2),
    F.conv_transpose3d: _f_conv_transpose(3),
    F.conv1d: _f_conv(1),
    F.conv2d: _f_conv(2),
    F.conv3d: _f_conv(3),
    F.linear: _f_linear,
    F.batch_norm: _f_batch_norm,
    F.layer_norm: _f_layer_norm,
}


def _torchvision_functions() -> None:
    try:
        from torchvision.models.shufflenetv2 import channel_shuffle
    except ImportError:  # pragma: no cover
        return
    FUNCTIONS[channel_shuffle] = _channel_shuffle


_torchvision_functions()

#: functions the tracer records as one call instead of tracing into them
WRAPPED = tuple(f for f in FUNCTIONS if getattr(f, "__module__", "").startswith("torchvision"))

#: the name a function's or method's node gets in its scope when nothing better exists
NAMES = {
    "cat": "cat",
    "concat": "cat",
    "add": "residual",
    "iadd": "residual",
    "mul": "scale",
    "imul": "scale",
    "mean": "avgpool",
    "adaptive_avg_pool2d": "avgpool",
    "avg_pool2d": "avgpool",
    "max_pool2d": "maxpool",
    "contiguous": "contiguous",
    "getitem": "select",
    "matmul": "product",  # not "matmul", the merge's key
}


# -- pixel shuffles, adaptive max pooling, clamp, activations (nasdsl/ops/more_ops.py) -------------


def _shuffle(op: str, factor: object, call: Call) -> Lowered:
    _map_input(call, op)
    if isinstance(factor, bool) or not isinstance(factor, int):
        raise Unsupported(f"a factor {factor!r}: expected an integer known when the model is traced")
    return Lowered(op, {"factor": factor})


def _adaptive_max(n: int, size: object, return_indices: object, call: Call) -> Lowered:
    """Adaptive max pooling of ``n`` spatial axes (a module's or a function's arguments)."""
    if return_indices:
        raise Unsupported("return_indices=True")
    if call.rank != n + 2:
        raise Unsupported(f"adaptive max pooling of {n} axes of a {call.rank}-D input (an unbatched one)")
    sizes = size if isinstance(size, (list, tuple)) else (size,) * n
    if any(s is None for s in sizes):
        raise Unsupported("an output size of None (keep that side): the spec's adaptive_max_pool takes sizes")
    return Lowered(f"adaptive_max_pool{({1: '1d', 2: '', 3: '3d'})[n]}", {"size": _window(sizes)})


def _adaptive_max_module(n: int) -> Callable[..., Lowered]:
    return lambda m, call: _adaptive_max(n, m.output_size, m.return_indices, call)


def _adaptive_max_function(n: int) -> Callable[[Call], Lowered]:
    return lambda call: _adaptive_max(n, call.arg(1, "output_size"), call.arg(2, "return_indices", False), call)


def _bound_arg(call: Call, index: int, name: str, default: object) -> float | None:
    """A clamp's bound: a number the traced call gives as a constant, or None (no bound)."""
    v = call.arg(index, name, default)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise Unsupported(f"{name}={v!r}: the spec's clamp takes numbers known when the model is traced")
    return float(v)


def _clamp(low: float | None, high: float | None) -> Lowered:
    if low is not None and high is not None and not low < high:
        raise Unsupported(f"bounds [{low}, {high}]: the spec's clamp takes a max above its min")
    return Lowered("clamp", {k: v for k, v in (("min", low), ("max", high)) if v is not None})


def _clamp_call(call: Call) -> Lowered:
    """``torch.clamp(x, min, max)`` and ``clip``, functions or methods, by numbers."""
    return _clamp(_bound_arg(call, 1, "min", None), _bound_arg(call, 2, "max", None))


def _log_softmax(dim: object, call: Call) -> Lowered:
    if dim is None:
        raise Unsupported("log_softmax without a dim: say which axis")
    return Lowered("log_softmax", _axis_attr(dim, call, "dim"))


def _softplus(beta: float, threshold: float) -> Lowered:
    return Lowered("softplus", {"beta": float(beta), "threshold": float(threshold)})


MODULES.update(
    {
        nn.PixelShuffle: lambda m, call: _shuffle("pixel_shuffle", m.upscale_factor, call),
        nn.PixelUnshuffle: lambda m, call: _shuffle("pixel_unshuffle", m.downscale_factor, call),
        nn.AdaptiveMaxPool1d: _adaptive_max_module(1),
        nn.AdaptiveMaxPool2d: _adaptive_max_module(2),
        nn.AdaptiveMaxPool3d: _adaptive_max_module(3),
        nn.Hardtanh: lambda m, call: _clamp(float(m.min_val), float(m.max_val)),
        nn.Softplus: lambda m, call: _softplus(m.beta, m.threshold),
        nn.Mish: _simple("mish"),
        nn.SELU: _simple("selu"),
        nn.LogSoftmax: lambda m, call: _log_softmax(m.dim, call),
    }
)
FUNCTIONS.update(
    {
        F.pixel_shuffle: lambda call: _shuffle("pixel_shuffle", call.arg(1, "upscale_factor"), call),
        F.pixel_unshuffle: lambda call: _shuffle("pixel_unshuffle", call.arg(1, "downscale_factor"), call),
        F.adaptive_max_pool1d: _adaptive_max_function(1),
        F.adaptive_max_pool2d: _adaptive_max_function(2),
        F.adaptive_max_pool3d: _adaptive_max_function(3),
        torch.clamp: _clamp_call,
        torch.clip: _clamp_call,
        F.hardtanh: lambda call: _clamp(_number(call, 1, "min_val", -1.0), _number(call, 2, "max_val", 1.0)),
        F.softplus: lambda call: _softplus(_number(call, 1, "beta", 1.0), _number(call, 2, "threshold", 20.0)),
        F.mish: _simple("mish"),
        F.selu: _simple("selu"),
        torch.selu: _simple("selu"),
        F.log_softmax: lambda call: _log_softmax(call.arg(1, "dim", None), call),
        torch.log_softmax: lambda call: _log_softmax(call.arg(1, "dim", None), call),
    }
)
METHODS.update(
    {
        "clamp": _clamp_call,
        "clip": _clamp_call,
        "clamp_": _clamp_call,
        "clip_": _clamp_call,
        "log_softmax": lambda call: _log_softmax(call.arg(1, "dim", None), call),
    }
)


def _pad_from(mode: str) -> Callable[..., Lowered]:
    """``nn.ReflectionPad2d`` and its kin: a border taken from the input."""
    return lambda m, call: _padding(m.padding, 0.0, mode)


for _n in (1, 2, 3):
    MODULES[getattr(nn, f"ReflectionPad{_n}d")] = _pad_from("reflect")
    MODULES[getattr(nn, f"ReplicationPad{_n}d")] = _pad_from("replicate")
    MODULES[getattr(nn, f"CircularPad{_n}d")] = _pad_from("circular")
