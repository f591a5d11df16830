"""``nasdsl search``: an architecture search over a spec's space, with Optuna's samplers.

The CLI adds the common options (SPEC, ``--set``, the limits) and compiles the
default variant; :func:`run` builds a :class:`nasdsl.search.Config` and runs
it (:mod:`nasdsl.search.driver`), or reads a stored search back (``--report``,
``--pick``: :mod:`nasdsl.search.report`). docs/search.md is the guide.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys

from nasdsl.commands.space import add_budget_arguments, budgets
from nasdsl.errors import printable
from nasdsl.search import objectives as objs
from nasdsl.search.driver import MAX_LOCAL_WORKERS, MAX_SEED, MAX_STALE, Budget, Config, run_search
from nasdsl.search.evaluators import parse_evaluator
from nasdsl.search.study import SAMPLERS, SearchError, default_storage

HELP = "search a spec's space with Optuna's samplers: cost, zero-cost proxies or trained metrics; local or on Ray"

DESCRIPTION = (
    "Search the design space of a spec with choices (docs/design-space.md) for the variants that do best on one "
    "or more objectives: multiply-adds, parameters or the latency this machine's latency model predicts (latency_ms, "
    "from nasdsl bench --calibrate) (computed by nasdsl, nothing runs), a zero-cost proxy "
    "computed on the generated model with one batch (synflow, naswot), or a metric an evaluator measures "
    "(metric:NAME, from --evaluate: a command template or a Python module:function). Optuna's sampler proposes "
    "each variant; nasdsl rejects those that break a constraint, do not compile or are over a budget, and "
    "answers duplicates, before anything runs. Trials run in a local process pool, or on a Ray cluster with "
    "--ray. The study lives in an Optuna storage (a SQLite file in the work folder unless --storage names a "
    "database), so --resume continues a killed search, --report prints its trials and Pareto front, and "
    "--pick writes a variant as a plain spec. Needs Optuna (and Ray for --ray): pip install 'nasdsl[search]'. "
    "See docs/search.md."
)

EXAMPLES = """\
nasdsl search space.yaml --minimize macs --maximize params --max-macs 1G --trials 50
nasdsl search space.yaml --maximize naswot --minimize macs --sampler nsga2 --trials 200
nasdsl search space.yaml --maximize metric:top1 --minimize macs --trials 40 \\
    --evaluate "python examples/train.py {spec} --data DIR --epochs 1 --metrics-json {out}"
