"""The double-gated short convolution, LFM2's replacement for attention in most layers.

A Llama block mixes tokens with attention in every layer. LFM2 does it in most layers with a
short causal convolution (kernel L = 3): each channel of token t sees only tokens t-2, t-1, t.
It is "double-gated" by two input-dependent gates, B before the conv and C after it:

    B, C, x = in_proj(h).split(3)         # one projection, three streams, in this order
    y = out_proj( C * conv(B * x) )       # conv is depthwise (one kernel per channel), causal

There is no activation anywhere. Decoding needs only the last L-1 values of B*x per channel,
so the cache of a conv layer has a constant size, however long the context; `decode_step` is
that one-token update.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .cache import HybridCache
from .config import LFM2Config
from .trace import Capture, record


class ShortConv(nn.Module):
    def __init__(self, config: LFM2Config, layer_idx: int) -> None:
        super().__init__()
        H, L = config.hidden_size, config.conv_L_cache
        self.layer_idx, self.kernel_size = layer_idx, L
        self.in_proj = nn.Linear(H, 3 * H, bias=config.conv_bias)  # -> B, C, x
        # Depthwise: groups=H, one kernel of L taps per channel, weight (H, 1, L).
        # Tap L-1 multiplies the current token, tap 0 the token L-1 steps back.
        self.conv = nn.Conv1d(H, H, kernel_size=L, groups=H, bias=config.conv_bias)
        self.out_proj = nn.Linear(H, H, bias=config.conv_bias)

    def forward(self, h: torch.Tensor, cache: HybridCache | None = None,
                pad_mask: torch.Tensor | None = None, capture: Capture | None = None) -> torch.Tensor:
        batch, T, H = h.shape  # h: (B, T, H), already normed
        name = f"layers.{self.layer_idx}.conv"
        if pad_mask is not None:  # left padding must not leak into the state of real tokens
            h = h * pad_mask[:, :, None].to(h.dtype)  # (B, T, H)
        B, C, x = self.in_proj(h).chunk(3, dim=-1)  # 3 x (B, T, H), in the order B, C, x
        Bx = B * x  # (B, T, H): gate before the conv
        record(capture, f"{name}.B", B)
        record(capture, f"{name}.C", C)
        record(capture, f"{name}.x", x)
        record(capture, f"{name}.Bx", Bx)

        past = cache.conv_state.get(self.layer_idx) if cache is not None else None
        if past is not None and T == 1:  # decoding: one new token against the cached values
            conv_t, cache.conv_state[self.layer_idx] = self.decode_step(Bx[:, 0], past)  # (B, H), (B, H, L-1)
            conv_out = conv_t[:, None]  # (B, 1, H)
        else:
            # Causal conv = conv over [the L-1 previous values, this chunk]. With no cache the
            # previous values are zeros: the left padding of a causal convolution.
            Bx = Bx.transpose(1, 2)  # (B, H, T): conv1d wants channels first
            if past is None:
                past = Bx.new_zeros(batch, H, self.kernel_size - 1)  # (B, H, L-1)
            window = torch.cat([past, Bx], dim=-1)  # (B, H, L-1+T)
            if cache is not None:
                # A copy of the last L-1 values: a slice would keep the whole (B, H, L-1+T) window alive.
                cache.conv_state[self.layer_idx] = window[:, :, window.shape[-1] - (self.kernel_size - 1):].clone()  # (B, H, L-1)
            # y[:, c, t] = sum_j w[c, 0, j] * window[:, c, t + j]  (+ bias[c])
            conv_out = F.conv1d(window, self.conv.weight, self.conv.bias, groups=H)  # (B, H, T)
            conv_out = conv_out.transpose(1, 2)  # (B, T, H)
        record(capture, f"{name}.conv_out", conv_out)

        return self.out_proj(C * conv_out)  # gate after the conv; (B, T, H)

    def decode_step(self, Bx_t: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One decoding step of the conv alone: this token's gated input Bx_t (B, H) and the cached
        last L-1 values state (B, H, L-1) -> (the conv output for this token (B, H), the new state).

        window = [state, Bx_t];  y[c] = sum_j w[c, j] * window[c, j] (+ bias[c]);  state = window[1:]
        """
        window = torch.cat([state, Bx_t[:, :, None]], dim=-1)  # (B, H, L): the cached values, then this token
        y = F.conv1d(window, self.conv.weight, self.conv.bias, groups=window.shape[1])  # (B, H, 1): one position
        # A copy, not a slice: a slice would keep the whole (B, H, L) window alive in the cache.
        return y[:, :, 0], window[:, :, 1:].clone()  # (B, H); (B, H, L-1): drop the oldest, the size never changes
