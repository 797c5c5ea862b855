"""scripts/check_notebooks_on_other_checkpoints.py: its verdict counts every notebook it ran."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def load_script():
    spec = importlib.util.spec_from_file_location("check_other", REPO / "scripts" / "check_notebooks_on_other_checkpoints.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_failing_chapter_fails_the_run_even_beside_its_passing_solutions(tmp_path, monkeypatch, capsys):
    script = load_script()
    monkeypatch.setattr(script, "write_checkpoint", lambda config, folder: (folder.mkdir(parents=True),
                                                                            (folder / "config.json").write_text("{}")))
    ran = []

    def run_notebook(path, env):  # the chapter fails, its solutions (the same file name) pass
        ran.append(path)
        return (1 if path.parent.name == "notebooks" else 0), 1.0, 2.0**30

    monkeypatch.setattr(script, "run_notebook", run_notebook)
    monkeypatch.setattr(sys, "argv", ["check", "--only", "dense-lfm2", "--keep", str(tmp_path),
                                      "notebooks/00_welcome.ipynb", "solutions/00_welcome.ipynb"])
    assert script.main() == 1 and len(ran) == 2
    out = capsys.readouterr().out
    assert "dense-lfm2: 1 of 2 passed" in out and "FAILED: notebooks/00_welcome.ipynb" in out
