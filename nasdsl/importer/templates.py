"""Templates from the module classes: one per class (or per structure of a class), with the
parameters that tell its uses apart.

Classes are processed from the innermost out, so that a body's template uses are known when
its own class is. For one class:

1. each instance's body (:mod:`nasdsl.importer.bodies`) gets a *signature*: its structure
   with every setting left out (ops, names, reads, nested templates);
2. instances of one signature are one template; signatures that differ only in entries some
   instances lack (ResNet's ``downsample``, EfficientNet's residual) are unified into one
   template whose optional entries are switched by a boolean parameter (``when:``), when every
   read still resolves to what each instance reads (a reference to a switched-off entry reads
   that entry's input); otherwise they stay separate templates (``InvertedResidual_2``). An
   entry that is an ``identity`` in some instances and a layer in others counts as lacking
   where it is the identity (MaxViT's ``nn.Identity`` where a block has no projection);
3. the settings that differ between the uses are the template's parameters, named and
   expressed by :func:`nasdsl.importer.params.explain` from the constructor's arguments.

A class whose bodies are only a run of one template's uses (torchvision's ``_DenseBlock``,
RegNet's ``AnyStage``) is written inline, as a ``repeat``, instead of as a template.
"""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass, field

from nasdsl.importer.bodies import IN, PREV, BodyBuilder, Item
from nasdsl.importer.flat import CLASS, CONTAINER, FlatModel, ImportFailure, Scope
from nasdsl.importer.params import Candidates, Expr, clean_name, explain

NO_DEFAULT = object()


@dataclass
class Param:
    name: str
    default: object = NO_DEFAULT


@dataclass
class Template:
    name: str
    params: list[Param]
    body: Item
    instances: list[str]
    doc: str = ""
    #: the entries in the order the source's class builds them (its state_dict's), where that is
    #: not the order they run in (torchvision's Swin V2 block builds norm1 before attn)
    build_order: list[str] = field(default_factory=list)


@dataclass
class _Group:
    body: Item
    instances: list[str]
    #: for each instance, which optional entries (by name) it has
    present: dict[str, set[str]] = field(default_factory=dict)


