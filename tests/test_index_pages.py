"""Huge pages for the ANN graph's arrays (tinyhpd/index/pages.py), checked in the kernel's own view of this process:
the VmFlags of /proc/self/smaps say "hg" for a region that asked for huge pages."""
import sys
from pathlib import Path

import numpy as np
import pytest

from tinyhpd.index import Index
from tinyhpd.index.pages import HUGE_PAGE, advise_huge_pages

THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def _thp_mode() -> str:
    text = THP.read_text() if THP.exists() else ""
    return text[text.index("[") + 1:text.index("]")] if "[" in text else "absent"


def _vm_flags(address: int) -> list:
    """VmFlags of the mapping holding ``address``, from /proc/self/smaps."""
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and not head.endswith(":"):
            lo, hi = (int(part, 16) for part in head.split("-"))
            inside = lo <= address < hi
        elif inside and head == "VmFlags:":
            return line.split()[1:]
    raise AssertionError(f"no mapping holds {address:#x}")


linux_thp = pytest.mark.skipif(not sys.platform.startswith("linux") or _thp_mode() == "never",
                               reason="needs Linux with transparent huge pages not 'never'")


@linux_thp
def test_a_large_array_is_marked_for_huge_pages():
    block = np.ones(5 * HUGE_PAGE, dtype=np.uint8)  # malloc'd by mmap: a mapping of its own
    address = block.__array_interface__["data"][0]
    assert advise_huge_pages(address, block.nbytes)
    assert "hg" in _vm_flags(address + 2 * HUGE_PAGE)
    assert block.sum() == block.size  # the contents are untouched


def test_less_than_one_whole_huge_page_is_left_alone():
    block = np.ones(HUGE_PAGE, dtype=np.uint8)
    address = block.__array_interface__["data"][0]
    assert advise_huge_pages(address + 1, HUGE_PAGE - 2) is False  # no whole 2 MB page inside


@linux_thp
def test_an_ann_index_keeps_its_codes_and_links_on_huge_pages(tmp_path):
    pytest.importorskip("faiss")
    import faiss

    x = np.random.default_rng(0).standard_normal((40_000, 128)).astype(np.float32)  # 5 MB of int8 codes
    index = Index(128, "int8", ann="hnsw")
    index.add(x)
    graph = index._ann._index
    codes = faiss.downcast_index(graph.storage).codes
    for vector, itemsize in ((codes, 1), (graph.hnsw.neighbors, 4)):
        assert int(vector.size()) * itemsize > 2 * HUGE_PAGE
        assert "hg" in _vm_flags(int(vector.data()) + HUGE_PAGE), "an array of the graph did not ask for huge pages"
    index.save(tmp_path / "ix")
    loaded = Index.load(tmp_path / "ix", mmap=False)  # read into memory: advised again
    assert "hg" in _vm_flags(int(faiss.downcast_index(loaded._ann._index.storage).codes.data()) + HUGE_PAGE)
    np.testing.assert_array_equal(loaded.search_rows(x[:5], 3)[0], index.search_rows(x[:5], 3)[0])
