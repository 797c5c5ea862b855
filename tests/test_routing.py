"""Routing metrics on hand-made routing tables whose answers are known, and the model runs that
produce routing tables (route_tokens, collect_routing, bias_ablation)."""

import math

import pytest
import torch

from lfm2_edu import Capture
from lfm2_edu import routing as R
from lfm2_edu.cli import format_route
from lfm2_edu.moe import mixing_weights
from reference import tiny_config
from test_cache import random_model


class FakeTokenizer:
    def tokens(self, ids, visible_whitespace=False):
        return [f"<{i}>" for i in ids]


# ------------------------------------------------------------------------------------ load balance
def test_uniform_load_is_perfectly_balanced():
    load = torch.tensor([7, 7, 7, 7, 7, 7, 7, 7])
    assert R.max_violation(load) == 0.0
    assert R.coefficient_of_variation(load) == 0.0
    assert R.load_entropy(load) == pytest.approx(1.0)
    assert R.load_metrics(load) == pytest.approx({"max_violation": 0.0, "cv": 0.0, "entropy": 1.0})


@pytest.mark.parametrize("E", [2, 8, 16, 32])
def test_one_expert_taking_everything_is_the_known_maximum(E):
    load = torch.zeros(E, dtype=torch.long)
    load[E // 2] = 100
    assert R.max_violation(load) == pytest.approx(E - 1)
    assert R.coefficient_of_variation(load) == pytest.approx(math.sqrt(E - 1))
    assert R.load_entropy(load) == pytest.approx(0.0, abs=1e-6)


def test_top_k_routing_reaches_at_most_E_over_k_minus_1():
    """Every token visits experts 0 and 1: each of them gets N of the N k slots."""
    selected = torch.tensor([[0, 1], [1, 0], [0, 1], [1, 0]])  # N = 4, k = 2
    load = R.expert_load(selected, 8)
    assert load.tolist() == [4, 4, 0, 0, 0, 0, 0, 0]
    assert R.max_violation(load) == pytest.approx(8 / 2 - 1)
    assert R.load_entropy(load) == pytest.approx(math.log(2) / math.log(8))


def test_load_metrics_of_a_hand_made_load():
    load = torch.tensor([6, 4, 5, 5])  # mean 5, population std sqrt(0.5)
    assert R.max_violation(load) == pytest.approx(0.2)
    assert R.coefficient_of_variation(load) == pytest.approx(math.sqrt(0.5) / 5)
    p = torch.tensor([0.3, 0.2, 0.25, 0.25])
    assert R.load_entropy(load) == pytest.approx(float(-(p * p.log()).sum() / math.log(4)))


def test_top_expert_share_counts_tokens_not_slots():
    selected = torch.tensor([[2, 0], [2, 1], [3, 2], [0, 1]])
    assert R.top_expert_share(selected, 4) == (2, 0.75)


# -------------------------------------------------------------------------------------- per token
def test_router_entropy_known_values():
    scores = torch.tensor([[0.5, 0.5, 0.5, 0.5],  # no preference
                           [0.9, 0.0, 0.0, 0.0],  # one expert
                           [0.3, 0.3, 0.0, 0.0]])  # two alike: log 2 / log 4
    assert R.router_entropy(scores).tolist() == pytest.approx([1.0, 0.0, 0.5], abs=1e-6)
    assert R.router_entropy(scores[None]).shape == (1, 3)  # any leading shape


def test_selection_margin_is_kth_minus_next():
    sel = torch.tensor([[0.9, 0.5, 0.7, 0.1], [0.2, 0.2, 0.8, 0.2]])
    assert R.selection_margin(sel, 2).tolist() == pytest.approx([0.2, 0.0])  # a tie: margin 0
    assert R.selection_margin(sel, 1).tolist() == pytest.approx([0.2, 0.6])
    with pytest.raises(ValueError, match="expected 0 < k < E = 4, found k = 4"):
        R.selection_margin(sel, 4)


def test_rerouted_without_bias_compares_sets():
    scores = torch.tensor([[0.9, 0.8, 0.1, 0.2], [0.9, 0.8, 0.1, 0.2], [0.1, 0.2, 0.3, 0.4]])
    selected = torch.tensor([[1, 0], [0, 2], [3, 2]])  # same set reordered, one changed, same
    assert R.rerouted_without_bias(scores, selected).tolist() == [False, True, False]


# ----------------------------------------------------------------------------------- specialisation
def test_domain_specialisation_by_hand():
    tables = {"code": torch.tensor([[0, 1], [0, 2], [0, 1], [3, 0]]),  # expert 0 in every token
              "prose": torch.tensor([[2, 3], [3, 2]])}
    spec = R.domain_specialisation(tables, 4)
    assert spec["code"].tolist() == [1.0, 0.5, 0.25, 0.25]
    assert spec["prose"].tolist() == [0.0, 0.0, 1.0, 1.0]
    assert all(float(s.sum()) == pytest.approx(2) for s in spec.values())  # each row sums to k


def test_domain_specialisation_of_uniform_routing_is_k_over_E():
    E, k = 6, 2
    pairs = torch.combinations(torch.arange(E), 2)  # every pair once: each expert in 5 of 15
    assert R.domain_specialisation({"all": pairs}, E)["all"].tolist() == pytest.approx([k / E] * E)


def test_domain_information_known_values():
    own = {"a": torch.tensor([[0, 1], [1, 0]]), "b": torch.tensor([[2, 3], [3, 2]])}  # disjoint experts
    assert R.domain_information(own, 4) == pytest.approx(1.0)  # log2(2 domains)
    same = {"a": torch.tensor([[0, 1], [2, 3]]), "b": torch.tensor([[2, 3], [0, 1]])}  # identical spreads
    assert R.domain_information(same, 4) == pytest.approx(0.0, abs=1e-12)
    skewed = {"a": torch.tensor([[0, 1]] * 3), "b": torch.tensor([[0, 1]] * 5)}  # lopsided load, same spread
    assert R.domain_information(skewed, 4) == pytest.approx(0.0, abs=1e-12)
    # by hand: slots a -> (0, 0, 1, 1), b -> (0, 2, 0, 2): p(e=0) = 1/2, p(e=1) = p(e=2) = 1/4
    half = {"a": torch.tensor([[0, 1], [0, 1]]), "b": torch.tensor([[0, 2], [0, 2]])}
    assert R.domain_information(half, 3) == pytest.approx(0.5)  # H(D) - H(D | e) = 1 - 1/2 * 1


def test_vocabulary_consistency_by_hand():
    ids = torch.tensor([5, 5, 5, 5, 9, 9, 7])
    selected = torch.tensor([[0, 1], [0, 2], [0, 1], [3, 1], [2, 3], [2, 3], [1, 0]])
    vocab = R.vocabulary_specialisation(ids, selected, 4)
    # token 5: expert 0 in 3 of 4 (and 1 in 3 of 4): 0.75; token 9: 1.0; token 7: 1.0
    assert R.vocabulary_consistency(vocab) == pytest.approx((4 * 0.75 + 2 * 1.0 + 1 * 1.0) / 7)
    assert R.vocabulary_consistency(vocab, min_count=2) == pytest.approx((4 * 0.75 + 2 * 1.0) / 6)


def test_vocabulary_specialisation_by_hand():
    ids = torch.tensor([[5, 9, 5, 5]])  # (B, T)
    selected = torch.tensor([[[0, 1], [2, 3], [0, 2], [1, 0]]])  # (B, T, k)
    v = R.vocabulary_specialisation(ids, selected, 4)
    assert v["token_ids"].tolist() == [5, 9] and v["counts"].tolist() == [3, 1]
    assert v["share"][0].tolist() == pytest.approx([1.0, 2 / 3, 1 / 3, 0.0])  # token 5 always meets expert 0
    assert v["share"][1].tolist() == [0.0, 0.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="found 3 tokens and 4 routings"):
        R.vocabulary_specialisation(ids[:, :3], selected, 4)


def test_top_tokens_per_expert_by_hand():
    ids = torch.tensor([5] * 4 + [9] * 2 + [7])
    selected = torch.tensor([[0, 1]] * 3 + [[2, 1]] + [[2, 3]] * 2 + [[0, 3]])
    vocab = R.vocabulary_specialisation(ids, selected, 4)
    top = R.top_tokens(vocab, min_count=2, n=2)  # token 7 (seen once) is left out
    assert top[0] == [(5, 0.75, 4), (9, 0.0, 2)]
    assert top[1] == [(5, 1.0, 4), (9, 0.0, 2)]
    assert top[2] == [(9, 1.0, 2), (5, 0.25, 4)]
    assert top[3][0] == (9, 1.0, 2)
    assert R.top_tokens(vocab, min_count=5) == {0: [], 1: [], 2: [], 3: []}


def test_coactivation_by_hand():
    selected = torch.tensor([[0, 1], [0, 1], [0, 2], [2, 1]])
    c = R.coactivation(selected, 4)
    expected = torch.tensor([[0, 2 / 3, 1 / 3, 0],   # expert 0 (3 tokens): with 1 twice, with 2 once
                             [2 / 3, 0, 1 / 3, 0],   # expert 1 (3 tokens)
                             [1 / 2, 1 / 2, 0, 0],   # expert 2 (2 tokens)
                             [0, 0, 0, 0]])          # expert 3 never used
    assert torch.allclose(c, expected)
    assert torch.allclose(c[:3].sum(1), torch.ones(3))  # rows of used experts sum to k - 1


def test_consecutive_share_by_hand():
    seq = torch.tensor([[0, 1], [0, 2], [3, 2], [1, 0], [1, 0]])  # pairs: (first same, any same)
    # (0,1)-(0,2): yes, yes; (0,2)-(3,2): no, yes; (3,2)-(1,0): no, no; (1,0)-(1,0): yes, yes
    assert R.consecutive_share(seq) == pytest.approx({"first": 0.5, "any": 0.75})
    batch = torch.stack([torch.tensor([[0, 1], [0, 1]]), torch.tensor([[2, 3], [1, 0]])])  # (B=2, T=2, k)
    assert R.consecutive_share(batch) == pytest.approx({"first": 0.5, "any": 0.5})  # no pair across rows
    with pytest.raises(ValueError, match="at least 2 tokens"):
        R.consecutive_share(seq[:1])


def test_consecutive_baseline_is_mixtrals_and_matches_random_routing():
    assert R.consecutive_baseline(8, 2) == pytest.approx({"first": 0.125, "any": 13 / 28})  # Mixtral: 12.5%, 46%
    g = torch.Generator().manual_seed(0)
    E, k = 16, 2
    random = torch.rand(4, 20000, E, generator=g).topk(k, dim=-1).indices  # independent uniform routing
    measured, expected = R.consecutive_share(random), R.consecutive_baseline(E, k)
    assert measured["first"] == pytest.approx(expected["first"], abs=0.005)
    assert measured["any"] == pytest.approx(expected["any"], abs=0.008)


# ---------------------------------------------------------------------------------- training logs
def test_log_balance_and_tables_read_json_style_logs():
    log = {"steps": [0, 10], "load": [{"3": [4, 4, 4, 4], "2": [16, 0, 0, 0]}, {"2": [6, 4, 5, 5], "3": [8, 8, 0, 0]}],
           "expert_bias": [{"2": [0.0] * 4, "3": [0.0] * 4}, {"2": [-0.1, 0.1, 0.0, 0.0], "3": [0.0, 0.0, 0.1, 0.1]}]}
    bal = R.log_balance(log)
    assert bal["steps"] == [0, 10]
    assert sorted(bal["max_violation"]) == [2, 3]
    assert bal["max_violation"][2] == pytest.approx([3.0, 0.2]) and bal["max_violation"][3] == pytest.approx([0.0, 1.0])
    assert bal["cv"][3] == pytest.approx([0.0, 1.0])
    layers, bias = R.log_table(log, "expert_bias")
    assert layers == [2, 3] and torch.allclose(bias, torch.tensor([[-0.1, 0.1, 0.0, 0.0], [0.0, 0.0, 0.1, 0.1]]))
    layers, load = R.log_table(log, "load", step=0)
    assert load[0].tolist() == [16, 0, 0, 0]
    assert bal["noise_floor"] is None  # a log without its config: the batch size is unknown
    assert R.log_balance({"steps": [], "load": []}) == {"steps": [], "max_violation": {}, "cv": {}, "noise_floor": None}


# ------------------------------------------------------------------------------ from a model run
@torch.no_grad()
def test_route_tokens_reads_the_router_of_every_moe_layer():
    model = random_model(tiny_config())  # layer 0 dense, 1-3 MoE, 6 experts top-2
    ids = [1, 5, 9, 33, 2]
    table = R.route_tokens(model, FakeTokenizer(), ids)
    assert table.layers == [1, 2, 3] and table.dense_layers == [0] and table.num_experts == 6
    cap = Capture("layers.*.moe.*")
    model(torch.tensor([ids]), capture=cap)
    for i in table.layers:
        view = table.layer(i)
        assert torch.equal(view["selected"], cap[f"layers.{i}.moe.selected"][0])
        for name in ("scores", "selection_scores", "weights"):
            assert torch.allclose(view[name], cap[f"layers.{i}.moe.{name}"][0])
        assert torch.allclose(view["expert_bias"], model.layers[i].feed_forward.expert_bias)
        assert torch.equal(view["selected"], torch.topk(view["selection_scores"], 2).indices)  # the bias chose
    assert table.experts[2][1] == cap["layers.2.moe.selected"][0, 2].tolist()  # [token][layer position]
    assert format_route(table).splitlines()[0].split() == ["token", "│", "L1", "│", "L2", "│", "L3"]  # the CLI prints it
    with pytest.raises(ValueError, match="expected one of the MoE layers"):
        table.layer(0)


def test_route_tokens_errors():
    model = random_model(tiny_config())
    with pytest.raises(ValueError, match=r"expected MoE layers among \[1, 2, 3\], found \[0\]"):
        R.route_tokens(model, FakeTokenizer(), [1, 2], layers=[0])
    with pytest.raises(ValueError, match="expected at least one token"):
        R.route_tokens(model, FakeTokenizer(), [])
    dense = random_model(tiny_config(model_type="lfm2"))
    with pytest.raises(ValueError, match="found model_type 'lfm2' with none"):
        R.route_tokens(dense, FakeTokenizer(), [1, 2])


def test_route_tokens_without_expert_bias():
    model = random_model(tiny_config(use_expert_bias=False))
    table = R.route_tokens(model, FakeTokenizer(), [1, 2, 3])
    assert table.expert_bias == [None, None, None] and table.layer(2)["expert_bias"] is None
    assert table.scores == table.selection_scores


@torch.no_grad()
def test_collect_routing_equals_one_forward():
    model = random_model(tiny_config())
    seqs = torch.randint(0, 97, (5, 8), generator=torch.Generator().manual_seed(2))
    got = R.collect_routing(model, seqs, batch_size=2, names=("selected", "scores"))
    cap = Capture("layers.*.moe.*")
    model(seqs, capture=cap)
    assert sorted(got) == [1, 2, 3]
    for i in got:
        assert got[i]["selected"].shape == (5, 8, 2)
        assert torch.equal(got[i]["selected"], cap[f"layers.{i}.moe.selected"])
        assert torch.allclose(got[i]["scores"], cap[f"layers.{i}.moe.scores"], atol=1e-6)


@torch.no_grad()
def test_bias_ablation_reroutes_exactly_what_the_bias_chose():
    model = random_model(tiny_config())
    ids = list(range(3, 40))
    before = {i: model.layers[i].feed_forward.expert_bias.clone() for i in (1, 2, 3)}
    table = R.route_tokens(model, FakeTokenizer(), ids)
    ab = R.bias_ablation(model, ids, layers=[2])
    assert ab["zeroed"] == [2] and ab["has_bias"]
    view = table.layer(2)  # layer 2 sees the same input: its re-routing follows from its own scores
    assert torch.equal(ab["rerouted"][2], R.rerouted_without_bias(view["scores"], view["selected"]))
    assert ab["rerouted"][2].any()  # random biases of size 0.3 do change some choices
    assert not ab["rerouted"][1].any()  # upstream of the change: untouched
    assert ab["kl"].shape == (len(ids),) and (ab["kl"] >= 0).all() and ab["kl"].max() > 0
    assert all(torch.equal(model.layers[i].feed_forward.expert_bias, b) for i, b in before.items())  # restored
    everywhere = R.bias_ablation(model, ids)
    assert everywhere["zeroed"] == [1, 2, 3]
    assert torch.equal(everywhere["rerouted"][1], R.rerouted_without_bias(table.layer(1)["scores"],
                                                                          table.layer(1)["selected"]))
    with pytest.raises(ValueError, match=r"expected MoE layers among \[1, 2, 3\], found \[0\]"):
        R.bias_ablation(model, ids, layers=[0])


@torch.no_grad()
def test_bias_ablation_with_a_zero_bias_or_none_changes_nothing():
    model = random_model(tiny_config())
    for i in (1, 2, 3):
        model.layers[i].feed_forward.expert_bias.zero_()
    ab = R.bias_ablation(model, [4, 5, 6, 7])
    assert ab["has_bias"] and not any(r.any() for r in ab["rerouted"].values())
    assert ab["kl"].abs().max() < 1e-6 and not ab["top1_changed"].any()
    no_bias = R.bias_ablation(random_model(tiny_config(use_expert_bias=False)), [4, 5, 6])
    assert not no_bias["has_bias"] and not any(r.any() for r in no_bias["rerouted"].values())


def test_stand_in_model_is_a_small_moe_with_a_bias():
    model = R.stand_in_model(vocab_size=300)
    cfg = model.config
    assert cfg.is_moe and R.moe_layers(cfg) == [1, 2, 3] and cfg.vocab_size == 300
    assert model.layers[1].feed_forward.expert_bias.abs().sum() > 0
    table = R.route_tokens(model, FakeTokenizer(), [1, 2, 3])
    assert len(table.experts) == 3 and len(table.experts[0]) == 3 and len(table.experts[0][0]) == 2


@torch.no_grad()
def test_expert_bias_zeroed_restores_the_bias_even_after_an_error():
    model = random_model(tiny_config())
    bias = model.layers[2].feed_forward.expert_bias
    with R.expert_bias_zeroed(model, [2]):
        assert model.layers[2].feed_forward.expert_bias.abs().sum() == 0
        assert model.layers[1].feed_forward.expert_bias.abs().sum() > 0  # only the layers asked for
    assert model.layers[2].feed_forward.expert_bias is bias
    with pytest.raises(RuntimeError, match="boom"):
        with R.expert_bias_zeroed(model):
            raise RuntimeError("boom")
    assert model.layers[2].feed_forward.expert_bias is bias and bias.abs().sum() > 0
    with pytest.raises(ValueError, match=r"found \[0\]"):
        with R.expert_bias_zeroed(model, [0]):
            pass


def test_noise_floor_known_cases():
    from lfm2_edu.routing import max_violation_noise_floor
    # every token visits every expert when k == E: no imbalance is possible
    assert max_violation_noise_floor(50, 4, 4, trials=5) == {"mean": 0.0, "p95": 0.0}
    small, large = max_violation_noise_floor(200, 16, 2), max_violation_noise_floor(20_000, 16, 2)
    assert large["mean"] < small["mean"] / 5  # shrinks like 1/sqrt(N): 100x the tokens, ~10x smaller
    assert small["mean"] <= small["p95"]
    assert max_violation_noise_floor(200, 16, 2) == small  # seeded


def test_a_uniform_router_sits_at_the_noise_floor():
    from lfm2_edu.routing import expert_load, max_violation, max_violation_noise_floor
    g = torch.Generator().manual_seed(123)
    selected = torch.rand(5000, 16, generator=g).topk(2, dim=-1).indices  # a uniform random router
    floor = max_violation_noise_floor(5000, 16, 2)
    assert max_violation(expert_load(selected, 16)) <= 1.5 * floor["p95"]


def test_noise_floor_rejects_bad_arguments():
    from lfm2_edu.routing import max_violation_noise_floor
    with pytest.raises(ValueError, match="0 < k <= num_experts"):
        max_violation_noise_floor(10, 4, 5)


# ------------------------------------------------------------------- the floor beside every MaxVio
def test_load_noise_floor_counts_tokens_not_slots():
    load = torch.tensor([30, 10, 20, 20, 0, 40])  # 120 slots = 60 tokens x k = 2
    assert R.load_noise_floor(load, 2) == R.max_violation_noise_floor(60, 6, 2)
    with pytest.raises(ValueError, match="N tokens x k = 7 slots, found 120 slots"):
        R.load_noise_floor(load, 7)
    assert R.format_max_violation(0.2749, {"mean": 0.05, "p95": 0.0861}) == "0.27 (floor 0.09)"


def test_log_balance_gives_the_noise_floor_of_one_logged_batch():
    log = {"steps": [0], "config": {"batch_size": 2, "seq_len": 5},  # 10 tokens, k = 2: 20 slots per layer
           "load": [{"2": [8, 4, 4, 4], "3": [5, 5, 5, 5]}]}
    assert R.log_balance(log)["noise_floor"] == R.max_violation_noise_floor(10, 4, 2)


# ----------------------------------------------------------------------------- per-token measures
def test_bias_override_known_values():
    scores = torch.tensor([[0.9, 0.8, 0.1, 0.2], [0.9, 0.8, 0.1, 0.2], [0.5, 0.5, 0.5, 0.5]])
    selected = torch.tensor([[1, 0], [0, 3], [2, 3]])  # same set reordered; 0.8 given up for 0.2; a tie
    assert R.bias_override(scores, selected).tolist() == pytest.approx([0.0, 0.6, 0.0], abs=1e-6)
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(50, 8, generator=g)
    selected = torch.topk(scores + 0.3 * torch.randn(8, generator=g), 2).indices  # chosen with a bias
    over = R.bias_override(scores, selected)
    assert ((over > 0) == R.rerouted_without_bias(scores, selected)).all()  # > 0 exactly where it re-routes


def test_quantiles_known_values():
    q = R.quantiles(torch.arange(11.0))  # 0, 1, ..., 10
    assert q == pytest.approx({"mean": 5.0, "p10": 1.0, "median": 5.0, "p90": 9.0})
    with pytest.raises(ValueError, match="at least one value"):
        R.quantiles(torch.tensor([]))


# ------------------------------------------------------------------- the random re-routing control
def _own_choice_changed(cap, i, k):
    """(N,) bool: the experts used differ from the layer's own top-k of its selection scores."""
    own = torch.topk(cap[f"layers.{i}.moe.selection_scores"], k, dim=-1).indices.reshape(-1, k)
    used = cap[f"layers.{i}.moe.selected"].reshape(-1, k)
    return (own.sort(-1).values != used.sort(-1).values).any(-1)


@torch.no_grad()
def test_random_rerouting_of_no_token_changes_nothing():
    model = random_model(tiny_config())
    ids = torch.randint(0, 97, (2, 12), generator=torch.Generator().manual_seed(3))
    plain = model(ids).logits
    with R.random_rerouting(model, 0.0, seed=1):
        assert torch.equal(model(ids).logits, plain)  # identical, not just close
    effect = R.intervention_effect(model, ids, lambda: R.random_rerouting(model, 0.0))
    assert not any(r.any() for r in effect["rerouted"].values())
    assert effect["kl"].abs().max() == 0 and not effect["top1_changed"].any()


@torch.no_grad()
@pytest.mark.parametrize("mode", R.REROUTING_MODES)
def test_random_rerouting_moves_exactly_the_share_asked(mode):
    model = random_model(tiny_config())
    ids = torch.randint(0, 97, (2, 10), generator=torch.Generator().manual_seed(4))  # 20 tokens per router call
    for share, moved in ((1.0, 20), (0.25, 5)):
        cap = Capture("layers.*.moe.*")
        with R.random_rerouting(model, share, seed=0, mode=mode):
            model(ids, capture=cap)
        for i in (1, 2, 3):
            assert int(_own_choice_changed(cap, i, 2).sum()) == moved  # every layer, exactly round(share * N)
            block = model.layers[i].feed_forward
            scores, sel = cap[f"layers.{i}.moe.scores"].reshape(-1, 6), cap[f"layers.{i}.moe.selected"].reshape(-1, 2)
            assert torch.allclose(cap[f"layers.{i}.moe.weights"].reshape(-1, 2),
                                  mixing_weights(scores, sel, block.norm_topk_prob, block.routed_scaling_factor))
            assert (sel[:, 0] != sel[:, 1]).all()  # still k distinct experts
            if mode == "swap_one":  # only the last seat moves
                own = torch.topk(cap[f"layers.{i}.moe.selection_scores"].reshape(-1, 6), 2).indices
                assert torch.equal(sel[:, 0], own[:, 0])


@torch.no_grad()
def test_random_rerouting_is_seeded_per_layer_and_always_restored():
    model = random_model(tiny_config())
    ids = torch.randint(0, 97, (1, 16), generator=torch.Generator().manual_seed(5))
    plain = model(ids).logits
    runs = []
    for seed in (0, 0, 1):
        with R.random_rerouting(model, {1: 0.5, 2: 0.0, 3: 0.5}, seed=seed):
            runs.append(model(ids).logits)
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])
    cap = Capture("layers.*.moe.*")
    with R.random_rerouting(model, {2: 1.0}, layers=[2]):
        model(ids, capture=cap)
    assert not _own_choice_changed(cap, 1, 2).any() and _own_choice_changed(cap, 2, 2).all()
    with pytest.raises(RuntimeError, match="boom"):
        with R.random_rerouting(model, 1.0):
            raise RuntimeError("boom")
    assert all("route" not in model.layers[i].feed_forward.__dict__ for i in (1, 2, 3))  # the class's method again
    assert torch.equal(model(ids).logits, plain)
    for bad, match in (({"share": 1.5}, r"a share in \[0, 1\]"), ({"share": {1: 0.5}}, "for each of the layers"),
                       ({"share": 0.5, "layers": [0]}, r"among \[1, 2, 3\], found \[0\]"),
                       ({"share": 0.5, "mode": "swap"}, "expected mode in")):
        with pytest.raises(ValueError, match=match):
            with R.random_rerouting(model, **bad):
                pass


