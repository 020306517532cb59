"""Reranking without torch: tinyhpd.CrossEncoder on a NumPy-built reranker (scores, rank, errors) and the server's
`/rerank` (TEI) and `/v1/rerank` (Cohere / Jina) routes: answers equal to `predict`, sorted, limits and OpenAI-style
errors. Parity with sentence-transformers is in tests/reference/test_cross_encoder.py."""
from __future__ import annotations


import httpx
import numpy as np
import pytest

import tiny_models
import tinyhpd
from serving import KEY, NAME, Server, metrics, post

QUERY = "a man is playing a guitar"
DOCS = ["a man plays guitar", "the cat sat on the mat", "two dogs run in the park", "a woman is cooking"]


@pytest.fixture(scope="module")
def reranker(tmp_path_factory):
    return tinyhpd.CrossEncoder(tiny_models.build_cross_encoder(tmp_path_factory.mktemp("ce") / "ce"))


@pytest.fixture(scope="module")
def rerank_server(reranker):
    s = Server(reranker, api_key=KEY, max_client_batch_size=8, max_batch_tokens=4096, max_payload_bytes=64 << 10)
    yield s
    s.stop()


def test_predict_scores_vary_and_rank_sorts_them(reranker):
    scores = reranker.predict([(QUERY, d) for d in DOCS])
    assert scores.shape == (4,) and scores.std() > 1e-3 and ((scores > 0) & (scores < 1)).all()  # Sigmoid
    ranked = reranker.rank(QUERY, DOCS, top_k=3, return_documents=True)
    assert [h["corpus_id"] for h in ranked] == list(np.argsort(-scores)[:3])
    assert [h["text"] for h in ranked] == [DOCS[i] for i in np.argsort(-scores)[:3]]
    logits = reranker.predict([(QUERY, d) for d in DOCS], activation_fn="Identity", batch_size=1)
    np.testing.assert_allclose(1 / (1 + np.exp(-logits)), scores, atol=1e-6)
    assert reranker.predict((QUERY, DOCS[0])) == pytest.approx(float(scores[0]), abs=1e-6)


def test_predict_shows_a_progress_bar_when_asked_and_checks_batch_size(reranker, capsys):
    pairs = [(QUERY, d) for d in DOCS] * 5
    quiet = reranker.predict(pairs, batch_size=3)
    assert "20/20" not in capsys.readouterr().err
    shown = reranker.predict(pairs, batch_size=3, show_progress_bar=True)
    assert "20/20" in capsys.readouterr().err
    np.testing.assert_array_equal(quiet, shown)
    for bad in (0, 2.0, True):
        with pytest.raises(ValueError, match="batch_size must be a positive integer"):
            reranker.predict(pairs, batch_size=bad)


def test_pairs_carry_token_types(reranker):
    ids, types = reranker.tokenize([(QUERY, DOCS[0])])
    assert types[0].tolist() == [0] * (len(QUERY.split()) + 2) + [1] * (len(DOCS[0].split()) + 1)
    swapped = reranker.predict([(DOCS[0], QUERY)])[0]
    assert swapped != pytest.approx(reranker.predict([(QUERY, DOCS[0])])[0], abs=1e-6)  # order matters


@pytest.mark.parametrize("bad, error", [
    ("just a string", r"pairs must be a sequence of \(text, text\) pairs"),
    ([("a",)], r"pairs\[0\] must be a \(text, text\) pair"),
    ([("a", 3)], r"pairs\[0\] \(b\) is int, expected str"),
])
def test_bad_pairs_are_named(reranker, bad, error):
    with pytest.raises(TypeError, match=error):
        reranker.predict(bad)


def test_tei_rerank_equals_predict_sorted(rerank_server, reranker):
    r = post(rerank_server, "/rerank", {"query": QUERY, "texts": DOCS, "return_text": True})
    assert r.status_code == 200, r.text
    scores = reranker.predict([(QUERY, d) for d in DOCS])
    body = r.json()
    assert [x["index"] for x in body] == list(np.argsort(-scores))
    np.testing.assert_allclose([x["score"] for x in body], np.sort(scores)[::-1], atol=1e-6)
    assert [x["text"] for x in body] == [DOCS[i] for i in np.argsort(-scores)]
    raw = post(rerank_server, "/rerank", {"query": QUERY, "texts": DOCS, "raw_scores": True}).json()
    logits = reranker.predict([(QUERY, d) for d in DOCS], activation_fn="Identity")
    np.testing.assert_allclose(sorted(x["score"] for x in raw), np.sort(logits), atol=1e-6)
    assert "text" not in raw[0]


