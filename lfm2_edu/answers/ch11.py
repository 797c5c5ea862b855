"""Expected answers of chapter 11, what the experts learn."""

from __future__ import annotations

from .. import routing
from ..exercises import exercise


# ------------------------------------------------------------------- 11 What the experts learn
# Shares and ratios up to E/k, computed in fp32 or fp64 by the student: 1e-4 covers the rounding.
@exercise("11.1", atol=1e-4)
def _least_visited_expert(spec, layer: int, domain: str, num_experts: int, k: int) -> tuple[int, float]:
    share = spec[layer][domain]  # (E,): the share of the domain's tokens that visit each expert
    return int(share.argmin()), float(share.min()) / (k / num_experts)


def _neighbour_inputs(selected, layer: int) -> list[tuple]:
    return [(selected[d][layer],) for d in selected]  # one (N, T, k) routing table per domain


# Shares of neighbouring pairs, in fp32 or fp64: 1e-6 covers the rounding.
@exercise("11.2", atol=1e-6, inputs=_neighbour_inputs)
def _same_first_choice(selected, layer: int):
    return lambda sel: routing.consecutive_share(sel)["first"]


@exercise("11.3", atol=1e-4)
def _any_shared_expert_baseline(config) -> float:
    return routing.consecutive_baseline(config.num_experts, config.num_experts_per_tok)["any"]


@exercise("11.4", atol=1e-4)
def _information_between_two_halves(selected, layer: int, domain: str, num_experts: int) -> float:
    # one domain's windows split into two made-up "domains": I(expert; half) in bits
    sel = selected[domain][layer]  # (N, T, k)
    half = sel.shape[0] // 2
    return routing.domain_information({"first half": sel[:half], "second half": sel[half:]}, num_experts)
