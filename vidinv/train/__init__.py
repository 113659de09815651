"""Training and per-image optimisation around the Feature-Style Encoder and StyleGAN2.

* :mod:`vidinv.train.losses` — pixel, perceptual (LPIPS from local weights, or the documented
  SSIM/gradient substitute), multi-scale application, feature reconstruction, the identity loss
  around a user's face-embedding network, the loss weights;
* :mod:`vidinv.train.encoder` — :class:`EncoderTrainer` (paper 003 §4), checkpoints, resume;
* :mod:`vidinv.train.cycle` — cycle encoding W → W+ → W (papers 000/001);
* :mod:`vidinv.train.refine` — pivot refinement;
* :mod:`vidinv.train.pti` — pivotal tuning of the generator with the locality regulariser;
* :mod:`vidinv.train.zplus` — Z+ inversion and walks on the sphere (paper 002);
* :mod:`vidinv.cli.train` — the ``vidinv train`` commands.

Names are imported lazily so that ``import vidinv.train`` does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vidinv.train.cycle import CycleConfig, CycleSchedule
    from vidinv.train.encoder import EncoderTrainer, EncoderTrainingConfig
    from vidinv.train.losses import (
        LPIPS,
        LossWeights,
        MultiScale,
        MultiScaleStructureLoss,
        build_perceptual,
    )
    from vidinv.train.pti import PTIConfig, tune_generator
    from vidinv.train.refine import RefineConfig, refine_pivot
    from vidinv.train.zplus import invert_zplus, walk_on_sphere

_WHERE = {
    "CycleConfig": "vidinv.train.cycle",
    "CycleSchedule": "vidinv.train.cycle",
    "EncoderTrainer": "vidinv.train.encoder",
    "EncoderTrainingConfig": "vidinv.train.encoder",
    "LPIPS": "vidinv.train.losses",
    "LossWeights": "vidinv.train.losses",
    "MultiScale": "vidinv.train.losses",
    "MultiScaleStructureLoss": "vidinv.train.losses",
    "build_perceptual": "vidinv.train.losses",
    "PTIConfig": "vidinv.train.pti",
    "tune_generator": "vidinv.train.pti",
    "RefineConfig": "vidinv.train.refine",
    "refine_pivot": "vidinv.train.refine",
    "invert_zplus": "vidinv.train.zplus",
    "walk_on_sphere": "vidinv.train.zplus",
}

__all__ = [
    "CycleConfig",
    "CycleSchedule",
    "EncoderTrainer",
    "EncoderTrainingConfig",
    "LPIPS",
    "LossWeights",
    "MultiScale",
    "MultiScaleStructureLoss",
    "PTIConfig",
    "RefineConfig",
    "build_perceptual",
    "invert_zplus",
    "refine_pivot",
    "tune_generator",
    "walk_on_sphere",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'vidinv.train' has no attribute {name!r}")
