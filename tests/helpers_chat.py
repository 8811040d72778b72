"""Shared by the chat, app and browser tests: a real CoE over tiny random-init Llama experts
(the ``tiny_experts`` fixture lives in conftest.py) and a small in-memory bundle for the app."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CATEGORY_PROMPTS = {
    "math": ["Solve for x: 3 x + 5 = 20.", "What is the derivative of x squared?",
             "Compute 17 times 23.", "Is 91 a prime number?", "Integrate 2 x from 0 to 3.",
             "What is the square root of 144?"],
    "law": ["Is a verbal contract valid under state law?", "What did the court rule about the lease?",
            "Can a landlord keep the deposit?", "What is negligence in tort law?",
            "Explain the statute of limitations.", "Who has standing to sue in federal court?"],
}


def make_pool(tiny_experts):
    from workbench.experts import ExpertPool, ExpertSpec

    specs = [ExpertSpec(name=name, model=path, generation={"max_new_tokens": 12})
             for name, path in tiny_experts.items()]
    return ExpertPool(specs, gpu_memory=None, cpu_memory="256MiB")


def make_mapping(pool):
    from workbench.mapping import CategoryExpertMap

    return CategoryExpertMap({"math": "tiny-a", "law": "tiny-b", "fallback": "tiny-a"},
                             experts=list(pool.names))


def fit_router(embedder):
    import numpy as np

    from workbench.router import CategoryRouter

    texts = [t for ts in CATEGORY_PROMPTS.values() for t in ts]
    labels = np.array([c for c, ts in CATEGORY_PROMPTS.items() for _ in ts])
    return CategoryRouter(head="logreg").fit(embedder.encode(texts), labels)


def make_coe(pool, mapping=None, embedder=None, router=None):
    """The real CoE: MiniLM embedder, a router fitted on CATEGORY_PROMPTS, the map, the pool."""
    from workbench.coe import CoE
    from workbench.embed import Embedder

    mapping = mapping if mapping is not None else make_mapping(pool)

    embedder = embedder or Embedder(progress=False)
    router = router or fit_router(embedder)
    return CoE(embedder, router, mapping, pool)


@dataclass
class MiniBundle:
    prompts: Any
    embedder: Any
    router: Any
    scores: Any
    registry: Any
    mapping: Any
    pool: Any
    coe: Any
    specs: list = field(default_factory=list)
    embeddings: Any = None


def build_mini_bundle(tiny_experts) -> MiniBundle:
    """The small in-memory bundle (its pool must be closed by the caller)."""
    import numpy as np
    import pandas as pd

    from workbench.embed import Embedder
    from workbench.prompts import PromptSet
    from workbench.registry import ModelInfo, ModelRegistry
    from workbench.scores import ExpertScores

    records = [{"id": f"{c}-{i}", "text": t, "category": c}
               for c, ts in CATEGORY_PROMPTS.items() for i, t in enumerate(ts)]
    prompts = PromptSet.from_records(records)
    embedder = Embedder(progress=False)
    router = fit_router(embedder)
    rng = np.random.default_rng(0)  # synthetic per-prompt scores: input data for the map editor
    scores = ExpertScores.from_long(pd.DataFrame(
        [{"prompt_id": r["id"], "expert": e, "score": float(rng.random()), "category": r["category"]}
         for r in records for e in ("tiny-a", "tiny-b")]))
    registry = ModelRegistry([ModelInfo("tiny-a", 0.0002, 0.0002), ModelInfo("tiny-b", 0.0001, 0.0001)])
    pool = make_pool(tiny_experts)
    mapping = make_mapping(pool)
    coe = make_coe(pool, mapping, embedder=embedder, router=router)
    return MiniBundle(prompts, embedder, router, scores, registry, mapping, pool, coe,
                      specs=list(pool.specs.values()), embeddings=embedder.embed(prompts))
