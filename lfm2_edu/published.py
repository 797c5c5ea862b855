"""The published values of the real LFM2-8B-A1B, in one place.

transformers' integration test for `lfm2_moe` publishes logits and a greedy continuation of the
real checkpoint (bf16, on GPU); Liquid AI publishes its size. Chapters 07 and 08 and
tests/test_real_checkpoint.py check against these values where that checkpoint is loaded, and
skip elsewhere: no machine of this project can download it. The config itself is
`LFM2Config()`, whose defaults are the published config.json.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ID = "LiquidAI/LFM2-8B-A1B"
PATH_ENV = "LFM2_8B_A1B_PATH"  # a local folder holding the real checkpoint

# Logits of one fixed input.
INPUT_IDS = [1, 22998, 768, 1947, 797, 22017, 811, 6332, 928, 5743, 797, 779, 48123, 772, 33551, 60996, 523]
FIRST_LOGITS = [-1.2656, 2.4844, 5.5000, -1.3359, -1.3203, -1.3438, 1.9375, 5.8438, -0.6523, -1.2891]  # logits[0, 0, :10]
MEAN_LOGITS = [-1.3855, -0.5123, -1.3143, -1.2144, -1.0791, -1.2117, -1.4704, -0.7648, -0.6175, -1.2402,
               -1.1459, -1.0083, -1.0247, -0.8830, -1.5643, -1.7266, -1.6254]  # logits.mean(-1)[0], per position
# The published numbers come from bf16 GPU kernels: other backends' bf16 kernels move single
# logits by up to ~3e-2 (LFM2_FACTS 7); the per-position means are the integration test's own 1e-2.
FIRST_LOGITS_ATOL = 3e-2
MEAN_LOGITS_ATOL = 1e-2

# Greedy decoding: 15 new tokens after the prompt (the tokenizer adds <|startoftext|>).
GREEDY_PROMPT = "In 1st century A.D., the Roman Empire"
GREEDY_CONTINUATION = " controlled much of Europe, North Africa, and parts of the Middle East."
GREEDY_NEW_TOKENS = 15

# Parameters, in billions, as count_parameters(LFM2Config()) rounds them (Liquid AI: 8.3B, 1.5B).
TOTAL_PARAMETERS_B = 8.34
ACTIVE_PARAMETERS_B = 1.56


def is_published_model(source: str | os.PathLike) -> bool:
    """Whether `source` (a hub id or a folder) names the real LFM2-8B-A1B."""
    text = str(source).rstrip("/")
    return text == REPO_ID or Path(text).name == REPO_ID.split("/")[1] or "models--LiquidAI--LFM2-8B-A1B" in text


def find_checkpoint() -> Path | None:
    """The real checkpoint's folder on this machine ($LFM2_8B_A1B_PATH, else the hub cache), or None.

    Never downloads: 16.7 GB is not something a test or a chapter should start by itself.
    """
    if os.environ.get(PATH_ENV):
        return Path(os.environ[PATH_ENV])
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(REPO_ID, local_files_only=True))
    except Exception:  # not in the cache, or huggingface_hub not installed: the same answer
        return None
    return folder if (folder / "config.json").exists() else None
