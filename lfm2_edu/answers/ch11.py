"""Expected answers of chapter 11, what the experts learn."""

from __future__ import annotations

from .. import routing
from ..exercises import exercise

# ------------------------------------------------------------------- 11 What the experts learn
# Shares and ratios up to E/k, computed in fp32 or fp64 by the student: 1e-4 covers the rounding.
@exercise("11.1", atol=1e-4)
def _most_arithmetic_expert(spec, layer: int, num_experts: int, k: int) -> tuple[int, float]:
    share = spec[layer]["arithmetic"]  # (E,)
    return int(share.argmax()), float(share.max()) / (k / num_experts)


@exercise("11.2", atol=1e-4)
def _coactivation_row_sum(coact, layer: int) -> float:
    return float(coact[layer].sum(-1).max())


# A simulation of 100,000 pairs: its standard error is below 0.002, so 0.01 is over 5 of them.
@exercise("11.3", atol=0.01)
def _any_shared_expert_baseline(num_experts: int, k: int) -> float:
    return routing.consecutive_baseline(num_experts, k)["any"]
