"""Evaluators: what a trial runs to measure a variant (``--evaluate``).

Two forms, both given the trial's own folder:

* a **command template**: ``"python examples/train.py {spec} --epochs 1 --metrics-json {out}"``.
  It is split into words as a POSIX shell would (``shlex``), then each placeholder is
  replaced inside its word, and the words are run as they are, without a shell, so a
  path with spaces stays one argument and nothing is interpreted. Placeholders:
  ``{spec}`` the variant's plain spec, ``{out}`` the metrics file the command writes
  (a JSON object), ``{workdir}`` the trial's folder, ``{weights}`` the warm-start
  weights (with ``--warm-start``), ``{trial}`` the trial's number; ``{{`` and ``}}``
  are braces. Its standard output and error go to the trial's ``log.txt``; it runs
  in the folder the search was started from (where it exists, else the trial's).
  A non-zero exit fails the trial, with the end of its log.
* a **Python callable** ``module:function`` (``module`` importable where the trial runs:
  installed, or found from the folder the search was started from, as ``python -m`` finds it),
  called as ``function(spec_path, workdir)`` and returning a dict of metrics; what it
  prints goes to ``log.txt``. The Python API also takes the callable itself.

The metrics are a JSON object of numbers (others are kept in the record but cannot be
objectives); ``metric:NAME`` reads ``NAME`` there.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import math
import os
import re
import shlex
import shutil
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
            fields = [name for _, name, spec, conv in string.Formatter().parse(word) if name is not None]
        except ValueError as e:
            raise EvaluatorError(f"{word!r}: {e} (write {{{{ and }}}} for braces)", path="--evaluate") from None
        for name in fields:
            if name not in PLACEHOLDERS:
                raise EvaluatorError(
                    f"unknown placeholder {{{name}}} in {word!r}; the placeholders are "
                    + ", ".join(f"{{{p}}}" for p in PLACEHOLDERS),
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
        module = target.partition(":")[0]
        if not _importable(module, cwd):
            raise EvaluatorError(
                f"{target}: no module {module!r} here (installed, or from {cwd}, as python -m finds it)",
                path="--evaluate",
            )
        return
    program = evaluator.argv[0]
    if len(evaluator.argv) == 1 and re.fullmatch(r"[\w.]*:[\w.]*", program):
        raise EvaluatorError(
            f"expected module:function (a dotted module, a colon and a function's name) or a command, got {program!r}",
            path="--evaluate",
        )
    if "{" in program:
        return  # the program is a placeholder's value, known per trial
    found = os.path.isfile(os.path.join(cwd, program)) if os.sep in program else shutil.which(program) is not None
    if not found:
        where = f"as a file from {cwd}" if os.sep in program else "on the PATH"
        raise EvaluatorError(f"the command's program {program!r} is not found {where}", path="--evaluate")


def _importable(module: str, cwd: str) -> bool:
    """Whether ``module`` is found from ``cwd`` or the installed packages (its parent packages are
    imported to look inside them, as the trial would)."""
    added = os.path.isdir(cwd) and os.path.abspath(cwd) not in map(os.path.abspath, sys.path)
    if added:
        sys.path.append(os.path.abspath(cwd))
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
    finally:
        if added:
            sys.path.remove(os.path.abspath(cwd))


def run_evaluator(
    evaluator: Evaluator, *, spec: str, workdir: str, weights: str | None, trial: int, cwd: str, timeout: float | None
) -> dict:
    """Run ``evaluator`` for one trial and return its metrics (raises :class:`EvaluatorError`)."""
    log = os.path.join(workdir, "log.txt")
    if evaluator.target is not None:
        function = _function(evaluator.target, cwd)
        with open(log, "a", encoding="utf-8") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
            metrics = function(spec, workdir)
        if not isinstance(metrics, Mapping):
            raise EvaluatorError(f"{evaluator.text} returned {type(metrics).__name__}, expected a dict of metrics")
        return _plain(dict(metrics), evaluator.text)
    out = os.path.join(workdir, "metrics.json")
    values = {"spec": spec, "out": out, "workdir": workdir, "weights": weights or "", "trial": str(trial)}
    argv = [word.format_map(values) for word in evaluator.argv]
    with open(log, "ab") as f:
        try:
            done = subprocess.run(
                argv,
                cwd=cwd if os.path.isdir(cwd) else workdir,
                stdin=subprocess.DEVNULL,
                stdout=f,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            )
        except FileNotFoundError:
            raise EvaluatorError(f"cannot run {argv[0]!r}: no such program") from None
        except subprocess.TimeoutExpired:
            raise EvaluatorError(f"the evaluator ran past --trial-timeout {timeout:g} s{_tail(log)}") from None
    if done.returncode != 0:
        raise EvaluatorError(f"the evaluator exited with status {done.returncode}{_tail(log)}")
    try:
        with open(out, encoding="utf-8") as f:
            metrics = json.load(f)
    except FileNotFoundError:
        raise EvaluatorError(f"the evaluator wrote no metrics file ({out}){_tail(log)}") from None
    except (OSError, ValueError) as e:
        raise EvaluatorError(f"{out}: not a JSON file: {e}") from None
    if not isinstance(metrics, dict):
        raise EvaluatorError(f"{out}: expected a JSON object of metrics, got {type(metrics).__name__}")
    return _plain(metrics, out)


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
    """The metrics with string keys and JSON values (what the study's record keeps)."""
    out = {}
    for k, v in metrics.items():
        if not isinstance(k, str):
            raise EvaluatorError(f"{source}: expected metric names that are strings, got {k!r}")
        if isinstance(v, float) and not math.isfinite(v):
            v = str(v)
        try:
            json.dumps(v)
        except (TypeError, ValueError):
            v = repr(v)
        out[k] = v
    return out


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
