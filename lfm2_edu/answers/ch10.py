"""Expected answers of chapter 10, load balancing."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from .. import routing
from ..exercises import exercise
from ..train import update_expert_bias

# ------------------------------------------------------------------------- 10 Load balancing
# b +/- 0.005 in fp32, answered in fp32 or fp64: only rounding of the last bits differs.
@exercise("10.1", atol=1e-6)
def _bias_after_one_update() -> torch.Tensor:
    fake = SimpleNamespace(layers={0: SimpleNamespace(feed_forward=SimpleNamespace(
        expert_bias=torch.tensor([0.0, 0.1, -0.1, 0.0, 0.05, 0.0])))})
    update_expert_bias(fake, {0: torch.tensor([30, 10, 20, 20, 0, 40])}, 0.005)
    return fake.layers[0].feed_forward.expert_bias


@exercise("10.2", atol=1e-6)
def _largest_maxvio(config) -> float:
    worst = torch.arange(config.num_experts_per_tok).repeat(100, 1)  # (100, k): every token, the same k experts
    return routing.max_violation(routing.expert_load(worst, config.num_experts))


@exercise("10.3")
def _worst_layer_without_the_update(balance) -> int:
    last = balance["max_violation"]  # layer -> MaxVio per logged step
    return max(last, key=lambda i: last[i][-1])
