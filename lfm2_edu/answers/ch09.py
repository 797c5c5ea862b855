"""Expected answers of chapter 09, routing token by token."""

from __future__ import annotations

import torch

from .. import routing
from ..exercises import exercise

# ------------------------------------------------------------------- 09 Routing, token by token
@exercise("09.1")
def _closest_to_rerouting(table, layer: int, k: int) -> int:
    # the token whose k-th and (k+1)-th selection scores are closest
    return int(routing.selection_margin(table.layer(layer)["selection_scores"], k).argmin())


# fp32 arithmetic on the table's fp32 scores, whatever the model's dtype: only the last bits differ.
@exercise("09.2", atol=1e-6)
def _mixing_weights_of_the_last_token(table, config) -> torch.Tensor:
    v = table.layer(table.layers[0])
    w = v["scores"][-1][v["selected"][-1]]  # (k,): unbiased scores of the chosen experts
    if config.norm_topk_prob:
        w = w / (w.sum() + 1e-6)
    return w * config.routed_scaling_factor


@exercise("09.3")
def _first_choice_moved_by_the_bias(table) -> int:
    v = table.layer(table.layers[-1])
    return int((v["scores"].argmax(-1) != v["selected"][:, 0]).sum())


# KL of two runs of the same tokens: exactly 0 when nothing changes; 1e-6 allows a non-deterministic backend.
@exercise("09.4", atol=1e-6)
def _kl_of_rerouting_no_token(model, sequences) -> float:
    effect = routing.intervention_effect(model, sequences, lambda: routing.random_rerouting(model, 0.0))
    return float(effect["kl"].mean())
