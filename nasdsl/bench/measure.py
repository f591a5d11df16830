"""The bench: every configuration prepared, checked against the fp32 PyTorch reference and
timed in one interleaved run; the table; the fastest configuration within a tolerance.

Each configuration's runner is made once (for the ONNX engines, from the artifact bytes of
:func:`nasdsl.bench.artifacts.onnx_artifact`, whose sha256 the row records). Its main output
on the evaluation inputs is compared with the generated PyTorch model's (the unoptimised
training model in eval mode, fp32, NCHW): the deviation is the largest absolute difference
divided by the largest magnitude of the reference (``nasdsl verify``'s measure), the largest
over the model's outputs where it has several, and where the user gave data, top-1 agreement
is the share of samples whose arg-max class is the reference's. A reference that is not finite
on the evaluation inputs is an error (:class:`BenchError`); one that is zero everywhere (a
classifier the seeded initialisation zeroes) leaves the deviation unmeasured, and one that is
the same for every input is said so. Timing: per batch size, every runner is warmed up, then called in rounds in a
rotating order (a drift in machine speed hits all alike), each call repeated to last at
least :data:`MIN_CALL` seconds; the figure is the median over rounds.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace

import numpy as np

from nasdsl import ir
from nasdsl.bench import artifacts, engines
from nasdsl.bench.data import Inputs, generated
from nasdsl.bench.engines import Config, Runner
from nasdsl.errors import NasdslError

#: a timed call lasts at least this long (repeating a fast model)
MIN_CALL = 0.02
#: the table's columns, in order (JSON rows carry the same keys)
COLUMNS = ("engine", "precision", "batch", "images_per_s", "latency_ms", "deviation", "agreement", "target")


@dataclass(frozen=True)
class Row:
    """One configuration measured: images per second, milliseconds per batch, the deviation from
    the reference, top-1 agreement (None without user data), the target that writes its artifact,
    the artifact's sha256 (ONNX engines), and an error where it could not run."""

    engine: str
    precision: str
    batch: int
    target: str
    images_per_s: float | None = None
    latency_ms: float | None = None
    deviation: float | None = None
    agreement: float | None = None
    sha256: str | None = None
    error: str = ""
    fastest: bool = False


class BenchError(NasdslError):
    """Inputs on which the reference computes no finite output (exit 2)."""


class Progress:
    """A one-line progress bar on ``stream`` (stderr), redrawn in place on a terminal."""

    def __init__(self, total: int, stream=None, width: int = 24):
        self.total, self.done, self.width = max(total, 1), 0, width
        self.stream = stream if stream is not None else sys.stderr
        self.tty = getattr(self.stream, "isatty", lambda: False)()

    def step(self, text: str) -> None:
        filled = self.width * self.done // self.total
        line = f"[{'#' * filled}{'.' * (self.width - filled)}] {self.done}/{self.total} {text}"
        self.stream.write(("\r" + line.ljust(79)) if self.tty else line + "\n")
        self.stream.flush()
        self.done += 1

    def close(self) -> None:
        if self.tty:
            self.stream.write("\r" + " " * 79 + "\r")
            self.stream.flush()


def plan(
    names: Iterable[str],
    precisions: Iterable[str],
    batches: Iterable[int],
    offered: tuple[str, ...],
    layout: str | None = "channels_last",
) -> list[Config]:
    """The configurations of ``names`` (engines) at ``precisions`` that each engine and this
    CPU (``offered``) support, for every batch size; ``layout``: the channels-last memory
    format of the model's input (:func:`~nasdsl.bench.engines.channels_last`; None: there is
    none, and ``eager-cl`` is left out)."""
    wanted = set(precisions) & set(offered)
    return [
        Config(e, p, b, layout)
        for b in batches
        for e in names
        if not (e == "eager-cl" and layout is None)
        for p in engines.ENGINES[e]
        if p in wanted
    ]  # fmt: skip


def bench(
    net,
    configs: list[Config],
    *,
    inputs: Inputs,
    weights=None,
    threads: int,
    repeats: int = 7,
    progress: Progress | None = None,
    notes: list[str] | None = None,
    tolerance: float | None = None,
) -> list[Row]:
    """Prepare, check and time every configuration (see the module docstring); with
    ``tolerance``, the fastest of each batch size within it marked (:func:`mark_fastest`) unless
    the reference's output varies across the evaluation inputs by no more than the tolerance (of
    its largest magnitude): then a deviation within it cannot tell a wrong function from a right
    one (the spec's seeded initialisation makes some classifiers' outputs the same for every
    input), and none is marked. What the reader must know of the reference is appended to
    ``notes``."""
    from nasdsl.backends.verify import torch_model
    from nasdsl.optimize import build_inference

    g = net.graph
    shape = ir.node(g, ir.info(g).input).shape
    # at least two generated samples: whether the reference depends on its input is measured
    count = max(2, *(c.batch for c in configs))
    evaluation = inputs.evaluation if inputs.given else generated(shape, count, 1).calibration
    import torch

    before = torch.get_num_threads()
    try:
        return _bench(
            net,
            configs,
            inputs,
            weights,
            threads,
            repeats,
            progress,
            evaluation,
            torch_model,
            build_inference,
            notes if notes is not None else [],
            tolerance,
        )
    finally:
        torch.set_num_threads(before)


