"""The record every pipeline stage passes on: one video frame and what stages attached to it.

Conventions used across the package:

* images are ``numpy.ndarray`` [H,W,3] ``uint8`` RGB (never BGR outside OpenCV calls);
* points are float64 (x, y) pixel coordinates with the origin at the top-left pixel's corner;
* transforms are 3×3 float64 homogeneous matrices named ``<to>_from_<from>``, e.g.
  ``crop_from_frame`` maps frame pixels to aligned-crop pixels;
* network tensors are torch: ``w`` [L,512] float32, ``features`` [C,16,16] float32, images for
  the networks [3,H,W] float32 in [-1,1].
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch


@dataclass(slots=True)
class FaceLandmarks:
    """The facial points FFHQ alignment needs, in one form for every landmark backend.

    ``eye_left``/``eye_right`` are the eye centres (the mean of each eye's contour points, as
    dlib's 6-point eyes give them) and ``mouth_left``/``mouth_right`` the outer mouth corners
    (dlib points 48 and 54). "Left" is the subject's right side, i.e. the left of the image.
    ``points`` keeps the backend's full set ([68,2] for dlib, [468,2] for MediaPipe) and
    ``box`` the face's bounding box (x0, y0, x1, y1) in frame pixels.
    """

    eye_left: np.ndarray
    eye_right: np.ndarray
    mouth_left: np.ndarray
    mouth_right: np.ndarray
    points: np.ndarray
    box: tuple[float, float, float, float]
    backend: str
    score: float = 1.0


@dataclass(slots=True)
class Frame:
    """One frame: timing, the RGB image, and whatever earlier stages attached.

    ``pts`` counts ``time_base`` units (seconds = pts · time_base); both are ``None`` for
    sources without timing (image folders). Optional fields stay ``None`` until a stage sets
    them; ``face_found`` is False when landmarks were looked for and none were found (such a
    frame passes through the model stages unchanged). ``rendered`` is the edited face
    E = G(w̃, F̃) and ``reconstruction`` the unedited R = G(w, F), both [R,R,3] uint8 RGB at the
    generator's resolution; R is rendered (in the same batch as E) only for the transfer paste.
    """

    index: int
    image: np.ndarray
    pts: int | None = None
    time_base: Fraction | None = None
    landmarks: FaceLandmarks | None = None
    face_found: bool | None = None
    crop_from_frame: np.ndarray | None = None
    aligned: np.ndarray | None = None
    w: torch.Tensor | None = None
    features: torch.Tensor | None = None
    rendered: np.ndarray | None = None
    reconstruction: np.ndarray | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def time(self) -> float | None:
        """Presentation time in seconds, or None without timing."""
        if self.pts is None or self.time_base is None:
            return None
        return float(self.pts * self.time_base)

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])
