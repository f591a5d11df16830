"""What makes two trials the same variant: the one place a search decides it.

A variant's key is the SHA-256 of its plain document (the spec ``nasdsl space
--pick`` writes for it, choices replaced by the options picked, constraints
left out), as :func:`nasdsl.document.spec_hash` computes it: the same hash that
``nasdsl.compile_spec`` records as the compiled spec's ``sha256`` when that
plain spec is read back. Two picks that give the same document (a choice
under a false ``when`` keeps its default) are one variant; two documents that
differ only in how they write the same network (``2 * 32`` against ``64``)
are two. A stronger identity, by the architecture itself, is planned (issue
#23): it replaces this module and nothing else.

A search identifies every proposal, so :class:`Identities` makes the same text
without making the document: the canonical JSON of the spec with a marker where
each choice is written, cut at the markers once, and joined per variant with the
JSON of the options picked (about 0.004 ms for GoogLeNet's space, against 0.26 ms
through the document). It checks itself against :func:`identify` on variants
that pick each point's first :data:`CHECKED` options and its last (each option's
JSON is made by the function that writes it into the document, so what the check
guards is where the choices are cut), and where a space is out of its reach (a
block choice, whose option is a whole block; a choice written inside another;
any disagreement) it identifies through the document.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass

from nasdsl import document
from nasdsl.choices import substitute
from nasdsl.space import Space

#: the options of each point (the first ones, and the last) checked when a space is cut
CHECKED = 32


@dataclass(frozen=True)
class Identified:
    """A variant's key, and its plain document as the canonical JSON the key is computed from
    (what the parts of its spec file that no variant before it wrote are written from)."""

    key: str
    document_json: str


def identify(space: Space, picks: tuple[int, ...]) -> Identified:
    """The identity of the variant ``picks`` make of ``space``, with its document."""
    text = document.canonical_json(space.document_of(picks))
    return Identified(hashlib.sha256(text.encode()).hexdigest(), text)


def variant_key(space: Space, picks: tuple[int, ...]) -> str:
    """The identity of the variant ``picks`` make of ``space`` (64 hexadecimal digits): the same
    as :func:`nasdsl.document.spec_hash` of its plain document."""
    return identify(space, picks).key


class Identities:
    """:func:`identify` for the variants of one space, from a cut text where it can."""

    def __init__(self, space: Space):
        self.space = space
        #: the text between the choices, the point written after each piece, each point's options as JSON
        self.pieces: tuple[str, ...] | None = None
        self.order: tuple[int, ...] = ()
        self.options: tuple[tuple[str, ...], ...] = ()
        if space.points and all(p.kind != "block" for p in space.points):
            self._cut()

    def __call__(self, picks: tuple[int, ...]) -> Identified:
        if self.pieces is None:
            return identify(self.space, picks)
        return self._joined(picks)

    def _joined(self, picks: tuple[int, ...]) -> Identified:
        parts = [self.pieces[0]]
        for i, piece in zip(self.order, self.pieces[1:], strict=True):
            parts.append(self.options[i][picks[i]])
            parts.append(piece)
        text = "".join(parts)
        return Identified(hashlib.sha256(text.encode()).hexdigest(), text)

    def _cut(self) -> None:
        space = self.space
        mark = f"nasdsl-choice-{uuid.uuid4().hex}-"
        chosen = {}
        for i, p in enumerate(space.points):
            for pos in p.positions:
                chosen[pos.keys] = (f"{mark}{i}", p.loc)
        text = document.canonical_json(substitute(space.document, (), chosen, top=True))
        cut = re.split(f'"{re.escape(mark)}([0-9]+)"', text)
        if mark in "".join(cut[0::2]) or len(cut) // 2 != len(chosen):
            return  # a choice written inside another's option, or a marker changed on the way
        self.pieces = tuple(cut[0::2])
        self.order = tuple(int(i) for i in cut[1::2])
        self.options = tuple(
            tuple(document.canonical_json(document.to_yaml(o, p.option_locs[k])) for k, o in enumerate(p.options))
            for p in space.points
        )
        widest = min(CHECKED, max(len(p.options) for p in space.points))
        rounds = [tuple(r % len(p.options) for p in space.points) for r in range(widest)]
        rounds.append(tuple(len(p.options) - 1 for p in space.points))
        for picks in rounds:  # against the document's own text
            if self._joined(picks) != identify(space, picks):
                self.pieces = None
                return


__all__ = ["CHECKED", "Identified", "Identities", "identify", "variant_key"]
