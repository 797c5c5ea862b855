"""The routers and MoE blocks LFM2-MoE is compared with, and the arithmetic of running them.

Nothing the model runs imports this module: it is for comparing, not for parity. Every router
takes the (N, E) router logits of N tokens and returns a `moe.Routing` (the experts chosen, best
first, and their weights; `scores` and `selected` are all a balancing loss needs). `CapacityLimit`
returns a `CapacityRouting`, which adds the (token, slot) pairs it dropped. `MoEBlock` runs any
router over `mlp.SwiGLU` experts, (N, H) -> (N, H), and returns its routing beside its output.

LFM2-MoE's block (moe.py): s = sigmoid(logits); chosen = topk(s + b, k); w = s[chosen] / sum(w);
every chosen expert runs, no shared expert. How each variant here differs from it:

    SoftmaxTopK(k)      p = softmax(logits) over all E; chosen = topk(p, k); w = p[chosen]: the weights
                        do not sum to 1. k = 1 is Switch's router (Fedus et al. 2022, sec. 2.1).
      normalize=True    w = w / sum(w): GShard's top-2 gating (Lepikhin et al. 2021, Algorithm 1;
                        its random dispatch of the second choice, sec. 2.2, is left out)
    TopKSoftmax(k)      chosen = topk(logits, k); w = softmax(logits[chosen]): Mixtral (Jiang et al. 2024,
                        sec. 2.1). The same weights as SoftmaxTopK(normalize=True), from the k chosen
                        logits alone, so the unchosen logits get no gradient.
    SigmoidTopK(k, b)   LFM2-MoE's router itself (moe.SparseMoE.route, unchanged): sigmoid scores, a bias
                        that only chooses (DeepSeek-V3, DeepSeek-AI 2024, sec. 2.1.2).
    CapacityLimit(r, c) any router r, then each expert keeps at most C = ceil(c * N * k / E) (token, slot)
                        pairs and drops the rest: Switch's expert capacity, (tokens / experts) * c
                        (sec. 2.2, eq. 3), counted in slots for top-k. Queue order as GShard's
                        Algorithm 1: all first choices, in token order, before any second choice. A
                        dropped pair weighs 0: its expert never sees the token, and the residual
                        connection carries the token past the layer (Switch sec. 2.2).
    MoEBlock(shared_experts=Ks)  Ks experts every token goes through, unweighted, beside the routed
                        ones (DeepSeekMoE, Dai et al. 2024, sec. 3.2; DeepSeek-V3 uses one).
    fine_grained(layout, m)  each expert split into m experts of width I/m, top-(m k): the same total
                        and active parameters, C(mE, mk) expert sets instead of C(E, k) (DeepSeekMoE sec. 3.1).
    top-1 vs top-k      SoftmaxTopK(1) runs half the expert FLOPs of top-2; renormalising a single
                        weight makes it 1 and leaves the router without a gradient (router_gradient shows it).

The auxiliary load-balancing loss the softmax routers are trained with is not computed here: it
belongs with training (train.py). It needs only `routing.scores` (P) and `routing.selected` (f),
which every router below returns.

Then what the chapters measure with them, from real layers, loads and routing tables:
    moe_input              the (N, H) tokens a model's MoE layer routes, to run a block on them
    router_gradient        one backward pass: which rows of the router get a gradient, from which tokens
    expert_parallel_step   experts placed on D devices; the busiest device sets each layer's time
    weight_bytes_per_step  bytes of weights one decode step reads, given the experts each layer touches
    uniform_experts_touched / experts_touched   the union of experts a batch of tokens touches
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import torch
import torch.nn.functional as F
from torch import nn

from .config import LFM2Config
from .mlp import SwiGLU
from .moe import Routing, SparseMoE
from .params import count_parameters
from .trace import Capture


def _check_logits(logits: torch.Tensor, k: int, who: str) -> None:
    if logits.dim() != 2 or not logits.is_floating_point() or not 1 <= k <= logits.shape[-1]:
        raise ValueError(f"{who}: expected (N, E) floating-point router logits with E >= k = {k}, "
                         f"found shape {tuple(logits.shape)} of dtype {logits.dtype}")


# ------------------------------------------------------------------------------------ routers
class SoftmaxTopK(nn.Module):
    """Softmax over all E experts, then the k best (Switch with k = 1; GShard with normalize=True)."""

    def __init__(self, k: int, normalize: bool = False) -> None:
        super().__init__()
        self.k, self.normalize = k, normalize

    def forward(self, logits: torch.Tensor) -> Routing:
        _check_logits(logits, self.k, "SoftmaxTopK")
        p = torch.softmax(logits.float(), dim=-1)  # (N, E) p_i = e^{h_i} / sum_j e^{h_j}
        weights, selected = torch.topk(p, self.k, dim=-1)  # (N, k) each
        if self.normalize:
            weights = weights / weights.sum(-1, keepdim=True)  # (N, k) w_j = p_j / sum of the k chosen
        return Routing(logits, p, p, selected, weights)


class TopKSoftmax(nn.Module):
    """The k largest logits, then a softmax over those k alone (Mixtral)."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def forward(self, logits: torch.Tensor) -> Routing:
        _check_logits(logits, self.k, "TopKSoftmax")
        top, selected = torch.topk(logits, self.k, dim=-1)  # (N, k) each
        weights = torch.softmax(top.float(), dim=-1)  # (N, k) G(x) = softmax(topk(x W_g))
        return Routing(logits, torch.softmax(logits.float(), -1), logits, selected, weights)


