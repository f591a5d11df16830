"""``nasdsl import``: a PyTorch model or an ONNX file as a spec, its templates discovered.

>>> result = import_model("torchvision:googlenet")          # doctest: +SKIP
>>> print(result.text)                                      # the spec, YAML
>>> result.report.templates[1]                              # ('Inception', [...], 9)

The pipeline, one module each:

1. a frontend reads the source into a flat graph of nasdsl ops with the module tree
   (:mod:`~nasdsl.importer.torch_frontend` through torch.fx, :mod:`~nasdsl.importer.onnx_frontend`
   with the onnx package alone: nothing of an ONNX file is executed), mapping each op through
   its table (:mod:`~nasdsl.importer.torch_ops`, :mod:`~nasdsl.importer.onnx_ops`);
2. :mod:`~nasdsl.importer.rewrite` makes every scope a one-input block, keeping every value;
3. :mod:`~nasdsl.importer.bodies` writes each scope as a body; :mod:`~nasdsl.importer.templates`
   groups the bodies of a class into templates and names their parameters
   (:mod:`~nasdsl.importer.params`);
4. :mod:`~nasdsl.importer.emit` writes the spec (:mod:`~nasdsl.importer.repeats`,
   :mod:`~nasdsl.importer.yaml_text`);
5. :mod:`~nasdsl.importer.check` compiles the spec and compares its graph with the flat graph,
   node by node: an import never returns a different network.
"""

from __future__ import annotations

import operator
import os
import time
from dataclasses import dataclass, field

from nasdsl.importer.check import ImportMismatch
from nasdsl.importer.flat import FlatModel, ImportFailure

__all__ = ["ImportFailure", "Imported", "Report", "import_model"]


@dataclass
class Report:
    """What an import found: the templates with their parameters and uses, sizes, time."""

    source: str
    name: str
    #: (template, parameter names, number of uses), in the spec's order
    templates: list[tuple[str, list[str], int]]
    nodes: int
    params: int
    macs: int
    lines: int
    seconds: float
    notes: list[str] = field(default_factory=list)

    def as_text(self) -> str:
        n = len(self.templates)
        out = [
            f"imported {self.source} as {self.name}: {self.nodes} nodes, {self.params:,} parameters, "
            f"{self.macs:,} multiply-adds; {n} template{'s' if n != 1 else ''}, {self.lines} lines "
            f"({self.seconds:.2f} s)"
        ]
        for name, params, uses in self.templates:
            out.append(f"  {name}({', '.join(params)}): {uses} use{'s' if uses != 1 else ''}")
        out += [f"  note: {n}" for n in self.notes]
        return "\n".join(out) + "\n"

    def as_dict(self) -> dict:
        return {
            "source": self.source,
            "name": self.name,
            "templates": [{"name": n, "params": p, "uses": u} for n, p, u in self.templates],
            "nodes": self.nodes,
            "params": self.params,
            "macs": self.macs,
            "lines": self.lines,
            "seconds": round(self.seconds, 3),
            "notes": self.notes,
        }


@dataclass
class Imported:
    """The result of :func:`import_model`."""

    text: str
    report: Report
    #: the compiled spec (``nasdsl.Compiled``)
    compiled: object
    #: the source's tensors keyed as the generated model's state_dict (numpy arrays), when asked for
    weights: dict | None = None
    #: a PyTorch source as it was read (the module whose tensors ``weights`` are); None for ONNX
    reference: object = field(default=None, repr=False)


