"""Weights from one variant of a network to another (``nasdsl transfer``, ``nasdsl.transfer_weights``).

Every tensor of the child (its ``state_dict``, as :func:`nasdsl.weights.parameters`
lists it) is reported as one of:

* ``copied``: the parent has a tensor of that name (top-level entries that
  ``nasdsl diff`` finds renamed are followed) and the same shape, whose
  values all keep their meaning;
* ``adapted``: the parent's tensor of that name differs in shape, or its
  channels mean something else, and part of it carries over, by this rule:
  a channel dimension (a layer's output channels: dimension 0 of its weight,
  its bias, a batch norm's parameters and statistics; its input channels:
  dimension 1 of a convolution's weight with one group or of a linear
  layer's weight) keeps each child channel that means what a parent channel
  meant, in its place. What a channel means is traced back through each op's
  channel map in the registry (``OpDef.channel_map``: concatenations, slices,
  channel shuffles, flattening, pooling, element-wise ops, depthwise
  convolutions) to the layer that made it and its index there, the leading
  channels of a layer being the ones it keeps; a channel made by an op the
  registry gives no map for (a reshape) means the same only where both
  graphs made it from the same channels; a sum's channels mean what its
  earliest input's do (a residual stream keeps its meaning whatever the
  depth). A dimension that stacks equal parts (attention's query, key and
  value projections: ``Weight.parts``) keeps each part's leading rows. A kernel keeps its centre (a 3x3
  kernel becomes the middle of a 5x5 one, a 5x5 is cut to its middle 3x3);
  anything else keeps its leading slice. The rest of the tensor is drawn by
  the child's ``init`` rules (:func:`nasdsl.weights.initial_weights`, seeded);
* ``initialised``: nothing carries over (no tensor of that name, another
  rank, or no channel that means the same); drawn by the child's ``init`` rules.

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
from nasdsl.errors import UsageError, WeightsError
from nasdsl.ops import OPS
from nasdsl.ops.conv_transpose import CONV_TRANSPOSE_NAMES

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


def _graph(spec, role: str) -> nx.DiGraph:
    """The graph IR of the ``role`` ("parent", "child") spec (see :func:`refuse_ensemble`)."""
    named = os.fspath(spec) if isinstance(spec, (str, os.PathLike)) else None
    if named is not None:
        from nasdsl.api import compile_spec

        spec = compile_spec(spec)
    refuse_ensemble(spec, role, named)
    return ir.as_graph(spec)


def refuse_ensemble(compiled, role: str, named: str | None = None) -> None:
    """A :class:`UsageError` (at ``--from`` or ``--to``) when the ``role`` ("parent", "child")
    spec ``compiled``, read from the file ``named``, is an ensemble: weights are transferred
    one member spec at a time."""
    from nasdsl.ensemble import CompiledEnsemble

    if isinstance(compiled, CompiledEnsemble):
        raise UsageError(
            f"the {role} {named or ir.info(compiled.graph).name} is an ensemble; weights are transferred between "
            "model specs: run it on a member's spec",
            path="--from" if role == "parent" else "--to",
        )


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

    pg, cg = _graph(parent, "parent"), _graph(child, "child")
    state = load_weights(weights) if isinstance(weights, (str, os.PathLike)) else dict(weights)
    floats = check_weights(pg, pg, state)
    source = {k: floats[k] if k in floats else _array(v) for k, v in state.items()}
    renamed = _renames(pg, cg)
    fresh = initial_weights(cg, seed=seed)
    back = {old: new for new, old in renamed.items()}
    c_layout, p_layout = _layouts(cg), _layouts(pg, lambda n: _child_name(n, back))
    out: dict[str, np.ndarray] = {}
    report: list[Moved] = []
    used: set[str] = set()
    for key, (node, name, w) in _weights_by_key(cg).items():
        pnode = _parent_name(node, renamed)
        pkey = f"{pnode}.{name}" if name else pnode
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
        maps = _index_maps(cg, pg, node, pnode, w, tuple(old.shape), c_layout, p_layout)
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


def _child_name(node: str, back: Mapping[str, str]) -> str:
    """A parent node's name in the child's terms (its top-level entry renamed back)."""
    top, _, rest = node.partition(".")
    return back.get(top, top) + ("." + rest if rest else "")


def _parent_name(node: str, renamed: Mapping[str, str]) -> str:
    top, _, rest = node.partition(".")
    if top in renamed:
        return renamed[top] + ("." + rest if rest else "")
    return node


def _layouts(g: nx.DiGraph, name_of=lambda n: n) -> dict[str, tuple]:
    """For every node, what each channel of its output means (along its channel axis, or its last
    axis without one), as a key two graphs can compare: worked out from each op's
    ``channel_map`` in the registry alone. A channel a layer makes (a convolution's filter, a
    linear layer's unit) is ``(layer, index)``; one an op takes from an input keeps that input
    channel's key (spread over several flat features, each with its place among them); one an
    op without weights makes some other way (a reshape) is keyed by the op and everything it
    read, so that it matches only where the two graphs computed it from the same channels.
    ``name_of`` gives a node's name in the other graph's terms (renamed entries)."""
    out: dict[str, tuple] = {}
    order = ir.order(g)
    place = {n: i for i, n in enumerate(order)}
    for n in order:
        data = ir.node(g, n)
        t = data.type
        if t is None or t.rank == 0:
            out[n] = ()
            continue
        axis = t.channel_axis if t.channel_axis is not None else t.rank - 1
        size = t.shape[axis]
        ins = ir.inputs(g, n)
        opdef = OPS.get(data.op)
        mapped = None
        if data.op == "add" and len(ins) > 1 and len({ir.node(g, i).shape for i in ins}) == 1:
            # a sum's channels mean what its earliest input's do: a residual stream keeps the
            # meaning of where it began, whatever the depth (ViT's final LayerNorm and head)
            first = min(range(len(ins)), key=lambda k: place[ins[k]])
            mapped = tuple((first, i) for i in range(size))
        elif opdef is not None and opdef.channel_map is not None and ins:
            try:
                mapped = opdef.channel_map(ir.input_types(g, n), data.attrs, t)
            except (TypeError, ValueError, KeyError, IndexError):
                mapped = None
        if mapped is not None and len(mapped) == size:
            out[n] = _spread(tuple(None if m is None else out[ins[m[0]]][m[1]] for m in mapped), n, name_of)
        elif data.op == "input" or (opdef is not None and opdef.has_weights):
            out[n] = tuple((name_of(n), i) for i in range(size))
        else:
            made = hash((data.op, tuple(sorted(map(repr, data.attrs.items()))), tuple(out[i] for i in ins)))
            out[n] = tuple((name_of(n), i, made) for i in range(size))
    return out


def _spread(keys: tuple, n: str, name_of) -> tuple:
    """Channels an op took from its inputs, with those it made itself (None) keyed as its own; a
    channel spread over several outputs (flat features) gets its place among them."""
    counts: dict[object, int] = {}
    for k in keys:
        counts[k] = counts.get(k, 0) + 1
    seen: dict[object, int] = {}
    out = []
    for i, k in enumerate(keys):
        if k is None:
            out.append((name_of(n), i))
        elif counts[k] == 1:
            out.append(k)
        else:
            seen[k] = seen.get(k, -1) + 1
            out.append((k, seen[k], counts[k]))
    return tuple(out)


def _leading(c: int, p: int) -> tuple[np.ndarray, np.ndarray]:
    import numpy as np

    n = min(c, p)
    return np.arange(n), np.arange(n)


def _centred(c: int, p: int) -> tuple[np.ndarray, np.ndarray]:
    import numpy as np

    n = min(c, p)
    return np.arange(n) + (c - n) // 2, np.arange(n) + (p - n) // 2


def _matched(child: tuple, parent: tuple, c: int, p: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices along a channel dimension: each child channel and the parent channel that means
    the same thing, where there is one (nothing where the layouts do not describe the dimension)."""
    import numpy as np

    if len(child) != c or len(parent) != p:  # another axis: the same where everything before is the same
        return _leading(c, p) if child == parent else (np.arange(0), np.arange(0))
    where = {k: j for j, k in enumerate(parent)}
    pairs = [(i, where[k]) for i, k in enumerate(child) if k in where]
    if not pairs:
        return np.arange(0), np.arange(0)
    ci, pi = zip(*pairs, strict=True)
    return np.asarray(ci), np.asarray(pi)


def _index_maps(cg, pg, node, pnode, weight, pshape, c_layout, p_layout):
    """For each dimension of the tensor: (child indices, parent indices) that carry over. A
    layer's output channels (dimension 0 of its weight, its bias, a BatchNorm's statistics) and
    the input channels of a convolution of one group, a linear layer or attention's input
    projection (dimension 1) are matched by what they mean (:func:`_layouts`); a kernel keeps its
    centre; a dimension stacking equal parts (attention's query, key and value) maps each part
    alone; anything else keeps its leading part."""
    data = ir.node(cg, node)
    op, name, cshape = data.op, weight.name, weight.shape
    pdata = ir.node(pg, pnode) if pnode in pg else None
    same_op = pdata is not None and pdata.op == op
    conv = op.startswith("conv") and op[4:].rstrip("d").isdigit()
    projection = name == "weight" and op == "linear" or name == "in_proj_weight" and op == "attention"
    maps = []
    for dim, (c, p) in enumerate(zip(cshape, pshape, strict=True)):
        if not same_op or name == "num_batches_tracked":
            maps.append(_leading(c, p))
        elif name == "weight" and op in CONV_TRANSPOSE_NAMES.values():
            maps.append(_transposed_map(cg, pg, node, pnode, dim, c, p, c_layout, p_layout))
        elif dim == 0 and weight.parts > 1 and c % weight.parts == 0 and p % weight.parts == 0:
            maps.append(_in_parts(weight.parts, c, p))
        elif dim == 0 and c == len(c_layout[node]):
            maps.append(_matched(c_layout[node], p_layout[pnode], c, p))
        elif dim == 1 and (projection or (conv and name == "weight" and data.attrs["groups"] == 1)):
            c_in, p_in = ir.inputs(cg, node), ir.inputs(pg, pnode)
            one_group = not conv or pdata.attrs["groups"] == 1
            maps.append(_matched(c_layout[c_in[0]], p_layout[p_in[0]], c, p) if one_group else _leading(0, 0))
        elif conv and name == "weight" and dim >= 2:
            maps.append(_centred(c, p))
        else:
            maps.append(_leading(c, p))
    return maps


def _transposed_map(cg, pg, node, pnode, dim, c, p, c_layout, p_layout):
    """One dimension of a transposed convolution's weight, laid out ``(C_in, out / groups,
    *kernel)``: with one group in both, dimension 0 is matched by what the input's channels mean
    and dimension 1 by what the output's mean; grouped, their leading part is kept (nothing
    where only the parent is grouped); a kernel keeps its centre."""
    if dim >= 2:
        return _centred(c, p)
    groups, pgroups = ir.node(cg, node).attrs["groups"], ir.node(pg, pnode).attrs["groups"]
    if groups != 1:
        return _leading(c, p)
    if pgroups != 1:
        return _leading(0, 0)
    if dim == 0:
        return _matched(c_layout[ir.inputs(cg, node)[0]], p_layout[ir.inputs(pg, pnode)[0]], c, p)
    return _matched(c_layout[node], p_layout[pnode], c, p)


def _in_parts(parts: int, c: int, p: int) -> tuple[np.ndarray, np.ndarray]:
    """The leading rows of each of ``parts`` equal blocks: a narrower attention's queries come
    from the parent's queries, its keys from its keys, its values from its values."""
    import numpy as np

    cn, pn = c // parts, p // parts
    n = min(cn, pn)
    return (
        np.concatenate([np.arange(n) + k * cn for k in range(parts)]),
        np.concatenate([np.arange(n) + k * pn for k in range(parts)]),
    )


def _weights_by_key(g: nx.DiGraph) -> dict[str, tuple[str, str, object]]:
    """Each state_dict key of ``g`` (as :func:`nasdsl.weights.parameters` lists them) with its
    node, its name in the node's module ("" for a tensor that is the node's own: ViT's class
    token, ``encoder.pos_embedding``) and its :class:`~nasdsl.ops.Weight`."""
    from nasdsl.weights import parameters

    out: dict[str, tuple[str, str, object]] = {}
    for n in ir.order(g):
        data = ir.node(g, n)
        if data.op not in OPS:
            continue
        for w in OPS[data.op].weights(ir.input_types(g, n), data.attrs):
            out[f"{n}.{w.name}" if w.name else n] = (n, w.name, w)
    return {k: out[k] for k in parameters(g)}


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