class SigmoidTopK(nn.Module):
    """LFM2-MoE's (and DeepSeek-V3's) router: moe.SparseMoE.route itself, run on logits.

    route() computes `logits = self.gate(x)`; here the gate is the identity, so the block's own
    gate (or a logits tensor) feeds it. Every other line is the parity-tested one of moe.py.
    """

    def __init__(self, k: int, expert_bias: torch.Tensor | None = None, normalize: bool = True,
                 scale: float = 1.0) -> None:
        super().__init__()
        self.top_k, self.norm_topk_prob, self.routed_scaling_factor = k, normalize, scale  # route()'s names
        self.gate = nn.Identity()
        if expert_bias is not None:
            self.register_buffer("expert_bias", expert_bias)  # the same tensor, not a copy
        else:
            self.expert_bias = None

    @property
    def k(self) -> int:
        return self.top_k

    @classmethod
    def of(cls, moe: SparseMoE) -> "SigmoidTopK":
        """The router of an LFM2-MoE layer, sharing its expert_bias."""
        return cls(moe.top_k, moe.expert_bias, moe.norm_topk_prob, moe.routed_scaling_factor)

    def forward(self, logits: torch.Tensor) -> Routing:
        _check_logits(logits, self.k, "SigmoidTopK")
        if self.expert_bias is not None and self.expert_bias.shape != logits.shape[-1:]:
            raise ValueError(f"SigmoidTopK: expected logits over the {self.expert_bias.numel()} experts of "
                             f"expert_bias, found shape {tuple(logits.shape)}")
        return SparseMoE.route(self, logits)


@dataclass
class CapacityRouting(Routing):
    """A Routing whose experts could refuse tokens: `weights` is 0 where a pair was dropped."""

    kept: torch.Tensor  # (N, k) bool, True where the chosen expert took the token
    dropped: torch.Tensor  # (D, 2) the dropped (token, slot) pairs, in token order
    capacity: int  # C, the most (token, slot) pairs one expert keeps


def expert_capacity(num_tokens: int, num_experts: int, k: int, capacity_factor: float) -> int:
    """C = ceil(c * N * k / E): Switch's (tokens / experts) * c (sec. 2.2, eq. 3), in slots for top-k.

    c is read as the decimal it was written as (1.1 is 11/10), so C is never one too high from
    float rounding. c = 1 leaves no slack: the balanced load exactly.
    """
    if not capacity_factor > 0 or num_tokens < 1 or not 1 <= k <= num_experts:
        raise ValueError(f"expert_capacity: expected capacity_factor > 0, num_tokens >= 1 and 1 <= k <= "
                         f"num_experts, found capacity_factor={capacity_factor}, num_tokens={num_tokens}, "
                         f"k={k}, num_experts={num_experts}")
    return math.ceil(Fraction(str(capacity_factor)) * num_tokens * k / num_experts)


