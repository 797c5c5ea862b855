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
