"""int8 weight-only quantisation: the same matrix-vector products, half the bytes to read.

A decode step is limited by how fast the weights stream from memory, not by arithmetic, so
storing each weight in 1 byte instead of 2 (bf16) can make it up to twice as fast. Per output
channel (row) n of a weight W (N, K):

    s_n = max_k |W[n, k]| / 127           # one scale per row, kept in the activation dtype
    q   = round(W / s)  in [-127, 127]    # int8
    W  ~ q * s,   |W - q * s| <= s / 2    # the round-trip error of every weight

and x @ W.T = (x @ q.T) * s: `torch.ops.aten._weight_int8pack_mm` does this product reading
only the int8 bytes. Activations stay in bf16 (weight-only), so the error is the weights' alone;
`compare_logits` measures what it costs the model (top-1 agreement, KL) on token windows.
"""

from __future__ import annotations

import ctypes
import mmap
import sys
from dataclasses import dataclass

import torch
import torch.nn.functional as F

QMAX = 127  # symmetric: -127 .. 127, so that -q is always representable
CHUNK_ROWS = 4096  # rows quantised at a time: bounds the fp32 temporaries (4096 x 2048 x 4 B = 34 MB)


@dataclass
class Int8Weight:
    """A weight (N, K) stored as int8 rows `q` with one scale per row."""

    q: torch.Tensor  # (N, K) int8
    scale: torch.Tensor  # (N,) in the activation dtype

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., K) -> x @ (q * scale).T (..., N), reading the int8 bytes only."""
        K = self.q.shape[1]
        flat = x.reshape(-1, K)  # (M, K)
        if has_int8_kernel(x.device):
            y = torch.ops.aten._weight_int8pack_mm(flat.contiguous(), self.q, self.scale)  # (M, N)
        else:  # no int8 kernel here: dequantise (correct, but reads and writes a bf16 copy)
            y = F.linear(flat, self.q.to(x.dtype)) * self.scale  # (M, N)
        return y.view(*x.shape[:-1], self.q.shape[0])

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Dequantised rows (an embedding lookup): ids (...) -> (..., K)."""
        return self.q[ids].to(self.scale.dtype) * self.scale[ids, None]

    def dequantize(self) -> torch.Tensor:
        return self.q.to(self.scale.dtype) * self.scale[:, None]  # (N, K)

    @property
    def nbytes(self) -> int:
        return self.q.numel() * self.q.element_size() + self.scale.numel() * self.scale.element_size()


_KERNEL: dict[str, bool] = {}


def has_int8_kernel(device: torch.device) -> bool:
    """Whether torch has the int8 x bf16 matrix product on this kind of device (tried once)."""
    if device.type not in _KERNEL:
        try:
            x, q = torch.ones(1, 32, device=device), torch.ones(8, 32, dtype=torch.int8, device=device)
            torch.ops.aten._weight_int8pack_mm(x, q, torch.ones(8, device=device))
            _KERNEL[device.type] = True
        except (AttributeError, NotImplementedError, RuntimeError):
            _KERNEL[device.type] = False
    return _KERNEL[device.type]


def quantize_int8(weight: torch.Tensor, dtype: torch.dtype | None = None) -> Int8Weight:
    """Per-row symmetric int8 of a 2-D weight, a few thousand rows at a time.

    dtype: of the scales (the activations'); by default the weight's own. The scale is rounded
    UP to that dtype, so that |W / s| <= 127 holds for the stored s and no weight is clipped.
    """
    if weight.dim() != 2 or not weight.is_floating_point():
        raise ValueError(f"quantize_int8: expected a 2-D floating point weight, found "
                         f"{weight.dim()}-D {weight.dtype} of shape {tuple(weight.shape)}")
    dtype = dtype or weight.dtype
    N, K = weight.shape
    q = torch.empty(N, K, dtype=torch.int8, device=weight.device)
    scale = torch.empty(N, dtype=dtype, device=weight.device)
    for start in range(0, N, CHUNK_ROWS):
        w = weight[start:start + CHUNK_ROWS].float()  # (n, K) fp32 temporary
        s32 = (w.abs().amax(dim=1) / QMAX).clamp_min(torch.finfo(dtype).tiny)  # (n,) all-zero rows: any s
        s = s32.to(dtype)
        s = torch.where(s.float() < s32, torch.nextafter(s, torch.full_like(s, torch.inf)), s)  # round up
        q[start:start + CHUNK_ROWS] = (w / s.float()[:, None]).round_().clamp_(-QMAX, QMAX).to(torch.int8)
        scale[start:start + CHUNK_ROWS] = s
    return Int8Weight(q, scale)


