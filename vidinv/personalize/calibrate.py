"""Strength 3 = the strongest warp, measured: calibrate each tuned direction's scale.

Tuning teaches the generator each warp only as far as its time allowed, so the motion a
direction makes at the nominal strength 3 (offset = 1 × the tuned vector) can fall short of the
strongest warp of the training data. This measures both with the same MediaPipe face mesh that
defined the warps (the landmarks the warps move; nothing here looks at dlib or at any score
used to judge edits): on a few training crops, the landmark motion of the warp itself
(mesh(warp(x)) − mesh(x)) and the motion of the model's edit (mesh(E) − mesh(R)), and returns
their ratio r = Σ Δ_edit · Δ_warp / Σ |Δ_warp|². The direction's scale becomes (1/3) / r,
bounded to [1/3, 2/3] (at most twice the offset tuning trained: further out is extrapolation
the model never saw), so that strength 3 moves those landmarks as far as the strongest warp
where that bound allows.

Shapes: crops [N,S,S,3] uint8, points [N,468,2]; vectors [K,L,512].
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from vidinv.face.expressions import AMOUNT_RANGE, WARPS
from vidinv.frame import MESH_POINTS
from vidinv.models import FEATURE_INDEX
from vidinv.personalize.warps import warp_face

#: The landmarks each warp is about (MediaPipe mesh indices).
#: (Gaze moves the irises, which this 468-point mesh does not have: its scale stays nominal.)
MOVING_POINTS = {"smile": (61, 291, 17), "frown": (61, 291, 105, 334), "brows_raised": (105, 334),
                 "eyes_closed": (159, 386), "eyes_wide": (159, 386), "mouth_open": (14, 17, 152),
                 "pout": (61, 291), "gaze_horizontal": (), "gaze_vertical": (),
                 "yaw": (1, 4, 5), "pitch": (1, 4, 5), "roll": (33, 263, 61, 291)}
NOMINAL_SCALE = 1.0 / 3.0
MAX_BOOST = 2.0
MESH_SIDE = 256


def _mesh(detector, image: np.ndarray) -> np.ndarray | None:
    big = cv2.resize(image, (MESH_SIDE, MESH_SIDE), interpolation=cv2.INTER_CUBIC)
    faces = detector.detect(big)
    return faces[0].points[:MESH_POINTS] / MESH_SIDE if faces else None


def edit_response(generator, encoder, crops: np.ndarray, points: np.ndarray,
                  vectors: torch.Tensor) -> dict[str, float]:
    """r per warp kind (see the module docstring); NaN where the mesh found too few faces."""
    from vidinv.engines.model_graphs import EditRenderGraph
    from vidinv.face.landmarks import MediaPipeLandmarks
    from vidinv.models.encoder import prepare_input
    from vidinv.personalize.tune import tuned_kinds
    from vidinv.stages.model import images_to_tensor, tensor_to_images

    graph = EditRenderGraph(generator.cpu().eval(), FEATURE_INDEX, with_reconstruction=True)
    with torch.no_grad():
        w, features = encoder.cpu().eval()(prepare_input(images_to_tensor(list(crops)),
                                                         encoder.input_size))
    ratios: dict[str, float] = {}
    with MediaPipeLandmarks() as detector:
        for n, kind in enumerate(WARPS):
            if not MOVING_POINTS[kind] or kind not in tuned_kinds():
                ratios[kind] = float("nan")
                continue
            high = AMOUNT_RANGE[kind][1]
            offset = (high * vectors[n])[None].expand_as(w)
            with torch.no_grad():
                edited, rebuilt = graph(w, features, offset)
            edited, rebuilt = tensor_to_images(edited), tensor_to_images(rebuilt)
            index = list(MOVING_POINTS[kind])
            dot, norm = 0.0, 0.0
            for i, crop in enumerate(crops):
                meshes = [_mesh(detector, image) for image in
                          (crop, warp_face(crop, points[i], kind, high), rebuilt[i], edited[i])]
                if any(m is None for m in meshes):
                    continue
                warp_motion = (meshes[1] - meshes[0])[index]
                edit_motion = (meshes[3] - meshes[2])[index]
                dot += float((edit_motion * warp_motion).sum())
                norm += float((warp_motion ** 2).sum())
            ratios[kind] = dot / norm if norm > 0 else float("nan")
    return ratios


def calibrated_scale(ratio: float) -> float:
    """The direction scale that makes strength 3 move the landmarks as far as the warp."""
    if not np.isfinite(ratio) or ratio <= 0:
        return NOMINAL_SCALE
    return float(np.clip(NOMINAL_SCALE / ratio, NOMINAL_SCALE, NOMINAL_SCALE * MAX_BOOST))
