"""The Optuna side of a search: samplers by name, the storage, the study and its records.

Optuna owns sampling and storage. nasdsl names the samplers (:data:`SAMPLERS`,
each built as Optuna builds it by default, seeded), keeps one study per
search in an Optuna storage (a SQLite file in the search's folder unless
``--storage`` names another database), and writes one user attribute per
trial, ``nasdsl``, with what Optuna does not know:

``{"variant": KEY, "status": STATUS, "figures": {...}, "metrics": {...},
"seconds": S, "workdir": DIR, "error": TEXT, "reason": TEXT, "duplicate_of": N}``

(the keys that apply). STATUS is ``evaluated`` (complete), ``failed`` (the
trial's evaluator failed: Optuna's FAIL), ``rejected`` (invalid, over a
budget or breaking a constraint: told PRUNED, never run), ``duplicate`` (the
same variant as trial N: told N's values, never run again), ``dispatched``
(running) or ``interrupted`` (running when its search was killed: told FAIL
on ``--resume``, and its parameters asked again). The study's own attribute
``nasdsl`` holds the spec, its ``--set`` values, the hash of its space's
document and the objectives, so that a resumed search is the same search.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from nasdsl.errors import NasdslError, printable

ATTR = "nasdsl"
#: the SQLite file in the search's folder that holds the study by default
DATABASE = "study.db"


class SearchError(NasdslError):
    """A search that cannot run as asked (exit 2)."""


def require_optuna():
    """Optuna, or a clear error naming the extra that installs it."""
    try:
        import optuna
    except ImportError:
        raise SearchError(
            "nasdsl search needs Optuna, an optional extra: pip install 'nasdsl[search]' (Optuna, Ray, scikit-learn)"
        ) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


@dataclass(frozen=True)
class Sampler:
    """A sampler by name: how to build it (seed, number of objectives, trials in flight) and
    how many objectives it takes."""

    name: str
    about: str
    make: Callable
    multi: bool = True


def _tpe(optuna, seed, parallel):
    # with trials in flight, the constant liar keeps TPE from proposing the running trials again
    return optuna.samplers.TPESampler(seed=seed, constant_liar=parallel > 1)


def _cmaes(optuna, seed, parallel):
    try:
        import cmaes  # noqa: F401 - Optuna's CMA-ES sampler needs it
    except ImportError:
        raise SearchError("cmaes needs the cmaes package: pip install cmaes", path="--sampler") from None
    return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)


def _plain(cls: str, **options):
    """A sampler built as Optuna builds it by default, seeded."""

    def make(optuna, seed, parallel):
        import warnings

        with warnings.catch_warnings():  # Optuna marks some samplers experimental: chosen knowingly
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return getattr(optuna.samplers, cls)(seed=seed, **options)

    return make


SAMPLERS = {
    s.name: s
    for s in (
        Sampler("tpe", "Tree-structured Parzen Estimator (Optuna's default)", _tpe),
        Sampler("random", "independent uniform draws", _plain("RandomSampler")),
        Sampler("nsga2", "NSGA-II, a genetic algorithm for several objectives", _plain("NSGAIISampler")),
        Sampler("nsga3", "NSGA-III, for many objectives", _plain("NSGAIIISampler")),
        Sampler(
            "qmc",
            "quasi-Monte Carlo (Sobol) points; choices are drawn at random",
            _plain("QMCSampler", warn_independent_sampling=False),
        ),
        Sampler("gp", "Gaussian-process Bayesian optimisation", _plain("GPSampler")),
        Sampler("cmaes", "CMA-ES on the integer ranges; choices drawn at random", _cmaes, multi=False),
    )
}


#: Optuna's BruteForceSampler is left out: it ends a study by calling ``Study.stop()``, which works only
#: inside ``study.optimize``, not in an ask-and-tell loop; ``nasdsl space`` lists every variant instead.


def make_sampler(name: str, seed: int, objectives: int, parallel: int):
    """The sampler ``name`` for a search of ``objectives`` objectives with ``parallel`` trials in flight."""
    optuna = require_optuna()
    if name not in SAMPLERS:
        raise SearchError(f"expected a sampler of {', '.join(SAMPLERS)}, got {name!r}", path="--sampler")
    sampler = SAMPLERS[name]
    if objectives > 1 and not sampler.multi:
        raise SearchError(
            f"{name} takes one objective, the search has {objectives}: try nsga2 or tpe", path="--sampler"
        )
    return sampler.make(optuna, seed, parallel)


def default_storage(workdir: str) -> str:
    return "sqlite:///" + os.path.abspath(os.path.join(workdir, DATABASE))


def _storage(url, *, existing: bool):
    """Optuna's storage for ``url`` (an Optuna storage object is taken as it is); with
    ``existing``, a SQLite file that is missing is an error (instead of an empty database
    made by reading it)."""
    optuna = require_optuna()
    if not isinstance(url, str):
        return url
    if "://" not in url:
        raise SearchError(
            f"expected a database URL such as sqlite:///search.db or postgresql://host/db, got {url!r}",
            path="--storage",
        )
    options = {}
    path = _sqlite_file(url)
    if path is not None:
        if existing and not os.path.exists(path):
            raise SearchError(f"no search stored in {path} (give the --storage the search ran with)", path="--storage")
        if not existing and os.path.dirname(path):
            try:
                os.makedirs(os.path.dirname(path), exist_ok=True)
            except OSError as e:  # a file where a folder of the path should be, no permission
                raise SearchError(f"cannot make the folder of {path}: {e.strerror}", path="--storage") from None
        options = {"engine_kwargs": {"creator": functools.partial(_sqlite, path)}}
    try:
        return optuna.storages.RDBStorage(url, **options)
    except Exception as e:  # noqa: BLE001 - SQLAlchemy's errors for a bad URL or an unreachable database
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SearchError(f"cannot open the storage {url}: {first}", path="--storage") from None


def _sqlite_file(url: str) -> str | None:
    """The file a SQLite URL names (None for another database). A URL that names no file a later
    ``--report`` or ``--resume`` could open is an error: an in-memory database, options after
    ``?`` (SQLite takes them as part of the file's name here), a folder."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as e:
        raise SearchError(f"not a database URL: {url!r} ({e})", path="--storage") from None
    if parsed.get_backend_name() != "sqlite":
        return None
    path = parsed.database or ""
    if not path or path == ":memory:" or path.startswith("file:") or "mode=memory" in str(parsed.query):
        raise SearchError(
            f"{url} is a SQLite database in memory, which keeps nothing for --report or --resume: name a file "
            "(sqlite:///search.db)",
            path="--storage",
        )
    if parsed.query:
        raise SearchError(
            f"expected a SQLite file's URL without options after '?', got {url} (nasdsl opens the file itself, in "
            "write-ahead-log mode)",
            path="--storage",
        )
    if path.endswith(("/", os.sep)) or os.path.isdir(path):
        raise SearchError(
            f"{url} names a folder; name the database file in it (sqlite:///{path.rstrip('/')}/study.db)",
            path="--storage",
        )
    return path


def _sqlite(path: str):
    """A connection to a SQLite file in write-ahead-log mode, synchronised at checkpoints: a
    third of the time per trial of SQLite's default (each commit waits for the disk), and as
    safe when a search is killed (a finished trial is in the log); only a crash of the machine
    itself may lose the last trials. The pool hands a connection to one thread at a time, and the
    search's lease (:class:`Lease`) signs from a thread of its own: a connection is not tied to the
    thread that opened it (``check_same_thread``, as SQLAlchemy sets it for its own SQLite pools)."""
    import sqlite3

    connection = sqlite3.connect(path, timeout=60, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    return connection


def open_study(url: str, name: str, directions: list[str], sampler, *, resume: bool, identity: dict):
    """The study to run: a new one, or with ``resume`` the stored one, which must be the same
    search (``identity``: spec, ``--set``, space hash, objectives)."""
    optuna = require_optuna()
    storage = _storage(url, existing=resume)
    names = {s.study_name: s for s in optuna.get_all_study_summaries(storage)}
    if resume:
        if name not in names:
            raise SearchError(f"no study {name!r} in {url} to resume", path="--resume")
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
        _same_search(study, identity)
        return study
    if name in names:
        n = names[name].n_trials
        raise SearchError(
            f"{url} already holds the study {name!r} ({n} trials): --resume to go on with it, or give another "
            "--study-name or --storage",
            path="--study-name",
        )
    study = optuna.create_study(storage=storage, study_name=name, directions=directions, sampler=sampler)
    study.set_user_attr(ATTR, identity)
    return study


def _same_search(study, identity: dict) -> None:
    stored = study.user_attrs.get(ATTR)
    if stored is None:
        raise SearchError(f"the study {study.study_name!r} was not made by nasdsl search", path="--resume")
    for key, what in (("space", "the spec's space (its document)"), ("objectives", "the objectives")):
        if stored.get(key) != identity[key]:
            said = f"{_shown(stored.get(key))} then, {_shown(identity[key])} now"
            if key == "space" and stored.get("set") != identity["set"]:  # the likely cause, said
                said += f"; --set {_sets(stored.get('set'))} then, {_sets(identity['set'])} now"
            raise SearchError(
                f"{what} changed since the study began ({said}): resume with what it ran on, or start another "
                "--study-name",
                path="--resume",
            )


def _sets(values: object) -> str:
    return " ".join(printable(str(v)) for v in values) if isinstance(values, list) and values else "(none)"


def _shown(value: object) -> str:
    if isinstance(value, str) and len(value) == 64:
        return f"hash {value[:12]}"
    if isinstance(value, list):
        return ", ".join(f"{d} {n}" for n, d in value)
    return repr(value)


def load_study(url: str, name: str):
    """A stored study, for ``--report`` and ``--pick``."""
    optuna = require_optuna()
    storage = _storage(url, existing=True)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    if name not in names:
        found = ", ".join(names) or "none"
        raise SearchError(f"no study {name!r} in {url} (studies there: {found})", path="--study-name")
    return optuna.load_study(study_name=name, storage=storage)


@functools.cache
def _teller() -> Callable | None:
    """Optuna's own tell (the function ``Study.optimize`` finishes each trial with), where it takes
    the arguments :func:`tell` gives it; else None."""
    import inspect

    try:
        from optuna.study._tell import _tell_with_warning
    except ImportError:
        return None
    try:
        params = inspect.signature(_tell_with_warning).parameters
    except (TypeError, ValueError):
        return None
    return _tell_with_warning if {"study", "trial", "value_or_values", "state"} <= set(params) else None


def tell(study, trial, values=None, state=None) -> None:
    """Finish ``trial`` with ``values`` or ``state``, as ``study.tell`` does.

    ``Study.tell`` returns a deep copy of the finished trial, which nasdsl never reads: with
    Optuna's in-memory storage that copy is most of a trial's cost to Optuna (0.1 ms of its 0.4 ms
    on GoogLeNet's space of 18 parameters). ``Study.optimize`` finishes its trials through the
    function behind ``tell`` without the copy; nasdsl calls it too, where the installed Optuna has
    it as nasdsl knows it, and ``study.tell`` otherwise."""
    told = _teller()
    if told is None:
        study.tell(trial, values, state=state)
    else:
        told(study=study, trial=trial, value_or_values=values, state=state)


#: the study's user attribute where the search running it signs (host, pid, work folder, last beat)
DRIVER = "nasdsl_driver"
#: seconds between a running search's beats, and the age past which a beat is taken as a search
#: that ended without saying so (killed): its study may be resumed
BEAT_SECONDS = 10.0
LEFT_AFTER = 60.0


class Lease:
    """A running search's hold on its study, in the storage: any other search that opens the study
    (a ``--resume`` from another folder or machine on a shared database) sees it and is refused,
    where it would have told this search's running trials FAIL under it. The hold is the study's
    ``nasdsl_driver`` attribute, written again every :data:`BEAT_SECONDS` by a thread; a hold whose
    last beat is older than :data:`LEFT_AFTER` seconds (by the reader's clock) is a search that
    was killed, and is taken over. In Optuna's in-memory storage nothing else can reach the
    study, and no hold is kept."""

    def __init__(self, study, url: object, workdir: str):
        import socket
        import threading

        self.study = study
        self.stop = threading.Event()
        self.thread = None
        optuna = require_optuna()
        if isinstance(study._storage, optuna.storages.InMemoryStorage):
            return
        held = running_search(study)
        if held is not None:
            age = max(0.0, time.time() - held["beat"])
            left_after = LEFT_AFTER
            where = url if isinstance(url, str) else "its storage"
            raise SearchError(
                f"the study {study.study_name!r} in {where} is being run by another nasdsl search (on "
                f"{printable(str(held.get('host')))}, pid {held.get('pid')}, in {printable(str(held.get('workdir')))}; "
                f"its last sign of life {age:.0f} s ago): wait for it to end, or run more trials at once in one "
                f"search (--workers, --ray). A search silent for {left_after:g} s is taken as ended",
                path="--study-name",
            )
        self.sign = {"host": socket.gethostname(), "pid": os.getpid(), "workdir": os.path.abspath(workdir)}
        self._beat()
        self.thread = threading.Thread(target=self._beating, args=(BEAT_SECONDS,), name="nasdsl-lease", daemon=True)
        self.thread.start()

    def _beat(self) -> None:
        self.study.set_user_attr(DRIVER, {**self.sign, "beat": time.time()})

    def _beating(self, every: float) -> None:
        while not self.stop.wait(every):
            with contextlib.suppress(Exception):  # a busy database: the next beat tries again
                self._beat()

    def release(self) -> None:
        """Let the study go (the search ended, however it ended)."""
        if self.thread is None:
            return
        self.stop.set()
        self.thread.join()
        self.thread = None
        with contextlib.suppress(Exception):  # a storage gone: the hold ages out
            self.study.set_user_attr(DRIVER, None)


def running_search(study) -> dict | None:
    """The sign of the search running ``study`` now (host, pid, workdir, beat), or None when no
    search has signed it within :data:`LEFT_AFTER` seconds."""
    held = study.user_attrs.get(DRIVER)
    if not isinstance(held, dict):
        return None
    beat = held.get("beat")
    if isinstance(beat, bool) or not isinstance(beat, (int, float)) or time.time() - beat >= LEFT_AFTER:
        return None
    return held


@contextlib.contextmanager
def ours(number: int):
    """Around what writes a trial this search started: a trial another search finished under it
    (this one gave no sign of life for :data:`LEFT_AFTER` seconds, paused or suspended, and was
    taken as ended) is an error that stops this search, not an internal one."""
    from optuna.exceptions import UpdateFinishedTrialError

    try:
        yield
    except UpdateFinishedTrialError:
        raise SearchError(
            f"trial {number} was ended by another nasdsl search of this study while this one ran it (this one "
            f"gave no sign of life for over {LEFT_AFTER:g} s, and was taken as ended): this search stops"
        ) from None


def strict_json(value: object) -> object:
    """``value`` with each float that JSON has no number for written as Python writes it
    (``"inf"``, ``"-inf"``, ``"nan"``): a NASWOT score of minus infinity, a metric of infinity
    (what the report and each trial's ``trial.json`` write, strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


def record(trial) -> dict:
    """A trial's nasdsl record (empty for a trial nasdsl did not make)."""
    return trial.user_attrs.get(ATTR) or {}


__all__ = [
    "ATTR",
    "DATABASE",
    "DRIVER",
    "Lease",
    "SAMPLERS",
    "SearchError",
    "default_storage",
    "load_study",
    "make_sampler",
    "open_study",
    "running_search",
    "record",
    "require_optuna",
    "strict_json",
    "tell",
]