nasdsl search space.yaml --maximize metric:top1 --evaluate mypackage.train:evaluate --ray auto --gpus-per-trial 1
nasdsl search space.yaml --maximize metric:top1 --evaluate "..." --resume
nasdsl search space.yaml --report
nasdsl search space.yaml --pick best -o best.yaml
"""


#: the options whose 0 means nothing: no trial, no proposal, an empty batch, no second for a command
_ABOVE_ZERO = ("--trials", "--patience", "--proxy-batch", "--trial-timeout")


def _positive(option: str, kind=int):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        least = "above 0" if option in _ABOVE_ZERO else "of at least 0"
        if value is None or not value >= 0 or (option in _ABOVE_ZERO and value == 0):  # not >= 0: nan too
            raise argparse.ArgumentTypeError(f"{option}: expected a number {least}, got {text!r}")
        if value == math.inf:  # a float option: inf CPUs or seconds is no number of them
            raise argparse.ArgumentTypeError(f"{option}: expected a finite number {least}, got {text!r}")
        return value

    return parse


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"--seed: expected an integer from 0 to {MAX_SEED}, got {text!r}")
    return value


def _aim(direction: str | None):
    def parse(text: str) -> tuple[str, str | None]:
        return text.strip(), direction

    return parse


def _sampler(text: str) -> str:
    if text not in SAMPLERS:
        raise argparse.ArgumentTypeError(f"--sampler: expected one of {', '.join(SAMPLERS)}, got {text!r}")
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``search``'s options (the CLI adds SPEC, ``--set`` and the limits)."""
    s = parser.add_argument_group("the search")
    s.add_argument(
        "--minimize", dest="aims", action="append", default=[], type=_aim(objs.MINIMIZE), metavar="OBJECTIVE",
        help="an objective to make small: " + ", ".join(objs.OBJECTIVES) + ", or metric:NAME (repeatable)",
    )  # fmt: skip
    s.add_argument(
        "--maximize", dest="aims", action="append", type=_aim(objs.MAXIMIZE), metavar="OBJECTIVE",
        help="an objective to make large (synflow, naswot, metric:top1, ...)",
    )  # fmt: skip
    s.add_argument(
        "--objective", dest="aims", action="append", type=_aim(None), metavar="OBJECTIVE",
        help="an objective in its own direction (macs, params, depth, peak, latency_ms: smaller; "
        "synflow, naswot: larger)",
    )  # fmt: skip
    s.add_argument(
        "--trials", type=_positive("--trials"), default=20, help="variants to run: evaluated, or failed (default 20)"
    )
    s.add_argument(
        "--sampler",
        type=_sampler,
        default="tpe",
        help="Optuna's sampler: " + ", ".join(SAMPLERS) + " (default tpe, Optuna's own default)",
    )
    s.add_argument(
        "--seed", type=_seed, default=0, help=f"the seed of the sampler and proxies, 0 to {MAX_SEED} (default 0)"
    )
    s.add_argument(
        "--patience",
        type=_positive("--patience"),
        default=MAX_STALE,
        metavar="N",
        help=f"stop when the sampler proposes no new variant N times in a row (default {MAX_STALE:,})",
    )
    b = add_budget_arguments(parser, "budgets (a variant over one is never run)")
    e = parser.add_argument_group("trials")
    e.add_argument(
        "--evaluate",
        metavar="CMD|MODULE:FUNCTION",
        help="what measures a variant: a command template with {spec} {out} {workdir} {weights} {trial}, "
        "run without a shell, writing a JSON object of metrics to {out}; or module:function(spec_path, workdir) "
        "returning a dict",
    )
    e.add_argument(
        "--warm-start",
        metavar="WEIGHTS",
        help="carry these trained weights of the parent (--parent, default the spec's default variant) over to "
        "each trial's variant ({weights}, WORKDIR/trial-N/init.safetensors), as nasdsl transfer does",
    )
    e.add_argument("--parent", metavar="SPEC", help="the spec the --warm-start weights are of")
    e.add_argument(
        "--parent-set", dest="parent_overrides", action="append", default=[], metavar="K=V",
        help="override a value of the --parent spec",
    )  # fmt: skip
    e.add_argument(
        "--proxy-batch",
        type=_positive("--proxy-batch"),
        default=16,
        help="inputs in the batch of the zero-cost proxies (default 16)",
    )
    e.add_argument(
        "--trial-timeout", type=_positive("--trial-timeout", float), metavar="S", help="seconds a command may run"
    )
    w = parser.add_argument_group("where trials run")
    w.add_argument(
        "--workers",
        type=_positive("--workers"),
        metavar="N",
        help=f"trials at once: a local pool of N processes, at most {MAX_LOCAL_WORKERS} (0: one at a time in this "
        "process); with --ray, "
        "the most in flight (default: as many as the cores, or the cluster, hold)",
    )
    w.add_argument(
        "--ray",
        metavar="auto|ADDRESS|local",
        help="run trials as Ray tasks: auto (the cluster 'ray start' joined), an address, or local (a Ray "
        "instance started here)",
    )
    w.add_argument(
        "--cpus-per-trial", type=_positive("--cpus-per-trial", float), default=1.0, metavar="N",
        help="CPUs (threads) each trial holds (default 1)",
    )  # fmt: skip
    w.add_argument(
        "--gpus-per-trial", type=_positive("--gpus-per-trial", float), default=0.0, metavar="N",
        help="GPUs each trial holds, with --ray (fractions share one; default 0)",
    )  # fmt: skip
    st = parser.add_argument_group("storage and results")
    st.add_argument(
        "--workdir",
        metavar="DIR",
        help="the trials' folders and the default storage (default search-STUDY: the study's name, the spec's "
        "unless --study-name gives another)",
    )
    st.add_argument("--storage", metavar="URL", help="an Optuna storage URL (default sqlite:///WORKDIR/study.db)")
    st.add_argument("--study-name", metavar="NAME", help="the study in the storage (default the spec's name)")
    st.add_argument("--resume", action="store_true", help="go on with the stored study until --trials are evaluated")
    st.add_argument("--report", action="store_true", help="print the stored trials and the Pareto front; run nothing")
    st.add_argument(
        "--format", choices=("table", "json"), default="table", help="--report's format: table or json (default table)"
    )
    st.add_argument("--pick", metavar="best|ID", help="write a stored trial's variant as a plain spec; run nothing")
    st.add_argument("-o", "--output", metavar="FILE", help="with --pick: the spec file to write (default stdout)")
    quiet = st.add_argument("--quiet", action="store_true", help="no line per trial")
    # what only a search that runs reads: given with --report or --pick, it would be ignored
    run_only = [a for group in (s, b, e, w) for a in group._group_actions] + [quiet]
    run_only += [a for a in parser._actions if a.dest == "budget_params"]
    named: dict[str, list[str]] = {}
    for a in run_only:  # --minimize, --maximize and --objective fill one list
        named.setdefault(a.dest, []).append(a.option_strings[0])
    parser.set_defaults(run_only=tuple(("/".join(o), dest, parser.get_default(dest)) for dest, o in named.items()))


