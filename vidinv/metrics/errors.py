"""Errors a user can cause in the metrics, each with a one-line fix."""

from __future__ import annotations

from vidinv.errors import BackendUnavailableError, CheckpointError


class MetricModelUnavailableError(BackendUnavailableError):
    """A metric's model file or package (dlib, face_recognition_models) is missing."""


class LpipsWeightsError(CheckpointError):
    """LPIPS weight files are missing, incomplete, or of a layout this code does not know."""
