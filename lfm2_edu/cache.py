"""The hybrid cache: what decoding one token at a time needs to remember.

- A conv layer remembers the last L-1 values of its gated input B*x per channel: (B, H, L-1).
  Its size never grows: a short convolution only looks L-1 tokens back.
- An attention layer remembers the keys (after q/k-norm and RoPE) and values of every token
  so far: (B, nkv, S, d) each, growing with the context. GQA keeps nkv < nh heads of them.

Prefill (the whole prompt at once) fills it; each decode step appends one token.
(transformers keeps L values per conv layer, one more than needed; the extra one is never used.)
`expected_cache_bytes` says from the config alone what the cache holds; `memory_bytes` counts it.
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
        """Bytes held, per layer type: the conv part is constant, the attention part grows.

        Counted as the storage each tensor keeps alive, not its visible size: a state kept as a
        slice of a larger tensor would hold all of it.
        """
        conv = sum(_storage_bytes(t) for t in self.conv_state.values())
        attn = sum(_storage_bytes(t) for d in (self.keys, self.values) for t in d.values())
        return {"conv": conv, "full_attention": attn}

    def __repr__(self) -> str:
        mem = self.memory_bytes()
        return (f"HybridCache(seq_len={self.seq_len}, conv layers={len(self.conv_state)} "
                f"({mem['conv']} B), attention layers={len(self.keys)} ({mem['full_attention']} B))")


def _storage_bytes(t: torch.Tensor) -> int:
    return t.untyped_storage().nbytes()


def expected_cache_bytes(config: LFM2Config, context_length: int, dtype: torch.dtype | int = torch.bfloat16,
                         batch: int = 1) -> dict[str, int]:
    """What a HybridCache holds after `context_length` tokens, from the config alone.

    Same keys as `HybridCache.memory_bytes()`. dtype: the activations' dtype, or its size in bytes
    per value. Conv layers keep (B, H, L-1) values each, whatever the length; attention layers
    keep K and V, (B, nkv, S, d) each. An empty cache (0 tokens) holds nothing.
    """
    if isinstance(dtype, torch.dtype):
        itemsize = dtype.itemsize
    elif isinstance(dtype, int) and not isinstance(dtype, bool) and dtype > 0:
        itemsize = dtype
    else:
        raise TypeError(f"dtype: expected a torch.dtype or a number of bytes per value, found {dtype!r}")
    for name, value in (("context_length", context_length), ("batch", batch)):
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "context_length" else 1):
            raise ValueError(f"{name}: expected an integer >= {0 if name == 'context_length' else 1}, found {value!r}")
    if context_length == 0:
        return {"conv": 0, "full_attention": 0}
    conv = len(config.conv_layers) * batch * config.hidden_size * (config.conv_L_cache - 1)  # (B, H, L-1) each
    kv = len(config.attention_layers) * 2 * batch * config.num_key_value_heads * context_length * config.head_dim
    return {"conv": conv * itemsize, "full_attention": kv * itemsize}  # kv: K and V, (B, nkv, S, d) each
