"""``nasdsl search`` (nasdsl/search/): choices as Optuna parameters, the ask-check-dispatch-tell loop,
evaluators, storage and resumption, the report and --pick, the zero-cost proxies, Ray, and the guide.

References are independent of the search: Optuna's own distribution classes and FixedTrial, the spec's
conditions read from the space, full compilations of the specs each trial wrote (``nasdsl.compile_spec``
and its summary), evaluators that count their calls from outside, and closed forms of the proxies on a
chain of linear layers computed with numpy."""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.trial import FixedTrial, TrialState

import nasdsl
from nasdsl import space as spaces
from nasdsl.cli import main, parser
from nasdsl.document import canonical_json, spec_yaml
from nasdsl.search import Config, goal, parse_evaluator, run_search, variant_key
from nasdsl.search.driver import Budget
from nasdsl.search.identity import Identities, identify
from nasdsl.search.params import distribution, picks_of, suggest
from nasdsl.search.report import chosen, status
from nasdsl.search.specfile import SpecTexts
from nasdsl.search.study import ATTR, SearchError, load_study
from nasdsl.space import variant_yaml

from paths import ROOT

DIGITS = ROOT / "examples" / "digits_space.yaml"
#: a chain of linear layers without biases: SynFlow and NASWOT have closed forms on it
CHAIN = """\
nasdsl: 1
name: Chain
doc: Three linear layers without biases, rectifiers between them.
input:
  shape: [6, 1, 1]
model:
  flat: flatten
  fc1: {op: linear, out: 8, bias: false}
  relu1: relu
  fc2: {op: linear, out: 5, bias: false}
  relu2: relu
  fc3: {op: linear, out: 3, bias: false}
"""


@pytest.fixture(scope="module")
def digits():
    return spaces.load_space(DIGITS)


@pytest.fixture
def calls(tmp_path, monkeypatch) -> Path:
    """The folder where tests/search_helpers.py's evaluators record their calls."""
    folder = tmp_path / "calls"
    folder.mkdir()
    monkeypatch.setenv("SEARCH_CALLS", str(folder))
    return folder


def _config(tmp_path: Path, **kw) -> Config:
    base = {
        "spec": str(DIGITS),
        "goals": (goal("macs", "minimize"), goal("params", "maximize")),
        "workdir": str(tmp_path / "search"),
        "study_name": "digits",
        "workers": 0,
        "storage": optuna.storages.InMemoryStorage(),  # (the command-line tests use SQLite files)
    }
    return Config(**{**base, **kw})


def _records(study) -> list[tuple]:
    return [(t.number, status(t), t.user_attrs.get(ATTR, {}), t) for t in study.get_trials(deepcopy=False)]


def _totals(spec: Path | str) -> dict:
    return nasdsl.compile_spec(spec).summary()["totals"]


# ---------------------------------------------------------------------------
# Choices as Optuna parameters


def test_choices_become_optuna_distributions_and_every_variant_is_asked_as_the_spec_conditions_it(digits):
    """A range is Optuna's IntDistribution, a choice its CategoricalDistribution; for every one of the 320
    variants, a FixedTrial holding exactly the choices the variant makes (width2 only where second is
    true) gives back the same picks: a conditional choice is never asked where its condition is false
    (FixedTrial raises for a parameter it does not hold)."""
    by_name = {p.name: p for p in digits.points}
    assert distribution(by_name["width1"]) == IntDistribution(8, 32, step=8)
    assert distribution(by_name["width2"]) == IntDistribution(16, 64, step=16)
    assert distribution(by_name["kernel"]) == CategoricalDistribution([3, 5])
    assert distribution(by_name["batchnorm"]) == CategoricalDistribution([True, False])
    variants = list(digits.variants())
    assert len(variants) == digits.count() == 320
    keys = set()
    for picks in variants:
        chosen = digits.choices(picks)
        params = {name: chosen[name] for name in chosen if name != "width2" or chosen["second"]}
        assert suggest(FixedTrial(params), digits) == picks
        keys.add(variant_key(digits, picks))
    assert len(keys) == 320


def test_a_list_option_is_a_categorical_value_as_set_writes_it(tmp_path):
    spec = tmp_path / "pairs.yaml"
    text = DIGITS.read_text().replace(
        "pool: {op: max_pool, kernel: 2}", "pool: {op: max_pool, kernel: {choice: [[2, 2], [2, 1]]}}"
    )
    spec.write_text(text)
    space = spaces.load_space(spec)
    (point,) = [p for p in space.points if p.name == "pool.kernel"]
    assert distribution(point) == CategoricalDistribution(["[2,2]", "[2,1]"])
    params = {"width1": 8, "kernel": 3, "batchnorm": True, "second": False, "hidden": 0, "pool.kernel": "[2,1]"}
    picks = suggest(FixedTrial(params), space)
    assert space.choices(picks)["pool.kernel"] == [2, 1]


# ---------------------------------------------------------------------------
# The loop: checks before dispatch, duplicates, budgets