class Discovery:
    """Builds every body of the model and decides its templates."""

    def __init__(self, model: FlatModel) -> None:
        self.model = model
        self.builder = BodyBuilder(model)
        #: instance path -> (template name, {parameter: value})
        self.assigned: dict[str, tuple[str, dict]] = {}
        #: instance path -> its body, for scopes written inline
        self.inline: dict[str, Item] = {}
        self.templates: dict[str, Template] = {}
        self.inputs: dict[str, str] = {}
        self.outputs_of: dict[str, str] = {}
        self.notes: list[str] = []
        self._names: set[str] = set()
        #: identity nodes whose entries the bodies leave out (:func:`_identities_as_absent`)
        self.dropped: list[str] = []

    # -- order ---------------------------------------------------------------------------

    def run(self) -> Item:
        scopes = {p: s for p, s in self.model.scopes.items() if p and self.builder.live(p)}
        for group in self._work(scopes):
            if isinstance(group, str):
                self._container(scopes[group])
            else:
                self._class([scopes[p] for p in group])
        root, _, _ = self.builder.body(self.model.scopes[""], self.item_of)
        self.notes.extend(self.builder.notes)
        self._build_orders()
        for node_id in self.dropped:
            _bypass(self.model, node_id)
        return root

    def _build_orders(self) -> None:
        """A template whose instances all build their entries in one order other than the one
        they run in says so (``build_order``); elsewhere the spec's state_dict order differs
        from the source's, and the report's note says where."""
        orders = self.builder.build_orders
        for t in self.templates.values():
            seen = {tuple(orders.get(p, ())) for p in t.instances}
            if len(seen) == 1 and t.body.kind == "seq" and t.body.named and all(seen):
                t.build_order = list(next(iter(seen)))
        written = {p for t in self.templates.values() if t.build_order for p in t.instances}
        for path in orders:
            if path not in written:
                self.notes.append(f"{path or 'the model'}: the state_dict order differs from the source's")

    def _work(self, scopes: dict[str, Scope]) -> list:
        """Classes (lists of instance paths) and containers (a path each), innermost first."""
        _split_nested_classes(scopes)
        classes: dict[str, list[str]] = {}
        for p, s in scopes.items():
            if s.kind == CLASS:
                classes.setdefault(s.cls_key, []).append(p)
        height = dict.fromkeys(scopes, 0)
        children: dict[str, list[str]] = {p: [] for p in scopes}
        for p in scopes:
            parent = p.rsplit(".", 1)[0] if "." in p else ""
            if parent in children:
                children[parent].append(p)

        def effective(c: str, klass: dict[str, int]) -> int:
            """A child's height: its class's (the tallest of its instances) for a class."""
            s = scopes[c]
            return klass[s.cls_key] if s.kind == CLASS else height[c]

        for _ in range(len(scopes) + 1):
            changed = False
            klass = {k: max(height[p] for p in ps) for k, ps in classes.items()}
            for p in scopes:
                h = 1 + max((effective(c, klass) for c in children[p]), default=-1)
                if h != height[p]:
                    height[p], changed = h, True
            if not changed:
                break
        else:  # pragma: no cover - a class that contains itself
            raise ImportFailure("a module class contains itself", where=self.model.source)
        work: list[tuple[int, int, object]] = []
        for ps in classes.values():
            work.append((max(height[p] for p in ps), self.builder.first[ps[0]], ps))
        for p, s in scopes.items():
            if s.kind == CONTAINER:
                work.append((height[p], self.builder.first[p], p))
        work.sort(key=lambda w: (w[0], w[1]))
        return [w[2] for w in work]

    def item_of(self, path: str) -> Item:
        name = path.rsplit(".", 1)[-1]
        if path in self.assigned:
            return Item(name, "use", scope=path)
        body = copy.deepcopy(self.inline[path])
        body.name, body.scope = name, path
        return body

    # -- containers ----------------------------------------------------------------------

    def _container(self, scope: Scope) -> None:
        body, inp, out = self.builder.body(scope, self.item_of)
        self.inputs[scope.path], self.outputs_of[scope.path] = inp, out
        if scope.path in self.builder.exposed or scope.path in self.builder.open:
            self._inline_exposed([scope], {scope.path: body})
            return
        if _plain(body):
            self.inline[scope.path] = body
            return
        # a container whose forward is not a plain chain (written with references) is
        # a template of its own: the PyTorch backend lowers references in template bodies
        scope.cls = "".join(w[:1].upper() + w[1:] for w in scope.name.split("_") if w) or "Block"
        scope.cls_key = f"the container {scope.path}"
        self._templates_for([scope], {scope.path: body})

    # -- classes -------------------------------------------------------------------------

    def _class(self, scopes: list[Scope]) -> None:
        bodies = {}
        for s in scopes:
            bodies[s.path], self.inputs[s.path], self.outputs_of[s.path] = self.builder.body(s, self.item_of)
        if any(s.path in self.builder.exposed or s.path in self.builder.open for s in scopes):
            self._inline_exposed(scopes, bodies)
            return
        if (
            all(self._run_of_uses(b) for b in bodies.values())
            and len({self._run_template(b) for b in bodies.values()}) == 1
        ):
            for s in scopes:
                self.inline[s.path] = bodies[s.path]
            return
        self._templates_for(scopes, bodies)

    def _inline_exposed(self, scopes: list[Scope], bodies: dict[str, Item]) -> None:
        """A model entry whose inner blocks later entries read (:attr:`BodyBuilder.exposed`), or
        that reads several values (:attr:`BodyBuilder.open`), written inline, its body reading
        by paths from the model: one instance of its class, and a chain where later entries read
        inside it (the PyTorch backend runs it block by block) or where it sits in a list (the
        backend lowers references between a model's entries and inside its groups, not inside
        its lists)."""
        path = next(s.path for s in scopes if s.path in self.builder.exposed or s.path in self.builder.open)
        if len(scopes) > 1:
            why = (
                f"later entries read {', '.join(self.builder.exposed[path].values())} inside {path}"
                if path in self.builder.exposed
                else f"{path} reads {len(self.builder.interface(path)[0])} values from outside it"
            )
            raise self.builder.fail(
                scopes[0],
                f"{why}, and its class has {len(scopes)} instances: such a block is written inline, once",
            )
        if path in self.builder.exposed and not _plain(bodies[path]):
            raise self.builder.fail(
                scopes[0],
                f"later entries read {', '.join(self.builder.exposed[path].values())} inside it, and its entries read "
                "out of turn: the PyTorch backend runs such an entry block by block, each after the one before",
            )
        if "." in path and not _plain(bodies[path]):
            raise self.builder.fail(
                scopes[0],
                "it is written inline in a list of the model, where the PyTorch backend lowers no references, and its "
                "entries read out of turn",
            )
        self.inline[path] = bodies[path]

    def _run_of_uses(self, body: Item) -> bool:
        return (
            body.kind in ("list", "seq")
            and bool(body.children)
            and all(c.kind == "use" and c.source is PREV and c.phase == "both" for c in body.children)
            and len({self.assigned[c.scope][0] for c in body.children}) == 1
        )

    def _run_template(self, body: Item) -> str:
        return self.assigned[body.children[0].scope][0]

    def _templates_for(self, scopes: list[Scope], bodies: dict[str, Item]) -> None:
        self.dropped += _identities_as_absent(bodies)
        by_sig: dict[object, _Group] = {}
        for s in scopes:
            sig = self.signature(bodies[s.path])[1:]  # the instance's own name aside
            if sig not in by_sig:
                by_sig[sig] = _Group(bodies[s.path], [])
            by_sig[sig].instances.append(s.path)
        groups = sorted(by_sig.values(), key=lambda g: -len(g.instances))
        sets: list[list[_Group]] = []
        merged: list[_Group] = []
        for g in groups:
            for k, members in enumerate(sets):
                joined = self._unify([*members, g])
                if joined is not None:
                    members.append(g)
                    merged[k] = joined
                    break
            else:
                sets.append([g])
                merged.append(g)
        cls = scopes[0].cls.lstrip("_") or "Block"
        key = scopes[0].cls_key
        origin = key if key and not key.startswith("onnx:") else ""
        for k, g in enumerate(merged):
            name = self._template_name(cls if k == 0 else f"{cls}_{k + 1}")
            uses = f"{len(g.instances)} use{'s' if len(g.instances) != 1 else ''}"
            if origin:
                doc = f"{origin}" + (f" (structure {k + 1} of {len(merged)})" if len(merged) > 1 else "") + f"; {uses}."
            else:
                doc = f"Blocks of one structure in the source; {uses}."
            self._make_template(name, g, bodies, doc)

    def _template_name(self, base: str) -> str:
        from nasdsl.ops import OPS

        base = "".join(c if c.isascii() and (c.isalnum() or c == "_") else "_" for c in base) or "Block"
        if base[0].isdigit():
            base = f"T{base}"
        name = base
        k = 2
        joint = "_" if base[-1].isdigit() else ""  # Block2's second is Block2_2, not Block22
        while name in self._names or name in OPS or name.lower() in ("in", "self"):
            name = f"{base}{joint}{k}"
            k += 1
        self._names.add(name)
        return name

    # -- signatures ----------------------------------------------------------------------

    def signature(self, item: Item, with_when: bool = True) -> tuple:
        head = (item.name, item.kind, item.op, item.source, tuple(item.refs), item.phase)
        if with_when:
            head += (item.when,)
        if item.kind == "use":
            return (*head, self.assigned[item.scope][0])
        if item.kind == "op":
            return head
        if item.kind == "merge":  # its settings (a concat's axis) are the structure's, never parameters
            head += (tuple(sorted(item.attrs.items())),)
        return (*head, tuple(self.signature(c, with_when) for c in item.children))

    def slots(self, item: Item, prefix: tuple = ()) -> dict[tuple, object]:
        """The settings of a body (op attributes, template arguments) by path."""
        out: dict[tuple, object] = {}
        if item.kind == "op":
            for k, v in item.attrs.items():
                out[(*prefix, k)] = v
        elif item.kind == "use":
            for k, v in self.assigned[item.scope][1].items():
                out[(*prefix, k)] = v
        else:
            for c in item.children:
                out.update(self.slots(c, (*prefix, c.name)))
        return out

    # -- unification ---------------------------------------------------------------------

    def _unify(self, groups: list[_Group]) -> _Group | None:
        """One body for the groups (each of one exact structure), entries missing from some
        switched; None when a read of some instance would change."""
        if any(g.body.kind != "seq" for g in groups):
            return None
        order: list[str] | None = [c.name for c in groups[0].body.children]
        for g in groups[1:]:
            order = _merge_orders(order, [c.name for c in g.body.children])
            if order is None:
                return None
        index = [{c.name: c for c in g.body.children} for g in groups]
        for name in order:
            shapes = set()
            for ix in index:
                if name in ix:
                    x = copy.copy(ix[name])
                    x.source, x.refs, x.when = None, [], None
                    shapes.add(self.signature(x, False))
            if len(shapes) > 1:
                return None

        def actual(w: int, name: str) -> tuple[str, list[str]]:
            items = groups[w].body.children
            k = [c.name for c in items].index(name)
            item = items[k]
            src = item.source if item.source is not PREV else (items[k - 1].name if k else IN)
            return src, list(item.refs)

        chosen: dict[str, str] = {}

        def resolve(w: int, ref: str) -> str:
            while ref != IN and ref not in index[w]:
                ref = chosen[ref]
            return ref

        unified: list[Item] = []
        for k, name in enumerate(order):
            where = [w for w, ix in enumerate(index) if name in ix]
            base = copy.deepcopy(index[where[0]][name])
            earlier = list(reversed(order[:k])) + [IN]
            if base.kind == "merge" and not base.children:
                chosen[name] = earlier[0]
                refs = []
                wants = {w: actual(w, name)[1] for w in where}
                for j in range(len(base.refs)):
                    pick = next((c for c in earlier if all(resolve(w, c) == wants[w][j] for w in where)), None)
                    if pick is None:
                        return None
                    refs.append(pick)
                base.refs = refs
            else:
                want = {w: actual(w, name)[0] for w in where}
                pick = next((c for c in earlier if all(resolve(w, c) == want[w] for w in where)), None)
                if pick is None:
                    return None
                chosen[name] = pick
            base.source = PREV if chosen[name] == earlier[0] else chosen[name]
            unified.append(base)
        for w, g in enumerate(groups):
            if resolve(w, order[-1]) != g.body.children[-1].name:
                return None
        present = {i: set(index[w]) for w, g in enumerate(groups) for i in g.instances}
        instances = [i for g in groups for i in g.instances]
        return _Group(Item(groups[0].body.name, "seq", children=unified), instances, present)

    # -- parameters ----------------------------------------------------------------------

    def _make_template(self, name: str, group: _Group, bodies: dict[str, Item], doc: str) -> None:
        inst = group.instances
        scopes = [self.model.scopes[p] for p in inst]
        slot_values: dict[tuple, list[object]] = {}
        per = [self.slots(bodies[p]) for p in inst]
        for k, slots in enumerate(per):
            for key, v in slots.items():
                slot_values.setdefault(key, [None] * len(inst))[k] = v
        order = {key: n for n, key in enumerate(self.slots(group.body))}
        for key in slot_values:
            order.setdefault(key, len(order))
        cands = Candidates(len(inst))
        names: list[str] = []
        for s in scopes:
            for n in s.arg_order:
                if n not in names:
                    names.append(n)
        for n in names:
            cands.add(n, [s.args.get(n) for s in scopes])
        cands.from_signature = {n for s in scopes for n in s.signature_args}
        widths = [self.model.node(self.inputs[p]).shape[0] for p in inst]
        cands.widths = {
            n for n, vals in cands.values.items() if all(v is None or v == w for v, w in zip(vals, widths, strict=True))
        }
        exprs: dict[tuple, object] = {}
        used: list[str] = []
        taken: set[str] = set()
        own: list[str] = []

        def settle(key: tuple, values: list[object], attr: str) -> object:
            present = [v for v in values if v is not None]
            if all(_equal(v, present[0]) for v in present):
                return present[0]
            found = explain(values, cands, attr)
            if found is None and _int_lists(present):
                # a list of sizes (a reshape's shape) that no argument gives whole: its
                # sizes one by one, each the simplest expression that explains it
                sizes = ([v[k] if v is not None else None for v in values] for k in range(len(present[0])))
                return [settle((*key, k), size, attr) for k, size in enumerate(sizes)]
            if found is None:
                pname = clean_name("_".join(str(p) for p in key), taken | set(cands.values))
                cands.add(pname, values)
                own.append(pname)
                found = (pname, [pname])
            for n in found[1]:
                if n not in used:
                    used.append(n)
            return Expr(found[0])

        for key in sorted(slot_values, key=lambda k: order[k]):
            exprs[key] = settle(key, slot_values[key], key[-1])
        switches = self._switches(group, scopes, cands, used)
        params_order = [n for n in cands.order if n in used]
        taken_names: set[str] = set()
        rename = {n: clean_name(n, taken_names) for n in params_order}
        params, values = [], {p: {} for p in inst}
        declared = {}
        for sc in scopes:
            for k, v in sc.defaults.items():
                declared.setdefault(k, v)
        for n in params_order:
            vals = cands.values[n]
            if n in declared:  # the constructor's own default, when every use gave a value
                default = declared[n] if declared[n] is not NO_DEFAULT else NO_DEFAULT
            elif n in cands.from_signature:
                default = NO_DEFAULT
            else:
                default = _default(vals)
            params.append(Param(rename[n], default))
            for p, v in zip(inst, vals, strict=True):
                values[p][rename[n]] = v
        params = [p for p in params if p.default is NO_DEFAULT] + [p for p in params if p.default is not NO_DEFAULT]
        body = self._with_exprs(group.body, exprs, rename, switches)
        self.templates[name] = Template(name, params, body, list(inst), doc)
        for p in inst:
            self.assigned[p] = (name, {q.name: values[p][q.name] for q in params})

    def _switches(self, group: _Group, scopes: list[Scope], cands: Candidates, used: list[str]) -> dict[str, str]:
        """A boolean parameter for each pattern of optional entries, named after the
        constructor argument (a module or None: ``downsample``) or the module's flag
        (``use_res_connect``) that has the pattern, else ``with_<entry>``."""
        if not group.present:
            return {}
        optional = [c.name for c in group.body.children if any(c.name not in group.present[p] for p in group.instances)]
        out: dict[str, str] = {}
        by_pattern: dict[tuple, str] = {}
        for entry in optional:
            pattern = tuple(entry in group.present[p] for p in group.instances)
            if pattern in by_pattern:
                out[entry] = by_pattern[pattern]
                continue
            name = None
            for s_key in ("switches", "flags"):
                options = [dict(getattr(s, s_key)) for s in scopes]
                keys = [k for k in options[0] if all(k in o for o in options)]
                keys = sorted(keys, key=lambda k: k != entry)
                for k in keys:
                    if tuple(bool(o[k]) for o in options) == pattern:
                        name = k
                        break
                if name:
                    break
            name = name or f"with_{entry}"
            base, n = name, 2
            while name in cands.values and name not in by_pattern.values():
                name = f"{base}_{n}"
                n += 1
            cands.add(name, list(pattern))
            if name in {k for s in scopes for k in s.switches}:
                cands.from_signature.add(name)
            used.append(name)
            by_pattern[pattern] = name
            out[entry] = name
        return out

    def _with_exprs(self, body: Item, exprs: dict, rename: dict[str, str], switches: dict[str, str]) -> Item:
        body = copy.deepcopy(body)

        def text(v: object) -> object:
            if isinstance(v, Expr):
                return Expr(_renamed(v.text, rename))
            if isinstance(v, list):
                return [text(x) for x in v]
            return v

        def walk(item: Item, prefix: tuple) -> None:
            if item.kind == "op":
                item.attrs = {k: text(exprs[(*prefix, k)]) for k in item.attrs}
            elif item.kind == "use":
                item.attrs = {
                    k: text(exprs[(*prefix, k)]) for k in self.assigned[item.scope][1] if (*prefix, k) in exprs
                }
            for c in item.children:
                walk(c, (*prefix, c.name))

        for c in body.children:
            walk(c, (c.name,))
            if c.name in switches:
                c.when = rename.get(switches[c.name], switches[c.name])
        return body


