"""`live --virtual-camera`: frames at the source's size and rate, or a one-line fix."""

from __future__ import annotations

import glob
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.media import real_clip_head
from tests.model_fixtures import make_tiny_model
from tests.skips import machine_skip, require
from vidinv.video.virtualcam import LOOPBACK_COMMAND, VirtualCameraError, open_virtual_camera


class FakeCamera:
    """Stands in for ``pyvirtualcam.Camera``: records what it is opened with and sent."""

    opened: list[FakeCamera] = []

    def __init__(self, width: int, height: int, fps: float, **kwargs) -> None:
        self.width, self.height, self.fps = width, height, fps
        self.frames: list[np.ndarray] = []
        self.closed = False
        FakeCamera.opened.append(self)

    def send(self, frame: np.ndarray) -> None:
        assert frame.flags.c_contiguous and frame.dtype == np.uint8
        self.frames.append(frame.copy())

    def close(self) -> None:
        self.closed = True


class NoDeviceCamera:
    def __init__(self, **kwargs) -> None:
        raise RuntimeError("'v4l2loopback' backend: No v4l2 loopback device found at "
                           "/dev/video[0-99]. Did you run 'modprobe v4l2loopback'?")


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return real_clip_head(tmp_path_factory.mktemp("clip") / "talk.mp4", 20)


def test_live_sends_the_edited_frame_at_the_source_size_and_rate(model, clip):
    import torch

    from vidinv.config import load_preset
    from vidinv.models.folder import load_model_bundle
    from vidinv.pipeline.attributes import resolve_edits
    from vidinv.pipeline.live import live
    from vidinv.video.sources import FileCameraSource

    bundle = load_model_bundle(model)
    source = FileCameraSource(clip, loop=True)
    shown: list[np.ndarray] = []
    originals: list[np.ndarray] = []
    threads: set[int] = set()
    FakeCamera.opened.clear()
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        config = load_preset("realtime")
        assert config.engine.threads == 1
        report = live(source, bundle, config, resolve_edits(bundle, {"smile": 2}),
                      max_seconds=2.0, show=False, virtual_camera=True,
                      camera_class=FakeCamera,
                      on_frame=lambda frame: (shown.append(frame.image.copy()),
                                              originals.append(frame.original),
                                              threads.add(torch.get_num_threads())))
        assert threads == {1} and torch.get_num_threads() == 2  # set while live, then restored
    finally:
        torch.set_num_threads(before)
    (camera,) = FakeCamera.opened
    assert (camera.width, camera.height) == (176, 144)
    assert camera.fps == pytest.approx(float(source.info.fps))
    assert camera.closed
    assert len(camera.frames) == report.frames_shown == len(shown) > 3
    for sent, edited in zip(camera.frames, shown, strict=True):
        assert sent.shape == (144, 176, 3)
        assert np.array_equal(sent, edited)  # the edited frame, no overlay
    assert not np.array_equal(camera.frames[-1], originals[-1])  # edited, not passed through


def test_no_device_is_one_line_naming_modprobe():
    with pytest.raises(VirtualCameraError) as info:
        open_virtual_camera(64, 48, 30, camera_class=NoDeviceCamera)
    message = str(info.value)
    assert LOOPBACK_COMMAND in message and "\n" not in message
    camera = open_virtual_camera(64, 48, 25, camera_class=FakeCamera)
    with pytest.raises(ValueError, match="48,64,3"):
        camera.send(np.zeros((64, 48, 3), np.uint8))


def test_cli_live_virtual_camera_without_a_device_exits_2(model, clip, tmp_path):
    require("pyvirtualcam", "vidinv[live]")
    if sys.platform.startswith("linux") and glob.glob("/dev/video*"):
        machine_skip("this machine has video devices; the no-device message cannot be checked")
    result = subprocess.run(
        [sys.executable, "-m", "vidinv.cli", "live", "--source", str(clip), "--virtual-camera",
         "--model", str(model), "--seconds", "1", "--no-window"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "modprobe v4l2loopback" in lines[0]
