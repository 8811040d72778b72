"""The tiny demo experts: causal LMs trained from scratch in minutes, for fast tests.

The default demo uses a real pretrained model (:mod:`workbench.demo.real`). This module builds the
other kind (``kind="tiny"``, ``coe-workbench demo --tiny``): small causal LMs with
the Llama architecture, trained from scratch on CPU for a minute or two on the demo prompt set's
reference answers (``data/demo/*.jsonl``). One generalist sees every category; smaller specialists
see a few related categories each (``data/demo_experts.yaml``). They are saved as ordinary Hugging
Face checkpoints (``config.json``, ``model.safetensors``, tokenizer files with a chat template), so
they go through exactly the same code path as real models: :class:`~workbench.experts.ExpertPool`
loads them with ``AutoModelForCausalLM`` and :func:`~workbench.livescore.score_model` scores them.

Part of every category is held out of training (a seeded, stratified split) and the experts are
scored on those held-out prompts only, so the demo's category-to-expert map is honest.

The demo map's score is ``token_prob``: the per-token probability of the held-out reference
answer, ``exp(mean per-token log-likelihood)`` (see :mod:`workbench.livescore`).

Examples
--------
>>> from workbench.demo import build_demo_bundle
>>> bundle = build_demo_bundle(kind="tiny")               # doctest: +SKIP
>>> print(bundle.coe.generate("Solve 2x+3=11").text)      # doctest: +SKIP

Real experts go through the same code: list them as :class:`~workbench.experts.ExpertSpec` entries
(a YAML list: ``name``, ``model`` = a local folder or a Hugging Face id already in the cache,
``dtype``, ``total_params_b``), score them live on your held-out prompts (or use published
per-question results such as MMLU-Pro), optimise the map and serve:

>>> from workbench import CoE, Embedder, ModelRegistry, optimize_mapping        # doctest: +SKIP
>>> from workbench.experts import ExpertPool, specs_from_file                    # doctest: +SKIP
>>> from workbench.livescore import score_models                                 # doctest: +SKIP
>>> specs = specs_from_file("experts.yaml")   # Qwen2-7B-Instruct, gemma-2-9b-it, gemma-2-27b-it,
...                                           # Llama-3.1-70B-Instruct, Qwen2-72B-Instruct  # doctest: +SKIP
>>> scores = score_models(specs, held_out_prompts)                               # doctest: +SKIP
>>> registry = ModelRegistry({s.name: s.total_params_b for s in specs})          # doctest: +SKIP
>>> mapping = optimize_mapping(scores.category_means(), scores.category_weights(),
...                            registry, budget_active_b=30)                     # doctest: +SKIP
>>> coe = CoE(Embedder(), router, mapping, ExpertPool(specs, cpu_memory="300GiB"))  # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench._paths import atomic_write_text, replace_dir
from workbench._paths import cache_dir as _cache_dir
from workbench.demo.data import data_fingerprint, demo_frame, split_held_out
from workbench.demo.spec import (  # noqa: F401 - re-exported: workbench.demo.tiny keeps its old names
    DemoConfig, DemoExpertConfig, default_spec_file, load_demo_config, parse_categories, read_spec,
)
from workbench.demo.training import count_parameters, derive_seed, deterministic, fine_tune
from workbench.errors import DemoError  # noqa: F401 - re-exported
from workbench.livescore import encode_pair

#: Bump when the training recipe changes in a way the spec file does not capture.
DEMO_VERSION = "1"

#: Special tokens of the shared demo tokenizer.
PAD_TOKEN = "<pad>"
EOS_TOKEN = "<|end|>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")

#: A minimal chat template (Jinja), so the demo exercises the chat-template code path.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' }}\n{{ message['content'] }}{{ '<|end|>' }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}\n{% endif %}"
)


# --------------------------------------------------------------------------------------------
# tokenizer
# --------------------------------------------------------------------------------------------


def train_demo_tokenizer(texts: Iterable[str], *, vocab_size: int = 4096, min_frequency: int = 2):
    """Train the shared byte-level BPE on ``texts``; returns a ``PreTrainedTokenizerFast``.

    The tokenizer has ``<pad>``, ``<|end|>`` (end of turn, the EOS token) and role tokens, and
    :data:`CHAT_TEMPLATE` as its chat template.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = [PAD_TOKEN, EOS_TOKEN, *ROLE_TOKENS]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(sorted(set(texts)), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD_TOKEN, eos_token=EOS_TOKEN,
                                   additional_special_tokens=list(ROLE_TOKENS))
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "right"
    return fast


