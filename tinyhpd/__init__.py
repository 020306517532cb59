"""tinyhpd: compact sentence embeddings (HPD and other sentence-transformers BERT models) with a NumPy forward pass."""
from __future__ import annotations

import threading
from typing import Any, Dict, Optional, Tuple

from tinyhpd.cross_encoder import CrossEncoder
from tinyhpd.index import Hits, Index
from tinyhpd.model import Model, load

__all__ = ["Model", "load", "encode", "serve", "CrossEncoder", "Index", "Hits", "__version__"]
__version__ = "0.2.0"

_CACHE: Dict[Tuple[Optional[str], Optional[str]], Model] = {}
_CACHE_LOCK = threading.Lock()


def encode(sentences: Any, *, model: Optional[Any] = None, revision: Optional[str] = None, **kwargs: Any):
    """Embed sentences with `model` (a Model, a folder, a Hub id, or None for the default); see `Model.encode`."""
    if not isinstance(model, Model):
        key = (None if model is None else str(model), revision)
        with _CACHE_LOCK:
            if key not in _CACHE:
                _CACHE[key] = load(key[0], revision=revision)
            model = _CACHE[key]
    return model.encode(sentences, **kwargs)


def serve(model: Optional[Any] = None, **kwargs: Any) -> int:
    """Serve `model` over HTTP (OpenAI-compatible /v1/embeddings); see `tinyhpd.server.serve` (needs the [serve] extra)."""
    from tinyhpd.server import serve as _serve

    return _serve(model, **kwargs)
