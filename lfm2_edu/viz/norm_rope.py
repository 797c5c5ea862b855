"""Figures for RMSNorm and RoPE (chapter 03).

- `norm_inputs`: the RMS of the residual stream that reaches every norm of the model, per token,
  and the learned weights `w` of those norms (plain `w`, initialised to 1).
- `rope_rotation`: RoPE's angles over position x frequency pair, the wavelength of each pair,
  and the scores q.k of rotated vectors, which depend only on the distance between positions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import matplotlib.pyplot as plt
import torch

from ..rope import apply_rope, rope_inv_freq
from ..trace import Capture
from . import style


# ----------------------------------------------------------------------------------- RMSNorm
@dataclass
class NormInputs:
    names: list[str]  # one row per norm input: "layer 0", ..., "final norm"
    tokens: list[str]
    rms: torch.Tensor  # (rows, T): sqrt(mean(h^2)) of the residual stream entering that norm
    weight_names: list[str]  # "L0 operator_norm", "L0 ffn_norm", ..., "embedding_norm"
    weights: list[torch.Tensor]  # each (H,): the norm's learned w


@torch.no_grad()
@style.figure
def norm_inputs(model, input_ids: torch.Tensor, tokens: list[str]) -> tuple[NormInputs, plt.Figure]:
    """RMS of the residual stream entering each layer (and the final norm), and the norm weights.

    input_ids: (1, T). The operator_norm of layer i sees `layers.{i}.input`; the final norm sees
    the output of the last layer.
    """
    n = model.config.num_hidden_layers
    cap = Capture("layers.*.input", f"layers.{n - 1}.output")
    model(input_ids, capture=cap)
    streams = [cap[f"layers.{i}.input"][0] for i in range(n)] + [cap[f"layers.{n - 1}.output"][0]]  # (T, H) each
    rms = torch.stack([s.float().pow(2).mean(-1).sqrt() for s in streams]).cpu()  # (n+1, T)
    names = [f"layer {i}" for i in range(n)] + ["final norm"]
    weight_names, weights = [], []
    for i, layer in enumerate(model.layers):
        for part in ("operator_norm", "ffn_norm"):
            weight_names.append(f"L{i} {part.split('_')[0]}")
            weights.append(getattr(layer, part).weight.detach().float().cpu())
    weight_names.append("final")
    weights.append(model.embedding_norm.weight.detach().float().cpu())
    data = NormInputs(names, list(tokens), rms, weight_names, weights)

    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(13, max(4.4, 1.6 + style.LINE_INCHES * len(names))),
                                   gridspec_kw={"width_ratios": [1.2, 1]})
    im = ax0.imshow(rms.numpy(), aspect="auto", cmap=style.SEQUENTIAL, norm=_log_norm(rms))
    ax0.set_yticks(range(len(names)), names)
    ax0.set_xticks(range(len(tokens)), tokens, rotation=90, family=style.MONO)
    ax0.set_xlabel("token")
    ax0.set_ylabel("residual stream entering")
    ax0.set_title("RMS of each norm's input (log scale)")
    fig.colorbar(im, ax=ax0, label="rms(h)")
    ax1.boxplot([w.numpy() for w in weights], showfliers=False)
    step = style.every(len(weights), 20)
    ax1.set_xticks(range(1, len(weights) + 1, step), weight_names[::step], rotation=90)
    ax1.axhline(1.0, color=style.REFERENCE, lw=1, ls="--", label="1 (initial value)")
    ax1.set_ylabel("w (per channel)")
    ax1.set_title("Learned norm weights: y = w * x / rms(x)")
    ax1.legend(loc="best")
    fig.tight_layout()
    return data, fig


def _log_norm(values: torch.Tensor):
    from matplotlib.colors import LogNorm

    positive = values[values > 0]
    low = float(positive.min()) if positive.numel() else 1e-6
    return LogNorm(vmin=low, vmax=max(float(values.max()), low * 1.001))


# --------------------------------------------------------------------------------------- RoPE
@dataclass
class RopeRotation:
    head_dim: int
    theta: float
    positions: torch.Tensor  # (P,)
    inv_freq: torch.Tensor  # (d/2,): radians per position of each pair (i, i + d/2)
    angles: torch.Tensor  # (P, d/2): position * inv_freq
    wavelengths: torch.Tensor  # (d/2,): positions per full turn, 2*pi / inv_freq
    scores: torch.Tensor  # (P, P): q rotated to position m . k rotated to position n
    by_distance: torch.Tensor  # (P,): scores at distance m - n = 0 .. P-1 (mean over each diagonal)


@torch.no_grad()
@style.figure
def rope_rotation(head_dim: int, theta: float, n_positions: int = 128, q: torch.Tensor | None = None,
                  k: torch.Tensor | None = None) -> tuple[RopeRotation, plt.Figure]:
    """RoPE's rotation over positions and frequency pairs, and q.k as a function of position.

    q, k: (head_dim,) vectors before RoPE (e.g. one head's query and key of a real token);
    random ones if not given. Each is rotated to every position 0..P-1 with the package's
    `apply_rope`, and scores[m, n] = rot(q, m) . rot(k, n).
    """
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(head_dim, generator=gen) if q is None else q.detach().float().cpu().reshape(head_dim)
    k = torch.randn(head_dim, generator=gen) if k is None else k.detach().float().cpu().reshape(head_dim)
    positions = torch.arange(n_positions)
    inv_freq = rope_inv_freq(head_dim, theta)  # (d/2,)
    angles = positions[:, None].float() * inv_freq  # (P, d/2)
    both = torch.cat((angles, angles), dim=-1)[None]  # (1, P, d): a pair's two channels share an angle
    cos, sin = both.cos(), both.sin()
    q_rot = apply_rope(q.expand(1, 1, n_positions, head_dim), cos, sin)[0, 0]  # (P, d)
    k_rot = apply_rope(k.expand(1, 1, n_positions, head_dim), cos, sin)[0, 0]  # (P, d)
    scores = q_rot @ k_rot.T  # (P, P)
    by_distance = torch.stack([scores.diagonal(-delta).mean() for delta in range(n_positions)])  # (P,)
    data = RopeRotation(head_dim, float(theta), positions, inv_freq, angles, 2 * math.pi / inv_freq, scores,
                        by_distance)

    fig, axes = plt.subplots(2, 2, figsize=(13, 7.2))
    ax = axes[0, 0]
    im = ax.imshow(angles.cos().T.numpy(), aspect="auto", cmap=style.DIVERGING, vmin=-1, vmax=1, origin="lower",
                   extent=(-0.5, n_positions - 0.5, -0.5, head_dim // 2 - 0.5), interpolation="nearest")
    ax.set_xlabel("position m")
    ax.set_ylabel("pair i (channels i, i + d/2)")
    ax.set_title(f"cos(m * inv_freq[i]), theta = {theta:g}, d = {head_dim}")
    fig.colorbar(im, ax=ax, label="cos(angle)")

    ax = axes[0, 1]
    ax.semilogy(range(head_dim // 2), data.wavelengths.numpy(), "o-", ms=3, color=style.CATEGORICAL[0])
    ax.axhline(n_positions, color=style.HIGHLIGHT, ls="--", lw=1, label=f"{n_positions} positions (left panel)")
    ax.axhline(2 * math.pi, color=style.MUTED, ls=":", lw=1.5, label="2*pi (one turn per ~6 tokens)")
    ax.set_xlabel("pair i")
    ax.set_ylabel("wavelength (positions)")
    ax.set_title("Fast pairs see neighbours, slow pairs see far")
    ax.legend()

    ax = axes[1, 0]
    lim = float(scores.abs().max())
    im = ax.imshow(scores.numpy(), cmap=style.DIVERGING, vmin=-lim, vmax=lim, interpolation="nearest")
    ax.set_xlabel("key position n")
    ax.set_ylabel("query position m")
    ax.set_title("rot(q, m) . rot(k, n): constant along diagonals")
    fig.colorbar(im, ax=ax, label="q.k")

    ax = axes[1, 1]
    ax.plot(positions.numpy(), by_distance.numpy(), lw=1.5, color=style.CATEGORICAL[0])
    ax.axhline(float(q @ k), color=style.MUTED, ls=":", lw=1.5, label="q.k without rotation (= distance 0)")
    ax.set_xlabel("distance m - n (positions)")
    ax.set_ylabel("q.k")
    ax.set_title("The score depends only on the distance")
    ax.legend()
    fig.tight_layout()
    return data, fig


def toeplitz_error(scores: torch.Tensor) -> float:
    """Largest change along any diagonal of a (P, P) matrix: 0 when it depends only on m - n."""
    return float((scores[1:, 1:] - scores[:-1, :-1]).abs().max())
