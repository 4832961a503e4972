"""How the engine's process hands memory back to the system (glibc's malloc).

Each swap allocates and frees the same large buffers again and again: a decoded 720p
photo is 2.7 MB, its blend masks and float copies several times that. By default glibc
returns such memory to the system as soon as it is freed (it serves big blocks with mmap,
and trims the heap once a few MB lie free at its top), and the next image faults every
page back in: on this project's 2-core VM that made decoding a 720p photo take 12-15 ms
instead of 8 in a worker. ``keep_freed_memory`` has the process keep that memory for its
next image instead: blocks up to 32 MB come from the heap and stay there, and the heap is
trimmed only once 256 MB lie free at its top.

The cost is resident memory: a worker's RSS stays near its high-water mark rather than
falling between jobs. Size memory limits for the peak, as for any worker. Elsewhere than
glibc (musl, macOS) this does nothing.
"""

from __future__ import annotations

import ctypes
import logging
import platform
import threading

log = logging.getLogger(__name__)

# mallopt(3) parameters; 32 MB is glibc's documented ceiling for the mmap threshold.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024
TRIM_THRESHOLD = 256 * 1024 * 1024

# What one image costs the engine at its peak, above the process's resident memory
# between jobs, per pixel of the target: decoding (Pillow's copy, the BGR frame, the
# alpha), detection, blending and encoding. Any accepted image is 8 bits a channel by
# then (16-bit samples are narrowed as they are decoded), so its cost is its pixels times
# this, and ``max_image_pixels`` bounds it: 640 MB per image job at the default 40 MP.
# Measured at 40 MP with a face swapped: 8-bit RGB JPEG 11.9, 16-bit RGB PNG 12.6,
# 16-bit RGBA PNG 14.7, 16-bit grey PNG 8.7 bytes a pixel (tests/inference).
WORKING_BYTES_PER_PIXEL = 16

_lock = threading.Lock()
_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Apply the settings above once per process; whether glibc took them."""
    global _applied
    with _lock:
        if _applied is None:
            _applied = _apply()
        return _applied


def _apply() -> bool:
    if platform.libc_ver()[0] != "glibc":
        return False
    mallopt = ctypes.CDLL(None).mallopt  # the C library this process runs on
    taken = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    taken = mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and taken
    if not taken:
        log.warning("glibc refused the engine's malloc settings; images decode slower")
    return taken
