"""The whole LFM2 / LFM2-MoE language model.

    ids -> embed_tokens -> N x DecoderLayer -> embedding_norm -> lm_head (tied to embed_tokens)

Unlike Gemma there is no scaling after the embedding; unlike the name suggests, `embedding_norm`
is the FINAL norm, applied after the last layer. The head reuses the embedding matrix (tied
weights) unless the config unties them. Module names are the checkpoint's, minus "model.".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .cache import HybridCache
from .config import LFM2Config
from .layer import DecoderLayer
from .norm import RMSNorm
from .rope import RotaryEmbedding
from .trace import Capture, record


@dataclass
class LFM2Output:
    logits: torch.Tensor  # (B, T, V)
    cache: HybridCache | None = None


class LFM2Model(nn.Module):
    def __init__(self, config: LFM2Config) -> None:
        super().__init__()
        self.config = config
        H = config.hidden_size
        self.embed_tokens = nn.Embedding(config.vocab_size, H)
        self.layers = nn.ModuleList(DecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.embedding_norm = RMSNorm(H, config.norm_eps)  # the final norm
        self.rope = RotaryEmbedding(config.head_dim, config.rope_theta)
        if not config.tie_word_embeddings:
            self.lm_head = nn.Linear(H, config.vocab_size, bias=False)

    @property
    def dtype(self) -> torch.dtype:
        return self.embed_tokens.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.embed_tokens.weight.device

    @property
    def lm_head_weight(self) -> torch.Tensor:
        """(V, H): the embedding matrix itself when the weights are tied."""
        return self.embed_tokens.weight if self.config.tie_word_embeddings else self.lm_head.weight

    def to_dtype(self, dtype: torch.dtype) -> "LFM2Model":
        """Cast the weights, keeping expert_bias and RoPE's inv_freq in fp32 as the reference does."""
        keep = {name: b for name, b in self.named_buffers() if b.dtype == torch.float32}
        self.to(dtype)
        for name, b in keep.items():
            module_name, _, attr = name.rpartition(".")
            setattr(self.get_submodule(module_name) if module_name else self, attr, b)
        return self

    def new_cache(self) -> HybridCache:
        return HybridCache(self.config)

    def forward(self, input_ids: torch.Tensor, cache: HybridCache | None = None,
                attention_mask: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                capture: Capture | None = None) -> LFM2Output:
        """Logits for every position of `input_ids` (B, T).

        cache: a HybridCache to continue from and update (prefill, then one token at a time).
        attention_mask: (B, S) with 1 for real tokens and 0 for (left) padding, S = cached + T.
        position_ids: (B, T) RoPE positions; by default cached + 0 .. T-1.
        capture: a Capture that records the named intermediate tensors it asks for.
        """
        past = cache.seq_len if cache is not None else 0
        self._check_inputs(input_ids, past, attention_mask, position_ids)
        batch, T = input_ids.shape
        device = input_ids.device

        h = self.embed_tokens(input_ids)  # (B, T, H)
        record(capture, "embed", h)
        if position_ids is None:
            position_ids = torch.arange(past, past + T, device=device).expand(batch, T)  # (B, T)
        cos, sin = self.rope(position_ids, h.dtype)  # (B, T, d) each
        record(capture, "rope.cos", cos)
        record(capture, "rope.sin", sin)

        # Which keys each query may attend to: its own and earlier positions, and no padding.
        key_pos = torch.arange(past + T, device=device)  # (S,)
        query_pos = torch.arange(past, past + T, device=device)  # (T,)
        allowed = (key_pos[None, :] <= query_pos[:, None])[None, None]  # (1, 1, T, S)
        pad_mask = None
        if attention_mask is not None:
            allowed = allowed & attention_mask.bool()[:, None, None, :]  # (B, 1, T, S)
            if T > 1 and not bool(attention_mask[:, -T:].all()):
                pad_mask = attention_mask[:, -T:]  # (B, T): zeroes the conv input at pads

        for layer in self.layers:
            h = layer(h, cos, sin, allowed, pad_mask=pad_mask, cache=cache, capture=capture)  # (B, T, H)
        h = self.embedding_norm(h)  # (B, T, H)
        record(capture, "final_norm", h)
        logits = h @ self.lm_head_weight.T  # (B, T, V)
        record(capture, "logits", logits)
        if cache is not None:
            cache.seq_len += T
        return LFM2Output(logits=logits, cache=cache)

    def _check_inputs(self, input_ids, past, attention_mask, position_ids) -> None:
        cfg = self.config
        if not isinstance(input_ids, torch.Tensor):
            raise TypeError(f"input_ids: expected a torch.Tensor of token ids (B, T), found {type(input_ids).__name__}")
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids: expected 2 dimensions (batch, tokens), found shape {tuple(input_ids.shape)}")
        if input_ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
            raise TypeError(f"input_ids: expected an integer dtype (torch.long), found {input_ids.dtype}")
        if input_ids.shape[1] == 0:
            raise ValueError("input_ids: expected at least one token, found an empty sequence")
        if input_ids.device != self.device:
            raise ValueError(f"input_ids: expected a tensor on the model's device {self.device}, "
                             f"found one on {input_ids.device}")
        low, high = int(input_ids.min()), int(input_ids.max())
        if low < 0 or high >= cfg.vocab_size:
            raise ValueError(f"input_ids: expected token ids in [0, {cfg.vocab_size}), found ids from {low} to {high}")
        total = past + input_ids.shape[1]
        if total > cfg.max_position_embeddings:
            raise ValueError(f"input_ids: the model allows at most max_position_embeddings="
                             f"{cfg.max_position_embeddings} tokens, found {total} "
                             f"({past} cached + {input_ids.shape[1]} new)")
        if attention_mask is not None:
            expected = (input_ids.shape[0], total)
            if tuple(attention_mask.shape) != expected:
                raise ValueError(f"attention_mask: expected shape {expected} (batch, cached + new tokens), "
                                 f"found {tuple(attention_mask.shape)}")
        if position_ids is not None and tuple(position_ids.shape) != tuple(input_ids.shape):
            raise ValueError(f"position_ids: expected shape {tuple(input_ids.shape)}, found {tuple(position_ids.shape)}")
