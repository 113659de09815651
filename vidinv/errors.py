"""Errors a user can cause, each carrying a one-line message that names the fix.

The CLI prints ``str(error)`` without a traceback and exits with ``error.exit_code``.
"""

from __future__ import annotations


class VidinvError(Exception):
    """Base class for every error a user can act on."""

    exit_code = 2


class InputFileError(VidinvError):
    """A path the user gave is missing, unreadable or of the wrong kind."""


class CheckpointError(VidinvError):
    """A checkpoint is truncated, of an unknown kind, or does not match the model."""


class UnsafePickleError(CheckpointError):
    """A pickle asked for a global that the restricted unpickler does not allow."""


class BackendUnavailableError(VidinvError):
    """An optional backend (ONNX Runtime, TensorRT, CUDA) is not installed or usable."""


class EngineMismatchError(VidinvError):
    """A cached engine was built for other inputs, precision, TensorRT version or GPU."""


class DownloadError(VidinvError):
    """A model download failed or its bytes did not match the expected checksum."""
