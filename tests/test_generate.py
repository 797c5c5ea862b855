"""Generation: the logits processors one by one, greedy and seeded sampling against transformers'
`generate()`, left-padded batches against one prompt at a time, streaming, and bad settings."""

from __future__ import annotations

import math

import pytest
import torch

import lfm2_edu.generate as gen
from lfm2_edu import load_model
from lfm2_edu.generate import (Sampling, apply_min_p, apply_repetition_penalty, apply_temperature, apply_top_k,
                               apply_top_p, generate, generate_tokens, process_logits, stream)
from lfm2_edu.tokenizer import load_tokenizer
from reference import load_reference, require_transformers, tiny_config
from test_cache import random_model
from test_tokenizer import chat_config, write_checkpoint

C, A = "conv", "full_attention"
PROMPT = [1, 6, 50, 60, 70, 80, 7, 206, 6]


# ------------------------------------------------------------------------ processors, one by one
@pytest.fixture(scope="module")
def fixed():
    """Fixed logits (B, V) with ties and both signs, and the ids already in each row's context."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 50, generator=g) * 3  # (B, V)
    logits[0, 10:13] = logits[0].max() + 1  # a three-way tie at the top
    logits[1, :5] = -7.5  # a tie among negatives
    input_ids = torch.randint(0, 50, (3, 12), generator=g)  # (B, S)
    input_ids[1, :3] = torch.tensor([0, 1, 2])
    seen = torch.zeros(3, 50, dtype=torch.bool).scatter_(1, input_ids, True)
    return logits, input_ids, seen


def same(ours: torch.Tensor, theirs: torch.Tensor) -> bool:
    """Equal logits, with -inf (removed tokens) in the same places."""
    return bool(torch.equal(torch.isinf(ours), torch.isinf(theirs))
                and torch.allclose(ours[~torch.isinf(ours)], theirs[~torch.isinf(theirs)], rtol=0, atol=1e-6))


@pytest.mark.parametrize("penalty", [0.7, 1.05, 1.5])
def test_repetition_penalty_equals_transformers(fixed, penalty):
    lp = require_transformers().generation.logits_process
    logits, input_ids, seen = fixed
    theirs = lp.RepetitionPenaltyLogitsProcessor(penalty)(input_ids, logits.clone())
    ours = apply_repetition_penalty(logits, seen, penalty)
    assert same(ours, theirs)
    assert not torch.equal(ours, logits)


@pytest.mark.parametrize("temperature", [0.3, 1.0, 2.5])
def test_temperature_equals_transformers(fixed, temperature):
    lp = require_transformers().generation.logits_process
    logits, input_ids, _ = fixed
    assert same(apply_temperature(logits, temperature), lp.TemperatureLogitsWarper(temperature)(input_ids, logits))


@pytest.mark.parametrize("k", [1, 2, 5, 49, 50, 80])
def test_top_k_equals_transformers(fixed, k):
    lp = require_transformers().generation.logits_process
    logits, input_ids, _ = fixed
    ours = apply_top_k(logits, k)
    assert same(ours, lp.TopKLogitsWarper(k)(input_ids, logits))
    assert (~torch.isinf(ours)).sum(-1).min() >= min(k, 50)  # ties with the k-th stay too


@pytest.mark.parametrize("p", [0.01, 0.3, 0.8, 0.95, 1.0])
def test_top_p_equals_transformers(fixed, p):
    lp = require_transformers().generation.logits_process
    logits, input_ids, _ = fixed
    ours = apply_top_p(logits, p)
    assert same(ours, lp.TopPLogitsWarper(p)(input_ids, logits))
    assert (~torch.isinf(ours)).sum(-1).min() >= 1


@pytest.mark.parametrize("min_p", [0.0, 0.05, 0.15, 0.5, 1.0])
def test_min_p_equals_transformers(fixed, min_p):
    lp = require_transformers().generation.logits_process
    logits, input_ids, _ = fixed
    assert same(apply_min_p(logits, min_p), lp.MinPLogitsWarper(min_p)(input_ids, logits))


SETTINGS = [
    dict(temperature=0.7),
    dict(temperature=1.0, top_k=5),
    dict(temperature=1.3, top_p=0.8),
    dict(temperature=0.9, min_p=0.1),
    dict(temperature=1.0, repetition_penalty=1.3),
    dict(temperature=0.3, min_p=0.15, repetition_penalty=1.05),  # LFM2's recommended settings
    dict(temperature=1.2, top_k=20, top_p=0.9, min_p=0.02, repetition_penalty=1.1),
]


def their_processors(s: dict):
    """transformers' processors for these settings, in the order its generate() builds them."""
    lp = require_transformers().generation.logits_process
    chain = []
    if s.get("repetition_penalty", 1.0) != 1.0:
        chain.append(lp.RepetitionPenaltyLogitsProcessor(s["repetition_penalty"]))
    if s["temperature"] != 1.0:
        chain.append(lp.TemperatureLogitsWarper(s["temperature"]))
    if s.get("top_k"):
        chain.append(lp.TopKLogitsWarper(s["top_k"]))
    if s.get("top_p", 1.0) < 1.0:
        chain.append(lp.TopPLogitsWarper(s["top_p"]))
    if s.get("min_p") is not None:
        chain.append(lp.MinPLogitsWarper(s["min_p"]))
    return lp.LogitsProcessorList(chain)


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()))
def test_chain_and_seeded_draws_equal_transformers(fixed, settings):
    logits, input_ids, seen = fixed
    theirs = their_processors(settings)(input_ids, logits.clone())
    ours = process_logits(logits, seen, Sampling(**settings))
    assert same(ours, theirs)
    # The same generator draws the same tokens from both distributions, 200 times over.
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    draws_ours = [gen.choose(ours, Sampling(**settings), g1) for _ in range(200)]
    draws_theirs = [torch.multinomial(theirs.softmax(-1), 1, generator=g2).squeeze(1) for _ in range(200)]
    assert torch.equal(torch.stack(draws_ours), torch.stack(draws_theirs))


