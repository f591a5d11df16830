"""Weights without torch: what a graph's parameters are, how they start, how they are read.

- :func:`parameters` lists every parameter and buffer of a graph by its
  ``state_dict`` key (``inception4a.branch2.1.conv.weight``), with its shape
  and kind, from the op registry (:attr:`nasdsl.ops.OpDef.weights`).
- :func:`initial_weights` draws a seeded initialisation in numpy, following
  the spec's ``init`` rules and, where there is none, PyTorch's default for the
  layer: the distributions PyTorch uses, not its random streams, so the values
  differ from a torch-built model's but are deterministic and portable.
- :func:`load_weights` reads ``.safetensors`` files with the ``safetensors``
  package (no torch) and other files as a ``torch.save``-d state_dict with
  ``weights_only`` (torch is imported only then).
- :func:`check_weights` checks a state_dict against a graph and returns the
  arrays it needs as float32 numpy.
"""

from __future__ import annotations

import io
import math
import os
import re
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import networkx as nx

from nasdsl import ir
from nasdsl.errors import LimitError, Location, WeightsError
from nasdsl.ops import OPS, Weight

if TYPE_CHECKING:  # imported where weights are made or read: checking a spec never needs numpy
    import numpy as np

#: how many offending names an error lists before "and N more"
_SHOWN = 5
#: the most memory an export or a build may need for weights, by default (8 GiB)
MAX_MEMORY = 8 << 30


def parameters(g: nx.DiGraph, *, kinds: Sequence[str] = ("param", "buffer")) -> dict[str, Weight]:
    """Every parameter (and buffer) of ``g``'s nodes by state_dict key, in graph order (a node that
    calls a graph, an ensemble's member, has that graph's, under its name)."""
    out: dict[str, Weight] = {}
    for n in ir.order(g):
        data = ir.node(g, n)
        if data.op not in OPS:
            continue
        for w in OPS[data.op].weights(ir.input_types(g, n), data.attrs):
            if w.kind in kinds:
                out[f"{n}.{w.name}" if w.name else n] = w
    return out


def weight_bytes(g: nx.DiGraph) -> int:
    """The bytes of every parameter and buffer of ``g`` (float32, and int64 counters)."""
    return sum(math.prod(w.shape) * (8 if w.dtype == "int64" else 4) for w in parameters(g).values())


def check_memory(g: nx.DiGraph, copies: int, limit: int | None, what: str) -> None:
    """Refuse, before anything is allocated, work that needs ``copies`` times the weights'
    bytes when that is above ``limit`` (a located :class:`LimitError`; None: no limit)."""
    need = copies * weight_bytes(g)
    if limit is not None and need > limit:
        raise LimitError(
            f"{what} needs about {_gib(need)} of memory for the weights, above the limit of {_gib(limit)} "
            "(raise it with --max-memory)",
            location=ir.info(g).name_loc,
            path="model",
        )


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.1f} MiB"


def param_shapes(g: nx.DiGraph) -> dict[str, tuple[int, ...]]:
    """The learned parameters and float buffers of ``g`` (what ONNX needs), with shapes."""
    return {k: w.shape for k, w in parameters(g).items() if w.dtype == "float32"}


# ---------------------------------------------------------------------------
# Initialisation


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """PyTorch's fan-in and fan-out of a weight: its second and first dimension times the receptive field."""
    receptive = math.prod(shape[2:]) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


#: torch.nn.init.calculate_gain of the nonlinearities a kaiming rule may name (leaky_relu with its
#: slope 0, as torch's kaiming functions take it by default)
KAIMING_GAINS = {"relu": math.sqrt(2.0), "leaky_relu": math.sqrt(2.0), "linear": 1.0, "sigmoid": 1.0, "tanh": 5 / 3}


