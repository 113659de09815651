"""Strength 3 = as far as the model's edit goes: calibrate each tuned direction's scale.

Tuning teaches the generator each warp only as far as its time allowed, so the motion a
direction makes at the nominal strength 3 (offset = 1 × the tuned vector) can fall short of the
strongest warp of the training data; pushed further (a larger scale: strength 3 beyond the
offset tuning trained), a small model's edit first keeps growing, then stops and falls back
(the embedded model's smile, held-out corner rise at strength 1 / 2 / 3: +0.031 / +0.066 /
+0.079 at the nominal scale, +0.068 / +0.082 / +0.069 at twice it).

This measures the edit as the transfer paste reads it (:func:`~vidinv.face.transfer.
fit_actions`: how much of the full expression's motion field the model's E shows against its
R) on a few training crops, at strengths 2 and 3, for each candidate scale from the nominal
1/3 up to :data:`MAX_BOOST` × it, and keeps (:func:`calibrated_scale`) the smallest scale at
which strength 3 shows the full expression while still growing from strength 2, else the
largest at which it still grows, else the nominal one — "growing" meaning at least half the
step the expression itself takes from strength 2 to 3 (its field at amount 1 against 2/3: 1.5 ×
for a linear warp, 1.25 × for the smile's eased curve), so that 3 shows visibly more than 2.
Nothing here looks at dlib or at any score used to judge edits; gaze keeps the nominal scale
(its field became an action field later; calibrating it was never measured, and the transfer
paste moves the irises as asked whatever the direction's scale).

Shapes: crops [N,S,S,3] uint8, points [N,468+,2] in crop pixels; vectors [K,L,512].
"""

from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np
import torch

from vidinv.face.expressions import (
    AMOUNT_RANGE,
    FIELD_KINDS,
    GAZE_KINDS,
    WARPS,
    action_field,
)
from vidinv.face.paste import ellipse_mask
from vidinv.face.transfer import fit_actions, motion_support
from vidinv.models import FEATURE_INDEX

NOMINAL_SCALE = 1.0 / 3.0
MAX_BOOST = 2.0
#: The scales tried, nominal to MAX_BOOST × nominal.
CANDIDATE_SCALES = tuple(NOMINAL_SCALE * b for b in (1.0, 1.25, 1.5, 1.75, MAX_BOOST))
#: The strengths whose growth is checked.
STRENGTHS = (2.0, 3.0)


class Response(NamedTuple):
    """One kind's measurements: ``rows`` — per candidate of :data:`CANDIDATE_SCALES`, the share
    of the full expression the edit shows at strengths 2 and 3; ``growth`` — how much more the
    expression itself moves at strength 3 than at 2 (mean field magnitude, amount 1 / 2/3)."""

    rows: list[tuple[float, float]]
    growth: float


def action_response(generator, encoder, crops: np.ndarray, points: np.ndarray,
                    vectors: torch.Tensor) -> dict[str, Response]:
    """Per tuned kind with a motion field: for each of :data:`CANDIDATE_SCALES`, the share of
    the full expression (amount 1, its field at each crop's mesh) that the model's edit shows
    at strengths 2 and 3 (mean over the crops of the fitted scale), and the expression's own
    growth from 2 to 3 (:class:`Response`)."""
    from vidinv.engines.model_graphs import EditRenderGraph
    from vidinv.models.encoder import prepare_input
    from vidinv.personalize.tune import tuned_kinds
    from vidinv.stages.model import images_to_tensor, tensor_to_images

    size = crops.shape[1]
    graph = EditRenderGraph(generator.cpu().eval(), FEATURE_INDEX, with_reconstruction=True)
    with torch.no_grad():
        w, features = encoder.cpu().eval()(prepare_input(images_to_tensor(list(crops)),
                                                         encoder.input_size))
    mask = ellipse_mask(size)  # the transfer paste's default face mask
    support = motion_support(mask)[..., None]
    responses: dict[str, Response] = {}
    for n, kind in enumerate(WARPS):
        if kind not in FIELD_KINDS or kind in GAZE_KINDS or kind not in tuned_kinds():
            continue
        full = AMOUNT_RANGE[kind][1]
        fields = [action_field(kind, p, full, size) * support for p in points]
        two_thirds = [action_field(kind, p, full * 2 / 3, size) * support for p in points]
        growth = (sum(float(np.linalg.norm(f)) for f in fields)
                  / max(sum(float(np.linalg.norm(f)) for f in two_thirds), 1e-9))
        rows = []
        for scale in CANDIDATE_SCALES:
            shown = []
            for strength in STRENGTHS:
                offset = (strength * scale * vectors[n])[None].expand_as(w)
                with torch.no_grad():
                    edited, rebuilt = graph(w, features, offset)
                fits = []
                for e, r, f in zip(tensor_to_images(edited), tensor_to_images(rebuilt), fields,
                                   strict=True):
                    up = [cv2.resize(image, (size, size), interpolation=cv2.INTER_CUBIC)
                          for image in (e, r)]
                    fits.append(fit_actions(*up, mask, [f])[0])
                shown.append(float(np.mean(fits)))
            rows.append((shown[0], shown[1]))
        responses[kind] = Response(rows, growth)
    return responses


def calibrated_scale(response: Response | None) -> float:
    """The direction scale from an :func:`action_response` (one (strength 2, strength 3) pair
    per candidate of :data:`CANDIDATE_SCALES`): the smallest candidate at which strength 3
    shows the full expression (≥ 1) and still grows from strength 2; else the largest at which
    it still grows; else the nominal scale. Growing: strength 3 shows at least
    ``1 + (growth − 1) / 2`` × what strength 2 shows (half the expression's own step)."""
    if response is None or not response.rows:
        return NOMINAL_SCALE
    least = 1.0 + (response.growth - 1.0) / 2.0
    growing = [scale for scale, (two, three) in zip(CANDIDATE_SCALES, response.rows, strict=True)
               if three >= least * two and three > 0]
    full = [scale for scale, (two, three) in zip(CANDIDATE_SCALES, response.rows, strict=True)
            if scale in growing and three >= 1.0]
    if full:
        return float(min(full))
    return float(max(growing)) if growing else NOMINAL_SCALE
