"""The written spec against the imported graph: the same network, node for node.

:func:`check` compiles the spec text (``nasdsl.compile_spec``) and compares its graph with the
flat graph the frontend read: every node by its qualified name (the ``state_dict`` prefix),
with its op, its attributes (as the op registry, ``nasdsl/ops/``, normalises them; rates within 1e-11
relative: a spec writes rates to 12 significant digits), its inputs in order, its shape and
its phase; the outputs; and that the PyTorch backend writes the model. A difference is an
internal error of the importer, never a silently different network.
"""

from __future__ import annotations

import math
import os
import tempfile

from nasdsl.errors import LimitError, NasdslError
from nasdsl.importer.flat import FlatModel, ImportFailure
from nasdsl.loader import Limits
from nasdsl.ops import OPS


class ImportMismatch(Exception):
    """The spec the importer wrote computes something else than the source (a bug)."""


def _nodes(g):
    """(name, op, attrs, inputs, shape, phase) of each node of a compiled graph: the one place
    that reads the IR's node records."""
    from nasdsl import ir

    for name, data in ir.nodes(g):
        yield name, data.op, data.attrs, ir.inputs(g, name), data.shape, data.phase


#: the limits the written spec is compiled under: those ``nasdsl check`` and ``compile`` apply by default
SPEC_LIMITS = Limits()


def compile_text(text: str, stem: str):
    from nasdsl.api import compile_spec

    fd, path = tempfile.mkstemp(prefix=f"{stem}-", suffix=".yaml")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        return compile_spec(path, limits=SPEC_LIMITS)
    finally:
        os.unlink(path)


def input_within_limits(shape: tuple, *, what: str, where: str, hint: str = "") -> None:
    """Refuse an input shape (batch excluded) that a spec cannot hold: a size below 1, or one
    above the builder's bounds (``nasdsl.build.MAX_SPATIAL`` for a spatial axis or a sequence,
    ``nasdsl.ops.MAX_CHANNELS`` for channels). Such a source is the user's input, not the
    importer's fault: an ImportFailure (exit 2), where the written spec failed to compile."""
    from nasdsl import ir
    from nasdsl.build import MAX_SPATIAL
    from nasdsl.ops import MAX_CHANNELS

    names = {"C": "channels", "T": "time", "H": "height", "W": "width", "L": "length"}
    for k, (size, axis) in enumerate(zip(shape, ir.default_axes(len(shape)), strict=True)):
        most = MAX_CHANNELS if axis in "C?" else MAX_SPATIAL
        at = f"its {names[axis]} ({axis})" if axis in names else f"axis {k} (the batch excluded)"
        if size < 1:
            empty = ", an empty tensor" if size == 0 else ""
            problem = f"a size of {size} for {at}{empty}: a spec's input has sizes of at least 1"
        elif size > most:
            problem = f"a size of {size:,} for {at}: a spec's input has at most {most:,} there"
        else:
            continue
        raise ImportFailure(f"{what} has {problem}{hint}", where=where)


def within_limits(model: FlatModel) -> None:
    """What the spec's builder bounds, checked on the imported graph before a spec is written:
    the input's sizes and the number of nodes (``nasdsl.build.MAX_NODES``)."""
    from nasdsl.build import MAX_NODES

    input_within_limits(
        tuple(model.input.shape), what=f"the input, of shape {list(model.input.shape)},", where=model.source
    )
    if len(model.nodes) + 1 > MAX_NODES:
        raise ImportFailure(
            f"the graph has {len(model.nodes) + 1:,} nodes with its input: a spec builds at most {MAX_NODES:,}",
            where=model.source,
        )