def import_model(
    source,
    *,
    input_shape: tuple[int, ...] | list[int] | None = None,
    name: str | None = None,
    weights: bool = False,
    allow_opaque: bool = False,
    by_structure: bool = False,
) -> Imported:
    """Import ``source`` as a spec.

    ``source`` is ``"torchvision:NAME"``, ``"module:PACKAGE.MODULE:FACTORY"`` (a callable of
    the user's returning an ``nn.Module``: it is imported and run), the path of an ``.onnx``
    file (parsed with the onnx package; an attention read as one op is evaluated by its reference
    evaluator on one random input, to check it), an ``onnx.ModelProto``, an
    ``nn.Module`` or a callable returning one (called with the constructor arguments recorded,
    which name the templates' parameters). ``input_shape`` is (C, H, W) (default: the model's
    own, torchvision's crop size (a segmentation model's resize size) or the ONNX input's, else
    3x224x224). ``weights``: also return
    the source's tensors keyed like the generated model's state_dict.

    Raises :class:`ImportFailure` (a ``NasdslError``: exit 2 at the command line) naming the
    node and op that has no spec equivalent; with ``allow_opaque``, such a node that reads one
    tensor and holds no weights is kept as an ``opaque`` op (its output shape and, as the
    block's ``doc``, what it was), which every backend refuses.

    ``by_structure`` (ONNX only): ignore the file's node names and metadata and find its
    blocks by structure alone, as for a graph that has neither (:mod:`nasdsl.importer.discover`).
    """
    started = time.perf_counter()
    onnx_source = type(source).__name__ == "ModelProto" or (
        isinstance(source, (str, os.PathLike)) and str(source).lower().endswith(".onnx")
    )
    if by_structure and not onnx_source:
        raise ImportFailure(
            "finding blocks by structure alone (--by-structure) is for ONNX files: a PyTorch model has its modules",
            where=str(source) if isinstance(source, (str, os.PathLike)) else type(source).__name__,
        )
    try:
        return _import(source, input_shape, name, weights, allow_opaque, by_structure, started)
    except (ImportFailure, ImportMismatch) as first:
        if not onnx_source or by_structure:
            raise
        # the module tree an ONNX file's names or metadata give may not be one a spec can write
        # (the dynamo exporter's ShuffleNet branches, DenseNet's concatenations): its blocks are
        # then found by structure, which the importer checks as it checks every import, and said so
        try:
            result = _import(source, input_shape, name, weights, allow_opaque, True, started)
        except (ImportFailure, ImportMismatch):
            raise first from None
        reason = (first.message if isinstance(first, ImportFailure) else str(first)).strip().splitlines()[0][:200]
        result.report.notes.insert(
            0, f"the file's module tree could not be written as a spec ({reason}): blocks found by structure"
        )
        return result


def _import(source, input_shape, name, weights, allow_opaque, by_structure, started) -> Imported:
    model = _read(source, input_shape, name, weights, allow_opaque, by_structure)
    try:
        return finish(model, started, weights)
    except (ImportFailure, ImportMismatch) as e:
        if not model.blocks_found:
            raise
        # the blocks found by structure are a reading of the graph, not the graph: when the
        # spec cannot be written with them, the graph is imported without them, and says so
        reason = (e.message if isinstance(e, ImportFailure) else str(e)).strip().splitlines()[0][:200]
        model = _read(source, input_shape, name, weights, allow_opaque, by_structure, find_blocks=False)
        model.notes.append(f"the blocks found by structure could not be written as a spec ({reason}): imported flat")
        return finish(model, started, weights)


def _read(source, input_shape, name, weights, allow_opaque, by_structure=False, find_blocks=True) -> FlatModel:
    shape = _sizes(input_shape) if input_shape is not None else None
    if isinstance(source, (str, os.PathLike)) and str(source).lower().endswith(".onnx"):
        from nasdsl.importer.onnx_frontend import read_onnx_file

        return read_onnx_file(
            str(source),
            input_shape=shape,
            name=name,
            allow_opaque=allow_opaque,
            by_structure=by_structure,
            find_blocks=find_blocks,
        )
    if type(source).__name__ == "ModelProto":
        from nasdsl.importer.onnx_frontend import read_onnx

        return read_onnx(
            source,
            label="<onnx model>",
            input_shape=shape,
            name=name,
            allow_opaque=allow_opaque,
            by_structure=by_structure,
            find_blocks=find_blocks,
        )
    from nasdsl.importer import torch_frontend as tf

    if isinstance(source, str):
        module, records, label, default = tf.load(source, on_meta=not weights)
        flat = tf.read_module(
            module, input_shape=shape or default, records=records, label=label, name=name, allow_opaque=allow_opaque
        )
        flat.reference = module
        return flat
    import torch

    if isinstance(source, torch.nn.Module):
        flat = tf.read_module(
            source, input_shape=shape, label=type(source).__name__, name=name, allow_opaque=allow_opaque
        )
        flat.reference = source
        return flat
    if callable(source):
        with tf.recording_constructors() as records:
            module = source()
        if not isinstance(module, torch.nn.Module):
            raise ImportFailure(f"the factory returned {type(module).__name__}, expected an nn.Module", where="import")
        label = getattr(source, "__qualname__", type(module).__name__)
        flat = tf.read_module(
            module, input_shape=shape, records=records, label=label, name=name, allow_opaque=allow_opaque
        )
        flat.reference = module
        return flat
    raise ImportFailure(
        f"cannot import a {type(source).__name__}: expected torchvision:NAME, module:PKG.MOD:FACTORY, an .onnx "
        "path, an onnx.ModelProto, an nn.Module or a callable returning one",
        where="import",
    )


