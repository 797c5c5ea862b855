"""The command line, run in-process (main(argv)) on a random checkpoint with a tokenizer."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import torch

import lfm2_edu.checkpoint as checkpoint
from lfm2_edu import count_parameters, load_model
from lfm2_edu.cli import format_route, main, route_tokens
from lfm2_edu.generate import RECOMMENDED, generate
from lfm2_edu.tokenizer import load_tokenizer
from reference import require_transformers
from test_tokenizer import build_tokenizer, chat_config, write_checkpoint

ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("cli") / "moe", chat_config(tie_word_embeddings=False), seed=5)


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# ------------------------------------------------------------------------------------ generate
@torch.no_grad()
def test_generate_chat_streams_the_reply(folder, capsys):
    code, out, err = run(capsys, "generate", "--model", folder, "--seed", 4, "--max-new-tokens", 24,
                         "--system", "Be brief.", "--stats", "What is 2+2?")
    assert code == 0
    model, tok = load_model(folder), load_tokenizer(folder)
    ids = tok.apply_chat_template([{"role": "system", "content": "Be brief."},
                                   {"role": "user", "content": "What is 2+2?"}], add_generation_prompt=True)
    expected = generate(model, ids, 24, seed=4, stop_token_ids=[7], **RECOMMENDED)[0]  # the defaults
    assert out == tok.decode(expected.new_ids, skip_special_tokens=True) + "\n"
    assert f"{len(ids)} prompt tokens, {len(expected.new_ids)} new tokens" in err


@torch.no_grad()
def test_generate_raw_text_greedy(folder, capsys):
    code, out, _ = run(capsys, "generate", "--model", folder, "--no-chat", "--greedy",
                       "--repetition-penalty", 1.0, "--max-new-tokens", 12, "Hello world")
    assert code == 0
    model, tok = load_model(folder), load_tokenizer(folder)
    ids = tok.encode("Hello world")
    assert ids[0] == 1  # bos from the post-processor
    new = generate(model, ids, 12, stop_token_ids=[7])[0].new_ids
    assert out == tok.decode(new, skip_special_tokens=True) + "\n"


@pytest.mark.parametrize("argv,match", [
    (["generate", ""], "prompt: expected some text, found an empty prompt"),
    (["generate", "--temperature", "-1", "Hi"], "temperature: expected 0 .greedy. or a positive"),
    (["generate", "--top-p", "0", "Hi"], r"top_p: expected a number in \(0, 1\]"),
    (["generate", "--top-p", "1.5", "Hi"], r"top_p: expected a number in \(0, 1\]"),
    (["generate", "--max-new-tokens", "0", "Hi"], "max_new_tokens: expected a positive integer"),
    (["route", " "], "route: expected some text"),
])
def test_bad_input_exits_2_with_one_line(folder, capsys, argv, match):
    code, out, err = run(capsys, *argv[:1], "--model", folder, *argv[1:])
    assert code == 2 and out == ""
    assert re.search(match, err) and err.startswith("lfm2-edu: error: ") and "Traceback" not in err


def test_prompt_too_long_is_a_clear_error(folder, capsys):
    code, _, err = run(capsys, "generate", "--model", folder, "--no-chat", "word " * 300)
    assert code == 2 and "at most max_position_embeddings=256 tokens, found a prompt of" in err


def test_default_model_not_built_is_a_clear_message(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(checkpoint, "SHIPPED_DIR", tmp_path)  # wherever the real one stands
    for argv in (["generate", "Hi"], ["route", "Hi"], ["info"]):
        code, out, err = run(capsys, *argv)
        assert code == 2 and out == ""
        assert "expected the shipped model 'tiny-lfm2-moe'" in err and "pass --model" in err
        assert "Traceback" not in err


def test_checkpoint_without_tokenizer_or_template(tmp_path, folder, capsys):
    import shutil

    bare = shutil.copytree(folder, tmp_path / "bare")
    (bare / "tokenizer.json").unlink()
    code, _, err = run(capsys, "generate", "--model", bare, "Hi")
    assert code == 2 and "expected tokenizer.json" in err
    no_template = shutil.copytree(folder, tmp_path / "no_template")
    build_tokenizer(no_template, chat_template=None)
    code, _, err = run(capsys, "generate", "--model", no_template, "Hi")
    assert code == 2 and "chat template: expected one" in err and "--no-chat" in err


@pytest.mark.parametrize("text,match", [
    ("[" * 100_000 + "]" * 100_000, "config: expected valid JSON in .*nested too deeply"),
    ("[1, 2]", "config"),
    ({"hidden_size": -4}, "hidden_size"),
])
def test_generate_with_a_hostile_config_is_a_clear_error(tmp_path, folder, capsys, text, match):
    """generate reads the checkpoint's dtype from config.json: the config is validated first, so a
    hostile one is a one-line ConfigError, never a traceback (RecursionError, AttributeError)."""
    import shutil

    bad = shutil.copytree(folder, tmp_path / "bad")
    if isinstance(text, dict):  # the checkpoint's own config with one value made bad
        text = json.dumps({**json.loads((folder / "config.json").read_text()), "dtype": "bfloat16", **text})
    (bad / "config.json").write_text(text)
    code, out, err = run(capsys, "generate", "--model", bad, "Hi")
    assert code == 2 and out == ""
    assert re.search(match, err) and err.startswith("lfm2-edu: error: ") and "Traceback" not in err


# --------------------------------------------------------------------------------------- route
@torch.no_grad()
def test_route_tokens_equals_transformers_router(folder):
    """The experts per token and layer are those transformers' router picks (a hook on the gate)."""
    require_transformers()
    from reference import load_reference

    model, tok = load_model(folder), load_tokenizer(folder)
    ids = tok.encode("Hello world, café 🙂")
    table = route_tokens(model, tok, ids)
    ref = load_reference(folder)
    picked = {}
    for i in table.layers:
        gate = ref.model.layers[i].feed_forward.gate
        gate.register_forward_hook(lambda mod, inp, out, i=i: picked.__setitem__(i, out[2]))
    ref(torch.tensor([ids]))
    for j, i in enumerate(table.layers):
        theirs = picked[i].view(len(ids), -1).tolist()  # (T, k)
        ours = [table.experts[t][j] for t in range(len(ids))]
        assert ours == theirs, f"layer {i}"
    assert table.layers == [1, 2, 3] and len(table.tokens) == len(ids)
    assert all(abs(sum(w) - 1) < 1e-4 for row in table.weights for w in row)  # norm_topk_prob


