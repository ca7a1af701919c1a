"""Give freed tensor memory back to the OS on CPU, where PyTorch allocates through glibc's malloc.

glibc serves large blocks with ``mmap`` (returned to the OS when freed) and small ones from its heap
(kept for reuse). Its threshold between the two starts at 128 KiB but rises to the size of each
large block freed, up to 32 MiB, so once a training step has freed its activations, later tensors
come from the heap and the heap keeps them after they are freed: the process's memory grows by what
no tensor holds. At a 124M-parameter model's GRPO step that was 6.8 GB of peak RSS against 4.0 GB
with the threshold fixed (``benchmarks/trainer_memory.py``), for about 4% more time. Fixing the
threshold (``mallopt``) turns the dynamic rise off; it is what ``MALLOC_MMAP_THRESHOLD_`` does when
set before the process starts.

Example:
    >>> from agents.trainers.allocator import fix_mmap_threshold
    >>> fix_mmap_threshold() in (True, False)  # False off glibc, or where the user set the variable
    True
"""

from __future__ import annotations

import ctypes
import os
import sys

M_MMAP_THRESHOLD = -3  # mallopt's parameter number, from glibc's malloc.h
FIXED_MMAP_THRESHOLD = 128 * 1024  # glibc's starting value
USER_SETTING = "MALLOC_MMAP_THRESHOLD_"


def fix_mmap_threshold(threshold: int = FIXED_MMAP_THRESHOLD) -> bool:
    """Make glibc's malloc serve blocks of ``threshold`` bytes or more by ``mmap`` from now on, so they
    go back to the OS when freed. Whether it did: not off glibc, nor where the user set
    ``MALLOC_MMAP_THRESHOLD_`` (theirs stands)."""
    if not sys.platform.startswith("linux") or USER_SETTING in os.environ:
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return False
    return mallopt(M_MMAP_THRESHOLD, threshold) == 1
