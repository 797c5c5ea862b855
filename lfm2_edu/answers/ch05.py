"""Expected answers of chapter 05, grouped-query attention."""

from __future__ import annotations

import torch

from ..cache import expected_cache_bytes
from ..exercises import exercise


# ------------------------------------------------------------------ 05 Grouped-query attention
@exercise("05.1")
def _kv_bytes_with_4_kv_heads(config) -> int:
    return expected_cache_bytes(config.replace(num_key_value_heads=4), 32768, torch.bfloat16)["full_attention"]


def _decode_mask(T: int, S: int) -> torch.Tensor:
    # the T queries are the last T of S positions: query t sits at S - T + t and sees keys up to it
    return torch.arange(S)[None, :] <= (S - T + torch.arange(T))[:, None]  # (T, S)


@exercise("05.2", inputs=lambda **_: [(3, 3), (1, 5), (2, 6), (4, 4), (1, 1)])
def _decode_mask_function(**_):
    return _decode_mask


@exercise("05.3")
def _most_attended_by_the_last_token(probs) -> int:
    return int(probs[0, -1].float().argmax())  # head 0, the last query row
