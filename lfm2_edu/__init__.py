"""lfm2_edu: a readable PyTorch implementation of LFM2-MoE and dense LFM2.

    from lfm2_edu import load_model
    model = load_model("LiquidAI/LFM2-8B-A1B", dtype=torch.bfloat16)   # or a local folder
    logits = model(input_ids).logits                                    # (B, T, V)
"""

from .cache import HybridCache
from .checkpoint import SHIPPED_MODEL, CheckpointError, load_model, resolve_checkpoint, save_model
from .config import ConfigError, LFM2Config
from .model import LFM2Model, LFM2Output
from .moe import Routing
from .params import ParameterCounts, count_parameters
from .trace import CAPTURE_POINTS, Capture

__all__ = [
    "CAPTURE_POINTS", "SHIPPED_MODEL", "Capture", "CheckpointError", "ConfigError", "HybridCache", "LFM2Config",
    "LFM2Model", "LFM2Output", "ParameterCounts", "Routing", "count_parameters", "load_model", "resolve_checkpoint", "save_model",
]
__version__ = "0.1.0"

# Talking to the model: tokenizer and chat template, generation (greedy, sampling, streaming).
# The function generate() stays in lfm2_edu.generate: exported here, it would hide that module.
from .generate import RECOMMENDED, Generation, Sampling, generate_tokens, stream  # noqa: E402
from .tokenizer import Tokenizer, TokenizerError, load_tokenizer  # noqa: E402

__all__ += ["RECOMMENDED", "Generation", "Sampling", "Tokenizer", "TokenizerError", "generate_tokens",
            "load_tokenizer", "stream"]