@torch.no_grad()
def test_rerouting_control_forces_the_bias_direct_share():
    model = random_model(tiny_config())
    seqs = torch.randint(0, 97, (3, 20), generator=torch.Generator().manual_seed(6))
    ctl = R.rerouting_control(model, seqs, seeds=(0, 1), batch_size=8)  # one router call for all 60 tokens
    plain = R.collect_routing(model, seqs, names=("selected", "scores"))
    for i in (1, 2, 3):
        direct = R.rerouted_without_bias(plain[i]["scores"], plain[i]["selected"]).float().mean()
        assert ctl["share"][i] == pytest.approx(float(direct))
    # the first MoE layer sees the plain inputs: the bias re-routes its direct share, random the same count
    assert ctl["bias_zeroed"]["rerouted"][1] == pytest.approx(ctl["share"][1])
    for run in ctl["random"]:
        assert run["rerouted"][1] == pytest.approx(round(ctl["share"][1] * 60) / 60)
    ab = R.bias_ablation(model, seqs[0].tolist())
    assert torch.allclose(ctl["bias_zeroed"]["effect"]["kl"][0], ab["kl"], atol=1e-6)
    assert ctl["tokens"] == 60 and [r["seed"] for r in ctl["random"]] == [0, 1]
    assert ctl["bias_zeroed"]["kl_mean"] > 0 and all(r["kl_mean"] > 0 for r in ctl["random"])


