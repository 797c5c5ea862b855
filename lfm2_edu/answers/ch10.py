"""Expected answers of chapter 10, load balancing."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from .. import routing
from ..exercises import exercise
from ..train import load_balancing_loss, update_expert_bias

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


def _aux_inputs() -> list[tuple]:
    """Scores of a few shapes, with top-k choices and an alpha each (one of them uneven on purpose)."""
    g = torch.Generator().manual_seed(10)
    out = []
    for n, e, k, alpha in ((6, 4, 2, 0.01), (32, 8, 2, 0.1), (5, 16, 4, 1.0)):
        scores = torch.rand(n, e, generator=g)  # (N, E) in (0, 1), as sigmoid scores are
        out.append((scores, scores.topk(k, dim=-1).indices, alpha))
    skewed = torch.rand(10, 4, generator=g)
    out.append((skewed, torch.tensor([[0, 1]] * 10), 0.01))  # every token to experts 0 and 1
    return out


# The same sums in another order: fp32 rounding only.
@exercise("10.4", atol=1e-6, inputs=_aux_inputs)
def _auxiliary_loss():
    return load_balancing_loss
