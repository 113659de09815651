"""Errors and warnings of the latent-editing code, each with a one-line fix."""

from __future__ import annotations

from vidinv.errors import VidinvError


class DirectionError(VidinvError):
    """A direction file is unreadable, of an unknown layout, or does not fit the latent codes."""


class GeneratorMismatchError(DirectionError):
    """A direction was made for another generator (its fingerprint differs)."""


class StrengthError(VidinvError, ValueError):
    """An edit strength α that is not a finite number of sane size."""


class UnknownAttributeError(VidinvError, ValueError):
    """An attribute name that no scorer, direction method or model direction knows."""


class FittingError(VidinvError):
    """A direction could not be fitted (e.g. no face found in the rendered samples)."""


class UnverifiedDirectionWarning(UserWarning):
    """A direction without a generator fingerprint (a foreign file) was used with a generator."""
