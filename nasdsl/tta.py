"""Multi-crop test-time evaluation as batched tensor operations (needs torch).

The crops of an :class:`nasdsl.evaluation.Evaluation` are laid out by
:meth:`~nasdsl.evaluation.Evaluation.crops_layout`; here they are cut from a
batch of images at once, on the images' device:

1. :func:`crop_boxes` computes, for every image and every crop, the crop's
   box in the resized image (the image scaled so that its shorter side is the
   crop's scale; the longer side is rounded down, as torchvision's ``Resize``
   does): one set of tensor operations over images x crops.
2. :func:`sample_crops` samples every box of every image with one
   ``grid_sample`` call (bilinear, at the pixel centres that resizing with
   ``F.interpolate(mode="bilinear", align_corners=False)`` and then slicing
   would read; the square resized to the crop size is sampled from the image
   directly). The images of a batch may differ in size: they are padded to
   one canvas and each keeps its own size.
3. :func:`predict` runs a model on the crops, a chunk at a time, and
   :func:`average` averages each image's crop outputs (softmax first when
   ``average: probabilities`` and the model gives logits).

No Python loop runs over images or crops. An image loader
(:func:`image_folder`) brings each image's shorter side to the largest scale
first (with antialiasing, so that sampling never shrinks an image much).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from nasdsl.evaluation import CORNERS, Evaluation
from nasdsl.imagefolder import BadImage, Listing, list_folder, load_image

_SQUARE_CODE = {"image": -1, "left": 0, "center": 1, "right": 2}
_WINDOW_CODE = {**{c: i for i, c in enumerate(CORNERS)}, "center": 4, "full": 5}


def _layout(ev: Evaluation, device: torch.device) -> dict[str, torch.Tensor]:
    crops = ev.crops_layout()
    return {
        "scale": torch.tensor([c.scale for c in crops], dtype=torch.int64, device=device),
        "square": torch.tensor([_SQUARE_CODE[c.square] for c in crops], dtype=torch.int64, device=device),
        "window": torch.tensor([_WINDOW_CODE[c.window] for c in crops], dtype=torch.int64, device=device),
        "mirror": torch.tensor([c.mirror for c in crops], dtype=torch.bool, device=device),
    }


def _half(margin: torch.Tensor) -> torch.Tensor:
    """The central crop's offset: half the margin, a half rounded to the even neighbour, as
    torchvision's ``CenterCrop`` does (``int(round(margin / 2))``), so that the ``single`` preset
    reads the pixels of ``Resize`` then ``CenterCrop`` (flooring shifted every other odd margin)."""
    q = torch.div(margin, 2, rounding_mode="floor")
    return q + ((margin % 2 == 1) & (q % 2 == 1)).to(margin.dtype)


def crop_boxes(ev: Evaluation, sizes: torch.Tensor) -> dict[str, torch.Tensor]:
    """For images of ``sizes`` (N, 2: height, width; int64), every crop of the layout:
    ``resized`` (N, K, 2) the image's size at the crop's scale, ``box`` (N, K, 4) the crop's
    top, left, height and width in that resized image, ``mirror`` (K,)."""
    lay = _layout(ev, sizes.device)
    h = sizes[:, 0:1].to(torch.int64)  # (N, 1)
    w = sizes[:, 1:2].to(torch.int64)
    s = lay["scale"][None, :]  # (1, K)
    landscape = h <= w
    hs = torch.where(landscape, s, torch.div(h * s, w, rounding_mode="floor"))
    ws = torch.where(landscape, torch.div(w * s, h, rounding_mode="floor"), s)
    # the region the windows are taken from: a square of side s along the longer side, or the image
    square = lay["square"][None, :].expand_as(hs)
    span = torch.where(landscape, ws, hs) - s  # room along the longer side
    offset = torch.where(square == 1, torch.div(span, 2, rounding_mode="floor"), torch.where(square == 2, span, 0))
    whole = square < 0
    rt = torch.where(whole | landscape, 0, offset)
    rl = torch.where(whole | ~landscape, 0, offset)
    rh = torch.where(whole, hs, s)
    rw = torch.where(whole, ws, s)
    # the window inside the region
    c = ev.size
    win = lay["window"][None, :].expand_as(hs)
    full = win == 5
    top = torch.where((win == 2) | (win == 3), rh - c, torch.where(win == 4, _half(rh - c), 0))
    left = torch.where((win == 1) | (win == 3), rw - c, torch.where(win == 4, _half(rw - c), 0))
    top = torch.where(full, 0, top)
    left = torch.where(full, 0, left)
    bh = torch.where(full, rh, c)
    bw = torch.where(full, rw, c)
    box = torch.stack([rt + top, rl + left, bh, bw], dim=-1)
    return {"resized": torch.stack([hs, ws], dim=-1), "box": box, "mirror": lay["mirror"]}


def sample_crops(images: torch.Tensor, sizes: torch.Tensor, ev: Evaluation) -> torch.Tensor:
    """Every crop of every image: (N, K, C, size, size), from ``images`` (N, C, H, W), each
    holding an image of ``sizes[i]`` (height, width) in its top-left corner (the rest is padding)."""
    n, _, canvas_h, canvas_w = images.shape
    k, c = ev.count, ev.size
    geo = crop_boxes(ev, sizes)
    box = geo["box"].to(torch.float64)
    resized = geo["resized"].to(torch.float64)
    size = sizes.to(torch.float64)[:, None, :]  # (N, 1, 2)
    steps = torch.arange(c, dtype=torch.float64, device=images.device) + 0.5  # pixel centres of the crop

    def source(axis: int, flip: torch.Tensor | None) -> torch.Tensor:
        """Coordinates in the original image (N, K, c) along ``axis`` (0 rows, 1 columns)."""
        at = steps if flip is None else torch.where(flip[:, None], c - steps, steps)  # mirrored: read right to left
        in_box = at * box[..., 2 + axis, None] / c - 0.5  # (N, K, c), in the box
        in_resized = box[..., axis, None] + in_box
        original = (in_resized + 0.5) * size[..., axis, None] / resized[..., axis, None] - 0.5
        return torch.minimum(original.clamp(min=0), size[..., axis, None] - 1)  # F.interpolate's edge rule

    ys = source(0, None)
    xs = source(1, geo["mirror"])
    gy = (2 * ys + 1) / canvas_h - 1  # grid_sample's coordinates (align_corners=False)
    gx = (2 * xs + 1) / canvas_w - 1
    grid = torch.stack(torch.broadcast_tensors(gx[:, :, None, :], gy[:, :, :, None]), dim=-1)  # (N, K, c, c, 2)
    grid = grid.reshape(n, k * c, c, 2).to(images.dtype)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)  # (N, C, K*c, c)
    return out.unflatten(2, (k, c)).transpose(1, 2)  # (N, K, C, c, c)


def predict(model: Callable[[torch.Tensor], torch.Tensor], crops: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """The model's main output on every crop: (N, K, ...) from crops (N, K, C, H, W), ``chunk`` crops a call."""
    n, k = crops.shape[:2]
    flat = crops.flatten(0, 1)
    outs = []
    for start in range(0, flat.shape[0], chunk):
        out = model(flat[start : start + chunk])
        outs.append(out if isinstance(out, torch.Tensor) else out[0])
    return torch.cat(outs).unflatten(0, (n, k))


