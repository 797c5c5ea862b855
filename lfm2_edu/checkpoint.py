"""Loading and saving checkpoints in the Hugging Face hub layout.

A checkpoint is a folder with `config.json` and the weights as safetensors: one
`model.safetensors`, or shards listed by `model.safetensors.index.json`. Tensor names are the
module names under `model.` (see LFM2_FACTS); the MoE experts come either one by one
(`experts.{e}.w1.weight`, the hub layout) or fused as transformers holds them in memory
(`experts.gate_up_proj` (E, 2I, H) and `experts.down_proj` (E, H, I)); both are accepted.

Loading is strict (every tensor used, none missing, every shape checked) and memory-frugal:
the model is built on the meta device (no memory), and each parameter becomes a view of the
memory-mapped file, so the weights are held once, paged in as they are used. Only a change of
dtype or device makes a copy, one tensor at a time.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .config import ConfigError, LFM2Config
from .model import LFM2Model

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
HUB_FILES = ["config.json", "generation_config.json", "*.safetensors", INDEX_FILE, "tokenizer.json",
             "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
FLOAT_DTYPES = tuple(DTYPES.values())
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
FUSED = re.compile(r"^(layers\.\d+\.feed_forward\.experts)\.(gate_up_proj|down_proj)$")


# The small trained models that ship inside the package, loadable by name with no download: one
# recipe, four runs. The default balances its experts with the expert bias, as LFM2-MoE's
# checkpoints do; the others are its controls (see the model card, make small-model).
SHIPPED_MODEL = "tiny-lfm2-moe"
SHIPPED_MODELS = {
    SHIPPED_MODEL: "LFM2-MoE, experts balanced by the expert bias (the default)",
    "tiny-lfm2-moe-aux": "the same, balanced by an auxiliary load-balancing loss instead",
    "tiny-lfm2-moe-none": "the same, with no load balancing",
    "tiny-lfm2-dense": "a dense LFM2 with as many active parameters per token",
}
SHIPPED_DIR = Path(__file__).parent / "checkpoints"


class CheckpointError(ValueError):
    """A checkpoint that cannot be found, read or matched to the model."""


# ---------------------------------------------------------------------------------------- source
def resolve_checkpoint(source: str | os.PathLike) -> Path:
    """The folder of a checkpoint: a local folder as is; the shipped model by its name; a hub repo
    id ("owner/name") downloaded (or found in the hub cache)."""
    if str(source) in SHIPPED_MODELS:
        folder = SHIPPED_DIR / str(source)
        if not (folder / "config.json").is_file():
            raise CheckpointError(f"checkpoint: expected the shipped model '{source}' in the package, "
                                  f"found it missing; rebuild the shipped models with `make small-model`")
        return folder
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise CheckpointError(f"checkpoint: expected a folder with config.json and *.safetensors, "
                              f"found a file: {path}")
    if not REPO_ID.match(str(source)):
        raise CheckpointError(f"checkpoint: expected a local folder or a hub repo id such as "
                              f"'LiquidAI/LFM2-8B-A1B', found {str(source)!r} (no such folder)")
    return _download(str(source))


def _download(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:  # only the files a model needs, not every format in the repo
        return Path(snapshot_download(repo_id, allow_patterns=HUB_FILES))
    except Exception as online_error:  # no network, unknown repo, gated repo, ...
        try:
            return Path(snapshot_download(repo_id, allow_patterns=HUB_FILES, local_files_only=True))
        except Exception:
            pass
        raise CheckpointError(
            f"checkpoint: could not download hub repo '{repo_id}' and it is not in the local hub cache "
            f"({type(online_error).__name__}: {str(online_error).splitlines()[0][:200]}). "
            f"If the files are on disk, pass their folder instead, e.g. load_model('/path/to/{repo_id.split('/')[-1]}'); "
            f"a folder needs config.json and the *.safetensors files (with {INDEX_FILE} when sharded)."
        ) from None


def _shard_map(folder: Path) -> dict[str, list[str]]:
    """file name -> tensor names it should hold, from the index or the single file."""
    index = folder / INDEX_FILE
    if index.exists():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise CheckpointError(f"checkpoint: expected {index} to be JSON with a 'weight_map', "
                                  f"found an unreadable file ({err})") from None
        shards: dict[str, list[str]] = {}
        for name, file in weight_map.items():
            shards.setdefault(file, []).append(name)
        for file in shards:
            if not (folder / file).is_file():
                raise CheckpointError(f"checkpoint: {INDEX_FILE} lists shard '{file}', found no such file "
                                      f"in {folder} (an incomplete download?)")
        return shards
    if (folder / SINGLE_FILE).is_file():
        return {SINGLE_FILE: []}  # names come from the file itself
    found = sorted(p.name for p in folder.iterdir())
    raise CheckpointError(f"checkpoint: expected {SINGLE_FILE} or {INDEX_FILE} in {folder}, "
                          f"found {found[:10]}")


# ------------------------------------------------------------------------------------------ load
def load_model(source: str | os.PathLike, dtype: torch.dtype | str = torch.float32,
               device: torch.device | str = "cpu") -> LFM2Model:
    """Load an LFM2 / LFM2-MoE checkpoint from a local folder or a hub repo id.

    dtype: torch.float32, torch.bfloat16 or torch.float16 (or their names). expert_bias and the
    RoPE frequencies stay in fp32, as in the reference implementation.
    """
    dtype = _check_dtype(dtype)
    device = _check_device(device)
    folder = resolve_checkpoint(source)
    config = LFM2Config.from_file(folder / "config.json")

    with torch.device("meta"):  # shapes only, no memory
        model = LFM2Model(config)
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    state: dict[str, torch.Tensor] = {}
    seen_hub_names: dict[str, str] = {}  # our name -> the checkpoint name it came from
    for file, listed in _shard_map(folder).items():
        _load_shard(folder / file, listed, config, expected, dtype, device, state, seen_hub_names)

    missing = [n for n in expected if n not in state]
    if missing:
        hub = [_hub_name(n) for n in missing]
        raise CheckpointError(f"checkpoint {folder}: expected {len(expected)} tensors, found {len(missing)} "
                              f"missing: {hub[:6]}{' ...' if len(hub) > 6 else ''}")
    model.load_state_dict(state, strict=True, assign=True)
    model.rope.reset_inv_freq(device)
    model.requires_grad_(False)  # a loaded model is for inference; train.py switches this back on
    return model.eval()


def _load_shard(path: Path, listed: list[str], config: LFM2Config, expected: dict[str, tuple],
                dtype: torch.dtype, device: torch.device, state: dict, seen: dict) -> None:
    try:
        handle = safe_open(str(path), framework="pt", device="cpu")
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"checkpoint: could not read {path}: expected a complete safetensors file, "
                              f"found a truncated or corrupt one ({err})") from None
    with handle:
        names = list(handle.keys())
        absent = sorted(set(listed) - set(names))
        if absent:
            raise CheckpointError(f"checkpoint: {INDEX_FILE} places {absent[:4]} in {path.name}, "
                                  f"found them absent from that file")
        for hub_name in names:
            try:
                tensor = handle.get_tensor(hub_name)  # a view of the memory-mapped file
            except (SafetensorError, OSError, RuntimeError) as err:
                raise CheckpointError(f"checkpoint: could not read tensor '{hub_name}' from {path}: "
                                      f"the file is truncated or corrupt ({err})") from None
            for name, part in _split(hub_name, tensor, config):
                if name == "lm_head.weight" and config.tie_word_embeddings:
                    _check_tied_head(part, state, handle, hub_name, path)
                    continue
                if name not in expected:
                    raise CheckpointError(f"checkpoint {path.name}: found tensor '{hub_name}' that this "
                                          f"{config.model_type} config has no place for (expected names like "
                                          f"'model.layers.0.operator_norm.weight')")
                if name in state:
                    raise CheckpointError(f"checkpoint: tensor '{hub_name}' found twice "
                                          f"(in {path.name} and {seen[name]})")
                if tuple(part.shape) != expected[name]:
                    raise CheckpointError(f"checkpoint: tensor '{hub_name}' has shape {tuple(part.shape)}, "
                                          f"expected {expected[name]} from config.json")
                if part.dtype not in FLOAT_DTYPES:
                    raise CheckpointError(f"checkpoint: tensor '{hub_name}' has dtype {part.dtype}, "
                                          f"expected a floating point dtype")
                keep_fp32 = name.endswith("expert_bias")  # selection scores are compared in fp32
                state[name] = part.to(device=device, dtype=torch.float32 if keep_fp32 else dtype)
                seen[name] = path.name


def _split(hub_name: str, tensor: torch.Tensor, config: LFM2Config):
    """Checkpoint name and tensor -> (our name, tensor) pairs; fused experts become per expert."""
    name = hub_name[len("model."):] if hub_name.startswith("model.") else hub_name
    fused = FUSED.match(name)
    if not fused:
        yield name, tensor
        return
    prefix, kind = fused.groups()
    E, I, H = config.num_experts, config.moe_intermediate_size, config.hidden_size
    want = (E, 2 * I, H) if kind == "gate_up_proj" else (E, H, I)
    if tuple(tensor.shape) != want:
        raise CheckpointError(f"checkpoint: tensor '{hub_name}' has shape {tuple(tensor.shape)}, "
                              f"expected {want} from config.json")
    for e in range(E):
        if kind == "gate_up_proj":  # rows [0, I) are w1 (gate), rows [I, 2I) are w3 (up)
            yield f"{prefix}.{e}.w1.weight", tensor[e, :I]
            yield f"{prefix}.{e}.w3.weight", tensor[e, I:]
        else:
            yield f"{prefix}.{e}.w2.weight", tensor[e]


def _check_tied_head(head: torch.Tensor, state: dict, handle, hub_name: str, path: Path) -> None:
    """A tied model may still carry a copy of the head; accept it only if it is that copy."""
    embed = state.get("embed_tokens.weight")
    if embed is None and "model.embed_tokens.weight" in handle.keys():
        embed = handle.get_tensor("model.embed_tokens.weight")
    if embed is None or embed.shape != head.shape or not torch.equal(embed.to(head.dtype).cpu(), head.cpu()):
        raise CheckpointError(f"checkpoint {path.name}: found '{hub_name}' but config.json ties the head to "
                              f"the embedding (tie_word_embeddings=true) and the two differ; expected no "
                              f"separate head or tie_word_embeddings=false")


def _hub_name(name: str) -> str:
    return name if name.startswith("lm_head") else f"model.{name}"


def _check_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, str) and dtype.removeprefix("torch.") in DTYPES:
        return DTYPES[dtype.removeprefix("torch.")]
    if dtype in FLOAT_DTYPES:
        return dtype
    raise TypeError(f"dtype: expected one of torch.float32, torch.bfloat16, torch.float16, found {dtype!r}")


def _check_device(device: torch.device | str) -> torch.device:
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device: expected 'cpu', 'cuda', 'cuda:N' or 'mps', found {device!r} ({err})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: expected an available device, found {device} requested but "
                         f"torch.cuda.is_available() is False (a CPU build of torch, or no GPU)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device: expected an available device, found {device} requested but MPS is not available")
    return device


# ------------------------------------------------------------------------------------------ save
def save_model(model: LFM2Model, folder: str | os.PathLike, max_shard_bytes: int = 5 * 2**30,
               overwrite: bool = False) -> Path:
    """Write `model` as a hub checkpoint (config.json + safetensors, per-expert layout).

    transformers' `from_pretrained` reads the result. Written to a temporary folder and moved into
    place at the end, so an interrupted save never leaves a half-written checkpoint behind.
    """
    folder = Path(folder).expanduser()
    if folder.exists() and not overwrite:
        raise FileExistsError(f"save_model: expected a new folder, found {folder} already exists "
                              f"(pass overwrite=True to replace it)")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tensors = {_hub_name(n): t.detach() for n, t in model.state_dict().items()}
    shards = plan_shards(tensors, max_shard_bytes)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".partial", dir=folder.parent))
    try:
        config = model.config.to_hub_dict()
        config["dtype"] = str(model.dtype).removeprefix("torch.")
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        files = [SINGLE_FILE] if len(shards) == 1 else [
            f"model-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)]
        for file, names in zip(files, shards):
            # Fresh copies, one shard at a time: loaded weights are views of one mapped file,
            # and safetensors refuses tensors that share memory.
            shard = {name: tensors[name].to("cpu", copy=True).contiguous() for name in names}
            save_file(shard, str(tmp / file), metadata={"format": "pt"})
            del shard
        if len(shards) > 1:
            weight_map = {name: file for file, names in zip(files, shards) for name in names}
            total = sum(t.numel() * t.element_size() for t in tensors.values())
            index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
            (tmp / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes the folder private; a checkpoint is not
        for file in tmp.iterdir():
            os.chmod(file, 0o666 & ~umask)
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            folder.rename(old)
            tmp.rename(folder)
            shutil.rmtree(old)
        else:
            tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def plan_shards(tensors: dict[str, torch.Tensor], max_bytes: int) -> list[list[str]]:
    """Names grouped into shards of at most max_bytes (a bigger tensor gets a shard of its own)."""
    shards: list[list[str]] = [[]]
    size = 0
    for name, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    return shards


__all__ = ["SHIPPED_MODEL", "SHIPPED_MODELS", "CheckpointError", "ConfigError", "load_model", "resolve_checkpoint", "save_model"]
