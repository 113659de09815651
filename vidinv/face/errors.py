"""Errors a user can cause in the face stages, each with a one-line fix."""

from __future__ import annotations

from vidinv.errors import BackendUnavailableError, VidinvError


class NoFaceError(VidinvError):
    """No frame of a clip (or no image) showed a face the landmark backend could find."""


class LandmarkBackendUnavailableError(BackendUnavailableError):
    """A landmark backend's package or model file is missing; the message names the pip package."""


class UnknownLandmarkBackendError(VidinvError, ValueError):
    """A landmark backend name that is neither ``mediapipe`` nor ``dlib``."""
