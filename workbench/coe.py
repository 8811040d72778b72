"""The CoE runtime: embed -> route -> map -> expert pool -> answer, with a Trace of every step.

A :class:`CoE` ties together an embedder (``encode(texts) -> array``), a category router
(``route(X) -> Routing``, e.g. :class:`~workbench.router.CategoryRouter`), a category-to-expert
map (:class:`~workbench.mapping.CategoryExpertMap`) and an expert pool
(:class:`~workbench.experts.ExpertPool`). Each answer comes with a :class:`Trace`: the category and
its probability, whether the low-confidence fallback rule fired, the expert, the memory tier it was
found in, the switch time, the embed/route/generate times and tokens per second.

A failing expert (a load error, an exception mid-generation) never crashes the runtime: the Trace
carries a clear error and, with ``on_error="fallback"``, the fallback expert answers instead. The
pool releases the failed expert, so it stays consistent and usable.

Examples
--------
>>> coe = CoE(embedder, router, mapping, pool)           # doctest: +SKIP
>>> answer = coe.generate("Solve 2x + 3 = 11")           # doctest: +SKIP
>>> answer.trace.expert, answer.trace.tokens_per_s       # doctest: +SKIP
>>> for chunk in coe.stream("Write a haiku about rain"):  # doctest: +SKIP
...     print(chunk if isinstance(chunk, str) else chunk.trace, end="")
"""
from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

from workbench.constants import FALLBACK_CATEGORY
from workbench.errors import ExpertError, MappingError, WorkbenchError
from workbench.safeio import short
from workbench.trace import Answer, Explanation, Route, Trace

__all__ = ["Answer", "CoE", "Explanation", "Route", "Trace", "ON_ERROR", "explain_routing",
           "routing_text"]

#: What :class:`CoE` does when an expert fails.
ON_ERROR = ("fallback", "raise", "report")


def _check_not_empty(expert: str, text: str, new_tokens: int | None) -> None:
    """An empty answer is a failure of the expert (reported in the trace, the fallback answers)."""
    if not str(text or "").strip():
        made = f" after {new_tokens} new token(s)" if new_tokens is not None else ""
        raise ExpertError(f"expert {expert!r} returned an empty answer{made}; it may be broken "
                          "(corrupt weights, a wrong chat template or end token) or too small for "
                          "this prompt")


def routing_text(prompt: Any) -> Any:
    """The text a prompt is routed on: the prompt itself, or a conversation's latest user turn.

    ``prompt`` may be chat messages (``[{"role": ..., "content": ...}, ...]``); the whole
    conversation goes to the expert, the latest ``user`` message's content decides the route.
    Anything else is returned unchanged (and refused by the prompt checks that follow).
    """
    if isinstance(prompt, (list, tuple)):
        for message in reversed(prompt):
            if isinstance(message, dict) and message.get("role", "user") == "user":
                return message.get("content")
        raise WorkbenchError("a conversation must hold at least one message with role 'user' "
                             f"(its latest user turn is what is routed); got {short(prompt)}")
    return prompt


def explain_routing(embedding: Any, router: Any, mapping: Any = None, *, prompt: str = "",
                    routing: Any = None, row: int = 0) -> Explanation:
    """The routing of one embedded prompt: the rule :class:`CoE` applies, for views and notebooks.

    Parameters
    ----------
    embedding : array of shape (d,) or (1, d)
        The prompt's embedding (or a batch, with ``row`` picking one).
    router : object with ``route(X) -> Routing``
    mapping : CategoryExpertMap, optional
        Picks the expert; without it ``expert`` is ``""``.
    routing : Routing, optional
        An already computed ``router.route(X)`` for the batch (skips routing again).

    Raises
    ------
    MappingError
        The routed category is not in ``mapping`` (as :meth:`CoE.generate` raises); nothing is
        silently sent to the fallback expert.

    Examples
    --------
    >>> ex = explain_routing(embedder.encode(["Solve 2x = 4"]), router, mapping)  # doctest: +SKIP
    >>> ex.category, ex.expert, ex.top(3)                                       # doctest: +SKIP
    """
    import numpy as np

    X = np.asarray(embedding, dtype=np.float32)
    if X.ndim == 1:
        X = X[None, :]
    if routing is None:
        routing = router.route(X)
    category = str(routing.category[row])
    predicted = getattr(routing, "predicted", None)
    proba = getattr(routing, "proba", None)
    classes = getattr(routing, "classes", None)
    probabilities: tuple[tuple[str, float], ...] = ()
    if proba is not None and classes is not None:
        p = np.asarray(proba[row], dtype=float)
        order = np.argsort(-p, kind="stable")
        probabilities = tuple((str(classes[i]), float(p[i])) for i in order)
    return Explanation(
        prompt=prompt, category=category, confidence=float(routing.confidence[row]),
        is_fallback=bool(routing.is_fallback[row]),
        predicted=str(predicted[row]) if predicted is not None else category,
        expert=mapping.expert_for(category) if mapping is not None else "",
        probabilities=probabilities, embedding=X[row])