def test_v1_rerank_cohere_shape_with_top_n(rerank_server, reranker):
    docs = [DOCS[0], {"text": DOCS[1]}, DOCS[2]]
    r = post(rerank_server, "/v1/rerank", {"model": NAME, "query": QUERY, "documents": docs, "top_n": 2,
                                            "return_documents": True})
    assert r.status_code == 200, r.text
    body = r.json()
    scores = reranker.predict([(QUERY, d) for d in DOCS[:3]])
    assert [x["index"] for x in body["results"]] == list(np.argsort(-scores)[:2])
    assert body["results"][0]["document"] == {"text": DOCS[int(np.argmax(scores))]}
    assert body["usage"]["total_tokens"] == sum(len(x) for x in reranker.tokenize_joined([(QUERY, d) for d in DOCS[:3]]))


def test_the_cohere_clients_rerank(rerank_server, reranker):
    """The real `cohere` client (v1 posts to /v1/rerank, v2 to /v2/rerank) pointed at tinyhpd."""
    import cohere

    scores = reranker.predict([(QUERY, d) for d in DOCS])
    best = list(np.argsort(-scores)[:2])
    v1 = cohere.Client(base_url=rerank_server.url, api_key=KEY, timeout=30).rerank(
        model=NAME, query=QUERY, documents=DOCS, top_n=2, return_documents=True)
    assert [r.index for r in v1.results] == best and v1.results[0].document.text == DOCS[best[0]]
    np.testing.assert_allclose([r.relevance_score for r in v1.results], scores[best], atol=1e-6)
    v2 = cohere.ClientV2(base_url=rerank_server.url, api_key=KEY, timeout=30).rerank(
        model=NAME, query=QUERY, documents=DOCS, top_n=2)
    assert [r.index for r in v2.results] == best
    with pytest.raises(cohere.core.api_error.ApiError) as err:
        cohere.Client(base_url=rerank_server.url, api_key="wrong", timeout=30).rerank(query=QUERY, documents=DOCS)
    assert err.value.status_code == 401


@pytest.mark.parametrize("path, body, status, param", [
    ("/rerank", {"texts": DOCS}, 400, "query"),
    ("/rerank", {"query": "  ", "texts": DOCS}, 400, "query"),
    ("/rerank", {"query": QUERY, "texts": []}, 400, "texts"),
    ("/rerank", {"query": QUERY, "texts": "one"}, 400, "texts"),
    ("/rerank", {"query": QUERY, "texts": ["a", 3]}, 400, "texts[1]"),
    ("/rerank", {"query": QUERY, "texts": ["a"] * 9}, 413, "texts"),
    ("/rerank", {"query": QUERY, "texts": DOCS, "raw_scores": "yes"}, 400, "raw_scores"),
    ("/v1/rerank", {"query": QUERY, "documents": DOCS, "top_n": 0}, 400, "top_n"),
    ("/v1/rerank", {"model": "other", "query": QUERY, "documents": DOCS}, 404, "model"),
    ("/v1/rerank", {"query": QUERY, "documents": [{"title": "x"}]}, 400, "documents[0]"),
])
def test_bad_rerank_requests_get_openai_error_objects(rerank_server, path, body, status, param):
    r = post(rerank_server, path, body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["param"] == param and err["message"]


def test_routes_of_the_other_kind_say_which_to_use(rerank_server):
    r = post(rerank_server, "/v1/embeddings", {"input": "x"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "wrong_model_kind"
    assert "/rerank" in r.json()["error"]["message"]
    assert post(rerank_server, "/rerank", {"query": QUERY, "texts": DOCS}, key="wrong").status_code == 401
    models = httpx.get(rerank_server.url + "/v1/models", headers={"Authorization": f"Bearer {KEY}"}).json()
    assert models["data"][0]["kind"] == "reranker"
    assert 'tinyhpd_requests_total{path="/rerank",status="200"}' in metrics(rerank_server)


def test_load_for_serving_picks_the_kind(reranker, tmp_path):
    from tinyhpd.server import load_for_serving

    assert isinstance(load_for_serving(str(reranker.folder)), tinyhpd.CrossEncoder)
    folder = tiny_models.build_new(tmp_path / "emb", arch=tiny_models.SMALL_ARCH, dense_out=None)
    assert isinstance(load_for_serving(str(folder)), tinyhpd.Model)


def test_a_lone_surrogate_in_a_pair_names_the_pair_and_side(reranker):
    with pytest.raises(ValueError, match=r"pairs\[1\] \(b\) is not valid Unicode text"):
        reranker.predict([("ok", "fine"), ("ok", "bad \ud800")])


def test_loading_a_cross_encoder_as_an_embedding_model_says_what_to_use(tmp_path, reranker):
    import shutil

    folder = shutil.copytree(reranker.folder, tmp_path / "ce")
    (folder / "modules.json").write_text('[{"idx": 0, "name": "0", "path": "", '
                                         '"type": "sentence_transformers.base.modules.transformer.Transformer"}]')
    with pytest.raises(ValueError, match=r"a cross-encoder .*: load it with tinyhpd\.CrossEncoder"):
        tinyhpd.load(folder)
