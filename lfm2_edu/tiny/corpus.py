"""A training corpus with four clearly different kinds of text, made on any machine offline.

- prose:      English from the Python documentation that ships with Python (the language
              reference topics of `pydoc_data`) and the docstrings of the standard library.
- code:       Python source of the standard library, docstrings removed (they are prose).
- arithmetic: generated sums, differences and products, some as chat turns (so the model
              can answer "What is 12 + 7?" in the chat format); a share of the small sums and
              differences is held out of every document (arithmetic.py).
- data:       generated JSON records.
Documents are split into train and validation by a hash of their name, so the split does not
depend on the order files are found in. The two texts from Python depend on its version
(recorded in the model card); the generated ones only on the seed.
"""

from __future__ import annotations

import ast
import hashlib
import json
import random
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

from .arithmetic import chat_turn, equation, sample_problem

DOMAINS = ("prose", "code", "arithmetic", "data")
VALIDATION_SHARE = 0.05
EOT = "<|endoftext|>"  # separates documents within a domain's stream


@dataclass
class Corpus:
    train: dict[str, list[str]] = field(default_factory=dict)  # domain -> documents
    valid: dict[str, list[str]] = field(default_factory=dict)

    def sizes(self) -> dict[str, dict[str, int]]:
        """Characters and documents per domain and split."""
        return {d: {"train_docs": len(self.train[d]), "train_chars": sum(map(len, self.train[d])),
                    "valid_docs": len(self.valid[d]), "valid_chars": sum(map(len, self.valid[d]))}
                for d in DOMAINS}


def _is_validation(name: str) -> bool:
    digest = hashlib.sha256(name.encode()).digest()
    return int.from_bytes(digest[:4], "little") / 2**32 < VALIDATION_SHARE


def _stdlib_files() -> list[Path]:
    lib = Path(sysconfig.get_paths()["stdlib"])
    skip = {"test", "tests", "idlelib", "site-packages", "lib2to3", "pydoc_data", "turtledemo", "ensurepip"}
    return sorted(p for p in lib.rglob("*.py") if not skip & set(p.relative_to(lib).parts))


def _docstring_lines(tree: ast.AST) -> set[int]:
    """Line numbers (1-based) taken by module, class and function docstrings."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                lines.update(range(first.lineno, first.end_lineno + 1))
    return lines


def python_texts(max_code_chars: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(name, text) documents of prose and of code, from this Python's own files."""
    import pydoc_data.topics

    prose = [(f"topic:{k}", v.strip()) for k, v in sorted(pydoc_data.topics.topics.items())]
    code, code_chars = [], 0
    lib = Path(sysconfig.get_paths()["stdlib"])
    for path in _stdlib_files():
        try:
            source = path.read_text(encoding="utf-8")
            tree = ast.parse(source)
        except (UnicodeDecodeError, SyntaxError, ValueError):
            continue
        name = str(path.relative_to(lib))
        for node in ast.walk(tree):  # docstrings are prose
            doc = ast.get_docstring(node, clean=True) if isinstance(
                node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) else None
            if doc and len(doc) > 80:
                prose.append((f"doc:{name}:{getattr(node, 'name', '')}:{getattr(node, 'lineno', 0)}", doc))
        if code_chars < max_code_chars:
            drop = _docstring_lines(tree)
            kept = [line for i, line in enumerate(source.splitlines(), start=1) if i not in drop]
            text = "\n".join(kept).strip()
            if text:
                code.append((f"code:{name}", text))
                code_chars += len(text)
    return prose, code


def arithmetic_docs(n_docs: int, rng: random.Random) -> list[tuple[str, str]]:
    """Sums, differences and products (arithmetic.sample_problem: never a held-out one): five sixths
    of the documents a chat of 2-5 questions and answers (what the model is graded on), the rest
    lines of equations."""
    docs = []
    for i in range(n_docs):
        if i % 6 != 5:
            turns = [chat_turn(*sample_problem(rng)) for _ in range(rng.randint(2, 5))]
            docs.append((f"arith:{i}", "\n".join(turns)))
        else:
            docs.append((f"arith:{i}", "\n".join(equation(*sample_problem(rng)) for _ in range(rng.randint(8, 24)))))
    return docs


NAMES = ["Ada", "Alan", "Grace", "Linus", "Guido", "Barbara", "Edsger", "Donald", "Margaret", "Ken",
         "Dennis", "Frances", "John", "Radia", "Tim", "Sophie", "Niklaus", "Hedy", "Claude", "Katherine"]
CITIES = ["Paris", "Lyon", "Boston", "Tokyo", "Lagos", "Lima", "Oslo", "Cairo", "Delhi", "Perth",
          "Quito", "Seoul", "Austin", "Zurich", "Nairobi", "Hanoi"]
TAGS = ["alpha", "beta", "gamma", "delta", "red", "green", "blue", "north", "south", "core", "edge"]


def data_docs(n_docs: int, rng: random.Random) -> list[tuple[str, str]]:
    docs = []
    for i in range(n_docs):
        records = []
        for _ in range(rng.randint(3, 10)):
            record = {"id": rng.randint(1, 99999), "name": rng.choice(NAMES), "city": rng.choice(CITIES),
                      "age": rng.randint(18, 90), "score": round(rng.random(), 2),
                      "active": rng.random() < 0.5, "tags": rng.sample(TAGS, rng.randint(0, 3))}
            records.append(json.dumps(record))
        docs.append((f"data:{i}", "\n".join(records)))
    return docs


def build_corpus(seed: int = 0, max_code_chars: int = 3_000_000, n_arithmetic: int = 20_000,
                 n_data: int = 6_000) -> Corpus:
    rng = random.Random(seed)
    prose, code = python_texts(max_code_chars)
    named = {"prose": prose, "code": code, "arithmetic": arithmetic_docs(n_arithmetic, rng),
             "data": data_docs(n_data, rng)}
    corpus = Corpus()
    for domain, docs in named.items():
        corpus.train[domain] = [text for name, text in docs if not _is_validation(name)]
        corpus.valid[domain] = [text for name, text in docs if _is_validation(name)]
    return corpus


def python_version() -> str:
    return sys.version.split()[0]