def _sizes(input_shape) -> tuple[int, ...]:
    """``input_shape`` as whole numbers of 1 or more: 3.5 (or True) is no size, which int() would
    read as 3. How many the source takes is its frontend's to say (C, H, W for a PyTorch model;
    an ONNX file's input's order and rank)."""
    try:
        if isinstance(input_shape, (str, bytes)) or any(isinstance(v, bool) for v in input_shape):
            raise TypeError("text or a truth value")
        sizes = tuple(operator.index(v) for v in input_shape)
    except TypeError:
        raise ImportFailure(
            "input_shape: expected a sequence of whole numbers, the sizes of one sample (C, H, W), got "
            f"{input_shape!r}",
            where="import",
        ) from None
    if not sizes or any(v < 1 for v in sizes):
        raise ImportFailure(
            f"input_shape: expected sizes of 1 or more, the sizes of one sample (C, H, W), got {list(sizes)}",
            where="import",
        )
    return sizes


def finish(model: FlatModel, started: float, weights: bool) -> Imported:
    from nasdsl.importer import rewrite
    from nasdsl.importer.check import check, within_limits
    from nasdsl.importer.emit import Writer
    from nasdsl.importer.templates import Discovery

    within_limits(model)
    rewrite.normalise(model)
    found = Discovery(model)
    root = found.run()
    writer = Writer(model, found)
    header = [f"Imported by nasdsl import from {model.source}."]
    if model.generated_names:
        header.append("The source names no modules: the names and templates are the importer's, found by structure.")
    else:
        header.append("Names are the source's: its state_dict loads into the generated model.")
    text = writer.text(root, header)
    compiled = check(model, text)
    totals = compiled.totals(with_aux=True)
    report = Report(
        source=model.source,
        name=model.name,
        templates=[(t.name, [p.name for p in t.params], len(t.instances)) for t in writer.template_order()],
        nodes=compiled.graph.number_of_nodes(),
        params=totals["params"],
        macs=totals["macs"],
        lines=text.count("\n"),
        seconds=time.perf_counter() - started,
        notes=list(dict.fromkeys(model.notes + found.notes + _opaque_notes(model))),
    )
    state = _state(model) if weights else None
    return Imported(text, report, compiled, state, model.reference if weights else None)


def _opaque_notes(model: FlatModel) -> list[str]:
    kept = [n.path for n in model.nodes.values() if n.op == "opaque"]
    if not kept:
        return []
    shown = ", ".join(kept[:5]) + (f" and {len(kept) - 5} more" if len(kept) > 5 else "")
    ops = f"{len(kept)} opaque op{'s' if len(kept) != 1 else ''}"
    return [f"{ops} ({shown}): no backend writes the model until they are replaced"]


def _state(model: FlatModel) -> dict:
    """Every node's tensors under the generated model's state_dict names, as numpy arrays."""
    import numpy as np

    out = {}
    for node in model.nodes.values():
        for suffix, tensor in node.tensors.items():
            key = f"{node.path}.{suffix}" if suffix else node.path
            if getattr(tensor, "is_meta", False):
                raise ImportFailure(
                    f"the tensor '{key}' is on PyTorch's meta device, which holds no values: the weights cannot be "
                    "written (build the model on the CPU, or import it without --weights and --check)",
                    where=model.source,
                )
            if hasattr(tensor, "detach"):
                tensor = tensor.detach().cpu().numpy()
            out[key] = np.asarray(tensor)
    return out
