"""Reading hub config.json files: both model types, legacy keys, validation errors."""

import json
import os

import pytest

from lfm2_edu import ConfigError, LFM2Config
from reference import require_transformers

# LFM2-8B-A1B's config.json as published (the fields the model reads).
LFM2_8B_A1B = {
    "architectures": ["Lfm2MoeForCausalLM"], "model_type": "lfm2_moe", "vocab_size": 65536,
    "hidden_size": 2048, "intermediate_size": 7168, "moe_intermediate_size": 1792,
    "num_hidden_layers": 24, "num_attention_heads": 32, "num_key_value_heads": 8,
    "num_dense_layers": 2, "num_experts": 32, "num_experts_per_tok": 4, "use_expert_bias": True,
    "norm_topk_prob": True, "routed_scaling_factor": 1.0, "norm_eps": 1e-5, "conv_L_cache": 3,
    "conv_bias": False, "rope_theta": 1000000.0, "max_position_embeddings": 128000,
    "tie_embedding": True, "bos_token_id": 1, "eos_token_id": 7, "pad_token_id": 0,
    "layer_types": ["full_attention" if i in (2, 6, 10, 14, 18, 21) else "conv" for i in range(24)],
}


def dense_config(block_ff_dim, auto_adjust=True, **extra):
    """A dense LFM2 config in the legacy style of the LFM2 releases."""
    return {"model_type": "lfm2", "vocab_size": 65536, "hidden_size": 1024, "num_hidden_layers": 16,
            "num_attention_heads": 16, "num_key_value_heads": 8, "block_ff_dim": block_ff_dim,
            "block_auto_adjust_ff_dim": auto_adjust, "block_ffn_dim_multiplier": 1.0,
            "block_multiple_of": 256, "full_attn_idxs": [2, 5, 8, 10, 12, 14], "tie_embedding": True,
            "rope_theta": 1000000.0, **extra}


def test_published_8b_a1b_config_equals_the_defaults():
    assert LFM2Config.from_hub_dict(LFM2_8B_A1B) == LFM2Config()


def test_both_spellings_of_the_rope_base():
    old = LFM2Config.from_hub_dict(dict(LFM2_8B_A1B, rope_theta=5e5))
    new = dict(LFM2_8B_A1B, rope_parameters={"rope_theta": 5e5, "rope_type": "default"})
    del new["rope_theta"]
    assert old.rope_theta == LFM2Config.from_hub_dict(new).rope_theta == 5e5


@pytest.mark.parametrize("block_ff_dim, auto_adjust, width", [
    (6656, True, 4608),   # LFM2-350M: int(2*6656/3) = 4437, rounded up to a multiple of 256
    (10240, True, 6912),  # LFM2-700M
    (12288, True, 8192),  # LFM2-1.2B
    (10752, False, 10752),  # LFM2-2.6B: auto-adjust off, used as is
])
def test_dense_legacy_mlp_width(block_ff_dim, auto_adjust, width):
    raw = dense_config(block_ff_dim, auto_adjust)
    config = LFM2Config.from_hub_dict(raw)
    assert config.intermediate_size == width
    assert [i for i, t in enumerate(config.layer_types) if t == "full_attention"] == [2, 5, 8, 10, 12, 14]
    assert not config.is_moe and config.tie_word_embeddings
    transformers = require_transformers()
    from transformers.models.lfm2.modeling_lfm2 import Lfm2MLP
    assert Lfm2MLP(transformers.Lfm2Config(**raw)).w1.out_features == width  # the reference agrees


def test_dense_with_layer_types_and_untied():
    raw = dense_config(12288, layer_types=["conv"] * 15 + ["full_attention"], tie_word_embeddings=False)
    config = LFM2Config.from_hub_dict(raw)
    assert config.layer_types[-1] == "full_attention" and config.layer_types.count("conv") == 15
    assert not config.tie_word_embeddings


def test_round_trip_through_hub_dict():
    for config in [LFM2Config(), LFM2Config.from_hub_dict(dense_config(6656))]:
        assert LFM2Config.from_hub_dict(json.loads(json.dumps(config.to_hub_dict()))) == config


def broken(**changes):
    raw = dict(LFM2_8B_A1B, **changes)
    return {k: v for k, v in raw.items() if v is not ...}


