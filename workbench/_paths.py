"""Where the workbench keeps caches and finds data. Override with environment variables."""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent


def cache_dir(*parts: str) -> Path:
    """Root of on-disk caches: ``$COE_WORKBENCH_CACHE`` or ``~/.cache/coe-workbench``."""
    root = os.environ.get("COE_WORKBENCH_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "coe-workbench"
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_dir() -> Path:
    """The project's own data folder (demo prompt set)."""
    env = os.environ.get("COE_WORKBENCH_DATA")
    if env:
        return Path(env).expanduser()
    packaged = PACKAGE_DIR / "_data"
    return packaged if packaged.exists() else REPO_DIR / "data"


def shared_data_dir() -> Path | None:
    """The shared real-data folder (``../shared/data`` beside the repo) or ``$COE_SHARED_DATA``.

    Returns ``None`` when it does not exist, so callers and tests can skip cleanly.
    """
    env = os.environ.get("COE_SHARED_DATA")
    candidates = [Path(env).expanduser()] if env else [REPO_DIR.parent / "shared" / "data"]
    for path in candidates:
        if path.is_dir():
            return path
    return None


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a temp file in the same folder, fsync, then rename."""
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates 0600; give the file the mode a plain open() would (0666 & ~umask)
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Text version of :func:`atomic_write_bytes` (UTF-8)."""
    atomic_write_bytes(path, text.encode("utf-8"))
