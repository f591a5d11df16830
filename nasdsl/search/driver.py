"""The search loop: Optuna asks, nasdsl checks, a worker runs, Optuna is told.

For each trial the driver asks the study (:class:`nasdsl.search.params.Asker`:
the choices made define-by-run), and before anything is dispatched it decides,
from the spec alone, what the proposal is:

* **a variant already seen** (the same :func:`~nasdsl.search.identity.variant_key`):
  a duplicate. It is told the values of the first trial of that variant (or, while
  that trial still runs, when it finishes), with ``duplicate_of`` in its record; the
  variant is never evaluated twice, and a sampler that proposes it again learns
  what it would have learnt from running it.
* **no variant to run**: it breaks a constraint, does not compile (the compiler's
  error), or is over a budget (``--max-macs`` and the other budgets of ``nasdsl
  space``). It is told PRUNED with the reason in its record, and no evaluator
  runs. Optuna's TPE ranks pruned trials below every complete one, so it learns
  to propose elsewhere; NSGA-II and the random sampler ignore them, which is a
  re-ask. The alternative, re-asking without telling, would hide the rejection
  from every sampler and from the record; telling FAIL would be ignored by TPE.
* **a new variant**: its ``figures`` objectives (multiply-adds, parameters, ...)
  are computed here; if nothing else is asked the trial is told at once,
  otherwise it is dispatched (:mod:`nasdsl.search.trial`) and told when its
  outcome comes back.

``trials`` counts the variants evaluated (the rejected and the duplicates are
told, but free). The search stops there, when every variant of the space has
been seen, or when the sampler has proposed nothing new ``patience`` times in a
row (:data:`MAX_STALE` unless told).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from nasdsl import document
from nasdsl.errors import NasdslError
from nasdsl.loader import Limits
from nasdsl.search import study as studies
from nasdsl.search.evaluators import Evaluator, check_evaluator
from nasdsl.search.executors import Executor, Inline, Pool, Ray
from nasdsl.search.identity import Identities
from nasdsl.search.objectives import EVALUATOR, FIGURES, LATENCY, MODEL, Goal, Variant, checked
from nasdsl.search.params import Asker, made_arguments
from nasdsl.search.specfile import SpecTexts
from nasdsl.search.study import SearchError, record
from nasdsl.search.trial import Outcome, Task
from nasdsl.space import load_space
from nasdsl.variants import MAX_PARAMS
from nasdsl.variants import Evaluator as FigureEvaluator

#: proposals in a row without a new variant after which a search stops
MAX_STALE = 1000
#: the largest seed Optuna's samplers take (numpy's RandomState: 32 bits)
MAX_SEED = 2**32 - 1
#: the file in a work folder naming the study whose trial folders it holds
OWNER = "study.txt"
#: the most processes of a local pool (--workers without --ray): each is started at once, so that
#: --workers 1000000 would try to start a million
MAX_LOCAL_WORKERS = 256


@dataclass(frozen=True)
class Budget:
    """A bound on a figure: ``column`` at most (``max``) or at least (``min``) ``value``."""

    column: str
    way: str
    value: float
    option: str = ""

    def breaks(self, figures) -> str | None:
        got = getattr(figures, self.column)
        if (got > self.value) if self.way == "max" else (got < self.value):
            sign = ">" if self.way == "max" else "<"
            return f"{self.column} {fmt(got)} {sign} {self.option or '--' + self.way} {fmt(self.value)}"
        return None


@dataclass(frozen=True)
class Config:
    """A search, as the command line or the Python API describes it (docs/search.md)."""

    spec: str
    goals: tuple[Goal, ...]
    trials: int = 20
    overrides: tuple[str, ...] = ()
    sampler: str = "tpe"
    seed: int = 0
    budgets: tuple[Budget, ...] = ()
    evaluator: Evaluator | None = None
    workdir: str = "search"
    #: an Optuna storage URL (default: a SQLite file in ``workdir``), or an Optuna storage object
    storage: object = None
    study_name: str = "search"
    resume: bool = False
    warm_start: str | None = None
    parent: str | None = None
    parent_overrides: tuple[str, ...] = ()
    #: trials in flight: 0 runs them in the driver's process; None: the cores (or the Ray cluster) hold
    workers: int | None = None
    ray: str | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    proxy_batch: int = 16
    trial_timeout: float | None = None
    #: proposals in a row without a new variant after which the search stops
    patience: int = MAX_STALE
    max_nodes: int | None = None
    max_params: int = MAX_PARAMS
    limits: Limits | None = None

    @property
    def storage_url(self):
        """The storage's URL (or the storage object the Python API was given)."""
        return self.storage if self.storage is not None else studies.default_storage(self.workdir)

    @property
    def dispatches(self) -> bool:
        """Whether trials run anything: an evaluator, or an objective computed on the model."""
        return self.evaluator is not None or any(g.where != FIGURES for g in self.goals)


