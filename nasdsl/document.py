"""From files to one spec document: ``extends`` chains and ``--set`` overrides.

``extends: base.yaml`` loads the base (relative to the extending file) and lays
the extending document over it, section by section:

* ``name``, ``doc``, ``nasdsl``: replaced;
* ``input``, ``variables``, ``init``, ``templates``, ``model``, ``outputs``:
  merged entry by entry. An entry that is given replaces the base's entry
  *whole* (a template, a model entry, a variable) and keeps its position; a
  new entry is appended; ``null`` deletes the entry. In ``model`` and
  ``outputs``, an entry with ``before: NAME`` or ``after: NAME`` is put just
  before or after the base's entry NAME (moved there if the base has it).

Overrides (``--set PATH=VALUE`` on the command line, ``overrides={...}`` in the
API) are applied to the merged document before it is parsed, so they are
checked exactly like the file. A path is either a variable name
(``num_classes``), a top-level model entry and a key below it
(``inception4a.c3x3``, ``maxpool4.kernel``), or starts with a section
(``variables.dropout``, ``input.shape``, ``model.fc.out``). At a template use,
a key may name one of the template's parameters.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Iterable, Mapping

from nasdsl.errors import LimitError, Location, SpecError
from nasdsl.loader import Limits, YList, YMap, load_file, load_text, scalar_type_name
from nasdsl.spec import PLACEMENT_KEYS, did_you_mean, join

#: The loader's limits when the caller gives none (Limits is frozen, so one instance serves all).
DEFAULT_LIMITS = Limits()
MAX_EXTENDS = 16
#: the characters that end a folder's name in a path
_SEPARATORS = tuple(sep for sep in (os.sep, os.altsep) if sep)
REPLACED = ("nasdsl", "name", "doc")
MERGED = ("input", "variables", "init", "templates", "model", "outputs")
#: Sections whose order matters: a new entry may be placed with ``before:`` or ``after:``.
ORDERED = ("model", "outputs")


def new_map(loc: Location) -> YMap:
    return YMap(loc)


def put(m: YMap, key: str, value: object, key_loc: Location, value_loc: Location) -> None:
    m[key] = value
    m.key_locs[key] = key_loc
    m.value_locs[key] = value_loc


def load_document(
    path: str | os.PathLike, *, limits: Limits = DEFAULT_LIMITS, display_name: str | None = None
) -> tuple[YMap, tuple[str, ...]]:
    """Load a spec file and everything it extends; return the merged document
    and the files read (most derived first)."""
    return _load(os.fspath(path), display_name or str(path), limits, ())


def _load(path: str, shown: str, limits: Limits, chain: tuple[tuple[str, str], ...]) -> tuple[YMap, tuple[str, ...]]:
    """``chain``: (real path, shown name) of the files that extend this one, outermost first.
    ``path`` is kept as given: ``pathlib.Path`` drops a trailing slash, and ``s.yaml/`` would
    read the file ``s.yaml`` where the system refuses it (a name ending in a slash is a folder's)."""
    if _file_as_folder(path):
        raise SpecError(NOT_A_FOLDER, location=Location(shown, 1, 1))
    doc = load_file(path, limits=limits, display_name=shown)
    if "extends" not in doc:
        return doc, (shown,)
    ext_loc = doc.loc_of("extends")
    ext = doc["extends"]
    if not isinstance(ext, str) or not ext or "\0" in ext:
        got = scalar_type_name(ext) if not isinstance(ext, str) else "an empty string" if not ext else "a NUL character"
        raise SpecError(f"expected the path of a spec file, got {got}", location=ext_loc, path="extends")
    base_path = os.path.join(os.path.dirname(path), ext)
    if _file_as_folder(base_path):
        raise SpecError(NOT_A_FOLDER, location=ext_loc, path="extends")
    key = os.path.realpath(path)
    base_key = os.path.realpath(base_path)
    base_shown = os.path.normpath(os.path.join(os.path.dirname(shown), ext))
    loaded = [*chain, (key, shown)]
    keys = [k for k, _ in loaded]
    if base_key in keys:
        names = " -> ".join([name for _, name in loaded[keys.index(base_key) :]] + [base_shown])
        raise SpecError(f"extends cycle: {names}", location=ext_loc, path="extends")
    if len(chain) >= MAX_EXTENDS:
        raise LimitError(f"more than {MAX_EXTENDS} levels of extends", location=ext_loc, path="extends")
    if not os.path.exists(base_path):
        raise SpecError(f"no such file: {base_shown}", location=ext_loc, path="extends")
    base, files = _load(base_path, base_shown, limits, tuple(loaded))
    return merge(base, doc), (shown, *files)


NOT_A_FOLDER = (
    "not a directory: the name ends with a slash, which names a folder, and the file is not one "
    "(give the file's name without the slash)"
)


def _file_as_folder(path: str) -> bool:
    """Whether ``path`` ends with a slash and names something that is not a folder (the system
    says "Not a directory" for ``s.yaml/``)."""
    return path.endswith(_SEPARATORS) and os.path.lexists(path.rstrip("".join(_SEPARATORS))) and not os.path.isdir(path)


def merge(base: YMap, over: YMap) -> YMap:
    """Lay ``over`` on ``base`` as described in the module docstring."""
    out = new_map(over.loc)
    for key, value in base.items():
        put(out, key, value, base.key_locs[key], base.loc_of(key))
    for key, value in over.items():
        if key == "extends":
            continue
        if key in MERGED and isinstance(value, YMap) and isinstance(out.get(key), YMap):
            put(out, key, _merge_entries(out[key], value, key), over.key_locs[key], over.loc_of(key))
        elif value is None and key in MERGED:
            out.pop(key, None)
        else:
            put(out, key, value, over.key_locs[key], over.loc_of(key))
    return out


def _merge_entries(base: YMap, over: YMap, section: str) -> YMap:
    out = new_map(over.loc)
    for key, value in base.items():
        put(out, key, value, base.key_locs[key], base.loc_of(key))
    for key, value in over.items():
        if value is None:
            out.pop(key, None)
            continue
        if section in ORDERED and isinstance(value, YMap) and any(k in value for k in PLACEMENT_KEYS):
            out = _placed(out, key, value, over.key_locs[key], over.loc_of(key), section)
            continue
        put(out, key, value, over.key_locs[key], over.loc_of(key))
    return out


def _placed(entries: YMap, key: str, value: YMap, key_loc: Location, value_loc: Location, section: str) -> YMap:
    """``entries`` with ``key`` put just ``before`` or ``after`` the entry its value names
    (moved there if the base has it already); the placement key is not part of the entry."""
    given = [k for k in PLACEMENT_KEYS if k in value]
    where = f"{section}.{key}"
    if len(given) > 1:
        raise SpecError(
            "expected one of 'before' and 'after', got both",
            location=value.key_locs[given[1]],
            path=f"{where}.{given[1]}",
        )
    (side,) = given
    anchor = value[side]
    anchor_loc = value.loc_of(side)
    if not isinstance(anchor, str):
        raise SpecError(
            f"expected the name of an entry, got {scalar_type_name(anchor)}",
            location=anchor_loc,
            path=f"{where}.{side}",
        )
    if anchor == key or anchor not in entries:
        known = [k for k in entries if k != key]
        found = "the entry itself" if anchor == key else f"'{anchor}'{did_you_mean(anchor, known)}"
        raise SpecError(
            f"expected an entry of the base's {section} to place '{key}' {side}, got {found}",
            location=anchor_loc,
            path=f"{where}.{side}",
        )
    entry = new_map(value.loc)
    for k, v in value.items():
        if k != side:
            put(entry, k, v, value.key_locs[k], value.loc_of(k))
    out = new_map(entries.loc)
    for k, v in entries.items():
        if k == key:
            continue
        if k == anchor and side == "before":
            put(out, key, entry, key_loc, value_loc)
        put(out, k, v, entries.key_locs[k], entries.loc_of(k))
        if k == anchor and side == "after":
            put(out, key, entry, key_loc, value_loc)
    return out


# ---------------------------------------------------------------------------
# Overrides


def to_yaml(value: object, loc: Location) -> object:
    """A Python value (an override given in Python, a chosen option) as the loader would have
    produced it, every part located at ``loc``."""
    if isinstance(value, (list, tuple)):
        out = YList(loc)
        out.extend(to_yaml(v, loc) for v in value)
        out.item_locs = [loc] * len(out)
        return out
    if isinstance(value, Mapping):
        m = new_map(loc)
        for k, v in value.items():
            put(m, str(k), to_yaml(v, loc), loc, loc)
        return m
    return value


#: the keys of a choice between blocks besides ``choice`` and ``default``: the block chosen gets them
BLOCK_CHOICE_EXTRA = ("from", "doc")


def is_block_choice(node: object) -> bool:
    """A mapping where a block stands that is a choice between blocks: a ``choice`` key whose
    value is a list or a mapping, and none of a block's own keys."""
    from nasdsl.spec import BLOCK_KEYS

    return (
        isinstance(node, YMap)
        and isinstance(node.get("choice"), (YList, YMap))
        and not any(k in node for k in BLOCK_KEYS)
    )


def block_options(choice: YMap) -> tuple[list[str], list[object], list[Location]]:
    """The words, blocks and locations of a choice between blocks: ``{choice: [name, ...]}`` (each
    an op or template name, which is the block) or ``{choice: {word: block, ...}}``."""
    raw = choice["choice"]
    if isinstance(raw, YMap):
        words = list(raw)
        return words, [raw[w] for w in words], [raw.key_locs.get(w, raw.loc) for w in words]
    return [w for w in raw], list(raw), [raw.loc_of(i) for i in range(len(raw))]


def option_block(choice: YMap, k: int) -> object:
    """The block of option ``k`` of a choice between blocks, with the choice's ``from`` and ``doc``
    given to it (a name becomes ``{use: name, ...}``, a list ``{seq: [...], ...}``)."""
    from nasdsl.spec import BLOCK_KEYS

    _, blocks, locs = block_options(choice)
    block = _copy(blocks[k])
    extra = [key for key in BLOCK_CHOICE_EXTRA if key in choice]
    if not extra:
        return block
    loc = locs[k]
    if isinstance(block, YMap) and any(key in block for key in BLOCK_KEYS):
        m = block
    else:
        m = new_map(loc)
        put(m, "use" if isinstance(block, str) else "seq", block, loc, loc)
    for key in extra:
        if key in m:
            raise SpecError(
                f"option {k} of this choice has its own '{key}': give it on the choice or on the option, not both",
                location=m.key_locs.get(key, loc),
                path=key,
            )
        put(m, key, choice[key], choice.key_locs[key], choice.loc_of(key))
    return m


def override_values(overrides: Mapping[str, object] | Iterable[str]) -> tuple[dict[str, object], dict[str, Location]]:
    """The values and locations of ``overrides``, given as ``{path: value}`` or as
    ``["path=value", ...]`` (the command line's ``--set``), for :func:`apply_overrides`."""
    values: dict[str, object] = {}
    locations: dict[str, Location] = {}
    if isinstance(overrides, Mapping):
        for key, value in overrides.items():
            loc = Location(f"<override {key}>", 1, 1)
            values[key], locations[key] = to_yaml(value, loc), loc
    else:
        for text in overrides:
            key, value, loc = parse_override(text)
            values[key], locations[key] = value, loc
    return values, locations


def parse_override(text: str) -> tuple[str, object, Location]:
    """``"inception4a.c3x3=256"`` -> (path, YAML value, location of the value)."""
    where = Location(f"<--set {text[:60]}>", 1, 1)
    if "=" not in text:
        raise SpecError(f"expected PATH=VALUE, got '{text[:60]}'", location=where, path="--set")
    key, _, raw = text.partition("=")
    key = key.strip()
    if not key:
        raise SpecError("expected PATH=VALUE, got an empty path", location=where, path="--set")
    if not raw.strip():  # an empty shell variable, most likely: YAML would read it as null
        raise SpecError(
            "expected a value after '=', got nothing (write null for no value)",
            location=where.shifted(len(key) + 1),
            path=key,
        )
    value = load_text(raw, where.file, top="any", line=1, column=len(key) + 2)
    return key, value, where.shifted(len(key) + 1)


def apply_overrides(
    doc: YMap, overrides: Mapping[str, object], locations: Mapping[str, Location] | None = None
) -> YMap:
    """Apply ``{path: value}`` to the document (a modified copy is returned)."""
    doc = _copy(doc)
    for path, value in overrides.items():
        loc = (locations or {}).get(path) or Location(f"<override {path[:60]}>", 1, 1)
        _apply_one(doc, path, value, loc)
    return doc


def _copy(node: object) -> object:
    if isinstance(node, YMap):
        m = new_map(node.loc)
        for k, v in node.items():
            put(m, k, _copy(v), node.key_locs[k], node.loc_of(k))
        return m
    if isinstance(node, YList):
        lst = YList(node.loc)
        lst.extend(_copy(v) for v in node)
        lst.item_locs = list(node.item_locs)
        return lst
    return node


def _apply_one(doc: YMap, path: str, value: object, loc: Location) -> None:
    """Set ``path`` to ``value`` (written at ``loc``); errors about the path point at its start."""
    at = Location(loc.file, loc.line, 1)
    parts = path.split(".")
    if any(not p for p in parts):
        raise SpecError("expected a dotted path like inception4a.c3x3", location=at, path=path)
    head = parts[0]
    variables = doc.get("variables") if isinstance(doc.get("variables"), YMap) else {}
    model = doc.get("model") if isinstance(doc.get("model"), YMap) else {}
    if head in ("variables", "model", "input", "outputs", "templates", "init", "name"):
        section, rest = head, parts[1:]
    elif head in variables:
        section, rest = "variables", parts
    elif head in model:
        section, rest = "model", parts
    else:
        if len(parts) == 1 and _set_named_choice(doc, head, value, loc):
            return
        options = [*variables, *model]
        raise SpecError(
            f"no variable or model entry named '{head}'{did_you_mean(head, options)}", location=at, path=path
        )
    if not rest:
        put(doc, section, value, loc, loc)
        return
    if section not in doc or not isinstance(doc[section], YMap):
        raise SpecError(f"the spec has no section '{section}'", location=at, path=path)
    node: object = doc[section]
    walked = section
    templates = doc.get("templates") if isinstance(doc.get("templates"), YMap) else {}
    for i, part in enumerate(rest):
        last = i == len(rest) - 1
        if isinstance(node, YList):
            if not (part.isascii() and part.isdecimal()) or int(part) >= len(node):
                raise SpecError(f"expected an index below {len(node)}, got '{part}'", location=at, path=path)
            if last:
                node[int(part)] = _chosen_block(node[int(part)], value)
                node.item_locs[int(part)] = loc
                return
            node = node[int(part)]
        elif isinstance(node, YMap):
            if part not in node and "use" in node and part not in ("args", "use", "when", "phase", "doc"):
                if not isinstance(node["use"], str):
                    raise SpecError(
                        f"{walked or 'the document'} has no key '{part}' (its 'use' is not a template name)",
                        location=at,
                        path=path,
                    )
                node = _args_as_map(node, templates)
                if part not in node.get("args", {}) and not _is_param(node, part, templates):
                    params = _param_names(node, templates)
                    raise SpecError(
                        f"unknown parameter '{part}' of {node['use']}{did_you_mean(part, params)}; "
                        f"parameters: {', '.join(params) or 'none'}",
                        location=at,
                        path=path,
                    )
                node = node["args"]
            if last:
                if section in ("variables", "model") and walked == section and part not in node:
                    what = "variable" if section == "variables" else "model entry"
                    raise SpecError(f"no {what} named '{part}'{did_you_mean(part, node)}", location=at, path=path)
                put(node, part, _chosen_block(node.get(part), value), loc, loc)
                return
            if part not in node:
                raise SpecError(f"no key '{part}' under {walked}{did_you_mean(part, node)}", location=at, path=path)
            node = node[part]
        else:
            raise SpecError(f"{walked} is a value, it has no key '{part}'", location=at, path=path)
        walked = join(walked, part)


def _set_named_choice(doc: YMap, name: str, value: object, loc: Location) -> bool:
    """Put ``value`` in the place of every choice whose ``name`` is ``name`` (a YAML alias puts one
    in several places); False where there is none."""
    found = False
    stack: list[object] = [doc]
    while stack:
        node = stack.pop()
        items = list(node.items()) if isinstance(node, YMap) else list(enumerate(node))
        for key, v in items:
            if isinstance(v, YMap) and ("choice" in v or "range" in v) and v.get("name") == name:
                if isinstance(node, YMap):
                    put(node, key, _chosen_block(v, value), node.key_locs.get(key, loc), loc)
                else:
                    node[key] = _chosen_block(v, value)
                    node.item_locs[key] = loc
                found = True
            elif isinstance(v, (YMap, YList)):
                stack.append(v)
    return found


def _chosen_block(old: object, value: object) -> object:
    """``--set`` of a choice between blocks to one of its words: that option's block."""
    if isinstance(value, str) and is_block_choice(old):
        words = block_options(old)[0]
        if value in words:
            return option_block(old, words.index(value))
    return value


def _param_names(use: YMap, templates: Mapping) -> list[str]:
    return param_names(use.get("use"), templates)


def param_names(template: object, templates: Mapping) -> list[str]:
    """The parameter names of the template named ``template`` as the file writes them
    (``[]`` where there is no such template or its ``params`` is no list)."""
    t = templates.get(template) if isinstance(template, str) else None
    if not isinstance(t, YMap) or not isinstance(t.get("params"), YList):
        return []
    names = []
    for p in t["params"]:
        if isinstance(p, YMap) and len(p) == 1:
            names.append(next(iter(p)))
        elif isinstance(p, str):
            names.append(p)
    return names


def _is_param(use: YMap, name: str, templates: Mapping) -> bool:
    return name in _param_names(use, templates)


def _args_as_map(use: YMap, templates: Mapping) -> YMap:
    """Rewrite positional ``args`` of a template use as keyword arguments."""
    args = use.get("args")
    if isinstance(args, YMap):
        return use
    names = _param_names(use, templates)
    m = new_map(use.loc_of("args") if "args" in use else use.loc)
    if isinstance(args, YList):
        for i, v in enumerate(args):
            key = names[i] if i < len(names) else f"_{i}"
            put(m, key, v, args.loc_of(i), args.loc_of(i))
    put(use, "args", m, use.key_locs.get("args", use.loc), m.loc)
    return use


# ---------------------------------------------------------------------------


def canonical_json(doc: object) -> str:
    """The document as compact JSON in file order: what the spec hash covers."""
    return json.dumps(_plain(doc), separators=(",", ":"), allow_nan=True)


def _plain(node: object) -> object:
    if isinstance(node, dict):
        return {k: _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def spec_hash(doc: YMap) -> str:
    return hashlib.sha256(canonical_json(doc).encode()).hexdigest()


# ---------------------------------------------------------------------------
# Writing a document


#: the line width spec_yaml writes to (PyYAML's ``width``)
WIDTH = 120


def spec_yaml(doc) -> str:
    """A document (a mapping, as loaded or as plain data) as YAML, written as specs are by hand:
    small mappings and lists on one line."""
    return dump_styled(styled(doc))


def styled(doc) -> object:
    """``doc`` as plain dicts and lists, those :func:`spec_yaml` writes on one line marked so."""
    return _styled(doc)


def styled_like(doc, model) -> object:
    """``doc`` marked as ``model`` (a :func:`styled` document of the same shape, other scalars) is."""
    if isinstance(model, dict):
        return type(model)({k: styled_like(v, model[k]) for k, v in doc.items()})
    if isinstance(model, list):
        return type(model)([styled_like(v, m) for v, m in zip(doc, model, strict=True)])
    return doc


def is_flow(node: object) -> bool:
    """Whether a collection of a :func:`styled` document is written on one line."""
    return isinstance(node, (_FlowMap, _FlowList))


def dump_styled(doc) -> str:
    """The text of a :func:`styled` document."""
    import yaml

    return yaml.dump(doc, Dumper=_dumper(), sort_keys=False, width=WIDTH, allow_unicode=True)


def scalar_yaml(value: object, flow: bool) -> str:
    """The text :func:`spec_yaml` writes for the scalar ``value`` as an item of a one-line
    collection (``flow``) or as the value of a block mapping."""
    if flow:
        text = dump_styled(_FlowList([value]))
        return text[1 : text.rindex("]")]
    text = dump_styled({"k": value})
    return text[3:].removesuffix("\n")


@functools.cache
def _dumper():
    """The dumper :func:`spec_yaml` writes with, made once (libyaml's where PyYAML has it: same text)."""
    import yaml

    class Dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):
        pass

    def flow_map(dumper, data):
        return dumper.represent_mapping("tag:yaml.org,2002:map", data, flow_style=True)

    def flow_list(dumper, data):
        return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True)

    Dumper.add_representer(_FlowMap, flow_map)
    Dumper.add_representer(_FlowList, flow_list)
    return Dumper


class _FlowMap(dict):
    pass


class _FlowList(list):
    pass


def _styled(node: object, depth: int = 0) -> object:
    """Plain dicts and lists, those that fit on a short line marked to be written on one."""
    if isinstance(node, dict):
        items = {k: _styled(v, depth + 1) for k, v in node.items()}
        flat = depth > 1 and _short(node)
        return _FlowMap(items) if flat else items
    if isinstance(node, list):
        items = [_styled(v, depth + 1) for v in node]
        return _FlowList(items) if _short(node) else items
    return node


def _short(node: object) -> bool:
    """At most two levels of small collections of scalars (``{use: X, args: [1, 2]}``)."""

    def size(v: object, level: int) -> int | None:
        if isinstance(v, dict):
            parts = [size(x, level + 1) for x in v.values()]
            keys = sum(len(str(k)) + 2 for k in v)
        elif isinstance(v, list):
            parts = [size(x, level + 1) for x in v]
            keys = 0
        else:
            return len(str(v)) + 2
        if level > 2 or any(p is None for p in parts):
            return None
        return keys + sum(parts) + 2

    n = size(node, 1)
    return n is not None and n <= 90