# --------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------


def llama_config(arch: Mapping[str, int], tokenizer, *, max_length: int):
    """The ``LlamaConfig`` of a demo expert (tied embeddings, full multi-head attention)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=arch["hidden_size"],
        intermediate_size=arch["intermediate_size"], num_hidden_layers=arch["num_hidden_layers"],
        num_attention_heads=arch["num_attention_heads"],
        num_key_value_heads=arch.get("num_key_value_heads", arch["num_attention_heads"]),
        max_position_embeddings=max(256, 2 * max_length), tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None, initializer_range=0.02, rms_norm_eps=1e-5,
    )


@dataclass
class TrainResult:
    """What :func:`train_expert` produced: the model, its size and how training went."""

    name: str
    model: Any
    n_params: int
    steps: int
    seconds: float
    seconds_per_step: float
    cpu_seconds: float
    first_loss: float
    final_loss: float
    n_train_sequences: int
    n_train_tokens: int


def train_expert(name: str, arch: Mapping[str, int], examples: Sequence[tuple[list[int], list[int]]],
                 tokenizer, *, steps: int, seed: int = 0, batch_size: int = 16,
                 learning_rate: float = 3e-3, warmup_steps: int = 10, weight_decay: float = 0.0,
                 max_length: int = 160, progress=None) -> TrainResult:
    """Train one tiny Llama causal LM on ``(prompt_ids, answer_ids)`` pairs (loss on answers).

    Deterministic for a seed: the weights are initialised after ``torch.manual_seed`` and batches
    are drawn from a seeded generator; runs under ``torch.use_deterministic_algorithms(True)``.
    ``progress`` is an optional tqdm bar advanced once per step.
    """
    import torch
    from transformers import LlamaForCausalLM

    if not examples:
        raise DemoError(f"expert {name!r} has no training examples; check its categories")
    expert_seed = derive_seed(seed, name)
    pad = tokenizer.pad_token_id
    with deterministic():
        torch.manual_seed(expert_seed)
        model = LlamaForCausalLM(llama_config(arch, tokenizer, max_length=max_length))
        model.train()
        losses, seconds, cpu_seconds = fine_tune(
            model, list(model.parameters()), examples, steps=steps, seed=expert_seed, pad_id=pad,
            batch_size=batch_size, learning_rate=learning_rate, betas=(0.9, 0.95),
            weight_decay=weight_decay, warmup_steps=warmup_steps, name=name, progress=progress)
        first, last = losses[0], losses[-1]
    model.eval()
    return TrainResult(name, model, count_parameters(model), steps, seconds, seconds / steps,
                       cpu_seconds, first, last, len(examples), sum(len(p) + len(a) for p, a in examples))


# --------------------------------------------------------------------------------------------
# the demo experts: train all, save as Hugging Face checkpoints, cache
# --------------------------------------------------------------------------------------------


@dataclass
class DemoExperts:
    """The trained demo experts on disk.

    Attributes
    ----------
    root : Path
        The cache folder; each expert is an ordinary Hugging Face checkpoint in ``root / name``.
    paths : dict[str, Path]
        Expert name -> checkpoint folder.
    info : dict[str, dict]
        Expert name -> description, categories, n_params, steps, seconds, losses.
    train_ids, held_out_ids : list[str]
        The seeded split: experts trained on ``train_ids`` only; score them on ``held_out_ids``.
    generalist : str
        The expert trained on every category.
    generation : dict
        Default generation settings for the experts' :class:`~workbench.experts.ExpertSpec`.
    """

    root: Path
    paths: dict[str, Path]
    info: dict[str, dict]
    train_ids: list[str]
    held_out_ids: list[str]
    generalist: str
    generation: dict
    seed: int = 0

    @property
    def names(self) -> list[str]:
        return list(self.paths)

    def n_params(self, name: str) -> int:
        return int(self.info[name]["n_params"])

    def specs(self) -> list:
        """One :class:`~workbench.experts.ExpertSpec` per expert (same path as real models)."""
        from workbench.experts import ExpertSpec

        return [ExpertSpec(name=name, model=str(path), dtype="float32",
                           total_params_b=self.n_params(name) / 1e9,
                           active_params_b=self.n_params(name) / 1e9,
                           generation=dict(self.generation),
                           description=self.info[name].get("description", ""))
                for name, path in self.paths.items()]

    def summary(self):
        """A DataFrame: expert, n_params, categories, steps, seconds, first/final training loss."""
        import pandas as pd

        rows = []
        for name, info in self.info.items():
            rows.append({"expert": name, "n_params": info["n_params"],
                         "categories": ", ".join(info["categories"]) if info["categories"] else "all",
                         "steps": info["steps"], "seconds": round(info["seconds"], 1),
                         "s_per_step": round(info["seconds_per_step"], 3),
                         "cpu_s": round(info.get("cpu_seconds", float("nan")), 1),
                         "first_loss": round(info["first_loss"], 3),
                         "final_loss": round(info["final_loss"], 3)})
        return pd.DataFrame(rows)


def demo_cache_key(config: DemoConfig, prompts, seed: int, steps_scale: float = 1.0) -> str:
    """The cache key of a demo build: recipe version, spec file, demo data and seed."""
    payload = json.dumps({"version": DEMO_VERSION, "spec": config.fingerprint(),
                          "data": data_fingerprint(prompts), "seed": int(seed),
                          "steps_scale": float(steps_scale)}, sort_keys=True)
    return f"v{DEMO_VERSION}-seed{int(seed)}-{hashlib.sha256(payload.encode()).hexdigest()[:12]}"


def _load_manifest(root: Path) -> DemoExperts | None:
    manifest = root / "manifest.json"
    if not manifest.exists():
        return None
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
        paths = {name: root / name for name in data["experts"]}
        if not all((p / "config.json").exists() and (p / "model.safetensors").exists()
                   for p in paths.values()):
            return None
        return DemoExperts(root, paths, data["info"], data["train_ids"], data["held_out_ids"],
                           data["generalist"], data["generation"], data.get("seed", 0))
    except (KeyError, ValueError, TypeError):
        return None


def train_demo_experts(prompts=None, *, spec_file: str | os.PathLike | Mapping | None = None,
                       seed: int = 0, root: str | os.PathLike | None = None, progress: bool = True,
                       force: bool = False, steps_scale: float = 1.0) -> DemoExperts:
    """Train (or load from the cache) the demo experts described by ``spec_file``.

    Parameters
    ----------
    prompts : PromptSet or DataFrame, optional
        Demo prompts with id, text, category, answer; default :func:`workbench.load_demo_prompts`.
    spec_file : path or mapping, optional
        The experts' spec (default ``data/demo_experts.yaml``).
    seed : int
        Seeds the held-out split, the weight initialisation and the batch order. The same seed
        gives identical weights.
    root : path, optional
        Where to save; default ``cache_dir("demo-experts", <version+seed hash>)``.
    progress : bool
        Show a tqdm progress bar over all training steps.
    force : bool
        Retrain even when a complete cached build exists.
    steps_scale : float
        Multiply every expert's step count (tests use a tiny value).

    Returns
    -------
    DemoExperts

    Examples
    --------
    >>> experts = train_demo_experts()            # doctest: +SKIP
    >>> experts.summary()                         # doctest: +SKIP
    """
    import torch
    from workbench.progress import progress_bar
    from transformers import GenerationConfig

    if prompts is None:
        from workbench.prompts import load_demo_prompts

        prompts = load_demo_prompts()
    config = load_demo_config(spec_file)
    df = demo_frame(prompts)
    key = demo_cache_key(config, df, seed, steps_scale)
    root = Path(root) if root is not None else _cache_dir("demo-experts") / key
    if not force:
        cached = _load_manifest(root)
        if cached is not None:
            return cached

    tr = config.training
    categories = sorted(df["category"].astype(str).unique())
    unknown = sorted({c for e in config.experts for c in (e.categories or [])} - set(categories))
    if unknown:
        raise DemoError(f"{config.source}: categories {unknown} are not in the demo prompts "
                        f"(known: {', '.join(categories)})")
    train_ids, held_out_ids = split_held_out(df, held_out=float(tr["held_out"]), seed=seed)
    train = df.set_index(df["id"].astype(str)).loc[train_ids]
    tokenizer = train_demo_tokenizer(
        [*train["text"].astype(str), *train["answer"].astype(str)],
        vocab_size=int(config.tokenizer.get("vocab_size", 4096)),
        min_frequency=int(config.tokenizer.get("min_frequency", 2)))
    max_length = int(tr["max_length"])
    encoded = {row.id: encode_pair(tokenizer, str(row.text), str(row.answer),
                                   max_length=max_length, chat_template=True)
               for row in train.itertuples(index=False)}

    plan = []
    for expert in config.experts:
        cats = expert.categories or categories
        ids = [i for i, c in zip(train.index, train["category"].astype(str)) if c in cats]
        plan.append((expert, [encoded[i] for i in ids], max(1, round(expert.steps * steps_scale))))

    tmp = root.with_name(f".{root.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    info: dict[str, dict] = {}
    threads = torch.get_num_threads()
    if progress:
        print(f"training {len(plan)} tiny demo experts from scratch: "
              f"{sum(s for _, _, s in plan)} steps, once; they are cached in {root}",
              file=sys.stderr, flush=True)
    bar = progress_bar(sum(s for _, _, s in plan), "training demo experts", "step",
                       enabled=bool(progress), dynamic_ncols=True)
    try:
        for expert, examples, steps in plan:
            res = train_expert(expert.name, expert.architecture, examples, tokenizer, steps=steps,
                               seed=seed, batch_size=int(tr["batch_size"]),
                               learning_rate=float(tr["learning_rate"]),
                               warmup_steps=int(tr["warmup_steps"]),
                               weight_decay=float(tr["weight_decay"]), max_length=max_length,
                               progress=bar)
            out = tmp / expert.name
            res.model.generation_config = GenerationConfig(
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                **config.generation)
            res.model.save_pretrained(out)
            tokenizer.save_pretrained(out)
            info[expert.name] = {
                "description": expert.description,
                "categories": expert.categories,
                "architecture": expert.architecture,
                "n_params": res.n_params, "steps": res.steps, "seconds": res.seconds,
                "seconds_per_step": res.seconds_per_step, "cpu_seconds": res.cpu_seconds,
                "first_loss": res.first_loss,
                "final_loss": res.final_loss, "n_train_sequences": res.n_train_sequences,
                "n_train_tokens": res.n_train_tokens, "torch_threads": threads,
            }
            del res
    except BaseException:
        bar.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    bar.close()
    manifest = {"version": DEMO_VERSION, "seed": int(seed), "key": key,
                "experts": [e.name for e in config.experts], "generalist": config.generalist,
                "generation": config.generation, "info": info, "train_ids": train_ids,
                "held_out_ids": held_out_ids, "spec_source": config.source}
    atomic_write_text(tmp / "manifest.json", json.dumps(manifest, indent=1))
    replace_dir(tmp, root)  # readers never see the folder missing
    result = _load_manifest(root)
    assert result is not None
    return result
