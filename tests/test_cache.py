"""Cached decoding (prefill, then token by token) equals the full forward pass."""

import pytest
import torch

from lfm2_edu import LFM2Model
from reference import tiny_config

C, A = "conv", "full_attention"


def random_model(config, seed=0):
    torch.manual_seed(seed)
    model = LFM2Model(config).eval()
    with torch.no_grad():  # random everything, including norms and expert_bias
        for name, p in model.named_parameters():
            p.normal_(1.0 if "norm" in name else 0.0, 0.2 if "norm" in name else 0.1)
        for name, b in model.named_buffers():
            if name.endswith("expert_bias"):
                b.normal_(0.0, 0.3)
    return model


@pytest.mark.parametrize("config", [
    tiny_config(),
    tiny_config(conv_bias=True, conv_L_cache=4, num_key_value_heads=1),
    tiny_config(model_type="lfm2", layer_types=[A, C, C, A]),
], ids=["moe", "moe-convbias-L4-mqa", "dense"])
@pytest.mark.parametrize("prompt_len", [1, 2, 7])
@torch.no_grad()
def test_prefill_then_decode_equals_full_forward(config, prompt_len):
    model = random_model(config)
    ids = torch.randint(0, config.vocab_size, (2, prompt_len + 9), generator=torch.Generator().manual_seed(1))
    full = model(ids).logits  # (B, T, V)
    cache = model.new_cache()
    steps = [model(ids[:, :prompt_len], cache=cache).logits]
    for t in range(prompt_len, ids.shape[1]):
        steps.append(model(ids[:, t:t + 1], cache=cache).logits)
    cached = torch.cat(steps, dim=1)
    assert cache.seq_len == ids.shape[1]
    assert (cached - full).abs().max().item() <= 1e-5


@torch.no_grad()
def test_chunked_prefill_equals_full_forward():
    config = tiny_config()
    model = random_model(config, seed=2)
    ids = torch.randint(0, config.vocab_size, (1, 15), generator=torch.Generator().manual_seed(2))
    cache = model.new_cache()
    chunks = [model(ids[:, a:b], cache=cache).logits for a, b in [(0, 4), (4, 5), (5, 11), (11, 15)]]
    assert (torch.cat(chunks, dim=1) - model(ids).logits).abs().max().item() <= 1e-5


@torch.no_grad()
def test_conv_state_is_constant_and_kv_grows():
    config = tiny_config()
    model = random_model(config)
    cache = model.new_cache()
    ids = torch.randint(0, config.vocab_size, (1, 20))
    model(ids[:, :5], cache=cache)
    conv_bytes = cache.memory_bytes()["conv"]
    kv_bytes = cache.memory_bytes()["full_attention"]
    for t in range(5, 20):
        model(ids[:, t:t + 1], cache=cache)
    H, L = config.hidden_size, config.conv_L_cache
    conv_layers = config.layer_types.count(C)
    assert cache.memory_bytes()["conv"] == conv_bytes == conv_layers * H * (L - 1) * 4
    # each attention layer keeps K and V: 2 * nkv * d floats per token
    per_token = config.layer_types.count(A) * 2 * config.num_key_value_heads * config.head_dim * 4
    assert kv_bytes == 5 * per_token
    assert cache.memory_bytes()["full_attention"] == 20 * per_token
