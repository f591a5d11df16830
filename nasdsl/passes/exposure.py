"""Which variables a generated class can take as constructor arguments.

:func:`expose` is an analysis of the graph: it sets the graph's ``exposed`` to
the variables that can change when the class is built without changing the
input size of any layer with weights, and whose every use the class can write
as an expression of its arguments. Such a variable is a rate (``dropout``), a
size that only the output sees (``num_classes``), a flag (``bias``), or a
switch that turns on and off a block that keeps its input's shape, or an
output head (``aux_logits``).

A variable ``v`` is refused when

* the input reads it, or another variable's definition does, or a
  ``repeat``'s count or names do (it decides how many blocks there are);
* some value that depends on it cannot be written as an expression of the
  enclosing class's arguments (``p: "dropout / 2"``), or the chain of template
  arguments that carries it into a template loses it;
* it changes a shape that reaches the input of a layer with weights, through
  the ops between (an ``out`` of a convolution followed by BatchNorm, a kernel
  before ``flatten`` and ``linear``);
* a condition uses it other than as a bare switch, or it switches a reference,
  the main output, an output without a head (unless it reads a top-level entry
  that the same switch turns on and off), a block that something outside it
  reads from inside, or a block below the entries of the model or of a named
  template body (an item of a list, a branch of a merge: the class writes those
  inside one module expression, with no statement to guard), or a block of a
  template body whose condition names the variable itself rather than a
  parameter of the template; or the part it switches on does not build (see
  :class:`nasdsl.ir.Dormant`);
* an output's loss weight depends on it.

The graph is otherwise returned unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable

import networkx as nx

from nasdsl import ir
from nasdsl.ir.sym import Sym
from nasdsl.ops import OPS

#: attribute roles whose value changes the output's leading dimension, or its spatial size
_LEAD_ROLES = ("count",)
_SPATIAL_ROLES = ("window",)


def expose(g: nx.DiGraph, *, reserved: Iterable[str] = ()) -> nx.DiGraph:
    """A copy of ``g`` whose record's ``exposed`` holds the exposable variables in spec
    order. Names in ``reserved`` are never exposed (a backend's own names)."""
    info = ir.info(g)
    variables = info.variables
    refused: set[str] = set(reserved)
    used: set[str] = set()
    dormant = info.dormant
    refused |= set(dormant.errors)
    for names in info.variable_deps.values():
        refused |= names
    refused |= info.structural
    refused |= set().union(*ir.node(g, info.input).deps.values())
    refused |= {v for v, value in variables.items() if not isinstance(value, (bool, int, float))}

    starts: dict[str, list[tuple[nx.DiGraph, str, bool, bool]]] = {}
    uses = {b.path: b for root in ir.roots(g) for b in ir.walk(root) if b.kind == "use"}
    enclosing = _enclosing_uses(g)
    graphs = (g, dormant.graph)
    for graph in graphs:
        for n, data in ir.nodes(graph):
            if data.op in ("input", "external"):
                continue
            opdef = OPS[data.op]
            for attr, names in data.deps.items():
                used |= names
                expr = data.exprs.get(attr)
                if expr is None:
                    refused |= names  # folded into the class: it could not follow a change
                    continue
                if data.instance == "":
                    refused |= names - _names(expr)
                elif data.instance in uses:  # the class folds what no argument of its use carries
                    use = uses[data.instance]
                    refused |= names.difference(*(a.deps for a in use.args if a.name in _names(expr)))
                role = opdef.attr_index[attr].role
                lead = role in _LEAD_ROLES and opdef.lead == "out"
                spatial = role in _SPATIAL_ROLES and data.shape is not None and len(data.shape) == 3
                if lead or spatial:
                    for v in names:
                        starts.setdefault(v, []).append((graph, n, lead, spatial))

    bridges: dict[str, str] = {}  # a dormant block's output -> the node its readers read while it is off
    inside: dict[str, list[ir.Block]] = {}  # switch -> blocks it turns on and off
    inner = _inner_uses(g)
    outputs = ir.all_outputs(g)
    heads = {id(o.head) for o in outputs if o.head is not None}  # side branches: nothing reads them
    # the blocks a class's forward guards one by one (the entries of the model and of a named
    # template body); a block nested in a module expression (an item of an nn.Sequential, a
    # branch of a merge) is built as its spec value says
    bodies = [info.model] + [
        b.children[0] for root in ir.roots(g) for b in ir.walk(root) if b.kind == "use" and b.children
    ]
    guarded = {id(c) for body in bodies if body.kind == "seq" and body.named for c in body.children} | heads
    for root in ir.roots(g):
        for b in ir.walk(root):
            for a in b.args:
                used |= a.deps
                if a.expr is None:
                    refused |= a.deps
                elif b.path not in inner:
                    refused |= a.deps - _names(a.expr)
                else:  # written in the enclosing template's class: only its arguments carry variables
                    outer = uses[enclosing[b.path]]
                    refused |= a.deps.difference(*(o.deps for o in outer.args if o.name in _names(a.expr)))
            if b.when is None:
                continue
            used |= b.when.deps
            refused |= b.when.deps - {b.when.switch}
            if b.when.switch is None or b.kind == "skip":
                continue
            if b.kind == "ref":
                refused.add(b.when.switch)
                continue
            if id(b) not in guarded or not isinstance(b.when.expr, Sym):
                # nested in a module expression, or a condition the class folds (a variable
                # written in a template body, which no argument of the template carries)
                refused.add(b.when.switch)
                continue
            if id(b) in heads:
                continue  # an output's head: switching it changes no other shape
            inside.setdefault(b.when.switch, []).append(b)
            if b.dormant:
                bridges[b.output] = b.inputs[0]

    # a model entry that the same switch turns on and off with the output it feeds (Inception-v3's
    # AuxLogits): the output is there exactly when the class builds its source
    entries = {c.path: c for c in info.model.children}
    for o in outputs:
        used |= o.deps
        refused |= o.deps
        if o.when is not None:
            used.add(o.when)
            source = entries.get(o.source)
            fed = source is not None and source.when is not None and source.when.switch == o.when
            if o.position == 0 or o is outputs[0] or (o.head is None and not fed):
                refused.add(o.when)

    for switch, blocks in inside.items():
        if switch in refused:
            continue
        for b in blocks:
            if not _switch_is_harmless(g, b, bridges, outputs):
                refused.add(switch)
                break
    for v, found in starts.items():
        if v not in refused and any(_reaches_weights(g, graph, n, lead, sp, bridges) for graph, n, lead, sp in found):
            refused.add(v)

    exposed = [v for v in variables if v in used and v not in refused]
    exposed = _substitutable(g, exposed, inner)
    g = ir.copy(g)
    ir.update_info(g, exposed=tuple(exposed))
    return g


def _names(expr: object) -> frozenset[str]:
    if isinstance(expr, Sym):
        return expr.names
    if isinstance(expr, tuple):
        return frozenset().union(*(_names(x) for x in expr))
    return frozenset()


def _inner_uses(g: nx.DiGraph) -> frozenset[str]:
    """Paths of the template uses written inside another template's body (their
    arguments are expressions of that template's parameters, not of variables)."""
    found: set[str] = set()
    stack = [(root, False) for root in ir.roots(g)]
    while stack:
        b, in_template = stack.pop()
        if b.kind == "use":
            if in_template:
                found.add(b.path)
            in_template = True
        stack.extend((c, in_template) for c in b.children)
    return frozenset(found)


def _enclosing_uses(g: nx.DiGraph) -> dict[str, str]:
    """For each block inside a template's body, the path of that template's use."""
    found: dict[str, str] = {}
    stack: list[tuple[ir.Block, str | None]] = [(root, None) for root in ir.roots(g)]
    while stack:
        b, use = stack.pop()
        if use is not None:
            found.setdefault(b.path, use)  # a use's body shares its path: the use itself comes first
        stack.extend((c, b.path if b.kind == "use" else use) for c in b.children)
    return found


def _lead_and_spatial(shape_in: tuple | None, shape_out: tuple | None) -> tuple[bool, bool]:
    if shape_in is None or shape_out is None:
        return True, True
    if len(shape_in) != len(shape_out):
        return True, True
    return shape_in[0] != shape_out[0], tuple(shape_in[1:]) != tuple(shape_out[1:])


def _switch_is_harmless(g: nx.DiGraph, b: ir.Block, bridges: dict[str, str], outputs: list[ir.Output]) -> bool:
    """Whether turning block ``b`` off (if it is on) or on (if it is dormant) leaves
    every layer with weights outside it with the input size it has now."""
    shape_in = ir.node(g, b.inputs[0]).shape
    shape_out = ir.node(g, b.output).shape
    lead, spatial = _lead_and_spatial(shape_in, shape_out)
    if not b.dormant:
        members = {c.path for c in ir.walk(b) if c.path in g} - {b.output}
        for n in members:  # read from inside by something outside: it would dangle
            if any(c not in members and c != b.output for c in g.successors(n)):
                return False
        if any(o.node in members for o in outputs) or any(
            o.source == b.path or o.source.startswith(b.path + ".") for o in outputs if o.source != b.path
        ):
            return False
        if not (lead or spatial):
            return True
        return not _reaches_weights(g, g, b.output, lead, spatial, bridges)
    if not (lead or spatial):
        return True
    return not _reaches_weights(g, g, b.inputs[0], lead, spatial, bridges)


def _reaches_weights(
    g: nx.DiGraph, graph: nx.DiGraph, start: str, lead: bool, spatial: bool, bridges: dict[str, str]
) -> bool:
    """Whether a change of ``start``'s leading dimension (``lead``) or spatial size
    reaches the input of an op with weights."""
    seen: set[tuple[str, bool, bool]] = set()
    queue = [(graph, start, lead, spatial)]
    while queue:
        here, n, lead, spatial = queue.pop()
        if (n, lead, spatial) in seen:
            continue
        seen.add((n, lead, spatial))
        readers = [(here, c) for c in here.successors(n)]
        if n in bridges:
            readers += [(g, c) for c in g.successors(bridges[n])]
        for where, c in readers:
            data = ir.node(where, c)
            op = OPS[data.op]
            if op.has_weights and lead:
                return True
            out_lead = (op.lead in ("same", "sum", "slice") and lead) or (op.lead == "flatten" and (lead or spatial))
            shape = data.shape
            out_spatial = spatial and op.spatial == "follow" and (shape is None or len(shape) == 3)
            if out_lead or out_spatial:
                queue.append((where, c, out_lead, out_spatial))
    return False


def _substitutable(g: nx.DiGraph, exposed: list[str], inner: frozenset[str]) -> list[str]:
    """Drop exposed variables that share an expression of the model with a folded
    variable whose value cannot be written into it (a float in an integer expression)."""
    variables = ir.info(g).variables
    changed = True
    while changed:
        changed = False
        keep = set(exposed)
        for expr in _model_exprs(g, inner):
            names = _names(expr)
            if not names & keep:
                continue
            folded = names - keep
            if any(not isinstance(variables.get(v), int) or isinstance(variables.get(v), bool) for v in folded):
                exposed = [v for v in exposed if v not in names]
                changed = True
                break
    return exposed


def _model_exprs(g: nx.DiGraph, inner: frozenset[str]) -> list[object]:
    found = []
    for graph in (g, ir.info(g).dormant.graph):
        for _, data in ir.nodes(graph):
            if data.instance == "" and data.exprs:
                found.extend(data.exprs.values())
    for root in ir.roots(g):
        for b in ir.walk(root):
            if b.kind == "use" and b.path not in inner:
                found.extend(a.expr for a in b.args if a.expr is not None)
    return found


__all__ = ["expose"]
