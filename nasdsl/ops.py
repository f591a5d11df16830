"""The op registry: everything nasdsl knows about each primitive op, in one entry.

An entry (:class:`OpDef`) holds the op's attribute schema with defaults, its
shape rule, its parameter count and its multiply-add count. Adding an op is
adding one entry to :data:`OPS`; the backends then need one lowering each.

Shapes exclude the batch dimension: ``(C, H, W)`` for feature maps and ``(F,)``
for flat features.

======================  =====================================================
op                      attributes (defaults)
======================  =====================================================
``conv2d``              out, kernel, stride=1, padding=0 (int, pair, ``same``,
                        ``valid``), dilation=1, groups=1, bias=true
``batch_norm``          eps=1e-5, momentum=0.1
``relu`` ``relu6``      (none)
``sigmoid`` ``tanh``    (none)
``silu``                (none)
``gelu``                approximate=``none`` (or ``tanh``)
``max_pool``            kernel, stride=kernel, padding=0, ceil_mode=false
``avg_pool``            kernel, stride=kernel, padding=0, ceil_mode=false,
                        count_include_pad=true
``adaptive_avg_pool``   size (int or pair)
``global_avg_pool``     (none); output ``(C, 1, 1)``
``lrn``                 size=5, alpha=1e-4, beta=0.75, k=1.0 (Caffe's and
                        torch's convention: alpha is divided by size)
``dropout``             p=0.5 (dropped in inference graphs)
``flatten``             (none); ``(C, H, W)`` -> ``(C*H*W,)``
``linear``              out, bias=true; input must be flat
``softmax``             (none); over channels or features
``concat``              (none); two or more inputs joined on channels
``add``                 (none); two or more inputs of one shape
``identity``            (none)
======================  =====================================================

Multiply-adds count conv (output elements x in_channels/groups x kH x kW) and
linear (in x out) only; everything else counts zero, as in the paper.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from nasdsl.errors import CodegenError, ShapeError, SpecError

Shape = tuple[int, ...]
T = TypeVar("T")

#: Upper bounds for integer attributes (hostile specs must not build absurd graphs).
MAX_CHANNELS = 1 << 20
MAX_WINDOW = 4096


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED = _Required()


# ---------------------------------------------------------------------------
# Attribute value checks. Each takes the evaluated value and returns the
# normalised value or raises SpecError with "expected ..., got ...".


def describe(v: object) -> str:
    """A value as a spec writes it, for messages: ``true``, ``1.5``, ``'same'``, ``[1, 2]``, ``null``."""
    if v is None:
        return "null"
    if isinstance(v, Mapping):
        return "a mapping"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, (list, tuple)):
        shown = ", ".join(describe(x) for x in v[:8])
        return "[" + shown + (", ..." if len(v) > 8 else "") + "]"
    if isinstance(v, str):
        return f"'{v}'" if len(v) <= 40 else f"'{v[:37]}...'"
    if isinstance(v, int) and abs(v) >= 10**15:
        return f"an integer of {len(str(abs(v)))} digits"
    return str(v)


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_int(v: object, lo: int, hi: int) -> int:
    if _is_int(v) and lo <= v <= hi:
        return v
    bound = "an integer > 0" if lo == 1 else f"an integer >= {lo}"
    if _is_int(v) and v > hi:
        bound += f" and <= {hi}"
    raise SpecError(f"expected {bound}, got {describe(v)}")


def _int(lo: int = 1, hi: int = MAX_CHANNELS) -> Callable[[object], int]:
    return lambda v: check_int(v, lo, hi)


def _pair(lo: int = 1, hi: int = MAX_WINDOW) -> Callable[[object], tuple[int, int]]:
    def check(v: object) -> tuple[int, int]:
        if isinstance(v, (list, tuple)):
            if len(v) != 2:
                raise SpecError(f"expected an integer or a pair [h, w], got a list of {len(v)}")
            return (check_int(v[0], lo, hi), check_int(v[1], lo, hi))
        n = check_int(v, lo, hi)
        return (n, n)

    return check


def _padding(v: object) -> tuple[int, int] | str:
    if v == "valid":
        return (0, 0)
    if v == "same":
        return "same"
    if isinstance(v, str):
        raise SpecError(f"expected an integer >= 0, a pair, 'same' or 'valid', got '{v}'")
    return _pair(0)(v)


def _finite(v: object) -> bool:
    """A number that fits a float (ints beyond float range are not: 10**400)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    if isinstance(v, int):
        return abs(v) <= 2**1023
    return math.isfinite(v)