@dataclass
class Summary:
    """What one run of the search did."""

    study: object
    evaluated: int = 0
    failed: int = 0
    duplicates: int = 0
    rejected: int = 0
    resumed: int = 0
    seconds: float = 0.0
    stopped: str = ""
    slots: int = 0


@dataclass
class _State:
    """The variants the study has seen: by key, the first trial and its values (None when it failed);
    the rejected ones with the reason; the ones in flight with the duplicates waiting for them."""

    done: dict[str, tuple[int, list[float] | None]] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)
    flying: dict[int, tuple] = field(default_factory=dict)
    waiting: dict[str, list] = field(default_factory=dict)
    #: the identities of the picks proposed so far (a sampler that proposes them again costs a lookup)
    known: dict[tuple[int, ...], str] = field(default_factory=dict)


def check_config(cfg: Config) -> None:
    """Refuse what cannot work before anything starts (raises :class:`SearchError`)."""
    if not cfg.goals:
        raise SearchError("give at least one objective (--minimize macs, --maximize metric:accuracy, ...)")
    names = [g.name for g in cfg.goals]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise SearchError(f"the objective {twice[0]} is given twice", path="--objective")
    metrics = [g.name for g in cfg.goals if g.where == EVALUATOR]
    if metrics and cfg.evaluator is None:
        raise SearchError(f"{metrics[0]} is read from an evaluator's metrics: give --evaluate", path="--evaluate")
    if cfg.warm_start is not None:
        if cfg.evaluator is None:
            raise SearchError(
                "the weights are carried over for an evaluator to train: give --evaluate", path="--warm-start"
            )
        if cfg.evaluator.argv and "weights" not in cfg.evaluator.uses:
            raise SearchError(
                "the --evaluate command does not use {weights}, the file the weights are written to",
                path="--warm-start",
            )
    if cfg.warm_start is None and cfg.evaluator is not None and "weights" in cfg.evaluator.uses:
        raise SearchError("the command uses {weights}: give --warm-start WEIGHTS to make them", path="--evaluate")
    if cfg.gpus_per_trial and cfg.ray is None:
        raise SearchError(
            "GPUs are given to trials by Ray: add --ray local (this machine) or --ray auto",
            path="--gpus-per-trial",
        )
    if cfg.workers == 0 and cfg.ray is not None:
        raise SearchError("0 runs trials in this process, --ray on a cluster: give one or the other", path="--workers")
    if cfg.ray is None and cfg.workers is not None and cfg.workers > MAX_LOCAL_WORKERS:
        raise SearchError(
            f"expected at most {MAX_LOCAL_WORKERS} processes in a local pool, got {cfg.workers:,} "
            "(a Ray cluster, --ray, takes more trials at once)",
            path="--workers",
        )
    if (cfg.parent is not None or cfg.parent_overrides) and cfg.warm_start is None:
        option = "--parent" if cfg.parent is not None else "--parent-set"
        raise SearchError(
            f"goes with --warm-start (the weights it describes): give --warm-start, or leave {option} out", path=option
        )
    if not cfg.dispatches:
        # every objective is computed from the spec here: a place to run trials would go unused
        # (--workers 0, trials in this process, is what happens anyway)
        for given, option in ((cfg.ray, "--ray"), (cfg.workers or None, "--workers")):
            if given is not None:
                raise SearchError(
                    "no trial runs anything (the objectives are figures of the spec, computed before "
                    f"dispatch): leave {option} out, or give --evaluate or a proxy objective",
                    path=option,
                )
    if os.path.exists(cfg.workdir) and not os.path.isdir(cfg.workdir):
        raise SearchError(f"{cfg.workdir} is a file; the trials' folders go in a folder", path="--workdir")
    if cfg.evaluator is not None and cfg.ray is None:
        # on this machine what the evaluator runs is found now, not after every trial has failed
        # (on a Ray cluster the workers' own environment decides)
        check_evaluator(cfg.evaluator, os.getcwd())
    if cfg.trials < 1:
        raise SearchError(f"expected --trials of at least 1, got {cfg.trials}", path="--trials")
    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int) or not 0 <= cfg.seed <= MAX_SEED:
        raise SearchError(f"expected --seed from 0 to {MAX_SEED} (Optuna's samplers), got {cfg.seed!r}", path="--seed")
    studies.make_sampler(cfg.sampler, cfg.seed, len(cfg.goals), 1)  # a sampler that cannot take the search


