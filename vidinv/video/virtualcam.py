"""Send frames to a virtual camera (v4l2loopback on Linux, OBS's camera on Windows/macOS).

A thin wrapper over ``pyvirtualcam`` (the ``vidinv[live]`` extra): opened at the source's size
and rate in RGB, so the edited face appears as a camera in a video call or OBS. A missing
package or a missing loopback device is a one-line :class:`VirtualCameraError` that says how to
get one. ``camera_class`` replaces ``pyvirtualcam.Camera`` (same constructor keywords, ``send``
and ``close``), which is how tests run without a device.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from vidinv.errors import BackendUnavailableError, VidinvError

#: The command that creates a loopback camera on Linux.
LOOPBACK_COMMAND = "sudo modprobe v4l2loopback devices=1 exclusive_caps=1"


class VirtualCameraError(VidinvError):
    """No virtual camera device to send to."""


def _how_to_get_a_device() -> str:
    if sys.platform.startswith("linux"):
        return (f"create one with `{LOOPBACK_COMMAND}` (package v4l2loopback-dkms), then "
                "run again")
    return "install OBS Studio and start its virtual camera once, then run again"


class VirtualCamera:
    """An open virtual camera that takes [H,W,3] uint8 RGB frames of its own size."""

    def __init__(self, camera: Any, width: int, height: int, fps: float) -> None:
        self._camera = camera
        self.width, self.height, self.fps = width, height, fps
        self.frames_sent = 0

    @property
    def device(self) -> str:
        return str(getattr(self._camera, "device", "virtual camera"))

    def send(self, image: np.ndarray) -> None:
        """Send one frame ([height, width, 3] uint8 RGB)."""
        if image.shape != (self.height, self.width, 3):
            raise ValueError(f"frame must be [{self.height},{self.width},3], got "
                             f"{list(image.shape)}")
        self._camera.send(np.ascontiguousarray(image, dtype=np.uint8))
        self.frames_sent += 1

    def close(self) -> None:
        self._camera.close()


def open_virtual_camera(width: int, height: int, fps: float,
                        camera_class: Any = None) -> VirtualCamera:
    """Open a virtual camera of ``width``×``height`` at ``fps`` (RGB frames).

    Raises :class:`BackendUnavailableError` without pyvirtualcam, and
    :class:`VirtualCameraError` when there is no loopback device (or it is busy).
    """
    kwargs: dict[str, Any] = {"width": int(width), "height": int(height), "fps": float(fps)}
    if camera_class is None:
        try:
            import pyvirtualcam
        except ImportError:
            raise BackendUnavailableError("--virtual-camera needs pyvirtualcam; pip install "
                                          "'vidinv[live]'") from None
        camera_class = pyvirtualcam.Camera
        kwargs["fmt"] = pyvirtualcam.PixelFormat.RGB
    try:
        camera = camera_class(**kwargs)
    except RuntimeError as error:
        text = str(error).strip() or type(error).__name__
        reason = text.splitlines()[0].split(". ")[0].rstrip(".")
        raise VirtualCameraError(f"no virtual camera to send to ({reason}); "
                                 f"{_how_to_get_a_device()}") from None
    return VirtualCamera(camera, int(width), int(height), float(fps))
