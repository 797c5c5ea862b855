"""One configuration type for LFM2-MoE (`lfm2_moe`) and dense LFM2 (`lfm2`).

`LFM2Config.from_hub_dict` reads a Hugging Face `config.json` as published, including the legacy
keys of the dense LFM2 releases (`block_ff_dim`, `tie_embedding`, `full_attn_idxs`, the
`block_auto_adjust_ff_dim` width rule) and both spellings of the RoPE base. Everything is
validated up front, so a malformed config fails here with a message naming the field, instead of
deep inside a matmul. `to_hub_dict` writes the config back in the form transformers reads.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MODEL_TYPES = ("lfm2_moe", "lfm2")
LAYER_TYPES = ("conv", "full_attention")
# LFM2-8B-A1B: 24 layers, attention at 2, 6, 10, 14, 18 and 21, short convolutions elsewhere.
LFM2_8B_A1B_LAYER_TYPES = tuple("full_attention" if i in (2, 6, 10, 14, 18, 21) else "conv" for i in range(24))

# Upper bounds on the sizes a config may ask for: far above any published model (LFM2-24B-A2B has
# 40 layers and 64 experts; the largest open models about 128 layers, 384 experts, a 262k vocabulary
# and hidden size 16384), low enough that a config.json alone cannot make anything that reads it
# (layer lists, parameter counts, `lfm2-edu info`) loop or allocate without end. A checkpoint's own
# tensors are compared with the config before a model is built (checkpoint.py).
MAX_SIZES = {
    "vocab_size": 2**21, "hidden_size": 2**16, "num_hidden_layers": 1024, "num_attention_heads": 2**16,
    "num_key_value_heads": 2**16, "intermediate_size": 2**20, "moe_intermediate_size": 2**20,
    "num_experts": 4096, "num_experts_per_tok": 4096, "conv_L_cache": 1024, "max_position_embeddings": 2**31,
}
MAX_JSON_BYTES = 64 * 2**20  # config.json and the shard index: kilobytes to a few megabytes in real checkpoints


class ConfigError(ValueError):
    """A config.json that does not describe a model lfm2_edu can build."""


def _shown(value: Any, limit: int = 80) -> str:
    """repr, cut short: a hostile value may be a list of a million entries."""
    try:
        text = repr(value)
    except ValueError:  # an int too long to print (more than 4300 digits)
        return f"an integer of {value.bit_length():,} bits"
    if len(text) <= limit:
        return text
    size = f" of length {len(value)}" if isinstance(value, (list, dict, str)) else ""
    return f"{text[:limit]}... (a {type(value).__name__}{size})"


def _fail(field_name: str, found: Any, expected: str) -> ConfigError:
    return ConfigError(f"config field '{field_name}': expected {expected}, found {_shown(found)}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is not a 1


def _is_number(value: Any) -> bool:
    """A finite int or float (JSON as Python reads it also allows NaN and Infinity)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_size(name: str, value: Any) -> None:
    if not _is_int(value) or not 1 <= value <= MAX_SIZES[name]:
        raise _fail(name, value, f"a positive integer of at most {MAX_SIZES[name]:,}")


def read_json(path: str | Path, error: type[ValueError] = ConfigError, what: str = "config") -> Any:
    """A JSON file of a checkpoint, read defensively: whatever is wrong with it becomes `error`,
    with a message that says what was expected and what was found."""
    path = Path(path)
    if not path.is_file():
        found = "something that is not a regular file" if path.exists() else "no such file"
        raise error(f"{what}: expected a {path.name} at {path}, found {found}")
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise error(f"{what}: expected at most {MAX_JSON_BYTES:,} bytes of JSON in {path}, found {size:,}")
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise error(f"{what}: expected UTF-8 text in {path}, found invalid bytes ({err})") from None
    except json.JSONDecodeError as err:
        raise error(f"{what}: expected valid JSON in {path}, found a syntax error: {err}") from None
    except RecursionError:
        raise error(f"{what}: expected valid JSON in {path}, found arrays or objects nested too deeply "
                    f"to read") from None
    except ValueError as err:  # e.g. an integer of more than 4300 digits
        raise error(f"{what}: expected valid JSON in {path}, found {err}") from None


