"""Which template parameter explains which layer setting: the search behind ``Inception(ch1x1, ...)``.

A template's uses differ in some settings (a convolution's width, a block's stride). Each
such *slot* has one value per use. :func:`explain` looks for the simplest expression of the
candidates (the constructor's arguments, recorded when the source was built, and the
parameters found so far) that gives the slot's value in every use: a candidate itself
(``ch3x3``), a multiple (``4 * planes``), a quotient (``planes // 2``), the padding that
keeps the size (``(kernel_size - 1) // 2``) or a product (``inp * expand_ratio``). A slot that
nothing explains becomes a parameter of its own, named after the slot (``conv_out``).
"""

from __future__ import annotations

import keyword
from dataclasses import dataclass

from nasdsl.spec import INPUT_SIZE_NAMES

#: names a parameter may not take: the spec reserves them, or they are words some attribute
#: reads literally (``padding: same``), or functions of the expression language
RESERVED = frozenset(
    {*INPUT_SIZE_NAMES, "self", "in", "same", "valid", "none", "tanh", "row", "batch", "channels", "last", "features"}
    | {"min", "max", "abs", "int", "round", "floor", "ceil", "make_divisible", "true", "false", "True", "False"}
)
#: attribute names and the argument names that usually set them (tried first)
SYNONYMS = {
    "out": ("out_channels", "out_features", "oup", "output_channels"),
    "kernel": ("kernel_size", "kernel", "k"),
    "stride": ("stride", "s"),
    "padding": ("padding",),
    "groups": ("groups",),
    "dilation": ("dilation",),
    "p": ("p", "dropout", "drop_rate", "stochastic_depth_prob", "sd_prob"),
    "eps": ("eps", "norm_eps"),
}


@dataclass(frozen=True)
class Expr:
    """An expression of a template's parameters, as the spec writes it (``4 * planes``)."""

    text: str

    def __str__(self) -> str:
        return self.text


def clean_name(name: str, taken: set[str]) -> str:
    """``name`` made a valid, unused parameter name."""
    base = "".join(c if c.isalnum() or c == "_" else "_" for c in name).strip("_") or "p"
    if base[0].isdigit():
        base = f"p{base}"
    if base in INPUT_SIZE_NAMES:  # the generated class's own argument for its input's size
        base = f"{base.removeprefix('in_')}_in"
    if base in RESERVED or keyword.iskeyword(base) or base.startswith("__"):
        base = f"{base}_"
    base = base[:60]
    out = base if base not in taken else next(f"{base}_{k}" for k in range(2, 1 << 20) if f"{base}_{k}" not in taken)
    taken.add(out)
    return out


def _same(a: object, b: object) -> bool:
    """Slot and argument values agree: 3 and (3, 3) are one kernel; 1 and True are not."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (list, tuple)) and not isinstance(b, (list, tuple)):
        return len(a) == 2 and a[0] == a[1] == b
    if isinstance(b, (list, tuple)) and not isinstance(a, (list, tuple)):
        return _same(b, a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and float(a) == float(b)
    return a == b


def _int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class Candidates:
    """The values each candidate takes in each use; ``None`` where a use did not give it
    (a keyword argument left to its default): such a use takes the slot's value."""

    def __init__(self, uses: int) -> None:
        self.uses = uses
        self.values: dict[str, list[object]] = {}
        self.order: list[str] = []
        #: the candidates that are the block's input width in every use (tried last)
        self.widths: set[str] = set()
        #: the candidates that are parameters of the constructor's signature (not **kwargs entries)
        self.from_signature: set[str] = set()

    def add(self, name: str, values: list[object]) -> None:
        if name not in self.values:
            self.order.append(name)
        self.values[name] = list(values)

    def ranked(self, attr: str) -> list[str]:
        preferred = [n for n in SYNONYMS.get(attr, (attr,)) if n in self.values]
        rest = [n for n in self.order if n not in preferred and n not in self.widths]
        return preferred + rest + [n for n in self.order if n in self.widths and n not in preferred]


def explain(values: list[object], cands: Candidates, attr: str) -> tuple[str, list[str]] | None:
    """The simplest expression of the candidates that gives ``values`` (``None`` entries: uses
    without the slot) and the candidates it uses; it fills in the values of candidates a use
    did not give. None when nothing fits."""
    present = [k for k, v in enumerate(values) if v is not None]
    ranked = cands.ranked(attr)

    def fits(name: str, want) -> bool:
        vals = cands.values[name]
        if not any(vals[k] is not None for k in present):
            return False
        return all(vals[k] is None or want(vals[k], values[k]) for k in present)

    def commit(name: str, make) -> None:
        vals = cands.values[name]
        for k in present:
            if vals[k] is None:
                vals[k] = make(values[k])

    for name in ranked:
        if fits(name, lambda a, v: _same(v, a)):
            commit(name, lambda v: v)
            return name, [name]
    ints = all(_int(values[k]) for k in present)
    if not ints:
        if all(isinstance(values[k], bool) for k in present):
            for name in ranked:
                if all(isinstance(cands.values[name][k], bool) for k in present) and fits(
                    name, lambda a, v: a == (not v)
                ):
                    return f"not {name}", [name]
        return None
    full = [n for n in ranked if all(_int(cands.values[n][k]) for k in present)]
    for name in full:
        a0 = cands.values[name][present[0]]
        v0 = values[present[0]]
        if (
            a0
            and v0 % a0 == 0
            and v0 // a0 >= 2
            and all(values[k] == v0 // a0 * cands.values[name][k] for k in present)
        ):
            return f"{v0 // a0} * {name}", [name]
        if (
            v0
            and a0 % v0 == 0
            and a0 // v0 >= 2
            and all(values[k] == cands.values[name][k] // (a0 // v0) for k in present)
        ):
            return f"{name} // {a0 // v0}", [name]
    for name in full:
        if all(values[k] == (cands.values[name][k] - 1) // 2 for k in present):
            return f"({name} - 1) // 2", [name]
    for i, a in enumerate(full):
        for b in full[i:]:
            if all(values[k] == cands.values[a][k] * cands.values[b][k] for k in present):
                return f"{a} * {b}", [a, b]
    return None
