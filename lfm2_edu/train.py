"""Training a (small) LFM2-MoE: next-token loss, AdamW, warmup + cosine schedule, and one of three
ways to keep the experts' load balanced (`TrainConfig.balance`).

A router trained only by the language-model loss tends to collapse: experts that win early get
more tokens, get better, and win more. Three recipes, compared by the shipped models:

- "bias": a per-expert bias b is added to the scores when *choosing* experts (never when mixing
  them), and after every step nudged towards balance, with no gradient involved:
      load_i = tokens routed to expert i in this step (per MoE layer)
      b_i   += u * sign(mean(load) - load_i)                    u ~ 1e-3
  This is the update rule of auxiliary-loss-free balancing (Wang et al. 2024), which DeepSeek-V3
  uses (beside a small sequence-wise balance loss, alpha = 1e-4). LFM2-MoE's checkpoints carry
  such a selection-only `expert_bias` buffer; LiquidAI has not published how it was trained, so
  training it with this rule is an assumption by analogy.
- "aux_loss": the auxiliary load-balancing loss of Switch Transformer / GShard, added to the
  language-model loss in every MoE layer, optionally with the router z-loss of ST-MoE:
      f_i = share of the layer's N*k routing slots that went to expert i   (counts: no gradient)
      P_i = mean over tokens of s_i / sum_j s_j                             (the router's normalised scores)
      aux = alpha * E * sum_i f_i * P_i        = alpha when the load is uniform
      z   = beta * mean_t logsumexp(logits_t)^2
  The gradient reaches the router through P: experts that get too many slots are scored down.
- "none": the language-model loss alone.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from .model import LFM2Model
from .routing import expert_load, max_violation
from .trace import Capture


BALANCING = ("bias", "aux_loss", "none")


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 16  # sequences per step
    seq_len: int = 256  # tokens per sequence
    lr: float = 3e-3
    min_lr_ratio: float = 0.1  # the cosine ends at lr * min_lr_ratio
    warmup_steps: int = 50
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    balance: str = "bias"  # one of BALANCING: "bias", "aux_loss" or "none"
    bias_update_rate: float = 1e-3  # u, for "bias"
    aux_loss_coef: float = 1e-2  # alpha, for "aux_loss" (Switch Transformer's value)
    z_loss_coef: float = 0.0  # beta, for "aux_loss" (ST-MoE used 1e-3); 0 turns it off
    seed: int = 0
    log_every: int = 10


@dataclass
class TrainLog:
    """What happened, every `log_every` steps: enough to redraw every training figure."""

    config: dict
    steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    load: list[dict[int, list[int]]] = field(default_factory=list)  # MoE layer -> tokens per expert
    expert_bias: list[dict[int, list[float]]] = field(default_factory=list)
    aux_loss: list[float] = field(default_factory=list)  # summed over MoE layers ("aux_loss" only)
    z_loss: list[float] = field(default_factory=list)
    seconds: float = 0.0
    tokens: int = 0


@torch.no_grad()
def init_weights(model: LFM2Model, std: float = 0.02) -> LFM2Model:
    """Fresh weights as the reference initialises them: N(0, std) matrices, unit norms, zero biases.

    (torch's own defaults would give the tied head logits of size sqrt(H) at the start.)
    """
    for name, p in model.named_parameters():
        if name.endswith("norm.weight"):
            p.fill_(1.0)
        elif name.endswith(".bias"):
            p.zero_()
        else:
            p.normal_(0.0, std)
    for name, b in model.named_buffers():
        if name.endswith("expert_bias"):
            b.zero_()
    return model


def learning_rate(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps  # linear warmup
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


def expert_loads(capture: Capture, model: LFM2Model) -> dict[int, torch.Tensor]:
    """Tokens routed to each expert, per MoE layer, from a Capture of `layers.*.moe.selected`."""
    E = model.config.num_experts
    return {i: expert_load(capture[f"layers.{i}.moe.selected"], E) for i in model.config.moe_layers}


def load_balancing_loss(scores: torch.Tensor, selected: torch.Tensor, alpha: float) -> torch.Tensor:
    """Switch / GShard auxiliary loss of one MoE layer: alpha * E * sum_i f_i * P_i.

    scores: (N, E) the router's sigmoid scores (with their gradient); selected: (N, k) the chosen
    experts. f counts slots, so it carries no gradient; P does. alpha when the load is uniform.
    """
    N, E = scores.shape
    f = expert_load(selected, E).to(scores.dtype) / selected.numel()  # (E,) share of the N*k slots
    P = (scores / scores.sum(-1, keepdim=True)).mean(0)  # (E,) mean normalised score
    return alpha * E * (f * P).sum()


def router_z_loss(logits: torch.Tensor, beta: float) -> torch.Tensor:
    """ST-MoE's router z-loss (Zoph et al. 2022, eq. 5): beta * mean_t logsumexp(logits_t)^2.
    It keeps router logits small, which keeps the router's arithmetic stable. logits: (N, E)."""
    return beta * torch.logsumexp(logits.float(), dim=-1).pow(2).mean()


def bias_step(bias: torch.Tensor, load: torch.Tensor, rate: float) -> torch.Tensor:
    """One layer's (E,) bias after a step with (E,) load: b_i + u * sign(mean_load - load_i)."""
    load = load.to(bias.device, torch.float32)
    return bias + rate * torch.sign(load.mean() - load)  # (E,)


@torch.no_grad()
def update_expert_bias(model: LFM2Model, loads: dict[int, torch.Tensor], rate: float) -> None:
    """b_i += u * sign(mean_load - load_i) in every MoE layer (bias_step, in place)."""
    for i, load in loads.items():
        bias = model.layers[i].feed_forward.expert_bias
        bias.copy_(bias_step(bias, load, rate))


def train(model: LFM2Model, batches, cfg: TrainConfig, progress: bool = True, callback=None) -> TrainLog:
    """Train `model` in place on `batches` (an iterator of (B, T+1) token tensors).

    callback(step, model): called at every logged step with the model in eval mode and gradients
    off (to measure something while training goes on); training resumes after it returns.
    """
    torch.manual_seed(cfg.seed)
    if cfg.balance not in BALANCING:
        raise ValueError(f"train: expected balance to be one of {list(BALANCING)}, found {cfg.balance!r}")
    if cfg.balance == "bias" and model.config.is_moe and not model.config.use_expert_bias:
        raise ValueError("train: expected a model with use_expert_bias=True for balance='bias', found none")
    model.train().requires_grad_(True)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]  # matrices decay; norms do not
    rest = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": rest, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))
    log = TrainLog(config=asdict(cfg))
    capture = Capture("layers.*.moe.selected")
    # The auxiliary losses need the router's scores WITH their gradient (a Capture keeps detached
    # copies): each MoE block returns its Routing beside its output, a forward hook collects it.
    routings: list = []
    hooks = [model.layers[i].feed_forward.register_forward_hook(lambda m, args, out: routings.append(out[1]))
             for i in model.config.moe_layers] if cfg.balance == "aux_loss" else []
    start = time.time()
    try:
        with torch.enable_grad():  # also when the caller (a notebook) turned gradients off
            for step in range(cfg.steps):
                tokens = next(batches)  # (B, T+1)
                lr = learning_rate(step, cfg)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                routings.clear()
                logits = model(tokens[:, :-1], capture=capture).logits  # (B, T, V)
                loss = F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())  # next-token loss
                aux = sum((load_balancing_loss(r.scores, r.selected, cfg.aux_loss_coef) for r in routings),
                          torch.zeros(()))
                z = sum((router_z_loss(r.logits, cfg.z_loss_coef) for r in routings), torch.zeros(())) \
                    if cfg.z_loss_coef else torch.zeros(())
                optimizer.zero_grad(set_to_none=True)
                (loss + aux + z).backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
                loads = expert_loads(capture, model) if model.config.is_moe else {}
                if cfg.balance == "bias" and loads:
                    update_expert_bias(model, loads, cfg.bias_update_rate)
                log.tokens += tokens[:, 1:].numel()
                if step % cfg.log_every == 0 or step == cfg.steps - 1:
                    log.steps.append(step)
                    log.loss.append(round(loss.item(), 4))  # the language-model loss alone
                    log.lr.append(lr)
                    log.load.append({i: load.tolist() for i, load in loads.items()})
                    log.expert_bias.append({i: [round(b, 5) for b in model.layers[i].feed_forward.expert_bias.tolist()]
                                            for i in loads if model.layers[i].feed_forward.expert_bias is not None})
                    log.aux_loss.append(round(float(aux.detach()), 5))
                    log.z_loss.append(round(float(z.detach()), 5))
                    if progress:
                        worst = max((max_violation(load) for load in loads.values()), default=0.0)
                        elapsed = time.time() - start
                        eta = elapsed / (step + 1) * (cfg.steps - step - 1)
                        print(f"step {step + 1:>5}/{cfg.steps}  loss {loss.item():.3f}  lr {lr:.2e}  "
                              f"worst MaxVio {worst:.2f}  {elapsed:5.0f}s elapsed, ~{eta:4.0f}s left",
                              file=sys.stderr, flush=True)
                    if callback is not None:
                        model.eval()
                        with torch.no_grad():
                            callback(step, model)
                        model.train()
    finally:
        for hook in hooks:
            hook.remove()
    log.seconds = time.time() - start
    model.eval().requires_grad_(False)
    return log
