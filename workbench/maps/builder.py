"""Background maps: :class:`MapBuilder` hands out a cached (or PCA) map at once and computes
UMAP/t-SNE in a **separate process**.

umap-learn compiles its numba kernels for ~40 s on the first call in each process, and the
compilation holds the GIL, so the work runs in a ``spawn`` child (:func:`_warm_worker`, a
module-level function so the child can import it by name) that writes the disk cache and sends
the coordinates back through a pipe.
"""
from __future__ import annotations

import concurrent.futures
import os
import threading
import traceback
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from workbench.errors import MapError, MapTimeoutError
from workbench.maps.map import Map, as_embeddings
from workbench.maps.projection import (
    cached_map,
    check_method_name,
    check_sizes,
    default_params,
    project,
)
from workbench.safeio import short

__all__ = ["MapBuilder"]


def _warm_worker(conn: Any, X: np.ndarray, method: str, seed: int | None, metric: str,
                 params: dict[str, Any], cache: bool, cache_root: str | None) -> None:
    """Run in a spawned process: compute the map, write the cache, send coords back."""
    try:
        if cache_root:
            os.environ["COE_WORKBENCH_CACHE"] = cache_root
        m = project(X, method, seed=seed, cache=cache, metric=metric, **params)
        conn.send(("ok", m.coords, m.metadata()))
    except BaseException as exc:  # noqa: BLE001 - everything must come back to the parent
        try:
            conn.send(("error", type(exc).__name__, str(exc), traceback.format_exc()))
        except Exception:
            pass
    finally:
        conn.close()


class _Job:
    def __init__(self, method: str) -> None:
        self.method = method
        self.future: concurrent.futures.Future = concurrent.futures.Future()
        self.process: Any = None