def check(model: FlatModel, text: str):
    """Compile ``text`` and compare it with ``model``; returns the compiled spec."""
    try:
        net = compile_text(text, model.name)
    except LimitError as e:
        # the source is too large for a spec (its file's bytes, YAML nodes, graph nodes, parameters)
        raise ImportFailure(
            "its spec would be beyond a limit that check and compile apply by default, so none is written: "
            + e.message,
            where=model.source,
        ) from None
    except NasdslError as e:
        raise ImportMismatch(f"the written spec does not compile: {e.format()}") from None
    from nasdsl import ir

    g = net.graph
    info = ir.info(g)
    paths = {i: n.path for i, n in model.nodes.items()}
    paths[model.input.id] = info.input
    theirs = {name: (op, attrs, inputs, shape, phase) for name, op, attrs, inputs, shape, phase in _nodes(g)}
    problems: list[str] = []
    if tuple(theirs[info.input][3]) != tuple(model.input.shape):
        problems.append(f"input shape {theirs[info.input][3]} != {model.input.shape}")
    given = theirs[info.input][1]
    for key in ("mean", "std"):
        want = model.input.attrs.get(key)
        got = given.get(key)
        if (want is None) != (got is None) or (
            want is not None and not all(math.isclose(a, b, rel_tol=1e-11) for a, b in zip(want, got, strict=True))
        ):
            problems.append(f"input {key} {got} != {want}")
    sources = {paths[node.id] for node in model.nodes.values()}

    def through(n: str) -> str:
        """``n`` past the identities the builder adds that the source lacks (a merge that reads
        one value twice reads it once through an identity: ``j.1``)."""
        while n not in sources and n in theirs and theirs[n][0] == "identity" and len(theirs[n][2]) == 1:
            n = theirs[n][2][0]
        return n

    added = {n for n in theirs if n not in sources and through(n) != n}
    wanted = set()
    for node in model.nodes.values():
        name = paths[node.id]
        wanted.add(name)
        if name not in theirs:
            problems.append(f"{name}: missing from the spec's graph")
            continue
        op, attrs, inputs, shape, phase = theirs[name]
        if op != node.op:
            problems.append(f"{name}: op {op} != {node.op}")
            continue
        mine = OPS[node.op].normalise(node.attrs)
        if not _attrs_equal(mine, attrs):
            problems.append(f"{name}: attributes {attrs} != {mine}")
        if [through(i) for i in inputs] != [paths[i] for i in node.inputs]:
            problems.append(f"{name}: inputs {list(inputs)} != {[paths[i] for i in node.inputs]}")
        if tuple(shape) != tuple(node.shape):
            problems.append(f"{name}: shape {shape} != {node.shape}")
        if phase != node.phase:
            problems.append(f"{name}: phase {phase} != {node.phase}")
    extra = sorted(set(theirs) - wanted - added - {info.input})
    if extra:
        problems.append(f"nodes the source does not have: {', '.join(extra[:5])}")
    outs = [(o.name, o.node) for o in info.outputs]
    mine_outs = [(o.name, paths[o.node]) for o in model.outputs]
    if outs != mine_outs:
        problems.append(f"outputs {outs} != {mine_outs}")
    if problems:
        shown = "; ".join(problems[:6]) + (f"; and {len(problems) - 6} more" if len(problems) > 6 else "")
        raise ImportMismatch(f"the written spec differs from the source: {shown}")
    if any(n.op == "opaque" for n in model.nodes.values()):
        return net  # the backends refuse it, by design: nothing more to check
    from nasdsl.backends.pytorch import generate_source

    try:
        generate_source(g)
    except NasdslError as e:
        raise ImportMismatch(f"the PyTorch backend cannot write the spec: {e.format()}") from None
    return net


def _attrs_equal(a: dict, b: dict) -> bool:
    if set(a) != set(b):
        return False
    for k, x in a.items():
        y = b[k]
        if isinstance(x, float) and isinstance(y, (int, float)) and not isinstance(y, bool):
            if not math.isclose(x, float(y), rel_tol=1e-11, abs_tol=1e-15):
                return False
        elif x != y:
            return False
    return True
