"""The fast decoding path: the same model and the same weights, with less wasted work per token.

Decoding one token at a time is memory-bound: each weight the token needs is read from memory
once and used for a single multiply-add. So a step cannot take less than

    bytes of weights read per token / memory bandwidth     (LFM2-8B-A1B: ~3.1 GB of active bf16)

and a fast decoder is one that spends little time beyond that. `FastLFM2` wraps a loaded
`LFM2Model`, reads its weights where they are (no copies), gives its outputs (tested against it:
the same greedy tokens, logits within a stated tolerance), and changes only how the work is done:

- MoE, one token: only its k chosen experts run, each an F.linear on the views of its own
  weights; a gather of the chosen weights into a new tensor (for one bmm) would copy them first.
  Several tokens (a prompt, a batch): the (token, slot) pairs are sorted by expert ONCE and each
  expert runs on its contiguous block, instead of a torch.where scan over every expert.
- a preallocated cache (`StaticCache`): keys and values are written in place, not concatenated.
- attention through F.scaled_dot_product_attention (fused; GQA without repeating the kv heads).
- the conv decode step (`ShortConv.decode_step`) as an L-tap weighted sum over [state, B*x], with
  the state updated in place: no conv1d call, no new state tensor.
- the head only where logits are needed (the last position, when generating).
- optional int8 weights (`int8=True`, see quant.py): half the bytes per token.
- static shapes (`static=True`, the default on CUDA): experts stacked per layer and run by one
  `torch._grouped_mm` with the routing kept on the device, attention over the whole cache buffer
  under a mask; so a CUDA graph can replay a whole decode step without Python in between.

Unchanged, so that the outputs match: the routing (the readable `SparseMoE.route`), the norms
(F.rms_norm, bit-identical to `RMSNorm`), RoPE (`model.rope`, `apply_rope`), the order in which
expert outputs are summed. Not supported here: `capture=` (look inside with the readable path).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .cache import HybridCache
from .config import LFM2Config
from .conv import ShortConv
from .model import LFM2Model, LFM2Output
from .moe import Routing, SparseMoE
from .mlp import SwiGLU
from .norm import RMSNorm
from .quant import Int8Weight, quantize_int8, release_pages
from .rope import apply_rope


SDPA_GQA = tuple(int(p) for p in torch.__version__.split(".")[:2]) >= (2, 5)  # enable_gqa= exists


# ------------------------------------------------------------------------------------ the cache
class StaticCache(HybridCache):
    """The hybrid cache with its buffers allocated up front, so that a step writes in place.

    Attention layers: key/value buffers (B, nkv, capacity, d); `keys[i]` / `values[i]` are views
    of the filled part, so code written for HybridCache (the readable model's too) works on it.
    A full buffer grows by doubling (a copy, rare, like a Python list). Conv layers: (B, H, L-1)
    states, updated in place.
    """

    def __init__(self, config: LFM2Config, batch: int, capacity: int, dtype: torch.dtype,
                 device: torch.device | str = "cpu") -> None:
        super().__init__(config)
        if batch < 1 or capacity < 1:
            raise ValueError(f"StaticCache: expected batch >= 1 and capacity >= 1, found {batch} and {capacity}")
        self.batch, self.dtype, self.device = batch, dtype, torch.device(device)
        self.capacity = min(capacity, config.max_position_embeddings)
        nkv, d, H, L = config.num_key_value_heads, config.head_dim, config.hidden_size, config.conv_L_cache
        self.k_buf = {i: torch.zeros(batch, nkv, self.capacity, d, dtype=dtype, device=device)
                      for i in config.attention_layers}  # (B, nkv, capacity, d) each
        self.v_buf = {i: torch.zeros_like(k) for i, k in self.k_buf.items()}
        self.conv_state = {i: torch.zeros(batch, H, L - 1, dtype=dtype, device=device)
                           for i in config.conv_layers}  # (B, H, L-1) each
        self.graph = None  # a captured CUDA decode step over these buffers (FastLFM2 sets it)

    def reserve(self, length: int) -> None:
        """Make room for `length` positions (at least double the buffers when they grow)."""
        if length <= self.capacity:
            return
        if length > self.config.max_position_embeddings:
            raise ValueError(f"StaticCache: expected at most max_position_embeddings="
                             f"{self.config.max_position_embeddings} positions, found {length} requested")
        new = min(max(length, 2 * self.capacity), self.config.max_position_embeddings)
        for buf in (self.k_buf, self.v_buf):
            for i, old in buf.items():
                buf[i] = torch.cat([old, old.new_zeros(*old.shape[:2], new - self.capacity, old.shape[3])], dim=2)
        self.capacity, self.graph = new, None  # a graph points at the old buffers
        for i in self.keys:
            self.keys[i], self.values[i] = self.k_buf[i][:, :, :self.seq_len], self.v_buf[i][:, :, :self.seq_len]

    def update_kv(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write this chunk's keys/values (B, nkv, T, d) at seq_len; return all of them (B, nkv, S, d)."""
        if k.shape[0] != self.batch:
            raise ValueError(f"StaticCache: expected a batch of {self.batch} rows, found {k.shape[0]}")
        start, end = self.seq_len, self.seq_len + k.shape[2]
        self.reserve(end)
        self.k_buf[layer][:, :, start:end] = k
        self.v_buf[layer][:, :, start:end] = v
        self.keys[layer], self.values[layer] = self.k_buf[layer][:, :, :end], self.v_buf[layer][:, :, :end]
        return self.keys[layer], self.values[layer]

    def memory_bytes(self) -> dict[str, int]:
        """Bytes held, per layer type: the whole preallocated buffers."""
        size = lambda ts: sum(t.numel() * t.element_size() for t in ts)  # noqa: E731
        return {"conv": size(self.conv_state.values()),
                "full_attention": size(self.k_buf.values()) + size(self.v_buf.values())}


def conv_window_sum(conv: ShortConv, window: torch.Tensor) -> torch.Tensor:
    """ShortConv.decode_step's output for one token, as an L-tap weighted sum instead of a conv1d
    call (a call costs far more than its 3 multiply-adds per channel): window (B, H, L) -> (B, H).
    Accumulated in fp32, as conv1d does: bit-identical in bf16, within fp32 rounding in fp32."""
    y = (window.float() * conv.conv.weight[:, 0].float()).sum(-1)  # (B, H): sum_j w[:, j] * window[:, j]
    if conv.conv.bias is not None:
        y = y + conv.conv.bias.float()
    return y.to(window.dtype)


def rms_norm(x: torch.Tensor, norm: RMSNorm) -> torch.Tensor:
    """`norm(x)` in 3 ops instead of 8: statistics in fp32, cast back, then scale (bit-identical)."""
    return norm.weight * F.rms_norm(x.float(), (x.shape[-1],), eps=norm.eps).to(x.dtype)


# ------------------------------------------------------------------------------- the fast model
class FastLFM2:
    """A loaded LFM2Model, run by the fast path. Called like the model: fast(ids, cache=...).

    int8: quantise every matrix a token reads in full (all linears but the router; the head) to
      int8 with one scale per output channel (quant.py). The int8 copies are the fast path's own;
      the model's bf16 weights stay as they were (their pages released from memory where possible).
    static: static shapes and no host sync in a decode step (default: on CUDA). It stacks each MoE
      layer's experts into one tensor and points the model's expert weights at views of it, so
      the weights are still held once and the readable path keeps working on them.
    cuda_graph: capture the decode step as a CUDA graph (default: when static on CUDA).
    """

    def __init__(self, model: LFM2Model, int8: bool = False, static: bool | None = None,
                 cuda_graph: bool | None = None) -> None:
        if not isinstance(model, LFM2Model):
            raise TypeError(f"FastLFM2: expected an LFM2Model (from load_model), found {type(model).__name__}")
        foreign = [f"{name} ({type(m).__module__}.{type(m).__qualname__})" for name, m in model.named_modules()
                   if not type(m).__module__.startswith(("lfm2_edu.", "torch.nn."))]
        if foreign:  # the fast path runs its own code for the package's blocks: a swapped one would be ignored
            raise TypeError(f"FastLFM2: expected a model of the package's own blocks, found {foreign[0]}"
                            f"{f' and {len(foreign) - 1} more' if len(foreign) > 1 else ''}; run a model "
                            f"with swapped blocks on the readable path")
        self.model, self.config = model, model.config
        on_cuda = model.device.type == "cuda"
        if static is None:  # on CUDA, where its kernels exist: the MoE layers need torch._grouped_mm
            static = on_cuda and not int8 and (not self.config.is_moe or _grouped_mm_works(model.dtype, model.device)[0])
        if cuda_graph is None:
            cuda_graph = static and on_cuda
        if static and int8:
            raise ValueError("FastLFM2: int8 weights run on the dynamic path only (torch._grouped_mm has "
                             "no int8 weights); expected static=False with int8=True, found static=True")
        if cuda_graph and not (on_cuda and static):
            raise ValueError(f"FastLFM2: a CUDA graph needs a model on CUDA and static=True, found device "
                             f"{model.device} and static={static}")
        if static and self.config.is_moe:
            works, why = _grouped_mm_works(model.dtype, model.device)
            if not works:
                raise ValueError(f"FastLFM2: static=True needs torch._grouped_mm for {model.dtype} on "
                                 f"{model.device}, which fails here ({why}); use static=False")
        self.static, self.cuda_graph = static, cuda_graph
        self.head = model.embed_tokens if self.config.tie_word_embeddings else model.lm_head
        self.int8: dict[nn.Module, Int8Weight] = quantize_model(model) if int8 else {}
        self.stacked = stack_experts(model) if static and self.config.is_moe else {}

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    def new_cache(self, batch: int = 1, capacity: int = 256) -> StaticCache:
        return StaticCache(self.config, batch, capacity, self.dtype, self.device)

    def __repr__(self) -> str:
        mode = "static shapes" + (" + CUDA graph" if self.cuda_graph else "") if self.static else "dynamic"
        return (f"FastLFM2({self.config.model_type}, {self.dtype}, {'int8' if self.int8 else 'no'} weights "
                f"quantised, {mode}, {self.bytes_per_token() / 1e9:.3f} GB read per token)")

    # ----------------------------------------------------------------------------- forward
    @torch.no_grad()
    def __call__(self, input_ids: torch.Tensor, cache: StaticCache | None = None,
                 attention_mask: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                 logits: str = "last") -> LFM2Output:
        """As LFM2Model.forward; logits "last" (B, 1, V) or "all" (B, T, V).

        cache: a StaticCache from `new_cache` (without one, a temporary cache for this call).
        """
        if logits not in ("last", "all"):
            raise ValueError(f"logits: expected 'last' or 'all', found {logits!r}")
        if cache is not None and not isinstance(cache, StaticCache):
            raise TypeError(f"cache: expected a StaticCache from FastLFM2.new_cache(), found {type(cache).__name__}")
        past = cache.seq_len if cache is not None else 0
        self.model._check_inputs(input_ids, past, attention_mask, position_ids)  # the readable path's checks
        batch, T = input_ids.shape
        cache = cache if cache is not None else self.new_cache(batch, T)
        if batch != cache.batch:
            raise ValueError(f"cache: expected input_ids with the cache's {cache.batch} rows, found {batch}")
        cache.reserve(past + T)
        if position_ids is None:
            position_ids = torch.arange(past, past + T, device=input_ids.device).expand(batch, T)  # (B, T)

        if self.static and T == 1:  # one decode step, static shapes: attend over the whole buffer, masked
            key_mask = torch.zeros(batch, cache.capacity, dtype=torch.bool, device=self.device)  # (B, capacity)
            key_mask[:, :past + 1] = True if attention_mask is None else attention_mask.bool()
            slot = torch.tensor([past], device=self.device)  # (1,) where this token's key and value go
            inputs = (input_ids, position_ids, slot, key_mask, cache)
            if self.cuda_graph and cache.graph is None:
                cache.graph = DecodeGraph(self, *inputs)  # recorded once per cache, then replayed
            out = cache.graph(*inputs) if self.cuda_graph else self._static_step(*inputs)  # (B, 1, V)
            for i in cache.k_buf:  # written by index_copy_: keep the HybridCache views up to date
                cache.keys[i], cache.values[i] = cache.k_buf[i][:, :, :past + 1], cache.v_buf[i][:, :, :past + 1]
        else:
            out = self._forward(input_ids, position_ids, attention_mask, cache, past, logits == "last")
        cache.seq_len += T
        return LFM2Output(logits=out, cache=cache)

    def all_logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, T, V) logits of every position, from a fresh cache (for compare_logits)."""
        return self(input_ids, logits="all").logits

    def _forward(self, ids, position_ids, attention_mask, cache, past, last_only) -> torch.Tensor:
        batch, T = ids.shape
        # Which keys each query sees: None (one token, no padding: every key), is_causal (a first
        # chunk), or an explicit (B, 1, T, S) mask as the readable model builds it.
        mask, causal, pad_mask = None, False, None
        if attention_mask is None and T > 1 and past == 0:
            causal = True
        elif attention_mask is not None or T > 1:
            key_pos = torch.arange(past + T, device=ids.device)  # (S,)
            query_pos = torch.arange(past, past + T, device=ids.device)  # (T,)
            mask = (key_pos[None, :] <= query_pos[:, None])[None, None]  # (1, 1, T, S)
            if attention_mask is not None:
                mask = mask & attention_mask.bool()[:, None, None, :]  # (B, 1, T, S)
                # A left pad sees no key at all: let it see every key, as the readable path's
                # softmax over equal scores does (its output is never used), rather than NaN.
                mask = mask | ~mask.any(dim=-1, keepdim=True)
                if not bool(attention_mask[:, -T:].all()):  # (the readable path checks only chunks of T > 1)
                    pad_mask = attention_mask[:, -T:]  # (B, T): zeroes the conv input at pads
        return self._layers(ids, position_ids, mask, causal, pad_mask, cache, None, last_only)

    def _static_step(self, ids, position_ids, slot, key_mask, cache) -> torch.Tensor:
        """One decode step with shapes that never change: what a CUDA graph records."""
        visible = key_mask & (torch.arange(cache.capacity, device=ids.device) <= slot)  # (B, capacity)
        visible = visible | ~visible.any(dim=-1, keepdim=True)  # a pad with no key to see: as in _forward
        is_real = key_mask.index_select(1, slot)  # (B, 1): a pad (all ones without padding: x * 1 = x)
        return self._layers(ids, position_ids, visible[:, None, None, :], False, is_real, cache, slot, True)

    def _layers(self, ids, position_ids, mask, causal, pad_mask, cache, slot, last_only) -> torch.Tensor:
        m = self.model
        embed = self.int8.get(m.embed_tokens)
        h = embed.rows(ids) if embed is not None else F.embedding(ids, m.embed_tokens.weight)  # (B, T, H)
        cos, sin = m.rope(position_ids, h.dtype)  # (B, T, d) each
        for layer in m.layers:
            x = rms_norm(h, layer.operator_norm)  # (B, T, H)
            if layer.is_attention:
                h = h + self._attention(layer.self_attn, x, cos, sin, mask, causal, cache, slot)
            else:
                h = h + self._conv(layer.conv, x, pad_mask, cache)
            x = rms_norm(h, layer.ffn_norm)
            h = h + (self._moe(layer.feed_forward, x) if layer.is_moe else self._swiglu(layer.feed_forward, x))
        if last_only:
            h = h[:, -1:]  # (B, 1, H): only the next token's logits are needed
        return self._linear(rms_norm(h, m.embedding_norm), self.head)  # (B, T or 1, V)

    # ------------------------------------------------------------------------------ blocks
    def _linear(self, x: torch.Tensor, module: nn.Module) -> torch.Tensor:
        """x @ W.T (+ b) with the module's own weight, or its int8 copy."""
        bias = getattr(module, "bias", None)
        q = self.int8.get(module)
        if q is None:
            return F.linear(x, module.weight, bias)
        return q(x) if bias is None else q(x) + bias

    def _swiglu(self, mlp: SwiGLU, x: torch.Tensor) -> torch.Tensor:
        return self._linear(F.silu(self._linear(x, mlp.w1)) * self._linear(x, mlp.w3), mlp.w2)  # (..., H)

    def _conv(self, conv, x: torch.Tensor, pad_mask, cache: StaticCache) -> torch.Tensor:
        batch, T, H = x.shape
        L = conv.kernel_size
        if pad_mask is not None:  # left padding must not leak into the state of real tokens
            x = x * pad_mask[:, :, None].to(x.dtype)
        B, C, xs = self._linear(x, conv.in_proj).chunk(3, dim=-1)  # 3 x (B, T, H)
        state = cache.conv_state[conv.layer_idx]  # (B, H, L-1)
        window = torch.cat([state, (B * xs).transpose(1, 2)], dim=-1)  # (B, H, L-1+T)
        if T == 1:  # decode: ShortConv.decode_step's sum, without conv1d
            y = conv_window_sum(conv, window)[:, None]  # (B, 1, H)
        else:
            y = F.conv1d(window, conv.conv.weight, conv.conv.bias, groups=H).transpose(1, 2)  # (B, T, H)
        state.copy_(window[:, :, window.shape[-1] - (L - 1):])  # the last L-1 values, in place
        return self._linear(C * y, conv.out_proj)  # (B, T, H)

    def _attention(self, attn, x, cos, sin, mask, causal, cache: StaticCache, slot) -> torch.Tensor:
        batch, T, _ = x.shape
        nh, nkv, d = attn.n_heads, attn.n_kv_heads, attn.head_dim
        q = rms_norm(self._linear(x, attn.q_proj).view(batch, T, nh, d), attn.q_layernorm).transpose(1, 2)  # (B, nh, T, d)
        k = rms_norm(self._linear(x, attn.k_proj).view(batch, T, nkv, d), attn.k_layernorm).transpose(1, 2)  # (B, nkv, T, d)
        v = self._linear(x, attn.v_proj).view(batch, T, nkv, d).transpose(1, 2)  # (B, nkv, T, d)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if slot is None:
            k, v = cache.update_kv(attn.layer_idx, k, v)  # (B, nkv, S, d), written in place
        else:  # static: write at a position held in a tensor, attend over the whole buffer
            i = attn.layer_idx
            cache.k_buf[i].index_copy_(2, slot, k)
            cache.v_buf[i].index_copy_(2, slot, v)
            k, v = cache.k_buf[i], cache.v_buf[i]  # (B, nkv, capacity, d)
        if nh != nkv and not SDPA_GQA:  # torch < 2.5: share each kv head with its g query heads by hand
            k, v = k.repeat_interleave(nh // nkv, dim=1), v.repeat_interleave(nh // nkv, dim=1)  # (B, nh, S, d)
        gqa = {"enable_gqa": nh != nkv} if SDPA_GQA else {}
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, **gqa)  # (B, nh, T, d)
        return self._linear(out.transpose(1, 2).reshape(batch, T, nh * d), attn.out_proj)  # (B, T, H)

    def _moe(self, moe: SparseMoE, x: torch.Tensor) -> torch.Tensor:
        batch, T, H = x.shape
        flat = x.reshape(-1, H)  # (N, H)
        routing = moe.route(flat)  # the readable router: the same experts and weights
        if self.static:
            out = self._experts_grouped(moe, flat, routing)
        elif flat.shape[0] == 1:
            out = self._experts_one_token(moe, flat, routing)
        else:
            out = self._experts_sorted(moe, flat, routing)
        return out.view(batch, T, H)

    def _experts_one_token(self, moe: SparseMoE, x: torch.Tensor, routing: Routing) -> torch.Tensor:
        """One token: its k experts, each on views of its own weights; no other expert is read."""
        chosen = routing.selected[0].tolist()  # k expert ids: the one host sync of the layer
        out = torch.zeros_like(x)  # (1, H)
        for j in sorted(range(len(chosen)), key=chosen.__getitem__):  # ascending ids: the readable sum order
            out += self._swiglu(moe.experts[chosen[j]], x) * routing.weights[:, j:j + 1]  # (1, H)
        return out

    def _experts_sorted(self, moe: SparseMoE, x: torch.Tensor, routing: Routing) -> torch.Tensor:
        """Many tokens: sort the (token, slot) pairs by expert once; each expert runs on its block."""
        k = routing.selected.shape[1]
        expert_of = routing.selected.flatten()  # (N*k,) token-major
        order = expert_of.argsort(stable=True)  # (N*k,) grouped by expert, tokens in order within
        counts = torch.bincount(expert_of, minlength=len(moe.experts)).tolist()  # (E,) one host sync
        token = order // k  # (N*k,) the token of each sorted pair
        xs = x[token]  # (N*k, H) activations in expert order (a copy of activations, not of weights)
        ys = torch.empty_like(xs)  # (N*k, H)
        start = 0
        for e, n in enumerate(counts):
            if n:  # an expert nobody chose is not read at all
                ys[start:start + n] = self._swiglu(moe.experts[e], xs[start:start + n])
                start += n
        ys = ys * routing.weights.flatten()[order, None]  # (N*k, H)
        return torch.zeros_like(x).index_add_(0, token, ys)  # (N, H): summed per token, in expert order

    def _experts_grouped(self, moe: SparseMoE, x: torch.Tensor, routing: Routing) -> torch.Tensor:
        """The same sort, then one grouped matmul over the stacked experts: no host sync."""
        w13, w2 = self.stacked[moe]  # (E, 2I, H), (E, H, I)
        k = routing.selected.shape[1]
        expert_of = routing.selected.flatten()  # (N*k,)
        order = expert_of.argsort(stable=True)  # (N*k,)
        counts = torch.zeros(w13.shape[0], dtype=torch.int32, device=x.device).scatter_add_(
            0, expert_of, torch.ones_like(expert_of, dtype=torch.int32))  # (E,) rows per expert
        ends = counts.cumsum(0, dtype=torch.int32)  # (E,) where each expert's block ends
        token = order // k  # (N*k,)
        gate_up = torch._grouped_mm(x[token], w13.transpose(1, 2), offs=ends)  # (N*k, 2I)
        gate, up = gate_up.chunk(2, dim=-1)  # (N*k, I) each
        ys = torch._grouped_mm(F.silu(gate) * up, w2.transpose(1, 2), offs=ends)  # (N*k, H)
        ys = ys * routing.weights.flatten()[order, None]  # (N*k, H)
        return torch.zeros_like(x).index_add_(0, token, ys)  # (N, H)

    # ---------------------------------------------------------------------------- figures
    def _size(self, module: nn.Module) -> int:
        """Bytes of a module's own parameters, as this path holds them (int8 copies where made)."""
        q = self.int8.get(module)
        return sum(q.nbytes if (q is not None and name == "weight") else p.numel() * p.element_size()
                   for name, p in module.named_parameters(recurse=False))

    def weight_bytes(self) -> int:
        """Bytes of all the weights this path reads (buffers such as expert_bias not counted)."""
        return sum(self._size(mod) for mod in self.model.modules())

    def bytes_per_token(self) -> int:
        """Bytes of weights one token reads at batch 1: every weight but the experts it was not
        routed to (k of E per MoE layer), and of an untied embedding only its row."""
        cfg, m = self.config, self.model
        total = self.weight_bytes()
        if not cfg.tie_word_embeddings:  # looked up, one row per token
            total -= self._size(m.embed_tokens) - self._size(m.embed_tokens) // cfg.vocab_size
        for layer in m.layers:
            if layer.is_moe:
                per_expert = sum(self._size(mod) for mod in layer.feed_forward.experts[0].modules())
                total -= (cfg.num_experts - cfg.num_experts_per_tok) * per_expert
        return total


