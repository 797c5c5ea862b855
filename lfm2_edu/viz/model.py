"""Figures for the whole model (chapter 07): one decoder block as it computes, the layer stack,
and parameters total vs active.

    block, fig = plot_decoder_block(config)     # norms, mixer choice, residual adds, FFN choice, head
    rows, fig = plot_layer_stack(config)
    counts, fig = plot_parameter_counts({"this model": config, "LFM2-8B-A1B": LFM2Config()})
    text = layer_difference_table(config, diffs)

plot_layer_stack and plot_parameter_counts repeat chapter 01's layer pattern and parameter groups;
plot_decoder_block is what chapter 07 adds to them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch

from ..config import LFM2Config
from ..params import ParameterCounts, count_parameters
from . import style
from .style import LAYER_COLOURS

MIXER_COLOURS = {"conv": LAYER_COLOURS["conv"], "full_attention": LAYER_COLOURS["attention"]}


@dataclass(frozen=True)
class LayerRow:
    index: int
    mixer: str  # "conv" or "full_attention"
    ffn: str  # "dense" or "moe"


def layer_rows(config: LFM2Config) -> list[LayerRow]:
    return [LayerRow(i, config.layer_types[i], "moe" if config.is_moe_layer(i) else "dense")
            for i in range(config.num_hidden_layers)]


def _box(ax, x, y, w, h, text, colour, **text_style):
    """A rounded box with its text, in the colour's legible ink; (x, y) is the lower left corner."""
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.08",
                                fc=colour, ec=style.INK, lw=0.8))
    return ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", color=style.text_colour(colour),
                   **text_style)


@style.figure
def plot_layer_stack(config: LFM2Config, title: str | None = None) -> tuple[list[LayerRow], plt.Figure]:
    """The model from bottom (token ids) to top (logits): each layer a mixer box (conv or
    attention) and a feed-forward box (dense SwiGLU or MoE), between the embedding and the
    final norm + tied head. (Chapter 01's plot_layer_pattern shows the same; chapter 07 moves to
    plot_decoder_block.)"""
    rows = layer_rows(config)
    n = len(rows)
    fig, ax = plt.subplots(figsize=(6.4, 1.4 + 0.27 * (n + 3)))
    step, h = 1.0, 0.86
    moe_text = (f"MoE {config.num_experts}e top-{config.num_experts_per_tok}" if config.is_moe else "")
    _box(ax, 0, 0, 4.2, h, "embed_tokens (ids -> vectors)", style.MUTED)
    for r in rows:
        y = (r.index + 1) * step
        ax.text(-0.15, y + h / 2, str(r.index), ha="right", va="center")
        _box(ax, 0, y, 2.0, h, "conv" if r.mixer == "conv" else "attention", MIXER_COLOURS[r.mixer])
        _box(ax, 2.2, y, 2.0, h, moe_text if r.ffn == "moe" else "dense SwiGLU", LAYER_COLOURS[r.ffn])
    head = "embedding_norm (final) -> " + ("tied head" if config.tie_word_embeddings else "lm_head")
    _box(ax, 0, (n + 1) * step, 4.2, h, head, style.MUTED)
    ax.set_xlim(-0.8, 4.4)
    ax.set_ylim(-0.3, (n + 2) * step + 0.1)
    ax.axis("off")
    ax.text(-0.6, (n + 1) * step / 2 + h / 2, "layer", rotation=90, ha="center", va="center")
    ax.set_title(title or f"{config.model_type}: {n} layers, "
                          f"{len(config.attention_layers)} with attention")
    return rows, fig


# ----------------------------------------------------------------------------- the block diagram
@dataclass
class DecoderBlock:
    """What `plot_decoder_block` drew."""

    path: list[str]  # what the residual stream meets, in order, for one token
    mixers: dict[str, list[int]]  # "conv" / "attention" -> the layers that use it
    ffns: dict[str, list[int]]  # "dense" / "moe" -> the layers that use it
    boxes: dict[str, str]  # box -> its text
    tied: bool  # lm_head is embed_tokens' weight


PATH = ["embed_tokens", "operator_norm", "mixer", "add", "ffn_norm", "feed_forward", "add", "embedding_norm", "lm_head"]