def _bench(
    net,
    configs,
    inputs,
    weights,
    threads,
    repeats,
    progress,
    evaluation,
    torch_model,
    build_inference,
    notes,
    tolerance,
):
    import torch

    g = net.graph
    torch.set_num_threads(threads)
    reference = torch_model(g, weights)
    with torch.inference_mode():
        parts = [engines.torch_outputs(reference(torch.from_numpy(b))) for b in _chunks(evaluation, 16)]
    want = [np.concatenate(o) for o in zip(*parts, strict=True)]
    _refuse_non_finite(want, inputs, weights)
    unchecked = all(float(np.max(np.abs(w), initial=0.0)) == 0.0 for w in want)
    comparable = _comparable(want, unchecked, tolerance, weights, notes)
    progress = progress or Progress(len(configs), stream=_Null())
    prepared: dict[Config, tuple[Runner, object]] = {}
    rows: dict[Config, Row] = {}
    for config in configs:
        progress.step(f"{config.engine} {config.precision} batch {config.batch}: preparing")
        row = Row(config.engine, config.precision, config.batch, config.target)
        try:
            runner, sha = _prepare(net, config, inputs, weights, threads, build_inference)
            outs = [runner.every(b) for b in _padded(evaluation, config.batch)]
            got = [np.concatenate(o)[: len(evaluation)] for o in zip(*outs, strict=True)]
        except NasdslError as e:  # a located error (calibration data the quantiser cannot use): its own words
            rows[config] = replace(row, error=f"{e.path}: {e.message}" if e.path else e.message)
            continue
        except Exception as e:  # noqa: BLE001 - an engine that fails is a row that says so
            rows[config] = replace(row, error=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            continue
        found = _deviation(got, want)
        if not math.isfinite(found):  # NaN outputs, or another number or shape of them: not the model
            shapes = ", ".join(str(tuple(o.shape[1:])) for o in got)
            rows[config] = replace(
                row,
                sha256=sha,
                error=f"its outputs ({shapes}) are not finite or not the reference's "
                f"({', '.join(str(tuple(o.shape[1:])) for o in want)}): not timed",
            )
            continue
        rows[config] = replace(
            row,
            sha256=sha,
            deviation=None if unchecked else found,
            agreement=_agreement(got[0], want[0], inputs),
        )
        prepared[config] = (runner, runner.feed(_padded(evaluation, config.batch)[0]))
    for batch in sorted({c.batch for c in configs}):
        progress.step(f"timing batch {batch}: {repeats} rounds")
        group = {c: prepared[c] for c in configs if c.batch == batch and c in prepared}
        seconds = _timed({c: (lambda r=r, x=x: r.run(x)) for c, (r, x) in group.items()}, repeats)
        for c, t in seconds.items():
            rows[c] = replace(rows[c], latency_ms=t * 1e3, images_per_s=batch / t)
    progress.close()
    out = [rows[c] for c in configs]
    return mark_fastest(out, tolerance) if tolerance is not None and comparable else out


def _prepare(net, config: Config, inputs: Inputs, weights, threads: int, build_inference) -> tuple[Runner, str | None]:
    if config.onnx:
        from nasdsl.bench.artifacts import onnx_artifact

        data = onnx_artifact(
            net.graph,
            config.target,
            calibration=inputs.calibration,
            state_dict=weights,
            batch=config.batch,
            check=False,
        )
        runner = engines.open_onnx(data, config.engine, config.precision, threads)
        return runner, hashlib.sha256(data).hexdigest()
    return engines.torch_runner(build_inference(net, "cpu", weights), config, threads), None


def _refuse_non_finite(want: list[np.ndarray], inputs: Inputs, weights) -> None:
    """Refuse a reference that is not finite on the evaluation inputs (:class:`BenchError`)."""
    for k, w in enumerate(want):
        bad = ~np.isfinite(w.reshape(len(w), -1)).all(axis=1)
        if bad.any():
            which = f"output {k + 1} of {len(want)}" if len(want) > 1 else "output"
            sample = int(np.argmax(bad))
            if inputs.given:
                raise BenchError(
                    f"the fp32 PyTorch reference's {which} is not finite (inf or NaN) on evaluation sample "
                    f"{sample}: expected inputs preprocessed as the model takes them, of ordinary size "
                    f"(the largest here is {float(np.max(np.abs(inputs.evaluation))):.3g})",
                    path=inputs.source,
                )
            given = "--weights" if weights is not None else "the spec's seeded initialisation"
            raise BenchError(
                f"the fp32 PyTorch reference's {which} is not finite (inf or NaN) on generated standard normal "
                f"sample {sample}: the weights ({given}) make it overflow",
                path="--weights" if weights is not None else None,
            )


def spread(want: list[np.ndarray]) -> float | None:
    """How much the reference's outputs vary across the samples: the largest over the outputs of
    max |out - out of the first sample| / max |out| (0 for outputs that are 0 everywhere; None
    with one sample)."""
    if len(want[0]) < 2:
        return None
    found = 0.0
    for w in want:
        scale = float(np.max(np.abs(w), initial=0.0))
        if scale > 0:
            found = max(found, float(np.max(np.abs(w.astype(np.float64) - w[:1]))) / scale)
    return found


def _comparable(want: list[np.ndarray], zero: bool, tolerance: float | None, weights, notes: list[str]) -> bool:
    """Whether a deviation within ``tolerance`` says the function is the reference's; notes why not."""
    by = "with these weights" if weights is not None else "the spec's seeded initialisation: give --weights"
    if zero:
        notes.append(
            f"the reference's output is 0 on every evaluation input ({by}): no deviation is measured and no "
            "configuration is marked"
        )
        return False
    varies = spread(want)
    if varies is None or tolerance is None or varies > tolerance:
        return True
    notes.append(
        f"the reference's output varies by {varies:.2g} of its largest magnitude across the {len(want[0])} "
        f"evaluation inputs, no more than the tolerance {tolerance:g}: a deviation within it cannot tell a wrong "
        f"function from a right one ({by}, or --data of distinct samples); no configuration is marked"
    )
    return False


def _chunks(x: np.ndarray, n: int) -> list[np.ndarray]:
    return [x[i : i + n] for i in range(0, len(x), n)]


def _padded(x: np.ndarray, batch: int) -> list[np.ndarray]:
    """``x`` in batches of exactly ``batch`` samples; a short last batch is filled by repeating
    samples from the start (the caller keeps the first ``len`` outputs of each)."""
    out = []
    for chunk in _chunks(x, batch):
        if len(chunk) < batch:
            fill = np.arange(batch - len(chunk)) % len(x)
            chunk = np.concatenate([chunk, x[fill]])
        out.append(np.ascontiguousarray(chunk))
    return out


def _deviation(got: list[np.ndarray], want: list[np.ndarray]) -> float:
    """The largest over the outputs of each one's deviation (a missing, misshapen or non-finite one: inf)."""
    return artifacts.deviation(got, want)


def _agreement(got: np.ndarray, want: np.ndarray, inputs: Inputs) -> float | None:
    if not inputs.given or got.shape != want.shape or got.ndim != 2:
        return None
    return float(np.mean(np.argmax(got, axis=1) == np.argmax(want, axis=1)))


def _timed(calls: dict[Config, Callable[[], object]], repeats: int) -> dict[Config, float]:
    """Median seconds per call of each, interleaved (see the module docstring)."""
    inner: dict[Config, int] = {}
    for c, call in calls.items():
        call()
        start = time.perf_counter()
        call()
        inner[c] = max(1, math.ceil(MIN_CALL / max(time.perf_counter() - start, 1e-9)))
    names = list(calls)
    times: dict[Config, list[float]] = {c: [] for c in names}
    for r in range(repeats):
        k = r % len(names) if names else 0
        for c in names[k:] + names[:k]:
            start = time.perf_counter()
            for _ in range(inner[c]):
                calls[c]()
            times[c].append((time.perf_counter() - start) / inner[c])
    return {c: statistics.median(t) for c, t in times.items()}


def mark_fastest(rows: list[Row], tolerance: float) -> list[Row]:
    """The rows with the fastest one of each batch size among those that ran and deviate by at
    most ``tolerance`` marked (``fastest``); an ONNX artifact also by at most its precision's
    :data:`~nasdsl.bench.artifacts.TOLERANCE`, beyond which ``nasdsl compile`` refuses to write it."""
    best: dict[int, Row] = {}
    for r in rows:
        most = min(tolerance, artifacts.TOLERANCE[r.precision]) if r.sha256 else tolerance
        if r.images_per_s is None or r.deviation is None or not r.deviation <= most:
            continue
        if r.batch not in best or r.images_per_s > best[r.batch].images_per_s:
            best[r.batch] = r
    chosen = {id(r) for r in best.values()}
    return [replace(r, fastest=id(r) in chosen) for r in rows]


# ---------------------------------------------------------------------------
# Rendering


def _cells(r: Row) -> list[str]:
    def number(v: float | None, fmt: str) -> str:
        return "" if v is None else format(v, fmt)

    return [
        r.engine,
        r.precision,
        str(r.batch),
        number(r.images_per_s, ".1f"),
        number(r.latency_ms, ".2f"),
        number(r.deviation, ".2e"),
        "" if r.agreement is None else f"{100 * r.agreement:.1f}%",
        r.target + (" *" if r.fastest else ""),
    ]


HEADINGS = ("engine", "precision", "batch", "img/s", "latency ms", "max deviation", "top-1 agree", "target")


def render(report: dict, fmt: str) -> str:
    """The report (:func:`report`) as a text table, Markdown or JSON."""
    if fmt == "json":  # strict JSON: every figure is finite or null (a row that is not is an error)
        return json.dumps(report, indent=2, allow_nan=False) + "\n"
    rows = [Row(**r) for r in report["rows"]]
    body = [_cells(r) for r in rows]
    notes = [f"{r.engine} {r.precision} batch {r.batch}: failed: {r.error}" for r in rows if r.error]
    notes += report["notes"]
    tail = [
        f"* fastest within max deviation {report['tolerance']:g}:",
        *(f"  {t}" for t in report["fastest_text"] or ["none"]),
    ]
    head = [report["title"], report["machine"], report["data"]]
    if fmt == "markdown":
        lines = [f"**{head[0]}**", "", *(f"- {h}" for h in head[1:]), ""]
        lines += ["| " + " | ".join(HEADINGS) + " |", "|" + "---|" * len(HEADINGS)]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        lines += ["", *tail, *(f"- {n}" for n in notes)]
        return "\n".join(lines) + "\n"
    widths = [max(len(x[i]) for x in [HEADINGS, *body]) for i in range(len(HEADINGS))]
    right = {2, 3, 4, 5, 6}

    def line(cells) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([*head, line(HEADINGS), rule, *map(line, body), rule, *tail, *notes]) + "\n"


def report(
    spec: str,
    name: str,
    rows: list[Row],
    *,
    tolerance: float,
    machine,
    data: str,
    notes: list[str],
    options: Iterable[str] = (),
    calibration: str | None = None,
) -> dict:
    """Plain data (the JSON contract): the machine, the data, the rows, the fastest of each batch.
    The command that writes the fastest's artifact carries ``options`` (the spec's ``--set`` and
    ``--weights``: what changes the artifact) and, for an int8 target, ``--data calibration``, so
    that it writes the bytes measured."""
    import shlex

    fastest = [r for r in rows if r.fastest]
    given = "".join(f" {shlex.quote(o)}" for o in options)

    def command(r: Row) -> str:
        line = f"nasdsl compile {shlex.quote(spec)}{given} --optimize-for {r.target}"
        if not r.sha256:
            return line + " -o model.py"
        if r.precision == "int8" and calibration is not None:
            line += f" --data {shlex.quote(calibration)}"
        return line + f" --batch {r.batch} -o model.onnx"

    return {
        "title": f"{name} ({spec}): engines and precisions on this CPU",
        "spec": spec,
        "machine": machine.describe(),
        "cpu": {"model": machine.model, "flags": list(machine.flags), "cores": machine.cores},
        "versions": versions(),
        "data": data,
        "tolerance": tolerance,
        "columns": list(COLUMNS),
        "rows": [asdict(r) for r in rows],
        "fastest": [asdict(r) for r in fastest],
        "fastest_text": [
            f"batch {r.batch}: {r.engine} {r.precision} ({r.images_per_s:.1f} img/s): {command(r)}" for r in fastest
        ],
        "notes": notes,
    }


def versions() -> dict[str, str]:
    """The versions of the engines installed."""
    import importlib.metadata as md

    out = {}
    for package in ("torch", "onnxruntime", "openvino"):
        try:
            out[package] = md.version(package)
        except md.PackageNotFoundError:
            continue
    return out


class _Null:
    def write(self, text: str) -> None:
        pass

    def flush(self) -> None:
        pass


__all__ = [
    "BenchError",
    "COLUMNS",
    "Progress",
    "spread",
    "Row",
    "bench",
    "mark_fastest",
    "plan",
    "render",
    "report",
    "versions",
]
