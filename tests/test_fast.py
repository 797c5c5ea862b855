"""The fast path (lfm2_edu.fast) against the readable path, its oracle, and int8 quantisation.

fp32, over the parity config matrix: prefill then decode gives the readable path's logits within
FP32_TOL, greedy generation the same tokens, left-padded batches the same tokens, on the dynamic
path and on the static-shape one (the code a CUDA graph records, run eagerly here). bf16: the fast
path is bit-identical to the readable one once its SDPA is swapped for the readable softmax, so
attention is the only place where the two round differently (SDPA keeps the scores in fp32; what
that changes on held-out text, benchmarks/decode_full.py prints). int8: every weight within half
a scale of its original.
"""

from __future__ import annotations

import math
import sys

import pytest
import torch

import lfm2_edu.fast as fast_mod
import lfm2_edu.generate as gen
from lfm2_edu import SHIPPED_MODEL, HybridCache, count_parameters, load_model
from lfm2_edu.checkpoint import SHIPPED_DIR
from lfm2_edu.fast import FastLFM2, StaticCache
from lfm2_edu.generate import generate
from lfm2_edu.quant import Int8Weight, compare_logits, quantize_int8, release_pages
from reference import PARITY_CONFIGS, tiny_config
from test_cache import random_model

C, A = "conv", "full_attention"
FP32_TOL = 1e-4  # max |logit difference| in fp32: only summation orders differ (SDPA, F.rms_norm)
DYNAMIC_AND_STATIC = pytest.mark.parametrize("static", [False, True], ids=["dynamic", "static"])


def model_for(name: str, dtype=torch.float32):
    return random_model(PARITY_CONFIGS[name], seed=len(name)).to_dtype(dtype)


def tokens(config, batch=2, T=12, seed=0):
    return torch.randint(3, config.vocab_size, (batch, T), generator=torch.Generator().manual_seed(seed))


def written_attention(q, k, v, attn_mask=None, is_causal=False, enable_gqa=False):
    """The readable path's attention (attention.py) behind SDPA's signature."""
    g = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1)
    scores = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))
    if is_causal:
        attn_mask = torch.ones(q.shape[2], k.shape[2], dtype=torch.bool).tril()
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, torch.finfo(scores.dtype).min)
    return torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype) @ v


def shipped_reference_inputs() -> dict[str, torch.Tensor]:
    """The shipped model's reference inputs (1, T) by domain: three short fixed texts."""
    from safetensors.torch import load_file

    refs = load_file(str(SHIPPED_DIR / SHIPPED_MODEL / "reference_logits.safetensors"))
    return {k.removesuffix(".input_ids"): v for k, v in refs.items() if k.endswith(".input_ids")}


def prefill_then_decode(run, cache, ids, prompt_len):
    """Logits (B, T, V) of every position: the prompt at once, then one token at a time."""
    steps = [run(ids[:, :prompt_len], cache=cache, logits="all").logits]
    steps += [run(ids[:, t:t + 1], cache=cache).logits for t in range(prompt_len, ids.shape[1])]
    return torch.cat(steps, dim=1)


# ----------------------------------------------------------------------- fp32: the parity matrix
@DYNAMIC_AND_STATIC
@pytest.mark.parametrize("name", list(PARITY_CONFIGS))
@torch.no_grad()
def test_prefill_then_decode_equals_readable(name, static):
    model = model_for(name)
    config = model.config
    ids = tokens(config)
    expected = model(ids).logits  # (B, T, V)
    fast = FastLFM2(model, static=static)
    cache = fast.new_cache(batch=2, capacity=4)  # too small on purpose: it grows by doubling
    got = prefill_then_decode(fast, cache, ids, prompt_len=5)
    diff = (got - expected).abs().max().item()
    assert diff <= FP32_TOL, f"max |logit difference| {diff:.2e} > {FP32_TOL}"
    assert cache.seq_len == 12 and cache.capacity == 16
    assert (model(ids).logits - expected).abs().max().item() == 0  # the readable path is unchanged


