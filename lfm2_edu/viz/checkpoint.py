"""Figures for chapters 00 and 01: what a checkpoint holds, and what one token uses of it.

    group_of(name)                     which part of the model a tensor belongs to
    parameter_groups(model)            total and active parameters per group, counted from the tensors
    plot_parameter_groups(counts)      total vs active per group, one panel per model
    layer_pattern(config)              (mixer, feed-forward) of every layer
    plot_layer_pattern(configs)        conv/attention x dense/MoE, one strip per model
    cache_budget(config, lengths)      bytes of the hybrid cache vs an all-attention one
    plot_design_budget(config)         why LFM2-MoE: parameters stored vs used, cache vs context
    plot_file_layout(header, ...)      where each group's bytes lie in a safetensors file

Each plot function returns (data, figure): the numbers it drew, and the matplotlib figure.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import FuncFormatter
from torch import nn

from ..cache import expected_cache_bytes
from ..config import LFM2Config
from ..params import GROUPS
from . import style
from .style import GROUP_COLOURS, LAYER_COLOURS, LAYER_LETTERS, LAYER_NAMES


# ------------------------------------------------------------------------------------- groups
def group_of(name: str) -> str:
    """The group (params.GROUPS) of a tensor, by its module name or its checkpoint name.

    'model.layers.3.feed_forward.experts.5.w1.weight' -> 'experts'. expert_bias (a buffer, not a
    parameter) goes with the router it biases.
    """
    parts = name.removeprefix("model.").split(".")
    if parts[0] in ("embed_tokens", "lm_head"):
        return "embedding" if parts[0] == "embed_tokens" else "lm_head"
    if len(parts) >= 2 and parts[-2].endswith("norm"):  # operator_norm, ffn_norm, q/k_layernorm, embedding_norm
        return "norms"
    if parts[0] == "layers" and len(parts) >= 4:
        block, part = parts[2], parts[3]
        if block == "conv":
            return "conv"
        if block == "self_attn":
            return "attention"
        if block == "feed_forward":
            if part == "experts":
                return "experts"
            if part in ("gate", "expert_bias"):
                return "router"
            if part in ("w1", "w2", "w3"):
                return "dense_mlp"
    raise ValueError(f"group_of: expected an LFM2 tensor name such as 'layers.0.conv.in_proj.weight', found {name!r}")


def parameter_groups(model: nn.Module) -> dict[str, tuple[int, int]]:
    """group -> (total, active per token), counted from the model's parameter tensors.

    Active: each MoE layer runs k of its E experts per token, so k/E of its expert parameters;
    everything else is used by every token (the tied head multiplies the whole embedding matrix).
    """
    cfg = model.config
    total = dict.fromkeys(GROUPS, 0)
    expert_per_layer: dict[int, int] = {}
    for name, p in model.named_parameters():
        group = group_of(name)
        total[group] += p.numel()
        if group == "experts":
            layer = int(name.split(".")[1])
            expert_per_layer[layer] = expert_per_layer.get(layer, 0) + p.numel()
    active = dict(total)
    active["experts"] = sum(n * cfg.num_experts_per_tok // cfg.num_experts for n in expert_per_layer.values())
    return {g: (total[g], active[g]) for g in GROUPS}


def human(n: float) -> str:
    """1_557_740_288 -> '1.56B'."""
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:.0f}"


def human_bytes(n: float) -> str:
    """12_232_224 -> '12.2 MB' (powers of 10, as file sizes are quoted)."""
    for size, unit in ((1e9, "GB"), (1e6, "MB"), (1e3, "KB")):
        if abs(n) >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.0f} B"


@style.figure
def plot_parameter_groups(counts: dict[str, dict[str, tuple[int, int]]]):
    """counts: model label -> {group: (total, active)}. One panel per model, one row per group
    (named on its axis); a light bar for the parameters stored, a dark one for those one token
    multiplies with."""
    data = {label: {g: ta for g, ta in groups.items() if ta[0]} for label, groups in counts.items()}
    rows = max(len(groups) for groups in data.values())
    fig, axes = plt.subplots(1, len(data), figsize=(6.4 * len(data), 1.6 + 0.42 * rows), squeeze=False)
    for ax, (label, groups) in zip(axes[0], data.items()):
        names = list(groups)[::-1]  # first group on top
        totals = [groups[g][0] for g in names]
        actives = [groups[g][1] for g in names]
        colours = [GROUP_COLOURS[g] for g in names]
        ax.barh(names, totals, color=colours, alpha=0.35)
        ax.barh(names, actives, color=colours, height=0.45)
        for y, (t, a) in enumerate(zip(totals, actives)):
            text = human(t) if t == a else f"{human(t)} / {human(a)} active"
            ax.text(t, y, " " + text, va="center")
        ax.set_xlim(0, max(totals) * 1.6)
        all_total, all_active = sum(totals), sum(actives)
        ax.set_title(f"{label}: {human(all_total)} parameters,\n{human(all_active)} active per token")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: human(v)))
        ax.xaxis.set_major_locator(plt.MaxNLocator(4))
        ax.set_xlabel("parameters")
    key = [Patch(color=style.MUTED, alpha=0.35, label="wide, light: stored (total)"),
           Patch(color=style.MUTED, label="narrow, dark: used per token (active)")]
    fig.legend(handles=key, loc="lower center", ncol=2, frameon=False)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return data, fig


# -------------------------------------------------------------------------------- layer pattern
def layer_pattern(config: LFM2Config) -> list[tuple[str, str]]:
    """(mixer, feed-forward) per layer: ('conv' | 'attention', 'dense' | 'moe')."""
    return [("attention" if config.is_attention_layer(i) else "conv", "moe" if config.is_moe_layer(i) else "dense")
            for i in range(config.num_hidden_layers)]


@style.figure
def plot_layer_pattern(configs: dict[str, LFM2Config]):
    """One strip per model: each layer is a column, its mixer on top and its feed-forward below,
    in the layer-type colours and lettered (C conv, A attention, D dense, M MoE)."""
    data = {label: layer_pattern(cfg) for label, cfg in configs.items()}
    n_max = max(len(p) for p in data.values())
    fig, axes = plt.subplots(len(data), 1, figsize=(max(7.0, 0.45 * n_max + 2.4), 1.75 * len(data) + 0.8),
                             squeeze=False)
    for ax, (label, pattern) in zip(axes[:, 0], data.items()):
        for i, (mixer, ffn) in enumerate(pattern):
            for y, kind in ((1, mixer), (0, ffn)):
                ax.add_patch(Rectangle((i, y), 0.92, 0.92, color=LAYER_COLOURS[kind]))
                ax.text(i + 0.46, y + 0.46, LAYER_LETTERS[kind], ha="center", va="center", weight="bold",
                        color=style.text_colour(LAYER_COLOURS[kind]))
        ax.set_xlim(-0.1, n_max)
        ax.set_ylim(0, 1.95)
        step = style.every(len(pattern), 32)
        ax.set_xticks([i + 0.46 for i in range(0, len(pattern), step)], [str(i) for i in range(0, len(pattern), step)])
        ax.set_yticks([0.46, 1.46], ["feed-forward", "mixer"])
        ax.tick_params(length=0)
        for side in ax.spines.values():
            side.set_visible(False)
        n_attn = sum(m == "attention" for m, _ in pattern)
        n_moe = sum(f == "moe" for _, f in pattern)
        ax.set_title(f"{label}: {len(pattern)} layers, {n_attn} attention, {n_moe} MoE")
    axes[-1, 0].set_xlabel("layer")
    handles = [Patch(color=LAYER_COLOURS[k], label=f"{LAYER_LETTERS[k]}: {LAYER_NAMES[k]}") for k in LAYER_COLOURS]
    fig.legend(handles=handles, loc="lower center", ncol=4, frameon=False, bbox_to_anchor=(0.5, 0.0))
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return data, fig


# ------------------------------------------------------------------------------ design budget
def cache_budget(config: LFM2Config, context_lengths, bytes_per_value: int = 2) -> dict:
    """Bytes the generation cache holds after each context length (bf16 by default).

    Conv layers keep the last L-1 gated inputs per channel (constant); attention layers keep K and
    V, 2 * nkv * d values per token each (`lfm2_edu.cache.expected_cache_bytes`). 'all_attention'
    is the same model with every layer attention, for comparison.
    """
    all_attention = config.replace(layer_types=["full_attention"] * config.num_hidden_layers)
    one = expected_cache_bytes(config, 1, bytes_per_value)
    lengths = [int(t) for t in context_lengths]
    return {
        "context": lengths,
        "conv_state_bytes": one["conv"],
        "kv_bytes_per_token": one["full_attention"],
        "hybrid": [sum(expected_cache_bytes(config, t, bytes_per_value).values()) for t in lengths],
        "all_attention": [expected_cache_bytes(all_attention, t, bytes_per_value)["full_attention"] for t in lengths],
    }


@style.figure
def plot_design_budget(config: LFM2Config, label: str = "LFM2-8B-A1B", max_context: int = 32768):
    """Left: parameters stored vs multiplied per token. Right: cache memory vs context length,
    each line named at its end (and dashed or solid), not by colour alone."""
    from ..params import count_parameters

    counts = count_parameters(config)
    lengths = list(range(0, max_context + 1, max(1, max_context // 64)))
    budget = cache_budget(config, lengths)
    data = {"total": counts.total, "active": counts.active,
            "experts": counts.by_group["experts"], **budget}

    fig, (left, right) = plt.subplots(1, 2, figsize=(12.5, 4.8), gridspec_kw={"width_ratios": [1, 1.5]})
    exp_t, exp_a = counts.by_group["experts"]
    rest_t, rest_a = counts.total - exp_t, counts.active - exp_a
    bars = ["stored", "used per\ntoken"]
    left.bar(bars, [rest_t, rest_a], color=GROUP_COLOURS["embedding"], label="everything but the experts")
    left.bar(bars, [exp_t, exp_a], bottom=[rest_t, rest_a], color=GROUP_COLOURS["experts"], hatch="//",
             edgecolor=style.PAPER, label="experts")
    for x, v in enumerate([counts.total, counts.active]):
        left.text(x, v, human(v), ha="center", va="bottom")
    left.set_ylim(0, counts.total * 1.5)
    left.yaxis.set_major_formatter(FuncFormatter(lambda v, _: human(v)))
    left.set_ylabel("parameters")
    left.set_title(f"{label}: sparse experts")
    left.legend(loc="upper right")

    mib = 2**20
    n_attn = len(config.attention_layers)
    lines = ((budget["all_attention"], "--", LAYER_COLOURS["attention"], f"all {config.num_hidden_layers} layers attention"),
             (budget["hybrid"], "-", LAYER_COLOURS["conv"], f"hybrid: {n_attn} attention\n+ {config.num_hidden_layers - n_attn} conv"))
    for values, dash, colour, name in lines:
        right.plot(lengths, [b / mib for b in values], dash, color=colour, lw=2.5)
        right.annotate(name, (lengths[-1], values[-1] / mib), xytext=(6, 0), textcoords="offset points",
                       va="center", color=colour)
    right.set_xlabel("context length (tokens)")
    right.set_ylabel("cache memory (MiB, bf16)")
    slower = f"{config.num_hidden_layers / n_attn:.0f}x more slowly" if n_attn else "not at all"
    right.set_title(f"short convs: the cache grows {slower}")
    right.grid(alpha=0.3)
    fig.tight_layout()
    return data, fig


# -------------------------------------------------------------------------------- file layout
@style.figure
def plot_file_layout(header: dict, header_bytes: int, file_bytes: int, title: str = "model.safetensors"):
    """A safetensors file: 8 bytes of length, the JSON header, then every tensor's bytes back to
    back (data_offsets count from the end of the header). One row per group, named with its share
    of the file, each tensor drawn at its offset: the rows show how the groups interleave."""
    start = 8 + header_bytes
    spans = []  # (begin, end, group) in file bytes
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        spans.append((start + begin, start + end, group_of(name)))
    spans.sort()
    by_group: dict[str, int] = {"header": start}
    for begin, end, group in spans:
        by_group[group] = by_group.get(group, 0) + end - begin
    data = {"spans": spans, "bytes_by_group": by_group, "file_bytes": file_bytes}

    groups = list(by_group)  # in the order of first appearance in the file
    fig, ax = plt.subplots(figsize=(12, 1.2 + 0.42 * len(groups)))
    ax.broken_barh([(0, start)], (-0.4, 0.8), color=GROUP_COLOURS["header"])
    for begin, end, group in spans:
        ax.broken_barh([(begin, end - begin)], (groups.index(group) - 0.4, 0.8), color=GROUP_COLOURS[group])
    ax.set_yticks(range(len(groups)), [f"{g} ({100 * by_group[g] / file_bytes:.1f}%)" for g in groups])
    ax.invert_yaxis()
    ax.set_xlim(0, file_bytes)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: human_bytes(v)))
    ax.set_xlabel("offset in the file")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(f"{title}: {human_bytes(file_bytes)}; 8 bytes + header {human_bytes(start - 8)},\n"
                 f"then the tensors back to back")
    fig.tight_layout()
    return data, fig


__all__ = ["cache_budget", "group_of", "human", "human_bytes", "layer_pattern",
           "parameter_groups", "plot_design_budget", "plot_file_layout", "plot_layer_pattern",
           "plot_parameter_groups"]
