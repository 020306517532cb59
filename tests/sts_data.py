"""A small SentEval-shaped data folder and a deterministic fake encoder, for the STS tests."""
from __future__ import annotations

import zlib
from pathlib import Path
from typing import List

import numpy as np

from tinyhpd.eval import sts


def fake_encode(sentences: List[str], dim: int = 16) -> np.ndarray:
    """A deterministic bag-of-words encoder: each word hashes to a fixed random vector."""
    out = np.zeros((len(sentences), dim), dtype=np.float32)
    for i, s in enumerate(sentences):
        for w in s.split():
            out[i] += np.random.default_rng(zlib.crc32(w.encode())).standard_normal(dim)
        out[i] += 0.01
    return out


WORDS = "a man woman dog cat is are playing eating running the guitar ball food park quickly slowly".split()


def _sentence(rng: np.random.Generator) -> str:
    return " ".join(rng.choice(WORDS, size=int(rng.integers(3, 9))))


def make_senteval(root: Path, n: int = 12, seed: int = 0) -> Path:
    """A small SentEval-shaped folder: every subset file of the seven tasks, with a blank gold line per subset."""
    rng = np.random.default_rng(seed)
    for year, subsets in sts.STS_SUBSETS.items():
        folder = root / "STS" / f"{year}-en-test"
        folder.mkdir(parents=True, exist_ok=True)
        for subset in subsets:
            pairs = [f"{_sentence(rng)}\t{_sentence(rng)}" for _ in range(n)]
            gold = [f"{rng.uniform(0, 5):.2f}" for _ in range(n)]
            gold[1] = ""  # unscored pair: dropped
            (folder / f"STS.input.{subset}.txt").write_text("\n".join(pairs) + "\n", encoding="utf-8")
            (folder / f"STS.gs.{subset}.txt").write_text("\n".join(gold) + "\n", encoding="utf-8")
    stsb = root / "STS" / "STSBenchmark"
    stsb.mkdir(parents=True, exist_ok=True)
    rows = [f"main-news\tfile\t2012\t{i:04d}\t{rng.uniform(0, 5):.3f}\t{_sentence(rng)}\t{_sentence(rng)}"
            for i in range(n)]
    (stsb / "sts-test.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    sick = root / "SICK"
    sick.mkdir(parents=True, exist_ok=True)
    rows = ["pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment"]
    rows += [f"{i}\t{_sentence(rng)}\t{_sentence(rng)}\t{rng.uniform(1, 5):.1f}\tNEUTRAL" for i in range(n)]
    (sick / "SICK_test_annotated.txt").write_text("\r\n".join(rows) + "\r\n", encoding="utf-8")
    return root
