"""``nasdsl search`` under hostile use: odd options, evaluators that misbehave, stores that are not what
they seem. Each test pins what a user gets (exit 2 with a located message and nothing written, or a
failed trial and a search that goes on), found by trying to break the command.

References are independent of the search: the variants are compiled from their own spec files, trial
folders and processes are inspected from outside, JSON is read by a strict parser, and Optuna's stored
parameters are read back through Optuna."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shlex
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest

import nasdsl
from nasdsl.cli import main
from nasdsl.search import Config, goal, parse_evaluator, run_search
from nasdsl.search.driver import OWNER, Budget
from nasdsl.search.evaluators import check_evaluator
from nasdsl.search.report import status
from nasdsl.search.study import ATTR, load_study

from paths import ROOT

#: three variants, w = 2, 4 or 8 (86, 170 and 338 parameters)
TINY = """\
nasdsl: 1
name: Tiny
input:
  shape: [1, 4, 4]
variables:
  w: {choice: [2, 4, 8]}
model:
  conv: {op: conv2d, out: w, kernel: 3, padding: 1}
  relu: relu
  flat: flatten
  fc: {op: linear, out: 2}
"""
#: a choice whose options Python holds equal across types (0 == False, 1 == True)
MIXED = TINY.replace("variables:\n", "variables:\n  flag: {choice: [0, false, 1, true]}\n")


@pytest.fixture(scope="module")
def specs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("specs")
    (folder / "tiny.yaml").write_text(TINY)
    (folder / "mixed.yaml").write_text(MIXED)
    return folder


@pytest.fixture
def here(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _cli(capsys, *argv) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse's own refusals
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def _api(tmp_path: Path, spec: Path, **kw) -> Config:
    base = {
        "spec": str(spec),
        "goals": (goal("metric:acc", "maximize"),),
        "workdir": str(tmp_path / "search"),
        "study_name": "hostile",
        "workers": 0,
        "trials": 3,
        "storage": optuna.storages.InMemoryStorage(),
    }
    return Config(**{**base, **kw})


def _quiet(line: str) -> None:
    pass


def _trials(study) -> list[tuple[str, dict, object]]:
    return [(status(t), t.user_attrs.get(ATTR, {}), t) for t in study.get_trials(deepcopy=False)]


def _params(spec_path: str) -> int:
    return nasdsl.compile_spec(spec_path).summary()["totals"]["params"]


# evaluators named test_search_hostile:NAME (tests/ is on the path of pytest and of a pool's workers)


def exits_when_wide(spec_path: str, workdir: str) -> dict:
    """sys.exit, as a training script's main() does on bad arguments, for variants above 200 parameters."""
    params = _params(spec_path)
    if params > 200:
        sys.exit(3)
    return {"acc": params}


def wanders(spec_path: str, workdir: str) -> dict:
    """Changes the process's folder into the trial's, and reports where it was called from."""
    called_from = os.getcwd()
    os.chdir(workdir)
    return {"acc": _params(spec_path), "cwd": called_from}


def dies_when_wide(spec_path: str, workdir: str) -> dict:
    """Ends its process at once (as the kernel's out-of-memory killer or a crash in native code would)
    for variants above 200 parameters; otherwise changes folder, as :func:`wanders` does."""
    if _params(spec_path) > 200:
        os._exit(1)
    return wanders(spec_path, workdir)


def dies_beside_others(spec_path: str, workdir: str) -> dict:
    """The trial whose spec holds ``# culprit`` marks that it started and ends its process; the others
    wait for that mark and run on a while after it (so they are running when the pool breaks)."""
    mark = Path(workdir).parent / "culprit-started"
    if "# culprit" in Path(spec_path).read_text():
        mark.touch()
        os._exit(1)
    deadline = time.monotonic() + 30
    while not mark.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)
    return {"acc": 1.0, "pid": os.getpid()}


def huge_for_wide(spec_path: str, workdir: str) -> dict:
    """A metric too large for a float (10**400, of 1,329 bits) for variants above 200 parameters, and
    one past the 4,300 digits Python writes an int with."""
    params = _params(spec_path)
    return {"acc": 10**400 if params > 200 else params, "huge": 10**5000}


def non_finite(spec_path: str, workdir: str) -> dict:
    """NaN for the narrowest variant, minus infinity for the widest, the parameters otherwise."""
    params = _params(spec_path)
    return {"acc": {86: math.nan, 338: -math.inf}.get(params, params)}


def constant(spec_path: str, workdir: str) -> dict:
    return {"acc": 0.5}


