"""Errors a user can cause in the face stages, each with a one-line fix."""

from __future__ import annotations

from vidinv.errors import BackendUnavailableError, VidinvError


class NoFaceError(VidinvError):
    """No frame of a clip (or no image) showed a face the landmark backend could find."""


class LandmarkBackendUnavailableError(BackendUnavailableError):
    """A landmark backend's package or model file is missing; the message names the pip package."""


class UnknownLandmarkBackendError(VidinvError, ValueError):
    """A landmark backend name that is neither ``mediapipe`` nor ``dlib``."""


class FaceChoiceError(VidinvError, ValueError):
    """``--face`` names a face the clip does not have, or is not largest, all or an index."""


class FaceReferenceError(VidinvError):
    """The ``--face-ref`` photo is missing, unreadable, or shows no face or several."""
