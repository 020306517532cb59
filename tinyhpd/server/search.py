"""`POST /v1/search` over an index served beside the embeddings (`tinyhpd serve --index DIR`): the request type, its
checks and the answer.

Request: ``{"query": str | [str], "top_k": int (default 10), "filter": {"ids": [...]} (optional), "model": name
(optional)}``. Answer: ``{"object": "list", "data": [{"object": "search_result", "index": i, "ids": [...],
"scores": [...]}], "model", "usage": {"prompt_tokens", "total_tokens"}}``, one entry per query in request order, ids
best first with their cosine similarities. Errors are the server's OpenAI-style objects, naming the field.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import numpy as np

MAX_TOP_K = 1000
MAX_FILTER_IDS = 100_000


@dataclass
class SearchRequest:
    queries: List[str]
    top_k: int
    within: Optional[List[Any]]


def parse(data: Dict[str, Any], max_queries: int, error: Any, check_text: Any) -> SearchRequest:
    """The checked request; ``error(status, message, param, code)`` builds the exception to raise and
    ``check_text(text, param)`` raises for text the model cannot take (the embeddings routes' own check)."""
    query = data.get("query")
    queries = [query] if isinstance(query, str) else query
    if not isinstance(queries, list) or not queries:
        raise error(400, "'query' must be a string or a non-empty list of strings", "query", None)
    if len(queries) > max_queries:
        raise error(413, f"'query' holds {len(queries)} items, more than the limit of {max_queries}", "query",
                    "too_many_inputs")
    for i, q in enumerate(queries):
        param = "query" if isinstance(query, str) else f"query[{i}]"
        if not isinstance(q, str):
            raise error(400, f"'{param}' is {type(q).__name__}: every query must be a string", param, None)
        if not q.strip():
            raise error(400, f"'{param}' is empty or blank (nothing to search for)", param, None)
        check_text(q, param)
    top_k = data.get("top_k", 10)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
        raise error(400, f"'top_k' must be an integer from 1 to {MAX_TOP_K}, got {str(top_k)[:40]}", "top_k", None)
    within = None
    flt = data.get("filter")
    if flt is not None:
        if not isinstance(flt, dict) or set(flt) != {"ids"} or not isinstance(flt["ids"], list):
            raise error(400, "'filter' must be an object {\"ids\": [...]} listing the ids to rank", "filter", None)
        within = flt["ids"]
        if not within:
            raise error(400, "'filter.ids' is empty: no id to rank", "filter.ids", None)
        if len(within) > MAX_FILTER_IDS:
            raise error(413, f"'filter.ids' holds {len(within)} ids, more than the limit of {MAX_FILTER_IDS}",
                        "filter.ids", "too_many_ids")
        for i, id_ in enumerate(within):
            if isinstance(id_, bool) or not isinstance(id_, (int, str)):
                raise error(400, f"'filter.ids[{i}]' must be an integer or a string", f"filter.ids[{i}]", None)
    return SearchRequest(queries, top_k, within)


class Searcher:
    """The served index: one search at a time. Searches could run side by side (each carries its own expansion), but
    they are CPU-bound and the exact path already splits a large corpus between the cores, so a queue is fairer."""

    def __init__(self, index: Any) -> None:
        self.index = index
        self._lock = threading.Lock()

    def warm_up(self) -> None:
        """One search of one query before the server says it is ready: what a first query would pay once (an ANN
        index's compiled search is compiled, or loaded from numba's cache, here) is paid at start-up."""
        if len(self.index):
            with self._lock:
                self.index.search_rows(np.ones((1, self.index.dim)), 1)

    def search(self, vectors: np.ndarray, req: SearchRequest) -> List[Any]:
        with self._lock:
            return self.index.search(np.asarray(vectors), top_k=req.top_k, within=req.within)


def answer(hits: List[Any], model_name: str, n_tokens: int) -> Dict[str, Any]:
    return {"object": "list", "model": model_name, "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens},
            "data": [{"object": "search_result", "index": i, "ids": list(h.ids),
                      "scores": [float(s) for s in h.scores.tolist()]} for i, h in enumerate(hits)]}
