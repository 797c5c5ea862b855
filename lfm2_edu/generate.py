"""Generating text: one token at a time, with the hybrid cache, greedy or sampled.

    prompt ids --prefill--> logits of the last position --choose--> token --decode step--> ...

Prefill runs the whole prompt once and fills the cache (conv states, keys and values); each decode
step feeds only the newest token. Choosing a token follows transformers' `generate()` exactly:
the logits are taken in fp32, then

    repetition penalty -> [sampling only:] temperature -> top-k -> top-p -> min-p -> softmax -> draw

each a small function below. Greedy (temperature 0) takes the argmax after the repetition
penalty; the other steps never change the argmax. A batch of prompts of different lengths is
left-padded: the attention mask hides the padding, and positions count from each row's first real
token, so every row decodes exactly as it would alone. `fast=True` runs the same loop on
lfm2_edu.fast (a preallocated cache, only the chosen experts, SDPA): the same tokens, faster.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from .fast import FastLFM2
from .model import LFM2Model

# LFM2-8B-A1B's recommended sampling settings (its model card).
RECOMMENDED = {"temperature": 0.3, "min_p": 0.15, "repetition_penalty": 1.05}
PREFILL_CHUNK = 512  # long prompts are prefilled in chunks: the (B, T, V) logits stay small


# ----------------------------------------------------------------------------- sampling settings
@dataclass(frozen=True)
class Sampling:
    """How the next token is chosen. temperature 0 is greedy; top_k None or 0, top_p 1, min_p 0
    and repetition_penalty 1 each switch their step off."""

    temperature: float = 0.0
    top_k: int | None = None
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0

    def __post_init__(self) -> None:
        def number(name: str) -> float:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
                raise ValueError(f"{name}: expected a number, found {value!r}")
            return value

        if number("temperature") < 0 or math.isinf(self.temperature):
            raise ValueError(f"temperature: expected 0 (greedy) or a positive finite number, found {self.temperature}")
        k = self.top_k
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 0):
            raise ValueError(f"top_k: expected None, 0 (off) or a positive integer, found {self.top_k!r}")
        if not 0 < number("top_p") <= 1:
            raise ValueError(f"top_p: expected a number in (0, 1] (1 = off), found {self.top_p}")
        if not 0 <= number("min_p") <= 1:
            raise ValueError(f"min_p: expected a number in [0, 1] (0 = off), found {self.min_p}")
        if not 0 < number("repetition_penalty") < math.inf:
            raise ValueError(f"repetition_penalty: expected a positive number (1 = off), "
                             f"found {self.repetition_penalty}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


# ------------------------------------------------------------------- the logits processors, in order
# Each takes and returns fp32 logits (B, V). "Removed" tokens get -inf: probability 0 after softmax.

def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """Make every token already in the context (prompt or output) less likely (CTRL, Keskar 2019):
    z -> z / p if z > 0, z * p if z < 0 (p > 1 pushes z towards less probable either way).
    seen: (B, V) bool, True for the tokens present in each row's context."""
    penalised = torch.where(logits < 0, logits * penalty, logits / penalty)  # (B, V)
    return torch.where(seen, penalised, logits)


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """z -> z / T: T < 1 sharpens the distribution, T > 1 flattens it."""
    return logits / temperature


def apply_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits (and any tied with the k-th)."""
    kth = torch.topk(logits, min(k, logits.shape[-1])).values[..., -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, -math.inf)


def apply_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus sampling (Holtzman 2019): keep the smallest set of most probable tokens whose
    probabilities sum to at least p. Sorted ascending, a token goes when the mass up to and
    including it is <= 1 - p; the most probable token always stays."""
    sorted_logits, order = torch.sort(logits, descending=False)  # (B, V) each
    mass = sorted_logits.softmax(dim=-1).cumsum(dim=-1)  # (B, V): cumulative, least probable first
    remove_sorted = mass <= 1 - p
    remove_sorted[..., -1] = False  # keep the most probable token
    remove = remove_sorted.scatter(-1, order, remove_sorted)  # back to vocabulary order
    return logits.masked_fill(remove, -math.inf)