def test_greedy_is_argmax_after_repetition_penalty(fixed):
    logits, _, seen = fixed
    s = Sampling(temperature=0.0, top_k=3, top_p=0.5, min_p=0.2, repetition_penalty=1.5)
    assert torch.equal(gen.choose(process_logits(logits, seen, s), s),
                       apply_repetition_penalty(logits, seen, 1.5).argmax(-1))


# -------------------------------------------------------------------- against transformers generate()
@pytest.fixture(scope="module", params=["lfm2_moe", "lfm2"])
def pair(request, tmp_path_factory):
    """Our model and the reference, loaded from the same random checkpoint folder. Untied head:
    a random tied model mostly predicts its input token again, which would make a weak test."""
    require_transformers()
    changes = {"tie_word_embeddings": False}
    if request.param == "lfm2":
        changes.update(model_type="lfm2", layer_types=[A, C, C, A])
    folder = write_checkpoint(tmp_path_factory.mktemp("gen") / request.param, chat_config(**changes), seed=1)
    ref = load_reference(folder)
    ref.generation_config.eos_token_id = None
    return load_model(folder), ref, folder


def their_generate(ref, prompts, n, **kwargs):
    out = ref.generate(torch.tensor(prompts), max_new_tokens=n, pad_token_id=0, **kwargs)
    return out[:, len(prompts[0]):].tolist()


@torch.no_grad()
def test_greedy_equals_transformers_generate(pair):
    ours, ref, _ = pair
    prompts = [PROMPT, PROMPT[::-1]]  # equal lengths: no padding
    theirs = their_generate(ref, prompts, 40, do_sample=False, eos_token_id=None)
    got = [g.new_ids for g in generate(ours, prompts, 40, stop_token_ids=[])]
    assert got == theirs
    assert len(set(got[0])) > 8  # the model does not just repeat itself: a meaningful comparison
    assert generate(ours, PROMPT, 40, stop_token_ids=[])[0].new_ids == theirs[0]  # batch of one


@torch.no_grad()
def test_greedy_with_repetition_penalty_and_eos_equals_transformers(pair):
    ours, ref, _ = pair
    free = generate(ours, PROMPT, 32, stop_token_ids=[], repetition_penalty=1.2)[0].new_ids
    assert free == their_generate(ref, [PROMPT], 32, do_sample=False, eos_token_id=None, repetition_penalty=1.2)[0]
    stop = free[5]  # a token the run produces: generation must end at its first appearance
    first = free.index(stop)
    g = generate(ours, PROMPT, 32, stop_token_ids=[stop], repetition_penalty=1.2)[0]
    assert g.new_ids == free[:first + 1] and g.finish_reason == "stop"
    assert g.new_ids == their_generate(ref, [PROMPT], 32, do_sample=False, eos_token_id=stop,
                                       repetition_penalty=1.2)[0]


