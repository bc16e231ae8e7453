"""Keep freed host memory in the process, so that a batched env's step does not page-fault.

Each step of a batched env allocates its observations afresh (12.6 MB at N=1024 for a 64x64 image) and
frees the previous ones. glibc's malloc serves blocks that big from ``mmap`` (above a threshold that it
raises up to 32 MB as such blocks are freed) and gives freed memory at the top of its heap back to the
OS; the pages that come back cost a page fault each when touched again (BENCHMARKS.md measures the cost).

:func:`retain_freed_memory` tells glibc to serve every block from its heap and never to trim it, as
jemalloc and tcmalloc (which PyTorch's CPU tuning guide recommends) do by design: a process keeps the
peak of what it allocated. It changes malloc for the whole process, so the library never calls it on
its own: the command lines (``mmrl.train``, ``mmrl.evaluate``) and the benchmarks do, and a program of
yours that steps CPU envs may. The environment variable ``MMRL_RETAIN_FREED_MEMORY=0`` turns it into a
no-op. It does nothing on other C libraries (musl, macOS, Windows).
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

_M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's <malloc.h>
_M_MMAP_MAX = -4
ENV_VAR = "MMRL_RETAIN_FREED_MEMORY"
_applied: bool | None = None


def retain_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory (no ``mmap``-served blocks, no heap trimming), once per process.

    :returns: whether it is in effect: false off glibc, or where ``MMRL_RETAIN_FREED_MEMORY=0``.
    """
    global _applied
    if _applied is None:
        _applied = _apply()
    return _applied


def _apply() -> bool:
    if os.environ.get(ENV_VAR, "1").strip() == "0":
        return False
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success; the trim threshold is a C int: 2 GiB - 1 means "never" in practice
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
