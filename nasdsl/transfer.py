"""Weights from one variant of a network to another (``nasdsl transfer``, ``nasdsl.transfer_weights``).

Every tensor of the child (its ``state_dict``, as :func:`nasdsl.weights.parameters`
lists it) is reported as one of:

* ``copied``: the parent has a tensor of that name (top-level entries that
  ``nasdsl diff`` finds renamed are followed) and the same shape, whose
  values all keep their meaning;
* ``adapted``: the parent's tensor of that name differs in shape, or its
  channels mean something else, and part of it carries over, by this rule:
  along an output dimension (dimension 0 of a convolution's or linear
  layer's weight, a bias) the leading channels are kept; along an input
  dimension (dimension 1 of a convolution's weight with one group or of a
  linear layer's weight, a batch norm's parameters and statistics) each
  channel is traced to the layer that made it, through ``concat`` and
  ``flatten``, and the leading channels of each such source that both have are
  kept, in place (so a wider branch of an Inception module does not shift its
  neighbours' channels); a kernel keeps its centre (a 3x3 kernel becomes the
  middle of a 5x5 one, a 5x5 is cut to its middle 3x3); anything else keeps
  its leading slice. The rest of the tensor is drawn by the child's ``init``
  rules (:func:`nasdsl.weights.initial_weights`, seeded);
* ``initialised``: nothing carries over (no tensor of that name, another
  rank, or no channel in common); drawn by the child's ``init`` rules.

Parent tensors that no child tensor reads are reported as ``dropped``: nothing
is left out silently. With ``strict``, anything but ``copied`` is an error.
No torch is needed for ``.safetensors`` weights (and numpy is imported only when weights move).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import networkx as nx

from nasdsl import ir
from nasdsl.errors import WeightsError

if TYPE_CHECKING:
    import numpy as np

STATUSES = ("copied", "adapted", "initialised", "dropped")
#: how many tensors an error lists before "and N more"
_SHOWN = 8


@dataclass(frozen=True)
class Moved:
    """What became of one tensor: ``key`` is the child's (the parent's for ``dropped``);
    ``source`` the parent tensor it was read from; ``copied`` of ``size`` values came from it."""

    key: str
    status: str
    shape: tuple[int, ...]
    source: str | None = None
    source_shape: tuple[int, ...] | None = None
    copied: int = 0
    size: int = 0
    note: str = ""


@dataclass(frozen=True)
class Transfer(Mapping):
    """The child's state_dict (numpy arrays, a Mapping that ``build_model(weights=...)`` takes)
    and the report: one :class:`Moved` per child tensor, then one per parent tensor dropped."""

    weights: dict[str, np.ndarray] = field(repr=False)
    report: tuple[Moved, ...]

    def __getitem__(self, key: str) -> np.ndarray:
        return self.weights[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.weights)

    def __len__(self) -> int:
        return len(self.weights)

    def counts(self) -> dict[str, int]:
        return {s: sum(1 for m in self.report if m.status == s) for s in STATUSES}

    def as_dict(self) -> dict:
        return {
            "tensors": [
                {
                    "key": m.key,
                    "status": m.status,
                    "shape": list(m.shape),
                    "source": m.source,
                    "source_shape": list(m.source_shape) if m.source_shape is not None else None,
                    "copied": m.copied,
                    "size": m.size,
                    "note": m.note,
                }  # fmt: skip
                for m in self.report
            ],
            "counts": self.counts(),
        }


def _graph(spec) -> nx.DiGraph:
    if isinstance(spec, (str, os.PathLike)):
        from nasdsl.api import compile_spec

        return compile_spec(spec).graph
    return ir.as_graph(spec)


def _array(value: object) -> np.ndarray:
    import numpy as np

    if isinstance(value, np.ndarray):
        return value
    tensor = value.detach().cpu()  # a torch tensor (check_weights let only tensor-likes through)
    if tensor.is_floating_point():
        tensor = tensor.float()
    return tensor.numpy()


def transfer_weights(parent, weights, child, *, strict: bool = False, seed: int = 0) -> Transfer:
    """The child's weights made from the parent's (see the module docstring).

    ``parent`` and ``child`` are compiled specs, graphs or spec files; ``weights`` is the
    parent's state_dict (numpy arrays or torch tensors) or a ``.safetensors`` / ``torch.save``
    file, and must fit the parent. Raises :class:`WeightsError` when it does not, and with
    ``strict`` when anything is not copied.
    """
    import numpy as np

    from nasdsl.weights import check_weights, initial_weights, load_weights, parameters

    pg, cg = _graph(parent), _graph(child)
    state = load_weights(weights) if isinstance(weights, (str, os.PathLike)) else dict(weights)
    floats = check_weights(pg, pg, state)
    source = {k: floats[k] if k in floats else _array(v) for k, v in state.items()}
    renamed = _renames(pg, cg)
    fresh = initial_weights(cg, seed=seed)
    c_layout, p_layout = _layouts(cg), _layouts(pg)
    out: dict[str, np.ndarray] = {}
    report: list[Moved] = []
    used: set[str] = set()
    for key, w in parameters(cg).items():
        node, name = key.rsplit(".", 1)
        pnode = _parent_name(node, renamed)
        pkey = f"{pnode}.{name}"
        value = fresh[key]
        size = int(math.prod(w.shape))
        if pkey not in source:
            out[key] = value
            report.append(Moved(key, "initialised", w.shape, size=size, note="no tensor of this name in the parent"))
            continue
        used.add(pkey)
        old = source[pkey]
        if old.ndim != len(w.shape):
            out[key] = value
            note = f"the parent's has {old.ndim} dimensions"
            report.append(Moved(key, "initialised", w.shape, pkey, tuple(old.shape), size=size, note=note))
            continue
        maps = _index_maps(cg, pg, node, pnode, name, w.shape, tuple(old.shape), c_layout, p_layout, renamed)
        copied = math.prod(len(c) for c, _ in maps)
        if copied == 0:
            out[key] = value
            report.append(
                Moved(key, "initialised", w.shape, pkey, tuple(old.shape), size=size, note=_nothing(old.shape))
            )
            continue
        identity = tuple(old.shape) == w.shape and all(
            np.array_equal(c, p) and len(c) == n for (c, p), n in zip(maps, w.shape, strict=True)
        )
        if identity:
            out[key] = np.array(old, dtype=value.dtype, copy=True)
            report.append(Moved(key, "copied", w.shape, pkey, tuple(old.shape), size, size))
            continue
        value = np.array(value, copy=True)
        value[np.ix_(*(c for c, _ in maps))] = old[np.ix_(*(p for _, p in maps))]
        out[key] = value
        note = _note(maps, w.shape, tuple(old.shape))
        report.append(Moved(key, "adapted", w.shape, pkey, tuple(old.shape), copied, size, note))
    in_order = [*(k for k in parameters(pg) if k in source), *(k for k in source if k not in parameters(pg))]
    for pkey in in_order:
        value = source[pkey]
        if pkey not in used:
            report.append(
                Moved(pkey, "dropped", tuple(value.shape), size=int(value.size), note="no tensor of the child reads it")
            )
    result = Transfer(out, tuple(report))
    if strict:
        bad = [m for m in result.report if m.status != "copied"]
        if bad:
            shown = ", ".join(f"{m.key} ({m.status})" for m in bad[:_SHOWN])
            more = f", and {len(bad) - _SHOWN} more" if len(bad) > _SHOWN else ""
            raise WeightsError(f"--strict: {len(bad)} tensors are not copied as they are: {shown}{more}")
    return result


# ---------------------------------------------------------------------------
# Which parent tensor, which channels


def _renames(pg: nx.DiGraph, cg: nx.DiGraph) -> dict[str, str]:
    """Child top-level entry name -> parent name, for entries ``nasdsl diff`` finds renamed."""
    from nasdsl.diff import compare

    return {e.name: e.was for e in compare(pg, cg).entries if e.status == "renamed" and e.was}


def _parent_name(node: str, renamed: Mapping[str, str]) -> str:
    top, _, rest = node.partition(".")
    if top in renamed:
        return renamed[top] + ("." + rest if rest else "")
    return node


#: a run of channels: (the node that made them, how many, values per channel)
Segment = tuple[str, int, int]


def _layouts(g: nx.DiGraph) -> dict[str, tuple[Segment, ...]]:
    """For every node, where the channels (or flat features) of its output come from."""
    out: dict[str, tuple[Segment, ...]] = {}
    for n in ir.order(g):
        data = ir.node(g, n)
        op, shape = data.op, data.shape
        ins = ir.inputs(g, n)
        if op in ("input", "conv2d", "linear") or not ins:
            out[n] = ((n, shape[0], 1),)
        elif op == "concat":
            out[n] = tuple(s for i in ins for s in out[i])
        elif op == "flatten":
            src = ir.node(g, ins[0]).shape
            per = math.prod(src[1:]) if len(src) > 1 else 1
            out[n] = tuple((o, c, s * per) for o, c, s in out[ins[0]])
        else:
            out[n] = out[ins[0]]
    return out


def _leading(c: int, p: int) -> tuple[np.ndarray, np.ndarray]:
    import numpy as np

    n = min(c, p)
    return np.arange(n), np.arange(n)


def _centred(c: int, p: int) -> tuple[np.ndarray, np.ndarray]:
    import numpy as np

    n = min(c, p)
    return np.arange(n) + (c - n) // 2, np.arange(n) + (p - n) // 2


def _traced(child: tuple[Segment, ...], parent: tuple[Segment, ...], renamed: Mapping[str, str], c: int, p: int):
    """Indices along an input dimension: each source's leading channels that both sides have."""
    import numpy as np

    if sum(n * s for _, n, s in child) != c or sum(n * s for _, n, s in parent) != p:
        return _leading(c, p)  # the layout does not describe this dimension: keep the leading slice
    back = {old: new for new, old in renamed.items()}
    offsets: list[tuple[str, int, int, int]] = []
    at = 0
    for origin, n, s in parent:
        top, _, rest = origin.partition(".")
        name = back.get(top, top) + ("." + rest if rest else "")
        offsets.append((name, n, s, at))
        at += n * s
    taken: set[int] = set()
    ci: list[np.ndarray] = []
    pi: list[np.ndarray] = []
    at = 0
    for origin, n, s in child:
        for j, (name, pn, ps, pat) in enumerate(offsets):
            if j not in taken and name == origin and ps == s:
                taken.add(j)
                k = min(n, pn) * s
                ci.append(np.arange(at, at + k))
                pi.append(np.arange(pat, pat + k))
                break
        at += n * s
    if not ci:
        return np.arange(0), np.arange(0)
    return np.concatenate(ci), np.concatenate(pi)


