"""The published values of the real LFM2-8B-A1B (transformers' own integration test, bf16).

Runs wherever the checkpoint is on disk: the folder named by $LFM2_8B_A1B_PATH, or the hub
cache. It is never downloaded by the tests (16.7 GB); without it the tests skip and say why.
The values and their tolerances live in lfm2_edu.published, which the chapters read too.
"""

import pytest
import torch

from lfm2_edu import LFM2Config, count_parameters, published

CHECKPOINT = published.find_checkpoint()
needs_checkpoint = pytest.mark.skipif(
    CHECKPOINT is None,
    reason=f"the real {published.REPO_ID} checkpoint is not on this machine (set {published.PATH_ENV} to its "
           f"folder, or put it in the hub cache); its published values cannot be checked without it",
)


@pytest.fixture(scope="module")
def model():
    from lfm2_edu import load_model
    return load_model(CHECKPOINT, dtype=torch.bfloat16, device="cuda" if torch.cuda.is_available() else "cpu")


def test_published_parameter_counts():  # from the config alone: needs no weights
    counts = count_parameters(LFM2Config())
    assert (round(counts.total / 1e9, 2), round(counts.active / 1e9, 2)) == \
        (published.TOTAL_PARAMETERS_B, published.ACTIVE_PARAMETERS_B)


def test_published_model_is_recognised_by_its_names():
    for source in (published.REPO_ID, "/data/LFM2-8B-A1B/", "~/.cache/huggingface/hub/models--LiquidAI--LFM2-8B-A1B/snapshots/x"):
        assert published.is_published_model(source), source
    for source in ("tiny-lfm2-moe", "LiquidAI/LFM2-1.2B", "/data/LFM2-8B-A1B-random"):
        assert not published.is_published_model(source), source


@needs_checkpoint
@torch.no_grad()
def test_published_logits(model):
    logits = model(torch.tensor([published.INPUT_IDS], device=model.device)).logits.float().cpu()
    torch.testing.assert_close(logits[0, 0, :10], torch.tensor(published.FIRST_LOGITS),
                               atol=published.FIRST_LOGITS_ATOL, rtol=0)
    torch.testing.assert_close(logits.mean(-1)[0], torch.tensor(published.MEAN_LOGITS),
                               atol=published.MEAN_LOGITS_ATOL, rtol=0)


@needs_checkpoint
@torch.no_grad()
def test_published_greedy_continuation(model):
    from tokenizers import Tokenizer
    tokenizer = Tokenizer.from_file(str(CHECKPOINT / "tokenizer.json"))
    ids = tokenizer.encode(published.GREEDY_PROMPT).ids  # the tokenizer's post-processor adds <|startoftext|>
    assert ids[0] == 1
    cache = model.new_cache()
    logits = model(torch.tensor([ids], device=model.device), cache=cache).logits
    new = []
    for _ in range(published.GREEDY_NEW_TOKENS):
        token = int(logits[0, -1].argmax())
        new.append(token)
        logits = model(torch.tensor([[token]], device=model.device), cache=cache).logits
    assert tokenizer.decode(new) == published.GREEDY_CONTINUATION
