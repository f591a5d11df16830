"""Rewrites of the flat graph that keep every value and make the scopes single-input blocks.

A spec block reads one value and makes one. Some sources compute the same network with
blocks that read several: torchvision's DenseNet passes each dense layer the list of every
earlier output and concatenates it inside the layer. Concatenation is associative, so

* a ``concat`` of one input is that input (:func:`drop_single_concats`);
* a ``concat`` whose inputs begin with another ``concat``'s inputs reads that one instead
  (:func:`fold_concat_prefixes`): ``cat(x, a, b) = cat(cat(x, a), b)``;
* a ``concat`` of a block's input and output, made outside the block, moves to the block's
  end (:func:`move_concats_into_blocks`): the next layer then reads one value;
* a merge of exactly the outputs of a list's entries, each reading the list's input (DeepLab's
  ASPP branches), moves into the list (:func:`move_merges_into_branches`): the list then makes
  one value.

None of these changes a value the model computes, nor a tensor's name (a concat holds none).
"""

from __future__ import annotations

from collections.abc import Iterable

from nasdsl.importer.flat import CLASS, CONTAINER, FlatModel, Node, join


def drop_single_concats(model: FlatModel) -> None:
    for node_id in [i for i, n in model.nodes.items() if n.op == "concat" and len(n.inputs) == 1]:
        _replace(model, node_id, model.nodes[node_id].inputs[0])


def fold_concat_prefixes(model: FlatModel) -> None:
    """Each concat that starts with the inputs of an earlier one reads that one instead."""
    seen: dict[tuple[str, ...], str] = {}
    for node in model.nodes.values():
        if node.op != "concat":
            continue
        for length in range(len(node.inputs) - 1, 1, -1):
            earlier = seen.get(tuple(node.inputs[:length]))
            if earlier is not None:
                node.inputs = [earlier, *node.inputs[length:]]
                break
        seen.setdefault(tuple(node.inputs), node.id)
        if len(node.inputs) >= 2:
            seen.setdefault(tuple(_expanded(model, node)), node.id)


def _expanded(model: FlatModel, node: Node) -> list[str]:
    """A concat's inputs with folded concats replaced by theirs, recursively."""
    out: list[str] = []
    for i in node.inputs:
        n = model.nodes.get(i)
        out.extend(_expanded(model, n) if n is not None and n.op == "concat" else [i])
    return out


def move_concats_into_blocks(model: FlatModel) -> None:
    """A concat of exactly a block's input and its output (in that order), made after the
    block in a sibling block or in its parent, moves to the block's end; in the parent only
    where other blocks of the class got theirs, so that all of them keep one structure."""
    moved_classes: set[str] = set()
    later: list[tuple[Node, str]] = []
    for node in list(model.nodes.values()):
        target = _block_for(model, node)
        if target is None:
            continue
        if node.scope == _parent(target):
            later.append((node, target))
            continue
        _move(model, node, target)
        moved_classes.add(model.scopes[target].cls_key)
    for node, target in later:
        if model.scopes[target].cls_key in moved_classes and _block_for(model, node) == target:
            _move(model, node, target)


def move_merges_into_branches(model: FlatModel) -> None:
    """A merge of exactly the outputs of a list's entries (an ``nn.ModuleList`` of branches that
    all read one value, DeepLab's ASPP ``convs``), in their order and read by nothing else,
    made after the list in its parent, moves into the list: the list is then one block, its
    branches joined, as a spec writes it."""
    for node in list(model.nodes.values()):
        if node.op not in ("concat", "add") or len(node.inputs) < 2:
            continue
        producer = model.nodes.get(node.inputs[0])
        if producer is None:
            continue
        for scope in _ancestors(producer.scope):
            if not scope or _parent(scope) != node.scope:
                continue
            if model.scopes[scope].kind != CONTAINER:
                break
            inputs, outputs = interface(model, scope)
            branches = sorted(_units(model, scope), key=lambda k: int(k) if k.isdigit() else -1)
            if (
                len(inputs) == 1
                and outputs == node.inputs
                and len(branches) == len(outputs)
                and all(b.isdigit() for b in branches)
                and all(model.nodes[o].id.startswith(f"{scope}.{b}") for o, b in zip(outputs, branches, strict=True))
                and all([n.id for n in model.nodes.values() if o in n.inputs] == [node.id] for o in outputs)
                and all(o not in {x.node for x in model.outputs} for o in outputs)
            ):
                _move(model, node, scope)
            break


def _block_for(model: FlatModel, node: Node) -> str | None:
    if node.op != "concat" or len(node.inputs) != 2:
        return None
    producer = model.nodes.get(node.inputs[1])
    if producer is None:
        return None
    for scope in _ancestors(producer.scope):
        if not scope or node.scope == scope or node.scope.startswith(scope + "."):
            return None
        if model.scopes[scope].kind not in (CLASS, CONTAINER):
            return None
        inputs, outputs = interface(model, scope)
        if outputs == [node.inputs[1]] and inputs == [node.inputs[0]]:
            readers = [n for n in model.nodes.values() if node.inputs[1] in n.inputs]
            if readers == [node] and node.inputs[1] not in {o.node for o in model.outputs}:
                return scope
    return None


