"""Blocks found in a flat graph by its structure alone: a module tree for a graph without one.

An ONNX file without names or metadata that say which module made a node (PyTorch's dynamo
exporter with its metadata stripped, a hand-made or converted graph) arrives as a flat list
of ops. This module gives it a module tree whose repeated parts become templates:

1. **Regions.** In execution order, a *cut* is a node after which nothing computed so far is
   read later except its own output: every path from the input to what follows passes
   through it. The nodes between two cuts are a single-entry single-exit region (a residual
   block, an Inception module: their branches and the merge); a region of one node is one
   layer of a chain.
2. **Canonical forms.** A region's form is its ops and how they read each other (by position
   in the region, the entry as ``-1``), the settings left out: two regions of one form differ
   at most in widths, strides, kernels and the like, which become a template's parameters.
3. **Grams.** A region of several nodes whose form occurs twice or more is a template. The
   layers between them (regions of one node) make a sequence of forms; the run of ``k``
   consecutive layers whose non-overlapping repetitions save the most (``(k - 1) * count -
   k``, at least ``k``; the longer run on a tie, then the earlier) becomes one symbol, again
   and again (MobileNetV2's ``conv, relu6, conv, relu6, conv`` without a shortcut, VGG's
   ``conv, relu``). Runs of blocks are left to ``repeat``: a gram of blocks would be a
   stage, whose uses differ in every width.
4. **Names.** Templates are ``Block1``, ``Block2`` ... in the order of their first use; a
   template's uses in the model are ``block1_0``, ``block1_1`` ... and consecutive uses of one
   template are one numbered list (``block2_0: [...]``), which the writer turns into a
   ``repeat``; other nodes are named by their op (``conv2d``, ``conv2d_1``), in the model
   and in each block.

The result is only a naming of the same nodes: the spec is checked against the flat graph
node by node as any import is (:mod:`nasdsl.importer.check`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from nasdsl.importer.flat import FlatModel, Node, Output

#: the longest run of regions tried as one gram
MAX_GRAM = 12
#: a function-like op's name in a block (a merge's own name is a spec keyword)
_WORDS = {"concat": "cat", "add": "residual", "mul": "scale"}


@dataclass(frozen=True)
class _Region:
    """Nodes between two cuts (or after the last cut, ``closed`` False)."""

    nodes: tuple[str, ...]
    form: tuple
    closed: bool


def blocks(model: FlatModel) -> dict[str, str]:
    """Re-path ``model``'s nodes into the blocks found; returns scope path -> class name for
    the scopes that are template uses (empty when nothing repeats)."""
    regions = _regions(model)
    symbols: list[object] = [r.form if r.closed else ("open", k) for k, r in enumerate(regions)]
    grams: dict[object, tuple] = {}
    _compact(symbols, grams)
    counts = _counts(symbols, grams)
    templates: dict[object, int] = {}

    def templated(symbol: object) -> bool:
        if symbol in grams:
            return True
        return isinstance(symbol, tuple) and symbol and symbol[0] == "region" and counts[symbol] >= 2

    def number(symbol: object) -> None:
        if templated(symbol) and symbol not in templates:
            templates[symbol] = len(templates) + 1
        for child in grams.get(symbol, ()):
            number(child)

    for s in symbols:
        number(s)
    if not templates:
        return {}
    queue = list(regions)
    rename: dict[str, str] = {}
    classes: dict[str, str] = {}
    groups: Counter = Counter()

    def place(symbol: object, scope: str, words: Counter) -> None:
        """Give the nodes of ``symbol``'s next regions their paths under ``scope``."""
        if symbol in grams:
            for child in grams[symbol]:
                if templated(child):
                    inner = _fresh(words, f"block{templates[child]}")
                    path = f"{scope}.{inner}" if scope else inner
                    classes[path] = f"Block{templates[child]}"
                    place(child, path, Counter())
                else:
                    place(child, scope, words)
            return
        region = queue.pop(0)
        for node_id in region.nodes:
            word = _word(model.nodes[node_id].op)
            local = _fresh(words, word)
            rename[node_id] = f"{scope}.{local}" if scope else local

    top: Counter = Counter()
    k = 0
    while k < len(symbols):
        s = symbols[k]
        if not templated(s):
            place(s, "", top)
            k += 1
            continue
        end = k + 1
        while end < len(symbols) and symbols[end] == s:
            end += 1
        j = templates[s]
        name = f"block{j}_{groups[j]}"
        groups[j] += 1
        if end - k == 1:
            classes[name] = f"Block{j}"
            place(s, name, Counter())
        else:
            for i in range(end - k):
                classes[f"{name}.{i}"] = f"Block{j}"
                place(s, f"{name}.{i}", Counter())
        k = end
    _apply(model, rename)
    return classes


