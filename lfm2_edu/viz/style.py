"""The look of every figure: one palette, the colour maps, a slide size, fonts of at least 12 pt.

- Layer types look the same in every chapter: `LAYER_COLOURS` for conv, attention, the dense MLP
  and the MoE feed-forward (dense is grey everywhere: no router, nothing to choose).
- Colour-blind safe: the colours come from Okabe & Ito's set, sequential maps are perceptually
  uniform (viridis), diverging maps are red-blue, never red-green. A categorical colour is backed
  by a printed label or by position: no set of 16 or 32 hues can be told apart by every reader, so
  expert colours only help the eye follow runs, and the expert id is printed on or beside each mark.
- Slides: `SLIDE_INCHES` is a 16:9 slide. A figure shrunk to fit it keeps every text at
  `MIN_FONT_PT` or more; `audit` measures it.

    @style.figure                # draw under the course's rcParams (fonts, colour cycle, maps)
    def plot_something(...): ...
    style.audit(fig).problems()  # what breaks the rules: small text, confusable colours, foreign maps
"""

from __future__ import annotations

import colorsys
import functools
import itertools
from dataclasses import dataclass, field

import matplotlib.pyplot as plt
import numpy as np
from cycler import cycler
from matplotlib.colors import to_hex, to_rgb, to_rgba

# --------------------------------------------------------------------------------- the palette
# Okabe & Ito (2008), "Color Universal Design": told apart with any common colour-vision deficiency.
OKABE_ITO = {"blue": "#0072B2", "orange": "#E69F00", "bluish green": "#009E73", "reddish purple": "#CC79A7",
             "sky blue": "#56B4E9", "vermillion": "#D55E00", "yellow": "#F0E442", "black": "#000000"}
CATEGORICAL = [OKABE_ITO[c] for c in ("blue", "orange", "bluish green", "reddish purple", "sky blue",
                                      "vermillion", "yellow")]  # series, in this order
INK, PAPER, MUTED, FAINT = "#000000", "#FFFFFF", "#666666", "#E8E8E8"  # text, background, secondary, empty cells
REFERENCE = "#000000"  # dashed reference lines: uniform share, worst case, initial value
HIGHLIGHT = OKABE_ITO["vermillion"]  # the one thing a figure points at (chosen experts, a threshold)

LAYER_COLOURS = {"conv": OKABE_ITO["blue"], "attention": OKABE_ITO["orange"],
                 "dense": "#BBBBBB", "moe": OKABE_ITO["bluish green"]}
LAYER_LETTERS = {"conv": "C", "attention": "A", "dense": "D", "moe": "M"}  # printed on every layer box
LAYER_NAMES = {"conv": "short conv", "attention": "attention (GQA)", "dense": "dense SwiGLU", "moe": "sparse MoE"}

# Every group of parameters (params.GROUPS), the layer parts in their layer colour.
GROUP_COLOURS = {"embedding": OKABE_ITO["sky blue"], "norms": MUTED, "conv": LAYER_COLOURS["conv"],
                 "attention": LAYER_COLOURS["attention"], "dense_mlp": LAYER_COLOURS["dense"],
                 "router": OKABE_ITO["reddish purple"], "experts": LAYER_COLOURS["moe"],
                 "lm_head": OKABE_ITO["sky blue"], "header": INK}

# Experts: Paul Tol's "muted" and "light" sets (17 hues), repeated beyond; always with the id printed.
EXPERT_HUES = ["#CC6677", "#332288", "#DDCC77", "#117733", "#88CCEE", "#882255", "#44AA99", "#999933",
               "#AA4499", "#77AADD", "#EE8866", "#EEDD88", "#FFAABB", "#99DDFF", "#225555", "#BBCC33", "#AAAA00"]

# Light tints of the palette behind text (alternating token boxes: they mark boundaries, not identity).
TINTS = ("#CCE3F0", "#F8E5B8", "#C7E9DE", "#F0D7E6", "#DDEFFB", "#F5D5BF")

SEQUENTIAL = "viridis"  # one quantity, low to high
LIGHT_SEQUENTIAL = "Blues"  # under printed labels and outlines (white at 0)
DIVERGING = "RdBu_r"  # signed values or ratios around a centre: blue below, red above
COLOUR_MAPS = (SEQUENTIAL, LIGHT_SEQUENTIAL, DIVERGING)
MONO = "DejaVu Sans Mono"  # tokens, so that spaces and punctuation stay visible

# ------------------------------------------------------------------------------ size and fonts
SLIDE_INCHES = (13.333, 7.5)  # a 16:9 slide
MIN_FONT_PT = 12.0
FONT_PT = {"text": 12, "title": 13, "suptitle": 14}
LINE_INCHES = 0.23  # the height of one labelled row (a token, a layer) at 12 pt, with its gap
CHAR_INCHES = 0.105  # the width of one character of 12 pt monospace