def _index_maps(cg, pg, node, pnode, name, cshape, pshape, c_layout, p_layout, renamed):
    """For each dimension of the tensor: (child indices, parent indices) that carry over."""
    data = ir.node(cg, node)
    op = data.op
    pdata = ir.node(pg, pnode) if pnode in pg else None
    same_op = pdata is not None and pdata.op == op

    def traced(dim: int):
        c_in, p_in = ir.inputs(cg, node), ir.inputs(pg, pnode) if pdata is not None else []
        if not c_in or not p_in:
            return _leading(cshape[dim], pshape[dim])
        return _traced(c_layout[c_in[0]], p_layout[p_in[0]], renamed, cshape[dim], pshape[dim])

    maps = []
    for dim, (c, p) in enumerate(zip(cshape, pshape, strict=True)):
        if not same_op:
            maps.append(_leading(c, p))
        elif op == "conv2d" and name == "weight":
            if dim == 1 and data.attrs["groups"] == 1 and pdata.attrs["groups"] == 1:
                maps.append(traced(1))
            elif dim >= 2:
                maps.append(_centred(c, p))
            else:
                maps.append(_leading(c, p))
        elif op == "linear" and name == "weight" and dim == 1:
            maps.append(traced(1))
        elif op == "batch_norm" and name != "num_batches_tracked":
            maps.append(traced(0))
        else:
            maps.append(_leading(c, p))
    return maps


def _nothing(pshape) -> str:
    return f"the parent's is {'x'.join(map(str, pshape))}, with no channel in common"


def _note(maps, cshape: tuple[int, ...], pshape: tuple[int, ...]) -> str:
    """``from 64x192x1x1; dim 0: 64 -> 32``: the parent's shape and the dimensions that changed
    (with how many entries carried over where that is not all of the child's)."""
    import numpy as np

    parts = ["from " + ("x".join(map(str, pshape)) or "a scalar")]
    for dim, ((c, p), n, pn) in enumerate(zip(maps, cshape, pshape, strict=True)):
        if n != pn or not np.array_equal(c, p) or len(c) != n:
            moved = "" if len(c) == n else f", {len(c)} carried over"
            parts.append(f"dim {dim}: {pn} -> {n}{moved}" if n != pn else f"dim {dim}: channels moved{moved}")
    return "; ".join(parts)


__all__ = ["Moved", "Transfer", "transfer_weights"]