def tensors(spec_path: str, workdir: str) -> dict:
    """The metrics as a training loop computes them: a torch tensor of one value, NumPy scalars."""
    import numpy as np
    import torch

    params = _params(spec_path)
    return {"acc": torch.tensor(params / 1000, dtype=torch.float64), "params": np.int64(params), "f": np.float32(0.5)}


# ---------------------------------------------------------------------------
# Options refused before anything is written


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--minimize", "macs", "--patience", "0"], "--patience: expected a number above 0, got '0'"),
        (["--minimize", "macs", "--seed", "4294967296"], "--seed: expected an integer from 0 to 4294967295"),
        (["--maximize", "naswot", "--cpus-per-trial", "inf"], "--cpus-per-trial: expected a finite number"),
        (
            ["--maximize", "metric:acc", "--evaluate", "test_search_hostile:constant", "--trial-timeout", "5"],
            "error: --trial-timeout: no command runs (a Python callable cannot be stopped) in this search",
        ),
        (
            ["--minimize", "macs", "--proxy-batch", "4"],
            "error: --proxy-batch: no objective is a zero-cost proxy (synflow, naswot) in this search: leave it out",
        ),
        (
            ["--maximize", "naswot", "--workers", "0", "--cpus-per-trial", "4"],
            "error: --cpus-per-trial: no trial runs in a process of its own (a pool's or Ray's) in this search",
        ),
        (
            ["--maximize", "metric: acc", "--evaluate", "test_search_hostile:constant"],
            "error: --objective: 'metric: acc': expected a metric's name without spaces around it",
        ),
        (
            ["--maximize", "metric:acc", "--evaluate", "python t.py {out} --trial {trial:05d}"],
            "error: --evaluate: '{trial:05d}': a placeholder is replaced as it is, without a format or a "
            "conversion; write {trial}",
        ),
        (
            ["--maximize", "metric:acc", "--evaluate", "python t.py {out!r}"],
            "error: --evaluate: '{out!r}': a placeholder is replaced as it is",
        ),
        (
            ["--maximize", "metric:acc", "--evaluate", "test_search_hostile:no_such_function"],
            "error: --evaluate: test_search_hostile:no_such_function: the module test_search_hostile "
            "defines no 'no_such_function'",
        ),
    ],
)
def test_odd_options_are_exit_2_and_write_nothing(specs, here, capsys, argv, message):
    code, _, err = _cli(capsys, "search", specs / "tiny.yaml", *argv)
    assert code == 2 and message in err and "Traceback" not in err, err
    assert os.listdir(here) == []


def test_a_program_that_cannot_be_run_is_exit_2(specs, here, capsys):
    """A command's program that is a file but not executable would fail every trial with
    'Permission denied'; it is found out before the study is made."""
    (here / "train.sh").write_text("#!/bin/sh\n")
    (here / "train.sh").chmod(0o644)
    code, _, err = _cli(
        capsys, "search", specs / "tiny.yaml", "--maximize", "metric:acc", "--evaluate", "./train.sh {out}"
    )
    assert code == 2 and err.startswith("error: --evaluate: the command's program './train.sh' is not executable")
    assert os.listdir(here) == ["train.sh"]


# ---------------------------------------------------------------------------
# Storage and the stored study


@pytest.fixture(scope="module")
def stored(specs, tmp_path_factory) -> Path:
    """The work folder of a cost-only search of the three variants, stored in its default SQLite file."""
    workdir = tmp_path_factory.mktemp("stored") / "search-Tiny"
    argv = ["search", specs / "tiny.yaml", "--minimize", "params", "--trials", 3, "--quiet", "--workdir", workdir]
    assert main([str(a) for a in argv]) == 0
    return workdir


@pytest.mark.parametrize("number", ["\u00b2", "\u0660", "\u0661"])
def test_pick_takes_only_ascii_digits(specs, stored, capsys, number):
    """'²', '٠' and '١' are digits to str.isdigit: the first crashed int(), the others picked trials 0
    and 1."""
    code, out, err = _cli(capsys, "search", specs / "tiny.yaml", "--pick", number, "--workdir", stored)
    assert code == 2 and out == ""
    assert err.startswith("error: --pick: expected best or a trial number from 0 to "), err


def test_pick_does_not_write_over_the_spec_or_the_study(specs, stored, capsys, here):
    spec = here / "space.yaml"
    spec.write_text(TINY)
    database = stored / "study.db"
    before = database.read_bytes()
    for target in (spec, "./space.yaml", database, f"{database}-wal"):
        code, _, err = _cli(capsys, "search", spec, "--pick", "best", "-o", target, "--workdir", stored)
        assert code == 2 and err.startswith("error: --output: ") and "is read by this command" in err, err
    assert spec.read_text() == TINY and database.read_bytes() == before


