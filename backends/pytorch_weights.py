"""The weights of an inference build, in the generated file: its ``from_training_state_dict``.

An inference build (:func:`nasdsl.optimize.optimize`) records how its weights
come from the training model's as derivation steps (:mod:`nasdsl.passes.derive`).
The PyTorch writer gives the build's class a classmethod that replays them in
torch on a state_dict of the training model: one readable call per step
(``fold_batch_norm(state, "conv1.conv", "conv1.bn", 0.001)``,
``fold_batch_norm_transposed(state, "up", "up_bn", 1e-05, groups=2)``,
``join_layers(state, "inception3a.fused", (...))``) to functions the file
defines, then the result loaded by name (the build's modules sit where the
graph's nodes say, so its state_dict keys are the graph's names). The
functions compute as :func:`~nasdsl.passes.derive.derive_weights` does (factors
and biases in float64 rounded once, each weight times its factor in its own
dtype), so both give the same bits.
"""

from __future__ import annotations

import networkx as nx

from nasdsl import ir
from nasdsl.passes.derive import FoldNorm, JoinLayers
from nasdsl.weights import parameters

from .pyformat import Call, docstring, layout, literal

#: the classmethod that builds the model from the training model's weights
FROM_TRAINING = "from_training_state_dict"

_FOLD = (
    "def {fold}(",
    "    state: dict[str, torch.Tensor], layer: str, norm: str, eps: float",
    ") -> None:",
    '    """Fold the BatchNorm `norm` into `layer`, the convolution or linear layer before',
    "    it: with s = gamma / sqrt(running_var + eps), the weight becomes W * s (per output",
    "    channel) and the bias (b - running_mean) * s + beta. s and the bias are computed in",
    '    float64 and rounded once; W * s is one product in the weight\'s dtype."""',
    '    names = ("weight", "bias", "running_mean", "running_var")',
    '    gamma, beta, mean, var = (state.pop(f"{{norm}}.{{name}}").double() for name in names)',
    '    state.pop(f"{{norm}}.num_batches_tracked", None)',
    '    weight = state[f"{{layer}}.weight"]',
    '    bias = state.get(f"{{layer}}.bias")',
    "    scale = gamma / torch.sqrt(var + eps)",
    "    rows = scale.to(weight.dtype).reshape([-1] + [1] * (weight.dim() - 1))",
    '    state[f"{{layer}}.weight"] = weight * rows',
    "    bias = torch.zeros_like(mean) if bias is None else bias.double()",
    '    state[f"{{layer}}.bias"] = ((bias - mean) * scale + beta).to(weight.dtype)',
)
_FOLD_TRANSPOSED = (
    "def {fold}(",
    "    state: dict[str, torch.Tensor], layer: str, norm: str, eps: float, groups: int",
    ") -> None:",
    '    """Fold the BatchNorm `norm` into `layer`, the transposed convolution before it,',
    "    as a BatchNorm is folded into a convolution, but the weight, (C_in, C_out / groups,",
    "    *kernel), holds the output channels on its second axis, group by group: the input",
    "    channels of each group are scaled by the factors of that group's output channels.",
    '    s and the bias are computed in float64 and rounded once."""',
    '    names = ("weight", "bias", "running_mean", "running_var")',
    '    gamma, beta, mean, var = (state.pop(f"{{norm}}.{{name}}").double() for name in names)',
    '    state.pop(f"{{norm}}.num_batches_tracked", None)',
    '    weight = state[f"{{layer}}.weight"]',
    '    bias = state.get(f"{{layer}}.bias")',
    "    scale = gamma / torch.sqrt(var + eps)",
    "    blocks = weight.reshape([groups, -1, *weight.shape[1:]])",
    "    columns = scale.to(weight.dtype).reshape([groups, 1, -1] + [1] * (weight.dim() - 2))",
    '    state[f"{{layer}}.weight"] = (blocks * columns).reshape(weight.shape)',
    "    bias = torch.zeros_like(mean) if bias is None else bias.double()",
    '    state[f"{{layer}}.bias"] = ((bias - mean) * scale + beta).to(weight.dtype)',
)
_JOIN = (
    "def {join}(",
    "    state: dict[str, torch.Tensor], into: str, parts: tuple[str, ...]",
    ") -> None:",
    '    """Join layers that read the same tensor with the same window into one layer',
    "    `into`: weights and biases concatenated along the output channels, in the order",
    '    of `parts` (a zero bias for a part without one)."""',
    '    weights = [state.pop(f"{{part}}.weight") for part in parts]',
    '    biases = [state.pop(f"{{part}}.bias", None) for part in parts]',
    '    state[f"{{into}}.weight"] = torch.cat(weights)',
    "    if any(b is not None for b in biases):",
    '        state[f"{{into}}.bias"] = torch.cat(',
    "            [",
    "                w.new_zeros(w.shape[0]) if b is None else b.to(w.dtype)",
    "                for w, b in zip(weights, biases, strict=True)",
    "            ]",
    "        )",
)


