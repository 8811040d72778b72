"""Give freed memory back to the operating system (glibc heap and the CUDA cache)."""
from __future__ import annotations

_LIBC: list = []


def malloc_trim() -> None:
    """Ask glibc to return freed heap pages to the OS (no-op elsewhere)."""
    if not _LIBC:
        import ctypes

        try:
            _LIBC.append(ctypes.CDLL("libc.so.6").malloc_trim)
        except (OSError, AttributeError):  # not glibc
            _LIBC.append(None)
    if _LIBC[0] is not None:
        _LIBC[0](0)


def release_memory(cuda: bool = False) -> None:
    """Give freed memory back to the OS: ``gc.collect()``, glibc ``malloc_trim`` and the CUDA cache."""
    import gc

    gc.collect()
    malloc_trim()
    if cuda:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.empty_cache()
