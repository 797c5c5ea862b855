"""The routers and blocks LFM2-MoE is compared with (lfm2_edu.variants), on inputs whose answers
are worked out by hand, and the arithmetic built on them: capacity, router gradients, expert
parallelism, bytes read per decoded token, the experts a batch touches."""

import itertools
import math

import pytest
import torch

from lfm2_edu import Capture, LFM2Config, count_parameters
from lfm2_edu.mlp import SwiGLU
from lfm2_edu.moe import SparseMoE
from lfm2_edu.routing import expert_load, max_violation
from lfm2_edu import variants as V
from reference import tiny_config
from test_cache import random_model

# Four tokens, four experts. Each row is a permutation of (4, 3, 0, 0), so every token's softmax
# over all experts is (e^4, e^3, 1, 1) / Z in some order, and its top-2 logits differ by 1.
LOGITS = torch.tensor([[4.0, 3.0, 0.0, 0.0],   # top-2: experts 0, 1
                       [0.0, 4.0, 3.0, 0.0],   # 1, 2
                       [0.0, 4.0, 0.0, 3.0],   # 1, 3
                       [0.0, 0.0, 4.0, 3.0]])  # 2, 3
TOP2 = [[0, 1], [1, 2], [1, 3], [2, 3]]
Z = math.exp(4) + math.exp(3) + 2
SIG1 = 1 / (1 + math.exp(-1))  # softmax of two logits 1 apart: (sigmoid(1), 1 - sigmoid(1))


def sig(v):
    return 1 / (1 + math.exp(-v))


# ------------------------------------------------------------------------------------ routers
def test_softmax_then_top1_is_switch():
    r = V.SoftmaxTopK(1)(LOGITS)
    assert r.selected.tolist() == [[0], [1], [1], [2]]
    assert r.weights.squeeze(1).tolist() == pytest.approx([math.exp(4) / Z] * 4)  # p_i(x), not 1
    assert torch.allclose(r.scores.sum(-1), torch.ones(4))


def test_softmax_then_topk_unnormalised_and_gshard_renormalised():
    plain = V.SoftmaxTopK(2)(LOGITS)
    assert plain.selected.tolist() == TOP2
    assert plain.weights.tolist() == [pytest.approx([math.exp(4) / Z, math.exp(3) / Z])] * 4
    gshard = V.SoftmaxTopK(2, normalize=True)(LOGITS)
    assert gshard.selected.tolist() == TOP2
    assert gshard.weights.tolist() == [pytest.approx([SIG1, 1 - SIG1])] * 4


def test_mixtral_topk_then_softmax_equals_softmax_topk_renormalised():
    mixtral = V.TopKSoftmax(2)(LOGITS)
    assert mixtral.selected.tolist() == TOP2
    assert mixtral.weights.tolist() == [pytest.approx([SIG1, 1 - SIG1])] * 4
    logits = torch.randn(50, 8, generator=torch.Generator().manual_seed(0))
    a, b = V.TopKSoftmax(3)(logits), V.SoftmaxTopK(3, normalize=True)(logits)
    assert torch.equal(a.selected, b.selected)
    assert torch.allclose(a.weights, b.weights, atol=1e-6)


def test_sigmoid_router_without_bias():
    r = V.SigmoidTopK(2)(LOGITS)
    assert r.selected.tolist() == TOP2
    w = [sig(4) / (sig(4) + sig(3) + 1e-6), sig(3) / (sig(4) + sig(3) + 1e-6)]
    assert r.weights.tolist() == [pytest.approx(w)] * 4


def test_sigmoid_router_bias_only_chooses():
    """A bias of 2 on expert 3 puts it first for every token; its weight is still sigmoid(logit)."""
    r = V.SigmoidTopK(2, expert_bias=torch.tensor([0.0, 0.0, 0.0, 2.0]))(LOGITS)
    assert r.selected.tolist() == [[3, 0], [3, 1], [3, 1], [3, 2]]
    pairs = [(sig(0), sig(4)), (sig(0), sig(4)), (sig(3), sig(4)), (sig(3), sig(4))]
    assert r.weights.tolist() == [pytest.approx([a / (a + b + 1e-6), b / (a + b + 1e-6)]) for a, b in pairs]
    assert torch.allclose(r.scores, torch.sigmoid(LOGITS))


