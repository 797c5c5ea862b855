"""Reference solution of student/generate.py (chapter 08): min-p."""

import math

import torch


def apply_min_p(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    probs = logits.softmax(dim=-1)  # (B, V)
    remove = probs < min_p * probs.amax(dim=-1, keepdim=True)  # (B, V): below min_p x the top probability
    remove.scatter_(-1, probs.argmax(dim=-1, keepdim=True), False)  # the most probable token stays
    return logits.masked_fill(remove, -math.inf)
