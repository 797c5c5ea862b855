"""Text <-> token ids, special tokens and the chat template, read from a checkpoint's files.

LFM2 uses a byte-level BPE (as GPT-2 does): text becomes UTF-8 bytes, each byte is written as one
printable character (" " is "Ġ", "\\n" is "Ċ"), and BPE merges those characters into tokens.
The `tokenizers` library does the encoding; this module adds what a checkpoint's config files
say around it, the way transformers reads them:

- tokenizer.json      the BPE itself; its post-processor may add bos (`<|startoftext|>`).
- tokenizer_config.json (and special_tokens_map.json)
                      the names of the special tokens (bos, eos, pad) and the chat template
                      (Jinja), unless chat_template.jinja overrides it. Its add_bos_token /
                      add_eos_token flags are ignored, as transformers 5 ignores them.

A chat is rendered by the template to one string (`<|startoftext|><|im_start|>user\\n...`) that
already holds bos, so it is encoded with add_special_tokens=False: bos once, not twice.

Errors: TokenizerError for files that are missing, unreadable or inconsistent, and for a template
that fails on a chat; a template's own refusals (its raise_exception, the sandbox) stay jinja2
TemplateErrors, as in transformers, with a message that says they came from the template.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
from tokenizers import AddedToken
from tokenizers import Tokenizer as Backend

from .checkpoint import resolve_checkpoint
from .config import _shown, read_json

# The named special tokens transformers knows; a chat template sees each as a variable.
SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
CHAT_START, CHAT_END = "<|im_start|>", "<|im_end|>"


class TokenizerError(ValueError):
    """Tokenizer files that are missing or unusable, or a chat the template cannot render."""


# ------------------------------------------------------------------------------ byte-level pieces
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's table: each of the 256 byte values -> one printable character.

    Printable bytes keep their own character; the others (controls, space, ...) are moved to
    256 + n, so " " (32) becomes "Ġ" (288) and "\\n" (10) becomes "Ċ" (266).
    """
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, n = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + n)
            n += 1
    return table


BYTE_OF_CHAR = {c: b for b, c in bytes_to_unicode().items()}
VISIBLE = {" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍"}


def readable(data: bytes) -> str:
    """UTF-8 text; bytes that are not (yet) a whole character are shown as <0xNN>."""
    text = data.decode("utf-8", errors="surrogateescape")  # bad byte b -> U+DC00 + b
    return "".join(f"<0x{ord(c) - 0xDC00:02X}>" if 0xDC80 <= ord(c) <= 0xDCFF else c for c in text)