def _float(lo: float, hi: float, *, hi_open: bool = False) -> Callable[[object], float]:
    def check(v: object) -> float:
        ok = _finite(v) and lo <= v and (v < hi if hi_open else v <= hi)
        if not ok:
            top = f"< {hi}" if hi_open else f"<= {hi}"
            raise SpecError(f"expected a number >= {lo} and {top}, got {describe(v)}")
        return float(v)

    return check


def _positive_float(v: object) -> float:
    if not _finite(v) or v <= 0:
        raise SpecError(f"expected a number > 0, got {describe(v)}")
    return float(v)


def _optional_int(v: object) -> int | None:
    return None if v is None else check_int(v, 0, MAX_CHANNELS)


def _axes(v: object) -> tuple[int, ...]:
    if not isinstance(v, (list, tuple)) or not 1 <= len(v) <= 3:
        raise SpecError(f"expected a list of the axes in their new order, such as [1, 2, 0], got {describe(v)}")
    return tuple(check_int(x, 0, 2) for x in v)


def _bool(v: object) -> bool:
    if not isinstance(v, bool):
        raise SpecError(f"expected true or false, got {describe(v)}")
    return v


def _choice(*options: str) -> Callable[[object], str]:
    def check(v: object) -> str:
        if v not in options:
            raise SpecError(f"expected one of {', '.join(options)}, got {describe(v)}")
        return v  # type: ignore[return-value]

    return check


@dataclass(frozen=True)
class Attr:
    """One attribute of an op: its name, check, default and role.

    ``role`` tells a code generator how the value is used: ``count`` (a channel
    or feature count), ``rate`` (a probability), ``window`` (kernel, stride,
    padding: changes spatial shapes) or ``flag``.
    """

    name: str
    check: Callable[[object], object]
    default: object = REQUIRED
    role: str = "window"
    doc: str = ""
    #: bare words taken literally rather than as variable names ("same", "tanh")
    literals: tuple[str, ...] = ()


def _no_weights(shapes: Sequence[Shape], attrs: Mapping[str, object]) -> tuple:
    return ()


@dataclass(frozen=True)
class Weight:
    """A parameter or buffer of an op, as the generated PyTorch module names it.

    ``kind`` is ``param`` (learned; counted in the summary's parameters, and
    ``init`` rules apply) or ``buffer`` (running statistics); ``init`` is the
    scheme PyTorch's module starts from, applied when the spec gives no rule
    (see :mod:`nasdsl.weights`; ``constant:V`` fills V); ``dtype`` is
    ``float32`` or ``int64``. An empty ``name`` is a parameter of the enclosing
    module itself, keyed by the node's path (ConvNeXt's ``layer_scale``).
    """

    name: str
    shape: tuple[int, ...]
    kind: str = "param"
    init: str = "zeros"
    dtype: str = "float32"


