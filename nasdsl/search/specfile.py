"""A trial's ``spec.yaml``, written from the texts of its parts, each part written once.

The variants of a space share most of their document: the templates, the
layers no choice reaches. :func:`nasdsl.document.spec_yaml` writes the whole
document each time, which for GoogLeNet costs about 1.5 ms, more than the rest
of what a search adds to a trial. A block mapping is its entries one after the
other, each written the same wherever it stands, so :class:`SpecWriter` writes
each top-level entry and, under a mapping at the top (``model``, ``templates``),
each of its entries apart, keeps their texts by the JSON of what they hold, and
joins them. The entries a variant changes are written together, in one call of
``spec_yaml``. The result is ``spec_yaml``'s own text, byte for byte: where the
pieces cannot be told apart with certainty (a key that YAML writes as a complex
key, or anything else that does not split into as many entries as were
written) the entry is written whole instead.
"""

from __future__ import annotations

import json

from nasdsl.document import spec_yaml

#: part texts kept before the memory is emptied (a long search over a large space)
KEEP = 20_000


class SpecWriter:
    """``spec_yaml(doc)`` for plain documents (what ``json.loads`` gives), from kept parts."""

    def __init__(self, keep: int = KEEP):
        self.keep = keep
        self.texts: dict[str, str] = {}

    def __call__(self, doc: dict) -> str:
        if not isinstance(doc, dict) or not doc:
            return spec_yaml(doc)
        if len(self.texts) > self.keep:
            self.texts.clear()
        return "".join(self._entry(k, v) for k, v in doc.items())

    def _entry(self, key: str, value: object) -> str:
        """The text of one top-level entry."""
        if not isinstance(key, str) or not isinstance(value, dict) or not value:
            return self._whole(key, value)
        keys = [json.dumps([key, k, v], separators=(",", ":")) for k, v in value.items()]
        missing = [(k, v) for (k, v), m in zip(value.items(), keys, strict=True) if m not in self.texts]
        head = self.texts.get(json.dumps([key], separators=(",", ":")))
        if missing or head is None:
            parts = _split(spec_yaml({key: dict(missing or list(value.items())[:1])}), len(missing or [0]))
            if parts is None:
                return self._whole(key, value)
            head, written = parts
            self.texts[json.dumps([key], separators=(",", ":"))] = head
            for (k, v), text in zip(missing, written, strict=False):
                self.texts[json.dumps([key, k, v], separators=(",", ":"))] = text
        return head + "".join(self.texts[m] for m in keys)

    def _whole(self, key: object, value: object) -> str:
        memo = json.dumps([key, value], separators=(",", ":")) if isinstance(key, str) else None
        if memo is None:
            return spec_yaml({key: value})
        if memo not in self.texts:
            self.texts[memo] = spec_yaml({key: value})
        return self.texts[memo]


def _split(text: str, entries: int) -> tuple[str, list[str]] | None:
    """``KEY:\\n`` and the texts of the ``entries`` entries of the mapping under it, or None
    when the text does not split into exactly that many (a complex key, a key starting with ``-``)."""
    head, sep, body = text.partition("\n")
    if not sep or head.startswith((" ", "-", "?")) or not head.endswith(":"):
        return None
    lines = body.splitlines(keepends=True)
    starts = [
        i for i, line in enumerate(lines) if line.startswith("  ") and line[2:3] not in (" ", "-", "?", ":", "\n", "")
    ]
    if len(starts) != entries or (lines and starts[0] != 0):
        return None
    bounds = [*starts, len(lines)]
    return head + "\n", ["".join(lines[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]


__all__ = ["KEEP", "SpecWriter"]
