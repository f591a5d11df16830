"""Tracing a PyTorch model with torch.fx, as :mod:`nasdsl.importer.torch_frontend` reads it.

:func:`trace` runs ``torch.fx``'s tracer with the modules of :mod:`nasdsl.importer.torch_ops`
(and torch's other layers) as leaves, the forward's arguments after its input at their
defaults, ``y += x`` recorded as the in-place call it is, and each condition of the forward on
something traced (``assert x.dim() == 4``, ``if h != w:``) taken one way and asserted in the
graph. :func:`traced` runs the graph on an example input, so that every node holds its shape,
and traces again where the input finds a condition the other way. :func:`source_line` and
:func:`describe` say where a node was made and what it calls, for messages.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import operator
import os
import re

import torch
import torch.fx as fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from nasdsl.errors import Location
from nasdsl.importer import torch_ops
from nasdsl.importer.flat import ImportFailure

#: the conditions on traced values a trace takes as true at most (a loop on a shape would not end)
MAX_ASSUMED = 256
#: the message of the assertion a condition taken as true makes
_ASSUMED = (
    "a condition of the forward that torch.fx cannot follow was taken as true while tracing; it is false at "
    "this input (the forward takes another branch here)"
)

#: module classes written inline (a list or a named sequence), never as templates
CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


class _Proxy(fx.Proxy):
    """torch.fx's proxy, with ``y += x`` (and ``-=``, ``*=``, ``/=``, ``@=``) recorded as the
    in-place call it is: torch.fx records ``y + x``, after which a name still bound to ``y``
    would read the value before the sum where PyTorch reads the one after."""


def _in_place(name: str):
    target = getattr(operator, name)

    def method(self, other):
        return self.tracer.create_proxy("call_function", target, (self, other), {})

    method.__name__ = f"__{name}__"
    return method


for _name in ("iadd", "isub", "imul", "itruediv", "imatmul"):
    setattr(_Proxy, f"__{_name}__", _in_place(_name))


class _Tracer(fx.Tracer):
    """symbolic_trace's tracer with the table's modules (and torch's other layers) as leaves;
    with ``stack_traces``, each node records the lines of the model's code that made it."""

    def __init__(self, stack_traces: bool = False, decisions: dict[int, bool] | None = None) -> None:
        super().__init__(autowrap_functions=torch_ops.WRAPPED)
        self.record_stack_traces = stack_traces
        #: the conditions on traced values met so far, and the value each is taken as (true unless said)
        self.assumed = 0
        self.decisions = decisions or {}

    def _filter_traceback_frames(self, summary):
        import traceback

        inside = os.path.dirname(torch.__file__) + os.sep
        return traceback.StackSummary.from_list(
            [f for f in summary if not f.filename.startswith(inside) and f.filename != __file__]
        )

    def proxy(self, node: fx.Node) -> fx.Proxy:
        return _Proxy(node, self)

    def to_bool(self, obj: fx.Proxy) -> bool:
        """A condition of the forward on something traced (``assert x.dim() == 4``, ``if h != w:``)
        is taken as true (or as :attr:`decisions` says), and the graph asserts it: the example
        input checks it (a condition on shapes, evaluated at the traced size; :func:`traced`
        traces again with the other value where it fails), and one on a tensor's values stays an
        error."""
        index = self.assumed
        self.assumed += 1
        if self.assumed > MAX_ASSUMED:
            raise fx.proxy.TraceError(f"more than {MAX_ASSUMED} conditions on traced values (a loop on a shape?)")
        taken = self.decisions.get(index, True)
        checked = obj if taken else self.create_proxy("call_function", operator.not_, (obj,), {})
        self.create_proxy("call_function", torch._assert, (checked, _ASSUMED), {}).node.meta["assumed"] = index
        return taken

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if type(m) in torch_ops.MODULES:
            return True
        # torch's own layers without an entry stay whole, so that the error names the layer
        return type(m).__module__.startswith("torch.nn") and not isinstance(m, CONTAINERS)


def trace(
    module: nn.Module, training: bool, label: str, stack_traces: bool = False, decisions: dict | None = None
) -> fx.Graph:
    modes = [(m, m.training) for m in module.modules()]
    concrete = _forward_defaults(module, label)
    module.train(training)
    try:
        graph = _Tracer(stack_traces, decisions).trace(module, concrete_args=concrete or None)
        _drop_specialised(graph)
        return graph
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


def _forward_defaults(module: nn.Module, label: str) -> dict[str, object]:
    """The forward's arguments after its input, each traced at its default (a flag, a scale, a
    mask of None: what a call with the input alone computes); one without a default is a second
    input, which a spec's model has not."""
    try:
        params = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):  # pragma: no cover - a forward without a signature
        return {}
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    rest = params[1:] if params and params[0].kind in positional else params
    defaults = {}
    for p in rest:
        if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue
        if p.default is inspect.Parameter.empty:
            raise ImportFailure(
                f"the forward takes a second input '{p.name}' without a default: a spec's model reads one input",
                where=label,
            )
        defaults[p.name] = p.default
    return defaults


