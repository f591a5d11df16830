"""The ``evaluation`` section: how a model is evaluated at test time (multi-crop).

A spec (a model or an ensemble) may say which crops of each image are fed to
the network and how their outputs are averaged::

    evaluation:
      preset: 144-crop          # single (the default), 10-crop or 144-crop
      mirror: false             # any key below overrides the preset's value

Keys (all optional):

==========  =================================================================
``preset``  ``single``, ``10-crop`` or ``144-crop`` (below); the other keys
            start from its values
``size``    the crop's side; must equal the spec's input height and width
            (default: the input's)
``scales``  the shorter side of the image after resizing, one pass each
``squares`` ``none`` (crops are taken from the whole resized image) or a list
            of ``left``, ``center``, ``right``: the squares of side ``scale``
            along the longer side (top, center and bottom for a portrait image)
``crops``   a list of ``corners`` (the four corner crops of side ``size``),
            ``center`` (the central crop) and ``full`` (the whole square, or
            image, resized to ``size`` x ``size``)
``mirror``  also feed every crop flipped left to right
``average`` ``probabilities`` (softmax, then the mean over crops) or ``logits``
            (the mean of the outputs before any softmax)
==========  =================================================================

Presets, for a crop of side ``size`` (224 gives the figures of the GoogLeNet
paper, Szegedy et al. 2014, section 7):

* ``single``: the image resized to a shorter side of ``8/7 size`` (256), its
  central crop: 1 crop;
* ``10-crop``: shorter side ``8/7 size`` (256), the four corners and the
  center, each mirrored: 10 crops;
* ``144-crop``: shorter sides ``8/7, 9/7, 10/7, 11/7 size`` (256, 288, 320,
  352), the left, center and right squares, in each the four corners, the
  center and the square resized, each mirrored: 4 x 3 x 6 x 2 = 144 crops.

This module is pure Python (no torch): it parses the section into an
:class:`Evaluation` and lays out the crops (:meth:`Evaluation.crops`);
:mod:`nasdsl.tta` samples them from images on the device.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from nasdsl.errors import Location, SpecError
from nasdsl.loader import YList, YMap, scalar_type_name
from nasdsl.ops import describe
from nasdsl.spec import did_you_mean, join, refuse_leftovers

KEYS = ("preset", "size", "scales", "squares", "crops", "mirror", "average")
PRESETS = ("single", "10-crop", "144-crop")
SQUARES = ("left", "center", "right")
CROPS = ("corners", "center", "full")
AVERAGES = ("probabilities", "logits")
#: the four corners in the order crops are laid out: top-left, top-right, bottom-left, bottom-right
CORNERS = ("top_left", "top_right", "bottom_left", "bottom_right")
#: the most scales and the largest scale a section may ask for (hostile specs)
MAX_SCALES = 16
MAX_SCALE = 8192


@dataclass(frozen=True)
class Crop:
    """One crop of the layout: at which scale, from which square, which window, mirrored or not."""

    scale: int
    #: ``left``, ``center`` or ``right``, or ``image`` for the whole resized image
    square: str
    #: one of :data:`CORNERS`, ``center`` or ``full``
    window: str
    mirror: bool


@dataclass(frozen=True)
class Evaluation:
    """A checked evaluation section. ``size`` is None until bound to an input (:meth:`bind`)."""

    preset: str = "single"
    size: int | None = None
    scales: tuple[int, ...] = ()
    squares: tuple[str, ...] = ()
    crops: tuple[str, ...] = ("center",)
    mirror: bool = False
    average: str = "probabilities"
    #: where the section is written (None: the default, written nowhere)
    loc: Location | None = None
    #: the scales as ratios of ``size`` in sevenths, when they come from the preset
    sevenths: tuple[int, ...] = (8,)

    @property
    def count(self) -> int:
        """Crops per image."""
        windows = sum(4 if c == "corners" else 1 for c in self.crops)
        return len(self.scales) * max(1, len(self.squares)) * windows * (2 if self.mirror else 1)

    def crops_layout(self) -> tuple[Crop, ...]:
        """Every crop, in the order the crops of one image are batched: scale, then
        square (left, center, right), then window (the corners, the center, the full square, in
        that order whatever the order written), then unmirrored before mirrored."""
        windows: list[str] = []
        for c in self.crops:
            windows += list(CORNERS) if c == "corners" else [c]
        return tuple(
            Crop(s, q, w, m)
            for s in self.scales
            for q in (self.squares or ("image",))
            for w in windows
            for m in ((False, True) if self.mirror else (False,))
        )

    def bind(self, shape: tuple[int, ...], path: str = "evaluation") -> Evaluation:
        """The section for a model whose input is ``shape`` (C, H, W): ``size`` and preset
        scales filled in, every scale checked to be at least the crop."""
        _, h, w = shape
        if h != w:
            raise SpecError(
                f"expected a square input (each crop evaluated is a square of the input's side), got {h}x{w}",
                location=self.loc,
                path=path,
            )
        if self.size is not None and self.size != h:
            raise SpecError(
                f"expected size {h} (the input's height and width), got {self.size}",
                location=self.loc,
                path=join(path, "size"),
            )
        scales = self.scales or tuple(round(h * k / 7) for k in self.sevenths)
        small = [s for s in scales if s < h]
        if small:
            raise SpecError(
                f"expected scales of at least the crop size {h}, got {describe(small)}",
                location=self.loc,
                path=join(path, "scales"),
            )
        return replace(self, size=h, scales=scales)

    def describe(self) -> str:
        """One line: ``144 crops (scales 256, 288, 320, 352; squares left, center, right; ...)``."""
        parts = [f"scales {', '.join(map(str, self.scales))}"]
        parts.append(f"squares {', '.join(self.squares)}" if self.squares else "whole image")
        parts.append(", ".join(self.crops))
        if self.mirror:
            parts.append("mirrored")
        parts.append(f"mean of {self.average}")
        return f"{self.count} crop{'s' if self.count != 1 else ''} ({'; '.join(parts)})"


_PRESET_VALUES = {
    "single": {"sevenths": (8,), "squares": (), "crops": ("center",), "mirror": False},
    "10-crop": {"sevenths": (8,), "squares": (), "crops": ("corners", "center"), "mirror": True},
    "144-crop": {
        "sevenths": (8, 9, 10, 11),
        "squares": SQUARES,
        "crops": ("corners", "center", "full"),
        "mirror": True,
    },
}

#: the default: one central crop
DEFAULT = Evaluation()


def parse_evaluation(raw: object, loc: Location, path: str = "evaluation") -> Evaluation:
    """Parse an ``evaluation`` section (see the module docstring)."""
    if raw is None:
        return replace(DEFAULT, loc=loc)
    if not isinstance(raw, YMap):
        raise SpecError(
            f"expected a mapping of {', '.join(KEYS)}, got {scalar_type_name(raw)}", location=loc, path=path
        )
    left = dict(raw)
    preset = left.pop("preset", "single")
    if preset not in PRESETS:
        raise SpecError(
            f"expected a preset {', '.join(PRESETS)}, got {describe(preset)}{did_you_mean(str(preset), PRESETS)}",
            location=raw.loc_of("preset"),
            path=join(path, "preset"),
        )
    values: dict[str, object] = dict(_PRESET_VALUES[preset], preset=preset, loc=raw.loc)
    if "size" in left:
        values["size"] = _int(left.pop("size"), raw.loc_of("size"), join(path, "size"), 1, MAX_SCALE)
    if "scales" in left:
        values["scales"] = _scales(left.pop("scales"), raw.loc_of("scales"), join(path, "scales"))
    if "squares" in left:
        values["squares"] = _squares(left.pop("squares"), raw.loc_of("squares"), join(path, "squares"))
    if "crops" in left:
        values["crops"] = _words(left.pop("crops"), CROPS, raw.loc_of("crops"), join(path, "crops"), "crops")
    for key in ("mirror",):
        if key in left:
            value = left.pop(key)
            if not isinstance(value, bool):
                raise SpecError(
                    f"expected true or false, got {describe(value)}", location=raw.loc_of(key), path=join(path, key)
                )
            values[key] = value
    if "average" in left:
        value = left.pop("average")
        if value not in AVERAGES:
            raise SpecError(
                f"expected {' or '.join(AVERAGES)}, got {describe(value)}{did_you_mean(str(value), AVERAGES)}",
                location=raw.loc_of("average"),
                path=join(path, "average"),
            )
        values["average"] = value
    rest = YMap(raw.loc)
    for key in left:
        rest[key] = left[key]
    rest.key_locs = raw.key_locs
    refuse_leftovers(rest, KEYS, path, "an evaluation section")
    return Evaluation(**values)


def _int(v: object, loc: Location, path: str, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise SpecError(f"expected an integer from {lo} to {hi}, got {describe(v)}", location=loc, path=path)
    return v


def _scales(v: object, loc: Location, path: str) -> tuple[int, ...]:
    if not isinstance(v, YList) or not 1 <= len(v) <= MAX_SCALES:
        raise SpecError(
            f"expected a list of 1 to {MAX_SCALES} image sizes (the shorter side), got {describe(v)}",
            location=loc,
            path=path,
        )
    out = tuple(_int(s, v.loc_of(i), f"{path}[{i}]", 1, MAX_SCALE) for i, s in enumerate(v))
    if len(set(out)) != len(out):
        raise SpecError(f"expected distinct scales, got {describe(list(out))}", location=loc, path=path)
    return out


def _squares(v: object, loc: Location, path: str) -> tuple[str, ...]:
    if v == "none":
        return ()
    if not isinstance(v, YList):
        raise SpecError(
            f"expected 'none' or a list of {', '.join(SQUARES)}, got {describe(v)}", location=loc, path=path
        )
    return _words(v, SQUARES, loc, path, "squares")


def _words(v: object, allowed: tuple[str, ...], loc: Location, path: str, what: str) -> tuple[str, ...]:
    if not isinstance(v, YList) or not v:
        raise SpecError(f"expected a list of {', '.join(allowed)}, got {describe(v)}", location=loc, path=path)
    out: list[str] = []
    for i, word in enumerate(v):
        if word not in allowed:
            raise SpecError(
                f"expected one of {', '.join(allowed)}, got {describe(word)}{did_you_mean(str(word), allowed)}",
                location=v.loc_of(i),
                path=f"{path}[{i}]",
            )
        if word in out:
            raise SpecError(f"{what} lists '{word}' twice", location=v.loc_of(i), path=f"{path}[{i}]")
        out.append(word)
    return tuple(sorted(out, key=allowed.index))


__all__ = ["CORNERS", "CROPS", "DEFAULT", "PRESETS", "SQUARES", "Crop", "Evaluation", "parse_evaluation"]
