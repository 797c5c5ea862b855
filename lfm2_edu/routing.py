"""Routing statistics: plain functions over tables of chosen experts.

A routing table is the (N, k) tensor of experts chosen for N tokens at one MoE layer (best first),
as `Capture("layers.{i}.moe.selected")` records it (flatten the batch and time dimensions).
"""

from __future__ import annotations

import torch


def expert_load(selected: torch.Tensor, num_experts: int) -> torch.Tensor:
    """Tokens routed to each expert: (E,) counts over all k slots."""
    return torch.bincount(selected.flatten().long(), minlength=num_experts)


def max_violation(load: torch.Tensor) -> float:
    """MaxVio = (max load - mean load) / mean load (Wang et al. 2024, Loss-Free Balancing).

    0 for a perfectly balanced layer; E - 1 when one expert takes every slot.
    """
    load = load.float()
    return float((load.max() - load.mean()) / load.mean())


def top_expert_share(selected: torch.Tensor, num_experts: int) -> tuple[int, float]:
    """The expert that most tokens of a set visit, and the share of those tokens that visit it.

    With uniform routing every expert is visited by a share k/E of the tokens.
    """
    load = expert_load(selected, num_experts)  # a token visits an expert at most once
    best = int(load.argmax())
    return best, float(load[best]) / selected.shape[0]
