"""Embedding throughput: our Embedder vs sentence-transformers' encode, same model, same texts.

Run: python benchmarks/bench_embed.py [--n 2000] [--rounds 2]

Both embed the same MMLU-Pro questions with all-MiniLM-L6-v2 (max 256 tokens, batch 64, L2
normalised) on the CPU. Rounds alternate the order; each side's best round counts. Then the same
texts are embedded again through our disk cache (a fresh Embedder object, as in a new session).
"""
from __future__ import annotations

import argparse
import tempfile
import time

from _common import real_prompts, summary, table


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()

    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    from workbench.embed import Embedder, default_model_path

    prompts, source = real_prompts(args.n)
    texts = prompts.texts
    print(f"{len(texts)} {source} prompts, torch threads: {torch.get_num_threads()}")
    ours = Embedder(cache=False, batch_size=64, max_length=256, progress=False)
    st = SentenceTransformer(default_model_path(), device="cpu")
    st.max_seq_length = 256
    ours.encode(texts[:16])
    st.encode(texts[:16], batch_size=64)

    def run_ours():
        return ours.encode(texts)

    def run_st():
        return st.encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False)

    times = {"ours": [], "sentence-transformers": []}
    outs = {}
    for r in range(args.rounds):
        order = [("ours", run_ours), ("sentence-transformers", run_st)]
        for name, fn in (order if r % 2 == 0 else order[::-1]):
            t0 = time.perf_counter()
            outs[name] = fn()
            times[name].append(time.perf_counter() - t0)
    max_diff = float(np.abs(outs["ours"] - outs["sentence-transformers"]).max())

    with tempfile.TemporaryDirectory() as cache:
        Embedder(cache=cache, progress=False).encode(texts)  # fill the cache
        t0 = time.perf_counter()
        again = Embedder(cache=cache, progress=False).encode(texts)  # new object, disk lookup
        cached_s = time.perf_counter() - t0
    assert np.allclose(again, outs["ours"], atol=1e-5)

    best = {k: min(v) for k, v in times.items()}
    rows = [{"method": k, "best_s": best[k], "all_s": " ".join(f"{t:.1f}" for t in v),
             "prompts_per_s": len(texts) / best[k]} for k, v in times.items()]
    rows.append({"method": "ours, cached re-embed", "best_s": cached_s, "all_s": f"{cached_s:.3f}",
                 "prompts_per_s": len(texts) / cached_s})
    table(rows, "Embedding throughput (all-MiniLM-L6-v2, CPU)")
    print(f"max |ours - sentence-transformers| = {max_diff:.2e}")
    ratio = best["sentence-transformers"] / best["ours"]
    summary("bench_embed", n=len(texts), source=source,
            throughput_ratio=round(ratio, 3), cached_speedup=round(best["ours"] / cached_s, 1),
            ours_s=round(best["ours"], 2), sentence_transformers_s=round(best["sentence-transformers"], 2),
            cached_s=round(cached_s, 4), max_abs_diff=max_diff)


if __name__ == "__main__":
    main()
