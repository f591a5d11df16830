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
   stage, whose uses differ in every width; but blocks of several forms that occur only
   together, each only at its place in the run (a transformer layer's attention half and MLP
   half, each with its residual sum, which a cut separates), are first made one block whose
   parts are written inline (:func:`_bind`).
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
#: ops that belong to the block before them, besides the activations (ShuffleNet's shuffle)
_TRAILING = frozenset({"channel_shuffle"})


@dataclass
class _Unit:
    """A region: its nodes in execution order, its form, and the regions it is made of (None
    for one node, or a region with no inner cut)."""

    nodes: list[str]
    form: tuple
    inner: list[_Unit] | None = None


def blocks(model: FlatModel) -> dict[str, str]:
    """Re-path ``model``'s nodes into the blocks found; returns scope path -> class name for
    the scopes that are template uses (empty when nothing repeats)."""
    pos = {node_id: k for k, node_id in enumerate(model.nodes)}
    pos[model.input.id] = -1
    top = _split(model, list(model.nodes), model.input.id, pos, top=True)
    # the sequences: the model's, and the inside of each form of region once
    sequences: list[list[object]] = [[u.form for u in top]]
    inside: dict[tuple, int] = {}
    counts: Counter = Counter()

    def visit(unit: _Unit) -> None:
        counts[unit.form] += 1
        if unit.inner is None:
            return
        if unit.form not in inside:
            inside[unit.form] = len(sequences)
            sequences.append([u.form for u in unit.inner])
        for u in unit.inner:
            visit(u)

    for u in top:
        visit(u)
    grams: dict[object, tuple] = {}
    parts = _compact(sequences, grams)

    def templated(symbol: object) -> bool:
        return symbol in grams or (symbol[0] == "region" and counts[symbol] >= 2 and symbol not in parts)

    templates: dict[object, int] = {}

    def number(symbols: list[object]) -> None:
        for symbol in symbols:
            if templated(symbol) and symbol not in templates:
                templates[symbol] = len(templates) + 1
            if symbol in grams:
                number(list(grams[symbol]))
            elif symbol in inside:
                number(sequences[inside[symbol]])

    number(sequences[0])
    if not templates:
        return {}
    rename: dict[str, str] = {}
    classes: dict[str, str] = {}
    groups: Counter = Counter()

    def place(symbol: object, queue: list[_Unit], scope: str, words: Counter) -> None:
        """Give the nodes of the next units of ``queue`` (those ``symbol`` stands for) their
        paths under ``scope``."""
        if symbol in grams:
            for child in grams[symbol]:
                enter(child, queue, scope, words)
            return
        unit = queue.pop(0)
        if unit.inner is not None:
            inner = list(unit.inner)
            for child in sequences[inside[unit.form]]:
                enter(child, inner, scope, words)
            return
        for node_id in unit.nodes:
            local = _fresh(words, _word(model.nodes[node_id].op))
            rename[node_id] = f"{scope}.{local}" if scope else local

    def enter(symbol: object, queue: list[_Unit], scope: str, words: Counter) -> None:
        """``symbol`` inside a block: a template's use in a scope of its own, else inline."""
        if templated(symbol):
            j = templates[symbol]
            if scope:
                path = f"{scope}.{_fresh(words, f'block{j}')}"
            else:  # in the model, as the uses of the main loop are named
                path = f"block{j}_{groups[j]}"
                groups[j] += 1
            classes[path] = f"Block{j}"
            place(symbol, queue, path, Counter())
        else:
            place(symbol, queue, scope, words)

    queue = list(top)
    symbols = sequences[0]
    words: Counter = Counter()
    k = 0
    while k < len(symbols):
        s = symbols[k]
        if not templated(s):
            place(s, queue, "", words)
            k += 1
            continue
        end = k + 1
        while end < len(symbols) and symbols[end] == s:
            end += 1
        j = templates[s]
        name = f"block{j}_{groups[j]}"
        groups[j] += 1
        paths = [name] if end - k == 1 else [f"{name}.{i}" for i in range(end - k)]
        for path in paths:
            classes[path] = f"Block{j}"
            place(s, queue, path, Counter())
        k = end
    _apply(model, rename)
    return classes


