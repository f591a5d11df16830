"""How ONNX files name the modules their nodes come from: torch.onnx.export's TorchScript
exporter in node names (``/layer1/layer1.0/conv1/Conv``), the dynamo exporter in each node's
metadata. Read by the ONNX frontend, its op table and its attention regions alike."""

from __future__ import annotations

#: the node metadata of PyTorch's dynamo exporter (torch.onnx.export(..., dynamo=True)): the
#: module path at each level of the call (``['', 'layer1', 'layer1.0', 'layer1.0.bn1', 'fx_node']``)
#: and the class at each level
NAME_SCOPES, CLASS_HIERARCHY = "pkg.torch.onnx.name_scopes", "pkg.torch.onnx.class_hierarchy"


def metadata(node) -> dict[str, str]:
    return {p.key: p.value for p in node.metadata_props}


def listed(text: str) -> list[str] | None:
    """A metadata list, written as Python's repr of a list of strings, read as data."""
    import ast

    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return None
    return value if isinstance(value, list) and all(isinstance(v, str) for v in value) else None


def torch_scope(name: str) -> tuple[str, str]:
    """``/layer2/layer2.0/downsample/downsample.0/Conv`` -> ``layer2.0.downsample.0``, ``Conv``."""
    parts = [p for p in name.split("/") if p]
    if not parts:
        return "", ""
    op, scopes = parts[-1], parts[:-1]
    path: list[str] = []
    for s in scopes:
        if path and s.startswith(path[-1] + "."):
            path[-1] = s
        else:
            path.append(s)
    return ".".join(path), op
