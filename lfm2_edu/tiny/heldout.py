"""The shipped held-out set: token windows of each domain's validation text, stored as data.

Every routing statistic of the shipped models (the model card, the routing chapters, the tests)
is measured on these windows, so the numbers are the same on every machine and Python version
(the corpus itself is rebuilt from the running Python's own files and changes with it).

    windows = load_heldout()        # {"prose": (N, T+1), "code": ..., "arithmetic": ..., "data": ...}
    texts = heldout_texts()         # the same windows as text, for a model with another tokenizer

Each window is [bos] + T tokens of the shipped models' tokenizer, whose SHA-256 is stored beside
them: loading checks it, so windows are never read with a tokenizer they were not made with.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

FILE_NAME = "heldout_windows.safetensors"  # beside the shipped models (and the name any checkpoint may ship its own under)
WINDOWS_PER_DOMAIN = 24


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def tokenizer_matches(tokenizer_file: Path) -> bool:
    """True when the shipped windows were made with this tokenizer.json (the four shipped models'
    one, or a copy of it), so they can be read with it."""
    from safetensors import safe_open

    path = heldout_path()
    if not path.is_file() or not Path(tokenizer_file).is_file():
        return False
    with safe_open(str(path), framework="pt") as f:
        return (f.metadata() or {}).get("tokenizer_sha256") == _sha256(tokenizer_file)


def heldout_path() -> Path:
    from ..checkpoint import SHIPPED_DIR

    return SHIPPED_DIR / FILE_NAME


def save(windows: dict[str, torch.Tensor], path: Path, tokenizer_file: Path) -> None:
    from safetensors.torch import save_file

    save_file({d: w.contiguous() for d, w in windows.items()}, str(path),
              metadata={"tokenizer_sha256": _sha256(tokenizer_file), "domains": ",".join(windows)})


def load_heldout(tokenizer_file: Path | None = None) -> dict[str, torch.Tensor]:
    """{domain: (N, T+1) long tensor} of the shipped held-out windows, in the corpus's domain order.

    tokenizer_file: the tokenizer.json the windows will be read with (default: the shipped model's);
    a different one is refused, since the ids would mean other tokens.
    """
    from safetensors import safe_open

    from ..checkpoint import SHIPPED_MODEL, CheckpointError, resolve_checkpoint

    path = heldout_path()
    if not path.is_file():
        raise CheckpointError(f"held-out set: expected {FILE_NAME} beside the shipped models, found it missing; "
                              "rebuild them with `make small-model`")
    tokenizer_file = Path(tokenizer_file or resolve_checkpoint(SHIPPED_MODEL) / "tokenizer.json")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("tokenizer_sha256") != _sha256(tokenizer_file):
            raise CheckpointError(f"held-out set: expected windows made with the tokenizer {tokenizer_file.name} "
                                  f"(sha256 {_sha256(tokenizer_file)[:12]}...), found windows of another "
                                  f"tokenizer (sha256 {str(meta.get('tokenizer_sha256'))[:12]}...)")
        order = meta.get("domains", "").split(",")
        return {d: f.get_tensor(d) for d in order if d}


def heldout_texts() -> dict[str, list[str]]:
    """{domain: [text of each window]}, decoded with the shipped tokenizer (bos left out): the same
    text for a checkpoint whose tokenizer is another one (the real LFM2-8B-A1B)."""
    from ..checkpoint import SHIPPED_MODEL
    from ..tokenizer import load_tokenizer

    tokenizer = load_tokenizer(SHIPPED_MODEL)
    return {d: [tokenizer.decode(row[1:].tolist()) for row in w] for d, w in load_heldout().items()}