@dataclass(frozen=True)
class OpDef:
    """Everything about one op: its entry in the registry.

    ``infer`` gets the input shapes and the normalised attributes and returns
    the output shape or raises ShapeError; ``weights`` gives the op's
    parameters and buffers for those inputs (names, shapes, default init);
    ``macs`` counts its multiply-adds. ``lowerings`` maps a backend's name to
    its lowering of the op; the backends fill it in when they are imported
    (:func:`lowering`), and a backend that finds none raises an error naming
    the op and node.
    """

    name: str
    doc: str
    attrs: tuple[Attr, ...]
    infer: Callable[[Sequence[Shape], Mapping[str, object]], Shape]
    weights: Callable[[Sequence[Shape], Mapping[str, object]], tuple[Weight, ...]] = _no_weights
    macs: Callable[[Sequence[Shape], Mapping[str, object], Shape], int] = lambda s, a, o: 0
    min_inputs: int = 1
    max_inputs: int = 1
    #: how the leading (channel/feature) dimension of the output arises from
    #: the inputs: "same" (first input's), "out" (the ``out`` attribute),
    #: "sum" (sum over inputs), "flatten" (C*H*W of the input).
    lead: str = "same"
    #: how the output's spatial size arises: "follow" (from the input's and the
    #: window attributes) or "fixed" (from the attributes alone)
    spatial: str = "follow"
    #: written as a merge of branches (``{concat: [...]}``) rather than ``{op: ...}``
    merge: bool = False
    #: counted in the paper's depth ("layers with parameters")
    layer: bool = False
    #: the op is an identity at inference (dropout)
    inference_identity: bool = False
    #: checks that involve several attributes (padding 'same' needs stride 1);
    #: raises SpecError whose ``path`` names the attribute to blame
    check_attrs: Callable[[Mapping[str, object]], None] | None = None
    #: the learned parameters a spec's ``init`` section can set
    init_params: tuple[str, ...] = ()
    #: the op may hand on its input tensor itself or a view of it (identity, flatten, dropout at inference)
    aliases: bool = False
    #: the op can overwrite its input instead of making a new tensor (ReLU); see passes/inplace.py
    in_place: bool = False
    #: the merge can sum into its first input's tensor (a residual ``out += identity``); see passes/inplace.py
    accumulates: bool = False
    #: the op makes a new tensor that its backward does not read (convolution, BatchNorm,
    #: linear): a later sum may overwrite it (see ``accumulates``)
    fresh: bool = False
    attr_index: dict[str, Attr] = field(init=False, repr=False, compare=False)
    lowerings: dict[str, object] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "attr_index", {a.name: a for a in self.attrs})

    def params(self, shapes: Sequence[Shape], attrs: Mapping[str, object]) -> int:
        """The number of learned parameters (buffers excluded)."""
        return sum(math.prod(w.shape) for w in self.weights(shapes, attrs) if w.kind == "param")

    @property
    def has_weights(self) -> bool:
        """Whether the op has parameters or buffers (their shapes then depend on its input)."""
        return self.weights is not _no_weights

    def normalise(self, given: Mapping[str, object]) -> dict[str, object]:
        """Check given attribute values and fill in defaults.

        Raises SpecError carrying the attribute name as ``path``; unknown and
        missing attributes are the caller's to report (it knows locations).
        """
        missing = [a.name for a in self.attrs if a.default is REQUIRED and a.name not in given]
        if missing:
            s = "s" if len(missing) > 1 else ""
            raise SpecError(f"missing attribute{s} {', '.join(missing)} of {self.name}")
        out: dict[str, object] = {}
        for a in self.attrs:
            if a.name in given:
                try:
                    out[a.name] = a.check(given[a.name])
                except SpecError as e:
                    raise e.at(path=a.name) from None
            elif callable(a.default):
                out[a.name] = a.default(out)
            else:
                out[a.name] = a.default
        if self.check_attrs is not None:
            self.check_attrs(out)
        return out


# ---------------------------------------------------------------------------
# Shape helpers


def _fmt(shape: Shape) -> str:
    return "x".join(str(d) for d in shape)


def _need_map(shapes: Sequence[Shape], op: str) -> Shape:
    s = shapes[0]
    if len(s) != 3:
        raise ShapeError(f"expected a feature map (C, H, W) as the input of {op}, got flat features ({_fmt(s)})")
    return s


def _need_flat(shapes: Sequence[Shape], op: str) -> Shape:
    s = shapes[0]
    if len(s) != 1:
        raise ShapeError(
            f"expected flat features as the input of {op} (add a flatten before it), got a feature map {_fmt(s)}"
        )
    return s


