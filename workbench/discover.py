"""Category discovery for unlabelled prompts: cluster the embeddings, name each cluster.

Clusters come from k-means (``n_clusters`` given, or picked by silhouette over a small range) or
HDBSCAN; names are the cluster's most distinctive terms by class-based TF-IDF (c-TF-IDF, as in
BERTopic): all texts of a cluster are joined into one document, term frequencies are taken per
cluster and weighted by ``log(1 + A / f_t)`` (``A``: average number of terms per cluster,
``f_t``: the term's frequency over all clusters). Stop words are removed; scripts written without
spaces (Chinese, Japanese) are tokenised into character bigrams. Names are editable afterwards.

scikit-learn is imported inside the functions.
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from workbench.errors import MapError
from workbench.safeio import short, short_list
from workbench.vectors import l2_normalize

__all__ = ["Discovery", "discover_categories", "ctfidf_terms", "tokenize"]

#: name given to HDBSCAN's noise points
NOISE_NAME = "unclustered"

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TOKEN_RE = re.compile(rf"[{_CJK}]+|[^\W\d_{_CJK}]{{2,}}", re.UNICODE)
_CJK_RE = re.compile(rf"[{_CJK}]")

# small stop lists for the other languages of the demo set (English comes from scikit-learn)
_EXTRA_STOP = set("""
de la el en los las del se que por un una para con no es al lo como más pero sus le ya
o este sí porque esta entre cuando muy sin sobre también me hasta hay donde quien desde todo
nos durante todos uno les ni contra otros ese eso ante ellos e esto mí antes algunos qué unos yo
otro otras otra él tanto esa estos mucho quienes nada muchos cual poco ella estar estas algunas
algo nosotros mi mis tú te ti tu tus ellas nosotras vosotros os mío mía tuyo suyo cómo cuál
der die und den von zu das mit sich des auf für ist im dem nicht ein eine als auch es an er
hat aus bei sind noch nach wird einer um am werden einen vom wie ich man wenn sie oder
was wir ihr kann mir mich dir dich du ja aber nur so zum zur über sein bis durch mein
dein ihre ihren einem eines warum wo wer welche welcher kann können soll sollte gibt
le la les des du un une et est en que qui dans pour pas sur au avec il elle ce se ne sont
plus par je tu nous vous ils elles mon ton son ma ta sa mes tes ses leur aux ou comment
does did doing make makes explain actually just like really know tell want need think good
best better help way use using used question following answer please
""".split())
_CJK_STOP = {"什么", "怎么", "为什", "么做", "如何", "可以", "一个", "我们", "你们", "这个", "那个",
             "是什", "有什", "的是", "是否", "应该", "吗？", "请问", "一下", "么是", "么样", "哪些"}


def _stop_words() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS) | _EXTRA_STOP


def tokenize(text: str, stop_words: frozenset[str] | set[str] = frozenset()) -> list[str]:
    """Lower-cased word tokens; runs of CJK characters become character bigrams.

    Examples
    --------
    >>> tokenize("Solve the integral 2x dx")
    ['solve', 'the', 'integral', 'dx']
    >>> tokenize("番茄炒蛋")
    ['番茄', '茄炒', '炒蛋']
    """
    out: list[str] = []
    for tok in _TOKEN_RE.findall(text.lower()):
        if _CJK_RE.match(tok):
            grams = [tok] if len(tok) == 1 else [tok[i:i + 2] for i in range(len(tok) - 1)]
            out.extend(g for g in grams if g not in _CJK_STOP and len(g) == 2)
        elif tok not in stop_words:
            out.append(tok)
    return out


def ctfidf_terms(texts: Sequence[str], cluster_ids: Sequence[Any], n_terms: int = 3,
                 stop_words: bool = True) -> dict[Any, list[str]]:
    """The ``n_terms`` most distinctive terms of each cluster by class-based TF-IDF.

    Parameters
    ----------
    texts : sequence of str
    cluster_ids : sequence
        One cluster id per text.
    n_terms : int
    stop_words : bool
        Remove English (and a few Spanish/German/French) stop words.

    Returns
    -------
    dict
        cluster id -> list of terms, most distinctive first (fewer when a cluster has few terms).
    """
    if len(texts) != len(cluster_ids):
        raise MapError(f"got {len(texts)} texts for {len(cluster_ids)} cluster ids")
    stops = _stop_words() if stop_words else frozenset()
    ids = list(dict.fromkeys(cluster_ids))  # first-seen order
    counts: dict[Any, Counter] = {c: Counter() for c in ids}
    for text, c in zip(texts, cluster_ids):
        counts[c].update(tokenize(str(text), stops))
    vocab = sorted(set().union(*counts.values())) if counts else []
    if not vocab:
        return {c: [] for c in ids}
    index = {t: i for i, t in enumerate(vocab)}
    tf = np.zeros((len(ids), len(vocab)), dtype=np.float64)
    for row, c in enumerate(ids):
        for term, n in counts[c].items():
            tf[row, index[term]] = n
    sizes = tf.sum(axis=1, keepdims=True)
    avg_terms = sizes.mean()
    idf = np.log1p(avg_terms / np.maximum(tf.sum(axis=0), 1))
    score = tf / np.maximum(sizes, 1) * idf
    # a term must occur at least twice in a cluster to name it, unless the cluster is tiny
    out: dict[Any, list[str]] = {}
    vocab_arr = np.asarray(vocab, dtype=object)
    for row, c in enumerate(ids):
        s = score[row].copy()
        if (tf[row] >= 2).sum() >= n_terms:
            s[tf[row] < 2] = 0
        order = np.argsort(-s, kind="stable")[:n_terms]
        out[c] = [str(vocab_arr[i]) for i in order if s[i] > 0]
    return out


class Discovery:
    """Discovered categories: a cluster per prompt, a short editable name per cluster.

    Attributes
    ----------
    cluster_ids : numpy.ndarray of int, shape (n,)
        Cluster of each prompt (``-1``: HDBSCAN noise).
    names : dict[int, str]
        Cluster id -> name (edit with :meth:`rename`).
    terms : dict[int, list[str]]
        Cluster id -> its most distinctive terms.
    sizes : dict[int, int]
        Cluster id -> number of prompts.
    method : str
    silhouette : float or None
        Silhouette (cosine) of the clustering in embedding space, when computed.
    """

    def __init__(self, cluster_ids: np.ndarray, names: Mapping[int, str],
                 terms: Mapping[int, list[str]], *, method: str,
                 silhouette: float | None = None, k_scores: Mapping[int, float] | None = None):
        self.cluster_ids = np.asarray(cluster_ids, dtype=int)
        self.names = dict(names)
        self.terms = {c: list(t) for c, t in terms.items()}
        ids, counts = np.unique(self.cluster_ids, return_counts=True)
        self.sizes = {int(c): int(n) for c, n in zip(ids, counts)}
        self.method = method
        self.silhouette = silhouette
        self.k_scores = dict(k_scores or {})

    def __len__(self) -> int:
        return len(self.cluster_ids)

    def __repr__(self) -> str:
        return (f"Discovery({len(self.names)} clusters by {self.method}: "
                f"{', '.join(list(self.names.values())[:6])}{' ...' if len(self.names) > 6 else ''})")

    @property
    def n_clusters(self) -> int:
        """Number of clusters (noise excluded)."""
        return sum(1 for c in self.names if c != -1)

    @property
    def labels(self) -> np.ndarray:
        """Per-prompt category name (object array), following renames."""
        lookup = np.array([self.names[c] for c in sorted(self.names)], dtype=object)
        order = np.searchsorted(np.array(sorted(self.names)), self.cluster_ids)
        return lookup[order]

    def _resolve(self, old: int | str) -> int:
        if isinstance(old, (int, np.integer)) and int(old) in self.names:
            return int(old)
        for c, name in self.names.items():
            if name == old:
                return c
        raise MapError(f"no discovered category {short(old)}; names: {short_list(sorted(self.names.values()), quote=True)} "
                       f"(or a cluster id {sorted(self.names)})")

    def rename(self, old: int | str | Mapping[Any, str], new: str | None = None) -> Discovery:
        """Rename a category (by current name or cluster id); a dict renames several at once.

        Raises
        ------
        MapError
            Unknown category, empty new name, or a name another category already has.

        Examples
        --------
        >>> d.rename("integral-derivative-limit", "calculus")      # doctest: +SKIP
        >>> d.rename({0: "law", 1: "medicine"})                    # doctest: +SKIP
        """
        if isinstance(old, Mapping):
            if new is not None:
                raise MapError("pass either rename({old: new, ...}) or rename(old, new)")
            updates = {self._resolve(o): n for o, n in old.items()}
        else:
            if new is None:
                raise MapError("rename(old, new) needs the new name")
            updates = {self._resolve(old): new}
        names = dict(self.names)
        for c, n in updates.items():
            if not isinstance(n, str) or not n.strip():
                raise MapError(f"new name for category {short(self.names[c])} must be a non-empty "
                               f"string, got {short(n)}")
            names[c] = n.strip()
        seen: dict[str, int] = {}
        for c, n in names.items():
            if n in seen:
                raise MapError(f"name {short(n)} is already used by another category "
                               f"(cluster {seen[n]} and {c}); pick a different name, or "
                               "rename the other one in the same call")
            seen[n] = c
        self.names = names
        return self

    def to_frame(self):
        """A table of the clusters: ``cluster``, ``name``, ``size``, ``terms``."""
        import pandas as pd

        return pd.DataFrame([{"cluster": c, "name": self.names[c], "size": self.sizes.get(c, 0),
                              "terms": ", ".join(self.terms.get(c, []))}
                             for c in sorted(self.names)])

    def assign_to(self, prompts: Any, column: str = "discovered"):
        """A copy of ``prompts`` (a PromptSet) with the names in ``column``.

        Use ``column="category"`` to use the discovered categories for routing.
        """
        if len(prompts) != len(self):
            raise MapError(f"the prompt set has {len(prompts)} prompts but the discovery was "
                           f"made on {len(self)}; pass the same prompts in the same order")
        if not hasattr(prompts, "with_column"):
            raise MapError(f"assign_to needs a PromptSet, got {type(prompts).__name__}")
        return prompts.with_column(column, [str(v) for v in self.labels])


def _unit(X: np.ndarray) -> np.ndarray:
    return l2_normalize(X)


def _kmeans(Z: np.ndarray, k: int, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=k, random_state=seed, n_init=3).fit_predict(Z)


def discover_categories(embeddings: Any, texts: Sequence[str] | Any, *,
                        n_clusters: int | None = None, method: str = "kmeans", seed: int = 0,
                        n_terms: int = 3, k_range: tuple[int, int] = (2, 16),
                        min_cluster_size: int | None = None) -> Discovery:
    """Cluster unlabelled prompts and name each cluster by its distinctive terms.

    Parameters
    ----------
    embeddings : array of shape (n, d)
    texts : sequence of str, or a PromptSet (its texts)
    n_clusters : int or None
        k for k-means; ``None`` tries ``k_range`` (inclusive) and keeps the best silhouette.
    method : {"kmeans", "hdbscan"}
        HDBSCAN finds the number of clusters itself; its noise points are named
        ``"unclustered"``.
    seed : int
    n_terms : int
        Terms per name (names are the terms joined by ``-``, e.g. ``"contract-tort-court"``).
    k_range : (int, int)
        Range of k tried when ``n_clusters`` is None.
    min_cluster_size : int, optional
        HDBSCAN's minimum cluster size (default ``max(5, n // 50)``).

    Returns
    -------
    Discovery

    Examples
    --------
    >>> d = discover_categories(X, prompts.texts, n_clusters=12)   # doctest: +SKIP
    >>> d.rename(d.names[0], "cooking").assign_to(prompts)          # doctest: +SKIP
    """
    if hasattr(texts, "texts") and not isinstance(texts, (list, tuple)):
        texts = texts.texts
    texts = [str(t) for t in texts]
    X = np.asarray(embeddings, dtype=np.float32)
    if X.ndim != 2:
        raise MapError(f"embeddings must be a 2-D array (n, d), got shape {X.shape}")
    if len(X) != len(texts):
        raise MapError(f"got {len(X)} embeddings for {len(texts)} texts; pass one text per row")
    if not np.isfinite(X).all():
        raise MapError("embeddings contain NaN or inf; re-embed or drop those rows")
    if len(X) < 3:
        raise MapError(f"category discovery needs at least 3 prompts, got {len(X)}")
    if n_terms < 1:
        raise MapError(f"n_terms must be >= 1, got {n_terms}")
    Z = _unit(X)
    method = str(method).lower()
    k_scores: dict[int, float] = {}
    sil: float | None = None
    from sklearn.metrics import silhouette_score

    if method == "kmeans":
        if n_clusters is None:
            lo, hi = int(k_range[0]), min(int(k_range[1]), len(X) - 1)
            if lo < 2 or hi < lo:
                raise MapError(f"k_range {k_range} is not usable for {len(X)} prompts; "
                               "pass n_clusters explicitly")
            best = None
            sample = min(len(X), 3000)
            for k in range(lo, hi + 1):
                lab = _kmeans(Z, k, seed)
                if len(np.unique(lab)) < 2:
                    continue
                s = float(silhouette_score(Z, lab, sample_size=sample, random_state=seed))
                k_scores[k] = s
                if best is None or s > best[0]:
                    best = (s, k, lab)
            if best is None:
                raise MapError("k-means found no two distinct clusters; the embeddings may all "
                               "be identical")
            sil, _, labels = best
        else:
            if not isinstance(n_clusters, (int, np.integer)) or not 1 <= n_clusters <= len(X):
                raise MapError(f"n_clusters must be an integer in 1..{len(X)}, got "
                               f"{short(n_clusters)}")
            labels = _kmeans(Z, int(n_clusters), seed)
    elif method == "hdbscan":
        if n_clusters is not None:
            raise MapError("HDBSCAN chooses the number of clusters itself; leave n_clusters=None "
                           "or use method='kmeans'")
        try:
            from sklearn.cluster import HDBSCAN
        except ImportError:  # scikit-learn < 1.3
            raise MapError("method='hdbscan' needs scikit-learn >= 1.3; upgrade it or use "
                           "method='kmeans'") from None
        mcs = int(min_cluster_size or max(5, len(X) // 50))
        labels = HDBSCAN(min_cluster_size=mcs, copy=True).fit_predict(Z)
        if (labels >= 0).sum() == 0:
            raise MapError(f"HDBSCAN put every prompt in noise (min_cluster_size={mcs}); pass a "
                           "smaller min_cluster_size or use method='kmeans'")
    else:
        raise MapError(f"unknown discovery method {short(method)}; use 'kmeans' or 'hdbscan'")
    labels = np.asarray(labels, dtype=int)
    if sil is None and 2 <= len(np.unique(labels)) <= len(X) - 1:
        sil = float(silhouette_score(Z, labels, sample_size=min(len(X), 3000),
                                     random_state=seed))
    terms = ctfidf_terms(texts, labels.tolist(), n_terms=n_terms)
    names = _unique_names(terms)
    return Discovery(labels, names, terms, method=method, silhouette=sil, k_scores=k_scores)


def _unique_names(terms: Mapping[int, list[str]]) -> dict[int, str]:
    names: dict[int, str] = {}
    used: set[str] = set()
    for c in sorted(terms):
        if c == -1:
            base = NOISE_NAME
        else:
            base = "-".join(terms[c]) or f"cluster {c}"
        name = base
        if name in used:
            name = f"{base} ({c})"
        used.add(name)
        names[c] = name
    return names
