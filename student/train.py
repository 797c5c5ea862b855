"""Chapter 10: the expert-bias update, LFM2-MoE's load balancing without an auxiliary loss.

Your version of lfm2_edu.train.update_expert_bias; train() calls it after every optimizer step.
Grade it: python -m student.grade --chapter 10
"""

from __future__ import annotations

import torch

from . import todo


@torch.no_grad()
def update_expert_bias(model, loads: dict[int, torch.Tensor], rate: float) -> None:
    """loads: MoE layer index -> tokens routed to each expert in this step (E,) (integers).
    In every layer listed, nudge model.layers[i].feed_forward.expert_bias (E,) fp32, in place:
    up by `rate` for an expert below the mean load, down by `rate` above it, unchanged at it."""
    todo("update_expert_bias", "train.py", "10")
