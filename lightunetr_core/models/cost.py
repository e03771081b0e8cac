"""Parameter and compute cost of a network, counted by PyTorch's own ``torch.utils.flop_counter``.

PyTorch counts convolutions (transposed ones correctly: input elements × C_out/groups × k³) and
matrix products; normalisations, activations and element-wise ops are not counted. One MAC =
one multiply-add = 2 FLOPs. The paper's 4.29 G for Light-UNETR is a thop count, which over-counts
stride = kernel transposed convolutions by k³ (thop's convention, which the paper's 4.29 G uses); see the README.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass
class ModelCost:
    """Parameters and multiply-accumulates of one forward pass."""

    parameters: int
    macs: int
    input_shape: tuple[int, ...]
    macs_by_module: dict[str, int] = field(default_factory=dict)
    parameters_by_module: dict[str, int] = field(default_factory=dict)

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9

    def to_dict(self) -> dict:
        return {
            "parameters": self.parameters,
            "macs": self.macs,
            "gmacs": round(self.gmacs, 4),
            "input_shape": list(self.input_shape),
            "macs_by_module": self.macs_by_module,
            "parameters_by_module": self.parameters_by_module,
        }

    def format(self) -> str:
        lines = [
            f"input {tuple(self.input_shape)}",
            f"parameters {self.parameters:,}",
            f"MACs {self.macs:,} ({self.gmacs:.3f} G)",
            "by top-level module (parameters, GMAC):",
        ]
        for name in self.parameters_by_module:
            lines.append(
                f"  {name:<22} {self.parameters_by_module[name]:>10,}  {self.macs_by_module.get(name, 0) / 1e9:8.4f}"
            )
        return "\n".join(lines)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def measure_cost(model: nn.Module, input_shape: Sequence[int]) -> ModelCost:
    """Count parameters and MACs of ``model`` for one forward pass on a zero tensor of ``input_shape``
    (``(B, C, X, Y, Z)``), on the CPU, in eval mode, without gradients."""
    was_training = model.training
    model.eval()
    x = torch.zeros(tuple(input_shape), device=next(model.parameters()).device)
    counter = FlopCounterMode(display=False, depth=None)
    try:
        with torch.no_grad(), counter:
            model(x)
    finally:
        model.train(was_training)
    # Module names look like "LightUNETR.encoder_stages.0.1"; count each top-level child once, at
    # the first level below it that has a forward of its own (ModuleLists have none).
    children = dict(model.named_children())
    per_module: dict[str, int] = defaultdict(int)
    for module_name, counts in counter.get_flop_counts().items():
        parts = module_name.split(".")[1:]
        if not parts or parts[0] not in children:
            continue
        ancestors = [model.get_submodule(".".join(parts[:k])) for k in range(1, len(parts))]
        module = model.get_submodule(".".join(parts))
        if not isinstance(module, nn.ModuleList) and all(isinstance(a, nn.ModuleList) for a in ancestors):
            per_module[parts[0]] += sum(counts.values()) // 2
    params_by_module = {name: count_parameters(child) for name, child in model.named_children()}
    direct = sum(p.numel() for p in model.parameters(recurse=False))
    if direct:
        params_by_module["(own parameters)"] = direct
    return ModelCost(
        parameters=count_parameters(model),
        macs=counter.get_total_flops() // 2,
        input_shape=tuple(int(s) for s in input_shape),
        macs_by_module=dict(per_module),
        parameters_by_module=params_by_module,
    )