def _draw(rng: np.random.Generator, scheme: str, args: Mapping[str, object], shape: tuple[int, ...], weight_shape):
    """One tensor drawn by ``scheme`` (see docs/spec-language.md, init), float64."""
    import numpy as np

    if scheme == "zeros":
        return np.zeros(shape)
    if scheme == "ones":
        return np.ones(shape)
    if scheme == "constant":
        return np.full(shape, args.get("value", 0.0))
    if scheme.startswith("constant:"):  # a registry default with its value: "constant:1e-06"
        return np.full(shape, float(scheme.split(":", 1)[1]))
    if scheme.startswith("trunc_normal:"):  # a registry default with its std: "trunc_normal:0.02"
        return _trunc_normal(rng, 0.0, float(scheme.split(":", 1)[1]), -2.0, 2.0, shape)
    if scheme == "normal":
        return rng.normal(args.get("mean", 0.0), args.get("std", 1.0), shape)
    if scheme == "uniform":
        return rng.uniform(args.get("a", 0.0), args.get("b", 1.0), shape)
    if scheme == "trunc_normal":
        mean, std, a, b = (args.get(k, d) for k, d in (("mean", 0.0), ("std", 1.0), ("a", -2.0), ("b", 2.0)))
        return _trunc_normal(rng, mean, std, a, b, shape)
    if scheme == "torch_default":
        # nn.Conv2d / nn.Linear: kaiming_uniform(a=sqrt(5)) for the weight, the same bound for the bias
        fan_in, _ = _fans(weight_shape)
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        return rng.uniform(-bound, bound, shape)
    if scheme == "xavier_caffe":
        fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
        bound = math.sqrt(3.0 / fan_in)
        return rng.uniform(-bound, bound, shape)
    fan_in, fan_out = _fans(shape)
    gain = args.get("gain", 1.0)
    if scheme == "xavier_uniform":
        bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-bound, bound, shape)
    if scheme == "xavier_normal":
        return rng.normal(0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)), shape)
    if scheme == "fan_uniform":
        fan = fan_in if args.get("mode", "fan_out") == "fan_in" else fan_out
        bound = args.get("scale", 1.0) / math.sqrt(fan)
        return rng.uniform(-bound, bound, shape)
    if scheme == "fan_trunc_normal":  # torch.nn.init.trunc_normal_ with std scale / sqrt(fan), cut at +-2
        fan = fan_in if args.get("mode", "fan_out") == "fan_in" else fan_out
        return _trunc_normal(rng, 0.0, args.get("scale", 1.0) / math.sqrt(fan), -2.0, 2.0, shape)
    if scheme in ("kaiming_normal", "kaiming_uniform"):  # as torch.nn.init's, fan_out and ReLU by default
        fan = fan_in if args.get("mode", "fan_out") == "fan_in" else fan_out
        std = KAIMING_GAINS[args.get("nonlinearity", "relu")] / math.sqrt(fan)
        if scheme == "kaiming_normal":
            return rng.normal(0.0, std, shape)
        return rng.uniform(-math.sqrt(3.0) * std, math.sqrt(3.0) * std, shape)
    raise ValueError(f"unknown init scheme {scheme!r}")


def _trunc_normal(rng: np.random.Generator, mean: float, std: float, a: float, b: float, shape) -> np.ndarray:
    """Normal samples redrawn until inside [a, b] (absolute bounds, as torch's trunc_normal_)."""
    import numpy as np

    out = rng.normal(mean, std, shape)
    bad = (out < a) | (out > b)
    for _ in range(1000):
        if not bad.any():
            return out
        out[bad] = rng.normal(mean, std, int(bad.sum()))
        bad = (out < a) | (out > b)
    return np.clip(out, a, b)


def initial_weights(g: nx.DiGraph, *, seed: int = 0) -> dict[str, np.ndarray]:
    """A seeded initialisation of every parameter and buffer of ``g``, as numpy
    arrays keyed like the generated model's state_dict. Rules come from
    ``ir.info(g).init`` and the blocks' own (a layer inside an op's module, such as the
    ``nn.Linear`` of an attention, follows its op's rules: :attr:`~nasdsl.ops.core.Weight.layer`);
    parameters without one get PyTorch's default. The members of an
    ensemble are drawn with seeds ``seed``, ``seed + 1``, ... (so that they differ)."""
    import numpy as np

    rng = np.random.Generator(np.random.PCG64(seed))
    rules = ir.info(g).init
    out: dict[str, np.ndarray] = {}
    called = 0  # graphs called by nodes (an ensemble's members) are drawn with seeds seed + 1, ...
    for n in ir.order(g):
        data = ir.node(g, n)
        op = data.op
        if op not in OPS:
            continue
        if OPS[op].subgraph is not None:  # its own rules, its own stream
            inner = initial_weights(OPS[op].subgraph(data.attrs), seed=seed + called)
            out.update({f"{n}.{k}": v for k, v in inner.items()})
            called += 1
            continue
        found = OPS[op].weights(ir.input_types(g, n), data.attrs)
        shapes = {w.name: w.shape for w in found}
        for w in found:
            # PyTorch's default for a bias counts the fans of its layer's weight ("out_proj.bias": "out_proj.weight")
            weight_shape = w.shape if len(w.shape) >= 2 else shapes.get(w.name[: -len("bias")] + "weight", ())
            key = "value" if w.name == "" else w.name  # a module's own parameter is "value" in init rules
            rule = None
            if w.kind == "param":  # the block's own rule, its op's, then those of the layer holding it
                rule = data.init.get(key) or rules.get(op, {}).get(key)
                if rule is None and w.layer:
                    rule = rules.get(w.layer, {}).get(w.name.rsplit(".", 1)[-1])
            scheme, args = (rule.scheme, dict(rule.args)) if rule is not None else (w.init, {})
            if scheme == "default":
                scheme = w.init
            if scheme == "computed":  # a table fixed by the attributes (Swin's relative_position_index)
                values = OPS[op].computed(ir.input_types(g, n), data.attrs)[w.name]
            else:
                values = _draw(rng, scheme, args, w.shape, weight_shape)
            out[f"{n}.{w.name}" if w.name else n] = np.asarray(values, dtype=np.dtype(w.dtype))
    return out


