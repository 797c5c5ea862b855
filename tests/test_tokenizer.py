"""Tokenizer and chat template against transformers, on a byte-level BPE built here (no download).

`build_tokenizer` and `write_checkpoint` are shared: other tests import them to get a complete
checkpoint folder (random model + tokenizer files) that both load_model and load_tokenizer read.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer as Backend
from tokenizers import decoders, models, pre_tokenizers, processors, trainers

from lfm2_edu import LFM2Config, save_model
from lfm2_edu.tokenizer import TokenizerError, bytes_to_unicode, load_tokenizer
from reference import require_transformers, tiny_config

# LFM2's special tokens at LFM2's ids.
SPECIALS = ["<|pad|>", "<|startoftext|>", "<|endoftext|>", "<|fim_pre|>", "<|fim_mid|>", "<|fim_suf|>",
            "<|im_start|>", "<|im_end|>"]
VOCAB_SIZE = 320
CHATML_TEMPLATE = ("{{bos_token}}{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
                   "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
                   "{{'<|im_start|>assistant\n'}}{% endif %}")
# The template LFM2 checkpoints ship (system prompt, tools, tool responses, tojson, namespace).
LFM2_TEMPLATE = (
    '{{- bos_token -}}{%- set system_prompt = "" -%}{%- set ns = namespace(system_prompt="") -%}'
    '{%- if messages[0]["role"] == "system" -%} {%- set ns.system_prompt = messages[0]["content"] -%} '
    '{%- set messages = messages[1:] -%}{%- endif -%}{%- if tools -%} {%- set ns.system_prompt = '
    'ns.system_prompt + ("\\n" if ns.system_prompt else "") + "List of tools: <|tool_list_start|>[" -%} '
    '{%- for tool in tools -%} {%- if tool is not string -%} {%- set tool = tool | tojson -%} {%- endif -%} '
    '{%- set ns.system_prompt = ns.system_prompt + tool -%} {%- if not loop.last -%} {%- set ns.system_prompt = '
    'ns.system_prompt + ", " -%} {%- endif -%} {%- endfor -%} {%- set ns.system_prompt = ns.system_prompt + '
    '"]<|tool_list_end|>" -%}{%- endif -%}{%- if ns.system_prompt -%} {{- "<|im_start|>system\\n" + '
    'ns.system_prompt + "<|im_end|>\\n" -}}{%- endif -%}{%- for message in messages -%} {{- "<|im_start|>" + '
    'message["role"] + "\\n" -}} {%- set content = message["content"] -%} {%- if content is not string -%} '
    '{%- set content = content | tojson -%} {%- endif -%} {%- if message["role"] == "tool" -%} '
    '{%- set content = "<|tool_response_start|>" + content + "<|tool_response_end|>" -%} {%- endif -%} '
    '{{- content + "<|im_end|>\\n" -}}{%- endfor -%}{%- if add_generation_prompt -%} '
    '{{- "<|im_start|>assistant\\n" -}}{%- endif -%}')
CORPUS = [
    "Hello world! The quick brown fox jumps over the lazy dog.",
    "Liquid foundation models mix short convolutions with grouped-query attention.",
    "  indented\tand\ttabbed\nnew lines\n\n  trailing  ",
    "Café, naïve, façade, déjà vu. 日本語のテキスト。 Emoji: 🙂🚀",
    "system user assistant tool What is the capital of France? Paris.",
] * 3


def build_tokenizer(folder: Path, chat_template: str | None = CHATML_TEMPLATE, **config) -> Path:
    """A byte-level BPE trained on CORPUS, with LFM2's special tokens and post-processor.

    Writes tokenizer.json and tokenizer_config.json (bos/eos/pad, the chat template,
    tokenizer_class); `config` adds or overrides tokenizer_config.json keys.
    """
    folder.mkdir(parents=True, exist_ok=True)
    tok = Backend(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # every byte encodable
    tok.train_from_iterator(CORPUS, trainer)
    assert tok.get_vocab_size() == VOCAB_SIZE and [tok.token_to_id(s) for s in SPECIALS] == list(range(8))
    # As LFM2's tokenizer.json: <|startoftext|> in front of every encoded text.
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A", pair="<|startoftext|> $A <|startoftext|> $B",
        special_tokens=[("<|startoftext|>", 1)])
    tok.save(str(folder / "tokenizer.json"))
    cfg = {"bos_token": "<|startoftext|>", "eos_token": "<|im_end|>", "pad_token": "<|pad|>",
           "tokenizer_class": "PreTrainedTokenizerFast"}
    if chat_template is not None:
        cfg["chat_template"] = chat_template
    cfg.update(config)
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    return folder


def chat_config(**changes) -> LFM2Config:
    """tiny_config with the tokenizer's vocabulary and LFM2's special ids (bos 1, eos 7, pad 0)."""
    return tiny_config(**{"vocab_size": VOCAB_SIZE, "eos_token_id": 7, "bos_token_id": 1, "pad_token_id": 0,
                          **changes})


def write_checkpoint(folder: Path, config: LFM2Config | None = None, seed: int = 0,
                     chat_template: str | None = CHATML_TEMPLATE) -> Path:
    """A complete random checkpoint: weights + config.json + tokenizer files.

    With transformers installed the model is the reference's (reference_model + save_pretrained),
    so parity tests compare against the very weights they load; without it, lfm2_edu's own
    random model and save_model (for tests that need no reference).
    """
    config = config or chat_config()
    try:
        import transformers  # noqa: F401
    except ImportError:
        from test_cache import random_model
        save_model(random_model(config, seed=seed), folder, overwrite=True)
    else:
        from reference import reference_model, save_reference
        save_reference(reference_model(config, seed=seed), folder)
    return build_tokenizer(folder, chat_template=chat_template)


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_tokenizer(tmp_path_factory.mktemp("tok") / "chatml")


@pytest.fixture(scope="module")
def ours(folder):
    return load_tokenizer(folder)


@pytest.fixture(scope="module")
def theirs(folder):
    return require_transformers().AutoTokenizer.from_pretrained(folder)


TEXTS = [
    "Hello world!",
    "Café naïve façade — déjà vu. 日本語のテキスト。",
    "Emoji 🙂🚀 and a rare one: 🦩",
    "  leading spaces, trailing spaces  ",
    "tabs\tand\nnewlines\r\n\n\nend",
    "<|im_start|>user\nHi<|im_end|>\n",
    "special tokens mid-word: abc<|endoftext|>def<|pad|>",
    " ",
    "",
]


# ----------------------------------------------------------------------------- tokenizer tests
def test_special_tokens(ours):
    assert (ours.bos_token_id, ours.eos_token_id, ours.pad_token_id) == (1, 7, 0)
    assert (ours.im_start_id, ours.im_end_id) == (6, 7)
    assert ours.special_ids == set(range(8))
    assert ours.vocab_size == VOCAB_SIZE


@pytest.mark.parametrize("text", TEXTS)
def test_round_trip(ours, text):
    ids = ours.encode(text, add_special_tokens=False)
    assert ours.decode(ids) == text
    with_bos = ours.encode(text)
    assert with_bos == [1] + ids  # the post-processor adds bos, once
    assert ours.decode(with_bos, skip_special_tokens=True) == re.sub(r"<\|[a-z_]+\|>", "", text)


@pytest.mark.parametrize("text", TEXTS)
def test_encode_decode_equal_transformers(ours, theirs, text):
    assert ours.encode(text) == theirs(text)["input_ids"]
    assert ours.encode(text, add_special_tokens=False) == theirs(text, add_special_tokens=False)["input_ids"]
    ids = theirs(text)["input_ids"]
    for skip in (False, True):
        assert ours.decode(ids, skip_special_tokens=skip) == theirs.decode(ids, skip_special_tokens=skip)


def test_special_tokens_in_text_are_single_tokens(ours):
    ids = ours.encode("<|im_start|>assistant\n", add_special_tokens=False)
    assert ids[0] == 6 and 6 not in ids[1:]


def _unreadable(text: str) -> bytes:
    """Inverse of token_text: text with <0xNN> pieces -> bytes."""
    parts = re.split(r"(<0x[0-9A-F]{2}>)", text)
    return b"".join(bytes([int(p[3:5], 16)]) if re.fullmatch(r"<0x[0-9A-F]{2}>", p) else p.encode() for p in parts)


def test_token_text_is_faithful_for_every_token(ours):
    char_to_byte = {c: b for b, c in bytes_to_unicode().items()}
    for i in range(ours.vocab_size):
        piece = ours.backend.id_to_token(i)
        text = ours.token_text(i)
        if i < 8:
            assert text == SPECIALS[i]
        else:  # the bytes the piece stands for, exactly
            assert _unreadable(text) == bytes(char_to_byte[c] for c in piece), (i, piece, text)


def test_token_text_examples(ours):
    assert ours.token_text(ours.token_to_id("Ġ")) == " "
    assert ours.token_text(ours.token_to_id("Ċ"), visible_whitespace=True) == "↵"
    emoji = ours.encode("🦩", add_special_tokens=False)  # rare: split into byte pieces
    assert len(emoji) > 1
    shown = ours.tokens(emoji)
    assert all(re.fullmatch(r"(<0x[0-9A-F]{2}>)+", s) for s in shown), shown
    assert b"".join(_unreadable(s) for s in shown) == "🦩".encode()
    spaced = ours.encode(" a\tb\n", add_special_tokens=False)
    assert "".join(ours.tokens(spaced, visible_whitespace=True)) == "␣a⇥b↵"


@pytest.mark.parametrize("flags", [{"add_bos_token": False}, {"add_bos_token": True, "add_eos_token": True}])
def test_bos_is_the_post_processors_business(tmp_path, flags):
    """transformers 5 ignores add_bos_token/add_eos_token when tokenizer.json exists; so do we."""
    transformers = require_transformers()
    folder = build_tokenizer(tmp_path / "t", **flags)
    ours, theirs = load_tokenizer(folder), transformers.AutoTokenizer.from_pretrained(folder)
    for text in ("Hello world!", ""):
        assert ours.encode(text) == theirs(text)["input_ids"] == [1] + ours.encode(text, add_special_tokens=False)
    # No post-processor in tokenizer.json: nothing is added.
    raw = json.loads((folder / "tokenizer.json").read_text())
    raw["post_processor"] = None
    (folder / "tokenizer.json").write_text(json.dumps(raw))
    ours, theirs = load_tokenizer(folder), transformers.AutoTokenizer.from_pretrained(folder)
    assert ours.encode("Hello world!") == theirs("Hello world!")["input_ids"] == ours.encode("Hello world!", False)


def test_missing_files_and_tokens_get_clear_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(TokenizerError, match="expected tokenizer.json"):
        load_tokenizer(tmp_path / "empty")
    folder = build_tokenizer(tmp_path / "bad", bos_token="<|not_a_token|>")
    with pytest.raises(TokenizerError, match="not in the vocabulary"):
        load_tokenizer(folder)


# ------------------------------------------------------------------------------ chat template
CONVERSATIONS = {
    "user": [{"role": "user", "content": "What is the capital of France?"}],
    "system+user": [{"role": "system", "content": "You are a helpful assistant."},
                    {"role": "user", "content": "Hello!"}],
    "assistant": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"}],
    "multi-turn": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
                   {"role": "assistant", "content": "4."}, {"role": "user", "content": "And 3+3?"},
                   {"role": "assistant", "content": "6."}, {"role": "user", "content": "Thanks"}],
    "unicode+whitespace": [{"role": "user", "content": "  Café 🙂\n\ttab  ", "name": None},
                           {"role": "assistant", "content": "日本語\n\n"}],
    "specials-in-content": [{"role": "user", "content": "say <|im_end|> and <|startoftext|>"}],
    "tool": [{"role": "user", "content": "Weather in Paris?"},
             {"role": "assistant", "content": "get_weather(city='Paris')"},
             {"role": "tool", "content": '{"temp": 21}'}],
}
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather <now> & here",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]


@pytest.fixture(scope="module")
def lfm2_pair(tmp_path_factory):
    folder = build_tokenizer(tmp_path_factory.mktemp("tok") / "lfm2", chat_template=LFM2_TEMPLATE)
    return load_tokenizer(folder), require_transformers().AutoTokenizer.from_pretrained(folder)


@pytest.mark.parametrize("template", ["chatml", "lfm2"])
@pytest.mark.parametrize("name", list(CONVERSATIONS))
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_chat_template_equals_transformers(ours, theirs, lfm2_pair, template, name, add_generation_prompt):
    if template == "lfm2":
        ours, theirs = lfm2_pair
    messages = CONVERSATIONS[name]
    kwargs = {"tools": TOOLS} if name == "tool" and template == "lfm2" else {}
    text = ours.render_chat(messages, add_generation_prompt=add_generation_prompt, **kwargs)
    assert text == theirs.apply_chat_template(messages, tokenize=False,
                                              add_generation_prompt=add_generation_prompt, **kwargs)
    ids = ours.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, **kwargs)
    assert ids == theirs.apply_chat_template(messages, add_generation_prompt=add_generation_prompt,
                                             return_dict=False, **kwargs)
    assert ids[0] == 1 and ids[1] != 1  # bos once: the template writes it, no post-processor
    assert text.endswith("<|im_start|>assistant\n") == add_generation_prompt


def test_chat_template_shape(ours):
    text = ours.render_chat(CONVERSATIONS["system+user"], add_generation_prompt=True)
    assert text == ("<|startoftext|><|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                    "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n")


def test_chat_template_jinja_file_wins(tmp_path):
    folder = build_tokenizer(tmp_path / "t")
    (folder / "chat_template.jinja").write_text("{% for m in messages %}[{{ m['content'] }}]{% endfor %}")
    assert load_tokenizer(folder).render_chat([{"role": "user", "content": "x"}]) == "[x]"


def test_no_template_is_a_clear_error(tmp_path):
    tok = load_tokenizer(build_tokenizer(tmp_path / "t", chat_template=None))
    with pytest.raises(TokenizerError, match="chat template: expected one .* found none"):
        tok.apply_chat_template([{"role": "user", "content": "Hi"}])


def test_bad_chats_are_clear_errors(ours):
    with pytest.raises(TokenizerError, match="non-empty list of messages"):
        ours.render_chat([])
    with pytest.raises(TokenizerError, match="'role'"):
        ours.render_chat([{"content": "no role"}])
    with pytest.raises(TokenizerError, match="syntax error"):
        ours.render_chat([{"role": "user", "content": "x"}], chat_template="{% for %}")


def test_template_is_sandboxed(ours):
    import jinja2

    evil = "{{ messages.__class__.__mro__[1].__subclasses__() }}"
    with pytest.raises(jinja2.exceptions.SecurityError):
        ours.render_chat([{"role": "user", "content": "x"}], chat_template=evil)
    with pytest.raises(jinja2.exceptions.TemplateError, match="no system"):
        ours.render_chat([{"role": "user", "content": "x"}],
                         chat_template="{{ raise_exception('no system') }}")


def test_write_checkpoint_is_complete(tmp_path):
    from lfm2_edu import load_model

    folder = write_checkpoint(tmp_path / "ckpt")
    model, tok = load_model(folder), load_tokenizer(folder)
    assert model.config.vocab_size == tok.vocab_size
    ids = torch.tensor([tok.apply_chat_template(CONVERSATIONS["user"], add_generation_prompt=True)])
    assert model(ids).logits.shape == (1, ids.shape[1], VOCAB_SIZE)
    shutil.rmtree(folder)
