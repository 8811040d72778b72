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


#: temp files of killed saves older than this are removed by the next save to the same folder
ORPHAN_TEMP_AGE_S = 3600.0


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # Windows, or no permission: the rename itself is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def clean_orphan_temps(folder: str | os.PathLike, name: str, *,
                       older_than_s: float = ORPHAN_TEMP_AGE_S) -> list[Path]:
    """Remove ``.{name}.*.tmp`` files in ``folder`` left by killed saves (older than the limit).

    Returns the removed paths. A save in progress in another process is younger than the limit,
    so it is never touched.
    """
    return remove_older_than(folder, f".{name}.*.tmp", older_than_s)


def remove_older_than(folder: str | os.PathLike, pattern: str, older_than_s: float) -> list[Path]:
    """Remove the files in ``folder`` matching ``pattern`` not modified for ``older_than_s``
    seconds; returns the removed paths (files that vanish or cannot be removed are skipped)."""
    import time

    removed = []
    now = time.time()
    for path in Path(folder).glob(pattern):
        try:
            if now - path.stat().st_mtime > older_than_s:
                path.unlink()
                removed.append(path)
        except OSError:
            continue
    return removed


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a temp file in the same folder, fsync, rename, fsync
    of the folder. A crash at any point leaves the old file or the new one, never a mix.

    The temp file is created with mode ``0o666`` filtered by the process umask (what a plain
    ``open()`` gives) without ever changing the umask, which is process-wide and would race with
    other threads. Temp files of earlier killed saves to the same name are cleaned up.
    """
    import secrets

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(16):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, flags, 0o666)
            break
        except FileExistsError:
            continue
    else:  # pragma: no cover - 16 collisions of 32 random bits
        raise FileExistsError(f"could not create a temp file beside {path}")
    try:
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
    _fsync_dir(path.parent)
    clean_orphan_temps(path.parent, path.name)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Text version of :func:`atomic_write_bytes` (UTF-8)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically with Linux's ``renameat2(RENAME_EXCHANGE)``; False if unsupported."""
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    return False  # EINVAL/ENOSYS (file system or kernel without it): the caller falls back


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def clean_orphan_dirs(dest: str | os.PathLike) -> list[Path]:
    """Remove ``.{name}.tmp-PID`` / ``.{name}.old-PID`` folders beside ``dest`` whose process is
    gone (a build killed midway). Returns the removed paths."""
    import re
    import shutil

    dest = Path(dest)
    removed = []
    pattern = re.compile(rf"^\.{re.escape(dest.name)}\.(?:tmp|old)-(\d+)$")
    if not dest.parent.is_dir():
        return removed
    for sibling in dest.parent.iterdir():
        m = pattern.match(sibling.name)
        if m and sibling.is_dir() and (int(m.group(1)) != os.getpid()) and not _pid_alive(int(m.group(1))):
            shutil.rmtree(sibling, ignore_errors=True)
            removed.append(sibling)
    return removed


def replace_dir(src: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Move the finished folder ``src`` to ``dest``, replacing what is there without a moment in
    which ``dest`` is missing (readers see the old folder or the new one).

    On Linux the two folders are swapped atomically (``renameat2(RENAME_EXCHANGE)``) and the old
    one, now at ``src``, is removed; elsewhere the old folder is renamed aside first (a window of
    one rename). Folders left by builds killed midway are cleaned up.
    """
    import shutil

    src, dest = Path(src), Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not dest.exists():
        os.replace(src, dest)
    elif _exchange(src, dest):
        shutil.rmtree(src, ignore_errors=True)
    else:
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dest, old)
        os.replace(src, dest)
        shutil.rmtree(old, ignore_errors=True)
    _fsync_dir(dest.parent)
    clean_orphan_dirs(dest)
    return dest
