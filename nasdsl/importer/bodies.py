"""Each scope of the flat graph as the body of a spec block: entries, their order and reads.

A scope's children (its own nodes and its child scopes, each reading one value and making
one) become :class:`Item` entries. They are put in an order that runs every entry after what
it reads and keeps the entries that hold tensors in the source's registration order, so that
the generated model's ``state_dict`` lists its keys as the source's does. An entry that does
not read the entry before it reads ``in`` or an earlier entry by name (``from:``); a merge
reads its inputs by reference. The body then takes the first form that fits:

* a **list** (an ``nn.Sequential``): numbered entries, each reading the one before;
* a **named merge** (GoogLeNet's Inception): branches that all read the input, joined by the
  merge that ends the body (``concat: {branch1: ..., branch2: ...}``);
* a **named sequence** otherwise.
"""

from __future__ import annotations

import keyword
from dataclasses import dataclass, field

from nasdsl.importer.flat import CONTAINER, FlatModel, ImportFailure, Node, Scope
from nasdsl.importer.rewrite import interface
from nasdsl.ops import OPS
from nasdsl.spec import BLOCK_KEYS, COMMON_KEYS, INPUT_REF

#: ops that join several inputs (written as a merge of references): those the op registry marks so
MERGES = tuple(name for name, spec in OPS.items() if spec.merge)
#: names a child of a named sequence cannot have: nasdsl/spec.py's block and common keys (in any
#: case: the parser refuses ``Add`` or ``Op`` as a lookalike of the key) and the input's ``in``
KEYS = frozenset({*BLOCK_KEYS, *COMMON_KEYS})
RESERVED = frozenset({*KEYS, INPUT_REF})
PREV, IN = None, "in"
#: in a body written inline in the model, what it reads from the model is its path after this
#: mark (the model's input: ``in``), until :func:`_from_the_model` writes every read as a path
OUTSIDE = "\0"


@dataclass
class Item:
    """One entry of a body, as the spec will write it."""

    name: str
    #: ``op``, ``use`` (a template use), ``list``, ``seq`` (named), ``merge``
    kind: str
    op: str = ""
    attrs: dict = field(default_factory=dict)
    #: ``use``: the child scope's path (its template and arguments are decided later)
    scope: str = ""
    #: ``list``, ``seq``, ``merge`` with branches: the children
    children: list[Item] = field(default_factory=list)
    #: what the entry reads: None for the entry before it, ``in``, or an earlier entry's name
    source: str | None = PREV
    #: a merge of references: what each branch reads (``in`` or an entry's name)
    refs: list[str] = field(default_factory=list)
    phase: str = "both"
    #: the node ids the entry's own op is (``op`` entries; merges of references)
    node: str = ""
    #: a template's switch: the parameter whose value says whether the entry is built
    when: str | None = None
    #: a note on the entry (what an ``opaque`` op stands for)
    doc: str = ""

    @property
    def named(self) -> bool:
        return any(not c.name.isdigit() for c in self.children)


@dataclass
class _Unit:
    name: str
    node: Node | None
    scope: str
    inputs: list[str]
    output: str
    holds: bool
    order: int
    phase: str


def valid_name(name: str) -> bool:
    return (
        name.isidentifier()
        and name.isascii()
        and not keyword.iskeyword(name)
        and not name.startswith("__")
        and len(name) <= 64
        and name not in RESERVED
        and name.lower() not in KEYS
    )