def test_sigmoid_router_is_lfm2_moe_route():
    torch.manual_seed(0)
    moe = SparseMoE(tiny_config(use_expert_bias=True, routed_scaling_factor=1.7))
    moe.expert_bias.copy_(0.3 * torch.randn(6))
    x = torch.randn(20, 32)
    want, got = moe.route(x), V.SigmoidTopK.of(moe)(moe.gate(x))
    for field in ("logits", "scores", "selection_scores", "selected", "weights"):
        assert torch.equal(getattr(want, field), getattr(got, field)), field
    assert V.SigmoidTopK.of(moe).expert_bias is moe.expert_bias  # shared, so a bias update reaches both


def test_routers_reject_bad_logits():
    with pytest.raises(ValueError, match=r"expected \(N, E\).*k = 5.*found shape \(4, 4\)"):
        V.SoftmaxTopK(5)(LOGITS)
    with pytest.raises(ValueError, match=r"found shape \(4,\)"):
        V.TopKSoftmax(2)(LOGITS[0])
    with pytest.raises(ValueError, match=r"expected logits over the 3 experts of expert_bias"):
        V.SigmoidTopK(2, torch.zeros(3))(LOGITS)


# ------------------------------------------------------------------------------------ capacity
def test_capacity_drops_second_choices_after_all_first_choices():
    """C = ceil(1 * 4 * 2 / 4) = 2. Expert 1 receives the first choices of tokens 1 and 2 and the
    second choice of token 0; first choices queue first, so token 0's second choice is dropped
    (token-by-token order would have dropped token 2's first choice instead)."""
    r = V.CapacityLimit(V.SoftmaxTopK(2, normalize=True), 1.0)(LOGITS)
    assert r.capacity == 2
    assert r.selected.tolist() == TOP2  # what the router chose is kept as it was
    assert r.dropped.tolist() == [[0, 1]]
    assert r.kept.tolist() == [[True, False], [True, True], [True, True], [True, True]]
    assert r.weights[0].tolist() == pytest.approx([SIG1, 0.0])  # not renormalised after the drop
    assert expert_load(r.selected[r.kept], 4).tolist() == [1, 2, 2, 2]


def test_capacity_factor_one_half_and_switch_top1():
    half = V.CapacityLimit(V.SoftmaxTopK(2), 0.5)(LOGITS)  # C = 1: each expert's first arrival only
    assert half.capacity == 1
    assert half.dropped.tolist() == [[0, 1], [1, 1], [2, 0], [3, 1]]  # token 2 keeps only its second choice
    switch = V.CapacityLimit(V.SoftmaxTopK(1), 1.0)(LOGITS)  # C = 1; tokens 1 and 2 both want expert 1
    assert switch.dropped.tolist() == [[2, 0]]
    assert switch.weights.squeeze(1).tolist() == pytest.approx([math.exp(4) / Z] * 2 + [0.0] + [math.exp(4) / Z])


@pytest.mark.parametrize("router_k", [1, 2, 3])
@pytest.mark.parametrize("c", [0.5, 1.0, 1.25, 2.0])
@pytest.mark.parametrize("T,E", [(7, 4), (33, 8), (100, 8)])
def test_no_expert_keeps_more_than_ceil_c_T_k_over_E(router_k, c, T, E):
    g = torch.Generator().manual_seed(T * E + router_k)
    logits = torch.randn(T, E, generator=g) + torch.linspace(0, 3, E)  # skewed: some experts overflow
    r = V.CapacityLimit(V.TopKSoftmax(router_k), c)(logits)
    bound = math.ceil(c * T * router_k / E)  # c is a binary fraction here: the float product is exact
    assert r.capacity == bound
    sent, kept = expert_load(r.selected, E), expert_load(r.selected[r.kept], E)
    assert (kept <= bound).all()
    assert torch.equal(kept, sent.clamp(max=bound))  # an expert drops only what is over its capacity
    assert len(r.dropped) == int((sent - kept).sum())
    assert (r.weights[~r.kept] == 0).all() and (r.weights[r.kept] > 0).all()


def test_capacity_of_a_decimal_factor_is_not_rounded_up_by_floats():
    assert 1.1 * 100 * 1 / 2 > 55  # 55.00000000000001 as floats: ceil would give 56
    assert V.expert_capacity(100, 2, 1, 1.1) == 55
    assert V.expert_capacity(4, 4, 2, 1.0) == 2
    with pytest.raises(ValueError, match="capacity_factor > 0.*found capacity_factor=0"):
        V.CapacityLimit(V.SoftmaxTopK(1), 0)