class DecodeGraph:
    """A decode step over one StaticCache, recorded as a CUDA graph (fixed batch and capacity).

    The graph replays the recorded kernels on fixed memory: inputs are copied into its own
    tensors, the step runs with no Python and no host sync, and the logits land in one tensor.
    """

    def __init__(self, fast: FastLFM2, ids, positions, slot, key_mask, cache: StaticCache) -> None:
        # The graph's own input tensors, filled with this first step's inputs: the warm-up then
        # writes this step's key and value at this step's slot, which the real step rewrites.
        self.ids, self.positions, self.slot, self.key_mask = (t.clone() for t in (ids, positions, slot, key_mask))
        saved = {i: s.clone() for i, s in cache.conv_state.items()}  # the warm-up also advances these
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm up (allocations, kernel choices) before recording
            for _ in range(2):
                fast._static_step(self.ids, self.positions, self.slot, self.key_mask, cache)
        torch.cuda.current_stream().wait_stream(side)
        for i, s in saved.items():
            cache.conv_state[i].copy_(s)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):  # recorded, not run
            self.logits = fast._static_step(self.ids, self.positions, self.slot, self.key_mask, cache)

    def __call__(self, ids, positions, slot, key_mask, cache) -> torch.Tensor:
        self.ids.copy_(ids)
        self.positions.copy_(positions)
        self.slot.copy_(slot)
        self.key_mask.copy_(key_mask)
        self.graph.replay()
        return self.logits.clone()  # (B, 1, V): the next replay overwrites the graph's own tensor


