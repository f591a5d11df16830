"""A stored search, read back: the trials table, the Pareto front, one variant as a plain spec.

Everything here reads the Optuna study (its trials, their parameters, values
and nasdsl records, :mod:`nasdsl.search.study`) and the spec's space; the
Pareto front is Optuna's (``study.best_trials``), less the duplicates.
"""

from __future__ import annotations

import json
import re

from nasdsl.choices import option_text
from nasdsl.errors import NasdslError, printable
from nasdsl.search.identity import variant_key
from nasdsl.search.params import picks_of
from nasdsl.search.study import ATTR, SearchError, record, running_search, strict_json
from nasdsl.space import Space

#: what a trial's status is called in the table
SHOWN = {
    "evaluated": "ok",
    "failed": "failed",
    "rejected": "rejected",
    "duplicate": "duplicate",
    "interrupted": "interrupted",
    "running": "running",
}


def status(trial) -> str:
    """``evaluated``, ``failed``, ``rejected``, ``duplicate``, ``running`` or ``interrupted``
    (failed without a record: left running by a search that was killed, and told FAIL on
    ``--resume``)."""
    from optuna.trial import TrialState

    if trial.state == TrialState.RUNNING:
        return "running"
    rec = record(trial)
    if "status" in rec:
        return rec["status"]
    return "interrupted" if trial.state == TrialState.FAIL else "unknown"


def objectives(study) -> list[tuple[str, str]]:
    """The study's objectives: (name, direction)."""
    return [tuple(o) for o in study.user_attrs[ATTR]["objectives"]]


def front(study) -> list:
    """The trials no other beats in every objective (for one objective: the best), each
    variant once, in trial order."""
    complete = [t for t in study.best_trials if status(t) == "evaluated"]
    return sorted(complete, key=lambda t: t.number)


def rows(study, space: Space) -> list[dict]:
    """One record per trial (the JSON format's ``trials``); a choice the trial did not make (its
    condition is false: it keeps its default) is ``-``."""
    names = [n for n, _ in objectives(study)]
    out = []
    for t in study.get_trials(deepcopy=False):
        rec = record(t)
        try:
            picks = picks_of(space, t.params)
            choices = {
                p.name: option_text(p.options[k]) if p.name in t.params else "-"
                for p, k in zip(space.points, picks, strict=True)
            }
        except NasdslError:  # a value that is no option of the spec now: shown as stored
            choices = {k: _text(v) for k, v in t.params.items()}
        note = rec.get("reason") or rec.get("error") or ""
        if "duplicate_of" in rec:
            note = f"the variant of trial {rec['duplicate_of']}"
        out.append(
            {
                "trial": t.number,
                "status": status(t),
                "choices": choices,
                "values": dict(zip(names, t.values, strict=True)) if t.values is not None else None,
                "figures": rec.get("figures"),
                "metrics": rec.get("metrics"),
                "proxies": rec.get("proxies"),
                "seconds": rec.get("seconds"),
                "workdir": rec.get("workdir"),
                "variant": rec.get("variant"),
                "note": note,
            }
        )
    return out


def table(study, space: Space) -> str:
    """The trials table, then the Pareto front (or the best trial)."""
    from nasdsl.search.driver import fmt

    goals = objectives(study)
    names = [p.name for p in space.points]
    head = ["trial", "status", *names, *(n for n, _ in goals), "s", "note"]
    body = []
    for r in rows(study, space):
        values = [fmt(r["values"][n]) if r["values"] else "" for n, _ in goals]
        seconds = f"{r['seconds']:.1f}" if r["seconds"] is not None else ""
        note = printable(r["note"].splitlines()[0]) if r["note"] else ""
        body.append([str(r["trial"]), SHOWN.get(r["status"], r["status"]), *(r["choices"].get(n, "") for n in names)])
        body[-1] += [*values, seconds, note]
    lines = [heading(study), *_aligned(head, body, right={0, *range(len(names) + 2, len(head) - 1)})]
    lines += ["", *front_lines(study)]
    return printable("\n".join(lines)) + "\n"  # (choices are the spec's text: shown escaped)