@DYNAMIC_AND_STATIC
@pytest.mark.parametrize("name", list(PARITY_CONFIGS))
@torch.no_grad()
def test_greedy_tokens_equal_readable(name, static):
    model = model_for(name)
    prompts = tokens(model.config, batch=2, T=6, seed=1).tolist()
    for settings in ({}, {"repetition_penalty": 1.3}):
        expected = [g.new_ids for g in generate(model, prompts, 16, stop_token_ids=[], **settings)]
        got = [g.new_ids for g in generate(FastLFM2(model, static=static), prompts, 16, stop_token_ids=[],
                                           **settings)]
        assert got == expected
    assert [g.new_ids for g in generate(model, prompts, 16, stop_token_ids=[], fast=True)] == [
        g.new_ids for g in generate(model, prompts, 16, stop_token_ids=[])]


@DYNAMIC_AND_STATIC
@pytest.mark.parametrize("name", ["moe-gqa-1dense", "moe-8b-pattern-untied", "dense-convbias-mqa",
                                  "moe-convbias-allconv"])
@pytest.mark.parametrize("chunk", [512, 3], ids=["one-prefill", "chunked-prefill"])
@torch.no_grad()
def test_left_padded_batch_equals_readable(name, static, chunk, monkeypatch):
    monkeypatch.setattr(gen, "PREFILL_CHUNK", chunk)
    model = model_for(name)
    g = torch.Generator().manual_seed(3)
    prompts = [torch.randint(3, model.config.vocab_size, (n,), generator=g).tolist() for n in (9, 1, 4, 7)]
    fast = FastLFM2(model, static=static)
    expected = [r.new_ids for r in generate(model, prompts, 12, stop_token_ids=[])]
    assert [r.new_ids for r in generate(fast, prompts, 12, stop_token_ids=[])] == expected
    assert [generate(fast, p, 12, stop_token_ids=[])[0].new_ids for p in prompts] == expected  # each alone


@DYNAMIC_AND_STATIC
@torch.no_grad()
def test_left_padded_logits_equal_readable(static):
    """At every real position (the outputs at pads are never used, and differ: see FastLFM2._forward),
    against the readable path's full forward. Row 2's padding runs past the prefill into decode
    steps: a pad fed alone must not enter the conv state either (the readable path zeroes pads
    only in chunks of more than one token, so its own token-by-token run would differ here)."""
    model = model_for("moe-8b-pattern-untied")
    ids = tokens(model.config, batch=3, T=10, seed=2)
    mask = torch.ones_like(ids)
    mask[1, :4], mask[2, :9] = 0, 0
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    expected = model(ids, attention_mask=mask, position_ids=positions).logits
    fast = FastLFM2(model, static=static)
    cache = fast.new_cache(batch=3, capacity=10)
    got = [fast(ids[:, :7], cache=cache, attention_mask=mask[:, :7], position_ids=positions[:, :7],
                logits="all").logits]
    for t in range(7, 10):
        got.append(fast(ids[:, t:t + 1], cache=cache, attention_mask=mask[:, :t + 1],
                        position_ids=positions[:, t:t + 1]).logits)
    real = mask.bool()
    assert (torch.cat(got, dim=1)[real] - expected[real]).abs().max().item() <= FP32_TOL


# ------------------------------------------------------------------------------------- bf16
@DYNAMIC_AND_STATIC
@pytest.mark.parametrize("name", ["moe-gqa-1dense", "moe-8b-pattern-untied", "dense-gqa"])
@torch.no_grad()
def test_bf16_bit_identical_to_readable_but_for_sdpa(name, static, monkeypatch):
    """Everything else (norms, conv step, cache, expert grouping, sum order) rounds as the readable path."""
    monkeypatch.setattr(fast_mod.F, "scaled_dot_product_attention", written_attention)
    model = model_for(name, torch.bfloat16)
    ids = tokens(model.config, T=10)
    cache = model.new_cache()
    expected = prefill_then_decode(lambda i, cache, logits="all": model(i, cache=cache), cache, ids, 6)
    fast = FastLFM2(model, static=static)
    assert torch.equal(prefill_then_decode(fast, fast.new_cache(2, 10), ids, 6), expected)


