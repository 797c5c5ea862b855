"""Figures and an explorer for grouped-query attention (chapter 05).

- `head_mapping`: which key/value head serves which query heads (kv head j serves j*g .. j*g+g-1).
- `attention_heads`: the attention map of every query head of one layer, grouped by kv head.
- `kv_cache_size` / `kv_cache_growth`: bytes of K/V cache per token, GQA against multi-head
  attention, next to the constant conv states.
- `attention_explorer`: type a text, pick an attention layer and a query token, see what every head attends to.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.colors import PowerNorm

from ..cache import expected_cache_bytes
from . import style


def kv_head_of(n_heads: int, n_kv_heads: int) -> torch.Tensor:
    """(nh,): the kv head serving each query head, h // g with g = nh / nkv."""
    if n_heads % n_kv_heads:
        raise ValueError(f"n_kv_heads: expected a divisor of n_heads={n_heads}, found {n_kv_heads}")
    return torch.arange(n_heads) // (n_heads // n_kv_heads)


# ------------------------------------------------------------------------------- head mapping
@dataclass
class HeadMapping:
    n_heads: int
    n_kv_heads: int
    kv_of_head: torch.Tensor  # (nh,): kv head j serves query heads j*g .. j*g+g-1


def _group_colour(j: int):
    """The colour of kv head j's group (cycling; the groups are also labelled and placed)."""
    return style.CATEGORICAL[j % len(style.CATEGORICAL)]


@style.figure
def head_mapping(n_heads: int, n_kv_heads: int) -> tuple[HeadMapping, plt.Figure]:
    """Boxes for the query heads (top) and the kv heads (bottom), a line for each query head to
    the kv head whose keys and values it uses. Each box is labelled; the colour repeats it."""
    kv_of_head = kv_head_of(n_heads, n_kv_heads)
    g = n_heads // n_kv_heads
    data = HeadMapping(n_heads, n_kv_heads, kv_of_head)
    vertical = n_heads > 16  # many heads: labels turned, so that each fits its column

    fig, ax = plt.subplots(figsize=(min(max(2.5 + (0.32 if vertical else 0.5) * n_heads, 7.5), 13.0), 3.4))
    for h in range(n_heads):
        j = int(kv_of_head[h])
        kv_x = j * g + (g - 1) / 2
        ax.plot([h, kv_x], [1.0, 0.0], color=_group_colour(j), lw=1.5, zorder=1)
        ax.text(h, 1.0, f"q{h}", ha="center", va="center", zorder=2, rotation=90 if vertical else 0,
                color=style.text_colour(_group_colour(j)),
                bbox=dict(boxstyle="round,pad=0.3", fc=_group_colour(j), ec=style.INK))
    for j in range(n_kv_heads):
        ax.text(j * g + (g - 1) / 2, 0.0, f"K,V {j}", ha="center", va="center", zorder=2,
                bbox=dict(boxstyle="round,pad=0.4", fc=style.PAPER, ec=_group_colour(j), lw=2.5))
    ax.set_xlim(-1, n_heads)
    ax.set_ylim(-0.4, 1.45)
    ax.axis("off")
    ax.text(-0.9, 1.38, f"{n_heads} query heads", va="center")
    ax.text(-0.9, -0.36, f"{n_kv_heads} key/value heads", va="center")
    ax.set_title(f"GQA: kv head j serves query heads j*{g} .. j*{g}+{g - 1}\n(g = {n_heads}/{n_kv_heads} = {g})")
    fig.tight_layout()
    return data, fig


# ----------------------------------------------------------------------------- attention maps
@dataclass
class AttentionHeads:
    layer: int
    tokens: list[str]
    probs: torch.Tensor  # (nh, T, S): every query head's attention, S = T keys
    kv_of_head: torch.Tensor  # (nh,)
    grid: list[list[int]]  # grid[j] = the query heads in row j (those served by kv head j)


