"""Latent editing: directions (InterFaceGAN, SeFa, GANSpace, e4e files), Eq. 1 editing of the
feature tensor, and landmark attribute scorers.

Names are imported lazily so that ``import vidinv.latent`` stays cheap (no torch).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vidinv.latent.directions import (
        Direction,
        DirectionSet,
        generator_fingerprint,
        list_directions,
        load_direction,
        load_directions,
        save_directions,
    )
    from vidinv.latent.editing import (
        LatentEditor,
        apply_direction,
        edit_with_features,
        render_edit,
    )
    from vidinv.latent.errors import (
        DirectionError,
        FittingError,
        GeneratorMismatchError,
        UnknownAttributeError,
        UnverifiedDirectionWarning,
    )
    from vidinv.latent.fit import (
        BoundaryFit,
        LatentScorer,
        fit_boundary,
        fit_interfacegan,
        ganspace_directions,
        sample_w,
        sefa_directions,
    )
    from vidinv.latent.scorers import ATTRIBUTE_SCORERS, LandmarkScorer

_WHERE = {
    **{name: "vidinv.latent.fit" for name in (
        "BoundaryFit", "LatentScorer", "fit_boundary", "fit_interfacegan", "ganspace_directions",
        "sample_w", "sefa_directions")},
    **{name: "vidinv.latent.directions" for name in (
        "Direction", "DirectionSet", "generator_fingerprint", "list_directions", "load_direction",
        "load_directions", "save_directions")},
    **{name: "vidinv.latent.editing" for name in (
        "LatentEditor", "apply_direction", "edit_with_features", "render_edit")},
    **{name: "vidinv.latent.errors" for name in (
        "DirectionError", "FittingError", "GeneratorMismatchError", "UnknownAttributeError",
        "UnverifiedDirectionWarning")},
    **{name: "vidinv.latent.scorers" for name in ("ATTRIBUTE_SCORERS", "LandmarkScorer")},
}

__all__ = [
    "ATTRIBUTE_SCORERS",
    "BoundaryFit",
    "Direction",
    "DirectionError",
    "DirectionSet",
    "FittingError",
    "GeneratorMismatchError",
    "LandmarkScorer",
    "LatentEditor",
    "LatentScorer",
    "UnknownAttributeError",
    "UnverifiedDirectionWarning",
    "apply_direction",
    "edit_with_features",
    "fit_boundary",
    "fit_interfacegan",
    "ganspace_directions",
    "generator_fingerprint",
    "list_directions",
    "load_direction",
    "load_directions",
    "render_edit",
    "sample_w",
    "save_directions",
    "sefa_directions",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'vidinv.latent' has no attribute {name!r}")