def _drop_specialised(graph: fx.Graph) -> None:
    """The placeholders torch.fx adds for arguments traced at a value, and the checks of that
    value that read them: the graph reads its input alone."""
    extra = [n for n in graph.nodes if n.op == "placeholder"][1:]
    doomed: list[fx.Node] = []
    todo = list(extra)
    while todo:
        n = todo.pop()
        if n not in doomed:
            doomed.append(n)
            todo.extend(n.users)
    if any(n.op == "output" for n in doomed):
        return  # the value reaches an output: left for the reader, which refuses a second input
    position = {n: k for k, n in enumerate(graph.nodes)}
    for n in sorted(doomed, key=position.__getitem__, reverse=True):
        graph.erase_node(n)


class Assumed(ImportFailure):
    """A condition taken one way while tracing is the other way on the example input."""

    #: which condition of the trace, and how the trace took each (:attr:`_Tracer.decisions`)
    index = 0
    decisions: dict | None = None


def traced(module: nn.Module, training: bool, label: str, shape: tuple[int, ...], decisions: dict) -> fx.Graph:
    """The module traced in one mode, with the shapes of the example input, each condition of
    its forward on shapes taken as it is at that input: true first, and where the example input
    finds one false, traced again with it false (``decisions``, filled in here)."""
    turned: Assumed | None = None
    while True:
        try:
            graph = trace(module, training, label, decisions=decisions)
        except ImportFailure:
            if turned is not None:  # the other way fails too (an assertion has no other branch)
                raise turned from None
            raise
        try:
            _shapes(module, graph, shape, label)
            return graph
        except Assumed as e:
            e.decisions = dict(decisions)  # the trace it was found in, to locate it
            if decisions.get(e.index, True) is False or len(decisions) >= MAX_ASSUMED:
                raise
            decisions[e.index], turned = False, e


class _Shapes(ShapeProp):
    """ShapeProp that remembers the node it runs (the one that failed, when one does)."""

    at: fx.Node | None = None

    def run_node(self, n: fx.Node):
        self.at = n
        return super().run_node(n)


def _shapes(module: nn.Module, graph: fx.Graph, shape: tuple[int, ...], label: str) -> None:
    """Run the traced graph on an example input (zeros, batch 1) at inference so that every
    node's meta holds its output shape; the module's own modes and statistics are untouched."""
    modes = [(m, m.training) for m in module.modules()]
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    module.eval()
    running = None
    try:
        gm = fx.GraphModule(module, graph)  # Python code of the graph: a name it cannot write raises here
        running = _Shapes(gm)
        # ShapeProp prints the traceback of a node that fails: the error below says it
        with torch.no_grad(), contextlib.redirect_stderr(io.StringIO()):
            running.propagate(torch.zeros((1, *shape), device=device))
    except SyntaxError as e:
        raise ImportFailure(
            f"torch.fx cannot write the traced forward as Python ({e.msg}): a module or attribute named by a Python "
            "keyword (setattr(self, 'in', ...))?",
            where=label,
        ) from None
    except Exception as e:  # noqa: BLE001
        node = running.at if running is not None else None
        if node is not None and "assumed" in node.meta:
            error = Assumed(
                f"_assert (fx node '{node.name}'): the forward branches on a condition torch.fx cannot follow, "
                f"taken as true while tracing and false on the example input (zeros of shape {list(shape)}): a "
                "branch on a tensor's values is no network a spec writes, one on a shape holds at one input size",
                where=label,
            )
            error.fx_node, error.index = node.name, node.meta["assumed"]
            raise error from None
        cause = e.__cause__ if isinstance(e.__cause__, Exception) and node is not None else e
        first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        at = f" at fx node '{node.name}' ({describe(node, module)})" if node is not None else ""
        raise ImportFailure(
            f"the model does not run on an input of shape {list(shape)} (give --input-shape){at}: "
            f"{type(cause).__name__}: {first[:300]}",
            where=label,
        ) from None
    finally:
        for m, mode in modes:
            m.training = mode


def source_line(node: fx.Node) -> Location | None:
    if node.op == "placeholder":  # made by the tracer, not by a line of the forward
        return None
    trace = node.meta.get("stack_trace") or ""
    found = re.findall(r'File "([^"]+)", line (\d+)', trace)
    if not found:
        return None
    file, line = found[-1]
    return Location(file, int(line), 1)


def describe(node: fx.Node, root: nn.Module) -> str:
    if node.op == "call_module":
        return f"module {type(root.get_submodule(node.target)).__qualname__}"
    if node.op == "get_attr":
        return f"tensor {node.target}"
    if node.op == "placeholder":
        return f"input {node.target}"
    if node.op == "call_method":
        return f"method Tensor.{node.target}"
    target = node.target
    name = getattr(target, "__qualname__", None) or getattr(target, "__name__", None) or str(target)
    if "<locals>" in name:  # a function made by another (F.max_pool2d by boolean_dispatch): its own name
        name = getattr(target, "__name__", name)
    name = name.removeprefix("_VariableFunctionsClass.")  # torch.sin, not its binding's class
    owner = getattr(target, "__module__", None)
    return f"function {owner}.{name}" if owner and owner not in ("_operator", "builtins") else f"function {name}"
