"""Hostile checkpoints: what a careful reviewer, and a fuzzer, try on a checkpoint someone else published.

Every case must end within CASE_SECONDS, either loading (the mutation left a valid checkpoint) or
refused with a documented error (CheckpointError, ConfigError, TokenizerError; a chat template's own
jinja2 TemplateError; `lfm2-edu info` exiting with status 2) whose message says what was expected
and what was found. No case may open a file that is not named directly inside its checkpoint
folder, or write anything: not in the folder, the working directory, the temp dir or the hub cache.
The fuzzer is seeded: every run tries the same inputs, and pytest's summary prints how many.
"""

from __future__ import annotations

import contextlib
import copy
import io
import itertools
import json
import math
import os
import random
import signal
import struct
import tempfile
import time
from pathlib import Path

import jinja2
import pytest
import torch

import lfm2_edu.checkpoint as checkpoint
from lfm2_edu import SHIPPED_MODEL, CheckpointError, ConfigError, TokenizerError, load_model, resolve_checkpoint
from lfm2_edu.cli import main as cli
from lfm2_edu.tokenizer import load_tokenizer

SHIPPED = resolve_checkpoint(SHIPPED_MODEL)
# Per case: CPU seconds (each case takes well under one), so that a busy machine does not fail a
# case; and a wall-clock limit for a read that blocks without using the CPU.
CASE_SECONDS, WALL_SECONDS = 5.0, 60.0
CHAT = [{"role": "user", "content": "What is 12 + 7?"}]


class CliRefusal(Exception):
    """`lfm2-edu info` exited with status 2 and this one-line error."""


class CaseTimeout(BaseException):
    """Raised by the alarm; a BaseException, so that no `except Exception` can swallow it."""


DOCUMENTED = (CheckpointError, ConfigError, TokenizerError, jinja2.exceptions.TemplateError, CliRefusal)


@contextlib.contextmanager
def time_limit(cpu_seconds: float, wall_seconds: float):
    if not hasattr(signal, "setitimer"):  # no timers (Windows): the CPU time used is still checked
        yield
        return

    def stop(signum, frame):
        raise CaseTimeout

    timers = [(signal.ITIMER_PROF, signal.SIGPROF, cpu_seconds), (signal.ITIMER_REAL, signal.SIGALRM, wall_seconds)]
    previous = [signal.signal(sig, stop) for _, sig, _ in timers]
    for timer, _, seconds in timers:
        signal.setitimer(timer, seconds)
    try:
        yield
    finally:
        for (timer, sig, _), handler in zip(timers, previous):
            signal.setitimer(timer, 0)
            signal.signal(sig, handler)


def snapshot(folders) -> dict:
    """Every entry under the folders (symlinks not followed) with its size and mtime: a write shows."""
    seen = {}
    for top in folders:
        for dirpath, dirnames, filenames in os.walk(top):
            for name in dirnames + filenames:
                st = os.lstat(os.path.join(dirpath, name))
                seen[os.path.join(dirpath, name)] = (st.st_size, st.st_mtime_ns)
    return seen