def _identities_as_absent(bodies: dict[str, Item]) -> list[str]:
    """An entry that is an ``identity`` in some instances of a class and a layer in others
    (torchvision's MaxViT makes an ``nn.Identity`` where a block has no projection, or no
    stochastic depth) is left out where it is the identity, its readers reading its input: the
    instances then differ in an entry some lack, which a switch says. Returns the identity nodes
    left out (the caller takes them out of the graph)."""
    kinds: dict[str, set[bool]] = {}
    for body in bodies.values():
        if body.kind == "seq" and body.named:
            for c in body.children[:-1]:
                kinds.setdefault(c.name, set()).add(c.kind == "op" and c.op == "identity")
    mixed = {name for name, seen in kinds.items() if seen == {True, False}}
    dropped: list[str] = []
    for body in bodies.values():
        if body.kind != "seq" or not body.named:
            continue
        if not any(c.name in mixed and c.kind == "op" and c.op == "identity" for c in body.children[:-1]):
            continue
        kept: list[Item] = []
        reads: dict[str, str] = {}  # a dropped entry -> what it read
        for k, c in enumerate(body.children):
            before = body.children[k - 1].name if k else IN
            source = before if c.source is PREV else c.source
            source = reads.get(source, source)
            if c.name in mixed and c.kind == "op" and c.op == "identity" and k < len(body.children) - 1:
                reads[c.name] = source
                dropped.append(c.node)
                continue
            c.refs = [reads.get(r, r) for r in c.refs]
            c.source = PREV if source == (kept[-1].name if kept else IN) else source
            kept.append(c)
        body.children = kept
    return dropped