# ------------------------------------------------------------------- the pages of a mapped file
_MADV_PAGEOUT = 21  # Linux 5.4+: reclaim these pages now; nondestructive (data is kept)


def release_pages(t: torch.Tensor) -> bool:
    """Ask the kernel to drop a tensor's pages from this process's memory, keeping its data.

    Weights loaded by `load_model` are views of memory-mapped files: a page read once stays
    resident. Quantising reads every bf16 weight once; releasing each after it is quantised keeps
    the peak memory near the int8 bytes instead of bf16 + int8. The data is not lost: a page of a
    file is read back from the file if used again, and an anonymous page (a tensor not backed by
    a file) cannot be dropped without swap, so it simply stays. Linux only (elsewhere: no-op);
    True when the kernel accepted the request.
    """
    if not sys.platform.startswith("linux") or t.device.type != "cpu" or t.numel() == 0:
        return False
    page = mmap.PAGESIZE
    start = -(-t.data_ptr() // page) * page  # whole pages inside the tensor only: its neighbours
    end = (t.data_ptr() + t.numel() * t.element_size()) // page * page  # stay as they are
    if end <= start:
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return libc.madvise(start, end - start, _MADV_PAGEOUT) == 0


# ------------------------------------------------------------------------------ what it costs
@dataclass
class LogitComparison:
    """How far a candidate model's next-token distributions are from a reference's."""

    positions: int  # token positions compared
    top1_agreement: float  # share of positions whose argmax is the same
    kl_mean: float  # mean KL(reference || candidate) in nats per position
    kl_max: float  # the worst position
    max_logit_diff: float

    def __str__(self) -> str:
        return (f"{self.positions} positions: top-1 agreement {100 * self.top1_agreement:.2f}%, "
                f"KL mean {self.kl_mean:.2e} nats (max {self.kl_max:.2e}), max |logit diff| {self.max_logit_diff:.3f}")


@torch.no_grad()
def compare_logits(reference, candidate, windows: torch.Tensor, batch_size: int = 4) -> LogitComparison:
    """Run both models over token windows (N, T) and compare their logits at every position.

    reference, candidate: callables ids (B, T) -> logits (B, T, V), e.g. `lambda ids: model(ids).logits`
    or a FastLFM2's `all_logits`. KL is taken in fp32 from the log-softmax of each.
    """
    if windows.dim() != 2 or windows.numel() == 0:
        raise ValueError(f"windows: expected token ids (N, T) with N, T >= 1, found shape {tuple(windows.shape)}")
    agree, n, kl_sum, kl_max, diff_max = 0, 0, 0.0, 0.0, 0.0
    for start in range(0, windows.shape[0], batch_size):
        ids = windows[start:start + batch_size]  # (b, T)
        ref, cand = reference(ids).float(), candidate(ids).float()  # (b, T, V) each
        ref_logp, cand_logp = ref.log_softmax(-1), cand.log_softmax(-1)
        kl = (ref_logp.exp() * (ref_logp - cand_logp)).sum(-1)  # (b, T) KL(ref || cand)
        agree += int((ref.argmax(-1) == cand.argmax(-1)).sum())
        n += kl.numel()
        kl_sum += float(kl.sum())
        kl_max = max(kl_max, float(kl.max()))
        diff_max = max(diff_max, float((ref - cand).abs().max()))
    return LogitComparison(n, agree / n, kl_sum / n, kl_max, diff_max)


__all__ = ["Int8Weight", "LogitComparison", "compare_logits", "has_int8_kernel", "quantize_int8", "release_pages"]