def info(folder: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli(["info", "--model", str(folder)])
    if code == 2:
        raise CliRefusal(err.getvalue().strip())
    assert code == 0, f"lfm2-edu info exited with {code}: {err.getvalue()}"


def use_tokenizer(folder: Path) -> None:
    tok = load_tokenizer(folder)
    ids = tok.encode("Hello, world! 12 + 7 = 19")
    tok.decode(ids)
    tok.tokens(ids)
    tok.apply_chat_template(CHAT, add_generation_prompt=True)


class Fuzz:
    """Runs hostile inputs and keeps the tally; see the module docstring for what each must do."""

    def __init__(self, tmp_path: Path, monkeypatch):
        import huggingface_hub.constants as hub

        self.dirs = [tmp_path / name for name in ("work", "hf_home", "tmp")]
        for d in self.dirs:
            d.mkdir()
        work, hf_home, tmp = self.dirs
        monkeypatch.chdir(work)
        monkeypatch.setenv("HF_HOME", str(hf_home))
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        monkeypatch.setattr(hub, "HF_HOME", str(hf_home))
        monkeypatch.setattr(hub, "HF_HUB_CACHE", str(hf_home / "hub"))
        monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
        monkeypatch.setattr(tempfile, "tempdir", str(tmp))
        self.opened: list[Path] = []
        real_open = checkpoint.safe_open

        def spy(path, *args, **kwargs):
            self.opened.append(Path(path))
            return real_open(path, *args, **kwargs)

        monkeypatch.setattr(checkpoint, "safe_open", spy)
        self.inputs = self.runs = self.refused = self.loaded = 0
        self.slowest = 0.0
        self.failures: list[str] = []

    def case(self, name: str, folder: Path, *actions) -> None:
        """One hostile input in `folder`, given to each of `actions` (load_model, info, ...)."""
        self.inputs += 1
        for action in actions:
            self.runs += 1
            problem = self._run(folder, action)
            if problem:
                self.failures.append(f"{name} [{getattr(action, '__name__', action)}]: {problem}")

    def _run(self, folder: Path, action) -> str | None:
        before = snapshot([*self.dirs, folder, SHIPPED])
        self.opened.clear()
        start = time.process_time()
        problem = None
        try:
            with time_limit(CASE_SECONDS, WALL_SECONDS):
                action(folder)
            self.loaded += 1
        except DOCUMENTED as err:
            self.refused += 1
            message = str(err)
            if not ("expected" in message and "found" in message):
                problem = f"a message that does not say what was expected and found: {message[:300]!r}"
            elif len(message) > 2000:
                problem = f"a message of {len(message):,} characters"
        except CaseTimeout:
            problem = f"no answer after {CASE_SECONDS} s of CPU or {WALL_SECONDS} s"
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as err:  # a bare KeyError, RecursionError, a Rust panic, ...
            problem = f"escaped as {type(err).__name__}: {str(err)[:300]}"
        elapsed = time.process_time() - start
        self.slowest = max(self.slowest, elapsed)
        if problem is None and elapsed > CASE_SECONDS:
            problem = f"took {elapsed:.1f} s of CPU"
        outside = [str(p) for p in self.opened if p.parent != folder]
        if outside:
            problem = f"opened {outside} outside the checkpoint folder"
        after = snapshot([*self.dirs, folder, SHIPPED])
        if after != before:
            changed = sorted(set(after.items()) ^ set(before.items()))[:3]
            problem = f"wrote to disk: {changed}"
        return problem

    def report(self, record_property, kind: str) -> None:
        record_property("hostile_inputs", {"kind": kind, "inputs": self.inputs, "runs": self.runs,
                                           "refused": self.refused, "loaded": self.loaded,
                                           "failed": len(self.failures), "slowest": round(self.slowest, 2)})
        print(f"{kind}: {self.inputs} hostile inputs, {self.runs} runs: {self.refused} refused with a documented "
              f"error, {self.loaded} loaded, {len(self.failures)} failed; slowest {self.slowest:.2f} s of CPU")
        assert not self.failures, f"{len(self.failures)} of {self.runs} runs failed:\n" + "\n".join(self.failures[:25])


@pytest.fixture(scope="module")
def warm():
    """Load once first, so that first-call costs (lazy imports) are not charged to a case."""
    load_model(SHIPPED, dtype=torch.bfloat16)
    load_tokenizer(SHIPPED)


@pytest.fixture
def fuzz(warm, tmp_path, monkeypatch):
    return Fuzz(tmp_path, monkeypatch)


def load(folder: Path):
    return load_model(folder, dtype=torch.bfloat16)  # the checkpoint's own dtype: no copy of the weights


# ----------------------------------------------------------------------------------- mutations
HOSTILE = [None, True, False, 0, -1, 1, 2, 3, 7, 10**6, 10**9, 2**63, -2**63, 10**30, 0.5, -0.0, 1e-300, 1e300,
           math.nan, math.inf, -math.inf, "", "8", "abc", "conv", "lfm2", "true", [], [0], [1, 2, 3], {}, {"a": 1}]


def mutate(rng: random.Random, value):
    """A hostile stand-in for a JSON value: another type, sign or size, or an edit of the value."""
    choices = list(HOSTILE)
    if isinstance(value, bool):
        choices += [not value, int(value), str(value).lower()]
    elif isinstance(value, int):
        choices += [value + 1, value - 1, -value, 2 * value, value * 10**6, value // 2, float(value), str(value)]
    elif isinstance(value, float):
        choices += [10 * value, -value, value * 1e300, str(value)]
    elif isinstance(value, str):
        choices += [value.upper(), value + "x", value[:-1], value * 1000]
    elif isinstance(value, list) and value:
        choices += [value[:-1], value + value[:1], value[::-1], value * 1000, [value], [None] * len(value)]
    elif isinstance(value, dict) and value:
        key = rng.choice(list(value))
        choices += [{**value, key: mutate(rng, value[key])}, {k: v for k, v in value.items() if k != key}, list(value)]
    return rng.choice(choices)


def damage(rng: random.Random, data: bytes) -> list[tuple[str, bytes]]:
    """Whole-file damage: cut short, bytes flipped, and some classic bad files."""
    cases = []
    for _ in range(6):
        cut = rng.randrange(len(data))
        cases.append((f"cut at byte {cut}", data[:cut]))
    for _ in range(6):
        flipped = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            flipped[rng.randrange(len(data))] = rng.randrange(256)
        cases.append(("bytes flipped", bytes(flipped)))
    cases += [("empty", b""), ("null", b"null"), ("a list", b"[1, 2]"), ("a string", b'"config"'),
              ("nested 100000 deep", b"[" * 100_000 + b"]" * 100_000), ("objects nested", b'{"a":' * 50_000 + b"1" + b"}" * 50_000),
              ("invalid UTF-8", b"\xff\xfe" + data), ("a UTF-8 BOM", b"\xef\xbb\xbf" + data),
              ("a 5000-digit number", b'{"hidden_size": ' + b"9" * 5000 + b"}")]
    return cases


def not_a_file(folder: Path, name: str) -> list[tuple[str, callable]]:
    """`name` as a folder, a dangling symlink, or a FIFO (whose read would wait forever)."""
    ways = [("a folder", lambda p: p.mkdir()), ("a dangling symlink", lambda p: p.symlink_to(folder / "nowhere"))]
    if hasattr(os, "mkfifo"):
        ways.append(("a FIFO", os.mkfifo))
    return [(f"{name} is {what}", make) for what, make in ways]


CASE_NUMBERS = itertools.count()


def fresh(root: Path, links: dict[str, Path]) -> Path:
    """A new case folder holding symlinks to the shipped files (the hub cache's layout, too)."""
    folder = root / f"case{next(CASE_NUMBERS)}"
    folder.mkdir()
    for name, target in links.items():
        (folder / name).symlink_to(target)
    return folder


def shipped_config() -> dict:
    return json.loads((SHIPPED / "config.json").read_text())


# An LFM2-350M-style dense config with the legacy keys (block_ff_dim, the width rule, full_attn_idxs).
DENSE_LEGACY = {"model_type": "lfm2", "vocab_size": 65536, "hidden_size": 1024, "num_hidden_layers": 16,
                "num_attention_heads": 16, "num_key_value_heads": 8, "block_ff_dim": 6656,
                "block_auto_adjust_ff_dim": True, "block_ffn_dim_multiplier": 1.0, "block_multiple_of": 256,
                "full_attn_idxs": [2, 5, 8, 10, 12, 14], "tie_embedding": True, "rope_theta": 1000000.0}
EXTRA_KEYS = ["rope_theta", "full_attn_idxs", "block_ff_dim", "tie_embedding", "block_auto_adjust_ff_dim",
              "block_ffn_dim_multiplier", "block_multiple_of"]


# ------------------------------------------------------------------------- the cases
@pytest.mark.parametrize("field", ["num_experts", "num_hidden_layers"])
def test_a_config_asking_for_a_million_modules_is_refused_at_once(tmp_path, monkeypatch, field):
    folder = fresh(tmp_path, {"model.safetensors": SHIPPED / "model.safetensors"})
    monkeypatch.setattr(checkpoint, "LFM2Model", lambda config: pytest.fail("a module was built"))
    for value, error, message in [(10**6, ConfigError, f"config field '{field}': expected a positive integer of "
                                                       f"at most [\\d,]+, found 1000000"),
                                  (64, CheckpointError, f"config field '{field}': expected (16|8), as the safetensors "
                                                        f"headers say .* found 64 in config.json")]:
        raw = {**shipped_config(), field: value}
        if field == "num_hidden_layers":  # a layer type for each layer, as a careful forger would write
            raw["layer_types"] = ["conv"] * value
        (folder / "config.json").write_text(json.dumps(raw))
        start = time.process_time()
        with pytest.raises(error, match=message):
            load_model(folder)
        assert time.process_time() - start < CASE_SECONDS


SHARDS_OUTSIDE = ["../outside.safetensors", "{outside}", "C:\\outside.safetensors", "C:outside.safetensors",
                  "sub/../../outside.safetensors", "..\\outside.safetensors", "//server/share/outside.safetensors"]


@pytest.mark.parametrize("shard", SHARDS_OUTSIDE)
def test_an_index_cannot_make_the_loader_read_outside_its_folder(tmp_path, monkeypatch, shard):
    """A valid safetensors file lies outside the folder; the index names it: refused on the name."""
    outside = tmp_path / "outside.safetensors"
    outside.write_bytes((SHIPPED / "model.safetensors").read_bytes())  # a real, loadable file
    folder = fresh(tmp_path, {"config.json": SHIPPED / "config.json"})
    with checkpoint.safe_open(str(outside), framework="pt") as f:
        names = list(f.keys())
    shard = shard.format(outside=outside)
    (folder / checkpoint.INDEX_FILE).write_text(json.dumps({"weight_map": {n: shard for n in names}}))
    monkeypatch.setattr(checkpoint, "safe_open", lambda *a, **k: pytest.fail(f"opened {a[0]}"))
    with pytest.raises(CheckpointError, match="expected a plain \\*.safetensors file name inside the checkpoint "
                                              "folder .* found '"):
        load_model(folder)


def test_symlinked_shards_still_load(tmp_path):
    """The hub cache's snapshots are symlinks into its blob store: checked on the name, they load."""
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    (blobs / "0123abcd").write_bytes((SHIPPED / "model.safetensors").read_bytes())
    folder = fresh(tmp_path, {"config.json": SHIPPED / "config.json"})
    (folder / "model-00001-of-00001.safetensors").symlink_to(Path("..") / "blobs" / "0123abcd")
    with checkpoint.safe_open(str(blobs / "0123abcd"), framework="pt") as f:
        weight_map = {n: "model-00001-of-00001.safetensors" for n in f.keys()}
    (folder / checkpoint.INDEX_FILE).write_text(json.dumps({"weight_map": weight_map}))
    ours, shipped = load(folder).state_dict(), load(SHIPPED).state_dict()
    assert ours.keys() == shipped.keys() and all(torch.equal(ours[k], shipped[k]) for k in ours)


# ------------------------------------------------------------------------------------ fuzzing
def test_fuzzed_config_files(fuzz, tmp_path, record_property):
    rng = random.Random(1501)
    links = {"model.safetensors": SHIPPED / "model.safetensors"}
    for base, count in [(shipped_config(), 130), (DENSE_LEGACY, 30)]:
        keys = list(base) + [k for k in EXTRA_KEYS if k not in base]
        for _ in range(count):
            raw, edits = copy.deepcopy(base), []
            for _ in range(1 if rng.random() < 0.8 else rng.randint(2, 4)):
                key = rng.choice(keys)
                if key in raw and rng.random() < 0.1:
                    del raw[key]
                    edits.append(f"without {key}")
                else:
                    raw[key] = mutate(rng, raw.get(key))
                    edits.append(f"{key}={str(raw[key])[:40]}")
            folder = fresh(tmp_path, links)
            (folder / "config.json").write_text(json.dumps(raw))
            fuzz.case(f"config.json {', '.join(edits)}", folder, load, info)
    for name, data in damage(rng, (SHIPPED / "config.json").read_bytes()):
        folder = fresh(tmp_path, links)
        (folder / "config.json").write_bytes(data)
        fuzz.case(f"config.json {name}", folder, load, info)
    for name, make in not_a_file(tmp_path, "config.json"):
        folder = fresh(tmp_path, links)
        make(folder / "config.json")
        fuzz.case(name, folder, load, info)
    fuzz.report(record_property, "config.json")


SHARD_NAMES = ["../outside.safetensors", "{outside}", "C:\\outside.safetensors", "C:outside.safetensors",
               "\\\\?\\C:\\outside.safetensors", "sub/model.safetensors", "./model.safetensors", "model.safetensors/",
               "..", ".", "", "model.safetensors\x00", "model.safetensors\\..\\..\\outside.safetensors",
               "missing.safetensors", "config.json", "model.safetensors ", "~/outside.safetensors",
               None, 0, True, [], {}, ["model.safetensors"], {"file": "model.safetensors"}]


def test_fuzzed_index_files(fuzz, tmp_path, record_property):
    rng = random.Random(1502)
    outside = tmp_path / "outside.safetensors"
    outside.symlink_to(SHIPPED / "model.safetensors")  # a valid file, outside every case folder
    links = {"config.json": SHIPPED / "config.json", "model.safetensors": SHIPPED / "model.safetensors"}
    with checkpoint.safe_open(str(SHIPPED / "model.safetensors"), framework="pt") as f:
        names = sorted(f.keys())
    base = {"metadata": {"total_size": (SHIPPED / "model.safetensors").stat().st_size},
            "weight_map": {name: "model.safetensors" for name in names}}
    cases = []
    for _ in range(60):
        index = copy.deepcopy(base)
        roll = rng.random()
        if roll < 0.5:  # one shard name, or all of them
            shard = rng.choice(SHARD_NAMES)
            shard = shard.format(outside=outside) if isinstance(shard, str) else shard
            chosen = names if rng.random() < 0.3 else [rng.choice(names)]
            index["weight_map"].update({n: shard for n in chosen})
            what = f"{len(chosen)} shard name(s) {shard!r}"
        elif roll < 0.7:  # tensor names: absent from the file, or dropped from the index
            name = rng.choice(names)
            del index["weight_map"][name]
            if rng.random() < 0.5:
                index["weight_map"][name + ".extra"] = "model.safetensors"  # a name the file does not hold
            what = f"tensor {name} renamed or dropped"
        else:
            key = rng.choice(["weight_map", "metadata"])
            index[key] = mutate(rng, index[key])
            what = f"{key} = {str(index[key])[:40]}"
        cases.append((what, json.dumps(index).encode()))
    cases += [(f"whole file: {name}", data) for name, data in damage(rng, json.dumps(base).encode())]
    for what, data in cases:
        folder = fresh(tmp_path, links)
        (folder / checkpoint.INDEX_FILE).write_bytes(data)
        fuzz.case(f"index {what}", folder, load, info)
    for name, make in not_a_file(tmp_path, checkpoint.INDEX_FILE):
        folder = fresh(tmp_path, links)
        make(folder / checkpoint.INDEX_FILE)
        fuzz.case(name, folder, load, info)
    fuzz.report(record_property, "shard index")


def test_fuzzed_safetensors_headers(fuzz, tmp_path, record_property):
    rng = random.Random(1503)
    data = (SHIPPED / "model.safetensors").read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    header, body = json.loads(data[8:8 + size]), data[8 + size:]
    names = [n for n in header if n != "__metadata__"]

    def edit(h: dict) -> str:
        """One change to the parsed header; returns what it did."""
        roll = rng.randrange(8)
        name = rng.choice(names)
        e = h[name]
        if roll == 0:
            shape = e["shape"]
            e["shape"] = rng.choice([shape + [1], shape[:-1], [2 * shape[0]] + shape[1:], [0] + shape[1:], [], [-1],
                                     [2**64 - 1], [2**63], ["8"], None, shape[::-1], [math.prod(shape)], [1] + shape])
            return f"{name} shape {e['shape']}"
        if roll == 1:
            e["dtype"] = rng.choice(["F16", "F32", "F64", "I16", "I32", "U8", "BOOL", "F8_E4M3", "XYZ", "", 5, None])
            return f"{name} dtype {e['dtype']!r}"
        if roll == 2:
            a, b = e["data_offsets"]
            e["data_offsets"] = rng.choice([[b, a], [0, 0], [a + 1, b], [a, b - 1], [-1, b], [a, 2**64], [a], "x",
                                            None, [a, b, b]])
            return f"{name} offsets {e['data_offsets']}"
        if roll == 3:
            new = rng.choice([rng.choice(names), "", name.removeprefix("model."), "lm_head.weight", name + "\x00",
                              "model.layers.99.conv.in_proj.weight", "model.layers.-1.ffn_norm.weight",
                              "model.layers.1e9.ffn_norm.weight", "x" * 10_000, "model.rotary_emb.inv_freq",
                              "model.layers." + "9" * 5000 + ".ffn_norm.weight"])
            h[new] = h.pop(name)
            return f"{name} renamed {new[:60]!r}"
        if roll == 4:
            del h[name]
            return f"{name} removed"
        if roll == 5:
            end = len(body)
            extra = rng.choice(["model.extra", "x" * 10_000, "model.layers.3.feed_forward.experts.99.w1.weight"])
            h[extra] = rng.choice([{"dtype": "F32", "shape": [1], "data_offsets": [end, end + 4]},
                                   {"dtype": "F32", "shape": [0], "data_offsets": [end, end]}])
            return f"extra tensor {extra[:60]} {h[extra]}"
        if roll == 6:
            h["__metadata__"] = rng.choice([{"format": 5}, {"format": "np"}, {"a": "b"}, ["pt"], None, "pt"])
            return f"metadata {h['__metadata__']}"
        e[rng.choice(list(e))] = mutate(rng, 0)
        return f"{name} field replaced"

    cases = []
    for _ in range(90):
        h = copy.deepcopy(header)
        what = "; ".join(edit(h) for _ in range(rng.randint(1, 2)))
        text = json.dumps(h).encode()
        cases.append((what, struct.pack("<Q", len(text)) + text + body))
    text = json.dumps(header).encode()
    for what, n in [("length +1", size + 1), ("length -1", size - 1), ("length 0", 0), ("length 2^64-1", 2**64 - 1),
                    ("length past the end", len(data) + 100), ("length 7", 7)]:
        cases.append((what, struct.pack("<Q", n) + data[8:]))
    cases += [("header padded with spaces (valid)", struct.pack("<Q", len(text) + 8) + text + b" " * 8 + body),
              ("a list as header", struct.pack("<Q", 6) + b"[1, 2]" + body),
              ("garbage appended", data + b"\0" * 100), ("only 5 bytes", data[:5])]
    for _ in range(8):
        flipped = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            flipped[8 + rng.randrange(size)] = rng.randrange(256)
        cases.append(("header bytes flipped", bytes(flipped)))
    for _ in range(4):
        cut = rng.randrange(len(data))
        cases.append((f"cut at byte {cut}", data[:cut]))
    for what, blob in cases:
        folder = fresh(tmp_path, {"config.json": SHIPPED / "config.json"})
        (folder / "model.safetensors").write_bytes(blob)
        fuzz.case(f"header {what}", folder, load)
        for p in folder.iterdir():  # keep the disk use of one case, not of a hundred
            p.unlink()
    fuzz.report(record_property, "safetensors header")


TEMPLATES = ["{% for %}", "{{ 1 + 'a' }}", "{{ 10 / 0 }}", "{{ messages.__class__.__mro__ }}",
             "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "{{ raise_exception('no system prompt') }}",
             "{{ range(10**9) | list }}", "{{ strftime_now(5) }}", "{{ messages[0].content.format(1) }}",
             "{{ messages | tojson | int(base=2) }}", "{{ bos_token }}{{ messages[0]['nope'] + 1 }}", ""]


def test_fuzzed_tokenizer_files(fuzz, tmp_path, record_property):
    rng = random.Random(1504)
    tok_json = json.loads((SHIPPED / "tokenizer.json").read_text(encoding="utf-8"))
    tok_config = json.loads((SHIPPED / "tokenizer_config.json").read_text(encoding="utf-8"))
    cases = []  # (what, {file name: bytes}); the other files are the shipped ones
    for _ in range(50):
        t = copy.deepcopy(tok_json)
        roll = rng.randrange(5)
        if roll == 0:
            key = rng.choice(list(t))
            t[key] = mutate(rng, t[key])
            what = f"tokenizer.json {key}"
        elif roll == 1:
            key = rng.choice(list(t["model"]))
            t["model"][key] = mutate(rng, t["model"][key])
            what = f"tokenizer.json model.{key}"
        elif roll == 2:
            token = rng.choice(list(t["model"]["vocab"]))
            t["model"]["vocab"][token] = mutate(rng, t["model"]["vocab"][token])
            what = f"vocab id of {token!r}"
        elif roll == 3:
            i = rng.randrange(len(t["model"]["merges"]))
            t["model"]["merges"][i] = rng.choice([[1, 2], ["a"], "a b c", None, ["zz", "qq"], []])
            what = f"merge {i}"
        else:
            entry = rng.choice(t["added_tokens"])
            key = rng.choice(list(entry))
            entry[key] = mutate(rng, entry[key])
            what = f"added token {key}"
        cases.append((what, {"tokenizer.json": json.dumps(t).encode()}))
    for _ in range(40):
        c = copy.deepcopy(tok_config)
        key = rng.choice(list(c) + ["unk_token", "added_tokens_decoder"])
        c[key] = rng.choice([mutate(rng, c.get(key)), {"content": 5}, {"content": "<|not_a_token|>"},
                             rng.choice(TEMPLATES), [{"name": "default"}], [{"name": "default", "template": 5}], [1]])
        cases.append((f"tokenizer_config.json {key}={str(c[key])[:40]}", {"tokenizer_config.json": json.dumps(c).encode()}))
    cases += [(f"chat_template.jinja {t[:30]!r}", {"chat_template.jinja": t.encode()}) for t in TEMPLATES]
    cases += [("chat_template.jinja invalid UTF-8", {"chat_template.jinja": b"\xff{{ bos_token }}"}),
              ("special_tokens_map.json a list", {"special_tokens_map.json": b"[]"}),
              ("special_tokens_map.json unknown token", {"special_tokens_map.json": b'{"unk_token": "<|nope|>"}'})]
    for file in ("tokenizer.json", "tokenizer_config.json"):
        cases += [(f"{file} {name}", {file: data}) for name, data in damage(rng, (SHIPPED / file).read_bytes())]
    shipped = {"tokenizer.json": SHIPPED / "tokenizer.json", "tokenizer_config.json": SHIPPED / "tokenizer_config.json",
               "config.json": SHIPPED / "config.json"}
    for what, files in cases:
        folder = fresh(tmp_path, {k: v for k, v in shipped.items() if k not in files})
        for name, data in files.items():
            (folder / name).write_bytes(data)
        fuzz.case(what, folder, use_tokenizer, info)
    for name, make in not_a_file(tmp_path, "tokenizer_config.json"):
        folder = fresh(tmp_path, {k: v for k, v in shipped.items() if k != "tokenizer_config.json"})
        make(folder / "tokenizer_config.json")
        fuzz.case(name, folder, use_tokenizer, info)
    fuzz.report(record_property, "tokenizer files")
