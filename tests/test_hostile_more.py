"""Input that users who did not write nasdsl give it, beyond tests/test_hostile.py and
tests/test_hostile_surfaces.py: the classes of defect a mutation driver found (every spec of
specs/ and tests/specs/ with each value, key and option changed in turn), each pinned here.

* YAML 1.1 numbers that are not what they look like: ``010`` is octal (8) and ``3:00`` is of
  base 60 (180); they loaded silently as those numbers, and are refused where they stand.
* A key of a named sequence that reads as a block's key with a typo (``Add``, ``Op``, ``When``
  in other case; ``{opp: relu}``, ``{usee: Block}`` as a mapping's one key) made the mapping a
  sequence with an entry so named: ``{Add: [a, b]}`` computed ``b(a(x))``, not ``a(x) + b(x)``.
* ``nasdsl.space.load_space``, the Python API of design spaces, did not compile the spec: a
  malformed one loaded, where the command line refuses it with the compiler's located error.

Each refused case runs through the command line's entry, in this process (``nasdsl.cli.main``,
as ``python -m nasdsl`` runs it): ``check`` and ``compile`` exit 2 with one located line and
write nothing.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import nasdsl
from nasdsl import ir
from nasdsl import space as spaces
from nasdsl.cli import main
from nasdsl.errors import NasdslError

from test_hostile import LOCATED, snapshot

HEAD = """\
name: Net
input: {shape: [3, 8, 8]}
templates:
  Block:
    params: [{c: 4}]
    body: {conv: {op: conv2d, out: c, kernel: 1}}
model:
  conv: {op: conv2d, out: 4, kernel: 3}
"""


@dataclass(frozen=True)
class Result:
    rc: int
    stdout: str
    stderr: str


def run(folder: Path, capsys, *argvs: list[str]) -> list[Result]:
    """Each argv through the command line's entry, in ``folder``."""
    results = []
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        for argv in argvs:
            rc = main(argv)
            results.append(Result(rc, *capsys.readouterr()))
    return results


def assert_refused(folder: Path, capsys, text: str, *expect: str) -> str:
    """``check`` and ``compile`` of ``text`` (written to spec.yaml) exit 2 with one located line
    holding every piece of ``expect``, the same from both, and leave the folder as it was."""
    (folder / "spec.yaml").write_text(text)
    before = snapshot(folder)
    results = run(folder, capsys, ["check", "spec.yaml"], ["compile", "spec.yaml", "-o", "OUT.py"])
    for r in results:
        assert r.rc == 2 and r.stdout == "", r
        (line,) = r.stderr.splitlines()
        assert LOCATED.match(line) and "Traceback" not in line, line
        for piece in expect:
            assert piece in line, f"expected {piece!r} in {line!r}"
    assert results[0].stderr == results[1].stderr
    assert snapshot(folder) == before, "the folder changed"
    return results[0].stderr


# --------------------------------------------------------------------------- YAML 1.1 numbers

SURPRISING = [
    ("010", "8", "octal"),
    ("-010", "-8", "octal"),
    ("00", "0", "octal"),
    ("0_7", "7", "octal"),
    ("3:00", "180", "base 60"),
    ("1:0", "60", "base 60"),
    ("1:30.5", "90.5", "base 60"),
    ("!!int 010", "8", "octal"),
]


@pytest.mark.parametrize(("text", "read", "kind"), SURPRISING, ids=[s[0] for s in SURPRISING])
def test_a_yaml_11_number_that_is_not_what_it_looks_like_is_refused(tmp_path, capsys, text, read, kind):
    spec = HEAD.replace("out: 4, kernel: 3", f"out: {text}, kernel: 3")
    err = assert_refused(tmp_path, capsys, spec, "spec.yaml:8:27:", f"reads as {read} in YAML 1.1", kind, "quote it")
    assert repr(text.removeprefix("!!int ")) in err


