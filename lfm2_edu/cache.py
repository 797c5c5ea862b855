"""The hybrid cache: what decoding one token at a time needs to remember.

- A conv layer remembers the last L-1 values of its gated input B*x per channel: (B, H, L-1).
  Its size never grows: a short convolution only looks L-1 tokens back.
- An attention layer remembers the keys (after q/k-norm and RoPE) and values of every token
  so far: (B, nkv, S, d) each, growing with the context. GQA keeps nkv < nh heads of them.

Prefill (the whole prompt at once) fills it; each decode step appends one token.
(transformers keeps L values per conv layer, one more than needed; the extra one is never used.)
"""

from __future__ import annotations

import torch

from .config import LFM2Config


class HybridCache:
    def __init__(self, config: LFM2Config) -> None:
        self.config = config
        self.seq_len = 0  # tokens seen so far = position of the next token
        self.conv_state: dict[int, torch.Tensor] = {}  # layer -> (B, H, L-1)
        self.keys: dict[int, torch.Tensor] = {}  # layer -> (B, nkv, S, d)
        self.values: dict[int, torch.Tensor] = {}  # layer -> (B, nkv, S, d)

    def update_kv(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append this chunk's keys/values (B, nkv, T, d); return all of them (B, nkv, S, d)."""
        if layer in self.keys:
            k = torch.cat([self.keys[layer], k], dim=2)  # (B, nkv, S_old + T, d)
            v = torch.cat([self.values[layer], v], dim=2)
        self.keys[layer], self.values[layer] = k, v
        return k, v

    def memory_bytes(self) -> dict[str, int]:
        """Bytes held, per layer type: the conv part is constant, the attention part grows."""
        conv = sum(t.numel() * t.element_size() for t in self.conv_state.values())
        attn = sum(t.numel() * t.element_size() for d in (self.keys, self.values) for t in d.values())
        return {"conv": conv, "full_attention": attn}

    def __repr__(self) -> str:
        mem = self.memory_bytes()
        return (f"HybridCache(seq_len={self.seq_len}, conv layers={len(self.conv_state)} "
                f"({mem['conv']} B), attention layers={len(self.keys)} ({mem['full_attention']} B))")
