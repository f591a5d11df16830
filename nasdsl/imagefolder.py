"""Image folders (``DIR/<class>/<image>``, torchvision's ImageFolder layout), walked and read safely.

``nasdsl evaluate --data`` and ``examples/train.py --data`` read folders that someone else may
have put together. torchvision's ``ImageFolder`` follows every directory link: a link to a
parent folder made it count one image again and again (41 times for one file), a named pipe
called ``x.jpg`` made it wait forever, and a corrupt, truncated or enormous image ended in a
traceback. Here:

- :func:`list_folder` walks the folder once, in ImageFolder's order (classes sorted, then each
  class's folders and files by path): a directory is entered once, however many links lead to
  it (no circles, no duplicates); a directory link that leads out of the folder is not
  followed (it is listed in :attr:`Listing.skipped`); a file with an image extension must be a
  regular file (a pipe, a device, a link in a circle or to nowhere is a :class:`DataError`
  naming it). Every subfolder is a class, hidden ones included (as in ImageFolder), so a class
  folder without images (an empty ``.ipynb_checkpoints`` would shift every label by one) and an
  image beside the class folders (``--data`` naming a folder of images, not of classes) are
  errors naming them.
- Images of 16 bits a channel (grey: Pillow's modes ``I;16`` and ``I``) are scaled to 8 bits,
  not clipped at 255 as ``convert("RGB")`` does; 32-bit floating-point images (of no known
  range) are refused.
- :func:`load_image` opens one image without blocking, reads at most :data:`MAX_IMAGE_BYTES`,
  refuses more than :data:`MAX_IMAGE_PIXELS` pixels before decoding (Pillow's own
  decompression-bomb limit), and turns any decoding failure into a :class:`DataError` naming
  the file. :class:`BadImage` carries such an error out of a data-loader worker so that the
  main process reports it (an exception raised in a worker arrives wrapped in a traceback).

Listing needs nothing but the standard library; loading needs Pillow.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass

from nasdsl.errors import DataError

#: file extensions read as images (torchvision's ``IMG_EXTENSIONS``), compared without case
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
#: the most pixels an image may have: Pillow's decompression-bomb threshold (``Image.MAX_IMAGE_PIXELS``)
MAX_IMAGE_PIXELS = 89_478_485
#: the largest image file read
MAX_IMAGE_BYTES = 256 << 20


@dataclass(frozen=True)
class Listing:
    """A walked folder: class names (sorted), ``(path, class index)`` per image, and the
    directory links that were not followed (they lead out of the folder)."""

    root: str
    classes: tuple[str, ...]
    samples: tuple[tuple[str, int], ...]
    skipped: tuple[str, ...] = ()
    #: files beside the class folders that are not images (an archive not unpacked: a class missing),
    #: hidden ones (``.DS_Store``) left out
    ignored: tuple[str, ...] = ()


def _identity(info: os.stat_result) -> tuple[int, int]:
    return info.st_dev, info.st_ino


def _inside(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip(os.sep) + os.sep)


def list_folder(root: str, what: str = "--data") -> Listing:
    """The classes and images of the folder ``root`` (see the module docstring). Raises
    :class:`DataError` (``what`` names the option) when it is not a folder or holds an image
    name that is not a regular file."""
    try:
        info = os.stat(root)
    except OSError as e:
        raise DataError(f"{what}: cannot read {root}: {e.strerror or e}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise DataError(f"{what}: {root} is not a folder (expected DIR/<class>/<image>)")
    top = os.path.realpath(root)
    seen = {_identity(info)}
    skipped: list[str] = []
    classes: list[tuple[str, str]] = []
    ignored: list[str] = []
    for name, path in _entries(root, what):
        if _enter(path, top, seen, skipped, what):
            classes.append((name, path))
        elif name.lower().endswith(IMAGE_EXTENSIONS):
            raise DataError(
                f"{what}: {path}: an image outside the class folders (expected {root}/<class>/<image>; "
                "every subfolder is a class)"
            )
        elif not name.startswith(".") and path not in skipped:
            ignored.append(path)
    samples: list[tuple[str, int]] = []
    for index, (_, path) in enumerate(classes):
        folders: list[tuple[str, list[str]]] = []
        stack = [path]
        while stack:
            folder = stack.pop()
            files = []
            for name, child in _entries(folder, what):
                if _enter(child, top, seen, skipped, what):
                    stack.append(child)
                elif name.lower().endswith(IMAGE_EXTENSIONS) and not os.path.isdir(child):
                    _check_file(child, what)
                    files.append(child)
            folders.append((folder, files))
        if not any(files for _, files in folders):  # a label for no image: torchvision's ImageFolder refuses it too
            raise DataError(
                f"{what}: {path}: a class folder without images (every subfolder is a class, in sorted order)"
            )
        for _, files in sorted(folders):  # ImageFolder's order: sorted(os.walk(...)), files sorted
            samples.extend((f, index) for f in sorted(files))
    return Listing(root, tuple(n for n, _ in classes), tuple(samples), tuple(skipped), tuple(ignored))


def _entries(folder: str, what: str) -> list[tuple[str, str]]:
    try:
        with os.scandir(folder) as it:
            return sorted((e.name, e.path) for e in it)
    except OSError as e:
        raise DataError(f"{what}: cannot read the folder {folder}: {e.strerror or e}") from None


def _enter(path: str, top: str, seen: set, skipped: list[str], what: str) -> bool:
    """Whether ``path`` is a directory to walk now: a directory (or a link to one inside the
    folder) not entered before. A link out of the folder is noted in ``skipped``."""
    try:
        info = os.stat(path)
    except OSError:
        return False  # a link to nowhere or in a circle: judged as a file by _check_file
    if not stat.S_ISDIR(info.st_mode):
        return False
    if os.path.islink(path) and not _inside(os.path.realpath(path), top):
        skipped.append(path)
        return False
    if _identity(info) in seen:
        return False  # a link back to a folder already walked: every image counts once
    seen.add(_identity(info))
    return True


def _check_file(path: str, what: str) -> None:
    try:
        info = os.stat(path)
    except OSError as e:
        why = "a symbolic link in a circle or to nowhere" if os.path.islink(path) else (e.strerror or str(e))
        raise DataError(f"{what}: {path}: {why}") from None
    if not stat.S_ISREG(info.st_mode):
        raise DataError(f"{what}: {path}: not a regular file (a pipe, device or socket); not opening it")


@dataclass(frozen=True)
class BadImage:
    """An image that could not be used, carried out of a data-loader worker as data."""

    path: str
    reason: str

    def error(self, what: str = "--data") -> DataError:
        return DataError(f"{what}: {self.path}: {self.reason}")


def load_image(path: str, max_pixels: int = MAX_IMAGE_PIXELS):
    """The decoded image at ``path`` (a PIL image), or a :class:`BadImage` saying why not:
    not a regular file, larger than :data:`MAX_IMAGE_BYTES` or ``max_pixels``, not an image,
    truncated or corrupt."""
    import io
    import warnings

    from PIL import Image

    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        return BadImage(path, f"cannot open it: {e.strerror or e}")
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return BadImage(path, "not a regular file (a pipe, device or socket); not reading it")
        data = os.read(fd, MAX_IMAGE_BYTES + 1)
        while len(data) <= MAX_IMAGE_BYTES and (more := os.read(fd, MAX_IMAGE_BYTES + 1 - len(data))):
            data += more
    except OSError as e:
        return BadImage(path, f"cannot read it: {e.strerror or e}")
    finally:
        os.close(fd)
    if len(data) > MAX_IMAGE_BYTES:
        return BadImage(path, f"larger than {MAX_IMAGE_BYTES >> 20} MiB; not an image to evaluate")
    try:
        with warnings.catch_warnings():  # Pillow's warnings (a large image) are ours to report, once
            warnings.simplefilter("ignore")
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                return BadImage(
                    path,
                    f"{width}x{height} pixels, more than the {max_pixels:,} an image may have (a decompression bomb?)",
                )
            image.load()
    except Image.DecompressionBombError as e:
        return BadImage(path, f"too many pixels ({e})")
    except Exception as e:  # noqa: BLE001 - Pillow raises many kinds for a bad file
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        reason = re.sub(r" ?<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "", reason)  # an address: not the same twice
        return BadImage(path, f"not a readable image ({reason[:200]})")
    return _eight_bits(image, path)


def _eight_bits(image, path: str):
    """``image`` with 8 bits a channel, as ``convert("RGB")`` expects: 16-bit grey (modes ``I;16*``,
    and ``I`` holding 0-65535) scaled by 255/65535, not clipped at 255 (which turned all but the
    darkest pixels white); 32-bit floating-point pixels, whose range no file says, a :class:`BadImage`."""
    import numpy as np
    from PIL import Image

    if image.mode == "F":
        return BadImage(path, "32-bit floating-point pixels, of no known range; save it with 8 or 16 bits a channel")
    if image.mode != "I" and not image.mode.startswith("I;16"):
        return image
    pixels = np.asarray(image).astype(np.int64)
    if pixels.size and (pixels.min() < 0 or pixels.max() > 65535):
        return BadImage(path, "32-bit integer pixels outside 0-65535; save it with 8 or 16 bits a channel")
    return Image.fromarray(((pixels * 255 + 32767) // 65535).astype(np.uint8), "L")


__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_IMAGE_BYTES",
    "MAX_IMAGE_PIXELS",
    "BadImage",
    "Listing",
    "list_folder",
    "load_image",
]
