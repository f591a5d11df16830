"""The imported model before it is a spec: a flat graph of nasdsl ops and the module tree.

A frontend (:mod:`nasdsl.importer.torch_frontend`, :mod:`nasdsl.importer.onnx_frontend`)
reads a model into a :class:`FlatModel`:

* :class:`Node`: one op of ``nasdsl/ops.py`` with its attributes as a spec writes them, its
  inputs in order, its output shape (batch excluded), the scope it sits in and its name there,
  and the tensors it holds (its ``state_dict`` entries);
* :class:`Scope`: one module of the source's hierarchy (a PyTorch submodule, or a name prefix of
  an ONNX graph) that holds nodes: its path (``inception3a.branch2``), its class, its children in
  registration order, and what its constructor was given (for naming template parameters).

A node's qualified name is its scope's path and its own name joined with a dot: the spec
builds the same name, so a node's tensors are the generated model's ``state_dict`` entries of
that name. Everything after the frontends (:mod:`nasdsl.importer.rewrite`,
:mod:`nasdsl.importer.bodies`, ...) reads and edits this structure only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nasdsl.errors import Location, NasdslError, printable


class ImportFailure(NasdslError):
    """The source model cannot be written as a spec: an op or pattern without a spec
    equivalent, a trace that fails, a structure the language cannot name. Exit 2."""

    def __init__(self, message: str, *, location: Location | None = None, path: str | None = None, where: str = ""):
        super().__init__(message, location=location, path=path)
        #: what the message is about when there is no file position: ``model.onnx: node 'x' (Conv)``
        self.where = where

    def format(self) -> str:
        if self.location is None and self.where:
            what = f"{printable(self.path)}: " if self.path else ""
            return f"{printable(self.where)}: {self.kind}: {what}{printable(self.message)}"
        return super().format()


#: the kinds of :class:`Scope`: the model itself, a module class of the user's (a template
#: candidate), a container (``nn.Sequential``, ``nn.ModuleList``, ``nn.ModuleDict``: written inline)
ROOT, CLASS, CONTAINER = "root", "class", "container"


@dataclass
class Node:
    """One op of the imported graph (or the input, ``op == "input"``)."""

    id: str
    op: str
    #: the op's attributes as a spec writes them (pairs as ``[h, w]`` or one integer)
    attrs: dict
    inputs: list[str]
    #: the output shape without the batch dimension
    shape: tuple[int, ...]
    #: the path of the scope holding the node ("" for the model)
    scope: str
    #: the node's name in its scope (a module's attribute name, or the function's)
    name: str
    #: the node's tensors by state_dict suffix (``weight``, ``running_mean``; ``""`` for a
    #: parameter named by the node itself, ConvNeXt's ``layer_scale``)
    tensors: dict = field(default_factory=dict)
    #: what the node came from, for messages: ``fx node 'relu_3' (torch.nn.functional.relu)``
    source: str = ""
    location: Location | None = None
    #: ``train`` for a node that runs only in training (an auxiliary head)
    phase: str = "both"
    #: the position in the source's execution order
    order: int = 0
    #: a note the spec writes on the node's block (what an ``opaque`` op was)
    doc: str = ""

    @property
    def path(self) -> str:
        return f"{self.scope}.{self.name}" if self.scope else self.name

    @property
    def holds(self) -> bool:
        """Whether the node has state_dict entries (their order is the spec's order)."""
        return bool(self.tensors) or self.op in _HOLDING


#: ops that hold tensors even when the frontend has none to give (ONNX without initializers)
_HOLDING = frozenset({"conv2d", "batch_norm", "linear", "layer_norm", "layer_scale"})


@dataclass
class Scope:
    """A module of the source that holds nodes."""

    path: str
    kind: str
    #: the class name (a template's name); for ONNX scopes, derived from the path
    cls: str = ""
    #: a key that tells classes apart (module and qualified name); equal for instances of one class
    cls_key: str = ""
    #: children names in the source's registration order (modules, then what else appears)
    registration: list[str] = field(default_factory=list)
    #: the constructor's arguments, flattened to named numbers, booleans and pairs (may be empty)
    args: dict = field(default_factory=dict)
    #: the names of the constructor's parameters in order (for ordering template parameters)
    arg_order: list[str] = field(default_factory=list)
    #: the constructor's declared defaults, by argument (simple values only; a module or None
    #: default is False, the switch's)
    defaults: dict = field(default_factory=dict)
    #: the arguments that are parameters of the constructor's signature (not ``**kwargs`` entries
    #: or a config object's fields)
    signature_args: set = field(default_factory=set)
    #: arguments that are a module or None (``downsample``): name -> whether it was a module
    switches: dict = field(default_factory=dict)
    #: boolean attributes of the module (``use_res_connect``)
    flags: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.rsplit(".", 1)[-1]

    @property
    def parent(self) -> str:
        return self.path.rsplit(".", 1)[0] if "." in self.path else ""


@dataclass
class Output:
    """One output of the model: its name, the node it reads, whether only training has it."""

    name: str
    node: str
    training_only: bool = False


@dataclass
class FlatModel:
    """The imported model: nodes in execution order, the scopes, the outputs."""

    name: str
    #: the file or name the model came from (for messages and the spec's header)
    source: str
    input: Node
    nodes: dict[str, Node]
    scopes: dict[str, Scope]
    outputs: list[Output]
    #: whether the model returns its outputs by name (a dict, as torchvision's segmentation
    #: models do), which the spec says with ``outputs_by_name: true``
    outputs_by_name: bool = False
    #: where the parts of the source came from, for the report (``torchvision 0.29.1``)
    notes: list[str] = field(default_factory=list)
    #: whether the names are the importer's (a graph that names no modules), not the source's
    generated_names: bool = False
    #: whether blocks were found by structure (:mod:`nasdsl.importer.discover`)
    blocks_found: bool = False
    #: the PyTorch source as it was read (the module whose tensors the import carries), for
    #: :func:`nasdsl.importer.check_numerics`; None for an ONNX file
    reference: object = field(default=None, repr=False, compare=False)

    def consumers(self) -> dict[str, list[str]]:
        """For each node id, the ids of the nodes that read it, in execution order."""
        users: dict[str, list[str]] = {i: [] for i in self.nodes}
        users[self.input.id] = []
        for n in self.nodes.values():
            for i in n.inputs:
                users[i].append(n.id)
        return users

    def node(self, node_id: str) -> Node:
        return self.input if node_id == self.input.id else self.nodes[node_id]


def parent_path(path: str) -> str:
    return path.rsplit(".", 1)[0] if "." in path else ""


def join(scope: str, name: str) -> str:
    return f"{scope}.{name}" if scope else name


def shape_after(op: str, attrs: dict, shapes: list[tuple[int, ...]]) -> tuple[int, ...]:
    """The output shape (batch excluded) of ``op`` with ``attrs`` on inputs of ``shapes``, by the
    op's own rule (each input laid out as its rank's default: an image ``CHW``, features ``C``)."""
    from nasdsl.ir.types import TensorType, default_axes
    from nasdsl.ops import OPS

    spec = OPS[op]
    types = [TensorType(tuple(s), default_axes(len(s))) for s in shapes]
    return tuple(spec.infer(types, spec.normalise(attrs)).shape)