def test_a_cost_search_tells_what_the_compiler_counts_and_never_runs_a_variant_over_budget(tmp_path, digits):
    """Objectives from the figures alone: nothing is dispatched. Each evaluated trial's values are its
    variant's multiply-adds and parameters as a full compile of its picked spec counts them; a trial
    over --max-macs is told PRUNED with the reason; a duplicate is told its first trial's values; no
    variant is evaluated twice; the variant key is the spec hash of the variant's plain spec."""
    budget = Budget("macs", "max", 300_000, "--max-macs")
    summary = run_search(_config(tmp_path, trials=12, seed=3, budgets=(budget,)), say=lambda line: None)
    assert summary.evaluated == 12 and summary.rejected > 0 and summary.duplicates > 0
    assert not (tmp_path / "search").joinpath("trial-00000").exists()  # nothing ran
    evaluated: dict[str, tuple] = {}
    for number, state, rec, t in _records(summary.study):
        picks = picks_of(digits, t.params)
        assert rec["variant"] == variant_key(digits, picks)
        if state == "evaluated":
            assert rec["variant"] not in evaluated
            evaluated[rec["variant"]] = tuple(t.values)
            doc = tmp_path / f"v{number}.yaml"
            doc.write_text(variant_yaml(digits, picks, "digits_space.yaml"))  # what --pick writes
            net = nasdsl.compile_spec(doc)
            totals = net.summary()["totals"]
            assert list(t.values) == [totals["macs"], totals["params"]] and totals["macs"] <= 300_000
            assert net.spec.sha256 == rec["variant"]
        elif state == "rejected":
            assert t.state == TrialState.PRUNED and t.values is None
            assert rec["reason"] == f"macs {rec['figures']['macs']:,} > --max-macs 300,000"
            assert rec["figures"]["macs"] > 300_000
    for _, state, rec, t in _records(summary.study):
        if state == "duplicate":
            assert tuple(t.values) == evaluated[rec["variant"]]
            assert summary.study.trials[rec["duplicate_of"]].user_attrs[ATTR]["variant"] == rec["variant"]
    assert len(evaluated) == 12


def test_trials_told_without_optunas_copy_are_stored_as_study_tell_stores_them(tmp_path, monkeypatch):
    """nasdsl finishes trials through the function behind ``Study.tell`` (without the deep copy of
    the trial it returns): the same search told through ``study.tell`` itself stores the same
    trials, states, values and records (evaluated, rejected and duplicates among them)."""
    from nasdsl.search import study as studies

    assert studies._teller() is not None  # the installed Optuna's own tell is used
    budget = Budget("macs", "max", 300_000, "--max-macs")
    found = []
    for teller in (studies._teller, lambda: None):
        monkeypatch.setattr(studies, "_teller", teller)
        cfg = _config(tmp_path / str(len(found)), trials=10, seed=5, budgets=(budget,))
        summary = run_search(cfg, say=lambda line: None)
        found.append([(t.number, t.state, t.values, t.params, t.user_attrs) for t in summary.study.trials])
    assert found[0] == found[1]
    assert {TrialState.COMPLETE, TrialState.PRUNED} <= {t[1] for t in found[0]}


def test_constraints_and_invalid_variants_are_rejected_before_anything_runs(tmp_path, calls):
    """A variant that breaks a constraint, or whose shapes do not fit, is told PRUNED with the reason
    the space gives (the compiler's error for the one that does not compile) and never reaches the
    evaluator."""
    spec = tmp_path / "odd.yaml"
    text = DIGITS.read_text().replace(
        "  hidden: {choice: [0, 32, 64, 128]}", "  hidden: {choice: [0, 32, 64, 128]}\n  pool_k: {choice: [2, 9]}"
    )
    text = text.replace("pool: {op: max_pool, kernel: 2}", "pool: {op: max_pool, kernel: pool_k}")
    spec.write_text(text + 'constraints:\n  - "width1 <= 8 or not second"\n')
    space = spaces.load_space(spec)
    cfg = _config(
        tmp_path, spec=str(spec), goals=(goal("metric:params", "maximize"),), trials=6, seed=1,
        evaluator=parse_evaluator("search_helpers:compiled"), sampler="random",
    )  # fmt: skip
    summary = run_search(cfg, say=lambda line: None)
    reasons = [rec["reason"] for _, state, rec, _ in _records(summary.study) if state == "rejected"]
    assert any(r.startswith("it breaks the constraint width1 <= 8 or not second") for r in reasons)
    assert any("does not compile" in r and "kernel" in r for r in reasons)
    for _, state, rec, t in _records(summary.study):
        picks = picks_of(space, t.params)
        if state == "rejected" and rec["reason"].startswith("it breaks the constraint"):
            assert space.why_not(picks) is not None
        if state == "evaluated":
            assert space.why_not(picks) is None and t.values[0] == _totals(Path(rec["workdir"]) / "spec.yaml")["params"]
    assert len(os.listdir(calls)) == summary.evaluated == 6


def test_evaluators_run_once_per_variant_in_their_own_folders_on_a_process_pool(tmp_path, calls, digits):
    """Two worker processes; the evaluator (a module:function) runs once per variant, in the trial's
    folder, on the spec written there; its metrics are the objectives; a failing evaluator fails its
    trial (and the duplicates of its variant) with the error, without stopping the search."""
    cfg = _config(
        tmp_path, goals=(goal("metric:params", "maximize"), goal("macs", "minimize")), trials=8, seed=5,
        evaluator=parse_evaluator("search_helpers:fails_when_wide"), workers=2,
    )  # fmt: skip
    lines: list[str] = []
    summary = run_search(cfg, say=lines.append)
    assert summary.slots == 2 and summary.evaluated + summary.failed == 8 and summary.failed > 0
    called = sorted(Path(p).read_text() for p in calls.iterdir())
    ran = sorted(rec["workdir"] for _, state, rec, _ in _records(summary.study) if state in ("evaluated", "failed"))
    assert called == ran and len(set(called)) == 8  # once per variant, where the record says
    for number, state, rec, t in _records(summary.study):
        if state == "evaluated":
            folder = Path(rec["workdir"])
            assert folder.name == f"trial-{number:05d}"
            totals = _totals(folder / "spec.yaml")
            assert list(t.values) == [totals["params"], totals["macs"]] and totals["params"] <= 20_000
            assert rec["metrics"] == {"params": totals["params"], "macs": totals["macs"], "note": "compiled"}
            assert "compiled " in (folder / "log.txt").read_text()
            assert json.loads((folder / "trial.json").read_text())["metrics"]["params"] == totals["params"]
        if state == "failed":
            assert t.state == TrialState.FAIL and "ValueError: too wide" in rec["error"]
            assert _totals(Path(rec["workdir"]) / "spec.yaml")["params"] > 20_000
    assert any(": failed (" in line and "too wide" in line for line in lines)


