"""The published values of the real LFM2-8B-A1B (transformers' own integration test, bf16).

Runs wherever the checkpoint is on disk: the folder named by $LFM2_8B_A1B_PATH, or the hub
cache. It is never downloaded by the tests (16.7 GB); without it the tests skip and say why.
"""

import os
from pathlib import Path

import pytest
import torch

REPO_ID = "LiquidAI/LFM2-8B-A1B"
INPUT_IDS = [1, 22998, 768, 1947, 797, 22017, 811, 6332, 928, 5743, 797, 779, 48123, 772, 33551, 60996, 523]
FIRST_LOGITS = [-1.2656, 2.4844, 5.5000, -1.3359, -1.3203, -1.3438, 1.9375, 5.8438, -0.6523, -1.2891]
MEAN_LOGITS = [-1.3855, -0.5123, -1.3143, -1.2144, -1.0791, -1.2117, -1.4704, -0.7648, -0.6175, -1.2402,
               -1.1459, -1.0083, -1.0247, -0.8830, -1.5643, -1.7266, -1.6254]
PROMPT = "In 1st century A.D., the Roman Empire"
CONTINUATION = " controlled much of Europe, North Africa, and parts of the Middle East."


def find_checkpoint() -> Path | None:
    if os.environ.get("LFM2_8B_A1B_PATH"):
        return Path(os.environ["LFM2_8B_A1B_PATH"])
    try:
        from huggingface_hub import snapshot_download
        folder = Path(snapshot_download(REPO_ID, local_files_only=True))
    except Exception:
        return None
    return folder if (folder / "config.json").exists() else None


CHECKPOINT = find_checkpoint()
pytestmark = pytest.mark.skipif(
    CHECKPOINT is None,
    reason=f"the real {REPO_ID} checkpoint is not on this machine (set LFM2_8B_A1B_PATH to its folder, "
           f"or put it in the hub cache); its published values cannot be checked without it",
)


@pytest.fixture(scope="module")
def model():
    from lfm2_edu import load_model
    return load_model(CHECKPOINT, dtype=torch.bfloat16, device="cuda" if torch.cuda.is_available() else "cpu")


@torch.no_grad()
def test_published_logits(model):
    logits = model(torch.tensor([INPUT_IDS], device=model.device)).logits.float().cpu()
    # The published numbers come from bf16 GPU kernels; other backends move bf16 logits by up to ~3e-2.
    torch.testing.assert_close(logits[0, 0, :10], torch.tensor(FIRST_LOGITS), atol=3e-2, rtol=0)
    torch.testing.assert_close(logits.mean(-1)[0], torch.tensor(MEAN_LOGITS), atol=1e-2, rtol=0)


@torch.no_grad()
def test_published_greedy_continuation(model):
    from tokenizers import Tokenizer
    tokenizer = Tokenizer.from_file(str(CHECKPOINT / "tokenizer.json"))
    ids = tokenizer.encode(PROMPT).ids  # the tokenizer's post-processor adds <|startoftext|>
    assert ids[0] == 1
    cache = model.new_cache()
    logits = model(torch.tensor([ids], device=model.device), cache=cache).logits
    new = []
    for _ in range(15):
        token = int(logits[0, -1].argmax())
        new.append(token)
        logits = model(torch.tensor([[token]], device=model.device), cache=cache).logits
    assert tokenizer.decode(new) == CONTINUATION
