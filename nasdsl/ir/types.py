"""The IR's value types: immutable mappings, and the type of a tensor.

A node's output is a :class:`TensorType`: its shape without the batch
dimension (any rank), its element type, and the role of each axis
(:data:`AXES`), so that an op can say what it takes (``conv2d`` a channels-first
map ``(C, H, W)``, ``linear`` over the last axis of anything) and a message can
say what it got.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

#: The role of each axis of a tensor (the batch axis is never part of a type):
#:
#: - ``C``: channels of a map, or features of a token or of flat features
#: - ``T``: time (a video's frames), ``H`` and ``W``: height and width
#: - ``L``: a sequence (tokens, or the positions of a 1-D signal)
#: - ``?``: unknown (after a reshape that does not say)
AXES = "CTHWL?"

#: how a shape is shown for each layout in messages and shape comments
AXIS_NAMES = {"C": "C", "T": "T", "H": "H", "W": "W", "L": "L", "?": "?"}


class FrozenDict(dict):
    """A dict that cannot change after it is made: the IR's mapping (deeply immutable when
    its values are). Hashable when its values are; compares equal to a dict with the same items."""

    __slots__ = ()

    def _refuse(self, *args: object, **kwargs: object) -> None:
        raise TypeError("an IR mapping cannot change: make a new one (FrozenDict({**old, key: value}))")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _refuse  # type: ignore[assignment]
    __ior__ = _refuse  # type: ignore[assignment]

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(self.items()))

    def __reduce__(self) -> tuple[type, tuple[dict]]:
        return (FrozenDict, (dict(self),))

    def __copy__(self) -> FrozenDict:
        return self

    def __deepcopy__(self, memo: dict) -> FrozenDict:
        import copy

        return FrozenDict({k: copy.deepcopy(v, memo) for k, v in self.items()})

    def __repr__(self) -> str:
        return f"FrozenDict({dict.__repr__(self)})"

    def replace(self, **changes: object) -> FrozenDict:
        """A new mapping with ``changes`` applied."""
        return FrozenDict({**self, **changes})


EMPTY = FrozenDict()


def frozen(items: Mapping | Iterable | None = None) -> FrozenDict:
    """``items`` as a :class:`FrozenDict` (itself when it is one already)."""
    if items is None:
        return EMPTY
    if isinstance(items, FrozenDict):
        return items
    out = FrozenDict(items)
    return out if out else EMPTY


def default_axes(rank: int) -> str:
    """The layout of an input of ``rank`` when the spec does not say: flat features ``C``,
    tokens ``LC``, an image ``CHW``, a video ``CTHW``; unknown beyond."""
    return {1: "C", 2: "LC", 3: "CHW", 4: "CTHW"}.get(rank, "?" * rank)


@dataclass(frozen=True, slots=True)
class TensorType:
    """A tensor without its batch dimension: ``shape`` (any rank), ``axes`` (one letter of
    :data:`AXES` per axis, ``"CHW"``) and ``dtype`` (``float32``)."""

    shape: tuple[int, ...]
    axes: str
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if len(self.axes) != len(self.shape):
            raise ValueError(f"axes {self.axes!r} do not fit shape {self.shape}")

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def channel_axis(self) -> int | None:
        """The index of the channel (or feature) axis, or None."""
        i = self.axes.find("C")
        return None if i < 0 else i

    @property
    def channels_first(self) -> bool:
        """A map with channels first and every other axis spatial or a sequence: ``(C, H, W)``,
        ``(C, T, H, W)``, ``(C, L)``."""
        return self.axes[:1] == "C" and all(a in "THWL?" for a in self.axes[1:])

    def describe(self) -> str:
        """``(C, H, W) 64x56x56``: the layout and the sizes, for messages."""
        return f"({', '.join(AXIS_NAMES[a] for a in self.axes)}) {'x'.join(map(str, self.shape)) or 'scalar'}"


__all__ = ["AXES", "EMPTY", "FrozenDict", "TensorType", "default_axes", "frozen"]