def test_the_same_numbers_are_refused_in_a_set(tmp_path, capsys):
    (tmp_path / "spec.yaml").write_text(HEAD)
    argvs = [["check", "spec.yaml", "--set", s] for s in ("conv.out=010", "conv.kernel=[1:0, 1]", "conv.out=2:00")]
    results = run(tmp_path, capsys, *argvs)
    assert [r.rc for r in results] == [2, 2, 2], results
    assert results[0].stderr.startswith("<--set conv.out=010>:1:10: error: '010' reads as 8 in YAML 1.1")
    assert "'1:0' reads as 60" in results[1].stderr and "'2:00' reads as 120" in results[2].stderr


@pytest.mark.parametrize(
    ("text", "value"), [("0x10", 16), ("0b11", 3), ("1_000", 1000), ("+12", 12), ("'010'", None)], ids=str
)
def test_numbers_that_say_what_they_are_still_load(tmp_path, text, value):
    """Hexadecimal, binary and grouped digits are what they look like; a quoted 010 is text,
    which the expression parser refuses as Python does (leading zeros)."""
    path = tmp_path / "spec.yaml"
    path.write_text(HEAD.replace("out: 4, kernel: 3", f"out: {text}, kernel: 1"))
    if value is None:
        with pytest.raises(NasdslError, match="leading zeros are not allowed"):
            nasdsl.compile_spec(path)
        return
    assert ir.node(nasdsl.compile_spec(path).graph, "conv").attrs["out"] == value


# --------------------------------------------------------------------------- keys that read as a block's key

LOOKALIKES = [
    ("{Add: [relu, relu]}", "Add", "'Add' is the key 'add' in other case"),
    ("{Concat: {a: relu, b: relu}}", "Concat", "'Concat' is the key 'concat' in other case"),
    ("{Op: relu}", "Op", "'Op' is the key 'op' in other case"),
    ("{SEQ: [relu, relu]}", "SEQ", "'SEQ' is the key 'seq' in other case"),
    ("{a: relu, When: true}", "When", "'When' is the key 'when' in other case"),
    ("{opp: relu}", "opp", "'opp', the one key of this mapping, reads as 'op' with a typo"),
    ("{usee: Block}", "usee", "'usee', the one key of this mapping, reads as 'use' with a typo"),
    ("{reff: conv}", "reff", "'reff', the one key of this mapping, reads as 'ref' with a typo"),
    ("{sq: [relu, relu]}", "sq", "'sq', the one key of this mapping, reads as 'seq' with a typo"),
]


@pytest.mark.parametrize(("block", "key", "message"), LOOKALIKES, ids=[c[1] for c in LOOKALIKES])
def test_a_key_that_reads_as_a_blocks_key_is_refused(tmp_path, capsys, block, key, message):
    err = assert_refused(
        tmp_path, capsys, f"{HEAD}  y: {block}\n", f"model.y.{key}: {message}", "give the entry another name"
    )
    line, column = LOCATED.match(err.splitlines()[0]).group("line", "column")
    assert (int(line), int(column)) == (9, 3 + len("y: {") + block[1:].index(key))


def test_a_merge_in_other_case_was_a_sequence(tmp_path):
    """What the refusal prevents: the same spec with `add` is a sum of two branches (two nodes
    reading the convolution, one add), where `Add` chained them, silently."""
    path = tmp_path / "spec.yaml"
    path.write_text(f"{HEAD}  y: {{add: [relu, sigmoid]}}\n")
    g = nasdsl.compile_spec(path).graph
    assert ir.node(g, "y").op == "add" and sorted(g.predecessors("y")) == ["y.0", "y.1"]


@pytest.mark.parametrize(
    "block",
    [
        "{top: relu, b: relu}",
        "{top: Block}",
        "{se: relu}",
        "{p: relu}",
        "{ops: {op: relu}}",
        "{sequence: [relu, relu]}",
        "{user: relu, used: relu}",
    ],
)
def test_names_near_a_key_name_entries_where_nothing_reads_as_a_typo(tmp_path, block):
    """Two entries, a value that is a block of its own kind, another first letter or a name far
    from any key: a sequence, whose entries are nodes under their names."""
    path = tmp_path / "spec.yaml"
    path.write_text(f"{HEAD}  y: {block}\n")
    nodes = set(nasdsl.compile_spec(path).graph.nodes)
    first = block[1:].split(":")[0]
    assert f"y.{first}" in nodes or any(n.startswith(f"y.{first}.") for n in nodes), sorted(nodes)


