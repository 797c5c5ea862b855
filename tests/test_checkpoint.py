"""Loading and saving checkpoints: layouts, dtypes, and every kind of bad input."""

import json
import math
import shutil
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import lfm2_edu.checkpoint as checkpoint
from lfm2_edu import CheckpointError, ConfigError, LFM2Config, LFM2Model, count_parameters, load_model, save_model
from reference import tiny_config
from test_cache import random_model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A random tiny LFM2-MoE saved by lfm2_edu (single file), and the model itself."""
    model = random_model(tiny_config(), seed=7)
    folder = save_model(model, tmp_path_factory.mktemp("ckpt") / "tiny")
    return folder, model


@pytest.fixture
def copy(saved, tmp_path):
    """A private copy of the saved checkpoint, for a test to damage."""
    return shutil.copytree(saved[0], tmp_path / "copy")


def ids():
    return torch.randint(0, 97, (2, 9), generator=torch.Generator().manual_seed(0))


@torch.no_grad()
def test_save_then_load_round_trip(saved):
    folder, model = saved
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    names = load_file(folder / "model.safetensors").keys()
    assert "model.layers.1.feed_forward.experts.5.w2.weight" in names  # per-expert hub layout
    assert "lm_head.weight" not in names  # tied
    assert torch.equal(load_model(folder)(ids()).logits, model(ids()).logits)


@torch.no_grad()
def test_sharded_save_and_transformers_reads_it(saved, tmp_path):
    model = saved[1]
    folder = save_model(model, tmp_path / "sharded", max_shard_bytes=20_000)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 3
    assert torch.equal(load_model(folder)(ids()).logits, model(ids()).logits)
    from reference import load_reference, require_transformers
    require_transformers()
    ref = load_reference(folder)
    assert (ref(ids(), use_cache=False).logits - model(ids()).logits).abs().max().item() <= 1e-4


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, "bfloat16", "torch.float16"])
def test_half_precision_keeps_bias_and_rope_in_fp32(saved, dtype):
    model = load_model(saved[0], dtype=dtype)
    assert model.dtype in (torch.bfloat16, torch.float16)
    assert model.layers[1].feed_forward.expert_bias.dtype == torch.float32
    assert model.rope.inv_freq.dtype == torch.float32
    assert model(ids()).logits.dtype == model.dtype


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the process's mappings from /proc (Linux)")
def test_loaded_weights_are_views_of_the_mapped_file(saved):
    """No copy when dtype and device match: every parameter lies inside the file's memory mapping."""
    model = load_model(saved[0])
    file = str((saved[0] / "model.safetensors").resolve())
    ranges = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        if line.endswith(file):
            start, end = (int(x, 16) for x in line.split()[0].split("-"))
            ranges.append((start, end))
    assert ranges, "the checkpoint file is not memory-mapped"
    for name, p in model.named_parameters():
        ptr = p.data_ptr()
        assert any(a <= ptr and ptr + p.numel() * p.element_size() <= b for a, b in ranges), f"{name} was copied"


def test_save_refuses_to_overwrite_and_leaves_nothing_half_written(saved, tmp_path, monkeypatch):
    model = saved[1]
    with pytest.raises(FileExistsError, match="already exists"):
        save_model(model, saved[0])

    calls = []

    def failing_save(tensors, path, metadata=None):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        save_file(tensors, path, metadata=metadata)

    monkeypatch.setattr(checkpoint, "save_file", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_model(model, tmp_path / "out", max_shard_bytes=20_000)
    assert list(tmp_path.iterdir()) == []  # neither the target nor a temporary folder is left
    # overwriting: the old checkpoint survives a failed save
    monkeypatch.setattr(checkpoint, "save_file", save_file)
    save_model(model, tmp_path / "out")
    calls.clear()
    monkeypatch.setattr(checkpoint, "save_file", failing_save)
    with pytest.raises(OSError):
        save_model(model, tmp_path / "out", max_shard_bytes=20_000, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert torch.equal(load_model(tmp_path / "out")(ids()).logits, model(ids()).logits)


# ------------------------------------------------------------------------------- bad input
def rewrite(folder, change):
    """Apply `change` to the tensors of the single-file checkpoint in `folder`."""
    tensors = load_file(folder / "model.safetensors")
    change(tensors)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})


