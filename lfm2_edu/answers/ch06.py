"""Expected answers of chapter 06, the mixture-of-experts layer."""

from __future__ import annotations

import torch

from ..exercises import exercise
from ..moe import mixing_weights


# ------------------------------------------------------------------- 06 The MoE layer
@exercise("06.1")
def _expert_parameters_of_one_layer(config) -> tuple[int, int]:
    # (stored, used per token) in one MoE layer: E experts, of which a token runs k; each SwiGLU has w1, w3 (I, H), w2 (H, I)
    per_expert = 3 * config.hidden_size * config.moe_intermediate_size
    return config.num_experts * per_expert, config.num_experts_per_tok * per_expert


def _route(scores: torch.Tensor, bias: torch.Tensor, k: int, norm_topk_prob: bool, routed_scaling_factor: float):
    selected = torch.topk(scores + bias, k, dim=-1).indices  # (T, k): the bias only chooses
    return selected, mixing_weights(scores, selected, norm_topk_prob, routed_scaling_factor)  # (T, k) from s


def _route_inputs() -> list[tuple]:
    g = torch.Generator().manual_seed(6)
    out = []
    for T, E, k, norm, scale in ((5, 8, 2, True, 1.0), (7, 16, 4, True, 2.5), (3, 6, 3, False, 1.0)):
        scores = torch.sigmoid(torch.randn(T, E, generator=g))  # (T, E)
        bias = 0.2 * torch.randn(E, generator=g)  # (E,): large enough to change choices
        out.append((scores, bias, k, norm, scale))
    return out


# fp32 on both sides, the same operations: only rounding of the last bits may differ.
@exercise("06.2", atol=1e-6, inputs=lambda: _route_inputs())
def _router_function():
    return _route


@exercise("06.3")
def _constant_shift_changes_nothing(moe, x) -> bool:
    # add 0.5 to every expert's bias: does any token's set of experts, or any weight, change?
    plain = moe.route(x)
    saved = moe.expert_bias
    try:
        moe.expert_bias = (saved if saved is not None else torch.zeros(moe.gate.out_features, device=x.device)) + 0.5
        shifted = moe.route(x)
    finally:
        moe.expert_bias = saved
    same_sets = torch.equal(plain.selected.sort(-1).values, shifted.selected.sort(-1).values)
    return not (same_sets and torch.equal(plain.weights.sort(-1).values, shifted.weights.sort(-1).values))


@exercise("06.4")
def _heaviest_expert_of_the_last_token(moe, x) -> int:
    r = moe.route(x)
    return int(r.selected[-1, r.weights[-1].argmax()])