@torch.no_grad()
def test_rerouting_control_without_a_bias_re_routes_nothing():
    model = random_model(tiny_config(use_expert_bias=False))
    ctl = R.rerouting_control(model, torch.randint(0, 97, (2, 9), generator=torch.Generator().manual_seed(7)))
    assert set(ctl["share"].values()) == {0.0}
    for run in [ctl["bias_zeroed"], *ctl["random"]]:
        assert run["kl_mean"] == 0.0 and run["top1_changed"] == 0.0 and set(run["rerouted"].values()) == {0.0}
    with pytest.raises(ValueError, match=r"expected \(N, T\) token sequences, found shape \(9,\)"):
        R.rerouting_control(model, torch.arange(9))


# ------------------------------------------------------------------------------ held-out analysis
def hand_windows():
    g = torch.Generator().manual_seed(8)
    body = {"code": torch.randint(3, 20, (3, 10), generator=g), "prose": torch.randint(10, 97, (2, 12), generator=g)}
    return {d: torch.cat([torch.ones(len(b), 1, dtype=torch.long), b], 1) for d, b in body.items()}  # bos first


@torch.no_grad()
def test_held_out_analysis_equals_the_metrics_on_its_routing():
    model = random_model(tiny_config())
    windows = hand_windows()
    a = R.held_out_analysis(model, windows, min_count=2)
    assert a["domains"] == ["code", "prose"] and a["tokens"] == {"code": 30, "prose": 24}  # bos dropped
    assert a["noise_floor"] == R.max_violation_noise_floor(54, 6, 2) and a["layers"] == [1, 2, 3]
    ids = {d: w[:, 1:] for d, w in windows.items()}
    for i in (1, 2, 3):
        routed = {d: R.collect_routing(model, w, names=("selected", "scores", "selection_scores"))[i]
                  for d, w in windows.items()}
        sel = {d: r["selected"][:, 1:] for d, r in routed.items()}
        flat = torch.cat([sel[d].reshape(-1, 2) for d in sel])
        L = a["per_layer"][i]
        assert torch.equal(a["selected"]["code"][i], sel["code"]) and torch.equal(a["token_ids"]["prose"], ids["prose"])
        assert torch.equal(L["load"], R.expert_load(flat, 6)) and L["max_violation"] == R.max_violation(L["load"])
        spec = R.domain_specialisation(sel, 6)
        assert all(torch.equal(L["domain_specialisation"][d], spec[d]) for d in spec)
        top = L["top_specialisation"]
        assert top["share"] == pytest.approx(max(float(s.max()) for s in spec.values()))
        assert top["ratio"] == pytest.approx(top["share"] / (2 / 6))
        assert L["domain_information"] == pytest.approx(R.domain_information(sel, 6))
        all_ids = torch.cat([ids[d].reshape(-1) for d in ids])
        assert L["vocabulary_consistency"] == pytest.approx(
            R.vocabulary_consistency(R.vocabulary_specialisation(all_ids, flat, 6), 2))
        assert torch.equal(L["coactivation"], R.coactivation(flat, 6))
        code, prose = R.consecutive_share(sel["code"]), R.consecutive_share(sel["prose"])
        assert L["consecutive"]["first"] == pytest.approx((code["first"] * 27 + prose["first"] * 22) / 49)  # pairs
        scores = torch.cat([routed[d]["scores"][:, 1:].reshape(-1, 6) for d in routed])
        assert L["rerouted_without_bias"] == pytest.approx(float(R.rerouted_without_bias(scores, flat).float().mean()))
        selection = torch.cat([routed[d]["selection_scores"][:, 1:].reshape(-1, 6) for d in routed])
        assert L["margin"] == pytest.approx(R.quantiles(R.selection_margin(selection, 2)))
    kept = R.held_out_analysis(model, windows, drop_first=False, min_count=2)
    assert kept["tokens"] == {"code": 33, "prose": 26}


