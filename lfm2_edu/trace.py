"""Named capture points: ask for "the router of layer 7" by name, without touching the modules.

Every block reports its intermediate tensors under a fixed name (see CAPTURE_POINTS) to the
`Capture` passed to the forward call. With no Capture (the default) nothing is recorded and
nothing extra is computed; with one, only the names matching its patterns are kept.

    cap = Capture("layers.*.moe.*", "layers.2.attn.probs")
    model(input_ids, capture=cap)
    cap["layers.3.moe.selected"]   # (B, T, k) experts chosen per token

Tensors are stored detached, on their device, as produced (B first). A Capture holds the values
of the last forward call it was given; with a cache, that is the last decoded chunk only.
"""

from __future__ import annotations

import fnmatch

import torch

# name pattern -> (shape, meaning). {i} is the layer index.
CAPTURE_POINTS = {
    "embed": ("(B, T, H)", "token embeddings, the input of layer 0"),
    "rope.cos": ("(B, T, d)", "RoPE's cos table for these positions (angle = position * inv_freq)"),
    "rope.sin": ("(B, T, d)", "RoPE's sin table for these positions"),
    "layers.{i}.input": ("(B, T, H)", "residual stream entering layer i"),
    "layers.{i}.output": ("(B, T, H)", "residual stream leaving layer i"),
    "layers.{i}.operator_norm": ("(B, T, H)", "operator_norm(input): what the conv or attention block reads"),
    "layers.{i}.ffn_norm": ("(B, T, H)", "ffn_norm(input + mixer output): what the MLP or MoE block reads"),
    "layers.{i}.conv.B": ("(B, T, H)", "input gate of the short conv (multiplies x before the conv)"),
    "layers.{i}.conv.C": ("(B, T, H)", "output gate of the short conv (multiplies the conv output)"),
    "layers.{i}.conv.x": ("(B, T, H)", "the value stream of the short conv"),
    "layers.{i}.conv.Bx": ("(B, T, H)", "gated input B*x, what the conv and its cache see"),
    "layers.{i}.conv.conv_out": ("(B, T, H)", "depthwise causal conv of B*x, before the C gate"),
    "layers.{i}.attn.q": ("(B, nh, T, d)", "queries after q-norm and RoPE"),
    "layers.{i}.attn.k": ("(B, nkv, S, d)", "keys after k-norm and RoPE (S = cached + new tokens)"),
    "layers.{i}.attn.v": ("(B, nkv, S, d)", "values"),
    "layers.{i}.attn.probs": ("(B, nh, T, S)", "attention probabilities of every query head"),
    "layers.{i}.mixer.output": ("(B, T, H)", "output of the conv or attention block"),
    "layers.{i}.moe.router_logits": ("(B, T, E)", "raw router logits x @ gate.weight.T"),
    "layers.{i}.moe.scores": ("(B, T, E)", "sigmoid(router_logits), the unbiased expert scores"),
    "layers.{i}.moe.selection_scores": ("(B, T, E)", "scores + expert_bias, used only to choose"),
    "layers.{i}.moe.selected": ("(B, T, k)", "chosen experts, best first"),
    "layers.{i}.moe.weights": ("(B, T, k)", "mixing weights of the chosen experts"),
    "layers.{i}.ffn.output": ("(B, T, H)", "output of the dense MLP or the MoE block"),
    "final_norm": ("(B, T, H)", "residual stream after the final RMSNorm (embedding_norm)"),
    "logits": ("(B, T, V)", "next-token logits"),
}


class Capture:
    """Collects the tensors whose names match any of `patterns` (shell-style globs)."""

    def __init__(self, *patterns: str) -> None:
        self.patterns = patterns or ("*",)
        self.tensors: dict[str, torch.Tensor] = {}

    def wants(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, p) for p in self.patterns)

    def record(self, name: str, tensor: torch.Tensor) -> None:
        if self.wants(name):
            self.tensors[name] = tensor.detach()

    def __getitem__(self, name: str) -> torch.Tensor:
        try:
            return self.tensors[name]
        except KeyError:
            known = ", ".join(sorted(self.tensors)[:8]) or "nothing"
            raise KeyError(f"capture point {name!r} was not recorded (patterns {self.patterns}); "
                           f"recorded: {known}{' ...' if len(self.tensors) > 8 else ''}") from None

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def __len__(self) -> int:
        return len(self.tensors)

    def names(self) -> list[str]:
        return list(self.tensors)

    def clear(self) -> None:
        self.tensors.clear()

    def __repr__(self) -> str:
        return f"Capture({', '.join(map(repr, self.patterns))}; {len(self.tensors)} tensors)"


def record(capture: Capture | None, name: str, tensor: torch.Tensor) -> None:
    """What the blocks call: free when no Capture was given."""
    if capture is not None:
        capture.record(name, tensor)
