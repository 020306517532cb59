"""Writes the pickled indexes the 0.2-era Index (commit 2de6d1e, before storage codecs) produced, so that the tests
check today's Index unpickles what users pickled then (Spark/Ray broadcasts, caches). Run from a checkout of that
commit: `python tests/data/index_pickles/make_files.py OUT_DIR`."""
import pickle
import sys
from pathlib import Path

import numpy as np

from tinyhpd.index import Index

out = Path(sys.argv[1])
rng = np.random.default_rng(0)
x = rng.standard_normal((40, 12))
np.save(out / "vectors.npy", x)
for dtype in ("float32", "float16", "int8", "binary"):
    index = Index(12, dtype)
    index.add(x, ids=[f"d{i}" for i in range(40)])
    (out / f"{dtype}.pickle").write_bytes(pickle.dumps(index, protocol=4))
