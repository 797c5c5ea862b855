"""The small models that ship with the package: loadable by name, and equal to the reference."""

import json

import pytest
import torch
from safetensors.torch import load_file

from lfm2_edu import SHIPPED_MODEL, count_parameters, load_model, load_tokenizer, resolve_checkpoint
from lfm2_edu.checkpoint import SHIPPED_MODELS
from lfm2_edu.tiny import arithmetic
from lfm2_edu.tiny.heldout import load_heldout
from reference import require_transformers

NAMES = list(SHIPPED_MODELS)


@pytest.fixture(scope="module", params=NAMES)
def shipped(request):
    """(name, folder, model) of each shipped model."""
    name = request.param
    return name, resolve_checkpoint(name), load_model(name)


def stored_logits(folder):
    """Logits that transformers computed for fixed inputs when the checkpoint was built."""
    tensors = load_file(folder / "reference_logits.safetensors")
    names = sorted({k.split(".")[0] for k in tensors})
    return {n: (tensors[f"{n}.input_ids"], tensors[f"{n}.logits"]) for n in names}


@pytest.mark.parametrize("name", NAMES)
def test_it_is_small_and_complete(name):
    folder = resolve_checkpoint(name)
    files = {p.name: p.stat().st_size for p in folder.iterdir()}
    for file in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "generation_config.json", "README.md", "reference_logits.safetensors", "training_log.json",
                 "metrics.json"):
        assert file in files, f"{file} missing from {name}"
    assert sum(files.values()) <= 25 * 2**20, f"{name}: {sum(files.values()):,} bytes > 25 MB"


def test_the_models_are_one_recipe():
    configs = {n: load_model(n, device="meta").config for n in NAMES}
    default = configs[SHIPPED_MODEL]
    assert default.is_moe and default.use_expert_bias and default.num_experts > default.num_experts_per_tok
    assert {"conv", "full_attention"} == set(default.layer_types)
    assert default.num_dense_layers >= 1 and default.num_key_value_heads < default.num_attention_heads
    for name in ("tiny-lfm2-moe-aux", "tiny-lfm2-moe-none"):  # the same MoE, without the bias buffer
        assert configs[name].replace(use_expert_bias=True) == default
    dense = configs["tiny-lfm2-dense"]
    assert not dense.is_moe and dense.layer_types == default.layer_types
    per_unit = 3 * dense.hidden_size * dense.num_hidden_layers  # active parameters per unit of MLP width
    assert abs(count_parameters(dense).active - count_parameters(default).active) <= per_unit
    tokenizers = {(resolve_checkpoint(n) / "tokenizer.json").read_bytes() for n in NAMES}
    assert len(tokenizers) == 1, "the four models share one tokenizer"


@torch.no_grad()
def test_stored_reference_logits_match(shipped):
    name, folder, model = shipped
    stored = stored_logits(folder)
    assert len(stored) >= 3
    for text, (ids, logits) in stored.items():
        diff = (model(ids).logits - logits).abs().max().item()
        assert diff <= 1e-4, f"{name}, {text}: max |logit difference| {diff:.2e}"


@torch.no_grad()
def test_transformers_loads_it_and_agrees(shipped):
    name, folder, model = shipped
    transformers = require_transformers()
    ref = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager")
    if model.config.is_moe:
        ref.set_experts_implementation("eager")
    for text, (ids, _) in stored_logits(folder).items():
        diff = (ref(ids, use_cache=False).logits - model(ids).logits).abs().max().item()
        assert diff <= 1e-4, f"{name}, {text}: max |logit difference| {diff:.2e}"
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    from tokenizers import Tokenizer
    ours = Tokenizer.from_file(str(folder / "tokenizer.json"))
    text = "def f(x):\n    return x + 1  # 17 + 25 = 42"
    assert tokenizer(text).input_ids == ours.encode(text).ids
    assert tokenizer.bos_token_id == 1 and tokenizer.eos_token_id == 7 and tokenizer.pad_token_id == 0


@pytest.mark.parametrize("name", NAMES)
def test_training_log(name):
    log = json.loads((resolve_checkpoint(name) / "training_log.json").read_text())
    assert len(log["steps"]) == len(log["loss"]) == len(log["load"]) == len(log["aux_loss"]) > 10
    assert log["loss"][-1] < log["loss"][0]
    assert log["config"]["balance"] == {"tiny-lfm2-moe": "bias", "tiny-lfm2-moe-aux": "aux_loss"}.get(name, "none")


def test_the_heldout_set_is_shipped():
    windows = load_heldout()
    assert list(windows) == ["prose", "code", "arithmetic", "data"]
    for domain, w in windows.items():
        assert w.dtype == torch.long and w.dim() == 2 and w.shape[0] >= 8, domain
        assert bool((w[:, 0] == 1).all()), "each window starts with bos"
        assert int(w.max()) < load_model(SHIPPED_MODEL, device="meta").config.vocab_size


def test_heldout_questions_are_in_no_training_document():
    """The graded additions are held out by construction; a spot check of the generator."""
    import random
    rng = random.Random(0)
    drawn = {arithmetic.sample_problem(rng) for _ in range(50_000)}
    heldout = set(arithmetic.questions(arithmetic.KINDS[0], 200))
    assert len(heldout) == 200 and not drawn & heldout
    assert all(arithmetic.is_heldout(*p) for p in heldout)


def test_arithmetic_grading_parses_and_checks():
    assert arithmetic.parse_answer("5 + 7 = 12; 4 + 2 + 1 = 7; 72") == 72  # worked columns, then the result
    assert arithmetic.parse_answer(" -4") == -4  # a difference: the result alone
    assert arithmetic.parse_answer("seventy-two") is None
    model, tokenizer = load_model(SHIPPED_MODEL), load_tokenizer(SHIPPED_MODEL)
    result = arithmetic.grade(model, tokenizer, [(12, "+", 7), (3, "-", 5)])
    assert result["total"] == 2 and 0 <= result["correct"] <= 2 and len(result["examples"]) == 2


def test_the_cards_lessons_are_computed_from_the_shipped_metrics():
    """Each sentence of the card's comparison is what tiny.build.lessons writes from the metrics and
    training logs shipped beside the weights, so no sentence outlives the numbers it rests on."""
    from lfm2_edu.tiny import build

    metrics = {n: json.loads((resolve_checkpoint(n) / "metrics.json").read_text()) for n in build.RUNS}
    logs = {n: json.loads((resolve_checkpoint(n) / "training_log.json").read_text()) for n in build.RUNS}
    lessons = build.lessons({n: m["result"] for n, m in metrics.items()}, metrics[SHIPPED_MODEL]["untrained"], logs)
    card = (resolve_checkpoint(SHIPPED_MODEL) / "README.md").read_text().splitlines()
    for sentence in lessons:
        assert sentence in card, f"the card lacks, or words differently, what its numbers give: {sentence}"
