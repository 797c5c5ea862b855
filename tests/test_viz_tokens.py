"""Token pieces, HTML and figures of chapter 02 (the shipped tokenizer, no download)."""

import html
import re

import matplotlib.pyplot as plt
import pytest
import torch

from lfm2_edu import SHIPPED_MODEL, load_tokenizer, resolve_checkpoint
from lfm2_edu.viz import tokens as vt

TEXTS = ["The import statement.", "def f(x):\n    return x * 2", "naïve café", "emoji 😀 and 𝔘", "", " \t\n"]


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(resolve_checkpoint(SHIPPED_MODEL))


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.mark.parametrize("text", TEXTS)
def test_pieces_are_the_texts_bytes_in_order(tok, text):
    pieces = vt.token_pieces(tok, text)
    assert b"".join(p.bytes for p in pieces) == text.encode("utf-8")
    assert [p.id for p in pieces] == tok.encode(text, add_special_tokens=False)
    assert all(a.end == b.start for a, b in zip(pieces, pieces[1:]))
    with_bos = vt.token_pieces(tok, text, add_special_tokens=True)
    assert with_bos[0].id == tok.bos_token_id and with_bos[0].bytes == b""
    assert [p.bytes for p in with_bos[1:]] == [p.bytes for p in pieces]


def test_token_bytes_of_special_and_bad_ids(tok):
    assert vt.token_bytes(tok, tok.eos_token_id) == b"<|im_end|>"
    with pytest.raises(ValueError, match="expected a token id"):
        vt.token_bytes(tok, tok.vocab_size + 5)


@pytest.mark.parametrize("char", ["é", "😀", "𝔘", "a"])
def test_split_characters(tok, char):
    text = f"x{char}y"
    pieces = vt.token_pieces(tok, text)
    split = vt.split_characters(tok, text)
    start = 1
    holders = [n for n, p in enumerate(pieces) if p.start < start + len(char.encode()) and p.end > start]
    if len(holders) > 1:
        assert split == [(char, holders)]
        assert b"".join(pieces[n].bytes for n in holders).endswith(char.encode()[-1:])
    else:
        assert split == []
    if char == "𝔘":  # 4 bytes that a 4096-token vocabulary does not hold whole
        assert split and len(split[0][1]) >= 2


def test_tokens_html_escapes_every_token(tok):
    text = '<script>alert("x")</script> & <|im_end|>'
    ids = tok.encode(text)
    page = vt.tokens_html(tok, ids, title="<b>title</b>")
    assert "<script" not in page and "<b>title" not in page and "&lt;b&gt;title" in page
    shown = re.findall(r'white-space:pre">(.*?)</span>', page)
    assert shown == [html.escape(t) for t in tok.tokens(ids, visible_whitespace=True)]  # every token, escaped
    assert page.count("<span") == len(ids)
    assert f"({len(ids)} tokens)" in page


def test_token_explorer_updates(tok):
    widget = vt.token_explorer(tok, "abc")
    box, special, shown = widget.children
    before = shown.value
    box.value = "<b>bold</b>"
    assert shown.value != before and "<b>bold" not in shown.value
    special.value = True
    assert "&lt;|startoftext|&gt;" in shown.value


def test_chars_per_token(tok):
    texts = {"prose": "The import statement finds a module.", "bytes": "😀😀"}
    data, fig = vt.plot_chars_per_token(tok, texts)
    for label, text in texts.items():
        n = len(tok.encode(text, add_special_tokens=False))
        assert data[label]["tokens"] == n and data[label]["chars"] == len(text)
        assert data[label]["chars_per_token"] == pytest.approx(len(text) / n)
    assert data["bytes"]["chars_per_token"] < 1 < data["prose"]["chars_per_token"]


def test_embedding_similarity():
    weight = torch.randn(50, 16)
    ids = [3, 7, 7, 11]
    data, fig = vt.plot_embedding_similarity(weight, ids, ["a", "b", "b", "c"])
    sim = data["similarity"]
    expected = torch.nn.functional.cosine_similarity(weight[ids][:, None], weight[ids][None], dim=-1)
    assert torch.allclose(sim, expected, atol=1e-6)
    assert torch.allclose(sim.diagonal(), torch.ones(4)) and sim[1, 2] == pytest.approx(1.0)
    assert data["labels"] == ["a", "b", "b", "c"] and len(fig.axes) == 2  # the map and its colour bar
