"""Hostile and broken specs: compiling one never runs code, hangs, exhausts memory, leaves a
half-written file, or writes generated code that does something the spec does not say.

Every file of ``tests/hostile/`` (its README says what each one tries) and every case generated
here goes through the command line in a child process, with a memory cap and a generous timeout:
a hang or a runaway allocation fails the test, and no test asserts how fast anything is. In one
child, ``check``, ``compile --to pytorch`` (to a new file and over an existing one) and
``compile --to onnx`` must each exit 2 with a short ``FILE:LINE:COL: error:`` diagnostic that
names what was wrong (the limit and its flag, where one can be raised); the working folder must be
exactly as it was (no output, no temporary file, the existing file byte-identical) and the canary
file ``PWNED``, which every injection attempt tries to create, must not exist.

Specs that are hostile but valid (code in ``doc`` text, a file name with quotes and newlines) must
compile to a file whose syntax tree holds exactly what the spec describes: a module docstring,
the usual imports, ``__all__``, the classes of the spec and nothing else, with the hostile text
only inside docstrings and comments (:func:`generated_problems`). Names that would shadow what
the generated file uses (``torch``, ``nn``, ``self``, ``forward``, ``train`` ...) must be refused
or made harmless; the matrix at the end tries each in every field that carries a name.

A bug these tests find in code they do not own is marked ``xfail(strict=True)`` with the file and
the reason until it is fixed, so that the fix shows up as an unexpected pass to un-mark.
"""

from __future__ import annotations

import ast
import builtins
import errno
import io
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tokenize
from dataclasses import dataclass
from pathlib import Path

import pytest

import nasdsl
from nasdsl import cli
from nasdsl.errors import NasdslError

HOSTILE = Path(__file__).resolve().parent / "hostile"
TIMEOUT = 10.0  # seconds for one child running all four commands; generous: a case takes well under one
MEMORY = 6 << 30  # address-space cap of the child: importing torch and onnxruntime needs about 3.4 GiB
CANARY = "PWNED"
PAYLOAD = 'x"); __import__("os").system("touch PWNED")  #'
KEEP = b"# an earlier output, which a failed run must leave alone\n"

# The child that runs the commands of one case: it caps its own address space (Linux), reads no
# standard input, runs each argv through nasdsl's entry point as `python -m nasdsl` does and
# reports what each printed and returned; whatever else reaches fd 1 or 2 is reported as stray.
CHILD = r"""
def run_case(request):
    import contextlib, io, os, sys, tempfile
    os.chdir(request["cwd"])
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    sys.stdin = open(os.devnull)
    stray = tempfile.TemporaryFile()
    os.dup2(stray.fileno(), 1)
    os.dup2(stray.fileno(), 2)
    if sys.platform.startswith("linux"):
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (request["memory"], request["memory"]))
    if request.get("program") == "train":  # examples/train.py, imported by the server
        main = sys.modules["nasdsl_example_train"].main
    else:
        from nasdsl.cli import main
    results = []
    for argv in request["argvs"]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = main(argv)
            except SystemExit as e:
                rc = e.code
        results.append({"argv": argv, "rc": rc, "stdout": out.getvalue(), "stderr": err.getvalue()})
    stray.seek(0)
    return {"results": results, "stray": stray.read().decode(errors="replace")}
"""

# A server that imports nasdsl once and forks one child per case (a fresh process costs most of
# a case's time in imports): one JSON request per line in, one JSON reply per line out. It kills
# a child that outlives its timeout and says so.
SERVER = (
    CHILD
    + r"""
import json, os, select, signal, sys, time
import nasdsl.cli, nasdsl.backends.onnx, nasdsl.backends.pytorch  # what every case needs, imported once
nasdsl.cli.parser()  # and what every call of main() imports to build its parser (the command modules)


def preload():
    # what the cases of weights files, evaluation data and the training script use: imported
    # once, on the first request that asks, before any child is forked
    import importlib.util
    import numpy, onnx, torch, torchvision, PIL.Image, safetensors.numpy, nasdsl.tta, nasdsl.commands.evaluate
    import nasdsl.commands.draw, nasdsl.commands.transfer, nasdsl.commands.diff, nasdsl.commands.space
    spec = importlib.util.spec_from_file_location("nasdsl_example_train", TRAIN)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)


while line := sys.stdin.readline():
    request = json.loads(line)
    if request.get("preload") and "nasdsl_example_train" not in sys.modules:
        preload()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            data = json.dumps(run_case(request)).encode()
        except BaseException as e:
            data = json.dumps({"died": repr(e)}).encode()
        view = memoryview(data)
        while view:
            view = view[os.write(write_end, view):]
        os._exit(0)
    os.close(write_end)
    chunks, deadline, timed_out = [], time.monotonic() + request["timeout"], False
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([read_end], [], [], left)[0]:
            timed_out = True
            os.kill(pid, signal.SIGKILL)
            break
        chunk = os.read(read_end, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(read_end)
    status = os.waitpid(pid, 0)[1]
    reply = {"timed_out": timed_out, "status": status, "data": b"".join(chunks).decode(errors="replace")}
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()
"""
)


@dataclass(frozen=True)
class Result:
    argv: list[str]
    rc: int
    stdout: str
    stderr: str


