"""Loading and saving checkpoints: layouts, dtypes, and every kind of bad input."""

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import lfm2_edu.checkpoint as checkpoint
from lfm2_edu import CheckpointError, ConfigError, load_model, save_model
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
    rewrite(copy, lambda t: t.update({"model.layers.9.conv.in_proj.weight": torch.zeros(3)}))
    with pytest.raises(CheckpointError, match="found tensor 'model.layers.9.conv.in_proj.weight' that this "
                                              "lfm2_moe config has no place for"):
        load_model(copy)


def test_mis_shaped_tensor(copy):
    rewrite(copy, lambda t: t.update({"model.layers.1.self_attn.k_proj.weight": torch.zeros(32, 32)}))
    with pytest.raises(CheckpointError, match=r"'model.layers.1.self_attn.k_proj.weight' has shape \(32, 32\), "
                                              r"expected \(16, 32\) from config.json"):
        load_model(copy)


def test_integer_tensor(copy):
    rewrite(copy, lambda t: t.update({"model.embedding_norm.weight": torch.ones(32, dtype=torch.int32)}))
    with pytest.raises(CheckpointError, match="'model.embedding_norm.weight' has dtype torch.int32, "
                                              "expected a floating point dtype"):
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
    with pytest.raises(CheckpointError, match=f"lists shard '{shard.name}', found no such file"):
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
