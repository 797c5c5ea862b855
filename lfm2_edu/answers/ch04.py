"""Expected answers of chapter 04, the short convolution."""

from __future__ import annotations

import torch

from ..exercises import exercise
from ..params import attention_crossover


# -------------------------------------------------------------------- 04 The short convolution
def _conv_step(state, bx, w):
    window = torch.cat([state, bx[:, None]], dim=1)  # (H, L): the cached L-1 values, then this token
    return (w * window).sum(1), window[:, 1:]  # (H,) output; (H, L-1) the new state


def _step_inputs(**_):
    g = torch.Generator().manual_seed(4)
    return [(torch.randn(6, 2, generator=g), torch.randn(6, generator=g), torch.randn(6, 3, generator=g)),
            (torch.randn(4, 3, generator=g), torch.randn(4, generator=g), torch.randn(4, 4, generator=g))]


@exercise("04.1", atol=1e-6, inputs=_step_inputs)  # fp32 sums of 3 or 4 products
def _conv_step_function(**_):
    return _conv_step


@exercise("04.2")
def _crossover_with_multi_head_attention(config) -> int:
    return attention_crossover(config.replace(num_key_value_heads=config.num_attention_heads))


@exercise("04.3")
def _tap_with_most_weight(block) -> str:
    w = block.conv.weight[:, 0].detach().float()  # (H, L)
    L = w.shape[1]
    j = int(w.abs().mean(0).argmax())
    return "t" if j == L - 1 else f"t-{L - 1 - j}"  # tap j multiplies the token L-1-j steps back