# ---------------------------------------------------------------------------- building it
def quantize_model(model: LFM2Model) -> dict[nn.Module, Int8Weight]:
    """int8 copies of every matrix a token reads in full: each linear but the router (small, and
    it decides which experts run), and the head (the embedding when tied; its rows are then
    looked up in the int8 copy too). Each bf16 source's pages are released once quantised."""
    head = model.embed_tokens if model.config.tie_word_embeddings else model.lm_head
    quantised = {}
    for name, module in model.named_modules():
        if (isinstance(module, nn.Linear) and not name.endswith("feed_forward.gate")) or module is head:
            quantised[module] = quantize_int8(module.weight)
            release_pages(module.weight)
    return quantised


def stack_experts(model: LFM2Model) -> dict[SparseMoE, tuple[torch.Tensor, torch.Tensor]]:
    """Each MoE layer's experts as two tensors (E, 2I, H) [w1; w3] and (E, H, I) w2, for
    torch._grouped_mm. The experts' own weights then become views of them: held once."""
    stacked = {}
    for layer in model.layers:
        if not layer.is_moe:
            continue
        experts = layer.feed_forward.experts
        I = experts[0].w1.weight.shape[0]
        w13 = torch.stack([torch.cat([e.w1.weight, e.w3.weight]) for e in experts])  # (E, 2I, H)
        w2 = torch.stack([e.w2.weight for e in experts])  # (E, H, I)
        for i, e in enumerate(experts):
            e.w1.weight = nn.Parameter(w13[i, :I], requires_grad=False)
            e.w3.weight = nn.Parameter(w13[i, I:], requires_grad=False)
            e.w2.weight = nn.Parameter(w2[i], requires_grad=False)
        stacked[layer.feed_forward] = (w13, w2)
    return stacked


def _grouped_mm_works(dtype: torch.dtype, device: torch.device) -> tuple[bool, str]:
    """Whether torch._grouped_mm runs for this dtype and device (tried on a tiny problem)."""
    try:
        x, w = torch.ones(4, 16, dtype=dtype, device=device), torch.ones(2, 16, 16, dtype=dtype, device=device)
        torch._grouped_mm(x, w.transpose(1, 2), offs=torch.tensor([2, 4], dtype=torch.int32, device=device))
        return True, ""
    except (AttributeError, NotImplementedError, RuntimeError) as err:
        return False, f"{type(err).__name__}: {str(err).splitlines()[0][:160]}"


__all__ = ["DecodeGraph", "FastLFM2", "StaticCache", "conv_window_sum", "quantize_model", "rms_norm", "stack_experts"]
