"""The process settings a run of the stages needs: a thread budget for every native pool, and
an allocator that keeps frame-sized buffers instead of returning them to the system.

Measured with ``benchmarks/pipeline.py`` (720p, 2 cores): each change below cut the CPU a frame
costs in the threaded pipeline, where the stages run side by side.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import sys
from collections.abc import Iterator

log = logging.getLogger(__name__)

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
#: Blocks up to this size come from the heap, not from a fresh mmap each (a 4K RGB frame is 25 MB).
MMAP_THRESHOLD = 64 << 20
#: Free memory kept at the top of a heap before it is returned to the system.
TRIM_THRESHOLD = 256 << 20
#: Extra memory taken whenever a heap grows.
TOP_PAD = 64 << 20

_allocator_tuned = False


def keep_frame_buffers() -> bool:
    """Make glibc's malloc reuse frame-sized blocks (once per process; False elsewhere).

    By default every block over glibc's dynamic threshold (≤ 32 MB) that a thread frees goes
    back to the system, and the next frame's buffer faults its pages in again (a 720p RGB frame
    is 675 pages, several buffers a frame in decode, paste and encode). In a multi-threaded
    process each unmap also interrupts the other cores to flush their TLBs. With these settings
    the run reuses its blocks: far fewer page faults a frame, less CPU a frame and a higher
    frame rate (``benchmarks/pipeline.py`` measures the run). The settings stay for the
    life of the process (memory held is bounded by the buffers a run uses, plus
    ``TRIM_THRESHOLD``).
    """
    global _allocator_tuned
    if _allocator_tuned:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = all(mallopt(param, value) == 1 for param, value in (
        (_M_MMAP_THRESHOLD, MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
        (_M_TOP_PAD, TOP_PAD)))
    if not ok:
        log.debug("mallopt refused the frame-buffer settings; running with the defaults")
    _allocator_tuned = ok
    return ok


@contextlib.contextmanager
def stage_runtime(threads: int) -> Iterator[None]:
    """Run the block with ``threads`` CPU threads per call in every native pool the stages use
    (torch, OpenMP, OpenBLAS, OpenCV; 0: leave the libraries' settings alone), and with the
    frame buffers kept by the allocator (:func:`keep_frame_buffers`).

    The stages already run side by side in their own threads; a library that also splits each
    call across every core makes them fight: OpenCV's pool made the transfer paste cost more
    CPU per frame, and OpenBLAS's idle workers showed up spinning in a profile of the run
    (``perf``).
    """
    keep_frame_buffers()
    if threads <= 0:
        yield
        return
    import cv2
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    try:
        with threadpool_limits(limits=threads):
            yield
    finally:
        torch.set_num_threads(before[0])
        cv2.setNumThreads(before[1])


#: x264 presets fast enough that encoding is a minority of a frame's work.
FAST_X264_PRESETS = ("ultrafast", "superfast", "veryfast")


def codec_threads(setting: int = 0, preset: str = "medium") -> int:
    """Threads for the video decoder and for x264: ``setting`` when > 0; else 1 on a machine
    of at most 2 cores with a fast x264 ``preset`` (:data:`FAST_X264_PRESETS`), and 0
    (FFmpeg's own choice, about 1.5 threads per core) otherwise.

    Why (2 cores, 720p ``edit``; ``benchmarks/pipeline.py`` measures it): with ``veryfast`` the
    stage threads keep both cores busy and FFmpeg's frame threads only add hand-offs and
    wake-ups, so one thread each runs faster; with ``medium`` x264 is most of a frame's work
    and runs faster with threads of its own.
    """
    if setting > 0:
        return setting
    return 1 if usable_cores() <= 2 and preset in FAST_X264_PRESETS else 0


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. a container's or `taskset`'s
    share), not the machine's count."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1