def _move(model: FlatModel, node: Node, scope: str) -> None:
    taken = {n.name for n in model.nodes.values() if n.scope == scope} | set(model.scopes[scope].registration)
    taken |= {s.rsplit(".", 1)[-1] for s in model.scopes if _parent(s) == scope}
    name = "cat" if "cat" not in taken else next(f"cat_{k}" for k in range(1, 1 << 20) if f"cat_{k}" not in taken)
    new_id = join(scope, name)
    old_id = node.id
    node.scope, node.name, node.id = scope, name, new_id
    items = list(model.nodes.items())
    model.nodes.clear()
    for k, v in items:
        model.nodes[new_id if k == old_id else k] = v
    for n in model.nodes.values():
        n.inputs = [new_id if i == old_id else i for i in n.inputs]
    for out in model.outputs:
        if out.node == old_id:
            out.node = new_id


def _replace(model: FlatModel, node_id: str, by: str) -> None:
    del model.nodes[node_id]
    for n in model.nodes.values():
        n.inputs = [by if i == node_id else i for i in n.inputs]
    for out in model.outputs:
        if out.node == node_id:
            out.node = by


def _parent(path: str) -> str:
    return path.rsplit(".", 1)[0] if "." in path else ""


def _ancestors(scope: str) -> Iterable[str]:
    """``a.b.c``, ``a.b``, ``a``, then ``""``."""
    while scope:
        yield scope
        scope = _parent(scope)
    yield ""


def members(model: FlatModel, scope: str) -> list[Node]:
    prefix = scope + "."
    return [n for n in model.nodes.values() if n.scope == scope or n.scope.startswith(prefix)]


def interface(model: FlatModel, scope: str) -> tuple[list[str], list[str]]:
    """The values a scope reads from outside it and the values of it read outside (or
    returned), each in first-use order."""
    inside = members(model, scope)
    ids = {n.id for n in inside}
    reads: list[str] = []
    for n in inside:
        for i in n.inputs:
            if i not in ids and i not in reads:
                reads.append(i)
    used_outside = {i for n in model.nodes.values() if n.id not in ids for i in n.inputs if i in ids}
    used_outside |= {o.node for o in model.outputs if o.node in ids}
    return reads, [n.id for n in inside if n.id in used_outside]


def fill_list_gaps(model: FlatModel) -> None:
    """A numbered block (a list) whose numbers skip some before a layer with tensors gets an
    ``identity`` at each number skipped, so that the layer keeps its number: an exporter
    that folds BatchNorm into the convolution before it, or leaves dropout out, leaves
    ``classifier.1`` without a ``classifier.0``."""
    for path, scope in list(model.scopes.items()):
        if scope.kind != CONTAINER:
            continue
        units = _units(model, path)
        if not units or not all(k.isdigit() for k in units):
            continue
        holding = [int(k) for k, ids in units.items() if any(model.nodes[i].holds for i in ids)]
        present = {int(k) for k in units}
        for missing in sorted(k for k in range(max(holding, default=-1)) if k not in present):
            before = [k for k in present if k < missing]
            after = min(k for k in present if k > missing)
            inputs, _ = interface(model, path)
            if before:
                prev = str(max(before))
                ids = units[prev]
                if len(ids) == 1 and model.nodes[ids[0]].scope == path:
                    value = ids[0]
                else:
                    _, outs = interface(model, join(path, prev))
                    if len(outs) != 1:
                        break
                    value = outs[0]
            elif len(inputs) == 1:
                value = inputs[0]
            else:
                break
            new_id = join(path, str(missing))
            succ = [model.nodes[i] for i in units[str(after)]]
            first = min(n.order for n in succ)
            model.nodes[new_id] = Node(
                new_id,
                "identity",
                {},
                [value],
                model.node(value).shape,
                path,
                str(missing),
                source="an identity for a layer the exporter left out",
                order=first - 0.5,
            )
            for n in succ:
                n.inputs = [new_id if i == value else i for i in n.inputs]
            present.add(missing)
            units[str(missing)] = [new_id]
        items = sorted(model.nodes.items(), key=lambda kv: kv[1].order)
        model.nodes.clear()
        model.nodes.update(items)
        scope.registration = sorted({*scope.registration, *units}, key=lambda k: int(k) if k.isdigit() else -1)


def _units(model: FlatModel, path: str) -> dict[str, list[str]]:
    """The node ids under each direct child (node or scope) of a scope."""
    out: dict[str, list[str]] = {}
    prefix = path + "." if path else ""
    for n in model.nodes.values():
        if n.scope == path:
            out.setdefault(n.name, []).append(n.id)
        elif n.scope.startswith(prefix):
            out.setdefault(n.scope[len(prefix) :].split(".")[0], []).append(n.id)
    return out


def normalise(model: FlatModel) -> None:
    fill_list_gaps(model)
    drop_single_concats(model)
    fold_concat_prefixes(model)
    move_concats_into_blocks(model)
    move_merges_into_branches(model)
