"""examples/train.py: single-process training with the auxiliary loss, checkpoints and an exact resume,
ImageFolder data and the input convention (and the metrics file a search reads), bf16 autocast on the
CPU, and two DDP processes (gloo) whose replicas end with identical weights."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
TRAIN = ROOT / "examples" / "train.py"

# Two convolutions with BatchNorm and pooling, dropout, a linear classifier, a softmax at inference only,
# and an auxiliary training-only head on an intermediate map (loss weight 0.3).
TINY = """\
nasdsl: 1
name: TinyNet
doc: A tiny classifier with an auxiliary training-only head.
input:
  shape: [3, 16, 16]
  mean: {mean}
  std: {std}
variables:
  num_classes: 4
templates:
  Head:
    doc: Global average pooling and a linear layer.
    params: [classes]
    body: [global_avg_pool, flatten, {{op: linear, out: classes}}]
model:
  conv1: {{op: conv2d, out: 8, kernel: 3, padding: 1}}
  bn1: batch_norm
  relu1: relu
  pool1: {{op: max_pool, kernel: 2}}
  conv2: {{op: conv2d, out: 16, kernel: 3, padding: 1}}
  relu2: relu
  pool: global_avg_pool
  flatten: flatten
  drop: {{op: dropout, p: 0.1}}
  fc: {{op: linear, out: num_classes}}
  prob: {{op: softmax, phase: eval}}
outputs:
  logits: {{from: prob}}
  aux:
    from: pool1
    head: {{use: Head, args: [num_classes]}}
    loss_weight: {aux_weight}
    training_only: true
