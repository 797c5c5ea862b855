"""The small LFM2-MoE that ships with the package: loadable by name, and equal to the reference."""

import json

import pytest
import torch
from safetensors.torch import load_file

from lfm2_edu import SHIPPED_MODEL, count_parameters, load_model, resolve_checkpoint
from reference import require_transformers

FOLDER = resolve_checkpoint(SHIPPED_MODEL)


@pytest.fixture(scope="module")
def model():
    return load_model(SHIPPED_MODEL)


@pytest.fixture(scope="module")
def stored():
    """Logits that transformers computed for fixed inputs when the checkpoint was built."""
    tensors = load_file(FOLDER / "reference_logits.safetensors")
    names = sorted({k.split(".")[0] for k in tensors})
    return {n: (tensors[f"{n}.input_ids"], tensors[f"{n}.logits"]) for n in names}


def test_it_is_small_and_complete():
    files = {p.name: p.stat().st_size for p in FOLDER.iterdir()}
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "generation_config.json", "README.md", "reference_logits.safetensors", "training_log.json"):
        assert name in files, f"{name} missing from the shipped checkpoint"
    assert sum(files.values()) <= 25 * 2**20, f"{sum(files.values()):,} bytes > 25 MB"


def test_it_has_the_real_models_structure(model):
    cfg = model.config
    assert cfg.is_moe and cfg.use_expert_bias and cfg.num_experts > cfg.num_experts_per_tok
    assert {"conv", "full_attention"} == set(cfg.layer_types)
    assert cfg.num_dense_layers >= 1 and cfg.num_key_value_heads < cfg.num_attention_heads
    counts = count_parameters(cfg)
    assert counts.active < counts.total


@torch.no_grad()
def test_stored_reference_logits_match(model, stored):
    assert len(stored) >= 3
    for name, (ids, logits) in stored.items():
        diff = (model(ids).logits - logits).abs().max().item()
        assert diff <= 1e-4, f"{name}: max |logit difference| {diff:.2e}"


@torch.no_grad()
def test_transformers_loads_it_and_agrees(model, stored):
    transformers = require_transformers()
    ref = transformers.AutoModelForCausalLM.from_pretrained(FOLDER, dtype=torch.float32, attn_implementation="eager")
    ref.set_experts_implementation("eager")
    for name, (ids, _) in stored.items():
        diff = (ref(ids, use_cache=False).logits - model(ids).logits).abs().max().item()
        assert diff <= 1e-4, f"{name}: max |logit difference| {diff:.2e}"
    tokenizer = transformers.AutoTokenizer.from_pretrained(FOLDER)
    from tokenizers import Tokenizer
    ours = Tokenizer.from_file(str(FOLDER / "tokenizer.json"))
    text = "def f(x):\n    return x + 1  # 17 + 25 = 42"
    assert tokenizer(text).input_ids == ours.encode(text).ids
    assert tokenizer.bos_token_id == 1 and tokenizer.eos_token_id == 7 and tokenizer.pad_token_id == 0


def test_training_logs_cover_both_runs():
    logs = json.loads((FOLDER / "training_log.json").read_text())
    assert set(logs) == {"balanced", "unbalanced"}
    for log in logs.values():
        assert len(log["steps"]) == len(log["loss"]) == len(log["load"]) == len(log["expert_bias"]) > 10
        assert log["loss"][-1] < log["loss"][0]
