"""The demo bundle: prompts, embedder, router, experts, scores, map, pool and CoE in one object.

:func:`build_demo_bundle` builds it for either kind of demo expert:

``"real"`` (the default)
    SmolLM2-135M-Instruct as the generalist and LoRA specialists fine-tuned from it
    (:mod:`workbench.demo.real`): answers a user can read.
``"tiny"``
    Tiny Llama-architecture LMs trained from scratch in a few minutes (:mod:`workbench.demo.tiny`):
    the same code path, for fast tests (``coe-workbench demo --tiny`` or ``COE_DEMO_KIND=tiny``).
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from workbench._paths import atomic_write_text
from workbench.demo.data import demo_frame
from workbench.demo.tiny import DemoError, DemoExperts, load_demo_config, train_demo_experts

#: The kinds of demo expert :func:`build_demo_bundle` builds.
DEMO_KINDS = ("real", "tiny")

# --------------------------------------------------------------------------------------------
# the demo bundle
# --------------------------------------------------------------------------------------------

#: Scores of the demo map: the per-token probability of the reference answer (``exp`` of the mean
#: per-token log-likelihood) on held-out prompts; see :mod:`workbench.livescore`.
DEMO_SCORE = "token_prob"

#: Default budget of the tiny demo's map: this far from the cheapest feasible map (0) to the average
#: active parameters of the best unconstrained map (1), so the default budget binds. The real demo's
#: experts share one base (their sizes differ by the adapters only), so its default is the best map (1).
DEFAULT_BUDGET_POSITION = 0.75
REAL_BUDGET_POSITION = 1.0

#: Target share of low-confidence prompts sent to the fallback category (threshold chosen on the
#: held-out prompts, which the router was not fitted on).
DEFAULT_FALLBACK_RATE = 0.05


@dataclass
class DemoBundle:
    """Everything the offline demo needs, built (or loaded from the cache) by :func:`build_demo_bundle`.

    Attributes
    ----------
    prompts : PromptSet
        The demo prompt set (12 categories, reference answers).
    embedder : Embedder
        The default sentence encoder (all-MiniLM-L6-v2, offline).
    embeddings : ndarray
        Embeddings of ``prompts`` (rows follow ``prompts``).
    router : CategoryRouter
        Fitted on the training split, with a low-confidence threshold chosen on the held-out one.
    scores : ExpertScores
        Live scores of every demo expert on the held-out prompts (``token_prob``).
    live_scores : DataFrame
        The per-prompt log-likelihood table behind ``scores`` (see :func:`workbench.livescore.loglik_frame`).
    registry : ModelRegistry
        Parameter counts of the demo experts (billions).
    mapping : CategoryExpertMap
        The map optimised at ``budget_b``.
    specs : list of ExpertSpec
        The experts as the pool sees them (ordinary Hugging Face checkpoints).
    pool : ExpertPool
    coe : CoE
    experts : DemoExperts or RealDemoExperts
        Training metadata (sizes, steps, time, losses) and the held-out split.
    budget_b : float
        The map's budget on average active parameters (billions).
    router_accuracy : float
        Router accuracy on the held-out prompts (before the fallback rule).
    kind : str
        ``"real"`` or ``"tiny"``.
    """

    prompts: Any
    embedder: Any
    embeddings: Any
    router: Any
    scores: Any
    live_scores: Any
    registry: Any
    mapping: Any
    specs: list
    pool: Any
    coe: Any
    experts: Any
    budget_b: float
    router_accuracy: float = float("nan")
    kind: str = "real"

    @property
    def train_ids(self) -> list[str]:
        return self.experts.train_ids

    @property
    def held_out_ids(self) -> list[str]:
        return self.experts.held_out_ids

    @property
    def score_description(self) -> str:
        """What the map's scores measure, in words for the views and the summary."""
        return (f"per-token probability of the reference answer, averaged over the "
                f"{len(self.held_out_ids)} held-out prompts (higher is better; each category "
                "weighted by its share of the prompts)")

    def category_scores(self):
        """Category (rows) x expert (columns) mean held-out score, the optimiser's input."""
        return self.scores.category_means()

    def specialist_margins(self, score: str = DEMO_SCORE):
        """Each specialist against the generalist on its own categories, on the held-out prompts.

        One row per (specialist, category): both experts' mean score, the mean of the per-prompt
        differences, its standard error (paired, over the category's held-out prompts) and
        ``z = diff / se``. A margin is larger than the split noise when ``z`` is well above 2.
        """
        import numpy as np
        import pandas as pd

        generalist = self.experts.generalist
        wide = self.live_scores.pivot_table(index=["prompt_id", "category"], columns="expert",
                                            values=score).reset_index()
        rows = []
        for name, info in self.experts.info.items():
            for cat in info.get("categories") or []:
                part = wide[wide["category"] == cat]
                diff = part[name] - part[generalist]
                se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else float("nan")
                rows.append({"specialist": name, "category": cat, "prompts": len(diff),
                             "generalist": float(part[generalist].mean()), "specialist_score": float(part[name].mean()),
                             "difference": float(diff.mean()), "std_error": se,
                             "z": float(diff.mean() / se) if se and se > 0 else float("nan"),
                             "map_sends_to": self.mapping.expert_for(cat)})
        return pd.DataFrame(rows)

    def summary(self) -> str:
        """A few lines: prompts, experts with sizes, router accuracy, the map and its metrics."""
        from workbench.registry import format_params

        cats = sorted(set(map(str, self.prompts.categories)))
        lines = [f"demo prompts: {len(self.prompts)} in {len(cats)} categories "
                 f"({len(self.train_ids)} train / {len(self.held_out_ids)} held out)",
                 "experts: " + ", ".join(f"{s.name} ({format_params(self.experts.n_params(s.name) / 1e9)})"
                                         for s in self.specs),
                 f"router: held-out accuracy {self.router_accuracy:.3f}, fallback threshold "
                 f"{self.router.threshold:.3f}",
                 f"map (budget {format_params(self.budget_b)} average active parameters): "
                 + ", ".join(f"{c} -> {e}" for c, e in self.mapping.items())]
        try:
            m = self.mapping.metrics(self.scores, self.registry)
            lines.append(f"expected held-out score {m.expected_score:.4f} at "
                         f"{format_params(m.average_active_params_b)} average active parameters: "
                         f"{self.score_description}")
        except Exception:  # noqa: BLE001 - metrics are informative only
            pass
        return "\n".join(lines)