# ---------------------------------------------------------------------------
# Reading and checking


def load_weights(
    path: str | os.PathLike,
    *,
    location: Location | None = None,
    keypath: str | None = None,
    max_bytes: int | None = MAX_MEMORY,
) -> dict[str, object]:
    """Read a state_dict: ``.safetensors`` as numpy arrays (no torch), anything else
    as a ``torch.save``-d mapping of names to tensors (``weights_only``: no code runs).

    Only a regular file is opened, and without blocking (a FIFO, a device such as
    ``/dev/zero`` or a directory is refused at once). Raises :class:`WeightsError` naming
    the file when it cannot be read or holds something other than a mapping from names to
    tensors; ``location`` and ``keypath`` say where the path was written (a spec's
    ``weights:``), so that the error points there. A file larger than ``max_bytes`` is
    refused before it is read (None: no limit).
    """
    name = os.fspath(path)
    where = {"location": location, "path": keypath}
    data = read_regular(name, where, max_bytes)
    expected = "safetensors" if name.lower().endswith(".safetensors") else "torch"
    found = file_format(data)
    if found is not None and found != expected:
        raise WeightsError(
            f"cannot read weights from '{name}': it holds a {_FORMATS[found]}, but its name asks for a "
            f"{_FORMATS[expected]} (a name ending in .safetensors is read as safetensors, any other as torch.save): "
            "rename the file",
            **where,
        )
    if expected == "safetensors":
        return _load_safetensors(name, data, where)
    return _load_torch(name, data, where)


_FORMATS = {"safetensors": "safetensors file", "torch": "torch.save file"}


