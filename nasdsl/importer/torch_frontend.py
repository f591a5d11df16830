"""PyTorch models into a :class:`~nasdsl.importer.flat.FlatModel`, through torch.fx.

:func:`load` makes the module from ``torchvision:NAME`` or ``module:pkg.mod:factory`` (the
factory is the user's own code, run as it is) while :func:`recording_constructors` notes what
each module's constructor was given: those arguments name the templates' parameters.
:func:`read_module` traces the module (:mod:`nasdsl.importer.torch_trace`: torch.fx, the layer
modules of :mod:`nasdsl.importer.torch_ops` being leaves) in training mode (auxiliary heads
run only there) and at inference (to check that both agree on the rest), with the shapes of an
example input, and maps every call through the op tables, each node typed by its op's rule. A
call without an entry is an :class:`~nasdsl.importer.flat.ImportFailure` naming the node and
the op, located at the source line that made it.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import keyword
import operator
import os
import re
import sys
import warnings
from collections.abc import Iterator

import torch
import torch.fx as fx
from torch import nn

from nasdsl.errors import NasdslError
from nasdsl.importer import torch_ops, torch_shapes
from nasdsl.importer.check import input_within_limits
from nasdsl.importer.flat import (
    CLASS,
    CONTAINER,
    ROOT,
    FlatModel,
    ImportFailure,
    Node,
    Output,
    Scope,
    join,
)
from nasdsl.importer.ops_table import Lowered, Unsupported
from nasdsl.importer.torch_trace import CONTAINERS, describe, source_line, trace, traced
from nasdsl.ir.types import TensorType, default_axes
from nasdsl.ops import OPS

DEFAULT_SHAPE = (3, 224, 224)


# -- making the module ---------------------------------------------------------------------


@contextlib.contextmanager
def recording_constructors() -> Iterator[dict[int, tuple[nn.Module, dict, list[str]]]]:
    """While active, every module built records the arguments its outermost ``__init__``
    was called with: ``{id(module): (module, {name: value}, [names in order])}``. The
    record keeps the module alive, so ids stay unique while it is used."""
    records: dict[int, tuple[nn.Module, dict, list[str]]] = {}
    original = nn.Module.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        frame, outer = sys._getframe(1), None
        while frame is not None and frame.f_code.co_name == "__init__":
            names = frame.f_code.co_varnames
            if not names or frame.f_locals.get(names[0]) is not self:
                break
            outer, frame = frame, frame.f_back
        if outer is not None:
            records[id(self)] = (self, *_arguments(outer))

    nn.Module.__init__ = init
    try:
        yield records
    finally:
        nn.Module.__init__ = original


def _arguments(frame) -> tuple[dict, list[str]]:
    info = inspect.getargvalues(frame)
    values, order = {}, []
    for name in info.args[1:]:
        values[name] = info.locals.get(name)
        order.append(name)
    if info.keywords and isinstance(info.locals.get(info.keywords), dict):
        for k, v in info.locals[info.keywords].items():
            values[k] = v
            order.append(k)
    return values, order


def load(source: str, *, on_meta: bool = True):
    """The module a ``torchvision:NAME`` or ``module:pkg.mod:factory`` source names, the
    constructor records, a label and the default input shape (torchvision's crop size; a ViT's
    ``image_size``, the one size it runs at)."""
    kind, _, rest = source.partition(":")
    with recording_constructors() as records:
        if kind == "torchvision":
            module, shape = _torchvision(rest, on_meta)
            label = f"torchvision.models.{rest} (torchvision {_version('torchvision')})"
        elif kind == "module":
            module, shape = _factory(rest), None
            label = rest
        else:
            raise ImportFailure(
                f"expected torchvision:NAME, module:PACKAGE.MODULE:FACTORY or an .onnx file, got '{source}'",
                where="nasdsl import",
            )
    return module, records, label, shape


def _version(package: str) -> str:
    try:
        return importlib.import_module(package).__version__
    except (ImportError, AttributeError):  # pragma: no cover
        return "?"


def _torchvision(name: str, on_meta: bool):
    try:
        import torchvision
    except ImportError:
        raise ImportFailure(
            "torchvision is not installed: pip install torchvision", where=f"torchvision:{name}"
        ) from None
    names = torchvision.models.list_models(module=torchvision.models)
    segmentation = torchvision.models.list_models(module=torchvision.models.segmentation)
    if name not in names and name not in segmentation:
        from nasdsl.spec import did_you_mean

        raise ImportFailure(
            f"no classification or segmentation model '{name}' in torchvision {torchvision.__version__}"
            + did_you_mean(name, names + segmentation),
            where=f"torchvision:{name}",
        )
    # a segmentation model's backbone is built untrained too (its builder would fetch ImageNet weights)
    kwargs = {"weights": None, **({"weights_backbone": None} if name in segmentation else {})}
    module = None
    with warnings.catch_warnings():  # GoogLeNet's and Inception-v3's notes on their initialisation
        warnings.simplefilter("ignore", FutureWarning)
        if on_meta:  # sizes only: nothing allocated or initialised
            try:
                with torch.device("meta"):
                    module = torchvision.models.get_model(name, **kwargs)
            except Exception:  # noqa: BLE001 - a builder that computes with tensors (RegNet) needs values
                module = None
        if module is None:
            module = torchvision.models.get_model(name, **kwargs)
    transforms = torchvision.models.get_model_weights(name).DEFAULT.transforms()
    crop = transforms.resize_size if name in segmentation else transforms.crop_size  # segmentation: 520x520
    size = crop[0] if isinstance(crop, (list, tuple)) else crop
    built = getattr(module, "image_size", None)  # a ViT is built for one size (vit_h_14: 224, its weights 518)
    if isinstance(built, int) and not isinstance(built, bool):
        size = built
    return module, (3, int(size), int(size))


def _factory(text: str) -> nn.Module:
    module_name, _, attr = text.partition(":")
    where = f"module:{text}"
    if not module_name or not attr:
        raise ImportFailure(f"expected module:PACKAGE.MODULE:FACTORY, got '{where}'", where="nasdsl import")
    here = os.getcwd()
    added = here not in sys.path  # the user's package in the working folder, as `python -m` would find it
    if added:
        sys.path.insert(0, here)
    try:
        mod = importlib.import_module(module_name)
    except ImportError as e:
        raise ImportFailure(f"cannot import {module_name}: {e}", where=where) from None
    except Exception as e:  # noqa: BLE001 - the user's module failed as it ran: said so, not a crash of nasdsl
        raise ImportFailure(f"importing {module_name} raised {type(e).__name__}: {e}", where=where) from None
    finally:
        if added:
            sys.path.remove(here)
    target = mod
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ImportFailure(f"{module_name} has no attribute '{attr}'", where=where)
        target = getattr(target, part)
    if not callable(target):
        raise ImportFailure(f"{attr} is not callable: expected a function or class returning an nn.Module", where=where)
    try:
        made = target()
    except Exception as e:  # noqa: BLE001 - the user's factory failed: said so, not a crash of nasdsl
        raise ImportFailure(f"{attr}() raised {type(e).__name__}: {e}", where=where) from None
    if not isinstance(made, nn.Module):
        raise ImportFailure(f"{attr}() returned {type(made).__name__}, expected an nn.Module", where=where)
    return made


def _scope_of(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    paths = [v[0] for v in stack.values()]
    if node.op == "call_module":
        return paths[-2] if len(paths) > 1 else ""
    return paths[-1] if paths else ""


class _Reader:
    """Maps one traced graph to nodes of a FlatModel."""

    def __init__(self, module: nn.Module, records: dict, label: str, allow_opaque: bool = False) -> None:
        self.root = module
        self.allow_opaque = allow_opaque
        self.records = records
        self.label = label
        self.nodes: dict[str, Node] = {}
        self.scopes: dict[str, Scope] = {}
        self.reserved: dict[str, set[str]] = {}
        self.used: dict[str, set[str]] = {}
        #: fx node -> the flat node id holding its value (None for values that are not tensors)
        self.value: dict[fx.Node, str | None] = {}
        self.params: dict[fx.Node, str] = {}
        #: ``x.chunk(n, dim)``, ``x.split(sizes, dim)`` -> (x, torch's dim, the pieces' (start, stop))
        self.chunks: dict[fx.Node, tuple[fx.Node, int, list[tuple[int, int]]]] = {}
        #: shape arithmetic evaluated at the traced input (:mod:`nasdsl.importer.torch_shapes`)
        self.consts: dict[fx.Node, object] = {}
        #: calls that return a tuple (attention's output and weights) -> the node of their output
        self.pairs: dict[fx.Node, str] = {}
        #: id of each tensor the nodes hold -> its state_dict key
        self.owners: dict[int, str] = {}
        #: a permute that moves the batch axis, read by picks of its first axis -> (its input, dims)
        self.moved: dict[fx.Node, tuple[fx.Node, list[int]]] = {}
        #: a parameter read in the forward -> the node that reads it
        self.param_reads: dict[str, fx.Node] = {}
        #: each node's type as the spec's ops infer it (its axes: which one the channels are)
        self.types: dict[str, TensorType] = {}
        self.modules_called: dict[str, int] = {}
        self.order = 0
        self.doc = ""
        #: whether the forward returns its outputs as a dict
        self.by_name = False
        #: whether the graph read is the inference trace (where a dropout must not drop)
        self.at_inference = False
        #: the graph read and :meth:`calls_within` it
        self._calls_within: tuple[fx.Graph, dict[str, list[fx.Node]]] | None = None

    # scopes and names

    def scope(self, path: str) -> Scope:
        if path in self.scopes:
            return self.scopes[path]
        if path:
            self.scope(path.rsplit(".", 1)[0] if "." in path else "")
        module = self.root.get_submodule(path) if path else self.root
        kind = ROOT if not path else CONTAINER if type(module) in CONTAINERS else CLASS
        cls = type(module)
        scope = Scope(path, kind, cls.__name__, f"{cls.__module__}.{cls.__qualname__}")
        scope.registration = list(module._modules)
        record = self.records.get(id(module))
        if record is not None and record[0] is module:
            _describe_arguments(scope, record[1], record[2])
            _declared_defaults(scope, type(module))
        scope.flags = {
            k: v for k, v in vars(module).items() if isinstance(v, bool) and not k.startswith("_") and k != "training"
        }
        self.scopes[path] = scope
        self.reserved[path] = set(module._modules) | set(dict(module.named_parameters(recurse=False)))
        self.used[path] = set()
        return scope

    def fresh(self, scope: str, base: str, *, own: bool = False) -> str:
        """A name in ``scope``: ``base`` itself when free (``own``: when it is the caller's own
        attribute name, which only it may take), else ``base_1``, ``base_2``, ..."""
        used, reserved = self.used[scope], self.reserved[scope]

        def free(name: str) -> bool:
            return name not in used and (own and name == base or name not in reserved)

        name = base if free(base) else next(f"{base}_{k}" for k in range(1, 1 << 20) if free(f"{base}_{k}"))
        used.add(name)
        return name

    # nodes

    def fail(self, node: fx.Node, message: str) -> ImportFailure:
        path = node.target if node.op == "call_module" else join(_scope_of(node), node.name)
        error = ImportFailure(
            f"{describe(node, self.root)} (fx node '{node.name}'): {message}",
            location=source_line(node),
            path=path,
            where=self.label,
        )
        error.fx_node = node.name
        return error

    def add(
        self, node: fx.Node, lowered, scope: str, name: str, inputs: list[str], tensors: dict, *, final: bool = True
    ) -> None:
        """Add the nodes of ``lowered`` (one op or a chain), each typed by its op's own rule; a
        rule that refuses the input, a shape other than the source's, or a tensor of another
        shape than the op holds is an error at the node, not a spec that differs. The step
        without a suffix (the first unless another is: a convolution after its border) is the
        layer itself, named ``name`` and holding ``tensors``; each other step is ``name_suffix``."""
        chain = lowered if isinstance(lowered, tuple) else (lowered,)
        holder = next((k for k, step in enumerate(chain) if not step.suffix), 0)
        meta = node.meta["tensor_meta"]
        meta = meta if hasattr(meta, "shape") else meta[0]  # attention: (output, weights)
        shape = tuple(meta.shape)[1:]
        self.scope(scope)
        prev = inputs
        for k, step in enumerate(chain):
            step_name = name if k == holder else self.fresh(scope, f"{name}_{step.suffix}")
            node_id = join(scope, step_name)
            types = [self.type_of(i) for i in prev]
            made = self._infer(node, step, types)
            if final and k == len(chain) - 1 and tuple(made.shape) != shape:
                raise self.fail(
                    node,
                    f"the spec's {step.op} makes a tensor of {list(made.shape)} here, the source one of "
                    f"{list(shape)}: no spec op computes this",
                )
            if k == holder and tensors:
                self._check_tensors(node, step, types, tensors)
                self._own(node, node_id, tensors)
            self.order += 1
            self.nodes[node_id] = Node(
                node_id,
                step.op,
                dict(step.attrs),
                list(prev),
                tuple(made.shape),
                scope,
                step_name,
                tensors if k == holder else {},
                f"fx node '{node.name}' ({describe(node, self.root)})",
                source_line(node),
                order=self.order,
            )
            self.types[node_id] = made
            prev = [node_id]
        if self.doc:
            self.nodes[prev[0]].doc, self.doc = self.doc, ""
        self.value[node] = prev[0]

    def _infer(self, node: fx.Node, step: Lowered, types: list[TensorType]) -> TensorType:
        """The type ``step`` makes of ``types`` by its op's rule, which the spec's builder applies."""
        spec = OPS[step.op]
        try:
            return spec.infer(types, spec.normalise(step.attrs))
        except NasdslError as e:
            raise self.fail(node, f"the spec's {step.op} does not take this input: {e.message}") from None

    def _check_tensors(self, node: fx.Node, step: Lowered, types: list[TensorType], tensors: dict) -> None:
        spec = OPS[step.op]
        held = {w.name: tuple(w.shape) for w in spec.weights(types, spec.normalise(step.attrs))}
        for suffix, tensor in tensors.items():
            want = held.get(suffix)
            if want is not None and tuple(tensor.shape) != want:
                what = f"'{suffix}'" if suffix else "its tensor"
                raise self.fail(
                    node,
                    f"holds {what} of shape {list(tensor.shape)}: the spec's {step.op} holds one of {list(want)} "
                    "on this input",
                )

    def _own(self, node: fx.Node, node_id: str, tensors: dict) -> None:
        """Each tensor belongs to one node: one that another node holds too (tied weights,
        ``b.weight = a.weight``) would be two tensors of the spec, trained apart."""
        for suffix, tensor in tensors.items():
            owner = self.owners.setdefault(id(tensor), join(node_id, suffix) if suffix else node_id)
            if owner != (join(node_id, suffix) if suffix else node_id):
                raise self.fail(
                    node,
                    f"holds the tensor that '{owner}' holds (tied weights): a spec's layers own their tensors",
                )

    def type_of(self, node_id: str) -> TensorType:
        if node_id in self.types:
            return self.types[node_id]
        shape = self.shape_of(node_id)
        return TensorType(tuple(shape), default_axes(len(shape)))

    def shape_of(self, node_id: str) -> tuple[int, ...]:
        return self.nodes[node_id].shape if node_id in self.nodes else self.input_shape

    def tensor_inputs(self, node: fx.Node) -> list[fx.Node]:
        found: list[fx.Node] = []
        fx.node.map_arg((node.args, node.kwargs), lambda a: a in self.consts or found.append(a) or a)
        return found

    def inputs_of(self, node: fx.Node, tensors: list[fx.Node]) -> list[str]:
        out = []
        for t in tensors:
            if t in self.params and self.value.get(t) is None:
                raise self.fail(
                    node, f"reads the tensor '{t.target}' directly: only a layer scale (p * x) is understood"
                )
            v = self.value.get(t)
            if v is None:
                raise self.fail(node, f"reads '{t.name}', which is not a tensor the spec can name")
            out.append(v)
        return out

    def call(self, node: fx.Node, tensors: list[fx.Node]) -> torch_ops.Call:
        shapes = [tuple(t.meta["tensor_meta"].shape) for t in tensors if hasattr(t.meta.get("tensor_meta"), "shape")]
        meta = node.meta.get("tensor_meta")
        args, kwargs = fx.node.map_arg((node.args, node.kwargs), lambda a: self.consts.get(a, a))
        types = [self.type_of(self.value[t]) for t in tensors if self.value.get(t) is not None]
        out = tuple(meta.shape) if hasattr(meta, "shape") else None
        return torch_ops.Call(args, kwargs, shapes, out, types if types else [], training=not self.at_inference)

    def read(self, graph: fx.Graph) -> tuple[Node, list[tuple[str, fx.Node]]]:
        inp = None
        outputs: list[tuple[str, fx.Node]] = []
        self.scope("")
        position = {n: k for k, n in enumerate(graph.nodes)}
        for node in graph.nodes:
            if node.op == "placeholder":
                if inp is not None:
                    raise self.fail(node, "a second input: a spec has one")
                meta = node.meta.get("tensor_meta")
                if not hasattr(meta, "shape"):  # forward(self, *inputs): the input is a tuple
                    raise self.fail(node, f"the forward's input '{node.target}' is no tensor: a spec's input is one")
                shape = tuple(meta.shape)
                if len(shape) != 4:
                    raise self.fail(node, f"an input of shape {list(shape)}: a spec's input is (C, H, W)")
                name = self.fresh("", node.name if node.name.isidentifier() else "x")
                inp = Node(name, "input", {}, [], shape[1:], "", name, source=f"fx input '{node.name}'")
                self.input_shape = shape[1:]
                self.value[node] = name
            elif node.op == "get_attr":
                self.params[node] = node.target
                self.value[node] = None
            elif node.op == "output":
                outputs = self.outputs(node)
            elif node.op == "call_module":
                self.module_call(node)
            else:
                self.function_call(node)
            changed = self.changed_in_place(node)
            if changed is not None and self.value.get(node) is not None:
                self.value[changed] = self.value[node]  # later reads of it read the result
                self.no_view_changed(node, changed, position)
        return inp, outputs

    def no_view_changed(self, node: fx.Node, changed: fx.Node, position: dict[fx.Node, int]) -> None:
        """A tensor changed in place that is a view of another (a chunk, ``y[:, :2]``, a
        reshape) changes that one too: refused where the other is read after the change."""
        view = changed
        while _is_view(view):
            base = view.args[0]
            later = [u for u in base.users if position[u] > position[node] or u.op == "output"]
            if later:
                raise self.fail(
                    node,
                    f"changes '{changed.name}' in place, a view of '{base.name}', which '{later[0].name}' reads "
                    "after: the spec's ops make new tensors",
                )
            view = base

    def changed_in_place(self, node: fx.Node) -> fx.Node | None:
        """The tensor a call overwrites (``y += x``, ``y.add_(x)``, ``F.relu(y, inplace=True)``,
        ``nn.ReLU(inplace=True)(y)``): ``y``, whose later reads see the call's result."""
        first = node.args[0] if node.args else None
        if not isinstance(first, fx.Node):
            return None
        if node.op == "call_module":
            inplace = getattr(self.root.get_submodule(node.target), "inplace", False)
        elif node.op == "call_method":
            inplace = isinstance(node.target, str) and node.target.endswith("_") and not node.target.startswith("_")
        else:
            inplace = node.target in _IN_PLACE or node.kwargs.get("inplace") is True
        return first if inplace is True else None

    def opaque(self, node: fx.Node, message: str, inputs: list[str], holds: bool) -> Lowered:
        """With --allow-opaque, a call without a spec op as an ``opaque`` op with its shape;
        else (or when it holds weights, or reads other than one tensor) the error."""
        meta = node.meta.get("tensor_meta")
        if not self.allow_opaque or holds or len(inputs) != 1 or not hasattr(meta, "shape"):
            raise self.fail(node, message)
        self.doc = f"opaque: {describe(node, self.root)} ({message.split(' (the op table')[0]})"
        return Lowered("opaque", {"shape": list(meta.shape[1:])})

    def module_call(self, node: fx.Node) -> None:
        module = self.root.get_submodule(node.target)
        if module._forward_hooks or module._forward_pre_hooks:
            raise self.fail(
                node,
                "has forward hooks, which change what it computes where torch.fx records the call alone (an old "
                "nn.utils.weight_norm or spectral_norm is one): a spec's layer computes its op",
            )
        handler = torch_ops.MODULES.get(type(module))
        tensors = self.tensor_inputs(node)
        inputs = self.inputs_of(node, tensors)
        holds = bool(module.state_dict())
        if handler is None:
            lowered = self.opaque(
                node, "no spec op computes this module (the op table is nasdsl/importer/torch_ops.py)", inputs, holds
            )
        else:
            try:
                lowered = handler(module, self.call(node, tensors))
            except Unsupported as e:
                lowered = self.opaque(node, str(e), inputs, holds)
        scope = node.target.rsplit(".", 1)[0] if "." in node.target else ""
        attr = node.target.rsplit(".", 1)[-1]
        calls = self.modules_called.get(node.target, 0)
        self.modules_called[node.target] = calls + 1
        own = dict(module.state_dict())
        if calls and own:
            raise self.fail(node, "the module is called a second time: a spec block has weights of its own")
        held = dict(module.named_parameters()) | dict(module.named_buffers())  # the objects, not copies
        self._own(node, node.target, {k: v for k, v in held.items() if v is not None})
        self.scope(scope)
        name = self.fresh(scope, attr, own=True)
        if isinstance(lowered, Lowered) and lowered.op == "attention":  # query, key and value: one tensor
            self.add(node, lowered, scope, name, inputs[:1], own)
            self.pairs[node], self.value[node] = self.value[node], None
            return
        self.add(node, lowered, scope, name, inputs, own)

    def function_call(self, node: fx.Node) -> None:
        target = node.target
        try:
            self.consts[node] = torch_shapes.evaluate(node, self.consts)
            self.value[node] = None
            return
        except torch_shapes.NotShape:
            pass
        except torch_shapes.BatchArithmetic:
            raise self.fail(node, "computes with the batch size: a spec's sizes are those of one sample") from None
        if target in (torch._assert, operator.not_):  # a condition no size decides
            raise self.fail(
                node,
                "the forward branches on a tensor's values (a condition that torch.fx cannot follow and no size "
                "decides): a spec's network computes the same ops for every input",
            )
        if target is _getitem and node.args[0] in self.pairs:
            self.value[node] = self.pairs[node.args[0]] if node.args[1] == 0 else None  # attention's weights: none
            return
        if node.op == "call_method" and target == "expand" and node.args[0] in self.params:
            return self.class_token(node)
        if target in (_add, operator.iadd, torch.add) and any(
            a in self.params and self.value.get(a) is None for a in node.args[:2]
        ):
            a, b = node.args[:2]
            self.learned(a if a in self.params else b, b if a in self.params else a)
        if target in ("chunk", "split", torch.chunk, torch.split, torch.functional.split):
            return self.pieces(node)
        if target is _getitem and node.args[0] in self.chunks:
            return self.chunk_item(node)
        if node.op == "call_function" and isinstance(target, type) and hasattr(target, "_fields"):
            self.value[node] = None  # a NamedTuple of outputs, read by the output node
            return
        if self.arithmetic(node):
            return
        if target in ("permute", torch.permute) and self.batch_moved(node):
            return
        if target in ("unbind", torch.unbind) and node.args[0] in self.moved:
            self.moved[node] = self.moved[node.args[0]]  # q, k, v = x.permute(2, 0, ...).unbind(0)
            self.value[node] = None
            return
        if target is _getitem and node.args[0] in self.moved:
            return self.moved_item(node)
        if target in (_mul, operator.imul, torch.mul) and any(a in self.params for a in node.args[:2]):
            return self.layer_scale(node)
        if node.op == "call_function" and target in torch_ops.LAYER_FUNCTIONS:
            return self.layer_function(node)
        handler = torch_ops.METHODS.get(target) if node.op == "call_method" else torch_ops.FUNCTIONS.get(target)
        tensors = self.tensor_inputs(node)
        inputs = self.inputs_of(node, tensors)
        if handler is None:
            lowered = self.opaque(
                node, "no spec op computes this (the op table is nasdsl/importer/torch_ops.py)", inputs, False
            )
        else:
            try:
                lowered = handler(self.call(node, tensors))
            except Unsupported as e:
                lowered = self.opaque(node, str(e), inputs, False)
        if self.at_inference and isinstance(lowered, Lowered) and lowered.op == "dropout":
            raise self.fail(
                node,
                "drops at inference too (F.dropout's training is True unless given: pass training=self.training): "
                "the spec's dropout drops in training only",
            )
        scope = _scope_of(node)
        self.scope(scope)
        base = target if isinstance(target, str) else getattr(target, "__name__", "op")
        first = lowered[0] if isinstance(lowered, tuple) else lowered
        if target is _getitem and first.op != "select":  # x[:, 2:6], x[:, :, None]: named by what it is
            base = first.op
        name = self.fresh(scope, torch_ops.NAMES.get(base, base if base.isidentifier() else "op"))
        if isinstance(lowered, Lowered) and lowered.op == "identity":
            self.value[node] = inputs[0]  # x.contiguous(), dropout outside training: nothing to write
            self.used[scope].discard(name)
            return
        self.add(node, lowered, scope, name, inputs, {})

    def layer_function(self, node: fx.Node) -> None:
        """A function given a module's parameters as its weights (``F.prelu(x, self.weight)``,
        ``F.conv_transpose2d(x, self.weight, self.bias, stride=2)``; the table is
        :data:`torch_ops.LAYER_FUNCTIONS`) is the layer of the module holding them, named as that
        module (``act`` for ``act.weight``), so that the source's ``state_dict`` keys are the spec's;
        the module's forward must compute nothing else. A weight computed in the forward, a buffer
        as a learned weight (or a parameter as running statistics: the op's own tensors say which),
        weights named otherwise than the op holds them, or of two modules, are refused; a buffer
        of the op that the call does not read (BatchNorm's ``num_batches_tracked``) is the module's
        where it keeps one. Without weights (``F.group_norm(x, 4)``) it is a function as any other."""
        data = node.args[0] if node.args else node.kwargs.get("input")
        if not isinstance(data, fx.Node):
            raise self.fail(node, "applied to something other than a tensor the spec can name")
        inputs = self.inputs_of(node, [data])
        try:
            lowered, held = torch_ops.LAYER_FUNCTIONS[node.target](self.call(node, [data]))
        except Unsupported as e:
            weights = [t for t in self.tensor_inputs(node) if t is not data]
            lowered, held = self.opaque(node, str(e), inputs, bool(weights)), {}
        given = {suffix: arg for suffix, arg in held.items() if arg is not None}
        if not given:
            scope = _scope_of(node)
            self.scope(scope)
            base = getattr(node.target, "__name__", "op")
            self.add(node, lowered, scope, self.fresh(scope, torch_ops.NAMES.get(base, base)), inputs, {})
            return
        targets = {}
        held = {name for name, _ in self.root.named_parameters(remove_duplicate=False)}
        held |= {name for name, _ in self.root.named_buffers(remove_duplicate=False)}
        for suffix, arg in given.items():
            made = isinstance(arg, fx.Node) and arg in self.params and self.params[arg] not in held
            if not isinstance(arg, fx.Node) or arg not in self.params or made:
                shown = f"'{arg.name}'" if isinstance(arg, fx.Node) else repr(arg)
                raise self.fail(
                    node,
                    f"its {suffix} {shown} is computed in the forward{' (a constant tensor)' if made else ''}: the "
                    f"spec's {lowered.op} holds its {suffix} as a learned tensor (a parameter of a module, given as it "
                    "is)",
                )
            targets[suffix] = self.params[arg]
        path = next(iter(targets.values())).rpartition(".")[0]
        if not path or any(t != f"{path}.{suffix}" for suffix, t in targets.items()):
            shown = ", ".join(f"'{t}'" for t in targets.values())
            wanted = " and ".join(f"'LAYER.{suffix}'" for suffix in targets)
            raise self.fail(
                node,
                f"its weights are {shown}: the spec's {lowered.op} is a layer holding them as {wanted}, where the "
                "source's state_dict keys must be the spec's; hold them in a module of their own whose forward is "
                "this call (self.act.weight, read as the layer 'act')",
            )
        kinds = self.weight_kinds(lowered, inputs)
        tensors = {
            suffix: self.held_buffer(node, t, lowered.op, suffix)
            if kinds.get(suffix) == "buffer"
            else self.learned_tensor(node, t)
            for suffix, t in targets.items()
        }
        module = self.root.get_submodule(path)
        own = dict(module.named_buffers(recurse=False))
        for suffix, kind in kinds.items():  # a counter the call does not read (num_batches_tracked)
            if kind == "buffer" and suffix not in tensors and own.get(suffix) is not None:
                tensors[suffix] = own[suffix]
        order = list(module.state_dict(keep_vars=True))
        tensors = dict(sorted(tensors.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))
        for other in self.calls_within(node.graph).get(path, ()):
            if other is not node:
                raise self.fail(
                    node,
                    f"the module '{path}' holding its weights computes more in its forward "
                    f"({describe(other, self.root)}, fx node '{other.name}'): the spec's layer '{path}' would be this "
                    f"{lowered.op} alone",
                )
        scope, _, attr = path.rpartition(".")
        self.scope(scope)
        self.add(node, lowered, scope, self.fresh(scope, attr, own=True), inputs, tensors)

    def weight_kinds(self, lowered: Lowered, inputs: list[str]) -> dict[str, str]:
        """The op's tensors on this input, by name: ``param`` (learned) or ``buffer`` (running
        statistics); none where the op refuses the input (:meth:`add` then says why)."""
        spec = OPS[lowered.op]
        try:
            held = spec.weights([self.type_of(i) for i in inputs], spec.normalise(lowered.attrs))
        except NasdslError:
            return {}
        return {w.name: w.kind for w in held}

    def held_buffer(self, node: fx.Node, target: str, op: str, suffix: str) -> torch.Tensor:
        """The buffer ``target`` names, read by this one node: the op's running statistics, which
        a buffer holds (a parameter would be learned)."""
        try:
            tensor = self.root.get_buffer(target)
        except AttributeError:
            raise self.fail(
                node,
                f"reads '{target}' as its {suffix}, which is no buffer: the spec's {op} keeps its {suffix} as a buffer "
                "(running statistics, not learned), as nn.BatchNorm2d does",
            ) from None
        owner = self.param_reads.setdefault(target, node)
        if owner is not node:
            raise self.fail(node, f"reads '{target}' a second time: a spec's tensor belongs to one layer")
        return tensor

    def calls_within(self, graph: fx.Graph) -> dict[str, list[fx.Node]]:
        """The first two calls made inside each module path (a call inside ``a.b`` is inside ``a``
        too), of the graph read: whether a module computes more than one call, in one pass."""
        if self._calls_within is None or self._calls_within[0] is not graph:
            self._calls_within = (graph, {})
            for n in graph.nodes:  # calls that make tensors: a size read (x.shape[-1]) computes nothing
                if n.op.startswith("call_") and n.meta.get("tensor_meta") is not None:
                    where = n.target if n.op == "call_module" else _scope_of(n)
                    parts = where.split(".") if where else []
                    for k in range(1, len(parts) + 1):
                        found = self._calls_within[1].setdefault(".".join(parts[:k]), [])
                        if len(found) < 2:
                            found.append(n)
        return self._calls_within[1]

    def pieces(self, node: fx.Node) -> None:
        """``x.chunk(n, dim)`` and ``x.split(size or sizes, dim)``: the pieces, each taken by an
        index (``a, b = ...``) as a ``slice`` along that axis."""
        call = self.call(node, self.tensor_inputs(node))
        source = node.args[0]
        if not isinstance(source, fx.Node) or self.value.get(source) is None:
            raise self.fail(node, "splits something other than a tensor the spec can name")
        chunk = node.target in ("chunk", torch.chunk)
        size_name = "split_size_or_sections" if node.op == "call_function" else "split_size"
        count = call.arg(1, "chunks" if chunk else size_name)
        dim = call.arg(2, "dim", 0)
        rank = len(source.meta["tensor_meta"].shape)
        if not isinstance(dim, int) or isinstance(dim, bool) or not -rank <= dim < rank or dim % rank == 0:
            raise self.fail(node, f"splits along axis {dim!r}: the spec slices an axis other than the batch")
        length = int(source.meta["tensor_meta"].shape[dim])
        if chunk and isinstance(count, int) and not isinstance(count, bool) and count > 0:
            sizes = [-(-length // count)] * count
        elif not chunk and isinstance(count, int) and not isinstance(count, bool) and count > 0:
            sizes = [count] * -(-length // count)
        elif not chunk and isinstance(count, (list, tuple)) and all(isinstance(c, int) for c in count):
            sizes = list(count)
        else:
            raise self.fail(node, f"splits into {count!r}: expected a number of pieces or their sizes")
        bounds, start = [], 0
        for size in sizes:
            if start < length or not bounds:
                bounds.append((start, min(length, start + size)))
            start += size
        self.chunks[node] = (source, dim % rank, bounds)
        self.value[node] = None

    def chunk_item(self, node: fx.Node) -> None:
        source, dim, bounds = self.chunks[node.args[0]]
        index = node.args[1]
        if not isinstance(index, int) or isinstance(index, bool) or not -len(bounds) <= index < len(bounds):
            raise self.fail(node, f"takes the piece {index!r} of {len(bounds)}: expected one of them by its index")
        index %= len(bounds)
        start, stop = bounds[index]
        scope = _scope_of(node)
        self.scope(scope)
        name = self.fresh(scope, f"chunk{index}")
        inputs = self.inputs_of(node, [source])
        length = int(source.meta["tensor_meta"].shape[dim])
        attrs = {"start": start} if stop == length else {"start": start, "stop": stop}
        if dim != 1 or self.type_of(inputs[0]).channel_axis != 0:
            attrs["axis"] = dim - 1
        self.add(node, Lowered("slice", attrs), scope, name, inputs, {})

    def arithmetic(self, node: fx.Node) -> bool:
        """A tensor and a number joined by ``+ - * /`` (``x * 0.5``, ``q / math.sqrt(d)``, ``1 + x``), a
        tensor less another (``a - b``) and ``-x``, written with the spec's ``constant`` (a tensor
        like its input, every value one number), ``add`` and ``mul``: ``x - c`` as ``x + (-c)``,
        ``x / c`` as ``x * (1 / c)``, ``a - b`` as ``a + b * -1``. Whether the call was one: a
        call of two tensors or of a number that leaves the tensor as it is (``0 + x``) is not."""
        kind = _ARITHMETIC.get(node.target) if node.op == "call_function" else _METHOD_ARITHMETIC.get(node.target)
        if kind is None or node.kwargs or any(a in self.params for a in node.args):
            return False
        args = [self.consts.get(a, a) for a in node.args]
        tensors = [a for a in args if isinstance(a, fx.Node)]
        numbers = [a for a in args if type(a) in (int, float, bool)]
        if any(self.value.get(t) is None for t in tensors) or len(tensors) + len(numbers) != len(args):
            return False
        if kind == "neg" and len(tensors) == 1:  # -x: x * -1
            return self._with_constant(node, self.inputs_of(node, tensors)[0], "mul", -1.0)
        if kind == "sub" and len(tensors) == 2:  # a - b: a + b * -1
            a, b = self.inputs_of(node, tensors)
            self._with_constant(node, b, "mul", -1.0, final=False)
            scope = _scope_of(node)
            self.add(node, Lowered("add"), scope, self.fresh(scope, "difference"), [a, self.value[node]], {})
            return True
        if len(tensors) != 1 or len(numbers) != 1 or kind == "neg":
            return False
        value, x = float(numbers[0]), self.inputs_of(node, tensors)[0]
        if kind == "sub" and not isinstance(args[0], fx.Node):  # c - x: x * -1 + c
            self._with_constant(node, x, "mul", -1.0, final=False)
            return self._with_constant(node, self.value[node], "add", value)
        if kind == "div" and (value == 0 or not isinstance(args[0], fx.Node)):
            return False  # c / x: no spec op
        value = -value if kind == "sub" else 1 / value if kind == "div" else value
        if value == (0.0 if kind in ("add", "sub") else 1.0):
            self.value[node] = x  # 0 + x, x * 1: x
            return True
        return self._with_constant(node, x, "add" if kind in ("add", "sub") else "mul", value)

    def batch_moved(self, node: fx.Node) -> bool:
        """``qkv.permute(2, 0, 3, 1, 4)`` (timm's attention: queries, keys and values side by side
        put first) moves the batch axis, which no spec op does; where each reader takes one of
        the first axis's positions (``qkv[0]``, ``q, k, v = qkv.unbind(0)``), that is a ``select``
        of the position along the axis put first and a ``permute`` of the rest, the batch first:
        whether it is (else the op table refuses the permute)."""
        call = self.call(node, self.tensor_inputs(node))
        rest = call.args[1:]
        dims = rest[0] if len(rest) == 1 and isinstance(rest[0], (list, tuple)) else rest or call.kwargs.get("dims", ())
        if not call.rank or len(dims) != call.rank or not all(isinstance(d, int) for d in dims):
            return False
        dims = [d % call.rank for d in dims]
        if dims[0] == 0 or dims[1] != 0 or sorted(dims) != list(range(call.rank)):
            return False

        def picks(user: fx.Node) -> bool:  # x[i], or x.unbind(0) read only by x[i]
            if user.target is _getitem:
                return isinstance(user.args[1], int) and not isinstance(user.args[1], bool)
            unbinds = user.target in ("unbind", torch.unbind) and user.args[1:2] in ((), (0,))
            return unbinds and user.kwargs.get("dim", 0) == 0 and all(picks(u) for u in user.users)

        if not node.users or not all(picks(u) for u in node.users):
            return False
        self.moved[node] = (node.args[0], dims)
        self.value[node] = None
        return True

    def moved_item(self, node: fx.Node) -> None:
        source, dims = self.moved[node.args[0]]
        length = int(source.meta["tensor_meta"].shape[dims[0]])
        index = node.args[1] % length
        rest = [d - (d > dims[0]) for d in dims[1:]]  # the axes left, numbered after the select
        chain = [Lowered("select", {"axis": dims[0] - 1, "index": index})]
        if rest != sorted(rest):
            chain.append(Lowered("permute", {"dims": [d - 1 for d in rest[1:]]}, suffix="permute"))
        scope = _scope_of(node)
        self.scope(scope)
        name = self.fresh(scope, f"part{index}")
        self.add(node, tuple(chain) if len(chain) > 1 else chain[0], scope, name, self.inputs_of(node, [source]), {})

    def _with_constant(self, node: fx.Node, x: str, op: str, value: float, final: bool = True) -> bool:
        """``x`` (a node's id) and a ``constant`` of ``value`` like it, joined by ``op``."""
        scope = _scope_of(node)
        self.scope(scope)
        name = self.fresh(scope, {"add": "shift", "mul": "scale"}[op])
        value_name = self.fresh(scope, f"{name}_value")
        self.add(node, Lowered("constant", {"value": value}), scope, value_name, [x], {}, final=False)
        self.add(node, Lowered(op), scope, name, [x, self.value[node]], {}, final=final)
        return True

    def layer_scale(self, node: fx.Node) -> None:
        """``gamma * x``: a parameter of the shape the spec's ``layer_scale`` holds on ``x`` (C, 1,
        1) scaling a map's channels, (C,) the last axis of tokens or features), as torch
        broadcasts it."""
        a, b = node.args[:2]
        param, x = (a, b) if a in self.params else (b, a)
        target = self.params[param]
        if not isinstance(x, fx.Node) or self.value.get(x) is None:
            raise self.fail(node, f"multiplies '{target}' by something other than a tensor the spec can name")
        tensor = self.learned_tensor(node, target)
        shape = tuple(tensor.shape)
        inputs = self.inputs_of(node, [x])
        want = tuple(OPS["layer_scale"].weights([self.type_of(inputs[0])], {"init": 1.0})[0].shape)
        if shape != want:
            raise self.fail(
                node,
                f"multiplies by '{target}' of shape {list(shape)}: a scale the spec's layer_scale holds is one per "
                f"channel of this input, of shape {list(want)}",
            )
        scope, _, attr = target.rpartition(".")
        init = 1e-6
        values = tensor.detach()
        if values.device.type != "meta" and values.numel() and bool((values == values.flatten()[0]).all()):
            init = float(values.flatten()[0])
        self.scope(scope)
        name = self.fresh(scope, attr, own=True)
        self.add(node, Lowered("layer_scale", {"init": init}), scope, name, inputs, {"": tensor})

    def learned(self, param: fx.Node, reads: object) -> None:
        """A module's tensor read in the forward (a ViT's position embedding added to the tokens)
        as a ``parameter`` op: it reads ``reads`` for the batch size only."""
        if not isinstance(reads, fx.Node) or self.value.get(reads) is None:
            raise self.fail(param, "is added to something other than a tensor the spec can name")
        mine, theirs = tuple(param.meta["tensor_meta"].shape), tuple(reads.meta["tensor_meta"].shape)
        if mine[1:] != theirs[1:]:
            raise self.fail(
                param, f"of shape {list(mine)} is added to a tensor of {list(theirs)}: only a tensor of its shape is"
            )
        self.parameter(param, param, reads)

    def class_token(self, node: fx.Node) -> None:
        """``token.expand(n, -1, -1)``: a learned tensor repeated over the batch, a ``parameter`` op
        reading the tensor whose shape gave ``n``."""
        sizes = self.call(node, []).args[1:]
        sizes = sizes[0] if len(sizes) == 1 and isinstance(sizes[0], (list, tuple)) else sizes
        tensor = self.learned_tensor(node, node.args[0].target)
        if (
            not sizes
            or not isinstance(sizes[0], torch_shapes.Batch)
            or len(sizes) != tensor.dim()
            or any(s not in (-1, d) for s, d in zip(sizes[1:], tensor.shape[1:], strict=True))
        ):
            raise self.fail(node, f"expand{tuple(sizes)}: only a repetition over the batch (n, -1, ...) is understood")
        self.parameter(node, node.args[0], sizes[0].of)

    def learned_tensor(self, node: fx.Node, target: str) -> torch.Tensor:
        """The parameter ``target`` names, read by this one node: a tensor that is no parameter (a
        buffer, a constant) is fixed where the spec's tensors are learned, and one read twice
        would be two tensors of the spec (each node owns its own)."""
        try:
            tensor = self.root.get_parameter(target)
        except AttributeError:
            raise self.fail(
                node,
                f"reads '{target}', which is no parameter (a buffer or a constant): the spec's tensors are learned",
            ) from None
        owner = self.param_reads.setdefault(target, node)
        if owner is not node:
            raise self.fail(node, f"reads '{target}' a second time: a spec's tensor belongs to one layer")
        return tensor

    def parameter(self, node: fx.Node, param: fx.Node, reads: fx.Node) -> None:
        target = param.target
        tensor = self.learned_tensor(node, target)
        if tensor.dim() < 2 or tensor.shape[0] != 1:
            raise self.fail(
                node, f"reads '{target}' of shape {list(tensor.shape)}: a learned tensor is understood as (1, ...)"
            )
        scope, _, attr = target.rpartition(".")
        self.scope(scope)
        name = self.fresh(scope, attr, own=True)
        lowered = Lowered("parameter", {"shape": [int(d) for d in tensor.shape[1:]]})
        self.add(node, lowered, scope, name, self.inputs_of(node, [reads]), {"": tensor})
        self.value[param] = self.value[node]

    def outputs(self, node: fx.Node) -> list[tuple[str, fx.Node]]:
        value = node.args[0]
        if isinstance(value, dict):  # by name, in the dict's order (torchvision's segmentation models)
            self.by_name = True
            for key in value:
                if not isinstance(key, str) or not key.isidentifier() or keyword.iskeyword(key):
                    raise ImportFailure(
                        f"the forward returns a dict with the key {key!r}: a spec's output is named by an identifier",
                        where=self.label,
                    )
            return list(value.items())
        if isinstance(value, fx.Node) and value.op == "call_function" and hasattr(value.target, "_fields"):
            return list(zip(value.target._fields, value.args, strict=False))
        if isinstance(value, (tuple, list)):
            return [(f"out{k}" if k else "out", v) for k, v in enumerate(value)]
        return [("out", value)]


_getitem = operator.getitem
#: arithmetic of a tensor and a number (or of two tensors, ``sub``): functions and methods
_ARITHMETIC = {operator.add: "add", operator.iadd: "add", torch.add: "add", operator.sub: "sub"}
_ARITHMETIC |= {operator.isub: "sub", torch.sub: "sub", operator.mul: "mul", operator.imul: "mul", torch.mul: "mul"}
_ARITHMETIC |= {operator.truediv: "div", operator.itruediv: "div", torch.div: "div", operator.neg: "neg"}
_ARITHMETIC |= {torch.neg: "neg", torch.true_divide: "div"}
_METHOD_ARITHMETIC = {"add": "add", "add_": "add", "sub": "sub", "sub_": "sub", "mul": "mul", "mul_": "mul"}
_METHOD_ARITHMETIC |= {"div": "div", "div_": "div", "neg": "neg", "neg_": "neg"}
#: calls whose result may share the memory of their first argument
_VIEW_METHODS = frozenset(
    "view view_as reshape transpose swapaxes permute flatten unflatten squeeze unsqueeze expand expand_as narrow "
    "select t contiguous chunk split unbind".split()
)
_VIEW_FUNCTIONS = frozenset(
    {operator.getitem, torch.reshape, torch.flatten, torch.transpose, torch.swapaxes, torch.permute, torch.squeeze}
    | {torch.unsqueeze, torch.narrow, torch.select, torch.chunk, torch.split, torch.functional.split}
)


def _is_view(node: object) -> bool:
    if not isinstance(node, fx.Node) or not node.args or not isinstance(node.args[0], fx.Node):
        return False
    if node.op == "call_method":
        return node.target in _VIEW_METHODS
    return node.op == "call_function" and node.target in _VIEW_FUNCTIONS


_IN_PLACE = {operator.iadd, operator.isub, operator.imul, operator.itruediv, operator.imatmul}
_mul = operator.mul
_add = operator.add


def _describe_arguments(scope: Scope, values: dict, order: list[str]) -> None:
    """A constructor's arguments as template parameter candidates: numbers, booleans and
    pairs by name; a dict's entries (``**kwargs``) and a config object's fields by their own
    names; a module or None as a switch (``downsample``)."""
    args: dict = {}
    names: list[str] = []

    def put(name: str, value: object) -> None:
        if name in args or not name.isidentifier():
            return
        simple = _simple_value(value)
        if simple is not None:
            args[name] = simple
            names.append(name)

    for name in order:
        value = values.get(name)
        if isinstance(value, nn.Module) or (value is None and name not in ("padding",)):
            scope.switches[name] = value is not None
        if isinstance(value, dict):
            for k, v in value.items():
                put(str(k), v)
        elif _is_record(value):
            for k, v in vars(value).items():
                if not k.startswith("_"):
                    put(k, v)
        else:
            put(name, value)
    scope.args = args
    scope.arg_order = names


def _declared_defaults(scope: Scope, cls: type) -> None:
    """The defaults the constructor declares, for the arguments taken as parameters."""
    from nasdsl.importer.templates import NO_DEFAULT

    try:
        signature = inspect.signature(cls.__init__)
    except (TypeError, ValueError):  # pragma: no cover - a builtin's __init__
        return
    for name, p in signature.parameters.items():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or name == "self":
            continue
        scope.signature_args.add(name)
        if p.default is p.empty:
            scope.defaults[name] = NO_DEFAULT
        elif p.default is None and name in scope.switches:
            scope.defaults[name] = False
        elif _simple_value(p.default) is not None:
            scope.defaults[name] = _simple_value(p.default)


def _simple_value(value: object) -> object:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    if (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        # as the op tables write a pair: one integer when both are equal (a Swin block's shift)
        return value[0] if value[0] == value[1] else tuple(value)
    return None


def _is_record(value: object) -> bool:
    return (
        hasattr(value, "__dict__")
        and not isinstance(value, (nn.Module, type, torch.Tensor))
        and not callable(value)
        and not inspect.ismodule(value)
    )


# -- the whole model -----------------------------------------------------------------------


def read_module(
    module: nn.Module,
    *,
    input_shape: tuple[int, ...] | None,
    records: dict | None = None,
    label: str = "",
    name: str | None = None,
    allow_opaque: bool = False,
) -> FlatModel:
    """Trace ``module`` (training and inference) and read it into a FlatModel; with
    ``allow_opaque``, a one-input call without a spec op is an ``opaque`` op."""
    shape = tuple(input_shape or DEFAULT_SHAPE)
    label = label or type(module).__name__
    if len(shape) != 3:
        raise ImportFailure(
            f"the input shape given, {list(shape)}, has {len(shape)} size{'s' if len(shape) != 1 else ''}: a PyTorch "
            "model is traced at a batch of maps (N, C, H, W), whose input shape is C,H,W",
            where=label,
        )
    input_within_limits(shape, what=f"the input, of shape {list(shape)},", where=label)  # before it is traced
    if module._forward_hooks or module._forward_pre_hooks:
        raise ImportFailure(
            "the model has forward hooks, which torch.fx does not trace (it reads the forward alone): a spec's model "
            "computes its entries",
            where=label,
        )
    decisions: dict[bool, dict[int, bool]] = {True: {}, False: {}}
    train = _located(lambda: traced(module, True, label, shape, decisions[True]), module, True, label, decisions)
    infer = _located(lambda: traced(module, False, label, shape, decisions[False]), module, False, label, decisions)
    reader = _Reader(module, records or {}, label, allow_opaque)
    inp, outputs = _read_located(reader, train, module, True, label, decisions)
    if not outputs:
        raise ImportFailure("the model returns no tensor", where=label)
    out_ids = []
    for out_name, value in outputs:
        if not isinstance(value, fx.Node) or reader.value.get(value) is None:
            raise ImportFailure(f"the output '{out_name}' is not a tensor the spec can name", where=label)
        out_ids.append((out_name, reader.value[value]))
    model = FlatModel(
        name=name or _class_name(type(module).__name__),
        source=label,
        input=inp,
        nodes=reader.nodes,
        scopes=reader.scopes,
        outputs=[Output(n, i) for n, i in out_ids],
        outputs_by_name=reader.by_name,
    )
    at_inference = _Reader(module, {}, label, allow_opaque)
    at_inference.at_inference = True
    _, inference_outputs = _read_located(at_inference, infer, module, False, label, decisions)
    _mark_training_only(model, at_inference.nodes, len(inference_outputs), label)
    _drop_dead(model, label)
    _fold_sums(model)
    _note_unread(model, module)
    return model


def _note_unread(model: FlatModel, module: nn.Module) -> None:
    """The source's tensors that no node holds (a layer the forward never calls): the spec has
    no place for them, so the source's state_dict does not load into it strictly; the report
    says which."""
    held = {f"{n.path}.{k}" if k else n.path for n in model.nodes.values() for k in n.tensors}
    unread = [k for k in module.state_dict() if k not in held]
    if unread:
        shown = ", ".join(unread[:4]) + (f" and {len(unread) - 4} more" if len(unread) > 4 else "")
        model.notes.append(
            f"{len(unread)} tensor{'s' if len(unread) != 1 else ''} of the source that the forward never reads "
            f"({shown}) are left out: its state_dict loads only without them"
        )


def _read_located(reader: _Reader, graph: fx.Graph, module: nn.Module, training: bool, label: str, decisions: dict):
    """``reader.read(graph)``, its errors located (:func:`_located`)."""
    return _located(lambda: reader.read(graph), module, training, label, decisions)


def _located(work, module: nn.Module, training: bool, label: str, decisions: dict):
    """``work()``; an error at a node is located at the source line that made it (the module
    is traced again, recording them, with the same ``decisions`` of its conditions, only then)."""
    try:
        return work()
    except ImportFailure as e:
        if e.location is None and getattr(e, "fx_node", None):
            taken = e.decisions if getattr(e, "decisions", None) is not None else decisions[training]
            lines = trace(module, training, label, stack_traces=True, decisions=dict(taken))
            node = next((n for n in lines.nodes if n.name == e.fx_node), None)
            e.location = source_line(node) if node is not None else None
        raise


def _fold_sums(model: FlatModel) -> None:
    """``a + b + c`` (and ``sum(b(x) for b in branches)``) is traced as sums of two: a sum
    whose first term is a sum of the same scope that nothing else reads is one sum of them all,
    the same value (the spec's add sums its inputs in order), which a named merge can write."""
    readers = model.consumers()
    outputs = {o.node for o in model.outputs}
    for node in list(model.nodes.values()):
        inner = model.nodes.get(node.inputs[0]) if node.op == "add" and node.inputs else None
        if (
            inner is not None
            and inner.op == "add"
            and inner.scope == node.scope
            and inner.phase == node.phase
            and readers[inner.id] == [node.id]
            and inner.id not in outputs
        ):
            node.inputs = [*inner.inputs, *node.inputs[1:]]
            for i in inner.inputs:
                readers[i] = [node.id if r == inner.id else r for r in readers[i]]
            del model.nodes[inner.id]


def _class_name(name: str) -> str:
    name = re.sub(r"\W", "_", name).strip("_") or "Model"
    return name if not name[0].isdigit() else f"Model{name}"


def _ancestors(model: FlatModel, node_id: str) -> set[str]:
    seen, todo = set(), [node_id]
    while todo:
        n = todo.pop()
        if n in seen or n == model.input.id:
            continue
        seen.add(n)
        todo.extend(model.nodes[n].inputs)
    return seen


def _mark_training_only(model: FlatModel, inference: dict[str, Node], outputs: int, label: str) -> None:
    """Nodes that only the training outputs read run in training only. The inference trace
    (read into ``inference``) must compute exactly the rest, node for node (a dropout or
    stochastic depth that it leaves out is an identity there): anything else is a forward
    that a spec's ``phase`` cannot say, an error rather than a silently different network."""
    if outputs == len(model.outputs):
        returned = model.outputs
    elif outputs == 1:
        returned = model.outputs[:1]
    else:
        raise ImportFailure(
            f"the model returns {len(model.outputs)} outputs in training and {outputs} at inference", where=label
        )
    main: set[str] = set()
    for out in model.outputs:
        out.training_only = out not in returned
        if not out.training_only:
            main |= _ancestors(model, out.node)
    for node_id, node in model.nodes.items():
        if node_id not in main:
            node.phase = "train"
    alias = {
        i: n.inputs[0]
        for i, n in model.nodes.items()
        if i in main and i not in inference and n.op in ("dropout", "stochastic_depth")
    }

    def resolved(i: str) -> str:
        while i in alias:
            i = alias[i]
        return i

    expected = {i for i in main if i not in alias}
    differ = sorted(expected ^ set(inference))
    for i in sorted(expected & set(inference)):
        mine, theirs = model.nodes[i], inference[i]
        if (mine.op, mine.attrs, [resolved(x) for x in mine.inputs]) != (theirs.op, theirs.attrs, theirs.inputs):
            differ.append(i)
    if differ:
        raise ImportFailure(
            "the model computes something else at inference than in training, beyond training-only outputs and "
            f"dropout (first at {', '.join(differ[:3])}): a spec's phase cannot say it",
            where=label,
        )


def _drop_dead(model: FlatModel, label: str) -> None:
    """Nodes that no output reads are left out; one that holds weights is an error (its
    state_dict entries would have nowhere to go)."""
    live: set[str] = set()
    for out in model.outputs:
        live |= _ancestors(model, out.node)
    for node_id in [n for n in model.nodes if n not in live]:
        node = model.nodes[node_id]
        if node.tensors:
            raise ImportFailure(
                f"{node.source}: the layer holds weights but no output reads it", path=node.path, where=label
            )
        del model.nodes[node_id]
