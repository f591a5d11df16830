"""``nasdsl space``: the variants of a spec with choices, counted, listed, filtered, picked.

The CLI adds the common options (SPEC, ``--set``, the ``--max-*`` limits) and
compiles the default variant; :func:`run` finds the space
(:mod:`nasdsl.space`), evaluates its variants (:mod:`nasdsl.variants`) and
prints them. ``nasdsl sweep`` lists ad-hoc grids with the same machinery
(:func:`add_listing_arguments`, :func:`list_variants`). Never imports torch.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import os
import random
import re
import sys
import time
from dataclasses import dataclass

from nasdsl import space as spaces
from nasdsl.choices import option_text
from nasdsl.errors import NasdslError, one_line, printable
from nasdsl.unique import BenchmarkRule
from nasdsl.variants import MAX_PARAMS, Evaluator, Result

HELP = "count, list, filter and pick the variants of a spec with choices (its design space)"

DESCRIPTION = (
    "A spec's values may be choices ({choice: [...]} or {range: [from, to, step]}, docs/design-space.md). "
    "This prints the exact number of variants, then lists them in id order (or --sample N of them), each with "
    "the choices made, whether it compiles (an invalid variant shows the compiler's error), its parameters and "
    "multiply-adds at inference, its depth and its peak activation size (values held at once, batch 1). "
    "--max-params, --max-macs, --max COL=N and --min COL=N keep the variants within budgets (columns: params, "
    "macs, depth, peak, params_train, macs_train, latency_ms: the latency predicted by this machine's latency model, "
    "made by nasdsl bench --calibrate; --latency shows it); --pareto keeps those no other beats in every named column; "
    "--shard i/n lists every n-th variant (a job runner's share); --pick K writes variant K as a plain spec. "
    "The variants are evaluated without compiling each in full (see nasdsl/variants.py)."
)

EXAMPLES = """\
nasdsl space space.yaml --count
nasdsl space space.yaml --count --max-macs 400M
nasdsl space space.yaml
nasdsl space space.yaml --max-macs 1G --pareto macs,params:max --format markdown
nasdsl space space.yaml --sample 1000 --seed 1 --format csv
nasdsl space space.yaml --max-macs 1.2G --valid-only --shard 3/16 --format json
nasdsl space space.yaml --max latency_ms=5 --pareto latency_ms,params:max
nasdsl space space.yaml --pick 17 -o variant17.yaml
"""

#: the figures a budget or --pareto may name
COLUMNS = ("params", "macs", "depth", "peak", "params_train", "macs_train", "latency_ms")
#: the column a latency model fills (nasdsl.bench.latency); shown with --latency or when an option names it
LATENCY = "latency_ms"
FORMATS = ("table", "json", "csv", "markdown", "ids")
#: a space larger than this is listed only with --sample or --limit
MAX_LISTED = 100_000
#: the memory a listed variant holds, about (its picks, figures and row; measured: ~1.1 KiB)
ROW_BYTES = 2048
_SUFFIX = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


class SpaceUsageError(NasdslError):
    """A bad option of space or sweep (exit 2)."""


# ---------------------------------------------------------------------------
# Options


def _amount(text: str) -> float:
    """``1500000``, ``1.5e6``, ``1.5M``, ``800k``, ``2G``."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([kmgt]?)\s*", text, flags=re.I)
    if m is None:
        raise ValueError(text)
    return float(m.group(1)) * _SUFFIX[m.group(2).lower()]


def _budget_value(option: str):
    def parse(text: str) -> float:
        try:
            return _amount(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{option}: expected a number such as 1500000, 1.5e6 or 1.5M, got {text!r}"
            ) from None

    return parse