def test_wrong_path(tmp_path):
    with pytest.raises(CheckpointError, match="expected a local folder or a hub repo id .* found '.*nowhere' "
                                              r"\(no such folder\)"):
        load_model(tmp_path / "nowhere")


def test_a_file_instead_of_a_folder(saved):
    with pytest.raises(CheckpointError, match="expected a folder .*, found a file"):
        load_model(saved[0] / "config.json")


def test_folder_without_weights(copy):
    (copy / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="expected model.safetensors or model.safetensors.index.json"):
        load_model(copy)


def test_folder_without_config(copy):
    (copy / "config.json").unlink()
    with pytest.raises(ConfigError, match="expected a config.json"):
        load_model(copy)


def test_malformed_config(copy):
    raw = json.loads((copy / "config.json").read_text())
    raw["num_experts_per_tok"] = 99
    (copy / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match="'num_experts_per_tok': expected at most num_experts=6, found 99"):
        load_model(copy)


def test_missing_tensor(copy):
    rewrite(copy, lambda t: t.pop("model.layers.1.feed_forward.experts.3.w1.weight"))
    with pytest.raises(CheckpointError, match=r"1 missing: \['model.layers.1.feed_forward.experts.3.w1.weight'\]"):
        load_model(copy)


def test_unexpected_tensor(copy):
    rewrite(copy, lambda t: t.update({"model.rotary_emb.inv_freq": torch.zeros(3)}))
    with pytest.raises(CheckpointError, match="found tensor 'model.rotary_emb.inv_freq' that this "
                                              "lfm2_moe config has no place for"):
        load_model(copy)


def test_a_layer_the_config_does_not_have_names_the_field(copy):
    rewrite(copy, lambda t: t.update({"model.layers.9.conv.in_proj.weight": torch.zeros(3)}))
    with pytest.raises(CheckpointError, match=r"config field 'num_hidden_layers': expected 10, as the safetensors "
                                              r"headers say \(the last layer's tensors include "
                                              r"model.layers.9.conv.in_proj.weight\), found 4 in config.json"):
        load_model(copy)


def test_mis_shaped_tensor(copy):
    rewrite(copy, lambda t: t.update({"model.layers.1.self_attn.v_proj.weight": torch.zeros(32, 32)}))
    with pytest.raises(CheckpointError, match=r"'model.layers.1.self_attn.v_proj.weight': expected shape \(16, 32\) "
                                              r"from config.json, found \(32, 32\)"):
        load_model(copy)


def test_a_shape_that_reveals_a_config_field_names_it(copy):
    """k_proj's rows are num_key_value_heads x head_dim: the error says which field disagrees."""
    rewrite(copy, lambda t: t.update({"model.layers.1.self_attn.k_proj.weight": torch.zeros(32, 32)}))
    implied = count_parameters(tiny_config()).total
    held = implied - 16 * 32 + 32 * 32  # one (16, 32) matrix replaced by a (32, 32) one
    with pytest.raises(CheckpointError, match=rf"config field 'num_key_value_heads': expected 4, as the safetensors "
                                              rf"headers say \(model.layers.1.self_attn.k_proj.weight has shape "
                                              rf"\(32, 32\), heads of 8\), found 2 in config.json \(config.json "
                                              rf"implies {implied:,} parameters, the safetensors headers hold {held:,}\)"):
        load_model(copy)


@pytest.mark.parametrize("name, tensor, message", [
    ("model.layers.1.self_attn.q_layernorm.weight", torch.ones(0),
     r"'model.layers.1.self_attn.q_layernorm.weight': expected shape \(8,\) from config.json, found \(0,\)"),
    ("model.layers." + "9" * 5000 + ".ffn_norm.weight", torch.ones(32),
     r"found tensor 'model.layers.9999.*\.\.\. \(a str of length 5029\) that this lfm2_moe config has no place for"),
])
def test_odd_tensor_names_and_shapes(copy, name, tensor, message):
    """An empty head norm (no head size to divide by), a layer index of 5000 digits (no int to parse)."""
    rewrite(copy, lambda t: t.update({name: tensor}))
    with pytest.raises(CheckpointError, match=message):
        load_model(copy)


