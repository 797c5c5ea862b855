"""Expected answers of chapter 03, RMSNorm and RoPE."""

from __future__ import annotations

import math

import torch

from ..exercises import exercise
from ..rope import rope_inv_freq


# ------------------------------------------------------------------------ 03 RMSNorm and RoPE
# fp32 inv_freq against a student's fp64 or fp32 arithmetic: relative rounding about 1e-7.
@exercise("03.1", atol=0.0, rtol=1e-5)
def _slowest_wavelength(config) -> float:
    return 2 * math.pi / rope_inv_freq(config.head_dim, config.rope_theta)[-1].item()  # positions per turn


@exercise("03.2", atol=0.0)  # the same subtraction in the same dtype as the student's: equal to the bit
def _gemma_weight(weight) -> torch.Tensor:
    return weight.detach() - 1


def _rope_adjacent(x, positions, theta):
    d = x.shape[-1]
    inv_freq = 1.0 / theta ** (torch.arange(0, d, 2).float() / d)  # (d/2,)
    angles = positions[:, None].float() * inv_freq  # (T, d/2): pair i of position m turns by m * inv_freq[i]
    a, b = x[..., 0::2].float(), x[..., 1::2].float()  # (T, d/2) each: channels 2i and 2i+1
    turned = torch.stack((a * angles.cos() - b * angles.sin(), b * angles.cos() + a * angles.sin()), dim=-1)  # (T, d/2, 2)
    return turned.flatten(-2).to(x.dtype)  # (T, d): back in the order 0, 1, 2, ...


def _rope_inputs(**_):
    g = torch.Generator().manual_seed(3)
    return [(torch.randn(5, 8, generator=g), torch.arange(5), 10_000.0),
            (torch.randn(3, 16, generator=g), torch.tensor([0, 7, 100]), 1e6)]


# fp32 sin/cos of angles up to 100 radians: rounding about 1e-5 of the values.
@exercise("03.3", atol=1e-4, inputs=_rope_inputs)
def _rope_adjacent_function(**_):
    return _rope_adjacent
