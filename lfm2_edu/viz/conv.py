"""Figures and an explorer for the double-gated short convolution (chapter 04).

- `conv_weights`: the kernel of one conv layer (taps x channels) and how much weight every conv
  layer puts on each tap.
- `conv_gates`: the gates B (before the conv) and C (after it) per token and channel.
- `conv_explorer`: type a text, pick a conv layer and a token, see its B, C, x, B*x, conv output and C*conv
  across channels.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import matplotlib.pyplot as plt
import torch

from ..trace import Capture
from . import style


def tap_labels(kernel_size: int) -> list[str]:
    """Tap j multiplies the token L-1-j steps back: ["t-2", "t-1", "t"] for L = 3."""
    return [f"t-{kernel_size - 1 - j}" if j < kernel_size - 1 else "t" for j in range(kernel_size)]


def _need_conv_layers(config) -> list[int]:
    layers = config.conv_layers
    if not layers:
        raise ValueError("expected a model with at least one conv layer, found only attention layers "
                         f"(layer_types={config.layer_types})")
    return layers


# ------------------------------------------------------------------------------------ weights
@dataclass
class ConvWeights:
    layer: int  # the layer whose kernel is drawn
    weight: torch.Tensor  # (n, L): that layer's taps for the n channels drawn; tap L-1 multiplies the current token
    layers: list[int]  # every conv layer
    tap_mean_abs: torch.Tensor  # (len(layers), L): mean |w| of each tap, per conv layer
    taps: list[str]  # tap names, "t-2", "t-1", "t"


@torch.no_grad()
@style.figure
def conv_weights(model, layer: int | None = None, max_channels: int = 256) -> tuple[ConvWeights, plt.Figure]:
    """The depthwise kernel (H, 1, L) of conv layer `layer` (default: the middle conv layer) as a
    taps x channels heatmap (the first `max_channels` channels), and the mean |w| per tap of every
    conv layer (over all channels)."""
    layers = _need_conv_layers(model.config)
    layer = layers[len(layers) // 2] if layer is None else layer
    if layer not in layers:
        raise ValueError(f"layer: expected one of the conv layers {layers}, found {layer}")
    H = model.config.hidden_size
    weight = model.layers[layer].conv.conv.weight[:max_channels, 0].float().cpu()  # (n, L)
    tap_mean_abs = torch.stack([model.layers[i].conv.conv.weight[:, 0].float().abs().mean(0).cpu()
                                for i in layers])  # (n_conv, L)
    taps = tap_labels(weight.shape[1])
    data = ConvWeights(layer, weight, layers, tap_mean_abs, taps)

    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(13, max(4.0, 1.6 + style.LINE_INCHES * len(layers))),
                                   gridspec_kw={"width_ratios": [3, 1]})
    lim = float(weight.abs().max()) or 1.0
    im = ax0.imshow(weight.T.numpy(), aspect="auto", cmap=style.DIVERGING, vmin=-lim, vmax=lim, interpolation="nearest")
    ax0.set_yticks(range(len(taps)), [f"{t}" for t in taps])
    ax0.set_xlabel("channel" + (f" (first {weight.shape[0]} of {H})" if weight.shape[0] < H else ""))
    ax0.set_ylabel("tap (token it multiplies)")
    ax0.set_title(f"Layer {layer}: one kernel of {len(taps)} taps per channel (conv.weight)")
    fig.colorbar(im, ax=ax0, label="weight", fraction=0.03)
    im = ax1.imshow(tap_mean_abs.numpy(), aspect="auto", cmap=style.SEQUENTIAL)
    ax1.set_xticks(range(len(taps)), taps)
    ax1.set_yticks(range(len(layers)), [f"layer {i}" for i in layers])
    ax1.set_xlabel("tap")
    ax1.set_title("mean |w| per tap")
    fig.colorbar(im, ax=ax1, label="mean |weight|")
    fig.tight_layout()
    return data, fig


# -------------------------------------------------------------------------------------- gates
@dataclass
class ConvGates:
    layer: int
    tokens: list[str]
    channels: torch.Tensor  # (n,) channel indices drawn
    B: torch.Tensor  # (T, n): gate before the conv
    C: torch.Tensor  # (T, n): gate after the conv


@style.figure
def conv_gates(capture: Capture, layer: int, tokens: list[str],
               max_channels: int = 128) -> tuple[ConvGates, plt.Figure]:
    """Heatmaps of B and C (token x channel) of one conv layer, from a Capture that recorded
    `layers.{layer}.conv.B` and `.C` for one sequence. Draws the first `max_channels` channels."""
    B, C = capture[f"layers.{layer}.conv.B"][0], capture[f"layers.{layer}.conv.C"][0]  # (T, H)
    if len(tokens) != B.shape[0]:
        raise ValueError(f"tokens: expected {B.shape[0]} token strings (one per position), found {len(tokens)}")
    H = B.shape[1]
    channels = torch.arange(min(H, max_channels))
    data = ConvGates(layer, list(tokens), channels, B[:, channels].float().cpu(), C[:, channels].float().cpu())

    height = 1.6 + style.LINE_INCHES * len(tokens)
    fig, axes = plt.subplots(1, 2, figsize=(13, height), sharey=True)
    shown = f"channels 0-{len(channels) - 1} of {H}" if len(channels) < H else f"all {H} channels"
    for ax, values, name, role in ((axes[0], data.B, "B", "times x, before the conv"),
                                   (axes[1], data.C, "C", "times the conv output")):
        lim = float(values.abs().max()) or 1.0
        im = ax.imshow(values.numpy(), aspect="auto", cmap=style.DIVERGING, vmin=-lim, vmax=lim, interpolation="nearest")
        ax.set_title(f"Layer {layer}: gate {name} ({role})")
        ax.set_xlabel(f"channel ({shown})")
        fig.colorbar(im, ax=ax, label=name, fraction=0.04)
    axes[0].set_yticks(range(len(tokens)), tokens, family=style.MONO)
    axes[0].set_ylabel("token")
    fig.tight_layout()
    return data, fig


# ----------------------------------------------------------------------------------- explorer
STREAMS = ("B", "x", "Bx", "conv_out", "C", "y")
STREAM_TITLES = {"B": "B (input gate)", "x": "x (value)", "Bx": "B*x (what the conv and its cache see)",
                 "conv_out": "conv(B*x) (this token and the L-1 before it)", "C": "C (output gate)",
                 "y": "y = C * conv(B*x) (into out_proj)"}


def conv_token_view(capture: Capture, layer: int, t: int, max_channels: int | None = None) -> dict[str, torch.Tensor]:
    """One token's streams through conv layer `layer`, across channels: B, x, B*x, the conv output,
    C and y = C * conv output; each (n,) for the first `max_channels` channels (all by default)."""
    name = f"layers.{layer}.conv"
    T = capture[f"{name}.B"].shape[1]
    if not 0 <= t < T:
        raise ValueError(f"t: expected a position in [0, {T}), found {t}")
    view = {s: capture[f"{name}.{s}"][0, t].float().cpu() for s in STREAMS if s != "y"}
    view["y"] = view["C"] * view["conv_out"]  # (H,)
    n = max_channels or view["B"].shape[0]
    return {s: view[s][:n] for s in STREAMS}


@style.figure
def plot_conv_token(view: dict[str, torch.Tensor], layer: int, token: str, dpi: int = 72) -> plt.Figure:
    """One bar chart per stream, channel by channel; positive values above the line, negative below."""
    fig, axes = plt.subplots(len(STREAMS), 1, figsize=(12, 1.1 * len(STREAMS) + 0.5), sharex=True, dpi=dpi)
    channels = range(view["B"].shape[0])
    for ax, s in zip(axes, STREAMS):
        values = view[s].numpy()
        ax.bar(channels, values, width=1.0, color=style.CATEGORICAL[0])
        ax.axhline(0, color=style.INK, lw=0.5)
        ax.set_title(STREAM_TITLES[s], loc="left")
    axes[-1].set_xlabel("channel")
    fig.suptitle(f"Layer {layer}, token {token!r}")
    fig.tight_layout()
    return fig


def sentence_html(tokens: list[str], t: int, window: int = 0) -> str:
    """The tokens as HTML, escaped; token t highlighted, the `window` tokens before it underlined."""
    spans = []
    for j, tok in enumerate(tokens):
        css = "padding:1px 2px;margin:1px;border-radius:3px;font-family:monospace;"
        if j == t:
            css += f"background:{style.OKABE_ITO['yellow']};font-weight:bold;outline:2px solid {style.INK};"
        elif t - window <= j < t:
            css += f"background:{style.TINTS[1]};text-decoration:underline;"
        spans.append(f'<span style="{css}">{html.escape(tok)}</span>')
    return "<div style='line-height:1.9'>" + "".join(spans) + "</div>"


EXPLORER_MAX_TOKENS = 256  # a longer text is cut: the bars are per token, the point is a sentence


def explorer_ids(tokenizer, text: str) -> tuple[list[int], str]:
    """The ids an explorer shows for a typed text (bos first, at most EXPLORER_MAX_TOKENS), and a
    note for the reader when the text was cut or gave no token ("" otherwise)."""
    ids = tokenizer.encode(text)
    if not ids:
        return ids, "Type some text."
    if len(ids) > EXPLORER_MAX_TOKENS:
        return ids[:EXPLORER_MAX_TOKENS], f"(the first {EXPLORER_MAX_TOKENS} of {len(ids)} tokens)"
    return ids, ""


def capture_for_explorer(model, tokenizer, ids: list[int], note: str, pattern: str, token_pick, state: dict) -> None:
    """Run the model on an explorer's ids, capturing `pattern`; keep ids, tokens, capture and note
    in `state` and refill the token picker (the last token picked) with one redraw."""
    capture = Capture(pattern)
    model(torch.tensor([ids]), capture=capture)
    tokens = tokenizer.tokens(ids, visible_whitespace=True)
    state.update(ids=ids, tokens=tokens, capture=capture, note=note, busy=True)
    try:  # one draw for the new text, not one per option change
        token_pick.options = [(f"{t}: {tok}", t) for t, tok in enumerate(tokens)]
        token_pick.value = len(tokens) - 1
    finally:
        state["busy"] = False


@torch.no_grad()
def conv_explorer(model, tokenizer, text: str, max_channels: int = 128):
    """A widget: type a text, pick a conv layer and a token; see that token's B, x, B*x, conv
    output, C and C*conv output across channels (the first `max_channels`), and the L-1 tokens
    the conv mixes in. `box.state` holds what it shows (ids, tokens, the Capture)."""
    import ipywidgets as widgets
    from IPython.display import display

    layers = _need_conv_layers(model.config)
    L = model.config.conv_L_cache
    text_box = widgets.Text(value=text, continuous_update=False, description="text",
                            layout=widgets.Layout(width="95%"))
    layer_pick = widgets.Dropdown(options=[(f"layer {i}", i) for i in layers], value=layers[0], description="conv layer")
    token_pick = widgets.Dropdown(description="token")
    sentence = widgets.HTML()
    out = widgets.Output()
    state: dict = {}

    def run(_=None):
        ids, note = explorer_ids(tokenizer, text_box.value)
        if not ids:
            state.clear()
            sentence.value = f"<i>{note}</i>"
            out.clear_output()
            return
        capture_for_explorer(model, tokenizer, ids, note, "layers.*.conv.*", token_pick, state)
        update()

    def update(_=None):
        if state.get("busy") or "capture" not in state or token_pick.value is None:
            return
        t, layer, tokens = token_pick.value, layer_pick.value, state["tokens"]
        sentence.value = sentence_html(tokens, t, window=L - 1) + (f"<i>{state['note']}</i>" if state["note"] else "")
        view = conv_token_view(state["capture"], layer, t, max_channels)
        fig = plot_conv_token(view, layer, tokens[t])
        with out:
            out.clear_output(wait=True)
            display(fig)
        plt.close(fig)

    text_box.observe(run, names="value")
    layer_pick.observe(update, names="value")
    token_pick.observe(update, names="value")
    run()
    box = widgets.VBox([text_box, widgets.HBox([layer_pick, token_pick]), sentence, out])
    box.state = state  # what it shows, for inspection
    return box