def test_capacity_of_E_over_k_drops_nothing():
    logits = torch.randn(16, 8, generator=torch.Generator().manual_seed(1)) + torch.linspace(0, 9, 8)
    r = V.CapacityLimit(V.SoftmaxTopK(2), 4.0)(logits)  # C = N: every token fits anywhere
    assert r.capacity == 16 and len(r.dropped) == 0 and r.kept.all()


def test_router_lineup_routes_the_same_tokens_each_its_own_way():
    lineup = V.router_lineup(2, expert_bias=torch.tensor([0.0, 0.0, 0.0, 2.0]), capacity_factor=1.0)
    out = {name: router(LOGITS) for name, router in lineup.items()}
    assert out["Switch (softmax, top-1)"].selected.tolist() == [[0], [1], [1], [2]]
    assert out["Switch, capacity factor 1.0"].dropped.tolist() == [[2, 0]]
    assert out["GShard (softmax, top-2, renormalised)"].selected.tolist() == TOP2
    assert out["GShard, capacity factor 1.0"].dropped.tolist() == [[0, 1]]
    mixtral, gshard = out["Mixtral (top-2, then softmax)"], out["GShard (softmax, top-2, renormalised)"]
    assert torch.allclose(mixtral.weights, gshard.weights)
    assert out["LFM2-MoE / DeepSeek-V3 (sigmoid, bias)"].selected[:, 0].tolist() == [3, 3, 3, 3]


# ------------------------------------------------------------------------------------ blocks
def test_block_from_sparse_moe_gives_the_layer_output_exactly():
    torch.manual_seed(0)
    moe = SparseMoE(tiny_config(use_expert_bias=True))
    moe.expert_bias.copy_(0.3 * torch.randn(6))
    x = torch.randn(2, 5, 32)
    want, _ = moe(x)
    block = V.MoEBlock.from_sparse_moe(moe)
    got, routing = block(x.view(10, 32))
    assert got.shape == (10, 32) and torch.equal(got, want.view(10, 32))
    assert block.gate is moe.gate and block.experts is moe.experts  # the weights are shared, not copied


def test_moe_input_is_what_the_model_routes():
    model = random_model(tiny_config())  # layers 1-3 are MoE
    ids = torch.tensor([[5, 9, 14, 3, 77, 21], [8, 8, 40, 2, 61, 11]])
    cap = Capture("layers.2.ffn.output", "layers.2.moe.selected")
    model(ids, capture=cap)
    x = V.moe_input(model, ids, 2)
    assert x.shape == (12, 32)
    y, routing = V.MoEBlock.from_sparse_moe(model.layers[2].feed_forward)(x)
    assert torch.allclose(y, cap["layers.2.ffn.output"].reshape(12, 32), atol=1e-6)
    assert torch.equal(routing.selected, cap["layers.2.moe.selected"].reshape(12, 2))
    with pytest.raises(ValueError, match=r"MoE layers \[1, 2, 3\], found 0"):
        V.moe_input(model, ids, 0)


def block_output_by_hand(block, x, routing):
    """sum over kept (token, slot) pairs of w * expert(x), plus the shared experts."""
    out = torch.zeros_like(x)
    for n in range(x.shape[0]):
        for j in range(routing.selected.shape[1]):
            if getattr(routing, "kept", torch.ones_like(routing.selected, dtype=torch.bool))[n, j]:
                out[n] += routing.weights[n, j] * block.experts[int(routing.selected[n, j])](x[n])
    return out if block.shared is None else out + block.shared(x)


@pytest.mark.parametrize("router", [V.SoftmaxTopK(1), V.SoftmaxTopK(2, normalize=True), V.TopKSoftmax(2),
                                    V.SigmoidTopK(2, torch.zeros(4)), V.CapacityLimit(V.SoftmaxTopK(2), 0.5)],
                         ids=["switch", "gshard", "mixtral", "sigmoid", "capacity"])
def test_block_equals_its_equation(router):
    torch.manual_seed(0)
    block = V.MoEBlock.new(8, 12, 4, router, shared_experts=1)
    x = torch.randn(9, 8)
    with torch.no_grad():
        y, routing = block(x)
        assert torch.allclose(y, block_output_by_hand(block, x, routing), atol=1e-6)


