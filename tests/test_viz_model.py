"""The whole-model figures (chapter 07): the layer stack and the parameter counts."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from lfm2_edu import LFM2Config, count_parameters, published  # noqa: E402
from lfm2_edu.viz.model import PATH, layer_difference_table, plot_decoder_block, plot_layer_stack  # noqa: E402
from lfm2_edu.viz.model import plot_parameter_counts  # noqa: E402
from reference import tiny_config  # noqa: E402

C, A = "conv", "full_attention"


@pytest.mark.parametrize("config", [tiny_config(), tiny_config(model_type="lfm2", layer_types=[A, C, C, A])],
                         ids=["moe", "dense"])
def test_layer_stack_follows_the_config(config):
    rows, fig = plot_layer_stack(config)
    assert [r.mixer for r in rows] == config.layer_types
    assert [r.ffn == "moe" for r in rows] == [config.is_moe_layer(i) for i in range(4)]
    ax = fig.axes[0]
    assert len(ax.patches) == 2 * config.num_hidden_layers + 2  # mixer + ffn per layer, embedding, head
    texts = [t.get_text() for t in ax.texts]
    assert texts.count("attention") == len(config.attention_layers)
    assert sum("MoE" in t for t in texts) == len(config.moe_layers)
    plt.close(fig)


def test_parameter_counts_figure_shows_total_and_active():
    models = {"tiny": tiny_config(), "LFM2-8B-A1B": LFM2Config()}
    counts, fig = plot_parameter_counts(models)
    assert counts["LFM2-8B-A1B"] == count_parameters(LFM2Config())
    assert counts["tiny"].active < counts["tiny"].total
    for ax, c in zip(fig.axes, counts.values()):
        groups = [g for g, (t, _) in c.by_group.items() if t]
        widths = [p.get_width() for p in ax.patches]
        assert widths == [c.by_group[g][0] for g in groups] + [c.by_group[g][1] for g in groups]
    assert f"{published.TOTAL_PARAMETERS_B}B total,\n{published.ACTIVE_PARAMETERS_B}B active" in fig.axes[1].get_title()
    plt.close(fig)


@pytest.mark.parametrize("config", [tiny_config(), tiny_config(model_type="lfm2", layer_types=[A, C, C, A],
                                                                tie_word_embeddings=False),
                                    tiny_config(layer_types=[C, C, C, C], num_dense_layers=0), LFM2Config()],
                         ids=["moe", "dense-untied", "all-conv-all-moe", "LFM2-8B-A1B"])
def test_decoder_block_draws_the_layer_as_it_computes(config):
    block, fig = plot_decoder_block(config)
    # the residual stream meets: the embedding, per layer a norm, the mixer, an add, a norm, the
    # feed-forward, an add; then the final norm and the head. No norm right after the embedding.
    assert block.path == PATH == ["embed_tokens", "operator_norm", "mixer", "add", "ffn_norm", "feed_forward", "add",
                                  "embedding_norm", "lm_head"]
    assert block.mixers == {k: v for k, v in (("conv", config.conv_layers), ("attention", config.attention_layers)) if v}
    assert block.ffns == {k: v for k, v in (("dense", config.dense_layers), ("moe", config.moe_layers)) if v}
    assert block.tied == config.tie_word_embeddings
    texts = [t.get_text() for t in fig.axes[0].texts]
    for name, text in block.boxes.items():
        assert text in texts, name  # every box is drawn with its text
    assert ("moe" in block.boxes) == config.is_moe
    if config.is_moe:
        assert f"top-{config.num_experts_per_tok} of {config.num_experts}" in block.boxes["moe"]
    assert texts.count("+") == 2  # the two residual adds
    assert any("tied" in t for t in texts) == config.tie_word_embeddings
    assert f"× {config.num_hidden_layers}" in " ".join(texts)
    plt.close(fig)


def test_decoder_block_names_the_layers_of_each_choice():
    block, fig = plot_decoder_block(tiny_config(layer_types=[C, A, C, C], num_dense_layers=2))
    assert block.boxes["conv"].endswith("layers 0, 2-3") and block.boxes["attention"].endswith("layer 1")
    assert block.boxes["dense"].endswith("layers 0-1") and block.boxes["moe"].endswith("layers 2-3")
    block, _ = plot_decoder_block(LFM2Config())
    assert block.boxes["conv"].endswith("18 of 24 layers")  # too many runs to list in a box
    plt.close("all")


def test_layer_difference_table():
    config = tiny_config()
    text = layer_difference_table(config, [0.0, 1e-7, 2e-6, 3e-5], ["", "", "", "last"])
    lines = text.splitlines()
    assert len(lines) == 5 and "attention" in lines[2] and "moe" in lines[2] and lines[4].endswith("last")
    assert "3.00e-05" in lines[4]
    with pytest.raises(ValueError, match="expected 4 differences"):
        layer_difference_table(config, [0.0])
