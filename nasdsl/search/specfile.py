"""A trial's ``spec.yaml``, written from the texts of its parts, each part written once.

The variants of a space share most of their document: the templates, the
layers no choice reaches. :func:`nasdsl.document.spec_yaml` writes the whole
document each time, which for GoogLeNet costs about 1.5 ms, more than the rest
of what a search adds to a trial. A block mapping is its entries one after the
other, each written the same wherever it stands, so :class:`SpecTexts` cuts the
document into its top-level entries and, under a mapping at the top (``model``,
``templates``), that mapping's entries. Choices replace values and never keys,
so every variant has the same entries, and an entry's text depends only on the
options picked for the points written inside it: the text is kept under those
picks. A variant's spec is the kept texts joined; the entries it changes are
written together, in one call of ``spec_yaml``.

An entry whose choices are scalars is not written per variant at all: its
text is cut where the choices stand (:class:`_Cut`), and a variant's is the
pieces joined with the text of each option picked, as ``spec_yaml`` writes that
scalar where it stands. That is ``spec_yaml``'s text when the variant's entry is
laid out as the cut one is: the same mappings and lists on one line (decided by
the lengths of the values: the cut is made only where the variants with each
choice's shortest option and with its longest lay it out alike, and a longer
value only makes a one-line collection less likely to stay one), and no line
wrapped (every line, with the longest option of each choice on it, fits in the
width). A cut is checked against ``spec_yaml`` on a few variants when it is
made; an entry that is not cut is written per variant and kept, as above.

The result is ``spec_yaml``'s own text, byte for byte: where the entries cannot
be told apart with certainty in what ``spec_yaml`` wrote (a key that YAML writes
as a complex key, or anything else that does not split into as many entries as
were written), the variant's document is written whole instead.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass

from nasdsl import document
from nasdsl.document import WIDTH, canonical_json, is_flow, scalar_yaml, spec_yaml, styled, styled_like
from nasdsl.space import Space

#: part texts kept before the memory is emptied (a long search over a large space)
KEEP = 50_000
#: the variants a cut entry is checked on against ``spec_yaml`` when it is cut (beside the
#: shortest and the longest options): each choice's first options in turn
CHECKED = 8


class SpecTexts:
    """``spec_yaml`` of the plain documents of ``space``'s variants, from kept parts."""

    def __init__(self, space: Space, keep: int = KEEP):
        self.keep = keep
        self.texts: dict[tuple, str] = {}
        self.heads: dict[str, str] = {}
        under: dict[tuple, set[int]] = {}
        for i, point in enumerate(space.points):
            for pos in point.positions:
                under.setdefault(tuple(pos.keys[:2]), set()).add(i)
        whole = {keys[0] for keys in under if len(keys) == 1}  # a choice in place of a whole entry
        #: (top key, key under it or None for the whole entry, the points written inside)
        self.entries: list[tuple[str, object, tuple[int, ...]]] = []
        #: the entries the text of their top key (``model:``) comes before
        self.first: list[bool] = []
        default = space.document_of(space.default)
        for key, value in default.items():
            if isinstance(value, dict) and value and key not in whole:
                for n, sub in enumerate(value):
                    self.entries.append((key, sub, tuple(sorted(under.pop((key, sub), ())))))
                    self.first.append(n == 0)
            else:
                inside = set()
                for keys in [k for k in under if k[0] == key]:
                    inside |= under.pop(keys)
                self.entries.append((key, None, tuple(sorted(inside))))
                self.first.append(False)
        if under or not all(isinstance(k, str) for k in default):
            self.entries = []  # a choice where no entry is, a key JSON would change: written whole
        for key in [k for k, v in default.items() if self.entries and isinstance(v, dict) and v and k not in whole]:
            parts = _split(spec_yaml({key: default[key]}), len(default[key]))
            if parts is not None:
                self.heads[key] = parts[0]
                continue
            # its entries cannot be told apart (a complex key): the mapping is one entry
            at = [n for n, e in enumerate(self.entries) if e[0] == key]
            inside = tuple(sorted({i for n in at for i in self.entries[n][2]}))
            self.entries[at[0] : at[-1] + 1] = [(key, None, inside)]
            self.first[at[0] : at[-1] + 1] = [False]
        #: by entry, its cut (None: written per variant and kept)
        self.cuts: list[_Cut | None] = [None] * len(self.entries)
        if self.entries:
            self._cut(space)

    def _cut(self, space: Space) -> None:
        """Cut the entries whose choices are scalars (see the module docstring)."""
        plain = json.loads(canonical_json(space.document_of(space.default)))
        options = []  # each point's options as its document holds them (None: a point no entry is cut for)
        for p in space.points:
            values = [
                json.loads(canonical_json(document.to_yaml(o, p.option_locs[k]))) for k, o in enumerate(p.options)
            ]
            options.append(None if p.kind == "block" or any(isinstance(v, (dict, list)) for v in values) else values)
        for n, (key, sub, inside) in enumerate(self.entries):
            if inside and all(options[i] is not None for i in inside):
                self.cuts[n] = _Cut.make(space, plain, key, sub, inside, options)

    def __call__(self, picks: tuple[int, ...], document_json: str) -> str:
        """The text of the variant ``picks`` make, whose canonical JSON is ``document_json``."""
        if not self.entries:
            return spec_yaml(json.loads(document_json))
        memos = [
            (n, tuple(picks[i] for i in inside)) if cut is None else None
            for n, ((_, _, inside), cut) in enumerate(zip(self.entries, self.cuts, strict=True))
        ]
        missing = [m for m in memos if m is not None and m not in self.texts]
        if missing:
            if len(self.texts) + len(missing) > self.keep:
                self.texts.clear()
                missing = [m for m in memos if m is not None]
            doc = json.loads(document_json)
            if not self._write(missing, doc):
                return spec_yaml(doc)
        out = []
        for (key, _, _), first, memo, cut in zip(self.entries, self.first, memos, self.cuts, strict=True):
            if first:
                out.append(self.heads[key])
            out.append(self.texts[memo] if cut is None else cut.text(picks))
        return "".join(out)

    def _write(self, missing: list[tuple], doc: dict) -> bool:
        """Write the ``missing`` entries from the variant's plain document; False when what
        ``spec_yaml`` wrote does not split into them."""
        grouped: dict[object, list[tuple]] = {}
        for memo in missing:
            key, sub, _ = self.entries[memo[0]]
            if sub is None:
                self.texts[memo] = spec_yaml({key: doc[key]})
            else:
                grouped.setdefault(key, []).append(memo)
        for key, memos in grouped.items():
            subs = [self.entries[m[0]][1] for m in memos]
            parts = _split(spec_yaml({key: {s: doc[key][s] for s in subs}}), len(subs))
            if parts is None:
                return False
            self.heads[key], texts = parts
            self.texts.update(zip(memos, texts, strict=True))
        return True