# --------------------------------------------------------------------------- load_space, the Python API

SPACE = """\
name: Net
input: {shape: [3, 8, 8]}
variables:
  w: {choice: [4, 8]}
model:
  conv: {op: conv2d, out: w, kernel: 3}
  pool: global_avg_pool
"""
BAD_SPACES = [
    ("unknown-key", SPACE.replace("kernel: 3}", "kernel: 3, strid: 2}"), "6:41: error: model.conv.strid: unknown key"),
    ("no-input", SPACE.replace("input:", "inputt:"), "1:1: error: input: missing key 'input'"),
    ("wrong-type", SPACE.replace("kernel: 3}", "kernel: 3, doc: 5}"), "6:46: error: model.conv.doc: expected a string"),
    ("lookalike", SPACE.replace("pool: global_avg_pool", "pool: {Op: relu}"), "7:10: error: model.pool.Op"),
    ("octal", SPACE.replace("[4, 8]", "[4, 010]"), "4:19: error: '010' reads as 8"),
    ("bad-name", SPACE.replace("pool:", "1pool:"), "7:3: error: model.1pool: expected a block name"),
]


@pytest.mark.parametrize(("text", "message"), [c[1:] for c in BAD_SPACES], ids=[c[0] for c in BAD_SPACES])
def test_load_space_raises_the_compilers_located_errors(tmp_path, capsys, text, message):
    """load_space parses the spec as the compiler does: a malformed spec raises the same errors,
    with the same text as `nasdsl space` prints (it loaded, and every variant was invalid)."""
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(NasdslError) as raised:
        spaces.load_space(path)
    assert str(raised.value).startswith(f"{path}:{message}"), str(raised.value)
    with pytest.raises(NasdslError) as compiled:
        nasdsl.compile_spec(path)
    assert str(compiled.value) == str(raised.value)
    assert main(["space", str(path), "--count"]) == 2
    assert capsys.readouterr().err.strip() == str(raised.value)