def test_route_prints_a_table_plain_when_piped(folder, capsys):
    code, out, _ = run(capsys, "route", "--model", folder, "Hello world")
    assert code == 0 and not ANSI.search(out)
    lines = out.splitlines()
    assert "top-2 of 6" in lines[0] and "dense layers [0]" in lines[0]
    assert re.match(r"token\s+│\s+L1 │\s+L2 │\s+L3$", lines[1])
    model, tok = load_model(folder), load_tokenizer(folder)
    table = route_tokens(model, tok, tok.encode("Hello world"))
    assert lines[3:] == format_route(table).splitlines()[2:]
    assert lines[3].startswith("<|startoftext|>")
    assert [int(x) for x in lines[4].split("│")[1].split()] == table.experts[1][0]


def test_route_selected_layers(folder, capsys):
    code, out, _ = run(capsys, "route", "--model", folder, "--layers", "1,3", "Hello")
    assert code == 0 and re.match(r"token\s+│\s+L1 │\s+L3$", out.splitlines()[1])
    code, _, err = run(capsys, "route", "--model", folder, "--layers", "0", "Hello")
    assert code == 2 and "expected MoE layers among [1, 2, 3], found [0]" in err


def test_route_colour(folder, capsys, monkeypatch):
    code, out, _ = run(capsys, "route", "--model", folder, "--color", "always", "Hi")
    assert code == 0 and ANSI.search(out)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setenv("NO_COLOR", "1")
    assert not ANSI.search(run(capsys, "route", "--model", folder, "Hi")[1])
    monkeypatch.delenv("NO_COLOR")
    assert ANSI.search(run(capsys, "route", "--model", folder, "Hi")[1])


def test_route_on_a_dense_model_is_a_clear_error(tmp_path, capsys):
    dense = write_checkpoint(tmp_path / "dense", chat_config(model_type="lfm2"), seed=0)
    code, _, err = run(capsys, "route", "--model", dense, "Hi")
    assert code == 2 and "found model_type 'lfm2' with none" in err


# ---------------------------------------------------------------------------------------- info
def test_info_prints_config_and_parameter_counts(folder, capsys):
    code, out, _ = run(capsys, "info", "--model", folder)
    assert code == 0
    counts = count_parameters(chat_config(tie_word_embeddings=False))
    assert f"parameters: {counts.total:,} total, {counts.active:,} active per token" in out
    assert "4: 2 conv + 2 attention (at 1, 3)" in out
    assert "6 per MoE layer of width 16, top-2" in out and "320 tokens, chat template yes" in out
    assert str(counts) in out