def window_out(size: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    """Output length of a sliding window, PyTorch's rule (ceil_mode as in Caffe)."""
    span = d * (k - 1) + 1
    num = size + 2 * p - span
    if ceil_mode:
        n = -(-num // s) + 1
        if (n - 1) * s >= size + p:  # the last window must start inside the input
            n -= 1
        return n
    return num // s + 1


def same_padding(k: int, d: int) -> tuple[int, int]:
    """(begin, end) padding for 'same' at stride 1; the extra pixel goes at the end."""
    total = d * (k - 1)
    return total // 2, total - total // 2


def _spatial(shape: Shape, attrs: Mapping[str, object], op: str, ceil_mode: bool = False) -> tuple[int, int]:
    _, h, w = shape
    k, s = attrs["kernel"], attrs["stride"]
    d = attrs.get("dilation", (1, 1))
    pad = attrs["padding"]
    if pad == "same":  # stride 1: checked with the attributes
        return h, w
    padded = (h + 2 * pad[0], w + 2 * pad[1])
    span = (d[0] * (k[0] - 1) + 1, d[1] * (k[1] - 1) + 1)
    if span[0] > padded[0] or span[1] > padded[1]:
        dilated = f" (dilated to {_fmt(span)})" if span != k else ""
        given = (
            f"input {h}x{w}"
            if padded == (h, w)
            else f"padded input {_fmt(padded)} ({h}x{w} with padding {_pair_text(pad)})"
        )
        raise ShapeError(f"expected a kernel no larger than the {given}, got {_fmt(k)}{dilated}")
    return (
        window_out(h, k[0], s[0], pad[0], d[0], ceil_mode),
        window_out(w, k[1], s[1], pad[1], d[1], ceil_mode),
    )


def _pair_text(v: tuple[int, int]) -> str:
    return str(v[0]) if v[0] == v[1] else _fmt(v)


def _conv_attrs(a: Mapping[str, object]) -> None:
    if a["padding"] == "same" and a["stride"] != (1, 1):
        raise SpecError(f"expected stride 1 with padding 'same', got stride {_pair_text(a['stride'])}", path="padding")


def _pool_attrs(a: Mapping[str, object]) -> None:
    k, p = a["kernel"], a["padding"]
    if p[0] * 2 > k[0] or p[1] * 2 > k[1]:
        raise SpecError(
            f"expected padding at most half the kernel {_pair_text(k)}, got {_pair_text(p)}", path="padding"
        )


def _conv_infer(shapes: Sequence[Shape], a: Mapping[str, object]) -> Shape:
    c, _, _ = _need_map(shapes, "conv2d")
    g = a["groups"]
    if c % g or a["out"] % g:
        raise ShapeError(
            f"expected groups that divide the input channels {c} and the output channels {a['out']}, got {g}"
        )
    return (a["out"], *_spatial(shapes[0], a, "conv2d"))


def _conv_weights(shapes: Sequence[Shape], a: Mapping[str, object]) -> tuple[Weight, ...]:
    weight = Weight("weight", (a["out"], shapes[0][0] // a["groups"], *a["kernel"]), init="torch_default")
    return (weight, Weight("bias", (a["out"],), init="torch_default")) if a["bias"] else (weight,)


def _bn_weights(shapes: Sequence[Shape], a: Mapping[str, object]) -> tuple[Weight, ...]:
    c = (shapes[0][0],)
    return (
        Weight("weight", c, init="ones"),
        Weight("bias", c, init="zeros"),
        Weight("running_mean", c, "buffer", "zeros"),
        Weight("running_var", c, "buffer", "ones"),
        Weight("num_batches_tracked", (), "buffer", "zeros", "int64"),
    )


def _conv_macs(shapes: Sequence[Shape], a: Mapping[str, object], out: Shape) -> int:
    kh, kw = a["kernel"]
    return out[0] * out[1] * out[2] * (shapes[0][0] // a["groups"]) * kh * kw


def _pool_infer(op: str) -> Callable[[Sequence[Shape], Mapping[str, object]], Shape]:
    def infer(shapes: Sequence[Shape], a: Mapping[str, object]) -> Shape:
        c = _need_map(shapes, op)[0]
        return (c, *_spatial(shapes[0], a, op, a["ceil_mode"]))

    return infer


def _same_shape(op: str, rank: int | None = None) -> Callable[[Sequence[Shape], Mapping[str, object]], Shape]:
    def infer(shapes: Sequence[Shape], a: Mapping[str, object]) -> Shape:
        if rank == 3:
            _need_map(shapes, op)
        return tuple(shapes[0])

    return infer


def _concat_infer(shapes: Sequence[Shape], a: Mapping[str, object]) -> Shape:
    first = shapes[0]
    for s in shapes[1:]:
        if len(s) != len(first) or s[1:] != first[1:]:
            got = ", ".join(_fmt(x) for x in shapes)
            raise ShapeError(f"expected concat inputs that differ only in channels, got {got}")
    return (sum(s[0] for s in shapes), *first[1:])


def _same_shapes(op: str) -> Callable[[Sequence[Shape], Mapping[str, object]], Shape]:
    def infer(shapes: Sequence[Shape], a: Mapping[str, object]) -> Shape:
        if any(s != shapes[0] for s in shapes[1:]):
            got = ", ".join(_fmt(x) for x in shapes)
            raise ShapeError(f"expected {op} inputs of one shape, got {got}")
        return tuple(shapes[0])

    return infer


_add_infer = _same_shapes("add")


def _bn_infer(shapes: Sequence[Shape], a: Mapping[str, object]) -> Shape:
    return tuple(shapes[0])


def _linear_infer(shapes: Sequence[Shape], a: Mapping[str, object]) -> Shape:
    if a["dim"] == "last":  # over the last axis of any tensor (channels-last maps, ConvNeXt's MLP)
        return (*shapes[0][:-1], a["out"])
    _need_flat(shapes, "linear")
    return (a["out"],)


def _linear_weights(shapes: Sequence[Shape], a: Mapping[str, object]) -> tuple[Weight, ...]:
    weight = Weight("weight", (a["out"], shapes[0][-1]), init="torch_default")
    return (weight, Weight("bias", (a["out"],), init="torch_default")) if a["bias"] else (weight,)


def _linear_macs(shapes: Sequence[Shape], a: Mapping[str, object], out: Shape) -> int:
    return math.prod(shapes[0][:-1]) * shapes[0][-1] * a["out"]


def _broadcast_infer(op: str) -> Callable[[Sequence[Shape], Mapping[str, object]], Shape]:
    """NumPy-style broadcasting of inputs of one rank: (C, 1, 1) times (C, H, W) is (C, H, W)."""

    def infer(shapes: Sequence[Shape], a: Mapping[str, object]) -> Shape:
        first = shapes[0]
        if any(len(s) != len(first) for s in shapes):
            raise ShapeError(f"expected {op} inputs of one rank, got {', '.join(_fmt(s) for s in shapes)}")
        out = []
        for dims in zip(*shapes, strict=True):
            sizes = {d for d in dims if d != 1}
            if len(sizes) > 1:
                got = ", ".join(_fmt(s) for s in shapes)
                raise ShapeError(f"expected {op} inputs that broadcast (each size equal or 1), got {got}")
            out.append(sizes.pop() if sizes else 1)
        return tuple(out)

    return infer


def _slice_infer(shapes: Sequence[Shape], a: Mapping[str, object]) -> Shape:
    c = shapes[0][0]
    stop = c if a["stop"] is None else a["stop"]
    if not a["start"] < stop <= c:
        raise ShapeError(f"expected 0 <= start < stop <= {c} channels, got start {a['start']} and stop {stop}")
    return (stop - a["start"], *shapes[0][1:])


def _shuffle_infer(shapes: Sequence[Shape], a: Mapping[str, object]) -> Shape:
    c = _need_map(shapes, "channel_shuffle")[0]
    if c % a["groups"]:
        raise ShapeError(f"expected groups that divide the channels {c}, got {a['groups']}")
    return tuple(shapes[0])


def _permute_infer(shapes: Sequence[Shape], a: Mapping[str, object]) -> Shape:
    dims = a["dims"]
    if sorted(dims) != list(range(len(shapes[0]))):
        raise ShapeError(f"expected a permutation of 0..{len(shapes[0]) - 1}, got {list(dims)}")
    return tuple(shapes[0][d] for d in dims)


def _norm_size(shapes: Sequence[Shape], a: Mapping[str, object]) -> int:
    """The size a layer_norm normalises over: the channels of a map, else the last axis."""
    s = shapes[0]
    return s[0] if a["dim"] == "channels" and len(s) == 3 else s[-1]


def _layer_norm_weights(shapes: Sequence[Shape], a: Mapping[str, object]) -> tuple[Weight, ...]:
    c = (_norm_size(shapes, a),)
    return (Weight("weight", c, init="ones"), Weight("bias", c, init="zeros"))


def _layer_scale_weights(shapes: Sequence[Shape], a: Mapping[str, object]) -> tuple[Weight, ...]:
    s = shapes[0]
    shape = (s[0], 1, 1) if len(s) == 3 else (s[-1],)
    return (Weight("", shape, init=f"constant:{a['init']!r}"),)


def _flatten_infer(shapes: Sequence[Shape], a: Mapping[str, object]) -> Shape:
    return (math.prod(shapes[0]),)


def _adaptive_infer(shapes: Sequence[Shape], a: Mapping[str, object]) -> Shape:
    c, h, w = _need_map(shapes, "adaptive_avg_pool")
    return (c, *a["size"])


def _global_infer(shapes: Sequence[Shape], a: Mapping[str, object]) -> Shape:
    c = _need_map(shapes, "global_avg_pool")[0]
    return (c, 1, 1)


def _lrn_infer(shapes: Sequence[Shape], a: Mapping[str, object]) -> Shape:
    _need_map(shapes, "lrn")
    return tuple(shapes[0])


def _opaque_shape(v: object) -> tuple[int, ...]:
    if not isinstance(v, (list, tuple)) or not 1 <= len(v) <= 3:
        raise SpecError(f"expected the output shape as a list of 1 to 3 sizes, got {describe(v)}")
    return tuple(check_int(x, 1, MAX_CHANNELS) for x in v)


def _stride_default(attrs: Mapping[str, object]) -> object:
    return attrs["kernel"]


_WINDOW = (
    Attr("kernel", _pair(), doc="window size"),
    Attr("stride", _pair(), default=_stride_default, doc="defaults to the kernel"),
    Attr("padding", _pair(0), default=(0, 0)),
)

_ELEMENTWISE_DOC = "applied element-wise; shape unchanged"

OPS: dict[str, OpDef] = {
    op.name: op
    for op in [
        OpDef(
            "conv2d",
            "2-D convolution",
            (
                Attr("out", _int(), role="count", doc="output channels"),
                Attr("kernel", _pair()),
                Attr("stride", _pair(), default=(1, 1)),
                Attr("padding", _padding, default=(0, 0), literals=("same", "valid")),
                Attr("dilation", _pair(), default=(1, 1)),
                Attr("groups", _int(), default=1),
                Attr("bias", _bool, default=True, role="flag"),
            ),
            _conv_infer,
            _conv_weights,
            _conv_macs,
            lead="out",
            layer=True,
            check_attrs=_conv_attrs,
            init_params=("weight", "bias"),
            fresh=True,
        ),
        OpDef(
            "batch_norm",
            "batch normalisation over channels",
            (
                Attr("eps", _positive_float, default=1e-5, role="rate"),
                Attr("momentum", _float(0.0, 1.0), default=0.1, role="rate"),
            ),
            _bn_infer,
            _bn_weights,
            init_params=("weight", "bias"),
            fresh=True,
        ),
        *(
            OpDef(n, _ELEMENTWISE_DOC, (), _same_shape(n), in_place=n in ("relu", "relu6", "silu"))
            for n in ("relu", "relu6", "sigmoid", "tanh", "silu")
        ),
        OpDef(
            "gelu",
            _ELEMENTWISE_DOC,
            (Attr("approximate", _choice("none", "tanh"), default="none", role="flag", literals=("none", "tanh")),),
            _same_shape("gelu"),
        ),
        OpDef(
            "max_pool",
            "max pooling",
            (*_WINDOW, Attr("ceil_mode", _bool, default=False)),
            _pool_infer("max_pool"),
            check_attrs=_pool_attrs,
        ),
        OpDef(
            "avg_pool",
            "average pooling",
            (
                *_WINDOW,
                Attr("ceil_mode", _bool, default=False),
                Attr("count_include_pad", _bool, default=True, role="flag"),
            ),
            _pool_infer("avg_pool"),
            check_attrs=_pool_attrs,
        ),
        OpDef(
            "adaptive_avg_pool",
            "average pooling to a fixed size",
            (Attr("size", _pair()),),
            _adaptive_infer,
            spatial="fixed",
        ),
        OpDef("global_avg_pool", "average over all positions", (), _global_infer, spatial="fixed"),
        OpDef(
            "lrn",
            "local response normalisation across channels",
            (
                Attr("size", _int(1, MAX_WINDOW), default=5),
                Attr("alpha", _positive_float, default=1e-4, role="rate"),
                Attr("beta", _positive_float, default=0.75, role="rate"),
                Attr("k", _positive_float, default=1.0, role="rate"),
            ),
            _lrn_infer,
        ),
        OpDef(
            "dropout",
            "dropout (training only)",
            (Attr("p", _float(0.0, 1.0, hi_open=True), default=0.5, role="rate"),),
            _same_shape("dropout"),
            inference_identity=True,
            aliases=True,
        ),
        OpDef("flatten", "flatten all but the batch dimension", (), _flatten_infer, lead="flatten", aliases=True),
        OpDef(
            "linear",
            "fully connected layer",
            (
                Attr("out", _int(), role="count", doc="output features"),
                Attr("bias", _bool, default=True, role="flag"),
                Attr(
                    "dim",
                    _choice("features", "last"),
                    default="features",
                    literals=("features", "last"),
                    doc="features: the input must be flat; last: over the last axis of any tensor",
                ),
            ),
            _linear_infer,
            _linear_weights,
            _linear_macs,
            lead="out",
            layer=True,
            init_params=("weight", "bias"),
            fresh=True,
        ),
        OpDef("softmax", "softmax over channels or features", (), _same_shape("softmax")),
        *(OpDef(n, _ELEMENTWISE_DOC, (), _same_shape(n), in_place=True) for n in ("hardswish", "hardsigmoid")),
        OpDef(
            "channel_shuffle",
            "interleave the channels of `groups` groups (ShuffleNet)",
            (Attr("groups", _int(1, MAX_CHANNELS)),),
            _shuffle_infer,
        ),
        OpDef(
            "slice",
            "the channels from `start` up to `stop` (default: all that follow)",
            (
                Attr("start", _int(0), default=0, role="count"),
                Attr("stop", _optional_int, default=None, role="count"),
            ),
            _slice_infer,
            lead="slice",
            aliases=True,
        ),
        OpDef(
            "permute",
            "reorder the axes (batch excluded): [1, 2, 0] makes a map channels-last",
            (Attr("dims", _axes),),
            _permute_infer,
            aliases=True,
        ),
        OpDef(
            "layer_norm",
            "LayerNorm over the channels of a map (or the last axis)",
            (
                Attr("eps", _positive_float, default=1e-5, role="rate"),
                Attr(
                    "dim", _choice("channels", "last"), default="channels", role="flag", literals=("channels", "last")
                ),
            ),
            _same_shape("layer_norm"),
            _layer_norm_weights,
            init_params=("weight", "bias"),
        ),
        OpDef(
            "layer_scale",
            "a learned per-channel scale, started at `init` (ConvNeXt); a parameter of its module",
            (Attr("init", _float(-1e6, 1e6), default=1e-6, role="rate"),),
            _same_shape("layer_scale"),
            _layer_scale_weights,
        ),
        OpDef(
            "stochastic_depth",
            "drop whole samples (`row`) or the batch with probability p in training; an identity at inference",
            (
                Attr("p", _float(0.0, 1.0, hi_open=True), default=0.0, role="rate"),
                Attr("mode", _choice("row", "batch"), default="row", role="flag", literals=("row", "batch")),
            ),
            _same_shape("stochastic_depth"),
            inference_identity=True,
            aliases=True,
        ),
        OpDef(
            "concat",
            "join inputs along channels",
            (),
            _concat_infer,
            min_inputs=2,
            max_inputs=1 << 16,
            lead="sum",
            merge=True,
        ),
        OpDef(
            "add",
            "element-wise sum of inputs",
            (),
            _add_infer,
            min_inputs=2,
            max_inputs=1 << 16,
            merge=True,
            accumulates=True,
        ),
        OpDef(
            "mul",
            "element-wise product of inputs that broadcast: (C, 1, 1) scales (C, H, W) (squeeze-and-excitation)",
            (),
            _broadcast_infer("mul"),
            min_inputs=2,
            max_inputs=1 << 16,
            merge=True,
        ),
        OpDef(
            "mean",
            "element-wise mean of inputs of one shape (an ensemble's average)",
            (),
            _same_shapes("mean"),
            min_inputs=2,
            max_inputs=1 << 16,
            merge=True,
        ),
        OpDef("identity", "pass the input through", (), _same_shape("identity"), aliases=True),
        OpDef(
            "opaque",
            "an op of an imported model that no spec op computes (nasdsl import --allow-opaque); no backend lowers it",
            (Attr("shape", _opaque_shape, doc="its output shape, batch excluded"),),
            lambda shapes, a: tuple(a["shape"]),
        ),
    ]
}
#: what ``opaque`` has for a lowering in every backend: the backends refuse it (lowering_of)
REFUSED = object()

#: ops that merge branches (written ``{concat: ...}`` or ``{add: ...}`` in a spec)
MERGE_OPS = tuple(name for name, op in OPS.items() if op.merge)
#: for each op with learned parameters, the names a spec's ``init`` section can set
INIT_PARAMS: dict[str, tuple[str, ...]] = {name: op.init_params for name, op in OPS.items() if op.init_params}
#: the backends every op must have a lowering for (tests check it)
BACKENDS = ("pytorch", "onnx")
OPS["opaque"].lowerings.update(dict.fromkeys(BACKENDS, REFUSED))


def lowering(backend: str, *ops: str) -> Callable[[T], T]:
    """Register the decorated object as ``backend``'s lowering of ``ops``."""

    def register(obj: T) -> T:
        for op in ops:
            OPS[op].lowerings[backend] = obj
        return obj

    return register


def lowering_of(backend: str, op: str, node: str, data: Mapping[str, object]) -> object:
    """``backend``'s lowering of ``op``, or a :class:`CodegenError` naming the op and node."""
    found = OPS[op].lowerings.get(backend) if op in OPS else None
    if found is REFUSED:
        raise CodegenError(
            f"the {BACKENDS_SHOWN.get(backend, backend)} backend cannot lower op '{op}' (node {node}): it stands for "
            "an op of an imported model that no spec op computes; replace it with ops that do",
            location=data.get("loc"),
            path=data.get("keypath"),
        )
    if found is None:
        raise CodegenError(
            f"the {BACKENDS_SHOWN.get(backend, backend)} backend cannot lower op '{op}' (node {node})",
            location=data.get("loc"),
            path=data.get("keypath"),
        )
    return found


BACKENDS_SHOWN = {"pytorch": "PyTorch", "onnx": "ONNX"}