def test_capacity_bounds_what_each_expert_computes():
    """A dropped pair is not computed with weight 0: its expert never sees the token."""
    torch.manual_seed(0)
    block = V.MoEBlock.new(8, 12, 4, V.CapacityLimit(V.SoftmaxTopK(2), 1.0))
    with torch.no_grad():
        block.gate.weight[0] += 3.0  # expert 0 wanted by most tokens
    seen = {}
    for e, expert in enumerate(block.experts):
        expert.register_forward_hook(lambda m, inp, out, e=e: seen.__setitem__(e, inp[0].shape[0]))
    with torch.no_grad():
        _, r = block(torch.randn(16, 8).abs())
    assert len(r.dropped) > 0 and r.capacity == 8
    kept = expert_load(r.selected[r.kept], 4)
    assert [seen.get(e, 0) for e in range(4)] == kept.tolist()
    assert max(seen.values()) <= r.capacity


def test_shared_experts_held_as_one_wide_swiglu_are_their_sum():
    torch.manual_seed(0)
    block = V.MoEBlock.new(8, 12, 4, V.TopKSoftmax(2), shared_experts=2)
    wide = block.shared  # width 2 * 12
    parts = [SwiGLU(8, 12), SwiGLU(8, 12)]
    with torch.no_grad():
        for i, part in enumerate(parts):
            part.w1.weight.copy_(wide.w1.weight[12 * i:12 * (i + 1)])
            part.w3.weight.copy_(wide.w3.weight[12 * i:12 * (i + 1)])
            part.w2.weight.copy_(wide.w2.weight[:, 12 * i:12 * (i + 1)])
        x = torch.randn(5, 8)
        assert torch.allclose(wide(x), parts[0](x) + parts[1](x), atol=1e-6)


def test_block_rejects_bad_input():
    block = V.MoEBlock.new(8, 12, 4, V.TopKSoftmax(2))
    with pytest.raises(ValueError, match=r"expected \(N, H\) tokens with H = 8, found shape \(2, 3, 8\)"):
        block(torch.randn(2, 3, 8))
    with pytest.raises(ValueError, match="k <= 4.*k = 5"):
        V.MoEBlock.new(8, 12, 4, V.TopKSoftmax(5))


# ------------------------------------------------------------------------------ top-1, fine-grained
def test_top1_uses_half_the_expert_parameters_of_top2():
    one, two = (V.MoEBlock.new(16, 32, 8, V.SoftmaxTopK(k)).parameter_counts() for k in (1, 2))
    assert one["total"] == two["total"] == 8 * 16 + 8 * 3 * 16 * 32
    assert 2 * one["routed_active"] == two["routed_active"] == 2 * 3 * 16 * 32


def test_fine_grained_keeps_total_and_active_parameters():
    lfm2 = V.ExpertLayout(32, 4, 1792)  # LFM2-8B-A1B's MoE layer
    finer = V.fine_grained(lfm2, 2)
    assert finer == V.ExpertLayout(64, 8, 896, 0)
    shared = V.fine_grained(lfm2, 2, shared_experts=1)
    assert shared == V.ExpertLayout(63, 7, 896, 1)
    for layout in (finer, shared):
        assert layout.expert_parameters(2048) == lfm2.expert_parameters(2048)
    # the same, counted on the parameters of built blocks (small widths)
    coarse = V.ExpertLayout(4, 2, 24)
    counts = []
    for layout in (coarse, V.fine_grained(coarse, 3), V.fine_grained(coarse, 3, shared_experts=2)):
        block = V.MoEBlock.new(8, layout.intermediate_size, layout.num_experts, V.TopKSoftmax(layout.top_k),
                               layout.shared_experts)
        c = block.parameter_counts()
        counts.append((c["routed"] + c["shared"], c["routed_active"] + c["shared"]))
    assert counts[0] == counts[1] == counts[2] == (4 * 3 * 8 * 24, 2 * 3 * 8 * 24)


def test_fine_grained_combinations_deepseekmoe_example():
    """DeepSeekMoE sec. 3.1: 16 experts, top-2 give 120 sets; split in 4, 64 experts top-8 give 4,426,165,368."""
    coarse = V.ExpertLayout(16, 2, 1024)
    assert coarse.combinations == 120
    assert V.fine_grained(coarse, 4).combinations == 4_426_165_368