def test_python_dash_m_entry_point(folder):
    done = subprocess.run([sys.executable, "-m", "lfm2_edu", "info", "--model", str(folder)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "model_type  lfm2_moe" in done.stdout
    done = subprocess.run([sys.executable, "-m", "lfm2_edu", "frobnicate"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "invalid choice: 'frobnicate'" in done.stderr


def test_info_reads_the_weights_size_from_the_index_when_weights_are_absent(tmp_path, capsys):
    """What `info` sees of a hub repo: config and index only, no gigabytes of weights."""
    from lfm2_edu import LFM2Config

    (tmp_path / "config.json").write_text(json.dumps(LFM2Config().to_hub_dict()))
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": 16_680_000_000},
                                                                      "weight_map": {}}))
    code, out, _ = run(capsys, "info", "--model", tmp_path)
    assert code == 0
    assert "24: 18 conv + 6 attention (at 2, 6, 10, 14, 18, 21)" in out and "16.68 GB of safetensors" in out
    assert "tokenizer  none" in out
    counts = count_parameters(LFM2Config())
    assert f"{counts.total:,} total, {counts.active:,} active" in out


# ------------------------------------------------------------------------------- routing-report
def _texts(tmp_path):
    files = []
    for name, text in (("code", "def add(a, b):\n    return a + b\n" * 12), ("prose", "The cat sat on the mat. " * 20)):
        files += ["--text-file", tmp_path / f"{name}.txt"]
        (tmp_path / f"{name}.txt").write_text(text)
    return files


def test_routing_report_on_text_files_prints_the_summary_and_the_control(folder, tmp_path, capsys):
    from lfm2_edu import routing as R

    code, out, err = run(capsys, "routing-report", "--model", folder, *_texts(tmp_path), "--seq-len", 16,
                         "--windows", 2, "--control-seeds", 1)
    assert code == 0, err
    assert "windows: the text files given: code 2 x 17, prose 2 x 17" in out
    model, tok = load_model(folder), load_tokenizer(folder)
    windows = R.text_windows(tok, {d: (tmp_path / f"{d}.txt").read_text() for d in ("code", "prose")}, 16, 2)
    table = R.summary_table(R.compare_routing(model, windows))
    assert R.format_summary_table(table) in out  # the package's own table, on the same windows
    assert "trained, bias zeroed" in out and "untrained" in out and "noise floor (p95)" in out
    assert "re-routing control on 68 tokens" in out and "random, seed 0" in out


def test_routing_report_reads_the_windows_a_checkpoint_ships(folder, tmp_path, capsys):
    import shutil

    from safetensors.torch import save_file

    from lfm2_edu.routing import HELD_OUT_FILE
    copy = shutil.copytree(folder, tmp_path / "ships")
    g = torch.Generator().manual_seed(0)
    save_file({"data": torch.randint(8, 320, (2, 9), generator=g), "prose": torch.randint(8, 320, (1, 9), generator=g)},
              str(copy / HELD_OUT_FILE))
    code, out, err = run(capsys, "routing-report", "--model", copy, "--no-untrained", "--control-seeds", 0)
    assert code == 0, err
    assert f"windows: {HELD_OUT_FILE}, shipped with the checkpoint: prose 1 x 9, data 2 x 9" in out
    assert "untrained control left out" in out and "  untrained" not in out and "re-routing control" not in out


@pytest.mark.parametrize("argv, match", [
    (["--text-file", "/nonexistent/a.txt"], "--text-file: expected a text file, found nothing at /nonexistent/a.txt"),
    (["--seq-len", "1"], "--seq-len: expected at least 2, found 1"),
    (["--control-seeds", "-1"], "--control-seeds: expected at least 0, found -1"),
])
def test_routing_report_bad_input(folder, capsys, argv, match):
    code, _, err = run(capsys, "routing-report", "--model", folder, *argv)
    assert code == 2 and match in err and len(err.strip().splitlines()) == 1


def test_routing_report_short_text_and_dense_model(folder, tmp_path, capsys):
    (tmp_path / "tiny.txt").write_text("Hi")
    code, _, err = run(capsys, "routing-report", "--model", folder, "--text-file", tmp_path / "tiny.txt")
    assert code == 2 and "text 'tiny': expected at least 129 tokens for one window of 128" in err
    dense = write_checkpoint(tmp_path / "dense", chat_config(model_type="lfm2"), seed=0)
    code, _, err = run(capsys, "routing-report", "--model", dense)
    assert code == 2 and "routing-report: expected a model with MoE layers, found model_type 'lfm2'" in err