def test_load_space_reports_every_unknown_key_and_a_bad_set(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(SPACE.replace("kernel: 3}", "kernel: 3, strid: 2}").replace("name: Net", "name: Net\nsize: 3"))
    with pytest.raises(NasdslError) as raised:
        spaces.load_space(path)
    assert [line.split(": error: ")[1].split(":")[0] for line in str(raised.value).splitlines()] == [
        "size",
        "model.conv.strid",
    ]
    path.write_text(SPACE)
    with pytest.raises(
        NasdslError, match=r"<--set conv.kernal=1>:1:13: error: model.conv.kernal: .*did you mean 'kernel'"
    ):
        spaces.load_space(path, ["conv.kernal=1"])


def test_a_default_variant_that_does_not_build_is_a_variant_like_any_other(tmp_path):
    """Whether a variant builds is the space's to say, for the default as for the others: the
    evaluator reports the compiler's error for it (the command line, which compiles the default
    before anything, refuses such a spec)."""
    from nasdsl.variants import Evaluator

    path = tmp_path / "space.yaml"
    path.write_text(SPACE.replace("[4, 8]", "[4, 8], default: 8").replace("kernel: 3}", "kernel: {choice: [3, 30]}}"))
    space = spaces.load_space(path, ["conv.kernel=30"])
    assert space.count() == 2
    with pytest.raises(NasdslError) as compiled:
        nasdsl.compile_spec(path, ["conv.kernel=30"])
    result = Evaluator(space).evaluate(space.default)
    assert not result.valid and result.error == str(compiled.value)
    assert "model.conv: expected a kernel no larger than the input 8x8, got 30x30" in result.error


def test_load_space_refuses_an_ensemble_spec(tmp_path):
    (tmp_path / "m.yaml").write_text(SPACE)
    path = tmp_path / "ens.yaml"
    path.write_text("name: Ens\nensemble:\n  members:\n    a: m.yaml\n    b: m.yaml\n")
    with pytest.raises(NasdslError) as raised:
        spaces.load_space(path)
    assert str(raised.value) == f"{path}:1:1: error: is an ensemble spec, which has no design space of its own: " + (
        "load a member's spec"
    )


# --------------------------------------------------------------------------- option values

EMPTY = [
    ["check", ""],
    ["diff", "spec.yaml", ""],
    ["draw", "spec.yaml", "-o", "d.dot", "--diff", ""],
    ["build", "spec.yaml", "-o", ""],
    ["compile", "spec.yaml", "-o", "m.onnx", "--weights", ""],
    ["search", "spec.yaml", "--minimize", "macs", "--workdir", ""],
    ["bench", "spec.yaml", "--data", ""],
    ["import", "torchvision:alexnet", "-o", "a.yaml", "--name", ""],
    ["check", "spec.yaml", "--set", ""],
]


@pytest.mark.parametrize("argv", EMPTY, ids=[" ".join(a[:1] + a[2:]) or "spec" for a in EMPTY])
def test_an_empty_option_value_is_refused_not_taken_as_absent(tmp_path, capsys, argv):
    """`diff SPEC ''` compared SPEC with itself, `--workdir ''` searched in the default folder,
    `build -o ''` wrote into the working folder, `--name ''` took the model's name: an empty value
    is now an error naming the option, before anything runs."""
    (tmp_path / "spec.yaml").write_text(HEAD)
    before = snapshot(tmp_path)
    with pytest.MonkeyPatch.context() as patch, pytest.raises(SystemExit) as exited:
        patch.chdir(tmp_path)
        main(argv)
    assert exited.value.code == 2
    out, err = capsys.readouterr()
    name = "spec" if argv[1] == "" else "other" if argv[0] == "diff" else argv[argv.index("") - 1]
    name = {"-o": "--output-dir"}.get(name, name)
    assert out == "" and err == (
        f"nasdsl {argv[0]}: error: {name}: expected a value, got an empty string (see nasdsl {argv[0]} --help)\n"
    )
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bench", "spec.yaml", "--threads", "1000000"], "--threads: expected a number above 0 and at most 1,024"),
        (
            ["evaluate", "spec.yaml", "--data", ".", "--workers", "100000"],
            "--workers: expected an integer >= 0 and <= 256",
        ),
        (
            ["bench", "spec.yaml", "--repeats", str(10**12)],
            "--repeats: expected a number above 0 and at most 1,000, got '1000000000000'",
        ),
    ],
    ids=["bench-threads", "evaluate-workers", "bench-repeats"],
)
def test_threads_and_processes_are_bounded(tmp_path, capsys, argv, message):
    """A million threads or loader processes were asked for as given (while `bench --threads
    1000000` ran, other processes on the machine failed to start threads), and `bench --repeats
    1000000000000` timed rounds until interrupted: refused at once."""
    with pytest.MonkeyPatch.context() as patch, pytest.raises(SystemExit) as exited:
        patch.chdir(tmp_path)
        main(argv)
    assert exited.value.code == 2 and message in capsys.readouterr().err


def test_train_py_bounds_its_loader_processes_as_evaluate_does(tmp_path, capsys):
    """examples/train.py --workers 100000 asked for as many loader processes; refused with the
    bound of `nasdsl evaluate --workers` (one constant), before anything is read or built."""
    import importlib.util

    from nasdsl.commands.evaluate import MAX_WORKERS

    path = Path(__file__).resolve().parent.parent / "examples" / "train.py"
    found = importlib.util.spec_from_file_location("nasdsl_example_train_bounds", path)
    train = importlib.util.module_from_spec(found)
    with pytest.MonkeyPatch.context() as patch, pytest.raises(SystemExit) as exited:
        patch.setitem(sys.modules, found.name, train)  # its dataclasses look their module up
        found.loader.exec_module(train)
        patch.chdir(tmp_path)
        # no spec: were the bound gone, the run stops at the missing file, never starting a loader
        train.main(["missing.yaml", "--synthetic", "4", "--device", "cpu", "--workers", "100000"])
    assert exited.value.code == 2 and MAX_WORKERS == 256
    assert capsys.readouterr().err.endswith("error: --workers: expected at most 256 loader processes, got 100,000\n")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["1abc", "class", "a b", "x" * 300, "__x"])