def _fresh(words: Counter, word: str) -> str:
    k = words[word]
    words[word] += 1
    return word if k == 0 else f"{word}_{k}"


def _word(op: str) -> str:
    return _WORDS.get(op, op)


def _split(model: FlatModel, nodes: list[str], entry: str, pos: dict[str, int], top: bool = False) -> list[_Unit]:
    """``nodes`` (a region read from ``entry``, or the model) as the regions between its
    cuts: the nodes after which only the node's own value, of those made in ``nodes``, is read
    later (the model's outputs are read at the end). Inside a region, a region that reads
    something besides the value before it (the block's input, for a shortcut) is *open*: it
    stays inline, and so does a run it is part of. A region is read as a chain of regions only
    when it ends in one merge (a residual's sum, with its activation) whose other inputs are
    shortcuts (chains from the region's input, a projection): parallel branches are one
    region."""
    shortcut = [] if top else _shortcut(model, nodes, entry)
    rest = [n for n in nodes if n not in set(shortcut)]
    merged: list[list[str]] = []
    for span in _spans(model, rest):
        if merged and len(span) == 1 and _trailing(model, span[0]) and _block_end(model, merged[-1]):
            merged[-1] = [*merged[-1], *span]
        else:
            merged.append(span)
    if shortcut:
        merged.insert(len(merged) - 1, shortcut)
    if not top and len(merged) == 1:
        return [_Unit(nodes, _form(model, nodes, entry, pos))]
    units = []
    before = entry
    for span in merged:
        form = _form(model, span, before, pos)
        unit = _Unit(span, form)
        if len(span) > 1 and span is not shortcut:
            inner = _split(model, span, before, pos)
            if len(inner) > 1:
                unit.inner = inner
        units.append(unit)
        before = span[-1]
    if top:
        return units
    opened = {k for k, u in enumerate(units) if u.form[0] == "open"}
    allowed = {len(units) - 1, len(units) - 2} if shortcut else {len(units) - 1}
    merge_last = all(_trailing(model, n) for n in units[-1].nodes[1:])
    if opened and not (opened <= allowed and merge_last):
        # parallel branches (an Inception module): read whole, not as a chain cut at random
        return [_Unit(nodes, _form(model, nodes, entry, pos))]
    return units


def _spans(model: FlatModel, nodes: list[str]) -> list[list[str]]:
    own = set(nodes)
    local = {node_id: k for k, node_id in enumerate(nodes)}
    end = len(nodes)
    last = {node_id: k for k, node_id in enumerate(nodes)}
    for k, node_id in enumerate(nodes):
        for i in model.nodes[node_id].inputs:
            if i in own:
                last[i] = max(last[i], k)
    for node_id in nodes:
        if any(u not in own for u in _readers(model, node_id)):
            last[node_id] = end
    dying = Counter(v for node_id, v in last.items() if v > local[node_id])
    live = 0
    spans: list[list[str]] = []
    start = 0
    for k, node_id in enumerate(nodes):
        if last[node_id] > k:
            live += 1
        live -= dying.get(k, 0)
        if (live == 1 and last[node_id] > k) or k == end - 1:
            spans.append(nodes[start : k + 1])
            start = k + 1
    return spans


def _shortcut(model: FlatModel, nodes: list[str], entry: str) -> list[str]:
    """The nodes of a residual's projection: when the region ends in a sum of two (and
    activations) one of whose inputs is, the other not or longer, a chain of one-input nodes
    from the region's input, each read only by the next, that chain's nodes."""
    k = len(nodes) - 1
    while k > 0 and _trailing(model, nodes[k]):
        k -= 1
    merge = model.nodes[nodes[k]]
    if merge.op != "add" or len(merge.inputs) != 2:
        return []
    inside = set(nodes)
    chains: list[list[str] | None] = []
    for i in merge.inputs:
        chain: list[str] = []
        reader, cur = merge.id, i
        while cur != entry:
            node = model.nodes.get(cur)
            if cur not in inside or node is None or len(node.inputs) != 1 or _readers(model, cur) != [reader]:
                chain = None
                break
            chain.append(cur)
            reader, cur = cur, node.inputs[0]
        chains.append(chain)
    failed = [c for c in chains if c is None]
    if len(failed) > 1:
        return []
    ok = sorted((c for c in chains if c is not None), key=len)
    side = ok if failed else ok[:-1]
    return [n for n in nodes if any(n in c for c in side)]


