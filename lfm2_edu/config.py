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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MODEL_TYPES = ("lfm2_moe", "lfm2")
LAYER_TYPES = ("conv", "full_attention")
# LFM2-8B-A1B: 24 layers, attention at 2, 6, 10, 14, 18 and 21, short convolutions elsewhere.
LFM2_8B_A1B_LAYER_TYPES = tuple("full_attention" if i in (2, 6, 10, 14, 18, 21) else "conv" for i in range(24))


class ConfigError(ValueError):
    """A config.json that does not describe a model lfm2_edu can build."""


def _fail(field_name: str, found: Any, expected: str) -> ConfigError:
    return ConfigError(f"config field '{field_name}': expected {expected}, found {found!r}")


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

        def positive_int(name: str) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise _fail(name, value, "a positive integer")

        if self.model_type not in MODEL_TYPES:
            raise _fail("model_type", self.model_type, f"one of {list(MODEL_TYPES)}")
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "num_key_value_heads", "intermediate_size", "conv_L_cache", "max_position_embeddings"):
            positive_int(name)
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
            if kind not in LAYER_TYPES:
                raise _fail(f"layer_types[{i}]", kind, f"one of {list(LAYER_TYPES)}")
        if not isinstance(self.norm_eps, (int, float)) or not self.norm_eps > 0:
            raise _fail("norm_eps", self.norm_eps, "a positive number")
        if not isinstance(self.rope_theta, (int, float)) or not self.rope_theta > 1:
            raise _fail("rope_theta", self.rope_theta, "a number greater than 1")
        if self.is_moe:
            for name in ("num_experts", "num_experts_per_tok", "moe_intermediate_size"):
                positive_int(name)
            if self.num_experts_per_tok > self.num_experts:
                raise _fail("num_experts_per_tok", self.num_experts_per_tok,
                            f"at most num_experts={self.num_experts}")
            if (isinstance(self.num_dense_layers, bool) or not isinstance(self.num_dense_layers, int)
                    or not 0 <= self.num_dense_layers <= self.num_hidden_layers):
                raise _fail("num_dense_layers", self.num_dense_layers,
                            f"an integer from 0 to num_hidden_layers={self.num_hidden_layers}")
            if not isinstance(self.routed_scaling_factor, (int, float)) or not self.routed_scaling_factor > 0:
                raise _fail("routed_scaling_factor", self.routed_scaling_factor, "a positive number")
        for name in ("bos_token_id", "pad_token_id"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int) and 0 <= value < self.vocab_size):
                raise _fail(name, value, f"a token id in [0, vocab_size={self.vocab_size}) or null")
        eos = self.eos_token_id if isinstance(self.eos_token_id, list) else [self.eos_token_id]
        for value in eos:
            if value is not None and not (isinstance(value, int) and 0 <= value < self.vocab_size):
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
                attn = list(range(num_layers)) if isinstance(num_layers, int) else []
            if not isinstance(attn, list):
                raise _fail("full_attn_idxs", attn, "a list of layer indices")
            if isinstance(num_layers, int):
                for idx in attn:
                    if not isinstance(idx, int) or not 0 <= idx < num_layers:
                        raise _fail("full_attn_idxs", attn,
                                    f"layer indices in [0, num_hidden_layers={num_layers})")
            layer_types = ["full_attention" if i in attn else "conv"
                           for i in range(num_layers if isinstance(num_layers, int) else 0)]

        tie = d.get("tie_word_embeddings", d.get("tie_embedding", True))

        if model_type == "lfm2":
            ff = d.get("block_ff_dim", d.get("intermediate_size", 12288))
            if d.get("block_auto_adjust_ff_dim", True) and isinstance(ff, int):
                # Llama's rule: 2/3 of the nominal width, times a multiplier, rounded up.
                ff = int(2 * ff / 3)
                mult = d.get("block_ffn_dim_multiplier", 1.0)
                if mult is not None:
                    multiple = d.get("block_multiple_of", 256)
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
                use_expert_bias=bool(d.get("use_expert_bias", True)),
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
            norm_topk_prob=bool(d.get("norm_topk_prob", True)),
            routed_scaling_factor=d.get("routed_scaling_factor", 1.0),
            norm_eps=d.get("norm_eps", 1e-5),
            conv_L_cache=d.get("conv_L_cache", 3),
            conv_bias=bool(d.get("conv_bias", False)),
            rope_theta=rope_theta,
            max_position_embeddings=d.get("max_position_embeddings", 128_000),
            tie_word_embeddings=bool(tie),
            bos_token_id=d.get("bos_token_id", 1),
            eos_token_id=d.get("eos_token_id", 7),
            pad_token_id=d.get("pad_token_id", 0),
            **moe,
        )

    @classmethod
    def from_file(cls, path: str | Path) -> "LFM2Config":
        path = Path(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config: expected a config.json at {path}, found no such file") from None
        except json.JSONDecodeError as err:
            raise ConfigError(f"config: expected valid JSON in {path}, found a syntax error: {err}") from None
        return cls.from_hub_dict(raw)

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
