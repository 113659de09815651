"""The run's process settings: one thread per call in every native pool, restored afterwards,
and frame-sized buffers reused instead of faulted in afresh."""

from __future__ import annotations

import resource
import sys

import numpy as np
import pytest

from vidinv.pipeline.runtime import keep_frame_buffers, stage_runtime


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