# ------------------------------------------------------------------------------------ the cache
@torch.no_grad()
def test_static_cache_serves_the_readable_model_too():
    model = random_model(tiny_config(), seed=1)
    ids = tokens(model.config, batch=2, T=11)
    expected = prefill_then_decode(lambda i, cache, logits="all": model(i, cache=cache), HybridCache(model.config),
                                   ids, 3)
    cache = StaticCache(model.config, batch=2, capacity=8, dtype=torch.float32)
    before = cache.memory_bytes()
    got = prefill_then_decode(lambda i, cache, logits="all": model(i, cache=cache), cache, ids, 3)
    assert torch.equal(got, expected)
    after = cache.memory_bytes()
    assert after["conv"] == before["conv"] and after["full_attention"] == 2 * before["full_attention"]  # 8 -> 16


def test_static_cache_bad_use_is_a_clear_error():
    config = tiny_config(max_position_embeddings=16)
    cache = StaticCache(config, batch=2, capacity=8, dtype=torch.float32)
    with pytest.raises(ValueError, match="at most max_position_embeddings=16"):
        cache.reserve(17)
    k = torch.zeros(3, config.num_key_value_heads, 1, config.head_dim)
    with pytest.raises(ValueError, match="expected a batch of 2 rows, found 3"):
        cache.update_kv(config.attention_layers[0], k, k)


# ------------------------------------------------------------------------------- the weights
def test_bytes_per_token_are_the_active_parameters():
    config = tiny_config(num_hidden_layers=6, layer_types=[C, C, A, C, C, A], num_dense_layers=2)  # tied
    model = random_model(config).to_dtype(torch.bfloat16)
    assert FastLFM2(model).bytes_per_token() == 2 * count_parameters(config).active
    int8 = FastLFM2(model, int8=True).bytes_per_token()
    assert int8 < 0.6 * 2 * count_parameters(config).active


@torch.no_grad()
def test_static_experts_are_views_of_one_stacked_tensor():
    model = model_for("moe-gqa-1dense")
    ids = tokens(model.config)
    expected = model(ids).logits
    fast = FastLFM2(model, static=True)
    for moe, (w13, w2) in fast.stacked.items():
        base = w13.untyped_storage().data_ptr()
        assert all(e.w1.weight.untyped_storage().data_ptr() == base for e in moe.experts)
        assert all(e.w2.weight.untyped_storage().data_ptr() == w2.untyped_storage().data_ptr() for e in moe.experts)
    assert torch.equal(model(ids).logits, expected)  # the readable path reads the same values


def test_dynamic_fast_path_holds_no_weights_of_its_own():
    model = model_for("moe-gqa-1dense")
    before = {n: p.data_ptr() for n, p in model.named_parameters()}
    fast = FastLFM2(model)
    assert fast.int8 == {} and fast.stacked == {}
    assert {n: p.data_ptr() for n, p in model.named_parameters()} == before


def test_bad_options_are_clear_errors():
    model = model_for("moe-gqa-1dense")
    with pytest.raises(ValueError, match="int8 weights run on the dynamic path only"):
        FastLFM2(model, int8=True, static=True)
    with pytest.raises(ValueError, match="a CUDA graph needs a model on CUDA"):
        FastLFM2(model, cuda_graph=True)
    with pytest.raises(TypeError, match="expected an LFM2Model"):
        FastLFM2("tiny-lfm2-moe")
    fast = FastLFM2(model)
    ids = tokens(model.config, batch=2, T=3)
    with pytest.raises(TypeError, match="expected a StaticCache"):
        fast(ids, cache=model.new_cache())
    with pytest.raises(ValueError, match="cache's 1 rows, found 2"):
        fast(ids, cache=fast.new_cache(batch=1))
    with pytest.raises(ValueError, match="expected 'last' or 'all'"):
        fast(ids, logits="first")
    with pytest.raises(ValueError, match="token ids in"):
        fast(ids + 1000)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bias", [False, True], ids=["no-bias", "bias"])