def _workdir(args: argparse.Namespace, name: str) -> str:
    """The work folder: ``--workdir``, else ``search-`` and the study's name (the spec's unless
    ``--study-name`` gives another), so that two studies never share one by default (their
    trials are numbered alike)."""
    if args.workdir:
        return args.workdir
    study = args.study_name or name
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", study):
        raise SearchError(
            f"the study name {printable(study)!r} is no folder name, and the work folder is named after it: "
            "give --workdir",
            path="--study-name",
        )
    return f"search-{study}"


def _config(args: argparse.Namespace, name: str) -> Config:
    goals = tuple(objs.goal(n, d) for n, d in args.aims)
    evaluator = parse_evaluator(args.evaluate) if args.evaluate else None
    return Config(
        spec=args.spec,
        goals=goals,
        trials=args.trials,
        overrides=tuple(args.overrides),
        sampler=args.sampler,
        seed=args.seed,
        budgets=tuple(Budget(c, w, v, o) for c, w, v, o in budgets(args)),
        evaluator=evaluator,
        workdir=_workdir(args, name),
        storage=args.storage,
        study_name=args.study_name or name,
        resume=args.resume,
        warm_start=args.warm_start,
        parent=args.parent,
        parent_overrides=tuple(args.parent_overrides),
        workers=args.workers,
        ray=args.ray,
        cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial,
        proxy_batch=args.proxy_batch,
        trial_timeout=args.trial_timeout,
        patience=args.patience,
        max_nodes=args.max_nodes,
        max_params=args.max_params,
        limits=getattr(args, "limits", None),
    )


def _unused(args: argparse.Namespace, cfg: Config) -> None:
    """Refuse an option given for what this search does not do (it would be taken and ignored):
    ``--trial-timeout`` without a command to stop, ``--proxy-batch`` without a proxy objective,
    ``--cpus-per-trial`` where no trial runs in a process of its own."""
    default = {dest: d for _, dest, d in args.run_only}
    command = cfg.evaluator is not None and bool(cfg.evaluator.argv)
    proxies = any(g.where == objs.MODEL for g in cfg.goals)
    apart = cfg.dispatches and (cfg.ray is not None or cfg.workers != 0)
    for option, dest, needed, why in (
        ("--trial-timeout", "trial_timeout", command, "no command runs (a Python callable cannot be stopped)"),
        ("--proxy-batch", "proxy_batch", proxies, "no objective is a zero-cost proxy (synflow, naswot)"),
        ("--cpus-per-trial", "cpus_per_trial", apart, "no trial runs in a process of its own (a pool's or Ray's)"),
    ):
        if not needed and getattr(args, dest) != default[dest]:
            raise SearchError(f"{why} in this search: leave it out", path=option)


def _stored(args: argparse.Namespace, name: str):
    """The stored study, the space it searched and the storage's URL: the spec with the study's
    own ``--set`` values unless others are given, which must make the same space."""
    from nasdsl import document
    from nasdsl import space as spaces
    from nasdsl.search.study import ATTR, load_study

    url = args.storage or default_storage(_workdir(args, name))
    study = load_study(url, args.study_name or name)
    stored = study.user_attrs.get(ATTR)
    aims = stored.get("objectives") if isinstance(stored, dict) else None
    if not isinstance(aims, list) or len(aims) != len(study.directions):
        raise SearchError(f"the study {study.study_name!r} in {url} was not made by nasdsl search", path="--study-name")
    overrides = args.overrides or stored.get("set", [])
    # the command line compiled the default variant with its own --set already (nasdsl.cli)
    space = spaces.load_space(
        args.spec, overrides, limits=getattr(args, "limits", None), check=overrides is not args.overrides
    )
    if stored.get("space") not in (None, document.spec_hash(space.document)):
        made = " ".join(f"--set {o}" for o in stored.get("set", [])) or "no --set"
        raise SearchError(
            f"{args.spec} with {' '.join(f'--set {o}' for o in overrides) or 'no --set'} is not the space the study "
            f"searched ({stored.get('spec')} with {made}, since changed?)",
            path="--study-name",
        )
    return study, space, url