def _layer_list(layers: list[int], n: int) -> str:
    """[0, 1, 2, 5] -> "layers 0-2, 5"; every layer -> "every layer"."""
    if len(layers) == n:
        return "every layer"
    runs, start = [], None
    for i, layer in enumerate(layers):
        if start is None:
            start = layer
        if i + 1 == len(layers) or layers[i + 1] != layer + 1:
            runs.append(f"{start}" if start == layer else f"{start}-{layer}")
            start = None
    text = ("layer " if len(layers) == 1 else "layers ") + ", ".join(runs)
    return text if len(text) <= 20 else f"{len(layers)} of {n} layers"  # what fits a box at 12 pt


@style.figure
def plot_decoder_block(config: LFM2Config, title: str | None = None) -> tuple[DecoderBlock, plt.Figure]:
    """One LFM2 decoder layer as it computes, inside the whole model, left to right along the
    residual stream h: embed_tokens; then per layer h = h + mixer(operator_norm(h)), the mixer a
    short conv or GQA attention, and h = h + feed_forward(ffn_norm(h)), a dense SwiGLU or the
    sparse MoE; then the final norm (embedding_norm) and the head, tied to embed_tokens. Each
    choice box names the layers that take it; no norm follows the embedding."""
    n = config.num_hidden_layers
    mixers = {k: v for k, v in (("conv", config.conv_layers), ("attention", config.attention_layers)) if v}
    ffns = {k: v for k, v in (("dense", config.dense_layers), ("moe", config.moe_layers)) if v}
    boxes = {"embed_tokens": "embed_tokens\nids → vectors", "operator_norm": "operator_norm\nRMSNorm",
             "ffn_norm": "ffn_norm\nRMSNorm", "embedding_norm": "embedding_norm\nfinal RMSNorm",
             "lm_head": "lm_head" + ("\n(tied)" if config.tie_word_embeddings else "")}
    names = {"conv": "ShortConv", "attention": "GQA attention", "dense": "dense SwiGLU",
             "moe": f"MoE: top-{config.num_experts_per_tok} of {config.num_experts}"}
    for kind, layers in {**mixers, **ffns}.items():
        boxes[kind] = f"{names[kind]}\n{_layer_list(layers, n)}"
    data = DecoderBlock(list(PATH), mixers, ffns, boxes, bool(config.tie_word_embeddings))

    # Axis units are inches (the axes fill the figure), so boxes are sized for their 12 pt text.
    fig = plt.figure(figsize=(13.2, 7.0))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 13.2)
    ax.set_ylim(-3.55, 3.75)
    ax.axis("off")
    h, line = 0.86, dict(color=style.INK, lw=1.5)

    def arrow(a, b):
        ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=15, shrinkA=0, shrinkB=0, **line))

    def branch(x_split, x_add, side, norm, choices):
        """A branch off the stream at x_split: its norm, then one of the choices (first on top),
        back into the residual add at x_add."""
        y = 1.72 * side
        arrow((x_split, 0), (x_split, y - side * h / 2))
        _box(ax, x_split - 0.05, y - h / 2, 1.6, h, boxes[norm], style.PAPER)
        offsets = [0.0] if len(choices) == 1 else [0.6, -0.6]
        for kind, dy in zip(choices, offsets):
            arrow((x_split + 1.55, y), (x_split + 1.8, y + dy))
            _box(ax, x_split + 1.8, y + dy - 0.38, 2.15, 0.76, boxes[kind], LAYER_COLOURS[kind])
            ax.plot([x_split + 3.95, x_add], [y + dy, y + dy], **line)
        if len(choices) > 1:
            ax.text(x_split + 2.875, y, "or", ha="center", va="center", style="italic")
        ax.plot([x_add, x_add], [y + max(offsets), y + min(offsets)], **line)
        arrow((x_add, y + (min(offsets) if side > 0 else max(offsets))), (x_add, 0.2 * side))
        ax.add_patch(plt.Circle((x_add, 0), 0.2, fc=style.PAPER, ec=style.INK, lw=1.5, zorder=3))
        ax.text(x_add, 0, "+", ha="center", va="center", weight="bold", zorder=4)

    ax.set_title("")
    ax.text(0.05, 3.7, title or f"{config.model_type}: one decoder layer inside the stack (hidden {config.hidden_size}, "
                              f"{n} layers)", va="top", size=style.FONT_PT["suptitle"])
    ax.plot([0.05, 13.15], [0, 0], color=style.INK, lw=2.2, zorder=0)  # the residual stream h
    ax.text(0.05, -0.55, "token ids in", va="top")
    ax.text(13.15, -0.55, "logits out", va="top", ha="right")
    _box(ax, 0.05, -h / 2, 1.4, h, boxes["embed_tokens"], style.OKABE_ITO["sky blue"])
    ax.add_patch(FancyBboxPatch((1.6, -3.25), 8.8, 5.95, boxstyle="round,pad=0.02,rounding_size=0.2",
                                fill=False, ls="--", ec=style.MUTED, lw=1.5))
    ax.text(10.3, 2.6, f"decoder layer i, × {n}", va="top", ha="right", color=style.MUTED, weight="bold")
    branch(1.85, 5.9, +1, "operator_norm", list(mixers))
    branch(6.15, 10.2, -1, "ffn_norm", list(ffns))
    ax.text(1.75, -3.1, "h = h + mixer(operator_norm(h)), then h = h + feed_forward(ffn_norm(h))", va="bottom",
            color=style.MUTED)
    _box(ax, 10.55, -h / 2, 1.55, h, boxes["embedding_norm"], style.PAPER)
    _box(ax, 12.2, -h / 2, 0.95, h, boxes["lm_head"], style.OKABE_ITO["sky blue"])
    if data.tied:  # over the top of the layer: the head multiplies by the embedding table
        ax.plot([12.67, 12.67, 0.75, 0.75], [h / 2, 2.95, 2.95, h / 2 + 0.15], ls="--", color=style.MUTED, lw=1.4)
        ax.add_patch(FancyArrowPatch((0.75, 1.0), (0.75, h / 2), arrowstyle="-|>", mutation_scale=14,
                                     color=style.MUTED, lw=1.4, shrinkA=0, shrinkB=0))
        ax.text(6.7, 3.0, "tied: lm_head multiplies by embed_tokens.weight", ha="center", va="bottom",
                color=style.MUTED)
    return data, fig


