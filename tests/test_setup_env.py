"""scripts/setup_env.py: which torch index it picks, how fast it gives up on one, what it counts."""

import functools
import http.server
import os
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import setup_env  # noqa: E402
from setup_env import PYTORCH_INDEX, SetupError, folder_bytes, probe, torch_choice  # noqa: E402


def test_cpu_index_by_default_on_linux_only():
    assert torch_choice(None, "linux") == (PYTORCH_INDEX + "cpu", True)
    assert torch_choice("", "linux") == (PYTORCH_INDEX + "cpu", True)
    assert torch_choice(None, "darwin") == (None, False)
    assert torch_choice(None, "win32") == (None, False)


@pytest.mark.parametrize("value, index", [
    ("cpu", PYTORCH_INDEX + "cpu"), ("cu128", PYTORCH_INDEX + "cu128"),
    ("rocm6.4", PYTORCH_INDEX + "rocm6.4"), ("default", None),
    ("https://example.org/simple", "https://example.org/simple"),
])
def test_a_chosen_index_never_falls_back(value, index):
    assert torch_choice(value, "linux") == (index, False)


@pytest.mark.parametrize("value", ["cuda", "CU128", "gpu", "download.pytorch.org/whl/cpu"])
def test_a_bad_choice_says_what_is_accepted(value):
    with pytest.raises(SetupError, match=rf"TORCH_INDEX must be cpu, .*found {value!r}"):
        torch_choice(value, "linux")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_probe_gives_up_at_once_where_nothing_listens():
    start = time.perf_counter()
    why = probe(f"http://127.0.0.1:{free_port()}/simple", timeout=5)
    assert why and time.perf_counter() - start < 5


def test_probe_gives_up_after_its_timeout_on_silence():
    with socket.socket() as s:  # accepts the connection (backlog) but never answers
        s.bind(("127.0.0.1", 0))
        s.listen()
        start = time.perf_counter()
        assert probe(f"http://127.0.0.1:{s.getsockname()[1]}/simple", timeout=1) is not None
        assert time.perf_counter() - start < 3


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_probe_accepts_a_torch_page_and_names_an_error(tmp_path):
    (tmp_path / "index" / "torch").mkdir(parents=True)
    (tmp_path / "index" / "torch" / "index.html").write_text("<html></html>")
    handler = functools.partial(Quiet, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert probe(f"http://127.0.0.1:{server.server_port}/index") is None
        assert probe(f"http://127.0.0.1:{server.server_port}/no-such-index/") == "HTTP 404"
    finally:
        server.shutdown()
        server.server_close()


def test_folder_bytes_counts_a_hard_link_once(tmp_path):
    (tmp_path / "a").write_bytes(b"x" * 1000)
    os.link(tmp_path / "a", tmp_path / "b")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c").write_bytes(b"y" * 10)
    assert folder_bytes(tmp_path) == 1010


def test_a_venv_of_another_python_is_refused(tmp_path, monkeypatch):
    s = setup_env.Setup(tmp_path / "venv")
    s.python.parent.mkdir(parents=True)
    s.python.touch()
    monkeypatch.setattr(s, "ask", lambda code: "2.7")
    with pytest.raises(SetupError, match=r"holds Python 2\.7, not the Python 3\.\d+ running"):
        s.make_venv()


@pytest.mark.slow  # a second pytest starts
def test_fresh_venv_runs_pytest_there_and_sums_up_in_one_line(monkeypatch, tmp_path, capsys):
    import test_in_fresh_venv as fresh

    info = {"python": "3.99.0", "torch": "2.13.0+cpu", "build": "CPU build", "packages": 1,
            "bytes": 1.5e9, "seconds": 75.0}
    monkeypatch.setattr(fresh, "setup", lambda venv: info)
    monkeypatch.setattr(fresh, "venv_python", lambda venv: Path(sys.executable))
    (tmp_path / "test_one.py").write_text("def test_one():\n    pass\n")
    rc = fresh.main(["--keep", str(tmp_path / "venv"), "--", str(tmp_path / "test_one.py"),
                     "-p", "no:cacheprovider"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert rc == 0
    assert last.startswith("Python 3.99.0, torch 2.13.0+cpu (CPU build): setup 1m15s, venv 1.50 GB; tests ")
    assert ": 1 passed in " in last


def test_fresh_venv_wants_a_new_folder(tmp_path, capsys):
    import test_in_fresh_venv as fresh

    with pytest.raises(SystemExit):
        fresh.main(["--keep", str(tmp_path)])
    assert "wants a folder that does not exist yet" in capsys.readouterr().err


def test_pip_tries_once_more_after_a_network_error_only(tmp_path, monkeypatch, capsys):
    s = setup_env.Setup(tmp_path)
    calls = []

    def run(what, *args, cwd=None):  # fails with what pip prints when a connection drops
        calls.append(args)
        with open(s.log, "a") as log:
            log.write("WARNING: Retrying ... ConnectionResetError(104, 'Connection reset by peer')\n"
                      "ERROR: ResolutionImpossible\n")
        raise setup_env.SetupError(f"{what} failed")

    monkeypatch.setattr(s, "run", run)
    with pytest.raises(setup_env.SetupError, match="failed twice on the network .ConnectionResetError.*a symptom"):
        s.pip("installing torch", "torch==2.13.0")
    assert len(calls) == 2 and "trying again" in capsys.readouterr().out

    calls.clear()

    def run_resolution(what, *args, cwd=None):  # a real conflict: not retried, the error as it was
        calls.append(args)
        with open(s.log, "a") as log:
            log.write("ERROR: ResolutionImpossible: conflicting dependencies\n")
        raise setup_env.SetupError(f"{what} failed")

    monkeypatch.setattr(s, "run", run_resolution)
    with pytest.raises(setup_env.SetupError, match="^installing torch failed$"):
        s.pip("installing torch", "torch==2.13.0")
    assert len(calls) == 1