class CapacityLimit(nn.Module):
    """Any router, then each expert keeps at most `expert_capacity(N, E, k, c)` of the pairs sent to it."""

    def __init__(self, router: nn.Module, capacity_factor: float) -> None:
        super().__init__()
        expert_capacity(1, 1, 1, capacity_factor)  # validate c now, not at the first batch
        self.router, self.capacity_factor = router, capacity_factor

    @property
    def k(self) -> int:
        return self.router.k

    def forward(self, logits: torch.Tensor) -> CapacityRouting:
        r = self.router(logits)
        (N, k), E = r.selected.shape, logits.shape[-1]
        C = expert_capacity(N, E, k, self.capacity_factor)
        queue = r.selected.T.reshape(-1)  # (k*N,) every token's first choice, then every second, ...
        arrivals = F.one_hot(queue, E).cumsum(0)  # (k*N, E) pairs each expert has received so far
        position = arrivals.gather(1, queue[:, None]).squeeze(1) - 1  # (k*N,) place in its expert's queue
        kept = (position < C).view(k, N).T  # (N, k) the first C arrivals stay
        return CapacityRouting(r.logits, r.scores, r.selection_scores, r.selected,
                               r.weights * kept,  # (N, k) a dropped pair weighs 0
                               kept=kept, dropped=(~kept).nonzero(), capacity=C)


def running_experts(routing: Routing) -> torch.Tensor:
    """(N, k) the experts that actually run on each token: `selected`, -1 where a capacity limit dropped the pair."""
    if isinstance(routing, CapacityRouting):
        return routing.selected.masked_fill(~routing.kept, -1)  # (N, k)
    return routing.selected


def router_lineup(k: int, expert_bias: torch.Tensor | None = None,
                  capacity_factor: float = 1.25) -> dict[str, nn.Module]:
    """The routers LFM2-MoE is compared with, by name, for routing the same logits with each."""
    return {
        "Switch (softmax, top-1)": SoftmaxTopK(1),
        f"Switch, capacity factor {capacity_factor}": CapacityLimit(SoftmaxTopK(1), capacity_factor),
        f"GShard (softmax, top-{k}, renormalised)": SoftmaxTopK(k, normalize=True),
        f"GShard, capacity factor {capacity_factor}": CapacityLimit(SoftmaxTopK(k, normalize=True), capacity_factor),
        f"Mixtral (top-{k}, then softmax)": TopKSoftmax(k),
        "LFM2-MoE / DeepSeek-V3 (sigmoid, bias)": SigmoidTopK(k, expert_bias),
    }


# ------------------------------------------------------------------------------------ the block
class MoEBlock(nn.Module):
    """A router over SwiGLU experts, plus optional shared experts: (N, H) -> ((N, H), Routing).

    y = sum_{j < k, kept} w_j * expert_{chosen_j}(x) + shared(x). The Ks shared experts of width I
    are held as one SwiGLU of width Ks * I, which is their sum (as transformers' DeepSeek-V3 holds them).
    """

    def __init__(self, gate: nn.Linear, experts: nn.ModuleList, router: nn.Module,
                 shared: SwiGLU | None = None) -> None:
        super().__init__()
        if router.k > len(experts) or gate.out_features != len(experts):
            raise ValueError(f"MoEBlock: expected a gate over the {len(experts)} experts and a router with "
                             f"k <= {len(experts)}, found a gate with {gate.out_features} outputs and k = {router.k}")
        self.gate, self.experts, self.router, self.shared = gate, experts, router, shared

    @classmethod
    def new(cls, hidden_size: int, intermediate_size: int, num_experts: int, router: nn.Module,
            shared_experts: int = 0) -> "MoEBlock":
        """A block with fresh weights: E routed experts (and Ks shared ones) of width I."""
        shared = SwiGLU(hidden_size, shared_experts * intermediate_size) if shared_experts else None
        return cls(nn.Linear(hidden_size, num_experts, bias=False),  # weight (E, H)
                   nn.ModuleList(SwiGLU(hidden_size, intermediate_size) for _ in range(num_experts)), router, shared)

    @classmethod
    def from_sparse_moe(cls, moe: SparseMoE, router: nn.Module | None = None) -> "MoEBlock":
        """An LFM2-MoE layer's gate and experts (shared, not copied) behind another router
        (by default its own, which gives the layer's output exactly)."""
        return cls(moe.gate, moe.experts, SigmoidTopK.of(moe) if router is None else router)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Routing]:
        if x.dim() != 2 or x.shape[-1] != self.gate.in_features:
            raise ValueError(f"MoEBlock: expected (N, H) tokens with H = {self.gate.in_features}, "
                             f"found shape {tuple(x.shape)}")
        routing = self.router(self.gate(x))  # logits (N, E) in
        taken = running_experts(routing)  # (N, k)
        out = torch.zeros_like(x)  # (N, H)
        for e, expert in enumerate(self.experts):  # as moe.SparseMoE: each expert once, on its tokens
            token_idx, slot = torch.where(taken == e)  # (n_e,), (n_e,)
            if token_idx.numel() == 0:
                continue
            y = expert(x[token_idx]) * routing.weights[token_idx, slot, None].to(x.dtype)  # (n_e, H)
            out.index_add_(0, token_idx, y)
        if self.shared is not None:
            out = out + self.shared(x)  # (N, H) every token, weight 1
        return out, routing

    def parameter_counts(self) -> dict[str, int]:
        """Router, shared and routed-expert parameters, total and used per token (k routed experts)."""
        per_expert = sum(p.numel() for p in self.experts[0].parameters())
        router = self.gate.weight.numel()
        shared = 0 if self.shared is None else sum(p.numel() for p in self.shared.parameters())
        routed, active = len(self.experts) * per_expert, self.router.k * per_expert
        return {"router": router, "shared": shared, "routed": routed, "routed_active": active,
                "total": router + shared + routed, "active": router + shared + active}