def _short(n: float) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit}"
    return str(int(n))


@style.figure
def plot_parameter_counts(models: Mapping[str, LFM2Config | ParameterCounts]) -> tuple[dict[str, ParameterCounts], plt.Figure]:
    """One panel per model: parameters of each part, total (light) and active per token (dark)."""
    counts = {name: m if isinstance(m, ParameterCounts) else count_parameters(m) for name, m in models.items()}
    fig, axes = plt.subplots(1, len(counts), figsize=(6.4 * len(counts), 4.6), squeeze=False)
    for ax, (name, c) in zip(axes[0], counts.items()):
        groups = [g for g, (t, _) in c.by_group.items() if t]
        totals = [c.by_group[g][0] for g in groups]
        actives = [c.by_group[g][1] for g in groups]
        y = range(len(groups))
        colours = [style.GROUP_COLOURS[g] for g in groups]
        ax.barh(y, totals, color=colours, alpha=0.35, label="total")
        ax.barh(y, actives, color=colours, height=0.5, label="active per token")
        for i, (t, a) in enumerate(zip(totals, actives)):
            ax.text(t, i, " " + (_short(t) if t == a else f"{_short(a)} of {_short(t)}"), va="center")
        ax.set_yticks(list(y))
        ax.set_yticklabels(groups)
        ax.invert_yaxis()
        ax.set_xlim(0, max(totals) * 1.6)
        ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: _short(v)))
        ax.xaxis.set_major_locator(plt.MaxNLocator(4))
        ax.set_xlabel("parameters")
        ax.set_title(f"{name}: {_short(c.total)} total,\n{_short(c.active)} active ({c.active / c.total:.0%})")
    key = [Patch(color=style.MUTED, alpha=0.35, label="wide, light: total"),
           Patch(color=style.MUTED, label="narrow, dark: active per token")]
    fig.legend(handles=key, loc="lower center", ncol=2, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
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


__all__ = ["DecoderBlock", "LayerRow", "layer_difference_table", "layer_rows", "plot_decoder_block", "plot_layer_stack",
           "plot_parameter_counts"]
