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

Checkpoints are published by others, so nothing in one is trusted: the index may only name
shard files inside the folder, and the safetensors headers (names, shapes and dtypes, read
without the data) are compared with what config.json implies (`tensor_shapes`, `count_parameters`)
before a single module is built. What a loader raises, always with what it expected and found:
- `ConfigError`      config.json is missing, unreadable, or names an impossible or oversized model;
- `CheckpointError`  no such folder or hub repo, an index naming files outside the folder, a
                     truncated or corrupt safetensors file, tensors config.json does not account for
                     (a missing, stray or mis-shaped tensor; a config field the headers contradict);
- `TokenizerError`   (tokenizer.py) tokenizer files that are missing or unusable.
Bad arguments (dtype, device) raise TypeError / ValueError. All three errors are ValueErrors.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from contextlib import ExitStack
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .config import ConfigError, LFM2Config, _shown, read_json
from .model import LFM2Model
from .params import count_parameters

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
HUB_FILES = ["config.json", "generation_config.json", "*.safetensors", INDEX_FILE, "tokenizer.json",
             "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
FLOAT_DTYPES = tuple(DTYPES.values())
HEADER_DTYPES = ("F32", "BF16", "F16")  # the same three, as safetensors headers spell them
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


def _plain_file_name(name: object) -> bool:
    """A *.safetensors file directly inside the checkpoint folder: no absolute path, no '..', no
    sub-folder, no drive letter. Checked on the name, not on the resolved path: the hub cache's
    snapshots are symlinks into its blob store, and they must still load."""
    return (isinstance(name, str) and name.endswith(".safetensors") and name not in (".", "..")
            and not any(c in name for c in "/\\:\0"))


def read_index(folder: Path) -> dict | None:
    """The checkpoint's shard index, checked; None when it has none.

    Someone else wrote it: a shard named '../outside.safetensors' or an absolute path is refused
    on its name, before any file is opened or even looked at."""
    path = folder / INDEX_FILE
    if not (path.exists() or path.is_symlink()):
        return None
    index = read_json(path, CheckpointError, "checkpoint")
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict):
        found = (f"a {type(index).__name__}" if not isinstance(index, dict) else
                 "no 'weight_map'" if "weight_map" not in index else f"a 'weight_map' that is a {type(weight_map).__name__}")
        raise CheckpointError(f"checkpoint: expected {INDEX_FILE} to be an object with a 'weight_map' object "
                              f"(tensor name -> shard file), found {found}")
    for name, file in weight_map.items():
        if not _plain_file_name(file):
            raise CheckpointError(f"checkpoint: {INDEX_FILE} places {_shown(name)} in a shard; expected a plain "
                                  f"*.safetensors file name inside the checkpoint folder (no path, no '..', no "
                                  f"drive), such as 'model-00001-of-00002.safetensors', found {_shown(file)}")
    return index


def _shard_map(folder: Path) -> dict[str, list[str]]:
    """file name -> tensor names it should hold, from the index or the single file."""
    index = read_index(folder)
    if index is not None:
        shards: dict[str, list[str]] = {}
        for name, file in index["weight_map"].items():
            shards.setdefault(file, []).append(name)
        for file in shards:
            if not (folder / file).is_file():
                raise CheckpointError(f"checkpoint: expected every shard {INDEX_FILE} lists in {folder}; it "
                                      f"lists shard '{file}', found no such file (an incomplete download?)")
        return shards
    if (folder / SINGLE_FILE).is_file():
        return {SINGLE_FILE: []}  # names come from the file itself
    found = sorted(p.name for p in folder.iterdir())
    raise CheckpointError(f"checkpoint: expected {SINGLE_FILE} or {INDEX_FILE} in {folder}, "
                          f"found {found[:10]}")


