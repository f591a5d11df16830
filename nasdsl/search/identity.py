"""What makes two trials the same variant: the one place a search decides it.

A variant's key is the SHA-256 of its plain document (the spec ``nasdsl space
--pick`` writes for it, choices replaced by the options picked, constraints
left out), as :func:`nasdsl.document.spec_hash` computes it: the same hash that
``nasdsl.compile_spec`` records as the compiled spec's ``sha256`` when that
plain spec is read back. Two picks that give the same document (a choice
under a false ``when`` keeps its default) are one variant; two documents that
differ only in how they write the same network (``2 * 32`` against ``64``)
are two. A stronger identity, by the architecture itself, is planned (issue
#23): it replaces :func:`variant_key` here and nothing else.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from nasdsl import document
from nasdsl.space import Space


@dataclass(frozen=True)
class Identified:
    """A variant's key, and its plain document as the canonical JSON the key is computed from
    (what a trial writes its spec from, so that the document is made once per proposal)."""

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


__all__ = ["Identified", "identify", "variant_key"]
