"""`POST /v1/search` (tinyhpd/server/search.py): a served index answers like Index.search does, through the batcher,
limits, auth and metrics; errors are OpenAI-style objects the real openai client raises as its own error types.
Servers listen on 127.0.0.1 only and stop by themselves."""
from __future__ import annotations

import pytest

import tinyhpd
from serving import KEY, NAME, Server, metrics, post

DOCS = ["A man is playing a guitar.", "Two dogs run through a park.", "The stock market fell sharply today.",
        "A recipe for tomato soup with basil.", "The cat sleeps on the warm mat.", "Heavy rain is expected tonight.",
        "She plays the violin in an orchestra.", "Puppies chase each other on the grass."]


@pytest.fixture(scope="module")
def model():
    return tinyhpd.load(None)


@pytest.fixture(scope="module")
def index(model):
    return tinyhpd.Index.build(DOCS, model=model, ids=[f"doc{i}" for i in range(len(DOCS))], dtype="float16")


@pytest.fixture(scope="module")
def server(model, index):
    s = Server(model, index=index, api_key=KEY, max_client_batch_size=4)
    yield s
    s.stop()


def test_search_answers_as_the_index_does(server, index):
    queries = ["someone strums a guitar", "dogs playing outside"]
    r = post(server, "/v1/search", {"query": queries, "top_k": 3})
    assert r.status_code == 200
    body = r.json()
    want = index.search(queries, top_k=3)
    assert [d["index"] for d in body["data"]] == [0, 1] and body["model"] == NAME
    for got, hits in zip(body["data"], want):
        assert got["ids"] == hits.ids
        assert got["scores"] == pytest.approx(hits.scores.tolist(), abs=1e-6)
        assert got["scores"] == sorted(got["scores"], reverse=True)
    assert body["data"][0]["ids"][0] == "doc0" and body["data"][1]["ids"][0] in ("doc1", "doc7")
    assert body["usage"]["prompt_tokens"] > 0


def test_a_single_string_and_a_filter(server):
    r = post(server, "/v1/search", {"query": "a small dog", "top_k": 5, "filter": {"ids": ["doc2", "doc7", "doc4"]}})
    assert r.status_code == 200
    data = r.json()["data"]
    assert len(data) == 1 and sorted(data[0]["ids"]) == ["doc2", "doc4", "doc7"]  # top_k clamped to the filter
    assert data[0]["ids"][0] == "doc7"


@pytest.mark.parametrize("body,status,param", [
    ({"top_k": 3}, 400, "query"),
    ({"query": ""}, 400, "query"),
    ({"query": ["ok", 3]}, 400, "query[1]"),
    ({"query": ["a", "b", "c", "d", "e"]}, 413, "query"),
    ({"query": "x", "top_k": 0}, 400, "top_k"),
    ({"query": "x", "top_k": True}, 400, "top_k"),
    ({"query": "x", "filter": ["doc1"]}, 400, "filter"),
    ({"query": "x", "filter": {"ids": []}}, 400, "filter.ids"),
    ({"query": "x", "filter": {"ids": ["doc1", "nope"]}}, 400, "filter.ids"),
    ({"query": "x", "model": "other"}, 404, "model"),
])
def test_bad_requests_get_openai_error_objects(server, body, status, param):
    r = post(server, "/v1/search", body)
    assert r.status_code == status
    err = r.json()["error"]
    assert err["param"] == param and err["message"]
    if body.get("filter", {}) == {"ids": ["doc1", "nope"]}:
        assert "'nope' is not in the index" in err["message"]


