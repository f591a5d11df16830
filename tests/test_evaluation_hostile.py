"""A hostile user of ``nasdsl evaluate``, its image folders and examples/train.py.

Every image is made here with PIL and numpy. The expected accuracies are counted by hand from
images whose class a hand-set linear layer can tell (a solid colour, a brightness), not by the
code under test.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from nasdsl.cli import main

ROOT = Path(__file__).resolve().parent.parent

# Pooling then a linear layer: the scores are a linear function of the image's mean colour.
SPEC = """\
nasdsl: 1
name: MeanColour
input: {{shape: [3, 8, 8]}}
model:
  pool: global_avg_pool
  flatten: flatten
  fc: {{op: linear, out: {classes}}}
"""


def colour_image(path: Path, rgb, size=(12, 9)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, tuple(rgb)).save(path)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """Specs and weights: ``colour`` (3 classes: red, green, blue; the score of a class is its channel)
    and ``bright`` (2 classes: 0 when the red channel is above 0.5, else 1)."""
    root = tmp_path_factory.mktemp("hostile")
    (root / "colour.yaml").write_text(SPEC.format(classes=3))
    save_file({"fc.weight": torch.eye(3), "fc.bias": torch.zeros(3)}, str(root / "colour.safetensors"))
    (root / "bright.yaml").write_text(SPEC.format(classes=2))
    weight = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    save_file({"fc.weight": weight, "fc.bias": torch.tensor([0.0, 0.5])}, str(root / "bright.safetensors"))
    return root


def evaluate(work: Path, data: Path, *extra: str, model: str = "colour") -> list[str]:
    return [
        "evaluate",
        str(work / f"{model}.yaml"),
        "--data",
        str(data),
        "--weights",
        str(work / f"{model}.safetensors"),
        "--workers",
        "0",
        "--format",
        "json",
        *extra,
    ]


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


RED, GREEN, BLUE = (250, 0, 0), (0, 250, 0), (0, 0, 250)


def test_top1_and_top5_are_the_hand_counted_ones(work, tmp_path, capsys):
    # class folders sort to labels 0 (a), 1 (b b: a space), 2 (é: not ASCII); predicted: the colour's index
    images = {"a": [RED, RED, BLUE], "b b": [GREEN], "é": [BLUE, RED]}
    for name, colours in images.items():
        for i, c in enumerate(colours):
            colour_image(tmp_path / "d" / name / f"{i}.png", c, size=(7 + 3 * i, 11))
    # hits: a: red, red (2 of 3); b b: green (1); é: blue (1 of 2) -> 4 of 6
    for extra in ([], ["--set", "evaluation.preset=10-crop", "--batch-size", "100"]):
        code, out, err = run(evaluate(work, tmp_path / "d", *extra), capsys)
        assert code == 0, err
        assert '"images": 6' in out
        assert '"top1": 0.6666666666666666' in out
        assert '"top5": 1.0' in out  # three classes: the top five hold every one


def test_16_bit_images_are_read_at_their_depth(work, tmp_path, capsys):
    # 16-bit grey 20000 of 65535 (0.31): dark, class 1; 50000 (0.76): bright, class 0
    for name, value in (("bright", 50000), ("dark", 20000)):
        (tmp_path / "d" / name).mkdir(parents=True)
        Image.fromarray(np.full((10, 12), value, dtype=np.uint16)).save(tmp_path / "d" / name / "x.png")
        assert Image.open(tmp_path / "d" / name / "x.png").mode.startswith("I")
    code, out, err = run(evaluate(work, tmp_path / "d", model="bright"), capsys)
    assert code == 0, err
    assert '"top1": 1.0' in out  # before: pixels above 255 clipped to white, both read as bright


def test_float_images_are_refused(work, tmp_path, capsys):
    (tmp_path / "d" / "a").mkdir(parents=True)
    Image.fromarray(np.full((10, 12), 0.8, dtype=np.float32)).save(tmp_path / "d" / "a" / "x.tif")
    code, out, err = run(evaluate(work, tmp_path / "d"), capsys)
    assert code == 2 and out == ""
    assert f"--data: {tmp_path / 'd' / 'a' / 'x.tif'}: 32-bit floating-point pixels" in err
    assert "Traceback" not in err


def test_an_empty_class_folder_is_an_error(work, tmp_path, capsys):
    # a hidden, empty folder sorts first: counted as class 0 it shifted every label by one
    colour_image(tmp_path / "d" / "a" / "0.png", RED)
    colour_image(tmp_path / "d" / "b" / "0.png", GREEN)
    (tmp_path / "d" / ".ipynb_checkpoints").mkdir()
    (tmp_path / "d" / ".ipynb_checkpoints" / "notes.txt").write_text("not an image")
    code, out, err = run(evaluate(work, tmp_path / "d"), capsys)
    assert code == 2 and out == ""
    assert (
        f"error: --data: {tmp_path / 'd' / '.ipynb_checkpoints'}: a class folder without images "
        "(every subfolder is a class, in sorted order)"
    ) in err


def test_an_image_beside_the_class_folders_is_an_error(work, tmp_path, capsys):
    colour_image(tmp_path / "d" / "a" / "0.png", RED)
    colour_image(tmp_path / "d" / "stray.png", GREEN)
    code, out, err = run(evaluate(work, tmp_path / "d"), capsys)
    assert code == 2 and out == ""
    assert f"error: --data: {tmp_path / 'd' / 'stray.png'}: an image outside the class folders" in err


def test_a_flat_folder_of_images_says_where_the_images_should_be(work, tmp_path, capsys):
    colour_image(tmp_path / "d" / "0.png", RED)
    code, out, err = run(evaluate(work, tmp_path / "d"), capsys)
    assert code == 2
    assert f"error: --data: {tmp_path / 'd' / '0.png'}: an image outside the class folders" in err


@pytest.mark.parametrize("device", ["meta", "lazy", "cpu:x"])
def test_a_device_that_cannot_run_the_model_is_refused(work, tmp_path, capsys, device):
    colour_image(tmp_path / "d" / "a" / "0.png", RED)
    code, out, err = run(evaluate(work, tmp_path / "d", "--device", device), capsys)
    assert code == 2 and out == ""
    assert f"error: --device: cannot use '{device}'" in err
    assert "internal error" not in err and len(err.splitlines()) == 1


# -- examples/train.py ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def train():
    spec = importlib.util.spec_from_file_location("nasdsl_example_train_hostile", ROOT / "examples" / "train.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--synthetic-val", "-2"], "--synthetic-val must be at least 0"),
        (["--warmup-steps", "-1"], "--warmup-steps must be at least 0"),
        (["--save-every", "-1"], "--save-every must be at least 0"),
        (["--lr", "-1"], "--lr: expected a finite number > 0, got -1.0"),
        (["--lr", "nan"], "--lr: expected a finite number > 0, got nan"),
        (["--momentum", "nan"], "--momentum: expected a finite number from 0 to 1, got nan"),
        (["--momentum", "1.5"], "--momentum: expected a finite number from 0 to 1, got 1.5"),
        (["--weight-decay", "inf"], "--weight-decay: expected a finite number >= 0, got inf"),
        (["--lr-gamma", "0"], "--lr-gamma: expected a finite number > 0, got 0.0"),
        (["--lr-step-epochs", "-3"], "--lr-step-epochs: expected a finite number > 0, got -3.0"),
        (["--log-every", "-1"], "--log-every: expected a finite number >= 0, got -1.0"),
    ],
)
def test_train_refuses_numbers_out_of_range(train, work, capsys, option, message):
    with pytest.raises(SystemExit) as e:
        train.parse_args([str(work / "colour.yaml"), "--synthetic", "4", "--device", "cpu", *option])
    assert e.value.code == 2
    assert f"train.py: error: {message}" in capsys.readouterr().err


def test_train_refuses_validation_classes_unlike_the_training_ones(train, work, tmp_path, capsys):
    for name in ("cat", "dog"):
        colour_image(tmp_path / "train" / name / "0.png", RED)
    for name in ("dog", "fox"):  # dog would be label 0 here, 1 in training
        colour_image(tmp_path / "val" / name / "0.png", RED)
    argv = [str(work / "colour.yaml"), "--data", str(tmp_path / "train"), "--val-data", str(tmp_path / "val")]
    argv += ["--device", "cpu", "--workers", "0", "--batch-size", "2", "--epochs", "1"]
    with pytest.raises(SystemExit) as e:
        train.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert (
        f"train.py: error: --val-data: {tmp_path / 'val'} has the classes dog, fox; --data has cat, dog "
        "(the same class folders give the same labels)"
    ) in err


@pytest.mark.parametrize(("shape", "found"), [("[4, 8, 8]", "4x8x8"), ("[3, 2, 8, 8]", "3x2x8x8")])
def test_a_spec_whose_input_is_no_image_is_refused(work, tmp_path, capsys, shape, found):
    colour_image(tmp_path / "d" / "a" / "0.png", RED)
    (tmp_path / "s.yaml").write_text(SPEC.format(classes=3).replace("[3, 8, 8]", shape))
    argv = ["evaluate", str(tmp_path / "s.yaml"), "--data", str(tmp_path / "d"), "--random-weights", "--workers", "0"]
    code, out, err = run(argv, capsys)
    assert code == 2 and out == ""
    assert f"error: evaluate feeds images of 1 or 3 channels (C x H x W); the spec's input is {found}" in err


def test_non_finite_scores_are_an_error_not_a_guess(work, tmp_path, capsys):
    # finite weights whose sum overflows float32 on a white image: scores inf, their softmax NaN
    colour_image(tmp_path / "d" / "a" / "0.png", RED)
    colour_image(tmp_path / "d" / "b" / "0.png", (250, 250, 250))
    weights = tmp_path / "huge.safetensors"
    save_file({"fc.weight": torch.full((3, 3), 3e38), "fc.bias": torch.zeros(3)}, str(weights))
    argv = ["evaluate", str(work / "colour.yaml"), "--data", str(tmp_path / "d"), "--weights", str(weights)]
    code, out, err = run([*argv, "--workers", "0", "--batch-size", "1"], capsys)
    assert code == 2 and out == ""
    assert "error: the model gives NaN or infinite scores for image 2 of 2" in err


def test_an_ensemble_uses_its_members_evaluation_or_says_they_differ(work, tmp_path, capsys):
    colour_image(tmp_path / "d" / "a" / "0.png", RED)
    plain = SPEC.format(classes=3)
    (tmp_path / "ten.yaml").write_text(plain + "evaluation: {preset: 10-crop}\n")
    (tmp_path / "one.yaml").write_text(plain)
    team = "nasdsl: 1\nname: Team\nensemble:\n  members: {a: ten.yaml, b: %s}\n"
    (tmp_path / "same.yaml").write_text(team % "ten.yaml")
    (tmp_path / "mixed.yaml").write_text(team % "one.yaml")
    argv = ["--data", str(tmp_path / "d"), "--random-weights", "--workers", "0"]
    code, out, err = run(["evaluate", str(tmp_path / "same.yaml"), *argv], capsys)
    assert code == 0, err
    assert ": 1 image, 10 crops (scales 9; whole image; corners, center; mirrored;" in out  # was 1 crop
    code, out, err = run(["evaluate", str(tmp_path / "mixed.yaml"), *argv], capsys)
    assert code == 2 and out == ""
    assert err.startswith(
        f"{tmp_path / 'mixed.yaml'}:1:1: error: evaluation: the members' specs evaluate them differently "
        "(a: 10 crops (scales 9; whole image; corners, center; mirrored; mean of probabilities); b: 1 crop "
    )
    code, out, err = run(["evaluate", str(tmp_path / "mixed.yaml"), *argv, "--set", "evaluation.preset=single"], capsys)
    assert code == 0 and ": 1 image, 1 crop (scales 9;" in out


def test_logits_averaged_over_a_softmax_model_is_a_located_error(work, tmp_path, capsys):
    colour_image(tmp_path / "d" / "a" / "0.png", RED)
    spec = SPEC.format(classes=3) + "  sm: softmax\nevaluation:\n  average: logits\n"
    (tmp_path / "s.yaml").write_text(spec)
    argv = ["evaluate", str(tmp_path / "s.yaml"), "--data", str(tmp_path / "d"), "--random-weights", "--workers", "0"]
    wanted = (
        f"{tmp_path / 's.yaml'}:10:3: error: evaluation.average: expected probabilities, got logits: the model "
        "gives probabilities (its output is a softmax)"
    )
    # the spec contradicts itself: every command that reads it says so, not only evaluate
    compile_ = ["compile", str(tmp_path / "s.yaml"), "-o", str(tmp_path / "m.py")]
    for command in (argv, ["check", str(tmp_path / "s.yaml")], compile_):
        code, out, err = run(command, capsys)
        assert code == 2 and out == ""
        assert err.strip() == wanted
    assert not (tmp_path / "m.py").exists()
    code, out, err = run(["check", str(tmp_path / "s.yaml"), "--set", "evaluation.average=probabilities"], capsys)
    assert code == 0, err


@pytest.mark.parametrize("size", [(20, 30), (19, 33), (33, 19), (17, 29), (10, 10), (40, 21)], ids=str)
def test_the_single_crop_is_torchvisions_resize_and_center_crop(size):
    # torchvision's reference evaluation: Resize(8/7 of the crop) then CenterCrop, on the PIL image
    from torchvision import transforms

    from nasdsl import tta
    from nasdsl.evaluation import DEFAULT

    ev = DEFAULT.bind((3, 16, 16))
    pixels = np.random.default_rng(sum(size)).integers(0, 256, (*size, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    want = transforms.Compose([transforms.Resize(18), transforms.CenterCrop(16), transforms.PILToTensor()])(image)
    images, sizes, _ = tta.pad_batch([(tta._Prepare(18, 3, 1.0, False)(image), 0)])
    got = tta.sample_crops(images, sizes, ev)[0, 0]
    torch.testing.assert_close(got, want.float() / 255, atol=1e-5, rtol=0)  # was 0.63 off at margins 11 and 15


def test_train_on_one_image_says_what_to_lower(train, work, tmp_path, capsys):
    colour_image(tmp_path / "train" / "cat" / "0.png", RED)
    argv = [str(work / "colour.yaml"), "--data", str(tmp_path / "train"), "--device", "cpu", "--workers", "0"]
    with pytest.raises(SystemExit) as e:
        train.main([*argv, "--batch-size", "4", "--epochs", "1"])
    assert e.value.code == 2
    assert (
        "train.py: error: --data: 1 image does not fill one global batch of 4 (1 process(es) x --batch-size 4); "
        "lower --batch-size"
    ) in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [tmp_path / "train"]  # nothing written


def test_a_file_where_a_class_folder_should_be_is_noted(work, tmp_path, capsys):
    # b.tar: a class folder not unpacked; c's label is 1 here, not 2, which the note makes visible
    colour_image(tmp_path / "d" / "a" / "0.png", RED)
    colour_image(tmp_path / "d" / "c" / "0.png", GREEN)
    (tmp_path / "d" / "b.tar").write_bytes(b"\0" * 512)
    (tmp_path / "d" / ".DS_Store").write_bytes(b"\0")
    code, out, err = run(evaluate(work, tmp_path / "d"), capsys)
    assert code == 0, err
    assert f"nasdsl: note: --data: ignoring {tmp_path / 'd' / 'b.tar'}: a file, not a class folder" in err
    assert ".DS_Store" not in err
    assert '"top1": 1.0' in out  # a (red) label 0, c (green) label 1


def test_a_non_square_input_is_refused_at_the_input_or_the_section(work, tmp_path, capsys):
    # the crops are squares of the input's side: a 20x30 input is located where it is written, the
    # spec's input when the default single crop applies, the section when one is written
    colour_image(tmp_path / "d" / "a" / "0.png", RED)
    spec = SPEC.format(classes=3).replace("[3, 8, 8]", "[3, 20, 30]")
    assert "[3, 20, 30]" in spec
    (tmp_path / "s.yaml").write_text(spec)
    argv = ["--data", str(tmp_path / "d"), "--random-weights", "--workers", "0"]
    code, out, err = run(["evaluate", str(tmp_path / "s.yaml"), *argv], capsys)
    line = next(i for i, t in enumerate(spec.splitlines(), 1) if "[3, 20, 30]" in t)
    assert code == 2 and out == ""
    assert err.startswith(f"{tmp_path / 's.yaml'}:{line}:") and "error: input.shape: expected a square input" in err
    assert "got 20x30" in err
    (tmp_path / "t.yaml").write_text(spec + "evaluation:\n  preset: 10-crop\n")
    code, out, err = run(["check", str(tmp_path / "t.yaml")], capsys)
    assert code == 2 and "error: evaluation: expected a square input" in err and "got 20x30" in err