def _block_end(model: FlatModel, span: list[str]) -> bool:
    """Whether an activation after ``span`` belongs to it: a region of several nodes, or a
    merge (a residual's sum)."""
    from nasdsl.ops import OPS

    return len(span) > 1 or bool(OPS[model.nodes[span[0]].op].merge)


def _readers(model: FlatModel, node_id: str) -> list[str]:
    if not hasattr(model, "_discover_readers"):
        users: dict[str, list[str]] = {}
        for n in model.nodes.values():
            for i in n.inputs:
                users.setdefault(i, []).append(n.id)
        outputs = {o.node for o in model.outputs}
        for o in outputs:
            users.setdefault(o, []).append("<output>")
        model._discover_readers = users  # type: ignore[attr-defined]
    return model._discover_readers.get(node_id, [])


def _trailing(model: FlatModel, node_id: str) -> bool:
    """Whether a node belongs to the block before it: an activation (an elementwise op of
    the registry: a ReLU after a residual's sum) or a channel shuffle."""
    from nasdsl.ops import OPS

    op = model.nodes[node_id].op
    return OPS[op].elementwise or op in _TRAILING


def _form(model: FlatModel, nodes: list[str], entry: str, pos: dict[str, int]) -> tuple:
    """A region's ops and how they read each other (the position in the region; ``-1`` the
    value before it, ``-2`` anything else outside it: an open region), settings left out but
    those that are words (a reshape's ``axes``, a mode) or orders of axes (:func:`_kind`):
    regions that differ in one are of different forms."""
    first = pos[nodes[0]]
    inside = set(nodes)
    reads = [
        tuple(pos[i] - first if i in inside else -1 if i == entry else -2 for i in model.nodes[n].inputs) for n in nodes
    ]
    opened = any(-2 in r for r in reads)
    if len(nodes) == 1:
        node = model.nodes[nodes[0]]
        return ("open" if opened else "op", _kind(node), len(node.shape), reads[0])
    return ("open" if opened else "region", *((_kind(model.nodes[n]), r) for n, r in zip(nodes, reads, strict=True)))


#: settings that say which axes go where, not how large anything is: part of a region's form
_AXES = {"permute": ("dims",), "transpose": ("axis0", "axis1")}


def _kind(node: Node) -> object:
    """A node's op, with its settings that are words or orders of axes (a partition's
    ``permute`` and the departition's are different layers, not one with parameters)."""
    fixed = [(k, v) for k, v in node.attrs.items() if isinstance(v, str) or k in _AXES.get(node.op, ())]
    fixed = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in fixed))
    return (node.op, fixed) if fixed else node.op