def test_a_sampler_that_proposes_a_variant_again_never_runs_it_twice(tmp_path):
    """Two variants, a random sampler asked until it has seen both: it proposes each many times,
    the evaluator (counting its calls from outside the search) runs once per variant, and every
    repeat is told its first trial's values with that trial's number."""
    ran: list[str] = []

    def evaluate(spec_path: str, workdir: str) -> dict:
        ran.append(Path(spec_path).read_text())
        return {"params": nasdsl.compile_spec(spec_path).summary()["totals"]["params"]}

    cfg = _config(
        tmp_path, goals=(goal("metric:params", "maximize"),), trials=50, sampler="random", seed=2,
        evaluator=parse_evaluator(evaluate),
        overrides=("width1={range: [8, 16, 8]}", "second=false", "kernel=3", "batchnorm=true", "hidden=0"),
    )  # fmt: skip
    summary = run_search(cfg, say=lambda line: None)
    assert summary.stopped == "every variant of the space (2) has been seen"
    assert summary.evaluated == len(ran) == len(set(ran)) == 2 and summary.duplicates > 0
    first = {
        rec["variant"]: (n, list(t.values)) for n, state, rec, t in _records(summary.study) if state == "evaluated"
    }
    repeats = [(rec, t) for _, state, rec, t in _records(summary.study) if state == "duplicate"]
    assert len(repeats) == summary.duplicates
    for rec, t in repeats:
        assert (rec["duplicate_of"], list(t.values)) == first[rec["variant"]]


def test_a_trials_spec_is_the_text_pick_writes_and_its_key_the_hash_of_that_spec(tmp_path):
    """On GoogLeNet with three filter counts as ranges, each trial's
    spec.yaml is byte for byte what ``nasdsl space --pick`` writes for its picks, and its variant key
    the hash the compiler records for that spec: the search writes the spec from the parts variants
    share and cuts the key's text from the spec once, and neither may show."""
    overrides = tuple(f"inception{m}.c3x3={{range: [64, 128, 32]}}" for m in ("3a", "4a", "5b"))
    space = spaces.load_space(ROOT / "specs" / "googlenet.yaml", overrides)
    cfg = _config(
        tmp_path, spec=str(ROOT / "specs" / "googlenet.yaml"), overrides=overrides, trials=8, sampler="random",
        goals=(goal("metric:zero", "maximize"),), evaluator=parse_evaluator(lambda spec, workdir: {"zero": 0}),
    )  # fmt: skip
    summary = run_search(cfg, say=lambda line: None)
    assert summary.evaluated == 8
    for number, state, rec, t in _records(summary.study):
        picks = picks_of(space, t.params)
        if state == "evaluated":
            written = (Path(rec["workdir"]) / "spec.yaml").read_text()
            writer = f"nasdsl search (trial {number} of the study digits)"
            assert written == variant_yaml(space, picks, cfg.spec, writer)
            assert rec["variant"] == nasdsl.compile_spec(Path(rec["workdir"]) / "spec.yaml").spec.sha256


#: what cannot be cut where it looks: a complex key (over 128 characters), a key starting with a dash,
#: multi-line and folded strings, a list and an empty mapping at the top, a sequence written without indent
TRICKY = f"""\
nasdsl: 1
name: Tricky
doc: {"a line long enough to be folded by the emitter at its width of one hundred and twenty characters " * 2}
input: {{shape: [3, 8, 8]}}
list: [1, [2, 3], {{a: 1}}]
empty: {{}}
notes:
  items:
  - {{a: 1, text: "{"y " * 50}"}}
  - {{a: 2}}
variables:
  width: {{choice: [8, 16]}}
model:
  {"a" * 130}: {{op: conv2d, out: {{choice: [4, 8]}}, kernel: 1}}
  "-dash": {{op: conv2d, out: {{choice: [4, 6]}}, kernel: 1}}
  stack:
    seq:
    - {{op: conv2d, out: {{choice: [8, 16, 32]}}, kernel: 1}}
    - {{op: relu, doc: "{"x " * 70}"}}
  multi: {{op: relu, doc: "two\\nlines"}}
  flat: flatten
  fc: {{op: linear, out: width}}
"""


def test_a_spec_written_from_kept_parts_is_spec_yamls_text_byte_for_byte(digits, tmp_path):
    """The spec texts joined from kept parts against ``spec_yaml`` writing each variant's document
    whole (what ``--pick`` writes): every digits variant (one writer for all, so later ones are made
    of kept parts), every variant of a spec with what cannot be cut where it looks (and of the same
    without its complex key, which can be), and a writer whose memory is emptied along the way."""
    tricky, cuttable = tmp_path / "tricky.yaml", tmp_path / "cuttable.yaml"
    tricky.write_text(TRICKY)
    cuttable.write_text("\n".join(line for line in TRICKY.splitlines() if "a" * 130 not in line) + "\n")
    # no spec (unknown top-level keys, names the parser refuses): its documents only, unparsed
    for space in (digits, spaces.load_space(tricky, check=False), spaces.load_space(cuttable, check=False)):
        texts, small = SpecTexts(space), SpecTexts(space, keep=5)
        for n, picks in enumerate(space.variants()):
            doc = space.document_of(picks)
            assert texts(picks, canonical_json(doc)) == spec_yaml(doc)
            if n < 40:
                assert small(picks, canonical_json(doc)) == spec_yaml(doc)
        assert len(texts.texts) > 0 and texts.entries