def test_held_out_analysis_rejects_bad_windows():
    model = random_model(tiny_config())
    good = hand_windows()
    for bad, match in (({}, "found dict"), ({"a": torch.rand(2, 5)}, r"2-D tensor of token ids, found torch.float32"),
                       ({"a": torch.ones(5, dtype=torch.long)}, "of shape \\(5,\\)"),
                       ({"a": torch.ones(2, 2, dtype=torch.long)}, "at least 1 window of 3 tokens, found shape \\(2, 2\\)"),
                       ({**good, "b": torch.full((1, 5), 97)}, r"token ids in \[0, 97\), found 97..97")):
        with pytest.raises(ValueError, match=match):
            R.held_out_analysis(model, bad)
    with pytest.raises(ValueError, match="found model_type 'lfm2' with none"):
        R.held_out_analysis(random_model(tiny_config(model_type="lfm2")), good)


@torch.no_grad()
def test_compare_routing_columns_and_the_untrained_twin():
    model = random_model(tiny_config())
    state = torch.get_rng_state()
    twin = R.untrained_twin(model, seed=3)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random state is left alone
    assert all(torch.equal(p, q) for p, q in zip(twin.parameters(), R.untrained_twin(model, seed=3).parameters()))
    assert twin.layers[1].feed_forward.expert_bias.abs().sum() == 0 and twin.config is model.config
    analyses = R.compare_routing(model, hand_windows(), min_count=2)
    assert list(analyses) == ["trained", "trained, bias zeroed", "untrained"]
    trained, zeroed = analyses["trained"]["per_layer"], analyses["trained, bias zeroed"]["per_layer"]
    assert trained[1]["rerouted_without_bias"] > 0  # a random bias of size 0.3 re-routes some tokens
    assert all(zeroed[i]["rerouted_without_bias"] == 0 for i in (1, 2, 3))  # nothing left to re-route
    assert all(analyses["untrained"]["per_layer"][i]["rerouted_without_bias"] == 0 for i in (1, 2, 3))
    assert model.layers[1].feed_forward.expert_bias.abs().sum() > 0  # restored
    no_bias = R.compare_routing(random_model(tiny_config(use_expert_bias=False)), hand_windows(), untrained=False)
    assert list(no_bias) == ["trained"]  # nothing to zero, no twin asked for