@style.figure
def attention_heads(probs: torch.Tensor, tokens: list[str], n_kv_heads: int, layer: int,
                    cell: float | None = None) -> tuple[AttentionHeads, plt.Figure]:
    """probs: (nh, T, T) attention probabilities of one layer for one sequence (e.g.
    `capture["layers.{i}.attn.probs"][0]`). The heads in order, so that each kv head's g query heads
    sit side by side (at most 8 maps per row), framed in the kv head's colour and titled with it.
    The maps fill a slide; token labels are thinned to what fits at 12 pt."""
    probs = probs.detach().float().cpu()
    n_heads, T, S = probs.shape
    if len(tokens) != T or S != T:
        raise ValueError(f"probs: expected (heads, T, T) for {len(tokens)} tokens, found {tuple(probs.shape)}")
    kv_of_head = kv_head_of(n_heads, n_kv_heads)
    g = n_heads // n_kv_heads
    grid = [list(range(j * g, (j + 1) * g)) for j in range(n_kv_heads)]
    data = AttentionHeads(layer, list(tokens), probs, kv_of_head, grid)

    n_cols = g * max(1, min(n_kv_heads, 8 // g)) if g <= 8 else 8  # whole groups per row when they fit
    n_rows = -(-n_heads // n_cols)
    slide_w, slide_h = style.SLIDE_INCHES
    labels_w, labels_h = 0.3 + style.CHAR_INCHES * max(map(len, tokens)), 1.4  # token labels, titles
    cell = cell or min(3.2, (slide_w - 1.6 - labels_w) / n_cols, (slide_h - 0.5 - labels_h - 0.45 * n_rows) / n_rows)
    width, height = cell * n_cols + labels_w + 1.2, (cell + 0.45) * n_rows + labels_h
    step = style.every(T, max(1, int(cell / style.LINE_INCHES)))  # at most one label per text line
    ticks = list(range(0, T, step))
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(width, height), squeeze=False)
    future = np.triu(np.ones((T, T), dtype=bool), k=1)
    norm = PowerNorm(gamma=0.5, vmin=0.0, vmax=1.0)
    cmap = plt.get_cmap(style.SEQUENTIAL).with_extremes(bad=style.FAINT)  # grey: the future, masked
    for ax in axes.flat[n_heads:]:
        ax.axis("off")
    for h in range(n_heads):
        r, c = divmod(h, n_cols)
        ax, j = axes[r, c], int(kv_of_head[h])
        im = ax.imshow(np.ma.array(probs[h].numpy(), mask=future), cmap=cmap, norm=norm, interpolation="nearest")
        ax.set_title(f"q{h} → kv{j}")
        for spine in ax.spines.values():
            spine.set_visible(True)
            spine.set_edgecolor(_group_colour(j))
            spine.set_linewidth(3)
        ax.set_xticks([])
        ax.set_yticks([])
        if c == 0:
            ax.set_yticks(ticks, [tokens[t] for t in ticks], family=style.MONO)
            ax.set_ylabel("query token")
        if h + n_cols >= n_heads:  # bottom map of its column
            ax.set_xticks(ticks, [tokens[t] for t in ticks], rotation=90, family=style.MONO)
            ax.set_xlabel("key token")
    fig.suptitle(f"Layer {layer}: all {n_heads} query heads; same frame = same key/value head")
    fig.tight_layout(rect=(0, 0, 1 - 1.1 / width, 1))
    cax = fig.add_axes((1 - 1.0 / width, 0.2, 0.15 / width, 0.6))
    fig.colorbar(im, cax=cax, label="probability (sqrt scale)")
    return data, fig


# ----------------------------------------------------------------------------------- KV cache
@dataclass
class KVCacheSize:
    name: str
    attention_layers: int
    conv_layers: int
    bytes_per_value: int
    gqa_bytes_per_token: int  # what the cache of this model grows by per token
    mha_bytes_per_token: int  # the same model with as many kv heads as query heads
    conv_state_bytes: int  # all conv states, whatever the context length


def kv_cache_size(config, name: str = "model", bytes_per_value: int = 2) -> KVCacheSize:
    """Cache bytes from the config (`lfm2_edu.cache.expected_cache_bytes`): K and V of every
    attention layer (layers x 2 x nkv x d per token) and the conv states (conv layers x H x (L-1),
    constant). bf16 by default. Multi-head: the same model with nkv = nh."""
    gqa = expected_cache_bytes(config, 1, bytes_per_value)  # one token
    mha = expected_cache_bytes(config.replace(num_key_value_heads=config.num_attention_heads), 1, bytes_per_value)
    return KVCacheSize(name, len(config.attention_layers), len(config.conv_layers), bytes_per_value,
                       gqa_bytes_per_token=gqa["full_attention"], mha_bytes_per_token=mha["full_attention"],
                       conv_state_bytes=gqa["conv"])


@dataclass
class KVCacheGrowth:
    tokens: np.ndarray  # (N,) context lengths
    curves: dict[str, dict[str, np.ndarray]]  # model name -> {"MHA", "GQA", "conv states"} -> bytes (N,)


@style.figure
def kv_cache_growth(sizes: list[KVCacheSize], max_tokens: int = 32768) -> tuple[KVCacheGrowth, plt.Figure]:
    """Cache bytes against context length (log-log), one panel per model: K/V with GQA, K/V if it
    were multi-head attention, and the conv states, which stay flat."""
    tokens = np.unique(np.geomspace(1, max_tokens, 64).astype(np.int64))
    curves = {s.name: {"MHA K/V": tokens * s.mha_bytes_per_token, "GQA K/V": tokens * s.gqa_bytes_per_token,
                       "conv states": np.full_like(tokens, s.conv_state_bytes)} for s in sizes}
    data = KVCacheGrowth(tokens, curves)

    fig, axes = plt.subplots(1, len(sizes), figsize=(6.4 * len(sizes), 4.8), squeeze=False)
    attention, conv = style.LAYER_COLOURS["attention"], style.LAYER_COLOURS["conv"]
    styles = {"MHA K/V": dict(color=attention, ls="--"), "GQA K/V": dict(color=attention),
              "conv states": dict(color=conv, ls=":")}
    for ax, s in zip(axes[0], sizes):
        for label, values in curves[s.name].items():
            per_token = {"MHA K/V": s.mha_bytes_per_token, "GQA K/V": s.gqa_bytes_per_token}.get(label)
            suffix = f" ({_kib(per_token)}/token)" if per_token is not None else f" ({_kib(s.conv_state_bytes)}, fixed)"
            if values[-1] == 0:  # no attention (or no conv) layer: nothing to draw on log axes
                continue
            ax.loglog(tokens, values / 1024, label=label + suffix, lw=2, **styles[label])
        ax.set_xlabel("context length (tokens)")
        ax.set_ylabel(f"cache (KiB, {8 * s.bytes_per_value}-bit values)")
        ax.set_title(f"{s.name}:\n{s.attention_layers} attention + {s.conv_layers} conv layers")
        ax.legend(loc="upper left")
        ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return data, fig


def _kib(n: int) -> str:
    return f"{n / 1024:.1f} KiB" if n >= 1024 else f"{n} B"


# ----------------------------------------------------------------------------------- explorer
def attention_rows_html(probs: torch.Tensor, tokens: list[str], t: int, n_kv_heads: int) -> str:
    """What query token t attends to, in every head: one row per head, grouped by kv head, each
    earlier token shaded by its probability. probs: (nh, T, S). Tokens are HTML-escaped."""
    probs = probs.detach().float().cpu()
    n_heads, T, _ = probs.shape
    if not 0 <= t < T:
        raise ValueError(f"t: expected a query position in [0, {T}), found {t}")
    kv_of_head = kv_head_of(n_heads, n_kv_heads)
    cell = "padding:1px 3px;margin:0 1px;border-radius:3px;font-family:monospace;white-space:pre;"
    rows = [f"<div style='font-size:13px'>query token {t}: <b>{html.escape(tokens[t])}</b></div>",
            "<table style='border-collapse:collapse;font-size:12px'>"]
    for j in range(n_kv_heads):
        heads = [h for h in range(n_heads) if int(kv_of_head[h]) == j]
        rows.append(f"<tr><td colspan='2' style='padding-top:6px;text-align:left'><b>kv head {j}</b> "
                    f"(query heads {heads[0]}..{heads[-1]})</td></tr>")
        for h in heads:
            p = probs[h, t, : t + 1]
            top = int(p.argmax())
            spans = []
            for s in range(t + 1):
                alpha = float(p[s]) ** 0.5  # sqrt: small weights stay visible
                shade = style.rgba_css(style.CATEGORICAL[0], alpha)
                spans.append(f"<span title='{float(p[s]):.3f}' style='{cell}background:{shade};"
                             f"color:{style.PAPER if alpha > 0.6 else style.INK}'>{html.escape(tokens[s])}</span>")
            rows.append(f"<tr><td style='padding-right:6px;text-align:right'>head {h}</td>"
                        f"<td style='text-align:left'>{''.join(spans)}"
                        f" <span style='color:{style.MUTED}'>max {float(p[top]):.2f} on {html.escape(tokens[top])}</span>"
                        f"</td></tr>")
    rows.append("</table>")
    return "".join(rows)


@torch.no_grad()
def attention_explorer(model, tokenizer, text: str):
    """A widget: type a text, pick an attention layer and a query token; see each head's attention
    over the tokens up to it, grouped by the kv head the heads share. `box.state` holds what it
    shows (ids, tokens, the Capture)."""
    import ipywidgets as widgets

    from .conv import capture_for_explorer, explorer_ids

    layers = model.config.attention_layers
    if not layers:
        raise ValueError("expected a model with at least one attention layer, found only conv layers "
                         f"(layer_types={model.config.layer_types})")
    nkv = model.config.num_key_value_heads
    text_box = widgets.Text(value=text, continuous_update=False, description="text",
                            layout=widgets.Layout(width="95%"))
    layer_pick = widgets.Dropdown(options=[(f"layer {i}", i) for i in layers], value=layers[0],
                                  description="attention layer", style={"description_width": "initial"})
    token_pick = widgets.Dropdown(description="query token", style={"description_width": "initial"})
    view = widgets.HTML()
    state: dict = {}

    def run(_=None):
        ids, note = explorer_ids(tokenizer, text_box.value)
        if not ids:
            state.clear()
            view.value = f"<i>{note}</i>"
            return
        capture_for_explorer(model, tokenizer, ids, note, "layers.*.attn.probs", token_pick, state)
        update()

    def update(_=None):
        if state.get("busy") or "capture" not in state or token_pick.value is None:
            return
        probs = state["capture"][f"layers.{layer_pick.value}.attn.probs"][0]  # (nh, T, T)
        note = f"<div><i>{state['note']}</i></div>" if state["note"] else ""
        view.value = attention_rows_html(probs, state["tokens"], token_pick.value, nkv) + note

    text_box.observe(run, names="value")
    layer_pick.observe(update, names="value")
    token_pick.observe(update, names="value")
    run()
    box = widgets.VBox([text_box, widgets.HBox([layer_pick, token_pick]), view])
    box.state = state  # what it shows, for inspection
    return box