def test_integer_tensor(copy):
    rewrite(copy, lambda t: t.update({"model.embedding_norm.weight": torch.ones(32, dtype=torch.int32)}))
    with pytest.raises(CheckpointError, match=r"'model.embedding_norm.weight': expected a floating point dtype "
                                              r"\(F32, BF16, F16\), found I32"):
        load_model(copy)


def test_tied_head_that_differs(copy):
    rewrite(copy, lambda t: t.update({"lm_head.weight": torch.zeros(97, 32)}))
    with pytest.raises(CheckpointError, match="ties the head to the embedding .* the two differ"):
        load_model(copy)


def test_tied_head_that_is_a_copy_is_accepted(copy, saved):
    rewrite(copy, lambda t: t.update({"lm_head.weight": t["model.embed_tokens.weight"].clone()}))
    assert torch.equal(load_model(copy)(ids()).logits, saved[1](ids()).logits)


@pytest.mark.parametrize("keep", [0.5, 0.999])
def test_truncated_file(copy, keep):
    data = (copy / "model.safetensors").read_bytes()
    (copy / "model.safetensors").write_bytes(data[:int(len(data) * keep)])
    with pytest.raises(CheckpointError, match="expected a complete safetensors file, found a truncated or corrupt one"):
        load_model(copy)


def test_corrupt_header(copy):
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[8:20] = b"not json!!!!"
    (copy / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_model(copy)


def test_index_naming_a_missing_shard(saved, tmp_path):
    folder = save_model(saved[1], tmp_path / "sharded", max_shard_bytes=20_000)
    shard = sorted(folder.glob("model-*.safetensors"))[1]
    shard.unlink()
    with pytest.raises(CheckpointError, match=f"expected every shard .* lists shard '{shard.name}', found no such file"):
        load_model(folder)


def test_index_disagreeing_with_a_shard(saved, tmp_path):
    folder = save_model(saved[1], tmp_path / "sharded", max_shard_bytes=20_000)
    index_path = folder / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    files = sorted(set(index["weight_map"].values()))
    name = next(n for n, f in index["weight_map"].items() if f == files[0])
    index["weight_map"][name] = files[1]
    index_path.write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=f"places \\['{name}'\\] in {files[1]}, found them absent"):
        load_model(folder)


@pytest.mark.parametrize("dtype", [torch.int8, torch.float64, "fp8", None])
def test_wrong_dtype(saved, dtype):
    with pytest.raises(TypeError, match="dtype: expected one of torch.float32, torch.bfloat16, torch.float16"):
        load_model(saved[0], dtype=dtype)


def test_wrong_device(saved):
    with pytest.raises(ValueError, match="device: expected 'cpu', 'cuda', 'cuda:N' or 'mps', found 'gpu0'"):
        load_model(saved[0], device="gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"found cuda requested but torch.cuda.is_available\(\) is False"):
            load_model(saved[0], device="cuda")


def test_unreachable_or_unknown_hub_repo():
    with pytest.raises(CheckpointError, match="could not download hub repo 'lfm2-edu-tests/no-such-model' and it "
                                              "is not in the local hub cache .* pass their folder instead"):
        load_model("lfm2-edu-tests/no-such-model")


def test_hub_id_found_in_the_local_cache(saved, tmp_path, monkeypatch):
    """With no network, a model already in the hub cache loads from there."""
    import huggingface_hub.constants as hub_constants

    revision = "0" * 40
    repo = tmp_path / "models--lfm2-edu-tests--cached-model"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    shutil.copytree(saved[0], repo / "snapshots" / revision)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    assert torch.equal(load_model("lfm2-edu-tests/cached-model")(ids()).logits, saved[1](ids()).logits)


# ------------------------------------------------------------ what the config implies, checked first
@pytest.mark.parametrize("config", [
    tiny_config(),
    tiny_config(conv_bias=True, use_expert_bias=False, tie_word_embeddings=False, num_dense_layers=0),
    tiny_config(model_type="lfm2", layer_types=["full_attention", "conv", "conv", "full_attention"]),
    LFM2Config(),  # LFM2-8B-A1B's shapes, on the meta device
], ids=["moe", "moe-switches", "dense", "8B-A1B"])
def test_tensor_shapes_are_those_of_the_built_model(config):
    """The names and shapes the loader checks before building equal the built model's, and their
    parameters add up to count_parameters' arithmetic (expert_bias is a buffer, not counted)."""
    with torch.device("meta"):
        built = {name: tuple(t.shape) for name, t in LFM2Model(config).state_dict().items()}
    shapes = dict(checkpoint.tensor_shapes(config))
    assert shapes == built
    assert sum(math.prod(s) for n, s in shapes.items() if not n.endswith("expert_bias")) == count_parameters(config).total


def fuse_experts(tensors, config):
    """The hub layout -> transformers' fused one: experts.gate_up_proj (E, 2I, H), experts.down_proj (E, H, I)."""
    for i in config.moe_layers:
        p = f"model.layers.{i}.feed_forward.experts"
        w = {k: [tensors.pop(f"{p}.{e}.{k}.weight") for e in range(config.num_experts)] for k in ("w1", "w3", "w2")}
        tensors[f"{p}.gate_up_proj"] = torch.cat([torch.stack(w["w1"]), torch.stack(w["w3"])], dim=1)
        tensors[f"{p}.down_proj"] = torch.stack(w["w2"])


@pytest.mark.parametrize("field, value, figure, evidence", [
    ("num_experts", 5, 6, r"model.layers.1.feed_forward.(gate.weight|experts.gate_up_proj) has shape \(6, "),
    ("moe_intermediate_size", 8, 16, r"model.layers.1.feed_forward.experts.gate_up_proj has shape \(6, 32, 32\)"),
])
def test_fused_experts_load_and_name_the_field_they_contradict(copy, saved, field, value, figure, evidence):
    rewrite(copy, lambda t: fuse_experts(t, tiny_config()))
    assert torch.equal(load_model(copy)(ids()).logits, saved[1](ids()).logits)
    raw = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**raw, field: value}))
    with pytest.raises(CheckpointError, match=f"config field '{field}': expected {figure}, as the safetensors "
                                              f"headers say \\({evidence}"):
        load_model(copy)


