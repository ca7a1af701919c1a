"""Give freed tensor memory back to the OS on CPU, where PyTorch allocates through glibc's malloc.

glibc serves large blocks with ``mmap`` (returned to the OS when freed) and small ones from its heap
(kept for reuse). Its threshold between the two starts at 128 KiB but rises to the size of each
large block freed, up to 32 MiB, so once a training step has freed its activations, later tensors
come from the heap and the heap keeps them after they are freed: the process's memory grows by what
no tensor holds. Setting the threshold (``mallopt``) turns that rise off. At 4 MiB, a 124M-parameter
model's GRPO step peaked at 3.3 GB of RSS against 6.1 GB by default (``benchmarks/trainer_memory.py``),
as at glibc's 128 KiB, but at 128 KiB every mid-sized tensor of a small model is mmapped and unmapped
again: "tiny"'s GRPO loop ran 1.5x slower, while at 4 MiB it runs as fast as by default. The heap's
trim threshold is set too (64 MiB; setting the mmap threshold freezes it, at 128 KiB unless glibc had
raised it), so the heap does not shrink and regrow by a few pages at every step.

Example:
    >>> from agents.trainers.allocator import fix_mmap_threshold
    >>> fix_mmap_threshold() in (True, False)  # False off glibc, or where the user set the variable
    True
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers, from glibc's malloc.h
FIXED_MMAP_THRESHOLD = 4 << 20
TRIM_THRESHOLD = 64 << 20
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def fix_mmap_threshold(threshold: int = FIXED_MMAP_THRESHOLD, trim: int = TRIM_THRESHOLD) -> bool:
    """Make glibc's malloc serve blocks of ``threshold`` bytes or more by ``mmap`` from now on, so they
    go back to the OS when freed, and trim its heap only when ``trim`` bytes are free at its top.
    Whether it did: not off glibc, nor where the user set either threshold (theirs stand)."""
    if not sys.platform.startswith("linux") or any(name in os.environ for name in USER_SETTINGS):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return False
    return mallopt(M_MMAP_THRESHOLD, threshold) == 1 and mallopt(M_TRIM_THRESHOLD, trim) == 1
