"""The op registry's building blocks: attribute checks, :class:`Attr`, :class:`Weight`, :class:`OpDef`.

Shapes here exclude the batch dimension and may be of any rank. An op's shape
rule takes the input :class:`~nasdsl.ir.types.TensorType` s and returns the
output's; its sizes are ints, or :class:`~nasdsl.ir.sym.Sym` when the shape
pass runs it symbolically (a template's ``in_channels``, an ``out`` of
``c3x3``): rules compute with ``+ - * //`` on sizes, and check sizes only where
they are known (:func:`known`), so that one rule serves both.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from nasdsl.errors import CodegenError, ShapeError, SpecError
from nasdsl.ir.sym import Sym
from nasdsl.ir.types import TensorType

Dim = int | Sym
Shape = tuple[int, ...]
T = TypeVar("T")

#: Upper bounds for integer attributes (hostile specs must not build absurd graphs).
MAX_CHANNELS = 1 << 20
MAX_WINDOW = 4096
#: the most axes a tensor may have (the batch not counted)
MAX_RANK = 8


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


def is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_int(v: object, lo: int, hi: int) -> int:
    if is_int(v) and lo <= v <= hi:
        return v
    bound = "an integer > 0" if lo == 1 else f"an integer >= {lo}"
    if is_int(v) and v > hi:
        bound += f" and <= {hi}"
    raise SpecError(f"expected {bound}, got {describe(v)}")


def integer(lo: int = 1, hi: int = MAX_CHANNELS) -> Callable[[object], int]:
    return lambda v: check_int(v, lo, hi)


def signed(bound: int = MAX_CHANNELS) -> Callable[[object], int]:
    """An integer from ``-bound`` to ``bound`` (an axis counted from the end, a shift)."""

    def check(v: object) -> int:
        if is_int(v) and -bound <= v <= bound:
            return v
        raise SpecError(f"expected an integer from {-bound} to {bound}, got {describe(v)}")

    return check


def tuple_of(n: int, lo: int = 1, hi: int = MAX_WINDOW) -> Callable[[object], tuple[int, ...]]:
    """One integer per spatial axis: a list of ``n``, or one integer for all of them."""
    shape = "[h, w]" if n == 2 else "[t, h, w]" if n == 3 else f"a list of {n}"

    def check(v: object) -> tuple[int, ...]:
        if isinstance(v, (list, tuple)):
            if len(v) != n:
                raise SpecError(f"expected an integer or {shape}, got a list of {len(v)}")
            return tuple(check_int(x, lo, hi) for x in v)
        return (check_int(v, lo, hi),) * n

    return check


def padding_of(n: int) -> Callable[[object], tuple[int, ...] | str]:
    spatial = tuple_of(n, 0)

    def check(v: object) -> tuple[int, ...] | str:
        if v == "valid":
            return (0,) * n
        if v == "same":
            return "same"
        if isinstance(v, str):
            raise SpecError(f"expected an integer >= 0, a list, 'same' or 'valid', got '{v}'")
        return spatial(v)

    return check


def is_finite(v: object) -> bool:
    """A number that fits a float (ints beyond float range are not: 10**400)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    if isinstance(v, int):
        return abs(v) <= 2**1023
    return math.isfinite(v)


def real(lo: float, hi: float, *, hi_open: bool = False) -> Callable[[object], float]:
    def check(v: object) -> float:
        ok = is_finite(v) and lo <= v and (v < hi if hi_open else v <= hi)
        if not ok:
            top = f"< {hi}" if hi_open else f"<= {hi}"
            raise SpecError(f"expected a number >= {lo} and {top}, got {describe(v)}")
        return float(v)

    return check


def positive(v: object) -> float:
    if not is_finite(v) or v <= 0:
        raise SpecError(f"expected a number > 0, got {describe(v)}")
    return float(v)


def optional_int(lo: int = 0) -> Callable[[object], int | None]:
    return lambda v: None if v is None else check_int(v, lo, MAX_CHANNELS)


def optional_signed(v: object) -> int | None:
    return None if v is None else signed()(v)


def boolean(v: object) -> bool:
    if not isinstance(v, bool):
        raise SpecError(f"expected true or false, got {describe(v)}")
    return v


def one_of(*options: str) -> Callable[[object], str]:
    def check(v: object) -> str:
        if v not in options:
            raise SpecError(f"expected one of {', '.join(options)}, got {describe(v)}")
        return v  # type: ignore[return-value]

    return check