# ------------------------------------------------------------------------ fine-grained experts
@dataclass(frozen=True)
class ExpertLayout:
    """How an MoE layer's experts are cut: E routed experts of width I, top-k, Ks shared ones."""

    num_experts: int
    top_k: int
    intermediate_size: int
    shared_experts: int = 0

    def __post_init__(self) -> None:
        E, k, I, Ks = self.num_experts, self.top_k, self.intermediate_size, self.shared_experts
        if not (1 <= k <= E and I >= 1 and Ks >= 0):
            raise ValueError(f"ExpertLayout: expected 1 <= top_k <= num_experts, intermediate_size >= 1 and "
                             f"shared_experts >= 0, found num_experts={E}, top_k={k}, intermediate_size={I}, "
                             f"shared_experts={Ks}")

    def expert_parameters(self, hidden_size: int) -> dict[str, int]:
        """SwiGLU parameters (3 H I each) of all experts, and of those one token uses."""
        each = 3 * hidden_size * self.intermediate_size
        return {"total": (self.num_experts + self.shared_experts) * each,
                "active": (self.top_k + self.shared_experts) * each}

    @property
    def combinations(self) -> int:
        """How many different sets of routed experts a token can get: C(E, k)."""
        return math.comb(self.num_experts, self.top_k)


