"""Chapter 03: RMSNorm, the norm of every LFM2 block (and of the per-head queries and keys).

Your version of lfm2_edu.norm.RMSNorm. Grade it: python -m student.grade --chapter 03
"""

import torch
from torch import nn

from . import todo


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))  # (dim,): the name the checkpoint uses
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., dim) -> (..., dim)
        """Normalise x over its last dimension by its root mean square, then scale by the weight.

        - the mean of x^2 and the reciprocal square root in fp32, eps added inside the root;
        - the normalised x cast back to x's dtype before the multiplication by the weight;
        - LFM2's weight is used as it is (it starts at 1).
        """
        todo("RMSNorm.forward", "norm.py", "03")
