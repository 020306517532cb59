"""The HTTP API: OpenAI's `POST /v1/embeddings`, TEI's `POST /embed`, `GET /v1/models`, `/health`, `/metrics`; with an
index, `POST /v1/search` (search.py); for a cross-encoder, TEI's `POST /rerank` and the Cohere / Jina `POST /v1/rerank`
(and `/v2/rerank`, where Cohere's v2 client posts) instead of the embedding routes.

Errors are OpenAI-style objects `{"error": {"message", "type", "param", "code"}}` with the status that names the cause:
400 bad JSON, types or values (the field is named in `param`), 401 a wrong or missing API key, 404 another model name,
413 too many items, an over-long input with `truncate: false`, a request over the token budget or payload cap,
429 a full queue (with `Retry-After`), 500 a failure of this request's own batch, 503 not ready.
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from tinyhpd.heads import normalize as normalize_rows
from tinyhpd.server import search as search_api
from tinyhpd.server.batcher import Batcher, EngineDied, QueueFull

__all__ = ["ServeConfig", "create_app", "Metrics", "LOOPBACK_HOSTS"]

# A server on a loopback address answers only requests addressed to a loopback name: a web page cannot reach it
# through a DNS name re-bound to 127.0.0.1 (DNS rebinding).
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


@dataclass
class ServeConfig:
    served_model_name: str
    api_key: Optional[str] = None
    max_batch_tokens: int = 16384
    max_client_batch_size: int = 64
    max_concurrent_requests: int = 512
    max_payload_bytes: int = 4 << 20
    normalize: bool = True
    auto_truncate: bool = True
    engine_batch_size: int = 128
    engine: str = "process"  # "process": the model runs in a forked process (no GIL shared with HTTP); "thread"
    openai_token_ids: str = "refuse"  # token-id arrays on /v1/embeddings: "refuse" (they are cl100k ids), "model"
    body_timeout: float = 30.0  # seconds a request body may take to arrive (slow clients hold connection slots)
    allowed_hosts: Optional[frozenset] = None  # Host header names accepted (None: any); loopback-only when served there


class ApiError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 param: Optional[str] = None, code: Optional[str] = None,
                 headers: Optional[Dict[str, str]] = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.headers = headers or {}


_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class _Histogram:
    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = tuple(buckets)
        self.counts = [0] * len(self.buckets)
        self.total, self.n = 0.0, 0

    def observe(self, v: float) -> None:
        self.n += 1
        self.total += v
        for i, b in enumerate(self.buckets):
            if v <= b:
                self.counts[i] += 1

    def lines(self, name: str, help_: str) -> List[str]:
        out = [f"# HELP {name} {help_}", f"# TYPE {name} histogram"]
        for b, c in zip(self.buckets, self.counts):
            out.append(f'{name}_bucket{{le="{b:g}"}} {c}')
        out += [f'{name}_bucket{{le="+Inf"}} {self.n}', f"{name}_sum {self.total:.6f}", f"{name}_count {self.n}"]
        return out


class Metrics:
    """Prometheus text exposition: requests by status, latency, batch sizes, queue depth, tokens."""

    def __init__(self) -> None:
        self.requests: Dict[Tuple[str, int], int] = {}
        self.latency = _Histogram(_LATENCY_BUCKETS)
        self.batch_inputs = _Histogram(_BATCH_BUCKETS)
        self.tokens = 0
        self.inputs = 0
        self.batches = 0
        self.queue_depth = lambda: 0
        self.restarts = lambda: 0
        self.dropped = lambda: 0

    def observe_request(self, path: str, status: int, seconds: float) -> None:
        self.requests[(path, status)] = self.requests.get((path, status), 0) + 1
        if path in ("/v1/embeddings", "/embeddings", "/embed", "/", "/rerank", "/v1/rerank", "/v2/rerank"):
            self.latency.observe(seconds)

    def observe_batch(self, n_inputs: int, n_tokens: int) -> None:
        self.batches += 1
        self.batch_inputs.observe(n_inputs)
        self.tokens += n_tokens
        self.inputs += n_inputs

    def render(self) -> str:
        lines = ["# HELP tinyhpd_requests_total HTTP requests by path and status code",
                 "# TYPE tinyhpd_requests_total counter"]
        for (path, status), n in sorted(self.requests.items()):
            lines.append(f'tinyhpd_requests_total{{path="{path}",status="{status}"}} {n}')
        lines += self.latency.lines("tinyhpd_request_duration_seconds", "embedding request latency")
        lines += self.batch_inputs.lines("tinyhpd_batch_inputs", "inputs per engine batch")
        lines += ["# HELP tinyhpd_batches_total engine batches run", "# TYPE tinyhpd_batches_total counter",
                  f"tinyhpd_batches_total {self.batches}",
                  "# HELP tinyhpd_tokens_total tokens embedded", "# TYPE tinyhpd_tokens_total counter",
                  f"tinyhpd_tokens_total {self.tokens}",
                  "# HELP tinyhpd_inputs_total inputs embedded", "# TYPE tinyhpd_inputs_total counter",
                  f"tinyhpd_inputs_total {self.inputs}",
                  "# HELP tinyhpd_queue_depth requests waiting for the engine", "# TYPE tinyhpd_queue_depth gauge",
                  f"tinyhpd_queue_depth {self.queue_depth()}",
                  "# HELP tinyhpd_engine_restarts_total engine processes started again after one died",
                  "# TYPE tinyhpd_engine_restarts_total counter", f"tinyhpd_engine_restarts_total {self.restarts()}",
                  "# HELP tinyhpd_requests_dropped_total queued requests whose clients went away before the engine "
                  "ran them", "# TYPE tinyhpd_requests_dropped_total counter",
                  f"tinyhpd_requests_dropped_total {self.dropped()}"]
        return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------- request parsing
def _inputs(value: Any, field: str, cfg: ServeConfig) -> Tuple[List[Any], bool]:
    """-> (items, is_token_ids). A string, a list of strings, a list of ints, or a list of lists of ints."""
    if isinstance(value, str):
        items: List[Any] = [value]
    elif isinstance(value, list):
        if not value:
            raise ApiError(400, f"'{field}' must not be an empty list", param=field)
        if all(isinstance(x, int) and not isinstance(x, bool) for x in value):
            items = [value]
        else:
            items = value
    else:
        raise ApiError(400, f"'{field}' must be a string, a list of strings or token-id arrays, got "
                            f"{type(value).__name__}", param=field)
    if len(items) > cfg.max_client_batch_size:
        raise ApiError(413, f"'{field}' holds {len(items)} items, more than the limit of {cfg.max_client_batch_size}",
                       param=field, code="too_many_inputs")
    if isinstance(items[0], str):
        for i, x in enumerate(items):
            if not isinstance(x, str):
                raise ApiError(400, f"'{field}[{i}]' is {type(x).__name__}: every item must be a string like "
                                    f"'{field}[0]'", param=f"{field}[{i}]")
            if not x.strip() or not any(c.isprintable() and not c.isspace() for c in x):
                raise ApiError(400, f"'{field}[{i}]' is empty or holds only spaces and control characters (nothing "
                                    "to embed)", param=f"{field}[{i}]")
        return items, False
    for i, x in enumerate(items):
        if not (isinstance(x, list) and x and all(isinstance(t, int) and not isinstance(t, bool) for t in x)):
            raise ApiError(400, f"'{field}[{i}]' must be a non-empty array of token ids like '{field}[0]'",
                           param=f"{field}[{i}]")
    return items, True


def _texts(value: Any, field: str, cfg: ServeConfig) -> List[str]:
    """A non-empty list of documents: strings, or (Cohere / Jina) objects with a string "text"."""
    if not isinstance(value, list) or not value:
        raise ApiError(400, f"'{field}' must be a non-empty list of strings", param=field)
    if len(value) > cfg.max_client_batch_size:
        raise ApiError(413, f"'{field}' holds {len(value)} items, more than the limit of {cfg.max_client_batch_size}",
                       param=field, code="too_many_inputs")
    out = []
    for i, x in enumerate(value):
        if isinstance(x, dict) and isinstance(x.get("text"), str):
            x = x["text"]
        if not isinstance(x, str):
            raise ApiError(400, f"'{field}[{i}]' is {type(x).__name__}: every item must be a string", param=f"{field}[{i}]")
        _check_unicode(x, f"{field}[{i}]")
        out.append(x)
    return out


def _check_unicode(text: str, param: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as bad:
        raise ApiError(400, f"'{param}' is not valid Unicode text (a lone surrogate at character {bad.start})",
                       param=param) from None


def _query(data: Dict[str, Any]) -> str:
    query = data.get("query")
    if not isinstance(query, str) or not query.strip():
        raise ApiError(400, "'query' must be a non-empty string", param="query")
    _check_unicode(query, "query")
    return query


class _Service:
    def __init__(self, model: Any, cfg: ServeConfig) -> None:
        self.model, self.cfg = model, cfg
        self.metrics = Metrics()
        self.batcher = Batcher(model, max_batch_tokens=cfg.max_batch_tokens, max_queue=cfg.max_concurrent_requests,
                               metrics=self.metrics, batch_size=cfg.engine_batch_size, engine=cfg.engine)
        self.metrics.queue_depth = lambda: self.batcher.depth
        self.metrics.restarts = lambda: self.batcher.restarts
        self.metrics.dropped = lambda: self.batcher.dropped
        self.ready = False
        self.reranker = hasattr(model, "rank")  # a CrossEncoder: pairs in, scores out
        self.vocab = model.config.vocab_size
        self.created = int(time.time())

    def ids_for(self, items: List[Any], token_ids: bool, truncate: bool, field: str) -> List[np.ndarray]:
        limit = self.model.max_seq_length
        if not token_ids:
            for i, x in enumerate(items):
                _check_unicode(x, f"{field}[{i}]")
            ids, truncated = self.model.tokenize_info(items)
            if not truncate and any(truncated):
                i = truncated.index(True)
                raise ApiError(413, f"'{field}[{i}]' has more than max_seq_length {limit} tokens and truncate is "
                                    "false", param=f"{field}[{i}]", code="input_too_long")
            return ids
        out = []
        for i, x in enumerate(items):
            if any(t < 0 or t >= self.vocab for t in x):  # Python ints: 10**30 is not an int64
                raise ApiError(400, f"'{field}[{i}]' holds a token id outside [0, {self.vocab})", param=f"{field}[{i}]")
            a = np.asarray(x, dtype=np.int64)
            if len(a) + 2 > limit:
                if not truncate:
                    raise ApiError(413, f"'{field}[{i}]' has {len(a)} tokens, more than max_seq_length {limit} - 2 "
                                        "and truncate is false", param=f"{field}[{i}]", code="input_too_long")
            out.append(self.model.with_special_tokens(a))
        return out

    def require(self, reranker: bool, route: str) -> None:
        if self.reranker != reranker:
            what = "a cross-encoder (reranker): use POST /rerank or /v1/rerank" if self.reranker else \
                "an embedding model: use POST /v1/embeddings or /embed"
            raise ApiError(400, f"{route} is not served here: this server serves {what}", code="wrong_model_kind")

    async def scores(self, query: str, texts: List[str], raw: bool, request: Any = None) -> Tuple[np.ndarray, int]:
        """(one score per text against the query, tokens used), batched with the other requests."""
        if self.model.num_labels != 1:
            raise ApiError(400, f"this cross-encoder has {self.model.num_labels} labels; rerank needs one",
                           code="not_a_reranker")
        try:
            joined = await _off_loop(self.model.tokenize_joined, [(query, t) for t in texts])
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        logits = await self.run(joined, request)
        return self.model.activate(logits, "Identity" if raw else None)[:, 0], int(sum(len(x) for x in joined))

    async def embed(self, ids: List[np.ndarray], normalize: bool, request: Any = None) -> np.ndarray:
        vecs = await self.run(ids, request)
        return normalize_rows(vecs) if normalize else vecs

    async def run(self, ids: List[np.ndarray], request: Any = None) -> np.ndarray:
        """The engine's rows for these inputs, within the token budget, through the batcher. A client that goes
        away while its request waits takes the request out of the queue (`ClientGone`): it never reaches the
        engine."""
        n_tokens = sum(len(x) for x in ids)
        if n_tokens > self.cfg.max_batch_tokens:
            raise ApiError(413, f"the request holds {n_tokens} tokens, more than max_batch_tokens "
                                f"{self.cfg.max_batch_tokens}", code="too_many_tokens")
        try:
            vecs = await _unless_disconnected(self.batcher.embed(ids), request)
        except QueueFull as exc:
            raise ApiError(429, f"server busy: {exc}; retry later", type_="rate_limit_error",
                           code="queue_full", headers={"Retry-After": "1"}) from None
        except EngineDied as exc:
            raise ApiError(503, f"{exc}; retry", type_="server_error", code="engine_restarted",
                           headers={"Retry-After": "1"}) from None
        except Exception as exc:
            raise ApiError(500, f"the engine failed: {type(exc).__name__}: {exc}", type_="server_error") from None
        return vecs


class ClientGone(Exception):
    """The client closed the connection while its request waited: nothing is computed or sent."""


async def _off_loop(fn, *args):
    """A CPU-bound call (tokenisation) on a worker thread: the event loop keeps serving other clients meanwhile."""
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(fn, *args)


async def _wait_disconnect(request: Any) -> None:
    """Returns when the client disconnects (the body was read already: the next ASGI message is the disconnect)."""
    while True:
        message = await request.receive()
        if message.get("type") == "http.disconnect":
            return


async def _unless_disconnected(work, request: Any):
    """`await work`, unless the client disconnects first: then `work` is cancelled (its queued job with it)."""
    task = asyncio.ensure_future(work)
    if request is None:
        return await task
    gone = asyncio.ensure_future(_wait_disconnect(request))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not gone.done():
            gone.cancel()
    if task.done():
        return task.result()
    task.cancel()
    raise ClientGone()


def _error_response(err: ApiError):
    from starlette.responses import JSONResponse

    return JSONResponse({"error": {"message": err.message, "type": err.type, "param": err.param, "code": err.code}},
                        status_code=err.status, headers=err.headers)


def _float_list(v: np.ndarray) -> List[float]:
    return [float(x) for x in v.tolist()]


def create_app(model: Any, cfg: ServeConfig, index: Any = None):
    """A Starlette app serving `model` (and `/v1/search` over `index`, a tinyhpd Index of this model's embeddings);
    the model (and the index) are warmed up in the app's start-up (then /health answers 200)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse
    from starlette.routing import Route

    svc = _Service(model, cfg)
    searcher = None
    if index is not None:
        if svc.reranker:
            raise ValueError("an index is searched with an embedding model; this folder holds a cross-encoder")
        index.model = model  # refuses an index built with another model (dim or weight fingerprint)
        searcher = search_api.Searcher(index)

    async def body(request: Request) -> Dict[str, Any]:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":  # as TEI; also what keeps a browser's "simple" cross-site POST out
            raise ApiError(415, f"Content-Type must be application/json, got {ctype or 'none'!r}",
                           code="unsupported_media_type")
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > cfg.max_payload_bytes:
            raise ApiError(413, f"payload of {length} bytes is over the limit of {cfg.max_payload_bytes}",
                           code="payload_too_large")
        raw = bytearray()

        async def read() -> None:
            async for chunk in request.stream():
                raw.extend(chunk)
                if len(raw) > cfg.max_payload_bytes:
                    raise ApiError(413, f"payload is over the limit of {cfg.max_payload_bytes} bytes",
                                   code="payload_too_large")

        try:  # a client that trickles its body holds a connection slot: it gets this long, in all
            await asyncio.wait_for(read(), timeout=cfg.body_timeout)
        except asyncio.TimeoutError:
            raise ApiError(408, f"the request body did not arrive within {cfg.body_timeout:g} s",
                           code="body_timeout") from None
        try:
            data = json.loads(bytes(raw))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"the body is not valid JSON ({exc})") from None
        except RecursionError:
            raise ApiError(400, "the body's JSON is nested too deeply") from None
        if not isinstance(data, dict):
            raise ApiError(400, "the body must be a JSON object")
        return data

    def check_host(request: Request) -> None:
        if cfg.allowed_hosts is None:
            return
        host = request.headers.get("host", "")
        name = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
        if name.lower() not in cfg.allowed_hosts:
            raise ApiError(403, f"Host {host!r} is not served here (this server answers loopback names only)",
                           type_="permission_error", code="host_not_allowed")

    def check_key(request: Request) -> None:
        check_host(request)
        if cfg.api_key is None:
            return
        auth = request.headers.get("authorization", "")
        token = auth[7:] if auth[:7].lower() == "bearer " else ""
        if not hmac.compare_digest(token.encode(), cfg.api_key.encode()):
            raise ApiError(401, "invalid or missing API key (Authorization: Bearer KEY)",
                           type_="authentication_error", code="invalid_api_key")

    def flag(data: Dict[str, Any], key: str, default: bool) -> bool:
        v = data.get(key, default)
        if v is None:
            return default
        if not isinstance(v, bool):
            raise ApiError(400, f"'{key}' must be true or false, got {json.dumps(v)[:40]}", param=key)
        return v

    def handler(fn):
        async def wrapped(request: Request):
            t0 = time.perf_counter()
            try:
                check_key(request)
                if not svc.ready:
                    raise ApiError(503, "the model is still loading", type_="server_error", code="not_ready")
                response = await fn(request)
            except ApiError as err:
                response = _error_response(err)
            except ClientGone:  # nobody reads this answer; counted in /metrics as 499 (nginx's "client closed")
                response = JSONResponse({"error": {"message": "client closed the connection", "type": "client_gone",
                                                   "param": None, "code": "client_closed"}}, status_code=499)
            svc.metrics.observe_request(request.url.path, response.status_code, time.perf_counter() - t0)
            response.headers["x-total-time"] = f"{1000 * (time.perf_counter() - t0):.3f}"
            return response
        return wrapped

    @handler
    async def openai_embeddings(request: Request):
        svc.require(False, request.url.path)
        data = await body(request)
        name = data.get("model", cfg.served_model_name)
        if not isinstance(name, str):
            raise ApiError(400, "'model' must be a string", param="model")
        if name != cfg.served_model_name:
            raise ApiError(404, f"model {name!r} is not served here (this server serves {cfg.served_model_name!r})",
                           param="model", code="model_not_found")
        if "input" not in data:
            raise ApiError(400, "'input' is required", param="input")
        fmt = data.get("encoding_format")
        fmt = "float" if fmt is None else fmt  # false, 0, "" or {} are not a format
        if not isinstance(fmt, str) or fmt not in ("float", "base64"):
            raise ApiError(400, f"'encoding_format' must be 'float' or 'base64', got {fmt!r}", param="encoding_format")
        dims = data.get("dimensions")
        if dims is not None and (isinstance(dims, bool) or not isinstance(dims, int) or dims != model.embedding_dim):
            raise ApiError(400, f"'dimensions' must be {model.embedding_dim} for this model (it does not shorten "
                                f"vectors), got {json.dumps(dims)}", param="dimensions")
        user = data.get("user")
        if user is not None and not isinstance(user, str):
            raise ApiError(400, "'user' must be a string", param="user")
        items, token_ids = _inputs(data["input"], "input", cfg)
        if token_ids and cfg.openai_token_ids != "model":
            raise ApiError(400, "'input' holds token-id arrays: on /v1/embeddings those are OpenAI's tiktoken (cl100k) "
                                "ids, which this model does not read. LangChain's OpenAIEmbeddings sends them by "
                                "default: pass check_embedding_ctx_length=False to send the text. A server started with "
                                "--openai-token-ids model takes them as the model's own ids (TEI's /embed always does).",
                           param="input", code="token_ids_not_supported")
        ids = await _off_loop(svc.ids_for, items, token_ids, cfg.auto_truncate, "input")
        vecs = await svc.embed(ids, cfg.normalize, request)
        n_tokens = int(sum(len(x) for x in ids))
        out = []
        for i, v in enumerate(vecs):
            emb: Any = (base64.b64encode(np.ascontiguousarray(v, dtype="<f4").tobytes()).decode("ascii")
                        if fmt == "base64" else _float_list(v))
            out.append({"object": "embedding", "index": i, "embedding": emb})
        return JSONResponse({"object": "list", "data": out, "model": cfg.served_model_name,
                             "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens}})

    @handler
    async def tei_embed(request: Request):
        svc.require(False, request.url.path)
        data = await body(request)
        if "inputs" not in data:
            raise ApiError(400, "'inputs' is required", param="inputs")
        items, token_ids = _inputs(data["inputs"], "inputs", cfg)
        ids = await _off_loop(svc.ids_for, items, token_ids, flag(data, "truncate", cfg.auto_truncate), "inputs")
        vecs = await svc.embed(ids, flag(data, "normalize", cfg.normalize), request)
        return JSONResponse([_float_list(v) for v in vecs])

    @handler
    async def tei_rerank(request: Request):
        """TEI: {"query", "texts", "raw_scores", "return_text"} -> [{"index", "score"(, "text")}], best first."""
        svc.require(True, request.url.path)
        data = await body(request)
        query, texts = _query(data), _texts(data.get("texts"), "texts", cfg)
        scores, _ = await svc.scores(query, texts, flag(data, "raw_scores", False), request)
        with_text = flag(data, "return_text", False)
        order = sorted(range(len(texts)), key=lambda i: -float(scores[i]))
        return JSONResponse([{"index": i, "score": float(scores[i]), **({"text": texts[i]} if with_text else {})}
                             for i in order])

    @handler
    async def v1_rerank(request: Request):
        """Cohere / Jina: {"model", "query", "documents", "top_n", "return_documents"} -> {"results": [{"index",
        "relevance_score"(, "document")}], "usage"}, best first."""
        svc.require(True, request.url.path)
        data = await body(request)
        name = data.get("model", cfg.served_model_name)
        if name is not None and name != cfg.served_model_name:
            raise ApiError(404, f"model {name!r} is not served here (this server serves {cfg.served_model_name!r})",
                           param="model", code="model_not_found")
        query, docs = _query(data), _texts(data.get("documents"), "documents", cfg)
        top_n = data.get("top_n")
        if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1):
            raise ApiError(400, f"'top_n' must be a positive integer, got {json.dumps(top_n)[:40]}", param="top_n")
        with_docs = flag(data, "return_documents", False)
        scores, n_tokens = await svc.scores(query, docs, False, request)
        order = sorted(range(len(docs)), key=lambda i: -float(scores[i]))[:top_n]
        return JSONResponse({"model": cfg.served_model_name, "object": "list", "results": [
            {"index": i, "relevance_score": float(scores[i]), **({"document": {"text": docs[i]}} if with_docs else {})}
            for i in order], "usage": {"total_tokens": n_tokens}})

    @handler
    async def v1_search(request: Request):
        if searcher is None:
            raise ApiError(404, "no index is served here (start the server with --index DIR)", code="no_index")
        data = await body(request)
        name = data.get("model", cfg.served_model_name)
        if name is not None and name != cfg.served_model_name:
            raise ApiError(404, f"model {name!r} is not served here (this server serves {cfg.served_model_name!r})",
                           param="model", code="model_not_found")
        req = search_api.parse(data, cfg.max_client_batch_size,
                               lambda status, message, param, code: ApiError(status, message, param=param, code=code),
                               _check_unicode)
        ids = await _off_loop(svc.ids_for, req.queries, False, True, "query")
        vecs = await svc.embed(ids, True, request)
        try:
            hits = await _off_loop(searcher.search, vecs, req)
        except (TypeError, ValueError) as exc:  # an id of the filter that is not in the index
            raise ApiError(400, str(exc), param="filter.ids") from None
        return JSONResponse(search_api.answer(hits, cfg.served_model_name, int(sum(len(x) for x in ids))))

    @handler
    async def models(request: Request):
        info = ({"kind": "reranker", "max_length": model.max_length} if svc.reranker else
                {"embedding_dim": model.embedding_dim, "max_seq_length": model.max_seq_length})
        if searcher is not None:
            info["index"] = {"count": len(searcher.index), "dtype": searcher.index.dtype, "ann": searcher.index.ann}
        return JSONResponse({"object": "list", "data": [
            {"id": cfg.served_model_name, "object": "model", "created": svc.created, "owned_by": "tinyhpd", **info}]})

    async def health(request: Request):  # no key: probes have none
        if not svc.ready:
            return JSONResponse({"status": "loading"}, status_code=503)
        if not svc.batcher.engine_alive():  # killed (OOM): replace it now; healthy again once it answers
            await svc.batcher.restart_engine()
            return JSONResponse({"status": "engine restarting"}, status_code=503)
        return JSONResponse({"status": "ok", "model": cfg.served_model_name})

    async def metrics(request: Request):  # behind the key when there is one (Prometheus sends bearer tokens)
        try:
            check_key(request)
        except ApiError as err:
            return _error_response(err)
        return PlainTextResponse(svc.metrics.render(), media_type="text/plain; version=0.0.4")

    @contextlib.asynccontextmanager
    async def lifespan(app):
        svc.batcher.start()
        warm = svc.model.tokenize_joined([("warm", "up")]) if svc.reranker else svc.model.tokenize(["warm-up"])
        await svc.run(warm)  # one real forward before /health says ok
        if searcher is not None:
            searcher.warm_up()  # and one search (an ANN index's compiled search is compiled or loaded from disk)
        svc.ready = True
        yield
        svc.ready = False
        await svc.batcher.stop()

    app = Starlette(routes=[
        Route("/v1/embeddings", openai_embeddings, methods=["POST"]),
        Route("/embeddings", openai_embeddings, methods=["POST"]),
        Route("/embed", tei_embed, methods=["POST"]),
        Route("/", tei_embed, methods=["POST"]),  # TEI serves /embed at / too: huggingface_hub's InferenceClient posts there
        Route("/rerank", tei_rerank, methods=["POST"]),
        Route("/v1/rerank", v1_rerank, methods=["POST"]),
        Route("/v2/rerank", v1_rerank, methods=["POST"]),  # Cohere's ClientV2 posts here; the same shape
        Route("/v1/search", v1_search, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ], lifespan=lifespan)
    app.state.service = svc
    return app
