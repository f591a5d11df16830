"""Hostile input on the surfaces that came after tests/test_hostile.py was written: design spaces,
ensembles and the evaluation section, weights files, drawings, diff and transfer, evaluation data
and the training script.

Each case makes its files in a fresh folder and runs its commands in a child forked from the case
server of :mod:`test_hostile` (nasdsl, torch, torchvision and ``examples/train.py`` imported once),
with the same memory cap and timeout. A refused case must exit 2 with at most four lines on
stderr, no traceback, no raw control character, no advice to load weights with
``weights_only=False``, the pieces it names (the file, the spec's line), and leave the folder as
it was; an accepted case (hostile, but valid) must exit 0 and pass its own check. ``SURFACES``
counts the cases per surface; docs/security.md lists the classes.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import stat
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from test_hostile import CANARY, LOCATED, RAW_CONTROL, TIMEOUT, Result, _Server, run_cli

TINY = """\
name: Net
input: {shape: [3, 8, 8]}
model:
  conv: {op: conv2d, out: 4, kernel: 3}
  pool: global_avg_pool
  flat: flatten
  fc: {op: linear, out: 10}
"""
#: the same model with an evaluation section and a softmax-free output, for `evaluate`
EVAL = TINY.replace("model:", "evaluation: {scales: [10]}\nmodel:")
#: what the training script trains: the tiny model with its loss (a classifier)
TRAIN_ARGS = ["--synthetic", "16", "--batch-size", "8", "--device", "cpu", "--workers", "0", "--epochs", "1"]
ESC = "\x1b[31m\r\u202e"  # a colour escape, a carriage return, a bidi override


@pytest.fixture(scope="module", autouse=True)
def _stop_the_server():
    yield
    if _Server.process is not None:
        _Server.process.stdin.close()
        _Server.process.wait(timeout=30)
        _Server.process = None


@pytest.fixture(scope="module")
def tiny_state(tmp_path_factory) -> dict[str, torch.Tensor]:
    """The tiny model's state_dict (the spec's seeded initialisation)."""
    import nasdsl
    from nasdsl.weights import initial_weights

    path = tmp_path_factory.mktemp("tiny") / "tiny.yaml"
    path.write_text(TINY)
    return {k: torch.from_numpy(v) for k, v in initial_weights(nasdsl.compile_spec(path).graph).items()}


# --------------------------------------------------------------------------- files a case makes


def write(folder: Path, name: str, text: str | bytes) -> str:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return name


def fifo(folder: Path, name: str) -> str:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return name


def link(folder: Path, name: str, target: str) -> str:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, path)
    return name


class _Evil:
    """A pickle that would run a command when loaded without weights_only."""

    def __reduce__(self):
        return (os.system, (f"touch {CANARY}",))


def evil_pickle(folder: Path, name: str, protocol: int = 2) -> str:
    return write(folder, name, pickle.dumps({"conv.weight": _Evil()}, protocol=protocol))


def png(folder: Path, name: str, size=(12, 10)) -> str:
    from PIL import Image

    (folder / name).parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (200, 30, 30)).save(folder / name)
    return name


def png_header(folder: Path, name: str, width: int, height: int) -> str:
    """A PNG whose header claims ``width`` x ``height`` pixels (a few hundred bytes)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    head = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    return write(
        folder, name, b"\x89PNG\r\n\x1a\n" + head + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def _noise_png() -> bytes:
    """A 64 x 64 PNG of noise (its compressed data runs to the end of the file)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.effect_noise((64, 64), 80).convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


def images(folder: Path, root: str = "data", classes: int = 2) -> str:
    for c in range(classes):
        png(folder, f"{root}/c{c}/a.png")
    return root


def member_spec(folder: Path, weights: str | None = None, extra: str = "") -> str:
    write(folder, "m.yaml", TINY)
    member = "{spec: m.yaml" + (f", weights: {json.dumps(weights)}" if weights else "") + extra + "}"
    return write(folder, "ens.yaml", f"name: Ens\nensemble:\n  members:\n    a: {member}\n")


# --------------------------------------------------------------------------- the cases


@dataclass(frozen=True)
class Attack:
    """One case: ``make`` writes files into the folder and returns the commands (one child runs
    them all, each must pass); ``expect`` must appear in each refusal; ``check`` looks further."""

    surface: str
    name: str
    make: Callable[[Path], list[list[str]]]
    expect: tuple[str, ...] = ()
    refused: bool = True
    program: str = "nasdsl"
    located: bool = False
    check: Callable[[Path, list[Result]], None] | None = None
    timeout: float = TIMEOUT


CASES: list[Attack] = []


def attack(surface: str, name: str, *expect: str, **kw) -> Callable:
    def register(make: Callable[[Path], list[list[str]]]) -> Callable:
        CASES.append(Attack(surface, name, make, tuple(expect), **kw))
        return make

    return register


def refuse(surface: str, name: str, make: Callable[[Path], list[list[str]]], *expect: str, **kw) -> None:
    CASES.append(Attack(surface, name, make, tuple(expect), **kw))


def check_spec(text: str, *extra: str, command: str = "check") -> Callable[[Path], list[list[str]]]:
    def make(folder: Path) -> list[list[str]]:
        write(folder, "s.yaml", text)
        return [[command, "s.yaml", *extra]]

    return make


SPACE = "design spaces"
ENSEMBLE = "ensembles and evaluation"
WEIGHTS = "weights files"
DRAW = "drawing outputs"
DIFF = "diff and transfer"
DATA = "evaluation data"
TRAIN = "the training script"


def spaced(variables: str, model: str = "  conv: {op: conv2d, out: w, kernel: 1}\n", extra: str = "") -> str:
    return f"name: Net\ninput: {{shape: [3, 8, 8]}}\nvariables:\n{variables}model:\n{model}{extra}"


def many(n: int) -> str:
    return ", ".join(str(i) for i in range(1, n + 1))


# -- design spaces: malformed choices, sizes, costs, picking

for name, variables, expect in [
    ("empty-choice", "  w: {choice: []}\n", ("variables.w.choice", "one or more options")),
    ("choice-of-a-mapping", "  w: {choice: [{a: 1}]}\n", ("variables.w.choice[0]", "a choice inside a choice")),
    ("choice-of-null", "  w: {choice: [null, 4]}\n", ("variables.w.choice[0]", "null")),
    ("duplicate-options", "  w: {choice: [4, 4.0]}\n", ("variables.w.choice[1]", "given twice")),
    ("default-not-an-option", "  w: {choice: [4, 8], default: 5}\n", ("variables.w.default", "one of the options")),
    ("unknown-choice-key", "  w: {choise: [4, 8]}\n", ("variables.w", "choice")),
    ("both-kinds", "  w: {choice: [4], range: [1, 2]}\n", ("variables.w", "got both")),
    ("range-step-0", "  w: {range: [1, 8, 0]}\n", ("variables.w.range[2]", "step > 0")),
    ("range-backwards", "  w: {range: [8, 1]}\n", ("variables.w.range[1]", "to >= from")),
    ("range-of-floats", "  w: {range: [1.5, 8]}\n", ("variables.w.range", "integers")),
    ("range-too-long", "  w: {range: [1, 10001]}\n", ("variables.w.range", "at most 10,000 options")),
    ("choice-too-long", f"  w: {{choice: [{many(10001)}]}}\n", ("variables.w.choice", "at most 10,000 options")),
    ("nan-option", "  w: {choice: [4, .nan]}\n", ("variables.w.choice[1]", "finite number", "nan")),
    ("inf-option", "  w: {choice: [4, .inf]}\n", ("variables.w.choice[1]", "finite number", "inf")),
    ("overflowing-option", "  w: {choice: [4, 1.0e+308]}\n", ("variables.w.choice[1]", "at most 2^53")),
    ("condition-on-a-later-variable", "  w: {choice: [4, 8], when: v}\n  v: true\n", ("variables.w.when",)),
    ("injection-in-an-option", '  w: {choice: [4, \'__import__("os").system("touch PWNED")\']}\n', ("variables.w",)),
]:
    refuse(SPACE, name, check_spec(spaced(variables)), *expect, located=True)

for name, constraint, expect in [
    ("constraint-not-a-condition", "  - '1 + 2'", ("constraints[0]", "true or false")),
    ("constraint-unknown-name", "  - 'x > 1'", ("constraints[0]", "'x'")),
    ("constraint-a-mapping", "  - {a: 1}", ("constraints[0]", "a condition")),
    ("constraint-power-tower", "  - '10**10**10 > w'", ("constraints[0]", "out of range")),
    ("constraint-broken-by-default", "  - 'w > 100'", ("constraints[0]", "break this constraint")),
]:
    refuse(SPACE, name, check_spec(spaced("  w: {choice: [4, 8]}\n", extra=f"constraints:\n{constraint}\n")), *expect,
           located=True)  # fmt: skip


def _tied_cost(folder: Path) -> list[list[str]]:
    """Three tied ranges (1.95M combinations) under an expression of 900 characters: counting them
    ran past 100 s; the work (combinations times expression size) is refused at once."""
    terms = " or ".join(f"a * {i} + b - c * {i} > {i * 7}" for i in range(1, 33))
    variables = "".join(f"  {v}: {{range: [1, 125]}}\n" for v in "abc")
    write(folder, "s.yaml", spaced(variables, "  conv: {op: conv2d, out: a, kernel: 1}\n",
                                   f"constraints:\n  - \"a * 1 + b + 100 > 7 or {terms}\"\n"))  # fmt: skip
    return [["space", "s.yaml", "--count"]]


refuse(SPACE, "constraint-over-two-million-combinations", _tied_cost, "evaluation steps", "more than 3,000,000",
       located=True)  # fmt: skip

HUGE_SPACE = spaced("".join(f"  v{i}: {{choice: [{many(10)}]}}\n" for i in range(24)),
                    "  conv: {op: conv2d, out: v0, kernel: 1}\n")  # fmt: skip
refuse(SPACE, "limit-0-on-10^24-variants", check_spec(HUGE_SPACE, "--limit", "0", command="space"),
       "--limit", "GiB of memory")  # fmt: skip
refuse(SPACE, "sample-10^11", check_spec(HUGE_SPACE, "--sample", "100000000000", command="space"),
       "--sample", "GiB of memory")  # fmt: skip
refuse(SPACE, "unlisted-10^24", check_spec(HUGE_SPACE, command="space"), "--limit", "--sample N")
refuse(SPACE, "pick-beyond-the-space", check_spec(HUGE_SPACE, "--pick", str(10**24), command="space"), "--pick")
refuse(SPACE, "pick-to-a-folder", lambda f: [["space", write(f, "s.yaml", TINY), "--pick", "0", "-o", "."]],
       "is a directory")  # fmt: skip
refuse(SPACE, "pick-to-a-pipe", lambda f: [["space", write(f, "s.yaml", TINY), "--pick", "0", "-o", fifo(f, "p")]],
       "not a regular file")  # fmt: skip
refuse(SPACE, "shard-beyond-its-count", check_spec(HUGE_SPACE, "--shard", "5/3", "--limit", "3", command="space"),
       "--shard")  # fmt: skip
refuse(SPACE, "sweep-injection", check_spec(TINY, "--set", 'conv.out=[4, "__import__(\'os\')"]', command="sweep"),
       "model.conv.out")  # fmt: skip
refuse(SPACE, "sweep-nan-value", check_spec(TINY, "--set", "conv.out=[4, .nan]", command="sweep"), "finite", "nan")


def _listed_invalid(folder: Path, results: list[Result]) -> None:
    assert "variant 1: " in results[0].stdout and "out of range" in results[0].stdout, results[0].stdout


attack(SPACE, "power-tower-option-listed-invalid", refused=False, check=_listed_invalid)(
    check_spec(spaced("  w: {choice: [4, '10**10**10']}\n"), command="space")
)


def _listing_in_proportion(folder: Path, results: list[Result]) -> None:
    lines = results[0].stdout.splitlines()
    assert len(lines) == 8 and lines[-1].startswith("3 listed"), results[0].stdout  # title, head, 2 rules, 3 rows


attack(SPACE, "sample-10^11-limit-3", refused=False, check=_listing_in_proportion)(
    check_spec(HUGE_SPACE, "--sample", "100000000000", "--limit", "3", command="space")
)


@attack(SPACE, "first-variants-behind-a-tied-choice", refused=False, check=_listing_in_proportion)
def _far_first(folder: Path) -> list[list[str]]:
    """The first variant of this space has the id 10^20: listing it walked 10^20 pick tuples."""
    variables = "  a: {choice: [1, 2], default: 2}\n" + "".join(
        f"  v{i}: {{choice: [{many(10)}]}}\n" for i in range(20)
    )
    write(
        folder, "s.yaml", spaced(variables, "  conv: {op: conv2d, out: a, kernel: 1}\n", "constraints:\n  - 'a > 1'\n")
    )
    return [["space", "s.yaml", "--limit", "3"]]


@attack(SPACE, "ten-thousand-options-checked-in-proportion", refused=False)
def _wide_choice(folder: Path) -> list[list[str]]:
    write(folder, "s.yaml", spaced(f"  w: {{choice: [{many(10000)}]}}\n"))
    return [["check", "s.yaml"], ["space", "s.yaml", "--count"], ["space", "s.yaml", "--limit", "2"]]


def _picked_plain(folder: Path, results: list[Result]) -> None:
    text = (folder / "v.yaml").read_text()
    head, rest = text.split("\n", 2)[:2], text.split("\n", 2)[2]
    assert all(line.startswith("#") for line in head) and "init" not in rest, text
    assert not RAW_CONTROL.search(results[-1].stdout)


@attack(SPACE, "pick-from-a-file-named-like-yaml", refused=False, check=_picked_plain)
def _pick_named(folder: Path) -> list[list[str]]:
    """The issue's file name: a newline and an `init` section; --pick wrote it raw into its comment."""
    name = write(folder, f"sm{ESC}\ninit: {{conv2d: {{weight: zeros}}}}\n#.yaml", spaced("  w: {choice: [4, 8]}\n"))
    return [["space", name, "--pick", "1", "-o", "v.yaml"], ["check", "v.yaml"]]


@attack(SPACE, "pick-an-option-holding-a-newline", refused=False, check=_picked_plain)
def _pick_newline(folder: Path) -> list[list[str]]:
    write(folder, "s.yaml", spaced('  w: {choice: [4, "4\\n+ 4"]}\n'))
    return [["space", "s.yaml", "--pick", "1", "-o", "v.yaml"], ["check", "v.yaml"], ["space", "s.yaml"]]


# -- ensembles and the evaluation section

ENS_HEAD = "name: Ens\nensemble:\n  members:\n"


def ensemble(members: str, extra: str = "") -> Callable[[Path], list[list[str]]]:
    def make(folder: Path) -> list[list[str]]:
        write(folder, "m.yaml", TINY)
        write(folder, "ens.yaml", ENS_HEAD + members + extra)
        return [["check", "ens.yaml"]]

    return make


for name, members, extra, expect in [
    ("member-is-itself", "    a: ens.yaml\n    b: m.yaml\n", "", ("ensemble.members.a.spec", "is an ensemble spec")),
    ("weight-overflow", "    a: {spec: m.yaml, weight: 1.7e+308}\n    b: {spec: m.yaml, weight: 1.0e+308}\n", "",
     ("ensemble.members.a.weight", "at most 2^53")),
    ("weight-nan", "    a: {spec: m.yaml, weight: .nan}\n", "", ("ensemble.members.a.weight",)),
    ("weight-zero", "    a: {spec: m.yaml, weight: 0}\n", "", ("ensemble.members.a.weight", "> 0")),
    ("weight-negative", "    a: {spec: m.yaml, weight: -1}\n", "", ("ensemble.members.a.weight", "> 0")),
    ("weight-bool", "    a: {spec: m.yaml, weight: true}\n", "", ("ensemble.members.a.weight",)),
    ("member-missing", "    a: nowhere.yaml\n", "", ("ensemble.members.a.spec", "no such file")),
    ("member-a-folder", "    a: .\n", "", ("ensemble.members.a.spec",)),
    ("member-dev-zero", "    a: /dev/zero\n", "", ("ensemble.members.a.spec",)),
    ("member-nul", '    a: "m\\0.yaml"\n', "", ("ensemble.members.a.spec", "NUL")),
    ("member-name-injection", '    "a\\"); __import__(\\"os\\")": m.yaml\n', "", ("ensemble.members",)),
    ("member-unknown-key", "    a: {spec: m.yaml, wieght: 2}\n", "", ("ensemble.members.a.wieght", "did you mean")),
    ("combine-unknown", "    a: m.yaml\n", "  combine: votes\n", ("ensemble.combine",)),
    ("evaluation-scale-too-big", "    a: m.yaml\n", "evaluation: {scales: [8193]}\n", ("evaluation.scales[0]",)),
    ("evaluation-17-scales", "    a: m.yaml\n", f"evaluation: {{scales: [{many(17)}]}}\n", ("evaluation.scales",)),
    ("evaluation-preset-unknown", "    a: m.yaml\n", "evaluation: {preset: 1000-crop}\n", ("evaluation.preset",)),
    ("evaluation-size-wrong", "    a: m.yaml\n", "evaluation: {size: 9}\n", ("evaluation.size",)),
    ("evaluation-crop-twice", "    a: m.yaml\n", "evaluation: {crops: [center, center]}\n", ("evaluation.crops[1]",)),
    ("evaluation-logits-of-probabilities", "    a: m.yaml\n", "evaluation: {average: logits}\n",
     ("evaluation.average",)),
    ("every-error-of-every-kind", "    a: {spec: m.yaml, wieght: 2}\n    b: nowhere.yaml\n", "colour: red\n",
     ("wieght", "nowhere.yaml", "colour")),
]:  # fmt: skip
    refuse(ENSEMBLE, name, ensemble(members, extra), *expect, located=True)


@attack(ENSEMBLE, "cycle-of-ensembles", "ensemble.members.x.spec", "is an ensemble spec", located=True)
def _cycle(folder: Path) -> list[list[str]]:
    write(folder, "m.yaml", TINY)
    write(folder, "a.yaml", "name: A\nensemble:\n  members: {x: b.yaml, y: m.yaml}\n")
    write(folder, "b.yaml", "name: B\nensemble:\n  members: {x: a.yaml}\n")
    return [["check", "a.yaml"]]


refuse(ENSEMBLE, "ensemble-set-injection",
       lambda f: [["check", member_spec(f), "--set", 'ensemble.members.a.set.conv.out=__import__("os")']],
       "model.conv.out")  # fmt: skip


@attack(ENSEMBLE, "evaluate-at-scale-8192", "evaluation.scales", "--max-memory", located=True)
def _big_scale(folder: Path) -> list[list[str]]:
    write(folder, "s.yaml", EVAL.replace("scales: [10]", "scales: [8192]"))
    return [["evaluate", "s.yaml", "--random-weights", "--data", images(folder), "--workers", "0"]]


# -- weights files, wherever a path to one is given


def weights_case(name: str, make_file: Callable[[Path], str], *expect: str, located_in_spec: bool = True) -> None:
    """The same file through compile --weights, transfer --weights and an ensemble member's weights:"""

    def through_cli(folder: Path) -> list[list[str]]:
        write(folder, "s.yaml", TINY)
        path = make_file(folder)
        return [["compile", "s.yaml", "-o", "o.onnx", "--weights", path]]

    def through_transfer(folder: Path) -> list[list[str]]:
        write(folder, "s.yaml", TINY)
        path = make_file(folder)
        return [["transfer", "--from", "s.yaml", "--to", "s.yaml", "--weights", path, "-o", "o.safetensors"]]

    def through_member(folder: Path) -> list[list[str]]:
        path = make_file(folder)
        return [["compile", member_spec(folder, path), "-o", "o.onnx"]]

    refuse(WEIGHTS, f"{name}-compile", through_cli, *expect)
    refuse(DIFF, f"{name}-transfer", through_transfer, *expect)
    if located_in_spec:  # the error points at the spec's weights: line
        refuse(ENSEMBLE, f"{name}-member", through_member, *expect, "ensemble.members.a.weights", located=True)


def _state(folder: Path, name: str, state: object) -> str:
    torch.save(state, folder / name)
    return name


def _tiny(folder: Path) -> dict[str, torch.Tensor]:
    return _STATE["tiny"]


_STATE: dict[str, dict[str, torch.Tensor]] = {}

weights_case("folder", lambda f: (f / "w").mkdir() or "w", "is a directory")
weights_case("dev-zero", lambda f: "/dev/zero", "not a regular file")
weights_case("pipe", lambda f: fifo(f, "w.pt"), "not a regular file")
weights_case("pipe-safetensors", lambda f: fifo(f, "w.safetensors"), "not a regular file")
weights_case("missing", lambda f: "nowhere.pt", "nowhere.pt")
weights_case("link-in-a-circle", lambda f: link(f, "w.pt", "w.pt"), "w.pt")
weights_case("pickle-of-os-system", lambda f: evil_pickle(f, "w.pt"), "posix.system", "does not allow")
weights_case("pickle-protocol-4", lambda f: evil_pickle(f, "w.pt", protocol=4), "w.pt")
weights_case("torch-save-of-code", lambda f: _state(f, "w.pt", {"conv.weight": _Evil()}), "w.pt")
weights_case("empty-file", lambda f: write(f, "w.pt", b""), "w.pt")
weights_case("garbage-safetensors", lambda f: write(f, "w.safetensors", os.urandom(64)), "not a safetensors file")
weights_case("safetensors-huge-header", lambda f: write(f, "w.safetensors", struct.pack("<Q", 1 << 60) + b"{}"),
             "not a safetensors file")  # fmt: skip
weights_case("a-list", lambda f: _state(f, "w.pt", [torch.zeros(1)]), "expected a state_dict")
weights_case("not-tensors", lambda f: _state(f, "w.pt", {"conv.weight": 3}), "not a state_dict")
weights_case("a-checkpoint", lambda f: _state(f, "w.pt", {"model": _STATE["tiny"], "step": 3}), "its state_dict alone")
weights_case("truncated-zip", lambda f: write(f, "w.pt", _saved(_STATE["tiny"])[:300]), "w.pt")
# the name picks the reader; a file of the other format says what it holds rather than failing to parse
weights_case("torch-file-named-safetensors", lambda f: write(f, "w.safetensors", _saved(_STATE["tiny"])),
             "holds a torch.save file", "asks for a safetensors file")  # fmt: skip
weights_case("safetensors-file-named-pt", lambda f: write(f, "w.pt", _safetensors(_STATE["tiny"])),
             "holds a safetensors file", "asks for a torch.save file")  # fmt: skip
weights_case("complex-safetensors", lambda f: write(f, "w.safetensors", _safetensors(
             {k: v.to(torch.complex64) for k, v in _STATE["tiny"].items()})), "dtype C64")  # fmt: skip


def _sparse(folder: Path, name: str, size: int) -> str:
    """A file of ``size`` bytes that takes no disk space (nothing reads it: it is refused by its size)."""
    with open(folder / name, "wb") as f:
        f.truncate(size)
    return name


def _safetensors(state: dict[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save

    return save(state)


def _one_changed(folder: Path, change: Callable[[torch.Tensor], torch.Tensor]) -> str:
    return _state(folder, "w.pt", {**_STATE["tiny"], "fc.weight": change(_STATE["tiny"]["fc.weight"])})


refuse(WEIGHTS, "a-file-above-the-memory-limit", lambda f: [["compile", write(f, "s.yaml", TINY), "-o", "o.onnx",
       "--max-memory", "1M", "--weights", _sparse(f, "w.safetensors", (1 << 20) + 1)]],
       "the file is 1.0 MiB, above the limit of 1.0 MiB")  # fmt: skip

# entries that are tensors but not dense values: each is one "wrong" line naming the key, never an internal error
for _name, _change, _found in (
    ("sparse-tensor", lambda t: t.to_sparse(), "found a sparse_coo tensor"),
    ("meta-tensor", lambda t: torch.empty(t.shape, device="meta"), "on the meta device"),
    ("nan-values", lambda t: torch.full(t.shape, float("nan")), "found 40 NaN or infinite"),
):
    refuse(WEIGHTS, _name, lambda f, c=_change: [["compile", write(f, "s.yaml", TINY), "-o", "o.onnx",
           "--weights", _one_changed(f, c)]], "fc.weight (expected", _found)  # fmt: skip


def _saved(state: object) -> bytes:
    import io

    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def _integers(folder: Path) -> str:
    return _state(folder, "w.pt", {k: v.to(torch.int32) for k, v in _STATE["tiny"].items()})


refuse(WEIGHTS, "integers-for-float-parameters", lambda f: [["compile", write(f, "s.yaml", TINY), "-o", "o.onnx",
       "--weights", _integers(f)]], "expected floating point values")  # fmt: skip
refuse(WEIGHTS, "wrong-shapes", lambda f: [["compile", write(f, "s.yaml", TINY.replace("out: 4", "out: 5")), "-o",
       "o.onnx", "--weights", _state(f, "w.pt", _STATE["tiny"])]], "wrong (", "conv.weight")  # fmt: skip
refuse(WEIGHTS, "missing-and-unexpected", lambda f: [["compile", write(f, "s.yaml", TINY), "-o", "o.onnx", "--weights",
       _state(f, "w.pt", {"other": torch.zeros(1)})]], "missing (", "unexpected (")  # fmt: skip
refuse(WEIGHTS, "verify-with-a-pickle", lambda f: [["verify", write(f, "s.yaml", TINY), "--weights",
       evil_pickle(f, "w.pt")]], "posix.system")  # fmt: skip
refuse(WEIGHTS, "build-with-a-pipe", lambda f: [["build", write(f, "s.yaml", TINY), "-o", "out", "--weights",
       fifo(f, "w.pt")]], "not a regular file")  # fmt: skip
refuse(WEIGHTS, "evaluate-with-a-pickle", lambda f: [["evaluate", write(f, "s.yaml", EVAL), "--data", images(f),
       "--weights", evil_pickle(f, "w.pt"), "--workers", "0"]], "posix.system")  # fmt: skip

# -- drawings: what names and options can do to the picture and to the terminal

HOSTILE_DOC = 'name: Net\ndoc: "</text><script>alert(1)</script>]]>&amp; \\e[2J"\n' + TINY.split("\n", 1)[1]


def _svg_is_inert(folder: Path, results: list[Result]) -> None:
    import xml.etree.ElementTree as ET

    for name in ("d.svg", "d.html"):
        text = (folder / name).read_text()
        assert "<script" not in text.lower() and "\x1b" not in text, name
    ET.fromstring((folder / "d.svg").read_bytes())  # well-formed XML


attack(DRAW, "doc-text-with-markup", refused=False, check=_svg_is_inert if shutil.which("dot") else None)(
    lambda f: [
        ["draw", write(f, "s.yaml", HOSTILE_DOC), "-o", out]
        for out in (("d.svg", "d.html", "d.dot") if shutil.which("dot") else ("d.dot",))
    ]
)


def _terminal_clean(folder: Path, results: list[Result]) -> None:
    for r in results:
        assert not RAW_CONTROL.search(r.stdout + r.stderr), r
        assert len(r.stdout.splitlines()) <= 1 or r.argv[0] not in ("draw", "check", "compile"), r.stdout


@attack(DRAW, "every-command-on-a-spec-named-with-escapes", refused=False, check=_terminal_clean)
def _named(folder: Path) -> list[list[str]]:
    """What the commands print of a file name (an escape sequence, a carriage return, a bidi
    override, a newline) is escaped: a terminal shows it as text, on one line."""
    name = write(folder, f"s{ESC}\n.yaml", spaced("  w: {choice: [4, 8]}\n"))
    return [["check", name], ["summary", name], ["compile", name, "-o", f"o{ESC}.py"], ["space", name],
            ["space", name, "--format", "markdown"], ["diff", name, name], ["draw", name, "-o", "d.dot"]]  # fmt: skip


attack(DRAW, "output-named-with-escapes", refused=False, check=_terminal_clean)(
    lambda f: [["draw", write(f, "s.yaml", TINY), "-o", f"d{ESC}\nx.dot"], ["check", "s.yaml"]]
)
for name, argv, expect in [
    ("unknown-extension", ["-o", "d.exe"], ("d.exe",)),
    ("negative-depth", ["-o", "d.dot", "--depth", "-1"], ("--depth",)),
    ("focus-injection", ["-o", "d.dot", "--focus", 'conv"]; x [label=<<script>'], ("--focus",)),
    ("show-unknown", ["-o", "d.dot", "--show", "params,secrets"], ("--show",)),
    ("rankdir-injection", ["-o", "d.dot", "--rankdir", "LR]; evil"], ("--rankdir",)),
    ("diff-missing", ["-o", "d.dot", "--diff", "nowhere.yaml"], ("nowhere.yaml", "no such file")),
    ("diff-dev-zero", ["-o", "d.dot", "--diff", "/dev/zero"], ("not a regular file",)),
    ("diff-set-injection", ["-o", "d.dot", "--diff-set", 'conv.out=__import__("os")'], ("model.conv.out",)),
    ("output-named-like-nothing", ["-o", "."], ("cannot tell the format",)),
]:
    refuse(DRAW, name, check_spec(TINY, *argv, command="draw"), *expect)
refuse(DRAW, "output-a-folder", lambda f: [["draw", write(f, "s.yaml", TINY), "-o", (f / "d.svg").mkdir() or "d.svg"]],
       "is a directory")  # fmt: skip
refuse(DRAW, "output-a-pipe", lambda f: [["draw", write(f, "s.yaml", TINY), "-o", fifo(f, "p.dot")]], "not a regular")
refuse(DRAW, "diff-with-a-hostile-spec", lambda f: [["draw", write(f, "s.yaml", TINY), "-o", "d.dot", "--diff",
       write(f, "o.yaml", "name: N\nmodel: !!python/object/apply:os.system [touch PWNED]\n")]],
       "not allowed")  # fmt: skip

# -- diff and transfer

for name, other, expect in [
    ("other-missing", "nowhere.yaml", ("nowhere.yaml", "no such file")),
    ("other-a-folder", ".", ("is a directory",)),
    ("other-dev-zero", "/dev/zero", ("not a regular file",)),
    ("other-dev-stdin", "/dev/stdin", ("not a regular file",)),
]:
    refuse(DIFF, f"diff-{name}", check_spec(TINY, other, command="diff"), *expect)
refuse(DIFF, "diff-other-a-pipe", lambda f: [["diff", write(f, "s.yaml", TINY), fifo(f, "o.yaml")]], "not a regular")
refuse(DIFF, "diff-an-ensemble", lambda f: [["diff", member_spec(f), "m.yaml"]], "ensemble")
refuse(DIFF, "diff-other-python-tag", lambda f: [["diff", write(f, "s.yaml", TINY), write(f, "o.yaml",
       "name: N\nmodel: !!python/name:os.system\n")]], "not allowed", located=True)  # fmt: skip
refuse(DIFF, "diff-other-set-injection", check_spec(TINY, "--other-set", "conv.out=__import__('os')", command="diff"),
       "model.conv.out")  # fmt: skip
refuse(DIFF, "transfer-to-a-folder", lambda f: [["transfer", "--from", write(f, "s.yaml", TINY), "--to", "s.yaml",
       "--weights", _state(f, "w.pt", _STATE["tiny"]), "-o", (f / "o.pt").mkdir() or "o.pt"]],
       "is a directory")  # fmt: skip
refuse(DIFF, "transfer-to-a-pipe", lambda f: [["transfer", "--from", write(f, "s.yaml", TINY), "--to", "s.yaml",
       "--weights", _state(f, "w.pt", _STATE["tiny"]), "-o", fifo(f, "o.pt")]], "not a regular")  # fmt: skip
refuse(DIFF, "transfer-from-a-hostile-spec", lambda f: [["transfer", "--from", write(f, "p.yaml",
       "name: N\nmodel: !!python/object/new:subprocess.Popen [[touch, PWNED]]\n"), "--to", write(f, "s.yaml", TINY),
       "--weights", _state(f, "w.pt", _STATE["tiny"]), "-o", "o.pt"]], "not allowed", located=True)  # fmt: skip
refuse(DIFF, "transfer-int32-weights", lambda f: [["transfer", "--from", write(f, "s.yaml", TINY), "--to", "s.yaml",
       "--weights", _integers(f), "-o", "o.pt"]], "expected floating point values")  # fmt: skip


attack(DIFF, "transfer-output-named-with-escapes", refused=False, check=_terminal_clean)(
    lambda f: [
        [
            "transfer",
            "--from",
            write(f, "s.yaml", TINY),
            "--to",
            "s.yaml",
            "--weights",
            _state(f, "w.pt", _STATE["tiny"]),
            "-o",
            f"o{ESC}\n.safetensors",
        ]
    ]  # fmt: skip
)

# -- evaluation data


def evaluate(*extra: str, spec: str = EVAL) -> Callable[[Path], list[list[str]]]:
    def make(folder: Path) -> list[list[str]]:
        images(folder)
        write(folder, "s.yaml", spec)
        return [["evaluate", "s.yaml", "--random-weights", "--data", "data", "--workers", "0", *extra]]

    return make


def with_data(add: Callable[[Path], object], *extra: str) -> Callable[[Path], list[list[str]]]:
    def make(folder: Path) -> list[list[str]]:
        argvs = evaluate(*extra)(folder)
        add(folder)
        return argvs

    return make


def _counted(n: int) -> Callable[[Path, list[Result]], None]:
    def check(folder: Path, results: list[Result]) -> None:
        assert f": {n} images," in results[0].stdout, results[0].stdout

    return check


attack(DATA, "link-to-a-parent-folder", refused=False, check=_counted(2))(
    with_data(lambda f: link(f, "data/c0/up", os.pardir))
)
attack(DATA, "link-out-of-the-folder", refused=False, check=_counted(2))(
    with_data(
        lambda f: (png(f, "outside/c9/x.png"), link(f, "data/c1/more", os.path.join(os.pardir, os.pardir, "outside")))
    )
)
attack(DATA, "a-file-named-with-escapes", refused=False, check=_terminal_clean)(
    with_data(lambda f: png(f, f"data/c0/b{ESC}.png"))
)
for name, add, expect in [
    ("corrupt-image", lambda f: write(f, "data/c0/bad.png", b"\x89PNG\r\n\x1a\n" + bytes(range(256))), "bad.png"),
    ("truncated-image", lambda f: write(f, "data/c0/cut.png", _noise_png()[:600]), "cut.png"),
    ("image-linked-to-itself", lambda f: link(f, "data/c0/self.png", "self.png"), "self.png"),
    ("link-to-nowhere", lambda f: link(f, "data/c0/gone.png", "nowhere.png"), "gone.png"),
    ("pipe-named-like-an-image", lambda f: fifo(f, "data/c0/pipe.jpg"), "pipe.jpg"),
    ("device-named-like-an-image", lambda f: link(f, "data/c0/zero.png", "/dev/zero"), "zero.png"),
    ("20000x20000-png", lambda f: png_header(f, "data/c0/huge.png", 20000, 20000), "huge.png"),
    ("bomb-just-over-pillows-limit", lambda f: png_header(f, "data/c0/big.png", 10000, 9000), "big.png"),
    ("a-text-file-named-jpg", lambda f: write(f, "data/c1/note.jpg", "not an image\n"), "note.jpg"),
    ("name-with-escapes-corrupt", lambda f: write(f, f"data/c0/x{ESC}.png", b"junk"), "x\\x1b"),
]:
    refuse(DATA, name, with_data(add), expect)


def _strip(folder: Path) -> list[list[str]]:
    """4000 x 2 pixels brought to a shorter side of 2000: 4,000,000 x 2000 pixels."""
    argvs = evaluate(spec=EVAL.replace("[10]", "[2000]"))(folder)
    png(folder, "data/c0/strip.png", (4000, 2))
    return argvs


refuse(DATA, "thin-strip-at-a-large-scale", _strip, "strip.png", "GiB")
refuse(DATA, "data-a-file", lambda f: [["evaluate", write(f, "s.yaml", EVAL), "--random-weights", "--data", "s.yaml"]],
       "not a folder")  # fmt: skip
refuse(DATA, "data-a-pipe", lambda f: [["evaluate", write(f, "s.yaml", EVAL), "--random-weights", "--data",
       fifo(f, "p")]], "not a folder")  # fmt: skip
refuse(DATA, "data-missing", lambda f: [["evaluate", write(f, "s.yaml", EVAL), "--random-weights", "--data", "no"]],
       "not a folder")  # fmt: skip
refuse(DATA, "data-empty", lambda f: [["evaluate", write(f, "s.yaml", EVAL), "--random-weights", "--data",
       (f / "e").mkdir() or "e"]], "no images")  # fmt: skip
refuse(DATA, "more-classes-than-outputs", evaluate(spec=EVAL.replace("out: 10", "out: 1")), "2 classes")

# -- the training script


def train(*extra: str, spec: str = TINY) -> Callable[[Path], list[list[str]]]:
    def make(folder: Path) -> list[list[str]]:
        write(folder, "s.yaml", spec)
        return [["s.yaml", *TRAIN_ARGS, "--steps", "0", *extra]]

    return make


def train_with(make_file: Callable[[Path], str], option: str, data: bool = False) -> Callable[[Path], list[list[str]]]:
    def make(folder: Path) -> list[list[str]]:
        argvs = train()(folder)
        return [[*argvs[0], option, make_file(folder)]]

    return make


for name, make_file, expect in [
    ("integers", _integers, "expected floating point values"),
    ("folder", lambda f: (f / "w").mkdir() or "w", "is a directory"),
    ("dev-zero", lambda f: "/dev/zero", "not a regular file"),
    ("pipe", lambda f: fifo(f, "w.pt"), "not a regular file"),
    ("pickle-of-os-system", lambda f: evil_pickle(f, "w.pt"), "posix.system"),
    ("nothing-fits", lambda f: _state(f, "w.pt", {"other.weight": torch.zeros(2)}), "none of its 1 tensors"),
]:
    refuse(TRAIN, f"weights-{name}", train_with(make_file, "--weights"), expect, program="train")


def _checkpoint(folder: Path, **changes) -> str:
    state = {"model": _STATE["tiny"], "optimizer": {}, "scheduler": {}, "epoch": 0, "batch": 0, "step": 0}
    return _state(folder, "c.pt", {**state, **changes})


for name, make_file, expect in [
    ("a-bare-state-dict", lambda f: _state(f, "c.pt", _STATE["tiny"]), "not a checkpoint of train.py"),
    ("other-keys", lambda f: _state(f, "c.pt", {"weights": _STATE["tiny"]}), "not a checkpoint of train.py"),
    ("empty-optimizer", _checkpoint, "does not fit this run"),
    ("integer-model", lambda f: _checkpoint(f, model={k: v.int() for k, v in _STATE["tiny"].items()}),
     "expected floating point values"),
    ("dev-zero", lambda f: "/dev/zero", "not a regular file"),
    ("folder", lambda f: (f / "c").mkdir() or "c", "is a directory"),
    ("pipe", lambda f: fifo(f, "c.pt"), "not a regular file"),
    ("pickle-of-os-system", lambda f: evil_pickle(f, "c.pt"), "posix.system"),
    ("truncated", lambda f: write(f, "c.pt", _saved({"model": _STATE["tiny"]})[:200]), "c.pt"),
    ("safetensors-weights", lambda f: write(f, "w.safetensors", _safetensors(_STATE["tiny"])),
     "is a safetensors file of weights, not a checkpoint"),
]:  # fmt: skip
    refuse(TRAIN, f"resume-{name}", train_with(make_file, "--resume"), expect, program="train")

for name, add, expect in [
    ("corrupt-image", lambda f: write(f, "data/c0/bad.png", b"\x89PNG\r\n\x1a\njunk"), "bad.png"),
    ("pipe-named-like-an-image", lambda f: fifo(f, "data/c0/pipe.png"), "pipe.png"),
    ("image-linked-to-itself", lambda f: link(f, "data/c1/self.png", "self.png"), "self.png"),
]:

    def make(folder: Path, add=add) -> list[list[str]]:
        images(folder)
        add(folder)
        write(folder, "s.yaml", TINY)
        return [["s.yaml", "--data", "data", "--device", "cpu", "--workers", "0", "--epochs", "1", "--batch-size", "1"]]

    refuse(TRAIN, f"data-{name}", make, expect, program="train")


@attack(TRAIN, "data-link-to-a-parent-folder", refused=False, program="train")
def _train_loop(folder: Path) -> list[list[str]]:
    images(folder)
    link(folder, "data/c0/up", os.pardir)
    write(folder, "s.yaml", TINY)
    return [["s.yaml", "--data", "data", "--device", "cpu", "--workers", "0", "--epochs", "1", "--batch-size", "2"]]


refuse(TRAIN, "spec-with-a-python-tag", train(spec="name: N\nmodel: !!python/object/apply:os.system [touch PWNED]\n"),
       "not allowed", program="train")  # fmt: skip
refuse(TRAIN, "spec-with-an-unknown-key", train(spec=TINY.replace("kernel: 3", "kernel: 3, strid: 2")), "strid",
       program="train")  # fmt: skip
refuse(TRAIN, "set-injection", train("--set", "conv.out=__import__('os')"), "model.conv.out", program="train")


# --------------------------------------------------------------------------- running them

SURFACES = {s: sum(1 for c in CASES if c.surface == s) for s in (SPACE, ENSEMBLE, WEIGHTS, DRAW, DIFF, DATA, TRAIN)}


def _snapshot(folder: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every entry under ``folder`` (links not followed): its mode and, for files, its bytes."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(root, name)
            info = os.lstat(path)
            data = Path(path).read_bytes() if stat.S_ISREG(info.st_mode) else None
            out[os.path.relpath(path, folder)] = (info.st_mode, data)
    return out


@pytest.mark.parametrize("case", [pytest.param(c, id=f"{c.surface.split()[0]}-{c.name}") for c in CASES])
def test_hostile_input_on_the_new_surfaces(case: Attack, tmp_path: Path, tiny_state) -> None:
    _STATE["tiny"] = tiny_state
    argvs = case.make(tmp_path)
    before = _snapshot(tmp_path)
    results = run_cli(tmp_path, argvs, case.timeout, program=case.program, preload=True)
    for r in results:
        what = f"`{case.program} {' '.join(map(str, r.argv))}`"
        everything = r.stdout + r.stderr
        assert "Traceback" not in everything and "internal error" not in everything, f"{what}:\n{everything}"
        assert not RAW_CONTROL.search(everything), f"{what}: raw control characters: {everything!r}"
        assert "weights_only=False" not in everything and "file an issue" not in everything, everything
        if not case.refused:
            assert r.rc in (0, None) or isinstance(r.rc, dict), f"{what} exited {r.rc}:\n{r.stderr}"
            continue
        assert r.rc == 2, f"{what} exited {r.rc}, expected 2\nstdout: {r.stdout}\nstderr: {r.stderr}"
        lines = r.stderr.splitlines()
        assert 1 <= len(lines) <= 4, f"{what}: expected a short diagnostic, got:\n{r.stderr}"
        if case.program == "nasdsl" and r.argv[0] not in ("build", "verify", "evaluate"):  # they print steps
            assert r.stdout == "", f"{what} printed on stdout: {r.stdout}"
        if case.located:
            assert LOCATED.match(lines[0]), f"{what}: expected FILE:LINE:COL: error: ..., got {lines[0]!r}"
        for piece in case.expect:
            assert piece in r.stderr, f"{what}: expected {piece!r} in the diagnostic, got:\n{r.stderr}"
    if case.refused:
        assert _snapshot(tmp_path) == before, "the folder changed: an output or a temporary file was left"
    else:
        assert results[0].rc in (0, None) or isinstance(results[0].rc, dict)
        if case.check is not None:
            case.check(tmp_path, results)
    assert not (tmp_path / CANARY).exists()


def test_every_surface_has_its_cases() -> None:
    """At least ten cases a surface, 120 in all, and docs/security.md counts them as they are."""
    from paths import ROOT

    assert sum(SURFACES.values()) >= 120 and min(SURFACES.values()) >= 10, SURFACES
    names = [(c.surface, c.name) for c in CASES]
    assert len(names) == len(set(names)), "two cases of one name"
    counts = " / ".join(str(n) for n in SURFACES.values())
    assert f"| {counts}: {sum(SURFACES.values())} cases;" in (ROOT / "docs" / "security.md").read_text()
