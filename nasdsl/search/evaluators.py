"""Evaluators: what a trial runs to measure a variant (``--evaluate``).

Two forms, both given the trial's own folder:

* a **command template**: ``"python examples/train.py {spec} --epochs 1 --metrics-json {out}"``.
  It is split into words as a POSIX shell would (``shlex``), then each placeholder is
  replaced inside its word, and the words are run as they are, without a shell, so a
  path with spaces stays one argument and nothing is interpreted. Placeholders:
  ``{spec}`` the variant's plain spec, ``{out}`` the metrics file the command writes
  (a JSON object), ``{workdir}`` the trial's folder, ``{weights}`` the warm-start
  weights (with ``--warm-start``), ``{trial}`` the trial's number, each as it is (a
  format or a conversion is refused); ``{{`` and ``}}`` are braces. Its standard output
  and error go to the trial's ``log.txt``; it runs in the folder the search was started
  from (where it exists, else the trial's), in a process group of its own, which is
  killed whole at the timeout. A non-zero exit fails the trial, with the end of its log;
  a metrics file an earlier search left in the folder is removed before it runs.
* a **Python callable** ``module:function`` (``module`` importable where the trial runs:
  installed, or found from the folder the search was started from, as ``python -m`` finds it),
  called as ``function(spec_path, workdir)`` and returning a dict of metrics; what it
  prints goes to ``log.txt``; ``sys.exit`` fails the trial. The Python API also takes the
  callable itself.

The metrics are a JSON object of numbers, each name once (others are kept in the record
but cannot be objectives; a NumPy or torch scalar is its number); ``metric:NAME`` reads
``NAME`` there.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import string
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from nasdsl.errors import NasdslError

#: the placeholders of a command template
PLACEHOLDERS = ("spec", "out", "workdir", "weights", "trial")
#: how much of a failed command's log its error quotes
TAIL = 2000
_CALLABLE = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


class EvaluatorError(NasdslError):
    """A malformed ``--evaluate`` (exit 2), or an evaluator that failed in a trial."""


@dataclass(frozen=True)
class Evaluator:
    """A command template (``argv``: the words, placeholders unreplaced) or a callable
    (``target``: ``module:function``, or the function itself)."""

    text: str
    argv: tuple[str, ...] = ()
    target: str | Callable | None = None

    @property
    def uses(self) -> frozenset[str]:
        """The placeholders the command uses."""
        return frozenset(name for word in self.argv for _, name, _, _ in string.Formatter().parse(word) if name)


def parse_evaluator(value: str | Callable) -> Evaluator:
    """``--evaluate``'s value: ``module:function`` (a dotted module path, a colon and a name,
    nothing else) is a callable, anything else a command template."""
    if callable(value):
        return Evaluator(getattr(value, "__qualname__", repr(value)), target=value)
    text = value.strip()
    if _CALLABLE.fullmatch(text):
        return Evaluator(text, target=text)
    try:
        argv = tuple(shlex.split(text))
    except ValueError as e:
        raise EvaluatorError(f"cannot split the command into words: {e}", path="--evaluate") from None
    if not argv:
        raise EvaluatorError("expected a command template or module:function, got nothing", path="--evaluate")
    for word in argv:
        try:
            fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(word) if name is not None]
        except ValueError as e:
            raise EvaluatorError(f"{word!r}: {e} (write {{{{ and }}}} for braces)", path="--evaluate") from None
        for name, spec, conv in fields:
            if name not in PLACEHOLDERS:
                raise EvaluatorError(
                    f"unknown placeholder {{{name}}} in {word!r}; the placeholders are "
                    + ", ".join(f"{{{p}}}" for p in PLACEHOLDERS),
                    path="--evaluate",
                )
            if spec or conv:  # '{trial:05d}' fails on the text of a number, '{out!r}' quotes a path
                raise EvaluatorError(
                    f"{word!r}: a placeholder is replaced as it is, without a format or a conversion; write {{{name}}}",
                    path="--evaluate",
                )
    return Evaluator(text, argv)


def check_evaluator(evaluator: Evaluator, cwd: str) -> None:
    """Refuse an evaluator that cannot run from ``cwd`` on this machine (raises
    :class:`EvaluatorError`): a callable whose module is not found, a command whose program is
    not found; a callable form that misses its module or function is named as such."""
    target = evaluator.target
    if callable(target):
        return
    if target is not None:
        module, _, name = target.partition(":")
        found = _find(module, cwd)
        if found is None:
            raise EvaluatorError(
                f"{target}: no module {module!r} here (installed, or from {cwd}, as python -m finds it)",
                path="--evaluate",
            )
        if _defines(found, name) is False:
            raise EvaluatorError(f"{target}: the module {module} defines no {name!r}", path="--evaluate")
        return
    program = evaluator.argv[0]
    if len(evaluator.argv) == 1 and re.fullmatch(r"[\w.]*:[\w.]*", program):
        raise EvaluatorError(
            f"expected module:function (a dotted module, a colon and a function's name) or a command, got {program!r}",
            path="--evaluate",
        )
    if "{" in program:
        return  # the program is a placeholder's value, known per trial
    path = os.path.join(cwd, program)
    found = os.path.isfile(path) if os.sep in program else shutil.which(program) is not None
    if not found:
        where = f"as a file from {cwd}" if os.sep in program else "on the PATH"
        raise EvaluatorError(f"the command's program {program!r} is not found {where}", path="--evaluate")
    if os.sep in program and not os.access(path, os.X_OK):
        raise EvaluatorError(
            f"the command's program {program!r} is not executable (chmod +x it, or name its interpreter: sh {program})",
            path="--evaluate",
        )


def _find(module: str, cwd: str):
    """The import spec of ``module`` found from ``cwd`` or the installed packages, or None (its parent
    packages are imported to look inside them, as the trial would)."""
    added = os.path.isdir(cwd) and os.path.abspath(cwd) not in map(os.path.abspath, sys.path)
    if added:
        sys.path.append(os.path.abspath(cwd))
    try:
        return importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    finally:
        if added:
            sys.path.remove(os.path.abspath(cwd))


_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
#: the builtins that can bind a module's names where its source does not show them
_DYNAMIC = frozenset({"globals", "vars", "locals", "setattr", "exec"})


def _dynamic(node: ast.AST) -> bool:
    """Whether ``node`` may bind module names the source does not show (a call of ``globals()``,
    ``setattr``, ``exec``..., ``sys.modules``, a module ``__getattr__``): the check then takes the
    function on trust."""
    if isinstance(node, ast.Call):
        return isinstance(node.func, ast.Name) and node.func.id in _DYNAMIC
    if isinstance(node, ast.Attribute):
        return node.attr == "modules" and isinstance(node.value, ast.Name) and node.value.id == "sys"
    return isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == "__getattr__"


def _defines(found, name: str) -> bool | None:
    """Whether the Python source of the module ``found`` binds ``name`` at its top level (a def, a
    class, an assignment, an import), read without running it; None where the source cannot tell:
    no source, ``from x import *``, a module ``__getattr__``, names made through ``globals()``,
    ``setattr``, ``exec`` or ``sys.modules`` (:func:`_dynamic`).
    A syntax error is the module's own, and refused here with its place."""
    origin = getattr(found, "origin", None)
    if not isinstance(origin, str) or not origin.endswith(".py"):
        return None
    try:
        with open(origin, "rb") as f:
            source = f.read()
        tree = ast.parse(source, origin)
    except SyntaxError as e:
        raise EvaluatorError(
            f"{origin}:{e.lineno}:{e.offset or 0}: the evaluator's module does not parse: {e.msg}", path="--evaluate"
        ) from None
    except (OSError, ValueError):
        return None
    if any(_dynamic(node) for node in ast.walk(tree)):
        return None
    bound: set[str] = set()
    for statement in tree.body:
        # a def's or a class's own body binds nothing in the module; an if, a try, a with, a for at the
        # top level bind names in their bodies too (walked whole: a name bound too many is no refusal)
        nodes = [statement] if isinstance(statement, _SCOPES) else ast.walk(statement)
        for node in nodes:
            if isinstance(node, _SCOPES):
                bound.add(node.name)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                if any(alias.name == "*" for alias in node.names):
                    return None
                bound |= {alias.asname or alias.name.partition(".")[0] for alias in node.names}
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                bound.add(node.id)
    bound |= {n for node in ast.walk(tree) if isinstance(node, ast.Global) for n in node.names}
    return name in bound


