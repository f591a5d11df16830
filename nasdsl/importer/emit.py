"""The discovered structure as spec text: templates, the model's entries, the outputs.

Layers are written as a spec writes them by hand: an op with the attributes that differ from
its defaults (``{op: conv2d, out: 64, kernel: 7, stride: 2, padding: 3, bias: false}``), an
op without any as its name (``relu``), a template use with its arguments by position where
they are the leading parameters and by name otherwise. Consecutive uses of one template
become a ``repeat`` (:mod:`nasdsl.importer.repeats`) where that is shorter, or where their
names need a pattern (RegNet's ``block1-0``).
"""

from __future__ import annotations

from nasdsl.errors import SpecError
from nasdsl.importer.bodies import IN, PREV, Item
from nasdsl.importer.flat import FlatModel, ImportFailure
from nasdsl.importer.params import Expr
from nasdsl.importer.repeats import as_repeat, flat_runs
from nasdsl.importer.templates import NO_DEFAULT, Discovery, Template
from nasdsl.importer.yaml_text import Block, document
from nasdsl.spec import misspelt_keyword


class Writer:
    """Writes the spec of one import: ``text(root, header)``."""

    def __init__(self, model: FlatModel, found: Discovery) -> None:
        self.model = model
        self.found = found
        self.templates = found.templates

    # -- ops and uses --------------------------------------------------------------------

    def op_value(self, item: Item) -> object:
        attrs = _given(item.op, item.attrs)
        extra = self.keys(item)
        if not attrs and not extra:
            return item.op
        return {"op": item.op, **attrs, **extra}

    def args_of(self, item: Item) -> dict:
        """A use's arguments: in a template body, its expressions; in the model, the values."""
        if item.attrs:
            return dict(item.attrs)
        return dict(self.found.assigned[item.scope][1])

    def use_value(self, item: Item, args: dict | None = None) -> object:
        template = self.templates[self.found.assigned[item.scope][0]] if item.scope else None
        name = template.name if template else item.op
        written = self.written_args(template, self.args_of(item) if args is None else args)
        extra = self.keys(item)
        if written is None and not extra:
            return name
        out: dict = {"use": name}
        if written is not None:
            out["args"] = written
        return {**out, **extra}

    def written_args(self, template: Template, args: dict) -> object:
        given = {}
        for p in template.params:
            v = args.get(p.name)
            if p.default is NO_DEFAULT or not _same(v, p.default):
                given[p.name] = v
        if not given:
            return None
        names = [p.name for p in template.params]
        required = [p.name for p in template.params if p.default is NO_DEFAULT]
        positional = list(given) == names[: len(given)] and len(given) >= len(required)
        if positional:
            values = [given[n] for n in names[: len(given)]]
            return values[0] if len(values) == 1 and not isinstance(values[0], (list, tuple)) else values
        return given

    def keys(self, item: Item) -> dict:
        out = {}
        if item.source is not PREV:
            out["from"] = item.source
        if item.when:
            out["when"] = Expr(item.when)
        if item.phase != "both":
            out["phase"] = item.phase
        if item.doc:
            out["doc"] = item.doc
        return out

    # -- blocks --------------------------------------------------------------------------

    def value(self, item: Item) -> object:
        if item.kind == "op":
            return self.op_value(item)
        if item.kind == "use":
            return self.use_value(item)
        if item.kind == "merge" and not item.children:
            refs = [{"ref": r if r != IN else "in"} for r in item.refs]
            return {item.op: refs, **_given(item.op, item.attrs), **self.keys(item)}
        repeated = as_repeat(self, item)
        if repeated is not None:
            return {**repeated, **self.keys(item)}
        if item.kind == "merge":
            branches = self.children(item)
            return Block({item.op: branches, **_given(item.op, item.attrs), **self.keys(item)})
        if item.kind == "seq" and not all(c.name.isidentifier() for c in item.children):
            raise ImportFailure(
                f"{item.scope or item.name}: its children's names ({', '.join(c.name for c in item.children[:3])}) "
                "are not identifiers and follow no pattern a repeat can write",
                where=self.model.source,
            )
        body = self.children(item)
        extra = self.keys(item)
        if extra:
            return Block({"seq": body, **extra})
        return body

    def children(self, item: Item) -> object:
        if item.kind == "merge" and not item.named:  # branches, each its own (a flat repeat is a list's)
            return [self.value(c) for c in item.children]
        if item.kind == "list":
            return flat_runs(self, item.children)
        return self.entries(item.children)

    def entries(self, items: list[Item]) -> Block:
        """Named entries, a mapping. The one entry of a mapping whose name reads as a typo of a
        block's key (``opp: relu``, ``usee: Block``) has its block written with its key
        (``opp: {op: relu}``): the parser refuses the short form, and the name is the source's."""
        out = {c.name: self.value(c) for c in items}
        if len(items) == 1:
            ((name, value),) = out.items()
            if misspelt_keyword(name, value) is not None:
                key = "seq" if isinstance(value, list) else "use" if items[0].kind == "use" else "op"
                out[name] = {key: value}
        return Block(out)

    # -- the document --------------------------------------------------------------------

    def template_value(self, t: Template) -> Block:
        params = [p.name if p.default is NO_DEFAULT else {p.name: p.default} for p in t.params]
        out: dict = {"doc": t.doc}
        if params:
            out["params"] = params
        if t.build_order:
            out["build_order"] = list(t.build_order)
        body = t.body
        if body.kind == "merge" and body.children:
            out["body"] = Block({body.op: self.children(body), **_given(body.op, body.attrs)})
        elif body.kind == "list":
            out["body"] = self.children(body)
        else:
            out["body"] = self.entries(body.children)
        return Block(out)

    def text(self, root: Item, header: list[str]) -> str:
        inp = self.model.input
        sections: dict = {
            "nasdsl": 1,
            "name": self.model.name,
            "doc": f"{self.model.name}, imported from {self.model.source}.",
            "input": {
                "name": inp.name,
                "shape": list(inp.shape),
                **{k: inp.attrs[k] for k in ("axes", "mean", "std") if k in inp.attrs},
            },
        }
        if self.templates:
            sections["templates"] = Block({t.name: self.template_value(t) for t in self.template_order()})
        sections["model"] = self.entries(root.children)
        outputs = self.outputs(root)
        if self.model.outputs_by_name:
            sections["outputs_by_name"] = True
        if outputs is not None:
            sections["outputs"] = Block(outputs)
        return document(sections, header)

    def template_order(self) -> list[Template]:
        """Templates in the order of their first use in the model, each after the templates
        its body uses."""
        first = {t.name: min(self.found.builder.first.get(p, 0) for p in t.instances) for t in self.templates.values()}
        out: list[Template] = []

        def place(t: Template) -> None:
            if t in out:
                return
            for name in sorted(self._used_by(t.body), key=first.get):
                place(self.templates[name])
            out.append(t)

        for t in sorted(self.templates.values(), key=lambda t: first[t.name]):
            place(t)
        return out

    def _used_by(self, item: Item) -> set[str]:
        found = set()
        if item.kind == "use" and item.scope in self.found.assigned:
            found.add(self.found.assigned[item.scope][0])
        for c in item.children:
            found |= self._used_by(c)
        return found

    def outputs(self, root: Item) -> dict | None:
        producer = {}
        for c in root.children:
            producer[self._output_node(c)] = c.name
        outs = self.model.outputs
        last = root.children[-1].name
        if (
            len(outs) == 1
            and outs[0].name == "out"
            and producer.get(outs[0].node) == last
            and not self.model.outputs_by_name
        ):
            return None
        written = {}
        for o in outs:
            entry = producer.get(o.node)
            if entry is None:
                raise ImportFailure(
                    f"the output '{o.name}' reads {o.node}, which is not the output of a top-level entry",
                    where=self.model.source,
                )
            value: dict = {"from": entry}
            if o.training_only:
                value["training_only"] = True
            written[o.name] = value
        return written

    def _output_node(self, item: Item) -> str:
        if item.node:
            return item.node
        if item.kind == "use" or item.scope:
            return self.found.outputs_of[item.scope]
        return item.node