def test_conv_decode_agrees_with_short_conv_decode_step(dtype, bias):
    """The fast path's one-token conv is ShortConv.decode_step without conv1d: bit-identical in
    bf16, within fp32 rounding in fp32; its in-place state is decode_step's new state."""
    from lfm2_edu.conv import ShortConv

    config = tiny_config(conv_bias=bias)
    conv = random_model(config, seed=3).to_dtype(dtype).layers[config.conv_layers[0]].conv
    assert isinstance(conv, ShortConv)
    g = torch.Generator().manual_seed(1)
    H, L = config.hidden_size, config.conv_L_cache
    state = torch.randn(3, H, L - 1, generator=g).to(dtype)  # (B, H, L-1)
    Bx_t = torch.randn(3, H, generator=g).to(dtype)  # (B, H)
    expected, expected_state = conv.decode_step(Bx_t, state)
    window = torch.cat([state, Bx_t[:, :, None]], dim=-1)  # (B, H, L), as FastLFM2._conv builds it
    got = fast_mod.conv_window_sum(conv, window)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    if dtype == torch.bfloat16:
        assert torch.equal(got, expected)
    else:
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    assert torch.equal(window[:, :, 1:], expected_state)


def test_a_model_with_swapped_blocks_is_refused():
    """Inside `swapped`, a model's ShortConv is another class: the fast path, which runs its own
    code for the package's blocks, would ignore it, so it says so instead."""
    from lfm2_edu.conv import ShortConv
    from lfm2_edu.swap import swapped

    class TheirConv(ShortConv):
        pass

    with swapped(ShortConv=TheirConv):
        model = random_model(tiny_config(), seed=0)
    with pytest.raises(TypeError, match=r"expected a model of the package's own blocks, found layers\.\d+\.conv "
                                        r"\(test_fast\..*TheirConv\).*readable path"):
        FastLFM2(model)


# ------------------------------------------------------------------------------------- int8
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int8_round_trip_within_half_a_scale(dtype):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(300, 96, generator=g)
    w[3, 7] = 40.0  # an outlier: its row gets a large scale
    w[5] = 0.0  # an all-zero row
    w = w.to(dtype)
    q = quantize_int8(w)
    assert q.q.dtype == torch.int8 and q.scale.dtype == dtype and q.q.abs().max() <= 127
    amax = w.float().abs().amax(dim=1)
    assert (q.scale.float() >= amax / 127).all()  # rounded up: no weight is clipped
    err = (w.float() - q.q.float() * q.scale.float()[:, None]).abs()
    bound = q.scale.float()[:, None] / 2
    assert (err <= bound * (1 + 1e-5)).all(), f"worst error {(err / bound).max():.4f} half-scales"
    assert err[5].max() == 0
    assert torch.equal(q.dequantize(), (q.q.float() * q.scale.float()[:, None]).to(dtype))


def test_int8_matmul_reads_the_int8_weights():
    g = torch.Generator().manual_seed(1)
    q = quantize_int8(torch.randn(64, 128, generator=g))
    x = torch.randn(2, 5, 128, generator=g)
    assert torch.allclose(q(x), x @ q.dequantize().T, rtol=1e-5, atol=1e-4)
    ids = torch.tensor([[0, 63], [5, 5]])
    assert torch.equal(q.rows(ids), q.dequantize()[ids])