def run_evaluator(
    evaluator: Evaluator, *, spec: str, workdir: str, weights: str | None, trial: int, cwd: str, timeout: float | None
) -> dict:
    """Run ``evaluator`` for one trial and return its metrics (raises :class:`EvaluatorError`)."""
    log = os.path.join(workdir, "log.txt")
    if evaluator.target is not None:
        function = _function(evaluator.target, cwd)
        with open(log, "w", encoding="utf-8") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
            try:
                metrics = function(spec, workdir)
            except SystemExit as e:  # a training script's main() called as a function: its exit is the trial's
                raise EvaluatorError(f"{evaluator.text} called sys.exit({e.code!r}), returning no metrics") from None
        if not isinstance(metrics, Mapping):
            raise EvaluatorError(f"{evaluator.text} returned {type(metrics).__name__}, expected a dict of metrics")
        return _plain(dict(metrics), evaluator.text)
    out = os.path.join(workdir, "metrics.json")
    values = {"spec": spec, "out": out, "workdir": workdir, "weights": weights or "", "trial": str(trial)}
    argv = [word.format_map(values) for word in evaluator.argv]
    with contextlib.suppress(FileNotFoundError):
        os.unlink(out)  # a folder an earlier search left: its metrics are not this trial's
    with open(log, "wb") as f:
        returncode = _run(argv, cwd=cwd if os.path.isdir(cwd) else workdir, log=f, timeout=timeout)
    if returncode is None:
        raise EvaluatorError(f"the evaluator ran past --trial-timeout {timeout:g} s{_tail(log)}")
    if returncode < 0:  # a signal: the kernel's out-of-memory killer, a segmentation fault, a kill
        raise EvaluatorError(f"the evaluator was killed by {_signal_name(-returncode)}{_tail(log)}")
    if returncode != 0:
        raise EvaluatorError(f"the evaluator exited with status {returncode}{_tail(log)}")
    try:
        with open(out, encoding="utf-8") as f:
            metrics = json.load(f, object_pairs_hook=_once)
    except FileNotFoundError:
        raise EvaluatorError(f"the evaluator wrote no metrics file ({out}){_tail(log)}") from None
    except _Twice as e:
        raise EvaluatorError(f"{out}: expected each metric once: {e}") from None
    except (OSError, ValueError) as e:
        raise EvaluatorError(f"{out}: not a JSON file: {e}") from None
    if not isinstance(metrics, dict):
        raise EvaluatorError(f"{out}: expected a JSON object of metrics, got {type(metrics).__name__}")
    return _plain(metrics, out)