def test_a_lone_surrogate_in_a_query_is_a_400_naming_it(server):
    import httpx

    body = b'{"query": ["fine", "half a pair \\ud800 here"]}'  # valid JSON, not valid Unicode text
    r = httpx.post(server.url + "/v1/search", content=body, timeout=30,
                   headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == "query[1]" and "lone surrogate at character 12" in err["message"]


def test_the_openai_client_raises_its_own_error_types(server):
    """The real openai SDK pointed at the server (its generic post): 4xx answers become BadRequestError /
    AuthenticationError carrying our error object."""
    import httpx
    import openai

    client = openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=30)
    ok = client.post("/search", body={"query": "guitar music", "top_k": 2}, cast_to=httpx.Response)
    assert ok.json()["data"][0]["ids"][0] == "doc0"
    with pytest.raises(openai.BadRequestError) as bad:
        client.post("/search", body={"query": "x", "top_k": -1}, cast_to=httpx.Response)
    assert bad.value.status_code == 400 and bad.value.body["param"] == "top_k"
    wrong = openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0, timeout=30)
    with pytest.raises(openai.AuthenticationError):
        wrong.post("/search", body={"query": "x"}, cast_to=httpx.Response)


def test_search_is_counted_in_metrics(server):
    post(server, "/v1/search", {"query": "rain"})
    assert 'path="/v1/search",status="200"' in metrics(server)


def test_a_server_without_an_index_says_so(model):
    s = Server(model)
    try:
        r = post(s, "/v1/search", {"query": "x"}, key=None)
        assert r.status_code == 404 and r.json()["error"]["code"] == "no_index"
    finally:
        s.stop()


def test_an_index_of_another_model_is_refused(tmp_path, model):
    import numpy as np

    from tinyhpd.server import ServeConfig, create_app

    class Elsewhere:  # another model of the same dimension
        name_or_path, revision, fingerprint, embedding_dim = "elsewhere", None, "f" * 64, model.embedding_dim

    other = tinyhpd.Index(model.embedding_dim, "float32", model=Elsewhere())
    other.add(np.eye(model.embedding_dim)[:3])
    with pytest.raises(ValueError, match="is not the model the index was built with"):
        create_app(model, ServeConfig(served_model_name=NAME), index=other)


def test_the_cli_serves_an_index_folder_with_its_recorded_model(tmp_path, index):
    """`python -m tinyhpd serve --index DIR` without --model: the index's model is loaded and /v1/search answers as
    the index does. A real process on 127.0.0.1, stopped with SIGTERM."""
    import signal
    import subprocess

    import httpx

    from serving import start_cli_server

    index.save(tmp_path / "ix")
    proc, url = start_cli_server(["--index", str(tmp_path / "ix")])
    try:
        r = httpx.post(url + "/v1/search", json={"query": "guitar music", "top_k": 2}, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["data"][0]["ids"] == index.search("guitar music", top_k=2).ids
        models = httpx.get(url + "/v1/models", timeout=10).json()["data"][0]
        assert models["index"] == {"count": len(DOCS), "dtype": "float16", "ann": None}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_an_ann_index_is_warmed_up_before_health_says_ok(model):
    import numpy as np

    from tinyhpd.index import ann

    more = DOCS + [f"{d} Again, number {i}." for i, d in enumerate(DOCS * 8)]
    index = tinyhpd.Index.build(more, model=model, dtype="int8", ann="hnsw")
    assert "compiled" not in index._ann._cache  # no search yet
    s = Server(model, index=index, api_key=KEY)
    try:
        assert index._ann._cache.get("compiled")  # the start-up search made the compiled search ready
        tables = index._ann._cache["compiled"][2]
        assert len(tables) == 1 and tables[0][1] == 1  # exactly one search ran: the warm-up
        r = post(s, "/v1/search", {"query": "someone strums a guitar", "top_k": 3})
        assert r.status_code == 200
        want = index.search("someone strums a guitar", top_k=3)
        assert r.json()["data"][0]["ids"] == want.ids
        assert tables[0][1] == 3  # the request's search and the check above ran compiled too
        assert r.json()["data"][0]["scores"] == pytest.approx(want.scores.tolist(), abs=1e-6)  # the query is
        # embedded in the server's batch: float32 forward passes of other shapes differ in the last bits
        assert ann.compiled_search() is not None and np.isfinite(want.scores).all()
    finally:
        s.stop()