@torch.no_grad()
def test_summary_table_and_its_text():
    analyses = R.compare_routing(random_model(tiny_config()), hand_windows(), min_count=2)
    table = R.summary_table(analyses)
    assert table["layers"] == [1, 2, 3] and table["tokens"] == 54 and list(table["values"]) == list(analyses)
    for name, a in analyses.items():
        assert table["values"][name]["MaxVio"] == [a["per_layer"][i]["max_violation"] for i in (1, 2, 3)]
        assert table["values"][name]["median margin"] == [a["per_layer"][i]["margin"]["median"] for i in (1, 2, 3)]
    assert table["baselines"]["MaxVio"] == analyses["trained"]["noise_floor"]["p95"]
    assert table["baselines"]["same first choice, neighbours"] == pytest.approx(1 / 6)
    assert table["baselines"]["token-id consistency"] is None
    text = R.format_summary_table(table).splitlines()
    assert text[0].split() == ["L1", "L2", "L3"]
    row = next(line for line in text if line.startswith("  trained  "))  # the first metric is MaxVio
    assert [float(v) for v in row.split()[1:]] == pytest.approx(table["values"]["trained"]["MaxVio"], abs=5e-4)
    assert any(line.startswith("  noise floor (p95)") for line in text)
    other = R.held_out_analysis(random_model(tiny_config()), {"code": hand_windows()["code"]})
    with pytest.raises(ValueError, match="same layers and windows"):
        R.summary_table({"a": analyses["trained"], "b": other})