def test_identities_cut_from_the_spec_are_the_documents_own(digits, tmp_path):
    """The key's text joined from the cut spec against the one made through each variant's document:
    every digits variant (ranges, booleans, a condition), a space with list options, and a space with
    a choice between blocks, which is out of the cut's reach and identified through the document."""
    pairs = tmp_path / "pairs.yaml"
    pairs.write_text(
        DIGITS.read_text().replace(
            "pool: {op: max_pool, kernel: 2}", "pool: {op: max_pool, kernel: {choice: [[2, 2], [2, 1]]}}"
        )
    )
    blocks = tmp_path / "blocks.yaml"
    blocks.write_text(
        DIGITS.read_text().replace("pool: {op: max_pool, kernel: 2}", "pool: {choice: [max_pool, avg_pool]}")
    )
    for path, cut in ((DIGITS, True), (pairs, True), (blocks, False)):
        space = digits if path == DIGITS else spaces.load_space(path)
        identities = Identities(space)
        assert (identities.pieces is not None) == cut
        for picks in space.variants():
            assert identities(picks) == identify(space, picks)


def test_a_command_template_runs_without_a_shell_with_its_placeholders(tmp_path):
    """{spec}, {out}, {workdir}, {trial} are replaced inside words; a word with spaces stays one
    argument; a non-zero exit fails the trial with the end of its log."""
    script = tmp_path / "ev al.py"  # a space in the path: one argument
    script.write_text(
        "import json, sys\n"
        "spec, out, workdir, trial = sys.argv[1:5]\n"
        "text = open(spec).read()\n"
        "print('evaluating trial', trial)\n"
        "if 'second: true' in text: sys.exit(3)\n"
        "ok = int(workdir.endswith('trial-' + trial.zfill(5)))\n"
        "json.dump({'size': len(text), 'dir_ok': ok}, open(out, 'w'))\n"
    )
    command = f"{shlex.quote(sys.executable)} {shlex.quote(str(script))} {{spec}} {{out}} {{workdir}} {{trial}}"
    cfg = _config(tmp_path, goals=(goal("metric:size", "minimize"), goal("metric:dir_ok", "maximize")), trials=4,
                  evaluator=parse_evaluator(command), sampler="random")  # fmt: skip
    summary = run_search(cfg, say=lambda line: None)
    assert summary.evaluated and summary.failed
    for number, state, rec, t in _records(summary.study):
        if state in ("evaluated", "failed"):
            text = (Path(rec["workdir"]) / "spec.yaml").read_text()
            assert (state == "failed") == ("second: true" in text)
        if state == "evaluated":
            assert t.values == [len(text), 1.0]
        if state == "failed":
            assert rec["error"].startswith("the evaluator exited with status 3; the end of")
            assert rec["error"].endswith(f"log.txt:\nevaluating trial {number}")
    with pytest.raises(nasdsl.NasdslError, match=r"unknown placeholder \{spek\}"):
        parse_evaluator("python train.py {spek}")


# ---------------------------------------------------------------------------
# Storage and resumption


def test_a_killed_search_resumes_without_losing_or_redoing_a_finished_trial(tmp_path, calls):
    """The evaluator stops the search at its third call (as Ctrl-C would): two trials are stored, the
    third is left running. --resume tells it FAIL, asks its parameters again first, and runs until 5
    variants are evaluated; the first two keep their numbers and values and are not evaluated again."""
    cfg = _config(tmp_path, goals=(goal("metric:params", "maximize"),), trials=5, seed=2,
                  evaluator=parse_evaluator("search_helpers:interrupted_third"))  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        run_search(cfg, say=lambda line: None)
    study = load_study(cfg.storage_url, "digits")
    before = {t.number: (t.params, t.values) for t in study.trials if t.state == TrialState.COMPLETE}
    (killed,) = [t for t in study.trials if t.state == TrialState.RUNNING]
    assert len(before) == 2
    with pytest.raises(nasdsl.NasdslError, match="already holds the study 'digits'"):
        run_search(cfg, say=lambda line: None)
    summary = run_search(Config(**{**cfg.__dict__, "resume": True}), say=lambda line: None)
    assert summary.resumed == 2 and summary.evaluated == 3
    study = load_study(cfg.storage_url, "digits")
    after = {t.number: (t.params, t.values) for t in study.trials if status(t) == "evaluated"}
    assert {n: after[n] for n in before} == before and len(after) == 5
    assert status(study.trials[killed.number]) == "interrupted" and study.trials[killed.number].state == TrialState.FAIL
    redo = min(n for n in after if n > killed.number)
    assert after[redo][0] == killed.params
    assert len(os.listdir(calls)) == 3 + 3  # two kept, one interrupted, three more: none twice
    changed = Config(**{**cfg.__dict__, "resume": True, "goals": (goal("metric:params", "minimize"),)})
    with pytest.raises(nasdsl.NasdslError, match="the objectives changed since the study began"):
        run_search(changed, say=lambda line: None)
    other = Config(**{**cfg.__dict__, "resume": True, "overrides": ("width1={choice: [8, 16]}",)})
    with pytest.raises(nasdsl.NasdslError, match=r"; --set \(none\) then, width1=\{choice: \[8, 16\]\} now\)"):
        run_search(other, say=lambda line: None)