def _compact(sequences: list[list[object]], grams: dict[object, tuple]) -> set[object]:
    """Blocks that never occur apart are one block (:func:`_bind`); then replace the most
    saving run of symbols (over every sequence) by one new symbol while one saves at least its
    length; the run found most often first (then the one holding
    fewer blocks, then the longer). A run holds at most one block (a region of several
    nodes, or a run holding one), not at its start: a run of blocks is a stage, whose uses
    differ in every width, better left to ``repeat``, and a block with the layers after it
    is a block and the start of the next. Nor does a run end with a block that the same block
    follows: that one starts a run of blocks (a DenseNet transition stays apart from the next
    dense layer). Returns the blocks that became parts of one (written inline in it)."""
    heavy = {s for symbols in sequences for s in symbols if s[0] == "region"}
    parts = _bind(sequences, grams, heavy)
    while True:
        best = None
        for k in range(2, MAX_GRAM + 1):
            seen: dict[tuple, list[tuple[int, int]]] = {}
            for q, symbols in enumerate(sequences):
                for start in range(len(symbols) - k + 1):
                    gram = tuple(symbols[start : start + k])
                    if any(s[0] == "open" for s in gram) or gram[0] in heavy or sum(s in heavy for s in gram) > 1:
                        continue
                    if gram[-1] in heavy and symbols[start + k : start + k + 1] == [gram[-1]]:
                        continue  # the block starts a run of its own (DenseNet's layers)
                    hits = seen.setdefault(gram, [])
                    if not hits or hits[-1][0] != q or hits[-1][1] + k <= start:
                        hits.append((q, start))
            for gram, hits in seen.items():
                saving = (k - 1) * len(hits) - k
                if saving >= k:
                    key = (len(hits), -sum(s in heavy for s in gram), k, -hits[0][0], -hits[0][1])
                    if best is None or key > best[0]:
                        best = (key, gram, hits)
        if best is None:
            return parts
        _, gram, hits = best
        symbol = ("gram", len(grams))
        grams[symbol] = gram
        if any(s in heavy for s in gram):
            heavy.add(symbol)
        for q, start in reversed(hits):
            sequences[q][start : start + len(gram)] = [symbol]


def _bind(sequences: list[list[object]], grams: dict[object, tuple], heavy: set[object]) -> set[object]:
    """Runs of blocks of two forms or more that occur only together, each block of them only at
    its place in such a run, as one block: a transformer layer is two residual blocks (the
    attention and its sum, the MLP and its sum) that a cut separates, always one after the
    other, as the cuts would split a residual block of two sums. The shortest such run from each
    block's first use is taken (of two forms or more, and not a shorter run repeated: runs of
    DenseNet's dense layers stay runs), if it occurs twice or more; its blocks are its parts,
    written inline in it. Blocks that also occur apart (ResNet's with and without the
    projection) stay separate templates. Returns the parts."""
    parts: set[object] = set()
    while True:
        found = _bound_run(sequences, heavy)
        if found is None:
            return parts
        gram, hits = found
        symbol = ("gram", len(grams))
        grams[symbol] = gram
        parts |= {s for s in gram if s in heavy}
        heavy.add(symbol)
        for q, start in reversed(hits):
            sequences[q][start : start + len(gram)] = [symbol]


def _bound_run(sequences: list[list[object]], heavy: set[object]) -> tuple[tuple, list[tuple[int, int]]] | None:
    where: dict[object, list[tuple[int, int]]] = {}
    for q, symbols in enumerate(sequences):
        for k, s in enumerate(symbols):
            if s in heavy:
                where.setdefault(s, []).append((q, k))
    for q0, k0 in (places[0] for places in where.values()):
        symbols = sequences[q0]
        for k in range(2, min(MAX_GRAM, len(symbols) - k0) + 1):
            gram = tuple(symbols[k0 : k0 + k])
            if gram[-1][0] == "open":
                break
            members = {s for s in gram if s in heavy}
            if gram[-1] not in heavy or len(members) < 2 or _periodic(gram):
                continue
            hits = _occurrences(sequences, gram)
            if len(hits) < 2:
                break
            covered = {(q, start + j) for q, start in hits for j in range(k)}
            if all(place in covered for s in members for place in where[s]):
                return gram, hits
    return None


def _periodic(gram: tuple) -> bool:
    """Whether ``gram`` is a shorter run repeated."""
    k = len(gram)
    return any(k % p == 0 and gram == gram[:p] * (k // p) for p in range(1, k))


def _occurrences(sequences: list[list[object]], gram: tuple) -> list[tuple[int, int]]:
    """Where ``gram`` occurs, without overlaps, in every sequence."""
    k = len(gram)
    hits: list[tuple[int, int]] = []
    for q, symbols in enumerate(sequences):
        start = 0
        while start + k <= len(symbols):
            if tuple(symbols[start : start + k]) == gram:
                hits.append((q, start))
                start += k
            else:
                start += 1
    return hits


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
    if hasattr(model, "_discover_readers"):
        del model._discover_readers