# ----------------------------------------------------------------------------- where windows come from
class WordTokenizer:
    """One token per character, ids 3 + ord(c) % 90."""

    def encode(self, text, add_special_tokens=True):
        return [3 + ord(c) % 90 for c in text]


def test_text_windows_and_the_shipped_held_out_file(tmp_path):
    from safetensors.torch import save_file
    w = R.text_windows(WordTokenizer(), {"a": "x" * 25, "b": "hello world, " * 3}, seq_len=8, max_windows=2)
    assert w["a"].shape == (2, 9) and (w["a"][:, 0] == 1).all() and (w["a"][:, 1:] == 3 + ord("x") % 90).all()
    assert w["b"].shape == (2, 9) and w["b"][1, 1:].tolist() == WordTokenizer().encode("hello world, " * 3)[8:16]
    with pytest.raises(ValueError, match="at least 9 tokens for one window of 8, found 5"):
        R.text_windows(WordTokenizer(), {"short": "abcde"}, seq_len=8)
    assert R.load_held_out(tmp_path) is None
    save_file({"data": torch.ones(2, 5, dtype=torch.long), "prose": torch.zeros(1, 5, dtype=torch.long),
               "zz": torch.ones(1, 4, dtype=torch.long)}, str(tmp_path / R.HELD_OUT_FILE))
    shipped = R.load_held_out(tmp_path)
    assert list(shipped) == ["prose", "data", "zz"]  # the corpus's order, then the others
    assert shipped["data"].shape == (2, 5) and shipped["data"].dtype == torch.long
    save_file({"prose": torch.zeros(2, 5)}, str(tmp_path / R.HELD_OUT_FILE))
    with pytest.raises(ValueError, match="expected \\(N, T\\+1\\) token ids per domain, found 'prose': torch.float32"):
        R.load_held_out(tmp_path)


