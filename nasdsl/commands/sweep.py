"""``nasdsl sweep``: the variants table of ``nasdsl space`` for an ad-hoc grid of ``--set`` values.

``--set KEY=[v1,v2,...]`` makes KEY an axis of the grid (any key ``--set``
accepts: a variable, a template argument of a model entry, a key below an
entry); ``--set KEY=VALUE`` with a single value fixes it, as everywhere. The
grid is every combination of the axes; choices the spec itself writes keep
their defaults (sweep them by naming them). Everything else (budgets,
formats, sampling, sharding, ``--pick``) is ``nasdsl space``'s.
"""

from __future__ import annotations

import argparse

from nasdsl import document
from nasdsl import space as spaces
from nasdsl.commands.space import add_listing_arguments, list_variants, retarget
from nasdsl.errors import Location
from nasdsl.loader import YList

HELP = "list the variants of an ad-hoc grid of --set values: choices, validity, parameters, multiply-adds"

DESCRIPTION = (
    "Sweep a grid of values without editing the spec: each --set KEY=[v1,v2,...] is an axis (a list of the "
    "values KEY takes; to sweep a pair-valued key, give a list of pairs), each --set KEY=VALUE a fixed value. "
    "Every combination is a variant, listed as nasdsl space lists a spec's choices: validity, parameters, "
    "multiply-adds, depth and peak activation size, with the same budgets, formats, sampling, sharding "
    "and --pick. Choices the spec writes keep their defaults unless a --set names them."
)

EXAMPLES = """\
nasdsl sweep specs/googlenet.yaml --set inception4a.c3x3=[160,208,256] --set num_classes=[10,100,1000]
nasdsl sweep specs/resnet18.yaml --set width=[32,48,64] --set input.shape=[[3,160,160],[3,224,224]] --format csv
nasdsl sweep specs/googlenet.yaml --set maxpool4.kernel=[2,3] --set input.shape=[[3,192,192],[3,224,224]] --max-macs 2G
nasdsl sweep specs/googlenet.yaml --set inception5b.c1x1=[256,384] --pick 1 -o wide5b.yaml
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``sweep``'s options: ``--set`` takes lists (axes), and ``space``'s listing options."""
    retarget(
        parser,
        "--set",
        "grid",
        "an axis KEY=[v1,v2,...] or a fixed value KEY=VALUE (any key --set accepts)",
        overrides=[],
    )
    add_listing_arguments(parser)


def grid_space(path: str, settings: list[str], *, limits=None) -> spaces.Space:
    """The space of a sweep: the spec's document, its own choices at their defaults, the axes
    of ``settings`` (``KEY=[...]``) as choices named by their keys, the rest applied as ``--set``."""
    kwargs = {"limits": limits} if limits is not None else {}
    doc, files = document.load_document(path, **kwargs)
    own = spaces.find_space(doc, files[0], files)
    doc = own.document_of(own.default, keep_constraints=True)
    values: dict[str, object] = {}
    locations: dict[str, Location] = {}
    names: dict[int, str] = {}
    points = {p.name: p for p in own.points}
    for text in settings:
        key, value, loc = document.parse_override(text)
        point = points.get(key)
        # where the spec's own choice of that name stood (a choice's `name` is no path)
        targets = [pos.set_path for pos in point.positions] if point is not None else [key]
        words = point.options if point is not None and point.kind == "block" else ()
        if isinstance(value, YList):
            options = value
            if words and all(isinstance(w, str) and w in words for w in value):
                # an axis of a choice between blocks, by its words: those options' blocks
                options = document.new_map(value.loc)
                for i, word in enumerate(value):
                    document.put(options, word, point.block(words.index(word)), value.loc_of(i), value.loc_of(i))
            choice = document.new_map(loc)
            document.put(choice, "choice", options, loc, value.loc)
            names[id(choice)] = key
            value = choice
        elif isinstance(value, str) and value in words:
            value = point.block(words.index(value))  # one word: its block
        for target in targets:
            values[target], locations[target] = value, loc
    if values:
        doc = document.apply_overrides(doc, values, locations)
    return spaces.find_space(doc, files[0], files, names=names)


def run(args: argparse.Namespace, net) -> int:
    """List the grid's variants (``net`` is the spec compiled without the grid)."""
    space = grid_space(args.spec, args.grid, limits=getattr(args, "limits", None))
    return list_variants(args, space, net.name)