@pytest.mark.parametrize("settings", SETTINGS[:3] + SETTINGS[5:], 
                         ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()))
@torch.no_grad()
def test_seeded_sampling_equals_transformers_generate(pair, settings):
    """transformers draws from the global generator; seeding both alike gives the same tokens."""
    ours, ref, _ = pair
    prompts = [PROMPT, PROMPT[::-1]]
    got = [g.new_ids for g in generate(ours, prompts, 24, stop_token_ids=[], seed=11, **settings)]
    torch.manual_seed(11)
    # top_k=0: transformers samples with top_k=50 unless told otherwise.
    assert got == their_generate(ref, prompts, 24, do_sample=True, eos_token_id=None, **{"top_k": 0, **settings})


# --------------------------------------------------------------------------------- left padding
@pytest.mark.parametrize("config", [tiny_config(tie_word_embeddings=False),
                                    tiny_config(model_type="lfm2", layer_types=[A, C, C, A], tie_word_embeddings=False),
                                    tiny_config(conv_L_cache=4, num_key_value_heads=1, tie_word_embeddings=False)],
                         ids=["moe", "dense", "L4-mqa"])
@pytest.mark.parametrize("chunk", [512, 3], ids=["one-prefill", "chunked-prefill"])
@torch.no_grad()
def test_left_padded_batch_equals_one_by_one(config, chunk, monkeypatch):
    monkeypatch.setattr(gen, "PREFILL_CHUNK", chunk)
    model = random_model(config, seed=4)
    g = torch.Generator().manual_seed(3)
    prompts = [torch.randint(3, config.vocab_size, (n,), generator=g).tolist() for n in (9, 1, 4, 7)]
    for settings in ({}, {"repetition_penalty": 1.3}):
        batch = generate(model, prompts, 20, stop_token_ids=[], **settings)
        alone = [generate(model, p, 20, stop_token_ids=[], **settings)[0] for p in prompts]
        assert [b.new_ids for b in batch] == [a.new_ids for a in alone]
        assert len({tuple(b.new_ids) for b in batch}) == len(prompts)


@torch.no_grad()
def test_left_padded_positions_start_at_each_rows_first_token(monkeypatch):
    """RoPE sees only distances, so shifted positions would give the same tokens up to rounding;
    they are checked directly: as in transformers, each row counts from its first real token."""
    model = random_model(tiny_config(), seed=0)
    calls = []
    forward = model.forward
    monkeypatch.setattr(model, "forward", lambda ids, **kw: calls.append(kw) or forward(ids, **kw))
    generate(model, [[5, 6, 7, 8], [9, 10]], 3, stop_token_ids=[])
    assert calls[0]["position_ids"].tolist() == [[0, 1, 2, 3], [0, 0, 0, 1]]
    assert calls[0]["attention_mask"].tolist() == [[1, 1, 1, 1], [0, 0, 1, 1]]
    assert [c["position_ids"].tolist() for c in calls[1:]] == [[[4], [2]], [[5], [3]]]
    assert calls[-1]["attention_mask"].tolist() == [[1] * 6, [0, 0, 1, 1, 1, 1]]
    calls.clear()
    generate(model, [[5, 6], [9, 10]], 2, stop_token_ids=[])  # no padding: the plain path
    assert all(c["position_ids"] is None and c["attention_mask"] is None for c in calls)


@torch.no_grad()
def test_batch_rows_stop_independently():
    model = random_model(tiny_config(tie_word_embeddings=False), seed=4)
    prompts = [[5, 9, 11], [40, 2, 17, 33, 8]]
    free = [g.new_ids for g in generate(model, prompts, 12, stop_token_ids=[])]
    stop = free[0][3]
    batch = generate(model, prompts, 12, stop_token_ids=[stop])
    for row, g in zip(free, batch):
        n = row.index(stop) + 1 if stop in row else len(row)
        assert g.new_ids == row[:n]
        assert g.finish_reason == ("stop" if stop in row else "length")
    steps = list(generate_tokens(model, prompts, 12, stop_token_ids=[stop]))
    assert [s[0] for s in steps[:len(batch[0].new_ids)]] == batch[0].new_ids
    assert all(s[0] is None for s in steps[len(batch[0].new_ids):])  # finished rows yield None


@torch.no_grad()
def test_context_limit_ends_generation():
    model = random_model(tiny_config(max_position_embeddings=16), seed=0)
    g = generate(model, list(range(3, 13)), 50, stop_token_ids=[])[0]  # 10 prompt tokens
    assert len(g.new_ids) == 16 - 10 + 1 and g.finish_reason == "context"
    assert generate(model, list(range(3, 19)), 5, stop_token_ids=[])[0].new_ids  # exactly full: one token