def _run(argv: list[str], *, cwd: str, log, timeout: float | None) -> int | None:
    """Run a command in a process group of its own; its exit status, or None when it ran past
    ``timeout``. At the timeout, or when this process is interrupted, the whole group is killed: the
    processes the command started (a script's python, a launcher's workers) end with it."""
    try:
        process = subprocess.Popen(
            argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    except FileNotFoundError:
        raise EvaluatorError(f"cannot run {argv[0]!r}: no such program") from None
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill(process)
        return None
    except BaseException:
        _kill(process)
        raise


def _signal_name(number: int) -> str:
    try:
        return f"{signal.Signals(number).name} (signal {number})"
    except ValueError:
        return f"signal {number}"


def _kill(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


class _Twice(ValueError):
    """A JSON object that gives a name twice."""


def _once(pairs: list[tuple[str, object]]) -> dict:
    """A JSON object whose names are each given once (``{"acc": 1, "acc": 2}`` is no metric)."""
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise _Twice(f"{key!r} is given twice")
        out[key] = value
    return out


def _function(target: str | Callable, cwd: str) -> Callable:
    """The callable ``module:function`` names, imported as ``python -m`` would from ``cwd``."""
    if callable(target):
        return target
    module, _, name = target.partition(":")
    if os.path.isdir(cwd) and os.path.abspath(cwd) not in map(os.path.abspath, sys.path):
        sys.path.append(os.path.abspath(cwd))
    try:
        found = getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as e:
        raise EvaluatorError(f"{target}: cannot import {e.name!r} where the trial runs") from None
    except AttributeError:
        raise EvaluatorError(f"{target}: the module {module} has no {name!r}") from None
    if not callable(found):
        raise EvaluatorError(f"{target}: is not callable")
    return found


def _plain(metrics: dict, source: str) -> dict:
    """The metrics with string keys and JSON values (what the study's record keeps; a float may be
    infinite or NaN, which the objective it is read for refuses or keeps)."""
    out = {}
    for k, v in metrics.items():
        if not isinstance(k, str):
            raise EvaluatorError(f"{source}: expected metric names that are strings, got {k!r}")
        if _scalar(v):  # numpy's float32, a torch tensor of one value: what a training loop computes
            v = v.item()
        if not isinstance(v, float):  # a float stays one, infinite or NaN: the objective decides what it is worth
            try:
                json.dumps(v, allow_nan=False)
            except (TypeError, ValueError):
                v = _shown(v)
        out[k] = v
    return out


def _shown(value: object) -> str:
    """A metric JSON cannot hold, as text for the record: its repr, or its type where even that
    fails (an int past the 4,300 digits Python writes)."""
    try:
        return repr(value)
    except Exception:  # noqa: BLE001 - whatever a user's __repr__ raises
        return f"<{type(value).__name__}>"


def _scalar(value: object) -> bool:
    """Whether ``value`` is one number of NumPy or torch (a scalar, or an array or tensor of no
    dimensions), which ``item()`` gives as Python's own."""
    return type(value).__module__.split(".")[0] in ("numpy", "torch") and getattr(value, "shape", None) == ()


def _tail(log: str) -> str:
    try:
        with open(log, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - TAIL))
            text = f.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""
    return f"; the end of {log}:\n{text}" if text else f" ({log} is empty)"


__all__ = ["PLACEHOLDERS", "Evaluator", "EvaluatorError", "check_evaluator", "parse_evaluator", "run_evaluator"]
