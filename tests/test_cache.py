"""Cached decoding (prefill, then token by token) equals the full forward pass."""

import pytest
import torch

from lfm2_edu import LFM2Config, LFM2Model
from lfm2_edu.cache import expected_cache_bytes
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
    assert cache.memory_bytes()["conv"] == conv_bytes == len(config.conv_layers) * H * (L - 1) * 4
    # each attention layer keeps K and V: 2 * nkv * d floats per token
    per_token = len(config.attention_layers) * 2 * config.num_key_value_heads * config.head_dim * 4
    assert kv_bytes == 5 * per_token
    assert cache.memory_bytes()["full_attention"] == 20 * per_token


@pytest.mark.parametrize("config", [
    tiny_config(),
    tiny_config(layer_types=[C, C, C, C], conv_L_cache=4),
    tiny_config(layer_types=[A, A, A, A], num_key_value_heads=1),
    tiny_config(model_type="lfm2", layer_types=[A, C, C, A], num_key_value_heads=4),
], ids=["mixed", "all-conv-L4", "all-attention-mqa", "dense-mha"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("batch,prompt_len", [(1, 1), (3, 2), (2, 40)])
@torch.no_grad()
def test_expected_cache_bytes_is_what_the_cache_holds(config, dtype, batch, prompt_len):
    model = random_model(config).to_dtype(dtype)
    cache = model.new_cache()
    assert cache.memory_bytes() == expected_cache_bytes(config, 0, dtype, batch)  # empty: nothing held
    ids = torch.randint(0, config.vocab_size, (batch, prompt_len + 4), generator=torch.Generator().manual_seed(3))
    model(ids[:, :prompt_len], cache=cache)  # prefill
    assert cache.memory_bytes() == expected_cache_bytes(config, prompt_len, dtype, batch)
    for t in range(prompt_len, ids.shape[1]):  # decode, one token at a time
        model(ids[:, t:t + 1], cache=cache)
        assert cache.memory_bytes() == expected_cache_bytes(config, t + 1, dtype, batch)
    assert expected_cache_bytes(config, 7, dtype.itemsize, batch) == expected_cache_bytes(config, 7, dtype, batch)


@torch.no_grad()
def test_a_long_prefill_leaves_only_the_last_values_in_the_conv_state():
    config = tiny_config()
    model = random_model(config)
    cache = model.new_cache()
    model(torch.randint(0, config.vocab_size, (1, 100)), cache=cache)
    for state in cache.conv_state.values():  # not a slice that keeps the whole (B, H, L-1+T) window alive
        assert state.untyped_storage().nbytes() == config.hidden_size * (config.conv_L_cache - 1) * 4


def test_expected_cache_bytes_of_lfm2_8b_a1b():
    eight = LFM2Config()  # the published config: 6 attention layers, 8 kv heads of 64, 18 conv layers
    one, many = expected_cache_bytes(eight, 1, torch.bfloat16), expected_cache_bytes(eight, 32768, torch.bfloat16)
    assert one["full_attention"] == 12 * 1024  # 12 KiB per token in bf16 (LFM2_FACTS 5)
    assert many["full_attention"] == 32768 * 12 * 1024 and many["conv"] == one["conv"] == 18 * 2048 * 2 * 2
    assert expected_cache_bytes(eight, 10, torch.float32, batch=4)["full_attention"] == 4 * 2 * 10 * 12 * 1024


@pytest.mark.parametrize("args,message", [
    ((-1, torch.float32, 1), r"context_length: expected an integer >= 0, found -1"),
    ((5, torch.float32, 0), r"batch: expected an integer >= 1, found 0"),
    ((5.0, torch.float32, 1), r"context_length: expected an integer >= 0, found 5.0"),
])
def test_expected_cache_bytes_rejects_bad_input(args, message):
    with pytest.raises(ValueError, match=message):
        expected_cache_bytes(tiny_config(), *args)
    with pytest.raises(TypeError, match=r"dtype: expected a torch.dtype or a number of bytes per value, found 'bf16'"):
        expected_cache_bytes(tiny_config(), 5, "bf16")


@torch.no_grad()
def test_one_token_steps_go_through_the_conv_decode_step():
    """With a cache, each one-token step of a conv layer is ShortConv.decode_step:
    (Bx_t (B, H), state (B, H, L-1)) in, (conv output (B, H), new state (B, H, L-1)) out."""
    config = tiny_config(conv_L_cache=4)
    model = random_model(config, seed=3)
    calls = []
    for layer in model.layers:
        if not layer.is_attention:
            def counted(Bx_t, state, step=layer.conv.decode_step):
                y, new_state = step(Bx_t, state)
                calls.append((tuple(Bx_t.shape), tuple(state.shape), tuple(y.shape), tuple(new_state.shape)))
                return y, new_state
            layer.conv.decode_step = counted
    ids = torch.randint(0, config.vocab_size, (2, 8), generator=torch.Generator().manual_seed(3))
    cache = model.new_cache()
    steps = [model(ids[:, :3], cache=cache).logits]  # the prefill does not decode
    assert calls == [], "ShortConv.forward called decode_step for a prefill of 3 tokens"
    steps += [model(ids[:, t:t + 1], cache=cache).logits for t in range(3, 8)]
    B, H, L = 2, config.hidden_size, config.conv_L_cache
    assert len(calls) == 5 * config.layer_types.count(C), "ShortConv.forward did not use decode_step for one-token steps"
    assert set(calls) == {((B, H), (B, H, L - 1), (B, H), (B, H, L - 1))}
    assert (torch.cat(steps, dim=1) - model(ids).logits).abs().max().item() <= 1e-5