@torch.no_grad()
def test_seed_reproducible():
    model = random_model(tiny_config(), seed=0)
    runs = [generate(model, PROMPT[:5], 16, temperature=1.5, seed=s, stop_token_ids=[])[0].new_ids
            for s in (1, 1, 2)]
    assert runs[0] == runs[1] != runs[2]


# ------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("kwargs,match", [
    (dict(temperature=-0.1), "temperature: expected 0 .greedy. or a positive"),
    (dict(temperature=float("nan")), "temperature: expected a number"),
    (dict(top_p=0.0), r"top_p: expected a number in \(0, 1\]"),
    (dict(top_p=1.5), r"top_p: expected a number in \(0, 1\]"),
    (dict(top_k=-1), "top_k: expected None, 0"),
    (dict(top_k=2.5), "top_k: expected None, 0"),
    (dict(min_p=1.5), r"min_p: expected a number in \[0, 1\]"),
    (dict(repetition_penalty=0.0), "repetition_penalty: expected a positive"),
    (dict(max_new_tokens=0), "max_new_tokens: expected a positive integer"),
    (dict(stop_token_ids=[97]), r"stop_token_ids: expected token ids in \[0, 97\)"),
])
def test_bad_settings_are_clear_errors(kwargs, match):
    model = random_model(tiny_config(), seed=0)
    with pytest.raises(ValueError, match=match):
        generate(model, [1, 2, 3], **{"max_new_tokens": 4, **kwargs})


def test_bad_prompts_are_clear_errors():
    model = random_model(tiny_config(max_position_embeddings=16), seed=0)
    with pytest.raises(ValueError, match="prompt: expected at least one token, found an empty prompt"):
        generate(model, [], 4)
    with pytest.raises(ValueError, match="prompt 1: expected at least one token"):
        generate(model, [[1, 2], []], 4)
    with pytest.raises(ValueError, match="at most max_position_embeddings=16 tokens, found a prompt of 17"):
        generate(model, list(range(17)), 4)
    with pytest.raises(ValueError, match=r"expected token ids in \[0, 97\), found \[97\]"):
        generate(model, [1, 97], 4)
    with pytest.raises(TypeError, match="encode text with the tokenizer first"):
        generate(model, "Hello", 4)


# ------------------------------------------------------------------------------------ streaming
class ByteTokenizer:
    """Token = one UTF-8 byte: every multi-byte character is split across tokens."""

    def decode(self, ids, skip_special_tokens=True):
        return bytes(ids).decode("utf-8", errors="replace")


def test_incremental_decoder_waits_for_whole_characters():
    text = "aé🙂 b日本\n🦩!"
    decoder = gen.IncrementalDecoder(ByteTokenizer())
    pieces = [decoder.push(b) for b in text.encode()]
    pieces.append(decoder.flush())
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)
    assert pieces[1:3] == ["", "é"]  # "é" is two bytes: nothing after the first


def test_incremental_decoder_flushes_an_unfinished_character():
    decoder = gen.IncrementalDecoder(ByteTokenizer())
    assert [decoder.push(b) for b in b"ok\xf0\x9f"] == ["o", "k", "", ""]
    assert decoder.flush() == "\ufffd"


@torch.no_grad()
def test_stream_equals_decoded_generation(tmp_path):
    folder = write_checkpoint(tmp_path / "ckpt", chat_config(tie_word_embeddings=False), seed=2)
    model, tok = load_model(folder), load_tokenizer(folder)
    ids = tok.apply_chat_template([{"role": "user", "content": "Café 🙂?"}], add_generation_prompt=True)
    result = []
    pieces = list(stream(model, tok, ids, 30, temperature=1.0, seed=3, result=result))
    new_ids = generate(model, ids, 30, temperature=1.0, seed=3)[0].new_ids
    assert result[0].new_ids == new_ids
    assert "".join(pieces) == tok.decode(new_ids, skip_special_tokens=True)
    assert len(pieces) > 1  # it really streamed
    with pytest.raises(ValueError, match="expected one prompt, found 2"):
        next(stream(model, tok, [ids, ids]))


def test_recommended_settings_are_valid():
    s = Sampling(**gen.RECOMMENDED)
    assert not s.greedy and math.isclose(s.temperature, 0.3)
