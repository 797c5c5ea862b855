"""Every link from a chapter (or a solutions notebook) into GLOSSARY.md names an entry that exists.

Anchors are GitHub's: the heading lower-cased, punctuation other than - and _ dropped, spaces as -.
"""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
NOTEBOOKS = sorted([*(ROOT / "notebooks").glob("*.ipynb"), *(ROOT / "solutions").glob("*.ipynb")])
LINK = re.compile(r"GLOSSARY\.md#([^)\s]+)")


def anchor(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def glossary_anchors() -> set[str]:
    return {anchor(line[4:]) for line in (ROOT / "GLOSSARY.md").read_text(encoding="utf-8").splitlines()
            if line.startswith("### ")}


def test_anchor_follows_github():
    assert anchor("Grouped-query attention (GQA)") == "grouped-query-attention-gqa"
    assert anchor("q/k norm") == "qk-norm" and anchor("norm_topk_prob") == "norm_topk_prob"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[f"{p.parent.name}/{p.stem}" for p in NOTEBOOKS])
def test_glossary_links_resolve(path):
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    text = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    missing = sorted(set(LINK.findall(text)) - glossary_anchors())
    assert not missing, f"{path.name}: links to GLOSSARY.md entries that do not exist: {missing}"