def test_import_checks_its_name_as_the_spec_does(tmp_path, capsys, name):
    """A --name the spec's parser refuses was found only once the spec was written: an internal
    error (exit 1), or a temporary file name too long to make; now refused as an option."""
    with pytest.MonkeyPatch.context() as patch, pytest.raises(SystemExit) as exited:
        patch.chdir(tmp_path)
        main(["import", "torchvision:alexnet", "-o", "a.yaml", "--name", name])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and err.startswith("nasdsl import: error: --name: expected a model name"), err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--trial-timeout", "nan"], "--trial-timeout: expected a number above 0, got 'nan'"),
        (["--trial-timeout", "0"], "--trial-timeout: expected a number above 0, got '0'"),
        (["--cpus-per-trial", "nan"], "--cpus-per-trial: expected a number of at least 0, got 'nan'"),
        (["--workers", "1000000"], "error: --workers: expected at most 256 processes in a local pool, got 1,000,000"),
        (["--parent", "spec.yaml"], "error: --parent: goes with --warm-start (the weights it describes)"),
        (["--parent-set", "conv.out=8"], "error: --parent-set: goes with --warm-start (the weights it describes)"),
    ],
    ids=["timeout-nan", "timeout-0", "cpus-nan", "workers", "parent", "parent-set"],
)
def test_search_options_that_mean_nothing_are_refused(tmp_path, capsys, option, message):
    """A timeout of nan or 0 seconds, a local pool of a million processes, and a --parent without
    the --warm-start weights it describes were taken as given (the parent silently ignored)."""
    (tmp_path / "spec.yaml").write_text(SPACE)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        try:
            rc = main(["search", "spec.yaml", "--minimize", "macs", "--trials", "1", *option])
        except SystemExit as e:
            rc = e.code
    assert rc == 2 and message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml"]


BIG_INPUT = "name: Net\ninput: {shape: [3, 1024, 1024]}\nmodel:\n  conv: {op: conv2d, out: 4, kernel: 3}\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["verify", "spec.yaml", "--batch", "8192"], "error: --batch: verifying the model at batch 8,192 needs"),
        (["bench", "spec.yaml", "--batch", "1,4096"], "error: --batch: benchmarking the model at batch 4,096 needs"),
        (
            ["compile", "spec.yaml", "-o", "m.onnx", "--optimize-for", "onnxruntime-int8", "--batch", "4096"],
            "error: --batch: calibrating the onnxruntime-int8 artifact at batch 4,096 needs",
        ),
        (["verify", "spec.yaml", "--max-memory", "50M"], "error: --batch: verifying the model at batch 1 needs"),
        (["build", "spec.yaml", "-o", "out", "--max-memory", "50M"], "error: verifying the model at batch 1 needs"),
    ],
    ids=["verify", "bench", "int8", "verify-limit", "build"],
)
def test_the_activations_of_a_run_are_estimated_before_it_runs(tmp_path, capsys, argv, message):
    """A 3x1024x1024 input at batch 8,192 (447 GiB of activations) was an internal error where the
    allocation failed, or ran the machine out of memory; the peak the graph holds at batch 1
    (7,323,664 values: the input and the convolution's output, 3 + 4 maps of 1022x1022 or more),
    in float32, for PyTorch and ONNX Runtime, is now checked against --max-memory first."""
    (tmp_path / "spec.yaml").write_text(BIG_INPUT)
    before = snapshot(tmp_path)
    results = run(tmp_path, capsys, argv)
    assert results[0].rc == 2 and message in results[0].stderr, results[0]
    need = 2 * 4 * int(message.split("batch ")[1].split()[0].replace(",", "")) * (3 * 1024 * 1024 + 4 * 1022 * 1022)
    assert f"needs about {need / (1 << 30):,.1f} GiB of memory for the activations" in results[0].stderr
    assert snapshot(tmp_path) == before