def test_report_and_pick_of_a_study_nasdsl_did_not_make_are_exit_2(specs, here, capsys):
    url = f"sqlite:///{here}/foreign.db"
    study = optuna.create_study(storage=url, study_name="Tiny")
    trial = study.ask()
    trial.suggest_categorical("w", [2, 4, 8])
    study.tell(trial, 1.0)
    for what in (["--report"], ["--pick", "0"], ["--pick", "best"]):
        code, _, err = _cli(capsys, "search", specs / "tiny.yaml", *what, "--storage", url)
        assert code == 2 and err == f"error: --study-name: the study 'Tiny' in {url} was not made by nasdsl search\n"


def test_pick_best_of_one_objective_with_a_tie_names_the_tied_trials(specs, here, capsys):
    code, _, err = _cli(
        capsys, "search", specs / "tiny.yaml", "--maximize", "metric:acc", "--evaluate",
        "test_search_hostile:constant", "--workers", 0, "--trials", 3, "--quiet",
    )  # fmt: skip
    assert code == 0, err
    code, out, err = _cli(capsys, "search", specs / "tiny.yaml", "--pick", "best")
    assert code == 2 and out == ""
    assert err.startswith("error: --pick: trials 0, 1, ") and "tie for the best metric:acc, 0.5" in err, err
    assert "objectives" not in err and "Pareto" not in err


def test_options_equal_across_types_are_distinct_parameters(specs, here, capsys):
    """Optuna finds a categorical value by ==: stored as it was, 1 came back as true, 0 as false.
    Each trial's stored parameter must make the variant it evaluated: its spec file compiles to
    the values told, and --pick writes that same spec."""
    spec = specs / "mixed.yaml"
    argv = ["search", spec, "--set", "w=2", "--minimize", "params", "--sampler", "random", "--trials", 4]
    argv += ["--seed", 5, "--quiet", "--workers", 0]
    code, _, err = _cli(capsys, *argv, "--maximize", "metric:acc", "--evaluate", "test_search_hostile:constant")
    assert code == 0, err
    study = load_study(f"sqlite:///{here}/search-Tiny/study.db", "Tiny")
    seen = set()
    for state, rec, t in _trials(study):
        if state != "evaluated":
            continue
        written = Path(rec["workdir"], "spec.yaml").read_text()
        assert t.values[0] == _params(Path(rec["workdir"], "spec.yaml"))
        seen.add(repr(t.params["flag"]))
        code, out, err = _cli(capsys, "search", spec, "--pick", t.number)
        assert code == 0, err
        # the variant's own lines (past the two comment lines) are those the trial ran
        assert out.split("\n", 2)[2] == written.split("\n", 2)[2]
    assert len(seen) == 4, seen


def test_resuming_a_study_that_holds_a_choice_as_another_parameter_is_exit_2(specs, here, capsys, monkeypatch):
    """A study made before the options above were told apart holds 'flag' as Optuna's [0, false, 1, true]:
    asking it as text raised Optuna's ValueError out of the search."""
    from nasdsl.search import params

    argv = ["search", specs / "mixed.yaml", "--minimize", "params", "--sampler", "random", "--quiet"]
    with monkeypatch.context() as old:
        old.setattr(params, "categories", lambda point: [params._value(o) for o in point.options])
        assert _cli(capsys, *argv, "--trials", 2)[0] == 0
    code, _, err = _cli(capsys, *argv, "--trials", 4, "--resume")
    assert code == 2 and err.startswith("error: --study-name: the study holds the choice flag as another parameter")


# ---------------------------------------------------------------------------
# Evaluators that misbehave: the trial fails, the search goes on


def test_an_evaluator_that_calls_sys_exit_fails_its_trial_and_the_search_goes_on(specs, tmp_path):
    cfg = _api(tmp_path, specs / "tiny.yaml", evaluator=parse_evaluator(exits_when_wide))
    summary = run_search(cfg, say=_quiet)
    states = {rec["variant"]: (state, rec) for state, rec, _ in _trials(summary.study) if state != "duplicate"}
    assert summary.evaluated == 2 and summary.failed == 1
    assert sorted(s for s, _ in states.values()) == ["evaluated", "evaluated", "failed"]
    for state, rec in states.values():
        if state == "failed":
            assert "exits_when_wide called sys.exit(3)" in rec["error"]