RC = {
    "font.size": FONT_PT["text"], "axes.titlesize": FONT_PT["title"], "axes.labelsize": FONT_PT["text"],
    "xtick.labelsize": FONT_PT["text"], "ytick.labelsize": FONT_PT["text"], "legend.fontsize": FONT_PT["text"],
    "legend.title_fontsize": FONT_PT["text"], "figure.titlesize": FONT_PT["suptitle"],
    "axes.prop_cycle": cycler(color=CATEGORICAL), "image.cmap": SEQUENTIAL, "figure.dpi": 90,
    "axes.spines.top": False, "axes.spines.right": False,
    "svg.hashsalt": "lfm2_edu",  # the same figure gives the same SVG, run after run
}


def figure(draw):
    """Decorator: run a figure function under the course's rcParams. The fonts and colours are
    fixed when the artists are made, so the figure keeps them wherever it is shown or saved."""

    @functools.wraps(draw)
    def styled(*args, **kwargs):
        with plt.rc_context(RC):
            return draw(*args, **kwargs)

    return styled


def expert_colours(num_experts: int) -> np.ndarray:
    """(E, 4) RGBA, one per expert: EXPERT_HUES, repeated beyond 17. An aid for the eye; the
    expert id is what identifies an expert, printed on or beside every mark."""
    hues = np.array([to_rgba(c) for c in EXPERT_HUES])
    return hues[np.arange(num_experts) % len(hues)]


def text_colour(colour) -> str:
    """Black or white, whichever reads better on `colour` (by its luminance)."""
    r, g, b = to_rgb(colour)
    return INK if 0.299 * r + 0.587 * g + 0.114 * b > 0.55 else PAPER


def rgba_css(colour, alpha: float) -> str:
    """A colour of the palette as CSS rgba(), for the explorers' HTML."""
    r, g, b = (round(255 * v) for v in to_rgb(colour))
    return f"rgba({r},{g},{b},{alpha:.3f})"