# ------------------------------------------------------------------------------- the balancing toy
def test_a_uniform_simulated_router_sits_at_the_floor_and_rate_zero_never_moves_the_bias():
    sim = R.simulate_balancing(num_experts=8, k=2, tokens=256, steps=300, rate=0.0, skew=0.0, seed=1)
    assert sim["bias"].abs().max() == 0
    mean = sum(sim["max_violation"]) / len(sim["max_violation"])
    assert mean == pytest.approx(sim["noise_floor"]["mean"], rel=0.1)  # a fair router: chance alone
    assert sim["noise_floor"] == R.max_violation_noise_floor(256, 8, 2) and sim["ceiling"] == 3.0
    assert sim["load"].shape == (300, 8) and (sim["load"].sum(1) == 512).all()


def test_simulated_balancing_follows_the_update_rule_and_balances():
    from lfm2_edu.train import bias_step
    sim = R.simulate_balancing(num_experts=8, k=2, tokens=256, steps=400, rate=0.02, skew=2.0, seed=0)
    for step in (0, 1, 200):
        assert torch.allclose(sim["bias"][step + 1], bias_step(sim["bias"][step], sim["load"][step], 0.02))
    idle = R.simulate_balancing(num_experts=8, k=2, tokens=256, steps=400, rate=0.0, skew=2.0, seed=0)
    late, late_idle = (sum(s["max_violation"][-100:]) / 100 for s in (sim, idle))
    assert late < 0.5 * late_idle  # the update at least halves a skewed router's imbalance
    assert idle["max_violation"][0] == sim["max_violation"][0]  # same router, same first batch
    with pytest.raises(ValueError, match="found num_experts=4, k=4"):
        R.simulate_balancing(num_experts=4, k=4)


