"""Keep resident memory bounded: large buffers from mmap, and freed heap memory given back to the OS.

glibc serves an allocation from its heaps (one per thread that allocated)
unless it is over the mmap threshold, and it raises that threshold (up to
32 MiB) whenever a large mapped block is freed. After that, the activation
buffers of batches of every size come from the heaps, which fragment:
under a mixed load (short, 512-token, batched) the server's resident memory
climbed from 836 MiB after warm-up to 1,156 MiB within two minutes
(scripts/reliability/soak.py). `cap_mmap_threshold` fixes the threshold
at `MMAP_THRESHOLD_BYTES` (1 MiB), so every large buffer is mapped and
unmapped on its own and never fragments a heap (same load: 603 to 631 MiB;
20 minutes: +7.4%). It costs throughput: batches of short sentences, whose
1-4 MiB buffers are then mapped and faulted in on every forward, ran at 64%
of the encoder's ceiling instead of 83% (peer kit, C=32). 4 MiB keeps that
throughput but lets memory creep (+22.6% under load in 10 minutes), so it is
the operator's choice: glibc's own variable ``MALLOC_MMAP_THRESHOLD_``,
which wins when set (``=4194304``), trades bounded memory for speed.

`release_free_memory` returns the heaps' free pages (`malloc_trim(0)`): the
server calls it once loaded (loading's temporary copies), and once the
batcher has been idle for `IDLE_TRIM_SECONDS` after a forward (never under
load). Both are no-ops where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from functools import cache

log = logging.getLogger(__name__)

IDLE_TRIM_SECONDS = 2.0
MMAP_THRESHOLD_BYTES = 1 << 20
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number, from glibc's malloc.h


@cache
def _glibc(name: str, *argtypes: type) -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    """The C library's function `name`, or None where there is none (not glibc)."""
    library = ctypes.util.find_library("c")
    if library is None:
        return None
    try:
        function = ctypes.CDLL(library)[name]
    except (OSError, AttributeError):
        return None
    function.argtypes = list(argtypes)
    function.restype = ctypes.c_int
    return function


def cap_mmap_threshold(limit: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Map every allocation of `limit` bytes or more on its own (a fixed threshold); True when set."""
    if os.environ.get("MALLOC_MMAP_THRESHOLD_"):
        return False
    mallopt = _glibc("mallopt", ctypes.c_int, ctypes.c_int)
    return bool(mallopt(_M_MMAP_THRESHOLD, limit)) if mallopt is not None else False


def release_free_memory() -> bool:
    """Return the heaps' free pages to the OS; True when something was released."""
    trim = _glibc("malloc_trim", ctypes.c_size_t)
    return bool(trim(0)) if trim is not None else False