def run_search(cfg: Config, *, say: Callable[[str], None] = print) -> Summary:
    """Run (or resume) the search ``cfg`` describes; ``say`` gets a line per trial evaluated."""
    check_config(cfg)
    return _Search(cfg, say).run()


class _Search:
    """One run of a search: the space, the study, what it has seen, where trials run."""

    def __init__(self, cfg: Config, say: Callable[[str], None]):
        self.cfg, self.say = cfg, say
        self.started = time.perf_counter()
        self.space = load_space(cfg.spec, cfg.overrides, **({"limits": cfg.limits} if cfg.limits else {}))
        self.figures = FigureEvaluator(self.space, **_limits(cfg), latency=_latency_model(cfg))
        self.ask = Asker(self.space)
        self.identify = Identities(self.space)
        self.spec_texts = SpecTexts(self.space)
        identity = {
            "spec": cfg.spec,
            "set": list(cfg.overrides),
            "space": document.spec_hash(self.space.document),
            "objectives": [[g.name, g.direction] for g in cfg.goals],
        }
        self.parent = _parent(cfg) if cfg.warm_start is not None else None
        self.identity = identity
        self.state = _State()
        #: the duplicates and rejections counted where the last run of proposals without a new variant began
        self.streak = (0, 0)

    def run(self) -> Summary:
        cfg = self.cfg
        # where trials run comes first: the sampler is told how many run at once, and a cluster that
        # cannot be reached is an error before the storage holds anything
        executor = _executor(cfg) if cfg.dispatches else Inline()
        try:
            sampler = studies.make_sampler(cfg.sampler, cfg.seed, len(cfg.goals), executor.slots)
            directions = [g.direction for g in cfg.goals]
            if cfg.dispatches:
                _owned(cfg)
            self.study = studies.open_study(
                cfg.storage_url, cfg.study_name, directions, sampler, resume=cfg.resume, identity=self.identity
            )
            if cfg.dispatches:
                _claim(cfg)
            # before a resumed study's running trials are told FAIL: they may be another driver's, in this
            # folder (the lock) or anywhere the storage is shared (the lease)
            lock = _Running(cfg) if cfg.dispatches or cfg.storage is None else None
            lease = None
            try:
                lease = studies.Lease(self.study, cfg.storage_url, cfg.workdir)
                summary = self.summary = Summary(self.study, slots=executor.slots)
                if cfg.resume:
                    summary.resumed = self._restore()
                self._loop(executor)
            finally:
                if lease is not None:
                    lease.release()
                if lock is not None:
                    lock.release()
        finally:
            executor.close()
        return self._stopped()

    def _loop(self, executor: Executor) -> None:
        cfg, state, summary = self.cfg, self.state, self.summary
        total = self._total()
        stale = 0
        while True:
            while (
                len(state.flying) < executor.slots
                and len(state.done) + len(state.flying) < cfg.trials
                and stale < cfg.patience
                and (total is None or len(state.done) + len(state.rejected) + len(state.flying) < total)
            ):
                if stale == 0:  # where a run of proposals without a new variant may start
                    self.streak = (summary.duplicates, summary.rejected)
                stale = 0 if self._propose(executor) else stale + 1
            if not state.flying:
                return
            self._finish(executor.next_done())

    def _total(self) -> int | None:
        try:
            return self.space.count()
        except NasdslError:
            return None

    def _stopped(self) -> Summary:
        cfg, state, summary = self.cfg, self.state, self.summary
        total = self._total()
        if len(state.done) >= cfg.trials:
            n = len(state.done)
            failed = sum(values is None for _, values in state.done.values())
            summary.stopped = (
                f"{n:,} variant{'s' if n != 1 else ''} evaluated"
                if not failed
                else f"{n:,} variants run (--trials): {n - failed:,} evaluated, {failed:,} failed"
            )
        elif total is not None and len(state.done) + len(state.rejected) >= total:
            summary.stopped = f"every variant of the space ({total:,}) has been seen"
        else:
            duplicates, rejected = (summary.duplicates - self.streak[0], summary.rejected - self.streak[1])
            said = [
                f"{k:,} {what}{'s' if k != 1 else ''}"
                for k, what in ((duplicates, "duplicate"), (rejected, "rejected variant"))
                if k
            ]
            summary.stopped = (
                f"the last {cfg.patience:,} proposals were {' and '.join(said)}, none a new variant to evaluate "
                "(--patience)"
            )
        summary.seconds = time.perf_counter() - self.started
        return summary

    def _restore(self) -> int:
        """What a stored study has evaluated (or failed); trials left running by a killed search
        are told FAIL and their parameters asked again first. Returns the number of variants
        already evaluated."""
        from optuna.trial import TrialState

        study, state = self.study, self.state
        for t in study.get_trials(deepcopy=False):
            rec = record(t)
            status = rec.get("status")
            if t.state == TrialState.RUNNING:
                studies.tell(study, t.number, state=TrialState.FAIL)
                study.enqueue_trial(dict(t.params))
                continue
            key = rec.get("variant")
            if key is None:
                continue
            if status == "evaluated" and t.state == TrialState.COMPLETE:
                state.done.setdefault(key, (t.number, list(t.values)))
            elif status == "failed":
                state.done.setdefault(key, (t.number, None))
        # the rejected are checked again when proposed: the budgets may differ from the first run's
        return len(state.done)

    def _propose(self, executor: Executor) -> bool:
        """Ask for one trial and deal with it; True when it is a new variant."""
        cfg, space, study, state, summary = self.cfg, self.space, self.study, self.state, self.summary
        trial = study.ask()
        picks = self.ask(trial)
        key = state.known.get(picks)
        identified = None
        if key is None:
            identified = self.identify(picks)
            key = state.known[picks] = identified.key
        if key in state.done:
            first, values = state.done[key]
            self._tell(trial, values, {"variant": key, "status": "duplicate", "duplicate_of": first})
            summary.duplicates += 1
            return False
        if key in state.waiting:
            state.waiting[key].append(trial)
            summary.duplicates += 1
            return False
        if key in state.rejected:
            self._reject(trial, key, state.rejected[key], None)
            return False
        reason = space.why_not(picks)
        result = self.figures.evaluate(picks) if reason is None else None
        if result is not None and not result.valid:
            reason = "it does not compile: " + result.error.splitlines()[0]
        if reason is None:
            reason = next((r for r in (b.breaks(result.figures) for b in cfg.budgets) if r), None)
        if reason is not None:
            state.rejected[key] = reason
            self._reject(trial, key, reason, result.figures if result is not None else None)
            return False
        variant = Variant(space, picks, result.figures)
        fixed = {g.name: checked(g.name, g.objective.figure(variant)) for g in cfg.goals if g.where == FIGURES}
        rec = {"variant": key, "figures": _figure_record(result.figures)}
        if not cfg.dispatches:
            values = [fixed[g.name] for g in cfg.goals]
            self._tell(trial, values, {**rec, "status": "evaluated"})
            state.done[key] = (trial.number, values)
            summary.evaluated += 1
            self.say(self._line(trial.number, picks, values, None))
            return True
        from nasdsl.space import variant_header

        if identified is None:  # picks seen before whose variant is in none of the tables above
            identified = self.identify(picks)
        workdir = os.path.abspath(os.path.join(cfg.workdir, f"trial-{trial.number:05d}"))
        writer = f"nasdsl search (trial {trial.number} of the study {cfg.study_name})"
        task = Task(
            number=trial.number,
            workdir=workdir,
            spec=variant_header(space, picks, cfg.spec, writer) + self.spec_texts(picks, identified.document_json),
            model_objectives=tuple(g.name for g in cfg.goals if g.where == MODEL),
            evaluator=cfg.evaluator,
            parent=self.parent,
            cwd=os.getcwd(),
            timeout=cfg.trial_timeout,
            proxy_batch=cfg.proxy_batch,
            seed=cfg.seed,
            # a pool's workers take --cpus-per-trial threads; Ray sets them itself, and a trial run in
            # this process (--workers 0) leaves the process as it is
            threads=max(1, int(cfg.cpus_per_trial)) if cfg.ray is None and cfg.workers != 0 else None,
        )
        state.flying[trial.number] = (trial, key, fixed, {**rec, "workdir": workdir}, picks)
        state.waiting[key] = []
        executor.submit(task)
        return True

    def _tell(self, trial, values: list[float] | None, rec: dict) -> None:
        """Record and tell a trial: ``values``, or FAIL for None."""
        from optuna.trial import TrialState

        with studies.ours(trial.number):
            trial.set_user_attr(studies.ATTR, rec)
            if values is None:
                studies.tell(self.study, trial, state=TrialState.FAIL)
            else:
                studies.tell(self.study, trial, values)

    def _reject(self, trial, key: str, reason: str, figures) -> None:
        from optuna.trial import TrialState

        rec = {"variant": key, "status": "rejected", "reason": reason}
        if figures is not None:
            rec["figures"] = _figure_record(figures)
        with studies.ours(trial.number):
            trial.set_user_attr(studies.ATTR, rec)
            studies.tell(self.study, trial, state=TrialState.PRUNED)
        self.summary.rejected += 1

    def _finish(self, outcome: Outcome) -> None:
        """Tell the study a dispatched trial's outcome, and its waiting duplicates."""
        cfg, state, summary = self.cfg, self.state, self.summary
        trial, key, fixed, rec, picks = state.flying.pop(outcome.number)
        error = outcome.error
        values = None
        if error is None:
            try:
                values = [_value(g, fixed, outcome) for g in cfg.goals]
            except NasdslError as e:
                error = e.format().removeprefix("error: ")
        rec |= {"metrics": outcome.metrics, "seconds": round(outcome.seconds, 3)}
        if outcome.values:
            rec["proxies"] = outcome.values
        if error is None:
            self._tell(trial, values, {**rec, "status": "evaluated"})
            summary.evaluated += 1
        else:
            self._tell(trial, None, {**rec, "status": "failed", "error": error})
            summary.failed += 1
        state.done[key] = (trial.number, values)
        for dup in state.waiting.pop(key, []):
            self._tell(dup, values, {"variant": key, "status": "duplicate", "duplicate_of": trial.number})
        self.say(self._line(trial.number, picks, values, error, outcome.seconds))

    def _line(self, number: int, picks, values, error, seconds: float | None = None) -> str:
        """A trial's line: the choices it made (those whose condition holds) and its values."""
        made = " ".join(made_arguments(self.space, picks)) or "the default variant"
        took = f" ({seconds:.1f} s)" if seconds is not None else ""
        if error is not None:
            return f"trial {number}: {made}: failed{took}: {error.splitlines()[0]}"
        shown = ", ".join(f"{g.name} {fmt(v)}" for g, v in zip(self.cfg.goals, values, strict=True))
        return f"trial {number}: {made}: {shown}{took}"