# ----------------------------------------------------------------------- what the config implies
def tensor_shapes(config: LFM2Config):
    """Every tensor a checkpoint of `config` holds, as (our name, shape), computed from the config
    alone (no module built). Our names are the hub's minus "model."; the experts one by one.
    The one source for what a loader expects, before and after the model is built."""
    H, V, d, L = config.hidden_size, config.vocab_size, config.head_dim, config.conv_L_cache
    nh, nkv = config.num_attention_heads, config.num_key_value_heads
    yield "embed_tokens.weight", (V, H)
    for i in range(config.num_hidden_layers):
        p = f"layers.{i}."
        yield p + "operator_norm.weight", (H,)
        if config.is_attention_layer(i):
            yield from [(p + "self_attn.q_proj.weight", (nh * d, H)), (p + "self_attn.k_proj.weight", (nkv * d, H)),
                        (p + "self_attn.v_proj.weight", (nkv * d, H)), (p + "self_attn.out_proj.weight", (H, nh * d)),
                        (p + "self_attn.q_layernorm.weight", (d,)), (p + "self_attn.k_layernorm.weight", (d,))]
        else:
            yield from [(p + "conv.in_proj.weight", (3 * H, H)), (p + "conv.conv.weight", (H, 1, L)),
                        (p + "conv.out_proj.weight", (H, H))]
            if config.conv_bias:
                yield from [(p + "conv.in_proj.bias", (3 * H,)), (p + "conv.conv.bias", (H,)),
                            (p + "conv.out_proj.bias", (H,))]
        yield p + "ffn_norm.weight", (H,)
        if config.is_moe_layer(i):
            E, I = config.num_experts, config.moe_intermediate_size
            yield p + "feed_forward.gate.weight", (E, H)
            if config.use_expert_bias:
                yield p + "feed_forward.expert_bias", (E,)
            for e in range(E):
                q = f"{p}feed_forward.experts.{e}."
                yield from [(q + "w1.weight", (I, H)), (q + "w3.weight", (I, H)), (q + "w2.weight", (H, I))]
        else:
            ff = config.intermediate_size
            yield from [(p + "feed_forward.w1.weight", (ff, H)), (p + "feed_forward.w3.weight", (ff, H)),
                        (p + "feed_forward.w2.weight", (H, ff))]
    yield "embedding_norm.weight", (H,)
    if not config.tie_word_embeddings:
        yield "lm_head.weight", (V, H)


def _parts(hub_name: str, shape: tuple, config: LFM2Config) -> list[tuple[str, tuple, tuple]]:
    """A checkpoint tensor -> (our name, shape, index into the tensor) for each parameter it holds:
    itself, or, fused as transformers holds the experts, one expert's slice of it."""
    name = hub_name.removeprefix("model.")
    fused = FUSED.match(name)
    if not fused:
        return [(name, shape, ())]
    prefix, kind = fused.groups()
    E, I, H = config.num_experts, config.moe_intermediate_size, config.hidden_size
    want = (E, 2 * I, H) if kind == "gate_up_proj" else (E, H, I)
    if shape != want:
        raise CheckpointError(f"checkpoint: tensor {_shown(hub_name)}: expected shape {want} from config.json, "
                              f"found {shape}")
    if kind == "down_proj":
        return [(f"{prefix}.{e}.w2.weight", (H, I), (e,)) for e in range(E)]
    return [part for e in range(E) for part in (  # rows [0, I) are w1 (gate), rows [I, 2I) are w3 (up)
        (f"{prefix}.{e}.w1.weight", (I, H), (e, slice(0, I))), (f"{prefix}.{e}.w3.weight", (I, H), (e, slice(I, 2 * I))))]


LAYER_TENSOR = re.compile(r"^layers\.(\d{1,9})\.(.+)$")  # a 5000-digit index is no layer
# The order in which config fields are compared with the checkpoint: the ones that decide the rest first.
FIELDS = ("model_type", "num_hidden_layers", "hidden_size", "vocab_size", "num_attention_heads",
          "num_key_value_heads", "conv_L_cache", "conv_bias", "num_dense_layers", "intermediate_size",
          "num_experts", "moe_intermediate_size", "use_expert_bias", "tie_word_embeddings")
MOE_FIELDS = ("num_dense_layers", "num_experts", "moe_intermediate_size", "use_expert_bias")


