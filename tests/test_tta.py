"""Multi-crop evaluation: the crops against a plain-Python reference written from the GoogLeNet
paper's description (tests/data/googlenet_test_time.yaml), the sampled pixels against resizing
and slicing, the averaging, the evaluation section's errors, and ``nasdsl evaluate``."""

from __future__ import annotations

import re
import textwrap
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

import nasdsl
from nasdsl import ensemble_ir, ir, tta
from nasdsl.cli import main
from nasdsl.evaluation import Evaluation, parse_evaluation
from nasdsl.loader import load_text

from paths import DATA, SPECS

FACTS = yaml.safe_load((DATA / "googlenet_test_time.yaml").read_text())


def assert_close(got: torch.Tensor, want: torch.Tensor, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    """``torch.testing.assert_close``'s rule without its first-call import of torch.distributed (seconds)."""
    assert got.shape == want.shape, (got.shape, want.shape)
    excess = ((got - want).abs() - (atol + rtol * want.abs())).max()
    assert excess <= 0, f"off by up to {float(excess):.3g} beyond the tolerance"


def section(text: str, shape=(3, 224, 224)) -> Evaluation:
    doc = load_text(f"evaluation: {text}", "test.yaml")
    return parse_evaluation(doc["evaluation"], doc.loc_of("evaluation")).bind(shape)


def paper_crops(h: int, w: int, scales, crop: int) -> list[tuple]:
    """The 144 crops of an h x w image, as the paper describes them: the image resized so that its
    shorter side is each scale (the longer side rounded down, the one rounding the paper leaves
    open), the left, center and right squares (top, center, bottom for a portrait image; the
    center one rounded down), in each the four corners, the center crop and the whole square
    (to be resized to the crop size), each also mirrored. One tuple a crop:
    (scale, resized height, resized width, top, left, height, width, mirrored)."""
    out = []
    for s in scales:
        rh, rw = (s, w * s // h) if h <= w else (h * s // w, s)
        longer = max(rh, rw)
        for offset in (0, (longer - s) // 2, longer - s):
            top, left = (0, offset) if rw >= rh else (offset, 0)
            last = s - crop
            windows = [(0, 0), (0, last), (last, 0), (last, last), (last // 2, last // 2)]
            boxes = [(top + y, left + x, crop, crop) for y, x in windows] + [(top, left, s, s)]
            for box in boxes:
                for mirrored in (False, True):
                    out.append((s, rh, rw, *box, mirrored))
    return out


def boxes_of(ev: Evaluation, h: int, w: int) -> list[tuple]:
    geo = tta.crop_boxes(ev, torch.tensor([[h, w]]))
    return [
        (int(r[0]) if ev.scales == () else s.scale, int(r[0]), int(r[1]), *map(int, b), bool(m))
        for s, r, b, m in zip(ev.crops_layout(), geo["resized"][0], geo["box"][0], geo["mirror"], strict=True)
    ]


@pytest.mark.parametrize("size", [(375, 500), (500, 375), (256, 256), (300, 1000)], ids=str)
def test_the_144_crops_are_the_papers(size):
    ev = section("{preset: 144-crop}")
    assert list(ev.scales) == FACTS["scales"] and ev.size == FACTS["crop_size"]
    assert ev.count == FACTS["crops_per_image"] == len(FACTS["scales"]) * 3 * FACTS["crops_per_square"] * 2
    want = paper_crops(*size, FACTS["scales"], FACTS["crop_size"])
    got = boxes_of(ev, *size)
    assert len(got) == len(want) == 144
    assert Counter(got) == Counter(want)


def test_the_10_crop_and_single_presets():
    ev = section("{preset: 10-crop}")
    got = boxes_of(ev, 300, 400)  # resized to 256 x 341
    corners = [(0, 0), (0, 341 - 224), (256 - 224, 0), (256 - 224, 341 - 224), (16, (341 - 224) // 2)]
    assert got == [(256, 256, 341, y, x, 224, 224, m) for y, x in corners for m in (False, True)]
    assert boxes_of(section("{}"), 300, 400) == [(256, 256, 341, 16, 58, 224, 224, False)]


def padded(images: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    images, sizes, _ = tta.pad_batch([(t, 0) for t in images])
    return images, sizes


def test_sampled_crops_are_the_resized_images_slices():
    """Every crop but the resized squares equals F.interpolate to the scale, then a slice (flipped
    when mirrored); images of two sizes in one padded batch. One grid_sample call for the batch."""
    ev = section("{preset: 144-crop}", (2, 28, 28))  # scales 32, 36, 40, 44
    gen = torch.Generator().manual_seed(0)
    pictures = [torch.rand(2, 32, 45, generator=gen), torch.rand(2, 50, 33, generator=gen)]
    images, sizes = padded(pictures)
    calls = []
    original = F.grid_sample

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    tta.F.grid_sample = counting
    try:
        crops = tta.sample_crops(images, sizes, ev)
    finally:
        tta.F.grid_sample = original
    assert len(calls) == 1 and crops.shape == (2, 144, 2, 28, 28)
    for i, picture in enumerate(pictures):
        reference = paper_crops(*picture.shape[1:], ev.scales, 28)
        resized = {}
        got, want = [], []
        for k, (_, rh, rw, top, left, bh, bw, mirrored) in enumerate(boxes_of(ev, *picture.shape[1:])):
            assert reference[k][3:] == (top, left, bh, bw, mirrored)  # same order as the reference too
            if bh != 28:
                continue  # a square resized to the crop: below
            if (rh, rw) not in resized:
                resized[rh, rw] = F.interpolate(picture[None], size=(rh, rw), mode="bilinear", align_corners=False)[0]
            window = resized[rh, rw][:, top : top + 28, left : left + 28]
            want.append(window.flip(-1) if mirrored else window)
            got.append(crops[i, k])
        assert_close(torch.stack(got), torch.stack(want), rtol=0, atol=1e-5)


def test_a_resized_square_samples_the_square():
    """On an image whose pixels hold their own row and column, the whole-square crops read the
    square's rows and columns, evenly spaced (bilinear sampling keeps such ramps exact)."""
    ev = section("{scales: [40], squares: [left, center, right], crops: [full], mirror: true}", (2, 20, 20))
    h, w = 40, 70
    ramp = torch.stack([torch.arange(h)[:, None].expand(h, w), torch.arange(w)[None, :].expand(h, w)]).float()
    crops = tta.sample_crops(*padded([ramp]), ev)[0]
    centres = (torch.arange(20) + 0.5) * 40 / 20 - 0.5  # 20 samples spread over 40 pixels
    for k, offset in enumerate([0, 0, 15, 15, 30, 30]):
        assert_close(crops[k, 0], centres[:, None].expand(20, 20).clamp(0, h - 1))
        cols = (offset + centres).flip(0) if k % 2 else offset + centres
        assert_close(crops[k, 1], cols[None, :].expand(20, 20))


def test_crop_outputs_are_averaged_as_the_section_says():
    logits = torch.tensor([[[2.0, 0.0], [0.0, 4.0]]])  # one image, two crops, two classes
    probs = logits.softmax(2)
    assert_close(tta.average(logits, section("{}"), probabilities=False), probs.mean(1))
    assert_close(tta.average(probs, section("{}"), probabilities=True), probs.mean(1))
    assert_close(tta.average(logits, section("{average: logits}"), probabilities=False), logits.mean(1))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "{preset: 10crop}",
            "test.yaml:1:22: error: evaluation.preset: expected a preset single, 10-crop, 144-crop, "
            "got '10crop' (did you mean '10-crop'?)",
        ),
        (
            "{crops: [corner]}",
            "test.yaml:1:22: error: evaluation.crops[0]: expected one of corners, center, full, "
            "got 'corner' (did you mean 'corners'?)",
        ),
        (
            "{squares: left}",
            "test.yaml:1:23: error: evaluation.squares: expected 'none' or a list of left, center, right, got 'left'",
        ),
        (
            "{scales: [256, 200]}",
            "test.yaml:1:13: error: evaluation.scales: expected scales of at least the crop size 224, got [200]",
        ),
        (
            "{size: 32}",
            "test.yaml:1:13: error: evaluation.size: expected size 224 (the input's height and width), got 32",
        ),
        ("{average: mean}", "test.yaml:1:23: error: evaluation.average: expected probabilities or logits, got 'mean'"),
    ],
)
def test_bad_evaluation_sections_are_located_errors(text, message):
    with pytest.raises(nasdsl.errors.SpecError) as e:
        section(text)
    assert e.value.format() == message


# -- nasdsl evaluate on a tiny generated image folder ---------------------------------------------

TINY = """\
nasdsl: 1
name: Tiny
input: {shape: [3, 16, 16]}
model:
  conv: {op: conv2d, out: 4, kernel: 3}
  relu: relu
  pool: global_avg_pool
  flatten: flatten
  fc: {op: linear, out: 3}
evaluation: {preset: 10-crop}
"""


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in range(3):
        (tmp_path / "images" / f"class{label}").mkdir(parents=True)
        for i in range(3):
            h, w = rng.integers(12, 40, 2)
            pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "images" / f"class{label}" / f"{i}.png")
    (tmp_path / "tiny.yaml").write_text(TINY)
    return tmp_path


def test_evaluate_reports_accuracy_and_speed(image_folder, capsys):
    spec, data = image_folder / "tiny.yaml", image_folder / "images"
    assert ir.info(nasdsl.compile_spec(spec).graph).evaluation.count == 10
    argv = ["evaluate", str(spec), "--data", str(data), "--random-weights", "--workers", "0", "--batch-size", "4"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    pattern = (
        rf"{re.escape(str(spec))}: 9 images, 10 crops \(scales 18; whole image; corners, center; mirrored; mean of "
        r"probabilities\): top-1 0\.\d{4}, top-5 1\.0000; [\d.,]+ images/s, [\d.,]+ crops/s on cpu \([\d.]+ s\)"
    )
    assert re.fullmatch(pattern, out.strip()), out
    assert "9/9 images" in err
    assert main([*argv, "--set", "evaluation.preset=single", "--format", "json"]) == 0
    assert '"crops_per_image": 1' in capsys.readouterr().out


def test_evaluate_needs_weights_and_a_folder(image_folder, capsys):
    spec = str(image_folder / "tiny.yaml")
    assert main(["evaluate", spec, "--data", str(image_folder / "images")]) == 2
    assert "evaluate needs trained weights: --weights FILE" in capsys.readouterr().err
    assert main(["evaluate", spec, "--data", str(image_folder / "nothing"), "--random-weights"]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_evaluate_an_ensemble(image_folder, capsys):
    (image_folder / "team.yaml").write_text(
        textwrap.dedent("""\
        nasdsl: 1
        name: Team
        ensemble:
          members: {a: tiny.yaml, b: {spec: tiny.yaml, set: {conv.out: 6}}}
        evaluation: {preset: 144-crop}
        """)
    )
    argv = ["evaluate", str(image_folder / "team.yaml"), "--data", str(image_folder / "images"), "--workers", "0"]
    assert main([*argv, "--random-weights", "--limit", "3"]) == 0
    assert ": 3 images, 144 crops (scales 18, 21, 23, 25;" in capsys.readouterr().out
    assert main(argv) == 2
    assert "members without a weights file: a, b" in capsys.readouterr().err


def test_the_ilsvrc_spec_asks_for_the_papers_crops():
    net = nasdsl.compile_spec(SPECS / "ensembles" / "ilsvrc2014.yaml")
    ev = ir.info(net.graph).evaluation
    assert (list(ev.scales), ev.count, ev.average) == (FACTS["scales"], FACTS["crops_per_image"], FACTS["average"])
    assert len(ensemble_ir.members(net.graph)) == FACTS["models"]
