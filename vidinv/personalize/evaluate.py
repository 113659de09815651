"""Held-out numbers of a personal model: inversion quality, identity, and whether the smile
edit shows (measured with dlib's 68 points, which nothing in the build fits against)."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import torch

from vidinv.metrics.identity import FFHQ_FACE_BOX
from vidinv.models import FEATURE_INDEX

STRENGTHS = (0.0, 1.0, 2.0, 3.0)


def _up(image: np.ndarray, size: int) -> np.ndarray:
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_CUBIC)


def evaluate_model(generator: Any, encoder: Any, directions: list, crops: np.ndarray
                   ) -> dict[str, Any]:
    """Numbers on held-out aligned ``crops`` [N,S,S,3] uint8 (empty: no numbers)."""
    from vidinv.latent.editing import LatentEditor
    from vidinv.metrics.expression import DlibSmileMeter
    from vidinv.metrics.identity import IdentityEmbedder, euclidean_distance
    from vidinv.metrics.image import crop_scores
    from vidinv.models.encoder import prepare_input
    from vidinv.stages.model import images_to_tensor, tensor_to_images

    if len(crops) == 0:
        return {}
    generator, encoder = generator.cpu().eval(), encoder.cpu().eval()
    with torch.no_grad():
        w, features = encoder(prepare_input(images_to_tensor(list(crops)), encoder.input_size))
        inversions = tensor_to_images(generator.synthesis(w, features=features, k=FEATURE_INDEX))
    scores = [crop_scores(c, r) for c, r in zip(crops, inversions, strict=True)]
    embedder = IdentityEmbedder()
    side = 256
    box = tuple(v * side for v in FFHQ_FACE_BOX)
    sources = [_up(c, side) for c in crops]
    identity = [euclidean_distance(embedder.embed(a, aligned=True),
                                   embedder.embed(_up(b, side), aligned=True))
                for a, b in zip(sources, inversions, strict=True)]
    result: dict[str, Any] = {
        "heldout_crops": int(len(crops)),
        "inversion_psnr_db": float(np.mean([s.psnr for s in scores])),
        "inversion_ssim": float(np.mean([s.ssim for s in scores])),
        "identity_distance_inversion": float(np.mean([d for d in identity if d is not None])),
    }
    smile = next((d for d in directions if d.name == "smile"), None)
    if smile is not None:
        meter = DlibSmileMeter()
        by_strength = {}
        for strength in STRENGTHS:
            editor = LatentEditor(generator, smile, strength, k=FEATURE_INDEX, check=False)
            with torch.no_grad():
                w_edit, f_edit = editor(w, features)
                edited = tensor_to_images(generator.synthesis(w_edit, features=f_edit,
                                                              k=FEATURE_INDEX))
            values = [meter.score(_up(e, side), box) for e in edited]
            by_strength[f"{strength:g}"] = float(np.mean([v for v in values if v is not None]))
        result["render_smile_dlib_by_strength"] = by_strength
    return result