def _latency_model(cfg: Config):
    """This machine's latency model where an objective or a budget names ``latency_ms``, else None
    (raises :class:`nasdsl.bench.latency.LatencyError`, exit 2, when there is none)."""
    if not any(name == LATENCY for name in (*(g.name for g in cfg.goals), *(b.column for b in cfg.budgets))):
        return None
    from nasdsl.bench.latency import require

    return require()


def _limits(cfg: Config) -> dict:
    out: dict = {"max_params": cfg.max_params}
    if cfg.max_nodes is not None:
        out["max_nodes"] = cfg.max_nodes
    return out


def _owned(cfg: Config) -> None:
    """Refuse a work folder whose trial folders are another study's: trials are numbered from 0 in
    every study, and this one's would be written over them."""
    try:
        with open(os.path.join(cfg.workdir, OWNER), encoding="utf-8") as f:
            owner: str | None = f.read()
    except FileNotFoundError:
        owner = None
    except (OSError, UnicodeDecodeError) as e:
        raise SearchError(f"cannot read {os.path.join(cfg.workdir, OWNER)}: {e}", path="--workdir") from None
    if owner is None:
        try:
            held = any(n.startswith("trial-") for n in os.listdir(cfg.workdir))
        except FileNotFoundError:
            held = False
        if not held or cfg.resume:  # a folder of a search made before the folders were claimed
            return
        owner = "of another search"
    if owner != cfg.study_name:
        whose = owner if owner.startswith("of ") else f"of the study {owner!r}"
        raise SearchError(
            f"{cfg.workdir} holds the trial folders {whose}, which this study's trials would write over: give "
            "it a folder of its own (--workdir)",
            path="--workdir",
        )


