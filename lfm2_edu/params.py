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
