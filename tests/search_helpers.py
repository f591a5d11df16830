"""Evaluators for tests/test_search.py, importable as ``search_helpers:NAME`` (tests/ is on the path of
pytest and of the processes a local pool spawns from it).

Each records its call as a file in the folder $SEARCH_CALLS (the trial's folder, one line), so that a test
counts the evaluator's runs from outside the search, and returns figures it gets by compiling the spec it
was handed (not from the search): what a test compares with the search's own figures."""

from __future__ import annotations

import os
import uuid

import nasdsl


def _call(workdir: str) -> int:
    """Record a call; the number of calls before it."""
    calls = os.environ["SEARCH_CALLS"]
    before = len(os.listdir(calls))
    with open(os.path.join(calls, uuid.uuid4().hex), "w") as f:
        f.write(workdir)
    return before


def compiled(spec_path: str, workdir: str) -> dict:
    """The spec's parameters and multiply-adds, as ``nasdsl summary`` totals them."""
    _call(workdir)
    totals = nasdsl.compile_spec(spec_path).summary()["totals"]
    print(f"compiled {spec_path}")
    return {"params": totals["params"], "macs": totals["macs"], "note": "compiled"}


def fails_when_wide(spec_path: str, workdir: str) -> dict:
    """Like :func:`compiled`, but raises for variants above 20,000 parameters."""
    found = compiled(spec_path, workdir)
    if found["params"] > 20_000:
        raise ValueError(f"too wide: {found['params']} parameters")
    return found


def interrupted_third(spec_path: str, workdir: str) -> dict:
    """Like :func:`compiled`, but the third call stops the search as Ctrl-C would."""
    if _call(workdir) == 2:
        raise KeyboardInterrupt
    totals = nasdsl.compile_spec(spec_path).summary()["totals"]
    return {"params": totals["params"], "macs": totals["macs"]}
