"""Set up the course's virtual environment: torch first, then lfm2_edu with its test tools.

    python scripts/setup_env.py                     # .venv, for the Python that runs this
    python3.12 scripts/setup_env.py --venv DIR      # another folder, another Python

`make lab` and `make test` run this. Only the standard library is used, so it runs anywhere
Python 3.10+ does (Linux, macOS, Windows) before anything is installed.

Which torch, set by the environment variable TORCH_INDEX:
  (unset)         on Linux, the CPU build from PyTorch's CPU index, or, if that index does not
                  answer within a few seconds, torch from pip's default index; elsewhere pip's
                  default index, whose torch is already a CPU build (with MPS on macOS)
  cpu, cu128, rocm6.4, ...   that build, from https://download.pytorch.org/whl/<name>
  default         pip's default index (on Linux that is the CUDA build, several GB)
  a URL           that package index
A torch already in the venv is kept, whatever TORCH_INDEX says.

pip's own output goes to <venv>/setup.log; this prints the steps and a one-line summary.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The version the chapters' checked outputs were recorded with; any torch>=2.4 runs the package.
TORCH = "torch==2.13.0"
PYTORCH_INDEX = "https://download.pytorch.org/whl/"
PROBE_SECONDS = 5.0  # pip would retry an unreachable index for about 15 s per package
TAG = re.compile(r"cpu|cu\d{2,3}|rocm\d+(\.\d+)*|xpu")
MIN_PYTHON = (3, 10)


class SetupError(Exception):
    pass


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def torch_choice(value: str | None, platform: str = sys.platform) -> tuple[str | None, bool]:
    """(index URL or None for pip's default index, whether to fall back if it does not answer)."""
    value = (value or "").strip()
    if not value:
        return (PYTORCH_INDEX + "cpu", True) if platform.startswith("linux") else (None, False)
    if value == "default":
        return None, False
    if TAG.fullmatch(value):
        return PYTORCH_INDEX + value, False
    if re.match(r"(https?|file)://", value):
        return value, False
    raise SetupError(f"TORCH_INDEX must be cpu, a build tag such as cu128 or rocm6.4, default, "
                     f"or an index URL; found {value!r}")


def probe(url: str, timeout: float = PROBE_SECONDS) -> str | None:
    """None if `url` answers within `timeout` seconds (name lookup included), else why not."""
    result: list[str | None] = []

    def ask():
        try:
            with urllib.request.urlopen(url.rstrip("/") + "/torch/", timeout=timeout):
                result.append(None)
        except urllib.error.HTTPError as e:
            result.append(f"HTTP {e.code}")
        except urllib.error.URLError as e:
            # It answered; pip checks certificates its own way (its bundle, PIP_CERT).
            result.append(None if isinstance(e.reason, ssl.SSLCertVerificationError) else str(e.reason))
        except OSError as e:
            result.append(str(e))

    # A thread, because the socket timeout does not bound the DNS lookup.
    thread = threading.Thread(target=ask, daemon=True)
    thread.start()
    thread.join(timeout)
    return result[0] if result else f"no answer within {timeout:.0f} s"


def duration(seconds: float) -> str:
    return f"{seconds:.0f}s" if seconds < 60 else f"{int(seconds // 60)}m{seconds % 60:02.0f}s"


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under `folder`, each hard-linked file once, links not followed."""
    seen, total = set(), 0
    for dirpath, _, files in os.walk(folder):
        for name in files:
            st = os.lstat(os.path.join(dirpath, name))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


NETWORK_ERRORS = ("ConnectionResetError", "Connection reset by peer", "ReadTimeoutError", "ConnectTimeoutError",
                  "NewConnectionError", "Temporary failure in name resolution", "Max retries exceeded",
                  "RemoteDisconnected", "IncompleteRead", "ProtocolError")


def network_error(log_text: str) -> str | None:
    """The first sign in pip's output that the network, not the requirements, failed; else None."""
    return next((marker for marker in NETWORK_ERRORS if marker in log_text), None)


class Setup:
    def __init__(self, venv: Path):
        self.venv = venv
        self.python = venv_python(venv)
        self.log = venv / "setup.log"

    def run(self, what: str, *args: str, cwd: Path | None = None) -> None:
        """Run a command with its output going to the log; on failure show the log's tail."""
        print(f"  {what} ...", end="", flush=True)
        start = time.perf_counter()
        with open(self.log, "a", encoding="utf-8") as log:
            log.write(f"\n$ {' '.join(args)}\n")
            log.flush()
            done = subprocess.run(args, stdout=log, stderr=subprocess.STDOUT, cwd=cwd)
        if done.returncode:
            print(" failed")
            tail = self.log.read_text(encoding="utf-8", errors="replace").splitlines()[-25:]
            raise SetupError(f"{what} failed (exit code {done.returncode}); the end of {self.log}:\n"
                             + "\n".join("    " + line for line in tail))
        print(f" done ({duration(time.perf_counter() - start)})")

    def pip(self, what: str, *args: str, cwd: Path | None = None) -> None:
        """pip install; once more after a network error, which pip can report as a resolution one."""
        command = (str(self.python), "-m", "pip", "install", "--progress-bar", "off", "--disable-pip-version-check", *args)
        for attempt in (1, 2):
            size = self.log.stat().st_size if self.log.exists() else 0
            try:
                return self.run(what, *command, cwd=cwd)
            except SetupError as err:
                with open(self.log, "rb") as log:  # what this attempt wrote
                    log.seek(size)
                    cause = network_error(log.read().decode("utf-8", errors="replace"))
                if cause is None:
                    raise
                if attempt == 2:
                    raise SetupError(f"{what} failed twice on the network ({cause}): the package index did not "
                                     f"answer, so any 'ResolutionImpossible' or 'No matching distribution' "
                                     f"above is a symptom, not the cause; try again once the network is "
                                     f"back.\n{err}") from None
                print(f"  the network failed ({cause}); trying again")

    def ask(self, code: str) -> str:
        done = subprocess.run([str(self.python), "-c", code], capture_output=True, text=True)
        if done.returncode:
            raise SetupError(f"{self.python} could not run a line of Python:\n{done.stderr.strip()}")
        return done.stdout.strip()

    def make_venv(self) -> None:
        want = ".".join(map(str, sys.version_info[:2]))
        if self.python.exists():
            have = self.ask("import sys; print('%d.%d' % sys.version_info[:2])")
            if have != want:
                raise SetupError(f"{self.venv} holds Python {have}, not the Python {want} running this "
                                 f"script: delete it (make clean) or give another --venv")
            return
        created = not self.venv.exists()
        self.venv.mkdir(parents=True, exist_ok=True)
        self.log.write_text(f"setup of {self.venv} with Python {sys.version.split()[0]}\n", encoding="utf-8")
        try:
            self.run(f"creating {self.venv}", sys.executable, "-m", "venv", str(self.venv))
        except SetupError as e:
            if created:  # a venv without pip would look made next time
                shutil.rmtree(self.venv, ignore_errors=True)
            raise SetupError(f"{e}\n(On Debian and Ubuntu, `python3 -m venv` needs the package "
                             f"python3-venv, or python3.X-venv for your version.)") from None
        self.pip("upgrading pip", "--upgrade", "pip")

    def install_torch(self, index: str | None, fallback: bool) -> None:
        installed = self.ask("import importlib.metadata as m\n"
                             "try: print(m.version('torch'))\nexcept m.PackageNotFoundError: pass")
        if installed:
            print(f"  torch {installed} is already in {self.venv}: kept")
            return
        if index and index.startswith("http"):
            start = time.perf_counter()
            why = probe(index)
            if why and fallback:
                print(f"  PyTorch's CPU index {index} did not answer ({why}, "
                      f"{time.perf_counter() - start:.1f} s): torch from pip's default index instead")
                index = None
            elif why:
                raise SetupError(f"the torch index {index} (TORCH_INDEX) did not answer: {why}")
        if index:
            self.pip(f"installing {TORCH} from {index}", TORCH, "--index-url", index)
        else:
            self.pip(f"installing {TORCH} from pip's default index", TORCH)

    def summary(self) -> dict:
        code = (
            "import importlib.metadata as m, json, platform, torch\n"
            "v = torch.version\n"
            "mps = getattr(torch.backends, 'mps', None)\n"
            "build = (f'CUDA {v.cuda}' if v.cuda else f'ROCm {v.hip}' if getattr(v, 'hip', None)\n"
            "         else 'CPU and MPS' if mps and mps.is_built() else 'CPU')\n"
            "print(json.dumps({'python': platform.python_version(), 'torch': torch.__version__,\n"
            "                  'build': build + ' build', 'packages': len({d.metadata['Name'].lower()\n"
            "                  for d in m.distributions()})}))"
        )
        return json.loads(self.ask(code)) | {"bytes": folder_bytes(self.venv)}


def setup(venv: Path) -> dict:
    """Make or complete `venv`; return what it holds, its size in bytes and the setup time."""
    if sys.version_info < MIN_PYTHON:
        raise SetupError(f"lfm2_edu needs Python {'.'.join(map(str, MIN_PYTHON))} or newer; "
                         f"{sys.executable} is Python {sys.version.split()[0]}")
    start = time.perf_counter()
    index, fallback = torch_choice(os.environ.get("TORCH_INDEX"))  # a typo fails before any work
    s = Setup(venv)
    print(f"setting up {venv} with Python {sys.version.split()[0]} (pip's output: {s.log})")
    s.make_venv()
    s.install_torch(index, fallback)
    s.pip("installing lfm2_edu with its test tools", "-e", ".[dev]", cwd=ROOT)
    if sys.version_info < (3, 11):
        print("  (no transformers: 5.24.0, the tests' reference, needs Python 3.11+; "
              "the comparisons with it are skipped)")
    info = s.summary() | {"seconds": time.perf_counter() - start}
    print(f"{venv} ready in {duration(info['seconds'])}: Python {info['python']}, torch {info['torch']} "
          f"({info['build']}), {info['packages']} packages, {info['bytes'] / 1e9:.2f} GB")
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--venv", type=Path, default=ROOT / ".venv", help="the folder (default: .venv)")
    args = parser.parse_args(argv)
    try:
        setup(args.venv)
    except SetupError as e:
        print(f"setup_env: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