def _score_tiny_experts(experts: DemoExperts, prompts, *, progress: bool, max_length: int):
    """Per-prompt live scores of every demo expert on the held-out prompts (cached as CSV)."""
    import pandas as pd

    from workbench.livescore import loglik_frame

    path = experts.root / f"live_scores-{DEMO_SCORE}-{max_length}.csv"
    if path.exists():
        frame = pd.read_csv(path, dtype={"prompt_id": str, "category": str, "expert": str})
        if set(frame["expert"]) == set(experts.names):
            return frame
    held = prompts.subset(experts.held_out_ids) if hasattr(prompts, "subset") else \
        demo_frame(prompts).set_index("id").loc[experts.held_out_ids].reset_index()
    frames = [loglik_frame(experts.paths[name], held, name=name, batch_size=16,
                           max_length=max_length, device="cpu", progress=progress)
              for name in experts.names]
    frame = pd.concat(frames, ignore_index=True)
    atomic_write_text(path, frame.to_csv(index=False))
    return frame


def build_demo_bundle(*, cache_dir: str | os.PathLike | None = None, seed: int = 0,
                      progress: bool = True, force: bool = False, budget_b: float | None = None,
                      spec_file: str | os.PathLike | Mapping | None = None, embedder=None,
                      gpu_memory: int | str | None = "auto", cpu_memory: int | str = "1500MiB",
                      on_error: str = "fallback", kind: str | None = None,
                      adapter_dir: str | os.PathLike | None = None) -> DemoBundle:
    """Build (or load from the cache) the offline demo: prompts, embedder, router, map, experts, CoE.

    The real demo (the default) converts SmolLM2-135M-Instruct's GGUF into a checkpoint once
    (about 20 s), uses the LoRA adapters and held-out scores shipped in ``data/demo_adapters``
    and embeds the prompts (cached): well under two minutes on a fresh install. The tiny demo
    trains its experts on the first call (about 5 CPU-minutes) and caches them. Later calls load
    everything from the caches and take seconds.

    Parameters
    ----------
    kind : {"real", "tiny"}, optional
        Which demo experts. Default: ``$COE_DEMO_KIND``, else ``"tiny"`` when ``spec_file`` is a
        tiny spec (experts with an ``architecture``), else ``"real"``.
    cache_dir : path, optional
        Tiny demo: where the experts go; default ``cache_dir("demo-experts", <version+seed hash>)``.
    adapter_dir : path, optional
        Real demo: the adapters' folder (default ``data/demo_adapters``).
    seed : int
        Seeds the held-out split and the training; the same seed gives the same experts.
    progress : bool
        Progress bars for training, scoring and embedding.
    force : bool
        Retrain and rescore even if cached (real demo: retrain the adapters, about 12 minutes on 2 cores).
    budget_b : float, optional
        Budget of the map on average active parameters, in billions. Default: the best map for
        the real demo; for the tiny one, three quarters (:data:`DEFAULT_BUDGET_POSITION`) of the
        way from the cheapest feasible map to the best unconstrained one, so the budget shapes it.
        A budget below the cheapest feasible map raises
        :class:`~workbench.errors.InfeasibleBudgetError` naming the smallest one.
    spec_file : path or mapping, optional
        The demo experts' spec (``data/demo_real.yaml`` or ``data/demo_experts.yaml``).
    embedder : Embedder, optional
        Default: ``Embedder()`` (all-MiniLM-L6-v2, offline).
    gpu_memory, cpu_memory
        The expert pool's tier budgets.
    on_error : str
        The CoE's policy for failing experts.

    Returns
    -------
    DemoBundle

    Examples
    --------
    >>> bundle = build_demo_bundle()                                # doctest: +SKIP
    >>> print(bundle.summary())                                     # doctest: +SKIP
    >>> bundle.coe.generate("Solve 2x+3=11").trace.expert           # doctest: +SKIP
    """
    import numpy as np

    from workbench.coe import CoE
    from workbench.embed import Embedder
    from workbench.experts import ExpertPool, registry_for
    from workbench.livescore import scores_from_frame
    from workbench.mapping import optimize_mapping, pareto_frontier
    from workbench.prompts import load_demo_prompts
    from workbench.router import CategoryRouter

    kind = _demo_kind(kind, spec_file)
    prompts = load_demo_prompts()
    if kind == "real":
        from workbench.demo.real import load_real_demo_experts

        experts = load_real_demo_experts(prompts, spec_file=spec_file, adapter_dir=adapter_dir,
                                         seed=seed, progress=progress, retrain=force)
        frame = experts.live_scores(prompts, progress=progress, force=force)
        position = REAL_BUDGET_POSITION
    else:
        experts = train_demo_experts(prompts, spec_file=spec_file, seed=seed, root=cache_dir,
                                     progress=progress, force=force)
        config = load_demo_config(spec_file)
        if force:
            for old in experts.root.glob("live_scores-*.csv"):
                old.unlink()
        frame = _score_tiny_experts(experts, prompts, progress=progress,
                                    max_length=int(config.training["max_length"]))
        position = DEFAULT_BUDGET_POSITION
    scores = scores_from_frame(frame, score=DEMO_SCORE)

    embedder = embedder if embedder is not None else Embedder(progress=progress)
    X = embedder.embed(prompts)
    ids = np.asarray(prompts.ids, dtype=str)
    y = np.asarray(prompts.categories, dtype=str)
    pos = {pid: i for i, pid in enumerate(ids)}
    train = np.array([pos[i] for i in experts.train_ids])
    held = np.array([pos[i] for i in experts.held_out_ids])
    router = CategoryRouter(head="logreg").fit(X[train], y[train])
    router_accuracy = float(np.mean(router.predict(X[held]) == y[held]))
    router.choose_threshold(X[held], y[held], target_fallback_rate=DEFAULT_FALLBACK_RATE)

    specs = experts.specs()
    registry = registry_for(specs)  # LoRA specialists share the generalist's base: resident once
    means, weights = scores.category_means(), scores.category_weights()
    if budget_b is None:
        frontier = pareto_frontier(means, weights, registry, fallback_expert=experts.generalist)
        cheapest, best = frontier[0].budget_b, frontier[-1].average_active_params_b
        budget_b = cheapest + position * (best - cheapest)
    mapping = optimize_mapping(means, weights, registry, budget_active_b=float(budget_b),
                               fallback_expert=experts.generalist)
    pool = ExpertPool(specs, gpu_memory=gpu_memory, cpu_memory=cpu_memory)
    coe = CoE(embedder, router, mapping, pool, on_error=on_error)
    return DemoBundle(prompts=prompts, embedder=embedder, embeddings=X, router=router,
                      scores=scores, live_scores=frame, registry=registry, mapping=mapping,
                      specs=specs, pool=pool, coe=coe, experts=experts, budget_b=float(budget_b),
                      router_accuracy=router_accuracy, kind=kind)


def _demo_kind(kind: str | None, spec_file) -> str:
    if kind is None:
        kind = os.environ.get("COE_DEMO_KIND") or None
    if kind is None and spec_file is not None:
        raw = spec_file
        if not isinstance(spec_file, Mapping):
            from pathlib import Path

            from workbench.safeio import read_yaml_file

            # a missing file is reported by load_demo_config; a bad one here (alias, duplicate key)
            raw = (read_yaml_file(spec_file, error=DemoError, what="demo spec file") or {}
                   if Path(spec_file).is_file() else {})
        experts = raw.get("experts") if isinstance(raw, Mapping) else None
        if isinstance(raw, Mapping) and "base" not in raw and isinstance(experts, list) \
                and any(isinstance(e, Mapping) and "architecture" in e for e in experts):
            kind = "tiny"
    kind = kind or "real"
    if kind not in DEMO_KINDS:
        raise DemoError(f"unknown demo kind {kind!r}; use one of {', '.join(DEMO_KINDS)} "
                        "(COE_DEMO_KIND or --tiny)")
    return kind
