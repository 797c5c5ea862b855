"""What every chapter shares: the checkpoint it runs on and where its figures go.

The chapters run on the small LFM2-MoE that ships with the package unless told otherwise:

    LFM2_EDU_MODEL=LiquidAI/LFM2-8B-A1B jupyter lab       # a hub id (downloaded once, 16.7 GB)
    LFM2_EDU_MODEL=/path/to/a/checkpoint jupyter lab      # or any local LFM2 / LFM2-MoE folder

or by setting `lfm2_edu.course.MODEL` before calling `load()`. Figures go to the repository's
`figures/` folder for the shipped model, to `figures/<checkpoint name>/` for any other, or to
the folder named by LFM2_EDU_FIGURES.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch

from .checkpoint import SHIPPED_MODEL, load_model, resolve_checkpoint
from .model import LFM2Model

MODEL_ENV, FIGURES_ENV = "LFM2_EDU_MODEL", "LFM2_EDU_FIGURES"
MODEL: str | None = None  # set to override the environment variable
REPO_FIGURES = Path(__file__).resolve().parent.parent / "figures"
LARGE_CHECKPOINT_BYTES = 4 * 10**9  # above this, chapters load in bf16 (fp32 would double it)


def model_source() -> str:
    """The checkpoint the chapters use: MODEL, else $LFM2_EDU_MODEL, else the shipped model."""
    return MODEL or os.environ.get(MODEL_ENV) or SHIPPED_MODEL


def is_shipped() -> bool:
    return model_source() == SHIPPED_MODEL


def checkpoint_bytes(folder: Path) -> int:
    index = folder / "model.safetensors.index.json"
    if index.exists():
        return int(json.loads(index.read_text())["metadata"]["total_size"])
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


def load(source: str | None = None, dtype: torch.dtype | None = None):
    """(model, tokenizer) for the chapters; fp32 unless the checkpoint is large, then bf16."""
    from .tokenizer import load_tokenizer

    source = source or model_source()
    folder = resolve_checkpoint(source)
    if dtype is None:
        dtype = torch.bfloat16 if checkpoint_bytes(folder) > LARGE_CHECKPOINT_BYTES else torch.float32
    model: LFM2Model = load_model(folder, dtype=dtype)
    return model, load_tokenizer(source)


def figures_dir() -> Path:
    if os.environ.get(FIGURES_ENV):
        folder = Path(os.environ[FIGURES_ENV])
    elif is_shipped():
        folder = REPO_FIGURES
    else:
        folder = REPO_FIGURES / re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(model_source()).name or "other")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def save_figure(fig, name: str) -> Path:
    """Save a matplotlib figure as figures/<name>.png (name: chapter number and what it shows)."""
    path = figures_dir() / f"{name}.png"
    fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})
    return path
