"""Figures and explorers for chapter 02: text as tokens, tokens as vectors.

    token_bytes(tokenizer, id)          the exact bytes one token stands for
    token_pieces(tokenizer, text)       the tokens of a text, each with its bytes and byte span
    split_characters(tokenizer, text)   characters whose UTF-8 bytes fall into several tokens
    tokens_html(tokenizer, ids)         tokens as coloured boxes (HTML, escaped)
    token_explorer(tokenizer)           type text, see its tokens (ipywidgets)
    plot_chars_per_token(tokenizer, texts)          how much text one token holds, per kind of text
    plot_embedding_similarity(weight, ids, labels)  cosine similarity of a few embedding rows

Each plot function returns (data, figure).
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import matplotlib.pyplot as plt
import torch

from ..tokenizer import BYTE_OF_CHAR, Tokenizer
from . import style


# ------------------------------------------------------------------------------------ pieces
def token_bytes(tokenizer: Tokenizer, token_id: int) -> bytes:
    """The bytes a token adds to the text (b'\\xc3' for half of 'é'; the name of a special token)."""
    piece = tokenizer.backend.id_to_token(int(token_id))
    if piece is None:
        raise ValueError(f"token_bytes: expected a token id in [0, {tokenizer.vocab_size}), found {token_id}")
    if int(token_id) not in tokenizer.added_ids and tokenizer.byte_level and all(c in BYTE_OF_CHAR for c in piece):
        return bytes(BYTE_OF_CHAR[c] for c in piece)
    return tokenizer.decode([int(token_id)]).encode("utf-8")


@dataclass
class TokenPiece:
    id: int
    text: str  # readable: whitespace made visible, partial characters as <0xNN>
    bytes: bytes  # what the token adds to the UTF-8 text
    start: int  # byte span [start, end) in the text's UTF-8
    end: int


def token_pieces(tokenizer: Tokenizer, text: str, add_special_tokens: bool = False) -> list[TokenPiece]:
    """The tokens of `text` with their bytes and byte spans (special tokens added by the
    post-processor, such as bos, get an empty span)."""
    pieces, pos = [], 0
    added = tokenizer.encode(text, add_special_tokens=add_special_tokens)
    plain = tokenizer.encode(text, add_special_tokens=False)
    extra = len(added) - len(plain)  # bos in front (LFM2's post-processor adds no eos)
    for n, i in enumerate(added):
        data = b"" if n < extra else token_bytes(tokenizer, i)
        pieces.append(TokenPiece(i, tokenizer.token_text(i, visible_whitespace=True), data, pos, pos + len(data)))
        pos += len(data)
    return pieces


def split_characters(tokenizer: Tokenizer, text: str) -> list[tuple[str, list[int]]]:
    """(character, indices of the tokens holding its bytes) for every character cut across tokens."""
    pieces = token_pieces(tokenizer, text)
    found, pos = [], 0
    for char in text:
        size = len(char.encode("utf-8"))
        holders = [n for n, p in enumerate(pieces) if p.start < pos + size and p.end > pos]
        if len(holders) > 1:
            found.append((char, holders))
        pos += size
    return found


# -------------------------------------------------------------------------------------- HTML
def tokens_html(tokenizer: Tokenizer, ids, title: str | None = None) -> str:
    """Tokens as boxes in alternating tints (they mark where one token ends, nothing more);
    hovering shows the id and bytes. Every token is escaped."""
    ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
    boxes = []
    for n, i in enumerate(ids):
        text = html.escape(tokenizer.token_text(i, visible_whitespace=True))
        tip = html.escape(f"id {i}, bytes {token_bytes(tokenizer, i).hex(' ')}", quote=True)
        boxes.append(f'<span title="{tip}" style="background:{style.TINTS[n % len(style.TINTS)]};padding:1px 3px;'
                     f'margin:1px;border-radius:3px;font-family:monospace;white-space:pre">{text}</span>')
    head = f"<b>{html.escape(title)}</b> " if title else ""
    return f'<div style="line-height:1.9">{head}{"".join(boxes)} <i>({len(ids)} tokens)</i></div>'


def token_explorer(tokenizer: Tokenizer, text: str = "def area(r):\n    return 3.14 * r ** 2  # π r²"):
    """A text box and its tokens, updated as you type (hover a token for its id and bytes)."""
    import ipywidgets as widgets

    box = widgets.Textarea(value=text, layout=widgets.Layout(width="95%", height="5em"))
    special = widgets.Checkbox(value=False, description="add bos")
    shown = widgets.HTML()

    def update(_=None) -> None:
        ids = tokenizer.encode(box.value, add_special_tokens=special.value)
        chars = len(box.value)
        ratio = f", {chars / len(ids):.2f} characters per token" if ids else ""
        shown.value = tokens_html(tokenizer, ids) + f"<small>{chars} characters{html.escape(ratio)}</small>"

    box.observe(update, names="value")
    special.observe(update, names="value")
    update()
    return widgets.VBox([box, special, shown])


# ----------------------------------------------------------------------------------- figures
def chars_per_token(tokenizer: Tokenizer, texts: dict[str, str]) -> dict[str, dict[str, float]]:
    """label -> characters, UTF-8 bytes, tokens (no bos) and characters per token."""
    out = {}
    for label, text in texts.items():
        n = len(tokenizer.encode(text, add_special_tokens=False))
        out[label] = {"chars": len(text), "bytes": len(text.encode("utf-8")), "tokens": n,
                      "chars_per_token": len(text) / n if n else 0.0}
    return out


@style.figure
def plot_chars_per_token(tokenizer: Tokenizer, texts: dict[str, str], title: str = "how much text one token holds"):
    data = chars_per_token(tokenizer, texts)
    fig, ax = plt.subplots(figsize=(max(7.0, 1.5 * len(data) + 1.5), 4.4))
    labels = list(data)
    values = [data[k]["chars_per_token"] for k in labels]
    bars = ax.bar(labels, values, color=style.CATEGORICAL[0])
    for bar, k in zip(bars, labels):
        ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height(),
                f"{data[k]['chars']} chars\n{data[k]['tokens']} tokens", ha="center", va="bottom")
    ax.axhline(1.0, color=style.REFERENCE, lw=0.8, ls="--")
    ax.set_ylim(0, max(values + [1.0]) * 1.45)
    ax.set_ylabel("characters per token")
    ax.set_title(title)
    fig.tight_layout()
    return data, fig


def embedding_similarity(weight: torch.Tensor, ids) -> torch.Tensor:
    """(n, n) cosine similarity of the embedding rows `ids` of `weight` (V, H)."""
    rows = weight[torch.as_tensor(list(ids))].float()  # (n, H)
    rows = rows / rows.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return rows @ rows.T  # (n, n)


@style.figure
def plot_embedding_similarity(weight: torch.Tensor, ids, labels: list[str] | None = None,
                              title: str = "cosine similarity of token embeddings"):
    ids = list(ids)
    sim = embedding_similarity(weight, ids)
    labels = list(labels) if labels is not None else [str(i) for i in ids]
    data = {"ids": ids, "labels": labels, "similarity": sim}
    n = len(ids)
    cell = min(0.32, 5.4 / max(1, n))  # inches per token: the whole matrix fits a slide
    fig, ax = plt.subplots(figsize=(cell * n + 3.2, cell * n + 1.9))
    image = ax.imshow(sim.numpy(), cmap=style.DIVERGING, vmin=-1, vmax=1)
    ax.set_xticks(range(n), labels, rotation=90, family=style.MONO)
    ax.set_yticks(range(n), labels, family=style.MONO)
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="cosine similarity")
    fig.tight_layout()
    return data, fig


__all__ = ["TokenPiece", "chars_per_token", "embedding_similarity", "plot_chars_per_token",
           "plot_embedding_similarity", "split_characters", "token_bytes", "token_explorer", "token_pieces",
           "tokens_html"]
