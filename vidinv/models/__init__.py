"""Models: the StyleGAN2 generator and discriminator, the Feature-Style Encoder, their checkpoint
loaders, the model folder (:mod:`.folder`) and the model registry.

Names are imported lazily so that ``import vidinv.models`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

#: k, the index of the generator feature tensor the Feature-Style Encoder predicts (the official
#: ``idx_k``; paper 003 §3.2): ``outs[5]``, the 16×16 output of ``convs[3]``. The one place this
#: number is written (here, so that argument parsers can use it without importing torch).
FEATURE_INDEX = 5

if TYPE_CHECKING:
    from vidinv.models.encoder import FeatureStyleEncoder
    from vidinv.models.encoder_io import load_encoder, save_encoder
    from vidinv.models.generator_io import load_generator, save_generator
    from vidinv.models.stylegan2 import StyleGAN2Generator

__all__ = [
    "FEATURE_INDEX",
    "FeatureStyleEncoder",
    "StyleGAN2Generator",
    "load_encoder",
    "load_generator",
    "save_encoder",
    "save_generator",
]

_WHERE = {
    "FeatureStyleEncoder": "vidinv.models.encoder",
    "load_encoder": "vidinv.models.encoder_io",
    "save_encoder": "vidinv.models.encoder_io",
    "StyleGAN2Generator": "vidinv.models.stylegan2",
    "load_generator": "vidinv.models.generator_io",
    "save_generator": "vidinv.models.generator_io",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'vidinv.models' has no attribute {name!r}")