def fine_grained(layout: ExpertLayout, granularity: int, shared_experts: int = 0) -> ExpertLayout:
    """DeepSeekMoE's fine-grained segmentation (sec. 3.1) and shared-expert isolation (sec. 3.2):
    each expert split into m of width I/m, top-(m k); then Ks of the m E experts made shared and
    k lowered to m k - Ks, so that total and active parameters stay those of `layout`."""
    m, (E, k, I) = granularity, (layout.num_experts, layout.top_k, layout.intermediate_size)
    if layout.shared_experts or m < 1 or I % m or not 0 <= shared_experts < m * k:
        raise ValueError(f"fine_grained: expected a layout without shared experts, a granularity m >= 1 "
                         f"dividing intermediate_size={I}, and 0 <= shared_experts < m*k = {m * k}; found "
                         f"shared in layout={layout.shared_experts}, m={m}, shared_experts={shared_experts}")
    return ExpertLayout(m * E - shared_experts, m * k - shared_experts, I // m, shared_experts)


# ------------------------------------------------------------------------- how the router learns
@torch.no_grad()
def moe_input(model, token_ids, layer: int) -> torch.Tensor:
    """The (N, H) tokens MoE layer `layer` of a model routes (N = B*T): ffn_norm(h + mixer(h)),
    as layer.py computes them, so that a MoEBlock on a real layer can be run (and differentiated)
    on the very tokens the model sends it. token_ids: (T,) or (B, T)."""
    if layer not in model.config.moe_layers:
        raise ValueError(f"moe_input: expected one of the MoE layers {model.config.moe_layers}, found {layer}")
    ids = torch.as_tensor(token_ids)
    ids = ids[None] if ids.dim() == 1 else ids  # (B, T)
    cap = Capture(f"layers.{layer}.input", f"layers.{layer}.mixer.output")
    model(ids.to(model.device), capture=cap)
    h = cap[f"layers.{layer}.input"] + cap[f"layers.{layer}.mixer.output"]  # (B, T, H) after the mixer's residual
    return model.layers[layer].ffn_norm(h).reshape(-1, h.shape[-1])  # (N, H)


def router_gradient(block: MoEBlock, x: torch.Tensor, grad_output: torch.Tensor | None = None,
                    seed: int = 0) -> dict:
    """One backward pass through `block` from the loss L = sum(y * g) (so dL/dy = g; g seeded
    N(0, 1) unless given) -> where the router's gradient comes from:

        grad        (E, H) gate.weight.grad = logit_grad.T @ x
        logit_grad  (N, E) dL/dlogits: token n reaches row e of the router only through this entry
        contributes (N, E) bool, logit_grad != 0
        rows        (E,) bool, the router rows that get any gradient
        chosen      (N, E) bool, the pairs whose expert ran on the token (chosen, and kept)
        routing     the block's Routing

    With the sigmoid and Mixtral routers `contributes` is `chosen`: an expert no token chose gets
    no gradient at all. A softmax over all E experts reaches every logit through its normaliser;
    renormalised weights also reach a chosen expert whose pair a capacity limit dropped. The
    block's gradients and requires_grad flags are left as they were found.
    """
    params = list(block.parameters())
    saved = [(p.requires_grad, p.grad) for p in params]
    try:
        with torch.enable_grad():
            for p in params:
                p.requires_grad_(True)
                p.grad = None
            y, routing = block(x)  # (N, H)
            routing.logits.retain_grad()
            if grad_output is None:
                grad_output = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed)).to(y)
            (y * grad_output).sum().backward()  # dL/dy = g
            grad, logit_grad = block.gate.weight.grad.detach().clone(), routing.logits.grad.detach().clone()
    finally:
        for p, (flag, g) in zip(params, saved):
            p.grad = g
            p.requires_grad_(flag)
    chosen = (running_experts(routing)[:, :, None] == torch.arange(grad.shape[0])).any(1)  # (N, E)
    return {"grad": grad, "logit_grad": logit_grad, "contributes": logit_grad != 0,
            "rows": grad.abs().sum(-1) != 0, "chosen": chosen, "routing": routing}


# ---------------------------------------------------------------------------- expert parallelism
def expert_flops_per_token(hidden_size: int, intermediate_size: int) -> int:
    """FLOPs of one SwiGLU expert on one token: three H x I matmuls, 2 FLOPs per multiply-add."""
    return 2 * 3 * hidden_size * intermediate_size


def expert_parallel_step(load: torch.Tensor, num_devices: int, seconds_per_token: float = 1.0,
                         placement: torch.Tensor | None = None) -> dict:
    """The expert compute of one step when the E experts live on D devices (expert parallelism).

    load: (E,) or (L, E) tokens per expert (per MoE layer), e.g. routing.expert_load.
    placement: (E,) the device of each expert; by default contiguous blocks, expert e on device
    floor(e D / E). A model of compute only (all-to-all traffic and overlap are left out): each
    device processes its tokens at `seconds_per_token`, the layers run one after another, and each
    layer waits for its busiest device. For one layer, slowdown = 1 + MaxVio of the device load;
    with one expert per device, 1 + MaxVio of the expert load: MaxVio in seconds.

    -> {"device_load": (L, D), "seconds": the step, "ideal_seconds": with every device equally
        loaded, "slowdown": seconds / ideal_seconds}
    """
    load = load.float()
    load = load[None] if load.dim() == 1 else load  # (L, E)
    E = load.shape[-1]
    if placement is None:
        placement = torch.arange(E) * max(num_devices, 1) // E  # (E,)
    placement = torch.as_tensor(placement, dtype=torch.long)
    if load.dim() != 2 or num_devices < 1 or placement.shape != (E,) or not (0 <= placement).all() \
            or not (placement < num_devices).all() or load.sum() <= 0 or (load < 0).any():
        raise ValueError(f"expert_parallel_step: expected a non-empty (E,) or (L, E) load, num_devices >= 1 and "
                         f"a placement of the E = {E} experts on devices 0..{num_devices - 1}, found load shape "
                         f"{tuple(load.shape)}, num_devices={num_devices}, placement {placement.tolist()}")
    device_load = torch.zeros(load.shape[0], num_devices).index_add_(1, placement, load)  # (L, D) tokens per device
    seconds = float(device_load.max(-1).values.sum()) * seconds_per_token  # sum_l max_d
    ideal = float(device_load.mean(-1).sum()) * seconds_per_token  # sum_l mean_d
    return {"device_load": device_load, "seconds": seconds, "ideal_seconds": ideal, "slowdown": seconds / ideal}