# --------------------------------------------------------------------------- import: inputs a spec cannot hold


def _onnx_relu(path: Path, shape: list[int], elem: str = "FLOAT") -> None:
    """A one-node ONNX file (Relu) whose input has ``shape`` and type ``elem``, written with
    onnx.helper: the smallest model each case needs."""
    import onnx
    from onnx import helper

    kind = getattr(onnx.TensorProto, elem)
    x = helper.make_tensor_value_info("x", kind, shape)
    y = helper.make_tensor_value_info("y", kind, shape)
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="r")], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


HINT = ": give --input-shape C,H,W to import it at another size"
NOT_FLOAT = (
    "a spec's input is a float tensor (float32), and an input of another type (integer token ids, a boolean mask) "
    "has no spec equivalent"
)
BAD_ONNX_INPUTS = [
    (
        "height",
        [1, 3, 100000, 8],
        "FLOAT",
        "the input 'x' [1, 3, 100000, 8] has a size of 100,000 for its height (H): a spec's input has at most "
        f"65,536 there{HINT}",
    ),
    (
        "channels",
        [1, 3000000, 1, 1],
        "FLOAT",
        "the input 'x' [1, 3000000, 1, 1] has a size of 3,000,000 for its channels (C): a spec's input has at most "
        f"1,048,576 there{HINT}",
    ),
    (
        "zero",
        [1, 3, 0, 8],
        "FLOAT",
        "the input 'x' [1, 3, 0, 8] has a size of 0 for its height (H), an empty tensor: a spec's input has sizes "
        f"of at least 1{HINT}",
    ),
    (
        "negative",
        [1, 3, -1, 8],
        "FLOAT",
        "the input 'x' [1, 3, -1, 8] has a size of -1 for its height (H): a spec's input has sizes of at least "
        f"1{HINT}",
    ),
    ("int64", [1, 3, 8, 8], "INT64", f"the input 'x' holds int64 values: {NOT_FLOAT}"),
    ("bool", [1, 3, 8, 8], "BOOL", f"the input 'x' holds bool values: {NOT_FLOAT}"),
]