def _figures(shapes: dict[str, tuple]) -> dict[str, tuple]:
    """What a checkpoint's own tensors say each config field is, from their names and shapes alone:
    field -> (figure, the evidence). A field no tensor speaks of is left out."""
    said: dict[str, tuple] = {}

    def say(field: str, figure, evidence: str) -> None:
        said.setdefault(field, (figure, evidence))  # the first tensor that tells

    layers, mixers, dense, moe = {}, {}, set(), {}  # layer -> its first tensor (of that kind)
    head_dim = kv_rows = None
    for hub, shape in shapes.items():
        name, has = hub.removeprefix("model."), f"{hub} has shape {shape}"
        if name == "embed_tokens.weight" and len(shape) == 2:
            say("vocab_size", shape[0], has)
            say("hidden_size", shape[1], has)
        m = LAYER_TENSOR.match(name)
        if m is None:
            continue
        i, part = int(m[1]), m[2]
        layers.setdefault(i, hub)
        if part.startswith(("self_attn.", "conv.")):
            mixers.setdefault(i, ("full_attention" if part.startswith("self_attn.") else "conv", hub))
        if part == "self_attn.q_layernorm.weight" and len(shape) == 1:
            head_dim = head_dim or (shape[0], has)
        elif part == "self_attn.k_proj.weight" and len(shape) == 2:
            kv_rows = kv_rows or (shape[0], has)
        elif part == "conv.conv.weight" and len(shape) == 3:
            say("conv_L_cache", shape[2], has)
        elif part.startswith("conv.") and part.endswith(".bias"):
            say("conv_bias", True, f"{hub} is there")
        elif part == "feed_forward.w1.weight" and len(shape) == 2:
            dense.add(i)
            say("intermediate_size", shape[0], has)
        elif part == "feed_forward.gate.weight" and len(shape) == 2:
            moe.setdefault(i, hub)
            say("num_experts", shape[0], has)
        elif part == "feed_forward.expert_bias":
            moe.setdefault(i, hub)
            say("use_expert_bias", True, f"{hub} is there")
        elif part.startswith("feed_forward.experts."):
            moe.setdefault(i, hub)
            if part.endswith("gate_up_proj") and len(shape) == 3:
                say("num_experts", shape[0], has)
                say("moe_intermediate_size", shape[1] // 2, has)
            elif part.endswith(".w1.weight") and len(shape) == 2:
                say("moe_intermediate_size", shape[0], has)
    last = max(layers, default=-1)
    if moe:
        say("model_type", "lfm2_moe", f"{moe[min(moe)]} belongs to a mixture of experts")
        say("use_expert_bias", False, "no feed_forward.expert_bias in the headers")
    say("num_hidden_layers", last + 1, f"the last layer's tensors include {layers[last]}" if layers
        else "no tensor named model.layers.*")
    if dense or moe:
        say("num_dense_layers", len(dense), f"{len(dense)} layers have a dense feed_forward.w1.weight")
    if any(kind == "conv" for kind, _ in mixers.values()):
        say("conv_bias", False, "no conv biases in the headers")
    H = said.get("hidden_size", (None,))[0]
    head_dim = head_dim if head_dim and head_dim[0] > 0 else None
    if head_dim and H and H % head_dim[0] == 0:
        say("num_attention_heads", H // head_dim[0], f"{head_dim[1]}: heads of {head_dim[0]} in a hidden size of {H}")
    if head_dim and kv_rows and kv_rows[0] % head_dim[0] == 0:
        say("num_key_value_heads", kv_rows[0] // head_dim[0], f"{kv_rows[1]}, heads of {head_dim[0]}")
    if "model.embed_tokens.weight" in shapes and "lm_head.weight" not in shapes:
        say("tie_word_embeddings", True, "no lm_head.weight in the headers")
    ordered = {f: said[f] for f in FIELDS if f in said}
    ordered.update({f"layer_types[{i}]": (kind, f"{hub} is there") for i, (kind, hub) in sorted(mixers.items())})
    return ordered


def check_headers(config: LFM2Config, header: dict[str, tuple], where: Path) -> None:
    """Compare config.json with the checkpoint's safetensors headers (hub name -> (shape, dtype, file)),
    before any module is built: a config that asks for a million experts must not get them built."""
    shapes = {name: shape for name, (shape, _, _) in header.items()}
    held = sum(math.prod(shape) for name, shape in shapes.items()  # expert_bias is a buffer
               if not name.endswith("expert_bias") and not (name == "lm_head.weight" and config.tie_word_embeddings))
    totals = (f"config.json implies {count_parameters(config).total:,} parameters, the safetensors headers "
              f"hold {held:,}")
    for field, (figure, evidence) in _figures(shapes).items():
        if field in MOE_FIELDS and not config.is_moe:
            continue
        value = config.layer_types[int(field[12:-1])] if field.startswith("layer_types[") else getattr(config, field)
        if value != figure:
            raise CheckpointError(f"checkpoint {where}: config field '{field}': expected {json.dumps(figure)}, as "
                                  f"the safetensors headers say ({evidence[:300]}), found {json.dumps(value)} in "
                                  f"config.json ({totals})")
    placed: dict[str, tuple] = {}  # our name -> (shape, the checkpoint name it comes from)
    for hub_name, (shape, dtype, _) in header.items():
        if dtype not in HEADER_DTYPES:
            raise CheckpointError(f"checkpoint: tensor {_shown(hub_name)}: expected a floating point dtype "
                                  f"({', '.join(HEADER_DTYPES)}), found {dtype}")
        for name, part_shape, _ in _parts(hub_name, shape, config):
            if name == "lm_head.weight" and config.tie_word_embeddings:
                continue  # a copy of the embedding, compared with it once the data is read
            if name in placed:
                raise CheckpointError(f"checkpoint: expected each tensor once, found {_shown(_hub_name(name))} "
                                      f"twice (as {_shown(hub_name)} and {_shown(placed[name][1])})")
            placed[name] = (part_shape, hub_name)
    # Walk the expected tensors without listing them all first: a hostile config is cut short
    # at the first few missing tensors, whatever the number it asks for.
    missing, count = [], 0
    for name, shape in tensor_shapes(config):
        count += 1
        if name not in placed:
            missing.append(_hub_name(name))
            if len(missing) > 6:
                break
        elif placed[name][0] != shape:
            raise CheckpointError(f"checkpoint: tensor {_shown(placed[name][1])}: expected shape {shape} from "
                                  f"config.json, found {placed[name][0]}")
    if missing:
        many = f"at least {len(missing)}" if len(missing) > 6 else f"{len(missing)}"
        raise CheckpointError(f"checkpoint {where}: expected {'more than ' if len(missing) > 6 else ''}{count} "
                              f"tensors, found {many} missing: {missing[:6]}{' ...' if len(missing) > 6 else ''} "
                              f"({totals})")
    if len(placed) > count:
        known = {name for name, _ in tensor_shapes(config)}
        stray = next(hub for name, (_, hub) in placed.items() if name not in known)
        raise CheckpointError(f"checkpoint: found tensor {_shown(stray)} that this {config.model_type} config has "
                              f"no place for (expected names like 'model.layers.0.operator_norm.weight')")


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
    with ExitStack() as files:
        # 1. The headers only (names, shapes, dtypes), checked against the config: nothing built yet.
        handles, header = {}, {}
        for file, listed in _shard_map(folder).items():
            handles[file] = handle = files.enter_context(_open(folder / file))
            names = list(handle.keys())
            absent = sorted(set(listed) - set(names))
            if absent:
                raise CheckpointError(f"checkpoint: expected each tensor where {INDEX_FILE} places it; it "
                                      f"places {_shown(absent[:4])} in {file}, found them absent from that file")
            for name in names:
                if name in header:
                    raise CheckpointError(f"checkpoint: expected each tensor once, found {_shown(name)} twice "
                                          f"(in {header[name][2]} and {file})")
                view = handle.get_slice(name)
                header[name] = (tuple(view.get_shape()), view.get_dtype(), file)
        check_headers(config, header, folder)

        # 2. The model on the meta device (no memory); each parameter a view of the mapped file.
        with torch.device("meta"):
            model = LFM2Model(config)
        state: dict[str, torch.Tensor] = {}
        order = sorted(header, key=lambda name: name == "lm_head.weight")  # a tied head is compared with the embedding
        for hub_name in order:
            shape, _, file = header[hub_name]
            try:
                tensor = handles[file].get_tensor(hub_name)  # a view of the memory-mapped file
            except (SafetensorError, OSError, RuntimeError) as err:
                raise CheckpointError(f"checkpoint: could not read tensor {_shown(hub_name)} from {folder / file}: "
                                      f"expected its data, found the file truncated or corrupt ({err})") from None
            for name, _, index in _parts(hub_name, shape, config):
                if name == "lm_head.weight" and config.tie_word_embeddings:
                    _check_tied_head(tensor, state["embed_tokens.weight"], hub_name, file)
                    continue
                keep_fp32 = name.endswith("expert_bias")  # selection scores are compared in fp32
                state[name] = tensor[index].to(device=device, dtype=torch.float32 if keep_fp32 else dtype)
    model.load_state_dict(state, strict=True, assign=True)
    model.rope.reset_inv_freq(device)
    model.requires_grad_(False)  # a loaded model is for inference; train.py switches this back on
    return model.eval()


def _open(path: Path):
    try:
        return safe_open(str(path), framework="pt", device="cpu")
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"checkpoint: could not read {path}: expected a complete safetensors file, "
                              f"found a truncated or corrupt one ({err})") from None


def _check_tied_head(head: torch.Tensor, embed: torch.Tensor, hub_name: str, file: str) -> None:
    """A tied model may still carry a copy of the head; accept it only if it is that copy."""
    if embed.shape != head.shape or not torch.equal(embed.to(head.dtype).cpu(), head.cpu()):
        raise CheckpointError(f"checkpoint {file}: found '{hub_name}' but config.json ties the head to "
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


__all__ = ["SHIPPED_MODEL", "SHIPPED_MODELS", "CheckpointError", "ConfigError", "load_model", "read_index",
           "resolve_checkpoint", "save_model", "tensor_shapes"]
