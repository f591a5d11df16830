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

The result is ``spec_yaml``'s own text, byte for byte: where the entries cannot
be told apart with certainty in what ``spec_yaml`` wrote (a key that YAML writes
as a complex key, or anything else that does not split into as many entries as
were written), the variant's document is written whole instead.
"""

from __future__ import annotations

import json

from nasdsl.document import spec_yaml
from nasdsl.space import Space

#: part texts kept before the memory is emptied (a long search over a large space)
KEEP = 50_000


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

    def __call__(self, picks: tuple[int, ...], document_json: str) -> str:
        """The text of the variant ``picks`` make, whose canonical JSON is ``document_json``."""
        if not self.entries:
            return spec_yaml(json.loads(document_json))
        memos = [(n, tuple(picks[i] for i in inside)) for n, (_, _, inside) in enumerate(self.entries)]
        missing = [m for m in memos if m not in self.texts]
        if missing:
            if len(self.texts) + len(missing) > self.keep:
                self.texts.clear()
                missing = memos
            doc = json.loads(document_json)
            if not self._write(missing, doc):
                return spec_yaml(doc)
        out = []
        for (key, _, _), first, memo in zip(self.entries, self.first, memos, strict=True):
            if first:
                out.append(self.heads[key])
            out.append(self.texts[memo])
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
