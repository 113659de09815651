"""The run's process settings: one thread per call in every native pool, restored afterwards,
and frame-sized buffers reused instead of faulted in afresh."""

from __future__ import annotations

import resource
import sys

import numpy as np
import pytest

from tests.skips import machine_skip
from vidinv.pipeline.runtime import codec_threads, keep_frame_buffers, stage_runtime


def test_stage_runtime_sets_every_pool_and_restores_it():
    import cv2
    import torch
    from threadpoolctl import threadpool_info

    torch.set_num_threads(2)
    cv2.setNumThreads(2)
    with stage_runtime(1):
        assert torch.get_num_threads() == 1
        assert cv2.getNumThreads() == 1
        assert all(pool["num_threads"] == 1 for pool in threadpool_info())
    assert torch.get_num_threads() == 2
    assert cv2.getNumThreads() == 2


def test_stage_runtime_zero_leaves_the_libraries_alone():
    import torch

    torch.set_num_threads(2)
    with stage_runtime(0):
        assert torch.get_num_threads() == 2


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_frame_buffers_are_reused_not_faulted_in_again():
    assert keep_frame_buffers()
    two_4k_frames = 2 * 3840 * 2160 * 3  # 50 MB: over glibc's largest default mmap threshold
    np.ones(two_4k_frames, np.uint8)  # the first one grows the heap
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        buffer = np.ones(two_4k_frames, np.uint8)  # written: every page is touched
        del buffer
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    # glibc's defaults map and unmap each one: ~9 000 faults here for the ten
    assert faults < 500


def test_codec_threads_one_on_two_cores_with_a_fast_preset(monkeypatch):
    """0 (auto): one decoder and x264 thread where the stages already fill 2 cores and x264 is
    cheap (a fast preset); FFmpeg's own threads where x264 is the bulk of the work or there are
    cores to spare; a number set by the user wins."""
    from vidinv.pipeline import runtime

    monkeypatch.setattr(runtime, "usable_cores", lambda: 2)
    assert codec_threads(0, "veryfast") == 1
    assert codec_threads(0, "ultrafast") == 1
    assert codec_threads(0, "medium") == 0
    assert codec_threads(3, "veryfast") == 3
    monkeypatch.setattr(runtime, "usable_cores", lambda: 16)
    assert codec_threads(0, "veryfast") == 0
    assert codec_threads(2, "medium") == 2


def test_usable_cores_follows_the_process_affinity():
    import os

    from vidinv.pipeline.runtime import usable_cores

    if not hasattr(os, "sched_getaffinity"):
        machine_skip("no CPU affinity on this platform")
    before = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(before)})
        assert usable_cores() == 1
    finally:
        os.sched_setaffinity(0, before)
    assert usable_cores() == len(before)