def run(args: argparse.Namespace, net) -> int:
    """Search, or read a stored search back (``net`` is the spec's default variant, compiled)."""
    from nasdsl.search import report

    if args.output is not None and args.pick is None:
        raise SearchError("-o names the file --pick writes; give --pick best or --pick ID", path="--output")
    if args.format != "table" and not args.report:
        raise SearchError("is --report's format; give --report, or leave it out", path="--format")
    if args.report and args.pick is not None:
        raise SearchError("--report and --pick: give one", path="--pick")
    if (args.report or args.pick is not None) and args.resume:
        raise SearchError("--resume runs the search; --report and --pick read it: give one", path="--resume")
    if args.report or args.pick is not None:
        for option, dest, default in args.run_only:
            if getattr(args, dest) != default:
                raise SearchError(
                    f"sets how a search runs; {'--report' if args.report else '--pick'} reads a stored one: "
                    "leave it out",
                    path=option,
                )
        study, space, url = _stored(args, net.name)
        if args.report:
            sys.stdout.write(report.as_json(study, space) if args.format == "json" else report.table(study, space))
            return 0
        return _pick(args, study, space, url)
    cfg = _config(args, net.name)
    _unused(args, cfg)
    say = (lambda line: None) if args.quiet else (lambda line: print(printable(line), flush=True))
    summary = run_search(cfg, say=say)
    study = summary.study
    extra = [
        f"{summary.failed:,} failed" if summary.failed else "",
        f"{summary.rejected:,} rejected" if summary.rejected else "",
        f"{summary.duplicates:,} duplicate{'s' if summary.duplicates > 1 else ''}" if summary.duplicates else "",
    ]
    told = ", ".join(x for x in extra if x)
    resumed = f" (after {summary.resumed:,} stored)" if summary.resumed else ""
    what = f"{summary.evaluated:,} variant{'' if summary.evaluated == 1 else 's'} evaluated{resumed}"
    print(what + (f"; {told}" if told else "") + f"; stopped: {summary.stopped}")
    print(f"study {study.study_name} in {cfg.storage_url}")
    for line in report.front_lines(study):
        print(printable(line))
    if summary.evaluated == 0 and summary.failed:
        print("nasdsl: every trial failed (see trial.json and log.txt in the trials' folders)", file=sys.stderr)
        return 1
    return 0


def _pick(args: argparse.Namespace, study, space, url: str) -> int:
    from nasdsl.files import write_atomic
    from nasdsl.search import report
    from nasdsl.space import variant_yaml

    trial = report.chosen(study, args.pick)
    picks = report.variant_of(study, space, trial)
    writer = f"nasdsl search --pick (trial {trial.number} of the study {study.study_name})"
    text = variant_yaml(space, picks, args.spec, writer)
    if args.output is None:
        sys.stdout.write(text)
        return 0
    data = text.encode("utf-8")
    _not_read(args.output, space, url)
    write_atomic(args.output, data)
    from nasdsl.search.params import made_arguments

    made = " ".join(made_arguments(space, picks)) or "the default variant"
    print(f"wrote {printable(args.output)} ({len(data):,} bytes): trial {trial.number}, {made}")
    return 0


def _not_read(output: str, space, url: str) -> None:
    """Refuse an ``-o`` that names a file this command reads: the spec (or a file it includes), whose
    variant would replace the space the study searched, or the study's own SQLite file."""
    read = {f: "the spec" for f in space.files}
    if url.startswith("sqlite:///"):  # the database and SQLite's files beside it (its log holds the last trials)
        for suffix in ("", "-wal", "-shm", "-journal"):
            read[url[len("sqlite:///") :] + suffix] = "the study's database"
    for path, what in read.items():
        if os.path.realpath(output) == os.path.realpath(path):
            raise SearchError(
                f"{output} is read by this command ({what}): write the variant to another file", path="--output"
            )
