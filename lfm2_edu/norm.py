"""RMSNorm, as every LFM2 norm uses it (block norms, the final norm, the per-head q/k norms).

Same as Llama's: y = w * x / sqrt(mean(x^2) + eps), with a plain weight `w` (initialised to 1,
not the `1 + w` of Gemma). The statistics are taken in fp32 and the result is cast back to the
input dtype *before* the multiplication by `w`, exactly as the reference does; in bf16 the
order of that cast shows in the last bits.
"""

import torch
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., dim) -> (..., dim)
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)  # x / rms(x), fp32
        return self.weight * normed.to(x.dtype)  # cast back first, then scale by w

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"
