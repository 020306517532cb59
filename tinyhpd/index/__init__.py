"""Semantic retrieval: `Index`, an exact cosine top-k index over sentence embeddings with compact storage.

Modules: index.py (the Index class: add, remove, search, save/load), codecs.py (one class per storage type: encode,
decode, chunk scores and their error bound, manifest part), kernels.py (float32 chunk scores of float16/int8 codes,
threads), ann.py (the HNSW graph, faiss, over the index's codes), ids.py (row <-> id table), topk.py (top-k
selection and Hamming distances), store.py (files on disk: safetensors vectors, manifest, model identity), checks.py
(constants, `Hits`, argument checks). See index.py's docstring for the storage types and guarantees.
"""
from tinyhpd.index.checks import DTYPES, FORMAT_VERSION, Hits
from tinyhpd.index.index import Index

__all__ = ["Index", "Hits", "DTYPES", "FORMAT_VERSION"]
