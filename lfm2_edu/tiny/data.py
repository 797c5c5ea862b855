"""Token streams per domain, and the batches training draws from them."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from tokenizers import Tokenizer

from .corpus import DOMAINS, EOT

BOS = 1


def token_stream(tokenizer: Tokenizer, documents: list[str]) -> torch.Tensor:
    """All documents of a domain as one stream of ids, <|endoftext|> between documents."""
    eot = tokenizer.token_to_id(EOT)
    ids: list[int] = []
    for encoding in tokenizer.encode_batch(documents, add_special_tokens=False):
        ids.extend(encoding.ids)
        ids.append(eot)
    return torch.tensor(ids, dtype=torch.long)


def domain_batches(streams: dict[str, torch.Tensor], rows_per_domain: dict[str, int] | int, seq_len: int,
                   seed: int) -> Iterator[torch.Tensor]:
    """Forever: (B, T+1) windows, [bos] + T tokens, rows_per_domain[d] of them from domain d
    (a number B instead: B // 4 from every domain)."""
    if isinstance(rows_per_domain, int):
        rows_per_domain = dict.fromkeys(DOMAINS, rows_per_domain // len(DOMAINS))
    generator = torch.Generator().manual_seed(seed)
    while True:
        rows = []
        for domain in DOMAINS:
            stream = streams[domain]
            starts = torch.randint(0, len(stream) - seq_len, (rows_per_domain[domain],), generator=generator)
            for s in starts.tolist():
                rows.append(torch.cat([torch.tensor([BOS]), stream[s:s + seq_len]]))  # (T+1,)
        yield torch.stack(rows)  # (B, T+1)


def validation_windows(stream: torch.Tensor, seq_len: int, max_windows: int) -> torch.Tensor:
    """Consecutive, non-overlapping (N, T+1) windows of a validation stream, each led by bos."""
    n = min(max_windows, (len(stream) - 1) // seq_len)
    body = stream[:n * seq_len].view(n, seq_len)  # (N, T)
    return torch.cat([torch.full((n, 1), BOS), body], dim=1)  # (N, T+1)
