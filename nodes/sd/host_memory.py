"""glibc ``malloc`` settings for a process that runs models on the CPU.

PyTorch's CPU tensors come from ``malloc``. With glibc's defaults, a block larger than the
(adaptive, at most 32 MiB) mmap threshold is a fresh ``mmap`` each time and is unmapped
when freed, so each layer's activations and each cast weight (``nodes.models.cast_weights``)
land in new pages the kernel has to fault in and zero. A thread other than the main one also gets
its own arena, whose heaps cannot hold a block over 64 MiB, so there too large blocks are
mapped afresh. The server runs prompts on a worker thread. (What this saves is measured in
bench/RESULTS.md, "glibc malloc settings".)

``tune_allocator()`` (called once at start-up by the server and the CLI, before any worker
thread exists) serves blocks up to 1 GiB from one reused heap, keeps up to 1 GiB of freed
memory at its top for the next step instead of returning it at once, and puts every thread
on the main arena. ``return_free_memory()`` (POST /free) gives the
kept memory back to the system. Both do nothing where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import platform

# mallopt parameters, from glibc's malloc.h.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

HEAP_BLOCK_LIMIT = 1 << 30  # blocks up to this size come from the heap
KEEP_FREE_BYTES = 1 << 30  # freed memory kept at the heap's top before it is returned


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def tune_allocator() -> bool:
    """Applies the settings above; True when glibc accepted all of them."""
    libc = _glibc()
    if libc is None:
        return False
    results = [libc.mallopt(M_ARENA_MAX, 1), libc.mallopt(M_MMAP_THRESHOLD, HEAP_BLOCK_LIMIT),
               libc.mallopt(M_TRIM_THRESHOLD, KEEP_FREE_BYTES)]
    return all(result == 1 for result in results)


def return_free_memory() -> None:
    """Returns the heap's free memory to the system (``malloc_trim``)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