def average(outputs: torch.Tensor, ev: Evaluation, *, probabilities: bool) -> torch.Tensor:
    """Each image's mean over its crops (N, ...) of ``outputs`` (N, K, ...); with
    ``average: probabilities`` a softmax first, unless the model gives ``probabilities``."""
    if ev.average == "probabilities" and not probabilities:
        outputs = outputs.float().softmax(dim=2)
    return outputs.float().mean(dim=1)


def evaluate_batch(
    model, images: torch.Tensor, sizes: torch.Tensor, ev: Evaluation, *, probabilities: bool, chunk: int = 256
) -> torch.Tensor:
    """Scores (N, classes) of a batch of padded images: crops, model, average."""
    return average(predict(model, sample_crops(images, sizes, ev), chunk), ev, probabilities=probabilities)


# ---------------------------------------------------------------------------
# Loading images (torchvision and PIL)


class _Prepare:
    """Per image: the shorter side brought to ``side`` (antialiased), then a tensor in the
    spec's pixel convention (picklable for loader workers). An image whose resized copy would
    need more than ``max_bytes`` (a thin strip brought to a large scale) is refused, before
    anything is resized."""

    def __init__(self, side: int, channels: int, scale: float, bgr: bool, max_bytes: int | None = None):
        self.side, self.channels, self.scale, self.bgr = side, channels, scale, bgr
        self.max_bytes = max_bytes

    def resized_bytes(self, width: int, height: int) -> int:
        """The bytes of the float tensor of an image of this size once resized."""
        short, long = min(width, height), max(width, height)
        return self.channels * self.side * max(1, long * self.side // max(short, 1)) * 4

    def __call__(self, image, path: str = "") -> torch.Tensor | BadImage:
        from torchvision.transforms import functional as TF

        need = self.resized_bytes(*image.size)
        if self.max_bytes is not None and need > self.max_bytes:
            w, h = image.size
            return BadImage(
                path,
                f"{w}x{h} pixels: with its shorter side resized to {self.side} it would take "
                f"{need / (1 << 30):.1f} GiB, more than {self.max_bytes / (1 << 30):.1f} GiB an image may take "
                "(--max-memory over --batch-size)",
            )
        image = image.convert("L" if self.channels == 1 else "RGB")
        t = TF.pil_to_tensor(TF.resize(image, self.side, antialias=True)).float() / 255
        if self.bgr and t.shape[0] == 3:
            t = t.flip(0)
        return t * self.scale


class FolderImages:
    """The images of a walked folder (:func:`nasdsl.imagefolder.list_folder`) as a map-style data
    set: ``(tensor, label)`` per image, or ``(BadImage, label)`` for one that cannot be used
    (:func:`pad_batch` passes it on, and the caller raises its error in the main process)."""

    def __init__(self, listing: Listing, prepare: Callable):
        self.classes = list(listing.classes)
        self.samples = list(listing.samples)
        self.skipped = listing.skipped
        self.ignored = listing.ignored
        self.prepare = prepare

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        image = load_image(path)
        if isinstance(image, BadImage):
            return image, label
        return self.prepare(image, path), label


def pad_batch(items: Sequence[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | BadImage:
    """Images of different sizes on one canvas (top-left), their sizes, their labels; the
    first :class:`~nasdsl.imagefolder.BadImage` of the batch instead, when it holds one."""
    bad = next((t for t, _ in items if isinstance(t, BadImage)), None)
    if bad is not None:
        return bad
    sizes = torch.tensor([t.shape[1:] for t, _ in items], dtype=torch.int64)
    c = items[0][0].shape[0]
    out = torch.zeros(len(items), c, int(sizes[:, 0].max()), int(sizes[:, 1].max()))
    for i, (t, _) in enumerate(items):  # the collate step of the loader, as torch's default collate
        out[i, :, : t.shape[1], : t.shape[2]] = t
    return out, sizes, torch.tensor([y for _, y in items], dtype=torch.int64)


def image_folder(
    root: str, ev: Evaluation, channels: int, scale: float, bgr: bool, *, max_image_bytes: int | None = None
) -> FolderImages:
    """The images of ``root`` (``DIR/<class>/<image>``, walked once: nasdsl/imagefolder.py),
    coming out ready for :func:`sample_crops`."""
    return FolderImages(list_folder(root), _Prepare(max(ev.scales), channels, scale, bgr, max_image_bytes))


def batch_bytes(ev: Evaluation, channels: int, batch: int, crop_batch: int) -> int:
    """The memory a batch of square images takes at the largest scale, about: each image resized
    and placed on the canvas, and the crops cut from the batch (a smallest estimate: an image
    longer than it is wide takes more, and is checked when it is read)."""
    side = max(ev.scales)
    images = 3 * batch * channels * side * side * 4  # the resized image, its tensor, the padded canvas
    crops = 2 * batch * ev.count * channels * ev.size * ev.size * 4  # sampled, then flattened for the model
    return images + crops + min(crop_batch, batch * ev.count) * channels * ev.size * ev.size * 4


__all__ = [
    "FolderImages",
    "average",
    "batch_bytes",
    "crop_boxes",
    "evaluate_batch",
    "image_folder",
    "pad_batch",
    "predict",
    "sample_crops",
]