def test_an_evaluator_that_changes_folder_does_not_move_the_next_trials(specs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = _api(tmp_path, specs / "tiny.yaml", evaluator=parse_evaluator(wanders), workdir="search")
    summary = run_search(cfg, say=_quiet)
    assert summary.evaluated == 3 and os.getcwd() == str(tmp_path)
    for state, rec, t in _trials(summary.study):
        if state == "evaluated":
            assert rec["workdir"] == str(tmp_path / "search" / f"trial-{t.number:05d}")
            assert rec["metrics"]["cwd"] == str(tmp_path)
            assert rec["metrics"]["acc"] == _params(Path(rec["workdir"], "spec.yaml"))


def test_a_worker_that_dies_fails_its_trial_and_a_new_pool_runs_the_rest(specs, tmp_path, monkeypatch):
    """A pool's worker that dies broke the pool: the next trial's submit raised BrokenProcessPool out of
    the search. Its folder changes do not follow the next trials in a worker either."""
    monkeypatch.chdir(tmp_path)
    cfg = _api(tmp_path, specs / "tiny.yaml", evaluator=parse_evaluator(dies_when_wide), workers=1, workdir="search")
    summary = run_search(cfg, say=_quiet)
    assert summary.evaluated == 2 and summary.failed == 1
    for state, rec, _ in _trials(summary.study):
        if state == "failed":
            assert rec["error"].startswith("the worker process died while it ran this trial alone")
        elif state == "evaluated":
            assert rec["metrics"]["cwd"] == str(tmp_path) and rec["workdir"].startswith(str(tmp_path / "search"))


def test_a_worker_that_dies_fails_only_its_own_trial_not_those_running_beside_it(tmp_path):
    """Python fails every trial of a broken pool and cannot say which killed it: each of them is run
    again alone, and only the one that dies alone fails (they all failed, 'this trial or one beside it')."""
    from nasdsl.search.executors import Pool
    from nasdsl.search.trial import Task

    evaluator = parse_evaluator(dies_beside_others)
    tasks = [
        Task(n, str(tmp_path / f"trial-{n}"), TINY + ("# culprit\n" if n == 1 else ""), evaluator=evaluator)
        for n in range(3)
    ]
    pool = Pool(workers=3, threads=1)
    try:
        for task in tasks:
            pool.submit(task)
        outcomes = {o.number: o for o in (pool.next_done() for _ in tasks)}
    finally:
        pool.close()
    assert sorted(outcomes) == [0, 1, 2]
    assert outcomes[1].error == (
        "the worker process died while it ran this trial alone (killed, out of memory, os._exit, a crash in "
        "native code)"
    )
    for n in (0, 2):
        assert outcomes[n].error is None and outcomes[n].metrics["acc"] == 1.0


def test_a_metric_too_large_for_a_float_fails_its_trial_not_the_search(specs, tmp_path):
    summary = run_search(_api(tmp_path, specs / "tiny.yaml", evaluator=parse_evaluator(huge_for_wide)), say=_quiet)
    assert summary.evaluated == 2 and summary.failed == 1
    errors = [rec["error"] for state, rec, _ in _trials(summary.study) if state == "failed"]
    expected = "metric:acc: expected a number a float holds, got an integer of 1,329 bits (past 1.8e308)"
    assert errors == [expected]
    assert {rec["metrics"]["huge"] for state, rec, _ in _trials(summary.study) if state != "duplicate"} == {"<int>"}


def test_nan_fails_a_trial_minus_infinity_is_a_value_and_the_json_report_is_strict(specs, here, capsys):
    code, _, err = _cli(
        capsys, "search", specs / "tiny.yaml", "--maximize", "metric:acc", "--evaluate",
        "test_search_hostile:non_finite", "--workers", 0, "--trials", 3, "--quiet",
    )  # fmt: skip
    assert code == 0, err
    code, out, _ = _cli(capsys, "search", specs / "tiny.yaml", "--report", "--format", "json")

    def refuse(constant: str):
        raise ValueError(f"not JSON: {constant}")

    data = json.loads(out, parse_constant=refuse)
    by_params = {r["figures"]["params"]: r for r in data["trials"] if r["status"] != "duplicate"}
    assert by_params[86]["status"] == "failed" and by_params[86]["note"] == "metric:acc: expected a number, got NaN"
    assert by_params[338]["status"] == "evaluated" and by_params[338]["values"] == {"metric:acc": "-inf"}
    assert by_params[338]["metrics"] == {"acc": "-inf"}
    assert by_params[170]["values"] == {"metric:acc": 170.0}
    # each trial's own record is strict JSON too
    records = [
        json.loads(f.read_text(), parse_constant=refuse) for f in sorted(here.glob("search-*/trial-*/trial.json"))
    ]
    assert {"acc": "-inf"} in [r["metrics"] for r in records] and len(records) >= 3


def test_numpy_and_torch_scalars_are_metrics(specs, tmp_path):
    """A tensor of one value or a NumPy scalar was written as its repr ('tensor(0.1700)') and then
    refused as a string."""
    summary = run_search(_api(tmp_path, specs / "tiny.yaml", evaluator=parse_evaluator(tensors)), say=_quiet)
    assert summary.evaluated == 3
    for state, rec, t in _trials(summary.study):
        if state == "evaluated":
            params = _params(Path(rec["workdir"], "spec.yaml"))
            assert t.values == [params / 1000] and rec["metrics"] == {"acc": params / 1000, "params": params, "f": 0.5}
            assert type(rec["metrics"]["params"]) is int


def _command(folder: Path, code: str) -> str:
    """A command template running the script ``code`` in this Python with the metrics file as sys.argv[1]."""
    script = folder / "script.py"
    script.write_text(code)
    return f"{shlex.quote(sys.executable)} {shlex.quote(str(script))} {{out}}"


def test_a_stale_metrics_file_is_not_read_as_a_new_trials(specs, tmp_path):
    """Trial folders left by an earlier run of the study (killed, its study then deleted): a folder's
    metrics.json is not this trial's, and its log is not appended to. Folders that no study claims
    are another search's, and a new study is refused there rather than write over them."""
    for n in range(3):
        old = tmp_path / "search" / f"trial-{n:05d}"
        old.mkdir(parents=True)
        (old / "metrics.json").write_text('{"acc": 1}')
        (old / "log.txt").write_text("an earlier search\n")
    evaluator = parse_evaluator(_command(tmp_path, "print(1)"))
    with pytest.raises(nasdsl.NasdslError, match="holds the trial folders of another search"):
        run_search(_api(tmp_path, specs / "tiny.yaml", evaluator=evaluator), say=_quiet)
    (tmp_path / "search" / OWNER).write_text("hostile")  # the folders are this study's
    summary = run_search(_api(tmp_path, specs / "tiny.yaml", evaluator=evaluator), say=_quiet)
    assert summary.evaluated == 0 and summary.failed == 3
    for _, rec, _ in [r for r in _trials(summary.study) if r[0] == "failed"]:
        assert rec["error"].startswith("the evaluator wrote no metrics file")
        assert Path(rec["workdir"], "log.txt").read_text() == "1\n"


def test_metrics_that_name_a_metric_twice_fail_the_trial(specs, tmp_path):
    evaluator = parse_evaluator(
        _command(tmp_path, "import sys\nopen(sys.argv[1], 'w').write('{\"acc\": 1, \"acc\": 2}')\n")
    )
    summary = run_search(_api(tmp_path, specs / "tiny.yaml", evaluator=evaluator, trials=1), say=_quiet)
    (state, rec, _), *_ = _trials(summary.study)
    assert state == "failed" and "'acc' is given twice" in rec["error"], rec


def test_a_command_killed_by_a_signal_is_said_so(specs, tmp_path):
    """A command the out-of-memory killer ends: 'exited with status -9' read as an exit status."""
    evaluator = parse_evaluator("sh -c 'echo training; kill -9 $$' {out}")
    summary = run_search(_api(tmp_path, specs / "tiny.yaml", evaluator=evaluator, trials=1), say=_quiet)
    (state, rec, _), *_ = _trials(summary.study)
    assert state == "failed" and rec["error"].startswith("the evaluator was killed by SIGKILL (signal 9); the end of ")
    assert rec["error"].endswith("log.txt:\ntraining")


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"  # a zombie no one has reaped yet
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
def test_trial_timeout_stops_the_commands_children_too(specs, tmp_path):
    """A command that starts a process of its own (a shell script running python, a launcher): at
    --trial-timeout the whole group is stopped, not only the command, which left its child running
    (and holding its GPU) after the trial had failed."""
    evaluator = parse_evaluator("sh -c 'sleep 30 & echo $! > {workdir}/child; wait' {out}")
    cfg = _api(tmp_path, specs / "tiny.yaml", evaluator=evaluator, trials=1, trial_timeout=0.5)
    summary = run_search(cfg, say=_quiet)
    (state, rec, _), *_ = _trials(summary.study)
    assert state == "failed" and rec["error"].startswith("the evaluator ran past --trial-timeout 0.5 s")
    child = int(Path(rec["workdir"], "child").read_text())
    deadline = time.monotonic() + 5
    while not _gone(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    alive = not _gone(child)
    if alive:
        subprocess.run(["kill", "-9", str(child)], check=False)
    assert not alive, "the command's child outlived the timeout"


# ---------------------------------------------------------------------------
# Defects whose fix belongs to the driver or the study (nasdsl/search/driver.py, study.py)


def test_a_second_study_in_a_work_folder_leaves_the_first_ones_trials(specs, tmp_path):
    storage = optuna.storages.InMemoryStorage()
    first = _api(tmp_path, specs / "tiny.yaml", evaluator=parse_evaluator(constant), storage=storage, trials=1)
    run_search(first, say=_quiet)
    folder = tmp_path / "search" / "trial-00000"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    second = Config(**{**first.__dict__, "study_name": "second", "seed": 7})
    try:
        run_search(second, say=_quiet)
    except nasdsl.NasdslError:
        pass  # refusing the folder is a fix too
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_the_stop_reason_does_not_count_failed_trials_as_evaluated(specs, tmp_path):
    cfg = _api(tmp_path, specs / "tiny.yaml", evaluator=parse_evaluator(exits_when_wide), trials=3)
    summary = run_search(cfg, say=_quiet)
    assert summary.evaluated == 2 and summary.failed == 1
    assert "3 variants evaluated" not in summary.stopped, summary.stopped


def test_patience_spent_on_rejected_variants_says_so(tmp_path):
    digits = ROOT / "examples" / "digits_space.yaml"
    budget = Budget("macs", "max", 1, "--max-macs")
    cfg = _api(tmp_path, digits, goals=(goal("macs", "minimize"),), patience=5, trials=3, budgets=(budget,))
    summary = run_search(cfg, say=_quiet)
    assert summary.rejected == 5 and summary.evaluated == 0
    assert "no new variant" not in summary.stopped, summary.stopped


@pytest.mark.parametrize("url", ["sqlite:///q.db?timeout=30", "sqlite://", "sqlite:///:memory:"])
def test_a_storage_url_that_stores_no_file_of_that_name_is_exit_2(specs, here, capsys, url):
    code, _, err = _cli(capsys, "search", specs / "tiny.yaml", "--minimize", "params", "--storage", url, "--quiet")
    assert code == 2 and err.startswith("error: --storage: "), err
    assert os.listdir(here) == []


def test_the_python_api_refuses_a_seed_optuna_cannot_take(specs, tmp_path):
    cfg = _api(tmp_path, specs / "tiny.yaml", goals=(goal("params", "minimize"),), seed=2**32)
    with pytest.raises(nasdsl.NasdslError, match="seed"):
        run_search(cfg, say=_quiet)


def test_a_callables_module_is_read_not_run_before_the_search(specs, here, capsys):
    """The function of module:function is looked for in the module's source: a module whose import
    has effects is not imported by the check, and one that does not parse is refused with its place."""
    (here / "evaleffects.py").write_text(
        "open('imported', 'w').close()\n\ndef evaluate(spec, workdir):\n    return {}\n"
    )
    (here / "evalbroken.py").write_text("def evaluate(spec, workdir)\n    return {}\n")
    argv = ["search", specs / "tiny.yaml", "--maximize", "metric:acc", "--evaluate"]
    code, _, err = _cli(capsys, *argv, "evaleffects:evaluat")
    assert code == 2 and err == "error: --evaluate: evaleffects:evaluat: the module evaleffects defines no 'evaluat'\n"
    code, _, err = _cli(capsys, *argv, "evalbroken:evaluate")
    assert code == 2 and err.startswith(
        f"error: --evaluate: {here}/evalbroken.py:1:28: the evaluator's module does not parse"
    )
    assert sorted(os.listdir(here)) == ["evalbroken.py", "evaleffects.py"]
    # a module that binds its function where the source does not show it is taken on trust
    (here / "evaldynamic.py").write_text("import sys\nsetattr(sys.modules[__name__], 'evaluate', print)\n")
    check_evaluator(parse_evaluator("evaldynamic:evaluate"), str(here))


def test_doubled_braces_in_a_command_template_are_braces(specs, tmp_path):
    code = "import sys\nassert sys.argv[2:] == ['{literal}', 'a}b'], sys.argv\n"
    code += "open(sys.argv[1], 'w').write('{\"acc\": 1}')\n"
    template = _command(tmp_path, code) + " {{literal}} a}}b"
    summary = run_search(_api(tmp_path, specs / "tiny.yaml", evaluator=parse_evaluator(template), trials=1), say=_quiet)
    assert summary.evaluated == 1, [rec for _, rec, _ in _trials(summary.study)]


def test_each_study_has_its_own_work_folder_by_default(specs, here, capsys):
    """The default work folder is named after the study (the spec's name unless --study-name), so two
    studies of one spec keep their trials apart and --report finds each; a study name that is no
    folder name needs --workdir; a study given another's folder is refused before anything is stored."""
    base = ["search", specs / "tiny.yaml", "--maximize", "metric:acc", "--trials", "1", "--workers", "0", "--quiet"]
    (here / "studyevals.py").write_text("def constant(spec, workdir):\n    return {'acc': 1.0}\n")
    base += ["--evaluate", "studyevals:constant"]
    for study in ("first", "second"):
        code, _, err = _cli(capsys, *base, "--study-name", study)
        assert code == 0, err
        assert (here / f"search-{study}" / "trial-00000" / "spec.yaml").exists()
        assert (here / f"search-{study}" / "study.txt").read_text() == study
        assert _cli(capsys, "search", specs / "tiny.yaml", "--study-name", study, "--report")[0] == 0
    code, _, err = _cli(capsys, *base, "--study-name", "a/b")
    assert code == 2 and "the study name 'a/b' is no folder name" in err and "give --workdir" in err
    code, _, err = _cli(capsys, *base, "--study-name", "third", "--workdir", "search-first")
    assert code == 2 and "search-first holds the trial folders of the study 'first'" in err
    assert {n for n in os.listdir(here / "search-first") if not n.startswith("study.db")} == {
        "study.txt",
        "trial-00000",
    }
    assert len(load_study(f"sqlite:///{here}/search-first/study.db", "first").trials) == 1  # nothing added


def test_a_study_running_in_one_driver_is_not_resumed_by_another(specs, tmp_path):
    """A --resume beside a running search would tell its running trials FAIL and ask them again: the
    second driver is refused, naming the first's process, and the study is left as it was; once the
    first has ended, the resume runs."""
    from nasdsl.search.driver import _Running

    cfg = _api(tmp_path, specs / "tiny.yaml", evaluator=parse_evaluator(constant), trials=1, storage=None)
    run_search(cfg, say=_quiet)
    resumed = Config(**{**cfg.__dict__, "resume": True, "trials": 2})
    held = _Running(cfg)  # as the first driver holds it while it runs
    try:
        with pytest.raises(nasdsl.NasdslError, match=rf"being run by another nasdsl search \(pid {os.getpid()}\)"):
            run_search(resumed, say=_quiet)
    finally:
        held.release()
    assert len(load_study(cfg.storage_url, "hostile").trials) == 1
    assert run_search(resumed, say=_quiet).evaluated == 1
    assert not [n for n in os.listdir(tmp_path / "search") if n.startswith(".running")]  # let go at the end


def test_a_ray_address_that_accepts_no_connection_is_refused_at_once(specs, here, capsys):
    """Ray retries an unreachable HOST:PORT for minutes; the search tries the port first and says
    what it found, exit 2, nothing stored."""
    import socket
    import time

    pytest.importorskip("ray")
    with socket.socket() as s:  # a port nothing listens on once it is closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    argv = ["search", specs / "tiny.yaml", "--maximize", "naswot", "--trials", "1", "--ray", f"127.0.0.1:{port}"]
    code, _, err = _cli(capsys, *argv)
    assert code == 2 and f"error: --ray: cannot reach the Ray cluster at 127.0.0.1:{port}: connection refused" in err
    assert time.monotonic() - started < 30 and not os.listdir(here)


# -- two searches of one study in a shared storage ------------------------------------------------------

ENTERED, GO = threading.Event(), threading.Event()


def waits_for_go(spec_path: str, workdir: str) -> dict:
    """Says it has begun and waits until the test lets it go."""
    ENTERED.set()
    GO.wait(30)
    return {"acc": _params(spec_path)}


@contextlib.contextmanager
def _running(cfg: Config):
    """``cfg``'s search in a thread, held inside its first trial (``waits_for_go``) while the block
    runs, then let finish; yields what it ends with: ``summary`` or ``error`` (a NasdslError's text)."""
    ENTERED.clear()
    GO.clear()
    outcome: dict = {}

    def search():
        try:
            outcome["summary"] = run_search(cfg, say=_quiet)
        except nasdsl.NasdslError as e:
            outcome["error"] = str(e)

    runner = threading.Thread(target=search)
    runner.start()
    try:
        assert ENTERED.wait(30)
        yield outcome
    finally:
        GO.set()
        runner.join(60)


def test_a_second_search_of_a_running_study_in_a_shared_storage_is_refused(specs, tmp_path, capsys):
    """A --resume from another folder (another machine on a shared database) told the running search's
    trials FAIL under it, and that search then died of an internal error (UpdateFinishedTrialError)
    when it told them. The running search holds the study in the storage; the second is refused."""
    from nasdsl.search.study import DRIVER, LEFT_AFTER

    url = f"sqlite:///{tmp_path / 'shared.db'}"
    first = _api(tmp_path, specs / "tiny.yaml", evaluator=parse_evaluator(waits_for_go), storage=url, trials=2,
                 workdir=str(tmp_path / "a"), sampler="random")  # fmt: skip
    second = Config(**{**first.__dict__, "workdir": str(tmp_path / "b"), "resume": True})
    with _running(first) as outcome:
        with pytest.raises(nasdsl.NasdslError) as refused:
            run_search(second, say=_quiet)
        assert (
            f"the study 'hostile' in {url} is being run by another nasdsl search (on {socket.gethostname()}, pid "
            f"{os.getpid()}, in {tmp_path / 'a'}; its last sign of life 0 s ago)" in str(refused.value)
        )
        assert not (tmp_path / "b" / "trial-00000").exists()
    assert outcome["summary"].evaluated == 2  # its trials were its own to the end
    study = load_study(url, "hostile")
    assert study.user_attrs[DRIVER] is None  # let go as it ended: the study may be resumed
    # a search that went silent (killed) is taken as ended once its last beat is LEFT_AFTER seconds old
    sign = {"host": "elsewhere", "pid": 1, "workdir": "/w", "beat": time.time() - LEFT_AFTER + 30}
    study.set_user_attr(DRIVER, sign)
    code, out, err = _cli(capsys, "search", specs / "tiny.yaml", "--storage", url, "--study-name", "hostile",
                          "--maximize", "metric:acc", "--resume", "--workdir", tmp_path / "b", "--trials", "3",
                          "--evaluate", "test_search_hostile:_params_metric")  # fmt: skip
    assert code == 2 and "being run by another nasdsl search (on elsewhere, pid 1, in /w; its last sign" in err
    code, out, err = _cli(
        capsys, "search", specs / "tiny.yaml", "--storage", url, "--study-name", "hostile", "--report"
    )
    assert code == 0 and out.startswith(
        "study hostile (maximize metric:acc): 2 variants evaluated, being run now by the search on elsewhere "
        "(pid 1, in /w)\n"
    )
    study.set_user_attr(DRIVER, {**sign, "beat": time.time() - LEFT_AFTER - 1})
    summary = run_search(Config(**{**second.__dict__, "trials": 3, "evaluator": parse_evaluator(_params_metric)}),
                         say=_quiet)  # fmt: skip
    assert summary.resumed == 2 and summary.evaluated == 1
    from nasdsl.search.study import BEAT_SECONDS

    docs = " ".join((ROOT / "docs" / "search.md").read_text().split())
    assert f"every {BEAT_SECONDS:g} s; a search whose last sign is over {LEFT_AFTER:g} s old is taken as killed" in docs


def _params_metric(spec_path: str, workdir: str) -> dict:
    return {"acc": _params(spec_path)}


def test_a_search_whose_trial_another_search_ended_stops_with_an_error(specs, tmp_path):
    """A search taken as ended (silent past LEFT_AFTER: suspended) whose trial another search told FAIL
    stops with the reason when it tells that trial, not with an internal error."""
    from optuna.trial import TrialState

    from nasdsl.search import study as studies

    url = f"sqlite:///{tmp_path / 'shared.db'}"
    cfg = _api(tmp_path, specs / "tiny.yaml", evaluator=parse_evaluator(waits_for_go), storage=url, trials=1,
               workdir=str(tmp_path / "a"))  # fmt: skip
    with _running(cfg) as outcome:
        study = load_study(url, "hostile")
        (running,) = [t for t in study.get_trials() if t.state == TrialState.RUNNING]
        studies.tell(study, running.number, state=TrialState.FAIL)  # as a search that took over does
    assert outcome["error"] == (
        f"error: trial {running.number} was ended by another nasdsl search of this study while this one ran it "
        f"(this one gave no sign of life for over {studies.LEFT_AFTER:g} s, and was taken as ended): this search stops"
    )


def sleeps_a_little(spec_path: str, workdir: str) -> dict:
    time.sleep(0.1)
    return {"acc": _params(spec_path)}


def test_the_lease_signs_from_its_thread_without_sqlite_errors(specs, tmp_path, monkeypatch, capfd):
    """The lease's beats opened SQLite connections in their thread that the pool then closed in
    another: SQLAlchemy printed ProgrammingError tracebacks (26 in a 3-trial search)."""
    import gc

    from nasdsl.search import study as studies

    monkeypatch.setattr(studies, "BEAT_SECONDS", 0.02)
    cfg = _api(tmp_path, specs / "tiny.yaml", evaluator=parse_evaluator(sleeps_a_little),
               storage=f"sqlite:///{tmp_path / 's.db'}")  # fmt: skip
    summary = run_search(cfg, say=_quiet)
    del summary
    gc.collect()
    err = capfd.readouterr().err
    assert "ProgrammingError" not in err and "Traceback" not in err, err
