"""Errors (and one warning) the video layer raises, each with a one-line message naming the fix.

Every input problem is a :class:`VideoInputError`, which is also an
:class:`~vidinv.errors.InputFileError`, so code that handles bad input files in general handles
these too.
"""

from __future__ import annotations

from vidinv.errors import InputFileError, VidinvError


class VideoError(VidinvError):
    """Base class for the video layer's user-actionable errors."""


class VideoInputError(VideoError, InputFileError):
    """A video or image input that cannot be read as given."""


class EmptyVideoError(VideoInputError):
    """The file has zero bytes."""


class TruncatedVideoError(VideoInputError):
    """The file ends before its header or index does (an unfinished recording or copy)."""


class NotAVideoError(VideoInputError):
    """The file is no video FFmpeg can open (a text file, an image, random bytes)."""


class NoVideoStreamError(VideoInputError):
    """The container opens but holds no video stream (e.g. an audio-only file)."""


class UnsupportedCodecError(VideoInputError):
    """The video stream's codec has no decoder in this FFmpeg build."""


class UndecodableVideoError(VideoInputError):
    """The stream opened but not one frame could be decoded."""


class VideoWriteError(VideoError):
    """An output video cannot be written as asked (container, codec, nothing to write)."""


class CameraUnavailableError(VideoError):
    """A live camera could not be opened or stopped delivering frames."""


class DamagedVideoWarning(UserWarning):
    """A video's end (or some packets) could not be decoded; the decodable frames were kept."""
