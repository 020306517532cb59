"""`tinyhpd serve`: the OpenAI-compatible embeddings server (needs the [serve] extra)."""
from __future__ import annotations

import os

from tinyhpd.cli.common import add_model_args, count, port, seconds


def add_cli(sub) -> None:
    p = sub.add_parser("serve", help="OpenAI-compatible embeddings server (POST /v1/embeddings) with dynamic batching",
                       description="Serve a model over HTTP: OpenAI's /v1/embeddings, TEI's /embed, /v1/models, "
                                   "/health, /metrics. Needs `pip install 'tinyhpd[serve]'`.")
    add_model_args(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=port, default=8080, help="TCP port (default 8080; 0: any free one)")
    p.add_argument("--api-key", default=None, help="require `Authorization: Bearer KEY` (default: $TINYHPD_API_KEY)")
    p.add_argument("--served-model-name", default=None, help="the name clients pass as `model` (default: folder name)")
    p.add_argument("--max-batch-tokens", type=count, default=16384, help="token budget of one engine batch")
    p.add_argument("--max-client-batch-size", type=count, default=64, help="inputs per request (more: 413)")
    p.add_argument("--max-concurrent-requests", type=count, default=512, help="queued requests (more: 429)")
    p.add_argument("--max-payload-bytes", type=count, default=4 << 20, help="request body size (more: 413)")
    p.add_argument("--no-normalize", action="store_true", help="return raw vectors (default: L2-normalised)")
    p.add_argument("--no-auto-truncate", action="store_true",
                   help="413 for inputs over max_seq_length on /v1/embeddings (default: truncate)")
    p.add_argument("--openai-token-ids", choices=("refuse", "model"), default="refuse",
                   help="token-id arrays on /v1/embeddings: 'refuse' (default: OpenAI clients such as LangChain send "
                        "tiktoken ids, not this model's) or 'model' (this model's own ids, as /embed takes them)")
    p.add_argument("--graceful-timeout", type=count, default=120,
                   help="seconds SIGTERM / SIGINT wait for the requests already accepted (default 120)")
    p.add_argument("--body-timeout", type=seconds, default=30.0,
                   help="seconds a request body may take to arrive (408 after; slow clients hold connection slots)")
    p.add_argument("--idle-timeout", type=count, default=5, help="seconds an idle keep-alive connection is kept")
    p.add_argument("--header-timeout", type=seconds, default=10.0,
                   help="seconds a connection has to send a whole request head (closed after)")
    p.add_argument("--index", default=None,
                   help="an index folder of this model's embeddings, searched by POST /v1/search (without --model, "
                        "the index's recorded model is served)")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    p.set_defaults(func=run)


def run(args) -> int:
    from tinyhpd.server import serve

    return serve(args.model, host=args.host, port=args.port,
                 api_key=args.api_key if args.api_key is not None else os.environ.get("TINYHPD_API_KEY"),
                 served_model_name=args.served_model_name, max_batch_tokens=args.max_batch_tokens,
                 max_client_batch_size=args.max_client_batch_size,
                 max_concurrent_requests=args.max_concurrent_requests, max_payload_bytes=args.max_payload_bytes,
                 normalize=not args.no_normalize, auto_truncate=not args.no_auto_truncate, threads=args.threads,
                 revision=args.revision, log_level=args.log_level, openai_token_ids=args.openai_token_ids,
                 graceful_timeout=args.graceful_timeout, body_timeout=args.body_timeout,
                 idle_timeout=args.idle_timeout, header_timeout=args.header_timeout, index=args.index)