def _cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_latency_ms_is_an_objective_and_a_budget_with_this_machines_model(tmp_path, monkeypatch, capsys):
    """latency_ms is predicted before dispatch, as ``nasdsl space`` predicts it. A model whose one cost is
    1 ms per input value predicts 3 * size**2 for a 3-channel input of side ``size``: the values told are
    those, a variant over --max latency_ms=800 is rejected with its prediction, and with no model the
    search stops before it starts, exit 2."""
    from nasdsl.bench import latency
    from nasdsl.bench.hardware import machine

    monkeypatch.setenv(latency.CACHE_ENV, str(tmp_path / "cache"))
    spec = tmp_path / "sizes.yaml"
    spec.write_text(
        "nasdsl: 1\nname: Sizes\ninput: {shape: [3, size, size]}\nvariables: {size: {choice: [8, 16, 24]}}\n"
        "model:\n  conv: {op: conv2d, out: {choice: [4, 8]}, kernel: 3}\n  gap: global_avg_pool\n"
        "  flat: flatten\n  fc: {op: linear, out: 2}\n"
    )
    argv = ["search", spec, "--minimize", "latency_ms", "--max", "latency_ms=800", "--sampler", "random"]
    argv += ["--trials", 4, "--workdir", tmp_path / "w", "--storage", f"sqlite:///{tmp_path}/s.db"]
    code, _, err = _cli(capsys, *argv)
    assert code == 2 and "run 'nasdsl bench SPEC --calibrate' first" in err and "Traceback" not in err
    assert not (tmp_path / "s.db").exists()
    coefficients = dict.fromkeys(latency.columns(), 0.0) | {"model_input": 1.0}
    version = latency.engine_version("onnxruntime")
    latency.save(latency.LatencyModel("onnxruntime", version, machine().key(), 1, coefficients))
    code, out, err = _cli(capsys, *argv)
    assert code == 0, err
    study = load_study(f"sqlite:///{tmp_path}/s.db", "Sizes")
    told = {}
    for _, state, rec, t in _records(study):
        size = t.params["size"]
        if state == "evaluated":
            told[size] = t.values[0]
            assert rec["figures"]["latency_ms"] == 3 * size * size
        elif state == "rejected":
            assert size == 24 and rec["reason"] == "latency_ms 1,728 > --max 800"
    assert told == {8: 192.0, 16: 768.0}  # the four variants under the budget, two of each size


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--minimize", "flops"],
            "error: --objective: expected an objective of params, macs, depth, peak, latency_ms, synflow, naswot, "
            "metric:NAME, "
            "got 'flops'",
        ),
        (
            ["--objective", "metric:top1"],
            "error: --objective: metric:top1: say whether to maximise or minimise it (--maximize metric:top1 or "
            "--minimize metric:top1)",
        ),
        (
            ["--maximize", "metric:top1"],
            "error: --evaluate: metric:top1 is read from an evaluator's metrics: give --evaluate",
        ),
        (
            ["--maximize", "metric:top1", "--evaluate", "python t.py {spec}", "--warm-start", "w.safetensors"],
            "error: --warm-start: the --evaluate command does not use {weights}, the file the weights are written to",
        ),
        (
            ["--maximize", "metric:top1", "--evaluate", "python t.py {spec} --weights {weights}"],
            "error: --evaluate: the command uses {weights}: give --warm-start WEIGHTS to make them",
        ),
        (
            ["--minimize", "macs", "--gpus-per-trial", "1"],
            "error: --gpus-per-trial: GPUs are given to trials by Ray: add --ray local (this machine) or --ray auto",
        ),
        (
            ["--minimize", "macs", "--maximize", "params", "--sampler", "cmaes"],
            "error: --sampler: cmaes takes one objective, the search has 2: try nsga2 or tpe",
        ),
        (
            ["--minimize", "macs", "--storage", "search.db"],
            "error: --storage: expected a database URL such as sqlite:///search.db or postgresql://host/db, "
            "got 'search.db'",
        ),
        (["--report"], "error: --storage: no search stored in"),
        (
            ["--report", "--minimize", "macs"],
            "error: --minimize/--maximize/--objective: sets how a search runs; --report reads a stored one: "
            "leave it out",
        ),
        (["--report", "--trials", "5"], "error: --trials: sets how a search runs; --report reads a stored one"),
        (["--pick", "best", "--max-macs", "1M"], "error: --max-macs: sets how a search runs; --pick reads a stored"),
        (["--pick", "best", "--workers", "2"], "error: --workers: sets how a search runs; --pick reads a stored"),
        (["--minimize", "macs", "--format", "json"], "error: --format: is --report's format; give --report"),
        (
            ["--minimize", "macs", "-o", "x.yaml"],
            "error: --output: -o names the file --pick writes; give --pick best or --pick ID",
        ),
        ([], "error: give at least one objective (--minimize macs, --maximize metric:accuracy, ...)"),
        (
            ["--minimize", "macs", "--ray", "auto"],
            "error: --ray: no trial runs anything (the objectives are figures of the spec, computed before "
            "dispatch): leave --ray out, or give --evaluate or a proxy objective",
        ),
        (["--minimize", "macs", "--workers", "2"], "error: --workers: no trial runs anything"),
        (
            ["--maximize", "metric:top1", "--evaluate", "no_such_module_here.train:evaluate"],
            "error: --evaluate: no_such_module_here.train:evaluate: no module 'no_such_module_here.train' here "
            "(installed, or from ",
        ),
        (
            ["--maximize", "metric:top1", "--evaluate", "no-such-program-here {spec} {out}"],
            "error: --evaluate: the command's program 'no-such-program-here' is not found on the PATH",
        ),
        (
            ["--maximize", "metric:top1", "--evaluate", "./train.sh {spec} {out}"],
            "error: --evaluate: the command's program './train.sh' is not found as a file from ",
        ),
        (
            ["--maximize", "metric:top1", "--evaluate", "mypackage.train:"],
            "error: --evaluate: expected module:function (a dotted module, a colon and a function's name) or a "
            "command, got 'mypackage.train:'",
        ),
    ],
)
def test_bad_searches_are_exit_2_with_the_reason_and_write_nothing(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    code, out, err = _cli(capsys, "search", DIGITS, *argv)
    assert code == 2 and err.startswith(message) and err.count("\n") == 1 and "Traceback" not in err, err
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("where", ["--workdir", "--storage"])
def test_a_file_where_the_search_needs_a_folder_is_exit_2(tmp_path, capsys, monkeypatch, where):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "taken").write_text("a file\n")
    given = "taken" if where == "--workdir" else "sqlite:///taken/study.db"
    code, _, err = _cli(capsys, "search", DIGITS, "--minimize", "macs", where, given)
    assert code == 2 and err.startswith(f"error: {where}: ") and "Traceback" not in err, err
    assert sorted(os.listdir(tmp_path)) == ["taken"]


