"""Video in and out: PyAV reader/writer (pts, rotation, audio remux), decord reader, live sources,
image files and folders of frames.

Names are imported lazily: ``import vidinv.video`` imports neither PyAV nor OpenCV; each is
imported when the name that needs it is first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vidinv.video.errors import (
        CameraUnavailableError,
        DamagedVideoWarning,
        EmptyVideoError,
        NotAVideoError,
        NoVideoStreamError,
        TruncatedVideoError,
        UndecodableVideoError,
        UnsupportedCodecError,
        VideoError,
        VideoInputError,
        VideoWriteError,
    )
    from vidinv.video.images import (
        ImageFolderWriter,
        ImageSequenceReader,
        read_image,
        write_image,
    )
    from vidinv.video.reader import (
        DecordReader,
        VideoInfo,
        VideoReader,
        open_video,
        probe,
        upright,
    )
    from vidinv.video.sources import FileCameraSource, LiveSource, WebcamSource
    from vidinv.video.writer import VideoWriter

_WHERE = {
    **{
        name: "vidinv.video.errors"
        for name in (
            "CameraUnavailableError",
            "DamagedVideoWarning",
            "EmptyVideoError",
            "NotAVideoError",
            "NoVideoStreamError",
            "TruncatedVideoError",
            "UndecodableVideoError",
            "UnsupportedCodecError",
            "VideoError",
            "VideoInputError",
            "VideoWriteError",
        )
    },
    **{
        name: "vidinv.video.images"
        for name in ("ImageFolderWriter", "ImageSequenceReader", "read_image", "write_image")
    },
    **{
        name: "vidinv.video.reader"
        for name in ("DecordReader", "VideoInfo", "VideoReader", "open_video", "probe", "upright")
    },
    **{name: "vidinv.video.sources" for name in ("FileCameraSource", "LiveSource", "WebcamSource")},
    "VideoWriter": "vidinv.video.writer",
}

__all__ = [
    "CameraUnavailableError",
    "DamagedVideoWarning",
    "DecordReader",
    "EmptyVideoError",
    "FileCameraSource",
    "ImageFolderWriter",
    "ImageSequenceReader",
    "LiveSource",
    "NoVideoStreamError",
    "NotAVideoError",
    "TruncatedVideoError",
    "UndecodableVideoError",
    "UnsupportedCodecError",
    "VideoError",
    "VideoInfo",
    "VideoInputError",
    "VideoReader",
    "VideoWriteError",
    "VideoWriter",
    "WebcamSource",
    "open_video",
    "probe",
    "read_image",
    "upright",
    "write_image",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'vidinv.video' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
