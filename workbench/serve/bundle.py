"""A portable CoE bundle: one folder with a versioned manifest, the router, the map and the experts.

Layout of a bundle folder (no pickle anywhere)::

    coe.json        the manifest: format, version, embedder (model + pooling + fingerprint),
                    files with their sha256, expert specs, pool budgets, CoE settings
    router.npz      the router's pickle-free file (CategoryRouter.save)
    mapping.json    the category-to-expert map (CategoryExpertMap.save)
    experts/NAME/   only with ``copy_experts=True``: each expert's checkpoint (and adapter)

:func:`load_coe` validates everything before building anything heavy and names what is wrong: a
missing file, a file changed since export, an embedding model whose fingerprint differs from the
one the router was fitted on, an expert the map names without a spec, a manifest from a newer
workbench.

Examples
--------
>>> save_coe(bundle.coe, "my-coe")                      # doctest: +SKIP
>>> coe = load_coe("my-coe")                            # doctest: +SKIP
>>> coe.generate("Solve 2x + 3 = 11").trace.expert      # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

from workbench.errors import BundleError, WorkbenchError
from workbench.safeio import short, short_list

__all__ = ["BUNDLE_FORMAT", "BUNDLE_VERSION", "MANIFEST", "load_coe", "load_pool", "read_manifest", "save_coe"]

BUNDLE_FORMAT = "coe-workbench/coe-bundle"
#: The manifest version this workbench writes and the newest it reads.
BUNDLE_VERSION = 1
MANIFEST = "coe.json"
ROUTER_FILE = "router.npz"
MAPPING_FILE = "mapping.json"
_REQUIRED = ("embedder", "router", "mapping", "experts", "pool")
_EMBEDDER_SETTINGS = ("pooling", "instruction", "normalize", "max_length", "dtype", "trust_remote_code")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


# ------------------------------------------------------------------------------------- saving
def _embedder_entry(embedder: Any) -> dict:
    if not all(hasattr(embedder, a) for a in ("model_path", "pooling", "fingerprint")):
        raise BundleError(
            f"cannot export a CoE whose embedder is a {type(embedder).__name__}: a bundle names its "
            "embedding model, so it needs a workbench Embedder (workbench.embed.Embedder(model=..., "
            "pooling=...)); rebuild the CoE with one")
    entry = {"model": None if embedder.model is None else str(embedder.model),
             "model_path": str(embedder.model_path)}
    entry.update({k: getattr(embedder, k) for k in _EMBEDDER_SETTINGS if hasattr(embedder, k)})
    entry["fingerprint"] = str(embedder.fingerprint)
    try:
        entry["dim"] = int(embedder.dim)
    except Exception:  # noqa: BLE001 - informative only
        pass
    return entry


def _expert_entries(pool: Any, root: Path, copy_experts: bool) -> list[dict]:
    specs = getattr(pool, "specs", None)
    if not isinstance(specs, dict) or not specs:
        raise BundleError(f"cannot export a CoE whose pool is a {type(pool).__name__}: a bundle "
                          "needs an ExpertPool with expert specs")
    copied: dict[str, str] = {}  # source folder -> its folder in the bundle (a shared base once)

    def place(value: Any, name: str, kind: str) -> str | None:
        if value is None:
            return None
        src = Path(str(value)).expanduser()
        if not src.is_dir():
            return str(value)  # a Hugging Face id: it stays one
        src = src.resolve()
        if not copy_experts:
            return str(src)
        key = str(src)
        if key not in copied:
            rel = Path("experts") / name / kind
            shutil.copytree(src, root / rel)
            copied[key] = rel.as_posix()
        return copied[key]

    out = []
    for name, spec in specs.items():
        entry = spec.to_dict()
        entry["model"] = place(spec.model, name, "model")
        entry["adapter"] = place(spec.adapter, name, "adapter")
        out.append(entry)
    return out


def save_coe(coe: Any, folder: str | os.PathLike, *, copy_experts: bool = False) -> Path:
    """Write ``coe`` as a bundle folder (replacing an older bundle there atomically).

    Parameters
    ----------
    coe : CoE
        Its embedder must be a workbench :class:`~workbench.embed.Embedder`, its router a fitted
        :class:`~workbench.router.CategoryRouter` and its pool an :class:`~workbench.experts.ExpertPool`.
    folder : path
        The bundle folder. A folder that exists and is not a bundle is refused (nothing of yours
        is overwritten).
    copy_experts : bool
        Copy every expert's checkpoint and adapter folder into the bundle (a shared base once), so
        the folder can be moved to another machine. Default: the manifest names the local folders
        (absolute paths) or Hugging Face ids.

    Returns
    -------
    Path
        The bundle folder.
    """
    from workbench import __version__
    from workbench._paths import atomic_write_text, replace_dir

    dest = Path(folder).expanduser().resolve()
    if dest.exists() and not dest.is_dir():
        raise BundleError(f"cannot export to {dest}: it is a file; choose a folder")
    if dest.is_dir() and any(dest.iterdir()) and not (dest / MANIFEST).is_file():
        raise BundleError(f"cannot export to {dest}: the folder exists and is not a CoE bundle "
                          f"(no {MANIFEST}); choose a new or empty folder")
    router = coe.router
    if not hasattr(router, "save") or type(router).__name__ != "CategoryRouter":
        raise BundleError(f"cannot export a CoE whose router is a {type(router).__name__}; a bundle "
                          "holds a fitted workbench CategoryRouter")
    embedder_entry = _embedder_entry(coe.embedder)
    tmp = dest.parent / f".{dest.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        router.save(tmp / ROUTER_FILE)
        coe.mapping.save(tmp / MAPPING_FILE)
        experts = _expert_entries(coe.pool, tmp, copy_experts)
        pool = coe.pool
        fallback = coe.fallback_expert
        manifest = {
            "format": BUNDLE_FORMAT, "version": BUNDLE_VERSION, "workbench_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "embedder": embedder_entry,
            "router": {"file": ROUTER_FILE, "sha256": _sha256(tmp / ROUTER_FILE),
                       "type": type(router).__name__,
                       "categories": [str(c) for c in getattr(router, "classes_", [])]},
            "mapping": {"file": MAPPING_FILE, "sha256": _sha256(tmp / MAPPING_FILE)},
            "experts": experts,
            "pool": {"gpu_memory": int(getattr(pool, "gpu_budget", 0) or 0),
                     "cpu_memory": int(getattr(pool, "cpu_budget", 0) or 0),
                     "wait_for_room": float(getattr(pool, "wait_for_room", 30.0)),
                     "prefetch": bool(getattr(pool, "prefetch_enabled", True))},
            "coe": {"on_error": coe.on_error, "prefetch_next": bool(coe.prefetch_next),
                    "fallback_expert": None if fallback == coe.mapping.fallback_expert else fallback},
        }
        atomic_write_text(tmp / MANIFEST, json.dumps(manifest, indent=2) + "\n")
        return replace_dir(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ------------------------------------------------------------------------------------ loading
def read_manifest(folder: str | os.PathLike) -> dict:
    """The validated manifest of a bundle folder (format, version, sections, files present).

    Raises
    ------
    BundleError
        Not a bundle, a manifest that is not valid JSON, a newer bundle version, a missing
        section or file, or a file changed since export (sha256).
    """
    from workbench.safeio import load_json, read_text_limited

    root = Path(folder).expanduser()
    if not root.is_dir():
        raise BundleError(f"CoE bundle folder {str(root)!r} does not exist; write one with "
                          "coe.save(folder) or `coe-workbench export FOLDER`")
    path = root / MANIFEST
    if not path.is_file():
        raise BundleError(f"{root} is not a CoE bundle: it has no {MANIFEST}; write one with "
                          "coe.save(folder) or `coe-workbench export FOLDER`")
    text = read_text_limited(path, error=BundleError, what="bundle manifest")
    manifest = load_json(text, f"bundle manifest {path}", error=BundleError)
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise BundleError(f"{path} is not a CoE bundle manifest: its format is {short(got)}, "
                          f"expected {BUNDLE_FORMAT!r}")
    version = manifest.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise BundleError(f"{path}: 'version' must be a positive integer, got {short(version)}")
    if version > BUNDLE_VERSION:
        raise BundleError(
            f"{path} is bundle version {version}, written by a newer coe-workbench "
            f"({short(manifest.get('workbench_version'))}); this one reads versions up to "
            f"{BUNDLE_VERSION}. Upgrade coe-workbench to load it")
    missing = [k for k in _REQUIRED if k not in manifest]
    if missing:
        raise BundleError(f"{path} misses the section(s) {', '.join(missing)}; re-export the bundle")
    for section in ("router", "mapping"):
        entry = manifest[section]
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
            raise BundleError(f"{path}: '{section}' must name its file ({{'file': ..., 'sha256': ...}})")
        file = root / entry["file"]
        if Path(entry["file"]).is_absolute() or ".." in Path(entry["file"]).parts:
            raise BundleError(f"{path}: the {section} file {short(entry['file'])} must be a plain "
                              "name inside the bundle folder")
        if not file.is_file():
            raise BundleError(f"bundle {root} is missing its {section} file {entry['file']} (named "
                              f"in {MANIFEST}); the copy is incomplete: copy the whole folder again "
                              "or re-export it")
        if entry.get("sha256") and _sha256(file) != entry["sha256"]:
            raise BundleError(f"bundle {root}: {entry['file']} was changed after export (its sha256 "
                              f"differs from the one in {MANIFEST}); re-export the bundle instead of "
                              "editing its files")
    if not isinstance(manifest["experts"], list) or not manifest["experts"]:
        raise BundleError(f"{path}: 'experts' must be a non-empty list of expert specs")
    if not isinstance(manifest["embedder"], dict):
        raise BundleError(f"{path}: 'embedder' must be a mapping (model, pooling, fingerprint ...)")
    if not isinstance(manifest["pool"], dict):
        raise BundleError(f"{path}: 'pool' must be a mapping of budgets (gpu_memory, cpu_memory)")
    return manifest


def _specs(manifest: dict, root: Path) -> list:
    from workbench.errors import ExpertError
    from workbench.experts import ExpertSpec
    from workbench.placement import resolve_model_path

    specs = []
    for i, entry in enumerate(manifest["experts"]):
        try:
            spec = ExpertSpec.from_dict(entry, base_dir=root)
        except ExpertError as exc:
            raise BundleError(f"{root / MANIFEST} experts[{i}]: {exc}") from None
        try:
            resolve_model_path(spec.model, expert=spec.name)
        except ExpertError as exc:
            raise BundleError(f"bundle {root}: {exc}") from None
        if spec.adapter is not None and not Path(str(spec.adapter)).is_dir():
            raise BundleError(f"bundle {root}: expert {short(spec.name)}: adapter folder "
                              f"{short(str(spec.adapter))} does not exist; copy it there or "
                              "re-export with copy_experts=True (--copy-experts)")
        specs.append(spec)
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise BundleError(f"{root / MANIFEST}: two experts share a name ({short_list(names)})")
    return specs


def _embedder(entry: dict, root: Path, check_fingerprint: bool):
    from workbench.embed import Embedder

    settings = {k: entry[k] for k in _EMBEDDER_SETTINGS if k in entry}
    model = entry.get("model")
    local = entry.get("model_path")
    if model is not None and not Path(str(model)).expanduser().exists() and local \
            and Path(str(local)).is_dir():
        model = local  # a Hugging Face id exported on this machine: its snapshot folder
    try:
        embedder = Embedder(model, progress=False, **settings)
    except (WorkbenchError, TypeError) as exc:
        raise BundleError(f"bundle {root}: cannot build its embedder ({short(model)}): {exc}") from None
    want = entry.get("fingerprint")
    if check_fingerprint and want and embedder.fingerprint != want:
        raise BundleError(
            f"bundle {root}: the embedding model {short(model or 'all-MiniLM-L6-v2')} found here "
            f"({embedder.model_path}) has fingerprint {embedder.fingerprint}, but the router was "
            f"fitted on vectors of a model with fingerprint {want}: routing would be wrong. Install "
            "the same model, or pass check_fingerprint=False if you know they embed alike")
    return embedder


def _pool_budget(value: Any, override: Any, what: str) -> Any:
    if override is not None:
        return override
    if what == "gpu_memory" and isinstance(value, int) and value > 0:
        try:
            import torch

            has_cuda = torch.cuda.is_available()
        except Exception:  # noqa: BLE001 - no usable torch CUDA
            has_cuda = False
        if not has_cuda:
            warnings.warn(f"the bundle's pool has a GPU budget ({value} bytes) but CUDA is not "
                          "available here; loading it without a GPU tier", RuntimeWarning, stacklevel=3)
            return None
    return value if value else None if what == "gpu_memory" else value


def _pool(manifest: dict, specs: list, gpu_memory: Any, cpu_memory: Any, offload_dir: Any):
    from workbench.experts import ExpertPool

    budgets = manifest["pool"]
    return ExpertPool(specs, gpu_memory=_pool_budget(budgets.get("gpu_memory"), gpu_memory, "gpu_memory"),
                      cpu_memory=_pool_budget(budgets.get("cpu_memory") or "4GiB", cpu_memory, "cpu_memory"),
                      offload_dir=offload_dir, prefetch=bool(budgets.get("prefetch", True)),
                      wait_for_room=float(budgets.get("wait_for_room", 30.0)))


def load_pool(folder: str | os.PathLike, *, gpu_memory: int | str | None = None,
              cpu_memory: int | str | None = None, offload_dir: str | os.PathLike | None = None):
    """Only the :class:`~workbench.experts.ExpertPool` of a bundle (its specs and budgets), validated.

    What a Ray Serve expert replica holds (:mod:`workbench.serve.ray_backend`): the experts without
    the embedder, router and map. Budgets as in :func:`load_coe`.

    Raises
    ------
    BundleError
        Not a bundle, a changed file, a bad or missing expert.
    """
    root = Path(folder).expanduser().resolve()
    manifest = read_manifest(root)
    return _pool(manifest, _specs(manifest, root), gpu_memory, cpu_memory, offload_dir)


def load_coe(folder: str | os.PathLike, *, check_fingerprint: bool = True,
             gpu_memory: int | str | None = None, cpu_memory: int | str | None = None,
             offload_dir: str | os.PathLike | None = None, embedder: Any = None,
             on_error: str | None = None):
    """Load a bundle written by :func:`save_coe`, validating every part first.

    Parameters
    ----------
    folder : path
        The bundle folder.
    check_fingerprint : bool
        Refuse an embedding model whose content hash differs from the exported one.
    gpu_memory, cpu_memory : optional
        Override the pool budgets of the manifest (a GPU budget is dropped, with a warning, on a
        machine without CUDA).
    offload_dir : path, optional
        The pool's disk-offload folder.
    embedder : Embedder, optional
        Use this (already loaded) embedder; its fingerprint is checked like the bundle's own.
    on_error : str, optional
        Override the CoE's failing-expert policy.

    Returns
    -------
    CoE

    Raises
    ------
    BundleError
        Naming the file, the expert or the setting that is wrong and the fix.
    """
    from workbench.coe import CoE
    from workbench.errors import MappingError, RouterError
    from workbench.mapping import CategoryExpertMap
    from workbench.router import CategoryRouter

    root = Path(folder).expanduser().resolve()
    manifest = read_manifest(root)
    specs = _specs(manifest, root)
    names = [s.name for s in specs]
    try:
        mapping = CategoryExpertMap.load(root / manifest["mapping"]["file"])
    except MappingError as exc:
        raise BundleError(f"bundle {root}: {exc}") from None
    unknown: dict[str, list[str]] = {}
    for category, expert in mapping.assignments.items():
        if expert not in names:
            unknown.setdefault(expert, []).append(category)
    settings = manifest.get("coe") if isinstance(manifest.get("coe"), dict) else {}
    fallback = settings.get("fallback_expert")
    if fallback is not None and fallback not in names:
        unknown.setdefault(str(fallback), []).append("coe.fallback_expert")
    if unknown:
        detail = "; ".join(f"{short(e)} (for {', '.join(c)})" for e, c in unknown.items())
        raise BundleError(f"bundle {root}: the map names experts that have no spec in {MANIFEST}: "
                          f"{detail}. Specs: {short_list(names)}. Add their specs or re-export")
    router_type = manifest["router"].get("type", "CategoryRouter")
    if router_type != "CategoryRouter":
        raise BundleError(f"bundle {root}: router type {short(router_type)} is not supported; this "
                          "workbench loads CategoryRouter bundles")
    try:
        router = CategoryRouter.load(root / manifest["router"]["file"])
    except RouterError as exc:
        raise BundleError(f"bundle {root}: {exc}") from None
    entry = manifest["embedder"]
    if embedder is None:
        embedder = _embedder(entry, root, check_fingerprint)
    elif check_fingerprint and entry.get("fingerprint") and \
            getattr(embedder, "fingerprint", None) != entry["fingerprint"]:
        raise BundleError(f"bundle {root}: the embedder passed in has fingerprint "
                          f"{short(getattr(embedder, 'fingerprint', None))}, the bundle's is "
                          f"{entry['fingerprint']}; pass the same embedding model")
    dim = entry.get("dim")
    if dim is not None and int(dim) != int(router.n_features_in_):
        raise BundleError(f"bundle {root}: the embedder makes {dim}-d vectors but the router "
                          f"expects {router.n_features_in_}-d ones; re-export the bundle")
    pool = _pool(manifest, specs, gpu_memory, cpu_memory, offload_dir)
    try:
        return CoE(embedder, router, mapping, pool, on_error=on_error or settings.get("on_error", "fallback"),
                   fallback_expert=fallback, prefetch_next=bool(settings.get("prefetch_next", True)))
    except WorkbenchError as exc:
        pool.close()
        raise BundleError(f"bundle {root}: {exc}") from None