def test_int8_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="expected a 2-D floating point weight, found 1-D"):
        quantize_int8(torch.ones(4))
    with pytest.raises(ValueError, match="found 2-D torch.int64"):
        quantize_int8(torch.ones(4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"expected token ids \(N, T\)"):
        compare_logits(lambda i: i, lambda i: i, torch.ones(3, dtype=torch.long))


@torch.no_grad()
def test_int8_model_quantises_every_full_read_matrix_and_stays_close():
    model = model_for("moe-8b-pattern-untied")
    fast = FastLFM2(model, int8=True)
    names = {m: n for n, m in model.named_modules()}
    quantised = sorted(names[m] for m in fast.int8)
    assert "lm_head" in quantised and not any(n.endswith("feed_forward.gate") for n in quantised)
    assert len(quantised) == sum(isinstance(m, torch.nn.Linear) for m in model.modules()) - len(model.config.moe_layers)
    assert all(isinstance(w, Int8Weight) for w in fast.int8.values())
    ids = tokens(model.config, batch=2, T=12)
    cmp = compare_logits(lambda i: model(i).logits, fast.all_logits, ids)
    assert cmp.positions == 24 and 0 <= cmp.kl_mean < 1e-2 and cmp.top1_agreement >= 0.9, str(cmp)


@torch.no_grad()
def test_int8_on_the_shipped_model_keeps_its_predictions():
    """On trained weights: int8 changes the next token rarely. The shipped model's reference
    inputs (three short texts); the benchmark measures held-out windows."""
    refs = shipped_reference_inputs()
    model = load_model("tiny-lfm2-moe", dtype=torch.bfloat16)
    bf16, int8 = FastLFM2(model), FastLFM2(model, int8=True)
    for key, ids in refs.items():
        cmp = compare_logits(bf16.all_logits, int8.all_logits, ids)
        assert cmp.top1_agreement >= 0.85 and cmp.kl_mean < 0.05, f"{key}: {cmp}"


def test_release_pages_keeps_the_data(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    save_file({"w": torch.arange(1 << 20, dtype=torch.float32)}, str(tmp_path / "w.safetensors"))
    with safe_open(str(tmp_path / "w.safetensors"), "pt") as f:
        w = f.get_tensor("w")  # a view of the mapped file
        total = float(w.sum())
        released = release_pages(w)
        assert float(w.sum()) == total  # read back from the file
    assert released == sys.platform.startswith("linux")


# ------------------------------------------------------------------------------- CUDA graphs
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: the CUDA graph path needs one")
@torch.no_grad()
def test_cuda_graph_decode_equals_eager_static_decode():
    model = model_for("moe-8b-pattern-untied", torch.bfloat16).to("cuda")
    ids = tokens(model.config, T=10).cuda()
    eager, graph = FastLFM2(model, static=True, cuda_graph=False), FastLFM2(model, static=True, cuda_graph=True)
    a = prefill_then_decode(eager, eager.new_cache(2, 16), ids, 4)
    b = prefill_then_decode(graph, graph.new_cache(2, 16), ids, 4)
    assert (a.float() - b.float()).abs().max().item() <= 3e-2
    assert torch.equal(a[:, -1].argmax(-1), b[:, -1].argmax(-1))


# ---------------------------------------------------------------------------------- the CLI
@torch.no_grad()
def test_cli_generates_on_the_fast_path_by_default(tmp_path, capsys):
    from lfm2_edu.cli import main
    from test_tokenizer import chat_config, write_checkpoint

    folder = str(write_checkpoint(tmp_path / "moe", chat_config(), seed=5))
    argv = ["generate", "--model", folder, "--greedy", "--repetition-penalty", "1.0", "--max-new-tokens", "12",
            "--no-chat", "--stats", "Hello world"]
    outputs = {}
    for path, extra in (("fast path", []), ("readable path", ["--readable"]), ("fast path, int8 weights", ["--int8"])):
        assert main(argv + extra) == 0
        outputs[path], err = capsys.readouterr()
        assert f"; {path}]" in err
    assert outputs["fast path"] == outputs["readable path"]  # fp32: the same greedy tokens
    assert outputs["fast path, int8 weights"].strip()
    assert main(argv + ["--int8", "--readable"]) == 2
    assert "int8 weights are the fast path's" in capsys.readouterr().err