# ------------------------------------------------------------------------------------ tokenizer
class Tokenizer:
    """A checkpoint's tokenizer: encode/decode, special tokens, token pieces, chat template."""

    def __init__(self, backend: Backend, special_tokens: dict[str, str] | None = None,
                 chat_template: str | dict[str, str] | None = None, byte_level: bool = True,
                 name: str = "tokenizer") -> None:
        self.backend = backend
        self.special_tokens = dict(special_tokens or {})  # "bos_token" -> "<|startoftext|>", ...
        self.chat_template = chat_template
        self.byte_level = byte_level
        self.name = name
        for role, token in self.special_tokens.items():
            if backend.token_to_id(token) is None:
                raise TokenizerError(f"{name}: expected every special token to have an id, found {role} "
                                     f"{_shown(token)} not in the vocabulary of tokenizer.json")
        # Special tokens are matched whole in text and dropped by skip_special_tokens (as transformers does).
        added = {t.content for t in backend.get_added_tokens_decoder().values()}
        missing = [t for t in self.special_tokens.values() if t not in added]
        if missing:
            backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in missing])
        self.added_ids = set(backend.get_added_tokens_decoder())  # stored as text, not as BPE pieces

    # -------------------------------------------------------------- vocabulary and special ids
    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    def _special_id(self, role: str) -> int | None:
        token = self.special_tokens.get(role)
        return None if token is None else self.backend.token_to_id(token)

    @property
    def bos_token_id(self) -> int | None:
        return self._special_id("bos_token")

    @property
    def eos_token_id(self) -> int | None:
        return self._special_id("eos_token")

    @property
    def pad_token_id(self) -> int | None:
        return self._special_id("pad_token")

    @property
    def im_start_id(self) -> int | None:
        return self.backend.token_to_id(CHAT_START)

    @property
    def im_end_id(self) -> int | None:
        return self.backend.token_to_id(CHAT_END)

    @property
    def special_ids(self) -> set[int]:
        return {i for i, t in self.backend.get_added_tokens_decoder().items() if t.special}

    # ------------------------------------------------------------------------ encode / decode
    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of `text`; add_special_tokens runs the post-processor (bos for LFM2)."""
        if not isinstance(text, str):
            raise TypeError(f"encode: expected a str, found {type(text).__name__}")
        return self.backend.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        """Text of `ids` (a list of ints or a 1-D tensor)."""
        ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        return self.backend.decode(ids, skip_special_tokens=skip_special_tokens)

    def token_text(self, token_id: int, visible_whitespace: bool = False) -> str:
        """What one token stands for, faithfully: byte-level pieces are turned back into text
        ("Ġthe" -> " the"), and a piece that is only part of a UTF-8 character is shown as its
        bytes ("ðŁ" -> "<0xF0><0x9F>"). visible_whitespace: " " -> "␣", "\\n" -> "↵", "\\t" -> "⇥"."""
        piece = self.backend.id_to_token(int(token_id))
        if piece is None:
            raise TokenizerError(f"token_text: expected a token id in [0, {self.vocab_size}), found {token_id}")
        if int(token_id) in self.added_ids:
            text = piece  # <|im_start|> and the other added tokens
        elif self.byte_level and all(c in BYTE_OF_CHAR for c in piece):
            text = readable(bytes(BYTE_OF_CHAR[c] for c in piece))
        else:
            text = self.backend.decode([int(token_id)], skip_special_tokens=False)
        if visible_whitespace:
            text = "".join(VISIBLE.get(c, c if c.isprintable() else f"\\x{ord(c):02x}") for c in text)
        return text

    def tokens(self, ids, visible_whitespace: bool = False) -> list[str]:
        ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        return [self.token_text(i, visible_whitespace) for i in ids]

    # ---------------------------------------------------------------------------- chat template
    def render_chat(self, messages: list[dict], add_generation_prompt: bool = False,
                    tools: list[dict] | None = None, documents: list[dict] | None = None,
                    chat_template: str | None = None, **kwargs: Any) -> str:
        """The chat as one string, rendered by the checkpoint's Jinja template as transformers does:
        a sandboxed environment, the special tokens as variables, message keys set to None dropped."""
        template = self._template(chat_template, tools)
        if not isinstance(messages, (list, tuple)) or not messages:
            raise TokenizerError(f"chat: expected a non-empty list of messages, found {messages!r}")
        chat = []
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or "role" not in message:
                raise TokenizerError(f"chat: expected message {i} to be a dict with 'role' and 'content', "
                                     f"found {message!r}")
            chat.append({k: v for k, v in message.items() if v is not None})
        for tool in tools or []:
            if not isinstance(tool, dict):
                raise TokenizerError(f"chat: expected tools as JSON-schema dicts, found {type(tool).__name__}")
        variables = {**self.special_tokens, **kwargs}  # kwargs win, as in transformers
        compiled = _compile(template)
        try:
            return compiled.render(messages=chat, tools=tools, documents=documents,
                                   add_generation_prompt=add_generation_prompt, **variables)
        except jinja2.exceptions.TemplateError as err:
            # The template's own raise_exception, the sandbox refusing, an undefined name: the same
            # jinja2 error, its message saying where it came from.
            message = (f"chat template: expected it to render the chat, found it raising "
                       f"{type(err).__name__}: {str(err)[:300]}")
            try:
                again = type(err)(message)
            except TypeError:  # an error class that needs more than a message
                again = TokenizerError(message)
            raise again from None
        except (ArithmeticError, LookupError, TypeError, ValueError, RecursionError) as err:
            # A template is code from the checkpoint: whatever else it trips over is named here.
            raise TokenizerError(f"chat template: expected it to render the chat, found it failing with "
                                 f"{type(err).__name__}: {str(err)[:300]}") from None

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = False,
                            **kwargs: Any) -> list[int]:
        """Token ids of the rendered chat. The template writes bos itself, so no special tokens are
        added on top (transformers encodes it with add_special_tokens=False too)."""
        return self.encode(self.render_chat(messages, add_generation_prompt, **kwargs), add_special_tokens=False)

    def _template(self, override: str | None, tools) -> str:
        template = override if override is not None else self.chat_template
        if isinstance(template, dict):  # several named templates
            if tools and "tool_use" in template:
                return template["tool_use"]
            if "default" in template:
                return template["default"]
            raise TokenizerError(f"chat template: expected a 'default' among the named templates, "
                                 f"found {sorted(template)}")
        if template and not isinstance(template, str):
            raise TokenizerError(f"chat template: expected Jinja text, found {type(template).__name__}")
        if not template:
            raise TokenizerError(f"chat template: expected one in {self.name} (a 'chat_template' in "
                                 f"tokenizer_config.json or a chat_template.jinja file), found none. "
                                 f"This checkpoint is not set up for chat; give plain text instead "
                                 f"(`lfm2-edu generate --no-chat`)")
        return template

    def __repr__(self) -> str:
        special = ", ".join(f"{k}={v!r}" for k, v in self.special_tokens.items())
        return f"Tokenizer({self.name}, vocab={self.vocab_size}, {special})"


# ---------------------------------------------------------------------------- Jinja, sandboxed
@lru_cache(maxsize=16)
def _compile(template: str):
    """Templates come from the hub, so they are untrusted code: the immutable sandbox refuses
    attribute tricks and mutation of the inputs. Same settings and helpers as transformers."""
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationTag(jinja2.ext.Extension):
        """`{% generation %}...{% endgeneration %}` marks the assistant's part; here it renders as is."""
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

        def _render(self, caller):
            return caller()

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        # Jinja's own tojson escapes HTML characters; chat templates expect plain JSON.
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[GenerationTag, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(template)
    except jinja2.exceptions.TemplateSyntaxError as err:
        raise TokenizerError(f"chat template: expected valid Jinja, found a syntax error on line "
                             f"{err.lineno}: {err.message}") from None


# ------------------------------------------------------------------------------------- loading
def _read_json(path: Path) -> dict:
    """An optional JSON object beside tokenizer.json ({} when the file is absent)."""
    if not (path.exists() or path.is_symlink()):
        return {}
    data = read_json(path, TokenizerError, "tokenizer")
    if not isinstance(data, dict):
        raise TokenizerError(f"tokenizer: expected a JSON object in {path}, found a {type(data).__name__}")
    return data


def _token_content(value) -> str | None:
    """A special token as written in the config: a string or an AddedToken dict {"content": ...}."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _chat_template(config: dict, path: Path) -> str | dict[str, str] | None:
    """tokenizer_config.json's chat_template: Jinja text, or named templates [{"name", "template"}]."""
    template = config.get("chat_template")
    if template is None or isinstance(template, str):
        return template
    if isinstance(template, list) and all(isinstance(t, dict) and isinstance(t.get("name"), str)
                                          and isinstance(t.get("template"), str) for t in template):
        return {t["name"]: t["template"] for t in template}
    raise TokenizerError(f"tokenizer: expected 'chat_template' in {path} to be Jinja text or a list of "
                         f"{{\"name\": ..., \"template\": ...}}, found {_shown(template)}")


def load_tokenizer(source: str | os.PathLike) -> Tokenizer:
    """The tokenizer of a checkpoint: a local folder or a hub repo id, as `load_model` takes."""
    folder = resolve_checkpoint(source)
    path = folder / "tokenizer.json"
    if not path.is_file():
        found = sorted(p.name for p in folder.iterdir())[:12]
        raise TokenizerError(f"tokenizer: expected tokenizer.json in {folder}, found {found}")
    try:
        backend = Backend.from_file(str(path))
    except Exception as err:  # the Rust side raises a bare Exception
        raise TokenizerError(f"tokenizer: expected a tokenizer.json the tokenizers library reads, found "
                             f"{path} unreadable ({str(err)[:300]})") from None
    config = _read_json(folder / "tokenizer_config.json")
    special_map = _read_json(folder / "special_tokens_map.json")

    # special_tokens_map.json is the legacy place: transformers reads it (and lets it win) only
    # when tokenizer_config.json has no added_tokens_decoder.
    first, second = (config, special_map) if "added_tokens_decoder" in config else (special_map, config)
    special = {}
    for role in SPECIAL_TOKEN_NAMES:
        token = _token_content(first.get(role, second.get(role)))
        if token is not None:
            special[role] = token

    # A chat_template.jinja file wins over the template in tokenizer_config.json.
    chat_template = _chat_template(config, folder / "tokenizer_config.json")
    jinja_file = folder / "chat_template.jinja"
    if jinja_file.is_file():
        try:
            chat_template = jinja_file.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise TokenizerError(f"tokenizer: expected UTF-8 text in {jinja_file}, found invalid bytes ({err})") from None

    # Whether bos/eos are added is the post-processor's business (LFM2's adds <|startoftext|>).
    # transformers 5 ignores add_bos_token/add_eos_token in tokenizer_config.json when a
    # tokenizer.json exists, so they are ignored here too.
    decoder = json.loads(backend.decoder.__getstate__()) if backend.decoder is not None else {}
    kinds = [d.get("type") for d in decoder.get("decoders", [decoder])]
    return Tokenizer(backend, special, chat_template, byte_level="ByteLevel" in kinds, name=str(source))  # as the user named it


__all__ = ["Tokenizer", "TokenizerError", "bytes_to_unicode", "load_tokenizer"]