@dataclass
class LFM2Config:
    """Every number the model needs; the defaults are LFM2-8B-A1B's published config.

    Dense LFM2 is the special case with no MoE layers (`model_type="lfm2"`).
    """

    model_type: str = "lfm2_moe"
    vocab_size: int = 65536
    hidden_size: int = 2048
    num_hidden_layers: int = 24
    num_attention_heads: int = 32
    num_key_value_heads: int = 8
    layer_types: list[str] = field(default_factory=lambda: list(LFM2_8B_A1B_LAYER_TYPES))
    intermediate_size: int = 7168  # width of the dense SwiGLU MLPs, already resolved
    # Mixture of experts (ignored for model_type "lfm2", which has no MoE layers).
    num_dense_layers: int = 2  # layers 0..num_dense_layers-1 use the dense MLP
    num_experts: int = 32
    num_experts_per_tok: int = 4
    moe_intermediate_size: int = 1792
    use_expert_bias: bool = True
    norm_topk_prob: bool = True
    routed_scaling_factor: float = 1.0
    # Blocks.
    norm_eps: float = 1e-5
    conv_L_cache: int = 3  # the short convolution's kernel length
    conv_bias: bool = False
    rope_theta: float = 1_000_000.0
    max_position_embeddings: int = 128_000
    tie_word_embeddings: bool = True
    # Special tokens.
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 7
    pad_token_id: int | None = 0

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ derived numbers
    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def is_moe(self) -> bool:
        return self.model_type == "lfm2_moe"

    # The layer lists every part of the package (and the chapters) use: one source for each.
    @property
    def attention_layers(self) -> list[int]:
        """Layers whose token mixer is grouped-query attention."""
        return [i for i in range(self.num_hidden_layers) if self.is_attention_layer(i)]

    @property
    def conv_layers(self) -> list[int]:
        """Layers whose token mixer is the short convolution."""
        return [i for i in range(self.num_hidden_layers) if not self.is_attention_layer(i)]

    @property
    def moe_layers(self) -> list[int]:
        """Layers whose feed-forward block is the sparse MoE (none in a dense LFM2)."""
        return [i for i in range(self.num_hidden_layers) if self.is_moe_layer(i)]

    @property
    def dense_layers(self) -> list[int]:
        """Layers whose feed-forward block is the dense SwiGLU MLP (no router)."""
        return [i for i in range(self.num_hidden_layers) if not self.is_moe_layer(i)]

    def is_attention_layer(self, i: int) -> bool:
        return self.layer_types[i] == "full_attention"

    def is_moe_layer(self, i: int) -> bool:
        return self.is_moe and i >= self.num_dense_layers

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise ConfigError naming the first field that cannot describe a working model."""
        if self.model_type not in MODEL_TYPES:
            raise _fail("model_type", self.model_type, f"one of {list(MODEL_TYPES)}")
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "num_key_value_heads", "intermediate_size", "conv_L_cache", "max_position_embeddings"):
            _check_size(name, getattr(self, name))
        if self.hidden_size % self.num_attention_heads:
            raise _fail("num_attention_heads", self.num_attention_heads,
                        f"a divisor of hidden_size={self.hidden_size}")
        if self.head_dim % 2:
            raise _fail("num_attention_heads", self.num_attention_heads,
                        f"an even head_dim for RoPE (hidden_size/num_attention_heads = {self.head_dim})")
        if self.num_attention_heads % self.num_key_value_heads:
            raise _fail("num_key_value_heads", self.num_key_value_heads,
                        f"a divisor of num_attention_heads={self.num_attention_heads}")
        if not isinstance(self.layer_types, list) or len(self.layer_types) != self.num_hidden_layers:
            raise _fail("layer_types", self.layer_types,
                        f"a list of num_hidden_layers={self.num_hidden_layers} entries")
        for i, kind in enumerate(self.layer_types):
            if not isinstance(kind, str) or kind not in LAYER_TYPES:
                raise _fail(f"layer_types[{i}]", kind, f"one of {list(LAYER_TYPES)}")
        if not _is_number(self.norm_eps) or not self.norm_eps > 0:
            raise _fail("norm_eps", self.norm_eps, "a positive number")
        if not _is_number(self.rope_theta) or not self.rope_theta > 1:
            raise _fail("rope_theta", self.rope_theta, "a finite number greater than 1")
        for name in ("use_expert_bias", "norm_topk_prob", "conv_bias", "tie_word_embeddings"):
            if not isinstance(getattr(self, name), bool):  # the string "false" would read as True
                raise _fail(name, getattr(self, name), "true or false")
        if self.is_moe:
            for name in ("num_experts", "num_experts_per_tok", "moe_intermediate_size"):
                _check_size(name, getattr(self, name))
            if self.num_experts_per_tok > self.num_experts:
                raise _fail("num_experts_per_tok", self.num_experts_per_tok,
                            f"at most num_experts={self.num_experts}")
            if not _is_int(self.num_dense_layers) or not 0 <= self.num_dense_layers <= self.num_hidden_layers:
                raise _fail("num_dense_layers", self.num_dense_layers,
                            f"an integer from 0 to num_hidden_layers={self.num_hidden_layers}")
            if not _is_number(self.routed_scaling_factor) or not self.routed_scaling_factor > 0:
                raise _fail("routed_scaling_factor", self.routed_scaling_factor, "a positive number")
        for name in ("bos_token_id", "pad_token_id"):
            value = getattr(self, name)
            if value is not None and not (_is_int(value) and 0 <= value < self.vocab_size):
                raise _fail(name, value, f"a token id in [0, vocab_size={self.vocab_size}) or null")
        eos = self.eos_token_id if isinstance(self.eos_token_id, list) else [self.eos_token_id]
        for value in eos:
            if value is not None and not (_is_int(value) and 0 <= value < self.vocab_size):
                raise _fail("eos_token_id", self.eos_token_id,
                            f"token ids in [0, vocab_size={self.vocab_size}) or null")

    # ------------------------------------------------------------------ hub config.json
    @classmethod
    def from_hub_dict(cls, raw: dict) -> "LFM2Config":
        """Build from the dict of a hub config.json (either model type, legacy keys included)."""
        if not isinstance(raw, dict):
            raise ConfigError(f"config: expected a JSON object, found {type(raw).__name__}")
        d = dict(raw)
        model_type = d.get("model_type")
        if model_type not in MODEL_TYPES:
            raise _fail("model_type", model_type, f"one of {list(MODEL_TYPES)}")

        def need(name: str) -> Any:
            if name not in d:
                raise ConfigError(f"config field '{name}': expected it to be present for "
                                  f"model_type '{model_type}', found it missing")
            return d[name]

        num_layers = need("num_hidden_layers")
        _check_size("num_hidden_layers", num_layers)  # before any per-layer list is built from it
        hidden = need("hidden_size")

        # RoPE base: transformers 5 nests it in rope_parameters; older configs say rope_theta.
        rope = d.get("rope_parameters") or {}
        if not isinstance(rope, dict):
            raise _fail("rope_parameters", rope, "an object with 'rope_theta'")
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type != "default":
            raise _fail("rope_parameters.rope_type", rope_type, "'default' (plain RoPE, as LFM2 uses)")
        rope_theta = rope.get("rope_theta", d.get("rope_theta", 1_000_000.0))

        # Layer pattern: layer_types, or for old dense configs the list of attention layers.
        layer_types = d.get("layer_types")
        if layer_types is None:
            if model_type == "lfm2_moe":
                raise ConfigError("config field 'layer_types': expected a list of 'conv'/'full_attention' "
                                  "per layer (required for lfm2_moe), found it missing")
            attn = d.get("full_attn_idxs")
            if attn is None:
                attn = list(range(num_layers))
            if not isinstance(attn, list):
                raise _fail("full_attn_idxs", attn, "a list of layer indices")
            for idx in attn:
                if not _is_int(idx) or not 0 <= idx < num_layers:
                    raise _fail("full_attn_idxs", attn, f"layer indices in [0, num_hidden_layers={num_layers})")
            attn = set(attn)
            layer_types = ["full_attention" if i in attn else "conv" for i in range(num_layers)]

        tie = d.get("tie_word_embeddings", d.get("tie_embedding", True))

        if model_type == "lfm2":
            ff_key = "block_ff_dim" if "block_ff_dim" in d else "intermediate_size"
            ff = d.get(ff_key, 12288)
            auto = d.get("block_auto_adjust_ff_dim", True)
            if not isinstance(auto, bool):
                raise _fail("block_auto_adjust_ff_dim", auto, "true or false")
            if auto:
                # Llama's rule: 2/3 of the nominal width, times a multiplier, rounded up.
                # Operands are checked first: a string times an int is a (huge) string.
                if not _is_int(ff) or not 1 <= ff <= MAX_SIZES["intermediate_size"]:
                    raise _fail(ff_key, ff, f"a positive integer of at most {MAX_SIZES['intermediate_size']:,}")
                ff = int(2 * ff / 3)
                mult = d.get("block_ffn_dim_multiplier", 1.0)
                if mult is not None:
                    multiple, most = d.get("block_multiple_of", 256), MAX_SIZES["intermediate_size"]
                    if not _is_number(mult) or not 0 < mult <= most:  # bounded: mult * ff stays finite
                        raise _fail("block_ffn_dim_multiplier", mult, f"a positive number of at most {most:,} or null")
                    if not _is_int(multiple) or not 0 < multiple <= most:
                        raise _fail("block_multiple_of", multiple, f"a positive integer of at most {most:,}")
                    ff = int(mult * ff)
                    ff = multiple * ((ff + multiple - 1) // multiple)
            moe = dict(num_dense_layers=num_layers, num_experts=0, num_experts_per_tok=0,
                       moe_intermediate_size=0, use_expert_bias=False)
        else:
            ff = need("intermediate_size")
            moe = dict(
                num_dense_layers=d.get("num_dense_layers", 2),
                num_experts=need("num_experts"),
                num_experts_per_tok=need("num_experts_per_tok"),
                moe_intermediate_size=need("moe_intermediate_size"),
                use_expert_bias=d.get("use_expert_bias", True),
            )
        return cls(
            model_type=model_type,
            vocab_size=d.get("vocab_size", 65536),
            hidden_size=hidden,
            num_hidden_layers=num_layers,
            num_attention_heads=need("num_attention_heads"),
            num_key_value_heads=d.get("num_key_value_heads", d.get("num_attention_heads")),
            layer_types=list(layer_types) if isinstance(layer_types, (list, tuple)) else layer_types,
            intermediate_size=ff,
            norm_topk_prob=d.get("norm_topk_prob", True),
            routed_scaling_factor=d.get("routed_scaling_factor", 1.0),
            norm_eps=d.get("norm_eps", 1e-5),
            conv_L_cache=d.get("conv_L_cache", 3),
            conv_bias=d.get("conv_bias", False),
            rope_theta=rope_theta,
            max_position_embeddings=d.get("max_position_embeddings", 128_000),
            tie_word_embeddings=tie,
            bos_token_id=d.get("bos_token_id", 1),
            eos_token_id=d.get("eos_token_id", 7),
            pad_token_id=d.get("pad_token_id", 0),
            **moe,
        )

    @classmethod
    def from_file(cls, path: str | Path) -> "LFM2Config":
        return cls.from_hub_dict(read_json(path, ConfigError, "config"))

    def to_hub_dict(self) -> dict:
        """The config.json that transformers (and from_hub_dict) read back to this exact model."""
        d = {
            "architectures": ["Lfm2MoeForCausalLM" if self.is_moe else "Lfm2ForCausalLM"],
            "model_type": self.model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "layer_types": list(self.layer_types),
            "intermediate_size": self.intermediate_size,
            "norm_eps": self.norm_eps,
            "conv_L_cache": self.conv_L_cache,
            "conv_bias": self.conv_bias,
            "rope_parameters": {"rope_theta": self.rope_theta, "rope_type": "default"},
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": self.pad_token_id,
        }
        if self.is_moe:
            d.update(num_dense_layers=self.num_dense_layers, num_experts=self.num_experts,
                     num_experts_per_tok=self.num_experts_per_tok,
                     moe_intermediate_size=self.moe_intermediate_size,
                     use_expert_bias=self.use_expert_bias, norm_topk_prob=self.norm_topk_prob,
                     routed_scaling_factor=self.routed_scaling_factor)
        else:
            d["block_auto_adjust_ff_dim"] = False  # intermediate_size is already the real width
        return d

    def replace(self, **changes: Any) -> "LFM2Config":
        return dataclasses.replace(self, **changes)
