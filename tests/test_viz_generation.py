"""The generation figures (chapter 08): sampling steps on one distribution, and the cache size."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from lfm2_edu import LFM2Config  # noqa: E402
from lfm2_edu.generate import RECOMMENDED, Sampling, process_logits  # noqa: E402
from lfm2_edu.viz.generation import (cache_bytes, plot_cache_memory, plot_sampling_steps,  # noqa: E402
                                     sampling_distributions, sampling_explorer, token_label)
from reference import tiny_config  # noqa: E402
from test_cache import random_model  # noqa: E402


@pytest.fixture
def dist():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(50, generator=g) * 2  # (V,)
    seen = torch.zeros(50, dtype=torch.bool)
    seen[logits.topk(6).indices[::2]] = True  # some of the likely tokens are already in the context
    seen[logits.topk(3, largest=False).indices] = True  # and some unlikely ones (negative logits)
    return logits, seen


def label(i):
    return f"tok{i}"


def test_each_step_does_what_it_says(dist):
    logits, seen = dist
    d = sampling_distributions(logits, seen, temperatures=(0.3, 1.5), min_p=0.15, penalties=(1.5,))
    (temp_panel, minp_panel, pen_panel, all_panel) = d.values()
    base = torch.softmax(logits, -1)
    assert torch.allclose(temp_panel["T = 1 (the model)"], base)
    assert temp_panel["T = 0.3"].max() > base.max() > temp_panel["T = 1.5"].max()  # sharper, flatter
    assert torch.equal(temp_panel["T = 0.3"].argsort(), base.argsort())  # same order
    kept = minp_panel["min_p = 0.15"] > 0
    assert torch.equal(kept, base >= 0.15 * base.max())
    assert torch.isclose(minp_panel["min_p = 0.15"].sum(), torch.tensor(1.0))
    penalised = pen_panel["penalty 1.5"]
    shift = penalised.log() - base.log()  # unseen tokens all shift by the same renormalisation
    assert torch.allclose(shift[~seen], shift[~seen][0].expand((~seen).sum()), atol=1e-5)
    assert (shift[seen] < shift[~seen][0]).all()  # seen tokens lose odds against every unseen one
    chain = list(all_panel.values())[1]
    expected = torch.softmax(process_logits(logits[None], seen[None], Sampling(**RECOMMENDED))[0], -1)
    assert torch.allclose(chain, expected)


def test_sampling_figure_draws_the_top_tokens(dist):
    logits, seen = dist
    data, fig = plot_sampling_steps(logits, seen, label, top_n=8)
    top = logits.topk(8).indices
    assert data.token_ids == top.tolist() and data.labels == [f"tok{i}" for i in top.tolist()]
    assert np.array_equal(data.seen, seen[top].numpy())
    d = sampling_distributions(logits, seen)
    for (panel, series), drawn in zip(d.items(), data.panels.values()):
        for name, probs in series.items():
            assert np.allclose(drawn[name], probs[top].numpy())
    assert data.kept["the model"] == 50 and data.kept["min_p = 0.15"] == int((torch.softmax(logits, -1) >= 0.15 * torch.softmax(logits, -1).max()).sum())
    for ax, series in zip(fig.axes, data.panels.values()):
        assert len(ax.patches) == 8 * len(series)  # one bar per token and series
        ticks = [t.get_text() for t in ax.get_xticklabels()]
        assert [t.endswith("*") for t in ticks] == data.seen.tolist()  # context tokens marked
    plt.close(fig)


def test_sampling_explorer_reacts_to_its_sliders(dist):
    logits, seen = dist
    box = sampling_explorer(logits, seen, label, top_n=10)
    temperature, min_p, penalty, info = box.children[:4]
    min_p.value = 0.0
    temperature.value = 1.0
    penalty.value = 1.0
    assert "tokens left: <b>50</b>" in info.value
    min_p.value = 0.5
    left = int((torch.softmax(logits, -1) >= 0.5 * torch.softmax(logits, -1).max()).sum())
    assert f"tokens left: <b>{left}</b>" in info.value
    p_max = float(torch.softmax(logits, -1).max())
    assert f"p &lt; 0.50 &times; {p_max:.3f} = {0.5 * p_max:.4f} dropped" in info.value  # the cut it applied
    shown = info.value
    min_p.value = 0.55
    assert info.value != shown  # each min_p step shows, even where it keeps the same tokens
    plt.close("all")


def test_token_label_names_unknown_ids():
    class Tok:
        def token_text(self, i, visible_whitespace=False):
            if i >= 10:
                raise ValueError("unknown")
            return " a" if not visible_whitespace else "␣a"
    assert token_label(Tok(), 3) == "␣a" and token_label(Tok(), 12) == "#12"


@pytest.mark.parametrize("config", [tiny_config(), tiny_config(model_type="lfm2", layer_types=["conv"] * 4),
                                    tiny_config(layer_types=["full_attention"] * 4)], ids=["mixed", "conv-only", "attention-only"])
@torch.no_grad()
def test_cache_size_from_the_config_matches_the_real_cache(config):
    model = random_model(config)
    for n in (1, 5, 12):
        cache = model.new_cache()
        model(torch.randint(0, config.vocab_size, (2, n)), cache=cache)
        computed = cache_bytes(config, n, 4, batch=2)
        assert cache.memory_bytes() == {"conv": computed["conv"], "full_attention": computed["full_attention"]}


def test_cache_size_of_lfm2_8b_a1b():
    b = cache_bytes(LFM2Config(), [1, 1000], 2)
    assert (b["full_attention"] == [12 * 1024, 12_288_000]).all()  # 12 KiB per token in bf16 (LFM2_FACTS 5)
    assert (b["conv"] == 18 * 2048 * 2 * 2).all() and (b["all_attention"] == 4 * b["full_attention"]).all()


def test_cache_figure_stops_at_each_models_context_limit():
    small = tiny_config()  # max_position_embeddings 256
    measured = {4: {"conv": 1, "full_attention": 2}, 16: {"conv": 1, "full_attention": 8}}
    data, fig = plot_cache_memory({"tiny": (small, 4), "8B": (LFM2Config(), 2)}, [1, 16, 1024, 100_000],
                                  {"tiny": measured})
    assert data["tiny"]["lengths"].tolist() == [1, 16, 256]
    assert data["8B"]["lengths"].tolist() == [1, 16, 1024, 100_000]
    assert (data["8B"]["total"] == data["8B"]["conv"] + data["8B"]["full_attention"]).all()
    assert len(fig.axes[0].lines) == 4 + 2  # all-attention, total, attention, conv + measured markers
    assert fig.axes[0].get_xscale() == "log"
    plt.close(fig)
