"""Parameter counts, total and active per token, by part of the model, from the config alone.

"Active" counts what one token's forward pass multiplies with: every weight except the experts
it was not routed to (k of E per MoE layer). The tied embedding/head matrix is counted once,
and as active, since the head multiplies the whole of it for every token. expert_bias is a
buffer, not a parameter, and is not counted (as in transformers' num_parameters).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from .config import LFM2Config

GROUPS = ("embedding", "norms", "conv", "attention", "dense_mlp", "router", "experts", "lm_head")


@dataclass
class ParameterCounts:
    total: int
    active: int
    by_group: dict[str, tuple[int, int]] = field(default_factory=dict)  # group -> (total, active)

    def __str__(self) -> str:
        rows = [f"{g:>10}: {t:>15,} total {a:>15,} active" for g, (t, a) in self.by_group.items() if t]
        return "\n".join(rows + [f"{'all':>10}: {self.total:>15,} total {self.active:>15,} active"])


def count_parameters(config_or_model: LFM2Config | nn.Module) -> ParameterCounts:
    cfg = config_or_model.config if isinstance(config_or_model, nn.Module) else config_or_model
    H, V, d = cfg.hidden_size, cfg.vocab_size, cfg.head_dim
    nh, nkv, L = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.conv_L_cache
    bias = cfg.conv_bias
    total = dict.fromkeys(GROUPS, 0)
    active = dict.fromkeys(GROUPS, 0)

    def add(group: str, n: int, n_active: int | None = None) -> None:
        total[group] += n
        active[group] += n if n_active is None else n_active

    add("embedding", V * H)
    if not cfg.tie_word_embeddings:
        add("lm_head", V * H)
    add("norms", H)  # the final norm
    for i in range(cfg.num_hidden_layers):
        add("norms", 2 * H)  # operator_norm, ffn_norm
        if cfg.is_attention_layer(i):
            add("attention", H * nh * d + 2 * H * nkv * d + nh * d * H)  # q, k, v, out
            add("norms", 2 * d)  # q_layernorm, k_layernorm
        else:
            add("conv", H * 3 * H + H * L + H * H + (3 * H + H + H if bias else 0))  # in, conv, out
        if cfg.is_moe_layer(i):
            E, k, I = cfg.num_experts, cfg.num_experts_per_tok, cfg.moe_intermediate_size
            add("router", E * H)
            add("experts", E * 3 * H * I, k * 3 * H * I)
        else:
            add("dense_mlp", 3 * H * cfg.intermediate_size)
    by_group = {g: (total[g], active[g]) for g in GROUPS}
    return ParameterCounts(sum(total.values()), sum(active.values()), by_group)


# ------------------------------------------------------------------ the two token mixers, per token
@dataclass
class MixerCost:
    """What one layer's token mixer costs for one token: its weights and its multiply-adds."""

    weights: int  # parameters of the mixer (projections, kernel), read once per token
    projections: int  # multiply-adds of its weight matrices and kernel: fixed per token
    context: int  # multiply-adds that grow with the context: attention's q.k and probs @ v

    @property
    def multiply_adds(self) -> int:
        return self.projections + self.context


def mixer_costs(config: LFM2Config, context_length: int) -> dict[str, MixerCost]:
    """{"conv": ..., "full_attention": ...}: one layer of each kind, for the token at position
    `context_length` (it sees that many tokens, itself included), from the config alone.

    Multiply-adds of the matmuls, the conv taps and the gates; norms, RoPE and the softmax are left
    out (a few per channel or per score: under 1% at LFM2-8B-A1B's widths).
      conv:      in_proj 3H*H, gates B*x and C*y 2H, taps H*L, out_proj H*H: none grows with S
      attention: q, k, v, out 2H*nh*d + 2H*nkv*d, then q.k and probs @ v, nh*d*S each
    """
    if isinstance(context_length, bool) or not isinstance(context_length, int) or context_length < 1:
        raise ValueError(f"context_length: expected an integer >= 1 (the token itself), found {context_length!r}")
    H, L, d = config.hidden_size, config.conv_L_cache, config.head_dim
    nh, nkv = config.num_attention_heads, config.num_key_value_heads
    conv_weights = H * 3 * H + H * L + H * H + (3 * H + H + H if config.conv_bias else 0)
    conv = MixerCost(conv_weights, H * 3 * H + 2 * H + H * L + H * H, 0)
    attn_weights = 2 * H * nh * d + 2 * H * nkv * d  # q_proj, out_proj; k_proj, v_proj
    attention = MixerCost(attn_weights, attn_weights, 2 * nh * d * context_length)
    return {"conv": conv, "full_attention": attention}


def attention_crossover(config: LFM2Config) -> int:
    """The shortest context at which one attention layer costs a token more multiply-adds than one
    conv layer (1 if it always does)."""
    cost = mixer_costs(config, 1)
    per_token = 2 * config.num_attention_heads * config.head_dim  # what each more token of context adds
    fixed_gap = cost["conv"].multiply_adds - cost["full_attention"].projections
    return max(1, fixed_gap // per_token + 1)  # the first S with projections + per_token * S > conv
