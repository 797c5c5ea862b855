"""Reference solution of student/train.py (chapter 10): the expert-bias update."""

from __future__ import annotations

import torch


@torch.no_grad()
def update_expert_bias(model, loads: dict[int, torch.Tensor], rate: float) -> None:
    for i, load in loads.items():
        bias = model.layers[i].feed_forward.expert_bias  # (E,) fp32
        load = load.to(bias.device, torch.float32)
        bias += rate * torch.sign(load.mean() - load)  # (E,): b_i += u * sign(mean_load - load_i)