def heading(study) -> str:
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        counts[status(t)] = counts.get(status(t), 0) + 1
    evaluated = counts.pop("evaluated", 0)
    parts = [f"{evaluated:,} variant{'' if evaluated == 1 else 's'} evaluated"]
    parts += [f"{n:,} {s}{'s' if s == 'duplicate' and n > 1 else ''}" for s, n in sorted(counts.items())]
    aims = ", ".join(f"{d} {n}" for n, d in objectives(study))
    running = running_search(study)
    if running is not None:
        parts.append(
            f"being run now by the search on {running.get('host')} (pid {running.get('pid')}, in "
            f"{running.get('workdir')})"
        )
    return f"study {study.study_name} ({aims}): " + ", ".join(parts)


def front_lines(study) -> list[str]:
    """The front (or the best trial), a line per trial."""
    from nasdsl.search.driver import fmt

    goals = objectives(study)
    best = front(study)
    what = "best trial" if len(goals) == 1 else "Pareto front"
    if not best:
        return [f"{what}: none yet (no trial has completed)"]
    title = f"{what} ({', '.join(f'{d} {n}' for n, d in goals)}): " + ", ".join(str(t.number) for t in best)
    out = [title]
    for t in best:
        shown = ", ".join(f"{n} {fmt(v)}" for (n, _), v in zip(goals, t.values, strict=True))
        made = " ".join(f"{k}={_text(v)}" for k, v in t.params.items())
        out.append(f"  trial {t.number}: {shown}  ({made or 'the default variant'})")
    return out


def as_json(study, space: Space) -> str:
    data = {
        "study": study.study_name,
        "objectives": [{"name": n, "direction": d} for n, d in objectives(study)],
        "front": [t.number for t in front(study)],
        "trials": rows(study, space),
    }
    return json.dumps(strict_json(data), indent=2, allow_nan=False) + "\n"


def _text(v: object) -> str:
    """A trial's parameter as ``--set`` writes it (``true``, ``null``)."""
    return option_text(v)


def _aligned(head: list[str], body: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]

    def line(row: list[str]) -> str:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        return "  ".join(cells).rstrip()

    return [line(head), *map(line, body)]


def chosen(study, which: str):
    """The trial ``--pick`` names: ``best`` (the best trial of one objective, where no other ties
    with it; of several, the Pareto front's trial where it is the only one: it beats every other in
    every objective), or a trial number."""
    goals = objectives(study)
    if which == "best":
        best = front(study)
        if not best:
            raise SearchError("no trial has completed: there is no best to pick", path="--pick")
        if len(best) > 1:
            numbers = ", ".join(str(t.number) for t in best)
            if len(goals) == 1:
                from nasdsl.search.driver import fmt

                raise SearchError(
                    f"trials {numbers} tie for the best {goals[0][0]}, {fmt(best[0].values[0])}: pick one by number",
                    path="--pick",
                )
            raise SearchError(
                f"the search has {len(goals)} objectives, so no single best: its Pareto front is trials {numbers}; "
                "pick one by number",
                path="--pick",
            )
        return best[0]
    trials = study.get_trials(deepcopy=False)
    if not re.fullmatch(r"[0-9]+", which) or int(which) >= len(trials):  # isdigit() takes '²' and '٣' too
        raise SearchError(f"expected best or a trial number from 0 to {len(trials) - 1}, got {which!r}", path="--pick")
    trial = trials[int(which)]
    if status(trial) == "rejected":
        raise SearchError(f"trial {which} was rejected, never run: {record(trial).get('reason')}", path="--pick")
    return trial


def variant_of(study, space: Space, trial) -> tuple[int, ...]:
    """The picks of ``trial``'s variant, checked against the key it was stored with."""
    picks = picks_of(space, trial.params)
    stored = record(trial).get("variant")
    if stored is not None and stored != variant_key(space, picks):
        raise SearchError(
            f"trial {trial.number}'s parameters make another variant of the spec than the one it evaluated "
            "(the spec changed since): pick with the spec the search ran on",
            path="--pick",
        )
    return picks


__all__ = [
    "as_json",
    "chosen",
    "front",
    "front_lines",
    "heading",
    "objectives",
    "rows",
    "status",
    "table",
    "variant_of",
]