class _Running:
    """This driver's hold on its study, in the work folder: a second search of the same study there
    (a ``--resume`` in another terminal would tell the first one's running trials FAIL) is refused.
    An advisory lock on a file (POSIX ``flock``; none where the system has no ``fcntl``), let go
    when the search ends, however it ends."""

    def __init__(self, cfg: Config):
        self.path = os.path.join(cfg.workdir, f".running-{hashlib.sha256(cfg.study_name.encode()).hexdigest()[:16]}")
        self.fd: int | None = None
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            return  # a folder this driver cannot write in: no hold to take, nor to refuse
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            held = os.read(fd, 200).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise SearchError(
                f"the study {cfg.study_name!r} is being run by another nasdsl search ({held}) in {cfg.workdir}: "
                "wait for it to end (resuming beside it would fail its running trials)",
                path="--study-name",
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}".encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(self.fd)  # closing lets the lock go
        self.fd = None


def _claim(cfg: Config) -> None:
    """Name this study as the one whose trial folders ``cfg.workdir`` holds."""
    try:
        os.makedirs(cfg.workdir, exist_ok=True)
        with open(os.path.join(cfg.workdir, OWNER), "w", encoding="utf-8") as f:
            f.write(cfg.study_name)
    except OSError as e:
        raise SearchError(f"cannot write in {cfg.workdir}: {e.strerror or e}", path="--workdir") from None


