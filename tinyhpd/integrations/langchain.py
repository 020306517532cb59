"""LangChain: `Embeddings(model=None)` implements `langchain_core.embeddings.Embeddings` with tinyhpd.

```python
from tinyhpd.integrations.langchain import Embeddings
emb = Embeddings()                         # the default model, or Embeddings("path/or/hub-id")
vectors = emb.embed_documents(["a", "b"])  # lists of floats; embed_query for one text; async variants too
```
"""
from __future__ import annotations

from typing import Any, List, Optional

from tinyhpd.integrations import require, resolve_model

_base = require("langchain_core.embeddings", "langchain-core").Embeddings

__all__ = ["Embeddings"]


class Embeddings(_base):
    def __init__(self, model: Any = None, *, batch_size: int = 32, normalize_embeddings: bool = True,
                 num_threads: Optional[int] = None) -> None:
        self.model = resolve_model(model, num_threads)
        self.batch_size = batch_size
        self.normalize_embeddings = normalize_embeddings

    def embed_documents(self, texts: List[str]) -> List[List[float]]:
        vecs = self.model.encode(list(texts), batch_size=self.batch_size,
                                 normalize_embeddings=self.normalize_embeddings)
        return vecs.tolist()

    def embed_query(self, text: str) -> List[float]:
        return self.embed_documents([text])[0]

    async def aembed_documents(self, texts: List[str]) -> List[List[float]]:
        import asyncio

        return await asyncio.get_running_loop().run_in_executor(None, self.embed_documents, list(texts))

    async def aembed_query(self, text: str) -> List[float]:
        return (await self.aembed_documents([text]))[0]