"""


def write_spec(path: Path, mean="[0.5, 0.5, 0.5]", std="[0.25, 0.25, 0.25]", aux_weight=0.3) -> Path:
    path.write_text(TINY.format(mean=mean, std=std, aux_weight=aux_weight))
    return path


@pytest.fixture(scope="module")
def train():
    """examples/train.py imported as a module, to run its main() in this process (no torch start-up)."""
    spec = importlib.util.spec_from_file_location("nasdsl_example_train", TRAIN)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks itself up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return write_spec(tmp_path / "tiny.yaml")


def load(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"tensors differ: {different}"


COMMON = ["--synthetic", "64", "--batch-size", "8", "--device", "cpu", "--workers", "0", "--lr", "0.05"]


def test_single_process_learns_checkpoints_and_resumes_exactly(train, tiny: Path, tmp_path: Path) -> None:
    base = [str(tiny), *COMMON, "--epochs", "3"]
    train.main([*base, "--steps", "0", "--dump-weights", str(tmp_path / "init")])
    full = train.main([*base, "--dump-weights", str(tmp_path / "full")])
    assert full["step"] == 24 and full["steps_per_epoch"] == 8 and full["world_size"] == 1
    losses = full["train_loss"]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0], losses
    init, trained = load(tmp_path / "init.rank0"), load(tmp_path / "full.rank0")
    changed = {k for k in init if not torch.equal(init[k], trained[k])}
    assert {"conv1.weight", "fc.weight", "aux.2.weight", "bn1.running_mean"} <= changed  # the aux head learns too

    # stop in the middle of epoch 2, then resume: the same weights as the run straight through
    ckpt_dir = tmp_path / "ckpt"
    part = train.main([*base, "--steps", "13", "--checkpoint-dir", str(ckpt_dir)])
    assert part["step"] == 13
    ckpt = load(ckpt_dir / "last.pt")
    assert (ckpt["step"], ckpt["epoch"], ckpt["batch"]) == (13, 1, 5)
    assert {"model", "optimizer", "scheduler", "scaler", "args"} <= ckpt.keys()
    assert ckpt["args"]["synthetic"] == 64 and ckpt["optimizer"]["state"]  # momentum buffers saved
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["last.pt"]  # no temporary file left
    resumed = train.main(
        [
            *base,
            "--resume",
            str(ckpt_dir / "last.pt"),
            "--checkpoint-dir",
            str(ckpt_dir),
            "--dump-weights",
            str(tmp_path / "res"),
        ]
    )
    assert (resumed["start_step"], resumed["step"]) == (13, 24)
    assert load(ckpt_dir / "last.pt")["step"] == 24
    assert_same(load(tmp_path / "res.rank0"), trained)


def test_weights_start_a_fine_tuning_run_with_another_number_of_classes(
    train, tiny: Path, tmp_path: Path, capsys
) -> None:
    """--weights loads every tensor of the file that fits (names and shapes), and the classifier
    of another width keeps the model's initialisation: the usual fine-tuning start."""
    base = [str(tiny), *COMMON, "--epochs", "1", "--steps", "0"]
    train.main([*base, "--seed", "5", "--dump-weights", str(tmp_path / "four")])
    four = load(tmp_path / "four.rank0")  # num_classes 4, trained nowhere: a seed's initialisation
    torch.save(four, tmp_path / "four.pt")
    train.main([*base, "--set", "num_classes=3", "--dump-weights", str(tmp_path / "fresh")])
    capsys.readouterr()
    train.main(
        [
            *base,
            "--set",
            "num_classes=3",
            "--weights",
            str(tmp_path / "four.pt"),
            "--dump-weights",
            str(tmp_path / "tuned"),
        ]
    )
    said = capsys.readouterr().out
    tuned, fresh = load(tmp_path / "tuned.rank0"), load(tmp_path / "fresh.rank0")
    reshaped = {"fc.weight", "fc.bias", "aux.2.weight", "aux.2.bias"}
    assert all(torch.equal(tuned[k], four[k]) for k in four if k not in reshaped)
    assert all(torch.equal(tuned[k], fresh[k]) for k in reshaped)  # the 3-class heads as initialised
    assert f"weights from {tmp_path / 'four.pt'}: {len(four) - 4} of the model's {len(four)} tensors" in said
    assert "another shape there, initialised here: aux.2.bias, aux.2.weight, fc.bias, fc.weight" in said

    torch.save({"other.weight": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(SystemExit, match="none of its 1 tensors has a name and shape of the model"):
        train.main([*base, "--weights", str(tmp_path / "other.pt")])
    with pytest.raises(SystemExit):
        train.main([*base, "--weights", str(tmp_path / "four.pt"), "--resume", str(tmp_path / "four.pt")])
    assert "--weights and --resume both set the model's weights" in capsys.readouterr().err


def test_image_folder_and_the_caffe_input_convention(train, tmp_path: Path, capsys) -> None:
    from PIL import Image

    root = tmp_path / "images"
    for c, colour in enumerate([(250, 10, 10), (10, 10, 250)]):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (20 + i, 18), colour).save(root / f"class{c}" / f"{i}.png")
    # a Caffe-style spec: mean in 0-255 and no std, so the script feeds 0-255 BGR pixels
    spec = write_spec(tmp_path / "caffe.yaml", mean="[104, 117, 123]", std="null")
    argv = [str(spec), "--data", str(root), "--val-data", str(root), "--set", "num_classes=2"]
    metrics = tmp_path / "m" / "metrics.json"  # (what nasdsl search --evaluate reads)
    options = ["--batch-size", "4", "--epochs", "1", "--device", "cpu", "--workers", "0"]
    result = train.main([*argv, *options, "--metrics-json", str(metrics)])
    assert result["pixel_scale"] == 255 and result["bgr"] and result["num_classes"] == 2
    assert result["step"] == 2 and math.isfinite(result["train_loss"][0])
    assert result["val"][0]["images"] == 8 and 0 <= result["val"][0]["top1"] <= result["val"][0]["top5"] == 1
    written = json.loads(metrics.read_text())
    assert {k: written[k] for k in ("top1", "top5", "train_loss", "steps")} == {
        "top1": result["val"][0]["top1"], "top5": 1.0, "train_loss": result["train_loss"][0], "steps": 2
    }  # fmt: skip
    assert "pixels in [0, 255], BGR" in capsys.readouterr().out
    red = torch.zeros(3, 2, 2)
    red[0] = 1.0
    assert torch.equal(train.PixelConvention(255.0, True)(red)[2], torch.full((2, 2), 255.0))
    # more classes in the folder than the model has: a clear error
    with pytest.raises(SystemExit, match="num_classes=2"):
        train.main([str(spec), "--data", str(root), "--set", "num_classes=1", "--device", "cpu", "--workers", "0"])


def test_unused_parameters_are_detected_for_ddp(train, tmp_path: Path) -> None:
    model_all = train.make_model(train.nasdsl.compile_spec(write_spec(tmp_path / "a.yaml")))
    assert train.probe(model_all, (3, 16, 16)) == (4, [])
    # an auxiliary head whose loss weight is 0 gets no gradient: DDP must look for unused parameters
    model_unused = train.make_model(train.nasdsl.compile_spec(write_spec(tmp_path / "b.yaml", aux_weight=0)))
    classes, unused = train.probe(model_unused, (3, 16, 16))
    assert classes == 4 and unused == ["aux.2.weight", "aux.2.bias"]


def test_help_shows_defaults_and_examples(train, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        train.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "torchrun --nproc_per_node 8" in out and "(default: 0.1)" in out


def run(cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    # the script imports this tree's nasdsl, as the tests in this process do, not an installed copy
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env.pop("RANK", None), env.pop("WORLD_SIZE", None), env.pop("LOCAL_RANK", None)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    print(proc.stdout, proc.stderr, sep="\n")
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


# the other optimizer and schedule options, exercised on the way
OPTIONS = ["--no-bias-decay", "--nesterov", "--schedule", "step", "--warmup-steps", "1"]


def test_bf16_autocast_on_the_cpu(tiny: Path) -> None:
    proc = run(
        [sys.executable, str(TRAIN), str(tiny), *COMMON, "--steps", "2", "--amp", "bf16", "--channels-last", *OPTIONS],
        timeout=120,
    )
    loss = re.search(r"step 2, loss (\S+),", proc.stdout)
    assert loss and math.isfinite(float(loss.group(1))), proc.stdout
    assert "done: step 2" in proc.stdout


def test_ddp_two_cpu_processes_end_with_identical_weights(train, tiny: Path, tmp_path: Path) -> None:
    args = [str(tiny), *COMMON, "--batch-size", "4", "--epochs", "2", "--synthetic-val", "30"]
    train.main([*args, "--steps", "0", "--dump-weights", str(tmp_path / "init")])
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone"]
    proc = run(
        [*launcher, str(TRAIN), *args, "--steps", "10", "--dump-weights", str(tmp_path / "ddp")],
        timeout=180,
    )
    out = proc.stdout
    assert "world size 2 (gloo, cpu), batch 4 per process, global batch 8" in out
    assert "find_unused_parameters=False" in out  # the auxiliary head runs in training: every parameter is used
    assert "epoch 2/2 (stopped at --steps): step 10" in out and "done: step 10" in out
    assert re.search(r"val: top-1 [\d.]+%, top-5 [\d.]+% \(30 images\)", out)  # every image once, over both ranks
    rank0, rank1 = load(tmp_path / "ddp.rank0"), load(tmp_path / "ddp.rank1")
    assert_same(rank0, rank1)  # parameters and BatchNorm statistics
    init = load(tmp_path / "init.rank0")
    unchanged = [k for k in init if k != "bn1.num_batches_tracked" and torch.equal(init[k], rank0[k])]
    assert not unchanged, f"not trained: {unchanged}"
    assert int(rank0["bn1.num_batches_tracked"]) == 10


def _train_commands(text: str) -> list[list[str]]:
    """The arguments of every ``examples/train.py`` command in a Markdown text's shell blocks."""
    import shlex

    found = []
    for block in re.findall(r"```(?:sh|bash)[^\n]*\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if "examples/train.py" not in line or line.lstrip().startswith("#"):
                continue
            words = shlex.split(line, comments=True)
            args = [w for w in words[words.index("examples/train.py") + 1 :] if w != "..."]
            if args and not args[0].startswith("-"):
                found.append(args)
    return found


def test_what_the_guides_say_of_training_holds(train, monkeypatch) -> None:
    """The training guide, the design-space guide and the README, against the script and the
    models: every examples/train.py command they show is one the script accepts (GPU-only options
    as on a machine with CUDA) on a spec that exists; the design-space job starts each variant from
    the weights `nasdsl transfer` wrote for it (the guide said the script could not); GoogLeNet
    gives its logits in eval mode, as the guides now say (they said probabilities); the first run's
    first line holds GoogLeNet's figures."""
    import nasdsl

    from paths import ROOT, SPECS

    names = ("README.md", "docs/training.md", "docs/design-space.md", "examples/README.md")
    pages = {name: (ROOT / name).read_text() for name in names}
    monkeypatch.setattr(train.torch.cuda, "is_available", lambda: True)
    commands = [(name, args) for name, text in pages.items() for args in _train_commands(text)]
    assert len(commands) >= 11
    for name, args in commands:
        assert (ROOT / args[0]).exists() or "$" in args[0], (name, args)
        train.parse_args(args)  # an unknown or contradictory option exits here
    space = pages["docs/design-space.md"]
    (job,) = [args for name, args in commands if name == "docs/design-space.md"]
    transfer = re.search(r"nasdsl transfer [^\n]*\\\n\s*-o (\S+)\n\s*torchrun", space)
    assert transfer and job[job.index("--weights") + 1] == transfer[1].strip('"')
    g = nasdsl.compile_spec(SPECS / "googlenet.yaml", {"num_classes": 10}).graph
    assert nasdsl.ir.node(g, nasdsl.ir.info(g).outputs[0].node).op == "linear"  # logits, in training and at inference
    guide = pages["docs/training.md"]
    assert "returns its logits in eval mode" in guide and "main output is its logits" in guide
    assert "returns its logits at inference and in training alike" in pages["README.md"]
    params = nasdsl.compile_spec(SPECS / "googlenet.yaml", {"num_classes": 10}).totals(with_aux=True)["params"]
    assert f"model GoogLeNet: {params:,} parameters, input (3, 224, 224), 10 classes; pixels in [0, 255], BGR" in guide
