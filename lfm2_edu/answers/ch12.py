"""Expected answers of chapter 12, the MoE design space."""

from __future__ import annotations

import torch

from .. import variants
from ..exercises import exercise


@exercise("12.1")
def _switch_capacity() -> int:
    return variants.expert_capacity(1000, 64, 1, 1.25)


@exercise("12.2", atol=1e-3)
def _experts_touched_at_batch_8(config) -> float:
    return variants.uniform_experts_touched(config.num_experts, config.num_experts_per_tok, 8)


def _mixtral_inputs() -> list[tuple]:
    g = torch.Generator().manual_seed(12)
    return [(torch.randn(n, e, generator=g), k) for n, e, k in ((5, 8, 2), (16, 32, 4), (3, 4, 1))]


def _mixtral(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    r = variants.TopKSoftmax(k)(logits)
    return r.selected, r.weights


# Softmax of the same k logits: fp32 rounding only.
@exercise("12.3", atol=1e-6, inputs=_mixtral_inputs)
def _mixtral_router():
    return _mixtral


@exercise("12.4", atol=1e-6)
def _two_device_slowdown() -> float:
    return variants.expert_parallel_step(torch.tensor([50.0, 30, 10, 10]), 2)["slowdown"]