class MapBuilder:
    """Hand out a map at once, compute the slow ones in a background process.

    ``first()`` returns a cached UMAP/t-SNE map when one exists, else a PCA map (milliseconds).
    ``warm("umap")`` starts a **separate process** (numba compilation holds the GIL and would
    freeze a notebook or app for ~40 s) that computes the map and writes the disk cache;
    ``ready``, ``result`` and ``on_ready`` hand it back.

    Parameters
    ----------
    embeddings : array of shape (n, d)
    cache : bool
        Use the disk cache (``cache_dir("maps")``).
    seed : int
        Random seed for every map.
    metric : str
        Distance in embedding space.

    Examples
    --------
    >>> builder = MapBuilder(X)                 # doctest: +SKIP
    >>> m = builder.first()                     # cached UMAP, else PCA, at once   # doctest: +SKIP
    >>> builder.warm("umap")                    # doctest: +SKIP
    >>> builder.on_ready(lambda m: print(m))    # doctest: +SKIP
    >>> umap_map = builder.result("umap", timeout=120)   # doctest: +SKIP
    """

    def __init__(self, embeddings: Any, *, cache: bool = True, seed: int | None = 0,
                 metric: str = "cosine") -> None:
        self.embeddings = as_embeddings(embeddings)
        self.cache = cache
        self.seed = seed
        self.metric = metric
        self._jobs: dict[str, _Job] = {}
        self._callbacks: list[tuple[Callable[[Map], Any], Callable[[Exception], Any] | None,
                                    str | None]] = []
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        state = {m: ("ready" if j.future.done() else "running") for m, j in self._jobs.items()}
        return f"MapBuilder(n={len(self.embeddings)}, jobs={state})"

    # -- immediate maps -----------------------------------------------------------------------
    def cached(self, method: str, **params: Any) -> Map | None:
        """The cached map of ``method`` with these params, or ``None`` (no umap import)."""
        if not self.cache:
            return None
        return cached_map(self.embeddings, method, seed=self.seed, metric=self.metric, **params)

    def first(self, prefer: Iterable[str] = ("umap", "tsne")) -> Map:
        """A map at once: a finished or cached map of a preferred method, else PCA.

        Looks, in order of ``prefer``, for a map finished by :meth:`warm` in this builder or a
        cached one with default parameters; then for a cached one with any parameters; then
        computes PCA (milliseconds, cached too). Never imports umap or openTSNE.
        """
        if isinstance(prefer, str):
            prefer = (prefer,)
        for method in prefer:
            job = self._jobs.get(check_method_name(method))
            if job is not None and job.future.done() and job.future.exception() is None:
                return job.future.result()
            hit = self.cached(method)
            if hit is not None:
                return hit
        if self.cache:  # a map of a preferred method with other parameters is still better
            for method in prefer:
                hit = cached_map(self.embeddings, method, seed=self.seed, metric=self.metric,
                                 any_params=True)
                if hit is not None:
                    return hit
        return project(self.embeddings, "pca", seed=self.seed, cache=self.cache,
                       metric=self.metric)

    # -- background work ----------------------------------------------------------------------
    def warm(self, method: str = "umap", **params: Any) -> MapBuilder:
        """Start computing ``method`` in a separate process (no-op if cached or running).

        Returns ``self`` so calls chain: ``MapBuilder(X).warm("umap").first()``.
        """
        m = check_method_name(method)
        metric = params.pop("metric", self.metric)
        full = default_params(m, metric=metric, **params)
        check_sizes(m, len(self.embeddings), full)
        with self._lock:
            old = self._jobs.get(m)
            if old is not None and not old.future.done():
                return self
            job = _Job(m)
            self._jobs[m] = job
        hit = (cached_map(self.embeddings, m, seed=self.seed, metric=metric, **params)
               if self.cache else None)
        if hit is not None:
            self._finish(job, hit)
            return self
        import multiprocessing as mp

        from workbench._paths import cache_dir

        ctx = mp.get_context("spawn")
        recv, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(
            target=_warm_worker, name=f"coe-workbench-{m}-map", daemon=True,
            args=(send, self.embeddings, m, self.seed, metric, params, self.cache,
                  str(cache_dir().resolve())),
        )
        proc.start()
        send.close()
        job.process = proc
        threading.Thread(target=self._watch, args=(job, recv, proc), daemon=True,
                         name=f"coe-workbench-{m}-watch").start()
        return self

    def _watch(self, job: _Job, recv: Any, proc: Any) -> None:
        try:
            msg = recv.recv()
        except (EOFError, OSError):
            msg = None
        finally:
            recv.close()
        proc.join(timeout=30)
        if msg is None:
            err = MapError(f"the background {job.method} map process stopped without a result "
                           f"(exit code {proc.exitcode}); it may have run out of memory or been "
                           "killed. Call warm() again or use project(...) directly")
            self._fail(job, err)
        elif msg[0] == "ok":
            _, coords, meta = msg
            result = Map(coords, meta["method"], meta["params"], key=meta["key"],
                         seed=meta["seed"], embeddings=self.embeddings)
            self._finish(job, result)
        else:
            _, kind, text, tb = msg
            err = MapError(f"the background {job.method} map failed: {kind}: {text}")
            err.worker_traceback = tb  # type: ignore[attr-defined]
            self._fail(job, err)

    def _finish(self, job: _Job, result: Map) -> None:
        with self._lock:  # with on_ready's lock: each callback sees each result exactly once
            job.future.set_result(result)
            callbacks = list(self._callbacks)
        for cb, _, method in callbacks:
            if method in (None, job.method):
                self._call(cb, result)

    def _fail(self, job: _Job, err: Exception) -> None:
        with self._lock:
            job.future.set_exception(err)
            callbacks = list(self._callbacks)
        for _, on_error, method in callbacks:
            if on_error is not None and method in (None, job.method):
                self._call(on_error, err)

    @staticmethod
    def _call(fn: Callable[[Any], Any], arg: Any) -> None:
        try:
            fn(arg)
        except Exception:  # a failing callback must not kill the watcher
            warnings.warn(f"MapBuilder callback {fn!r} raised:\n{traceback.format_exc()}",
                          stacklevel=2)

    def ready(self, method: str = "umap") -> bool:
        """Whether the background map of ``method`` is finished (successfully or not)."""
        job = self._jobs.get(check_method_name(method))
        return job is not None and job.future.done()

    def running(self) -> list[str]:
        """Methods still being computed in the background."""
        return [m for m, j in self._jobs.items() if not j.future.done()]

    def result(self, method: str = "umap", timeout: float | None = None) -> Map:
        """Wait for and return the background map of ``method``.

        Raises
        ------
        MapTimeoutError
            Not finished within ``timeout`` seconds (the work goes on; call again later).
        MapError
            The worker failed, or ``warm(method)`` was never called and nothing is cached.
        """
        m = check_method_name(method)
        job = self._jobs.get(m)
        if job is None:
            hit = self.cached(m)
            if hit is not None:
                return hit
            raise MapError(f"no background {m} map: call warm({short(m)}) first")
        try:
            return job.future.result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            raise MapTimeoutError(f"the {m} map is not ready after {timeout} s; it is still "
                                  "computing in the background (check ready() or call result() "
                                  "again)") from None

    def on_ready(self, callback: Callable[[Map], Any], *, method: str | None = None,
                 on_error: Callable[[Exception], Any] | None = None) -> MapBuilder:
        """Call ``callback(map)`` when a background map (of ``method``, or any) is finished.

        Callbacks run in a background thread; in a Panel app schedule UI updates with
        ``pn.state.execute``. Maps already finished are handed over at once. ``on_error(exc)``
        receives failures.
        """
        m = check_method_name(method) if method is not None else None
        with self._lock:
            self._callbacks.append((callback, on_error, m))
            done = [j for k, j in self._jobs.items() if j.future.done() and m in (None, k)]
        for job in done:
            exc = job.future.exception()
            if exc is None:
                self._call(callback, job.future.result())
            elif on_error is not None:
                self._call(on_error, exc)
        return self

    def close(self) -> None:
        """Stop background processes that are still running."""
        for job in self._jobs.values():
            proc = job.process
            if proc is not None and proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)

    def __enter__(self) -> MapBuilder:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
