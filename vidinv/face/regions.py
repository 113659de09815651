"""Region masks: limit an edit to the mouth, the eyes, the brows, or the upper or lower face.

A region is built from the frame's landmarks mapped into the aligned crop: the convex hull of
the region's points (MediaPipe face-mesh indices, or dlib's 68 when that is the backend),
widened by a margin so the skin the feature moves (the cheeks of a smile, the lids of the eyes)
is included, then feathered. ``upper`` and ``lower`` are the two sides of the line halfway
between the eyes and the mouth. The blur is truncated at 3σ, so the mask is exactly 0 beyond
margin + 3σ of the features: with ``mouth`` the eyes keep the source's pixels bit for bit.

Shapes: masks [S,S] float32 in [0,1] in the crop's geometry (1 = the edit shows).
"""

from __future__ import annotations

import math
import typing

import cv2
import numpy as np

from vidinv.config import Region, parse_regions
from vidinv.face.align import apply_transform
from vidinv.frame import DLIB_POINTS, MESH_POINTS, FaceLandmarks

# MediaPipe face mesh (the first 468 points; refine_landmarks adds the irises after them).
MEDIAPIPE_LIPS = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37,
                  39, 40, 185)
MEDIAPIPE_EYES = ((33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246),
                  (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388,
                   466))
MEDIAPIPE_BROWS = ((70, 63, 105, 66, 107, 55, 65, 52, 53, 46),
                   (300, 293, 334, 296, 336, 285, 295, 282, 283, 276))
# dlib's 68 points.
DLIB_LIPS = tuple(range(48, 60))
DLIB_EYES = (tuple(range(36, 42)), tuple(range(42, 48)))
DLIB_BROWS = (tuple(range(17, 22)), tuple(range(22, 27)))

#: Margin around each feature's hull, as a fraction of the crop side S.
MARGINS = {"mouth": 0.035, "eyes": 0.03, "brows": 0.025}
#: σ of the feather, as a fraction of S (the blur stops at 3σ).
FEATHER = 0.012


def region_point_sets(landmarks: FaceLandmarks, region: str) -> list[np.ndarray]:
    """The [N,2] frame points of each part of ``region`` (mouth: one set; eyes, brows: two)."""
    points = landmarks.points
    if len(points) >= MESH_POINTS:
        lips, eyes, brows = MEDIAPIPE_LIPS, MEDIAPIPE_EYES, MEDIAPIPE_BROWS
    elif len(points) == DLIB_POINTS:
        lips, eyes, brows = DLIB_LIPS, DLIB_EYES, DLIB_BROWS
    else:
        raise ValueError(f"expected 68 (dlib) or 468+ (MediaPipe) points, got {len(points)}")
    parts = {"mouth": (lips,), "eyes": eyes, "brows": brows}[region]
    return [points[list(indices)] for indices in parts]


def _blur(binary: np.ndarray, sigma: float) -> np.ndarray:
    """uint8 0/255 mask -> float32 [0,1], Gaussian σ truncated at 3σ (exact zeros beyond)."""
    mask = binary.astype(np.float32) / 255.0
    if sigma <= 0.3:
        return mask
    radius = int(math.ceil(3 * sigma))
    return cv2.GaussianBlur(mask, (2 * radius + 1, 2 * radius + 1), sigma,
                            borderType=cv2.BORDER_CONSTANT)


def _half_plane(size: int, landmarks: FaceLandmarks, crop_from_frame: np.ndarray, upper: bool,
                feather: float) -> np.ndarray:
    """1 on the eyes' (``upper``) or the mouth's side of the line halfway between them."""
    eyes = apply_transform(crop_from_frame, np.stack([landmarks.eye_left, landmarks.eye_right]))
    mouth = apply_transform(crop_from_frame,
                            np.stack([landmarks.mouth_left, landmarks.mouth_right]))
    eye_mid, mouth_mid = eyes.mean(axis=0), mouth.mean(axis=0)
    down = mouth_mid - eye_mid
    length = float(np.hypot(*down))
    if length < 1e-6:
        down, length = np.array([0.0, 1.0]), 1.0
    down = down / length
    middle = (eye_mid + mouth_mid) / 2
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    distance = (xs - middle[0]) * down[0] + (ys - middle[1]) * down[1]  # > 0: mouth side
    sigma = max(feather * size, 1e-3)
    # a smooth step of width ±3σ across the line (exact 0 and 1 beyond it)
    step = np.clip(0.5 + distance / (6 * sigma), 0.0, 1.0)
    step = step * step * (3 - 2 * step)
    return (1.0 - step if upper else step).astype(np.float32)


def region_mask(size: int, landmarks: FaceLandmarks, crop_from_frame: np.ndarray,
                regions: typing.Iterable[str], *, feather: float = FEATHER) -> np.ndarray:
    """[S,S] float32: the union of ``regions`` (names of :data:`~vidinv.config.Region`) in the
    crop of side S that ``crop_from_frame`` maps the frame to. ``face`` gives all ones."""
    regions = tuple(regions)
    mask = np.zeros((size, size), np.float32)
    for region in regions:
        if region not in typing.get_args(Region):
            raise ValueError(f"unknown region {region!r}")
        if region == "face":
            return np.ones((size, size), np.float32)
        if region in ("upper", "lower"):
            part = _half_plane(size, landmarks, crop_from_frame, region == "upper", feather)
        else:
            binary = np.zeros((size, size), np.uint8)
            for points in region_point_sets(landmarks, region):
                crop_points = apply_transform(crop_from_frame, points)
                hull = cv2.convexHull(np.round(crop_points * 16).astype(np.int32))
                cv2.fillConvexPoly(binary, hull, 255, cv2.LINE_8, 4)
            radius = int(round(MARGINS[region] * size))
            if radius > 0:
                kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE,
                                                   (2 * radius + 1, 2 * radius + 1))
                binary = cv2.dilate(binary, kernel)
            part = _blur(binary, feather * size)
        np.maximum(mask, part, out=mask)
    return mask


def is_whole_face(regions: typing.Iterable[str]) -> bool:
    """Whether ``regions`` leaves the edit on the whole face."""
    return "face" in tuple(regions)


__all__ = ["FEATHER", "MARGINS", "is_whole_face", "parse_regions", "region_mask",
           "region_point_sets"]