def apply_min_p(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """Min-p (Nguyen 2024): keep the tokens with probability >= min_p * (the top probability),
    a cut that adapts to how confident the model is."""
    probs = logits.softmax(dim=-1)  # (B, V)
    remove = probs < min_p * probs.amax(dim=-1, keepdim=True)
    remove.scatter_(-1, probs.argmax(dim=-1, keepdim=True), False)  # keep the most probable token
    return logits.masked_fill(remove, -math.inf)


def process_logits(logits: torch.Tensor, seen: torch.Tensor, sampling: Sampling) -> torch.Tensor:
    """All the steps, in transformers' order (generation/utils.py `_get_logits_processor`)."""
    logits = logits.float()  # (B, V): fp32, as transformers does
    if sampling.repetition_penalty != 1:
        logits = apply_repetition_penalty(logits, seen, sampling.repetition_penalty)
    if sampling.greedy:
        return logits  # the warpers below never move the argmax
    if sampling.temperature != 1:
        logits = apply_temperature(logits, sampling.temperature)
    if sampling.top_k:
        logits = apply_top_k(logits, sampling.top_k)
    if sampling.top_p < 1:
        logits = apply_top_p(logits, sampling.top_p)
    if sampling.min_p > 0:
        logits = apply_min_p(logits, sampling.min_p)
    return logits


def choose(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator | None = None) -> torch.Tensor:
    """Next token per row (B,) from processed logits (B, V): argmax, or one draw from softmax."""
    if sampling.greedy:
        return logits.argmax(dim=-1)
    probs = logits.softmax(dim=-1)  # (B, V)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)  # (B,)


# ----------------------------------------------------------------------------------- the loop
@dataclass
class Generation:
    """One prompt's result. new_ids include the stop token when one ended it."""

    prompt_ids: list[int]
    new_ids: list[int] = field(default_factory=list)
    finish_reason: str = "length"  # "stop": a stop token; "length": max_new_tokens; "context": model's limit


def _prompt_rows(prompts, vocab_size: int) -> list[list[int]]:
    """One prompt (list of ids, 1-D tensor) or several (list of lists, 2-D tensor) -> rows."""
    if isinstance(prompts, torch.Tensor):
        prompts = prompts.tolist()
    if not isinstance(prompts, Sequence) or isinstance(prompts, str):
        raise TypeError(f"prompts: expected token ids (a list of ints, a list of lists, or a tensor), "
                        f"found {type(prompts).__name__}; encode text with the tokenizer first")
    if len(prompts) == 0:
        raise ValueError("prompt: expected at least one token, found an empty prompt")
    rows = [list(prompts)] if not isinstance(prompts[0], (Sequence, torch.Tensor)) else [
        p.tolist() if isinstance(p, torch.Tensor) else list(p) for p in prompts]
    for i, row in enumerate(rows):
        if not row:
            raise ValueError(f"prompt {i}: expected at least one token, found an empty prompt")
        bad = [t for t in row if isinstance(t, bool) or not isinstance(t, numbers.Integral) or not 0 <= t < vocab_size]
        if bad:
            raise ValueError(f"prompt {i}: expected token ids in [0, {vocab_size}), found {bad[:5]}")
    return [[int(t) for t in row] for row in rows]


def _stop_ids(model: LFM2Model, stop_token_ids) -> list[int]:
    if stop_token_ids is None:  # the model's eos (LFM2: <|im_end|>, id 7)
        eos = model.config.eos_token_id
        stop_token_ids = [] if eos is None else eos if isinstance(eos, list) else [eos]
    stop = [stop_token_ids] if isinstance(stop_token_ids, int) else list(stop_token_ids)
    V = model.config.vocab_size
    if any(isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < V for t in stop):
        raise ValueError(f"stop_token_ids: expected token ids in [0, {V}), found {stop}")
    return stop


@torch.no_grad()
def generate_tokens(model: LFM2Model | FastLFM2, prompts, max_new_tokens: int = 256, *, temperature: float = 0.0,
                    top_k: int | None = None, top_p: float = 1.0, min_p: float = 0.0,
                    repetition_penalty: float = 1.0, stop_token_ids: int | Sequence[int] | None = None,
                    seed: int | None = None, generator: torch.Generator | None = None,
                    results: list[Generation] | None = None, fast: bool = False) -> Iterator[list[int | None]]:
    """Yield, after each step, the new token of every prompt (None for a prompt already finished).

    prompts: token ids of one prompt, or of several (any lengths: they are left-padded).
    stop_token_ids: None for the model's eos; [] never stops before max_new_tokens.
    seed (or a torch.Generator): reproducible sampling.
    results: a list that receives one Generation per prompt, filled in as the tokens come.
    fast: run the fast path (lfm2_edu.fast) on the model's weights; the same tokens. A FastLFM2
    passed as the model (e.g. with int8 weights) is used as it is.
    """
    if fast and isinstance(model, LFM2Model):
        model = FastLFM2(model)
    sampling = Sampling(temperature, top_k, top_p, min_p, repetition_penalty)
    cfg = model.config
    rows = _prompt_rows(prompts, cfg.vocab_size)
    stop = _stop_ids(model, stop_token_ids)
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens: expected a positive integer, found {max_new_tokens!r}")
    T = max(len(r) for r in rows)  # prompt length after padding
    if T > cfg.max_position_embeddings:
        raise ValueError(f"prompt: the model allows at most max_position_embeddings={cfg.max_position_embeddings} "
                         f"tokens, found a prompt of {T} tokens")
    if generator is None and seed is not None:
        generator = torch.Generator(model.device).manual_seed(seed)
    if results is None:
        results = []
    results[:] = [Generation(prompt_ids=list(r)) for r in rows]

    # Left padding: every prompt ends at the same column, so each row's next token is the last.
    B, device, pad = len(rows), model.device, cfg.pad_token_id or 0
    ids = torch.tensor([[pad] * (T - len(r)) + r for r in rows], device=device)  # (B, T)
    mask = torch.tensor([[0] * (T - len(r)) + [1] * len(r) for r in rows], device=device)  # (B, T)
    padded = not bool(mask.all())
    # Each row counts positions from its first real token, as transformers does. (RoPE sees only
    # distances, so a shift would change nothing but rounding; this keeps even that the same.)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, T): 0 at each row's first real token
    V = cfg.vocab_size
    seen = torch.zeros(B, V + 1, dtype=torch.bool, device=device)  # column V collects the padding
    seen.scatter_(1, ids.masked_fill(mask == 0, V), True)
    seen = seen[:, :V]  # (B, V): tokens in each row's prompt, for the repetition penalty

    # n new tokens need the prompt and n-1 of them fed in: T + n - 1 <= max_position_embeddings.
    steps = min(max_new_tokens, cfg.max_position_embeddings - T + 1)
    cache = (model.new_cache(B, T + steps - 1) if isinstance(model, FastLFM2)  # preallocated, never grows
             else model.new_cache())
    for start in range(0, T, PREFILL_CHUNK):
        end = min(start + PREFILL_CHUNK, T)
        logits = model(ids[:, start:end], cache=cache, attention_mask=mask[:, :end] if padded else None,
                       position_ids=positions[:, start:end] if padded else None).logits[:, -1]  # (B, V)
    finished = torch.zeros(B, dtype=torch.bool, device=device)
    for step in range(steps):
        next_ids = choose(process_logits(logits, seen, sampling), sampling, generator)  # (B,)
        next_ids = next_ids.masked_fill(finished, pad)  # finished rows only mark time
        out: list[int | None] = []
        for b, (tok, done) in enumerate(zip(next_ids.tolist(), finished.tolist())):
            out.append(None if done else tok)
            if not done:
                results[b].new_ids.append(tok)
                if tok in stop:
                    results[b].finish_reason = "stop"
        finished |= torch.isin(next_ids, torch.tensor(stop, device=device, dtype=next_ids.dtype))
        yield out
        if bool(finished.all()):
            return
        if step == steps - 1:
            break
        seen[torch.arange(B, device=device), next_ids] = True
        if padded:
            mask = torch.cat([mask, mask.new_ones(B, 1)], dim=1)  # (B, S + 1)
            positions = positions[:, -1:] + 1  # (B, 1)
        logits = model(next_ids[:, None], cache=cache, attention_mask=mask if padded else None,
                       position_ids=positions if padded else None).logits[:, -1]  # (B, V)
    if steps < max_new_tokens:
        for r in results:
            if r.finish_reason != "stop":
                r.finish_reason = "context"


def generate(model: LFM2Model | FastLFM2, prompts, max_new_tokens: int = 256, **settings) -> list[Generation]:
    """Generate for one or several prompts (token ids); one Generation per prompt.
    Settings as in `generate_tokens`: temperature, top_k, top_p, min_p, repetition_penalty,
    stop_token_ids, seed, fast."""
    results: list[Generation] = []
    for _ in generate_tokens(model, prompts, max_new_tokens, results=results, **settings):
        pass
    return results


# --------------------------------------------------------------------------------- streaming
class IncrementalDecoder:
    """Token ids in, text out, as soon as it is final.

    A byte-level token may hold only part of a UTF-8 character (an emoji is often 2-4 tokens); its
    text then ends in U+FFFD until the rest arrives. So text is emitted only when the decoded
    window does not end in U+FFFD, and decoding restarts from the last emitted boundary.
    """

    def __init__(self, tokenizer, skip_special_tokens: bool = True) -> None:
        self.tokenizer, self.skip = tokenizer, skip_special_tokens
        self.ids: list[int] = []
        self.start = 0  # ids before this were emitted, up to a character boundary
        self.done = 0  # ids[start:done] are emitted text

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        emitted = self.tokenizer.decode(self.ids[self.start:self.done], skip_special_tokens=self.skip)
        text = self.tokenizer.decode(self.ids[self.start:], skip_special_tokens=self.skip)
        if len(text) > len(emitted) and not text.endswith("\ufffd"):
            self.start, self.done = self.done, len(self.ids)
            return text[len(emitted):]
        return ""

    def flush(self) -> str:
        """Whatever is left (an unfinished character shows as U+FFFD)."""
        emitted = self.tokenizer.decode(self.ids[self.start:self.done], skip_special_tokens=self.skip)
        text = self.tokenizer.decode(self.ids[self.start:], skip_special_tokens=self.skip)
        self.start = self.done = len(self.ids)
        return text[len(emitted):]


def stream(model: LFM2Model | FastLFM2, tokenizer, prompt_ids, max_new_tokens: int = 256, *,
           skip_special_tokens: bool = True, result: list[Generation] | None = None, **settings) -> Iterator[str]:
    """Yield the text of one prompt's continuation, piece by piece, as it is generated.
    result: a list that receives the Generation (ids, finish reason) once done."""
    rows = _prompt_rows(prompt_ids, model.config.vocab_size)
    if len(rows) != 1:
        raise ValueError(f"stream: expected one prompt, found {len(rows)}; use generate() for a batch")
    decoder = IncrementalDecoder(tokenizer, skip_special_tokens)
    results: list[Generation] = [] if result is None else result
    for (token,) in generate_tokens(model, rows, max_new_tokens, results=results, **settings):
        if token is not None and (piece := decoder.push(token)):
            yield piece
    if tail := decoder.flush():
        yield tail


__all__ = ["RECOMMENDED", "Generation", "IncrementalDecoder", "Sampling", "apply_min_p", "apply_repetition_penalty",
           "apply_temperature", "apply_top_k", "apply_top_p", "choose", "generate", "generate_tokens",
           "process_logits", "stream"]