def _bypass(model: FlatModel, node_id: str) -> None:
    """Take the one-input node ``node_id`` out of the graph, its readers reading its input."""
    source = model.nodes.pop(node_id).inputs[0]
    for node in model.nodes.values():
        node.inputs = [source if i == node_id else i for i in node.inputs]
    for out in model.outputs:
        if out.node == node_id:  # pragma: no cover - the last entry of a body is never left out
            out.node = source


def _int_lists(values: list[object]) -> bool:
    """Lists of integers, all of one length (two or more)."""
    return all(isinstance(v, list) and len(v) == len(values[0]) > 1 and all(_int_value(x) for x in v) for v in values)


def _int_value(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _renamed(text: str, rename: dict[str, str]) -> str:
    import re

    return re.sub(r"[A-Za-z_][A-Za-z0-9_]*", lambda m: rename.get(m[0], m[0]), text)


def _equal(a: object, b: object) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return type(a) is type(b) and a == b
    return type(a) is type(b) and a == b if isinstance(a, bool) or isinstance(b, bool) else a == b


def _default(values: list[object]) -> object:
    """The value most uses take, as the parameter's default, when at least two and at
    least half of the uses take it (a parameter the source's constructor declares keeps
    that declaration instead)."""
    counts = Counter(_key(v) for v in values)
    key, n = counts.most_common(1)[0]
    if n >= 2 and 2 * n >= len(values):
        return next(v for v in values if _key(v) == key)
    return NO_DEFAULT


def _key(v: object) -> object:
    return (type(v).__name__, tuple(v) if isinstance(v, list) else v)


def _merge_orders(a: list[str], b: list[str]) -> list[str] | None:
    """A sequence holding both name sequences in their orders (their shortest common
    supersequence by a longest common subsequence); None when they disagree."""
    n, m = len(a), len(b)
    lcs = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        for j in range(m - 1, -1, -1):
            lcs[i][j] = lcs[i + 1][j + 1] + 1 if a[i] == b[j] else max(lcs[i + 1][j], lcs[i][j + 1])
    out, i, j = [], 0, 0
    while i < n and j < m:
        if a[i] == b[j]:
            out.append(a[i])
            i, j = i + 1, j + 1
        elif lcs[i + 1][j] >= lcs[i][j + 1]:
            out.append(a[i])
            i += 1
        else:
            out.append(b[j])
            j += 1
    out += a[i:] + b[j:]
    if len(set(out)) != len(out):
        return None
    return out


def _plain(body: Item) -> bool:
    """A body the PyTorch backend can write inline: a list or named sequence whose entries
    each read the one before, or a named merge, all the way down, with no training-only part."""
    if body.kind == "merge":
        return bool(body.children) and all(_plain_entry(c) for c in body.children)
    return all(c.source is PREV and c.phase == "both" and _plain_entry(c) for c in body.children)


def _plain_entry(item: Item) -> bool:
    if item.kind == "merge" and not item.children:
        return False
    if item.kind in ("list", "seq", "merge"):
        return _plain(item)
    return True


def _split_nested_classes(scopes: dict[str, Scope]) -> None:
    """A class with an instance inside another (pix2pix's U-Net block holding the next one) is
    no template that uses itself: its instances are told apart by their height in the module
    tree (the innermost is 0), so that each level is a class of its own, innermost first."""
    nested = {
        s.cls_key
        for p, s in scopes.items()
        if s.kind == CLASS
        and any(scopes[a].kind == CLASS and scopes[a].cls_key == s.cls_key for a in _ancestor_paths(p) if a in scopes)
    }
    if not nested:
        return
    height = dict.fromkeys(scopes, 0)
    for p in sorted(scopes, key=lambda p: -p.count(".") if p else 1):  # the deepest first
        parent = _parent_path(p)
        if parent in height:
            height[parent] = max(height[parent], height[p] + 1)
    for p, s in scopes.items():
        if s.kind == CLASS and s.cls_key in nested:
            s.cls_key = f"{s.cls_key} (height {height[p]})"


def _parent_path(path: str) -> str | None:
    if not path:
        return None
    return path.rsplit(".", 1)[0] if "." in path else ""


def _ancestor_paths(path: str):
    while path:
        path = path.rsplit(".", 1)[0] if "." in path else ""
        yield path