class Replay:
    """The derivation of an inference build as generated code: the functions the file defines
    (named in the file's namespace, see ``names``) and the classmethod that calls them."""

    def __init__(self, g: nx.DiGraph, names):
        self.steps = ir.info(g).derivation
        kinds = {type(s) for s in self.steps}
        folds = [s for s in self.steps if isinstance(s, FoldNorm)]
        self.fold = names.create("fold_batch_norm") if any(not s.transposed_groups for s in folds) else None
        transposed = any(s.transposed_groups for s in folds)
        self.fold_transposed = names.create("fold_batch_norm_transposed") if transposed else None
        self.join = names.create("join_layers") if JoinLayers in kinds else None
        # buffers the model computes from its attributes (Swin's relative_position_index): a
        # training state_dict may leave them out (the ONNX path reads float tensors alone)
        computed = {k.rsplit(".", 1)[-1] for k, w in parameters(g, kinds=("buffer",)).items() if w.init == "computed"}
        self.own = ("num_batches_tracked", *sorted(computed))

    def functions(self) -> list[str]:
        """The module-level functions the steps call (blank lines between them)."""
        lines: list[str] = []
        if self.fold:
            lines += ["", "", *(line.format(fold=self.fold) for line in _FOLD)]
        if self.fold_transposed:
            lines += ["", "", *(line.format(fold=self.fold_transposed) for line in _FOLD_TRANSPOSED)]
        if self.join:
            lines += ["", "", *(line.format(join=self.join) for line in _JOIN)]
        return lines

    def method(self, class_name: str) -> list[str]:
        """The classmethod ``from_training_state_dict`` of the model class."""
        lines = ["    @classmethod"]
        lines += layout(
            "def ", Call(FROM_TRAINING, ("cls", "state_dict: dict[str, torch.Tensor]")), 1, f' -> "{class_name}":'
        )
        folds = sum(isinstance(s, FoldNorm) for s in self.steps)
        joins = sum(isinstance(s, JoinLayers) for s in self.steps)
        done = [f"folds {folds} BatchNorm layers" if folds else "", f"joins {joins} sets of layers" if joins else ""]
        what = " and ".join(d for d in done if d) or "takes the weights as they are"
        lines += docstring(
            f"The model holding the weights of a state_dict of the training model (its generated "
            f"module's keys; parts inference does not run, such as auxiliary heads, are ignored): "
            f"{what}. The result is in eval mode",
            2,
        )
        lines.append("        state = {key: value.detach() for key, value in state_dict.items()}")
        for step in self.steps:
            if isinstance(step, FoldNorm) and step.transposed_groups:
                args = ("state", f'"{step.layer}"', f'"{step.norm}"', literal(float(step.eps)))
                call = Call(self.fold_transposed, (*args, f"groups={step.transposed_groups}"))
            elif isinstance(step, FoldNorm):
                call = Call(self.fold, ("state", f'"{step.layer}"', f'"{step.norm}"', literal(float(step.eps))))
            else:
                parts = Call("", tuple(f'"{p}"' for p in step.parts) + (("",) if len(step.parts) == 1 else ()))
                call = Call(self.join, ("state", f'"{step.into}"', parts))
            lines += layout("", call, 2)
        lines += [
            "        model = cls()",
            "        weights = {key: state[key] for key in model.state_dict() if key in state}",
            "        missing = [",
            "            key",
            "            for key in model.state_dict()",
            f"            if key not in weights and not key.endswith({self._own()})",
            "        ]",
            "        if missing:",
            '            raise KeyError(f"the state_dict lacks the weights of {missing}")',
            "        model.load_state_dict(weights, strict=False)",
            "        return model.eval()",
        ]
        return lines

    def _own(self) -> str:
        """The endings of the keys the model fills itself, as the code writes them."""
        return f'"{self.own[0]}"' if len(self.own) == 1 else "(" + ", ".join(f'"{k}"' for k in self.own) + ")"


__all__ = ["FROM_TRAINING", "Replay"]