def test_the_python_api_refuses_what_the_command_line_refuses(tmp_path):
    """The checks live in check_config, which the command line and run_search share."""
    with pytest.raises(nasdsl.NasdslError, match="--parent: goes with --warm-start"):
        run_search(_config(tmp_path, parent=str(DIGITS)), say=lambda line: None)
    with pytest.raises(nasdsl.NasdslError, match="--workers: expected at most 256 processes"):
        run_search(_config(tmp_path, workers=1000, goals=(goal("naswot", None),)), say=lambda line: None)
    assert not (tmp_path / "search").exists()


def test_without_optuna_the_search_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna raises ImportError
    code, _, err = _cli(capsys, "search", DIGITS, "--minimize", "macs")
    assert code == 2 and err == (
        "error: nasdsl search needs Optuna, an optional extra: pip install 'nasdsl[search]' (Optuna, Ray, "
        "scikit-learn)\n"
    )


def test_without_ray_a_ray_search_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "ray", None)
    code, _, err = _cli(capsys, "search", DIGITS, "--maximize", "naswot", "--ray", "local")
    assert (
        code == 2 and err == "error: --ray: Ray is not installed: pip install 'nasdsl[search]' (or pip install ray)\n"
    )
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("sampler", ["random", "tpe", "nsga2", "nsga3", "qmc", "gp"])
def test_every_sampler_searches_the_conditional_space(tmp_path, digits, sampler):
    """Each of Optuna's samplers, by name, proposes variants whose conditional choice is asked only where
    the spec makes it."""
    summary = run_search(_config(tmp_path, trials=4, sampler=sampler), say=lambda line: None)
    assert summary.evaluated == 4
    for t in summary.study.trials:
        assert ("width2" in t.params) == bool(t.params["second"])


# ---------------------------------------------------------------------------
# Zero-cost proxies


def _chain_weights(model) -> list[np.ndarray]:
    return [m.weight.detach().double().numpy() for m in model.modules() if type(m).__name__ == "Linear"]


def test_synflow_is_the_layer_count_times_the_flow_on_a_chain_of_linear_layers(tmp_path):
    """For linear layers without biases and positive weights, R = 1' |W3| |W2| |W1| 1 is linear in
    each layer's weights, so each layer's saliencies sum to R: SynFlow = 3 R (Tanaka et al. 2020)."""
    import torch

    from nasdsl.search import proxies

    (tmp_path / "chain.yaml").write_text(CHAIN)
    torch.manual_seed(0)
    model = nasdsl.build_model(tmp_path / "chain.yaml")
    w1, w2, w3 = (np.abs(w) for w in _chain_weights(model))
    flow = float(np.ones(3) @ w3 @ w2 @ w1 @ np.ones(6))
    assert proxies.synflow(model, proxies.batch((6, 1, 1), 4, 0)) == pytest.approx(3 * flow, rel=1e-12)


def test_naswot_is_the_log_determinant_of_the_rectifiers_agreement_kernel(tmp_path):
    """K[i, j] counts the rectified units on which inputs i and j agree (Mellor et al. 2021), here
    computed with numpy from the chain's weights."""
    import torch

    from nasdsl.search import proxies

    (tmp_path / "chain.yaml").write_text(CHAIN)
    torch.manual_seed(0)
    model = nasdsl.build_model(tmp_path / "chain.yaml")
    w1, w2, _ = _chain_weights(model)
    x = proxies.batch((6, 1, 1), 10, 7)
    flat = x.double().numpy().reshape(10, 6)
    h1 = flat @ w1.T
    h2 = np.maximum(h1, 0) @ w2.T
    kernel = np.zeros((10, 10))
    for pre in (h1, h2):
        c = (pre > 0).astype(float)
        kernel += c @ c.T + (1 - c) @ (1 - c).T
    sign, logdet = np.linalg.slogdet(kernel)
    assert sign > 0 and proxies.naswot(model, x) == pytest.approx(logdet, rel=1e-9)
    # the units with a kink at 0 code alike (a model of LeakyReLU, PReLU or ELU alone had no score)
    for op in ("leaky_relu", "prelu", "elu"):
        (tmp_path / f"{op}.yaml").write_text(
            CHAIN.replace("relu1: relu", f"relu1: {op}").replace("relu2: relu", f"relu2: {op}")
        )
        torch.manual_seed(0)
        other = nasdsl.build_model(tmp_path / f"{op}.yaml")
        w1, w2, _ = _chain_weights(other)
        h1 = flat @ w1.T
        act = {"leaky_relu": lambda v: np.where(v > 0, v, 0.01 * v), "prelu": lambda v: np.where(v > 0, v, 0.25 * v),
               "elu": lambda v: np.where(v > 0, v, np.expm1(np.minimum(v, 0)))}[op]  # fmt: skip
        h2 = act(h1) @ w2.T
        kernel = sum((c := (pre > 0).astype(float)) @ c.T + (1 - c) @ (1 - c).T for pre in (h1, h2))
        assert proxies.naswot(other, x) == pytest.approx(np.linalg.slogdet(kernel)[1], rel=1e-9)