def int_list(what: str, lo: int, hi: int, *, most: int = MAX_RANK) -> Callable[[object], tuple[int, ...]]:
    """A list of 1 to ``most`` integers from ``lo`` to ``hi`` (``what`` names it in messages)."""

    def check(v: object) -> tuple[int, ...]:
        if not isinstance(v, (list, tuple)) or not 1 <= len(v) <= most:
            raise SpecError(f"expected {what}, a list of 1 to {most} integers, got {describe(v)}")
        return tuple(check_int(x, lo, hi) if lo >= 0 else signed(max(-lo, hi))(x) for x in v)

    return check


# ---------------------------------------------------------------------------
# Records


@dataclass(frozen=True)
class Attr:
    """One attribute of an op: its name, check, default and role.

    ``role`` tells a code generator how the value is used: ``count`` (a channel
    or feature count), ``rate`` (a probability), ``window`` (kernel, stride,
    padding: changes spatial shapes) or ``flag``. ``symbolic``: the attribute's
    expression may enter the output's shape as a class computes it (``out``,
    ``shape``), so the shape pass runs the rule with it. ``fixed``: why a
    template's parameter may not give the attribute (the generated class writes
    it into its ``forward``, which sees no constructor argument, or picks its
    module class by it); empty where one may: the class then takes it from its
    constructor's arguments, whatever it is at each use.
    """

    name: str
    check: Callable[[object], object]
    default: object = REQUIRED
    role: str = "window"
    doc: str = ""
    #: bare words taken literally rather than as variable names ("same", "tanh")
    literals: tuple[str, ...] = ()
    symbolic: bool = False
    fixed: str = ""


def _no_weights(types: Sequence[TensorType], attrs: Mapping[str, object]) -> tuple:
    return ()


@dataclass(frozen=True)
class Weight:
    """A parameter or buffer of an op, as the generated PyTorch module names it.

    ``kind`` is ``param`` (learned; counted in the summary's parameters, and
    ``init`` rules apply) or ``buffer`` (running statistics, or a table the op
    computes from its attributes: Swin's ``relative_position_index``); ``init`` is the
    scheme PyTorch's module starts from, applied when the spec gives no rule
    (see :mod:`nasdsl.weights`; ``constant:V`` fills V, ``trunc_normal:S`` draws a
    normal of std S cut at +-2, ``computed`` takes the values the op's
    :attr:`OpDef.computed` gives: a buffer that is no state, the same in every model
    with the same attributes); ``dtype`` is
    ``float32`` or ``int64``. An empty ``name`` is a parameter of the enclosing
    module itself, keyed by the node's path (ConvNeXt's ``layer_scale``, ViT's
    ``class_token``). ``parts``: dimension 0 stacks that many equal blocks (attention's
    query, key and value projections), which weight transfer slices each alone. ``layer``:
    the op whose layer holds it inside the op's module (``linear`` for Swin attention's
    ``qkv.weight``, an ``nn.Linear``): that op's ``init`` rules apply to it, after the block's
    own rules and this op's.
    """

    name: str
    shape: tuple[int, ...]
    kind: str = "param"
    init: str = "zeros"
    dtype: str = "float32"
    parts: int = 1
    layer: str = ""