@pytest.mark.parametrize(
    ("shape", "elem", "message"), [c[1:] for c in BAD_ONNX_INPUTS], ids=[c[0] for c in BAD_ONNX_INPUTS]
)
def test_an_onnx_input_a_spec_cannot_hold_is_refused(tmp_path, capsys, shape, elem, message):
    """An input above the spec's bounds was an internal error (the written spec did not
    compile: ImportMismatch, exit 1); a size of 0 was called a symbolic shape; an int64 or bool
    input (token ids, a mask) was imported as float without a word. Each is refused, naming
    the input, with nothing written."""
    _onnx_relu(tmp_path / "m.onnx", shape, elem)
    (result,) = run(tmp_path, capsys, ["import", "m.onnx", "-o", "m.yaml"])
    assert result.rc == 2 and result.stderr == f"m.onnx: error: {message}\n", result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_a_spec_beyond_the_default_limits_is_refused_not_an_internal_error(tmp_path, capsys):
    """A model whose spec is larger than a spec may be (a file over --max-bytes' default of 1
    MiB takes some 18,000 layers: the limit is lowered here to 100 bytes, the same code path)
    was an internal error: the written spec did not compile. Refused, naming the limit."""
    from nasdsl.importer import check
    from nasdsl.loader import Limits

    _onnx_relu(tmp_path / "m.onnx", [1, 3, 8, 8])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(check, "SPEC_LIMITS", Limits(max_bytes=100))
        (result,) = run(tmp_path, capsys, ["import", "m.onnx", "-o", "m.yaml"])
    assert result.rc == 2 and result.stderr.startswith(
        "m.onnx: error: its spec would be beyond a limit that check and compile apply by default, so none is "
        "written: file is "
    ), result.stderr
    assert result.stderr.endswith(" bytes, above the limit of 100 (raise it with --max-bytes)\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_an_onnx_input_of_another_float_type_is_imported_and_said(tmp_path, capsys):
    """float16 is a float the spec's float32 model computes: imported, with a note."""
    _onnx_relu(tmp_path / "m.onnx", [1, 3, 8, 8], "FLOAT16")
    (result,) = run(tmp_path, capsys, ["import", "m.onnx", "-o", "m.yaml"])
    assert result.rc == 0 and "note: the input 'x' is float16: the spec's model computes in float32" in result.stdout
    assert ir.info(nasdsl.compile_spec(tmp_path / "m.yaml").graph).input == "x"


def test_an_input_the_spec_cannot_hold_is_refused_for_a_pytorch_model_too():
    """The same bound, for a module imported through the Python API at a size given."""
    import torch

    from nasdsl.importer import ImportFailure, import_model

    with pytest.raises(ImportFailure) as raised:
        import_model(torch.nn.ReLU(), input_shape=(3, 70000, 1))
    assert raised.value.format() == (
        "ReLU: error: the input, of shape [3, 70000, 1], has a size of 70,000 for its height (H): a spec's input "
        "has at most 65,536 there"
    )


# --------------------------------------------------------------------------- import: names the parser refuses


def _module(name: str, holds: bool, alone: bool, child: str = "relu"):
    """A module whose child ``name`` is a ReLU (or, ``holds``, a 1x1 convolution; ``child``
    "list", an nn.Sequential of a ReLU and a sigmoid), followed by a ReLU named ``tail`` unless
    ``alone``."""
    import torch.nn as nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            made = nn.Sequential(nn.ReLU(), nn.Sigmoid()) if child == "list" else nn.ReLU()
            setattr(self, name, nn.Conv2d(3, 3, 1) if holds else made)
            if not alone:
                self.tail = nn.ReLU()

        def forward(self, x):
            x = getattr(self, name)(x)
            return x if alone else self.tail(x)

    return Net()


@pytest.mark.parametrize("name", ["Add", "Op", "Seq", "When", "REPEAT"])
def test_an_entry_named_like_a_key_in_other_case_is_renamed_or_refused(name):
    """A module's child named `Add` or `Op` was written as an entry so named, which the parser
    refuses (a key in other case): an internal error. An entry without weights is renamed (the
    network is the same: two ReLUs); one with weights, whose name is its state_dict key, is refused."""
    from nasdsl.importer import ImportFailure, import_model

    result = import_model(_module(name, False, False), input_shape=(3, 4, 4))
    assert f"{name}:" not in result.text
    g = result.compiled.graph
    assert sorted(data.op for _, data in ir.nodes(g)) == ["input", "relu", "relu"]
    with pytest.raises(ImportFailure) as raised:
        import_model(_module(name, True, False), input_shape=(3, 4, 4))
    assert (
        f"its child '{name}' holds weights and its name cannot name an entry of a named sequence (the key "
        + (f"'{name.lower()}' in other case, which the spec's parser refuses as a name)")
        in raised.value.format()
    )


LONE = [
    ("opp", "relu", "opp: {op: relu}", {"opp": "relu"}),
    ("reff", "relu", "reff: {op: relu}", {"reff": "relu"}),
    ("sq", "list", "sq: {seq: [relu, sigmoid]}", {"sq.0": "relu", "sq.1": "sigmoid"}),
    ("ops", "list", "ops: [relu, sigmoid]", {"ops.0": "relu", "ops.1": "sigmoid"}),
]


@pytest.mark.parametrize(("name", "child", "written", "ops"), LONE, ids=[c[0] for c in LONE])
def test_a_lone_entry_named_like_a_typo_of_a_key_keeps_its_name(name, child, written, ops):
    """The one entry of a mapping named `opp` was written `opp: relu`, and one named `sq` holding
    a list `sq: [...]`, which the parser refuses as typos of `op` and `seq`: each is written with
    its key, under the source's name (`ops: [...]` is no typo of `seq` and stays as it was)."""
    from nasdsl.importer import import_model

    result = import_model(_module(name, False, True, child), input_shape=(3, 4, 4))
    assert f"\n  {written}\n" in result.text
    g = result.compiled.graph
    assert {n: ir.node(g, n).op for n in ops} == ops


# --------------------------------------------------------------------------- a file's name with a trailing slash


@pytest.mark.parametrize("where", ["argument", "extends"])
def test_a_file_named_with_a_trailing_slash_is_not_a_directory(tmp_path, capsys, where):
    """`spec.yaml/` loaded spec.yaml (pathlib drops the slash) where the system says "Not a
    directory" (`cat spec.yaml/`): refused as the system refuses it, on the command line and in
    an `extends`."""
    (tmp_path / "spec.yaml").write_text(HEAD)
    (tmp_path / "child.yaml").write_text("extends: spec.yaml/\n")
    with pytest.raises(NotADirectoryError):
        open(f"{tmp_path}/spec.yaml/")  # noqa: SIM115 - what the system says
    spec, at = (
        ("spec.yaml/", "spec.yaml/:1:1: error: ")
        if where == "argument"
        else ("child.yaml", "child.yaml:1:10: error: extends: ")
    )
    results = run(tmp_path, capsys, ["check", spec], ["compile", spec, "-o", "m.py"])
    for r in results:
        assert r.rc == 2 and r.stderr == (
            f"{at}not a directory: the name ends with a slash, which names a folder, and the file is not one "
            "(give the file's name without the slash)\n"
        ), r
    assert sorted(p.name for p in tmp_path.iterdir()) == ["child.yaml", "spec.yaml"]


# --------------------------------------------------------------------------- bench --data: a pickle inside


class _Marks:
    """Unpickled, it would write the file ``path``: what loading a pickle can do."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (Path.write_text, (Path(self.path), "ran"))


@pytest.mark.parametrize(("file", "shown"), [("data.npy", "data.npy"), ("data.npz", "data.npz[x]")])
def test_bench_data_holding_python_objects_is_refused_without_advice_to_unpickle(tmp_path, file, shown):
    """numpy's error for an array of objects says to load it with allow_pickle=True, which runs
    the file's pickle (here it would write a file), and nasdsl passed that advice on; an .npz
    member of objects was an internal error. Both are refused, saying what the file holds and
    what is expected, and nothing of the file runs."""
    import numpy as np

    from nasdsl.bench.data import DataError, load

    array = np.empty((2, 3, 8, 8), dtype=object)
    array[...] = 0.0
    array[0, 0, 0, 0] = _Marks(str(tmp_path / "ran"))
    path = tmp_path / file
    if file.endswith(".npy"):
        np.save(path, array)
    else:
        np.savez(path, x=array)
    with pytest.raises(DataError) as raised:
        load(path, (3, 8, 8))
    assert raised.value.format() == (
        f"error: {tmp_path / shown}: holds Python objects (a pickled array), which nasdsl does not load: expected an "
        "array of numbers (float or integer), saved with numpy.save or numpy.savez"
    )
    assert "pickle=" not in raised.value.format() and not (tmp_path / "ran").exists()


# --------------------------------------------------------------------------- an entry with the input's name


@pytest.mark.parametrize(
    ("input_", "entry", "message"),
    [
        (
            "{shape: [3, 8, 8]}",
            "x",
            "spec.yaml:5:6: error: model.x: the entry 'x' has the input's name ('x' names an input without a name): "
            "rename the entry, or name the input (input: {name: image, shape: ...})",
        ),
        (
            "{name: img, shape: [3, 8, 8]}",
            "img",
            "spec.yaml:5:8: error: model.img: the entry 'img' has the input's name (input.name): rename the entry or "
            "the input",
        ),
    ],
    ids=["default", "named"],
)
def test_an_entry_with_the_inputs_name_is_refused_where_it_stands(tmp_path, capsys, input_, entry, message):
    """An entry named `x` clashed with the input's default name and was reported at `input`
    (line 2), which names nothing: it is reported at the entry, saying where the name comes from."""
    text = f"name: Net\ninput: {input_}\nmodel:\n  a: relu\n  {entry}: relu\n"
    assert assert_refused(tmp_path, capsys, text) == message + "\n"