def test_fine_grained_rejects_what_it_cannot_split():
    with pytest.raises(ValueError, match="dividing intermediate_size=1792.*m=3"):
        V.fine_grained(V.ExpertLayout(32, 4, 1792), 3)
    with pytest.raises(ValueError, match="shared_experts < m\\*k = 8.*shared_experts=8"):
        V.fine_grained(V.ExpertLayout(32, 4, 1792), 2, shared_experts=8)
    with pytest.raises(ValueError, match="1 <= top_k <= num_experts.*num_experts=4, top_k=5"):
        V.ExpertLayout(4, 5, 64)


# --------------------------------------------------------------------------- router gradients
def gradient_case(router):
    """8 experts, top-2, 3 tokens: at most 6 experts chosen, so at least 2 that no token chose."""
    torch.manual_seed(0)
    block = V.MoEBlock.new(8, 12, 8, router).requires_grad_(False)
    return block, torch.randn(3, 8)


@pytest.mark.parametrize("router", [V.SigmoidTopK(2, torch.zeros(8)), V.TopKSoftmax(2),
                                    V.CapacityLimit(V.SigmoidTopK(2, normalize=False), 0.5)],
                         ids=["lfm2-sigmoid", "mixtral", "sigmoid-capacity"])
def test_router_gets_no_gradient_for_experts_no_token_chose(router):
    block, x = gradient_case(router)
    g = V.router_gradient(block, x)
    chosen_experts = g["chosen"].any(0)  # (E,)
    assert (~chosen_experts).sum() >= 2
    assert (g["grad"][~chosen_experts] == 0).all()  # exactly: those logits are not in the graph
    assert g["rows"].tolist() == chosen_experts.tolist()
    assert torch.equal(g["contributes"], g["chosen"])  # token n reaches row e only if n's pair (n, e) ran
    assert torch.allclose(g["grad"], g["logit_grad"].T @ x, atol=1e-6)  # dL/dW = (dL/dlogits)^T x
    if isinstance(router, V.CapacityLimit):
        dropped = g["routing"].dropped
        assert len(dropped) > 0
        experts = g["routing"].selected[dropped[:, 0], dropped[:, 1]]
        assert (g["logit_grad"][dropped[:, 0], experts] == 0).all()
    assert not any(p.requires_grad for p in block.parameters())  # left as found
    assert all(p.grad is None for p in block.parameters())


def test_softmax_over_all_experts_gives_every_router_row_a_gradient():
    block, x = gradient_case(V.SoftmaxTopK(2))
    g = V.router_gradient(block, x)
    assert (~g["chosen"].any(0)).sum() >= 2
    assert g["rows"].all() and g["contributes"].all()  # through the softmax's normaliser


def test_renormalised_top1_leaves_the_router_without_a_gradient():
    """w = p / p = 1 whatever the router says: the experts learn, the router does not."""
    block, x = gradient_case(V.SoftmaxTopK(1, normalize=True))
    assert V.router_gradient(block, x)["grad"].abs().max() < 1e-6
    block, x = gradient_case(V.SoftmaxTopK(1))  # Switch's unnormalised p_i(x)
    assert V.router_gradient(block, x)["grad"].abs().max() > 1e-3


def test_router_gradient_with_a_given_output_gradient():
    block, x = gradient_case(V.TopKSoftmax(2))
    g1 = V.router_gradient(block, x, grad_output=torch.ones(3, 8))
    g2 = V.router_gradient(block, x, grad_output=2 * torch.ones(3, 8))
    assert torch.allclose(2 * g1["grad"], g2["grad"], atol=1e-6)


# --------------------------------------------------------------------------- expert parallelism
def test_placement_decides_whether_imbalance_costs_time():
    load = torch.tensor([8, 0, 4, 4])  # mean 4, MaxVio 1
    two = V.expert_parallel_step(load, 2)  # devices {0, 1} and {2, 3} carry 8 each
    assert two["device_load"].tolist() == [[8.0, 8.0]] and two["slowdown"] == 1.0
    four = V.expert_parallel_step(load, 4, seconds_per_token=0.5)
    assert (four["seconds"], four["ideal_seconds"], four["slowdown"]) == (4.0, 2.0, 2.0)
    mixed = V.expert_parallel_step(load, 2, placement=torch.tensor([0, 1, 1, 0]))  # 8 + 4 and 4
    assert mixed["device_load"].tolist() == [[12.0, 4.0]] and mixed["slowdown"] == 1.5