@dataclass(frozen=True)
class OpDef:
    """Everything about one op: its entry in the registry.

    ``infer(in_types, attrs)`` gives the output :class:`TensorType` or raises
    ShapeError (sizes may be :class:`Sym`, see the module docstring);
    ``weights(in_types, attrs)`` the op's parameters and buffers (names,
    shapes, default init); ``macs(in_types, attrs, out_type)`` its
    multiply-adds. ``lowerings`` maps a backend's name to its lowering of the
    op; the backends fill it in when they are imported (:func:`lowering`), and
    a backend that finds none raises an error naming the op and node.

    The remaining fields are facts about the op that passes and tools read
    here rather than keep lists of their own (see each field's comment).
    """

    name: str
    doc: str
    attrs: tuple[Attr, ...]
    infer: Callable[[Sequence[TensorType], Mapping[str, object]], TensorType]
    weights: Callable[[Sequence[TensorType], Mapping[str, object]], tuple[Weight, ...]] = _no_weights
    macs: Callable[[Sequence[TensorType], Mapping[str, object], TensorType], int] = lambda t, a, o: 0
    min_inputs: int = 1
    max_inputs: int = 1
    #: how the channel (or feature) size of the output arises from the inputs: "same" (the first
    #: input's), "out" (the ``out`` attribute), "sum" (summed over inputs), "flatten" (from several
    #: axes), "slice" (a part of it), "other"; the exposure analysis follows a size change by it
    lead: str = "same"
    #: how the output's other sizes arise: "follow" (from the input's and the window attributes)
    #: or "fixed" (from the attributes alone)
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
    #: those of ``init_params`` that have a fan-in and a fan-out (a layer's weight of two or more
    #: dimensions): the only ones an initialisation that counts fans (xavier, kaiming) may set
    fan_params: tuple[str, ...] = ()
    #: the op may hand on its input tensor itself or a view of it (identity, flatten, dropout at inference)
    aliases: bool = False
    #: the op can overwrite its input instead of making a new tensor (ReLU); see passes/inplace.py
    in_place: bool = False
    #: the merge can sum into its first input's tensor (a residual ``out += identity``); see passes/inplace.py
    accumulates: bool = False
    #: the op makes a new tensor that its backward does not read (convolution, BatchNorm,
    #: linear): a later sum may overwrite it (see ``accumulates``)
    fresh: bool = False
    #: the op acts on each element alone, so it commutes with taking any part of its input
    #: (an activation): the hoisting pass moves it above a channel split
    elementwise: bool = False
    #: where each channel of the output comes from: ``channel_map(in_types, attrs, out_type)``
    #: gives, per output channel (or flat feature), ``(input index, channel)`` or None for a
    #: channel the op makes anew (a convolution's); None: every channel is new. Weight transfer
    #: and diff trace channels with it (see nasdsl/transfer.py)
    channel_map: Callable[[Sequence[TensorType], Mapping[str, object], TensorType], tuple | None] | None = None
    #: a spec may write the op (ops that only the compiler makes, such as an ensemble's members, may not)
    spec: bool = True
    #: the graph the op runs, for an op that calls one (an ensemble's member): ``subgraph(attrs)``;
    #: its parameters are the node's, under the node's name, and it keeps its own init rules
    subgraph: Callable[[Mapping[str, object]], object] | None = None
    #: the values of the op's buffers whose ``init`` is ``computed``: ``computed(in_types, attrs)``
    #: gives ``{name: numpy array}``, fixed by the attributes (Swin's relative_position_index);
    #: a backend that needs them computes them here rather than read a state_dict
    computed: Callable[[Sequence[TensorType], Mapping[str, object]], Mapping[str, object]] | None = None
    attr_index: dict[str, Attr] = field(init=False, repr=False, compare=False)
    lowerings: dict[str, object] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "attr_index", {a.name: a for a in self.attrs})

    def params(self, types: Sequence[TensorType], attrs: Mapping[str, object]) -> int:
        """The number of learned parameters (buffers excluded)."""
        return sum(math.prod(w.shape) for w in self.weights(types, attrs) if w.kind == "param")

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


def known(*dims: object) -> bool:
    """Whether every size is a plain int (not a :class:`Sym`): only then may a rule compare them."""
    return all(isinstance(d, int) for d in dims)


def fmt(shape: Sequence[object]) -> str:
    return "x".join(str(d) for d in shape) or "a scalar"


def describe_type(t: TensorType) -> str:
    """``a (C, H, W) map 64x56x56``, ``tokens (L, C) 197x768``, ``flat features 1000``: for messages."""
    shape = fmt(t.shape)
    if t.axes == "C":
        return f"flat features {shape}"
    if t.axes == "LC":
        return f"tokens (L, C) {shape}"
    if t.channels_first and t.rank >= 2:
        return f"a ({', '.join(t.axes)}) map {shape}"
    return f"a tensor ({', '.join(t.axes)}) {shape}"


def need(t: TensorType, op: str, what: str, ok: bool) -> None:
    """Raise a ShapeError naming what ``op`` takes (``what``) and what it got, unless ``ok``."""
    if not ok:
        raise ShapeError(f"expected {what} as the input of {op}, got {describe_type(t)}")


def need_map(t: TensorType, op: str, spatial: int) -> None:
    """``op`` takes a channels-first map with ``spatial`` spatial axes."""
    names = {1: "(C, L)", 2: "(C, H, W)", 3: "(C, T, H, W)"}[spatial]
    need(t, op, f"a feature map {names}", t.rank == spatial + 1 and (t.channels_first or "?" in t.axes))


def need_flat(t: TensorType, op: str) -> None:
    if t.rank != 1:
        raise ShapeError(
            f"expected flat features as the input of {op} (add a flatten before it), got {describe_type(t)}"
        )


