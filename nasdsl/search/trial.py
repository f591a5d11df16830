"""One trial, where it runs (a local worker process, a Ray worker, or the driver itself).

:func:`run_trial` takes a :class:`Task` (plain data: it travels to a worker by
pickling) and makes the trial's folder, ``WORKDIR/trial-NNNNN/``:

* ``spec.yaml``: the variant as a plain spec (what ``--pick`` writes);
* ``init.safetensors`` and ``transfer.json``: with a warm start, the parent's
  trained weights carried over to the variant (:func:`nasdsl.transfer_weights`);
* ``log.txt``, ``metrics.json``: what the evaluator printed and measured;
* ``trial.json``: what the trial returns (values, metrics, seconds, error).

Then it computes the objectives that need the model (the zero-cost proxies)
and runs the evaluator. Every failure is caught and returned as the trial's
error, so a worker never dies of a bad variant.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

from nasdsl.errors import NasdslError
from nasdsl.search.evaluators import Evaluator, run_evaluator
from nasdsl.search.objectives import OBJECTIVES
from nasdsl.search.study import strict_json

SPEC, WEIGHTS, RECORD = "spec.yaml", "init.safetensors", "trial.json"


@dataclass(frozen=True)
class Task:
    """What a trial needs: its number and folder, the text of the variant's spec file, the objectives
    computed on the model (by name), the evaluator, the warm start's parent (spec file,
    ``--set`` values, weights file) and where the command runs."""

    number: int
    workdir: str
    #: the text of its spec file: the variant's plain spec with its comment lines
    spec: str
    model_objectives: tuple[str, ...] = ()
    evaluator: Evaluator | None = None
    parent: tuple[str, tuple[str, ...], str] | None = None
    cwd: str = "."
    timeout: float | None = None
    proxy_batch: int = 16
    seed: int = 0
    threads: int | None = None


@dataclass(frozen=True)
class Outcome:
    """What a trial returns: the values of the model objectives, the evaluator's metrics,
    seconds, and the error that failed it (None when it succeeded)."""

    number: int
    values: dict[str, float] = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None
    workdir: str = ""


def run_trial(task: Task) -> Outcome:
    """Run one trial (see the module docstring); never raises for what the variant or the
    evaluator does."""
    started = time.perf_counter()
    values: dict[str, float] = {}
    metrics: dict = {}
    error = None
    try:
        if task.threads:
            _threads(task.threads)
        os.makedirs(task.workdir, exist_ok=True)
        spec = os.path.join(task.workdir, SPEC)
        with open(spec, "w", encoding="utf-8") as f:
            f.write(task.spec)
        weights = _warm_start(task, spec) if task.parent is not None else None
        if task.model_objectives:
            values = _model_objectives(task, spec)
        if task.evaluator is not None:
            metrics = run_evaluator(
                task.evaluator,
                spec=spec,
                workdir=task.workdir,
                weights=weights,
                trial=task.number,
                cwd=task.cwd,
                timeout=task.timeout,
            )
    except NasdslError as e:
        error = e.format().removeprefix("error: ")
    except Exception as e:  # noqa: BLE001 - the evaluator's own failure is the trial's, not the search's
        error = "".join(traceback.format_exception_only(type(e), e)).strip()
        if not isinstance(e, (OSError, ValueError)):
            error += "\n" + "".join(traceback.format_tb(e.__traceback__)[-3:]).rstrip()
    outcome = Outcome(task.number, values, metrics, time.perf_counter() - started, error, task.workdir)
    _record(outcome)
    return outcome


def _threads(n: int) -> None:
    """One trial's share of the cores: what its own torch and the commands it starts use."""
    os.environ["OMP_NUM_THREADS"] = str(n)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)


def _warm_start(task: Task, spec: str) -> str:
    """The parent's weights carried over to the variant, written to ``init.safetensors``."""
    from nasdsl.transfer import transfer_weights
    from nasdsl.weights import encode_weights

    parent_spec, overrides, weights = task.parent
    moved = transfer_weights(_parent(parent_spec, overrides), weights, spec, seed=task.seed)
    path = os.path.join(task.workdir, WEIGHTS)
    _write(path, encode_weights(moved.weights, path))
    _write(os.path.join(task.workdir, "transfer.json"), (json.dumps(moved.as_dict(), indent=1) + "\n").encode())
    return path


@functools.lru_cache(maxsize=4)
def _parent(spec: str, overrides: tuple[str, ...]):
    """The parent compiled once per worker process."""
    from nasdsl.api import compile_spec

    return compile_spec(spec, overrides)


def _model_objectives(task: Task, spec: str) -> dict[str, float]:
    """The objectives computed on the model at its initialisation (seeded), each on a fresh copy."""
    import torch

    from nasdsl import ir
    from nasdsl.api import build_model, compile_spec
    from nasdsl.search import proxies

    net = compile_spec(spec)
    shape = ir.node(net.graph, ir.info(net.graph).input).shape
    inputs = proxies.batch(shape, task.proxy_batch, task.seed)
    out = {}
    for name in task.model_objectives:
        compute: Callable = OBJECTIVES[name].model
        torch.manual_seed(task.seed)
        out[name] = compute(build_model(net), inputs)
    return out


def _record(outcome: Outcome) -> None:
    data = {
        "trial": outcome.number,
        "values": outcome.values,
        "metrics": outcome.metrics,
        "seconds": round(outcome.seconds, 3),
        "error": outcome.error,
    }
    try:
        if os.path.isdir(outcome.workdir):
            text = json.dumps(strict_json(data), indent=1)
            _write(os.path.join(outcome.workdir, RECORD), (text + "\n").encode())
    except OSError:
        pass  # the driver has the outcome; the record is a convenience


def _write(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


__all__ = ["Outcome", "Task", "run_trial"]
