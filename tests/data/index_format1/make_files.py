"""Writes index folders in format 1 (signed int8 codes), as the Index of commit 7dd828a saved them, so that the tests
check today's Index loads what users saved then. Run from a checkout of that commit:
`python tests/data/index_format1/make_files.py OUT_DIR` (vectors.npy of ../index_pickles is the input)."""
import sys
from pathlib import Path

import numpy as np

from tinyhpd.index import Index

out = Path(sys.argv[1])
x = np.load(Path(__file__).parent.parent / "index_pickles" / "vectors.npy")
for dtype in ("int8", "float16"):
    index = Index(12, dtype)
    index.add(x, ids=[f"d{i}" for i in range(40)])
    index.save(out / dtype)
