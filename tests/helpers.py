"""Constants and small helpers shared by the tests (fixtures live in conftest.py)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import tiny_models

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TINYHPD_SHARED", REPO.parent / "shared"))
SENTEVAL = SHARED / "data" / "senteval"

# The HPD-TinyBERT-F128 architecture (TinyBERT-L4-H312 student, Dense 312 -> 128 Tanh).
HPD_ARCH = tiny_models.HPD_ARCH



# A prelude for `python -c` children: any `import torch` (or transformers, sentence-transformers) in them fails, so what
# they run is shown not to need it.
NO_TORCH = ("import sys\n"
            "class _Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in ('torch', 'transformers', 'sentence_transformers'):\n"
            "            raise ImportError('blocked: ' + name)\n"
            "sys.meta_path.insert(0, _Block())\n")


def load_bench(name: str):
    """A script of bench/ (not a package) imported as a module, for testing its functions."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def need(module: str):
    """Import a reference module or fail the test (never skip) with a message saying how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - only hit on a broken CI image
        pytest.fail(f"reference stack missing: cannot import {module!r} ({exc}); run `pip install -e .[test]`")


EDGE_CASES = [
    "",
    " ",
    "   \t\n ",
    "Crème brûlée à la façon de Noël, naïve café.",
    "I love pizza 🍕🔥 and emoji 👩‍👩‍👧‍👦!",
    "日本語の文章です。中文句子测试。한국어 문장",
    "control\x00chars\x07and\x1b[31mescape\x7f here",
    "[CLS] literal [SEP] markers [PAD] [MASK] [UNK]",
    "word " * 1500,
    "supercalifragilisticexpialidocious " * 300 + "end",
    "A",
    "\u200b\u200d zero width \ufeff",
]