def _fresh(words: Counter, word: str) -> str:
    k = words[word]
    words[word] += 1
    return word if k == 0 else f"{word}_{k}"


def _word(op: str) -> str:
    return _WORDS.get(op, op)


def _regions(model: FlatModel) -> list[_Region]:
    order = list(model.nodes)
    pos = {node_id: k for k, node_id in enumerate(order)}
    pos[model.input.id] = -1
    end = len(order)
    last = {node_id: pos[node_id] for node_id in [model.input.id, *order]}
    for node_id in order:
        for i in model.nodes[node_id].inputs:
            last[i] = max(last[i], pos[node_id])
    for out in model.outputs:
        last[out.node] = end
    dying: dict[int, int] = Counter(v for node_id, v in last.items() if v > pos[node_id])
    live = 1 if last[model.input.id] > -1 else 0
    regions: list[_Region] = []
    start = 0
    for k, node_id in enumerate(order):
        if last[node_id] > k:
            live += 1
        live -= dying.get(k, 0)
        if live == 1 and last[node_id] > k:
            regions.append(_region(model, order[start : k + 1], pos, True))
            start = k + 1
    if start < len(order):
        regions.append(_region(model, order[start:], pos, False))
    merged: list[_Region] = []
    for r in regions:
        if merged and len(merged[-1].nodes) > 1 and merged[-1].closed and r.closed and _activation(model, r):
            merged[-1] = _region(model, [*merged[-1].nodes, *r.nodes], pos, True)
        else:
            merged.append(r)
    return merged


def _activation(model: FlatModel, region: _Region) -> bool:
    """Whether a region is one activation (an elementwise op of the registry: a ReLU after a
    residual's sum): it belongs to the block before it."""
    from nasdsl.ops import OPS

    return len(region.nodes) == 1 and OPS[model.nodes[region.nodes[0]].op].elementwise


def _region(model: FlatModel, nodes: list[str], pos: dict[str, int], closed: bool) -> _Region:
    first = pos[nodes[0]]
    if len(nodes) == 1:
        node = model.nodes[nodes[0]]
        return _Region(tuple(nodes), ("op", node.op, len(node.shape)), closed)
    form = tuple(
        (model.nodes[n].op, tuple(pos[i] - first if pos[i] >= first else -1 for i in model.nodes[n].inputs))
        for n in nodes
    )
    return _Region(tuple(nodes), ("region", *form), closed)


def _compact(symbols: list[object], grams: dict[object, tuple]) -> None:
    """Replace the most saving run of symbols by one new symbol while one saves anything."""
    while True:
        best = None
        for k in range(2, min(MAX_GRAM, len(symbols)) + 1):
            seen: dict[tuple, list[int]] = {}
            for start in range(len(symbols) - k + 1):
                gram = tuple(symbols[start : start + k])
                if not all(isinstance(s, tuple) and s[0] in ("op", "gram") for s in gram):
                    continue
                hits = seen.setdefault(gram, [])
                if not hits or hits[-1] + k <= start:
                    hits.append(start)
            for gram, hits in seen.items():
                saving = (k - 1) * len(hits) - k
                if len(hits) >= 2 and saving >= k:
                    key = (saving, k, -hits[0])
                    if best is None or key > best[0]:
                        best = (key, gram, hits)
        if best is None:
            return
        _, gram, hits = best
        symbol = ("gram", len(grams))
        grams[symbol] = gram
        k = len(gram)
        for start in reversed(hits):
            symbols[start : start + k] = [symbol]


def _counts(symbols: list[object], grams: dict[object, tuple]) -> Counter:
    counts: Counter = Counter()

    def visit(s: object) -> None:
        counts[s] += 1
        for child in grams.get(s, ()):
            visit(child)

    for s in symbols:
        visit(s)
    return counts


def _apply(model: FlatModel, rename: dict[str, str]) -> None:
    nodes: dict[str, Node] = {}
    for old, node in model.nodes.items():
        new = rename.get(old, old)
        scope, _, local = new.rpartition(".")
        node.id, node.scope, node.name = new, scope, local
        node.inputs = [rename.get(i, i) for i in node.inputs]
        nodes[new] = node
    model.nodes = nodes
    model.outputs = [Output(o.name, rename.get(o.node, o.node), o.training_only) for o in model.outputs]