def test_nothing_is_built_before_the_headers_are_checked(copy, monkeypatch):
    raw = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**raw, "num_experts": 4096}))
    monkeypatch.setattr(checkpoint, "LFM2Model", lambda config: pytest.fail("a model was built"))
    with pytest.raises(CheckpointError, match="config field 'num_experts': expected 6, .* found 4096 in config.json"):
        load_model(copy)


def test_a_config_field_the_headers_contradict_is_named_with_both_figures(copy):
    raw = json.loads((copy / "config.json").read_text())
    for field, value, message in [
        ("hidden_size", 64, r"'hidden_size': expected 32, as the safetensors headers say \(model.embed_tokens.weight "
                            r"has shape \(97, 32\)\), found 64"),
        ("layer_types", ["conv"] * 4, r"'layer_types\[1\]': expected \"full_attention\", as the safetensors headers "
                                      r"say \(model.layers.1.self_attn.\S+ is there\), found \"conv\""),
        ("tie_word_embeddings", False, r"'tie_word_embeddings': expected true, .* \(no lm_head.weight in the headers\), "
                                       r"found false"),
        ("model_type", "lfm2", r"'model_type': expected \"lfm2_moe\", .* \(model.layers.1.feed_forward.\S+ belongs to "
                               r"a mixture of experts\), found \"lfm2\""),
    ]:
        (copy / "config.json").write_text(json.dumps({**raw, field: value}))
        with pytest.raises(CheckpointError, match=message):
            load_model(copy)


def test_a_config_of_many_layers_is_cut_short_at_the_first_missing_tensors(copy):
    """A checkpoint with a norm in each of 1024 layers, a config asking for 4096 experts in each:
    the walk over the 12.6 million expected tensors stops at the first few missing ones."""
    raw = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**raw, "num_hidden_layers": 1024, "layer_types": ["conv"] * 1024,
                                                  "num_dense_layers": 1, "num_experts": 4096}))

    def hollow(t):
        for name in [n for n in t if n.startswith("model.layers.") and not n.startswith("model.layers.0.")]:
            del t[name]
        t.update({f"model.layers.{i}.ffn_norm.weight": torch.ones(32) for i in range(1, 1024)})

    rewrite(copy, hollow)
    start = time.process_time()
    with pytest.raises(CheckpointError, match=r"expected more than \d+ tensors, found at least 7 missing: "
                                              r"\['model.layers.1.operator_norm.weight', .*\] ..."):
        load_model(copy)
    assert time.process_time() - start < 5