def test_proxy_objectives_are_computed_in_the_trial_on_the_generated_model(tmp_path):
    from nasdsl.search import proxies

    cfg = _config(tmp_path, goals=(goal("naswot", None), goal("synflow", None)), trials=2, proxy_batch=8)
    summary = run_search(cfg, say=lambda line: None)
    assert [d.name for d in summary.study.directions] == ["MAXIMIZE", "MAXIMIZE"]
    import torch

    for _, state, rec, t in _records(summary.study):
        if state == "evaluated":
            torch.manual_seed(0)
            model = nasdsl.build_model(Path(rec["workdir"]) / "spec.yaml")
            assert t.values[0] == proxies.naswot(model, proxies.batch((1, 8, 8), 8, 0))


# ---------------------------------------------------------------------------
# Ray


def test_a_small_search_runs_end_to_end_on_a_local_ray_instance(tmp_path):
    """Ray with 2 CPUs: trials are Ray tasks (two in flight), a command evaluator writes its metrics,
    and asking for GPUs the cluster lacks is a clear error."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        script = "import json, sys; json.dump({'size': len(open(sys.argv[1]).read())}, open(sys.argv[2], 'w'))"
        braced = shlex.quote(script).replace("{", "{{").replace("}", "}}")  # braces of the template's own
        command = f"{shlex.quote(sys.executable)} -c {braced} {{spec}} {{out}}"
        cfg = _config(tmp_path, goals=(goal("metric:size", "minimize"), goal("macs", "minimize")), trials=4,
                      evaluator=parse_evaluator(command), ray="auto", workers=None)  # fmt: skip
        summary = run_search(cfg, say=lambda line: None)
        assert summary.slots == 2 and summary.evaluated == 4
        for _, state, rec, t in _records(summary.study):
            if state == "evaluated":
                spec = Path(rec["workdir"]) / "spec.yaml"
                assert t.values == [len(spec.read_text()), _totals(spec)["macs"]]
        gpus = Config(**{**cfg.__dict__, "gpus_per_trial": 1, "study_name": "gpus"})
        with pytest.raises(nasdsl.NasdslError, match="--gpus-per-trial: 1 asked, the Ray cluster has 0 GPUs"):
            run_search(gpus, say=lambda line: None)
        assert "gpus" not in [s.study_name for s in optuna.get_all_study_summaries(cfg.storage_url)]
    finally:
        ray.shutdown()


# ---------------------------------------------------------------------------
# The guide


def _fenced(text: str) -> list[tuple[str, str]]:
    return [(m[1].strip(), m[2]) for m in re.finditer(r"```([^\n]*)\n(.*?)```", text, flags=re.S)]


def test_the_digits_example_runs_its_studies_each_in_a_folder_of_its_own(tmp_path, monkeypatch, capsys):
    """examples/search_digits.py end to end, small: a TPE study and the random baseline in one
    --workdir, each in its own folder (every study numbers its trials from 0: in one folder the
    second study was refused)."""
    import importlib.util

    monkeypatch.setenv("DIGITS_EPOCHS", "1")
    loaded = importlib.util.spec_from_file_location("search_digits_example", ROOT / "examples" / "search_digits.py")
    example = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(example)
    argv = ["--trials", "2", "--random", "1", "--workers", "0", "--no-ray", "--epochs", "1"]
    assert example.main([*argv, "--workdir", str(tmp_path / "digits")]) == 0
    assert "best accuracy found by TPE" in capsys.readouterr().out
    for study in ("tpe", "random"):
        assert (tmp_path / "digits" / study / "trial-00000" / "spec.yaml").exists()
        assert (tmp_path / "digits" / study / "study.txt").read_text() == study


def test_the_search_guide_runs(tmp_path, monkeypatch, capsys):
    """Every `sh` command of docs/search.md runs, in order, in a copy of the layout it assumes (the
    space of docs/design-space.md at the root, specs/, examples/); each `text` block right after one
    shows lines its commands printed; the `bash` blocks' nasdsl lines parse with nasdsl's own options,
    objectives and evaluators; what the guide says of its runs holds."""
    guide = (ROOT / "docs" / "search.md").read_text()
    (space,) = [
        b for i, b in _fenced((ROOT / "docs" / "design-space.md").read_text()) if i == "yaml title=googlenet_space.yaml"
    ]
    for sub in ("specs", "examples"):
        (tmp_path / sub).mkdir()
    (tmp_path / "googlenet_space.yaml").write_text(space)
    (tmp_path / "specs" / "googlenet.yaml").write_text((ROOT / "specs" / "googlenet.yaml").read_text())
    for name in ("digits_space.yaml", "search_digits.py"):
        (tmp_path / "examples" / name).write_text((ROOT / "examples" / name).read_text())
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # (examples.search_digits, from the folder of the search)
    monkeypatch.setenv("DIGITS_EPOCHS", "1")  # the example's evaluator trains one epoch here, not two
    ran = shown = checked = 0
    last = None
    outputs: dict[str, str] = {}
    for info, body in _fenced(guide):
        if info == "python":
            exec(compile(body, "docs/search.md", "exec"), {})  # the project's own guide
            ran += 1
        elif info == "sh":
            last = ""
            for line in body.splitlines():
                line = line.split("  #", 1)[0].strip()
                if line.startswith("nasdsl "):
                    code = main(shlex.split(line)[1:])
                    out, err = capsys.readouterr()
                    assert code == 0, (line, out, err)
                    last += out
                    outputs[line] = out
                    ran += 1
            continue
        elif info == "text" and last is not None:
            printed = last.splitlines()
            for line in body.splitlines():
                assert line in printed, f"the guide shows a line nasdsl does not print:\n{line}"
                shown += 1
        elif info == "bash":
            for line in body.splitlines():
                if line.strip().startswith("nasdsl search "):
                    args = parser().parse_args(shlex.split(line.strip())[1:])
                    assert args.spec in ("googlenet_space.yaml",) and args.aims
                    if args.evaluate:
                        parse_evaluator(args.evaluate)
                    for aim, direction in args.aims:
                        goal(aim, direction)
                    checked += 1
        last = None
    assert ran >= 9 and shown >= 15 and checked >= 2
    # the trial folders of the warm start hold what the guide lists
    study = load_study(f"sqlite:///{tmp_path}/search-warm/study.db", "warm")  # its own folder: search-STUDY
    for t in study.trials:
        if status(t) == "evaluated":
            folder = Path(t.user_attrs[ATTR]["workdir"])
            assert {p.name for p in folder.iterdir()} == {
                "spec.yaml",
                "init.safetensors",
                "transfer.json",
                "log.txt",
                "trial.json",
            }
    _check_the_guides_googlenet_search(guide, outputs, capsys)


def _front(trials) -> set[int]:
    """The numbers of the trials no other beats in macs (smaller) and params (larger), by hand."""
    points = {t.number: (t.values[0], -t.values[1]) for t in trials}
    beaten = {
        n
        for n, (m, p) in points.items()
        if any(m2 <= m and p2 <= p and (m2, p2) != (m, p) for m2, p2 in points.values())
    }
    return set(points) - beaten


def _check_the_guides_googlenet_search(guide: str, outputs: dict[str, str], capsys) -> None:
    """The GoogLeNet search of the guide, read back: its first run's trials table and Pareto front, the
    variant --pick wrote, --pick best with two objectives, the JSON report, and the guide's count of the
    exact front it found."""
    study = load_study("sqlite:///search-GoogLeNetSpace/study.db", "GoogLeNetSpace")
    first = next(line for line in outputs if line.endswith("--trials 25 --seed 1"))
    report = outputs["nasdsl search googlenet_space.yaml --report"]
    rows = [int(line.split()[0]) for line in report.splitlines() if re.match(r"\s*\d+  ", line)]
    first_run = [t for t in study.trials if t.number < len(rows)]
    assert rows == [t.number for t in first_run] and rows == list(range(len(rows)))
    evaluated = [t for t in first_run if status(t) == "evaluated"]
    shown = re.search(r"Pareto front \(minimize macs, maximize params\): ([\d, ]+)", outputs[first])
    assert {int(n) for n in shown[1].split(", ")} == _front(evaluated) and len(evaluated) == 25
    net = nasdsl.compile_spec("variant.yaml")
    assert [net.summary()["totals"][k] for k in ("macs", "params")] == study.trials[84].values
    assert net.spec.sha256 == study.trials[84].user_attrs[ATTR]["variant"]
    assert main(["search", "googlenet_space.yaml", "--pick", "best"]) == 2
    assert "the search has 2 objectives, so no single best: its Pareto front is trials" in capsys.readouterr().err
    assert main(["search", "googlenet_space.yaml", "--report", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    evaluated = [t for t in study.trials if status(t) == "evaluated"]
    assert set(data["front"]) == _front(evaluated) and len(data["trials"]) == len(study.trials)
    # "After 35 evaluations the search has found 12 of those 18 variants"
    code = main(["space", "googlenet_space.yaml", "--set", "aux_logits=false", "--max-macs", "1G", "--valid-only",
                 "--pareto", "macs,params:max", "--format", "json"])  # fmt: skip
    exact = {(v["macs"], v["params"]) for v in json.loads(capsys.readouterr().out)["variants"]}
    found = {tuple(t.values) for t in evaluated} & exact
    assert (code, len(evaluated), len(found), len(exact)) == (0, 35, 12, 18)
    assert "After 35 evaluations the search has found 12 of those 18 variants" in guide.replace("\n", " ")


def test_pick_best_of_several_objectives_is_the_front_where_it_is_one_trial():
    """Minimising two figures: a trial as good as every other in both, and better in one, is the
    best; two trials that each win one objective leave no single best (the front is listed)."""
    from optuna.distributions import IntDistribution
    from optuna.trial import create_trial

    def study_of(values: list[tuple[int, int]]):
        study = optuna.create_study(directions=["minimize", "minimize"])
        study.set_user_attr(ATTR, {"objectives": [["macs", "minimize"], ["params", "minimize"]]})
        for n, v in enumerate(values):
            rec = {"variant": f"v{n}", "status": "evaluated"}
            study.add_trial(
                create_trial(
                    values=list(v), params={"w": n}, distributions={"w": IntDistribution(0, 9)}, user_attrs={ATTR: rec}
                )
            )
        return study

    assert chosen(study_of([(5, 7), (3, 4), (3, 6), (9, 1)][:3]), "best").number == 1
    with pytest.raises(SearchError, match=r"no single best: its Pareto front is trials 1, 3; pick one by number"):
        chosen(study_of([(5, 7), (3, 4), (3, 6), (9, 1)]), "best")