_MARK = re.compile("\ue000([0-9]+)\ue001")


@dataclass(frozen=True)
class _Cut:
    """An entry's text cut where its choices stand: ``pieces[0]``, then for each hole the text
    of the option picked for its point and the next piece."""

    pieces: tuple[str, ...]
    points: tuple[int, ...]
    #: by hole, each option's text where the hole stands
    texts: tuple[tuple[str, ...], ...]

    def text(self, picks: tuple[int, ...]) -> str:
        out = [self.pieces[0]]
        for point, texts, piece in zip(self.points, self.texts, self.pieces[1:], strict=True):
            out.append(texts[picks[point]])
            out.append(piece)
        return "".join(out)

    @classmethod
    def make(cls, space: Space, plain: dict, key: str, sub, inside: tuple[int, ...], options: list) -> _Cut | None:
        """The cut of the entry ``key`` (``sub`` under it) whose choices are the points ``inside``,
        each with the scalar ``options``; None where a variant could be laid out otherwise."""
        # a choice tied to others (a YAML alias) stands in other entries too: only this one's places
        prefix = (key,) if sub is None else (key, sub)
        holes = [
            (pos.keys, i) for i in inside for pos in space.points[i].positions if pos.keys[: len(prefix)] == prefix
        ]

        def entry(values: dict[int, object] | list) -> dict:
            doc = {key: copy.deepcopy(plain[key] if sub is None else {sub: plain[key][sub]})}
            for n, (keys, i) in enumerate(holes):
                where = doc
                for k in keys[:-1]:
                    where = where[k]
                where[keys[-1]] = values[n] if isinstance(values, list) else values[i]
            return doc

        def body(text: str) -> str | None:
            if sub is None:
                return text
            parts = _split(text, 1)
            return None if parts is None else parts[1][0]

        default = styled(entry({i: options[i][space.default[i]] for i in inside}))
        layout = _layout(default)
        for pick in (min, max):  # the layout is decided by the values' lengths (document._short)
            if _layout(styled(entry({i: pick(options[i], key=lambda v: len(str(v))) for i in inside}))) != layout:
                return None
        marked = body(
            document.dump_styled(styled_like(entry([f"\ue000{n}\ue001" for n in range(len(holes))]), default))
        )
        if marked is None:
            return None
        cut = _MARK.split(marked)
        order = [int(n) for n in cut[1::2]]
        if sorted(order) != list(range(len(holes))) or any("\ue000" in p or "\ue001" in p for p in cut[0::2]):
            return None
        texts = []
        for n in order:
            keys, i = holes[n]
            flow, node = False, default
            for k in keys[:-1]:
                node = node[k]
                flow = flow or is_flow(node)
            written = tuple(scalar_yaml(v, flow) for v in options[i])
            if any("\n" in t for t in written):
                return None
            texts.append(written)
        made = cls(tuple(cut[0::2]), tuple(holes[n][1] for n in order), tuple(texts))
        # no line wrapped: each line fits with the longest option of every hole on it
        longest = iter(max(map(len, t)) for t in texts)
        for line in marked.split("\n"):
            if len(line) > WIDTH or len(_MARK.sub(lambda m: "x" * next(longest), line)) > WIDTH:
                return None
        rounds = [{i: r % len(options[i]) for i in inside} for r in range(CHECKED)]
        written = {}  # each point's options by the length of their texts, at all its holes
        for i, t in zip(made.points, made.texts, strict=True):
            written[i] = [a + len(b) for a, b in zip(written.get(i, [0] * len(t)), t, strict=True)]
        for pick in (min, max):
            rounds.append({i: pick(range(len(w)), key=w.__getitem__) for i, w in written.items()})
        for chosen in rounds:
            picks = list(space.default)
            for i, k in chosen.items():
                picks[i] = k
            if made.text(tuple(picks)) != body(spec_yaml(entry({i: options[i][k] for i, k in chosen.items()}))):
                return None
        return made


def _layout(node: object) -> tuple[bool, ...]:
    """Which collections of a :func:`styled` document are on one line, in the order they are met."""
    out: list[bool] = []

    def walk(n: object) -> None:
        if isinstance(n, dict):
            out.append(is_flow(n))
            for v in n.values():
                walk(v)
        elif isinstance(n, list):
            out.append(is_flow(n))
            for v in n:
                walk(v)

    walk(node)
    return tuple(out)


def _split(text: str, entries: int) -> tuple[str, list[str]] | None:
    """``KEY:\\n`` and the texts of the ``entries`` entries of the mapping under it, or None
    when the text does not split into exactly that many (a complex key, a key starting with ``-``)."""
    head, sep, body = text.partition("\n")
    if not sep or head.startswith((" ", "-", "?")) or not head.endswith(":"):
        return None
    lines = body.splitlines(keepends=True)
    starts = [
        i for i, line in enumerate(lines) if line.startswith("  ") and line[2:3] not in (" ", "-", "?", ":", "\n")
    ]
    if len(starts) != entries or not starts or starts[0] != 0:
        return None
    bounds = [*starts, len(lines)]
    return head + "\n", ["".join(lines[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]


__all__ = ["KEEP", "SpecTexts"]
