"""Expected answers of chapter 02, tokens and embeddings."""

from __future__ import annotations

from ..exercises import exercise
from ..params import count_parameters
from ..tokenizer import bytes_to_unicode


# ---------------------------------------------------------------- 02 Tokens and embeddings
@exercise("02.1")
def _tokens_the_template_adds(tokenizer) -> int:
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True)
    return len(chat) - len(tokenizer.encode("Hi", add_special_tokens=False))


def _stored_to_bytes(stored: str) -> bytes:
    byte_of = {c: b for b, c in bytes_to_unicode().items()}  # the table read backwards
    return bytes(byte_of[c] for c in stored)


@exercise("02.2", inputs=lambda tokenizer, ids: [tokenizer.backend.id_to_token(i) for i in ids])
def _stored_to_bytes_function(tokenizer, ids):
    return _stored_to_bytes


@exercise("02.3")
def _untied_parameters(config) -> int:
    return count_parameters(config.replace(tie_word_embeddings=False)).total
