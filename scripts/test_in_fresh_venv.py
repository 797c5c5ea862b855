"""Run the test suite in a new virtual environment for the Python that runs this script.

    python3.12 scripts/test_in_fresh_venv.py                  # every test, as `make test` runs them
    python3.13 scripts/test_in_fresh_venv.py --keep DIR -- tests/test_config.py -q

The venv is set up by setup_env.py exactly as `make test` sets up .venv (TORCH_INDEX applies), in
a temporary folder that is deleted afterwards unless --keep names one. It shows that the package,
its tests and every chapter's checked outputs hold on that Python, and prints one line: Python,
torch build, setup time, venv size, test time and pytest's result. Exit code: pytest's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from setup_env import ROOT, SetupError, duration, setup, venv_python  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="make the venv in DIR (which must not exist yet) and keep it")
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest, after --")
    args = parser.parse_args(argv)
    if args.keep and args.keep.exists():
        parser.error(f"--keep wants a folder that does not exist yet; {args.keep} does")
    venv = args.keep or Path(tempfile.mkdtemp(prefix="lfm2_edu-venv-")) / "venv"
    try:
        info = setup(venv)
        # The venv alone decides what is imported, not a PYTHONPATH of the calling shell.
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        start = time.perf_counter()
        with subprocess.Popen([str(venv_python(venv)), "-m", "pytest", *args.pytest_args], cwd=ROOT,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              errors="replace") as proc:
            last = ""
            for line in proc.stdout:
                print(line, end="", flush=True)
                last = line.strip(" =\n") or last
        seconds = time.perf_counter() - start
    except SetupError as e:
        print(f"setup_env: {e}", file=sys.stderr)
        return 1
    finally:
        if not args.keep:
            shutil.rmtree(venv.parent, ignore_errors=True)
    print(f"Python {info['python']}, torch {info['torch']} ({info['build']}): setup "
          f"{duration(info['seconds'])}, venv {info['bytes'] / 1e9:.2f} GB; tests {duration(seconds)}: {last}")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