def axis_of(t: TensorType, axis: object, op: str) -> int:
    """An axis attribute (``channels``, ``last``, or an index, negative from the end) as an index of ``t``."""
    if axis == "channels":
        c = t.channel_axis
        if c is None:
            raise ShapeError(f"expected a tensor with a channel axis as the input of {op}, got {describe_type(t)}")
        return c
    if axis == "last":
        return t.rank - 1
    assert isinstance(axis, int)
    if not -t.rank <= axis < t.rank:
        raise ShapeError(f"expected an axis from {-t.rank} to {t.rank - 1} of {describe_type(t)}, got {axis}")
    return axis % t.rank


def same_type(types: Sequence[TensorType], a: Mapping[str, object]) -> TensorType:
    return types[0]


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


def window_text(v: Sequence[int]) -> str:
    return str(v[0]) if len(set(v)) == 1 else fmt(v)


def spatial_out(sizes: Sequence[Dim], attrs: Mapping[str, object], ceil_mode: bool = False) -> tuple[Dim, ...]:
    """The spatial sizes after a window (kernel, stride, padding, dilation) over ``sizes``."""
    k, s = attrs["kernel"], attrs["stride"]
    d = attrs.get("dilation", (1,) * len(k))
    pad = attrs["padding"]
    if pad == "same":  # stride 1: checked with the attributes
        return tuple(sizes)
    if not known(*sizes):
        raise ShapeError("a window over a symbolic size")  # the shape pass keeps the concrete sizes
    padded = tuple(n + 2 * p for n, p in zip(sizes, pad, strict=True))
    span = tuple(di * (ki - 1) + 1 for di, ki in zip(d, k, strict=True))
    if any(sp > pd for sp, pd in zip(span, padded, strict=True)):
        dilated = f" (dilated to {fmt(span)})" if span != tuple(k) else ""
        given = (
            f"input {fmt(sizes)}"
            if padded == tuple(sizes)
            else f"padded input {fmt(padded)} ({fmt(sizes)} with padding {window_text(pad)})"
        )
        raise ShapeError(f"expected a kernel no larger than the {given}, got {fmt(k)}{dilated}")
    return tuple(
        window_out(n, ki, si, pi, di, ceil_mode) for n, ki, si, pi, di in zip(sizes, k, s, pad, d, strict=True)
    )


# ---------------------------------------------------------------------------
# The registry

OPS: dict[str, OpDef] = {}
#: the backends every op must have a lowering for (tests check it)
BACKENDS = ("pytorch", "onnx")
BACKENDS_SHOWN = {"pytorch": "PyTorch", "onnx": "ONNX"}


def register(*ops: OpDef) -> None:
    """Add ops to :data:`OPS` (one entry per name)."""
    for op in ops:
        if op.name in OPS:
            raise ValueError(f"op {op.name!r} is registered twice")
        OPS[op.name] = op


#: a lowering that refuses: an op no backend can write (``opaque``); :func:`lowering_of` says why
REFUSED = object()


def lowering(backend: str, *ops: str) -> Callable[[T], T]:
    """Register the decorated object as ``backend``'s lowering of ``ops``."""

    def register_lowering(obj: T) -> T:
        for op in ops:
            OPS[op].lowerings[backend] = obj
        return obj

    return register_lowering


def lowering_of(backend: str, op: str, node: str, data: object) -> object:
    """``backend``'s lowering of ``op``, or a :class:`CodegenError` naming the op and node."""
    found = OPS[op].lowerings.get(backend) if op in OPS else None
    if found is REFUSED:
        raise CodegenError(
            f"the {BACKENDS_SHOWN.get(backend, backend)} backend cannot lower op '{op}' (node {node}): it stands for "
            "an op of an imported model that no spec op computes; replace it with ops that do",
            location=getattr(data, "loc", None),
            path=getattr(data, "keypath", None),
        )
    if found is None:
        raise CodegenError(
            f"the {BACKENDS_SHOWN.get(backend, backend)} backend cannot lower op '{op}' (node {node})",
            location=getattr(data, "loc", None),
            path=getattr(data, "keypath", None),
        )
    return found


def identity_channels(types: Sequence[TensorType], a: Mapping[str, object], out: TensorType) -> tuple | None:
    """Each output channel is the same channel of the first input (None: the output has no channel axis)."""
    c = out.channel_axis
    return None if c is None else tuple((0, i) for i in range(out.shape[c]))
