"""Helpers to build random reference models with transformers (the test oracle) and save them.

transformers is only a test dependency: tests that need it skip with a clear reason without it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lfm2_edu import LFM2Config
from lfm2_edu.course import transformers_missing


def require_transformers():
    return pytest.importorskip("transformers", reason=transformers_missing())


def tiny_config(**changes) -> LFM2Config:
    """A small LFM2-MoE that still has every kind of layer: conv/attention, dense/MoE."""
    base = dict(model_type="lfm2_moe", vocab_size=97, hidden_size=32, num_hidden_layers=4,
                num_attention_heads=4, num_key_value_heads=2,
                layer_types=["conv", "full_attention", "conv", "full_attention"],
                intermediate_size=48, num_dense_layers=1, num_experts=6, num_experts_per_tok=2,
                moe_intermediate_size=16, max_position_embeddings=256, eos_token_id=2)
    base.update(changes)
    return LFM2Config(**base)


C, A = "conv", "full_attention"
# The parity config matrix: every kind of layer and every switch (see test_parity.py).
PARITY_CONFIGS = {
    "moe-gqa-1dense": tiny_config(),
    "moe-0dense-nobias-mha": tiny_config(num_dense_layers=0, use_expert_bias=False, num_key_value_heads=4),
    "moe-2dense-norenorm-scaled-mqa": tiny_config(num_dense_layers=2, norm_topk_prob=False,
                                                  routed_scaling_factor=2.5, num_key_value_heads=1),
    "moe-convbias-allconv": tiny_config(conv_bias=True, layer_types=[C, C, C, C]),
    "moe-allattention-k-equals-E": tiny_config(layer_types=[A, A, A, A], num_experts=3, num_experts_per_tok=3),
    "moe-8b-pattern-untied": tiny_config(num_hidden_layers=6, layer_types=[C, C, A, C, C, A], num_dense_layers=2,
                                         tie_word_embeddings=False, conv_L_cache=4),
    "dense-gqa": tiny_config(model_type="lfm2", layer_types=[C, A, C, A]),
    "dense-convbias-mqa": tiny_config(model_type="lfm2", conv_bias=True, num_key_value_heads=1,
                                      layer_types=[A, C, C, A]),
}


def reference_model(config: LFM2Config, seed: int = 0, dtype=torch.float32):
    """A transformers model of `config` with random weights, randomised norms and expert_bias.

    The default init (norm weights 1, expert_bias 0) would hide a `1 + w` norm or a bias folded
    into the weights; randomising them makes those bugs visible.
    """
    transformers = require_transformers()
    hub = config.to_hub_dict()
    if config.is_moe:
        ref_config = transformers.Lfm2MoeConfig(**hub)
        cls = transformers.Lfm2MoeForCausalLM
    else:
        ref_config = transformers.Lfm2Config(**hub)
        cls = transformers.Lfm2ForCausalLM
    ref_config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = cls(ref_config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or name.endswith("layernorm.weight"):
                p.normal_(1.0, 0.2)
            elif "conv.conv" in name or name.endswith(".bias"):
                p.normal_(0.0, 0.3)
            else:
                p.normal_(0.0, 0.1 if p.dim() > 1 and p.shape[-1] <= 64 else 0.05)
        for name, b in model.named_buffers():
            if name.endswith("expert_bias"):
                b.normal_(0.0, 0.3)
    if hasattr(model, "set_experts_implementation"):
        model.set_experts_implementation("eager")
    return model.to(dtype)


def save_reference(model, folder: Path, max_shard_size: str | None = None) -> Path:
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(folder, **kwargs)
    return folder


def load_reference(folder: Path, dtype=torch.float32):
    """transformers' model of a saved checkpoint, loaded as the chapters load it (course.load_reference)."""
    from lfm2_edu import course

    require_transformers()
    model, why = course.load_reference(folder, dtype)
    assert model is not None, why
    return model