def _local_workers(cfg: Config) -> int:
    return max(1, int((os.cpu_count() or 1) // max(cfg.cpus_per_trial, 1)))


def _executor(cfg: Config) -> Executor:
    if cfg.ray is not None:
        return Ray(cfg.ray, cfg.cpus_per_trial, cfg.gpus_per_trial, cfg.workers)
    if cfg.workers == 0:
        return Inline()
    workers = cfg.workers if cfg.workers is not None else _local_workers(cfg)
    return Pool(workers, max(1, int(cfg.cpus_per_trial)))


def _parent(cfg: Config) -> tuple[str, tuple[str, ...], str]:
    """The warm start's parent (spec, --set values, weights), checked once here: the weights
    must fit it."""
    from nasdsl.api import compile_spec
    from nasdsl.weights import check_weights, load_weights

    spec = cfg.parent or cfg.spec
    overrides = cfg.parent_overrides if cfg.parent else cfg.overrides
    net = compile_spec(spec, overrides)
    try:
        check_weights(net.graph, net.graph, load_weights(cfg.warm_start))
    except NasdslError as e:
        raise SearchError(f"{cfg.warm_start}: {e.message}", path="--warm-start") from None
    return spec, tuple(overrides), os.path.abspath(cfg.warm_start)


def _value(goal: Goal, fixed: dict, outcome: Outcome) -> float:
    if goal.where == FIGURES:
        return fixed[goal.name]
    if goal.where == MODEL:
        return checked(goal.name, outcome.values[goal.name])
    if goal.metric not in outcome.metrics:
        wrote = ", ".join(sorted(outcome.metrics)) or "nothing"
        raise SearchError(f"the evaluator's metrics have no {goal.metric!r} (it gave: {wrote})")
    return checked(goal.name, outcome.metrics[goal.metric])


def _figure_record(f) -> dict:
    out = {"params": f.params, "macs": f.macs, "depth": f.depth, "peak": f.peak}
    if f.latency_ms is not None:
        out[LATENCY] = round(f.latency_ms, 6)
    return out


def fmt(value: float) -> str:
    """An objective's value for people: integers with separators, others to 4 digits."""
    if math.isfinite(value) and value == int(value) and abs(value) >= 1000:
        return f"{int(value):,}"
    return f"{value:.4g}"


__all__ = [
    "MAX_LOCAL_WORKERS",
    "MAX_SEED",
    "MAX_STALE",
    "OWNER",
    "Budget",
    "Config",
    "Summary",
    "check_config",
    "fmt",
    "run_search",
]
