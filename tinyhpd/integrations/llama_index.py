"""LlamaIndex: `TinyHPDEmbedding(model=None)`, a `llama_index.core` BaseEmbedding backed by tinyhpd.

```python
from tinyhpd.integrations.llama_index import TinyHPDEmbedding
Settings.embed_model = TinyHPDEmbedding()   # or TinyHPDEmbedding("path/or/hub-id")
```
"""
from __future__ import annotations

from typing import Any, List, Optional

from tinyhpd.integrations import require, resolve_model

_base = require("llama_index.core.base.embeddings.base", "llama-index-core").BaseEmbedding

__all__ = ["TinyHPDEmbedding"]


class TinyHPDEmbedding(_base):
    normalize_embeddings: bool = True

    def __init__(self, model: Any = None, *, embed_batch_size: int = 32, normalize_embeddings: bool = True,
                 num_threads: Optional[int] = None, **kwargs: Any) -> None:
        m = resolve_model(model, num_threads)
        super().__init__(model_name=str(m.name_or_path), embed_batch_size=embed_batch_size,
                         normalize_embeddings=normalize_embeddings, **kwargs)
        object.__setattr__(self, "_tinyhpd_model", m)

    @classmethod
    def class_name(cls) -> str:
        return "TinyHPDEmbedding"

    def _encode(self, texts: List[str]) -> List[List[float]]:
        return self._tinyhpd_model.encode(list(texts), batch_size=self.embed_batch_size,
                                          normalize_embeddings=self.normalize_embeddings).tolist()

    def _get_query_embedding(self, query: str) -> List[float]:
        return self._encode([query])[0]

    def _get_text_embedding(self, text: str) -> List[float]:
        return self._encode([text])[0]

    def _get_text_embeddings(self, texts: List[str]) -> List[List[float]]:
        return self._encode(texts)

    async def _aget_query_embedding(self, query: str) -> List[float]:
        return self._get_query_embedding(query)

    async def _aget_text_embedding(self, text: str) -> List[float]:
        return self._get_text_embedding(text)