class BodyBuilder:
    """Builds the body of every scope (children first) of one FlatModel."""

    def __init__(self, model: FlatModel) -> None:
        self.model = model
        self.children: dict[str, list[str]] = {p: [] for p in model.scopes}
        for path in model.scopes:
            if path:
                self.children[_parent(path)].append(path)
        self.own: dict[str, list[Node]] = {p: [] for p in model.scopes}
        for n in model.nodes.values():
            self.own[n.scope].append(n)
        self.members: dict[str, set[str]] = {p: set() for p in model.scopes}
        for n in model.nodes.values():
            s = n.scope
            while True:
                self.members[s].add(n.id)
                if not s:
                    break
                s = _parent(s)
        self.first: dict[str, int] = {}
        self.phase: dict[str, str] = {}
        for path, ids in self.members.items():
            nodes = [model.nodes[i] for i in ids]
            self.first[path] = min((n.order for n in nodes), default=0)
            self.phase[path] = "train" if nodes and all(n.phase == "train" for n in nodes) else "both"
        self.interfaces: dict[str, tuple[list[str], list[str]]] = {}
        #: a note for the report when a body cannot keep the registration order
        self.notes: list[str] = []
        #: scope path -> its entries holding tensors in registration order, where they cannot run in it
        self.build_orders: dict[str, list[str]] = {}
        #: a model entry's values read outside it besides its output (FCN's backbone.layer3, read
        #: by the auxiliary head), each -> the path of the entry inside it that makes it (an entry
        #: inside lists of the model's too)
        self.exposed: dict[str, dict[str, str]] = {}
        #: model entries whose forward reads several values from outside (LR-ASPP's head reads the
        #: backbone's output and its row 4), written inline, reading by paths from the model
        self.open: set[str] = set()

    def live(self, path: str) -> bool:
        return bool(self.members.get(path))

    def interface(self, path: str) -> tuple[list[str], list[str]]:
        if path not in self.interfaces:
            self.interfaces[path] = interface(self.model, path)
        return self.interfaces[path]

    def fail(self, scope: Scope, message: str) -> ImportFailure:
        label = f"module {scope.path} ({scope.cls})" if scope.path else f"the model ({scope.cls})"
        return ImportFailure(f"{label}: {message}", path=scope.path or None, where=self.model.source)

    def scope_io(self, scope: Scope) -> tuple[str, str]:
        """The one value a scope reads and the one it makes (a model entry's output: the one
        made last, the others :attr:`exposed`)."""
        inputs, outputs = self.interface(scope.path)
        model_input = self.model.input.id
        if (
            len(inputs) > 1
            and self.in_model(scope.path)
            and all(v == model_input or self.model_path(v) for v in inputs)
        ):
            self.open.add(scope.path)
        elif len(inputs) != 1:
            shown = ", ".join(inputs[:4])
            raise self.fail(
                scope, f"its forward reads {len(inputs)} tensors from outside it ({shown}): a spec block reads one"
            )
        if len(outputs) > 1 and self.in_model(scope.path) and scope.path not in self.exposed:
            last = max(outputs, key=lambda v: self.model.nodes[v].order)
            inner = {v: self.inner_entry(scope.path, v) for v in outputs if v != last}
            if all(inner.values()):
                self.exposed[scope.path] = inner
        if scope.path in self.exposed:
            return inputs[0], next(v for v in outputs if v not in self.exposed[scope.path])
        if len(outputs) != 1:
            shown = ", ".join(outputs[:4])
            raise self.fail(
                scope, f"{len(outputs)} of its tensors are read outside it ({shown}): a spec block makes one"
            )
        return inputs[0], outputs[0]

    def in_model(self, path: str) -> bool:
        """Whether a scope is a model entry, or inside lists and containers that are."""
        parent = _parent(path)
        while parent:
            if self.model.scopes[parent].kind != CONTAINER:
                return False
            parent = _parent(parent)
        return True

    def model_path(self, value: str) -> str:
        """The path from the model of the entry whose output ``value`` is (``backbone``,
        ``backbone.4``, a layer's own path), or ``""`` (the model's input, or none)."""
        node = self.model.nodes.get(value)
        if node is None:
            return ""
        parts = node.id.split(".")
        for k in range(1, len(parts)):
            prefix = ".".join(parts[:k])
            if prefix in self.model.scopes and self.interface(prefix)[1][-1:] == [value]:
                outputs = self.interface(prefix)[1]
                if len(outputs) == 1 or prefix in self.exposed:
                    return prefix
            if prefix in self.exposed and value in self.exposed[prefix]:
                return self.exposed[prefix][value]
        return node.id if valid_name(node.name) else ""

    def inner_entry(self, path: str, value: str) -> str:
        """The outermost entry inside ``path`` whose one output is ``value`` (what a ``from:``
        names): a scope, or the layer that makes it; ``""`` for none."""
        node = self.model.nodes[value]
        parts = node.scope.split(".")
        for k in range(path.count(".") + 2, len(parts) + 1):
            inner = ".".join(parts[:k])
            if self.interface(inner)[1] == [value]:
                return inner
        return node.id if node.id == f"{node.scope}.{node.name}" and valid_name(node.name) else ""

    def units(self, scope: Scope) -> list[_Unit]:
        out = []
        for n in self.own[scope.path]:
            out.append(_Unit(n.name, n, "", list(n.inputs), n.id, n.holds and "" not in n.tensors, n.order, n.phase))
        for child in self.children[scope.path]:
            if not self.live(child):
                continue
            cin, cout = self.scope_io(self.model.scopes[child])
            reads = self.interface(child)[0] if child in self.open else [cin]
            holds = any(self.model.nodes[i].holds for i in self.members[child])
            out.append(
                _Unit(child.rsplit(".", 1)[-1], None, child, reads, cout, holds, self.first[child], self.phase[child])
            )
        return out

    def ordered(self, scope: Scope, units: list[_Unit], scope_input: str) -> list[_Unit]:
        """Every unit after what it reads; the units holding tensors in registration order."""
        reg = {name: k for k, name in enumerate(scope.registration)}
        holding = sorted((u for u in units if u.holds), key=lambda u: (reg.get(u.name, len(reg)), u.order))
        registered = [u.name for u in holding]
        made = {u.output: u for u in units}
        made.update({v: u for u in units for v in self.exposed.get(u.scope, {})})
        done: set[str] = set()
        result: list[_Unit] = []
        pending = sorted(units, key=lambda u: u.order)
        next_holding = 0
        while pending:

            def ready(u: _Unit) -> bool:
                return all(v == scope_input or v not in made or made[v].name in done for v in u.inputs)

            eligible = [
                u
                for u in pending
                if ready(u) and (not u.holds or (next_holding < len(holding) and holding[next_holding] is u))
            ]
            if not eligible:
                eligible = [u for u in pending if ready(u)]
                if not eligible:  # pragma: no cover - the traced graph has no cycles
                    raise self.fail(scope, "its children read each other in a cycle")
                self.build_orders[scope.path] = registered
            u = eligible[0]
            pending.remove(u)
            done.add(u.name)
            result.append(u)
            if u.holds and next_holding < len(holding) and holding[next_holding] is u:
                next_holding += 1
            elif u.holds:
                holding.remove(u)
        return result

    def body(self, scope: Scope, item_of) -> tuple[Item, str, str]:
        """The scope's body as one Item (a list, a named merge or a named sequence), with
        the scope's input and output values. ``item_of(unit_scope)`` gives the Item of a
        child scope (a template use, or an inline body)."""
        if scope.path:
            scope_input, scope_output = self.scope_io(scope)
        else:
            scope_input, scope_output = self.model.input.id, ""
        units = self.ordered(scope, self.units(scope), scope_input)
        if not units:
            raise self.fail(scope, "it computes nothing")
        producer = {u.output: u for u in units}
        nested = {v: inner for u in units for v, inner in self.exposed.get(u.scope, {}).items()}

        def source(value: str) -> str:
            if value == scope_input:
                return IN
            if value in producer:
                return producer[value].name
            if value in nested:
                return nested[value]
            if scope.path in self.open and value == self.model.input.id:
                return OUTSIDE + IN
            if scope.path in self.open and self.model_path(value):
                return OUTSIDE + self.model_path(value)
            raise self.fail(scope, f"reads {value}, which no entry of its body makes as its output")

        items: list[Item] = []
        for k, u in enumerate(units):
            if u.node is not None and u.node.op in MERGES:
                item = Item(
                    u.name,
                    "merge",
                    op=u.node.op,
                    attrs=dict(u.node.attrs),
                    refs=[source(v) for v in u.inputs],
                    node=u.node.id,
                )
            elif u.node is not None:
                item = Item(u.name, "op", op=u.node.op, attrs=dict(u.node.attrs), node=u.node.id, doc=u.node.doc)
            else:
                item = item_of(u.scope)
            if item.kind != "merge" or item.children:
                s = source(u.inputs[0])
                item.source = PREV if k and s == units[k - 1].name else (s if k or s != IN else PREV)
            # inside a block that runs only in training, the block says so, not its entries
            item.phase = u.phase if not scope.path or self.phase[scope.path] == "both" else "both"
            items.append(item)
        if scope.path and units[-1].output != scope_output:
            raise self.fail(scope, "its output is not made last: a spec block ends with its output")
        body = self.form(scope, items, units)
        if scope.path in self.open or scope.path in self.exposed:
            entry = IN if scope_input == self.model.input.id else self.model_path(scope_input)
            if not entry:
                raise self.fail(
                    scope, f"it is written inline and reads {scope_input}, which no entry of the model makes"
                )
            _from_the_model(body, scope.path, entry)
        return body, scope_input, scope_output

    def form(self, scope: Scope, items: list[Item], units: list[_Unit]) -> Item:
        name = scope.name if scope.path else ""
        # a numbered module whose forward adds layers without tensors (DeepLab's ASPPPooling
        # resizes after its numbered layers): those take the next numbers
        numbered = any(i.name.isdigit() and u.holds for i, u in zip(items, units, strict=True))
        digits = all(
            i.name.isdigit() or (numbered and i.kind in ("op", "merge") and not i.children and not u.holds)
            for i, u in zip(items, units, strict=True)
        )
        chain = all(i.kind != "merge" or i.children for i in items) and all(i.source is PREV for i in items)
        positions = (
            all(int(i.name) == k for k, (i, u) in enumerate(zip(items, units, strict=True)) if u.holds)
            if digits
            else False
        )
        renumbered = all(i.name == str(k) or i.kind in ("op", "merge") for k, i in enumerate(items))
        if scope.path and digits and chain and positions and renumbered:
            for k, item in enumerate(items):
                if item.name != str(k):  # a layer without tensors takes its place in the list
                    item.name = str(k)
                    self.model.nodes[item.node].name = item.name
            return Item(name, "list", children=items)
        merge = items[-1]
        branches = items[:-1]
        if (
            scope.path
            and merge.kind == "merge"
            and not merge.children
            and len(branches) >= 2
            and merge.refs == [b.name for b in branches]
            and all(b.source in (PREV, IN) and (k == 0 or b.source == IN) for k, b in enumerate(branches))
            and all(b.kind != "merge" for b in branches)
            and all(b.phase == "both" for b in branches)
            and (all(valid_name(b.name) for b in branches) or all(b.name == str(k) for k, b in enumerate(branches)))
        ):
            for b in branches:
                b.source = PREV
            node = self.model.nodes[merge.node]
            node.scope, node.name = scope.parent, scope.name  # a named merge's node is the block itself
            return Item(name, "merge", op=merge.op, attrs=merge.attrs, children=branches, node=merge.node)
        run = all(u.node is None for u in units) and all(i.source is PREV for i in items)
        for item, unit in zip(items, units, strict=True):
            if not valid_name(item.name):
                lookalike = item.name.lower() in KEYS  # Add, Op: the parser refuses them as keys in other case
                if run and not lookalike and all(c.isalnum() or c in "_-" for c in item.name):
                    continue  # a run of blocks named block1-0, block1-1: a repeat's name pattern
                if unit.holds and not scope.path and item.name.isdigit():
                    raise self.fail(
                        scope,
                        "its layers are numbered (an nn.Sequential): a spec's model entries are names, so the "
                        f"state_dict keys ('{item.name}.weight') cannot be kept; wrap it in a module "
                        "(self.layers = nn.Sequential(...)) and import that",
                    )
                why = (
                    f"the key '{item.name.lower()}' in other case, which the spec's parser refuses as a name"
                    if lookalike
                    else "the spec's names are identifiers"
                )
                if unit.holds:
                    raise self.fail(
                        scope,
                        f"its child '{item.name}' holds weights and its name cannot name an entry of a named sequence "
                        f"({why})",
                    )
                if item.kind not in ("op", "merge") or item.children:
                    raise self.fail(scope, f"its child '{item.name}' cannot name an entry of a named sequence ({why})")
                self._rename(items, item)
                self.model.nodes[item.node].name = item.name
        return Item(name, "seq", children=items)

    def _rename(self, items: list[Item], item: Item) -> None:
        taken = {i.name for i in items}
        base = f"{item.op or item.kind}" if valid_name(item.op or item.kind) else "step"
        new = (
            base if base not in taken else next(f"{base}_{k}" for k in range(1, 1 << 20) if f"{base}_{k}" not in taken)
        )
        old = item.name
        item.name = new
        for i in items:
            if i.source == old:
                i.source = new
            i.refs = [new if r == old else r for r in i.refs]


def _from_the_model(body: Item, path: str, entry: str) -> None:
    """An inline body in the model reads by paths from the model: its entries' names under
    ``path``, its input by ``entry``, the entry that makes it (``in``: the model's input); the
    first entry reads it as the value before."""

    def absolute(name: str) -> str:
        if name == IN:
            return entry
        if name.startswith(OUTSIDE):
            return name[len(OUTSIDE) :]
        return name if "." in name else f"{path}.{name}"

    for k, item in enumerate(body.children):
        if item.source is not PREV:
            item.source = PREV if k == 0 and item.source == IN else absolute(item.source)
        item.refs = [absolute(r) for r in item.refs]


def _parent(path: str) -> str:
    return path.rsplit(".", 1)[0] if "." in path else ""
