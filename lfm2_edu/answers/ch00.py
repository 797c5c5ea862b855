"""Expected answers of chapter 00, welcome."""

from __future__ import annotations

import torch

from ..cache import expected_cache_bytes
from ..config import LFM2Config
from ..exercises import exercise
from ..params import count_parameters


# ------------------------------------------------------------------------------ 00 Welcome
@exercise("00.1")
def _cache_of_four_conversations(config) -> int:
    # conv states and K/V of a batch of 4 sequences of 4,096 tokens, bf16
    return sum(expected_cache_bytes(config, 4096, torch.bfloat16, batch=4).values())


@exercise("00.2")
def _active_with_top_8(config) -> int:
    return count_parameters(config.replace(num_experts_per_tok=8)).active


def _longest_context(config, budget_bytes: int) -> int:
    # conv states are paid once, K/V per token: the longest S with conv + S * kv <= budget
    one = expected_cache_bytes(config, 1, torch.bfloat16)
    return max(0, (budget_bytes - one["conv"]) // one["full_attention"])


def _budgets(**_):
    big, mha = LFM2Config(), LFM2Config().replace(num_key_value_heads=32)
    return [(big, 2**30), (big, 100 * 2**20), (big, 10**6), (mha, 2**30), (big, 150_000)]


@exercise("00.3", inputs=_budgets)
def _longest_context_function(**_):
    return _longest_context