@pytest.mark.parametrize("raw, message", [
    (broken(layer_types=...), r"'layer_types': expected a list of 'conv'/'full_attention' per layer \(required for lfm2_moe\), found it missing"),
    (broken(layer_types=["conv"] * 23 + ["sliding_attention"]), r"'layer_types\[23\]': expected one of \['conv', 'full_attention'\], found 'sliding_attention'"),
    (broken(layer_types=["conv"] * 20), r"'layer_types': expected a list of num_hidden_layers=24 entries"),
    (broken(num_attention_heads=30), r"'num_attention_heads': expected a divisor of hidden_size=2048, found 30"),
    (broken(num_key_value_heads=5), r"'num_key_value_heads': expected a divisor of num_attention_heads=32, found 5"),
    (broken(num_experts_per_tok=40), r"'num_experts_per_tok': expected at most num_experts=32, found 40"),
    (broken(num_dense_layers=30), r"'num_dense_layers': expected an integer from 0 to num_hidden_layers=24, found 30"),
    (broken(hidden_size=-8), r"'hidden_size': expected a positive integer of at most 65,536, found -8"),
    (broken(hidden_size="2048"), r"'hidden_size': expected a positive integer of at most 65,536, found '2048'"),
    (broken(hidden_size=True), r"'hidden_size': expected a positive integer of at most 65,536, found True"),
    (broken(num_experts=10**6), r"'num_experts': expected a positive integer of at most 4,096, found 1000000"),
    (broken(num_hidden_layers=10**6), r"'num_hidden_layers': expected a positive integer of at most 1,024, found 1000000"),
    (broken(vocab_size=2**40), r"'vocab_size': expected a positive integer of at most 2,097,152"),
    (broken(use_expert_bias="false"), r"'use_expert_bias': expected true or false, found 'false'"),
    (broken(tie_embedding=1), r"'tie_word_embeddings': expected true or false, found 1"),
    (broken(rope_theta=float("inf")), r"'rope_theta': expected a finite number greater than 1, found inf"),
    (broken(norm_eps=float("nan")), r"'norm_eps': expected a positive number, found nan"),
    (broken(routed_scaling_factor=float("inf")), r"'routed_scaling_factor': expected a positive number, found inf"),
    (broken(bos_token_id=True), r"'bos_token_id': expected a token id in \[0, vocab_size=65536\) or null, found True"),
    (broken(layer_types=["conv"] * 100_000), r"'layer_types': expected a list of num_hidden_layers=24 entries, "
                                              r"found \['conv', .*\.\.\. \(a list of length 100000\)$"),
    (dense_config(10**9), r"'block_ff_dim': expected a positive integer of at most 1,048,576, found 1000000000"),
    (dense_config(6656, block_ffn_dim_multiplier="2"), r"'block_ffn_dim_multiplier': expected a positive number of at "
                                                       r"most 1,048,576 or null, found '2'"),
    (dense_config(6656, block_ffn_dim_multiplier=1e306), r"'block_ffn_dim_multiplier': expected a positive number"),
    (dense_config(6656, block_multiple_of=0), r"'block_multiple_of': expected a positive integer of at most 1,048,576, found 0"),
    (dense_config(10**4300 * 9, auto_adjust=False),
     r"'intermediate_size': expected a positive integer of at most 1,048,576, found an integer of 14,288 bits"),
    (dense_config(6656, block_auto_adjust_ff_dim="yes"), r"'block_auto_adjust_ff_dim': expected true or false, found 'yes'"),
    (dense_config(6656, full_attn_idxs=[2, True]), r"'full_attn_idxs': expected layer indices in \[0, num_hidden_layers=16\)"),
    (dense_config(6656, num_hidden_layers=10**9, full_attn_idxs=None), r"'num_hidden_layers': expected a positive integer of at most 1,024"),
    (broken(num_experts=...), r"'num_experts': expected it to be present for model_type 'lfm2_moe', found it missing"),
    (broken(model_type="llama"), r"'model_type': expected one of \['lfm2_moe', 'lfm2'\], found 'llama'"),
    (broken(norm_eps=0), r"'norm_eps': expected a positive number, found 0"),
    (broken(eos_token_id=70000), r"'eos_token_id': expected token ids in \[0, vocab_size=65536\)"),
    (broken(rope_parameters={"rope_type": "yarn", "rope_theta": 1e6}), r"'rope_parameters.rope_type': expected 'default'"),
    (dense_config(12288, full_attn_idxs=[2, 40]), r"'full_attn_idxs': expected layer indices in \[0, num_hidden_layers=16\)"),
])
def test_malformed_configs_name_the_field(raw, message):
    with pytest.raises(ConfigError, match=message):
        LFM2Config.from_hub_dict(raw)


def test_config_files(tmp_path):
    path = tmp_path / "config.json"
    with pytest.raises(ConfigError, match="expected a config.json at .*, found no such file"):
        LFM2Config.from_file(path)
    for data, message in [
        (b'{"model_type": "lfm2_moe",', "expected valid JSON in .*, found a syntax error"),
        (b"[1, 2]", "expected a JSON object, found list"),
        (b'{"model_type": "lfm2_moe"\xff}', "expected UTF-8 text in .*, found invalid bytes"),
        (b"[" * 100_000 + b"]" * 100_000, "found arrays or objects nested too deeply to read"),
        (b'{"hidden_size": ' + b"9" * 5000 + b"}", "expected valid JSON in .*, found Exceeds the limit"),
    ]:
        path.write_bytes(data)
        with pytest.raises(ConfigError, match=message):
            LFM2Config.from_file(path)
    path.unlink()
    path.mkdir()
    with pytest.raises(ConfigError, match="expected a config.json at .*, found something that is not a regular file"):
        LFM2Config.from_file(path)


def test_oversized_json_is_refused_before_it_is_read(tmp_path):
    from lfm2_edu.config import MAX_JSON_BYTES

    path = tmp_path / "config.json"
    with open(path, "wb") as f:  # sparse: a size on paper, no disk used
        f.truncate(MAX_JSON_BYTES + 1)
    with pytest.raises(ConfigError, match=f"expected at most {MAX_JSON_BYTES:,} bytes of JSON in .*, found "
                                          f"{MAX_JSON_BYTES + 1:,}"):
        LFM2Config.from_file(path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo (POSIX)")
def test_a_fifo_named_config_json_is_refused_not_waited_on(tmp_path):
    os.mkfifo(tmp_path / "config.json")  # reading it would wait for a writer forever
    with pytest.raises(ConfigError, match="found something that is not a regular file"):
        LFM2Config.from_file(tmp_path / "config.json")


def test_layer_lists():
    cfg = LFM2Config()  # LFM2-8B-A1B
    assert cfg.attention_layers == [2, 6, 10, 14, 18, 21]
    assert len(cfg.conv_layers) == 18 and not set(cfg.conv_layers) & set(cfg.attention_layers)
    assert cfg.dense_layers == [0, 1] and cfg.moe_layers == list(range(2, 24))
    dense = LFM2Config(model_type="lfm2", num_dense_layers=24)
    assert dense.moe_layers == [] and dense.dense_layers == list(range(24))