# ----------------------------------------------------------------------------- the expert browser
def test_expert_profile_by_hand():
    ids = {"code": torch.tensor([[5, 6, 5, 7]]), "prose": torch.tensor([[8, 5, 9], [9, 9, 8]])}
    sel = {"code": torch.tensor([[[0, 1], [2, 0], [0, 3], [1, 2]]]),
           "prose": torch.tensor([[[1, 2], [3, 0], [2, 3]], [[2, 1], [1, 3], [0, 1]]])}
    p = R.expert_profile(ids, sel, 0, 4, min_count=2, n_contexts=10, width=1)
    assert p["visits"] == 5 and p["tokens"] == 10 and p["load_share"] == 0.5 and p["uniform"] == 0.5
    spec = R.domain_specialisation(sel, 4)
    assert p["domain_share"] == pytest.approx({"code": float(spec["code"][0]), "prose": float(spec["prose"][0])})
    assert p["domain_share"] == pytest.approx({"code": 0.75, "prose": 2 / 6})
    assert p["domain_mix"] == pytest.approx({"code": 0.6, "prose": 0.4})
    assert p["first_choice_share"] == pytest.approx(3 / 5)  # code 0, code 2, prose (1, 2)
    vocab = R.vocabulary_specialisation(torch.cat([ids[d].reshape(-1) for d in ids]),
                                        torch.cat([sel[d].reshape(-1, 2) for d in sel]), 4)
    assert p["top_tokens"] == R.top_tokens(vocab, 2, 8)[0] and p["top_tokens"][0] == (5, 1.0, 3)
    assert [(c["domain"], c["window"], c["position"]) for c in p["contexts"]] == \
        [("code", 0, 0), ("code", 0, 1), ("code", 0, 2), ("prose", 0, 1), ("prose", 1, 2)]  # all 5, in order
    c = p["contexts"][1]
    assert (c["before"], c["token"], c["after"], c["experts"]) == ([5], 6, [5], [2, 0])
    assert len(R.expert_profile(ids, sel, 0, 4, n_contexts=2)["contexts"]) == 2
    with pytest.raises(ValueError, match=r"an expert in \[0, 4\), found 4"):
        R.expert_profile(ids, sel, 4, 4)


def test_held_out_windows_fall_back_to_the_corpus_split(tmp_path, monkeypatch):
    import lfm2_edu.tiny.corpus as corpus

    class Tok(WordTokenizer):  # what token_stream needs of a tokenizer
        backend = None

        def token_to_id(self, token):
            return 2

    small = corpus.Corpus(train={}, valid={"prose": ["a" * 30, "b" * 30], "code": ["c" * 40]})
    monkeypatch.setattr(corpus, "build_corpus", lambda seed: small)
    streams = []
    monkeypatch.setattr("lfm2_edu.tiny.data.token_stream", lambda backend, docs: streams.append(docs) or
                        torch.arange(3, 3 + 40 * len(docs)))
    windows, where = R.held_out_windows(tmp_path, Tok(), seq_len=10, max_windows=3)
    assert "held-out split" in where and streams == [small.valid["prose"], small.valid["code"]]
    assert windows["prose"].shape == (3, 11) and windows["code"].shape == (3, 11)
    assert windows["prose"][0].tolist() == [1] + list(range(3, 13))  # bos, then the stream