def file_format(data: bytes) -> str | None:
    """The format of a weights file's bytes by their first bytes: "safetensors", "torch" (a
    torch.save zip archive or legacy pickle) or None (neither). Safetensors is tried first: its
    8-byte header length may begin with the byte that begins a pickle."""
    if len(data) > 8 and data[8:9] == b"{" and int.from_bytes(data[:8], "little") <= len(data) - 8:
        return "safetensors"  # an 8-byte header length, then the JSON header
    if data[:4] == b"PK\x03\x04" or (data[:1] == b"\x80" and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")):
        return "torch"  # torch.save: a zip archive, or a bare pickle (the legacy format)
    return None


def read_regular(name: str, where: dict | None = None, max_bytes: int | None = None) -> bytes:
    """The bytes of the regular file ``name``, opened without blocking and checked through its
    descriptor (what ``extends`` does for specs): a directory, a device, a FIFO or a file
    larger than ``max_bytes`` is refused at once (a :class:`WeightsError` at ``where``, a dict
    of ``location`` and ``path``)."""
    where = where or {}
    try:
        fd = os.open(name, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise WeightsError(f"cannot read weights from '{name}': {e.strerror or e}", **where) from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise WeightsError(f"cannot read weights from '{name}': it is a directory, expected a file", **where)
        if not stat.S_ISREG(info.st_mode):
            raise WeightsError(
                f"cannot read weights from '{name}': not a regular file (a device, pipe or socket)", **where
            )
        if max_bytes is not None and info.st_size > max_bytes:
            raise WeightsError(
                f"cannot read weights from '{name}': the file is {_gib(info.st_size)}, above the limit of "
                f"{_gib(max_bytes)} for a weights file (--max-memory raises it where a command has it)",
                **where,
            )
        chunks = []
        while chunk := os.read(fd, 1 << 24):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as e:
        raise WeightsError(f"cannot read weights from '{name}': {e.strerror or e}", **where) from None
    finally:
        os.close(fd)


#: numpy dtypes of safetensors' dtype names (BF16 is widened by hand: numpy has no bfloat16)
_SAFETENSORS_DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "I64": "int64", "I32": "int32", "I16": "int16",
    "I8": "int8", "U64": "uint64", "U32": "uint32", "U16": "uint16", "U8": "uint8", "BOOL": "bool",
}  # fmt: skip
#: torch's dtypes of safetensors' 8-bit float names
_FLOAT8 = {"F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}


def _load_safetensors(name: str, data: bytes, where: dict) -> dict[str, object]:
    import numpy as np

    try:
        from safetensors import deserialize
    except ImportError:  # pragma: no cover - a dependency of the package
        raise WeightsError("reading .safetensors needs the 'safetensors' package (pip install safetensors)") from None
    try:
        entries = deserialize(data)
    except Exception as e:  # noqa: BLE001 - the reader raises several kinds for a bad file
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise WeightsError(f"cannot read weights from '{name}': not a safetensors file ({reason})", **where) from None
    out: dict[str, object] = {}
    for key, entry in entries:
        kind, shape = entry["dtype"], tuple(entry["shape"])
        if kind == "BF16":  # the upper half of a float32's bits
            bits = np.frombuffer(entry["data"], dtype="<u2").astype(np.uint32) << 16
            out[key] = bits.view(np.float32).reshape(shape)
        elif kind in _FLOAT8:  # widened by torch, as a torch.save file of the same tensors is
            import torch

            raw = bytearray(entry["data"])
            wide = torch.frombuffer(raw, dtype=getattr(torch, _FLOAT8[kind])) if raw else torch.zeros(0)
            out[key] = wide.float().numpy().reshape(shape)
        elif kind in _SAFETENSORS_DTYPES:
            out[key] = np.frombuffer(entry["data"], dtype=np.dtype(_SAFETENSORS_DTYPES[kind]).newbyteorder("<"))
            out[key] = out[key].reshape(shape)
        else:
            raise WeightsError(
                f"cannot read weights from '{name}': tensor '{key}' has dtype {kind}, which nasdsl does not read "
                "(expected F64, F32, F16, BF16, F8_E4M3 or F8_E5M2 for parameters)",
                **where,
            )
    return out


#: what a checkpoint of examples/train.py holds: a torch.save file with all of these is read as the
#: state_dict under ``model`` (the optimizer's, the schedule's and the counters are left)
TRAIN_CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "epoch", "batch", "step")


def _load_torch(name: str, data: bytes, where: dict) -> dict[str, object]:
    import io
    import warnings

    import torch

    try:
        with warnings.catch_warnings():  # torch's notes about pickle protocols are not the user's business
            warnings.simplefilter("ignore")
            obj = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception as e:  # noqa: BLE001 - torch.load raises many kinds for a bad file
        raise WeightsError(f"cannot read weights from '{name}': {refusal(e)}", **where) from None
    if not isinstance(obj, Mapping):
        raise WeightsError(f"'{name}' holds a {type(obj).__name__}, expected a state_dict (names to tensors)", **where)
    if all(k in obj for k in TRAIN_CHECKPOINT_KEYS) and isinstance(obj["model"], Mapping):
        obj = obj["model"]  # a checkpoint of examples/train.py: its model's state_dict, the rest left
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        hint = "; for a checkpoint, save its state_dict alone" if {"state_dict", "model"} & set(map(str, obj)) else ""
        raise WeightsError(
            f"'{name}' is not a state_dict: entries that are not tensors: {_listing(sorted(bad))}{hint}", **where
        )
    return dict(obj)


#: a line of torch.load's refusal that names the Python object a pickle asked for
_GLOBAL = re.compile(r"GLOBAL ([A-Za-z_][\w.]*)")


def refusal(e: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, in our words: the Python object a
    pickle asked for (``posix.system``), else the unpickler's own reason. Never torch's advice
    to load with ``weights_only=False``, which would run the file's code."""
    text = str(e)
    found = _GLOBAL.search(text)
    if found:
        return (
            f"it asks for the Python object '{found[1]}', which loading weights does not allow "
            "(a weights file holds tensors and plain containers only; no code from it runs)"
        )
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    advice = ("weights_only", "Please ", "Check the documentation", "Re-running", "file an issue", "https://")
    reasons = [line for line in lines if not any(a in line for a in advice)]
    if reasons:
        return f"not a file of tensors saved with torch.save ({reasons[0][:200]})"
    return f"not a file of tensors saved with torch.save ({type(e).__name__})"


def _listing(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_SHOWN])
    return shown + (f", and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")


def _dims(shape: Sequence[int]) -> str:
    return "x".join(map(str, shape)) or "a scalar"


def _as_array(value: object) -> tuple[np.ndarray | None, str | None]:
    """A numpy array of a tensor-like value (numpy array or dense torch tensor) and None, or
    None and what the value is instead."""
    import numpy as np

    if isinstance(value, np.ndarray):
        return value, None
    if hasattr(value, "detach") and hasattr(value, "numpy") and hasattr(value, "shape"):
        tensor = value.detach()
        layout = str(getattr(tensor, "layout", "torch.strided"))
        if layout != "torch.strided":
            return None, f"a {layout.removeprefix('torch.')} tensor"
        if getattr(tensor, "is_quantized", False):
            return None, f"a quantized tensor ({tensor.dtype})"
        if getattr(tensor, "is_meta", False):
            return None, "a tensor without values (on the meta device)"
        tensor = tensor.cpu()
        if tensor.is_floating_point():
            tensor = tensor.float()
        return tensor.numpy(), None
    return None, type(value).__name__


def _whole(array: np.ndarray) -> bool:
    import numpy as np

    return array.dtype.kind in "iu" or (array.dtype.kind == "f" and bool(np.all(np.mod(array, 1) == 0)))


def _judge(key: str, value: object, w: Weight) -> tuple[np.ndarray | None, str | None, bool]:
    """One entry of a state_dict against the model's weight ``w``: (its array, None, True) when
    it fits; (None, why, True) when it cannot be loaded at all (not a dense tensor; integers for
    floating point values or the reverse; values that are NaN or infinite); (None, why, False)
    when only its shape differs."""
    import numpy as np

    array, other = _as_array(value)
    if array is None:
        return None, f"{key} (expected a dense tensor, found {other})", True
    found = getattr(value, "dtype", array.dtype)
    if w.dtype == "float32" and array.dtype.kind != "f":
        return None, f"{key} (expected floating point values, found {found})", True
    # a counter saved as floats is taken when its values are whole (a float weight is not searched for it)
    if w.dtype != "float32" and not _whole(array):
        return None, f"{key} (expected integers ({w.dtype}), found {found} values that are not whole numbers)", True
    if tuple(array.shape) != w.shape:
        return None, f"{key} (expected {_dims(w.shape)}, found {_dims(tuple(array.shape))})", False
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = int(array.size - np.isfinite(array).sum())
        return None, f"{key} (expected finite values, found {bad} NaN or infinite)", True
    return array, None, True


def check_weights(
    g: nx.DiGraph, needed: nx.DiGraph, state_dict: Mapping[str, object], *, source: str = "the state_dict", **where
) -> dict[str, np.ndarray]:
    """The float weights that graph ``needed`` (derived from ``g``) takes, as float32 arrays.

    Keys must be those of the generated PyTorch model of ``g``: every parameter
    of ``needed`` present, nothing that no node of ``g`` has (parameters of parts
    ``needed`` leaves out, such as auxiliary heads, are accepted and ignored;
    so is BatchNorm's ``num_batches_tracked``), every shape right. Values are
    numpy arrays or torch tensors. Raises :class:`WeightsError` listing the
    offenders, as ``source`` (``'w.pt'``) and at ``where`` (``location``, ``path``). The rules
    for one entry are :func:`fit_weights`' too.
    """
    import numpy as np

    known = parameters(g)
    wanted = param_shapes(needed)
    missing = [k for k in wanted if k not in state_dict]
    unexpected: list[str] = []
    wrong: list[str] = []
    out: dict[str, np.ndarray] = {}
    for key, value in state_dict.items():
        if not isinstance(key, str):
            unexpected.append(repr(key))
            continue
        if key not in known:
            unexpected.append(key)
            continue
        array, why, _ = _judge(key, value, known[key])
        if why is not None:
            wrong.append(why)
        elif key in wanted:
            out[key] = np.asarray(array, dtype=np.float32)
    if missing or unexpected or wrong:
        order = {k: i for i, k in enumerate(known)}  # the model's order, whatever the file's
        wrong.sort(key=lambda why: order[why.split(" (", 1)[0]])
        lines = [f"{source} does not fit {ir.info(g).name}:"]
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong", wrong)):
            if items:
                lines.append(f"  {label} ({len(items)}): {_listing(items)}")
        lines += _prefix_hint(unexpected, known)
        raise WeightsError("\n".join(lines), **where)
    return {k: out[k] for k in wanted}


def _prefix_hint(unexpected: Sequence[str], known: Mapping[str, Weight]) -> list[str]:
    """A line naming the prefix that every unexpected key carries before a key of the model
    (``module.``, as the state_dict of a model wrapped in DistributedDataParallel), else none."""
    if not unexpected:
        return []
    first = unexpected[0]
    cuts = [i + 1 for i, c in enumerate(first) if c == "." and first[i + 1 :] in known]
    if not cuts:
        return []
    prefix = first[: cuts[0]]
    if not all(k.startswith(prefix) and k[len(prefix) :] in known for k in unexpected):
        return []
    return [
        f"  every unexpected key is a key of the model behind the prefix '{prefix}' (a wrapped model's "
        "state_dict, such as DistributedDataParallel's 'module.'): save the inner model's state_dict"
    ]


@dataclass(frozen=True)
class Fit:
    """What of a state_dict fits a graph's model, for a warm start (fine-tuning): ``arrays``
    (key -> numpy array in the model's dtype), and the keys left out: ``reshaped`` (another
    shape in the file), ``missing`` (the model's, not in the file), ``unknown`` (the file's,
    not in the model)."""

    arrays: dict[str, np.ndarray]
    reshaped: tuple[str, ...]
    missing: tuple[str, ...]
    unknown: tuple[str, ...]


def fit_weights(g: nx.DiGraph, state_dict: Mapping[str, object], *, source: str = "the state_dict") -> Fit:
    """The entries of ``state_dict`` that ``g``'s model can start from, by the rules of
    :func:`check_weights` (what the command line loads) with two allowances: a parameter of
    another shape, and one missing from the file, keep the model's initialisation. An entry
    of the wrong kind (integers where the model has floating point values, a non-tensor) is
    an error, never converted; so is a file of which nothing fits."""
    import numpy as np

    known = parameters(g)
    wrong: list[str] = []
    arrays: dict[str, np.ndarray] = {}
    reshaped: list[str] = []
    unknown: list[str] = []
    for key, value in state_dict.items():
        if not isinstance(key, str) or key not in known:
            unknown.append(str(key))
            continue
        array, why, fatal = _judge(key, value, known[key])
        if why is None:
            arrays[key] = np.asarray(array, dtype=np.dtype(known[key].dtype))
        elif fatal:
            wrong.append(why)
        else:
            reshaped.append(key)
    if wrong:
        raise WeightsError(f"{source} does not fit {ir.info(g).name}: wrong ({len(wrong)}): {_listing(wrong)}")
    if not arrays:
        hint = "".join("; " + line.strip() for line in _prefix_hint(unknown, known))
        raise WeightsError(f"{source}: none of its {len(state_dict)} tensors has a name and shape of the model{hint}")
    missing = [k for k in known if k not in state_dict]
    return Fit(arrays, tuple(sorted(reshaped)), tuple(sorted(missing)), tuple(sorted(unknown)))


def to_torch(weights: Mapping[str, np.ndarray]) -> dict[str, object]:
    """The same weights as torch tensors (imports torch)."""
    import numpy as np
    import torch

    return {k: torch.from_numpy(np.array(v)) for k, v in weights.items()}


def encode_weights(weights: Mapping[str, object], path: str) -> bytes:
    """The weights as the file ``path``'s extension asks: safetensors (numpy) or torch.save."""
    import numpy as np

    ext = os.path.splitext(path)[1].lower()
    arrays = {k: np.asarray(v, order="C") for k, v in weights.items()}  # (ascontiguousarray makes scalars 1-D)
    if ext == ".safetensors":
        from safetensors.numpy import save

        return save(arrays)
    import torch

    buf = io.BytesIO()
    # a read-only array (an ONNX file's tensor) is copied: torch warns of one it would share
    torch.save({k: torch.from_numpy(v if v.flags.writeable else v.copy()) for k, v in arrays.items()}, buf)
    return buf.getvalue()


__all__ = [
    "encode_weights",
    "file_format",
    "MAX_MEMORY",
    "Fit",
    "check_memory",
    "check_weights",
    "fit_weights",
    "initial_weights",
    "load_weights",
    "read_regular",
    "refusal",
    "TRAIN_CHECKPOINT_KEYS",
    "param_shapes",
    "parameters",
    "to_torch",
    "weight_bytes",
]