def test_one_expert_per_device_turns_maxvio_into_time():
    load = torch.randint(1, 100, (16,), generator=torch.Generator().manual_seed(0))
    step = V.expert_parallel_step(load, 16, seconds_per_token=1e-6)
    assert step["slowdown"] - 1 == pytest.approx(max_violation(load))
    assert step["seconds"] == pytest.approx(float(load.max()) * 1e-6)


def test_layers_each_wait_for_their_own_busiest_device():
    load = torch.tensor([[4, 0], [0, 4]])  # balanced over the two layers together, not within one
    step = V.expert_parallel_step(load, 2)
    assert (step["seconds"], step["ideal_seconds"]) == (8.0, 4.0)


def test_expert_parallel_rejects_a_bad_placement():
    with pytest.raises(ValueError, match=r"placement of the E = 4 experts on devices 0..1, .*\[0, 1, 2, 0\]"):
        V.expert_parallel_step(torch.tensor([1, 1, 1, 1]), 2, placement=torch.tensor([0, 1, 2, 0]))


def test_expert_flops_per_token():
    assert V.expert_flops_per_token(2048, 1792) == 2 * 3 * 2048 * 1792


# ------------------------------------------------------------------------------------ inference
def test_batch1_decode_reads_the_active_weights_of_lfm2_8b_a1b():
    cfg = LFM2Config()  # LFM2-8B-A1B: 32 experts, top-4, 22 MoE layers
    assert len(cfg.moe_layers) == 22
    counts = count_parameters(cfg)
    assert V.weight_bytes_per_step(cfg, 4) == 2 * counts.active
    assert 3.0e9 < V.weight_bytes_per_step(cfg, 4) < 3.2e9  # "about 3.1 GB of bf16 weights per token"
    assert V.weight_bytes_per_step(cfg, 32) == 2 * counts.total
    assert V.weight_bytes_per_step(cfg, [4.0] * 22) == V.weight_bytes_per_step(cfg, 4)
    assert V.weight_bytes_per_step(cfg, 4, bytes_per_param=1) == counts.active
    one = V.weight_bytes_per_step(cfg, [4] * 21 + [5]) - V.weight_bytes_per_step(cfg, 4)
    assert one == 2 * 3 * 2048 * 1792  # one more expert in one layer


def test_untied_input_embedding_is_a_lookup_not_read_whole():
    tied, untied = tiny_config(), tiny_config(tie_word_embeddings=False)
    assert V.weight_bytes_per_step(untied, 2) == V.weight_bytes_per_step(tied, 2)  # the head is read either way


def test_weight_bytes_rejects_bad_expert_counts():
    with pytest.raises(ValueError, match=r"one number in \[0, 32\] or one per MoE layer \(22\)"):
        V.weight_bytes_per_step(LFM2Config(), [4] * 21)
    with pytest.raises(ValueError, match=r"\[0, 32\]"):
        V.weight_bytes_per_step(LFM2Config(), 33)


@pytest.mark.parametrize("E,k", [(4, 1), (5, 2), (6, 3)])
def test_uniform_experts_touched_equals_enumeration(E, k):
    subsets = list(itertools.combinations(range(E), k))
    for B in (1, 2, 3):
        union = [len(set().union(*batch)) for batch in itertools.product(subsets, repeat=B)]
        assert V.uniform_experts_touched(E, k, B) == pytest.approx(sum(union) / len(union))
    assert V.uniform_experts_touched(E, k, 0) == 0


def test_experts_touched_on_known_tables():
    same = torch.tensor([[0, 3]] * 12)  # every token picks experts 0 and 3
    assert V.experts_touched(same, 8, [1, 4, 12]) == {1: 2.0, 4: 2.0, 12: 2.0}
    table = torch.tensor([[0, 1], [2, 3], [0, 2], [1, 5]])
    assert V.experts_touched(table, 8, [1, 4]) == {1: 2.0, 4: 5.0}  # one token: k; all of them: 5 used
    with pytest.raises(ValueError, match=r"batch sizes in 1..4.*\[5\]"):
        V.experts_touched(table, 8, [5])


def test_experts_touched_by_a_uniform_router_matches_the_expectation():
    g = torch.Generator().manual_seed(0)
    table = torch.rand(8192, 32, generator=g).topk(4, dim=-1).indices  # uniform top-4 of 32
    measured = V.experts_touched(table, 32, [1, 2, 8, 32], trials=4)
    for B, value in measured.items():
        assert value == pytest.approx(V.uniform_experts_touched(32, 4, B), abs=0.1), B
