"""The run's process settings: one thread per call in every native pool, restored afterwards,
and frame-sized buffers reused instead of faulted in afresh."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.skips import machine_skip
from vidinv.pipeline.runtime import codec_threads, stage_runtime

ROOT = Path(__file__).resolve().parents[1]


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


_FAULTS_OF_TEN_FRAMES = """
import resource, sys
import numpy as np
from vidinv.pipeline.runtime import keep_frame_buffers
if sys.argv[1] == "tuned":
    assert keep_frame_buffers()
two_4k_frames = 2 * 3840 * 2160 * 3  # 50 MB: over glibc's largest default mmap threshold
np.ones(two_4k_frames, np.uint8)  # the first one grows the heap
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    buffer = np.ones(two_4k_frames, np.uint8)  # written: every page is touched
    del buffer
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_frame_buffers_are_reused_not_faulted_in_again():
    """Each in its own process (the allocator settings are process-wide): with
    keep_frame_buffers, ten frame-sized buffers in a row reuse the first one's pages; with
    glibc's defaults each is mapped and faulted in afresh."""

    def faults(mode: str) -> int:
        result = subprocess.run([sys.executable, "-c", _FAULTS_OF_TEN_FRAMES, mode],
                                capture_output=True, text=True, timeout=120,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert result.returncode == 0, result.stderr
        return int(result.stdout)

    default, tuned = faults("default"), faults("tuned")
    # the control: glibc maps each buffer afresh (fewer faults than 4 KiB pages where the
    # kernel faults pages in by the batch or as huge pages, but many)
    assert default >= 100
    assert tuned < default // 10


def test_codec_threads_fit_the_cores_and_a_users_number_wins(monkeypatch):
    """For every allowed preset and core count: a number the user sets is used as it is; the
    automatic choice is FFmpeg's own pool (0) or at least one and never more threads than the
    process may run on; with cores to spare (> 2) the codecs keep FFmpeg's own pool."""
    from vidinv.config import CHOICES
    from vidinv.pipeline import runtime

    for cores in (1, 2, 3, 4, 8, 64):
        monkeypatch.setattr(runtime, "usable_cores", lambda cores=cores: cores)
        for preset in CHOICES["output.preset"]:
            for setting in (1, 2, 3, 7):
                assert codec_threads(setting, preset) == setting
            auto = codec_threads(0, preset)
            assert auto == 0 or 1 <= auto <= cores, (cores, preset, auto)
            if cores > 2:
                assert auto == 0, (cores, preset)


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