def every(n: int, max_labels: int) -> int:
    """The step between tick labels so that at most `max_labels` of n are printed."""
    return max(1, -(-n // max_labels))


# --------------------------------------------------------------------- colour-vision checks
# Machado, Oliveira & Fernandes (2009): full protanopia, deuteranopia, tritanopia, on linear RGB.
CVD = {
    "protanopia": np.array([[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216],
                            [-0.003882, -0.048116, 1.051998]]),
    "deuteranopia": np.array([[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413],
                              [-0.011820, 0.042940, 0.968881]]),
    "tritanopia": np.array([[1.255528, -0.076749, -0.178779], [-0.078411, 0.930809, 0.147602],
                            [0.004733, 0.691367, 0.303900]]),
}
CONFUSABLE_DELTA_E = 15.0  # CIELAB distance below which two colours of a plot read as one


def _linear(rgb) -> np.ndarray:
    c = np.asarray(rgb, dtype=float)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _lab(linear_rgb) -> np.ndarray:
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ linear_rgb
    xyz = xyz / np.array([0.95047, 1.0, 1.08883])  # D65 white
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def delta_e(a, b, vision: str | None = None) -> float:
    """CIELAB distance of two colours, as seen with normal vision or one of CVD's deficiencies."""
    la, lb = _linear(to_rgb(a)), _linear(to_rgb(b))
    if vision is not None:
        la, lb = np.clip(CVD[vision] @ la, 0, 1), np.clip(CVD[vision] @ lb, 0, 1)
    return float(np.linalg.norm(_lab(la) - _lab(lb)))


def confusable(a, b) -> str | None:
    """The deficiency under which two colours, distinct to normal vision, read as one; else None."""
    if delta_e(a, b) < CONFUSABLE_DELTA_E:
        return None  # the same colour to everyone: not a distinction at all
    return next((v for v in CVD if delta_e(a, b, v) < CONFUSABLE_DELTA_E), None)


def hue_family(colour) -> str | None:
    """'red', 'green' or None (greys, and every other hue)."""
    h, s, v = colorsys.rgb_to_hsv(*to_rgb(colour))
    if s < 0.25 or v < 0.2:
        return None
    degrees = 360 * h
    return "red" if degrees < 20 or degrees >= 330 else "green" if 75 <= degrees < 165 else None


# --------------------------------------------------------------------------------- the audit
@dataclass
class Audit:
    """What `audit` measured on one figure."""

    inches: tuple[float, float]  # the saved figure's size (tight bounding box)
    slide_scale: float  # how much it shrinks to fit SLIDE_INCHES (1: it fits)
    smallest_font_pt: float  # the smallest text, at slide size
    small_texts: list[tuple[str, float]] = field(default_factory=list)  # (text, pt at slide size) below MIN_FONT_PT
    red_green: list[tuple[str, str]] = field(default_factory=list)  # red and green marks a CVD reader confuses
    legend_by_hue_only: list[tuple[str, str, str]] = field(default_factory=list)  # (entry, entry, deficiency)
    colour_maps: set[str] = field(default_factory=set)

    def problems(self) -> list[str]:
        out = [f"text {t!r} is {pt:.1f} pt at slide size (at least {MIN_FONT_PT:g})" for t, pt in self.small_texts[:5]]
        out += [f"red {a} and green {b}: one colour to a red-green colour-blind reader" for a, b in self.red_green[:5]]
        out += [f"legend entries {a!r} and {b!r} differ only by hue, one colour under {v}"
                for a, b, v in self.legend_by_hue_only]
        out += [f"colour map {m!r} is not one of the style's {COLOUR_MAPS}" for m in sorted(self.colour_maps)
                if m not in COLOUR_MAPS]
        return out


def _marks(fig) -> list[str]:
    """Hex colours of the lines, patches and markers of a figure (not greys, black or white; not
    what a colour map paints, such as heatmaps and colour bars)."""
    from matplotlib.collections import Collection
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    found = set()
    for artist in fig.findobj(lambda a: isinstance(a, (Line2D, Patch, Collection)) and a.get_visible()):
        if isinstance(artist, Collection) and artist.get_array() is not None:
            continue  # coloured by a colour map: checked as a map
        if isinstance(artist, Line2D):
            colours = [artist.get_color()] if artist.get_linestyle() not in ("None", "") or artist.get_marker() else []
        elif isinstance(artist, Patch):
            colours = ([artist.get_facecolor()] if artist.get_fill() else []) + [artist.get_edgecolor()]
        else:
            colours = [c for c in np.atleast_2d(artist.get_facecolor())] + [c for c in np.atleast_2d(artist.get_edgecolor())]
        for c in colours:
            rgba = to_rgba(c)
            if rgba[3] > 0.05 and hue_family(rgba) is not None:
                found.add(to_hex(rgba))
    return sorted(found)


def _legend_entries(fig):
    """(label, colour, everything else that tells the entry apart) for every legend entry."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None] + list(fig.legends)
    for legend in legends:
        for handle, text in zip(legend.legend_handles, legend.get_texts()):
            if isinstance(handle, Line2D):
                style = (handle.get_linestyle(), handle.get_marker(), round(handle.get_linewidth(), 1))
                colour = handle.get_color()
            elif isinstance(handle, Patch):
                style = (handle.get_hatch(), handle.get_fill(), round(handle.get_alpha() or 1.0, 2))
                colour = handle.get_facecolor()
            else:
                continue
            yield text.get_text(), to_hex(colour), style


def audit(fig) -> Audit:
    """Measure a figure against the rules: every text at MIN_FONT_PT or more once the figure is
    shrunk to a slide; no red mark beside a green one that a red-green colour-blind reader
    confuses; no two legend entries told apart by hue alone when some reader sees one hue; only
    the style's colour maps."""
    from matplotlib.text import Text

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = fig.get_tightbbox(renderer)
    inches = (float(box.width), float(box.height))
    scale = min(1.0, SLIDE_INCHES[0] / inches[0], SLIDE_INCHES[1] / inches[1])
    texts = [(t.get_text(), t.get_fontsize() * scale) for t in fig.findobj(Text)
             if t.get_visible() and t.get_text().strip() and t.get_window_extent(renderer).width > 0]
    result = Audit(inches, scale, min((pt for _, pt in texts), default=float("inf")))
    result.small_texts = [(t, pt) for t, pt in texts if pt < MIN_FONT_PT - 1e-6]
    marks = _marks(fig)
    result.red_green = [(a, b) for a, b in itertools.permutations(marks, 2)
                        if hue_family(a) == "red" and hue_family(b) == "green"
                        and confusable(a, b) in ("protanopia", "deuteranopia")]
    entries = list(_legend_entries(fig))
    for (la, ca, sa), (lb, cb, sb) in itertools.combinations(entries, 2):
        if sa == sb and (v := confusable(ca, cb)):
            result.legend_by_hue_only.append((la, lb, v))
    mapped = [a for ax in fig.axes for a in [*ax.images, *ax.collections] if a.get_array() is not None]
    result.colour_maps = {a.get_cmap().name for a in mapped}
    return result


__all__ = ["CATEGORICAL", "COLOUR_MAPS", "DIVERGING", "EXPERT_HUES", "GROUP_COLOURS", "LAYER_COLOURS",
           "LAYER_LETTERS", "LAYER_NAMES", "LIGHT_SEQUENTIAL", "MIN_FONT_PT", "OKABE_ITO", "RC", "SEQUENTIAL",
           "SLIDE_INCHES", "Audit", "audit", "confusable", "delta_e", "expert_colours", "figure", "hue_family",
           "rgba_css", "text_colour"]
