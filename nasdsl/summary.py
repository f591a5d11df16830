"""The summary: one row per top-level model entry, like the paper's Table 1.

:func:`summarize` returns plain data (the JSON contract); :func:`render`
formats it as a text table, Markdown or JSON.

JSON contract::

    {"name": str, "input": [C, H, W],
     "rows": [{"name", "kind", "window", "output", "depth", "args": {param: value}, "params", "macs"}, ...],
     "totals": {"params", "macs", "depth"}}

``window`` is the kernel and stride of the entry's one windowed op
(``"7x7/2"``; ``""`` when it has none or several); ``kind`` is the op or
template name (``concat`` or ``add`` for a merge of branches, ``sequence`` for a mapping of named blocks, ``ref`` for a
reference); ``args`` keeps the template's parameter
order (for an op, the attributes the spec wrote); totals cover the inference
graph, or the training graph with its auxiliary heads when ``with_aux``.
"""

from __future__ import annotations

import json

import networkx as nx

from nasdsl import ir
from nasdsl.ops import OPS


def _plain(v: object) -> object:
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    return v


def depth(g: nx.DiGraph, nodes: list[str], rank: dict[str, int] | None = None) -> int:
    """Layers with parameters on the longest path through ``nodes`` (the paper's depth).

    ``rank`` is each node's position in a topological order of ``g`` (computed when not given)."""
    rank = rank if rank is not None else {n: i for i, n in enumerate(ir.order(g))}
    inside = set(nodes)
    best: dict[str, int] = {}
    pred = g.pred
    for n in sorted(nodes, key=rank.__getitem__):
        before = max((best[p] for p in pred[n] if p in inside), default=0)
        best[n] = before + (1 if OPS[ir.node(g, n).op].layer else 0)
    return max(best.values(), default=0)


def _simple(v: object) -> object:
    if isinstance(v, tuple) and v and all(x == v[0] for x in v):
        return v[0]
    return _plain(v)


def _window(g: nx.DiGraph, nodes: list[str]) -> str:
    windowed = [n for n in nodes if "kernel" in ir.node(g, n).attrs]
    if len(windowed) != 1:
        return ""
    attrs = ir.node(g, windowed[0]).attrs
    k, s = attrs["kernel"], attrs["stride"]
    kernel = "x".join(map(str, k))
    stride = str(s[0]) if len(set(s)) == 1 else "x".join(map(str, s))
    return f"{kernel}/{stride}"


class Counts:
    """Parameters and multiply-adds of every node, and a topological rank, computed once."""

    def __init__(self, g: nx.DiGraph):
        self.params: dict[str, int] = {}
        self.macs: dict[str, int] = {}
        self.rank: dict[str, int] = {}
        for i, n in enumerate(ir.order(g)):
            self.rank[n] = i
            data = ir.node(g, n)
            if data.op == "input":
                continue
            op = OPS[data.op]
            types = ir.input_types(g, n)
            self.params[n] = op.params(types, data.attrs) if op.has_weights else 0
            self.macs[n] = op.macs(types, data.attrs, data.type)

    def totals(self, g: nx.DiGraph, nodes: list[str]) -> dict:
        return {
            "params": sum(self.params[n] for n in nodes),
            "macs": sum(self.macs[n] for n in nodes),
            "depth": depth(g, nodes, self.rank),
        }


def totals(g: nx.DiGraph, *, with_aux: bool = False, counts: Counts | None = None) -> dict:
    """The summary's totals alone (parameters, multiply-adds, depth), without its rows."""
    counts = counts or Counts(g)
    counted = [n for n, d in ir.nodes(g) if d.op != "input" and (with_aux or d.phase != "train")]
    return counts.totals(g, counted)


def _row(g: nx.DiGraph, tree: ir.Block, nodes: list[str], counts: Counts) -> dict:
    if tree.kind == "use":
        kind, args = tree.template, {a.name: _plain(a.value) for a in tree.args}
    elif tree.kind == "op":
        data = ir.node(g, tree.output)
        kind = data.op
        args = {k: _simple(data.attrs[k]) for k in data.given}
    elif tree.kind == "merge":
        kind, args = tree.op, {}
    elif tree.kind == "seq":
        kind, args = "sequence", {}
    else:
        kind, args = tree.kind, {}
    return {
        "name": tree.name,
        "kind": kind,
        "window": _window(g, nodes),
        "output": list(ir.node(g, tree.output).shape),
        "depth": depth(g, nodes, counts.rank),
        "args": args,
        "params": sum(counts.params[n] for n in nodes),
        "macs": sum(counts.macs[n] for n in nodes),
    }


def summarize(g: nx.DiGraph, *, with_aux: bool = False) -> dict:
    """The summary of a shaped graph (see the module docstring)."""
    counts = Counts(g)
    model = ir.info(g).model
    heads = [o.head for o in ir.info(g).outputs if o.head is not None]
    members: dict[str, list[str]] = {}
    for node, data in ir.nodes(g):
        if data.op == "input":
            continue
        top = node.split(".")[0]
        members.setdefault(top, []).append(node)
    rows = []
    for child in model.children:
        if child.kind == "skip" or child.dormant:
            continue  # switched off by `when`
        rows.append(_row(g, child, members.get(child.name, []), counts))
    if with_aux:
        for head in heads:
            rows.append(_row(g, head, members.get(head.name, []), counts))
    return {
        "name": ir.info(g).name,
        "input": list(ir.node(g, ir.info(g).input).shape),
        "rows": rows,
        "totals": totals(g, with_aux=with_aux, counts=counts),
    }


def _shape(s: list[int]) -> str:
    return "x".join(str(d) for d in s)


def _args(a: dict) -> str:
    return " ".join(f"{k}={json.dumps(v, separators=(',', ':'))}" for k, v in a.items())


def render(summary: dict, fmt: str = "table") -> str:
    if fmt == "json":
        return json.dumps(summary, indent=2) + "\n"
    head = ["name", "kind", "window", "output", "depth", "params", "MACs", "args"]
    body = [
        [
            r["name"],
            r["kind"],
            r["window"],
            _shape(r["output"]),
            str(r["depth"] or ""),
            f"{r['params']:,}",
            f"{r['macs']:,}",
            _args(r["args"]),
        ]
        for r in summary["rows"]
    ]
    t = summary["totals"]
    total = ["total", "", "", "", str(t["depth"]), f"{t['params']:,}", f"{t['macs']:,}", ""]
    title = f"{summary['name']}: input {_shape(summary['input'])}"
    footer = list(summary.get("footer", ()))  # an ensemble's members, crops and cost per image
    if fmt == "markdown":
        lines = [f"**{title}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in [*body, total]]
        lines += ["", *(f"- {x}" for x in footer)] if footer else []
        return "\n".join(lines) + "\n"
    right = {4, 5, 6}
    widths = [max(len(row[i]) for row in [head, *body, total]) for i in range(len(head))]

    def line(row: list[str]) -> str:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([title, line(head), rule, *map(line, body), rule, line(total), *footer]) + "\n"