def _has_expr(v: object) -> bool:
    """An expression, or a list holding one (a reshape's sizes)."""
    return isinstance(v, Expr) or (isinstance(v, list) and any(_has_expr(x) for x in v))


def _given(op: str, attrs: dict) -> dict:
    """The attributes to write: required ones, and the others where they differ from the
    op's default (an expression is always written)."""
    from nasdsl.ops import OPS, REQUIRED

    spec = OPS[op]
    literal = {k: v for k, v in attrs.items() if not _has_expr(v)}
    required = [a.name for a in spec.attrs if a.default is REQUIRED]
    defaults: dict = {}
    if all(n in literal for n in required):
        try:
            defaults = spec.normalise({n: literal[n] for n in required})
        except SpecError:  # the defaults alone are refused (a clamp without bounds): every attribute is written
            defaults = {}
    out = {}
    for a in spec.attrs:
        if a.name not in attrs:
            continue
        v = attrs[a.name]
        if a.default is REQUIRED or _has_expr(v):
            out[a.name] = v
            continue
        if a.name in defaults:
            try:
                same = spec.normalise({**{n: literal[n] for n in required}, a.name: v})[a.name] == defaults[a.name]
            except Exception:  # noqa: BLE001 - a value the op refuses is written as it is
                same = False
            if same:
                continue
        elif not callable(a.default) and _normal_equal(a, v, a.default):
            continue
        out[a.name] = v
    return out


def _normal_equal(attr, v: object, default: object) -> bool:
    try:
        return attr.check(v) == attr.check(default)
    except Exception:  # noqa: BLE001 - a value the op refuses is written as it is
        return _same(v, default)


def _same(a: object, b: object) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    return a == b


__all__ = ["Writer"]