class CoE:
    """A live Composition of Experts.

    Parameters
    ----------
    embedder : object with ``encode(texts) -> ndarray``
        E.g. :class:`~workbench.embed.Embedder`.
    router : object with ``route(X) -> Routing``
        E.g. a fitted :class:`~workbench.router.CategoryRouter`.
    mapping : CategoryExpertMap
        Category -> expert, fallback category included. Read at every request, so edits (e.g.
        in the map editor) take effect on the next prompt.
    pool : ExpertPool
        Holds every expert the map names.
    on_error : {"fallback", "raise", "report"}
        When the routed expert fails: answer with the fallback expert (the Trace keeps the
        error), raise :class:`~workbench.errors.ExpertError`, or return an empty answer whose
        Trace carries the error.
    fallback_expert : str, optional
        The expert used after a failure; default the map's fallback expert.
    prefetch_next : bool
        In :meth:`generate_batch`, prefetch the next group's expert while the current one
        generates.

    Raises
    ------
    MappingError
        The map names experts the pool does not hold, or misses categories the router predicts.
    """

    def __init__(self, embedder, router, mapping, pool, *, on_error: str = "fallback",
                 fallback_expert: str | None = None, prefetch_next: bool = True) -> None:
        if on_error not in ON_ERROR:
            raise WorkbenchError(f"on_error={on_error!r} is not one of {list(ON_ERROR)}")
        if not hasattr(embedder, "encode"):
            raise WorkbenchError(f"the embedder must have encode(texts); got {type(embedder).__name__}")
        if not hasattr(router, "route"):
            raise WorkbenchError(f"the router must have route(X) (e.g. a fitted CategoryRouter); "
                                 f"got {type(router).__name__}")
        self.embedder = embedder
        self.router = router
        self.mapping = mapping
        self.pool = pool
        self.on_error = on_error
        self._fallback_expert = fallback_expert
        self.prefetch_next = bool(prefetch_next)
        self.check()

    def with_mapping(self, mapping) -> CoE:
        """A CoE over the same embedder, router and pool that routes with ``mapping`` (checked).

        What the app gives each browser session: the heavy objects are shared, the map is the
        session's own, so an edit in one session never changes another's routing.
        """
        return CoE(self.embedder, self.router, mapping, self.pool, on_error=self.on_error,
                   fallback_expert=self._fallback_expert, prefetch_next=self.prefetch_next)

    # ---------------------------------------------------------------------------- validation
    @property
    def fallback_expert(self) -> str:
        """The expert that answers when the routed one fails."""
        return self._fallback_expert or self.mapping.fallback_expert

    def check(self) -> None:
        """Validate map, router and pool against each other (done at construction).

        Raises
        ------
        MappingError
            Naming every unknown expert (with the pool's experts) or unmapped router category.
        """
        assignments = dict(self.mapping.assignments if hasattr(self.mapping, "assignments")
                           else self.mapping)
        pool_names = list(getattr(self.pool, "names", []))
        unknown = {}
        for cat, expert in assignments.items():
            if expert not in self.pool:
                unknown.setdefault(expert, []).append(cat)
        if self._fallback_expert is not None and self._fallback_expert not in self.pool:
            unknown.setdefault(self._fallback_expert, []).append("fallback_expert=")
        if unknown:
            detail = "; ".join(f"{e!r} (for {', '.join(cats)})" for e, cats in unknown.items())
            raise MappingError(
                f"the category-to-expert map names experts the pool does not hold: {detail}. "
                f"The pool holds: {', '.join(pool_names) or '(none)'}. Add an ExpertSpec for each "
                "to the pool, or reassign those categories (mapping.assign(category, expert))")
        classes = getattr(self.router, "classes_", None)
        if classes is not None:
            fb = getattr(self.mapping, "fallback_category", FALLBACK_CATEGORY)
            missing = [str(c) for c in classes if str(c) not in assignments]
            router_fb = getattr(self.router, "fallback_category", fb)
            if router_fb not in assignments:
                missing.append(str(router_fb))
            if missing:
                raise MappingError(
                    f"the router predicts categories the map does not cover: {', '.join(missing)}; "
                    f"map covers: {', '.join(assignments)}. Assign each an expert")

    # ------------------------------------------------------------------------------- routing
    def _embed(self, texts: Sequence[str]):
        import numpy as np

        t0 = time.perf_counter()
        X = np.asarray(self.embedder.encode(list(texts)))
        return X, time.perf_counter() - t0

    def _route_many(self, prompts: Sequence[Any]) -> tuple[list[dict], float, float]:
        explained, embed_s, route_s = self._explain_many([routing_text(p) for p in prompts])
        out = [{"category": e.category, "confidence": e.confidence, "is_fallback": e.is_fallback,
                "predicted": e.predicted, "expert": e.expert} for e in explained]
        return out, embed_s, route_s

    def _explain_many(self, prompts: Sequence[str]) -> tuple[list[Explanation], float, float]:
        from workbench.embed import check_prompt_length

        for p in prompts:
            if not isinstance(p, str) or not p.strip():
                raise WorkbenchError(f"a prompt must be non-empty text, got {short(p)}")
            check_prompt_length(p)  # before tokenizing: a 50 MB prompt would take minutes
        X, embed_s = self._embed(prompts)
        t0 = time.perf_counter()
        routing = self.router.route(X)
        route_s = time.perf_counter() - t0
        out = [explain_routing(X, self.router, self.mapping, prompt=p, routing=routing, row=i)
               for i, p in enumerate(prompts)]
        return out, embed_s, route_s

    def explain(self, prompt: str) -> Explanation:
        """How ``prompt`` is routed (category, confidence, fallback, expert, probabilities); no
        generation. What the Embed view shows.

        Raises
        ------
        MappingError
            The routed category is not in the map, exactly as :meth:`generate` would raise.
        WorkbenchError
            ``prompt`` is empty or too long.

        Examples
        --------
        >>> ex = coe.explain("Solve 2x + 3 = 11")        # doctest: +SKIP
        >>> ex.category, ex.expert, ex.top(3)            # doctest: +SKIP
        """
        explained, _, _ = self._explain_many([prompt])
        return explained[0]

    def route(self, prompt: str) -> Route:
        """Where ``prompt`` would go: ``(category, confidence, is_fallback, expert)``; no generation."""
        routes, _, _ = self._route_many([prompt])
        r = routes[0]
        return Route(r["category"], r["confidence"], r["is_fallback"], r["expert"])

    # ---------------------------------------------------------------------------- generation
    def _trace(self, prompt: Any, r: dict, embed_s: float, route_s: float) -> Trace:
        return Trace(prompt=routing_text(prompt), category=r["category"], confidence=r["confidence"],
                     is_fallback=r["is_fallback"], expert=r["expert"], embed_s=embed_s,
                     route_s=route_s, predicted=r["predicted"], routed_expert=r["expert"])

    @staticmethod
    def _fill(trace: Trace, gen) -> None:
        trace.tier_found = str(getattr(gen, "tier_found", "") or "")
        trace.switch_s = float(getattr(gen, "switch_s", 0.0) or 0.0)
        trace.adapter_s = float(getattr(gen, "adapter_s", 0.0) or 0.0)
        trace.generate_s = float(getattr(gen, "seconds", 0.0) or 0.0)
        trace.new_tokens = int(getattr(gen, "new_tokens", 0) or 0)
        trace.tokens_per_s = float(getattr(gen, "tokens_per_s", 0.0) or 0.0)
        trace.stop_reason = str(getattr(gen, "stop_reason", "") or "")

    @staticmethod
    def _describe(expert: str, exc: BaseException) -> str:
        msg = str(exc)
        if expert in msg:
            return f"{type(exc).__name__}: {msg}"
        return f"expert {expert!r} failed: {type(exc).__name__}: {msg}"

    def _can_fall_back(self, trace: Trace) -> bool:
        return self.on_error == "fallback" and self.fallback_expert != trace.expert

    def _failed(self, trace: Trace, exc: BaseException) -> None:
        trace.error = self._describe(trace.expert, exc)
        if self.on_error == "raise":
            if isinstance(exc, ExpertError):
                raise exc
            raise ExpertError(trace.error) from exc

    def _generate_checked(self, expert: str, prompt: str, gen: dict):
        out = self.pool.generate(expert, prompt, **gen)
        _check_not_empty(expert, getattr(out, "text", ""), getattr(out, "new_tokens", None))
        return out

    def _answer(self, prompt: str, trace: Trace, gen: dict, t_start: float) -> Answer:
        """Generate with the routed expert; on failure fall back / raise / report."""
        try:
            out = self._generate_checked(trace.expert, prompt, gen)
        except Exception as exc:  # noqa: BLE001 - any expert failure is reported, not fatal
            self._failed(trace, exc)
            if not self._can_fall_back(trace):
                trace.total_s = time.perf_counter() - t_start
                return Answer("", trace)
            trace.expert, trace.used_fallback_expert = self.fallback_expert, True
            try:
                out = self._generate_checked(trace.expert, prompt, gen)
            except Exception as exc2:  # noqa: BLE001
                trace.error += f"; the fallback expert {trace.expert!r} failed too: " \
                               f"{type(exc2).__name__}: {exc2}"
                trace.total_s = time.perf_counter() - t_start
                return Answer("", trace)
        self._fill(trace, out)
        trace.total_s = time.perf_counter() - t_start
        return Answer(out.text, trace)

    def _forced(self, route: dict, expert: str | None) -> dict:
        """``route`` answered by ``expert`` instead of the mapped one (None: as mapped)."""
        if expert is None:
            return route
        if expert not in self.pool:
            raise ExpertError(f"unknown expert {short(expert)}; the pool holds: "
                              f"{', '.join(getattr(self.pool, 'names', [])) or '(none)'}")
        return dict(route, expert=expert)

    def generate(self, prompt: str | list[dict], *, expert: str | None = None, **gen: Any) -> Answer:
        """Route ``prompt`` and answer it with the mapped expert.

        Parameters
        ----------
        prompt : str or list of dict
            Text, or chat messages (routed on the latest user turn, answered from the whole
            conversation).
        expert : str, optional
            Answer with this expert instead of the mapped one (the trace keeps the routing).
        **gen
            Generation settings for the expert (``max_new_tokens``, ``do_sample`` ...).

        Returns
        -------
        Answer
            ``.text`` and ``.trace``.

        Raises
        ------
        ExpertError
            Only with ``on_error="raise"``, when the routed expert fails.
        """
        t0 = time.perf_counter()
        routes, embed_s, route_s = self._route_many([prompt])
        trace = self._trace(prompt, self._forced(routes[0], expert), embed_s, route_s)
        return self._answer(prompt, trace, gen, t0)

    def stream(self, prompt: str | list[dict], *, expert: str | None = None,
               **gen: Any) -> Iterator[str | Answer]:
        """Route ``prompt``, then yield the answer's text chunks as generated, then the :class:`Answer`.

        If the routed expert fails mid-stream, the chunks already yielded stay yielded; with
        ``on_error="fallback"`` the fallback expert's chunks follow, and the final Answer holds the
        fallback expert's text only, its Trace the error.
        """
        t0 = time.perf_counter()
        routes, embed_s, route_s = self._route_many([prompt])
        trace = self._trace(prompt, self._forced(routes[0], expert), embed_s, route_s)
        while True:
            chunks: list[str] = []
            try:
                stream = self.pool.stream(trace.expert, prompt, **gen)
                for chunk in stream:
                    chunks.append(chunk)
                    yield chunk
                generation = getattr(stream, "generation", None)
                _check_not_empty(trace.expert, generation.text if generation is not None else "".join(chunks),
                                 getattr(generation, "new_tokens", None))
            except Exception as exc:  # noqa: BLE001
                if trace.used_fallback_expert:
                    trace.error += f"; the fallback expert {trace.expert!r} failed too: " \
                                   f"{type(exc).__name__}: {exc}"
                    trace.total_s = time.perf_counter() - t0
                    yield Answer("", trace)
                    return
                self._failed(trace, exc)
                if not self._can_fall_back(trace):
                    trace.total_s = time.perf_counter() - t0
                    yield Answer("", trace)
                    return
                trace.expert, trace.used_fallback_expert = self.fallback_expert, True
                continue
            text = "".join(chunks)
            if generation is not None:
                self._fill(trace, generation)
                text = generation.text or text
            trace.total_s = time.perf_counter() - t0
            yield Answer(text, trace)
            return

    def generate_batch(self, prompts: Sequence[str], **gen: Any) -> list[Answer]:
        """Answer many prompts, grouped by expert to cut switches; results in input order.

        All prompts are embedded and routed in one call each. Groups run one expert after the
        other, starting with an expert already resident in the fastest tier; with
        ``prefetch_next`` the next group's expert is prefetched while the current one generates.
        Each Trace's ``embed_s`` and ``route_s`` are the batch's times divided by its size.
        """
        prompts = list(prompts)
        if not prompts:
            return []
        routes, embed_s, route_s = self._route_many(prompts)
        n = len(prompts)
        traces = [self._trace(p, r, embed_s / n, route_s / n) for p, r in zip(prompts, routes)]
        groups: dict[str, list[int]] = {}
        for i, t in enumerate(traces):
            groups.setdefault(t.expert, []).append(i)
        order = self._group_order(list(groups))
        answers: list[Answer | None] = [None] * n
        for k, expert in enumerate(order):
            if self.prefetch_next and k + 1 < len(order) and hasattr(self.pool, "prefetch"):
                try:
                    self.pool.prefetch(order[k + 1])
                except Exception:  # noqa: BLE001 - prefetch is only a hint
                    pass
            for i in groups[expert]:
                answers[i] = self._answer(prompts[i], traces[i], gen, time.perf_counter())
        for a in answers:
            assert a is not None
            a.trace.total_s += (embed_s + route_s) / n
        return answers  # type: ignore[return-value]

    def _group_order(self, experts: list[str]) -> list[str]:
        """Experts in first-seen order, those already resident on the fastest tier first."""
        rank = {"gpu": 0, "cpu": 1}
        try:
            tiers = {r["expert"]: r.get("tier", "disk") for r in self.pool.residency()}
        except Exception:  # noqa: BLE001 - residency is optional
            tiers = {}
        return sorted(experts, key=lambda e: rank.get(str(tiers.get(e, "disk")).split("+")[0], 2))

    # ------------------------------------------------------------------------------- bundles
    def save(self, folder: str | os.PathLike, **options: Any):
        """Write this CoE as a portable bundle folder (see :func:`workbench.serve.save_coe`)."""
        from workbench.serve.bundle import save_coe

        return save_coe(self, folder, **options)

    @classmethod
    def load(cls, folder: str | os.PathLike, **options: Any) -> CoE:
        """Load a bundle written by :meth:`save`, validating it (see :func:`workbench.serve.load_coe`)."""
        from workbench.serve.bundle import load_coe

        return load_coe(folder, **options)

    def __repr__(self) -> str:
        used = getattr(self.mapping, "experts_used", None)
        return (f"CoE({len(getattr(self.pool, 'names', []))} experts in the pool, map uses "
                f"{used}, on_error={self.on_error!r})")