def _bound(option: str):
    def parse(text: str) -> tuple[str, float]:
        column, _, value = text.partition("=")
        column = column.strip()
        if column not in COLUMNS:
            raise argparse.ArgumentTypeError(
                f"{option}: expected COLUMN=N with a column of {', '.join(COLUMNS)}, got {text!r}"
            )
        try:
            return column, _amount(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{option}: expected COLUMN=N with a number N, got {text!r}") from None

    return parse


def _pareto(text: str) -> tuple[tuple[str, bool], ...]:
    out = []
    for item in text.split(","):
        column, _, way = item.strip().partition(":")
        if column not in COLUMNS or way not in ("", "min", "max"):
            raise argparse.ArgumentTypeError(
                f"--pareto: expected columns of {', '.join(COLUMNS)}, each maybe with :max, got {text!r}"
            )
        out.append((column, way == "max"))
    return tuple(out)


def _shard(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if m is None or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise argparse.ArgumentTypeError(f"--shard: expected i/n with 1 <= i <= n, got {text!r}")
    return int(m.group(1)), int(m.group(2))


def _count(option: str):
    def parse(text: str) -> int:
        if not text.isdigit():
            raise argparse.ArgumentTypeError(f"{option}: expected an integer >= 0, got {text!r}")
        return int(text)

    return parse


def retarget(parser: argparse.ArgumentParser, option: str, dest: str, help: str, **defaults) -> None:
    """Give a common option (added by the CLI) another meaning in this command: its values go
    to ``dest``; ``defaults`` keep what the CLI reads under the old name."""
    for action in parser._actions:
        if option in action.option_strings:
            action.dest = dest
            action.help = help
    parser.set_defaults(**defaults)


def add_budget_arguments(parser: argparse.ArgumentParser, title: str = "budgets"):
    """The budgets (``--max-params``, ``--max-macs``, ``--max COL=N``, ``--min COL=N``) in a new
    argument group, which is returned; :func:`budgets` reads them back."""
    retarget(
        parser,
        "--max-params",
        "budget_params",
        "keep the variants with at most N parameters at inference (1.5M, 2e6, ...)",
        max_params=MAX_PARAMS,
    )
    for action in parser._actions:
        if action.dest == "budget_params":
            action.type = _budget_value("--max-params")
            action.default = None
            action.metavar = "N"
    b = parser.add_argument_group(title)
    b.add_argument(
        "--max-macs",
        type=_budget_value("--max-macs"),
        metavar="N",
        help="keep the variants with at most N multiply-adds",
    )
    b.add_argument(
        "--max", dest="at_most", type=_bound("--max"), action="append", default=[], metavar="COL=N",
        help=f"keep the variants with COL at most N (COL: {', '.join(COLUMNS)})",
    )  # fmt: skip
    b.add_argument(
        "--min", dest="at_least", type=_bound("--min"), action="append", default=[], metavar="COL=N",
        help="keep the variants with COL at least N",
    )  # fmt: skip
    return b


def budgets(args: argparse.Namespace) -> tuple[tuple[str, str, float, str], ...]:
    """The budgets the options give: (column, ``max`` or ``min``, bound, the option that set it)."""
    out = [(column, "max", value, "--max") for column, value in args.at_most]
    if args.budget_params is not None:
        out.append(("params", "max", args.budget_params, "--max-params"))
    if args.max_macs is not None:
        out.append(("macs", "max", args.max_macs, "--max-macs"))
    out += [(column, "min", value, "--min") for column, value in args.at_least]
    return tuple(out)


#: the rules of --unique (nasdsl.unique)
UNIQUE_RULES = ("strict", "benchmark")


def add_listing_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``space`` and ``sweep``: budgets, selection, sharding, format, picking."""
    b = add_budget_arguments(parser, "budgets and selection")
    b.add_argument(
        "--valid-only",
        action="store_true",
        help="leave out the variants that do not compile (listed otherwise, marked invalid with the compiler's error)",
    )
    b.add_argument(
        "--unique",
        nargs="?",
        const="strict",
        type=_choice_of("--unique", UNIQUE_RULES),
        metavar="RULE",
        help="keep the first variant of each architecture, with the hash column. RULE strict (the default: the same "
        "layers wired alike, identities and dead branches left out, a sum's terms in any order; implies --valid-only) "
        "or benchmark (NAS-Bench-201's rule on a cell's edges, variants that compute nothing included); "
        "docs/design-space.md",
    )
    b.add_argument(
        "--latency",
        action="store_true",
        help="add the column latency_ms: milliseconds a sample (batch 1) predicted by this machine's latency model "
        "(nasdsl bench SPEC --calibrate makes it); implied by a budget, --pareto or --sort that names it",
    )
    b.add_argument(
        "--pareto",
        type=_pareto,
        metavar="COLS",
        help="keep the variants that no other beats in all these columns (smaller is better; COL:max for larger); "
        "of variants with equal figures there, the first",
    )
    b.add_argument("--sort", choices=COLUMNS, help="list by this column, smallest first (default: by id)")
    b.add_argument(
        "--sample",
        type=_count("--sample"),
        metavar="N",
        help="evaluate N variants drawn at random, those that do not compile among them (listed invalid and counted "
        "after the rows) unless --valid-only (with --count: the draws of an estimate, where one is made)",
    )
    b.add_argument(
        "--sample-by",
        type=_choice_of("--sample-by", spaces.SAMPLE_BY),
        default="variant",
        help="the distribution of --sample: variant (every variant equally likely; the default) or choice "
        "(each choice drawn on its own, every option equally likely)",
    )
    b.add_argument("--seed", type=_count("--seed"), default=0, help="the seed of --sample (default 0)")
    b.add_argument(
        "--limit",
        type=_count("--limit"),
        metavar="N",
        help=f"evaluate the first N variants only, or with --sample N of the sample (0: all; default: all up to "
        f"{MAX_LISTED:,}, else an error)",
    )
    b.add_argument(
        "--shard",
        type=_shard,
        metavar="i/n",
        help="list every n-th of the selected variants, starting with the i-th (shards 1/n .. n/n split them)",
    )
    o = parser.add_argument_group("output")
    o.add_argument(
        "--format",
        type=_choice_of("--format", FORMATS),
        default="table",
        help="table, json, csv, markdown, or ids (one variant id a line, for job scripts); default table",
    )
    o.add_argument(
        "--count",
        action="store_true",
        help="print the number of variants only: exact, without evaluating them; with budgets, --valid-only, "
        "--pareto, --unique or --shard, the number that pass them, by evaluating every variant up to "
        f"{MAX_LISTED:,}; above that, budgets are counted exactly where the figures add up stage by stage "
        "(docs/design-space.md), else estimated from --sample N variants drawn uniformly (1,000 by default), "
        "with a 95%% interval and the word 'estimate'; --pareto, --unique and --shard are refused there",
    )
    o.add_argument(
        "--pick", type=_count("--pick"), metavar="K", help="write variant K as a plain spec (to -o or stdout)"
    )
    o.add_argument("-o", "--output", metavar="FILE", help="with --pick: the spec file to write")


def _choice_of(option: str, allowed: tuple[str, ...]):
    def parse(text: str) -> str:
        if text not in allowed:
            hint = ""
            if text.endswith((".yaml", ".yml")) or "/" in text:  # `--unique SPEC`: the spec read as the rule
                hint = f" (a file? write the spec before {option}, or {option}={allowed[0]})"
            raise argparse.ArgumentTypeError(f"{option}: expected one of {', '.join(allowed)}, got {text!r}{hint}")
        return text

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``space``'s own options (the CLI adds SPEC, ``--set`` and the limits)."""
    add_listing_arguments(parser)


# ---------------------------------------------------------------------------
# Listing


@dataclass(frozen=True)
class Listing:
    """What a listing shows: the space, its count, and the variants selected, with how much it took."""

    space: spaces.Space
    count: int
    results: tuple[Result, ...]
    evaluated: int
    recompiled: int
    seconds: float
    latency: bool = False
    #: with --sample N: why fewer than N variants are listed (None: N were found, or no --sample)
    shortfall: str | None = None
    #: --unique: the hash column is shown
    unique: bool = False

    @property
    def invalid(self) -> int:
        """How many of the variants listed do not compile (listed with their errors)."""
        return sum(not r.valid for r in self.results)

    def invalid_note(self) -> str | None:
        """What a listing says of the variants it lists that do not compile (None: there are none)."""
        n, listed = self.invalid, len(self.results)
        if not n:
            return None
        verb, errors = ("does", "error") if n == 1 else ("do", "errors")
        return (
            f"{n:,} of the {listed:,} variants listed {verb} not compile (status invalid, listed with the "
            f"compiler's {errors}); --valid-only lists only variants that compile"
        )


def wants_latency(args: argparse.Namespace) -> bool:
    """Whether the options ask for the latency column (``--latency``, or a budget, --pareto or
    --sort that names it)."""
    named = [c for c, _ in [*args.at_most, *args.at_least]] + [c for c, _ in args.pareto or ()] + [args.sort]
    return bool(getattr(args, "latency", False)) or LATENCY in named


def select(space: spaces.Space, args: argparse.Namespace, *, max_nodes: int, limit_params: int = MAX_PARAMS) -> Listing:
    """Evaluate the variants ``args`` ask for and keep those that pass its filters, in order."""
    started = time.perf_counter()
    count = space.count()
    if args.sample is None and args.limit is None and count > MAX_LISTED:
        raise SpaceUsageError(
            f"the space has {count:,} variants: evaluate --sample N of them or the first --limit N (--limit 0 for all)",
            path="--limit",
        )
    wanted = count if args.sample is None else min(args.sample, count)
    if args.limit:  # --limit N caps what is evaluated: the first N, or N of the sample
        wanted = min(wanted, args.limit)
    _check_listing_memory(space, wanted, count, args)
    model = None
    if wants_latency(args):
        from nasdsl.bench.latency import require

        model = require()
    evaluator = Evaluator(space, max_nodes=max_nodes, max_params=limit_params, latency=model)
    shortfall = None
    unique = getattr(args, "unique", None)
    rule = BenchmarkRule(space) if unique == "benchmark" else None
    evaluator.hashes = unique == "strict"
    seen: set[str] = set()

    def keep(picks: tuple[int, ...]) -> Result | None:
        """The variant's result if it passes the filters (with its hash, under --unique), else None.
        Under --unique=benchmark the hash comes from the picks: a variant whose architecture passed
        already is not evaluated."""
        h = rule.hash(picks) if rule is not None else None
        if h in seen:
            return None
        r = evaluator.evaluate(picks)
        if not _passes(r, args):
            return None
        if unique:
            if rule is None and not r.valid:
                return None
            h = h if rule is not None else evaluator.hash(r.picks)
            if h is None or h in seen:
                return None
            seen.add(h)
            r = dataclasses.replace(r, hash=h)
        return r

    if args.sample is not None:
        kept, shortfall = _sample(space, evaluator, wanted, count, args, keep)
    else:
        results = [keep(p) for p in _first(space.variants(), wanted)]
        kept = [r for r in results if r is not None]
    if args.pareto:
        kept = _front(kept, args.pareto)
    if args.sort:
        kept.sort(key=lambda r: (not r.valid, getattr(r.figures, args.sort, 0) if r.valid else 0, r.id))
    if args.shard:
        i, n = args.shard
        kept = kept[i - 1 :: n]
    seconds = time.perf_counter() - started
    return Listing(
        space,
        count,
        tuple(kept),
        evaluator.evaluated,
        evaluator.recompiled,
        seconds,
        model is not None,
        shortfall,
        bool(unique),
    )


def filters(args: argparse.Namespace) -> list[str]:
    """The options given that leave variants out of a listing (budgets, --valid-only, --pareto, --shard)."""
    out = [f"{option} {column}={value:g}" if option in ("--max", "--min") else f"{option} {value:g}"
           for column, _, value, option in budgets(args)]  # fmt: skip
    flags = (
        ("--valid-only", args.valid_only),
        ("--unique", getattr(args, "unique", False)),
        ("--pareto", args.pareto),
        ("--shard", args.shard),
    )
    out += [option for option, given in flags if given]
    return out


def _sample(
    space: spaces.Space, evaluator: Evaluator, wanted: int, count: int, args: argparse.Namespace, keep
) -> tuple[list[Result], str | None]:
    """``wanted`` distinct variants drawn at random that pass the budgets and --valid-only, in id
    order, and why there are fewer when there are. The first ``wanted`` are
    :meth:`~nasdsl.space.Space.sample`'s; while filters leave some out, more are drawn (seeded by
    ``--seed`` too), until ``wanted`` pass, every variant was drawn, or
    :func:`~nasdsl.space.draw_limit` draws were made."""
    by = args.sample_by
    if by == "choice":
        picks, draws = space.sample_by_choice(wanted, args.seed)
    else:
        picks = space.sample(wanted, args.seed)
        draws = len(picks)
    seen = {space.id_of(p) for p in picks}
    kept = [r for r in (keep(p) for p in picks) if r is not None]
    if len(kept) < wanted and len(seen) < count:
        rng = random.Random(f"{args.seed}/more")
        limit = spaces.draw_limit(wanted)
        while len(kept) < wanted and len(seen) < count and draws < limit:
            draws += 1
            p = space.draw(rng, by)
            if p is None or space.id_of(p) in seen:
                continue
            seen.add(space.id_of(p))
            r = keep(p)
            if r is not None:
                kept.append(r)
    kept.sort(key=lambda r: r.id)
    asked = args.sample if not args.limit else min(args.sample, args.limit)
    if len(kept) >= asked:
        return kept, None
    given = filters(args)
    passing = f" that pass {', '.join(given)}" if given else ""
    if len(seen) >= count:
        why = f"the space has {count:,} variants, and all were drawn"
    else:
        why = (
            f"stopped after {draws:,} draws (at most 10 N + 100), {len(seen):,} distinct variants of {count:,} "
            "evaluated"
        )
    return kept, f"--sample {asked:,}: found {len(kept):,} of {asked:,} variants{passing}: {why}"


def _check_listing_memory(space: spaces.Space, wanted: int, count: int, args: argparse.Namespace) -> None:
    """Refuse, before anything is drawn or evaluated, a listing whose rows would not fit in
    ``--max-memory``: memory follows the variants listed, not the size of the space or of
    the sample asked for."""
    need = wanted * (ROW_BYTES + 64 * len(space.points))
    limit = getattr(args, "max_memory", None)
    if limit is not None and need > limit:
        what = f"all {count:,} variants" if wanted == count else f"{wanted:,} variants"
        raise SpaceUsageError(
            f"listing {what} needs about {need / (1 << 30):,.1f} GiB of memory, above the limit of "
            f"{limit / (1 << 30):.1f} GiB: list --sample N of them or the first --limit N (or raise --max-memory)",
            path="--sample" if args.sample is not None else "--limit",
        )


def _first(items, n: int | None) -> list:
    out = []
    for item in items:
        if n is not None and len(out) >= n:
            break
        out.append(item)
    return out


def _passes(r: Result, args: argparse.Namespace) -> bool:
    if not r.valid:
        return not (args.valid_only or args.pareto)
    f = r.figures
    for column, way, value, _ in budgets(args):
        if (getattr(f, column) > value) if way == "max" else (getattr(f, column) < value):
            return False
    return True


def _front(results: list[Result], columns: tuple[tuple[str, bool], ...]) -> list[Result]:
    """The valid results that no other beats in every column (Pareto-optimal), in order; of
    results with the same figures in those columns, the first only."""
    firsts: dict[tuple, Result] = {}
    for r in results:
        if r.valid:
            key = tuple(-getattr(r.figures, c) if bigger else getattr(r.figures, c) for c, bigger in columns)
            firsts.setdefault(key, r)
    front: list[tuple] = []
    for key in sorted(firsts):  # a key can only be beaten by one before it
        if not any(all(a <= b for a, b in zip(other, key, strict=True)) for other in front):
            front.append(key)
    ids = {firsts[k].id for k in front}
    return [r for r in results if r.id in ids]


# ---------------------------------------------------------------------------
# Rendering


def shown(listing: Listing) -> tuple[str, ...]:
    """The figure columns a listing shows: latency_ms only where a latency model predicted it."""
    return COLUMNS if listing.latency else tuple(c for c in COLUMNS if c != LATENCY)


def rows(listing: Listing) -> list[dict]:
    """One plain-data record per listed variant (the JSON contract's ``variants``)."""
    out = []
    space = listing.space
    columns = shown(listing)
    for r in listing.results:
        f = r.figures
        out.append(
            {
                "id": r.id,
                "choices": space.choices(r.picks),
                "set": space.set_arguments(r.picks),
                "valid": r.valid,
                "error": r.error,
                **{c: getattr(f, c) if f is not None else None for c in columns},
                **({"hash": r.hash} if listing.unique else {}),
            }
        )
    return out


def as_json(listing: Listing, spec: str, name: str, shard: tuple[int, int] | None) -> str:
    data = {
        "spec": spec,
        "name": name,
        "count": listing.count,
        "choices": [p.describe() for p in listing.space.points],
        "constraints": [c.text for c in listing.space.constraints],
        "evaluated": listing.evaluated,
        "recompiled": listing.recompiled,
        "listed": len(listing.results),
        "shard": f"{shard[0]}/{shard[1]}" if shard else None,
        "shortfall": listing.shortfall,
        "invalid": listing.invalid,
        "variants": rows(listing),
    }
    return json.dumps(data, indent=2) + "\n"


def as_csv(listing: Listing) -> str:
    names = [p.name for p in listing.space.points]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    columns = shown(listing)
    extra = ["hash"] if listing.unique else []
    w.writerow(["id", *names, "valid", *columns, *extra, "error"])
    for row in rows(listing):
        choices = [option_text(row["choices"][n]) for n in names]
        figures = ["" if row[c] is None else row[c] for c in columns]
        w.writerow([row["id"], *choices, str(row["valid"]).lower(), *figures, *(row[c] for c in extra), row["error"]])
    return buf.getvalue()


def _cell(v: object) -> str:
    """An option in a table cell: on one line (an expression may hold a newline)."""
    return one_line(option_text(v))


def heading(listing: Listing, name: str) -> str:
    space = listing.space
    sizes = " x ".join(f"{p.name} {len(p.options)}" for p in space.points) or "no choices"
    what = "variant" if listing.count == 1 else "variants"
    text = f"{name}: {listing.count:,} {what} ({sizes}"
    if space.constraints:
        text += f"; {len(space.constraints)} constraint{'s' if len(space.constraints) > 1 else ''}"
    text += ")"
    return text


def as_text(listing: Listing, name: str, fmt: str) -> str:
    names = [p.name for p in listing.space.points]
    extra = ["latency ms"] if listing.latency else []
    hashed = ["hash"] if listing.unique else []
    head = ["id", *names, "params", "MACs", "depth", "peak", *extra, *hashed, "status"]
    body = []
    notes = []
    for row in rows(listing):
        figures = [f"{row[c]:,}" if row[c] is not None else "" for c in ("params", "macs", "depth", "peak")]
        if listing.latency:
            figures.append(f"{row[LATENCY]:.2f}" if row[LATENCY] is not None else "")
        body.append(
            [
                str(row["id"]),
                *(_cell(row["choices"][n]) for n in names),
                *figures,
                *(row[c] for c in hashed),
                "ok" if row["valid"] else "invalid",
            ]
        )
        if not row["valid"]:
            notes.append(f"variant {row['id']}: {row['error']}")
    rate = listing.evaluated / listing.seconds if listing.seconds > 0 else 0.0
    footer = (
        f"{len(body):,} listed; {listing.evaluated:,} evaluated in {listing.seconds:.2f} s ({rate:,.0f}/s), "
        f"{listing.recompiled:,} compiled in full"
    )
    if listing.invalid_note() is not None:
        footer += f"\n{listing.invalid_note()}"
    if listing.shortfall is not None:
        footer += f"\n{listing.shortfall}"
    title = heading(listing, name)
    if fmt == "markdown":
        lines = [f"**{title}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in body]
        lines += ["", footer]
        lines += [f"- {printable(n)}" for n in notes]
        return "\n".join(lines) + "\n"
    right = set(range(len(names) + 1, len(names) + 5 + len(extra))) | {0}
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]

    def line(row: list[str]) -> str:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * w for w in widths)
    out = [title, line(head), rule, *map(line, body), rule, footer]
    out += [printable(n) for n in notes]
    return "\n".join(out) + "\n"


def render(listing: Listing, fmt: str, *, spec: str, name: str, shard=None) -> str:
    if fmt == "json":
        return as_json(listing, spec, name, shard)
    if fmt == "csv":
        return as_csv(listing)
    if fmt == "ids":
        return "".join(f"{r.id}\n" for r in listing.results)
    return as_text(listing, name, fmt)


# ---------------------------------------------------------------------------
# Picking one variant


def pick(space: spaces.Space, variant: int, args: argparse.Namespace, source: str) -> int:
    """Write (or print) variant ``variant`` as a plain spec, after checking that it compiles."""
    from nasdsl.files import write_atomic

    if args.output is not None:
        for read in space.files:  # the spec and the files it includes: the variant would replace its space
            if os.path.realpath(args.output) == os.path.realpath(read):
                raise SpaceUsageError(
                    f"{args.output} is read by this command (the spec): write the variant to another file",
                    path="--output",
                )
    picks = space.picks_of(variant)
    space.check(picks)
    result = Evaluator(space, max_nodes=args.max_nodes).compile(picks)
    if not result.valid:
        raise SpaceUsageError(f"variant {variant} does not compile:\n{result.error}", path="--pick")
    text = spaces.variant_yaml(space, picks, source)
    if args.output is None:
        sys.stdout.write(text)
        return 0
    data = text.encode("utf-8")
    write_atomic(args.output, data)
    made = " ".join(space.set_arguments(picks))
    print(f"wrote {one_line(args.output)} ({len(data):,} bytes): variant {variant}, {one_line(made)}")
    return 0


def list_variants(args: argparse.Namespace, space: spaces.Space, name: str) -> int:
    """What ``space`` and ``sweep`` do with the options of :func:`add_listing_arguments`."""
    if args.output is not None and args.pick is None:
        raise SpaceUsageError("-o names the file --pick writes; give --pick K", path="--output")
    if args.pick is not None:
        return pick(space, args.pick, args, args.spec)
    if args.count:
        return count_variants(space, args)
    listing = select(space, args, max_nodes=args.max_nodes)
    sys.stdout.write(render(listing, args.format, spec=args.spec, name=name, shard=args.shard))
    if listing.invalid_note() is not None:
        print(f"nasdsl: note: {listing.invalid_note()}", file=sys.stderr)
    if listing.shortfall is not None:
        print(f"nasdsl: note: {listing.shortfall}", file=sys.stderr)
    return 0


def count_variants(space: spaces.Space, args: argparse.Namespace) -> int:
    """``--count``: the number of variants that pass every filter given. Exact where the space is
    listed in full (up to 100,000 variants) or, above that, where the budgets' figures add up stage
    by stage (:func:`nasdsl.counting.count_by_stages`); otherwise an estimate from ``--sample N``
    variants drawn uniformly (1,000 by default; --seed seeds them), said to be one, with its 95%
    interval. Refused
    (exit 2) where neither works (--pareto, --unique and --shard above 100,000 variants)."""
    from nasdsl import counting  # numpy: only when counting (check and summary import neither)

    if args.limit:
        raise SpaceUsageError(
            "--count counts the whole space; it does not take --limit (list the variants instead)", path="--limit"
        )
    if args.sample_by != "variant":
        raise SpaceUsageError(
            f"--count counts variants, so an estimate draws every variant alike; it does not take --sample-by "
            f"{args.sample_by}",
            path="--sample-by",
        )
    count = space.count()
    given = filters(args)
    if args.sample is not None and (not given or count <= MAX_LISTED):
        raise SpaceUsageError(
            f"--count counts the whole space exactly; it does not take --sample here (it sizes an estimate only "
            f"where budgets apply to more than {MAX_LISTED:,} variants)",
            path="--sample",
        )
    if not given:
        return _print_count(counting.Count(count, True, "product", count, count), args)
    if count <= MAX_LISTED:
        listing = select(space, args, max_nodes=args.max_nodes)
        n = len(listing.results)
        return _print_count(counting.Count(n, True, "enumerated", n, n), args)
    compared = (("--pareto", args.pareto), ("--unique", getattr(args, "unique", False)), ("--shard", args.shard))
    global_filters = [option for option, on in compared if on]
    if global_filters:
        raise SpaceUsageError(
            f"cannot count the variants that pass {', '.join(given)}: {global_filters[0]} compares every variant "
            f"with the others, and the space has {count:,}, more than {MAX_LISTED:,}",
            path="--count",
        )
    bounds = [counting.Bound(column, way, value) for column, way, value, _ in budgets(args)]
    try:
        result = counting.count_by_stages(space, bounds, valid_only=args.valid_only, max_nodes=args.max_nodes)
        if args.sample is not None:
            print(
                "nasdsl: note: counted exactly by stages; --sample (the draws of an estimate) is not used",
                file=sys.stderr,
            )
    except counting.NotDecomposable as e:
        evaluator = Evaluator(space, max_nodes=args.max_nodes, latency=_latency_model(args))
        draws = args.sample if args.sample is not None else counting.DRAWS
        result = counting.estimate(
            space, lambda picks: _passes(evaluator.evaluate(picks), args), draws=draws, seed=args.seed, why=str(e)
        )
    return _print_count(result, args)


def _latency_model(args: argparse.Namespace):
    if not wants_latency(args):
        return None
    from nasdsl.bench.latency import require

    return require()


def _print_count(result, args: argparse.Namespace) -> int:
    if args.format == "json":
        sys.stdout.write(json.dumps({"spec": args.spec, **result.as_json()}, indent=2) + "\n")
    else:
        print(result.text())
    if not result.exact:
        print(
            f"nasdsl: note: an estimate, not an exact count ({result.why}): {result.draws:,} variants drawn "
            f"uniformly (--seed {args.seed}), 95% Wilson interval",
            file=sys.stderr,
        )
    return 0


def run(args: argparse.Namespace, net) -> int:
    """List the variants of ``args.spec`` (``net`` is its default variant, compiled)."""
    # the command line compiled the default variant already (nasdsl.cli)
    space = spaces.load_space(args.spec, args.overrides, limits=getattr(args, "limits", None), check=False)
    return list_variants(args, space, net.name)