class _Server:
    """The running :data:`SERVER` process of this test process (started on first use)."""

    process: subprocess.Popen | None = None

    @classmethod
    def ask(cls, request: dict) -> dict:
        if cls.process is None or cls.process.poll() is not None:
            train = Path(__file__).resolve().parent.parent / "examples" / "train.py"
            cls.process = subprocess.Popen(
                [sys.executable, "-c", f"TRAIN = {str(train)!r}\n" + SERVER],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        cls.process.stdin.write(json.dumps(request) + "\n")
        cls.process.stdin.flush()
        line = cls.process.stdout.readline()
        assert line, f"the case server died (exit {cls.process.wait()})"
        return json.loads(line)


@pytest.fixture(scope="module", autouse=True)
def _stop_the_server():
    yield
    if _Server.process is not None:
        _Server.process.stdin.close()
        _Server.process.wait(timeout=30)
        _Server.process = None


def run_cli(
    cwd: Path, argvs: list[list[str]], timeout: float = TIMEOUT, program: str = "nasdsl", preload: bool = False
) -> list[Result]:
    """Run each argv through ``nasdsl.cli.main`` (or, with ``program="train"``, the training
    script's ``main``) in one child process with ``cwd`` as its folder; ``preload``: the server
    imports torch, torchvision, onnx and the training script first (once), so that the child
    does not spend its time importing them.

    The child gets no standard input, a memory cap and ``timeout`` seconds for everything: a
    hang fails the calling test with the commands that hung.
    """
    request = {"cwd": str(cwd), "argvs": argvs, "memory": MEMORY, "timeout": timeout, "program": program}
    request["preload"] = preload or program == "train"
    reply = _Server.ask(request)
    if reply["timed_out"]:
        pytest.fail(f"no answer within {timeout:g} s (a hang or runaway work): {argvs}")
    assert reply["data"], f"the child died (status {reply['status']})"
    done = json.loads(reply["data"])
    assert "died" not in done, f"the child died: {done.get('died')}"
    assert not done["stray"].strip(), f"output outside the CLI:\n{done['stray']}"
    return [Result(**r) for r in done["results"]]


def snapshot(folder: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every entry under ``folder``: its mode and, for files, its bytes."""
    out = {}
    for path in sorted(folder.rglob("*")):
        info = path.lstat()
        data = path.read_bytes() if stat.S_ISREG(info.st_mode) else None
        out[str(path.relative_to(folder))] = (info.st_mode, data)
    return out


# What a diagnostic must not send to a terminal raw: C0/C1 controls but tab and newline; bidi overrides.
RAW_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
LOCATED = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<column>\d+): error: (?P<message>.+)$")


def assert_refused(
    cwd: Path,
    spec: str | Path,
    expect: tuple[str, ...],
    args: tuple[str, ...] = (),
    timeout: float = TIMEOUT,
    *,
    pytorch_only: bool = False,
    heavy: bool = False,
) -> list[Result]:
    """Run ``spec`` through check and both compilers in ``cwd``; all must refuse it, cleanly.

    With ``pytorch_only`` the spec is fine in itself and only the PyTorch backend must refuse it
    (a name that clashes with the generated Python); ``check`` may accept it. A ``heavy`` spec,
    seconds of work before it is refused, runs through ``check`` and one compilation only.
    """
    (cwd / "KEEP.py").write_bytes(KEEP)
    before = snapshot(cwd)
    spec = str(spec)
    argvs = [
        ["check", spec, *args],
        ["compile", "--to", "pytorch", "-o", "OUT.py", spec, *args],
        ["compile", "--to", "pytorch", "-o", "KEEP.py", spec, *args],
    ]
    if heavy:
        del argvs[1]
    elif not pytorch_only:
        argvs.append(["compile", "--to", "onnx", "-o", "OUT.onnx", spec, *args])
    results = run_cli(cwd, argvs, timeout)
    if pytorch_only:
        assert results[0].rc in (0, 2) and "Traceback" not in results[0].stderr, results[0]
    for r in results[1:] if pytorch_only else results:
        what = f"`nasdsl {' '.join(r.argv)}`"
        assert r.rc == 2, f"{what} exited {r.rc}, expected 2\nstdout: {r.stdout}\nstderr: {r.stderr}"
        assert r.stdout == "", f"{what} printed on stdout: {r.stdout}"
        lines = r.stderr.splitlines()
        assert 1 <= len(lines) <= 4, f"{what}: expected a short diagnostic, got {len(lines)} lines:\n{r.stderr}"
        assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr
        assert not RAW_CONTROL.search(r.stderr), f"{what}: raw control characters in the diagnostic: {r.stderr!r}"
        assert LOCATED.match(lines[0]), f"{what}: expected FILE:LINE:COL: error: ..., got {lines[0]!r}"
        assert all(len(line) <= 400 for line in lines), f"{what}: a diagnostic line is too long to read:\n{r.stderr}"
        for piece in expect:
            assert piece in r.stderr, f"{what}: expected {piece!r} in the diagnostic, got:\n{r.stderr}"
    if not pytorch_only:
        assert results[0].stderr == results[1].stderr, "check and compile disagree"
    assert snapshot(cwd) == before, "the folder changed: an output or a temporary file was left"
    assert not (cwd / CANARY).exists()
    return results


# --------------------------------------------------------------------------- the corpus

LIMIT_HINT = "raise it with"
NOT_PLAIN_DATA = "is not allowed: specs hold plain data only"
NAME_FORM = "letters, digits and '_'"


@dataclass(frozen=True)
class Case:
    file: str  # in tests/hostile/
    expect: tuple[str, ...]  # each must appear in the diagnostic, verbatim
    args: tuple[str, ...] = ()
    timeout: float = TIMEOUT
    pytorch_only: bool = False  # see assert_refused
    heavy: bool = False


def case(
    file: str,
    *expect: str,
    args: tuple[str, ...] = (),
    timeout: float = TIMEOUT,
    pytorch_only: bool = False,
    heavy: bool = False,
    marks=(),
):
    return pytest.param(Case(file, expect, args, timeout, pytorch_only, heavy), id=file, marks=marks)


def set_case(name: str, value: str, *expect: str):
    """A ``--set`` on the valid base spec."""
    return pytest.param(Case("valid_base.yaml", expect, ("--set", value)), id=f"--set-{name}")


CORPUS = [
    # code execution through YAML tags
    case("python_object_apply.yaml", "'!!python/object/apply:os.system'", NOT_PLAIN_DATA),
    case("python_object_apply_root.yaml", "'!!python/object/apply:os.system'", NOT_PLAIN_DATA),
    case("python_name.yaml", "'!!python/name:os.system'", NOT_PLAIN_DATA),
    case("python_object_new.yaml", "'!!python/object/new:subprocess.Popen'", NOT_PLAIN_DATA),
    case("python_module.yaml", "'!!python/module:os'", NOT_PLAIN_DATA),
    case("python_tag_in_key.yaml", "'!!python/object/apply:os.system'", NOT_PLAIN_DATA),
    # exhausting memory or time while loading
    case("billion_laughs.yaml", "200000 nodes", "billion-laughs", f"{LIMIT_HINT} --max-yaml-nodes"),
    case("deep_flow_nesting.yaml", "nesting deeper than 64 levels", f"{LIMIT_HINT} --max-depth"),
    case("deep_block_nesting.yaml", "nesting deeper than 64 levels", f"{LIMIT_HINT} --max-depth"),
    case("deep_alias_nesting.yaml", "nesting deeper than 64 levels", "'*a'", f"{LIMIT_HINT} --max-depth"),
    case("recursive_alias.yaml", "'*m'", "recursive"),
    case("long_scalar.yaml", "20000 characters", "limit of 10000", f"{LIMIT_HINT} --max-scalar-length"),
    # numbers that are not what they should be
    case(
        "huge_integer.yaml",
        "model.conv.out",
        "expected an integer > 0 and <= 1048576",
    ),
    case("huge_integer_digits.yaml", "5000 digits"),
    case("nan_channels.yaml", "model.conv.out", "expected an integer", "nan"),
    case("inf_kernel.yaml", "model.conv.kernel", "expected an integer", "inf"),
    case("negative_inf_stride.yaml", "model.pool.stride", "expected an integer", "-inf"),
    case("float_channels.yaml", "model.conv.out", "expected an integer", "8.5"),
    case("bool_channels.yaml", "model.conv.out", "expected an integer", "true"),
    case("nan_input_shape.yaml", "input.shape[1]", "expected an integer", "nan"),
    case("huge_input_shape.yaml", "input.shape[1]", "expected an integer > 0 and <= 65536"),
    case("nan_dropout.yaml", "model.drop.p", "nan"),
    # not a spec at all
    case("empty.yaml", "empty"),
    case("only_comments.yaml", "empty"),
    case("top_level_list.yaml", "expected a mapping at the top level"),
    case("two_documents.yaml", "second YAML document"),
    case("duplicate_keys.yaml", "duplicate key 'model'"),
    case("merge_key.yaml", "merge keys ('<<') are not supported"),
    case("not_utf8.yaml", "not valid UTF-8", "0xe9"),
    case("utf16.yaml", "UTF-16"),
    case("binary_garbage.bin", "NUL byte", "binary"),
    case("control_character.yaml", "U+001B"),
    case(
        "terminal_escape.yaml",
        "model.a.op",
        "unknown op",
    ),
    case("tab_indent.yaml", "tab"),
    case("unterminated.yaml", "flow mapping"),
    # injection in every field that carries a name (and a few that carry text)
    case("inject_spec_name.yaml", "name:", NAME_FORM),
    case("inject_model_entry.yaml", "model.x", NAME_FORM),
    case("inject_template_name.yaml", "templates.x", NAME_FORM),
    case("inject_template_param.yaml", "templates.Block.params[0]", NAME_FORM),
    case("inject_template_param_default.yaml", "templates.Block.params[0]", NAME_FORM),
    case("inject_branch_name.yaml", "model.cat", NAME_FORM),
    case("inject_output_name.yaml", "outputs.x", NAME_FORM),
    case("inject_output_head_name.yaml", "outputs.x", NAME_FORM),
    case("inject_variable_name.yaml", "variables.x", NAME_FORM),
    case("inject_input_name.yaml", "input.name", NAME_FORM),
    case("inject_use.yaml", "model.a.use", NAME_FORM),
    case("inject_bare_block.yaml", "model.a"),
    case("inject_ref.yaml", "model.b.ref"),
    case("inject_from.yaml", "outputs.main.from", NAME_FORM),
    case(
        "long_from_name.yaml",
        "outputs.main.from",
    ),
    case("inject_init_scheme.yaml", "init.conv2d.weight", "unknown init scheme"),
    case("inject_init_scheme_mapping.yaml", "init.conv2d.weight", "unknown init scheme"),
    case("inject_init_op.yaml", "init.x", "unknown op"),
    case("inject_op.yaml", "model.a.op", "unknown op"),
    case("inject_attribute_key.yaml", "model.a", "unknown key"),
    case("inject_argument_name.yaml", "model.a.args"),
    case("inject_expression.yaml", "model.conv.out"),
    case("inject_expression_attribute.yaml", "model.conv.out", "attribute access is not supported"),
    case("inject_string_literal.yaml", "model.act.approximate"),
    case("inject_phase.yaml", "model.a.phase", "expected one of both, train, eval"),
    case("inject_when.yaml", "model.a.when"),
    case("inject_extends.yaml", "extends", "no such file"),
    case("inject_language_version.yaml", "nasdsl:", "language version"),
    # layer names that would hide what nn.Module needs (they are the state_dict keys: refused, not renamed)
    case("shadow_entry_forward.yaml", "model.forward", "'forward'", pytorch_only=True),
    case("shadow_entry_train.yaml", "model.train", "'train'", pytorch_only=True),
    # templates that never end or end too big
    case("template_self_recursive.yaml", "templates.Loop.body.again", "Loop -> Loop"),
    case("template_mutual_recursion.yaml", "Ping -> Pong -> Ping"),
    case("template_nesting_too_deep.yaml", "nested deeper than 64 levels"),
    # reaching the 100,000-node limit is seconds of work (reported): heavy, with a longer timeout
    # refused while expanding, at the limit, whatever the limit: a lower one keeps the case quick
    case(
        "template_fanout.yaml",
        "more than 20000 nodes",
        f"{LIMIT_HINT} --max-nodes",
        args=("--max-nodes", "20000"),
        timeout=60,
        heavy=True,
    ),
    case("too_many_parameters.yaml", "1,099,715,051,520 parameters", "10,000,000,000", f"{LIMIT_HINT} --max-params"),
    # extends
    case("extends_self.yaml", "extends cycle", "extends_self.yaml -> "),
    case("extends_cycle_a.yaml", "extends cycle", "extends_cycle_a.yaml -> ", "extends_cycle_b.yaml -> "),
    case("extends_directory.yaml", "is a directory"),
    case("extends_dev_zero.yaml", "/dev/zero", "not a regular file"),
    case("extends_dev_stdin.yaml", "/dev/stdin", "not a regular file"),
    case("extends_nul.yaml", "extends", "NUL"),
    # expressions
    case("expr_power_tower.yaml", "model.conv.out", "10 ** 10000000000", "out of range"),
    case("expr_power_tower_9.yaml", "model.conv.out", "out of range"),
    case("expr_float_overflow.yaml", "model.conv.out", "out of range"),
    case("expr_too_long.yaml", "model.conv.out", "longer than 1000 characters"),
    case("expr_deep_parentheses.yaml", "model.conv.out", "nested too deeply (more than 50 levels)"),
    case("expr_deep_unary.yaml", "model.conv.out", "nested too deeply (more than 50 levels)"),
    case("expr_deep_calls.yaml", "model.conv.out", "nested too deeply (more than 50 levels)"),
    case("expr_division_by_zero.yaml", "model.conv.out", "division by zero"),
    # --set: the paths and values of the command line are checked like the file
    set_case("value-injection", f"num_classes={PAYLOAD}", "variables.num_classes"),
    set_case("path-injection", f"{PAYLOAD}=1", "no variable or model entry"),
    set_case("model-key-injection", f"model.{PAYLOAD}=relu", "model.x"),
    set_case("entry-key-injection", f"conv1.{PAYLOAD}=1", "conv1.x"),
    set_case("parameter-injection", f"block.{PAYLOAD}=1", "parameter", "Block"),
    set_case("argument-injection", f"block.c={PAYLOAD}", "model.block.args.c"),
    set_case("name-injection", f"name={PAYLOAD}", "name", NAME_FORM),
    set_case("input-name-injection", f"input.name={PAYLOAD}", "input.name", NAME_FORM),
    set_case("op-injection", f"conv1.op={PAYLOAD}", "model.conv1.op", "unknown op"),
    set_case("use-injection", f"block.use={PAYLOAD}", "model.block.use", NAME_FORM),
    set_case("template-injection", f"templates.{PAYLOAD}=relu", "templates.x"),
    set_case("python-tag", "conv1=!!python/object/apply:os.system [touch PWNED]", NOT_PLAIN_DATA),
    set_case("recursive-alias", "num_classes=&a [*a]", "recursive"),
    set_case("deep-nesting", "num_classes=" + "[" * 100, f"{LIMIT_HINT} --max-depth"),
    set_case("huge-integer", "num_classes=" + "7" * 5000, "5000 digits"),
    set_case("power-tower", "num_classes=10**10**10", "out of range"),
    set_case("no-value", "num_classes", "PATH=VALUE"),
]

# Valid specs whose compilation must stay in proportion to their size (both once took minutes:
# the PyTorch backend generated a template's class again for every use, and rebuilt the whole
# graph once per variable).
PROPORTIONAL = ["many_template_uses.yaml", "many_variables.yaml"]

# Hostile but valid: they compile, and the output must be inert.
ACCEPTED = ["doc_breakout.yaml"]
#: names that would shadow what the generated file uses, and the identifier each becomes there
RENAMED = {
    "shadow_model_name_torch.yaml": ("class torch_1(nn.Module):", "torch_1", {"torch_1"}),
    "shadow_template_param_nn.yaml": (
        "def __init__(self, in_channels: int, nn_1: int) -> None:",
        "Net",
        {"Net", "Block"},
    ),
    "shadow_output_self.yaml": ("self_1 = x", "Net", {"Net", "NetOutputs"}),
    "shadow_template_ordereddict.yaml": ("class OrderedDict_1(nn.Module):", "Net", {"Net", "OrderedDict_1"}),
}
COMPANIONS = ["extends_cycle_b.yaml"]  # reached through another case


@pytest.mark.parametrize("c", CORPUS)
def test_hostile_spec_is_refused(c: Case, tmp_path: Path) -> None:
    assert_refused(tmp_path, HOSTILE / c.file, c.expect, c.args, c.timeout, pytorch_only=c.pytorch_only, heavy=c.heavy)


@pytest.mark.parametrize("name", PROPORTIONAL)
def test_large_valid_spec_compiles_in_proportion(name: str, tmp_path: Path) -> None:
    (result,) = run_cli(tmp_path, [["compile", "--to", "pytorch", "-o", "OUT.py", str(HOSTILE / name)]])
    assert result.rc == 0, result.stderr
    assert generated_problems((tmp_path / "OUT.py").read_text()) == []


def test_the_corpus_is_all_used_and_listed() -> None:
    files = {p.name for p in HOSTILE.iterdir()} - {"README.md"}
    used = {p.values[0].file for p in CORPUS} | set(PROPORTIONAL) | set(ACCEPTED) | set(RENAMED)
    assert files == used | set(COMPANIONS)
    readme = (HOSTILE / "README.md").read_text()
    listed = set(re.findall(r"^- `([^`]+)`", readme, re.MULTILINE))
    assert listed == files, f"README.md lists {sorted(listed - files)} but not {sorted(files - listed)}"


def test_the_real_entry_points_refuse_code_execution(tmp_path: Path) -> None:
    """The same as the corpus, through `python -m nasdsl` and the installed `nasdsl` script."""
    commands = [[sys.executable, "-m", "nasdsl"]]
    script = Path(sys.executable).with_name("nasdsl")
    if script.exists():
        commands.append([str(script)])
    for command in commands:
        for name in ("python_object_apply.yaml", "python_object_new.yaml", "inject_expression.yaml"):
            done = subprocess.run(
                [*command, "compile", "--to", "pytorch", "-o", "OUT.py", str(HOSTILE / name)],
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=TIMEOUT,
                stdin=subprocess.DEVNULL,
            )
            assert done.returncode == 2 and done.stdout == "", done
            assert LOCATED.match(done.stderr.splitlines()[0]), done.stderr
            assert sorted(os.listdir(tmp_path)) == [], "nothing may be written, the canary least of all"


# --------------------------------------------------------------------------- generated cases


def test_a_directory_instead_of_a_file(tmp_path: Path) -> None:
    (tmp_path / "spec.yaml").mkdir()
    assert_refused(tmp_path, "spec.yaml", ("spec.yaml:1:1:", "is a directory"))


def test_a_missing_file(tmp_path: Path) -> None:
    assert_refused(tmp_path, "nowhere.yaml", ("nowhere.yaml:1:1:", "no such file"))


def test_a_file_over_one_mebibyte(tmp_path: Path) -> None:
    (tmp_path / "big.yaml").write_text("name: Net\n# " + "x" * (1 << 20) + "\nmodel: {relu: relu}\n")
    assert_refused(tmp_path, "big.yaml", ("above the limit of 1048576", f"{LIMIT_HINT} --max-bytes"))


def test_a_list_of_100000_layers(tmp_path: Path) -> None:
    layers = ", ".join(["relu"] * 100_000)
    (tmp_path / "long.yaml").write_text(f"name: Net\ninput: {{shape: [3, 8, 8]}}\nmodel:\n  s: [{layers}]\n")
    # seconds of work to reach the limit (reported): heavy, with a longer timeout
    assert_refused(
        tmp_path, "long.yaml", ("more than 100000 nodes", f"{LIMIT_HINT} --max-nodes"), timeout=60, heavy=True
    )


def test_too_many_yaml_nodes_without_aliases(tmp_path: Path) -> None:
    zeros = ",".join(["0"] * 200_001)
    (tmp_path / "wide.yaml").write_text(f"name: Net\nmodel: {{relu: relu}}\nvariables: {{v: [{zeros}]}}\n")
    assert_refused(tmp_path, "wide.yaml", ("200000 YAML nodes", f"{LIMIT_HINT} --max-yaml-nodes"))


def test_extends_a_huge_file(tmp_path: Path) -> None:
    (tmp_path / "huge.yaml").write_text("name: Net\n# " + "x" * (2 << 20) + "\n")
    (tmp_path / "spec.yaml").write_text("extends: huge.yaml\nname: Net\nmodel: {relu: relu}\n")
    assert_refused(tmp_path, "spec.yaml", ("huge.yaml:1:1:", "above the limit of 1048576", "--max-bytes"))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_named_pipe_does_not_block(tmp_path: Path) -> None:
    """Opening a FIFO blocks until someone writes: as a spec or a base, it must be refused at once."""
    os.mkfifo(tmp_path / "pipe.yaml")
    (tmp_path / "spec.yaml").write_text("extends: pipe.yaml\nname: Net\nmodel: {relu: relu}\n")
    assert_refused(tmp_path, "spec.yaml", ("pipe.yaml:1:1:", "not a regular file"))
    assert_refused(tmp_path, "pipe.yaml", ("pipe.yaml:1:1:", "not a regular file"))


def test_extends_deeper_than_16_levels(tmp_path: Path) -> None:
    for i in range(20):
        (tmp_path / f"s{i}.yaml").write_text(f"extends: s{i + 1}.yaml\nname: Net\n")
    (tmp_path / "s20.yaml").write_text("name: Net\ninput: {shape: [3, 8, 8]}\nmodel: {relu: relu}\n")
    assert_refused(tmp_path, "s0.yaml", ("more than 16 levels of extends",))


def test_raising_a_limit_lets_the_spec_through(tmp_path: Path) -> None:
    """The flags that the messages name really raise the limits."""
    argvs = [
        ["check", str(HOSTILE / "too_many_parameters.yaml"), "--max-params", str(10**13)],
        ["check", str(HOSTILE / "long_scalar.yaml"), "--max-scalar-length", "20000"],
    ]
    for r in run_cli(tmp_path, argvs):
        assert r.rc == 0 and ": ok: " in r.stdout, r


# --------------------------------------------------------------------------- generated code stays inert

ALLOWED_IMPORTS = {("math", None), ("torch", None), ("torch.nn.functional", "F")}
ALLOWED_FROM = {("collections", "OrderedDict"), ("typing", "NamedTuple"), ("torch", "nn")}
FORBIDDEN_NAMES = {
    "eval", "exec", "compile", "open", "__import__", "getattr", "setattr", "delattr", "globals", "locals",
    "vars", "breakpoint", "input", "exit", "quit", "os", "sys", "subprocess", "importlib", "builtins", "system",
}  # fmt: skip


def _module_attributes() -> frozenset[str]:
    import torch

    return frozenset(dir(torch.nn.Module()))


def _stores(body: list[ast.stmt]) -> set[str]:
    """Names a function body assigns (not counting nested functions and classes)."""
    names = set()
    stack: list[ast.AST] = list(body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            continue
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        stack.extend(ast.iter_child_nodes(node))
    return names


def _loads(body: list[ast.stmt]) -> set[str]:
    return {n.id for s in body for n in ast.walk(s) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def generated_problems(source: str, classes: set[str] | None = None) -> list[str]:
    """What is wrong with a generated PyTorch file, judged from its syntax tree alone ([] if nothing).

    The module holds a docstring, the usual imports, ``__all__``, the ``_xavier_caffe_`` helper
    and classes (exactly ``classes`` when given); nothing calls or names anything dangerous; no
    module-level name is defined twice or shadows a builtin; no function assigns ``self`` or
    gives a local the name of a global or builtin that it uses; no ``__init__`` sets an attribute
    twice, or one that ``nn.Module`` or the class itself already has; no NamedTuple field
    starts with ``_``.
    """
    problems: list[str] = []
    tree = ast.parse(source)
    body = list(tree.body)
    if not (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)):
        problems.append("the module does not start with its docstring")
    else:
        body = body[1:]
    globals_: list[str] = []
    found_classes = set()
    for stmt in body:
        if isinstance(stmt, ast.Import):
            for a in stmt.names:
                if (a.name, a.asname) not in ALLOWED_IMPORTS:
                    problems.append(f"line {stmt.lineno}: import {a.name}")
                globals_.append(a.asname or a.name.split(".")[0])
        elif isinstance(stmt, ast.ImportFrom):
            for a in stmt.names:
                if (stmt.module, a.name) not in ALLOWED_FROM or a.asname:
                    problems.append(f"line {stmt.lineno}: from {stmt.module} import {a.name}")
                globals_.append(a.asname or a.name)
        elif isinstance(stmt, ast.Assign) and [ast.unparse(t) for t in stmt.targets] == ["__all__"]:
            globals_.append("__all__")
        elif isinstance(stmt, ast.FunctionDef) and stmt.name == "_xavier_caffe_":
            globals_.append(stmt.name)
        elif isinstance(stmt, ast.ClassDef):
            globals_.append(stmt.name)
            found_classes.add(stmt.name)
        else:
            problems.append(f"line {stmt.lineno}: unexpected statement {ast.unparse(stmt)[:60]!r}")
    if classes is not None and found_classes != classes:
        problems.append(f"classes {sorted(found_classes)}, expected {sorted(classes)}")
    for name in sorted({g for g in globals_ if globals_.count(g) > 1}):
        problems.append(f"'{name}' is defined twice at module level")
    for name in globals_:
        if hasattr(builtins, name):
            problems.append(f"module-level '{name}' shadows a builtin")
    fields = {  # a NamedTuple's field declarations (an output named `input` is `outputs.input`)
        id(n.target)
        for cls in ast.walk(tree)
        if isinstance(cls, ast.ClassDef) and "NamedTuple" in {ast.unparse(b) for b in cls.bases}
        for n in cls.body
        if isinstance(n, ast.AnnAssign)
    }
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)) and node not in tree.body:
            problems.append(f"line {node.lineno}: an import inside a function or class")
        if isinstance(node, ast.Name) and node.id in FORBIDDEN_NAMES and id(node) not in fields:
            problems.append(f"line {node.lineno}: uses '{node.id}'")
        own = isinstance(node, ast.Attribute) and ast.unparse(node.value) in ("self", "outputs")
        if isinstance(node, ast.Attribute) and (
            node.attr in FORBIDDEN_NAMES and not own or node.attr.startswith("__") and node.attr != "__init__"
        ):  # a layer or output named `input` is an attribute of the model, not the builtin
            problems.append(f"line {node.lineno}: uses attribute '{node.attr}'")
    shadowable = set(globals_) | set(dir(builtins))
    for fn in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)):
        params = [a.arg for a in fn.args.args + fn.args.kwonlyargs]
        stores = _stores(fn.body)
        if "self" in stores or "self" in params[1:]:
            problems.append(f"line {fn.lineno}: {fn.name} rebinds 'self'")
        for name in sorted((set(params) | stores) & _loads(fn.body) & shadowable):
            problems.append(f"line {fn.lineno}: a local '{name}' of {fn.name} hides the global it uses")
    module_attributes = _module_attributes()
    for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
        methods = {n.name for n in cls.body if isinstance(n, ast.FunctionDef)}
        bases = {ast.unparse(b) for b in cls.bases}
        if "NamedTuple" in bases:
            fields = [n.target.id for n in cls.body if isinstance(n, ast.AnnAssign)]
            problems += [f"{cls.name}: field '{f}' starts with '_'" for f in fields if f.startswith("_")]
        init = next((n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
        if init is None:
            continue
        attrs = []
        for node in ast.walk(init):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.ctx, ast.Store)
                and ast.unparse(node.value) == "self"
            ):
                attrs.append(node.attr)
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "self.register_buffer" and node.args:
                attrs.append(ast.literal_eval(node.args[0]))
        for a in sorted(set(attrs)):
            if attrs.count(a) > 1:
                problems.append(f"{cls.name}.__init__ sets self.{a} twice")
            if a in module_attributes or a in methods:
                problems.append(f"{cls.name}.__init__ sets self.{a}, which hides nn.Module's or its own '{a}'")
    return problems


def text_outside_docstrings(source: str, marker: str) -> list[str]:
    """Tokens holding ``marker`` that are neither docstrings nor comments."""
    docstrings = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(first.lineno)
    bad = []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if marker in tok.string and tok.type != tokenize.COMMENT:
            if not (tok.type == tokenize.STRING and tok.start[0] in docstrings):
                bad.append(f"line {tok.start[0]}: {tok.string[:80]!r}")
    return bad


def test_generated_problems_finds_what_it_looks_for() -> None:
    """The checker itself, on hand-written bad files (so that a clean result means something)."""
    head = '"""Doc."""\n\nimport torch\nfrom torch import nn\n\n'
    ok = head + (
        "class Net(nn.Module):\n"
        "    def __init__(self, width: int = 4) -> None:\n"
        "        super().__init__()\n"
        "        self.conv = nn.Conv2d(3, width, 3)\n\n"
        "    def forward(self, x: torch.Tensor) -> torch.Tensor:\n"
        "        return self.conv(x)\n"
    )
    assert generated_problems(ok, {"Net"}) == []
    bad = {
        "import os\n": "import os",
        "print(1)\n": "unexpected statement",
        "class torch(nn.Module):\n    pass\n": "'torch' is defined twice",
        "class int(nn.Module):\n    pass\n": "shadows a builtin",
        "class A(nn.Module):\n    def forward(self, x):\n        self = x\n        return self\n": "rebinds 'self'",
        "class A(nn.Module):\n    def __init__(self, nn):\n        self.c = nn.ReLU()\n": "hides the global",
        "class A(nn.Module):\n    def __init__(self):\n        self.train = 1\n": "hides nn.Module's",
        "class A(nn.Module):\n    def __init__(self):\n        self.a = 1\n        self.a = 2\n": "twice",
        "class A(nn.Module):\n    def f(self):\n        return x.__class__\n": "attribute '__class__'",
        "class A(nn.Module):\n    def f(self):\n        return eval('1')\n": "uses 'eval'",
    }
    for text, expected in bad.items():
        found = generated_problems(head + text)
        assert any(expected in p for p in found), (text, found)
    assert generated_problems(ok, {"Net", "Other"}) != []
    assert text_outside_docstrings('"""x PWNED"""\n# PWNED\na = "PWNED"\n', "PWNED") == ["line 3: '\"PWNED\"'"]


def _compile_accepted(tmp_path: Path, spec: str) -> tuple[str, list[Result]]:
    results = run_cli(
        tmp_path,
        [
            ["check", spec],
            ["compile", "--to", "pytorch", "-o", "OUT.py", spec],
            ["compile", "--to", "onnx", "-o", "OUT.onnx", spec],
        ],
        timeout=60,  # the ONNX export imports torch and onnx
    )
    for r in results:
        assert r.rc == 0, r
    assert not (tmp_path / CANARY).exists()
    return (tmp_path / "OUT.py").read_text(), results


def _run_generated(source: str, name: str) -> None:
    import torch

    from nasdsl.backends.pytorch import load_source

    model = getattr(load_source(source), name)()
    x = torch.randn(2, 3, 17, 19)
    model.train()
    out = model(x)
    model.loss(out, torch.zeros(2, dtype=torch.long)).backward()
    model.eval()
    with torch.no_grad():
        model(x)
    model.reset_parameters()


@pytest.mark.parametrize("name", sorted(RENAMED))
def test_a_name_that_would_shadow_is_renamed_and_the_file_runs(name: str, tmp_path: Path) -> None:
    """A spec name that would shadow an import, a builtin, a class or ``self`` is renamed in the
    generated file (the layers keep their names, so the state_dict does not change)."""
    source, _ = _compile_accepted(tmp_path, str(HOSTILE / name))
    line, model_class, classes = RENAMED[name]
    assert line in source, source
    assert generated_problems(source, classes) == []
    import torch

    from nasdsl.backends.pytorch import load_source

    model = getattr(load_source(source), model_class)()
    x = torch.randn(2, 3, 17, 19)
    for training in (True, False):
        model.train(training)
        with torch.no_grad():
            out = model(x)
        first = out if isinstance(out, torch.Tensor) else out[0]
        assert first.shape[0] == 2 and torch.isfinite(first).all()


def test_an_output_named_like_a_builtin_is_a_field_of_the_outputs(tmp_path: Path) -> None:
    """Found by the long property run: outputs named ``input`` and ``max`` become NamedTuple fields
    (``outputs.input``), which read no builtin; the file runs and its loss reads them."""
    spec = tmp_path / "net.yaml"
    spec.write_text(
        "name: Net\ninput: {shape: [3, 17, 19]}\nmodel:\n  sum: relu\n  int: {ref: sum}\noutputs:\n"
        "  max: {from: int, head: [global_avg_pool, flatten, {op: linear, out: 4}]}\n"
        "  input: {from: sum, head: [global_avg_pool, flatten, {op: linear, out: 4}], loss_weight: 0.3}\n"
    )
    source, _ = _compile_accepted(tmp_path, str(spec))
    assert "    input: torch.Tensor" in source and "outputs.input" in source
    assert generated_problems(source, {"Net", "NetOutputs"}) == []
    _run_generated(source, "Net")


def test_doc_text_cannot_break_out_of_docstrings(tmp_path: Path) -> None:
    """``doc`` text with triple quotes, backslashes, newlines and code lands in docstrings only."""
    source, _ = _compile_accepted(tmp_path, str(HOSTILE / "doc_breakout.yaml"))
    assert generated_problems(source, {"Net", "Block"}) == []
    assert text_outside_docstrings(source, CANARY) == []
    assert CANARY in source  # the text is kept, made safe, not dropped
    _run_generated(source, "Net")
    assert not (tmp_path / CANARY).exists()


@pytest.mark.skipif(sys.platform == "win32", reason="such file names are POSIX only")
def test_a_hostile_file_name_stays_in_its_comment(tmp_path: Path) -> None:
    name = f'evil"""\n{PAYLOAD}\n\\.yaml'
    shutil.copy(HOSTILE / "valid_base.yaml", tmp_path / name)
    source, _ = _compile_accepted(tmp_path, name)
    assert generated_problems(source, {"Net", "Block"}) == []
    assert text_outside_docstrings(source, CANARY) == []
    assert source.startswith("# Generated by nasdsl")


# --------------------------------------------------------------------------- names that shadow

# A spec using every feature that puts a name into the generated file; each {field} is replaced in
# turn by a name the generated file (or nn.Module) already uses.
MATRIX_SPEC = """\
name: {model}
input: {{shape: [3, 17, 19], mean: [0.5, 0.5, 0.5]}}
variables:
  {var}: 0.25
  {switch}: true
init:
  conv2d: {{weight: xavier_caffe, bias: 0.1}}
templates:
  {tmpl}:
    doc: A block.
    params: [{param}, {{kernel: 3}}]
    body:
      {tentry}: {{op: conv2d, out: {param}, kernel: kernel, padding: 1}}
      act: relu
      both: {{use: Both}}
  Both:
    body:
      concat: {{{branch}: relu, other: {{op: max_pool, kernel: 3, stride: 1, padding: 1}}}}
  Pair:
    params: [c]
    body: {{add: [{{op: conv2d, out: c, kernel: 1}}, {{op: conv2d, out: c, kernel: 1}}]}}
model:
  {entry}: {{use: {tmpl}, args: [4]}}
  pair: {{use: Pair, args: [8]}}
  stack: {{first: relu, second: {{op: dropout, p: {var}}}}}
  pool: {{op: global_avg_pool}}
  flat: flatten
  fc: {{op: linear, out: 10}}
outputs:
  {out}: {{from: fc}}
  {aux}: {{from: pool, head: [flatten, {{op: linear, out: 10}}], loss_weight: 0.3, training_only: true, when: {switch}}}
"""
MATRIX_DEFAULTS = dict(
    model="Net",
    var="rate",
    tmpl="Block",
    param="c",
    tentry="conv",
    branch="left",
    entry="block",
    out="logits",
    aux="aux",
    switch="aux_on",
)
MODULE_LEVEL = [
    "torch",
    "nn",
    "F",
    "math",
    "OrderedDict",
    "NamedTuple",
    "Concat",
    "Add",
    "_xavier_caffe_",
    "super",
    "isinstance",
    "sum",
    "str",
    "enumerate",
    "int",
    "float",
    "bool",
    "tuple",
    "Pair",
    "Both",
]
ATTRIBUTES = [
    "forward",
    "training",
    "train",
    "eval",
    "cuda",
    "to",
    "float",
    "apply",
    "parameters",
    "modules",
    "state_dict",
    "zero_grad",
    "register_buffer",
    "extra_repr",
    "_modules",
    "_parameters",
    "_buffers",
]
MATRIX = {
    "model": [*MODULE_LEVEL, "Block"],
    "tmpl": [*(n for n in MODULE_LEVEL if n not in ("Pair", "Both")), "Net", "NetOutputs", "eval", "forward", "train"],
    "param": ["nn", "torch", "super", "OrderedDict", "Both", "self", "in_channels"],
    "var": ["nn", "torch", "super", "self", "x", "OrderedDict", "Block", "Pair", "eval", "train", "forward", "to"],
    # a switch is kept as self.<argument>: it must not hide nn.Module's methods (model.eval() called a bool)
    "switch": ["eval", "train", "forward", "to", "cuda", "training", "state_dict", "loss", "modules", "self", "x"],
    "tentry": ATTRIBUTES,
    "branch": ATTRIBUTES,
    "entry": [*ATTRIBUTES, "loss", "loss_weights", "reset_parameters", "input_mean", "aux_on"],
    "out": ["self", "NetOutputs", "_x", "_fields"],
    "aux": ["self", "x", "NetOutputs", "_x", "_fields", "training", "loss_weights"],
}


def _matrix_spec(**names: str) -> str:
    return MATRIX_SPEC.format(**{**MATRIX_DEFAULTS, **names})


def test_the_matrix_spec_itself_compiles_and_runs(tmp_path: Path) -> None:
    from nasdsl.backends.pytorch import generate_source

    path = tmp_path / "spec.yaml"
    path.write_text(_matrix_spec())
    source = generate_source(nasdsl.compile_spec(path))
    assert generated_problems(source) == []
    _run_generated(source, "Net")


def _matrix_params():
    for field, names in MATRIX.items():
        for name in names:
            yield pytest.param(field, name, id=f"{field}={name}")


@pytest.mark.parametrize(("field", "name"), list(_matrix_params()))
def test_a_shadowing_name_is_refused_or_harmless(field: str, name: str, tmp_path: Path) -> None:
    """Layer names that would hide an attribute are refused (they are state_dict keys); any
    other name is renamed where it would shadow something, and the file runs."""
    from nasdsl.backends.pytorch import generate

    path = tmp_path / "spec.yaml"
    path.write_text(_matrix_spec(**{field: name}))
    try:
        generated = generate(nasdsl.compile_spec(path))
    except NasdslError as e:
        # layer names (state_dict keys), names the language reserves, and fields a NamedTuple refuses
        allowed = field in ("tentry", "branch", "entry", "aux") or name in ("self", "in_channels") or name[0] == "_"
        assert allowed, f"{field}={name} refused: {e}"
        assert name in str(e) and len(str(e).splitlines()) <= 2, str(e)
        return
    assert generated_problems(generated.source) == []
    _run_generated(generated.source, generated.model_class)


# --------------------------------------------------------------------------- internal errors


@pytest.fixture
def spec_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copy(HOSTILE / "valid_base.yaml", tmp_path / "spec.yaml")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _explode(*args: object, **kwargs: object) -> None:
    raise RuntimeError("a bug")


@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
def test_an_internal_error_is_one_line_and_exit_1(spec_in: Path, monkeypatch, capsys, debug: bool) -> None:
    from nasdsl.backends import pytorch

    monkeypatch.setattr(pytorch, "generate_source", _explode)
    argv = [*(["--debug"] if debug else []), "compile", "--to", "pytorch", "-o", "OUT.py", "spec.yaml"]
    assert cli.main(argv) == 1
    out, err = capsys.readouterr()
    assert out == ""
    last = err.splitlines()[-1]
    assert "internal error" in last and "RuntimeError" in last and "bug" in last and "--debug" in last
    if debug:
        assert "Traceback (most recent call last)" in err and 'raise RuntimeError("a bug")' in err
    else:
        assert err.count("\n") == 1 and "Traceback" not in err
    assert sorted(os.listdir(spec_in)) == ["spec.yaml"]


def test_an_internal_error_in_the_compiler_core(spec_in: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(cli, "compile_spec", _explode)
    assert cli.main(["check", "spec.yaml"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "internal error: RuntimeError" in err


# --------------------------------------------------------------------------- atomic writes


def _compile_to(out: str) -> list[str]:
    return ["compile", "--to", "pytorch", "-o", out, "spec.yaml"]


@pytest.mark.parametrize(
    "failure", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()], ids=["disk-full", "interrupted"]
)
def test_a_failed_write_leaves_the_old_file_and_no_temporary(spec_in: Path, monkeypatch, capsys, failure) -> None:
    (spec_in / "OUT.py").write_bytes(KEEP)

    def fail(fd: int) -> None:
        raise failure

    monkeypatch.setattr(os, "fsync", fail)
    rc = cli.main(_compile_to("OUT.py"))
    assert rc != 0
    assert (spec_in / "OUT.py").read_bytes() == KEEP
    assert sorted(os.listdir(spec_in)) == ["OUT.py", "spec.yaml"]
    assert len(capsys.readouterr().err.splitlines()) == 1


def test_an_unwritable_output_is_an_error_not_a_bug(spec_in: Path, monkeypatch, capsys) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr("tempfile.mkstemp", fail)
    assert cli.main(_compile_to("OUT.py")) == 2
    err = capsys.readouterr().err
    assert "OUT.py" in err and "Permission denied" in err and "bug" not in err


def test_a_successful_write_replaces_the_file_whole(spec_in: Path, capsys) -> None:
    (spec_in / "OUT.py").write_bytes(KEEP)
    assert cli.main(_compile_to("OUT.py")) == 0
    assert (spec_in / "OUT.py").read_bytes() != KEEP
    assert sorted(os.listdir(spec_in)) == ["OUT.py", "spec.yaml"]


def test_the_output_gets_the_usual_permissions(spec_in: Path, capsys) -> None:
    umask = os.umask(0o022)
    try:
        assert cli.main(_compile_to("OUT.py")) == 0
    finally:
        os.umask(umask)
    assert stat.S_IMODE((spec_in / "OUT.py").stat().st_mode) == 0o644


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_an_output_that_is_not_a_regular_file_is_refused(spec_in: Path, capsys) -> None:
    """`-o /dev/null` run as root would replace the device with a regular file."""
    os.mkfifo(spec_in / "pipe")
    rc = cli.main(_compile_to("pipe"))
    assert stat.S_ISFIFO((spec_in / "pipe").lstat().st_mode), "the pipe was replaced"
    assert rc == 2


# --------------------------------------------------------------------------- round two: no internal errors

HUGE = str(10**400)


def _check_line(tmp_path: Path, text: str, *args: str) -> tuple[int, str]:
    (tmp_path / "spec.yaml").write_text(text)
    (result,) = run_cli(tmp_path, [["check", "spec.yaml", *args]])
    return result.rc, result.stderr


@pytest.mark.parametrize(
    ("where", "args", "message"),
    [
        ("eps", ("--set", f"b.eps={HUGE}"), "model.b.eps: expected a number > 0, got an integer of 401 digits"),
        ("dropout", ("--set", f"d.p={HUGE}"), "model.d.p: expected a number >= 0.0 and < 1.0, got an integer of 401"),
        ("mean", ("--set", f"input.mean=[{HUGE},1,1]"), "input.mean[0]: expected a number, got an integer of 401"),
        ("init", ("--set", f"init.conv2d.bias={HUGE}"), "init.conv2d.bias: expected a number from -1e+06 to 1e+06"),
        (
            "init-inf",
            ("--set", "init.conv2d.bias=.inf"),
            "init.conv2d.bias: expected a number from -1e+06 to 1e+06, got inf",
        ),
        ("set-digit", ("--set", "model.a.args.\u00b9=3"), "expected an index below 1, got '\u00b9'"),
        (
            "set-use",
            ("--set", "model.u.use=[1]", "--set", "u.out=3"),
            "has no key 'out' (its 'use' is not a template name)",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 12 else "",
)
def test_bad_values_are_located_errors_never_internal_ones(tmp_path: Path, where: str, args: tuple, message: str):
    """Integers beyond float range where floats go, --set paths with non-ASCII digits, --set below
    a `use:` that is not a template name: exit 2 with a located line (they were exit 1)."""
    spec = """\
name: Net
input: {shape: [3, 8, 8]}
init:
  conv2d: {bias: 0}
templates:
  Block:
    params: [out]
    body: {conv: {op: conv2d, out: out, kernel: 1}}
model:
  a: {use: Block, args: [4]}
  u: {use: Block, args: [4]}
  b: {op: batch_norm}
  d: {op: dropout, p: 0.1}
"""
    rc, err = _check_line(tmp_path, spec, *args)
    assert rc == 2 and message in err and "internal error" not in err, err


def test_a_default_computed_from_another_parameter_compiles_and_runs(tmp_path: Path) -> None:
    """A default the class cannot write (make_divisible of a float, a conditional) is passed
    explicitly at every use; the class takes it as a required argument (it failed in codegen)."""
    import torch

    from nasdsl.backends.pytorch import generate

    path = tmp_path / "spec.yaml"
    path.write_text(
        """\
name: Net
input: {shape: [3, 8, 8]}
templates:
  Block:
    params: [out, {hidden: "make_divisible(out * 1.5, 8)"}, {wide: "out * 2 if out > 4 else out"}]
    body:
      conv: {op: conv2d, out: hidden, kernel: 1}
      conv2: {op: conv2d, out: wide, kernel: 1}
model:
  a: {use: Block, args: [4]}
  b: {use: Block, args: [8]}
"""
    )
    net = nasdsl.compile_spec(path)
    code = generate(net)
    assert "def __init__(self, in_channels: int, out: int, hidden: int, wide: int) -> None:" in code.source
    assert "self.a = Block(3, 4, 8, 4)" in code.source and "self.b = Block(4, 8, 16, 16)" in code.source
    from nasdsl.backends.pytorch import load_source

    model = getattr(load_source(code.source), code.model_class)()
    assert model(torch.randn(1, 3, 8, 8)).shape == (1, 16, 8, 8)


def test_export_memory_is_estimated_before_anything_is_allocated(tmp_path: Path) -> None:
    """A model just under the parameter cap would need tens of GiB to export: refused at once."""
    text = """\
name: Big
input: {shape: [3, 8, 8]}
model:
  flat: flatten
  fc: {op: linear, out: 1000000}
  fc2: {op: linear, out: 9000}
"""
    (tmp_path / "spec.yaml").write_text(text)
    results = run_cli(
        tmp_path,
        [["compile", "spec.yaml", "-o", "OUT.onnx"], ["verify", "spec.yaml"], ["compile", "spec.yaml", "-o", "OUT.py"]],
        timeout=60,
    )
    for r in results[:2]:
        assert r.rc == 2, r
        assert "GiB of memory for the weights, above the limit of 8.0 GiB" in r.stderr, r.stderr
        assert "raise it with --max-memory" in r.stderr and LOCATED.match(r.stderr.splitlines()[0])
    assert results[2].rc == 0  # writing source allocates nothing
    assert not (tmp_path / "OUT.onnx").exists()


def test_long_names_are_cut_and_controls_escaped_in_diagnostics(tmp_path: Path) -> None:
    long_ref = ".".join(["a" * 60] * 150)  # 9,149 characters: each part is a valid name
    name = "spec\u202e\x1b[31m.yaml"
    (tmp_path / name).write_text(
        f"name: Net\ninput: {{shape: [3, 8, 8]}}\nmodel:\n  a: relu\n  r: {{ref: {long_ref}}}\n"
    )
    (result,) = run_cli(tmp_path, [["check", name]])
    assert result.rc == 2
    (line,) = result.stderr.splitlines()
    assert len(line) < 400 and "..." in line and not RAW_CONTROL.search(line), line
    assert "\\u202e" in line and "\\x1b" in line
