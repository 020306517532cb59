"""`python -m tinyhpd serve` / `tinyhpd.serve(...)`: an OpenAI-compatible embeddings server with dynamic batching (or,
for a cross-encoder folder, a TEI / Cohere-compatible rerank server).

Needs the `serve` extra (`pip install 'tinyhpd[serve]'`: starlette for the ASGI app, uvicorn to run it); this package
checks for both on import. Modules: app.py (routes, errors, limits, metrics), batcher.py (dynamic batching).
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any, Optional

_missing = [m for m in ("starlette", "uvicorn") if importlib.util.find_spec(m) is None]
if _missing:
    raise ImportError(f"tinyhpd.server needs the [serve] extra (missing: {', '.join(_missing)}): "
                      "pip install 'tinyhpd[serve]'")

from tinyhpd.arguments import port_number, positive_int, positive_seconds  # noqa: E402
from tinyhpd.server.app import LOOPBACK_HOSTS, ServeConfig, create_app  # noqa: E402
from tinyhpd.server.protocol import with_header_timeout  # noqa: E402

__all__ = ["serve", "create_app", "ServeConfig", "load_for_serving", "LOOPBACK_HOSTS"]


def load_for_serving(name: Any, *, revision: Optional[str] = None, threads: Optional[int] = None) -> Any:
    """A `Model`, or a `CrossEncoder` where the folder holds one (then the rerank routes are served)."""
    import tinyhpd
    from tinyhpd.cross_encoder import is_cross_encoder
    from tinyhpd.hub import resolve

    if name is not None:
        folder, _, _ = resolve(str(name), revision)
        if is_cross_encoder(folder):
            return tinyhpd.CrossEncoder(str(name), revision=revision, num_threads=threads)
    return tinyhpd.load(name, revision=revision, num_threads=threads)


def serve(model: Any = None, *, host: str = "127.0.0.1", port: int = 8080, api_key: Optional[str] = None,
          served_model_name: Optional[str] = None, max_batch_tokens: int = 16384, max_client_batch_size: int = 64,
          max_concurrent_requests: int = 512, max_payload_bytes: int = 4 << 20, normalize: bool = True,
          auto_truncate: bool = True, threads: Optional[int] = None, revision: Optional[str] = None,
          log_level: str = "info", sock: Any = None, openai_token_ids: str = "refuse",
          graceful_timeout: int = 120, body_timeout: float = 30.0, idle_timeout: int = 5,
          header_timeout: float = 10.0, index: Any = None) -> int:
    """Load `model` (a Model, a folder, a Hub id, or None for the default) and serve it until SIGTERM / SIGINT, which
    stop accepting connections, finish the requests in flight and return. `api_key` defaults to $TINYHPD_API_KEY.
    `openai_token_ids`: what token-id arrays on /v1/embeddings are: "refuse" (400: OpenAI clients send tiktoken ids)
    or "model" (the model's own ids, as on /embed). `graceful_timeout`: seconds SIGTERM waits for accepted requests
    to finish before closing the connections still open. `body_timeout`: seconds a request body may take to arrive
    (408 after). `idle_timeout`: seconds an idle keep-alive connection is kept. `header_timeout`: seconds a
    connection has to send a whole request head (closed after). `index`: an index folder (or a loaded Index) of
    this model's embeddings, searched by POST /v1/search (without `model`, the index's recorded model is served)."""
    import uvicorn

    import tinyhpd

    if openai_token_ids not in ("refuse", "model"):
        raise ValueError(f"openai_token_ids must be 'refuse' or 'model', got {openai_token_ids!r}")
    max_batch_tokens, max_client_batch_size, max_concurrent_requests, max_payload_bytes = (
        positive_int(value, name) for name, value in (
            ("max_batch_tokens", max_batch_tokens), ("max_client_batch_size", max_client_batch_size),
            ("max_concurrent_requests", max_concurrent_requests), ("max_payload_bytes", max_payload_bytes)))
    port = port_number(port)
    body_timeout, header_timeout = (positive_seconds(value, name) for name, value in (
        ("body_timeout", body_timeout), ("header_timeout", header_timeout)))
    graceful_timeout, idle_timeout = (positive_int(value, name) for name, value in (
        ("graceful_timeout", graceful_timeout), ("idle_timeout", idle_timeout)))
    if index is not None and not isinstance(index, tinyhpd.Index):
        index = tinyhpd.Index.load(index, mmap=True)
    if model is None and index is not None and (index.model_info or {}).get("name_or_path"):
        model, revision = index.model_info["name_or_path"], revision or index.model_info.get("revision")
    if not isinstance(model, (tinyhpd.Model, tinyhpd.CrossEncoder)):
        model = load_for_serving(model, revision=revision, threads=threads)
    key = api_key if api_key is not None else os.environ.get("TINYHPD_API_KEY")
    if key is not None and not key.strip():  # `--api-key "$KEY"` with KEY unset: never serve without a key silently
        raise ValueError("the API key is empty (--api-key \"\" or TINYHPD_API_KEY=\"\": an unset variable?); give a key, "
                         "or leave both unset to serve without one")
    loopback = host in ("127.0.0.1", "localhost", "::1")
    if key is None and not loopback:
        import warnings

        warnings.warn(f"serving on {host} without an API key: anyone who reaches this address can use the model "
                      "(set --api-key or TINYHPD_API_KEY)", stacklevel=2)
    name = served_model_name or Path(str(model.name_or_path)).name
    cfg = ServeConfig(served_model_name=name, api_key=key, max_batch_tokens=max_batch_tokens,
                      max_client_batch_size=max_client_batch_size, max_concurrent_requests=max_concurrent_requests,
                      max_payload_bytes=max_payload_bytes, normalize=normalize, auto_truncate=auto_truncate,
                      openai_token_ids=openai_token_ids, body_timeout=body_timeout,
                      allowed_hosts=LOOPBACK_HOSTS if loopback else None)
    app = create_app(model, cfg, index=index)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level,
                            timeout_graceful_shutdown=graceful_timeout, timeout_keep_alive=idle_timeout,
                            http=with_header_timeout(header_timeout),
                            access_log=False, limit_concurrency=max_concurrent_requests + 64)
    server = uvicorn.Server(config)
    server.run(sockets=[sock] if sock is not None else None)
    return 0
