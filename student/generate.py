"""Chapter 08: one sampling step, min-p (LFM2-8B-A1B's model card recommends min_p = 0.15).

Your version of lfm2_edu.generate.apply_min_p. Generation applies it after the repetition
penalty, temperature, top-k and top-p, and just before the softmax and the draw.
Grade it: python -m student.grade --chapter 08
"""

import math  # noqa: F401  (math.inf)

import torch

from . import todo


def apply_min_p(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """logits (B, V) fp32 -> (B, V): keep each row's tokens whose probability (softmax of the row)
    is at least min_p times the row's top probability; the others get -inf. The most probable
    token always stays. min_p = 0 keeps everything. Return a new tensor; leave `logits` as it is."""
    todo("apply_min_p", "generate.py", "08")