# ---------------------------------------------------------------------------- MoE inference
def weight_bytes_per_step(config: LFM2Config, experts_per_layer: float | list[float],
                          bytes_per_param: float = 2.0) -> float:
    """Bytes of weights one forward step reads when each MoE layer touches `experts_per_layer`
    experts (one number for every MoE layer, or one per MoE layer): every weight outside the
    experts, plus 3 H I per touched expert. At batch 1 a layer touches k experts, which gives
    count_parameters(config).active; touching all E gives .total. An untied input embedding is
    left out (a step reads one row per token of it); the KV cache and activations are not weights.
    """
    moe, E = config.moe_layers, config.num_experts
    touched = [float(experts_per_layer)] * len(moe) if isinstance(experts_per_layer, (int, float)) \
        else [float(t) for t in experts_per_layer]
    if len(touched) != len(moe) or any(not 0 <= t <= E for t in touched):
        raise ValueError(f"weight_bytes_per_step: expected one number in [0, {E}] or one per MoE layer "
                         f"({len(moe)}), found {experts_per_layer}")
    counts = count_parameters(config)
    other = counts.total - counts.by_group["experts"][0]  # embedding/head, norms, mixers, dense MLPs, routers
    if not config.tie_word_embeddings:
        other -= config.vocab_size * config.hidden_size  # the untied input embedding: a lookup, not a matmul
    per_expert = 3 * config.hidden_size * config.moe_intermediate_size
    return (other + sum(touched) * per_expert) * bytes_per_param


def uniform_experts_touched(num_experts: int, k: int, batch_size: int) -> float:
    """Expected number of distinct experts B tokens touch when each picks k of E uniformly:
    E (1 - (1 - k/E)^B), since one token misses a given expert with probability C(E-1, k)/C(E, k) = 1 - k/E."""
    if not 1 <= k <= num_experts or batch_size < 0:
        raise ValueError(f"uniform_experts_touched: expected 1 <= k <= num_experts and batch_size >= 0, "
                         f"found k={k}, num_experts={num_experts}, batch_size={batch_size}")
    return num_experts * (1 - (1 - k / num_experts) ** batch_size)


def experts_touched(selected: torch.Tensor, num_experts: int, batch_sizes: list[int], trials: int = 10,
                    seed: int = 0) -> dict[int, float]:
    """The union of experts a batch touches, measured on a routing table: (..., k) experts chosen
    for N tokens at one layer -> {B: mean number of distinct experts among B tokens}.

    A decode batch holds B different sequences, so its tokens are drawn at random from the table,
    not as neighbours of one text, which share experts more often than chance (Mixtral, Jiang et
    al. 2024, sec. 5; routing.consecutive_share measures it): `trials` random permutations,
    each cut into N // B disjoint batches. Seeded: the same table gives the same numbers.
    """
    sel = selected.reshape(-1, selected.shape[-1]).long()  # (N, k)
    N, k = sel.shape
    if any(not 1 <= b <= N for b in batch_sizes) or trials < 1:
        raise ValueError(f"experts_touched: expected batch sizes in 1..{N} (the tokens of the table) and "
                         f"trials >= 1, found {list(batch_sizes)} and trials={trials}")
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for b in batch_sizes:
        sizes = []
        for _ in range(trials):
            order = torch.randperm(N, generator=generator)[: N // b * b]  # (G*b,)
            batches = sel[order].view(-1, b * k)  # (G, b*k) the experts of each batch's tokens
            hit = torch.zeros(batches.shape[0], num_experts).scatter_(1, batches, 1.0)  # (G, E)
            sizes.append(hit.sum(-1))  # (G,) distinct experts per batch
        out[b] = float(torch.cat(sizes).mean())
    return out
