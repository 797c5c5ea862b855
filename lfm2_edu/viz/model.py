"""Figures for the whole model (chapter 07): the layer stack, and parameters total vs active.

    rows, fig = plot_layer_stack(config)
    counts, fig = plot_parameter_counts({"this model": config, "LFM2-8B-A1B": LFM2Config()})
    text = layer_difference_table(config, diffs)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
from matplotlib.patches import FancyBboxPatch

from ..config import LFM2Config
from ..params import ParameterCounts, count_parameters

MIXER_COLOURS = {"conv": "tab:blue", "full_attention": "tab:orange"}
FFN_COLOURS = {"dense": "0.6", "moe": "tab:green"}


@dataclass(frozen=True)
class LayerRow:
    index: int
    mixer: str  # "conv" or "full_attention"
    ffn: str  # "dense" or "moe"


def layer_rows(config: LFM2Config) -> list[LayerRow]:
    return [LayerRow(i, config.layer_types[i], "moe" if config.is_moe_layer(i) else "dense")
            for i in range(config.num_hidden_layers)]


def _box(ax, x, y, w, h, text, colour, fontsize=8, text_colour="white"):
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.08",
                                fc=colour, ec="black", lw=0.6))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=fontsize, color=text_colour)


def plot_layer_stack(config: LFM2Config, title: str | None = None) -> tuple[list[LayerRow], plt.Figure]:
    """The model from bottom (token ids) to top (logits): each layer a mixer box (conv or
    attention) and a feed-forward box (dense SwiGLU or MoE), between the embedding and the
    final norm + tied head."""
    rows = layer_rows(config)
    n = len(rows)
    fig, ax = plt.subplots(figsize=(5.2, 1.6 + 0.28 * (n + 3)), dpi=90)
    step, h = 1.0, 0.8
    moe_text = (f"MoE {config.num_experts}e top-{config.num_experts_per_tok}" if config.is_moe else "")
    _box(ax, 0, 0, 4.2, h, "embed_tokens (ids -> vectors)", "0.35")
    for r in rows:
        y = (r.index + 1) * step
        ax.text(-0.15, y + h / 2, str(r.index), ha="right", va="center", fontsize=8)
        _box(ax, 0, y, 2.0, h, "conv" if r.mixer == "conv" else "attention", MIXER_COLOURS[r.mixer])
        _box(ax, 2.2, y, 2.0, h, moe_text if r.ffn == "moe" else "dense SwiGLU", FFN_COLOURS[r.ffn])
    head = "embedding_norm (final) -> " + ("tied head" if config.tie_word_embeddings else "lm_head")
    _box(ax, 0, (n + 1) * step, 4.2, h, head, "0.35")
    ax.set_xlim(-0.8, 4.4)
    ax.set_ylim(-0.3, (n + 2) * step + 0.1)
    ax.axis("off")
    ax.text(-0.6, (n + 1) * step / 2 + h / 2, "layer", rotation=90, ha="center", va="center", fontsize=9)
    ax.set_title(title or f"{config.model_type}: {n} layers, "
                          f"{len(config.attention_layers)} with attention")
    return rows, fig


def _short(n: float) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit}"
    return str(int(n))


def plot_parameter_counts(models: Mapping[str, LFM2Config | ParameterCounts]) -> tuple[dict[str, ParameterCounts], plt.Figure]:
    """One panel per model: parameters of each part, total (light) and active per token (dark)."""
    counts = {name: m if isinstance(m, ParameterCounts) else count_parameters(m) for name, m in models.items()}
    fig, axes = plt.subplots(1, len(counts), figsize=(5.0 * len(counts), 3.6), dpi=90, squeeze=False)
    for ax, (name, c) in zip(axes[0], counts.items()):
        groups = [g for g, (t, _) in c.by_group.items() if t]
        totals = [c.by_group[g][0] for g in groups]
        actives = [c.by_group[g][1] for g in groups]
        y = range(len(groups))
        ax.barh(y, totals, color="tab:blue", alpha=0.3, label="total")
        ax.barh(y, actives, color="tab:blue", height=0.5, label="active per token")
        for i, (t, a) in enumerate(zip(totals, actives)):
            ax.text(t, i, " " + (_short(t) if t == a else f"{_short(a)} of {_short(t)}"), va="center", fontsize=8)
        ax.set_yticks(list(y))
        ax.set_yticklabels(groups)
        ax.invert_yaxis()
        ax.set_xlim(0, max(totals) * 1.45)
        ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: _short(v)))
        ax.set_xlabel("parameters")
        ax.set_title(f"{name}: {_short(c.total)} total, {_short(c.active)} active ({c.active / c.total:.0%})",
                     fontsize=10)
        ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    return counts, fig


def layer_difference_table(config: LFM2Config, diffs: Sequence[float], labels: Sequence[str] | None = None) -> str:
    """A plain-text table: one row per layer (its mixer and feed-forward) and its max |difference|."""
    rows = layer_rows(config)
    if len(diffs) != len(rows):
        raise ValueError(f"layer_difference_table: expected {len(rows)} differences (one per layer), found {len(diffs)}")
    labels = list(labels) if labels is not None else [""] * len(rows)
    lines = [f"{'layer':>5}  {'mixer':<9}  {'ffn':<5}  {'max |diff|':>10}"]
    for r, d, note in zip(rows, diffs, labels):
        mixer = "attention" if r.mixer == "full_attention" else "conv"
        lines.append(f"{r.index:>5}  {mixer:<9}  {r.ffn:<5}  {d:>10.2e}{'  ' + note if note else ''}")
    return "\n".join(lines)


__all__ = ["LayerRow", "layer_difference_table", "layer_rows", "plot_layer_stack", "plot_parameter_counts"]
