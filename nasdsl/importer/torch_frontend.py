"""PyTorch models into a :class:`~nasdsl.importer.flat.FlatModel`, through torch.fx.

:func:`load` makes the module from ``torchvision:NAME`` or ``module:pkg.mod:factory`` (the
factory is the user's own code, run as it is) while :func:`recording_constructors` notes what
each module's constructor was given: those arguments name the templates' parameters.
:func:`read_module` traces the module with ``torch.fx.symbolic_trace``'s machinery, the layer
modules of :mod:`nasdsl.importer.torch_ops` being leaves, in training mode (auxiliary heads
run only there) and at inference (to check that both agree on the rest), propagates shapes
with an example input, and maps every call through the op tables. A call without an entry is
an :class:`~nasdsl.importer.flat.ImportFailure` naming the node and the op, located at the
source line that made it.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import keyword
import os
import re
import sys
import warnings
from collections.abc import Iterator

import torch
import torch.fx as fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from nasdsl.errors import Location
from nasdsl.importer import torch_ops, torch_shapes
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
    shape_after,
)
from nasdsl.importer.ops_table import Lowered, Unsupported

#: module classes written inline (a list or a named sequence), never as templates
CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
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


# -- tracing -------------------------------------------------------------------------------


class _Tracer(fx.Tracer):
    """symbolic_trace's tracer with the table's modules (and torch's other layers) as leaves;
    with ``stack_traces``, each node records the lines of the model's code that made it."""

    def __init__(self, stack_traces: bool = False) -> None:
        super().__init__(autowrap_functions=torch_ops.WRAPPED)
        self.record_stack_traces = stack_traces

    def _filter_traceback_frames(self, summary):
        import traceback

        inside = os.path.dirname(torch.__file__) + os.sep
        return traceback.StackSummary.from_list([f for f in summary if not f.filename.startswith(inside)])

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if type(m) in torch_ops.MODULES:
            return True
        # torch's own layers without an entry stay whole, so that the error names the layer
        return type(m).__module__.startswith("torch.nn") and not isinstance(m, CONTAINERS)


def _trace(module: nn.Module, training: bool, label: str, stack_traces: bool = False) -> fx.Graph:
    modes = [(m, m.training) for m in module.modules()]
    module.train(training)
    try:
        return _Tracer(stack_traces).trace(module)
    except ImportFailure:
        raise
    except Exception as e:  # noqa: BLE001 - whatever the user's forward raises under tracing
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ImportFailure(
            f"torch.fx cannot trace the model's forward ({'training' if training else 'inference'} mode): "
            f"{type(e).__name__}: {first[:300]}",
            where=label,
        ) from None
    finally:
        for m, mode in modes:
            m.training = mode


def _shapes(module: nn.Module, graph: fx.Graph, shape: tuple[int, ...], label: str) -> None:
    """Run the traced graph on an example input (zeros, batch 1) at inference so that every
    node's meta holds its output shape; the module's own modes and statistics are untouched."""
    gm = fx.GraphModule(module, graph)
    modes = [(m, m.training) for m in module.modules()]
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    module.eval()
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(torch.zeros((1, *shape), device=device))
    except Exception as e:  # noqa: BLE001
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ImportFailure(
            f"the model does not run on an input of shape {list(shape)} (give --input-shape): "
            f"{type(e).__name__}: {first[:300]}",
            where=label,
        ) from None
    finally:
        for m, mode in modes:
            m.training = mode


def _location(node: fx.Node) -> Location | None:
    trace = node.meta.get("stack_trace") or ""
    found = re.findall(r'File "([^"]+)", line (\d+)', trace)
    if not found:
        return None
    file, line = found[-1]
    return Location(file, int(line), 1)


def _what(node: fx.Node, root: nn.Module) -> str:
    if node.op == "call_module":
        return f"module {type(root.get_submodule(node.target)).__qualname__}"
    if node.op == "get_attr":
        return f"tensor {node.target}"
    if node.op == "call_method":
        return f"method Tensor.{node.target}"
    target = node.target
    name = getattr(target, "__qualname__", None) or getattr(target, "__name__", None) or str(target)
    name = name.removeprefix("_VariableFunctionsClass.")  # torch.sin, not its binding's class
    owner = getattr(target, "__module__", None)
    return f"function {owner}.{name}" if owner and owner not in ("_operator", "builtins") else f"function {name}"


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
        self.chunks: dict[fx.Node, tuple[fx.Node, int]] = {}
        #: shape arithmetic evaluated at the traced input (:mod:`nasdsl.importer.torch_shapes`)
        self.consts: dict[fx.Node, object] = {}
        #: calls that return a tuple (attention's output and weights) -> the node of their output
        self.pairs: dict[fx.Node, str] = {}
        self.modules_called: dict[str, int] = {}
        self.order = 0
        self.doc = ""
        #: whether the forward returns its outputs as a dict
        self.by_name = False

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
            f"{_what(node, self.root)} (fx node '{node.name}'): {message}",
            location=_location(node),
            path=path,
            where=self.label,
        )
        error.fx_node = node.name
        return error

    def add(self, node: fx.Node, lowered, scope: str, name: str, inputs: list[str], tensors: dict) -> None:
        chain = lowered if isinstance(lowered, tuple) else (lowered,)
        meta = node.meta["tensor_meta"]
        meta = meta if hasattr(meta, "shape") else meta[0]  # attention: (output, weights)
        shape = tuple(meta.shape)[1:]
        self.scope(scope)
        prev = inputs
        for k, step in enumerate(chain):
            step_name = name if k == 0 else self.fresh(scope, f"{name}_{step.suffix}")
            node_id = join(scope, step_name)
            self.order += 1
            self.nodes[node_id] = Node(
                node_id,
                step.op,
                dict(step.attrs),
                list(prev),
                shape if k == len(chain) - 1 else self._mid_shape(step, prev),
                scope,
                step_name,
                tensors if k == 0 else {},
                f"fx node '{node.name}' ({_what(node, self.root)})",
                _location(node),
                order=self.order,
            )
            prev = [node_id]
        if self.doc:
            self.nodes[prev[0]].doc, self.doc = self.doc, ""
        self.value[node] = prev[0]

    def _mid_shape(self, step: Lowered, inputs: list[str]) -> tuple[int, ...]:
        """The shape after a step inside a chain, by the op's own shape rule."""
        return shape_after(step.op, step.attrs, [self.shape_of(i) for i in inputs])

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
        return torch_ops.Call(args, kwargs, shapes, tuple(meta.shape) if hasattr(meta, "shape") else None)

    def read(self, graph: fx.Graph) -> tuple[Node, list[tuple[str, fx.Node]]]:
        inp = None
        outputs: list[tuple[str, fx.Node]] = []
        self.scope("")
        for node in graph.nodes:
            if node.op == "placeholder":
                if inp is not None:
                    raise self.fail(node, "a second input: a spec has one")
                shape = tuple(node.meta["tensor_meta"].shape)
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
        return inp, outputs

    def opaque(self, node: fx.Node, message: str, inputs: list[str], holds: bool) -> Lowered:
        """With --allow-opaque, a call without a spec op as an ``opaque`` op with its shape;
        else (or when it holds weights, or reads other than one tensor) the error."""
        meta = node.meta.get("tensor_meta")
        if not self.allow_opaque or holds or len(inputs) != 1 or not hasattr(meta, "shape"):
            raise self.fail(node, message)
        self.doc = f"opaque: {_what(node, self.root)} ({message.split(' (the op table')[0]})"
        return Lowered("opaque", {"shape": list(meta.shape[1:])})

    def module_call(self, node: fx.Node) -> None:
        module = self.root.get_submodule(node.target)
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
        if target is _getitem and node.args[0] in self.pairs:
            self.value[node] = self.pairs[node.args[0]] if node.args[1] == 0 else None  # attention's weights: none
            return
        if node.op == "call_method" and target == "expand" and node.args[0] in self.params:
            return self.class_token(node)
        if target in (_add, torch.add) and any(a in self.params and self.value.get(a) is None for a in node.args[:2]):
            a, b = node.args[:2]
            self.learned(a if a in self.params else b, b if a in self.params else a)
        if node.op == "call_method" and target == "chunk":
            self.chunks[node] = (node.args[0], int(node.args[1] if len(node.args) > 1 else node.kwargs["chunks"]))
            dim = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)
            if int(dim) % len(node.args[0].meta["tensor_meta"].shape) != 1:
                raise self.fail(node, f"chunks along axis {dim}: the spec slices channels (axis 1)")
            self.value[node] = None
            return
        if target is _getitem and node.args[0] in self.chunks:
            return self.chunk_item(node)
        if node.op == "call_function" and isinstance(target, type) and hasattr(target, "_fields"):
            self.value[node] = None  # a NamedTuple of outputs, read by the output node
            return
        if target in (_mul, torch.mul) and any(a in self.params for a in node.args[:2]):
            return self.layer_scale(node)
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
        scope = _scope_of(node)
        self.scope(scope)
        base = target if isinstance(target, str) else getattr(target, "__name__", "op")
        name = self.fresh(scope, torch_ops.NAMES.get(base, base if base.isidentifier() else "op"))
        if isinstance(lowered, Lowered) and lowered.op == "identity":
            self.value[node] = inputs[0]  # x.contiguous(), dropout outside training: nothing to write
            self.used[scope].discard(name)
            return
        self.add(node, lowered, scope, name, inputs, {})

    def chunk_item(self, node: fx.Node) -> None:
        source, chunks = self.chunks[node.args[0]]
        index = int(node.args[1])
        channels = source.meta["tensor_meta"].shape[1]
        size = -(-channels // chunks)
        start, stop = index * size, min(channels, (index + 1) * size)
        attrs = {"start": start} if stop == channels else {"start": start, "stop": stop}
        scope = _scope_of(node)
        self.scope(scope)
        name = self.fresh(scope, f"chunk{index}")
        self.add(node, Lowered("slice", attrs), scope, name, self.inputs_of(node, [source]), {})

    def layer_scale(self, node: fx.Node) -> None:
        a, b = node.args[:2]
        param, x = (a, b) if a in self.params else (b, a)
        target = self.params[param]
        tensor = self.root.get_parameter(target)
        shape = tuple(tensor.shape)
        channels = x.meta["tensor_meta"].shape[1]
        if shape not in ((channels, 1, 1), (channels,)):
            raise self.fail(
                node, f"multiplies by '{target}' of shape {list(shape)}: only a per-channel scale is understood"
            )
        scope, _, attr = target.rpartition(".")
        init = 1e-6
        if tensor.device.type != "meta" and tensor.numel() and bool((tensor == tensor.flatten()[0]).all()):
            init = float(tensor.flatten()[0])
        self.scope(scope)
        name = self.fresh(scope, attr, own=True)
        self.add(node, Lowered("layer_scale", {"init": init}), scope, name, self.inputs_of(node, [x]), {"": tensor})

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
        try:
            return self.root.get_parameter(target)
        except AttributeError:
            raise self.fail(
                node, f"reads '{target}', which is no parameter: the spec's parameter op is learned"
            ) from None

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


_getitem = __import__("operator").getitem
_mul = __import__("operator").mul
_add = __import__("operator").add


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
    train = _trace(module, True, label)
    infer = _trace(module, False, label)
    _shapes(module, train, shape, label)
    _shapes(module, infer, shape, label)
    reader = _Reader(module, records or {}, label, allow_opaque)
    try:
        inp, outputs = reader.read(train)
    except ImportFailure as e:
        if e.location is None and getattr(e, "fx_node", None):  # trace again, to say where
            lines = _trace(module, True, label, stack_traces=True)
            node = next((n for n in lines.nodes if n.name == e.fx_node), None)
            e.location = _location(node) if node is not None else None
        raise
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
    _, inference_outputs = at_inference.read(infer)
    _mark_training_only(model, at_inference.nodes, len(inference_outputs), label)
    _drop_dead(model, label)
    return model


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
