"""The expected answers of the chapters' exercises, computed from what each chapter passes in.

Each function is registered under its exercise's key ("NN.i") with the tolerance its check uses;
a chapter's check cell calls `check_exercise("NN.i", answer, **what it needs)` and so never holds
the answer itself. The solutions cells call the same checks. Reading this file is reading the
solutions: students, try the exercise first.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

from . import routing
from .exercises import exercise
from .train import update_expert_bias


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
