"""bench/retrieval_scale.py: the equal-recall arithmetic the faiss comparison is read from, and the sweep's order of
measurement (a fake clock; never timings)."""
from __future__ import annotations

import pytest

from helpers import load_bench


@pytest.fixture(scope="module")
def scale():
    return load_bench("retrieval_scale")


# faiss's sweep points: (efSearch, recall@10, p50 ms, batched queries/s)
PEER = [(16, 0.90, 0.10, 10_000.0), (32, 0.95, 0.20, 5_000.0), (64, 0.98, 0.40, 2_000.0)]


def test_faiss_at_interpolates_between_the_points_around_the_recall(scale):
    best, p50 = scale.faiss_at(PEER, 0.96)
    assert best == PEER[2]
    assert p50 == pytest.approx(0.20 + (0.40 - 0.20) * (0.96 - 0.95) / (0.98 - 0.95))


def test_faiss_at_batched_cost_interpolates_seconds_per_query(scale):
    _, seconds = scale.faiss_at(PEER, 0.925, lambda p: 1.0 / p[3])
    assert seconds == pytest.approx(1e-4 + (2e-4 - 1e-4) * 0.5)


def test_faiss_at_edges(scale):
    assert scale.faiss_at(PEER, 0.99) == (None, None)  # never reached
    assert scale.faiss_at(PEER, 0.85) == (PEER[0], 0.10)  # below the sweep: its cheapest point, no interpolation


def test_equal_recall_table_rows(scale):
    ours = {"n": 1000, "method": "tinyhpd HNSW int8 + rescoring, tuned", "sweep": [
        (16, 0.925, 0.3, 2_500.0),  # faiss at 0.925: p50 0.15 ms, 1.5e-4 s a query batched
        (64, 0.995, 0.9, 900.0),  # beyond faiss's reach
    ], "sweep_faiss_search": [(16, 0.925, 0.35, 2_400.0)]}
    peer = {"n": 1000, "method": "faiss HNSW-SQ8", "sweep": PEER}
    lines = scale.equal_recall_table([ours, peer]).splitlines()
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    assert len(lines) == 4 and all(line.count("|") == len(head) + 1 for line in lines)
    first = dict(zip(head, (c.strip() for c in lines[2].strip("|").split("|"))))
    assert first["tinyhpd / interpolated"] == f"{0.3 / 0.15:.2f}"
    assert first["batched q/s tinyhpd / faiss at one expansion"] == f"{2_500 / 10_000:.2f}"
    assert first["batched time per query tinyhpd / faiss interpolated at tinyhpd's recall"] == \
        f"{(1 / 2_500) / 1.5e-4:.2f}"
    assert "not reached" in lines[3]
    plain = "tinyhpd through faiss's search (no compiled search): recall@10, p50 ms, batched q/s"
    assert first[plain] == "0.9250, 0.350, 2,400"
    assert dict(zip(head, (c.strip() for c in lines[3].strip("|").split("|"))))[plain] == ""


def test_paired_sweep_batches_alternate_and_take_the_median_round(scale, monkeypatch):
    """Each searcher's batch runs once a round, the searchers alternating, after an untimed batch of its own, and its
    queries/s comes from the median round: a stall in one round (searcher "a", round 2) moves neither searcher's
    figure, and the untimed batches (100 s each here) none. A fake clock: each call advances it by the seconds its
    searcher is given for that call."""
    import numpy as np

    clock = [0.0]
    calls = []
    batch_seconds = {"a": iter([100.0, 0.5, 100.0, 9.0, 100.0, 0.4] * len(scale.SWEEP)),  # untimed, timed, ...
                     "b": iter([100.0, 0.2, 100.0, 0.3, 100.0, 0.25] * len(scale.SWEEP))}

    def searcher(name):
        def many(q, ef):
            calls.append((name, ef))
            clock[0] += next(batch_seconds[name])
            return np.zeros((len(q), 10), dtype=np.int64)

        def one(q, ef):
            clock[0] += 1e-3

        return many, one

    monkeypatch.setattr(scale.time, "perf_counter", lambda: clock[0])
    queries = np.zeros((100, 4))
    out = scale.paired_sweep({"a": searcher("a"), "b": searcher("b")}, queries, queries[:2],
                             np.zeros((100, 10), dtype=np.int64))
    first = [c for c in calls if c[1] == scale.SWEEP[0]]
    # a round: a's untimed batch, a's timed batch, then b's two
    assert first == ([("a", scale.SWEEP[0])] * 2 + [("b", scale.SWEEP[0])] * 2) * scale.SWEEP_ROUNDS
    ef, _, p50, qps, rounds = out["a"][0]
    assert (ef, p50, qps) == (scale.SWEEP[0], pytest.approx(1.0), pytest.approx(100 / 0.5))
    assert rounds == pytest.approx([0.5, 9.0, 0.4])
    assert out["b"][0][3] == pytest.approx(100 / 0.25)
